//! Where data lives: a local folder or an S3 prefix, behind one small API.
//!
//! Every write is whole or nothing: local files are written under a hidden temporary name
//! and renamed; S3 objects are one PUT or one completed multipart upload.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::{BeforeTransmitInterceptorContextRef, InterceptorContext};
use aws_sdk_s3::config::retry::{ClassifyRetry, RetryAction, RetryConfig};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
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
/// Time one attempt of an S3 request may take, sending the request body included, before it
/// is abandoned and retried; `--s3-timeout` (FRUITPIPE_S3_TIMEOUT) changes it.
pub const DEFAULT_S3_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Time to open a connection to the S3 endpoint (at most the attempt timeout).
const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Reads and writes [`Location`]s. The S3 client is built on first use, so local runs never
/// touch the AWS configuration chain.
pub struct Storage {
    options: S3Options,
    client: OnceCell<Client>,
    /// Set by the first S3 response: from then on an endpoint that cannot be reached is
    /// reported as one that stopped answering, not as a possibly wrong --s3-endpoint. Only
    /// the message depends on it: both exit 1, since a retry may fix either.
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
        let client = self.client().await;
        // Page by page by hand rather than with the SDK's paginator, so that each request
        // carries its own attempt counter.
        let mut continuation: Option<String> = None;
        loop {
            let attempts = Attempts::default();
            let sent = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(&prefix)
                .set_continuation_token(continuation.clone())
                .customize()
                .interceptor(attempts.clone())
                .send()
                .await;
            let page = match self.answered(sent, &attempts, &uri, "listing") {
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
            // As the SDK's paginator: an absent, empty or repeated token ends the listing.
            match page.next_continuation_token() {
                Some(token) if !token.is_empty() && continuation.as_deref() != Some(token) => {
                    continuation = Some(token.to_string());
                }
                _ => return,
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
            Location::S3 { bucket, key } => self.get_s3(bucket, key).await,
        }
    }

    /// The SDK retries a request until its response starts; a connection that breaks while
    /// the body streams in is retried here, as often.
    async fn get_s3(&self, bucket: &str, key: &str) -> Result<Bytes> {
        let uri = format!("s3://{bucket}/{key}");
        let client = self.client().await;
        let mut broken = 0;
        loop {
            let attempts = Attempts::default();
            let sent = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .customize()
                .interceptor(attempts.clone())
                .send()
                .await;
            let response = self.answered(sent, &attempts, &uri, "download")?;
            let err = match response.body.collect().await {
                Ok(body) => return Ok(body.into_bytes()),
                Err(err) => err,
            };
            broken += 1;
            if broken == S3_MAX_ATTEMPTS {
                return Err(Error::Transient {
                    what: format!("download of {uri}"),
                    detail: format!(
                        "the connection broke while the object was read: {}",
                        error_chain(&err)
                    ),
                    attempts: Some(broken),
                });
            }
            tracing::debug!(%uri, error = %error_chain(&err), "download broke off; retrying");
            tokio::time::sleep(Duration::from_millis(100 << broken)).await;
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
                let attempts = Attempts::default();
                let sent = self
                    .client()
                    .await
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(data))
                    .customize()
                    .interceptor(attempts.clone())
                    .send()
                    .await;
                self.answered(sent, &attempts, &uri, "upload")?;
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
        let attempts = Attempts::default();
        let sent = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await;
        let upload = self.answered(sent, &attempts, &uri, "upload")?;
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
            let attempts = Attempts::default();
            let sent = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk))
                .customize()
                .interceptor(attempts.clone())
                .send()
                .await;
            let part = self.answered(sent, &attempts, &uri, "upload")?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
        }
        let attempts = Attempts::default();
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
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await;
        self.answered(sent, &attempts, &uri, "upload")?;
        Ok(())
    }
}

impl Storage {
    /// The outcome of one S3 request, its error mapped by [`s3_error`].
    fn answered<T, E>(
        &self,
        sent: std::result::Result<T, SdkError<E>>,
        attempts: &Attempts,
        uri: &str,
        action: &str,
    ) -> Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let err = match sent {
            Ok(answer) => {
                self.reached.store(true, Ordering::Relaxed);
                return Ok(answer);
            }
            Err(err) => err,
        };
        let answered_before = self.reached.load(Ordering::Relaxed);
        if matches!(err, SdkError::ServiceError(_) | SdkError::ResponseError(_)) {
            self.reached.store(true, Ordering::Relaxed);
        }
        let sent_to = attempts.endpoint();
        let request = Request {
            uri,
            action,
            attempts: attempts.count(),
            transmitted: sent_to.is_some(),
            endpoint: sent_to
                .or_else(|| self.options.endpoint.clone())
                .unwrap_or_else(|| "(the AWS default)".into()),
            answered_before,
            attempt_timeout: self.attempt_timeout(),
        };
        Err(s3_error(err, &request))
    }

    fn attempt_timeout(&self) -> Duration {
        self.options
            .attempt_timeout
            .unwrap_or(DEFAULT_S3_ATTEMPT_TIMEOUT)
    }
}

/// Follows one S3 request through the SDK's retries: how many attempts it made and where
/// they went, so that a failure can say both.
#[derive(Clone, Debug, Default)]
struct Attempts(Arc<AttemptsSeen>);

#[derive(Debug, Default)]
struct AttemptsSeen {
    count: AtomicU32,
    endpoint: Mutex<Option<String>>,
}

impl Attempts {
    fn count(&self) -> u32 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// `scheme://host[:port]` of the last attempt that got as far as sending.
    fn endpoint(&self) -> Option<String> {
        self.0.endpoint.lock().expect("endpoint lock").clone()
    }
}

impl Intercept for Attempts {
    fn name(&self) -> &'static str {
        "fruitpipe::Attempts"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let origin = origin(context.request().uri());
        *self.0.endpoint.lock().expect("endpoint lock") = Some(origin);
        Ok(())
    }
}

/// `scheme://host[:port]` of a URL: where a request went, without bucket, key or query.
fn origin(url: &str) -> String {
    let host = url.find("://").map_or(0, |at| at + 3);
    let end = url[host..]
        .find(['/', '?'])
        .map_or(url.len(), |at| host + at);
    url[..end].to_string()
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
    let attempt_timeout = options
        .attempt_timeout
        .unwrap_or(DEFAULT_S3_ATTEMPT_TIMEOUT);
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(options.path_style)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(S3_MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(200)),
        )
        .retry_classifier(RetryTooManyRequests)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(S3_CONNECT_TIMEOUT.min(attempt_timeout))
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        );
    if shared.region().is_none() {
        // S3-compatible servers ignore the region; AWS answers PermanentRedirect when the
        // bucket is elsewhere, which says to set --s3-region.
        config = config.region(Region::new("us-east-1"));
    }
    Client::from_conf(config.build())
}

/// AWS throttles with 503 SlowDown, which the SDK retries; some S3-compatible stores answer
/// 429 Too Many Requests instead, which it would not.
#[derive(Debug)]
struct RetryTooManyRequests;

impl ClassifyRetry for RetryTooManyRequests {
    fn classify_retry(&self, context: &InterceptorContext) -> RetryAction {
        match context.response() {
            Some(response) if response.status().as_u16() == 429 => RetryAction::throttling_error(),
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "fruitpipe::RetryTooManyRequests"
    }
}

/// One failed S3 request, as much as a message needs of it.
struct Request<'a> {
    uri: &'a str,
    action: &'a str,
    /// Attempts the SDK made, its retries included.
    attempts: u32,
    /// `scheme://host[:port]` the request went (or would have gone) to.
    endpoint: String,
    /// Some attempt got as far as sending: the failure is not in building the request.
    transmitted: bool,
    answered_before: bool,
    attempt_timeout: Duration,
}

impl Request<'_> {
    fn what(&self) -> String {
        format!("{} of {}", self.action, self.uri)
    }

    fn transient(&self, detail: String) -> Error {
        Error::Transient {
            what: self.what(),
            detail,
            attempts: Some(self.attempts).filter(|&n| n > 0),
        }
    }

    fn unreachable(&self, cause: String) -> Error {
        Error::Unreachable {
            endpoint: self.endpoint.clone(),
            uri: self.uri.to_string(),
            cause,
            attempts: self.attempts,
            answered_before: self.answered_before,
        }
    }
}

/// Turns an SDK error into one that says what went wrong and what to do, with exit code 2
/// only where a retry certainly cannot help: a missing bucket or object, refused or invalid
/// credentials, a request that cannot be built (a malformed endpoint URL), a bucket in
/// another region. Network faults, timeouts, throttling and 5xx exit 1, once the SDK's own
/// retries have run out.
fn s3_error<E>(err: SdkError<E>, request: &Request<'_>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = error_chain(&err);
    tracing::debug!(uri = request.uri, attempts = request.attempts, error = %detail, "S3 request failed");
    match &err {
        SdkError::ServiceError(service) => {
            service_error(service.err(), service.raw().status().as_u16(), request)
        }
        SdkError::TimeoutError(_) => request.unreachable(format!(
            "no answer within {:?} (--s3-timeout)",
            request.attempt_timeout
        )),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            request.unreachable(timeout_cause(&err))
        }
        SdkError::DispatchFailure(failure) if failure.is_io() => {
            request.unreachable(network_cause(&err))
        }
        SdkError::DispatchFailure(_) => {
            if let Some(credentials) = credentials_error(&detail, request.uri) {
                credentials
            } else if !request.transmitted {
                // Nothing was sent: the endpoint could not be resolved or the request not
                // signed, which does not change from one attempt to the next.
                Error::Config(format!(
                    "cannot send the S3 request for {}: {detail}; check --s3-endpoint / AWS_ENDPOINT_URL and --s3-region",
                    request.uri
                ))
            } else {
                // The connection broke in a way hyper does not classify (a response cut
                // short, ...): a network fault.
                request.transient(detail)
            }
        }
        SdkError::ConstructionFailure(_) => Error::Config(format!(
            "cannot build the S3 request for {}: {detail}",
            request.uri
        )),
        // An answer that is not S3's (a proxy's error page, a truncated response) and
        // anything newer: retryable.
        _ => request.transient(detail),
    }
}

/// Maps an error S3 answered with by its code.
fn service_error(
    err: &(impl ProvideErrorMetadata + ?Sized),
    status: u16,
    request: &Request<'_>,
) -> Error {
    let uri = request.uri.to_string();
    let code = err.code().unwrap_or_default();
    let message = err.message().unwrap_or_default();
    let described = match (code.is_empty(), message.is_empty()) {
        (false, true) => code.to_string(),
        (false, false) => format!("{code}: {message}"),
        (true, true) => format!("HTTP {status} without an S3 error code"),
        (true, false) => format!("HTTP {status}: {message}"),
    };
    match code {
        "NoSuchBucket" => Error::NotFound {
            uri,
            hint: " (no such bucket); create the bucket or fix the URI".into(),
        },
        "NoSuchKey" | "NotFound" => Error::NotFound {
            uri,
            hint: String::new(),
        },
        "AccessDenied"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "InvalidToken"
        | "NotSignedUp"
        | "AllAccessDisabled" => Error::AccessDenied {
            uri,
            detail: described,
        },
        "InvalidBucketName" => Error::Config(format!(
            "{uri} names an invalid bucket ({described}); fix the URI"
        )),
        "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => {
            Error::Config(format!(
                "{uri} is not served by this region or endpoint ({described}); set --s3-region (AWS_REGION) to the bucket's region, or fix --s3-endpoint"
            ))
        }
        // Credentials that expired (IRSA, SSO, a profile's role) come fresh in a new run;
        // only a hand-set AWS_SESSION_TOKEN stays expired.
        "ExpiredToken" => request.transient(format!(
            "{described} (the S3 credentials expired; a new run loads fresh ones, except a hand-set AWS_SESSION_TOKEN: renew it)"
        )),
        // Throttling (SlowDown, 429, RequestTimeout), 5xx and anything not known to be
        // permanent.
        _ => request.transient(described),
    }
}

/// Failures to load credentials arrive as dispatch failures; only a chain that found no
/// credentials anywhere, or found them misconfigured, is certain. A provider that could not
/// be reached (STS, the instance metadata service) or failed may work on a retry.
fn credentials_error(detail: &str, uri: &str) -> Option<Error> {
    // The Display texts of aws-credential-types' `CredentialsError` variants.
    const NOT_LOADED: &str = "the credential provider was not enabled";
    const MISCONFIGURED: &str = "the credentials provider was not properly configured";
    const OTHERS: [&str; 3] = [
        "an error occurred while loading credentials",
        "credentials provider timed out",
        "unexpected credentials error",
    ];
    let uri = uri.to_string();
    if detail.contains(MISCONFIGURED) {
        Some(Error::AccessDenied {
            uri,
            detail: detail.to_string(),
        })
    } else if detail.contains(NOT_LOADED) && !detail.contains("could not communicate") {
        Some(Error::AccessDenied {
            uri,
            detail: "no usable credentials were found".into(),
        })
    } else if detail.contains(NOT_LOADED) || OTHERS.iter().any(|text| detail.contains(text)) {
        Some(Error::Transient {
            what: format!("loading the S3 credentials for {uri}"),
            detail: detail.to_string(),
            attempts: None,
        })
    } else {
        None
    }
}

/// "connection refused", "connection reset", "DNS lookup failed (...)": the reason an
/// endpoint could not be reached, short, from the innermost errors of the chain.
fn network_cause(err: &(dyn std::error::Error + 'static)) -> String {
    use std::io::ErrorKind;
    let mut dns = false;
    let mut innermost = err.to_string();
    let mut current = Some(err);
    while let Some(error) = current {
        let text = error.to_string();
        dns |= text.contains("dns error");
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            let kind = match io.kind() {
                ErrorKind::ConnectionRefused => Some("connection refused"),
                ErrorKind::ConnectionReset => Some("connection reset"),
                ErrorKind::ConnectionAborted => Some("connection aborted"),
                ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof => Some("connection closed"),
                ErrorKind::TimedOut => Some("timed out"),
                ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                    Some("no route to the endpoint")
                }
                _ => None,
            };
            if let Some(kind) = kind {
                return kind.to_string();
            }
        }
        innermost = text;
        current = error.source();
    }
    if dns {
        format!("DNS lookup failed: {innermost}")
    } else {
        innermost
    }
}

/// "timed out (HTTP connect timeout occurred after 5s)".
fn timeout_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = Some(err);
    while let Some(error) = current {
        let text = error.to_string();
        if text.contains("timeout occurred") {
            return format!("timed out ({text})");
        }
        current = error.source();
    }
    "timed out".into()
}

/// "outer: inner: innermost", without repeating a message a source already gave.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(error) = current {
        // One line: some errors (a credentials chain's) list their parts on lines of their own.
        let text = error
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
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

    mod classification {
        use super::super::*;
        use crate::error::{EXIT_PERMANENT, EXIT_RETRYABLE};
        use aws_sdk_s3::config::http::HttpResponse;
        use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
        use aws_sdk_s3::operation::get_object::GetObjectError;
        use aws_sdk_s3::primitives::SdkBody;

        fn request(transmitted: bool) -> Request<'static> {
            Request {
                uri: "s3://fruit/in/",
                action: "listing",
                attempts: 6,
                endpoint: "http://127.0.0.1:9".into(),
                transmitted,
                answered_before: false,
                attempt_timeout: Duration::from_secs(120),
            }
        }

        fn classify(err: SdkError<GetObjectError>) -> Error {
            s3_error(err, &request(true))
        }

        fn answer(status: u16, code: &str) -> Error {
            let mut metadata = ErrorMetadata::builder().message("from the test");
            if !code.is_empty() {
                metadata = metadata.code(code);
            }
            let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
            classify(SdkError::service_error(
                GetObjectError::generic(metadata.build()),
                raw,
            ))
        }

        /// An error whose `source()` is the next one, as hyper's are.
        #[derive(Debug)]
        struct Wrapped(
            &'static str,
            Option<Box<dyn std::error::Error + Send + Sync>>,
        );

        impl fmt::Display for Wrapped {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }

        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|err| err as _)
            }
        }

        fn io(kind: std::io::ErrorKind, text: &'static str) -> BoxError {
            Box::new(Wrapped(
                "client error (Connect)",
                Some(Box::new(std::io::Error::new(kind, text))),
            ))
        }

        #[test]
        fn s3_answers_exit_2_only_when_certain() {
            for (status, code) in [
                (404, "NoSuchBucket"),
                (404, "NoSuchKey"),
                (403, "AccessDenied"),
                (403, "InvalidAccessKeyId"),
                (403, "SignatureDoesNotMatch"),
                (400, "InvalidToken"),
                (403, "NotSignedUp"),
                (400, "InvalidBucketName"),
                (301, "PermanentRedirect"),
                (400, "AuthorizationHeaderMalformed"),
            ] {
                let err = answer(status, code);
                assert_eq!(err.exit_code(), EXIT_PERMANENT, "{code}: {err}");
            }
            for (status, code) in [
                (503, "SlowDown"),
                (503, "ServiceUnavailable"),
                (429, "TooManyRequests"),
                (400, "RequestTimeout"),
                (400, "ExpiredToken"),
                (500, "InternalError"),
                (409, "OperationAborted"),
                (403, ""),
                (502, ""),
            ] {
                let err = answer(status, code);
                assert_eq!(err.exit_code(), EXIT_RETRYABLE, "{status} {code}: {err}");
                assert!(err.to_string().contains("after 6 attempts"), "{err}");
            }
            assert!(answer(403, "").to_string().contains("HTTP 403"));
        }

        #[test]
        fn network_faults_and_timeouts_exit_1_and_say_why() {
            use std::io::ErrorKind;
            let cases = [
                (
                    ConnectorError::io(io(ErrorKind::ConnectionRefused, "Connection refused")),
                    "connection refused",
                ),
                (
                    ConnectorError::io(io(ErrorKind::ConnectionReset, "reset by peer")),
                    "connection reset",
                ),
                (
                    ConnectorError::io(Box::new(Wrapped(
                        "dns error",
                        Some(Box::new(std::io::Error::other(
                            "failed to lookup address information",
                        ))),
                    ))),
                    "DNS lookup failed: failed to lookup address information",
                ),
                (
                    ConnectorError::timeout(Box::new(Wrapped(
                        "HTTP connect timeout occurred after 5s",
                        None,
                    ))),
                    "timed out (HTTP connect timeout occurred after 5s)",
                ),
            ];
            for (failure, cause) in cases {
                let err = classify(SdkError::dispatch_failure(failure));
                assert_eq!(err.exit_code(), EXIT_RETRYABLE, "{err}");
                assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
                let text = err.to_string();
                assert!(text.contains(cause), "expected '{cause}' in: {text}");
                assert!(text.contains("http://127.0.0.1:9"), "{text}");
                assert!(text.contains("(after 6 attempts)"), "{text}");
            }
            let timeout = classify(SdkError::timeout_error(Wrapped("attempt timeout", None)));
            assert_eq!(timeout.exit_code(), EXIT_RETRYABLE);
            assert!(timeout.to_string().contains("no answer within 120s"));

            // A response cut short (hyper's IncompleteMessage), an unparsable answer.
            let cut = SdkError::dispatch_failure(ConnectorError::other(
                Box::new(Wrapped("connection closed before message completed", None)),
                None,
            ));
            assert_eq!(classify(cut).exit_code(), EXIT_RETRYABLE);
            let garbled = SdkError::response_error(
                Wrapped("not XML", None),
                HttpResponse::new(200.try_into().unwrap(), SdkBody::empty()),
            );
            assert_eq!(classify(garbled).exit_code(), EXIT_RETRYABLE);
        }

        #[test]
        fn requests_that_cannot_be_built_or_signed_exit_2() {
            let endpoint = SdkError::<GetObjectError>::dispatch_failure(ConnectorError::other(
                Box::new(Wrapped("Custom endpoint `x` was not a valid URI", None)),
                None,
            ));
            let err = s3_error(endpoint, &request(false));
            assert_eq!(err.exit_code(), EXIT_PERMANENT, "{err}");
        }

        #[test]
        fn only_missing_or_misconfigured_credentials_exit_2() {
            let credentials = |text: &'static str| {
                classify(SdkError::dispatch_failure(ConnectorError::other(
                    Box::new(Wrapped(text, None)),
                    None,
                )))
            };
            let none = credentials(
                "the credential provider was not enabled: no credentials found in chain",
            );
            assert_eq!(none.exit_code(), EXIT_PERMANENT, "{none}");
            assert!(none.to_string().contains("no usable credentials"), "{none}");
            let misconfigured =
                credentials("the credentials provider was not properly configured: bad profile");
            assert_eq!(misconfigured.exit_code(), EXIT_PERMANENT);
            for transient in [
                "the credential provider was not enabled: Ec2InstanceMetadata: could not communicate with IMDS",
                "an error occurred while loading credentials: dispatch failure: io error",
                "credentials provider timed out after 5 seconds",
            ] {
                let err = credentials(transient);
                assert_eq!(err.exit_code(), EXIT_RETRYABLE, "{err}");
                assert!(
                    err.to_string().contains("loading the S3 credentials"),
                    "{err}"
                );
            }
        }

        #[test]
        fn origins_drop_path_and_query() {
            assert_eq!(
                origin("http://127.0.0.1:9/fruit?list-type=2"),
                "http://127.0.0.1:9"
            );
            assert_eq!(
                origin("https://fruit.s3.eu-west-1.amazonaws.com/in/a.jpg"),
                "https://fruit.s3.eu-west-1.amazonaws.com"
            );
            assert_eq!(origin("http://minio:9000"), "http://minio:9000");
        }
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
