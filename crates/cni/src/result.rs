//! ADD's result in the format of the version in force, and what CHECK
//! reads back from a previous result.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::{
    config::Dns,
    error::{code, CniError},
    version::Version,
};

/// What an attachment consists of, whatever the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub host_interface: String,
    pub host_mac: String,
    pub interface: String,
    pub mac: String,
    /// The runtime's namespace path (CNI_NETNS).
    pub sandbox: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

/// interfaces[0] is the host side, interfaces[1] the container side;
/// the IP names the container side by index.
pub fn to_json(a: &Attachment, dns: Option<&Dns>, version: Version) -> Value {
    let mut ip = json!({
        "address": format!("{}/{}", a.address, a.prefix_len),
        "gateway": a.gateway.to_string(),
        "interface": 1,
    });
    if version.ips_carry_family() {
        ip["version"] = "4".into();
    }
    let mut out = json!({
        "cniVersion": version.as_str(),
        "interfaces": [
            {"name": a.host_interface, "mac": a.host_mac},
            {"name": a.interface, "mac": a.mac, "sandbox": a.sandbox},
        ],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": a.gateway.to_string()}],
    });
    let dns = dns.cloned().unwrap_or_default();
    let mut d = json!({});
    if !dns.nameservers.is_empty() {
        d["nameservers"] = dns.nameservers.into();
    }
    if let Some(domain) = dns.domain {
        d["domain"] = domain.into();
    }
    if !dns.search.is_empty() {
        d["search"] = dns.search.into();
    }
    if !dns.options.is_empty() {
        d["options"] = dns.options.into();
    }
    out["dns"] = d;
    out
}

/// The IPv4 addresses (with prefix) a previous result gives `ifname`
/// (or no interface): what CHECK must find there.
pub fn prev_addresses(prev: &Value, ifname: &str) -> Result<Vec<(Ipv4Addr, u8)>, CniError> {
    let bad = |what: &str| {
        CniError::new(code::INVALID_CONFIG, format!("network config field \"prevResult\": {what}"))
    };
    let interfaces = prev.get("interfaces").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for (i, ip) in prev.get("ips").and_then(Value::as_array).cloned().unwrap_or_default().iter().enumerate() {
        let address = ip
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("ips[{i}].address is missing")))?;
        if let Some(index) = ip.get("interface").and_then(Value::as_u64) {
            let name = interfaces.get(index as usize).and_then(|i| i.get("name")).and_then(Value::as_str);
            if name != Some(ifname) {
                continue;
            }
        }
        let Some((addr, len)) = address.split_once('/') else {
            return Err(bad(&format!("ips[{i}].address {address:?} is not ADDRESS/PREFIX")));
        };
        // IPv6 entries belong to other plugins' results; Twill is IPv4 only.
        if addr.contains(':') {
            continue;
        }
        let parsed = addr.parse::<Ipv4Addr>().ok().zip(len.parse::<u8>().ok().filter(|l| *l <= 32));
        out.push(parsed.ok_or_else(|| bad(&format!("ips[{i}].address {address:?} is not ADDRESS/PREFIX")))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment() -> Attachment {
        Attachment {
            host_interface: "twep3".into(),
            host_mac: "02:77:0a:c8:00:03".into(),
            interface: "net1".into(),
            mac: "02:74:0a:c8:00:03".into(),
            sandbox: "/proc/42/ns/net".into(),
            address: "10.200.0.3".parse().unwrap(),
            prefix_len: 32,
            gateway: "10.200.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn results_follow_the_version_in_force() {
        let old = to_json(&attachment(), None, Version::V0_3_1);
        assert_eq!(old["cniVersion"], "0.3.1");
        assert_eq!(old["ips"][0]["version"], "4");
        let new = to_json(&attachment(), None, Version::V1_1_0);
        assert_eq!(new["cniVersion"], "1.1.0");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["ips"][0]["address"], "10.200.0.3/32");
        assert_eq!(new["ips"][0]["interface"], 1);
        assert_eq!(new["interfaces"][1]["name"], "net1");
        assert_eq!(new["interfaces"][1]["sandbox"], "/proc/42/ns/net");
        assert_eq!(new["routes"][0], json!({"dst": "0.0.0.0/0", "gw": "10.200.0.1"}));
    }

    #[test]
    fn dns_is_passed_through() {
        let dns = Dns {
            nameservers: vec!["10.0.0.10".into()],
            domain: Some("cluster.local".into()),
            ..Default::default()
        };
        let r = to_json(&attachment(), Some(&dns), Version::V1_0_0);
        assert_eq!(r["dns"], json!({"nameservers": ["10.0.0.10"], "domain": "cluster.local"}));
    }

    #[test]
    fn a_previous_result_yields_the_interfaces_addresses() {
        let prev = to_json(&attachment(), None, Version::V0_4_0);
        assert_eq!(prev_addresses(&prev, "net1").unwrap(), vec![("10.200.0.3".parse().unwrap(), 32)]);
        assert!(prev_addresses(&prev, "eth0").unwrap().is_empty());
        let bad = json!({"ips": [{"address": "10.0.0.1"}]});
        assert!(prev_addresses(&bad, "eth0").unwrap_err().msg.contains("ips[0].address"));
    }
}
