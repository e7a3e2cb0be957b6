//! Phase 4: project one shard's features onto the fitted components and write its part of
//! `features_pca.csv` (shard 0's part starts with the header).
//!
//! One pod per shard on Kubernetes, like `extract`: memory is one shard's rows plus the
//! model, and the total work is spread over as many pods as extract had.

use std::time::Instant;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fit::read_fit;
use crate::output::{self, CsvRows, MODEL_JSON, ModelFile};
use crate::pca::Pca;
use crate::plots::{self, ScatterPoint};
use crate::storage::{Location, Storage};
use crate::work::{FitRecord, ProjectedReport, ShardFeatures, WorkDir, check_plan};

/// Rows projected at once: a few hundred keeps the f64 working copies small.
const PROJECTION_CHUNK: usize = 256;

/// The fitted model `project` works with, read once and shared by every shard of a
/// process.
pub struct Projection {
    pub record: FitRecord,
    pub pca: Pca,
    /// sha256 of the feature model, for the Parquet parts' metadata.
    pub feature_model_sha256: String,
}

/// Reads `fit.json` and the `pca_model.json` it names, and checks they belong together.
pub async fn load_projection(storage: &Storage, work: &WorkDir) -> Result<Projection> {
    let record = read_fit(storage, work).await?;
    let place = Location::parse(&record.output)?.join(MODEL_JSON);
    let bytes = storage.get(&place).await?;
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    if sha256 != record.model_sha256 {
        return Err(Error::Config(format!(
            "{place} is not the model {} recorded (sha256 {sha256}, expected {}): another `fit` wrote it since; run `fruitpipe fit` again, then project",
            work.fit(),
            record.model_sha256
        )));
    }
    let model: ModelFile = serde_json::from_slice(&bytes).map_err(|err| {
        Error::Work(format!(
            "{place} is not a fruitpipe PCA model ({err}); re-run `fruitpipe fit`"
        ))
    })?;
    Ok(Projection {
        record,
        pca: model.pca,
        feature_model_sha256: model.feature_model.sha256,
    })
}

/// Projects shard `shard` and writes its CSV part, then its report.
pub async fn project(
    storage: &Storage,
    work: &WorkDir,
    projection: &Projection,
    shard: usize,
) -> Result<ProjectedReport> {
    let started = Instant::now();
    let shards = projection.record.summary.shards;
    if shard >= shards {
        return Err(Error::Config(format!(
            "shard {shard} does not exist: the plan has {shards} shards (0 to {})",
            shards.saturating_sub(1)
        )));
    }
    let place = work.features(shard);
    let bytes = storage
        .get_expected(&place, |uri| {
            Error::Work(format!(
                "shard {shard} has no features ({uri} is missing); run `fruitpipe extract --index {shard}` with the same --work"
            ))
        })
        .await?;
    let features = ShardFeatures::from_bytes(&bytes, &place)?;
    check_plan(&projection.record.plan, &features.plan, shard, &place)?;
    let components = project_rows(&features, &projection.pca, &place)?;
    if projection.record.parquet {
        let part = parquet_part(&features, &components, projection)?;
        let output = Location::parse(&projection.record.output)?;
        storage
            .put(
                &output.join(&output::parquet_part(shard)),
                Bytes::from(part),
            )
            .await?;
    }
    let csv = csv_part(&features, &components, projection.pca.k, shard == 0);
    let report = ProjectedReport {
        model_sha256: projection.record.model_sha256.clone(),
        shard,
        rows: features.len() as u64,
        bytes: csv.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
        sample: scatter_candidates(
            &features,
            &components,
            projection.pca.k,
            projection.record.summary.images_used,
        ),
    };
    storage
        .put(&work.projected(shard), Bytes::from(csv))
        .await?;
    storage
        .put_json(&work.projected_report(shard), &report)
        .await?;
    Ok(report)
}

/// The shard's components, `k` per photo, in the shard's order.
fn project_rows(features: &ShardFeatures, pca: &Pca, place: &Location) -> Result<Vec<f64>> {
    if features.is_empty() {
        return Ok(Vec::new());
    }
    if features.dim != pca.dim() {
        return Err(Error::Work(format!(
            "{place} has {} features per photo, the fitted model {}; re-run extract for this shard",
            features.dim,
            pca.dim()
        )));
    }
    let projector = pca.projector();
    let mut components = Vec::with_capacity(features.len() * pca.k);
    for block in features.rows.chunks(PROJECTION_CHUNK * features.dim) {
        components.extend(projector.project(block));
    }
    Ok(components)
}

/// The shard's photos that may be drawn in `pc_scatter.png`, with their first two
/// components as written in the CSV.
fn scatter_candidates(
    features: &ShardFeatures,
    components: &[f64],
    k: usize,
    images: u64,
) -> Vec<ScatterPoint> {
    features
        .paths
        .iter()
        .zip(&features.labels)
        .zip(components.chunks_exact(k))
        .filter_map(|((path, label), row)| {
            let key = plots::sample_key(path);
            plots::sample_candidate(key, images).then(|| ScatterPoint {
                key,
                label: label.clone(),
                pc1: row[0] as f32,
                pc2: row.get(1).copied().unwrap_or(0.0) as f32,
            })
        })
        .collect()
}

/// The shard's rows as CSV, with the header when `header` is set.
fn csv_part(features: &ShardFeatures, components: &[f64], k: usize, header: bool) -> Vec<u8> {
    let mut rows = if header {
        CsvRows::new(k)
    } else {
        CsvRows::headless()
    };
    for (index, row) in components.chunks_exact(k).enumerate() {
        rows.write(&features.paths[index], &features.labels[index], row);
    }
    rows.take()
}

/// The shard's rows as a Parquet file, with what a reader needs to know in its metadata.
fn parquet_part(
    features: &ShardFeatures,
    components: &[f64],
    projection: &Projection,
) -> Result<Vec<u8>> {
    let pca = &projection.pca;
    let metadata = vec![
        ("fruitpipe.k".to_string(), pca.k.to_string()),
        ("fruitpipe.whiten".to_string(), pca.whiten.to_string()),
        (
            "fruitpipe.feature_model_sha256".to_string(),
            projection.feature_model_sha256.clone(),
        ),
        (
            "fruitpipe.pca_model_sha256".to_string(),
            projection.record.model_sha256.clone(),
        ),
    ];
    output::parquet_rows(
        &features.paths,
        &features.labels,
        components,
        pca.k,
        metadata,
    )
    .map_err(|err| Error::Work(format!("cannot write a Parquet part: {err}")))
}
