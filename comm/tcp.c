/* The tcp transport: one connection per pair of ranks, set up through the
 * store (each rank listens and publishes "<prefix>tcp/<rank>" = "IP:PORT";
 * the higher rank of a pair connects to the lower one), nonblocking I/O
 * with TCP_NODELAY, and a staging buffer per link for receivers that
 * reduce from the transport's memory. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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

typedef struct tcp_link {
	int fd;
	unsigned char *staging; /* STAGING_BYTES, allocated on first use */
	size_t fill;
} tcp_link;

typedef struct tcp_state {
	int listen_fd;
	atomic_int aborted;
	tcp_link *links; /* [size] */
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
		t->links[r].fd = -1;
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

	if (h->magic != MLRTI_MSG_MAGIC)
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

static int progress_send(tcp_link *l, mlrti_op *op)
{
	if (op->hdr_done == 0)
		op->hdr = (mlrti_msg_hdr){.magic = MLRTI_MSG_MAGIC, .seq = op->seq, .len = op->len};
	while (!op->complete) {
		struct iovec iov[2];
		int n = 0;
		ssize_t r;

		if (op->hdr_done < sizeof(op->hdr))
			iov[n++] = (struct iovec){(char *)&op->hdr + op->hdr_done,
			                          sizeof(op->hdr) - op->hdr_done};
		if (op->done < op->len)
			iov[n++] = (struct iovec){(char *)op->sbuf + op->done, op->len - op->done};
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		r = sendmsg(l->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
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
		op->complete = op->done == op->len;
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

static int progress_recv(tcp_link *l, mlrti_op *op)
{
	int rc = MLRT_OK;

	while (op->hdr_done < sizeof(op->hdr)) {
		ssize_t r = read_some(l, op, (char *)&op->hdr + op->hdr_done,
		                      sizeof(op->hdr) - op->hdr_done, &rc);
		if (r <= 0)
			return rc;
		op->hdr_done += (size_t)r;
		if (op->hdr_done == sizeof(op->hdr) &&
		    (op->hdr.magic != MLRTI_MSG_MAGIC || op->hdr.seq != op->seq || op->hdr.len != op->len))
			return bad_header(op);
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
	return op->is_send ? progress_send(l, op) : progress_recv(l, op);
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
		if (t->links[r].fd >= 0)
			close(t->links[r].fd);
		free(t->links[r].staging);
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
