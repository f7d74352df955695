/* The program on the VXLAN tunnel device, in collect-metadata mode:
 *
 *  from_overlay: tc ingress of the device, sees each packet another node
 *                encapsulated, already decapsulated, with the tunnel key
 *                (outer source, VNI) as metadata.
 *
 * The VNI is the sender's source identity; it is believed only when the
 * outer source is a known node (flagged IPCACHE_F_NODE in the ipcache), or
 * anyone on the underlay could claim any identity. A packet for a local
 * endpoint then passes the endpoint's ingress policy and goes straight
 * into its namespace, as a packet from a local endpoint would; anything
 * else (the node itself, say) is the host stack's.
 */
#include <linux/if_packet.h>

#include "lib/common.h"
#include "lib/config.h"
#include "lib/conntrack.h"
#include "lib/debug.h"
#include "lib/deliver.h"
#include "lib/endpoints.h"
#include "lib/events.h"
#include "lib/l3.h"
#include "lib/lxc_policy.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/proxy.h"
#include "lib/tunnel.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("classifier/from_overlay")
int from_overlay(struct __sk_buff *skb)
{
	struct packet p = {};
	struct endpoint_info *dst;
	struct ct_result ct = { .state = CT_NEW };
	__u16 eth_proto = 0;
	__u32 src_identity = 0;
	int ret = tunnel_source_identity(skb, &src_identity);

	if (ret < 0)
		return drop(skb, DIR_INGRESS, -ret, 0, 0, 0, 0);
	ret = parse(skb, &p, &eth_proto);
	if (ret < 0)
		return drop(skb, DIR_INGRESS, -ret, 0, src_identity, 0, 0);
	if (ret == PARSE_OTHER_L3) {
		/* Peers resolve no neighbours through the tunnel: every frame
		 * is routed IPv4. */
		return drop(skb, DIR_INGRESS, DROP_UNSUPPORTED_L3, 0, src_identity, 0, 0);
	}

	p.now = packet_clock();
	struct datapath_config *cfg = config();
	dst = endpoint_lookup4(p.tuple.daddr.v4);
	if (!dst) {
		/* The node itself (or what it routes): the stack decides. The
		 * inner MAC is the sending node's router's, so the stack would
		 * take the frame for someone else's without this. */
		__u32 dst_identity = identity_of4(p.tuple.daddr.v4);
		if (cfg && cfg->aggregation == AGGREGATION_NONE)
			trace(skb, cfg, &ct, TRACE_FROM_OVERLAY, DIR_INGRESS, 0, src_identity, dst_identity, &p);
		bpf_skb_change_type(skb, PACKET_HOST);
		count(DIR_INGRESS, METRIC_FORWARDED, skb->len);
		return TC_ACT_OK;
	}

	if (debug_for(cfg, dst))
		dbg(skb, DBG_DECAP, dst->endpoint_id, src_identity, 0);
	if (cfg && cfg->aggregation == AGGREGATION_NONE)
		trace(skb, cfg, &ct, TRACE_FROM_OVERLAY, DIR_INGRESS, dst->endpoint_id, src_identity, dst->identity,
		      &p);
	return deliver_from_outside(skb, cfg, dst, src_identity, &p, &ct);
}
