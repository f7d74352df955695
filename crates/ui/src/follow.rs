//! The one task that reads the Hubble server: `GetFlows{number: 4095,
//! follow: true}` into the store, node list from `ServerStatus`, and
//! reconnecting with backoff when the server goes away.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::sync::Mutex;
use twill_observe_proto::{
    observer::{
        get_flows_response::ResponseTypes, observer_client::ObserverClient, GetFlowsRequest,
        ServerStatusRequest,
    },
    tonic::transport::Channel,
};

use crate::store::{Store, CAPACITY};

/// Opens a client to the Hubble server; the error is shown in the page.
pub type Connect = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<ObserverClient<Channel>, String>> + Send>> + Send + Sync,
>;

const MAX_BACKOFF: Duration = Duration::from_secs(10);
const STATUS_EVERY: Duration = Duration::from_secs(3);

async fn refresh_status(client: &mut ObserverClient<Channel>, store: &Mutex<Store>) {
    if let Ok(s) = client.server_status(ServerStatusRequest {}).await {
        let s = s.into_inner();
        let mut nodes = Vec::new();
        if let Some(n) = s.num_connected_nodes {
            nodes.push(format!("{n} connected"));
        }
        if let Some(n) = s.num_unavailable_nodes.filter(|n| *n > 0) {
            nodes.push(format!("{n} unavailable"));
        }
        if nodes.is_empty() {
            nodes.push("1 (agent)".into());
        }
        store.lock().await.set_nodes(nodes);
    }
}

/// One session: returns why it ended.
async fn session(connect: &Connect, store: &Mutex<Store>, number: u64) -> String {
    let mut client = match connect().await {
        Ok(c) => c,
        Err(e) => return e,
    };
    refresh_status(&mut client, store).await;
    let request = GetFlowsRequest { number, follow: true, ..Default::default() };
    let mut stream = match client.get_flows(request).await {
        Ok(s) => s.into_inner(),
        Err(e) => return format!("GetFlows: {}", e.message()),
    };
    store.lock().await.set_state("connected", String::new());
    let mut tick = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            m = stream.message() => match m {
                Ok(Some(resp)) => match resp.response_types {
                    Some(ResponseTypes::Flow(f)) => store.lock().await.push(f),
                    Some(ResponseTypes::LostEvents(l)) => store.lock().await.lost(l.num_events_lost),
                    _ => {}
                },
                Ok(None) => return "the server ended the flow stream".into(),
                Err(e) => return format!("flow stream: {}", e.message()),
            },
            _ = tick.tick() => refresh_status(&mut client, store).await,
        }
    }
}

/// Runs forever. After a drop only flows newer than what we have matter,
/// but the server cannot be asked for "since seq", so reconnects ask for
/// none of the backlog and follow from now on.
pub async fn run(connect: Connect, store: Arc<Mutex<Store>>) {
    let mut backoff = Duration::from_millis(500);
    let mut number = CAPACITY as u64;
    loop {
        let why = session(&connect, &store, number).await;
        let mut s = store.lock().await;
        if s.status().state == "connected" {
            // It worked for a while: retry soon.
            backoff = Duration::from_millis(500);
        }
        s.set_state("disconnected", why);
        drop(s);
        number = 0;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        store.lock().await.set_state("connecting", String::new());
    }
}
