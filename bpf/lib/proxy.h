/* Steering connections to the L7 proxy, which runs in the host network
 * namespace and listens transparently on 127.0.0.1:<proxy port>.
 *
 * A packet to be proxied keeps its addresses: it is assigned to the
 * proxy's socket with bpf_sk_assign (tc ingress only, a socket of this
 * namespace), marked MARK_MAGIC_TO_PROXY, and handed to the stack. The
 * agent's fwmark rule routes marked packets through a table whose only
 * route is `local 0.0.0.0/0 dev lo`, so the stack delivers them locally
 * instead of forwarding them, and TCP takes the assigned socket. The
 * listener has IP_TRANSPARENT: the connection it accepts has the original
 * destination as its local address, which is how the proxy learns it.
 *
 */
#pragma once

#include "common.h"

#define PROXY_LISTEN_ADDR 0x7f000001 /* 127.0.0.1 */

/* Assigns the packet to the proxy listening on `proxy_port`. Returns 0, or
 * a drop reason: no proxy socket (the proxy is not running) or the
 * assignment failed. The caller returns the packet to the stack.
 *
 * TCP: the socket of the packet's own tuple first (the connection the
 * proxy accepted, or the request socket of one it is accepting), else the
 * listener. A listener under the original tuple is not the proxy's
 * (something on the host listening on that port) and is passed over.
 * UDP: the proxy's unconnected socket always; it reads the original
 * destination from each datagram. The two lookups return different
 * pointer types, so their fields are read on the TCP path only. */
static __always_inline int proxy_redirect4(struct __sk_buff *skb, const struct packet *p, __u16 proxy_port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk = 0;
	__u8 proto = p->tuple.protocol;
	long ret;

	t.ipv4.saddr = p->tuple.saddr.v4;
	t.ipv4.sport = bpf_htons(p->tuple.sport);
	if (proto == IPPROTO_TCP) {
		t.ipv4.daddr = p->tuple.daddr.v4;
		t.ipv4.dport = bpf_htons(p->tuple.dport);
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
		if (sk && sk->state == BPF_TCP_LISTEN) {
			bpf_sk_release(sk);
			sk = 0;
		}
		if (!sk) {
			t.ipv4.daddr = bpf_htonl(PROXY_LISTEN_ADDR);
			t.ipv4.dport = bpf_htons(proxy_port);
			sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
		}
	} else if (proto == IPPROTO_UDP) {
		t.ipv4.daddr = bpf_htonl(PROXY_LISTEN_ADDR);
		t.ipv4.dport = bpf_htons(proxy_port);
		sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return DROP_PROXY_LOOKUP_FAILED;
	ret = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (ret)
		return DROP_PROXY_SET_FAILED;
	skb->mark = MARK_MAGIC_TO_PROXY;
	return 0;
}

/* The source identity the proxy put in the mark of its upstream packets,
 * or 0 when the packet is not the proxy's. */
static __always_inline __u32 proxy_mark_identity(const struct __sk_buff *skb)
{
	__u32 mark = skb->mark;

	if ((mark & MARK_MAGIC_MASK) != MARK_MAGIC_PROXY_IDENTITY)
		return 0;
	return (mark >> 16) | ((mark & 0xFF) << 16);
}
