//! Cilium's Star Wars demo, as `scripts/demo.sh` runs it and with the same
//! files from examples/starwars: a `deathstar` service over two backends,
//! a tiefighter (empire) and an xwing (alliance) asking to land. No policy:
//! both land. Cilium's L3/L4 file unchanged: the xwing's packets are
//! dropped in the kernel, with the drop in the flows. Cilium's L7 file
//! unchanged: the tiefighter still lands, but its PUT to the exhaust port
//! gets Envoy's `403 Access denied`, also in the flows.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use twill_e2e::{cluster_ip, wait_until, Background, Node, Value};

const NS: &str = "default";
const LAND: (&str, &str) = ("POST", "/v1/request-landing");
const EXHAUST: (&str, &str) = ("PUT", "/v1/exhaust-port");

fn example(name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/starwars");
    dir.join(name)
        .canonicalize()
        .unwrap_or_else(|e| panic!("examples/starwars/{name}: {e}"))
        .display()
        .to_string()
}

/// What a ship got: HTTP status ("000" when nothing answered), body, and
/// which deathstar backend answered (its X-Deathstar header).
#[derive(Debug)]
struct Answer {
    code: String,
    body: String,
    backend: String,
    curl_exit: Option<i32>,
}

fn ask(node: &Node, ship: &str, vip: &str, (method, path): (&str, &str), timeout: &str) -> Answer {
    let url = format!("http://{vip}{path}");
    let out = node.exec(
        ship,
        NS,
        &[
            "curl",
            "-s",
            "--max-time",
            timeout,
            "-X",
            method,
            "-w",
            "\n%{http_code} %header{x-deathstar}",
            &url,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let (code, backend) = tail.split_once(' ').unwrap_or((tail, ""));
    Answer {
        code: code.trim().into(),
        body: body.into(),
        backend: backend.trim().into(),
        curl_exit: out.status.code(),
    }
}

/// Asks to land until both backends have answered (bounded), checking
/// every answer is a landing: the service balances over both.
fn lands_on_both(node: &Node, ship: &str, vip: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let a = ask(node, ship, vip, LAND, "5");
        assert_eq!((a.code.as_str(), a.body.as_str()), ("200", "Ship landed\n"), "{ship}: {a:?}");
        seen.insert(a.backend);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, BTreeSet::from(["deathstar-1".to_string(), "deathstar-2".to_string()]), "{ship}");
    seen
}

fn flows(node: &Node, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--last", "1000"];
    all.extend(args);
    node.observe(&all)
}

#[test]
fn star_wars_demo() {
    let node = Node::start("sw");
    let server = example("deathstar.py");
    let mut servers: Vec<Background> = Vec::new();
    for name in ["deathstar-1", "deathstar-2"] {
        node.endpoint(name, NS, "org=empire,class=deathstar");
        servers.push(node.spawn_in(name, NS, &["python3", &server, name, "80"]));
    }
    node.endpoint("tiefighter", NS, "org=empire,class=tiefighter");
    node.endpoint("xwing", NS, "org=alliance,class=xwing");
    for name in ["deathstar-1", "deathstar-2"] {
        node.wait_for_socket(name, "-tln", 80);
    }
    let svc = node.service_create(&["deathstar", "--port", "80", "--selector", "org=empire,class=deathstar"]);
    let vip = cluster_ip(&svc);

    // Step 1, no policy: everyone lands, on either backend.
    lands_on_both(&node, "tiefighter", &vip);
    lands_on_both(&node, "xwing", &vip);
    assert_eq!(ask(&node, "xwing", &vip, ("GET", "/v1/nowhere"), "5").code, "404");

    // Step 2, Cilium's L3/L4 policy: only the empire may reach port 80.
    node.twill_ok(&["policy", "import", &example("sw_l3_l4_policy.yaml")]);
    let mut last = None;
    let dropped = wait_until(Duration::from_secs(20), || {
        let a = ask(&node, "xwing", &vip, LAND, "2");
        // curl's 28: the operation timed out; no answer, no refusal.
        let timed_out = a.code == "000" && a.curl_exit == Some(28);
        last = Some(a);
        timed_out
    });
    assert!(dropped, "xwing was not dropped: {last:?}\n{}", node.agent_log());
    let mut drops = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            drops = flows(&node, &["--from-pod", "default/xwing", "--verdict", "DROPPED"]);
            drops.iter().any(|f| f["drop_reason_desc"] == "POLICY_DENIED")
        }),
        "no policy-denied drop for xwing: {drops:#?}"
    );
    let drop = drops.iter().find(|f| f["drop_reason_desc"] == "POLICY_DENIED").unwrap();
    assert_eq!(drop["l4"]["TCP"]["destination_port"], 80, "{drop}");
    assert!(drop["destination"]["pod_name"].as_str().is_some_and(|p| p.starts_with("deathstar-")), "{drop}");
    assert_eq!(
        drop["destination"]["labels"].as_array().map(|l| l.contains(&"k8s:org=empire".into())),
        Some(true)
    );
    assert_eq!(drop["traffic_direction"], "INGRESS", "{drop}");
    lands_on_both(&node, "tiefighter", &vip);
    // L3/L4 cannot tell a landing from sabotage.
    let a = ask(&node, "tiefighter", &vip, EXHAUST, "5");
    assert_eq!(a.code, "503", "{a:?}");
    assert!(a.body.contains("exploded"), "{a:?}");
    // The trace says the same, before any packet is sent.
    let trace = node.twill_json(&[
        "policy",
        "trace",
        "--src-endpoint",
        "xwing",
        "--dst-endpoint",
        "deathstar-1",
        "--dport",
        "80/tcp",
    ]);
    assert_eq!(trace["verdict"], "DENIED", "{trace}");

    // Step 3, Cilium's L7 policy (the same rule1, replaced): only POST
    // /v1/request-landing, checked per request by the proxy.
    node.twill_ok(&["policy", "import", &example("sw_l3_l4_l7_policy.yaml")]);
    // No waiting: the import returns once the proxy listens, so the very
    // next request is checked by it (not refused, not let through).
    let a = ask(&node, "tiefighter", &vip, EXHAUST, "5");
    assert_eq!(a.code, "403", "the first PUT after the import: {a:?}\n{}", node.agent_log());
    assert_eq!(a.body, "Access denied\r\n", "{a:?}");
    // The proxy answered, not a deathstar.
    assert_eq!(a.backend, "", "{a:?}");
    lands_on_both(&node, "tiefighter", &vip);
    // Other paths of the API are closed too.
    assert_eq!(ask(&node, "tiefighter", &vip, ("GET", "/v1/nowhere"), "5").code, "403");
    let a = ask(&node, "xwing", &vip, LAND, "2");
    assert_eq!((a.code.as_str(), a.curl_exit), ("000", Some(28)), "xwing after L7: {a:?}");

    let mut l7 = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            l7 = flows(&node, &["--type", "l7", "--from-pod", "default/tiefighter", "--http-method", "PUT"]);
            l7.iter().any(|f| f["verdict"] == "DROPPED")
        }),
        "no dropped L7 flow for the PUT: {l7:#?}"
    );
    let put = l7.iter().find(|f| f["verdict"] == "DROPPED").unwrap();
    let http = &put["l7"]["http"];
    assert_eq!(http["method"], "PUT", "{put}");
    assert!(http["url"].as_str().is_some_and(|u| u.ends_with("/v1/exhaust-port")), "{put}");
    assert_eq!(put["l7"]["type"], "REQUEST", "{put}");
    assert_eq!(put["traffic_direction"], "INGRESS", "{put}");
    assert!(put["destination"]["pod_name"].as_str().is_some_and(|p| p.starts_with("deathstar-")), "{put}");
    // The landings' answers, as L7 flows with their status, from both backends.
    let mut landed = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            landed =
                flows(&node, &["--type", "l7", "--to-pod", "default/tiefighter", "--http-status", "200"]);
            let from: BTreeSet<_> = landed.iter().filter_map(|f| f["source"]["pod_name"].as_str()).collect();
            from.len() == 2
        }),
        "landing answers from both backends: {landed:#?}"
    );
    assert!(landed.iter().all(|f| f["l7"]["http"]["code"] == 200
        && f["l7"]["http"]["method"] == "POST"
        && f["l7"]["type"] == "RESPONSE"));
    std::mem::drop(servers);
}
