//! What `GET /metrics` tells Prometheus: requests by route and status, their latency, and
//! refused identifications by kind.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    route: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

type Latency = Family<Route, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteCode, Counter>,
    latency: Latency,
    errors: Family<Kind, Counter>,
    pub in_flight: Gauge,
    pub index_photos: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub ready: Gauge<u64, AtomicU64>,
}

/// 1 ms to about 16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fruitpipe");
        let requests = Family::<RouteCode, Counter>::default();
        let latency: Latency = Family::new_with_constructor(latency_histogram);
        let errors = Family::<Kind, Counter>::default();
        let in_flight = Gauge::default();
        let index_photos = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        let ready = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status code",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            latency.clone(),
        );
        registry.register(
            "identify_errors",
            "Photos that were not identified, by kind (not_an_image, unsupported_type, too_large, unusable, busy, timeout, loading, internal)",
            errors.clone(),
        );
        registry.register(
            "identify_in_flight",
            "Identifications being answered or waiting for the model",
            in_flight.clone(),
        );
        registry.register(
            "index_photos",
            "Photos in the loaded index",
            index_photos.clone(),
        );
        registry.register(
            "ready",
            "1 once the model and the index are loaded",
            ready.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            errors,
            in_flight,
            index_photos,
            ready,
        }
    }

    pub fn answered(&self, route: &str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RouteCode {
                route: route.to_string(),
                code,
            })
            .inc();
        self.latency
            .get_or_create(&Route {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn refused(&self, kind: &str) {
        self.errors
            .get_or_create(&Kind {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition, which Prometheus reads.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
