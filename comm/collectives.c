/* The public collectives: argument checks, numbering, algorithm choice.
 *
 * Choice: MLRT_ALGO=ring|tree|hd|hier|direct|pair forces one; otherwise an
 * allreduce among ranks that all share this host over shared memory takes
 * the direct algorithm (with 2 ranks only up to MLRT_DIRECT_TWO_MAX_BYTES);
 * two ranks over network links, out of place, exchange whole messages up
 * to MLRT_PAIR_MAX_BYTES (beyond the latency threshold);
 * messages up to the latency threshold (MLRT_TREE_MAX_BYTES, defaults
 * below, measured with tests/bench/bench_allreduce) use recursive doubling
 * and binomial trees; over network links allreduces up to
 * MLRT_HD_MAX_BYTES use halving-doubling; larger ones the rings, or the
 * hierarchical allreduce when the ranks span hosts with equal numbers of
 * ranks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "comm/algo.h"
#include "comm/async.h"
#include "comm/device.h"
#include "comm/shm.h"
#include "runtime/common.h"
#include "runtime/devptr.h"
#include "runtime/reduce.h"

/* Crossovers measured with bench_allreduce at 4 ranks on the 2-core
 * development VM (MLRT_ALGO=tree against ring): over shared memory the
 * ring wins from 32 KiB, over sockets from 128 KiB. */
#define SHM_TREE_MAX_BYTES (16u * 1024)
#define NET_TREE_MAX_BYTES (64u * 1024)
/* Over sockets, halving-doubling beats the ring up to a few MiB (its 2
 * log2 n steps against the ring's 2(n-1)): measured at 4 and 8 ranks,
 * 1.2-1.8x at 128 KiB-1 MiB, even at 2-4 MiB, behind from 8 MiB. */
#define NET_HD_MAX_BYTES (4u << 20)
/* The direct allreduce over shared memory, measured against the above:
 * 1.0-2.2x at 3 ranks and more at every size from 4 KiB to 64 MiB; with
 * 2 ranks it beats recursive doubling up to 32 KiB, and loses to the
 * ring (which copies less) from 64 KiB by about 12%. */
#define DIRECT_TWO_MAX_BYTES (32u * 1024)
/* Two ranks over sockets, out of place: one exchange of the whole message
 * (ring.c, mlrti_allreduce_pair) against the ring's two, measured over
 * tcp in paired back-to-back runs: 0.70-0.81 of the ring's time at 1 MiB,
 * 0.88-1.17 at 256-512 KiB, 0.93-1.14 at 2 MiB, 1.14 at 4 MiB; against
 * Open MPI at 2 MiB (5 runs each, twice) 0.99 and 1.10 where the ring
 * gave 0.93 and 0.94.  Since then the ring's columns with two ranks over
 * tcp grew to 4 MiB and its sends stopped copying (comm.c, tcp.c): the
 * ring took 0.89-0.94 of the pair's time at 1 MiB, 0.92-1.03 at 2 MiB,
 * 0.95-1.01 at 512 KiB. */
#define PAIR_MAX_BYTES (512u * 1024)

typedef enum algo_choice {
	ALGO_AUTO,
	ALGO_RING,
	ALGO_TREE,
	ALGO_HIER,
	ALGO_HD,
	ALGO_DIRECT,
	ALGO_PAIR,
} algo_choice;

static algo_choice forced_algo(void)
{
	const char *s = getenv("MLRT_ALGO");

	if (s == NULL || *s == '\0' || strcmp(s, "auto") == 0)
		return ALGO_AUTO;
	if (strcmp(s, "ring") == 0)
		return ALGO_RING;
	if (strcmp(s, "tree") == 0)
		return ALGO_TREE;
	if (strcmp(s, "hier") == 0)
		return ALGO_HIER;
	if (strcmp(s, "hd") == 0)
		return ALGO_HD;
	if (strcmp(s, "direct") == 0)
		return ALGO_DIRECT;
	if (strcmp(s, "pair") == 0)
		return ALGO_PAIR;
	mlrt_log(MLRT_LOG_WARN,
	         "comm: MLRT_ALGO=%s is not ring, tree, hier, hd, direct, pair or auto; using auto",
	         s);
	return ALGO_AUTO;
}

static int use_tree(const mlrt_comm *c, algo_choice a, size_t bytes)
{
	const int64_t def = c->tcp != NULL || c->ofi != NULL ? NET_TREE_MAX_BYTES : SHM_TREE_MAX_BYTES;
	int64_t tree_max;

	if (mlrti_env_int("MLRT_TREE_MAX_BYTES", 0, INT32_MAX, def, &tree_max) != MLRT_OK)
		tree_max = def;
	/* Recursive doubling stages the whole message in scratch. */
	if (bytes > c->scratch_size)
		return 0;
	if (a != ALGO_AUTO)
		return a == ALGO_TREE;
	return bytes <= (size_t)tree_max;
}

static int use_hd(const mlrt_comm *c, size_t bytes)
{
	int64_t hd_max;

	/* With 2 ranks both are the same two exchanges, and the ring
	 * pipelines them in chunks (measured over tcp: 1.1-1.5x at 1-4 MiB). */
	if ((c->tcp == NULL && c->ofi == NULL) || c->size == 2)
		return 0;
	if (mlrti_env_int("MLRT_HD_MAX_BYTES", 0, INT64_MAX, NET_HD_MAX_BYTES, &hd_max) != MLRT_OK)
		hd_max = NET_HD_MAX_BYTES;
	return bytes <= (size_t)hd_max;
}

/* The direct allreduce (shm_direct.c), where every rank shares this host. */
static int use_direct(const mlrt_comm *c, algo_choice a, size_t bytes)
{
	int64_t two_max;

	if (mlrti_shm_buf_bytes(c) == 0 || (a != ALGO_AUTO && a != ALGO_DIRECT))
		return 0;
	if (a == ALGO_DIRECT || c->size > 2)
		return 1;
	if (mlrti_env_int("MLRT_DIRECT_TWO_MAX_BYTES", 0, INT64_MAX, DIRECT_TWO_MAX_BYTES,
	                  &two_max) != MLRT_OK)
		two_max = DIRECT_TWO_MAX_BYTES;
	return bytes <= (size_t)two_max;
}

/* Two ranks over network links, out of place (ring.c). */
static int use_pair(const mlrt_comm *c, algo_choice f, const mlrti_coll_args *a, size_t bytes)
{
	int64_t max;

	if (c->size != 2 || (c->tcp == NULL && c->ofi == NULL) || a->send == a->recv ||
	    (f != ALGO_AUTO && f != ALGO_PAIR))
		return 0;
	if (mlrti_env_int("MLRT_PAIR_MAX_BYTES", 0, INT64_MAX, PAIR_MAX_BYTES, &max) != MLRT_OK)
		max = PAIR_MAX_BYTES;
	return f == ALGO_PAIR || bytes <= (size_t)max;
}

static int bad_args(mlrti_coll coll, const char *why)
{
	mlrt_log(MLRT_LOG_ERROR, "%s: %s", mlrti_coll_name(coll), why);
	return MLRT_ERR_INVALID;
}

int mlrti_coll_check(mlrt_comm *c, const mlrti_coll_args *a)
{
	size_t es = mlrt_dtype_size(a->t);

	if (c == NULL)
		return bad_args(a->coll, "communicator is NULL");
	if (a->coll == MLRTI_COLL_BARRIER)
		return atomic_load(&c->failed);
	if (es == 0)
		return bad_args(a->coll, "unknown dtype");
	if ((a->coll == MLRTI_COLL_ALLREDUCE || a->coll == MLRTI_COLL_REDUCE_SCATTER) &&
	    (unsigned)a->op >= MLRT_OP_COUNT)
		return bad_args(a->coll, "unknown op");
	if (a->count > SIZE_MAX / es / (size_t)c->size)
		return bad_args(a->coll, "count too large");
	if (a->count > 0 && (a->send == NULL || a->recv == NULL))
		return bad_args(a->coll, "NULL buffer with count > 0");
	if (a->coll == MLRTI_COLL_BROADCAST && (a->root < 0 || a->root >= c->size))
		return bad_args(a->coll, "root is not a rank of the communicator");
	return atomic_load(&c->failed);
}

static int run_allreduce(mlrt_comm *c, const mlrti_coll_args *a, size_t bytes)
{
	const algo_choice f = forced_algo();

	if (c->size == 1) {
		if (a->send != a->recv && bytes > 0)
			memmove(a->recv, a->send, bytes);
		return MLRT_OK;
	}
	if (use_direct(c, f, bytes))
		return mlrti_allreduce_direct(c, a->send, a->recv, a->count, a->t, a->op);
	if (use_tree(c, f, bytes))
		return mlrti_allreduce_rd(c, a->send, a->recv, a->count, a->t, a->op);
	if (use_pair(c, f, a, bytes))
		return mlrti_allreduce_pair(c, a->send, a->recv, a->count, a->t, a->op);
	if (f == ALGO_HD || (f == ALGO_AUTO && use_hd(c, bytes)))
		return mlrti_allreduce_hd(c, a->send, a->recv, a->count, a->t, a->op);
	/* Ranks on several hosts: the hierarchical algorithm keeps most of
	 * the traffic in shared memory, when the layout suits it. */
	if (c->multi_host && f != ALGO_RING) {
		int used, rc = mlrti_allreduce_hier(c, a->send, a->recv, a->count, a->t, a->op, &used);

		if (used || rc != MLRT_OK)
			return rc;
	}
	return mlrti_allreduce_ring(c, a->send, a->recv, a->count, a->t, a->op);
}

static int run_allgather(mlrt_comm *c, const mlrti_coll_args *a, size_t bytes)
{
	char *mine = (char *)a->recv + (size_t)c->rank * bytes;

	if (bytes > 0 && a->send != mine)
		memmove(mine, a->send, bytes);
	return c->size == 1 ? MLRT_OK : mlrti_allgather_ring(c, a->recv, bytes);
}

static int run_reduce_scatter(mlrt_comm *c, const mlrti_coll_args *a, size_t bytes)
{
	if (c->size == 1) {
		if (a->send != a->recv && bytes > 0)
			memmove(a->recv, a->send, bytes);
		return MLRT_OK;
	}
	return mlrti_reduce_scatter_ring(c, a->send, a->recv, a->count, a->t, a->op);
}

/* One host collective, numbered; counted in the statistics unless it is
 * a piece of a staged device collective (counted once by its caller). */
static int run_host(mlrt_comm *c, const mlrti_coll_args *a, int counted)
{
	size_t bytes = a->count * mlrt_dtype_size(a->t);
	int rc = atomic_load(&c->failed);

	if (rc != MLRT_OK)
		return rc;
	c->seq++;
	atomic_store(&c->cur_coll, (int)a->coll);
	atomic_store(&c->started_seq, c->seq);
	if (counted)
		atomic_fetch_add(&c->collectives, 1);
	switch (a->coll) {
	case MLRTI_COLL_ALLREDUCE:
		rc = run_allreduce(c, a, bytes);
		break;
	case MLRTI_COLL_BROADCAST:
		if (c->size == 1)
			rc = MLRT_OK;
		else if (use_tree(c, forced_algo(), bytes))
			rc = mlrti_broadcast_binomial(c, a->recv, bytes, a->root);
		else
			rc = mlrti_broadcast_chain(c, a->recv, bytes, a->root);
		break;
	case MLRTI_COLL_ALLGATHER:
		rc = run_allgather(c, a, bytes);
		break;
	case MLRTI_COLL_REDUCE_SCATTER:
		rc = run_reduce_scatter(c, a, bytes);
		break;
	case MLRTI_COLL_BARRIER:
		rc = c->size == 1 ? MLRT_OK : mlrti_barrier_dissemination(c);
		break;
	case MLRTI_COLL_NONE:
		rc = MLRT_ERR_INTERNAL;
		break;
	}
	if (rc == MLRT_OK)
		rc = mlrti_tcp_settle(c);
	if (rc == MLRT_OK) {
		atomic_store(&c->done_coll, (int)a->coll);
		atomic_store(&c->done_seq, c->seq);
	}
	return rc;
}

int mlrti_coll_run_host(mlrt_comm *c, const mlrti_coll_args *a)
{
	return run_host(c, a, 1);
}

int mlrti_coll_run_piece(mlrt_comm *c, const mlrti_coll_args *a)
{
	return run_host(c, a, 0);
}

int mlrti_coll_run(mlrt_comm *c, const mlrti_coll_args *a)
{
	/* Device memory (either buffer) takes the device path; the host
	 * path's only cost is asking where each pointer lives. */
	if (a->coll != MLRTI_COLL_BARRIER && a->count > 0) {
		int sdev = mlrti_device_of(a->send);
		int rdev = a->recv == a->send ? sdev : mlrti_device_of(a->recv);

		if (sdev >= 0 || rdev >= 0 || c->device_mode == MLRTI_DEVICE_STAGED_HOST)
			return mlrti_device_coll_run(c, a, sdev, rdev);
	}
	return mlrti_coll_run_host(c, a);
}

/* A blocking collective: run it here, or, once the communicator has a
 * progress thread, take a turn in its queue. */
static int blocking(mlrt_comm *c, const mlrti_coll_args *a)
{
	int rc = mlrti_coll_check(c, a);

	if (rc != MLRT_OK)
		return rc;
	if (mlrti_async_active(c))
		return mlrti_async_run(c, a);
	return mlrti_coll_run(c, a);
}

int mlrt_allreduce(mlrt_comm *c, const void *send, void *recv, size_t count, mlrt_dtype t,
                   mlrt_op op)
{
	mlrti_coll_args a = {MLRTI_COLL_ALLREDUCE, send, recv, count, t, op, 0};

	return blocking(c, &a);
}

int mlrt_broadcast(mlrt_comm *c, void *buf, size_t count, mlrt_dtype t, int root)
{
	mlrti_coll_args a = {MLRTI_COLL_BROADCAST, buf, buf, count, t, MLRT_SUM, root};

	return blocking(c, &a);
}

int mlrt_allgather(mlrt_comm *c, const void *send, void *recv, size_t count_per_rank,
                   mlrt_dtype t)
{
	mlrti_coll_args a = {MLRTI_COLL_ALLGATHER, send, recv, count_per_rank, t, MLRT_SUM, 0};

	return blocking(c, &a);
}

int mlrt_reduce_scatter(mlrt_comm *c, const void *send, void *recv, size_t count_per_rank,
                        mlrt_dtype t, mlrt_op op)
{
	mlrti_coll_args a = {MLRTI_COLL_REDUCE_SCATTER, send, recv, count_per_rank, t, op, 0};

	return blocking(c, &a);
}

int mlrt_barrier(mlrt_comm *c)
{
	mlrti_coll_args a = {MLRTI_COLL_BARRIER, NULL, NULL, 0, MLRT_U8, MLRT_SUM, 0};

	return blocking(c, &a);
}
