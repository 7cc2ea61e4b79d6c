/* Collective algorithms, written on mlrti_exchange.  Not installed.
 * Arguments are checked by the callers (comm/collectives.c); counts are
 * in elements of t, or in bytes where the name says so. */
#ifndef MLRT_COMM_ALGO_H
#define MLRT_COMM_ALGO_H

#include <stddef.h>

#include <mlrt/types.h>

#include "comm/comm.h"

/* A reducing receive: each arriving piece is combined with the own data
 * at the same offset, out = op(piece, own), or op(own, piece) when
 * own_first (the lower rank's data always goes first). */
typedef struct mlrti_reduce_ctx {
	char *out;
	const char *own;
	int own_first;
	mlrt_dtype t;
	mlrt_op op;
	size_t es;
} mlrti_reduce_ctx;

void mlrti_reduce_piece(void *arg, const void *data, size_t off, size_t len);

/* ring.c: bandwidth algorithms, pipelined in chunk columns (see
 * docs/collectives.md). */
int mlrti_allreduce_ring(mlrt_comm *c, const void *send, void *recv, size_t count, mlrt_dtype t,
                         mlrt_op op);
/* Two ranks, send != recv: one exchange of the whole message. */
int mlrti_allreduce_pair(mlrt_comm *c, const void *send, void *recv, size_t count, mlrt_dtype t,
                         mlrt_op op);
int mlrti_reduce_scatter_ring(mlrt_comm *c, const void *send, void *recv, size_t count,
                              mlrt_dtype t, mlrt_op op);
int mlrti_allgather_ring(mlrt_comm *c, void *recv, size_t bytes);
/* Hierarchical allreduce when ranks span hosts with the same number of
 * ranks each; *used = 0 (and nothing done) when the layout does not fit. */
int mlrti_allreduce_hier(mlrt_comm *c, const void *send, void *recv, size_t count,
                         mlrt_dtype t, mlrt_op op, int *used);
int mlrti_broadcast_chain(mlrt_comm *c, void *buf, size_t bytes, int root);

/* shm_direct.c: every rank on this host, linked by shared memory
 * (mlrti_shm_buf_bytes(c) > 0). */
int mlrti_allreduce_direct(mlrt_comm *c, const void *send, void *recv, size_t count,
                           mlrt_dtype t, mlrt_op op);

/* tree.c: latency algorithms. */
int mlrti_allreduce_rd(mlrt_comm *c, const void *send, void *recv, size_t count, mlrt_dtype t,
                       mlrt_op op);
int mlrti_allreduce_hd(mlrt_comm *c, const void *send, void *recv, size_t count, mlrt_dtype t,
                       mlrt_op op);
int mlrti_broadcast_binomial(mlrt_comm *c, void *buf, size_t bytes, int root);
int mlrti_barrier_dissemination(mlrt_comm *c);

#endif
