/* The worker's side of the parameter server: one DEALER socket per
 * server.  A push or pull splits its keys by key range, sends one request
 * per range to the server answering for it, all at once, and waits for
 * every reply.  Large values that are one run of the caller's array go out
 * without a copy (ZeroMQ holds the caller's memory until it has sent it; a
 * wait returns only after that).  Up to MLRT_PS_MAX_INFLIGHT requests may
 * be in flight, each in its slot with its own split of the keys; replies
 * carry the request's ticket.  A request unanswered for a while makes the
 * worker look for servers marked down, move their ranges where the
 * servers' range map says, and send what was waiting there again.  With
 * replication a push also goes, at the same time, to the range's backup
 * (a copy); it is done when both have answered.  Large push values for
 * servers on this machine go through shared memory instead (ps/arena.h).
 * See docs/ps.md. */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include <zmq.h>

#include <mlrt/ps.h>
#include <mlrt/store.h>

#include "ps/arena.h"
#include "ps/proto.h"
#include "runtime/common.h"
#include "runtime/ctx.h"

#define DRAIN_MAX 64 /* replies taken from one socket between polls */
#define FAILOVER_CHECK_MS 50 /* a request unanswered this long: is its server down? */
#define LEND_MIN_BYTES (64 * 1024) /* push values from this size go out without a copy */
#define ARENA_MIB_DEF 64 /* MLRT_PS_SHM_MIB: a worker's arena of push values */
#define ARENA_MIN_DEF (64 * 1024) /* MLRT_PS_SHM_MIN: values from this size go through it */

/* One key range's share of a request. */
typedef struct part {
	size_t n;        /* keys */
	int waiting;     /* sent, not yet answered */
	int copy;        /* push: the backup its copy went to, -1: none */
	int copy_waiting; /* that copy is not yet answered */
	int pull_waiting; /* push+pull: the pull behind the push is not yet answered */
	uint64_t seq;    /* push: its number among this worker's pushes to the range */
	int64_t arena_off; /* push: where its values are in the arena, -1: not there */
	int64_t clock;   /* the worker's clock when it was first sent */
	size_t first;    /* index of its first key in the caller's arrays */
	size_t nvals;    /* floats */
	int contiguous;  /* its keys are one run in the caller's arrays */
	uint64_t *keys;  /* n keys and n lens, for the wire */
	uint64_t *lens;
	size_t *idx;     /* the caller's index of each of its keys */
} part;

/* What a worker's request does (a push+pull is a push and a pull sent
 * together to each server). */
enum { OP_PUSHPULL = MLRTI_PS_OP_COUNT };

/* A request in flight, in slot ticket % MLRT_PS_MAX_INFLIGHT. */
typedef struct request {
	int64_t ticket;   /* -1: the slot is free */
	int op;           /* an mlrti_ps_op or OP_PUSHPULL */
	part *parts;      /* [nservers]: one per key range */
	size_t cap;       /* room in each part's arrays and in offset */
	size_t *offset;   /* value offset of each of the caller's keys */
	float *out;       /* pull: the caller's values */
	const float *in;  /* push: the caller's values (sent again after a failover) */
	int pending;      /* servers yet to answer */
	int status;
	atomic_int lent;  /* caller buffers ZeroMQ still holds */
	uint64_t arena_end; /* its values' region in the arena, to give back; 0: none */
} request;

struct mlrt_ps {
	mlrt_ctx *ctx;
	void *zctx;
	void **sock;
	int nservers, worker, nworkers;
	mlrt_ps_opts opts;
	int64_t next_ticket;
	int64_t done_upto; /* every ticket <= done_upto has completed */
	int64_t clock;     /* pushes sent */
	int *primary;      /* [range]: the server answering for it */
	int *backup;       /* [range]: where copies of pushes go (its primary's word), -1: none */
	uint32_t *backup_epoch; /* [range]: the primary's number for that word */
	uint64_t *seq;     /* [range]: pushes sent to it */
	int64_t *moved_at; /* [range]: wall-clock ms its server died, 0: not moved */
	int *moved_from;   /* [range]: that server */
	int replicas;
	char (*addr)[800]; /* [server]: what it published, that its socket is connected to */
	mlrt_store *store; /* the ctx's: down servers are marked there */
	char prefix[256];
	int error;         /* first error since the last wait */
	int broken;        /* a reply is overdue: the handle cannot be trusted */
	int opened;        /* every server said hello back */
	mlrti_ps_arena arena; /* push values for servers on this machine */
	size_t arena_min;  /* values of a range from this size go there */
	int *local;        /* [server]: on this machine (reached over ipc) */
	int *arena_ok;     /* [server]: it mapped the arena (said so in hello) */
	request slot[MLRT_PS_MAX_INFLIGHT];
};

void mlrt_ps_opts_init(mlrt_ps_opts *o)
{
	if (o == NULL)
		return;
	memset(o, 0, sizeof(*o));
	o->lr = 0.01f;
	o->momentum = 0.9f;
	o->beta1 = 0.9f;
	o->beta2 = 0.999f;
	o->eps = 1e-8f;
	o->ftrl_beta = 1.0f;
	o->staleness = 2;
}

int mlrt_ps_role(const mlrt_ctx *ctx)
{
	if (ctx != NULL && mlrti_ctx_is_server(ctx))
		return MLRT_ROLE_SERVER;
	return ctx != NULL && mlrti_ctx_is_evaluator(ctx) ? MLRT_ROLE_EVALUATOR : MLRT_ROLE_WORKER;
}

/* ---- splitting a request by server ---- */

static int reserve(mlrt_ps *ps, request *q, size_t n)
{
	size_t cap = n < 16 ? 16 : n;

	if (n <= q->cap && q->parts != NULL)
		return MLRT_OK;
	if (q->parts == NULL && (q->parts = calloc((size_t)ps->nservers, sizeof(*q->parts))) == NULL)
		return MLRT_ERR_NOMEM;
	q->cap = 0;
	free(q->offset);
	if ((q->offset = malloc(cap * sizeof(*q->offset))) == NULL)
		return MLRT_ERR_NOMEM;
	for (int s = 0; s < ps->nservers; s++) {
		part *p = &q->parts[s];

		free(p->keys);
		free(p->lens);
		free(p->idx);
		p->keys = malloc(cap * sizeof(*p->keys));
		p->lens = malloc(cap * sizeof(*p->lens));
		p->idx = malloc(cap * sizeof(*p->idx));
		if (p->keys == NULL || p->lens == NULL || p->idx == NULL)
			return MLRT_ERR_NOMEM;
	}
	q->cap = cap;
	return MLRT_OK;
}

static int split(mlrt_ps *ps, request *q, const uint64_t *keys, size_t n, const size_t *lens)
{
	size_t off = 0;

	if (n > MLRTI_PS_MAX_KEYS)
		return MLRT_ERR_TOO_LARGE;
	if (reserve(ps, q, n) != MLRT_OK)
		return MLRT_ERR_NOMEM;
	for (int s = 0; s < ps->nservers; s++) {
		q->parts[s].n = 0;
		q->parts[s].nvals = 0;
		q->parts[s].contiguous = 1;
	}
	for (size_t i = 0; i < n; i++) {
		part *p = &q->parts[mlrti_ps_server_of(keys[i], ps->nservers)];

		if (lens[i] == 0 || lens[i] > MLRTI_PS_MAX_LEN) {
			mlrt_log(MLRT_LOG_ERROR, "ps: key %" PRIu64 " with length %zu (want 1 to %" PRIu64
			         ")", keys[i], lens[i], MLRTI_PS_MAX_LEN);
			return MLRT_ERR_INVALID;
		}
		if (p->n == 0)
			p->first = i;
		else if (p->idx[p->n - 1] != i - 1)
			p->contiguous = 0;
		p->keys[p->n] = keys[i];
		p->lens[p->n] = lens[i];
		p->idx[p->n] = i;
		p->n++;
		p->nvals += lens[i];
		q->offset[i] = off;
		off += lens[i];
	}
	return MLRT_OK;
}

/* ---- sending ---- */

static void give_back(void *data, void *hint)
{
	(void)data;
	atomic_fetch_sub((atomic_int *)hint, 1);
}

static int send_frame(void *sock, const void *p, size_t len, int more)
{
	return zmq_send(sock, p, len, more ? ZMQ_SNDMORE : 0) < 0 ? MLRT_ERR_IO : MLRT_OK;
}

/* The values of part p of a push, as a message: the caller's memory
 * itself when they are one run (ZeroMQ lends it until sent), else a copy. */
static int values_msg(request *q, const part *p, const float *vals, zmq_msg_t *m)
{
	/* Lending costs a callback from ZeroMQ's thread; small values are
	 * cheaper copied. */
	if (p->contiguous && p->nvals * sizeof(float) >= LEND_MIN_BYTES) {
		atomic_fetch_add(&q->lent, 1);
		if (zmq_msg_init_data(m, (void *)(vals + q->offset[p->first]),
		                      p->nvals * sizeof(float), give_back, &q->lent) != 0) {
			atomic_fetch_sub(&q->lent, 1);
			return MLRT_ERR_NOMEM;
		}
		return MLRT_OK;
	}
	if (zmq_msg_init_size(m, p->nvals * sizeof(float)) != 0)
		return MLRT_ERR_NOMEM;
	float *out = zmq_msg_data(m);

	for (size_t k = 0; k < p->n; k++) {
		memcpy(out, vals + q->offset[p->idx[k]], p->lens[k] * sizeof(float));
		out += p->lens[k];
	}
	return MLRT_OK;
}

/* Requests and messages that carry keys. */
static int keyed(int op)
{
	return op == MLRTI_PS_PUSH || op == MLRTI_PS_PULL || op == MLRTI_PS_INIT ||
	       op == MLRTI_PS_COPY || op == OP_PUSHPULL;
}

static int pushes(int op)
{
	return op == MLRTI_PS_PUSH || op == OP_PUSHPULL;
}

/* Send request q's share of range rg to server `to` as op. */
static int send_op(mlrt_ps *ps, request *q, int rg, const float *vals, mlrti_ps_op op, int to,
                   int copy_to)
{
	const part *p = &q->parts[rg];
	void *sock = ps->sock[to];
	mlrti_ps_hdr h = {
		.op = op,
		.id = (uint64_t)q->ticket,
		.worker = ps->worker,
		.nworkers = ps->nworkers,
		.range = rg,
		.seq = p->seq,
		/* The pull of a push+pull asks for the values after that push. */
		.clock = p->clock + (q->op == OP_PUSHPULL && op == MLRTI_PS_PULL),
		.nkeys = p->n,
		.has_copy = copy_to >= 0,
		.copy_to = copy_to,
		.copy_epoch = ps->backup_epoch[rg],
		.has_opts = q->op == MLRTI_PS_HELLO,
		.opts = ps->opts,
	};
	int has_keys = keyed(op), push = op == MLRTI_PS_PUSH || op == MLRTI_PS_COPY;
	int by_ref = push && p->arena_off >= 0 && ps->arena_ok[to];
	char buf[1024];
	size_t len;
	zmq_msg_t m;
	int rc;

	/* The arena: offered to servers on this machine in hello, named by
	 * pushes whose values are in it. */
	if (ps->arena.base != NULL && ((q->op == MLRTI_PS_HELLO && ps->local[to]) || by_ref)) {
		h.has_arena = 1;
		h.arena = mlrti_ps_arena_id(&ps->arena);
		h.arena_key = q->op == MLRTI_PS_HELLO ? ps->arena.key : 0;
	}
	MLRTI_CHECK_GOTO(mlrti_ps_hdr_encode(&h, 0, buf, sizeof(buf), &len), rc, out);
	MLRTI_CHECK_GOTO(send_frame(sock, buf, len, has_keys), rc, out);
	if (!has_keys)
		return MLRT_OK;
	MLRTI_CHECK_GOTO(send_frame(sock, p->keys, p->n * 8, 1), rc, out);
	MLRTI_CHECK_GOTO(send_frame(sock, p->lens, p->n * 8, push), rc, out);
	if (!push)
		return MLRT_OK;
	if (by_ref) {
		uint64_t desc[2] = {(uint64_t)p->arena_off, p->nvals * sizeof(float)};

		return send_frame(sock, desc, sizeof(desc), 0);
	}
	MLRTI_CHECK_GOTO(values_msg(q, p, vals, &m), rc, out);
	if (zmq_msg_send(&m, sock, 0) < 0) {
		zmq_msg_close(&m);
		rc = MLRT_ERR_IO;
	}
out:
	return rc;
}

/* Send what request q's share of range rg still waits for to the range's
 * server (its op, and a push+pull's pull right behind the push), and a
 * push's copy to the range's backup too. */
static int send_part(mlrt_ps *ps, request *q, int rg, const float *vals)
{
	part *p = &q->parts[rg];
	int b = pushes(q->op) && ps->backup[rg] != ps->primary[rg] ? ps->backup[rg] : -1;
	int rc = MLRT_OK;

	if (p->waiting) {
		rc = send_op(ps, q, rg, vals, pushes(q->op) ? MLRTI_PS_PUSH : (mlrti_ps_op)q->op,
		             ps->primary[rg], b);
		if (rc == MLRT_OK && b >= 0 && !p->copy_waiting) {
			rc = send_op(ps, q, rg, vals, MLRTI_PS_COPY, b, -1);
			p->copy = b;
			p->copy_waiting = rc == MLRT_OK;
		}
	}
	if (rc == MLRT_OK && p->pull_waiting)
		rc = send_op(ps, q, rg, NULL, MLRTI_PS_PULL, ps->primary[rg], -1);
	return rc;
}

/* Which answer came for a part. */
enum { ANSWER_PRIMARY, ANSWER_COPY, ANSWER_PULL, ANSWER_ALL };

/* Part p of q has an answer (from its server, from the backup its copy
 * went to, or the pull of a push+pull); the request waits for one part
 * less once all are in. */
static void answered(request *q, part *p, int which)
{
	int before = p->waiting || p->copy_waiting || p->pull_waiting;

	if (which == ANSWER_PRIMARY || which == ANSWER_ALL)
		p->waiting = 0;
	if (which == ANSWER_COPY || which == ANSWER_ALL)
		p->copy_waiting = 0;
	if (which == ANSWER_PULL || which == ANSWER_ALL)
		p->pull_waiting = 0;
	if (before && !p->waiting && !p->copy_waiting && !p->pull_waiting)
		q->pending--;
}

/* ---- receiving ---- */

static void drop_rest(void *sock, int more)
{
	while (more) {
		zmq_msg_t m;

		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, sock, 0) < 0)
			more = 0;
		else
			more = zmq_msg_more(&m);
		zmq_msg_close(&m);
	}
}

static void fail_request(request *q, int status)
{
	if (q->status == MLRT_OK)
		q->status = status;
}

/* A pull's values for range rg from server s into the caller's array. */
static int take_values(mlrt_ps *ps, request *q, int rg, int s)
{
	const part *p = &q->parts[rg];
	zmq_msg_t m;
	int rc = MLRT_OK;

	zmq_msg_init(&m);
	if (zmq_msg_recv(&m, ps->sock[s], 0) < 0 || zmq_msg_size(&m) != p->nvals * sizeof(float)) {
		mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: server %d sent values of the wrong size",
		         ps->worker, s);
		rc = MLRT_ERR_PROTOCOL;
	} else if (p->contiguous && p->n > 0) {
		memcpy(q->out + q->offset[p->first], zmq_msg_data(&m), zmq_msg_size(&m));
	} else {
		const float *in = zmq_msg_data(&m);

		for (size_t k = 0; k < p->n; k++) {
			memcpy(q->out + q->offset[p->idx[k]], in, p->lens[k] * sizeof(float));
			in += p->lens[k];
		}
	}
	drop_rest(ps->sock[s], zmq_msg_more(&m));
	zmq_msg_close(&m);
	return rc;
}

/* The backup's answer to a push's copy.  A copy refused (the server is no
 * longer the range's backup: it took the range over, or the worker's word
 * was old) leaves the push to its primary, as when the backup is down. */
static void take_copy_reply(mlrt_ps *ps, int s, const mlrti_ps_hdr *h)
{
	request *q = &ps->slot[h->id % MLRT_PS_MAX_INFLIGHT];
	part *p;

	if (q->ticket != (int64_t)h->id || h->range < 0 || h->range >= ps->nservers)
		return; /* the request completed without it (the backup was down) */
	p = &q->parts[h->range];
	if (!p->copy_waiting || p->copy != s)
		return;
	if (h->status != MLRT_OK)
		mlrt_log(MLRT_LOG_INFO, "ps: worker %d: server %d did not keep the copy of a push to "
		         "range %d: %s", ps->worker, s, h->range,
		         h->msg[0] ? h->msg : mlrt_strerror(h->status));
	answered(q, p, ANSWER_COPY);
}

static int connect_server(mlrt_ps *ps, mlrt_store *st, const char *prefix, int s, int timeout);

/* Range rg's primary names b (epoch) as its backup: copies go there from
 * now on.  A server started again listens at a new address: look it up
 * first.  Copies still unanswered went to the backup of before (perhaps a
 * process now dead): their pushes' primary either ordered them there
 * before the change or forwards them itself, so they are not waited for. */
static void new_backup(mlrt_ps *ps, int rg, int b, uint32_t epoch)
{
	for (int64_t t = ps->done_upto + 1; t < ps->next_ticket; t++) {
		request *q = &ps->slot[t % MLRT_PS_MAX_INFLIGHT];

		if (q->ticket == t && q->parts[rg].copy_waiting)
			answered(q, &q->parts[rg], ANSWER_COPY);
	}
	if (b >= 0 && connect_server(ps, ps->store, ps->prefix, b, ps->opts.timeout_ms) != MLRT_OK)
		b = -1; /* the primary forwards instead */
	ps->backup[rg] = b;
	ps->backup_epoch[rg] = epoch;
}

/* Read one reply from server s and account it to its request. */
static void take_reply(mlrt_ps *ps, int s)
{
	char buf[MLRTI_PS_MAX_HEADER], why[MLRTI_PS_MSG_MAX];
	int more = 0, n, rc, pull;
	size_t morelen = sizeof(more);
	mlrti_ps_hdr h;
	request *q;
	part *p;

	n = zmq_recv(ps->sock[s], buf, sizeof(buf), 0);
	if (n < 0)
		return;
	zmq_getsockopt(ps->sock[s], ZMQ_RCVMORE, &more, &morelen);
	rc = mlrti_ps_hdr_decode(buf, (size_t)n > sizeof(buf) ? sizeof(buf) : (size_t)n, &h, why,
	                         sizeof(why));
	if (rc == MLRT_OK && h.op == MLRTI_PS_COPY) {
		take_copy_reply(ps, s, &h);
		drop_rest(ps->sock[s], more);
		return;
	}
	q = &ps->slot[h.id % MLRT_PS_MAX_INFLIGHT];
	/* A push+pull gets two answers from the primary: the push's and the
	 * pull's (with the values). */
	pull = rc == MLRT_OK && (q->op == MLRTI_PS_PULL ||
	                         (q->op == OP_PUSHPULL && h.op == MLRTI_PS_PULL));
	p = rc == MLRT_OK && h.range < ps->nservers && q->ticket == (int64_t)h.id
	            ? &q->parts[h.range]
	            : NULL;
	if (p == NULL || !(q->op == OP_PUSHPULL && pull ? p->pull_waiting : p->waiting)) {
		mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: a malformed or unexpected reply from server %d",
		         ps->worker, s);
		drop_rest(ps->sock[s], more);
		return;
	}
	if (h.has_backup && h.backup < ps->nservers &&
	    (h.backup != ps->backup[h.range] || h.backup_epoch != ps->backup_epoch[h.range]))
		new_backup(ps, h.range, h.backup, h.backup_epoch);
	if (h.status != MLRT_OK) {
		mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: server %d: %s", ps->worker, s,
		         h.msg[0] ? h.msg : mlrt_strerror(h.status));
		fail_request(q, h.status);
		drop_rest(ps->sock[s], more);
	} else if (pull) {
		int vrc = more ? take_values(ps, q, h.range, s) : MLRT_ERR_PROTOCOL;

		if (vrc != MLRT_OK)
			fail_request(q, vrc);
	} else {
		if (q->op == MLRTI_PS_HELLO)
			ps->arena_ok[s] = h.arena_ok && ps->arena.base != NULL;
		drop_rest(ps->sock[s], more);
	}
	if (ps->moved_at[h.range] > 0) {
		mlrt_log(MLRT_LOG_WARN, "ps: worker %d: server %d answered for range %d %" PRId64
		         " ms after server %d died", ps->worker, s, h.range,
		         mlrti_wall_ms() - ps->moved_at[h.range], ps->moved_from[h.range]);
		ps->moved_at[h.range] = 0;
	}
	answered(q, p, q->op == OP_PUSHPULL && pull ? ANSWER_PULL : ANSWER_PRIMARY);
}

/* Whether server i is marked down (by mlrun, with the time it died). */
static int64_t down_since(mlrt_ps *ps, int i)
{
	char key[400];
	void *val = NULL;
	size_t len;
	int64_t when = 0;

	snprintf(key, sizeof(key), "%sps/down/%d", ps->prefix, i);
	if (mlrt_store_get(ps->store, key, &val, &len) == MLRT_OK &&
	    mlrti_parse_int(val, 1, INT64_MAX, &when) != MLRT_OK)
		when = 1;
	free(val);
	return when;
}

/* Who answers for range rg now that server dead is down: the primary in
 * the servers' range map (<gen>/ps/range/<rg> = "primary backup") when it
 * is another server, else the backup; -1 when no copy is left. */
static int successor(mlrt_ps *ps, int rg, int dead)
{
	char key[400];
	void *val = NULL;
	size_t len;
	int p = -1, b = -1, to;

	snprintf(key, sizeof(key), "%sps/range/%d", ps->prefix, rg);
	if (mlrt_store_get(ps->store, key, &val, &len) != MLRT_OK || sscanf(val, "%d %d", &p, &b) != 2)
		p = -1, b = -1;
	free(val);
	to = p >= 0 && p != dead ? p : b;
	if (ps->replicas == 0 || to < 0 || to >= ps->nservers || to == dead || down_since(ps, to) > 0)
		return -1;
	return to;
}

/* Server s is down: its ranges go to their backups, and every request
 * still waiting on it is sent again there (pushes keep their numbers, so
 * the backup applies each once). */
static int fail_over(mlrt_ps *ps, int dead, int64_t when)
{
	/* Copies sent to it are answered by nobody: the primaries acknowledge
	 * alone until the server is back. */
	for (int64_t t = ps->done_upto + 1; t < ps->next_ticket; t++) {
		request *q = &ps->slot[t % MLRT_PS_MAX_INFLIGHT];

		for (int rg = 0; q->ticket == t && rg < ps->nservers; rg++)
			if (q->parts[rg].copy_waiting && q->parts[rg].copy == dead)
				answered(q, &q->parts[rg], ANSWER_COPY);
	}
	for (int rg = 0; rg < ps->nservers; rg++)
		if (ps->backup[rg] == dead)
			ps->backup[rg] = -1;
	for (int rg = 0; rg < ps->nservers; rg++) {
		if (ps->primary[rg] != dead)
			continue;
		int to = successor(ps, rg, dead);

		if (to < 0 || connect_server(ps, ps->store, ps->prefix, to, ps->opts.timeout_ms) !=
		                      MLRT_OK) {
			mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: server %d is down and range %d has no "
			         "copy left%s", ps->worker, dead, rg,
			         ps->replicas == 0 ? " (replication is off: --ps-replicas 1)" : "");
			return MLRT_ERR_PEER_LOST;
		}
		mlrt_log(MLRT_LOG_WARN, "ps: worker %d: server %d is down; range %d goes to its "
		         "backup, server %d", ps->worker, dead, rg, to);
		ps->primary[rg] = to;
		ps->backup[rg] = -1; /* until the new primary names one */
		ps->moved_at[rg] = when;
		ps->moved_from[rg] = dead;
		for (int64_t t = ps->done_upto + 1; t < ps->next_ticket; t++) {
			request *q = &ps->slot[t % MLRT_PS_MAX_INFLIGHT];

			if (q->ticket != t || !(q->parts[rg].waiting || q->parts[rg].pull_waiting) ||
			    send_part(ps, q, rg, q->in) == MLRT_OK)
				continue;
			fail_request(q, MLRT_ERR_IO);
			answered(q, &q->parts[rg], ANSWER_ALL);
		}
	}
	return MLRT_OK;
}

/* Look for servers that hold unanswered requests and are marked down. */
static int check_servers(mlrt_ps *ps)
{
	for (int i = 0; i < ps->nservers; i++) {
		int waiting = 0;

		for (int64_t t = ps->done_upto + 1; t < ps->next_ticket && !waiting; t++) {
			request *q = &ps->slot[t % MLRT_PS_MAX_INFLIGHT];

			for (int rg = 0; q->ticket == t && rg < ps->nservers; rg++)
				waiting |= ((q->parts[rg].waiting || q->parts[rg].pull_waiting) &&
				            ps->primary[rg] == i) ||
				           (q->parts[rg].copy_waiting && q->parts[rg].copy == i);
		}
		int64_t when = waiting ? down_since(ps, i) : 0;

		if (when > 0) {
			int rc = fail_over(ps, i, when);

			if (rc != MLRT_OK)
				return rc;
		}
	}
	return MLRT_OK;
}

/* Whether a message waits on sock (ZeroMQ's own state). */
static int readable(void *sock)
{
	int events = 0;
	size_t len = sizeof(events);

	return zmq_getsockopt(sock, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN);
}

/* A server that request q still waits on (its primary or its copy's
 * backup), or -1. */
static int owed_by(const mlrt_ps *ps, const request *q)
{
	for (int rg = 0; rg < ps->nservers; rg++) {
		if (q->parts[rg].waiting || q->parts[rg].pull_waiting)
			return ps->primary[rg];
		if (q->parts[rg].copy_waiting)
			return q->parts[rg].copy;
	}
	return -1;
}

/* Receive replies until ticket has completed or deadline (ms) passes;
 * every FAILOVER_CHECK_MS without a reply, look for dead servers. */
static int progress(mlrt_ps *ps, int64_t ticket, int64_t deadline)
{
	int64_t check_at = mlrti_now_ms() + FAILOVER_CHECK_MS;

	for (;;) {
		request *q = &ps->slot[ticket % MLRT_PS_MAX_INFLIGHT];
		int64_t now = mlrti_now_ms(), left = deadline - now;
		int took = 0, wait_ms, s;

		if (q->ticket != ticket || q->pending == 0)
			return MLRT_OK;
		if (left <= 0)
			break;
		if (now >= check_at) {
			int rc = check_servers(ps);

			if (rc != MLRT_OK) {
				ps->broken = 1;
				return rc;
			}
			check_at = now + FAILOVER_CHECK_MS;
		}
		/* Take every answer already in, then sleep in a receive on a
		 * socket this request waits on: one wake-up per answer, not the
		 * system calls of zmq_poll over every socket. */
		for (s = 0; s < ps->nservers; s++)
			for (int k = 0; k < DRAIN_MAX && readable(ps->sock[s]); k++, took++)
				take_reply(ps, s);
		if (took > 0)
			continue;
		if ((s = owed_by(ps, q)) < 0) { /* cannot be: pending counts parts owed */
			usleep(1000);
			continue;
		}
		wait_ms = (int)(left < FAILOVER_CHECK_MS ? left : FAILOVER_CHECK_MS);
		zmq_setsockopt(ps->sock[s], ZMQ_RCVTIMEO, &wait_ms, sizeof(wait_ms));
		take_reply(ps, s);
	}
	mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: no answer within %d ms (request %" PRId64 ")",
	         ps->worker, ps->opts.timeout_ms, ticket);
	ps->broken = 1;
	return MLRT_ERR_TIMEOUT;
}

/* Wait for every request up to ticket; fold their errors into ps->error
 * and free their slots. */
static int complete_upto(mlrt_ps *ps, int64_t ticket)
{
	int64_t deadline = mlrti_now_ms() + ps->opts.timeout_ms;

	while (ps->done_upto < ticket) {
		int64_t t = ps->done_upto + 1;
		request *q = &ps->slot[t % MLRT_PS_MAX_INFLIGHT];
		int rc = progress(ps, t, deadline);

		if (rc != MLRT_OK)
			return rc;
		/* A reply implies the values were sent; wait for ZeroMQ to
		 * let go of them too before the caller gets them back. */
		while (atomic_load(&q->lent) > 0 && mlrti_now_ms() < deadline)
			sched_yield();
		if (ps->error == MLRT_OK)
			ps->error = q->status;
		if (q->arena_end > 0)
			mlrti_ps_arena_give(&ps->arena, q->arena_end);
		q->arena_end = 0;
		q->ticket = -1;
		ps->done_upto = t;
	}
	return MLRT_OK;
}

/* Whether range rg's server also serves a range before it. */
static int serves_earlier(const mlrt_ps *ps, int rg)
{
	for (int i = 0; i < rg; i++)
		if (ps->primary[i] == ps->primary[rg])
			return 1;
	return 0;
}

/* Whether part p of a push to range rg goes through the arena. */
static int arena_part(const mlrt_ps *ps, const part *p, int rg)
{
	int b = ps->backup[rg];

	return p->n > 0 && p->nvals * sizeof(float) >= ps->arena_min &&
	       (ps->arena_ok[ps->primary[rg]] || (b >= 0 && ps->arena_ok[b]));
}

/* Bytes part p takes in the arena: its values, up to a cache line. */
static size_t region_bytes(const part *p)
{
	return (p->nvals * sizeof(float) + 63) / 64 * 64;
}

/* Copy the values of push q (ticket t) for servers that read the arena
 * into one region of it, waiting for older requests to give theirs back
 * when it is full; values that do not fit at all go over the sockets. */
static int to_arena(mlrt_ps *ps, request *q, int64_t t, const float *vals)
{
	size_t need = 0;
	int64_t off;

	q->arena_end = 0;
	for (int rg = 0; rg < ps->nservers; rg++) {
		q->parts[rg].arena_off = -1;
		if (arena_part(ps, &q->parts[rg], rg))
			need += region_bytes(&q->parts[rg]);
	}
	if (need == 0)
		return MLRT_OK;
	while ((off = mlrti_ps_arena_take(&ps->arena, need, &q->arena_end)) < 0 &&
	       ps->done_upto < t - 1) {
		int rc = complete_upto(ps, ps->done_upto + 1);

		if (rc != MLRT_OK)
			return rc;
	}
	if (off < 0)
		return MLRT_OK; /* larger than the arena */
	for (int rg = 0; rg < ps->nservers; rg++) {
		part *p = &q->parts[rg];
		char *dst = ps->arena.base + off;

		if (!arena_part(ps, p, rg))
			continue;
		p->arena_off = off;
		for (size_t k = 0; k < p->n; k++) {
			size_t bytes = p->lens[k] * sizeof(float);

			memcpy(dst, vals + q->offset[p->idx[k]], bytes);
			dst += bytes;
		}
		off += (int64_t)region_bytes(p);
	}
	return MLRT_OK;
}

/* Start op with keys (every server when all is set, else those holding
 * some); *ticket gets its ticket. */
static int start(mlrt_ps *ps, int op, int all, const uint64_t *keys, size_t nkeys,
                 const float *in, float *out, const size_t *lens, int64_t *ticket)
{
	int64_t t;
	request *q;
	int rc;

	if (ps->broken) {
		mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: the handle is unusable after a timeout; "
		         "close it", ps->worker);
		return MLRT_ERR_TIMEOUT;
	}
	t = ps->next_ticket;
	if (t - ps->done_upto > MLRT_PS_MAX_INFLIGHT)
		MLRTI_CHECK_GOTO(complete_upto(ps, t - MLRT_PS_MAX_INFLIGHT), rc, out);
	q = &ps->slot[t % MLRT_PS_MAX_INFLIGHT];
	MLRTI_CHECK_GOTO(split(ps, q, keys, nkeys, lens), rc, out);
	if (pushes(op))
		MLRTI_CHECK_GOTO(to_arena(ps, q, t, in), rc, out);
	q->ticket = t;
	q->op = op;
	q->out = out;
	q->in = in;
	q->status = MLRT_OK;
	q->pending = 0;
	ps->next_ticket++;
	for (int rg = 0; rg < ps->nservers; rg++) {
		part *p = &q->parts[rg];

		p->waiting = 0;
		p->copy_waiting = 0;
		p->pull_waiting = 0;
		p->copy = -1;
		if (!all && p->n == 0)
			continue;
		if (!keyed(op) && serves_earlier(ps, rg))
			continue; /* hello and bye: once per server */
		p->seq = pushes(op) ? ++ps->seq[rg] : 0;
		p->clock = ps->clock;
		p->waiting = 1;
		p->pull_waiting = op == OP_PUSHPULL && p->n > 0;
		rc = send_part(ps, q, rg, in);
		if (rc != MLRT_OK) {
			mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: cannot send to server %d", ps->worker,
			         ps->primary[rg]);
			fail_request(q, rc);
			p->waiting = p->copy_waiting = p->pull_waiting = 0;
			continue;
		}
		q->pending++;
	}
	if (pushes(op))
		ps->clock++;
	*ticket = t;
	rc = MLRT_OK;
out:
	return rc;
}

static int wait_ticket(mlrt_ps *ps, int64_t ticket)
{
	int rc = complete_upto(ps, ticket);

	if (rc == MLRT_OK)
		rc = ps->error;
	ps->error = MLRT_OK;
	return rc;
}

/* Start op and wait for it. */
static int round_trip(mlrt_ps *ps, int op, int all, const uint64_t *keys, size_t nkeys,
                      const float *in, float *out, const size_t *lens)
{
	int64_t t;
	int rc = start(ps, op, all, keys, nkeys, in, out, lens, &t);

	return rc != MLRT_OK ? rc : wait_ticket(ps, t);
}

/* ---- the API ---- */

static int check_args(const mlrt_ps *ps, const uint64_t *keys, size_t nkeys, const void *vals,
                      const size_t *lens)
{
	return ps == NULL || (nkeys > 0 && (keys == NULL || lens == NULL || vals == NULL))
	               ? MLRT_ERR_INVALID
	               : MLRT_OK;
}

/* SYNC and BOUNDED count steps: every server hears of every push. */
static int push_to_all(const mlrt_ps *ps)
{
	return ps->opts.consistency != MLRT_PS_ASYNC;
}

int mlrt_ps_push_async(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, const float *vals,
                       const size_t *lens, int64_t *ticket)
{
	int rc = check_args(ps, keys, nkeys, vals, lens);

	if (rc != MLRT_OK || ticket == NULL)
		return rc != MLRT_OK ? rc : MLRT_ERR_INVALID;
	return start(ps, MLRTI_PS_PUSH, push_to_all(ps), keys, nkeys, vals, NULL, lens, ticket);
}

int mlrt_ps_pull_async(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, float *vals,
                       const size_t *lens, int64_t *ticket)
{
	int rc = check_args(ps, keys, nkeys, vals, lens);

	if (rc != MLRT_OK || ticket == NULL)
		return rc != MLRT_OK ? rc : MLRT_ERR_INVALID;
	return start(ps, MLRTI_PS_PULL, 0, keys, nkeys, NULL, vals, lens, ticket);
}

/* A push+pull's arguments: those of a push, and out apart from vals. */
static int check_push_pull(const mlrt_ps *ps, const uint64_t *keys, size_t nkeys,
                           const float *vals, const float *out, const size_t *lens)
{
	size_t n = 0;

	if (check_args(ps, keys, nkeys, vals, lens) != MLRT_OK || (nkeys > 0 && out == NULL))
		return MLRT_ERR_INVALID;
	for (size_t i = 0; i < nkeys; i++)
		n += lens[i];
	if (n > 0 && out < vals + n && vals < out + n) {
		mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: mlrt_ps_push_pull: out overlaps the pushed "
		         "values; pass a buffer of its own", ps->worker);
		return MLRT_ERR_INVALID;
	}
	return MLRT_OK;
}

int mlrt_ps_push_pull_async(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, const float *vals,
                            float *out, const size_t *lens, int64_t *ticket)
{
	int rc = check_push_pull(ps, keys, nkeys, vals, out, lens);

	if (rc != MLRT_OK || ticket == NULL)
		return rc != MLRT_OK ? rc : MLRT_ERR_INVALID;
	return start(ps, OP_PUSHPULL, push_to_all(ps), keys, nkeys, vals, out, lens, ticket);
}

int mlrt_ps_push_pull(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, const float *vals,
                      float *out, const size_t *lens)
{
	int rc = check_push_pull(ps, keys, nkeys, vals, out, lens);

	return rc != MLRT_OK ? rc
	                     : round_trip(ps, OP_PUSHPULL, push_to_all(ps), keys, nkeys, vals, out,
	                                  lens);
}

int mlrt_ps_wait(mlrt_ps *ps, int64_t ticket)
{
	if (ps == NULL || ticket < 0 || ticket >= ps->next_ticket)
		return MLRT_ERR_INVALID;
	return wait_ticket(ps, ticket);
}

int mlrt_ps_push(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, const float *vals,
                 const size_t *lens)
{
	int rc = check_args(ps, keys, nkeys, vals, lens);

	return rc != MLRT_OK ? rc
	                     : round_trip(ps, MLRTI_PS_PUSH, push_to_all(ps), keys, nkeys, vals,
	                                  NULL, lens);
}

int mlrt_ps_pull(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, float *vals,
                 const size_t *lens)
{
	int rc = check_args(ps, keys, nkeys, vals, lens);

	return rc != MLRT_OK ? rc : round_trip(ps, MLRTI_PS_PULL, 0, keys, nkeys, NULL, vals, lens);
}

int mlrt_ps_init(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, const size_t *lens)
{
	static const float none;
	int rc = check_args(ps, keys, nkeys, &none, lens);

	return rc != MLRT_OK ? rc : round_trip(ps, MLRTI_PS_INIT, 0, keys, nkeys, NULL, NULL, lens);
}

/* Connect to server s at the address it published in the store (again,
 * when a restarted server published a new one). */
static int connect_server(mlrt_ps *ps, mlrt_store *st, const char *prefix, int s, int timeout)
{
	char key[512], endpoint[MLRTI_PS_ENDPOINT_MAX];
	const char *keys[1] = {key};
	void *addr = NULL;
	size_t len;
	int rc, zero = 0;

	snprintf(key, sizeof(key), "%sps/server/%d", prefix, s);
	rc = mlrt_store_wait(st, keys, 1, timeout);
	if (rc == MLRT_OK)
		rc = mlrt_store_get(st, key, &addr, &len);
	if (rc != MLRT_OK) {
		mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: server %d did not publish its address: %s",
		         ps->worker, s, mlrt_strerror(rc));
		return rc;
	}
	if (ps->sock[s] != NULL && strcmp(ps->addr[s], addr) == 0) {
		free(addr);
		return MLRT_OK;
	}
	if (ps->sock[s] != NULL)
		zmq_close(ps->sock[s]);
	ps->sock[s] = NULL;
	snprintf(ps->addr[s], sizeof(ps->addr[s]), "%s", (char *)addr);
	rc = mlrti_ps_endpoint(addr, endpoint, sizeof(endpoint));
	free(addr);
	if (rc != MLRT_OK)
		return rc;
	/* A new process there: it has not mapped the arena (no hello). */
	ps->arena_ok[s] = 0;
	ps->local[s] = strncmp(endpoint, "ipc://", 6) == 0;
	ps->sock[s] = zmq_socket(ps->zctx, ZMQ_DEALER);
	if (ps->sock[s] == NULL || zmq_setsockopt(ps->sock[s], ZMQ_LINGER, &zero, sizeof(zero)) ||
	    zmq_connect(ps->sock[s], endpoint) != 0) {
		mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: cannot connect to server %d at %s: %s",
		         ps->worker, s, endpoint, zmq_strerror(zmq_errno()));
		rc = MLRT_ERR_UNAVAILABLE;
	}
	return rc;
}

/* A worker with servers on its machine pushes large values to them
 * through an arena (MLRT_PS_SHM=0: never; MLRT_PS_SHM_MIB: its size;
 * MLRT_PS_SHM_MIN: the smallest values of a range that go there). */
static int open_arena(mlrt_ps *ps)
{
	int64_t on, mib, min;
	int any = 0;

	for (int s = 0; s < ps->nservers; s++)
		any |= ps->local[s];
	if (mlrti_env_int("MLRT_PS_SHM", 0, 1, 1, &on) != MLRT_OK ||
	    mlrti_env_int("MLRT_PS_SHM_MIB", 1, 1 << 20, ARENA_MIB_DEF, &mib) != MLRT_OK ||
	    mlrti_env_int("MLRT_PS_SHM_MIN", 4, INT64_MAX, ARENA_MIN_DEF, &min) != MLRT_OK)
		return MLRT_ERR_INVALID;
	ps->arena_min = (size_t)min;
	if (on && any && ps->worker < ps->nworkers) /* the evaluator only pulls */
		mlrti_ps_arena_open(&ps->arena, (size_t)mib << 20); /* else over the sockets */
	return MLRT_OK;
}

int mlrt_ps_open_opts(mlrt_ctx *ctx, const mlrt_ps_opts *o, mlrt_ps **out)
{
	mlrt_store *st;
	mlrt_ps *ps;
	int rc;

	if (ctx == NULL || out == NULL)
		return MLRT_ERR_INVALID;
	*out = NULL;
	if (mlrti_ctx_is_server(ctx) || mlrti_ctx_num_servers(ctx) == 0) {
		mlrt_log(MLRT_LOG_ERROR, "ps: mlrt_ps_open needs a worker of a job with servers "
		                         "(mlrun --servers S -np W PROG)");
		return mlrti_ctx_is_server(ctx) ? MLRT_ERR_INVALID : MLRT_ERR_UNAVAILABLE;
	}
	st = mlrt_ctx_store(ctx);
	ps = calloc(1, sizeof(*ps));
	if (ps == NULL)
		return MLRT_ERR_NOMEM;
	if (o != NULL)
		ps->opts = *o;
	else
		mlrt_ps_opts_init(&ps->opts);
	if (ps->opts.timeout_ms <= 0)
		ps->opts.timeout_ms = mlrti_ctx_timeout_ms(ctx);
	ps->ctx = ctx;
	/* The evaluator speaks as worker number nworkers. */
	ps->nworkers = mlrti_ctx_num_workers(ctx);
	ps->worker = mlrti_ctx_is_evaluator(ctx) ? ps->nworkers : mlrt_rank(ctx);
	ps->nservers = mlrti_ctx_num_servers(ctx);
	ps->done_upto = -1;
	for (int i = 0; i < MLRT_PS_MAX_INFLIGHT; i++)
		ps->slot[i].ticket = -1;
	ps->replicas = mlrti_ctx_ps_replicas(ctx);
	ps->store = st;
	snprintf(ps->prefix, sizeof(ps->prefix), "%s", mlrti_ctx_gen_prefix(ctx));
	ps->sock = calloc((size_t)ps->nservers, sizeof(*ps->sock));
	ps->primary = calloc((size_t)ps->nservers, sizeof(*ps->primary));
	ps->backup = calloc((size_t)ps->nservers, sizeof(*ps->backup));
	ps->backup_epoch = calloc((size_t)ps->nservers, sizeof(*ps->backup_epoch));
	ps->seq = calloc((size_t)ps->nservers, sizeof(*ps->seq));
	ps->moved_at = calloc((size_t)ps->nservers, sizeof(*ps->moved_at));
	ps->addr = calloc((size_t)ps->nservers, sizeof(*ps->addr));
	ps->moved_from = calloc((size_t)ps->nservers, sizeof(*ps->moved_from));
	ps->local = calloc((size_t)ps->nservers, sizeof(*ps->local));
	ps->arena_ok = calloc((size_t)ps->nservers, sizeof(*ps->arena_ok));
	ps->arena.fd = -1;
	ps->zctx = zmq_ctx_new();
	if (ps->sock == NULL || ps->primary == NULL || ps->backup == NULL ||
	    ps->backup_epoch == NULL || ps->seq == NULL || ps->local == NULL ||
	    ps->arena_ok == NULL || ps->moved_at == NULL ||
	    ps->addr == NULL || ps->moved_from == NULL || ps->zctx == NULL) {
		rc = MLRT_ERR_NOMEM;
		goto fail;
	}
	/* Server s answers for range s; its backup is server s+1 (the servers
	 * correct this in their answers to pushes). */
	for (int s = 0; s < ps->nservers; s++) {
		ps->primary[s] = s;
		ps->backup[s] = ps->replicas > 0 && ps->nservers > 1 ? (s + 1) % ps->nservers : -1;
	}
	for (int s = 0; s < ps->nservers; s++)
		MLRTI_CHECK_GOTO(connect_server(ps, st, mlrti_ctx_gen_prefix(ctx), s,
		                                ps->opts.timeout_ms),
		                 rc, fail);
	MLRTI_CHECK_GOTO(open_arena(ps), rc, fail);
	MLRTI_CHECK_GOTO(round_trip(ps, MLRTI_PS_HELLO, 1, NULL, 0, NULL, NULL, NULL), rc, fail);
	ps->opened = 1;
	*out = ps;
	return MLRT_OK;
fail:
	mlrt_ps_close(ps);
	return rc;
}

int mlrt_ps_open(mlrt_ctx *ctx, mlrt_ps **ps)
{
	return mlrt_ps_open_opts(ctx, NULL, ps);
}

int mlrt_ps_close(mlrt_ps *ps)
{
	int rc = MLRT_OK;

	if (ps == NULL)
		return MLRT_OK;
	if (ps->opened && !ps->broken) {
		if (ps->next_ticket > 0)
			wait_ticket(ps, ps->next_ticket - 1); /* what the caller never waited for */
	}
	/* Servers end once every worker has said goodbye; the evaluator's is
	 * not waited for (the servers may be gone by then). */
	if (ps->opened && !ps->broken && ps->worker < ps->nworkers) {
		char key[300];

		rc = round_trip(ps, MLRTI_PS_BYE, 1, NULL, 0, NULL, NULL, NULL);
		/* Counted in the store too, for servers this worker did not talk
		 * to (one started again after a death). */
		snprintf(key, sizeof(key), "%sps/closed", ps->prefix);
		mlrt_store_add(ps->store, key, 1, NULL);
	}
	for (int s = 0; ps->sock != NULL && s < ps->nservers; s++)
		if (ps->sock[s] != NULL)
			zmq_close(ps->sock[s]);
	if (ps->zctx != NULL)
		zmq_ctx_term(ps->zctx);
	mlrti_ps_arena_close(&ps->arena);
	for (int i = 0; i < MLRT_PS_MAX_INFLIGHT; i++) {
		request *q = &ps->slot[i];

		for (int s = 0; q->parts != NULL && s < ps->nservers; s++) {
			free(q->parts[s].keys);
			free(q->parts[s].lens);
			free(q->parts[s].idx);
		}
		free(q->parts);
		free(q->offset);
	}
	free(ps->sock);
	free(ps->primary);
	free(ps->backup);
	free(ps->backup_epoch);
	free(ps->seq);
	free(ps->moved_at);
	free(ps->addr);
	free(ps->moved_from);
	free(ps->local);
	free(ps->arena_ok);
	free(ps);
	return rc;
}
