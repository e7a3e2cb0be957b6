//! Where data lives: a local folder or an S3 prefix, behind one small API.
//!
//! Every write is whole or nothing: local files are written under a hidden temporary name
//! and renamed; S3 objects are one PUT or one completed multipart upload.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::OnceCell;

use crate::error::{Error, Result};

/// Objects larger than this are uploaded in parts of this size.
const MULTIPART_PART_SIZE: usize = 16 * 1024 * 1024;
/// Attempts per S3 request, with exponential backoff between them.
const S3_MAX_ATTEMPTS: u32 = 6;

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
}

/// Reads and writes [`Location`]s. The S3 client is built on first use, so local runs never
/// touch the AWS configuration chain.
pub struct Storage {
    options: S3Options,
    client: OnceCell<Client>,
    /// Set by the first S3 response: from then on a refused connection is a network fault
    /// worth retrying, not a wrong endpoint.
    reached: AtomicBool,
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
fn is_listed(relative: &str) -> bool {
    let mut parts = relative.split('/').peekable();
    while let Some(part) = parts.next() {
        let is_file = parts.peek().is_none();
        if part.starts_with('.') || (!is_file && part.starts_with('_')) {
            return false;
        }
        if is_file {
            return is_image_name(part);
        }
    }
    false
}

impl Storage {
    pub fn new(options: S3Options) -> Self {
        Storage {
            options,
            client: OnceCell::new(),
            reached: AtomicBool::new(false),
        }
    }

    /// A storage that only works on local paths (tests, local runs).
    pub fn local() -> Self {
        Storage::new(S3Options::default())
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| build_client(&self.options))
            .await
    }

    /// Streams every image under `root`, in a stable sorted order, without holding the
    /// whole listing in memory.
    pub fn list_images(&self, root: &Location) -> impl Stream<Item = Result<Location>> + '_ {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Location>>(1024);
        let root = root.clone();
        let producer = async move {
            match &root {
                Location::Local(dir) => {
                    let dir = dir.clone();
                    let _ = tokio::task::spawn_blocking(move || list_local(&dir, &tx)).await;
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

    async fn list_s3(
        &self,
        bucket: &str,
        prefix: &str,
        tx: &tokio::sync::mpsc::Sender<Result<Location>>,
    ) {
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        let uri = format!("s3://{bucket}/{prefix}");
        let mut pages = self
            .client()
            .await
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = match self.answered(page, &uri, "listing") {
                Ok(page) => page,
                Err(err) => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            };
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                if is_listed(&key[prefix.len()..]) {
                    let location = Location::S3 {
                        bucket: bucket.to_string(),
                        key: key.to_string(),
                    };
                    if tx.send(Ok(location)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The whole content of one object or file.
    pub async fn get(&self, location: &Location) -> Result<Bytes> {
        match location {
            Location::Local(path) => tokio::fs::read(path)
                .await
                .map(Bytes::from)
                .map_err(|err| local_error(path, err)),
            Location::S3 { bucket, key } => {
                let uri = location.to_string();
                let sent = self
                    .client()
                    .await
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await;
                let response = self.answered(sent, &uri, "download")?;
                let body = response
                    .body
                    .collect()
                    .await
                    .map_err(|err| Error::Transient {
                        what: format!("download of {uri}"),
                        detail: err.to_string(),
                    })?;
                Ok(body.into_bytes())
            }
        }
    }

    /// Writes `data` whole at `location`, replacing what was there.
    pub async fn put(&self, location: &Location, data: Bytes) -> Result<()> {
        match location {
            Location::Local(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || write_local_atomically(&path, &data))
                    .await
                    .expect("local write task panicked")
            }
            Location::S3 { bucket, key } => {
                let uri = location.to_string();
                let sent = self
                    .client()
                    .await
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(data))
                    .send()
                    .await;
                self.answered(sent, &uri, "upload")?;
                Ok(())
            }
        }
    }

    /// Copies a local file to `location` whole; large files go up in parts, so memory
    /// stays at one part whatever the file size.
    pub async fn put_file(&self, location: &Location, source: &Path) -> Result<()> {
        let size = std::fs::metadata(source)
            .map_err(|err| Error::io(source, err))?
            .len() as usize;
        match location {
            Location::Local(path) => {
                let (source, path) = (source.to_path_buf(), path.clone());
                tokio::task::spawn_blocking(move || copy_local_atomically(&source, &path))
                    .await
                    .expect("local copy task panicked")
            }
            Location::S3 { .. } if size <= MULTIPART_PART_SIZE => {
                let data = tokio::fs::read(source)
                    .await
                    .map_err(|err| Error::io(source, err))?;
                self.put(location, Bytes::from(data)).await
            }
            Location::S3 { bucket, key } => self.put_multipart(bucket, key, source).await,
        }
    }

    async fn put_multipart(&self, bucket: &str, key: &str, source: &Path) -> Result<()> {
        let uri = format!("s3://{bucket}/{key}");
        let client = self.client().await;
        let sent = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await;
        let upload = self.answered(sent, &uri, "upload")?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = self.upload_parts(bucket, key, &upload_id, source).await;
        if result.is_err() {
            // Best effort: an abandoned upload is invisible to readers but costs storage.
            let _ = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        source: &Path,
    ) -> Result<()> {
        use tokio::io::AsyncReadExt;
        let uri = format!("s3://{bucket}/{key}");
        let client = self.client().await;
        let mut file = tokio::fs::File::open(source)
            .await
            .map_err(|err| Error::io(source, err))?;
        let mut parts = Vec::new();
        loop {
            let mut chunk = Vec::with_capacity(MULTIPART_PART_SIZE);
            (&mut file)
                .take(MULTIPART_PART_SIZE as u64)
                .read_to_end(&mut chunk)
                .await
                .map_err(|err| Error::io(source, err))?;
            if chunk.is_empty() {
                break;
            }
            let number = parts.len() as i32 + 1;
            let sent = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk))
                .send()
                .await;
            let part = self.answered(sent, &uri, "upload")?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
        }
        let sent = client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        self.answered(sent, &uri, "upload")?;
        Ok(())
    }
}

impl Storage {
    /// The outcome of one S3 request, its error mapped by [`s3_error`]; except that once the
    /// endpoint has answered, losing the connection to it is transient: a pod should retry,
    /// not fail its whole Job as for a wrong endpoint.
    fn answered<T, E, R>(
        &self,
        sent: std::result::Result<T, SdkError<E, R>>,
        uri: &str,
        action: &str,
    ) -> Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + 'static,
    {
        let err = match sent {
            Ok(answer) => {
                self.reached.store(true, Ordering::Relaxed);
                return Ok(answer);
            }
            Err(err) => err,
        };
        if matches!(err, SdkError::ServiceError(_)) {
            self.reached.store(true, Ordering::Relaxed);
        }
        Err(match s3_error(err, uri, action) {
            Error::Unreachable { uri, detail } if self.reached.load(Ordering::Relaxed) => {
                Error::Transient {
                    what: format!("{action} of {uri} (the S3 endpoint stopped answering)"),
                    detail,
                }
            }
            other => other,
        })
    }
}

async fn build_client(options: &S3Options) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &options.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(options.path_style)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(S3_MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(200)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(120))
                .build(),
        );
    if shared.region().is_none() {
        // S3-compatible servers ignore the region, and AWS redirects us; any value works.
        config = config.region(Region::new("us-east-1"));
    }
    Client::from_conf(config.build())
}

/// Turns an SDK error into one that says what went wrong and what to do.
fn s3_error<E, R>(err: SdkError<E, R>, uri: &str, action: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + 'static,
{
    let detail = error_chain(&err);
    match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default().to_string();
            let message = service.err().message().unwrap_or_default().to_string();
            let described = if message.is_empty() {
                code.clone()
            } else {
                format!("{code}: {message}")
            };
            match code.as_str() {
                "NoSuchBucket" => Error::NotFound {
                    uri: uri.to_string(),
                    hint: " (no such bucket); create the bucket or fix the URI".into(),
                },
                "NoSuchKey" | "NotFound" => Error::NotFound {
                    uri: uri.to_string(),
                    hint: String::new(),
                },
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "InvalidToken"
                | "ExpiredToken"
                | "AllAccessDisabled" => Error::AccessDenied {
                    uri: uri.to_string(),
                    detail: described,
                },
                _ => Error::Transient {
                    what: format!("{action} of {uri}"),
                    detail: described,
                },
            }
        }
        SdkError::DispatchFailure(failure) if failure.is_io() && !failure.is_timeout() => {
            Error::Unreachable {
                uri: uri.to_string(),
                detail,
            }
        }
        SdkError::DispatchFailure(failure) if failure.is_user() || failure.is_other() => {
            if detail.contains("credentials") {
                Error::AccessDenied {
                    uri: uri.to_string(),
                    detail: "no usable credentials were found".into(),
                }
            } else {
                Error::Config(format!("cannot send the S3 request for {uri}: {detail}"))
            }
        }
        SdkError::ConstructionFailure(_) => {
            Error::Config(format!("cannot build the S3 request for {uri}: {detail}"))
        }
        _ => Error::Transient {
            what: format!("{action} of {uri}"),
            detail,
        },
    }
}

/// "outer: inner: innermost", without repeating a message a source already gave.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(error) = current {
        let text = error.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

fn local_error(path: &Path, err: std::io::Error) -> Error {
    match err.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            uri: path.display().to_string(),
            hint: String::new(),
        },
        std::io::ErrorKind::PermissionDenied => Error::Input(format!(
            "{} cannot be accessed (permission denied); check its permissions and the user fruitpipe runs as",
            path.display()
        )),
        std::io::ErrorKind::IsADirectory => Error::Input(format!(
            "{} is a folder where a file was expected; give the path of the file",
            path.display()
        )),
        _ => Error::io(path, err),
    }
}

fn list_local(root: &Path, tx: &tokio::sync::mpsc::Sender<Result<Location>>) {
    if !root.is_dir() {
        let _ = tx.blocking_send(Err(Error::NotFound {
            uri: root.display().to_string(),
            hint: " (or is not a folder); check --input".into(),
        }));
        return;
    }
    // Folders sort as if their name ended in '/', so the walk visits paths in the same
    // byte order as an S3 listing of the same tree: shards come out identical.
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_key(|entry| {
            let mut key = entry.file_name().as_encoded_bytes().to_vec();
            if entry.file_type().is_dir() {
                key.push(b'/');
            }
            key
        });
    for entry in walker {
        let item = match entry {
            Ok(entry) if entry.file_type().is_dir() => continue,
            Ok(entry) => {
                let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
                let relative = relative.to_string_lossy().replace('\\', "/");
                if !is_listed(&relative) {
                    continue;
                }
                Ok(Location::Local(entry.into_path()))
            }
            Err(err) => {
                let path = err.path().unwrap_or(root).to_path_buf();
                Err(local_error(&path, err.into()))
            }
        };
        if tx.blocking_send(item).is_err() {
            return;
        }
    }
}

fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let unique = format!(
        ".{name}.tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    path.with_file_name(unique.replace(['(', ')'], ""))
}

fn write_local_atomically(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|err| local_error(dir, err))?;
    }
    let temporary = temporary_sibling(path);
    std::fs::write(&temporary, data).map_err(|err| local_error(&temporary, err))?;
    std::fs::rename(&temporary, path).map_err(|err| local_error(path, err))
}

fn copy_local_atomically(source: &Path, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|err| local_error(dir, err))?;
    }
    let temporary = temporary_sibling(path);
    std::fs::copy(source, &temporary).map_err(|err| local_error(&temporary, err))?;
    std::fs::rename(&temporary, path).map_err(|err| local_error(path, err))
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
