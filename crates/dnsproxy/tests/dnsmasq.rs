//! The engine against a real dnsmasq, in a namespace of the test's own.
//! Needs root and Debian's dnsmasq (scripts/setup.sh installs it).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;
use twill_dnsproxy::harness::{query_bytes, DnsNamespace};
use twill_dnsproxy::{Client, EndpointDnsRule, Engine, EngineConfig, Exchange, RuleTable, Verdict};
use twill_policy::fqdn::{FqdnCache, FqdnConfig};
use twill_policy::l7_dns::{parse_match_name, parse_match_pattern, DnsMatch};

const TTL: u32 = 30;

fn client() -> Client {
    Client { endpoint: 7, identity: 12345, addr: "127.0.0.1:40000".parse().unwrap() }
}

fn rules(server: SocketAddr) -> Arc<RuleTable> {
    let table = RuleTable::default();
    let names = vec![
        DnsMatch::Name(parse_match_name("X.test").unwrap()),
        DnsMatch::Pattern(parse_match_pattern("*.pattern.test").unwrap()),
    ];
    let rule = EndpointDnsRule { servers: Some(vec![server.ip()]), port: Some(53), names };
    table.replace(HashMap::from([(7, vec![rule])]));
    Arc::new(table)
}

fn a_records(reply: &[u8]) -> (ResponseCode, u16, Vec<(IpAddr, u32)>) {
    let m = Message::from_vec(reply).expect("the reply is DNS");
    let ips = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some((IpAddr::V4(a.0), r.ttl())),
            _ => None,
        })
        .collect();
    (m.response_code(), m.id(), ips)
}

#[test]
fn allowed_denied_pattern_ttl_and_malformed_through_dnsmasq() {
    let mut ns = DnsNamespace::new().unwrap();
    let server = ns
        .start_dnsmasq(
            &[("x.test", "10.1.2.3"), ("pattern.test", "10.1.2.4"), ("deny.test", "10.9.9.9")],
            TTL,
        )
        .unwrap();
    ns.block_on(move || async move {
        let seen: Arc<Mutex<Vec<Exchange>>> = Arc::default();
        // The observer feeds an FQDN cache, as the agent will.
        let cache = Arc::new(Mutex::new(FqdnCache::new(FqdnConfig { min_ttl: 0, ..Default::default() })));
        let x_test = DnsMatch::Name(parse_match_name("x.test").unwrap());
        cache.lock().unwrap().set_selectors([x_test.clone()]);
        let (seen2, cache2) = (seen.clone(), cache.clone());
        let observer = move |e: &Exchange| {
            seen2.lock().unwrap().push(e.clone());
            cache2.lock().unwrap().observe(e.client.endpoint, &e.answers, 1000);
        };
        let engine = Engine::new(EngineConfig::default(), rules(server), Arc::new(observer));

        // Allowed by name (case and trailing dot do not matter): dnsmasq's answer.
        let reply = engine.handle_udp(client(), server, &query_bytes("x.TEST.", 101)).await.expect("a reply");
        assert_eq!(a_records(&reply), (ResponseCode::NoError, 101, vec![("10.1.2.3".parse().unwrap(), TTL)]));
        {
            let seen = seen.lock().unwrap();
            let e = seen.last().unwrap();
            assert_eq!((e.verdict, e.name.as_str(), e.rcode), (Verdict::Forwarded, "x.test.", 0));
            assert_eq!(e.answers.len(), 1);
            assert_eq!(
                (e.answers[0].ips.clone(), e.answers[0].ttl),
                (vec!["10.1.2.3".parse().unwrap()], TTL)
            );
        }

        // The answer reached the cache with dnsmasq's TTL, and lapses with it.
        {
            let mut c = cache.lock().unwrap();
            assert_eq!(c.selected(&x_test), ["10.1.2.3".parse().unwrap()].into());
            assert!(c.expire(1000 + u64::from(TTL) - 1).is_empty(), "still inside the TTL");
            let d = c.expire(1000 + u64::from(TTL));
            assert_eq!(d.ips_removed, ["10.1.2.3".parse().unwrap()].into());
            assert!(c.selected(&x_test).is_empty());
        }

        // A name no rule allows: REFUSED, with the query's id and question.
        let reply =
            engine.handle_udp(client(), server, &query_bytes("deny.test.", 202)).await.expect("a reply");
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!((m.response_code(), m.id()), (ResponseCode::Refused, 202));
        assert_eq!(m.queries()[0].name().to_ascii(), "deny.test.");
        assert!(m.answers().is_empty(), "nothing of dnsmasq's answer leaks");
        assert_eq!(seen.lock().unwrap().last().unwrap().verdict, Verdict::Denied);

        // The pattern: one level of subdomain, not the domain itself.
        let reply = engine.handle_udp(client(), server, &query_bytes("a.pattern.test.", 303)).await.unwrap();
        assert_eq!(a_records(&reply), (ResponseCode::NoError, 303, vec![("10.1.2.4".parse().unwrap(), TTL)]));
        let reply = engine.handle_udp(client(), server, &query_bytes("pattern.test.", 304)).await.unwrap();
        assert_eq!(a_records(&reply).0, ResponseCode::Refused);
        let reply =
            engine.handle_udp(client(), server, &query_bytes("a.b.pattern.test.", 305)).await.unwrap();
        assert_eq!(a_records(&reply).0, ResponseCode::Refused);

        // Another endpoint has no DNS rules: everything refused.
        let other = Client { endpoint: 8, ..client() };
        let reply = engine.handle_udp(other, server, &query_bytes("x.test.", 306)).await.unwrap();
        assert_eq!(a_records(&reply).0, ResponseCode::Refused);
        // The rule names the server: the same name at another server is refused.
        let elsewhere: SocketAddr = "127.0.0.2:53".parse().unwrap();
        let reply = engine.handle_udp(client(), elsewhere, &query_bytes("x.test.", 307)).await.unwrap();
        assert_eq!(a_records(&reply).0, ResponseCode::Refused);

        // Malformed: dropped and counted, no reply.
        assert!(engine.handle_udp(client(), server, b"\x00\x01garbage").await.is_none());
        let mut response_not_query = query_bytes("x.test.", 9);
        response_not_query[2] |= 0x80;
        assert!(engine.handle_udp(client(), server, &response_not_query).await.is_none());
        let s = engine.stats();
        assert_eq!((s.forwarded, s.denied, s.malformed), (2, 5, 2), "{s:?}");
    });
}

#[test]
fn tcp_queries_share_one_upstream_connection() {
    let mut ns = DnsNamespace::new().unwrap();
    let server = ns.start_dnsmasq(&[("x.test", "10.1.2.3")], TTL).unwrap();
    ns.block_on(move || async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let engine =
            Arc::new(Engine::new(EngineConfig::default(), rules(server), Arc::new(|_: &Exchange| {})));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let e = engine.clone();
        tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            e.serve_tcp(Client { addr: peer, ..client() }, server, stream, Duration::from_secs(5)).await;
        });
        let mut conn = tokio::net::TcpStream::connect(at).await.unwrap();
        let steps = [
            (1, "x.test.", ResponseCode::NoError),
            (2, "no.test.", ResponseCode::Refused),
            (3, "x.test.", ResponseCode::NoError),
        ];
        for (id, name, rcode) in steps {
            let q = query_bytes(name, id);
            conn.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
            conn.write_all(&q).await.unwrap();
            let mut len = [0u8; 2];
            conn.read_exact(&mut len).await.unwrap();
            let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
            conn.read_exact(&mut reply).await.unwrap();
            let (got, got_id, _) = a_records(&reply);
            assert_eq!((got, got_id), (rcode, id), "{name}");
        }
        assert_eq!(engine.stats().forwarded, 2);
    });
}

#[test]
fn a_silent_server_times_out_and_a_closed_port_gets_servfail() {
    let ns = DnsNamespace::new().unwrap();
    ns.block_on(move || async move {
        // Bound but never read: queries to it go unanswered.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let silent_at = silent.local_addr().unwrap();
        let table = Arc::new(RuleTable::default());
        let any = EndpointDnsRule { servers: None, port: None, names: vec![DnsMatch::Pattern("*".into())] };
        table.replace(HashMap::from([(7, vec![any])]));
        let config = EngineConfig { upstream_timeout: Duration::from_millis(200), ..Default::default() };
        let engine = Engine::new(config, table.clone(), Arc::new(|_: &Exchange| {}));
        let started = std::time::Instant::now();
        assert!(engine.handle_udp(client(), silent_at, &query_bytes("x.test.", 1)).await.is_none());
        assert!(started.elapsed() < Duration::from_secs(2), "the timeout bounds the wait");
        assert_eq!(engine.stats().timeouts, 1);
        drop(silent);
        // Nothing bound: the kernel's port unreachable ends it, long before
        // a timeout (a long one here, so a loaded machine cannot let the
        // timer win the race and make this case look like the first).
        let config = EngineConfig { upstream_timeout: Duration::from_secs(10), ..Default::default() };
        let engine = Engine::new(config, table, Arc::new(|_: &Exchange| {}));
        let started = std::time::Instant::now();
        let reply = engine.handle_udp(client(), silent_at, &query_bytes("x.test.", 2)).await.unwrap();
        assert_eq!(a_records(&reply).0, ResponseCode::ServFail);
        assert_eq!(engine.stats().upstream_errors, 1);
        assert!(started.elapsed() < Duration::from_secs(5), "answered by the error, not the timer");
    });
}

/// The transparent socket: the query's original destination comes from
/// IP_ORIGDSTADDR, and the reply leaves from that address (here the
/// listener's own, as nothing steers; the datapath's redirect is another
/// developer's part), so a connected client socket accepts it.
#[test]
fn transparent_listener_learns_the_original_destination_and_replies_from_it() {
    let mut ns = DnsNamespace::new().unwrap();
    let server = ns.start_dnsmasq(&[("x.test", "10.1.2.3")], TTL).unwrap();
    ns.block_on(move || async move {
        use twill_dnsproxy::transparent::{serve_to, TransparentUdp};
        let listener = TransparentUdp::bind("0.0.0.0:5353".parse().unwrap()).unwrap();
        let seen: Arc<Mutex<Vec<Exchange>>> = Arc::default();
        let seen2 = seen.clone();
        let observer = move |e: &Exchange| seen2.lock().unwrap().push(e.clone());
        let engine = Arc::new(Engine::new(EngineConfig::default(), rules(server), Arc::new(observer)));
        let clients = |addr: std::net::SocketAddrV4| (addr.ip().is_loopback()).then_some((7u64, 12345u32));
        tokio::spawn(serve_to(engine.clone(), listener, Arc::new(clients), Some(server)));
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Connected: the kernel drops replies from any other source.
        client.connect("127.0.0.3:5353").await.unwrap();
        for (id, name, rcode) in
            [(11, "x.test.", ResponseCode::NoError), (12, "deny.test.", ResponseCode::Refused)]
        {
            client.send(&query_bytes(name, id)).await.unwrap();
            let mut buf = [0u8; 1500];
            let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                .await
                .expect("a reply")
                .unwrap();
            let (got, got_id, _) = a_records(&buf[..n]);
            assert_eq!((got, got_id), (rcode, id), "{name}");
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].server, server, "forwarded to the upstream given");
        assert_eq!(seen[0].client.addr, client.local_addr().unwrap(), "the client's address, from recvmsg");
    });
}

/// A steered query's reply leaves from the server's address (any
/// address, local or not, with IP_TRANSPARENT), so the client's connected
/// socket takes it.
#[test]
fn replies_to_steered_queries_come_from_the_original_destination() {
    let ns = DnsNamespace::new().unwrap();
    ns.enter(|| {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let server: std::net::SocketAddrV4 = "127.0.0.9:53".parse().unwrap();
        client.connect(server).unwrap();
        let std::net::SocketAddr::V4(to) = client.local_addr().unwrap() else { unreachable!() };
        twill_dnsproxy::transparent::send_from(server, to, b"reply").unwrap();
        let mut buf = [0u8; 16];
        let n = client.recv(&mut buf).expect("the reply passes the connected socket's source check");
        assert_eq!(&buf[..n], b"reply");
        // From any other address, the connected socket would not take it.
        let other: std::net::SocketAddrV4 = "127.0.0.10:53".parse().unwrap();
        twill_dnsproxy::transparent::send_from(other, to, b"stray").unwrap();
        client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        assert!(client.recv(&mut buf).is_err(), "a reply from elsewhere is not taken");
    });
}

/// Steered for real: a client namespace sends to the server's address;
/// in the proxy namespace an iptables TPROXY rule (standing in for the
/// datapath's redirect) hands the query, still addressed to the server,
/// to the transparent listener; the engine asks dnsmasq at that original
/// destination and the reply leaves from the server's address.
#[test]
fn steered_by_tproxy_end_to_end() {
    let proxy_ns = DnsNamespace::new().unwrap();
    let client_ns = Arc::new(DnsNamespace::new().unwrap());
    // The server in a namespace of its own, as in deployments: the reply
    // socket binds the server's address, which is then not a local one.
    let mut server_ns = DnsNamespace::new().unwrap();
    proxy_ns
        .ip(&["link", "add", "p1", "type", "veth", "peer", "name", "s0", "netns", &server_ns.name])
        .unwrap();
    proxy_ns.ip(&["addr", "add", "10.88.0.1/24", "dev", "p1"]).unwrap();
    proxy_ns.ip(&["link", "set", "p1", "up"]).unwrap();
    server_ns.ip(&["addr", "add", "10.88.0.53/24", "dev", "s0"]).unwrap();
    server_ns.ip(&["link", "set", "s0", "up"]).unwrap();
    server_ns.ip(&["route", "add", "default", "via", "10.88.0.1"]).unwrap();
    proxy_ns
        .ip(&["link", "add", "p0", "type", "veth", "peer", "name", "c0", "netns", &client_ns.name])
        .unwrap();
    proxy_ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "p0"]).unwrap();
    proxy_ns.ip(&["link", "set", "p0", "up"]).unwrap();
    client_ns.ip(&["addr", "add", "10.77.0.2/24", "dev", "c0"]).unwrap();
    client_ns.ip(&["link", "set", "c0", "up"]).unwrap();
    client_ns.ip(&["route", "add", "default", "via", "10.77.0.1"]).unwrap();
    // TPROXY: UDP to port 53 arriving on p0 goes to the listener on 5300.
    let tproxy = "-p udp -i p0 --dport 53 -j TPROXY --on-port 5300 --on-ip 0.0.0.0 --tproxy-mark 0x1/0x1";
    let mut rule = vec!["iptables", "-t", "mangle", "-A", "PREROUTING"];
    rule.extend(tproxy.split(' '));
    proxy_ns.exec(&rule).unwrap();
    let tproxy_tcp = tproxy.replace("-p udp", "-p tcp");
    let mut rule = vec!["iptables", "-t", "mangle", "-A", "PREROUTING"];
    rule.extend(tproxy_tcp.split(' '));
    proxy_ns.exec(&rule).unwrap();
    proxy_ns.ip(&["rule", "add", "fwmark", "0x1/0x1", "lookup", "100"]).unwrap();
    proxy_ns.ip(&["route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"]).unwrap();
    let server = server_ns
        .start_dnsmasq_on(
            "10.88.0.53".parse().unwrap(),
            &[("x.test", "10.1.2.3"), ("pattern.test", "10.1.2.4")],
            TTL,
        )
        .unwrap();

    proxy_ns.block_on(move || async move {
        use twill_dnsproxy::transparent::{serve, TransparentUdp};
        let listener = TransparentUdp::bind("0.0.0.0:5300".parse().unwrap()).unwrap();
        let seen: Arc<Mutex<Vec<Exchange>>> = Arc::default();
        let seen2 = seen.clone();
        let observer = move |e: &Exchange| seen2.lock().unwrap().push(e.clone());
        let engine = Arc::new(Engine::new(EngineConfig::default(), rules(server), Arc::new(observer)));
        let clients =
            |addr: std::net::SocketAddrV4| (addr.ip().octets() == [10, 77, 0, 2]).then_some((7u64, 12345u32));
        tokio::spawn(serve(engine.clone(), listener, Arc::new(clients)));
        let tcp = twill_dnsproxy::transparent::bind_tcp("0.0.0.0:5300".parse().unwrap()).unwrap();
        let idle = Duration::from_secs(5);
        tokio::spawn(twill_dnsproxy::transparent::serve_tcp(
            engine.clone(),
            tcp,
            Arc::new(clients),
            16,
            idle,
        ));
        let results = tokio::task::spawn_blocking(move || {
            client_ns.enter(move || {
                let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
                // Connected to the server: only replies from 10.88.0.53:53 are taken.
                sock.connect("10.88.0.53:53").unwrap();
                let mut out = vec![];
                for (id, name) in [(21u16, "x.test."), (22, "deny.test.")] {
                    // As a resolver does: resend until answered (the
                    // first may go out while the veth comes up), 10 s at most.
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    let mut buf = [0u8; 1500];
                    let n = loop {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "no reply from the server's address for {name}"
                        );
                        sock.send(&query_bytes(name, id)).unwrap();
                        if let Ok(n) = sock.recv(&mut buf) {
                            break n;
                        }
                    };
                    out.push(a_records(&buf[..n]));
                }
                // DNS over TCP, steered the same way: the accepted
                // connection's local address is the server dialled.
                use std::io::{Read, Write};
                let mut conn = std::net::TcpStream::connect_timeout(
                    &"10.88.0.53:53".parse().unwrap(),
                    Duration::from_secs(5),
                )
                .expect("the steered TCP connection is accepted");
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let q = query_bytes("a.pattern.test.", 23);
                conn.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
                conn.write_all(&q).unwrap();
                let mut len = [0u8; 2];
                conn.read_exact(&mut len).unwrap();
                let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
                conn.read_exact(&mut reply).unwrap();
                out.push(a_records(&reply));
                out
            })
        })
        .await
        .unwrap();
        assert_eq!(results[0], (ResponseCode::NoError, 21, vec![("10.1.2.3".parse().unwrap(), TTL)]));
        assert_eq!((results[1].0, results[1].1), (ResponseCode::Refused, 22));
        assert_eq!(
            results[2],
            (ResponseCode::NoError, 23, vec![("10.1.2.4".parse().unwrap(), TTL)]),
            "over TCP"
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].server, server, "the original destination, from IP_ORIGDSTADDR");
        assert_eq!(seen[0].client.addr.ip(), std::net::IpAddr::from([10, 77, 0, 2]));
    });
}
