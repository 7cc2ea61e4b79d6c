/* ckpt_trainer: a deterministic data-parallel "training" loop for the
 * failover test.
 *
 *   ckpt_trainer DIR STEPS EVERY OUT [MIB]
 *
 * State: MIB MiB (default 8) of replicated float32 parameters, 64 float64
 * of per-rank state, the step counter.  Each step allreduces a gradient
 * derived from all of it and updates it; an async checkpoint is taken every
 * EVERY steps.  At start the newest checkpoint is restored.  Each rank
 * writes its pid to OUT/pid-g<GEN>-r<RANK> once it runs (for the test's
 * killer) and, at the end, OUT/final-r<RANK>.bin with its whole state: runs
 * with the same world size must give the same bytes, however often they
 * were killed and restarted. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mlrt/mlrt.h>

#define GRAD 4096
#define LOCAL 64

static int die(int rank, const char *what, int rc)
{
	fprintf(stderr, "ckpt_trainer: rank %d: %s: %s\n", rank, what, mlrt_strerror(rc));
	return 1;
}

/* Write a then b to path, which appears complete or not at all. */
static void write_file(const char *path, const void *a, size_t alen, const void *b, size_t blen)
{
	char tmp[4200];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "wb");
	if (f == NULL || fwrite(a, 1, alen, f) != alen || fwrite(b, 1, blen, f) != blen ||
	    fclose(f) != 0 || rename(tmp, path) != 0) {
		perror(path);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	mlrt_ckpt_opts o;
	mlrt_ckpt *ck;
	mlrt_ctx *ctx;
	char path[4096], pid[32];
	int64_t step = 0, steps, every;
	size_t n;
	float *p, g[GRAD];
	double r[LOCAL];
	int rank, rc;

	if (argc < 5) {
		fprintf(stderr, "usage: ckpt_trainer DIR STEPS EVERY OUT [MIB]\n");
		return 2;
	}
	steps = atoll(argv[2]);
	every = atoll(argv[3]);
	n = (size_t)(argc > 5 ? atoi(argv[5]) : 8) << 18;
	if ((rc = mlrt_init(&ctx)) != MLRT_OK)
		return die(-1, "init", rc);
	rank = mlrt_rank(ctx);
	p = malloc(n * sizeof(*p));
	for (size_t i = 0; i < n; i++)
		p[i] = (float)(i % 977) * 0.001f;
	for (int j = 0; j < LOCAL; j++)
		r[j] = rank + j;

	mlrt_ckpt_opts_init(&o);
	o.async = 1;
	if ((rc = mlrt_ckpt_open_opts(ctx, argv[1], &o, &ck)) != MLRT_OK)
		return die(rank, "open", rc);
	if (mlrt_ckpt_add_replicated(ck, "params", p, n, MLRT_F32) != MLRT_OK ||
	    mlrt_ckpt_add(ck, "local", r, LOCAL, MLRT_F64) != MLRT_OK ||
	    mlrt_ckpt_add_meta(ck, "step", &step, 1, MLRT_I64) != MLRT_OK)
		return die(rank, "register", MLRT_ERR_INVALID);
	rc = mlrt_ckpt_restore(ck, NULL);
	if (rc == MLRT_OK)
		printf("rank %d: restored step %" PRId64 " (restart %d)\n", rank, step,
		       mlrt_restart_count(ctx));
	else if (rc != MLRT_ERR_NOT_FOUND)
		return die(rank, "restore", rc);
	fflush(stdout);
	snprintf(path, sizeof(path), "%s/pid-g%" PRId64 "-r%d", argv[4], mlrt_generation(ctx), rank);
	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	write_file(path, pid, strlen(pid), "", 0);

	while (step < steps) {
		for (int k = 0; k < GRAD; k++)
			g[k] = p[((size_t)k * 131 + (size_t)step) % n] * 0.5f +
			       (float)(r[k % LOCAL] * 1e-3) + (float)rank;
		rc = mlrt_allreduce(mlrt_world(ctx), g, g, GRAD, MLRT_F32, MLRT_AVG);
		if (rc != MLRT_OK)
			return die(rank, "allreduce", rc);
		for (size_t i = 0; i < n; i++)
			p[i] = p[i] * 0.999f + g[i % GRAD] * 0.001f;
		for (int j = 0; j < LOCAL; j++)
			r[j] += g[j] * 0.01;
		step++;
		if (step % every == 0 || step == steps)
			if ((rc = mlrt_ckpt_save(ck, step)) != MLRT_OK)
				return die(rank, "save", rc);
	}
	if ((rc = mlrt_ckpt_close(ck)) != MLRT_OK)
		return die(rank, "close", rc);
	snprintf(path, sizeof(path), "%s/final-r%d.bin", argv[4], rank);
	write_file(path, p, n * sizeof(*p), r, sizeof(r));
	printf("rank %d: finished %" PRId64 " steps\n", rank, step);
	mlrt_finalize(ctx);
	free(p);
	return 0;
}
