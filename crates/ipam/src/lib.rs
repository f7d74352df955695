//! IPv4 address management for one node's pod CIDR.
//!
//! [`Cidr`] and [`first_free`] are pure; [`Ipam`] records allocations in
//! the store (`ipam/{node}/{ip}` -> owner) with `create`, so an address is
//! never handed out twice even if two callers race.

use std::{collections::BTreeSet, fmt, net::Ipv4Addr, str::FromStr, sync::Arc};

use twill_store::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{0:?} is not a CIDR: expected ADDRESS/PREFIX such as 10.200.0.0/24")]
    Syntax(String),
    #[error("{input:?}: prefix length must be between 8 and 30 for a pod CIDR")]
    PrefixLength { input: String },
    #[error("{input:?}: host bits are set; did you mean {suggested}?")]
    HostBits { input: String, suggested: String },
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (addr, len) = input.split_once('/').ok_or_else(|| CidrError::Syntax(input.into()))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| CidrError::Syntax(input.into()))?;
        let prefix_len: u8 = len.parse().map_err(|_| CidrError::Syntax(input.into()))?;
        if !(8..=30).contains(&prefix_len) {
            return Err(CidrError::PrefixLength { input: input.into() });
        }
        let cidr = Cidr { network: Ipv4Addr::from(u32::from(addr) & mask(prefix_len)), prefix_len };
        if cidr.network != addr {
            return Err(CidrError::HostBits { input: input.into(), suggested: cidr.to_string() });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - prefix_len)
    }
}

impl Cidr {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.network)
    }

    /// The node's router address: the first usable address.
    pub fn router(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix_len))
    }

    /// Number of addresses endpoints can get (network, router and
    /// broadcast excluded).
    pub fn capacity(&self) -> u32 {
        (1u32 << (32 - self.prefix_len)) - 3
    }
}

impl Cidr {
    /// Whether the two share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let shorter = self.prefix_len.min(other.prefix_len);
        u32::from(self.network) & mask(shorter) == u32::from(other.network) & mask(shorter)
    }
}

/// The lowest `/mask` subnet of `pool` that overlaps none of `taken`:
/// how a node picks its pod CIDR from the cluster pool. Taken CIDRs of
/// other sizes (an explicit --pod-cidr) are avoided too.
pub fn first_free_subnet(pool: &Cidr, mask_len: u8, taken: &BTreeSet<Cidr>) -> Option<Cidr> {
    if mask_len < pool.prefix_len || mask_len > 30 {
        return None;
    }
    let count = 1u64 << (mask_len - pool.prefix_len);
    let step = 1u64 << (32 - mask_len);
    (0..count)
        .map(|i| Cidr {
            network: Ipv4Addr::from((u32::from(pool.network) as u64 + i * step) as u32),
            prefix_len: mask_len,
        })
        .find(|candidate| !taken.iter().any(|t| t.overlaps(candidate)))
}

/// The lowest address of `cidr` that endpoints may use and `used` lacks.
pub fn first_free(cidr: &Cidr, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(cidr.router()) + 1;
    let last = u32::from(cidr.broadcast()) - 1;
    (first..=last).map(Ipv4Addr::from).find(|ip| !used.contains(ip))
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pod CIDR {cidr} is exhausted: all {capacity} addresses are in use")]
    Exhausted { cidr: Cidr, capacity: u32 },
    #[error("{ip} is outside the pod CIDR {cidr}")]
    OutOfRange { ip: Ipv4Addr, cidr: Cidr },
    #[error("{ip} is already allocated to {owner}")]
    InUse { ip: Ipv4Addr, owner: String },
}

/// Store-backed allocator for one node's pod CIDR.
pub struct Ipam {
    store: Arc<dyn Store>,
    node: String,
    cidr: Cidr,
}

impl Ipam {
    pub fn new(store: Arc<dyn Store>, node: &str, cidr: Cidr) -> Self {
        Self { store, node: node.to_string(), cidr }
    }

    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    fn prefix(&self) -> String {
        format!("ipam/{}/", self.node)
    }

    /// Every allocated address and its owner.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let prefix = self.prefix();
        Ok(self
            .store
            .list(&prefix)?
            .into_iter()
            .filter_map(|(k, e)| k[prefix.len()..].parse().ok().map(|ip| (ip, e.value)))
            .collect())
    }

    /// Allocates the lowest free address for `owner`.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        loop {
            let used: BTreeSet<Ipv4Addr> = self.allocations()?.into_iter().map(|(ip, _)| ip).collect();
            let ip = first_free(&self.cidr, &used)
                .ok_or(IpamError::Exhausted { cidr: self.cidr, capacity: self.cidr.capacity() })?;
            if self.store.create(&format!("{}{ip}", self.prefix()), owner)? {
                return Ok(ip);
            }
        }
    }

    /// Allocates a specific address (used when restoring state).
    pub fn allocate_specific(&self, ip: Ipv4Addr, owner: &str) -> Result<(), IpamError> {
        let usable = u32::from(self.cidr.router()) + 1..u32::from(self.cidr.broadcast());
        if !usable.contains(&u32::from(ip)) {
            return Err(IpamError::OutOfRange { ip, cidr: self.cidr });
        }
        let key = format!("{}{ip}", self.prefix());
        if self.store.create(&key, owner)? {
            return Ok(());
        }
        match self.store.get(&key)? {
            Some(e) if e.value == owner => Ok(()),
            Some(e) => Err(IpamError::InUse { ip, owner: e.value }),
            None => self.allocate_specific(ip, owner),
        }
    }

    pub fn release(&self, ip: Ipv4Addr) -> Result<bool, IpamError> {
        Ok(self.store.delete(&format!("{}{ip}", self.prefix()))?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subnets_come_from_the_pool_lowest_first_and_never_overlap() {
        let pool: Cidr = "10.8.0.0/16".parse().unwrap();
        let mut taken = BTreeSet::new();
        let a = first_free_subnet(&pool, 24, &taken).unwrap();
        assert_eq!(a.to_string(), "10.8.0.0/24");
        taken.insert(a);
        // An explicit, larger CIDR inside the pool is stepped over whole.
        taken.insert("10.8.2.0/23".parse().unwrap());
        let b = first_free_subnet(&pool, 24, &taken).unwrap();
        assert_eq!(b.to_string(), "10.8.1.0/24");
        taken.insert(b);
        assert_eq!(first_free_subnet(&pool, 24, &taken).unwrap().to_string(), "10.8.4.0/24");
        let small: Cidr = "10.9.0.0/29".parse().unwrap();
        assert_eq!(first_free_subnet(&small, 30, &BTreeSet::from([small])), None, "all taken");
        assert_eq!(first_free_subnet(&pool, 12, &BTreeSet::new()), None, "mask shorter than the pool");
    }

    use super::*;
    use twill_store::FileStore;

    #[test]
    fn parses_and_rejects_cidrs() {
        let cidr: Cidr = "10.200.0.0/24".parse().unwrap();
        assert_eq!(cidr.router(), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(cidr.capacity(), 253);
        assert!(matches!("10.200.0.1/24".parse::<Cidr>(), Err(CidrError::HostBits { .. })));
        assert!(matches!("10.200.0.0".parse::<Cidr>(), Err(CidrError::Syntax(_))));
        assert!(matches!("10.200.0.0/31".parse::<Cidr>(), Err(CidrError::PrefixLength { .. })));
    }

    #[test]
    fn first_free_skips_network_router_and_broadcast() {
        let cidr: Cidr = "10.0.0.0/30".parse().unwrap();
        assert_eq!(first_free(&cidr, &BTreeSet::new()), Some(Ipv4Addr::new(10, 0, 0, 2)));
        let used = BTreeSet::from([Ipv4Addr::new(10, 0, 0, 2)]);
        assert_eq!(first_free(&cidr, &used), None, "10.0.0.3 is the broadcast address");
    }

    fn ipam(name: &str, cidr: &str) -> (Ipam, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("twill-ipam-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(FileStore::open(&dir).unwrap());
        (Ipam::new(store, "node1", cidr.parse().unwrap()), dir)
    }

    #[test]
    fn allocates_without_duplicates_until_exhausted_and_reuses_released() {
        let (ipam, dir) = ipam("exhaust", "10.1.0.0/29");
        let ips: Vec<Ipv4Addr> = (0..5).map(|i| ipam.allocate(&format!("ep{i}")).unwrap()).collect();
        let distinct: BTreeSet<_> = ips.iter().copied().collect();
        assert_eq!(distinct.len(), 5);
        assert!(ips.iter().all(|ip| *ip != Ipv4Addr::new(10, 1, 0, 1)));
        assert!(matches!(ipam.allocate("ep5"), Err(IpamError::Exhausted { capacity: 5, .. })));
        assert!(ipam.release(ips[2]).unwrap());
        assert_eq!(ipam.allocate("ep6").unwrap(), ips[2]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn specific_allocation_checks_range_and_owner() {
        let (ipam, dir) = ipam("specific", "10.1.0.0/24");
        let ip = Ipv4Addr::new(10, 1, 0, 9);
        ipam.allocate_specific(ip, "a").unwrap();
        ipam.allocate_specific(ip, "a").unwrap();
        assert!(matches!(ipam.allocate_specific(ip, "b"), Err(IpamError::InUse { .. })));
        assert!(matches!(
            ipam.allocate_specific(Ipv4Addr::new(10, 2, 0, 9), "a"),
            Err(IpamError::OutOfRange { .. })
        ));
        assert!(matches!(
            ipam.allocate_specific(Ipv4Addr::new(10, 1, 0, 1), "a"),
            Err(IpamError::OutOfRange { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
