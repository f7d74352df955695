//! Per-program cost: the kernel's run-time statistics (BPF_ENABLE_STATS)
//! for the bench agent's endpoint programs, as nanoseconds per packet.
//!
//! Other agents may be loaded on the machine at the same time (tests,
//! other benches), so programs are picked by the policy map they use: the
//! one pinned under this bench's bpf root.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use anyhow::Context;
use aya::{
    maps::MapInfo,
    programs::loaded_programs,
    sys::{enable_stats, Stats},
};

pub const PROGRAMS: [&str; 3] = ["from_endpoint", "to_endpoint", "from_overlay"];

/// Keeps the statistics on while alive.
pub struct StatsGuard(#[allow(dead_code)] std::os::fd::OwnedFd);

pub fn enable() -> anyhow::Result<StatsGuard> {
    Ok(StatsGuard(enable_stats(Stats::RunTime).context("enabling BPF run-time statistics")?))
}

/// (total run time in ns, run count) per program name.
pub type Snapshot = BTreeMap<&'static str, (u64, u64)>;

fn fdinfo_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim_start_matches(':').trim().parse().ok()))
        .unwrap_or(0)
}

pub fn snapshot(bpf_root: &Path) -> anyhow::Result<Snapshot> {
    let policy_map =
        MapInfo::from_pin(bpf_root.join("twill_policy")).context("the bench's pinned policy map")?.id();
    let mut out = Snapshot::new();
    for info in loaded_programs() {
        let Ok(info) = info else { continue };
        let Some(name) = PROGRAMS.iter().find(|n| info.name_as_str() == Some(n)) else { continue };
        if !info.map_ids().ok().flatten().is_some_and(|ids| ids.contains(&policy_map)) {
            continue;
        }
        let fd = info.fd().context("opening a program")?;
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))?;
        let entry = out.entry(*name).or_default();
        entry.0 += fdinfo_field(&text, "run_time_ns");
        entry.1 += fdinfo_field(&text, "run_cnt");
    }
    Ok(out)
}

/// ns per run of each program between two snapshots (None: it did not run).
pub fn per_packet(before: &Snapshot, after: &Snapshot) -> BTreeMap<&'static str, Option<f64>> {
    PROGRAMS
        .iter()
        .map(|name| {
            let (t0, c0) = before.get(name).copied().unwrap_or_default();
            let (t1, c1) = after.get(name).copied().unwrap_or_default();
            let runs = c1.saturating_sub(c0);
            (*name, (runs > 0).then(|| t1.saturating_sub(t0) as f64 / runs as f64))
        })
        .collect()
}
