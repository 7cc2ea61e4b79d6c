/* Tests of the shared-memory transport (comm/shm.c) on its own: forked
 * ranks, each with a hand-built mlrt_comm whose store client talks to a
 * store server in a process of its own, drive ops through mlrti_shm_ops.
 *
 * Covered: messages of 0 B to 5 MiB between every pair of three ranks,
 * received into a buffer and piece by piece; a header that does not match
 * (MLRT_ERR_PROTOCOL); a sender and a receiver killed mid-transfer and an
 * abort from another thread (MLRT_ERR_PEER_LOST, promptly); set-up
 * failures; and nothing left in /dev/shm.
 *
 * `test_shm --bench` measures throughput between two ranks instead. */
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <cmocka.h>

#include <mlrt/store.h>

#include "comm/comm.h"
#include "runtime/common.h"
#include "runtime/reduce.h"

#define MAX_RANKS 4
#define TIMEOUT_MS 10000

static pid_t srv_pid;   /* the store server's process */
static int srv_pipe = -1; /* closing it stops the server */
static char addr[256];
static int g_rank = -1;
static int g_test;

/* In a child: report a failed check and exit with status 1. */
#define CHECK(cond)                                                                              \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "rank %d: %s:%d: check failed: %s\n", g_rank, __FILE__,  \
			        __LINE__, #cond);                                                \
			_exit(1);                                                                \
		}                                                                                \
	} while (0)

#define CHECK_RC(call, want)                                                                     \
	do {                                                                                     \
		int rc_ = (call);                                                                \
		if (rc_ != (want)) {                                                             \
			fprintf(stderr, "rank %d: %s:%d: %s gave %d (%s), want %d\n", g_rank,    \
			        __FILE__, __LINE__, #call, rc_, mlrt_strerror(rc_), want);       \
			_exit(1);                                                                \
		}                                                                                \
	} while (0)

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0)
		;
}

/* ---- a rank ---- */

/* Build rank's communicator under prefix (store client, pids exchanged
 * through the store unless alone, links) without opening any transport. */
static mlrt_comm *comm_new(const char *prefix, int rank, int size, int timeout_ms, int alone)
{
	const char *keys[MAX_RANKS];
	char kbuf[MAX_RANKS][MLRTI_PREFIX_MAX + 32], val[32];
	mlrt_comm *c = calloc(1, sizeof(*c));
	int p;

	CHECK(c != NULL);
	c->rank = rank;
	c->size = size;
	c->timeout_ms = timeout_ms;
	snprintf(c->prefix, sizeof(c->prefix), "%s", prefix);
	c->links = calloc((size_t)size, sizeof(*c->links));
	c->pids = calloc((size_t)size, sizeof(*c->pids));
	CHECK(c->links != NULL && c->pids != NULL);
	CHECK_RC(mlrt_store_open(addr, &c->store), MLRT_OK);
	if (alone)
		return c;
	snprintf(kbuf[rank], sizeof(kbuf[rank]), "%spid/%d", prefix, rank);
	snprintf(val, sizeof(val), "%ld", (long)getpid());
	CHECK_RC(mlrt_store_set(c->store, kbuf[rank], val, strlen(val)), MLRT_OK);
	for (p = 0; p < size; p++) {
		snprintf(kbuf[p], sizeof(kbuf[p]), "%spid/%d", prefix, p);
		keys[p] = kbuf[p];
	}
	CHECK_RC(mlrt_store_wait(c->store, keys, (size_t)size, TIMEOUT_MS), MLRT_OK);
	for (p = 0; p < size; p++) {
		void *v;
		size_t len;

		CHECK_RC(mlrt_store_get(c->store, keys[p], &v, &len), MLRT_OK);
		c->pids[p] = atoi(v);
		free(v);
	}
	return c;
}

static void comm_free(mlrt_comm *c)
{
	mlrti_shm_ops.close(c);
	CHECK(c->shm == NULL);
	mlrti_shm_ops.close(c); /* twice is harmless */
	mlrt_store_close(c->store);
	free(c->links);
	free(c->pids);
	free(c);
}

/* Open shm to every other rank. */
static mlrt_comm *comm_open(const char *prefix, int rank, int size)
{
	int peers[MAX_RANKS] = {0}, p;
	mlrt_comm *c = comm_new(prefix, rank, size, TIMEOUT_MS, 0);

	for (p = 0; p < size; p++)
		peers[p] = p != rank;
	CHECK_RC(mlrti_shm_open(c, peers), MLRT_OK);
	for (p = 0; p < size; p++) {
		if (p == rank)
			continue;
		CHECK(c->links[p].ops == &mlrti_shm_ops && c->links[p].peer == p);
		CHECK(c->links[p].state != NULL);
	}
	CHECK(mlrti_shm_ops.wait_fd(NULL, NULL) == 0);
	return c;
}

/* Store barrier among the size ranks, named name. */
static void barrier(mlrt_comm *c, const char *name)
{
	char key[MLRTI_PREFIX_MAX + 64], done[MLRTI_PREFIX_MAX + 64];
	const char *keys[1] = {done};
	int64_t n;

	snprintf(key, sizeof(key), "%sbarrier/%s", c->prefix, name);
	snprintf(done, sizeof(done), "%sbarrier/%s/done", c->prefix, name);
	CHECK_RC(mlrt_store_add(c->store, key, 1, &n), MLRT_OK);
	if (n == c->size)
		CHECK_RC(mlrt_store_set(c->store, done, "1", 1), MLRT_OK);
	CHECK_RC(mlrt_store_wait(c->store, keys, 1, TIMEOUT_MS), MLRT_OK);
}

static void op_send(mlrti_op *op, mlrt_comm *c, int to, const void *buf, size_t len,
                    uint32_t seq)
{
	*op = (mlrti_op){.link = &c->links[to], .is_send = 1, .sbuf = buf, .len = len, .seq = seq};
}

static void op_recv(mlrti_op *op, mlrt_comm *c, int from, void *buf, size_t len, uint32_t seq)
{
	*op = (mlrti_op){.link = &c->links[from], .rbuf = buf, .len = len, .seq = seq,
	                 .elem_size = 1};
}

/* Call progress on every incomplete op until all are complete, the first
 * error, or timeout_ms without any progress.  Yields the CPU when a round
 * moved nothing (the test machine may have fewer cores than ranks). */
static int drive(mlrt_comm *c, mlrti_op *ops, int n, int timeout_ms)
{
	int64_t deadline = mlrti_now_ms() + timeout_ms;

	for (;;) {
		int left = 0, moved = 0, i, rc;

		for (i = 0; i < n; i++) {
			size_t before = ops[i].done + ops[i].hdr_done;

			if (ops[i].complete)
				continue;
			rc = ops[i].link->ops->progress(c, &ops[i]);
			if (rc != MLRT_OK)
				return rc;
			moved |= ops[i].complete || ops[i].done + ops[i].hdr_done != before;
			left += !ops[i].complete;
		}
		if (left == 0)
			return MLRT_OK;
		if (moved) {
			deadline = mlrti_now_ms() + timeout_ms;
		} else {
			if (mlrti_now_ms() > deadline)
				return MLRT_ERR_TIMEOUT;
			sched_yield();
		}
	}
}

static uint8_t pattern(int from, int to, size_t len, size_t i)
{
	return (uint8_t)(i * 131 + (size_t)from * 7 + (size_t)to * 13 + len);
}

static void fill(uint8_t *b, int from, int to, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		b[i] = pattern(from, to, len, i);
}

static int verify(const uint8_t *b, int from, int to, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (b[i] != pattern(from, to, len, i))
			return 0;
	return 1;
}

/* on_piece receiver: checks that pieces come in order, each a multiple
 * of the element size, and collects them. */
typedef struct pieces {
	uint8_t *dst;
	size_t next;
	size_t elem;
	size_t count;
	int bad;
} pieces;

static void on_piece(void *arg, const void *data, size_t off, size_t len)
{
	pieces *pc = arg;

	if (off != pc->next || len == 0 || len % pc->elem != 0)
		pc->bad = 1;
	memcpy(pc->dst + off, data, len);
	pc->next = off + len;
	pc->count++;
}

/* ---- processes ---- */

typedef int (*rank_fn)(int rank, int size, const char *prefix);

/* Run fn as size forked ranks under a fresh store prefix; status[r] gets
 * each one's wait status.  The ranks' pids go to pids (may be NULL). */
static void run_ranks(int size, rank_fn fn, int *status, pid_t *pids)
{
	char prefix[64];
	pid_t pid[MAX_RANKS];
	int r;

	snprintf(prefix, sizeof(prefix), "t/%ld/%d/", (long)getpid(), ++g_test);
	fflush(stdout);
	fflush(stderr);
	for (r = 0; r < size; r++) {
		pid[r] = fork();
		assert_true(pid[r] >= 0);
		if (pid[r] == 0) {
			close(srv_pipe);
			g_rank = r;
			mlrt_log_set_rank(r);
			_exit(fn(r, size, prefix));
		}
	}
	/* Reap in rank order: a rank that died early stays a zombie while
	 * lower ranks run, which the transport must see as dead too. */
	for (r = 0; r < size; r++) {
		assert_int_equal(waitpid(pid[r], &status[r], 0), pid[r]);
		if (pids != NULL)
			pids[r] = pid[r];
	}
}

static void assert_exit_ok(int st)
{
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("a rank failed: wait status %#x", st);
}

/* No segment of these processes is left in /dev/shm. */
static void assert_no_segments(const pid_t *pids, int n)
{
	DIR *d = opendir("/dev/shm");
	struct dirent *e;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		const char *dash = strrchr(e->d_name, '-');
		int i;

		if (strncmp(e->d_name, "mlrt-", 5) != 0 || dash == NULL)
			continue;
		for (i = 0; i < n; i++)
			if (atol(dash + 1) == (long)pids[i])
				fail_msg("left behind: /dev/shm/%s", e->d_name);
	}
	closedir(d);
}

/* ---- data ---- */

static const size_t sizes[] = {0, 1, 7, 4096, 512 * 1024 - 1, 512 * 1024, 512 * 1024 + 64,
                               5 * 1024 * 1024};

/* Every rank sends to and receives from every other at once, for each
 * size; even message numbers are received into a buffer, odd ones piece
 * by piece with 4-byte elements where the size allows. */
static int rank_all_pairs(int rank, int size, const char *prefix)
{
	mlrt_comm *c = comm_open(prefix, rank, size);
	uint8_t *sbuf[MAX_RANKS], *rbuf[MAX_RANKS];
	pieces pc[MAX_RANKS];
	mlrti_op ops[2 * MAX_RANKS];
	size_t k;
	int p;

	for (p = 0; p < size; p++) {
		sbuf[p] = malloc(5 * 1024 * 1024);
		rbuf[p] = malloc(5 * 1024 * 1024);
		CHECK(sbuf[p] != NULL && rbuf[p] != NULL);
	}
	for (k = 0; k < MLRTI_ARRAY_LEN(sizes); k++) {
		size_t len = sizes[k];
		uint32_t seq = (uint32_t)k + 100;
		int n = 0;

		for (p = 0; p < size; p++) {
			if (p == rank)
				continue;
			fill(sbuf[p], rank, p, len);
			memset(rbuf[p], 0xee, len);
			op_send(&ops[n++], c, p, sbuf[p], len, seq);
			op_recv(&ops[n], c, p, rbuf[p], len, seq);
			if (k % 2 == 1) {
				pc[p] = (pieces){.dst = rbuf[p], .elem = len % 4 == 0 ? 4 : 1};
				ops[n].rbuf = NULL;
				ops[n].on_piece = on_piece;
				ops[n].arg = &pc[p];
				ops[n].elem_size = pc[p].elem;
			}
			n++;
		}
		CHECK_RC(drive(c, ops, n, TIMEOUT_MS), MLRT_OK);
		for (p = 0; p < n; p++) {
			CHECK(ops[p].complete && ops[p].done == len);
			if (!ops[p].is_send) {
				CHECK(ops[p].hdr.magic == MLRTI_MSG_MAGIC && ops[p].hdr.seq == seq &&
				      ops[p].hdr.len == len);
			}
		}
		for (p = 0; p < size; p++) {
			if (p == rank)
				continue;
			CHECK(verify(rbuf[p], p, rank, len));
			if (k % 2 == 1) {
				CHECK(!pc[p].bad && pc[p].next == len);
				/* Default 512 KiB slots: the pieces are whole slots. */
				if (getenv("MLRT_SHM_SLOT_KB") == NULL)
					CHECK(pc[p].count == (len + 512 * 1024 - 1) / (512 * 1024));
			}
		}
	}
	barrier(c, "end");
	comm_free(c);
	for (p = 0; p < size; p++) {
		free(sbuf[p]);
		free(rbuf[p]);
	}
	return 0;
}

static void test_all_pairs(void **state)
{
	int st[3];
	pid_t pids[3];

	(void)state;
	run_ranks(3, rank_all_pairs, st, pids);
	assert_exit_ok(st[0]);
	assert_exit_ok(st[1]);
	assert_exit_ok(st[2]);
	assert_no_segments(pids, 3);
}

/* Many small messages in a row, more than the ring holds, without the
 * receiver keeping up: order and the counters' wrap-around. */
static int rank_stream(int rank, int size, const char *prefix)
{
	mlrt_comm *c = comm_open(prefix, rank, size);
	uint8_t buf[64];
	mlrti_op op;
	uint32_t i;

	for (i = 0; i < 1000; i++) {
		size_t len = i % 64;

		if (rank == 1) {
			fill(buf, 1, 0, len);
			buf[0] = (uint8_t)i;
			op_send(&op, c, 0, buf, len, i);
		} else {
			op_recv(&op, c, 1, buf, len, i);
		}
		CHECK_RC(drive(c, &op, 1, TIMEOUT_MS), MLRT_OK);
		if (rank == 0 && len > 0) {
			size_t j;

			CHECK(buf[0] == (uint8_t)i);
			for (j = 1; j < len; j++)
				CHECK(buf[j] == pattern(1, 0, len, j));
		}
	}
	barrier(c, "end");
	comm_free(c);
	return 0;
}

static void test_stream(void **state)
{
	int st[2];

	(void)state;
	run_ranks(2, rank_stream, st, NULL);
	assert_exit_ok(st[0]);
	assert_exit_ok(st[1]);
}

/* ---- mismatched headers ---- */

/* On a fresh communicator each: rank 1 sends (seq 5, 100 B) where rank 0
 * expects (5, 200); (9, 64) where rank 0 expects (8, 64); and (3, 600 KiB)
 * that rank 0 receives whole, then (4, 50) where rank 0 expects (4, 100). */
static int rank_mismatch(int rank, int size, const char *prefix)
{
	static const struct {
		uint32_t sseq, rseq;
		size_t slen, rlen;
	} cases[] = {{5, 5, 100, 200}, {9, 8, 64, 64}, {3, 3, 600 * 1024, 600 * 1024}};
	char sub[96];
	uint8_t *buf = calloc(1, 1 << 20);
	size_t i;

	CHECK(buf != NULL);
	for (i = 0; i < MLRTI_ARRAY_LEN(cases); i++) {
		mlrt_comm *c;
		mlrti_op op;

		snprintf(sub, sizeof(sub), "%s%zu/", prefix, i);
		c = comm_open(sub, rank, size);
		if (rank == 1) {
			op_send(&op, c, 0, buf, cases[i].slen, cases[i].sseq);
			CHECK_RC(drive(c, &op, 1, TIMEOUT_MS), MLRT_OK);
			if (i == 2) {
				op_send(&op, c, 0, buf, 50, 4);
				CHECK_RC(drive(c, &op, 1, TIMEOUT_MS), MLRT_OK);
			}
		} else {
			op_recv(&op, c, 1, buf, cases[i].rlen, cases[i].rseq);
			if (i == 2) {
				CHECK_RC(drive(c, &op, 1, TIMEOUT_MS), MLRT_OK);
				op_recv(&op, c, 1, buf, 100, 4);
			}
			CHECK_RC(drive(c, &op, 1, TIMEOUT_MS), MLRT_ERR_PROTOCOL);
			CHECK(!op.complete);
			/* And it stays an error. */
			CHECK_RC(mlrti_shm_ops.progress(c, &op), MLRT_ERR_PROTOCOL);
		}
		barrier(c, "end");
		comm_free(c);
	}
	free(buf);
	return 0;
}

static void test_mismatch(void **state)
{
	int st[2];

	(void)state;
	run_ranks(2, rank_mismatch, st, NULL);
	assert_exit_ok(st[0]);
	assert_exit_ok(st[1]);
}

/* ---- failures ---- */

#define BIG (64u << 20)

/* Rank `victim` SIGKILLs itself once 8 MiB of a 64 MiB message are
 * through; the other must get MLRT_ERR_PEER_LOST within a second of the
 * last byte it moved. */
static int rank_killed(int rank, int size, const char *prefix, int victim)
{
	mlrt_comm *c = comm_open(prefix, rank, size);
	uint8_t *buf = malloc(BIG);
	int64_t last = 0, t;
	mlrti_op op;
	int rc;

	CHECK(buf != NULL);
	memset(buf, 1, BIG);
	if (rank == 1)
		op_send(&op, c, 0, buf, BIG, 1);
	else
		op_recv(&op, c, 1, buf, BIG, 1);
	for (;;) {
		size_t before = op.done;

		rc = mlrti_shm_ops.progress(c, &op);
		if (rc != MLRT_OK)
			break;
		CHECK(!op.complete);
		if (op.done != before)
			last = mlrti_now_ms();
		if (rank == victim && op.done >= (8u << 20))
			raise(SIGKILL);
		CHECK(last == 0 || mlrti_now_ms() - last < 5000);
		sched_yield();
	}
	t = mlrti_now_ms();
	CHECK(rank != victim);
	CHECK_RC(rc, MLRT_ERR_PEER_LOST);
	fprintf(stderr, "rank %d: peer loss seen %lld ms after the last byte\n", rank,
	        (long long)(t - last));
	CHECK(t - last < 1000);
	CHECK_RC(mlrti_shm_ops.progress(c, &op), MLRT_ERR_PEER_LOST);
	comm_free(c);
	free(buf);
	return 0;
}

static int rank_sender_killed(int rank, int size, const char *prefix)
{
	return rank_killed(rank, size, prefix, 1);
}

static int rank_receiver_killed(int rank, int size, const char *prefix)
{
	return rank_killed(rank, size, prefix, 0);
}

static void test_sender_killed(void **state)
{
	int st[2];

	(void)state;
	run_ranks(2, rank_sender_killed, st, NULL);
	assert_exit_ok(st[0]);
	assert_true(WIFSIGNALED(st[1]) && WTERMSIG(st[1]) == SIGKILL);
}

static void test_receiver_killed(void **state)
{
	int st[2];
	pid_t pids[2];

	(void)state;
	run_ranks(2, rank_receiver_killed, st, pids);
	assert_true(WIFSIGNALED(st[0]) && WTERMSIG(st[0]) == SIGKILL);
	assert_exit_ok(st[1]);
	assert_no_segments(pids, 2);
}

static void *abort_later(void *arg)
{
	sleep_ms(100);
	mlrti_shm_ops.abort(arg);
	return NULL;
}

/* Both ranks send more than the ring holds and neither receives; a
 * thread of rank 0 aborts.  Rank 0's send fails at once; rank 1's fails
 * on the flag in rank 0's segment (rank 0 is still alive). */
static int rank_abort(int rank, int size, const char *prefix)
{
	mlrt_comm *c = comm_open(prefix, rank, size);
	uint8_t *buf = calloc(1, BIG);
	const char *keys[1];
	char key[MLRTI_PREFIX_MAX + 32];
	int64_t t0 = mlrti_now_ms();
	pthread_t th;
	mlrti_op op;

	CHECK(buf != NULL);
	snprintf(key, sizeof(key), "%ssender-done", prefix);
	keys[0] = key;
	if (rank == 0)
		CHECK(pthread_create(&th, NULL, abort_later, c) == 0);
	op_send(&op, c, 1 - rank, buf, BIG, 1);
	CHECK_RC(drive(c, &op, 1, TIMEOUT_MS), MLRT_ERR_PEER_LOST);
	CHECK(mlrti_now_ms() - t0 < 1000);
	CHECK(op.done > 0 && op.done < BIG);
	if (rank == 0) {
		CHECK(pthread_join(th, NULL) == 0);
		/* Every later op fails at once, in both directions. */
		op_recv(&op, c, 1, buf, 0, 2);
		CHECK_RC(mlrti_shm_ops.progress(c, &op), MLRT_ERR_PEER_LOST);
		CHECK(!op.complete);
		/* Stay alive until rank 1 has seen the flag. */
		CHECK_RC(mlrt_store_wait(c->store, keys, 1, TIMEOUT_MS), MLRT_OK);
	} else {
		CHECK_RC(mlrt_store_set(c->store, key, "1", 1), MLRT_OK);
	}
	comm_free(c);
	free(buf);
	return 0;
}

static void test_abort(void **state)
{
	int st[2];

	(void)state;
	run_ranks(2, rank_abort, st, NULL);
	assert_exit_ok(st[0]);
	assert_exit_ok(st[1]);
}

/* ---- set-up failures ---- */

/* Rank 0 links to rank 1, which links to rank 2 only (and rank 2 back,
 * late, so rank 1's segment is still there to be found): rank 0 finds
 * no ring for itself in rank 1's segment. */
static int rank_asymmetric(int rank, int size, const char *prefix)
{
	static const int links[3][3] = {{0, 1, 0}, {0, 0, 1}, {0, 1, 0}};
	mlrt_comm *c = comm_new(prefix, rank, size, TIMEOUT_MS, 0);

	if (rank == 0) {
		CHECK_RC(mlrti_shm_open(c, links[rank]), MLRT_ERR_PROTOCOL);
		CHECK(c->shm == NULL && c->links[1].ops == NULL);
	} else {
		if (rank == 2)
			sleep_ms(300);
		CHECK_RC(mlrti_shm_open(c, links[rank]), MLRT_OK);
	}
	barrier(c, "end");
	comm_free(c);
	return 0;
}

/* Rank 0 links to rank 1, which never shows up: a timeout, in time. */
static int rank_absent(int rank, int size, const char *prefix)
{
	int peers[2] = {0, 1};
	mlrt_comm *c;
	int64_t t0;

	if (rank == 1)
		return 0;
	c = comm_new(prefix, rank, size, 300, 1);
	t0 = mlrti_now_ms();
	CHECK_RC(mlrti_shm_open(c, peers), MLRT_ERR_TIMEOUT);
	CHECK(mlrti_now_ms() - t0 < 2000);
	CHECK(c->shm == NULL);
	comm_free(c);
	return 0;
}

/* Rank 1 fails before publishing its segment (bad MLRT_SHM_SLOTS): rank 0
 * learns it at once instead of waiting for the timeout. */
static int rank_peer_fails(int rank, int size, const char *prefix)
{
	int peers[2] = {rank != 0, rank != 1};
	mlrt_comm *c = comm_new(prefix, rank, size, TIMEOUT_MS, 0);
	int64_t t0 = mlrti_now_ms();

	if (rank == 1) {
		setenv("MLRT_SHM_SLOTS", "1", 1);
		CHECK_RC(mlrti_shm_open(c, peers), MLRT_ERR_INVALID);
	} else {
		CHECK_RC(mlrti_shm_open(c, peers), MLRT_ERR_PEER_LOST);
		CHECK(mlrti_now_ms() - t0 < TIMEOUT_MS / 2);
	}
	comm_free(c);
	return 0;
}

static void test_setup_failures(void **state)
{
	int st[3];
	pid_t pids[3];

	(void)state;
	run_ranks(3, rank_asymmetric, st, pids);
	assert_exit_ok(st[0]);
	assert_exit_ok(st[1]);
	assert_exit_ok(st[2]);
	assert_no_segments(pids, 3);
	run_ranks(2, rank_absent, st, pids);
	assert_exit_ok(st[0]);
	assert_exit_ok(st[1]);
	assert_no_segments(pids, 2);
	run_ranks(2, rank_peer_fails, st, pids);
	assert_exit_ok(st[0]);
	assert_exit_ok(st[1]);
	assert_no_segments(pids, 2);
}

/* ---- benchmark ---- */

/* on_piece of the benchmark: out = in + own in f32, as the ring's
 * reduce-scatter does (arg: the out buffer; own lies 256 MiB before). */
static void on_piece_sum(void *arg, const void *data, size_t off, size_t len)
{
	uint8_t *out = (uint8_t *)arg + off;

	mlrti_reduce3(out, data, out - ((size_t)256 << 20), len / 4, MLRT_F32, MLRT_SUM);
}

/* Rank 1 streams messages to rank 0, or both exchange (as in a step of
 * a ring algorithm); the messages walk through 256 MiB buffers so that
 * nothing stays in cache, and are received into the buffer or summed
 * from the slots (f32, as a reduce-scatter does).  Rank 0 prints the
 * bytes it received per second, best of three rounds. */
static int rank_bench(int rank, int size, const char *prefix)
{
	static const struct {
		const char *name;
		int both;
		int sum;
	} modes[] = {{"one way, into rbuf", 0, 0},
	             {"one way, reduced from the slots (out = in + own, f32)", 0, 1},
	             {"both ways at once, into rbuf", 1, 0},
	             {"both ways at once, reduced from the slots", 1, 1}};
	static const size_t lens[] = {(size_t)1 << 20, (size_t)4 << 20, (size_t)16 << 20,
	                              (size_t)256 << 20};
	const size_t total = (size_t)256 << 20;
	mlrt_comm *c = comm_open(prefix, rank, size);
	uint8_t *sbuf = malloc(2 * total), *rbuf = sbuf + total; /* own = sbuf */
	uint32_t seq = 0;
	size_t m, k;

	CHECK(sbuf != NULL);
	memset(sbuf, 0, 2 * total);
	for (m = 0; m < MLRTI_ARRAY_LEN(modes); m++) {
		if (rank == 0)
			printf("%s:\n", modes[m].name);
		for (k = 0; k < MLRTI_ARRAY_LEN(lens); k++) {
			size_t len = lens[k], n = total / len, i;
			double best = 0;
			int round;

			for (round = 0; round < 3; round++) {
				char name[64];
				int64_t t0;
				double s;

				snprintf(name, sizeof(name), "%zu/%zu/%d", m, k, round);
				barrier(c, name);
				t0 = mlrti_now_ms();
				for (i = 0; i < n; i++) {
					mlrti_op ops[2];
					int nops = 0;

					seq++;
					if (rank == 1 || modes[m].both)
						op_send(&ops[nops++], c, 1 - rank, sbuf + i * len, len, seq);
					if (rank == 0 || modes[m].both) {
						op_recv(&ops[nops], c, 1 - rank, rbuf + i * len, len, seq);
						if (modes[m].sum) {
							ops[nops].rbuf = NULL;
							ops[nops].on_piece = on_piece_sum;
							ops[nops].arg = rbuf + i * len;
							ops[nops].elem_size = 4;
						}
						nops++;
					}
					CHECK_RC(drive(c, ops, nops, TIMEOUT_MS), MLRT_OK);
				}
				s = (double)(mlrti_now_ms() - t0) / 1000.0;
				s = (double)total / (s > 0 ? s : 1e-3) / 1e9;
				best = s > best ? s : best;
			}
			if (rank == 0) {
				printf("  %4zu MiB messages: %6.2f GB/s\n", len >> 20, best);
				fflush(stdout);
			}
		}
	}
	barrier(c, "end");
	comm_free(c);
	free(sbuf);
	return 0;
}

/* memcpy of 256 MiB between two buffers: the ceiling. */
static void bench_memcpy(void)
{
	size_t len = (size_t)256 << 20;
	uint8_t *a = malloc(len), *b = malloc(len);
	int64_t t0;
	int i;

	if (a == NULL || b == NULL)
		exit(1);
	memset(a, 1, len);
	memset(b, 2, len);
	t0 = mlrti_now_ms();
	for (i = 0; i < 8; i++)
		memcpy(i % 2 ? a : b, i % 2 ? b : a, len);
	printf("memcpy 256 MiB: %.2f GB/s\n",
	       (double)len * 8 / ((double)(mlrti_now_ms() - t0) / 1000.0) / 1e9);
	free(a);
	free(b);
}

/* Run the store server in a process of its own, so that the ranks are
 * forked from a process without threads (the server's and ZeroMQ's).  It
 * writes its address to a pipe and stops when the other pipe closes. */
static int start_server(void **state)
{
	int up[2], down[2];
	size_t n = 0;

	(void)state;
	if (pipe(up) != 0 || pipe(down) != 0)
		return -1;
	srv_pid = fork();
	if (srv_pid < 0)
		return -1;
	if (srv_pid == 0) {
		mlrt_store_server *srv;
		const char *a;
		char ch;

		close(up[0]);
		close(down[1]);
		if (mlrt_store_server_start("tcp://127.0.0.1:0", &srv) != MLRT_OK)
			_exit(1);
		a = mlrt_store_server_addr(srv);
		if (a == NULL || write(up[1], a, strlen(a) + 1) != (ssize_t)(strlen(a) + 1))
			_exit(1);
		while (read(down[0], &ch, 1) > 0)
			;
		_exit(mlrt_store_server_stop(srv) == MLRT_OK ? 0 : 1);
	}
	close(up[1]);
	close(down[0]);
	srv_pipe = down[1];
	while (n < sizeof(addr) - 1 && read(up[0], &addr[n], 1) == 1 && addr[n] != '\0')
		n++;
	addr[n] = '\0';
	close(up[0]);
	return n > 0 ? 0 : -1;
}

static int stop_server(void **state)
{
	int st;

	(void)state;
	close(srv_pipe);
	if (waitpid(srv_pid, &st, 0) != srv_pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_all_pairs),
		cmocka_unit_test(test_stream),
		cmocka_unit_test(test_mismatch),
		cmocka_unit_test(test_sender_killed),
		cmocka_unit_test(test_receiver_killed),
		cmocka_unit_test(test_abort),
		cmocka_unit_test(test_setup_failures),
	};

	if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
		int st[2];

		bench_memcpy();
		if (start_server(NULL) != 0)
			return 1;
		run_ranks(2, rank_bench, st, NULL);
		stop_server(NULL);
		return !(WIFEXITED(st[0]) && WEXITSTATUS(st[0]) == 0 && WIFEXITED(st[1]) &&
		         WEXITSTATUS(st[1]) == 0);
	}
	return cmocka_run_group_tests(tests, start_server, stop_server);
}
