/* The store server: one thread, one ZMQ_ROUTER socket, all state owned by
 * that thread (so no locks).  See docs/store.md.
 *
 * Keys live in a chained hash table whose entries are allocated one by one,
 * so that a lease can keep the keys set under it on a list through them.
 * Pending waits and leases are small arrays scanned on each timer tick:
 * they number about one per client, not one per key. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include <mlrt/store.h>

#include "runtime/common.h"
#include "runtime/store_proto.h"

#define POLL_MAX_MS 1000   /* longest sleep in zmq_poll when no timer is due */
#define BATCH 256          /* messages handled before the timers run again */
#define MAX_WAITS 65536    /* pending waits, all clients together */
#define MAX_LEASES 65536
#define MIN_BUCKETS 64
#define ADDR_LEN 320
#define RID_MAX 255        /* ZeroMQ routing ids are at most 255 bytes */

struct lease;

/* One key and its value. */
struct entry {
	struct entry *next;          /* hash chain */
	struct entry *lprev, *lnext; /* the other keys of the same lease */
	struct lease *lease;         /* NULL: none */
	uint32_t hash;
	size_t klen;
	void *val;
	size_t len;
	char key[];                  /* klen bytes and a NUL */
};

struct lease {
	int64_t id;
	int64_t ttl_ms;
	int64_t deadline;
	struct entry *keys;          /* list through entry.lnext */
};

struct wait_key {
	const char *key;
	size_t len;
	uint32_t hash;
};

/* A wait or wait_any that has not been answered yet: one allocation holding
 * the routing id, the keys and their bytes. */
struct waiter {
	uint8_t rid[RID_MAX];
	size_t rid_len;
	uint64_t id;
	int any;
	int64_t deadline;
	size_t next;                 /* wait: the keys before this one were seen */
	size_t nkeys;
	struct wait_key keys[];
};

struct mlrt_store_server {
	void *ctx;
	void *sock;
	int wake[2];                 /* stop writes a byte to wake[1] */
	pthread_t thread;
	int started;
	char addr[ADDR_LEN];

	/* Everything below belongs to the server thread. */
	struct entry **buckets;
	size_t nbuckets, nkeys;
	struct waiter **waits;
	size_t nwaits, capwaits;
	struct lease **leases;       /* sorted by id (ids only grow) */
	size_t nleases, capleases;
	int64_t next_lease;
	void *scratch;               /* freed after each reply */

	/* The request being handled. */
	const uint8_t *rid;
	size_t rid_len;
};

/* ---- keys ---- */

/* FNV-1a. */
static uint32_t hash_key(const char *p, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 16777619u;
	return h;
}

/* The entry for key, or NULL. */
static struct entry *tab_find(const struct mlrt_store_server *srv, const char *key, size_t klen,
                              uint32_t h)
{
	struct entry *e = srv->buckets[h & (srv->nbuckets - 1)];

	for (; e != NULL; e = e->next)
		if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
			return e;
	return NULL;
}

/* Double the buckets when the table is full; on failure keep the old ones
 * (longer chains, still correct). */
static void tab_grow(struct mlrt_store_server *srv)
{
	size_t n = srv->nbuckets * 2;
	struct entry **b;

	if (srv->nkeys < srv->nbuckets)
		return;
	b = calloc(n, sizeof(*b));
	if (b == NULL)
		return;
	for (size_t i = 0; i < srv->nbuckets; i++) {
		struct entry *e = srv->buckets[i], *next;

		for (; e != NULL; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(srv->buckets);
	srv->buckets = b;
	srv->nbuckets = n;
}

/* Take e off its lease's list, if it is on one. */
static void lease_detach(struct entry *e)
{
	if (e->lease == NULL)
		return;
	if (e->lprev != NULL)
		e->lprev->lnext = e->lnext;
	else
		e->lease->keys = e->lnext;
	if (e->lnext != NULL)
		e->lnext->lprev = e->lprev;
	e->lease = NULL;
	e->lprev = e->lnext = NULL;
}

/* Tie e to lease l (NULL: to none). */
static void lease_attach(struct entry *e, struct lease *l)
{
	if (e->lease == l)
		return;
	lease_detach(e);
	if (l == NULL)
		return;
	e->lease = l;
	e->lnext = l->keys;
	if (l->keys != NULL)
		l->keys->lprev = e;
	l->keys = e;
}

/* Unlink e from the table and its lease, and free it. */
static void tab_remove(struct mlrt_store_server *srv, struct entry *e)
{
	struct entry **pp = &srv->buckets[e->hash & (srv->nbuckets - 1)];

	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	lease_detach(e);
	srv->nkeys--;
	free(e->val);
	free(e);
}

/* Store a copy of len bytes at val under key, creating the entry when
 * absent (*created says which).  An existing entry keeps its lease.  On
 * failure (MLRT_ERR_NOMEM) the table is as it was. */
static int tab_put(struct mlrt_store_server *srv, mlrti_store_str key, uint32_t h,
                   const void *val, size_t len, struct entry **out, int *created)
{
	struct entry *e = tab_find(srv, key.ptr, key.len, h);
	void *copy = malloc(len > 0 ? len : 1);
	size_t b;

	if (copy == NULL)
		return MLRT_ERR_NOMEM;
	if (len > 0)
		memcpy(copy, val, len);
	*created = e == NULL;
	if (e == NULL) {
		e = calloc(1, sizeof(*e) + key.len + 1);
		if (e == NULL) {
			free(copy);
			return MLRT_ERR_NOMEM;
		}
		memcpy(e->key, key.ptr, key.len);
		e->klen = key.len;
		e->hash = h;
		b = h & (srv->nbuckets - 1);
		e->next = srv->buckets[b];
		srv->buckets[b] = e;
		srv->nkeys++;
		tab_grow(srv);
	}
	free(e->val);
	e->val = copy;
	e->len = len;
	*out = e;
	return MLRT_OK;
}

/* ---- replies ---- */

/* Free callback for zero-copy frames. */
static void free_frame(void *data, void *hint)
{
	(void)hint;
	free(data);
}

/* Send rep to the client with routing id rid.  Never blocks: a client that
 * is gone or not reading loses the reply (ROUTER drops it). */
static void send_reply(struct mlrt_store_server *srv, const uint8_t *rid, size_t rid_len,
                       const mlrti_store_rep *rep)
{
	zmq_msg_t m;
	void *buf = NULL;
	size_t len = 0;

	if (mlrti_store_encode_reply(rep, &buf, &len) != MLRT_OK)
		return; /* logged */
	if (zmq_send(srv->sock, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
		free(buf);
		return;
	}
	if (zmq_msg_init_data(&m, buf, len, free_frame, NULL) != 0) {
		free(buf);
		return;
	}
	if (zmq_msg_send(&m, srv->sock, ZMQ_DONTWAIT) < 0)
		zmq_msg_close(&m);
}

/* Answer a pending wait with status st (and, for wait_any, index n). */
static void answer_wait(struct mlrt_store_server *srv, const struct waiter *w, int st, size_t n)
{
	mlrti_store_rep rep = {.id = w->id, .st = st};

	if (st == MLRT_OK && w->any) {
		rep.has_n = 1;
		rep.n = (int64_t)n;
	}
	send_reply(srv, w->rid, w->rid_len, &rep);
}

/* ---- waits ---- */

/* Remove waits[i] (order does not matter) and free it. */
static void wait_remove(struct mlrt_store_server *srv, size_t i)
{
	free(srv->waits[i]);
	srv->waits[i] = srv->waits[--srv->nwaits];
}

/* The index of the first of w's keys from `from` on that is absent, or
 * nkeys. */
static size_t wait_first_missing(const struct mlrt_store_server *srv, const struct waiter *w,
                                 size_t from)
{
	for (; from < w->nkeys; from++)
		if (tab_find(srv, w->keys[from].key, w->keys[from].len, w->keys[from].hash) == NULL)
			break;
	return from;
}

/* A key was created: answer the waits it completes. */
static void wait_notify(struct mlrt_store_server *srv, const struct entry *e)
{
	size_t i = 0;

	while (i < srv->nwaits) {
		struct waiter *w = srv->waits[i];
		int done = 0;
		size_t k = 0;

		if (w->any) {
			for (k = 0; k < w->nkeys; k++) {
				done = w->keys[k].hash == e->hash && w->keys[k].len == e->klen &&
				       memcmp(w->keys[k].key, e->key, e->klen) == 0;
				if (done)
					break;
			}
		} else {
			const struct wait_key *wk = &w->keys[w->next];

			if (wk->hash == e->hash && wk->len == e->klen &&
			    memcmp(wk->key, e->key, e->klen) == 0) {
				w->next = wait_first_missing(srv, w, w->next);
				/* Keys seen earlier may have been deleted since: look again. */
				if (w->next == w->nkeys)
					w->next = wait_first_missing(srv, w, 0);
				done = w->next == w->nkeys;
			}
		}
		if (done) {
			answer_wait(srv, w, MLRT_OK, k);
			wait_remove(srv, i);
		} else {
			i++;
		}
	}
}

/* Copy a wait request into one block: the waiter, its key array and the
 * keys' bytes behind it. */
static struct waiter *wait_alloc(const struct mlrt_store_server *srv, const mlrti_store_req *req)
{
	size_t size = sizeof(struct waiter) + req->nkeys * sizeof(struct wait_key);
	struct waiter *w;
	char *p;

	for (size_t k = 0; k < req->nkeys; k++)
		size += req->keys[k].len + 1;
	w = calloc(1, size);
	if (w == NULL)
		return NULL;
	p = (char *)&w->keys[req->nkeys];
	for (size_t k = 0; k < req->nkeys; k++) {
		memcpy(p, req->keys[k].ptr, req->keys[k].len);
		w->keys[k].key = p;
		w->keys[k].len = req->keys[k].len;
		w->keys[k].hash = hash_key(p, req->keys[k].len);
		p += req->keys[k].len + 1;
	}
	w->nkeys = req->nkeys;
	w->any = req->op == MLRTI_STORE_OP_WAIT_ANY;
	w->id = req->id;
	w->deadline = mlrti_now_ms() + req->timeout_ms;
	memcpy(w->rid, srv->rid, srv->rid_len);
	w->rid_len = srv->rid_len;
	return w;
}

/* Add w to the pending waits. */
static int wait_park(struct mlrt_store_server *srv, struct waiter *w)
{
	if (srv->nwaits == MAX_WAITS) {
		mlrt_log(MLRT_LOG_WARN, "store: %zu waits pending, refusing another", srv->nwaits);
		return MLRT_ERR_TOO_LARGE;
	}
	if (srv->nwaits == srv->capwaits) {
		size_t cap = srv->capwaits ? 2 * srv->capwaits : 16;
		struct waiter **a = realloc(srv->waits, cap * sizeof(*a));

		if (a == NULL)
			return MLRT_ERR_NOMEM;
		srv->waits = a;
		srv->capwaits = cap;
	}
	srv->waits[srv->nwaits++] = w;
	return MLRT_OK;
}

/* wait and wait_any: answer now when the keys are there (or tmo is 0),
 * else park the request until a key appears or its deadline passes. */
static int op_wait(struct mlrt_store_server *srv, const mlrti_store_req *req, mlrti_store_rep *rep)
{
	struct waiter *w;
	size_t k;

	if (srv->rid_len > RID_MAX) {
		rep->st = MLRT_ERR_PROTOCOL;
		return 1;
	}
	w = wait_alloc(srv, req);
	if (w == NULL) {
		rep->st = MLRT_ERR_NOMEM;
		return 1;
	}
	if (w->any) {
		for (k = 0; k < w->nkeys; k++)
			if (tab_find(srv, w->keys[k].key, w->keys[k].len, w->keys[k].hash) != NULL)
				break;
		if (k < w->nkeys) {
			rep->has_n = 1;
			rep->n = (int64_t)k;
			goto answered;
		}
	} else {
		w->next = wait_first_missing(srv, w, 0);
		if (w->next == w->nkeys)
			goto answered;
	}
	if (req->timeout_ms == 0) {
		rep->st = MLRT_ERR_TIMEOUT;
		goto answered;
	}
	rep->st = wait_park(srv, w);
	if (rep->st != MLRT_OK)
		goto answered;
	return 0;
answered:
	free(w);
	return 1;
}

/* ---- leases ---- */

/* The position of lease id in the sorted array, or where it would go. */
static size_t lease_pos(const struct mlrt_store_server *srv, int64_t id)
{
	size_t lo = 0, hi = srv->nleases;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (srv->leases[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* End leases[i]: delete its keys and free it; log how it ended unless
 * how is NULL. */
static void lease_end(struct mlrt_store_server *srv, size_t i, const char *how)
{
	struct lease *l = srv->leases[i];
	size_t n = 0;

	while (l->keys != NULL) {
		tab_remove(srv, l->keys);
		n++;
	}
	if (how != NULL)
		mlrt_log(MLRT_LOG_INFO, "store: lease %" PRId64 " %s, %zu keys deleted", l->id, how,
		         n);
	memmove(&srv->leases[i], &srv->leases[i + 1], (srv->nleases - i - 1) * sizeof(l));
	srv->nleases--;
	free(l);
}

/* The live lease id, or NULL; one past its deadline ends here. */
static struct lease *lease_find(struct mlrt_store_server *srv, int64_t id, size_t *pos)
{
	size_t i = lease_pos(srv, id);

	if (i == srv->nleases || srv->leases[i]->id != id)
		return NULL;
	if (srv->leases[i]->deadline <= mlrti_now_ms()) {
		lease_end(srv, i, "expired");
		return NULL;
	}
	if (pos != NULL)
		*pos = i;
	return srv->leases[i];
}

/* lease_grant: a new lease with the next id; n gets the id. */
static int op_lease_grant(struct mlrt_store_server *srv, const mlrti_store_req *req,
                          mlrti_store_rep *rep)
{
	struct lease *l;

	if (srv->nleases == MAX_LEASES) {
		mlrt_log(MLRT_LOG_WARN, "store: %zu leases live, refusing another", srv->nleases);
		rep->st = MLRT_ERR_TOO_LARGE;
		return 1;
	}
	if (srv->nleases == srv->capleases) {
		size_t cap = srv->capleases ? 2 * srv->capleases : 16;
		struct lease **a = realloc(srv->leases, cap * sizeof(*a));

		if (a == NULL) {
			rep->st = MLRT_ERR_NOMEM;
			return 1;
		}
		srv->leases = a;
		srv->capleases = cap;
	}
	l = calloc(1, sizeof(*l));
	if (l == NULL) {
		rep->st = MLRT_ERR_NOMEM;
		return 1;
	}
	l->id = srv->next_lease++;
	l->ttl_ms = req->ttl_ms;
	l->deadline = mlrti_now_ms() + req->ttl_ms;
	srv->leases[srv->nleases++] = l; /* ids only grow: the array stays sorted */
	rep->has_n = 1;
	rep->n = l->id;
	return 1;
}

/* lease_renew: push the deadline to now + ttl. */
static int op_lease_renew(struct mlrt_store_server *srv, const mlrti_store_req *req,
                          mlrti_store_rep *rep)
{
	struct lease *l = lease_find(srv, req->lease, NULL);

	if (l == NULL)
		rep->st = MLRT_ERR_NOT_FOUND;
	else
		l->deadline = mlrti_now_ms() + l->ttl_ms;
	return 1;
}

/* lease_revoke: end the lease and delete its keys now. */
static int op_lease_revoke(struct mlrt_store_server *srv, const mlrti_store_req *req,
                           mlrti_store_rep *rep)
{
	size_t i;

	if (lease_find(srv, req->lease, &i) == NULL)
		rep->st = MLRT_ERR_NOT_FOUND;
	else
		lease_end(srv, i, "revoked");
	return 1;
}

/* ---- key operations ---- */

/* set: store the value, tied to the given lease or to none. */
static int op_set(struct mlrt_store_server *srv, const mlrti_store_req *req, mlrti_store_rep *rep)
{
	uint32_t h = hash_key(req->key.ptr, req->key.len);
	struct lease *l = NULL;
	struct entry *e;
	int created;

	if (req->lease != 0 && (l = lease_find(srv, req->lease, NULL)) == NULL) {
		rep->st = MLRT_ERR_NOT_FOUND;
		return 1;
	}
	rep->st = tab_put(srv, req->key, h, req->val.ptr, req->val.len, &e, &created);
	if (rep->st != MLRT_OK)
		return 1;
	/* A plain set also unties the key from a lease it had. */
	lease_attach(e, l);
	if (created)
		wait_notify(srv, e);
	return 1;
}

/* get: the value, pointing into the table until the reply is sent. */
static int op_get(struct mlrt_store_server *srv, const mlrti_store_req *req, mlrti_store_rep *rep)
{
	struct entry *e = tab_find(srv, req->key.ptr, req->key.len,
	                           hash_key(req->key.ptr, req->key.len));

	if (e == NULL) {
		rep->st = MLRT_ERR_NOT_FOUND;
		return 1;
	}
	rep->has_val = 1;
	rep->val.ptr = e->val;
	rep->val.len = e->len;
	return 1;
}

/* add: the counter as decimal text, absent counting as 0; n gets the sum. */
static int op_add(struct mlrt_store_server *srv, const mlrti_store_req *req, mlrti_store_rep *rep)
{
	uint32_t h = hash_key(req->key.ptr, req->key.len);
	struct entry *e = tab_find(srv, req->key.ptr, req->key.len, h);
	char text[24];
	int64_t cur = 0;
	int created, n;

	if (e != NULL && mlrti_store_parse_counter(e->val, e->len, &cur) != MLRT_OK) {
		rep->st = MLRT_ERR_INVALID;
		rep->err.ptr = "the value is not a decimal integer";
		rep->err.len = strlen(rep->err.ptr);
		return 1;
	}
	if (__builtin_add_overflow(cur, req->delta, &cur)) {
		rep->st = MLRT_ERR_INVALID;
		rep->err.ptr = "the sum overflows int64";
		rep->err.len = strlen(rep->err.ptr);
		return 1;
	}
	n = snprintf(text, sizeof(text), "%" PRId64, cur);
	rep->st = tab_put(srv, req->key, h, text, (size_t)n, &e, &created);
	if (rep->st != MLRT_OK)
		return 1;
	if (created)
		wait_notify(srv, e);
	rep->has_n = 1;
	rep->n = cur;
	return 1;
}

/* cas: swap when the value (or absence) matches; n says whether it did,
 * val is the value after the call. */
static int op_cas(struct mlrt_store_server *srv, const mlrti_store_req *req, mlrti_store_rep *rep)
{
	uint32_t h = hash_key(req->key.ptr, req->key.len);
	struct entry *e = tab_find(srv, req->key.ptr, req->key.len, h);
	int match, created;

	if (req->has_exp)
		match = e != NULL && e->len == req->exp.len &&
		        (e->len == 0 || memcmp(e->val, req->exp.ptr, e->len) == 0);
	else
		match = e == NULL;
	if (match) {
		rep->st = tab_put(srv, req->key, h, req->val.ptr, req->val.len, &e, &created);
		if (rep->st != MLRT_OK)
			return 1;
		if (created)
			wait_notify(srv, e);
	}
	rep->has_n = 1;
	rep->n = match;
	if (e != NULL) {
		rep->has_val = 1;
		rep->val.ptr = e->val;
		rep->val.len = e->len;
	}
	return 1;
}

/* del: remove the key; NOT_FOUND when absent. */
static int op_del(struct mlrt_store_server *srv, const mlrti_store_req *req, mlrti_store_rep *rep)
{
	struct entry *e = tab_find(srv, req->key.ptr, req->key.len,
	                           hash_key(req->key.ptr, req->key.len));

	if (e == NULL)
		rep->st = MLRT_ERR_NOT_FOUND;
	else
		tab_remove(srv, e);
	return 1;
}

/* Whether e's key starts with prefix. */
static int has_prefix(const struct entry *e, mlrti_store_str prefix)
{
	return e->klen >= prefix.len && memcmp(e->key, prefix.ptr, prefix.len) == 0;
}

/* del_prefix: remove every key with the prefix; n gets how many. */
static int op_del_prefix(struct mlrt_store_server *srv, const mlrti_store_req *req,
                         mlrti_store_rep *rep)
{
	int64_t n = 0;

	for (size_t b = 0; b < srv->nbuckets; b++) {
		struct entry *e = srv->buckets[b], *next;

		for (; e != NULL; e = next) {
			next = e->next;
			if (has_prefix(e, req->key)) {
				tab_remove(srv, e);
				n++;
			}
		}
	}
	rep->has_n = 1;
	rep->n = n;
	return 1;
}

/* qsort order of entry pointers: bytes of the key (keys hold no NUL). */
static int cmp_entries(const void *a, const void *b)
{
	const struct entry *x = *(const struct entry *const *)a;
	const struct entry *y = *(const struct entry *const *)b;

	return strcmp(x->key, y->key);
}

/* list: the keys with the prefix and their values, in byte order. */
static int op_list(struct mlrt_store_server *srv, const mlrti_store_req *req, mlrti_store_rep *rep)
{
	struct entry **sel = NULL;
	mlrti_store_item *items = NULL;
	size_t n = 0, bytes = 0;

	rep->has_items = 1;
	if (srv->nkeys == 0)
		return 1;
	sel = malloc(srv->nkeys * sizeof(*sel));
	if (sel == NULL)
		goto nomem;
	for (size_t b = 0; b < srv->nbuckets; b++)
		for (struct entry *e = srv->buckets[b]; e != NULL; e = e->next)
			if (has_prefix(e, req->key)) {
				sel[n++] = e;
				bytes += e->klen + e->len + 16;
			}
	if (n > MLRTI_STORE_MAX_ITEMS || bytes > MLRTI_STORE_MAX_REPLY - 1024) {
		free(sel);
		rep->has_items = 0;
		rep->st = MLRT_ERR_TOO_LARGE;
		rep->err.ptr = "the listing is over the reply limit; use a longer prefix";
		rep->err.len = strlen(rep->err.ptr);
		return 1;
	}
	qsort(sel, n, sizeof(*sel), cmp_entries);
	items = malloc((n > 0 ? n : 1) * sizeof(*items));
	if (items == NULL)
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		items[i].key.ptr = sel[i]->key;
		items[i].key.len = sel[i]->klen;
		items[i].val.ptr = sel[i]->val;
		items[i].val.len = sel[i]->len;
	}
	free(sel);
	srv->scratch = items; /* freed once the reply is sent */
	rep->items = items;
	rep->nitems = n;
	return 1;
nomem:
	free(sel);
	rep->has_items = 0;
	rep->st = MLRT_ERR_NOMEM;
	return 1;
}

/* Handlers fill the reply and return 1, or return 0 when the reply comes
 * later (a parked wait). */
typedef int (*op_fn)(struct mlrt_store_server *srv, const mlrti_store_req *req,
                     mlrti_store_rep *rep);

static const op_fn handlers[MLRTI_STORE_OP_COUNT_] = {
	[MLRTI_STORE_OP_SET] = op_set,
	[MLRTI_STORE_OP_GET] = op_get,
	[MLRTI_STORE_OP_WAIT] = op_wait,
	[MLRTI_STORE_OP_WAIT_ANY] = op_wait,
	[MLRTI_STORE_OP_ADD] = op_add,
	[MLRTI_STORE_OP_CAS] = op_cas,
	[MLRTI_STORE_OP_DEL] = op_del,
	[MLRTI_STORE_OP_DEL_PREFIX] = op_del_prefix,
	[MLRTI_STORE_OP_LIST] = op_list,
	[MLRTI_STORE_OP_LEASE_GRANT] = op_lease_grant,
	[MLRTI_STORE_OP_LEASE_RENEW] = op_lease_renew,
	[MLRTI_STORE_OP_LEASE_REVOKE] = op_lease_revoke,
};

/* ---- the loop ---- */

/* Decode and answer one request frame from the client srv->rid. */
static void handle(struct mlrt_store_server *srv, const void *data, size_t len, const char *peer)
{
	mlrti_store_req req;
	mlrti_store_rep rep = {0};
	int rc;

	rc = mlrti_store_decode_request(data, len, &req);
	if (rc != MLRT_OK) {
		mlrt_log(MLRT_LOG_WARN, "store: %s a %zu-byte request from %s: %s (%s)",
		         req.has_id ? "rejected" : "dropped", len, peer, req.why,
		         mlrt_strerror(rc));
		if (req.has_id) {
			rep.id = req.id;
			rep.st = rc;
			rep.err.ptr = req.why;
			rep.err.len = strlen(req.why);
			send_reply(srv, srv->rid, srv->rid_len, &rep);
		}
		goto out;
	}
	rep.id = req.id;
	if (handlers[req.op](srv, &req, &rep))
		send_reply(srv, srv->rid, srv->rid_len, &rep);
out:
	free(srv->scratch);
	srv->scratch = NULL;
	mlrti_store_req_fini(&req);
}

/* Receive and handle one message if there is one: 1 if one was handled,
 * 0 if none was waiting, -1 when the socket is unusable. */
static int serve_one(struct mlrt_store_server *srv)
{
	zmq_msg_t rid, body;
	const char *peer;
	int ret = 1;

	zmq_msg_init(&rid);
	zmq_msg_init(&body);
	if (zmq_msg_recv(&rid, srv->sock, ZMQ_DONTWAIT) < 0) {
		ret = errno == EAGAIN || errno == EINTR ? 0 : -1;
		if (ret < 0)
			mlrt_log(MLRT_LOG_ERROR, "store: receive failed: %s", zmq_strerror(errno));
		goto out;
	}
	/* ROUTER puts the routing id first; the rest of a message is atomic. */
	if (!zmq_msg_more(&rid) || zmq_msg_recv(&body, srv->sock, 0) < 0)
		goto out;
	peer = zmq_msg_gets(&body, "Peer-Address");
	if (peer == NULL)
		peer = "an unknown peer";
	if (zmq_msg_more(&body)) {
		zmq_msg_t extra;
		size_t n = 2;

		int more = 1;

		while (more) {
			zmq_msg_init(&extra);
			more = zmq_msg_recv(&extra, srv->sock, 0) >= 0 && zmq_msg_more(&extra);
			zmq_msg_close(&extra);
			n++;
		}
		mlrt_log(MLRT_LOG_WARN, "store: dropped a %zu-part message from %s: requests are "
		         "single frames", n - 1, peer);
		goto out;
	}
	srv->rid = zmq_msg_data(&rid);
	srv->rid_len = zmq_msg_size(&rid);
	handle(srv, zmq_msg_data(&body), zmq_msg_size(&body), peer);
	srv->rid = NULL;
	srv->rid_len = 0;
out:
	zmq_msg_close(&body);
	zmq_msg_close(&rid);
	return ret;
}

/* Expire waits and leases whose deadline has passed; return how long until
 * the next one is due (at most POLL_MAX_MS). */
static long run_timers(struct mlrt_store_server *srv)
{
	int64_t now = mlrti_now_ms(), next = now + POLL_MAX_MS;
	size_t i = 0;

	while (i < srv->nwaits) {
		if (srv->waits[i]->deadline <= now) {
			answer_wait(srv, srv->waits[i], MLRT_ERR_TIMEOUT, 0);
			wait_remove(srv, i);
			continue;
		}
		if (srv->waits[i]->deadline < next)
			next = srv->waits[i]->deadline;
		i++;
	}
	i = 0;
	while (i < srv->nleases) {
		if (srv->leases[i]->deadline <= now) {
			lease_end(srv, i, "expired");
			continue;
		}
		if (srv->leases[i]->deadline < next)
			next = srv->leases[i]->deadline;
		i++;
	}
	return (long)(next - now);
}

/* The server thread: poll, handle requests, run timers, until stopped. */
static void *serve(void *arg)
{
	struct mlrt_store_server *srv = arg;
	zmq_pollitem_t items[2] = {
		{.socket = srv->sock, .events = ZMQ_POLLIN},
		{.socket = NULL, .fd = srv->wake[0], .events = ZMQ_POLLIN},
	};

	for (;;) {
		long timeout = run_timers(srv);
		int n = 0;

		if (zmq_poll(items, 2, timeout) < 0 && errno != EINTR) {
			mlrt_log(MLRT_LOG_ERROR, "store: poll failed: %s; server %s stops",
			         zmq_strerror(errno), srv->addr);
			break;
		}
		if (items[1].revents & ZMQ_POLLIN)
			break;
		/* Bounded, so that timers run even under a steady stream. */
		while (n < BATCH && serve_one(srv) > 0)
			n++;
	}
	return NULL;
}

/* ---- start and stop ---- */

/* Free srv and everything it holds; the thread must not be running. */
static void server_free(struct mlrt_store_server *srv)
{
	if (srv->sock != NULL)
		zmq_close(srv->sock);
	if (srv->ctx != NULL)
		zmq_ctx_term(srv->ctx);
	for (int i = 0; i < 2; i++)
		if (srv->wake[i] >= 0)
			close(srv->wake[i]);
	while (srv->nleases > 0)
		lease_end(srv, srv->nleases - 1, NULL);
	for (size_t b = 0; b < srv->nbuckets; b++) {
		struct entry *e = srv->buckets[b], *next;

		for (; e != NULL; e = next) {
			next = e->next;
			free(e->val);
			free(e);
		}
	}
	for (size_t i = 0; i < srv->nwaits; i++)
		free(srv->waits[i]);
	free(srv->waits);
	free(srv->leases);
	free(srv->buckets);
	free(srv);
}

/* Fill srv->addr from the bound endpoint, naming the host for a wildcard. */
static int server_set_addr(struct mlrt_store_server *srv)
{
	char last[ADDR_LEN], host[256];
	size_t n = sizeof(last);
	const char *port;

	if (zmq_getsockopt(srv->sock, ZMQ_LAST_ENDPOINT, last, &n) != 0)
		return MLRT_ERR_IO;
	last[sizeof(last) - 1] = '\0';
	port = strrchr(last, ':');
	if (strncmp(last, "tcp://0.0.0.0:", 14) == 0 && port != NULL) {
		if (gethostname(host, sizeof(host)) != 0)
			return MLRT_ERR_IO;
		host[sizeof(host) - 1] = '\0';
		snprintf(srv->addr, sizeof(srv->addr), "tcp://%s%s", host, port);
	} else {
		snprintf(srv->addr, sizeof(srv->addr), "%s", last);
	}
	return MLRT_OK;
}

int mlrt_store_server_start(const char *endpoint, mlrt_store_server **out)
{
	struct mlrt_store_server *srv;
	int64_t maxmsg = (int64_t)MLRTI_STORE_MAX_REQUEST;
	int zero = 0, rc;

	if (endpoint == NULL || out == NULL)
		return MLRT_ERR_INVALID;
	*out = NULL;
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return MLRT_ERR_NOMEM;
	srv->wake[0] = srv->wake[1] = -1;
	srv->next_lease = 1;
	rc = MLRT_ERR_NOMEM;
	srv->nbuckets = MIN_BUCKETS;
	srv->buckets = calloc(srv->nbuckets, sizeof(*srv->buckets));
	if (srv->buckets == NULL)
		goto fail;
	rc = MLRT_ERR_IO;
	srv->ctx = zmq_ctx_new();
	if (srv->ctx == NULL)
		goto fail;
	srv->sock = zmq_socket(srv->ctx, ZMQ_ROUTER);
	if (srv->sock == NULL ||
	    zmq_setsockopt(srv->sock, ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
	    zmq_setsockopt(srv->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) != 0) {
		mlrt_log(MLRT_LOG_ERROR, "store: cannot create the server socket: %s",
		         zmq_strerror(errno));
		goto fail;
	}
	if (zmq_bind(srv->sock, endpoint) != 0) {
		int err = errno;

		rc = err == EINVAL || err == EPROTONOSUPPORT || err == ENOCOMPATPROTO ?
		             MLRT_ERR_INVALID : MLRT_ERR_IO;
		mlrt_log(MLRT_LOG_ERROR, "store: cannot bind %s: %s", endpoint, zmq_strerror(err));
		goto fail;
	}
	MLRTI_CHECK_GOTO(server_set_addr(srv), rc, fail);
	if (pipe2(srv->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
		srv->wake[0] = srv->wake[1] = -1;
		mlrt_log(MLRT_LOG_ERROR, "store: pipe: %s", strerror(errno));
		rc = MLRT_ERR_IO;
		goto fail;
	}
	/* The socket now belongs to the server thread until it is joined. */
	if (pthread_create(&srv->thread, NULL, serve, srv) != 0) {
		mlrt_log(MLRT_LOG_ERROR, "store: cannot start the server thread");
		rc = MLRT_ERR_IO;
		goto fail;
	}
	srv->started = 1;
	mlrt_log(MLRT_LOG_INFO, "store: serving on %s (bound %s)", srv->addr, endpoint);
	*out = srv;
	return MLRT_OK;
fail:
	server_free(srv);
	return rc;
}

const char *mlrt_store_server_addr(const mlrt_store_server *srv)
{
	return srv != NULL ? srv->addr : NULL;
}

int mlrt_store_server_stop(mlrt_store_server *srv)
{
	const char byte = 1;

	if (srv == NULL)
		return MLRT_ERR_INVALID;
	if (srv->started) {
		/* The pipe is empty and non-blocking: this write cannot fail for
		 * lack of room, and the loop checks it on every poll. */
		while (write(srv->wake[1], &byte, 1) < 0 && errno == EINTR)
			;
		pthread_join(srv->thread, NULL);
	}
	server_free(srv);
	return MLRT_OK;
}
