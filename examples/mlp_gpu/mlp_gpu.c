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
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include <mlrt/mlrt.h>

#include "../common/example.h"
#include "../mlp/digits.h"
#include "../mlp/model.h"

#include "model_gpu.h"

#define PROG "mlp_gpu" /* in messages */
/* Rows the device scratch holds: a training batch or an evaluation chunk. */
#define EVAL_ROWS 512

#ifndef MLP_DEFAULT_DATA
#define MLP_DEFAULT_DATA "data/digits.csv.gz"
#endif

/* The train/test split does not depend on --seed, so that runs with
 * different seeds are scored on the same test set. */
#define SPLIT_SEED 0x6d6c72742d6d6c70ull
#define TEST_PERCENT 20
/* Distinguishes the streams derived from one seed. */
#define STREAM_INIT 1
#define STREAM_EPOCH 2

/* Return call's status from the calling function when it failed (the
 * callee has printed what went wrong; main releases everything). */
#define CHECK(call)                                                                              \
	do {                                                                                     \
		int check_rc_ = (call);                                                          \
		if (check_rc_ != MLRT_OK)                                                        \
			return check_rc_;                                                        \
	} while (0)

struct options {
	const char *data;
	int64_t epochs, hidden, batch, seed, ckpt_every, crash_at_step;
	double lr, momentum;
	const char *ckpt_dir;
	int ckpt_async;
	const char *weights_out;
};

struct trainer {
	const struct options *o;
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
	mlrt_ckpt *ck;
	/* Checkpointed with the parameters and the momentum. */
	int64_t step; /* updates done */
	int64_t ckpt_seed;
	int64_t global_batch; /* ranks x --batch: what one step means */
	int64_t last_saved; /* -1: none */
	int bad_usage;      /* the options do not fit this world: exit 2 */
};

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: mlp_gpu [options]\n"
	        "\n"
	        "Train a 64-H-10 perceptron on the digits data on GPUs (rank r uses device\n"
	        "local_rank %% device_count), data-parallel over the ranks of an mlrt job, e.g.\n"
	        "  mlrun -np 2 build/examples/mlp_gpu/mlp_gpu --ckpt-dir /tmp/ck\n"
	        "\n"
	        "  --data PATH         digits CSV, gzip or plain (default %s)\n"
	        "  --epochs N          passes over the training set (default 30)\n"
	        "  --hidden N          hidden units H (default 64)\n"
	        "  --batch N           samples per rank per step (default 16)\n"
	        "  --lr X              learning rate (default 0.05)\n"
	        "  --momentum X        SGD momentum in [0, 1) (default 0.9)\n"
	        "  --seed N            seed of the initial weights and of the data order\n"
	        "                      (default 1)\n"
	        "  --ckpt-dir DIR      checkpoint to DIR, and resume from its newest step;\n"
	        "                      no checkpoints without it\n"
	        "  --ckpt-every K      steps between checkpoints (default 50); the last step\n"
	        "                      is always saved\n"
	        "  --ckpt-async        write checkpoints in the background\n"
	        "  --weights-out FILE  rank 0 writes the final parameters to FILE (raw\n"
	        "                      float32, native byte order), for bitwise comparisons\n"
	        "  --crash-at-step N   fault demo: in the job's first run (MLRT_RESTART_COUNT\n"
	        "                      0) the last rank kills itself with SIGKILL just before\n"
	        "                      step N; run under mlrun --max-restarts 1 to see it resume\n"
	        "  -h, --help          this text\n"
	        "\n"
	        "Rank 0 prints the loss every few epochs and, last, \"test accuracy: 0.XXXX\".\n"
	        "It reports \"loss\" per epoch and \"accuracy\" at the end with mlrt_report.\n"
	        "Exits 77 when there is no GPU.\n",
	        MLP_DEFAULT_DATA);
}



/* 0: parsed; 1: --help was given; -1: bad usage (message printed). */
static int parse_options(int argc, char **argv, struct options *o)
{
	enum {
		OPT_DATA = 256,
		OPT_EPOCHS,
		OPT_HIDDEN,
		OPT_BATCH,
		OPT_LR,
		OPT_MOMENTUM,
		OPT_SEED,
		OPT_CKPT_DIR,
		OPT_CKPT_EVERY,
		OPT_CKPT_ASYNC,
		OPT_WEIGHTS_OUT,
		OPT_CRASH_AT_STEP,
	};
	static const struct option longopts[] = {
		{"data", required_argument, NULL, OPT_DATA},
		{"epochs", required_argument, NULL, OPT_EPOCHS},
		{"hidden", required_argument, NULL, OPT_HIDDEN},
		{"batch", required_argument, NULL, OPT_BATCH},
		{"lr", required_argument, NULL, OPT_LR},
		{"momentum", required_argument, NULL, OPT_MOMENTUM},
		{"seed", required_argument, NULL, OPT_SEED},
		{"ckpt-dir", required_argument, NULL, OPT_CKPT_DIR},
		{"ckpt-every", required_argument, NULL, OPT_CKPT_EVERY},
		{"ckpt-async", no_argument, NULL, OPT_CKPT_ASYNC},
		{"weights-out", required_argument, NULL, OPT_WEIGHTS_OUT},
		{"crash-at-step", required_argument, NULL, OPT_CRASH_AT_STEP},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, bad = 0;

	*o = (struct options){
		.data = MLP_DEFAULT_DATA,
		.epochs = 30,
		.hidden = 64,
		.batch = 16,
		.seed = 1,
		.ckpt_every = 50,
		.crash_at_step = -1,
		.lr = 0.05,
		.momentum = 0.9,
	};
	opterr = 1; /* getopt names an unknown option or a missing argument */
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_DATA: o->data = optarg; break;
		case OPT_EPOCHS: bad |= arg_int(PROG, "epochs", optarg, 1, 1000000, &o->epochs); break;
		case OPT_HIDDEN: bad |= arg_int(PROG, "hidden", optarg, 1, 4096, &o->hidden); break;
		case OPT_BATCH: bad |= arg_int(PROG, "batch", optarg, 1, 1000000, &o->batch); break;
		case OPT_LR: bad |= arg_real(PROG, "lr", optarg, 0.0, 100.0, 0, &o->lr); break;
		case OPT_MOMENTUM:
			bad |= arg_real(PROG, "momentum", optarg, 0.0, 1.0, 1, &o->momentum);
			break;
		case OPT_SEED: bad |= arg_int(PROG, "seed", optarg, 0, INT64_MAX, &o->seed); break;
		case OPT_CKPT_DIR:
			if (optarg[0] == '\0') {
				fprintf(stderr, "mlp_gpu: --ckpt-dir: empty directory name\n");
				bad = -1;
			}
			o->ckpt_dir = optarg;
			break;
		case OPT_CKPT_EVERY:
			bad |= arg_int(PROG, "ckpt-every", optarg, 1, INT64_MAX, &o->ckpt_every);
			break;
		case OPT_CKPT_ASYNC: o->ckpt_async = 1; break;
		case OPT_WEIGHTS_OUT: o->weights_out = optarg; break;
		case OPT_CRASH_AT_STEP:
			bad |= arg_int(PROG, "crash-at-step", optarg, 0, INT64_MAX, &o->crash_at_step);
			break;
		case 'h': return 1;
		default: bad = -1; break;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mlp_gpu: unexpected argument '%s'\n", argv[optind]);
		bad = -1;
	}
	return bad ? -1 : 0;
}

/* Fisher-Yates shuffle of a[0..n) driven by the hash of (seed, i). */
static void shuffle(int *a, int n, uint64_t seed)
{
	for (int i = n - 1; i > 0; i--) {
		uint64_t r = mlp_mix64(seed ^ mlp_mix64((uint64_t)i));
		int j = (int)(r % (uint64_t)(i + 1)); /* bias below 2^-50: irrelevant here */
		int tmp = a[i];

		a[i] = a[j];
		a[j] = tmp;
	}
}

static uint64_t stream_seed(int64_t seed, uint64_t stream, int64_t n)
{
	return mlp_mix64(mlp_mix64((uint64_t)seed) ^ mlp_mix64(stream) ^ (uint64_t)n);
}

/* The fixed split: shuffle every row with SPLIT_SEED, hold out the last
 * TEST_PERCENT for testing. */
static int split(struct trainer *t)
{
	int n = t->data.n, *order = malloc((size_t)n * sizeof(int));

	if (order == NULL)
		return MLRT_ERR_NOMEM;
	for (int i = 0; i < n; i++)
		order[i] = i;
	shuffle(order, n, SPLIT_SEED);
	t->ntest = n * TEST_PERCENT / 100;
	t->ntrain = n - t->ntest;
	t->train = order;
	t->test = order + t->ntrain;
	return MLRT_OK;
}

/* perm = the training rows in epoch's order: a function of (seed, epoch)
 * only, so a resumed run sees the same order as an uninterrupted one. */
static void epoch_order(struct trainer *t, int64_t epoch)
{
	if (t->perm_epoch == epoch)
		return;
	memcpy(t->perm, t->train, (size_t)t->ntrain * sizeof(int));
	shuffle(t->perm, t->ntrain, stream_seed(t->o->seed, STREAM_EPOCH, epoch));
	t->perm_epoch = epoch;
}

/* One update: the rows of step s that are this rank's, gradients averaged
 * over the world, then SGD with momentum on every rank alike. */
static int train_step(struct trainer *t, int64_t s)
{
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

/* Mean loss and accuracy of the model over rows idx[0..n), each rank
 * scoring its contiguous share; the same result on every rank. */
static int evaluate(struct trainer *t, const int *idx, int n, double *loss, double *acc)
{
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

static int end_of_epoch(struct trainer *t, int64_t epoch)
{
	int64_t every = t->o->epochs >= 10 ? t->o->epochs / 10 : 1;
	double loss, acc;
	int rc;

	/* Scored on the whole training set with the weights at the end of
	 * the epoch, so a resumed run prints the same numbers. */
	rc = evaluate(t, t->train, t->ntrain, &loss, &acc);
	if (rc != MLRT_OK || t->rank != 0)
		return rc;
	if (epoch == 1 || epoch % every == 0 || epoch == t->o->epochs) {
		printf("epoch %3" PRId64 "/%" PRId64 "  loss %.4f  train accuracy %.4f\n", epoch,
		       t->o->epochs, loss, acc);
		fflush(stdout);
	}
	rc = mlrt_report(t->ctx, "loss", loss, epoch);
	if (rc != MLRT_OK)
		fprintf(stderr, "mlp_gpu: rank 0: reporting the loss of epoch %" PRId64 ": %s\n", epoch,
		        mlrt_strerror(rc));
	return rc;
}

static int save(struct trainer *t)
{
	int rc = mlrt_ckpt_save(t->ck, t->step);

	if (rc != MLRT_OK) {
		fprintf(stderr, "mlp_gpu: rank %d: checkpoint of step %" PRId64 " in %s: %s\n", t->rank,
		        t->step, t->o->ckpt_dir, mlrt_strerror(rc));
		return rc;
	}
	t->last_saved = t->step;
	return MLRT_OK;
}

/* Open the checkpoint directory, register the training state and restore
 * the newest step if there is one. */
static int ckpt_start(struct trainer *t)
{
	const struct options *o = t->o;
	mlrt_ckpt_opts co;
	int64_t restored = -1;
	int rc;

	mlrt_ckpt_opts_init(&co);
	co.async = o->ckpt_async;
	rc = mlrt_ckpt_open_opts(t->ctx, o->ckpt_dir, &co, &t->ck);
	if (rc != MLRT_OK) {
		fprintf(stderr, "mlp_gpu: rank %d: cannot open checkpoint directory %s: %s\n", t->rank,
		        o->ckpt_dir, mlrt_strerror(rc));
		return rc;
	}
	/* Params and momentum are the same on every rank: saved once,
	 * restorable at any world size.  They are device buffers: mlrt_ckpt
	 * stages them in pinned host memory (docs/ckpt.md, "Device memory"). */
	rc = mlrt_ckpt_add_replicated(t->ck, "params", t->model.params, t->model.nparams, MLRT_F32);
	if (rc == MLRT_OK)
		rc = mlrt_ckpt_add_replicated(t->ck, "momentum", t->model.momentum,
		                              t->model.nparams, MLRT_F32);
	if (rc == MLRT_OK)
		rc = mlrt_ckpt_add_meta(t->ck, "step", &t->step, 1, MLRT_I64);
	if (rc == MLRT_OK)
		rc = mlrt_ckpt_add_meta(t->ck, "seed", &t->ckpt_seed, 1, MLRT_I64);
	if (rc == MLRT_OK)
		rc = mlrt_ckpt_add_meta(t->ck, "global_batch", &t->global_batch, 1, MLRT_I64);
	if (rc != MLRT_OK) {
		fprintf(stderr, "mlp_gpu: rank %d: cannot register the checkpoint buffers: %s\n", t->rank,
		        mlrt_strerror(rc));
		return rc;
	}
	rc = mlrt_ckpt_restore(t->ck, &restored);
	if (rc == MLRT_ERR_NOT_FOUND)
		return MLRT_OK; /* a fresh start */
	if (rc != MLRT_OK) {
		fprintf(stderr, "mlp_gpu: rank %d: cannot restore from %s: %s (a checkpoint of another "
		                "model, e.g. another --hidden? use an empty --ckpt-dir)\n",
		        t->rank, o->ckpt_dir, mlrt_strerror(rc));
		return rc;
	}
	if (t->ckpt_seed != o->seed) {
		fprintf(stderr, "mlp_gpu: rank %d: the checkpoint in %s was written with --seed %" PRId64
		                "; rerun with that seed or use another --ckpt-dir\n",
		        t->rank, o->ckpt_dir, t->ckpt_seed);
		return MLRT_ERR_INVALID;
	}
	if (t->step != restored) {
		fprintf(stderr, "mlp_gpu: rank %d: step %" PRId64 " of %s holds step counter %" PRId64
		                "; the directory was not written by mlp\n",
		        t->rank, restored, o->ckpt_dir, t->step);
		return MLRT_ERR_INVALID;
	}
	t->last_saved = restored;
	if (t->rank != 0)
		return MLRT_OK;
	printf("rank 0: restored step %" PRId64 " (restart %d)\n", restored,
	       mlrt_restart_count(t->ctx));
	fflush(stdout);
	/* The world size may change between runs (mlrun --nnodes MIN:MAX):
	 * the replicated buffers restore at any size, but a step then means
	 * another number of samples and the data order differs. */
	if (t->global_batch != t->size * o->batch)
		fprintf(stderr, "mlp_gpu: note: steps up to %" PRId64 " were of %" PRId64 " samples, "
		                "now of %d ranks x %" PRId64 "; training goes on, but not as an "
		                "uninterrupted run would\n",
		        restored, t->global_batch, t->size, o->batch);
	t->global_batch = t->size * o->batch;
	return MLRT_OK;
}

static int write_weights(struct trainer *t, const char *path)
{
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
	const struct options *o = t->o;
	double loss, acc, t0;
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
		                    stream_seed(o->seed, STREAM_INIT, 0));
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
	t->ckpt_seed = o->seed;
	t->global_batch = t->size * o->batch;
	t->last_saved = -1;
	if (o->ckpt_dir != NULL)
		CHECK(ckpt_start(t));
	if (t->rank == 0) {
		printf("mlp_gpu: %d ranks, %d training and %d test samples, %zu parameters, "
		       "%" PRId64 " steps of %" PRId64 " samples per epoch, rank 0 on device %d\n",
		       t->size, t->ntrain, t->ntest, t->model.nparams, t->steps_per_epoch,
		       t->size * o->batch, t->device);
		fflush(stdout);
	}

	t0 = example_now_s();
	while (t->step < t->total_steps) {
		if (t->step == o->crash_at_step && mlrt_restart_count(t->ctx) == 0 &&
		    t->rank == t->size - 1) {
			fprintf(stderr, "mlp_gpu: rank %d: --crash-at-step %" PRId64 ": killing myself\n",
			        t->rank, t->step);
			fflush(stdout);
			raise(SIGKILL);
		}
		CHECK(train_step(t, t->step));
		t->step++;
		if (t->ck != NULL && t->step % o->ckpt_every == 0)
			CHECK(save(t));
		if (t->step % t->steps_per_epoch == 0)
			CHECK(end_of_epoch(t, t->step / t->steps_per_epoch));
	}
	if (t->ck != NULL && t->last_saved != t->step)
		CHECK(save(t));
	if (t->ck != NULL) {
		/* Waits for a background save and reports how it ended. */
		rc = mlrt_ckpt_close(t->ck);
		t->ck = NULL;
		if (rc != MLRT_OK) {
			fprintf(stderr, "mlp_gpu: rank %d: the last checkpoint in %s failed: %s\n",
			        t->rank, o->ckpt_dir, mlrt_strerror(rc));
			return rc;
		}
	}

	CHECK(evaluate(t, t->test, t->ntest, &loss, &acc));
	if (t->rank != 0)
		return MLRT_OK;
	printf("mlp_gpu: %" PRId64 " steps in %.2f s\n", t->step, example_now_s() - t0);
	printf("test accuracy: %.4f\n", acc);
	fflush(stdout);
	rc = mlrt_report(t->ctx, "accuracy", acc, t->step / t->steps_per_epoch);
	if (rc != MLRT_OK) {
		fprintf(stderr, "mlp_gpu: rank 0: reporting the accuracy: %s\n", mlrt_strerror(rc));
		return rc;
	}
	if (o->weights_out != NULL)
		CHECK(write_weights(t, o->weights_out));
	return MLRT_OK;
}

int main(int argc, char **argv)
{
	struct options o;
	struct trainer t = {.o = &o};
	cudaError_t e;
	int rc, ndev = 0;

	rc = parse_options(argc, argv, &o);
	if (rc != 0) {
		usage(rc > 0 ? stdout : stderr);
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
	if (t.ck != NULL)
		mlrt_ckpt_close(t.ck);
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
