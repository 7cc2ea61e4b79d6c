/* A fake CUDA for running the device-memory checkpoint tests on machines
 * without a GPU (tests gpu_ckpt_fake_*): preloaded (LD_PRELOAD) into every
 * process of the test, it answers the CUDA runtime calls that ckpt/device.c
 * and ckpt_gpu_check make, and, under the soname libcuda.so.1, the driver
 * calls of runtime/device.c's mlrti_device_of.  "Device memory" is host
 * memory handed out by cudaMalloc and remembered here, so the library's
 * device path (detection, pinned staging, copies, stream waits, restore
 * into staging) runs for real; only the copies are plain memcpy.
 *
 *   cudaStreamQuery says "not ready" now and then, to exercise the polls.
 *   FAKE_CUDA_FAIL_COPY=N: rank 1's N-th cudaMemcpyAsync fails as a
 *   faulted device would (cudaErrorIllegalAddress).
 *   FAKE_CUDA_DEVICES=N: N devices (default 1), for device selection.
 *
 * Also runs bench_gpu_ckpt at a small size, to try the benchmark itself:
 *   LD_PRELOAD=.../libfake_cuda.so BENCH_GPU_CKPT_GIB=0.05 bash gpu_ckpt.sh
 *
 * Not a CUDA: no kernels, no real asynchrony; memory belongs to no device. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

enum { MAX_ALLOCS = 1024 };

static struct {
	char *p;
	size_t n;
} allocs[MAX_ALLOCS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long copies, polls;

static int on_device(const void *q)
{
	int found = 0;

	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_ALLOCS && !found; i++)
		found = allocs[i].p != NULL && (const char *)q >= allocs[i].p &&
		        (const char *)q < allocs[i].p + allocs[i].n;
	pthread_mutex_unlock(&mu);
	return found;
}

/* ---- driver API, as runtime/device.c loads it ---- */

int cuInit(unsigned int flags);
int cuPointerGetAttribute(void *data, int attribute, unsigned long long ptr);

int cuInit(unsigned int flags)
{
	(void)flags;
	return 0;
}

int cuPointerGetAttribute(void *data, int attribute, unsigned long long ptr)
{
	enum { ATTR_MEMORY_TYPE = 2, ATTR_DEVICE_ORDINAL = 9, MEMORYTYPE_DEVICE = 2 };

	if (!on_device((const void *)(uintptr_t)ptr))
		return 1; /* CUDA_ERROR_INVALID_VALUE: not ours, i.e. host memory */
	if (attribute == ATTR_MEMORY_TYPE)
		*(unsigned int *)data = MEMORYTYPE_DEVICE;
	else if (attribute == ATTR_DEVICE_ORDINAL)
		*(int *)data = 0;
	else
		return 1;
	return 0;
}

/* ---- runtime API ---- */

static _Thread_local int current; /* this thread's device */

static int devices(void)
{
	const char *v = getenv("FAKE_CUDA_DEVICES");

	return v != NULL && atoi(v) > 0 ? atoi(v) : 1;
}

cudaError_t cudaGetDeviceCount(int *count)
{
	*count = devices();
	return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device)
{
	memset(p, 0, sizeof(*p));
	strcpy(p->name, "fake CUDA device (tests/gpu/ckpt/fake_cuda.c)");
	return device >= 0 && device < devices() ? cudaSuccess : cudaErrorInvalidDevice;
}

cudaError_t cudaSetDevice(int device)
{
	if (device < 0 || device >= devices())
		return cudaErrorInvalidDevice;
	current = device;
	return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
	*device = current;
	return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t n)
{
	cudaError_t e = cudaErrorMemoryAllocation;

	*p = malloc(n > 0 ? n : 1);
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_ALLOCS && *p != NULL; i++)
		if (allocs[i].p == NULL) {
			allocs[i].p = *p;
			allocs[i].n = n;
			e = cudaSuccess;
			break;
		}
	pthread_mutex_unlock(&mu);
	return e;
}

cudaError_t cudaFree(void *p)
{
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_ALLOCS; i++)
		if (allocs[i].p == p)
			allocs[i].p = NULL;
	pthread_mutex_unlock(&mu);
	free(p);
	return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t n, unsigned int flags)
{
	(void)flags;
	*p = malloc(n);
	return *p != NULL ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFreeHost(void *p)
{
	free(p);
	return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                            cudaStream_t stream)
{
	const char *fail = getenv("FAKE_CUDA_FAIL_COPY"), *rank = getenv("MLRT_RANK");

	(void)stream;
	copies++;
	if (fail != NULL && rank != NULL && strcmp(rank, "1") == 0 && copies == atol(fail))
		return cudaErrorIllegalAddress;
	/* The library must name the direction right. */
	if ((kind == cudaMemcpyDeviceToHost && (!on_device(src) || on_device(dst))) ||
	    (kind == cudaMemcpyHostToDevice && (on_device(src) || !on_device(dst))))
		return cudaErrorInvalidMemcpyDirection;
	memcpy(dst, src, n);
	return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
	(void)kind;
	memcpy(dst, src, n);
	return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int value, size_t n)
{
	memset(p, value, n);
	return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
	return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *s)
{
	static char token;

	*s = (cudaStream_t)&token;
	return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
	(void)s;
	return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t s)
{
	(void)s;
	return polls++ % 3 == 0 ? cudaErrorNotReady : cudaSuccess;
}

const char *cudaGetErrorString(cudaError_t e)
{
	return e == cudaSuccess ? "no error" : "fake CUDA error";
}

const char *cudaGetErrorName(cudaError_t e)
{
	return e == cudaErrorIllegalAddress ? "cudaErrorIllegalAddress" : "cudaErrorFake";
}
