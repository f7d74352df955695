//! The FQDN cache and the toFQDNs selector cache, pure (Cilium's model).
//!
//! The DNS proxy reports the answers each endpoint receives. Each answer
//! adds (name → IPs, expiry) entries to that endpoint's cache. A toFQDNs
//! selector selects every IP that some endpoint's unexpired entry for a
//! matching name holds. Every change (an answer, expiry, a selector added
//! or removed, an endpoint gone) returns a [`SelectionDiff`]: which IPs
//! each selector gained and lost, and which IPs became needed or unneeded
//! overall. The agent turns the latter into `cidr:IP/32` identities in
//! the ipcache (as Cilium does for every learned IP) and the former into
//! a re-resolution of the policies that use the selectors.
//!
//! Time is a number of seconds on any monotonic clock, passed in, so the
//! cache is testable without waiting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::l7_dns::{canonical, DnsMatch};

/// Seconds on a monotonic clock the caller owns.
pub type Seconds = u64;

/// Which endpoint a cache belongs to (the agent's endpoint id).
pub type EndpointId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FqdnConfig {
    /// `--tofqdns-min-ttl`: an answer is kept at least this long, whatever
    /// its TTL. Cilium's default is 3600 s, and Twill's too, for the same
    /// reason: applications and stub resolvers keep using an address well
    /// past the TTL (Java caches, connection pools), and denying them then
    /// breaks working software. Lower it where TTL-exact expiry matters.
    pub min_ttl: u32,
    /// `--tofqdns-endpoint-max-ip-per-hostname` (Cilium: 50): a name with
    /// more IPs keeps the ones that expire last.
    pub max_ips_per_name: usize,
    /// A bound on names per endpoint, so one endpoint looking up random
    /// names cannot grow the cache without end; the soonest-expiring name
    /// goes first.
    pub max_names_per_endpoint: usize,
}

impl Default for FqdnConfig {
    fn default() -> Self {
        FqdnConfig { min_ttl: 3600, max_ips_per_name: 50, max_names_per_endpoint: 10_000 }
    }
}

/// One name's addresses from one DNS response, as the proxy saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub ttl: u32,
}

/// What one change did to the selections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectionDiff {
    /// Per selector whose set changed: (IPs added, IPs removed).
    pub selectors: BTreeMap<DnsMatch, (BTreeSet<IpAddr>, BTreeSet<IpAddr>)>,
    /// IPs that some selector selects now and none did before: each needs
    /// a CIDR identity.
    pub ips_added: BTreeSet<IpAddr>,
    /// IPs no selector selects any more: their CIDR identity can go (if
    /// nothing else uses it).
    pub ips_removed: BTreeSet<IpAddr>,
}

impl SelectionDiff {
    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }
}

/// Counters for metrics: pressure on the bounds shows here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FqdnStats {
    pub ips_evicted: u64,
    pub names_evicted: u64,
    pub expired: u64,
}

#[derive(Debug, Default)]
struct EndpointCache {
    /// name → ip → expiry.
    names: HashMap<String, BTreeMap<IpAddr, Seconds>>,
}

#[derive(Debug, Default)]
pub struct FqdnCache {
    config: FqdnConfig,
    endpoints: HashMap<EndpointId, EndpointCache>,
    /// Over all endpoints: name → ip → how many endpoints hold it.
    global: HashMap<String, HashMap<IpAddr, u32>>,
    /// Each registered selector's names (present in `global`) and IPs.
    selectors: BTreeMap<DnsMatch, Selection>,
    /// How many selectors select each IP.
    ip_refs: HashMap<IpAddr, u32>,
    stats: FqdnStats,
    /// Bumped whenever a (name, address) pair enters or leaves `global`.
    generation: u64,
}

#[derive(Debug, Default)]
struct Selection {
    names: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
}

impl FqdnCache {
    pub fn new(config: FqdnConfig) -> Self {
        FqdnCache { config, ..Default::default() }
    }

    pub fn config(&self) -> &FqdnConfig {
        &self.config
    }

    pub fn stats(&self) -> &FqdnStats {
        &self.stats
    }

    /// The IPs a selector selects now (empty for an unknown selector).
    pub fn selected(&self, selector: &DnsMatch) -> BTreeSet<IpAddr> {
        self.selectors.get(selector).map(|s| s.ips.clone()).unwrap_or_default()
    }

    /// Every selector's IPv4 addresses, the form the resolver takes
    /// ([`crate::resolve::Universe::with_fqdn_selections`]).
    pub fn selections(&self) -> BTreeMap<DnsMatch, BTreeSet<u32>> {
        self.selectors
            .iter()
            .map(|(m, s)| {
                let v4 = s.ips.iter().filter_map(|ip| match ip {
                    IpAddr::V4(a) => Some(u32::from(*a)),
                    IpAddr::V6(_) => None,
                });
                (m.clone(), v4.collect())
            })
            .collect()
    }

    /// Changes whenever [`FqdnCache::names_by_ip`] may have: callers that
    /// keep a copy rebuild it only then.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every cached address with the names that led to it, sorted: what
    /// flows name an address by.
    pub fn names_by_ip(&self) -> HashMap<IpAddr, Vec<String>> {
        let mut out: HashMap<IpAddr, Vec<String>> = HashMap::new();
        for (name, ips) in &self.global {
            for ip in ips.keys() {
                out.entry(*ip).or_default().push(name.clone());
            }
        }
        for names in out.values_mut() {
            names.sort();
        }
        out
    }

    /// An endpoint's entries: (name, ip, expiry), sorted, for inspection.
    pub fn entries(&self, endpoint: EndpointId) -> Vec<(String, IpAddr, Seconds)> {
        let mut v: Vec<_> = self
            .endpoints
            .get(&endpoint)
            .into_iter()
            .flat_map(|c| c.names.iter())
            .flat_map(|(n, ips)| ips.iter().map(move |(ip, e)| (n.clone(), *ip, *e)))
            .collect();
        v.sort();
        v
    }

    /// The earliest expiry of any entry, for the caller's timer.
    pub fn next_expiry(&self) -> Option<Seconds> {
        self.endpoints.values().flat_map(|c| c.names.values()).flat_map(|ips| ips.values()).min().copied()
    }

    /// Makes the registered selectors exactly `wanted` (the toFQDNs
    /// selectors of every policy in force).
    pub fn set_selectors(&mut self, wanted: impl IntoIterator<Item = DnsMatch>) -> SelectionDiff {
        let wanted: BTreeSet<DnsMatch> = wanted.into_iter().collect();
        let mut diff = SelectionDiff::default();
        let gone: Vec<DnsMatch> = self.selectors.keys().filter(|m| !wanted.contains(*m)).cloned().collect();
        for m in gone {
            let sel = self.selectors.remove(&m).expect("listed above");
            for ip in &sel.ips {
                self.unref_ip(*ip, &mut diff);
            }
            if !sel.ips.is_empty() {
                diff.selectors.insert(m, (BTreeSet::new(), sel.ips));
            }
        }
        for m in wanted {
            if self.selectors.contains_key(&m) {
                continue;
            }
            let names: BTreeSet<String> = self.global.keys().filter(|n| m.matches(n)).cloned().collect();
            self.selectors.insert(m.clone(), Selection { names, ips: BTreeSet::new() });
            self.recompute(&m, &mut diff);
        }
        diff
    }

    /// Records the answers one DNS response carried for `endpoint`.
    pub fn observe(&mut self, endpoint: EndpointId, answers: &[Answer], now: Seconds) -> SelectionDiff {
        let mut changed = BTreeSet::new();
        for a in answers {
            let name = canonical(&a.name);
            let expiry = now + u64::from(a.ttl.max(self.config.min_ttl));
            let cache = self.endpoints.entry(endpoint).or_default();
            let is_new_name = !cache.names.contains_key(&name);
            let ips = cache.names.entry(name.clone()).or_default();
            for ip in &a.ips {
                match ips.entry(*ip) {
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(expiry);
                        let count = self.global.entry(name.clone()).or_default().entry(*ip).or_insert(0);
                        if *count == 0 {
                            self.generation += 1;
                        }
                        *count += 1;
                    }
                    // A shorter TTL in a later answer does not cut a lease
                    // short. (An expiry can be 0, at time 0 with TTL 0: no
                    // value of it may mean "new".)
                    std::collections::btree_map::Entry::Occupied(mut e) => {
                        let longest = (*e.get()).max(expiry);
                        e.insert(longest);
                    }
                }
            }
            let over: Vec<IpAddr> = if ips.len() > self.config.max_ips_per_name {
                let mut by_expiry: Vec<(Seconds, IpAddr)> = ips.iter().map(|(ip, e)| (*e, *ip)).collect();
                by_expiry.sort();
                by_expiry[..ips.len() - self.config.max_ips_per_name].iter().map(|(_, ip)| *ip).collect()
            } else {
                vec![]
            };
            for ip in over {
                self.stats.ips_evicted += 1;
                self.drop_entry(endpoint, &name, ip);
            }
            if is_new_name {
                self.bound_names(endpoint, &mut changed);
            }
            changed.insert(name);
        }
        self.refresh_names(&changed)
    }

    /// Puts back an entry an earlier run held, expiring at `expiry` on
    /// this cache's clock whatever the minimum TTL (it was applied when the
    /// answer came).
    pub fn restore(
        &mut self,
        endpoint: EndpointId,
        name: &str,
        ip: IpAddr,
        expiry: Seconds,
        now: Seconds,
    ) -> SelectionDiff {
        let min_ttl = std::mem::replace(&mut self.config.min_ttl, 0);
        let ttl = expiry.saturating_sub(now).min(u64::from(u32::MAX)) as u32;
        let diff = self.observe(endpoint, &[Answer { name: name.into(), ips: vec![ip], ttl }], now);
        self.config.min_ttl = min_ttl;
        diff
    }

    /// Removes every entry that expired at or before `now`.
    pub fn expire(&mut self, now: Seconds) -> SelectionDiff {
        let mut lapsed = Vec::new();
        for (ep, cache) in &self.endpoints {
            for (name, ips) in &cache.names {
                lapsed.extend(ips.iter().filter(|(_, e)| **e <= now).map(|(ip, _)| (*ep, name.clone(), *ip)));
            }
        }
        let mut changed = BTreeSet::new();
        for (ep, name, ip) in lapsed {
            self.stats.expired += 1;
            self.drop_entry(ep, &name, ip);
            changed.insert(name);
        }
        self.refresh_names(&changed)
    }

    /// Forgets an endpoint that was deleted.
    pub fn remove_endpoint(&mut self, endpoint: EndpointId) -> SelectionDiff {
        let Some(cache) = self.endpoints.remove(&endpoint) else { return SelectionDiff::default() };
        let mut changed = BTreeSet::new();
        for (name, ips) in cache.names {
            for ip in ips.keys() {
                self.unref_global(&name, *ip);
            }
            changed.insert(name);
        }
        self.refresh_names(&changed)
    }

    fn bound_names(&mut self, endpoint: EndpointId, changed: &mut BTreeSet<String>) {
        let Some(cache) = self.endpoints.get(&endpoint) else { return };
        if cache.names.len() <= self.config.max_names_per_endpoint {
            return;
        }
        let victim = cache
            .names
            .iter()
            .map(|(n, ips)| (ips.values().max().copied().unwrap_or(0), n.clone()))
            .min()
            .map(|(_, n)| n);
        if let Some(name) = victim {
            self.stats.names_evicted += 1;
            let ips =
                self.endpoints.get_mut(&endpoint).and_then(|c| c.names.remove(&name)).unwrap_or_default();
            for ip in ips.keys() {
                self.unref_global(&name, *ip);
            }
            changed.insert(name);
        }
    }

    fn drop_entry(&mut self, endpoint: EndpointId, name: &str, ip: IpAddr) {
        let Some(cache) = self.endpoints.get_mut(&endpoint) else { return };
        let Some(ips) = cache.names.get_mut(name) else { return };
        let removed = ips.remove(&ip).is_some();
        if ips.is_empty() {
            cache.names.remove(name);
        }
        if cache.names.is_empty() {
            self.endpoints.remove(&endpoint);
        }
        if removed {
            self.unref_global(name, ip);
        }
    }

    fn unref_global(&mut self, name: &str, ip: IpAddr) {
        let Some(ips) = self.global.get_mut(name) else { return };
        if let Some(n) = ips.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                ips.remove(&ip);
                self.generation += 1;
            }
        }
        if ips.is_empty() {
            self.global.remove(name);
        }
    }

    /// Brings the selectors matching any of `names` up to date.
    fn refresh_names(&mut self, names: &BTreeSet<String>) -> SelectionDiff {
        let mut diff = SelectionDiff::default();
        if names.is_empty() {
            return diff;
        }
        let affected: Vec<DnsMatch> =
            self.selectors.keys().filter(|m| names.iter().any(|n| m.matches(n))).cloned().collect();
        for m in affected {
            let sel = self.selectors.get_mut(&m).expect("listed above");
            for n in names.iter().filter(|n| m.matches(n)) {
                if self.global.contains_key(n) {
                    sel.names.insert(n.clone());
                } else {
                    sel.names.remove(n);
                }
            }
            self.recompute(&m, &mut diff);
        }
        diff
    }

    fn recompute(&mut self, m: &DnsMatch, diff: &mut SelectionDiff) {
        let sel = self.selectors.get(m).expect("registered");
        let now: BTreeSet<IpAddr> =
            sel.names.iter().filter_map(|n| self.global.get(n)).flat_map(|ips| ips.keys().copied()).collect();
        let added: BTreeSet<IpAddr> = now.difference(&sel.ips).copied().collect();
        let removed: BTreeSet<IpAddr> = sel.ips.difference(&now).copied().collect();
        if added.is_empty() && removed.is_empty() {
            return;
        }
        for ip in &added {
            let n = self.ip_refs.entry(*ip).or_insert(0);
            *n += 1;
            if *n == 1 && !diff.ips_removed.remove(ip) {
                diff.ips_added.insert(*ip);
            }
        }
        for ip in &removed {
            self.unref_ip(*ip, diff);
        }
        self.selectors.get_mut(m).expect("registered").ips = now;
        let entry = diff.selectors.entry(m.clone()).or_default();
        entry.0.extend(added);
        entry.1.extend(removed);
    }

    fn unref_ip(&mut self, ip: IpAddr, diff: &mut SelectionDiff) {
        if let Some(n) = self.ip_refs.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.ip_refs.remove(&ip);
                if !diff.ips_added.remove(&ip) {
                    diff.ips_removed.insert(ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7_dns::{parse_match_name, parse_match_pattern};
    use proptest::prelude::*;

    fn name(n: &str) -> DnsMatch {
        DnsMatch::Name(parse_match_name(n).unwrap())
    }
    fn pattern(p: &str) -> DnsMatch {
        DnsMatch::Pattern(parse_match_pattern(p).unwrap())
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn answer(n: &str, ips: &[&str], ttl: u32) -> Answer {
        Answer { name: n.into(), ips: ips.iter().map(|s| ip(s)).collect(), ttl }
    }
    fn cache(min_ttl: u32) -> FqdnCache {
        FqdnCache::new(FqdnConfig { min_ttl, ..Default::default() })
    }

    #[test]
    fn the_generation_moves_only_when_a_name_or_address_comes_or_goes() {
        let mut c = FqdnCache::new(FqdnConfig { min_ttl: 0, ..Default::default() });
        let g0 = c.generation();
        c.observe(1, &[answer("a.test", &["10.0.0.1"], 10)], 0);
        let g1 = c.generation();
        assert_ne!(g0, g1);
        c.observe(1, &[answer("a.test", &["10.0.0.1"], 10)], 1);
        c.observe(2, &[answer("a.test", &["10.0.0.1"], 10)], 1);
        assert_eq!(c.generation(), g1, "repeats and a second holder of the same pair");
        assert_eq!(c.names_by_ip()[&ip("10.0.0.1")], vec!["a.test.".to_string()]);
        c.remove_endpoint(2);
        assert_eq!(c.generation(), g1, "endpoint 1 still holds it");
        c.expire(20);
        assert_ne!(c.generation(), g1);
        assert!(c.names_by_ip().is_empty());
    }

    #[test]
    fn an_answer_selects_its_ips_until_the_ttl_passes() {
        let mut c = cache(0);
        let d = c.set_selectors([name("x.test")]);
        assert!(d.is_empty());
        let d = c.observe(1, &[answer("X.test.", &["10.1.2.3"], 30)], 100);
        assert_eq!(d.ips_added, [ip("10.1.2.3")].into());
        assert_eq!(c.selected(&name("x.test")), [ip("10.1.2.3")].into());
        assert!(c.expire(129).is_empty(), "still within the TTL");
        let d = c.expire(130);
        assert_eq!(d.ips_removed, [ip("10.1.2.3")].into());
        assert!(c.selected(&name("x.test")).is_empty());
        assert_eq!(c.stats().expired, 1);
    }

    #[test]
    fn the_minimum_ttl_extends_short_answers() {
        let mut c = cache(3600);
        c.set_selectors([name("x.test")]);
        c.observe(1, &[answer("x.test", &["10.1.2.3"], 5)], 0);
        assert_eq!(c.next_expiry(), Some(3600));
        assert!(c.expire(3599).is_empty());
        assert!(!c.expire(3600).is_empty());
    }

    #[test]
    fn a_refresh_keeps_the_ip_and_a_shorter_ttl_does_not_cut_it() {
        let mut c = cache(0);
        c.set_selectors([pattern("*.test")]);
        c.observe(1, &[answer("a.test", &["10.0.0.1"], 10)], 0);
        assert!(c.observe(1, &[answer("a.test", &["10.0.0.1"], 100)], 5).is_empty(), "no change, no diff");
        c.observe(1, &[answer("a.test", &["10.0.0.1"], 1)], 6);
        assert!(c.expire(50).is_empty());
        assert!(!c.expire(105).is_empty());
    }

    #[test]
    fn an_ip_shared_by_two_selectors_stays_until_both_let_go() {
        let mut c = cache(0);
        c.set_selectors([name("a.test"), pattern("*.test")]);
        let d = c.observe(1, &[answer("a.test", &["10.0.0.1"], 10)], 0);
        assert_eq!(d.selectors.len(), 2);
        assert_eq!(d.ips_added.len(), 1);
        let d = c.set_selectors([pattern("*.test")]);
        assert!(d.ips_removed.is_empty(), "the pattern still selects it");
        assert_eq!(d.selectors[&name("a.test")].1, [ip("10.0.0.1")].into());
        let d = c.set_selectors([]);
        assert_eq!(d.ips_removed, [ip("10.0.0.1")].into());
    }

    #[test]
    fn a_selector_added_later_sees_what_is_cached() {
        let mut c = cache(0);
        c.observe(7, &[answer("b.test", &["10.0.0.2"], 10)], 0);
        let d = c.set_selectors([pattern("*")]);
        assert_eq!(d.ips_added, [ip("10.0.0.2")].into());
        let d = c.remove_endpoint(7);
        assert_eq!(d.ips_removed, [ip("10.0.0.2")].into());
        assert!(c.entries(7).is_empty());
    }

    #[test]
    fn ips_per_name_are_bounded_keeping_the_longest_lived() {
        let mut c =
            FqdnCache::new(FqdnConfig { min_ttl: 0, max_ips_per_name: 2, max_names_per_endpoint: 10 });
        c.set_selectors([name("a.test")]);
        c.observe(1, &[answer("a.test", &["10.0.0.1"], 100)], 0);
        c.observe(1, &[answer("a.test", &["10.0.0.2"], 10)], 0);
        c.observe(1, &[answer("a.test", &["10.0.0.3"], 50)], 0);
        assert_eq!(c.selected(&name("a.test")), [ip("10.0.0.1"), ip("10.0.0.3")].into());
        assert_eq!(c.stats().ips_evicted, 1);
    }

    #[test]
    fn names_per_endpoint_are_bounded() {
        let mut c = FqdnCache::new(FqdnConfig { min_ttl: 0, max_ips_per_name: 5, max_names_per_endpoint: 2 });
        c.set_selectors([pattern("*")]);
        c.observe(1, &[answer("a.test", &["10.0.0.1"], 5)], 0);
        c.observe(1, &[answer("b.test", &["10.0.0.2"], 50)], 0);
        let d = c.observe(1, &[answer("c.test", &["10.0.0.3"], 50)], 0);
        assert_eq!(d.ips_removed, [ip("10.0.0.1")].into(), "the soonest-expiring name went");
        assert_eq!(c.entries(1).len(), 2);
        assert_eq!(c.stats().names_evicted, 1);
    }

    // --- properties ---

    const NAMES: &[&str] = &["a.test.", "b.test.", "x.a.test.", "other.org."];

    fn selectors() -> Vec<DnsMatch> {
        vec![name("a.test"), pattern("*.test"), pattern("*"), pattern("*.a.test"), name("other.org")]
    }

    #[derive(Debug, Clone)]
    struct Obs {
        endpoint: u64,
        name: usize,
        ips: Vec<u8>,
        ttl: u32,
        at: u64,
    }

    fn obs() -> impl Strategy<Value = Obs> {
        (0u64..3, 0..NAMES.len(), proptest::collection::vec(0u8..6, 1..3), 0u32..50, 0u64..40)
            .prop_map(|(endpoint, name, ips, ttl, at)| Obs { endpoint, name, ips, ttl, at })
    }

    fn to_answer(o: &Obs) -> Answer {
        Answer {
            name: NAMES[o.name].into(),
            ips: o.ips.iter().map(|b| IpAddr::from([10, 0, 0, *b])).collect(),
            ttl: o.ttl,
        }
    }

    /// The model: an IP is selected iff some unexpired answer for a
    /// matching name holds it (each answer good until at + ttl).
    fn model(observations: &[Obs], sel: &DnsMatch, now: u64) -> BTreeSet<IpAddr> {
        observations
            .iter()
            .filter(|o| o.at <= now && sel.matches(NAMES[o.name]) && o.at + u64::from(o.ttl) > now)
            .flat_map(|o| to_answer(o).ips)
            .collect()
    }

    fn run(observations: &[Obs], now: u64) -> FqdnCache {
        let mut c = cache(0);
        c.set_selectors(selectors());
        let mut sorted = observations.to_vec();
        sorted.sort_by_key(|o| o.at);
        for o in &sorted {
            c.expire(o.at);
            c.observe(o.endpoint, &[to_answer(o)], o.at);
        }
        c.expire(now);
        c
    }

    proptest! {
        #[test]
        fn selected_iff_some_unexpired_matching_answer_holds_it(
            observations in proptest::collection::vec(obs(), 0..12),
            now in 0u64..100,
        ) {
            let c = run(&observations, now.max(40));
            for sel in selectors() {
                prop_assert_eq!(c.selected(&sel), model(&observations, &sel, now.max(40)), "{}", sel);
            }
        }

        #[test]
        fn order_of_answers_at_one_time_does_not_matter(
            mut observations in proptest::collection::vec(obs(), 0..12),
            seed in any::<u64>(),
        ) {
            for o in &mut observations { o.at = 0; }
            let a = run(&observations, 0);
            let mut shuffled = observations.clone();
            let n = shuffled.len();
            for i in 0..n { shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % n); }
            let b = run(&shuffled, 0);
            for sel in selectors() {
                prop_assert_eq!(a.selected(&sel), b.selected(&sel));
            }
            for ep in 0..3 { prop_assert_eq!(a.entries(ep), b.entries(ep)); }
        }

        #[test]
        fn expiry_removes_exactly_the_lapsed(
            observations in proptest::collection::vec(obs(), 1..12),
            later in 0u64..60,
        ) {
            let mut c = run(&observations, 40);
            let before: Vec<_> = (0..3).flat_map(|ep| c.entries(ep).into_iter().map(move |e| (ep, e))).collect();
            let mut diff_added = BTreeSet::new();
            let d = c.expire(40 + later);
            diff_added.extend(d.ips_added.iter().copied());
            prop_assert!(diff_added.is_empty(), "expiry adds nothing");
            let after: Vec<_> = (0..3).flat_map(|ep| c.entries(ep).into_iter().map(move |e| (ep, e))).collect();
            let expected: Vec<_> = before.iter().filter(|(_, (_, _, e))| *e > 40 + later).cloned().collect();
            prop_assert_eq!(after, expected);
        }

        #[test]
        fn diffs_replay_to_the_current_selection(
            observations in proptest::collection::vec(obs(), 0..12),
        ) {
            let mut c = cache(0);
            let mut replay: BTreeMap<DnsMatch, BTreeSet<IpAddr>> = BTreeMap::new();
            let mut needed: BTreeSet<IpAddr> = BTreeSet::new();
            let mut apply = |d: SelectionDiff, replay: &mut BTreeMap<DnsMatch, BTreeSet<IpAddr>>| {
                for (m, (add, rem)) in d.selectors {
                    let s = replay.entry(m).or_default();
                    s.extend(add);
                    for ip in rem { s.remove(&ip); }
                }
                needed.extend(d.ips_added);
                for ip in d.ips_removed { needed.remove(&ip); }
            };
            apply(c.set_selectors(selectors()), &mut replay);
            let mut sorted = observations.clone();
            sorted.sort_by_key(|o| o.at);
            for o in &sorted {
                apply(c.expire(o.at), &mut replay);
                apply(c.observe(o.endpoint, &[to_answer(o)], o.at), &mut replay);
            }
            apply(c.expire(30), &mut replay);
            apply(c.set_selectors(selectors().into_iter().take(2)), &mut replay);
            let all: BTreeSet<IpAddr> = selectors().iter().flat_map(|s| c.selected(s)).collect();
            for sel in selectors() {
                prop_assert_eq!(replay.get(&sel).cloned().unwrap_or_default(), c.selected(&sel));
            }
            prop_assert_eq!(needed, all);
        }
    }
}

#[cfg(test)]
mod resolution_tests {
    //! From a DNS answer to an allowed connection and back, through the
    //! resolver: the selector cache's addresses, given /32 CIDR
    //! identities, become policy entries for the toFQDNs rule.
    use super::*;
    use crate::resolve::{resolve, IdentityKind, KnownIdentity, Subject, Universe, Verdict};
    use crate::{parse_policies, Direction, Prefix, PROTO_TCP};
    use twill_identity::{Label, LabelSet};

    const POLICY: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: f}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  egress:\n  - toFQDNs: [{matchPattern: \"*.x.test\"}]\n    toPorts: [{ports: [{port: \"443\", protocol: TCP}]}]\n";

    fn verdict(cache: &FqdnCache) -> Verdict {
        let rules: Vec<_> =
            parse_policies("f.yaml", POLICY).unwrap().into_iter().flat_map(|p| p.rules).collect();
        let web = LabelSet::from_labels([
            Label::new("k8s", "app", "web"),
            Label::new("k8s", "io.kubernetes.pod.namespace", "default"),
        ]);
        let identities = vec![
            KnownIdentity { id: 256, labels: web.clone(), kind: IdentityKind::Endpoint },
            // The CIDR identity the agent allocates for a learned IP.
            KnownIdentity {
                id: 16777300,
                labels: LabelSet::from_labels([Label::new("cidr", "192.0.2.7/32", "")]),
                kind: IdentityKind::Cidr(Prefix::new(0xc000_0207, 32)),
            },
        ];
        let u = Universe::new(identities).with_fqdn_selections(cache.selections());
        let p = resolve(&rules, &u, &Subject { labels: &web, named_ports: &[] }, &|_| vec![]);
        p.lookup(Direction::Egress, 16777300, PROTO_TCP, 443)
    }

    #[test]
    fn a_learned_ip_is_allowed_until_its_answer_expires() {
        let mut cache = FqdnCache::new(FqdnConfig { min_ttl: 0, ..Default::default() });
        let rules = parse_policies("f.yaml", POLICY).unwrap();
        let selectors =
            rules[0].rules[0].egress.allow.iter().flat_map(|r| &r.peers).filter_map(|p| match p {
                crate::Peer::Fqdn(m) => Some(m.clone()),
                _ => None,
            });
        cache.set_selectors(selectors);
        assert!(matches!(verdict(&cache), Verdict::DefaultDenied), "nothing learned yet");
        let d = cache.observe(
            1,
            &[Answer { name: "api.x.test".into(), ips: vec!["192.0.2.7".parse().unwrap()], ttl: 5 }],
            0,
        );
        assert_eq!(
            d.ips_added,
            ["192.0.2.7".parse().unwrap()].into(),
            "the agent allocates cidr:192.0.2.7/32"
        );
        assert!(verdict(&cache).allowed());
        cache.expire(5);
        assert!(matches!(verdict(&cache), Verdict::DefaultDenied), "the TTL passed");
        // A name the pattern does not match teaches nothing.
        cache.observe(
            1,
            &[Answer { name: "x.test".into(), ips: vec!["192.0.2.7".parse().unwrap()], ttl: 5 }],
            6,
        );
        assert!(matches!(verdict(&cache), Verdict::DefaultDenied));
    }
}
