//! Datapath debug messages through Hubble's GetDebugEvents: a real agent
//! with `--debug-verbose datapath`, two endpoints, a ping and a TCP
//! connect that policy denies; read by `twill observe debug-events` and,
//! unchanged, by the upstream `hubble observe debug-events`. Off by
//! default, and switched at runtime with `twill config set`. Through
//! twill-relay, a cluster's debug events in one time-ordered stream.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use twill_e2e::{bin_dir, cluster::Cluster, hubble_cli, ip_of, wait_until, Node};

fn hubble_debug(node: &Node, args: &[&str]) -> String {
    twill_e2e::hubble_observe_events(node, "debug-events", args)
}

fn debug_events(node: &Node) -> Vec<Value> {
    let json = node.twill_ok(&["observe", "debug-events", "--all", "-o", "json"]);
    json.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Messages of one type whose source is the pod `pod`.
fn messages<'a>(events: &'a [Value], kind: &str, pod: &str) -> Vec<&'a str> {
    events
        .iter()
        .map(|e| &e["debug_event"])
        .filter(|d| d["type"] == kind && d["source"]["pod_name"] == pod)
        .filter_map(|d| d["message"].as_str())
        .collect()
}

const POLICY: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: web-80\nspec:\n  endpointSelector: {matchLabels: {app: server}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: client}}]\n    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]\n";

fn ping(node: &Node, from: &str, ip: &str) -> bool {
    node.exec(from, "default", &["ping", "-c", "1", "-W", "1", ip]).status.success()
}

#[test]
fn debug_events_show_the_datapath_steps_and_hubble_reads_them_unchanged() {
    let mut node = Node::prepare("dbgev", "10.200.0.0/24");
    node.agent_args = vec!["--debug-verbose".into(), "datapath".into()];
    node.start_agent();
    let client = node.endpoint("client", "default", "app=client");
    let server = node.endpoint("server", "default", "app=server");
    let file = node.state_dir.parent().unwrap().join("web-80.yaml");
    std::fs::write(&file, POLICY).unwrap();
    node.twill_ok(&["policy", "import", file.to_str().unwrap()]);
    let (client_ip, server_ip) = (ip_of(&client), ip_of(&server));
    let (client_id, server_id) = (client["identity"].as_u64().unwrap(), server["identity"].as_u64().unwrap());

    // Allowed: the server pings the client (no policy on that way).
    assert!(ping(&node, "server", &client_ip), "server -> client ping");
    // Denied: the client to a port the server's policy does not open.
    let out = node.exec(
        "client",
        "default",
        &["socat", "-T1", "-", &format!("TCP:{server_ip}:81,connect-timeout=1")],
    );
    assert!(!out.status.success(), "client -> server:81 must not connect");

    let denied = format!("Policy evaluation would deny packet from {client_id} to {server_id}");
    let mut events = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            events = debug_events(&node);
            messages(&events, "DBG_POLICY_DENIED", "server").contains(&denied.as_str())
        }),
        "no {denied:?} from the server's endpoint in {events:#?}"
    );
    let delivery = format!(
        "Attempting local delivery for container id {} from seclabel {server_id}",
        client["id"].as_u64().unwrap()
    );
    assert!(messages(&events, "DBG_LOCAL_DELIVERY", "server").contains(&delivery.as_str()), "{events:#?}");
    let found = format!(
        "Local container found ifindex {} seclabel {client_id}",
        client["host_device"].as_str().unwrap()
    );
    assert!(messages(&events, "DBG_LXC_FOUND", "server").contains(&found.as_str()), "{events:#?}");
    let lookup = messages(&events, "DBG_CT_LOOKUP4_1", "server");
    assert!(
        lookup.iter().any(|m| m.starts_with(&format!("Conntrack lookup 1/2: src={client_ip}:"))
            && m.ends_with(&format!("dst={server_ip}:81"))),
        "the denied SYN's lookup at the server: {lookup:?}"
    );
    assert!(
        messages(&events, "DBG_CT_VERDICT", "client").contains(&"CT verdict: New, revnat=0"),
        "{events:#?}"
    );
    assert!(
        messages(&events, "DBG_CT_CREATED4", "client").contains(
            &format!("Conntrack create: proxy-port=0 revnat=0 src-identity={client_id} lb=0.0.0.0").as_str()
        ),
        "{events:#?}"
    );
    let source =
        events.iter().map(|e| &e["debug_event"]["source"]).find(|s| s["pod_name"] == "server").unwrap();
    assert_eq!(source["ID"], server["id"]);
    assert_eq!(source["identity"], server["identity"]);
    assert_eq!(source["namespace"], "default");
    assert!(source["labels"].as_array().unwrap().iter().any(|l| l == "k8s:app=server"), "{source}");
    assert!(events.iter().all(|e| e["node_name"] == node.name.as_str() && e["debug_event"]["cpu"].is_u64()));

    // The upstream client prints exactly what twill prints, both formats.
    // Once the last messages have been read from the ring (a SYN the
    // kernel retransmitted just before socat gave up may still be on its
    // way), nothing else arrives (IPv6 neighbour discovery makes no debug
    // messages), so the last N stay the same between the two.
    let n = wait_for_quiet(&node).to_string();
    assert_eq!(
        node.twill_ok(&["observe", "debug-events", "--last", &n, "-o", "json"]),
        hubble_debug(&node, &["--last", &n, "-o", "json"])
    );
    let compact = node.twill_ok(&["observe", "debug-events", "--last", &n]);
    assert_eq!(compact, hubble_debug(&node, &["--last", &n]));
    // --since the denial: the server applies it, for both clients alike.
    let denial = events.iter().find(|e| e["debug_event"]["type"] == "DBG_POLICY_DENIED").unwrap();
    let since = denial["time"].as_str().unwrap();
    let after = node.twill_ok(&["observe", "debug-events", "--since", since, "-o", "json"]);
    assert_eq!(after, hubble_debug(&node, &["--since", since, "-o", "json"]));
    assert!(after.lines().next().is_some_and(|l| l.contains("DBG_POLICY_DENIED")), "{after}");
    assert!(after.lines().count() < events.len(), "only what came since: {after}");
    assert!(
        compact.contains(&format!("default/server (ID: {}) DBG_POLICY_DENIED MARK: 0x", server["id"])),
        "{compact}"
    );
}

#[test]
fn debug_events_are_off_by_default_and_switch_at_runtime() {
    let node = Node::start("dbgoff");
    let a = node.endpoint("a", "default", "app=a");
    node.endpoint("b", "default", "app=b");
    let a_ip = ip_of(&a);
    assert!(ping(&node, "b", &a_ip));
    // Flows of the ping arrive; debug messages never do.
    assert!(
        wait_until(Duration::from_secs(10), || node
            .twill_ok(&["observe", "--last", "50", "-o", "json"])
            .contains("EchoReply")),
        "no flows of the ping"
    );
    assert_eq!(node.twill_ok(&["observe", "debug-events", "--all"]), "", "debug is off by default");
    assert!(node.twill_ok(&["config", "get"]).contains("debug-datapath   false"));

    // A bad value names the setting and changes nothing.
    let bad = node.twill(&["config", "set", "debug-datapath=maybe"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("debug-datapath") && err.contains("not a boolean"), "{err}");
    assert!(ping(&node, "b", &a_ip));
    assert_eq!(node.twill_ok(&["observe", "debug-events", "--all"]), "", "still off");

    let on: Value =
        serde_json::from_str(&node.twill_ok(&["config", "set", "debug-datapath=true", "-o", "json"]))
            .unwrap();
    assert_eq!(on["debug-datapath"], true);
    assert!(ping(&node, "b", &a_ip));
    let mut count = 0;
    assert!(
        wait_until(Duration::from_secs(10), || {
            count = debug_events(&node).len();
            count > 0
        }),
        "no debug events after turning them on"
    );
    // Off again: the ping's messages stop, the stored ones stay.
    node.twill_ok(&["config", "set", "debug-datapath=false"]);
    let before = wait_for_quiet(&node);
    assert!(ping(&node, "b", &a_ip));
    assert!(
        wait_until(Duration::from_secs(5), || node
            .twill_ok(&["observe", "--last", "200", "-o", "json"])
            .matches("EchoReply")
            .count()
            >= 3),
        "the last ping's flows"
    );
    assert_eq!(debug_events(&node).len(), before, "no debug events once turned off");

    // One endpoint's debug option, with the node's off: only its steps.
    let bad = node.twill(&["endpoint", "config", "b", "debug=maybe"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("debug") && err.contains("not a boolean"), "{err}");
    assert!(!node.twill(&["endpoint", "config", "nobody", "debug=true"]).status.success());
    let on: Value =
        serde_json::from_str(&node.twill_ok(&["endpoint", "config", "b", "debug=true", "-o", "json"]))
            .unwrap();
    assert_eq!(on["debug"], true);
    assert!(ping(&node, "b", &a_ip));
    let mut fresh = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            fresh = debug_events(&node).split_off(before);
            fresh.iter().any(|e| e["debug_event"]["type"] == "DBG_LOCAL_DELIVERY")
        }),
        "b's delivery with b's debug option on: {fresh:#?}"
    );
    assert!(
        fresh.iter().all(|e| e["debug_event"]["source"]["pod_name"] == "b"),
        "only b's steps, not a's: {fresh:#?}"
    );
    assert!(node.twill_ok(&["endpoint", "config", "b"]).contains("debug   true"));
    node.twill_ok(&["endpoint", "config", "b", "debug=false"]);
}

/// The count of debug events once it has not changed for half a second:
/// the reader drains the ring on a 50 ms timer, so the last messages may
/// still be arriving.
fn wait_for_quiet(node: &Node) -> usize {
    quiet_count(|| debug_events(node).len())
}

fn quiet_count(mut count: impl FnMut() -> usize) -> usize {
    let mut last = count();
    let mut since = std::time::Instant::now();
    let quiet = wait_until(Duration::from_secs(10), || {
        let now = count();
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        }
        since.elapsed() >= Duration::from_millis(500)
    });
    assert!(quiet, "debug events kept arriving");
    last
}

/// The relay's address inside node 0's namespace (its own, so no other
/// test's relay is in the way).
const RELAY: &str = "127.0.0.1:4247";

/// A process of the test (twill-relay, a follower), killed on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_relay_merges_every_nodes_debug_events_in_time_order() {
    let mut cluster = Cluster::new("dbgr");
    for _ in 0..2 {
        cluster.join("tunnel", &["--hubble-listen-address", "0.0.0.0:4244", "--debug-verbose", "datapath"]);
    }
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let a = cluster.nodes[0].endpoint("a", "default", "app=a");
    let b = cluster.nodes[1].endpoint("b", "default", "app=b");
    let n0 = &cluster.nodes[0];
    assert!(
        wait_until(Duration::from_secs(15), || n0.ping("a", "default", &ip_of(&b))),
        "ping a -> b across the tunnel"
    );
    let relay = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", n0.netns()))
        .arg(bin_dir().join("twill-relay"))
        .args(["--peer-service", "127.0.0.1:4244", "--listen-address", RELAY])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _relay = KillOnDrop(relay);
    let hubble = hubble_cli();
    let read = |args: &[&str]| {
        let mut all = vec![hubble.to_str().unwrap(), "observe", "debug-events", "--server", RELAY];
        all.extend_from_slice(args);
        n0.net().cmd(&all)
    };

    // Both nodes' messages about the ping: the sender encapsulates, the
    // receiver decapsulates, each named by its node.
    let encap = format!("from seclabel {}", a["identity"]);
    let decap = format!("Tunnel decap: id={} flowlabel=0", a["identity"]);
    let mut events: Vec<Value> = Vec::new();
    let both = wait_until(Duration::from_secs(20), || {
        let out = read(&["--last", "1000", "-o", "json"]);
        events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let has = |node: &str, kind: &str, pod: &str, text: &str| {
            events.iter().any(|e| {
                e["node_name"] == node
                    && e["debug_event"]["type"] == kind
                    && e["debug_event"]["source"]["pod_name"] == pod
                    && e["debug_event"]["message"].as_str().is_some_and(|m| m.contains(text))
            })
        };
        has(&names[0], "DBG_ENCAP", "a", &encap) && has(&names[1], "DBG_DECAP", "b", &decap)
    });
    assert!(both, "DBG_ENCAP at {} and DBG_DECAP at {} through the relay: {events:#?}", names[0], names[1]);
    let times: Vec<&str> = events.iter().filter_map(|e| e["time"].as_str()).collect();
    let key = |t: &str| {
        let t = t.trim_end_matches('Z');
        let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
        (secs.to_string(), format!("{frac:0<9}"))
    };
    assert!(times.windows(2).all(|w| key(w[0]) <= key(w[1])), "time order: {times:?}");

    // --last N across the cluster, not per node; and twill reads the
    // relay exactly as hubble does.
    let few = read(&["--last", "3", "-o", "json"]);
    assert_eq!(String::from_utf8_lossy(&few.stdout).lines().count(), 3);
    // Compared once the replies' messages are in too.
    let n = quiet_count(|| String::from_utf8_lossy(&read(&["--all", "-o", "json"]).stdout).lines().count());
    let n = n.to_string();
    let twill = bin_dir().join("twill");
    let ours = n0.net().cmd(&[
        twill.to_str().unwrap(),
        "observe",
        "debug-events",
        "--server",
        RELAY,
        "--last",
        &n,
        "--print-node-name",
    ]);
    let theirs = read(&["--last", &n, "--print-node-name"]);
    assert!(ours.status.success(), "{}", String::from_utf8_lossy(&ours.stderr));
    assert_eq!(String::from_utf8_lossy(&ours.stdout), String::from_utf8_lossy(&theirs.stdout));
}

#[test]
fn following_debug_events_shows_new_packets_as_they_pass() {
    let mut node = Node::prepare("dbgf", "10.200.0.0/24");
    node.agent_args = vec!["--debug-verbose".into(), "datapath".into()];
    node.start_agent();
    let a = node.endpoint("a", "default", "app=a");
    node.endpoint("b", "default", "app=b");
    let hubble = Command::new(hubble_cli())
        .args([
            "observe",
            "debug-events",
            "-f",
            "--server",
            &format!("unix://{}", node.hubble_socket().display()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let twill = Command::new(bin_dir().join("twill"))
        .args(["--socket", node.socket.to_str().unwrap(), "observe", "debug-events", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut followers = [KillOnDrop(hubble), KillOnDrop(twill)];
    let lines: Vec<std::sync::mpsc::Receiver<String>> = followers
        .iter_mut()
        .map(|f| {
            let stdout = f.0.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            rx
        })
        .collect();
    // Follow sends only what comes after it started: ping until both
    // streams show the delivery to a, from b.
    let delivery = format!("Attempting local delivery for container id {}", a["id"]);
    let mut seen = [false, false];
    let shown = wait_until(Duration::from_secs(15), || {
        ping(&node, "b", &ip_of(&a));
        for (rx, seen) in lines.iter().zip(seen.iter_mut()) {
            while let Ok(line) = rx.try_recv() {
                *seen |= line.contains("default/b (ID: ") && line.contains(&delivery);
            }
        }
        seen == [true, true]
    });
    assert!(shown, "a followed stream shows each new ping's delivery (hubble, twill): {seen:?}");
}
