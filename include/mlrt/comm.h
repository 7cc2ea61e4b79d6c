/* Communicators and collectives.
 *
 * Thread-safety: a communicator may be used by one thread at a time.
 * Every collective is bounded in time (MLRT_TIMEOUT_MS, default 300000;
 * MLRT_ERR_TIMEOUT names the rank waited on and the ranks that never
 * reached the collective) and returns MLRT_ERR_PEER_LOST, never hangs,
 * when another member of the gang has died.  See docs/collectives.md. */
#ifndef MLRT_COMM_H
#define MLRT_COMM_H

#include <stddef.h>

#include <mlrt/runtime.h>
#include <mlrt/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Rank of this process in c, and the number of ranks in c. */
MLRT_API int mlrt_comm_rank(const mlrt_comm *c);
MLRT_API int mlrt_comm_size(const mlrt_comm *c);

/* Every collective blocks until this rank's part is done, and every rank
 * of c must call the same collectives in the same order with the same
 * count, dtype, op and root.  Ranks that disagree get MLRT_ERR_PROTOCOL
 * (when the sizes differ) rather than mixed data.  Results are bitwise
 * identical on every rank and from run to run for the same inputs and
 * world size.  Bad arguments give MLRT_ERR_INVALID on the calling rank
 * only (the others then wait until their timeout).  After any other
 * error the communicator is failed: every later call returns that error
 * until the program initialises mlrt again.  Buffers are host memory. */

/* recv = op over all ranks of send (count elements).  send == recv: in
 * place. */
MLRT_API int mlrt_allreduce(mlrt_comm *c, const void *send, void *recv, size_t count,
                            mlrt_dtype t, mlrt_op op);

/* buf (count elements) of root goes to every rank. */
MLRT_API int mlrt_broadcast(mlrt_comm *c, void *buf, size_t count, mlrt_dtype t, int root);

/* recv (size * count_per_rank elements) gets every rank's send block in
 * rank order.  In place when send == recv + rank * count_per_rank
 * elements (send == recv also works: that block is moved first). */
MLRT_API int mlrt_allgather(mlrt_comm *c, const void *send, void *recv, size_t count_per_rank,
                            mlrt_dtype t);

/* send holds size blocks of count_per_rank elements; recv gets block
 * `rank` reduced over all ranks.  In place when recv == send + rank *
 * count_per_rank elements. */
MLRT_API int mlrt_reduce_scatter(mlrt_comm *c, const void *send, void *recv,
                                 size_t count_per_rank, mlrt_dtype t, mlrt_op op);

/* Block until every rank of c has called mlrt_barrier. */
MLRT_API int mlrt_barrier(mlrt_comm *c);

/* ---- nonblocking collectives ----
 *
 * The i-variants queue the collective and return at once; a background
 * thread of the communicator runs the queue in order.  The buffers belong
 * to the collective until it completes.  Every request must be finished
 * with mlrt_wait, or with mlrt_test until it reports done; both free it.
 * Blocking collectives issued meanwhile take their turn in the same queue.
 *
 * Tensor fusion: allreduces issued between mlrt_group_start and
 * mlrt_group_end are packed, in issue order, into one buffer of up to the
 * fusion threshold (same dtype and op, consecutive) and reduced as one
 * collective, then unpacked.  Every rank must issue the same group.  The
 * threshold is MLRT_FUSION_BYTES (default 64 MiB) or set per
 * communicator; 0 turns fusion off. */
typedef struct mlrt_request mlrt_request;

MLRT_API int mlrt_iallreduce(mlrt_comm *c, const void *send, void *recv, size_t count,
                             mlrt_dtype t, mlrt_op op, mlrt_request **req);
MLRT_API int mlrt_ibroadcast(mlrt_comm *c, void *buf, size_t count, mlrt_dtype t, int root,
                             mlrt_request **req);
MLRT_API int mlrt_iallgather(mlrt_comm *c, const void *send, void *recv, size_t count_per_rank,
                             mlrt_dtype t, mlrt_request **req);
MLRT_API int mlrt_ireduce_scatter(mlrt_comm *c, const void *send, void *recv,
                                  size_t count_per_rank, mlrt_dtype t, mlrt_op op,
                                  mlrt_request **req);
MLRT_API int mlrt_ibarrier(mlrt_comm *c, mlrt_request **req);

/* Block until req completes (bounded by the collective's own timeout);
 * return its status and free it. */
MLRT_API int mlrt_wait(mlrt_request *req);

/* Never blocks: *done = 1 when req has completed, then its status is
 * returned and req is freed; *done = 0 and MLRT_OK otherwise. */
MLRT_API int mlrt_test(mlrt_request *req, int *done);

/* Hold nonblocking collectives issued from now on (groups nest) ... */
MLRT_API int mlrt_group_start(mlrt_comm *c);
/* ... and release them together, fusing allreduces. */
MLRT_API int mlrt_group_end(mlrt_comm *c);

/* Fusion threshold in bytes for c (0: no fusion). */
MLRT_API int mlrt_comm_set_fusion_bytes(mlrt_comm *c, size_t bytes);

/* Counters: collectives run on the wire, and requests that were fused
 * into another's collective. */
typedef struct mlrt_comm_stats {
	unsigned long long collectives;
	unsigned long long fused_requests;
} mlrt_comm_stats;

MLRT_API int mlrt_comm_get_stats(const mlrt_comm *c, mlrt_comm_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
