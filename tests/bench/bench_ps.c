/* bench_ps: parameter-server throughput and latency, run as
 * `mlrun --servers S -np W bench_ps [options]` (ps.sh runs 1x2 and 2x4 and
 * the peers, and passes the peers' figures in).  Servers serve; worker 0
 * prints.
 *
 *   throughput  for each value size (one key per value, one key per
 *               request): every worker pushes (then pulls) its own keys,
 *               up to --depth requests in flight, started together
 *               behind a barrier; GB/s and keys/s are all workers' bytes
 *               and keys over the slowest worker's time, median over
 *               --rounds rounds.  Keys are spread so that each of S
 *               servers (S a power of two) holds an equal share.
 *   latency     worker 0 alone (the others wait at a barrier): push then
 *               pull of a 1-float key, blocking; median over --lat-iters;
 *               and, alternating with them, the same as one
 *               mlrt_ps_push_pull (the pull rides behind the push).
 *               With --echo PS_PEER, blocks of these alternate with blocks
 *               of bare ZeroMQ REQ/REP round trips of 64 B to `ps_peer
 *               echo` (over --zmq-over), so that both are measured under
 *               the same load of this noisy machine.
 *
 * Each line carries the peer figure and the target the issue sets:
 *   4 KiB            keys/s against ps-lite's quoted 5,500 requests/s,
 *                    target >= 4x
 *   1 MiB and up     GB/s against one loopback TCP stream (--tcp-gbs,
 *                    measured by ps_peer in the same ps.sh run), >= 0.70x;
 *                    and, for information, against a Unix socket stream
 *                    (--unix-gbs): on one machine the servers are reached
 *                    over ZeroMQ's ipc://, a Unix socket
 *   small push+pull  against 2 ZeroMQ round trips (--zmq-us, ps_peer) over
 *                    the transport the servers are reached by (--zmq-over
 *                    tcp|ipc), <= 1.20x
 *
 *   bench_ps [--sizes 4K,1M,16M] [--rounds N] [--mib N] [--max-ops N]
 *            [--depth N] [--inflight-mib N] [--lat-iters N]
 *            [--tcp-gbs X] [--unix-gbs X] [--zmq-us X] [--zmq-over T]
 *            [--echo PS_PEER]                                              */
#include <inttypes.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include <mlrt/mlrt.h>

extern char **environ;

/* 1: requests go out through mlrt_ps_push_async / mlrt_ps_pull_async, up
 * to --depth in flight, settled with mlrt_ps_wait; 0: the blocking calls,
 * one request at a time.  The one line to change (or -DBENCH_PS_ASYNC=0). */
#ifndef BENCH_PS_ASYNC
#define BENCH_PS_ASYNC 1
#endif

#define MAX_SIZES 16
#define MAX_ROUNDS 99
#define MAX_DEPTH 256 /* MLRT_PS_MAX_INFLIGHT */

/* ps-lite's request rate at 4 KiB with one worker, quoted by the issue. */
#define PSLITE_REQS 5500.0

static int rank, nworkers, nservers;
static mlrt_comm *comm;

static struct {
	size_t sizes[MAX_SIZES];
	int nsizes;
	int rounds;
	size_t bytes;         /* all workers' bytes per round (--mib) */
	size_t max_ops;       /* all workers' requests per round, at most */
	int depth;            /* requests in flight per worker, at most */
	size_t inflight;      /* bytes in flight per worker, at most */
	int lat_iters;
	double tcp_gbs;       /* the peers' figures; 0: not measured */
	double unix_gbs;
	double zmq_us;
	const char *zmq_over; /* "tcp" or "ipc": how zmq_us was measured */
	const char *echo;     /* ps_peer, to time round trips interleaved, or NULL */
} cfg = {
	.sizes = {4096, 1 << 20, 16 << 20},
	.nsizes = 3,
	.rounds = 5,
	.bytes = (size_t)512 << 20,
	.max_ops = 16384,
	.depth = 64,
	.inflight = (size_t)64 << 20,
	.lat_iters = 2000,
	.zmq_over = "tcp",
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench_ps: worker %d: %s: %s\n", rank, what, mlrt_strerror(rc));
	exit(1);
}

static void *alloc_or_die(size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		die("cannot allocate the buffers", MLRT_ERR_NOMEM);
	return p;
}

/* ---- the request wrapper: async or blocking (BENCH_PS_ASYNC) ---- */

/* Start a push or pull of one key; *ticket is what settle() waits for.
 * key, len and buf stay untouched until then. */
static int issue(mlrt_ps *ps, int push, const uint64_t *key, const size_t *len, float *buf,
                 int64_t *ticket)
{
#if BENCH_PS_ASYNC
	return push ? mlrt_ps_push_async(ps, key, 1, buf, len, ticket)
	            : mlrt_ps_pull_async(ps, key, 1, buf, len, ticket);
#else
	*ticket = 0;
	return push ? mlrt_ps_push(ps, key, 1, buf, len) : mlrt_ps_pull(ps, key, 1, buf, len);
#endif
}

/* Wait for ticket and every request before it. */
static int settle(mlrt_ps *ps, int64_t ticket)
{
#if BENCH_PS_ASYNC
	return mlrt_ps_wait(ps, ticket);
#else
	(void)ps;
	(void)ticket;
	return MLRT_OK;
#endif
}

/* ---- keys ---- */

/* The top 6 bits of key slot i: i's low 6 bits reversed, so that slots
 * 0, 1, 2, ... fall on servers 0, S/2, S/4, ... in turn and any run of S
 * slots (S a power of two up to 64) covers every server once (a key k
 * lives on server k * S / 2^64). */
static uint64_t key_of(int size_index, int worker, size_t slot)
{
	uint64_t r = 0;

	for (int b = 0; b < 6; b++)
		r |= (uint64_t)((slot >> b) & 1) << (5 - b);
	return r << 58 | (uint64_t)size_index << 44 | (uint64_t)worker << 24 | (uint64_t)slot;
}

/* ---- measurements ---- */

/* One worker's keys and buffers for one value size. */
typedef struct set {
	uint64_t *keys; /* [nkeys] */
	size_t nkeys;
	size_t len;     /* floats of each value */
	float *src;     /* what every push sends */
	float **dst;    /* [depth]: one pull destination per request in flight */
	int depth;
} set;

/* ops requests of one kind, at most s->depth in flight; the slowest
 * worker's time between the barrier and its last reply. */
static double run_round(mlrt_ps *ps, int push, const set *s, size_t ops)
{
	int64_t ticket[MAX_DEPTH];
	double t0, t;
	int rc;

	if ((rc = mlrt_barrier(comm)) != MLRT_OK)
		die("barrier", rc);
	t0 = now();
	for (size_t j = 0; j < ops; j++) {
		size_t b = j % (size_t)s->depth;

		/* Request j - depth used buffer b: it must be done. */
		if (j >= (size_t)s->depth && (rc = settle(ps, ticket[b])) != MLRT_OK)
			die(push ? "push" : "pull", rc);
		rc = issue(ps, push, &s->keys[j % s->nkeys], &s->len, push ? s->src : s->dst[b],
		           &ticket[b]);
		if (rc != MLRT_OK)
			die(push ? "push" : "pull", rc);
	}
	if (ops > 0 && (rc = settle(ps, ticket[(ops - 1) % (size_t)s->depth])) != MLRT_OK)
		die(push ? "push" : "pull", rc);
	t = now() - t0;
	if ((rc = mlrt_allreduce(comm, &t, &t, 1, MLRT_F64, MLRT_MAX)) != MLRT_OK)
		die("allreduce", rc);
	return t;
}

/* After the last round: the last pull of each key must hold every push
 * of it (the keys are this worker's own and the servers add pushes): a
 * request that was counted but never done shows here. */
static void verify(const set *s, size_t ops, int rounds)
{
	size_t from = ops > (size_t)s->depth ? ops - (size_t)s->depth : 0;

	for (size_t j = from; j < ops; j++) {
		size_t k = j % s->nkeys;
		size_t pushes = 1 + (size_t)rounds * (ops / s->nkeys + (k < ops % s->nkeys));
		const float *got = s->dst[j % (size_t)s->depth];

		for (size_t i = 0; i < s->len; i += i < 64 ? 1 : 4093) {
			float want = (float)pushes * s->src[i];

			if (got[i] != want) {
				fprintf(stderr, "bench_ps: worker %d: key %#" PRIx64 " element %zu is %g "
				        "after %zu pushes, want %g\n", rank, s->keys[k], i, got[i],
				        pushes, want);
				exit(1);
			}
		}
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void size_label(size_t bytes, char *buf, size_t cap)
{
	if (bytes % (1u << 20) == 0)
		snprintf(buf, cap, "%zuMiB", bytes >> 20);
	else if (bytes % 1024 == 0)
		snprintf(buf, cap, "%zuKiB", bytes >> 10);
	else
		snprintf(buf, cap, "%zuB", bytes);
}

/* The peer and target part of a throughput line. */
static void print_peer(size_t bytes, double gbs, double keys)
{
	if (bytes >= (1u << 20)) {
		if (cfg.tcp_gbs > 0)
			printf("  tcp stream %.2f GB/s  ratio %.2f (target >= 0.70)", cfg.tcp_gbs,
			       gbs / cfg.tcp_gbs);
		else
			printf("  tcp stream not measured (--tcp-gbs)");
		if (cfg.unix_gbs > 0)
			printf("  [unix stream %.2f GB/s: %.2fx]", cfg.unix_gbs,
			       gbs / cfg.unix_gbs);
	} else if (bytes == 4096) {
		printf("  ps-lite %.0f req/s (quoted)  ratio %.2f (target >= 4.00)", PSLITE_REQS,
		       keys / PSLITE_REQS);
	}
	printf("\n");
}

/* Push and pull throughput at one value size. */
static void throughput(mlrt_ps *ps, int size_index)
{
	size_t bytes = cfg.sizes[size_index];
	size_t ops = cfg.bytes / bytes, per_worker;
	set s = {.len = bytes / sizeof(float)};
	double t[2][MAX_ROUNDS];
	char label[32];
	int rc;

	if (ops > cfg.max_ops)
		ops = cfg.max_ops;
	per_worker = (ops + (size_t)nworkers - 1) / (size_t)nworkers;
	if (per_worker == 0)
		per_worker = 1;
	s.depth = BENCH_PS_ASYNC ? cfg.depth : 1;
	if (s.depth > 1 && (size_t)s.depth * bytes > cfg.inflight)
		s.depth = cfg.inflight / bytes > 0 ? (int)(cfg.inflight / bytes) : 1;
	/* At least two keys, so that with two servers both are busy even
	 * one request at a time. */
	s.nkeys = s.depth < 2 ? 2 : (size_t)s.depth;
	s.keys = alloc_or_die(s.nkeys * sizeof(*s.keys));
	for (size_t k = 0; k < s.nkeys; k++)
		s.keys[k] = key_of(size_index, rank, k);
	s.src = alloc_or_die(bytes);
	for (size_t i = 0; i < s.len; i++)
		s.src[i] = (float)(i % 7) * 0.25f;
	s.dst = alloc_or_die((size_t)s.depth * sizeof(*s.dst));
	for (int b = 0; b < s.depth; b++) {
		s.dst[b] = alloc_or_die(bytes);
		memset(s.dst[b], 0, bytes); /* touched now, not in the first round */
	}
	/* Warm-up: the servers create the keys, the sockets reach their
	 * buffer sizes. */
	for (size_t k = 0; k < s.nkeys; k++)
		if ((rc = mlrt_ps_push(ps, &s.keys[k], 1, s.src, &s.len)) != MLRT_OK ||
		    (rc = mlrt_ps_pull(ps, &s.keys[k], 1, s.dst[0], &s.len)) != MLRT_OK)
			die("warm-up", rc);
	for (int r = 0; r < cfg.rounds; r++) {
		t[0][r] = run_round(ps, 1, &s, per_worker);
		t[1][r] = run_round(ps, 0, &s, per_worker);
	}
	verify(&s, per_worker, cfg.rounds);
	size_label(bytes, label, sizeof(label));
	for (int op = 0; op < 2 && rank == 0; op++) {
		double total = (double)per_worker * nworkers;
		double sec = median(t[op], (size_t)cfg.rounds);
		double gbs = total * (double)bytes / sec / 1e9, keys = total / sec;

		printf("%s %s %dx%d: %.2f GB/s %.0f keys/s", op == 0 ? "push" : "pull", label,
		       nservers, nworkers, gbs, keys);
		print_peer(bytes, gbs, keys);
		fflush(stdout);
	}
	for (int b = 0; b < s.depth; b++)
		free(s.dst[b]);
	free(s.dst);
	free(s.src);
	free(s.keys);
}

/* A bare round trip peer: `ps_peer echo` started here, its REQ socket. */
typedef struct echo_peer {
	pid_t pid;
	void *zctx, *sock;
} echo_peer;

static int echo_start(echo_peer *e)
{
	char ep[256] = "";
	char *argv[] = {(char *)cfg.echo, "echo", "--over", (char *)cfg.zmq_over, NULL};
	posix_spawn_file_actions_t fa;
	size_t n = 0;
	int pfd[2];

	if (pipe(pfd) != 0)
		return -1;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], STDOUT_FILENO);
	posix_spawn_file_actions_addclose(&fa, pfd[0]);
	if (posix_spawn(&e->pid, cfg.echo, &fa, NULL, argv, environ) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		return -1;
	}
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	/* The endpoint, NUL-terminated. */
	while (n + 1 < sizeof(ep) && read(pfd[0], ep + n, 1) == 1 && ep[n] != '\0')
		n++;
	close(pfd[0]);
	ep[n] = '\0';
	e->zctx = zmq_ctx_new();
	e->sock = e->zctx ? zmq_socket(e->zctx, ZMQ_REQ) : NULL;
	return n > 0 && e->sock != NULL && zmq_connect(e->sock, ep) == 0 ? 0 : -1;
}

static void echo_stop(echo_peer *e)
{
	char b;

	if (e->sock != NULL && zmq_send(e->sock, "", 0, 0) == 0)
		zmq_recv(e->sock, &b, 1, 0);
	if (e->sock != NULL)
		zmq_close(e->sock);
	if (e->zctx != NULL)
		zmq_ctx_term(e->zctx);
	waitpid(e->pid, NULL, 0);
}

/* One bare 64-byte round trip; its time in us. */
static double echo_once(echo_peer *e)
{
	char msg[64] = {0}, back[64];
	double t0 = now();

	if (zmq_send(e->sock, msg, sizeof(msg), 0) != (int)sizeof(msg) ||
	    zmq_recv(e->sock, back, sizeof(back), 0) != (int)sizeof(back))
		die("bare ZeroMQ round trip", MLRT_ERR_IO);
	return (now() - t0) * 1e6;
}

#define LAT_BLOCKS 20 /* alternations of push+pull and bare round trips */

/* Push then pull of a 1-float key, worker 0 alone; median in us, next to
 * bare ZeroMQ round trips timed in alternate blocks (--echo) or measured
 * apart (--zmq-us). */
static void latency(mlrt_ps *ps)
{
	uint64_t key = key_of(MAX_SIZES, rank, 0);
	size_t len = 1;
	float v = 1.0f, got;
	int rc;

	if ((rc = mlrt_barrier(comm)) != MLRT_OK)
		die("barrier", rc);
	if (rank == 0) {
		double *us = alloc_or_die((size_t)cfg.lat_iters * sizeof(double));
		double *rtt = alloc_or_die((size_t)cfg.lat_iters * sizeof(double));
		double *push_us = alloc_or_die((size_t)cfg.lat_iters * sizeof(double));
		double *pp_us = alloc_or_die((size_t)cfg.lat_iters * sizeof(double));
		int warm = cfg.lat_iters / 10 + 10, block = (cfg.lat_iters + LAT_BLOCKS - 1) / LAT_BLOCKS;
		echo_peer e = {0};
		double zmq_us = cfg.zmq_us;

		if (cfg.echo != NULL && echo_start(&e) != 0)
			die("starting ps_peer echo (--echo)", MLRT_ERR_IO);
		for (int i = -warm; i < cfg.lat_iters; i++) {
			double t0 = now(), t1;

			if ((rc = mlrt_ps_push(ps, &key, 1, &v, &len)) != MLRT_OK)
				die("push of 1 float", rc);
			t1 = now();
			if ((rc = mlrt_ps_pull(ps, &key, 1, &got, &len)) != MLRT_OK)
				die("pull of 1 float", rc);
			if (i >= 0) {
				us[i] = (now() - t0) * 1e6;
				push_us[i] = (t1 - t0) * 1e6;
			}
			t0 = now();
			if ((rc = mlrt_ps_push_pull(ps, &key, 1, &v, &got, &len)) != MLRT_OK)
				die("push+pull of 1 float in one call", rc);
			if (i >= 0)
				pp_us[i] = (now() - t0) * 1e6;
			/* After each block of ours, a block of bare round trips. */
			if (cfg.echo != NULL && i >= 0 && ((i + 1) % block == 0 || i + 1 == cfg.lat_iters))
				for (int j = i + 1 - block < 0 ? 0 : i + 1 - block; j <= i; j++)
					rtt[j] = echo_once(&e);
			else if (cfg.echo != NULL && i < 0)
				echo_once(&e); /* warm-up */
		}
		double m = median(us, (size_t)cfg.lat_iters);

		if (cfg.echo != NULL) {
			echo_stop(&e);
			zmq_us = median(rtt, (size_t)cfg.lat_iters);
		}
		printf("push+pull 1 float %dx%d: %.1f us (worker 0 alone, median of %d)", nservers,
		       nworkers, m, cfg.lat_iters);
		if (zmq_us > 0)
			printf("  zmq %s rtt 64 B %.1f us%s  ratio %.2f of 2 x rtt (target <= 1.20)\n",
			       cfg.zmq_over, zmq_us, cfg.echo != NULL ? " (interleaved)" : "",
			       m / (2 * zmq_us));
		else
			printf("  zmq rtt not measured (--zmq-us, --echo)\n");
		printf("# push+pull 1 float %dx%d: the push alone %.1f us (median)\n", nservers,
		       nworkers, median(push_us, (size_t)cfg.lat_iters));
		m = median(pp_us, (size_t)cfg.lat_iters);
		printf("push_pull 1 float %dx%d (one call, as ps-lite's PushPull): %.1f us (median of "
		       "%d)", nservers, nworkers, m, cfg.lat_iters);
		if (zmq_us > 0)
			printf("  ratio %.2f of 2 x rtt (target <= 1.20)\n", m / (2 * zmq_us));
		else
			printf("\n");
		fflush(stdout);
		free(us);
		free(rtt);
		free(push_us);
		free(pp_us);
	}
	if ((rc = mlrt_barrier(comm)) != MLRT_OK)
		die("barrier", rc);
}

/* ---- options ---- */

static void usage(void)
{
	fprintf(stderr, "usage: bench_ps [--sizes 4K,1M,16M] [--rounds N] [--mib N] "
	                "[--max-ops N] [--depth N] [--inflight-mib N] [--lat-iters N] "
	                "[--tcp-gbs X] [--unix-gbs X] [--zmq-us X] [--zmq-over tcp|ipc] "
	                "[--echo PS_PEER]\n");
	exit(2);
}

/* "4K,1M,16M" (bytes, K/M suffixes), each a multiple of 4. */
static void parse_sizes(const char *arg)
{
	const char *p = arg;

	cfg.nsizes = 0;
	while (*p != '\0') {
		char *end;
		unsigned long long v = strtoull(p, &end, 10);

		if (end == p || cfg.nsizes == MAX_SIZES)
			usage();
		if (*end == 'K' || *end == 'k')
			v <<= 10, end++;
		else if (*end == 'M' || *end == 'm')
			v <<= 20, end++;
		if (v == 0 || v % 4 != 0 || (*end != ',' && *end != '\0')) {
			fprintf(stderr, "bench_ps: --sizes %s: want sizes in bytes, multiples of 4\n",
			        arg);
			exit(2);
		}
		cfg.sizes[cfg.nsizes++] = (size_t)v;
		p = *end == ',' ? end + 1 : end;
	}
	if (cfg.nsizes == 0)
		usage();
}

static void parse(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[++i] : NULL;

		if (v == NULL)
			usage();
		if (strcmp(o, "--sizes") == 0)
			parse_sizes(v);
		else if (strcmp(o, "--rounds") == 0)
			cfg.rounds = atoi(v);
		else if (strcmp(o, "--mib") == 0)
			cfg.bytes = (size_t)atol(v) << 20;
		else if (strcmp(o, "--max-ops") == 0)
			cfg.max_ops = (size_t)atol(v);
		else if (strcmp(o, "--depth") == 0)
			cfg.depth = atoi(v);
		else if (strcmp(o, "--inflight-mib") == 0)
			cfg.inflight = (size_t)atol(v) << 20;
		else if (strcmp(o, "--lat-iters") == 0)
			cfg.lat_iters = atoi(v);
		else if (strcmp(o, "--tcp-gbs") == 0)
			cfg.tcp_gbs = atof(v);
		else if (strcmp(o, "--unix-gbs") == 0)
			cfg.unix_gbs = atof(v);
		else if (strcmp(o, "--zmq-us") == 0)
			cfg.zmq_us = atof(v);
		else if (strcmp(o, "--zmq-over") == 0 && (strcmp(v, "tcp") == 0 || strcmp(v, "ipc") == 0))
			cfg.zmq_over = v;
		else if (strcmp(o, "--echo") == 0)
			cfg.echo = v;
		else
			usage();
	}
	if (cfg.rounds < 1 || cfg.rounds > MAX_ROUNDS || cfg.bytes == 0 || cfg.max_ops == 0 ||
	    cfg.depth < 1 || cfg.depth > MAX_DEPTH || cfg.lat_iters < 1) {
		fprintf(stderr, "bench_ps: want --rounds 1..%d, --depth 1..%d, and --mib, "
		                "--max-ops, --lat-iters >= 1\n", MAX_ROUNDS, MAX_DEPTH);
		exit(2);
	}
}

int main(int argc, char **argv)
{
	mlrt_ctx *ctx;
	mlrt_ps *ps;
	const char *s;
	int rc;

	parse(argc, argv);
	if ((rc = mlrt_init(&ctx)) != MLRT_OK) {
		fprintf(stderr, "bench_ps: init: %s\n", mlrt_strerror(rc));
		return 1;
	}
	if (mlrt_ps_role(ctx) == MLRT_ROLE_SERVER) {
		rc = mlrt_ps_serve(ctx);
		mlrt_finalize(ctx);
		return rc == MLRT_OK ? 0 : 1;
	}
	rank = mlrt_rank(ctx);
	nworkers = mlrt_size(ctx);
	comm = mlrt_world(ctx);
	nservers = (s = getenv("MLRT_NUM_SERVERS")) != NULL ? atoi(s) : 0;
	if ((rc = mlrt_ps_open(ctx, &ps)) != MLRT_OK) {
		fprintf(stderr, "bench_ps: open: %s%s\n", mlrt_strerror(rc),
		        rc == MLRT_ERR_UNAVAILABLE ? " (run under mlrun --servers S -np W)" : "");
		mlrt_finalize(ctx);
		return rc == MLRT_ERR_UNAVAILABLE ? 77 : 1;
	}
	if (rank == 0) {
		printf("# ps: %d server(s) x %d worker(s); one key per request, %s; %.0f MiB or "
		       "%zu requests per round (all workers); median of %d rounds\n", nservers,
		       nworkers,
		       BENCH_PS_ASYNC ? "async, in flight per worker up to --depth / --inflight-mib"
		                      : "blocking calls, one request at a time per worker",
		       (double)cfg.bytes / (1 << 20), cfg.max_ops, cfg.rounds);
		if (BENCH_PS_ASYNC)
			printf("# in flight per worker: up to %d requests and %zu MiB\n", cfg.depth,
			       cfg.inflight >> 20);
		fflush(stdout);
	}
	for (int i = 0; i < cfg.nsizes; i++)
		throughput(ps, i);
	latency(ps);
	if ((rc = mlrt_ps_close(ps)) != MLRT_OK)
		die("close", rc);
	mlrt_finalize(ctx);
	return 0;
}
