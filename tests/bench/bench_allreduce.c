/* Allreduce benchmark, mlrt side: the driver of allreduce_driver.c over
 * mlrt's world communicator.  Launch with mlrun:
 *
 *   mlrun -np 4 --no-tag-output -- build/tests/bench/bench_allreduce -b 4K -e 256M
 *
 * MLRT_TRANSPORT=tcp or shm picks the transport as for any mlrt program.
 * tests/bench/allreduce.sh runs it beside mpi_allreduce and compares.
 *
 * -d (CUDA builds) puts the buffers in device memory, on device
 * local_rank % device_count, and first measures on rank 0, alone, the
 * pinned device-to-host bandwidth (median of cudaMemcpy of 64 MiB into
 * cudaHostAlloc memory), printed as "# pinned D2H: X GB/s"; without a
 * GPU it exits 77.  tests/gpu/coll/bench.sh runs it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mlrt/mlrt.h>

#include "allreduce_driver.h"

#ifdef BENCH_HAVE_CUDA
#include <cuda_runtime_api.h>

static void *dev_alloc(void *state, size_t bytes)
{
	void *p = NULL;
	cudaError_t e = cudaMalloc(&p, bytes);

	(void)state;
	if (e != cudaSuccess) {
		fprintf(stderr, "bench_allreduce: cudaMalloc(%zu): %s\n", bytes, cudaGetErrorString(e));
		return NULL;
	}
	return p;
}

/* CUDA errors are returned as -1000 - code, told apart in bench_strerror. */
static int dev_put(void *state, void *dst, const void *src, size_t bytes)
{
	cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);

	(void)state;
	return e == cudaSuccess ? 0 : -1000 - (int)e;
}

static int dev_get(void *state, void *dst, const void *src, size_t bytes)
{
	cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);

	(void)state;
	return e == cudaSuccess ? 0 : -1000 - (int)e;
}

static void dev_free(void *state, void *p)
{
	(void)state;
	if (p != NULL)
		cudaFree(p);
}

static const char *bench_strerror(int rc)
{
	return rc <= -1000 ? cudaGetErrorString((cudaError_t)(-1000 - rc)) : mlrt_strerror(rc);
}

static int cmp_double(const void *pa, const void *pb)
{
	double a = *(const double *)pa, b = *(const double *)pb;

	return (a > b) - (a < b);
}

/* Pinned device-to-host bandwidth in GB/s: median of 11 copies of 64 MiB
 * (after one untimed), or 0 with a message. */
static double pinned_d2h_gbs(void)
{
	enum { REPS = 11 };
	size_t bytes = (size_t)64 << 20;
	double t[REPS];
	void *d = NULL, *h = NULL;
	cudaError_t e;

	if ((e = cudaMalloc(&d, bytes)) != cudaSuccess ||
	    (e = cudaHostAlloc(&h, bytes, cudaHostAllocDefault)) != cudaSuccess ||
	    (e = cudaMemset(d, 1, bytes)) != cudaSuccess ||
	    (e = cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost)) != cudaSuccess) {
		fprintf(stderr, "bench_allreduce: pinned D2H measurement: %s\n", cudaGetErrorString(e));
		cudaFree(d);
		cudaFreeHost(h);
		return 0.0;
	}
	for (int i = 0; i < REPS; i++) {
		struct timespec a, b;

		clock_gettime(CLOCK_MONOTONIC, &a);
		cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost);
		clock_gettime(CLOCK_MONOTONIC, &b);
		t[i] = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
	}
	cudaFree(d);
	cudaFreeHost(h);
	qsort(t, REPS, sizeof(t[0]), cmp_double);
	return (double)bytes / t[REPS / 2] / 1e9;
}
#endif

/* Whether -d is among the options (before the driver parses them). */
static int wants_device(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "-d") == 0)
			return 1;
	return 0;
}

static int mlrt_sum_f32(void *state, const float *send, float *recv, size_t count)
{
	return mlrt_allreduce(state, send, recv, count, MLRT_F32, MLRT_SUM);
}

static int mlrt_max_f64(void *state, double *buf, size_t n)
{
	return mlrt_allreduce(state, buf, buf, n, MLRT_F64, MLRT_MAX);
}

static int mlrt_wait_all(void *state)
{
	return mlrt_barrier(state);
}

int main(int argc, char **argv)
{
	struct ar_backend b;
	mlrt_ctx *ctx;
	int rc = mlrt_init(&ctx), status;

	if (rc != MLRT_OK) {
		fprintf(stderr, "bench_allreduce: mlrt_init failed: %s (start it with mlrun)\n",
			mlrt_strerror(rc));
		return 1;
	}
	b = (struct ar_backend){
		.name = "mlrt",
		.rank = mlrt_rank(ctx),
		.size = mlrt_size(ctx),
		.state = mlrt_world(ctx),
		.allreduce_f32_sum = mlrt_sum_f32,
		.max_f64 = mlrt_max_f64,
		.barrier = mlrt_wait_all,
		.strerror = mlrt_strerror,
	};
	if (wants_device(argc, argv)) {
#ifdef BENCH_HAVE_CUDA
		int ndev = 0;

		if (mlrt_device_count(&ndev) != MLRT_OK || ndev == 0) {
			fprintf(stderr, "bench_allreduce: -d: no CUDA device here: skipped\n");
			mlrt_finalize(ctx);
			return 77;
		}
		if (cudaSetDevice(mlrt_local_rank(ctx) % ndev) != cudaSuccess) {
			fprintf(stderr, "bench_allreduce: cudaSetDevice failed\n");
			return 1;
		}
		b.dev_alloc = dev_alloc;
		b.dev_put = dev_put;
		b.dev_get = dev_get;
		b.dev_free = dev_free;
		b.strerror = bench_strerror;
		/* Rank 0 alone, while the others wait at the barrier. */
		if (b.rank == 0)
			printf("# pinned D2H: %.2f GB/s (median of 11 cudaMemcpy of 64 MiB into "
			       "cudaHostAlloc memory, device %d)\n",
			       pinned_d2h_gbs(), mlrt_local_rank(ctx) % ndev);
		fflush(stdout);
		if (mlrt_barrier(mlrt_world(ctx)) != MLRT_OK)
			return 1;
#else
		fprintf(stderr, "bench_allreduce: -d: built without CUDA: skipped\n");
		mlrt_finalize(ctx);
		return 77;
#endif
	}
	status = ar_bench_main(&b, argc, argv);
	/* A rank that stops early leaves the others blocked in a collective;
	 * mlrun stops them when this one exits non-zero, so only a clean run
	 * meets at the barrier. */
	if (status == 0) {
		rc = mlrt_barrier(mlrt_world(ctx));
		if (rc != MLRT_OK) {
			fprintf(stderr, "bench_allreduce: final barrier failed: %s\n", mlrt_strerror(rc));
			status = 1;
		}
	}
	rc = mlrt_finalize(ctx);
	if (rc != MLRT_OK && status == 0) {
		fprintf(stderr, "bench_allreduce: mlrt_finalize failed: %s\n", mlrt_strerror(rc));
		status = 1;
	}
	return status;
}
