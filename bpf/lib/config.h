/* Runtime configuration written by the agent (struct datapath_config). */
#pragma once

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct datapath_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_config SEC(".maps");

/* NULL only if the map lookup fails; callers then use built-in defaults
 * (no events, no allow-localhost). */
static __always_inline struct datapath_config *config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&twill_config, &zero);
}
