/* The datapath section's floor: what delivering straight into the
 * receiver's namespace costs with nothing else done. Attached first on
 * the sender's host-side device, ahead of Twill's from_endpoint (a tcx
 * verdict other than "next" ends the chain, so Twill's program does not
 * run), it writes the receiver's MACs and calls bpf_redirect_peer, as
 * Twill's delivery does, without parsing, lookups, conntrack, policy,
 * counters or events. One instance per direction, its target fixed
 * before loading. Anything but IPv4 (ARP) goes to the stack as usual. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

volatile const __u32 PEER_IFINDEX = 0;
volatile const __u8 PEER_MAC[ETH_ALEN] = {};
volatile const __u8 PEER_HOST_MAC[ETH_ALEN] = {};

SEC("classifier/floor")
int floor_redirect(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	for (int i = 0; i < ETH_ALEN; i++) {
		eth->h_dest[i] = PEER_MAC[i];
		eth->h_source[i] = PEER_HOST_MAC[i];
	}
	return bpf_redirect_peer(PEER_IFINDEX, 0);
}
