/* elastic_trainer: a data-parallel loop whose state does not depend on
 * the world size, for the elastic tests.
 *
 *   elastic_trainer DIR STEPS EVERY STEP_MS [memory]
 *
 * State: 1024 replicated float64 weights.  Each step every rank
 * contributes rank+1 to an allreduce; the sum, W(W+1)/2 for W ranks, is
 * turned back into exactly 1 per weight, so after step s every weight is
 * s, whatever the world size was along the way (checked every step).  A
 * checkpoint is saved every EVERY steps and restored at start; with
 * "memory" the state is also committed in memory every step
 * (mlrt_elastic_commit) and restored from there first.  Rank 0
 * prints the first step of each generation with the wall clock time, for
 * the test to measure recovery. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <mlrt/mlrt.h>

#define N 1024

static long long wall_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

int main(int argc, char **argv)
{
	static double w[N], g[N];
	mlrt_ctx *ctx;
	mlrt_ckpt *ck;
	mlrt_elastic *es = NULL;
	const char *from = "checkpoint";
	int64_t step = 0, steps, every;
	int rank, size, rc, step_ms, first = 1;

	if (argc != 5 && !(argc == 6 && strcmp(argv[5], "memory") == 0)) {
		fprintf(stderr, "usage: elastic_trainer DIR STEPS EVERY STEP_MS [memory]\n");
		return 2;
	}
	steps = atoll(argv[2]);
	every = atoll(argv[3]);
	step_ms = atoi(argv[4]);
	if ((rc = mlrt_init(&ctx)) != MLRT_OK) {
		fprintf(stderr, "elastic_trainer: init: %s\n", mlrt_strerror(rc));
		return 1;
	}
	rank = mlrt_rank(ctx);
	size = mlrt_size(ctx);
	if ((rc = mlrt_ckpt_open(ctx, argv[1], &ck)) != MLRT_OK ||
	    (rc = mlrt_ckpt_add_replicated(ck, "w", w, N, MLRT_F64)) != MLRT_OK) {
		fprintf(stderr, "elastic_trainer: rank %d: checkpoint: %s\n", rank, mlrt_strerror(rc));
		return 1;
	}
	if (argc == 6 && ((rc = mlrt_elastic_open(ctx, &es)) != MLRT_OK ||
	                  (rc = mlrt_elastic_add(es, "w", w, N, MLRT_F64)) != MLRT_OK)) {
		fprintf(stderr, "elastic_trainer: rank %d: elastic state: %s\n", rank, mlrt_strerror(rc));
		return 1;
	}
	rc = es != NULL ? mlrt_elastic_restore(es, &step) : MLRT_ERR_NOT_FOUND;
	if (rc == MLRT_OK)
		from = "memory";
	else if (rc == MLRT_ERR_NOT_FOUND)
		rc = mlrt_ckpt_restore(ck, &step);
	if (rc != MLRT_OK && rc != MLRT_ERR_NOT_FOUND) {
		fprintf(stderr, "elastic_trainer: rank %d: restore: %s\n", rank, mlrt_strerror(rc));
		return 1;
	}
	if (rc == MLRT_ERR_NOT_FOUND)
		step = 0;
	/* Past the barrier, every rank is past mlrt_init and its restore. */
	if ((rc = mlrt_barrier(mlrt_world(ctx))) != MLRT_OK) {
		fprintf(stderr, "elastic_trainer: rank %d: barrier: %s\n", rank, mlrt_strerror(rc));
		return 1;
	}
	if (rank == 0)
		printf("generation %" PRId64 " world %d initialised at %lld, from step %" PRId64
		       " (%s)\n", mlrt_generation(ctx), size, wall_ms(), step, step ? from : "start");
	for (; step < steps; step++) {
		double one = 2.0 / ((double)size * (size + 1));

		for (int i = 0; i < N; i++)
			g[i] = rank + 1;
		rc = mlrt_allreduce(mlrt_world(ctx), g, g, N, MLRT_F64, MLRT_SUM);
		if (rc != MLRT_OK) {
			fprintf(stderr, "elastic_trainer: rank %d: step %" PRId64 ": allreduce: %s\n",
			        rank, step, mlrt_strerror(rc));
			return 1;
		}
		for (int i = 0; i < N; i++)
			w[i] += g[i] * one;
		if (w[0] != (double)(step + 1) || w[N - 1] != (double)(step + 1)) {
			fprintf(stderr, "elastic_trainer: rank %d: after step %" PRId64 " the weights are "
			        "%.17g, not %" PRId64 "\n", rank, step, w[0], step + 1);
			return 3;
		}
		if (rank == 0 && first)
			printf("generation %" PRId64 " world %d completed step %" PRId64 " at %lld\n",
			       mlrt_generation(ctx), size, step + 1, wall_ms());
		else if (rank == 0 && (step + 1) % 50 == 0)
			printf("step %" PRId64 " world %d\n", step + 1, size);
		first = 0;
		if (es != NULL && (rc = mlrt_elastic_commit(es, step + 1)) != MLRT_OK) {
			fprintf(stderr, "elastic_trainer: rank %d: commit: %s\n", rank, mlrt_strerror(rc));
			return 1;
		}
		if ((step + 1) % every == 0 && (rc = mlrt_ckpt_save(ck, step + 1)) != MLRT_OK) {
			fprintf(stderr, "elastic_trainer: rank %d: save: %s\n", rank, mlrt_strerror(rc));
			return 1;
		}
		if (rank == 0)
			fflush(stdout);
		usleep((useconds_t)step_ms * 1000);
	}
	if (rank == 0)
		printf("finished %" PRId64 " steps, world %d, generation %" PRId64 ", weights %.17g\n",
		       steps, size, mlrt_generation(ctx), w[0]);
	mlrt_elastic_close(es);
	mlrt_ckpt_close(ck);
	mlrt_finalize(ctx);
	return 0;
}
