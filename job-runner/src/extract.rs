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

    let (sender, mut receiver) = mpsc::channel(batch * 2);
    let producer = tokio::spawn(load_in_order(
        Arc::clone(storage),
        photos,
        preprocessing,
        sender,
    ));

    let mut features = ShardFeatures::new(info.dim);
    let mut moments = Moments::new(info.dim);
    let mut skipped = Vec::new();
    let mut pending: Vec<(Location, Vec<f32>)> = Vec::with_capacity(batch);
    while let Some((photo, loaded)) = receiver.recv().await {
        match loaded? {
            Ok(tensor) => pending.push((photo, tensor)),
            Err(reason) => {
                tracing::warn!(photo = %photo, %reason, "skipping photo");
                skipped.push(Skipped {
                    path: photo.to_string(),
                    reason,
                });
                progress.inc(1);
            }
        }
        if pending.len() == batch {
            let done = pending.len() as u64;
            run_batch(model, &mut pending, &mut features, &mut moments).await?;
            progress.inc(done);
        }
    }
    let done = pending.len() as u64;
    run_batch(model, &mut pending, &mut features, &mut moments).await?;
    progress.inc(done);
    producer.await.expect("photo loader panicked");

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

/// Runs the model on the pending photos and folds the rows into features and moments.
async fn run_batch(
    model: &Arc<Mutex<Model>>,
    pending: &mut Vec<(Location, Vec<f32>)>,
    features: &mut ShardFeatures,
    moments: &mut Moments,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let count = pending.len();
    let mut input = Vec::with_capacity(count * pending[0].1.len());
    for (_, tensor) in pending.iter() {
        input.extend_from_slice(tensor);
    }
    let model = Arc::clone(model);
    let (rows, batch_moments) = tokio::task::spawn_blocking(move || {
        let rows = model.lock().expect("model lock").features(input, count)?;
        let dim = rows.len() / count;
        let batch_moments = Moments::of_batch(&rows, dim);
        Ok::<_, Error>((rows, batch_moments))
    })
    .await
    .expect("inference task panicked")?;
    if rows.iter().any(|value| !value.is_finite()) {
        return Err(Error::Input(
            "the model produced NaN or infinite features; check --model, --preset and --size"
                .into(),
        ));
    }
    moments.merge(&batch_moments);
    for ((photo, _), row) in pending.drain(..).zip(rows.chunks_exact(features.dim)) {
        features.push(photo.to_string(), photo.parent_name(), row);
    }
    Ok(())
}
