/* Who an address belongs to: a local endpoint (twill_endpoints) or, for
 * any address, a security identity (twill_ipcache).
 *
 * The maps are keyed by IPv4 address; IPv6 gets maps of its own, with
 * lookups of the same shape, so callers only choose by family.
 */
#pragma once

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_IPCACHE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_ipcache SEC(".maps");

static __always_inline struct endpoint_info *endpoint_lookup4(__u32 addr)
{
	struct endpoint_key key = { .ip = addr };

	return bpf_map_lookup_elem(&twill_endpoints, &key);
}

/* The ipcache's longest match for an address, NULL if nothing covers it:
 * for callers that need more than the identity (the node behind it). */
static __always_inline struct ipcache_value *ipcache_lookup4(__u32 addr)
{
	struct ipcache_key key = { .prefixlen = 32, .ip = addr };

	return bpf_map_lookup_elem(&twill_ipcache, &key);
}

/* The identity of a peer address: the ipcache's longest match, else the
 * world. Local endpoints are in the ipcache too, so this also names them. */
static __always_inline __u32 identity_of4(__u32 addr)
{
	struct ipcache_value *v = ipcache_lookup4(addr);

	return v ? v->identity : IDENTITY_WORLD;
}
