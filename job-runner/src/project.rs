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
use crate::output::{CsvRows, MODEL_JSON, ModelFile};
use crate::pca::Pca;
use crate::storage::{Location, Storage};
use crate::work::{FitRecord, ProjectedReport, ShardFeatures, WorkDir, check_plan};

/// Rows projected at once: a few hundred keeps the f64 working copies small.
const PROJECTION_CHUNK: usize = 256;

/// The fitted model `project` works with, read once and shared by every shard of a
/// process.
pub struct Projection {
    pub record: FitRecord,
    pub pca: Pca,
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
    let csv = csv_part(&features, &projection.pca, shard == 0, &place)?;
    let report = ProjectedReport {
        model_sha256: projection.record.model_sha256.clone(),
        shard,
        rows: features.len() as u64,
        bytes: csv.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
    };
    storage
        .put(&work.projected(shard), Bytes::from(csv))
        .await?;
    storage
        .put_json(&work.projected_report(shard), &report)
        .await?;
    Ok(report)
}

/// The shard's rows as CSV, with the header when `header` is set.
fn csv_part(
    features: &ShardFeatures,
    pca: &Pca,
    header: bool,
    place: &Location,
) -> Result<Vec<u8>> {
    let mut rows = if header {
        CsvRows::new(pca.k)
    } else {
        CsvRows::headless()
    };
    if features.is_empty() {
        return Ok(rows.take());
    }
    if features.dim != pca.dim() {
        return Err(Error::Work(format!(
            "{place} has {} features per photo, the fitted model {}; re-run extract for this shard",
            features.dim,
            pca.dim()
        )));
    }
    let chunk = PROJECTION_CHUNK * features.dim;
    let projector = pca.projector();
    for (first, block) in features.rows.chunks(chunk).enumerate() {
        let projected = projector.project(block);
        for (offset, components) in projected.chunks_exact(pca.k).enumerate() {
            let index = first * PROJECTION_CHUNK + offset;
            rows.write(&features.paths[index], &features.labels[index], components);
        }
    }
    Ok(rows.take())
}
