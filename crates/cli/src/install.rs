//! `twill install cni` and the CNI half of `twill uninstall`: the plugin
//! binary and a conflist that points it at this agent.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::json;
use twill_api::{Client, Request, Status};

pub const CONFLIST: &str = "10-twill.conflist";
pub const PLUGIN: &str = "twill-cni";
const DEFAULT_QUEUE_DIR: &str = "/var/lib/twill/cni-queue";

#[derive(clap::Args, Clone)]
pub struct CniDirs {
    /// Directory runtimes run CNI plugins from.
    #[arg(long, default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// Directory runtimes read CNI network configs from.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
}

#[derive(clap::Args)]
pub struct InstallCni {
    #[command(flatten)]
    pub dirs: CniDirs,
    /// The twill-cni binary to install (default: beside this `twill`).
    #[arg(long)]
    pub plugin: Option<PathBuf>,
    /// containerd's socket, to read labels of containers started without
    /// an orchestrator (`ctr run --cni --label app=web`).
    #[arg(long)]
    pub containerd_address: Option<PathBuf>,
    /// containerd namespace of those containers.
    #[arg(long, default_value = "default")]
    pub containerd_namespace: String,
}

/// The conflist for an agent on `socket`. The queue directory must be the
/// one the agent drains: asked of the agent when it runs.
pub fn conflist(socket: &Path, queue_dir: &str, containerd: Option<(&Path, &str)>) -> serde_json::Value {
    let mut plugin = json!({
        "type": PLUGIN,
        "agentSocket": socket.display().to_string(),
        "queueDir": queue_dir,
    });
    if let Some((address, namespace)) = containerd {
        plugin["containerd"] = json!({"address": address.display().to_string(), "namespace": namespace});
    }
    json!({
        "cniVersion": "1.0.0",
        "cniVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        "name": "twill",
        "plugins": [plugin],
    })
}

fn absolute(flag: &str, path: &Path) -> anyhow::Result<()> {
    if !path.is_absolute() {
        bail!("--{flag} {}: must be an absolute path", path.display());
    }
    Ok(())
}

pub fn install(socket: &Path, args: InstallCni) -> anyhow::Result<()> {
    absolute("bin-dir", &args.dirs.bin_dir)?;
    absolute("conf-dir", &args.dirs.conf_dir)?;
    let source = match args.plugin {
        Some(p) => p,
        None => std::env::current_exe().context("finding the twill binary")?.with_file_name(PLUGIN),
    };
    if !source.is_file() {
        bail!(
            "{}: no twill-cni binary there; build it (cargo build --bins) or pass --plugin PATH",
            source.display()
        );
    }
    let queue_dir = match Client::new(socket).call::<Status>(&Request::Status) {
        Ok(status) if !status.cni_queue_dir.is_empty() => status.cni_queue_dir,
        Ok(_) => DEFAULT_QUEUE_DIR.to_string(),
        Err(e) => {
            eprintln!("note: {e}; using the default queue directory {DEFAULT_QUEUE_DIR}");
            DEFAULT_QUEUE_DIR.to_string()
        }
    };
    let containerd = args.containerd_address.as_deref().map(|a| (a, args.containerd_namespace.as_str()));
    if let Some((a, _)) = containerd {
        absolute("containerd-address", a)?;
    }
    let conf = conflist(socket, &queue_dir, containerd);
    for dir in [&args.dirs.bin_dir, &args.dirs.conf_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Copied under a temporary name and renamed: a runtime running the
    // plugin meanwhile sees the old binary or the new one, never half.
    let target = args.dirs.bin_dir.join(PLUGIN);
    let temporary = args.dirs.bin_dir.join(format!(".{PLUGIN}.new"));
    std::fs::copy(&source, &temporary)
        .with_context(|| format!("copying {} to {}", source.display(), temporary.display()))?;
    std::fs::rename(&temporary, &target).with_context(|| format!("installing {}", target.display()))?;
    let conf_path = args.dirs.conf_dir.join(CONFLIST);
    let temporary = args.dirs.conf_dir.join(format!(".{CONFLIST}.new"));
    std::fs::write(&temporary, serde_json::to_string_pretty(&conf)? + "\n")
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, &conf_path).with_context(|| format!("installing {}", conf_path.display()))?;
    println!("Installed {}", target.display());
    println!("Installed {}", conf_path.display());
    Ok(())
}

/// Removes what `install` wrote for the agent on `socket`; returns what
/// it removed. A conflist for another agent (or none) leaves both files
/// alone: several agents may share a machine, each uninstalled on its own.
pub fn uninstall(socket: &Path, dirs: &CniDirs) -> anyhow::Result<Vec<String>> {
    let conf_path = dirs.conf_dir.join(CONFLIST);
    let ours = std::fs::read(&conf_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|c| c["plugins"][0]["agentSocket"].as_str() == Some(&socket.display().to_string()));
    if !ours {
        return Ok(vec![]);
    }
    let mut removed = Vec::new();
    for path in [conf_path, dirs.bin_dir.join(PLUGIN)] {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conflist_points_the_plugin_at_the_agent() {
        let c = conflist(
            Path::new("/run/a/twill.sock"),
            "/var/lib/a/cni-queue",
            Some((Path::new("/run/c.sock"), "k")),
        );
        let p = &c["plugins"][0];
        assert_eq!(p["type"], "twill-cni");
        assert_eq!(p["agentSocket"], "/run/a/twill.sock");
        assert_eq!(p["queueDir"], "/var/lib/a/cni-queue");
        assert_eq!(p["containerd"]["namespace"], "k");
        assert_eq!(c["name"], "twill");
    }
}
