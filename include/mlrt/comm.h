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

#ifdef __cplusplus
}
#endif
#endif
