//! The proxy's listeners as the agent drives them: opened and closed with
//! the configuration, bad rules refused before anything changes, and a
//! connection made to a listener directly (not steered by the datapath)
//! closed at once instead of being forwarded to the proxy itself. Needs
//! CAP_NET_ADMIN (IP_TRANSPARENT); binds loopback only.

use std::{
    io::Read,
    net::{Ipv4Addr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use twill_policy::l7::{HttpRule, L7Rules};
use twill_proxy::{
    config::{PeerRules, ProxyConfig, Redirect},
    record::{L7Record, RecordSink},
    Proxy,
};

#[derive(Default)]
struct Records(Mutex<Vec<L7Record>>);

impl RecordSink for Records {
    fn record(&self, r: L7Record) {
        self.0.lock().unwrap().push(r);
    }
}

/// A loopback port free right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

fn redirect(port: u16, path: &str) -> Redirect {
    Redirect {
        proxy_port: port,
        endpoint_id: 1,
        endpoint_ip: Ipv4Addr::new(10, 0, 0, 1),
        endpoint_identity: 300,
        ingress: true,
        protocol: 6,
        port: 80,
        port_prefix: 16,
        peers: vec![PeerRules {
            identity: 0,
            rules: L7Rules::Http(vec![HttpRule { path: Some(path.into()), ..Default::default() }]),
        }],
    }
}

#[test]
fn listeners_follow_the_configuration_and_refuse_direct_connections() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let records = Arc::new(Records::default());
    let proxy = Proxy::new(runtime.handle().clone(), records.clone());
    let port = free_port();
    proxy.apply(ProxyConfig { redirects: vec![redirect(port, "/a")], ipcache: vec![] }).unwrap();
    assert_eq!(proxy.ports(), vec![port]);

    // Dialled directly: closed without an answer, nothing forwarded.
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(&mut s, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(buf.is_empty(), "got {:?}", String::from_utf8_lossy(&buf));
    assert_eq!(proxy.stats().snapshot()[0], 0, "not counted as a proxied connection");
    assert!(records.0.lock().unwrap().is_empty());

    // A bad pattern changes nothing.
    let err = proxy.apply(ProxyConfig { redirects: vec![redirect(port, "(")], ipcache: vec![] }).unwrap_err();
    assert!(err.to_string().contains("path"), "{err}");
    assert_eq!(proxy.ports(), vec![port]);

    // Gone from the configuration: the listener closes.
    proxy.apply(ProxyConfig::default()).unwrap();
    assert!(proxy.ports().is_empty());
    let refused = (0..100).any(|_| {
        let r = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err();
        if !r {
            std::thread::sleep(Duration::from_millis(10));
        }
        r
    });
    assert!(refused, "listener on {port} still accepting");
}
