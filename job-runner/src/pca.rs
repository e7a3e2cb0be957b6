//! Principal component analysis from merged moments.

// Matrix code reads best with explicit row and column indices.
#![allow(clippy::needless_range_loop)]

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par, Side};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stats::Moments;

/// How many components to keep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Components {
    /// Exactly this many.
    Count(usize),
    /// The fewest whose cumulative explained variance reaches this fraction, in (0, 1].
    Variance(f64),
}

/// A fitted projection: `pc = ((x - mean) / scale) . components`, each component then
/// divided by the square root of its eigenvalue when `whiten` is set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pca {
    pub k: usize,
    pub standardize: bool,
    /// Every component has unit variance over the fitted photos: nearest neighbours by
    /// cosine then weigh the components alike (about half a point more 1-NN accuracy on
    /// Fruits-360 at k = 64). Files written before this field existed did not whiten.
    #[serde(default)]
    pub whiten: bool,
    pub mean: Vec<f64>,
    /// Per-feature divisor: the standard deviation with `standardize`, else all ones.
    pub scale: Vec<f64>,
    /// `k` rows of `dim` loadings each.
    pub components: Vec<Vec<f64>>,
    /// Eigenvalues of the kept components, largest first.
    pub eigenvalues: Vec<f64>,
    /// Each kept component's share of the total variance.
    pub explained_variance_ratio: Vec<f64>,
    /// Sum of `explained_variance_ratio`.
    pub cumulative_explained_variance: f64,
}

impl Components {
    /// Checks the request against the model before any work is done. More components
    /// than the data's rank are not an error: [`fit`] keeps the rank.
    pub fn validate(self, dim: usize) -> Result<()> {
        match self {
            Components::Count(0) => {
                Err(Error::Config("--components must be at least 1".to_string()))
            }
            Components::Count(k) if k > dim => Err(Error::Config(format!(
                "--components {k} is more than the {dim} features the model produces; give at most {dim}"
            ))),
            Components::Variance(f) if !(f > 0.0 && f <= 1.0) => Err(Error::Config(format!(
                "--variance {f} is outside (0, 1]; give a fraction such as 0.95"
            ))),
            _ => Ok(()),
        }
    }
}

/// Smallest k whose cumulative share reaches `threshold`. A tiny tolerance keeps
/// `threshold = 1.0` reachable despite rounding.
pub fn smallest_k_reaching(ratios: &[f64], threshold: f64) -> usize {
    let mut cumulative = 0.0;
    for (index, ratio) in ratios.iter().enumerate() {
        cumulative += ratio;
        if cumulative >= threshold - 1e-12 {
            return index + 1;
        }
    }
    ratios.len()
}

/// Fits PCA on merged moments.
pub fn fit(moments: &Moments, components: Components, standardize: bool) -> Result<Pca> {
    fit_with_spectrum(moments, components, standardize).map(|(pca, _)| pca)
}

/// [`fit`], and every component's share of the variance (the kept ones and the others,
/// largest first), for the scree plot.
pub fn fit_with_spectrum(
    moments: &Moments,
    components: Components,
    standardize: bool,
) -> Result<(Pca, Vec<f64>)> {
    let dim = moments.dim();
    if moments.n < 2 {
        return Err(Error::Input(format!(
            "PCA needs at least 2 usable images, found {}; check the input and errors.csv",
            moments.n
        )));
    }
    components.validate(dim)?;
    // The eigensolver's own threads would make the last bits depend on the core count.
    faer::set_global_parallelism(Par::Seq);
    let covariance = moments.covariance();
    let scale: Vec<f64> = (0..dim)
        .map(|i| {
            let deviation = covariance[(i, i)].max(0.0).sqrt();
            // A constant feature carries no information; dividing by 1 keeps it at 0.
            if standardize && deviation > 0.0 {
                deviation
            } else {
                1.0
            }
        })
        .collect();
    let (eigenvalues, vectors) = eigen_largest_first(&covariance, &scale)?;
    let total: f64 = eigenvalues.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return Err(Error::Input(
            "all features are constant across the images, so there is no variance to explain"
                .into(),
        ));
    }
    let ratios: Vec<f64> = eigenvalues.iter().map(|value| value / total).collect();
    let requested = match components {
        Components::Count(k) => k,
        Components::Variance(threshold) => smallest_k_reaching(&ratios, threshold),
    };
    let rank = data_rank(&eigenvalues, moments.n);
    let k = requested.min(rank);
    if k < requested {
        tracing::warn!(
            requested,
            kept = k,
            images = moments.n,
            "more components were asked for than the data's rank (at most images - 1, and only non-zero eigenvalues); keeping the rank"
        );
    }
    let components: Vec<Vec<f64>> = vectors
        .into_iter()
        .take(k)
        .map(|vector| with_positive_largest_loading(vector.into_iter()))
        .collect();
    let pca = Pca {
        k,
        standardize,
        whiten: false,
        mean: moments.mean.clone(),
        scale,
        components,
        eigenvalues: eigenvalues[..k].to_vec(),
        explained_variance_ratio: ratios[..k].to_vec(),
        cumulative_explained_variance: ratios[..k].iter().sum(),
    };
    Ok((pca, ratios))
}

/// Eigenvalues (largest first) and their unit eigenvectors (`dim` loadings each) of the
/// covariance scaled by `scale`. Features that never vary are left out of the
/// decomposition: their rows and columns are zero, they add only zero eigenvalues, and
/// faer's solver can fail to converge on a matrix with many of them (a few photos at a
/// small size leave hundreds of ReLU features at exactly 0).
fn eigen_largest_first(covariance: &Mat<f64>, scale: &[f64]) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let dim = scale.len();
    let varying: Vec<usize> = (0..dim).filter(|&i| covariance[(i, i)] > 0.0).collect();
    let n = varying.len();
    let matrix = Mat::from_fn(n, n, |a, b| {
        let (i, j) = (varying[a], varying[b]);
        covariance[(i, j)] / (scale[i] * scale[j])
    });
    let eigen = matrix.self_adjoint_eigen(Side::Lower).map_err(|err| {
        Error::Input(format!(
            "the eigendecomposition did not converge ({err:?}); the features may contain NaN or infinity"
        ))
    })?;
    let values = eigen.S().column_vector();
    let vectors = eigen.U();
    // faer sorts ascending; PCA wants the largest first. The constant features' zero
    // eigenvalues come last, with unit vectors along them.
    let mut eigenvalues: Vec<f64> = (0..n).rev().map(|c| values[c].max(0.0)).collect();
    let mut loadings: Vec<Vec<f64>> = (0..n)
        .rev()
        .map(|c| {
            let mut vector = vec![0.0; dim];
            for (a, &i) in varying.iter().enumerate() {
                vector[i] = vectors[(a, c)];
            }
            vector
        })
        .collect();
    for i in (0..dim).filter(|i| !varying.contains(i)) {
        eigenvalues.push(0.0);
        let mut vector = vec![0.0; dim];
        vector[i] = 1.0;
        loadings.push(vector);
    }
    Ok((eigenvalues, loadings))
}

/// How many components carry variance: eigenvalues above rounding noise, and at most
/// `n - 1` (n points span at most n - 1 dimensions around their mean). At least 1.
fn data_rank(eigenvalues: &[f64], n: u64) -> usize {
    let largest = eigenvalues.first().copied().unwrap_or(0.0);
    let noise = largest * eigenvalues.len() as f64 * f64::EPSILON * 16.0;
    let non_zero = eigenvalues.iter().filter(|&&value| value > noise).count();
    non_zero
        .min(usize::try_from(n.saturating_sub(1)).unwrap_or(usize::MAX))
        .max(1)
}

/// Eigenvectors have no intrinsic sign; fix it so the largest-magnitude loading is
/// positive, and results are the same on every run and machine.
fn with_positive_largest_loading(loadings: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut vector: Vec<f64> = loadings.collect();
    let largest = vector.iter().copied().fold(0.0f64, |best, value| {
        if value.abs() > best.abs() {
            value
        } else {
            best
        }
    });
    if largest < 0.0 {
        vector.iter_mut().for_each(|value| *value = -*value);
    }
    vector
}

impl Pca {
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Projects rows (row-major, `dim` floats each) onto the components: `n x k`, row-major.
    pub fn project(&self, rows: &[f32]) -> Vec<f64> {
        self.projector().project(rows)
    }

    /// The projection laid out for repeated use: building the loadings matrix costs more
    /// than projecting one photo with it (`fruitpipe serve` projects one photo a request).
    pub fn projector(&self) -> Projector {
        let divisors: Vec<f64> = (0..self.k)
            .map(|c| match self.eigenvalues[c] {
                value if self.whiten && value > 0.0 => value.sqrt(),
                _ => 1.0,
            })
            .collect();
        Projector {
            k: self.k,
            mean: self.mean.clone(),
            scale: self.scale.clone(),
            loadings: Mat::from_fn(self.dim(), self.k, |j, c| self.components[c][j]),
            divisors,
        }
    }
}

/// A [`Pca`] ready to project many batches of photos.
pub struct Projector {
    k: usize,
    mean: Vec<f64>,
    scale: Vec<f64>,
    /// `dim x k`.
    loadings: Mat<f64>,
    /// What each component is divided by: the square root of its eigenvalue when
    /// whitening, else 1.
    divisors: Vec<f64>,
}

impl Projector {
    /// `rows`: photos of `dim` features each, back to back; returns `k` components each.
    pub fn project(&self, rows: &[f32]) -> Vec<f64> {
        let dim = self.mean.len();
        let n = rows.len() / dim;
        let standardized = Mat::from_fn(n, dim, |i, j| {
            (f64::from(rows[i * dim + j]) - self.mean[j]) / self.scale[j]
        });
        let mut projected = Mat::<f64>::zeros(n, self.k);
        matmul(
            projected.as_mut(),
            Accum::Replace,
            standardized.as_ref(),
            self.loadings.as_ref(),
            1.0,
            Par::Seq,
        );
        let mut out = Vec::with_capacity(n * self.k);
        for i in 0..n {
            out.extend((0..self.k).map(|c| projected[(i, c)] / self.divisors[c]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::Lcg;

    /// Points spread along known orthogonal directions with known variances.
    fn known_cloud() -> (Vec<f32>, [[f64; 3]; 3]) {
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let axes = [[s, s, 0.0], [-s, s, 0.0], [0.0, 0.0, 1.0]];
        let spreads = [10.0, 3.0, 0.5];
        let mut rng = Lcg(7);
        let mut rows = Vec::new();
        for _ in 0..4000 {
            let weights: Vec<f64> = spreads
                .iter()
                .map(|spread| (rng.next_f64() - 0.5) * spread)
                .collect();
            for d in 0..3 {
                let value: f64 = (0..3).map(|a| weights[a] * axes[a][d]).sum();
                rows.push((value + 5.0) as f32);
            }
        }
        (rows, axes)
    }

    #[test]
    fn recovers_known_directions_with_fixed_signs() {
        let (rows, axes) = known_cloud();
        let pca = fit(&Moments::of_batch(&rows, 3), Components::Count(3), false).unwrap();
        for (component, axis) in pca.components.iter().zip(axes) {
            let dot: f64 = component.iter().zip(axis).map(|(a, b)| a * b).sum();
            assert!(
                dot.abs() > 0.999,
                "component {component:?} is not along {axis:?}"
            );
            let largest = component
                .iter()
                .copied()
                .fold(0.0f64, |b, v| if v.abs() > b.abs() { v } else { b });
            assert!(largest > 0.0);
        }
        // Uniform on [-s/2, s/2] has variance s^2/12.
        let expected = [100.0 / 12.0, 9.0 / 12.0, 0.25 / 12.0];
        for (value, expected) in pca.eigenvalues.iter().zip(expected) {
            assert!((value - expected).abs() / expected < 0.05);
        }
        assert!(pca.eigenvalues.windows(2).all(|w| w[0] >= w[1]));
        assert!((pca.cumulative_explained_variance - 1.0).abs() < 1e-9);
    }

    #[test]
    fn k_is_the_smallest_reaching_the_threshold() {
        let ratios = [0.5, 0.3, 0.15, 0.05];
        assert_eq!(smallest_k_reaching(&ratios, 0.5), 1);
        assert_eq!(smallest_k_reaching(&ratios, 0.8), 2);
        assert_eq!(smallest_k_reaching(&ratios, 0.81), 3);
        assert_eq!(smallest_k_reaching(&ratios, 1.0), 4);

        let (rows, _) = known_cloud();
        let moments = Moments::of_batch(&rows, 3);
        let pca = fit(&moments, Components::Variance(0.9), false).unwrap();
        assert_eq!(pca.k, 1);
        let pca = fit(&moments, Components::Variance(0.95), false).unwrap();
        assert_eq!(pca.k, 2);
    }

    #[test]
    fn standardizing_uses_the_correlation_matrix() {
        // Two perfectly correlated features on very different scales, plus noise.
        let mut rng = Lcg(9);
        let mut rows = Vec::new();
        for _ in 0..1000 {
            let t = rng.next_f64();
            rows.extend([(t * 1000.0) as f32, t as f32, rng.next_f64() as f32]);
        }
        let moments = Moments::of_batch(&rows, 3);
        let raw = fit(&moments, Components::Count(1), false).unwrap();
        assert!(
            raw.components[0][0] > 0.999,
            "raw PCA follows the large feature"
        );
        let scaled = fit(&moments, Components::Count(3), true).unwrap();
        let first = &scaled.components[0];
        assert!((first[0] - first[1]).abs() < 1e-6 && first[0] > 0.7);
        // Correlation eigenvalues sum to the number of features; the third is (almost)
        // zero, as the first two features are proportional, so it may be dropped as below
        // the data's rank.
        let sum: f64 = scaled.eigenvalues.iter().sum();
        assert!((sum - 3.0).abs() < 1e-6, "{sum}");
        let projected = scaled.project(&rows[..3]);
        assert_eq!(projected.len(), scaled.k);
    }

    #[test]
    fn projection_of_the_mean_is_zero_and_variance_matches() {
        let (rows, _) = known_cloud();
        let pca = fit(&Moments::of_batch(&rows, 3), Components::Count(2), false).unwrap();
        let mean: Vec<f32> = pca.mean.iter().map(|&m| m as f32).collect();
        assert!(pca.project(&mean).iter().all(|v| v.abs() < 1e-5));
        let projected = pca.project(&rows);
        let n = projected.len() / 2;
        let variance: f64 =
            projected.chunks(2).map(|pc| pc[0] * pc[0]).sum::<f64>() / (n - 1) as f64;
        assert!((variance - pca.eigenvalues[0]).abs() / pca.eigenvalues[0] < 1e-4);
    }

    #[test]
    fn impossible_requests_are_refused() {
        let (rows, _) = known_cloud();
        let moments = Moments::of_batch(&rows, 3);
        assert!(matches!(
            fit(&moments, Components::Count(4), false),
            Err(Error::Config(_))
        ));
        assert!(fit(&moments, Components::Count(0), false).is_err());
        assert!(fit(&moments, Components::Variance(0.0), false).is_err());
        assert!(fit(&moments, Components::Variance(1.5), false).is_err());
        let one = Moments::of_batch(&rows[..3], 3);
        assert!(fit(&one, Components::Count(1), false).is_err());
    }

    #[test]
    fn constant_features_stay_out_of_the_components() {
        // Four photos, 1,280 features of which 1,000 are exactly 0 (ReLU features a small
        // input never wakes): a few photos at --size 32 made faer's solver fail on this.
        let mut rng = Lcg(3);
        let rows: Vec<f32> = (0..4 * 1280)
            .map(|i| {
                if i % 1280 < 280 {
                    rng.next_f64() as f32
                } else {
                    0.0
                }
            })
            .collect();
        let pca = fit(&Moments::of_batch(&rows, 1280), Components::Count(2), false).unwrap();
        assert_eq!(pca.k, 2);
        for component in &pca.components {
            assert!(component[280..].iter().all(|&loading| loading == 0.0));
            let norm: f64 = component.iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn k_is_capped_at_the_datas_rank() {
        let (rows, _) = known_cloud();
        // Two points span one dimension around their mean.
        let two = Moments::of_batch(&rows[..6], 3);
        for components in [Components::Count(3), Components::Variance(1.0)] {
            let pca = fit(&two, components, false).unwrap();
            assert_eq!(pca.k, 1, "{components:?}");
            assert!((pca.cumulative_explained_variance - 1.0).abs() < 1e-9);
        }
        // Points on a plane in 3-D: the third eigenvalue is rounding noise.
        let flat: Vec<f32> = rows
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[0] * 0.5 - p[1] * 2.0])
            .collect();
        let pca = fit(&Moments::of_batch(&flat, 3), Components::Count(3), false).unwrap();
        assert_eq!(pca.k, 2);
    }
}
