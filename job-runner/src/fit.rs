//! Phase 3: merge the shards' statistics, fit PCA, project every photo, write the outputs.
//!
//! Memory is O(dim^2) for the statistics plus one shard's feature rows.

use std::time::Instant;

use bytes::Bytes;
use indicatif::ProgressBar;

use crate::error::{Error, Result};
use crate::model::ModelInfo;
use crate::output::{
    CsvRows, ERRORS_CSV, FEATURES_CSV, MODEL_JSON, ModelFile, Outputs, SUMMARY_JSON, Summary,
    Timings, errors_csv,
};
use crate::pca::{self, Components, Pca};
use crate::plan::read_plan;
use crate::stats::Moments;
use crate::storage::{Location, Storage};
use crate::work::{Partial, ShardFeatures, Skipped, WorkDir};

/// Rows projected at once.
const PROJECTION_CHUNK: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitOptions {
    pub components: Components,
    pub standardize: bool,
}

/// Everything the shards' partials add up to.
struct Merged {
    moments: Moments,
    model: ModelInfo,
    images: u64,
    skipped: Vec<Skipped>,
    extract_seconds: f64,
}

pub async fn fit(
    storage: &Storage,
    work: &WorkDir,
    output: &Location,
    options: FitOptions,
    progress: &ProgressBar,
) -> Result<Summary> {
    let started = Instant::now();
    // The previous summary goes first: until the new one is written, nothing in the output
    // folder says "complete".
    storage.delete(&output.join(SUMMARY_JSON)).await?;
    let plan = read_plan(storage, work).await?;
    let mut merged = merge_partials(storage, work, &plan.id, plan.shards).await?;
    merged.skipped.splice(0..0, plan.skipped.iter().cloned());
    merged.images += plan.skipped.len() as u64;
    // Written first, so that even a run that cannot fit says which inputs it skipped.
    storage
        .put(
            &output.join(ERRORS_CSV),
            Bytes::from(errors_csv(&merged.skipped)),
        )
        .await?;
    let pca = pca::fit(&merged.moments, options.components, options.standardize)?;
    tracing::info!(
        k = pca.k,
        explained = pca.cumulative_explained_variance,
        images = merged.moments.n,
        "fitted PCA"
    );

    progress.set_length(merged.moments.n);
    // Streamed to the output as it is projected: no local copy, whatever its size.
    let mut csv = storage.writer(&output.join(FEATURES_CSV)).await?;
    let mut rows = CsvRows::new(pca.k);
    for shard in 0..plan.shards {
        let written = project_shard(storage, work, &plan.id, shard, &pca, &mut rows).await?;
        csv.write(&rows.take()).await?;
        progress.inc(written);
    }
    csv.write(&rows.take()).await?;
    csv.finish().await?;

    let outputs = Outputs::under(output);
    let model_file = ModelFile {
        feature_model: merged.model.clone(),
        pca: pca.clone(),
    };
    put_json(storage, &output.join(MODEL_JSON), &model_file).await?;

    let summary = Summary {
        input: plan.input,
        output: output.to_string(),
        images_seen: merged.images,
        images_used: merged.moments.n,
        images_skipped: merged.skipped.len() as u64,
        shards: plan.shards,
        dim: merged.model.dim,
        k: pca.k,
        standardize: options.standardize,
        cumulative_explained_variance: pca.cumulative_explained_variance,
        images_per_second: merged.moments.n as f64 / merged.extract_seconds.max(1e-9),
        seconds: Timings {
            plan: plan.seconds,
            extract: merged.extract_seconds,
            fit: started.elapsed().as_secs_f64(),
        },
        outputs,
    };
    // The summary goes last: once it exists, every other output is complete.
    put_json(storage, &output.join(SUMMARY_JSON), &summary).await?;
    Ok(summary)
}

async fn put_json(storage: &Storage, at: &Location, value: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).expect("outputs serialise");
    storage.put(at, Bytes::from(json)).await
}

/// Merges the partials in shard order, so the result does not depend on which pod
/// finished first or how often a shard was retried.
async fn merge_partials(
    storage: &Storage,
    work: &WorkDir,
    plan: &str,
    shards: usize,
) -> Result<Merged> {
    let mut merged: Option<Merged> = None;
    for shard in 0..shards {
        let partial = read_partial(storage, work, shard).await?;
        let report = partial.report;
        check_plan(plan, &report.plan, shard, &work.partial(shard))?;
        match &mut merged {
            None => {
                merged = Some(Merged {
                    moments: partial.moments,
                    model: report.model,
                    images: report.images,
                    skipped: report.skipped,
                    extract_seconds: report.seconds,
                });
            }
            Some(total) => {
                if report.model != total.model {
                    return Err(Error::Work(format!(
                        "shard {shard} was extracted with another model or preprocessing ({} {:?}) than shard 0 ({} {:?}); re-run extract for every shard with the same --model, --preset and --size",
                        report.model.uri,
                        report.model.preprocessing,
                        total.model.uri,
                        total.model.preprocessing
                    )));
                }
                total.moments.merge(&partial.moments);
                total.images += report.images;
                total.skipped.extend(report.skipped);
                total.extract_seconds += report.seconds;
            }
        }
    }
    merged.ok_or_else(|| Error::Work("the plan has no shards; re-run `fruitpipe plan`".into()))
}

async fn read_partial(storage: &Storage, work: &WorkDir, shard: usize) -> Result<Partial> {
    let place = work.partial(shard);
    let bytes = storage.get(&place).await.map_err(|err| match err {
        Error::NotFound { uri, .. } => Error::Work(format!(
            "shard {shard} has not been extracted ({uri} is missing); run `fruitpipe extract --index {shard}` with the same --work"
        )),
        other => other,
    })?;
    Partial::from_bytes(&bytes, &place)
}

/// A shard extracted from another plan's manifest than the current one (plan was run
/// again into the same work area) must not be merged: its photos are not this plan's.
fn check_plan(plan: &str, shard_plan: &str, shard: usize, place: &Location) -> Result<()> {
    if shard_plan == plan {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{place} belongs to another plan of this work area (plan {}, the current one is {plan}): `plan` was run again after shard {shard} was extracted; run `fruitpipe extract --index {shard}` again for every shard, or use a new --work",
        if shard_plan.is_empty() {
            "unknown"
        } else {
            shard_plan
        }
    )))
}

async fn project_shard(
    storage: &Storage,
    work: &WorkDir,
    plan: &str,
    shard: usize,
    pca: &Pca,
    rows: &mut CsvRows,
) -> Result<u64> {
    let place = work.features(shard);
    let bytes = storage.get(&place).await?;
    let features = ShardFeatures::from_bytes(&bytes, &place)?;
    check_plan(plan, &features.plan, shard, &place)?;
    if features.is_empty() {
        return Ok(0);
    }
    if features.dim != pca.dim() {
        return Err(Error::Work(format!(
            "{place} has {} features per photo, the statistics have {}; re-run extract for shard {shard}",
            features.dim,
            pca.dim()
        )));
    }
    // A few hundred rows at a time keeps the f64 working copies small.
    let chunk = PROJECTION_CHUNK * features.dim;
    for (first, block) in features.rows.chunks(chunk).enumerate() {
        let projected = pca.project(block);
        for (offset, components) in projected.chunks_exact(pca.k).enumerate() {
            let index = first * PROJECTION_CHUNK + offset;
            rows.write(&features.paths[index], &features.labels[index], components);
        }
    }
    Ok(features.len() as u64)
}
