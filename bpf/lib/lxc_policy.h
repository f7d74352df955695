/* The two policy steps of a packet between endpoints, shared by the
 * programs: the sender's egress and the receiver's ingress. Each tracks
 * the connection in its own scope, checks policy once per new connection
 * and reports the verdict. Both can run in one program: with host
 * routing, the sender's from_endpoint applies the receiver's ingress too,
 * before delivering straight into the receiver's namespace.
 */
#pragma once

#include "common.h"
#include "config.h"
#include "conntrack.h"
#include "debug.h"
#include "events.h"
#include "policy.h"

/* Returns 0 to go on, or a drop reason (already counted and reported).
 * *proxy_port: the L7 proxy this packet goes to, for a new connection an
 * allow with L7 rules redirects, and for every later packet the client
 * sends on it (remembered in conntrack); 0 otherwise. With `defer`, a new
 * connection the policy allows is left for the caller to record (ct->state
 * stays CT_NEW): host routing decides after the receiver's ingress
 * whether one entry will do for both ends. */
static __always_inline int endpoint_egress(struct __sk_buff *skb, const struct datapath_config *cfg,
					   const struct endpoint_info *src, __u32 dst_identity,
					   const struct packet *p, struct ct_result *ct, __u16 *proxy_port, int defer)
{
	int debug = debug_for(cfg, src);

	*proxy_port = 0;
	*ct = ct_lookup(p, DIR_EGRESS, skb->len);
	if (debug)
		dbg_ct_lookup(skb, src->endpoint_id, p, DIR_EGRESS, ct);
	if (ct->state != CT_NEW) {
		if (ct->state == CT_ESTABLISHED && ct->entry)
			*proxy_port = ct->entry->proxy_port;
		return 0;
	}
	__u32 match = 0;
	int verdict = policy_check_packet(src->endpoint_id, DIR_EGRESS, dst_identity, p, &match, proxy_port);
	verdict_at(skb, skb->ifindex, src->flags & ENDPOINT_F_EGRESS_ENFORCED, verdict, DIR_EGRESS,
		   src->endpoint_id, src->identity, dst_identity, p, match);
	if (verdict) {
		if (debug)
			dbg(skb, DBG_POLICY_DENIED, src->endpoint_id, src->identity, dst_identity);
		drop(skb, DIR_EGRESS, verdict, src->endpoint_id, src->identity, dst_identity, p);
		return verdict;
	}
	if (defer)
		return 0;
	ct_create(p, DIR_EGRESS, skb->len, *proxy_port);
	if (debug)
		dbg3(skb, DBG_CT_CREATED4, src->endpoint_id, 0, src->identity, 0);
	return 0;
}

/* The receiver's side; `from_host` skips policy (Cilium's allow-localhost:
 * the node's own health checks always reach its endpoints). Events name
 * the receiver's device. *proxy_port as for endpoint_egress: when set for
 * a new connection, the caller redirects it to the proxy, and the entry
 * here records that (the receiver sees the proxy's own connection).
 * `defer` as for endpoint_egress. */
static __always_inline int endpoint_ingress(struct __sk_buff *skb, const struct datapath_config *cfg,
					    const struct endpoint_info *dst, __u32 src_identity, int from_host,
					    const struct packet *p, struct ct_result *ct, __u16 *proxy_port,
					    int defer)
{
	int debug = debug_for(cfg, dst);

	*proxy_port = 0;
	*ct = ct_lookup(p, DIR_INGRESS, skb->len);
	if (debug)
		dbg_ct_lookup(skb, dst->endpoint_id, p, DIR_INGRESS, ct);
	if (ct->state != CT_NEW) {
		if (ct->state == CT_ESTABLISHED && ct->entry)
			*proxy_port = ct->entry->proxy_port;
		return 0;
	}
	__u32 match = POLICY_MATCH_ALL;
	int verdict = from_host ? 0 : policy_check_packet(dst->endpoint_id, DIR_INGRESS, src_identity, p, &match,
							  proxy_port);
	verdict_at(skb, dst->ifindex, dst->flags & ENDPOINT_F_INGRESS_ENFORCED, verdict,
		   DIR_INGRESS, dst->endpoint_id, src_identity, dst->identity, p, match);
	if (verdict) {
		if (debug)
			dbg(skb, DBG_POLICY_DENIED, dst->endpoint_id, src_identity, dst->identity);
		drop_at(skb, dst->ifindex, DIR_INGRESS, verdict, dst->endpoint_id, src_identity, dst->identity, p);
		return verdict;
	}
	if (defer)
		return 0;
	ct_create(p, DIR_INGRESS, skb->len, *proxy_port);
	if (debug)
		dbg3(skb, DBG_CT_CREATED4, dst->endpoint_id, 0, src_identity, 0);
	return 0;
}
