/* Forwarding without the host stack: into a local endpoint, and out of
 * the node by the host's own routes. */
#pragma once

#include "common.h"
#include "events.h"
#include "metrics.h"

/* What a router does to an IPv4 packet it forwards: TTL one less, new
 * MACs (none given: the neighbour redirect writes them). Returns 0; 1,
 * leaving the packet as it was, for one whose TTL runs out, which only
 * the kernel answers (ICMP time exceeded); or -1 for a packet too short
 * to hold an IPv4 header. Written in place: the helpers (bpf_skb_store_bytes,
 * bpf_l3_csum_replace) would each make the head writable and copy again,
 * four times a packet. */
static __always_inline int ipv4_route(struct __sk_buff *skb, const __u8 *dmac, const __u8 *smac)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end)
		return -1;
	if (ip->ttl <= 1)
		return 1;
	/* The TTL is the high byte of its 16-bit checksum word: one less
	 * there adds 0x0100 to the ones' complement sum (RFC 1624). */
	__u32 check = ip->check + bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xffff));
	ip->ttl -= 1;
	if (dmac) {
		__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	}
	return 0;
}

/* Routes an IPv4 packet straight into a local endpoint with
 * bpf_redirect_peer: from this tc ingress hook to the ingress of the
 * receiver's eth0, inside its namespace, without a pass through the
 * host-side veth's egress or the backlog queue. The caller has applied
 * the receiver's ingress policy and counts the packet; failures are
 * dropped in direction `dir`. */
static __always_inline int ipv4_redirect_to_endpoint(struct __sk_buff *skb, const struct endpoint_info *dst,
						     __u32 dir, __u32 endpoint_id, const struct packet *p)
{
	int ret = ipv4_route(skb, dst->mac, dst->host_mac);

	if (ret < 0)
		return drop(skb, dir, DROP_INVALID_PACKET, endpoint_id, 0, 0, p);
	if (ret)
		return TC_ACT_OK;
	return bpf_redirect_peer(dst->ifindex, 0);
}

/* From one local endpoint to another: forwarded out of the sender and into
 * the receiver. */
static __always_inline int ipv4_deliver_to_endpoint(struct __sk_buff *skb, const struct endpoint_info *dst,
						    __u32 endpoint_id, const struct packet *p)
{
	__u32 len = skb->len;
	int ret = ipv4_redirect_to_endpoint(skb, dst, DIR_EGRESS, endpoint_id, p);

	if (ret == TC_ACT_REDIRECT) {
		count(DIR_EGRESS, METRIC_FORWARDED, len);
		count(DIR_INGRESS, METRIC_FORWARDED, len);
	}
	return ret;
}

/* Leaving the node (for another node or the world): the host's FIB picks
 * the device and next hop, as its stack would, and the packet goes
 * straight to that device's egress, skipping the stack's input, forward
 * and netfilter paths (Cilium's eBPF host routing does the same). With
 * the neighbour known the MACs are written here and a plain redirect
 * does; without, bpf_redirect_neigh resolves it as the stack would.
 * Only out of a --devices device (see datapath_config.fib_devices).
 * Returns TC_ACT_REDIRECT with *oif set, or 0 for whatever the stack must
 * decide: another device, local and non-unicast destinations, forwarding disabled, no
 * route, blackhole and prohibit routes, a packet over the route's MTU
 * (the stack answers with ICMP, or fragments), an expiring TTL. */
static __always_inline int fib_device(const struct datapath_config *cfg, __u32 ifindex)
{
#pragma unroll
	for (int i = 0; i < FIB_DEVICES_MAX; i++) {
		if (!cfg->fib_devices[i])
			return 0;
		if (cfg->fib_devices[i] == ifindex)
			return 1;
	}
	return 0;
}

static __always_inline int ipv4_fib_redirect(struct __sk_buff *skb, const struct datapath_config *cfg,
					     const struct packet *p, __u32 *oif)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct bpf_fib_lookup fib = {};

	if ((void *)(ip + 1) > data_end)
		return 0;
	fib.family = TWILL_AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = p->tuple.protocol;
	fib.sport = bpf_htons(p->tuple.sport);
	fib.dport = bpf_htons(p->tuple.dport);
	/* No tot_len: given one, the kernel checks it against the MTU, and
	 * a GSO packet's is the whole aggregate's, so every large segment
	 * of a stream would be sent to the stack (and reordered against the
	 * small packets redirected here). Without it the kernel checks the
	 * skb itself, GSO segments by their size. */
	fib.ipv4_src = p->tuple.saddr.v4;
	fib.ipv4_dst = p->tuple.daddr.v4;
	fib.ifindex = skb->ifindex;

	int rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if ((rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH) && !fib_device(cfg, fib.ifindex))
		return 0;
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (ipv4_route(skb, fib.dmac, fib.smac))
			return 0;
		*oif = fib.ifindex;
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	/* The lookup left the next hop (gateway, or the destination itself
	 * on a connected route) and the device in `fib`. */
	struct bpf_redir_neigh nh = { .nh_family = fib.family, .ipv4_nh = fib.ipv4_dst };
	if (ipv4_route(skb, 0, 0))
		return 0;
	*oif = fib.ifindex;
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}
