//! The plumbing `netdev` makes for an endpoint, read back from the kernel:
//! the names, MACs, addresses, routes and static neighbours on both sides,
//! the sysctl, and that delete is complete and idempotent and a failed
//! create leaves nothing behind.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkFlags, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use twill_datapath::netdev;

/// Removes the test's endpoint namespaces, also when an assertion fails.
struct Names(Vec<String>);

impl Drop for Names {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = netdev::delete_netns(name);
        }
    }
}

/// Runs `body` on a thread in a fresh network namespace of its own, which
/// goes, with every device in it, when the thread ends.
fn sandboxed(body: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare for this thread only.
            assert_eq!(
                unsafe { libc::unshare(libc::CLONE_NEWNET) },
                0,
                "{}",
                std::io::Error::last_os_error()
            );
            body()
        })
        .join()
        .unwrap()
    });
}

/// A dump from the namespace the calling thread is in.
fn dump(request: RouteNetlinkMessage) -> Vec<RouteNetlinkMessage> {
    let mut socket = Socket::new(NETLINK_ROUTE).unwrap();
    socket.bind_auto().unwrap();
    socket.connect(&SocketAddr::new(0, 0)).unwrap();
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(request));
    packet.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    socket.send(&bytes, 0).unwrap();
    let mut out = Vec::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut buffer[..], 0).unwrap();
        let mut offset = 0;
        while offset < size {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buffer[offset..size]).unwrap();
            offset += (message.header.length as usize + 3) & !3;
            match message.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Done(_) => return out,
                NetlinkPayload::Error(e) => panic!("dump failed: {e}"),
                _ => {}
            }
        }
    }
}

/// A dump from inside the named namespace.
fn dump_in(netns: &str, request: RouteNetlinkMessage) -> Vec<RouteNetlinkMessage> {
    let file = File::open(format!("/run/netns/{netns}")).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns for this short-lived thread only.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            dump(request)
        })
        .join()
        .unwrap()
    })
}

#[derive(Debug)]
struct Link {
    index: u32,
    name: String,
    mac: Vec<u8>,
    up: bool,
}

fn links(messages: Vec<RouteNetlinkMessage>) -> Vec<Link> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })
        .map(|l| {
            let mut link = Link { index: l.header.index, name: String::new(), mac: vec![], up: false };
            link.up = l.header.flags.contains(LinkFlags::Up);
            for a in l.attributes {
                match a {
                    LinkAttribute::IfName(n) => link.name = n,
                    LinkAttribute::Address(m) => link.mac = m,
                    _ => {}
                }
            }
            link
        })
        .collect()
}

/// `(prefix, prefix length, interface)` of every IPv4 address.
fn addresses(messages: Vec<RouteNetlinkMessage>) -> Vec<(IpAddr, u8, u32)> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.family == AddressFamily::Inet => Some(a),
            _ => None,
        })
        .flat_map(|a| {
            let (len, index) = (a.header.prefix_len, a.header.index);
            a.attributes.into_iter().filter_map(move |attr| match attr {
                AddressAttribute::Local(ip) => Some((ip, len, index)),
                _ => None,
            })
        })
        .collect()
}

#[derive(Debug, PartialEq)]
struct Route {
    destination: Option<Ipv4Addr>,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    source: Option<Ipv4Addr>,
    oif: u32,
    scope: RouteScope,
}

/// Routes of the main table.
fn routes(messages: Vec<RouteNetlinkMessage>) -> Vec<Route> {
    let inet = |a: &RouteAddress| match a {
        RouteAddress::Inet(ip) => Some(*ip),
        _ => None,
    };
    messages
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) if r.header.table == RouteHeader::RT_TABLE_MAIN => Some(r),
            _ => None,
        })
        .map(|r| {
            let mut route = Route {
                destination: None,
                prefix: r.header.destination_prefix_length,
                gateway: None,
                source: None,
                oif: 0,
                scope: r.header.scope,
            };
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(d) => route.destination = inet(d),
                    RouteAttribute::Gateway(g) => route.gateway = inet(g),
                    RouteAttribute::PrefSource(s) => route.source = inet(s),
                    RouteAttribute::Oif(i) => route.oif = *i,
                    _ => {}
                }
            }
            route
        })
        .collect()
}

/// `(address, MAC, interface, state)` of every IPv4 neighbour.
fn neighbours(messages: Vec<RouteNetlinkMessage>) -> Vec<(Ipv4Addr, Vec<u8>, u32, NeighbourState)> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) if n.header.family == AddressFamily::Inet => Some(n),
            _ => None,
        })
        .filter_map(|n| {
            let mut ip = None;
            let mut mac = vec![];
            for a in n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => ip = Some(d),
                    NeighbourAttribute::LinkLayerAddress(m) => mac = m,
                    _ => {}
                }
            }
            Some((ip?, mac, n.header.ifindex, n.header.state))
        })
        .collect()
}

fn get_links() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(LinkMessage::default())
}

fn get_addresses() -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    RouteNetlinkMessage::GetAddress(m)
}

fn get_routes() -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    RouteNetlinkMessage::GetRoute(m)
}

fn get_neighbours() -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    RouteNetlinkMessage::GetNeighbour(m)
}

#[test]
fn endpoint_plumbing_is_complete_and_delete_is_idempotent() {
    let netns = format!("twnd-plumb-{}", std::process::id());
    let _cleanup = Names(vec![netns.clone()]);
    sandboxed(|| {
        let router = Ipv4Addr::new(10, 78, 0, 1);
        let ip = Ipv4Addr::new(10, 78, 0, 2);
        let (host_mac, endpoint_mac) = ([2, 0xaa, 0, 0, 0, 7], [2, 0xbb, 0, 0, 0, 7]);
        netdev::ensure_host_device(router).unwrap();
        // Repairing an intact host device changes nothing and succeeds.
        netdev::ensure_host_device(router).unwrap();
        let host_links = links(dump(get_links()));
        for name in [netdev::HOST_DEVICE, "twill_net"] {
            assert!(host_links.iter().any(|l| l.name == name && l.up), "{name} is up: {host_links:?}");
        }
        let host_index = netdev::ifindex(netdev::HOST_DEVICE).unwrap();
        assert!(addresses(dump(get_addresses())).contains(&(router.into(), 32, host_index)));
        assert_eq!(netdev::local_ipv4_addresses().unwrap(), vec![router], "loopback is left out");

        let plumbing = netdev::EndpointPlumbing {
            netns: &netns,
            host_device: "twndplumb0",
            host_mac,
            endpoint_mac,
            ip,
            router,
            mtu: None,
        };
        netdev::create_endpoint(&plumbing).unwrap();
        assert!(netdev::endpoint_present(&netns, "twndplumb0"));
        assert!(netdev::list_netns().contains(&netns));
        assert!(netdev::list_devices().unwrap().contains(&"twndplumb0".to_string()));

        // Host side: the device with its MAC, up, a /32 route to the
        // endpoint from the router address, a permanent neighbour, no
        // reverse-path filter.
        let dev = netdev::ifindex("twndplumb0").unwrap();
        let host_links = links(dump(get_links()));
        let link = host_links.iter().find(|l| l.index == dev).unwrap();
        assert_eq!((link.mac.as_slice(), link.up), (&host_mac[..], true));
        let expected = Route {
            destination: Some(ip),
            prefix: 32,
            gateway: None,
            source: Some(router),
            oif: dev,
            scope: RouteScope::Link,
        };
        assert!(routes(dump(get_routes())).contains(&expected), "host route to the endpoint");
        assert!(neighbours(dump(get_neighbours())).contains(&(
            ip,
            endpoint_mac.to_vec(),
            dev,
            NeighbourState::Permanent
        )));
        let rp_filter = std::fs::read_to_string("/proc/sys/net/ipv4/conf/twndplumb0/rp_filter").unwrap();
        assert_eq!(rp_filter.trim(), "0");

        // Endpoint side: lo and eth0 up, eth0 with the endpoint's MAC and
        // /32 address, a link route to the router, the default route via
        // it and a permanent neighbour for it.
        let inside = links(dump_in(&netns, get_links()));
        assert!(inside.iter().any(|l| l.name == "lo" && l.up), "lo is up: {inside:?}");
        let eth0 = inside.iter().find(|l| l.name == netdev::ENDPOINT_DEVICE).expect("eth0");
        assert_eq!((eth0.mac.as_slice(), eth0.up), (&endpoint_mac[..], true));
        assert_eq!(inside.len(), 2, "nothing but lo and eth0: {inside:?}");
        let inside_addresses: Vec<_> =
            addresses(dump_in(&netns, get_addresses())).into_iter().filter(|a| a.2 == eth0.index).collect();
        assert_eq!(inside_addresses, vec![(ip.into(), 32, eth0.index)]);
        let inside_routes = routes(dump_in(&netns, get_routes()));
        let to_router = Route {
            destination: Some(router),
            prefix: 32,
            gateway: None,
            source: None,
            oif: eth0.index,
            scope: RouteScope::Link,
        };
        let default = Route {
            destination: None,
            prefix: 0,
            gateway: Some(router),
            source: None,
            oif: eth0.index,
            scope: RouteScope::Universe,
        };
        assert_eq!(inside_routes, vec![default, to_router], "exactly the two routes");
        assert_eq!(
            neighbours(dump_in(&netns, get_neighbours())),
            vec![(router, host_mac.to_vec(), eth0.index, NeighbourState::Permanent)]
        );

        // The name is taken: a second create is refused.
        let again = netdev::create_endpoint(&plumbing).unwrap_err();
        assert!(again.to_string().contains(&netns), "the error names the namespace: {again}");

        netdev::delete_endpoint(&netns, "twndplumb0").unwrap();
        assert!(!netdev::endpoint_present(&netns, "twndplumb0"));
        assert!(!netdev::netns_exists(&netns));
        assert!(netdev::ifindex("twndplumb0").is_none());
        netdev::delete_endpoint(&netns, "twndplumb0").unwrap();

        netdev::remove_host_device().unwrap();
        assert!(netdev::ifindex(netdev::HOST_DEVICE).is_none());
        assert!(netdev::ifindex("twill_net").is_none(), "its peer goes with it");
        netdev::remove_host_device().unwrap();
    });
}

#[test]
fn a_failed_create_leaves_nothing_behind() {
    let netns = format!("twnd-fail-{}", std::process::id());
    let _cleanup = Names(vec![netns.clone()]);
    sandboxed(|| {
        // No host device holds the router address, so the host route with
        // `src ROUTER` is refused half way through.
        let plumbing = netdev::EndpointPlumbing {
            netns: &netns,
            host_device: "twndfail0",
            host_mac: [2, 0xaa, 0, 0, 0, 8],
            endpoint_mac: [2, 0xbb, 0, 0, 0, 8],
            ip: Ipv4Addr::new(10, 79, 0, 2),
            router: Ipv4Addr::new(10, 79, 0, 1),
            mtu: None,
        };
        let err = netdev::create_endpoint(&plumbing).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("route replace 10.79.0.2/32 dev twndfail0 src 10.79.0.1"), "{text}");
        assert!(std::error::Error::source(&err).is_some(), "the kernel's reason is kept as the source");
        assert!(!netdev::netns_exists(&netns));
        assert!(netdev::ifindex("twndfail0").is_none());
    });
}

#[test]
fn namespace_names_are_checked() {
    sandboxed(|| {
        for bad in ["", "..", "a/b"] {
            let plumbing = netdev::EndpointPlumbing {
                netns: bad,
                host_device: "twndbad0",
                host_mac: [2, 0, 0, 0, 0, 1],
                endpoint_mac: [2, 0, 0, 0, 0, 2],
                ip: Ipv4Addr::new(10, 80, 0, 2),
                router: Ipv4Addr::new(10, 80, 0, 1),
                mtu: None,
            };
            let err = netdev::create_endpoint(&plumbing).unwrap_err();
            assert!(matches!(err, netdev::NetdevError::InvalidNetnsName(_)), "{bad:?}: {err}");
        }
    });
}
