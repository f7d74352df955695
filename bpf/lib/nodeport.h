/* Per-packet NodePort translation at the node's devices, for clients the
 * socket hooks never see (outside the node): the NAT table, its
 * lifetimes, and the address and port rewrite.
 *
 * A connection has two entries in twill_lb4_nat, both keyed by struct
 * ct_key (ports in host byte order, as conntrack keys): LB_NAT_FORWARD
 * under the tuple the client sent, naming the backend, and LB_NAT_REVERSE
 * under the backend's reply tuple, naming the frontend the reply must
 * come from. Later packets follow the entries, so a connection keeps its
 * backend even when the service changes.
 */
#pragma once

#include "common.h"
#include "conntrack.h"

/* As many connections as conntrack tracks; two entries each. LRU: under
 * pressure the oldest connections lose their translation first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CT_ENTRIES);
	__type(key, struct ct_key);
	__type(value, struct lb4_nat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_lb4_nat SEC(".maps");

/* Conntrack's lifetimes: a TCP connection lives long once both sides
 * spoke (an ACK), briefly while only a SYN was seen and after a FIN or
 * RST; UDP as "other". */
static __always_inline __u64 lb4_nat_lifetime(__u16 flags, const struct packet *p)
{
	if (flags & CT_FLAG_CLOSING)
		return CT_LIFETIME_CLOSE;
	if (p->tuple.protocol != IPPROTO_TCP)
		return CT_LIFETIME_OTHER;
	return (p->tcp_flags & TCP_ACK) ? CT_LIFETIME_TCP : CT_LIFETIME_SYN;
}

/* The live entry under `key`, its lifetime extended by this packet; NULL
 * if there is none, it expired, or a new SYN reuses a closing tuple (a
 * new connection: it chooses its backend again). */
static __always_inline struct lb4_nat_entry *lb4_nat_touch(const struct ct_key *key, const struct packet *p)
{
	struct lb4_nat_entry *e = bpf_map_lookup_elem(&twill_lb4_nat, key);

	if (!e || e->expires < p->now)
		return 0;
	if ((e->flags & CT_FLAG_CLOSING) && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
		return 0;
	if ((p->tcp_flags & (TCP_FIN | TCP_RST)) && !(e->flags & CT_FLAG_CLOSING))
		e->flags |= CT_FLAG_CLOSING;
	/* At most once a second, as conntrack: the entry is shared by every
	 * CPU the connection's packets arrive on. A closing entry may only
	 * get shorter. */
	__u64 expires = p->now + lb4_nat_lifetime(e->flags, p);
	if (expires > e->expires + SECONDS || (expires < e->expires && (e->flags & CT_FLAG_CLOSING)))
		e->expires = expires;
	return e;
}

/* Records both entries of a new translation of `p` to `backend`. */
static __always_inline void lb4_nat_create(const struct packet *p, const struct lb4_backend *backend,
					   __u32 rev_nat_index, __u32 ifindex)
{
	__u16 flags = (p->tcp_flags & (TCP_FIN | TCP_RST)) ? CT_FLAG_CLOSING : 0;
	__u64 expires = p->now + lb4_nat_lifetime(flags, p);
	struct lb4_nat_entry fwd = {
		.expires = expires,
		.address = backend->address,
		.port = backend->port,
		.flags = flags,
		.rev_nat_index = rev_nat_index,
		.ifindex = ifindex,
	};
	struct lb4_nat_entry rev = {
		.expires = expires,
		.address = p->tuple.daddr.v4,
		.port = bpf_htons(p->tuple.dport),
		.flags = flags,
		.rev_nat_index = rev_nat_index,
		.ifindex = ifindex,
	};
	struct ct_key key;
	struct tuple reply = {
		.saddr.v4 = backend->address,
		.daddr.v4 = p->tuple.saddr.v4,
		.sport = bpf_ntohs(backend->port),
		.dport = p->tuple.sport,
		.protocol = p->tuple.protocol,
		.family = TWILL_AF_INET,
	};

	ct_key4(&key, &p->tuple, LB_NAT_FORWARD, 0);
	bpf_map_update_elem(&twill_lb4_nat, &key, &fwd, BPF_ANY);
	ct_key4(&key, &reply, LB_NAT_REVERSE, 0);
	bpf_map_update_elem(&twill_lb4_nat, &key, &rev, BPF_ANY);
}

/* Offset of the L4 header of an IPv4 packet parse() accepted. */
static __always_inline int l4_offset(struct __sk_buff *skb, __u32 *off)
{
	__u8 vihl;

	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &vihl, 1) < 0)
		return -1;
	*off = sizeof(struct ethhdr) + (vihl & 0x0f) * 4;
	return 0;
}

/* Rewrites the destination (dst set) or source address and port of a TCP
 * or UDP packet, with the IPv4 and L4 checksums. A UDP checksum of 0
 * ("none") stays 0 (BPF_F_MARK_MANGLED_0). Returns < 0 on failure. */
static __always_inline int lb4_rewrite(struct __sk_buff *skb, const struct packet *p, int dst, __u32 new_addr,
				       __u16 new_port)
{
	__u32 l4_off;
	__u32 old_addr = dst ? p->tuple.daddr.v4 : p->tuple.saddr.v4;
	__u16 old_port = bpf_htons(dst ? p->tuple.dport : p->tuple.sport);
	__u32 addr_off = sizeof(struct ethhdr) + (dst ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));
	__u32 ip_csum_off = sizeof(struct ethhdr) + offsetof(struct iphdr, check);
	int udp = p->tuple.protocol == IPPROTO_UDP;
	__u64 mangled = udp ? BPF_F_MARK_MANGLED_0 : 0;

	if (l4_offset(skb, &l4_off) < 0)
		return -1;
	__u32 csum_off = l4_off + (udp ? offsetof(struct udphdr, check) : offsetof(struct tcphdr, check));
	__u32 port_off = l4_off + (dst ? offsetof(struct tcphdr, dest) : offsetof(struct tcphdr, source));

	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, mangled | BPF_F_PSEUDO_HDR | 4) < 0 ||
	    bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | 2) < 0 ||
	    bpf_l3_csum_replace(skb, ip_csum_off, old_addr, new_addr, 4) < 0 ||
	    bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0) < 0 ||
	    bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0) < 0)
		return -1;
	return 0;
}
