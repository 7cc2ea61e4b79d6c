/* The parameter server: one thread serving one ZeroMQ ROUTER socket.
 *
 * The key space is cut into one range per server.  Server i is the
 * primary of range i and, with replication (the default with two or more
 * servers), the backup of range i-1: a worker sends each push to the
 * primary and a copy to the backup, and the primary tells the backup in
 * which order to take the copies (replica.c, backup.c).  When a server
 * dies, mlrun marks it down in the store; its backup then answers for its
 * range, and workers send the requests that were in flight again, numbered
 * per range so that none is applied twice.
 *
 * Keys live in one hash table (uthash).  A push is applied at once (ASYNC,
 * BOUNDED) or queued per worker until every worker's push of the step is
 * in (SYNC), then summed key by key in worker order and applied once, so
 * the result does not depend on arrival order, on the primary and on the
 * backup alike.  Pulls that may not be answered yet wait in a list looked
 * at again after every applied push.  See docs/ps.md. */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <limits.h>
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
#include "ps/server.h"
#include "runtime/common.h"
#include "runtime/netaddr.h"
#include "runtime/ctx.h"

#define POLL_MS 50
#define LEND_MIN_BYTES (64 * 1024) /* a pulled key from this size goes out without a copy */
#define ABORT_CHECK_MS 250 /* between looks at the store (abort, workers closed) */
#define DRAIN_MAX 64 /* messages taken from one socket between polls */
#define ORDER_DELAY_MS 2 /* longest wait of an order gathered for a backup */
#define REJOIN_WAIT_MS 10000 /* for a restarted server's backup to take over its range */

void mlrti_ps_held_free(mlrti_ps_held *r)
{
	for (int i = 0; i < r->nf; i++)
		zmq_msg_close(&r->f[i]);
	free(r);
}

int mlrti_ps_held_own(mlrti_ps_held *r)
{
	zmq_msg_t m;

	if (!r->borrowed)
		return MLRT_OK;
	if (zmq_msg_init_size(&m, zmq_msg_size(&r->f[4])) != 0)
		return MLRT_ERR_NOMEM;
	memcpy(zmq_msg_data(&m), zmq_msg_data(&r->f[4]), zmq_msg_size(&m));
	zmq_msg_close(&r->f[4]);
	r->f[4] = m;
	r->borrowed = 0;
	r->h.has_arena = 0;
	return MLRT_OK;
}

/* Push or copy r names its values in the worker's arena: let f[4] show
 * them there.  An error (why filled) for a bad descriptor or an arena the
 * worker did not announce in its hello. */
static int borrow_values(mlrti_ps_server *s, mlrti_ps_held *r, char *why, size_t whylen)
{
	const mlrti_ps_arena_map *m;
	const void *p;
	size_t len;

	if ((r->h.op != MLRTI_PS_PUSH && r->h.op != MLRTI_PS_COPY) || r->nf != 5 ||
	    r->h.worker >= s->nworkers) {
		snprintf(why, whylen, "values by reference outside a worker's push");
		return MLRT_ERR_PROTOCOL;
	}
	m = &s->arenas[r->h.worker];
	if (m->id != r->h.arena) {
		snprintf(why, whylen, "worker %d named shared values this server has not mapped",
		         r->h.worker);
		return MLRT_ERR_PROTOCOL;
	}
	p = mlrti_ps_arena_resolve(m, zmq_msg_data(&r->f[4]), zmq_msg_size(&r->f[4]), &len, why,
	                           whylen);
	if (p == NULL)
		return MLRT_ERR_PROTOCOL;
	zmq_msg_close(&r->f[4]);
	zmq_msg_init_data(&r->f[4], (void *)p, len, NULL, NULL);
	r->borrowed = 1;
	s->borrowed++;
	return MLRT_OK;
}

/* ---- keys ---- */

static mlrti_ps_vals *vals_alloc(size_t len)
{
	mlrti_ps_vals *v = malloc(sizeof(*v) + len * sizeof(float));

	if (v != NULL)
		atomic_init(&v->refs, 1);
	return v;
}

/* Drop a reference to v (ZeroMQ calls this from its thread when it has
 * sent a reply that lent v). */
static void vals_release(void *data, void *hint)
{
	mlrti_ps_vals *v = hint;

	(void)data;
	if (v != NULL && atomic_fetch_sub(&v->refs, 1) == 1)
		free(v);
}

int mlrti_ps_key_writable(mlrti_ps_key *k)
{
	mlrti_ps_vals *v;

	/* Only this thread adds references: one means nobody else holds it. */
	if (atomic_load(&k->vals->refs) == 1)
		return MLRT_OK;
	v = vals_alloc(k->len);
	if (v == NULL) {
		mlrt_log(MLRT_LOG_ERROR, "ps: no memory to update key %" PRIu64 " (%zu floats); the "
		         "update is lost", k->key, k->len);
		return MLRT_ERR_NOMEM;
	}
	memcpy(v->v, k->w, k->len * sizeof(float));
	vals_release(NULL, k->vals);
	k->vals = v;
	k->w = v->v;
	return MLRT_OK;
}

static void key_free(mlrti_ps_key *k)
{
	vals_release(NULL, k->vals);
	free(k->state);
	free(k->acc);
	free(k);
}

/* Find key, creating it with len floats from the options' init when
 * absent.  MLRT_ERR_INVALID (why filled) when it has another length. */
int mlrti_ps_key_get(mlrti_ps_server *s, uint64_t key, size_t len, mlrti_ps_key **out, char *why, size_t whylen)
{
	size_t nstate = mlrti_optim_state_floats(s->opts.optimizer) * len;
	mlrti_ps_key *k;

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
	if (k == NULL || (k->vals = vals_alloc(len)) == NULL ||
	    (nstate > 0 && (k->state = calloc(nstate, sizeof(float))) == NULL)) {
		if (k != NULL)
			key_free(k);
		snprintf(why, whylen, "out of memory for key %" PRIu64, key);
		return MLRT_ERR_NOMEM;
	}
	k->w = k->vals->v;
	k->key = key;
	k->len = len;
	k->acc_step = -1;
	mlrti_optim_init(&s->opts, key, k->w, len);
	HASH_ADD(hh, s->keys, key, sizeof(k->key), k);
	*out = k;
	return MLRT_OK;
}

mlrti_ps_key *mlrti_ps_key_find(mlrti_ps_server *s, uint64_t key)
{
	mlrti_ps_key *k;

	HASH_FIND(hh, s->keys, &key, sizeof(key), k);
	return k;
}

/* ---- requests ---- */

/* The payload of a request, checked against its header.  ZeroMQ gives
 * frames at any alignment: keys and lengths are read with word(), and
 * values that are not float-aligned are copied (server.vals). */
typedef struct payload {
	const unsigned char *keys; /* n uint64 */
	const unsigned char *lens; /* n uint64 */
	const float *vals;         /* push only */
	size_t nvals;              /* floats in all */
} payload;

static uint64_t word(const unsigned char *b, size_t i)
{
	uint64_t v;

	memcpy(&v, b + 8 * i, sizeof(v));
	return v;
}

static int is_push(const mlrti_ps_held *r)
{
	return r->h.op == MLRTI_PS_PUSH || r->h.op == MLRTI_PS_FORWARD || r->h.op == MLRTI_PS_COPY;
}

static int check_payload(mlrti_ps_server *s, const mlrti_ps_held *r, payload *p, char *why, size_t whylen)
{
	size_t n = (size_t)r->h.nkeys, want = is_push(r) ? 5 : 4;

	memset(p, 0, sizeof(*p));
	if ((size_t)r->nf != want || zmq_msg_size((zmq_msg_t *)&r->f[2]) != n * 8 ||
	    zmq_msg_size((zmq_msg_t *)&r->f[3]) != n * 8) {
		snprintf(why, whylen, "request of %zu keys with malformed key or length frames", n);
		return MLRT_ERR_PROTOCOL;
	}
	p->keys = zmq_msg_data((zmq_msg_t *)&r->f[2]);
	p->lens = zmq_msg_data((zmq_msg_t *)&r->f[3]);
	for (size_t i = 0; i < n; i++) {
		if (word(p->lens, i) == 0 || word(p->lens, i) > MLRTI_PS_MAX_LEN) {
			snprintf(why, whylen, "key %" PRIu64 " with length %" PRIu64 " (want 1 to %" PRIu64
			         ")", word(p->keys, i), word(p->lens, i), MLRTI_PS_MAX_LEN);
			return MLRT_ERR_INVALID;
		}
		if (mlrti_ps_server_of(word(p->keys, i), s->nservers) != r->h.range) {
			snprintf(why, whylen, "key %" PRIu64 " is not in range %d", word(p->keys, i),
			         r->h.range);
			return MLRT_ERR_PROTOCOL;
		}
		p->nvals += word(p->lens, i);
	}
	if (is_push(r)) {
		if (zmq_msg_size((zmq_msg_t *)&r->f[4]) != p->nvals * sizeof(float)) {
			snprintf(why, whylen, "push of %zu floats with a %zu-byte value frame", p->nvals,
			         zmq_msg_size((zmq_msg_t *)&r->f[4]));
			return MLRT_ERR_PROTOCOL;
		}
		p->vals = zmq_msg_data((zmq_msg_t *)&r->f[4]);
		if ((uintptr_t)p->vals % _Alignof(float) != 0) {
			if (p->nvals > s->cap_vals) {
				free(s->vals);
				s->cap_vals = 0;
				if ((s->vals = malloc(p->nvals * sizeof(float))) == NULL) {
					snprintf(why, whylen, "out of memory for %zu floats", p->nvals);
					return MLRT_ERR_NOMEM;
				}
				s->cap_vals = p->nvals;
			}
			memcpy(s->vals, p->vals, p->nvals * sizeof(float));
			p->vals = s->vals;
		}
	}
	return MLRT_OK;
}

/* Create (or check the length of) every key of a request. */
static int touch_keys(mlrti_ps_server *s, const mlrti_ps_held *r, const payload *p, char *why, size_t whylen)
{
	for (size_t i = 0; i < r->h.nkeys; i++) {
		mlrti_ps_key *k;
		int rc = mlrti_ps_key_get(s, word(p->keys, i), (size_t)word(p->lens, i), &k, why, whylen);

		if (rc != MLRT_OK)
			return rc;
	}
	return MLRT_OK;
}

/* Answer request req of the worker behind routing frame route. */
void mlrti_ps_reply_to(mlrti_ps_server *s, zmq_msg_t *route, const mlrti_ps_hdr *req, int status,
                     const char *msg, zmq_msg_t *vals)
{
	char buf[512];
	mlrti_ps_hdr h = {.op = req->op, .id = req->id, .range = req->range, .status = status,
	                  .arena_ok = req->op == MLRTI_PS_HELLO && req->arena_ok};
	zmq_msg_t id;
	size_t len;

	if (msg != NULL)
		snprintf(h.msg, sizeof(h.msg), "%s", msg);
	/* A push's answer tells the worker where to send its next copies. */
	if (req->op == MLRTI_PS_PUSH && req->range >= 0 && req->range < s->nservers &&
	    s->ranges[req->range].role == MLRTI_PS_PRIMARY) {
		h.has_backup = 1;
		h.backup = s->ranges[req->range].backup;
		h.backup_epoch = s->ranges[req->range].backup_epoch;
	}
	if (mlrti_ps_hdr_encode(&h, 1, buf, sizeof(buf), &len) != MLRT_OK)
		return;
	/* A worker that went away is not an error of the server's. */
	zmq_msg_init(&id);
	zmq_msg_copy(&id, route);
	if (zmq_msg_send(&id, s->sock, ZMQ_SNDMORE) < 0) {
		zmq_msg_close(&id);
		return;
	}
	if (zmq_send(s->sock, buf, len, vals != NULL ? ZMQ_SNDMORE : 0) < 0)
		return;
	if (vals != NULL)
		zmq_msg_send(vals, s->sock, 0);
}

static void reply(mlrti_ps_server *s, mlrti_ps_held *r, int status, const char *msg, zmq_msg_t *vals)
{
	mlrti_ps_reply_to(s, &r->f[0], &r->h, status, msg, vals);
}

static int64_t slowest_clock(const mlrti_ps_server *s, const mlrti_ps_range *g)
{
	int64_t m = INT64_MAX;

	for (int w = 0; w < s->nworkers; w++)
		if (g->clock[w] < m)
			m = g->clock[w];
	return m;
}

/* Whether pull r may be answered now. */
static int pull_ready(const mlrti_ps_server *s, const mlrti_ps_held *r)
{
	const mlrti_ps_range *g = &s->ranges[r->h.range];

	switch (s->opts.consistency) {
	case MLRT_PS_SYNC: return r->h.clock <= g->applied;
	case MLRT_PS_BOUNDED: return r->h.clock - slowest_clock(s, g) <= s->opts.staleness;
	default: return 1;
	}
}

/* The values of pull r's keys as one message: a large single key's own
 * values, lent (copied on its next write), else a copy. */
static int pull_values(mlrti_ps_server *s, const mlrti_ps_held *r, const payload *p,
                       zmq_msg_t *vals)
{
	float *out;

	if (r->h.nkeys == 1 && p->nvals * sizeof(float) >= LEND_MIN_BYTES) {
		mlrti_ps_key *k = mlrti_ps_key_find(s, word(p->keys, 0));

		atomic_fetch_add(&k->vals->refs, 1);
		if (zmq_msg_init_data(vals, k->w, k->len * sizeof(float), vals_release, k->vals) == 0)
			return MLRT_OK;
		vals_release(NULL, k->vals);
		return MLRT_ERR_NOMEM;
	}
	if (zmq_msg_init_size(vals, p->nvals * sizeof(float)) != 0)
		return MLRT_ERR_NOMEM;
	out = zmq_msg_data(vals);
	for (size_t i = 0; i < r->h.nkeys; i++) {
		mlrti_ps_key *k = mlrti_ps_key_find(s, word(p->keys, i));

		memcpy(out, k->w, k->len * sizeof(float));
		out += k->len;
	}
	return MLRT_OK;
}

static void serve_pull(mlrti_ps_server *s, mlrti_ps_held *r)
{
	char why[MLRTI_PS_MSG_MAX];
	payload p;
	zmq_msg_t vals;
	int rc;

	rc = check_payload(s, r, &p, why, sizeof(why));
	if (rc == MLRT_OK)
		rc = touch_keys(s, r, &p, why, sizeof(why));
	if (rc != MLRT_OK) {
		reply(s, r, rc, why, NULL);
		return;
	}
	if (pull_values(s, r, &p, &vals) != MLRT_OK) {
		reply(s, r, MLRT_ERR_NOMEM, "out of memory for the reply", NULL);
		return;
	}
	if (s->opts.consistency == MLRT_PS_BOUNDED) {
		int64_t lead = r->h.clock - slowest_clock(s, &s->ranges[r->h.range]);

		if (lead > s->max_lead)
			s->max_lead = lead;
	}
	reply(s, r, MLRT_OK, NULL, &vals);
	zmq_msg_close(&vals);
}

/* Answer every waiting pull that may be answered now. */
static void serve_waiting(mlrti_ps_server *s)
{
	mlrti_ps_held **pp = &s->waiting;

	while (*pp != NULL) {
		mlrti_ps_held *r = *pp;

		if (!pull_ready(s, r)) {
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		serve_pull(s, r);
		mlrti_ps_held_free(r);
	}
}

static int add_touched(mlrti_ps_server *s, mlrti_ps_key *k)
{
	if (s->ntouched == s->cap_touched) {
		size_t cap = s->cap_touched ? 2 * s->cap_touched : 256;
		mlrti_ps_key **t = realloc(s->touched, cap * sizeof(*t));

		if (t == NULL)
			return MLRT_ERR_NOMEM;
		s->touched = t;
		s->cap_touched = cap;
	}
	s->touched[s->ntouched++] = k;
	return MLRT_OK;
}

static void apply_values(mlrti_ps_server *s, const payload *p, size_t nkeys)
{
	const float *g = p->vals;

	for (size_t i = 0; i < nkeys; i++) {
		mlrti_ps_key *k = mlrti_ps_key_find(s, word(p->keys, i));

		if (mlrti_ps_key_writable(k) == MLRT_OK)
			mlrti_optim_apply(&s->opts, k->w, k->state, g, k->len, &k->t);
		g += k->len;
	}
}

/* SYNC: apply every step of range g whose pushes are all in: sum each
 * key's values in worker order, then apply the optimizer once per key. */
static int apply_steps(mlrti_ps_server *s, mlrti_ps_range *g)
{
	for (;;) {
		for (int w = 0; w < s->nworkers; w++)
			if (g->queue[w] == NULL)
				return MLRT_OK;
		s->ntouched = 0;
		for (int w = 0; w < s->nworkers; w++) {
			mlrti_ps_held *r = g->queue[w];
			char why[8];
			payload p;

			g->queue[w] = r->next;
			if (check_payload(s, r, &p, why, sizeof(why)) != MLRT_OK) { /* checked when queued */
				mlrti_ps_held_free(r);
				continue;
			}
			const float *v = p.vals;

			for (size_t i = 0; i < r->h.nkeys; i++) {
				mlrti_ps_key *k = mlrti_ps_key_find(s, word(p.keys, i));

				if (k->acc == NULL && (k->acc = malloc(k->len * sizeof(float))) == NULL)
					return MLRT_ERR_NOMEM;
				if (k->acc_step != g->applied) {
					memcpy(k->acc, v, k->len * sizeof(float));
					k->acc_step = g->applied;
					if (add_touched(s, k) != MLRT_OK)
						return MLRT_ERR_NOMEM;
				} else {
					for (size_t j = 0; j < k->len; j++)
						k->acc[j] += v[j];
				}
				v += k->len;
			}
			mlrti_ps_held_free(r);
		}
		for (size_t i = 0; i < s->ntouched; i++) {
			mlrti_ps_key *k = s->touched[i];

			if (mlrti_ps_key_writable(k) == MLRT_OK)
				mlrti_optim_apply(&s->opts, k->w, k->state, k->acc, k->len, &k->t);
		}
		g->applied++;
	}
}

/* Take push r into its range: drop it if its sequence number was seen
 * (a push sent again after a failover), else apply it (ASYNC, BOUNDED) or
 * queue it (SYNC: settle() applies the steps that are complete, once the
 * caller is done with r).  Returns 1 when taken, 0 for a duplicate, or an
 * error (why filled).  r stays the caller's unless queued (*queued set). */
int mlrti_ps_take_push(mlrti_ps_server *s, mlrti_ps_held *r, int *queued, char *why, size_t whylen)
{
	mlrti_ps_range *g = &s->ranges[r->h.range];
	int w = r->h.worker, rc;
	payload p;

	*queued = 0;
	if (r->h.seq <= g->seq[w])
		return 0;
	rc = check_payload(s, r, &p, why, whylen);
	if (rc == MLRT_OK && r->h.clock != g->clock[w] && s->opts.consistency != MLRT_PS_ASYNC) {
		snprintf(why, whylen, "push of step %" PRId64 " from worker %d, which is at step "
		         "%" PRId64, r->h.clock, w, g->clock[w]);
		rc = MLRT_ERR_PROTOCOL;
	}
	if (rc == MLRT_OK)
		rc = touch_keys(s, r, &p, why, whylen);
	if (rc == MLRT_OK && s->opts.consistency == MLRT_PS_SYNC && mlrti_ps_held_own(r) != MLRT_OK) {
		snprintf(why, whylen, "out of memory for a push of %zu floats", p.nvals);
		rc = MLRT_ERR_NOMEM;
	}
	if (rc != MLRT_OK)
		return rc;
	g->seq[w] = r->h.seq;
	g->clock[w]++;
	if (s->opts.consistency == MLRT_PS_SYNC) {
		mlrti_ps_held **tail = &g->queue[w];

		while (*tail != NULL)
			tail = &(*tail)->next;
		r->next = NULL;
		*tail = r;
		*queued = 1;
	} else {
		apply_values(s, &p, (size_t)r->h.nkeys);
	}
	return 1;
}

/* After a push into range rg: apply the complete steps (SYNC) and answer
 * the pulls that may now be answered. */
void mlrti_ps_settle(mlrti_ps_server *s, int rg)
{
	mlrti_ps_range *g = &s->ranges[rg];

	if (s->opts.consistency == MLRT_PS_SYNC && apply_steps(s, g) != MLRT_OK)
		mlrt_log(MLRT_LOG_ERROR, "ps: server %d: out of memory applying step %" PRId64
		         " of range %d", s->index, g->applied, rg);
	serve_waiting(s);
}

/* ---- dispatch ---- */

/* A worker's push, to this server as the primary of its range. */
static void on_push(mlrti_ps_server *s, mlrti_ps_held *r)
{
	char why[MLRTI_PS_MSG_MAX];
	mlrti_ps_range *g = &s->ranges[r->h.range];
	int rg = r->h.range, queued = 0, rc = mlrti_ps_take_push(s, r, &queued, why, sizeof(why));

	if (rc < 0) {
		reply(s, r, rc, why, NULL);
	} else if (rc == 1 && g->backup >= 0 && r->h.has_copy && r->h.copy_to == g->backup &&
	           r->h.copy_epoch == g->backup_epoch) {
		/* The backup has the worker's copy (the worker waits for its
		 * answer too) and takes it in this order.  Answer first: the
		 * worker waits for that, not for the order. */
		reply(s, r, MLRT_OK, NULL, NULL);
		if (mlrti_ps_order(s, r, g->backup) != MLRT_OK) {
			mlrt_log(MLRT_LOG_WARN, "ps: server %d: cannot reach backup %d; range %d goes "
			         "on without a copy", s->index, g->backup, rg);
			g->backup = -1;
			g->backup_epoch++;
			mlrti_ps_publish_range(s, rg);
		}
	} else if (rc == 1 && g->backup >= 0 && mlrti_ps_forward(s, r, g->backup) == MLRT_OK) {
		/* acknowledged by forward_done or check_backups */
	} else {
		if (rc == 1 && g->backup >= 0) {
			mlrt_log(MLRT_LOG_WARN, "ps: server %d: cannot reach backup %d; range %d goes "
			         "on without a copy", s->index, g->backup, r->h.range);
			g->backup = -1;
			g->backup_epoch++;
			mlrti_ps_publish_range(s, rg);
		}
		reply(s, r, MLRT_OK, NULL, NULL);
	}
	if (!queued)
		mlrti_ps_held_free(r);
	mlrti_ps_settle(s, rg);
}

static void on_hello(mlrti_ps_server *s, mlrti_ps_held *r)
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
			mlrti_ps_load_shards(s);
		}
	} else if (memcmp(&s->opts, &r->h.opts, offsetof(mlrt_ps_opts, timeout_ms)) != 0) {
		snprintf(why, sizeof(why), "worker %d opened with other options than the first "
		         "worker; every worker must pass the same mlrt_ps_opts", r->h.worker);
		rc = MLRT_ERR_INVALID;
	}
	/* Values through shared memory when the worker's arena maps here;
	 * over the socket otherwise (the answer says which). */
	r->h.arena_ok = 0;
	if (rc == MLRT_OK && r->h.has_arena && r->h.worker < s->nworkers) {
		char mwhy[MLRTI_PS_MSG_MAX];

		if (mlrti_ps_arena_map_id(&s->arenas[r->h.worker], r->h.arena, r->h.arena_key, mwhy,
		                          sizeof(mwhy)) == MLRT_OK)
			r->h.arena_ok = 1;
		else
			mlrt_log(MLRT_LOG_WARN, "ps: server %d: worker %d: %s; its values come over the "
			         "socket", s->index, r->h.worker, mwhy);
	}
	reply(s, r, rc, rc == MLRT_OK ? NULL : why, NULL);
	mlrti_ps_held_free(r);
}

static void on_request(mlrti_ps_server *s, mlrti_ps_held *r)
{
	char why[MLRTI_PS_MSG_MAX];
	payload p;
	int rc;

	int evaluator = r->h.worker == s->nworkers;

	if (r->h.op == MLRTI_PS_CATCHUP) { /* from a server: worker is its index */
		mlrti_ps_send_snapshot(s, r);
		mlrti_ps_held_free(r);
		return;
	}

	if (r->h.worker > s->nworkers || r->h.range >= s->nservers ||
	    (evaluator && (r->h.op == MLRTI_PS_PUSH || r->h.op == MLRTI_PS_COPY ||
	                   r->h.op == MLRTI_PS_INIT))) {
		if (evaluator)
			snprintf(why, sizeof(why), "the evaluator pulls; it does not push or init");
		else
			snprintf(why, sizeof(why), "worker %d, range %d in a job of %d workers and %d "
			         "servers", r->h.worker, r->h.range, s->nworkers, s->nservers);
		reply(s, r, MLRT_ERR_INVALID, why, NULL);
		mlrti_ps_held_free(r);
		return;
	}
	if (r->h.op == MLRTI_PS_HELLO) {
		on_hello(s, r);
		return;
	}
	if (r->h.has_arena && (rc = borrow_values(s, r, why, sizeof(why))) != MLRT_OK) {
		reply(s, r, rc, why, NULL);
		mlrti_ps_held_free(r);
		return;
	}
	if (!s->have_opts && r->h.op != MLRTI_PS_FORWARD && r->h.op != MLRTI_PS_ORDER) {
		reply(s, r, MLRT_ERR_PROTOCOL, "request before hello", NULL);
		mlrti_ps_held_free(r);
		return;
	}
	if (r->h.op == MLRTI_PS_FORWARD) {
		mlrti_ps_on_forward(s, r);
		return;
	}
	if (r->h.op == MLRTI_PS_ORDER) {
		mlrti_ps_on_orders(s, r);
		return;
	}
	if (r->h.op == MLRTI_PS_COPY) {
		mlrti_ps_on_copy(s, r, 0);
		return;
	}
	if (r->h.op == MLRTI_PS_BYE) {
		if (!evaluator && !s->left[r->h.worker]) {
			s->left[r->h.worker] = 1;
			s->nleft++;
		}
		reply(s, r, MLRT_OK, NULL, NULL);
		mlrti_ps_held_free(r);
		return;
	}
	if (!mlrti_ps_serves(s, r->h.range)) {
		snprintf(why, sizeof(why), "server %d does not serve range %d", s->index, r->h.range);
		reply(s, r, MLRT_ERR_UNAVAILABLE, why, NULL);
		mlrti_ps_held_free(r);
		return;
	}
	switch (r->h.op) {
	case MLRTI_PS_PUSH:
		on_push(s, r);
		return;
	case MLRTI_PS_PULL:
		if (pull_ready(s, r)) {
			serve_pull(s, r);
			mlrti_ps_held_free(r);
		} else {
			r->next = s->waiting;
			s->waiting = r;
		}
		return;
	case MLRTI_PS_INIT:
		rc = check_payload(s, r, &p, why, sizeof(why));
		if (rc == MLRT_OK)
			rc = touch_keys(s, r, &p, why, sizeof(why));
		reply(s, r, rc, rc == MLRT_OK ? NULL : why, NULL);
		break;
	default:
		reply(s, r, MLRT_ERR_PROTOCOL, "unknown op", NULL);
	}
	mlrti_ps_held_free(r);
}

/* Receive one multipart message from sock into r's frames (a DEALER's
 * messages get an empty routing frame first, so that frame 1 is always
 * the header). */
static mlrti_ps_held *receive(mlrti_ps_server *s, void *sock, int routed)
{
	char why[MLRTI_PS_MSG_MAX];
	mlrti_ps_held *r = calloc(1, sizeof(*r));
	int more = 1;

	if (r == NULL)
		return NULL;
	if (!routed)
		zmq_msg_init(&r->f[r->nf++]);
	while (more) {
		zmq_msg_t m;

		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, sock, 0) < 0) {
			zmq_msg_close(&m);
			if (r->nf == !routed) { /* nothing came (a receive timeout) */
				mlrti_ps_held_free(r);
				return NULL;
			}
			break;
		}
		more = zmq_msg_more(&m);
		if (r->nf < MLRTI_PS_MAX_FRAMES)
			r->f[r->nf++] = m;
		else
			zmq_msg_close(&m);
	}
	if (r->nf >= 2 && mlrti_ps_hdr_decode(zmq_msg_data(&r->f[1]), zmq_msg_size(&r->f[1]), &r->h,
	                                      why, sizeof(why)) == MLRT_OK)
		return r;
	mlrt_log(MLRT_LOG_WARN, "ps: server %d: dropped a malformed message (%s)", s->index,
	         r->nf >= 2 ? why : "too few frames");
	if (r->nf >= 2 && routed) {
		r->h.op = MLRTI_PS_OP_COUNT; /* echo what we can */
		reply(s, r, MLRT_ERR_PROTOCOL, why, NULL);
	}
	mlrti_ps_held_free(r);
	return NULL;
}

/* Also listen on an abstract Unix socket (no file to clean up; it goes
 * with the process), named for this server and process. */
static int bind_ipc(mlrti_ps_server *s, char *endpoint, size_t *cap)
{
	char name[200];

	snprintf(name, sizeof(name), "ipc://@mlrt-ps-%d-%d-%llx", s->index, (int)getpid(),
	         (unsigned long long)mlrti_wall_ms());
	if (zmq_bind(s->sock, name) != 0) {
		mlrt_log(MLRT_LOG_ERROR, "ps: server %d cannot listen on %s: %s", s->index, name,
		         zmq_strerror(zmq_errno()));
		return MLRT_ERR_IO;
	}
	return zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, endpoint, cap) == 0 ? MLRT_OK
	                                                                       : MLRT_ERR_IO;
}

/* Publish where workers and the other servers reach this one (proto.h):
 * over tcp, loopback when the job's store is on this host's loopback, else
 * the address that routes towards the store's host (runtime/netaddr.h;
 * MLRT_IFNAME); over ipc for peers on this machine. */
static int publish(mlrti_ps_server *s, const char *store_addr)
{
	char last[256], ipc[256], host[256], ip[MLRTI_ADDR_MAX] = "127.0.0.1", key[512];
	char machine[128], addr[800];
	size_t n = sizeof(last), m = sizeof(ipc);
	const char *port;
	int rc;

	if (zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, last, &n) != 0 ||
	    (port = strrchr(last, ':')) == NULL || bind_ipc(s, ipc, &m) != MLRT_OK)
		return MLRT_ERR_IO;
	if (mlrti_endpoint_host(store_addr, host, sizeof(host)) == MLRT_OK &&
	    !mlrti_is_loopback(host) && (rc = mlrti_reachable_addr(host, ip, sizeof(ip))) != MLRT_OK)
		return rc;
	if (mlrti_ps_machine_key(machine, sizeof(machine)) != MLRT_OK)
		snprintf(machine, sizeof(machine), "unknown");
	snprintf(addr, sizeof(addr), "tcp://%s%s %s %s", ip, port, ipc, machine);
	snprintf(key, sizeof(key), "%sps/server/%d", s->prefix, s->index);
	return mlrt_store_set(s->store, key, addr, strlen(addr));
}

static void free_list(mlrti_ps_held *r)
{
	while (r != NULL) {
		mlrti_ps_held *next = r->next;

		mlrti_ps_held_free(r);
		r = next;
	}
}

static void server_fini(mlrti_ps_server *s)
{
	mlrti_ps_key *k, *tmp;

	HASH_ITER(hh, s->keys, k, tmp) {
		HASH_DEL(s->keys, k);
		key_free(k);
	}
	for (int i = 0; s->ranges != NULL && i < s->nservers; i++) {
		mlrti_ps_range *g = &s->ranges[i];

		for (int w = 0; g->queue != NULL && w < s->nworkers; w++)
			free_list(g->queue[w]);
		free_list(g->copies);
		free_list(g->orders);
		free(g->queue);
		free(g->clock);
		free(g->seq);
	}
	free(s->ranges);
	free_list(s->waiting);
	free_list(s->early);
	while (s->acks != NULL) {
		mlrti_ps_ack *a = s->acks;

		s->acks = a->next;
		mlrti_ps_ack_free(a);
	}
	for (int i = 0; s->peer != NULL && i < s->nservers; i++)
		if (s->peer[i] != NULL)
			zmq_close(s->peer[i]);
	free(s->peer);
	for (int i = 0; s->pending != NULL && i < s->nservers; i++)
		free(s->pending[i].e);
	free(s->pending);
	if (s->sock != NULL)
		zmq_close(s->sock);
	if (s->zctx != NULL)
		zmq_ctx_term(s->zctx);
	mlrt_store_close(s->store);
	for (int w = 0; s->arenas != NULL && w < s->nworkers; w++)
		mlrti_ps_arena_unmap(&s->arenas[w]);
	free(s->arenas);
	free(s->touched);
	free(s->vals);
	free(s->left);
}

/* Started again after a death: become the backup of the ranges this
 * server held (its own, now answered for by its former backup, and the
 * one before), each primary sending a snapshot first. */
static void rejoin(mlrti_ps_server *s)
{
	char key[400];
	/* Our ranges may still name us as their primary: the backup takes
	 * over when it sees us marked down, which can be after we are back. */
	int64_t deadline = mlrti_now_ms() + REJOIN_WAIT_MS;

	for (int k = 0; k < 2; k++) {
		int rg = (s->index + s->nservers - k) % s->nservers, p = -1, b = -1;

		snprintf(key, sizeof(key), "%sps/range/%d", s->prefix, rg);
		for (;;) {
			void *val = NULL;
			size_t len;

			p = b = -1;
			if (mlrt_store_get(s->store, key, &val, &len) == MLRT_OK)
				sscanf(val, "%d %d", &p, &b);
			free(val);
			if ((p >= 0 && p != s->index) || mlrti_now_ms() >= deadline)
				break;
			usleep(10000);
		}
		if (p < 0 || p == s->index || p >= s->nservers) {
			mlrt_log(MLRT_LOG_ERROR, "ps: server %d: no server answers for range %d; it "
			         "cannot be copied", s->index, rg);
			continue;
		}
		s->ranges[rg].role = MLRTI_PS_BACKUP;
		s->ranges[rg].primary = p;
		s->ranges[rg].catching_up = 1;
	}
	/* Alive again: primaries may forward to it, workers may fail over to it. */
	snprintf(key, sizeof(key), "%sps/down/%d", s->prefix, s->index);
	mlrt_store_delete(s->store, key);
	mlrti_ps_request_snapshots(s);
}

static int server_init(mlrti_ps_server *s, mlrt_ctx *ctx)
{
	int linger = 2000, poll_ms = POLL_MS, rc;

	s->index = mlrt_rank(ctx);
	s->nservers = mlrti_ctx_num_servers(ctx);
	s->nworkers = mlrti_ctx_num_workers(ctx);
	s->replicas = mlrti_ctx_ps_replicas(ctx);
	snprintf(s->prefix, sizeof(s->prefix), "%s", mlrti_ctx_gen_prefix(ctx));
	s->ckpt_dir = getenv("MLRT_PS_CKPT_DIR");
	if (s->ckpt_dir != NULL && s->ckpt_dir[0] == '\0')
		s->ckpt_dir = NULL;
	if (mlrti_env_int("MLRT_PS_CKPT_MS", 1, INT32_MAX, 30000, &s->ckpt_ms) != MLRT_OK)
		return MLRT_ERR_INVALID;
	s->left = calloc((size_t)s->nworkers, sizeof(*s->left));
	s->ranges = calloc((size_t)s->nservers, sizeof(*s->ranges));
	s->peer = calloc((size_t)s->nservers, sizeof(*s->peer));
	s->pending = calloc((size_t)s->nservers, sizeof(*s->pending));
	s->arenas = calloc((size_t)s->nworkers, sizeof(*s->arenas));
	if (s->left == NULL || s->ranges == NULL || s->peer == NULL || s->pending == NULL ||
	    s->arenas == NULL)
		return MLRT_ERR_NOMEM;
	for (int i = 0; i < s->nservers; i++) {
		mlrti_ps_range *g = &s->ranges[i];

		g->backup = -1;
		g->clock = calloc((size_t)s->nworkers, sizeof(*g->clock));
		g->seq = calloc((size_t)s->nworkers, sizeof(*g->seq));
		g->queue = calloc((size_t)s->nworkers, sizeof(*g->queue));
		if (g->clock == NULL || g->seq == NULL || g->queue == NULL)
			return MLRT_ERR_NOMEM;
	}
	/* Range i's primary is server i; its backup, server i+1. */
	s->rejoin = getenv("MLRT_PS_REJOIN") != NULL && strcmp(getenv("MLRT_PS_REJOIN"), "1") == 0;
	if (!s->rejoin)
		s->ranges[s->index].role = MLRTI_PS_PRIMARY;
	if (s->replicas > 0 && s->nservers > 1 && !s->rejoin) {
		int prev = (s->index + s->nservers - 1) % s->nservers;

		s->ranges[s->index].backup = (s->index + 1) % s->nservers;
		s->ranges[prev].role = MLRTI_PS_BACKUP;
		s->ranges[prev].primary = prev;
	}
	if (mlrt_store_open(mlrti_ctx_store_addr(ctx), &s->store) != MLRT_OK)
		return MLRT_ERR_UNAVAILABLE;
	s->zctx = zmq_ctx_new();
	s->sock = s->zctx ? zmq_socket(s->zctx, ZMQ_ROUTER) : NULL;
	if (s->sock == NULL || zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof(linger)) != 0 ||
	    zmq_setsockopt(s->sock, ZMQ_RCVTIMEO, &poll_ms, sizeof(poll_ms)) != 0 ||
	    zmq_bind(s->sock, "tcp://0.0.0.0:0") != 0) {
		mlrt_log(MLRT_LOG_ERROR, "ps: server %d cannot listen: %s", s->index,
		         zmq_strerror(zmq_errno()));
		return MLRT_ERR_IO;
	}
	s->rcvtimeo = poll_ms;
	MLRTI_CHECK_GOTO(publish(s, mlrti_ctx_store_addr(ctx)), rc, out);
	if (s->rejoin)
		rejoin(s);
	else
		mlrti_ps_publish_range(s, s->index);
out:
	return rc;
}

/* An answer from another server, on the socket to it: to a forward, or
 * the snapshot this server asked for. */
static void from_peer(mlrti_ps_server *s, void *sock)
{
	char buf[MLRTI_PS_MAX_HEADER], why[MLRTI_PS_MSG_MAX];
	int n = zmq_recv(sock, buf, sizeof(buf), 0), more = 0;
	size_t morelen = sizeof(more);
	mlrti_ps_hdr h;

	if (n < 0)
		return;
	zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &morelen);
	if (mlrti_ps_hdr_decode(buf, (size_t)n > sizeof(buf) ? sizeof(buf) : (size_t)n, &h, why,
	                        sizeof(why)) != MLRT_OK) {
		mlrt_log(MLRT_LOG_WARN, "ps: server %d: a malformed answer from a server (%s)",
		         s->index, why);
	} else if (h.op == MLRTI_PS_CATCHUP && h.status == MLRT_OK && h.range < s->nservers &&
	           s->ranges[h.range].catching_up) {
		if (mlrti_ps_install_snapshot(s, sock, &h) == MLRT_OK)
			mlrti_ps_take_early(s, h.range);
		return;
	} else if (h.op == MLRTI_PS_CATCHUP) {
		mlrt_log(MLRT_LOG_ERROR, "ps: server %d: no snapshot of range %d: %s", s->index,
		         h.range, h.msg[0] ? h.msg : mlrt_strerror(h.status));
	} else {
		mlrti_ps_forward_done(s, h.id, h.status, h.msg[0] ? h.msg : NULL);
	}
	while (more) {
		zmq_msg_t m;

		zmq_msg_init(&m);
		more = zmq_msg_recv(&m, sock, 0) >= 0 && zmq_msg_more(&m);
		zmq_msg_close(&m);
	}
}

/* Take what arrived: requests on the ROUTER, the backups' answers to
 * forwards on the peer sockets. */
/* Whether a message waits on sock (ZeroMQ's own state; no system call when
 * its queue holds one). */
static int readable(void *sock)
{
	int events = 0;
	size_t len = sizeof(events);

	return zmq_getsockopt(sock, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN);
}

/* Whether a message may come on a socket to another server: the answer
 * to a forward, or a snapshot this server asked for. */
static int expects_peers(const mlrti_ps_server *s)
{
	if (s->acks != NULL)
		return 1;
	for (int rg = 0; rg < s->nservers; rg++)
		if (s->ranges[rg].catching_up)
			return 1;
	return 0;
}

/* Wait up to POLL_MS for messages and take them.  With nothing expected
 * from other servers this is a blocking receive on the ROUTER alone: a
 * request then costs one wake-up, not the system calls of zmq_poll. */
static void poll_once(mlrti_ps_server *s)
{
	zmq_pollitem_t items[1 + s->nservers];
	int n = 1;

	int wait_ms = POLL_MS;

	/* Orders gathered for backups go out ORDER_DELAY_MS after the first. */
	if (s->orders_since > 0) {
		int64_t due = s->orders_since + ORDER_DELAY_MS - mlrti_now_ms();

		if (due <= 0)
			mlrti_ps_flush_all_orders(s);
		else
			wait_ms = (int)due;
	}
	if (!expects_peers(s)) {
		if (wait_ms != s->rcvtimeo &&
		    zmq_setsockopt(s->sock, ZMQ_RCVTIMEO, &wait_ms, sizeof(wait_ms)) == 0)
			s->rcvtimeo = wait_ms;
		for (int k = 0; k < DRAIN_MAX; k++) {
			mlrti_ps_held *r = receive(s, s->sock, 1);

			if (r == NULL)
				return;
			on_request(s, r);
			if (!readable(s->sock) || expects_peers(s))
				return;
		}
		return;
	}

	items[0] = (zmq_pollitem_t){.socket = s->sock, .events = ZMQ_POLLIN};
	for (int i = 0; i < s->nservers; i++)
		if (s->peer[i] != NULL)
			items[n++] = (zmq_pollitem_t){.socket = s->peer[i], .events = ZMQ_POLLIN};
	if (zmq_poll(items, n, wait_ms) <= 0)
		return;
	/* Take what has queued up, a bounded number at a time, before polling
	 * again: under load one poll then serves many requests. */
	for (int k = 0; k < DRAIN_MAX && (items[0].revents & ZMQ_POLLIN) && readable(s->sock); k++) {
		mlrti_ps_held *r = receive(s, s->sock, 1);

		if (r != NULL)
			on_request(s, r);
	}
	for (int i = 1; i < n; i++)
		for (int k = 0; k < DRAIN_MAX && (items[i].revents & ZMQ_POLLIN) &&
		                readable(items[i].socket); k++)
			from_peer(s, items[i].socket);
}

/* Whether every worker has closed its handle, as counted in the store: a
 * server started again hears no goodbye from workers that do not send it
 * requests. */
static int every_worker_closed(mlrti_ps_server *s)
{
	char key[300];
	void *val = NULL;
	size_t len;
	int64_t n = 0;

	snprintf(key, sizeof(key), "%sps/closed", s->prefix);
	if (mlrt_store_get(s->store, key, &val, &len) == MLRT_OK)
		mlrti_parse_int(val, 0, INT64_MAX, &n);
	free(val);
	return n >= s->nworkers;
}

/* A server process receives a buffer per message from ZeroMQ and frees it
 * after: with glibc's defaults, large ones come from fresh mmaps or a heap
 * trimmed after each free, and every page is faulted in (and zeroed) again.
 * The process only serves, so it keeps what it freed for reuse. */
static void keep_memory(void)
{
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

int mlrt_ps_serve(mlrt_ctx *ctx)
{
	char abort_key[300];
	mlrti_ps_server s = {0};
	int64_t next_check = 0;
	int rc;

	if (ctx == NULL || !mlrti_ctx_is_server(ctx)) {
		mlrt_log(MLRT_LOG_ERROR, "ps: mlrt_ps_serve called by a process that is not a "
		                         "parameter server (start the job with mlrun --servers S)");
		return MLRT_ERR_INVALID;
	}
	keep_memory();
	MLRTI_CHECK_GOTO(server_init(&s, ctx), rc, out);
	snprintf(abort_key, sizeof(abort_key), "%sabort", s.prefix);
	mlrt_log(MLRT_LOG_INFO, "ps: server %d of %d serving %d workers%s", s.index, s.nservers,
	         s.nworkers, s.ranges[s.index].backup >= 0 ? ", replicated" : "");
	while (s.nleft < s.nworkers) {
		poll_once(&s);
		if (s.acks != NULL)
			mlrti_ps_check_backups(&s);
		mlrti_ps_check_order_backups(&s);
		if (s.ckpt_dir != NULL && s.have_opts && mlrti_now_ms() >= s.next_save) {
			mlrti_ps_save_shard(&s);
			s.next_save = mlrti_now_ms() + s.ckpt_ms;
		}
		if (mlrti_now_ms() >= next_check) {
			void *why = NULL;
			size_t len;

			next_check = mlrti_now_ms() + ABORT_CHECK_MS;
			if (every_worker_closed(&s))
				break;
			if (mlrt_store_get(s.store, abort_key, &why, &len) == MLRT_OK) {
				mlrt_log(MLRT_LOG_ERROR, "ps: server %d: the generation failed (%s)",
				         s.index, (char *)why);
				free(why);
				rc = MLRT_ERR_ABORTED;
				goto out;
			}
		}
	}
	/* The end: send the orders gathered, and take every copy held (their
	 * orders may still be on their way). */
	mlrti_ps_flush_all_orders(&s);
	for (int rg = 0; rg < s.nservers; rg++)
		if (s.ranges[rg].role == MLRTI_PS_BACKUP && !s.ranges[rg].catching_up)
			mlrti_ps_take_copies(&s, rg);
	if (s.ckpt_dir != NULL && s.have_opts)
		mlrti_ps_save_shard(&s);
	if (s.opts.consistency == MLRT_PS_BOUNDED)
		mlrt_log(MLRT_LOG_INFO, "ps: server %d: every worker has closed; pulls were answered "
		         "at most %" PRId64 " pushes ahead of the slowest worker (staleness %d)",
		         s.index, s.max_lead, s.opts.staleness);
	else
		mlrt_log(MLRT_LOG_INFO, "ps: server %d: every worker has closed", s.index);
	if (s.borrowed > 0)
		mlrt_log(MLRT_LOG_INFO, "ps: server %d: read the values of %" PRIu64 " pushes and "
		         "copies in the workers' shared memory", s.index, s.borrowed);
	if (s.took_copies + s.took_forwards > 0)
		mlrt_log(MLRT_LOG_INFO, "ps: server %d: as a backup it took %" PRIu64 " pushes from "
		         "the workers' copies and %" PRIu64 " forwarded by their primary", s.index,
		         s.took_copies, s.took_forwards);
	rc = MLRT_OK;
out:
	server_fini(&s);
	return rc;
}
