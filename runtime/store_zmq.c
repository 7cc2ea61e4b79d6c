/* The store client's ZeroMQ backend: talks to mlrt's own store server
 * (runtime/store_server.c).  One ZMQ_DEALER socket per handle, one request
 * at a time, every call bounded by the request timeout.  See
 * docs/store.md and runtime/store_client.h. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "runtime/common.h"
#include "runtime/store_client.h"
#include "runtime/store_proto.h"

/* The backend's state. */
struct zmq_be {
	void *sock;
	uint64_t next_id;
};

/* One ZeroMQ context for every client of the process, made on first use
 * and kept to the end (its I/O thread serves all handles). */
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;
static void *client_ctx;

/* pthread_once routine: make the shared context (NULL on failure). */
static void ctx_init(void)
{
	client_ctx = zmq_ctx_new();
}

/* A reply received for a call: the frame and the decoded view into it. */
struct call {
	zmq_msg_t msg;
	mlrti_store_rep rep;
};

/* ---- the connection ---- */

/* (Re)create st's socket and connect it.  After a timeout the old socket
 * is dropped with whatever it still queues, so that a late request is not
 * sent once the store comes back, and a late reply is not read. */
static int sock_open(mlrt_store *st)
{
	struct zmq_be *z = st->be;
	int64_t maxmsg = (int64_t)MLRTI_STORE_MAX_REPLY;
	int zero = 0;

	if (z->sock != NULL)
		zmq_close(z->sock);
	z->sock = zmq_socket(client_ctx, ZMQ_DEALER);
	if (z->sock == NULL) {
		mlrt_log(MLRT_LOG_ERROR, "store: cannot create a socket for %s: %s", st->addr,
		         zmq_strerror(errno));
		return MLRT_ERR_IO;
	}
	if (zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
	    zmq_setsockopt(z->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) != 0 ||
	    zmq_connect(z->sock, st->addr) != 0) {
		int err = errno;

		mlrt_log(MLRT_LOG_ERROR, "store: cannot connect to %s: %s", st->addr,
		         zmq_strerror(err));
		zmq_close(z->sock);
		z->sock = NULL;
		return err == EINVAL || err == EPROTONOSUPPORT || err == ENOCOMPATPROTO ?
		               MLRT_ERR_INVALID : MLRT_ERR_IO;
	}
	return MLRT_OK;
}

static int zbe_open(mlrt_store *st)
{
	struct zmq_be *z;

	pthread_once(&ctx_once, ctx_init);
	if (client_ctx == NULL) {
		mlrt_log(MLRT_LOG_ERROR, "store: cannot create a ZeroMQ context: %s",
		         zmq_strerror(errno));
		return MLRT_ERR_IO;
	}
	z = calloc(1, sizeof(*z));
	if (z == NULL)
		return MLRT_ERR_NOMEM;
	z->next_id = 1;
	st->be = z;
	return sock_open(st);
}

static void zbe_close(mlrt_store *st)
{
	struct zmq_be *z = st->be;

	if (z == NULL)
		return;
	if (z->sock != NULL)
		zmq_close(z->sock); /* LINGER 0: drops what is queued, does not block */
	free(z);
	st->be = NULL;
}

/* ---- one request, one reply ---- */

/* Prepare c for call(); call_fini releases it. */
static void call_init(struct call *c)
{
	zmq_msg_init(&c->msg);
	memset(&c->rep, 0, sizeof(c->rep));
}

/* Release the reply frame and its decoded view. */
static void call_fini(struct call *c)
{
	mlrti_store_rep_fini(&c->rep);
	zmq_msg_close(&c->msg);
}

/* Free callback for zero-copy frames. */
static void free_frame(void *data, void *hint)
{
	(void)hint;
	free(data);
}

/* Send req on st's socket before deadline.  The frame takes the encoded
 * buffer without a copy. */
static int call_send(mlrt_store *st, const mlrti_store_req *req, int64_t deadline)
{
	struct zmq_be *z = st->be;
	zmq_pollitem_t item = {.socket = z->sock, .events = ZMQ_POLLOUT};
	zmq_msg_t m;
	void *buf = NULL;
	size_t len = 0;
	int rc;

	MLRTI_CHECK_GOTO(mlrti_store_encode_request(req, &buf, &len), rc, fail);
	rc = MLRT_ERR_NOMEM;
	if (zmq_msg_init_data(&m, buf, len, free_frame, NULL) != 0)
		goto fail;
	buf = NULL; /* the frame owns it now */
	while (zmq_msg_send(&m, z->sock, ZMQ_DONTWAIT) < 0) {
		int64_t left = deadline - mlrti_now_ms();

		if (errno != EAGAIN && errno != EINTR) {
			mlrt_log(MLRT_LOG_ERROR, "store: cannot send to %s: %s", st->addr,
			         zmq_strerror(errno));
			zmq_msg_close(&m);
			rc = MLRT_ERR_IO;
			goto fail;
		}
		if (left <= 0) {
			zmq_msg_close(&m);
			rc = MLRT_ERR_UNAVAILABLE;
			goto fail;
		}
		(void)zmq_poll(&item, 1, (long)left);
	}
	return MLRT_OK;
fail:
	free(buf);
	return rc;
}

/* Send req and wait for its reply until the request timeout plus extra_ms.
 * On MLRT_OK, c->rep holds a reply with status MLRT_OK; a reply with an
 * error status returns that status.  Call call_fini afterwards either way. */
static int call(mlrt_store *st, mlrti_store_req *req, int64_t extra_ms, struct call *c)
{
	struct zmq_be *z = st->be;
	zmq_pollitem_t item;
	int64_t bound = st->timeout_ms + extra_ms;
	int64_t deadline = mlrti_now_ms() + bound;
	const char *op = mlrti_store_op_name(req->op);
	int rc;

	req->id = z->next_id++;
	rc = call_send(st, req, deadline);
	if (rc != MLRT_OK)
		goto fail;
	for (;;) {
		int64_t left = deadline - mlrti_now_ms();

		rc = MLRT_ERR_UNAVAILABLE;
		if (left <= 0)
			goto fail;
		item = (zmq_pollitem_t){.socket = z->sock, .events = ZMQ_POLLIN};
		if (zmq_poll(&item, 1, (long)left) < 0 && errno != EINTR) {
			rc = MLRT_ERR_IO;
			goto fail;
		}
		if (!(item.revents & ZMQ_POLLIN))
			continue;
		mlrti_store_rep_fini(&c->rep);
		zmq_msg_close(&c->msg);
		zmq_msg_init(&c->msg);
		if (zmq_msg_recv(&c->msg, z->sock, ZMQ_DONTWAIT) < 0)
			continue;
		if (zmq_msg_more(&c->msg)) {
			/* Not ours to read: replies are single frames.  Drop the rest. */
			mlrt_log(MLRT_LOG_WARN, "store: multi-part reply from %s dropped",
			         st->addr);
			while (zmq_msg_more(&c->msg) && zmq_msg_recv(&c->msg, z->sock, 0) >= 0)
				;
			continue;
		}
		rc = mlrti_store_decode_reply(zmq_msg_data(&c->msg), zmq_msg_size(&c->msg),
		                              &c->rep);
		if (c->rep.has_id && c->rep.id != req->id) {
			/* A reply to an earlier request that we gave up on. */
			mlrt_log(MLRT_LOG_DEBUG, "store: stale reply %llu from %s dropped",
			         (unsigned long long)c->rep.id, st->addr);
			continue;
		}
		if (rc != MLRT_OK) {
			mlrt_log(MLRT_LOG_WARN, "store: bad reply from %s to %s: %s", st->addr, op,
			         c->rep.why);
			if (!c->rep.has_id)
				continue;
			goto fail;
		}
		rc = c->rep.st;
		if (rc == MLRT_ERR_PROTOCOL || rc == MLRT_ERR_VERSION || rc == MLRT_ERR_INTERNAL)
			mlrt_log(MLRT_LOG_WARN, "store: %s refused %s: %.*s (%s)", st->addr, op,
			         (int)(c->rep.err.len > 200 ? 200 : c->rep.err.len),
			         c->rep.err.len > 0 ? c->rep.err.ptr : "", mlrt_strerror(rc));
		return rc;
	}
fail:
	if (rc == MLRT_ERR_UNAVAILABLE) {
		mlrt_log(MLRT_LOG_WARN,
		         "store: no reply from %s to %s within %lld ms; is the store running "
		         "and reachable?", st->addr, op, (long long)bound);
		/* A fresh socket: nothing of this request may arrive late. */
		if (sock_open(st) != MLRT_OK)
			mlrt_log(MLRT_LOG_ERROR, "store: cannot reconnect to %s", st->addr);
	}
	return rc;
}

/* A reply that lacks a field its op promises. */
static int missing(const mlrt_store *st, const char *op, const char *field)
{
	mlrt_log(MLRT_LOG_WARN, "store: reply from %s to %s lacks '%s'", st->addr, op, field);
	return MLRT_ERR_PROTOCOL;
}

/* One request whose reply needs nothing but its status. */
static int call_simple(mlrt_store *st, mlrti_store_req *req)
{
	struct call c;
	int rc;

	call_init(&c);
	rc = call(st, req, 0, &c);
	call_fini(&c);
	return rc;
}

/* ---- operations ---- */

static int zbe_set(mlrt_store *st, mlrti_store_str key, mlrti_store_bytes val, int64_t lease)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_SET, .key = key, .val = val, .lease = lease};

	return call_simple(st, &req);
}

static int zbe_get(mlrt_store *st, mlrti_store_str key, void **val, size_t *len)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_GET, .key = key};
	struct call c;
	int rc;

	call_init(&c);
	MLRTI_CHECK_GOTO(call(st, &req, 0, &c), rc, fail);
	if (!c.rep.has_val) {
		rc = missing(st, "get", "val");
		goto fail;
	}
	MLRTI_CHECK_GOTO(mlrti_store_copy(c.rep.val.ptr, c.rep.val.len, val), rc, fail);
	*len = c.rep.val.len;
fail:
	call_fini(&c);
	return rc;
}

static int zbe_wait(mlrt_store *st, const mlrti_store_str *keys, size_t nkeys, int timeout_ms,
                    int any, size_t *which)
{
	mlrti_store_req req = {.op = any ? MLRTI_STORE_OP_WAIT_ANY : MLRTI_STORE_OP_WAIT,
	                       .keys = keys, .nkeys = nkeys, .timeout_ms = timeout_ms};
	struct call c;
	int rc;

	call_init(&c);
	MLRTI_CHECK_GOTO(call(st, &req, req.timeout_ms, &c), rc, fail);
	if (any) {
		if (!c.rep.has_n || c.rep.n < 0 || (uint64_t)c.rep.n >= nkeys) {
			rc = missing(st, "wait_any", "n");
			goto fail;
		}
		*which = (size_t)c.rep.n;
	}
fail:
	call_fini(&c);
	return rc;
}

static int zbe_add(mlrt_store *st, mlrti_store_str key, int64_t delta, int64_t *result)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_ADD, .key = key, .delta = delta};
	struct call c;
	int rc;

	call_init(&c);
	MLRTI_CHECK_GOTO(call(st, &req, 0, &c), rc, fail);
	if (!c.rep.has_n) {
		rc = missing(st, "add", "n");
		goto fail;
	}
	*result = c.rep.n;
fail:
	call_fini(&c);
	return rc;
}

static int zbe_cas(mlrt_store *st, mlrti_store_str key, const mlrti_store_bytes *exp,
                   mlrti_store_bytes val, int *swapped, void **cur, size_t *curlen)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_CAS, .key = key, .val = val,
	                       .has_exp = exp != NULL};
	struct call c;
	int rc;

	if (exp != NULL)
		req.exp = *exp;
	call_init(&c);
	MLRTI_CHECK_GOTO(call(st, &req, 0, &c), rc, fail);
	if (!c.rep.has_n) {
		rc = missing(st, "cas", "n");
		goto fail;
	}
	*swapped = c.rep.n != 0;
	if (cur != NULL && c.rep.has_val) {
		MLRTI_CHECK_GOTO(mlrti_store_copy(c.rep.val.ptr, c.rep.val.len, cur), rc, fail);
		*curlen = c.rep.val.len;
	}
fail:
	call_fini(&c);
	return rc;
}

static int zbe_del(mlrt_store *st, mlrti_store_str key)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_DEL, .key = key};

	return call_simple(st, &req);
}

static int zbe_del_prefix(mlrt_store *st, mlrti_store_str prefix, size_t *count)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_DEL_PREFIX, .key = prefix};
	struct call c;
	int rc;

	call_init(&c);
	MLRTI_CHECK_GOTO(call(st, &req, 0, &c), rc, fail);
	if (!c.rep.has_n || c.rep.n < 0) {
		rc = missing(st, "del_prefix", "n");
		goto fail;
	}
	*count = (size_t)c.rep.n;
fail:
	call_fini(&c);
	return rc;
}

static int zbe_list(mlrt_store *st, mlrti_store_str prefix, mlrt_store_kv **items,
                    size_t *count)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_LIST, .key = prefix};
	mlrt_store_kv *kv = NULL;
	size_t n = 0;
	struct call c;
	int rc;

	call_init(&c);
	MLRTI_CHECK_GOTO(call(st, &req, 0, &c), rc, fail);
	if (!c.rep.has_items) {
		rc = missing(st, "list", "items");
		goto fail;
	}
	if (c.rep.nitems > 0) {
		rc = MLRT_ERR_NOMEM;
		kv = calloc(c.rep.nitems, sizeof(*kv));
		if (kv == NULL)
			goto fail;
	}
	for (; n < c.rep.nitems; n++) {
		const mlrti_store_item *it = &c.rep.items[n];
		void *k = NULL;

		MLRTI_CHECK_GOTO(mlrti_store_copy(it->key.ptr, it->key.len, &k), rc, fail);
		rc = mlrti_store_copy(it->val.ptr, it->val.len, &kv[n].val);
		if (rc != MLRT_OK) {
			free(k);
			goto fail;
		}
		kv[n].key = k;
		kv[n].len = it->val.len;
	}
	*items = kv;
	*count = n;
	call_fini(&c);
	return MLRT_OK;
fail:
	mlrt_store_kv_free(kv, n);
	call_fini(&c);
	return rc;
}

static int zbe_lease_grant(mlrt_store *st, int ttl_ms, int64_t *lease)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_LEASE_GRANT, .ttl_ms = ttl_ms};
	struct call c;
	int rc;

	call_init(&c);
	MLRTI_CHECK_GOTO(call(st, &req, 0, &c), rc, fail);
	if (!c.rep.has_n || c.rep.n <= 0) {
		rc = missing(st, "lease_grant", "n");
		goto fail;
	}
	*lease = c.rep.n;
fail:
	call_fini(&c);
	return rc;
}

static int zbe_lease_renew(mlrt_store *st, int64_t lease)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_LEASE_RENEW, .lease = lease};

	return call_simple(st, &req);
}

static int zbe_lease_revoke(mlrt_store *st, int64_t lease)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_LEASE_REVOKE, .lease = lease};

	return call_simple(st, &req);
}

const struct mlrti_store_ops mlrti_store_zmq_ops = {
	.name = "zmq",
	.open = zbe_open,
	.close = zbe_close,
	.set = zbe_set,
	.get = zbe_get,
	.wait = zbe_wait,
	.add = zbe_add,
	.cas = zbe_cas,
	.del = zbe_del,
	.del_prefix = zbe_del_prefix,
	.list = zbe_list,
	.lease_grant = zbe_lease_grant,
	.lease_renew = zbe_lease_renew,
	.lease_revoke = zbe_lease_revoke,
};
