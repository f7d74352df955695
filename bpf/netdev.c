/* NodePort for clients outside the node, on the node's own devices (its
 * uplink, say):
 *
 *  from_netdev: tc ingress. A TCP or UDP packet to a node address and a
 *               NodePort (or any frontend) gets a backend and is DNATed
 *               to it; the host stack then routes it to the backend, whose
 *               to_endpoint applies ingress policy to the client's
 *               identity, against the translated packet. Other traffic
 *               for a local endpoint is delivered into it from here.
 *  to_netdev:   tc egress. The backend's reply (it passed its endpoint's
 *               from_endpoint, conntrack and egress policy, then the host
 *               routed it here) is given back the node's address and
 *               NodePort as its source.
 *
 * Everything else passes to the stack untouched. Sockets on the node itself are
 * balanced by sock.c, before any packet exists.
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/conntrack.h"
#include "lib/debug.h"
#include "lib/deliver.h"
#include "lib/endpoints.h"
#include "lib/events.h"
#include "lib/lb.h"
#include "lib/metrics.h"
#include "lib/nodeport.h"
#include "lib/parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* TCP and UDP with ports: later fragments (ports 0 after parse) carry no
 * L4 header to translate. */
static __always_inline int nodeport_candidate(const struct packet *p)
{
	return (p->tuple.protocol == IPPROTO_TCP || p->tuple.protocol == IPPROTO_UDP) &&
	       (p->tuple.sport || p->tuple.dport);
}

/* eBPF host routing's other half: a packet from outside for a local
 * endpoint (a reply to its egress connection, say) passes the endpoint's
 * ingress policy here and goes straight into its namespace, skipping the
 * stack's forwarding and the endpoint's host-side veth, as Cilium's
 * bpf_host does. Left to the stack: frames not addressed to this node,
 * shaped endpoints (the shaper sits on the host-side veth), legacy host
 * routing, and NodePort traffic (translated here, then routed by the
 * stack to the backend's to_endpoint). */
static __always_inline int from_netdev_deliver(struct __sk_buff *skb, struct packet *p)
{
	if (skb->pkt_type != PACKET_HOST)
		return TC_ACT_OK;
	struct endpoint_info *dst = endpoint_lookup4(p->tuple.daddr.v4);
	if (!dst || (dst->flags & ENDPOINT_F_SHAPED))
		return TC_ACT_OK;
	struct datapath_config *cfg = config();
	if (!cfg || cfg->legacy_host_routing)
		return TC_ACT_OK;
	struct ct_result ct = { .state = CT_NEW };
	if (!p->now)
		p->now = packet_clock();
	return deliver_from_outside(skb, cfg, dst, identity_of4(p->tuple.saddr.v4), p, &ct);
}

SEC("classifier/from_netdev")
int from_netdev(struct __sk_buff *skb)
{
	struct packet p = {};
	struct lb4_nat_entry *fwd;
	struct lb4_service *svc;
	struct lb4_backend *backend;
	struct lb4_key key;
	struct ct_key nat_key;
	__u16 eth_proto = 0;
	__u32 backend_id = 0;
	int ret = parse(skb, &p, &eth_proto);

	if (ret < 0)
		return drop(skb, DIR_INGRESS, -ret, 0, 0, 0, 0);
	if (ret == PARSE_OTHER_L3)
		return TC_ACT_OK;
	if (!nodeport_candidate(&p))
		return from_netdev_deliver(skb, &p);
	p.now = packet_clock();

	/* A connection already translated keeps its backend. */
	ct_key4(&nat_key, &p.tuple, LB_NAT_FORWARD, 0);
	fwd = lb4_nat_touch(&nat_key, &p);
	if (fwd) {
		if (lb4_rewrite(skb, &p, 1, fwd->address, fwd->port) < 0)
			return drop(skb, DIR_INGRESS, DROP_INVALID_PACKET, 0, 0, 0, &p);
		return TC_ACT_OK;
	}

	svc = lb4_lookup_service(&key, p.tuple.daddr.v4, bpf_htons(p.tuple.dport), p.tuple.protocol);
	if (!svc)
		return from_netdev_deliver(skb, &p);
	/* Only a new connection to a NodePort reads the configuration for
	 * debug messages: the device's other traffic pays nothing for them. */
	int debug = debug_on(config());
	if (debug)
		dbg(skb, DBG_LB4_LOOKUP_FRONTEND, 0, p.tuple.daddr.v4, bpf_htons(p.tuple.dport));
	struct lb_client client = { .id = p.tuple.saddr.v4, .netns = 0, .hash = lb4_hash_tuple(&p.tuple) };
	backend = lb4_select_backend(&key, svc, &client, &backend_id);
	if (!backend)
		return drop(skb, DIR_INGRESS, DROP_NO_SERVICE, 0, identity_of4(p.tuple.saddr.v4), IDENTITY_HOST,
			    &p);
	if (debug)
		dbg(skb, DBG_LB4_LOOKUP_BACKEND_SLOT_SUCCESS, 0, backend->address, backend->port);
	lb4_nat_create(&p, backend, svc->rev_nat_index, skb->ifindex);
	if (lb4_rewrite(skb, &p, 1, backend->address, backend->port) < 0)
		return drop(skb, DIR_INGRESS, DROP_INVALID_PACKET, 0, 0, 0, &p);
	return TC_ACT_OK;
}

SEC("classifier/to_netdev")
int to_netdev(struct __sk_buff *skb)
{
	struct packet p = {};
	struct lb4_nat_entry *rev;
	struct ct_key nat_key;
	__u16 eth_proto = 0;
	int ret = parse(skb, &p, &eth_proto);

	if (ret < 0)
		return drop(skb, DIR_EGRESS, -ret, 0, 0, 0, 0);
	if (ret == PARSE_OTHER_L3 || !nodeport_candidate(&p))
		return TC_ACT_OK;
	p.now = packet_clock();

	ct_key4(&nat_key, &p.tuple, LB_NAT_REVERSE, 0);
	rev = lb4_nat_touch(&nat_key, &p);
	if (!rev)
		return TC_ACT_OK;
	if (lb4_rewrite(skb, &p, 0, rev->address, rev->port) < 0)
		return drop(skb, DIR_EGRESS, DROP_INVALID_PACKET, 0, 0, 0, &p);
	return TC_ACT_OK;
}
