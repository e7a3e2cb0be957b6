//! Phase 5: put the shards' CSV parts together into `features_pca.csv`, draw the figures
//! and write `report.html`, then write `summary.json`.
//!
//! In S3 the server copies the parts (see [`Storage::compose`]): no row passes through
//! this pod except from parts under S3's 5 MiB minimum part size. In a folder the parts
//! are concatenated.

use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::fit::read_fit;
use crate::output::{FEATURES_CSV, REPORT_HTML, SCATTER_PNG, SCREE_PNG, SUMMARY_JSON, Summary};
use crate::plots::{self, ScatterPoint};
use crate::report::Report;
use crate::storage::compose::ComposeLimits;
use crate::storage::{Location, Storage};
use crate::work::{FitRecord, ProjectedReport, WorkDir};

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
    let mut summary = record.summary.clone();
    summary.seconds.project = project_seconds;
    summary.assembly = assembly;
    summary.seconds.assemble = started.elapsed().as_secs_f64();
    let sample = plots::choose_sample(reports.into_iter().flat_map(|r| r.sample).collect());
    write_report(storage, output, &record, &summary, &sample).await?;
    summary.seconds.assemble = started.elapsed().as_secs_f64();
    // The summary goes last: once it exists, every other output is complete.
    storage
        .put_json(&output.join(SUMMARY_JSON), &summary)
        .await?;
    Ok(summary)
}

/// Draws `scree.png` and `pc_scatter.png` and writes them, then `report.html` with both
/// inline.
async fn write_report(
    storage: &Storage,
    output: &Location,
    record: &FitRecord,
    summary: &Summary,
    sample: &[ScatterPoint],
) -> Result<()> {
    let drawing_failed = |err: plots::PlotError| Error::Work(format!("{err}; please report it"));
    let scree =
        plots::scree_png(&record.spectrum, summary.k, record.threshold).map_err(drawing_failed)?;
    let scatter = plots::scatter_png(sample, summary.k).map_err(drawing_failed)?;
    let page = Report {
        summary,
        feature_model: record.feature_model.as_ref(),
        threshold: record.threshold,
        skipped: &record.first_skipped,
        scree_png: &scree,
        scatter_png: &scatter,
        sampled: sample.len(),
    }
    .to_html();
    storage
        .put(&output.join(SCREE_PNG), Bytes::from(scree))
        .await?;
    storage
        .put(&output.join(SCATTER_PNG), Bytes::from(scatter))
        .await?;
    storage
        .put(&output.join(REPORT_HTML), Bytes::from(page))
        .await?;
    tracing::info!(report = %output.join(REPORT_HTML), "wrote the report");
    Ok(())
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
