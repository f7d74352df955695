//! `twill observe` end to end against an in-process fake Observer server,
//! plus the command-line parsing, request building and output formats.

use std::{
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use tokio_stream::Stream;
use twill_observe_proto::{
    flow::{self, layer4::Protocol},
    observer::{
        self,
        get_flows_response::ResponseTypes,
        observer_server::{Observer, ObserverServer},
        GetFlowsRequest, GetFlowsResponse,
    },
    prost_types::Timestamp,
    relay,
    tonic::{self, transport::Server, Request, Response, Status},
};

use super::{
    filter::parse_identity,
    json,
    printer::{flow_type, tabwrite, Format, PrintOptions, Printer},
    timefmt::days_from_civil,
    ObserveArgs, Plan,
};

/// 2026-11-22T00:26:08Z.
fn base_seconds() -> i64 {
    days_from_civil(2026, 11, 22) * 86_400 + 26 * 60 + 8
}

fn ts(seconds: i64, nanos: i32) -> Timestamp {
    Timestamp { seconds, nanos }
}

fn syn() -> flow::TcpFlags {
    flow::TcpFlags { syn: true, ..Default::default() }
}

fn tcp(src: u32, dst: u32, flags: flow::TcpFlags) -> Option<flow::Layer4> {
    Some(flow::Layer4 {
        protocol: Some(Protocol::Tcp(flow::Tcp {
            source_port: src,
            destination_port: dst,
            flags: Some(flags),
        })),
    })
}

fn pod(id: u32, identity: u32, name: &str) -> Option<flow::Endpoint> {
    Some(flow::Endpoint {
        id,
        identity,
        namespace: "default".into(),
        labels: vec![format!("k8s:app={name}"), "k8s:io.kubernetes.pod.namespace=default".into()],
        pod_name: name.into(),
        ..Default::default()
    })
}

fn ipv4(src: &str, dst: &str) -> Option<flow::Ip> {
    Some(flow::Ip {
        source: src.into(),
        destination: dst.into(),
        ip_version: flow::IpVersion::IPv4 as i32,
        ..Default::default()
    })
}

/// A forwarded SYN from pod a to pod b, traced at to-endpoint.
#[allow(deprecated)] // Summary
fn forwarded_flow() -> flow::Flow {
    flow::Flow {
        time: Some(ts(base_seconds(), 529_000_000)),
        uuid: "5c8d1c3e-0f1a-4e4b-9a53-1b0e6c1d2f10".into(),
        verdict: flow::Verdict::Forwarded as i32,
        ip: ipv4("10.200.0.2", "10.200.0.3"),
        l4: tcp(54321, 80, syn()),
        source: pod(1, 256, "a"),
        destination: pod(2, 257, "b"),
        r#type: flow::FlowType::L3L4 as i32,
        node_name: "n1".into(),
        event_type: Some(flow::CiliumEventType { r#type: 4, sub_type: 0 }),
        traffic_direction: flow::TrafficDirection::Ingress as i32,
        trace_observation_point: flow::TraceObservationPoint::ToEndpoint as i32,
        is_reply: Some(false),
        summary: "TCP Flags: SYN".into(),
        ..Default::default()
    }
}

/// A SYN from pod a to the world dropped by policy, direction unknown.
#[allow(deprecated)] // drop_reason, Summary
fn dropped_flow() -> flow::Flow {
    flow::Flow {
        time: Some(ts(base_seconds() + 1, 0)),
        verdict: flow::Verdict::Dropped as i32,
        drop_reason: 133,
        ethernet: Some(flow::Ethernet {
            source: "02:00:00:00:00:01".into(),
            destination: "02:00:00:00:00:02".into(),
        }),
        ip: ipv4("10.200.0.2", "1.1.1.1"),
        l4: tcp(54322, 443, syn()),
        source: pod(1, 256, "a"),
        destination: Some(flow::Endpoint {
            identity: 2,
            labels: vec!["reserved:world".into()],
            ..Default::default()
        }),
        r#type: flow::FlowType::L3L4 as i32,
        node_name: "n1".into(),
        event_type: Some(flow::CiliumEventType { r#type: 1, sub_type: 133 }),
        traffic_direction: flow::TrafficDirection::Egress as i32,
        drop_reason_desc: flow::DropReason::PolicyDenied as i32,
        socket_cookie: 18_446_744_073_709_551_615,
        summary: "TCP Flags: SYN".into(),
        egress_denied_by: vec![flow::Policy {
            name: "deny-world".into(),
            namespace: "default".into(),
            labels: vec!["k8s:io.cilium.k8s.policy.name=deny-world".into()],
            revision: 7,
            kind: "CiliumNetworkPolicy".into(),
        }],
        ..Default::default()
    }
}

fn response(f: flow::Flow) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: f.node_name.clone(),
        time: f.time,
        response_types: Some(ResponseTypes::Flow(f)),
    }
}

const FORWARDED_JSON: &str = concat!(
    r#"{"flow":{"time":"2026-11-22T00:26:08.529Z","uuid":"5c8d1c3e-0f1a-4e4b-9a53-1b0e6c1d2f10","verdict":"FORWARDED","#,
    r#""IP":{"source":"10.200.0.2","destination":"10.200.0.3","ipVersion":"IPv4"},"#,
    r#""l4":{"TCP":{"source_port":54321,"destination_port":80,"flags":{"SYN":true}}},"#,
    r#""source":{"ID":1,"identity":256,"namespace":"default","labels":["k8s:app=a","k8s:io.kubernetes.pod.namespace=default"],"pod_name":"a"},"#,
    r#""destination":{"ID":2,"identity":257,"namespace":"default","labels":["k8s:app=b","k8s:io.kubernetes.pod.namespace=default"],"pod_name":"b"},"#,
    r#""Type":"L3_L4","node_name":"n1","event_type":{"type":4},"traffic_direction":"INGRESS","#,
    r#""trace_observation_point":"TO_ENDPOINT","is_reply":false,"Summary":"TCP Flags: SYN"},"#,
    r#""node_name":"n1","time":"2026-11-22T00:26:08.529Z"}"#
);

const DROPPED_JSON: &str = concat!(
    r#"{"flow":{"time":"2026-11-22T00:26:09Z","verdict":"DROPPED","drop_reason":133,"#,
    r#""ethernet":{"source":"02:00:00:00:00:01","destination":"02:00:00:00:00:02"},"#,
    r#""IP":{"source":"10.200.0.2","destination":"1.1.1.1","ipVersion":"IPv4"},"#,
    r#""l4":{"TCP":{"source_port":54322,"destination_port":443,"flags":{"SYN":true}}},"#,
    r#""source":{"ID":1,"identity":256,"namespace":"default","labels":["k8s:app=a","k8s:io.kubernetes.pod.namespace=default"],"pod_name":"a"},"#,
    r#""destination":{"identity":2,"labels":["reserved:world"]},"#,
    r#""Type":"L3_L4","node_name":"n1","event_type":{"type":1,"sub_type":133},"traffic_direction":"EGRESS","#,
    r#""drop_reason_desc":"POLICY_DENIED","socket_cookie":"18446744073709551615","Summary":"TCP Flags: SYN","#,
    r#""egress_denied_by":[{"name":"deny-world","namespace":"default","labels":["k8s:io.cilium.k8s.policy.name=deny-world"],"revision":"7","kind":"CiliumNetworkPolicy"}]},"#,
    r#""node_name":"n1","time":"2026-11-22T00:26:09Z"}"#
);

const FORWARDED_COMPACT: &str =
    "Nov 22 00:26:08.529: default/a:54321 (ID:256) -> default/b:80 (ID:257) to-endpoint FORWARDED (TCP Flags: SYN)";
const DROPPED_COMPACT: &str =
    "Nov 22 00:26:09.000: default/a:54322 (ID:256) <> 1.1.1.1:443 (world) Policy denied DROPPED (TCP Flags: SYN)";

fn print_opts(format: Format) -> PrintOptions {
    PrintOptions { format, node_name: false, ip_translation: true, debug: false }
}

fn render(opts: PrintOptions, items: &[GetFlowsResponse]) -> (String, String) {
    let mut p = Printer::new(opts, Vec::new(), Vec::new());
    for item in items {
        p.write(item).unwrap();
    }
    p.finish().unwrap();
    let (out, err) = p.into_inner();
    (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[test]
fn json_is_protojson_with_proto_names() {
    assert_eq!(json::get_flows_response(&response(forwarded_flow())), FORWARDED_JSON);
    assert_eq!(json::get_flows_response(&response(dropped_flow())), DROPPED_JSON);
    // Valid JSON, and what serde reads back matches.
    let v: serde_json::Value = serde_json::from_str(DROPPED_JSON).unwrap();
    assert_eq!(v["flow"]["socket_cookie"], "18446744073709551615");
}

#[test]
fn json_defaults_presence_and_escaping() {
    // Empty but set messages and oneof members are written; defaults are not.
    let f = flow::Flow {
        l4: Some(flow::Layer4 { protocol: Some(Protocol::Udp(flow::Udp::default())) }),
        ethernet: Some(flow::Ethernet::default()),
        is_reply: Some(true),
        verdict: 99,
        source_names: vec!["a<b>&c\u{2028}\"\\\n\u{1}é".into()],
        ..Default::default()
    };
    assert_eq!(
        json::flow(&f),
        r#"{"verdict":99,"ethernet":{},"l4":{"UDP":{}},"source_names":["a\u003cb\u003e\u0026c\u2028\"\\\n\u0001é"],"is_reply":true}"#
    );
    assert_eq!(json::flow(&flow::Flow::default()), "{}");
    assert_eq!(json::get_flows_response(&GetFlowsResponse::default()), "{}");

    let lost = GetFlowsResponse {
        response_types: Some(ResponseTypes::LostEvents(flow::LostEvent {
            source: flow::LostEventSource::PerfEventRingBuffer as i32,
            num_events_lost: 5,
            cpu: Some(0),
            ..Default::default()
        })),
        node_name: "n1".into(),
        time: Some(ts(base_seconds(), 1_500)),
    };
    assert_eq!(
        json::get_flows_response(&lost),
        r#"{"lost_events":{"source":"PERF_EVENT_RING_BUFFER","num_events_lost":"5","cpu":0},"node_name":"n1","time":"2026-11-22T00:26:08.000001500Z"}"#
    );
}

#[test]
fn compact_lines_like_hubble() {
    let (out, err) =
        render(print_opts(Format::Compact), &[response(forwarded_flow()), response(dropped_flow())]);
    assert_eq!(out, format!("{FORWARDED_COMPACT}\n{DROPPED_COMPACT}\n"));
    assert!(err.is_empty());

    let p = Printer::new(print_opts(Format::Compact), Vec::new(), Vec::new());
    // A reply swaps the ends and points the arrow back.
    let mut reply = forwarded_flow();
    reply.is_reply = Some(true);
    assert_eq!(
        p.compact_line(&reply),
        "Nov 22 00:26:08.529: default/b:80 (ID:257) <- default/a:54321 (ID:256) to-endpoint FORWARDED (TCP Flags: SYN)"
    );
    // Policy verdicts; host identity; no ports for ICMP.
    let mut verdict = forwarded_flow();
    verdict.event_type = Some(flow::CiliumEventType { r#type: 5, sub_type: 0 });
    verdict.policy_match_type = 2;
    verdict.source.as_mut().unwrap().identity = 1;
    verdict.source.as_mut().unwrap().pod_name.clear();
    verdict.l4 = Some(flow::Layer4 { protocol: Some(Protocol::IcmPv4(flow::IcmPv4 { r#type: 8, code: 0 })) });
    assert_eq!(
        p.compact_line(&verdict),
        "Nov 22 00:26:08.529: 10.200.0.2 (host) -> default/b (ID:257) policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN)"
    );
    // Without IP translation, addresses only; with --print-node-name, the node.
    let numeric = Printer::new(
        PrintOptions { ip_translation: false, node_name: true, ..print_opts(Format::Compact) },
        Vec::new(),
        Vec::new(),
    );
    assert_eq!(
        numeric.compact_line(&forwarded_flow()),
        "Nov 22 00:26:08.529 [n1]: 10.200.0.2:54321 (ID:256) -> 10.200.0.3:80 (ID:257) to-endpoint FORWARDED (TCP Flags: SYN)"
    );
    // IPv6 addresses get brackets; a flow with nothing shows N/A and UNKNOWN.
    let mut v6 = forwarded_flow();
    v6.ip = Some(flow::Ip { source: "fd00::1".into(), destination: "fd00::2".into(), ..Default::default() });
    v6.source = None;
    v6.destination = None;
    assert_eq!(
        numeric.compact_line(&v6),
        "Nov 22 00:26:08.529 [n1]: [fd00::1]:54321 (unknown) -> [fd00::2]:80 (unknown) to-endpoint FORWARDED (TCP Flags: SYN)"
    );
    assert_eq!(
        p.compact_line(&flow::Flow::default()),
        "N/A:  (unknown) <>  (unknown) UNKNOWN VERDICT_UNKNOWN ()"
    );
}

#[test]
fn dict_and_table_like_hubble() {
    let items = [response(forwarded_flow()), response(dropped_flow())];
    let (out, _) = render(print_opts(Format::Dict), &items);
    assert_eq!(
        out,
        "  TIMESTAMP: Nov 22 00:26:08.529\n     SOURCE: default/a:54321\nDESTINATION: default/b:80\n       TYPE: to-endpoint\n    VERDICT: FORWARDED\n    SUMMARY: TCP Flags: SYN\n\
         ------------\n  TIMESTAMP: Nov 22 00:26:09.000\n     SOURCE: default/a:54322\nDESTINATION: 1.1.1.1:443\n       TYPE: Policy denied\n    VERDICT: DROPPED\n    SUMMARY: TCP Flags: SYN\n"
    );
    let (out, _) = render(print_opts(Format::Table), &items);
    assert_eq!(
        out,
        "TIMESTAMP             SOURCE            DESTINATION    TYPE            VERDICT     SUMMARY\n\
         Nov 22 00:26:08.529   default/a:54321   default/b:80   to-endpoint     FORWARDED   TCP Flags: SYN\n\
         Nov 22 00:26:09.000   default/a:54322   1.1.1.1:443    Policy denied   DROPPED     TCP Flags: SYN\n"
    );
    assert_eq!(tabwrite(&[vec!["".into(), "x".into()]]), "   x\n");
}

#[test]
fn node_status_and_lost_events() {
    let status = |state: relay::NodeState| GetFlowsResponse {
        response_types: Some(ResponseTypes::NodeStatus(relay::NodeStatusEvent {
            state_change: state as i32,
            node_names: vec!["n1".into(), "n2".into()],
            message: "boom".into(),
        })),
        node_name: "relay".into(),
        time: Some(ts(base_seconds(), 0)),
    };
    let lost = GetFlowsResponse {
        response_types: Some(ResponseTypes::LostEvents(flow::LostEvent {
            source: flow::LostEventSource::HubbleRingBuffer as i32,
            num_events_lost: 3,
            cpu: Some(1),
            ..Default::default()
        })),
        ..Default::default()
    };
    let (out, err) = render(
        print_opts(Format::Compact),
        &[status(relay::NodeState::NodeConnected), status(relay::NodeState::NodeError), lost],
    );
    assert_eq!(out, "EVENTS LOST: HUBBLE_RING_BUFFER CPU(1) 3\n");
    assert_eq!(err, "Nov 22 00:26:08.000 [relay]: Error \"boom\" on 2 nodes: n1, n2\n");
}

fn parse(args: &[&str]) -> ObserveArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        observe: ObserveArgs,
    }
    let mut argv = vec!["observe"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}")).observe
}

fn plan(args: &[&str]) -> anyhow::Result<Plan> {
    Plan::new(&parse(args), UNIX_EPOCH + Duration::from_secs(1_000_000))
}

#[test]
fn command_line_keeps_filter_order() {
    let a = parse(&[
        "--verdict",
        "DROPPED",
        "--not",
        "--pod",
        "x",
        "--pod=y",
        "-A",
        "-t",
        "trace:to-endpoint",
        "-4",
    ]);
    let got: Vec<(&str, &str)> = a.filters.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(
        got,
        [
            ("verdict", "DROPPED"),
            ("not", "true"),
            ("pod", "x"),
            ("pod", "y"),
            ("all-namespaces", "true"),
            ("type", "trace:to-endpoint"),
            ("ipv4", "true"),
        ]
    );
    let p = plan(&["--not", "--verdict", "DROPPED", "--from-label", "app=web", "--not", "--to-port", "53"])
        .unwrap();
    assert_eq!(
        p.request.whitelist,
        vec![flow::FlowFilter { source_label: vec!["app=web".into()], ..Default::default() }]
    );
    assert_eq!(
        p.request.blacklist,
        vec![flow::FlowFilter {
            verdict: vec![flow::Verdict::Dropped as i32],
            destination_port: vec!["53".into()],
            ..Default::default()
        }]
    );
}

/// The filters `hubble observe --print-raw-filters` shows for the same flags.
#[test]
fn service_flags_build_hubble_s_filters() {
    let r =
        plan(&["--to-service", "default/web", "--to-service", "/db", "--from-service", "x"]).unwrap().request;
    assert_eq!(
        r.whitelist,
        vec![flow::FlowFilter {
            source_service: vec!["x".into()],
            destination_service: vec!["default/web".into(), "/db".into()],
            ..Default::default()
        }]
    );
    let r = plan(&["--service", "web", "--not", "--to-service", "prod/"]).unwrap().request;
    assert_eq!(
        r.whitelist,
        vec![
            flow::FlowFilter { source_service: vec!["web".into()], ..Default::default() },
            flow::FlowFilter { destination_service: vec!["web".into()], ..Default::default() },
        ]
    );
    assert_eq!(
        r.blacklist,
        vec![flow::FlowFilter { destination_service: vec!["prod/".into()], ..Default::default() }]
    );
}

#[test]
fn selectors_like_hubble() {
    let r = plan(&[]).unwrap().request;
    assert_eq!((r.number, r.first, r.follow), (20, false, false));
    assert!(r.whitelist.is_empty() && r.blacklist.is_empty() && r.since.is_none() && r.until.is_none());
    let r = plan(&["-f"]).unwrap().request;
    assert_eq!((r.number, r.follow), (0, true));
    let r = plan(&["--last", "5", "-f"]).unwrap().request;
    assert_eq!((r.number, r.follow), (5, true));
    let r = plan(&["--first", "7"]).unwrap().request;
    assert_eq!((r.number, r.first), (7, true));
    assert_eq!(plan(&["--all"]).unwrap().request.number, u64::MAX);
    let r = plan(&["--since", "5m", "--until", "30s"]).unwrap().request;
    assert_eq!(r.number, 0);
    assert_eq!(r.since, Some(ts(1_000_000 - 300, 0)));
    assert_eq!(r.until, Some(ts(1_000_000 - 30, 0)));
    let r = plan(&["--since", "2026-11-22T00:26:08Z", "-f", "--until", "1h"]).unwrap().request;
    assert_eq!((r.since, r.until), (Some(ts(base_seconds(), 0)), None), "--until is ignored with --follow");

    let err = |args: &[&str]| plan(args).unwrap_err().to_string();
    assert_eq!(err(&["--first", "1", "--last", "1"]), "cannot set both --first and --last");
    assert_eq!(err(&["--first", "1", "--all"]), "cannot set both --first and --all");
    assert_eq!(err(&["--first", "1", "-f"]), "cannot set both --first and --follow");
    assert_eq!(err(&["--last", "1", "--all"]), "cannot set both --last and --all");
    assert_eq!(err(&["-o", "table", "-f"]), "table output format is not compatible with follow mode");
    assert_eq!(err(&["-o", "yaml"]), "invalid output format: yaml");
    assert_eq!(err(&["--since", "soon"]), "failed to parse the since time: failed to convert soon to time");
    assert_eq!(err(&["--pod", "a", "--not"]), "trailing --not found in the arguments");
    assert_eq!(
        err(&["--tcp-flags", "SYN,NOPE"]),
        "invalid argument \"SYN,NOPE\" for \"--tcp-flags\" flag: unknown tcp flag: NOPE"
    );
    assert_eq!(plan(&["-o", "jsonpb"]).unwrap().print.format, Format::Json);
    assert!(!plan(&["--numeric"]).unwrap().print.ip_translation);
    assert!(!plan(&["--ip-translation=false"]).unwrap().print.ip_translation);
}

type FlowStream = Pin<Box<dyn Stream<Item = Result<GetFlowsResponse, Status>> + Send>>;
type Unused<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Answers GetFlows with canned items, whatever the filters, and keeps the
/// requests it got.
struct FakeObserver {
    items: Vec<GetFlowsResponse>,
    requests: Arc<Mutex<Vec<GetFlowsRequest>>>,
}

#[tonic::async_trait]
impl Observer for FakeObserver {
    type GetFlowsStream = FlowStream;
    type GetAgentEventsStream = Unused<observer::GetAgentEventsResponse>;
    type GetDebugEventsStream = Unused<observer::GetDebugEventsResponse>;

    async fn get_flows(&self, request: Request<GetFlowsRequest>) -> Result<Response<FlowStream>, Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        let items: Vec<_> = self.items.iter().cloned().map(Ok).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn get_agent_events(
        &self,
        _: Request<observer::GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented("agent events"))
    }

    async fn get_debug_events(
        &self,
        _: Request<observer::GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented("debug events"))
    }

    async fn get_nodes(
        &self,
        _: Request<observer::GetNodesRequest>,
    ) -> Result<Response<observer::GetNodesResponse>, Status> {
        Err(Status::unimplemented("nodes"))
    }

    async fn get_namespaces(
        &self,
        _: Request<observer::GetNamespacesRequest>,
    ) -> Result<Response<observer::GetNamespacesResponse>, Status> {
        Err(Status::unimplemented("namespaces"))
    }

    async fn server_status(
        &self,
        _: Request<observer::ServerStatusRequest>,
    ) -> Result<Response<observer::ServerStatusResponse>, Status> {
        Err(Status::unimplemented("status"))
    }
}

fn socket_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!("twill-observe-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `twill observe ARGS` against the fake server; returns stdout and
/// the requests the server received.
async fn observe_against_fake(args: &[&str]) -> (String, Vec<GetFlowsRequest>) {
    let dir = socket_dir("e2e");
    let sock = dir.join("hubble.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let requests = Arc::new(Mutex::new(Vec::new()));
    let fake = FakeObserver {
        items: vec![response(forwarded_flow()), response(dropped_flow())],
        requests: requests.clone(),
    };
    let server =
        tokio::spawn(Server::builder().add_service(ObserverServer::new(fake)).serve_with_incoming(incoming));

    let server_arg = format!("unix://{}", sock.display());
    let mut argv = vec!["--server", server_arg.as_str()];
    argv.extend_from_slice(args);
    let parsed = parse(&argv);
    let plan = Plan::new(&parsed, SystemTime::now()).unwrap();
    let mut printer = Printer::new(plan.print, Vec::new(), Vec::new());
    super::observe(&parsed.opts, plan.request, &mut printer).await.unwrap();

    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    let (out, _) = printer.into_inner();
    let requests = requests.lock().unwrap().clone();
    (String::from_utf8(out).unwrap(), requests)
}

#[tokio::test]
async fn observe_against_an_in_process_server() {
    let (out, requests) = observe_against_fake(&[
        "--pod",
        "default/a",
        "--not",
        "--verdict",
        "DROPPED",
        "--type",
        "trace:to-endpoint",
        "--last",
        "2",
        "-o",
        "json",
    ])
    .await;
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!((req.number, req.first, req.follow), (2, false, false));
    let to_endpoint = flow::EventTypeFilter { r#type: 4, match_sub_type: true, sub_type: 0 };
    assert_eq!(
        req.whitelist,
        vec![
            flow::FlowFilter {
                source_pod: vec!["default/a".into()],
                event_type: vec![to_endpoint],
                ..Default::default()
            },
            flow::FlowFilter {
                destination_pod: vec!["default/a".into()],
                event_type: vec![to_endpoint],
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        req.blacklist,
        vec![flow::FlowFilter { verdict: vec![flow::Verdict::Dropped as i32], ..Default::default() }]
    );
    // The server filters; the client prints whatever it is sent.
    assert_eq!(out, format!("{FORWARDED_JSON}\n{DROPPED_JSON}\n"));

    let (out, requests) = observe_against_fake(&["--since", "1h", "--to-ip", "1.1.1.1"]).await;
    assert_eq!(out, format!("{FORWARDED_COMPACT}\n{DROPPED_COMPACT}\n"));
    let req = &requests[0];
    assert_eq!(req.number, 0);
    assert!(req.since.is_some());
    assert_eq!(
        req.whitelist,
        vec![flow::FlowFilter { destination_ip: vec!["1.1.1.1".into()], ..Default::default() }]
    );
}

#[tokio::test]
async fn unreachable_server_names_the_address() {
    let dir = socket_dir("missing");
    let server = format!("unix://{}/nothing.sock", dir.display());
    let err =
        super::connect(&server, Duration::from_secs(1), &Default::default()).await.unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.starts_with(&format!("cannot reach the Hubble API at {server}: ")), "{err}");
    assert!(err.contains("--server") && !err.contains('\n'), "{err}");
}

/// The TYPE column and identities in Cilium's words, and what Hubble prints
/// for numbers Cilium does not name.
#[test]
fn cilium_names_in_compact_lines() {
    let with_event = |r#type, sub_type| flow::Flow {
        event_type: Some(flow::CiliumEventType { r#type, sub_type }),
        ..forwarded_flow()
    };
    assert_eq!(flow_type(&with_event(1, 181)), "Policy denied by denylist");
    assert_eq!(flow_type(&with_event(1, 132)), "Invalid source ip");
    assert_eq!(flow_type(&with_event(1, 158)), "Service backend not found");
    assert_eq!(flow_type(&with_event(1, 12)), "12, 0");
    assert_eq!(flow_type(&with_event(4, 3)), "to-stack");
    assert_eq!(flow_type(&with_event(4, 5)), "from-endpoint");
    assert_eq!(flow_type(&with_event(4, 13)), "to-crypto");
    assert_eq!(flow_type(&with_event(4, 99)), "99");
    let mut verdict = with_event(5, 0);
    verdict.policy_match_type = 6;
    assert_eq!(flow_type(&verdict), "policy-verdict:Proto-Only INGRESS");
    verdict.policy_match_type = 9;
    assert_eq!(flow_type(&verdict), "policy-verdict:unknown INGRESS");

    let p = Printer::new(print_opts(Format::Compact), Vec::new(), Vec::new());
    let mut f = forwarded_flow();
    f.source.as_mut().unwrap().pod_name.clear();
    f.source.as_mut().unwrap().identity = 6;
    f.destination.as_mut().unwrap().identity = 10;
    assert!(
        p.compact_line(&f).contains(" (remote-node) -> default/b:80 (world-ipv6) "),
        "{}",
        p.compact_line(&f)
    );
    f.source.as_mut().unwrap().identity = 11;
    f.destination.as_mut().unwrap().identity = 12;
    assert!(
        p.compact_line(&f).contains(" (encrypted-overlay) -> default/b:80 (ID:12) "),
        "{}",
        p.compact_line(&f)
    );
}

#[test]
fn identity_flags_take_cilium_s_reserved_names() {
    assert_eq!(parse_identity("host"), Ok(1));
    assert_eq!(parse_identity("world"), Ok(2));
    assert_eq!(parse_identity("kube-apiserver"), Ok(7));
    assert_eq!(parse_identity("world-ipv6"), Ok(10));
    assert_eq!(parse_identity("0x100"), Ok(256));
    let expected = "invalid security identity, expected one of [unknown host world unmanaged health init \
                    remote-node kube-apiserver ingress world-ipv4 world-ipv6 encrypted-overlay] or a numeric value";
    // "unknown" is listed, as Hubble lists it, but is not an identity to ask for.
    assert_eq!(parse_identity("unknown"), Err(expected.to_string()));
    assert_eq!(parse_identity("World"), Err(expected.to_string()));
}

/// TLS flag mistakes are reported before anything is dialed.
#[test]
fn tls_flags_are_checked_before_dialing() {
    let tls = |f: fn(&mut super::TlsOptions)| {
        let mut t = super::TlsOptions::default();
        f(&mut t);
        super::endpoint("127.0.0.1:4244", Duration::from_secs(1), &t).unwrap_err().to_string()
    };
    assert!(tls(|t| t.tls = true).starts_with("--tls needs --tls-ca-cert-files"));
    let e = tls(|t| {
        t.tls = true;
        t.tls_ca_cert_files = vec!["/nonexistent/ca.pem".into()];
    });
    assert_eq!(e, "--tls-ca-cert-files");
    // A client certificate implies TLS, and wants its key.
    let e = tls(|t| {
        t.tls_ca_cert_files = vec!["/etc/hostname".into()];
        t.tls_client_cert_file = Some("/nonexistent/c.pem".into());
    });
    assert_eq!(e, "--tls-ca-cert-files", "/etc/hostname is no PEM, and TLS was implied");
    let unix = super::TlsOptions { tls: true, ..Default::default() };
    let e = super::endpoint("unix:///run/x.sock", Duration::from_secs(1), &unix).unwrap_err().to_string();
    assert!(e.contains("a Unix socket is plaintext"), "{e}");
    assert!(super::endpoint("127.0.0.1:4244", Duration::from_secs(1), &Default::default()).is_ok());
}
