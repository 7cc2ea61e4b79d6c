/* The flagship example's command line and data order, shared by the host
 * version (mlp.c) and the GPU version (../mlp_gpu/mlp_gpu.c): the same
 * options, the same train/test split and the same order of samples per
 * epoch, so that both train the same model on the same batches, and the
 * same checkpoints. */
#ifndef MLP_RUN_H
#define MLP_RUN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <mlrt/mlrt.h>

#include "digits.h"

#ifndef MLP_DEFAULT_DATA
#define MLP_DEFAULT_DATA "data/digits.csv.gz"
#endif

/* Distinguishes the streams derived from one seed. */
#define MLP_STREAM_INIT 1
#define MLP_STREAM_EPOCH 2

struct mlp_options {
	const char *data;
	int64_t epochs, hidden, batch, seed, ckpt_every, crash_at_step;
	double lr, momentum;
	const char *ckpt_dir;
	int ckpt_async;
	const char *weights_out;
};

/* The help text of program prog; about: its own paragraph (after the
 * usage line), trailer: a last line or "". */
void mlp_usage(FILE *f, const char *prog, const char *about, const char *trailer);

/* 0: parsed; 1: --help was given; -1: bad usage (message printed, naming
 * prog). */
int mlp_parse_options(int argc, char **argv, const char *prog, struct mlp_options *o);

/* A seed for stream of n (epoch, ...) derived from seed. */
uint64_t mlp_stream_seed(int64_t seed, uint64_t stream, int64_t n);

/* The fixed split of d's rows, not depending on --seed (runs with other
 * seeds are scored on the same test set): *train gets ntrain indices and
 * *test the rest, both in one malloc'd array starting at *train.
 * MLRT_ERR_NOMEM. */
int mlp_split(const digits *d, int **train, int *ntrain, int **test, int *ntest);

/* perm = the ntrain training rows in epoch's order: a function of (seed,
 * epoch) only, so a resumed run sees the same order as an uninterrupted
 * one. */
void mlp_epoch_order(int *perm, const int *train, int ntrain, int64_t seed, int64_t epoch);

/* What a checkpoint holds beside the model's parameters and momentum. */
struct mlp_ckpt {
	mlrt_ckpt *ck;         /* NULL: no --ckpt-dir */
	int64_t step;          /* updates done */
	int64_t seed;          /* --seed of the run (checked on restore) */
	int64_t global_batch;  /* ranks x --batch: what one step means */
	int64_t last_saved;    /* -1: none */
};

/* Open o->ckpt_dir, register params and momentum (nparams floats, host or
 * device memory, the same on every rank) and c's counters, and restore
 * the newest step if there is one (MLRT_OK as well when there is none).
 * Messages name prog. */
int mlp_ckpt_start(struct mlp_ckpt *c, mlrt_ctx *ctx, const struct mlp_options *o,
                   const char *prog, int rank, int size, float *params, float *momentum,
                   size_t nparams);

/* Save step c->step (collective). */
int mlp_ckpt_save(struct mlp_ckpt *c, const struct mlp_options *o, const char *prog, int rank);

/* What an example does in the training loop (self: its own state). */
struct mlp_steps {
	int (*train_step)(void *self, int64_t step); /* one update, on every rank */
	/* Mean loss and accuracy over the training rows (test == 0) or the
	 * test rows; the same on every rank. */
	int (*evaluate)(void *self, int test, double *loss, double *acc);
	int (*write_weights)(void *self, const char *path); /* rank 0, --weights-out */
};

/* A run of one of the examples. */
struct mlp_run {
	mlrt_ctx *ctx;
	const struct mlp_options *o;
	const char *prog; /* in messages */
	int rank, size;
	int64_t steps_per_epoch, total_steps;
	struct mlp_ckpt *c;
};

/* The training loop both examples share: steps from c->step to
 * total_steps (with --crash-at-step), a checkpoint every --ckpt-every steps
 * and at the end, each epoch's training loss and accuracy (printed and
 * reported by rank 0), then the test accuracy and --weights-out. */
int mlp_train(const struct mlp_run *r, const struct mlp_steps *s, void *self);

#endif
