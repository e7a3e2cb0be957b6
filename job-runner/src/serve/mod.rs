//! `fruitpipe serve`: the engine over HTTP, and the page a person tries it with.
//!
//! The process listens at once and loads the model and the index in the background:
//! `/healthz` answers from the start, `/readyz` and `/v1/identify` once loading is done
//! (503 before). A failed load ends the process with the error, so that Kubernetes shows it
//! (CrashLoopBackOff, the message in `kubectl logs`) instead of a pod that is never ready.

mod metrics;

use std::future::Future;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Multipart, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::identify::{DEFAULT_VOTERS, Engine, Identification};
use crate::storage::{Location, Storage};
use metrics::Metrics;

/// The page: one file, no build step, nothing from elsewhere.
const PAGE: &str = include_str!("page.html");

pub const DEFAULT_MAX_UPLOAD: usize = 20_000_000;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest side of the thumbnails `/v1/photo` serves.
const THUMBNAIL_SIDE: u32 = 160;
/// Most nearest photos a request may ask for with `?top=`.
const MAX_TOP: usize = 50;

#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Largest request body, in bytes.
    pub max_upload: usize,
    /// Identifications answered or waiting at once; more wait up to `timeout`, then get 503.
    pub max_in_flight: usize,
    /// Longest an identification may take, waiting included.
    pub timeout: Duration,
    /// Nearest photos per answer, unless the request asks otherwise.
    pub top: usize,
    pub voters: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_upload: DEFAULT_MAX_UPLOAD,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            timeout: DEFAULT_TIMEOUT,
            top: 5,
            voters: DEFAULT_VOTERS,
        }
    }
}

struct App {
    engine: OnceLock<Arc<Engine>>,
    storage: Arc<Storage>,
    options: ServeOptions,
    permits: Arc<Semaphore>,
    metrics: Metrics,
}

/// Serves on `listener` until SIGTERM or Ctrl-C (then finishes the requests under way), or
/// until `load` fails.
pub async fn serve(
    listener: TcpListener,
    storage: Arc<Storage>,
    load: impl Future<Output = Result<Engine>> + Send + 'static,
    options: ServeOptions,
) -> Result<()> {
    let address = listener
        .local_addr()
        .map_err(|err| Error::io("the listening socket", err))?;
    let app = Arc::new(App {
        engine: OnceLock::new(),
        storage,
        permits: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
        options,
        metrics: Metrics::new(),
    });
    let server = axum::serve(listener, router(app.clone())).with_graceful_shutdown(stopped());
    announce(address);
    let loading = async {
        let engine = load.await?;
        app.metrics.index_photos.set(engine.index.len() as i64);
        app.metrics.ready.set(1);
        tracing::info!(photos = engine.index.len(), "ready");
        let _ = app.engine.set(Arc::new(engine));
        std::future::pending::<Result<()>>().await
    };
    tokio::select! {
        served = server => served.map_err(|err| Error::io(address.to_string(), err)),
        failed = loading => failed,
    }
}

fn announce(address: SocketAddr) {
    // Scripts and tests read this line to find the port of `--listen 127.0.0.1:0`.
    eprintln!("fruitpipe serve: listening on http://{address}");
}

async fn stopped() {
    let interrupted = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminated =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("cannot listen for SIGTERM");
        tokio::select! {
            _ = interrupted => {},
            _ = terminated.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupted.await;
    tracing::info!("stopping: finishing the requests under way");
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/v1/identify", post(identify))
        .route("/v1/photo", get(photo))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { Refusal::new(StatusCode::NOT_FOUND, "not_found", "no such page") })
        // Bodies are limited by identify itself, to answer 413 in JSON.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(app.clone(), count))
        .with_state(app)
}

/// Counts every answer and its latency under its route.
async fn count(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |path| path.as_str())
        .to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics
        .answered(&route, response.status().as_u16(), started.elapsed());
    response
}

/// An answer that is not the one asked for: its status, a kind for metrics and scripts,
/// and a message for a person.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            kind,
            message: message.into(),
        }
    }

    fn loading() -> Refusal {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "loading",
            "the model and the index are still loading; try again in a few seconds",
        )
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "kind": self.kind });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

async fn page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        // Everything the page uses is in it or from this server.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, PAGE).into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.engine.get() {
        Some(_) => "ready\n".into_response(),
        None => Refusal::loading().into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// A query string that does not parse, in JSON like every other refusal.
fn bad_query(rejected: QueryRejection, usage: &str) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!(
            "the query string cannot be read ({}); {usage}",
            rejected.body_text()
        ),
    )
}

#[derive(Deserialize)]
struct IdentifyQuery {
    top: Option<usize>,
}

async fn identify(
    State(app): State<Arc<App>>,
    query: std::result::Result<Query<IdentifyQuery>, QueryRejection>,
    request: Request,
) -> Response {
    let answer = match query {
        Ok(Query(query)) => identify_upload(&app, query, request).await,
        Err(rejected) => Err(bad_query(rejected, "?top=N takes a number from 1 to 50")),
    };
    match answer {
        Ok(found) => axum::Json(found).into_response(),
        Err(refusal) => {
            app.metrics.refused(refusal.kind);
            refusal.into_response()
        }
    }
}

async fn identify_upload(
    app: &Arc<App>,
    query: IdentifyQuery,
    request: Request,
) -> std::result::Result<Identification, Refusal> {
    let started = Instant::now();
    let engine = app.engine.get().cloned().ok_or_else(Refusal::loading)?;
    let top = query.top.unwrap_or(app.options.top).clamp(1, MAX_TOP);
    let (name, photo) = read_upload(request, app.options.max_upload).await?;
    check_image_format(&photo)?;

    let deadline = app.options.timeout;
    let remaining = || deadline.saturating_sub(started.elapsed());
    let _counted = InFlight::new(&app.metrics);
    let permit = tokio::time::timeout(remaining(), app.permits.clone().acquire_owned())
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "busy: {} photos are being identified and none finished within {deadline:?}; try again",
                    app.options.max_in_flight,
                ),
            )
        })?
        .expect("the semaphore is never closed");
    let voters = app.options.voters;
    let work = tokio::task::spawn_blocking(move || {
        // The permit is held until the model is done, even if the request has given up.
        let _permit = permit;
        engine.identify(&name, &photo, top, voters)
    });
    let answer = tokio::time::timeout(remaining(), work)
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the photo was not identified within {deadline:?} (the server is overloaded); try again"
                ),
            )
        })?
        .map_err(|_| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the identification failed"))?;
    answer.map_err(|err| match err {
        Error::Unusable { reason, .. } => Refusal::new(
            StatusCode::BAD_REQUEST,
            "unusable",
            format!("the photo cannot be used: {reason}"),
        ),
        other => {
            tracing::error!(error = %other, "identification failed");
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the identification failed: {other}"),
            )
        }
    })
}

/// Counts an identification in flight for as long as it lives.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.in_flight.inc();
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// The photo of a request: its body, or the form field `photo` of a multipart form.
async fn read_upload(
    request: Request,
    max_upload: usize,
) -> std::result::Result<(String, Bytes), Refusal> {
    let kind = media_type(request.headers());
    let multipart = kind == "multipart/form-data";
    let accepted = matches!(
        kind.as_str(),
        "" | "application/octet-stream" | "image/jpeg" | "image/jpg" | "image/png"
    );
    if !multipart && !accepted {
        let message = if kind.starts_with("image/") {
            format!("{kind} photos are not supported: send a JPEG or PNG")
        } else {
            format!(
                "a body of type {kind} is not a photo: send the photo itself (image/jpeg, image/png) or a multipart/form-data form with the field 'photo'"
            )
        };
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_type",
            message,
        ));
    }
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the upload is over the {max_upload}-byte limit (--max-upload); send a smaller photo"
            ),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_upload as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, max_upload)
        .await
        .map_err(|err| {
            let over = std::error::Error::source(&err)
                .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
            if over {
                too_large()
            } else {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the request body could not be read: {err}"),
                )
            }
        })?;
    if !multipart {
        return Ok(("upload".to_string(), bytes));
    }
    let form = Request::from_parts(parts, Body::from(bytes));
    photo_field(form).await
}

async fn photo_field(form: Request) -> std::result::Result<(String, Bytes), Refusal> {
    let bad_form = |why: String| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the form cannot be read ({why}); send the photo in the form field 'photo'"),
        )
    };
    let mut multipart = Multipart::from_request(form, &())
        .await
        .map_err(|err| bad_form(err.body_text()))?;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|err| bad_form(err.body_text()))?
    {
        if field.name() == Some("photo") {
            let name = field.file_name().unwrap_or("upload").to_string();
            let bytes = field
                .bytes()
                .await
                .map_err(|err| bad_form(err.body_text()))?;
            return Ok((name, bytes));
        }
    }
    Err(bad_form("it has no field 'photo'".into()))
}

/// `type/subtype` of the Content-Type header, lower case, without parameters ("" if none).
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// 415 for an image the engine does not decode (GIF, WebP, ...), 400 for what is no image.
fn check_image_format(photo: &[u8]) -> std::result::Result<(), Refusal> {
    if photo.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "not_an_image",
            "the upload is empty: send a photo",
        ));
    }
    match image::guess_format(photo) {
        Ok(image::ImageFormat::Jpeg | image::ImageFormat::Png) => Ok(()),
        Ok(other) => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_type",
            format!(
                "{} photos are not supported: send a JPEG or PNG",
                other
                    .extensions_str()
                    .first()
                    .unwrap_or(&"such")
                    .to_uppercase()
            ),
        )),
        Err(_) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "not_an_image",
            "the upload is not an image: send a JPEG or PNG photo",
        )),
    }
}

#[derive(Deserialize)]
struct PhotoQuery {
    path: Option<String>,
}

/// A thumbnail of a photo of the index, and of nothing else: the path must be, exactly,
/// one of the index's paths, so no other object or file can be read through it.
async fn photo(
    State(app): State<Arc<App>>,
    query: std::result::Result<Query<PhotoQuery>, QueryRejection>,
) -> Response {
    let answer = match query {
        Ok(Query(query)) => thumbnail(&app, query.path).await,
        Err(rejected) => Err(bad_query(rejected, "give ?path=, a path of the index")),
    };
    match answer {
        Ok(jpeg) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            jpeg,
        )
            .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn thumbnail(app: &App, path: Option<String>) -> std::result::Result<Vec<u8>, Refusal> {
    let engine = app.engine.get().cloned().ok_or_else(Refusal::loading)?;
    let path = path.ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "give the photo as ?path=, a path of the index",
        )
    })?;
    let not_in_index = || {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "not_in_index",
            "no photo of the index has this path",
        )
    };
    if !engine.index.contains(&path) {
        return Err(not_in_index());
    }
    let location = Location::parse(&path).map_err(|_| not_in_index())?;
    let bytes = app.storage.get(&location).await.map_err(|err| {
        tracing::warn!(%path, error = %err, "a photo of the index cannot be read");
        match err {
            Error::NotFound { .. } => Refusal::new(
                StatusCode::NOT_FOUND,
                "missing",
                "this photo of the index is no longer in the store",
            ),
            _ => Refusal::new(
                StatusCode::BAD_GATEWAY,
                "storage",
                "the photo cannot be read from the store now; try again",
            ),
        }
    })?;
    let max_pixels = engine.limits.max_pixels;
    tokio::task::spawn_blocking(move || encode_thumbnail(&bytes, max_pixels))
        .await
        .expect("thumbnails do not panic")
}

fn encode_thumbnail(bytes: &[u8], max_pixels: u64) -> std::result::Result<Vec<u8>, Refusal> {
    let unusable = |why: String| {
        Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unusable",
            format!("this photo of the index cannot be decoded: {why}"),
        )
    };
    let rgb = crate::imaging::decode_rgb(bytes, max_pixels, true)
        .map_err(|err| unusable(err.to_string()))?;
    let small = image::DynamicImage::ImageRgb8(rgb).thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE);
    let mut out = Cursor::new(Vec::new());
    small
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .map_err(|err| unusable(err.to_string()))?;
    Ok(out.into_inner())
}
