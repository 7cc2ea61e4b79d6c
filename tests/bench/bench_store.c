/* Store benchmark: concurrent clients doing set, get and wait (on a key
 * that exists), ops/second for each (all clients together), median of a
 * few repetitions.  The peer figure is a bare ZeroMQ DEALER/ROUTER round
 * trip of a message of the same size with no store behind it: the floor
 * that the transport sets, measured in the same run.
 *
 *   bench_store [--addr tcp://HOST:PORT] [--clients N] [--ops N] [--reps N]
 *
 * Without --addr a server is started in this process on 127.0.0.1. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include <mlrt/store.h>

#define MAX_CLIENTS 256
#define MAX_REPS 15

enum bench_op { OP_SET, OP_GET, OP_WAIT, OP_ECHO, OP_COUNT };

static const char *const op_names[OP_COUNT] = {
	[OP_SET] = "store set", [OP_GET] = "store get", [OP_WAIT] = "store wait",
	[OP_ECHO] = "zmq echo (peer: DEALER/ROUTER round trip, no store)",
};

static struct {
	const char *addr;     /* the store */
	char echo_addr[128];  /* the echo peer */
	int clients, ops, reps;
} cfg = {.clients = 8, .ops = 2000, .reps = 3};

struct worker {
	pthread_t thread;
	int index;
	enum bench_op op;
	pthread_barrier_t *start;
	int failures;
};

/* Monotonic time in seconds. */
static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The echo clients share one context, as store clients do. */
static void *echo_client_ctx;

/* One client of the echo peer: ops round trips of a 48-byte message. */
static int run_echo_client(struct worker *w)
{
	void *sock = zmq_socket(echo_client_ctx, ZMQ_DEALER);
	char msg[48] = "echo", back[64];
	int zero = 0, bad = 0;

	zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof(zero));
	if (zmq_connect(sock, cfg.echo_addr) != 0)
		bad = 1;
	pthread_barrier_wait(w->start);
	for (int i = 0; i < cfg.ops && !bad; i++)
		bad += zmq_send(sock, msg, sizeof(msg), 0) < 0 ||
		       zmq_recv(sock, back, sizeof(back), 0) < 0;
	zmq_close(sock);
	return bad;
}

/* One client thread: its own handle, cfg.ops operations of w->op. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const char *ready = "bench/ready";
	mlrt_store *st = NULL;
	char key[64], val[32];
	void *got;
	size_t len;

	if (w->op == OP_ECHO) {
		w->failures = run_echo_client(w);
		return NULL;
	}
	if (mlrt_store_open(cfg.addr, &st) != MLRT_OK)
		w->failures++;
	snprintf(val, sizeof(val), "value-of-%d", w->index);
	pthread_barrier_wait(w->start);
	for (int i = 0; i < cfg.ops && st != NULL; i++) {
		int rc = MLRT_OK;

		snprintf(key, sizeof(key), "bench/%d/%d", w->index, i % 64);
		switch (w->op) {
		case OP_SET:
			rc = mlrt_store_set(st, key, val, strlen(val));
			break;
		case OP_GET:
			rc = mlrt_store_get(st, key, &got, &len);
			if (rc == MLRT_OK)
				free(got);
			break;
		default:
			rc = mlrt_store_wait(st, &ready, 1, 1000);
			break;
		}
		w->failures += rc != MLRT_OK;
	}
	mlrt_store_close(st);
	return NULL;
}

/* Run op once with every client; ops/s over all of them, or -1. */
static double run_once(enum bench_op op)
{
	struct worker w[MAX_CLIENTS];
	pthread_barrier_t start;
	double t0, t1;
	int failures = 0;

	pthread_barrier_init(&start, NULL, (unsigned)cfg.clients + 1);
	for (int i = 0; i < cfg.clients; i++) {
		w[i] = (struct worker){.index = i, .op = op, .start = &start};
		if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0) {
			fprintf(stderr, "bench_store: cannot start a thread\n");
			exit(1);
		}
	}
	pthread_barrier_wait(&start);
	t0 = now_s();
	for (int i = 0; i < cfg.clients; i++) {
		pthread_join(w[i].thread, NULL);
		failures += w[i].failures;
	}
	t1 = now_s();
	pthread_barrier_destroy(&start);
	if (failures > 0) {
		fprintf(stderr, "bench_store: %s: %d operations failed\n", op_names[op], failures);
		return -1;
	}
	return (double)cfg.clients * cfg.ops / (t1 - t0);
}

/* qsort order of doubles. */
static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The echo peer: a ROUTER that sends every message back. */
static void *echo_main(void *sock)
{
	for (;;) {
		zmq_msg_t id, body;
		int ok;

		zmq_msg_init(&id);
		zmq_msg_init(&body);
		ok = zmq_msg_recv(&id, sock, 0) >= 0 && zmq_msg_recv(&body, sock, 0) >= 0;
		if (ok)
			ok = zmq_msg_send(&id, sock, ZMQ_SNDMORE) >= 0 &&
			     zmq_msg_send(&body, sock, 0) >= 0;
		zmq_msg_close(&id);
		zmq_msg_close(&body);
		if (!ok && errno == ETERM)
			break;
	}
	return NULL;
}

/* Fill the keys that get reads and the key that wait finds. */
static int prepare(void)
{
	mlrt_store *st;
	char key[64];
	int rc;

	rc = mlrt_store_open(cfg.addr, &st);
	for (int i = 0; i < cfg.clients && rc == MLRT_OK; i++)
		for (int k = 0; k < 64 && rc == MLRT_OK; k++) {
			snprintf(key, sizeof(key), "bench/%d/%d", i, k);
			rc = mlrt_store_set(st, key, "initial", 7);
		}
	if (rc == MLRT_OK)
		rc = mlrt_store_set(st, "bench/ready", "1", 1);
	mlrt_store_close(st);
	return rc;
}

/* Print the usage line and exit 2. */
static void usage(void)
{
	fprintf(stderr, "usage: bench_store [--addr tcp://HOST:PORT] [--clients N] [--ops N] "
	                "[--reps N]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	mlrt_store_server *srv = NULL;
	double median[OP_COUNT];
	void *echo_ctx, *echo_sock;
	pthread_t echo_thread;
	size_t n = sizeof(cfg.echo_addr);

	for (int i = 1; i < argc; i++) {
		if (i + 1 >= argc)
			usage();
		if (strcmp(argv[i], "--addr") == 0)
			cfg.addr = argv[++i];
		else if (strcmp(argv[i], "--clients") == 0)
			cfg.clients = atoi(argv[++i]);
		else if (strcmp(argv[i], "--ops") == 0)
			cfg.ops = atoi(argv[++i]);
		else if (strcmp(argv[i], "--reps") == 0)
			cfg.reps = atoi(argv[++i]);
		else
			usage();
	}
	if (cfg.clients < 1 || cfg.clients > MAX_CLIENTS || cfg.ops < 1 || cfg.reps < 1 ||
	    cfg.reps > MAX_REPS)
		usage();
	if (cfg.addr == NULL) {
		if (mlrt_store_server_start("tcp://127.0.0.1:0", &srv) != MLRT_OK) {
			fprintf(stderr, "bench_store: cannot start a store server\n");
			return 1;
		}
		cfg.addr = mlrt_store_server_addr(srv);
	}
	echo_ctx = zmq_ctx_new();
	echo_client_ctx = zmq_ctx_new();
	echo_sock = zmq_socket(echo_ctx, ZMQ_ROUTER);
	if (echo_sock == NULL || zmq_bind(echo_sock, "tcp://127.0.0.1:*") != 0 ||
	    zmq_getsockopt(echo_sock, ZMQ_LAST_ENDPOINT, cfg.echo_addr, &n) != 0 ||
	    pthread_create(&echo_thread, NULL, echo_main, echo_sock) != 0) {
		fprintf(stderr, "bench_store: cannot start the echo peer: %s\n",
		        zmq_strerror(errno));
		return 1;
	}
	if (prepare() != MLRT_OK) {
		fprintf(stderr, "bench_store: cannot reach the store at %s\n", cfg.addr);
		return 1;
	}
	for (int op = 0; op < OP_COUNT; op++) {
		double runs[MAX_REPS];

		for (int r = 0; r < cfg.reps; r++) {
			runs[r] = run_once((enum bench_op)op);
			if (runs[r] < 0)
				return 1;
		}
		qsort(runs, (size_t)cfg.reps, sizeof(runs[0]), cmp_double);
		median[op] = runs[cfg.reps / 2];
		printf("%s: %d clients, %.0f %s/s (median of %d)\n", op_names[op], cfg.clients,
		       median[op], op == OP_ECHO ? "msgs" : "ops", cfg.reps);
		fflush(stdout);
	}
	for (int op = 0; op < OP_ECHO; op++)
		printf("%s / zmq echo: %.2f\n", op_names[op], median[op] / median[OP_ECHO]);

	/* The echo thread ends when its context is terminated. */
	zmq_ctx_shutdown(echo_ctx);
	pthread_join(echo_thread, NULL);
	zmq_close(echo_sock);
	zmq_ctx_term(echo_ctx);
	zmq_ctx_term(echo_client_ctx);
	if (srv != NULL)
		mlrt_store_server_stop(srv);
	return 0;
}
