//! The Hubble-compatible `observer.Observer` gRPC service over the flow
//! ring.

use std::{
    pin::Pin,
    sync::{Arc, RwLock},
    time::Instant,
};

use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use twill_observe_proto::{
    flow::{self, Flow},
    observer::{self, get_flows_response::ResponseTypes, observer_server::Observer},
    prost_types::Timestamp,
    relay,
    tonic::{self, Request, Response, Status},
};

use crate::{
    event_ring::EventRing, filter, ring::Stored, AgentEvents, DebugEvents, Directory, FlowRing, Stamped,
    Window,
};

type Items<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Flows queued per client before the sender waits for it.
const CLIENT_QUEUE: usize = 1024;

pub struct ObserverService {
    pub ring: Arc<FlowRing>,
    pub directory: Arc<RwLock<Directory>>,
    pub version: String,
    pub started: Instant,
    /// The address `hubble` clients may use (for GetNodes).
    pub address: String,
    pub agent_events: Arc<AgentEvents>,
    pub debug_events: Arc<DebugEvents>,
}

fn ts_nanos(t: &Timestamp) -> i128 {
    t.seconds as i128 * 1_000_000_000 + t.nanos as i128
}

fn in_time_range(flow: &Flow, since: Option<&Timestamp>, until: Option<&Timestamp>) -> bool {
    let Some(t) = &flow.time else { return since.is_none() && until.is_none() };
    since.is_none_or(|s| ts_nanos(t) >= ts_nanos(s)) && until.is_none_or(|u| ts_nanos(t) <= ts_nanos(u))
}

fn response(node: &str, flow: Flow) -> observer::GetFlowsResponse {
    observer::GetFlowsResponse {
        time: flow.time,
        response_types: Some(ResponseTypes::Flow(flow)),
        node_name: node.to_string(),
    }
}

fn lost(node: &str, n: u64) -> observer::GetFlowsResponse {
    observer::GetFlowsResponse {
        response_types: Some(ResponseTypes::LostEvents(flow::LostEvent {
            source: flow::LostEventSource::HubbleRingBuffer as i32,
            num_events_lost: n,
            ..Default::default()
        })),
        node_name: node.to_string(),
        time: None,
    }
}

/// The history part of GetFlows: which stored flows to send, in order.
pub fn select_history(history: &[Stored], req: &observer::GetFlowsRequest) -> Vec<Stored> {
    // One flow decoded at a time: a query over the ring never holds more
    // than one decoded flow besides the ones it picked.
    let matching: Vec<&Stored> = history
        .iter()
        .filter(|s| {
            let flow = s.flow();
            in_time_range(&flow, req.since.as_ref(), req.until.as_ref())
                && filter::passes(&flow, &req.whitelist, &req.blacklist)
        })
        .collect();
    // number 0: everything in range (hubble sends a number unless --all).
    let n = if req.number == 0 { matching.len() } else { (req.number as usize).min(matching.len()) };
    let picked: Vec<&Stored> = if req.first {
        matching.into_iter().take(n).collect()
    } else if req.number == 0 && req.follow && req.since.is_none() {
        // Plain follow: only new flows.
        vec![]
    } else {
        let skip = matching.len() - n;
        matching.into_iter().skip(skip).collect()
    };
    picked.into_iter().cloned().collect()
}

impl ObserverService {
    /// Agent and debug events alike: the history the window selects, then,
    /// when following, what comes after it. A follower that falls behind
    /// loses events (counted in the ring) rather than slowing the agent.
    fn serve_events<T, R>(
        &self,
        ring: &Arc<EventRing<T>>,
        window: Window,
        answer: fn(Stamped<T>, &str) -> R,
    ) -> Result<Response<Items<R>>, Status>
    where
        T: Clone + Send + Sync + 'static,
        R: Send + 'static,
    {
        if window.first && window.follow {
            return Err(Status::invalid_argument("first and follow cannot be combined"));
        }
        let node = self.directory.read().expect("directory lock").node_name.clone();
        let (history, mut live) = ring.snapshot_and_follow();
        let last_seq = history.last().map(|e| e.seq).unwrap_or(0);
        let selected = window.select(history);
        let ring = ring.clone();
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(async move {
            for e in selected {
                if tx.send(Ok(answer(e, &node))).await.is_err() {
                    return;
                }
            }
            if !window.follow {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(e) if e.seq > last_seq && window.in_range(&e.time) => {
                        if tx.send(Ok(answer(e, &node))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => ring.note_lagged(n),
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Observer for ObserverService {
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
        filter::validate(&req.whitelist)
            .and_then(|()| filter::validate(&req.blacklist))
            .map_err(Status::invalid_argument)?;
        let node = self.directory.read().expect("directory lock").node_name.clone();
        let (history, mut live) = self.ring.snapshot_and_follow();
        let selected = select_history(&history, &req);
        let last_seq = history.last().map(|s| s.seq).unwrap_or(0);
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(async move {
            for stored in selected {
                if tx.send(Ok(response(&node, stored.flow()))).await.is_err() {
                    return;
                }
            }
            if !req.follow {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(stored) => {
                        if stored.seq <= last_seq {
                            continue;
                        }
                        let flow = stored.flow();
                        if !in_time_range(&flow, req.since.as_ref(), req.until.as_ref())
                            || !filter::passes(&flow, &req.whitelist, &req.blacklist)
                        {
                            continue;
                        }
                        if tx.send(Ok(response(&node, flow))).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        if tx.send(Ok(lost(&node, n))).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_agent_events(
        &self,
        request: Request<observer::GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        let req = request.into_inner();
        let window = Window {
            number: req.number,
            first: req.first,
            follow: req.follow,
            since: req.since,
            until: req.until,
        };
        let answer = |e: Stamped<flow::AgentEvent>, node: &str| observer::GetAgentEventsResponse {
            agent_event: Some(e.event),
            node_name: node.to_string(),
            time: Some(e.time),
        };
        self.serve_events(&self.agent_events, window, answer)
    }

    async fn get_debug_events(
        &self,
        request: Request<observer::GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        let req = request.into_inner();
        let window = Window {
            number: req.number,
            first: req.first,
            follow: req.follow,
            since: req.since,
            until: req.until,
        };
        let answer = |e: Stamped<flow::DebugEvent>, node: &str| observer::GetDebugEventsResponse {
            debug_event: Some(e.event),
            node_name: node.to_string(),
            time: Some(e.time),
        };
        self.serve_events(&self.debug_events, window, answer)
    }

    async fn get_nodes(
        &self,
        _: Request<observer::GetNodesRequest>,
    ) -> Result<Response<observer::GetNodesResponse>, Status> {
        let name = self.directory.read().expect("directory lock").node_name.clone();
        let mut node = observer::Node {
            name,
            version: self.version.clone(),
            address: self.address.clone(),
            uptime_ns: self.started.elapsed().as_nanos() as u64,
            num_flows: self.ring.len() as u64,
            max_flows: self.ring.capacity() as u64,
            seen_flows: self.ring.seen(),
            ..Default::default()
        };
        node.set_state(relay::NodeState::NodeConnected);
        Ok(Response::new(observer::GetNodesResponse { nodes: vec![node] }))
    }

    async fn get_namespaces(
        &self,
        _: Request<observer::GetNamespacesRequest>,
    ) -> Result<Response<observer::GetNamespacesResponse>, Status> {
        let dir = self.directory.read().expect("directory lock");
        let namespaces = dir
            .namespaces
            .iter()
            .map(|ns| observer::Namespace { cluster: String::new(), namespace: ns.clone() })
            .collect();
        Ok(Response::new(observer::GetNamespacesResponse { namespaces }))
    }

    async fn server_status(
        &self,
        _: Request<observer::ServerStatusRequest>,
    ) -> Result<Response<observer::ServerStatusResponse>, Status> {
        let uptime = self.started.elapsed();
        let seen = self.ring.seen();
        Ok(Response::new(observer::ServerStatusResponse {
            num_flows: self.ring.len() as u64,
            max_flows: self.ring.capacity() as u64,
            seen_flows: seen,
            uptime_ns: uptime.as_nanos() as u64,
            version: self.version.clone(),
            flows_rate: seen as f64 / uptime.as_secs_f64().max(1.0),
            ..Default::default()
        }))
    }
}
