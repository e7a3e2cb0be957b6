//! `fruitpipe run`: every phase in one process, no cluster needed.

use std::sync::{Arc, Mutex};

use crate::assemble::assemble;
use crate::error::{Error, Result};
use crate::extract::{PhotoLimits, extract};
use crate::fit::{FitOptions, fit};
use crate::imaging::Preset;
use crate::model::Model;
use crate::output::Summary;
use crate::plan::plan;
use crate::progress::{Display, Progress};
use crate::project::{load_projection, project};
use crate::storage::compose::ComposeLimits;
use crate::storage::{Location, Storage};
use crate::work::WorkDir;

/// Which model to load and how to feed it.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    pub uri: String,
    pub preset: Preset,
    pub size: Option<u32>,
    pub threads: usize,
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub input: Location,
    /// Only photos whose path below `input` matches this glob.
    pub include: Option<String>,
    pub output: Location,
    pub model: ModelOptions,
    pub batch: usize,
    pub limits: PhotoLimits,
    pub shard_size: usize,
    pub fit: FitOptions,
    /// Draw progress bars (on a terminal).
    /// A bar on a terminal, else log lines.
    pub progress: Display,
}

/// The work area of local runs: re-running the same command rewrites it.
pub const LOCAL_RUN: &str = "local";

/// Fetches the model (a path or an s3:// URI) and loads it into ONNX Runtime.
pub async fn load_model(storage: &Storage, options: &ModelOptions) -> Result<Model> {
    let location = Location::parse(&options.uri)?;
    let bytes = storage
        .get_expected(&location, |uri| {
            Error::Config(format!(
                "no model at {uri}; check --model (an .onnx file path or s3:// URI)"
            ))
        })
        .await?;
    let options = options.clone();
    tokio::task::spawn_blocking(move || {
        Model::load(
            &bytes,
            &options.uri,
            options.preset,
            options.size,
            options.threads,
        )
    })
    .await
    .expect("model loading panicked")
}

/// Runs plan, extract (every shard, in order), fit, project (every shard) and assemble.
pub async fn run(storage: Arc<Storage>, options: &RunOptions) -> Result<Summary> {
    options.fit.components.validate(usize::MAX)?;
    let work = WorkDir::under_output(&options.output, LOCAL_RUN);
    let model = Arc::new(Mutex::new(load_model(&storage, &options.model).await?));

    let listing = Progress::start(
        "list",
        None,
        options.progress,
        "{spinner} listing {pos} photos",
    );
    let plan = plan(
        &storage,
        &options.input,
        options.include.as_deref(),
        &work,
        options.shard_size,
        listing.bar(),
    )
    .await?;
    listing.finish();
    tracing::info!(images = plan.images, shards = plan.shards, "planned");

    let extracting = Progress::start(
        "extract",
        Some(plan.images),
        options.progress,
        "extracting [{bar:40}] {pos}/{len} photos, {per_sec}, ETA {eta}",
    );
    for shard in 0..plan.shards {
        let report = extract(
            &storage,
            &model,
            &work,
            shard,
            options.batch,
            options.limits,
            extracting.bar(),
        )
        .await?;
        extracting.shard_done(shard);
        tracing::debug!(
            shard,
            used = report.used,
            skipped = report.skipped.len(),
            "shard done"
        );
    }
    extracting.finish();

    fit(&storage, &work, &options.output, options.fit).await?;
    let projection = load_projection(&storage, &work).await?;
    let projecting = Progress::start(
        "project",
        Some(projection.record.summary.images_used),
        options.progress,
        "projecting [{bar:40}] {pos}/{len} photos",
    );
    for shard in 0..plan.shards {
        let report = project(&storage, &work, &projection, shard).await?;
        projecting.bar().inc(report.rows);
        projecting.shard_done(shard);
    }
    projecting.finish();
    assemble(&storage, &work, &options.output, ComposeLimits::default()).await
}
