//! The Hubble API around the observer: the gRPC health service the hubble
//! CLI checks first, the peer service Hubble Relay discovers nodes with,
//! and the TCP listener with TLS and mutual TLS.

use std::{
    process::{Command, Output, Stdio},
    time::Duration,
};

use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use twill_e2e::{bin_dir, hubble_cli, pki::Pki, wait_until, Node};
use twill_observe_proto::{
    peer::{peer_client::PeerClient, ChangeNotification, ChangeNotificationType, NotifyRequest},
    tonic::transport::{Channel, Endpoint},
};

/// The hubble address inside every node's network namespace (the default).
const TCP: &str = "127.0.0.1:4244";

async fn unix_channel(node: &Node) -> Channel {
    Endpoint::from_shared(format!("unix:{}", node.hubble_socket().display()))
        .unwrap()
        .connect()
        .await
        .expect("connecting to the Hubble socket")
}

/// The first notification of a new Notify stream, and whether the stream
/// then stayed open (a short wait for anything more).
fn first_peer(node: &Node) -> (ChangeNotification, bool) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut peers = PeerClient::new(unix_channel(node).await);
        let mut stream = peers.notify(NotifyRequest {}).await.expect("Notify").into_inner();
        let first = stream.message().await.expect("first notification").expect("stream not empty");
        let open = tokio::time::timeout(Duration::from_millis(300), stream.message()).await.is_err();
        (first, open)
    })
}

/// Some flows in the node's ring: an endpoint pinging another.
fn make_flows(node: &Node) {
    node.endpoint("client", "default", "app=client");
    let server = node.endpoint("server", "default", "app=server");
    let ip = server["ipv4"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(10), || node.ping("client", "default", &ip)));
    // The ping's flows reach the ring through the agent's event reader a
    // moment after the ping returns (it polls the kernel ring on a short
    // timer): wait until they are there, so every test starts with flows.
    let socket = format!("unix://{}", node.hubble_socket().display());
    let mut status = String::new();
    let stored = wait_until(Duration::from_secs(10), || {
        status = ok(hubble(node, &["status", "--server", &socket]), "hubble status on the socket");
        current_flows(&status) > 0
    });
    assert!(stored, "the ping's flows never reached the ring:\n{status}");
}

/// Runs the upstream hubble CLI inside the node's network namespace.
fn hubble(node: &Node, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .arg(hubble_cli())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `Current/Max Flows: 12/4,095 (0.29%)` -> 12.
fn current_flows(status: &str) -> u64 {
    let line =
        status.lines().find(|l| l.starts_with("Current/Max Flows:")).unwrap_or_else(|| panic!("{status}"));
    let current = line.trim_start_matches("Current/Max Flows:").trim().split('/').next().unwrap();
    current.replace(',', "").parse().unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn hubble_status_works_on_the_socket_and_on_tcp() {
    let node = Node::start("hstatus");
    make_flows(&node);
    let socket = format!("unix://{}", node.hubble_socket().display());
    let status = ok(hubble(&node, &["status", "--server", &socket]), "hubble status on the socket");
    assert!(status.contains("Healthcheck (via unix://") && status.contains(": Ok"), "{status}");
    assert!(current_flows(&status) > 0, "{status}");
    let status = ok(hubble(&node, &["status", "--server", TCP]), "hubble status over TCP");
    assert!(status.contains(&format!("Healthcheck (via {TCP}): Ok")), "{status}");
    assert!(current_flows(&status) > 0, "{status}");
    let nodes = ok(hubble(&node, &["list", "nodes", "--server", TCP]), "hubble list nodes over TCP");
    assert!(nodes.lines().any(|l| l.starts_with(&node.name) && l.contains("Connected")), "{nodes}");
    let text = node.twill_ok(&["status"]);
    assert!(
        text.contains(&format!("Hubble:       {socket}, {TCP} (no TLS)")),
        "twill status names the listeners:\n{text}"
    );
}

#[test]
fn health_reports_the_server_and_the_observer_serving() {
    let node = Node::start("health");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut health = HealthClient::new(unix_channel(&node).await);
        for service in ["", "hubble.server.Observer", "observer.Observer"] {
            let reply = health.check(HealthCheckRequest { service: service.into() }).await.unwrap();
            assert_eq!(reply.into_inner().status(), ServingStatus::Serving, "{service:?}");
        }
        let unknown = health.check(HealthCheckRequest { service: "nothing.Here".into() }).await.unwrap_err();
        assert_eq!(unknown.code(), twill_observe_proto::tonic::Code::NotFound);
        let mut watch = health.watch(HealthCheckRequest { service: "".into() }).await.unwrap().into_inner();
        let first = watch.message().await.unwrap().expect("a status");
        assert_eq!(first.status(), ServingStatus::Serving);
    });
}

#[test]
fn notify_announces_this_node_and_stays_open() {
    let node = Node::start("peer");
    let (peer, open) = first_peer(&node);
    assert_eq!(peer.r#type(), ChangeNotificationType::PeerAdded);
    assert_eq!(peer.name, node.name);
    assert_eq!(peer.address, TCP);
    assert_eq!(peer.tls, None, "no TLS on the listener");
    assert!(open, "the stream stays open for later changes");
}

#[test]
fn mutual_tls_serves_clients_with_a_certificate_and_refuses_others() {
    let mut node = Node::prepare("mtls", "10.200.0.0/24");
    let server_name = format!("{}.default.hubble-grpc.cilium.io", node.name);
    let pki = Pki::new(node.state_dir.parent().unwrap(), &server_name, &format!("DNS:{server_name}"));
    node.agent_args = ["--hubble-listen-address", TCP]
        .into_iter()
        .map(String::from)
        .chain([
            "--hubble-tls-cert".into(),
            pki.path("server.pem"),
            "--hubble-tls-key".into(),
            pki.path("server.key"),
            "--hubble-tls-client-ca".into(),
            pki.path("ca.pem"),
        ])
        .collect();
    node.start_agent();
    make_flows(&node);

    let (ca, cert, key) = (pki.path("ca.pem"), pki.path("client.pem"), pki.path("client.key"));
    let tls = ["--tls", "--tls-ca-cert-files", &ca, "--tls-server-name", &server_name];
    let with_cert = [&tls[..], &["--tls-client-cert-file", &cert, "--tls-client-key-file", &key]].concat();
    // The ping's flows reach the ring through the agent's event reader a
    // moment after the ping returns: ask until they are there.
    let mut flows = String::new();
    let read = wait_until(Duration::from_secs(10), || {
        flows = ok(
            hubble(&node, &[&["observe", "--server", TCP, "-o", "json"], &with_cert[..]].concat()),
            "hubble observe over mutual TLS",
        );
        flows.lines().any(|l| l.contains("\"flow\""))
    });
    assert!(read, "hubble read flows over TLS:\n{flows}");

    let refused = hubble(&node, &[&["observe", "--server", TCP, "--timeout", "3s"], &tls[..]].concat());
    // Only the client certificate differs from the command that worked.
    assert!(!refused.status.success(), "a client without a certificate is refused");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("code = Unavailable"), "the handshake fails: {why}");
    let plain = hubble(&node, &["status", "--server", TCP, "--timeout", "3s"]);
    assert!(!plain.status.success(), "plaintext is refused on the TLS listener");

    // twill observe reads the same listener, with the same flags.
    let out = Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .arg(bin_dir().join("twill"))
        .args([&["observe", "--server", TCP, "-o", "json"], &with_cert[..]].concat())
        .output()
        .unwrap();
    let flows = ok(out, "twill observe over mutual TLS");
    assert!(flows.lines().any(|l| l.contains("\"flow\"")), "twill read flows over TLS:\n{flows}");

    let (peer, _) = first_peer(&node);
    assert_eq!(peer.tls.map(|t| t.server_name), Some(server_name), "peers are told the server name");
    let text = node.twill_ok(&["status"]);
    assert!(text.contains(&format!("{TCP} (mutual TLS)")), "{text}");
    // The Unix socket stays plaintext, so local tools keep working.
    let socket = format!("unix://{}", node.hubble_socket().display());
    ok(hubble(&node, &["status", "--server", &socket]), "hubble status on the socket");
}

/// Starts an agent on `node` with `args`, expecting it to exit at start;
/// returns what it printed.
fn agent_refuses(node: &Node, args: &[&str]) -> String {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", node.netns))
        .arg(bin_dir().join("twill-agent"))
        .args(node.agent_flags())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(Duration::from_secs(20), || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "the agent started with {args:?}");
    assert!(!out.status.success(), "the agent exited successfully with {args:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_tls_flags_stop_the_agent_naming_the_flag() {
    let node = Node::prepare("badtls", "10.200.0.0/24");
    let pki = Pki::new(
        node.state_dir.parent().unwrap(),
        "x.default.hubble-grpc.cilium.io",
        "DNS:x.default.hubble-grpc.cilium.io",
    );
    let junk = node.state_dir.parent().unwrap().join("junk.pem");
    std::fs::write(&junk, "this is no certificate\n").unwrap();
    let junk = junk.display().to_string();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));

    let e = agent_refuses(&node, &["--hubble-tls-cert", &cert]);
    assert!(e.contains("--hubble-tls-cert") && e.contains("needs --hubble-tls-key"), "{e}");
    let e = agent_refuses(&node, &["--hubble-tls-cert", "/nonexistent/cert.pem", "--hubble-tls-key", &key]);
    assert!(e.contains("--hubble-tls-cert: cannot read /nonexistent/cert.pem: No such file"), "{e}");
    let e = agent_refuses(&node, &["--hubble-tls-cert", &junk, "--hubble-tls-key", &key]);
    assert!(e.contains(&format!("--hubble-tls-cert: {junk}: not PEM certificates")), "{e}");
    let e = agent_refuses(&node, &["--hubble-tls-cert", &cert, "--hubble-tls-key", &cert]);
    assert!(e.contains(&format!("--hubble-tls-key: {cert}: not a PEM private key")), "{e}");
    let e = agent_refuses(
        &node,
        &["--hubble-tls-cert", &cert, "--hubble-tls-key", &key, "--hubble-tls-client-ca", &junk],
    );
    assert!(e.contains("--hubble-tls-client-ca: "), "{e}");
    let other_key = pki.path("client.key");
    let e = agent_refuses(&node, &["--hubble-tls-cert", &cert, "--hubble-tls-key", &other_key]);
    assert!(e.contains("--hubble-tls-cert and --hubble-tls-key: not a usable certificate and key"), "{e}");
    assert!(!node.socket.exists(), "no agent came up");
}
