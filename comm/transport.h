/* The point-to-point layer that collective algorithms are written on.
 * Not installed.
 *
 * A transport moves bytes between this rank and one peer over a *link*.
 * Algorithms never see sockets or shared memory: they call
 * mlrti_exchange (comm/p2p.c), which sends one message to a peer while
 * receiving one from a (possibly different) peer, the pattern of every
 * step of a ring or of recursive doubling.  The two directions may run on
 * different transports (shm to the left, tcp to the right): the driver
 * advances both through their transports' nonblocking `progress`.
 *
 * Messages on a link arrive whole and in order.  Both sides know each
 * message's length (collectives are deterministic); every message starts
 * with a header carrying the sender's collective sequence number and the
 * length, so ranks that disagree get an error instead of mixed data.
 *
 * Threads: a link is used by one thread at a time. */
#ifndef MLRT_COMM_TRANSPORT_H
#define MLRT_COMM_TRANSPORT_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mlrti_link mlrti_link;
typedef struct mlrt_comm mlrt_comm;

/* Receivers that consume data where the transport holds it (reduce
 * straight from a socket staging buffer or a shared-memory slot) get it
 * in pieces: len bytes that belong at byte offset off of the message.
 * Pieces arrive in order, each a multiple of the element size. */
typedef void (*mlrti_piece_fn)(void *arg, const void *data, size_t off, size_t len);

/* The header in front of every message. */
typedef struct mlrti_msg_hdr {
	uint32_t magic;
	uint32_t seq; /* the sender's collective number, modulo 2^32 */
	uint64_t len;
} mlrti_msg_hdr;

#define MLRTI_MSG_MAGIC 0x6d6c7274u /* "mlrt" */
/* A message whose payload the sender lent rather than copied (tcp's
 * zero-copy sends): the receiver acknowledges it when the collective ends
 * (mlrti_tcp_settle). */
#define MLRTI_MSG_MAGIC_LENT 0x6d6c726cu /* "mlrl" */

/* One direction of an exchange, advanced by its link's transport. */
typedef struct mlrti_op {
	mlrti_link *link;
	int is_send;
	const void *sbuf;        /* send: the bytes */
	void *rbuf;              /* recv: where they go, or NULL for on_piece */
	size_t len;
	mlrti_piece_fn on_piece; /* recv with rbuf == NULL */
	void *arg;
	size_t elem_size;        /* pieces are multiples of this */
	uint32_t seq;            /* expected / sent sequence number */
	int lend;                /* send: sbuf may go by reference (mlrti_xfer.lend) */
	/* Progress, owned by the transport: */
	mlrti_msg_hdr hdr;
	size_t hdr_done;
	size_t done;
	size_t lent;             /* tcp zero-copy: bytes moved into the link's pipe */
	int complete;
} mlrti_op;

/* A transport's operations (designated initialisers, one table per
 * transport file).  Every member is required. */
typedef struct mlrti_transport_ops {
	const char *name;

	/* Advance op as far as possible without blocking; set op->complete
	 * when the whole message (header and payload) is through.  Errors:
	 * MLRT_ERR_PEER_LOST (the peer closed or died), MLRT_ERR_PROTOCOL
	 * (a header that does not match: ranks disagree on the collective
	 * or its size; the message says which).  Buffers stay the caller's. */
	int (*progress)(mlrt_comm *c, mlrti_op *op);

	/* When op can only wait for a file descriptor, fill pfd (fd and
	 * events) and return 1; return 0 when the transport must be polled
	 * by calling progress again (shared memory). */
	int (*wait_fd)(const mlrti_op *op, struct pollfd *pfd);

	/* Make every link of this transport fail from now on and let the
	 * peers know (close sockets, raise a shared flag).  Never blocks;
	 * safe from any thread. */
	void (*abort)(mlrt_comm *c);

	/* Free the transport's state for c.  Called once, at communicator
	 * destruction, with no exchange in progress. */
	void (*close)(mlrt_comm *c);
} mlrti_transport_ops;

/* A link: one peer, one transport. */
struct mlrti_link {
	const mlrti_transport_ops *ops;
	int peer;    /* rank in the communicator */
	void *state; /* the transport's own */
};

#endif
