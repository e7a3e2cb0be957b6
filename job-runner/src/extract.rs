//! Phase 2: one shard's photos -> feature rows and their partial statistics.
//!
//! Fetching and decoding run ahead of inference (bounded by a channel), so the network and
//! the JPEG decoder overlap with the CNN, and at most a few batches are in memory.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::imaging::Preprocessing;
use crate::model::Model;
use crate::stats::Moments;
use crate::storage::{Location, Storage};
use crate::work::{Partial, ShardFeatures, ShardReport, Skipped, WorkDir, parse_manifest};

/// Photos fetched at once; S3 latency, not bandwidth, limits small objects.
const FETCH_CONCURRENCY: usize = 32;

/// A photo ready for the model, or the reason it cannot be used.
type Loaded = std::result::Result<Vec<f32>, String>;

/// Extracts shard `shard` of `work` and writes its features, then its partial statistics
/// (the partial is written last: its presence means the shard is done).
pub async fn extract(
    storage: &Arc<Storage>,
    model: &Arc<Mutex<Model>>,
    work: &WorkDir,
    shard: usize,
    batch: usize,
    progress: &ProgressBar,
) -> Result<ShardReport> {
    if batch == 0 {
        return Err(Error::Config("--batch must be at least 1".into()));
    }
    let started = Instant::now();
    let photos = read_manifest(storage, work, shard).await?;
    let images = photos.len() as u64;
    let (info, preprocessing) = {
        let model = model.lock().expect("model lock");
        (model.info.clone(), model.info.preprocessing)
    };

    let (sender, receiver) = mpsc::channel(batch * 2);
    let producer = tokio::spawn(load_in_order(
        Arc::clone(storage),
        photos,
        preprocessing,
        sender,
    ));
    // Inference and statistics run on one thread for the whole shard: the large, short-lived
    // buffers they allocate then stay in one allocator arena instead of one per pool thread.
    let consumer = {
        let (model, progress) = (Arc::clone(model), progress.clone());
        tokio::task::spawn_blocking(move || infer_in_batches(receiver, &model, batch, &progress))
    };
    let outcome = consumer.await.expect("inference thread panicked");
    producer.await.expect("photo loader panicked");
    let Extracted {
        features,
        moments,
        skipped,
    } = outcome?;

    let report = ShardReport {
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

async fn read_manifest(storage: &Storage, work: &WorkDir, shard: usize) -> Result<Vec<Location>> {
    let manifest = work.manifest(shard);
    let bytes = storage.get(&manifest).await.map_err(|err| match err {
        Error::NotFound { uri, .. } => Error::Config(format!(
            "shard {shard} has no manifest at {uri}; check --index and --work, and run `fruitpipe plan` first"
        )),
        other => other,
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        Error::Work(format!(
            "{manifest} is not UTF-8 text; re-run `fruitpipe plan`"
        ))
    })?;
    parse_manifest(text)
}

/// Fetches and decodes photos concurrently, and sends them on in manifest order.
async fn load_in_order(
    storage: Arc<Storage>,
    photos: Vec<Location>,
    preprocessing: Preprocessing,
    sender: mpsc::Sender<(Location, Result<Loaded>)>,
) {
    let mut loaded = futures::stream::iter(photos)
        .map(|photo| {
            let storage = Arc::clone(&storage);
            async move {
                let result = load(&storage, &photo, preprocessing).await;
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

async fn load(storage: &Storage, photo: &Location, preprocessing: Preprocessing) -> Result<Loaded> {
    let bytes = match storage.get(photo).await {
        Ok(bytes) => bytes,
        Err(Error::NotFound { .. }) => {
            return Ok(Err("missing: deleted after the input was listed".into()));
        }
        Err(err) => return Err(err),
    };
    let decoded =
        tokio::task::spawn_blocking(move || preprocessing.tensor_from_bytes(&bytes)).await;
    Ok(match decoded {
        Ok(result) => result.map_err(|reason| reason.to_string()),
        Err(panic) => Err(format!("the decoder crashed on this file: {panic}")),
    })
}

/// What one shard's photos became.
struct Extracted {
    features: ShardFeatures,
    moments: Moments,
    skipped: Vec<Skipped>,
}

/// Receives loaded photos in order and runs them through the model `batch` at a time.
fn infer_in_batches(
    mut receiver: mpsc::Receiver<(Location, Result<Loaded>)>,
    model: &Mutex<Model>,
    batch: usize,
    progress: &ProgressBar,
) -> Result<Extracted> {
    let mut model = model.lock().expect("model lock");
    let dim = model.info.dim;
    let mut extracted = Extracted {
        features: ShardFeatures::new(dim),
        moments: Moments::new(dim),
        skipped: Vec::new(),
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
                Err(reason) => {
                    tracing::warn!(photo = %photo, %reason, "skipping photo");
                    extracted.skipped.push(Skipped {
                        path: photo.to_string(),
                        reason,
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
    extracted.moments.add_batch(&rows);
    let dim = extracted.features.dim;
    for ((photo, _), row) in pending.drain(..).zip(rows.chunks_exact(dim)) {
        extracted
            .features
            .push(photo.to_string(), photo.parent_name(), row);
    }
    Ok(())
}
