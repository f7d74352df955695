//! Datapath debug messages to Hubble's `DebugEvent`s: the subtype and
//! arguments as the datapath sent them, the source endpoint as flows name
//! endpoints, and the message text Cilium's monitor renders, so `hubble
//! observe debug-events` reads as it does on Cilium. Kept in a bounded
//! ring for `GetDebugEvents`.

use std::net::Ipv4Addr;

use twill_abi::DebugEvent;
use twill_numbers::{
    ct_state_text, DBG_CT_CREATED4, DBG_CT_LOOKUP4_1, DBG_CT_LOOKUP4_2, DBG_CT_MATCH, DBG_CT_VERDICT,
    DBG_DECAP, DBG_ENCAP, DBG_GENERIC, DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS, DBG_LB4_LOOKUP_FRONTEND,
    DBG_LOCAL_DELIVERY, DBG_LXC_FOUND, DBG_POLICY_DENIED, DBG_TO_STACK,
};
use twill_observe_proto::flow;

use crate::{event_ring::EventRing, Directory};

/// Debug events kept for clients that ask for history: a packet makes
/// several, so more than agent events.
pub const DEBUG_EVENTS_CAPACITY: usize = 16384;

pub type DebugEvents = EventRing<flow::DebugEvent>;

impl Default for DebugEvents {
    fn default() -> Self {
        Self::new(DEBUG_EVENTS_CAPACITY)
    }
}

/// An address argument: the datapath passes it as it travels (network
/// byte order) in a native u32.
fn ip4(arg: u32) -> Ipv4Addr {
    Ipv4Addr::from(arg.to_ne_bytes())
}

/// A 16-bit argument the datapath passes in network byte order.
fn ntohs(arg: u32) -> u16 {
    u16::from_be(arg as u16)
}

/// `revnat=N`, from the low half of an argument.
fn revnat(arg: u32) -> String {
    format!("revnat={}", ntohs(arg & 0xffff))
}

/// The text Cilium's monitor prints for a debug message. `ifname` names a
/// device by index, when it is known.
pub fn message(e: &DebugEvent, ifname: impl Fn(u32) -> Option<String>) -> String {
    let (a1, a2, a3) = (e.arg1, e.arg2, e.arg3);
    match e.subtype {
        DBG_GENERIC => format!("No message, arg1={a1} ({a1:#x}) arg2={a2} ({a2:#x})"),
        DBG_LOCAL_DELIVERY => format!("Attempting local delivery for container id {a1} from seclabel {a2}"),
        DBG_ENCAP => format!("Encapsulating to node {a1} ({a1:#x}) from seclabel {a2}"),
        DBG_LXC_FOUND => format!(
            "Local container found ifindex {} seclabel {}",
            ifname(a1).unwrap_or_else(|| a1.to_string()),
            ntohs(a2)
        ),
        DBG_POLICY_DENIED => format!("Policy evaluation would deny packet from {a1} to {a2}"),
        DBG_CT_MATCH => format!("CT entry found lifetime={a1}, {}", revnat(a2)),
        DBG_CT_VERDICT => {
            let state = match ct_state_text(a1) {
                Some(text) => text.to_string(),
                None => twill_abi::drop_reason_text(a1).to_string(),
            };
            format!("CT verdict: {state}, {}", revnat(a2))
        }
        DBG_DECAP => format!("Tunnel decap: id={a1} flowlabel={a2:x}"),
        DBG_TO_STACK => format!("Going to the stack, policy-skip={a1}"),
        DBG_LB4_LOOKUP_FRONTEND => {
            format!("Frontend service lookup, addr={} key.dport={}", ip4(a1), ntohs(a2))
        }
        DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS => {
            format!("Service backend slot lookup result: target={} port={}", ip4(a1), ntohs(a2))
        }
        DBG_CT_LOOKUP4_1 => {
            format!("Conntrack lookup 1/2: src={}:{} dst={}:{}", ip4(a1), a3 & 0xffff, ip4(a2), a3 >> 16)
        }
        DBG_CT_LOOKUP4_2 => format!("Conntrack lookup 2/2: nexthdr={} flags={}", a1 >> 8, a1 & 0xff),
        DBG_CT_CREATED4 => format!(
            "Conntrack create: proxy-port={} revnat={} src-identity={a2} lb={}",
            a1 >> 16,
            ntohs(a1 & 0xffff),
            ip4(a3)
        ),
        other => format!("Unknown message type={other} arg1={a1} arg2={a2}"),
    }
}

/// The source endpoint as Hubble's debug parser fills it: none for 0, the
/// endpoint's identity, namespace, labels and pod name when it is known,
/// else only its ID.
fn source(id: u16, dir: &Directory) -> Option<flow::Endpoint> {
    if id == 0 {
        return None;
    }
    let id = u32::from(id);
    Some(match dir.endpoints.get(&id) {
        Some(ep) => flow::Endpoint {
            id,
            identity: ep.identity,
            namespace: ep.namespace.clone(),
            labels: dir.identities.get(&ep.identity).cloned().unwrap_or_default(),
            pod_name: ep.name.clone(),
            ..Default::default()
        },
        None => flow::Endpoint { id, ..Default::default() },
    })
}

pub fn decode(e: &DebugEvent, dir: &Directory) -> flow::DebugEvent {
    // Hubble's enum covers every subtype Cilium has; an unknown number
    // stays as it is, as protobuf keeps open enums.
    flow::DebugEvent {
        r#type: i32::from(e.subtype),
        source: source(e.source, dir),
        hash: Some(e.hash),
        arg1: Some(e.arg1),
        arg2: Some(e.arg2),
        arg3: Some(e.arg3),
        message: message(e, |ifindex| dir.interface(ifindex).map(|i| i.name)),
        cpu: Some(e.cpu as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EndpointMeta;

    fn event(subtype: u8, arg1: u32, arg2: u32, arg3: u32) -> DebugEvent {
        DebugEvent { subtype, arg1, arg2, arg3, source: 3, hash: 0xabc, cpu: 1, ..Default::default() }
    }

    fn text(subtype: u8, arg1: u32, arg2: u32, arg3: u32) -> String {
        message(&event(subtype, arg1, arg2, arg3), |i| (i == 9).then(|| "lxc0abc".to_string()))
    }

    /// 10.0.0.1 as the datapath loads it from the packet.
    fn addr(a: [u8; 4]) -> u32 {
        u32::from_ne_bytes(a)
    }

    #[test]
    fn conntrack_messages_read_as_cilium_s() {
        let ports = (80 << 16) | 40000;
        assert_eq!(
            text(DBG_CT_LOOKUP4_1, addr([10, 0, 0, 1]), addr([10, 0, 0, 2]), ports),
            "Conntrack lookup 1/2: src=10.0.0.1:40000 dst=10.0.0.2:80"
        );
        assert_eq!(text(DBG_CT_LOOKUP4_2, (6 << 8) | 1, 0, 0), "Conntrack lookup 2/2: nexthdr=6 flags=1");
        assert_eq!(text(DBG_CT_VERDICT, 0, 0, 0), "CT verdict: New, revnat=0");
        assert_eq!(text(DBG_CT_VERDICT, 2, 0, 0), "CT verdict: Reply, revnat=0");
        assert_eq!(text(DBG_CT_MATCH, 59, 0, 0), "CT entry found lifetime=59, revnat=0");
        assert_eq!(
            text(DBG_CT_CREATED4, 0, 12345, 0),
            "Conntrack create: proxy-port=0 revnat=0 src-identity=12345 lb=0.0.0.0"
        );
    }

    #[test]
    fn delivery_and_policy_messages_read_as_cilium_s() {
        assert_eq!(
            text(DBG_LOCAL_DELIVERY, 4, 256, 0),
            "Attempting local delivery for container id 4 from seclabel 256"
        );
        // The identity travels in network byte order, as Cilium's does.
        assert_eq!(
            text(DBG_LXC_FOUND, 9, u32::from(300u16.to_be()), 0),
            "Local container found ifindex lxc0abc seclabel 300"
        );
        assert_eq!(text(DBG_LXC_FOUND, 7, 0, 0), "Local container found ifindex 7 seclabel 0");
        assert_eq!(
            text(DBG_POLICY_DENIED, 256, 257, 0),
            "Policy evaluation would deny packet from 256 to 257"
        );
        assert_eq!(text(DBG_ENCAP, 255, 2, 0), "Encapsulating to node 255 (0xff) from seclabel 2");
        assert_eq!(text(DBG_TO_STACK, 0, 0, 0), "Going to the stack, policy-skip=0");
        assert_eq!(text(DBG_DECAP, 6, 0, 0), "Tunnel decap: id=6 flowlabel=0");
        let port = |p: u16| u32::from(p.to_be());
        assert_eq!(
            text(DBG_LB4_LOOKUP_FRONTEND, addr([10, 77, 0, 1]), port(30080), 0),
            "Frontend service lookup, addr=10.77.0.1 key.dport=30080"
        );
        assert_eq!(
            text(DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS, addr([10, 78, 0, 2]), port(8080), 0),
            "Service backend slot lookup result: target=10.78.0.2 port=8080"
        );
        assert_eq!(text(DBG_GENERIC, 0, 16, 0), "No message, arg1=0 (0x0) arg2=16 (0x10)");
        assert_eq!(text(200, 1, 2, 3), "Unknown message type=200 arg1=1 arg2=2");
    }

    #[test]
    fn the_source_endpoint_is_named_as_in_flows() {
        let mut dir = Directory::new("n1");
        dir.add_endpoint(EndpointMeta {
            id: 3,
            name: "client".into(),
            namespace: "default".into(),
            ip: Ipv4Addr::new(10, 0, 0, 1),
            identity: 300,
            host_device: "lxc0abc".into(),
            ifindex: 9,
        });
        dir.identities.insert(300, vec!["k8s:app=client".into()]);
        let d = decode(&event(DBG_LXC_FOUND, 9, u32::from(300u16.to_be()), 0), &dir);
        assert_eq!(d.r#type, flow::DebugEventType::DbgLxcFound as i32);
        let src = d.source.unwrap();
        assert_eq!((src.id, src.identity, src.pod_name.as_str()), (3, 300, "client"));
        assert_eq!(src.labels, vec!["k8s:app=client".to_string()]);
        assert_eq!((d.hash, d.cpu, d.arg1), (Some(0xabc), Some(1), Some(9)));
        assert_eq!(d.message, "Local container found ifindex lxc0abc seclabel 300");

        let unknown = decode(&DebugEvent { source: 5, ..event(DBG_TO_STACK, 0, 0, 0) }, &dir);
        assert_eq!(unknown.source, Some(flow::Endpoint { id: 5, ..Default::default() }));
        let none = decode(&DebugEvent { source: 0, ..event(DBG_TO_STACK, 0, 0, 0) }, &dir);
        assert_eq!(none.source, None);
    }
}
