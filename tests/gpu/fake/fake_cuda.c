/* A fake CUDA for running the library's device paths on machines without
 * a GPU.  Preloaded (LD_PRELOAD) into every process of a test, it answers
 * the CUDA runtime calls of libmlrt and of the test programs, and, under
 * the soname libcuda.so.1, the driver calls that runtime/device.c makes
 * through dlopen.  The fake NCCL (fake_nccl.c) is built into the same
 * library.
 *
 * "Device memory" is host memory handed out by cudaMalloc and remembered
 * here with its device, so the library's device paths (detection, pinned
 * staging, copies, stream and event waits, NCCL) run for real.  Streams
 * are real too: each has a thread that runs its work in order, later than
 * the call that queued it and now and then after a short random delay, so
 * that a missing wait shows as a wrong result rather than passing by luck.
 * What the real API forbids and a real GPU would punish (a copy in the
 * wrong direction or past the end of an allocation, a device pointer of
 * another device) aborts the process with "fake CUDA/NCCL: misuse".
 *
 * The legacy default stream (0) is synchronous here: its work waits for
 * all the work queued on the process's blocking streams, then runs.
 *
 *   FAKE_CUDA_DEVICES=N     N devices (default 1); CUDA_VISIBLE_DEVICES
 *                           picks among them as on a real machine
 *   FAKE_CUDA_FAIL_COPY=N   rank 1's N-th cudaMemcpyAsync fails as a
 *                           faulted device would (cudaErrorIllegalAddress)
 *   FAKE_CUDA_DELAY_US=N    most a stream waits before a piece of work
 *                           (default 300; 0: never)
 *
 * Each device has 80 GiB, 1 GiB of it used by "other processes"; its UUID
 * is GPU-face0000-0000-0000-0000-0000000000NN and its PCI bus id
 * 0000:MM:00.0, NN and MM - 1 being the physical GPU (in hex).  A
 * process that exits holding a reference to a primary context
 * (cuDevicePrimaryCtxRetain) exits 70, saying so.
 *
 * Also runs bench_gpu_ckpt at a small size, to try the benchmark itself:
 *   LD_PRELOAD=.../libfake_cuda.so BENCH_GPU_CKPT_GIB=0.05 bash gpu_ckpt.sh
 *
 * Not a CUDA: it runs no kernels (tests/gpu/emu runs examples/mlp_gpu's
 * on the CPU, over this); all memory is the host's. */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake.h"

enum { MAX_ALLOCS = 4096, MAX_DEVICES = 16 };

void fake_misuse(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fake CUDA/NCCL: misuse (pid %d, rank %s): ", (int)getpid(),
	        getenv("MLRT_RANK") != NULL ? getenv("MLRT_RANK") : "-");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* ---- memory ---- */

static struct {
	char *p;
	size_t n;
	int device;
} allocs[MAX_ALLOCS];
static pthread_mutex_t mem_mu = PTHREAD_MUTEX_INITIALIZER;

static int alloc_of(const void *q)
{
	int found = -1;

	pthread_mutex_lock(&mem_mu);
	for (int i = 0; i < MAX_ALLOCS && found < 0; i++)
		if (allocs[i].p != NULL && (const char *)q >= allocs[i].p &&
		    (const char *)q < allocs[i].p + allocs[i].n)
			found = i;
	pthread_mutex_unlock(&mem_mu);
	return found;
}

int fake_device_range(const void *p, size_t *avail)
{
	int i = alloc_of(p);

	if (i >= 0 && avail != NULL)
		*avail = (size_t)(allocs[i].p + allocs[i].n - (const char *)p);
	return i >= 0 ? allocs[i].device : -1;
}

int fake_device_of_range(const void *p, size_t n)
{
	size_t avail = 0;
	int device = fake_device_range(p, &avail);

	if (device >= 0 && n > avail)
		fake_misuse("%zu bytes at %p run %zu bytes past the end of a device allocation", n, p,
		            n - avail);
	return device;
}

/* ---- devices ---- */

static _Thread_local int current; /* this thread's device */

/* physical[i]: the GPU behind ordinal i; returns how many there are. */
static int visible(int physical[MAX_DEVICES])
{
	const char *v = getenv("FAKE_CUDA_DEVICES"), *cvd = getenv("CUDA_VISIBLE_DEVICES");
	int all = v != NULL && atoi(v) > 0 ? atoi(v) : 1, n = 0;

	if (all > MAX_DEVICES)
		all = MAX_DEVICES;
	if (cvd == NULL) {
		for (n = 0; n < all; n++)
			physical[n] = n;
		return n;
	}
	/* As CUDA: the listed ordinals, up to the first that is not one. */
	for (const char *s = cvd; *s != '\0' && n < MAX_DEVICES;) {
		char *end;
		long g = strtol(s, &end, 10);

		if (end == s || g < 0 || g >= all)
			break;
		physical[n++] = (int)g;
		s = *end == ',' ? end + 1 : end;
		if (*end != ',' && *end != '\0')
			break;
	}
	return n;
}

static int devices(void)
{
	int physical[MAX_DEVICES];

	return visible(physical);
}

int fake_physical_gpu(int device)
{
	int physical[MAX_DEVICES], n = visible(physical);

	return device >= 0 && device < n ? physical[device] : -1;
}

/* ---- streams and events ---- */

typedef enum { W_COPY, W_RECORD, W_WAIT, W_CALL } work_kind;

struct CUevent_st {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned long recorded, done; /* records made, records reached */
};

typedef struct work {
	work_kind kind;
	char *dst;
	const char *src;
	size_t dpitch, spitch, width, rows;
	struct CUevent_st *ev;
	unsigned long gen;
	void (*fn)(void *);
	void *arg;
	struct work *next;
} work;

struct CUstream_st {
	pthread_mutex_t mu;
	pthread_cond_t cv;     /* work queued, or the queue drained */
	work *head, *tail;     /* head runs first; it leaves the queue when done */
	int closing;
	int device;
	unsigned seed;
	struct CUstream_st *next_stream;
};

static struct CUstream_st *streams; /* the live ones, for the legacy stream's waits */
static pthread_mutex_t streams_mu = PTHREAD_MUTEX_INITIALIZER;

static void pause_randomly(struct CUstream_st *s)
{
	const char *v = getenv("FAKE_CUDA_DELAY_US");
	long max = v != NULL ? atol(v) : 300;

	if (max > 0 && rand_r(&s->seed) % 4 == 0)
		usleep((useconds_t)(rand_r(&s->seed) % max));
}

static void run_work(work *w)
{
	switch (w->kind) {
	case W_COPY:
		for (size_t r = 0; r < w->rows; r++)
			memcpy(w->dst + r * w->dpitch, w->src + r * w->spitch, w->width);
		break;
	case W_RECORD:
		pthread_mutex_lock(&w->ev->mu);
		if (w->gen > w->ev->done)
			w->ev->done = w->gen;
		pthread_cond_broadcast(&w->ev->cv);
		pthread_mutex_unlock(&w->ev->mu);
		break;
	case W_WAIT:
		pthread_mutex_lock(&w->ev->mu);
		while (w->ev->done < w->gen)
			pthread_cond_wait(&w->ev->cv, &w->ev->mu);
		pthread_mutex_unlock(&w->ev->mu);
		break;
	case W_CALL:
		w->fn(w->arg);
		break;
	}
}

static void *stream_main(void *arg)
{
	struct CUstream_st *s = arg;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		work *w;

		while (s->head == NULL && !s->closing)
			pthread_cond_wait(&s->cv, &s->mu);
		if (s->head == NULL)
			break;
		w = s->head;
		pthread_mutex_unlock(&s->mu);
		pause_randomly(s);
		run_work(w);
		pthread_mutex_lock(&s->mu);
		s->head = w->next;
		if (s->head == NULL)
			s->tail = NULL;
		free(w);
		pthread_cond_broadcast(&s->cv);
	}
	pthread_mutex_unlock(&s->mu);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
	return NULL;
}

static void drain(struct CUstream_st *s)
{
	pthread_mutex_lock(&s->mu);
	while (s->head != NULL)
		pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
}

/* The legacy default stream's rule: wait for every blocking stream. */
static void drain_all(void)
{
	pthread_mutex_lock(&streams_mu);
	for (struct CUstream_st *s = streams; s != NULL; s = s->next_stream)
		drain(s);
	pthread_mutex_unlock(&streams_mu);
}

static cudaError_t queue(cudaStream_t s, work *w)
{
	if (w == NULL)
		return cudaErrorMemoryAllocation;
	if (s == NULL || s == cudaStreamLegacy || s == cudaStreamPerThread) {
		drain_all();
		run_work(w);
		free(w);
		return cudaSuccess;
	}
	pthread_mutex_lock(&s->mu);
	if (s->closing)
		fake_misuse("work queued on a destroyed stream");
	w->next = NULL;
	if (s->tail != NULL)
		s->tail->next = w;
	else
		s->head = w;
	s->tail = w;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return cudaSuccess;
}

int fake_stream_device(cudaStream_t s)
{
	return s == NULL || s == cudaStreamLegacy || s == cudaStreamPerThread ? current : s->device;
}

cudaError_t fake_stream_call(cudaStream_t s, void (*fn)(void *), void *arg)
{
	work *w = calloc(1, sizeof(*w));

	if (w != NULL) {
		w->kind = W_CALL;
		w->fn = fn;
		w->arg = arg;
	}
	return queue(s, w);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *out, unsigned int flags)
{
	struct CUstream_st *s = calloc(1, sizeof(*s));
	pthread_t t;

	if (s == NULL)
		return cudaErrorMemoryAllocation;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->device = current;
	s->seed = (unsigned)getpid() ^ (unsigned)(uintptr_t)s;
	if (pthread_create(&t, NULL, stream_main, s) != 0) {
		free(s);
		return cudaErrorMemoryAllocation;
	}
	pthread_detach(t);
	if (!(flags & cudaStreamNonBlocking)) {
		pthread_mutex_lock(&streams_mu);
		s->next_stream = streams;
		streams = s;
		pthread_mutex_unlock(&streams_mu);
	}
	*out = s;
	return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *out)
{
	return cudaStreamCreateWithFlags(out, cudaStreamDefault);
}

/* As CUDA: returns at once; the stream's work still runs, then its
 * thread ends. */
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
	if (s == NULL)
		return cudaErrorInvalidResourceHandle;
	pthread_mutex_lock(&streams_mu);
	for (struct CUstream_st **p = &streams; *p != NULL; p = &(*p)->next_stream)
		if (*p == s) {
			*p = s->next_stream;
			break;
		}
	pthread_mutex_unlock(&streams_mu);
	pthread_mutex_lock(&s->mu);
	s->closing = 1;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t s)
{
	int busy;

	if (s == NULL || s == cudaStreamLegacy || s == cudaStreamPerThread)
		return cudaSuccess;
	pthread_mutex_lock(&s->mu);
	busy = s->head != NULL;
	pthread_mutex_unlock(&s->mu);
	return busy ? cudaErrorNotReady : cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
	if (s == NULL || s == cudaStreamLegacy || s == cudaStreamPerThread)
		drain_all();
	else
		drain(s);
	return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
	drain_all();
	return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *out, unsigned int flags)
{
	struct CUevent_st *e = calloc(1, sizeof(*e));

	(void)flags;
	if (e == NULL)
		return cudaErrorMemoryAllocation;
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	*out = e;
	return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *out)
{
	return cudaEventCreateWithFlags(out, cudaEventDefault);
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
	/* Records still queued would touch it: keep it (a test's leak). */
	(void)e;
	return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
	work *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return cudaErrorMemoryAllocation;
	pthread_mutex_lock(&e->mu);
	w->gen = ++e->recorded;
	pthread_mutex_unlock(&e->mu);
	w->kind = W_RECORD;
	w->ev = e;
	return queue(s, w);
}

cudaError_t cudaEventQuery(cudaEvent_t e)
{
	int done;

	pthread_mutex_lock(&e->mu);
	done = e->done >= e->recorded;
	pthread_mutex_unlock(&e->mu);
	return done ? cudaSuccess : cudaErrorNotReady;
}

/* Waits for the record made last before this call, as CUDA does. */
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags)
{
	work *w;

	(void)flags;
	pthread_mutex_lock(&e->mu);
	if (e->done >= e->recorded) {
		pthread_mutex_unlock(&e->mu);
		return cudaSuccess;
	}
	w = calloc(1, sizeof(*w));
	if (w != NULL) {
		w->kind = W_WAIT;
		w->ev = e;
		w->gen = e->recorded;
	}
	pthread_mutex_unlock(&e->mu);
	return queue(s, w);
}

/* ---- driver API, as runtime/device.c loads it ---- */

#define FAKE_MEM_TOTAL ((size_t)80 << 30)
#define FAKE_MEM_OTHERS ((size_t)1 << 30) /* "used by other processes" */

static int primary_refs[MAX_DEVICES];  /* cuDevicePrimaryCtxRetain's references */
static _Thread_local int ctx_top = -1; /* the device of the context pushed last */

int cuInit(unsigned int flags);
int cuPointerGetAttribute(void *data, int attribute, unsigned long long ptr);
int cuDeviceGet(int *dev, int ordinal);
int cuDevicePrimaryCtxRetain(void **ctx, int dev);
int cuDevicePrimaryCtxRelease_v2(int dev);
int cuCtxPushCurrent_v2(void *ctx);
int cuCtxPopCurrent_v2(void **ctx);
int cuMemGetInfo_v2(size_t *free_b, size_t *total_b);

int cuInit(unsigned int flags)
{
	(void)flags;
	return 0;
}

int cuPointerGetAttribute(void *data, int attribute, unsigned long long ptr)
{
	enum { ATTR_MEMORY_TYPE = 2, ATTR_DEVICE_ORDINAL = 9, MEMORYTYPE_DEVICE = 2 };
	int i = alloc_of((const void *)(uintptr_t)ptr);

	if (i < 0)
		return 1; /* CUDA_ERROR_INVALID_VALUE: not ours, i.e. host memory */
	if (attribute == ATTR_MEMORY_TYPE)
		*(unsigned int *)data = MEMORYTYPE_DEVICE;
	else if (attribute == ATTR_DEVICE_ORDINAL)
		*(int *)data = allocs[i].device;
	else
		return 1;
	return 0;
}

int cuDeviceGet(int *dev, int ordinal)
{
	if (ordinal < 0 || ordinal >= devices())
		return 101; /* CUDA_ERROR_INVALID_DEVICE */
	*dev = ordinal;
	return 0;
}

/* A context is its device's number plus one. */
int cuDevicePrimaryCtxRetain(void **ctx, int dev)
{
	if (dev < 0 || dev >= devices())
		return 101;
	__atomic_add_fetch(&primary_refs[dev], 1, __ATOMIC_RELAXED);
	*ctx = (void *)(uintptr_t)(dev + 1);
	return 0;
}

int cuDevicePrimaryCtxRelease_v2(int dev)
{
	if (dev < 0 || dev >= devices())
		return 101;
	if (__atomic_sub_fetch(&primary_refs[dev], 1, __ATOMIC_RELAXED) < 0)
		fake_misuse("cuDevicePrimaryCtxRelease of device %d without a reference", dev);
	return 0;
}

int cuCtxPushCurrent_v2(void *ctx)
{
	if (ctx_top >= 0)
		fake_misuse("cuCtxPushCurrent over another context (this fake keeps one)");
	ctx_top = (int)(uintptr_t)ctx - 1;
	return 0;
}

int cuCtxPopCurrent_v2(void **ctx)
{
	if (ctx_top < 0)
		return 201; /* CUDA_ERROR_INVALID_CONTEXT */
	if (ctx != NULL)
		*ctx = (void *)(uintptr_t)(ctx_top + 1);
	ctx_top = -1;
	return 0;
}

int cuMemGetInfo_v2(size_t *free_b, size_t *total_b)
{
	size_t used = FAKE_MEM_OTHERS;

	if (ctx_top < 0)
		return 201; /* no current context */
	pthread_mutex_lock(&mem_mu);
	for (int i = 0; i < MAX_ALLOCS; i++)
		if (allocs[i].p != NULL && allocs[i].device == ctx_top)
			used += allocs[i].n;
	pthread_mutex_unlock(&mem_mu);
	*total_b = FAKE_MEM_TOTAL;
	*free_b = FAKE_MEM_TOTAL - used;
	return 0;
}

/* A launcher that only looks must leave no context behind. */
__attribute__((destructor)) static void check_contexts(void)
{
	for (int d = 0; d < MAX_DEVICES; d++)
		if (primary_refs[d] > 0) {
			fprintf(stderr, "fake CUDA/NCCL: misuse (pid %d): %d reference(s) to device %d's "
			        "primary context never released\n", (int)getpid(), primary_refs[d], d);
			_exit(70);
		}
}

/* ---- runtime API: devices ---- */

cudaError_t cudaGetDeviceCount(int *count)
{
	*count = devices();
	return *count > 0 ? cudaSuccess : cudaErrorNoDevice;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device)
{
	int g = fake_physical_gpu(device);

	memset(p, 0, sizeof(*p));
	if (g < 0)
		return cudaErrorInvalidDevice;
	snprintf(p->name, sizeof(p->name), "fake CUDA device %d (tests/gpu/fake)", g);
	p->uuid.bytes[0] = (char)0xfa;
	p->uuid.bytes[1] = (char)0xce;
	p->uuid.bytes[15] = (char)g;
	p->totalGlobalMem = FAKE_MEM_TOTAL;
	p->major = 9;
	return cudaSuccess;
}

cudaError_t cudaDeviceGetPCIBusId(char *bus, int len, int device)
{
	int g = fake_physical_gpu(device);

	if (g < 0)
		return cudaErrorInvalidDevice;
	snprintf(bus, (size_t)len, "0000:%02x:00.0", g + 1);
	return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v)
{
	*v = 13000;
	return cudaSuccess;
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

/* ---- runtime API: memory ---- */

cudaError_t cudaMalloc(void **p, size_t n)
{
	cudaError_t e = cudaErrorMemoryAllocation;

	*p = malloc(n > 0 ? n : 1);
	pthread_mutex_lock(&mem_mu);
	for (int i = 0; i < MAX_ALLOCS && *p != NULL; i++)
		if (allocs[i].p == NULL) {
			allocs[i].p = *p;
			allocs[i].n = n;
			allocs[i].device = current;
			e = cudaSuccess;
			break;
		}
	pthread_mutex_unlock(&mem_mu);
	return e;
}

/* As CUDA: synchronizes with the device first. */
cudaError_t cudaFree(void *p)
{
	if (p == NULL)
		return cudaSuccess;
	drain_all();
	pthread_mutex_lock(&mem_mu);
	for (int i = 0; i < MAX_ALLOCS; i++)
		if (allocs[i].p == p)
			allocs[i].p = NULL;
	pthread_mutex_unlock(&mem_mu);
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
	drain_all();
	free(p);
	return cudaSuccess;
}

/* A copy of rows rows of width bytes: checked, then queued. */
static cudaError_t copy(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                        size_t rows, enum cudaMemcpyKind kind, cudaStream_t s)
{
	size_t dspan = rows > 0 ? (rows - 1) * dpitch + width : 0;
	size_t sspan = rows > 0 ? (rows - 1) * spitch + width : 0;
	int ddev, sdev;
	work *w;

	if (width == 0 || rows == 0)
		return cudaSuccess;
	if (width > dpitch || width > spitch)
		return cudaErrorInvalidPitchValue;
	ddev = fake_device_of_range(dst, dspan);
	sdev = fake_device_of_range(src, sspan);
	/* The library must name the direction right. */
	if ((kind == cudaMemcpyDeviceToHost && (sdev < 0 || ddev >= 0)) ||
	    (kind == cudaMemcpyHostToDevice && (sdev >= 0 || ddev < 0)) ||
	    (kind == cudaMemcpyDeviceToDevice && (sdev < 0 || ddev < 0)) ||
	    (kind == cudaMemcpyHostToHost && (sdev >= 0 || ddev >= 0)))
		return cudaErrorInvalidMemcpyDirection;
	w = calloc(1, sizeof(*w));
	if (w != NULL) {
		w->kind = W_COPY;
		w->dst = dst;
		w->src = src;
		w->dpitch = dpitch;
		w->spitch = spitch;
		w->width = width;
		w->rows = rows;
	}
	return queue(s, w);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                            cudaStream_t stream)
{
	static long copies;
	const char *fail = getenv("FAKE_CUDA_FAIL_COPY"), *rank = getenv("MLRT_RANK");

	if (fail != NULL && rank != NULL && strcmp(rank, "1") == 0 &&
	    __atomic_add_fetch(&copies, 1, __ATOMIC_RELAXED) == atol(fail))
		return cudaErrorIllegalAddress;
	return copy(dst, n, src, n, n, 1, kind, stream);
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, enum cudaMemcpyKind kind,
                              cudaStream_t stream)
{
	return copy(dst, dpitch, src, spitch, width, height, kind, stream);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
	return copy(dst, n, src, n, n, 1, kind, NULL);
}

cudaError_t cudaMemset(void *p, int value, size_t n)
{
	if (n > 0 && fake_device_of_range(p, n) < 0)
		return cudaErrorInvalidValue;
	drain_all();
	memset(p, value, n);
	return cudaSuccess;
}

static _Thread_local cudaError_t last_error;

void fake_launch_failed(cudaError_t e)
{
	last_error = e;
}

cudaError_t cudaGetLastError(void)
{
	cudaError_t e = last_error;

	last_error = cudaSuccess;
	return e;
}

const char *cudaGetErrorString(cudaError_t e)
{
	return e == cudaSuccess ? "no error" : "fake CUDA error";
}

const char *cudaGetErrorName(cudaError_t e)
{
	switch (e) {
	case cudaSuccess: return "cudaSuccess";
	case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
	case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
	case cudaErrorNotReady: return "cudaErrorNotReady";
	default: return "cudaErrorFake";
	}
}
