/* Programs attached to the host side of every endpoint's veth pair.
 *
 *  from_endpoint: tc ingress of lxc, sees what the endpoint sends.
 *  to_endpoint:   tc egress of lxc, sees what is delivered to the endpoint,
 *                 whether it came from the host stack or was redirected here
 *                 by from_endpoint of another endpoint.
 *
 * One copy of each program serves every endpoint; per-endpoint facts come
 * from maps, so creating an endpoint compiles and loads nothing.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "twill.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, METRICS_ENTRIES);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_metrics SEC(".maps");

static __always_inline void count(__u32 dir, __u32 reason, __u32 bytes)
{
	__u32 index = METRICS_INDEX(dir, reason);
	struct metrics_value *value = bpf_map_lookup_elem(&twill_metrics, &index);

	if (value) {
		value->packets += 1;
		value->bytes += bytes;
	}
}

static __always_inline int drop(struct __sk_buff *skb, __u32 dir, __u32 reason)
{
	count(dir, reason, skb->len);
	return TC_ACT_SHOT;
}

/* Parses Ethernet + IPv4 with bounds checks. Returns 0 and sets *ip when
 * the packet is a well-formed IPv4 packet, 1 when it is not IPv4 at all
 * (the caller decides), or a negative drop reason. */
static __always_inline int parse_ipv4(struct __sk_buff *skb, struct ethhdr **eth_out,
				      struct iphdr **ip_out)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;

	if ((void *)(eth + 1) > data_end)
		return -DROP_INVALID_PACKET;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 1;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return -DROP_INVALID_PACKET;
	if (ip->version != 4 || ip->ihl < 5)
		return -DROP_INVALID_PACKET;
	if ((void *)ip + ip->ihl * 4 > data_end)
		return -DROP_INVALID_PACKET;
	*eth_out = eth;
	*ip_out = ip;
	return 0;
}

/* Routes a packet straight to a local endpoint's veth, as a router would:
 * new MACs, TTL decremented. The veth's egress hook (to_endpoint) runs
 * next and hands the packet to the endpoint. */
static __always_inline int redirect_to_endpoint(struct __sk_buff *skb,
						const struct endpoint_info *dst)
{
	__u32 ttl_off = sizeof(struct ethhdr) + offsetof(struct iphdr, ttl);
	__u32 csum_off = sizeof(struct ethhdr) + offsetof(struct iphdr, check);
	__u8 ttl;

	if (bpf_skb_load_bytes(skb, ttl_off, &ttl, 1) < 0)
		return drop(skb, METRIC_DIR_EGRESS, DROP_INVALID_PACKET);
	/* Let the kernel answer with ICMP time exceeded. */
	if (ttl <= 1)
		return TC_ACT_OK;

	/* The TTL shares a 16-bit checksum word with the protocol byte. */
	__u16 old_word = bpf_htons((__u16)ttl << 8);
	__u16 new_word = bpf_htons((__u16)(ttl - 1) << 8);
	ttl -= 1;
	if (bpf_l3_csum_replace(skb, csum_off, old_word, new_word, 2) < 0 ||
	    bpf_skb_store_bytes(skb, ttl_off, &ttl, 1, 0) < 0 ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), dst->mac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), dst->host_mac, ETH_ALEN, 0) < 0)
		return drop(skb, METRIC_DIR_EGRESS, DROP_INVALID_PACKET);

	count(METRIC_DIR_EGRESS, METRIC_FORWARDED, skb->len);
	return bpf_redirect(dst->ifindex, 0);
}

SEC("classifier/from_endpoint")
int from_endpoint(struct __sk_buff *skb)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	struct endpoint_key key;
	struct endpoint_info *src, *dst;
	int ret = parse_ipv4(skb, &eth, &ip);

	if (ret < 0)
		return drop(skb, METRIC_DIR_EGRESS, -ret);
	if (ret > 0) {
		/* ARP goes to the host stack; nothing else but IPv4 is routed. */
		if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
			count(METRIC_DIR_EGRESS, METRIC_FORWARDED, skb->len);
			return TC_ACT_OK;
		}
		return drop(skb, METRIC_DIR_EGRESS, DROP_UNSUPPORTED_L3);
	}

	/* The source address must be the one assigned to this endpoint:
	 * anything else is spoofed. */
	key.ip = ip->saddr;
	src = bpf_map_lookup_elem(&twill_endpoints, &key);
	if (!src || src->ifindex != skb->ifindex)
		return drop(skb, METRIC_DIR_EGRESS, DROP_INVALID_SOURCE_IP);

	key.ip = ip->daddr;
	dst = bpf_map_lookup_elem(&twill_endpoints, &key);
	if (dst)
		return redirect_to_endpoint(skb, dst);

	/* Not a local endpoint: the host stack routes it. */
	count(METRIC_DIR_EGRESS, METRIC_FORWARDED, skb->len);
	return TC_ACT_OK;
}

SEC("classifier/to_endpoint")
int to_endpoint(struct __sk_buff *skb)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret = parse_ipv4(skb, &eth, &ip);

	if (ret < 0)
		return drop(skb, METRIC_DIR_INGRESS, -ret);
	count(METRIC_DIR_INGRESS, METRIC_FORWARDED, skb->len);
	return TC_ACT_OK;
}
