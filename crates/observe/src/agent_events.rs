//! Agent events: what the agent itself did (started, endpoints created,
//! deleted and regenerated, policy changed, addresses learned), kept in a
//! bounded ring for `GetAgentEvents` and streamed to followers, as
//! Hubble's agent-event observer does.

use twill_observe_proto::flow::{self, agent_event::Notification, AgentEvent, AgentEventType};

use crate::event_ring::{now, EventRing};

/// Events kept for clients that ask for history.
pub const AGENT_EVENTS_CAPACITY: usize = 4096;

pub type AgentEvents = EventRing<AgentEvent>;

impl Default for AgentEvents {
    fn default() -> Self {
        Self::new(AGENT_EVENTS_CAPACITY)
    }
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
    fn endpoint_events_carry_the_endpoint() {
        let e = endpoint_created(7, vec!["k8s:app=a".into()], "default", "a");
        assert_eq!(e.r#type, AgentEventType::EndpointCreated as i32);
        let Some(Notification::EndpointUpdate(u)) = e.notification else { panic!("{e:?}") };
        assert_eq!((u.id, u.namespace.as_str(), u.pod_name.as_str()), (7, "default", "a"));
    }
}
