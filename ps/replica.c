/* Replication between parameter servers: the primary of a range forwards
 * its pushes to the range's backup and acknowledges them to the worker
 * once the backup has them; a backup takes over its range when mlrun has
 * marked the primary down (see server.c and docs/ps.md). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include <mlrt/store.h>

#include "ps/optim.h"
#include "ps/server.h"
#include "runtime/common.h"

#define FORWARD_CHECK_MS 100 /* a forward unanswered this long: is the backup down? */

/* Whether server i has been marked down (by mlrun, in the store). */
static int is_down(mlrti_ps_server *s, int i)
{
	char key[400];
	void *val = NULL;
	size_t len;
	int down;

	snprintf(key, sizeof(key), "%sps/down/%d", s->prefix, i);
	down = mlrt_store_get(s->store, key, &val, &len) == MLRT_OK;
	free(val);
	return down;
}

static void *peer_socket(mlrti_ps_server *s, int i)
{
	char key[400], endpoint[MLRTI_PS_ENDPOINT_MAX];
	void *addr = NULL;
	size_t len;
	int zero = 0, rc;

	if (s->peer[i] != NULL)
		return s->peer[i];
	snprintf(key, sizeof(key), "%sps/server/%d", s->prefix, i);
	if (mlrt_store_get(s->store, key, &addr, &len) != MLRT_OK)
		return NULL;
	rc = mlrti_ps_endpoint(addr, endpoint, sizeof(endpoint));
	free(addr);
	if (rc != MLRT_OK)
		return NULL;
	s->peer[i] = zmq_socket(s->zctx, ZMQ_DEALER);
	if (s->peer[i] != NULL &&
	    (zmq_setsockopt(s->peer[i], ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
	     zmq_connect(s->peer[i], endpoint) != 0)) {
		zmq_close(s->peer[i]);
		s->peer[i] = NULL;
	}
	return s->peer[i];
}

int mlrti_ps_flush_orders(mlrti_ps_server *s, int backup);

/* Send push r's frames to backup as a forward (after the orders before
 * it); its id in *fid. */
static int send_forward(mlrti_ps_server *s, mlrti_ps_held *r, int backup, uint64_t *fid)
{
	void *sock = peer_socket(s, backup);
	mlrti_ps_hdr h = r->h;
	char buf[1024];
	size_t len;

	if (sock == NULL || mlrti_ps_flush_orders(s, backup) != MLRT_OK)
		return MLRT_ERR_UNAVAILABLE;
	if (mlrti_ps_held_own(r) != MLRT_OK) /* sent after the worker's answer, perhaps */
		return MLRT_ERR_NOMEM;
	h = r->h;
	h.op = MLRTI_PS_FORWARD;
	h.id = *fid = ++s->next_fwd;
	if (mlrti_ps_hdr_encode(&h, 0, buf, sizeof(buf), &len) != MLRT_OK ||
	    zmq_send(sock, buf, len, ZMQ_SNDMORE) < 0)
		return MLRT_ERR_IO;
	for (int i = 2; i < 5; i++) {
		zmq_msg_t m;

		zmq_msg_init(&m);
		zmq_msg_copy(&m, &r->f[i]); /* shares the data */
		if (zmq_msg_send(&m, sock, i < 4 ? ZMQ_SNDMORE : 0) < 0) {
			zmq_msg_close(&m);
			return MLRT_ERR_IO;
		}
	}
	return MLRT_OK;
}

/* Send push r (taken here as primary of its range) on to backup, and
 * remember to acknowledge it to the worker once the backup has it. */
int mlrti_ps_forward(mlrti_ps_server *s, mlrti_ps_held *r, int backup)
{
	mlrti_ps_ack *a = calloc(1, sizeof(*a));

	if (a == NULL || send_forward(s, r, backup, &a->fid) != MLRT_OK) {
		free(a);
		return MLRT_ERR_IO;
	}
	zmq_msg_init(&a->route);
	zmq_msg_copy(&a->route, &r->f[0]);
	a->h = r->h;
	a->backup = backup;
	a->since = mlrti_now_ms();
	a->next = s->acks;
	s->acks = a;
	return MLRT_OK;
}

/* Orders to a backup are gathered and sent together (one message of
 * entries {worker, range, seq}, 16 bytes each): when ORDER_BATCH of them
 * or ORDER_BYTES of pushed values wait, when the server has nothing else
 * to do, and before anything else goes to that backup (forwards, so that
 * the backup sees the primary's order).  Until then the backup holds the
 * copies; a primary that dies with orders unsent leaves them to be taken
 * in the order they came.  Orders are not answered (that would double the
 * messages of a push): a primary that sent some asks the store every
 * FORWARD_CHECK_MS whether its backups are down
 * (mlrti_ps_check_order_backups), and an order that cannot be queued (the
 * backup's queue is full) is an error. */
#define ORDER_BATCH 64
#define ORDER_BYTES ((size_t)4 << 20)

int mlrti_ps_flush_orders(mlrti_ps_server *s, int backup)
{
	mlrti_ps_orders *o = &s->pending[backup];
	mlrti_ps_hdr h = {.op = MLRTI_PS_ORDER, .nkeys = o->n};
	void *sock;
	char buf[1024];
	size_t len;
	int rc = MLRT_OK;

	if (o->n == 0)
		return MLRT_OK;
	h.id = ++s->next_fwd;
	sock = peer_socket(s, backup);
	if (sock == NULL || mlrti_ps_hdr_encode(&h, 0, buf, sizeof(buf), &len) != MLRT_OK ||
	    zmq_send(sock, buf, len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
	    zmq_send(sock, o->e, o->n * 2 * sizeof(uint64_t), ZMQ_DONTWAIT) < 0)
		rc = MLRT_ERR_IO;
	o->n = 0;
	o->bytes = 0;
	s->ordered = 1;
	return rc;
}

void mlrti_ps_flush_all_orders(mlrti_ps_server *s)
{
	s->orders_since = 0;
	for (int b = 0; b < s->nservers; b++)
		if (s->pending[b].n > 0 && mlrti_ps_flush_orders(s, b) != MLRT_OK)
			mlrt_log(MLRT_LOG_WARN, "ps: server %d cannot send orders to backup %d; it "
			         "will take the copies it holds in the order they came", s->index, b);
}

int mlrti_ps_order(mlrti_ps_server *s, const mlrti_ps_held *r, int backup)
{
	mlrti_ps_orders *o = &s->pending[backup];

	if (o->n == o->cap) {
		size_t cap = o->cap ? 2 * o->cap : ORDER_BATCH;
		uint64_t *e = realloc(o->e, cap * 2 * sizeof(uint64_t));

		if (e == NULL)
			return MLRT_ERR_NOMEM;
		o->e = e;
		o->cap = cap;
	}
	o->e[2 * o->n] = (uint64_t)(uint32_t)r->h.worker | (uint64_t)(uint32_t)r->h.range << 32;
	o->e[2 * o->n + 1] = r->h.seq;
	o->n++;
	if (s->orders_since == 0)
		s->orders_since = mlrti_now_ms();
	o->bytes += r->nf > 4 ? zmq_msg_size((zmq_msg_t *)&r->f[4]) : 0;
	if (o->n >= ORDER_BATCH || o->bytes >= ORDER_BYTES)
		return mlrti_ps_flush_orders(s, backup);
	return MLRT_OK;
}

void mlrti_ps_check_order_backups(mlrti_ps_server *s)
{
	int64_t now = mlrti_now_ms();

	if (!s->ordered || now < s->next_order_check)
		return;
	s->ordered = 0;
	s->next_order_check = now + FORWARD_CHECK_MS;
	for (int rg = 0; rg < s->nservers; rg++) {
		mlrti_ps_range *g = &s->ranges[rg];

		if (g->role != MLRTI_PS_PRIMARY || g->backup < 0 || !is_down(s, g->backup))
			continue;
		mlrt_log(MLRT_LOG_WARN, "ps: server %d: backup server %d of range %d is down; "
		         "the range goes on without a copy", s->index, g->backup, rg);
		s->pending[g->backup].n = 0; /* a server started again gets a snapshot */
		s->pending[g->backup].bytes = 0;
		g->backup = -1;
		g->backup_epoch++;
		mlrti_ps_publish_range(s, rg);
	}
}

int mlrti_ps_forward_quiet(mlrti_ps_server *s, mlrti_ps_held *r, int backup)
{
	uint64_t fid;

	return send_forward(s, r, backup, &fid);
}

void mlrti_ps_ack_free(mlrti_ps_ack *a)
{
	zmq_msg_close(&a->route);
	free(a);
}

/* The backup answered forward fid: acknowledge the push to its worker. */
void mlrti_ps_forward_done(mlrti_ps_server *s, uint64_t fid, int status, const char *msg)
{
	for (mlrti_ps_ack **pp = &s->acks; *pp != NULL; pp = &(*pp)->next) {
		mlrti_ps_ack *a = *pp;

		if (a->fid != fid)
			continue;
		*pp = a->next;
		mlrti_ps_reply_to(s, &a->route, &a->h, status, msg, NULL);
		mlrti_ps_ack_free(a);
		return;
	}
}

/* Pushes waiting on a backup that is down: acknowledge them, and go on
 * without a copy of the range until the backup is back.  Asks the store
 * once per backup, at most every FORWARD_CHECK_MS. */
void mlrti_ps_check_backups(mlrti_ps_server *s)
{
	int64_t now = mlrti_now_ms();
	int down[s->nservers];

	if (now < s->next_backup_check)
		return;
	s->next_backup_check = now + FORWARD_CHECK_MS;
	for (int i = 0; i < s->nservers; i++)
		down[i] = -1; /* not asked */
	for (mlrti_ps_ack **pp = &s->acks; *pp != NULL;) {
		mlrti_ps_ack *a = *pp;
		mlrti_ps_range *g = &s->ranges[a->h.range];

		if (now - a->since >= FORWARD_CHECK_MS && down[a->backup] < 0)
			down[a->backup] = is_down(s, a->backup);
		if (down[a->backup] <= 0) {
			pp = &a->next;
			continue;
		}
		if (g->backup == a->backup) {
			mlrt_log(MLRT_LOG_WARN, "ps: server %d: backup server %d of range %d is down; "
			         "the range goes on without a copy", s->index, a->backup, a->h.range);
			g->backup = -1;
			g->backup_epoch++;
			mlrti_ps_publish_range(s, a->h.range);
		}
		*pp = a->next;
		mlrti_ps_reply_to(s, &a->route, &a->h, MLRT_OK, NULL, NULL);
		mlrti_ps_ack_free(a);
	}
}

void mlrti_ps_publish_range(mlrti_ps_server *s, int rg)
{
	char key[400], val[32];

	snprintf(key, sizeof(key), "%sps/range/%d", s->prefix, rg);
	snprintf(val, sizeof(val), "%d %d", s->index, s->ranges[rg].backup);
	if (mlrt_store_set(s->store, key, val, strlen(val)) != MLRT_OK)
		mlrt_log(MLRT_LOG_WARN, "ps: server %d cannot record range %d in the store", s->index,
		         rg);
}

/* May this server answer workers for range rg?  A backup takes over its
 * range once the primary is down. */
int mlrti_ps_serves(mlrti_ps_server *s, int rg)
{
	mlrti_ps_range *g = &s->ranges[rg];

	if (g->role == MLRTI_PS_PRIMARY)
		return 1;
	if (g->role == MLRTI_PS_BACKUP && !g->catching_up && is_down(s, g->primary)) {
		mlrt_log(MLRT_LOG_WARN, "ps: server %d takes over range %d: server %d is down",
		         s->index, rg, g->primary);
		g->role = MLRTI_PS_PRIMARY;
		g->backup = -1;
		g->backup_epoch++;
		mlrti_ps_take_copies(s, rg);
		mlrti_ps_publish_range(s, rg);
		return 1;
	}
	return 0;
}


/* ---- a server started again catches up ---- */

void mlrti_ps_request_snapshots(mlrti_ps_server *s)
{
	for (int rg = 0; rg < s->nservers; rg++) {
		mlrti_ps_range *g = &s->ranges[rg];
		mlrti_ps_hdr h = {.op = MLRTI_PS_CATCHUP, .id = (uint64_t)rg, .worker = s->index,
		                  .range = rg};
		char buf[512];
		size_t len;
		void *sock;

		if (!g->catching_up)
			continue;
		sock = peer_socket(s, g->primary);
		if (sock == NULL || mlrti_ps_hdr_encode(&h, 0, buf, sizeof(buf), &len) != MLRT_OK ||
		    zmq_send(sock, buf, len, 0) < 0) {
			mlrt_log(MLRT_LOG_ERROR, "ps: server %d cannot ask server %d for range %d",
			         s->index, g->primary, rg);
			g->catching_up = 0;
			g->role = MLRTI_PS_NO_ROLE;
		}
	}
}

/* Pushes of worker w queued in range g (SYNC) and not yet applied. */
static int queue_len(const mlrti_ps_range *g, int w)
{
	int n = 0;

	for (const mlrti_ps_held *r = g->queue[w]; r != NULL; r = r->next)
		n++;
	return n;
}

static int send_part(void *sock, const void *p, size_t len, int more)
{
	return zmq_send(sock, p, len, more ? ZMQ_SNDMORE : 0) < 0 ? MLRT_ERR_IO : MLRT_OK;
}

/* The range's keys, their optimizer state and the workers' positions, as
 * frames after header h (nkeys set here). */
static int snapshot_frames(mlrti_ps_server *s, int rg, zmq_msg_t *route, mlrti_ps_hdr *h)
{
	mlrti_ps_range *g = &s->ranges[rg];
	size_t per = mlrti_optim_state_floats(s->opts.optimizer), n = 0, nv = 0, i = 0, v = 0;
	uint64_t *keys = NULL, *lens = NULL, *seqs = NULL;
	int64_t *ups = NULL, *clocks = NULL;
	float *vals = NULL, *state = NULL;
	mlrti_ps_key *k, *tmp;
	char buf[1024];
	size_t len;
	zmq_msg_t id;
	int rc = MLRT_ERR_NOMEM;

	HASH_ITER(hh, s->keys, k, tmp) {
		if (mlrti_ps_server_of(k->key, s->nservers) == rg)
			n++, nv += k->len;
	}
	keys = calloc(n + 1, 8), lens = calloc(n + 1, 8), ups = calloc(n + 1, 8);
	vals = calloc(nv + 1, 4), state = calloc(per * nv + 1, 4);
	seqs = calloc((size_t)s->nworkers, 8), clocks = calloc((size_t)s->nworkers, 8);
	if (!keys || !lens || !ups || !vals || !state || !seqs || !clocks)
		goto out;
	HASH_ITER(hh, s->keys, k, tmp) {
		if (mlrti_ps_server_of(k->key, s->nservers) != rg)
			continue;
		keys[i] = k->key, lens[i] = k->len, ups[i++] = k->t;
		memcpy(vals + v, k->w, k->len * 4);
		if (per > 0)
			memcpy(state + per * v, k->state, per * k->len * 4);
		v += k->len;
	}
	/* SYNC pushes still queued here are replayed to the new backup
	 * after the snapshot: count them out of the positions. */
	for (int w = 0; w < s->nworkers; w++) {
		int q = queue_len(g, w);

		seqs[w] = g->seq[w] - (uint64_t)q;
		clocks[w] = g->clock[w] - q;
	}
	h->nkeys = n;
	rc = MLRT_ERR_IO;
	zmq_msg_init(&id);
	zmq_msg_copy(&id, route);
	if (zmq_msg_send(&id, s->sock, ZMQ_SNDMORE) < 0) {
		zmq_msg_close(&id);
		goto out;
	}
	if (mlrti_ps_hdr_encode(h, 0, buf, sizeof(buf), &len) != MLRT_OK ||
	    send_part(s->sock, buf, len, 1) || send_part(s->sock, keys, n * 8, 1) ||
	    send_part(s->sock, lens, n * 8, 1) || send_part(s->sock, ups, n * 8, 1) ||
	    send_part(s->sock, vals, nv * 4, 1) || send_part(s->sock, state, per * nv * 4, 1) ||
	    send_part(s->sock, seqs, (size_t)s->nworkers * 8, 1) ||
	    send_part(s->sock, clocks, (size_t)s->nworkers * 8, 1) ||
	    send_part(s->sock, &g->applied, 8, 0))
		goto out;
	rc = MLRT_OK;
out:
	free(keys), free(lens), free(ups), free(vals), free(state), free(seqs), free(clocks);
	return rc;
}

void mlrti_ps_send_snapshot(mlrti_ps_server *s, mlrti_ps_held *r)
{
	int rg = r->h.range, to = r->h.worker;
	mlrti_ps_range *g = &s->ranges[rg];
	mlrti_ps_hdr h = {.op = MLRTI_PS_CATCHUP, .id = r->h.id, .range = rg, .has_opts = 1,
	                  .opts = s->opts};

	/* The backups see every order before anything of the snapshot. */
	mlrti_ps_flush_all_orders(s);

	if (g->role != MLRTI_PS_PRIMARY || !s->have_opts || to < 0 || to >= s->nservers ||
	    to == s->index) {
		char why[MLRTI_PS_MSG_MAX];

		snprintf(why, sizeof(why), "server %d cannot give range %d to server %d", s->index,
		         rg, to);
		mlrti_ps_reply_to(s, &r->f[0], &r->h, MLRT_ERR_UNAVAILABLE, why, NULL);
		return;
	}
	if (snapshot_frames(s, rg, &r->f[0], &h) != MLRT_OK) {
		mlrt_log(MLRT_LOG_ERROR, "ps: server %d cannot send range %d to server %d", s->index,
		         rg, to);
		return;
	}
	/* The new process has a new address: connect again. */
	if (s->peer[to] != NULL) {
		zmq_close(s->peer[to]);
		s->peer[to] = NULL;
	}
	g->backup = to;
	g->backup_epoch++;
	for (int w = 0; w < s->nworkers; w++)
		for (mlrti_ps_held *q = g->queue[w]; q != NULL; q = q->next)
			mlrti_ps_forward_quiet(s, q, to);
	/* Pushes forwarded to the backup's former process, which died before
	 * answering (it can come back before we saw it marked down): the
	 * snapshot carries them now, so they are safe. */
	for (mlrti_ps_ack **pp = &s->acks; *pp != NULL;) {
		mlrti_ps_ack *a = *pp;

		if (a->backup != to || a->h.range != rg) {
			pp = &a->next;
			continue;
		}
		*pp = a->next;
		mlrti_ps_reply_to(s, &a->route, &a->h, MLRT_OK, NULL, NULL);
		mlrti_ps_ack_free(a);
	}
	mlrti_ps_publish_range(s, rg);
	mlrt_log(MLRT_LOG_WARN, "ps: server %d: server %d is back as the backup of range %d",
	         s->index, to, rg);
}

/* Receive one frame of exactly want bytes into dst. */
static int take_frame(void *sock, void *dst, size_t want, int *more)
{
	zmq_msg_t m;
	int rc = MLRT_ERR_PROTOCOL;

	if (!*more)
		return rc;
	zmq_msg_init(&m);
	if (zmq_msg_recv(&m, sock, 0) >= 0 && zmq_msg_size(&m) == want) {
		memcpy(dst, zmq_msg_data(&m), want);
		rc = MLRT_OK;
	}
	*more = zmq_msg_more(&m);
	zmq_msg_close(&m);
	return rc;
}

int mlrti_ps_install_snapshot(mlrti_ps_server *s, void *sock, const mlrti_ps_hdr *h)
{
	mlrti_ps_range *g = &s->ranges[h->range];
	size_t n = (size_t)h->nkeys, nv = 0, per, v = 0;
	uint64_t *keys = calloc(n + 1, 8), *lens = calloc(n + 1, 8);
	int64_t *ups = calloc(n + 1, 8);
	float *vals = NULL, *state = NULL;
	char why[MLRTI_PS_MSG_MAX];
	int more = 1, rc = MLRT_ERR_NOMEM;

	if (!s->have_opts) {
		s->opts = h->opts;
		s->have_opts = 1;
	}
	per = mlrti_optim_state_floats(s->opts.optimizer);
	if (!keys || !lens || !ups || take_frame(sock, keys, n * 8, &more) ||
	    take_frame(sock, lens, n * 8, &more) || take_frame(sock, ups, n * 8, &more))
		goto out;
	for (size_t i = 0; i < n; i++)
		nv += lens[i];
	vals = calloc(nv + 1, 4), state = calloc(per * nv + 1, 4);
	rc = MLRT_ERR_PROTOCOL;
	if (!vals || !state || take_frame(sock, vals, nv * 4, &more) ||
	    take_frame(sock, state, per * nv * 4, &more) ||
	    take_frame(sock, g->seq, (size_t)s->nworkers * 8, &more) ||
	    take_frame(sock, g->clock, (size_t)s->nworkers * 8, &more) ||
	    take_frame(sock, &g->applied, 8, &more))
		goto out;
	for (size_t i = 0; i < n; i++) {
		mlrti_ps_key *k;

		if (mlrti_ps_key_get(s, keys[i], lens[i], &k, why, sizeof(why)) != MLRT_OK)
			goto out;
		if (mlrti_ps_key_writable(k) != MLRT_OK)
			goto out;
		memcpy(k->w, vals + v, lens[i] * 4);
		if (per > 0)
			memcpy(k->state, state + per * v, per * lens[i] * 4);
		k->t = ups[i];
		v += lens[i];
	}
	g->catching_up = 0;
	mlrt_log(MLRT_LOG_WARN, "ps: server %d is back: backup of range %d (%zu keys from server "
	         "%d)", s->index, h->range, n, g->primary);
	rc = MLRT_OK;
out:
	while (more) { /* what does not fit */
		zmq_msg_t m;

		zmq_msg_init(&m);
		more = zmq_msg_recv(&m, sock, 0) >= 0 && zmq_msg_more(&m);
		zmq_msg_close(&m);
	}
	if (rc != MLRT_OK)
		mlrt_log(MLRT_LOG_ERROR, "ps: server %d: a malformed snapshot of range %d", s->index,
		         h->range);
	free(keys), free(lens), free(ups), free(vals), free(state);
	return rc;
}
