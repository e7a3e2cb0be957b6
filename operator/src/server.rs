//! The operator's HTTP endpoints: `/metrics`, `/healthz` (alive) and `/readyz` (its cache
//! of FruitPipelines is filled).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;

use crate::metrics::Metrics;

fn respond(path: &str, metrics: &Metrics, ready: &AtomicBool) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/metrics" => (StatusCode::OK, metrics.render()),
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if ready.load(Ordering::SeqCst) => (StatusCode::OK, "ready\n".to_string()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "cache not filled yet\n".to_string(),
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let content_type = if path == "/metrics" {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// Serves until the process ends.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    loop {
        let (socket, _) = listener.accept().await?;
        let (metrics, ready) = (Arc::clone(&metrics), Arc::clone(&ready));
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let response = respond(request.uri().path(), &metrics, &ready);
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn get(path: &str, ready: bool) -> (StatusCode, String) {
        let response = respond(path, &Metrics::default(), &AtomicBool::new(ready));
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn health_is_always_ok_and_readiness_waits_for_the_cache() {
        assert_eq!(get("/healthz", false).await.0, StatusCode::OK);
        assert_eq!(
            get("/readyz", false).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get("/readyz", true).await.0, StatusCode::OK);
        assert_eq!(get("/nowhere", true).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn metrics_are_served_in_prometheus_text_format() {
        let (status, body) = get("/metrics", true).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("# TYPE fruitpipe_operator_reconciles counter"),
            "{body}"
        );
    }
}
