//! Network policy as traffic sees it: for every case, a set of policy
//! documents is imported and the FULL reachability matrix is probed with
//! real TCP and UDP traffic, then compared with an expectation written by
//! hand from Cilium's (and Kubernetes') semantics.
//!
//! One node, shared by all cases (run one after the other, with
//! `twill policy delete --all` in between):
//! - namespaces x, y, z (labels team=<ns>; x and y also env=prod), each
//!   with endpoints a, b, c (labels pod=<name>; b also role=client; named
//!   port "web" is tcp/80 on a, tcp/81 on b and udp/80 on c);
//! - an "outside machine": a network namespace joined to the node by a
//!   veth pair (192.0.2.2, node side 192.0.2.1), which Twill sees as world;
//! - servers on tcp/80, tcp/81 and udp/80 in every endpoint, on the
//!   outside machine and on the node itself (the host, at the router
//!   address), from tests/e2e/scripts/matrix_serve.py;
//! - one long-running tests/e2e/scripts/matrix_probe.py per source, which
//!   probes a whole row in parallel (about 0.6 s per case).
//!
//! Sources and destinations are the 9 endpoints, the outside machine and
//! the host; each cell is (source, destination, tcp/80 | tcp/81 | udp/80).
//! Policy applies at the source's egress and at the destination's ingress;
//! replies always pass; the host always reaches endpoints (allow-localhost).
//! Every case is checked, and all wrong cells of all cases are reported
//! together at the end, with the observed matrix and `twill policy get`.
//!
//! `POLICY_MATRIX_CASE=<substring>` runs only the matching cases.
//!
//! Note for new cases: YAML 1.1 reads a bare `y` as boolean true, so the
//! namespace y is written "y" in the documents.

use std::{
    collections::BTreeMap,
    fmt,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use twill_e2e::{run_ok, wait_until, Background, Node, Value};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const OUTSIDE_IP: &str = "192.0.2.2";
const OUTSIDE_GW: &str = "192.0.2.1";
/// Probe timeout: a denied cell costs this long (all cells run in parallel).
const PROBE_TIMEOUT: &str = "0.6";
/// Second look at cells denied against expectations (a slow machine).
const RETRY_TIMEOUT: &str = "3.0";

// ---- Parties and ports ------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
enum Peer {
    Pod(&'static str, &'static str),
    /// The outside machine (world).
    Out,
    /// The node's own namespace, at the pod CIDR's router address.
    Host,
}

impl Peer {
    fn all() -> Vec<Peer> {
        let mut v: Vec<Peer> =
            NAMESPACES.iter().flat_map(|ns| PODS.iter().map(move |p| Peer::Pod(ns, p))).collect();
        v.push(Peer::Out);
        v.push(Peer::Host);
        v
    }

    /// `"x/a"`, `"outside"` or `"host"`.
    fn is(self, name: &str) -> bool {
        self.to_string() == name
    }

    fn in_ns(self, ns: &str) -> bool {
        matches!(self, Peer::Pod(n, _) if n == ns)
    }

    /// A pod of this name, in any namespace.
    fn named(self, pod: &str) -> bool {
        matches!(self, Peer::Pod(_, p) if p == pod)
    }

    fn is_pod(self) -> bool {
        matches!(self, Peer::Pod(..))
    }

    fn is_out(self) -> bool {
        self == Peer::Out
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Pod(ns, pod) => write!(f, "{ns}/{pod}"),
            Peer::Out => write!(f, "outside"),
            Peer::Host => write!(f, "host"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
enum Port {
    Tcp80,
    Tcp81,
    Udp80,
}

use Port::*;

impl Port {
    const ALL: [Port; 3] = [Tcp80, Tcp81, Udp80];

    fn proto(self) -> &'static str {
        match self {
            Tcp80 | Tcp81 => "tcp",
            Udp80 => "udp",
        }
    }

    fn number(self) -> u16 {
        match self {
            Tcp80 | Udp80 => 80,
            Tcp81 => 81,
        }
    }

    fn tcp(self) -> bool {
        self.proto() == "tcp"
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.proto(), self.number())
    }
}

type Cell = (Peer, Peer, Port);

fn cells() -> Vec<Cell> {
    let mut v = Vec::new();
    for s in Peer::all() {
        for d in Peer::all() {
            if s != d {
                for p in Port::ALL {
                    v.push((s, d, p));
                }
            }
        }
    }
    v
}

// ---- The environment ----------------------------------------------------

/// A process in some network namespace, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The outside machine's network namespace, deleted on drop.
struct OutsideNetns(String);

impl Drop for OutsideNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A long-running matrix_probe.py in one network namespace: one request
/// line in, one JSON line of results out (no start-up cost per round).
struct Prober {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    netns: String,
}

impl Prober {
    fn start(netns: &str) -> Prober {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "python3", &script("matrix_probe.py"), "--serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning the prober");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Prober { child, stdin, stdout, netns: netns.into() }
    }

    fn send(&mut self, timeout: &str, base: u32, targets: &[String]) {
        let req = serde_json::json!({"timeout": timeout, "base": base, "targets": targets});
        writeln!(self.stdin, "{req}").unwrap_or_else(|e| panic!("prober in {}: {e}", self.netns));
        self.stdin.flush().unwrap();
    }

    fn recv(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("prober in {} answered {line:?}: {e}", self.netns))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn result(got: &Value, key: &str) -> String {
    got[key].as_str().unwrap_or("missing").to_string()
}

/// The first address of the pod CIDR: the router, on the node.
fn router_of(cidr: &str) -> String {
    let net: std::net::Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
    std::net::Ipv4Addr::from(u32::from(net) + 1).to_string()
}

fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Outside namespaces left behind by earlier runs that were killed.
fn remove_stale_outside_netns() {
    for entry in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("twpm-out-") {
            if !PathBuf::from(format!("/proc/{pid}")).exists() {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
    }
}

/// Fields drop in order: processes first, then the namespaces they run in.
struct Env {
    probers: BTreeMap<Peer, Mutex<Prober>>,
    _servers: Vec<Background>,
    _other_servers: Vec<Proc>,
    _outside: OutsideNetns,
    node: Node,
    ips: BTreeMap<Peer, String>,
    dir: PathBuf,
    rounds: AtomicU32,
}

impl Env {
    fn setup() -> Env {
        remove_stale_outside_netns();
        let node = Node::start("pmatrix");
        let dir = node.state_dir.parent().unwrap().join("policy-matrix");
        std::fs::create_dir_all(&dir).unwrap();

        // The outside machine.
        let outside = OutsideNetns(format!("twpm-out-{}", std::process::id()));
        run_ok(Command::new("ip").args(["netns", "add", &outside.0]));
        let o = outside.0.as_str();
        let n = node.netns.as_str();
        for cmd in [
            vec!["-n", o, "link", "set", "lo", "up"],
            vec!["-n", n, "link", "add", "twpm-out", "type", "veth", "peer", "name", "eth0", "netns", o],
            vec!["-n", n, "addr", "add", &format!("{OUTSIDE_GW}/24"), "dev", "twpm-out"],
            vec!["-n", n, "link", "set", "twpm-out", "up"],
            vec!["-n", o, "addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"],
            vec!["-n", o, "link", "set", "eth0", "up"],
            vec!["-n", o, "route", "add", &node.pod_cidr, "via", OUTSIDE_GW],
        ] {
            run_ok(Command::new("ip").args(&cmd));
        }
        run_ok(Command::new("ip").args(["netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1"]));

        // Namespaces and endpoints.
        for ns in NAMESPACES {
            let mut labels = format!("team={ns}");
            if ns != "z" {
                labels.push_str(",env=prod");
            }
            node.twill_ok(&["namespace", "create", ns, "--labels", &labels]);
        }
        let mut ips = BTreeMap::new();
        let mut netns = BTreeMap::new();
        for ns in NAMESPACES {
            for pod in PODS {
                let (labels, web) = match pod {
                    "a" => ("pod=a", "web=80/tcp"),
                    "b" => ("pod=b,role=client", "web=81/tcp"),
                    _ => ("pod=c", "web=80/udp"),
                };
                let ep = node.twill_json(&[
                    "endpoint",
                    "create",
                    pod,
                    "--namespace",
                    ns,
                    "--labels",
                    labels,
                    "--port",
                    web,
                ]);
                ips.insert(Peer::Pod(ns, pod), ep["ipv4"].as_str().unwrap().to_string());
                netns.insert(Peer::Pod(ns, pod), ep["netns"].as_str().unwrap().to_string());
            }
        }
        ips.insert(Peer::Out, OUTSIDE_IP.to_string());
        netns.insert(Peer::Out, outside.0.clone());
        ips.insert(Peer::Host, router_of(&node.pod_cidr));
        netns.insert(Peer::Host, node.netns.clone());

        // Servers.
        let serve = script("matrix_serve.py");
        let server_args = ["python3", serve.as_str(), "tcp:80", "tcp:81", "udp:80"];
        let mut servers = Vec::new();
        for ns in NAMESPACES {
            for pod in PODS {
                servers.push(node.spawn_in(pod, ns, &server_args));
            }
        }
        let spawn = |netns: &str| {
            Proc(
                Command::new("ip")
                    .args(["netns", "exec", netns])
                    .args(server_args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        };
        let other_servers = vec![spawn(o), spawn(n)];

        let probers = netns.iter().map(|(p, ns)| (*p, Mutex::new(Prober::start(ns)))).collect();
        let env = Env {
            probers,
            _servers: servers,
            _other_servers: other_servers,
            _outside: outside,
            node,
            ips,
            dir,
            rounds: AtomicU32::new(0),
        };
        env.wait_for_servers();
        env
    }

    /// Probes the whole matrix, no policy loaded, until every server
    /// answers from everywhere.
    fn wait_for_servers(&self) {
        let mut last = BTreeMap::new();
        let ready = wait_until(Duration::from_secs(30), || {
            last = self.probe(&cells(), "0.5");
            last.values().all(|r| r == "ok")
        });
        let bad: Vec<String> = last
            .iter()
            .filter(|(_, r)| *r != "ok")
            .map(|((s, d, p), r)| format!("{s} -> {d} {p}: {r}"))
            .collect();
        assert!(ready, "servers did not come up everywhere:\n{}", bad.join("\n"));
    }

    /// The next block of source ports. Every round uses fresh ones, so
    /// that no probe meets an earlier probe's conntrack entry.
    fn next_base(&self) -> u32 {
        let round = self.rounds.fetch_add(1, Ordering::SeqCst);
        20000 + (round % 350) * 32
    }

    fn target(&self, d: Peer, p: Port) -> String {
        format!("{}:{}:{}", self.ips[&d], p.proto(), p.number())
    }

    /// Probes the given cells, every source in parallel. Result per cell:
    /// "ok", or why not ("timeout", "refused", ...).
    fn probe(&self, cells: &[Cell], timeout: &str) -> BTreeMap<Cell, String> {
        let mut by_source: BTreeMap<Peer, Vec<(Peer, Port)>> = BTreeMap::new();
        for (s, d, p) in cells {
            by_source.entry(*s).or_default().push((*d, *p));
        }
        let base = self.next_base();
        let mut sent = Vec::new();
        for (s, targets) in by_source {
            assert!(targets.len() <= 32);
            let keys: Vec<String> = targets.iter().map(|(d, p)| self.target(*d, *p)).collect();
            self.probers[&s].lock().unwrap().send(timeout, base, &keys);
            sent.push((s, targets, keys));
        }
        let mut out = BTreeMap::new();
        for (s, targets, keys) in sent {
            let got = self.probers[&s].lock().unwrap().recv();
            for ((d, p), k) in targets.iter().zip(&keys) {
                out.insert((s, *d, *p), result(&got, k));
            }
        }
        out
    }

    fn revision_of(text: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("Revision: "))
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or_else(|| panic!("no revision in {text:?}"))
    }

    fn wait_revision(&self, revision: u64) {
        self.node.twill_ok(&["policy", "wait", &revision.to_string(), "--timeout", "20"]);
    }

    /// Imports a case's documents; Err(stderr) when Twill rejects them.
    fn import(&self, name: &str, yaml: &str) -> Result<(), String> {
        let file = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let out = self.node.twill(&["policy", "import", file.to_str().unwrap()]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        self.wait_revision(Self::revision_of(&String::from_utf8_lossy(&out.stdout)));
        Ok(())
    }

    /// Deletes every policy (`delete --all` refuses when there is none).
    fn delete_all(&self) {
        let list: Value =
            serde_json::from_str(&self.node.twill_ok(&["policy", "get", "-o", "json"])).unwrap();
        if list["policies"].as_array().is_some_and(|p| !p.is_empty()) {
            let text = self.node.twill_ok(&["policy", "delete", "--all"]);
            self.wait_revision(Self::revision_of(&text));
        }
    }
}

// ---- Cases ----------------------------------------------------------------

struct Case {
    name: &'static str,
    yaml: &'static str,
    /// Whether (source, destination, port) gets through, for sources other
    /// than the host.
    expect: fn(Peer, Peer, Port) -> bool,
}

impl Case {
    /// The host reaches every endpoint whatever the policy (Cilium's
    /// allow-localhost; the host itself has no egress policy), and the
    /// outside machine by plain routing. Every other cell is the case's.
    fn expected(&self, s: Peer, d: Peer, p: Port) -> bool {
        s == Peer::Host || (self.expect)(s, d, p)
    }
}

/// Strips the indentation the YAML has in this file.
fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| if l.len() >= indent { &l[indent..] } else { l.trim_start() })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn cases() -> Vec<Case> {
    vec![
        Case { name: "no-policy", yaml: "", expect: |_, _, _| true },
        Case {
            name: "cnp-ingress-default-deny",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: deny-ingress, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress: [{}]
            "#,
            expect: |_, d, _| !d.is("x/a"),
        },
        Case {
            name: "cnp-from-same-namespace-pod-b",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: from-b, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromEndpoints: [{matchLabels: {pod: b}}]
            "#,
            expect: |s, d, _| !d.is("x/a") || s.is("x/b"),
        },
        Case {
            name: "cnp-from-pod-b-any-namespace",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: from-any-b, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromEndpoints:
                    - matchLabels: {pod: b}
                      matchExpressions:
                      - {key: k8s:io.kubernetes.pod.namespace, operator: Exists}
            "#,
            expect: |s, d, _| !d.is("x/a") || s.named("b"),
        },
        Case {
            // The namespace named in the selector (plain key, or namespace
            // labels next to an explicit pod-namespace requirement).
            name: "cnp-from-other-namespace",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: from-y-b, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromEndpoints: [{matchLabels: {io.kubernetes.pod.namespace: "y", pod: b}}]
                ---
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: from-team-z, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: b}}
                  ingress:
                  - fromEndpoints:
                    - matchLabels: {k8s:io.cilium.k8s.namespace.labels.team: z}
                      matchExpressions:
                      - {key: io.kubernetes.pod.namespace, operator: Exists}
            "#,
            expect: |s, d, _| {
                if d.is("x/a") {
                    s.is("y/b")
                } else if d.is("x/b") {
                    s.in_ns("z")
                } else {
                    true
                }
            },
        },
        Case {
            // Cilium adds the policy's namespace to every peer selector that
            // does not name io.kubernetes.pod.namespace itself: a selector on
            // namespace labels alone stays inside the policy's namespace
            // (env=prod is on x and y, but only x's pods match).
            name: "cnp-namespace-labels-stay-in-policy-namespace",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: from-prod, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: c}}
                  ingress:
                  - fromEndpoints: [{matchLabels: {k8s:io.cilium.k8s.namespace.labels.env: prod}}]
            "#,
            expect: |s, d, _| !d.is("x/c") || s.in_ns("x"),
        },
        Case {
            name: "cnp-from-whole-namespace",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: from-namespace, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromEndpoints: [{}]
            "#,
            expect: |s, d, _| !d.is("x/a") || s.in_ns("x"),
        },
        Case {
            name: "match-expressions-in",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: in, namespace: "y"}
                spec:
                  endpointSelector:
                    matchExpressions: [{key: pod, operator: In, values: [a, b]}]
                  ingress:
                  - fromEndpoints:
                    - matchExpressions: [{key: pod, operator: In, values: [c]}]
            "#,
            expect: |s, d, _| !(d.is("y/a") || d.is("y/b")) || s.is("y/c"),
        },
        Case {
            name: "match-expressions-notin",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: notin, namespace: "y"}
                spec:
                  endpointSelector: {matchLabels: {pod: c}}
                  ingress:
                  - fromEndpoints:
                    - matchExpressions: [{key: pod, operator: NotIn, values: [a]}]
            "#,
            expect: |s, d, _| !d.is("y/c") || s.is("y/b"),
        },
        Case {
            // Cluster-wide: the peer selector matches pods of every
            // namespace (role=client is on the b pods).
            name: "match-expressions-exists",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumClusterwideNetworkPolicy
                metadata: {name: exists}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromEndpoints:
                    - matchExpressions: [{key: role, operator: Exists}]
            "#,
            expect: |s, d, _| !d.named("a") || s.named("b"),
        },
        Case {
            // z has no env label. A cluster-wide peer selector still only
            // matches pods (Cilium adds "pod namespace Exists"), so the
            // outside machine, which has no labels at all, does not match.
            name: "match-expressions-doesnotexist",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumClusterwideNetworkPolicy
                metadata: {name: no-env}
                spec:
                  endpointSelector: {matchLabels: {pod: c}}
                  ingress:
                  - fromEndpoints:
                    - matchExpressions:
                      - {key: k8s:io.cilium.k8s.namespace.labels.env, operator: DoesNotExist}
                ---
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: no-role, namespace: z}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromEndpoints:
                    - matchExpressions: [{key: role, operator: DoesNotExist}]
            "#,
            expect: |s, d, _| {
                if d.named("c") {
                    s.in_ns("z")
                } else if d.is("z/a") {
                    s.is("z/c")
                } else {
                    true
                }
            },
        },
        Case {
            // Only L4 given: every peer, the outside machine included.
            name: "to-ports-tcp-80",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: tcp-80, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
            "#,
            expect: |_, d, p| !d.is("x/a") || p == Tcp80,
        },
        Case {
            name: "port-range-end-port",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: range, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: b}}
                  ingress:
                  - fromEndpoints:
                    - matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: Exists}]
                    toPorts: [{ports: [{port: "80", endPort: 81, protocol: TCP}]}]
            "#,
            expect: |s, d, p| !d.is("x/b") || (s.is_pod() && p.tcp()),
        },
        Case {
            name: "protocol-udp-only",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: udp, namespace: "y"}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromEntities: [all]
                    toPorts: [{ports: [{port: "80", protocol: UDP}]}]
            "#,
            expect: |_, d, p| !d.is("y/a") || p == Udp80,
        },
        Case {
            // protocol ANY, explicit and by omission: port 80 of TCP and UDP.
            name: "protocol-any",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: any-explicit, namespace: "y"}
                spec:
                  endpointSelector: {matchLabels: {pod: b}}
                  ingress:
                  - fromEndpoints: [{}]
                    toPorts: [{ports: [{port: "80", protocol: ANY}]}]
                ---
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: any-omitted, namespace: "y"}
                spec:
                  endpointSelector: {matchLabels: {pod: c}}
                  ingress:
                  - fromEntities: [world]
                    toPorts: [{ports: [{port: "80"}]}]
            "#,
            expect: |s, d, p| {
                if d.is("y/b") {
                    s.in_ns("y") && p != Tcp81
                } else if d.is("y/c") {
                    s.is_out() && p != Tcp81
                } else {
                    true
                }
            },
        },
        Case {
            name: "ingress-deny-overrides-allow",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: deny-b, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromEntities: [all]
                  ingressDeny:
                  - fromEndpoints: [{matchLabels: {pod: b}}]
                  - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: "y"}}]
                    toPorts: [{ports: [{port: "81", protocol: TCP}]}]
            "#,
            expect: |s, d, p| !d.is("x/a") || !(s.is("x/b") || (s.in_ns("y") && p == Tcp81)),
        },
        Case {
            // Replies to connections others open towards z/a still pass.
            name: "egress-deny",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: egress-deny, namespace: z}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  egress:
                  - toEntities: [all]
                  egressDeny:
                  - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: x}}]
                  - toEntities: [world]
                    toPorts: [{ports: [{port: "80", protocol: UDP}]}]
            "#,
            expect: |s, d, p| !s.is("z/a") || !(d.in_ns("x") || (d.is_out() && p == Udp80)),
        },
        Case {
            name: "egress-default-deny-allow-one-namespace",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: to-z, namespace: "y"}
                spec:
                  endpointSelector: {matchLabels: {pod: c}}
                  egress:
                  - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: z}}]
            "#,
            expect: |s, d, _| !s.is("y/c") || d.in_ns("z"),
        },
        Case {
            name: "from-entities-cluster",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: cluster, namespace: x}
                spec:
                  endpointSelector: {}
                  ingress:
                  - fromEntities: [cluster]
            "#,
            expect: |s, d, _| !d.in_ns("x") || s.is_pod(),
        },
        Case {
            name: "from-entities-world",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: world, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: c}}
                  ingress:
                  - fromEntities: [world]
            "#,
            expect: |s, d, _| !d.is("x/c") || s.is_out(),
        },
        Case {
            name: "entities-all",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: all, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromEntities: [all]
                  egress:
                  - toEntities: [all]
            "#,
            expect: |_, _, _| true,
        },
        Case {
            name: "to-entities-world",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: to-world, namespace: z}
                spec:
                  endpointSelector: {matchLabels: {pod: b}}
                  egress:
                  - toEntities: [world]
            "#,
            expect: |s, d, _| !s.is("z/b") || d.is_out(),
        },
        Case {
            name: "from-cidr",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: from-cidr, namespace: "y"}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromCIDR: [192.0.2.0/24]
            "#,
            expect: |s, d, _| !d.is("y/a") || s.is_out(),
        },
        Case {
            name: "from-cidr-set-except",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: cidr-except, namespace: "y"}
                spec:
                  endpointSelector: {matchLabels: {pod: b}}
                  ingress:
                  - fromCIDRSet: [{cidr: 192.0.2.0/24, except: [192.0.2.2/32]}]
                  - fromEndpoints: [{matchLabels: {pod: c}}]
            "#,
            expect: |s, d, _| !d.is("y/b") || s.is("y/c"),
        },
        Case {
            // An except only narrows its own rule; another rule that
            // selects the excepted address still allows it (allows are a
            // union), here only on tcp/81.
            name: "cidr-except-is-not-a-deny",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: except-union, namespace: "y"}
                spec:
                  endpointSelector: {matchLabels: {pod: b}}
                  ingress:
                  - fromCIDRSet: [{cidr: 192.0.2.0/24, except: [192.0.2.2/32]}]
                  - fromCIDR: [192.0.2.2/32]
                    toPorts: [{ports: [{port: "81", protocol: TCP}]}]
            "#,
            expect: |s, d, p| !d.is("y/b") || (s.is_out() && p == Tcp81),
        },
        Case {
            name: "to-cidr",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: to-cidr, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: b}}
                  egress:
                  - toCIDR: [192.0.2.2/32]
                    toPorts: [{ports: [{port: "81", protocol: TCP}]}]
            "#,
            expect: |s, d, p| !s.is("x/b") || (d.is_out() && p == Tcp81),
        },
        Case {
            // Cilium: CIDR rules do not select cluster endpoints, even when
            // the prefix holds their addresses; 0.0.0.0/0 means world.
            name: "cidr-does-not-select-pods",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: pod-cidr, namespace: z}
                spec:
                  endpointSelector: {matchLabels: {pod: c}}
                  ingress:
                  - fromCIDR: [10.200.0.0/24]
                  - fromEndpoints: [{matchLabels: {pod: a}}]
                ---
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: everything-cidr, namespace: z}
                spec:
                  endpointSelector: {matchLabels: {pod: b}}
                  ingress:
                  - fromCIDR: [0.0.0.0/0]
            "#,
            expect: |s, d, _| {
                if d.is("z/c") {
                    s.is("z/a")
                } else if d.is("z/b") {
                    s.is_out()
                } else {
                    true
                }
            },
        },
        Case {
            name: "ccnp-selects-all-namespaces",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumClusterwideNetworkPolicy
                metadata: {name: c-from-a}
                spec:
                  endpointSelector: {matchLabels: {pod: c}}
                  ingress:
                  - fromEndpoints: [{matchLabels: {pod: a}}]
            "#,
            expect: |s, d, _| !d.named("c") || s.named("a"),
        },
        Case {
            // Cluster-wide, fromEndpoints {} is every pod, not world.
            name: "ccnp-from-endpoints-empty",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumClusterwideNetworkPolicy
                metadata: {name: b-from-pods}
                spec:
                  endpointSelector: {matchLabels: {pod: b}}
                  ingress:
                  - fromEndpoints: [{}]
            "#,
            expect: |s, d, _| !d.named("b") || s.is_pod(),
        },
        Case {
            name: "specs-list",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: two-rules, namespace: z}
                specs:
                - endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromEndpoints: [{matchLabels: {pod: b}}]
                - endpointSelector: {matchLabels: {pod: b}}
                  egress:
                  - toEndpoints:
                    - matchExpressions: [{key: pod, operator: In, values: [a, c]}]
            "#,
            expect: |s, d, _| {
                let ingress = !d.is("z/a") || s.is("z/b");
                let egress = !s.is("z/b") || d.is("z/a") || d.is("z/c");
                ingress && egress
            },
        },
        Case {
            name: "default-deny-disabled-with-allow",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: no-default-deny, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  enableDefaultDeny: {ingress: false, egress: false}
                  ingress:
                  - fromEndpoints: [{matchLabels: {pod: b}}]
                  egress:
                  - toEndpoints: [{matchLabels: {pod: c}}]
            "#,
            expect: |_, _, _| true,
        },
        Case {
            name: "default-deny-disabled-with-deny",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: only-deny, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  enableDefaultDeny: {ingress: false, egress: false}
                  ingressDeny:
                  - fromEndpoints: [{matchLabels: {pod: b}}]
                  egressDeny:
                  - toEntities: [world]
            "#,
            expect: |s, d, _| !((s.is("x/b") && d.is("x/a")) || (s.is("x/a") && d.is_out())),
        },
        Case {
            // Default deny holds as soon as one policy selecting the
            // endpoint asks for it.
            name: "default-deny-disabled-but-another-policy-enables-it",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: lenient, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  enableDefaultDeny: {ingress: false}
                  ingress:
                  - fromEndpoints: [{matchLabels: {pod: b}}]
                ---
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: strict, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromEndpoints: [{matchLabels: {pod: c}}]
            "#,
            expect: |s, d, _| !d.is("x/a") || s.is("x/b") || s.is("x/c"),
        },
        Case {
            // fromRequires in one policy constrains what every other rule
            // selecting the same endpoint allows: into x/a only z's b.
            name: "from-requires",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumClusterwideNetworkPolicy
                metadata: {name: a-from-b}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromEndpoints: [{matchLabels: {pod: b}}]
                ---
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: require-z, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromRequires: [{matchLabels: {k8s:io.kubernetes.pod.namespace: z}}]
            "#,
            expect: |s, d, _| {
                if d.is("x/a") {
                    s.is("z/b")
                } else if d.named("a") {
                    s.named("b")
                } else {
                    true
                }
            },
        },
        Case {
            name: "np-pod-selector",
            yaml: r#"
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: a-from-b, namespace: x}
                spec:
                  podSelector: {matchLabels: {pod: a}}
                  ingress:
                  - from: [{podSelector: {matchLabels: {pod: b}}}]
            "#,
            expect: |s, d, _| !d.is("x/a") || s.is("x/b"),
        },
        Case {
            name: "np-namespace-selector",
            yaml: r#"
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: from-team-y, namespace: x}
                spec:
                  podSelector: {}
                  ingress:
                  - from: [{namespaceSelector: {matchLabels: {team: "y"}}}]
            "#,
            expect: |s, d, _| !d.in_ns("x") || s.in_ns("y"),
        },
        Case {
            // One peer with both selectors is AND; two peers are OR.
            name: "np-pod-and-namespace-selector",
            yaml: r#"
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: and, namespace: x}
                spec:
                  podSelector: {matchLabels: {pod: a}}
                  ingress:
                  - from:
                    - namespaceSelector: {matchLabels: {team: z}}
                      podSelector: {matchLabels: {pod: b}}
                ---
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: or, namespace: x}
                spec:
                  podSelector: {matchLabels: {pod: b}}
                  ingress:
                  - from:
                    - namespaceSelector: {matchLabels: {team: z}}
                    - podSelector: {matchLabels: {pod: c}}
            "#,
            expect: |s, d, _| {
                if d.is("x/a") {
                    s.is("z/b")
                } else if d.is("x/b") {
                    s.in_ns("z") || s.is("x/c")
                } else {
                    true
                }
            },
        },
        Case {
            name: "np-ip-block-except",
            yaml: r#"
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: except-outside, namespace: x}
                spec:
                  podSelector: {matchLabels: {pod: a}}
                  ingress:
                  - from:
                    - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.2/32]}
                    - podSelector: {matchLabels: {pod: b}}
                ---
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: except-elsewhere, namespace: x}
                spec:
                  podSelector: {matchLabels: {pod: c}}
                  ingress:
                  - from:
                    - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}
            "#,
            expect: |s, d, _| {
                if d.is("x/a") {
                    s.is("x/b")
                } else if d.is("x/c") {
                    s.is_out()
                } else {
                    true
                }
            },
        },
        Case {
            // udp/80 from every pod; tcp/81 (81-85) from anyone; tcp/80
            // (79-80, protocol defaulting to TCP) from the outside only.
            name: "np-ports-end-port-and-udp",
            yaml: r#"
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: ports, namespace: "y"}
                spec:
                  podSelector: {matchLabels: {pod: c}}
                  ingress:
                  - from: [{namespaceSelector: {}}]
                    ports: [{protocol: UDP, port: 80}]
                  - ports: [{protocol: TCP, port: 81, endPort: 85}]
                  - from: [{ipBlock: {cidr: 192.0.2.0/24}}]
                    ports: [{port: 79, endPort: 80}]
            "#,
            expect: |s, d, p| {
                !d.is("y/c")
                    || match p {
                        Udp80 => s.is_pod(),
                        Tcp81 => true,
                        Tcp80 => s.is_out(),
                    }
            },
        },
        Case {
            name: "np-egress-only-deny-all",
            yaml: r#"
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: no-egress, namespace: z}
                spec:
                  podSelector: {}
                  policyTypes: [Egress]
            "#,
            expect: |s, _, _| !s.in_ns("z"),
        },
        Case {
            // Without policyTypes: Ingress always, Egress only when the
            // policy has an egress section.
            name: "np-default-policy-types",
            yaml: r#"
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: ingress-only, namespace: "y"}
                spec:
                  podSelector: {matchLabels: {pod: a}}
                ---
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: with-egress, namespace: "y"}
                spec:
                  podSelector: {matchLabels: {pod: b}}
                  ingress: [{}]
                  egress:
                  - to: [{podSelector: {matchLabels: {pod: c}}}]
            "#,
            expect: |s, d, _| !d.is("y/a") && (!s.is("y/b") || d.is("y/c")),
        },
        Case {
            name: "np-egress-namespace-selector-port",
            yaml: r#"
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: to-x-80, namespace: z}
                spec:
                  podSelector: {matchLabels: {pod: a}}
                  policyTypes: [Egress]
                  egress:
                  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}}]
                    ports: [{port: 80}]
            "#,
            expect: |s, d, p| !s.is("z/a") || (d.in_ns("x") && p == Tcp80),
        },
        Case {
            // "web" is tcp/80 on a, tcp/81 on b, udp/80 on c.
            name: "named-port",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumClusterwideNetworkPolicy
                metadata: {name: web}
                spec:
                  endpointSelector:
                    matchExpressions: [{key: pod, operator: Exists}]
                  ingress:
                  - fromEntities: [all]
                    toPorts: [{ports: [{port: web}]}]
            "#,
            expect: |_, d, p| match d {
                Peer::Pod(_, "a") => p == Tcp80,
                Peer::Pod(_, "b") => p == Tcp81,
                Peer::Pod(..) => p == Udp80,
                Peer::Out | Peer::Host => true,
            },
        },
        Case {
            // The sender's egress and the receiver's ingress both decide.
            name: "egress-and-ingress-together",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: a-out, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  egress:
                  - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: "y"}}]
                    toPorts: [{ports: [{port: "80", endPort: 81, protocol: TCP}]}]
                ---
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: b-in-from-xa, namespace: "y"}
                spec:
                  endpointSelector: {matchLabels: {pod: b}}
                  ingress:
                  - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: x, pod: a}}]
                    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
                ---
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: b-in-from-world, namespace: "y"}
                spec:
                  endpointSelector: {matchLabels: {pod: b}}
                  ingress:
                  - fromEntities: [world]
            "#,
            expect: |s, d, p| {
                let egress = !s.is("x/a") || (d.in_ns("y") && p.tcp());
                let ingress = !d.is("y/b") || (s.is("x/a") && p == Tcp80) || s.is_out();
                egress && ingress
            },
        },
        Case {
            // A deny in one policy beats an allow-all in another policy
            // of another kind.
            name: "deny-beats-allow-across-policies",
            yaml: r#"
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: allow-all, namespace: "y"}
                spec:
                  podSelector: {}
                  ingress: [{}]
                ---
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: deny-x, namespace: "y"}
                spec:
                  endpointSelector: {}
                  ingressDeny:
                  - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: x}}]
            "#,
            expect: |s, d, _| !d.in_ns("y") || !s.in_ns("x"),
        },
        Case {
            name: "to-entities-host",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: to-host, namespace: "y"}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  egress:
                  - toEntities: [host]
            "#,
            expect: |s, d, _| !s.is("y/a") || d == Peer::Host,
        },
        Case {
            // cluster: every endpoint and the host, not world.
            name: "to-entities-cluster",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: to-cluster, namespace: "y"}
                spec:
                  endpointSelector: {matchLabels: {pod: b}}
                  egress:
                  - toEntities: [cluster]
            "#,
            expect: |s, d, _| !s.is("y/b") || !d.is_out(),
        },
        Case {
            // Allows of policies of different kinds add up.
            name: "allows-union-across-policies",
            yaml: r#"
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: from-team-y, namespace: x}
                spec:
                  podSelector: {matchLabels: {pod: a}}
                  ingress:
                  - from: [{namespaceSelector: {matchLabels: {team: "y"}}}]
                ---
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: from-c-81, namespace: x}
                spec:
                  endpointSelector: {matchLabels: {pod: a}}
                  ingress:
                  - fromEndpoints: [{matchLabels: {pod: c}}]
                    toPorts: [{ports: [{port: "81", protocol: TCP}]}]
            "#,
            expect: |s, d, p| !d.is("x/a") || s.in_ns("y") || (s.is("x/c") && p == Tcp81),
        },
        Case {
            // An empty ingress list is no ingress rule: no default deny for
            // ingress, while egress (non-empty) is enforced.
            name: "empty-ingress-list-is-not-default-deny",
            yaml: r#"
                apiVersion: cilium.io/v2
                kind: CiliumNetworkPolicy
                metadata: {name: empty-ingress, namespace: z}
                spec:
                  endpointSelector: {matchLabels: {pod: c}}
                  ingress: []
                  egress:
                  - toEntities: [world]
            "#,
            expect: |s, d, _| !s.is("z/c") || d.is_out(),
        },
    ]
}

// ---- Running and reporting ---------------------------------------------

fn mark(allowed: bool) -> &'static str {
    if allowed {
        "allow"
    } else {
        "deny"
    }
}

/// The observed matrix: one row per source, one column per destination,
/// three characters per cell (tcp/80, tcp/81, udp/80): '+' allowed, '-'
/// denied, as expected; 'A' allowed but expected denied, 'D' denied but
/// expected allowed.
fn grid(observed: &BTreeMap<Cell, bool>, case: &Case) -> String {
    let peers = Peer::all();
    let mut out = format!("{:>9}", "");
    for d in &peers {
        out.push_str(&format!(" {:>7}", d.to_string()));
    }
    out.push('\n');
    for s in &peers {
        out.push_str(&format!("{:>9}", s.to_string()));
        for d in &peers {
            let cell: String = if s == d {
                "   ".into()
            } else {
                Port::ALL
                    .iter()
                    .map(|p| match (observed[&(*s, *d, *p)], case.expected(*s, *d, *p)) {
                        (true, true) => '+',
                        (false, false) => '-',
                        (true, false) => 'A',
                        (false, true) => 'D',
                    })
                    .collect()
            };
            out.push_str(&format!(" {cell:>7}"));
        }
        out.push('\n');
    }
    out
}

/// Runs one case; returns its failure report, if any.
fn run_case(env: &Env, case: &Case) -> Option<String> {
    let yaml = dedent(case.yaml);
    if !case.yaml.trim().is_empty() {
        if let Err(e) = env.import(case.name, &yaml) {
            return Some(format!("case {}: twill rejected the policy:\n{e}\n{yaml}", case.name));
        }
    }
    let all = cells();
    let first = env.probe(&all, PROBE_TIMEOUT);
    let mut observed: BTreeMap<Cell, bool> = first.iter().map(|(c, r)| (*c, r == "ok")).collect();
    let mut why: BTreeMap<Cell, String> = first;

    // A second, slower look at cells that were denied but should not be,
    // so that a slow machine does not turn into a policy failure. (Slowness
    // cannot let traffic through: a cell allowed against expectations is
    // reported as it is.)
    let missed: Vec<Cell> = all
        .iter()
        .copied()
        .filter(|(s, d, p)| !observed[&(*s, *d, *p)] && case.expected(*s, *d, *p))
        .collect();
    if !missed.is_empty() {
        for (cell, r) in env.probe(&missed, RETRY_TIMEOUT) {
            let allowed = r == "ok";
            if allowed {
                let (s, d, p) = cell;
                eprintln!("case {}: {s} -> {d} {p} only got through on the second, slower probe", case.name);
            }
            observed.insert(cell, allowed);
            why.insert(cell, r);
        }
    }

    let mut lines = Vec::new();
    for (s, d, p) in &all {
        let want = case.expected(*s, *d, *p);
        let got = observed[&(*s, *d, *p)];
        if want != got {
            lines.push(format!(
                "  {s} -> {d} {p}: expected {}, got {} ({})",
                mark(want),
                mark(got),
                why[&(*s, *d, *p)]
            ));
        }
    }
    if lines.is_empty() {
        return None;
    }
    let policy =
        String::from_utf8_lossy(&env.node.twill(&["policy", "get", "-o", "json"]).stdout).into_owned();
    Some(format!(
        "case {}: {} of {} cells wrong\n{}\npolicy:\n{yaml}\nobserved ('+' allow, '-' deny, 'A' allowed but expected deny, 'D' denied but expected allow; per cell tcp/80 tcp/81 udp/80):\n{}\ntwill policy get -o json:\n{policy}",
        case.name,
        lines.len(),
        all.len(),
        lines.join("\n"),
        grid(&observed, case)
    ))
}

#[test]
fn policy_reachability_matrix() {
    let started = Instant::now();
    let env = Env::setup();
    eprintln!("setup took {:?}", started.elapsed());
    let cases = cases();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");

    // Only filter for local debugging: POLICY_MATRIX_CASE=substring.
    let filter = std::env::var("POLICY_MATRIX_CASE").unwrap_or_default();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in cases.iter().filter(|c| c.name.contains(&filter)) {
        let t = Instant::now();
        let failure = run_case(&env, case);
        env.delete_all();
        ran += 1;
        eprintln!(
            "case {:<55} {} in {:?}",
            case.name,
            if failure.is_some() { "FAILED" } else { "ok" },
            t.elapsed()
        );
        failures.extend(failure);
    }
    eprintln!("{ran} cases in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {ran} policy cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
