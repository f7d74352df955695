//! Network plumbing around the eBPF programs: network namespaces, veth
//! pairs, addresses, routes and neighbours, through rtnetlink in process.
//!
//! An endpoint costs one short-lived thread (to make its namespace) and
//! two netlink sockets, one in the caller's namespace and one in the
//! endpoint's, so plumbing takes well under a millisecond of kernel work
//! whatever the number of endpoints.

use std::{
    ffi::CString,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{
        AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute,
        LinkFlags, LinkInfo, LinkMessage,
    },
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteIpTunnel, RouteLwEnCapType, RouteLwTunnelEncap,
        RouteMessage, RouteProtocol, RouteScope, RouteType,
    },
    AddressFamily, RouteNetlinkMessage,
};

use crate::{netlink::Rtnl, netns};

/// The device that holds the node's router address: one end of a veth
/// pair, as Cilium's cilium_host/cilium_net (the kernels Twill targets
/// need not have the dummy driver).
pub const HOST_DEVICE: &str = "twill_host";
const HOST_DEVICE_PEER: &str = "twill_net";
/// The VXLAN device of cluster mode's tunnel routing, one per node for
/// every remote node (collect-metadata mode: the datapath names the remote
/// node per packet).
pub const TUNNEL_DEVICE: &str = "twill_vxlan";
/// The UDP port of the overlay: Cilium's VXLAN port, so firewalls set up
/// for Cilium let Twill through.
pub const VXLAN_PORT: u16 = 8472;
/// What VXLAN over IPv4 adds to every frame: outer IPv4 (20), UDP (8),
/// VXLAN (8) and inner Ethernet (14) headers.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The protocol number Twill's routes carry (`ip route ... proto 116`), so
/// the agent can tell its native-routing routes from everyone else's and
/// reconcile them after a restart. Unassigned in the kernel's list and
/// iproute2's rt_protos.
pub const ROUTE_PROTOCOL: u8 = 116;
/// Interface name of an endpoint inside its namespace.
pub const ENDPOINT_DEVICE: &str = "eth0";
const LOOPBACK: &str = "lo";

pub use crate::netdev_error::NetdevError;

fn open() -> Result<Rtnl, NetdevError> {
    Rtnl::open().map_err(|source| NetdevError::Socket { source })
}

/// Runs one netlink request; `operation` is only built on failure.
fn request(
    rtnl: &mut Rtnl,
    message: RouteNetlinkMessage,
    flags: u16,
    operation: impl FnOnce() -> String,
) -> Result<(), NetdevError> {
    rtnl.execute(message, flags).map_err(|source| NetdevError::Netlink { operation: operation(), source })
}

/// The ifindex of `device` in the caller's network namespace.
pub fn ifindex(device: &str) -> Option<u32> {
    let name = CString::new(device).ok()?;
    // SAFETY: if_nametoindex reads a valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The ifindex of `device` in the namespace `rtnl` was opened in.
fn link_index(rtnl: &mut Rtnl, device: &str) -> Result<u32, NetdevError> {
    let mut message = LinkMessage::default();
    message.attributes.push(LinkAttribute::IfName(device.into()));
    let found = rtnl.get(RouteNetlinkMessage::GetLink(message)).map_err(|source| {
        if source.raw_os_error() == Some(libc::ENODEV) {
            NetdevError::NoDevice(device.into())
        } else {
            NetdevError::Netlink { operation: format!("link show {device}"), source }
        }
    })?;
    match found {
        Some(RouteNetlinkMessage::NewLink(link)) => Ok(link.header.index),
        _ => Err(NetdevError::NoDevice(device.into())),
    }
}

pub fn netns_exists(netns: &str) -> bool {
    netns::path(netns).exists()
}

/// Network namespace names under /run/netns.
pub fn list_netns() -> Vec<String> {
    std::fs::read_dir(netns::NETNS_RUN_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Device names in the caller's network namespace.
pub fn list_devices() -> Result<Vec<String>, NetdevError> {
    let links = open()?
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .map_err(|source| NetdevError::Netlink { operation: "link show".into(), source })?;
    Ok(links
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(link) => link.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name),
                _ => None,
            }),
            _ => None,
        })
        .collect())
}

/// IPv4 addresses configured in the caller's namespace, loopback excluded.
pub fn local_ipv4_addresses() -> Result<Vec<Ipv4Addr>, NetdevError> {
    let mut request = AddressMessage::default();
    request.header.family = AddressFamily::Inet;
    let addresses = open()?
        .dump(RouteNetlinkMessage::GetAddress(request))
        .map_err(|source| NetdevError::Netlink { operation: "-4 addr show".into(), source })?;
    Ok(addresses
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.family == AddressFamily::Inet => {
                Some(a.attributes)
            }
            _ => None,
        })
        .flatten()
        .filter_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(ip),
            _ => None,
        })
        .filter(|ip| !ip.is_loopback())
        .collect())
}

fn write_sysctl(path: &str, value: &str) -> Result<(), NetdevError> {
    std::fs::write(path, value).map_err(|source| NetdevError::Sysctl { path: path.into(), source })
}

/// A veth pair `name`/`peer`; the peer goes into the namespace `peer_netns`
/// (an open namespace file) when given.
fn add_veth(
    rtnl: &mut Rtnl,
    name: &str,
    mac: Option<[u8; 6]>,
    peer: &str,
    peer_mac: Option<[u8; 6]>,
    peer_netns: Option<(&str, &std::fs::File)>,
) -> Result<(), NetdevError> {
    let mut peer_message = LinkMessage::default();
    peer_message.attributes.push(LinkAttribute::IfName(peer.into()));
    if let Some(mac) = peer_mac {
        peer_message.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some((_, file)) = peer_netns {
        peer_message.attributes.push(LinkAttribute::NetNsFd(file.as_raw_fd()));
    }
    let mut message = LinkMessage::default();
    message.attributes.push(LinkAttribute::IfName(name.into()));
    if let Some(mac) = mac {
        message.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    message.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
    ]));
    request(rtnl, RouteNetlinkMessage::NewLink(message), NLM_F_CREATE | NLM_F_EXCL, || {
        let netns = peer_netns.map(|(n, _)| format!(" netns {n}")).unwrap_or_default();
        format!("link add {name} type veth peer name {peer}{netns}")
    })
}

/// No IPv6 link-local address (nor the router solicitations and DAD that
/// come with it): Twill's endpoints are IPv4 only, and the datapath would
/// only count that traffic as noise.
fn set_addrgenmode_none(rtnl: &mut Rtnl, index: u32, device: &str) -> Result<(), NetdevError> {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![
        AfSpecInet6::AddrGenMode(In6AddrGenMode::None),
    ])]));
    request(rtnl, RouteNetlinkMessage::SetLink(message), 0, || {
        format!("link set dev {device} addrgenmode none")
    })
}

fn set_mtu(rtnl: &mut Rtnl, index: u32, device: &str, mtu: u32) -> Result<(), NetdevError> {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message.attributes.push(LinkAttribute::Mtu(mtu));
    request(rtnl, RouteNetlinkMessage::SetLink(message), 0, || format!("link set {device} mtu {mtu}"))
}

/// The device holding `ip` and its MTU: a node's underlay, found by its
/// node IP.
pub fn device_of_address(ip: Ipv4Addr) -> Result<Option<(String, u32)>, NetdevError> {
    let mut rtnl = open()?;
    let mut request = AddressMessage::default();
    request.header.family = AddressFamily::Inet;
    let addresses = rtnl
        .dump(RouteNetlinkMessage::GetAddress(request))
        .map_err(|source| NetdevError::Netlink { operation: "-4 addr show".into(), source })?;
    let index = addresses.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewAddress(a)
            if a.attributes
                .iter()
                .any(|at| matches!(at, AddressAttribute::Local(IpAddr::V4(l)) if *l == ip)) =>
        {
            Some(a.header.index)
        }
        _ => None,
    });
    let Some(index) = index else { return Ok(None) };
    let links = rtnl
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .map_err(|source| NetdevError::Netlink { operation: "link show".into(), source })?;
    Ok(links.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewLink(link) if link.header.index == index => {
            let name = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })?;
            Some((name, link_mtu(&link)?))
        }
        _ => None,
    }))
}

fn set_up(rtnl: &mut Rtnl, index: u32, device: &str) -> Result<(), NetdevError> {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message.header.flags = LinkFlags::Up;
    message.header.change_mask = LinkFlags::Up;
    request(rtnl, RouteNetlinkMessage::SetLink(message), 0, || format!("link set {device} up"))
}

/// `ip addr add|replace IP/32 dev DEVICE`.
fn add_address(
    rtnl: &mut Rtnl,
    index: u32,
    device: &str,
    ip: Ipv4Addr,
    replace: bool,
) -> Result<(), NetdevError> {
    let mut message = AddressMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.prefix_len = 32;
    message.header.index = index;
    message.attributes.push(AddressAttribute::Local(ip.into()));
    message.attributes.push(AddressAttribute::Address(ip.into()));
    let (flags, verb) =
        if replace { (NLM_F_CREATE | NLM_F_REPLACE, "replace") } else { (NLM_F_CREATE | NLM_F_EXCL, "add") };
    request(rtnl, RouteNetlinkMessage::NewAddress(message), flags, || {
        format!("addr {verb} {ip}/32 dev {device}")
    })
}

/// A route in the main table, as `ip route` writes it: a direct route (no
/// gateway) has link scope, one via a gateway universe scope.
struct Route {
    destination: Option<Ipv4Addr>,
    gateway: Option<Ipv4Addr>,
    source: Option<Ipv4Addr>,
    replace: bool,
}

fn add_route(rtnl: &mut Rtnl, index: u32, device: &str, route: Route) -> Result<(), NetdevError> {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::Boot;
    message.header.kind = RouteType::Unicast;
    message.header.scope = if route.gateway.is_some() { RouteScope::Universe } else { RouteScope::Link };
    if let Some(dst) = route.destination {
        message.header.destination_prefix_length = 32;
        message.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    }
    if let Some(gateway) = route.gateway {
        message.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    }
    message.attributes.push(RouteAttribute::Oif(index));
    if let Some(src) = route.source {
        message.attributes.push(RouteAttribute::PrefSource(RouteAddress::Inet(src)));
    }
    let flags = if route.replace { NLM_F_CREATE | NLM_F_REPLACE } else { NLM_F_CREATE | NLM_F_EXCL };
    request(rtnl, RouteNetlinkMessage::NewRoute(message), flags, || {
        let verb = if route.replace { "replace" } else { "add" };
        let dst = route.destination.map_or("default".into(), |d| format!("{d}/32"));
        let via = route.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        let src = route.source.map(|s| format!(" src {s}")).unwrap_or_default();
        format!("route {verb} {dst}{via} dev {device}{src}")
    })
}

/// `ip neigh replace IP lladdr MAC dev DEVICE nud permanent`.
fn set_neighbour(
    rtnl: &mut Rtnl,
    index: u32,
    device: &str,
    ip: Ipv4Addr,
    mac: [u8; 6],
) -> Result<(), NetdevError> {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.ifindex = index;
    message.header.state = NeighbourState::Permanent;
    message.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    message.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    request(rtnl, RouteNetlinkMessage::NewNeighbour(message), NLM_F_CREATE | NLM_F_REPLACE, || {
        format!("neigh replace {ip} lladdr {} dev {device} nud permanent", format_mac(&mac))
    })
}

/// Creates (or repairs) the device holding the router address.
pub fn ensure_host_device(router: Ipv4Addr) -> Result<(), NetdevError> {
    let mut rtnl = open()?;
    if ifindex(HOST_DEVICE).is_none() {
        add_veth(&mut rtnl, HOST_DEVICE, None, HOST_DEVICE_PEER, None, None)?;
    }
    let host = link_index(&mut rtnl, HOST_DEVICE)?;
    let peer = link_index(&mut rtnl, HOST_DEVICE_PEER)?;
    add_address(&mut rtnl, host, HOST_DEVICE, router, true)?;
    set_addrgenmode_none(&mut rtnl, host, HOST_DEVICE)?;
    set_addrgenmode_none(&mut rtnl, peer, HOST_DEVICE_PEER)?;
    set_up(&mut rtnl, host, HOST_DEVICE)?;
    set_up(&mut rtnl, peer, HOST_DEVICE_PEER)?;
    Ok(())
}

pub fn remove_host_device() -> Result<(), NetdevError> {
    delete_device(HOST_DEVICE)
}

/// What an endpoint's plumbing consists of.
#[derive(Debug, Clone)]
pub struct EndpointPlumbing<'a> {
    pub netns: &'a str,
    pub host_device: &'a str,
    pub host_mac: [u8; 6],
    pub endpoint_mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub router: Ipv4Addr,
    /// Both ends' MTU; None keeps the kernel's (1500). A tunnel's
    /// encapsulation needs room: the underlay's MTU less its overhead.
    pub mtu: Option<u32>,
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Creates the endpoint's namespace and veth pair with addresses, routes
/// and static neighbours (so nobody needs ARP). On failure, whatever was
/// created is removed again.
pub fn create_endpoint(p: &EndpointPlumbing) -> Result<(), NetdevError> {
    let result = create_endpoint_inner(p);
    if result.is_err() {
        let _ = delete_endpoint(p.netns, p.host_device);
    }
    result
}

fn create_endpoint_inner(p: &EndpointPlumbing) -> Result<(), NetdevError> {
    let netns::NewNetns { file, rtnl: mut inside } = netns::create(p.netns)?;
    let lo = link_index(&mut inside, LOOPBACK)?;
    set_up(&mut inside, lo, LOOPBACK)?;
    let pair = VethPair {
        netns: p.netns,
        host_device: p.host_device,
        host_mac: p.host_mac,
        ifname: ENDPOINT_DEVICE,
        endpoint_mac: p.endpoint_mac,
        ip: p.ip,
        router: p.router,
        mtu: p.mtu,
    };
    configure_pair(&pair, &file, &mut inside)
}

/// One endpoint's veth pair, wherever its inside end goes.
struct VethPair<'a> {
    /// How messages name the namespace.
    netns: &'a str,
    host_device: &'a str,
    host_mac: [u8; 6],
    ifname: &'a str,
    endpoint_mac: [u8; 6],
    ip: Ipv4Addr,
    router: Ipv4Addr,
    mtu: Option<u32>,
}

fn configure_pair(p: &VethPair, netns_file: &std::fs::File, inside: &mut Rtnl) -> Result<(), NetdevError> {
    let VethPair { netns, host_device: dev, ip, router, host_mac, endpoint_mac, ifname, mtu } = *p;
    let mut host = open()?;
    add_veth(&mut host, dev, Some(host_mac), ifname, Some(endpoint_mac), Some((netns, netns_file)))?;
    let index = link_index(&mut host, dev)?;
    if let Some(mtu) = mtu {
        set_mtu(&mut host, index, dev, mtu)?;
    }
    set_addrgenmode_none(&mut host, index, dev)?;
    set_up(&mut host, index, dev)?;
    add_route(
        &mut host,
        index,
        dev,
        Route { destination: Some(ip), gateway: None, source: Some(router), replace: true },
    )?;
    set_neighbour(&mut host, index, dev, ip, endpoint_mac)?;
    // Traffic from an endpoint arrives on its own device, but replies the
    // host sends may leave through another route: strict reverse-path
    // filtering would drop them.
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter"), "0")?;

    let eth0 = link_index(inside, ifname)?;
    if let Some(mtu) = mtu {
        set_mtu(inside, eth0, ifname, mtu)?;
    }
    set_addrgenmode_none(inside, eth0, ifname)?;
    add_address(inside, eth0, ifname, ip, false)?;
    set_up(inside, eth0, ifname)?;
    let to_router = Route { destination: Some(router), gateway: None, source: None, replace: false };
    add_route(inside, eth0, ifname, to_router)?;
    let default = Route { destination: None, gateway: Some(router), source: None, replace: false };
    add_route(inside, eth0, ifname, default)?;
    set_neighbour(inside, eth0, ifname, router, host_mac)?;
    Ok(())
}

/// An endpoint whose inside end goes into a namespace someone else owns
/// (a container runtime's, named by path), under the interface name the
/// runtime asked for.
#[derive(Debug, Clone)]
pub struct AttachedPlumbing<'a> {
    pub netns_path: &'a std::path::Path,
    pub ifname: &'a str,
    pub host_device: &'a str,
    pub host_mac: [u8; 6],
    pub endpoint_mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub router: Ipv4Addr,
    /// Both ends' MTU; None keeps the kernel's (1500). A tunnel's
    /// encapsulation needs room: the underlay's MTU less its overhead.
    pub mtu: Option<u32>,
}

/// Creates the veth pair into the existing namespace with address, routes
/// and neighbour. On failure the pair is removed again (taking the inside
/// end with it); the namespace itself is never Twill's to remove.
pub fn attach_endpoint(p: &AttachedPlumbing) -> Result<(), NetdevError> {
    let netns::NewNetns { file, rtnl: mut inside } = netns::open(p.netns_path)?;
    let label = p.netns_path.display().to_string();
    if link_index(&mut inside, p.ifname).is_ok() {
        return Err(NetdevError::Exists { device: p.ifname.into(), netns: label });
    }
    let pair = VethPair {
        netns: &label,
        host_device: p.host_device,
        host_mac: p.host_mac,
        ifname: p.ifname,
        endpoint_mac: p.endpoint_mac,
        ip: p.ip,
        router: p.router,
        mtu: p.mtu,
    };
    let result = configure_pair(&pair, &file, &mut inside);
    if result.is_err() {
        let _ = delete_device(p.host_device);
    }
    result
}

/// What is wrong with an attached endpoint's inside end: the interface,
/// its address and its routes, each problem in words (empty when none).
pub fn check_attached(
    netns_path: &std::path::Path,
    ifname: &str,
    ip: Ipv4Addr,
    router: Ipv4Addr,
) -> Result<Vec<String>, NetdevError> {
    let netns::NewNetns { rtnl: mut inside, .. } = netns::open(netns_path)?;
    let mut problems = Vec::new();
    let index = match link_index(&mut inside, ifname) {
        Ok(i) => i,
        Err(NetdevError::NoDevice(_)) => {
            return Ok(vec![format!("interface {ifname} does not exist in {}", netns_path.display())])
        }
        Err(e) => return Err(e),
    };
    let mut by_index = LinkMessage::default();
    by_index.header.index = index;
    if let Ok(Some(RouteNetlinkMessage::NewLink(link))) = inside.get(RouteNetlinkMessage::GetLink(by_index)) {
        if !link.header.flags.contains(LinkFlags::Up) {
            problems.push(format!("interface {ifname} is down"));
        }
    }
    let mut request = AddressMessage::default();
    request.header.family = AddressFamily::Inet;
    let addresses = inside
        .dump(RouteNetlinkMessage::GetAddress(request))
        .map_err(|source| NetdevError::Netlink { operation: format!("-4 addr show dev {ifname}"), source })?;
    let has_address = addresses.iter().any(|m| match m {
        RouteNetlinkMessage::NewAddress(a) => {
            a.header.index == index
                && a.header.prefix_len == 32
                && a.attributes
                    .iter()
                    .any(|x| matches!(x, AddressAttribute::Local(IpAddr::V4(l)) if *l == ip))
        }
        _ => false,
    });
    if !has_address {
        problems.push(format!("interface {ifname} lacks address {ip}/32"));
    }
    let mut request = RouteMessage::default();
    request.header.address_family = AddressFamily::Inet;
    let routes = inside
        .dump(RouteNetlinkMessage::GetRoute(request))
        .map_err(|source| NetdevError::Netlink { operation: "-4 route show".into(), source })?;
    let mut default_via_router = false;
    let mut router_direct = false;
    for m in &routes {
        let RouteNetlinkMessage::NewRoute(r) = m else { continue };
        if r.header.table != RouteHeader::RT_TABLE_MAIN {
            continue;
        }
        let oif = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        if oif != Some(index) {
            continue;
        }
        let gateway = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
            _ => None,
        });
        let destination = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
            _ => None,
        });
        if r.header.destination_prefix_length == 0 && gateway == Some(router) {
            default_via_router = true;
        }
        if r.header.destination_prefix_length == 32 && destination == Some(router) && gateway.is_none() {
            router_direct = true;
        }
    }
    if !router_direct {
        problems.push(format!("no route to the router {router}/32 on {ifname}"));
    }
    if !default_via_router {
        problems.push(format!("no default route via {router} on {ifname}"));
    }
    Ok(problems)
}

fn delete_device(device: &str) -> Result<(), NetdevError> {
    let Some(index) = ifindex(device) else {
        return Ok(());
    };
    let mut message = LinkMessage::default();
    message.header.index = index;
    match open()?.execute(RouteNetlinkMessage::DelLink(message), 0) {
        Ok(()) => Ok(()),
        // Gone in the meantime (its peer was deleted, or its namespace).
        Err(e) if ifindex(device) != Some(index) => {
            tracing::debug!("link del {device}: {e} (device already gone)");
            Ok(())
        }
        Err(source) => Err(NetdevError::Netlink { operation: format!("link del {device}"), source }),
    }
}

/// Removes an endpoint's veth pair and namespace. Idempotent.
pub fn delete_endpoint(netns: &str, host_device: &str) -> Result<(), NetdevError> {
    delete_device(host_device)?;
    delete_netns(netns)
}

/// Whether an endpoint's plumbing is all there (used when restoring).
pub fn endpoint_present(netns: &str, host_device: &str) -> bool {
    netns_exists(netns) && ifindex(host_device).is_some()
}

/// Removes a network namespace by name. Idempotent.
pub fn delete_netns(netns: &str) -> Result<(), NetdevError> {
    netns::delete(netns)
}

/// Removes a device in the caller's namespace (its veth peer goes too).
/// Idempotent.
pub fn delete_link(device: &str) -> Result<(), NetdevError> {
    delete_device(device)
}

/// The link message of `device` in the caller's namespace, if it exists.
fn link_message(rtnl: &mut Rtnl, device: &str) -> Result<Option<LinkMessage>, NetdevError> {
    let mut message = LinkMessage::default();
    message.attributes.push(LinkAttribute::IfName(device.into()));
    match rtnl.get(RouteNetlinkMessage::GetLink(message)) {
        Ok(Some(RouteNetlinkMessage::NewLink(link))) => Ok(Some(link)),
        Ok(_) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(NetdevError::Netlink { operation: format!("link show {device}"), source }),
    }
}

fn link_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

/// Whether `link` is a collect-metadata VXLAN device on `port`: anything
/// else under the tunnel's name would encapsulate with the wrong VNI, or
/// not at all.
fn is_metadata_vxlan(link: &LinkMessage, port: u16) -> bool {
    let Some(info) = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(info) => Some(info),
        _ => None,
    }) else {
        return false;
    };
    let vxlan = info.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(v)) => Some(v),
        _ => None,
    });
    vxlan.is_some_and(|v| v.contains(&InfoVxlan::CollectMetadata(true)) && v.contains(&InfoVxlan::Port(port)))
}

/// Creates (or repairs) the tunnel device `name`: VXLAN in collect-metadata
/// ("external") mode on UDP `port`, without learning (the datapath names
/// the remote node of every packet), without ARP, up. With `underlay_device`, its MTU is
/// the underlay's less the encapsulation overhead; without, the kernel's
/// default for a VXLAN device (1450) stays. A device of that name that is
/// not such a VXLAN device is replaced. Returns the device's ifindex, for
/// [`twill_abi::DatapathConfig::tunnel_ifindex`].
pub fn ensure_vxlan_device(name: &str, port: u16, underlay_device: Option<&str>) -> Result<u32, NetdevError> {
    let mut rtnl = open()?;
    let mtu = match underlay_device {
        Some(underlay) => {
            let link =
                link_message(&mut rtnl, underlay)?.ok_or_else(|| NetdevError::NoDevice(underlay.into()))?;
            link_mtu(&link).map(|mtu| mtu.saturating_sub(VXLAN_OVERHEAD))
        }
        None => None,
    };
    match link_message(&mut rtnl, name)? {
        Some(link) if is_metadata_vxlan(&link, port) => {}
        existing => {
            if existing.is_some() {
                tracing::warn!(
                    "{name} exists but is not a collect-metadata VXLAN device on port {port}: replacing it"
                );
                delete_device(name)?;
            }
            let mut message = LinkMessage::default();
            message.attributes.push(LinkAttribute::IfName(name.into()));
            message.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::CollectMetadata(true),
                    InfoVxlan::Port(port),
                    InfoVxlan::Learning(false),
                ])),
            ]));
            request(&mut rtnl, RouteNetlinkMessage::NewLink(message), NLM_F_CREATE | NLM_F_EXCL, || {
                format!("link add {name} type vxlan external dstport {port} nolearning")
            })?;
        }
    }
    let index = link_index(&mut rtnl, name)?;
    if let Some(mtu) = mtu {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes.push(LinkAttribute::Mtu(mtu));
        request(&mut rtnl, RouteNetlinkMessage::SetLink(message), 0, || {
            format!("link set {name} mtu {mtu}")
        })?;
    }
    set_addrgenmode_none(&mut rtnl, index, name)?;
    // Nothing answers ARP through the tunnel (the overlay program takes
    // only IPv4): what the node itself sends through it by a tunnel route
    // must go out without resolving a neighbour first.
    let mut message = LinkMessage::default();
    message.header.index = index;
    message.header.flags = LinkFlags::Up | LinkFlags::Noarp;
    message.header.change_mask = LinkFlags::Up | LinkFlags::Noarp;
    request(&mut rtnl, RouteNetlinkMessage::SetLink(message), 0, || format!("link set {name} arp off up"))?;
    Ok(index)
}

/// Removes the tunnel device. Idempotent.
pub fn delete_vxlan_device(name: &str) -> Result<(), NetdevError> {
    delete_device(name)
}

/// A native-routing route in the main table, tagged [`ROUTE_PROTOCOL`].
fn route_message(dst: Ipv4Addr, prefix_len: u8) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::Other(ROUTE_PROTOCOL);
    message.header.destination_prefix_length = prefix_len;
    message.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    message
}

/// `ip route replace DST/LEN via VIA proto 116`: native routing to another
/// node's pod CIDR, through that node's address. The kernel picks the
/// device from its route to `via` (which must be on a connected network).
pub fn replace_route(dst: Ipv4Addr, prefix_len: u8, via: Ipv4Addr) -> Result<(), NetdevError> {
    let mut message = route_message(dst, prefix_len);
    message.header.kind = RouteType::Unicast;
    message.header.scope = RouteScope::Universe;
    message.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(via)));
    request(&mut open()?, RouteNetlinkMessage::NewRoute(message), NLM_F_CREATE | NLM_F_REPLACE, || {
        format!("route replace {dst}/{prefix_len} via {via} proto {ROUTE_PROTOCOL}")
    })
}

/// `ip route replace DST/LEN encap ip id VNI dst NODE dev DEVICE src SOURCE
/// proto 116`: what the node itself sends to another node's pod CIDR in
/// tunnel mode. Endpoints' traffic is encapsulated by the datapath; the
/// node's own (health checks, replies to remote endpoints) never passes
/// an endpoint program, so the kernel's lightweight tunnel sets the key:
/// to `node`, with `vni` the sending node's identity (its node identity,
/// or remote-node), which is what the receiver's policy sees it as.
/// `source` is the address replies come back to (the node's router
/// address, which the peers' ipcache maps to this node).
pub fn replace_tunnel_route(
    dst: Ipv4Addr,
    prefix_len: u8,
    node: Ipv4Addr,
    source: Ipv4Addr,
    vni: u32,
    device: &str,
) -> Result<(), NetdevError> {
    let mut rtnl = open()?;
    let index = link_index(&mut rtnl, device)?;
    let mut message = route_message(dst, prefix_len);
    message.header.kind = RouteType::Unicast;
    message.header.scope = RouteScope::Link;
    message.attributes.push(RouteAttribute::Oif(index));
    message.attributes.push(RouteAttribute::PrefSource(RouteAddress::Inet(source)));
    message.attributes.push(RouteAttribute::EncapType(RouteLwEnCapType::Ip));
    message.attributes.push(RouteAttribute::Encap(vec![
        RouteLwTunnelEncap::Ip(RouteIpTunnel::Id(u64::from(vni))),
        RouteLwTunnelEncap::Ip(RouteIpTunnel::Destination(node)),
        RouteLwTunnelEncap::Ip(RouteIpTunnel::Ttl(64)),
    ]));
    request(&mut rtnl, RouteNetlinkMessage::NewRoute(message), NLM_F_CREATE | NLM_F_REPLACE, || {
        format!(
            "route replace {dst}/{prefix_len} encap ip id {vni} dst {node} dev {device} src {source} proto {ROUTE_PROTOCOL}"
        )
    })
}

/// Twill's tunnel routes ([`replace_tunnel_route`]) in the main table, as
/// (destination, prefix length, node, VNI), sorted.
pub fn list_tunnel_routes() -> Result<Vec<(Ipv4Addr, u8, Ipv4Addr, u32)>, NetdevError> {
    let mut out: Vec<(Ipv4Addr, u8, Ipv4Addr, u32)> = twill_routes()?
        .iter()
        .filter_map(|r| {
            let encap = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Encap(encap) => Some(encap),
                _ => None,
            })?;
            let node = encap.iter().find_map(|e| match e {
                RouteLwTunnelEncap::Ip(RouteIpTunnel::Destination(node)) => Some(*node),
                _ => None,
            })?;
            let vni = encap
                .iter()
                .find_map(|e| match e {
                    RouteLwTunnelEncap::Ip(RouteIpTunnel::Id(id)) => Some(*id as u32),
                    _ => None,
                })
                .unwrap_or(0);
            Some((route_destination(r)?, r.header.destination_prefix_length, node, vni))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Removes a route [`replace_route`] or [`replace_tunnel_route`] installed.
/// A missing route is not an error; a route to the same prefix that is not
/// Twill's is left alone.
pub fn delete_route(dst: Ipv4Addr, prefix_len: u8) -> Result<(), NetdevError> {
    let mut message = route_message(dst, prefix_len);
    message.header.scope = RouteScope::NoWhere;
    match open()?.execute(RouteNetlinkMessage::DelRoute(message), 0) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        Err(source) => Err(NetdevError::Netlink {
            operation: format!("route del {dst}/{prefix_len} proto {ROUTE_PROTOCOL}"),
            source,
        }),
    }
}

/// Every route of protocol [`ROUTE_PROTOCOL`] in the main table.
fn twill_routes() -> Result<Vec<RouteMessage>, NetdevError> {
    let mut request = RouteMessage::default();
    request.header.address_family = AddressFamily::Inet;
    let routes = open()?
        .dump(RouteNetlinkMessage::GetRoute(request))
        .map_err(|source| NetdevError::Netlink { operation: "-4 route show".into(), source })?;
    Ok(routes
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r)
                if r.header.table == RouteHeader::RT_TABLE_MAIN
                    && r.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL) =>
            {
                Some(r)
            }
            _ => None,
        })
        .collect())
}

fn route_destination(route: &RouteMessage) -> Option<Ipv4Addr> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
        _ => None,
    })
}

/// Twill's native-routing routes ([`replace_route`]) in the main table, as
/// (destination, prefix length, gateway), sorted.
pub fn list_routes_by_protocol() -> Result<Vec<(Ipv4Addr, u8, Ipv4Addr)>, NetdevError> {
    let mut out: Vec<(Ipv4Addr, u8, Ipv4Addr)> = twill_routes()?
        .iter()
        .filter_map(|r| {
            let via = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                _ => None,
            })?;
            Some((route_destination(r)?, r.header.destination_prefix_length, via))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Deletes `device`'s clsact qdisc, if it has one, with the cls_bpf
/// filters an agent attached before tcx: once the tcx links run, the qdisc
/// only holds the `ingress` slot a chained plugin (bandwidth) needs. Any
/// other qdisc in that slot (bandwidth's own `ingress`) is left alone.
pub fn remove_clsact(device: &str) -> Result<(), NetdevError> {
    use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
    let Some(index) = ifindex(device) else {
        return Ok(());
    };
    let mut rtnl = open()?;
    let mut query = TcMessage::default();
    query.header.index = index as i32;
    let qdiscs = rtnl
        .dump(RouteNetlinkMessage::GetQueueDiscipline(query))
        .map_err(|source| NetdevError::Netlink { operation: format!("qdisc show dev {device}"), source })?;
    let has_clsact = qdiscs.iter().any(|m| match m {
        RouteNetlinkMessage::NewQueueDiscipline(q) => {
            q.header.index == index as i32
                && q.header.parent == TcHandle::CLSACT
                && q.attributes.iter().any(|a| matches!(a, TcAttribute::Kind(k) if k == "clsact"))
        }
        _ => false,
    });
    if !has_clsact {
        return Ok(());
    }
    let mut message = TcMessage::default();
    message.header.index = index as i32;
    message.header.parent = TcHandle::CLSACT;
    message.header.handle = TcHandle { major: 0xffff, minor: 0 };
    match rtnl.execute(RouteNetlinkMessage::DelQueueDiscipline(message), 0) {
        Ok(()) => Ok(()),
        Err(e) if ifindex(device) != Some(index) => {
            tracing::debug!("qdisc del {device} clsact: {e} (device already gone)");
            Ok(())
        }
        Err(source) => {
            Err(NetdevError::Netlink { operation: format!("qdisc del dev {device} clsact"), source })
        }
    }
}

/// Whether `device` has a shaper a chained plugin put there: an `ingress`
/// qdisc (the reference bandwidth plugin's, for egressRate; Twill's own
/// programs are tcx links and need none) or a root qdisc other than a
/// veth's default `noqueue` (bandwidth's tbf, for ingressRate).
pub fn device_shaped(device: &str) -> Result<bool, NetdevError> {
    use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
    let Some(index) = ifindex(device) else {
        return Ok(false);
    };
    let mut query = TcMessage::default();
    query.header.index = index as i32;
    let qdiscs = open()?
        .dump(RouteNetlinkMessage::GetQueueDiscipline(query))
        .map_err(|source| NetdevError::Netlink { operation: format!("qdisc show dev {device}"), source })?;
    Ok(qdiscs.iter().any(|m| {
        let RouteNetlinkMessage::NewQueueDiscipline(q) = m else { return false };
        let kind = q.attributes.iter().find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.as_str()),
            _ => None,
        });
        q.header.index == index as i32
            && match (q.header.parent, kind) {
                (TcHandle::INGRESS, Some(kind)) => kind == "ingress",
                (TcHandle::ROOT, Some(kind)) => kind != "noqueue",
                _ => false,
            }
    }))
}

/// Calls `changed` from a thread of its own with the ifindex of each
/// device whose qdiscs change in the caller's network namespace (`None`
/// when events were lost and every device may have changed). The socket
/// is opened before this returns, so no change after it is missed.
pub fn watch_qdiscs(mut changed: impl FnMut(Option<u32>) + Send + 'static) -> Result<(), NetdevError> {
    let mut events = crate::netlink::TcEvents::open().map_err(|source| NetdevError::Socket { source })?;
    std::thread::Builder::new()
        .name("qdisc-watch".into())
        .spawn(move || loop {
            match events.next() {
                Ok(Some(devices)) => {
                    let mut seen = std::collections::BTreeSet::new();
                    for d in devices {
                        if seen.insert(d) {
                            changed(Some(d));
                        }
                    }
                }
                Ok(None) => changed(None),
                Err(e) => {
                    tracing::warn!("watching qdisc changes stopped: {e}");
                    return;
                }
            }
        })
        .map_err(|source| NetdevError::Socket { source })?;
    Ok(())
}

/// The name of the device with `index` in the caller's network namespace.
pub fn device_name(index: u32) -> Option<String> {
    let mut buffer = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer has the IF_NAMESIZE bytes if_indextoname writes.
    let name = unsafe { libc::if_indextoname(index, buffer.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    Some(unsafe { std::ffi::CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy().into_owned())
}

/// Turns IPv4 forwarding on for one endpoint host device: what
/// from_endpoint hands the stack for another endpoint of the node (a shaped
/// endpoint's traffic) is then forwarded, whatever the node's global
/// ip_forward says (the setting that counts is the ingress device's, and
/// only endpoint devices get it).
pub fn enable_forwarding(device: &str) -> Result<(), NetdevError> {
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{device}/forwarding"), "1")
}
