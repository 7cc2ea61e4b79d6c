/* The parameter server's wire protocol (internal; see docs/ps.md).
 *
 * Workers talk to each server over one ZeroMQ DEALER -> ROUTER connection.
 * A request is a multipart message: a header frame (one msgpack map with
 * short string keys) followed by raw payload frames in host byte order:
 *
 *   hello  {v, op, id, w, nw, [sa, sk], + the options}  -> {v, op, id, rg, st, [sm], [msg]}
 *   push   {v, op, id, w, rg, seq, clk, n, [cp, ce], [sa]} keys lens vals
 *                                                   -> {v, op, id, rg, st, [bk, be], [msg]}
 *   pull   {v, op, id, w, rg, clk, n} keys lens          -> {..., st, [msg]} vals
 *   init   {v, op, id, w, rg, n} keys lens               -> {..., st, [msg]}
 *   bye    {v, op, id, w}                                -> {..., st}
 *   copy   a push's copy, from the worker to the range's backup, as push;
 *          the push itself names the server in cp
 *   order  {v, op, id, n} entries, from a range's primary to its backup,
 *          not answered: n entries {worker | range << 32, seq} (2 uint64
 *          each) naming the workers' copies to take, in this order
 *   fwd    a push, from a range's primary server to its backup, as above
 *          (when the worker sent no copy there)
 *   catchup {v, op, id, w (the asking server), rg}, from a server started
 *          again to a range's primary -> {v, op, id, rg, n, + the options}
 *          keys lens updates vals state seqs clocks applied: the range's
 *          snapshot, after which the primary forwards to it
 *
 * sa names the worker's arena of push values in shared memory (ps/arena.h):
 * in a hello, with the key found at its start (sk), asking the server to
 * map it (sm: 1 in the answer when it did); in a push or copy, saying that vals is a descriptor {offset, bytes}
 * of the values in it.
 * rg is the key range (the keys of server rg's share of the key space);
 * seq numbers a worker's pushes to that range, so that a push sent again
 * after a failover is applied once.
 * keys: n uint64; lens: n uint64 (floats per key); vals: the keys' floats,
 * one after the other.  Fields a decoder does not know are ignored; a
 * known field of the wrong type or out of range is an error.  The decoder
 * takes arbitrary bytes and never crashes.
 *
 * Threads: pure functions, callable from any thread. */
#ifndef MLRT_PS_PROTO_H
#define MLRT_PS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <mlrt/ps.h>

#define MLRTI_PS_VERSION 1
#define MLRTI_PS_MAX_HEADER 4096           /* bytes of a header frame */
#define MLRTI_PS_MAX_KEYS ((uint64_t)1 << 26) /* keys in one request */
#define MLRTI_PS_MAX_LEN ((uint64_t)1 << 28)  /* floats of one key */
#define MLRTI_PS_MSG_MAX 200

typedef enum mlrti_ps_op {
	MLRTI_PS_HELLO = 1,
	MLRTI_PS_PUSH,
	MLRTI_PS_PULL,
	MLRTI_PS_INIT,
	MLRTI_PS_BYE,
	MLRTI_PS_FORWARD,
	MLRTI_PS_CATCHUP,
	MLRTI_PS_COPY,
	MLRTI_PS_ORDER,
	MLRTI_PS_OP_COUNT,
} mlrti_ps_op;

typedef struct mlrti_ps_hdr {
	mlrti_ps_op op;
	uint64_t id;    /* request id, echoed by the reply */
	int32_t worker; /* sender's worker rank */
	int32_t nworkers;
	int32_t range;  /* the key range of the request's keys */
	uint64_t seq;   /* push: this worker's pushes to this range, from 1 */
	int64_t clock;  /* push, pull: the worker's pushes so far (its clock) */
	uint64_t nkeys;
	int has_copy;    /* push: the worker sent a copy to server copy_to */
	int32_t copy_to;
	uint32_t copy_epoch; /* push: the backup_epoch the worker knew copy_to by */
	int has_backup;  /* reply of a range's primary: its backup now (-1: none) */
	int32_t backup;
	uint32_t backup_epoch; /* and a number that changes whenever that does (a
	                        * backup started again keeps its index) */
	int has_arena;   /* hello, push, copy: sa given */
	uint64_t arena;  /* the worker's arena (pid << 32 | fd) */
	uint64_t arena_key; /* hello: the key at its start (sk) */
	int arena_ok;    /* reply to hello: the server mapped it (sm) */
	int32_t status; /* reply: an mlrt_status */
	char msg[MLRTI_PS_MSG_MAX]; /* reply: what went wrong, or "" */
	int has_opts;   /* hello carries the options */
	mlrt_ps_opts opts;
} mlrti_ps_hdr;

/* Encode h (a request, or a reply when reply != 0) into buf of cap bytes;
 * *len gets the size.  MLRT_ERR_TOO_LARGE when it does not fit. */
int mlrti_ps_hdr_encode(const mlrti_ps_hdr *h, int reply, void *buf, size_t cap, size_t *len);

/* Decode a header frame into h.  MLRT_ERR_PROTOCOL (with why filled in)
 * or MLRT_ERR_VERSION on bad input. */
int mlrti_ps_hdr_decode(const void *buf, size_t len, mlrti_ps_hdr *h, char *why, size_t whylen);

/* Where a server is reached.  A server publishes "TCP IPC MACHINE": its
 * tcp:// endpoint, an ipc:// endpoint (an abstract Unix socket) and a key
 * naming this kernel and network namespace.  mlrti_ps_endpoint picks the
 * ipc one for peers with the same MACHINE key (Unix sockets move bytes
 * about twice as fast as loopback TCP), unless MLRT_PS_TRANSPORT=tcp, and
 * the tcp one otherwise.  MLRT_ERR_PROTOCOL for a malformed value. */
#define MLRTI_PS_ENDPOINT_MAX 256
int mlrti_ps_machine_key(char *out, size_t cap);
int mlrti_ps_endpoint(const char *published, char *out, size_t cap);

/* Server of key among n servers: key ranges of equal width. */
static inline int mlrti_ps_server_of(uint64_t key, int n)
{
	return (int)(((unsigned __int128)key * (unsigned)n) >> 64);
}

#endif
