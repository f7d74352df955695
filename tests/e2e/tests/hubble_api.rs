//! The Hubble-compatible observer API, called with a gRPC client generated
//! from Twill's .proto files the way the hubble CLI calls it.

use std::time::Duration;

use twill_e2e::{wait_until, Node};
use twill_observe_proto::{
    flow::{self, layer4::Protocol, FlowFilter},
    observer::{self, get_flows_response::ResponseTypes, observer_client::ObserverClient},
    prost_types,
    tonic::transport::{Channel, Endpoint},
};

const DENY_81: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: only-80}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"#;

async fn client(node: &Node) -> ObserverClient<Channel> {
    let channel = Endpoint::from_shared(format!("unix:{}", node.hubble_socket().display()))
        .unwrap()
        .connect()
        .await
        .expect("connecting to the observer socket");
    ObserverClient::new(channel)
}

async fn flows(client: &mut ObserverClient<Channel>, req: observer::GetFlowsRequest) -> Vec<flow::Flow> {
    let mut stream = client.get_flows(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        if let Some(ResponseTypes::Flow(f)) = item.response_types {
            assert!(!item.node_name.is_empty(), "responses carry the node name");
            out.push(f);
        }
    }
    out
}

fn dport(f: &flow::Flow) -> Option<u32> {
    match f.l4.as_ref()?.protocol.as_ref()? {
        Protocol::Tcp(t) => Some(t.destination_port),
        _ => None,
    }
}

fn tcp_flags(f: &flow::Flow) -> Option<flow::TcpFlags> {
    match f.l4.as_ref()?.protocol.as_ref()? {
        Protocol::Tcp(t) => t.flags,
        _ => None,
    }
}

#[test]
fn flows_show_labels_verdicts_reasons_and_directions() {
    let node = Node::start("hubble");
    node.endpoint("client", "default", "app=client");
    let server = node.endpoint("server", "default", "app=server");
    let server_ip = server["ipv4"].as_str().unwrap().to_string();
    let path = node.state_dir.parent().unwrap().join("only-80.yaml");
    std::fs::write(&path, DENY_81).unwrap();
    node.twill_ok(&["policy", "import", path.to_str().unwrap()]);
    let _srv =
        node.spawn_in("server", "default", &["socat", "TCP-LISTEN:80,reuseaddr,fork", "SYSTEM:echo ok"]);
    let target80 = format!("TCP:{server_ip}:80");
    assert!(wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&node.exec("client", "default", &["socat", "-T1", "-", &target80]).stdout)
            .contains("ok")
    }));
    let out = node.exec(
        "client",
        "default",
        &["socat", "-T1", "-", &format!("TCP:{server_ip}:81,connect-timeout=1")],
    );
    assert!(!out.status.success(), "port 81 is denied");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = client(&node).await;
        // Flows reach the ring asynchronously: wait for the last one sent.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let drops = flows(
                &mut c,
                observer::GetFlowsRequest {
                    number: 100,
                    whitelist: vec![FlowFilter { destination_port: vec!["81".into()], ..Default::default() }],
                    ..Default::default()
                },
            )
            .await;
            if drops.iter().any(|f| f.verdict() == flow::Verdict::Dropped) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the drop to port 81 never showed up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Everything about the allowed connection's first packet.
        let forwarded = flows(
            &mut c,
            observer::GetFlowsRequest {
                number: 100,
                whitelist: vec![FlowFilter {
                    source_pod: vec!["default/client".into()],
                    destination_port: vec!["80".into()],
                    event_type: vec![flow::EventTypeFilter { r#type: 4, ..Default::default() }],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
        .await;
        let syn = forwarded
            .iter()
            .find(|f| tcp_flags(f).is_some_and(|t| t.syn && !t.ack))
            .expect("the SYN of the allowed connection");
        assert_eq!(syn.verdict(), flow::Verdict::Forwarded);
        assert_eq!(syn.trace_observation_point(), flow::TraceObservationPoint::ToEndpoint);
        assert_eq!(syn.traffic_direction(), flow::TrafficDirection::Ingress);
        assert_eq!(syn.is_reply, Some(false));
        let src = syn.source.as_ref().unwrap();
        let dst = syn.destination.as_ref().unwrap();
        assert_eq!((src.namespace.as_str(), src.pod_name.as_str()), ("default", "client"));
        assert_eq!(dst.pod_name, "server");
        assert!(src.labels.contains(&"k8s:app=client".to_string()), "{:?}", src.labels);
        assert!(dst.labels.contains(&"k8s:app=server".to_string()));
        assert!(src.identity >= 256 && src.id > 0);
        assert_eq!(syn.ip.as_ref().unwrap().destination, server_ip);
        assert_eq!(syn.node_name, node.name);
        // Delivered to the server's eth0, whose MAC Twill derives from its address.
        let eth = syn.ethernet.as_ref().expect("ethernet addresses");
        assert!(eth.destination.starts_with("02:74:") && eth.source.starts_with("02:77:"), "{eth:?}");
        assert_eq!(syn.event_type.unwrap().r#type, 4);

        // The reply half: from the server, is_reply, seen as egress.
        let replies = flows(
            &mut c,
            observer::GetFlowsRequest {
                number: 100,
                whitelist: vec![FlowFilter {
                    source_pod: vec!["default/server".into()],
                    reply: vec![true],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
        .await;
        let synack = replies.iter().find(|f| tcp_flags(f).is_some_and(|t| t.syn && t.ack)).expect("SYN-ACK");
        assert_eq!(synack.traffic_direction(), flow::TrafficDirection::Egress);

        // The denied connection: a drop with Cilium's reason, on ingress.
        let drops = flows(
            &mut c,
            observer::GetFlowsRequest {
                number: 100,
                whitelist: vec![FlowFilter {
                    verdict: vec![flow::Verdict::Dropped as i32],
                    event_type: vec![flow::EventTypeFilter { r#type: 1, ..Default::default() }],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
        .await;
        let drop = drops.iter().find(|f| dport(f) == Some(81)).expect("a drop to port 81");
        assert_eq!(drop.drop_reason_desc(), flow::DropReason::PolicyDenied);
        assert_eq!(drop.traffic_direction(), flow::TrafficDirection::Ingress);
        assert_eq!(drop.destination.as_ref().unwrap().pod_name, "server");

        // Policy verdicts: the allowed connection with its match type.
        let verdicts = flows(
            &mut c,
            observer::GetFlowsRequest {
                number: 100,
                whitelist: vec![FlowFilter {
                    event_type: vec![flow::EventTypeFilter { r#type: 5, ..Default::default() }],
                    destination_port: vec!["80".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
        .await;
        let ingress = verdicts
            .iter()
            .find(|f| f.traffic_direction() == flow::TrafficDirection::Ingress)
            .expect("an ingress policy verdict");
        assert_eq!(ingress.verdict(), flow::Verdict::Forwarded);
        assert_eq!(ingress.policy_match_type, 2, "L3-L4");

        // Blacklist, first, number and time range.
        let all = flows(&mut c, observer::GetFlowsRequest { number: 10_000, ..Default::default() }).await;
        let no_drops = flows(
            &mut c,
            observer::GetFlowsRequest {
                number: 10_000,
                blacklist: vec![FlowFilter {
                    verdict: vec![flow::Verdict::Dropped as i32],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
        .await;
        assert!(no_drops.iter().all(|f| f.verdict() != flow::Verdict::Dropped));
        assert!(no_drops.len() < all.len());
        let first2 =
            flows(&mut c, observer::GetFlowsRequest { number: 2, first: true, ..Default::default() }).await;
        assert_eq!(first2, all[..2].to_vec());
        // Flows may still arrive after `all` was taken (conntrack reports,
        // teardown traces), so every check below is bounded by the times
        // in `all` rather than assuming the ring stopped growing.
        let newest = all.last().unwrap().time;
        let last2 =
            flows(&mut c, observer::GetFlowsRequest { number: 2, until: newest, ..Default::default() }).await;
        assert_eq!(last2, all[all.len() - 2..].to_vec());
        let after = |t: Option<prost_types::Timestamp>| {
            t.map(|mut t| {
                t.nanos += 1;
                t
            })
        };
        // Since just after the third newest: exactly the two newest of
        // `all`, then only flows newer than all of `all`.
        let since_third = all[all.len() - 3].time;
        let tail = flows(
            &mut c,
            observer::GetFlowsRequest { number: 1000, since: after(since_third), ..Default::default() },
        )
        .await;
        assert_eq!(tail[..2].to_vec(), all[all.len() - 2..].to_vec(), "the two newest flows, in order");
        let nanos = |t: &Option<prost_types::Timestamp>| {
            let t = t.as_ref().unwrap();
            t.seconds as i128 * 1_000_000_000 + t.nanos as i128
        };
        assert!(tail[2..].iter().all(|f| nanos(&f.time) > nanos(&newest)), "nothing older after `since`");
        assert!(tail.iter().all(|f| nanos(&f.time) > nanos(&since_third)));

        // Status, nodes and namespaces.
        let status = c.server_status(observer::ServerStatusRequest {}).await.unwrap().into_inner();
        assert_eq!(status.max_flows, 4095);
        assert!(status.num_flows as usize >= all.len() && status.seen_flows >= status.num_flows);
        assert!(status.version.contains("twill"));
        let nodes = c.get_nodes(observer::GetNodesRequest {}).await.unwrap().into_inner();
        assert_eq!(nodes.nodes[0].name, node.name);
        let namespaces = c.get_namespaces(observer::GetNamespacesRequest {}).await.unwrap().into_inner();
        assert!(namespaces.namespaces.iter().any(|n| n.namespace == "default"));
    });
}

#[test]
fn follow_streams_new_flows() {
    let node = Node::start("follow");
    node.endpoint("a", "default", "app=a");
    let b = node.endpoint("b", "default", "app=b");
    let b_ip = b["ipv4"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = client(&node).await;
        let mut stream = c
            .get_flows(observer::GetFlowsRequest {
                follow: true,
                whitelist: vec![FlowFilter {
                    destination_ip: vec![b_ip.clone()],
                    protocol: vec!["icmp".into()],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // Traffic after the stream started shows up in it.
        let pinger = {
            let socket = node.socket.clone();
            let bin = twill_e2e::bin_dir().join("twill");
            std::thread::spawn(move || {
                std::process::Command::new(bin)
                    .arg("--socket")
                    .arg(socket)
                    .args(["endpoint", "exec", "a", "--", "ping", "-c", "3", "-i", "0.2", &b_ip])
                    .output()
                    .unwrap()
            })
        };
        let item = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a flow within 10 s");
        let Some(ResponseTypes::Flow(f)) = item.unwrap().unwrap().response_types else {
            panic!("expected a flow")
        };
        assert_eq!(f.destination.unwrap().pod_name, "b");
        assert!(matches!(f.l4.unwrap().protocol, Some(Protocol::IcmPv4(_))));
        pinger.join().unwrap();
    });
}
