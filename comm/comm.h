/* Communicator internals.  Not installed.
 *
 * For now a communicator synchronises through the job's store (the
 * barrier); the data-plane transports and collective algorithms arrive
 * with the collectives subsystem.  A generation's store keys live under
 * "<job>/g<generation>/"; the launcher sets "<that>abort" when the
 * generation ends, which turns every pending wait into MLRT_ERR_PEER_LOST. */
#ifndef MLRT_COMM_COMM_H
#define MLRT_COMM_COMM_H

#include <stdint.h>

#include <mlrt/comm.h>
#include <mlrt/store.h>

#define MLRTI_PREFIX_MAX 192

struct mlrt_comm {
	mlrt_store *store;             /* borrowed from the context */
	char prefix[MLRTI_PREFIX_MAX]; /* "<job>/g<gen>/comm/<id>/" */
	char abort_key[MLRTI_PREFIX_MAX];
	int rank;
	int size;
	int timeout_ms;
	uint64_t barrier_seq;
};

/* Create the communicator of ranks 0..size-1 sharing store (which may be
 * NULL only when size == 1).  gen_prefix is "<job>/g<gen>/".  *c is freed
 * with mlrti_comm_free. */
int mlrti_comm_create(mlrt_store *store, const char *gen_prefix, const char *name, int rank,
                      int size, int timeout_ms, mlrt_comm **c);
void mlrti_comm_free(mlrt_comm *c);

#endif
