/* Collectives on device (CUDA) memory.  Not installed.  See
 * docs/collectives.md, "Device memory".
 *
 * mlrti_coll_run sends a collective here when its send or receive buffer
 * is device memory (runtime/devptr.h), or, for tests, when
 * MLRT_DEVICE_COLL=staged-host sends host buffers through the staged path.
 * At the first device collective a communicator decides, once, how it
 * runs them:
 *
 *   nccl    every rank has a GPU of its own (the ranks' device UUIDs,
 *           allgathered over the host collectives, are all distinct):
 *           NCCL on a communicator-owned stream (comm/nccl.c);
 *   staged  otherwise (NCCL refuses two ranks on one GPU): device-to-host
 *           copies into pinned staging buffers, the host collectives on
 *           them chunk by chunk, copies back, pipelined (comm/staged.c).
 *
 * MLRT_DEVICE_COLL=nccl|staged|auto overrides the choice (every rank must
 * set the same).  Threads: like every collective, one thread at a time per
 * communicator (the caller's, or the progress thread's). */
#ifndef MLRT_COMM_DEVICE_H
#define MLRT_COMM_DEVICE_H

#include <stddef.h>

#include "comm/async.h"
#include "comm/comm.h"

/* How a communicator runs device collectives (c->device_mode). */
typedef enum mlrti_device_mode {
	MLRTI_DEVICE_AUTO = 0,    /* decide at the first device collective */
	MLRTI_DEVICE_NCCL,        /* forced, or decided */
	MLRTI_DEVICE_STAGED,      /* forced, or decided */
	MLRTI_DEVICE_STAGED_HOST, /* tests: host buffers through the staged path, memcpy copies */
} mlrti_device_mode;

/* Read MLRT_DEVICE_COLL into *mode.  MLRT_ERR_INVALID (logged) for an
 * unknown value. */
int mlrti_device_mode_read(mlrti_device_mode *mode);

/* Run the checked collective a (count > 0), whose send buffer is on
 * device sdev and receive buffer on device rdev (-1: host memory; both -1
 * only in staged-host mode), on the calling thread.  Blocks until the
 * result is in a->recv (bounded by the communicator's timeout).  Errors:
 * MLRT_ERR_PEER_LOST, MLRT_ERR_TIMEOUT, MLRT_ERR_UNAVAILABLE (a CUDA or
 * NCCL call failed: logged with what to do), MLRT_ERR_INVALID (buffers on
 * two devices, or not on the communicator's device), MLRT_ERR_NOMEM; on
 * every error but a bad argument the communicator is marked failed. */
int mlrti_device_coll_run(mlrt_comm *c, const mlrti_coll_args *a, int sdev, int rdev);

/* Free what device collectives allocated for c (NCCL communicator,
 * streams, pinned buffers).  Does not block beyond a bounded drain. */
void mlrti_device_free(mlrt_comm *c);

/* ---- comm/staged.c ---- */

/* A communicator's staged path: pinned staging buffers (two slots, used
 * in turn), the copy streams, and the copy ops (CUDA, or memcpy in
 * staged-host mode). */
typedef struct mlrti_staged mlrti_staged;

/* Make the staged path for device `device` (-1: host buffers, memcpy
 * copies; for tests).  Allocates the staging buffers once.  Errors:
 * MLRT_ERR_NOMEM, MLRT_ERR_UNAVAILABLE (a CUDA call failed, logged),
 * MLRT_ERR_INVALID (MLRT_STAGE_CHUNK_BYTES). */
int mlrti_staged_open(mlrt_comm *c, int device, mlrti_staged **out);

/* Run the checked collective a through the staging buffers: chunks of at
 * most MLRT_STAGE_CHUNK_BYTES, each one host collective with its own
 * sequence number (every rank chunks alike), the copy of the next chunk
 * overlapping the collective of this one.  Blocks until the result is in
 * a->recv (bounded by the communicator's timeout). */
int mlrti_staged_coll(mlrti_staged *s, mlrt_comm *c, const mlrti_coll_args *a);

/* Wait (bounded) for copies in flight, free everything.  NULL is fine. */
void mlrti_staged_close(mlrti_staged *s);

/* ---- comm/nccl.c (CUDA builds; MLRT_ERR_UNSUPPORTED otherwise) ---- */

typedef struct mlrti_nccl mlrti_nccl;

/* Make this rank's NCCL communicator on device `device`: rank 0 makes the
 * unique id and publishes it under the communicator's store prefix, the
 * others wait for it; nonblocking init, polled until done (bounded by the
 * communicator's timeout).  Collective over every rank. */
int mlrti_nccl_open(mlrt_comm *c, int device, mlrti_nccl **out);

/* Run the checked collective a with NCCL on the communicator's stream and
 * wait for it (polling, bounded; peer loss aborts the NCCL communicator
 * and gives MLRT_ERR_PEER_LOST). */
int mlrti_nccl_coll(mlrti_nccl *n, mlrt_comm *c, const mlrti_coll_args *a);

/* Finalize and destroy the NCCL communicator, or abort it when failed
 * (or when finalizing takes over timeout_ms: it waits for every rank),
 * and free n.  NULL is fine. */
void mlrti_nccl_close(mlrti_nccl *n, int failed, int timeout_ms);

/* ---- comm/collectives.c ---- */

/* Run a, on host buffers, as one host collective with its own sequence
 * number (what mlrti_coll_run does for host memory).  _piece: the same,
 * not counted in mlrt_comm_get_stats (a chunk of a staged collective,
 * which counts once). */
int mlrti_coll_run_host(mlrt_comm *c, const mlrti_coll_args *a);
int mlrti_coll_run_piece(mlrt_comm *c, const mlrti_coll_args *a);

#endif
