/* Connection tracking. Entries are kept per endpoint: the one that opens
 * a connection and the one that accepts it each have their own, under a
 * key that every packet of the connection computes alike (the canonical
 * order of bpf/include/twill.h), so a packet costs one lookup whichever
 * way it travels; the entry's origin tells a reply from the opener's own
 * packets. A connection between two local endpoints that host routing
 * delivers and both admitted has one entry for both (CT_AT_BOTH, scope
 * CT_PAIR): its packets pass both ends in one program, so one lookup
 * answers for both and a connection costs one insert.
 *
 * Lookups take a struct tuple; only ct_touch_tuple and ct_create know the
 * map and key of a family, so IPv6 adds its map there and shares the
 * rest (states, lifetimes, reply and related matching).
 */
#pragma once

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CT_ENTRIES);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_ct SEC(".maps");

/* Lifetimes of conntrack entries, as Cilium's defaults. */
#define CT_LIFETIME_TCP (21600 * SECONDS)
#define CT_LIFETIME_SYN (60 * SECONDS)
#define CT_LIFETIME_CLOSE (10 * SECONDS)
#define CT_LIFETIME_OTHER (60 * SECONDS)

/* The outcome of a conntrack lookup: the state, the entry (if any) and
 * whether the packet travels against the entry's direction. */
struct ct_result {
	struct ct_entry *entry;
	int state;
	int reverse;
};

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

/* The raw IPv4 key of a tuple, as it travels or reversed, in `scope`: for
 * maps whose entries are directional (the load balancer's twill_lb4_nat). */
static __always_inline void ct_key4(struct ct_key *key, const struct tuple *t, __u8 scope, int reverse)
{
	key->saddr = reverse ? t->daddr.v4 : t->saddr.v4;
	key->daddr = reverse ? t->saddr.v4 : t->daddr.v4;
	key->sport = reverse ? t->dport : t->sport;
	key->dport = reverse ? t->sport : t->dport;
	key->protocol = t->protocol;
	key->scope = scope;
	key->pad = 0;
}

/* Whose entry a lookup or an insert is about: the endpoint at the tuple's
 * source end, the one at its destination end, or both (CT_PAIR). */
#define CT_AT_DST 0
#define CT_AT_SRC 1
#define CT_AT_BOTH 2

/* The twill_ct key of a tuple for the endpoint at `at` (CT_AT_*). Returns
 * the CT_ORIGIN_* of a packet with this tuple: which way it travels
 * between the key's ends. */
static __always_inline int ct_conn_key4(struct ct_key *key, const struct tuple *t, int at)
{
	/* Any fixed order does: the addresses stay in network order. */
	__u64 s = ((__u64)t->saddr.v4 << 16) | t->sport;
	__u64 d = ((__u64)t->daddr.v4 << 16) | t->dport;
	int swap = s > d;

	ct_key4(key, t, 0, swap);
	if (at == CT_AT_BOTH)
		key->scope = CT_PAIR;
	else
		key->scope = ((at == CT_AT_SRC) ^ swap) ? CT_SIDE_A : CT_SIDE_B;
	return swap ? CT_ORIGIN_B : CT_ORIGIN_A;
}

/* The CT_AT_* of an endpoint's own direction (DIR_*). */
static __always_inline int ct_at(__u8 scope)
{
	return scope == DIR_EGRESS ? CT_AT_SRC : CT_AT_DST;
}

/* Finds a live entry in `map` and accounts the packet to it. */
static __always_inline struct ct_entry *ct_touch(void *map, const void *key, const struct packet *p, __u32 len)
{
	struct ct_entry *e = bpf_map_lookup_elem(map, key);
	__u64 now = p->now;

	if (!e || e->expires < now)
		return 0;
	/* A new SYN on a closing connection's tuple opens a new connection:
	 * it must pass policy again, not ride on the old entry. */
	if ((e->flags & CT_FLAG_CLOSING) && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
		return 0;
	e->packets += 1;
	e->bytes += len;
	/* Entries are shared by both directions, and so by both CPUs of a
	 * request/response pair: write what changes, not on every packet. */
	if ((e->tcp_flags | p->tcp_flags) != e->tcp_flags)
		e->tcp_flags |= p->tcp_flags;
	if ((p->tcp_flags & (TCP_FIN | TCP_RST)) && !(e->flags & CT_FLAG_CLOSING))
		e->flags |= CT_FLAG_CLOSING;
	/* The lifetime is refreshed at most once a second: a second of
	 * slack on lifetimes of 10 s and more. */
	__u64 expires = now + ct_lifetime(e);
	if (expires > e->expires + SECONDS || expires < e->expires)
		e->expires = expires;
	return e;
}

/* The live entry of `t` for the endpoint at `at` (CT_AT_*); *origin: the
 * CT_ORIGIN_* of a packet with this tuple. */
static __always_inline struct ct_entry *ct_touch_tuple(const struct tuple *t, int at, int *origin,
						       const struct packet *p, __u32 len)
{
	struct ct_key key;

	*origin = ct_conn_key4(&key, t, at);
	return ct_touch(&twill_ct, &key, p, len);
}

/* Classifies a packet against the entry of the endpoint at `at` (CT_AT_*:
 * CT_AT_SRC for what an endpoint sends, CT_AT_DST for what it receives,
 * CT_AT_BOTH for a pair of local endpoints). */
static __always_inline struct ct_result ct_lookup_at(const struct packet *p, int at, __u32 len)
{
	struct ct_result r = { .state = CT_NEW };
	int origin;

	if (p->related) {
		/* The erroring packet went the other way: the endpoint was at
		 * its other end. */
		int other = at == CT_AT_BOTH ? CT_AT_BOTH : at == CT_AT_SRC ? CT_AT_DST : CT_AT_SRC;

		r.entry = ct_touch_tuple(&p->inner, other, &origin, p, len);
		if (r.entry) {
			r.state = CT_RELATED;
			r.reverse = 1;
			return r;
		}
	}
	r.entry = ct_touch_tuple(&p->tuple, at, &origin, p, len);
	if (r.entry) {
		r.reverse = origin != r.entry->origin;
		r.state = r.reverse ? CT_REPLY : CT_ESTABLISHED;
	}
	return r;
}

/* Classifies a packet against conntrack from the point of view of one
 * endpoint's direction: `scope` DIR_EGRESS for what the endpoint sends,
 * DIR_INGRESS for what it receives. */
static __always_inline struct ct_result ct_lookup(const struct packet *p, __u8 scope, __u32 len)
{
	return ct_lookup_at(p, ct_at(scope), len);
}

/* Records a new connection, opened by this packet, for the endpoint at
 * `at` (CT_AT_*); with a proxy port when it is redirected to the L7
 * proxy. */
static __always_inline void ct_create_at(const struct packet *p, int at, __u32 len, __u16 proxy_port)
{
	struct ct_key key;
	struct ct_entry e = {
		.packets = 1,
		.bytes = len,
		.tcp_flags = p->tcp_flags,
		.proxy_port = proxy_port,
	};
	__u64 now = p->now;

	if (p->tcp_flags & (TCP_FIN | TCP_RST))
		e.flags |= CT_FLAG_CLOSING;
	/* The first packet is always reported: record it as such. */
	e.reported_flags[0] = p->tcp_flags;
	e.last_report[0] = (__u16)(now / SECONDS);
	e.expires = now + ct_lifetime(&e);
	e.origin = ct_conn_key4(&key, &p->tuple, at);
	bpf_map_update_elem(&twill_ct, &key, &e, BPF_ANY);
}

/* Records a new connection, opened by this packet, in `scope` (DIR_*). */
static __always_inline void ct_create(const struct packet *p, __u8 scope, __u32 len, __u16 proxy_port)
{
	ct_create_at(p, ct_at(scope), len, proxy_port);
}

/* Marks the connection `p` opened in `scope` as redirected to the proxy on
 * `proxy_port` (when a later check than the one that created the entry
 * asked for the redirect). */
static __always_inline void ct_set_proxy_port(const struct packet *p, __u8 scope, __u16 proxy_port)
{
	struct ct_key key;
	struct ct_entry *e;

	ct_conn_key4(&key, &p->tuple, ct_at(scope));
	e = bpf_map_lookup_elem(&twill_ct, &key);
	if (e)
		e->proxy_port = proxy_port;
}
