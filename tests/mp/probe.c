/* probe: a worker for the multi-process tests.  It reports its identity as
 * one line on stdout, then does what its arguments ask:
 *
 *   probe                      barrier, exit 0
 *   probe hang DIR             write DIR/pid-g<G>-r<R>; in generation 0
 *                              wait (up to 60 s) to be killed; later
 *                              generations write DIR/start-g<G>-r<R> (wall
 *                              clock ms), barrier and exit 0
 *   probe spin DIR             write DIR/pid-g<G>-r<R>, then allreduce 16 MiB
 *                              over and over; when one fails, print
 *                              "spin: rank R failed at <wall ms>: <error>"
 *                              and exit 3 (SIGTERM is ignored: survivors
 *                              must leave through the error)
 *   probe lag                  four allreduces; then the last rank sleeps
 *                              while the others start a fifth, which must
 *                              time out (set MLRT_TIMEOUT_MS), and a sixth,
 *                              which must fail at once with the same error;
 *                              prints "lag: rank R: <error> then <error>"
 *   probe disagree COUNT [inplace]
 *                              an allreduce of COUNT floats, rank 0 of one
 *                              more (with "inplace": of as many, but in
 *                              place where the others are not): every rank
 *                              must get an error, printed as
 *                              "disagree: rank R: <error>"
 *   probe device               print "device: rank R local L device D
 *                              visible V" (mlrt_ctx_device; V:
 *                              CUDA_VISIBLE_DEVICES or -), barrier, exit 0
 *   probe exit CODE RANK       rank RANK writes a line to stderr and exits
 *                              CODE; the others ignore SIGTERM and wait at
 *                              a barrier, which must fail with
 *                              MLRT_ERR_PEER_LOST (exit 3) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mlrt/mlrt.h>

static const char *launcher_name(mlrt_launcher l)
{
	switch (l) {
	case MLRT_LAUNCHER_MLRUN: return "mlrun";
	case MLRT_LAUNCHER_TORCHRUN: return "torchrun";
	case MLRT_LAUNCHER_MPI: return "mpi";
	case MLRT_LAUNCHER_SLURM: return "slurm";
	case MLRT_LAUNCHER_NONE: break;
	}
	return "none";
}

static int write_file(const char *dir, const char *what, mlrt_ctx *ctx, long long value)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s-g%lld-r%d", dir, what,
	         (long long)mlrt_generation(ctx), mlrt_rank(ctx));
	f = fopen(path, "w");
	if (f == NULL)
		return -1;
	fprintf(f, "%lld\n", value);
	return fclose(f);
}

static long long wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	mlrt_ctx *ctx;
	int rc;

	/* In "exit" mode survivors must leave through MLRT_ERR_PEER_LOST, not
	 * by the launcher's SIGTERM. */
	if ((argc >= 4 && strcmp(argv[1], "exit") == 0) ||
	    (argc >= 3 && strcmp(argv[1], "spin") == 0))
		signal(SIGTERM, SIG_IGN);
	rc = mlrt_init(&ctx);
	if (rc != MLRT_OK) {
		fprintf(stderr, "probe: mlrt_init: %s\n", mlrt_strerror(rc));
		return 2;
	}
	printf("probe rank=%d size=%d local_rank=%d local_size=%d gen=%lld restarts=%d "
	       "launcher=%s\n",
	       mlrt_rank(ctx), mlrt_size(ctx), mlrt_local_rank(ctx), mlrt_local_size(ctx),
	       (long long)mlrt_generation(ctx), mlrt_restart_count(ctx),
	       launcher_name(mlrt_launched_by(ctx)));
	fflush(stdout);

	if (argc >= 2 && strcmp(argv[1], "device") == 0) {
		const char *v = getenv("CUDA_VISIBLE_DEVICES");

		printf("device: rank %d local %d device %d visible %s\n", mlrt_rank(ctx),
		       mlrt_local_rank(ctx), mlrt_ctx_device(ctx), v != NULL ? v : "-");
		fflush(stdout);
	} else if (argc >= 3 && strcmp(argv[1], "hang") == 0) {
		if (write_file(argv[2], "pid", ctx, getpid()) != 0)
			return 2;
		if (mlrt_generation(ctx) == 0) {
			sleep(60);
			return 4; /* nobody killed us: the test failed */
		}
		if (write_file(argv[2], "start", ctx, wall_ms()) != 0)
			return 2;
	} else if (argc >= 2 && strcmp(argv[1], "lag") == 0) {
		float v[16] = {0};
		int rc2;

		for (int i = 0; i < 4; i++)
			if (mlrt_allreduce(mlrt_world(ctx), v, v, 16, MLRT_F32, MLRT_SUM) != MLRT_OK)
				return 2;
		if (mlrt_rank(ctx) == mlrt_size(ctx) - 1) {
			sleep(4);
			mlrt_finalize(ctx);
			return 0;
		}
		rc = mlrt_allreduce(mlrt_world(ctx), v, v, 16, MLRT_F32, MLRT_SUM);
		rc2 = mlrt_allreduce(mlrt_world(ctx), v, v, 16, MLRT_F32, MLRT_SUM);
		printf("lag: rank %d: %s then %s\n", mlrt_rank(ctx), mlrt_strerror(rc),
		       mlrt_strerror(rc2));
		fflush(stdout);
		mlrt_finalize(ctx);
		return 0;
	} else if (argc >= 3 && strcmp(argv[1], "disagree") == 0) {
		int mixed = argc >= 4 && strcmp(argv[3], "inplace") == 0;
		size_t n = (size_t)atol(argv[2]) + (!mixed && mlrt_rank(ctx) == 0);
		float *buf = calloc(2 * n, sizeof(float));

		if (buf == NULL)
			return 2;
		rc = mlrt_allreduce(mlrt_world(ctx), buf, mixed && mlrt_rank(ctx) == 0 ? buf : buf + n, n,
		                    MLRT_F32, MLRT_SUM);
		printf("disagree: rank %d: %s\n", mlrt_rank(ctx), mlrt_strerror(rc));
		fflush(stdout);
		free(buf);
		mlrt_finalize(ctx);
		return 0;
	} else if (argc >= 3 && strcmp(argv[1], "spin") == 0) {
		size_t n = 4u << 20;
		float *buf = calloc(n, sizeof(float));
		long iters = 0;

		if (buf == NULL || write_file(argv[2], "pid", ctx, getpid()) != 0)
			return 2;
		while ((rc = mlrt_allreduce(mlrt_world(ctx), buf, buf, n, MLRT_F32, MLRT_SUM)) ==
		       MLRT_OK)
			iters++;
		printf("spin: rank %d failed at %lld after %ld allreduces: %s\n", mlrt_rank(ctx),
		       wall_ms(), iters, mlrt_strerror(rc));
		fflush(stdout);
		free(buf);
		mlrt_finalize(ctx);
		return 3;
	} else if (argc >= 4 && strcmp(argv[1], "exit") == 0) {
		if (mlrt_rank(ctx) == atoi(argv[3])) {
			fprintf(stderr, "probe: rank %d failing on purpose with code %s\n",
			        mlrt_rank(ctx), argv[2]);
			return atoi(argv[2]);
		}
		rc = mlrt_barrier(mlrt_world(ctx));
		fprintf(stderr, "probe: rank %d barrier: %s\n", mlrt_rank(ctx), mlrt_strerror(rc));
		mlrt_finalize(ctx);
		return rc == MLRT_ERR_PEER_LOST ? 3 : 5;
	}
	rc = mlrt_barrier(mlrt_world(ctx));
	if (rc != MLRT_OK) {
		fprintf(stderr, "probe: barrier: %s\n", mlrt_strerror(rc));
		return 2;
	}
	return mlrt_finalize(ctx) == MLRT_OK ? 0 : 2;
}
