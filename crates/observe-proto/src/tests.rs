//! Wire-format checks against Hubble's field numbers, read back with a small
//! protobuf reader written here (independent of prost's decoder).

use prost::Message;

use crate::flow::{self, layer4, Flow};
use crate::observer::{self, get_flows_response};
use crate::relay;

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// One top-level field as found on the wire.
#[derive(Debug)]
struct WireField<'a> {
    number: u32,
    wire_type: u8,
    /// The varint value for VARINT fields, the length for LEN fields.
    value: u64,
    /// The payload of LEN fields (empty otherwise).
    bytes: &'a [u8],
}

fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = buf[*pos];
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint longer than 10 bytes");
}

/// Splits an encoded message into its top-level fields, in wire order.
fn fields(buf: &[u8]) -> Vec<WireField<'_>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = read_varint(buf, &mut pos);
        let number = u32::try_from(key >> 3).expect("field number fits u32");
        let wire_type = (key & 7) as u8;
        let (value, bytes) = match wire_type {
            VARINT => (read_varint(buf, &mut pos), &buf[pos..pos]),
            FIXED64 => {
                let raw: [u8; 8] = buf[pos..pos + 8].try_into().unwrap();
                pos += 8;
                (u64::from_le_bytes(raw), &buf[pos..pos])
            }
            LEN => {
                let len = read_varint(buf, &mut pos) as usize;
                let bytes = &buf[pos..pos + len];
                pos += len;
                (len as u64, bytes)
            }
            5 => {
                let raw: [u8; 4] = buf[pos..pos + 4].try_into().unwrap();
                pos += 4;
                (u64::from(u32::from_le_bytes(raw)), &buf[pos..pos])
            }
            other => panic!("unexpected wire type {other} for field {number}"),
        };
        out.push(WireField { number, wire_type, value, bytes });
    }
    out
}

/// The single field with this number; panics if absent or repeated.
fn field<'a, 'b>(all: &'b [WireField<'a>], number: u32) -> &'b WireField<'a> {
    let found: Vec<_> = all.iter().filter(|f| f.number == number).collect();
    assert_eq!(found.len(), 1, "field {number}: expected exactly one, wire has {all:?}");
    found[0]
}

fn endpoint(namespace: &str, pod: &str, identity: u32) -> flow::Endpoint {
    flow::Endpoint {
        identity,
        namespace: namespace.into(),
        pod_name: pod.into(),
        labels: vec![format!("k8s:app={pod}")],
        ..Default::default()
    }
}

#[allow(deprecated)] // `Summary` is deprecated upstream but still on the wire.
fn sample_flow() -> Flow {
    let mut f = Flow {
        time: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 }),
        uuid: "b6a1c1d2-0000-4000-8000-000000000001".into(),
        ip: Some(flow::Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            ip_version: flow::IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        l4: Some(flow::Layer4 {
            protocol: Some(layer4::Protocol::Tcp(flow::Tcp {
                source_port: 40000,
                destination_port: 80,
                flags: Some(flow::TcpFlags { syn: true, ..Default::default() }),
            })),
        }),
        source: Some(endpoint("default", "client", 1234)),
        destination: Some(endpoint("default", "server", 5678)),
        node_name: "node-1".into(),
        event_type: Some(flow::CiliumEventType { r#type: 1, sub_type: 133 }),
        is_reply: Some(false),
        summary: "TCP Flags: SYN".into(),
        egress_denied_by: vec![flow::Policy { name: "deny-all".into(), ..Default::default() }],
        ..Default::default()
    };
    f.set_verdict(flow::Verdict::Dropped);
    f.set_type(flow::FlowType::L3L4);
    f.set_traffic_direction(flow::TrafficDirection::Egress);
    f.set_drop_reason_desc(flow::DropReason::PolicyDenied);
    f
}

#[test]
fn flow_uses_hubble_field_numbers() {
    let buf = sample_flow().encode_to_vec();
    let top = fields(&buf);

    // (Hubble field number, wire type) of every field the sample sets.
    let expected = [
        (1, LEN),       // time
        (2, VARINT),    // verdict
        (5, LEN),       // IP
        (6, LEN),       // l4
        (8, LEN),       // source
        (9, LEN),       // destination
        (10, VARINT),   // Type
        (11, LEN),      // node_name
        (19, LEN),      // event_type
        (22, VARINT),   // traffic_direction
        (25, VARINT),   // drop_reason_desc
        (26, LEN),      // is_reply (BoolValue)
        (34, LEN),      // uuid
        (21004, LEN),   // egress_denied_by
        (100_000, LEN), // Summary
    ];
    for (number, wire_type) in expected {
        assert_eq!(field(&top, number).wire_type, wire_type, "wire type of field {number}");
    }
    assert_eq!(top.len(), expected.len(), "unexpected extra fields: {top:?}");

    assert_eq!(field(&top, 2).value, 2, "verdict DROPPED");
    assert_eq!(field(&top, 10).value, 1, "Type L3_L4");
    assert_eq!(field(&top, 22).value, 2, "traffic_direction EGRESS");
    assert_eq!(field(&top, 25).value, 133, "drop_reason_desc POLICY_DENIED");
    assert_eq!(field(&top, 11).bytes, b"node-1");
    assert_eq!(field(&top, 100_000).bytes, b"TCP Flags: SYN");

    // is_reply = BoolValue{false}: present but empty, unlike a plain bool.
    assert!(field(&top, 26).bytes.is_empty());

    // IP { source = 1, destination = 2, ipVersion = 3 }
    let ip = fields(field(&top, 5).bytes);
    assert_eq!(field(&ip, 1).bytes, b"10.0.0.1");
    assert_eq!(field(&ip, 2).bytes, b"10.0.0.2");
    assert_eq!(field(&ip, 3).value, 1, "IPv4");

    // Layer4 { TCP = 1 { source_port = 1, destination_port = 2, flags = 3 { SYN = 2 } } }
    let l4 = fields(field(&top, 6).bytes);
    let tcp = fields(field(&l4, 1).bytes);
    assert_eq!(field(&tcp, 1).value, 40000);
    assert_eq!(field(&tcp, 2).value, 80);
    let flags = fields(field(&tcp, 3).bytes);
    assert_eq!(field(&flags, 2).value, 1, "SYN");

    // Endpoint { identity = 2, namespace = 3, labels = 4, pod_name = 5 }
    let src = fields(field(&top, 8).bytes);
    assert_eq!(field(&src, 2).value, 1234);
    assert_eq!(field(&src, 3).bytes, b"default");
    assert_eq!(field(&src, 4).bytes, b"k8s:app=client");
    assert_eq!(field(&src, 5).bytes, b"client");

    // CiliumEventType { type = 1, sub_type = 2 }
    let et = fields(field(&top, 19).bytes);
    assert_eq!(field(&et, 1).value, 1);
    assert_eq!(field(&et, 2).value, 133);

    // And prost decodes its own bytes back to the same value.
    assert_eq!(Flow::decode(buf.as_slice()).unwrap(), sample_flow());
}

#[test]
fn decodes_hand_encoded_hubble_bytes() {
    // verdict(2)=FORWARDED, node_name(11)="n1", traffic_direction(22)=INGRESS,
    // trace_observation_point(24)=TO_ENDPOINT(101), Summary(100000)="s",
    // is_reply(26)={value(1)=true}, l4(6)={UDP(2)={destination_port(2)=53}}.
    let bytes: &[u8] = &[
        0x10, 0x01, // 2: varint 1
        0x5a, 0x02, b'n', b'1', // 11: len 2
        0xb0, 0x01, 0x01, // 22: varint 1
        0xc0, 0x01, 0x65, // 24: varint 101
        0x82, 0xea, 0x30, 0x01, b's', // 100000: len 1
        0xd2, 0x01, 0x02, 0x08, 0x01, // 26: { 1: true }
        0x32, 0x04, 0x12, 0x02, 0x10, 0x35, // 6: { 2: { 2: 53 } }
    ];
    let f = Flow::decode(bytes).unwrap();
    assert_eq!(f.verdict(), flow::Verdict::Forwarded);
    assert_eq!(f.node_name, "n1");
    assert_eq!(f.traffic_direction(), flow::TrafficDirection::Ingress);
    assert_eq!(f.trace_observation_point(), flow::TraceObservationPoint::ToEndpoint);
    #[allow(deprecated)]
    let summary = f.summary.clone();
    assert_eq!(summary, "s");
    assert_eq!(f.is_reply, Some(true));
    match f.l4.and_then(|l4| l4.protocol) {
        Some(layer4::Protocol::Udp(udp)) => assert_eq!(udp.destination_port, 53),
        other => panic!("expected UDP, got {other:?}"),
    }
}

#[test]
fn observer_messages_use_hubble_field_numbers() {
    // GetFlowsResponse { flow = 1, node_name = 1000, time = 1001 }
    let resp = observer::GetFlowsResponse {
        response_types: Some(get_flows_response::ResponseTypes::Flow(sample_flow())),
        node_name: "node-1".into(),
        time: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
    };
    let buf = resp.encode_to_vec();
    let top = fields(&buf);
    assert_eq!(field(&top, 1).wire_type, LEN);
    assert_eq!(field(&top, 1000).bytes, b"node-1");
    assert_eq!(field(&top, 1001).wire_type, LEN);
    assert_eq!(Flow::decode(field(&top, 1).bytes).unwrap(), sample_flow());

    // node_status = 2 carries relay.NodeStatusEvent { state_change = 1, node_names = 2 }.
    let status = observer::GetFlowsResponse {
        response_types: Some(get_flows_response::ResponseTypes::NodeStatus(relay::NodeStatusEvent {
            state_change: relay::NodeState::NodeUnavailable as i32,
            node_names: vec!["node-2".into()],
            message: String::new(),
        })),
        ..Default::default()
    };
    let buf = status.encode_to_vec();
    let top = fields(&buf);
    let ev = fields(field(&top, 2).bytes);
    assert_eq!(field(&ev, 1).value, 2);
    assert_eq!(field(&ev, 2).bytes, b"node-2");

    // lost_events = 3: LostEvent { source = 1, num_events_lost = 2 }.
    let lost = observer::GetFlowsResponse {
        response_types: Some(get_flows_response::ResponseTypes::LostEvents(flow::LostEvent {
            source: flow::LostEventSource::HubbleRingBuffer as i32,
            num_events_lost: 7,
            ..Default::default()
        })),
        ..Default::default()
    };
    let buf = lost.encode_to_vec();
    let ev = fields(field(&fields(&buf), 3).bytes);
    assert_eq!(field(&ev, 1).value, 3);
    assert_eq!(field(&ev, 2).value, 7);

    // GetFlowsRequest as `hubble observe --last 20 --follow --first`-like flags would send it.
    let req = observer::GetFlowsRequest {
        number: 20,
        first: true,
        follow: true,
        blacklist: vec![flow::FlowFilter { source_pod: vec!["kube-system/".into()], ..Default::default() }],
        whitelist: vec![flow::FlowFilter {
            verdict: vec![flow::Verdict::Dropped as i32],
            experimental: Some(flow::flow_filter::Experimental { cel_expression: vec!["true".into()] }),
            ..Default::default()
        }],
        since: Some(prost_types::Timestamp::default()),
        until: Some(prost_types::Timestamp::default()),
        field_mask: Some(prost_types::FieldMask { paths: vec!["source.namespace".into()] }),
        experimental: Some(observer::get_flows_request::Experimental::default()),
        extensions: Some(prost_types::Any::default()),
    };
    let buf = req.encode_to_vec();
    let top = fields(&buf);
    assert_eq!(field(&top, 1).value, 20);
    assert_eq!(field(&top, 3).value, 1);
    assert_eq!(field(&top, 9).value, 1);
    for n in [5, 6, 7, 8, 10, 999, 150_000] {
        assert_eq!(field(&top, n).wire_type, LEN, "GetFlowsRequest field {n}");
    }
    let white = fields(field(&top, 6).bytes);
    assert_eq!(field(&white, 5).bytes, [2], "packed verdict list");
    assert_eq!(field(&fields(field(&white, 999).bytes), 1).bytes, b"true");
    assert_eq!(field(&fields(field(&top, 5).bytes), 2).bytes, b"kube-system/");

    // ServerStatusResponse: flows_rate = 9 is a double (fixed64).
    let st = observer::ServerStatusResponse {
        num_flows: 1,
        max_flows: 2,
        seen_flows: 3,
        uptime_ns: 4,
        num_connected_nodes: Some(5),
        num_unavailable_nodes: Some(0),
        unavailable_nodes: vec!["x".into()],
        version: "v".into(),
        flows_rate: 1.5,
    };
    let buf = st.encode_to_vec();
    let top = fields(&buf);
    for (n, v) in [(1, 1), (2, 2), (3, 3), (4, 4)] {
        assert_eq!(field(&top, n).value, v, "ServerStatusResponse field {n}");
    }
    for n in [5, 6, 7, 8] {
        assert_eq!(field(&top, n).wire_type, LEN, "ServerStatusResponse field {n}");
    }
    assert_eq!(field(&top, 9).wire_type, FIXED64);
    assert_eq!(f64::from_bits(field(&top, 9).value), 1.5);
}

#[test]
fn enum_values_match_hubble() {
    use flow::{DropReason, TraceObservationPoint, Verdict};
    assert_eq!(Verdict::Dropped as i32, 2);
    assert_eq!(Verdict::Translated as i32, 7);
    assert_eq!(Verdict::Dropped.as_str_name(), "DROPPED");
    assert_eq!(DropReason::PolicyDenied as i32, 133);
    assert_eq!(DropReason::PolicyDeny as i32, 181);
    assert_eq!(DropReason::DropFragNotFoundWorld as i32, 207);
    assert_eq!(DropReason::from_str_name("AUTH_REQUIRED"), Some(DropReason::AuthRequired));
    assert_eq!(TraceObservationPoint::ToEndpoint as i32, 101);
    assert_eq!(TraceObservationPoint::ToEndpoint.as_str_name(), "TO_ENDPOINT");
    assert_eq!(flow::EventType::EventSample as i32, 9);
    assert_eq!(flow::AgentEventType::AgentStarted as i32, 2);
    assert_eq!(flow::DebugCapturePoint::DbgCaptureDelivery as i32, 4);
    assert_eq!(relay::NodeState::NodeError as i32, 4);
}

#[test]
fn grpc_paths_match_hubble() {
    use tonic::server::NamedService;

    assert_eq!(observer::observer_server::SERVICE_NAME, "observer.Observer");
    assert_eq!(format!("/{}/GetFlows", observer::observer_server::SERVICE_NAME), crate::GET_FLOWS_PATH);
    assert_eq!(crate::GET_FLOWS_PATH, "/observer.Observer/GetFlows");

    struct Dummy;
    assert_eq!(<observer::observer_server::ObserverServer<Dummy> as NamedService>::NAME, "observer.Observer");

    // The generated code routes and calls exactly these paths.
    let generated = include_str!(concat!(env!("OUT_DIR"), "/observer.rs"));
    for method in
        ["GetFlows", "GetAgentEvents", "GetDebugEvents", "GetNodes", "GetNamespaces", "ServerStatus"]
    {
        let path = format!("\"/observer.Observer/{method}\"");
        // Once in the client, once in the server's router.
        assert_eq!(generated.matches(&path).count(), 2, "{path}");
    }
}
