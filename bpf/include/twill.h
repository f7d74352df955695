/* Shared definitions between Twill's eBPF programs and user space.
 *
 * Every struct here has a #[repr(C)] mirror in crates/abi; a test there
 * compares both layouts against the BTF of the compiled object, so change
 * them together.
 */
#pragma once

#include <linux/types.h>

/* Every number here has a mirror of the same name in crates/abi too;
 * crates/abi/tests/defines.rs compares them. */

/* Reserved identities, with Cilium's numbers so flow logs read the same. */
#define IDENTITY_UNKNOWN 0
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2
/* Another node of the cluster: the only sender whose VXLAN VNI is
 * trusted as a source identity. */
#define IDENTITY_REMOTE_NODE 6

/* Drop reasons, with Cilium's numeric codes (pkg/monitor/api). */
#define DROP_INVALID_SOURCE_IP 132
#define DROP_POLICY 133
#define DROP_INVALID_PACKET 134
#define DROP_CT_INVALID_HDR 135
#define DROP_UNSUPPORTED_L3 139
#define DROP_WRITE_ERROR 141
#define DROP_NO_TUNNEL_KEY 147
#define DROP_NO_SERVICE 158
#define DROP_UNKNOWN_SENDER 172
#define DROP_POLICY_DENY 181
#define DROP_PROXY_LOOKUP_FAILED 178
#define DROP_PROXY_SET_FAILED 179

/* Index 0 of the reason space means "forwarded". */
#define METRIC_FORWARDED 0

/* Directions, as seen from the endpoint. */
#define METRIC_DIR_INGRESS 0 /* towards the endpoint (lxc egress hook) */
#define METRIC_DIR_EGRESS 1  /* from the endpoint (lxc ingress hook) */

#define MAX_ENDPOINTS 65536
#define MAX_IPCACHE_ENTRIES 512000
#define MAX_POLICY_ENTRIES 1048576
#define MAX_CT_ENTRIES 262144
#define EVENTS_RING_BYTES (1 << 22)
/* Wake the event reader once this much is queued (it also polls). */
#define EVENTS_WAKEUP_BYTES (1 << 16)

/* Key of twill_endpoints: an endpoint's IPv4 address, network byte order. */
struct endpoint_key {
	__u32 ip;
};

/* Everything the datapath needs to deliver to, or accept from, a local
 * endpoint. */
struct endpoint_info {
	__u32 ifindex;        /* host-side veth (lxc) ifindex */
	__u32 endpoint_id;
	__u32 identity;
	__u32 flags;
	__u8 mac[6];          /* MAC of the endpoint's own interface */
	__u8 host_mac[6];     /* MAC of the host-side veth */
};

/* endpoint_info.flags: the directions in which policy is enforced for the
 * endpoint. Allowed policy verdicts are reported only for those, as
 * Cilium's per-endpoint policy-verdict log filter does: without policy a
 * verdict says nothing and costs an event per connection. */
#define ENDPOINT_F_INGRESS_ENFORCED 1
#define ENDPOINT_F_EGRESS_ENFORCED 2
/* The endpoint's host device has a shaper (a chained bandwidth plugin's
 * ingress qdisc or root tbf): traffic between it and another local
 * endpoint goes through the host stack, past the shaper, instead of
 * straight into the peer's namespace. */
#define ENDPOINT_F_SHAPED 4
/* Debug messages for this endpoint's steps even when they are off for
 * the node (`twill endpoint config NAME debug=true`, Cilium's per-endpoint
 * Debug option). */
#define ENDPOINT_F_DEBUG 8

/* Key of twill_ipcache, an LPM trie: prefix length, then the address. */
struct ipcache_key {
	__u32 prefixlen;
	__u32 ip;
};

struct ipcache_value {
	__u32 identity;
	__u32 flags;           /* IPCACHE_F_* */
	/* The underlay IPv4 address (network byte order) of the node hosting
	 * the address, which traffic to it is encapsulated to; 0 for local
	 * addresses and those behind no node. */
	__u32 tunnel_endpoint;
};

/* ipcache_value.flags: the address is a node's own (its underlay address
 * or its router address): a tunnel packet from it is believed, whatever
 * identity the node has. */
#define IPCACHE_F_NODE 1

/* Per-CPU packet and byte counters, indexed by
 * (direction << METRICS_DIR_SHIFT) | reason, where reason 0 is
 * "forwarded": a reason is a u8, so each direction has 256 slots. */
struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

#define METRICS_DIR_SHIFT 8
#define METRICS_INDEX(dir, reason) (((dir) << METRICS_DIR_SHIFT) | (reason))
#define METRICS_ENTRIES 512

/* Policy directions in policy and conntrack keys, as seen from the
 * endpoint. */
#define DIR_INGRESS 0
#define DIR_EGRESS 1

/* Key of twill_policy, an LPM trie: the endpoint, direction and peer
 * identity always match in full (64 bits); then protocol and destination
 * port match as a prefix, so port ranges and "any protocol" are single
 * entries. Identity 0 stands for any peer. Multi-byte fields are in
 * network byte order so prefixes compare the most significant bits. */
struct policy_key {
	__u32 prefixlen;
	__u16 endpoint_id;
	__u8 direction;
	__u8 pad;
	__u32 identity;
	__u8 protocol;
	__u16 dport;
} __attribute__((packed));

#define POLICY_FIXED_PREFIX 64
#define POLICY_FULL_PREFIX 88

#define POLICY_FLAG_DENY 1

/* How an allow matched, for policy verdict events (Cilium's values). */
#define POLICY_MATCH_NONE 0
#define POLICY_MATCH_L3_ONLY 1
#define POLICY_MATCH_L3_L4 2
#define POLICY_MATCH_L4_ONLY 3
#define POLICY_MATCH_ALL 4
#define POLICY_MATCH_L3_PROTO 5
#define POLICY_MATCH_PROTO_ONLY 6

struct policy_value {
	__u32 flags;
	__u32 match_type; /* POLICY_MATCH_*, set by the agent from the key */
	/* An allow with L7 rules: new connections go to the L7 proxy's
	 * transparent listener on 127.0.0.1:proxy_port (host byte order);
	 * 0: no redirect. */
	__u16 proxy_port;
	__u16 pad;
};

/* Connection tracking. Entries are kept per endpoint: one for the
 * endpoint that opens a connection, one for the endpoint that accepts it
 * (for two local endpoints, usually one of scope CT_PAIR for both). A twill_ct key holds the connection's two
 * (address, port) ends in a fixed order, the lower first in saddr/sport,
 * whichever way a packet travels, so every packet of a connection finds
 * its entry with one lookup; `scope` names the end the endpoint whose
 * entry it is stands on (CT_SIDE_*), and the entry's `origin` says which
 * way the opening packet went. The L4 load balancer's twill_lb4_nat uses
 * the same struct with the tuple as it travels (LB_NAT_*). */
struct ct_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 protocol;
	__u8 scope;
	__u16 pad;
};

#define CT_FLAG_CLOSING 1

struct ct_entry {
	__u64 expires;    /* bpf_ktime_get_ns() deadline */
	__u64 packets;
	__u64 bytes;
	__u8 tcp_flags;   /* every TCP flag seen, ORed */
	__u8 flags;
	/* Trace aggregation: TCP flags already reported, and when the last
	 * report was (seconds, wrapping), per direction of the connection. */
	__u8 reported_flags[2];
	__u16 last_report[2];
	/* The connection was redirected to the L7 proxy listening on this
	 * port (host byte order) when it opened: every later packet of the
	 * client goes the same way. 0: not proxied. */
	__u16 proxy_port;
	/* CT_ORIGIN_*: the opening packet went from the key's saddr/sport end
	 * to its daddr/dport end, or back. */
	__u8 origin;
	__u8 pad;
};

/* ct_key.scope in twill_ct: the endpoint is at the saddr/sport end of the
 * key (A) or at the daddr/dport end (B). Neither is a DIR_* value, so an
 * entry of the earlier per-direction layout is never taken for one. */
#define CT_SIDE_A 2
#define CT_SIDE_B 3
/* ct_key.scope of a connection between two local endpoints that host
 * routing delivers: one entry stands for both ends' (each end looks it up
 * the same way), so a packet costs one lookup and a connection one insert.
 * Only for connections neither end redirects to the L7 proxy: those keep
 * an entry per endpoint, as do the ones the receiver refused at first. */
#define CT_PAIR 4
#define CT_ORIGIN_A 0
#define CT_ORIGIN_B 1

/* skb->mark values (Cilium's layout: a magic in bits 8-11).
 * MARK_MAGIC_TO_PROXY: set by the programs on a packet they assigned to a
 * proxy socket; the agent's `ip rule fwmark 0x200/0xf00 lookup 2004` with
 * `local 0.0.0.0/0 dev lo` in table 2004 makes the stack deliver it
 * locally although its destination is not a local address.
 * MARK_MAGIC_PROXY_IDENTITY: set by the proxy (SO_MARK) on its upstream
 * connections; the source identity rides in the mark as Cilium's
 * MARK_MAGIC_IDENTITY carries it (identity bits 0-15 in mark bits 16-31,
 * bits 16-23 in mark bits 0-7), and such packets are never redirected. */
#define MARK_MAGIC_MASK 0x0F00
#define MARK_MAGIC_TO_PROXY 0x0200
#define MARK_MAGIC_PROXY_IDENTITY 0x0F00
#define PROXY_ROUTE_TABLE 2004

/* Connection tracking states reported in events. */
#define CT_NEW 0
#define CT_ESTABLISHED 1
#define CT_REPLY 2
#define CT_RELATED 3

/* Runtime configuration, index 0 of twill_config. */
/* --devices devices eBPF host routing can send traffic out of. */
#define FIB_DEVICES_MAX 8

struct datapath_config {
	__u32 allow_localhost; /* traffic from the host identity always passes ingress */
	__u32 aggregation;     /* AGGREGATION_*: how many trace events to emit */
	__u32 events;          /* bit 0: drop, bit 1: trace, bit 2: policy verdict */
	__u32 maglev_table_size; /* entries of every Maglev table (a prime, LB_MAGLEV_* ) */
	/* The VXLAN device (collect-metadata mode) traffic to remote nodes'
	 * endpoints is encapsulated through; 0: no tunnel (native routing, or
	 * a standalone node), and the host stack routes that traffic. */
	__u32 tunnel_ifindex;
	/* TCP flags whose first sighting in a direction of a connection earns
	 * a trace at medium and maximum aggregation (Cilium's
	 * --monitor-aggregation-flags); flags outside it only ride along. */
	__u32 report_flags;
	/* Cilium's --enable-host-legacy-routing: nonzero sends everything
	 * from_endpoint forwards through the host stack (routing, netfilter),
	 * between local endpoints too; zero routes it in eBPF (peer redirect
	 * to local endpoints, the FIB and a neighbour redirect to the rest). */
	__u32 legacy_host_routing;
	/* The --devices devices (ifindexes; 0 ends the list): traffic leaving
	 * the node by one of them is routed in eBPF, because from_netdev on
	 * it delivers the replies past the host stack too. Leaving by any
	 * other device it stays on the stack both ways: half a connection
	 * past netfilter would be INVALID to its conntrack, and a FORWARD
	 * rule dropping INVALID (kube-proxy's, Docker's) would drop the rest. */
	__u32 fib_devices[FIB_DEVICES_MAX];
};

/* Trace aggregation levels (Cilium's names). */
#define AGGREGATION_NONE 0    /* every packet, at every observation point */
#define AGGREGATION_LOW 1     /* every packet, once, where it is delivered */
#define AGGREGATION_MEDIUM 2  /* per connection direction: first packet, new report_flags, every 5 s */
#define AGGREGATION_MAXIMUM 3 /* per connection direction: first packet, new report_flags among SYN/FIN/RST */
#define AGGREGATION_INTERVAL_SECONDS 5

/* Observation points in trace events, with Hubble's numbers. */
#define TRACE_TO_PROXY 1
#define TRACE_TO_STACK 3
#define TRACE_TO_OVERLAY 4
#define TRACE_FROM_ENDPOINT 5
#define TRACE_FROM_OVERLAY 9
#define TRACE_TO_NETWORK 11
#define TRACE_TO_ENDPOINT 101

#define EVENTS_DROP (1 << 0)
#define EVENTS_TRACE (1 << 1)
#define EVENTS_POLICY (1 << 2)
/* Datapath debug messages (Cilium's cilium_dbg, `--debug-verbose
 * datapath`): several records per packet, so off unless asked for. */
#define EVENTS_DEBUG (1 << 3)

/* Event types in struct flow_event. */
#define EVENT_DROP 1
#define EVENT_TRACE 2
#define EVENT_POLICY_VERDICT 3
#define EVENT_DEBUG 4 /* a struct debug_event, not a struct flow_event */

/* One datapath event, sent through the twill_events ring buffer. */
struct flow_event {
	__u64 timestamp;
	__u8 kind;         /* EVENT_* */
	__u8 reason;       /* drop: reason; trace: TRACE_* point; policy verdict: 0 allowed */
	__u8 direction;    /* DIR_INGRESS / DIR_EGRESS, endpoint's view */
	__u8 ct_state;
	__u32 endpoint_id;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 saddr;       /* network byte order */
	__u32 daddr;
	__u16 sport;       /* host byte order */
	__u16 dport;
	__u8 protocol;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u32 ifindex;
	__u32 length;
	__u32 policy_match; /* policy verdicts: POLICY_MATCH_* of the allowing entry */
	__u8 src_mac[6];
	__u8 dst_mac[6];
};

/* A datapath debug message, as Cilium's struct debug_msg: a subtype
 * (DBG_*, Hubble's DebugEventType numbers) and three arguments whose
 * meaning is the subtype's; user space renders the text Cilium's monitor
 * prints. Shares the twill_events ring with struct flow_event: `kind`
 * sits at the same offset in both and tells them apart. */
struct debug_event {
	__u64 timestamp;
	__u8 kind;         /* EVENT_DEBUG */
	__u8 subtype;      /* DBG_* */
	__u16 source;      /* the endpoint the program runs for; 0 if none */
	__u32 hash;        /* skb->hash, Cilium's "MARK" */
	__u32 arg1;
	__u32 arg2;
	__u32 arg3;
	__u32 cpu;
};

/* Debug message subtypes Twill emits (Cilium's bpf/lib/dbg.h numbers). */
#define DBG_LOCAL_DELIVERY 2
#define DBG_ENCAP 3
#define DBG_LXC_FOUND 4
#define DBG_POLICY_DENIED 5
#define DBG_CT_MATCH 8
#define DBG_CT_VERDICT 15
#define DBG_DECAP 16
#define DBG_TO_STACK 20
#define DBG_LB4_LOOKUP_FRONTEND 30
#define DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS 33
#define DBG_CT_LOOKUP4_1 48
#define DBG_CT_LOOKUP4_2 49
#define DBG_CT_CREATED4 50

/* Conntrack tuple flags in DBG_CT_LOOKUP4_2 (Cilium's TUPLE_F_*). */
#define TUPLE_F_IN 0
#define TUPLE_F_OUT 1
#define TUPLE_F_RELATED 2

/* Index 0 of twill_event_stats: events lost because the ring was full. */

/* Services (load balancing), IPv4.
 *
 * A frontend is a virtual address, port and protocol. Its entry in
 * twill_lb4_services at slot 0 is the service; slots 1..count name its
 * backends in order, for random choice. Each frontend has its own
 * rev_nat_index, which keys the reverse translation, session affinity and
 * the Maglev table. NodePort frontends have address 0: they answer on
 * every address of the node (ipcache identity host).
 */
#define MAX_LB_SERVICE_ENTRIES 262144
#define MAX_LB_BACKENDS 262144
#define MAX_LB_FRONTENDS 131072
#define MAX_LB_AFFINITY 65536
#define MAX_LB_SOCK_ENTRIES 65536
#define MAX_LB_MAGLEV 16384
#define MAX_LB_NETNS 65536
#define LB_MAGLEV_DEFAULT_SIZE 16381

struct lb4_key {
	__u32 address;      /* network byte order; 0 for NodePort */
	__u16 dport;        /* network byte order */
	__u16 backend_slot; /* 0: the service; 1..count: its backends */
	__u8 proto;         /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad[3];
};

struct lb4_service {
	__u32 backend_id;       /* slot > 0: the backend in this slot */
	__u32 affinity_timeout; /* slot 0: client affinity in seconds, 0 for none */
	__u32 rev_nat_index;    /* the frontend's id, > 0 */
	__u16 count;            /* slot 0: backend slots that follow */
	__u8 flags;             /* LB_F_* */
	__u8 pad;
};

#define LB_F_NODEPORT 1 /* address 0: any address of the node */
#define LB_F_MAGLEV 2   /* choose by the frontend's Maglev table, not at random */

/* Value of twill_lb4_backends, keyed by a __u32 backend id (> 0). */
struct lb4_backend {
	__u32 address; /* network byte order */
	__u16 port;    /* network byte order */
	__u8 proto;
	__u8 flags;
};

/* Value of twill_lb4_reverse_nat, keyed by the __u32 rev_nat_index: the
 * frontend replies must appear to come from. */
struct lb4_reverse_nat {
	__u32 address; /* network byte order; the node's address for NodePort */
	__u16 port;    /* network byte order */
	__u16 pad;
};

/* twill_lb_affinity (LRU): the backend a client last got from a frontend.
 * The client is the socket's network namespace cookie at the socket hooks,
 * the IPv4 source address for per-packet NodePort translation. */
struct lb_affinity_key {
	__u64 client;
	__u32 rev_nat_index;
	__u8 netns;  /* 1: client is a netns cookie, 0: an address */
	__u8 pad[3];
};

struct lb_affinity_value {
	__u64 last_used; /* bpf_ktime_get_ns() */
	__u32 backend_id;
	__u32 pad;
};

/* Key of twill_lb_affinity_match: a backend of a frontend. The value (a
 * __u32) counts the frontend's slots that hold the backend; the datapath
 * only asks whether the key exists, before honouring an affinity. */
struct lb_affinity_match_key {
	__u32 backend_id;
	__u32 rev_nat_index;
};

/* twill_lb4_sk (LRU): what a socket connected or sent to, so that replies
 * read with recvmsg and getpeername show the frontend, not the backend. */
struct lb4_sk_key {
	__u64 cookie;  /* bpf_get_socket_cookie() */
	__u32 address; /* the backend, network byte order */
	__u16 port;    /* network byte order */
	__u16 pad;
};

struct lb4_sk_value {
	__u32 address; /* the frontend */
	__u16 port;
	__u16 pad;
	__u32 rev_nat_index;
};

/* twill_lb4_nat (LRU), per-packet translation at the node's devices for
 * what the socket hooks do not see (NodePort from outside). Keyed by
 * struct ct_key: scope LB_NAT_FORWARD with the tuple as the client sent it,
 * LB_NAT_REVERSE with the backend's reply tuple. */
struct lb4_nat_entry {
	__u64 expires;
	__u32 address; /* forward: the backend; reverse: the frontend */
	__u16 port;    /* network byte order */
	__u16 flags;   /* CT_FLAG_CLOSING once a FIN or RST was seen */
	__u32 rev_nat_index;
	__u32 ifindex; /* reverse: the device the client is behind */
};

#define LB_NAT_FORWARD 0
#define LB_NAT_REVERSE 1

/* twill_lb_netns: the network namespaces, by cookie, whose sockets this
 * node's socket hooks translate (its endpoints and the node itself); other
 * namespaces on the machine are left alone. */
struct lb_netns_value {
	__u32 endpoint_id; /* 0 for the node's own namespace */
	__u32 identity;
};
