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
 * compiles and loads nothing. The work itself lives in lib/, one header
 * per concern; this file is only the order in which it happens.
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/conntrack.h"
#include "lib/endpoints.h"
#include "lib/events.h"
#include "lib/l3.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/policy.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("classifier/from_endpoint")
int from_endpoint(struct __sk_buff *skb)
{
	struct packet p = {};
	struct endpoint_info *src, *dst;
	__u16 eth_proto = 0;
	__u32 dst_identity;
	int ret = parse(skb, &p, &eth_proto);

	if (ret < 0)
		return drop(skb, DIR_EGRESS, -ret, 0, 0, 0, 0);
	if (ret == PARSE_OTHER_L3) {
		/* ARP goes to the host stack; nothing else but IPv4 is routed. */
		if (eth_proto == bpf_htons(ETH_P_ARP)) {
			count(DIR_EGRESS, METRIC_FORWARDED, skb->len);
			return TC_ACT_OK;
		}
		return drop(skb, DIR_EGRESS, DROP_UNSUPPORTED_L3, 0, 0, 0, 0);
	}

	/* The source address must be the one assigned to this endpoint:
	 * anything else is spoofed. */
	src = endpoint_lookup4(p.tuple.saddr.v4);
	if (!src || src->ifindex != skb->ifindex)
		return drop(skb, DIR_EGRESS, DROP_INVALID_SOURCE_IP, 0, 0, 0, &p);

	dst = endpoint_lookup4(p.tuple.daddr.v4);
	dst_identity = dst ? dst->identity : identity_of4(p.tuple.daddr.v4);

	struct datapath_config *cfg = config();
	struct ct_result ct = ct_lookup(&p, DIR_EGRESS, skb->len);
	if (ct.state == CT_NEW) {
		__u32 match = 0;
		int verdict = policy_check_packet(src->endpoint_id, DIR_EGRESS, dst_identity, &p, &match);
		if (verdict) {
			emit(skb, EVENT_POLICY_VERDICT, verdict, DIR_EGRESS, CT_NEW, src->endpoint_id, src->identity,
			     dst_identity, &p);
			return drop(skb, DIR_EGRESS, verdict, src->endpoint_id, src->identity, dst_identity, &p);
		}
		ct_create(&p, DIR_EGRESS, skb->len);
		emit_match(skb, EVENT_POLICY_VERDICT, 0, DIR_EGRESS, CT_NEW, src->endpoint_id, src->identity,
			   dst_identity, &p, match);
	}

	if (cfg && cfg->aggregation == AGGREGATION_NONE)
		trace(skb, cfg, &ct, TRACE_FROM_ENDPOINT, DIR_EGRESS, src->endpoint_id, src->identity,
		      dst_identity, &p);
	/* A local destination reports the packet when it delivers it. */
	if (dst)
		return ipv4_redirect_to_endpoint(skb, dst, src->endpoint_id, &p);

	/* Not a local endpoint: the host stack routes it. */
	trace(skb, cfg, &ct, TRACE_TO_STACK, DIR_EGRESS, src->endpoint_id, src->identity, dst_identity, &p);
	count(DIR_EGRESS, METRIC_FORWARDED, skb->len);
	return TC_ACT_OK;
}

SEC("classifier/to_endpoint")
int to_endpoint(struct __sk_buff *skb)
{
	struct packet p = {};
	struct endpoint_info *ep;
	__u16 eth_proto = 0;
	__u32 src_identity;
	int ret = parse(skb, &p, &eth_proto);

	if (ret < 0)
		return drop(skb, DIR_INGRESS, -ret, 0, 0, 0, 0);
	if (ret == PARSE_OTHER_L3) {
		/* ARP from the host; other L3 protocols are not routed. */
		if (eth_proto == bpf_htons(ETH_P_ARP)) {
			count(DIR_INGRESS, METRIC_FORWARDED, skb->len);
			return TC_ACT_OK;
		}
		return drop(skb, DIR_INGRESS, DROP_UNSUPPORTED_L3, 0, 0, 0, 0);
	}

	/* Only the endpoint's own address is delivered here. */
	ep = endpoint_lookup4(p.tuple.daddr.v4);
	if (!ep || ep->ifindex != skb->ifindex)
		return drop(skb, DIR_INGRESS, DROP_INVALID_PACKET, 0, 0, 0, &p);
	src_identity = identity_of4(p.tuple.saddr.v4);

	struct datapath_config *cfg = config();
	struct ct_result ct = ct_lookup(&p, DIR_INGRESS, skb->len);
	if (ct.state == CT_NEW) {
		__u32 match = POLICY_MATCH_ALL;
		int from_host = src_identity == IDENTITY_HOST && cfg && cfg->allow_localhost;
		int verdict =
			from_host ? 0 : policy_check_packet(ep->endpoint_id, DIR_INGRESS, src_identity, &p, &match);
		if (verdict) {
			emit(skb, EVENT_POLICY_VERDICT, verdict, DIR_INGRESS, CT_NEW, ep->endpoint_id, src_identity,
			     ep->identity, &p);
			return drop(skb, DIR_INGRESS, verdict, ep->endpoint_id, src_identity, ep->identity, &p);
		}
		ct_create(&p, DIR_INGRESS, skb->len);
		emit_match(skb, EVENT_POLICY_VERDICT, 0, DIR_INGRESS, CT_NEW, ep->endpoint_id, src_identity,
			   ep->identity, &p, match);
	}
	trace(skb, cfg, &ct, TRACE_TO_ENDPOINT, DIR_INGRESS, ep->endpoint_id, src_identity, ep->identity, &p);
	count(DIR_INGRESS, METRIC_FORWARDED, skb->len);
	return TC_ACT_OK;
}
