/* Datapath debug messages (Cilium's cilium_dbg/cilium_dbg3, shown by
 * `hubble observe debug-events`): what the programs looked up and
 * decided, step by step, as struct debug_event records in the
 * twill_events ring.
 *
 * Off by default: a packet costs several records. Every call site tests
 * debug_on(cfg) first, with the configuration the program has already
 * loaded, so when off a message costs one bit test and nothing else.
 */
#pragma once

#include "common.h"
#include "config.h"
#include "conntrack.h"
#include "events.h"

/* Never used by the programs: puts struct debug_event into the object's
 * BTF, so the Rust mirror is checked like flow_event's. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct debug_event);
} twill_debug_layout SEC(".maps");

static __always_inline int debug_on(const struct datapath_config *cfg)
{
	return cfg && (cfg->events & EVENTS_DEBUG);
}

/* On for the node, or for the endpoint whose steps these are. */
static __always_inline int debug_for(const struct datapath_config *cfg, const struct endpoint_info *ep)
{
	return debug_on(cfg) || (ep->flags & ENDPOINT_F_DEBUG);
}

/* One message with three arguments, about a packet of `skb`, from the
 * endpoint `source` (0 when the program runs for none). */
static __always_inline void dbg3(struct __sk_buff *skb, __u8 subtype, __u32 source, __u32 arg1, __u32 arg2,
				 __u32 arg3)
{
	struct debug_event *e = bpf_ringbuf_reserve(&twill_events, sizeof(*e), 0);

	if (!e) {
		count_lost_event();
		return;
	}
	e->timestamp = bpf_ktime_get_ns();
	e->kind = EVENT_DEBUG;
	e->subtype = subtype;
	e->source = (__u16)source;
	/* Cilium's MARK: the flow hash, computed if the stack has not yet. */
	e->hash = bpf_get_hash_recalc(skb);
	e->arg1 = arg1;
	e->arg2 = arg2;
	e->arg3 = arg3;
	e->cpu = bpf_get_smp_processor_id();
	submit_event(e, sizeof(*e));
}

static __always_inline void dbg(struct __sk_buff *skb, __u8 subtype, __u32 source, __u32 arg1, __u32 arg2)
{
	dbg3(skb, subtype, source, arg1, arg2, 0);
}

/* A conntrack lookup in `scope` and its outcome, as Cilium's ct_lookup4
 * reports it: the tuple (addresses as they travel, ports host order with
 * the source in the low half), protocol and direction flags, the entry
 * found (seconds left), and the verdict. */
static __always_inline void dbg_ct_lookup(struct __sk_buff *skb, __u32 source, const struct packet *p, __u8 scope,
					  const struct ct_result *ct)
{
	const struct tuple *t = &p->tuple;
	__u32 flags = scope == DIR_EGRESS ? TUPLE_F_OUT : TUPLE_F_IN;

	if (p->related)
		flags |= TUPLE_F_RELATED;
	dbg3(skb, DBG_CT_LOOKUP4_1, source, t->saddr.v4, t->daddr.v4, ((__u32)t->dport << 16) | t->sport);
	dbg(skb, DBG_CT_LOOKUP4_2, source, ((__u32)t->protocol << 8) | flags, 0);
	if (ct->entry) {
		__u64 left = ct->entry->expires > p->now ? ct->entry->expires - p->now : 0;
		dbg(skb, DBG_CT_MATCH, source, (__u32)(left / SECONDS), 0);
	}
	dbg(skb, DBG_CT_VERDICT, source, ct->state, 0);
}
