//! Network plumbing around the eBPF programs: network namespaces, veth
//! pairs, addresses, routes and neighbours, through iproute2.
//!
//! Each endpoint costs two `ip -batch` runs (one in the agent's namespace,
//! one in the endpoint's), so plumbing takes a few milliseconds whatever
//! the number of endpoints.

use std::{
    ffi::CString,
    io::Write,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
};

use serde::Deserialize;

/// The device that holds the node's router address: one end of a veth
/// pair, as Cilium's cilium_host/cilium_net (the kernels Twill targets
/// need not have the dummy driver).
pub const HOST_DEVICE: &str = "twill_host";
const HOST_DEVICE_PEER: &str = "twill_net";
/// Interface name of an endpoint inside its namespace.
pub const ENDPOINT_DEVICE: &str = "eth0";

#[derive(Debug, thiserror::Error)]
#[error("ip {what}: {reason}")]
pub struct NetdevError {
    pub what: String,
    pub reason: String,
}

fn run_ip(netns: Option<&str>, args: &[&str], batch: Option<&str>) -> Result<String, NetdevError> {
    let mut command = Command::new("ip");
    if let Some(ns) = netns {
        command.args(["-n", ns]);
    }
    command.args(args);
    command.stdin(if batch.is_some() { Stdio::piped() } else { Stdio::null() });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let what = match (netns, batch) {
        (_, Some(b)) => format!("batch in {} [{}]", netns.unwrap_or("host"), b.trim().replace('\n', "; ")),
        (Some(ns), None) => format!("-n {ns} {}", args.join(" ")),
        (None, None) => args.join(" "),
    };
    let mut child = command.spawn().map_err(|e| NetdevError {
        what: what.clone(),
        reason: format!("cannot run ip (install iproute2): {e}"),
    })?;
    if let Some(batch) = batch {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(batch.as_bytes())
            .map_err(|e| NetdevError { what: what.clone(), reason: e.to_string() })?;
    }
    let output =
        child.wait_with_output().map_err(|e| NetdevError { what: what.clone(), reason: e.to_string() })?;
    if !output.status.success() {
        let reason = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(NetdevError { what, reason });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The ifindex of `device` in the caller's network namespace.
pub fn ifindex(device: &str) -> Option<u32> {
    let name = CString::new(device).ok()?;
    // SAFETY: if_nametoindex reads a valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

pub fn netns_exists(netns: &str) -> bool {
    Path::new("/run/netns").join(netns).exists()
}

/// Network namespace names under /run/netns.
pub fn list_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[derive(Deserialize)]
struct IpLink {
    ifname: String,
}

/// Device names in the caller's network namespace.
pub fn list_devices() -> Result<Vec<String>, NetdevError> {
    let text = run_ip(None, &["-j", "link", "show"], None)?;
    let links: Vec<IpLink> = serde_json::from_str(&text)
        .map_err(|e| NetdevError { what: "-j link show".into(), reason: e.to_string() })?;
    Ok(links.into_iter().map(|l| l.ifname).collect())
}

#[derive(Deserialize)]
struct IpAddrInfo {
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    local: Option<String>,
    family: Option<String>,
}

/// IPv4 addresses configured in the caller's namespace, loopback excluded.
pub fn local_ipv4_addresses() -> Result<Vec<Ipv4Addr>, NetdevError> {
    let text = run_ip(None, &["-j", "-4", "addr", "show"], None)?;
    let links: Vec<IpAddrInfo> = serde_json::from_str(&text)
        .map_err(|e| NetdevError { what: "-j addr show".into(), reason: e.to_string() })?;
    Ok(links
        .into_iter()
        .flat_map(|l| l.addr_info)
        .filter(|a| a.family.as_deref() == Some("inet"))
        .filter_map(|a| a.local?.parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect())
}

fn write_sysctl(path: &str, value: &str) -> Result<(), NetdevError> {
    std::fs::write(path, value)
        .map_err(|e| NetdevError { what: format!("sysctl {path}"), reason: e.to_string() })
}

/// Creates (or repairs) the device holding the router address.
pub fn ensure_host_device(router: Ipv4Addr) -> Result<(), NetdevError> {
    if ifindex(HOST_DEVICE).is_none() {
        let add = ["link", "add", HOST_DEVICE, "type", "veth", "peer", "name", HOST_DEVICE_PEER];
        run_ip(None, &add, None)?;
    }
    let batch = format!(
        "addr replace {router}/32 dev {HOST_DEVICE}\n\
         link set dev {HOST_DEVICE} addrgenmode none\n\
         link set dev {HOST_DEVICE_PEER} addrgenmode none\n\
         link set {HOST_DEVICE} up\n\
         link set {HOST_DEVICE_PEER} up\n"
    );
    run_ip(None, &["-batch", "-"], Some(&batch))?;
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
    let EndpointPlumbing { netns, host_device: dev, ip, router, .. } = *p;
    let host_mac = format_mac(&p.host_mac);
    let ep_mac = format_mac(&p.endpoint_mac);
    run_ip(None, &["netns", "add", netns], None)?;
    let host_side = format!(
        "link add {dev} address {host_mac} type veth peer name {ENDPOINT_DEVICE} address {ep_mac} netns {netns}\n\
         link set dev {dev} addrgenmode none\n\
         link set {dev} up\n\
         route replace {ip}/32 dev {dev} src {router}\n\
         neigh replace {ip} lladdr {ep_mac} dev {dev} nud permanent\n"
    );
    run_ip(None, &["-batch", "-"], Some(&host_side))?;
    // Traffic from an endpoint arrives on its own device, but replies the
    // host sends may leave through another route: strict reverse-path
    // filtering would drop them.
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter"), "0")?;
    let endpoint_side = format!(
        "link set lo up\n\
         link set dev {ENDPOINT_DEVICE} addrgenmode none\n\
         addr add {ip}/32 dev {ENDPOINT_DEVICE}\n\
         link set {ENDPOINT_DEVICE} up\n\
         route add {router}/32 dev {ENDPOINT_DEVICE} scope link\n\
         route add default via {router} dev {ENDPOINT_DEVICE}\n\
         neigh replace {router} lladdr {host_mac} dev {ENDPOINT_DEVICE} nud permanent\n"
    );
    run_ip(Some(netns), &["-batch", "-"], Some(&endpoint_side))?;
    Ok(())
}

fn delete_device(device: &str) -> Result<(), NetdevError> {
    if ifindex(device).is_none() {
        return Ok(());
    }
    match run_ip(None, &["link", "del", device], None) {
        Ok(_) => Ok(()),
        Err(e) if ifindex(device).is_none() => {
            tracing::debug!("{e} (device already gone)");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Removes an endpoint's veth pair and namespace. Idempotent.
pub fn delete_endpoint(netns: &str, host_device: &str) -> Result<(), NetdevError> {
    delete_device(host_device)?;
    if netns_exists(netns) {
        run_ip(None, &["netns", "del", netns], None)?;
    }
    Ok(())
}

/// Whether an endpoint's plumbing is all there (used when restoring).
pub fn endpoint_present(netns: &str, host_device: &str) -> bool {
    netns_exists(netns) && ifindex(host_device).is_some()
}

/// Removes a network namespace by name. Idempotent.
pub fn delete_netns(netns: &str) -> Result<(), NetdevError> {
    if netns_exists(netns) {
        run_ip(None, &["netns", "del", netns], None)?;
    }
    Ok(())
}

/// Removes a device in the caller's namespace (its veth peer goes too).
/// Idempotent.
pub fn delete_link(device: &str) -> Result<(), NetdevError> {
    delete_device(device)
}
