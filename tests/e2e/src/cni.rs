//! Driving CNI plugins the way a runtime does: CNI_* variables, the
//! network config on stdin, the answer on stdout. Plugins run in the
//! node's network namespace, where a runtime on that node would run them.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::{json, Value};

use crate::{bin_dir, run_ok, Node};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Debian's reference plugins (containernetworking-plugins).
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

pub fn plugin() -> PathBuf {
    bin_dir().join("twill-cni")
}

/// A network namespace standing in for a container's, removed on drop.
pub struct Sandbox {
    pub name: String,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("twcni-{}-{tag}-{n}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        Sandbox { name }
    }

    /// CNI_NETNS for it.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `cmd` inside it.
    pub fn run(&self, cmd: &[&str]) -> std::process::Output {
        Command::new("ip").args(["netns", "exec", &self.name]).args(cmd).output().unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// One plugin's answer.
#[derive(Debug)]
pub struct Answer {
    pub code: i32,
    pub stdout: String,
    pub json: Value,
}

impl Answer {
    pub fn ok(&self) -> &Value {
        assert_eq!(self.code, 0, "plugin failed: {}", self.stdout);
        &self.json
    }

    /// The CNI error code of a failed call.
    pub fn error_code(&self) -> u64 {
        assert_ne!(self.code, 0, "plugin unexpectedly succeeded: {}", self.stdout);
        self.json["code"].as_u64().unwrap_or_else(|| panic!("no error object: {}", self.stdout))
    }

    pub fn msg(&self) -> &str {
        self.json["msg"].as_str().unwrap_or("")
    }
}

/// Runs `plugin` in `node`'s namespace with only the given environment.
pub fn invoke(node: &Node, plugin: &Path, env: &[(&str, &str)], config: &Value) -> Answer {
    invoke_raw(node, plugin, env, config.to_string().as_bytes())
}

pub fn invoke_raw(node: &Node, plugin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Answer {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", node.netns))
        .arg(plugin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running a CNI plugin");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    Answer { code: out.status.code().unwrap_or(-1), stdout, json }
}

/// A twill-cni config for `node` in `version`.
pub fn config(node: &Node, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "twill",
        "type": "twill-cni",
        "agentSocket": node.socket,
        "queueDir": node.state_dir.join("cni-queue"),
    })
}

/// The environment of one attachment's command.
pub fn env<'a>(
    command: &'a str,
    container: &'a str,
    netns: &'a str,
    ifname: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", container),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
        ("CNI_PATH", REFERENCE_PLUGINS),
    ]
}
