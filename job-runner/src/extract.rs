//! Phase 2: one shard's photos -> feature rows and their partial statistics.
//!
//! Fetching and decoding run ahead of inference (bounded by a channel), so the network and
//! the JPEG decoder overlap with the CNN, and at most a few batches are in memory.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use indicatif::ProgressBar;
use tokio::sync::{Semaphore, mpsc};

use crate::error::{Error, Result};
use crate::imaging::{self, DEFAULT_MAX_PIXELS, Preprocessing};
use crate::model::Model;
use crate::plan::read_plan;
use crate::stats::Moments;
use crate::storage::{ByteBudget, Location, Storage};
use crate::work::{Partial, ShardFeatures, ShardReport, Skipped, WorkDir, parse_manifest};

/// Photos fetched at once; S3 latency, not bandwidth, limits small objects.
const FETCH_CONCURRENCY: usize = 32;
/// Bytes of fetched, not yet decoded photos held at once (at least one photo's worth).
const FETCH_BUDGET_BYTES: u64 = 256 << 20;
/// Rows folded into the moments at a time, whatever the inference batch: the sums then
/// do not depend on --batch.
const MOMENT_BLOCK_ROWS: usize = 64;
/// Default of --max-photo-bytes.
pub const DEFAULT_MAX_PHOTO_BYTES: u64 = 64 << 20;

/// What one photo may cost; larger photos are skipped with the reason.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhotoLimits {
    /// Size of the file or object, checked before it is downloaded.
    pub max_bytes: u64,
    /// Width x height, checked from the header before the photo is decoded.
    pub max_pixels: u64,
}

impl Default for PhotoLimits {
    fn default() -> Self {
        PhotoLimits {
            max_bytes: DEFAULT_MAX_PHOTO_BYTES,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// Why a photo cannot be used; `denied` when access to it was refused.
#[derive(Debug)]
struct Problem {
    reason: String,
    denied: bool,
}

/// A photo ready for the model, or the reason it cannot be used.
type Loaded = std::result::Result<Vec<f32>, Problem>;

/// Extracts shard `shard` of `work` and writes its features, then its partial statistics
/// (the partial is written last: its presence means the shard is done).
pub async fn extract(
    storage: &Arc<Storage>,
    model: &Arc<Mutex<Model>>,
    work: &WorkDir,
    shard: usize,
    batch: usize,
    limits: PhotoLimits,
    progress: &ProgressBar,
) -> Result<ShardReport> {
    if batch == 0 {
        return Err(Error::Config("--batch must be at least 1".into()));
    }
    let started = Instant::now();
    // The plan first, then the manifest: a plan written in between makes the shard carry
    // the old id, which `fit` refuses, never the new id with old contents.
    let plan = read_plan(storage, work).await?;
    let photos = read_manifest(storage, work, shard).await?;
    let images = photos.len() as u64;
    if progress.length().is_none() {
        // A pod's only shard: its size is the whole.
        progress.set_length(images);
    }
    let (info, preprocessing) = {
        let model = model.lock().expect("model lock");
        (model.info.clone(), model.info.preprocessing)
    };

    let (sender, receiver) = mpsc::channel(batch * 2);
    let loader = Loader::new(Arc::clone(storage), preprocessing, limits);
    let producer = tokio::spawn(loader.load_in_order(photos, sender));
    // Inference and statistics run on one thread for the whole shard: the large, short-lived
    // buffers they allocate then stay in one allocator arena instead of one per pool thread.
    let consumer = {
        let (model, progress, plan) = (Arc::clone(model), progress.clone(), plan.id.clone());
        tokio::task::spawn_blocking(move || {
            infer_in_batches(receiver, &model, &plan, batch, &progress)
        })
    };
    let outcome = consumer.await.expect("inference thread panicked");
    producer.await.expect("photo loader panicked");
    let Extracted {
        features,
        moments,
        skipped,
        denied,
        ..
    } = outcome?;
    if features.is_empty() && denied > 0 && denied == skipped.len() {
        return Err(every_photo_denied(shard, &skipped));
    }

    let report = ShardReport {
        plan: plan.id,
        shard,
        images,
        used: features.len() as u64,
        skipped,
        seconds: started.elapsed().as_secs_f64(),
        model: info,
    };
    storage
        .put(&work.features(shard), Bytes::from(features.to_bytes()))
        .await?;
    let partial = Partial {
        report: report.clone(),
        moments,
    };
    storage
        .put(&work.partial(shard), Bytes::from(partial.to_bytes()))
        .await?;
    Ok(report)
}

/// Access refused to every photo of a shard is about the input prefix, not the photos: a
/// configuration error, not a shard of skips.
fn every_photo_denied(shard: usize, skipped: &[Skipped]) -> Error {
    let example = &skipped[0];
    Error::AccessDenied {
        uri: example.path.clone(),
        detail: format!(
            "all {} photos of shard {shard} were refused, this one with: {}; the credentials cannot read the input prefix (s3:GetObject, and kms:Decrypt for KMS-encrypted photos)",
            skipped.len(),
            example.reason
        ),
    }
}

async fn read_manifest(storage: &Storage, work: &WorkDir, shard: usize) -> Result<Vec<Location>> {
    let manifest = work.manifest(shard);
    let bytes = storage
        .get_expected(&manifest, |uri| {
            Error::Config(format!(
                "shard {shard} has no manifest at {uri}; check --index and --work, and run `fruitpipe plan` first"
            ))
        })
        .await?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        Error::Work(format!(
            "{manifest} is not UTF-8 text; re-run `fruitpipe plan`"
        ))
    })?;
    parse_manifest(text)
}

/// Fetches and decodes photos with bounded memory: at most [`FETCH_BUDGET_BYTES`] of
/// fetched photos, and at most one decode per core, a photo near --max-pixels taking every
/// core's share (decoded alone).
struct Loader {
    storage: Arc<Storage>,
    preprocessing: Preprocessing,
    limits: PhotoLimits,
    fetch_budget: ByteBudget,
    decoders: Arc<Semaphore>,
    cores: u32,
}

impl Loader {
    fn new(storage: Arc<Storage>, preprocessing: Preprocessing, limits: PhotoLimits) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Arc::new(Loader {
            storage,
            preprocessing,
            limits,
            fetch_budget: ByteBudget::new(FETCH_BUDGET_BYTES.max(limits.max_bytes)),
            decoders: Arc::new(Semaphore::new(cores as usize)),
            cores,
        })
    }

    /// Loads photos concurrently and sends them on in manifest order.
    async fn load_in_order(
        self: Arc<Self>,
        photos: Vec<Location>,
        sender: mpsc::Sender<(Location, Result<Loaded>)>,
    ) {
        let mut loaded = futures::stream::iter(photos)
            .map(|photo| {
                let loader = Arc::clone(&self);
                async move {
                    let result = loader.load(&photo).await;
                    (photo, result)
                }
            })
            .buffered(FETCH_CONCURRENCY);
        while let Some(item) = loaded.next().await {
            let fatal = item.1.is_err();
            if sender.send(item).await.is_err() || fatal {
                return;
            }
        }
    }

    async fn load(&self, photo: &Location) -> Result<Loaded> {
        // Held until the photo is decoded: its bytes count against the fetch budget.
        let photo = match self
            .storage
            .get_photo(photo, self.limits.max_bytes, &self.fetch_budget)
            .await
        {
            Ok(photo) => photo,
            Err(err) => return skip_or_fail(err),
        };
        let bytes = photo.bytes.clone();
        let (width, height) = match imaging::inspect(&bytes, self.limits.max_pixels) {
            Ok(dimensions) => dimensions,
            Err(unusable) => return Ok(Err(Problem::of(unusable.to_string()))),
        };
        let _decoding = Arc::clone(&self.decoders)
            .acquire_many_owned(self.decode_weight(width, height))
            .await
            .expect("the decoder permits are never closed");
        let (preprocessing, max_pixels) = (self.preprocessing, self.limits.max_pixels);
        let decoded = tokio::task::spawn_blocking(move || {
            preprocessing.tensor_from_inspected(&bytes, max_pixels)
        })
        .await;
        Ok(match decoded {
            Ok(result) => result.map_err(|reason| Problem::of(reason.to_string())),
            Err(panic) => Err(Problem::of(format!(
                "the decoder crashed on this file: {panic}"
            ))),
        })
    }

    /// Cores' worth of decoding a photo of this size takes: one for a small photo, all of
    /// them for one of --max-pixels.
    fn decode_weight(&self, width: u32, height: u32) -> u32 {
        let pixels = u64::from(width) * u64::from(height);
        let share = self
            .limits
            .max_pixels
            .div_ceil(u64::from(self.cores))
            .max(1);
        pixels.div_ceil(share).clamp(1, u64::from(self.cores)) as u32
    }
}

/// A failure to read one photo: skipped when it is about that photo, else the shard fails.
fn skip_or_fail(err: Error) -> Result<Loaded> {
    match err.photo_problem() {
        Some(reason) => Ok(Err(Problem {
            reason,
            denied: err.is_denial(),
        })),
        None => Err(err),
    }
}

impl Problem {
    fn of(reason: String) -> Self {
        Problem {
            reason,
            denied: false,
        }
    }
}

/// What one shard's photos became.
struct Extracted {
    features: ShardFeatures,
    moments: Moments,
    /// Feature rows not yet folded into `moments` (fewer than a block).
    unfolded: Vec<f32>,
    skipped: Vec<Skipped>,
    /// How many of `skipped` were refused access.
    denied: usize,
}

impl Extracted {
    /// Folds rows into the moments a fixed block at a time.
    fn add_rows(&mut self, rows: &[f32], finished: bool) {
        let block = MOMENT_BLOCK_ROWS * self.features.dim;
        self.unfolded.extend_from_slice(rows);
        let whole = if finished {
            self.unfolded.len()
        } else {
            self.unfolded.len() / block * block
        };
        for chunk in self.unfolded[..whole].chunks(block) {
            self.moments.add_batch(chunk);
        }
        self.unfolded.drain(..whole);
    }
}

/// Receives loaded photos in order and runs them through the model `batch` at a time.
fn infer_in_batches(
    mut receiver: mpsc::Receiver<(Location, Result<Loaded>)>,
    model: &Mutex<Model>,
    plan: &str,
    batch: usize,
    progress: &ProgressBar,
) -> Result<Extracted> {
    let mut model = model.lock().expect("model lock");
    let dim = model.info.dim;
    let batch = batch.min(model.batch_limit().unwrap_or(usize::MAX));
    let mut extracted = Extracted {
        features: ShardFeatures::new(plan, dim),
        moments: Moments::new(dim),
        unfolded: Vec::new(),
        skipped: Vec::new(),
        denied: 0,
    };
    let mut pending: Vec<(Location, Vec<f32>)> = Vec::with_capacity(batch);
    // One input buffer for every batch of the shard: a fresh one per batch (tens of MiB at
    // 224) would be mapped and zeroed by the kernel each time.
    let mut input = Vec::new();
    loop {
        let next = receiver.blocking_recv();
        let finished = next.is_none();
        if let Some((photo, loaded)) = next {
            match loaded? {
                Ok(tensor) => pending.push((photo, tensor)),
                Err(problem) => {
                    tracing::warn!(photo = %photo, reason = %problem.reason, "skipping photo");
                    extracted.denied += usize::from(problem.denied);
                    extracted.skipped.push(Skipped {
                        path: photo.to_string(),
                        reason: problem.reason,
                    });
                    progress.inc(1);
                }
            }
        }
        if pending.len() == batch || (finished && !pending.is_empty()) {
            let count = pending.len() as u64;
            run_batch(&mut model, &mut pending, &mut input, &mut extracted)?;
            progress.inc(count);
        }
        if finished {
            extracted.add_rows(&[], true);
            return Ok(extracted);
        }
    }
}

/// Runs the model on the pending photos and folds the rows into features and moments.
fn run_batch(
    model: &mut Model,
    pending: &mut Vec<(Location, Vec<f32>)>,
    input: &mut Vec<f32>,
    extracted: &mut Extracted,
) -> Result<()> {
    let count = pending.len();
    input.clear();
    for (_, tensor) in pending.iter() {
        input.extend_from_slice(tensor);
    }
    let rows = model.features(input, count)?;
    if rows.iter().any(|value| !value.is_finite()) {
        return Err(Error::Input(
            "the model produced NaN or infinite features; check --model, --preset and --size"
                .into(),
        ));
    }
    extracted.add_rows(&rows, false);
    let dim = extracted.features.dim;
    for ((photo, _), row) in pending.drain(..).zip(rows.chunks_exact(dim)) {
        extracted
            .features
            .push(photo.to_string(), photo.parent_name(), row);
    }
    Ok(())
}
