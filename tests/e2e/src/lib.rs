//! Harness for end-to-end tests.
//!
//! Each [`Node`] is a real `twill-agent` running inside its own network
//! namespace (entered with `nsenter --net`, so bpffs stays the host's and
//! pins survive agent restarts), with its own state dir, socket, bpf root
//! and node name. Everything a node creates is removed on drop, also when
//! the test fails.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

pub use serde_json::Value;

pub mod browser;
pub mod cluster;
pub mod cni;
pub mod pki;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Directory holding the built `twill` and `twill-agent` binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // Tests run from target/<profile>/deps/<test>; the benchmark, which
    // reuses this harness, from target/<profile>/twill-bench.
    let own = exe.parent().expect("binary dir").to_path_buf();
    let dir =
        if own.join("twill-agent").exists() { own } else { own.parent().expect("target dir").to_path_buf() };
    assert!(
        dir.join("twill-agent").exists() && dir.join("twill").exists(),
        "twill and twill-agent are not built in {}; run `cargo build --bins` first (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// The upstream Hubble CLI (`HUBBLE`, else ../shared/bin/hubble), which
/// must work with Twill unchanged. Absent, the test fails saying so.
pub fn hubble_cli() -> PathBuf {
    let path = std::env::var_os("HUBBLE").map(PathBuf::from).unwrap_or("/work/shared/bin/hubble".into());
    assert!(path.exists(), "the upstream hubble CLI is not at {} (set HUBBLE)", path.display());
    path
}

/// What the upstream hubble CLI prints for `hubble observe KIND ARGS`
/// (`agent-events`, `debug-events`) against `node`'s observer socket.
pub fn hubble_observe_events(node: &Node, kind: &str, args: &[&str]) -> String {
    let server = format!("unix://{}", node.hubble_socket().display());
    let out =
        Command::new(hubble_cli()).args(["observe", kind, "--server", &server]).args(args).output().unwrap();
    assert!(out.status.success(), "hubble: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Node {
    pub name: String,
    /// The network namespace the agent runs in (the node's "host").
    pub netns: String,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub bpf_root: PathBuf,
    pub pod_cidr: String,
    /// Extra agent flags, for tests that need them (set before
    /// `start_agent`).
    pub agent_args: Vec<String>,
    agent: Option<Child>,
    log: PathBuf,
    /// Whether `netns` was made for this node (and goes with it), or
    /// belongs to someone else, as a cluster node's does to its fabric.
    owns_netns: bool,
}

impl Node {
    /// Starts an agent with the default pod CIDR.
    pub fn start(tag: &str) -> Node {
        Self::start_with_cidr(tag, "10.200.0.0/24")
    }

    pub fn start_with_cidr(tag: &str, pod_cidr: &str) -> Node {
        let mut node = Self::prepare(tag, pod_cidr);
        node.start_agent();
        node
    }

    /// The node's namespace and directories, without an agent yet: for
    /// tests that set up devices or flags first.
    pub fn prepare(tag: &str, pod_cidr: &str) -> Node {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}-{tag}-{n}", std::process::id());
        let netns = format!("twtest-{name}");
        run_ok(Command::new("ip").args(["netns", "add", &netns]));
        let node = Self::prepare_in(&netns, &name, pod_cidr, true);
        run_ok(Command::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]));
        node
    }

    /// A node whose agent will run in the existing namespace `netns`
    /// under node name `name`; `owns_netns` says whether dropping the node
    /// deletes that namespace. An empty `pod_cidr` leaves `--pod-cidr`
    /// out of the agent's flags.
    pub fn prepare_in(netns: &str, name: &str, pod_cidr: &str, owns_netns: bool) -> Node {
        let base = std::env::temp_dir().join(format!("twill-e2e-{name}"));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        Node {
            owns_netns,
            netns: netns.into(),
            name: name.into(),
            state_dir: base.join("state"),
            socket: base.join("twill.sock"),
            bpf_root: PathBuf::from(format!("/sys/fs/bpf/twill-e2e-{name}")),
            log: base.join("agent.log"),
            pod_cidr: pod_cidr.into(),
            agent_args: Vec::new(),
            agent: None,
        }
    }

    pub fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "agent already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg(bin_dir().join("twill-agent"))
            .args(self.agent_flags())
            .args(["--log-level", "debug"])
            .args(&self.agent_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning twill-agent");
        self.agent = Some(child);
        let ready =
            wait_until(Duration::from_secs(30), || self.twill(&["status", "-o", "json"]).status.success());
        assert!(ready, "agent did not become ready; log:\n{}", self.agent_log());
    }

    /// The flags that make an agent this node's: its directories, sockets,
    /// pod CIDR and name (for tests that start an agent themselves).
    pub fn agent_flags(&self) -> Vec<std::ffi::OsString> {
        let hubble = self.hubble_socket();
        let mut flags: Vec<std::ffi::OsString> = Vec::new();
        for (flag, value) in [
            ("--state-dir", self.state_dir.as_os_str()),
            ("--api-socket", self.socket.as_os_str()),
            ("--bpf-root", self.bpf_root.as_os_str()),
            ("--hubble-socket", hubble.as_os_str()),
            ("--pod-cidr", self.pod_cidr.as_ref()),
            ("--node-name", self.name.as_ref()),
        ] {
            if !value.is_empty() {
                flags.extend([flag.into(), value.into()]);
            }
        }
        flags
    }

    /// The agent's Hubble-compatible observer socket.
    pub fn hubble_socket(&self) -> PathBuf {
        self.state_dir.parent().expect("base dir").join("hubble.sock")
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the agent and waits for it to exit.
    pub fn stop_agent(&mut self, signal: i32) {
        let mut child = self.agent.take().expect("agent running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        child.wait().unwrap();
    }

    /// Asks the agent to stop with SIGTERM and waits up to `grace` for it,
    /// then kills it: a clean exit where the agent manages one, and never a
    /// hung test.
    pub fn terminate_agent(&mut self, grace: Duration) {
        let Some(mut child) = self.agent.take() else { return };
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        if !wait_until(grace, || !matches!(child.try_wait(), Ok(None))) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    pub fn agent_running(&mut self) -> bool {
        matches!(self.agent.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn twill(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("twill"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running twill")
    }

    /// Runs the CLI and returns stdout, failing the test on a non-zero exit.
    pub fn twill_ok(&self, args: &[&str]) -> String {
        let out = self.twill(args);
        assert!(
            out.status.success(),
            "twill {} failed: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the CLI with `-o json` appended and parses the output.
    pub fn twill_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.twill_ok(&all)).expect("valid JSON")
    }

    /// Runs the CLI expecting failure; returns stderr.
    pub fn twill_err(&self, args: &[&str]) -> String {
        let out = self.twill(args);
        assert!(!out.status.success(), "twill {} unexpectedly succeeded", args.join(" "));
        String::from_utf8(out.stderr).unwrap()
    }

    /// `twill observe ARGS -o json` against this node's Hubble socket: the
    /// flows, in order (other response kinds are left out).
    pub fn observe(&self, args: &[&str]) -> Vec<Value> {
        self.observe_with(&bin_dir().join("twill"), args)
    }

    /// `observe` with another client binary that takes hubble's flags and
    /// prints its JSON: the upstream `hubble` CLI.
    pub fn observe_with(&self, client: &Path, args: &[&str]) -> Vec<Value> {
        let out = Command::new(client)
            .arg("observe")
            .arg("--server")
            .arg(format!("unix://{}", self.hubble_socket().display()))
            .args(args)
            .args(["-o", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "observe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter_map(|v| v.get("flow").cloned())
            .collect()
    }

    /// Creates an endpoint and returns its JSON.
    pub fn endpoint(&self, name: &str, namespace: &str, labels: &str) -> Value {
        let mut args = vec!["endpoint", "create", name, "--namespace", namespace];
        if !labels.is_empty() {
            args.extend(["--labels", labels]);
        }
        self.twill_json(&args)
    }

    /// Runs a command inside an endpoint with `twill endpoint exec`.
    pub fn exec(&self, endpoint: &str, namespace: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["endpoint", "exec", endpoint, "--namespace", namespace, "--"];
        args.extend(cmd);
        self.twill(&args)
    }

    /// Runs a command in the node's own namespace (its "host").
    pub fn host_cmd(&self, cmd: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.netns]).args(cmd).output().unwrap()
    }

    /// The agent's Prometheus page (`/metrics` on 127.0.0.1:9962 in the
    /// node's namespace).
    pub fn metrics(&self) -> String {
        let script = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9962/metrics',timeout=5).read().decode(),end='')";
        let out = self.host_cmd(&["python3", "-c", script]);
        assert!(out.status.success(), "scrape failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// One ping from an endpoint; true if answered.
    pub fn ping(&self, endpoint: &str, namespace: &str, dst: &str) -> bool {
        self.exec(endpoint, namespace, &["ping", "-c", "1", "-W", "1", dst]).status.success()
    }

    /// One ping from inside a network namespace, without asking the agent
    /// (for checks while it is down).
    pub fn ping_from_netns(netns: &str, dst: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", netns, "ping", "-c", "1", "-W", "1", dst])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Network namespaces this node's agent has created for endpoints.
    pub fn endpoint_netns(&self) -> Vec<String> {
        let prefix = format!("twill_{}_", self.name);
        let mut out: Vec<String> = std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        out.sort();
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.endpoint_netns() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        if self.owns_netns {
            let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.bpf_root);
        if let Some(base) = self.state_dir.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A background process (server or load) killed on drop.
pub struct Background(Option<Child>);

impl Background {
    /// Owns a process started elsewhere: killed on drop.
    pub fn from_child(child: Child) -> Self {
        Background(Some(child))
    }

    /// Waits for the process to finish by itself and returns its output.
    pub fn wait_with_output(mut self) -> Output {
        self.0.take().expect("process present").wait_with_output().expect("waiting for process")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Node {
    /// Starts a command in an endpoint in the background.
    pub fn spawn_in(&self, endpoint: &str, namespace: &str, cmd: &[&str]) -> Background {
        let ep = self.twill_json(&["endpoint", "get", endpoint, "--namespace", namespace]);
        let netns = ep["netns"].as_str().unwrap().to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &netns])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Background(Some(child))
    }

    /// A TCP server in `endpoint` (namespace default) answering every
    /// connection with the endpoint's name, so a client sees who served it.
    pub fn tcp_server(&self, endpoint: &str, port: u16) -> Background {
        let listen = format!("TCP-LISTEN:{port},reuseaddr,fork");
        let reply = format!("SYSTEM:echo {endpoint}");
        let server = self.spawn_in(endpoint, "default", &["socat", &listen, &reply]);
        self.wait_for_socket(endpoint, "-tln", port);
        server
    }

    /// A UDP server in `endpoint` (namespace default) answering every
    /// datagram with the endpoint's name, bound when this returns. A thread
    /// of the test in the endpoint's namespace rather than `socat
    /// UDP-RECVFROM,fork`, whose forked children race for datagrams under
    /// load and leave some unanswered.
    pub fn udp_server(&self, endpoint: &str, port: u16) -> UdpServer {
        let ep = self.twill_json(&["endpoint", "get", endpoint, "--namespace", "default"]);
        let netns = PathBuf::from("/run/netns").join(ep["netns"].as_str().unwrap());
        UdpServer::start(&netns, port, endpoint.to_string())
    }

    /// Waits until a socket of the kind `ss` lists with `kind` (-tln, -uln)
    /// is bound to `port` inside `endpoint`: a client started before would
    /// be refused, and a balanced service would fail one of its backends.
    pub fn wait_for_socket(&self, endpoint: &str, kind: &str, port: u16) {
        let ep = self.twill_json(&["endpoint", "get", endpoint, "--namespace", "default"]);
        let netns = ep["netns"].as_str().unwrap().to_string();
        let filter = format!("sport = :{port}");
        let bound = wait_until(Duration::from_secs(10), || {
            Command::new("ip")
                .args(["netns", "exec", &netns, "ss", "-H", kind, &filter])
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false)
        });
        assert!(bound, "nothing bound to port {port} in {endpoint}");
    }

    /// `twill service create ARGS -o json`.
    pub fn service_create(&self, args: &[&str]) -> Value {
        self.twill_json(&[&["service", "create"], args].concat())
    }

    /// One TCP request from `client` (namespace default) to `target`
    /// (ADDR:PORT): the answering server's name, or the error socat printed
    /// (a dropped SYN times out after 2 s, a missing server is "refused").
    pub fn tcp_request(&self, client: &str, target: &str) -> Result<String, String> {
        let out =
            self.exec(client, "default", &["socat", "-T2", "-", &format!("TCP:{target},connect-timeout=2")]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

/// A UDP responder on its own thread inside a network namespace; stopped
/// and joined on drop.
pub struct UdpServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpServer {
    fn start(netns: &Path, port: u16, reply: String) -> UdpServer {
        use std::os::fd::AsRawFd;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let file = std::fs::File::open(netns).unwrap_or_else(|e| panic!("{}: {e}", netns.display()));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns(2) on this thread only, with a namespace fd we own.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let _ = ready_tx.send(Err(std::io::Error::last_os_error()));
                return;
            }
            let socket = match std::net::UdpSocket::bind(("0.0.0.0", port)) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let _ = ready_tx.send(Ok(()));
            let mut buf = [0u8; 2048];
            let answer = format!("{reply}\n");
            while !flag.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(answer.as_bytes(), peer);
                }
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => UdpServer { stop, thread: Some(thread) },
            Ok(Err(e)) => panic!("UDP server on port {port} in {}: {e}", netns.display()),
            Err(e) => panic!("UDP server on port {port} in {}: {e}", netns.display()),
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A service's ClusterIP, from its JSON.
pub fn cluster_ip(svc: &Value) -> String {
    svc["cluster_ip"].as_str().expect("cluster_ip").to_string()
}

/// An endpoint's IPv4 address, from its JSON.
pub fn ip_of(ep: &Value) -> String {
    ep["ipv4"].as_str().expect("ipv4").to_string()
}

/// The value of the sample in a Prometheus page whose line starts with
/// `series` (name and labels); 0 when there is none.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A machine outside the node: a network namespace on a veth pair from the
/// node's namespace (`device` on the node's side, with the gateway address
/// `gw`/24; `eth0` inside, with `addrs`), routing the node's pod CIDR back
/// through it. The node forwards between them. Deleted on drop.
pub struct Outside {
    pub netns: String,
    pub device: String,
}

impl Outside {
    pub fn attach(node: &Node, device: &str, gw: &str, addrs: &[&str]) -> Outside {
        let o = Outside { netns: format!("{device}-{}", node.name), device: device.into() };
        let _ = Command::new("ip").args(["netns", "del", &o.netns]).stderr(Stdio::null()).status();
        run_ok(Command::new("ip").args(["netns", "add", &o.netns]));
        let (n, on) = (node.netns.as_str(), o.netns.as_str());
        let mut cmds = vec![
            vec!["-n", on, "link", "set", "lo", "up"],
            vec!["-n", n, "link", "add", device, "type", "veth", "peer", "name", "eth0", "netns", on],
        ];
        let gw_cidr = format!("{gw}/24");
        cmds.push(vec!["-n", n, "addr", "add", &gw_cidr, "dev", device]);
        cmds.push(vec!["-n", n, "link", "set", device, "up"]);
        let cidrs: Vec<String> = addrs.iter().map(|a| format!("{a}/24")).collect();
        for cidr in &cidrs {
            cmds.push(vec!["-n", on, "addr", "add", cidr, "dev", "eth0"]);
        }
        cmds.push(vec!["-n", on, "link", "set", "eth0", "up"]);
        cmds.push(vec!["-n", on, "route", "add", &node.pod_cidr, "via", gw]);
        for cmd in cmds {
            run_ok(Command::new("ip").args(&cmd));
        }
        run_ok(Command::new("ip").args(["netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1"]));
        o
    }

    /// `cmd` run in the background inside the outside namespace.
    pub fn spawn(&self, cmd: &[&str]) -> Background {
        Background::from_child(
            Command::new("ip")
                .args(["netns", "exec", &self.netns])
                .args(cmd)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}
