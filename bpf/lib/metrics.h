/* Per-CPU packet and byte counters by direction and drop reason. */
#pragma once

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, METRICS_ENTRIES);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_metrics SEC(".maps");

/* reason is a DROP_* code, or METRIC_FORWARDED. */
static __always_inline void count(__u32 dir, __u32 reason, __u32 bytes)
{
	__u32 index = METRICS_INDEX(dir, reason);
	struct metrics_value *value = bpf_map_lookup_elem(&twill_metrics, &index);

	if (value) {
		value->packets += 1;
		value->bytes += bytes;
	}
}
