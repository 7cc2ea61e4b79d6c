/* Communicator internals.  Not installed.
 *
 * A communicator is a set of ranks with a link to every other member
 * (comm/transport.h), the collectives' scratch memory (allocated once),
 * a sequence number per collective, and a watchdog thread that publishes
 * this rank's progress and watches for the end of the generation.
 *
 * Store keys of a communicator live under "<job>/g<gen>/comm/<name>/";
 * the launcher sets "<job>/g<gen>/abort" when the generation ends, which
 * makes every collective in progress return MLRT_ERR_PEER_LOST. */
#ifndef MLRT_COMM_COMM_H
#define MLRT_COMM_COMM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <mlrt/comm.h>
#include <mlrt/store.h>

#include "comm/transport.h"

#define MLRTI_PREFIX_MAX 192
#define MLRTI_HOST_MAX 256

/* Collectives, for progress reports and hang attribution. */
typedef enum mlrti_coll {
	MLRTI_COLL_NONE = 0,
	MLRTI_COLL_ALLREDUCE,
	MLRTI_COLL_BROADCAST,
	MLRTI_COLL_ALLGATHER,
	MLRTI_COLL_REDUCE_SCATTER,
	MLRTI_COLL_BARRIER,
} mlrti_coll;

const char *mlrti_coll_name(mlrti_coll coll);

struct mlrt_comm {
	mlrt_store *store;              /* borrowed; the creating thread's */
	char store_addr[256];
	char prefix[MLRTI_PREFIX_MAX];  /* "<job>/g<gen>/comm/<name>/" */
	char abort_key[MLRTI_PREFIX_MAX];
	int rank;
	int size;
	int timeout_ms;

	mlrti_link *links;              /* [size]; links[rank] is unused */
	char (*hosts)[MLRTI_HOST_MAX];  /* [size]: each rank's host name */
	int *pids;                      /* [size]: each rank's pid */
	int multi_host;                 /* ranks span more than one host */
	void *tcp;                      /* tcp.c's state, or NULL */
	void *shm;                      /* shm.c's state, or NULL */
	void *ofi;                      /* ofi.c's state, or NULL */

	/* Scratch for the algorithms: chunk-sized, allocated and touched once. */
	void *scratch;
	size_t scratch_size;
	size_t chunk_bytes;             /* pipeline chunk (MLRT_CHUNK_BYTES) */

	/* Collective numbering: seq counts collectives started (mirrored in
	 * started_seq for the watchdog and for mlrti_comm_fail, which any
	 * thread may call); done_seq and done_coll describe the last one
	 * completed. */
	uint32_t seq;
	atomic_int cur_coll;            /* the collective in progress (mlrti_coll) */
	atomic_uint started_seq;
	atomic_uint done_seq;
	atomic_int done_coll;
	atomic_int failed;              /* first failure (mlrt_status), 0 while healthy */
	atomic_ullong collectives;      /* run on the wire */
	atomic_ullong fused_requests;   /* requests carried by another's collective */

	void *async;                    /* async.c's queue and thread, once started */
	int device_mode;                /* mlrti_device_mode (comm/device.h): MLRT_DEVICE_COLL */
	void *device;                   /* device.c's state, from the first device collective */
	size_t fusion_bytes;            /* tensor fusion threshold */

	pthread_t watchdog;
	int watchdog_running;
	int watchdog_pipe[2];
};

/* Create the communicator of ranks 0..size-1 over store (NULL only when
 * size == 1): publishes this rank's host and pid, connects a link to every
 * other rank (shm to ranks on this host unless MLRT_TRANSPORT says
 * otherwise, tcp elsewhere), and starts the watchdog.  gen_prefix is
 * "<job>/g<gen>/".  Blocks until every member has connected (bounded by
 * timeout_ms).  *c is freed with mlrti_comm_free. */
int mlrti_comm_create(mlrt_store *store, const char *store_addr, const char *gen_prefix,
                      const char *name, int rank, int size, int timeout_ms, mlrt_comm **c);
void mlrti_comm_free(mlrt_comm *c);

/* Record a failure: the first one sticks, every transport is aborted so
 * that peers learn of it too.  Returns status. */
int mlrti_comm_fail(mlrt_comm *c, int status);

/* Learn what every rank r with want[r] (want NULL: every rank) published
 * at "<prefix><what>/<r>": waits (bounded by the communicator's timeout)
 * until they all have, then reads them in one listing.  vals[r] gets a
 * malloc'd, NUL-terminated copy (NULL for the others); free them with
 * mlrti_comm_gather_free.  On a timeout the log names a rank missing. */
int mlrti_comm_gather(mlrt_comm *c, const char *what, const int *want, char **vals);
void mlrti_comm_gather_free(mlrt_comm *c, char **vals);

/* Transport set-up, called by mlrti_comm_create.  peers[i] is nonzero
 * for each rank this transport must link to; each fills c->links[i]. */
int mlrti_tcp_open(mlrt_comm *c, const int *peers);
/* The end of a collective over tcp: acknowledges to each peer the lent
 * payloads received from it, and waits until every peer this rank lent
 * payload to has acknowledged it, so that the caller may write its buffers
 * again.  Nothing to do (and no message) when nothing was lent. */
int mlrti_tcp_settle(mlrt_comm *c);
int mlrti_shm_open(mlrt_comm *c, const int *peers);
extern const mlrti_transport_ops mlrti_tcp_ops;
extern const mlrti_transport_ops mlrti_shm_ops;
int mlrti_ofi_open(mlrt_comm *c, const int *peers);
extern const mlrti_transport_ops mlrti_ofi_ops;

/* ---- point to point (comm/p2p.c) ---- */

/* One step of an algorithm: send to `to` while receiving from `from`;
 * to or from may be -1 (no send, no receive).  Received bytes go to rbuf,
 * or to on_piece when rbuf is NULL.  Bounded by the communicator's
 * timeout; on failure the communicator is marked failed. */
typedef struct mlrti_xfer {
	int to;
	const void *sbuf;
	size_t slen;
	int from;
	void *rbuf;
	size_t rlen;
	mlrti_piece_fn on_piece;
	void *arg;
	size_t elem_size;
	/* The caller leaves sbuf's bytes as they are until the collective
	 * ends, or until the receiver has provably consumed them (it sent
	 * something that depends on them), so a transport may send them by
	 * reference instead of copying them (tcp, see mlrti_tcp_settle). */
	int lend;
} mlrti_xfer;

int mlrti_exchange(mlrt_comm *c, const mlrti_xfer *x);

/* Waiting where there is no file descriptor to sleep on (shared memory):
 * each call is one idle round, spinning at first, then yielding the CPU,
 * then sleeping in growing steps (a peer that late is not running: more
 * ranks than CPUs).  Start from {0} again after progress. */
typedef struct mlrti_idle {
	int spins;
	int sleep_us;
	int64_t since_us;
} mlrti_idle;

void mlrti_idle_step(mlrti_idle *w);

/* A collective waited the communicator's timeout for rank peer (doing:
 * "send to", "receive from", ...): log it with the ranks that never
 * reached this collective, fail the communicator, return MLRT_ERR_TIMEOUT. */
int mlrti_timed_out(mlrt_comm *c, int peer, const char *doing);

#endif
