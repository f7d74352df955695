//! The generated server and client talk to each other over a Unix socket and
//! over loopback TCP, the two transports a Hubble-compatible server offers.

use std::path::PathBuf;
use std::pin::Pin;

use tokio_stream::Stream;
use tonic::transport::{server::TcpIncoming, Endpoint, Server};
use tonic::{Request, Response, Status};
use twill_observe_proto::observer::observer_client::ObserverClient;
use twill_observe_proto::observer::observer_server::{Observer, ObserverServer};
use twill_observe_proto::observer::{self, get_flows_response::ResponseTypes};
use twill_observe_proto::{flow, relay};

type Items<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves `number` synthetic flows and fixed status/node answers.
struct FakeObserver;

#[tonic::async_trait]
impl Observer for FakeObserver {
    type GetFlowsStream = Items<observer::GetFlowsResponse>;
    type GetAgentEventsStream = Items<observer::GetAgentEventsResponse>;
    type GetDebugEventsStream = Items<observer::GetDebugEventsResponse>;

    async fn get_flows(
        &self,
        request: Request<observer::GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = request.into_inner();
        let dropped_only = req.whitelist.iter().any(|f| f.verdict.contains(&(flow::Verdict::Dropped as i32)));
        let items: Vec<_> = (0..req.number)
            .map(|i| {
                let mut f = flow::Flow {
                    uuid: format!("flow-{i}"),
                    node_name: "node-1".into(),
                    ..Default::default()
                };
                f.set_verdict(if dropped_only { flow::Verdict::Dropped } else { flow::Verdict::Forwarded });
                Ok(observer::GetFlowsResponse {
                    response_types: Some(ResponseTypes::Flow(f)),
                    node_name: "node-1".into(),
                    time: None,
                })
            })
            .collect();
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
        let mut node = observer::Node { name: "node-1".into(), ..Default::default() };
        node.set_state(relay::NodeState::NodeConnected);
        Ok(Response::new(observer::GetNodesResponse { nodes: vec![node] }))
    }

    async fn get_namespaces(
        &self,
        _: Request<observer::GetNamespacesRequest>,
    ) -> Result<Response<observer::GetNamespacesResponse>, Status> {
        Ok(Response::new(observer::GetNamespacesResponse {
            namespaces: vec![observer::Namespace {
                cluster: "default".into(),
                namespace: "kube-system".into(),
            }],
        }))
    }

    async fn server_status(
        &self,
        _: Request<observer::ServerStatusRequest>,
    ) -> Result<Response<observer::ServerStatusResponse>, Status> {
        Ok(Response::new(observer::ServerStatusResponse {
            num_flows: 3,
            max_flows: 4095,
            seen_flows: 10,
            uptime_ns: 1_000,
            version: "twill-test".into(),
            flows_rate: 0.5,
            ..Default::default()
        }))
    }
}

async fn exercise(mut client: ObserverClient<tonic::transport::Channel>) {
    let status = client.server_status(observer::ServerStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((status.num_flows, status.max_flows, status.seen_flows), (3, 4095, 10));
    assert_eq!(status.version, "twill-test");

    let req = observer::GetFlowsRequest {
        number: 3,
        whitelist: vec![flow::FlowFilter {
            verdict: vec![flow::Verdict::Dropped as i32],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut stream = client.get_flows(req).await.unwrap().into_inner();
    let mut uuids = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        assert_eq!(item.node_name, "node-1");
        match item.response_types {
            Some(ResponseTypes::Flow(f)) => {
                assert_eq!(f.verdict(), flow::Verdict::Dropped);
                uuids.push(f.uuid);
            }
            other => panic!("expected a flow, got {other:?}"),
        }
    }
    assert_eq!(uuids, ["flow-0", "flow-1", "flow-2"]);

    let nodes = client.get_nodes(observer::GetNodesRequest {}).await.unwrap().into_inner();
    assert_eq!(nodes.nodes.len(), 1);
    assert_eq!(nodes.nodes[0].state(), relay::NodeState::NodeConnected);

    let ns = client.get_namespaces(observer::GetNamespacesRequest {}).await.unwrap().into_inner();
    assert_eq!(ns.namespaces[0].namespace, "kube-system");

    let err = client.get_agent_events(observer::GetAgentEventsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn unix_socket_roundtrip() {
    let dir: PathBuf = std::env::temp_dir().join(format!("twill-observe-proto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("observer.sock");
    let _ = std::fs::remove_file(&sock);

    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let server = tokio::spawn(
        Server::builder().add_service(ObserverServer::new(FakeObserver)).serve_with_incoming(incoming),
    );

    let channel = Endpoint::from_shared(format!("unix:{}", sock.display())).unwrap().connect().await.unwrap();
    exercise(ObserverClient::new(channel)).await;

    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn loopback_tcp_roundtrip() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        Server::builder()
            .add_service(ObserverServer::new(FakeObserver))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    let client = ObserverClient::connect(format!("http://{addr}")).await.unwrap();
    exercise(client).await;

    server.abort();
}
