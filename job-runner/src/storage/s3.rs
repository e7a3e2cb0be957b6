//! The S3 side of [`Storage`]: the client, its retries, region discovery and the requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::{BeforeTransmitInterceptorContextRef, InterceptorContext};
use aws_sdk_s3::config::retry::{ClassifyRetry, RetryAction, RetryConfig};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Intercept, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, RuntimeComponents,
};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::sync::{OnceCell, OwnedSemaphorePermit};

use super::s3_errors::{DOWNLOAD, Request, error_chain, s3_error};
use super::{
    ByteBudget, Listed, Location, Photo, S3Options, check_photo_signature, check_photo_size,
    is_listed,
};
use crate::error::{Error, Result};
use crate::imaging;

/// Objects larger than this are uploaded in parts of this size (S3's minimum is 5 MiB, its
/// maximum count 10,000 parts: 160 GB).
const MULTIPART_PART_SIZE: usize = 16 * 1024 * 1024;
/// Attempts per S3 request, with exponential backoff between them.
pub(super) const S3_MAX_ATTEMPTS: u32 = 6;
/// Time one attempt of an S3 request may take, sending the request body included, before it
/// is abandoned and retried; `--s3-timeout` (FRUITPIPE_S3_TIMEOUT) changes it.
pub const DEFAULT_S3_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Time to open a connection to the S3 endpoint (at most the attempt timeout).
const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The region requests are signed for when none is configured; S3-compatible stores
/// ignore it, and AWS says where a bucket is when it is elsewhere.
const FALLBACK_REGION: &str = "us-east-1";

/// Reads and writes [`Location`]s. The S3 client is built on first use, so local runs never
/// touch the AWS configuration chain.
pub struct Storage {
    options: S3Options,
    base: OnceCell<BaseClient>,
    /// Clients for buckets found in another region than the fallback one.
    regional: Mutex<HashMap<String, Client>>,
    /// Set by the first S3 response: from then on an endpoint that cannot be reached is
    /// reported as one that stopped answering, not as a possibly wrong --s3-endpoint. Only
    /// the message depends on it: both exit 1, since a retry may fix either.
    reached: AtomicBool,
}

struct BaseClient {
    client: Client,
    /// A region came from --s3-region or the AWS environment: use it for every bucket.
    region_configured: bool,
}

impl Storage {
    pub fn new(options: S3Options) -> Self {
        Storage {
            options,
            base: OnceCell::new(),
            regional: Mutex::new(HashMap::new()),
            reached: AtomicBool::new(false),
        }
    }

    /// A storage that only works on local paths (tests, local runs).
    pub fn local() -> Self {
        Storage::new(S3Options::default())
    }

    /// The client for `bucket`. With no region configured, the bucket's region is asked
    /// once (HeadBucket's `x-amz-bucket-region`), as the AWS CLI does, so that a bucket in
    /// another region works instead of failing with a redirect.
    async fn client(&self, bucket: &str) -> Result<Client> {
        let base = self.base.get_or_init(|| build_client(&self.options)).await;
        if base.region_configured {
            return Ok(base.client.clone());
        }
        if let Some(client) = self.regional.lock().expect("regions lock").get(bucket) {
            return Ok(client.clone());
        }
        let Some(region) = self.bucket_region(&base.client, bucket).await? else {
            // Unknown for now (the endpoint did not answer): the request itself reports it.
            return Ok(base.client.clone());
        };
        let client = if region == FALLBACK_REGION {
            base.client.clone()
        } else {
            tracing::info!(bucket, region, "the bucket is in another region; using it");
            let config = base
                .client
                .config()
                .to_builder()
                .region(Region::new(region));
            Client::from_conf(config.build())
        };
        self.regional
            .lock()
            .expect("regions lock")
            .insert(bucket.to_string(), client.clone());
        Ok(client)
    }

    /// Where `bucket` lives, from HeadBucket's answer (given with 200, 301 and 403 alike).
    /// A redirect that does not name a region is a configuration error: no retry finds it.
    async fn bucket_region(&self, client: &Client, bucket: &str) -> Result<Option<String>> {
        match client.head_bucket().bucket(bucket).send().await {
            Ok(answer) => {
                self.reached.store(true, Ordering::Relaxed);
                Ok(Some(
                    answer
                        .bucket_region()
                        .unwrap_or(FALLBACK_REGION)
                        .to_string(),
                ))
            }
            Err(SdkError::ServiceError(service)) => {
                self.reached.store(true, Ordering::Relaxed);
                let raw = service.raw();
                if let Some(region) = raw.headers().get("x-amz-bucket-region") {
                    return Ok(Some(region.to_string()));
                }
                if (300..400).contains(&raw.status().as_u16()) {
                    return Err(Error::Config(format!(
                        "s3://{bucket} is served from another region or endpoint (HTTP {}) and the answer does not say which; set --s3-region (AWS_REGION) to the bucket's region",
                        raw.status().as_u16()
                    )));
                }
                // 403 without the header, 404, ...: the real request says what is wrong.
                Ok(Some(FALLBACK_REGION.to_string()))
            }
            Err(_) => Ok(None),
        }
    }

    pub(super) async fn list_s3(
        &self,
        bucket: &str,
        prefix: &str,
        tx: &tokio::sync::mpsc::Sender<Result<Listed>>,
    ) {
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        let uri = format!("s3://{bucket}/{prefix}");
        let client = match self.client(bucket).await {
            Ok(client) => client,
            Err(err) => {
                let _ = tx.send(Err(err)).await;
                return;
            }
        };
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
                    if tx.send(Ok(Listed::Photo(location))).await.is_err() {
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

    /// Downloads an object whole.
    pub(super) async fn get_s3(&self, bucket: &str, key: &str) -> Result<Bytes> {
        self.download(bucket, key, None, None).await
    }

    /// Downloads bytes `start..end` of an object.
    pub(super) async fn get_s3_range(
        &self,
        bucket: &str,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<Bytes> {
        self.download(bucket, key, None, Some((start, end))).await
    }

    /// Downloads a photo: its size is checked and reserved in `budget`, and its first bytes
    /// checked, before the rest is transferred.
    pub(super) async fn get_s3_photo(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
        budget: &ByteBudget,
    ) -> Result<Photo> {
        let mut reserved = None;
        let bytes = self
            .download(bucket, key, Some((max_bytes, budget, &mut reserved)), None)
            .await?;
        Ok(Photo {
            bytes,
            _reserved: reserved.expect("reserved before the body is read"),
        })
    }

    /// The SDK retries a request until its response starts; a body that breaks off or
    /// comes short is retried here, as often.
    async fn download(
        &self,
        bucket: &str,
        key: &str,
        mut photo: Option<(u64, &ByteBudget, &mut Option<OwnedSemaphorePermit>)>,
        range: Option<(u64, u64)>,
    ) -> Result<Bytes> {
        let uri = format!("s3://{bucket}/{key}");
        let client = self.client(bucket).await?;
        let mut broken = 0;
        loop {
            let attempts = Attempts::default();
            let sent = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .set_range(range.map(|(start, end)| format!("bytes={start}-{}", end - 1)))
                .customize()
                .interceptor(attempts.clone())
                .send()
                .await;
            let response = self.answered(sent, &attempts, &uri, DOWNLOAD)?;
            let length = response
                .content_length()
                .and_then(|n| u64::try_from(n).ok());
            if let Some((max_bytes, budget, reserved)) = photo.as_mut() {
                check_photo_size(&uri, length.unwrap_or(0), *max_bytes)?;
                if reserved.is_none() {
                    **reserved = Some(budget.reserve(length.unwrap_or(*max_bytes)).await);
                }
            }
            let err = match read_body(response.body, length, photo.is_some(), &uri).await {
                Ok(body) => return Ok(body),
                Err(BodyError::Refused(err)) => return Err(err),
                Err(BodyError::Broken(err)) => err,
            };
            broken += 1;
            if broken == S3_MAX_ATTEMPTS {
                return Err(Error::Transient {
                    what: format!("download of {uri}"),
                    detail: format!("the connection broke while the object was read: {err}"),
                    attempts: Some(broken),
                });
            }
            tracing::debug!(%uri, error = %err, "download broke off; retrying");
            tokio::time::sleep(Duration::from_millis(100 << broken)).await;
        }
    }

    pub(super) async fn put_s3(&self, bucket: &str, key: &str, data: Bytes) -> Result<()> {
        let uri = format!("s3://{bucket}/{key}");
        let attempts = Attempts::default();
        let sent = self
            .client(bucket)
            .await?
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

    pub(super) async fn delete_s3(&self, bucket: &str, key: &str) -> Result<()> {
        let uri = format!("s3://{bucket}/{key}");
        let attempts = Attempts::default();
        let sent = self
            .client(bucket)
            .await?
            .delete_object()
            .bucket(bucket)
            .key(key)
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await;
        match self.answered(sent, &attempts, &uri, "deletion") {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

enum BodyError {
    /// The connection broke or the body came short: worth another request.
    Broken(String),
    /// The photo is not an image: no use downloading the rest.
    Refused(Error),
}

async fn read_body(
    mut body: ByteStream,
    length: Option<u64>,
    is_photo: bool,
    uri: &str,
) -> std::result::Result<Bytes, BodyError> {
    let mut data = Vec::with_capacity(length.unwrap_or(0).min(64 << 20) as usize);
    let mut checked = !is_photo;
    loop {
        match body.next().await {
            Some(Ok(chunk)) => data.extend_from_slice(&chunk),
            Some(Err(err)) => return Err(BodyError::Broken(error_chain(&err))),
            None => break,
        }
        if !checked && data.len() >= imaging::SIGNATURE_BYTES {
            check_photo_signature(uri, &data).map_err(BodyError::Refused)?;
            checked = true;
        }
    }
    if let Some(length) = length
        && data.len() as u64 != length
    {
        return Err(BodyError::Broken(format!(
            "the body ended after {} of {length} bytes",
            data.len()
        )));
    }
    if !checked {
        check_photo_signature(uri, &data).map_err(BodyError::Refused)?;
    }
    Ok(Bytes::from(data))
}

/// An object streamed to S3: one PUT when it fits in one part, else a multipart upload
/// whose parts go up as they fill. Only a completed upload is visible; a failed one is
/// aborted (a killed process leaves an incomplete upload, which a bucket lifecycle rule
/// removes: see docs/operations.md).
pub(super) struct Upload<'a> {
    storage: &'a Storage,
    bucket: String,
    key: String,
    buffer: Vec<u8>,
    parts: Option<Parts<'a>>,
}

impl<'a> Upload<'a> {
    pub(super) fn new(storage: &'a Storage, bucket: &str, key: &str) -> Self {
        Upload {
            storage,
            bucket: bucket.to_string(),
            key: key.to_string(),
            buffer: Vec::new(),
            parts: None,
        }
    }

    pub(super) async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.buffer.extend_from_slice(data);
        while self.buffer.len() >= MULTIPART_PART_SIZE {
            let rest = self.buffer.split_off(MULTIPART_PART_SIZE);
            let part = std::mem::replace(&mut self.buffer, rest);
            if let Err(err) = self.send_part(part).await {
                self.abort().await;
                return Err(err);
            }
        }
        Ok(())
    }

    pub(super) async fn finish(mut self) -> Result<()> {
        if self.parts.is_none() {
            let data = Bytes::from(std::mem::take(&mut self.buffer));
            return self.storage.put_s3(&self.bucket, &self.key, data).await;
        }
        if !self.buffer.is_empty() {
            let last = std::mem::take(&mut self.buffer);
            if let Err(err) = self.send_part(last).await {
                self.abort().await;
                return Err(err);
            }
        }
        let parts = self.parts.take().expect("multipart upload started");
        parts.complete().await
    }

    async fn send_part(&mut self, part: Vec<u8>) -> Result<()> {
        if self.parts.is_none() {
            self.parts = Some(self.storage.start_parts(&self.bucket, &self.key).await?);
        }
        let parts = self.parts.as_mut().expect("multipart upload started");
        parts.upload(Bytes::from(part)).await
    }

    async fn abort(&mut self) {
        if let Some(parts) = self.parts.take() {
            parts.abort().await;
        }
    }
}

/// A multipart upload under way: parts uploaded from here or copied by the server from
/// other objects, published whole by [`Parts::complete`].
pub(super) struct Parts<'a> {
    storage: &'a Storage,
    client: Client,
    bucket: String,
    key: String,
    id: String,
    done: Vec<CompletedPart>,
}

impl Storage {
    pub(super) async fn start_parts<'a>(&'a self, bucket: &str, key: &str) -> Result<Parts<'a>> {
        let uri = format!("s3://{bucket}/{key}");
        let client = self.client(bucket).await?;
        let attempts = Attempts::default();
        let sent = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await;
        let created = self.answered(sent, &attempts, &uri, "upload")?;
        Ok(Parts {
            storage: self,
            client,
            bucket: bucket.to_string(),
            key: key.to_string(),
            id: created.upload_id().unwrap_or_default().to_string(),
            done: Vec::new(),
        })
    }
}

impl Parts<'_> {
    fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// Sends the next part: for writers that produce parts one after the other.
    pub(super) async fn upload(&mut self, data: Bytes) -> Result<()> {
        let number = self.done.len() as i32 + 1;
        let part = self.upload_part(number, data).await?;
        self.done.push(part);
        Ok(())
    }

    /// Part `number` (parts may go up in any order and at once: see [`Parts::add`]).
    pub(super) async fn upload_part(&self, number: i32, data: Bytes) -> Result<CompletedPart> {
        let attempts = Attempts::default();
        let sent = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .part_number(number)
            .body(ByteStream::from(data))
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await;
        let answer = self
            .storage
            .answered(sent, &attempts, &self.uri(), "upload")?;
        Ok(completed(number, answer.e_tag()))
    }

    /// Part `number` from bytes `start..end` of `s3://bucket/key`, copied by the server
    /// (`UploadPartCopy`).
    pub(super) async fn copy_part(
        &self,
        number: i32,
        (bucket, key): (&str, &str),
        start: u64,
        end: u64,
    ) -> Result<CompletedPart> {
        let source = format!("s3://{bucket}/{key}");
        let attempts = Attempts::default();
        let sent = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .part_number(number)
            .copy_source(copy_source(bucket, key))
            .copy_source_range(format!("bytes={start}-{}", end - 1))
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await;
        let answer = self
            .storage
            .answered(sent, &attempts, &source, "server-side copy")?;
        let e_tag = answer.copy_part_result().and_then(|result| result.e_tag());
        Ok(completed(number, e_tag))
    }

    /// A part sent with [`Parts::upload_part`] or [`Parts::copy_part`].
    pub(super) fn add(&mut self, part: CompletedPart) {
        self.done.push(part);
    }

    pub(super) async fn complete(mut self) -> Result<()> {
        // S3 wants the parts in ascending order.
        self.done.sort_by_key(|part| part.part_number());
        let attempts = Attempts::default();
        let sent = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.done)))
                    .build(),
            )
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await;
        let uri = self.uri();
        if let Err(err) = self.storage.answered(sent, &attempts, &uri, "upload") {
            self.abort().await;
            return Err(err);
        }
        Ok(())
    }

    /// Best effort: an abandoned upload is invisible to readers but costs storage.
    pub(super) async fn abort(self) {
        let _ = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.id)
            .send()
            .await;
    }
}

fn completed(number: i32, e_tag: Option<&str>) -> CompletedPart {
    CompletedPart::builder()
        .part_number(number)
        .set_e_tag(e_tag.map(str::to_string))
        .build()
}

/// `x-amz-copy-source`: `bucket/key`, URL-encoded except for the slashes.
fn copy_source(bucket: &str, key: &str) -> String {
    let mut encoded = format!("{bucket}/");
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
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

async fn build_client(options: &S3Options) -> BaseClient {
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
    if shared.endpoint_url().is_some() {
        // MinIO, Ceph and other S3-compatible stores may not know the flexible checksum
        // headers (x-amz-checksum-*, aws-chunked bodies) that the SDK sends to AWS by
        // default; send and check them only where S3 requires them.
        config = config
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    let region_configured = shared.region().is_some();
    if !region_configured {
        config = config.region(Region::new(FALLBACK_REGION));
    }
    BaseClient {
        client: Client::from_conf(config.build()),
        region_configured,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_are_url_encoded() {
        assert_eq!(
            copy_source("b", "out/_work/r 1/projected/00000.csv"),
            "b/out/_work/r%201/projected/00000.csv"
        );
        assert_eq!(copy_source("b", "Pomme\u{e9}+x"), "b/Pomme%C3%A9%2Bx");
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
