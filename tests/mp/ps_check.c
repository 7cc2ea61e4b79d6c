/* ps_check: parameter-server scenarios, run as `mlrun --servers S -np W
 * ps_check MODE`.  Servers serve; workers check and print
 * "MODE: worker R ok".
 *
 *   sum        no optimizer: every worker pushes its values to keys of
 *              assorted lengths spread over every server's range; after a
 *              barrier, every worker pulls exactly the start plus the sum
 *   sync OPT   SYNC mode with optimizer OPT (sgd, momentum, adagrad, adam,
 *              ftrl): 6 steps of per-worker gradients; after each push the
 *              pull must equal, bitwise, a local replay of the optimizer
 *              on the summed gradients (summed in worker order)
 *   async OPT  one worker, ASYNC: the same against a local replay
 *   bounded K  BOUNDED with staleness K, worker 0 slow: every pull the
 *              servers answered was at most K pushes ahead of the slowest
 *              (the servers' own count, read from the store at the end)
 *   errors     a key pulled with another length is refused with
 *              MLRT_ERR_INVALID
 *   train OUT STEPS
 *              SYNC training with Adam: each step every worker pulls every
 *              key, derives its gradient from the values and pushes it;
 *              worker 0 writes the final values to OUT/final.bin; servers
 *              write their pid to OUT/server-<i>.pid (for a killer)
 *   resume OUT K
 *              whole-job restart from the servers' shard checkpoints (run
 *              with --ps-ckpt-dir): in the first generation every worker
 *              pushes 1.0 to each key K times, then waits to be killed
 *              (worker 0 writes OUT/pushed); after the restart the values
 *              must be exactly W * K
 *   evaluate K (with mlrun --evaluator)
 *              workers push 1.0 to each key K times, slowly; the evaluator
 *              pulls until it sees W * K, having seen the values grow, and
 *              its push is refused; then it tells the workers (a store key)
 *              that they may close
 *   many       600 nonblocking pushes, then 600 nonblocking pulls (more
 *              than MLRT_PS_MAX_INFLIGHT in flight: the oldest are waited
 *              for), exact sums; an error inside a batch comes back from
 *              the wait
 *
 * With PS_CHECK_PUSHPULL=1, sync, async and train push and pull with one
 * mlrt_ps_push_pull where they would push, then pull: the results must be
 * the same. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mlrt/mlrt.h>

#include "ps/optim.h"

#define NKEYS 9
#define STEPS 6

static int rank, nworkers;

#define CHECK(cond, ...)                                                                         \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "ps_check: worker %d: ", rank);                          \
			fprintf(stderr, __VA_ARGS__);                                            \
			fputc('\n', stderr);                                                     \
			exit(1);                                                                 \
		}                                                                                \
	} while (0)

/* Keys spread over the whole range (so over every server), lengths 1..~600. */
static void key_set(uint64_t *keys, size_t *lens, size_t *total)
{
	*total = 0;
	for (int i = 0; i < NKEYS; i++) {
		keys[i] = (uint64_t)i * (UINT64_MAX / NKEYS) + 12345;
		lens[i] = (size_t)(1 + (i * 71) % 600);
		*total += lens[i];
	}
}

static float grad(int worker, int64_t step, size_t j)
{
	return (float)(((int)(j * 7 + (size_t)worker * 13 + (size_t)step * 29) % 17) - 8) * 0.125f;
}

static mlrt_ps *open_ps(mlrt_ctx *ctx, const mlrt_ps_opts *o)
{
	mlrt_ps *ps;
	int rc = mlrt_ps_open_opts(ctx, o, &ps);

	CHECK(rc == MLRT_OK, "open: %s", mlrt_strerror(rc));
	return ps;
}

static void sum(mlrt_ctx *ctx)
{
	uint64_t keys[NKEYS];
	size_t lens[NKEYS], n;
	mlrt_ps_opts o;

	key_set(keys, lens, &n);
	float *v = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
	mlrt_ps_opts_init(&o);
	o.init = MLRT_PS_CONSTANT;
	o.init_a = 0.5f;
	mlrt_ps *ps = open_ps(ctx, &o);

	for (size_t j = 0; j < n; j++)
		v[j] = (float)(rank + 1) * (float)(j % 10);
	CHECK(mlrt_ps_push(ps, keys, NKEYS, v, lens) == MLRT_OK, "push");
	CHECK(mlrt_barrier(mlrt_world(ctx)) == MLRT_OK, "barrier");
	CHECK(mlrt_ps_pull(ps, keys, NKEYS, got, lens) == MLRT_OK, "pull");
	for (size_t j = 0; j < n; j++) {
		float want = 0.5f;

		for (int w = 0; w < nworkers; w++)
			want += (float)(w + 1) * (float)(j % 10);
		CHECK(got[j] == want, "element %zu: %g, want %g", j, got[j], want);
	}
	CHECK(mlrt_ps_close(ps) == MLRT_OK, "close");
	free(v);
	free(got);
}

static mlrt_ps_optimizer parse_opt(const char *s)
{
	static const char *const names[] = {"sum", "sgd", "momentum", "adagrad", "adam", "ftrl"};

	for (int i = 0; i < 6; i++)
		if (strcmp(s, names[i]) == 0)
			return (mlrt_ps_optimizer)i;
	CHECK(0, "unknown optimizer %s", s);
	return MLRT_PS_SUM;
}

/* Replay opt on every key locally and compare with the servers' values
 * after each step.  consistency SYNC sums all workers' gradients. */
static void replay(mlrt_ctx *ctx, mlrt_ps_consistency cons, const char *opt_name)
{
	uint64_t keys[NKEYS];
	size_t lens[NKEYS], n;
	mlrt_ps_opts o;

	key_set(keys, lens, &n);
	mlrt_ps_opts_init(&o);
	o.optimizer = parse_opt(opt_name);
	o.consistency = cons;
	o.lr = 0.05f;
	o.l1 = 0.01f;
	o.init = MLRT_PS_UNIFORM;
	o.init_a = -0.5f;
	o.init_b = 0.5f;
	o.seed = 7;
	mlrt_ps *ps = open_ps(ctx, &o);
	float *g = malloc(n * sizeof(float)), *sum = malloc(n * sizeof(float));
	float *w = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
	float *state = calloc(2 * n, sizeof(float));
	int64_t t[NKEYS] = {0};
	int push_pull = getenv("PS_CHECK_PUSHPULL") != NULL;

	for (size_t off = 0, i = 0; i < NKEYS; off += lens[i], i++)
		mlrti_optim_init(&o, keys[i], w + off, lens[i]);
	for (int64_t step = 0; step < STEPS; step++) {
		for (size_t j = 0; j < n; j++)
			g[j] = grad(rank, step, j);
		if (push_pull)
			CHECK(mlrt_ps_push_pull(ps, keys, NKEYS, g, got, lens) == MLRT_OK,
			      "push+pull of step %" PRId64, step);
		else
			CHECK(mlrt_ps_push(ps, keys, NKEYS, g, lens) == MLRT_OK, "push of step %" PRId64,
			      step);
		for (size_t j = 0; j < n; j++) {
			int workers = cons == MLRT_PS_SYNC ? nworkers : 1;

			sum[j] = grad(0, step, j);
			for (int k = 1; k < workers; k++)
				sum[j] += grad(k, step, j);
		}
		/* Key i's optimizer state: up to 2 * lens[i] floats at 2 * off. */
		for (size_t off = 0, i = 0; i < NKEYS; off += lens[i], i++)
			mlrti_optim_apply(&o, w + off, state + 2 * off, sum + off, lens[i], &t[i]);
		if (!push_pull)
			CHECK(mlrt_ps_pull(ps, keys, NKEYS, got, lens) == MLRT_OK, "pull of step %" PRId64,
			      step);
		CHECK(memcmp(got, w, n * sizeof(float)) == 0,
		      "%s after step %" PRId64 " differs from the local replay", opt_name, step);
	}
	CHECK(mlrt_ps_close(ps) == MLRT_OK, "close");
	free(g);
	free(sum);
	free(w);
	free(got);
	free(state);
}

static void bounded(mlrt_ctx *ctx, int k)
{
	uint64_t keys[NKEYS];
	size_t lens[NKEYS], n;
	mlrt_ps_opts o;

	key_set(keys, lens, &n);
	mlrt_ps_opts_init(&o);
	o.consistency = MLRT_PS_BOUNDED;
	o.staleness = k;
	mlrt_ps *ps = open_ps(ctx, &o);
	float *v = calloc(n, sizeof(float));

	for (int step = 0; step < 20; step++) {
		if (rank == 0)
			usleep(20000); /* the slow one */
		CHECK(mlrt_ps_pull(ps, keys, NKEYS, v, lens) == MLRT_OK, "pull");
		CHECK(mlrt_ps_push(ps, keys, NKEYS, v, lens) == MLRT_OK, "push");
	}
	CHECK(mlrt_ps_close(ps) == MLRT_OK, "close");
	free(v);
}

static void errors(mlrt_ctx *ctx)
{
	uint64_t key = 42;
	size_t len = 4, other = 5;
	float v[5] = {0}, w[5];
	mlrt_ps_opts o;
	int rc;

	mlrt_ps_opts_init(&o);
	mlrt_ps *ps = open_ps(ctx, &o);
	CHECK(mlrt_ps_push(ps, &key, 1, v, &len) == MLRT_OK, "push");
	CHECK(mlrt_barrier(mlrt_world(ctx)) == MLRT_OK, "barrier");
	rc = mlrt_ps_pull(ps, &key, 1, v, &other);
	CHECK(rc == MLRT_ERR_INVALID, "a pull with another length: %s", mlrt_strerror(rc));
	rc = mlrt_ps_push_pull(ps, &key, 1, v, v + 1, &len);
	CHECK(rc == MLRT_ERR_INVALID, "a push+pull into the pushed values: %s", mlrt_strerror(rc));
	rc = mlrt_ps_push_pull(ps, &key, 1, v, w, &other);
	CHECK(rc == MLRT_ERR_INVALID, "a push+pull with another length: %s", mlrt_strerror(rc));
	CHECK(mlrt_ps_close(ps) == MLRT_OK, "close");
}

static void train(mlrt_ctx *ctx, const char *out, int steps)
{
	uint64_t keys[NKEYS];
	size_t lens[NKEYS], n;
	mlrt_ps_opts o;
	char path[4096];

	key_set(keys, lens, &n);
	mlrt_ps_opts_init(&o);
	o.optimizer = MLRT_PS_ADAM;
	/* PS_CHECK_ASYNC=1: asynchronous (bitwise repeatable with one worker). */
	o.consistency = getenv("PS_CHECK_ASYNC") ? MLRT_PS_ASYNC : MLRT_PS_SYNC;
	o.init = MLRT_PS_NORMAL;
	o.init_b = 0.1f;
	o.seed = 3;
	mlrt_ps *ps = open_ps(ctx, &o);
	float *w = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));

	/* Each step pulls the values, derives a gradient and pushes it; with
	 * push+pull the pull of the next step rides on this step's push. */
	int push_pull = getenv("PS_CHECK_PUSHPULL") != NULL;

	CHECK(mlrt_ps_pull(ps, keys, NKEYS, w, lens) == MLRT_OK, "first pull");
	for (int step = 0; step < steps; step++) {
		for (size_t j = 0; j < n; j++)
			g[j] = w[j] * 0.5f - grad(rank, step, j) * 0.01f;
		if (push_pull) {
			CHECK(mlrt_ps_push_pull(ps, keys, NKEYS, g, w, lens) == MLRT_OK,
			      "push+pull of step %d", step);
			continue;
		}
		CHECK(mlrt_ps_push(ps, keys, NKEYS, g, lens) == MLRT_OK, "push of step %d", step);
		CHECK(mlrt_ps_pull(ps, keys, NKEYS, w, lens) == MLRT_OK, "pull after step %d", step);
	}
	if (rank == 0) {
		FILE *f;

		snprintf(path, sizeof(path), "%s/final.bin", out);
		f = fopen(path, "wb");
		CHECK(f != NULL && fwrite(w, sizeof(float), n, f) == n && fclose(f) == 0,
		      "cannot write %s", path);
	}
	CHECK(mlrt_ps_close(ps) == MLRT_OK, "close");
	free(w);
	free(g);
}

static void resume(mlrt_ctx *ctx, const char *out, int k)
{
	uint64_t keys[NKEYS];
	size_t lens[NKEYS], n;
	mlrt_ps_opts o;

	key_set(keys, lens, &n);
	mlrt_ps_opts_init(&o);
	mlrt_ps *ps = open_ps(ctx, &o);
	float *v = malloc(n * sizeof(float));

	if (mlrt_restart_count(ctx) == 0) {
		char path[4096];
		FILE *f;

		for (size_t j = 0; j < n; j++)
			v[j] = 1.0f;
		for (int i = 0; i < k; i++)
			CHECK(mlrt_ps_push(ps, keys, NKEYS, v, lens) == MLRT_OK, "push %d", i);
		CHECK(mlrt_barrier(mlrt_world(ctx)) == MLRT_OK, "barrier");
		snprintf(path, sizeof(path), "%s/pushed", out);
		if (rank == 0 && (f = fopen(path, "w")) != NULL)
			fclose(f);
		sleep(30); /* until a server is killed and the gang with it */
		CHECK(0, "was not killed");
	}
	CHECK(mlrt_ps_pull(ps, keys, NKEYS, v, lens) == MLRT_OK, "pull after the restart");
	for (size_t j = 0; j < n; j++)
		CHECK(v[j] == (float)(nworkers * k), "element %zu: %g after the restart, want %d", j,
		      v[j], nworkers * k);
	CHECK(mlrt_ps_close(ps) == MLRT_OK, "close");
	free(v);
}

static void evaluate(mlrt_ctx *ctx, int k)
{
	uint64_t keys[NKEYS];
	size_t lens[NKEYS], n;
	char key[256];
	const char *wait_keys[1] = {key};
	mlrt_ps_opts o;
	int evaluator = mlrt_ps_role(ctx) == MLRT_ROLE_EVALUATOR;
	int workers = atoi(getenv("MLRT_NUM_WORKERS") ? getenv("MLRT_NUM_WORKERS") : "0");

	key_set(keys, lens, &n);
	mlrt_ps_opts_init(&o);
	mlrt_ps *ps = open_ps(ctx, &o);
	float *v = calloc(n, sizeof(float));

	snprintf(key, sizeof(key), "%s/evaluated", mlrt_job_id(ctx));
	if (evaluator) {
		float last = -1;
		int seen = 0;

		for (int i = 0; i < 2000 && v[0] != (float)(workers * k); i++) {
			CHECK(mlrt_ps_pull(ps, keys, NKEYS, v, lens) == MLRT_OK, "evaluator pull");
			seen += v[0] != last;
			last = v[0];
			usleep(2000);
		}
		CHECK(v[0] == (float)(workers * k), "the evaluator saw %g, want %d", v[0], workers * k);
		CHECK(seen >= 3, "the evaluator saw only %d values", seen);
		CHECK(mlrt_ps_push(ps, keys, NKEYS, v, lens) == MLRT_ERR_INVALID,
		      "the evaluator's push must be refused");
		printf("evaluate: evaluator saw %d values\n", seen);
		CHECK(mlrt_store_set(mlrt_ctx_store(ctx), key, "1", 1) == MLRT_OK, "store");
	} else {
		for (size_t j = 0; j < n; j++)
			v[j] = 1.0f;
		for (int i = 0; i < k; i++) {
			CHECK(mlrt_ps_push(ps, keys, NKEYS, v, lens) == MLRT_OK, "push %d", i);
			usleep(10000);
		}
		CHECK(mlrt_store_wait(mlrt_ctx_store(ctx), wait_keys, 1, 60000) == MLRT_OK,
		      "the evaluator did not finish");
	}
	CHECK(mlrt_ps_close(ps) == MLRT_OK, "close");
	free(v);
}

#define MANY 600
#define MANY_LEN 8

static void many(mlrt_ctx *ctx)
{
	static uint64_t keys[MANY];
	static size_t lens[MANY];
	static float v[MANY][MANY_LEN], got[MANY][MANY_LEN];
	mlrt_ps_opts o;
	int64_t t = -1;
	size_t bad = MANY_LEN + 1;

	mlrt_ps_opts_init(&o);
	mlrt_ps *ps = open_ps(ctx, &o);
	for (int i = 0; i < MANY; i++) {
		keys[i] = (uint64_t)i * 0x9e3779b97f4a7c15ull;
		lens[i] = MANY_LEN;
		for (int j = 0; j < MANY_LEN; j++)
			v[i][j] = (float)((rank + 1) * (i + j));
		CHECK(mlrt_ps_push_async(ps, &keys[i], 1, v[i], &lens[i], &t) == MLRT_OK, "push %d", i);
	}
	CHECK(mlrt_ps_wait(ps, t) == MLRT_OK, "wait for the pushes");
	CHECK(mlrt_barrier(mlrt_world(ctx)) == MLRT_OK, "barrier");
	for (int i = 0; i < MANY; i++)
		CHECK(mlrt_ps_pull_async(ps, &keys[i], 1, got[i], &lens[i], &t) == MLRT_OK, "pull %d", i);
	CHECK(mlrt_ps_wait(ps, t) == MLRT_OK, "wait for the pulls");
	for (int i = 0; i < MANY; i++)
		for (int j = 0; j < MANY_LEN; j++) {
			float want = 0;

			for (int w = 0; w < nworkers; w++)
				want += (float)((w + 1) * (i + j));
			CHECK(got[i][j] == want, "key %d element %d: %g, want %g", i, j, got[i][j], want);
		}
	/* One bad request among good ones. */
	CHECK(mlrt_ps_pull_async(ps, &keys[0], 1, got[0], &lens[0], &t) == MLRT_OK, "pull");
	CHECK(mlrt_ps_pull_async(ps, &keys[1], 1, got[1], &bad, &t) == MLRT_OK, "bad pull");
	CHECK(mlrt_ps_pull_async(ps, &keys[2], 1, got[2], &lens[2], &t) == MLRT_OK, "pull");
	CHECK(mlrt_ps_wait(ps, t) == MLRT_ERR_INVALID, "the wait must report the bad pull");
	CHECK(mlrt_ps_close(ps) == MLRT_OK, "close");
}

int main(int argc, char **argv)
{
	mlrt_ctx *ctx;
	int rc;

	if (argc < 2) {
		fprintf(stderr, "usage: ps_check sum|sync OPT|async OPT|bounded K|errors|many|train OUT STEPS|resume OUT K\n");
		return 2;
	}
	if ((rc = mlrt_init(&ctx)) != MLRT_OK) {
		fprintf(stderr, "ps_check: init: %s\n", mlrt_strerror(rc));
		return 1;
	}
	if (mlrt_ps_role(ctx) == MLRT_ROLE_SERVER) {
		if ((strcmp(argv[1], "train") == 0 || strcmp(argv[1], "resume") == 0) && argc > 2) {
			char tmp[4200], path[4096];
			FILE *f;

			snprintf(path, sizeof(path), "%s/server-%d.pid", argv[2], mlrt_rank(ctx));
			snprintf(tmp, sizeof(tmp), "%s.tmp", path);
			if ((f = fopen(tmp, "w")) != NULL) {
				fprintf(f, "%d\n", (int)getpid());
				if (fclose(f) == 0)
					rename(tmp, path);
			}
		}
		rc = mlrt_ps_serve(ctx);
		mlrt_finalize(ctx);
		return rc == MLRT_OK ? 0 : 1;
	}
	rank = mlrt_rank(ctx);
	nworkers = mlrt_size(ctx);
	if (strcmp(argv[1], "evaluate") == 0 && argc > 2) {
		evaluate(ctx, atoi(argv[2]));
		if (mlrt_ps_role(ctx) == MLRT_ROLE_EVALUATOR) {
			mlrt_finalize(ctx);
			return 0;
		}
	} else if (strcmp(argv[1], "sum") == 0)
		sum(ctx);
	else if (strcmp(argv[1], "sync") == 0 && argc > 2)
		replay(ctx, MLRT_PS_SYNC, argv[2]);
	else if (strcmp(argv[1], "async") == 0 && argc > 2)
		replay(ctx, MLRT_PS_ASYNC, argv[2]);
	else if (strcmp(argv[1], "bounded") == 0 && argc > 2)
		bounded(ctx, atoi(argv[2]));
	else if (strcmp(argv[1], "errors") == 0)
		errors(ctx);
	else if (strcmp(argv[1], "many") == 0)
		many(ctx);
	else if (strcmp(argv[1], "train") == 0 && argc > 3)
		train(ctx, argv[2], atoi(argv[3]));
	else if (strcmp(argv[1], "resume") == 0 && argc > 3)
		resume(ctx, argv[2], atoi(argv[3]));
	else
		CHECK(0, "unknown mode %s", argv[1]);
	printf("%s: worker %d ok\n", argv[1], rank);
	mlrt_finalize(ctx);
	return 0;
}
