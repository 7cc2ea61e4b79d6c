/* Elastic state in memory, in the spirit of Horovod's elastic state.
 *
 * A job that shrinks or grows (mlrun --nnodes MIN:MAX) goes on as a new
 * generation of workers.  Rather than reading its newest checkpoint back
 * from disk, a program can commit its replicated training state in memory
 * as often as every step: mlrt_elastic_commit copies the registered buffers
 * into a shared-memory segment of the host (written by the host's local
 * rank 0), which outlives the worker processes.  In the next generation
 * mlrt_elastic_restore finds the newest state that any host of the new
 * gang committed and broadcasts it from there to every rank, new hosts
 * included.  mlrun removes the host's segment when the job ends.
 *
 * The buffers hold replicated state: the same on every rank (parameters,
 * optimizer state).  Restore is collective over the world; commit is not.
 * A commit interrupted by a crash leaves the previous one intact (two
 * slots).  Threads: one mlrt_elastic is used by one thread at a time. */
#ifndef MLRT_ELASTIC_H
#define MLRT_ELASTIC_H

#include <stddef.h>
#include <stdint.h>

#include <mlrt/runtime.h>
#include <mlrt/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mlrt_elastic mlrt_elastic;

MLRT_API int mlrt_elastic_open(mlrt_ctx *ctx, mlrt_elastic **es);

/* Register count elements of type t at data under name (register the same
 * buffers, in the same order, on every rank and in every generation). */
MLRT_API int mlrt_elastic_add(mlrt_elastic *es, const char *name, void *data, size_t count,
                              mlrt_dtype t);

/* Keep the buffers' contents as the state of step. */
MLRT_API int mlrt_elastic_commit(mlrt_elastic *es, int64_t step);

/* Load the newest state committed on any host of this generation into the
 * buffers, on every rank; *step gets its step.  MLRT_ERR_NOT_FOUND when no
 * host has one (the buffers are untouched: start fresh or from a
 * checkpoint). */
MLRT_API int mlrt_elastic_restore(mlrt_elastic *es, int64_t *step);

MLRT_API int mlrt_elastic_close(mlrt_elastic *es);

#ifdef __cplusplus
}
#endif

#endif
