/* Allreduce benchmark, mlrt side: the driver of allreduce_driver.c over
 * mlrt's world communicator.  Launch with mlrun:
 *
 *   mlrun -np 4 --no-tag-output -- build/tests/bench/bench_allreduce -b 4K -e 256M
 *
 * MLRT_TRANSPORT=tcp or shm picks the transport as for any mlrt program.
 * tests/bench/allreduce.sh runs it beside mpi_allreduce and compares. */
#include <stdio.h>

#include <mlrt/mlrt.h>

#include "allreduce_driver.h"

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
