//! The photos of a pipeline's output as a searchable index: which rows of
//! `features_pca.csv` are most like a new photo, by cosine similarity.
//!
//! A search reads every row, so it is bound by memory: each row is kept twice, as unit
//! floats for exact similarities and as bytes (int8, one scale per row) for a first pass
//! that reads a quarter of the memory. The first pass shortlists a few times more rows than
//! asked for; the exact similarities then rank the shortlist. Quantisation moves a
//! similarity by about 1e-4 (k = 115), far less than the gap between the last row asked
//! for and the last of the shortlist, so the answer is the exact one.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::storage::Location;

/// The first pass keeps this many times the rows asked for (and at least `MIN_SHORTLIST`).
const SHORTLIST_FACTOR: usize = 4;
const MIN_SHORTLIST: usize = 64;

/// Every photo of a pipeline's output, its components scaled to unit length.
pub struct Index {
    pub paths: Vec<String>,
    pub labels: Vec<String>,
    pub k: usize,
    /// `len * k` floats, a unit row per photo.
    units: Vec<f32>,
    /// The same rows as int8: row value = code * `scales[row]`.
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// Row numbers in the order of their paths, to look a path up.
    by_path: Vec<u32>,
}

/// One photo of the index, and how like the query it is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Neighbour {
    pub path: String,
    pub label: String,
    /// Cosine similarity with the query, in [-1, 1].
    pub similarity: f64,
}

impl Index {
    /// Reads `path,label,pc_1..pc_k` rows.
    pub fn from_csv(bytes: &[u8], what: &Location) -> Result<Index> {
        let unreadable = |why: String| {
            Error::Input(format!(
                "{what} is not a features_pca.csv ({why}); give --from the output of a fruitpipe run"
            ))
        };
        let mut reader = csv::Reader::from_reader(bytes);
        let header = reader
            .headers()
            .map_err(|err| unreadable(err.to_string()))?;
        if header.len() < 3 || &header[0] != "path" || &header[1] != "label" {
            return Err(unreadable("its header is not path,label,pc_1,...".into()));
        }
        let k = header.len() - 2;
        let mut index = Index {
            paths: Vec::new(),
            labels: Vec::new(),
            k,
            units: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            by_path: Vec::new(),
        };
        let mut record = csv::StringRecord::new();
        let mut row = vec![0f32; k];
        while reader
            .read_record(&mut record)
            .map_err(|err| unreadable(err.to_string()))?
        {
            if record.len() != k + 2 {
                return Err(unreadable(format!(
                    "a row has {} fields, the header {}",
                    record.len(),
                    k + 2
                )));
            }
            for (value, text) in row.iter_mut().zip(record.iter().skip(2)) {
                *value = text
                    .parse()
                    .map_err(|_| unreadable(format!("'{text}' is not a number")))?;
            }
            index.push(&record[0], &record[1], &mut row);
        }
        if index.paths.is_empty() {
            return Err(unreadable("it has no rows".into()));
        }
        let rows = u32::try_from(index.paths.len())
            .map_err(|_| unreadable("it has more than 4 billion rows".into()))?;
        index.by_path = (0..rows).collect();
        index
            .by_path
            .sort_unstable_by(|a, b| index.paths[*a as usize].cmp(&index.paths[*b as usize]));
        Ok(index)
    }

    fn push(&mut self, path: &str, label: &str, row: &mut [f32]) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-20);
        row.iter_mut().for_each(|v| *v /= norm);
        let largest = row.iter().fold(0f32, |max, v| max.max(v.abs())).max(1e-20);
        let scale = largest / 127.0;
        self.codes.extend(
            row.iter()
                .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8),
        );
        self.scales.push(scale);
        self.units.extend_from_slice(row);
        self.paths.push(path.to_string());
        self.labels.push(label.to_string());
    }

    /// Whether `path` is, exactly, the path of a photo of the index.
    pub fn contains(&self, path: &str) -> bool {
        self.by_path
            .binary_search_by(|row| self.paths[*row as usize].as_str().cmp(path))
            .is_ok()
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The `count` rows most similar to `query` (cosine), most similar first; ties go to
    /// the earlier row.
    pub fn nearest(&self, query: &[f64], count: usize) -> Vec<Neighbour> {
        let count = count.min(self.len());
        if count == 0 {
            return Vec::new();
        }
        let norm = query.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
        let unit: Vec<f32> = query.iter().map(|v| (v / norm) as f32).collect();

        let mut shortlist = approximate_similarities(&self.codes, &self.scales, self.k, &unit);
        let keep = (count * SHORTLIST_FACTOR).max(MIN_SHORTLIST);
        if keep < shortlist.len() {
            shortlist.select_nth_unstable_by(keep - 1, by_similarity);
            shortlist.truncate(keep);
        }
        let mut exact: Vec<(f32, u32)> = shortlist
            .into_iter()
            .map(|(_, i)| (dot(self.row(i), &unit), i))
            .collect();
        exact.sort_by(by_similarity);
        exact
            .into_iter()
            .take(count)
            .map(|(similarity, i)| Neighbour {
                path: self.paths[i as usize].clone(),
                label: self.labels[i as usize].clone(),
                similarity: f64::from(similarity),
            })
            .collect()
    }

    fn row(&self, i: u32) -> &[f32] {
        let start = i as usize * self.k;
        &self.units[start..start + self.k]
    }
}

/// Most similar first, then the earlier row.
fn by_similarity(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// `(about row . unit, row number)` for every int8 row: most of a search's time. Row
/// numbers fit in u32 (checked at load), half the memory of usize to sort.
fn approximate_similarities(
    codes: &[i8],
    scales: &[f32],
    k: usize,
    unit: &[f32],
) -> Vec<(f32, u32)> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { approximate_similarities_avx2_fma(codes, scales, k, unit) };
    }
    approximate_similarities_with::<false>(codes, scales, k, unit)
}

/// The same compiled for AVX2 and FMA (8 lanes per instruction, multiply-add in one),
/// which the default x86-64 target may not assume.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn approximate_similarities_avx2_fma(
    codes: &[i8],
    scales: &[f32],
    k: usize,
    unit: &[f32],
) -> Vec<(f32, u32)> {
    approximate_similarities_with::<true>(codes, scales, k, unit)
}

#[inline(always)]
fn approximate_similarities_with<const FMA: bool>(
    codes: &[i8],
    scales: &[f32],
    k: usize,
    unit: &[f32],
) -> Vec<(f32, u32)> {
    // A plain loop, not `collect`: the collecting code would be compiled outside the
    // AVX2 function, and the dot product with it.
    let mut scored = Vec::with_capacity(scales.len());
    for ((row, scale), i) in codes.chunks_exact(k).zip(scales).zip(0u32..) {
        scored.push((scale * dot_codes::<FMA>(row, unit), i));
    }
    scored
}

/// Sums in this many independent lanes: one running sum must be added in order, which
/// keeps the compiler from using SIMD; 16 let it fill two vector registers.
const LANES: usize = 16;

#[inline(always)]
fn dot_codes<const FMA: bool>(codes: &[i8], unit: &[f32]) -> f32 {
    lane_sums::<i8, FMA>(codes, unit)
}

/// The exact `a . b` of two float rows.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    lane_sums::<f32, false>(a, b)
}

/// `a . b` with `a`'s values widened to f32, in `LANES` independent sums.
#[inline(always)]
fn lane_sums<T: Copy + Into<f32>, const FMA: bool>(a: &[T], b: &[f32]) -> f32 {
    let mut sums = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| (*x).into() * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            let x: f32 = x[lane].into();
            sums[lane] = if FMA {
                x.mul_add(y[lane], sums[lane])
            } else {
                sums[lane] + x * y[lane]
            };
        }
    }
    sums.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(rows: &[Vec<f32>]) -> Index {
        let k = rows[0].len();
        let mut csv = String::from("path,label");
        for c in 1..=k {
            csv.push_str(&format!(",pc_{c}"));
        }
        csv.push('\n');
        for (i, row) in rows.iter().enumerate() {
            csv.push_str(&format!("{i}.jpg,L{}", i % 7));
            for value in row {
                csv.push_str(&format!(",{value}"));
            }
            csv.push('\n');
        }
        Index::from_csv(csv.as_bytes(), &Location::parse("x.csv").unwrap()).unwrap()
    }

    fn pseudo_random(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    #[test]
    fn the_dot_products_add_every_term() {
        for len in [1, 7, 15, 16, 17, 64, 115, 247] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            assert!((f64::from(dot(&a, &b)) - plain).abs() < 1e-5, "{len}");
            let codes: Vec<i8> = (0..len).map(|i| (i % 255) as i8).collect();
            let exact: f64 = codes
                .iter()
                .zip(&b)
                .map(|(c, y)| f64::from(*c) * f64::from(*y))
                .sum();
            for fma in [false, true] {
                let got = if fma {
                    dot_codes::<true>(&codes, &b)
                } else {
                    dot_codes::<false>(&codes, &b)
                };
                assert!((f64::from(got) - exact).abs() < 1e-3, "{len} {fma}");
            }
        }
    }

    #[test]
    fn the_index_finds_the_most_similar_rows_first() {
        let csv = b"path,label,pc_1,pc_2\na.jpg,A,1,0\nb.jpg,B,0,1\nc.jpg,A,0.9,0.1\n";
        let place = Location::parse("x.csv").unwrap();
        let index = Index::from_csv(csv, &place).unwrap();
        let nearest = index.nearest(&[2.0, 0.1], 2);
        assert_eq!(
            nearest.iter().map(|n| n.path.as_str()).collect::<Vec<_>>(),
            ["a.jpg", "c.jpg"]
        );
        assert!(nearest[0].similarity > nearest[1].similarity);
        assert!(index.contains("b.jpg") && index.contains("a.jpg") && index.contains("c.jpg"));
        assert!(!index.contains("d.jpg") && !index.contains("./a.jpg") && !index.contains(""));
        assert!(Index::from_csv(b"path,label,pc_1\n", &place).is_err());
        assert!(Index::from_csv(b"a,b\n1,2\n", &place).is_err());
        assert!(Index::from_csv(b"path,label,pc_1\nx,y,z\n", &place).is_err());
    }

    #[test]
    fn the_shortlisted_search_returns_the_exact_answer() {
        // 3,000 random rows of 40 components: the answer must be the brute-force one,
        // order, rows and similarities.
        let mut seed = 0x1234_5678_9abc_def1;
        let rows: Vec<Vec<f32>> = (0..3000)
            .map(|_| (0..40).map(|_| pseudo_random(&mut seed)).collect())
            .collect();
        let index = index_of(&rows);
        for _ in 0..20 {
            let query: Vec<f64> = (0..40)
                .map(|_| f64::from(pseudo_random(&mut seed)))
                .collect();
            let norm = query.iter().map(|v| v * v).sum::<f64>().sqrt();
            let mut brute: Vec<(f64, usize)> = rows
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    let row_norm = row.iter().map(|v| f64::from(v * v)).sum::<f64>().sqrt();
                    let cosine = row
                        .iter()
                        .zip(&query)
                        .map(|(a, b)| f64::from(*a) * b)
                        .sum::<f64>()
                        / (row_norm * norm);
                    (cosine, i)
                })
                .collect();
            brute.sort_by(|a, b| b.0.total_cmp(&a.0));
            let found = index.nearest(&query, 50);
            assert_eq!(found.len(), 50);
            for (neighbour, (cosine, i)) in found.iter().zip(&brute) {
                assert_eq!(neighbour.path, format!("{i}.jpg"));
                assert!((neighbour.similarity - cosine).abs() < 1e-5);
            }
        }
        assert_eq!(index.nearest(&[1.0; 40], 5000).len(), 3000);
    }
}
