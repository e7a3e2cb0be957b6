//! Mergeable first and second moments of feature vectors, in f64.
//!
//! Each shard keeps `n`, the mean and the co-moment matrix `M = sum (x - mean)(x - mean)^T`.
//! Shards merge with the pairwise formula of Chan, Golub and LeVeque, which stays exact
//! when features have large means, unlike the naive `sum x x^T - n mean mean^T`.

// Matrix code reads best with explicit row and column indices.
#![allow(clippy::needless_range_loop)]

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};

/// Moments of a set of `dim`-dimensional rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    pub n: u64,
    pub mean: Vec<f64>,
    /// Co-moment matrix, `dim x dim`, symmetric.
    pub comoment: Mat<f64>,
}

impl Moments {
    pub fn new(dim: usize) -> Self {
        Moments {
            n: 0,
            mean: vec![0.0; dim],
            comoment: Mat::zeros(dim, dim),
        }
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Moments of a batch of rows (row-major, `dim` floats each), computed with one
    /// matrix multiply: `M = Xc^T Xc` where `Xc` is the batch centred on its own mean.
    pub fn of_batch(rows: &[f32], dim: usize) -> Self {
        assert_eq!(rows.len() % dim.max(1), 0, "rows are not a multiple of dim");
        let n = rows.len() / dim.max(1);
        let mut moments = Moments::new(dim);
        if n == 0 {
            return moments;
        }
        for row in rows.chunks_exact(dim) {
            for (sum, &value) in moments.mean.iter_mut().zip(row) {
                *sum += f64::from(value);
            }
        }
        moments.mean.iter_mut().for_each(|sum| *sum /= n as f64);
        let centred = Mat::from_fn(n, dim, |i, j| {
            f64::from(rows[i * dim + j]) - moments.mean[j]
        });
        matmul(
            moments.comoment.as_mut(),
            Accum::Replace,
            centred.transpose(),
            centred.as_ref(),
            1.0,
            Par::Seq,
        );
        moments.n = n as u64;
        moments
    }

    /// Adds a batch of rows to these moments.
    pub fn add_batch(&mut self, rows: &[f32]) {
        let batch = Moments::of_batch(rows, self.dim());
        self.merge(&batch);
    }

    /// Merges `other` into `self` (Chan et al.):
    /// `n = na + nb; d = mb - ma; m = ma + d nb/n; M = Ma + Mb + d d^T na nb / n`.
    pub fn merge(&mut self, other: &Moments) {
        assert_eq!(
            self.dim(),
            other.dim(),
            "merging moments of different dimension"
        );
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other.clone();
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let delta: Vec<f64> = other
            .mean
            .iter()
            .zip(&self.mean)
            .map(|(b, a)| b - a)
            .collect();
        let weight = na * nb / n;
        let dim = self.dim();
        for j in 0..dim {
            let column_weight = delta[j] * weight;
            for i in 0..dim {
                self.comoment[(i, j)] += other.comoment[(i, j)] + delta[i] * column_weight;
            }
        }
        for (mean, d) in self.mean.iter_mut().zip(&delta) {
            *mean += d * nb / n;
        }
        self.n += other.n;
    }

    /// Sample covariance `M / (n - 1)`.
    pub fn covariance(&self) -> Mat<f64> {
        let denominator = (self.n.max(2) - 1) as f64;
        Mat::from_fn(self.dim(), self.dim(), |i, j| {
            self.comoment[(i, j)] / denominator
        })
    }

    /// Serialises as little-endian f64: mean, then the upper triangle of `M` row by row
    /// (the matrix is symmetric, so half of it is enough).
    pub fn to_bytes(&self) -> Vec<u8> {
        let dim = self.dim();
        let mut out = Vec::with_capacity(8 * (dim + dim * (dim + 1) / 2));
        for value in &self.mean {
            out.extend_from_slice(&value.to_le_bytes());
        }
        for i in 0..dim {
            for j in i..dim {
                out.extend_from_slice(&self.comoment[(i, j)].to_le_bytes());
            }
        }
        out
    }

    /// Reads what [`Moments::to_bytes`] wrote.
    pub fn from_bytes(n: u64, dim: usize, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 8 * (dim + dim * (dim + 1) / 2) {
            return None;
        }
        let mut values = bytes
            .chunks_exact(8)
            .map(|chunk| f64::from_le_bytes(chunk.try_into().expect("8-byte chunk")));
        let mean: Vec<f64> = values.by_ref().take(dim).collect();
        let mut comoment = Mat::zeros(dim, dim);
        for i in 0..dim {
            for j in i..dim {
                let value = values.next()?;
                comoment[(i, j)] = value;
                comoment[(j, i)] = value;
            }
        }
        Some(Moments { n, mean, comoment })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic generator, so tests need no extra crate and never flake.
    pub(crate) struct Lcg(pub u64);
    impl Lcg {
        pub(crate) fn next_f64(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn random_rows(n: usize, dim: usize, offset: f64, seed: u64) -> Vec<f32> {
        let mut rng = Lcg(seed);
        (0..n * dim)
            .map(|i| (offset + (i % dim) as f64 + rng.next_f64() * 4.0) as f32)
            .collect()
    }

    /// Two-pass reference: the mean first, then the centred products, all in f64.
    fn two_pass(rows: &[f32], dim: usize) -> (Vec<f64>, Vec<f64>) {
        let n = rows.len() / dim;
        let mut mean = vec![0.0; dim];
        for row in rows.chunks(dim) {
            for j in 0..dim {
                mean[j] += f64::from(row[j]) / n as f64;
            }
        }
        let mut m = vec![0.0; dim * dim];
        for row in rows.chunks(dim) {
            for i in 0..dim {
                for j in 0..dim {
                    m[i * dim + j] += (f64::from(row[i]) - mean[i]) * (f64::from(row[j]) - mean[j]);
                }
            }
        }
        (mean, m)
    }

    fn assert_close(moments: &Moments, rows: &[f32], relative: f64) {
        let dim = moments.dim();
        let (mean, m) = two_pass(rows, dim);
        assert_eq!(moments.n as usize, rows.len() / dim);
        for j in 0..dim {
            let scale = mean[j].abs().max(1.0);
            assert!((moments.mean[j] - mean[j]).abs() <= relative * scale);
        }
        for i in 0..dim {
            for j in 0..dim {
                let expected = m[i * dim + j];
                let got = moments.comoment[(i, j)];
                assert!(
                    (got - expected).abs() <= relative * expected.abs().max(1.0),
                    "M[{i},{j}] = {got}, two-pass gives {expected}"
                );
            }
        }
    }

    #[test]
    fn batches_match_the_two_pass_reference() {
        let dim = 7;
        let rows = random_rows(500, dim, 0.0, 1);
        let mut moments = Moments::new(dim);
        for batch in rows.chunks(dim * 64) {
            moments.add_batch(batch);
        }
        assert_close(&moments, &rows, 1e-10);
    }

    #[test]
    fn large_means_keep_their_precision() {
        // Features around 1e6 with a spread of about 1: the naive sum of squares
        // (sum x^2 - n mean^2) cancels ~12 of its 16 digits here.
        let dim = 4;
        let rows = random_rows(2000, dim, 1e6, 2);
        let mut moments = Moments::new(dim);
        for batch in rows.chunks(dim * 37) {
            moments.add_batch(batch);
        }
        assert_close(&moments, &rows, 1e-9);

        let naive_variance = {
            let n = (rows.len() / dim) as f64;
            let (mut sum, mut squares) = (0.0f64, 0.0f64);
            for row in rows.chunks(dim) {
                sum += f64::from(row[0]);
                squares += f64::from(row[0]) * f64::from(row[0]);
            }
            squares - sum * sum / n
        };
        let (_, m) = two_pass(&rows, dim);
        let naive_error = (naive_variance - m[0]).abs() / m[0];
        let merged_error = (moments.comoment[(0, 0)] - m[0]).abs() / m[0];
        assert!(
            merged_error * 1000.0 < naive_error.max(1e-300),
            "merged error {merged_error:e} should be far below the naive {naive_error:e}"
        );
    }

    #[test]
    fn many_small_partials_equal_one_big_one() {
        let dim = 5;
        let rows = random_rows(301, dim, 10.0, 3);
        let whole = Moments::of_batch(&rows, dim);
        let mut merged = Moments::new(dim);
        for piece in rows.chunks(dim * 3) {
            merged.merge(&Moments::of_batch(piece, dim));
        }
        merged.merge(&Moments::new(dim));
        assert_eq!(merged.n, whole.n);
        for i in 0..dim {
            assert!((merged.mean[i] - whole.mean[i]).abs() < 1e-12);
            for j in 0..dim {
                let (a, b) = (merged.comoment[(i, j)], whole.comoment[(i, j)]);
                assert!((a - b).abs() < 1e-9 * b.abs().max(1.0));
            }
        }
    }

    #[test]
    fn round_trips_through_bytes() {
        let rows = random_rows(20, 3, 0.0, 4);
        let moments = Moments::of_batch(&rows, 3);
        let restored = Moments::from_bytes(moments.n, 3, &moments.to_bytes()).unwrap();
        assert_eq!(restored, moments);
        assert!(Moments::from_bytes(1, 3, &[0u8; 10]).is_none());
    }

    #[test]
    fn covariance_divides_by_n_minus_one() {
        let rows = [1.0f32, 3.0];
        let moments = Moments::of_batch(&rows, 1);
        assert_eq!(moments.covariance()[(0, 0)], 2.0);
    }
}
