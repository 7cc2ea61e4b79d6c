/* Checkpoints of CUDA device memory: pinned staging and the copies
 * between it and the device buffers (ckpt.h, docs/ckpt.md "Device
 * memory").
 *
 * A tensor registered with a device pointer gets pinned host staging of
 * its size at registration (cudaHostAlloc): pinning gigabytes takes
 * seconds, which would otherwise land on the first save's stall.  Every
 * save then copies device -> staging with cudaMemcpyAsync on a stream
 * this checkpoint owns (one per device) and waits for the copies; the file
 * is written from staging, by the writer thread in async mode.  Restore
 * reads and verifies into staging and copies staging -> device.
 *
 * The streams are blocking streams (cudaStreamCreate): their copies start
 * after the work already queued on the device's legacy default stream,
 * where a program's kernels run unless it makes its own streams.  Work on
 * other streams must be synchronised by the caller before a save, as for
 * any read of the buffer.  Waits poll cudaStreamQuery up to
 * opts.timeout_ms, so a wedged device ends in MLRT_ERR_TIMEOUT, not a
 * hang.
 *
 * Threads: the user's thread of the mlrt_ckpt (ckpt.h). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mlrt_config.h"

#if HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "ckpt/ckpt.h"
#include "runtime/common.h"

#if HAVE_CUDA

/* What a failed CUDA call means to the caller. */
static int cuda_status(cudaError_t e)
{
	switch (e) {
	case cudaErrorMemoryAllocation:
		return MLRT_ERR_NOMEM;
	case cudaErrorInvalidValue:
	case cudaErrorInvalidDevicePointer:
		return MLRT_ERR_INVALID;
	default:
		/* No device, no driver, a sticky error of the context (a
		 * kernel faulted): the device cannot be used any more. */
		return MLRT_ERR_UNAVAILABLE;
	}
}

/* Log a failed CUDA call on tensor (may be NULL) of device dev and map
 * its error. */
static int cuda_fail(const mlrt_ckpt *ck, cudaError_t e, const char *call, const char *tensor,
                     int dev, const char *hint)
{
	mlrt_log(MLRT_LOG_ERROR, "ckpt: rank %d: %s%s%s on device %d failed: %s (%s); %s",
	         ck->rank, call, tensor ? " for tensor " : "", tensor ? tensor : "", dev,
	         cudaGetErrorString(e), cudaGetErrorName(e), hint);
	return cuda_status(e);
}

int mlrti_ckpt_dev_register(mlrt_ckpt *ck, size_t i)
{
	size_t bytes = ck->t[i].bytes > 0 ? ck->t[i].bytes : 1;
	int dev = ck->device[i];
	void *p = NULL;
	cudaError_t e;

	/* Portable: pinned for every device's context, whichever copies. */
	e = cudaHostAlloc(&p, bytes, cudaHostAllocPortable);
	if (e != cudaSuccess) {
		mlrt_log(MLRT_LOG_ERROR, "ckpt: rank %d: cannot pin %zu bytes of host memory to "
		         "stage tensor %s of device %d: %s; checkpoints of device memory need "
		         "pinned host memory of the same size (check ulimit -l and free memory)",
		         ck->rank, bytes, ck->t[i].name, dev, cudaGetErrorString(e));
		return cuda_status(e);
	}
	if (dev >= ck->nstreams) {
		void **ns = realloc(ck->streams, (size_t)(dev + 1) * sizeof(*ns));

		if (ns == NULL) {
			cudaFreeHost(p);
			return MLRT_ERR_NOMEM;
		}
		for (int d = ck->nstreams; d <= dev; d++)
			ns[d] = NULL;
		ck->streams = ns;
		ck->nstreams = dev + 1;
	}
	ck->staging[i] = p;
	return MLRT_OK;
}

/* Whether a tensor lives on device d. */
static int uses(const mlrt_ckpt *ck, int d)
{
	for (size_t i = 0; i < ck->n; i++)
		if (ck->device[i] == d)
			return 1;
	return 0;
}

/* Wait for stream s of device d, polling up to opts.timeout_ms. */
static int wait_stream(const mlrt_ckpt *ck, int d, int64_t step, const char *what)
{
	int64_t deadline = mlrti_now_ms() + ck->opts.timeout_ms;
	cudaStream_t s = (cudaStream_t)ck->streams[d];
	struct timespec nap = {0, 20000}; /* 20 us: nothing next to a copy's length */
	cudaError_t e;

	for (;;) {
		e = cudaStreamQuery(s);
		if (e != cudaErrorNotReady)
			break;
		if (mlrti_now_ms() > deadline) {
			mlrt_log(MLRT_LOG_ERROR, "ckpt: rank %d: step %" PRId64 ": the copies %s "
			         "device %d did not finish within %d ms; is a kernel on that device "
			         "stuck? (opts.timeout_ms bounds this wait)",
			         ck->rank, step, what, d, ck->opts.timeout_ms);
			return MLRT_ERR_TIMEOUT;
		}
		nanosleep(&nap, NULL);
	}
	if (e != cudaSuccess)
		return cuda_fail(ck, e, "waiting for the checkpoint's copies", NULL, d,
		                 "a kernel of this process may have faulted; the device cannot be "
		                 "used until the process restarts");
	return MLRT_OK;
}

/* Copy every device tensor between its buffer and its staging, device
 * by device, then wait for all of it.  Returns to the caller's current
 * device. */
static int copy_all(mlrt_ckpt *ck, int to_device, int64_t step)
{
	const char *what = to_device ? "to" : "from";
	const char *hint = to_device ? "the device buffers may hold part of the restored step"
	                             : "this step is not saved; the previous one is intact";
	int64_t t0 = mlrti_now_ms();
	size_t bytes = 0;
	int cur = -1, rc = MLRT_OK, queued_until = -1;
	cudaError_t e;

	e = cudaGetDevice(&cur);
	if (e != cudaSuccess)
		return cuda_fail(ck, e, "cudaGetDevice", NULL, -1, "is the CUDA driver working?");
	for (int d = 0; d < ck->nstreams && rc == MLRT_OK; d++) {
		if (!uses(ck, d))
			continue;
		e = cudaSetDevice(d);
		if (e != cudaSuccess) {
			rc = cuda_fail(ck, e, "cudaSetDevice", NULL, d, hint);
			break;
		}
		if (ck->streams[d] == NULL) {
			cudaStream_t s;

			e = cudaStreamCreate(&s);
			if (e != cudaSuccess) {
				rc = cuda_fail(ck, e, "cudaStreamCreate", NULL, d, hint);
				break;
			}
			ck->streams[d] = s;
		}
		queued_until = d;
		for (size_t i = 0; i < ck->n; i++) {
			if (ck->device[i] != d || ck->t[i].bytes == 0)
				continue;
			if (to_device)
				e = cudaMemcpyAsync(ck->data[i], ck->staging[i], ck->t[i].bytes,
				                    cudaMemcpyHostToDevice, (cudaStream_t)ck->streams[d]);
			else
				e = cudaMemcpyAsync(ck->staging[i], ck->data[i], ck->t[i].bytes,
				                    cudaMemcpyDeviceToHost, (cudaStream_t)ck->streams[d]);
			if (e != cudaSuccess) {
				rc = cuda_fail(ck, e, to_device ? "cudaMemcpyAsync to the device"
				                                : "cudaMemcpyAsync from the device",
				               ck->t[i].name, d,
				               cuda_status(e) == MLRT_ERR_INVALID
				                       ? "was the buffer freed after it was registered?"
				                       : "a kernel of this process may have faulted; the "
				                         "device cannot be used until the process restarts");
				break;
			}
			bytes += ck->t[i].bytes;
		}
	}
	/* Wait for whatever was queued, also after a failure: the staging
	 * must not change under a copy still running. */
	for (int d = 0; d <= queued_until; d++) {
		int w;

		if (ck->streams[d] == NULL || !uses(ck, d))
			continue;
		w = wait_stream(ck, d, step, what);
		if (rc == MLRT_OK)
			rc = w;
	}
	if (cur >= 0)
		cudaSetDevice(cur);
	if (rc == MLRT_OK)
		mlrt_log(MLRT_LOG_DEBUG, "ckpt: step %" PRId64 ": copied %zu bytes %s the device "
		         "in %" PRId64 " ms", step, bytes, what, mlrti_now_ms() - t0);
	return rc;
}

int mlrti_ckpt_dev_to_host(mlrt_ckpt *ck, int64_t step)
{
	return copy_all(ck, 0, step);
}

int mlrti_ckpt_dev_from_host(mlrt_ckpt *ck, int64_t step)
{
	return copy_all(ck, 1, step);
}

void mlrti_ckpt_dev_fini(mlrt_ckpt *ck)
{
	for (size_t i = 0; i < ck->n; i++)
		if (ck->device != NULL && ck->device[i] >= 0 && ck->staging[i] != NULL) {
			cudaFreeHost(ck->staging[i]);
			ck->staging[i] = NULL;
		}
	for (int d = 0; d < ck->nstreams; d++)
		if (ck->streams[d] != NULL)
			cudaStreamDestroy((cudaStream_t)ck->streams[d]);
	free(ck->streams);
	ck->streams = NULL;
	ck->nstreams = 0;
}

#else /* !HAVE_CUDA: mlrti_device_of never finds device memory */

int mlrti_ckpt_dev_register(mlrt_ckpt *ck, size_t i)
{
	mlrt_log(MLRT_LOG_ERROR, "ckpt: %s is in device memory, but this mlrt was built without "
	         "CUDA (rebuild with meson -Dcuda=enabled)", ck->t[i].name);
	return MLRT_ERR_UNSUPPORTED;
}

int mlrti_ckpt_dev_to_host(mlrt_ckpt *ck, int64_t step)
{
	(void)step;
	return ck->ndevice > 0 ? MLRT_ERR_UNSUPPORTED : MLRT_OK;
}

int mlrti_ckpt_dev_from_host(mlrt_ckpt *ck, int64_t step)
{
	(void)step;
	return ck->ndevice > 0 ? MLRT_ERR_UNSUPPORTED : MLRT_OK;
}

void mlrti_ckpt_dev_fini(mlrt_ckpt *ck)
{
	(void)ck;
}

#endif
