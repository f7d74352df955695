//! The agent's FQDN state: the cache of what DNS answers told each
//! endpoint (the pure [`FqdnCache`]), on the agent's clock, and what
//! policy needs from it: the addresses toFQDNs selectors select now, each
//! as a `/32` prefix that gets a CIDR identity and an ipcache entry.
//!
//! Every method says whether the selections changed; only then must
//! policy be regenerated.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use twill_policy::{
    fqdn::{Answer, FqdnCache, FqdnConfig, Seconds},
    l7_dns::DnsMatch,
    model::Prefix,
};

pub struct Fqdn {
    cache: FqdnCache,
    started: Instant,
    /// `started` on the wall clock, for entries that outlive the agent.
    started_unix: u64,
}

/// One cache entry as the store keeps it across agent restarts, expiring
/// at a wall-clock time (seconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredEntry {
    pub endpoint: u64,
    pub name: String,
    pub ip: IpAddr,
    pub expires: u64,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Fqdn {
    pub fn new(min_ttl: u32, max_ips_per_name: usize) -> Self {
        let config = FqdnConfig { min_ttl, max_ips_per_name, ..FqdnConfig::default() };
        Fqdn { cache: FqdnCache::new(config), started: Instant::now(), started_unix: unix_now() }
    }

    fn now(&self) -> Seconds {
        self.started.elapsed().as_secs()
    }

    /// An answer `endpoint` received through the DNS proxy.
    pub fn observe(&mut self, endpoint: u64, answers: &[Answer]) -> bool {
        let now = self.now();
        !self.cache.observe(endpoint, answers, now).is_empty()
    }

    /// Whether some entry has lapsed and [`Fqdn::expire`] has work.
    pub fn due(&self) -> bool {
        self.cache.next_expiry().is_some_and(|at| at <= self.now())
    }

    pub fn expire(&mut self) -> bool {
        let now = self.now();
        !self.cache.expire(now).is_empty()
    }

    pub fn remove_endpoint(&mut self, endpoint: u64) -> bool {
        !self.cache.remove_endpoint(endpoint).is_empty()
    }

    /// Changes whenever [`Fqdn::names`] may have.
    pub fn names_generation(&self) -> u64 {
        self.cache.generation()
    }

    /// IPv4 addresses with the names DNS gave them, without the trailing
    /// dot (as Hubble shows names), for flows.
    pub fn names(&self) -> std::collections::HashMap<std::net::Ipv4Addr, Vec<String>> {
        self.cache
            .names_by_ip()
            .into_iter()
            .filter_map(|(ip, names)| match ip {
                IpAddr::V4(v4) => {
                    Some((v4, names.into_iter().map(|n| n.trim_end_matches('.').to_string()).collect()))
                }
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    /// Every endpoint's entries, for the store.
    pub fn stored(&self, endpoints: impl IntoIterator<Item = u64>) -> Vec<StoredEntry> {
        let mut out = Vec::new();
        for endpoint in endpoints {
            for (name, ip, expiry) in self.cache.entries(endpoint) {
                out.push(StoredEntry { endpoint, name, ip, expires: self.started_unix + expiry });
            }
        }
        out
    }

    /// Puts back what an earlier agent stored: entries of endpoints that
    /// still exist, until their expiry.
    pub fn restore(&mut self, entries: &[StoredEntry], exists: impl Fn(u64) -> bool) {
        let now = self.now();
        let wall = unix_now();
        for e in entries.iter().filter(|e| exists(e.endpoint) && e.expires > wall) {
            let expiry = now + (e.expires - wall);
            self.cache.restore(e.endpoint, &e.name, e.ip, expiry, now);
        }
    }

    /// Makes the cache track exactly the selectors policy uses.
    pub fn set_selectors(&mut self, selectors: impl IntoIterator<Item = DnsMatch>) -> bool {
        !self.cache.set_selectors(selectors).is_empty()
    }

    /// Each selector's IPv4 addresses, for the policy resolver.
    pub fn selections(&self) -> std::collections::BTreeMap<DnsMatch, BTreeSet<u32>> {
        self.cache.selections()
    }

    /// Every selected address as a `/32`: each needs a CIDR identity.
    pub fn prefixes(&self) -> BTreeSet<Prefix> {
        self.selections().into_values().flatten().map(|addr| Prefix { addr, len: 32 }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selected_answers_become_prefixes_and_policy_hears_of_changes_only() {
        let mut f = Fqdn::new(3600, 50);
        let m = DnsMatch::Name("web.test.".into());
        assert!(!f.set_selectors([m.clone()]), "nothing selected yet");
        let answer = Answer { name: "web.test.".into(), ips: vec!["198.51.100.7".parse().unwrap()], ttl: 5 };
        assert!(f.observe(1, std::slice::from_ref(&answer)));
        assert!(!f.observe(1, &[answer]), "the same answer again changes no selection");
        let other = Answer { name: "other.test.".into(), ips: vec!["198.51.100.8".parse().unwrap()], ttl: 5 };
        assert!(!f.observe(1, &[other]), "a name no selector matches");
        assert_eq!(
            f.prefixes().into_iter().collect::<Vec<_>>(),
            vec![Prefix { addr: u32::from(std::net::Ipv4Addr::new(198, 51, 100, 7)), len: 32 }]
        );
        assert!(!f.due(), "the minimum TTL keeps it");
        let stored = f.stored([1]);
        assert_eq!(stored.len(), 2, "{stored:?}");
        let mut restarted = Fqdn::new(3600, 50);
        restarted.set_selectors([m]);
        restarted.restore(&stored, |e| e == 1);
        assert_eq!(restarted.prefixes(), f.prefixes(), "a restarted agent allows what the last one did");
        let mut gone = Fqdn::new(3600, 50);
        gone.restore(&stored, |_| false);
        assert!(gone.stored([1]).is_empty(), "entries of endpoints gone are not restored");
        assert!(f.remove_endpoint(1));
        assert!(f.prefixes().is_empty());
    }
}
