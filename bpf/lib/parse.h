/* Parsing and validation: Ethernet, IPv4 and the L4 header, into a
 * struct packet. Anything malformed is reported as a drop reason; the
 * caller drops and counts it.
 */
#pragma once

#include "common.h"

/* ICMPv4 header (linux/icmp.h drags in libc headers BPF cannot use). */
struct icmphdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	union {
		struct {
			__u16 id;
			__u16 sequence;
		} echo;
		__u32 gateway;
	} un;
};

#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

/* Parse results: a packet of a family this datapath routes (struct packet
 * filled), or one the caller decides about from its EtherType. Errors are
 * negative drop reasons. */
#define PARSE_ROUTED 0
#define PARSE_OTHER_L3 1

/* Reads the ports of the L4 header at `off` into t->sport and t->dport.
 * Protocols without ports leave them 0. */
static __always_inline int read_ports(struct __sk_buff *skb, __u32 off, struct tuple *t)
{
	__u16 ports[2];

	if (t->protocol == IPPROTO_ICMP) {
		struct icmphdr icmp;
		if (bpf_skb_load_bytes(skb, off, &icmp, sizeof(icmp)) < 0)
			return -1;
		/* Echo request and reply share the identifier both ways, so
		 * the reply's reversed tuple finds the request's entry. */
		t->sport = bpf_ntohs(icmp.un.echo.id);
		t->dport = t->sport;
		return 0;
	}
	if (t->protocol != IPPROTO_TCP && t->protocol != IPPROTO_UDP && t->protocol != IPPROTO_SCTP) {
		t->sport = 0;
		t->dport = 0;
		return 0;
	}
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
		return -1;
	t->sport = bpf_ntohs(ports[0]);
	t->dport = bpf_ntohs(ports[1]);
	return 0;
}

/* An ICMPv4 error quotes the IPv4 header of the packet it is about, and
 * at least the first 8 bytes after it: enough for the ports. */
static __always_inline int parse_icmp4_inner(struct __sk_buff *skb, __u32 inner_off, struct packet *p)
{
	struct iphdr inner;

	if (bpf_skb_load_bytes(skb, inner_off, &inner, sizeof(inner)) < 0)
		return -DROP_CT_INVALID_HDR;
	if (inner.ihl < 5)
		return -DROP_CT_INVALID_HDR;
	p->inner.saddr.v4 = inner.saddr;
	p->inner.daddr.v4 = inner.daddr;
	p->inner.protocol = inner.protocol;
	p->inner.family = TWILL_AF_INET;
	if (read_ports(skb, inner_off + inner.ihl * 4, &p->inner) < 0)
		return -DROP_CT_INVALID_HDR;
	p->related = 1;
	return 0;
}

/* The L4 header at `l4_off`: ports, TCP flags, ICMP type and code.
 * p->tuple.protocol is set. */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 l4_off, struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	/* TCP and UDP headers are in the linear part whenever the sender
	 * built the packet on this machine: read them in place, which costs
	 * a bounds check where bpf_skb_load_bytes costs a helper call and a
	 * copy per field. l4_off is at most 14 + 60, which the verifier
	 * needs to know to allow the pointer. */
	__u8 *l4 = data + (l4_off & 0x7f);
	if (p->tuple.protocol == IPPROTO_TCP && (void *)(l4 + 14) <= data_end) {
		p->tuple.sport = ((__u16)l4[0] << 8) | l4[1];
		p->tuple.dport = ((__u16)l4[2] << 8) | l4[3];
		p->policy_port = p->tuple.dport;
		p->tcp_flags = l4[13];
		return 0;
	}
	if (p->tuple.protocol == IPPROTO_UDP && (void *)(l4 + 4) <= data_end) {
		p->tuple.sport = ((__u16)l4[0] << 8) | l4[1];
		p->tuple.dport = ((__u16)l4[2] << 8) | l4[3];
		p->policy_port = p->tuple.dport;
		return 0;
	}
	if (read_ports(skb, l4_off, &p->tuple) < 0)
		return -DROP_CT_INVALID_HDR;
	p->policy_port = p->tuple.dport;

	if (p->tuple.protocol == IPPROTO_TCP) {
		__u8 flags;
		if (bpf_skb_load_bytes(skb, l4_off + 13, &flags, 1) < 0)
			return -DROP_CT_INVALID_HDR;
		p->tcp_flags = flags;
	} else if (p->tuple.protocol == IPPROTO_ICMP) {
		struct icmphdr icmp;
		if (bpf_skb_load_bytes(skb, l4_off, &icmp, sizeof(icmp)) < 0)
			return -DROP_CT_INVALID_HDR;
		p->icmp_type = icmp.type;
		p->icmp_code = icmp.code;
		p->policy_port = icmp.type;
		/* An error about an earlier packet belongs to that packet's
		 * connection, if one is tracked. */
		if (icmp.type == ICMP_DEST_UNREACH || icmp.type == ICMP_TIME_EXCEEDED ||
		    icmp.type == ICMP_PARAMETERPROB)
			return parse_icmp4_inner(skb, l4_off + sizeof(struct icmphdr), p);
	}
	return 0;
}

/* Parses Ethernet, IPv4 and L4. Returns PARSE_ROUTED for IPv4 (p filled),
 * PARSE_OTHER_L3 with *eth_proto set for anything else, or a negative
 * drop reason. */
static __always_inline int parse(struct __sk_buff *skb, struct packet *p, __u16 *eth_proto)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;

	if ((void *)(eth + 1) > data_end)
		return -DROP_INVALID_PACKET;
	*eth_proto = eth->h_proto;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_OTHER_L3;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return -DROP_INVALID_PACKET;
	if (ip->version != 4 || ip->ihl < 5)
		return -DROP_INVALID_PACKET;
	__builtin_memcpy(p->src_mac, eth->h_source, 6);
	__builtin_memcpy(p->dst_mac, eth->h_dest, 6);
	p->tuple.saddr.v4 = ip->saddr;
	p->tuple.daddr.v4 = ip->daddr;
	p->tuple.protocol = ip->protocol;
	p->tuple.family = TWILL_AF_INET;

	/* Later fragments carry no L4 header: they are matched on ports 0. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return PARSE_ROUTED;
	return parse_l4(skb, sizeof(struct ethhdr) + ip->ihl * 4, p);
}
