/* ps_logreg: sparse logistic regression with hashed features, trained on
 * the parameter server.
 *
 *   mlrun --servers 2 -np 2 build/examples/ps_logreg
 *
 * The data are synthetic and a function of --seed: examples of about
 * --active binary features drawn from a vocabulary with a Zipf
 * distribution (a few features are in most examples, most are rare), as in
 * click logs or bags of words.  A sparse "true" weight vector (a few of the
 * features, picked by the same skewed distribution, with normal weights)
 * gives P(y = 1 | x) = sigmoid(w.x + b), from which the labels are drawn.
 * Every feature is hashed into one of 2^--dim-bits buckets, and a bucket is
 * a parameter-server key holding one float: the model never has to know
 * the vocabulary, which is the point of the hashing trick.
 *
 * Each worker generates its own shard of --examples (from the seed and its
 * rank) and the same held-out set.  A step takes --batch examples: the
 * union of their keys, sorted and deduplicated, is pulled, the gradient of
 * the log loss is computed per key (summed over the batch) and pushed; the
 * servers' optimizer (FTRL-proximal or AdaGrad) applies it.  Servers apply
 * pushes as they come (--sync and --bounded K change that).
 *
 * At the end the workers score the held-out set, each its share, and
 * worker 0 prints the accuracy and log loss of the model and of the true
 * weights (the best any model can do on these data).  See
 * docs/examples.md. */
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

#define PROG "ps_logreg" /* in messages */

/* Distinguishes the random streams derived from one seed. */
#define STREAM_TRUTH 1
#define STREAM_TRAIN 2
#define STREAM_TEST 3
#define STREAM_ORDER 4
/* Feature -> key does not depend on --seed: a feature keeps its bucket. */
#define HASH_SALT 0x70732d6c6f677265ull
/* The bias is one more feature, present in every example. */
#define BIAS_FEATURE UINT64_MAX
/* Draws of a feature before an example settles for fewer distinct ones. */
#define MAX_DRAWS_PER_FEATURE 64

#define CHECK(call)                                                                              \
	do {                                                                                     \
		int check_rc_ = (call);                                                          \
		if (check_rc_ != MLRT_OK)                                                        \
			return check_rc_;                                                        \
	} while (0)

struct options {
	int64_t examples, test_examples, epochs, batch, dim_bits, vocab, active, informative;
	int64_t seed, staleness;
	double lr, l1, l2, zipf;
	int lr_given;
	mlrt_ps_optimizer optimizer;
	mlrt_ps_consistency consistency;
};

/* Examples in compressed-row form: example i's keys are
 * keys[off[i] .. off[i + 1]), the bias key last. */
typedef struct dataset {
	int64_t n;
	int64_t *off;
	uint64_t *keys;
	uint8_t *y;
	double *margin; /* w.x + b under the true weights */
} dataset;

/* The generating model. */
typedef struct truth {
	int64_t vocab;
	double *cdf;   /* Zipf: P(feature <= i) */
	float *w;      /* [vocab], mostly zero */
	double bias;
} truth;

/* Scratch of one pull/push: the batch's keys, then its distinct keys with
 * their values and gradients. */
typedef struct step_buf {
	size_t cap;
	uint64_t *keys;
	float *w, *g;
	size_t *lens; /* all 1 */
} step_buf;

struct worker {
	const struct options *o;
	mlrt_ctx *ctx;
	mlrt_comm *world;
	int rank, size;
	truth truth;
	dataset train, test;
	int64_t *order;
	step_buf buf;
	mlrt_ps *ps;
	int bad_usage;
};

static const char *const optimizer_names[] = {
	[MLRT_PS_SUM] = "sum",         [MLRT_PS_SGD] = "sgd",   [MLRT_PS_MOMENTUM] = "momentum",
	[MLRT_PS_ADAGRAD] = "adagrad", [MLRT_PS_ADAM] = "adam", [MLRT_PS_FTRL] = "ftrl",
};

static double default_lr(mlrt_ps_optimizer opt)
{
	return opt == MLRT_PS_FTRL ? 0.2 : 0.1;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: ps_logreg [options]\n"
	        "\n"
	        "Sparse logistic regression with hashed features on the parameter server,\n"
	        "on synthetic data, e.g.  mlrun --servers 2 -np 2 build/examples/ps_logreg\n"
	        "\n"
	        "data (every worker must be given the same):\n"
	        "  --examples N         training examples per worker (default 20000)\n"
	        "  --test-examples N    held-out examples (default 10000)\n"
	        "  --vocab N            features in the vocabulary (default 100000)\n"
	        "  --zipf S             exponent of the features' Zipf distribution (default 1)\n"
	        "  --active N           mean active features per example, drawn uniformly in\n"
	        "                       [N/2, 3N/2] (default 20)\n"
	        "  --informative N      features with a non-zero true weight (default 1000)\n"
	        "  --seed N             seed of the data and of the order of the examples\n"
	        "                       (default 1)\n"
	        "model and training:\n"
	        "  --dim-bits B         hash the features into 2^B keys (default 20)\n"
	        "  --optimizer NAME     ftrl (FTRL-proximal) or adagrad (default ftrl)\n"
	        "  --lr X               the servers' learning rate, FTRL's alpha (default %g\n"
	        "                       for ftrl, %g for adagrad)\n"
	        "  --l1 X, --l2 X       FTRL's L1 and L2 regularisation (default 1, 1)\n"
	        "  --epochs N           passes over each worker's shard (default 2)\n"
	        "  --batch N            examples per step (default 64)\n"
	        "  --sync               SYNC consistency: each step waits for every worker's\n"
	        "                       push (default: ASYNC, applied as they come)\n"
	        "  --bounded K          BOUNDED consistency: no worker gets more than K steps\n"
	        "                       ahead of the slowest\n"
	        "  -h, --help           this text\n"
	        "\n"
	        "Needs a job with servers (mlrun --servers S -np W).  Worker 0 ends with\n"
	        "\"held-out accuracy: 0.XXXX  log loss: X.XXXX\" and the same for the true\n"
	        "weights; it reports \"accuracy\" and \"log_loss\" with mlrt_report.\n",
	        default_lr(MLRT_PS_FTRL), default_lr(MLRT_PS_ADAGRAD));
}



/* 0: parsed; 1: --help; -1: bad usage (message printed). */
static int parse_options(int argc, char **argv, struct options *o)
{
	enum {
		OPT_EXAMPLES = 256,
		OPT_TEST_EXAMPLES,
		OPT_VOCAB,
		OPT_ZIPF,
		OPT_ACTIVE,
		OPT_INFORMATIVE,
		OPT_SEED,
		OPT_DIM_BITS,
		OPT_OPTIMIZER,
		OPT_LR,
		OPT_L1,
		OPT_L2,
		OPT_EPOCHS,
		OPT_BATCH,
		OPT_SYNC,
		OPT_BOUNDED,
	};
	static const struct option longopts[] = {
		{"examples", required_argument, NULL, OPT_EXAMPLES},
		{"test-examples", required_argument, NULL, OPT_TEST_EXAMPLES},
		{"vocab", required_argument, NULL, OPT_VOCAB},
		{"zipf", required_argument, NULL, OPT_ZIPF},
		{"active", required_argument, NULL, OPT_ACTIVE},
		{"informative", required_argument, NULL, OPT_INFORMATIVE},
		{"seed", required_argument, NULL, OPT_SEED},
		{"dim-bits", required_argument, NULL, OPT_DIM_BITS},
		{"optimizer", required_argument, NULL, OPT_OPTIMIZER},
		{"lr", required_argument, NULL, OPT_LR},
		{"l1", required_argument, NULL, OPT_L1},
		{"l2", required_argument, NULL, OPT_L2},
		{"epochs", required_argument, NULL, OPT_EPOCHS},
		{"batch", required_argument, NULL, OPT_BATCH},
		{"sync", no_argument, NULL, OPT_SYNC},
		{"bounded", required_argument, NULL, OPT_BOUNDED},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, bad = 0, sync = 0, bounded = 0;

	*o = (struct options){
		.examples = 20000,
		.test_examples = 10000,
		.epochs = 2,
		.batch = 64,
		.dim_bits = 20,
		.vocab = 100000,
		.active = 20,
		.informative = 1000,
		.seed = 1,
		.l1 = 1.0,
		.l2 = 1.0,
		.zipf = 1.0,
		.optimizer = MLRT_PS_FTRL,
		.consistency = MLRT_PS_ASYNC,
	};
	opterr = 1; /* getopt names an unknown option or a missing argument */
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_EXAMPLES:
			bad |= arg_int(PROG, "examples", optarg, 1, INT32_MAX, &o->examples);
			break;
		case OPT_TEST_EXAMPLES:
			bad |= arg_int(PROG, "test-examples", optarg, 1, INT32_MAX, &o->test_examples);
			break;
		case OPT_VOCAB: bad |= arg_int(PROG, "vocab", optarg, 1, INT32_MAX, &o->vocab); break;
		case OPT_ZIPF: bad |= arg_real(PROG, "zipf", optarg, 0.0, 4.0, 1, &o->zipf); break;
		case OPT_ACTIVE: bad |= arg_int(PROG, "active", optarg, 1, 10000, &o->active); break;
		case OPT_INFORMATIVE:
			bad |= arg_int(PROG, "informative", optarg, 0, INT32_MAX, &o->informative);
			break;
		case OPT_SEED: bad |= arg_int(PROG, "seed", optarg, 0, INT64_MAX, &o->seed); break;
		case OPT_DIM_BITS: bad |= arg_int(PROG, "dim-bits", optarg, 1, 63, &o->dim_bits); break;
		case OPT_OPTIMIZER:
			if (strcmp(optarg, "ftrl") == 0) {
				o->optimizer = MLRT_PS_FTRL;
			} else if (strcmp(optarg, "adagrad") == 0) {
				o->optimizer = MLRT_PS_ADAGRAD;
			} else {
				fprintf(stderr, "ps_logreg: --optimizer: '%s' is neither ftrl nor "
				                "adagrad\n",
				        optarg);
				bad = -1;
			}
			break;
		case OPT_LR:
			bad |= arg_real(PROG, "lr", optarg, 0.0, 1e6, 0, &o->lr);
			o->lr_given = 1;
			break;
		case OPT_L1: bad |= arg_real(PROG, "l1", optarg, 0.0, 1e6, 1, &o->l1); break;
		case OPT_L2: bad |= arg_real(PROG, "l2", optarg, 0.0, 1e6, 1, &o->l2); break;
		case OPT_EPOCHS: bad |= arg_int(PROG, "epochs", optarg, 1, 1000000, &o->epochs); break;
		case OPT_BATCH: bad |= arg_int(PROG, "batch", optarg, 1, 1000000, &o->batch); break;
		case OPT_SYNC:
			sync = 1;
			o->consistency = MLRT_PS_SYNC;
			break;
		case OPT_BOUNDED:
			bounded = 1;
			bad |= arg_int(PROG, "bounded", optarg, 0, 1000000, &o->staleness);
			o->consistency = MLRT_PS_BOUNDED;
			break;
		case 'h': return 1;
		default: bad = -1; break;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ps_logreg: unexpected argument '%s'\n", argv[optind]);
		bad = -1;
	}
	if (sync && bounded) {
		fprintf(stderr, "ps_logreg: --sync and --bounded exclude each other\n");
		bad = -1;
	}
	if (o->informative > o->vocab) {
		fprintf(stderr, "ps_logreg: --informative %" PRId64 " is more than the %" PRId64
		                " features of --vocab\n",
		        o->informative, o->vocab);
		bad = -1;
	}
	if (!o->lr_given)
		o->lr = default_lr(o->optimizer);
	return bad ? -1 : 0;
}

/* ---- random numbers: everything derives from the seed ---- */

/* splitmix64's output function: a bijection whose every output bit depends
 * on every input bit. */
static uint64_t mix64(uint64_t x)
{
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* splitmix64: a state advanced by a constant, mixed. */
static uint64_t rng_next(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull;
	return mix64(*s);
}

/* Uniform in [0, 1). */
static double rng_unit(uint64_t *s)
{
	return (double)(rng_next(s) >> 11) * 0x1p-53;
}

/* Standard normal (Box-Muller). */
static double rng_normal(uint64_t *s)
{
	double u = 1.0 - rng_unit(s), v = rng_unit(s);

	return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static uint64_t stream_seed(int64_t seed, uint64_t stream, uint64_t n)
{
	return mix64(mix64((uint64_t)seed) ^ mix64(stream) ^ mix64(n + 1));
}

/* The key of a feature: its hash's top dim_bits bits, left where they are,
 * so that the buckets spread evenly over the key space and therefore over
 * the servers (each holds a range of keys). */
static uint64_t feature_key(uint64_t feature, int64_t dim_bits)
{
	return mix64(feature ^ HASH_SALT) & (UINT64_MAX << (64 - dim_bits));
}

/* ---- the data ---- */

/* A feature drawn from the Zipf distribution: the first i with
 * cdf[i] > u. */
static int64_t draw_feature(const truth *t, uint64_t *rs)
{
	double u = rng_unit(rs);
	int64_t lo = 0, hi = t->vocab - 1;

	while (lo < hi) {
		int64_t mid = lo + (hi - lo) / 2;

		if (t->cdf[mid] > u)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static void truth_free(truth *t)
{
	free(t->cdf);
	free(t->w);
	*t = (truth){0};
}

/* The Zipf table and the true weights: --informative features drawn from
 * the Zipf distribution itself (so most are frequent, as the features
 * that matter in real data tend to be), each with a standard normal
 * weight, and a normal bias of deviation 0.5. */
static int truth_init(truth *t, const struct options *o)
{
	uint64_t rs = stream_seed(o->seed, STREAM_TRUTH, 0);
	double sum = 0.0;

	t->vocab = o->vocab;
	t->cdf = malloc((size_t)o->vocab * sizeof(double));
	t->w = calloc((size_t)o->vocab, sizeof(float));
	if (t->cdf == NULL || t->w == NULL) {
		fprintf(stderr, "ps_logreg: out of memory for a vocabulary of %" PRId64 "\n",
		        o->vocab);
		return MLRT_ERR_NOMEM;
	}
	for (int64_t i = 0; i < o->vocab; i++) {
		sum += pow((double)(i + 1), -o->zipf);
		t->cdf[i] = sum;
	}
	for (int64_t i = 0; i < o->vocab; i++)
		t->cdf[i] /= sum;
	t->cdf[o->vocab - 1] = 1.0;
	for (int64_t k = 0; k < o->informative;) {
		/* A skewed draw when it finds a new feature, else the next
		 * uniform one: bounded work even when --informative is close
		 * to --vocab. */
		int64_t f = draw_feature(t, &rs);

		for (int tries = 0; t->w[f] != 0.0f && tries < MAX_DRAWS_PER_FEATURE; tries++)
			f = draw_feature(t, &rs);
		while (t->w[f] != 0.0f)
			f = (int64_t)(rng_next(&rs) % (uint64_t)o->vocab);
		while (t->w[f] == 0.0f)
			t->w[f] = (float)rng_normal(&rs);
		k++;
	}
	t->bias = 0.5 * rng_normal(&rs);
	return MLRT_OK;
}

static void dataset_free(dataset *d)
{
	free(d->off);
	free(d->keys);
	free(d->y);
	free(d->margin);
	*d = (dataset){0};
}

/* n examples from the stream rs: about --active distinct features each,
 * their keys, and a label drawn with P(y = 1) = sigmoid(w.x + b). */
static int dataset_generate(dataset *d, const truth *t, const struct options *o, int64_t n,
                            uint64_t rs)
{
	const int64_t max_active = o->active + o->active / 2 + 1;
	int64_t *feat = malloc((size_t)max_active * sizeof(int64_t));

	d->n = n;
	d->off = malloc((size_t)(n + 1) * sizeof(int64_t));
	d->keys = malloc((size_t)(n * (max_active + 1)) * sizeof(uint64_t));
	d->y = malloc((size_t)n);
	d->margin = malloc((size_t)n * sizeof(double));
	if (feat == NULL || d->off == NULL || d->keys == NULL || d->y == NULL || d->margin == NULL) {
		fprintf(stderr, "ps_logreg: out of memory for %" PRId64 " examples\n", n);
		free(feat);
		return MLRT_ERR_NOMEM;
	}
	d->off[0] = 0;
	for (int64_t i = 0; i < n; i++) {
		int64_t want = o->active / 2 + (int64_t)(rng_next(&rs) % (uint64_t)(o->active + 1));
		int64_t k = 0;
		double m = t->bias;

		if (want > o->vocab)
			want = o->vocab;
		for (int64_t draws = 0; k < want && draws < want * MAX_DRAWS_PER_FEATURE; draws++) {
			int64_t f = draw_feature(t, &rs), j = 0;

			while (j < k && feat[j] != f)
				j++;
			if (j == k)
				feat[k++] = f;
		}
		uint64_t *keys = d->keys + d->off[i];

		for (int64_t j = 0; j < k; j++) {
			m += t->w[feat[j]];
			keys[j] = feature_key((uint64_t)feat[j], o->dim_bits);
		}
		keys[k] = feature_key(BIAS_FEATURE, o->dim_bits);
		d->off[i + 1] = d->off[i] + k + 1;
		d->margin[i] = m;
		d->y[i] = rng_unit(&rs) < 1.0 / (1.0 + exp(-m));
	}
	free(feat);
	return MLRT_OK;
}

/* ---- training ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Room for n keys in buf. */
static int buf_reserve(step_buf *b, size_t n)
{
	if (n <= b->cap)
		return MLRT_OK;
	free(b->keys);
	free(b->w);
	free(b->g);
	free(b->lens);
	b->keys = malloc(n * sizeof(uint64_t));
	b->w = malloc(n * sizeof(float));
	b->g = malloc(n * sizeof(float));
	b->lens = malloc(n * sizeof(size_t));
	if (b->keys == NULL || b->w == NULL || b->g == NULL || b->lens == NULL) {
		b->cap = 0;
		fprintf(stderr, "ps_logreg: out of memory for a step of %zu keys\n", n);
		return MLRT_ERR_NOMEM;
	}
	for (size_t i = 0; i < n; i++)
		b->lens[i] = 1;
	b->cap = n;
	return MLRT_OK;
}

static void buf_free(step_buf *b)
{
	free(b->keys);
	free(b->w);
	free(b->g);
	free(b->lens);
	*b = (step_buf){0};
}

/* The distinct keys of examples idx[0..n) of d, sorted, into b->keys;
 * returns how many. */
static size_t batch_keys(step_buf *b, const dataset *d, const int64_t *idx, int64_t n)
{
	size_t m = 0, u = 0;

	for (int64_t i = 0; i < n; i++)
		for (int64_t j = d->off[idx[i]]; j < d->off[idx[i] + 1]; j++)
			b->keys[m++] = d->keys[j];
	qsort(b->keys, m, sizeof(uint64_t), cmp_u64);
	for (size_t i = 0; i < m; i++)
		if (u == 0 || b->keys[i] != b->keys[u - 1])
			b->keys[u++] = b->keys[i];
	return u;
}

/* Index of key in the sorted keys[0..n); it is there. */
static size_t find_key(const uint64_t *keys, size_t n, uint64_t key)
{
	size_t lo = 0, hi = n - 1;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (keys[mid] < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* log(1 + e^x) without overflow. */
static double softplus(double x)
{
	return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
}

/* The model's margin of example i, with the values w of the sorted keys. */
static double margin_of(const dataset *d, int64_t i, const uint64_t *keys, const float *w,
                        size_t n)
{
	double m = 0.0;

	for (int64_t j = d->off[i]; j < d->off[i + 1]; j++)
		m += w[find_key(keys, n, d->keys[j])];
	return m;
}

/* Fisher-Yates shuffle of a[0..n) from the stream rs. */
static void shuffle(int64_t *a, int64_t n, uint64_t rs)
{
	for (int64_t i = n - 1; i > 0; i--) {
		int64_t j = (int64_t)(rng_next(&rs) % (uint64_t)(i + 1));
		int64_t tmp = a[i];

		a[i] = a[j];
		a[j] = tmp;
	}
}

/* One step: pull the batch's keys, push the summed gradient of the log
 * loss.  *loss gets the batch's summed loss under the pulled weights
 * (progressive validation: scored before it is trained on). */
static int train_step(struct worker *wk, const int64_t *idx, int64_t n, int64_t step,
                      double *loss)
{
	step_buf *b = &wk->buf;
	size_t nk = batch_keys(b, &wk->train, idx, n);
	int rc;

	rc = mlrt_ps_pull(wk->ps, b->keys, nk, b->w, b->lens);
	if (rc != MLRT_OK) {
		fprintf(stderr, "ps_logreg: worker %d: pull of %zu keys at step %" PRId64 ": %s\n",
		        wk->rank, nk, step, mlrt_strerror(rc));
		return rc;
	}
	memset(b->g, 0, nk * sizeof(float));
	for (int64_t i = 0; i < n; i++) {
		const dataset *d = &wk->train;
		double m = margin_of(d, idx[i], b->keys, b->w, nk);
		int y = d->y[idx[i]];
		/* d(log loss)/dm = sigmoid(m) - y, the same for each of the
		 * example's keys (its features are 1). */
		float dm = (float)(1.0 / (1.0 + exp(-m)) - y);

		*loss += softplus(y ? -m : m);
		for (int64_t j = d->off[idx[i]]; j < d->off[idx[i] + 1]; j++)
			b->g[find_key(b->keys, nk, d->keys[j])] += dm;
	}
	rc = mlrt_ps_push(wk->ps, b->keys, nk, b->g, b->lens);
	if (rc != MLRT_OK)
		fprintf(stderr, "ps_logreg: worker %d: push of %zu keys at step %" PRId64 ": %s\n",
		        wk->rank, nk, step, mlrt_strerror(rc));
	return rc;
}


/* Held-out scores of examples [lo, hi) of the test set, added to
 * sums: model loss, model correct, true loss, true correct. */
static int score(struct worker *wk, int64_t lo, int64_t hi, double sums[4])
{
	const dataset *d = &wk->test;
	step_buf *b = &wk->buf;
	int64_t n = hi - lo, *idx = malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
	size_t nk;
	int rc;

	if (idx == NULL)
		return MLRT_ERR_NOMEM;
	for (int64_t i = 0; i < n; i++)
		idx[i] = lo + i;
	rc = buf_reserve(b, (size_t)(d->off[hi] - d->off[lo]));
	if (rc != MLRT_OK)
		goto out;
	nk = batch_keys(b, d, idx, n);
	rc = mlrt_ps_pull(wk->ps, b->keys, nk, b->w, b->lens);
	if (rc != MLRT_OK) {
		fprintf(stderr, "ps_logreg: worker %d: pull of the %zu held-out keys: %s\n", wk->rank,
		        nk, mlrt_strerror(rc));
		goto out;
	}
	for (int64_t i = lo; i < hi; i++) {
		double m = margin_of(d, i, b->keys, b->w, nk), t = d->margin[i];
		int y = d->y[i];

		sums[0] += softplus(y ? -m : m);
		sums[1] += (m > 0) == y;
		sums[2] += softplus(y ? -t : t);
		sums[3] += (t > 0) == y;
	}
out:
	free(idx);
	return rc;
}

static int report(struct worker *wk, const char *name, double v, int64_t step)
{
	int rc = mlrt_report(wk->ctx, name, v, step);

	if (rc != MLRT_OK)
		fprintf(stderr, "ps_logreg: worker 0: reporting %s: %s\n", name, mlrt_strerror(rc));
	return rc;
}

static int run(struct worker *wk)
{
	const struct options *o = wk->o;
	const int64_t steps_per_epoch = (o->examples + o->batch - 1) / o->batch;
	mlrt_ps_opts po;
	double t0, sums[4] = {0, 0, 0, 0};
	int rc;

	mlrt_ps_opts_init(&po);
	po.optimizer = o->optimizer;
	po.lr = (float)o->lr;
	po.l1 = (float)o->l1;
	po.l2 = (float)o->l2;
	po.consistency = o->consistency;
	if (o->consistency == MLRT_PS_BOUNDED)
		po.staleness = (int)o->staleness;
	rc = mlrt_ps_open_opts(wk->ctx, &po, &wk->ps);
	if (rc == MLRT_ERR_UNAVAILABLE) {
		if (wk->rank == 0)
			fprintf(stderr, "ps_logreg: this job has no parameter servers; run it as\n"
			                "  mlrun --servers 2 -np %d ps_logreg [options]\n",
			        wk->size);
		wk->bad_usage = 1;
		return rc;
	}
	if (rc != MLRT_OK) {
		fprintf(stderr, "ps_logreg: worker %d: cannot reach the parameter servers: %s\n",
		        wk->rank, mlrt_strerror(rc));
		return rc;
	}

	CHECK(truth_init(&wk->truth, o));
	CHECK(dataset_generate(&wk->train, &wk->truth, o, o->examples,
	                       stream_seed(o->seed, STREAM_TRAIN, (uint64_t)wk->rank)));
	CHECK(dataset_generate(&wk->test, &wk->truth, o, o->test_examples,
	                       stream_seed(o->seed, STREAM_TEST, 0)));
	wk->order = malloc((size_t)o->examples * sizeof(int64_t));
	if (wk->order == NULL) {
		fprintf(stderr, "ps_logreg: out of memory for %" PRId64 " examples\n", o->examples);
		return MLRT_ERR_NOMEM;
	}
	/* An example has at most --active * 3/2 features, plus the bias. */
	CHECK(buf_reserve(&wk->buf, (size_t)(o->batch * (o->active + o->active / 2 + 2))));
	if (wk->rank == 0) {
		char cons[64] = "async";

		if (o->consistency == MLRT_PS_SYNC)
			snprintf(cons, sizeof(cons), "sync");
		else if (o->consistency == MLRT_PS_BOUNDED)
			snprintf(cons, sizeof(cons), "bounded staleness %" PRId64, o->staleness);
		printf("ps_logreg: %d workers x %" PRId64 " examples, %" PRId64 " held out; "
		       "2^%" PRId64 " keys; %s, lr %g, %s\n",
		       wk->size, o->examples, o->test_examples, o->dim_bits,
		       optimizer_names[o->optimizer], o->lr, cons);
		fflush(stdout);
	}

	t0 = example_now_s();
	for (int64_t e = 0; e < o->epochs; e++) {
		double ep[2] = {0.0, (double)o->examples};

		for (int64_t i = 0; i < o->examples; i++)
			wk->order[i] = i;
		shuffle(wk->order, o->examples,
		        stream_seed(o->seed, STREAM_ORDER, (uint64_t)(e * wk->size + wk->rank)));
		for (int64_t s = 0; s < steps_per_epoch; s++) {
			int64_t lo = s * o->batch;
			int64_t n = o->examples - lo < o->batch ? o->examples - lo : o->batch;

			CHECK(train_step(wk, wk->order + lo, n, e * steps_per_epoch + s, &ep[0]));
		}
		rc = mlrt_allreduce(wk->world, ep, ep, 2, MLRT_F64, MLRT_SUM);
		if (rc != MLRT_OK) {
			fprintf(stderr, "ps_logreg: worker %d: allreduce of the epoch's loss: %s\n",
			        wk->rank, mlrt_strerror(rc));
			return rc;
		}
		if (wk->rank == 0) {
			printf("epoch %" PRId64 "/%" PRId64 "  progressive log loss %.4f\n", e + 1,
			       o->epochs, ep[0] / ep[1]);
			fflush(stdout);
		}
	}
	/* Every push has been applied once every worker is past its last. */
	rc = mlrt_barrier(wk->world);
	if (rc != MLRT_OK) {
		fprintf(stderr, "ps_logreg: worker %d: barrier after training: %s\n", wk->rank,
		        mlrt_strerror(rc));
		return rc;
	}
	double train_s = example_now_s() - t0;

	CHECK(score(wk, o->test_examples * wk->rank / wk->size,
	            o->test_examples * (wk->rank + 1) / wk->size, sums));
	rc = mlrt_allreduce(wk->world, sums, sums, 4, MLRT_F64, MLRT_SUM);
	if (rc != MLRT_OK) {
		fprintf(stderr, "ps_logreg: worker %d: allreduce of the held-out scores: %s\n",
		        wk->rank, mlrt_strerror(rc));
		return rc;
	}
	if (wk->rank != 0)
		return MLRT_OK;
	double n = (double)o->test_examples;

	printf("ps_logreg: %" PRId64 " steps per worker in %.2f s\n", o->epochs * steps_per_epoch,
	       train_s);
	printf("held-out accuracy: %.4f  log loss: %.4f\n", sums[1] / n, sums[0] / n);
	printf("true-weights accuracy: %.4f  log loss: %.4f\n", sums[3] / n, sums[2] / n);
	fflush(stdout);
	CHECK(report(wk, "accuracy", sums[1] / n, o->epochs));
	CHECK(report(wk, "log_loss", sums[0] / n, o->epochs));
	return MLRT_OK;
}

int main(int argc, char **argv)
{
	struct options o;
	struct worker wk = {.o = &o};
	int rc;

	rc = parse_options(argc, argv, &o);
	if (rc != 0) {
		usage(rc > 0 ? stdout : stderr);
		return rc > 0 ? 0 : 2;
	}
	rc = mlrt_init(&wk.ctx);
	if (rc != MLRT_OK) {
		fprintf(stderr, "ps_logreg: mlrt_init: %s\n", mlrt_strerror(rc));
		return 1;
	}
	if (mlrt_ps_role(wk.ctx) == MLRT_ROLE_SERVER)
		return example_serve(wk.ctx, PROG);
	wk.world = mlrt_world(wk.ctx);
	wk.rank = mlrt_rank(wk.ctx);
	wk.size = mlrt_size(wk.ctx);
	rc = run(&wk);
	/* The servers return from mlrt_ps_serve once every worker has closed,
	 * also after a failure. */
	if (wk.ps != NULL && mlrt_ps_close(wk.ps) != MLRT_OK && rc == MLRT_OK)
		rc = MLRT_ERR_INTERNAL;
	buf_free(&wk.buf);
	free(wk.order);
	dataset_free(&wk.train);
	dataset_free(&wk.test);
	truth_free(&wk.truth);
	if (mlrt_finalize(wk.ctx) != MLRT_OK && rc == MLRT_OK)
		rc = MLRT_ERR_INTERNAL;
	if (rc == MLRT_OK)
		return 0;
	return wk.bad_usage ? 2 : 1;
}
