/* What every datapath header builds on: kernel and libbpf headers, the
 * ABI shared with user space, and the parsed form of a packet that
 * conntrack, policy and events all take.
 */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "twill.h"

#define SECONDS 1000000000ULL

/* Keeps clang from folding a flag into a test of a pointer (`p || flag`
 * becomes an OR of the two, which the verifier refuses on a pointer). */
#define opaque(x) asm volatile("" : "+r"(x))

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* Address families, with the kernel's numbers (linux/socket.h is not
 * usable from BPF programs). */
#define TWILL_AF_INET 2
#define TWILL_AF_INET6 10

/* An address of either family. Only IPv4 is parsed so far; the IPv6 path
 * fills v6 and keeps using every function that takes a tuple. */
union addr {
	__u32 v4;         /* network byte order */
	__u32 v6[4];
};

/* A connection's identifying fields, as the packet carries them. */
struct tuple {
	union addr saddr;
	union addr daddr;
	__u16 sport;      /* host byte order; ICMP echo: identifier */
	__u16 dport;      /* host byte order; ICMP echo: identifier */
	__u8 protocol;
	__u8 family;      /* TWILL_AF_* */
	__u16 pad;
};

/* What one packet is about, parsed once before anything is rewritten. */
struct packet {
	struct tuple tuple;
	/* For an ICMP error (related set): the tuple of the packet it is
	 * about, as that packet travelled. */
	struct tuple inner;
	__u16 policy_port; /* the port policy matches: dport, or the ICMP type */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 related;
	__u8 src_mac[6];
	__u8 dst_mac[6];
	/* packet_clock() once per packet: conntrack and aggregation read
	 * the clock several times otherwise. */
	__u64 now;
};

/* The clock conntrack and aggregation run on: CLOCK_MONOTONIC at the
 * last tick. Lifetimes are seconds long, so a tick's resolution is
 * plenty, and it costs a memory read where bpf_ktime_get_ns reads the
 * TSC (a slow instruction on some hypervisors), on every packet. Event
 * timestamps keep the precise clock. */
static __always_inline __u64 packet_clock(void)
{
	return bpf_ktime_get_coarse_ns();
}
