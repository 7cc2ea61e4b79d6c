/* Device collectives: which path a communicator takes (comm/device.h),
 * decided once, at its first collective on device memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlrt_config.h"

#if HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "comm/device.h"
#include "runtime/common.h"

/* What identifies a GPU across processes: its UUID and PCI bus id. */
#define DEVICE_ID_BYTES 64

typedef struct device_state {
	mlrti_device_mode path;      /* NCCL or STAGED once decided; AUTO before */
	int device;                  /* the CUDA ordinal the path was made for */
	mlrti_nccl *nccl;
	mlrti_staged *staged;        /* device buffers */
	mlrti_staged *staged_host;   /* host buffers in staged-host mode (tests) */
} device_state;

#if HAVE_CUDA

static int device_id(int device, char id[DEVICE_ID_BYTES])
{
	struct cudaDeviceProp p;
	char bus[32] = "";
	const unsigned char *u;
	cudaError_t e = cudaGetDeviceProperties(&p, device);

	if (e == cudaSuccess)
		e = cudaDeviceGetPCIBusId(bus, (int)sizeof(bus), device);
	if (e != cudaSuccess) {
		mlrt_log(MLRT_LOG_ERROR, "comm: cannot identify device %d: %s; check the driver "
		                         "(nvidia-smi)", device, cudaGetErrorString(e));
		return MLRT_ERR_UNAVAILABLE;
	}
	u = (const unsigned char *)p.uuid.bytes;
	memset(id, 0, DEVICE_ID_BYTES);
	snprintf(id, DEVICE_ID_BYTES,
	         "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x %s", u[0], u[1],
	         u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
	         u[15], bus);
	return MLRT_OK;
}

/* NCCL when every rank's GPU is its own, staged otherwise: every rank
 * gets the same list, so every rank decides alike. */
static int decide(mlrt_comm *c, int device, mlrti_device_mode *path)
{
	char mine[DEVICE_ID_BYTES];
	char *all = calloc((size_t)c->size, DEVICE_ID_BYTES);
	mlrti_coll_args g = {MLRTI_COLL_ALLGATHER, mine, all, DEVICE_ID_BYTES, MLRT_U8, MLRT_SUM, 0};
	int rc, shared_a = -1, shared_b = -1;

	if (all == NULL)
		return MLRT_ERR_NOMEM;
	rc = device_id(device, mine);
	if (rc != MLRT_OK)
		/* Still take part, so that the others are not left waiting. */
		snprintf(mine, sizeof(mine), "unknown rank %d", c->rank);
	MLRTI_CHECK_GOTO(mlrti_coll_run_host(c, &g), rc, out);
	for (int i = 0; i < c->size && shared_a < 0; i++)
		for (int j = i + 1; j < c->size; j++)
			if (memcmp(all + (size_t)i * DEVICE_ID_BYTES, all + (size_t)j * DEVICE_ID_BYTES,
			           DEVICE_ID_BYTES) == 0) {
				shared_a = i;
				shared_b = j;
				break;
			}
	*path = shared_a < 0 ? MLRTI_DEVICE_NCCL : MLRTI_DEVICE_STAGED;
	if (c->rank == 0) {
		if (shared_a < 0)
			mlrt_log(MLRT_LOG_INFO, "comm: device collectives through NCCL: each of the %d "
			                        "ranks has a GPU of its own", c->size);
		else
			mlrt_log(MLRT_LOG_INFO, "comm: device collectives staged through host memory: "
			                        "ranks %d and %d share GPU %s (NCCL needs one GPU per "
			                        "rank)", shared_a, shared_b,
			         all + (size_t)shared_a * DEVICE_ID_BYTES);
	}
out:
	free(all);
	return rc;
}

#endif

/* Make the path for device buffers on `device`. */
static int open_path(mlrt_comm *c, device_state *d, int device)
{
	mlrti_device_mode path = c->device_mode;
	int rc = MLRT_OK;

#if HAVE_CUDA
	cudaError_t e = cudaSetDevice(device);

	if (e != cudaSuccess) {
		mlrt_log(MLRT_LOG_ERROR, "comm: cudaSetDevice(%d) failed: %s; check the device "
		                         "(nvidia-smi)", device, cudaGetErrorString(e));
		return MLRT_ERR_UNAVAILABLE;
	}
	if (path == MLRTI_DEVICE_STAGED_HOST)
		path = MLRTI_DEVICE_STAGED;
	if (path == MLRTI_DEVICE_AUTO)
		MLRTI_CHECK_GOTO(decide(c, device, &path), rc, out);
	if (path == MLRTI_DEVICE_NCCL)
		MLRTI_CHECK_GOTO(mlrti_nccl_open(c, device, &d->nccl), rc, out);
	else
		MLRTI_CHECK_GOTO(mlrti_staged_open(c, device, &d->staged), rc, out);
	d->path = path;
	d->device = device;
out:
#else
	(void)c;
	(void)d;
	(void)device;
	(void)path;
	rc = MLRT_ERR_INTERNAL; /* no device memory without CUDA */
#endif
	return rc;
}

static int run(mlrt_comm *c, const mlrti_coll_args *a, int sdev, int rdev)
{
	int device = sdev >= 0 ? sdev : rdev;
	device_state *d = c->device;
	int rc = atomic_load(&c->failed);

	if (rc != MLRT_OK)
		return rc;
	if (sdev >= 0 && rdev >= 0 && sdev != rdev) {
		mlrt_log(MLRT_LOG_ERROR, "%s: send buffer on device %d, receive buffer on device %d; "
		                         "use buffers on one device", mlrti_coll_name(a->coll), sdev,
		         rdev);
		return MLRT_ERR_INVALID;
	}
	if (d == NULL) {
		d = calloc(1, sizeof(*d));
		if (d == NULL)
			return mlrti_comm_fail(c, MLRT_ERR_NOMEM);
		d->device = -1;
		c->device = d;
	}
	atomic_fetch_add(&c->collectives, 1);
	if (device < 0) {
		/* Host buffers in staged-host mode (tests). */
		if (d->staged_host == NULL)
			MLRTI_CHECK_GOTO(mlrti_staged_open(c, -1, &d->staged_host), rc, fail);
		MLRTI_CHECK_GOTO(mlrti_staged_coll(d->staged_host, c, a), rc, fail);
		return MLRT_OK;
	}
	if (d->path == MLRTI_DEVICE_AUTO)
		MLRTI_CHECK_GOTO(open_path(c, d, device), rc, fail);
	if (device != d->device) {
		mlrt_log(MLRT_LOG_ERROR, "%s: buffers on device %d, but this communicator's device "
		                         "collectives run on device %d; use one device per "
		                         "communicator", mlrti_coll_name(a->coll), device, d->device);
		return MLRT_ERR_INVALID;
	}
	if (d->path == MLRTI_DEVICE_NCCL) {
		/* One collective on the wire, numbered like a host one. */
		c->seq++;
		atomic_store(&c->cur_coll, (int)a->coll);
		atomic_store(&c->started_seq, c->seq);
		MLRTI_CHECK_GOTO(mlrti_nccl_coll(d->nccl, c, a), rc, fail);
		atomic_store(&c->done_coll, (int)a->coll);
		atomic_store(&c->done_seq, c->seq);
	} else {
		MLRTI_CHECK_GOTO(mlrti_staged_coll(d->staged, c, a), rc, fail);
	}
	return MLRT_OK;
fail:
	/* Peers may be waiting in this collective: let them know. */
	return mlrti_comm_fail(c, rc);
}

int mlrti_device_coll_run(mlrt_comm *c, const mlrti_coll_args *a, int sdev, int rdev)
{
#if HAVE_CUDA
	/* The paths set the communicator's device on the calling thread; a
	 * program that drives several GPUs from one thread gets its current
	 * device back.  (A progress thread keeps the communicator's: going
	 * back to its default, device 0, would make a context there.) */
	int prev = -1, now = -1, rc;

	if (!mlrti_async_on_progress_thread() && cudaGetDevice(&prev) != cudaSuccess)
		prev = -1;
	rc = run(c, a, sdev, rdev);
	if (prev >= 0 && cudaGetDevice(&now) == cudaSuccess && now != prev)
		cudaSetDevice(prev);
	return rc;
#else
	return run(c, a, sdev, rdev);
#endif
}

void mlrti_device_free(mlrt_comm *c)
{
	device_state *d = c->device;

	if (d == NULL)
		return;
	/* Ranks free their communicators at about the same time (at
	 * mlrt_finalize); a healthy one finalizes NCCL's within 10 s. */
	mlrti_nccl_close(d->nccl, atomic_load(&c->failed) != MLRT_OK,
	                 c->timeout_ms < 10000 ? c->timeout_ms : 10000);
	mlrti_staged_close(d->staged);
	mlrti_staged_close(d->staged_host);
	free(d);
	c->device = NULL;
}
