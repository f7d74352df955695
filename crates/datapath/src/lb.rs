//! The service programs: socket load balancing at the cgroup sock_addr
//! hooks (bpf/sock.c) and per-packet NodePort at the node's devices
//! (bpf/netdev.c). Both objects are loaded with the endpoint programs'
//! bpf root, so they share every pinned map (`twill_lb4_*`, the ipcache,
//! metrics, events, config) with them and with each other.
//!
//! Like the tc filters, nothing here depends on the agent process staying
//! up: the cgroup links are pinned under the bpf root, so a stopped or
//! restarting agent leaves socket load balancing running, and the next
//! agent swaps its programs into the pinned links.

use std::{
    fs::File,
    io,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap, MapData},
    programs::{links::FdLink, CgroupAttachMode, CgroupSockAddr, ProgramError},
    Ebpf, EbpfLoader,
};
use twill_abi::{CtKey, Lb4NatEntry};

use crate::{
    bpf_sys,
    lb_maps::{KernelLbMaps, KernelNetnsMap},
    loader::{load_programs, take_map, TcHook},
    maps::map_err,
    DatapathError,
};

/// The socket hooks, in attach order: the reverse hooks first, so a
/// socket translated by connect4 always finds recvmsg/getpeername ready.
pub(crate) const SOCK_PROGRAMS: [&str; 4] =
    ["sock_recvmsg4", "sock_getpeername4", "sock_connect4", "sock_sendmsg4"];

/// The NodePort hooks on a node device.
pub(crate) const NETDEV_HOOKS: [TcHook; 2] = [
    ("from_netdev", aya::programs::TcAttachType::Ingress, "ingress"),
    ("to_netdev", aya::programs::TcAttachType::Egress, "egress"),
];

/// Directory under the bpf root holding the pinned cgroup links.
const SOCK_LINKS_DIR: &str = "sock";

pub(crate) struct LbPrograms {
    pub(crate) sock: Ebpf,
    pub(crate) netdev: Ebpf,
    pub(crate) maps: KernelLbMaps,
    pub(crate) netns: KernelNetnsMap,
    pub(crate) nat: HashMap<MapData, CtKey, Lb4NatEntry>,
}

impl LbPrograms {
    pub(crate) fn load(root: &Path) -> Result<Self, DatapathError> {
        let mut sock = EbpfLoader::new().default_map_pin_directory(root).load(crate::SOCK_OBJECT)?;
        for name in SOCK_PROGRAMS {
            let program: &mut CgroupSockAddr = program_mut(&mut sock, name)?;
            program.load().map_err(|source| DatapathError::Program { name, source })?;
        }
        let mut netdev = EbpfLoader::new().default_map_pin_directory(root).load(crate::NETDEV_OBJECT)?;
        load_programs(&mut netdev, &NETDEV_HOOKS)?;

        let maglev = take_map(&mut sock, "twill_lb4_maglev")?;
        let maps = KernelLbMaps {
            services: hash(&mut sock, "twill_lb4_services")?,
            backends: hash(&mut sock, "twill_lb4_backends")?,
            reverse_nat: hash(&mut sock, "twill_lb4_reverse_nat")?,
            maglev: maglev.try_into().map_err(map_err("twill_lb4_maglev"))?,
            affinity_match: hash(&mut sock, "twill_lb_affinity_match")?,
        };
        let netns = KernelNetnsMap(hash(&mut sock, "twill_lb_netns")?);
        let nat = hash(&mut netdev, "twill_lb4_nat")?;
        Ok(Self { sock, netdev, maps, netns, nat })
    }

    /// Attaches the socket hooks to the cgroup v2 directory `cgroup`
    /// (every socket created by a process in it or below is balanced),
    /// with links pinned under `root`. Links already pinned there (by an
    /// earlier agent) on the same cgroup get the new programs with
    /// BPF_LINK_UPDATE, atomically: detaching and attaching again would
    /// let connects in between reach the frontend's address untranslated.
    /// Pinned links on another cgroup are replaced by new ones.
    pub(crate) fn attach_sock(&mut self, root: &Path, cgroup: &Path) -> Result<(), DatapathError> {
        let sock_error = |step: &'static str| {
            let cgroup = cgroup.display().to_string();
            move |source| DatapathError::Cgroup { cgroup, step, source }
        };
        let file = File::open(cgroup).map_err(sock_error("opening it"))?;
        let cgroup_id = file.metadata().map_err(sock_error("reading its id"))?.ino();
        let dir = root.join(SOCK_LINKS_DIR);
        std::fs::create_dir_all(&dir).map_err(sock_error("creating the link pin directory"))?;
        for name in SOCK_PROGRAMS {
            let pin = dir.join(name);
            let program: &mut CgroupSockAddr = program_mut(&mut self.sock, name)?;
            let program_fd = program.fd().map_err(|source| DatapathError::Program { name, source })?;
            match bpf_sys::obj_get(&pin) {
                Ok(link) => {
                    if bpf_sys::link_cgroup_id(link.as_fd()).map_err(sock_error("reading a pinned link"))?
                        == Some(cgroup_id)
                    {
                        bpf_sys::link_update(link.as_fd(), program_fd.as_fd())
                            .map_err(sock_error("replacing the program of a pinned link"))?;
                        continue;
                    }
                    // Pinned on another cgroup: unpinning detaches it once
                    // `link` (the last reference) closes below.
                    std::fs::remove_file(&pin).map_err(sock_error("removing a stale link pin"))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(sock_error("opening a pinned link")(e)),
            }
            // A cgroup bpf_link always coexists with other programs on the
            // cgroup (what BPF_F_ALLOW_MULTI is for bpf_prog_attach), and
            // BPF_LINK_CREATE refuses any flag: `Single` passes none.
            let link_id = program
                .attach(&file, CgroupAttachMode::Single)
                .map_err(|source| DatapathError::Program { name, source })?;
            let link =
                program.take_link(link_id).map_err(|source| DatapathError::Program { name, source })?;
            let link = FdLink::try_from(link).map_err(|source| DatapathError::Link { name, source })?;
            link.pin(&pin)
                .map_err(|source| DatapathError::Pin { path: pin.display().to_string(), source })?;
        }
        Ok(())
    }
}

/// Removes the pinned socket links under `root`, which detaches the hooks
/// from their cgroup. Idempotent.
pub(crate) fn detach_sock(root: &Path) -> Result<(), DatapathError> {
    let dir = root.join(SOCK_LINKS_DIR);
    for name in SOCK_PROGRAMS {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(DatapathError::Cgroup {
                    cgroup: dir.display().to_string(),
                    step: "unpinning",
                    source: e,
                })
            }
            _ => {}
        }
    }
    match std::fs::remove_dir(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(DatapathError::Cgroup {
            cgroup: dir.display().to_string(),
            step: "removing the pin directory",
            source: e,
        }),
        _ => Ok(()),
    }
}

fn hash<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, DatapathError> {
    take_map(ebpf, name).and_then(|m| HashMap::try_from(m).map_err(map_err(name)))
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut CgroupSockAddr, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::Program { name, source: ProgramError::NotLoaded })?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

/// Where cgroup v2 is mounted, from /proc/self/mountinfo: `/sys/fs/cgroup`
/// on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_in_mountinfo(&text)
}

/// The first cgroup2 mount point in mountinfo text. Each line is
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
fn cgroup2_in_mountinfo(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_mountinfo() {
        let text = "25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw\n\
                    31 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n\
                    32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n\
                    33 31 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        assert_eq!(cgroup2_in_mountinfo(text), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_in_mountinfo("25 30 0:23 / /sys rw - sysfs sysfs rw\n"), None);
        assert_eq!(
            cgroup2_in_mountinfo("1 2 0:1 / /a\\040b rw - cgroup2 none rw\n"),
            Some(PathBuf::from("/a b"))
        );
    }
}
