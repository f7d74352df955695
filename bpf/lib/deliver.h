/* Delivery into a local endpoint of what arrives from outside the node at
 * a device's tc ingress (the overlay device, a --devices device): the
 * receiver's ingress policy, then straight into its namespace, as a
 * packet from a local endpoint would go. */
#pragma once

#include <linux/if_packet.h>

#include "common.h"
#include "config.h"
#include "debug.h"
#include "events.h"
#include "l3.h"
#include "lxc_policy.h"
#include "metrics.h"
#include "proxy.h"

/* `p` is reported as the receiver gets it, with the MACs the delivery
 * writes. Ingress L7 rules send the packet to the proxy instead (tc
 * ingress, so the socket can be assigned; conntrack remembers it).
 * Returns the verdict for the hook. */
static __always_inline int deliver_from_outside(struct __sk_buff *skb, struct datapath_config *cfg,
						struct endpoint_info *dst, __u32 src_identity, struct packet *p,
						struct ct_result *ct)
{
	__u16 proxy_port = 0;
	int ret;

	__builtin_memcpy(p->src_mac, dst->host_mac, ETH_ALEN);
	__builtin_memcpy(p->dst_mac, dst->mac, ETH_ALEN);
	if (endpoint_ingress(skb, cfg, dst, src_identity, 0, p, ct, &proxy_port, 0))
		return TC_ACT_SHOT;
	if (proxy_port) {
		ret = proxy_redirect4(skb, p, proxy_port);
		if (ret)
			return drop(skb, DIR_INGRESS, ret, dst->endpoint_id, src_identity, dst->identity, p);
		trace(skb, cfg, ct, TRACE_TO_PROXY, DIR_INGRESS, dst->endpoint_id, src_identity, dst->identity, p);
		count(DIR_INGRESS, METRIC_FORWARDED, skb->len);
		bpf_skb_change_type(skb, PACKET_HOST);
		return TC_ACT_OK;
	}
	trace_at(skb, dst->ifindex, cfg, ct, TRACE_TO_ENDPOINT, DIR_INGRESS, dst->endpoint_id, src_identity,
		 dst->identity, p);
	if (debug_for(cfg, dst))
		dbg(skb, DBG_LOCAL_DELIVERY, dst->endpoint_id, dst->endpoint_id, src_identity);
	__u32 len = skb->len;
	ret = ipv4_redirect_to_endpoint(skb, dst, DIR_INGRESS, dst->endpoint_id, p);
	if (ret == TC_ACT_REDIRECT)
		count(DIR_INGRESS, METRIC_FORWARDED, len);
	return ret;
}
