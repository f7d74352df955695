//! The API server: a Unix socket, one thread per connection, one JSON
//! request and one JSON response each. Operations are serialised by the
//! agent lock; each is short (milliseconds).

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::{
        fs::PermissionsExt,
        net::{UnixListener, UnixStream},
    },
    path::Path,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use tracing::{debug, warn};
use twill_api::{ApiError, Request, Response};

use crate::{agent::Agent, error::AgentError, events::EventHub};

pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!("another agent is already serving on {}", path.display());
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("binding API socket {}: {e}", path.display()))?;
    // The API can create namespaces and devices: root only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// What the serving loop should do after a request.
enum After {
    Continue,
    Exit,
}

pub fn serve(
    listener: UnixListener,
    agent: Arc<Mutex<Agent>>,
    hub: Arc<EventHub>,
    directory: Arc<RwLock<twill_observe::Directory>>,
    api_metrics: crate::metrics::ApiMetrics,
) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let agent = agent.clone();
                let hub = hub.clone();
                let directory = directory.clone();
                let api_metrics = api_metrics.clone();
                std::thread::spawn(move || {
                    if let After::Exit = handle(stream, &agent, &hub, &directory, &api_metrics) {
                        std::process::exit(0);
                    }
                });
            }
            Err(e) => warn!("accepting API connection: {e}"),
        }
    }
}

fn handle(
    stream: UnixStream,
    agent: &Mutex<Agent>,
    hub: &EventHub,
    directory: &RwLock<twill_observe::Directory>,
    api_metrics: &crate::metrics::ApiMetrics,
) -> After {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    if let Err(e) = reader.read_line(&mut line) {
        debug!("reading API request: {e}");
        return After::Continue;
    }
    let (response, after) = match serde_json::from_str::<Request>(&line) {
        Ok(Request::PolicyWait { revision, timeout_ms }) => {
            (wait_for_revision(agent, revision, timeout_ms), After::Continue)
        }
        Ok(Request::Monitor { types }) => {
            stream_events(&stream, hub, &types);
            return After::Continue;
        }
        Ok(request) => {
            debug!(?request, "API request");
            let mut agent = agent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let exit = matches!(request, Request::Uninstall);
            let changes_state = changes_state(&request);
            let operation = serde_json::to_value(&request)
                .ok()
                .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_string))
                .unwrap_or_default();
            let started = std::time::Instant::now();
            let result = dispatch(&mut agent, request);
            api_metrics.duration.observe(&[&operation], started.elapsed().as_secs_f64());
            // Flows name endpoints from this snapshot: rebuild it after
            // anything that can change endpoints, identities or namespaces.
            if changes_state && !exit {
                match agent.directory() {
                    Ok(d) => *directory.write().unwrap_or_else(|p| p.into_inner()) = d,
                    Err(e) => warn!("refreshing the flow directory: {e}"),
                }
            }
            match result {
                Ok(value) => (Response::Ok(value), if exit { After::Exit } else { After::Continue }),
                Err(e) => (Response::Error(e.to_api()), After::Continue),
            }
        }
        Err(e) => (
            Response::Error(ApiError {
                kind: "invalid".into(),
                message: format!("malformed API request: {e}"),
            }),
            After::Continue,
        ),
    };
    let mut out = serde_json::to_vec(&response).expect("responses serialize");
    out.push(b'\n');
    drop(response);
    // Before the reply, so a client that sees it sees the memory returned.
    release_freed_memory();
    let _ = (&stream).write_all(&out);
    after
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

/// Whether a request can change what flows are decoded with; reads don't.
fn changes_state(request: &Request) -> bool {
    !matches!(
        request,
        Request::Status
            | Request::EndpointList { .. }
            | Request::EndpointGet { .. }
            | Request::IdentityList
            | Request::IdentityGet { .. }
            | Request::NamespaceList
            | Request::NamespaceGet { .. }
            | Request::BpfIpcacheList
            | Request::BpfEndpointList
            | Request::BpfMetricsList
            | Request::PolicyGet
            | Request::PolicyTrace(_)
            | Request::BpfPolicyGet { .. }
            | Request::BpfCtList
    )
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
fn wait_for_revision(agent: &Mutex<Agent>, revision: u64, timeout_ms: u64) -> Response {
    let deadline = crate::policy::wait_deadline(timeout_ms);
    loop {
        let (current, realized) = {
            let agent = agent.lock().unwrap_or_else(|p| p.into_inner());
            (agent.policy.revision, agent.policy_realized_revision())
        };
        let realized = match realized {
            Ok(r) => r,
            Err(e) => return Response::Error(e.to_api()),
        };
        if revision > current {
            return Response::Error(ApiError {
                kind: "invalid".into(),
                message: format!("policy revision {revision} does not exist yet (current is {current})"),
            });
        }
        if realized >= revision {
            return Response::Ok(serde_json::json!({ "revision": realized }));
        }
        if std::time::Instant::now() >= deadline {
            return Response::Error(ApiError {
                kind: "timeout".into(),
                message: format!("endpoints enforce revision {realized}, not yet {revision}"),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json<T: serde::Serialize>(value: T) -> Result<serde_json::Value, AgentError> {
    serde_json::to_value(value).map_err(|e| AgentError::Internal(e.to_string()))
}

fn dispatch(agent: &mut Agent, request: Request) -> Result<serde_json::Value, AgentError> {
    match request {
        Request::Status => json(agent.status()?),
        Request::EndpointCreate { name, namespace, labels, ports } => {
            json(agent.endpoint_create(&name, &namespace, &labels, &ports)?)
        }
        Request::EndpointList { namespace } => json(agent.endpoint_list(namespace.as_deref())?),
        Request::EndpointGet { name, namespace } => json(agent.endpoint_get(&name, &namespace)?),
        Request::EndpointDelete { name, namespace } => json(agent.endpoint_delete(&name, &namespace)?),
        Request::EndpointLabel { name, namespace, set, remove } => {
            json(agent.endpoint_label(&name, &namespace, &set, &remove)?)
        }
        Request::IdentityList => json(agent.identity_list()?),
        Request::IdentityGet { id } => json(agent.identity_get(id)?),
        Request::NamespaceCreate { name, labels } => json(agent.namespace_create(&name, &labels)?),
        Request::NamespaceList => json(agent.namespace_list()?),
        Request::NamespaceGet { name } => json(agent.namespace_get(&name)?),
        Request::NamespaceLabel { name, set, remove } => json(agent.namespace_label(&name, &set, &remove)?),
        Request::NamespaceDelete { name } => json(agent.namespace_delete(&name)?),
        Request::BpfIpcacheList => json(agent.bpf_ipcache()?),
        Request::BpfEndpointList => json(agent.bpf_endpoints()?),
        Request::BpfMetricsList => json(agent.bpf_metrics()?),
        Request::PolicyImport { files } => json(agent.policy_import(&files)?),
        Request::PolicyGet => json(agent.policy_get()),
        Request::PolicyDelete { name, namespace, kind, all } => {
            json(agent.policy_delete(name.as_deref(), namespace.as_deref(), kind.as_deref(), all)?)
        }
        Request::PolicyWait { .. } | Request::Monitor { .. } => {
            unreachable!("handled without holding the agent lock")
        }
        Request::PolicyTrace(req) => json(agent.policy_trace(&req)?),
        Request::BpfPolicyGet { name, namespace } => json(agent.bpf_policy_get(&name, &namespace)?),
        Request::BpfCtList => json(agent.bpf_ct_list()?),
        Request::Uninstall => json(agent.uninstall()?),
    }
}
