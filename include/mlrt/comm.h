/* Communicators and collectives.
 *
 * Thread-safety: a communicator may be used by one thread at a time.
 * Every collective is bounded in time (MLRT_TIMEOUT_MS, default 300000)
 * and returns MLRT_ERR_PEER_LOST, never hangs, when another member of the
 * gang has died. */
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

/* Block until every rank of c has called mlrt_barrier. */
MLRT_API int mlrt_barrier(mlrt_comm *c);

#ifdef __cplusplus
}
#endif
#endif
