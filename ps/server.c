/* The parameter server: one thread serving one ZeroMQ ROUTER socket.
 *
 * Keys live in a hash table (uthash).  A push is applied at once (ASYNC,
 * BOUNDED) or queued per worker until every worker's push of the step is
 * in (SYNC), then summed key by key in worker order and applied once, so
 * the result does not depend on arrival order.  Pulls that may not be
 * answered yet (SYNC: the step is not applied; BOUNDED: the worker is too
 * far ahead of the slowest) wait in a list that is looked at again after
 * every applied push.  See docs/ps.md. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uthash.h>
#include <zmq.h>

#include <mlrt/ps.h>
#include <mlrt/store.h>

#include "ps/optim.h"
#include "ps/proto.h"
#include "runtime/common.h"
#include "runtime/ctx.h"

#define POLL_MS 200
#define ABORT_CHECK_MS 1000
#define MAX_FRAMES 5 /* routing id, header, keys, lens, vals */

typedef struct ps_key {
	uint64_t key;
	size_t len;
	float *w;         /* the values */
	float *state;     /* the optimizer's, mlrti_optim_state_floats() * len */
	float *acc;       /* SYNC: sum of the step's pushes */
	int64_t acc_step; /* the step acc holds, -1: none */
	int64_t t;        /* updates applied */
	UT_hash_handle hh;
} ps_key;

/* A request kept for later: a queued SYNC push or a waiting pull. */
typedef struct held {
	zmq_msg_t f[MAX_FRAMES];
	int nf;
	mlrti_ps_hdr h;
	struct held *next;
} held;

typedef struct server {
	void *zctx, *sock;
	mlrt_store *store;
	char prefix[256]; /* "<job>/g<gen>/" */
	int index, nservers, nworkers;
	mlrt_ps_opts opts;
	int have_opts;
	ps_key *keys;
	int *left;
	int nleft;
	int64_t *clock;   /* pushes received from each worker */
	held **queue;     /* SYNC: each worker's pushes not yet applied (FIFO) */
	int64_t applied;  /* SYNC: steps applied */
	held *waiting;    /* pulls that wait */
	ps_key **touched; /* SYNC: keys of the step being applied */
	size_t ntouched, cap_touched;
	int64_t max_lead; /* BOUNDED: largest lead over the slowest at a served pull */
} server;

static void held_free(held *r)
{
	for (int i = 0; i < r->nf; i++)
		zmq_msg_close(&r->f[i]);
	free(r);
}

/* ---- keys ---- */

static void key_free(ps_key *k)
{
	free(k->w);
	free(k->state);
	free(k->acc);
	free(k);
}

/* Find key, creating it with len floats from the options' init when
 * absent.  MLRT_ERR_INVALID (why filled) when it has another length. */
static int key_get(server *s, uint64_t key, size_t len, ps_key **out, char *why, size_t whylen)
{
	size_t nstate = mlrti_optim_state_floats(s->opts.optimizer) * len;
	ps_key *k;

	HASH_FIND(hh, s->keys, &key, sizeof(key), k);
	if (k != NULL) {
		if (k->len != len) {
			snprintf(why, whylen, "key %" PRIu64 " holds %zu floats, not %zu", key, k->len,
			         len);
			return MLRT_ERR_INVALID;
		}
		*out = k;
		return MLRT_OK;
	}
	k = calloc(1, sizeof(*k));
	if (k == NULL || (k->w = malloc(len * sizeof(float))) == NULL ||
	    (nstate > 0 && (k->state = calloc(nstate, sizeof(float))) == NULL)) {
		if (k != NULL)
			key_free(k);
		snprintf(why, whylen, "out of memory for key %" PRIu64, key);
		return MLRT_ERR_NOMEM;
	}
	k->key = key;
	k->len = len;
	k->acc_step = -1;
	mlrti_optim_init(&s->opts, key, k->w, len);
	HASH_ADD(hh, s->keys, key, sizeof(k->key), k);
	*out = k;
	return MLRT_OK;
}

/* ---- requests ---- */

/* The payload of a request, checked against its header. */
typedef struct payload {
	const uint64_t *keys;
	const uint64_t *lens;
	const float *vals; /* push only */
	size_t nvals;      /* floats in all */
} payload;

static int check_payload(const held *r, payload *p, char *why, size_t whylen)
{
	size_t n = (size_t)r->h.nkeys, want = r->h.op == MLRTI_PS_PUSH ? 5 : 4;

	memset(p, 0, sizeof(*p));
	if ((size_t)r->nf != want || zmq_msg_size((zmq_msg_t *)&r->f[2]) != n * 8 ||
	    zmq_msg_size((zmq_msg_t *)&r->f[3]) != n * 8) {
		snprintf(why, whylen, "%s of %zu keys with malformed key or length frames",
		         r->h.op == MLRTI_PS_PUSH ? "push" : "request", n);
		return MLRT_ERR_PROTOCOL;
	}
	p->keys = zmq_msg_data((zmq_msg_t *)&r->f[2]);
	p->lens = zmq_msg_data((zmq_msg_t *)&r->f[3]);
	for (size_t i = 0; i < n; i++) {
		if (p->lens[i] == 0 || p->lens[i] > MLRTI_PS_MAX_LEN) {
			snprintf(why, whylen, "key %" PRIu64 " with length %" PRIu64 " (want 1 to %" PRIu64
			         ")", p->keys[i], p->lens[i], MLRTI_PS_MAX_LEN);
			return MLRT_ERR_INVALID;
		}
		p->nvals += p->lens[i];
	}
	if (r->h.op == MLRTI_PS_PUSH) {
		if (zmq_msg_size((zmq_msg_t *)&r->f[4]) != p->nvals * sizeof(float)) {
			snprintf(why, whylen, "push of %zu floats with a %zu-byte value frame", p->nvals,
			         zmq_msg_size((zmq_msg_t *)&r->f[4]));
			return MLRT_ERR_PROTOCOL;
		}
		p->vals = zmq_msg_data((zmq_msg_t *)&r->f[4]);
	}
	return MLRT_OK;
}

/* Create (or check the length of) every key of a request. */
static int touch_keys(server *s, const held *r, const payload *p, char *why, size_t whylen)
{
	for (size_t i = 0; i < r->h.nkeys; i++) {
		ps_key *k;
		int rc = key_get(s, p->keys[i], (size_t)p->lens[i], &k, why, whylen);

		if (rc != MLRT_OK)
			return rc;
	}
	return MLRT_OK;
}

static void reply(server *s, held *r, int status, const char *msg, zmq_msg_t *vals)
{
	char buf[512];
	mlrti_ps_hdr h = {.op = r->h.op, .id = r->h.id, .status = status};
	size_t len;

	if (msg != NULL)
		snprintf(h.msg, sizeof(h.msg), "%s", msg);
	if (mlrti_ps_hdr_encode(&h, 1, buf, sizeof(buf), &len) != MLRT_OK)
		return;
	/* A worker that went away is not an error of the server's. */
	if (zmq_msg_send(&r->f[0], s->sock, ZMQ_SNDMORE) < 0)
		return;
	if (zmq_send(s->sock, buf, len, vals != NULL ? ZMQ_SNDMORE : 0) < 0)
		return;
	if (vals != NULL)
		zmq_msg_send(vals, s->sock, 0);
}

static void apply_push(server *s, const payload *p, size_t nkeys)
{
	const float *g = p->vals;

	for (size_t i = 0; i < nkeys; i++) {
		ps_key *k;
		char why[8];

		/* Created by touch_keys; cannot fail. */
		if (key_get(s, p->keys[i], (size_t)p->lens[i], &k, why, sizeof(why)) != MLRT_OK)
			continue;
		mlrti_optim_apply(&s->opts, k->w, k->state, g, k->len, &k->t);
		g += k->len;
	}
}

static int64_t slowest_clock(const server *s)
{
	int64_t m = INT64_MAX;

	for (int w = 0; w < s->nworkers; w++)
		if (s->clock[w] < m)
			m = s->clock[w];
	return m;
}

/* Whether pull r may be answered now. */
static int pull_ready(const server *s, const held *r)
{
	switch (s->opts.consistency) {
	case MLRT_PS_SYNC: return r->h.clock <= s->applied;
	case MLRT_PS_BOUNDED: return r->h.clock - slowest_clock(s) <= s->opts.staleness;
	default: return 1;
	}
}

static void serve_pull(server *s, held *r)
{
	char why[MLRTI_PS_MSG_MAX];
	payload p;
	zmq_msg_t vals;
	float *out;
	int rc;

	rc = check_payload(r, &p, why, sizeof(why));
	if (rc == MLRT_OK)
		rc = touch_keys(s, r, &p, why, sizeof(why));
	if (rc != MLRT_OK) {
		reply(s, r, rc, why, NULL);
		return;
	}
	if (zmq_msg_init_size(&vals, p.nvals * sizeof(float)) != 0) {
		reply(s, r, MLRT_ERR_NOMEM, "out of memory for the reply", NULL);
		return;
	}
	out = zmq_msg_data(&vals);
	for (size_t i = 0; i < r->h.nkeys; i++) {
		ps_key *k;

		HASH_FIND(hh, s->keys, &p.keys[i], sizeof(uint64_t), k);
		memcpy(out, k->w, k->len * sizeof(float));
		out += k->len;
	}
	if (s->opts.consistency == MLRT_PS_BOUNDED && r->h.clock - slowest_clock(s) > s->max_lead)
		s->max_lead = r->h.clock - slowest_clock(s);
	reply(s, r, MLRT_OK, NULL, &vals);
	zmq_msg_close(&vals);
}

/* Answer every waiting pull that may be answered now. */
static void serve_waiting(server *s)
{
	held **pp = &s->waiting;

	while (*pp != NULL) {
		held *r = *pp;

		if (!pull_ready(s, r)) {
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		serve_pull(s, r);
		held_free(r);
	}
}

static int add_touched(server *s, ps_key *k)
{
	if (s->ntouched == s->cap_touched) {
		size_t cap = s->cap_touched ? 2 * s->cap_touched : 256;
		ps_key **t = realloc(s->touched, cap * sizeof(*t));

		if (t == NULL)
			return MLRT_ERR_NOMEM;
		s->touched = t;
		s->cap_touched = cap;
	}
	s->touched[s->ntouched++] = k;
	return MLRT_OK;
}

/* SYNC: apply every step whose pushes are all in: sum each key's values
 * in worker order, then apply the optimizer once per key. */
static int apply_steps(server *s)
{
	for (;;) {
		for (int w = 0; w < s->nworkers; w++)
			if (s->queue[w] == NULL)
				return MLRT_OK;
		s->ntouched = 0;
		for (int w = 0; w < s->nworkers; w++) {
			held *r = s->queue[w];
			char why[8];
			payload p;

			s->queue[w] = r->next;
			if (check_payload(r, &p, why, sizeof(why)) != MLRT_OK) { /* checked when queued */
				held_free(r);
				continue;
			}
			const float *g = p.vals;

			for (size_t i = 0; i < r->h.nkeys; i++) {
				ps_key *k;

				HASH_FIND(hh, s->keys, &p.keys[i], sizeof(uint64_t), k);
				if (k->acc == NULL && (k->acc = malloc(k->len * sizeof(float))) == NULL)
					return MLRT_ERR_NOMEM;
				if (k->acc_step != s->applied) {
					memcpy(k->acc, g, k->len * sizeof(float));
					k->acc_step = s->applied;
					if (add_touched(s, k) != MLRT_OK)
						return MLRT_ERR_NOMEM;
				} else {
					for (size_t j = 0; j < k->len; j++)
						k->acc[j] += g[j];
				}
				g += k->len;
			}
			held_free(r);
		}
		for (size_t i = 0; i < s->ntouched; i++) {
			ps_key *k = s->touched[i];

			mlrti_optim_apply(&s->opts, k->w, k->state, k->acc, k->len, &k->t);
		}
		s->applied++;
	}
}

/* Handle one push; takes ownership of r. */
static void on_push(server *s, held *r)
{
	char why[MLRTI_PS_MSG_MAX];
	payload p;
	int rc, w = r->h.worker;

	rc = check_payload(r, &p, why, sizeof(why));
	if (rc == MLRT_OK && r->h.clock != s->clock[w] && s->opts.consistency != MLRT_PS_ASYNC) {
		snprintf(why, sizeof(why), "push of step %" PRId64 " from worker %d, which is at step "
		         "%" PRId64, r->h.clock, w, s->clock[w]);
		rc = MLRT_ERR_PROTOCOL;
	}
	if (rc == MLRT_OK)
		rc = touch_keys(s, r, &p, why, sizeof(why));
	if (rc != MLRT_OK) {
		reply(s, r, rc, why, NULL);
		held_free(r);
		return;
	}
	s->clock[w]++;
	reply(s, r, MLRT_OK, NULL, NULL);
	if (s->opts.consistency == MLRT_PS_SYNC) {
		held **tail = &s->queue[w];

		while (*tail != NULL)
			tail = &(*tail)->next;
		r->next = NULL;
		*tail = r;
		if (apply_steps(s) != MLRT_OK)
			mlrt_log(MLRT_LOG_ERROR, "ps: server %d: out of memory applying step %" PRId64,
			         s->index, s->applied);
	} else {
		apply_push(s, &p, (size_t)r->h.nkeys);
		held_free(r);
	}
	serve_waiting(s);
}

static void on_hello(server *s, held *r)
{
	char why[MLRTI_PS_MSG_MAX];
	int rc = MLRT_OK;

	if (r->h.nworkers != s->nworkers) {
		snprintf(why, sizeof(why), "worker %d counts %d workers; this server was started for "
		         "%d", r->h.worker, r->h.nworkers, s->nworkers);
		rc = MLRT_ERR_INVALID;
	} else if (!r->h.has_opts) {
		snprintf(why, sizeof(why), "hello without options");
		rc = MLRT_ERR_PROTOCOL;
	} else if (!s->have_opts) {
		rc = mlrti_optim_check(&r->h.opts, why, sizeof(why));
		if (rc == MLRT_OK) {
			s->opts = r->h.opts;
			s->have_opts = 1;
		}
	} else if (memcmp(&s->opts, &r->h.opts, offsetof(mlrt_ps_opts, timeout_ms)) != 0) {
		snprintf(why, sizeof(why), "worker %d opened with other options than the first "
		         "worker; every worker must pass the same mlrt_ps_opts", r->h.worker);
		rc = MLRT_ERR_INVALID;
	}
	reply(s, r, rc, rc == MLRT_OK ? NULL : why, NULL);
	held_free(r);
}

static void on_request(server *s, held *r)
{
	char why[MLRTI_PS_MSG_MAX];
	payload p;
	int rc;

	if (r->h.worker >= s->nworkers) {
		snprintf(why, sizeof(why), "worker %d of a job with %d workers", r->h.worker,
		         s->nworkers);
		reply(s, r, MLRT_ERR_INVALID, why, NULL);
		held_free(r);
		return;
	}
	if (r->h.op == MLRTI_PS_HELLO) {
		on_hello(s, r);
		return;
	}
	if (!s->have_opts) {
		reply(s, r, MLRT_ERR_PROTOCOL, "request before hello", NULL);
		held_free(r);
		return;
	}
	switch (r->h.op) {
	case MLRTI_PS_PUSH:
		on_push(s, r);
		return;
	case MLRTI_PS_PULL:
		if (pull_ready(s, r)) {
			serve_pull(s, r);
			held_free(r);
		} else {
			r->next = s->waiting;
			s->waiting = r;
		}
		return;
	case MLRTI_PS_INIT:
		rc = check_payload(r, &p, why, sizeof(why));
		if (rc == MLRT_OK)
			rc = touch_keys(s, r, &p, why, sizeof(why));
		reply(s, r, rc, rc == MLRT_OK ? NULL : why, NULL);
		break;
	case MLRTI_PS_BYE:
		if (!s->left[r->h.worker]) {
			s->left[r->h.worker] = 1;
			s->nleft++;
		}
		reply(s, r, MLRT_OK, NULL, NULL);
		break;
	default:
		reply(s, r, MLRT_ERR_PROTOCOL, "unknown op", NULL);
	}
	held_free(r);
}

/* Receive one multipart message; NULL (logged) when it is malformed. */
static held *receive(server *s)
{
	char why[MLRTI_PS_MSG_MAX];
	held *r = calloc(1, sizeof(*r));
	int more = 1;

	if (r == NULL)
		return NULL;
	while (more) {
		zmq_msg_t m;

		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, s->sock, 0) < 0) {
			zmq_msg_close(&m);
			break;
		}
		more = zmq_msg_more(&m);
		if (r->nf < MAX_FRAMES)
			r->f[r->nf++] = m;
		else
			zmq_msg_close(&m);
	}
	if (r->nf >= 2 && mlrti_ps_hdr_decode(zmq_msg_data(&r->f[1]), zmq_msg_size(&r->f[1]), &r->h,
	                                      why, sizeof(why)) == MLRT_OK)
		return r;
	mlrt_log(MLRT_LOG_WARN, "ps: server %d: dropped a malformed request (%s)", s->index,
	         r->nf >= 2 ? why : "too few frames");
	if (r->nf >= 2) {
		r->h.op = MLRTI_PS_OP_COUNT; /* echo what we can */
		reply(s, r, MLRT_ERR_PROTOCOL, why, NULL);
	}
	held_free(r);
	return NULL;
}

static int publish(server *s)
{
	char last[256], host[256], key[512], addr[600];
	size_t n = sizeof(last);
	const char *port;

	if (zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, last, &n) != 0 ||
	    (port = strrchr(last, ':')) == NULL || gethostname(host, sizeof(host)) != 0)
		return MLRT_ERR_IO;
	host[sizeof(host) - 1] = '\0';
	snprintf(addr, sizeof(addr), "tcp://%s%s", host, port);
	snprintf(key, sizeof(key), "%sps/server/%d", s->prefix, s->index);
	return mlrt_store_set(s->store, key, addr, strlen(addr));
}

static void server_fini(server *s)
{
	ps_key *k, *tmp;

	HASH_ITER(hh, s->keys, k, tmp) {
		HASH_DEL(s->keys, k);
		key_free(k);
	}
	for (int w = 0; s->queue != NULL && w < s->nworkers; w++)
		while (s->queue[w] != NULL) {
			held *r = s->queue[w];

			s->queue[w] = r->next;
			held_free(r);
		}
	while (s->waiting != NULL) {
		held *r = s->waiting;

		s->waiting = r->next;
		held_free(r);
	}
	if (s->sock != NULL)
		zmq_close(s->sock);
	if (s->zctx != NULL)
		zmq_ctx_term(s->zctx);
	mlrt_store_close(s->store);
	free(s->touched);
	free(s->queue);
	free(s->clock);
	free(s->left);
}

static int server_init(server *s, mlrt_ctx *ctx)
{
	int linger = 2000;

	s->index = mlrt_rank(ctx);
	s->nservers = mlrti_ctx_num_servers(ctx);
	s->nworkers = mlrti_ctx_num_workers(ctx);
	snprintf(s->prefix, sizeof(s->prefix), "%s", mlrti_ctx_gen_prefix(ctx));
	s->left = calloc((size_t)s->nworkers, sizeof(*s->left));
	s->clock = calloc((size_t)s->nworkers, sizeof(*s->clock));
	s->queue = calloc((size_t)s->nworkers, sizeof(*s->queue));
	if (s->left == NULL || s->clock == NULL || s->queue == NULL)
		return MLRT_ERR_NOMEM;
	if (mlrt_store_open(mlrti_ctx_store_addr(ctx), &s->store) != MLRT_OK)
		return MLRT_ERR_UNAVAILABLE;
	s->zctx = zmq_ctx_new();
	s->sock = s->zctx ? zmq_socket(s->zctx, ZMQ_ROUTER) : NULL;
	if (s->sock == NULL || zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof(linger)) != 0 ||
	    zmq_bind(s->sock, "tcp://0.0.0.0:0") != 0) {
		mlrt_log(MLRT_LOG_ERROR, "ps: server %d cannot listen: %s", s->index,
		         zmq_strerror(zmq_errno()));
		return MLRT_ERR_IO;
	}
	return publish(s);
}

int mlrt_ps_serve(mlrt_ctx *ctx)
{
	char abort_key[300];
	server s = {0};
	int64_t next_check = 0;
	int rc;

	if (ctx == NULL || !mlrti_ctx_is_server(ctx)) {
		mlrt_log(MLRT_LOG_ERROR, "ps: mlrt_ps_serve called by a process that is not a "
		                         "parameter server (start the job with mlrun --servers S)");
		return MLRT_ERR_INVALID;
	}
	MLRTI_CHECK_GOTO(server_init(&s, ctx), rc, out);
	snprintf(abort_key, sizeof(abort_key), "%sabort", s.prefix);
	mlrt_log(MLRT_LOG_INFO, "ps: server %d of %d serving %d workers", s.index, s.nservers,
	         s.nworkers);
	while (s.nleft < s.nworkers) {
		zmq_pollitem_t item = {.socket = s.sock, .events = ZMQ_POLLIN};

		if (zmq_poll(&item, 1, POLL_MS) < 0 && zmq_errno() != EINTR) {
			rc = MLRT_ERR_IO;
			goto out;
		}
		if (item.revents & ZMQ_POLLIN) {
			held *r = receive(&s);

			if (r != NULL)
				on_request(&s, r);
		}
		if (mlrti_now_ms() >= next_check) {
			void *why = NULL;
			size_t len;

			next_check = mlrti_now_ms() + ABORT_CHECK_MS;
			if (mlrt_store_get(s.store, abort_key, &why, &len) == MLRT_OK) {
				mlrt_log(MLRT_LOG_ERROR, "ps: server %d: the generation failed (%s)",
				         s.index, (char *)why);
				free(why);
				rc = MLRT_ERR_ABORTED;
				goto out;
			}
		}
	}
	if (s.opts.consistency == MLRT_PS_BOUNDED)
		mlrt_log(MLRT_LOG_INFO, "ps: server %d: every worker has closed; pulls were answered "
		         "at most %" PRId64 " pushes ahead of the slowest worker (staleness %d)",
		         s.index, s.max_lead, s.opts.staleness);
	else
		mlrt_log(MLRT_LOG_INFO, "ps: server %d: every worker has closed", s.index);
	rc = MLRT_OK;
out:
	server_fini(&s);
	return rc;
}
