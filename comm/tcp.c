/* The tcp transport: one connection per pair of ranks, set up through the
 * store (each rank listens and publishes "<prefix>tcp/<rank>" = "IP:PORT";
 * the higher rank of a pair connects to the lower one), nonblocking I/O
 * with TCP_NODELAY, and a staging buffer per link for receivers that
 * reduce from the transport's memory.
 *
 * Zero-copy sends.  A payload of at least MLRT_TCP_ZEROCOPY_MIN bytes that
 * the algorithm lends (mlrti_xfer.lend) is not copied into the socket: its
 * pages go into a pipe (vmsplice) and from the pipe into the socket
 * (splice), which saves the kernel's copy on the sending side; on loopback
 * the receiver then copies straight from the sender's pages, one copy in
 * all, as over shared memory.  The pages stay referenced until the receiver
 * has read them, so the bytes must not change until then: the header says
 * the payload is lent, the receiver acknowledges lent payloads when the
 * collective ends, and the sender waits for that before the collective
 * returns (mlrti_tcp_settle). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "comm/comm.h"
#include "runtime/common.h"
#include "runtime/netaddr.h"

#define HELLO_MAGIC 0x6d6c7463u /* "mltc" */
/* Received bytes are handed to on_piece once this many have gathered
 * (or the message ends): big enough to amortise the call, small enough
 * to stay in cache and to overlap with the kernel receiving the rest. */
#define STAGING_BYTES (256 * 1024)
#define DELIVER_BYTES (64 * 1024)
/* Zero-copy sends: the smallest payload lent (below it the copy is
 * cheaper than the acknowledgement; measured in docs/benchmarks.md), and
 * the pipe each link lends through. */
#define ZEROCOPY_MIN_DEFAULT (256 * 1024)
#define PIPE_BYTES (1024 * 1024)

typedef struct tcp_link {
	int fd;
	unsigned char *staging; /* STAGING_BYTES, allocated on first use */
	size_t fill;
	int pipe[2];            /* zero-copy sends; -1 until first used */
	size_t pipe_cap;        /* the pipe's capacity in bytes */
	size_t in_pipe;         /* bytes in the pipe, not yet in the socket */
	int ack_owed;           /* received a lent payload this collective */
	int ack_wanted;         /* lent a payload to this peer this collective */
} tcp_link;

typedef struct tcp_state {
	int listen_fd;
	atomic_int aborted;
	size_t zerocopy_min;    /* SIZE_MAX: no zero-copy sends */
	int unsettled;          /* some link has ack_owed or ack_wanted */
	tcp_link *links;        /* [size] */
} tcp_state;

static const char *addr_str(const struct sockaddr_in *sin, char *buf, size_t cap)
{
	char ip[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
	snprintf(buf, cap, "%s:%d", ip, ntohs(sin->sin_port));
	return buf;
}

/* The IPv4 address to listen on: loopback when every peer is on this host
 * (and MLRT_IFNAME is unset), else the one that reaches the other hosts
 * (netaddr.h: MLRT_IFNAME's, or the route towards the store's host). */
static int choose_address(mlrt_comm *c, const int *peers, struct in_addr *out)
{
	const char *want = getenv("MLRT_IFNAME");
	char host[256], addr[MLRTI_ADDR_MAX];
	int remote = 0, rc;

	for (int r = 0; r < c->size; r++)
		if (peers[r] && strcmp(c->hosts[r], c->hosts[c->rank]) != 0)
			remote = 1;
	if ((want == NULL || *want == '\0') && !remote) {
		out->s_addr = htonl(INADDR_LOOPBACK);
		return MLRT_OK;
	}
	rc = mlrti_reachable_addr(mlrti_endpoint_host(c->store_addr, host, sizeof(host)) == MLRT_OK
	                                  ? host : NULL, addr, sizeof(addr));
	if (rc != MLRT_OK)
		return rc == MLRT_ERR_NOT_FOUND ? MLRT_ERR_INVALID : rc;
	inet_pton(AF_INET, addr, out);
	return MLRT_OK;
}

static void tune_socket(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int listen_on(mlrt_comm *c, tcp_state *t, const int *peers, char *published, size_t cap)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof(sin);
	int rc = choose_address(c, peers, &sin.sin_addr);

	if (rc != MLRT_OK)
		return rc;
	t->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (t->listen_fd < 0 || bind(t->listen_fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(t->listen_fd, c->size) != 0 ||
	    getsockname(t->listen_fd, (struct sockaddr *)&sin, &len) != 0) {
		mlrt_log(MLRT_LOG_ERROR, "tcp: cannot listen on %s: %s",
		         inet_ntoa(sin.sin_addr), strerror(errno));
		return MLRT_ERR_IO;
	}
	addr_str(&sin, published, cap);
	return MLRT_OK;
}

/* Connect to rank r (lower than ours) at its published address val
 * ("IP:PORT", modified here) and say who we are. */
static int connect_to(mlrt_comm *c, tcp_state *t, int r, char *val, int64_t deadline)
{
	char *colon = strrchr(val, ':');
	struct sockaddr_in sin = {.sin_family = AF_INET};
	uint32_t hello[2] = {HELLO_MAGIC, (uint32_t)c->rank};
	int fd = -1;

	if (colon != NULL)
		*colon = '\0';
	if (colon == NULL || inet_pton(AF_INET, val, &sin.sin_addr) != 1) {
		mlrt_log(MLRT_LOG_ERROR, "tcp: rank %d published a malformed address (%stcp/%d)", r,
		         c->prefix, r);
		return MLRT_ERR_PROTOCOL;
	}
	sin.sin_port = htons((uint16_t)atoi(colon + 1));
	for (;;) {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0)
			break;
		if (fd >= 0)
			close(fd);
		fd = -1;
		if (mlrti_now_ms() >= deadline) {
			mlrt_log(MLRT_LOG_ERROR, "tcp: cannot connect to rank %d at %s:%s: %s", r, val,
			         colon + 1, strerror(errno));
			return MLRT_ERR_UNAVAILABLE;
		}
		usleep(20000);
	}
	if (write(fd, hello, sizeof(hello)) != (ssize_t)sizeof(hello)) {
		close(fd);
		return MLRT_ERR_PEER_LOST;
	}
	t->links[r].fd = fd;
	return MLRT_OK;
}

/* Accept the connections of every higher peer; each says who it is. */
static int accept_all(mlrt_comm *c, tcp_state *t, const int *peers, int64_t deadline)
{
	int want = 0;

	for (int r = c->rank + 1; r < c->size; r++)
		want += peers[r] != 0;
	while (want > 0) {
		struct pollfd pfd = {.fd = t->listen_fd, .events = POLLIN};
		uint32_t hello[2];
		int64_t left = deadline - mlrti_now_ms();
		int fd;

		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
			mlrt_log(MLRT_LOG_ERROR, "tcp: %d higher rank(s) never connected to rank %d",
			         want, c->rank);
			return MLRT_ERR_TIMEOUT;
		}
		fd = accept4(t->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		/* The peer writes its hello right after connecting. */
		pfd = (struct pollfd){.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, 5000) <= 0 || read(fd, hello, sizeof(hello)) != sizeof(hello) ||
		    hello[0] != HELLO_MAGIC || hello[1] >= (uint32_t)c->size ||
		    (int)hello[1] <= c->rank || !peers[hello[1]] || t->links[hello[1]].fd >= 0) {
			mlrt_log(MLRT_LOG_WARN, "tcp: dropped a connection with a bad hello");
			close(fd);
			continue;
		}
		t->links[hello[1]].fd = fd;
		want--;
	}
	return MLRT_OK;
}

int mlrti_tcp_open(mlrt_comm *c, const int *peers)
{
	char key[MLRTI_PREFIX_MAX + 32], addr[64];
	int64_t deadline = mlrti_now_ms() + c->timeout_ms;
	tcp_state *t = calloc(1, sizeof(*t));
	int rc;

	if (t == NULL)
		return MLRT_ERR_NOMEM;
	t->listen_fd = -1;
	c->tcp = t;
	t->links = calloc((size_t)c->size, sizeof(*t->links));
	if (t->links == NULL)
		return MLRT_ERR_NOMEM;
	for (int r = 0; r < c->size; r++)
		t->links[r] = (tcp_link){.fd = -1, .pipe = {-1, -1}};
	{
		int64_t min;

		MLRTI_CHECK_GOTO(mlrti_env_int("MLRT_TCP_ZEROCOPY_MIN", 0, INT64_MAX,
		                               ZEROCOPY_MIN_DEFAULT, &min), rc, out);
		t->zerocopy_min = min == 0 ? SIZE_MAX : (size_t)min;
	}
	MLRTI_CHECK_GOTO(listen_on(c, t, peers, addr, sizeof(addr)), rc, out);
	snprintf(key, sizeof(key), "%stcp/%d", c->prefix, c->rank);
	MLRTI_CHECK_GOTO(mlrt_store_set(c->store, key, addr, strlen(addr)), rc, out);
	{
		/* The addresses of the lower peers, which we connect to. */
		int *lower = calloc((size_t)c->size, sizeof(*lower));
		char **addrs = calloc((size_t)c->size, sizeof(*addrs));

		rc = lower == NULL || addrs == NULL ? MLRT_ERR_NOMEM : MLRT_OK;
		for (int r = 0; r < c->rank && rc == MLRT_OK; r++)
			lower[r] = peers[r];
		if (rc == MLRT_OK && c->rank > 0)
			rc = mlrti_comm_gather(c, "tcp", lower, addrs);
		for (int r = 0; r < c->rank && rc == MLRT_OK; r++)
			if (peers[r])
				rc = connect_to(c, t, r, addrs[r], deadline);
		if (addrs != NULL)
			mlrti_comm_gather_free(c, addrs);
		free(addrs);
		free(lower);
		if (rc != MLRT_OK)
			goto out;
	}
	MLRTI_CHECK_GOTO(accept_all(c, t, peers, deadline), rc, out);
	for (int r = 0; r < c->size; r++) {
		if (!peers[r])
			continue;
		tune_socket(t->links[r].fd);
		fcntl(t->links[r].fd, F_SETFL, O_NONBLOCK);
		c->links[r] = (mlrti_link){.ops = &mlrti_tcp_ops, .peer = r, .state = &t->links[r]};
	}
	mlrt_log(MLRT_LOG_DEBUG, "tcp: rank %d listening at %s, links up", c->rank, addr);
out:
	close(t->listen_fd);
	t->listen_fd = -1;
	return rc;
}

/* A header that is not the one expected: ranks disagree. */
static int bad_header(const mlrti_op *op)
{
	const mlrti_msg_hdr *h = &op->hdr;

	if (h->magic != MLRTI_MSG_MAGIC && h->magic != MLRTI_MSG_MAGIC_LENT)
		mlrt_log(MLRT_LOG_ERROR, "comm: garbage from rank %d (bad message magic)",
		         op->link->peer);
	else
		mlrt_log(MLRT_LOG_ERROR,
		         "comm: rank %d sent %llu bytes for collective #%u, but this rank expected %zu "
		         "bytes for collective #%u: the ranks disagree on the collective or its count",
		         op->link->peer, (unsigned long long)h->len, h->seq, op->len, op->seq);
	return MLRT_ERR_PROTOCOL;
}

static int lost(const mlrti_op *op, const char *why)
{
	mlrt_log(MLRT_LOG_ERROR, "comm: lost rank %d (tcp %s: %s)", op->link->peer,
	         op->is_send ? "send" : "receive", why);
	return MLRT_ERR_PEER_LOST;
}

/* Whether op's payload goes by reference: lent by the algorithm, large
 * enough, and this link has its pipe (made here on first use; without one,
 * zero-copy sends are turned off with a warning). */
static int will_lend(tcp_state *t, tcp_link *l, const mlrti_op *op)
{
	if (!op->lend || op->len < t->zerocopy_min)
		return 0;
	if (l->pipe[0] >= 0)
		return 1;
	if (pipe2(l->pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
		mlrt_log(MLRT_LOG_WARN, "tcp: no pipe for zero-copy sends (%s); copying instead",
		         strerror(errno));
		l->pipe[0] = l->pipe[1] = -1;
		t->zerocopy_min = SIZE_MAX;
		return 0;
	}
	/* A bigger pipe means fewer calls; the default (64 KiB) still works. */
	fcntl(l->pipe[1], F_SETPIPE_SZ, PIPE_BYTES);
	l->pipe_cap = (size_t)fcntl(l->pipe[1], F_GETPIPE_SZ);
	return 1;
}

/* The payload of a lent message: the caller's pages into the pipe, the
 * pipe into the socket, as far as both take without blocking. */
static int send_lent(tcp_state *t, tcp_link *l, mlrti_op *op)
{
	sigset_t sigpipe, old;
	int rc = MLRT_OK, broken = 0;

	/* splice has no MSG_NOSIGNAL: keep a peer's death from raising
	 * SIGPIPE, which would kill the program. */
	sigemptyset(&sigpipe);
	sigaddset(&sigpipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &sigpipe, &old);
	while (op->done < op->len && rc == MLRT_OK) {
		ssize_t r;

		if (op->lent < op->len && l->in_pipe < l->pipe_cap) {
			size_t left = op->len - op->lent, room = l->pipe_cap - l->in_pipe;
			struct iovec v = {(char *)op->sbuf + op->lent, left < room ? left : room};

			r = vmsplice(l->pipe[1], &v, 1, SPLICE_F_NONBLOCK);
			if (r > 0) {
				op->lent += (size_t)r;
				l->in_pipe += (size_t)r;
			} else if (r < 0 && errno != EAGAIN && errno != EINTR) {
				mlrt_log(MLRT_LOG_ERROR, "tcp: cannot lend %zu bytes at %p to the pipe: %s",
				         v.iov_len, v.iov_base, strerror(errno));
				rc = MLRT_ERR_IO;
				break;
			}
		}
		if (l->in_pipe == 0)
			continue;
		r = splice(l->pipe[0], NULL, l->fd, NULL, l->in_pipe, SPLICE_F_NONBLOCK);
		if (r > 0) {
			op->done += (size_t)r;
			l->in_pipe -= (size_t)r;
		} else if (r < 0 && errno == EAGAIN) {
			break;
		} else if (r < 0 && errno != EINTR) {
			broken = errno == EPIPE;
			rc = lost(op, strerror(errno));
		}
	}
	if (broken && !sigismember(&old, SIGPIPE))
		sigtimedwait(&sigpipe, NULL, &(struct timespec){0, 0});
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc == MLRT_OK && op->done == op->len) {
		op->complete = 1;
		l->ack_wanted = 1;
		t->unsettled = 1;
	}
	return rc;
}

static int progress_send(tcp_state *t, tcp_link *l, mlrti_op *op)
{
	int lent;

	if (op->hdr_done == 0)
		op->hdr = (mlrti_msg_hdr){
			.magic = will_lend(t, l, op) ? MLRTI_MSG_MAGIC_LENT : MLRTI_MSG_MAGIC,
			.seq = op->seq,
			.len = op->len,
		};
	lent = op->hdr.magic == MLRTI_MSG_MAGIC_LENT;
	while (!op->complete) {
		struct iovec iov[2];
		int n = 0;
		ssize_t r;

		if (lent && op->hdr_done == sizeof(op->hdr))
			return send_lent(t, l, op);
		if (op->hdr_done < sizeof(op->hdr))
			iov[n++] = (struct iovec){(char *)&op->hdr + op->hdr_done,
			                          sizeof(op->hdr) - op->hdr_done};
		if (!lent && op->done < op->len)
			iov[n++] = (struct iovec){(char *)op->sbuf + op->done, op->len - op->done};
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		r = sendmsg(l->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT | (lent ? MSG_MORE : 0));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return MLRT_OK;
			return lost(op, strerror(errno));
		}
		size_t h = sizeof(op->hdr) - op->hdr_done;

		if ((size_t)r < h) {
			op->hdr_done += (size_t)r;
			continue;
		}
		op->hdr_done = sizeof(op->hdr);
		op->done += (size_t)r - h;
		op->complete = !lent && op->done == op->len;
	}
	return MLRT_OK;
}

/* Read into p at most cap bytes: >0 bytes read, 0 would block, <0 error. */
static ssize_t read_some(tcp_link *l, mlrti_op *op, void *p, size_t cap, int *rc)
{
	for (;;) {
		ssize_t r = recv(l->fd, p, cap, MSG_DONTWAIT);

		if (r > 0)
			return r;
		if (r == 0) {
			*rc = lost(op, "connection closed");
			return -1;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		*rc = lost(op, strerror(errno));
		return -1;
	}
}

/* Hand the staged bytes that form whole elements to on_piece. */
static void deliver(tcp_link *l, mlrti_op *op, int final)
{
	size_t whole = l->fill - l->fill % op->elem_size;

	if (whole == 0 || (!final && whole < DELIVER_BYTES && l->fill < STAGING_BYTES))
		return;
	op->on_piece(op->arg, l->staging, op->done - l->fill, whole);
	memmove(l->staging, l->staging + whole, l->fill - whole);
	l->fill -= whole;
}

static int progress_recv(tcp_state *t, tcp_link *l, mlrti_op *op)
{
	int rc = MLRT_OK;

	while (op->hdr_done < sizeof(op->hdr)) {
		ssize_t r = read_some(l, op, (char *)&op->hdr + op->hdr_done,
		                      sizeof(op->hdr) - op->hdr_done, &rc);
		if (r <= 0)
			return rc;
		op->hdr_done += (size_t)r;
		if (op->hdr_done < sizeof(op->hdr))
			continue;
		if ((op->hdr.magic != MLRTI_MSG_MAGIC && op->hdr.magic != MLRTI_MSG_MAGIC_LENT) ||
		    op->hdr.seq != op->seq || op->hdr.len != op->len)
			return bad_header(op);
		if (op->hdr.magic == MLRTI_MSG_MAGIC_LENT) {
			l->ack_owed = 1;
			t->unsettled = 1;
		}
	}
	if (op->rbuf == NULL && l->staging == NULL) {
		l->staging = malloc(STAGING_BYTES);
		if (l->staging == NULL)
			return MLRT_ERR_NOMEM;
		l->fill = 0;
	}
	while (op->done < op->len) {
		ssize_t r;

		if (op->rbuf != NULL) {
			r = read_some(l, op, (char *)op->rbuf + op->done, op->len - op->done, &rc);
		} else {
			size_t room = STAGING_BYTES - l->fill, left = op->len - op->done;

			r = read_some(l, op, l->staging + l->fill, room < left ? room : left, &rc);
			if (r > 0)
				l->fill += (size_t)r;
		}
		if (r <= 0)
			return rc;
		op->done += (size_t)r;
		if (op->rbuf == NULL)
			deliver(l, op, op->done == op->len);
	}
	op->complete = 1;
	return MLRT_OK;
}

static int tcp_progress(mlrt_comm *c, mlrti_op *op)
{
	tcp_state *t = c->tcp;
	tcp_link *l = op->link->state;

	if (atomic_load(&t->aborted))
		return MLRT_ERR_PEER_LOST;
	return op->is_send ? progress_send(t, l, op) : progress_recv(t, l, op);
}

int mlrti_tcp_settle(mlrt_comm *c)
{
	tcp_state *t = c->tcp;
	int rc = MLRT_OK;

	if (t == NULL || !t->unsettled)
		return MLRT_OK;
	t->unsettled = 0;
	/* An acknowledgement is an empty message of this collective.  Each
	 * exchange sends one and receives one; a ring needs just one. */
	while (rc == MLRT_OK) {
		mlrti_xfer x = {.to = -1, .from = -1};

		for (int r = 0; r < c->size; r++) {
			if (x.to < 0 && t->links[r].ack_owed)
				x.to = r;
			if (x.from < 0 && t->links[r].ack_wanted)
				x.from = r;
		}
		if (x.to < 0 && x.from < 0)
			break;
		if (x.to >= 0)
			t->links[x.to].ack_owed = 0;
		if (x.from >= 0)
			t->links[x.from].ack_wanted = 0;
		rc = mlrti_exchange(c, &x);
	}
	return rc;
}

static int tcp_wait_fd(const mlrti_op *op, struct pollfd *pfd)
{
	const tcp_link *l = op->link->state;

	pfd->fd = l->fd;
	pfd->events = op->is_send ? POLLOUT : POLLIN;
	pfd->revents = 0;
	return 1;
}

static void tcp_abort(mlrt_comm *c)
{
	tcp_state *t = c->tcp;

	if (t == NULL)
		return;
	atomic_store(&t->aborted, 1);
	/* shutdown, not close: another thread may be polling these fds, and
	 * the peers see the connection end at once. */
	for (int r = 0; r < c->size; r++)
		if (t->links[r].fd >= 0)
			shutdown(t->links[r].fd, SHUT_RDWR);
}

static void tcp_close(mlrt_comm *c)
{
	tcp_state *t = c->tcp;

	if (t == NULL)
		return;
	for (int r = 0; t->links != NULL && r < c->size; r++) {
		tcp_link *l = &t->links[r];

		if (l->fd >= 0)
			close(l->fd);
		if (l->pipe[0] >= 0) {
			close(l->pipe[0]);
			close(l->pipe[1]);
		}
		free(l->staging);
	}
	if (t->listen_fd >= 0)
		close(t->listen_fd);
	free(t->links);
	free(t);
	c->tcp = NULL;
}

const mlrti_transport_ops mlrti_tcp_ops = {
	.name = "tcp",
	.progress = tcp_progress,
	.wait_fd = tcp_wait_fd,
	.abort = tcp_abort,
	.close = tcp_close,
};
