//! The newest flows (as many as a Hubble server keeps by default) and the
//! counters the status bar shows. Owned behind one mutex by the server;
//! the follow task is its only writer.

use std::{
    collections::{BTreeSet, VecDeque},
    time::Instant,
};

use serde::Serialize;
use twill_observe_proto::flow::Flow;

use crate::{filter::Filter, map::ServiceMap, row::Row};

/// Hubble's default ring size, and what `twill ui` asks the server for.
pub const CAPACITY: usize = 4095;
/// Flows-per-second is averaged over this many seconds.
const RATE_WINDOW_SECS: u64 = 5;

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Status {
    /// `connecting`, `connected` or `disconnected`.
    pub state: &'static str,
    pub server: String,
    pub error: String,
    pub nodes: Vec<String>,
    pub flows_per_second: f64,
    pub lost_events: u64,
    pub flows_seen: u64,
    pub stored: usize,
    pub namespaces: Vec<String>,
}

pub struct Store {
    flows: VecDeque<(Row, Flow)>,
    seq: u64,
    started: Instant,
    /// (second since start, flows in that second), newest last.
    buckets: VecDeque<(u64, u64)>,
    status: Status,
}

impl Store {
    pub fn new(server: &str) -> Store {
        Store {
            flows: VecDeque::with_capacity(CAPACITY),
            seq: 0,
            started: Instant::now(),
            buckets: VecDeque::new(),
            status: Status { state: "connecting", server: server.into(), ..Default::default() },
        }
    }

    pub fn push(&mut self, flow: Flow) {
        self.push_at(flow, self.started.elapsed().as_secs())
    }

    fn push_at(&mut self, flow: Flow, sec: u64) {
        self.seq += 1;
        if self.flows.len() == CAPACITY {
            self.flows.pop_front();
        }
        self.flows.push_back((Row::new(self.seq, &flow), flow));
        self.status.flows_seen += 1;
        match self.buckets.back_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => self.buckets.push_back((sec, 1)),
        }
        while self.buckets.front().is_some_and(|(s, _)| s + RATE_WINDOW_SECS < sec) {
            self.buckets.pop_front();
        }
    }

    pub fn lost(&mut self, n: u64) {
        self.status.lost_events += n;
    }

    pub fn set_state(&mut self, state: &'static str, error: String) {
        self.status.state = state;
        self.status.error = error;
    }

    pub fn set_nodes(&mut self, nodes: Vec<String>) {
        self.status.nodes = nodes;
    }

    pub fn status(&self) -> Status {
        let now = self.started.elapsed().as_secs();
        let recent: u64 =
            self.buckets.iter().filter(|(s, _)| s + RATE_WINDOW_SECS > now && *s < now).map(|(_, n)| n).sum();
        let window = RATE_WINDOW_SECS.min(now.max(1));
        let namespaces: BTreeSet<&str> = self
            .flows
            .iter()
            .flat_map(|(r, _)| [r.source.namespace.as_str(), r.destination.namespace.as_str()])
            .filter(|n| !n.is_empty())
            .collect();
        Status {
            flows_per_second: recent as f64 / window as f64,
            stored: self.flows.len(),
            namespaces: namespaces.into_iter().map(str::to_string).collect(),
            ..self.status.clone()
        }
    }

    /// Matching rows, newest first, at most `filter.limit`, plus the
    /// newest sequence number stored (the next poll's `after`).
    pub fn rows(&self, filter: &Filter) -> (Vec<Row>, u64, usize) {
        let mut matched = 0;
        let mut out = Vec::new();
        for (r, _) in self.flows.iter().rev() {
            if r.seq <= filter.after {
                break;
            }
            if filter.matches(r) {
                matched += 1;
                if out.len() < filter.limit {
                    out.push(r.clone());
                }
            }
        }
        (out, self.seq, matched)
    }

    pub fn map(&self, namespace: Option<&str>) -> ServiceMap {
        crate::map::build(self.flows.iter().map(|(_, f)| f), namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_capacity_flows_and_counts_the_rate() {
        let mut s = Store::new("x");
        for i in 0..(CAPACITY as u64 + 10) {
            s.push_at(Flow::default(), i / 1000);
        }
        let (rows, last, matched) = s.rows(&Filter { limit: 3, ..Default::default() });
        assert_eq!(last, CAPACITY as u64 + 10);
        assert_eq!(matched, CAPACITY);
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![last, last - 1, last - 2]);
        let (rows, _, _) = s.rows(&Filter { limit: 100, after: last - 2, ..Default::default() });
        assert_eq!(rows.len(), 2);
        assert_eq!(s.status().stored, CAPACITY);
        assert_eq!(s.status().flows_seen, CAPACITY as u64 + 10);
    }
}
