/* Forwarding between local endpoints without the host stack. */
#pragma once

#include "common.h"
#include "events.h"
#include "metrics.h"

/* Routes an IPv4 packet straight into a local endpoint, as a router would
 * (new MACs, TTL decremented), with bpf_redirect_peer: from this tc
 * ingress hook to the ingress of the receiver's eth0, inside its
 * namespace, without a pass through the host-side veth's egress or the
 * backlog queue. The caller has applied the receiver's ingress policy and
 * counts the packet; failures are dropped in direction `dir`. */
static __always_inline int ipv4_redirect_to_endpoint(struct __sk_buff *skb, const struct endpoint_info *dst,
						     __u32 dir, __u32 endpoint_id, const struct packet *p)
{
	__u32 ttl_off = sizeof(struct ethhdr) + offsetof(struct iphdr, ttl);
	__u32 csum_off = sizeof(struct ethhdr) + offsetof(struct iphdr, check);
	__u8 ttl;

	if (bpf_skb_load_bytes(skb, ttl_off, &ttl, 1) < 0)
		return drop(skb, dir, DROP_INVALID_PACKET, endpoint_id, 0, 0, p);
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
		return drop(skb, dir, DROP_INVALID_PACKET, endpoint_id, 0, 0, p);
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
