//! Agent events: what the agent itself did (started, endpoints created,
//! deleted and regenerated, policy changed, addresses learned), kept in a
//! bounded ring for `GetAgentEvents` and streamed to followers, as
//! Hubble's agent-event observer does.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::sync::broadcast;
use twill_observe_proto::{
    flow::{self, agent_event::Notification, AgentEvent, AgentEventType},
    prost_types::Timestamp,
};

/// Events kept for clients that ask for history.
pub const AGENT_EVENTS_CAPACITY: usize = 4096;
const FOLLOW_BUFFER: usize = 1024;

/// One stored event and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    pub seq: u64,
    pub time: Timestamp,
    pub event: AgentEvent,
}

pub struct AgentEvents {
    inner: Mutex<(VecDeque<Stamped>, u64)>,
    capacity: usize,
    tx: broadcast::Sender<Stamped>,
}

impl Default for AgentEvents {
    fn default() -> Self {
        Self::new(AGENT_EVENTS_CAPACITY)
    }
}

impl AgentEvents {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(FOLLOW_BUFFER);
        Self {
            inner: Mutex::new((VecDeque::with_capacity(capacity.min(1024)), 0)),
            capacity: capacity.max(1),
            tx,
        }
    }

    pub fn push(&self, event: AgentEvent) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.1 += 1;
        let stamped = Stamped { seq: inner.1, time: now(), event };
        if inner.0.len() == self.capacity {
            inner.0.pop_front();
        }
        inner.0.push_back(stamped.clone());
        // Under the lock, so followers see events in ring order.
        let _ = self.tx.send(stamped);
    }

    /// Every stored event, oldest first, and a receiver for the ones after.
    pub fn snapshot_and_follow(&self) -> (Vec<Stamped>, broadcast::Receiver<Stamped>) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.0.iter().cloned().collect(), self.tx.subscribe())
    }
}

fn now() -> Timestamp {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn event(kind: AgentEventType, notification: Notification) -> AgentEvent {
    AgentEvent { r#type: kind as i32, notification: Some(notification) }
}

/// The events the agent emits, built the way Hubble fills them.
pub fn agent_started() -> AgentEvent {
    event(
        AgentEventType::AgentStarted,
        Notification::AgentStart(flow::TimeNotification { time: Some(now()) }),
    )
}

pub fn endpoint_created(id: u64, labels: Vec<String>, namespace: &str, pod: &str) -> AgentEvent {
    endpoint_update(AgentEventType::EndpointCreated, id, labels, namespace, pod)
}

pub fn endpoint_deleted(id: u64, labels: Vec<String>, namespace: &str, pod: &str) -> AgentEvent {
    endpoint_update(AgentEventType::EndpointDeleted, id, labels, namespace, pod)
}

fn endpoint_update(
    kind: AgentEventType,
    id: u64,
    labels: Vec<String>,
    namespace: &str,
    pod: &str,
) -> AgentEvent {
    event(
        kind,
        Notification::EndpointUpdate(flow::EndpointUpdateNotification {
            id,
            labels,
            error: String::new(),
            pod_name: pod.into(),
            namespace: namespace.into(),
        }),
    )
}

/// An endpoint's policy was recomputed: success, or the error.
pub fn endpoint_regenerated(id: u64, labels: Vec<String>, error: Option<String>) -> AgentEvent {
    let kind = if error.is_some() {
        AgentEventType::EndpointRegenerateFailure
    } else {
        AgentEventType::EndpointRegenerateSuccess
    };
    event(
        kind,
        Notification::EndpointRegenerate(flow::EndpointRegenNotification {
            id,
            labels,
            error: error.unwrap_or_default(),
        }),
    )
}

pub fn policy_updated(labels: Vec<String>, revision: u64, rules: usize) -> AgentEvent {
    policy(AgentEventType::PolicyUpdated, labels, revision, rules)
}

pub fn policy_deleted(labels: Vec<String>, revision: u64, rules: usize) -> AgentEvent {
    policy(AgentEventType::PolicyDeleted, labels, revision, rules)
}

fn policy(kind: AgentEventType, labels: Vec<String>, revision: u64, rules: usize) -> AgentEvent {
    event(
        kind,
        Notification::PolicyUpdate(flow::PolicyUpdateNotification {
            labels,
            revision,
            rule_count: rules as i64,
        }),
    )
}

/// An address the ipcache learned (or changed) or forgot: remote
/// endpoints in cluster mode, with the node hosting them.
pub fn ipcache_upserted(
    cidr: String,
    identity: u32,
    old_identity: Option<u32>,
    host_ip: String,
    namespace: &str,
    pod: &str,
) -> AgentEvent {
    event(
        AgentEventType::IpcacheUpserted,
        Notification::IpcacheUpdate(flow::IpCacheNotification {
            cidr,
            identity,
            old_identity,
            host_ip,
            namespace: namespace.into(),
            pod_name: pod.into(),
            ..Default::default()
        }),
    )
}

pub fn ipcache_deleted(
    cidr: String,
    identity: u32,
    host_ip: String,
    namespace: &str,
    pod: &str,
) -> AgentEvent {
    event(
        AgentEventType::IpcacheDeleted,
        Notification::IpcacheUpdate(flow::IpCacheNotification {
            cidr,
            identity,
            host_ip,
            namespace: namespace.into(),
            pod_name: pod.into(),
            ..Default::default()
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_and_followers_get_what_comes_after() {
        let ring = AgentEvents::new(2);
        ring.push(agent_started());
        let (before, mut live) = ring.snapshot_and_follow();
        assert_eq!(before.len(), 1);
        ring.push(endpoint_created(1, vec![], "default", "a"));
        ring.push(endpoint_deleted(1, vec![], "default", "a"));
        let (all, _) = ring.snapshot_and_follow();
        assert_eq!(all.len(), 2, "bounded");
        assert_eq!(all[0].event.r#type, AgentEventType::EndpointCreated as i32);
        assert_eq!(live.try_recv().unwrap().seq, 2);
        assert_eq!(live.try_recv().unwrap().seq, 3);
    }
}
