//! What the running kernel offers, probed by asking it (creating a map of
//! each type, loading a program of each type), for `twill status`.

use std::path::Path;

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, is_program_supported, BpfHelper},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelFeatures {
    pub kernel_release: String,
    /// Kernel BTF (CO-RE, BTF-defined maps).
    pub btf: bool,
    pub bpffs: bool,
    pub tc_programs: bool,
    pub ring_buffer: bool,
    pub lpm_trie: bool,
    pub lru_hash: bool,
    pub bpf_redirect_peer: bool,
    pub cgroup_sock_addr: bool,
    pub xdp: bool,
}

pub fn probe_features() -> KernelFeatures {
    let map = |t| is_map_supported(t).unwrap_or(false);
    let program = |t| is_program_supported(t).unwrap_or(false);
    KernelFeatures {
        kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
        bpffs: Path::new("/sys/fs/bpf").exists(),
        tc_programs: program(ProgramType::SchedClassifier),
        ring_buffer: map(MapType::RingBuf),
        lpm_trie: map(MapType::LpmTrie),
        lru_hash: map(MapType::LruHash),
        bpf_redirect_peer: is_helper_supported(
            ProgramType::SchedClassifier,
            BpfHelper::BPF_FUNC_redirect_peer,
        )
        .unwrap_or(false),
        cgroup_sock_addr: program(ProgramType::CgroupSockAddr),
        xdp: program(ProgramType::Xdp),
    }
}
