//! A tiny Prometheus registry: counter, gauge and histogram families with
//! fixed label names, rendered in the text exposition format 0.0.4.
//!
//! Families are created through a [`Registry`] and handed out as cheap,
//! cloneable handles ([`Counter`], [`Gauge`], [`Histogram`]). Every method
//! that records a value takes the label values in the order the label names
//! were declared; passing the wrong number of values is a programming error
//! and panics with the metric's name.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

/// Default histogram buckets (seconds), the same as Prometheus client libraries.
pub const DEFAULT_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A set of metric families that renders to one `/metrics` page.
#[derive(Default)]
pub struct Registry {
    /// Keyed by metric name, so rendering order is deterministic.
    families: Mutex<BTreeMap<String, Family>>,
}

enum Family {
    Counter(Arc<Scalar>),
    Gauge(Arc<Scalar>),
    Histogram(Arc<Hist>),
}

struct Desc {
    name: String,
    help: String,
    labels: Vec<String>,
}

/// Counter or gauge family: one `f64` per label-value tuple.
struct Scalar {
    desc: Desc,
    values: Mutex<BTreeMap<Vec<String>, f64>>,
}

struct Hist {
    desc: Desc,
    /// Finite, strictly increasing upper bounds; `+Inf` is implicit.
    bounds: Vec<f64>,
    series: Mutex<BTreeMap<Vec<String>, HistSeries>>,
}

#[derive(Clone, Default)]
struct HistSeries {
    /// Non-cumulative count per bucket; the last slot is the `+Inf` bucket.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Handle to a counter family. Counters only go up.
#[derive(Clone)]
pub struct Counter(Arc<Scalar>);

/// Handle to a gauge family. Gauges are set to arbitrary values.
#[derive(Clone)]
pub struct Gauge(Arc<Scalar>);

/// Handle to a histogram family with fixed buckets.
#[derive(Clone)]
pub struct Histogram(Arc<Hist>);

/// Locks a mutex, ignoring poisoning: metrics stay usable after a panic
/// elsewhere, and every critical section here leaves the data consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a counter family. `name` must end in `_total`.
    ///
    /// # Panics
    /// On an invalid or already registered name, invalid label names, or a
    /// name without the `_total` suffix.
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> Counter {
        assert!(name.ends_with("_total"), "counter {name:?}: counter names must end in _total");
        let scalar = Arc::new(Scalar::new(Desc::new(name, help, labels)));
        self.register(name, Family::Counter(scalar.clone()));
        Counter(scalar)
    }

    /// Registers a gauge family.
    ///
    /// # Panics
    /// On an invalid or already registered name, or invalid label names.
    pub fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> Gauge {
        let scalar = Arc::new(Scalar::new(Desc::new(name, help, labels)));
        self.register(name, Family::Gauge(scalar.clone()));
        Gauge(scalar)
    }

    /// Registers a histogram family with the given bucket upper bounds
    /// (finite, strictly increasing; `+Inf` is added automatically).
    ///
    /// # Panics
    /// On an invalid or already registered name, invalid label names (`le`
    /// is reserved), or invalid buckets.
    pub fn histogram(&self, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> Histogram {
        let desc = Desc::new(name, help, labels);
        assert!(!labels.contains(&"le"), "histogram {name:?}: label name \"le\" is reserved");
        assert!(
            buckets.iter().all(|b| b.is_finite()) && buckets.windows(2).all(|w| w[0] < w[1]),
            "histogram {name:?}: buckets must be finite and strictly increasing"
        );
        let hist = Arc::new(Hist { desc, bounds: buckets.to_vec(), series: Mutex::new(BTreeMap::new()) });
        if labels.is_empty() {
            // Like the Go client: a label-less series exists from the start.
            lock(&hist.series).insert(Vec::new(), hist.empty_series());
        }
        self.register(name, Family::Histogram(hist.clone()));
        Histogram(hist)
    }

    fn register(&self, name: &str, family: Family) {
        let mut families = lock(&self.families);
        assert!(!families.contains_key(name), "metric {name:?} is already registered");
        families.insert(name.to_owned(), family);
    }

    /// Renders every family in the Prometheus text format 0.0.4: families
    /// sorted by name, samples sorted by label values.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for family in lock(&self.families).values() {
            match family {
                Family::Counter(s) => s.render(&mut out, "counter"),
                Family::Gauge(s) => s.render(&mut out, "gauge"),
                Family::Histogram(h) => h.render(&mut out),
            }
        }
        out
    }
}

impl Desc {
    fn new(name: &str, help: &str, labels: &[&str]) -> Self {
        assert!(valid_metric_name(name), "invalid metric name {name:?}");
        for (i, label) in labels.iter().enumerate() {
            assert!(valid_label_name(label), "metric {name:?}: invalid label name {label:?}");
            assert!(!labels[..i].contains(label), "metric {name:?}: duplicate label name {label:?}");
        }
        Self {
            name: name.to_owned(),
            help: help.to_owned(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    /// Turns label values into a map key, checking their number.
    fn key(&self, values: &[&str]) -> Vec<String> {
        assert_eq!(
            values.len(),
            self.labels.len(),
            "metric {:?}: expected label values for {:?}, got {values:?}",
            self.name,
            self.labels
        );
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    fn header(&self, out: &mut String, kind: &str) {
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(&self.help));
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
    }

    /// Writes `{a="x",b="y"}` (plus an optional trailing pair such as `le`),
    /// or nothing when there are no labels at all.
    fn labels(&self, out: &mut String, values: &[String], extra: Option<(&str, &str)>) {
        let pairs =
            self.labels.iter().map(String::as_str).zip(values.iter().map(String::as_str)).chain(extra);
        let mut first = true;
        for (name, value) in pairs {
            out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(out, "{name}=\"{}\"", escape_label_value(value));
        }
        if !first {
            out.push('}');
        }
    }
}

impl Scalar {
    fn new(desc: Desc) -> Self {
        let mut values = BTreeMap::new();
        if desc.labels.is_empty() {
            values.insert(Vec::new(), 0.0);
        }
        Self { desc, values: Mutex::new(values) }
    }

    fn update(&self, labels: &[&str], f: impl FnOnce(&mut f64)) {
        let key = self.desc.key(labels);
        f(lock(&self.values).entry(key).or_insert(0.0));
    }

    fn get(&self, labels: &[&str]) -> f64 {
        let key = self.desc.key(labels);
        lock(&self.values).get(&key).copied().unwrap_or(0.0)
    }

    fn render(&self, out: &mut String, kind: &str) {
        self.desc.header(out, kind);
        for (values, v) in lock(&self.values).iter() {
            out.push_str(&self.desc.name);
            self.desc.labels(out, values, None);
            let _ = writeln!(out, " {}", format_value(*v));
        }
    }
}

impl Counter {
    /// Adds 1 to the series with these label values.
    pub fn inc(&self, labels: &[&str]) {
        self.inc_by(labels, 1.0);
    }

    /// Adds `v` (must be >= 0) to the series. `inc_by(labels, 0.0)` makes a
    /// series visible at 0 before anything is counted.
    pub fn inc_by(&self, labels: &[&str], v: f64) {
        debug_assert!(v >= 0.0, "counter {:?}: cannot add {v}", self.0.desc.name);
        if v >= 0.0 {
            self.0.update(labels, |x| *x += v);
        }
    }

    /// Current value of a series (0 if it does not exist yet).
    pub fn get(&self, labels: &[&str]) -> f64 {
        self.0.get(labels)
    }
}

impl Gauge {
    pub fn set(&self, labels: &[&str], v: f64) {
        self.0.update(labels, |x| *x = v);
    }

    /// Adds `v` (may be negative).
    pub fn add(&self, labels: &[&str], v: f64) {
        self.0.update(labels, |x| *x += v);
    }

    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1.0);
    }

    pub fn dec(&self, labels: &[&str]) {
        self.add(labels, -1.0);
    }

    /// Current value of a series (0 if it does not exist).
    pub fn get(&self, labels: &[&str]) -> f64 {
        self.0.get(labels)
    }

    /// Removes one series, e.g. for an object that no longer exists.
    pub fn remove(&self, labels: &[&str]) {
        let key = self.0.desc.key(labels);
        lock(&self.0.values).remove(&key);
    }

    /// Removes every labelled series (a label-less gauge is reset to 0).
    /// Refreshers call this before setting the current set of series.
    pub fn clear(&self) {
        let mut values = lock(&self.0.values);
        values.clear();
        if self.0.desc.labels.is_empty() {
            values.insert(Vec::new(), 0.0);
        }
    }
}

impl Hist {
    fn empty_series(&self) -> HistSeries {
        HistSeries { buckets: vec![0; self.bounds.len() + 1], ..HistSeries::default() }
    }

    fn render(&self, out: &mut String) {
        let d = &self.desc;
        d.header(out, "histogram");
        for (values, s) in lock(&self.series).iter() {
            let mut cumulative = 0;
            let bounds = self.bounds.iter().map(|b| format_value(*b));
            for (le, n) in bounds.chain(["+Inf".to_owned()]).zip(&s.buckets) {
                cumulative += n;
                let _ = write!(out, "{}_bucket", d.name);
                d.labels(out, values, Some(("le", &le)));
                let _ = writeln!(out, " {cumulative}");
            }
            let _ = write!(out, "{}_sum", d.name);
            d.labels(out, values, None);
            let _ = writeln!(out, " {}", format_value(s.sum));
            let _ = write!(out, "{}_count", d.name);
            d.labels(out, values, None);
            let _ = writeln!(out, " {}", s.count);
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, labels: &[&str], v: f64) {
        let h = &self.0;
        let key = h.desc.key(labels);
        // First bucket whose upper bound is >= v; NaN ends up in +Inf.
        let bucket = h.bounds.iter().position(|b| v <= *b).unwrap_or(h.bounds.len());
        let mut series = lock(&h.series);
        let s = series.entry(key).or_insert_with(|| h.empty_series());
        s.buckets[bucket] += 1;
        s.sum += v;
        s.count += 1;
    }

    /// Number of observations of a series.
    pub fn count(&self, labels: &[&str]) -> u64 {
        let key = self.0.desc.key(labels);
        lock(&self.0.series).get(&key).map_or(0, |s| s.count)
    }

    /// Sum of the observations of a series.
    pub fn sum(&self, labels: &[&str]) -> f64 {
        let key = self.0.desc.key(labels);
        lock(&self.0.series).get(&key).map_or(0.0, |s| s.sum)
    }
}

/// Sample values as Prometheus writes them: `+Inf`, `-Inf`, `NaN`, else
/// the shortest decimal form (`1`, `0.25`).
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and newline only.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_all_kinds_exactly() {
        let r = Registry::new();
        let c = r.counter("twill_packets_total", "Packets seen", &["dir", "proto"]);
        let g = r.gauge("twill_endpoints", "Endpoints by state", &["state"]);
        let h = r.histogram("twill_latency_seconds", "Latency", &["op"], &[0.1, 1.0]);
        let plain = r.gauge("twill_up", "Whether the agent is up", &[]);
        // Registered in non-alphabetical order on purpose.
        let _empty = r.counter("twill_aaa_total", "No samples yet", &["x"]);

        c.inc(&["tx", "udp"]);
        c.inc(&["rx", "tcp"]);
        c.inc_by(&["rx", "tcp"], 2.0);
        g.set(&["ready"], 3.0);
        g.set(&["a\\b\"c\nd"], 0.5);
        h.observe(&["get"], 0.05);
        h.observe(&["get"], 0.5);
        h.observe(&["get"], 7.0);
        plain.set(&[], 1.0);

        let expected = "\
# HELP twill_aaa_total No samples yet
# TYPE twill_aaa_total counter
# HELP twill_endpoints Endpoints by state
# TYPE twill_endpoints gauge
twill_endpoints{state=\"a\\\\b\\\"c\\nd\"} 0.5
twill_endpoints{state=\"ready\"} 3
# HELP twill_latency_seconds Latency
# TYPE twill_latency_seconds histogram
twill_latency_seconds_bucket{op=\"get\",le=\"0.1\"} 1
twill_latency_seconds_bucket{op=\"get\",le=\"1\"} 2
twill_latency_seconds_bucket{op=\"get\",le=\"+Inf\"} 3
twill_latency_seconds_sum{op=\"get\"} 7.55
twill_latency_seconds_count{op=\"get\"} 3
# HELP twill_packets_total Packets seen
# TYPE twill_packets_total counter
twill_packets_total{dir=\"rx\",proto=\"tcp\"} 3
twill_packets_total{dir=\"tx\",proto=\"udp\"} 1
# HELP twill_up Whether the agent is up
# TYPE twill_up gauge
twill_up 1
";
        assert_eq!(r.render(), expected);
        assert_eq!(c.get(&["rx", "tcp"]), 3.0);
        assert_eq!(h.count(&["get"]), 3);
        assert_eq!(h.sum(&["get"]), 7.55);
    }

    #[test]
    fn label_less_families_start_at_zero() {
        let r = Registry::new();
        r.counter("a_total", "A \\ help\nline two", &[]);
        r.histogram("b_seconds", "B", &[], &[1.0]);
        assert_eq!(
            r.render(),
            "\
# HELP a_total A \\\\ help\\nline two
# TYPE a_total counter
a_total 0
# HELP b_seconds B
# TYPE b_seconds histogram
b_seconds_bucket{le=\"1\"} 0
b_seconds_bucket{le=\"+Inf\"} 0
b_seconds_sum 0
b_seconds_count 0
"
        );
    }

    #[test]
    fn special_values_and_bucket_edges() {
        let r = Registry::new();
        let g = r.gauge("g", "G", &["k"]);
        g.set(&["inf"], f64::INFINITY);
        g.set(&["nan"], f64::NAN);
        g.set(&["neg"], f64::NEG_INFINITY);
        assert_eq!(
            r.render(),
            "# HELP g G\n# TYPE g gauge\ng{k=\"inf\"} +Inf\ng{k=\"nan\"} NaN\ng{k=\"neg\"} -Inf\n"
        );

        let r = Registry::new();
        let h = r.histogram("h", "H", &[], &[0.5, 1.0]);
        h.observe(&[], 0.5); // upper bounds are inclusive
        h.observe(&[], 1.0);
        assert!(r.render().contains("h_bucket{le=\"0.5\"} 1\nh_bucket{le=\"1\"} 2\n"));
    }

    #[test]
    fn gauge_set_add_remove_clear() {
        let r = Registry::new();
        let g = r.gauge("g", "G", &["k"]);
        g.set(&["a"], 2.0);
        g.inc(&["a"]);
        g.dec(&["b"]);
        g.add(&["a"], 0.5);
        assert_eq!((g.get(&["a"]), g.get(&["b"])), (3.5, -1.0));
        g.remove(&["b"]);
        assert_eq!(r.render(), "# HELP g G\n# TYPE g gauge\ng{k=\"a\"} 3.5\n");
        g.clear();
        assert_eq!(r.render(), "# HELP g G\n# TYPE g gauge\n");
    }

    #[test]
    #[should_panic(expected = "expected label values")]
    fn wrong_label_count_panics() {
        Registry::new().counter("x_total", "X", &["a", "b"]).inc(&["only-one"]);
    }

    #[test]
    #[should_panic(expected = "must end in _total")]
    fn counter_without_total_suffix_panics() {
        Registry::new().counter("x", "X", &[]);
    }

    #[test]
    #[should_panic(expected = "already registered")]
    fn duplicate_names_panic() {
        let r = Registry::new();
        r.gauge("x", "X", &[]);
        r.gauge("x", "X", &[]);
    }

    #[test]
    fn name_validation() {
        assert!(valid_metric_name("hubble_flows_processed_total"));
        assert!(valid_metric_name("a:b_c1"));
        assert!(!valid_metric_name("1abc"));
        assert!(!valid_metric_name("a-b"));
        assert!(!valid_metric_name(""));
        assert!(valid_label_name("le"));
        assert!(!valid_label_name("__name"));
        assert!(!valid_label_name("a:b"));
    }
}
