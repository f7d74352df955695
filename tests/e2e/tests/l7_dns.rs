//! DNS policy as a Cilium user meets it: `toPorts[].rules.dns` enforced
//! per lookup by the DNS proxy the datapath steers port 53 to (a real
//! dnsmasq in one endpoint, dig in another), REFUSED for names no rule
//! allows, and `toFQDNs` letting the client reach exactly the addresses
//! its allowed lookups returned, until their TTL passes. The lookups show
//! as DNS flows in both CLIs and in Hubble's DNS metrics.

use std::{process::Command, time::Duration};

use twill_e2e::{hubble_cli, ip_of, metric_value, run_ok, wait_until, Background, Node, Outside, Value};

const NS: &str = "default";
/// The outside machine, which Twill sees as world: one address the
/// allowed name resolves to, one for a name toFQDNs does not allow.
const WEB_IP: &str = "192.0.2.2";
const API_IP: &str = "192.0.2.3";
const GW: &str = "192.0.2.1";
/// dnsmasq's TTL for its answers; with `--tofqdns-min-ttl 0` it is the
/// time an address stays allowed.
const TTL: u32 = 2;

const POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-dns}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: dns}}]
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules:
        dns:
        - matchName: web.test
        - matchPattern: "*.api.test"
  - toFQDNs:
    - matchName: web.test
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#;

fn dnsmasq(node: &Node, dns_ip: &str) -> Background {
    let listen = format!("--listen-address={dns_ip}");
    let ttl = format!("--local-ttl={TTL}");
    let web = format!("--address=/web.test/{WEB_IP}");
    let api = format!("--address=/api.test/{API_IP}");
    let server = node.spawn_in(
        "dns",
        NS,
        &[
            "dnsmasq",
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--port=53",
            &listen,
            "--bind-interfaces",
            "--pid-file=",
            "--cache-size=0",
            &ttl,
            &web,
            &api,
            "--address=/denied.test/192.0.2.4",
        ],
    );
    node.wait_for_socket("dns", "-uln", 53);
    node.wait_for_socket("dns", "-tln", 53);
    server
}

/// `dig` from the client: (status, answer addresses).
fn dig(node: &Node, dns_ip: &str, name: &str, tcp: bool) -> (String, Vec<String>) {
    let server = format!("@{dns_ip}");
    let mut args = vec!["dig", &server, name, "A", "+tries=1", "+time=3", "+noall", "+comments", "+answer"];
    if tcp {
        args.push("+tcp");
    }
    let out = node.exec("client", NS, &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .map(str::to_string)
        .unwrap_or_else(|| format!("no answer: {text}{}", String::from_utf8_lossy(&out.stderr)));
    let ips = text
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    (status, ips)
}

/// What both tests run against: the outside namespace with a TCP server
/// on 8080 at both addresses, a `dns` endpoint running dnsmasq and a
/// `client` endpoint.
struct World {
    dns_ip: String,
    _dnsmasq: Background,
    _web: Background,
    _outside: Outside,
}

impl World {
    fn start(node: &Node) -> World {
        let outside = Outside::attach(node, "twdns-out", GW, &[WEB_IP, API_IP]);
        let web = outside.spawn(&["socat", "TCP-LISTEN:8080,reuseaddr,fork", "SYSTEM:echo outside"]);
        let dns_ip = ip_of(&node.endpoint("dns", NS, "app=dns"));
        node.endpoint("client", NS, "app=client");
        let dnsmasq = dnsmasq(node, &dns_ip);
        World { dns_ip, _dnsmasq: dnsmasq, _web: web, _outside: outside }
    }
}

fn import_policy(node: &Node) {
    let path = node.state_dir.parent().unwrap().join("dns.yaml");
    std::fs::write(&path, POLICY).unwrap();
    node.twill_ok(&["policy", "import", &path.to_string_lossy()]);
}

fn dns_flows(flows: &[Value], query: &str) -> Vec<Value> {
    flows.iter().filter(|f| f["l7"]["dns"]["query"] == query).cloned().collect()
}

#[test]
fn dns_rules_refuse_names_and_fqdn_policy_follows_answers_until_their_ttl() {
    let mut node = Node::prepare("l7dns", "10.200.0.0/24");
    node.agent_args = vec!["--tofqdns-min-ttl".into(), "0".into()];
    node.start_agent();
    let world = World::start(&node);
    let dns_ip = world.dns_ip.clone();
    let web = format!("{WEB_IP}:8080");
    assert_eq!(
        node.tcp_request("client", &web).as_deref(),
        Ok("outside"),
        "no policy yet: world is reachable"
    );

    import_policy(&node);
    assert!(node.tcp_request("client", &web).is_err(), "nothing looked up yet: toFQDNs selects nothing");

    // An allowed name: the answer arrives once its address is allowed, so
    // the very next connection gets through.
    let (status, ips) = dig(&node, &dns_ip, "web.test", false);
    assert_eq!((status.as_str(), ips.clone()), ("NOERROR", vec![WEB_IP.to_string()]), "{}", node.agent_log());
    assert_eq!(node.tcp_request("client", &web).as_deref(), Ok("outside"));
    // The other allowed pattern, over TCP too; its address is not in
    // toFQDNs, so it stays unreachable.
    assert_eq!(dig(&node, &dns_ip, "x.api.test", true), ("NOERROR".into(), vec![API_IP.into()]));
    assert!(node.tcp_request("client", &format!("{API_IP}:8080")).is_err());
    // Names no rule allows: REFUSED by the proxy, over UDP and TCP.
    assert_eq!(dig(&node, &dns_ip, "denied.test", false).0, "REFUSED");
    assert_eq!(dig(&node, &dns_ip, "denied.test", true).0, "REFUSED");
    // `*` is one label: a.b.api.test is not *.api.test.
    assert_eq!(dig(&node, &dns_ip, "a.b.api.test", false).0, "REFUSED");

    // The TTL passes with nothing refreshing it: new connections fail.
    assert!(
        wait_until(Duration::from_secs(15), || node.tcp_request("client", &web).is_err()),
        "{WEB_IP} stayed allowed after its {TTL} s TTL"
    );
    // Looking it up again allows it again.
    assert_eq!(dig(&node, &dns_ip, "web.test", false).1, vec![WEB_IP.to_string()]);
    assert_eq!(node.tcp_request("client", &web).as_deref(), Ok("outside"));

    // DNS flows, in Twill's CLI and in upstream Hubble's.
    let ours = |f: &[&str]| node.observe(&[&["--type", "l7", "--last", "1000"], f].concat());
    let mut flows = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            flows = ours(&[]);
            dns_flows(&flows, "denied.test.").len() >= 4
        }),
        "DNS flows: {flows:#?}"
    );
    let allowed = dns_flows(&flows, "web.test.");
    let answer = allowed
        .iter()
        .find(|f| f["is_reply"] == true && f["verdict"] == "FORWARDED")
        .unwrap_or_else(|| panic!("no answer flow for web.test: {allowed:#?}"));
    assert_eq!(answer["l7"]["dns"]["ips"], serde_json::json!([WEB_IP]), "{answer:#}");
    assert_eq!(answer["l7"]["dns"]["ttl"], TTL, "{answer:#}");
    assert_eq!(answer["l7"]["dns"]["qtypes"], serde_json::json!(["A"]), "{answer:#}");
    assert_eq!(answer["l7"]["type"], "RESPONSE", "{answer:#}");
    assert_eq!(
        answer["source"]["labels"].as_array().map(|l| l.iter().any(|l| l == "k8s:app=dns")),
        Some(true)
    );
    let denied = dns_flows(&flows, "denied.test.");
    assert!(
        denied.iter().any(|f| f["verdict"] == "DROPPED" && f["is_reply"] == false),
        "no DROPPED query flow: {denied:#?}"
    );
    assert!(denied.iter().any(|f| f["l7"]["dns"]["rcode"] == 5), "no REFUSED answer flow: {denied:#?}");
    // The connection to the address is named by the answer, and Hubble's
    // FQDN filters find it.
    let mut named = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            named = node.observe_with(&hubble_cli(), &["--to-fqdn", "*.test", "--last", "1000"]);
            named.iter().any(|f| f["IP"]["destination"] == WEB_IP)
        }),
        "no flow to {WEB_IP} named web.test: {named:#?}"
    );
    assert!(named.iter().all(|f| f["destination_names"] == serde_json::json!(["web.test"])), "{named:#?}");
    let ours = node.observe(&["--to-fqdn", "web.test", "--last", "1000"]);
    assert!(ours.iter().any(|f| f["IP"]["destination"] == WEB_IP), "twill observe --to-fqdn: {ours:#?}");
    assert!(node.observe(&["--to-fqdn", "other.test", "--last", "1000"]).is_empty());
    let hubble = node.observe_with(&hubble_cli(), &["--type", "l7", "--last", "1000"]);
    let theirs = dns_flows(&hubble, "web.test.");
    assert!(
        theirs.iter().any(|f| f["l7"]["dns"]["ips"] == serde_json::json!([WEB_IP])),
        "hubble CLI: {hubble:#?}"
    );

    let only_dns = node.observe_with(&hubble_cli(), &["--protocol", "dns", "--last", "1000"]);
    assert!(!only_dns.is_empty(), "hubble observe --protocol dns: nothing");
    assert!(only_dns.iter().all(|f| f["l7"]["dns"].is_object()), "{only_dns:#?}");

    // Hubble's DNS metrics.
    let metrics = node.metrics();
    let queries = metric_value(&metrics, r#"hubble_dns_queries_total{rcode="",qtypes="A",ips_returned=""}"#);
    assert!(queries >= 6.0, "queries counted: {queries}\n{metrics}");
    let refused = metric_value(
        &metrics,
        r#"hubble_dns_responses_total{rcode="Query Refused",qtypes="A",ips_returned="0"}"#,
    );
    assert!(refused >= 3.0, "refused answers counted: {refused}");
    let answered =
        metric_value(&metrics, r#"hubble_dns_responses_total{rcode="No Error",qtypes="A",ips_returned="1"}"#);
    assert!(answered >= 3.0, "answers counted: {answered}");
}

#[test]
fn addresses_learned_from_dns_stay_allowed_across_an_agent_restart() {
    // The default minimum TTL (an hour): only the restart could take the
    // address away.
    let mut node = Node::start("l7dnsrs");
    let world = World::start(&node);
    let dns_ip = world.dns_ip.clone();
    import_policy(&node);
    let web = format!("{WEB_IP}:8080");
    assert_eq!(dig(&node, &dns_ip, "web.test", false).1, vec![WEB_IP.to_string()]);
    assert_eq!(node.tcp_request("client", &web).as_deref(), Ok("outside"));

    node.stop_agent(libc::SIGTERM);
    node.start_agent();
    // No new lookup: the restarted agent knows the answer.
    assert_eq!(node.tcp_request("client", &web).as_deref(), Ok("outside"), "{}", node.agent_log());
    assert!(node.tcp_request("client", &format!("{API_IP}:8080")).is_err());
    // And its DNS proxy enforces the rules again.
    assert_eq!(dig(&node, &dns_ip, "denied.test", false).0, "REFUSED");
    assert_eq!(dig(&node, &dns_ip, "web.test", false).1, vec![WEB_IP.to_string()]);
}
