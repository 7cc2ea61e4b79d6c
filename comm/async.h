/* Nonblocking collectives: a per-communicator queue run by a progress
 * thread, groups and tensor fusion.  Not installed.  See
 * docs/collectives.md. */
#ifndef MLRT_COMM_ASYNC_H
#define MLRT_COMM_ASYNC_H

#include <mlrt/types.h>

#include "comm/comm.h"

/* What a collective was asked to do. */
typedef struct mlrti_coll_args {
	mlrti_coll coll;
	const void *send;
	void *recv; /* broadcast: the buffer */
	size_t count;
	mlrt_dtype t;
	mlrt_op op;
	int root;
} mlrti_coll_args;

/* collectives.c: check the arguments (MLRT_ERR_INVALID, logged) and the
 * communicator's health; run one collective on the calling thread. */
int mlrti_coll_check(mlrt_comm *c, const mlrti_coll_args *a);
int mlrti_coll_run(mlrt_comm *c, const mlrti_coll_args *a);

/* async.c: whether c's progress thread runs; run a (checked) collective
 * through its queue and wait for it; stop the thread (at communicator
 * destruction: queued requests fail with MLRT_ERR_ABORTED). */
int mlrti_async_active(mlrt_comm *c);
int mlrti_async_run(mlrt_comm *c, const mlrti_coll_args *a);
void mlrti_async_stop(mlrt_comm *c);

/* Whether the calling thread is a progress thread. */
int mlrti_async_on_progress_thread(void);

#endif
