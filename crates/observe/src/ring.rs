//! The flow ring: the last N flows in memory, and a broadcast of new ones
//! for followers. Bounded both ways: the ring overwrites the oldest flow,
//! and a follower that falls behind the broadcast loses flows (reported to
//! it as a LostEvent) rather than holding memory.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;
use twill_observe_proto::{flow::Flow, prost::Message};

/// Hubble's default ring size.
pub const DEFAULT_CAPACITY: usize = 4095;
/// How far a follower may fall behind before it loses flows.
const FOLLOW_BUFFER: usize = 8192;

/// One stored flow, protobuf-encoded. A decoded `Flow` is 1,392 bytes of
/// struct (mostly empty L7 and overlay fields) plus its strings, about
/// 2 KB a flow, 8 MiB for a full default ring; encoded it is about a
/// fifth of that. Readers decode the few flows they look at.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Position in the stream of all flows ever stored, from 1.
    pub seq: u64,
    encoded: Arc<[u8]>,
}

impl Stored {
    pub fn flow(&self) -> Flow {
        // Only push() makes these, from a Flow it encoded.
        Flow::decode(&self.encoded[..]).expect("the ring decodes what it encoded")
    }

    /// Bytes this flow takes in the ring, encoded.
    pub fn encoded_len(&self) -> usize {
        self.encoded.len()
    }
}

pub struct FlowRing {
    inner: Mutex<Inner>,
    capacity: usize,
    tx: broadcast::Sender<Stored>,
}

struct Inner {
    flows: VecDeque<Stored>,
    seen: u64,
}

impl FlowRing {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(FOLLOW_BUFFER);
        Self { inner: Mutex::new(Inner { flows: VecDeque::with_capacity(capacity), seen: 0 }), capacity, tx }
    }

    pub fn push(&self, flow: Flow) {
        let mut inner = self.inner.lock().expect("ring lock");
        inner.seen += 1;
        let stored = Stored { seq: inner.seen, encoded: flow.encode_to_vec().into() };
        if inner.flows.len() == self.capacity {
            inner.flows.pop_front();
        }
        inner.flows.push_back(stored.clone());
        // Sent under the lock so followers see flows in ring order.
        let _ = self.tx.send(stored);
    }

    /// The flows in the ring, oldest first, and a receiver for every flow
    /// stored after them (no gap, no duplicate).
    pub fn snapshot_and_follow(&self) -> (Vec<Stored>, broadcast::Receiver<Stored>) {
        let inner = self.inner.lock().expect("ring lock");
        (inner.flows.iter().cloned().collect(), self.tx.subscribe())
    }

    pub fn snapshot(&self) -> Vec<Stored> {
        self.inner.lock().expect("ring lock").flows.iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("ring lock").flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Flows ever stored.
    pub fn seen(&self) -> u64 {
        self.inner.lock().expect("ring lock").seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(n: u64) -> Flow {
        Flow { uuid: n.to_string(), ..Default::default() }
    }

    #[test]
    fn keeps_the_newest_capacity_flows() {
        let ring = FlowRing::new(3);
        for n in 1..=5 {
            ring.push(flow(n));
        }
        let uuids: Vec<String> = ring.snapshot().iter().map(|s| s.flow().uuid).collect();
        assert_eq!(uuids, ["3", "4", "5"]);
        assert_eq!((ring.len(), ring.seen()), (3, 5));
    }

    #[test]
    fn followers_get_what_comes_after_the_snapshot() {
        let ring = FlowRing::new(10);
        ring.push(flow(1));
        let (history, mut rx) = ring.snapshot_and_follow();
        ring.push(flow(2));
        assert_eq!(history.len(), 1);
        assert_eq!(rx.try_recv().unwrap().flow().uuid, "2");
    }
}
