//! Prometheus metrics of the frontend (the `prometheus-client` crate, OpenMetrics text), on
//! their own plain-HTTP listener at a local address (`metrics.listen`), never on the EST
//! port. Every label takes values from a bounded set: route labels from the config, the
//! three enrolment operations, HTTP status codes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnrolmentLabels {
    /// The route's label (`default` for the route without one).
    pub label: String,
    pub operation: String,
    /// The HTTP status answered.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `requests` (the per-address rate), `logins` (failure lockout) or `busy` (every
    /// password verification slot taken).
    pub kind: String,
}

type LatencyFamily = Family<OperationLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    enrolments: Family<EnrolmentLabels, Counter>,
    latency: LatencyFamily,
    auth_failures: Counter,
    limited: Family<LimitLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hsm_est_frontend");
        let enrolments = Family::<EnrolmentLabels, Counter>::default();
        registry.register(
            "enrolments",
            "Enrolment requests (bootstrap, simpleenroll, simplereenroll) by label, \
             operation and HTTP status",
            enrolments.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_seconds",
            "Time to answer an EST request, by operation",
            latency.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "HTTP Basic logins refused for wrong credentials",
            auth_failures.clone(),
        );
        let limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limited",
            "Requests turned away by a limit (requests, logins, busy)",
            limited.clone(),
        );
        Metrics {
            registry,
            enrolments,
            latency,
            auth_failures,
            limited,
        }
    }
}

impl Metrics {
    pub fn enrolment(&self, label: &str, operation: &str, status: StatusCode) {
        self.enrolments
            .get_or_create(&EnrolmentLabels {
                label: label.to_string(),
                operation: operation.to_string(),
                result: status.as_u16().to_string(),
            })
            .inc();
    }

    pub fn latency(&self, operation: &str, took: Duration) {
        self.latency
            .get_or_create(&OperationLabels {
                operation: operation.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn auth_failure(&self) {
        self.auth_failures.inc();
    }

    pub fn limited(&self, kind: &str) {
        self.limited
            .get_or_create(&LimitLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` on `addr` until the process ends. Plain HTTP/1.1 on a local
/// address: it shows counts, never request data.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<(), String> {
    crate::plain::serve(
        addr,
        "metrics",
        None,
        move |req: crate::plain::PlainRequest| {
            let metrics = Arc::clone(&metrics);
            async move {
                if req.path != "/metrics" {
                    return crate::plain::not_found();
                }
                let mut r = Response::new(Full::new(Bytes::from(metrics.encode())));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                r
            }
        },
    )
    .await
}
