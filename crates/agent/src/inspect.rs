//! Read-only views of the kernel maps for `twill bpf ...`: what the
//! datapath holds right now, in the API's terms.

use std::{collections::BTreeMap, net::Ipv4Addr};

use twill_api as api;
use twill_datapath::{netdev, Datapath, PolicyEntry};
use twill_policy::{model::protocol_name, resolve::Universe};

use crate::error::Result;

fn direction_name(direction: u8) -> &'static str {
    if direction == twill_abi::DIR_INGRESS {
        "ingress"
    } else {
        "egress"
    }
}

pub fn ipcache(datapath: &Datapath) -> Result<Vec<api::IpcacheEntry>> {
    Ok(datapath
        .ipcache_entries()?
        .into_iter()
        .map(|e| api::IpcacheEntry {
            cidr: format!("{}/{}", e.ip, e.prefix_len),
            identity: e.identity,
            tunnel_endpoint: e.tunnel_endpoint.map(|ip| ip.to_string()),
        })
        .collect())
}

pub fn endpoints(datapath: &Datapath) -> Result<Vec<api::BpfEndpoint>> {
    let mut out: Vec<api::BpfEndpoint> = datapath
        .endpoint_entries()?
        .into_iter()
        .map(|(ip, info)| api::BpfEndpoint {
            ipv4: ip.to_string(),
            endpoint_id: info.endpoint_id,
            identity: info.identity,
            ifindex: info.ifindex,
            mac: netdev::format_mac(&info.mac),
            host_mac: netdev::format_mac(&info.host_mac),
        })
        .collect();
    out.sort_by_key(|e| e.endpoint_id);
    Ok(out)
}

pub fn metrics(datapath: &Datapath) -> Result<Vec<api::MetricsRow>> {
    Ok(datapath
        .metrics()?
        .into_iter()
        .map(|m| api::MetricsRow {
            direction: if m.direction == twill_abi::METRIC_DIR_INGRESS { "ingress" } else { "egress" }.into(),
            reason: m.reason,
            description: if m.reason == 0 {
                "Forwarded".into()
            } else {
                twill_abi::drop_reason_text(m.reason).into()
            },
            packets: m.packets,
            bytes: m.bytes,
        })
        .collect())
}

/// TCP flags seen on a connection, one letter each, as `cilium bpf ct list`.
fn tcp_flag_letters(flags: u8) -> String {
    use twill_numbers::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};
    [(TCP_SYN, 'S'), (TCP_ACK, 'A'), (TCP_FIN, 'F'), (TCP_RST, 'R'), (TCP_PSH, 'P')]
        .iter()
        .filter(|(bit, _)| u16::from(flags) & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

pub fn conntrack(datapath: &Datapath) -> Result<Vec<api::CtRow>> {
    use twill_abi::{CT_ORIGIN_A, CT_PAIR, CT_SIDE_A, CT_SIDE_B, DIR_EGRESS, DIR_INGRESS};
    let now = twill_datapath::monotonic_ns();
    let addr = |a: u32| Ipv4Addr::from(u32::from_be(a));
    let mut rows: Vec<api::CtRow> = datapath
        .ct_entries()?
        .into_iter()
        // Entries of an earlier key layout (per-direction scopes) are
        // never matched again and lapse; they are not shown.
        .filter(|(k, e)| e.expires > now && matches!(k.scope, CT_SIDE_A | CT_SIDE_B | CT_PAIR))
        .flat_map(|(k, e)| {
            let a = format!("{}:{}", addr(k.saddr), k.sport);
            let b = format!("{}:{}", addr(k.daddr), k.dport);
            let opener = if e.origin == CT_ORIGIN_A { CT_SIDE_A } else { CT_SIDE_B };
            let (source, destination) = if opener == CT_SIDE_A { (a, b) } else { (b, a) };
            // The endpoint opened the connection if it stands at the end
            // the opening packet came from; a pair entry is both ends'.
            let directions = match k.scope {
                CT_PAIR => vec![DIR_EGRESS, DIR_INGRESS],
                scope if scope == opener => vec![DIR_EGRESS],
                _ => vec![DIR_INGRESS],
            };
            directions
                .into_iter()
                .map(move |direction| (k, e, source.clone(), destination.clone(), direction))
        })
        .map(|(k, e, source, destination, direction)| api::CtRow {
            protocol: protocol_name(k.protocol).into(),
            source,
            destination,
            scope: direction_name(direction).into(),
            packets: e.packets,
            bytes: e.bytes,
            tcp_flags: tcp_flag_letters(e.tcp_flags),
            closing: e.flags & twill_abi::CT_FLAG_CLOSING != 0,
            expires_in_seconds: (e.expires - now) / 1_000_000_000,
        })
        .collect();
    rows.sort_by(|a, b| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)));
    Ok(rows)
}

/// The port column of a policy entry: ANY, a port, or a range.
fn port_text(entry: &PolicyEntry) -> String {
    if entry.l4_prefix <= 8 {
        return "ANY".to_string();
    }
    let width = 1u32 << (24 - entry.l4_prefix as u32);
    if width == 1 {
        entry.port.to_string()
    } else {
        format!("{}-{}", entry.port, entry.port as u32 + width - 1)
    }
}

/// One endpoint's policy map entries, verdicts from the kernel, the rules
/// behind each from the resolver (`origins`).
pub fn policy_entries(
    datapath: &Datapath,
    endpoint_id: u16,
    universe: &Universe,
    origins: &BTreeMap<PolicyEntry, Vec<String>>,
) -> Result<Vec<api::BpfPolicyEntry>> {
    let mut entries = Vec::new();
    for (entry, action) in
        datapath.policy_entries()?.into_iter().filter(|(e, _)| e.endpoint_id == endpoint_id)
    {
        let labels = match entry.identity {
            0 => vec!["(any)".to_string()],
            n => universe.get(n).map(|k| k.labels.to_strings()).unwrap_or_else(|| vec!["(unknown)".into()]),
        };
        entries.push(api::BpfPolicyEntry {
            direction: direction_name(entry.direction).into(),
            identity: entry.identity,
            labels,
            protocol: protocol_name(entry.protocol).into(),
            port: port_text(&entry),
            verdict: if action.deny { "deny" } else { "allow" }.into(),
            rules: origins.get(&entry).cloned().unwrap_or_default(),
            proxy_port: action.proxy_port,
        });
    }
    Ok(entries)
}

/// `twill bpf lb list`: every frontend with its backends by slot.
pub fn load_balancer(maps: &dyn twill_datapath::LbMaps) -> Result<Vec<api::BpfLbFrontend>> {
    let services = maps.services()?;
    let backends: BTreeMap<u32, twill_abi::Lb4Backend> = maps.backends()?.into_iter().collect();
    let maglev: BTreeMap<u32, usize> = maps.maglev()?.into_iter().map(|(id, t)| (id, t.len())).collect();
    let slots: BTreeMap<twill_abi::Lb4Key, twill_abi::Lb4Service> = services.into_iter().collect();
    let mut out = Vec::new();
    for (key, master) in slots.iter().filter(|(k, _)| k.backend_slot == 0) {
        let backends = (1..=master.count)
            .map(|slot| {
                let id = slots.get(&twill_abi::Lb4Key { backend_slot: slot, ..*key }).map(|s| s.backend_id);
                match id.and_then(|id| backends.get(&id).map(|b| (id, b))) {
                    Some((id, b)) => {
                        format!("{id} {}:{}", Ipv4Addr::from(u32::from_be(b.address)), u16::from_be(b.port))
                    }
                    None => format!("slot {slot}: missing"),
                }
            })
            .collect();
        out.push(api::BpfLbFrontend {
            frontend: format!(
                "{}:{}/{}",
                Ipv4Addr::from(u32::from_be(key.address)),
                u16::from_be(key.dport),
                protocol_name(key.proto)
            ),
            rev_nat_index: master.rev_nat_index,
            algorithm: if master.flags & twill_abi::LB_F_MAGLEV != 0 { "maglev" } else { "random" }.into(),
            node_port: master.flags & twill_abi::LB_F_NODEPORT != 0,
            affinity_timeout: master.affinity_timeout,
            backends,
            maglev_table_size: maglev.get(&master.rev_nat_index).copied().unwrap_or(0),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_column_shows_any_single_ports_and_ranges() {
        let e = |port, l4_prefix| PolicyEntry {
            endpoint_id: 1,
            direction: 0,
            identity: 0,
            protocol: 6,
            port,
            l4_prefix,
        };
        assert_eq!(port_text(&e(0, 8)), "ANY");
        assert_eq!(port_text(&e(80, 24)), "80");
        assert_eq!(port_text(&e(8080, 21)), "8080-8087");
        assert_eq!(tcp_flag_letters(0x12), "SA");
    }
}
