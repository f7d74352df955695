//! Multi-node clusters on one machine.
//!
//! A [`Fabric`] is a namespace holding a bridge, standing in for the wire
//! between machines. Each node is a namespace with an `eth0` on that
//! bridge ([`NodeNet`]), its agent started there with `nsenter --net` so
//! the bind mounts it makes under /run/netns stay visible to the test.
//! [`Etcd`] runs on the same fabric, in a namespace of its own, so every
//! node reaches it over the fabric as it would a remote store.
//!
//! Names all derive from one tag: `tw<tag>fab`, `tw<tag>n<i>`, `tw<tag>e`,
//! and nothing is created in the machine's own namespace, so tests with
//! different tags run side by side. Everything goes on drop, also when
//! the test fails: declare the fabric first, then etcd, then the nodes,
//! and Rust drops them in the order cleanup needs (agents, their endpoint
//! namespaces, node namespaces, etcd, fabric) — or use [`Cluster`], whose
//! fields are in that order.

use std::{
    ffi::OsString,
    ops::{Deref, DerefMut},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use crate::{bin_dir, pki::Pki, run_ok, wait_until, Node};

/// Netns and link names are limited to 15 bytes (IFNAMSIZ - 1); the
/// longest derived name is `tw<tag>n<i>` with a three-digit index.
const MAX_TAG: usize = 9;

/// The third octet of the fabric's 192.168.k.0/24 and of the nodes' pod
/// CIDRs 10.k.i.0/24. Fabrics are isolated from each other, so equal
/// octets would not clash; spreading them keeps addresses in logs and
/// flows telling which test they belong to.
fn subnet_of(tag: &str) -> u8 {
    let hash =
        tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    (100 + hash % 151) as u8
}

fn netns_exists(name: &str) -> bool {
    PathBuf::from("/run/netns").join(name).exists()
}

fn del_netns(name: &str) {
    if netns_exists(name) {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
    }
}

/// A namespace with a bridge `br0` that node namespaces attach to.
pub struct Fabric {
    tag: String,
    netns: String,
    subnet: u8,
}

impl Fabric {
    pub fn new(tag: &str) -> Fabric {
        assert!(
            !tag.is_empty() && tag.len() <= MAX_TAG && tag.bytes().all(|b| b.is_ascii_alphanumeric()),
            "fabric tag {tag:?}: 1 to {MAX_TAG} ASCII letters or digits (names derived from it must fit 15 bytes)"
        );
        let fabric = Fabric { tag: tag.into(), netns: format!("tw{tag}fab"), subnet: subnet_of(tag) };
        // A crashed earlier run may have left these behind; its agents and
        // etcd died with it, so only the namespaces remain in the way.
        for name in fabric.leftovers() {
            del_netns(&name);
        }
        run_ok(Command::new("ip").args(["netns", "add", &fabric.netns]));
        fabric.ip(&["link", "set", "lo", "up"]);
        fabric.ip(&["link", "add", "br0", "type", "bridge"]);
        fabric.ip(&["link", "set", "br0", "up"]);
        fabric
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The k of the fabric's 192.168.k.0/24.
    pub fn subnet(&self) -> u8 {
        self.subnet
    }

    /// Namespaces under /run/netns that are this fabric's by name: the
    /// fabric's own, etcd's and the nodes'.
    pub fn leftovers(&self) -> Vec<String> {
        let prefix = format!("tw{}", self.tag);
        let mut out: Vec<String> = std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                // Exact derived names only: tag "a" must not reach into
                // the namespaces of tag "ab".
                n.strip_prefix(&prefix).is_some_and(|rest| {
                    rest == "fab"
                        || rest == "e"
                        || rest
                            .strip_prefix('n')
                            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
                })
            })
            .collect();
        out.sort();
        out
    }

    fn ip(&self, args: &[&str]) -> Output {
        run_ok(Command::new("ip").arg("-n").arg(&self.netns).args(args))
    }

    /// Node `i`'s namespace `tw<tag>n<i>`, with `eth0` at 192.168.k.(10+i)
    /// on the fabric.
    pub fn add_node(&self, i: u8) -> NodeNet {
        assert!(i < 200, "node index {i}: addresses 192.168.k.10..209 are the nodes'");
        self.attach(format!("tw{}n{i}", self.tag), format!("v{i}"), 10 + i)
    }

    /// A namespace whose `eth0` is a veth into the fabric's bridge, with
    /// 192.168.k.`host`/24 and forwarding on (a node routes for its
    /// endpoints). The pair is made inside the fabric's namespace and its
    /// peer sent straight to the node, so the machine's own namespace never
    /// sees either end.
    fn attach(&self, netns: String, fabric_side: String, host: u8) -> NodeNet {
        del_netns(&netns);
        run_ok(Command::new("ip").args(["netns", "add", &netns]));
        let net = NodeNet { ip: format!("192.168.{}.{host}", self.subnet), netns, subnet: self.subnet, host };
        self.ip(&["link", "add", &fabric_side, "type", "veth", "peer", "name", "eth0", "netns", &net.netns]);
        self.ip(&["link", "set", &fabric_side, "master", "br0", "up"]);
        let cidr = format!("{}/24", net.ip);
        net.ip_cmd(&["link", "set", "lo", "up"]);
        net.ip_cmd(&["addr", "add", &cidr, "dev", "eth0"]);
        net.ip_cmd(&["link", "set", "eth0", "up"]);
        run_ok(Command::new("ip").args([
            "netns",
            "exec",
            &net.netns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]));
        net
    }

    /// Starts etcd on this fabric (192.168.k.2) and waits until it is
    /// healthy.
    pub fn start_etcd(&self) -> Etcd {
        self.start_etcd_with(false)
    }

    /// etcd that speaks TLS only and wants client certificates from a CA
    /// of the test's (see [`Etcd::pki`]).
    pub fn start_etcd_tls(&self) -> Etcd {
        self.start_etcd_with(true)
    }

    fn start_etcd_with(&self, tls: bool) -> Etcd {
        let net = self.attach(format!("tw{}e", self.tag), "ve".into(), 2);
        let data_dir =
            std::env::temp_dir().join(format!("twill-e2e-etcd-{}-{}", self.tag, std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).unwrap();
        let pki = tls.then(|| {
            let dir = data_dir.with_extension("pki");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Pki::new(&dir, "etcd", &format!("IP:{}", net.ip))
        });
        let mut etcd =
            Etcd { name: format!("tw{}", self.tag), net, data_dir, child: None, paused: false, pki };
        etcd.start();
        etcd
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // The bridge and the fabric ends of every veth go with it.
        del_netns(&self.netns);
    }
}

/// A node's namespace on a fabric; deleted on drop, taking its `eth0`
/// and the veth's fabric end with it.
pub struct NodeNet {
    netns: String,
    ip: String,
    subnet: u8,
    host: u8,
}

impl NodeNet {
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The address of `eth0`, without prefix length.
    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// The k of the fabric's 192.168.k.0/24.
    pub fn subnet(&self) -> u8 {
        self.subnet
    }

    /// Runs a command in this namespace with `nsenter --net`, which keeps
    /// the test's mount namespace (and /sys) as they are.
    pub fn cmd(&self, cmd: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter into {}: {e}", self.netns))
    }

    /// One ping from this namespace; true if answered.
    pub fn ping(&self, dst: &str) -> bool {
        self.cmd(&["ping", "-c", "1", "-W", "1", dst]).status.success()
    }

    fn ip_cmd(&self, args: &[&str]) -> Output {
        run_ok(Command::new("ip").arg("-n").arg(&self.netns).args(args))
    }
}

impl Drop for NodeNet {
    fn drop(&mut self) {
        del_netns(&self.netns);
    }
}

/// One etcd member on a fabric, in its own namespace.
pub struct Etcd {
    name: String,
    net: NodeNet,
    data_dir: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Set: TLS only, client certificates required.
    pki: Option<Pki>,
}

impl Etcd {
    /// The client URL, reachable from every namespace on the fabric.
    pub fn endpoint(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:2379", self.net.ip)
    }

    /// The CA and client certificate of a TLS etcd.
    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_ref()
    }

    pub fn ip(&self) -> &str {
        self.net.ip()
    }

    pub fn netns(&self) -> &str {
        self.net.netns()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    /// True if `GET /health` from inside `netns` says so.
    pub fn healthy_from(&self, netns: &str) -> bool {
        let url = format!("{}/health", self.endpoint());
        let mut curl = Command::new("nsenter");
        curl.arg(format!("--net=/run/netns/{netns}")).args(["curl", "-sf", "--max-time", "1", &url]);
        if let Some(pki) = &self.pki {
            curl.args(["--cacert", &pki.path("ca.pem"), "--cert", &pki.path("client.pem")])
                .args(["--key", &pki.path("client.key")]);
        }
        curl.output()
            .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("\"health\":\"true\""))
            .unwrap_or(false)
    }

    /// Starts etcd again on the same data dir (it keeps its keys and
    /// revision) and waits until it is healthy.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "etcd already running");
        let peer = format!("http://{}:2380", self.net.ip);
        let client = self.endpoint();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.net.netns))
            .arg("etcd")
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .arg("--initial-cluster")
            .arg(format!("{}={peer}", self.name))
            .args(self.pki.iter().flat_map(|pki| {
                [
                    "--cert-file".to_string(),
                    pki.path("server.pem"),
                    "--key-file".into(),
                    pki.path("server.key"),
                    "--trusted-ca-file".into(),
                    pki.path("ca.pem"),
                    "--client-cert-auth".into(),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning etcd (Debian package etcd-server)");
        self.child = Some(child);
        self.paused = false;
        let netns = self.net.netns.clone();
        let healthy = wait_until(Duration::from_secs(30), || self.healthy_from(&netns));
        assert!(healthy, "etcd did not become healthy at {}; log:\n{}", self.endpoint(), self.log());
    }

    /// Stops etcd (SIGTERM, then waits), keeping its data dir.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // A stopped process would not act on SIGTERM until continued.
        self.signal_child(&child, libc::SIGCONT);
        self.signal_child(&child, libc::SIGTERM);
        if !wait_until(Duration::from_secs(10), || !matches!(child.try_wait(), Ok(None))) {
            let _ = child.kill();
        }
        let _ = child.wait();
        self.paused = false;
    }

    /// Freezes etcd with SIGSTOP: connections stay open and unanswered, as
    /// with a hung or partitioned store.
    pub fn pause(&mut self) {
        let child = self.child.as_ref().expect("etcd running");
        self.signal_child(child, libc::SIGSTOP);
        self.paused = true;
    }

    pub fn resume(&mut self) {
        let child = self.child.as_ref().expect("etcd running");
        self.signal_child(child, libc::SIGCONT);
        self.paused = false;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn signal_child(&self, child: &Child, signal: i32) {
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(child.id() as i32, signal) };
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_file(self.log_path());
        // `net` drops after this body: the namespace goes once etcd is gone.
    }
}

/// A [`Node`] whose agent runs in a fabric node's namespace. Derefs to
/// the `Node`, so `twill_ok`, `endpoint`, `exec`, `ping`, `tcp_server`,
/// `host_cmd` ... work as on a single node.
pub struct ClusterNode {
    // Field order is drop order: the agent and its endpoints first, the
    // namespace they live in after.
    node: Node,
    net: NodeNet,
}

impl ClusterNode {
    /// The node's directories and default pod CIDR 10.k.i.0/24, without an
    /// agent: set `pod_cidr` (empty: no `--pod-cidr` flag) or `agent_args`
    /// before `start_agent`.
    pub fn prepare(net: NodeNet) -> ClusterNode {
        let pod_cidr = format!("10.{}.{}.0/24", net.subnet, net.host - 10);
        // The node name is the namespace's name: unique per fabric, and
        // what an agent in cluster mode will register itself under.
        let node = Node::prepare_in(&net.netns, &net.netns, &pod_cidr, false);
        ClusterNode { node, net }
    }

    /// Prepares the node and starts its agent with `extra_flags` after the
    /// node's own (`Node::agent_flags`).
    pub fn start(net: NodeNet, extra_flags: &[&str]) -> ClusterNode {
        let mut node = Self::prepare(net);
        node.node.agent_args.extend(extra_flags.iter().map(|f| f.to_string()));
        node.node.start_agent();
        node
    }

    /// The node's address on the fabric.
    pub fn node_ip(&self) -> &str {
        self.net.ip()
    }

    pub fn netns(&self) -> &str {
        self.net.netns()
    }

    pub fn net(&self) -> &NodeNet {
        &self.net
    }

    /// The agent's full command line after the binary, for tests that
    /// start one by hand.
    pub fn agent_command(&self) -> Vec<OsString> {
        let mut all = self.node.agent_flags();
        all.extend(self.node.agent_args.iter().map(OsString::from));
        all
    }

    pub fn agent_binary() -> PathBuf {
        bin_dir().join("twill-agent")
    }
}

impl Deref for ClusterNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl DerefMut for ClusterNode {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        // A clean SIGTERM shutdown where possible, so a cluster-mode agent
        // can give up its leases; `Node`'s drop then removes the endpoint
        // namespaces, pins and directories.
        self.node.terminate_agent(Duration::from_secs(10));
    }
}

/// A fabric, etcd and nodes, dropped in the order cleanup needs.
pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    pub etcd: Etcd,
    pub fabric: Fabric,
}

impl Cluster {
    /// A fabric with etcd running and no nodes yet.
    pub fn new(tag: &str) -> Cluster {
        let fabric = Fabric::new(tag);
        let etcd = fabric.start_etcd();
        Cluster { nodes: Vec::new(), etcd, fabric }
    }

    /// Adds the next node and starts its agent with `extra_flags`;
    /// `{etcd}` in a flag is replaced by etcd's client URL.
    pub fn add_node(&mut self, extra_flags: &[&str]) -> &mut ClusterNode {
        let i = u8::try_from(self.nodes.len()).expect("fewer than 200 nodes");
        let endpoint = self.etcd.endpoint();
        let flags: Vec<String> = extra_flags.iter().map(|f| f.replace("{etcd}", &endpoint)).collect();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let node = ClusterNode::start(self.fabric.add_node(i), &flags);
        self.nodes.push(node);
        self.nodes.last_mut().unwrap()
    }

    /// Adds the next node in cluster mode on this cluster's etcd, at its
    /// fabric address, with `mode` routing (tunnel or native) and `extra`
    /// flags after those.
    pub fn join(&mut self, mode: &str, extra: &[&str]) -> &mut ClusterNode {
        let node_ip = format!("192.168.{}.{}", self.fabric.subnet(), 10 + self.nodes.len());
        let mut flags = vec!["--kvstore-endpoints", "{etcd}", "--node-ip", &node_ip, "--routing-mode", mode];
        flags.extend_from_slice(extra);
        self.add_node(&flags)
    }
}
