/* hello: every rank says who it is, then the gang meets at a barrier.
 *
 *   mlrun -np 4 build/examples/hello
 *
 * Runs the same under mpirun, torchrun or srun. */
#include <stdio.h>
#include <unistd.h>

#include <mlrt/mlrt.h>

int main(void)
{
	char host[256] = "?";
	mlrt_ctx *ctx;
	int rc = mlrt_init(&ctx);

	if (rc != MLRT_OK) {
		fprintf(stderr, "hello: mlrt_init failed: %s\n", mlrt_strerror(rc));
		return 1;
	}
	gethostname(host, sizeof(host) - 1);
	printf("hello from rank %d of %d (local rank %d of %d) on %s, generation %lld\n",
	       mlrt_rank(ctx), mlrt_size(ctx), mlrt_local_rank(ctx), mlrt_local_size(ctx), host,
	       (long long)mlrt_generation(ctx));
	fflush(stdout);
	rc = mlrt_barrier(mlrt_world(ctx));
	if (rc != MLRT_OK) {
		fprintf(stderr, "hello: barrier failed: %s\n", mlrt_strerror(rc));
		mlrt_finalize(ctx);
		return 1;
	}
	if (mlrt_rank(ctx) == 0)
		printf("all %d ranks passed the barrier\n", mlrt_size(ctx));
	return mlrt_finalize(ctx) == MLRT_OK ? 0 : 1;
}
