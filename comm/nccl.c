/* Device collectives through NCCL, when every rank has a GPU of its own
 * (comm/device.h decides).
 *
 * Bootstrap: rank 0 makes the unique id and publishes it at
 * "<prefix>nccl/id" in the store; the others wait for it (bounded by the
 * communicator's timeout).  Init is nonblocking (ncclConfig_t blocking =
 * 0) and polled with ncclCommGetAsyncError against a deadline, so that a
 * peer that never arrives gives MLRT_ERR_TIMEOUT, not a hang.
 *
 * Collectives run on a stream of the communicator's, created without
 * cudaStreamNonBlocking: it orders after the work queued on the legacy
 * default stream, and work queued there afterwards orders after it.  The
 * call returns when the stream has run the collective: we poll
 * cudaStreamQuery, ncclCommGetAsyncError and the communicator's failed
 * flag (set by the host transports, the watchdog and the launcher's abort
 * key), bounded by the timeout; a lost peer or a timeout aborts the NCCL
 * communicator (ncclCommAbort), which also ends its kernels. */
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlrt_config.h"

#include "comm/device.h"
#include "runtime/common.h"
#include "runtime/devptr.h"

#if HAVE_CUDA

#include <cuda_runtime_api.h>
/* nccl.h declares a few functions as f() (no prototype). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop

struct mlrti_nccl {
	ncclComm_t comm;       /* NULL once aborted */
	cudaStream_t stream;
	int device;
	int rank, size;
	void *tmp;             /* device memory for host buffers mixed in; grown on demand */
	size_t tmp_bytes;
};

static int nccl_status(ncclResult_t r)
{
	switch (r) {
	case ncclSuccess: return MLRT_OK;
	case ncclRemoteError: return MLRT_ERR_PEER_LOST;
	case ncclInvalidArgument:
	case ncclInvalidUsage: return MLRT_ERR_INVALID;
	case ncclInternalError: return MLRT_ERR_INTERNAL;
	default: return MLRT_ERR_UNAVAILABLE;
	}
}

/* Log a failed NCCL call: what, where, what to do. */
static int nccl_fail(const mlrti_nccl *n, const char *what, const char *call, ncclResult_t r)
{
	const char *detail = n->comm != NULL ? ncclGetLastError(n->comm) : NULL;

	mlrt_log(MLRT_LOG_ERROR, "comm: NCCL %s on device %d (rank %d of %d): %s failed: %s%s%s; %s",
	         what, n->device, n->rank, n->size, call, ncclGetErrorString(r),
	         detail != NULL && *detail != '\0' ? ": " : "", detail != NULL ? detail : "",
	         r == ncclRemoteError ? "a peer failed or left; the job restarts from its checkpoint"
	         : r == ncclSystemError ? "check the network and NCCL_SOCKET_IFNAME, or set "
	                                  "MLRT_DEVICE_COLL=staged"
	                                : "rerun with NCCL_DEBUG=WARN for NCCL's view, or set "
	                                  "MLRT_DEVICE_COLL=staged");
	return nccl_status(r);
}

static int cuda_fail(const mlrti_nccl *n, const char *what, const char *call, cudaError_t e)
{
	mlrt_log(MLRT_LOG_ERROR, "comm: NCCL %s on device %d: %s failed: %s (%s); %s", what,
	         n->device, call, cudaGetErrorString(e), cudaGetErrorName(e),
	         e == cudaErrorMemoryAllocation ? "free device memory"
	                                        : "check the device (nvidia-smi) and restart the job");
	return e == cudaErrorMemoryAllocation ? MLRT_ERR_NOMEM : MLRT_ERR_UNAVAILABLE;
}

/* End the NCCL communicator now (its kernels too); it is gone after. */
static void nccl_abort(mlrti_nccl *n)
{
	if (n->comm != NULL) {
		ncclCommAbort(n->comm);
		n->comm = NULL;
	}
}

/* The unique id: made by rank 0, passed through the store. */
static int share_id(mlrt_comm *c, ncclUniqueId *id)
{
	char key[MLRTI_PREFIX_MAX + 16];
	const char *keys[1] = {key};
	mlrt_store *st = NULL;
	void *val = NULL;
	size_t len = 0;
	ncclResult_t r;
	int rc;

	if (c->rank == 0) {
		r = ncclGetUniqueId(id);
		if (r != ncclSuccess) {
			mlrt_log(MLRT_LOG_ERROR, "comm: ncclGetUniqueId failed: %s; check that a network "
			                         "interface is up (NCCL_SOCKET_IFNAME), or set "
			                         "MLRT_DEVICE_COLL=staged", ncclGetErrorString(r));
			return nccl_status(r);
		}
		if (c->size == 1)
			return MLRT_OK;
	}
	snprintf(key, sizeof(key), "%snccl/id", c->prefix);
	/* A connection of our own: c->store belongs to the thread that made
	 * the communicator, and this may be the progress thread. */
	MLRTI_CHECK_GOTO(mlrt_store_open(c->store_addr, &st), rc, out);
	if (c->rank == 0) {
		MLRTI_CHECK_GOTO(mlrt_store_set(st, key, id, sizeof(*id)), rc, out);
	} else {
		rc = mlrt_store_wait(st, keys, 1, c->timeout_ms);
		if (rc == MLRT_ERR_TIMEOUT)
			mlrt_log(MLRT_LOG_ERROR, "comm: rank 0 did not publish the NCCL id at %s within %d "
			                         "ms; did it reach its first device collective?", key,
			         c->timeout_ms);
		MLRTI_CHECK_GOTO(rc, rc, out);
		MLRTI_CHECK_GOTO(mlrt_store_get(st, key, &val, &len), rc, out);
		if (len != sizeof(*id)) {
			mlrt_log(MLRT_LOG_ERROR, "comm: the NCCL id at %s has %zu bytes, not %zu", key, len,
			         sizeof(*id));
			rc = MLRT_ERR_PROTOCOL;
			goto out;
		}
		memcpy(id, val, sizeof(*id));
	}
out:
	free(val);
	mlrt_store_close(st);
	return rc;
}

/* Poll the communicator's asynchronous state until it leaves
 * ncclInProgress (init, or a call of a nonblocking communicator). */
static int wait_ready(mlrti_nccl *n, mlrt_comm *c, const char *what, int64_t deadline)
{
	for (unsigned i = 0;; i++) {
		ncclResult_t st = ncclInProgress;
		ncclResult_t r = ncclCommGetAsyncError(n->comm, &st);
		int failed;

		if (r == ncclSuccess && st == ncclSuccess)
			return MLRT_OK;
		/* A lost peer shows in NCCL as a system error: the
		 * communicator's own verdict (PEER_LOST) goes first. */
		failed = atomic_load(&c->failed);
		if (failed != MLRT_OK)
			return failed;
		if (r != ncclSuccess)
			return nccl_fail(n, what, "ncclCommGetAsyncError", r);
		if (st != ncclInProgress)
			return nccl_fail(n, what, what, st);
		if (i % 64 == 63) {
			if (mlrti_now_ms() > deadline) {
				mlrt_log(MLRT_LOG_ERROR, "comm: NCCL %s on device %d did not finish within %d "
				                         "ms; a peer may be stuck or gone", what, n->device,
				         c->timeout_ms);
				return MLRT_ERR_TIMEOUT;
			}
		}
		sched_yield();
	}
}

int mlrti_nccl_open(mlrt_comm *c, int device, mlrti_nccl **out)
{
	ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
	int64_t deadline = mlrti_now_ms() + c->timeout_ms;
	mlrti_nccl *n = calloc(1, sizeof(*n));
	ncclUniqueId id;
	ncclResult_t r;
	cudaError_t e;
	int rc;

	*out = NULL;
	if (n == NULL)
		return MLRT_ERR_NOMEM;
	n->device = device;
	n->rank = c->rank;
	n->size = c->size;
	if ((e = cudaSetDevice(device)) != cudaSuccess) {
		rc = cuda_fail(n, "init", "cudaSetDevice", e);
		goto fail;
	}
	/* cudaStreamDefault: ordered with the legacy default stream. */
	if ((e = cudaStreamCreateWithFlags(&n->stream, cudaStreamDefault)) != cudaSuccess) {
		rc = cuda_fail(n, "init", "cudaStreamCreateWithFlags", e);
		goto fail;
	}
	MLRTI_CHECK_GOTO(share_id(c, &id), rc, fail);
	cfg.blocking = 0;
	r = ncclCommInitRankConfig(&n->comm, c->size, id, c->rank, &cfg);
	if (r != ncclSuccess && r != ncclInProgress) {
		rc = nccl_fail(n, "init", "ncclCommInitRankConfig", r);
		goto fail;
	}
	MLRTI_CHECK_GOTO(wait_ready(n, c, "init", deadline), rc, fail);
	mlrt_log(MLRT_LOG_DEBUG, "comm: NCCL communicator of %d ranks on device %d", c->size, device);
	*out = n;
	return MLRT_OK;
fail:
	nccl_abort(n);
	if (n->stream != NULL)
		cudaStreamDestroy(n->stream);
	free(n);
	/* Not the caller's argument that was bad (e.g. ncclInvalidUsage for
	 * two ranks on one GPU): the path is unavailable. */
	return rc == MLRT_ERR_INVALID ? MLRT_ERR_UNAVAILABLE : rc;
}

void mlrti_nccl_close(mlrti_nccl *n, int failed, int timeout_ms)
{
	if (n == NULL)
		return;
	cudaSetDevice(n->device);
	if (n->comm != NULL && !failed) {
		/* Finalize waits until every rank's communicator is quiescent:
		 * bounded, since a peer may never get there; abort after. */
		int64_t deadline = mlrti_now_ms() + timeout_ms;
		ncclResult_t st = ncclInProgress, r = ncclCommFinalize(n->comm);

		/* A nonblocking communicator answers with its state, normally
		 * ncclInProgress: then poll it. */
		if (r == ncclInProgress)
			r = ncclSuccess;
		while (r == ncclSuccess && st == ncclInProgress && mlrti_now_ms() < deadline) {
			r = ncclCommGetAsyncError(n->comm, &st);
			if (st == ncclInProgress)
				sched_yield();
		}
		if (r == ncclSuccess && st == ncclSuccess) {
			ncclCommDestroy(n->comm);
			n->comm = NULL;
		} else {
			mlrt_log(MLRT_LOG_WARN, "comm: NCCL communicator on device %d did not finalize "
			                        "within %d ms (%s); aborting it", n->device, timeout_ms,
			         ncclGetErrorString(r != ncclSuccess ? r : st));
		}
	}
	nccl_abort(n);
	if (n->tmp != NULL)
		cudaFree(n->tmp);
	if (n->stream != NULL)
		cudaStreamDestroy(n->stream);
	free(n);
}

static int nccl_type(mlrt_dtype t, ncclDataType_t *out)
{
	switch (t) {
	case MLRT_F32: *out = ncclFloat32; return MLRT_OK;
	case MLRT_F64: *out = ncclFloat64; return MLRT_OK;
	case MLRT_F16: *out = ncclFloat16; return MLRT_OK;
	case MLRT_BF16: *out = ncclBfloat16; return MLRT_OK;
	case MLRT_I32: *out = ncclInt32; return MLRT_OK;
	case MLRT_I64: *out = ncclInt64; return MLRT_OK;
	case MLRT_U8: *out = ncclUint8; return MLRT_OK;
	default: return MLRT_ERR_UNSUPPORTED;
	}
}

static int nccl_op(mlrt_op op, ncclRedOp_t *out)
{
	switch (op) {
	case MLRT_SUM: *out = ncclSum; return MLRT_OK;
	case MLRT_PROD: *out = ncclProd; return MLRT_OK;
	case MLRT_MIN: *out = ncclMin; return MLRT_OK;
	case MLRT_MAX: *out = ncclMax; return MLRT_OK;
	case MLRT_AVG: *out = ncclAvg; return MLRT_OK;
	default: return MLRT_ERR_UNSUPPORTED;
	}
}

/* Device memory for a host buffer mixed into a collective. */
static int tmp_reserve(mlrti_nccl *n, size_t bytes, const char *what)
{
	cudaError_t e;

	if (bytes <= n->tmp_bytes)
		return MLRT_OK;
	if (n->tmp != NULL) {
		/* The stream is idle here: every collective was waited for. */
		cudaFree(n->tmp);
		n->tmp = NULL;
		n->tmp_bytes = 0;
	}
	if ((e = cudaMalloc(&n->tmp, bytes)) != cudaSuccess)
		return cuda_fail(n, what, "cudaMalloc", e);
	n->tmp_bytes = bytes;
	return MLRT_OK;
}

/* Wait for the stream: bounded, and watching the communicator. */
static int wait_stream(mlrti_nccl *n, mlrt_comm *c, const char *what, int64_t deadline)
{
	for (unsigned i = 0;; i++) {
		cudaError_t e = cudaStreamQuery(n->stream);

		if (e == cudaSuccess)
			return MLRT_OK;
		if (e != cudaErrorNotReady)
			return cuda_fail(n, what, "cudaStreamQuery", e);
		if (i % 64 == 63) {
			ncclResult_t st = ncclSuccess, r = ncclCommGetAsyncError(n->comm, &st);
			int failed = atomic_load(&c->failed);

			/* The communicator's verdict first: a lost peer shows in
			 * NCCL as a system error. */
			if (failed != MLRT_OK) {
				mlrt_log(MLRT_LOG_ERROR, "comm: NCCL %s on device %d abandoned: %s",
				         what, n->device, mlrt_strerror(failed));
				return failed;
			}
			if (r != ncclSuccess)
				return nccl_fail(n, what, "ncclCommGetAsyncError", r);
			if (st != ncclSuccess && st != ncclInProgress)
				return nccl_fail(n, what, what, st);
			if (mlrti_now_ms() > deadline) {
				mlrt_log(MLRT_LOG_ERROR, "comm: NCCL %s #%u on device %d did not complete "
				                         "within %d ms; a peer may be stuck (see its log)",
				         what, c->seq, n->device, c->timeout_ms);
				return MLRT_ERR_TIMEOUT;
			}
		}
		sched_yield();
	}
}

/* Issue a's collective on the stream (device pointers only). */
static ncclResult_t issue(mlrti_nccl *n, const mlrti_coll_args *a, const void *send, void *recv,
                          ncclDataType_t dt, ncclRedOp_t op)
{
	switch (a->coll) {
	case MLRTI_COLL_ALLREDUCE:
		return ncclAllReduce(send, recv, a->count, dt, op, n->comm, n->stream);
	case MLRTI_COLL_BROADCAST:
		return ncclBroadcast(send, recv, a->count, dt, a->root, n->comm, n->stream);
	case MLRTI_COLL_ALLGATHER:
		return ncclAllGather(send, recv, a->count, dt, n->comm, n->stream);
	case MLRTI_COLL_REDUCE_SCATTER:
		return ncclReduceScatter(send, recv, a->count, dt, op, n->comm, n->stream);
	default:
		return ncclInvalidUsage;
	}
}

int mlrti_nccl_coll(mlrti_nccl *n, mlrt_comm *c, const mlrti_coll_args *a)
{
	const char *what = mlrti_coll_name(a->coll);
	int64_t deadline = mlrti_now_ms() + c->timeout_ms;
	size_t es = mlrt_dtype_size(a->t), P = (size_t)c->size;
	size_t sbytes = a->count * es, rbytes = a->count * es;
	const char *send = a->send;
	char *recv = a->recv, *host_recv = NULL;
	ncclDataType_t dt;
	ncclRedOp_t op = ncclSum;
	ncclResult_t r;
	cudaError_t e;
	int rc;

	if (n->comm == NULL)
		return MLRT_ERR_PEER_LOST;
	if (nccl_type(a->t, &dt) != MLRT_OK || nccl_op(a->op, &op) != MLRT_OK) {
		mlrt_log(MLRT_LOG_ERROR, "comm: NCCL %s: dtype %s / op %s not supported", what,
		         mlrt_dtype_name(a->t), mlrt_op_name(a->op));
		return MLRT_ERR_UNSUPPORTED;
	}
	if (a->coll == MLRTI_COLL_ALLGATHER)
		rbytes *= P;
	else if (a->coll == MLRTI_COLL_REDUCE_SCATTER)
		sbytes *= P;
	if ((e = cudaSetDevice(n->device)) != cudaSuccess)
		return cuda_fail(n, what, "cudaSetDevice", e);

	/* Host memory mixed in: through device memory of ours.  A send
	 * buffer inside the receive buffer (in place) moves with it. */
	if (mlrti_device_of(recv) < 0) {
		size_t off = (size_t)-1;

		if ((uintptr_t)send >= (uintptr_t)recv && (uintptr_t)send < (uintptr_t)recv + rbytes)
			off = (size_t)((uintptr_t)send - (uintptr_t)recv);
		MLRTI_CHECK_GOTO(tmp_reserve(n, rbytes + (off == (size_t)-1 ? sbytes : 0), what), rc,
		                 fail);
		host_recv = recv;
		recv = n->tmp;
		if (off != (size_t)-1) {
			e = cudaMemcpyAsync(recv, host_recv, rbytes, cudaMemcpyDefault, n->stream);
			send = recv + off;
		} else {
			e = cudaMemcpyAsync(recv + rbytes, send, sbytes, cudaMemcpyDefault, n->stream);
			send = recv + rbytes;
		}
		if (e != cudaSuccess) {
			rc = cuda_fail(n, what, "cudaMemcpyAsync", e);
			goto fail;
		}
	} else if (mlrti_device_of(send) < 0) {
		MLRTI_CHECK_GOTO(tmp_reserve(n, sbytes, what), rc, fail);
		if ((e = cudaMemcpyAsync(n->tmp, send, sbytes, cudaMemcpyDefault, n->stream)) != cudaSuccess) {
			rc = cuda_fail(n, what, "cudaMemcpyAsync", e);
			goto fail;
		}
		send = n->tmp;
	}
	/* allgather with send == recv: this rank's block moves first (the
	 * host path's rule); NCCL's in place is send == recv + rank * count. */
	if (a->coll == MLRTI_COLL_ALLGATHER && send != recv + (size_t)c->rank * sbytes &&
	    (uintptr_t)send >= (uintptr_t)recv && (uintptr_t)send < (uintptr_t)recv + rbytes) {
		e = cudaMemcpyAsync(recv + (size_t)c->rank * sbytes, send, sbytes, cudaMemcpyDefault,
		                    n->stream);
		if (e != cudaSuccess) {
			rc = cuda_fail(n, what, "cudaMemcpyAsync", e);
			goto fail;
		}
		send = recv + (size_t)c->rank * sbytes;
	}
	r = issue(n, a, send, recv, dt, op);
	if (r != ncclSuccess && r != ncclInProgress) {
		rc = nccl_fail(n, what, "the NCCL call", r);
		goto fail;
	}
	if (r == ncclInProgress)
		MLRTI_CHECK_GOTO(wait_ready(n, c, what, deadline), rc, fail);
	MLRTI_CHECK_GOTO(wait_stream(n, c, what, deadline), rc, fail);
	if (host_recv != NULL) {
		/* Only now: a copy to pageable memory blocks the host until the
		 * stream gets there, which must not be an unbounded wait on
		 * peers. */
		e = cudaMemcpyAsync(host_recv, recv, rbytes, cudaMemcpyDefault, n->stream);
		if (e != cudaSuccess) {
			rc = cuda_fail(n, what, "cudaMemcpyAsync", e);
			goto fail;
		}
		MLRTI_CHECK_GOTO(wait_stream(n, c, what, deadline), rc, fail);
	}
	return MLRT_OK;
fail:
	/* Whatever went wrong, peers may wait in this collective: abort, so
	 * that NCCL stops, and fail the communicator, so that they learn. */
	nccl_abort(n);
	return mlrti_comm_fail(c, rc == MLRT_ERR_INVALID ? MLRT_ERR_INTERNAL : rc);
}

#else /* !HAVE_CUDA: device memory never reaches here. */

int mlrti_nccl_open(mlrt_comm *c, int device, mlrti_nccl **out)
{
	(void)c;
	(void)device;
	*out = NULL;
	mlrt_log(MLRT_LOG_ERROR, "comm: this mlrt was built without CUDA/NCCL; "
	                         "MLRT_DEVICE_COLL=nccl needs a CUDA build");
	return MLRT_ERR_UNSUPPORTED;
}

int mlrti_nccl_coll(mlrti_nccl *n, mlrt_comm *c, const mlrti_coll_args *a)
{
	(void)n;
	(void)c;
	(void)a;
	return MLRT_ERR_UNSUPPORTED;
}

void mlrti_nccl_close(mlrti_nccl *n, int failed, int timeout_ms)
{
	(void)n;
	(void)failed;
	(void)timeout_ms;
}

#endif
