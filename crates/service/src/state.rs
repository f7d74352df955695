//! The load-balancer maps as they should be, kept up to date one service
//! at a time, and the ordered writes that take the kernel there without
//! the datapath ever reading a frontend whose slots, backends, reverse
//! translation or Maglev table are missing.
//!
//! [`LbState`] owns the ids: a backend (address, port, protocol) keeps its
//! id while any frontend uses it, and a frontend (address, port,
//! protocol) keeps its `rev_nat_index` while it exists, so affinity and
//! reverse translation survive updates. Ids are the lowest free, and are
//! allocated before any are freed in one update, so an id never changes
//! meaning within one batch of writes.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
};

use twill_abi::{
    Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service, LB_F_MAGLEV, LB_F_NODEPORT, MAX_LB_BACKENDS,
    MAX_LB_FRONTENDS,
};

use crate::{
    alloc::IdAllocator,
    maglev,
    model::{Algorithm, Protocol, ServiceKey},
    resolve::{ResolvedFrontend, ResolvedService},
};

/// Contents of the four load-balancer maps (the Maglev map as one table
/// per rev_nat_index). Values are the abi structs, in network byte order
/// where the abi says so. Load the kernel's maps into one of these to
/// [`plan`] against them or to [`LbState::restore`] from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub services: BTreeMap<Lb4Key, Lb4Service>,
    pub backends: BTreeMap<u32, Lb4Backend>,
    pub reverse_nat: BTreeMap<u32, Lb4ReverseNat>,
    pub maglev: BTreeMap<u32, Vec<u32>>,
}

/// One map write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    UpsertBackend(u32, Lb4Backend),
    UpsertReverseNat(u32, Lb4ReverseNat),
    SetMaglev(u32, Vec<u32>),
    UpsertService(Lb4Key, Lb4Service),
    RemoveService(Lb4Key),
    RemoveMaglev(u32),
    RemoveReverseNat(u32),
    RemoveBackend(u32),
}

/// A frontend, in host byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendAddr {
    /// 0.0.0.0 for NodePort.
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

impl FrontendAddr {
    pub fn key(self, slot: u16) -> Lb4Key {
        Lb4Key {
            address: u32::from(self.address).to_be(),
            dport: self.port.to_be(),
            backend_slot: slot,
            proto: self.protocol.number(),
            pad: [0; 3],
        }
    }

    /// None for a protocol Twill does not balance.
    pub fn of_key(key: &Lb4Key) -> Option<FrontendAddr> {
        Some(FrontendAddr {
            address: Ipv4Addr::from(u32::from_be(key.address)),
            port: u16::from_be(key.dport),
            protocol: Protocol::from_number(key.proto)?,
        })
    }

    fn of(f: &ResolvedFrontend) -> FrontendAddr {
        FrontendAddr { address: f.address, port: f.port, protocol: f.protocol }
    }
}

impl fmt::Display for FrontendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.address, self.port, self.protocol)
    }
}

/// A backend, in host byte order. Its Display is its Maglev name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

impl BackendAddr {
    pub fn to_abi(self) -> Lb4Backend {
        Lb4Backend {
            address: u32::from(self.address).to_be(),
            port: self.port.to_be(),
            proto: self.protocol.number(),
            flags: 0,
        }
    }

    pub fn of_abi(b: &Lb4Backend) -> Option<BackendAddr> {
        Some(BackendAddr {
            address: Ipv4Addr::from(u32::from_be(b.address)),
            port: u16::from_be(b.port),
            protocol: Protocol::from_number(b.proto)?,
        })
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.address, self.port, self.protocol)
    }
}

impl Desired {
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::UpsertBackend(id, b) => {
                self.backends.insert(*id, *b);
            }
            Op::UpsertReverseNat(id, r) => {
                self.reverse_nat.insert(*id, *r);
            }
            Op::SetMaglev(id, t) => {
                self.maglev.insert(*id, t.clone());
            }
            Op::UpsertService(k, v) => {
                self.services.insert(*k, *v);
            }
            Op::RemoveService(k) => {
                self.services.remove(k);
            }
            Op::RemoveMaglev(id) => {
                self.maglev.remove(id);
            }
            Op::RemoveReverseNat(id) => {
                self.reverse_nat.remove(id);
            }
            Op::RemoveBackend(id) => {
                self.backends.remove(id);
            }
        }
    }

    /// Every entry of `twill_lb4_services` for one frontend, its master
    /// (slot 0) first. Slots sort between address/port and protocol, so
    /// the range holds the other protocol's slots too.
    pub fn frontend_entries(&self, f: FrontendAddr) -> impl Iterator<Item = (&Lb4Key, &Lb4Service)> {
        let lo = f.key(0);
        let hi = Lb4Key { backend_slot: u16::MAX, proto: u8::MAX, pad: [u8::MAX; 3], ..lo };
        self.services.range(lo..=hi).filter(move |(k, _)| k.proto == lo.proto)
    }

    /// Copies one frontend's entries from `from`, and the reverse
    /// translation and Maglev table of `rev` if its master names that id.
    /// Foreign kernel contents may have a master naming another
    /// frontend's id, whose entries are not this frontend's to remove.
    fn copy_frontend(&mut self, from: &Desired, f: FrontendAddr, rev: Option<u32>) {
        for (k, v) in from.frontend_entries(f) {
            self.services.insert(*k, *v);
            if k.backend_slot == 0 && Some(v.rev_nat_index) == rev {
                if let Some(r) = from.reverse_nat.get(&v.rev_nat_index) {
                    self.reverse_nat.insert(v.rev_nat_index, *r);
                }
                if let Some(t) = from.maglev.get(&v.rev_nat_index) {
                    self.maglev.insert(v.rev_nat_index, t.clone());
                }
            }
        }
    }
}

/// The writes that turn `old` into `new`, in an order that keeps every
/// frontend consistent after each one: backends, reverse translations and
/// Maglev tables first; then per frontend the slots, the master, and the
/// slots past a smaller count; a frontend that goes loses its master
/// first; last the Maglev tables, reverse translations and backends that
/// nothing names any more.
///
/// `old` may be what the kernel maps hold. An id whose value differs
/// between the two is rewritten in place; [`LbState`] never reuses an id
/// within one plan, so that only happens against foreign kernel contents.
pub fn plan(old: &Desired, new: &Desired) -> Vec<Op> {
    let mut ops = Vec::new();
    for (id, b) in &new.backends {
        if old.backends.get(id) != Some(b) {
            ops.push(Op::UpsertBackend(*id, *b));
        }
    }
    for (id, r) in &new.reverse_nat {
        if old.reverse_nat.get(id) != Some(r) {
            ops.push(Op::UpsertReverseNat(*id, *r));
        }
    }
    for (id, t) in &new.maglev {
        if old.maglev.get(id) != Some(t) {
            ops.push(Op::SetMaglev(*id, t.clone()));
        }
    }
    let frontends: BTreeSet<Lb4Key> =
        old.services.keys().chain(new.services.keys()).map(|k| Lb4Key { backend_slot: 0, ..*k }).collect();
    for master in frontends {
        fn slots(d: &Desired, master: Lb4Key) -> impl Iterator<Item = (&Lb4Key, &Lb4Service)> {
            let hi = Lb4Key { backend_slot: u16::MAX, ..master };
            d.services.range(master..=hi).filter(move |(k, _)| k.proto == master.proto && k.backend_slot > 0)
        }
        let old_master = old.services.get(&master);
        let new_master = new.services.get(&master);
        if old_master.is_some() && new_master.is_none() {
            ops.push(Op::RemoveService(master));
        }
        for (k, v) in slots(new, master) {
            if old.services.get(k) != Some(v) {
                ops.push(Op::UpsertService(*k, *v));
            }
        }
        if let Some(m) = new_master {
            if old_master != Some(m) {
                ops.push(Op::UpsertService(master, *m));
            }
        }
        for (k, _) in slots(old, master) {
            if !new.services.contains_key(k) {
                ops.push(Op::RemoveService(*k));
            }
        }
    }
    ops.extend(old.maglev.keys().filter(|id| !new.maglev.contains_key(id)).map(|id| Op::RemoveMaglev(*id)));
    ops.extend(
        old.reverse_nat
            .keys()
            .filter(|id| !new.reverse_nat.contains_key(id))
            .map(|id| Op::RemoveReverseNat(*id)),
    );
    ops.extend(
        old.backends.keys().filter(|id| !new.backends.contains_key(id)).map(|id| Op::RemoveBackend(*id)),
    );
    ops
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("frontend {frontend} already belongs to service {owner}")]
    FrontendInUse { frontend: FrontendAddr, owner: ServiceKey },
    #[error("service {service} names frontend {frontend} twice")]
    DuplicateFrontend { service: ServiceKey, frontend: FrontendAddr },
    #[error("no free {0} ids are left (the datapath's map is full)")]
    Full(&'static str),
}

#[derive(Debug, Clone)]
struct FrontendId {
    rev: u32,
    /// None: adopted from the kernel at restore, not claimed yet.
    owner: Option<ServiceKey>,
}

/// What one service put in the maps, to undo it on the next update.
#[derive(Debug, Clone)]
struct Stored {
    frontend: FrontendAddr,
    backends: Vec<BackendAddr>,
    maglev: bool,
}

/// Ids allocated for one update before anything else changes, so that a
/// full id space fails the update without touching the state.
struct Prepared {
    revs: Vec<u32>,
    new_backends: BTreeMap<BackendAddr, u32>,
}

/// The desired load-balancer state, updated per service: [`upsert`] and
/// [`remove`] cost what the one service has, however many others exist,
/// and return the ops that take the kernel from the previous state to the
/// new one.
///
/// [`upsert`]: LbState::upsert
/// [`remove`]: LbState::remove
#[derive(Debug, Clone)]
pub struct LbState {
    maglev_size: u32,
    desired: Desired,
    backend_ids: IdAllocator,
    rev_ids: IdAllocator,
    /// Id and reference count: the frontends that use the backend.
    backends: BTreeMap<BackendAddr, (u32, u32)>,
    frontends: BTreeMap<FrontendAddr, FrontendId>,
    services: BTreeMap<ServiceKey, Vec<Stored>>,
}

impl LbState {
    /// `maglev_size` is the datapath's table size (see
    /// [`maglev::check_size`]).
    pub fn new(maglev_size: u32) -> Self {
        LbState::restore(maglev_size, Desired::default())
    }

    /// A state that starts from what the kernel maps hold after an agent
    /// restart. Their frontends and backends keep their ids when services
    /// claim them again through [`upsert`](LbState::upsert), and the first
    /// upsert of each service writes only what differs. Once every service
    /// is back, [`prune`](LbState::prune) removes what none claimed.
    /// Entries that cannot be adopted (an unknown protocol, an id taken
    /// twice) are left for `prune`.
    pub fn restore(maglev_size: u32, kernel: Desired) -> Self {
        let mut state = LbState {
            maglev_size,
            desired: Desired::default(),
            backend_ids: IdAllocator::new(1..=MAX_LB_BACKENDS as u32 - 1),
            rev_ids: IdAllocator::new(1..=MAX_LB_FRONTENDS as u32 - 1),
            backends: BTreeMap::new(),
            frontends: BTreeMap::new(),
            services: BTreeMap::new(),
        };
        for (k, v) in kernel.services.iter().filter(|(k, _)| k.backend_slot == 0) {
            if let Some(f) = FrontendAddr::of_key(k) {
                if state.rev_ids.reserve(v.rev_nat_index) {
                    state.frontends.insert(f, FrontendId { rev: v.rev_nat_index, owner: None });
                }
            }
        }
        for (id, b) in &kernel.backends {
            if let Some(addr) = BackendAddr::of_abi(b) {
                if !state.backends.contains_key(&addr) && state.backend_ids.reserve(*id) {
                    state.backends.insert(addr, (*id, 0));
                }
            }
        }
        state.desired = kernel;
        state
    }

    /// What the maps hold once every op returned so far is applied.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// The `rev_nat_index` of a frontend.
    pub fn frontend_id(&self, f: FrontendAddr) -> Option<u32> {
        self.frontends.get(&f).map(|id| id.rev)
    }

    pub fn backend_id(&self, b: BackendAddr) -> Option<u32> {
        self.backends.get(&b).map(|(id, _)| *id)
    }

    /// Sets one service's frontends. Nothing changes on error: a frontend
    /// another service has, a frontend named twice, or no free ids.
    pub fn upsert(&mut self, service: &ResolvedService) -> Result<Vec<Op>, StateError> {
        let prepared = self.prepare(&service.key, &service.frontends)?;
        Ok(self.commit(&service.key, &service.frontends, prepared))
    }

    pub fn remove(&mut self, key: &ServiceKey) -> Vec<Op> {
        let none = Prepared { revs: Vec::new(), new_backends: BTreeMap::new() };
        self.commit(key, &[], none)
    }

    /// After a restore, removes every entry no service claimed.
    pub fn prune(&mut self) -> Vec<Op> {
        let mut target = Desired::default();
        for stored in self.services.values().flatten() {
            target.copy_frontend(&self.desired, stored.frontend, self.frontend_id(stored.frontend));
        }
        for (addr, (id, refs)) in &self.backends {
            if *refs > 0 {
                target.backends.insert(*id, addr.to_abi());
            }
        }
        let ops = plan(&self.desired, &target);
        self.desired = target;
        let (rev_ids, backend_ids) = (&mut self.rev_ids, &mut self.backend_ids);
        self.frontends.retain(|_, f| {
            f.owner.is_some() || {
                rev_ids.release(f.rev);
                false
            }
        });
        self.backends.retain(|_, (id, refs)| {
            *refs > 0 || {
                backend_ids.release(*id);
                false
            }
        });
        ops
    }

    fn prepare(&mut self, key: &ServiceKey, frontends: &[ResolvedFrontend]) -> Result<Prepared, StateError> {
        let mut seen = BTreeSet::new();
        let mut new_frontends = 0;
        let mut new_backends: BTreeMap<BackendAddr, u32> = BTreeMap::new();
        for f in frontends {
            let addr = FrontendAddr::of(f);
            if !seen.insert(addr) {
                return Err(StateError::DuplicateFrontend { service: key.clone(), frontend: addr });
            }
            match self.frontends.get(&addr) {
                Some(FrontendId { owner: Some(owner), .. }) if owner != key => {
                    return Err(StateError::FrontendInUse { frontend: addr, owner: owner.clone() })
                }
                Some(_) => {}
                None => new_frontends += 1,
            }
            for &(address, port) in &f.backends {
                let b = BackendAddr { address, port, protocol: f.protocol };
                if !self.backends.contains_key(&b) {
                    new_backends.insert(b, 0);
                }
            }
        }
        if self.rev_ids.available() < new_frontends {
            return Err(StateError::Full("frontend"));
        }
        if self.backend_ids.available() < new_backends.len() as u64 {
            return Err(StateError::Full("backend"));
        }
        let mut revs = Vec::with_capacity(frontends.len());
        for f in frontends {
            let rev = match self.frontends.get(&FrontendAddr::of(f)) {
                Some(id) => Some(id.rev),
                None => self.rev_ids.allocate(),
            };
            revs.push(rev.ok_or(StateError::Full("frontend"))?);
        }
        for id in new_backends.values_mut() {
            *id = self.backend_ids.allocate().ok_or(StateError::Full("backend"))?;
        }
        Ok(Prepared { revs, new_backends })
    }

    fn commit(&mut self, key: &ServiceKey, frontends: &[ResolvedFrontend], prepared: Prepared) -> Vec<Op> {
        let old_stored = self.services.remove(key).unwrap_or_default();
        let mut old = Desired::default();
        let touched = old_stored.iter().map(|s| s.frontend).chain(frontends.iter().map(FrontendAddr::of));
        for addr in touched {
            old.copy_frontend(&self.desired, addr, self.frontend_id(addr));
        }
        for (addr, id) in prepared.new_backends {
            self.backends.insert(addr, (id, 0));
        }

        let mut new = Desired::default();
        let mut stored = Vec::with_capacity(frontends.len());
        for (f, rev) in frontends.iter().zip(prepared.revs) {
            let addr = FrontendAddr::of(f);
            self.frontends.insert(addr, FrontendId { rev, owner: Some(key.clone()) });
            let backends: Vec<BackendAddr> = f
                .backends
                .iter()
                .take(usize::from(u16::MAX))
                .map(|&(address, port)| BackendAddr { address, port, protocol: f.protocol })
                .collect();
            let mut ids = Vec::with_capacity(backends.len());
            for b in &backends {
                let Some(entry) = self.backends.get_mut(b) else { continue };
                entry.1 += 1;
                ids.push(entry.0);
                let abi = b.to_abi();
                if self.desired.backends.get(&entry.0) != Some(&abi) {
                    new.backends.insert(entry.0, abi);
                }
            }
            let maglev = f.algorithm == Algorithm::Maglev;
            let flags = if f.node_port { LB_F_NODEPORT } else { 0 } | if maglev { LB_F_MAGLEV } else { 0 };
            let master = Lb4Service {
                backend_id: 0,
                affinity_timeout: f.affinity_timeout,
                rev_nat_index: rev,
                count: ids.len() as u16,
                flags,
                pad: 0,
            };
            new.services.insert(addr.key(0), master);
            for (slot, id) in (1..=u16::MAX).zip(&ids) {
                let entry =
                    Lb4Service { backend_id: *id, rev_nat_index: rev, flags, ..Lb4Service::default() };
                new.services.insert(addr.key(slot), entry);
            }
            let reverse =
                Lb4ReverseNat { address: u32::from(f.address).to_be(), port: f.port.to_be(), pad: 0 };
            new.reverse_nat.insert(rev, reverse);
            if maglev && !ids.is_empty() {
                let unchanged =
                    old_stored.iter().any(|s| s.frontend == addr && s.maglev && s.backends == backends);
                let table = match old.maglev.get(&rev) {
                    Some(t) if unchanged && t.len() == self.maglev_size as usize => t.clone(),
                    _ => {
                        let named: Vec<(String, u32)> =
                            backends.iter().zip(&ids).map(|(b, id)| (b.to_string(), *id)).collect();
                        maglev::table(&named, self.maglev_size)
                    }
                };
                new.maglev.insert(rev, table);
            }
            stored.push(Stored { frontend: addr, backends, maglev });
        }

        // Freed only now, so nothing allocated above reused them.
        for s in &old_stored {
            for b in &s.backends {
                if let Some(entry) = self.backends.get_mut(b) {
                    entry.1 = entry.1.saturating_sub(1);
                    if entry.1 == 0 {
                        let id = entry.0;
                        self.backends.remove(b);
                        self.backend_ids.release(id);
                        if let Some(v) = self.desired.backends.get(&id) {
                            old.backends.insert(id, *v);
                        }
                    }
                }
            }
            if !stored.iter().any(|n| n.frontend == s.frontend) {
                if let Some(id) = self.frontends.remove(&s.frontend) {
                    self.rev_ids.release(id.rev);
                }
            }
        }
        if !stored.is_empty() {
            self.services.insert(key.clone(), stored);
        }
        let ops = plan(&old, &new);
        for op in &ops {
            self.desired.apply(op);
        }
        ops
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
