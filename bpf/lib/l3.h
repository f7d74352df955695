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
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	/* Written in place: the helpers (bpf_skb_store_bytes,
	 * bpf_l3_csum_replace) would each make the head writable and copy
	 * again, four times a packet. */
	if ((void *)(ip + 1) > data_end)
		return drop(skb, dir, DROP_INVALID_PACKET, endpoint_id, 0, 0, p);
	/* Let the kernel answer with ICMP time exceeded. */
	if (ip->ttl <= 1)
		return TC_ACT_OK;
	/* The TTL is the high byte of its 16-bit checksum word: one less
	 * there adds 0x0100 to the ones' complement sum (RFC 1624). */
	__u32 check = ip->check + bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xffff));
	ip->ttl -= 1;
	__builtin_memcpy(eth->h_dest, dst->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, dst->host_mac, ETH_ALEN);
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
