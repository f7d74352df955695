//! `twill observe debug-events`: the datapath's debug messages (with the
//! agent's `--debug-verbose datapath` or `twill config set
//! debug-datapath=true`), printed as `hubble observe debug-events` prints
//! them.

use twill_observe_proto::{
    flow::{self, DebugEventType},
    observer::{GetDebugEventsRequest, GetDebugEventsResponse},
};

use super::events::{self, EventsArgs};

pub fn run(args: EventsArgs) -> anyhow::Result<()> {
    let w = args.window()?;
    let request = GetDebugEventsRequest {
        number: w.number,
        first: w.first,
        follow: w.follow,
        since: w.since,
        until: w.until,
    };
    let (json, node) = (args.json(), args.print_node_name);
    events::run(
        &args,
        |mut client| async move { client.get_debug_events(request).await },
        |item| if json { super::json::get_debug_events_response(item) } else { compact(item, node) },
    )
}

/// The source as hubble's short form: `ns/pod (ID: n)` for a pod, the
/// reserved label for a reserved endpoint, else `ID: n`; `N/A` for none.
fn endpoint_short(ep: Option<&flow::Endpoint>) -> String {
    let Some(ep) = ep else { return "N/A".into() };
    let id = format!("ID: {}", ep.id);
    if !ep.namespace.is_empty() && !ep.pod_name.is_empty() {
        format!("{}/{} ({id})", ep.namespace, ep.pod_name)
    } else if ep.labels.len() == 1 && ep.labels[0].starts_with("reserved:") {
        format!("{} ({id})", ep.labels[0])
    } else {
        id
    }
}

fn kind(t: i32) -> String {
    DebugEventType::try_from(t).map(|t| t.as_str_name().to_string()).unwrap_or_else(|_| t.to_string())
}

/// One line: `TIME [NODE]: SOURCE TYPE MARK: 0xHASH CPU: NN (MESSAGE)`.
pub fn compact(item: &GetDebugEventsResponse, node_name: bool) -> String {
    let time = events::line_head(item.time.as_ref(), node_name.then_some(item.node_name.as_str()));
    let Some(e) = &item.debug_event else { return format!("{time}: (empty)") };
    let mark = e.hash.map(|h| format!("{h:#x}")).unwrap_or_else(|| "N/A".into());
    let cpu = e.cpu.map(|c| format!("{c:02}")).unwrap_or_else(|| "N/A".into());
    format!(
        "{time}: {} {} MARK: {mark} CPU: {cpu} ({})",
        endpoint_short(e.source.as_ref()),
        kind(e.r#type),
        e.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use twill_observe_proto::prost_types::Timestamp;

    fn response(
        source: Option<flow::Endpoint>,
        hash: Option<u32>,
        cpu: Option<i32>,
    ) -> GetDebugEventsResponse {
        GetDebugEventsResponse {
            debug_event: Some(flow::DebugEvent {
                r#type: DebugEventType::DbgCtVerdict as i32,
                source,
                hash,
                cpu,
                message: "CT verdict: New, revnat=0".into(),
                ..Default::default()
            }),
            node_name: "n1".into(),
            time: Some(Timestamp { seconds: 1_700_000_000, nanos: 123_000_000 }),
        }
    }

    #[test]
    fn compact_lines_read_as_hubble_s() {
        let pod = flow::Endpoint {
            id: 7,
            namespace: "default".into(),
            pod_name: "client".into(),
            ..Default::default()
        };
        let line = compact(&response(Some(pod), Some(0x1f), Some(1)), false);
        assert!(
            line.ends_with(
                ": default/client (ID: 7) DBG_CT_VERDICT MARK: 0x1f CPU: 01 (CT verdict: New, revnat=0)"
            ),
            "{line}"
        );
        let line = compact(&response(None, None, None), false);
        assert!(
            line.ends_with(": N/A DBG_CT_VERDICT MARK: N/A CPU: N/A (CT verdict: New, revnat=0)"),
            "{line}"
        );
        let host = flow::Endpoint { id: 3, labels: vec!["reserved:host".into()], ..Default::default() };
        let line = compact(&response(Some(host), Some(0), Some(12)), true);
        assert!(line.contains(" [n1]: reserved:host (ID: 3) DBG_CT_VERDICT MARK: 0x0 CPU: 12 ("), "{line}");
        let bare = flow::Endpoint { id: 9, ..Default::default() };
        assert!(compact(&response(Some(bare), Some(0), Some(0)), false).contains(": ID: 9 DBG_CT_VERDICT"));
    }

    #[test]
    fn json_lines_keep_zero_wrappers() {
        let line = crate::observe::json::get_debug_events_response(&response(None, Some(0), Some(0)));
        assert!(line.starts_with(r#"{"debug_event":{"type":"DBG_CT_VERDICT","hash":0,"message":"#), "{line}");
        assert!(line.contains(r#","cpu":0},"node_name":"n1","time":"#), "{line}");
    }
}
