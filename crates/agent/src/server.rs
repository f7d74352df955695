//! The API server: a Unix socket, one thread per connection, one JSON
//! request and one JSON response each. It only translates: reads go to
//! the agent's queries, writes become a `Change` for the agent's one entry
//! point. Operations are serialised by the agent lock; each is short.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::{
        fs::PermissionsExt,
        net::{UnixListener, UnixStream},
    },
    path::Path,
    sync::{mpsc::Sender, Arc, Mutex},
    time::{Duration, Instant},
};

use tracing::{debug, warn};
use twill_api::{ApiError, Request, Response};

use crate::{
    agent::{Agent, Change, Outcome},
    error::{AgentError, Result},
    events::EventHub,
    lifecycle::Shutdown,
    metrics::ApiMetrics,
};

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another agent is already serving on {0}")]
    InUse(String),
    #[error("preparing API socket {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let io = |source| BindError::Io { path: path.display().to_string(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    // The API can create namespaces and devices: root only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Everything a connection handler needs.
#[derive(Clone)]
pub struct Context {
    pub agent: Arc<Mutex<Agent>>,
    pub hub: Arc<EventHub>,
    pub metrics: ApiMetrics,
    pub shutdown: Sender<Shutdown>,
}

/// Accepts connections until the process ends.
pub fn serve(listener: UnixListener, context: Context) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let context = context.clone();
                std::thread::spawn(move || handle(stream, &context));
            }
            Err(e) => warn!("accepting API connection: {e}"),
        }
    }
}

fn handle(stream: UnixStream, context: &Context) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut line = String::new();
    if let Err(e) = BufReader::new(&stream).read_line(&mut line) {
        debug!("reading API request: {e}");
        return;
    }
    let request = match serde_json::from_str::<Request>(&line) {
        Ok(request) => request,
        Err(e) => {
            let error = ApiError { kind: "invalid".into(), message: format!("malformed API request: {e}") };
            return respond(&stream, Response::Error(error));
        }
    };
    let uninstall = matches!(request, Request::Uninstall);
    let response = match request {
        Request::PolicyWait { revision, timeout_ms, all_nodes } => {
            wait_for_revision(&context.agent, revision, timeout_ms, all_nodes)
        }
        Request::Monitor { types } => return stream_events(&stream, &context.hub, &types),
        request => {
            debug!(?request, "API request");
            let operation = serde_json::to_value(&request)
                .ok()
                .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_string))
                .unwrap_or_default();
            let started = Instant::now();
            let result = {
                let mut agent = context.agent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                dispatch(&mut agent, request)
            };
            context.metrics.duration.observe(&[&operation], started.elapsed().as_secs_f64());
            match result {
                Ok(value) => Response::Ok(value),
                Err(e) => Response::Error(e.to_api()),
            }
        }
    };
    let answered = matches!(response, Response::Ok(_));
    respond(&stream, response);
    if uninstall && answered {
        // Answered: now the agent may go.
        let _ = context.shutdown.send(Shutdown::Uninstalled);
    }
}

fn respond(stream: &UnixStream, response: Response) {
    let mut out = serde_json::to_vec(&response).expect("responses serialize");
    out.push(b'\n');
    // A large answer (a 10,000-entry map listing) is several MiB: free it
    // before trimming, or its pages stay.
    drop(response);
    // Before the reply, so a client that sees it sees the memory returned.
    release_freed_memory();
    let _ = (&*stream).write_all(&out);
}

/// A 10,000-entry policy import or map listing peaks at 15-20 MiB of
/// short-lived allocations; glibc keeps the freed pages in the connection
/// thread's arena (every later connection thread reuses that arena), so
/// without this the agent's RSS stays at its highest peak. malloc_trim
/// returns free pages of every arena to the kernel; with a few MiB live it
/// takes well under a millisecond.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only works on glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Writes events as JSON lines until the client goes away.
fn stream_events(stream: &UnixStream, hub: &EventHub, types: &[String]) {
    let _ = stream.set_read_timeout(None);
    let events = hub.subscribe();
    loop {
        match events.recv_timeout(Duration::from_millis(500)) {
            Ok(event) => {
                let event = crate::events::to_monitor_event(&event);
                if !types.is_empty() && !types.contains(&event.kind) {
                    continue;
                }
                let mut line = serde_json::to_vec(&event).expect("events serialize");
                line.push(b'\n');
                if (&*stream).write_all(&line).is_err() {
                    return;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // Notice clients that left while nothing happened.
                let mut probe = [0u8; 1];
                let _ = stream.set_nonblocking(true);
                let gone = matches!((&*stream).read(&mut probe), Ok(0));
                let _ = stream.set_nonblocking(false);
                if gone {
                    return;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Polls (with a deadline) until every endpoint enforces `revision`.
fn wait_for_revision(agent: &Mutex<Agent>, revision: u64, timeout_ms: u64, all_nodes: bool) -> Response {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let (current, realized, nodes) = {
            let agent = agent.lock().unwrap_or_else(|p| p.into_inner());
            let nodes = all_nodes.then(|| agent.cluster_policy_revisions());
            (agent.policy_revision(), agent.policy_realized_revision(), nodes)
        };
        let realized = match realized {
            Ok(r) => r,
            Err(e) => return Response::Error(e.to_api()),
        };
        let behind: Vec<String> = match nodes {
            None => Vec::new(),
            Some(Err(e)) => return Response::Error(e.to_api()),
            Some(Ok(nodes)) => {
                nodes.into_iter().filter(|(_, r)| *r < revision).map(|(n, r)| format!("{n} at {r}")).collect()
            }
        };
        if revision > current {
            return Response::Error(ApiError {
                kind: "invalid".into(),
                message: format!("policy revision {revision} does not exist yet (current is {current})"),
            });
        }
        if realized >= revision && behind.is_empty() {
            return Response::Ok(serde_json::json!({ "revision": realized }));
        }
        if Instant::now() >= deadline {
            let message = if realized < revision {
                format!("endpoints enforce revision {realized}, not yet {revision}")
            } else {
                format!("nodes not yet at revision {revision}: {}", behind.join(", "))
            };
            return Response::Error(ApiError { kind: "timeout".into(), message });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json<T: serde::Serialize>(value: T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| AgentError::Internal(format!("encoding the response: {e}")))
}

fn apply(agent: &mut Agent, change: Change) -> Result<serde_json::Value> {
    match agent.apply(change)? {
        Outcome::Endpoint(e) => json(e),
        Outcome::Namespace(n) => json(n),
        Outcome::Policy(p) => json(p),
        Outcome::CniAttached(a) => json(a),
        Outcome::CniRemoved(r) => json(r),
        Outcome::Service(s) => json(s),
        Outcome::ServicesImported(s) => json(s),
        Outcome::Synced => json(serde_json::json!({})),
        Outcome::Settings(s) => json(s),
        Outcome::EndpointSettings(s) => json(s),
    }
}

fn dispatch(agent: &mut Agent, request: Request) -> Result<serde_json::Value> {
    match request {
        Request::Status => json(agent.status()?),
        Request::ConfigGet => json(agent.settings()),
        Request::EndpointConfig { name, namespace, settings } => {
            let change = crate::settings::parse_endpoint(&settings)?;
            apply(agent, Change::EndpointSettings { name, namespace, change })
        }
        Request::ConfigSet { settings } => apply(agent, Change::Settings(crate::settings::parse(&settings)?)),
        Request::EndpointCreate { name, namespace, labels, ports } => {
            apply(agent, Change::EndpointCreate { name, namespace, labels, ports })
        }
        Request::EndpointList { namespace } => json(agent.endpoint_list(namespace.as_deref())?),
        Request::EndpointGet { name, namespace } => json(agent.endpoint_get(&name, &namespace)?),
        Request::EndpointDelete { name, namespace } => {
            apply(agent, Change::EndpointDelete { name, namespace })
        }
        Request::EndpointLabel { name, namespace, set, remove } => {
            apply(agent, Change::EndpointLabel { name, namespace, set, remove })
        }
        Request::IdentityList => json(agent.identity_list()?),
        Request::IdentityGet { id } => json(agent.identity_get(id)?),
        Request::NamespaceCreate { name, labels } => apply(agent, Change::NamespaceCreate { name, labels }),
        Request::NamespaceList => json(agent.namespace_list()?),
        Request::NamespaceGet { name } => json(agent.namespace_get(&name)?),
        Request::NamespaceLabel { name, set, remove } => {
            apply(agent, Change::NamespaceLabel { name, set, remove })
        }
        Request::NamespaceDelete { name } => apply(agent, Change::NamespaceDelete { name }),
        Request::BpfIpcacheList => json(agent.bpf_ipcache()?),
        Request::BpfEndpointList => json(agent.bpf_endpoints()?),
        Request::BpfMetricsList => json(agent.bpf_metrics()?),
        Request::PolicyImport { files } => apply(agent, Change::PolicyImport { files }),
        Request::PolicyGet => json(agent.policy_get()),
        Request::PolicyDelete { name, namespace, kind, all, labels } => {
            apply(agent, Change::PolicyDelete { name, namespace, kind, labels, all })
        }
        Request::PolicyWait { .. } | Request::Monitor { .. } => {
            Err(AgentError::Internal("streaming requests are served without the agent lock".into()))
        }
        Request::PolicyTrace(req) => json(agent.policy_trace(&req)?),
        Request::BpfPolicyGet { name, namespace } => json(agent.bpf_policy_get(&name, &namespace)?),
        Request::BpfCtList => json(agent.bpf_ct_list()?),
        Request::Uninstall => json(agent.uninstall()?),
        Request::CniAdd(add) => apply(agent, Change::CniAdd(add)),
        Request::CniDel(target) => apply(agent, Change::CniDel(target)),
        Request::CniGc(gc) => apply(agent, Change::CniGc(gc)),
        Request::CniCheck(check) => json(agent.cni_check(&check)?),
        Request::ServiceCreate(req) => apply(agent, Change::ServiceCreate(req)),
        Request::ServiceImport { files } => apply(agent, Change::ServiceImport { files }),
        Request::ServiceList { namespace } => json(agent.service_list(namespace.as_deref())?),
        Request::ServiceGet { name, namespace } => json(agent.service_get(&name, &namespace)?),
        Request::ServiceDelete { name, namespace, all } => {
            apply(agent, Change::ServiceDelete { name, namespace, all })
        }
        Request::BpfLbList => json(agent.bpf_lb_list()?),
        Request::NodeList => json(agent.node_list()?),
        Request::NodeGet { name } => json(agent.node_get(&name)?),
    }
}
