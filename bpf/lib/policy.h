/* Policy verdicts from the per-endpoint policy trie (twill_policy).
 *
 * The key holds nothing family-specific (endpoint, direction, peer
 * identity, protocol, port), so IPv4 and IPv6 share the map and this
 * lookup.
 */
#pragma once

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_POLICY_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_policy SEC(".maps");

/* Two longest-prefix lookups: the peer's identity and "any peer". A deny
 * from either wins; otherwise an allow from either allows; otherwise the
 * default deny drops. Returns 0 (with *match set to how the allow matched
 * and *proxy_port to the L7 proxy the allowing entry redirects to, 0 for
 * none) or the drop reason. The peer's own entry is the more specific and
 * decides the redirect when both allow. */
static __always_inline int policy_check(__u32 endpoint_id, __u8 dir, __u32 peer, __u8 protocol, __u16 port,
					__u32 *match, __u16 *proxy_port)
{
	struct policy_key key = {
		.prefixlen = POLICY_FULL_PREFIX,
		.endpoint_id = bpf_htons((__u16)endpoint_id),
		.direction = dir,
		.identity = bpf_htonl(peer),
		.protocol = protocol,
		.dport = bpf_htons(port),
	};
	struct policy_value *specific = bpf_map_lookup_elem(&twill_policy, &key);
	struct policy_value *any;

	key.identity = 0;
	any = bpf_map_lookup_elem(&twill_policy, &key);
	if ((specific && (specific->flags & POLICY_FLAG_DENY)) || (any && (any->flags & POLICY_FLAG_DENY)))
		return DROP_POLICY_DENY;
	if (specific) {
		*match = specific->match_type;
		*proxy_port = specific->proxy_port;
		return 0;
	}
	if (any) {
		*match = any->match_type;
		*proxy_port = any->proxy_port;
		return 0;
	}
	return DROP_POLICY;
}

/* The policy check for a parsed packet. */
static __always_inline int policy_check_packet(__u32 endpoint_id, __u8 dir, __u32 peer, const struct packet *p,
					       __u32 *match, __u16 *proxy_port)
{
	return policy_check(endpoint_id, dir, peer, p->tuple.protocol, p->policy_port, match, proxy_port);
}
