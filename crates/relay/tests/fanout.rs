//! The relay against in-process fake nodes: a peer service announcing two
//! reachable nodes and one that is not, each node serving a few flows.

use std::{net::SocketAddr, pin::Pin, time::Duration};

use tokio::net::TcpListener;
use tokio_stream::{wrappers::TcpListenerStream, Stream};
use twill_observe_proto::{
    flow::Flow,
    observer::{
        self, get_flows_response::ResponseTypes, observer_client::ObserverClient, observer_server::Observer,
        observer_server::ObserverServer,
    },
    peer::{self, peer_server::Peer, peer_server::PeerServer, ChangeNotification, ChangeNotificationType},
    prost_types::Timestamp,
    relay::NodeState,
    tonic::{self, transport::Server, Request, Response, Status},
};

type Items<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

struct FakeNode {
    name: &'static str,
    // Seconds of each flow's time.
    times: Vec<i64>,
}

fn flow_response(node: &str, secs: i64) -> observer::GetFlowsResponse {
    let time = Some(Timestamp { seconds: secs, nanos: 0 });
    observer::GetFlowsResponse {
        response_types: Some(ResponseTypes::Flow(Flow {
            time,
            node_name: node.into(),
            ..Default::default()
        })),
        node_name: node.into(),
        time,
    }
}

#[tonic::async_trait]
impl Observer for FakeNode {
    type GetFlowsStream = Items<observer::GetFlowsResponse>;
    type GetAgentEventsStream = Items<observer::GetAgentEventsResponse>;
    type GetDebugEventsStream = Items<observer::GetDebugEventsResponse>;

    async fn get_flows(
        &self,
        r: Request<observer::GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = r.into_inner();
        let skip = self.times.len().saturating_sub(req.number as usize);
        let items: Vec<_> = self.times[skip..].iter().map(|t| Ok(flow_response(self.name, *t))).collect();
        let history = tokio_stream::iter(items);
        if req.follow {
            // A following agent keeps the stream open for new flows.
            Ok(Response::new(Box::pin(tokio_stream::StreamExt::chain(history, tokio_stream::pending()))))
        } else {
            Ok(Response::new(Box::pin(history)))
        }
    }
    async fn get_agent_events(
        &self,
        _: Request<observer::GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_debug_events(
        &self,
        _: Request<observer::GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_nodes(
        &self,
        _: Request<observer::GetNodesRequest>,
    ) -> Result<Response<observer::GetNodesResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_namespaces(
        &self,
        _: Request<observer::GetNamespacesRequest>,
    ) -> Result<Response<observer::GetNamespacesResponse>, Status> {
        let ns = |n: &str| observer::Namespace { cluster: String::new(), namespace: n.into() };
        Ok(Response::new(observer::GetNamespacesResponse { namespaces: vec![ns("default"), ns(self.name)] }))
    }
    async fn server_status(
        &self,
        _: Request<observer::ServerStatusRequest>,
    ) -> Result<Response<observer::ServerStatusResponse>, Status> {
        Ok(Response::new(observer::ServerStatusResponse {
            num_flows: self.times.len() as u64,
            max_flows: 100,
            seen_flows: self.times.len() as u64,
            version: "fake".into(),
            ..Default::default()
        }))
    }
}

struct FakePeers(Vec<(String, String)>);

#[tonic::async_trait]
impl Peer for FakePeers {
    type NotifyStream = Items<ChangeNotification>;
    async fn notify(&self, _: Request<peer::NotifyRequest>) -> Result<Response<Self::NotifyStream>, Status> {
        let items: Vec<_> = self
            .0
            .iter()
            .map(|(name, address)| {
                Ok(ChangeNotification {
                    name: name.clone(),
                    address: address.clone(),
                    r#type: ChangeNotificationType::PeerAdded as i32,
                    tls: None,
                })
            })
            .collect();
        // Stays open, as a real peer service does.
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::chain(
            tokio_stream::iter(items),
            tokio_stream::pending(),
        ))))
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_from_every_node_in_order_with_the_unreachable_one_reported() {
    let (la, a) = listener().await;
    let (lb, b) = listener().await;
    // A port nothing listens on: bound, then closed.
    let (lc, c) = listener().await;
    drop(lc);
    let (lp, p) = listener().await;
    for (l, node) in [
        (la, FakeNode { name: "a", times: vec![1, 3, 5] }),
        (lb, FakeNode { name: "b", times: vec![2, 4, 6] }),
    ] {
        tokio::spawn(
            Server::builder()
                .add_service(ObserverServer::new(node))
                .serve_with_incoming(TcpListenerStream::new(l)),
        );
    }
    let peers = FakePeers(vec![
        ("a".into(), a.to_string()),
        ("b".into(), b.to_string()),
        ("c".into(), c.to_string()),
    ]);
    tokio::spawn(
        Server::builder().add_service(PeerServer::new(peers)).serve_with_incoming(TcpListenerStream::new(lp)),
    );

    let (lr, r) = listener().await;
    let config = twill_relay::Config {
        listen: r,
        peer_service: p.to_string(),
        dial_timeout: Duration::from_secs(2),
        peer_tls: None,
        server_tls: None,
    };
    tokio::spawn(twill_relay::serve(config, lr));
    let mut client = loop {
        if let Ok(c) = ObserverClient::connect(format!("http://{r}")).await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let s = client.server_status(observer::ServerStatusRequest {}).await.unwrap().into_inner();
        if s.num_connected_nodes == Some(2) && s.num_unavailable_nodes == Some(1) {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "two nodes connected, one not: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.unavailable_nodes, vec!["c".to_string()]);
    assert_eq!((status.num_flows, status.max_flows), (6, 200), "sums over the connected nodes");

    let nodes = client.get_nodes(observer::GetNodesRequest {}).await.unwrap().into_inner().nodes;
    let states: Vec<(String, NodeState)> = nodes.iter().map(|n| (n.name.clone(), n.state())).collect();
    assert_eq!(
        states,
        vec![
            ("a".into(), NodeState::NodeConnected),
            ("b".into(), NodeState::NodeConnected),
            ("c".into(), NodeState::NodeUnavailable)
        ]
    );
    assert_eq!(nodes[0].version, "fake");

    let namespaces =
        client.get_namespaces(observer::GetNamespacesRequest {}).await.unwrap().into_inner().namespaces;
    let names: Vec<&str> = namespaces.iter().map(|n| n.namespace.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "default"], "the union, once each");

    let req = observer::GetFlowsRequest { number: 4, ..Default::default() };
    let mut stream = client.get_flows(req).await.unwrap().into_inner();
    let mut times = Vec::new();
    let mut statuses = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        match r.response_types {
            Some(ResponseTypes::Flow(f)) => times.push((f.time.unwrap().seconds, r.node_name)),
            Some(ResponseTypes::NodeStatus(s)) => statuses.push((s.state_change(), s.node_names)),
            _ => {}
        }
    }
    let want: Vec<(i64, String)> =
        [(3, "a"), (4, "b"), (5, "a"), (6, "b")].iter().map(|(t, n)| (*t, n.to_string())).collect();
    assert_eq!(times, want, "the cluster's last 4, in time order, by node");
    assert_eq!(
        statuses,
        vec![
            (NodeState::NodeConnected, vec!["a".to_string(), "b".to_string()]),
            (NodeState::NodeUnavailable, vec!["c".to_string()])
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_comes_up_joins_an_open_follow_stream() {
    let (la, a) = listener().await;
    let (lc, c) = listener().await;
    drop(lc);
    let (lp, p) = listener().await;
    let node_a = FakeNode { name: "a", times: vec![1, 2] };
    tokio::spawn(
        Server::builder()
            .add_service(ObserverServer::new(node_a))
            .serve_with_incoming(TcpListenerStream::new(la)),
    );
    let peers = FakePeers(vec![("a".into(), a.to_string()), ("c".into(), c.to_string())]);
    tokio::spawn(
        Server::builder().add_service(PeerServer::new(peers)).serve_with_incoming(TcpListenerStream::new(lp)),
    );
    let (lr, r) = listener().await;
    let config = twill_relay::Config {
        listen: r,
        peer_service: p.to_string(),
        dial_timeout: Duration::from_secs(2),
        peer_tls: None,
        server_tls: None,
    };
    tokio::spawn(twill_relay::serve(config, lr));
    let mut client = loop {
        if let Ok(c) = ObserverClient::connect(format!("http://{r}")).await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client
        .server_status(observer::ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .num_connected_nodes
        != Some(1)
    {
        assert!(tokio::time::Instant::now() < deadline, "a connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let req = observer::GetFlowsRequest { number: 10, follow: true, ..Default::default() };
    let mut stream = client.get_flows(req).await.unwrap().into_inner();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an item in time")
            .unwrap()
            .unwrap()
    };
    let kinds = |r: observer::GetFlowsResponse| match r.response_types {
        Some(ResponseTypes::Flow(f)) => format!("flow {} {}", r.node_name, f.time.unwrap().seconds),
        Some(ResponseTypes::NodeStatus(s)) => format!("{:?} {}", s.state_change(), s.node_names.join(",")),
        _ => "other".into(),
    };
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(kinds(next().await));
    }
    assert_eq!(seen, ["NodeConnected a", "NodeUnavailable c", "flow a 1", "flow a 2"]);

    // c comes up on its announced address: it joins the open stream.
    let lc = TcpListener::bind(c).await.unwrap();
    let node_c = FakeNode { name: "c", times: vec![7] };
    tokio::spawn(
        Server::builder()
            .add_service(ObserverServer::new(node_c))
            .serve_with_incoming(TcpListenerStream::new(lc)),
    );
    assert_eq!(kinds(next().await), "NodeConnected c");
    assert_eq!(kinds(next().await), "flow c 7");
}
