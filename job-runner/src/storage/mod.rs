//! Where data lives: a local folder or an S3 prefix, behind one small API.
//!
//! Every write is whole or nothing: local files are written under a hidden temporary name,
//! made durable and renamed; S3 objects are one PUT or one completed multipart upload.

pub mod compose;
mod local;
mod s3;
mod s3_errors;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::imaging;
use crate::work::Skipped;
use aws_sdk_s3::types::CompletedPart;
use compose::{ComposeLimits, Piece, Slice};

pub use s3::{DEFAULT_S3_ATTEMPT_TIMEOUT, Storage};

/// A local path or an `s3://bucket/key` URI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, key: String },
}

impl Location {
    /// Parses `s3://bucket/prefix` or a local path (optionally `file://`).
    pub fn parse(uri: &str) -> Result<Self> {
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Config(format!(
                    "'{uri}' names no bucket; write s3://BUCKET/PREFIX"
                )));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                key: key.trim_start_matches('/').to_string(),
            });
        }
        if uri.contains("://") && !uri.starts_with("file://") {
            return Err(Error::Config(format!(
                "'{uri}' is neither a local path nor an s3:// URI"
            )));
        }
        if uri.is_empty() {
            return Err(Error::Config("an empty path was given".into()));
        }
        Ok(Location::Local(PathBuf::from(
            uri.strip_prefix("file://").unwrap_or(uri),
        )))
    }

    /// A child of this location; `rel` uses `/` separators.
    pub fn join(&self, rel: &str) -> Location {
        match self {
            Location::Local(path) => Location::Local(path.join(rel)),
            Location::S3 { bucket, key } => {
                let key = if key.is_empty() || key.ends_with('/') {
                    format!("{key}{rel}")
                } else {
                    format!("{key}/{rel}")
                };
                Location::S3 {
                    bucket: bucket.clone(),
                    key,
                }
            }
        }
    }

    pub fn is_s3(&self) -> bool {
        matches!(self, Location::S3 { .. })
    }

    /// The name of the folder that holds this object: the photo's label.
    pub fn parent_name(&self) -> String {
        let text = match self {
            Location::Local(path) => path.to_string_lossy().into_owned(),
            Location::S3 { key, .. } => key.clone(),
        };
        let mut parts = text.rsplit(['/', std::path::MAIN_SEPARATOR]);
        parts.next();
        parts.next().unwrap_or("").to_string()
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

/// How to reach S3. Unset fields fall back to the AWS environment (AWS_ENDPOINT_URL,
/// AWS_REGION, profile), and credentials always come from the AWS default chain.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// Time one attempt of a request may take before it is retried
    /// [default: [`DEFAULT_S3_ATTEMPT_TIMEOUT`]].
    pub attempt_timeout: Option<Duration>,
}

/// One item of an input listing.
#[derive(Clone, Debug, PartialEq)]
pub enum Listed {
    Photo(Location),
    /// Something that looks like a photo but cannot be read as one (a FIFO, a symbolic link
    /// loop, ...): listed in `errors.csv`, never fatal.
    Skipped(Skipped),
}

/// True for the photo files the pipeline reads: `.jpg`, `.jpeg`, `.png`, any case.
pub fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".jpg", ".jpeg", ".png"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// Hidden files and folders, and `_`-prefixed folders (work areas such as `_work/`), are
/// never inputs.
fn is_visible(relative: &str) -> bool {
    let mut parts = relative.split('/').peekable();
    while let Some(part) = parts.next() {
        let is_file = parts.peek().is_none();
        if part.starts_with('.') || (!is_file && part.starts_with('_')) {
            return false;
        }
    }
    true
}

fn is_listed(relative: &str) -> bool {
    is_visible(relative) && is_image_name(relative.rsplit('/').next().unwrap_or(relative))
}

/// Refuses a photo larger than `max_bytes` before it is downloaded.
fn check_photo_size(uri: &str, size: u64, max_bytes: u64) -> Result<()> {
    if size > max_bytes {
        return Err(Error::Unusable {
            uri: uri.to_string(),
            reason: format!(
                "{size} bytes, over the --max-photo-bytes limit ({max_bytes}); raise the limit to use it"
            ),
        });
    }
    Ok(())
}

/// Refuses a photo whose first bytes are not a JPEG's or a PNG's, before the rest is read.
fn check_photo_signature(uri: &str, head: &[u8]) -> Result<()> {
    imaging::check_signature(head).map_err(|unusable| Error::Unusable {
        uri: uri.to_string(),
        reason: unusable.to_string(),
    })
}

impl Storage {
    /// Streams every image under `root`, in a stable sorted order, without holding the
    /// whole listing in memory.
    pub fn list_images(&self, root: &Location) -> impl Stream<Item = Result<Listed>> + '_ {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Listed>>(1024);
        let root = root.clone();
        let producer = async move {
            match &root {
                Location::Local(dir) => {
                    let dir = dir.clone();
                    let _ = tokio::task::spawn_blocking(move || local::list(&dir, &tx)).await;
                }
                Location::S3 { bucket, key } => self.list_s3(bucket, key, &tx).await,
            }
        };
        // The producer runs as the consumer polls, so nothing runs ahead unboundedly.
        let items = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        futures::stream::select(
            futures::stream::once(producer).filter_map(|()| async { None }),
            items,
        )
    }

    /// The whole content of one object or file.
    pub async fn get(&self, location: &Location) -> Result<Bytes> {
        match location {
            Location::Local(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || local::read(&path))
                    .await
                    .expect("local read task panicked")
            }
            Location::S3 { bucket, key } => self.get_s3(bucket, key).await,
        }
    }

    /// [`Storage::get`] of an object an earlier phase (or the user) should have written:
    /// when it does not exist, `missing` says what to do, given its URI.
    pub async fn get_expected(
        &self,
        location: &Location,
        missing: impl FnOnce(String) -> Error,
    ) -> Result<Bytes> {
        self.get(location).await.map_err(|err| match err {
            Error::NotFound { uri, .. } => missing(uri),
            other => other,
        })
    }

    /// One photo's bytes, with its share of `budget` reserved until the [`Photo`] is
    /// dropped. A photo larger than `max_bytes`, or whose first bytes are not an image's, is
    /// refused ([`Error::Unusable`]) before the rest is transferred.
    pub async fn get_photo(
        &self,
        location: &Location,
        max_bytes: u64,
        budget: &ByteBudget,
    ) -> Result<Photo> {
        match location {
            Location::Local(path) => {
                let size = tokio::fs::metadata(path).await.map_or(0, |meta| meta.len());
                let reserved = budget.reserve(size.min(max_bytes)).await;
                let path = path.clone();
                let bytes =
                    tokio::task::spawn_blocking(move || local::read_photo(&path, max_bytes))
                        .await
                        .expect("local read task panicked")?;
                Ok(Photo {
                    bytes,
                    _reserved: reserved,
                })
            }
            Location::S3 { bucket, key } => self.get_s3_photo(bucket, key, max_bytes, budget).await,
        }
    }

    /// Writes `data` whole at `location`, replacing what was there.
    pub async fn put(&self, location: &Location, data: Bytes) -> Result<()> {
        match location {
            Location::Local(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || local::write_atomically(&path, &data))
                    .await
                    .expect("local write task panicked")
            }
            Location::S3 { bucket, key } => self.put_s3(bucket, key, data).await,
        }
    }

    /// Writes `value` as pretty JSON, whole, at `location`.
    pub async fn put_json(&self, location: &Location, value: &impl serde::Serialize) -> Result<()> {
        let json = serde_json::to_vec_pretty(value).expect("fruitpipe's records serialise");
        self.put(location, Bytes::from(json)).await
    }

    /// A writer that streams an object of any size to `location` and publishes it whole on
    /// [`ObjectWriter::finish`], with memory for one upload part and no local copy.
    pub async fn writer(&self, location: &Location) -> Result<ObjectWriter<'_>> {
        let target = match location {
            Location::Local(path) => {
                let path = path.clone();
                let file = tokio::task::spawn_blocking(move || local::AtomicFile::create(&path))
                    .await
                    .expect("local create task panicked")?;
                Target::Local(file)
            }
            Location::S3 { bucket, key } => Target::S3(s3::Upload::new(self, bucket, key)),
        };
        Ok(ObjectWriter { target })
    }

    /// Removes an object or file; one that does not exist is fine.
    pub async fn delete(&self, location: &Location) -> Result<()> {
        match location {
            Location::Local(path) => local::remove(path),
            Location::S3 { bucket, key } => self.delete_s3(bucket, key).await,
        }
    }
}

/// Parts of one composed object sent at once (at most 8 x 5 MiB in memory for read parts).
const PARTS_AT_ONCE: usize = 8;

/// How [`Storage::compose`] made an object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Composed {
    /// Parts of the final upload (0 when the object was written in one piece).
    pub parts: usize,
    /// Bytes the S3 server copied from the sources itself.
    pub copied_bytes: u64,
    /// Bytes that passed through this process.
    pub sent_bytes: u64,
    /// Intermediate objects made because there were more parts than one upload holds.
    pub intermediates: usize,
}

impl Composed {
    fn add(&mut self, other: Composed) {
        self.parts = other.parts;
        self.copied_bytes += other.copied_bytes;
        self.sent_bytes += other.sent_bytes;
        self.intermediates += other.intermediates;
    }
}

impl Storage {
    /// Writes at `target` the concatenation of `sources` (each with its size in bytes),
    /// whole or not at all. When everything is in S3 the server copies the sources
    /// (`UploadPartCopy`), and only sources under S3's minimum part size pass through
    /// this process, at most one part at a time; with more parts than one upload may hold,
    /// intermediate objects go under `scratch` and are deleted afterwards. Elsewhere the
    /// sources are streamed through, one at a time.
    pub async fn compose(
        &self,
        target: &Location,
        sources: &[(Location, u64)],
        scratch: &Location,
        limits: ComposeLimits,
    ) -> Result<Composed> {
        let all_s3 = target.is_s3() && sources.iter().all(|(source, _)| source.is_s3());
        if !all_s3 {
            return self.concatenate(target, sources).await;
        }
        let sizes: Vec<u64> = sources.iter().map(|(_, size)| *size).collect();
        let pieces = compose::plan_pieces(&sizes, limits);
        if pieces.len() <= limits.max_parts {
            return self.compose_pieces(target, sources, &pieces).await;
        }
        let mut report = Composed::default();
        let mut intermediates = Vec::new();
        for (i, group) in compose::group_pieces(pieces, limits.max_parts)
            .into_iter()
            .enumerate()
        {
            let at = scratch.join(&format!("{i:05}.part"));
            let size = group.iter().map(Piece::len).sum();
            report.add(self.compose_pieces(&at, sources, &group).await?);
            intermediates.push((at, size));
        }
        report.intermediates += intermediates.len();
        let next = scratch.join("next");
        let rest = Box::pin(self.compose(target, &intermediates, &next, limits)).await?;
        report.add(rest);
        for (at, _) in &intermediates {
            self.delete(at).await?;
        }
        Ok(report)
    }

    /// One object from pieces planned by [`compose::plan_pieces`]: a PUT when it is one
    /// uploaded piece, else a multipart upload.
    async fn compose_pieces(
        &self,
        target: &Location,
        sources: &[(Location, u64)],
        pieces: &[Piece],
    ) -> Result<Composed> {
        let (bucket, key) = s3_parts(target);
        let mut report = Composed::default();
        if let [] | [Piece::Upload(_)] = pieces {
            let data = match pieces.first() {
                Some(Piece::Upload(slices)) => self.read_slices(sources, slices).await?,
                _ => Bytes::new(),
            };
            report.sent_bytes = data.len() as u64;
            self.put_s3(bucket, key, data).await?;
            return Ok(report);
        }
        let mut parts = self.start_parts(bucket, key).await?;
        // Parts go up a few at once: a copy is one short request for S3 but a round trip
        // for us, and thousands of them one by one would make assembly latency-bound.
        // Each part with the bytes S3 copied and the bytes sent from here.
        let sent: Vec<Result<(CompletedPart, u64, u64)>> = {
            let parts = &parts;
            futures::stream::iter(pieces.iter().enumerate())
                .map(|(i, piece)| async move {
                    let number = i as i32 + 1;
                    match piece {
                        Piece::Copy(slice) => {
                            let source = s3_parts(&sources[slice.source].0);
                            let part = parts
                                .copy_part(number, source, slice.start, slice.end)
                                .await?;
                            Ok((part, slice.len(), 0))
                        }
                        Piece::Upload(slices) => {
                            let data = self.read_slices(sources, slices).await?;
                            let sent = data.len() as u64;
                            Ok((parts.upload_part(number, data).await?, 0, sent))
                        }
                    }
                })
                .buffer_unordered(PARTS_AT_ONCE)
                .collect()
                .await
        };
        for outcome in sent {
            match outcome {
                Ok((part, copied, sent)) => {
                    report.copied_bytes += copied;
                    report.sent_bytes += sent;
                    parts.add(part);
                }
                Err(err) => {
                    parts.abort().await;
                    return Err(err);
                }
            }
        }
        parts.complete().await?;
        report.parts = pieces.len();
        Ok(report)
    }

    async fn read_slices(&self, sources: &[(Location, u64)], slices: &[Slice]) -> Result<Bytes> {
        let mut data = Vec::with_capacity(slices.iter().map(Slice::len).sum::<u64>() as usize);
        for slice in slices {
            let (source, size) = &sources[slice.source];
            let (bucket, key) = s3_parts(source);
            let bytes = if slice.start == 0 && slice.end == *size {
                self.get_s3(bucket, key).await?
            } else {
                self.get_s3_range(bucket, key, slice.start, slice.end)
                    .await?
            };
            if bytes.len() as u64 != slice.len() {
                return Err(Error::Work(format!(
                    "{source} has {} bytes where {} were expected from {}; it changed during the assembly: run the phase that writes it again",
                    bytes.len(),
                    slice.len(),
                    slice.start
                )));
            }
            data.extend_from_slice(&bytes);
        }
        Ok(Bytes::from(data))
    }

    /// The sources streamed one after the other into one object.
    async fn concatenate(
        &self,
        target: &Location,
        sources: &[(Location, u64)],
    ) -> Result<Composed> {
        let mut writer = self.writer(target).await?;
        let mut report = Composed::default();
        for (source, _) in sources {
            let bytes = self.get(source).await?;
            report.sent_bytes += bytes.len() as u64;
            writer.write(&bytes).await?;
        }
        writer.finish().await?;
        Ok(report)
    }
}

/// The bucket and key of a location known to be in S3.
fn s3_parts(location: &Location) -> (&str, &str) {
    match location {
        Location::S3 { bucket, key } => (bucket, key),
        Location::Local(path) => unreachable!("{} is not in S3", path.display()),
    }
}

/// Bytes of downloaded photos that may be held at once: a photo's size is reserved
/// before its body is read, and given back when the [`Photo`] is dropped.
pub struct ByteBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

impl ByteBudget {
    pub fn new(bytes: u64) -> Self {
        let total_kib = bytes.div_ceil(1024).clamp(1, u64::from(u32::MAX >> 3)) as u32;
        ByteBudget {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Waits until `bytes` fit; a request larger than the whole budget waits for all of it.
    async fn reserve(&self, bytes: u64) -> OwnedSemaphorePermit {
        let kib = bytes.div_ceil(1024).clamp(1, u64::from(self.total_kib)) as u32;
        Arc::clone(&self.kib)
            .acquire_many_owned(kib)
            .await
            .expect("the byte budget is never closed")
    }
}

/// A downloaded photo, holding its share of the [`ByteBudget`].
pub struct Photo {
    pub bytes: Bytes,
    _reserved: OwnedSemaphorePermit,
}

/// See [`Storage::writer`].
pub struct ObjectWriter<'a> {
    target: Target<'a>,
}

enum Target<'a> {
    Local(local::AtomicFile),
    S3(s3::Upload<'a>),
}

impl ObjectWriter<'_> {
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.target {
            // Buffered: a system call per megabyte, short enough for an async task.
            Target::Local(file) => file.write(data),
            Target::S3(upload) => upload.write(data).await,
        }
    }

    /// Publishes the object. Until then readers see the previous one, if any.
    pub async fn finish(self) -> Result<()> {
        match self.target {
            Target::Local(file) => tokio::task::spawn_blocking(move || file.commit())
                .await
                .expect("local commit task panicked"),
            Target::S3(upload) => upload.finish().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_and_local_uris() {
        assert_eq!(
            Location::parse("s3://fruits/raw/Training").unwrap(),
            Location::S3 {
                bucket: "fruits".into(),
                key: "raw/Training".into()
            }
        );
        assert_eq!(
            Location::parse("s3://fruits")
                .unwrap()
                .join("a.csv")
                .to_string(),
            "s3://fruits/a.csv"
        );
        assert_eq!(
            Location::parse("/data/in").unwrap(),
            Location::Local("/data/in".into())
        );
        assert!(Location::parse("s3:///x").is_err());
        assert!(Location::parse("gs://bucket/x").is_err());
    }

    #[test]
    fn label_is_the_parent_folder() {
        let photo = Location::parse("s3://b/Training/Apple Braeburn/0_100.jpg").unwrap();
        assert_eq!(photo.parent_name(), "Apple Braeburn");
        let local = Location::parse("/x/Test/Banana/1.JPG").unwrap();
        assert_eq!(local.parent_name(), "Banana");
    }

    #[test]
    fn lists_only_visible_images() {
        assert!(is_listed("Training/Banana/1.jpg"));
        assert!(is_listed("Training/Banana/1.JPEG"));
        assert!(is_listed("x.png"));
        assert!(is_listed("Training/_odd_name.jpg"));
        assert!(!is_listed("Training/Banana/.1.jpg"));
        assert!(!is_listed(".cache/Banana/1.jpg"));
        assert!(!is_listed("_work/run/Banana/1.jpg"));
        assert!(!is_listed("Training/Banana/notes.txt"));
    }
}
