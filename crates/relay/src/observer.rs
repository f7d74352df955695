//! `observer.Observer` for the whole cluster: each call fanned out to the
//! connected nodes and their answers combined.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    future::Future,
    pin::Pin,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use twill_observe_proto::{
    observer::{
        self, get_flows_response::ResponseTypes, observer_client::ObserverClient, observer_server::Observer,
    },
    prost_types::Timestamp,
    relay::{NodeState, NodeStatusEvent},
    tonic::{self, transport::Channel, Request, Response, Status},
};

use crate::{
    pool::{NodeView, Pool},
    sort::{self, Input, SortBuffer},
};

type Items<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Responses queued towards one client.
const CLIENT_QUEUE: usize = 1024;
/// Responses queued from all nodes of one request towards its merger.
const MERGE_QUEUE: usize = 1024;
/// Bound on one node's answer to a unary call, so one slow node does not
/// hold up `status` or `list nodes` for the rest.
const UNARY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RelayService {
    pub pool: Pool,
    pub version: String,
    pub started: Instant,
}

fn ts_nanos(t: &Timestamp) -> i128 {
    t.seconds as i128 * 1_000_000_000 + t.nanos as i128
}

/// The time a response is ordered by.
pub fn response_time(r: &observer::GetFlowsResponse) -> i128 {
    let flow_time = match &r.response_types {
        Some(ResponseTypes::Flow(f)) => f.time.as_ref(),
        _ => None,
    };
    r.time.as_ref().or(flow_time).map(ts_nanos).unwrap_or(0)
}

fn now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn node_status(state: NodeState, names: Vec<String>, message: String) -> observer::GetFlowsResponse {
    observer::GetFlowsResponse {
        response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
            state_change: state as i32,
            node_names: names,
            message,
        })),
        node_name: String::new(),
        time: Some(now()),
    }
}

/// Streams one node's answer to `req` into the merger; a failure becomes
/// a NODE_UNAVAILABLE item for the client.
async fn node_flows(
    name: String,
    channel: Channel,
    req: observer::GetFlowsRequest,
    tx: mpsc::Sender<Input<observer::GetFlowsResponse>>,
) {
    let failed =
        |message: String| Input::Now(node_status(NodeState::NodeUnavailable, vec![name.clone()], message));
    let mut stream = match ObserverClient::new(channel).get_flows(req).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let _ = tx.send(failed(s.message().to_string())).await;
            return;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(mut resp)) => {
                if resp.node_name.is_empty() {
                    resp.node_name = name.clone();
                }
                if tx.send(Input::Timed(response_time(&resp), resp)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(s) => {
                let _ = tx.send(failed(s.message().to_string())).await;
                return;
            }
        }
    }
}

/// Splits nodes into connected (with their channels) and the names of the
/// others.
fn partition(nodes: Vec<NodeView>) -> (Vec<(String, Channel)>, Vec<String>) {
    let mut up = Vec::new();
    let mut down = Vec::new();
    for n in nodes {
        match (n.state, n.channel) {
            (NodeState::NodeConnected, Some(c)) => up.push((n.name, c)),
            _ => down.push(n.name),
        }
    }
    (up, down)
}

/// Calls `call` on every connected node at once; each answer or error by
/// node name, unavailable nodes left out.
async fn each_node<T, F, Fut>(nodes: Vec<(String, Channel)>, call: F) -> Vec<(String, Result<T, String>)>
where
    F: Fn(ObserverClient<Channel>) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>> + Send + 'static,
    T: Send + 'static,
{
    let calls: Vec<_> = nodes
        .into_iter()
        .map(|(name, channel)| {
            let fut = call(ObserverClient::new(channel));
            let task = tokio::spawn(async move {
                match tokio::time::timeout(UNARY_TIMEOUT, fut).await {
                    Ok(Ok(r)) => Ok(r.into_inner()),
                    Ok(Err(s)) => Err(s.message().to_string()),
                    Err(_) => Err(format!("no answer within {UNARY_TIMEOUT:?}")),
                }
            });
            (name, task)
        })
        .collect();
    let mut out = Vec::with_capacity(calls.len());
    for (name, task) in calls {
        let result = task.await.unwrap_or_else(|e| Err(e.to_string()));
        out.push((name, result));
    }
    out
}

/// Whether the request asks for a bounded history only (which the relay
/// answers with the overall first or last `number`).
fn bounded_history(req: &observer::GetFlowsRequest) -> bool {
    req.number > 0 && !req.follow
}

/// A response a node streams, ordered by its time and tagged with the
/// node it came from.
pub trait NodeItem: Send + 'static {
    fn time_key(&self) -> i128;
    fn node_name(&self) -> &str;
    fn set_node_name(&mut self, name: String);
}

impl NodeItem for observer::GetFlowsResponse {
    fn time_key(&self) -> i128 {
        response_time(self)
    }
    fn node_name(&self) -> &str {
        &self.node_name
    }
    fn set_node_name(&mut self, name: String) {
        self.node_name = name;
    }
}

impl NodeItem for observer::GetAgentEventsResponse {
    fn time_key(&self) -> i128 {
        self.time.as_ref().map(ts_nanos).unwrap_or(0)
    }
    fn node_name(&self) -> &str {
        &self.node_name
    }
    fn set_node_name(&mut self, name: String) {
        self.node_name = name;
    }
}

impl NodeItem for observer::GetDebugEventsResponse {
    fn time_key(&self) -> i128 {
        self.time.as_ref().map(ts_nanos).unwrap_or(0)
    }
    fn node_name(&self) -> &str {
        &self.node_name
    }
    fn set_node_name(&mut self, name: String) {
        self.node_name = name;
    }
}

/// The items of a bounded request: everything the nodes sent (at most
/// `number` each), sorted, cut to the overall first or last `number`.
fn pick<T: NodeItem>(mut items: Vec<T>, number: u64, first: bool) -> Vec<T> {
    let mut buffer = SortBuffer::new(items.len().max(1));
    for f in items.drain(..) {
        buffer.push(f.time_key(), f);
    }
    let mut sorted = buffer.drain();
    let n = (number as usize).min(sorted.len());
    if first {
        sorted.truncate(n);
        sorted
    } else {
        sorted.split_off(sorted.len() - n)
    }
}

/// How an event stream is asked of one node.
type OpenStream<T> = Box<
    dyn Fn(
            ObserverClient<Channel>,
        ) -> Pin<Box<dyn Future<Output = Result<tonic::Streaming<T>, Status>> + Send>>
        + Send
        + Sync,
>;

/// Streams one node's events into `tx`, each tagged with the node's name.
/// A node that cannot be reached or fails midway only ends its own part:
/// event streams have no status item to tell the client, so it is logged.
async fn node_events<T: NodeItem>(
    name: String,
    channel: Channel,
    open: std::sync::Arc<OpenStream<T>>,
    tx: mpsc::Sender<Input<T>>,
) {
    let mut stream = match open(ObserverClient::new(channel)).await {
        Ok(s) => s,
        Err(s) => {
            tracing::warn!(node = %name, error = %s.message(), "node left out of the event stream");
            return;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(mut item)) => {
                if item.node_name().is_empty() {
                    item.set_node_name(name.clone());
                }
                if tx.send(Input::Timed(item.time_key(), item)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(s) => {
                tracing::warn!(node = %name, error = %s.message(), "node's event stream failed");
                return;
            }
        }
    }
}

/// Shape of an event request that the relay acts on itself.
#[derive(Clone, Copy)]
struct EventWindow {
    number: u64,
    first: bool,
    follow: bool,
}

/// Agent or debug events of every connected node, merged in time order.
/// A bounded history (`number` without `follow`) is cut to the overall
/// first or last `number`; a follow stream takes in nodes that connect
/// while it is open, asking those with `live` (no history).
fn relay_events<T: NodeItem>(
    pool: Pool,
    window: EventWindow,
    open: OpenStream<T>,
    live: OpenStream<T>,
) -> mpsc::Receiver<Result<T, Status>> {
    let (out_tx, out_rx) = mpsc::channel(CLIENT_QUEUE);
    let open = std::sync::Arc::new(open);
    let live = std::sync::Arc::new(live);
    tokio::spawn(async move {
        let mut changes = pool.changes();
        let (up, _) = partition(pool.nodes());
        let (node_tx, mut node_rx) = mpsc::channel::<Input<T>>(MERGE_QUEUE);
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        for (name, channel) in up {
            let task = tokio::spawn(node_events(name.clone(), channel, open.clone(), node_tx.clone()));
            running.insert(name, task);
        }
        let (in_tx, in_rx) = mpsc::channel(MERGE_QUEUE);
        let bounded = window.number > 0 && !window.follow;
        let forward = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(item) = node_rx.recv().await {
                let item = match item {
                    Input::Timed(_, r) if bounded => {
                        held.push(r);
                        continue;
                    }
                    Input::Timed(k, r) => Input::Timed(k, Ok(r)),
                    Input::Now(r) => Input::Now(Ok(r)),
                };
                if in_tx.send(item).await.is_err() {
                    return;
                }
            }
            for r in pick(held, window.number, window.first) {
                if in_tx.send(Input::Now(Ok(r))).await.is_err() {
                    return;
                }
            }
        });
        let merger = tokio::spawn(sort::merge(in_rx, out_tx.clone(), sort::SORT_BUFFER, sort::QUIET_DRAIN));
        if window.follow {
            let mut served: HashSet<String> = running.keys().cloned().collect();
            loop {
                tokio::select! {
                    _ = out_tx.closed() => break,
                    changed = changes.changed() => {
                        if changed.is_err() { break; }
                        running.retain(|_, t| !t.is_finished());
                        let (up, _) = partition(pool.nodes());
                        let new: Vec<_> = up.into_iter().filter(|(n, _)| !running.contains_key(n)).collect();
                        for (name, channel) in new {
                            // A node back after a failure already sent its
                            // history on this stream: only new events.
                            let how = if served.insert(name.clone()) { open.clone() } else { live.clone() };
                            let task = tokio::spawn(node_events(name.clone(), channel, how, node_tx.clone()));
                            running.insert(name, task);
                        }
                    }
                }
            }
            for task in running.values() {
                task.abort();
            }
        }
        drop(node_tx);
        let _ = forward.await;
        let _ = merger.await;
    });
    out_rx
}

impl RelayService {
    fn flows(
        &self,
        req: observer::GetFlowsRequest,
    ) -> mpsc::Receiver<Result<observer::GetFlowsResponse, Status>> {
        let (out_tx, out_rx) = mpsc::channel(CLIENT_QUEUE);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut changes = pool.changes();
            let (up, down) = partition(pool.nodes());
            let (in_tx, in_rx) = mpsc::channel(MERGE_QUEUE);
            let send = |r| Input::Now(Ok(r));
            if !up.is_empty() {
                let names = up.iter().map(|(n, _)| n.clone()).collect();
                let _ = in_tx.send(send(node_status(NodeState::NodeConnected, names, String::new()))).await;
            }
            if !down.is_empty() {
                let _ = in_tx.send(send(node_status(NodeState::NodeUnavailable, down, String::new()))).await;
            }
            let (node_tx, node_rx) = mpsc::channel(MERGE_QUEUE);
            let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
            for (name, channel) in up {
                running.insert(
                    name.clone(),
                    tokio::spawn(node_flows(name, channel, req.clone(), node_tx.clone())),
                );
            }
            // Statuses go ahead; flows are sorted (or picked) below.
            let forward = {
                let in_tx = in_tx.clone();
                let bounded = bounded_history(&req);
                let (number, first) = (req.number, req.first);
                tokio::spawn(async move {
                    let mut node_rx: mpsc::Receiver<Input<observer::GetFlowsResponse>> = node_rx;
                    let mut held = Vec::new();
                    while let Some(item) = node_rx.recv().await {
                        let item = match item {
                            Input::Timed(_, r) if bounded => {
                                held.push(r);
                                continue;
                            }
                            Input::Timed(k, r) => Input::Timed(k, Ok(r)),
                            Input::Now(r) => Input::Now(Ok(r)),
                        };
                        if in_tx.send(item).await.is_err() {
                            return;
                        }
                    }
                    for r in pick(held, number, first) {
                        if in_tx.send(Input::Now(Ok(r))).await.is_err() {
                            return;
                        }
                    }
                })
            };
            let merger =
                tokio::spawn(sort::merge(in_rx, out_tx.clone(), sort::SORT_BUFFER, sort::QUIET_DRAIN));
            if req.follow {
                let mut served: HashSet<String> = running.keys().cloned().collect();
                let live = observer::GetFlowsRequest { number: 0, first: false, since: None, ..req.clone() };
                // Nodes that connect while the stream is open join it.
                loop {
                    tokio::select! {
                        _ = out_tx.closed() => break,
                        changed = changes.changed() => {
                            if changed.is_err() { break; }
                            running.retain(|_, t| !t.is_finished());
                            let (up, _) = partition(pool.nodes());
                            let new: Vec<_> = up.into_iter().filter(|(n, _)| !running.contains_key(n)).collect();
                            if new.is_empty() { continue; }
                            let names = new.iter().map(|(n, _)| n.clone()).collect();
                            let _ = in_tx.send(send(node_status(NodeState::NodeConnected, names, String::new()))).await;
                            for (name, channel) in new {
                                // A node back after a failure already sent
                                // its history on this stream: only new flows.
                                let req = if served.insert(name.clone()) { req.clone() } else { live.clone() };
                                running.insert(name.clone(), tokio::spawn(node_flows(name, channel, req, node_tx.clone())));
                            }
                        }
                    }
                }
                for task in running.values() {
                    task.abort();
                }
            }
            drop(node_tx);
            drop(in_tx);
            let _ = forward.await;
            let _ = merger.await;
        });
        out_rx
    }
}

#[tonic::async_trait]
impl Observer for RelayService {
    type GetFlowsStream = Items<observer::GetFlowsResponse>;
    type GetAgentEventsStream = Items<observer::GetAgentEventsResponse>;
    type GetDebugEventsStream = Items<observer::GetDebugEventsResponse>;

    async fn get_flows(
        &self,
        request: Request<observer::GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = request.into_inner();
        if req.first && req.follow {
            return Err(Status::invalid_argument("first and follow cannot be combined"));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(self.flows(req)))))
    }

    async fn get_agent_events(
        &self,
        request: Request<observer::GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        let req = request.into_inner();
        if req.first && req.follow {
            return Err(Status::invalid_argument("first and follow cannot be combined"));
        }
        let window = EventWindow { number: req.number, first: req.first, follow: req.follow };
        let live = observer::GetAgentEventsRequest { number: 0, first: false, since: None, ..req };
        // The requests are Copy: each dial gets its own.
        let open: OpenStream<_> = Box::new(move |mut c| {
            Box::pin(async move { c.get_agent_events(req).await.map(Response::into_inner) })
        });
        let live: OpenStream<_> = Box::new(move |mut c| {
            Box::pin(async move { c.get_agent_events(live).await.map(Response::into_inner) })
        });
        let rx = relay_events(self.pool.clone(), window, open, live);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_debug_events(
        &self,
        request: Request<observer::GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        let req = request.into_inner();
        if req.first && req.follow {
            return Err(Status::invalid_argument("first and follow cannot be combined"));
        }
        let window = EventWindow { number: req.number, first: req.first, follow: req.follow };
        let live = observer::GetDebugEventsRequest { number: 0, first: false, since: None, ..req };
        // The requests are Copy: each dial gets its own.
        let open: OpenStream<_> = Box::new(move |mut c| {
            Box::pin(async move { c.get_debug_events(req).await.map(Response::into_inner) })
        });
        let live: OpenStream<_> = Box::new(move |mut c| {
            Box::pin(async move { c.get_debug_events(live).await.map(Response::into_inner) })
        });
        let rx = relay_events(self.pool.clone(), window, open, live);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_nodes(
        &self,
        _: Request<observer::GetNodesRequest>,
    ) -> Result<Response<observer::GetNodesResponse>, Status> {
        let views = self.pool.nodes();
        let (up, _) = partition(views.clone());
        let mut statuses: HashMap<String, Result<observer::ServerStatusResponse, String>> =
            each_node(up, |mut c| async move { c.server_status(observer::ServerStatusRequest {}).await })
                .await
                .into_iter()
                .collect();
        let tls_enabled = self.pool.tls_enabled();
        let nodes = views
            .into_iter()
            .map(|v| {
                let mut node = observer::Node {
                    name: v.name.clone(),
                    address: v.address.clone(),
                    tls: Some(observer::Tls {
                        enabled: tls_enabled,
                        server_name: v.tls_server_name.clone().unwrap_or_default(),
                    }),
                    ..Default::default()
                };
                match statuses.remove(&v.name) {
                    Some(Ok(s)) => {
                        node.set_state(NodeState::NodeConnected);
                        node.version = s.version;
                        node.uptime_ns = s.uptime_ns;
                        node.num_flows = s.num_flows;
                        node.max_flows = s.max_flows;
                        node.seen_flows = s.seen_flows;
                    }
                    _ => node.set_state(NodeState::NodeUnavailable),
                }
                node
            })
            .collect();
        Ok(Response::new(observer::GetNodesResponse { nodes }))
    }

    async fn get_namespaces(
        &self,
        _: Request<observer::GetNamespacesRequest>,
    ) -> Result<Response<observer::GetNamespacesResponse>, Status> {
        let (up, _) = partition(self.pool.nodes());
        let answers =
            each_node(up, |mut c| async move { c.get_namespaces(observer::GetNamespacesRequest {}).await })
                .await;
        let union: BTreeSet<(String, String)> = answers
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .flat_map(|r| r.namespaces)
            .map(|n| (n.cluster, n.namespace))
            .collect();
        let namespaces = union
            .into_iter()
            .map(|(cluster, namespace)| observer::Namespace { cluster, namespace })
            .collect();
        Ok(Response::new(observer::GetNamespacesResponse { namespaces }))
    }

    async fn server_status(
        &self,
        _: Request<observer::ServerStatusRequest>,
    ) -> Result<Response<observer::ServerStatusResponse>, Status> {
        let (up, mut unavailable) = partition(self.pool.nodes());
        let answers =
            each_node(up, |mut c| async move { c.server_status(observer::ServerStatusRequest {}).await })
                .await;
        let mut total = observer::ServerStatusResponse {
            version: self.version.clone(),
            uptime_ns: self.started.elapsed().as_nanos() as u64,
            ..Default::default()
        };
        let mut connected = 0u32;
        for (name, answer) in answers {
            match answer {
                Ok(s) => {
                    connected += 1;
                    total.num_flows += s.num_flows;
                    total.max_flows += s.max_flows;
                    total.seen_flows += s.seen_flows;
                    total.flows_rate += s.flows_rate;
                }
                Err(_) => unavailable.push(name),
            }
        }
        unavailable.sort();
        total.num_connected_nodes = Some(connected);
        total.num_unavailable_nodes = Some(unavailable.len() as u32);
        total.unavailable_nodes = unavailable;
        Ok(Response::new(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twill_observe_proto::flow::Flow;

    fn flow_at(node: &str, secs: i64) -> observer::GetFlowsResponse {
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

    #[test]
    fn bounded_requests_get_the_overall_last_or_first_n() {
        let flows = vec![flow_at("a", 1), flow_at("a", 4), flow_at("b", 2), flow_at("b", 5), flow_at("c", 3)];
        let times = |v: Vec<observer::GetFlowsResponse>| {
            v.iter().map(|r| r.time.unwrap().seconds).collect::<Vec<_>>()
        };
        assert_eq!(times(pick(flows.clone(), 3, false)), vec![3, 4, 5]);
        assert_eq!(times(pick(flows.clone(), 2, true)), vec![1, 2]);
        assert_eq!(times(pick(flows, 10, false)), vec![1, 2, 3, 4, 5]);
        assert!(pick(Vec::<observer::GetFlowsResponse>::new(), 3, false).is_empty());
    }
}
