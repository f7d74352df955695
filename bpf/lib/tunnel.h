/* The VXLAN overlay between nodes: the sender's source identity travels
 * in the VNI (Cilium's encoding), the receiver trusts it only from a
 * known node. The device runs in collect-metadata ("external") mode, so
 * one device serves every remote node and the tunnel key set here names
 * the node per packet.
 */
#pragma once

#include "common.h"
#include "endpoints.h"
#include "events.h"
#include "metrics.h"

/* Encapsulates towards the node at `tunnel_endpoint` (network byte order)
 * with `src_identity` as the VNI and hands the packet to the tunnel device
 * `ifindex`. The caller has applied egress policy and reported the packet;
 * this counts it as forwarded. */
static __always_inline int tunnel_encap4(struct __sk_buff *skb, __u32 ifindex, __u32 tunnel_endpoint,
					 __u32 src_identity, __u32 endpoint_id, const struct packet *p)
{
	struct bpf_tunnel_key key = {
		.remote_ipv4 = bpf_ntohl(tunnel_endpoint),
		.tunnel_id = src_identity,
		.tunnel_ttl = 64,
	};

	/* No UDP checksum: the inner packet carries its own, and the outer
	 * one would cost a pass over the payload (Cilium does the same). */
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return drop(skb, DIR_EGRESS, DROP_WRITE_ERROR, endpoint_id, src_identity, 0, p);
	count(DIR_EGRESS, METRIC_FORWARDED, skb->len);
	return bpf_redirect(ifindex, 0);
}

/* The source identity a decapsulated packet carries, or a negative drop
 * reason: a packet without tunnel metadata, or one from an address that is
 * not a known node's (IPCACHE_F_NODE), carries none that can be trusted.
 * The node's identity is not what is checked: each node has its own. */
static __always_inline int tunnel_source_identity(struct __sk_buff *skb, __u32 *identity)
{
	struct bpf_tunnel_key key = {};
	struct ipcache_value *node;

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return -DROP_NO_TUNNEL_KEY;
	node = ipcache_lookup4(bpf_htonl(key.remote_ipv4));
	if (!node || !(node->flags & IPCACHE_F_NODE))
		return -DROP_UNKNOWN_SENDER;
	*identity = key.tunnel_id;
	return 0;
}
