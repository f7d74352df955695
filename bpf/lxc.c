/* Programs attached to the host side of every endpoint's veth pair.
 *
 *  from_endpoint: tc ingress of lxc, sees what the endpoint sends.
 *  to_endpoint:   tc egress of lxc, sees what is delivered to the endpoint,
 *                 whether it came from the host stack or was redirected here
 *                 by from_endpoint of another endpoint.
 *
 * Each packet: parse, connection tracking, policy for new connections
 * (egress of the sender in from_endpoint, ingress of the receiver in
 * to_endpoint), then forwarding. One copy of each program serves every
 * endpoint; per-endpoint facts come from maps, so creating an endpoint
 * compiles and loads nothing.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "twill.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_IPCACHE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_POLICY_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CT_ENTRIES);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, METRICS_ENTRIES);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct datapath_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RING_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_event_stats SEC(".maps");

/* ICMPv4 header (linux/icmp.h drags in libc headers BPF cannot use). */
struct icmphdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	union {
		struct {
			__u16 id;
			__u16 sequence;
		} echo;
		__u32 gateway;
	} un;
};

#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

/* Never used by the programs: it puts struct flow_event into the object's
 * BTF, so the Rust mirror is checked like every map's key and value. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_event);
} twill_event_layout SEC(".maps");

/* Lifetimes of conntrack entries, as Cilium's defaults. */
#define SECONDS 1000000000ULL
#define CT_LIFETIME_TCP (21600 * SECONDS)
#define CT_LIFETIME_SYN (60 * SECONDS)
#define CT_LIFETIME_CLOSE (10 * SECONDS)
#define CT_LIFETIME_OTHER (60 * SECONDS)

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* What one packet is about, parsed once before anything is rewritten. */
struct flow {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;     /* host byte order; ICMP echo: identifier */
	__u16 dport;     /* host byte order; ICMP echo: identifier */
	__u16 policy_port; /* the port policy matches: dport, or the ICMP type */
	__u8 protocol;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 related;    /* ICMP error: inner tuple below is the original */
	__u8 pad;
	struct ct_key inner;
	__u8 src_mac[6];
	__u8 dst_mac[6];
};

static __always_inline struct datapath_config *config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&twill_config, &zero);
}

static __always_inline void count(__u32 dir, __u32 reason, __u32 bytes)
{
	__u32 index = METRICS_INDEX(dir, reason);
	struct metrics_value *value = bpf_map_lookup_elem(&twill_metrics, &index);

	if (value) {
		value->packets += 1;
		value->bytes += bytes;
	}
}

static __always_inline void emit_match(struct __sk_buff *skb, __u8 type, __u8 reason, __u8 dir, __u8 ct_state,
				       __u32 endpoint_id, __u32 src_identity, __u32 dst_identity,
				       const struct flow *f, __u32 policy_match)
{
	struct datapath_config *cfg = config();
	__u32 wanted = type == EVENT_DROP ? EVENTS_DROP : type == EVENT_TRACE ? EVENTS_TRACE : EVENTS_POLICY;
	struct flow_event *e;

	if (!cfg || !(cfg->events & wanted))
		return;
	e = bpf_ringbuf_reserve(&twill_events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&twill_event_stats, &zero);
		if (lost)
			*lost += 1;
		return;
	}
	e->timestamp = bpf_ktime_get_ns();
	e->kind = type;
	e->reason = reason;
	e->direction = dir;
	e->ct_state = ct_state;
	e->endpoint_id = endpoint_id;
	e->src_identity = src_identity;
	e->dst_identity = dst_identity;
	e->saddr = f ? f->saddr : 0;
	e->daddr = f ? f->daddr : 0;
	e->sport = f ? f->sport : 0;
	e->dport = f ? f->dport : 0;
	e->protocol = f ? f->protocol : 0;
	e->tcp_flags = f ? f->tcp_flags : 0;
	e->icmp_type = f ? f->icmp_type : 0;
	e->icmp_code = f ? f->icmp_code : 0;
	e->ifindex = skb->ifindex;
	e->length = skb->len;
	e->policy_match = policy_match;
	if (f) {
		__builtin_memcpy(e->src_mac, f->src_mac, 6);
		__builtin_memcpy(e->dst_mac, f->dst_mac, 6);
	} else {
		__builtin_memset(e->src_mac, 0, 6);
		__builtin_memset(e->dst_mac, 0, 6);
	}
	/* Waking the reader for every event costs more than the event (an
	 * interrupt per packet on a new connection): wake it only once a
	 * batch is waiting; it also polls on a short timer. */
	__u64 queued = bpf_ringbuf_query(&twill_events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(e, queued >= EVENTS_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline void emit(struct __sk_buff *skb, __u8 type, __u8 reason, __u8 dir, __u8 ct_state,
				 __u32 endpoint_id, __u32 src_identity, __u32 dst_identity,
				 const struct flow *f)
{
	emit_match(skb, type, reason, dir, ct_state, endpoint_id, src_identity, dst_identity, f, 0);
}

static __always_inline int drop(struct __sk_buff *skb, __u32 dir, __u32 reason, __u32 endpoint_id,
				__u32 src_identity, __u32 dst_identity, const struct flow *f)
{
	count(dir, reason, skb->len);
	emit(skb, EVENT_DROP, reason, dir, CT_NEW, endpoint_id, src_identity, dst_identity, f);
	return TC_ACT_SHOT;
}

/* Reads the L4 ports of an IPv4 packet whose L4 header starts at `off`. */
static __always_inline int read_ports(struct __sk_buff *skb, __u32 off, __u8 protocol, __u16 *sport,
				      __u16 *dport)
{
	__u16 ports[2];

	if (protocol == IPPROTO_ICMP) {
		struct icmphdr icmp;
		if (bpf_skb_load_bytes(skb, off, &icmp, sizeof(icmp)) < 0)
			return -1;
		/* Echo request and reply share the identifier both ways, so
		 * the reply's reversed tuple finds the request's entry. */
		*sport = bpf_ntohs(icmp.un.echo.id);
		*dport = *sport;
		return 0;
	}
	if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP && protocol != IPPROTO_SCTP) {
		*sport = 0;
		*dport = 0;
		return 0;
	}
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
		return -1;
	*sport = bpf_ntohs(ports[0]);
	*dport = bpf_ntohs(ports[1]);
	return 0;
}

/* Parses Ethernet, IPv4 and L4. Returns 0 for IPv4 (filling *f), 1 for
 * something else the caller decides about, or a negative drop reason. */
static __always_inline int parse(struct __sk_buff *skb, struct flow *f, __u16 *eth_proto)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 l4_off;

	if ((void *)(eth + 1) > data_end)
		return -DROP_INVALID_PACKET;
	*eth_proto = eth->h_proto;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 1;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return -DROP_INVALID_PACKET;
	if (ip->version != 4 || ip->ihl < 5)
		return -DROP_INVALID_PACKET;
	__builtin_memcpy(f->src_mac, eth->h_source, 6);
	__builtin_memcpy(f->dst_mac, eth->h_dest, 6);
	f->saddr = ip->saddr;
	f->daddr = ip->daddr;
	f->protocol = ip->protocol;
	l4_off = sizeof(struct ethhdr) + ip->ihl * 4;

	/* Later fragments carry no L4 header: they are matched on ports 0. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return 0;

	if (read_ports(skb, l4_off, f->protocol, &f->sport, &f->dport) < 0)
		return -DROP_CT_INVALID_HDR;
	f->policy_port = f->dport;

	if (f->protocol == IPPROTO_TCP) {
		__u8 flags;
		if (bpf_skb_load_bytes(skb, l4_off + 13, &flags, 1) < 0)
			return -DROP_CT_INVALID_HDR;
		f->tcp_flags = flags;
	} else if (f->protocol == IPPROTO_ICMP) {
		struct icmphdr icmp;
		if (bpf_skb_load_bytes(skb, l4_off, &icmp, sizeof(icmp)) < 0)
			return -DROP_CT_INVALID_HDR;
		f->icmp_type = icmp.type;
		f->icmp_code = icmp.code;
		f->policy_port = icmp.type;
		if (icmp.type == ICMP_DEST_UNREACH || icmp.type == ICMP_TIME_EXCEEDED ||
		    icmp.type == ICMP_PARAMETERPROB) {
			/* An error about an earlier packet: the original header
			 * follows, and belongs to a tracked connection if any. */
			struct iphdr inner;
			__u32 inner_off = l4_off + sizeof(struct icmphdr);
			if (bpf_skb_load_bytes(skb, inner_off, &inner, sizeof(inner)) < 0)
				return -DROP_CT_INVALID_HDR;
			if (inner.ihl < 5)
				return -DROP_CT_INVALID_HDR;
			f->inner.saddr = inner.saddr;
			f->inner.daddr = inner.daddr;
			f->inner.protocol = inner.protocol;
			if (read_ports(skb, inner_off + inner.ihl * 4, inner.protocol, &f->inner.sport,
				       &f->inner.dport) < 0)
				return -DROP_CT_INVALID_HDR;
			f->related = 1;
		}
	}
	return 0;
}

static __always_inline __u64 ct_lifetime(const struct ct_entry *e)
{
	if (e->flags & CT_FLAG_CLOSING)
		return CT_LIFETIME_CLOSE;
	if (e->tcp_flags & TCP_ACK)
		return CT_LIFETIME_TCP;
	if (e->tcp_flags & TCP_SYN)
		return CT_LIFETIME_SYN;
	return CT_LIFETIME_OTHER;
}

/* Finds a live entry and accounts the packet to it. */
static __always_inline struct ct_entry *ct_touch(struct ct_key *key, const struct flow *f, __u32 len)
{
	struct ct_entry *e = bpf_map_lookup_elem(&twill_ct, key);
	__u64 now = bpf_ktime_get_ns();

	if (!e || e->expires < now)
		return 0;
	/* A new SYN on a closing connection's tuple opens a new connection:
	 * it must pass policy again, not ride on the old entry. */
	if ((e->flags & CT_FLAG_CLOSING) && (f->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
		return 0;
	e->packets += 1;
	e->bytes += len;
	e->tcp_flags |= f->tcp_flags;
	if (f->tcp_flags & (TCP_FIN | TCP_RST))
		e->flags |= CT_FLAG_CLOSING;
	e->expires = now + ct_lifetime(e);
	return e;
}

/* The outcome of a conntrack lookup: the state, the entry (if any) and
 * whether the packet travels against the entry's direction. */
struct ct_result {
	struct ct_entry *entry;
	int state;
	int reverse;
};

/* Classifies a packet against conntrack from the point of view of one
 * endpoint's direction: `scope` is where a new connection would be
 * recorded, replies are looked up in the other scope. */
static __always_inline struct ct_result ct_lookup(const struct flow *f, __u8 scope, __u32 len)
{
	struct ct_result r = { .state = CT_NEW };
	struct ct_key key = {};
	__u8 other = scope == DIR_INGRESS ? DIR_EGRESS : DIR_INGRESS;

	if (f->related) {
		/* The erroring packet went the other way: it was recorded in
		 * the opposite scope under its own tuple. */
		key = f->inner;
		key.scope = other;
		key.pad = 0;
		r.entry = ct_touch(&key, f, len);
		if (r.entry) {
			r.state = CT_RELATED;
			r.reverse = 1;
			return r;
		}
	}
	key.saddr = f->saddr;
	key.daddr = f->daddr;
	key.sport = f->sport;
	key.dport = f->dport;
	key.protocol = f->protocol;
	key.scope = scope;
	key.pad = 0;
	r.entry = ct_touch(&key, f, len);
	if (r.entry) {
		r.state = CT_ESTABLISHED;
		return r;
	}
	key.saddr = f->daddr;
	key.daddr = f->saddr;
	key.sport = f->dport;
	key.dport = f->sport;
	key.scope = other;
	r.entry = ct_touch(&key, f, len);
	if (r.entry) {
		r.state = CT_REPLY;
		r.reverse = 1;
	}
	return r;
}

/* Whether this packet earns a trace event at the configured aggregation
 * level. Connections are reported when they start, when a direction
 * shows TCP flags not reported before and, at medium, every few seconds
 * while they carry traffic, so a bulk stream costs a handful of events. */
static __always_inline int should_trace(struct datapath_config *cfg, const struct ct_result *ct,
					const struct flow *f)
{
	__u32 level = cfg->aggregation;
	struct ct_entry *e = ct->entry;

	if (level <= AGGREGATION_LOW || !e)
		return 1;
	int dir = ct->reverse ? 1 : 0;
	__u8 *reported = &e->reported_flags[dir & 1];
	__u16 *last = &e->last_report[dir & 1];
	__u16 now = (__u16)(bpf_ktime_get_ns() / SECONDS);
	__u8 flags = f->tcp_flags;

	if (level >= AGGREGATION_MAXIMUM)
		flags &= TCP_SYN | TCP_FIN | TCP_RST;
	if (flags & ~*reported) {
		*reported |= flags;
		*last = now;
		return 1;
	}
	if (level == AGGREGATION_MEDIUM && (__u16)(now - *last) >= AGGREGATION_INTERVAL_SECONDS) {
		*last = now;
		return 1;
	}
	return 0;
}

static __always_inline void ct_create(const struct flow *f, __u8 scope, __u32 len)
{
	struct ct_key key = {
		.saddr = f->saddr,
		.daddr = f->daddr,
		.sport = f->sport,
		.dport = f->dport,
		.protocol = f->protocol,
		.scope = scope,
	};
	struct ct_entry e = {
		.packets = 1,
		.bytes = len,
		.tcp_flags = f->tcp_flags,
	};
	__u64 now = bpf_ktime_get_ns();

	if (f->tcp_flags & (TCP_FIN | TCP_RST))
		e.flags |= CT_FLAG_CLOSING;
	/* The first packet is always reported: record it as such. */
	e.reported_flags[0] = f->tcp_flags;
	e.last_report[0] = (__u16)(now / SECONDS);
	e.expires = now + ct_lifetime(&e);
	bpf_map_update_elem(&twill_ct, &key, &e, BPF_ANY);
}

static __always_inline void trace(struct __sk_buff *skb, struct datapath_config *cfg,
				  const struct ct_result *ct, __u8 point, __u8 dir, __u32 endpoint_id,
				  __u32 src_identity, __u32 dst_identity, const struct flow *f)
{
	if (!cfg || !(cfg->events & EVENTS_TRACE) || !should_trace(cfg, ct, f))
		return;
	emit(skb, EVENT_TRACE, point, dir, ct->state, endpoint_id, src_identity, dst_identity, f);
}

/* The identity of a peer address: a local endpoint, else the ipcache,
 * else the world. */
static __always_inline __u32 identity_of(__u32 addr)
{
	struct ipcache_key key = { .prefixlen = 32, .ip = addr };
	struct ipcache_value *v = bpf_map_lookup_elem(&twill_ipcache, &key);

	return v ? v->identity : IDENTITY_WORLD;
}

/* Two longest-prefix lookups: the peer's identity and "any peer". A deny
 * from either wins; otherwise an allow from either allows; otherwise the
 * default deny drops. Returns 0 or the drop reason. */
static __always_inline int policy_check(__u32 endpoint_id, __u8 dir, __u32 peer, const struct flow *f,
					__u32 *match)
{
	struct policy_key key = {
		.prefixlen = POLICY_FULL_PREFIX,
		.endpoint_id = bpf_htons((__u16)endpoint_id),
		.direction = dir,
		.identity = bpf_htonl(peer),
		.protocol = f->protocol,
		.dport = bpf_htons(f->policy_port),
	};
	struct policy_value *specific = bpf_map_lookup_elem(&twill_policy, &key);
	struct policy_value *any;

	key.identity = 0;
	any = bpf_map_lookup_elem(&twill_policy, &key);
	if ((specific && (specific->flags & POLICY_FLAG_DENY)) || (any && (any->flags & POLICY_FLAG_DENY)))
		return DROP_POLICY_DENY;
	if (specific) {
		*match = specific->match_type;
		return 0;
	}
	if (any) {
		*match = any->match_type;
		return 0;
	}
	return DROP_POLICY;
}

/* Routes a packet straight to a local endpoint's veth, as a router would:
 * new MACs, TTL decremented. The veth's egress hook (to_endpoint) runs
 * next and applies the receiver's ingress policy. */
static __always_inline int redirect_to_endpoint(struct __sk_buff *skb, const struct endpoint_info *dst,
						__u32 endpoint_id, const struct flow *f)
{
	__u32 ttl_off = sizeof(struct ethhdr) + offsetof(struct iphdr, ttl);
	__u32 csum_off = sizeof(struct ethhdr) + offsetof(struct iphdr, check);
	__u8 ttl;

	if (bpf_skb_load_bytes(skb, ttl_off, &ttl, 1) < 0)
		return drop(skb, DIR_EGRESS, DROP_INVALID_PACKET, endpoint_id, 0, 0, f);
	/* Let the kernel answer with ICMP time exceeded. */
	if (ttl <= 1)
		return TC_ACT_OK;

	/* The TTL shares a 16-bit checksum word with the protocol byte. */
	__u16 old_word = bpf_htons((__u16)ttl << 8);
	__u16 new_word = bpf_htons((__u16)(ttl - 1) << 8);
	ttl -= 1;
	if (bpf_l3_csum_replace(skb, csum_off, old_word, new_word, 2) < 0 ||
	    bpf_skb_store_bytes(skb, ttl_off, &ttl, 1, 0) < 0 ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), dst->mac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), dst->host_mac, ETH_ALEN, 0) < 0)
		return drop(skb, DIR_EGRESS, DROP_INVALID_PACKET, endpoint_id, 0, 0, f);

	count(DIR_EGRESS, METRIC_FORWARDED, skb->len);
	return bpf_redirect(dst->ifindex, 0);
}

SEC("classifier/from_endpoint")
int from_endpoint(struct __sk_buff *skb)
{
	struct flow f = {};
	struct endpoint_key key;
	struct endpoint_info *src, *dst;
	__u16 eth_proto = 0;
	__u32 dst_identity;
	int ret = parse(skb, &f, &eth_proto);

	if (ret < 0)
		return drop(skb, DIR_EGRESS, -ret, 0, 0, 0, 0);
	if (ret > 0) {
		/* ARP goes to the host stack; nothing else but IPv4 is routed. */
		if (eth_proto == bpf_htons(ETH_P_ARP)) {
			count(DIR_EGRESS, METRIC_FORWARDED, skb->len);
			return TC_ACT_OK;
		}
		return drop(skb, DIR_EGRESS, DROP_UNSUPPORTED_L3, 0, 0, 0, 0);
	}

	/* The source address must be the one assigned to this endpoint:
	 * anything else is spoofed. */
	key.ip = f.saddr;
	src = bpf_map_lookup_elem(&twill_endpoints, &key);
	if (!src || src->ifindex != skb->ifindex)
		return drop(skb, DIR_EGRESS, DROP_INVALID_SOURCE_IP, 0, 0, 0, &f);

	key.ip = f.daddr;
	dst = bpf_map_lookup_elem(&twill_endpoints, &key);
	dst_identity = dst ? dst->identity : identity_of(f.daddr);

	struct datapath_config *cfg = config();
	struct ct_result ct = ct_lookup(&f, DIR_EGRESS, skb->len);
	if (ct.state == CT_NEW) {
		__u32 match = 0;
		int verdict = policy_check(src->endpoint_id, DIR_EGRESS, dst_identity, &f, &match);
		if (verdict) {
			emit(skb, EVENT_POLICY_VERDICT, verdict, DIR_EGRESS, CT_NEW, src->endpoint_id, src->identity,
			     dst_identity, &f);
			return drop(skb, DIR_EGRESS, verdict, src->endpoint_id, src->identity, dst_identity, &f);
		}
		ct_create(&f, DIR_EGRESS, skb->len);
		emit_match(skb, EVENT_POLICY_VERDICT, 0, DIR_EGRESS, CT_NEW, src->endpoint_id, src->identity,
			   dst_identity, &f, match);
	}

	if (cfg && cfg->aggregation == AGGREGATION_NONE)
		trace(skb, cfg, &ct, TRACE_FROM_ENDPOINT, DIR_EGRESS, src->endpoint_id, src->identity,
		      dst_identity, &f);
	/* A local destination reports the packet when it delivers it. */
	if (dst)
		return redirect_to_endpoint(skb, dst, src->endpoint_id, &f);

	/* Not a local endpoint: the host stack routes it. */
	trace(skb, cfg, &ct, TRACE_TO_STACK, DIR_EGRESS, src->endpoint_id, src->identity, dst_identity, &f);
	count(DIR_EGRESS, METRIC_FORWARDED, skb->len);
	return TC_ACT_OK;
}

SEC("classifier/to_endpoint")
int to_endpoint(struct __sk_buff *skb)
{
	struct flow f = {};
	struct endpoint_key key;
	struct endpoint_info *ep;
	__u16 eth_proto = 0;
	__u32 src_identity;
	int ret = parse(skb, &f, &eth_proto);

	if (ret < 0)
		return drop(skb, DIR_INGRESS, -ret, 0, 0, 0, 0);
	if (ret > 0) {
		/* ARP from the host; other L3 protocols are not routed. */
		if (eth_proto == bpf_htons(ETH_P_ARP)) {
			count(DIR_INGRESS, METRIC_FORWARDED, skb->len);
			return TC_ACT_OK;
		}
		return drop(skb, DIR_INGRESS, DROP_UNSUPPORTED_L3, 0, 0, 0, 0);
	}

	/* Only the endpoint's own address is delivered here. */
	key.ip = f.daddr;
	ep = bpf_map_lookup_elem(&twill_endpoints, &key);
	if (!ep || ep->ifindex != skb->ifindex)
		return drop(skb, DIR_INGRESS, DROP_INVALID_PACKET, 0, 0, 0, &f);
	src_identity = identity_of(f.saddr);

	struct datapath_config *cfg = config();
	struct ct_result ct = ct_lookup(&f, DIR_INGRESS, skb->len);
	if (ct.state == CT_NEW) {
		__u32 match = POLICY_MATCH_ALL;
		int from_host = src_identity == IDENTITY_HOST && cfg && cfg->allow_localhost;
		int verdict = from_host ? 0 : policy_check(ep->endpoint_id, DIR_INGRESS, src_identity, &f, &match);
		if (verdict) {
			emit(skb, EVENT_POLICY_VERDICT, verdict, DIR_INGRESS, CT_NEW, ep->endpoint_id, src_identity,
			     ep->identity, &f);
			return drop(skb, DIR_INGRESS, verdict, ep->endpoint_id, src_identity, ep->identity, &f);
		}
		ct_create(&f, DIR_INGRESS, skb->len);
		emit_match(skb, EVENT_POLICY_VERDICT, 0, DIR_INGRESS, CT_NEW, ep->endpoint_id, src_identity,
			   ep->identity, &f, match);
	}
	trace(skb, cfg, &ct, TRACE_TO_ENDPOINT, DIR_INGRESS, ep->endpoint_id, src_identity, ep->identity, &f);
	count(DIR_INGRESS, METRIC_FORWARDED, skb->len);
	return TC_ACT_OK;
}
