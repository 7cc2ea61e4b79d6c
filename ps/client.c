/* The worker's side of the parameter server: one DEALER socket per
 * server.  A push or pull splits its keys by server (key ranges), sends
 * one request to each server at once and waits for every reply.  Values
 * a server's keys take in one run of the caller's array go out without a
 * copy (ZeroMQ holds the caller's memory until it has sent it; the call
 * returns only after that).  See docs/ps.md. */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include <mlrt/ps.h>
#include <mlrt/store.h>

#include "ps/proto.h"
#include "runtime/common.h"
#include "runtime/ctx.h"

#define DEFAULT_TIMEOUT_MS 300000

/* One server's share of a request. */
typedef struct part {
	size_t n;        /* keys */
	size_t first;    /* index of its first key in the caller's arrays */
	size_t nvals;    /* floats */
	int contiguous;  /* its keys are one run in the caller's arrays */
	uint64_t *keys;  /* n keys and n lens, for the wire */
	uint64_t *lens;
	size_t *idx;     /* the caller's index of each of its keys */
} part;

struct mlrt_ps {
	mlrt_ctx *ctx;
	void *zctx;
	void **sock;
	int nservers, worker, nworkers;
	mlrt_ps_opts opts;
	uint64_t next_id;
	int64_t clock;    /* pushes done */
	int opened;       /* every server said hello back */
	atomic_int lent;  /* caller buffers ZeroMQ still holds */
	part *parts;      /* [nservers] */
	size_t *offset;   /* [n] value offset of each caller key */
	size_t cap;
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
	return ctx != NULL && mlrti_ctx_is_server(ctx) ? MLRT_ROLE_SERVER : MLRT_ROLE_WORKER;
}

/* ---- splitting a request by server ---- */

static int reserve(mlrt_ps *ps, size_t n)
{
	if (n <= ps->cap)
		return MLRT_OK;
	size_t cap = n < 64 ? 64 : n;

	free(ps->offset);
	ps->offset = malloc(cap * sizeof(*ps->offset));
	if (ps->offset == NULL)
		goto nomem;
	for (int s = 0; s < ps->nservers; s++) {
		part *p = &ps->parts[s];

		free(p->keys);
		free(p->lens);
		free(p->idx);
		p->keys = malloc(cap * sizeof(*p->keys));
		p->lens = malloc(cap * sizeof(*p->lens));
		p->idx = malloc(cap * sizeof(*p->idx));
		if (p->keys == NULL || p->lens == NULL || p->idx == NULL)
			goto nomem;
	}
	ps->cap = cap;
	return MLRT_OK;
nomem:
	ps->cap = 0;
	return MLRT_ERR_NOMEM;
}

static int split(mlrt_ps *ps, const uint64_t *keys, size_t n, const size_t *lens)
{
	size_t off = 0;

	if (n > MLRTI_PS_MAX_KEYS || reserve(ps, n) != MLRT_OK)
		return n > MLRTI_PS_MAX_KEYS ? MLRT_ERR_TOO_LARGE : MLRT_ERR_NOMEM;
	for (int s = 0; s < ps->nservers; s++) {
		ps->parts[s].n = 0;
		ps->parts[s].nvals = 0;
		ps->parts[s].contiguous = 1;
	}
	for (size_t i = 0; i < n; i++) {
		part *p = &ps->parts[mlrti_ps_server_of(keys[i], ps->nservers)];

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
		ps->offset[i] = off;
		off += lens[i];
	}
	return MLRT_OK;
}

/* ---- sending and receiving ---- */

static void give_back(void *data, void *hint)
{
	(void)data;
	atomic_fetch_sub((atomic_int *)hint, 1);
}

static int send_frame(void *sock, const void *p, size_t len, int more)
{
	return zmq_send(sock, p, len, more ? ZMQ_SNDMORE : 0) < 0 ? MLRT_ERR_IO : MLRT_OK;
}

/* Send h to server s with its share of keys, and for a push the values. */
static int send_request(mlrt_ps *ps, int s, mlrti_ps_hdr *h, const float *vals)
{
	const part *p = &ps->parts[s];
	char buf[1024];
	size_t len;
	int push = h->op == MLRTI_PS_PUSH, keyed = push || h->op == MLRTI_PS_PULL ||
	                                              h->op == MLRTI_PS_INIT;
	int rc;

	h->nkeys = keyed ? p->n : 0;
	MLRTI_CHECK_GOTO(mlrti_ps_hdr_encode(h, 0, buf, sizeof(buf), &len), rc, out);
	MLRTI_CHECK_GOTO(send_frame(ps->sock[s], buf, len, keyed), rc, out);
	if (!keyed)
		return MLRT_OK;
	MLRTI_CHECK_GOTO(send_frame(ps->sock[s], p->keys, p->n * 8, 1), rc, out);
	MLRTI_CHECK_GOTO(send_frame(ps->sock[s], p->lens, p->n * 8, push), rc, out);
	if (!push)
		return MLRT_OK;
	zmq_msg_t m;

	if (p->contiguous && p->n > 0) {
		/* The caller's memory, without a copy. */
		atomic_fetch_add(&ps->lent, 1);
		if (zmq_msg_init_data(&m, (void *)(vals + ps->offset[p->first]),
		                      p->nvals * sizeof(float), give_back, &ps->lent) != 0) {
			atomic_fetch_sub(&ps->lent, 1);
			return MLRT_ERR_NOMEM;
		}
	} else {
		if (zmq_msg_init_size(&m, p->nvals * sizeof(float)) != 0)
			return MLRT_ERR_NOMEM;
		float *out = zmq_msg_data(&m);

		for (size_t k = 0; k < p->n; k++) {
			memcpy(out, vals + ps->offset[p->idx[k]], p->lens[k] * sizeof(float));
			out += p->lens[k];
		}
	}
	if (zmq_msg_send(&m, ps->sock[s], 0) < 0) {
		zmq_msg_close(&m);
		return MLRT_ERR_IO;
	}
	rc = MLRT_OK;
out:
	return rc;
}

/* Receive the reply of server s to request id; a pull's values go to
 * vals.  Waits at most until deadline (ms). */
static int receive_reply(mlrt_ps *ps, int s, uint64_t id, float *vals, int64_t deadline)
{
	zmq_pollitem_t item = {.socket = ps->sock[s], .events = ZMQ_POLLIN};
	char buf[MLRTI_PS_MAX_HEADER], why[MLRTI_PS_MSG_MAX];
	const part *p = &ps->parts[s];
	mlrti_ps_hdr h;
	int n, more = 0;
	size_t morelen = sizeof(more);
	int64_t left = deadline - mlrti_now_ms();

	if (left < 0 || zmq_poll(&item, 1, (long)left) <= 0) {
		mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: server %d did not answer within %d ms",
		         ps->worker, s, ps->opts.timeout_ms);
		return MLRT_ERR_TIMEOUT;
	}
	n = zmq_recv(ps->sock[s], buf, sizeof(buf), 0);
	zmq_getsockopt(ps->sock[s], ZMQ_RCVMORE, &more, &morelen);
	if (n < 0 || mlrti_ps_hdr_decode(buf, (size_t)n, &h, why, sizeof(why)) != MLRT_OK ||
	    h.id != id) {
		mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: a malformed reply from server %d", ps->worker,
		         s);
		return MLRT_ERR_PROTOCOL;
	}
	if (h.status != MLRT_OK) {
		mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: server %d: %s", ps->worker, s,
		         h.msg[0] ? h.msg : mlrt_strerror(h.status));
		while (more) { /* drop what follows */
			zmq_msg_t m;

			zmq_msg_init(&m);
			zmq_msg_recv(&m, ps->sock[s], 0);
			more = zmq_msg_more(&m);
			zmq_msg_close(&m);
		}
		return h.status;
	}
	if (vals == NULL)
		return MLRT_OK;
	zmq_msg_t m;
	int rc = MLRT_OK;

	zmq_msg_init(&m);
	if (!more || zmq_msg_recv(&m, ps->sock[s], 0) < 0 ||
	    zmq_msg_size(&m) != p->nvals * sizeof(float)) {
		mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: server %d sent values of the wrong size",
		         ps->worker, s);
		rc = MLRT_ERR_PROTOCOL;
	} else if (p->contiguous && p->n > 0) {
		memcpy(vals + ps->offset[p->first], zmq_msg_data(&m), zmq_msg_size(&m));
	} else {
		const float *in = zmq_msg_data(&m);

		for (size_t k = 0; k < p->n; k++) {
			memcpy(vals + ps->offset[p->idx[k]], in, p->lens[k] * sizeof(float));
			in += p->lens[k];
		}
	}
	zmq_msg_close(&m);
	return rc;
}

/* Send op to the servers that have keys in it (every server when all is
 * set), then collect every reply.  The first error wins. */
static int round_trip(mlrt_ps *ps, mlrti_ps_op op, int all, const float *in, float *out)
{
	int64_t deadline = mlrti_now_ms() + ps->opts.timeout_ms;
	uint64_t ids[ps->nservers];
	int sent[ps->nservers], rc = MLRT_OK;

	for (int s = 0; s < ps->nservers; s++) {
		mlrti_ps_hdr h = {
			.op = op,
			.id = ps->next_id++,
			.worker = ps->worker,
			.nworkers = ps->nworkers,
			.clock = ps->clock,
			.has_opts = op == MLRTI_PS_HELLO,
			.opts = ps->opts,
		};

		ids[s] = h.id;
		sent[s] = all || ps->parts[s].n > 0;
		if (sent[s] && rc == MLRT_OK) {
			rc = send_request(ps, s, &h, in);
			if (rc != MLRT_OK) {
				mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: cannot send to server %d",
				         ps->worker, s);
				sent[s] = 0;
			}
		} else {
			sent[s] = sent[s] && rc == MLRT_OK;
		}
	}
	for (int s = 0; s < ps->nservers; s++) {
		if (!sent[s])
			continue;
		int r = receive_reply(ps, s, ids[s], out, deadline);

		if (rc == MLRT_OK)
			rc = r;
		if (r == MLRT_ERR_TIMEOUT)
			break; /* the socket now holds a late reply: the handle is unusable */
	}
	/* ZeroMQ lets go of the caller's values once sent, which a reply
	 * implies; wait for the release itself before handing them back. */
	while (atomic_load(&ps->lent) > 0 && mlrti_now_ms() < deadline)
		sched_yield();
	return rc;
}

/* ---- the API ---- */

static int check_args(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, const void *vals,
                      const size_t *lens)
{
	if (ps == NULL || (nkeys > 0 && (keys == NULL || lens == NULL || vals == NULL)))
		return MLRT_ERR_INVALID;
	return split(ps, keys, nkeys, lens);
}

int mlrt_ps_push(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, const float *vals,
                 const size_t *lens)
{
	int rc = check_args(ps, keys, nkeys, vals, lens);

	if (rc != MLRT_OK)
		return rc;
	/* SYNC and BOUNDED count steps: every server hears of every push. */
	rc = round_trip(ps, MLRTI_PS_PUSH, ps->opts.consistency != MLRT_PS_ASYNC, vals, NULL);
	if (rc == MLRT_OK)
		ps->clock++;
	return rc;
}

int mlrt_ps_pull(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, float *vals,
                 const size_t *lens)
{
	int rc = check_args(ps, keys, nkeys, vals, lens);

	return rc != MLRT_OK ? rc : round_trip(ps, MLRTI_PS_PULL, 0, NULL, vals);
}

int mlrt_ps_init(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, const size_t *lens)
{
	static const float none;
	int rc = check_args(ps, keys, nkeys, &none, lens);

	return rc != MLRT_OK ? rc : round_trip(ps, MLRTI_PS_INIT, 0, NULL, NULL);
}

/* Connect to server s at the address it published in the store. */
static int connect_server(mlrt_ps *ps, mlrt_store *st, const char *prefix, int s, int timeout)
{
	char key[512];
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
	ps->sock[s] = zmq_socket(ps->zctx, ZMQ_DEALER);
	if (ps->sock[s] == NULL || zmq_setsockopt(ps->sock[s], ZMQ_LINGER, &zero, sizeof(zero)) ||
	    zmq_connect(ps->sock[s], addr) != 0) {
		mlrt_log(MLRT_LOG_ERROR, "ps: worker %d: cannot connect to server %d at %s: %s",
		         ps->worker, s, (char *)addr, zmq_strerror(zmq_errno()));
		rc = MLRT_ERR_UNAVAILABLE;
	}
	free(addr);
	return rc;
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
	ps->worker = mlrt_rank(ctx);
	ps->nworkers = mlrt_size(ctx);
	ps->nservers = mlrti_ctx_num_servers(ctx);
	ps->next_id = 1;
	ps->sock = calloc((size_t)ps->nservers, sizeof(*ps->sock));
	ps->parts = calloc((size_t)ps->nservers, sizeof(*ps->parts));
	ps->zctx = zmq_ctx_new();
	if (ps->sock == NULL || ps->parts == NULL || ps->zctx == NULL) {
		rc = MLRT_ERR_NOMEM;
		goto fail;
	}
	for (int s = 0; s < ps->nservers; s++)
		MLRTI_CHECK_GOTO(connect_server(ps, st, mlrti_ctx_gen_prefix(ctx), s,
		                                ps->opts.timeout_ms),
		                 rc, fail);
	MLRTI_CHECK_GOTO(split(ps, NULL, 0, NULL), rc, fail);
	MLRTI_CHECK_GOTO(round_trip(ps, MLRTI_PS_HELLO, 1, NULL, NULL), rc, fail);
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
	if (ps->opened) {
		split(ps, NULL, 0, NULL);
		rc = round_trip(ps, MLRTI_PS_BYE, 1, NULL, NULL);
	}
	for (int s = 0; ps->sock != NULL && s < ps->nservers; s++)
		if (ps->sock[s] != NULL)
			zmq_close(ps->sock[s]);
	if (ps->zctx != NULL)
		zmq_ctx_term(ps->zctx);
	for (int s = 0; ps->parts != NULL && s < ps->nservers; s++) {
		free(ps->parts[s].keys);
		free(ps->parts[s].lens);
		free(ps->parts[s].idx);
	}
	free(ps->parts);
	free(ps->offset);
	free(ps->sock);
	free(ps);
	return rc;
}
