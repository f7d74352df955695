/* Datapath events for the flow observer: drops, traces and policy
 * verdicts, as struct flow_event records in the twill_events ring buffer,
 * and trace aggregation, which decides how many packets of a connection
 * are worth a trace event.
 */
#pragma once

#include "common.h"
#include "config.h"
#include "conntrack.h"
#include "metrics.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RING_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_events SEC(".maps");

/* Index 0: events lost because the ring was full. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_event_stats SEC(".maps");

/* Never used by the programs: it puts struct flow_event into the object's
 * BTF, so the Rust mirror is checked like every map's key and value. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_event);
} twill_event_layout SEC(".maps");

static __always_inline void count_lost_event(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&twill_event_stats, &zero);

	if (lost)
		*lost += 1;
}

/* Hands a reserved record of `size` bytes to the reader. Waking it for
 * every event costs more than the event (an interrupt per packet, a VM
 * exit on a VM): wake it only when this record takes the backlog past a
 * batch. Past it, the reader is awake or about to be, and drains until the
 * ring is empty (it also polls on a short timer); waking it again for
 * every record would only add interrupts while it catches up. */
static __always_inline void submit_event(void *e, __u64 size)
{
	__u64 queued = bpf_ringbuf_query(&twill_events, BPF_RB_AVAIL_DATA);
	int crossed = queued >= EVENTS_WAKEUP_BYTES && queued < EVENTS_WAKEUP_BYTES + size + 8;

	bpf_ringbuf_submit(e, crossed ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* p may be NULL when the packet could not be parsed. `ifindex` is the
 * endpoint device the event is about: the skb's own, or the destination's
 * when the source's program delivers straight into it. */
static __always_inline void emit_event_len(__u32 length, __u32 ifindex, __u8 type, __u8 reason, __u8 dir,
					   __u8 ct_state, __u32 endpoint_id, __u32 src_identity,
					   __u32 dst_identity, const struct packet *p, __u32 policy_match)
{
	struct datapath_config *cfg = config();
	__u32 wanted = type == EVENT_DROP ? EVENTS_DROP : type == EVENT_TRACE ? EVENTS_TRACE : EVENTS_POLICY;
	struct flow_event *e;

	if (!cfg || !(cfg->events & wanted))
		return;
	e = bpf_ringbuf_reserve(&twill_events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		return;
	}
	e->timestamp = bpf_ktime_get_ns();
	e->kind = type;
	e->reason = reason;
	e->direction = dir;
	e->ct_state = ct_state;
	e->endpoint_id = endpoint_id;
	e->src_identity = src_identity;
	e->dst_identity = dst_identity;
	e->saddr = p ? p->tuple.saddr.v4 : 0;
	e->daddr = p ? p->tuple.daddr.v4 : 0;
	e->sport = p ? p->tuple.sport : 0;
	e->dport = p ? p->tuple.dport : 0;
	e->protocol = p ? p->tuple.protocol : 0;
	e->tcp_flags = p ? p->tcp_flags : 0;
	e->icmp_type = p ? p->icmp_type : 0;
	e->icmp_code = p ? p->icmp_code : 0;
	e->ifindex = ifindex;
	e->length = length;
	e->policy_match = policy_match;
	if (p) {
		__builtin_memcpy(e->src_mac, p->src_mac, 6);
		__builtin_memcpy(e->dst_mac, p->dst_mac, 6);
	} else {
		__builtin_memset(e->src_mac, 0, 6);
		__builtin_memset(e->dst_mac, 0, 6);
	}
	submit_event(e, sizeof(*e));
}

/* An event about a packet of `skb` (emit_event_len serves hooks that have
 * no packet: the socket hooks report the connection they refused). */
static __always_inline void emit_event(struct __sk_buff *skb, __u32 ifindex, __u8 type, __u8 reason, __u8 dir,
				       __u8 ct_state, __u32 endpoint_id, __u32 src_identity,
				       __u32 dst_identity, const struct packet *p, __u32 policy_match)
{
	emit_event_len(skb->len, ifindex, type, reason, dir, ct_state, endpoint_id, src_identity, dst_identity,
		       p, policy_match);
}

static __always_inline void emit(struct __sk_buff *skb, __u8 type, __u8 reason, __u8 dir, __u8 ct_state,
				 __u32 endpoint_id, __u32 src_identity, __u32 dst_identity,
				 const struct packet *p)
{
	emit_event(skb, skb->ifindex, type, reason, dir, ct_state, endpoint_id, src_identity, dst_identity, p, 0);
}

/* Counts, reports and drops, as seen at endpoint device `ifindex`. The
 * return value is the program's verdict. */
static __always_inline int drop_at(struct __sk_buff *skb, __u32 ifindex, __u32 dir, __u32 reason,
				   __u32 endpoint_id, __u32 src_identity, __u32 dst_identity,
				   const struct packet *p)
{
	count(dir, reason, skb->len);
	emit_event(skb, ifindex, EVENT_DROP, reason, dir, CT_NEW, endpoint_id, src_identity, dst_identity, p, 0);
	return TC_ACT_SHOT;
}

static __always_inline int drop(struct __sk_buff *skb, __u32 dir, __u32 reason, __u32 endpoint_id,
				__u32 src_identity, __u32 dst_identity, const struct packet *p)
{
	return drop_at(skb, skb->ifindex, dir, reason, endpoint_id, src_identity, dst_identity, p);
}

/* Whether this packet earns a trace event at the configured aggregation
 * level. Connections are reported when they start, when a direction
 * shows TCP flags of the configured set (cfg->report_flags) not reported
 * before and, at medium, every few seconds while they carry traffic, so a
 * bulk stream costs a handful of events. */
static __always_inline int should_trace(struct datapath_config *cfg, const struct ct_result *ct,
					const struct packet *p)
{
	__u32 level = cfg->aggregation;
	struct ct_entry *e = ct->entry;

	if (level <= AGGREGATION_LOW || !e)
		return 1;
	int dir = ct->reverse ? 1 : 0;
	__u8 *reported = &e->reported_flags[dir & 1];
	__u16 *last = &e->last_report[dir & 1];
	__u16 now = (__u16)(p->now / SECONDS);
	__u8 flags = p->tcp_flags;

	flags &= cfg->report_flags;
	if (level >= AGGREGATION_MAXIMUM)
		flags &= TCP_SYN | TCP_FIN | TCP_RST;
	if (flags & ~*reported) {
		*reported |= flags;
		*last = now;
		return 1;
	}
	if (level == AGGREGATION_MEDIUM && (__u16)(now - *last) >= AGGREGATION_INTERVAL_SECONDS) {
		*last = now;
		return 1;
	}
	return 0;
}

/* A trace event at observation point `point` (TRACE_*) of endpoint device
 * `ifindex`, if trace events are on and aggregation lets this packet
 * through. */
static __always_inline void trace_at(struct __sk_buff *skb, __u32 ifindex, struct datapath_config *cfg,
				     const struct ct_result *ct, __u8 point, __u8 dir, __u32 endpoint_id,
				     __u32 src_identity, __u32 dst_identity, const struct packet *p)
{
	if (!cfg || !(cfg->events & EVENTS_TRACE) || !should_trace(cfg, ct, p))
		return;
	emit_event(skb, ifindex, EVENT_TRACE, point, dir, ct->state, endpoint_id, src_identity, dst_identity, p, 0);
}

static __always_inline void trace(struct __sk_buff *skb, struct datapath_config *cfg,
				  const struct ct_result *ct, __u8 point, __u8 dir, __u32 endpoint_id,
				  __u32 src_identity, __u32 dst_identity, const struct packet *p)
{
	trace_at(skb, skb->ifindex, cfg, ct, point, dir, endpoint_id, src_identity, dst_identity, p);
}

/* The verdict of a new connection in one endpoint's direction: a denial
 * is always reported, an allow only where that direction enforces policy
 * (`enforced`), as Cilium's policy-verdict log filter does. */
static __always_inline void verdict_at(struct __sk_buff *skb, __u32 ifindex, int enforced, __u8 reason, __u8 dir,
				       __u32 endpoint_id, __u32 src_identity, __u32 dst_identity,
				       const struct packet *p, __u32 match)
{
	if (reason || enforced)
		emit_event(skb, ifindex, EVENT_POLICY_VERDICT, reason, dir, CT_NEW, endpoint_id, src_identity,
			   dst_identity, p, match);
}
