/* What the shared-memory transport (comm/shm.c) offers the direct
 * allreduce (comm/shm_direct.c) besides its links.  Not installed.
 *
 * When shm links a rank to every other rank of its communicator, each
 * rank's segment also carries an *area*: two buffers that every rank of
 * the host reads, and the counters that say what is in them.  A step of
 * the direct allreduce uses buffer (step & 1) of every rank; see
 * docs/shm.md, "The direct allreduce". */
#ifndef MLRT_COMM_SHM_H
#define MLRT_COMM_SHM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"

/* The step whose data a buffer holds, written before `arrived` is
 * published, so that ranks that disagree on the collective find out. */
typedef struct mlrti_shm_meta {
	uint32_t seq;   /* the collective's number */
	uint32_t kind;  /* dtype << 8 | op */
	uint64_t bytes; /* the whole message */
} mlrti_shm_meta;

typedef struct mlrti_shm_area {
	_Alignas(64) atomic_uint_least64_t arrived; /* last step whose input is in its buffer */
	_Alignas(64) atomic_uint_least64_t reduced; /* last step whose reduced slice is there */
	_Alignas(64) mlrti_shm_meta meta[2];        /* of the step in each buffer */
} mlrti_shm_area;

/* Bytes of each buffer, the same on every rank; 0 when this rank has no
 * area to use (shm does not link it to every rank, or the areas are off). */
size_t mlrti_shm_buf_bytes(const mlrt_comm *c);

/* Rank r's area and its buffer b (0 or 1); r may be this rank.  Only
 * where mlrti_shm_buf_bytes(c) > 0. */
mlrti_shm_area *mlrti_shm_area_of(mlrt_comm *c, int r);
uint8_t *mlrti_shm_buf(mlrt_comm *c, int r, int b);

/* The next step number of this communicator's direct collectives (1, 2,
 * ...: the same sequence on every rank). */
uint64_t mlrti_shm_next_step(mlrt_comm *c);

/* Rank r, waited for: MLRT_OK while it runs, MLRT_ERR_PEER_LOST (logged)
 * once it has aborted or exited or this rank's transport was aborted.
 * Cheap to call in a loop: the process check runs at most every 50 ms. */
int mlrti_shm_check_peer(mlrt_comm *c, int r);

/* memcpy with streaming stores (the destination is not read into the
 * cache first); for large destinations about twice as fast here.  Returns
 * dst, as memcpy does. */
void *mlrti_copy_stream(void *dst, const void *src, size_t n);

#endif
