//! Prometheus metrics: the recorder, the `/metrics` text and the HTTP latency middleware.
//!
//! Names: `voicechat_ws_connected` (open sockets), `voicechat_rooms_active` and
//! `voicechat_participants` (calls in progress), `voicechat_logins_total{result}`,
//! `voicechat_http_request_duration_seconds{method,route,status}`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Request duration buckets, in seconds: from 1 ms to 10 s.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The process-wide recorder; installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("voicechat_http_request_duration_seconds".into()),
                BUCKETS,
            )
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

/// Records how long each request took, labelled by its route pattern (not the raw path,
/// which would make one series per group id).
pub async fn track_http(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "other".to_owned());
    let res = next.run(req).await;
    metrics::histogram!(
        "voicechat_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => res.status().as_u16().to_string(),
    )
    .record(start.elapsed().as_secs_f64());
    res
}
