/* The exchange driver: advances one send and one receive, possibly on
 * different transports, until both are done, something fails or the
 * deadline passes. */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "comm/comm.h"
#include "runtime/common.h"

/* Idle rounds of progress calls before the driver yields the CPU, when
 * some direction has no file descriptor to sleep on (shared memory). */
#define SPINS_BEFORE_YIELD 64
/* Idle time after which it sleeps instead: a peer that late is not
 * running (more ranks than CPUs), and spinning would keep it from running.
 * Sleeps start short and double up to IDLE_SLEEP_MAX_US. */
#define IDLE_BEFORE_SLEEP_US 1000
#define IDLE_SLEEP_MIN_US 20
#define IDLE_SLEEP_MAX_US 200
/* Longest single sleep in poll, so that the watchdog's verdicts and the
 * deadline are noticed promptly. */
#define POLL_SLICE_MS 100

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void op_init(mlrti_op *op, mlrt_comm *c, int peer, int is_send, const mlrti_xfer *x)
{
	memset(op, 0, sizeof(*op));
	op->link = &c->links[peer];
	op->is_send = is_send;
	op->seq = c->seq;
	op->elem_size = x->elem_size ? x->elem_size : 1;
	if (is_send) {
		op->sbuf = x->sbuf;
		op->len = x->slen;
		op->lend = x->lend;
	} else {
		op->rbuf = x->rbuf;
		op->len = x->rlen;
		op->on_piece = x->on_piece;
		op->arg = x->arg;
	}
}

/* Hang attribution: which ranks never started this collective, from the
 * progress the watchdogs publish ("<started> <done> <coll of done>"). */
static void describe_laggards(mlrt_comm *c, char *buf, size_t cap)
{
	char key[MLRTI_PREFIX_MAX + 32];
	mlrt_store *st = NULL;
	size_t n = 0;

	buf[0] = '\0';
	if (mlrt_store_open(c->store_addr, &st) != MLRT_OK)
		return;
	mlrt_store_set_timeout(st, 2000);
	for (int r = 0; r < c->size && n + 64 < cap; r++) {
		void *val = NULL;
		size_t len;
		unsigned started = 0, done = 0;
		char coll[32] = "none";

		if (r == c->rank)
			continue;
		snprintf(key, sizeof(key), "%sprogress/%d", c->prefix, r);
		if (mlrt_store_get(st, key, &val, &len) == MLRT_OK)
			sscanf(val, "%u %u %31s", &started, &done, coll);
		free(val);
		/* Sequence numbers wrap: compare by difference. */
		if ((int32_t)(c->seq - started) > 0)
			n += (size_t)snprintf(buf + n, cap - n, "%srank %d (last completed #%u %s)",
			                      n ? ", " : "", r, done, coll);
	}
	mlrt_store_close(st);
}

int mlrti_timed_out(mlrt_comm *c, int peer, const char *doing)
{
	char laggards[1024];

	describe_laggards(c, laggards, sizeof(laggards));
	mlrt_log(MLRT_LOG_ERROR,
	         "comm: collective #%u (%s) timed out after %d ms waiting to %s rank %d%s%s",
	         c->seq, mlrti_coll_name((mlrti_coll)atomic_load(&c->cur_coll)), c->timeout_ms, doing,
	         peer,
	         laggards[0] ? "; never reached it: " : "", laggards);
	return mlrti_comm_fail(c, MLRT_ERR_TIMEOUT);
}

void mlrti_idle_step(mlrti_idle *w)
{
	if (w->spins < SPINS_BEFORE_YIELD) {
		if (++w->spins == SPINS_BEFORE_YIELD)
			w->since_us = now_us();
	} else if (w->sleep_us == 0 && now_us() - w->since_us < IDLE_BEFORE_SLEEP_US) {
		sched_yield();
	} else {
		w->sleep_us = w->sleep_us == 0 ? IDLE_SLEEP_MIN_US
		              : w->sleep_us * 2 < IDLE_SLEEP_MAX_US ? w->sleep_us * 2
		                                                    : IDLE_SLEEP_MAX_US;
		usleep((useconds_t)w->sleep_us);
	}
}

int mlrti_exchange(mlrt_comm *c, const mlrti_xfer *x)
{
	mlrti_op ops[2];
	mlrti_idle idle = {0};
	int nops = 0, rc;
	int64_t deadline = mlrti_now_ms() + c->timeout_ms;

	rc = atomic_load(&c->failed);
	if (rc != MLRT_OK)
		return rc;
	if (x->to >= 0)
		op_init(&ops[nops++], c, x->to, 1, x);
	if (x->from >= 0)
		op_init(&ops[nops++], c, x->from, 0, x);

	for (;;) {
		struct pollfd pfd[2];
		int pending = 0, progressed = 0, sleepable = 1;

		for (int i = 0; i < nops; i++) {
			mlrti_op *op = &ops[i];
			size_t before = op->hdr_done + op->done;

			if (op->complete)
				continue;
			rc = op->link->ops->progress(c, op);
			if (rc != MLRT_OK)
				return mlrti_comm_fail(c, rc);
			progressed |= op->hdr_done + op->done != before || op->complete;
			if (op->complete)
				continue;
			if (!op->link->ops->wait_fd(op, &pfd[pending]))
				sleepable = 0;
			pending++;
		}
		if (pending == 0)
			return MLRT_OK;
		rc = atomic_load(&c->failed);
		if (rc != MLRT_OK)
			return rc;
		if (progressed) {
			idle = (mlrti_idle){0};
			continue;
		}
		if (mlrti_now_ms() >= deadline) {
			for (int i = 0; i < nops; i++)
				if (!ops[i].complete)
					return mlrti_timed_out(c, ops[i].link->peer,
					                       ops[i].is_send ? "send to" : "receive from");
		}
		if (sleepable) {
			int64_t left = deadline - mlrti_now_ms();

			if (poll(pfd, (nfds_t)pending,
			         (int)(left < POLL_SLICE_MS ? (left > 0 ? left : 0) : POLL_SLICE_MS)) < 0 &&
			    errno != EINTR)
				return mlrti_comm_fail(c, MLRT_ERR_IO);
		} else {
			mlrti_idle_step(&idle);
		}
	}
}
