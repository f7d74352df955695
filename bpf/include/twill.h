/* Shared definitions between Twill's eBPF programs and user space.
 *
 * Every struct here has a #[repr(C)] mirror in crates/abi; a test there
 * compares both layouts against the BTF of the compiled object, so change
 * them together.
 */
#pragma once

#include <linux/types.h>

/* Reserved identities, with Cilium's numbers so flow logs read the same. */
#define IDENTITY_UNKNOWN 0
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2

/* Drop reasons, with Cilium's numeric codes (pkg/monitor/api). */
#define DROP_INVALID_SOURCE_IP 132
#define DROP_INVALID_PACKET 134
#define DROP_UNSUPPORTED_L3 139

/* Index 0 of the reason space means "forwarded". */
#define METRIC_FORWARDED 0

/* Directions, as seen from the endpoint. */
#define METRIC_DIR_INGRESS 0 /* towards the endpoint (lxc egress hook) */
#define METRIC_DIR_EGRESS 1  /* from the endpoint (lxc ingress hook) */

#define MAX_ENDPOINTS 65536
#define MAX_IPCACHE_ENTRIES 512000

/* Key of twill_endpoints: an endpoint's IPv4 address, network byte order. */
struct endpoint_key {
	__u32 ip;
};

/* Everything the datapath needs to deliver to, or accept from, a local
 * endpoint. */
struct endpoint_info {
	__u32 ifindex;        /* host-side veth (lxc) ifindex */
	__u32 endpoint_id;
	__u32 identity;
	__u32 flags;
	__u8 mac[6];          /* MAC of the endpoint's own interface */
	__u8 host_mac[6];     /* MAC of the host-side veth */
};

/* Key of twill_ipcache, an LPM trie: prefix length, then the address. */
struct ipcache_key {
	__u32 prefixlen;
	__u32 ip;
};

struct ipcache_value {
	__u32 identity;
	__u32 flags;
};

/* Per-CPU packet and byte counters, indexed by
 * (direction << 8) | reason, where reason 0 is "forwarded". */
struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

#define METRICS_INDEX(dir, reason) (((dir) << 8) | (reason))
#define METRICS_ENTRIES 512
