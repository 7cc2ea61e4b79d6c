/* ckpt_make DIR STEP...: save a small checkpoint of each STEP into DIR,
 * for the `mlrun ckpt` test (ckpt_cli.sh).  Run under mlrun.
 *
 * Tensors, all filled deterministically:
 *   layer0/weights  f32[1000], rank's own:   rank * 1000 + i
 *   bias            f64[16], replicated:     0.5 * i
 *   emb             f32 shard of [4, 8]:     rows 2r, 2r+1 of a 2-rank world
 *   epoch           i64 meta:                step / 10 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mlrt/ckpt.h>
#include <mlrt/mlrt.h>

#define WEIGHTS 1000
#define BIAS 16
#define EMB_ROWS 4
#define EMB_COLS 8

static float weights[WEIGHTS];
static double bias[BIAS];
static float emb[EMB_ROWS * EMB_COLS];
static int64_t epoch;

static int add_tensors(mlrt_ckpt *ck, int rank, int world)
{
	/* Rows split evenly; a world that does not divide them saves the
	 * remainder on the last rank. */
	int64_t per = EMB_ROWS / world, global[2] = {EMB_ROWS, EMB_COLS};
	int64_t offset[2] = {rank * per, 0};
	int64_t shape[2] = {rank == world - 1 ? EMB_ROWS - rank * per : per, EMB_COLS};
	int rc;

	for (int i = 0; i < WEIGHTS; i++)
		weights[i] = (float)(rank * 1000 + i);
	for (int i = 0; i < BIAS; i++)
		bias[i] = 0.5 * i;
	for (int i = 0; i < EMB_ROWS * EMB_COLS; i++)
		emb[i] = (float)(offset[0] * EMB_COLS + i);
	if ((rc = mlrt_ckpt_add(ck, "layer0/weights", weights, WEIGHTS, MLRT_F32)) != MLRT_OK ||
	    (rc = mlrt_ckpt_add_replicated(ck, "bias", bias, BIAS, MLRT_F64)) != MLRT_OK ||
	    (rc = mlrt_ckpt_add_shard(ck, "emb", emb, MLRT_F32, 2, global, offset, shape)) !=
	            MLRT_OK ||
	    (rc = mlrt_ckpt_add_meta(ck, "epoch", &epoch, 1, MLRT_I64)) != MLRT_OK)
		fprintf(stderr, "ckpt_make: cannot register the tensors: %s\n", mlrt_strerror(rc));
	return rc;
}

int main(int argc, char **argv)
{
	mlrt_ctx *ctx = NULL;
	mlrt_ckpt *ck = NULL;
	int rc;

	if (argc < 3) {
		fprintf(stderr, "usage: ckpt_make DIR STEP...\n");
		return 2;
	}
	rc = mlrt_init(&ctx);
	if (rc != MLRT_OK) {
		fprintf(stderr, "ckpt_make: mlrt_init: %s\n", mlrt_strerror(rc));
		return 1;
	}
	rc = mlrt_ckpt_open(ctx, argv[1], &ck);
	if (rc != MLRT_OK) {
		fprintf(stderr, "ckpt_make: cannot open %s: %s\n", argv[1], mlrt_strerror(rc));
		goto out;
	}
	rc = add_tensors(ck, mlrt_rank(ctx), mlrt_size(ctx));
	for (int i = 2; i < argc && rc == MLRT_OK; i++) {
		int64_t step = strtoll(argv[i], NULL, 10);

		epoch = step / 10;
		rc = mlrt_ckpt_save(ck, step);
		if (rc != MLRT_OK)
			fprintf(stderr, "ckpt_make: save of step %" PRId64 ": %s\n", step,
			        mlrt_strerror(rc));
	}
out:
	if (mlrt_ckpt_close(ck) != MLRT_OK && rc == MLRT_OK)
		rc = MLRT_ERR_IO;
	mlrt_finalize(ctx);
	return rc == MLRT_OK ? 0 : 1;
}
