//! 1-nearest-neighbour top-1 accuracy of the `Test` photos against the `Training` photos
//! of a `features_pca.csv`, by cosine similarity: how well the PCA features separate
//! fruit varieties. Used by bench/quality.sh.
//!
//! cargo run --release --example knn_accuracy -- OUTPUT/features_pca.csv

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: knn_accuracy FEATURES_PCA_CSV"))?;
    let mut reader = csv::Reader::from_path(&path)?;
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = record?;
        let label = record[1].to_string();
        let mut vector: Vec<f64> = record
            .iter()
            .skip(2)
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        let norm = vector.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        vector.iter_mut().for_each(|v| *v /= norm);
        let split = if record[0].contains("/Test/") {
            &mut test
        } else {
            &mut train
        };
        split.push((label, vector));
    }
    anyhow::ensure!(
        !train.is_empty() && !test.is_empty(),
        "{path} needs photos under both Training/ and Test/"
    );
    let correct = test
        .iter()
        .filter(|(label, query)| {
            let nearest = train
                .iter()
                .max_by(|a, b| {
                    let score =
                        |v: &Vec<f64>| v.iter().zip(query.iter()).map(|(x, y)| x * y).sum::<f64>();
                    score(&a.1).total_cmp(&score(&b.1))
                })
                .expect("training photos");
            &nearest.0 == label
        })
        .count();
    let k = train[0].1.len();
    println!(
        "1-NN top-1: {:.2}% ({correct}/{} Test photos against {} Training photos, k = {k})",
        100.0 * correct as f64 / test.len() as f64,
        test.len(),
        train.len()
    );
    Ok(())
}
