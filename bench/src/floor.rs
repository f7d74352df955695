//! The floor under the datapath rows: two Twill endpoints with a program
//! that only delivers (bpf/floor.c: the receiver's MACs, then
//! bpf_redirect_peer) run ahead of Twill's from_endpoint on both host-side
//! devices. What it leaves between Twill and the bare veth pair is the
//! hook and the redirect themselves; what Twill loses beyond it is its
//! program's own work.

use anyhow::Context;
use aya::{
    programs::{links::LinkOrder, tc::TcAttachOptions, SchedClassifier, TcAttachType},
    Ebpf, EbpfLoader,
};
use twill_api::Endpoint;

use crate::{sh, NODE_NETNS};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor.o"));

/// Attached while alive; dropping it detaches both programs, and Twill's
/// from_endpoint, never detached, runs again.
pub struct Floor(#[allow(dead_code)] Vec<Ebpf>);

/// A host-side device in the node's namespace: its ifindex and MAC.
fn device(name: &str) -> anyhow::Result<(u32, [u8; 6])> {
    let out = sh(&["ip", "-n", NODE_NETNS, "-j", "link", "show", "dev", name])?;
    let link: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("ip link show {name}"))?;
    let ifindex = link[0]["ifindex"].as_u64().with_context(|| format!("{name}: no ifindex"))? as u32;
    let mac = parse_mac(link[0]["address"].as_str().with_context(|| format!("{name}: no address"))?)?;
    Ok((ifindex, mac))
}

fn parse_mac(text: &str) -> anyhow::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.split(':').collect();
    anyhow::ensure!(parts.len() == 6, "not a MAC address: {text:?}");
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16).with_context(|| format!("not a MAC address: {text:?}"))?;
    }
    Ok(mac)
}

impl Floor {
    /// Between endpoints `a` and `b`, both ways.
    pub fn attach(a: &Endpoint, b: &Endpoint) -> anyhow::Result<Self> {
        let mut loaded = Vec::new();
        for (from, to) in [(a, b), (b, a)] {
            let (peer_ifindex, peer_host_mac) = device(&to.host_device)?;
            let peer_mac = parse_mac(&to.mac)?;
            let dev = from.host_device.clone();
            let ebpf = crate::cluster::in_netns(NODE_NETNS, move || {
                let mut ebpf = EbpfLoader::new()
                    .override_global("PEER_IFINDEX", &peer_ifindex, true)
                    .override_global("PEER_MAC", &peer_mac, true)
                    .override_global("PEER_HOST_MAC", &peer_host_mac, true)
                    .load(OBJECT)
                    .context("loading the floor program")?;
                let program: &mut SchedClassifier =
                    ebpf.program_mut("floor_redirect").context("floor_redirect in the object")?.try_into()?;
                program.load()?;
                // First in the chain: its redirect ends it before Twill's.
                program
                    .attach_with_options(
                        &dev,
                        TcAttachType::Ingress,
                        TcAttachOptions::TcxOrder(LinkOrder::first()),
                    )
                    .with_context(|| format!("attaching the floor program to {dev}"))?;
                Ok(ebpf)
            })?;
            loaded.push(ebpf);
        }
        Ok(Self(loaded))
    }
}
