//! Phase 5: put the shards' CSV parts together into `features_pca.csv`, then write
//! `summary.json`.
//!
//! In S3 the server copies the parts (see [`Storage::compose`]): no row passes through
//! this pod except from parts under S3's 5 MiB minimum part size. In a folder the parts
//! are concatenated.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::fit::read_fit;
use crate::output::{FEATURES_CSV, SUMMARY_JSON, Summary};
use crate::storage::compose::ComposeLimits;
use crate::storage::{Location, Storage};
use crate::work::{ProjectedReport, WorkDir};

/// Part reports read at once: thousands of small objects, each one request.
const CONCURRENT_READS: usize = 32;

pub async fn assemble(
    storage: &Storage,
    work: &WorkDir,
    output: &Location,
    limits: ComposeLimits,
) -> Result<Summary> {
    let started = Instant::now();
    let record = read_fit(storage, work).await?;
    if record.output != output.to_string() {
        return Err(Error::Config(format!(
            "`fit` wrote this run's model to {}, not to {output}; give assemble the same --output as fit",
            record.output
        )));
    }
    let shards = record.summary.shards;
    let reports: Vec<ProjectedReport> = futures::stream::iter(0..shards)
        .map(|shard| read_report(storage, work, shard))
        .buffered(CONCURRENT_READS)
        .try_collect()
        .await?;
    let mut rows = 0;
    let mut project_seconds = 0.0;
    for report in &reports {
        if report.model_sha256 != record.model_sha256 {
            return Err(Error::Config(format!(
                "shard {} was projected with another fitted model (sha256 {}) than the current one ({}): `fit` ran again since; run `fruitpipe project --index {}` again",
                report.shard, report.model_sha256, record.model_sha256, report.shard
            )));
        }
        rows += report.rows;
        project_seconds += report.seconds;
    }
    if rows != record.summary.images_used {
        return Err(Error::Work(format!(
            "the projected parts hold {rows} rows, the fitted statistics {} photos; run `fruitpipe project` again for every shard",
            record.summary.images_used
        )));
    }
    let sources: Vec<(Location, u64)> = reports
        .iter()
        .map(|report| (work.projected(report.shard), report.bytes))
        .collect();
    let assembly = storage
        .compose(
            &output.join(FEATURES_CSV),
            &sources,
            &work.assembly_scratch(),
            limits,
        )
        .await?;
    tracing::info!(
        parts = assembly.parts,
        copied_bytes = assembly.copied_bytes,
        sent_bytes = assembly.sent_bytes,
        "assembled features_pca.csv"
    );
    let mut summary = record.summary;
    summary.seconds.project = project_seconds;
    summary.seconds.assemble = started.elapsed().as_secs_f64();
    summary.assembly = assembly;
    // The summary goes last: once it exists, every other output is complete.
    storage
        .put_json(&output.join(SUMMARY_JSON), &summary)
        .await?;
    Ok(summary)
}

async fn read_report(storage: &Storage, work: &WorkDir, shard: usize) -> Result<ProjectedReport> {
    let place = work.projected_report(shard);
    let bytes = storage
        .get_expected(&place, |uri| {
            Error::Work(format!(
                "shard {shard} has not been projected ({uri} is missing); run `fruitpipe project --index {shard}` with the same --work"
            ))
        })
        .await?;
    serde_json::from_slice(&bytes).map_err(|err| {
        Error::Work(format!(
            "{place} is not a fruitpipe part report ({err}); run `fruitpipe project --index {shard}` again"
        ))
    })
}
