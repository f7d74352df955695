//! When to collect lapsed conntrack entries, and the thread that does it.
//!
//! The schedule follows Cilium's dynamic interval: a sweep that removed a
//! large share of the map's capacity brings the next one closer, one that
//! found almost nothing to remove pushes it out. Twill starts at one
//! minute rather than Cilium's five because its map is smaller (262,144
//! entries shared by every endpoint), so a busy node fills it sooner.

use std::time::{Duration, Instant};

use twill_datapath::ctgc::{ConntrackSweeper, SweepStats};
use twill_metrics::{Counter, Histogram, Registry};

pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
pub const START_INTERVAL: Duration = Duration::from_secs(60);

/// `--conntrack-gc-interval`: fixed, or dynamic between MIN_INTERVAL and
/// the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcInterval {
    Fixed(Duration),
    Dynamic { max: Duration },
}

impl GcInterval {
    pub fn first(&self) -> Duration {
        match *self {
            GcInterval::Fixed(d) => d,
            GcInterval::Dynamic { max } => START_INTERVAL.min(max),
        }
    }

    /// The wait after a sweep that removed `deleted` entries of a map
    /// holding `capacity` (the fuller map's share decides, as Cilium's).
    pub fn next(&self, previous: Duration, deleted: u64, capacity: u64) -> Duration {
        let GcInterval::Dynamic { max } = *self else { return self.first() };
        if capacity == 0 {
            return previous;
        }
        let ratio = (deleted as f64 / capacity as f64).min(1.0);
        let next = if ratio > 0.25 {
            // Up to ten times sooner when nearly all of it had lapsed.
            previous.mul_f64(1.0 - ratio.min(0.9))
        } else if ratio < 0.05 {
            previous.mul_f64(1.5)
        } else {
            previous
        };
        let floor = MIN_INTERVAL.min(max);
        next.clamp(floor, max)
    }
}

/// "0" (dynamic), or a number with ms, s, m or h ("30s", "5m"); a bare number
/// is seconds.
pub fn parse_interval(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let millis = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(millis).map(Duration::from_millis)
}

#[derive(Clone)]
pub struct GcMetrics {
    runs: Counter,
    entries: Counter,
    duration: Histogram,
}

impl GcMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            runs: registry.counter(
                "twill_datapath_conntrack_gc_runs_total",
                "Conntrack garbage collection sweeps, by outcome",
                &["status"],
            ),
            entries: registry.counter(
                "twill_datapath_conntrack_gc_entries_total",
                "Conntrack and NodePort translation entries seen by sweeps: alive ones kept, lapsed ones deleted",
                &["map", "status"],
            ),
            duration: registry.histogram(
                "twill_datapath_conntrack_gc_duration_seconds",
                "Time one conntrack sweep took",
                &[],
                &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            ),
        }
    }

    fn record(&self, stats: &SweepStats, took: Duration) {
        self.runs.inc_by(&["completed"], 1.0);
        self.entries.inc_by(&["twill_ct", "alive"], stats.ct_alive as f64);
        self.entries.inc_by(&["twill_ct", "deleted"], stats.ct_deleted as f64);
        self.entries.inc_by(&["twill_lb4_nat", "alive"], stats.nat_alive as f64);
        self.entries.inc_by(&["twill_lb4_nat", "deleted"], stats.nat_deleted as f64);
        self.duration.observe(&[], took.as_secs_f64());
    }
}

/// Sweeps on its own thread with its own map handles, so a long walk
/// never holds the agent.
pub fn spawn(
    mut sweeper: ConntrackSweeper,
    interval: GcInterval,
    capacity: u64,
    metrics: GcMetrics,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("ct-gc".into()).spawn(move || {
        let mut wait = interval.first();
        loop {
            std::thread::sleep(wait);
            let start = Instant::now();
            match sweeper.sweep(twill_datapath::monotonic_ns()) {
                Ok(stats) => {
                    let took = start.elapsed();
                    metrics.record(&stats, took);
                    tracing::debug!(
                        deleted = stats.deleted(),
                        alive = stats.alive(),
                        ?took,
                        "conntrack sweep"
                    );
                    wait = interval.next(wait, stats.ct_deleted.max(stats.nat_deleted), capacity);
                }
                Err(e) => {
                    metrics.runs.inc_by(&["failed"], 1.0);
                    tracing::warn!("conntrack sweep: {e}");
                }
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(30 * 60);

    const CAP: u64 = 262_144;

    #[test]
    fn busy_maps_are_swept_sooner_and_quiet_ones_later() {
        let dynamic = GcInterval::Dynamic { max: DEFAULT_MAX_INTERVAL };
        let start = dynamic.first();
        assert_eq!(start, Duration::from_secs(60));
        // Half the capacity had lapsed: half the wait.
        assert_eq!(dynamic.next(start, CAP / 2, CAP), Duration::from_secs(30));
        // Nothing lapsed: 1.5 times the wait.
        assert_eq!(dynamic.next(start, 0, CAP), Duration::from_secs(90));
        // In between: unchanged.
        assert_eq!(dynamic.next(start, CAP / 10, CAP), start);
        // Never below the floor, never above the maximum.
        assert_eq!(dynamic.next(MIN_INTERVAL, CAP, CAP), MIN_INTERVAL);
        assert_eq!(dynamic.next(DEFAULT_MAX_INTERVAL, 0, CAP), DEFAULT_MAX_INTERVAL);
        let fixed = GcInterval::Fixed(Duration::from_secs(2));
        assert_eq!(fixed.next(Duration::from_secs(2), CAP, CAP), Duration::from_secs(2));
    }

    #[test]
    fn intervals_parse_as_cilium_writes_them() {
        assert_eq!(parse_interval("0"), Some(Duration::ZERO));
        assert_eq!(parse_interval("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_interval("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_interval("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse_interval("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_interval("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_interval("5 minutes"), None);
        assert_eq!(parse_interval("-1s"), None);
        assert_eq!(parse_interval(""), None);
    }

    proptest! {
        #[test]
        fn dynamic_interval_stays_in_bounds(prev in 1u64..100_000, deleted in 0u64..=CAP, max in 10u64..50_000) {
            let max = Duration::from_secs(max);
            let i = GcInterval::Dynamic { max };
            let next = i.next(Duration::from_secs(prev), deleted, CAP);
            prop_assert!(next <= max);
            prop_assert!(next >= MIN_INTERVAL.min(max));
            // More lapsed entries never mean a longer wait.
            let more = i.next(Duration::from_secs(prev), (deleted + CAP / 4).min(CAP), CAP);
            prop_assert!(more <= next);
        }
    }
}
