/* Socket-level load balancing, at the cgroup sock_addr hooks.
 *
 *  connect4:     TCP and UDP connect() to a frontend goes to a backend.
 *  sendmsg4:     unconnected UDP sendto() a frontend goes to a backend.
 *  recvmsg4:     a datagram from that backend reads as from the frontend.
 *  getpeername4: a socket connected to that backend names the frontend.
 *
 * Translating once per socket, before the kernel routes anything, means no
 * per-packet NAT for traffic between endpoints: packets already carry the
 * backend's address, so the endpoint programs apply policy to the
 * backend's identity and conntrack sees the real connection.
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/events.h"
#include "lib/lb.h"
#include "lib/lb_sock.h"
#include "lib/metrics.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* linux/errno.h is not usable from BPF programs. */
#define TWILL_ECONNREFUSED 111

/* sock_addr verdicts. */
#define SOCK_ALLOW 1
#define SOCK_REJECT 0

/* A frontend without backends: counted and reported like a packet drop,
 * from the socket's endpoint to the frontend, and refused with
 * ECONNREFUSED, what a client would get from a host with nothing
 * listening (instead of the EPERM a bare reject gives). */
static __always_inline int sock4_refuse(struct bpf_sock_addr *ctx, const struct lb_netns_value *ns)
{
	struct packet p = {};

	p.tuple.daddr.v4 = ctx->user_ip4;
	p.tuple.dport = bpf_ntohs((__u16)ctx->user_port);
	p.tuple.protocol = (__u8)ctx->protocol;
	p.tuple.family = TWILL_AF_INET;
	count(METRIC_DIR_EGRESS, DROP_NO_SERVICE, 0);
	emit_event_len(0, 0, EVENT_DROP, DROP_NO_SERVICE, DIR_EGRESS, CT_NEW, ns->endpoint_id, ns->identity,
		       identity_of4(p.tuple.daddr.v4), &p, 0);
	bpf_set_retval(-TWILL_ECONNREFUSED);
	return SOCK_REJECT;
}

/* Points the socket's destination at a backend if it is a frontend, and
 * remembers the pair for the reverse hooks. */
static __always_inline int sock4_forward(struct bpf_sock_addr *ctx)
{
	__u8 proto = (__u8)ctx->protocol;
	struct lb_netns_value *ns;
	struct lb4_service *svc;
	struct lb4_backend *backend;
	struct lb4_key key;
	__u32 backend_id = 0;
	__u64 netns;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SOCK_ALLOW;
	netns = bpf_get_netns_cookie(ctx);
	ns = bpf_map_lookup_elem(&twill_lb_netns, &netns);
	if (!ns)
		return SOCK_ALLOW;

	__u32 daddr = ctx->user_ip4;
	__u16 dport = (__u16)ctx->user_port;
	svc = lb4_lookup_service(&key, daddr, dport, proto);
	if (!svc)
		return SOCK_ALLOW;

	/* Affinity is per client namespace; Maglev hashes the socket, so the
	 * choice is stable for the socket's lifetime however often it sends. */
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct lb_client client = { .id = netns, .netns = 1, .hash = (__u32)lb_hash64(cookie) };
	backend = lb4_select_backend(&key, svc, &client, &backend_id);
	if (!backend)
		return sock4_refuse(ctx, ns);

	struct lb4_sk_key sk = { .cookie = cookie, .address = backend->address, .port = backend->port };
	struct lb4_sk_value *old = bpf_map_lookup_elem(&twill_lb4_sk, &sk);
	/* sendmsg runs per datagram: write only what changed. */
	if (!old || old->address != daddr || old->port != dport || old->rev_nat_index != svc->rev_nat_index) {
		struct lb4_sk_value v = { .address = daddr, .port = dport, .rev_nat_index = svc->rev_nat_index };
		bpf_map_update_elem(&twill_lb4_sk, &sk, &v, BPF_ANY);
	}
	ctx->user_ip4 = backend->address;
	ctx->user_port = backend->port;
	return SOCK_ALLOW;
}

/* Shows the frontend where the socket would see the backend. */
static __always_inline int sock4_reverse(struct bpf_sock_addr *ctx)
{
	struct lb4_sk_key sk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
	};
	struct lb4_sk_value *v = bpf_map_lookup_elem(&twill_lb4_sk, &sk);

	if (v) {
		ctx->user_ip4 = v->address;
		ctx->user_port = v->port;
	}
	return SOCK_ALLOW;
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_forward(ctx);
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_forward(ctx);
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_reverse(ctx);
}

SEC("cgroup/getpeername4")
int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock4_reverse(ctx);
}
