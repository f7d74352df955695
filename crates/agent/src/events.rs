//! Reading datapath events from the ring buffer and handing them to
//! subscribers (`twill monitor`), each through a bounded queue: a slow
//! subscriber loses events (counted), it never slows the reader.

use std::{
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc, Mutex,
    },
};

use aya::maps::{MapData, RingBuf};
use tracing::warn;
use twill_abi::{DebugEvent, FlowEvent, RingRecord};

/// How often the reader looks at the ring when nothing woke it.
const POLL_INTERVAL_MS: i32 = 50;

/// Events a subscriber may have queued before it starts losing them.
const SUBSCRIBER_QUEUE: usize = 4096;

#[derive(Default)]
pub struct EventHub {
    subscribers: Mutex<Vec<SyncSender<FlowEvent>>>,
    /// Events read from the ring since start.
    pub received: AtomicU64,
    /// Events dropped because a subscriber's queue was full.
    pub subscriber_lost: AtomicU64,
}

impl EventHub {
    pub fn subscribe(&self) -> Receiver<FlowEvent> {
        let (tx, rx) = sync_channel(SUBSCRIBER_QUEUE);
        self.subscribers.lock().expect("hub lock").push(tx);
        rx
    }

    fn publish(&self, event: FlowEvent) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let mut subscribers = self.subscribers.lock().expect("hub lock");
        subscribers.retain(|tx| match tx.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.subscriber_lost.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }
}

/// Where decoded flows and debug messages go.
pub struct FlowSink {
    pub ring: Arc<twill_observe::FlowRing>,
    pub debug: Arc<twill_observe::DebugEvents>,
    pub directory: Arc<std::sync::RwLock<twill_observe::Directory>>,
    pub clock: twill_observe::Clock,
    pub metrics: twill_metrics::HubbleMetrics,
    /// Names of the node's devices that are no endpoint's, as the kernel
    /// gave them (see `LinkNames`).
    pub links: LinkNames,
}

/// The name of a device the directory does not know (the one a packet
/// left the node by, the overlay device), asked of the kernel once per
/// device: Hubble names every interface a flow is seen at. Interface
/// numbers are not reused until they wrap, so a cached name stays right
/// unless the device is renamed.
#[derive(Default)]
pub struct LinkNames(std::collections::HashMap<u32, Option<String>>);

impl LinkNames {
    fn interface(&mut self, ifindex: u32) -> Option<twill_observe::proto::flow::NetworkInterface> {
        if self.0.len() > 4096 {
            self.0.clear();
        }
        let name = self.0.entry(ifindex).or_insert_with(|| {
            let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
            // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes,
            // NUL included, into the buffer it is given.
            let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
            // SAFETY: on success p points at buf, NUL-terminated.
            (!p.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned())
        });
        name.clone().map(|name| twill_observe::proto::flow::NetworkInterface { index: ifindex, name })
    }
}

impl FlowSink {
    fn take(&mut self, event: &FlowEvent) {
        let mut flow = {
            let dir = self.directory.read().expect("directory lock");
            twill_observe::decode(event, &dir, &self.clock)
        };
        if flow.interface.is_none() && event.ifindex != 0 {
            flow.interface = self.links.interface(event.ifindex);
        }
        self.metrics.observe(&flow);
        self.ring.push(flow);
    }

    fn take_debug(&self, event: &DebugEvent) {
        let decoded = {
            let dir = self.directory.read().expect("directory lock");
            twill_observe::debug_events::decode(event, &dir)
        };
        self.debug.push_at(self.clock.timestamp(event.timestamp), decoded);
    }
}

/// Drains the ring buffer on a dedicated thread, waking on its fd: raw
/// events go to monitor subscribers, decoded flows to the flow ring,
/// debug messages to the debug event ring.
pub fn spawn_reader(mut ring: RingBuf<MapData>, hub: Arc<EventHub>, mut sink: FlowSink) {
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || loop {
            let mut pollfd = libc::pollfd { fd: ring.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: poll on one valid fd we own, bounded wait. The
            // datapath wakes us only for batches, so the timeout bounds
            // how late a lone event is seen.
            let rc = unsafe { libc::poll(&mut pollfd, 1, POLL_INTERVAL_MS) };
            if rc < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    warn!("polling the event ring: {err}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                continue;
            }
            while let Some(item) = ring.next() {
                match RingRecord::from_bytes(&item) {
                    Some(RingRecord::Flow(event)) => {
                        hub.publish(event);
                        sink.take(&event);
                    }
                    Some(RingRecord::Debug(event)) => sink.take_debug(&event),
                    None => {}
                }
            }
        })
        .expect("spawning the event reader");
}

/// The `twill monitor` name of a datapath event kind (Cilium's monitor
/// message type names).
pub fn event_type_name(kind: u8) -> &'static str {
    let message_type = match kind {
        twill_abi::EVENT_DROP => twill_numbers::MESSAGE_TYPE_DROP,
        twill_abi::EVENT_TRACE => twill_numbers::MESSAGE_TYPE_TRACE,
        twill_abi::EVENT_POLICY_VERDICT => twill_numbers::MESSAGE_TYPE_POLICY_VERDICT,
        _ => return "unknown",
    };
    twill_numbers::message_type_name(message_type).unwrap_or("unknown")
}

pub fn to_monitor_event(e: &FlowEvent) -> twill_api::MonitorEvent {
    let addr = |a: u32| std::net::Ipv4Addr::from(u32::from_be(a));
    let with_port = |a: u32, p: u16| {
        if matches!(e.protocol, 6 | 17 | 132) {
            format!("{}:{p}", addr(a))
        } else {
            addr(a).to_string()
        }
    };
    let description = match e.kind {
        twill_abi::EVENT_DROP => twill_abi::drop_reason_text(e.reason as u32).to_string(),
        twill_abi::EVENT_POLICY_VERDICT => if e.reason == 0 { "allow" } else { "deny" }.to_string(),
        _ => "forwarded".to_string(),
    };
    twill_api::MonitorEvent {
        timestamp_ns: e.timestamp,
        kind: event_type_name(e.kind).into(),
        reason: e.reason as u32,
        description,
        direction: if e.direction == twill_abi::DIR_INGRESS { "ingress" } else { "egress" }.into(),
        ct_state: match e.ct_state {
            twill_abi::CT_NEW => "new",
            twill_abi::CT_ESTABLISHED => "established",
            twill_abi::CT_REPLY => "reply",
            _ => "related",
        }
        .into(),
        endpoint_id: e.endpoint_id,
        src_identity: e.src_identity,
        dst_identity: e.dst_identity,
        source: with_port(e.saddr, e.sport),
        destination: with_port(e.daddr, e.dport),
        protocol: match twill_policy::model::protocol_name(e.protocol) {
            "ANY" | "?" => format!("proto-{}", e.protocol),
            name => name.to_string(),
        },
        tcp_flags: twill_numbers::tcp_flag_names(e.tcp_flags.into()).collect::<Vec<_>>().join(","),
        icmp_type: e.icmp_type,
        icmp_code: e.icmp_code,
        ifindex: e.ifindex,
        length: e.length,
    }
}
