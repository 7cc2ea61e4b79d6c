/* The public collectives: argument checks, numbering, algorithm choice.
 *
 * Choice: MLRT_ALGO=ring|tree forces one family; otherwise messages up to
 * the latency threshold (MLRT_TREE_MAX_BYTES, measured default below) use
 * recursive doubling / binomial trees and larger ones the rings. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "comm/algo.h"
#include "runtime/common.h"
#include "runtime/reduce.h"

#define DEFAULT_TREE_MAX_BYTES (64u * 1024)

typedef enum algo_choice { ALGO_AUTO, ALGO_RING, ALGO_TREE } algo_choice;

static algo_choice forced_algo(void)
{
	const char *s = getenv("MLRT_ALGO");

	if (s == NULL || *s == '\0' || strcmp(s, "auto") == 0)
		return ALGO_AUTO;
	if (strcmp(s, "ring") == 0)
		return ALGO_RING;
	if (strcmp(s, "tree") == 0)
		return ALGO_TREE;
	mlrt_log(MLRT_LOG_WARN, "comm: MLRT_ALGO=%s is not ring, tree or auto; using auto", s);
	return ALGO_AUTO;
}

static int use_tree(const mlrt_comm *c, size_t bytes)
{
	static int64_t tree_max = -1;
	algo_choice a = forced_algo();

	if (tree_max < 0 && mlrti_env_int("MLRT_TREE_MAX_BYTES", 0, INT32_MAX,
	                                  DEFAULT_TREE_MAX_BYTES, &tree_max) != MLRT_OK)
		tree_max = DEFAULT_TREE_MAX_BYTES;
	/* Recursive doubling stages the whole message in scratch. */
	if (bytes > c->scratch_size)
		return 0;
	if (a != ALGO_AUTO)
		return a == ALGO_TREE;
	return bytes <= (size_t)tree_max;
}

static int bad_args(const char *what, const char *why)
{
	mlrt_log(MLRT_LOG_ERROR, "%s: %s", what, why);
	return MLRT_ERR_INVALID;
}

/* Checks shared by the collectives; *bytes gets count elements' size. */
static int check(const char *what, mlrt_comm *c, const void *a, const void *b, size_t count,
                 mlrt_dtype t, size_t *bytes)
{
	size_t es = mlrt_dtype_size(t);

	if (c == NULL)
		return bad_args(what, "communicator is NULL");
	if (es == 0)
		return bad_args(what, "unknown dtype");
	if (count > SIZE_MAX / es / (size_t)c->size)
		return bad_args(what, "count too large");
	if (count > 0 && (a == NULL || b == NULL))
		return bad_args(what, "NULL buffer with count > 0");
	*bytes = count * es;
	return atomic_load(&c->failed);
}

static void begin(mlrt_comm *c, mlrti_coll coll)
{
	c->seq++;
	c->cur_coll = coll;
	atomic_store(&c->started_seq, c->seq);
}

static int end(mlrt_comm *c, mlrti_coll coll, int rc)
{
	if (rc == MLRT_OK) {
		atomic_store(&c->done_coll, (int)coll);
		atomic_store(&c->done_seq, c->seq);
	}
	return rc;
}

int mlrt_allreduce(mlrt_comm *c, const void *send, void *recv, size_t count, mlrt_dtype t,
                   mlrt_op op)
{
	size_t bytes;
	int rc = check("allreduce", c, send, recv, count, t, &bytes);

	if (rc != MLRT_OK)
		return rc;
	if ((unsigned)op >= MLRT_OP_COUNT)
		return bad_args("allreduce", "unknown op");
	begin(c, MLRTI_COLL_ALLREDUCE);
	if (c->size == 1) {
		if (send != recv && bytes > 0)
			memmove(recv, send, bytes);
		rc = MLRT_OK;
	} else if (use_tree(c, bytes)) {
		rc = mlrti_allreduce_rd(c, send, recv, count, t, op);
	} else {
		rc = mlrti_allreduce_ring(c, send, recv, count, t, op);
	}
	return end(c, MLRTI_COLL_ALLREDUCE, rc);
}

int mlrt_broadcast(mlrt_comm *c, void *buf, size_t count, mlrt_dtype t, int root)
{
	size_t bytes;
	int rc = check("broadcast", c, buf, buf, count, t, &bytes);

	if (rc != MLRT_OK)
		return rc;
	if (root < 0 || root >= c->size)
		return bad_args("broadcast", "root is not a rank of the communicator");
	begin(c, MLRTI_COLL_BROADCAST);
	if (c->size == 1)
		rc = MLRT_OK;
	else if (use_tree(c, bytes))
		rc = mlrti_broadcast_binomial(c, buf, bytes, root);
	else
		rc = mlrti_broadcast_chain(c, buf, bytes, root);
	return end(c, MLRTI_COLL_BROADCAST, rc);
}

int mlrt_allgather(mlrt_comm *c, const void *send, void *recv, size_t count_per_rank,
                   mlrt_dtype t)
{
	size_t bytes;
	int rc = check("allgather", c, send, recv, count_per_rank, t, &bytes);
	char *mine;

	if (rc != MLRT_OK)
		return rc;
	begin(c, MLRTI_COLL_ALLGATHER);
	mine = (char *)recv + (size_t)c->rank * bytes;
	if (bytes > 0 && send != mine)
		memmove(mine, send, bytes);
	rc = c->size == 1 ? MLRT_OK : mlrti_allgather_ring(c, recv, bytes);
	return end(c, MLRTI_COLL_ALLGATHER, rc);
}

int mlrt_reduce_scatter(mlrt_comm *c, const void *send, void *recv, size_t count_per_rank,
                        mlrt_dtype t, mlrt_op op)
{
	size_t bytes;
	int rc = check("reduce_scatter", c, send, recv, count_per_rank, t, &bytes);

	if (rc != MLRT_OK)
		return rc;
	if ((unsigned)op >= MLRT_OP_COUNT)
		return bad_args("reduce_scatter", "unknown op");
	begin(c, MLRTI_COLL_REDUCE_SCATTER);
	if (c->size == 1) {
		if (send != recv && bytes > 0)
			memmove(recv, send, bytes);
		rc = MLRT_OK;
	} else {
		rc = mlrti_reduce_scatter_ring(c, send, recv, count_per_rank, t, op);
	}
	return end(c, MLRTI_COLL_REDUCE_SCATTER, rc);
}

int mlrt_barrier(mlrt_comm *c)
{
	int rc;

	if (c == NULL)
		return bad_args("barrier", "communicator is NULL");
	rc = atomic_load(&c->failed);
	if (rc != MLRT_OK)
		return rc;
	begin(c, MLRTI_COLL_BARRIER);
	rc = c->size == 1 ? MLRT_OK : mlrti_barrier_dissemination(c);
	return end(c, MLRTI_COLL_BARRIER, rc);
}
