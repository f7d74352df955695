//! The service datapath's attachments: the socket hooks on the cgroup v2
//! tree (east-west translation for every process below it) and the
//! per-packet NodePort programs on the node's outside devices.

use std::path::PathBuf;

use tracing::info;
use twill_datapath::Datapath;

use crate::{
    config::Config,
    error::{AgentError, Result},
};

fn cgroup_root(config: &Config) -> Result<PathBuf> {
    match &config.cgroup_root {
        Some(root) => Ok(root.clone()),
        None => twill_datapath::cgroup2_mount().ok_or_else(|| {
            AgentError::Invalid(
                "no cgroup v2 hierarchy is mounted: mount one (mount -t cgroup2 none /sys/fs/cgroup) or pass --cgroup-root"
                    .into(),
            )
        }),
    }
}

/// Attaches (or re-attaches after a restart) every service hook.
pub fn attach(datapath: &mut Datapath, config: &Config) -> Result<()> {
    let root = cgroup_root(config)?;
    datapath.attach_sock(&root)?;
    info!(cgroup = %root.display(), "socket load balancing attached");
    for device in &config.devices {
        datapath.attach_netdev(device)?;
        info!(device = %device, "NodePort translation attached");
    }
    if !config.devices.is_empty() {
        // NodePort clients' packets are forwarded to endpoints after
        // translation; Cilium turns forwarding on for the same reason.
        std::fs::write("/proc/sys/net/ipv4/conf/all/forwarding", "1").map_err(|source| AgentError::Io {
            what: "enabling IPv4 forwarding for NodePort".into(),
            source,
        })?;
    }
    Ok(())
}

/// Removes the hooks (uninstall); returns what was removed, for the report.
pub fn detach(datapath: &mut Datapath, config: &Config) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    datapath.detach_sock()?;
    removed.push("socket load balancing hooks".to_string());
    for device in &config.devices {
        datapath.detach_netdev(device)?;
        removed.push(format!("NodePort programs on {device}"));
    }
    Ok(removed)
}
