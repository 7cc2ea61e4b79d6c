/* Nonblocking collectives.
 *
 * Each communicator that issues one gets a progress thread and a FIFO
 * queue.  The thread runs requests in issue order, so every rank runs the
 * same collectives in the same order.  Requests issued inside a group are
 * released together at mlrt_group_end with a group number; the thread
 * fuses consecutive allreduces of one group (same dtype and op) into one
 * buffer of at most fusion_bytes; requests on device memory run unfused.
 * Fusion depends only on what was issued, never on timing, so every rank
 * fuses alike. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "comm/async.h"
#include "runtime/common.h"
#include "runtime/devptr.h"

struct mlrt_request {
	mlrti_coll_args a;
	mlrt_comm *c;
	unsigned long group; /* 0: not issued in a group */
	int held;            /* in the open group, not yet released */
	int status;
	int done;
	struct mlrt_request *next;
};

typedef struct async_state {
	pthread_mutex_t mu;
	pthread_cond_t work; /* the queue got a request, or stop */
	pthread_cond_t done; /* a request completed */
	mlrt_request *head, *tail;   /* released to the thread */
	mlrt_request *ghead, *gtail; /* held by the open group */
	int group_depth;
	unsigned long groups;        /* groups released so far */
	int stop;
	pthread_t thread;
	void *fusion;                /* fusion buffer, grown on demand */
	size_t fusion_cap;
} async_state;

static void push(mlrt_request **head, mlrt_request **tail, mlrt_request *r)
{
	r->next = NULL;
	if (*tail != NULL)
		(*tail)->next = r;
	else
		*head = r;
	*tail = r;
}

/* Device memory is never packed into the (host) fusion buffer: such a
 * request runs on its own, through the device path. */
static int on_device(const mlrt_request *r)
{
	return mlrti_device_of(r->a.send) >= 0 ||
	       (r->a.recv != r->a.send && mlrti_device_of(r->a.recv) >= 0);
}

static int fusable(const mlrt_comm *c, const mlrt_request *first, const mlrt_request *r,
                   size_t total)
{
	size_t bytes = r->a.count * mlrt_dtype_size(r->a.t);

	return r->group != 0 && r->group == first->group && r->a.coll == MLRTI_COLL_ALLREDUCE &&
	       r->a.t == first->a.t && r->a.op == first->a.op && total + bytes <= c->fusion_bytes &&
	       !on_device(r);
}

/* Make room for bytes in the fusion buffer (touched once when grown). */
static int fusion_reserve(async_state *s, size_t bytes)
{
	void *p;

	if (bytes <= s->fusion_cap)
		return MLRT_OK;
	if (posix_memalign(&p, 64, bytes) != 0)
		return MLRT_ERR_NOMEM;
	memset(p, 0, bytes);
	free(s->fusion);
	s->fusion = p;
	s->fusion_cap = bytes;
	return MLRT_OK;
}

/* Run n fused allreduces (a list from first) as one collective. */
static int run_fused(mlrt_comm *c, async_state *s, mlrt_request *first, int n, size_t total)
{
	size_t es = mlrt_dtype_size(first->a.t), off = 0;
	mlrti_coll_args a = first->a;
	mlrt_request *r = first;
	int rc = fusion_reserve(s, total);

	if (rc != MLRT_OK)
		return rc;
	for (int i = 0; i < n; i++, r = r->next) {
		memcpy((char *)s->fusion + off, r->a.send, r->a.count * es);
		off += r->a.count * es;
	}
	a.send = a.recv = s->fusion;
	a.count = total / es;
	rc = mlrti_coll_run(c, &a);
	off = 0;
	for (r = first; rc == MLRT_OK && n-- > 0; r = r->next) {
		memcpy(r->a.recv, (char *)s->fusion + off, r->a.count * es);
		off += r->a.count * es;
	}
	return rc;
}

static _Thread_local int on_progress_thread;

int mlrti_async_on_progress_thread(void)
{
	return on_progress_thread;
}

static void *progress_main(void *arg)
{
	mlrt_comm *c = arg;
	async_state *s = c->async;

	on_progress_thread = 1;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		mlrt_request *first, *r;
		size_t total;
		int n = 1, rc, stopping;

		while (!s->stop && s->head == NULL)
			pthread_cond_wait(&s->work, &s->mu);
		if (s->head == NULL)
			break;
		/* Take the head and, when it can fuse, what follows it. */
		first = s->head;
		total = first->a.count * mlrt_dtype_size(first->a.t);
		if (c->fusion_bytes > 0 && fusable(c, first, first, 0)) {
			for (r = first->next; r != NULL && fusable(c, first, r, total); r = r->next) {
				total += r->a.count * mlrt_dtype_size(r->a.t);
				n++;
			}
		}
		/* The n requests stay linked from first; the queue goes on after. */
		for (int i = 0; i < n; i++)
			s->head = s->head->next;
		if (s->head == NULL)
			s->tail = NULL;
		stopping = s->stop;
		pthread_mutex_unlock(&s->mu);

		if (stopping)
			rc = MLRT_ERR_ABORTED;
		else if (n > 1)
			rc = run_fused(c, s, first, n, total);
		else
			rc = mlrti_coll_run(c, &first->a);
		if (n > 1 && rc == MLRT_OK)
			atomic_fetch_add(&c->fused_requests, (unsigned long long)(n - 1));

		pthread_mutex_lock(&s->mu);
		r = first;
		for (int i = 0; i < n; i++) {
			mlrt_request *next = r->next;

			r->status = rc;
			r->done = 1;
			r = next;
		}
		pthread_cond_broadcast(&s->done);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* Move the held group's requests, numbered as one group, to the queue.
 * Called with s->mu held. */
static void release_group(async_state *s)
{
	if (s->ghead == NULL)
		return;
	s->groups++;
	for (mlrt_request *r = s->ghead; r != NULL; r = r->next) {
		r->group = s->groups;
		r->held = 0;
	}
	if (s->tail != NULL)
		s->tail->next = s->ghead;
	else
		s->head = s->ghead;
	s->tail = s->gtail;
	s->ghead = s->gtail = NULL;
	pthread_cond_signal(&s->work);
}

/* Start c's progress thread on first use. */
static int ensure_started(mlrt_comm *c)
{
	async_state *s;

	if (c->async != NULL)
		return MLRT_OK;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return MLRT_ERR_NOMEM;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->done, NULL);
	c->async = s;
	if (pthread_create(&s->thread, NULL, progress_main, c) != 0) {
		c->async = NULL;
		free(s);
		mlrt_log(MLRT_LOG_ERROR, "comm: cannot start the progress thread");
		return MLRT_ERR_IO;
	}
	return MLRT_OK;
}

int mlrti_async_active(mlrt_comm *c)
{
	return c->async != NULL;
}

/* Queue a checked collective; *out gets the request. */
static int submit(mlrt_comm *c, const mlrti_coll_args *a, mlrt_request **out)
{
	mlrt_request *r;
	async_state *s;
	int rc = mlrti_coll_check(c, a);

	if (out == NULL)
		return MLRT_ERR_INVALID;
	*out = NULL;
	if (rc != MLRT_OK)
		return rc;
	rc = ensure_started(c);
	if (rc != MLRT_OK)
		return rc;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return MLRT_ERR_NOMEM;
	r->a = *a;
	r->c = c;
	s = c->async;
	pthread_mutex_lock(&s->mu);
	if (s->group_depth > 0) {
		r->held = 1;
		push(&s->ghead, &s->gtail, r);
	} else {
		push(&s->head, &s->tail, r);
		pthread_cond_signal(&s->work);
	}
	pthread_mutex_unlock(&s->mu);
	*out = r;
	return MLRT_OK;
}

int mlrti_async_run(mlrt_comm *c, const mlrti_coll_args *a)
{
	async_state *s = c->async;
	mlrt_request *r;
	int rc;

	if (s->group_depth > 0) {
		mlrt_log(MLRT_LOG_ERROR, "%s: a blocking collective inside a group would wait for "
		                         "itself; use the nonblocking one", mlrti_coll_name(a->coll));
		return MLRT_ERR_INVALID;
	}
	rc = submit(c, a, &r);
	return rc == MLRT_OK ? mlrt_wait(r) : rc;
}

void mlrti_async_stop(mlrt_comm *c)
{
	async_state *s = c->async;

	if (s == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	s->stop = 1;
	/* Held group requests are released to fail with the rest. */
	release_group(s);
	pthread_cond_signal(&s->work);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->work);
	pthread_cond_destroy(&s->done);
	free(s->fusion);
	free(s);
	c->async = NULL;
}

/* A request of a group that is still open would wait forever. */
static int held(const mlrt_request *r)
{
	if (r->held)
		mlrt_log(MLRT_LOG_ERROR, "%s: waiting on a request whose group is still open; call "
		                         "mlrt_group_end first", mlrti_coll_name(r->a.coll));
	return r->held;
}

int mlrt_wait(mlrt_request *r)
{
	async_state *s;
	int rc;

	if (r == NULL)
		return MLRT_ERR_INVALID;
	s = r->c->async;
	pthread_mutex_lock(&s->mu);
	if (held(r)) {
		pthread_mutex_unlock(&s->mu);
		return MLRT_ERR_INVALID;
	}
	while (!r->done)
		pthread_cond_wait(&s->done, &s->mu);
	pthread_mutex_unlock(&s->mu);
	rc = r->status;
	free(r);
	return rc;
}

int mlrt_test(mlrt_request *r, int *done)
{
	async_state *s;
	int rc = MLRT_OK;

	if (r == NULL || done == NULL)
		return MLRT_ERR_INVALID;
	s = r->c->async;
	pthread_mutex_lock(&s->mu);
	*done = r->done;
	pthread_mutex_unlock(&s->mu);
	if (*done) {
		rc = r->status;
		free(r);
	}
	return rc;
}

int mlrt_group_start(mlrt_comm *c)
{
	int rc;

	if (c == NULL)
		return MLRT_ERR_INVALID;
	rc = ensure_started(c);
	if (rc == MLRT_OK) {
		async_state *s = c->async;

		pthread_mutex_lock(&s->mu);
		s->group_depth++;
		pthread_mutex_unlock(&s->mu);
	}
	return rc;
}

int mlrt_group_end(mlrt_comm *c)
{
	async_state *s;

	if (c == NULL || c->async == NULL)
		return MLRT_ERR_INVALID;
	s = c->async;
	pthread_mutex_lock(&s->mu);
	if (s->group_depth == 0) {
		pthread_mutex_unlock(&s->mu);
		mlrt_log(MLRT_LOG_ERROR, "mlrt_group_end without mlrt_group_start");
		return MLRT_ERR_INVALID;
	}
	if (--s->group_depth == 0)
		release_group(s);
	pthread_mutex_unlock(&s->mu);
	return MLRT_OK;
}

int mlrt_iallreduce(mlrt_comm *c, const void *send, void *recv, size_t count, mlrt_dtype t,
                    mlrt_op op, mlrt_request **req)
{
	mlrti_coll_args a = {MLRTI_COLL_ALLREDUCE, send, recv, count, t, op, 0};

	return submit(c, &a, req);
}

int mlrt_ibroadcast(mlrt_comm *c, void *buf, size_t count, mlrt_dtype t, int root,
                    mlrt_request **req)
{
	mlrti_coll_args a = {MLRTI_COLL_BROADCAST, buf, buf, count, t, MLRT_SUM, root};

	return submit(c, &a, req);
}

int mlrt_iallgather(mlrt_comm *c, const void *send, void *recv, size_t count_per_rank,
                    mlrt_dtype t, mlrt_request **req)
{
	mlrti_coll_args a = {MLRTI_COLL_ALLGATHER, send, recv, count_per_rank, t, MLRT_SUM, 0};

	return submit(c, &a, req);
}

int mlrt_ireduce_scatter(mlrt_comm *c, const void *send, void *recv, size_t count_per_rank,
                         mlrt_dtype t, mlrt_op op, mlrt_request **req)
{
	mlrti_coll_args a = {MLRTI_COLL_REDUCE_SCATTER, send, recv, count_per_rank, t, op, 0};

	return submit(c, &a, req);
}

int mlrt_ibarrier(mlrt_comm *c, mlrt_request **req)
{
	mlrti_coll_args a = {MLRTI_COLL_BARRIER, NULL, NULL, 0, MLRT_U8, MLRT_SUM, 0};

	return submit(c, &a, req);
}
