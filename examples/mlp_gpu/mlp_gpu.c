/* mlp_gpu: the flagship example (examples/mlp/mlp.c) with its math on a
 * GPU.  The same perceptron, data, hyperparameters and options; the
 * parameters, gradients and momentum live in device memory, the matrix
 * products are cublasSgemm calls and the rest small CUDA kernels
 * (kernels.cu).  Data-parallel exactly like the host version: one
 * mlrt_allreduce averages the gradients (device buffers), and mlrt_ckpt
 * saves and restores the device buffers themselves:
 *
 *   mlrun -np 2 build/examples/mlp_gpu/mlp_gpu --ckpt-dir /tmp/mlp-gpu-ckpt
 *
 * Rank r uses device local_rank % device_count, so ranks may share a GPU.
 * Exits 77 when there is no GPU.  See docs/examples.md. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include <mlrt/mlrt.h>

#include "../common/example.h"
#include "../mlp/digits.h"
#include "../mlp/model.h"
#include "../mlp/run.h"

#include "model_gpu.h"

#define PROG "mlp_gpu" /* in messages */
/* Rows the device scratch holds: a training batch or an evaluation chunk. */
#define EVAL_ROWS 512

/* Return call's status from the calling function when it failed (the
 * callee has printed what went wrong; main releases everything). */
#define CHECK(call)                                                                              \
	do {                                                                                     \
		int check_rc_ = (call);                                                          \
		if (check_rc_ != MLRT_OK)                                                        \
			return check_rc_;                                                        \
	} while (0)

struct trainer {
	const struct mlp_options *o;
	mlrt_ctx *ctx;
	mlrt_comm *world;
	int rank, size;
	digits data;
	int *train, ntrain; /* indices into data */
	int *test, ntest;
	int *perm;          /* this epoch's order of train[] */
	int64_t perm_epoch; /* the epoch perm is for; -1: none yet */
	int64_t steps_per_epoch, total_steps;
	int device;         /* CUDA ordinal this rank computes on */
	mlpg_model model;
	struct mlp_ckpt c; /* the checkpoint and the counters it holds */
	int bad_usage;      /* the options do not fit this world: exit 2 */
};

/* The text of --help. */
static const char about[] = "Train a 64-H-10 perceptron on the digits data on GPUs (rank r uses device\n"
	                            "local_rank % device_count), data-parallel over the ranks of an mlrt job, e.g.\n"
	                            "  mlrun -np 2 build/examples/mlp_gpu/mlp_gpu --ckpt-dir /tmp/ck\n";
static const char trailer[] = "Exits 77 when there is no GPU.\n";

/* The fixed split of the rows into training and test sets. */
static int split(struct trainer *t)
{
	return mlp_split(&t->data, &t->train, &t->ntrain, &t->test, &t->ntest);
}

/* perm = the training rows in epoch's order: a function of (seed, epoch)
 * only, so a resumed run sees the same order as an uninterrupted one. */
static void epoch_order(struct trainer *t, int64_t epoch)
{
	if (t->perm_epoch == epoch)
		return;
	mlp_epoch_order(t->perm, t->train, t->ntrain, t->o->seed, epoch);
	t->perm_epoch = epoch;
}

/* One update: the rows of step s that are this rank's, gradients averaged
 * over the world, then SGD with momentum on every rank alike. */
static int train_step(void *self, int64_t s)
{
	struct trainer *t = self;
	int64_t epoch = s / t->steps_per_epoch, k = s % t->steps_per_epoch;
	int b = (int)t->o->batch;
	const int *idx;
	int rc;

	epoch_order(t, epoch);
	idx = t->perm + (k * t->size + t->rank) * b;
	rc = mlpg_grad(&t->model, idx, b);
	/* The gradients are complete before the collective reads them,
	 * whatever stream it uses. */
	if (rc == MLRT_OK)
		rc = mlpg_sync(&t->model, "the gradients");
	if (rc != MLRT_OK) {
		fprintf(stderr, "mlp_gpu: rank %d: gradients of step %" PRId64 " on device %d: %s\n",
		        t->rank, s, t->device, mlrt_strerror(rc));
		return rc;
	}
	/* Device buffers, in place: mlrt moves them (NCCL or staged). */
	rc = mlrt_allreduce(t->world, t->model.grad, t->model.grad, t->model.nparams, MLRT_F32,
	                    MLRT_AVG);
	if (rc != MLRT_OK) {
		fprintf(stderr, "mlp_gpu: rank %d: allreduce of the gradients at step %" PRId64 ": %s\n",
		        t->rank, s, mlrt_strerror(rc));
		return rc;
	}
	rc = mlpg_step(&t->model, (float)t->o->lr, (float)t->o->momentum);
	if (rc != MLRT_OK)
		fprintf(stderr, "mlp_gpu: rank %d: update of step %" PRId64 ": %s\n", t->rank, s,
		        mlrt_strerror(rc));
	return rc;
}

/* Mean loss and accuracy of the model over the training or test rows, each rank
 * scoring its contiguous share; the same result on every rank. */
static int evaluate(void *self, int test, double *loss, double *acc)
{
	struct trainer *t = self;
	const int *idx = test ? t->test : t->train;
	int n = test ? t->ntest : t->ntrain;
	int lo = (int)((int64_t)n * t->rank / t->size);
	int hi = (int)((int64_t)n * (t->rank + 1) / t->size);
	int64_t correct = 0;
	double sums[2] = {0.0, 0.0};
	int rc;

	for (int i = lo; i < hi; i += t->model.max_rows) {
		int m = hi - i < t->model.max_rows ? hi - i : t->model.max_rows;
		double part;

		rc = mlpg_eval(&t->model, idx + i, m, &part, &correct);
		if (rc != MLRT_OK) {
			fprintf(stderr, "mlp_gpu: rank %d: evaluation on device %d: %s\n", t->rank,
			        t->device, mlrt_strerror(rc));
			return rc;
		}
		sums[0] += part;
	}
	sums[1] = (double)correct;
	rc = mlrt_allreduce(t->world, sums, sums, 2, MLRT_F64, MLRT_SUM);
	if (rc != MLRT_OK) {
		fprintf(stderr, "mlp_gpu: rank %d: allreduce of the evaluation: %s\n", t->rank,
		        mlrt_strerror(rc));
		return rc;
	}
	*loss = sums[0] / n;
	*acc = sums[1] / n;
	return MLRT_OK;
}

/* Open the checkpoint directory, register the training state and restore
 * the newest step if there is one. */
static int ckpt_start(struct trainer *t)
{
	return mlp_ckpt_start(&t->c, t->ctx, t->o, PROG, t->rank, t->size, t->model.params,
	                      t->model.momentum, t->model.nparams);
}

static int write_weights(void *self, const char *path)
{
	struct trainer *t = self;
	size_t n = t->model.nparams;
	float *w = malloc(n * sizeof(float));
	FILE *f;
	int rc;

	if (w == NULL)
		return MLRT_ERR_NOMEM;
	rc = mlpg_params_to_host(&t->model, w);
	if (rc != MLRT_OK) {
		free(w);
		return rc;
	}
	f = fopen(path, "wb");
	if (f == NULL || fwrite(w, sizeof(float), n, f) != n || fclose(f) != 0) {
		fprintf(stderr, "mlp_gpu: rank 0: cannot write the weights to %s: %s\n", path,
		        strerror(errno));
		free(w);
		return MLRT_ERR_IO;
	}
	free(w);
	return MLRT_OK;
}


static int train(struct trainer *t)
{
	const struct mlp_options *o = t->o;
	int rc;

	CHECK(digits_load(o->data, &t->data));
	CHECK(split(t));
	t->steps_per_epoch = t->ntrain / (t->size * o->batch);
	if (t->steps_per_epoch == 0) {
		fprintf(stderr, "mlp_gpu: a global batch of %d ranks x --batch %" PRId64 " is larger than "
		                "the %d training samples; lower --batch\n",
		        t->size, o->batch, t->ntrain);
		t->bad_usage = 1;
		return MLRT_ERR_INVALID;
	}
	t->total_steps = t->steps_per_epoch * o->epochs;
	t->perm = malloc((size_t)t->ntrain * sizeof(int));
	if (t->perm == NULL)
		return MLRT_ERR_NOMEM;
	t->perm_epoch = -1;
	{
		/* The host model's initial weights, so that both examples start
		 * from the same parameters. */
		mlp_model init;
		int max_rows = o->batch > EVAL_ROWS ? (int)o->batch : EVAL_ROWS;

		rc = mlp_model_init(&init, DIGITS_FEATURES, (int)o->hidden, DIGITS_CLASSES, 1,
		                    mlp_stream_seed(o->seed, MLP_STREAM_INIT, 0));
		if (rc == MLRT_OK)
			rc = mlpg_init(&t->model, DIGITS_FEATURES, (int)o->hidden, DIGITS_CLASSES,
			               max_rows, init.params, t->data.x, t->data.y, t->data.n);
		mlp_model_fini(&init);
		if (rc != MLRT_OK) {
			fprintf(stderr, "mlp_gpu: rank %d: cannot set up the model on device %d: %s\n",
			        t->rank, t->device, mlrt_strerror(rc));
			return rc;
		}
	}
	t->c.seed = o->seed;
	t->c.global_batch = t->size * o->batch;
	t->c.last_saved = -1;
	if (o->ckpt_dir != NULL)
		CHECK(ckpt_start(t));
	if (t->rank == 0) {
		printf("mlp_gpu: %d ranks, %d training and %d test samples, %zu parameters, "
		       "%" PRId64 " steps of %" PRId64 " samples per epoch, rank 0 on device %d\n",
		       t->size, t->ntrain, t->ntest, t->model.nparams, t->steps_per_epoch,
		       t->size * o->batch, t->device);
		fflush(stdout);
	}

	return mlp_train(&(struct mlp_run){t->ctx, o, PROG, t->rank, t->size, t->steps_per_epoch,
	                                   t->total_steps, &t->c},
	                 &(const struct mlp_steps){train_step, evaluate, write_weights},
	                 t);
}

int main(int argc, char **argv)
{
	struct mlp_options o;
	struct trainer t = {.o = &o};
	cudaError_t e;
	int rc, ndev = 0;

	rc = mlp_parse_options(argc, argv, PROG, &o);
	if (rc != 0) {
		mlp_usage(rc > 0 ? stdout : stderr, PROG, about, trailer);
		return rc > 0 ? 0 : 2;
	}
	if (mlrt_device_count(&ndev) != MLRT_OK || ndev == 0) {
		fprintf(stderr, "mlp_gpu: no CUDA device here (see mlrun devices); the host "
		                "version is examples/mlp\n");
		return 77;
	}
	rc = mlrt_init(&t.ctx);
	if (rc != MLRT_OK) {
		fprintf(stderr, "mlp_gpu: mlrt_init: %s\n", mlrt_strerror(rc));
		return 1;
	}
	t.world = mlrt_world(t.ctx);
	t.rank = mlrt_rank(t.ctx);
	t.size = mlrt_size(t.ctx);
	t.device = mlrt_local_rank(t.ctx) % ndev;
	e = cudaSetDevice(t.device);
	if (e != cudaSuccess) {
		fprintf(stderr, "mlp_gpu: rank %d: cudaSetDevice(%d): %s\n", t.rank, t.device,
		        cudaGetErrorString(e));
		rc = MLRT_ERR_UNAVAILABLE;
	} else {
		rc = train(&t);
	}
	if (t.c.ck != NULL)
		mlrt_ckpt_close(t.c.ck);
	mlpg_fini(&t.model);
	free(t.train);
	free(t.perm);
	digits_free(&t.data);
	if (mlrt_finalize(t.ctx) != MLRT_OK && rc == MLRT_OK)
		rc = MLRT_ERR_INTERNAL;
	if (rc == MLRT_OK)
		return 0;
	return t.bad_usage ? 2 : 1;
}
