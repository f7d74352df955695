//! `twill ui` in a real browser: headless Chromium, driven through
//! chromedriver's WebDriver API, against a real agent with allowed and
//! denied traffic.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use twill_e2e::{bin_dir, browser::Browser, wait_until, Background, Node};

const NODES: &str = "return [...document.querySelectorAll('#map .node')].map(n => n.dataset.nodeId)";
const EDGES: &str = "return [...document.querySelectorAll('#map .edge')].map(e => ({id: e.dataset.edgeId, verdict: e.dataset.verdict, flows: +e.dataset.flows}))";
const ROWS: &str = "return [...document.querySelectorAll('#flow-rows tr')].map(r => ({seq: +r.dataset.seq, verdict: r.dataset.verdict, src: r.dataset.source, dst: r.dataset.destination, text: r.textContent}))";

fn set_filter(b: &Browser, id: &str, value: &str) {
    b.js(&format!(
        "const e = document.getElementById('{id}'); e.value = {}; e.dispatchEvent(new Event('change'));",
        serde_json::json!(value)
    ));
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("ui-artifacts")
}

/// `twill ui` for `node` on a free loopback port; returns the URL it prints.
fn start_ui(node: &Node) -> (Background, String) {
    let mut child = Command::new(bin_dir().join("twill"))
        .arg("--socket")
        .arg(&node.socket)
        .args(["ui", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting twill ui");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().last().unwrap_or_default().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "twill ui printed {line:?}");
    (Background::from_child(child), url)
}

#[test]
fn service_map_and_flow_table_in_a_browser() {
    let node = Node::start("ui");
    node.twill_ok(&["namespace", "create", "prod"]);
    node.endpoint("a", "default", "app=a");
    let b_ep = node.endpoint("b", "default", "app=b");
    let c_ep = node.endpoint("c", "prod", "app=c");
    let (b_ip, c_ip) =
        (b_ep["ipv4"].as_str().unwrap().to_string(), c_ep["ipv4"].as_str().unwrap().to_string());
    let policy = node.state_dir.parent().unwrap().join("deny-c.yaml");
    std::fs::write(
        &policy,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: deny-c, namespace: prod}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n",
    )
    .unwrap();
    node.twill_ok(&["policy", "import", policy.to_str().unwrap()]);
    let _srv80 = node.tcp_server("b", 80);
    let _srv8080 = node.tcp_server("b", 8080);
    assert_eq!(node.tcp_request("a", &format!("{b_ip}:80")).as_deref(), Ok("b"));
    assert!(!node.ping("a", "default", &c_ip), "policy should deny a -> prod/c");
    assert!(wait_until(Duration::from_secs(10), || !node.observe(&["--verdict", "DROPPED"]).is_empty()));

    let (_ui, url) = start_ui(&node);
    let browser = Browser::start();
    browser.goto(&url);

    // The map: one node per workload, a forwarded and a dropped edge.
    let nodes = browser.wait_for("the workloads on the map", NODES, |v| {
        ["default/a", "default/b", "prod/c"].iter().all(|n| v.as_array().unwrap().iter().any(|x| x == n))
    });
    let edges = browser.wait_for("a dropped edge a -> prod/c", EDGES, |v| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"].as_str().unwrap().starts_with("default/a>prod/c:") && e["verdict"] == "dropped")
    });
    assert!(
        edges
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == "default/a>default/b:80/TCP" && e["verdict"] == "forwarded"),
        "no forwarded a -> b:80 edge: {edges}"
    );

    // The table: flows with both verdicts, the drop with its reason.
    let rows = browser.wait_for("forwarded and dropped rows", ROWS, |v| {
        let r = v.as_array().unwrap();
        r.iter().any(|x| x["verdict"] == "FORWARDED") && r.iter().any(|x| x["verdict"] == "DROPPED")
    });
    let dropped = rows.as_array().unwrap().iter().find(|r| r["verdict"] == "DROPPED").unwrap();
    assert!(dropped["text"].as_str().unwrap().contains("POLICY_DENIED"), "drop without reason: {dropped}");
    std::fs::create_dir_all(artifacts_dir()).unwrap();
    let shot = artifacts_dir().join("service-map.png");
    std::fs::write(&shot, browser.screenshot()).unwrap();
    println!("screenshot of the service map: {}", shot.display());
    println!("map nodes: {nodes}");

    // A filter narrows the table to drops only.
    set_filter(&browser, "f-verdict", "DROPPED");
    browser.wait_for("only dropped rows", ROWS, |v| {
        let r = v.as_array().unwrap();
        !r.is_empty() && r.iter().all(|x| x["verdict"] == "DROPPED")
    });
    set_filter(&browser, "f-verdict", "");
    browser.wait_for("forwarded rows again", ROWS, |v| {
        v.as_array().unwrap().iter().any(|x| x["verdict"] == "FORWARDED")
    });

    // Clicking a node filters the table to flows to or from it.
    browser.click("#map .node[data-node-id='prod/c'] rect");
    browser.wait_for("only prod/c rows", ROWS, |v| {
        let r = v.as_array().unwrap();
        !r.is_empty() && r.iter().all(|x| x["src"] == "prod/c" || x["dst"] == "prod/c")
    });
    browser.click("#clear-selection");
    // Clicking an edge filters to that edge.
    browser.click("#map .edge[data-edge-id='default/a>default/b:80/TCP'] text");
    let b80 = format!("{b_ip}:80 ");
    browser.wait_for("only a <-> b:80 rows (requests and replies)", ROWS, |v| {
        let r = v.as_array().unwrap();
        !r.is_empty()
            && r.iter().all(|x| {
                let ends = (x["src"] == "default/a" && x["dst"] == "default/b")
                    || (x["src"] == "default/b" && x["dst"] == "default/a");
                ends && x["text"].as_str().unwrap().contains(&b80)
            })
    });
    browser.click("#clear-selection");
    let newest = browser.wait_for("all rows again", ROWS, |v| {
        v.as_array().unwrap().iter().any(|x| x["verdict"] == "DROPPED")
    });
    let newest_seq = newest.as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).max().unwrap();

    // A new flow appears live, on the map and in the table.
    assert_eq!(node.tcp_request("a", &format!("{b_ip}:8080")).as_deref(), Ok("b"));
    browser.wait_for("the new a -> b:8080 edge", EDGES, |v| {
        v.as_array().unwrap().iter().any(|e| e["id"] == "default/a>default/b:8080/TCP")
    });
    browser.wait_for("new rows for port 8080", ROWS, move |v| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|x| x["seq"].as_u64().unwrap() > newest_seq && x["text"].as_str().unwrap().contains("8080"))
    });
    let status = browser.js("return document.getElementById('status').dataset.state");
    assert_eq!(status, "connected");
}

#[test]
fn refuses_a_non_loopback_listen_address_without_listen_any() {
    let out = Command::new(bin_dir().join("twill"))
        .args(["ui", "--server", "unix:///nonexistent", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0.0.0.0:0 is not a loopback address"), "{err}");
}
