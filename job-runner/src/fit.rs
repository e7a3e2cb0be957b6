//! Phase 3: merge the shards' statistics and fit PCA; writes `pca_model.json`.
//!
//! No feature row is read here: memory and time are O(shards x dim^2), whatever the
//! number of photos. `project` and `assemble` write `features_pca.csv`.

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::ModelInfo;
use crate::output::{
    ERRORS_CSV, MODEL_JSON, ModelFile, Outputs, SUMMARY_JSON, Summary, Timings, errors_csv,
};
use crate::pca::{self, Components};
use crate::plan::read_plan;
use crate::report::SKIPPED_SHOWN;
use crate::stats::Moments;
use crate::storage::{Location, Storage};
use crate::work::{FitRecord, Partial, Skipped, WorkDir, check_plan};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitOptions {
    pub components: Components,
    pub standardize: bool,
    /// Divide each component by the square root of its eigenvalue.
    pub whiten: bool,
    /// Write `features_pca.parquet/` beside `features_pca.csv` (`--format csv,parquet`).
    pub parquet: bool,
}

/// Everything the shards' partials add up to.
struct Merged {
    moments: Moments,
    model: ModelInfo,
    images: u64,
    skipped: Vec<Skipped>,
    extract_seconds: f64,
}

/// Fits PCA on the merged statistics and writes `pca_model.json`, `errors.csv` and the
/// work area's `fit.json`. Returns what `fit.json` says.
pub async fn fit(
    storage: &Storage,
    work: &WorkDir,
    output: &Location,
    options: FitOptions,
) -> Result<FitRecord> {
    let started = Instant::now();
    let plan = read_plan(storage, work).await?;
    remove_stale_parquet_parts(storage, output, plan.shards, options.parquet).await?;
    // The previous summary goes next: until the new one is written, nothing in the output
    // folder says "complete".
    storage.delete(&output.join(SUMMARY_JSON)).await?;
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
    let (mut pca, spectrum) =
        pca::fit_with_spectrum(&merged.moments, options.components, options.standardize)?;
    pca.whiten = options.whiten;
    tracing::info!(
        k = pca.k,
        explained = pca.cumulative_explained_variance,
        images = merged.moments.n,
        "fitted PCA"
    );
    let model_file = ModelFile {
        feature_model: merged.model.clone(),
        pca,
    };
    let model_json = serde_json::to_vec_pretty(&model_file).expect("outputs serialise");
    let model_sha256 = format!("{:x}", Sha256::digest(&model_json));
    storage
        .put(&output.join(MODEL_JSON), Bytes::from(model_json))
        .await?;

    let pca = &model_file.pca;
    let record = FitRecord {
        plan: plan.id.clone(),
        output: output.to_string(),
        model_sha256,
        parquet: options.parquet,
        spectrum,
        threshold: match options.components {
            Components::Variance(threshold) => Some(threshold),
            Components::Count(_) => None,
        },
        feature_model: Some(model_file.feature_model.clone()),
        first_skipped: merged.skipped[..merged.skipped.len().min(SKIPPED_SHOWN)].to_vec(),
        summary: Summary {
            input: plan.input,
            output: output.to_string(),
            images_seen: merged.images,
            images_used: merged.moments.n,
            images_skipped: merged.skipped.len() as u64,
            shards: plan.shards,
            dim: merged.model.dim,
            k: pca.k,
            standardize: options.standardize,
            whiten: options.whiten,
            cumulative_explained_variance: pca.cumulative_explained_variance,
            images_per_second: merged.moments.n as f64 / merged.extract_seconds.max(1e-9),
            seconds: Timings {
                plan: plan.seconds,
                extract: merged.extract_seconds,
                fit: started.elapsed().as_secs_f64(),
                ..Timings::default()
            },
            outputs: Outputs::under(output, options.parquet),
            assembly: Default::default(),
        },
    };
    storage.put_json(&work.fit(), &record).await?;
    Ok(record)
}

/// Deletes the Parquet parts of the previous run into `output` that this run will not
/// write again (all of them without `--format parquet`, else those of shards it does not
/// have): a reader of the folder would take them for rows of this run. The previous run's
/// `summary.json` says how many there were; it is deleted only after them.
async fn remove_stale_parquet_parts(
    storage: &Storage,
    output: &Location,
    shards: usize,
    parquet: bool,
) -> Result<()> {
    let previous: Option<Summary> = match storage.get(&output.join(SUMMARY_JSON)).await {
        Ok(bytes) => serde_json::from_slice(&bytes).ok(),
        Err(Error::NotFound { .. }) => None,
        Err(err) => return Err(err),
    };
    let Some(previous) = previous.filter(|summary| summary.outputs.parquet.is_some()) else {
        return Ok(());
    };
    let keep = if parquet { shards } else { 0 };
    for shard in keep..previous.shards {
        storage
            .delete(&output.join(&crate::output::parquet_part(shard)))
            .await?;
    }
    Ok(())
}

/// Reads `fit.json`: what `project` and `assemble` build on.
pub async fn read_fit(storage: &Storage, work: &WorkDir) -> Result<FitRecord> {
    let bytes = storage
        .get_expected(&work.fit(), |uri| {
            Error::Config(format!(
                "no fitted model at {uri}; run `fruitpipe fit` with the same --work first"
            ))
        })
        .await?;
    serde_json::from_slice(&bytes).map_err(|err| {
        Error::Work(format!(
            "{} is not a fruitpipe fit record ({err}); re-run `fruitpipe fit`",
            work.fit()
        ))
    })
}

/// Partials downloaded at once: one S3 stream gives about 100 MB/s, a pod's network ten
/// times that; merging stays in shard order.
const PARTIALS_AT_ONCE: usize = 8;

/// Merges the partials in shard order, so the result does not depend on which pod
/// finished first or how often a shard was retried.
async fn merge_partials(
    storage: &Storage,
    work: &WorkDir,
    plan: &str,
    shards: usize,
) -> Result<Merged> {
    let mut partials = futures::stream::iter(0..shards)
        .map(|shard| read_partial(storage, work, shard))
        .buffered(PARTIALS_AT_ONCE);
    let mut merged: Option<Merged> = None;
    let mut shard = 0;
    while let Some(partial) = partials.next().await {
        let partial = partial?;
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
        shard += 1;
    }
    merged.ok_or_else(|| Error::Work("the plan has no shards; re-run `fruitpipe plan`".into()))
}

async fn read_partial(storage: &Storage, work: &WorkDir, shard: usize) -> Result<Partial> {
    let place = work.partial(shard);
    let bytes = storage
        .get_expected(&place, |uri| {
            Error::Work(format!(
                "shard {shard} has not been extracted ({uri} is missing); run `fruitpipe extract --index {shard}` with the same --work"
            ))
        })
        .await?;
    Partial::from_bytes(&bytes, &place)
}
