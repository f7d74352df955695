//! The agent's Prometheus endpoint: Hubble's flow metrics (fed by the
//! event reader) and Twill's own, sampled from the agent on each scrape.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Mutex},
};

use twill_metrics::{Counter, Gauge, Histogram, HubbleMetrics, MetricsServer, Registry};

use crate::events::EventHub;

/// Metrics the API server records as it serves.
#[derive(Clone)]
pub struct ApiMetrics {
    pub duration: Histogram,
}

pub struct AgentMetrics {
    pub registry: Arc<Registry>,
    pub hubble: HubbleMetrics,
    pub api: ApiMetrics,
}

impl AgentMetrics {
    pub fn new() -> Self {
        let registry = Arc::new(Registry::new());
        let hubble = HubbleMetrics::new(&registry);
        let api = ApiMetrics {
            duration: registry.histogram(
                "twill_api_request_duration_seconds",
                "Time to serve agent API requests, by operation",
                &["operation"],
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
            ),
        };
        Self { registry, hubble, api }
    }
}

/// Kernel counters only ever grow; Prometheus counters take increments.
struct Deltas(HashMap<Vec<String>, f64>);

impl Deltas {
    fn apply(&mut self, counter: &Counter, labels: &[&str], current: f64) {
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        let last = self.0.insert(key, current).unwrap_or(0.0);
        if current > last {
            counter.inc_by(labels, current - last);
        }
    }
}

struct AgentGauges {
    endpoints: Gauge,
    identities: Gauge,
    policies: Gauge,
    policy_revision: Gauge,
    map_entries: Gauge,
    map_capacity: Gauge,
    map_pressure: Gauge,
    forwarded: Counter,
    dropped: Counter,
    flows_in_ring: Gauge,
}

/// Serves the registry; `sample` reads the agent's state on each scrape
/// (None if it could not), so this module needs no view of the agent.
pub fn serve(
    addr: SocketAddr,
    metrics: &AgentMetrics,
    sample: impl Fn() -> Option<Sample> + Send + Sync + 'static,
    hub: Arc<EventHub>,
    ring: Arc<twill_observe::FlowRing>,
    debug_events: Arc<twill_observe::DebugEvents>,
) -> std::io::Result<MetricsServer> {
    let r = &metrics.registry;
    let g = AgentGauges {
        endpoints: r.gauge("twill_endpoints", "Endpoints on this node", &[]),
        identities: r.gauge(
            "twill_identities",
            "Allocated security identities (reserved ones excluded)",
            &[],
        ),
        policies: r.gauge("twill_policies", "Imported network policies", &[]),
        policy_revision: r.gauge("twill_policy_revision", "Current policy revision", &[]),
        map_entries: r.gauge("twill_bpf_map_entries", "Entries in each eBPF map", &["map"]),
        map_capacity: r.gauge("twill_bpf_map_capacity", "Maximum entries of each eBPF map", &["map"]),
        map_pressure: r.gauge(
            "twill_bpf_map_pressure",
            "Fill ratio of each eBPF map (entries / capacity)",
            &["map"],
        ),
        forwarded: r.counter(
            "twill_forward_count_total",
            "Packets forwarded by the datapath, by direction seen from the endpoint",
            &["direction"],
        ),
        dropped: r.counter(
            "twill_drop_count_total",
            "Packets dropped by the datapath, by reason and direction",
            &["reason", "direction"],
        ),
        flows_in_ring: r.gauge("twill_flows_in_buffer", "Flows kept in the observer's ring buffer", &[]),
    };
    let hubble = metrics.hubble.clone();
    // The server calls the refresher from its one thread; the mutex only
    // satisfies the Fn bound.
    let totals = Mutex::new((Deltas(HashMap::new()), LostTotals::default()));
    MetricsServer::start(addr, metrics.registry.clone(), move |_| {
        let mut totals = totals.lock().unwrap_or_else(|p| p.into_inner());
        let (deltas, lost) = &mut *totals;
        g.flows_in_ring.set(&[], ring.len() as f64);
        lost.report(
            &hubble,
            twill_metrics::LOST_OBSERVER_EVENTS_QUEUE,
            hub.subscriber_lost.load(Ordering::Relaxed),
        );
        // Debug events a `debug-events -f` client fell too far behind for.
        lost.report(&hubble, twill_metrics::LOST_HUBBLE_RING_BUFFER, debug_events.lagged());
        let Some(sample) = sample() else { return };
        g.endpoints.set(&[], sample.endpoints as f64);
        g.identities.set(&[], sample.identities as f64);
        g.policies.set(&[], sample.policies as f64);
        g.policy_revision.set(&[], sample.policy_revision as f64);
        for (map, entries, capacity) in &sample.maps {
            g.map_entries.set(&[map], *entries as f64);
            g.map_capacity.set(&[map], *capacity as f64);
            g.map_pressure.set(&[map], *entries as f64 / *capacity as f64);
        }
        for m in &sample.datapath {
            let direction = if m.direction == twill_abi::METRIC_DIR_INGRESS { "ingress" } else { "egress" };
            if m.reason == 0 {
                deltas.apply(&g.forwarded, &[direction], m.packets as f64);
            } else {
                let reason = twill_abi::drop_reason_text(m.reason);
                deltas.apply(&g.dropped, &[reason, direction], m.packets as f64);
            }
        }
        lost.report(&hubble, twill_metrics::LOST_PERF_EVENT_RING_BUFFER, sample.lost_events);
    })
}

/// Lost-event totals last reported, per source.
#[derive(Default)]
struct LostTotals(HashMap<&'static str, u64>);

impl LostTotals {
    fn report(&mut self, hubble: &HubbleMetrics, source: &'static str, total: u64) {
        let last = self.0.insert(source, total).unwrap_or(0);
        if total > last {
            hubble.lost(source, total - last);
        }
    }
}

/// What one scrape reads from the agent.
pub struct Sample {
    pub endpoints: usize,
    pub identities: usize,
    pub policies: usize,
    pub policy_revision: u64,
    /// (map, entries, capacity)
    pub maps: Vec<(&'static str, usize, usize)>,
    pub datapath: Vec<twill_datapath::MetricsEntry>,
    pub lost_events: u64,
}
