/* ps_dense: one dense model trained two ways, to set the two architectures
 * of distributed training side by side.
 *
 *   mlrun -np 2 build/examples/ps_dense                  (--mode allreduce)
 *   mlrun --servers 1 -np 2 build/examples/ps_dense      (--mode ps)
 *
 * The model is softmax regression (a 64 x 10 weight matrix and 10 biases)
 * on the digits data, started from zeros, trained with plain SGD on the
 * mean cross-entropy of a global batch of W workers x --batch rows:
 *
 *   allreduce  data-parallel: every worker holds the weights, computes the
 *              mean gradient over its rows, mlrt_allreduce(MLRT_AVG) makes
 *              it the mean over the global batch, and every worker applies
 *              w -= lr * g itself;
 *   ps         the weights live on the parameter servers (optimizer SGD,
 *              SYNC consistency): each step a worker pulls them, computes
 *              the same gradient, and pushes it divided by W; the servers
 *              sum the W pushes of the step in worker order (so the sum is
 *              the mean) and apply w -= lr * g once.
 *
 * The rows of each step depend on (seed, step, W, rank) only, so the two
 * modes see the same batches and, given the same options, reach the same
 * accuracy.  Their final weights differ at most in the rounding of the sum
 * of the W gradients: with 2 workers they are bitwise equal (see
 * docs/examples.md).  Rank 0 prints a fingerprint of the final weights, and
 * --weights-out / --compare-weights compare two runs exactly. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mlrt/mlrt.h>

#include "../common/example.h"

#include "../mlp/digits.h"

#define PROG "ps_dense" /* in messages */

#ifndef PS_DENSE_DEFAULT_DATA
#define PS_DENSE_DEFAULT_DATA "data/digits.csv.gz"
#endif

/* The train/test split does not depend on --seed (the same test set for
 * every run); streams tell apart the random choices made from one seed. */
#define SPLIT_SEED 0x70732d64656e7365ull
#define TEST_PERCENT 20
#define STREAM_EPOCH 1

#define NW (DIGITS_CLASSES * DIGITS_FEATURES) /* weights, row c = class c */
#define NPARAMS (NW + DIGITS_CLASSES)         /* params = W | b */
/* The two parameter-server keys: W and b, at the two ends of the key
 * space so that with two servers each holds one (a server owns a range). */
#define KEY_W 0ull
#define KEY_B UINT64_MAX

#define CHECK(call)                                                                              \
	do {                                                                                     \
		int check_rc_ = (call);                                                          \
		if (check_rc_ != MLRT_OK)                                                        \
			return check_rc_;                                                        \
	} while (0)

enum mode { MODE_AUTO, MODE_ALLREDUCE, MODE_PS };

struct options {
	const char *data;
	enum mode mode;
	int64_t epochs, batch, seed;
	double lr;
	const char *weights_out, *compare;
};

struct trainer {
	const struct options *o;
	enum mode mode;
	mlrt_ctx *ctx;
	mlrt_comm *world;
	mlrt_ps *ps;
	int rank, size;
	digits data;
	int *train, ntrain; /* indices into data */
	int *test, ntest;
	int *perm;          /* this epoch's order of train[] */
	int64_t steps_per_epoch;
	float params[NPARAMS];
	float grad[NPARAMS];
	float logits[DIGITS_CLASSES];
	int bad_usage; /* the options do not fit this job: exit 2 */
};

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: ps_dense [options]\n"
	        "\n"
	        "Train softmax regression on the digits data, data-parallel with allreduce or\n"
	        "on the parameter server, e.g.\n"
	        "  mlrun -np 2 build/examples/ps_dense\n"
	        "  mlrun --servers 1 -np 2 build/examples/ps_dense\n"
	        "\n"
	        "  --mode MODE            allreduce (a job without servers) or ps (a job with\n"
	        "                         servers); default: the one that fits the job\n"
	        "  --data PATH            digits CSV, gzip or plain (default %s)\n"
	        "  --epochs N             passes over the training set (default 20)\n"
	        "  --batch N              samples per worker per step (default 16)\n"
	        "  --lr X                 learning rate (default 0.5)\n"
	        "  --seed N               seed of the data order (default 1)\n"
	        "  --weights-out FILE     worker 0 writes the final parameters to FILE (raw\n"
	        "                         float32, native byte order)\n"
	        "  --compare-weights FILE worker 0 compares the final parameters with FILE (as\n"
	        "                         written by --weights-out) and says whether they are\n"
	        "                         bitwise equal\n"
	        "  -h, --help             this text\n"
	        "\n"
	        "Worker 0 prints the loss every few epochs, a fingerprint of the final weights\n"
	        "and, last, \"test accuracy: 0.XXXX\"; it reports \"accuracy\" with mlrt_report.\n",
	        PS_DENSE_DEFAULT_DATA);
}


/* 0: parsed; 1: --help; -1: bad usage (message printed). */
static int parse_options(int argc, char **argv, struct options *o)
{
	enum {
		OPT_MODE = 256,
		OPT_DATA,
		OPT_EPOCHS,
		OPT_BATCH,
		OPT_LR,
		OPT_SEED,
		OPT_WEIGHTS_OUT,
		OPT_COMPARE,
	};
	static const struct option longopts[] = {
		{"mode", required_argument, NULL, OPT_MODE},
		{"data", required_argument, NULL, OPT_DATA},
		{"epochs", required_argument, NULL, OPT_EPOCHS},
		{"batch", required_argument, NULL, OPT_BATCH},
		{"lr", required_argument, NULL, OPT_LR},
		{"seed", required_argument, NULL, OPT_SEED},
		{"weights-out", required_argument, NULL, OPT_WEIGHTS_OUT},
		{"compare-weights", required_argument, NULL, OPT_COMPARE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, bad = 0;
	char *end;

	*o = (struct options){
		.data = PS_DENSE_DEFAULT_DATA,
		.mode = MODE_AUTO,
		.epochs = 20,
		.batch = 16,
		.seed = 1,
		.lr = 0.5,
	};
	opterr = 1; /* getopt names an unknown option or a missing argument */
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_MODE:
			if (strcmp(optarg, "allreduce") == 0) {
				o->mode = MODE_ALLREDUCE;
			} else if (strcmp(optarg, "ps") == 0) {
				o->mode = MODE_PS;
			} else {
				fprintf(stderr, "ps_dense: --mode: '%s' is neither allreduce nor ps\n",
				        optarg);
				bad = -1;
			}
			break;
		case OPT_DATA: o->data = optarg; break;
		case OPT_EPOCHS: bad |= arg_int(PROG, "epochs", optarg, 1, 1000000, &o->epochs); break;
		case OPT_BATCH: bad |= arg_int(PROG, "batch", optarg, 1, 1000000, &o->batch); break;
		case OPT_LR:
			errno = 0;
			o->lr = strtod(optarg, &end);
			if (end == optarg || *end != '\0' || errno != 0 || !isfinite(o->lr) ||
			    o->lr <= 0.0 || o->lr >= 100.0) {
				fprintf(stderr, "ps_dense: --lr: '%s' is not a number in (0, 100)\n",
				        optarg);
				bad = -1;
			}
			break;
		case OPT_SEED: bad |= arg_int(PROG, "seed", optarg, 0, INT64_MAX, &o->seed); break;
		case OPT_WEIGHTS_OUT: o->weights_out = optarg; break;
		case OPT_COMPARE: o->compare = optarg; break;
		case 'h': return 1;
		default: bad = -1; break;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ps_dense: unexpected argument '%s'\n", argv[optind]);
		bad = -1;
	}
	return bad ? -1 : 0;
}

/* splitmix64's output function: a stateless hash from which every random
 * choice of a run is derived. */
static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Fisher-Yates shuffle of a[0..n) driven by the hash of (seed, i). */
static void shuffle(int *a, int n, uint64_t seed)
{
	for (int i = n - 1; i > 0; i--) {
		int j = (int)(mix64(seed ^ mix64((uint64_t)i)) % (uint64_t)(i + 1));
		int tmp = a[i];

		a[i] = a[j];
		a[j] = tmp;
	}
}

/* The fixed split: shuffle every row with SPLIT_SEED, hold out the last
 * TEST_PERCENT for testing. */
static int split(struct trainer *t)
{
	int n = t->data.n, *order = malloc((size_t)n * sizeof(int));

	t->perm = malloc((size_t)n * sizeof(int));
	if (order == NULL || t->perm == NULL) {
		free(order);
		fprintf(stderr, "ps_dense: out of memory\n");
		return MLRT_ERR_NOMEM;
	}
	for (int i = 0; i < n; i++)
		order[i] = i;
	shuffle(order, n, SPLIT_SEED);
	t->ntest = n * TEST_PERCENT / 100;
	t->ntrain = n - t->ntest;
	t->train = order;
	t->test = order + t->ntrain;
	return MLRT_OK;
}

/* Class probabilities of row x into t->logits (in place); returns the
 * cross-entropy for label y.  Plain float32 loops in a fixed order: the
 * same inputs give the same bits on every worker and in both modes. */
static float forward(struct trainer *t, const float *x, int y)
{
	const float *w = t->params, *b = t->params + NW;
	float *z = t->logits, max, sum = 0.0f;

	for (int c = 0; c < DIGITS_CLASSES; c++) {
		float s = b[c];

		for (int j = 0; j < DIGITS_FEATURES; j++)
			s += w[c * DIGITS_FEATURES + j] * x[j];
		z[c] = s;
	}
	max = z[0];
	for (int c = 1; c < DIGITS_CLASSES; c++)
		max = z[c] > max ? z[c] : max;
	for (int c = 0; c < DIGITS_CLASSES; c++) {
		z[c] = expf(z[c] - max);
		sum += z[c];
	}
	for (int c = 0; c < DIGITS_CLASSES; c++)
		z[c] /= sum;
	return -logf(z[y] > 1e-30f ? z[y] : 1e-30f);
}

/* t->grad = the gradient of the mean cross-entropy over rows idx[0..n);
 * returns their summed loss. */
static double gradient(struct trainer *t, const int *idx, int n)
{
	float *gw = t->grad, *gb = t->grad + NW;
	double loss = 0.0;

	memset(t->grad, 0, sizeof(t->grad));
	for (int i = 0; i < n; i++) {
		const float *x = t->data.x + (size_t)idx[i] * DIGITS_FEATURES;
		int y = t->data.y[idx[i]];

		loss += forward(t, x, y);
		for (int c = 0; c < DIGITS_CLASSES; c++) {
			float dz = (t->logits[c] - (c == y ? 1.0f : 0.0f)) / (float)n;

			for (int j = 0; j < DIGITS_FEATURES; j++)
				gw[c * DIGITS_FEATURES + j] += dz * x[j];
			gb[c] += dz;
		}
	}
	return loss;
}

/* allreduce mode: average the gradients, then w -= lr * g, the very
 * expression the servers' SGD evaluates. */
static int step_allreduce(struct trainer *t, float lr, int64_t s)
{
	int rc = mlrt_allreduce(t->world, t->grad, t->grad, NPARAMS, MLRT_F32, MLRT_AVG);

	if (rc != MLRT_OK) {
		fprintf(stderr, "ps_dense: worker %d: allreduce of the gradients at step %" PRId64
		                ": %s\n",
		        t->rank, s, mlrt_strerror(rc));
		return rc;
	}
	for (int i = 0; i < NPARAMS; i++)
		t->params[i] -= lr * t->grad[i];
	return MLRT_OK;
}

static const uint64_t ps_keys[2] = {KEY_W, KEY_B};
static const size_t ps_lens[2] = {NW, DIGITS_CLASSES};

/* ps mode: fetch the weights of step s (SYNC: waits until every worker's
 * push of step s - 1 is applied). */
static int ps_fetch(struct trainer *t, int64_t s)
{
	int rc = mlrt_ps_pull(t->ps, ps_keys, 2, t->params, ps_lens);

	if (rc != MLRT_OK)
		fprintf(stderr, "ps_dense: worker %d: pull of the weights at step %" PRId64 ": %s\n",
		        t->rank, s, mlrt_strerror(rc));
	return rc;
}

/* ps mode: push grad / W; the servers add the W pushes up in worker
 * order and apply w -= lr * sum. */
static int step_ps(struct trainer *t, int64_t s)
{
	int rc;

	for (int i = 0; i < NPARAMS; i++)
		t->grad[i] /= (float)t->size;
	rc = mlrt_ps_push(t->ps, ps_keys, 2, t->grad, ps_lens);
	if (rc != MLRT_OK)
		fprintf(stderr, "ps_dense: worker %d: push of the gradients at step %" PRId64 ": %s\n",
		        t->rank, s, mlrt_strerror(rc));
	return rc;
}

static int no_servers(struct trainer *t)
{
	if (t->rank == 0)
		fprintf(stderr, "ps_dense: --mode ps needs parameter servers: run it as\n"
		                "  mlrun --servers 1 -np %d ps_dense --mode ps\n",
		        t->size);
	t->bad_usage = 1;
	return MLRT_ERR_UNAVAILABLE;
}

/* Connect to the servers (ps mode), or make sure there are none to wait
 * for us (allreduce mode). */
static int open_mode(struct trainer *t)
{
	const struct options *o = t->o;
	/* mlrun tells every process how many servers the job has. */
	const char *env = getenv("MLRT_NUM_SERVERS");
	int servers = env != NULL && atoi(env) > 0;
	mlrt_ps_opts po;
	int rc;

	t->mode = o->mode != MODE_AUTO ? o->mode : servers ? MODE_PS : MODE_ALLREDUCE;
	if (t->mode == MODE_ALLREDUCE && !servers)
		return MLRT_OK;
	if (t->mode == MODE_PS && env != NULL && !servers)
		return no_servers(t);
	mlrt_ps_opts_init(&po);
	po.optimizer = MLRT_PS_SGD;
	po.lr = (float)o->lr;
	po.consistency = MLRT_PS_SYNC;
	po.init = MLRT_PS_ZEROS;
	rc = mlrt_ps_open_opts(t->ctx, &po, &t->ps);
	if (rc == MLRT_ERR_UNAVAILABLE)
		return no_servers(t);
	if (rc != MLRT_OK) {
		fprintf(stderr, "ps_dense: worker %d: cannot reach the parameter servers: %s\n",
		        t->rank, mlrt_strerror(rc));
		return rc;
	}
	if (t->mode == MODE_ALLREDUCE) {
		/* The servers serve until every worker has closed its handle:
		 * having opened one, close it so that they end too. */
		if (t->rank == 0)
			fprintf(stderr, "ps_dense: --mode allreduce does not use the job's servers; "
			                "use --mode ps, or run without mlrun --servers\n");
		t->bad_usage = 1;
		return MLRT_ERR_INVALID;
	}
	return MLRT_OK;
}

/* Mean loss and accuracy of the current weights over rows idx[0..n). */
static void evaluate(struct trainer *t, const int *idx, int n, double *loss, double *acc)
{
	int correct = 0;

	*loss = 0.0;
	for (int i = 0; i < n; i++) {
		int y = t->data.y[idx[i]], best = 0;

		*loss += forward(t, t->data.x + (size_t)idx[i] * DIGITS_FEATURES, y);
		for (int c = 1; c < DIGITS_CLASSES; c++)
			if (t->logits[c] > t->logits[best])
				best = c;
		correct += best == y;
	}
	*loss /= n;
	*acc = (double)correct / n;
}

/* FNV-1a over the bytes of the parameters: equal fingerprints, equal
 * weights (almost surely); compare them across runs and modes. */
static uint64_t fingerprint(const float *p, size_t n)
{
	const unsigned char *b = (const unsigned char *)p;
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n * sizeof(float); i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static int write_weights(const struct trainer *t, const char *path)
{
	FILE *f = fopen(path, "wb");

	if (f == NULL || fwrite(t->params, sizeof(float), NPARAMS, f) != NPARAMS ||
	    fclose(f) != 0) {
		fprintf(stderr, "ps_dense: worker 0: cannot write the weights to %s: %s\n", path,
		        strerror(errno));
		return MLRT_ERR_IO;
	}
	return MLRT_OK;
}

/* Say whether the weights are bitwise equal to those in path. */
static int compare_weights(const struct trainer *t, const char *path)
{
	float other[NPARAMS + 1];
	FILE *f = fopen(path, "rb");
	size_t n;
	int differ = 0;
	double maxdiff = 0.0;

	if (f == NULL) {
		fprintf(stderr, "ps_dense: worker 0: cannot read %s: %s\n", path, strerror(errno));
		return MLRT_ERR_IO;
	}
	n = fread(other, sizeof(float), NPARAMS + 1, f);
	fclose(f);
	if (n != NPARAMS) {
		fprintf(stderr, "ps_dense: worker 0: %s holds %s than the %d float32 parameters of "
		                "this model; write it with ps_dense --weights-out\n",
		        path, n < NPARAMS ? "fewer" : "more", NPARAMS);
		return MLRT_ERR_INVALID;
	}
	for (int i = 0; i < NPARAMS; i++) {
		if (memcmp(&t->params[i], &other[i], sizeof(float)) != 0) {
			double d = fabs((double)t->params[i] - (double)other[i]);

			differ++;
			maxdiff = d > maxdiff ? d : maxdiff;
		}
	}
	if (differ == 0)
		printf("final weights: bitwise equal to %s\n", path);
	else
		printf("final weights: %d of %d differ from %s (largest difference %.3g)\n", differ,
		       NPARAMS, path, maxdiff);
	return MLRT_OK;
}


static int train(struct trainer *t)
{
	const struct options *o = t->o;
	const int b = (int)o->batch;
	const float lr = (float)o->lr;
	int64_t every = o->epochs >= 10 ? o->epochs / 10 : 1, s = 0;
	double t0, loss, acc;
	int rc;

	CHECK(open_mode(t));
	CHECK(digits_load(o->data, &t->data));
	CHECK(split(t));
	t->steps_per_epoch = t->ntrain / (t->size * o->batch);
	if (t->steps_per_epoch == 0) {
		fprintf(stderr, "ps_dense: a global batch of %d workers x --batch %" PRId64 " is "
		                "larger than the %d training samples; lower --batch\n",
		        t->size, o->batch, t->ntrain);
		t->bad_usage = 1;
		return MLRT_ERR_INVALID;
	}
	if (t->rank == 0) {
		printf("ps_dense: %s, %d workers, %d training and %d test samples, %d parameters, "
		       "%" PRId64 " steps of %" PRId64 " samples per epoch\n",
		       t->mode == MODE_PS ? "parameter server (SGD, SYNC)" : "allreduce", t->size,
		       t->ntrain, t->ntest, NPARAMS, t->steps_per_epoch, t->size * o->batch);
		fflush(stdout);
	}

	memset(t->params, 0, sizeof(t->params)); /* as the servers' MLRT_PS_ZEROS */
	t0 = example_now_s();
	for (int64_t e = 1; e <= o->epochs; e++) {
		double sums[2] = {0.0, 0.0};

		memcpy(t->perm, t->train, (size_t)t->ntrain * sizeof(int));
		shuffle(t->perm, t->ntrain, mix64(mix64((uint64_t)o->seed) ^ STREAM_EPOCH) ^
		                                    (uint64_t)e);
		for (int64_t k = 0; k < t->steps_per_epoch; k++, s++) {
			/* Rank r's rows of the step: the r-th slice of the next
			 * global batch of the epoch's order. */
			const int *idx = t->perm + (k * t->size + t->rank) * b;

			if (t->mode == MODE_PS)
				CHECK(ps_fetch(t, s));
			sums[0] += gradient(t, idx, b);
			sums[1] += b;
			CHECK(t->mode == MODE_PS ? step_ps(t, s) : step_allreduce(t, lr, s));
		}
		rc = mlrt_allreduce(t->world, sums, sums, 2, MLRT_F64, MLRT_SUM);
		if (rc != MLRT_OK) {
			fprintf(stderr, "ps_dense: worker %d: allreduce of the epoch's loss: %s\n",
			        t->rank, mlrt_strerror(rc));
			return rc;
		}
		if (t->rank == 0 && (e == 1 || e % every == 0 || e == o->epochs)) {
			printf("epoch %3" PRId64 "/%" PRId64 "  loss %.4f\n", e, o->epochs,
			       sums[0] / sums[1]);
			fflush(stdout);
		}
	}
	if (t->mode == MODE_PS)
		CHECK(ps_fetch(t, s)); /* the weights after the last step */
	if (t->rank != 0)
		return MLRT_OK;

	evaluate(t, t->test, t->ntest, &loss, &acc);
	printf("ps_dense: %" PRId64 " steps in %.2f s\n", s, example_now_s() - t0);
	printf("weights fingerprint: %016" PRIx64 "\n", fingerprint(t->params, NPARAMS));
	if (o->weights_out != NULL)
		CHECK(write_weights(t, o->weights_out));
	if (o->compare != NULL)
		CHECK(compare_weights(t, o->compare));
	printf("test accuracy: %.4f\n", acc);
	fflush(stdout);
	rc = mlrt_report(t->ctx, "accuracy", acc, o->epochs);
	if (rc != MLRT_OK)
		fprintf(stderr, "ps_dense: worker 0: reporting the accuracy: %s\n", mlrt_strerror(rc));
	return rc;
}

int main(int argc, char **argv)
{
	struct options o;
	struct trainer t = {.o = &o};
	int rc;

	rc = parse_options(argc, argv, &o);
	if (rc != 0) {
		usage(rc > 0 ? stdout : stderr);
		return rc > 0 ? 0 : 2;
	}
	rc = mlrt_init(&t.ctx);
	if (rc != MLRT_OK) {
		fprintf(stderr, "ps_dense: mlrt_init: %s\n", mlrt_strerror(rc));
		return 1;
	}
	if (mlrt_ps_role(t.ctx) == MLRT_ROLE_SERVER)
		return example_serve(t.ctx, PROG);
	t.world = mlrt_world(t.ctx);
	t.rank = mlrt_rank(t.ctx);
	t.size = mlrt_size(t.ctx);
	rc = train(&t);
	/* The servers return from mlrt_ps_serve once every worker has closed,
	 * also after a failure. */
	if (t.ps != NULL && mlrt_ps_close(t.ps) != MLRT_OK && rc == MLRT_OK)
		rc = MLRT_ERR_INTERNAL;
	free(t.train);
	free(t.perm);
	digits_free(&t.data);
	if (mlrt_finalize(t.ctx) != MLRT_OK && rc == MLRT_OK)
		rc = MLRT_ERR_INTERNAL;
	if (rc == MLRT_OK)
		return 0;
	return t.bad_usage ? 2 : 1;
}
