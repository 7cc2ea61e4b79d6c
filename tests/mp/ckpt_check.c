/* ckpt_check: checkpoint scenarios for the multi-process tests.
 *
 *   ckpt_check shard-save DIR      every rank saves its rows of a 2-D f64
 *                                  tensor [37 x 5] and its block of a 1-D
 *                                  i32 tensor [1001] (uneven blocks), plus
 *                                  a replicated tensor and an epoch, as
 *                                  step 3
 *   ckpt_check shard-restore DIR   restores them at this world size with
 *                                  another layout (2 ranks: column blocks,
 *                                  otherwise uneven row blocks) and checks
 *                                  every element; a per-rank tensor must
 *                                  refuse a world larger than the saved one
 *   ckpt_check steps-save DIR      saves steps 1, 2 and 3 (async) of a
 *                                  per-rank and a replicated tensor whose
 *                                  values tell the step and the rank
 *   ckpt_check steps-restore DIR N restores; every rank must get step N
 *   ckpt_check enospc DIR sync|async
 *                                  saves step 1 (3 MiB per rank), then step
 *                                  2, which must fail with
 *                                  MLRT_ERR_NOSPACE (the test mounts a
 *                                  small tmpfs), then restores step 1 exactly
 *
 * Prints "<mode>: rank R ok" on success, exits 1 with the reason otherwise. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mlrt/mlrt.h>

#define ROWS 37
#define COLS 5
#define LEN 1001

static int rank, world;

#define CHECK(cond, ...)                                                                         \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "ckpt_check: rank %d: ", rank);                          \
			fprintf(stderr, __VA_ARGS__);                                            \
			fputc('\n', stderr);                                                     \
			exit(1);                                                                 \
		}                                                                                \
	} while (0)

static double grid_value(int64_t i, int64_t j)
{
	return (double)(i * COLS + j) + 0.5;
}

/* [lo, hi) of block r of n over len elements, uneven on purpose: the
 * first blocks are one larger. */
static void block(int64_t len, int r, int n, int64_t *lo, int64_t *hi)
{
	*lo = len * r / n;
	*hi = len * (r + 1) / n;
}

static mlrt_ckpt *open_ck(mlrt_ctx *ctx, const char *dir, int async)
{
	mlrt_ckpt_opts o;
	mlrt_ckpt *ck;
	int rc;

	mlrt_ckpt_opts_init(&o);
	o.async = async;
	rc = mlrt_ckpt_open_opts(ctx, dir, &o, &ck);
	CHECK(rc == MLRT_OK, "open %s: %s", dir, mlrt_strerror(rc));
	return ck;
}

static void shard_save(mlrt_ctx *ctx, const char *dir)
{
	const int64_t gshape[2] = {ROWS, COLS}, lshape[1] = {LEN};
	int64_t lo, hi, off[2], shape[2], off1[1], shape1[1];
	mlrt_ckpt *ck = open_ck(ctx, dir, 0);
	double *grid, rep[8];
	int32_t *line;
	int64_t epoch = 12;
	int rc;

	block(ROWS, rank, world, &lo, &hi);
	grid = malloc(sizeof(double) * (size_t)((hi - lo) * COLS) + 8);
	for (int64_t i = lo; i < hi; i++)
		for (int64_t j = 0; j < COLS; j++)
			grid[(i - lo) * COLS + j] = grid_value(i, j);
	off[0] = lo, off[1] = 0, shape[0] = hi - lo, shape[1] = COLS;
	CHECK(mlrt_ckpt_add_shard(ck, "grid", grid, MLRT_F64, 2, gshape, off, shape) == MLRT_OK,
	      "add grid");
	block(LEN, world - 1 - rank, world, &lo, &hi); /* blocks in reverse rank order */
	line = malloc(sizeof(int32_t) * (size_t)(hi - lo) + 4);
	for (int64_t i = lo; i < hi; i++)
		line[i - lo] = (int32_t)(i * 7 - 3);
	off1[0] = lo, shape1[0] = hi - lo;
	CHECK(mlrt_ckpt_add_shard(ck, "line", line, MLRT_I32, 1, lshape, off1, shape1) == MLRT_OK,
	      "add line");
	for (int i = 0; i < 8; i++)
		rep[i] = i * 1.5;
	CHECK(mlrt_ckpt_add_replicated(ck, "rep", rep, 8, MLRT_F64) == MLRT_OK, "add rep");
	CHECK(mlrt_ckpt_add(ck, "mine", &rank, 1, MLRT_I32) == MLRT_OK, "add mine");
	CHECK(mlrt_ckpt_add_meta(ck, "epoch", &epoch, 1, MLRT_I64) == MLRT_OK, "add epoch");
	rc = mlrt_ckpt_save(ck, 3);
	CHECK(rc == MLRT_OK, "save: %s", mlrt_strerror(rc));
	CHECK(mlrt_ckpt_close(ck) == MLRT_OK, "close");
	free(line);
	free(grid);
}

static void shard_restore(mlrt_ctx *ctx, const char *dir)
{
	const int64_t gshape[2] = {ROWS, COLS}, lshape[1] = {LEN};
	int64_t off[2], shape[2], lo, hi, lo1, hi1, step = -1, epoch = 0;
	mlrt_ckpt *ck = open_ck(ctx, dir, 0);
	double *grid, rep[8] = {0};
	int32_t *line, mine = -1;
	int rc;

	if (world == 2) { /* column blocks: every saved row block feeds both */
		block(COLS, rank, world, &lo, &hi);
		off[0] = 0, off[1] = lo, shape[0] = ROWS, shape[1] = hi - lo;
	} else {
		block(ROWS, world - 1 - rank, world, &lo, &hi);
		off[0] = lo, off[1] = 0, shape[0] = hi - lo, shape[1] = COLS;
	}
	grid = calloc((size_t)(shape[0] * shape[1]) + 1, sizeof(double));
	block(LEN, rank, world, &lo1, &hi1);
	line = calloc((size_t)(hi1 - lo1) + 1, sizeof(int32_t));
	CHECK(mlrt_ckpt_add_shard(ck, "grid", grid, MLRT_F64, 2, gshape, off, shape) == MLRT_OK,
	      "add grid");
	CHECK(mlrt_ckpt_add_shard(ck, "line", line, MLRT_I32, 1, lshape, &lo1,
	                          (int64_t[]){hi1 - lo1}) == MLRT_OK,
	      "add line");
	CHECK(mlrt_ckpt_add_replicated(ck, "rep", rep, 8, MLRT_F64) == MLRT_OK, "add rep");
	CHECK(mlrt_ckpt_add_meta(ck, "epoch", &epoch, 1, MLRT_I64) == MLRT_OK, "add epoch");
	rc = mlrt_ckpt_restore(ck, &step);
	CHECK(rc == MLRT_OK && step == 3, "restore: %s, step %" PRId64, mlrt_strerror(rc), step);
	for (int64_t i = 0; i < shape[0]; i++)
		for (int64_t j = 0; j < shape[1]; j++)
			CHECK(grid[i * shape[1] + j] == grid_value(off[0] + i, off[1] + j),
			      "grid[%" PRId64 "][%" PRId64 "] = %g, want %g", off[0] + i, off[1] + j,
			      grid[i * shape[1] + j], grid_value(off[0] + i, off[1] + j));
	for (int64_t i = lo1; i < hi1; i++)
		CHECK(line[i - lo1] == (int32_t)(i * 7 - 3), "line[%" PRId64 "] = %d", i,
		      line[i - lo1]);
	for (int i = 0; i < 8; i++)
		CHECK(rep[i] == i * 1.5, "rep[%d] = %g", i, rep[i]);
	CHECK(epoch == 12, "epoch %" PRId64, epoch);
	CHECK(mlrt_ckpt_close(ck) == MLRT_OK, "close");

	/* A per-rank tensor cannot come back at another world size. */
	ck = open_ck(ctx, dir, 0);
	CHECK(mlrt_ckpt_add(ck, "mine", &mine, 1, MLRT_I32) == MLRT_OK, "add mine");
	rc = mlrt_ckpt_restore(ck, &step);
	if (world > 4)
		CHECK(rc == MLRT_ERR_INVALID, "per-rank restore at world %d: %s", world,
		      mlrt_strerror(rc));
	else
		CHECK(rc == MLRT_OK && mine == rank, "per-rank restore: %s, %d", mlrt_strerror(rc),
		      mine);
	mlrt_ckpt_close(ck);
	free(line);
	free(grid);
}

#define STEPS_LEN 1000

static float step_value(int64_t step, int r, int i)
{
	return (float)(step * 100000 + r * 1000 + i);
}

static void steps_register(mlrt_ckpt *ck, float *w, float *rep)
{
	CHECK(mlrt_ckpt_add(ck, "w", w, STEPS_LEN, MLRT_F32) == MLRT_OK, "add w");
	CHECK(mlrt_ckpt_add_replicated(ck, "rep", rep, STEPS_LEN, MLRT_F32) == MLRT_OK, "add rep");
}

static void steps_save(mlrt_ctx *ctx, const char *dir)
{
	static float w[STEPS_LEN], rep[STEPS_LEN];
	mlrt_ckpt *ck = open_ck(ctx, dir, 1);
	int rc;

	steps_register(ck, w, rep);
	for (int64_t step = 1; step <= 3; step++) {
		for (int i = 0; i < STEPS_LEN; i++) {
			w[i] = step_value(step, rank, i);
			rep[i] = step_value(step, 0, i);
		}
		rc = mlrt_ckpt_save(ck, step);
		CHECK(rc == MLRT_OK, "save of step %" PRId64 ": %s", step, mlrt_strerror(rc));
	}
	CHECK(mlrt_ckpt_close(ck) == MLRT_OK, "close");
}

static void steps_restore(mlrt_ctx *ctx, const char *dir, int64_t want)
{
	static float w[STEPS_LEN], rep[STEPS_LEN];
	mlrt_ckpt *ck = open_ck(ctx, dir, 0);
	int64_t step = -1;
	int rc;

	steps_register(ck, w, rep);
	rc = mlrt_ckpt_restore(ck, &step);
	CHECK(rc == MLRT_OK && step == want, "restore: %s, step %" PRId64 ", want %" PRId64,
	      mlrt_strerror(rc), step, want);
	for (int i = 0; i < STEPS_LEN; i++)
		CHECK(w[i] == step_value(want, rank, i) && rep[i] == step_value(want, 0, i),
		      "element %d: w %g rep %g after restoring step %" PRId64, i, w[i], rep[i], want);
	CHECK(mlrt_ckpt_close(ck) == MLRT_OK, "close");
}

static void enospc(mlrt_ctx *ctx, const char *dir, int async)
{
	const size_t n = 3u << 18; /* 3 MiB of f32 */
	float *w = malloc(n * sizeof(float));
	mlrt_ckpt *ck = open_ck(ctx, dir, async);
	int64_t step = -1;
	int rc;

	for (size_t i = 0; i < n; i++)
		w[i] = (float)(i % 1000) + (float)rank;
	CHECK(mlrt_ckpt_add(ck, "w", w, n, MLRT_F32) == MLRT_OK, "add");
	rc = mlrt_ckpt_save(ck, 1);
	if (rc == MLRT_OK)
		rc = mlrt_ckpt_wait(ck, NULL);
	CHECK(rc == MLRT_OK, "save of step 1: %s", mlrt_strerror(rc));
	for (size_t i = 0; i < n; i++)
		w[i] = -1.0f;
	rc = mlrt_ckpt_save(ck, 2);
	if (async) {
		CHECK(rc == MLRT_OK, "async save of step 2 returned %s before writing",
		      mlrt_strerror(rc));
		rc = mlrt_ckpt_wait(ck, &step);
		CHECK(step == 1, "newest committed step %" PRId64 ", want 1", step);
	}
	CHECK(rc == MLRT_ERR_NOSPACE, "save of step 2 on a full disk: %s, want %s",
	      mlrt_strerror(rc), mlrt_strerror(MLRT_ERR_NOSPACE));
	rc = mlrt_ckpt_restore(ck, &step);
	CHECK(rc == MLRT_OK && step == 1, "restore: %s, step %" PRId64, mlrt_strerror(rc), step);
	for (size_t i = 0; i < n; i++)
		CHECK(w[i] == (float)(i % 1000) + (float)rank, "w[%zu] = %g after restore", i, w[i]);
	CHECK(mlrt_ckpt_close(ck) == MLRT_OK, "close");
	free(w);
}

int main(int argc, char **argv)
{
	mlrt_ctx *ctx;
	int rc;

	if (argc < 3) {
		fprintf(stderr, "usage: ckpt_check MODE DIR [ARG] (see the top of ckpt_check.c)\n");
		return 2;
	}
	rc = mlrt_init(&ctx);
	if (rc != MLRT_OK) {
		fprintf(stderr, "ckpt_check: init: %s\n", mlrt_strerror(rc));
		return 1;
	}
	rank = mlrt_rank(ctx);
	world = mlrt_size(ctx);
	if (strcmp(argv[1], "shard-save") == 0)
		shard_save(ctx, argv[2]);
	else if (strcmp(argv[1], "shard-restore") == 0)
		shard_restore(ctx, argv[2]);
	else if (strcmp(argv[1], "steps-save") == 0)
		steps_save(ctx, argv[2]);
	else if (strcmp(argv[1], "steps-restore") == 0 && argc == 4)
		steps_restore(ctx, argv[2], atoll(argv[3]));
	else if (strcmp(argv[1], "enospc") == 0 && argc == 4)
		enospc(ctx, argv[2], strcmp(argv[3], "async") == 0);
	else
		CHECK(0, "unknown mode %s", argv[1]);
	printf("%s: rank %d ok\n", argv[1], rank);
	mlrt_finalize(ctx);
	return 0;
}
