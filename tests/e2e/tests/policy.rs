//! Network policy as a user meets it: all-or-nothing imports with precise
//! errors, revisions, enforcement of real traffic with drop reasons,
//! `policy trace`, conntrack (replies and related ICMP), policy churn
//! without drops, new denies against established connections, and
//! endpoints that appear after their policy.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use twill_e2e::{wait_until, Background, Node, Value};

const NS: &str = "default";

fn ip_of(endpoint: &Value) -> String {
    endpoint["ipv4"].as_str().unwrap().to_string()
}

/// Writes a policy file into the node's scratch directory (removed with
/// the node) and returns its path.
fn policy_file(node: &Node, name: &str, yaml: &str) -> String {
    let path = node.state_dir.parent().unwrap().join(name);
    std::fs::write(&path, yaml).unwrap();
    path.to_string_lossy().into_owned()
}

fn import(node: &Node, path: &str) -> u64 {
    let out = node.twill_ok(&["policy", "import", path]);
    let rev = out
        .lines()
        .find_map(|l| l.strip_prefix("Revision: "))
        .unwrap_or_else(|| panic!("no revision in import output:\n{out}"));
    rev.trim().parse().unwrap()
}

fn policies(node: &Node) -> Value {
    node.twill_json(&["policy", "get"])
}

fn revision(node: &Node) -> u64 {
    policies(node)["revision"].as_u64().unwrap()
}

/// Packets dropped with `reason`, both directions.
fn drops(node: &Node, reason: u64) -> u64 {
    node.twill_json(&["bpf", "metrics", "list"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["reason"] == reason)
        .map(|m| m["packets"].as_u64().unwrap())
        .sum()
}

/// A TCP server in `endpoint` answering "ok"; returns once it listens.
fn serve(node: &Node, endpoint: &str, port: u16) -> Background {
    let listen = format!("TCP-LISTEN:{port},reuseaddr,fork");
    let server = node.spawn_in(endpoint, NS, &["socat", &listen, "SYSTEM:echo ok"]);
    node.wait_for_socket(endpoint, "-tln", port);
    server
}

/// One TCP connection from `from` to ip:port; Ok when the server answered,
/// else socat's error.
fn tcp(node: &Node, from: &str, ip: &str, port: u16) -> Result<(), String> {
    let target = format!("TCP:{ip}:{port},connect-timeout=1");
    let out = node.exec(from, NS, &["socat", "-T2", "-", &target]);
    if String::from_utf8_lossy(&out.stdout).contains("ok") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Asserts that a connection is dropped (times out), not refused.
fn assert_tcp_dropped(node: &Node, from: &str, ip: &str, port: u16, why: &str) {
    match tcp(node, from, ip, port) {
        Ok(()) => panic!("{why}: {from} -> {ip}:{port} connected"),
        Err(e) => assert!(e.contains("timed out"), "{why}: {from} -> {ip}:{port} should time out, got: {e}"),
    }
}

fn assert_tcp_ok(node: &Node, from: &str, ip: &str, port: u16, why: &str) {
    if let Err(e) = tcp(node, from, ip, port) {
        panic!("{why}: {from} -> {ip}:{port} failed: {e}");
    }
}

fn trace(node: &Node, args: &[&str]) -> Value {
    let mut all = vec!["policy", "trace"];
    all.extend(args);
    node.twill_json(&all)
}

fn ingress_step(trace: &Value) -> &Value {
    trace["steps"].as_array().unwrap().iter().find(|s| s["direction"] == "ingress").expect("ingress step")
}

fn reasons(step: &Value) -> Vec<String> {
    step["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect()
}

/// The problem lines of a failed import (after the header line).
fn problem_lines(stderr: &str) -> Vec<String> {
    let mut lines = stderr.lines();
    let header = lines.next().unwrap_or_default();
    assert_eq!(header, "Error: no policy applied; fix these and import again:", "{stderr}");
    lines.map(str::to_string).collect()
}

const GOOD_B_INGRESS: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: good-one
spec:
  endpointSelector:
    matchLabels:
      pod: b
  ingress:
  - fromEndpoints:
    - matchLabels:
        pod: a
"#;

#[test]
fn import_is_all_or_nothing_and_names_every_problem() {
    let node = Node::start("polimport");
    node.endpoint("a", NS, "pod=a");
    node.endpoint("b", NS, "pod=b");

    let bad = policy_file(
        &node,
        "bad.yaml",
        &format!(
            r#"{GOOD_B_INGRESS}---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: typo
  namespace: team
spec:
  endpointSelector:
    matchLabels:
      pod: b
  ingress:
  - fromEndpoints:
    - matchLabelz:
        pod: a
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: bad-cidr
spec:
  endpointSelector:
    matchLabels:
      pod: a
  egress:
  - toCIDR:
    - 10.0.0.300/8
"#
        ),
    );
    let err = node.twill_err(&["policy", "import", &bad]);
    let lines = problem_lines(&err);
    assert_eq!(lines.len(), 2, "one line per problem, nothing about the valid document:\n{err}");
    assert!(
        lines[0].starts_with(&format!(
            "{bad}: document 2 (CiliumNetworkPolicy team/typo): spec.ingress[0].fromEndpoints[0].matchLabelz: unknown field"
        )),
        "{err}"
    );
    assert!(lines[0].contains("matchLabels"), "the error suggests the right field: {err}");
    assert_eq!(
        lines[1],
        format!(
            "{bad}: document 3 (CiliumNetworkPolicy default/bad-cidr): spec.egress[0].toCIDR[0]: \"10.0.0.300/8\" is not a CIDR such as 10.0.0.0/8"
        ),
        "{err}"
    );
    let got = policies(&node);
    assert_eq!(got["revision"], 0, "revision unchanged: {got}");
    assert!(got["policies"].as_array().unwrap().is_empty(), "nothing applied: {got}");
    let b = node.twill_json(&["bpf", "policy", "get", "b"]);
    assert_eq!(b["ingress_enforced"], false, "the valid document was not applied either: {b}");
    assert_eq!(node.twill_json(&["status"])["policy_revision"], 0);

    // Cilium features Twill does not implement are refused by name.
    let unsupported = policy_file(
        &node,
        "unsupported.yaml",
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: l7
  namespace: shop
spec:
  endpointSelector:
    matchLabels:
      pod: b
  ingress:
  - toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      rules:
        kafka:
        - topic: orders
"#,
    );
    let err = node.twill_err(&["policy", "import", &unsupported]);
    let lines = problem_lines(&err);
    assert_eq!(
        lines,
        vec![format!(
            "{unsupported}: document 1 (CiliumNetworkPolicy shop/l7): spec.ingress[0].toPorts[0].rules.kafka: is not supported by Twill yet"
        )],
        "{err}"
    );
    // A toFQDNs name that is no DNS name: the field and why.
    let dns = policy_file(
        &node,
        "dns.yaml",
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: dns\nspec:\n  endpointSelector: {}\n  egress:\n  - toFQDNs:\n    - matchName: \"exa mple.com\"\n",
    );
    let err = node.twill_err(&["policy", "import", &dns]);
    assert_eq!(
        problem_lines(&err),
        vec![format!(
            "{dns}: document 1 (CiliumNetworkPolicy default/dns): spec.egress[0].toFQDNs[0].matchName: \"exa mple.com\" contains ' '; only letters, digits, '-', '_' and '.' are allowed"
        )],
        "{err}"
    );

    // YAML that does not parse: the file and the line.
    let syntax = policy_file(
        &node,
        "syntax.yaml",
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: x\n spec: [\n",
    );
    let err = node.twill_err(&["policy", "import", &syntax]);
    let lines = problem_lines(&err);
    assert!(lines[0].starts_with(&format!("{syntax}: not valid YAML:")), "{err}");
    assert!(lines[0].contains("line 5"), "the error points at the line: {err}");

    // A kind that is not a policy.
    let kind = policy_file(
        &node,
        "kind.yaml",
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolciy\nmetadata:\n  name: x\nspec: {}\n",
    );
    let err = node.twill_err(&["policy", "import", &kind]);
    let lines = problem_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with(&format!(
            "{kind}: document 1 (CiliumNetworkPolciy x): kind: \"CiliumNetworkPolciy\" is not a policy kind Twill reads"
        )),
        "{err}"
    );
    assert!(
        lines[0].contains("CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or NetworkPolicy"),
        "{err}"
    );
    assert_eq!(revision(&node), 0, "no failed import changed the revision");

    // Two files, only the second bad: the first is not applied either.
    let baseline = policy_file(
        &node,
        "baseline.yaml",
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: baseline\nspec:\n  endpointSelector:\n    matchLabels:\n      pod: a\n  ingress:\n  - {}\n",
    );
    assert_eq!(import(&node, &baseline), 1);
    let good = policy_file(&node, "good.yaml", GOOD_B_INGRESS);
    let err = node.twill_err(&["policy", "import", &good, &unsupported]);
    let lines = problem_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines.iter().all(|l| l.starts_with(&format!("{unsupported}: "))),
        "only the bad file is named: {err}"
    );
    let got = policies(&node);
    assert_eq!(got["revision"], 1, "revision unchanged: {got}");
    let names: Vec<&str> =
        got["policies"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["baseline"], "the good file was not applied: {got}");
    let b = node.twill_json(&["bpf", "policy", "get", "b"]);
    assert_eq!(b["ingress_enforced"], false, "{b}");
}

#[test]
fn get_delete_wait_and_revisions() {
    let node = Node::start("polrev");
    node.endpoint("a", NS, "pod=a");
    node.endpoint("b", NS, "pod=b");
    assert_eq!(revision(&node), 0);

    let file = policy_file(
        &node,
        "three.yaml",
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-web
spec:
  endpointSelector:
    matchLabels:
      pod: b
  ingress:
  - fromEndpoints:
    - matchLabels:
        pod: a
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: cluster-egress
spec:
  endpointSelector:
    matchLabels:
      pod: a
  egress:
  - toEntities:
    - cluster
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: np-ingress
spec:
  podSelector:
    matchLabels:
      pod: a
  ingress:
  - from:
    - podSelector:
        matchLabels:
          pod: b
"#,
    );
    let out = node.twill_ok(&["policy", "import", &file]);
    assert!(out.contains("Imported CiliumNetworkPolicy default/allow-web"), "{out}");
    assert!(out.contains("Revision: 1"), "{out}");
    let got = policies(&node);
    assert_eq!(got["revision"], 1);
    assert_eq!(node.twill_json(&["status"])["policy_revision"], 1);
    let list = got["policies"].as_array().unwrap();
    let keys: BTreeSet<(String, Option<String>, String)> = list
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["namespace"].as_str().map(str::to_string),
                p["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<_> = [
        ("CiliumNetworkPolicy", Some("default"), "allow-web"),
        ("CiliumClusterwideNetworkPolicy", None, "cluster-egress"),
        ("NetworkPolicy", Some("default"), "np-ingress"),
    ]
    .into_iter()
    .map(|(k, ns, n)| (k.to_string(), ns.map(str::to_string), n.to_string()))
    .collect();
    assert_eq!(keys, expected, "{got}");
    let web = list.iter().find(|p| p["name"] == "allow-web").unwrap();
    assert_eq!(web["rules"], 1);
    assert_eq!(web["document"]["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"], "80", "{web}");
    assert_eq!(web["document"]["kind"], "CiliumNetworkPolicy");
    let table = node.twill_ok(&["policy", "get"]);
    assert!(table.contains("Revision: 1") && table.contains("np-ingress"), "{table}");

    // -o yaml prints the documents; they import again as the same policies.
    let yaml = node.twill_ok(&["policy", "get", "-o", "yaml"]);
    assert_eq!(yaml.matches("---").count(), 3, "{yaml}");
    for needle in ["kind: CiliumClusterwideNetworkPolicy", "name: allow-web", "podSelector:", "toEntities:"] {
        assert!(yaml.contains(needle), "{needle} missing from:\n{yaml}");
    }
    let exported = policy_file(&node, "exported.yaml", &yaml);
    let before = got["policies"].clone();
    node.twill_ok(&["policy", "delete", "--all"]);
    assert_eq!(revision(&node), 2);
    assert!(policies(&node)["policies"].as_array().unwrap().is_empty());
    assert_eq!(import(&node, &exported), 3);
    assert_eq!(policies(&node)["policies"], before, "the YAML export round-trips");

    // Importing the same policies again replaces them and still bumps.
    assert_eq!(import(&node, &file), 4);
    assert_eq!(policies(&node)["policies"].as_array().unwrap().len(), 3);

    // Delete by name, also a cluster-wide one and one of another kind.
    let out = node.twill_ok(&["policy", "delete", "allow-web"]);
    assert!(
        out.contains("Deleted CiliumNetworkPolicy default/allow-web") && out.contains("Revision: 5"),
        "{out}"
    );
    let out = node.twill_ok(&["policy", "delete", "cluster-egress"]);
    assert!(out.contains("Revision: 6"), "{out}");
    let left = policies(&node);
    assert_eq!(left["revision"], 6);
    let names: Vec<&str> =
        left["policies"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["np-ingress"]);

    // Unknown names fail and change nothing.
    let err = node.twill_err(&["policy", "delete", "nope"]);
    assert!(err.contains("no policy named nope in namespace default"), "{err}");
    let err = node.twill_err(&["policy", "delete", "np-ingress", "--namespace", "other"]);
    assert!(err.contains("no policy named np-ingress in namespace other"), "{err}");
    let err = node.twill_err(&["policy", "delete"]);
    assert!(err.contains("give a policy NAME, --label [SOURCE:]KEY=VALUE or --all"), "{err}");
    assert_eq!(revision(&node), 6);

    let out = node.twill_ok(&["policy", "delete", "--all"]);
    assert!(out.contains("Deleted NetworkPolicy default/np-ingress") && out.contains("Revision: 7"), "{out}");
    assert!(policies(&node)["policies"].as_array().unwrap().is_empty());
    assert_eq!(node.twill_json(&["status"])["policy_revision"], 7);
    let b = node.twill_json(&["endpoint", "get", "b"]);
    assert_eq!(b["policy_revision"], 7, "endpoints follow deletions: {b}");
    assert_eq!(b["ingress_enforced"], false, "{b}");

    // wait: the current revision returns at once; a future one fails.
    let started = Instant::now();
    let out = node.twill_ok(&["policy", "wait", "7"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "wait for the current revision took {:?}",
        started.elapsed()
    );
    assert!(out.contains("revision 7"), "{out}");
    node.twill_ok(&["policy", "wait", "3"]);
    let started = Instant::now();
    let err = node.twill_err(&["policy", "wait", "12", "--timeout", "1"]);
    assert!(started.elapsed() < Duration::from_secs(3), "wait gave up after {:?}", started.elapsed());
    assert!(err.contains("revision 12") && err.contains("7"), "the error names the revisions: {err}");
}

const ALLOW_A_TO_B_80: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-a-to-b-80
spec:
  endpointSelector:
    matchLabels:
      pod: b
  ingress:
  - fromEndpoints:
    - matchLabels:
        pod: a
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
"#;

const DENY_A_TO_B_80: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: deny-a-80
spec:
  endpointSelector:
    matchLabels:
      pod: b
  ingressDeny:
  - fromEndpoints:
    - matchLabels:
        pod: a
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
"#;

fn entry<'a>(policy: &'a Value, direction: &str, identity: &Value, port: &str) -> Option<&'a Value> {
    policy["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["direction"] == direction && &e["identity"] == identity && e["port"] == port)
}

#[test]
fn enforcement_of_real_traffic_with_drop_reasons() {
    let node = Node::start("polenf");
    let a = node.endpoint("a", NS, "pod=a");
    let b = node.endpoint("b", NS, "pod=b");
    let b_ip = ip_of(&b);
    let _s80 = serve(&node, "b", 80);
    let _s81 = serve(&node, "b", 81);
    assert_tcp_ok(&node, "a", &b_ip, 80, "no policy yet");
    assert_tcp_ok(&node, "a", &b_ip, 81, "no policy yet");
    assert!(node.ping("a", NS, &b_ip), "no policy yet");

    let default_denied = drops(&node, 133);
    let rev = import(&node, &policy_file(&node, "allow.yaml", ALLOW_A_TO_B_80));
    assert_tcp_ok(&node, "a", &b_ip, 80, "allowed port");
    assert_tcp_dropped(&node, "a", &b_ip, 81, "port 81 is not allowed");
    assert!(!node.ping("a", NS, &b_ip), "ICMP is not allowed");
    let now = drops(&node, 133);
    assert!(
        now >= default_denied + 2,
        "the SYN to 81 and the echo request are counted as 133: {default_denied} -> {now}"
    );
    let row = node
        .twill_json(&["bpf", "metrics", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["reason"] == 133)
        .cloned()
        .unwrap();
    assert_eq!(row["description"], "Policy denied");
    assert_eq!(row["direction"], "ingress", "dropped on b's ingress: {row}");

    let p = node.twill_json(&["bpf", "policy", "get", "b"]);
    assert_eq!(p["ingress_enforced"], true, "{p}");
    assert_eq!(p["egress_enforced"], false, "{p}");
    assert_eq!(p["revision"], rev, "{p}");
    assert_eq!(p["identity"], b["identity"]);
    let allow =
        entry(&p, "ingress", &a["identity"], "80").unwrap_or_else(|| panic!("allow entry for a:80 in {p}"));
    assert_eq!(allow["protocol"], "TCP");
    assert_eq!(allow["verdict"], "allow");
    assert_eq!(
        allow["rules"],
        serde_json::json!(["allow rule 0 of CiliumNetworkPolicy default/allow-a-to-b-80"])
    );
    assert!(allow["labels"].as_array().unwrap().iter().any(|l| l == "k8s:pod=a"), "{allow}");
    assert!(entry(&p, "ingress", &a["identity"], "81").is_none(), "nothing allows 81: {p}");
    let ep = node.twill_json(&["endpoint", "get", "b"]);
    assert_eq!((ep["policy_revision"].as_u64(), &ep["ingress_enforced"]), (Some(rev), &Value::Bool(true)));

    // A deny rule wins over the allow.
    let denylisted = drops(&node, 181);
    let rev = import(&node, &policy_file(&node, "deny.yaml", DENY_A_TO_B_80));
    assert_tcp_dropped(&node, "a", &b_ip, 80, "denied by ingressDeny");
    let now = drops(&node, 181);
    assert!(now > denylisted, "reason 181 counted: {denylisted} -> {now}");
    let row = node
        .twill_json(&["bpf", "metrics", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["reason"] == 181)
        .cloned()
        .unwrap();
    assert_eq!(row["description"], "Policy denied by denylist");
    let p = node.twill_json(&["bpf", "policy", "get", "b"]);
    assert_eq!(p["revision"], rev);
    let deny =
        entry(&p, "ingress", &a["identity"], "80").unwrap_or_else(|| panic!("deny entry for a:80 in {p}"));
    assert_eq!(deny["verdict"], "deny", "{p}");
    assert!(
        deny["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "deny rule 0 of CiliumNetworkPolicy default/deny-a-80"),
        "{deny}"
    );

    // Deleting the deny restores the allow.
    node.twill_ok(&["policy", "delete", "deny-a-80"]);
    assert_tcp_ok(&node, "a", &b_ip, 80, "deny deleted");
    let p = node.twill_json(&["bpf", "policy", "get", "b"]);
    assert_eq!(entry(&p, "ingress", &a["identity"], "80").unwrap()["verdict"], "allow", "{p}");
}

#[test]
fn trace_matches_real_outcomes_and_names_the_rule() {
    let node = Node::start("poltrace");
    let a = node.endpoint("a", NS, "pod=a");
    let b = node.endpoint("b", NS, "pod=b");
    node.endpoint("c", NS, "pod=c");
    let b_ip = ip_of(&b);
    let _s80 = serve(&node, "b", 80);
    let _s81 = serve(&node, "b", 81);
    let file = policy_file(
        &node,
        "trace.yaml",
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: b-ingress
spec:
  endpointSelector:
    matchLabels:
      pod: b
  ingress:
  - fromEndpoints:
    - matchExpressions:
      - key: pod
        operator: In
        values: [a, c]
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: no-c
spec:
  endpointSelector:
    matchLabels:
      pod: b
  ingressDeny:
  - fromEndpoints:
    - matchLabels:
        pod: c
"#,
    );
    import(&node, &file);

    // Each case: trace arguments, the source endpoint for real traffic,
    // the port, the expected verdict and a reason the ingress step names.
    let cases: [(&str, u16, bool, &str); 3] = [
        ("a", 80, true, "allow rule 0 of CiliumNetworkPolicy default/b-ingress"),
        ("a", 81, false, "default deny: no rule allows it"),
        ("c", 80, false, "deny rule 0 of CiliumNetworkPolicy default/no-c"),
    ];
    for (src, port, allowed, reason) in cases {
        let dport = format!("{port}/tcp");
        let t = trace(&node, &["--src-endpoint", src, "--dst-endpoint", "b", "--dport", &dport]);
        assert_eq!(t["verdict"], if allowed { "ALLOWED" } else { "DENIED" }, "{src} -> b:{port}: {t}");
        let step = ingress_step(&t);
        assert_eq!(step["subject"], "endpoint default/b");
        assert_eq!(step["enforced"], true);
        assert!(reasons(step).iter().any(|r| r == reason), "{src} -> b:{port} should name {reason:?}: {t}");
        let egress = t["steps"].as_array().unwrap().iter().find(|s| s["direction"] == "egress").unwrap();
        assert_eq!(
            (&egress["enforced"], &egress["verdict"]),
            (&Value::Bool(false), &Value::from("ALLOWED")),
            "{t}"
        );
        // The datapath agrees.
        match tcp(&node, src, &b_ip, port) {
            Ok(()) => assert!(allowed, "trace says DENIED but {src} -> b:{port} connected"),
            Err(e) => assert!(!allowed, "trace says ALLOWED but {src} -> b:{port} failed: {e}"),
        }
    }
    // ICMP, by type.
    let t = trace(&node, &["--src-endpoint", "a", "--dst-endpoint", "b", "--dport", "8/icmp"]);
    assert_eq!(t["verdict"], "DENIED", "{t}");
    assert!(!node.ping("a", NS, &b_ip), "trace says ICMP is denied");
    // The reverse direction: b is not selected on egress, a not on ingress.
    let t = trace(&node, &["--src-endpoint", "b", "--dst-endpoint", "a", "--dport", "8/icmp"]);
    assert_eq!(t["verdict"], "ALLOWED", "{t}");
    assert!(node.ping("b", NS, &ip_of(&a)), "trace says b -> a is allowed");

    // Hypothetical sources by labels.
    let t = trace(
        &node,
        &["--src-labels", "pod=a", "--src-namespace", "default", "--dst-endpoint", "b", "--dport", "80/tcp"],
    );
    assert_eq!(t["verdict"], "ALLOWED", "{t}");
    assert_eq!(t["src_identity"], a["identity"], "the labels of a are a's identity: {t}");
    let t = trace(
        &node,
        &[
            "--src-labels",
            "pod=new",
            "--src-namespace",
            "default",
            "--dst-endpoint",
            "b",
            "--dport",
            "80/tcp",
        ],
    );
    assert_eq!(t["verdict"], "DENIED", "{t}");
    assert_eq!(reasons(ingress_step(&t)), vec!["default deny: no rule allows it"], "{t}");
    assert!(t["src_labels"].as_array().unwrap().iter().any(|l| l == "k8s:pod=new"), "{t}");
    let t = trace(
        &node,
        &["--src-labels", "pod=c", "--src-namespace", "default", "--dst-endpoint", "b", "--dport", "80/tcp"],
    );
    assert_eq!(t["verdict"], "DENIED", "{t}");
    assert!(reasons(ingress_step(&t)).iter().any(|r| r.contains("default/no-c")), "{t}");
    // A hypothetical destination.
    let t = trace(
        &node,
        &["--src-endpoint", "a", "--dst-labels", "pod=b", "--dst-namespace", "default", "--dport", "80/tcp"],
    );
    assert_eq!(t["verdict"], "ALLOWED", "{t}");
    // The human form ends with the verdict.
    let text = node.twill_ok(&[
        "policy",
        "trace",
        "--src-endpoint",
        "c",
        "--dst-endpoint",
        "b",
        "--dport",
        "80/tcp",
    ]);
    assert!(text.contains("deny rule 0 of CiliumNetworkPolicy default/no-c"), "{text}");
    assert!(text.trim_end().ends_with("Final verdict: DENIED"), "{text}");
    let err = node.twill_err(&[
        "policy",
        "trace",
        "--src-endpoint",
        "a",
        "--dst-endpoint",
        "b",
        "--dport",
        "80/xyz",
    ]);
    assert!(err.contains("--dport"), "{err}");
}

#[test]
fn replies_and_related_icmp_pass_through_conntrack() {
    let node = Node::start("polct");
    let a = node.endpoint("a", NS, "pod=a");
    let b = node.endpoint("b", NS, "pod=b");
    let (a_ip, b_ip) = (ip_of(&a), ip_of(&b));
    let _s80 = serve(&node, "b", 80);
    // a: ingress default-deny (nothing allowed in), egress only to b on
    // TCP/80 and UDP/9999.
    let file = policy_file(
        &node,
        "a.yaml",
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: a-egress-only-to-b
spec:
  endpointSelector:
    matchLabels:
      pod: a
  enableDefaultDeny:
    ingress: true
    egress: true
  egress:
  - toEndpoints:
    - matchLabels:
        pod: b
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      - port: "9999"
        protocol: UDP
"#,
    );
    let rev = import(&node, &file);
    let ep = node.twill_json(&["endpoint", "get", "a"]);
    assert_eq!(ep["policy_revision"], rev);
    assert_eq!(
        (&ep["ingress_enforced"], &ep["egress_enforced"]),
        (&Value::Bool(true), &Value::Bool(true)),
        "{ep}"
    );
    let p = node.twill_json(&["bpf", "policy", "get", "a"]);
    assert!(
        p["entries"].as_array().unwrap().iter().all(|e| e["direction"] == "egress"),
        "nothing is allowed into a, ICMP included: {p}"
    );
    // Controls: a's ingress really drops, and its egress allows no ICMP.
    assert!(!node.ping("b", NS, &a_ip), "b -> a is denied by a's ingress");
    assert!(!node.ping("a", NS, &b_ip), "a -> b ICMP is denied by a's egress");

    // The SYN-ACK and data from b come back although a's ingress allows nothing.
    assert_tcp_ok(&node, "a", &b_ip, 80, "replies pass through conntrack");
    let ct = node.twill_json(&["bpf", "ct", "list"]);
    let mut scopes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in ct.as_array().unwrap() {
        if row["protocol"] == "TCP" && row["destination"] == format!("{b_ip}:80") {
            let src = row["source"].as_str().unwrap().to_string();
            if src.starts_with(&format!("{a_ip}:")) && row["packets"].as_u64().unwrap() >= 3 {
                scopes.entry(src).or_default().insert(row["scope"].as_str().unwrap().to_string());
            }
        }
    }
    let both: BTreeSet<String> = ["egress", "ingress"].map(String::from).into();
    assert!(
        scopes.values().any(|s| *s == both),
        "the connection is tracked in both scopes: {scopes:?}\n{ct}"
    );

    // Related ICMP: a datagram to a closed (allowed) UDP port is answered by
    // port unreachable, which reaches a although a's ingress allows no ICMP.
    let udp_to = |port: u16| {
        let target = format!("UDP:{b_ip}:{port}");
        let started = Instant::now();
        let out = node.exec("a", NS, &["sh", "-c", &format!("echo hi | socat -t2 -T2 - {target}")]);
        (started.elapsed(), String::from_utf8_lossy(&out.stderr).to_string(), out.status.success())
    };
    let (took, stderr, ok) = udp_to(9999);
    assert!(!ok && stderr.contains("Connection refused"), "port unreachable reached a: {stderr}");
    assert!(took < Duration::from_millis(1500), "refused at once, not after a timeout: {took:?}");
    // Control: to a port a's egress does not allow, nothing comes back.
    let (took, stderr, _) = udp_to(9998);
    assert!(!stderr.contains("Connection refused"), "a's egress should have dropped the datagram: {stderr}");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
}

/// Two documents for b's ingress and a's egress that both allow a -> b ICMP
/// and TCP/80, but through different rules and map entries.
const CHURN_V1: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: churn-b
spec:
  endpointSelector:
    matchLabels:
      pod: b
  ingress:
  - fromEndpoints:
    - matchLabels:
        pod: a
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
  - fromEndpoints:
    - matchLabels:
        pod: a
    icmps:
    - fields:
      - type: 8
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: churn-a
spec:
  endpointSelector:
    matchLabels:
      pod: a
  egress:
  - toEndpoints:
    - matchLabels:
        pod: b
"#;

const CHURN_V2: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: churn-b
spec:
  endpointSelector:
    matchLabels:
      pod: b
  ingress:
  - fromEndpoints:
    - matchLabels:
        pod: a
  - fromEndpoints:
    - matchLabels:
        pod: z
    toPorts:
    - ports:
      - port: "9090"
        protocol: TCP
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: churn-a
spec:
  endpointSelector:
    matchLabels:
      pod: a
  egress:
  - toEndpoints:
    - matchLabels:
        pod: b
    toPorts:
    - ports:
      - port: "80"
        endPort: 81
        protocol: TCP
  - toEndpoints:
    - matchLabels:
        pod: b
    icmps:
    - fields:
      - type: EchoRequest
"#;

#[test]
fn policy_churn_drops_nothing_both_versions_allow() {
    let node = Node::start("polchurn");
    let a = node.endpoint("a", NS, "pod=a");
    let b = node.endpoint("b", NS, "pod=b");
    node.endpoint("z", NS, "pod=z");
    let b_ip = ip_of(&b);
    let _s80 = serve(&node, "b", 80);
    let v1 = policy_file(&node, "v1.yaml", CHURN_V1);
    let v2 = policy_file(&node, "v2.yaml", CHURN_V2);
    // Both versions allow the traffic, and differ in the maps.
    let first = import(&node, &v2);
    let map_v2 = (
        node.twill_json(&["bpf", "policy", "get", "a"])["entries"].clone(),
        node.twill_json(&["bpf", "policy", "get", "b"])["entries"].clone(),
    );
    assert_tcp_ok(&node, "a", &b_ip, 80, "v2");
    assert!(node.ping("a", NS, &b_ip), "v2 allows ICMP");
    import(&node, &v1);
    let map_v1 = (
        node.twill_json(&["bpf", "policy", "get", "a"])["entries"].clone(),
        node.twill_json(&["bpf", "policy", "get", "b"])["entries"].clone(),
    );
    assert_ne!(map_v1.0, map_v2.0, "a's map differs between the versions");
    assert_ne!(map_v1.1, map_v2.1, "b's map differs between the versions");
    assert_tcp_ok(&node, "a", &b_ip, 80, "v1");
    assert!(node.ping("a", NS, &b_ip), "v1 allows ICMP");

    let drops_before = (drops(&node, 133), drops(&node, 181));
    let a_netns = a["netns"].as_str().unwrap().to_string();
    let ping = node.spawn_in("a", NS, &["ping", "-i", "0.01", "-c", "600", "-W", "1", &b_ip]);
    let done = AtomicBool::new(false);
    let (ok, failed) = std::thread::scope(|s| {
        let connections = s.spawn(|| {
            let target = format!("TCP:{b_ip}:80,connect-timeout=1");
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !done.load(Ordering::SeqCst) {
                let out = Command::new("ip")
                    .args(["netns", "exec", &a_netns, "socat", "-T2", "-", &target])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&out.stdout).contains("ok") {
                    ok += 1;
                } else {
                    failed.push(String::from_utf8_lossy(&out.stderr).trim().to_string());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (ok, failed)
        });
        for i in 0..100 {
            import(&node, if i % 2 == 0 { &v2 } else { &v1 });
            std::thread::sleep(Duration::from_millis(30));
        }
        done.store(true, Ordering::SeqCst);
        connections.join().unwrap()
    });
    eprintln!("churn: {ok} TCP connections ok, {} failed", failed.len());
    assert_eq!(revision(&node), first + 101, "100 replacements during the traffic");
    assert!(
        failed.is_empty(),
        "{} of {} TCP connections failed during churn: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
    assert!(ok >= 30, "only {ok} TCP connections ran during the churn");
    let ping = ping.wait_with_output();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        text.contains("600 packets transmitted, 600 received"),
        "ping lost packets during churn:\n{text}"
    );
    assert_eq!((drops(&node, 133), drops(&node, 181)), drops_before, "no policy drops during churn");
}

const DENY_A_TO_B: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: deny-a-to-b
spec:
  endpointSelector:
    matchLabels:
      pod: b
  ingressDeny:
  - fromEndpoints:
    - matchLabels:
        pod: a
"#;

#[test]
fn new_deny_stops_new_connections_within_a_second_and_spares_established_ones() {
    let node = Node::start("poldeny");
    node.endpoint("a", NS, "pod=a");
    let b = node.endpoint("b", NS, "pod=b");
    let b_ip = ip_of(&b);
    let _s80 = serve(&node, "b", 80);
    let _iperf = node.spawn_in("b", NS, &["iperf3", "-s", "-1"]);
    assert!(wait_until(Duration::from_secs(10), || {
        node.exec("b", NS, &["sh", "-c", "ss -ltn | grep -q :5201"]).status.success()
    }));
    assert_tcp_ok(&node, "a", &b_ip, 80, "no policy yet");
    let deny = policy_file(&node, "deny.yaml", DENY_A_TO_B);

    let stream = node.spawn_in("a", NS, &["iperf3", "-c", &b_ip, "-t", "4", "-J"]);
    // Control and data connections established.
    let established = format!("ss -Htn state established dst {b_ip}:5201 | wc -l");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let out = node.exec("a", NS, &["sh", "-c", &established]);
            String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().unwrap_or(0) >= 2
        }),
        "iperf3 stream did not start"
    );
    let denylisted = drops(&node, 181);
    let started = Instant::now();
    import(&node, &deny);
    let applied = started.elapsed();
    let mut first_failure = None;
    while started.elapsed() < Duration::from_secs(1) {
        let attempt = started.elapsed();
        if tcp(&node, "a", &b_ip, 80).is_err() {
            first_failure = Some(attempt);
            break;
        }
    }
    let first_failure = first_failure.unwrap_or_else(|| {
        panic!("new connections still succeed 1 s after the deny was imported (import took {applied:?})")
    });
    assert!(drops(&node, 181) > denylisted, "the new connection was dropped by the deny rule (reason 181)");
    eprintln!("deny import took {applied:?}; first refused connection started at {first_failure:?}");

    let out = stream.wait_with_output();
    let report: Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    assert!(out.status.success(), "the established stream was cut: {}", report["error"]);
    let intervals: Vec<u64> = report["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["sum"]["bytes"].as_u64().unwrap_or(0))
        .collect();
    assert!(intervals.len() >= 4, "{intervals:?}");
    assert!(
        intervals.iter().all(|b| *b > 0),
        "data flowed in every second, after the deny too: {intervals:?}"
    );
    assert!(report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0) > 0, "{report}");
    // And after the stream, the deny still holds for new connections.
    assert_tcp_dropped(&node, "a", &b_ip, 80, "deny in force");
}

#[test]
fn endpoints_created_after_a_policy_enforce_it_at_once() {
    let node = Node::start("pollate");
    node.endpoint("a", NS, "pod=a");
    node.endpoint("d", NS, "pod=d");
    let file = policy_file(
        &node,
        "c.yaml",
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: c-from-a
spec:
  endpointSelector:
    matchLabels:
      pod: c
  ingress:
  - fromEndpoints:
    - matchLabels:
        pod: a
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
"#,
    );
    let rev = import(&node, &file);
    let c = node.endpoint("c", NS, "pod=c");
    assert_eq!(c["policy_revision"], rev, "created with the current revision: {c}");
    assert_eq!(c["ingress_enforced"], true, "{c}");
    assert_eq!(c["egress_enforced"], false, "{c}");
    assert_eq!(node.twill_json(&["status"])["policy_revision"], rev);
    let p = node.twill_json(&["bpf", "policy", "get", "c"]);
    assert_eq!(p["revision"], rev);
    assert!(
        p["entries"].as_array().unwrap().iter().any(|e| e["direction"] == "ingress"
            && e["port"] == "80"
            && e["verdict"] == "allow"
            && e["rules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "allow rule 0 of CiliumNetworkPolicy default/c-from-a")),
        "{p}"
    );
    node.twill_ok(&["policy", "wait", &rev.to_string(), "--timeout", "1"]);

    let c_ip = ip_of(&c);
    let _s80 = serve(&node, "c", 80);
    assert_tcp_ok(&node, "a", &c_ip, 80, "allowed by c-from-a");
    assert_tcp_dropped(&node, "d", &c_ip, 80, "d is not allowed into c");
    assert!(!node.ping("a", NS, &c_ip), "ICMP into c is not allowed");
}

/// The JSON `cilium-dbg policy import` reads on a host without
/// Kubernetes: a list of rules named by their labels.
const CILIUM_RULES_JSON: &str = r#"[{
    "endpointSelector": {"matchLabels": {"role": "backend"}},
    "ingress": [{
        "fromEndpoints": [{"matchLabels": {"role": "frontend"}}],
        "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]
    }],
    "labels": [{"key": "name", "value": "rule1", "source": "unspec"}],
    "description": "frontends reach the backend on 80"
}]"#;

fn tcp_in(node: &Node, from: &str, namespace: &str, ip: &str, port: u16) -> Result<(), String> {
    let target = format!("TCP:{ip}:{port},connect-timeout=1");
    let out = node.exec(from, namespace, &["socat", "-T2", "-", &target]);
    if String::from_utf8_lossy(&out.stdout).contains("ok") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn cilium_rule_lists_import_enforce_replace_and_delete_by_label() {
    let node = Node::start("polrules");
    node.twill_ok(&["namespace", "create", "prod"]);
    node.endpoint("front", NS, "role=frontend");
    node.endpoint("other", NS, "role=other");
    node.endpoint("pfront", "prod", "role=frontend");
    let backend = node.endpoint("back", NS, "role=backend");
    let ip = ip_of(&backend);
    let _s80 = serve(&node, "back", 80);
    let _s81 = serve(&node, "back", 81);
    assert_tcp_ok(&node, "other", &ip, 80, "no policy yet");

    let file = policy_file(&node, "rules.json", CILIUM_RULES_JSON);
    let out = node.twill_ok(&["policy", "import", &file]);
    assert!(out.contains("Imported CiliumRules unspec:name=rule1"), "{out}");
    let got = policies(&node);
    let list = got["policies"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{got}");
    assert_eq!(list[0]["kind"], "CiliumRules");
    assert_eq!(list[0]["namespace"], Value::Null, "rules imported this way have no namespace");
    assert_eq!(list[0]["labels"], serde_json::json!(["unspec:name=rule1"]));
    assert_eq!(list[0]["description"], "frontends reach the backend on 80");
    assert_eq!(list[0]["document"][0]["labels"][0]["key"], "name", "{got}");
    let table = node.twill_ok(&["policy", "get"]);
    let row = table.lines().find(|l| l.starts_with("CiliumRules")).unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("unspec:name=rule1") && row.contains("frontends reach the backend on 80"),
        "{table}"
    );

    assert_tcp_ok(&node, "front", &ip, 80, "the rule allows frontends on 80");
    assert_tcp_dropped(&node, "front", &ip, 81, "nothing allows 81");
    assert_tcp_dropped(&node, "other", &ip, 80, "not a frontend");
    if let Err(e) = tcp_in(&node, "pfront", "prod", &ip, 80) {
        panic!("a frontend in another namespace is selected too (the rule has no namespace): {e}");
    }

    // A bad rule refuses the whole file, naming the rule by position and labels.
    let revision_before = revision(&node);
    let bad = policy_file(
        &node,
        "bad.json",
        r#"[{"endpointSelector": {}, "labels": [{"key": "name", "value": "fine"}]},
            {"endpointSelector": {"matchLabels": {"role": "backend"}},
             "ingress": [{"fromEndpoints": [{"matchLabelz": {"role": "x"}}]}],
             "labels": [{"key": "name", "value": "typo"}]}]"#,
    );
    let lines = problem_lines(&node.twill_err(&["policy", "import", &bad]));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!(
            "{bad}: rule 2 (labels unspec:name=typo): ingress[0].fromEndpoints[0].matchLabelz: unknown field"
        )),
        "{lines:?}"
    );
    assert_eq!(revision(&node), revision_before, "nothing applied");
    assert_eq!(policies(&node)["policies"].as_array().unwrap().len(), 1);

    // The same labels again replace the rule set, as a Kubernetes object of
    // the same name would be replaced.
    let port_81 = CILIUM_RULES_JSON.replace("\"80\"", "\"81\"");
    import(&node, &policy_file(&node, "rules81.json", &port_81));
    assert_eq!(policies(&node)["policies"].as_array().unwrap().len(), 1, "replaced, not added");
    assert_tcp_ok(&node, "front", &ip, 81, "the new rule set allows 81");
    assert_tcp_dropped(&node, "front", &ip, 80, "the old rule set is gone");

    let err = node.twill_err(&["policy", "delete", "--label", "name=nope"]);
    assert!(err.contains("no policy carries all of the labels name=nope"), "{err}");
    let out = node.twill_ok(&["policy", "delete", "--label", "unspec:name=rule1"]);
    assert!(out.contains("Deleted CiliumRules unspec:name=rule1"), "{out}");
    assert!(policies(&node)["policies"].as_array().unwrap().is_empty());
    assert_tcp_ok(&node, "other", &ip, 80, "no policy left");
}
