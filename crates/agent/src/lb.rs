//! The service datapath's attachments: the socket hooks on the cgroup v2
//! tree (east-west translation for every process below it) and the
//! per-packet NodePort programs on the node's outside devices.

use std::path::PathBuf;

use tracing::info;
use twill_datapath::{netdev, Datapath};

use crate::{
    config::Config,
    error::{AgentError, Result},
};

/// The cgroup v2 hierarchy: the flag, else where it is mounted, else a
/// mount of our own in the run directory. `ip netns exec` replaces /sys
/// in the agent's mount namespace, so the system's mount can be out of
/// sight; Cilium mounts its own for the same reason.
fn cgroup_root(config: &Config) -> Result<PathBuf> {
    if let Some(root) = &config.cgroup_root {
        return Ok(root.clone());
    }
    if let Some(mounted) = twill_datapath::cgroup2_mount() {
        return Ok(mounted);
    }
    let run_dir = config
        .api_socket
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::config::DEFAULT_RUN_DIR.into());
    let own = run_dir.join("cgroupv2");
    let io = |what: &str, source: std::io::Error| AgentError::Io {
        what: format!("{what} {} (no cgroup v2 hierarchy is mounted; pass --cgroup-root)", own.display()),
        source,
    };
    std::fs::create_dir_all(&own).map_err(|e| io("creating", e))?;
    let target = std::ffi::CString::new(own.as_os_str().as_encoded_bytes()).expect("a path without NUL");
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let rc =
        unsafe { libc::mount(c"none".as_ptr(), target.as_ptr(), c"cgroup2".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(io("mounting cgroup2 on", std::io::Error::last_os_error()));
    }
    info!(path = %own.display(), "mounted the cgroup v2 hierarchy for socket load balancing");
    Ok(own)
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
    // A device an earlier run was given and this one is not keeps that
    // run's filters (they belong to the device, not the agent), and with
    // them NodePort and host routing the user has turned off: removed.
    // Endpoint devices never carry them.
    for device in netdev::list_devices()? {
        if !config.devices.contains(&device) && !device.starts_with(crate::names::HOST_DEVICE_PREFIX) {
            // A device without a clsact qdisc (most of them) answers
            // with an error rather than "not found": nothing to remove.
            if let Err(e) = datapath.detach_netdev(&device) {
                tracing::debug!(device = %device, "no NodePort filters to remove: {e}");
            }
        }
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
