use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const SIZE: u32 = 251;

/// What the datapath relies on, for every frontend.
fn consistent(d: &Desired) -> Result<(), String> {
    for (k, m) in d.services.iter().filter(|(k, _)| k.backend_slot == 0) {
        for slot in 1..=m.count {
            let s = d
                .services
                .get(&Lb4Key { backend_slot: slot, ..*k })
                .ok_or(format!("{k:?}: no slot {slot}"))?;
            if !d.backends.contains_key(&s.backend_id) {
                return Err(format!("{k:?} slot {slot}: no backend {}", s.backend_id));
            }
        }
        if !d.reverse_nat.contains_key(&m.rev_nat_index) {
            return Err(format!("{k:?}: no reverse NAT {}", m.rev_nat_index));
        }
        if m.flags & LB_F_MAGLEV != 0 && m.count > 0 {
            let t = d.maglev.get(&m.rev_nat_index).ok_or(format!("{k:?}: no Maglev table"))?;
            if let Some(id) = t.iter().find(|id| !d.backends.contains_key(id)) {
                return Err(format!("{k:?}: Maglev names missing backend {id}"));
            }
        }
    }
    Ok(())
}

/// Applies ops one by one to `kernel`, checking after every one.
fn apply_checked(kernel: &mut Desired, ops: &[Op]) -> Result<(), TestCaseError> {
    for (i, op) in ops.iter().enumerate() {
        kernel.apply(op);
        if let Err(e) = consistent(kernel) {
            return Err(TestCaseError::fail(format!("after op {i} {op:?} of {ops:#?}: {e}")));
        }
    }
    Ok(())
}

/// The state holds exactly the frontends of `services`, as resolved.
fn matches(state: &LbState, services: &BTreeMap<ServiceKey, ResolvedService>) -> Result<(), String> {
    let d = state.desired();
    let mut frontends = 0;
    let mut used = BTreeSet::new();
    for s in services.values() {
        for f in &s.frontends {
            frontends += 1;
            let addr = FrontendAddr::of(f);
            let rev = state.frontend_id(addr).ok_or(format!("{addr}: no id"))?;
            let m = d.services.get(&addr.key(0)).ok_or(format!("{addr}: no master"))?;
            if (m.count as usize, m.rev_nat_index, m.affinity_timeout)
                != (f.backends.len(), rev, f.affinity_timeout)
            {
                return Err(format!("{addr}: master {m:?}"));
            }
            let want_flags =
                u8::from(f.node_port) | if f.algorithm == Algorithm::Maglev { LB_F_MAGLEV } else { 0 };
            if m.flags != want_flags {
                return Err(format!("{addr}: flags {}", m.flags));
            }
            for (slot, &(address, port)) in (1..).zip(&f.backends) {
                let b = BackendAddr { address, port, protocol: f.protocol };
                used.insert(b);
                let id = d.services[&addr.key(slot)].backend_id;
                if d.backends.get(&id) != Some(&b.to_abi()) || state.backend_id(b) != Some(id) {
                    return Err(format!("{addr} slot {slot}: backend {id} is not {b}"));
                }
            }
            let reverse = d.reverse_nat.get(&rev).ok_or(format!("{addr}: no reverse NAT"))?;
            if (u32::from_be(reverse.address), u16::from_be(reverse.port)) != (u32::from(f.address), f.port) {
                return Err(format!("{addr}: reverse NAT {reverse:?}"));
            }
            let maglev = f.algorithm == Algorithm::Maglev && !f.backends.is_empty();
            if d.maglev.get(&rev).map(Vec::len) != maglev.then_some(SIZE as usize) {
                return Err(format!("{addr}: Maglev table"));
            }
        }
    }
    let masters = d.services.keys().filter(|k| k.backend_slot == 0).count();
    let slots = d.services.len() - masters;
    let want_slots: usize = services.values().flat_map(|s| &s.frontends).map(|f| f.backends.len()).sum();
    if (masters, slots, d.reverse_nat.len(), d.backends.len())
        != (frontends, want_slots, frontends, used.len())
    {
        return Err(format!("stale entries: {d:#?}"));
    }
    Ok(())
}

fn frontend(last: u8, port: u16, backends: &[(u8, u16)], maglev: bool) -> ResolvedFrontend {
    let mut backends: Vec<(Ipv4Addr, u16)> =
        backends.iter().map(|&(b, p)| (Ipv4Addr::new(10, 0, 0, b), p)).collect();
    backends.sort();
    backends.dedup();
    ResolvedFrontend {
        address: if last == 0 { Ipv4Addr::UNSPECIFIED } else { Ipv4Addr::new(10, 96, 0, last) },
        port,
        protocol: if port.is_multiple_of(2) { Protocol::Tcp } else { Protocol::Udp },
        node_port: last == 0,
        port_name: None,
        backends,
        algorithm: if maglev { Algorithm::Maglev } else { Algorithm::Random },
        affinity_timeout: u32::from(port) % 3,
    }
}

fn key(i: u8) -> ServiceKey {
    ServiceKey::new("default", format!("s{i}"))
}

fn service(i: u8, frontends: Vec<ResolvedFrontend>) -> ResolvedService {
    ResolvedService { key: key(i), frontends }
}

fn arb_frontend() -> impl Strategy<Value = ResolvedFrontend> {
    (0u8..4, 80u16..84, prop::collection::vec((1u8..8, 8080u16..8083), 0..6), any::<bool>())
        .prop_map(|(last, port, backends, maglev)| frontend(last, port, &backends, maglev))
}

/// Upsert (Some) or remove (None) one of a few services.
fn arb_step() -> impl Strategy<Value = (u8, Option<Vec<ResolvedFrontend>>)> {
    (0u8..4, prop::option::weighted(0.8, prop::collection::vec(arb_frontend(), 0..4)))
}

fn run(
    state: &mut LbState,
    kernel: &mut Desired,
    services: &mut BTreeMap<ServiceKey, ResolvedService>,
    (i, step): (u8, Option<Vec<ResolvedFrontend>>),
) -> Result<(), TestCaseError> {
    let ops = match step {
        Some(frontends) => {
            let s = service(i, frontends);
            let before = state.desired().clone();
            match state.upsert(&s) {
                Ok(ops) => {
                    services.insert(s.key.clone(), s);
                    ops
                }
                Err(_) => {
                    prop_assert_eq!(state.desired(), &before);
                    return Ok(());
                }
            }
        }
        None => {
            services.remove(&key(i));
            state.remove(&key(i))
        }
    };
    apply_checked(kernel, &ops)?;
    prop_assert_eq!(&*kernel, state.desired());
    matches(state, services).map_err(TestCaseError::fail)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_op_leaves_the_datapath_consistent(steps in prop::collection::vec(arb_step(), 1..12)) {
        let mut state = LbState::new(SIZE);
        let mut kernel = Desired::default();
        let mut services = BTreeMap::new();
        for step in steps {
            let ids_before: Vec<(BackendAddr, Option<u32>)> =
                state.backends.keys().map(|b| (*b, state.backend_id(*b))).collect();
            let revs_before: Vec<(FrontendAddr, Option<u32>)> =
                state.frontends.keys().map(|f| (*f, state.frontend_id(*f))).collect();
            run(&mut state, &mut kernel, &mut services, step)?;
            // What survives a step keeps its id.
            for (b, id) in ids_before {
                prop_assert!(state.backend_id(b).is_none() || state.backend_id(b) == id);
            }
            for (f, id) in revs_before {
                prop_assert!(state.frontend_id(f).is_none() || state.frontend_id(f) == id);
            }
        }
    }

    /// A restarted agent that gets the same services back writes nothing;
    /// one that gets fewer removes the rest, consistently.
    #[test]
    fn restore_adopts_ids_and_prunes_the_rest(
        steps in prop::collection::vec(arb_step(), 1..10),
        keep in prop::collection::vec(any::<bool>(), 4),
    ) {
        let mut state = LbState::new(SIZE);
        let mut kernel = Desired::default();
        let mut services = BTreeMap::new();
        for step in steps {
            run(&mut state, &mut kernel, &mut services, step)?;
        }
        let mut again = LbState::restore(SIZE, kernel.clone());
        for s in services.values() {
            prop_assert_eq!(again.upsert(s).unwrap(), vec![]);
        }
        prop_assert_eq!(again.prune(), vec![]);
        prop_assert_eq!(again.desired(), &kernel);

        let mut again = LbState::restore(SIZE, kernel.clone());
        services.retain(|k, _| keep[usize::from(k.name.as_bytes()[1] - b'0')]);
        for s in services.values() {
            let ops = again.upsert(s).unwrap();
            apply_checked(&mut kernel, &ops)?;
        }
        let ops = again.prune();
        apply_checked(&mut kernel, &ops)?;
        prop_assert_eq!(&kernel, again.desired());
        matches(&again, &services).map_err(TestCaseError::fail)?;
        for s in services.values().flat_map(|s| &s.frontends) {
            let f = FrontendAddr::of(s);
            prop_assert_eq!(again.frontend_id(f), state.frontend_id(f));
        }
    }
}

#[test]
fn addresses_and_ports_are_in_network_byte_order() {
    let f = FrontendAddr { address: Ipv4Addr::new(10, 96, 0, 10), port: 80, protocol: Protocol::Tcp };
    let k = f.key(3);
    assert_eq!(k.address.to_ne_bytes(), [10, 96, 0, 10]);
    assert_eq!(k.dport.to_ne_bytes(), [0, 80]);
    assert_eq!((k.backend_slot, k.proto), (3, 6));
    assert_eq!(FrontendAddr::of_key(&k), Some(f));
    let b = BackendAddr { address: Ipv4Addr::new(10, 0, 0, 5), port: 8080, protocol: Protocol::Udp };
    assert_eq!(b.to_abi().port.to_ne_bytes(), 8080u16.to_be_bytes());
    assert_eq!(BackendAddr::of_abi(&b.to_abi()), Some(b));
    assert_eq!(b.to_string(), "10.0.0.5:8080/UDP");
}

fn positions(ops: &[Op], pred: impl Fn(&Op) -> bool) -> Vec<usize> {
    ops.iter().enumerate().filter(|(_, op)| pred(op)).map(|(i, _)| i).collect()
}

#[test]
fn growing_writes_slots_before_the_master_and_shrinking_after() {
    let mut state = LbState::new(SIZE);
    let master = frontend(1, 80, &[], false);
    let master_key = FrontendAddr::of(&master).key(0);
    let is_master = |op: &Op| matches!(op, Op::UpsertService(k, _) if *k == master_key);
    let ops = state.upsert(&service(0, vec![frontend(1, 80, &[(1, 8080)], false)])).unwrap();
    let ops2 =
        state.upsert(&service(0, vec![frontend(1, 80, &[(1, 8080), (2, 8080), (3, 8080)], false)])).unwrap();
    for ops in [&ops, &ops2] {
        let m = positions(ops, is_master);
        let slots = positions(ops, |op| matches!(op, Op::UpsertService(k, _) if k.backend_slot > 0));
        let backends = positions(ops, |op| matches!(op, Op::UpsertBackend(..)));
        assert_eq!(m.len(), 1, "{ops:?}");
        assert!(slots.iter().chain(&backends).all(|&s| s < m[0]), "{ops:?}");
        assert!(backends.iter().all(|&b| slots.iter().all(|&s| b < s)), "{ops:?}");
    }
    // Backend 1 keeps its id, the new ones take the next.
    assert_eq!(ops2.iter().filter(|op| matches!(op, Op::UpsertBackend(..))).count(), 2);
    let ops = state.upsert(&service(0, vec![frontend(1, 80, &[(3, 8080)], false)])).unwrap();
    let m = positions(&ops, is_master)[0];
    let removed = positions(&ops, |op| matches!(op, Op::RemoveService(_)));
    let gone = positions(&ops, |op| matches!(op, Op::RemoveBackend(_)));
    assert_eq!((removed.len(), gone.len()), (2, 2), "{ops:?}");
    assert!(removed.iter().all(|&r| r > m) && gone.iter().all(|&g| g > removed[1]), "{ops:?}");
    // The same again writes nothing.
    assert_eq!(state.upsert(&service(0, vec![frontend(1, 80, &[(3, 8080)], false)])).unwrap(), vec![]);
    let _ = master;
}

#[test]
fn a_removed_frontend_goes_master_first_then_slots_maglev_reverse_nat_and_backends() {
    let mut state = LbState::new(SIZE);
    state.upsert(&service(0, vec![frontend(1, 80, &[(1, 8080), (2, 8080)], true)])).unwrap();
    let ops = state.remove(&key(0));
    let kinds: Vec<&str> = ops
        .iter()
        .map(|op| match op {
            Op::RemoveService(k) if k.backend_slot == 0 => "master",
            Op::RemoveService(_) => "slot",
            Op::RemoveMaglev(_) => "maglev",
            Op::RemoveReverseNat(_) => "revnat",
            Op::RemoveBackend(_) => "backend",
            _ => "write",
        })
        .collect();
    assert_eq!(kinds, ["master", "slot", "slot", "maglev", "revnat", "backend", "backend"]);
    assert_eq!(state.desired(), &Desired::default());
}

#[test]
fn a_frontend_with_no_backends_keeps_a_master_with_count_zero() {
    let mut state = LbState::new(SIZE);
    state.upsert(&service(0, vec![frontend(1, 80, &[(1, 8080)], true)])).unwrap();
    let ops = state.upsert(&service(0, vec![frontend(1, 80, &[], true)])).unwrap();
    let f = FrontendAddr { address: Ipv4Addr::new(10, 96, 0, 1), port: 80, protocol: Protocol::Tcp };
    let m = state.desired().services[&f.key(0)];
    assert_eq!((m.count, m.flags), (0, LB_F_MAGLEV));
    assert!(state.desired().maglev.is_empty() && state.desired().backends.is_empty());
    assert!(matches!(ops[0], Op::UpsertService(k, _) if k.backend_slot == 0), "{ops:?}");
}

#[test]
fn frontends_belong_to_one_service_and_errors_change_nothing() {
    let mut state = LbState::new(SIZE);
    state.upsert(&service(0, vec![frontend(0, 80, &[(1, 8080)], false)])).unwrap();
    let before = state.desired().clone();
    let err = state.upsert(&service(1, vec![frontend(2, 80, &[], false), frontend(0, 80, &[], false)]));
    assert_eq!(err.unwrap_err().to_string(), "frontend 0.0.0.0:80/TCP already belongs to service default/s0");
    let twice = state.upsert(&service(1, vec![frontend(2, 80, &[], false), frontend(2, 80, &[], false)]));
    assert!(matches!(twice, Err(StateError::DuplicateFrontend { .. })));
    assert_eq!(state.desired(), &before);
    assert_eq!(state.frontend_id(FrontendAddr::of(&frontend(2, 80, &[], false))), None);
    // The first free id goes to the next frontend: nothing leaked.
    state.upsert(&service(1, vec![frontend(2, 80, &[], false)])).unwrap();
    assert_eq!(state.frontend_id(FrontendAddr::of(&frontend(2, 80, &[], false))), Some(2));
}

#[test]
fn plan_against_foreign_kernel_contents_removes_orphans() {
    let mut kernel = Desired::default();
    let f = FrontendAddr { address: Ipv4Addr::new(10, 96, 0, 9), port: 53, protocol: Protocol::Udp };
    // A slot with no master, and a backend nothing names.
    kernel.services.insert(f.key(4), Lb4Service { backend_id: 9, ..Default::default() });
    kernel.backends.insert(
        9,
        BackendAddr { address: Ipv4Addr::new(10, 0, 0, 9), port: 53, protocol: Protocol::Udp }.to_abi(),
    );
    let mut state = LbState::restore(SIZE, kernel.clone());
    let ops = state.upsert(&service(0, vec![frontend(1, 81, &[(9, 53)], false)])).unwrap();
    apply_checked(&mut kernel, &ops).unwrap();
    // The adopted backend keeps id 9 and is not rewritten.
    assert!(!ops.iter().any(|op| matches!(op, Op::UpsertBackend(..))), "{ops:?}");
    let ops = state.prune();
    assert_eq!(ops, [Op::RemoveService(f.key(4))]);
}

#[test]
fn one_change_among_thirty_thousand_services_writes_only_that_service() {
    let mut state = LbState::new(SIZE);
    let resolved = |i: u32, backends: &[u8]| ResolvedService {
        key: ServiceKey::new("default", format!("s{i}")),
        frontends: vec![ResolvedFrontend {
            address: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i),
            port: 80,
            protocol: Protocol::Tcp,
            node_port: false,
            port_name: None,
            backends: backends.iter().map(|&b| (Ipv4Addr::new(10, 1, (i >> 8) as u8, b), 8080)).collect(),
            algorithm: Algorithm::Random,
            affinity_timeout: 0,
        }],
    };
    for i in 0..30_000 {
        state.upsert(&resolved(i, &[1, 2])).unwrap();
    }
    let ops = state.upsert(&resolved(7, &[1, 3])).unwrap();
    // Backend .3 (new), slot 2, and nothing else: .2 is shared with s0..s255.
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert!(
        matches!(ops[0], Op::UpsertBackend(..))
            && matches!(ops[1], Op::UpsertService(k, _) if k.backend_slot == 2)
    );
    assert_eq!(state.remove(&ServiceKey::new("default", "s8")).len(), 4);
    assert_eq!(state.desired().reverse_nat.len(), 29_999);
}
