//! Policy resolution in-process: 1,000 CiliumNetworkPolicies (generated
//! as YAML and read by the real parser) against 3,000 endpoint
//! identities, resolved for one endpoint with `twill_policy::resolve`.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use twill_identity::{Label, LabelSet};
use twill_policy::{
    parse_policies,
    resolve::{resolve, EndpointPolicy, IdentityKind, KnownIdentity, Subject, Universe},
    Rule,
};

use crate::{fmt_duration, median_duration, thousands, Row};

const NAMESPACES: usize = 30;
const APPS_PER_NAMESPACE: usize = 25;
const TIERS: [&str; 4] = ["frontend", "backend", "db", "cache"];
const TEAMS: usize = 10;
const IDENTITIES: usize = NAMESPACES * APPS_PER_NAMESPACE * TIERS.len();
const POLICIES: usize = 1_000;
const FIRST_IDENTITY: u32 = 256;
const PORTS: [u16; 10] = [80, 443, 8080, 8443, 9090, 5432, 6379, 3306, 9100, 15090];
const PARSE_RUNS: usize = 3;
const COLD_RUNS: usize = 50;
const WARM_RUNS: usize = 500;
/// Distinct peer selectors {app, tier} in one namespace: each change
/// brings a selector the cache has not seen.
const CHANGE_RUNS: usize = APPS_PER_NAMESPACE * TIERS.len();
/// Cilium's published figure for resolving one endpoint's policy.
const CILIUM_MS: f64 = 2.0;

/// Deterministic xorshift64*: the same rule set every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Identity `i`: namespace i/100, app (i%100)/4, tier i%4, with the labels
/// the agent derives for an endpoint (its own, its namespace's name and
/// the namespace's labels).
fn identity_labels(i: usize) -> LabelSet {
    let ns = i / (APPS_PER_NAMESPACE * TIERS.len());
    let app = (i / TIERS.len()) % APPS_PER_NAMESPACE;
    let tier = TIERS[i % TIERS.len()];
    let env = if ns.is_multiple_of(3) { "staging" } else { "prod" };
    let ns_label = |k: &str, v: &str| Label::new("k8s", &format!("io.cilium.k8s.namespace.labels.{k}"), v);
    LabelSet::from_labels([
        Label::new("k8s", "app", &format!("svc-{app}")),
        Label::new("k8s", "tier", tier),
        Label::new("k8s", "io.kubernetes.pod.namespace", &format!("ns-{ns}")),
        Label::new("k8s", "io.cilium.k8s.policy.serviceaccount", &format!("svc-{app}")),
        ns_label("kubernetes.io/metadata.name", &format!("ns-{ns}")),
        ns_label("team", &format!("team-{}", ns % TEAMS)),
        ns_label("env", env),
    ])
}

fn identities() -> Vec<KnownIdentity> {
    let mut all: Vec<KnownIdentity> = twill_identity::RESERVED
        .iter()
        .map(|(id, name)| KnownIdentity {
            id: *id,
            labels: LabelSet::from_labels([Label::new("reserved", name, "")]),
            kind: IdentityKind::Reserved,
        })
        .collect();
    all.extend((0..IDENTITIES).map(|i| KnownIdentity {
        id: FIRST_IDENTITY + i as u32,
        labels: identity_labels(i),
        kind: IdentityKind::Endpoint,
    }));
    all
}

fn ports_yaml(out: &mut String, rng: &mut Rng) {
    out.push_str("    toPorts:\n    - ports:\n");
    let first = rng.below(PORTS.len());
    for j in 0..1 + rng.below(3) {
        let port = PORTS[(first + j) % PORTS.len()];
        let _ = writeln!(out, "      - port: \"{port}\"\n        protocol: TCP");
    }
    if rng.below(4) == 0 {
        out.push_str("      - port: \"8000\"\n        endPort: 8007\n        protocol: TCP\n");
    }
}

/// One CiliumNetworkPolicy. Its subject and peers each select a handful of
/// identities: one app (4 tiers), one app and tier, one tier or a whole
/// namespace; peers in the same namespace, another namespace, or every
/// namespace of a team.
fn policy_yaml(k: usize, rng: &mut Rng, out: &mut String) {
    let ns = rng.below(NAMESPACES);
    let app = |rng: &mut Rng| format!("svc-{}", rng.below(APPS_PER_NAMESPACE));
    let tier = |rng: &mut Rng| TIERS[rng.below(TIERS.len())];
    let _ = write!(
        out,
        "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: rule-{k}\n  \
         namespace: ns-{ns}\nspec:\n  endpointSelector:\n"
    );
    let kind = k % 10;
    match kind {
        0..=5 | 9 => {
            let _ = writeln!(out, "    matchLabels:\n      app: {}", app(rng));
        }
        6 => {
            let _ = writeln!(out, "    matchLabels:\n      app: {}\n      tier: {}", app(rng), tier(rng));
        }
        7 => {
            let _ = writeln!(out, "    matchLabels:\n      tier: {}", tier(rng));
        }
        _ => out.push_str("    {}\n"),
    }
    if kind == 9 {
        let _ = writeln!(
            out,
            "  egress:\n  - toEndpoints:\n    - matchLabels:\n        app: {}\n        tier: db",
            app(rng)
        );
        ports_yaml(out, rng);
        out.push_str("  - toEntities:\n    - kube-apiserver\n");
        return;
    }
    out.push_str("  ingress:\n  - fromEndpoints:\n");
    match kind {
        0..=4 => {
            let _ = writeln!(out, "    - matchLabels:\n        app: {}", app(rng));
        }
        5 => {
            let _ = writeln!(
                out,
                "    - matchLabels:\n        app: {}\n        tier: {}\n    - matchLabels:\n        app: {}",
                app(rng),
                tier(rng),
                app(rng)
            );
        }
        6 => {
            let _ = writeln!(
                out,
                "    - matchLabels:\n        app: {}\n        k8s:io.kubernetes.pod.namespace: ns-{}",
                app(rng),
                rng.below(NAMESPACES)
            );
        }
        7 => {
            let _ = writeln!(
                out,
                "    - matchLabels:\n        app: {}\n        \
                 io.cilium.k8s.namespace.labels.team: team-{}\n      matchExpressions:\n      - key: \
                 io.kubernetes.pod.namespace\n        operator: Exists",
                app(rng),
                rng.below(TEAMS)
            );
        }
        _ => {
            let _ = writeln!(out, "    - matchLabels:\n        app: {}\n        tier: frontend", app(rng));
        }
    }
    ports_yaml(out, rng);
}

fn rule_set() -> String {
    let mut rng = Rng(0x7457_696c_6c21);
    let mut out = String::new();
    for k in 0..POLICIES {
        policy_yaml(k, &mut rng, &mut out);
    }
    out
}

/// A replacement for a rule of the subject's policy: same subject, a new
/// peer {app, tier} and port.
fn changed_policy(namespace: &str, subject: &LabelSet, n: usize) -> String {
    let app = subject.iter().find(|l| l.key == "app").map(|l| l.value.clone()).unwrap_or_default();
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: changed\n  namespace: \
         {namespace}\nspec:\n  endpointSelector:\n    matchLabels:\n      app: {app}\n  ingress:\n  - \
         fromEndpoints:\n    - matchLabels:\n        app: svc-{}\n        tier: {}\n    toPorts:\n    - \
         ports:\n      - port: \"{}\"\n        protocol: TCP\n",
        n / TIERS.len(),
        TIERS[n % TIERS.len()],
        20_000 + n
    )
}

fn resolve_one(rules: &[Rule], universe: &Universe, labels: &LabelSet) -> EndpointPolicy {
    resolve(rules, universe, &Subject { labels, named_ports: &[] }, &|_| Vec::new())
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

pub fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let yaml = rule_set();
    let mut parse_times = Vec::new();
    let mut policies = Vec::new();
    for _ in 0..PARSE_RUNS {
        let (t, parsed) = time(|| parse_policies("bench.yaml", &yaml));
        policies = parsed.map_err(|errors| {
            let first: Vec<String> = errors.iter().take(3).map(ToString::to_string).collect();
            anyhow::anyhow!("generated policies do not parse: {}", first.join("; "))
        })?;
        parse_times.push(t);
    }
    let rules: Vec<Rule> = policies.iter().flat_map(|p| p.rules.iter().cloned()).collect();
    if rules.len() != POLICIES {
        bail!("expected {POLICIES} rules, parsed {}", rules.len());
    }

    let known = identities();
    // The endpoint resolved: the one most rules select (ties: the lowest).
    let subject_index = (0..IDENTITIES)
        .max_by_key(|i| {
            let labels = identity_labels(*i);
            (rules.iter().filter(|r| r.subject.matches(&labels)).count(), std::cmp::Reverse(*i))
        })
        .context("no identities")?;
    let labels = identity_labels(subject_index);
    let selecting = rules.iter().filter(|r| r.subject.matches(&labels)).count();

    let mut build_times = Vec::new();
    let mut cold_times = Vec::new();
    let mut reference = None;
    for _ in 0..COLD_RUNS {
        let (t, universe) = time(|| Universe::new(known.iter().cloned()));
        build_times.push(t);
        let (t, resolved) = time(|| resolve_one(&rules, &universe, &labels));
        cold_times.push(t);
        reference.get_or_insert(resolved);
    }
    let reference = reference.context("no runs")?;

    let universe = Universe::new(known.iter().cloned());
    resolve_one(&rules, &universe, &labels);
    let mut warm_times = Vec::with_capacity(WARM_RUNS);
    for _ in 0..WARM_RUNS {
        let (t, resolved) = time(|| resolve_one(&rules, &universe, &labels));
        warm_times.push(t);
        if resolved != reference {
            bail!("warm resolution differs from cold resolution");
        }
    }

    // One rule changed: a rule that selects the endpoint gets a new peer
    // selector and port (parsed beforehand), then the endpoint is resolved
    // again with the warm universe.
    let namespace = labels
        .iter()
        .find(|l| l.key == "io.kubernetes.pod.namespace")
        .map(|l| l.value.clone())
        .unwrap_or_default();
    let target = rules.iter().position(|r| r.subject.matches(&labels)).context("no rule selects it")?;
    let mut changed_rules = rules.clone();
    let mut change_times = Vec::with_capacity(CHANGE_RUNS);
    let mut changed_entries = 0;
    for n in 0..CHANGE_RUNS {
        let doc = changed_policy(&namespace, &labels, n);
        let mut replacement = parse_policies("changed.yaml", &doc)
            .map_err(|e| anyhow::anyhow!("changed policy does not parse: {}", e[0]))?
            .remove(0)
            .rules
            .remove(0);
        replacement.policy = rules[target].policy.clone();
        let (t, resolved) = time(|| {
            changed_rules[target] = replacement;
            resolve_one(&changed_rules, &universe, &labels)
        });
        change_times.push(t);
        changed_entries = resolved.entries.len();
    }

    let entries = reference.entries.len();
    let label_text =
        |key: &str| labels.iter().find(|l| l.key == key).map(|l| l.value.clone()).unwrap_or_default();
    let who = format!("{}/{} (tier {})", namespace, label_text("app"), label_text("tier"));
    let (n_policies, n_ids) = (thousands(POLICIES as u64), thousands(IDENTITIES as u64));
    let cold = median_duration(cold_times);
    let warm = median_duration(warm_times);
    let change = median_duration(change_times);
    let ratio = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0 / CILIUM_MS);
    rows.push(Row::new(
        format!("policy parse, {n_policies} CNP YAML documents, median of {PARSE_RUNS}"),
        fmt_duration(median_duration(parse_times)),
        "",
        "",
    ));
    rows.push(Row::new(
        format!("policy universe build, {n_ids} identities, median of {COLD_RUNS}"),
        fmt_duration(median_duration(build_times)),
        "",
        "",
    ));
    rows.push(Row::new(
        format!("resolve {n_policies} rules x {n_ids} ids, 1 endpoint, cold cache, median of {COLD_RUNS}"),
        fmt_duration(cold),
        format!("Cilium ~{CILIUM_MS} ms"),
        ratio(cold),
    ));
    rows.push(Row::new(
        format!("resolve, same endpoint, warm selector cache, median of {WARM_RUNS}"),
        fmt_duration(warm),
        format!("Cilium ~{CILIUM_MS} ms"),
        ratio(warm),
    ));
    rows.push(Row::new(
        format!("resolve after 1 rule changed (new selector), median of {CHANGE_RUNS}"),
        fmt_duration(change),
        format!("Cilium ~{CILIUM_MS} ms"),
        ratio(change),
    ));
    rows.push(Row::new(
        format!("resolved endpoint {who}: rules selecting it / map entries"),
        format!("{selecting} / {entries}"),
        format!("{changed_entries} entries after the change"),
        "",
    ));
    Ok(())
}
