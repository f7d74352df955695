//! HTTP L7 policy as a Cilium user meets it: `toPorts[].rules.http`
//! enforced per request by the proxy the datapath steers connections to
//! (a real HTTP server in one endpoint, curl in another), Envoy's
//! `403 Access denied` on one keep-alive connection that stays usable,
//! bodies large and chunked streamed through, ports without L7 rules left
//! alone, and the requests as L7 flows the upstream hubble CLI prints.

use std::{process::Output, time::Duration};

use twill_e2e::{hubble_cli, ip_of, metric_value, wait_until, Background, Node, Value};

const NS: &str = "default";

/// An HTTP/1.1 server (keep-alive) answering every method with what it
/// received: `METHOD PATH len=N x-env=V host=H`, the length after reading
/// a Content-Length or chunked body; `/big` answers 10 MiB.
const SERVER: &str = r#"
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def body_len(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            n = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""): pass
                    return n
                left = size
                while left:
                    left -= len(self.rfile.read(min(left, 65536)))
                n += size
                self.rfile.readline()
        left = int(self.headers.get("Content-Length", "0"))
        n = left
        while left:
            left -= len(self.rfile.read(min(left, 65536)))
        return n
    def answer(self):
        n = self.body_len()
        if self.path == "/public/big":
            self.send_response(200)
            self.send_header("Content-Length", str(10 << 20))
            self.end_headers()
            chunk = b"x" * 65536
            for _ in range(160): self.wfile.write(chunk)
            return
        body = ("%s %s len=%d x-env=%s host=%s\n" % (self.command, self.path, n,
                self.headers.get("X-Env", "-"), self.headers.get("Host", "-"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_DELETE = answer
ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"#;

fn policy_file(node: &Node, name: &str, yaml: &str) -> String {
    let path = node.state_dir.parent().unwrap().join(name);
    std::fs::write(&path, yaml).unwrap();
    path.to_string_lossy().into_owned()
}

fn http_server(node: &Node, endpoint: &str, port: u16) -> Background {
    let port_s = port.to_string();
    let server = node.spawn_in(endpoint, NS, &["python3", "-c", SERVER, &port_s]);
    node.wait_for_socket(endpoint, "-tln", port);
    server
}

/// curl from an endpoint; stdout is `-w` output after the body.
fn curl(node: &Node, from: &str, args: &[&str]) -> Output {
    let mut cmd = vec!["curl", "-sS", "--max-time", "5"];
    cmd.extend(args);
    node.exec(from, NS, &cmd)
}

fn body_and_code(node: &Node, from: &str, args: &[&str]) -> (String, String) {
    let mut all = vec!["-w", "\n%{http_code}"];
    all.extend(args);
    let out = curl(node, from, &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (body.to_string(), code.trim().to_string())
}

fn code(node: &Node, from: &str, args: &[&str]) -> String {
    body_and_code(node, from, args).1
}

/// A node with a `web` endpoint serving HTTP on 8080 and a `client`
/// endpoint, `policy` imported, once `GET path` from the client answers
/// 200 through the proxy; with web's address and its server.
fn l7_node(tag: &str, policy: &str, path: &str) -> (Node, String, Background) {
    let node = Node::start(tag);
    let web = node.endpoint("web", NS, "app=web");
    node.endpoint("client", NS, "app=client");
    let web_ip = ip_of(&web);
    let http = http_server(&node, "web", 8080);
    node.twill_ok(&["policy", "import", &policy_file(&node, &format!("{tag}.yaml"), policy)]);
    let url = format!("http://{web_ip}:8080{path}");
    let mut last = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = code(&node, "client", &[&url]);
            last == "200"
        }),
        "GET {path}: {last}\n{}",
        node.agent_log()
    );
    (node, web_ip, http)
}

fn l7_flows(node: &Node, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--type", "l7", "--last", "1000"];
    all.extend(args);
    node.observe_with(&hubble_cli(), &all)
}

fn http_of(f: &Value) -> &Value {
    &f["l7"]["http"]
}

const INGRESS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-l7, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules:
        http:
        - {method: GET, path: "/public(/.*)?"}
        - {method: POST, path: /upload}
        - {method: PUT, path: /env, headers: ["X-Env: prod"]}
        - {method: GET, path: /api, host: "api\\.example\\.com"}
        - method: GET
          path: /team
          headerMatches: [{name: X-Team, value: blue, mismatch: REPLACE}]
    - ports: [{port: "9090", protocol: TCP}]
"#;

#[test]
fn ingress_http_rules_are_enforced_per_request() {
    let node = Node::start("l7in");
    let web = node.endpoint("web", NS, "app=web");
    node.endpoint("client", NS, "app=client");
    node.endpoint("other", NS, "app=other");
    let web_ip = ip_of(&web);
    let _http = http_server(&node, "web", 8080);
    let _plain = node.tcp_server("web", 9090);
    node.twill_ok(&["policy", "import", &policy_file(&node, "in.yaml", INGRESS)]);
    let url = |path: &str| format!("http://{web_ip}:8080{path}");

    // Allowed: the server's own answer, through the proxy.
    let mut last = (String::new(), String::new());
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = body_and_code(&node, "client", &[&url("/public")]);
            last.1 == "200"
        }),
        "GET /public: {last:?}\n{}",
        node.agent_log()
    );
    assert!(last.0.starts_with("GET /public len=0"), "{last:?}");
    // Denied: Envoy's answer, from the proxy; the server never sees it.
    let (body, status) = body_and_code(&node, "client", &[&url("/private")]);
    assert_eq!((body.as_str(), status.as_str()), ("Access denied\r\n", "403"));
    // The path regex matches the whole path.
    assert_eq!(code(&node, "client", &[&url("/publicity")]), "403");
    assert_eq!(code(&node, "client", &[&url("/public/a/b")]), "200");
    // Methods.
    assert_eq!(code(&node, "client", &["-X", "POST", &url("/public")]), "403");
    assert_eq!(code(&node, "client", &["-X", "POST", "-d", "x=1", &url("/upload")]), "200");
    // Headers: presence with a value.
    assert_eq!(code(&node, "client", &["-X", "PUT", &url("/env")]), "403");
    let (body, status) = body_and_code(&node, "client", &["-X", "PUT", "-H", "X-Env: prod", &url("/env")]);
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("x-env=prod"), "{body}");
    // Host.
    assert_eq!(code(&node, "client", &[&url("/api")]), "403");
    assert_eq!(code(&node, "client", &["-H", "Host: api.example.com", &url("/api")]), "200");
    // headerMatches with REPLACE: allowed, and the server sees the value.
    let replaced = curl(&node, "client", &["-H", "X-Team: red", &url("/team")]);
    assert!(String::from_utf8_lossy(&replaced.stdout).starts_with("GET /team"), "{replaced:?}");

    // One keep-alive connection mixing allowed and denied requests: every
    // answer on it, one connect.
    let out = curl(
        &node,
        "client",
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{num_connects}\n",
            &url("/public"),
            "-o",
            "/dev/null",
            &url("/private"),
            "-o",
            "/dev/null",
            &url("/public/x"),
        ],
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines, vec!["200 1", "403 0", "200 0"], "{out:?}");

    // Bodies: 10 MiB up (Content-Length), chunked up, 10 MiB down.
    let file = node.state_dir.parent().unwrap().join("big.bin");
    std::fs::write(&file, vec![b'y'; 10 << 20]).unwrap();
    let file_arg = format!("@{}", file.display());
    let (body, status) = body_and_code(&node, "client", &["--data-binary", &file_arg, &url("/upload")]);
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("len=10485760"), "{body}");
    let (body, status) = body_and_code(
        &node,
        "client",
        &["-H", "Transfer-Encoding: chunked", "--data-binary", &file_arg, &url("/upload")],
    );
    assert_eq!(status, "200");
    assert!(body.contains("len=10485760"), "chunked: {body}");
    let down = curl(
        &node,
        "client",
        &["-o", "/dev/null", "-w", "%{http_code} %{size_download}", &url("/public/big")],
    );
    assert_eq!(String::from_utf8_lossy(&down.stdout), "200 10485760");

    // The policy map says which entries redirect, and to which listener.
    let map = node.twill_json(&["bpf", "policy", "get", "web"]);
    let entries = map["entries"].as_array().unwrap();
    let proxy_of = |port: &str| -> Vec<u64> {
        entries
            .iter()
            .filter(|e| e["direction"] == "ingress" && e["port"] == port)
            .map(|e| e["proxy_port"].as_u64().unwrap_or(0))
            .collect()
    };
    assert!(proxy_of("8080").iter().all(|p| *p >= 10000) && !proxy_of("8080").is_empty(), "{map}");
    assert_eq!(proxy_of("9090"), vec![0], "{map}");

    // `policy trace` says the connection goes through the proxy, and with which rules.
    let t = node.twill_json(&[
        "policy",
        "trace",
        "--src-endpoint",
        "client",
        "--dst-endpoint",
        "web",
        "--dport",
        "8080/tcp",
    ]);
    let ingress = t["steps"].as_array().unwrap().iter().find(|s| s["direction"] == "ingress").unwrap();
    let why = ingress["reasons"].to_string();
    assert!(why.contains("through the L7 proxy") && why.contains("GET /public(/.*)?"), "{t}");

    // Another client is refused at L3/L4 (no rule names it): no HTTP at all.
    assert_eq!(code(&node, "other", &["--max-time", "2", &url("/public")]), "000");
    // The port without L7 rules is plain TCP, never proxied (no proxy
    // port in its map entry above, no L7 flow or to-proxy trace below).
    assert_eq!(node.tcp_request("client", &format!("{web_ip}:9090")), Ok("web".into()));
    // `twill status` shows the proxy at work.
    assert!(wait_until(Duration::from_secs(5), || {
        let s = node.twill_json(&["status"]);
        s["proxy"]["connections"].as_u64() > Some(0) && s["proxy"]["requests"].as_u64() > Some(10)
    }));
    let mut traces = Vec::new();
    assert!(wait_until(Duration::from_secs(5), || {
        traces = node.observe_with(&hubble_cli(), &["--type", "trace:to-proxy", "--last", "1000"]);
        !traces.is_empty()
    }));
    assert!(traces.iter().all(|f| f["l4"]["TCP"]["destination_port"] == 8080), "{traces:?}");

    // L7 flows, as the upstream hubble CLI shows them.
    let mut flows = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        flows = l7_flows(&node, &["--http-path", "^/private$"]);
        !flows.is_empty()
    }));
    let denied = &flows[0];
    assert_eq!(denied["Type"], "L7");
    assert_eq!(denied["verdict"], "DROPPED");
    assert_eq!(denied["l7"]["type"], "REQUEST");
    assert_eq!(http_of(denied)["method"], "GET");
    assert_eq!(http_of(denied)["url"], format!("http://{web_ip}:8080/private"));
    assert_eq!(denied["event_type"]["type"], 129);
    assert_eq!(denied["source"]["pod_name"], "client");
    assert_eq!(denied["destination"]["pod_name"], "web");
    assert_eq!(denied["traffic_direction"], "INGRESS");
    let ok = l7_flows(&node, &["--http-status", "200", "--http-method", "PUT"]);
    assert!(!ok.is_empty(), "no PUT response with 200");
    assert!(ok
        .iter()
        .all(|f| f["l7"]["type"] == "RESPONSE" && f["is_reply"] == true && http_of(f)["code"] == 200));
    assert!(
        ok.iter().all(|f| f["source"]["pod_name"] == "web" && !f["l7"]["latency_ns"].is_null()),
        "{ok:?}"
    );
    // Nothing on port 9090 was an L7 flow.
    assert!(l7_flows(&node, &["--port", "9090"]).is_empty());
    // The compact line reads like Cilium's.
    let out = std::process::Command::new(hubble_cli())
        .args(["observe", "--server", &format!("unix://{}", node.hubble_socket().display())])
        .args(["--type", "l7", "--last", "1000", "--http-path", "^/private$"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("http-request DROPPED (HTTP/1.1 GET http://{web_ip}:8080/private)")),
        "{text}"
    );
    // A policy change applies to the next request, even on an open
    // connection's proxy.
    let wider = INGRESS.replace(
        "- {method: GET, path: \"/public(/.*)?\"}",
        "- {method: GET, path: \"/(public|private)(/.*)?\"}",
    );
    assert_ne!(wider, INGRESS);
    node.twill_ok(&["policy", "import", &policy_file(&node, "wider.yaml", &wider)]);
    assert!(wait_until(Duration::from_secs(10), || code(&node, "client", &[&url("/private")]) == "200"));
    // twill observe takes the same filters.
    let mine =
        node.observe(&["--type", "l7", "--last", "1000", "--http-method", "POST", "--http-status", "200"]);
    assert!(!mine.is_empty() && mine.iter().all(|f| http_of(f)["method"] == "POST"));

    // Hubble's HTTP metrics count the same requests: the proxy sits at the
    // receiver's ingress, so the reporter is the server.
    let mut text = String::new();
    let counted = wait_until(Duration::from_secs(10), || {
        text = node.metrics();
        metric_value(
            &text,
            r#"hubble_http_requests_total{method="GET",protocol="HTTP/1.1",reporter="server"}"#,
        ) >= 5.0
            && metric_value(
                &text,
                r#"hubble_http_responses_total{method="GET",protocol="HTTP/1.1",status="200",reporter="server"}"#,
            ) >= 5.0
            && metric_value(
                &text,
                r#"hubble_http_request_duration_seconds_count{method="POST",reporter="server"}"#,
            ) >= 1.0
    });
    assert!(counted, "{text}");
}

const EGRESS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-l7, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: web}}]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules:
        http: [{method: GET, path: /out}]
"#;

#[test]
fn egress_http_rules_are_enforced_at_the_sender() {
    let (node, web_ip, _http) = l7_node("l7eg", EGRESS, "/out");
    let url = |path: &str| format!("http://{web_ip}:8080{path}");
    assert_eq!(code(&node, "client", &[&url("/in")]), "403");
    assert_eq!(code(&node, "client", &["-X", "DELETE", &url("/out")]), "403");
    let mut flows = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        flows = l7_flows(&node, &["--http-path", "^/in$"]);
        !flows.is_empty()
    }));
    assert_eq!(flows[0]["traffic_direction"], "EGRESS");
    assert_eq!(flows[0]["verdict"], "DROPPED");
    assert_eq!(flows[0]["source"]["pod_name"], "client");
}

/// One keep-alive connection: a request, then (once `go` exists) two more
/// on the same socket; results into `out`, one line per round.
const KEEPALIVE_CLIENT: &str = r#"
import http.client, os, sys, time
ip, go, out = sys.argv[1], sys.argv[2], sys.argv[3]
c = http.client.HTTPConnection(ip, 8080, timeout=10)
def get(path):
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    return r.status
first = get("/public")
local = c.sock.getsockname()
with open(out, "a") as f: f.write("%d\n" % first)
deadline = time.time() + 60
while not os.path.exists(go) and time.time() < deadline: time.sleep(0.05)
second, third = get("/public"), get("/private")
same = c.sock is not None and c.sock.getsockname() == local
with open(out, "a") as f: f.write("%d %d %s\n" % (second, third, same))
"#;

#[test]
fn proxied_connections_survive_an_agent_restart() {
    let (mut node, web_ip, _http) = l7_node("l7rs", INGRESS, "/public");
    let base = node.state_dir.parent().unwrap().to_path_buf();
    let (go, out) = (base.join("go"), base.join("client.out"));
    let (go_s, out_s) = (go.to_string_lossy().into_owned(), out.to_string_lossy().into_owned());
    let client = node.spawn_in("client", NS, &["python3", "-c", KEEPALIVE_CLIENT, &web_ip, &go_s, &out_s]);
    let read = || std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || read().lines().count() == 1),
        "first request: {:?}",
        read()
    );
    assert_eq!(read().trim(), "200");

    node.stop_agent(libc::SIGKILL);
    node.start_agent();
    std::fs::write(&go, "").unwrap();
    let done = client.wait_with_output();
    assert!(done.status.success(), "client: {}", String::from_utf8_lossy(&done.stderr));
    // The same connection, still enforced: the proxy outlived the agent.
    assert_eq!(read().lines().nth(1), Some("200 403 True"), "{}", node.agent_log());
    // And the restarted agent still gets its records.
    let mut flows = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        flows = l7_flows(&node, &["--http-path", "^/private$"]);
        !flows.is_empty()
    }));
}

/// Ingress L7 rules for a client on another node: the receiver's node
/// steers the decapsulated connection to its proxy at the tunnel device.
#[test]
fn ingress_http_rules_apply_to_clients_on_other_nodes() {
    use twill_e2e::cluster::Cluster;
    let mut cluster = Cluster::new("l7x");
    for _ in 0..2 {
        cluster.join("tunnel", &["--kvstore-lease-ttl", "3"]);
    }
    let (n0, n1) = (&cluster.nodes[0], &cluster.nodes[1]);
    n0.endpoint("client", NS, "app=client");
    let web = n1.endpoint("web", NS, "app=web");
    let web_ip = ip_of(&web);
    let _http = http_server(n1, "web", 8080);
    n1.twill_ok(&["policy", "import", &policy_file(n1, "x.yaml", INGRESS)]);
    let url = |path: &str| format!("http://{web_ip}:8080{path}");
    let mut last = (String::new(), String::new());
    assert!(
        wait_until(Duration::from_secs(15), || {
            last = (code(n0, "client", &[&url("/public")]), code(n0, "client", &[&url("/private")]));
            last == ("200".to_string(), "403".to_string())
        }),
        "/public, /private from the other node: {last:?}\n{}",
        n1.agent_log()
    );
    let mut flows = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        flows = l7_flows(n1, &["--http-path", "^/private$"]);
        !flows.is_empty()
    }));
    assert_eq!(flows[0]["verdict"], "DROPPED");
    assert_eq!(flows[0]["destination"]["pod_name"], "web");
}

/// Raw HTTP/1.1 from a client endpoint, for what curl does not do:
/// pipelined requests in one write, a request trickled a byte at a time,
/// and bytes that are no request at all. Prints one status line per answer.
const RAW_CLIENT: &str = r#"
import socket, sys, time
ip, mode = sys.argv[1], sys.argv[2]
s = socket.create_connection((ip, 8080), timeout=5)
def req(path): return ("GET %s HTTP/1.1\r\nHost: web\r\n\r\n" % path).encode()
if mode == "pipelined":
    s.sendall(req("/public") + req("/private") + req("/public/x"))
    want = 3
elif mode == "slow":
    for b in req("/public/slow"):
        s.sendall(bytes([b])); time.sleep(0.02)
    want = 1
else:
    s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    want = 1
data, seen = b"", []
deadline = time.time() + 5
while len(seen) < want and time.time() < deadline:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = next((int(l.split(":")[1]) for l in lines if l.lower().startswith("content-length:")), 0)
        if len(rest) < length: break
        seen.append(lines[0]); data = rest[length:]
print("\n".join(seen))
"#;

fn raw(node: &Node, ip: &str, mode: &str) -> Vec<String> {
    let out = node.exec("client", NS, &["python3", "-c", RAW_CLIENT, ip, mode]);
    assert!(out.status.success(), "{mode} client: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
}

#[test]
fn pipelined_slow_and_malformed_requests() {
    let (node, web_ip, _http) = l7_node("l7raw", INGRESS, "/public");

    // Pipelined: answered in order, the denied one in its place.
    assert_eq!(
        raw(&node, &web_ip, "pipelined"),
        ["HTTP/1.1 200 OK", "HTTP/1.1 403 Forbidden", "HTTP/1.1 200 OK"]
    );
    // A request trickled in byte by byte is still one request.
    assert_eq!(raw(&node, &web_ip, "slow"), ["HTTP/1.1 200 OK"]);
    // Garbage gets 400 from the proxy, and a flow says so.
    assert_eq!(raw(&node, &web_ip, "malformed"), ["HTTP/1.1 400 Bad Request"]);
    let mut flows = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            flows = l7_flows(&node, &["--http-status", "400"]);
            !flows.is_empty()
        }),
        "no flow for the malformed request"
    );
    assert_eq!(flows[0]["destination"]["pod_name"], "web", "{:?}", flows[0]);
    assert_eq!(flows[0]["source"]["pod_name"], "client", "{:?}", flows[0]);
}

/// The pid of the twill-proxy serving this node.
fn proxy_pid(node: &Node) -> Option<i32> {
    let socket = node.socket.parent().unwrap().join("proxy.sock");
    let socket = socket.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_proxy = args.first().is_some_and(|a| a.ends_with(b"twill-proxy"))
            && args.iter().any(|a| *a == socket.as_bytes());
        is_proxy.then_some(pid)
    })
}

/// An L3/L4 connection (port 9090) that keeps exchanging lines, one every
/// 50 ms, and reports each echo; it never goes through the proxy.
const ECHO_CLIENT: &str = r#"
import socket, sys, time, os
ip, stop, out = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.create_connection((ip, 9090), timeout=3)
n = 0
while not os.path.exists(stop) and n < 2000:
    s.sendall(b"ping %d\n" % n)
    line = s.recv(100)
    if not line: break
    n += 1
    with open(out, "w") as f: f.write(str(n))
    time.sleep(0.05)
"#;

#[test]
fn a_dead_proxy_is_restarted_and_l3_l4_traffic_never_notices() {
    let (node, web_ip, _http) = l7_node("l7pr", INGRESS, "/public");
    let _echo = node.spawn_in("web", NS, &["socat", "TCP-LISTEN:9090,reuseaddr,fork", "EXEC:cat"]);
    node.wait_for_socket("web", "-tln", 9090);
    let url = format!("http://{web_ip}:8080/public");

    let base = node.state_dir.parent().unwrap().to_path_buf();
    let (stop, out) = (base.join("stop"), base.join("echo.out"));
    let (stop_s, out_s) = (stop.to_string_lossy().into_owned(), out.to_string_lossy().into_owned());
    let client = node.spawn_in("client", NS, &["python3", "-c", ECHO_CLIENT, &web_ip, &stop_s, &out_s]);
    let echoes = || std::fs::read_to_string(&out).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    assert!(wait_until(Duration::from_secs(10), || echoes() >= 5), "the L3/L4 connection never echoed");

    let old = proxy_pid(&node).expect("twill-proxy runs");
    // SAFETY: a plain kill(2) of the proxy this node's agent started.
    assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);
    // A new proxy comes up with the same rules, without a policy change.
    let mut last = String::new();
    assert!(
        wait_until(Duration::from_secs(15), || {
            last = code(&node, "client", &[&url]);
            last == "200" && proxy_pid(&node).is_some_and(|p| p != old)
        }),
        "L7 after the proxy died: {last}\n{}",
        node.agent_log()
    );
    assert_eq!(code(&node, "client", &[&format!("http://{web_ip}:8080/private")]), "403");
    // The L3/L4 connection kept going the whole time, on the same socket.
    let before = echoes();
    assert!(wait_until(Duration::from_secs(10), || echoes() >= before + 5));
    std::fs::write(&stop, "").unwrap();
    let done = client.wait_with_output();
    assert!(done.status.success(), "echo client: {}", String::from_utf8_lossy(&done.stderr));
}
