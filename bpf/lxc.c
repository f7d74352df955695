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
#include "lib/debug.h"
#include "lib/endpoints.h"
#include "lib/events.h"
#include "lib/l3.h"
#include "lib/lxc_policy.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/proxy.h"
#include "lib/tunnel.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What from_endpoint returns for a packet the host stack takes: "next"
 * (TCX_NEXT, TC_ACT_UNSPEC), not "pass". On a tcx hook, pass ends ingress
 * processing, and the filters of a legacy ingress qdisc a chained plugin
 * added after Twill (bandwidth's mirred to its ifb, for egressRate) would
 * never see the packet; with nothing after it, next passes too. A cls_bpf
 * filter returning it likewise falls through to the end of the chain. */
#define TO_STACK TC_ACT_UNSPEC

/* Hands a packet to the L7 proxy (see lib/proxy.h); a packet that cannot
 * reach it is dropped, never delivered around it. */
static __always_inline int to_proxy(struct __sk_buff *skb, struct datapath_config *cfg, struct ct_result *ct,
				    __u8 dir, __u32 endpoint_id, __u32 src_identity, __u32 dst_identity,
				    const struct packet *p, __u16 proxy_port)
{
	int reason = proxy_redirect4(skb, p, proxy_port);

	if (reason)
		return drop(skb, dir, reason, endpoint_id, src_identity, dst_identity, p);
	trace(skb, cfg, ct, TRACE_TO_PROXY, dir, endpoint_id, src_identity, dst_identity, p);
	count(dir, METRIC_FORWARDED, skb->len);
	return TO_STACK;
}

/* Records a new connection in the sender's scope alone (host routing
 * deferred it to here), as endpoint_egress would have. */
static __always_inline void ct_create_sender(struct __sk_buff *skb, struct datapath_config *cfg,
					     const struct endpoint_info *src, const struct packet *p,
					     __u16 proxy_port)
{
	ct_create(p, DIR_EGRESS, skb->len, proxy_port);
	if (debug_for(cfg, src))
		dbg3(skb, DBG_CT_CREATED4, src->endpoint_id, 0, src->identity, 0);
}

/* Records a new connection between two local endpoints that both
 * admitted it: one entry for both ends, unless the proxy is in the way
 * (the client's replies then come from the proxy, through to_endpoint,
 * and must find the client's own entry) or the receiver already has an
 * entry of its own (`receiver_new` clear); then one per endpoint, as
 * to_endpoint's path keeps them. */
static __always_inline void ct_create_local(struct __sk_buff *skb, struct datapath_config *cfg,
					    const struct endpoint_info *src, const struct endpoint_info *dst,
					    const struct packet *p, int receiver_new, __u16 proxy_port)
{
	if (receiver_new && !proxy_port) {
		ct_create_at(p, CT_AT_BOTH, skb->len, 0);
		if (debug_for(cfg, src))
			dbg3(skb, DBG_CT_CREATED4, src->endpoint_id, 0, src->identity, 0);
		return;
	}
	ct_create_sender(skb, cfg, src, p, proxy_port);
	if (receiver_new) {
		ct_create(p, DIR_INGRESS, skb->len, proxy_port);
		if (debug_for(cfg, dst))
			dbg3(skb, DBG_CT_CREATED4, dst->endpoint_id, 0, src->identity, 0);
	}
}

SEC("classifier/from_endpoint")
int from_endpoint(struct __sk_buff *skb)
{
	struct packet p = {};
	struct endpoint_info *src, *dst, *local;
	struct ct_result ct;
	__u16 eth_proto = 0;
	__u32 dst_identity;
	int ret = parse(skb, &p, &eth_proto);

	if (ret < 0)
		return drop(skb, DIR_EGRESS, -ret, 0, 0, 0, 0);
	if (ret == PARSE_OTHER_L3) {
		/* ARP goes to the host stack; nothing else but IPv4 is routed. */
		if (eth_proto == bpf_htons(ETH_P_ARP)) {
			count(DIR_EGRESS, METRIC_FORWARDED, skb->len);
			return TO_STACK;
		}
		return drop(skb, DIR_EGRESS, DROP_UNSUPPORTED_L3, 0, 0, 0, 0);
	}

	/* The source address must be the one assigned to this endpoint:
	 * anything else is spoofed. */
	src = endpoint_lookup4(p.tuple.saddr.v4);
	if (!src || src->ifindex != skb->ifindex)
		return drop(skb, DIR_EGRESS, DROP_INVALID_SOURCE_IP, 0, 0, 0, &p);

	dst = local = endpoint_lookup4(p.tuple.daddr.v4);
	/* A remote address may sit behind another node, which the overlay
	 * reaches directly. */
	struct ipcache_value *remote = dst ? 0 : ipcache_lookup4(p.tuple.daddr.v4);
	dst_identity = dst ? dst->identity : remote ? remote->identity : IDENTITY_WORLD;

	p.now = packet_clock();
	struct datapath_config *cfg = config();
	__u16 proxy_port = 0;
	/* A shaped endpoint's traffic goes through the host stack, so the
	 * shapers on its device (and on the peer's) see it; the receiver's
	 * to_endpoint then enforces and reports its ingress, once. Legacy
	 * host routing sends everything there. */
	__u32 legacy = (src->flags & ENDPOINT_F_SHAPED) || (cfg && cfg->legacy_host_routing);
	__u32 to_local = local != 0;
	opaque(legacy);
	opaque(to_local);
	if (to_local && (legacy || (local->flags & ENDPOINT_F_SHAPED)))
		dst = 0;
	/* Between two local endpoints, a connection both have admitted has one
	 * entry for both ends: found, neither policy is asked again. */
	int pair = 0;
	if (dst) {
		ct = ct_lookup_at(&p, CT_AT_BOTH, skb->len);
		pair = ct.state != CT_NEW;
		if (pair && debug_for(cfg, src))
			dbg_ct_lookup(skb, src->endpoint_id, &p, DIR_EGRESS, &ct);
	}
	if (!pair && endpoint_egress(skb, cfg, src, dst_identity, &p, &ct, &proxy_port, dst != 0))
		return TC_ACT_SHOT;
	/* A new connection to a local endpoint is recorded below, once the
	 * receiver's ingress has decided. */
	int opening = dst && !pair && ct.state == CT_NEW;
	if (cfg && cfg->aggregation == AGGREGATION_NONE)
		trace(skb, cfg, &ct, TRACE_FROM_ENDPOINT, DIR_EGRESS, src->endpoint_id, src->identity,
		      dst_identity, &p);
	/* The sender's egress L7 rules, or (remembered in conntrack) either
	 * side's for a connection already going through the proxy. */
	if (proxy_port) {
		if (opening)
			ct_create_sender(skb, cfg, src, &p, proxy_port);
		return to_proxy(skb, cfg, &ct, DIR_EGRESS, src->endpoint_id, src->identity, dst_identity, &p,
				proxy_port);
	}

	if (dst) {
		/* Host routing: the receiver's ingress runs here, and the packet
		 * goes straight into its namespace; its to_endpoint never sees
		 * it. The delivery is reported as the receiver's, at its device,
		 * as Cilium reports it. */
		/* From here on the packet is the one the receiver gets, with the
		 * MACs the delivery writes: report it that way. */
		__builtin_memcpy(p.src_mac, dst->host_mac, ETH_ALEN);
		__builtin_memcpy(p.dst_mac, dst->mac, ETH_ALEN);
		if (debug_for(cfg, src))
			dbg(skb, DBG_LXC_FOUND, src->endpoint_id, dst->ifindex, bpf_htons((__u16)dst->identity));
		if (!pair) {
			if (endpoint_ingress(skb, cfg, dst, src->identity, 0, &p, &ct, &proxy_port, opening)) {
				/* Refused by the receiver: the sender's entry alone,
				 * so a retry is the receiver's question only. */
				if (opening)
					ct_create_sender(skb, cfg, src, &p, 0);
				return TC_ACT_SHOT;
			}
			if (opening)
				ct_create_local(skb, cfg, src, dst, &p, ct.state == CT_NEW, proxy_port);
			else if (proxy_port)
				/* The receiver's ingress L7 rules: the sender's entry
				 * remembers the redirect for the rest of the
				 * connection. */
				ct_set_proxy_port(&p, DIR_EGRESS, proxy_port);
			if (proxy_port)
				return to_proxy(skb, cfg, &ct, DIR_INGRESS, dst->endpoint_id, src->identity,
						dst->identity, &p, proxy_port);
		}
		trace_at(skb, dst->ifindex, cfg, &ct, TRACE_TO_ENDPOINT, DIR_INGRESS, dst->endpoint_id,
			 src->identity, dst->identity, &p);
		if (debug_for(cfg, src))
			dbg(skb, DBG_LOCAL_DELIVERY, src->endpoint_id, dst->endpoint_id, src->identity);
		return ipv4_deliver_to_endpoint(skb, dst, src->endpoint_id, &p);
	}

	/* Behind another node, with a tunnel to it: encapsulated with the
	 * source identity in the VNI, so the receiver need not guess it from
	 * the address. */
	if (remote && remote->tunnel_endpoint && cfg && cfg->tunnel_ifindex) {
		trace(skb, cfg, &ct, TRACE_TO_OVERLAY, DIR_EGRESS, src->endpoint_id, src->identity, dst_identity,
		      &p);
		if (debug_for(cfg, src))
			dbg(skb, DBG_ENCAP, src->endpoint_id, remote->tunnel_endpoint, src->identity);
		return tunnel_encap4(skb, cfg->tunnel_ifindex, remote->tunnel_endpoint, src->identity,
				     src->endpoint_id, &p);
	}

	/* Another node's (routed natively, by the routes the agent
	 * installs) or the world's: routed by the host's FIB, straight out
	 * of the device it names when that is one of --devices, as Cilium's
	 * eBPF host routing does on the devices it manages, and reported at
	 * that device. A shaped sender's traffic, and traffic to
	 * a shaped local endpoint, stays on the stack. */
	if (!legacy && !to_local && cfg && cfg->fib_devices[0]) {
		__u32 oif = 0, len = skb->len;
		ret = ipv4_fib_redirect(skb, cfg, &p, &oif);
		if (ret == TC_ACT_REDIRECT) {
			trace_at(skb, oif, cfg, &ct, TRACE_TO_NETWORK, DIR_EGRESS, src->endpoint_id, src->identity,
				 dst_identity, &p);
			count(DIR_EGRESS, METRIC_FORWARDED, len);
			return ret;
		}
		if (ret)
			return drop(skb, DIR_EGRESS, DROP_WRITE_ERROR, src->endpoint_id, src->identity,
				    dst_identity, &p);
	}

	/* Not a local endpoint, or routed natively: the host stack routes it
	 * (with native routing, by the routes the agent installs). */
	trace(skb, cfg, &ct, TRACE_TO_STACK, DIR_EGRESS, src->endpoint_id, src->identity, dst_identity, &p);
	if (debug_for(cfg, src))
		dbg(skb, DBG_TO_STACK, src->endpoint_id, 0, 0);
	count(DIR_EGRESS, METRIC_FORWARDED, skb->len);
	return TO_STACK;
}

/* What reaches an endpoint through the host stack: from the node itself,
 * from outside, or from another endpoint when either is shaped
 * (ENDPOINT_F_SHAPED). Other endpoints' traffic is delivered by their
 * from_endpoint and does not pass here. */
SEC("classifier/to_endpoint")
int to_endpoint(struct __sk_buff *skb)
{
	struct packet p = {};
	struct endpoint_info *ep;
	struct ct_result ct;
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
	/* The L7 proxy's upstream connection: from the node's address, on
	 * behalf of the identity its mark names; the proxy has applied the L7
	 * rules, so the policy here is the L3/L4 part only. */
	__u32 proxied_for = proxy_mark_identity(skb);
	if (proxied_for)
		src_identity = proxied_for;

	p.now = packet_clock();
	struct datapath_config *cfg = config();
	int from_host = src_identity == IDENTITY_HOST && cfg && cfg->allow_localhost;
	__u16 proxy_port = 0;
	if (endpoint_ingress(skb, cfg, ep, src_identity, from_host, &p, &ct, &proxy_port, 0))
		return TC_ACT_SHOT;
	/* L7 rules for traffic the stack delivers (from the node or outside):
	 * this tc egress hook cannot hand it to the proxy, so it is refused
	 * rather than let past the rules. */
	if (proxy_port && !proxied_for)
		return drop(skb, DIR_INGRESS, DROP_PROXY_LOOKUP_FAILED, ep->endpoint_id, src_identity, ep->identity,
			    &p);
	trace(skb, cfg, &ct, TRACE_TO_ENDPOINT, DIR_INGRESS, ep->endpoint_id, src_identity, ep->identity, &p);
	count(DIR_INGRESS, METRIC_FORWARDED, skb->len);
	return TC_ACT_OK;
}
