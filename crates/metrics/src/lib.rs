//! Prometheus metrics for Twill, without an external metrics crate.
//!
//! - [`Registry`] with [`Counter`], [`Gauge`] and [`Histogram`] families,
//!   rendered in the Prometheus text exposition format 0.0.4.
//! - [`HubbleMetrics`]: Hubble's flow metrics (`hubble_flows_processed_total`,
//!   `hubble_drop_total`, `hubble_tcp_flags_total`,
//!   `hubble_port_distribution_total`, `hubble_icmp_total`,
//!   `hubble_policy_verdicts_total`, `hubble_lost_events_total`) with
//!   Hubble's names, labels and label values, fed one [`flow::Flow`] at a time.
//! - [`MetricsServer`]: `GET /metrics` over HTTP/1.1 on one thread.
//!
//! ```no_run
//! use std::sync::Arc;
//! use twill_metrics::{HubbleMetrics, MetricsServer, Registry};
//!
//! let registry = Arc::new(Registry::new());
//! let hubble = HubbleMetrics::new(&registry);
//! let endpoints = registry.gauge("twill_endpoints", "Local endpoints", &[]);
//!
//! let server = MetricsServer::start("0.0.0.0:9965".parse()?, registry.clone(), move |_| {
//!     endpoints.set(&[], 3.0); // sampled right before each scrape
//! })?;
//!
//! # let flow = twill_metrics::flow::Flow::default();
//! hubble.observe(&flow); // for every flow the observer sees
//! hubble.lost(twill_metrics::LOST_PERF_EVENT_RING_BUFFER, 12);
//! # drop(server);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod hubble;
mod registry;
mod server;

pub use hubble::{
    HubbleMetrics, LOST_HUBBLE_RING_BUFFER, LOST_OBSERVER_EVENTS_QUEUE, LOST_PERF_EVENT_RING_BUFFER,
};
pub use registry::{Counter, Gauge, Histogram, Registry, DEFAULT_BUCKETS};
pub use server::{MetricsServer, CONTENT_TYPE, MAX_REQUEST_BYTES, READ_TIMEOUT, WRITE_TIMEOUT};
/// The flow types [`HubbleMetrics`] consumes.
pub use twill_observe_proto::flow;
