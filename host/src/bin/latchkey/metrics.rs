//! `--metrics-addr`: Prometheus' text format at `/metrics`, by `metrics-exporter-prometheus`.

use std::net::SocketAddr;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusBuilder;

/// Histogram buckets, in seconds: from a memory-store call (tens of µs) to a long wait.
const BUCKETS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0, 60.0, 300.0,
];

/// Records the host's metrics and serves them on `addr` for as long as the process lives.
pub fn listen(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&BUCKETS)
        .context("metrics buckets")?
        .install()
        .with_context(|| format!("cannot serve metrics on {addr}"))
}
