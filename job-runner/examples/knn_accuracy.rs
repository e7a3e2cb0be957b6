//! 1-nearest-neighbour top-1 accuracy of the `Test` photos against the `Training` photos
//! of a `features_pca.csv`, by cosine similarity and by Euclidean distance: how well the
//! PCA features separate fruit varieties. Used by bench/quality.sh. `VOTES=1` also prints
//! the similarity-weighted vote of the 3, 5 and 10 nearest (cosine), as `identify` votes.
//!
//! cargo run --release --example knn_accuracy -- OUTPUT/features_pca.csv

use fruitpipe_runner::identify::vote;
use fruitpipe_runner::index::Neighbour;

struct Photo {
    label: String,
    vector: Vec<f64>,
    /// `vector` scaled to unit length, for cosine similarity.
    unit: Vec<f64>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Test photos whose nearest Training photo (the largest `closeness`) has their label.
fn correct(train: &[Photo], test: &[Photo], closeness: impl Fn(&Photo, &Photo) -> f64) -> usize {
    test.iter()
        .filter(|query| {
            let nearest = train
                .iter()
                .max_by(|a, b| closeness(query, a).total_cmp(&closeness(query, b)))
                .expect("training photos");
            nearest.label == query.label
        })
        .count()
}

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: knn_accuracy FEATURES_PCA_CSV"))?;
    let mut reader = csv::Reader::from_path(&path)?;
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = record?;
        let vector: Vec<f64> = record
            .iter()
            .skip(2)
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        let norm = dot(&vector, &vector).sqrt().max(1e-12);
        let unit = vector.iter().map(|v| v / norm).collect();
        let photo = Photo {
            label: record[1].to_string(),
            vector,
            unit,
        };
        if record[0].contains("/Test/") {
            test.push(photo);
        } else {
            train.push(photo);
        }
    }
    anyhow::ensure!(
        !train.is_empty() && !test.is_empty(),
        "{path} needs photos under both Training/ and Test/"
    );
    let cosine = correct(&train, &test, |q, t| dot(&q.unit, &t.unit));
    let euclidean = correct(&train, &test, |q, t| {
        -squared_distance(&q.vector, &t.vector)
    });
    let share = |count: usize| 100.0 * count as f64 / test.len() as f64;
    if std::env::var_os("VOTES").is_some() {
        for voters in [1, 3, 5, 10] {
            let right = test
                .iter()
                .filter(|query| {
                    let mut scored: Vec<(f64, usize)> = train
                        .iter()
                        .enumerate()
                        .map(|(i, photo)| (dot(&query.unit, &photo.unit), i))
                        .collect();
                    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    let nearest: Vec<Neighbour> = scored[..voters]
                        .iter()
                        .map(|&(similarity, i)| Neighbour {
                            path: String::new(),
                            label: train[i].label.clone(),
                            similarity,
                        })
                        .collect();
                    vote(&nearest)[0].label == query.label
                })
                .count();
            println!(
                "weighted {voters}-NN vote (cosine): {:.2}% ({right}/{})",
                share(right),
                test.len()
            );
        }
    }
    println!(
        "1-NN top-1: {:.2}% cosine ({cosine}/{}), {:.2}% Euclidean ({euclidean}/{}); {} Training photos, k = {}",
        share(cosine),
        test.len(),
        share(euclidean),
        test.len(),
        train.len(),
        train[0].vector.len()
    );
    Ok(())
}
