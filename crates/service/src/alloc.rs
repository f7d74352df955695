//! ClusterIP, node port and map id allocation: always the lowest free
//! value, so that the same sequence of requests gives the same values on
//! every run, and released values are reused before the range grows.

use std::{collections::BTreeSet, net::Ipv4Addr, ops::RangeInclusive};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("{0} is already in use")]
    InUse(String),
    #[error("{0} is the network or broadcast address of the service range")]
    NotUsable(Ipv4Addr),
    #[error("{0}/{1} is not a usable service range: use a prefix length between 8 and 30")]
    BadRange(Ipv4Addr, u8),
}

/// Lowest-free allocation over `lo..=hi`. Values are handed out from a
/// high-water mark upwards; released ones below it wait in `free`, and
/// explicit reservations above it in `ahead`, so both allocation and
/// release cost O(log n) however many values are taken.
#[derive(Debug, Clone)]
pub struct IdAllocator {
    lo: u32,
    hi: u32,
    /// Everything in `lo..next` is taken except `free`.
    next: u64,
    free: BTreeSet<u32>,
    ahead: BTreeSet<u32>,
}

impl IdAllocator {
    pub fn new(range: RangeInclusive<u32>) -> Self {
        IdAllocator {
            lo: *range.start(),
            hi: *range.end(),
            next: u64::from(*range.start()),
            free: BTreeSet::new(),
            ahead: BTreeSet::new(),
        }
    }

    pub fn allocate(&mut self) -> Option<u32> {
        if let Some(v) = self.free.pop_first() {
            return Some(v);
        }
        while self.next <= u64::from(self.hi) {
            let v = self.next as u32;
            self.next += 1;
            if !self.ahead.remove(&v) {
                return Some(v);
            }
        }
        None
    }

    /// Takes `v`; false when it is outside the range or already taken.
    pub fn reserve(&mut self, v: u32) -> bool {
        if !(self.lo..=self.hi).contains(&v) {
            return false;
        }
        if u64::from(v) < self.next {
            self.free.remove(&v)
        } else {
            self.ahead.insert(v)
        }
    }

    pub fn release(&mut self, v: u32) {
        if !(self.lo..=self.hi).contains(&v) {
            return;
        }
        if u64::from(v) >= self.next {
            self.ahead.remove(&v);
            return;
        }
        self.free.insert(v);
        // Lowering the mark keeps `free` from holding a long tail.
        while self.next > u64::from(self.lo) && self.free.remove(&((self.next - 1) as u32)) {
            self.next -= 1;
        }
    }

    /// How many more values [`IdAllocator::allocate`] can hand out.
    pub fn available(&self) -> u64 {
        (u64::from(self.hi) + 1).saturating_sub(self.next) - self.ahead.len() as u64 + self.free.len() as u64
    }

    pub fn contains(&self, v: u32) -> bool {
        (self.lo..=self.hi).contains(&v)
            && if u64::from(v) < self.next { !self.free.contains(&v) } else { self.ahead.contains(&v) }
    }
}

/// ClusterIPs from a service CIDR. Like Kubernetes, the network and
/// broadcast addresses are never used, and the first host address (.1 in
/// 10.96.0.0/16) is held back for the `kubernetes` service: [`allocate`]
/// never returns it, but it can be [`reserve`]d explicitly.
///
/// [`allocate`]: ClusterIpAllocator::allocate
/// [`reserve`]: ClusterIpAllocator::reserve
#[derive(Debug, Clone)]
pub struct ClusterIpAllocator {
    network: u32,
    prefix_len: u8,
    /// Host offsets 2..=last.
    ids: IdAllocator,
    first_taken: bool,
}

impl ClusterIpAllocator {
    /// Host bits in `cidr` are ignored, as `--service-cluster-ip-range`
    /// ignores them.
    pub fn new(cidr: Ipv4Addr, prefix_len: u8) -> Result<Self, AllocError> {
        if !(8..=30).contains(&prefix_len) {
            return Err(AllocError::BadRange(cidr, prefix_len));
        }
        let host_bits = 32 - u32::from(prefix_len);
        let network = u32::from(cidr) & !((1u32 << host_bits) - 1);
        let last = (1u32 << host_bits) - 2;
        Ok(ClusterIpAllocator { network, prefix_len, ids: IdAllocator::new(2..=last), first_taken: false })
    }

    pub fn cidr(&self) -> (Ipv4Addr, u8) {
        (Ipv4Addr::from(self.network), self.prefix_len)
    }

    /// The host offset of `ip`, if it is in the range.
    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let host_bits = 32 - u32::from(self.prefix_len);
        let v = u32::from(ip);
        (v >> host_bits == self.network >> host_bits).then(|| v - self.network)
    }

    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        self.ids.allocate().map(|o| Ipv4Addr::from(self.network + o))
    }

    /// Takes an address a service asked for. Twill frontends may be any
    /// address, so one outside the range is fine and not tracked:
    /// Ok(false). Ok(true) means it is now held here.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> Result<bool, AllocError> {
        let Some(offset) = self.offset(ip) else { return Ok(false) };
        let taken = match offset {
            0 => return Err(AllocError::NotUsable(ip)),
            1 => !std::mem::replace(&mut self.first_taken, true),
            o if o > self.ids.hi => return Err(AllocError::NotUsable(ip)),
            o => self.ids.reserve(o),
        };
        if taken {
            Ok(true)
        } else {
            Err(AllocError::InUse(ip.to_string()))
        }
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        match self.offset(ip) {
            Some(1) => self.first_taken = false,
            Some(o) => self.ids.release(o),
            None => {}
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        match self.offset(ip) {
            Some(1) => self.first_taken,
            Some(o) => self.ids.contains(o),
            None => false,
        }
    }
}

/// Node ports from `--service-node-port-range`, for NodePort services that
/// did not ask for one.
#[derive(Debug, Clone)]
pub struct NodePortAllocator {
    ids: IdAllocator,
}

impl NodePortAllocator {
    pub fn new(range: RangeInclusive<u16>) -> Self {
        NodePortAllocator { ids: IdAllocator::new(u32::from(*range.start())..=u32::from(*range.end())) }
    }

    pub fn allocate(&mut self) -> Option<u16> {
        self.ids.allocate().map(|p| p as u16)
    }

    /// Ok(false) outside the range (not tracked), Ok(true) when taken now.
    pub fn reserve(&mut self, port: u16) -> Result<bool, AllocError> {
        let p = u32::from(port);
        if !(self.ids.lo..=self.ids.hi).contains(&p) {
            Ok(false)
        } else if self.ids.reserve(p) {
            Ok(true)
        } else {
            Err(AllocError::InUse(format!("node port {port}")))
        }
    }

    pub fn release(&mut self, port: u16) {
        self.ids.release(u32::from(port));
    }

    pub fn contains(&self, port: u16) -> bool {
        self.ids.contains(u32::from(port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn cluster_ips_skip_network_first_and_broadcast() {
        let mut a = ClusterIpAllocator::new(ip("10.96.7.7"), 30).unwrap();
        assert_eq!(a.cidr(), (ip("10.96.7.4"), 30));
        assert_eq!(a.allocate(), Some(ip("10.96.7.6")));
        assert_eq!(a.allocate(), None);
        assert_eq!(a.reserve(ip("10.96.7.5")), Ok(true));
        assert_eq!(a.reserve(ip("10.96.7.5")), Err(AllocError::InUse("10.96.7.5".into())));
        assert_eq!(a.reserve(ip("10.96.7.4")), Err(AllocError::NotUsable(ip("10.96.7.4"))));
        assert_eq!(a.reserve(ip("10.96.7.7")), Err(AllocError::NotUsable(ip("10.96.7.7"))));
        assert_eq!(a.reserve(ip("192.168.1.1")), Ok(false));
        assert!(a.contains(ip("10.96.7.5")) && a.contains(ip("10.96.7.6")));
        a.release(ip("10.96.7.6"));
        assert!(!a.contains(ip("10.96.7.6")));
        assert_eq!(a.allocate(), Some(ip("10.96.7.6")));
        assert!(ClusterIpAllocator::new(ip("10.0.0.0"), 31).is_err());
    }

    #[test]
    fn lowest_free_after_release_and_reservations_ahead() {
        let mut a = ClusterIpAllocator::new(ip("10.96.0.0"), 16).unwrap();
        assert_eq!(a.reserve(ip("10.96.0.4")), Ok(true));
        let got: Vec<Ipv4Addr> = (0..4).filter_map(|_| a.allocate()).collect();
        assert_eq!(got, [ip("10.96.0.2"), ip("10.96.0.3"), ip("10.96.0.5"), ip("10.96.0.6")]);
        a.release(ip("10.96.0.3"));
        a.release(ip("10.96.0.4"));
        assert_eq!(a.allocate(), Some(ip("10.96.0.3")));
        assert_eq!(a.allocate(), Some(ip("10.96.0.4")));
        assert_eq!(a.allocate(), Some(ip("10.96.0.7")));
    }

    #[test]
    fn thirty_thousand_allocations_are_cheap() {
        let start = std::time::Instant::now();
        let mut a = ClusterIpAllocator::new(ip("10.96.0.0"), 16).unwrap();
        let mut n = NodePortAllocator::new(1..=40000);
        for i in 0..30000u32 {
            assert_eq!(a.allocate(), Some(Ipv4Addr::from(u32::from(ip("10.96.0.2")) + i)));
            assert_eq!(n.allocate(), Some(i as u16 + 1));
        }
        for i in (0..30000u32).step_by(2) {
            n.release(i as u16 + 1);
        }
        assert_eq!(n.allocate(), Some(1));
        // Generous even for a loaded debug build; quadratic would take seconds.
        assert!(start.elapsed() < std::time::Duration::from_secs(2), "{:?}", start.elapsed());
    }

    #[test]
    fn node_ports() {
        let mut n = NodePortAllocator::new(30000..=30002);
        assert_eq!(n.reserve(30001), Ok(true));
        assert_eq!(n.reserve(30001), Err(AllocError::InUse("node port 30001".into())));
        assert_eq!(n.reserve(80), Ok(false));
        assert_eq!((n.allocate(), n.allocate(), n.allocate()), (Some(30000), Some(30002), None));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Against a model that scans for the lowest free value.
        #[test]
        fn matches_a_naive_model(ops in prop::collection::vec((0u8..3, 0u32..40), 0..200)) {
            let mut a = IdAllocator::new(1..=32);
            let mut used = [false; 41];
            for (op, v) in ops {
                match op {
                    0 => {
                        let want = (1..=32).find(|&i| !used[i as usize]);
                        prop_assert_eq!(a.allocate(), want);
                        if let Some(w) = want { used[w as usize] = true; }
                    }
                    1 => {
                        let ok = (1..=32).contains(&v) && !used[v as usize];
                        prop_assert_eq!(a.reserve(v), ok);
                        if ok { used[v as usize] = true; }
                    }
                    _ => {
                        a.release(v);
                        used[v as usize] = false;
                    }
                }
                prop_assert_eq!(a.available(), used[1..=32].iter().filter(|u| !**u).count() as u64);
                for i in 0..=40 {
                    prop_assert_eq!(a.contains(i), (1..=32).contains(&i) && used[i as usize]);
                }
            }
        }
    }
}
