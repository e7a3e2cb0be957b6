//! `fruitpipe run`: every phase in one process, no cluster needed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::assemble::assemble;
use crate::error::{Error, Result};
use crate::extract::{PhotoLimits, extract};
use crate::fit::{FitOptions, fit};
use crate::imaging::Preset;
use crate::model::Model;
use crate::output::Summary;
use crate::plan::plan;
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
    pub progress: bool,
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

    let listing = progress_bar(options.progress, None, "{spinner} listing {pos} photos");
    let plan = plan(
        &storage,
        &options.input,
        options.include.as_deref(),
        &work,
        options.shard_size,
        &listing,
    )
    .await?;
    listing.finish_and_clear();
    tracing::info!(images = plan.images, shards = plan.shards, "planned");

    let extracting = progress_bar(
        options.progress,
        Some(plan.images),
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
            &extracting,
        )
        .await?;
        tracing::debug!(
            shard,
            used = report.used,
            skipped = report.skipped.len(),
            "shard done"
        );
    }
    extracting.finish_and_clear();

    fit(&storage, &work, &options.output, options.fit).await?;
    let projection = load_projection(&storage, &work).await?;
    let projecting = progress_bar(
        options.progress,
        Some(projection.record.summary.images_used),
        "projecting [{bar:40}] {pos}/{len} photos",
    );
    for shard in 0..plan.shards {
        let report = project(&storage, &work, &projection, shard).await?;
        projecting.inc(report.rows);
    }
    projecting.finish_and_clear();
    assemble(&storage, &work, &options.output, ComposeLimits::default()).await
}

fn progress_bar(enabled: bool, length: Option<u64>, template: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = match length {
        Some(length) => ProgressBar::new(length),
        None => ProgressBar::no_length(),
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
