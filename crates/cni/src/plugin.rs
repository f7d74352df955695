//! One plugin invocation: environment and stdin in, a CNI answer out.
//! Everything but the endpoint itself is the agent's: this side only
//! decides names and labels, talks to the agent, and queues what cannot
//! wait for it.

use std::{
    collections::BTreeMap,
    io::Write,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};
use twill_api::{self as api, Client, ClientError, Request};

use crate::{
    config::{version_of, NetConf},
    containerd,
    env::{Command, Env},
    error::{code, CniError},
    result::{self, Attachment},
    version::{Version, SUPPORTED},
};

/// What the binary prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub exit_code: i32,
}

/// Runs one invocation. `get` reads an environment variable.
pub fn run(get: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Output {
    // The version to answer in, as far as it can be told: even a broken
    // config is answered in the version it asked for.
    let stated = serde_json::from_slice::<Value>(stdin).ok().and_then(|v| version_of(&v).ok());
    match invoke(get, stdin) {
        Ok(Some(value)) => Output { stdout: format!("{value}\n"), exit_code: 0 },
        Ok(None) => Output { stdout: String::new(), exit_code: 0 },
        Err(e) => Output { stdout: format!("{}\n", e.to_json(stated)), exit_code: 1 },
    }
}

fn invoke(get: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let env = Env::read(get)?;
    if env.command == Command::Version {
        return Ok(Some(version_answer(stdin)));
    }
    let conf = NetConf::parse(stdin)?;
    let gate = |since: &str| {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("{:?} is not part of CNI {} (it arrived in {since})", env.command, conf.version),
        ))
    };
    match env.command {
        Command::Check if !conf.version.has_check() => return gate("0.4.0"),
        Command::Status | Command::Gc if !conf.version.has_status_and_gc() => return gate("1.1.0"),
        _ => {}
    }
    let client = Client::new(&conf.agent_socket);
    match env.command {
        Command::Add => add(&client, &env, &conf).map(Some),
        Command::Del => del(&client, &env, &conf).map(|()| None),
        Command::Check => check(&client, &env, &conf).map(|()| None),
        Command::Status => status(&client, &conf).map(|()| None),
        Command::Gc => gc(&client, &conf).map(|()| None),
        Command::Version => unreachable!("answered above"),
    }
}

fn version_answer(stdin: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).and_then(Version::parse));
    json!({
        "cniVersion": asked.unwrap_or(Version::LATEST).as_str(),
        "supportedVersions": SUPPORTED.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
}

/// An agent error in CNI terms.
fn agent_error(e: ClientError, what: &str) -> CniError {
    match e {
        ClientError::Unreachable { .. } => {
            CniError::new(code::TRY_AGAIN_LATER, format!("{what}: {e}; try again once the agent runs"))
        }
        ClientError::Agent(api) => {
            let code = match api.kind.as_str() {
                "invalid" => code::INVALID_CONFIG,
                "not-found" => code::UNKNOWN_CONTAINER,
                _ => code::AGENT,
            };
            CniError::new(code, format!("{what}: the Twill agent refused: {}", api.message))
        }
        other => CniError::new(code::AGENT, format!("{what}: {other}")),
    }
}

/// Endpoint names are DNS labels: a container ID or pod name is folded
/// into one (lowercase, other characters to '-', at most 63 with a hash
/// of the original when shortened). A second interface adds its name.
pub fn endpoint_name(base: &str, ifname: &str) -> String {
    let full = if ifname == "eth0" { base.to_string() } else { format!("{base}-{ifname}") };
    let mut name: String =
        full.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    name = name.trim_matches('-').to_string();
    if name.len() > 63 || name.is_empty() || name != full {
        // A folded name could collide with another original: the hash of
        // the original keeps them apart.
        let hash = fnv1a(full.as_bytes());
        name.truncate(54);
        let name = name.trim_end_matches('-');
        return if name.is_empty() { format!("c-{hash:08x}") } else { format!("{name}-{hash:08x}") };
    }
    name
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ *b as u32).wrapping_mul(0x0100_0193))
}

/// Namespace, name and labels of the endpoint for this attachment.
fn placement(env: &Env, conf: &NetConf) -> Result<(String, String, Vec<String>), CniError> {
    if let (Some(ns), Some(pod)) = (env.arg("K8S_POD_NAMESPACE"), env.arg("K8S_POD_NAME")) {
        return Ok((ns.to_string(), endpoint_name(pod, &env.ifname), vec![]));
    }
    let (id, labels) = match &conf.containerd {
        Some(c) => containerd::labels(c, &env.container_id).map_err(|e| match e {
            containerd::ContainerdError::NotFound { .. } => {
                CniError::new(code::UNKNOWN_CONTAINER, format!("CNI_CONTAINERID {:?}: {e}", env.container_id))
            }
            other => CniError::new(
                code::TRY_AGAIN_LATER,
                format!("reading the labels of CNI_CONTAINERID {:?}: {other}", env.container_id),
            ),
        })?,
        None => (env.container_id.clone(), BTreeMap::new()),
    };
    let labels = labels.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok((conf.namespace.clone(), endpoint_name(&id, &env.ifname), labels))
}

fn add(client: &Client, env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let (namespace, name, labels) = placement(env, conf)?;
    let request = Request::CniAdd(api::CniAdd {
        network: conf.name.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        netns: env.netns.clone(),
        namespace,
        name,
        labels,
    });
    let done: api::CniAttached = client.call(&request).map_err(|e| agent_error(e, "ADD"))?;
    let address = done.endpoint.ipv4.parse().map_err(|_| {
        CniError::new(code::AGENT, format!("the agent answered an invalid address {:?}", done.endpoint.ipv4))
    })?;
    let gateway = done.gateway.parse().map_err(|_| {
        CniError::new(code::AGENT, format!("the agent answered an invalid gateway {:?}", done.gateway))
    })?;
    let attachment = Attachment {
        host_interface: done.endpoint.host_device.clone(),
        host_mac: done.endpoint.host_mac.clone(),
        interface: done.ifname.clone(),
        mac: done.endpoint.mac.clone(),
        sandbox: env.netns.clone(),
        address,
        prefix_len: done.prefix_len,
        gateway,
    };
    Ok(result::to_json(&attachment, conf.dns.as_ref(), conf.version))
}

fn del(client: &Client, env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let target = api::CniAttachmentRef { container_id: env.container_id.clone(), ifname: env.ifname.clone() };
    deliver_or_queue(client, conf, Request::CniDel(target.clone()), api::CniQueued::Del(target), "DEL")
}

fn gc(client: &Client, conf: &NetConf) -> Result<(), CniError> {
    let valid = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| CniError::invalid_config("cni.dev/valid-attachments", "is missing (GC needs it)"))?
        .iter()
        .map(|a| api::CniAttachmentRef { container_id: a.container_id.clone(), ifname: a.ifname.clone() })
        .collect();
    let gc = api::CniGc { network: conf.name.clone(), valid };
    deliver_or_queue(client, conf, Request::CniGc(gc.clone()), api::CniQueued::Gc(gc), "GC")
}

/// DEL and GC must not fail because the agent is away (runtimes give up
/// on a container whose DEL fails, and its address would leak): they wait
/// on disk for the agent instead.
fn deliver_or_queue(
    client: &Client,
    conf: &NetConf,
    request: Request,
    queued: api::CniQueued,
    what: &str,
) -> Result<(), CniError> {
    match client.call::<api::CniRemoved>(&request) {
        Ok(_) => Ok(()),
        Err(ClientError::Unreachable { .. }) => {
            let file = enqueue(&conf.queue_dir, &queued)?;
            // The agent may have started, and drained the queue, while the
            // file was written: deliver it now if so (DEL and GC repeat
            // harmlessly).
            if client.call::<api::CniRemoved>(&request).is_ok() {
                let _ = std::fs::remove_file(file);
            }
            Ok(())
        }
        Err(e) => Err(agent_error(e, what)),
    }
}

fn enqueue(dir: &Path, item: &api::CniQueued) -> Result<std::path::PathBuf, CniError> {
    let io = |step: &str, e: std::io::Error| {
        CniError::new(code::IO, format!("queueing for the agent in queueDir {}: {step}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| io("creating it", e))?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let stem = format!("{nanos:024}-{}", std::process::id());
    let temporary = dir.join(format!(".{stem}.tmp"));
    let file = dir.join(format!("{stem}.json"));
    let body = serde_json::to_vec(item).expect("queue entries serialize");
    let mut f = std::fs::File::create(&temporary).map_err(|e| io("creating a file", e))?;
    f.write_all(&body).and_then(|()| f.sync_all()).map_err(|e| io("writing", e))?;
    // Renamed into place whole: the agent never reads half an entry.
    std::fs::rename(&temporary, &file).map_err(|e| io("renaming", e))?;
    Ok(file)
}

fn check(client: &Client, env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let addresses = match &conf.prev_result {
        Some(prev) => result::prev_addresses(prev, &env.ifname)?,
        None => return Err(CniError::invalid_config("prevResult", "is missing (CHECK compares against it)")),
    };
    let request = Request::CniCheck(api::CniCheck {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        netns: env.netns.clone(),
        addresses: addresses.iter().map(|(a, l)| format!("{a}/{l}")).collect(),
    });
    let checked: api::CniChecked = client.call(&request).map_err(|e| agent_error(e, "CHECK"))?;
    if checked.problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::AGENT,
            format!("CHECK of {} in {}: {}", env.ifname, env.netns, checked.problems.join("; ")),
        ))
    }
}

fn status(client: &Client, conf: &NetConf) -> Result<(), CniError> {
    let status: api::Status = client
        .call(&Request::Status)
        .map_err(|e| CniError::new(code::NOT_AVAILABLE, format!("the Twill agent cannot take ADDs: {e}")))?;
    let failing: Vec<String> = status
        .health
        .iter()
        .filter(|h| !h.ok && h.name != "endpoints")
        .map(|h| format!("{}: {}", h.name, h.message))
        .collect();
    if failing.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::NOT_AVAILABLE,
            format!(
                "the Twill agent at {} cannot take ADDs: {}",
                conf.agent_socket.display(),
                failing.join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn invoke(vars: &[(&str, &str)], stdin: &str) -> (Value, i32) {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let out = run(|k| vars.get(k).cloned(), stdin.as_bytes());
        (serde_json::from_str(&out.stdout).unwrap_or(Value::Null), out.exit_code)
    }

    #[test]
    fn names_are_dns_labels_and_distinct() {
        assert_eq!(endpoint_name("web", "eth0"), "web");
        assert_eq!(endpoint_name("web", "net1"), "web-net1");
        let folded = endpoint_name("Web_1", "eth0");
        assert!(folded.starts_with("web-1-"), "{folded}");
        assert_ne!(folded, endpoint_name("web-1", "eth0"));
        let long = endpoint_name(&"a".repeat(64), "eth0");
        assert!(long.len() <= 63, "{long}");
        assert_ne!(long, endpoint_name(&"a".repeat(65), "eth0"));
    }

    #[test]
    fn version_answers_with_every_supported_version() {
        let (v, code) = invoke(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(code, 0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
    }

    #[test]
    fn commands_newer_than_the_config_are_refused() {
        let env =
            [("CNI_COMMAND", "CHECK"), ("CNI_CONTAINERID", "c"), ("CNI_NETNS", "/x"), ("CNI_IFNAME", "eth0")];
        let (v, code) = invoke(&env, r#"{"cniVersion":"0.3.1","name":"n","type":"twill-cni"}"#);
        assert_eq!(code, 1);
        assert_eq!(v["code"], 1);
        assert_eq!(v["cniVersion"], "0.3.1");
        assert!(v["msg"].as_str().unwrap().contains("0.4.0"), "{v}");
        let (v, _) =
            invoke(&[("CNI_COMMAND", "GC")], r#"{"cniVersion":"1.0.0","name":"n","type":"twill-cni"}"#);
        assert_eq!(v["code"], 1);
    }

    #[test]
    fn add_with_the_agent_down_is_try_again_later() {
        let env =
            [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_NETNS", "/x"), ("CNI_IFNAME", "eth0")];
        let config =
            r#"{"cniVersion":"1.0.0","name":"n","type":"twill-cni","agentSocket":"/nonexistent/twill.sock"}"#;
        let (v, code) = invoke(&env, config);
        assert_eq!(code, 1);
        assert_eq!(v["code"], 11);
        assert!(v["msg"].as_str().unwrap().contains("/nonexistent/twill.sock"), "{v}");
    }
}
