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
    agent_events::{AgentEvents, Stamped},
    filter,
    ring::Stored,
    Directory, FlowRing,
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
        if req.first && req.follow {
            return Err(Status::invalid_argument("first and follow cannot be combined"));
        }
        let node = self.directory.read().expect("directory lock").node_name.clone();
        let (history, mut live) = self.agent_events.snapshot_and_follow();
        let (since, until) = (req.since, req.until);
        let in_range = move |e: &Stamped| {
            since.as_ref().is_none_or(|s| ts_nanos(&e.time) >= ts_nanos(s))
                && until.as_ref().is_none_or(|u| ts_nanos(&e.time) <= ts_nanos(u))
        };
        let matching: Vec<Stamped> = history.into_iter().filter(|e| in_range(e)).collect();
        let n = if req.number == 0 { matching.len() } else { (req.number as usize).min(matching.len()) };
        let last_seq = matching.last().map(|e| e.seq).unwrap_or(0);
        let selected: Vec<Stamped> = if req.first {
            matching.into_iter().take(n).collect()
        } else if req.number == 0 && req.follow && since.is_none() {
            Vec::new()
        } else {
            let skip = matching.len() - n;
            matching.into_iter().skip(skip).collect()
        };
        let follow = req.follow;
        let answer = move |e: Stamped, node: &str| observer::GetAgentEventsResponse {
            agent_event: Some(e.event),
            node_name: node.to_string(),
            time: Some(e.time),
        };
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(async move {
            for e in selected {
                if tx.send(Ok(answer(e, &node))).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(e) if e.seq > last_seq && in_range(&e) => {
                        if tx.send(Ok(answer(e, &node))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_debug_events(
        &self,
        _: Request<observer::GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented("debug events are not available from Twill"))
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
