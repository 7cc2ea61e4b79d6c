/* The staged path of the device collectives: device memory is copied
 * into pinned host staging buffers, the host collectives run on them
 * chunk by chunk, and the results are copied back, pipelined so that the
 * copy of chunk k+1 into one staging slot overlaps the host collective of
 * chunk k in the other, and the copy back of chunk k overlaps the
 * collective of chunk k+1:
 *
 *     in stream:   D2H 0 | D2H 1        | D2H 2        | ...
 *     host:              | collective 0 | collective 1 | collective 2 ...
 *     out stream:                       | H2D 0        | H2D 1 ...
 *
 * Each chunk is one host collective with its own sequence number; the
 * chunking depends only on the arguments and MLRT_STAGE_CHUNK_BYTES, so
 * every rank chunks alike, and the host algorithms give every rank the
 * same bits.  The copies go through an ops table: CUDA streams and events
 * (HAVE_CUDA), or memcpy for host buffers (MLRT_DEVICE_COLL=staged-host,
 * for tests), whose copies are deferred to the latest moment the pipeline
 * allows, so that a missing wait shows as a wrong result. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "mlrt_config.h"

#if HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "comm/device.h"
#include "runtime/common.h"

#define DEFAULT_STAGE_CHUNK_BYTES (4u << 20)
/* Copies still in flight after a failure get this long to finish before
 * the staging buffers are reused or freed. */
#define DRAIN_MS 5000

/* A copy of rows rows of width bytes, rows dpitch / spitch apart. */
typedef struct copy2d {
	void *dst;
	size_t dpitch;
	const void *src;
	size_t spitch, width, rows;
} copy2d;

/* The copy ops.  Each returns MLRT_OK or an mlrt_status, having logged. */
typedef struct stage_ops {
	const char *name;
	/* Start a copy into staging slot `slot` (d.dst points into it).  Does
	 * not block; ordered after the previous copy out of that slot. */
	int (*to_stage)(mlrti_staged *s, int slot, const copy2d *d);
	/* Start a copy out of staging slot `slot` (d.src points into it).
	 * Does not block. */
	int (*from_stage)(mlrti_staged *s, int slot, const copy2d *d);
	/* Block until the last copy into slot is complete: bounded by the
	 * communicator's timeout; gives up when the communicator fails. */
	int (*wait_in)(mlrti_staged *s, int slot);
	/* Block until the last copy out of slot is complete (same bounds):
	 * before the host writes a slot that no copy in has ordered. */
	int (*wait_free)(mlrti_staged *s, int slot);
	/* Block until every copy out of the staging slots is complete.  drain:
	 * after a failure, wait at most DRAIN_MS, whatever the failed flag. */
	int (*wait_out)(mlrti_staged *s, int drain);
	/* Free the staging buffers and the rest (copies are complete). */
	void (*close)(mlrti_staged *s);
} stage_ops;

struct mlrti_staged {
	const stage_ops *ops;
	mlrt_comm *c;
	int device;            /* CUDA ordinal; -1: host buffers */
	void *slot[2];
	size_t slot_bytes;     /* >= chunk_bytes and >= 8 * size */
	size_t chunk_bytes;
	const char *what;      /* the collective in progress, for messages */

	/* Host ops: the copies not done yet. */
	copy2d pend_in[2], pend_out[2];
	int has_in[2], has_out[2];

#if HAVE_CUDA
	cudaStream_t in, out;  /* blocking streams: ordered after the legacy default stream */
	cudaEvent_t in_done[2], out_done[2];
	int out_recorded[2];
#endif
};

int mlrti_device_mode_read(mlrti_device_mode *mode)
{
	const char *v = getenv("MLRT_DEVICE_COLL");

	*mode = MLRTI_DEVICE_AUTO;
	if (v == NULL || *v == '\0' || strcmp(v, "auto") == 0)
		return MLRT_OK;
	if (strcmp(v, "nccl") == 0)
		*mode = MLRTI_DEVICE_NCCL;
	else if (strcmp(v, "staged") == 0)
		*mode = MLRTI_DEVICE_STAGED;
	else if (strcmp(v, "staged-host") == 0)
		*mode = MLRTI_DEVICE_STAGED_HOST;
	else {
		mlrt_log(MLRT_LOG_ERROR, "comm: MLRT_DEVICE_COLL=%s is not nccl, staged, auto (or "
		                         "staged-host, for tests); unset it or pick one", v);
		return MLRT_ERR_INVALID;
	}
	return MLRT_OK;
}

static void copy_now(const copy2d *d)
{
	for (size_t r = 0; r < d->rows; r++)
		memcpy((char *)d->dst + r * d->dpitch, (const char *)d->src + r * d->spitch, d->width);
}

/* ---- memcpy ops (host buffers; tests) ---- */

static int host_to_stage(mlrti_staged *s, int slot, const copy2d *d)
{
	/* What a stream would do: the copy out of this slot goes first. */
	if (s->has_out[slot]) {
		copy_now(&s->pend_out[slot]);
		s->has_out[slot] = 0;
	}
	s->pend_in[slot] = *d;
	s->has_in[slot] = 1;
	return MLRT_OK;
}

static int host_from_stage(mlrti_staged *s, int slot, const copy2d *d)
{
	if (s->has_out[slot])
		copy_now(&s->pend_out[slot]);
	s->pend_out[slot] = *d;
	s->has_out[slot] = 1;
	return MLRT_OK;
}

static int host_wait_in(mlrti_staged *s, int slot)
{
	if (s->has_in[slot]) {
		copy_now(&s->pend_in[slot]);
		s->has_in[slot] = 0;
	}
	return MLRT_OK;
}

static int host_wait_free(mlrti_staged *s, int slot)
{
	if (s->has_out[slot]) {
		copy_now(&s->pend_out[slot]);
		s->has_out[slot] = 0;
	}
	return MLRT_OK;
}

static int host_wait_out(mlrti_staged *s, int drain)
{
	for (int i = 0; i < 2; i++) {
		if (s->has_out[i] && !drain)
			copy_now(&s->pend_out[i]);
		/* A copy into the stage that never ran is dropped too. */
		s->has_out[i] = 0;
		if (drain)
			s->has_in[i] = 0;
	}
	return MLRT_OK;
}

static void host_close(mlrti_staged *s)
{
	free(s->slot[0]);
	free(s->slot[1]);
}

static const stage_ops host_ops = {
	.name = "memcpy",
	.to_stage = host_to_stage,
	.from_stage = host_from_stage,
	.wait_in = host_wait_in,
	.wait_free = host_wait_free,
	.wait_out = host_wait_out,
	.close = host_close,
};

/* ---- CUDA ops ---- */

#if HAVE_CUDA

/* Log a failed CUDA call of the staged path: what, where, what to do. */
static int cuda_fail(const mlrti_staged *s, const char *call, cudaError_t e)
{
	mlrt_log(MLRT_LOG_ERROR, "comm: staged %s on device %d: %s failed: %s (%s); %s",
	         s->what, s->device, call, cudaGetErrorString(e), cudaGetErrorName(e),
	         e == cudaErrorMemoryAllocation
	             ? "free device or pinned memory, or lower MLRT_STAGE_CHUNK_BYTES"
	             : "the CUDA context may be unusable: check the device (nvidia-smi) and "
	               "restart the job");
	return e == cudaErrorMemoryAllocation ? MLRT_ERR_NOMEM : MLRT_ERR_UNAVAILABLE;
}

/* Pitches of 2D copies stay below this (CUDA bounds them). */
#define MAX_PITCH ((size_t)1 << 30)

static int cuda_copy(mlrti_staged *s, cudaStream_t st, const copy2d *d)
{
	cudaError_t e = cudaSuccess;

	if (d->rows > 1 && d->dpitch <= MAX_PITCH && d->spitch <= MAX_PITCH)
		e = cudaMemcpy2DAsync(d->dst, d->dpitch, d->src, d->spitch, d->width, d->rows,
		                      cudaMemcpyDefault, st);
	else
		/* One row, or rows too far apart for a 2D copy: row by row. */
		for (size_t r = 0; r < d->rows; r++) {
			e = cudaMemcpyAsync((char *)d->dst + r * d->dpitch,
			                    (const char *)d->src + r * d->spitch, d->width,
			                    cudaMemcpyDefault, st);
			if (e != cudaSuccess)
				break;
		}
	return e == cudaSuccess ? MLRT_OK : cuda_fail(s, "cudaMemcpyAsync", e);
}

static int cuda_to_stage(mlrti_staged *s, int slot, const copy2d *d)
{
	cudaError_t e;
	int rc;

	/* The slot's previous result must have left before new data lands:
	 * ordered on the device, the host does not wait. */
	if (s->out_recorded[slot] && (e = cudaStreamWaitEvent(s->in, s->out_done[slot], 0)) != cudaSuccess)
		return cuda_fail(s, "cudaStreamWaitEvent", e);
	rc = cuda_copy(s, s->in, d);
	if (rc != MLRT_OK)
		return rc;
	e = cudaEventRecord(s->in_done[slot], s->in);
	return e == cudaSuccess ? MLRT_OK : cuda_fail(s, "cudaEventRecord", e);
}

static int cuda_from_stage(mlrti_staged *s, int slot, const copy2d *d)
{
	cudaError_t e;
	int rc = cuda_copy(s, s->out, d);

	if (rc != MLRT_OK)
		return rc;
	e = cudaEventRecord(s->out_done[slot], s->out);
	if (e != cudaSuccess)
		return cuda_fail(s, "cudaEventRecord", e);
	s->out_recorded[slot] = 1;
	return MLRT_OK;
}

/* Poll until done() says the work is complete: bounded by the timeout
 * (or DRAIN_MS when draining) and, unless draining, by the failed flag. */
static int cuda_poll(mlrti_staged *s, cudaError_t (*query)(void *), void *obj, const char *call,
                     int drain)
{
	int64_t deadline = mlrti_now_ms() + (drain ? DRAIN_MS : s->c->timeout_ms);

	for (unsigned i = 0;; i++) {
		cudaError_t e = query(obj);

		if (e == cudaSuccess)
			return MLRT_OK;
		if (e != cudaErrorNotReady)
			return cuda_fail(s, call, e);
		if (i % 64 == 63) {
			int failed = atomic_load(&s->c->failed);

			if (!drain && failed != MLRT_OK)
				return failed;
			if (mlrti_now_ms() > deadline) {
				mlrt_log(MLRT_LOG_ERROR, "comm: staged %s on device %d: copies not done "
				                         "after %d ms; the GPU may be hung (nvidia-smi)",
				         s->what, s->device, drain ? DRAIN_MS : s->c->timeout_ms);
				return MLRT_ERR_TIMEOUT;
			}
		}
		sched_yield();
	}
}

static cudaError_t query_event(void *ev)
{
	return cudaEventQuery((cudaEvent_t)ev);
}

static cudaError_t query_stream(void *st)
{
	return cudaStreamQuery((cudaStream_t)st);
}

static int cuda_wait_in(mlrti_staged *s, int slot)
{
	return cuda_poll(s, query_event, s->in_done[slot], "cudaEventQuery", 0);
}

static int cuda_wait_free(mlrti_staged *s, int slot)
{
	if (!s->out_recorded[slot])
		return MLRT_OK;
	return cuda_poll(s, query_event, s->out_done[slot], "cudaEventQuery", 0);
}

static int cuda_wait_out(mlrti_staged *s, int drain)
{
	int rc = cuda_poll(s, query_stream, s->out, "cudaStreamQuery", drain);

	/* Copies into the stage may still run after a failure. */
	if (drain)
		cuda_poll(s, query_stream, s->in, "cudaStreamQuery", drain);
	return rc;
}

static void cuda_close(mlrti_staged *s)
{
	for (int i = 0; i < 2; i++) {
		if (s->slot[i] != NULL)
			cudaFreeHost(s->slot[i]);
		if (s->in_done[i] != NULL)
			cudaEventDestroy(s->in_done[i]);
		if (s->out_done[i] != NULL)
			cudaEventDestroy(s->out_done[i]);
	}
	if (s->in != NULL)
		cudaStreamDestroy(s->in);
	if (s->out != NULL)
		cudaStreamDestroy(s->out);
}

static const stage_ops cuda_ops = {
	.name = "cuda",
	.to_stage = cuda_to_stage,
	.from_stage = cuda_from_stage,
	.wait_in = cuda_wait_in,
	.wait_free = cuda_wait_free,
	.wait_out = cuda_wait_out,
	.close = cuda_close,
};

static int cuda_open(mlrti_staged *s)
{
	cudaError_t e;

	s->what = "set-up";
	if ((e = cudaSetDevice(s->device)) != cudaSuccess)
		return cuda_fail(s, "cudaSetDevice", e);
	/* cudaStreamDefault (not NonBlocking): the copies wait for work the
	 * program queued on the legacy default stream. */
	if ((e = cudaStreamCreateWithFlags(&s->in, cudaStreamDefault)) != cudaSuccess ||
	    (e = cudaStreamCreateWithFlags(&s->out, cudaStreamDefault)) != cudaSuccess)
		return cuda_fail(s, "cudaStreamCreateWithFlags", e);
	for (int i = 0; i < 2; i++) {
		if ((e = cudaEventCreateWithFlags(&s->in_done[i], cudaEventDisableTiming)) != cudaSuccess ||
		    (e = cudaEventCreateWithFlags(&s->out_done[i], cudaEventDisableTiming)) != cudaSuccess)
			return cuda_fail(s, "cudaEventCreateWithFlags", e);
		if ((e = cudaHostAlloc(&s->slot[i], s->slot_bytes, cudaHostAllocPortable)) != cudaSuccess)
			return cuda_fail(s, "cudaHostAlloc", e);
	}
	return MLRT_OK;
}

#endif /* HAVE_CUDA */

int mlrti_staged_open(mlrt_comm *c, int device, mlrti_staged **out)
{
	size_t min_slot = ((size_t)c->size * 8 + 63) & ~(size_t)63;
	mlrti_staged *s;
	int64_t chunk;
	int rc;

	*out = NULL;
	rc = mlrti_env_int("MLRT_STAGE_CHUNK_BYTES", 4096, 1 << 30, DEFAULT_STAGE_CHUNK_BYTES, &chunk);
	if (rc != MLRT_OK)
		return rc;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return MLRT_ERR_NOMEM;
	s->c = c;
	s->device = device;
	s->chunk_bytes = (size_t)chunk & ~(size_t)63;
	s->slot_bytes = s->chunk_bytes > min_slot ? s->chunk_bytes : min_slot;
	if (device < 0) {
		s->ops = &host_ops;
		for (int i = 0; i < 2; i++) {
			if (posix_memalign(&s->slot[i], 64, s->slot_bytes) != 0) {
				rc = MLRT_ERR_NOMEM;
				goto fail;
			}
			memset(s->slot[i], 0, s->slot_bytes);
		}
	} else {
#if HAVE_CUDA
		s->ops = &cuda_ops;
		MLRTI_CHECK_GOTO(cuda_open(s), rc, fail);
#else
		rc = MLRT_ERR_INTERNAL;
		goto fail;
#endif
	}
	if (device < 0)
		mlrt_log(MLRT_LOG_DEBUG, "comm: staged collectives on host memory: 2 x %zu bytes of "
		                         "staging, chunks of %zu bytes, %s copies", s->slot_bytes,
		         s->chunk_bytes, s->ops->name);
	else
		mlrt_log(MLRT_LOG_DEBUG, "comm: staged collectives on device %d: 2 x %zu bytes of "
		                         "staging, chunks of %zu bytes, %s copies", device,
		         s->slot_bytes, s->chunk_bytes, s->ops->name);
	*out = s;
	return MLRT_OK;
fail:
	if (s->ops != NULL)
		s->ops->close(s);
	else
		host_close(s);
	free(s);
	return rc;
}

void mlrti_staged_close(mlrti_staged *s)
{
	if (s == NULL)
		return;
	s->what = "close";
#if HAVE_CUDA
	if (s->device >= 0)
		cudaSetDevice(s->device);
#endif
	s->ops->wait_out(s, 1);
	s->ops->close(s);
	free(s);
}

/* One collective's chunking: chunk k covers elements [k*m, k*m + n) of
 * the count (per rank, for allgather and reduce_scatter). */
typedef struct plan {
	const mlrti_coll_args *a;
	size_t es, m, nchunks;
	int stage_in, stage_out; /* whether this rank copies in / out */
} plan;

static void chunk_of(const plan *p, size_t k, size_t *lo, size_t *n)
{
	*lo = k * p->m;
	*n = p->a->count - *lo < p->m ? p->a->count - *lo : p->m;
}

/* Copy chunk k into staging slot `slot`. */
static int stage_in(mlrti_staged *s, const plan *p, size_t k, int slot)
{
	const mlrti_coll_args *a = p->a;
	size_t lo, n, es = p->es;
	char *st = s->slot[slot];
	copy2d d;

	chunk_of(p, k, &lo, &n);
	switch (a->coll) {
	case MLRTI_COLL_ALLGATHER:
		/* This rank's piece, at its place in the gathered chunk. */
		d = (copy2d){st + (size_t)s->c->rank * n * es, n * es,
		             (const char *)a->send + lo * es, n * es, n * es, 1};
		break;
	case MLRTI_COLL_REDUCE_SCATTER:
		/* Columns lo..lo+n of every rank's block, packed. */
		d = (copy2d){st, n * es, (const char *)a->send + lo * es, a->count * es, n * es,
		             (size_t)s->c->size};
		break;
	default:
		d = (copy2d){st, n * es, (const char *)a->send + lo * es, n * es, n * es, 1};
		break;
	}
	return s->ops->to_stage(s, slot, &d);
}

/* The host collective of chunk k, in place in staging slot `slot`. */
static int run_chunk(mlrti_staged *s, const plan *p, size_t k, int slot)
{
	size_t lo, n, es = p->es;
	char *st = s->slot[slot];
	mlrti_coll_args h = *p->a;

	chunk_of(p, k, &lo, &n);
	h.count = n;
	h.send = h.recv = st;
	if (h.coll == MLRTI_COLL_ALLGATHER)
		h.send = st + (size_t)s->c->rank * n * es;
	else if (h.coll == MLRTI_COLL_REDUCE_SCATTER)
		h.recv = st + (size_t)s->c->rank * n * es;
	return mlrti_coll_run_piece(s->c, &h);
}

/* Copy chunk k's result out of staging slot `slot`. */
static int stage_out(mlrti_staged *s, const plan *p, size_t k, int slot)
{
	const mlrti_coll_args *a = p->a;
	size_t lo, n, es = p->es;
	char *st = s->slot[slot];
	copy2d d;

	chunk_of(p, k, &lo, &n);
	switch (a->coll) {
	case MLRTI_COLL_ALLGATHER:
		d = (copy2d){(char *)a->recv + lo * es, a->count * es, st, n * es, n * es,
		             (size_t)s->c->size};
		break;
	case MLRTI_COLL_REDUCE_SCATTER:
		d = (copy2d){(char *)a->recv + lo * es, n * es, st + (size_t)s->c->rank * n * es,
		             n * es, n * es, 1};
		break;
	default:
		d = (copy2d){(char *)a->recv + lo * es, n * es, st, n * es, n * es, 1};
		break;
	}
	return s->ops->from_stage(s, slot, &d);
}

int mlrti_staged_coll(mlrti_staged *s, mlrt_comm *c, const mlrti_coll_args *a)
{
	plan p = {.a = a, .es = mlrt_dtype_size(a->t), .stage_in = 1, .stage_out = 1};
	size_t per = p.es;
	int rc = MLRT_OK;

	s->what = mlrti_coll_name(a->coll);
	if (a->coll == MLRTI_COLL_ALLGATHER || a->coll == MLRTI_COLL_REDUCE_SCATTER)
		per *= (size_t)c->size;
	p.m = s->chunk_bytes / per > 0 ? s->chunk_bytes / per : 1;
	p.nchunks = (a->count + p.m - 1) / p.m;
	if (a->coll == MLRTI_COLL_BROADCAST) {
		p.stage_in = c->rank == a->root;
		p.stage_out = !p.stage_in;
	}
#if HAVE_CUDA
	if (s->device >= 0) {
		/* The progress thread, or a caller that moved to another device. */
		cudaError_t e = cudaSetDevice(s->device);

		if (e != cudaSuccess)
			return cuda_fail(s, "cudaSetDevice", e);
	}
#endif
	if (p.nchunks > 0 && p.stage_in)
		rc = stage_in(s, &p, 0, 0);
	for (size_t k = 0; k < p.nchunks && rc == MLRT_OK; k++) {
		int slot = (int)(k & 1);

		/* The slot is free for this chunk once the copy in has landed
		 * (ordered after the slot's last copy out); with no copy in (a
		 * broadcast's receivers), once that copy out is done. */
		if (p.stage_in)
			MLRTI_CHECK_GOTO(s->ops->wait_in(s, slot), rc, fail);
		else
			MLRTI_CHECK_GOTO(s->ops->wait_free(s, slot), rc, fail);
		/* The next chunk's copy runs during this chunk's collective. */
		if (k + 1 < p.nchunks && p.stage_in)
			MLRTI_CHECK_GOTO(stage_in(s, &p, k + 1, slot ^ 1), rc, fail);
		MLRTI_CHECK_GOTO(run_chunk(s, &p, k, slot), rc, fail);
		if (p.stage_out)
			MLRTI_CHECK_GOTO(stage_out(s, &p, k, slot), rc, fail);
	}
	if (rc == MLRT_OK)
		rc = s->ops->wait_out(s, 0);
	if (rc == MLRT_OK)
		return MLRT_OK;
fail:
	/* Leave no copy running into the user's buffers or the stage. */
	s->ops->wait_out(s, 1);
	return rc;
}
