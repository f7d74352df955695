//! What interrupted operations leave behind, decided purely from what the
//! store keeps and what the kernel and IPAM hold, so the decision is
//! unit-tested without a kernel. The agent gathers the observations and
//! removes what this plan names.

use std::{collections::BTreeSet, net::Ipv4Addr};

use crate::{names, records::EndpointRecord};

/// What exists on this node, whoever made it.
#[derive(Debug, Default)]
pub struct Observed {
    /// Network namespaces with this node's prefix.
    pub netns: Vec<String>,
    /// Link names in the agent's namespace.
    pub devices: Vec<String>,
    /// Devices this agent attached programs to.
    pub attached: Vec<String>,
    /// Addresses in the endpoint map.
    pub endpoint_map: Vec<Ipv4Addr>,
    /// IPAM allocations: address and owner.
    pub addresses: Vec<(Ipv4Addr, String)>,
    /// Identity references: identity and owner.
    pub identity_refs: Vec<(u32, String)>,
}

/// What to remove.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Garbage {
    pub netns: Vec<String>,
    pub devices: Vec<String>,
    pub detach: Vec<String>,
    pub endpoint_map: Vec<Ipv4Addr>,
    pub addresses: Vec<(Ipv4Addr, String)>,
    pub identity_refs: Vec<(u32, String)>,
}

/// Everything of this node's that no endpoint in `keep` accounts for.
/// Other nodes' namespaces, devices and references are never touched.
pub fn garbage(node: &str, keep: &[EndpointRecord], observed: &Observed) -> Garbage {
    let netns: BTreeSet<&str> = keep.iter().map(|r| r.netns.as_str()).collect();
    let devices: BTreeSet<&str> = keep.iter().map(|r| r.host_device.as_str()).collect();
    let ips: BTreeSet<Ipv4Addr> = keep.iter().map(|r| r.ip).collect();
    let mut owners: BTreeSet<String> = keep.iter().map(|r| r.owner(node)).collect();
    // The node's reference to its own identity belongs to no endpoint; in
    // cluster mode it goes with the node's session, never as garbage.
    owners.insert(crate::cluster::node_identity_owner(node));
    let netns_prefix = names::netns_prefix(node);
    let owner_prefix = format!("{node}/");
    let ours = |device: &str| {
        device.strip_prefix(names::HOST_DEVICE_PREFIX).is_some_and(|n| n.parse::<u32>().is_ok())
    };
    Garbage {
        netns: observed
            .netns
            .iter()
            .filter(|n| n.starts_with(&netns_prefix) && !netns.contains(n.as_str()))
            .cloned()
            .collect(),
        devices: observed
            .devices
            .iter()
            .filter(|d| ours(d) && !devices.contains(d.as_str()))
            .cloned()
            .collect(),
        detach: observed.attached.iter().filter(|d| !devices.contains(d.as_str())).cloned().collect(),
        endpoint_map: observed.endpoint_map.iter().filter(|ip| !ips.contains(ip)).copied().collect(),
        addresses: observed.addresses.iter().filter(|(_, owner)| !owners.contains(owner)).cloned().collect(),
        identity_refs: observed
            .identity_refs
            .iter()
            .filter(|(_, owner)| owner.starts_with(&owner_prefix) && !owners.contains(owner))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use twill_identity::LabelSet;

    use super::*;

    fn record(node: &str, id: u32, ip: &str) -> EndpointRecord {
        let ip: Ipv4Addr = ip.parse().unwrap();
        EndpointRecord {
            id,
            name: format!("ep{id}"),
            namespace: "default".into(),
            labels: LabelSet::default(),
            ip,
            identity: 256,
            netns: names::netns_name(node, "default", &format!("ep{id}")),
            host_device: names::host_device(id),
            mac: names::endpoint_mac(ip),
            host_mac: names::host_mac(ip),
            ports: vec![],
            attachment: None,
        }
    }

    #[test]
    fn only_this_nodes_leftovers_are_garbage() {
        let keep = vec![record("n1", 1, "10.0.0.2")];
        let leftover = record("n1", 2, "10.0.0.3");
        let other_node = record("n2", 2, "10.1.0.3");
        let observed = Observed {
            netns: vec![
                keep[0].netns.clone(),
                leftover.netns.clone(),
                other_node.netns.clone(),
                "user-ns".into(),
            ],
            devices: vec!["twep1".into(), "twep2".into(), "eth0".into(), "twepx".into()],
            attached: vec!["twep1".into(), "twep2".into()],
            endpoint_map: vec![keep[0].ip, leftover.ip],
            addresses: vec![(keep[0].ip, "n1/1".into()), (leftover.ip, "n1/2".into())],
            identity_refs: vec![
                (256, "n1/1".into()),
                (256, "n1/2".into()),
                (256, "n2/2".into()),
                (300, "n1/node".into()),
            ],
        };
        let g = garbage("n1", &keep, &observed);
        assert_eq!(
            g,
            Garbage {
                netns: vec![leftover.netns.clone()],
                devices: vec!["twep2".into()],
                detach: vec!["twep2".into()],
                endpoint_map: vec![leftover.ip],
                addresses: vec![(leftover.ip, "n1/2".into())],
                identity_refs: vec![(256, "n1/2".into())],
            }
        );
        // With nothing kept (uninstall), everything of n1 goes, nothing of n2.
        let g = garbage("n1", &[], &observed);
        assert_eq!(g.netns.len(), 2);
        assert_eq!(g.identity_refs.len(), 2);
    }
}
