/* Socket-level load balancing: the namespaces it serves and what each
 * socket was translated to. */
#pragma once

#include "common.h"

/* Netns cookie to the endpoint (or the node, endpoint 0) it belongs to.
 * Several agents share a machine in tests and each serves only its own
 * namespaces: a socket elsewhere is never translated. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_LB_NETNS);
	__type(key, __u64);
	__type(value, struct lb_netns_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_lb_netns SEC(".maps");

/* Socket and backend to the frontend it stands for, so that recvmsg and
 * getpeername show the frontend. LRU: a closed socket's entries age out
 * instead of needing a release hook. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_LB_SOCK_ENTRIES);
	__type(key, struct lb4_sk_key);
	__type(value, struct lb4_sk_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_lb4_sk SEC(".maps");
