//! The node's metrics, served at `GET /metrics` in the Prometheus text
//! format (OpenMetrics, by `prometheus-client`).
//!
//! Owns: the metrics and their registry. The engine task updates them (the
//! counters as things happen, the gauges on its one-second sweep), the
//! admin server encodes them on a scrape; both share one `Arc<Metrics>`,
//! whose metrics are atomics. Invariant: every metric is registered once,
//! here, with its help text, so what `/metrics` lists is this file.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    /// Transactions applied since the process started, in every context (a
    /// context's genesis and re-executions not counted).
    pub applied: Counter,
    /// Transactions received and not yet applicable (missing parents).
    pub pending: Gauge,
    /// Contexts held.
    pub contexts: Gauge,
    /// Members connected now.
    pub peers_connected: Gauge,
    /// Strangers connected now.
    pub strangers: Gauge,
    /// Peer-message bytes received and sent.
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    /// One per commit to the store, by its duration.
    pub commit_seconds: Histogram,
    /// 1 while the disk is full (the node stores nothing).
    pub disk_full: Gauge,
    /// Times the disk turned full.
    pub disk_full_events: Counter,
    /// Bytes left on the data directory's file system.
    pub disk_available_bytes: Gauge<u64, AtomicU64>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ctx");
        let r = &mut registry;
        let applied = register(
            r,
            "applied",
            "Transactions applied, in every context",
            Counter::default(),
        );
        let pending = register(
            r,
            "pending",
            "Transactions received that wait for their parents",
            Gauge::default(),
        );
        let contexts = register(r, "contexts", "Contexts this node holds", Gauge::default());
        let peers_connected = register(
            r,
            "peers_connected",
            "Members connected now",
            Gauge::default(),
        );
        let strangers = register(
            r,
            "strangers",
            "Strangers connected now (each closed within seconds)",
            Gauge::default(),
        );
        let bytes_received = register(
            r,
            "peer_received_bytes",
            "Bytes of peer messages received",
            Counter::default(),
        );
        let bytes_sent = register(
            r,
            "peer_sent_bytes",
            "Bytes of peer messages handed to connections",
            Counter::default(),
        );
        // 100 µs to about 3 s.
        let commit_seconds = register(
            r,
            "commit_seconds",
            "Duration of each commit to the store (fsync included)",
            Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
        );
        let disk_full = register(
            r,
            "disk_full",
            "1 while the disk is full and the node stores nothing",
            Gauge::default(),
        );
        let disk_full_events = register(
            r,
            "disk_full_events",
            "Times the disk turned full",
            Counter::default(),
        );
        let disk_available_bytes = register(
            r,
            "disk_available_bytes",
            "Bytes left on the data directory's file system",
            Gauge::<u64, AtomicU64>::default(),
        );
        Metrics {
            registry,
            applied,
            pending,
            contexts,
            peers_connected,
            strangers,
            bytes_received,
            bytes_sent,
            commit_seconds,
            disk_full,
            disk_full_events,
            disk_available_bytes,
        }
    }

    /// The metrics in the text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String does not fail");
        text
    }
}

/// Registers `metric` under `name` with its help, and returns it (metrics
/// are handles: the registry keeps a clone of the same atomics).
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_listed_with_its_help() {
        let metrics = Metrics::new();
        metrics.applied.inc_by(3);
        metrics.commit_seconds.observe(0.002);
        let text = metrics.encode();
        assert!(
            text.contains("# HELP ctx_applied Transactions applied"),
            "{text}"
        );
        assert!(text.contains("ctx_applied_total 3"), "{text}");
        assert!(text.contains("ctx_commit_seconds_count 1"), "{text}");
        assert!(text.contains("ctx_disk_full 0"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
