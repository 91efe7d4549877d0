//! `--metrics-listen`: the producer's metrics for Prometheus. The library hands its metrics to
//! the `metrics` crate (see `kinesis_producer::metrics`); this installs the Prometheus exporter
//! as that crate's recorder, serving the exposition format over HTTP.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

/// The flag `put`, `tail` and `bench` take.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Serve the producer's metrics for Prometheus on this address (e.g. 127.0.0.1:9464): any
    /// path answers with the text exposition format. See docs/metrics.md for the names.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Starts serving, if asked: call it before the producer starts, inside the command's
    /// tokio runtime.
    pub fn install(&self) -> Result<(), String> {
        let Some(addr) = self.metrics_listen else {
            return Ok(());
        };
        PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
        tracing::info!("serving the producer's metrics for Prometheus at http://{addr}/metrics");
        Ok(())
    }
}
