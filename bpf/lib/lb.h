/* Services (load balancing), IPv4: the service maps, frontend lookup and
 * backend selection, shared by the socket hooks (sock.c) and per-packet
 * NodePort translation at the node's devices (netdev.c).
 *
 * A frontend is found by its exact address, else, when the destination is
 * one of the node's addresses (ipcache identity host), as a NodePort
 * (address 0). Its backend comes from, in order: the client's session
 * affinity, the frontend's Maglev table, a random slot.
 */
#pragma once

#include "common.h"
#include "config.h"
#include "endpoints.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_LB_SERVICE_ENTRIES);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_lb4_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_LB_BACKENDS);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_lb4_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_LB_FRONTENDS);
	__type(key, __u32);
	__type(value, struct lb4_reverse_nat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_lb4_reverse_nat SEC(".maps");

/* One Maglev table per frontend, keyed by rev_nat_index. BPF_F_INNER_MAP
 * lets tables of any size replace the template (the size in use is
 * datapath_config.maglev_table_size); BPF_F_MMAPABLE lets the agent write
 * a whole table with one memcpy instead of one syscall per entry. A new
 * table is filled first and then swapped in with one update of the outer
 * map, so no lookup ever sees a half-written table. */
struct lb4_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
	__uint(max_entries, LB_MAGLEV_DEFAULT_SIZE);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, MAX_LB_MAGLEV);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct lb4_maglev_inner); /* a flexible array: last */
} twill_lb4_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_LB_AFFINITY);
	__type(key, struct lb_affinity_key);
	__type(value, struct lb_affinity_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_lb_affinity SEC(".maps");

/* Which backends a frontend has, by id: a remembered affinity is only
 * honoured while its backend is still one of the frontend's, and the slots
 * cannot answer that without a scan. Written by the agent's map handle
 * along with the slots (the value counts the slots holding the backend). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_LB_SERVICE_ENTRIES);
	__type(key, struct lb_affinity_match_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_lb_affinity_match SEC(".maps");

/* A 64-bit finaliser (the one of SplitMix64): every input bit reaches
 * every output bit, so consecutive socket cookies or ports spread over
 * the whole Maglev table. */
static __always_inline __u64 lb_hash64(__u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* The hash of a connection as the client sent it, for Maglev per packet:
 * the same connection always maps to the same table entry. */
static __always_inline __u32 lb4_hash_tuple(const struct tuple *t)
{
	__u64 addrs = ((__u64)t->saddr.v4 << 32) | t->daddr.v4;
	__u64 rest = ((__u64)t->sport << 32) | ((__u64)t->dport << 16) | t->protocol;

	return (__u32)lb_hash64(addrs ^ lb_hash64(rest));
}

/* The service (slot 0) of the frontend `daddr:dport_be/proto`, with `key`
 * left naming it. The NodePort key is tried before the ipcache, so
 * destinations without a NodePort on their port cost one hash lookup and
 * no LPM lookup. */
static __always_inline struct lb4_service *lb4_lookup_service(struct lb4_key *key, __u32 daddr, __u16 dport_be,
							      __u8 proto)
{
	struct lb4_service *svc;

	__builtin_memset(key, 0, sizeof(*key));
	key->address = daddr;
	key->dport = dport_be;
	key->proto = proto;
	svc = bpf_map_lookup_elem(&twill_lb4_services, key);
	if (svc)
		return svc;
	key->address = 0;
	svc = bpf_map_lookup_elem(&twill_lb4_services, key);
	if (!svc || !(svc->flags & LB_F_NODEPORT) || identity_of4(daddr) != IDENTITY_HOST)
		return 0;
	return svc;
}

static __always_inline __u32 lb_maglev_size(void)
{
	struct datapath_config *cfg = config();

	return cfg && cfg->maglev_table_size ? cfg->maglev_table_size : LB_MAGLEV_DEFAULT_SIZE;
}

/* The backend id at the hash's entry of the frontend's Maglev table, 0 if
 * it has none (yet). */
static __always_inline __u32 lb4_maglev_backend(__u32 rev_nat_index, __u32 hash)
{
	void *table = bpf_map_lookup_elem(&twill_lb4_maglev, &rev_nat_index);
	__u32 index, *id;

	if (!table)
		return 0;
	index = hash % lb_maglev_size();
	id = bpf_map_lookup_elem(table, &index);
	return id ? *id : 0;
}

static __always_inline __u32 lb4_random_backend(const struct lb4_key *frontend, const struct lb4_service *svc)
{
	struct lb4_key key = *frontend;
	struct lb4_service *slot;

	key.backend_slot = (__u16)(bpf_get_prandom_u32() % svc->count + 1);
	slot = bpf_map_lookup_elem(&twill_lb4_services, &key);
	return slot ? slot->backend_id : 0;
}

/* The backend the client was given last, if within the frontend's
 * affinity timeout and still one of its backends; 0 otherwise. */
static __always_inline __u32 lb_affinity_backend(const struct lb_affinity_key *key,
						 const struct lb4_service *svc, __u64 now)
{
	struct lb_affinity_value *v = bpf_map_lookup_elem(&twill_lb_affinity, key);
	struct lb_affinity_match_key match = {};

	if (!v || now - v->last_used > (__u64)svc->affinity_timeout * SECONDS)
		return 0;
	match.backend_id = v->backend_id;
	match.rev_nat_index = svc->rev_nat_index;
	if (!bpf_map_lookup_elem(&twill_lb_affinity_match, &match))
		return 0;
	/* Shared by every connection of the client: written at most once a
	 * second, a second of slack on timeouts counted in seconds. */
	if (now - v->last_used > SECONDS)
		v->last_used = now;
	return v->backend_id;
}

/* The client a backend choice is made for: who affinity remembers, and
 * the hash Maglev picks by. */
struct lb_client {
	__u64 id;     /* netns cookie (socket hooks) or IPv4 source address */
	__u8 netns;   /* lb_affinity_key.netns */
	__u32 hash;
};

/* Chooses a backend of the service `svc` found under `frontend`. Returns
 * the backend, with its id in *backend_id, or NULL when the frontend has
 * no backend to give (DROP_NO_SERVICE). */
static __always_inline struct lb4_backend *lb4_select_backend(const struct lb4_key *frontend,
							       const struct lb4_service *svc,
							       const struct lb_client *client, __u32 *backend_id)
{
	struct lb_affinity_key akey = {};
	__u64 now = 0;
	__u32 id = 0;

	if (svc->count == 0)
		return 0;
	if (svc->affinity_timeout) {
		now = bpf_ktime_get_ns();
		akey.client = client->id;
		akey.rev_nat_index = svc->rev_nat_index;
		akey.netns = client->netns;
		id = lb_affinity_backend(&akey, svc, now);
	}
	if (!id && (svc->flags & LB_F_MAGLEV))
		id = lb4_maglev_backend(svc->rev_nat_index, client->hash);
	struct lb4_backend *backend = id ? bpf_map_lookup_elem(&twill_lb4_backends, &id) : 0;
	/* No table yet, or its entry names a backend already removed (the
	 * table is rewritten after the backend maps): a random slot. */
	if (!backend) {
		id = lb4_random_backend(frontend, svc);
		backend = id ? bpf_map_lookup_elem(&twill_lb4_backends, &id) : 0;
	}
	if (!backend)
		return 0;
	if (svc->affinity_timeout) {
		struct lb_affinity_value *v = bpf_map_lookup_elem(&twill_lb_affinity, &akey);
		/* A reused entry was refreshed above. */
		if (!v || v->backend_id != id || now - v->last_used > SECONDS) {
			struct lb_affinity_value nv = { .last_used = now, .backend_id = id };
			bpf_map_update_elem(&twill_lb_affinity, &akey, &nv, BPF_ANY);
		}
	}
	*backend_id = id;
	return backend;
}
