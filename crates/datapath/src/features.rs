//! What the running kernel offers, for `twill status` and for choosing
//! attach methods.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelFeatures {
    pub kernel_release: String,
    pub btf: bool,
    pub bpffs: bool,
    /// tcx links (6.6+): attachments that can be pinned and replaced atomically.
    pub tcx: bool,
    pub ring_buffer: bool,
    pub lpm_trie: bool,
    pub bpf_redirect_peer: bool,
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

fn at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

pub fn probe_features() -> KernelFeatures {
    let kernel_release = release();
    KernelFeatures {
        btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
        bpffs: Path::new("/sys/fs/bpf").exists(),
        tcx: at_least(&kernel_release, 6, 6),
        ring_buffer: at_least(&kernel_release, 5, 8),
        lpm_trie: at_least(&kernel_release, 4, 11),
        bpf_redirect_peer: at_least(&kernel_release, 5, 10),
        kernel_release,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_comparison() {
        assert!(super::at_least("6.18.44-fc", 6, 6));
        assert!(!super::at_least("5.15.0-91-generic", 6, 6));
        assert!(super::at_least("6.6.0", 6, 6));
    }
}
