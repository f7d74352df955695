//! `twill observe agent-events`: the agent's own events (started,
//! endpoints created, deleted and regenerated, policy changes, addresses
//! learned), printed as `hubble observe agent-events` prints them.

use twill_observe_proto::{
    flow::{agent_event::Notification, AgentEvent, AgentEventType},
    observer::{GetAgentEventsRequest, GetAgentEventsResponse},
};

use super::{
    events::{self, EventsArgs},
    timefmt,
};

pub fn run(args: EventsArgs) -> anyhow::Result<()> {
    let w = args.window()?;
    let request = GetAgentEventsRequest {
        number: w.number,
        first: w.first,
        follow: w.follow,
        since: w.since,
        until: w.until,
    };
    let (json, node) = (args.json(), args.print_node_name);
    events::run(
        &args,
        |mut client| async move { client.get_agent_events(request).await },
        |item| if json { super::json::get_agent_events_response(item) } else { compact(item, node) },
    )
}

fn kind(event: &AgentEvent) -> String {
    AgentEventType::try_from(event.r#type)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| event.r#type.to_string())
}

fn labels(list: &[String]) -> String {
    format!("[{}]", list.join(","))
}

/// One line: `TIME [NODE]: TYPE (details)`.
pub fn compact(item: &GetAgentEventsResponse, node_name: bool) -> String {
    let time = events::line_head(item.time.as_ref(), node_name.then_some(item.node_name.as_str()));
    let Some(event) = &item.agent_event else { return format!("{time}: (empty)") };
    let details = match &event.notification {
        Some(Notification::AgentStart(t)) => format!("start time: {}", timefmt::stamp_milli(t.time.as_ref())),
        Some(Notification::EndpointUpdate(e)) => {
            let mut d = format!("id: {}, namespace: {}, pod name: {}", e.id, e.namespace, e.pod_name);
            if !e.error.is_empty() {
                d.push_str(&format!(", error: {}", e.error));
            }
            d
        }
        Some(Notification::EndpointRegenerate(e)) => {
            let mut d = format!("id: {}, labels: {}", e.id, labels(&e.labels));
            if !e.error.is_empty() {
                d.push_str(&format!(", error: {}", e.error));
            }
            d
        }
        Some(Notification::PolicyUpdate(p)) => {
            format!("labels: {}, revision: {}, count: {}", labels(&p.labels), p.revision, p.rule_count)
        }
        Some(Notification::IpcacheUpdate(i)) => {
            let mut d = format!("cidr: {}, identity: {}", i.cidr, i.identity);
            if let Some(old) = i.old_identity {
                d.push_str(&format!(", old identity: {old}"));
            }
            if !i.host_ip.is_empty() {
                d.push_str(&format!(", host ip: {}", i.host_ip));
            }
            if !i.namespace.is_empty() {
                d.push_str(&format!(", namespace: {}, pod name: {}", i.namespace, i.pod_name));
            }
            d
        }
        Some(Notification::Unknown(u)) => format!("type: {}, notification: {}", u.r#type, u.notification),
        _ => String::new(),
    };
    format!("{time}: {} ({details})", kind(event))
}
