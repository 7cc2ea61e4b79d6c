/* The flagship example's command line and data order (run.h). */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mlrt/mlrt.h>

#include "../common/example.h"
#include "model.h"
#include "run.h"

/* The train/test split's own seed, and the share held out. */
#define SPLIT_SEED 0x6d6c72742d6d6c70ull
#define TEST_PERCENT 20

void mlp_usage(FILE *f, const char *prog, const char *about, const char *trailer)
{
	fprintf(f, "usage: %s [options]\n\n%s\n", prog, about);
	fprintf(f,
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
	        "%s",
	        MLP_DEFAULT_DATA, trailer);
}

int mlp_parse_options(int argc, char **argv, const char *prog, struct mlp_options *o)
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

	*o = (struct mlp_options){
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
		case OPT_EPOCHS: bad |= arg_int(prog, "epochs", optarg, 1, 1000000, &o->epochs); break;
		case OPT_HIDDEN: bad |= arg_int(prog, "hidden", optarg, 1, 4096, &o->hidden); break;
		case OPT_BATCH: bad |= arg_int(prog, "batch", optarg, 1, 1000000, &o->batch); break;
		case OPT_LR: bad |= arg_real(prog, "lr", optarg, 0.0, 100.0, 0, &o->lr); break;
		case OPT_MOMENTUM:
			bad |= arg_real(prog, "momentum", optarg, 0.0, 1.0, 1, &o->momentum);
			break;
		case OPT_SEED: bad |= arg_int(prog, "seed", optarg, 0, INT64_MAX, &o->seed); break;
		case OPT_CKPT_DIR:
			if (optarg[0] == '\0') {
				fprintf(stderr, "%s: --ckpt-dir: empty directory name\n", prog);
				bad = -1;
			}
			o->ckpt_dir = optarg;
			break;
		case OPT_CKPT_EVERY:
			bad |= arg_int(prog, "ckpt-every", optarg, 1, INT64_MAX, &o->ckpt_every);
			break;
		case OPT_CKPT_ASYNC: o->ckpt_async = 1; break;
		case OPT_WEIGHTS_OUT: o->weights_out = optarg; break;
		case OPT_CRASH_AT_STEP:
			bad |= arg_int(prog, "crash-at-step", optarg, 0, INT64_MAX, &o->crash_at_step);
			break;
		case 'h': return 1;
		default: bad = -1; break;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
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

uint64_t mlp_stream_seed(int64_t seed, uint64_t stream, int64_t n)
{
	return mlp_mix64(mlp_mix64((uint64_t)seed) ^ mlp_mix64(stream) ^ (uint64_t)n);
}

int mlp_split(const digits *d, int **train, int *ntrain, int **test, int *ntest)
{
	int n = d->n, *order = malloc((size_t)n * sizeof(int));

	if (order == NULL)
		return MLRT_ERR_NOMEM;
	for (int i = 0; i < n; i++)
		order[i] = i;
	shuffle(order, n, SPLIT_SEED);
	*ntest = n * TEST_PERCENT / 100;
	*ntrain = n - *ntest;
	*train = order;
	*test = order + *ntrain;
	return MLRT_OK;
}

void mlp_epoch_order(int *perm, const int *train, int ntrain, int64_t seed, int64_t epoch)
{
	memcpy(perm, train, (size_t)ntrain * sizeof(int));
	shuffle(perm, ntrain, mlp_stream_seed(seed, MLP_STREAM_EPOCH, epoch));
}

int mlp_ckpt_save(struct mlp_ckpt *c, const struct mlp_options *o, const char *prog, int rank)
{
	int rc = mlrt_ckpt_save(c->ck, c->step);

	if (rc != MLRT_OK) {
		fprintf(stderr, "%s: rank %d: checkpoint of step %" PRId64 " in %s: %s\n", prog, rank,
		        c->step, o->ckpt_dir, mlrt_strerror(rc));
		return rc;
	}
	c->last_saved = c->step;
	return MLRT_OK;
}

int mlp_ckpt_start(struct mlp_ckpt *c, mlrt_ctx *ctx, const struct mlp_options *o,
                   const char *prog, int rank, int size, float *params, float *momentum,
                   size_t nparams)
{
	mlrt_ckpt_opts co;
	int64_t restored = -1;
	int rc;

	mlrt_ckpt_opts_init(&co);
	co.async = o->ckpt_async;
	rc = mlrt_ckpt_open_opts(ctx, o->ckpt_dir, &co, &c->ck);
	if (rc != MLRT_OK) {
		fprintf(stderr, "%s: rank %d: cannot open checkpoint directory %s: %s\n", prog, rank,
		        o->ckpt_dir, mlrt_strerror(rc));
		return rc;
	}
	/* Params and momentum are the same on every rank: saved once,
	 * restorable at any world size.  Device buffers (mlp_gpu) are staged
	 * in pinned host memory by mlrt_ckpt (docs/ckpt.md, "Device memory"). */
	rc = mlrt_ckpt_add_replicated(c->ck, "params", params, nparams, MLRT_F32);
	if (rc == MLRT_OK)
		rc = mlrt_ckpt_add_replicated(c->ck, "momentum", momentum, nparams, MLRT_F32);
	if (rc == MLRT_OK)
		rc = mlrt_ckpt_add_meta(c->ck, "step", &c->step, 1, MLRT_I64);
	if (rc == MLRT_OK)
		rc = mlrt_ckpt_add_meta(c->ck, "seed", &c->seed, 1, MLRT_I64);
	if (rc == MLRT_OK)
		rc = mlrt_ckpt_add_meta(c->ck, "global_batch", &c->global_batch, 1, MLRT_I64);
	if (rc != MLRT_OK) {
		fprintf(stderr, "%s: rank %d: cannot register the checkpoint buffers: %s\n", prog,
		        rank, mlrt_strerror(rc));
		return rc;
	}
	rc = mlrt_ckpt_restore(c->ck, &restored);
	if (rc == MLRT_ERR_NOT_FOUND)
		return MLRT_OK; /* a fresh start */
	if (rc != MLRT_OK) {
		fprintf(stderr, "%s: rank %d: cannot restore from %s: %s (a checkpoint of another "
		                "model, e.g. another --hidden? use an empty --ckpt-dir)\n",
		        prog, rank, o->ckpt_dir, mlrt_strerror(rc));
		return rc;
	}
	if (c->seed != o->seed) {
		fprintf(stderr, "%s: rank %d: the checkpoint in %s was written with --seed %" PRId64
		                "; rerun with that seed or use another --ckpt-dir\n",
		        prog, rank, o->ckpt_dir, c->seed);
		return MLRT_ERR_INVALID;
	}
	if (c->step != restored) {
		fprintf(stderr, "%s: rank %d: step %" PRId64 " of %s holds step counter %" PRId64
		                "; the directory was not written by %s\n",
		        prog, rank, restored, o->ckpt_dir, c->step, prog);
		return MLRT_ERR_INVALID;
	}
	c->last_saved = restored;
	if (rank != 0)
		return MLRT_OK;
	printf("rank 0: restored step %" PRId64 " (restart %d)\n", restored,
	       mlrt_restart_count(ctx));
	fflush(stdout);
	/* The world size may change between runs (mlrun --nnodes MIN:MAX):
	 * the replicated buffers restore at any size, but a step then means
	 * another number of samples and the data order differs. */
	if (c->global_batch != size * o->batch)
		fprintf(stderr, "%s: note: steps up to %" PRId64 " were of %" PRId64 " samples, "
		                "now of %d ranks x %" PRId64 "; training goes on, but not as an "
		                "uninterrupted run would\n",
		        prog, restored, c->global_batch, size, o->batch);
	c->global_batch = size * o->batch;
	return MLRT_OK;
}

/* The end of an epoch: scored on the whole training set with the weights
 * at its end, so a resumed run prints the same numbers. */
static int end_of_epoch(const struct mlp_run *r, const struct mlp_steps *s, void *self,
                        int64_t epoch)
{
	int64_t every = r->o->epochs >= 10 ? r->o->epochs / 10 : 1;
	double loss, acc;
	int rc = s->evaluate(self, 0, &loss, &acc);

	if (rc != MLRT_OK || r->rank != 0)
		return rc;
	if (epoch == 1 || epoch % every == 0 || epoch == r->o->epochs) {
		printf("epoch %3" PRId64 "/%" PRId64 "  loss %.4f  train accuracy %.4f\n", epoch,
		       r->o->epochs, loss, acc);
		fflush(stdout);
	}
	rc = mlrt_report(r->ctx, "loss", loss, epoch);
	if (rc != MLRT_OK)
		fprintf(stderr, "%s: rank 0: reporting the loss of epoch %" PRId64 ": %s\n", r->prog,
		        epoch, mlrt_strerror(rc));
	return rc;
}

int mlp_train(const struct mlp_run *r, const struct mlp_steps *s, void *self)
{
	const struct mlp_options *o = r->o;
	struct mlp_ckpt *c = r->c;
	double loss, acc, t0 = example_now_s();
	int rc = MLRT_OK;

	while (rc == MLRT_OK && c->step < r->total_steps) {
		if (c->step == o->crash_at_step && mlrt_restart_count(r->ctx) == 0 &&
		    r->rank == r->size - 1) {
			fprintf(stderr, "%s: rank %d: --crash-at-step %" PRId64 ": killing myself\n",
			        r->prog, r->rank, c->step);
			fflush(stdout);
			raise(SIGKILL);
		}
		rc = s->train_step(self, c->step);
		if (rc != MLRT_OK)
			break;
		c->step++;
		if (c->ck != NULL && c->step % o->ckpt_every == 0)
			rc = mlp_ckpt_save(c, o, r->prog, r->rank);
		if (rc == MLRT_OK && c->step % r->steps_per_epoch == 0)
			rc = end_of_epoch(r, s, self, c->step / r->steps_per_epoch);
	}
	if (rc == MLRT_OK && c->ck != NULL && c->last_saved != c->step)
		rc = mlp_ckpt_save(c, o, r->prog, r->rank);
	if (rc != MLRT_OK)
		return rc;
	if (c->ck != NULL) {
		/* Waits for a background save and reports how it ended. */
		rc = mlrt_ckpt_close(c->ck);
		c->ck = NULL;
		if (rc != MLRT_OK) {
			fprintf(stderr, "%s: rank %d: the last checkpoint in %s failed: %s\n", r->prog,
			        r->rank, o->ckpt_dir, mlrt_strerror(rc));
			return rc;
		}
	}

	rc = s->evaluate(self, 1, &loss, &acc);
	if (rc != MLRT_OK || r->rank != 0)
		return rc;
	printf("%s: %" PRId64 " steps in %.2f s\n", r->prog, c->step, example_now_s() - t0);
	printf("test accuracy: %.4f\n", acc);
	fflush(stdout);
	rc = mlrt_report(r->ctx, "accuracy", acc, c->step / r->steps_per_epoch);
	if (rc != MLRT_OK) {
		fprintf(stderr, "%s: rank 0: reporting the accuracy: %s\n", r->prog, mlrt_strerror(rc));
		return rc;
	}
	return o->weights_out != NULL ? s->write_weights(self, o->weights_out) : MLRT_OK;
}
