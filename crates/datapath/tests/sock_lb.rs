//! Socket load balancing through the cgroup hooks, on a real kernel: a test
//! cgroup with the sock programs, backends in a test namespace, and a
//! client process (python3) that joined the cgroup and the namespace.

mod common;

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::{Duration, Instant},
};

use common::*;
use twill_abi::{
    DatapathConfig, FlowEvent, Lb4ReverseNat, LbNetnsValue, DROP_NO_SERVICE, EVENTS_DROP, EVENT_DROP,
    LB_F_MAGLEV, LB_MAGLEV_DEFAULT_SIZE, METRIC_DIR_EGRESS,
};
use twill_datapath::{cgroup2_mount, netns_cookie, Datapath};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// Everything one test makes, removed on drop (also when it fails): the
/// links' pins and maps, the cgroup, the namespaces, the servers.
struct Fixture {
    dp: Datapath,
    root: PathBuf,
    cgroup: PathBuf,
    served: String,
    other: String,
    _servers: Servers,
    _netns: Netns,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let name = format!("twlb-{tag}-{}", std::process::id());
        let mut netns = Netns(Vec::new());
        let served = netns.add(&format!("{name}-a"));
        let other = netns.add(&format!("{name}-b"));
        for a in ["127.0.0.2/8", "127.0.0.3/8"] {
            ip(&["-n", &served, "addr", "add", a, "dev", "lo"]);
        }
        // The unserved namespace owns the VIP itself: a connect that is not
        // translated reaches this server instead of a backend.
        ip(&["-n", &other, "addr", "add", "10.96.0.10/32", "dev", "lo"]);
        let mut servers = Servers::default();
        for (i, name) in ["b1", "b2", "b3"].into_iter().enumerate() {
            let addr = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1 + i as u8), 8001 + i as u16);
            servers.tcp(&served, addr, name);
            servers.udp(&served, addr, name);
        }
        servers.tcp(&other, SocketAddrV4::new(VIP, 80), "direct");

        let root = PathBuf::from(format!("/sys/fs/bpf/{name}"));
        let cgroup = cgroup2_mount().expect("a cgroup2 mount").join(&name);
        std::fs::create_dir(&cgroup).unwrap();
        // Attached by two loads in turn: the second swaps its programs into
        // the links the first pinned, as a restarted agent does.
        let mut first = Datapath::load(&root).unwrap();
        let mut fixture = Fixture {
            dp: Datapath::load(&root).unwrap(),
            root,
            cgroup,
            served,
            other,
            _servers: servers,
            _netns: netns,
        };
        first.attach_sock(&fixture.cgroup).unwrap();
        drop(first);
        fixture.dp.attach_sock(&fixture.cgroup).unwrap();
        let cookie = netns_cookie(&PathBuf::from(format!("/run/netns/{}", fixture.served))).unwrap();
        fixture.dp.netns_map().upsert(cookie, LbNetnsValue { endpoint_id: 42, identity: 4242 }).unwrap();
        for (i, port) in [8001u16, 8002, 8003].into_iter().enumerate() {
            let id = i as u32 + 1;
            let maps = fixture.dp.lb_maps();
            maps.upsert_backend(id, backend(Ipv4Addr::new(127, 0, 0, id as u8), port, TCP)).unwrap();
            maps.upsert_backend(10 + id, backend(Ipv4Addr::new(127, 0, 0, id as u8), port, UDP)).unwrap();
        }
        fixture
    }

    /// Runs the client in `netns`, inside the test cgroup.
    fn client(&self, netns: &str, mode: &str, addr: SocketAddrV4, count: usize) -> Vec<String> {
        client(netns, Some(&self.cgroup.join("cgroup.procs")), mode, addr, count, 5.0)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.dp.detach_sock();
        // Clients have exited (output() waited), so the cgroup is empty.
        let _ = std::fs::remove_dir(&self.cgroup);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn vip(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(VIP, port)
}

fn servers_of(lines: &[String]) -> BTreeSet<String> {
    lines.iter().map(|l| l.split(' ').next().unwrap().to_string()).collect()
}

#[test]
fn connects_reach_both_backends_and_see_the_frontend() {
    let mut f = Fixture::new("rand");
    write_service(f.dp.lb_maps(), frontend(VIP, 80, TCP, 0), 1, &[1, 2], 0, 0);
    f.dp.lb_maps()
        .upsert_reverse_nat(1, Lb4ReverseNat { address: be32(VIP), port: 80u16.to_be(), pad: 0 })
        .unwrap();

    let lines = f.client(&f.served.clone(), "tcp", vip(80), 50);
    assert_eq!(lines.len(), 50, "{lines:?}");
    for line in &lines {
        assert!(line == "b1 10.96.0.10:80" || line == "b2 10.96.0.10:80", "{line}: {lines:?}");
    }
    assert_eq!(servers_of(&lines), BTreeSet::from(["b1".into(), "b2".into()]), "{lines:?}");

    // A namespace this node does not serve is left alone.
    let lines = f.client(&f.other.clone(), "tcp", vip(80), 3);
    assert_eq!(lines, vec!["direct 10.96.0.10:80"; 3]);
}

#[test]
fn udp_replies_come_from_the_frontend() {
    let mut f = Fixture::new("udp");
    write_service(f.dp.lb_maps(), frontend(VIP, 53, UDP, 0), 2, &[11, 12], 0, 0);

    let lines = f.client(&f.served.clone(), "udp", vip(53), 20);
    assert_eq!(lines.len(), 20, "{lines:?}");
    for line in &lines {
        assert!(line == "b1 10.96.0.10:53" || line == "b2 10.96.0.10:53", "{line}: {lines:?}");
    }
    assert_eq!(servers_of(&lines).len(), 2, "{lines:?}");
}

#[test]
fn client_affinity_sticks_to_one_backend() {
    let mut f = Fixture::new("aff");
    write_service(f.dp.lb_maps(), frontend(VIP, 80, TCP, 0), 3, &[1, 2, 3], 600, 0);
    let lines = f.client(&f.served.clone(), "tcp", vip(80), 20);
    assert_eq!(lines.len(), 20, "{lines:?}");
    assert_eq!(servers_of(&lines).len(), 1, "affinity must keep one backend: {lines:?}");
    let first = servers_of(&lines).into_iter().next().unwrap();

    // The remembered backend leaves the frontend: affinity must not send
    // clients to it any more.
    let keep: Vec<u32> = [1u32, 2, 3].into_iter().filter(|id| format!("b{id}") != first).collect();
    let maps = f.dp.lb_maps();
    maps.remove_service(frontend(VIP, 80, TCP, 3)).unwrap();
    write_service(maps, frontend(VIP, 80, TCP, 0), 3, &keep, 600, 0);
    let lines = f.client(&f.served.clone(), "tcp", vip(80), 10);
    assert!(!servers_of(&lines).contains(&first), "{first} was removed: {lines:?}");
    assert_eq!(servers_of(&lines).len(), 1, "{lines:?}");
}

#[test]
fn maglev_picks_from_the_table_only() {
    let mut f = Fixture::new("maglev");
    let size = LB_MAGLEV_DEFAULT_SIZE;
    f.dp.set_config(DatapathConfig { maglev_table_size: size, ..f.dp.config().unwrap() }).unwrap();
    write_service(f.dp.lb_maps(), frontend(VIP, 80, TCP, 0), 4, &[1, 2], 0, LB_F_MAGLEV);

    // Every entry backend 2: a random choice would also give backend 1.
    let only_two = vec![2u32; size as usize];
    f.dp.lb_maps().set_maglev(4, &only_two).unwrap();
    let lines = f.client(&f.served.clone(), "tcp", vip(80), 20);
    assert_eq!(lines, vec!["b2 10.96.0.10:80"; 20]);

    // Alternating 1 and 2 (backend 3 exists, for another service),
    // rewritten in place.
    let table: Vec<u32> = (0..size).map(|i| 1 + i % 2).collect();
    let start = Instant::now();
    f.dp.lb_maps().set_maglev(4, &table).unwrap();
    let in_place = start.elapsed();
    assert_eq!(f.dp.lb_maps().maglev().unwrap(), vec![(4, table.clone())]);
    let lines = f.client(&f.served.clone(), "tcp", vip(80), 40);
    assert_eq!(servers_of(&lines), BTreeSet::from(["b1".into(), "b2".into()]), "{lines:?}");

    // A new table (another frontend): filled, then swapped in.
    let start = Instant::now();
    f.dp.lb_maps().set_maglev(40, &table).unwrap();
    let swapped = start.elapsed();
    assert_eq!(f.dp.lb_maps().maglev().unwrap().len(), 2);
    f.dp.lb_maps().remove_maglev(40).unwrap();

    // What one syscall per entry would cost, for comparison.
    let mut array = aya::maps::Array::<aya::maps::MapData, u32>::create(size, 0).unwrap();
    let start = Instant::now();
    for (i, v) in table.iter().enumerate() {
        array.set(i as u32, v, 0).unwrap();
    }
    let per_entry = start.elapsed();
    eprintln!(
        "filling a {size}-entry Maglev table: {in_place:?} in place (mmap), {swapped:?} new table \
         (mmap + swap), {per_entry:?} with one update per entry"
    );
    assert!(in_place < per_entry, "{in_place:?} vs {per_entry:?}");

    f.dp.lb_maps().remove_maglev(4).unwrap();
    f.dp.lb_maps().remove_maglev(4).unwrap();
    assert!(f.dp.lb_maps().maglev().unwrap().is_empty());
}

#[test]
fn frontend_without_backends_refuses_and_reports() {
    let mut f = Fixture::new("nobe");
    f.dp.set_config(DatapathConfig { events: EVENTS_DROP, ..f.dp.config().unwrap() }).unwrap();
    let mut events = f.dp.take_events().unwrap();
    write_service(f.dp.lb_maps(), frontend(VIP, 80, TCP, 0), 5, &[], 0, 0);

    let lines = f.client(&f.served.clone(), "tcp", vip(80), 2);
    assert_eq!(lines, vec!["err 111"; 2], "ECONNREFUSED expected");
    let dropped =
        f.dp.metrics()
            .unwrap()
            .into_iter()
            .find(|m| m.direction == METRIC_DIR_EGRESS && m.reason == DROP_NO_SERVICE)
            .map(|m| m.packets);
    assert_eq!(dropped, Some(2));

    let deadline = Instant::now() + Duration::from_secs(5);
    let event = loop {
        if let Some(item) = events.next() {
            // SAFETY: the ring carries whole struct flow_event records.
            let e: FlowEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            break e;
        }
        assert!(Instant::now() < deadline, "no drop event");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!((event.kind, event.reason), (EVENT_DROP, DROP_NO_SERVICE as u8));
    assert_eq!((event.endpoint_id, event.src_identity), (42, 4242));
    assert_eq!((event.daddr, event.dport, event.protocol), (be32(VIP), 80, TCP));
}
