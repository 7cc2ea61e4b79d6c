/* The store client: one ZMQ_DEALER socket per handle, one request at a
 * time, every call bounded by the request timeout.  See docs/store.md. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include <mlrt/store.h>

#include "runtime/common.h"
#include "runtime/store_proto.h"

#define DEFAULT_TIMEOUT_MS 30000

struct mlrt_store {
	void *sock;
	char *addr;
	uint64_t next_id;
	int timeout_ms;
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
	int64_t maxmsg = (int64_t)MLRTI_STORE_MAX_REPLY;
	int zero = 0;

	if (st->sock != NULL)
		zmq_close(st->sock);
	st->sock = zmq_socket(client_ctx, ZMQ_DEALER);
	if (st->sock == NULL) {
		mlrt_log(MLRT_LOG_ERROR, "store: cannot create a socket for %s: %s", st->addr,
		         zmq_strerror(errno));
		return MLRT_ERR_IO;
	}
	if (zmq_setsockopt(st->sock, ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
	    zmq_setsockopt(st->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) != 0 ||
	    zmq_connect(st->sock, st->addr) != 0) {
		int err = errno;

		mlrt_log(MLRT_LOG_ERROR, "store: cannot connect to %s: %s", st->addr,
		         zmq_strerror(err));
		zmq_close(st->sock);
		st->sock = NULL;
		return err == EINVAL || err == EPROTONOSUPPORT || err == ENOCOMPATPROTO ?
		               MLRT_ERR_INVALID : MLRT_ERR_IO;
	}
	return MLRT_OK;
}

int mlrt_store_open(const char *addr, mlrt_store **out)
{
	mlrt_store *st = NULL;
	int64_t tmo;
	int rc;

	if (out == NULL)
		return MLRT_ERR_INVALID;
	*out = NULL;
	if (addr == NULL || *addr == '\0')
		return MLRT_ERR_INVALID;
	MLRTI_CHECK_GOTO(mlrti_env_int("MLRT_STORE_TIMEOUT_MS", 1, INT_MAX / 2, DEFAULT_TIMEOUT_MS,
	                               &tmo), rc, fail);
	pthread_once(&ctx_once, ctx_init);
	rc = MLRT_ERR_IO;
	if (client_ctx == NULL) {
		mlrt_log(MLRT_LOG_ERROR, "store: cannot create a ZeroMQ context: %s",
		         zmq_strerror(errno));
		goto fail;
	}
	rc = MLRT_ERR_NOMEM;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		goto fail;
	st->addr = mlrti_strdup(addr);
	if (st->addr == NULL)
		goto fail;
	st->timeout_ms = (int)tmo;
	st->next_id = 1;
	MLRTI_CHECK_GOTO(sock_open(st), rc, fail);
	*out = st;
	return MLRT_OK;
fail:
	mlrt_store_close(st);
	return rc;
}

void mlrt_store_close(mlrt_store *st)
{
	if (st == NULL)
		return;
	if (st->sock != NULL)
		zmq_close(st->sock); /* LINGER 0: drops what is queued, does not block */
	free(st->addr);
	free(st);
}

int mlrt_store_set_timeout(mlrt_store *st, int timeout_ms)
{
	if (st == NULL || timeout_ms <= 0 || timeout_ms > INT_MAX / 2)
		return MLRT_ERR_INVALID;
	st->timeout_ms = timeout_ms;
	return MLRT_OK;
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
	zmq_pollitem_t item = {.socket = st->sock, .events = ZMQ_POLLOUT};
	zmq_msg_t m;
	void *buf = NULL;
	size_t len = 0;
	int rc;

	MLRTI_CHECK_GOTO(mlrti_store_encode_request(req, &buf, &len), rc, fail);
	rc = MLRT_ERR_NOMEM;
	if (zmq_msg_init_data(&m, buf, len, free_frame, NULL) != 0)
		goto fail;
	buf = NULL; /* the frame owns it now */
	while (zmq_msg_send(&m, st->sock, ZMQ_DONTWAIT) < 0) {
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
	zmq_pollitem_t item;
	int64_t bound = st->timeout_ms + extra_ms;
	int64_t deadline = mlrti_now_ms() + bound;
	const char *op = mlrti_store_op_name(req->op);
	int rc;

	req->id = st->next_id++;
	rc = call_send(st, req, deadline);
	if (rc != MLRT_OK)
		goto fail;
	for (;;) {
		int64_t left = deadline - mlrti_now_ms();

		rc = MLRT_ERR_UNAVAILABLE;
		if (left <= 0)
			goto fail;
		item = (zmq_pollitem_t){.socket = st->sock, .events = ZMQ_POLLIN};
		if (zmq_poll(&item, 1, (long)left) < 0 && errno != EINTR) {
			rc = MLRT_ERR_IO;
			goto fail;
		}
		if (!(item.revents & ZMQ_POLLIN))
			continue;
		mlrti_store_rep_fini(&c->rep);
		zmq_msg_close(&c->msg);
		zmq_msg_init(&c->msg);
		if (zmq_msg_recv(&c->msg, st->sock, ZMQ_DONTWAIT) < 0)
			continue;
		if (zmq_msg_more(&c->msg)) {
			/* Not ours to read: replies are single frames.  Drop the rest. */
			mlrt_log(MLRT_LOG_WARN, "store: multi-part reply from %s dropped",
			         st->addr);
			while (zmq_msg_more(&c->msg) && zmq_msg_recv(&c->msg, st->sock, 0) >= 0)
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

/* ---- argument checks ---- */

/* Check key (non-empty unless allow_empty, at most MLRT_STORE_MAX_KEY
 * bytes) and make the wire view of it. */
static int check_key(const char *key, int allow_empty, mlrti_store_str *out)
{
	size_t n;

	if (key == NULL)
		return MLRT_ERR_INVALID;
	n = strnlen(key, (size_t)MLRT_STORE_MAX_KEY + 1);
	if (n > MLRT_STORE_MAX_KEY) {
		mlrt_log(MLRT_LOG_ERROR, "store: key '%.40s...' longer than %d bytes", key,
		         MLRT_STORE_MAX_KEY);
		return MLRT_ERR_TOO_LARGE;
	}
	if (n == 0 && !allow_empty)
		return MLRT_ERR_INVALID;
	out->ptr = key;
	out->len = n;
	return MLRT_OK;
}

/* Check a value argument. */
static int check_val(const void *val, size_t len, mlrti_store_bytes *out)
{
	if (val == NULL && len > 0)
		return MLRT_ERR_INVALID;
	if (len > MLRT_STORE_MAX_VALUE) {
		mlrt_log(MLRT_LOG_ERROR, "store: a %zu-byte value is over the %u-byte limit", len,
		         MLRT_STORE_MAX_VALUE);
		return MLRT_ERR_TOO_LARGE;
	}
	out->ptr = val;
	out->len = len;
	return MLRT_OK;
}

/* A malloc'd, NUL-terminated copy of v. */
static int copy_val(mlrti_store_bytes v, void **out)
{
	char *p = malloc(v.len + 1);

	if (p == NULL)
		return MLRT_ERR_NOMEM;
	if (v.len > 0)
		memcpy(p, v.ptr, v.len);
	p[v.len] = '\0';
	*out = p;
	return MLRT_OK;
}

/* A reply that lacks a field its op promises. */
static int missing(const mlrt_store *st, const char *op, const char *field)
{
	mlrt_log(MLRT_LOG_WARN, "store: reply from %s to %s lacks '%s'", st->addr, op, field);
	return MLRT_ERR_PROTOCOL;
}

/* ---- operations ---- */

/* set and set_leased (lease 0: none). */
static int store_set(mlrt_store *st, const char *key, const void *val, size_t len, int64_t lease)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_SET, .lease = lease};
	struct call c;
	int rc;

	call_init(&c);
	rc = MLRT_ERR_INVALID;
	if (st == NULL)
		goto fail;
	MLRTI_CHECK_GOTO(check_key(key, 0, &req.key), rc, fail);
	MLRTI_CHECK_GOTO(check_val(val, len, &req.val), rc, fail);
	MLRTI_CHECK_GOTO(call(st, &req, 0, &c), rc, fail);
fail:
	call_fini(&c);
	return rc;
}

int mlrt_store_set(mlrt_store *st, const char *key, const void *val, size_t len)
{
	return store_set(st, key, val, len, 0);
}

int mlrt_store_set_leased(mlrt_store *st, const char *key, const void *val, size_t len,
                          int64_t lease)
{
	if (lease <= 0)
		return MLRT_ERR_INVALID;
	return store_set(st, key, val, len, lease);
}

int mlrt_store_get(mlrt_store *st, const char *key, void **val, size_t *len)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_GET};
	struct call c;
	int rc;

	call_init(&c);
	rc = MLRT_ERR_INVALID;
	if (st == NULL || val == NULL || len == NULL)
		goto fail;
	MLRTI_CHECK_GOTO(check_key(key, 0, &req.key), rc, fail);
	MLRTI_CHECK_GOTO(call(st, &req, 0, &c), rc, fail);
	if (!c.rep.has_val) {
		rc = missing(st, "get", "val");
		goto fail;
	}
	MLRTI_CHECK_GOTO(copy_val(c.rep.val, val), rc, fail);
	*len = c.rep.val.len;
fail:
	call_fini(&c);
	return rc;
}

/* wait and wait_any; *which gets the index for wait_any. */
static int store_wait(mlrt_store *st, mlrti_store_op op, const char *const *keys, size_t nkeys,
                      int timeout_ms, size_t *which)
{
	mlrti_store_req req = {.op = op};
	mlrti_store_str *views = NULL;
	struct call c;
	int rc;

	call_init(&c);
	rc = MLRT_ERR_INVALID;
	if (st == NULL || keys == NULL || nkeys == 0)
		goto fail;
	rc = MLRT_ERR_TOO_LARGE;
	if (nkeys > MLRTI_STORE_MAX_WAIT_KEYS)
		goto fail;
	rc = MLRT_ERR_NOMEM;
	views = calloc(nkeys, sizeof(*views));
	if (views == NULL)
		goto fail;
	for (size_t i = 0; i < nkeys; i++)
		MLRTI_CHECK_GOTO(check_key(keys[i], 0, &views[i]), rc, fail);
	req.keys = views;
	req.nkeys = nkeys;
	req.timeout_ms = timeout_ms < 0 ? st->timeout_ms : timeout_ms;
	MLRTI_CHECK_GOTO(call(st, &req, req.timeout_ms, &c), rc, fail);
	if (op == MLRTI_STORE_OP_WAIT_ANY) {
		if (!c.rep.has_n || c.rep.n < 0 || (uint64_t)c.rep.n >= nkeys) {
			rc = missing(st, "wait_any", "n");
			goto fail;
		}
		if (which != NULL)
			*which = (size_t)c.rep.n;
	}
fail:
	free(views);
	call_fini(&c);
	return rc;
}

int mlrt_store_wait(mlrt_store *st, const char *const *keys, size_t nkeys, int timeout_ms)
{
	return store_wait(st, MLRTI_STORE_OP_WAIT, keys, nkeys, timeout_ms, NULL);
}

int mlrt_store_wait_any(mlrt_store *st, const char *const *keys, size_t nkeys, int timeout_ms,
                        size_t *which)
{
	return store_wait(st, MLRTI_STORE_OP_WAIT_ANY, keys, nkeys, timeout_ms, which);
}

int mlrt_store_add(mlrt_store *st, const char *key, int64_t delta, int64_t *result)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_ADD, .delta = delta};
	struct call c;
	int rc;

	call_init(&c);
	rc = MLRT_ERR_INVALID;
	if (st == NULL)
		goto fail;
	MLRTI_CHECK_GOTO(check_key(key, 0, &req.key), rc, fail);
	MLRTI_CHECK_GOTO(call(st, &req, 0, &c), rc, fail);
	if (!c.rep.has_n) {
		rc = missing(st, "add", "n");
		goto fail;
	}
	if (result != NULL)
		*result = c.rep.n;
fail:
	call_fini(&c);
	return rc;
}

int mlrt_store_cas(mlrt_store *st, const char *key, const void *expected, size_t elen,
                   const void *desired, size_t dlen, int *swapped, void **cur, size_t *curlen)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_CAS, .has_exp = expected != NULL};
	struct call c;
	int rc;

	call_init(&c);
	if (cur != NULL)
		*cur = NULL;
	if (curlen != NULL)
		*curlen = 0;
	rc = MLRT_ERR_INVALID;
	if (st == NULL || (expected == NULL && elen > 0) || (cur != NULL && curlen == NULL))
		goto fail;
	MLRTI_CHECK_GOTO(check_key(key, 0, &req.key), rc, fail);
	if (expected != NULL)
		MLRTI_CHECK_GOTO(check_val(expected, elen, &req.exp), rc, fail);
	MLRTI_CHECK_GOTO(check_val(desired, dlen, &req.val), rc, fail);
	MLRTI_CHECK_GOTO(call(st, &req, 0, &c), rc, fail);
	if (!c.rep.has_n) {
		rc = missing(st, "cas", "n");
		goto fail;
	}
	if (swapped != NULL)
		*swapped = c.rep.n != 0;
	if (cur != NULL && c.rep.has_val) {
		MLRTI_CHECK_GOTO(copy_val(c.rep.val, cur), rc, fail);
		*curlen = c.rep.val.len;
	}
fail:
	call_fini(&c);
	return rc;
}

int mlrt_store_delete(mlrt_store *st, const char *key)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_DEL};
	struct call c;
	int rc;

	call_init(&c);
	rc = MLRT_ERR_INVALID;
	if (st == NULL)
		goto fail;
	MLRTI_CHECK_GOTO(check_key(key, 0, &req.key), rc, fail);
	MLRTI_CHECK_GOTO(call(st, &req, 0, &c), rc, fail);
fail:
	call_fini(&c);
	return rc;
}

int mlrt_store_delete_prefix(mlrt_store *st, const char *prefix, size_t *count)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_DEL_PREFIX};
	struct call c;
	int rc;

	call_init(&c);
	rc = MLRT_ERR_INVALID;
	if (st == NULL)
		goto fail;
	MLRTI_CHECK_GOTO(check_key(prefix, 1, &req.key), rc, fail);
	MLRTI_CHECK_GOTO(call(st, &req, 0, &c), rc, fail);
	if (!c.rep.has_n || c.rep.n < 0) {
		rc = missing(st, "del_prefix", "n");
		goto fail;
	}
	if (count != NULL)
		*count = (size_t)c.rep.n;
fail:
	call_fini(&c);
	return rc;
}

int mlrt_store_list(mlrt_store *st, const char *prefix, mlrt_store_kv **items, size_t *count)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_LIST};
	mlrt_store_kv *kv = NULL;
	size_t n = 0;
	struct call c;
	int rc;

	call_init(&c);
	rc = MLRT_ERR_INVALID;
	if (st == NULL || items == NULL || count == NULL)
		goto fail;
	*items = NULL;
	*count = 0;
	MLRTI_CHECK_GOTO(check_key(prefix, 1, &req.key), rc, fail);
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
		mlrti_store_bytes k = {c.rep.items[n].key.ptr, c.rep.items[n].key.len};
		void *key = NULL;

		MLRTI_CHECK_GOTO(copy_val(k, &key), rc, fail);
		rc = copy_val(c.rep.items[n].val, &kv[n].val);
		if (rc != MLRT_OK) {
			free(key);
			goto fail;
		}
		kv[n].key = key;
		kv[n].len = c.rep.items[n].val.len;
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

void mlrt_store_kv_free(mlrt_store_kv *items, size_t count)
{
	if (items == NULL)
		return;
	for (size_t i = 0; i < count; i++) {
		free(items[i].key);
		free(items[i].val);
	}
	free(items);
}

int mlrt_store_lease_grant(mlrt_store *st, int ttl_ms, int64_t *lease)
{
	mlrti_store_req req = {.op = MLRTI_STORE_OP_LEASE_GRANT, .ttl_ms = ttl_ms};
	struct call c;
	int rc;

	call_init(&c);
	rc = MLRT_ERR_INVALID;
	if (st == NULL || ttl_ms <= 0 || lease == NULL)
		goto fail;
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

/* lease_renew and lease_revoke. */
static int store_lease_op(mlrt_store *st, mlrti_store_op op, int64_t lease)
{
	mlrti_store_req req = {.op = op, .lease = lease};
	struct call c;
	int rc;

	call_init(&c);
	rc = MLRT_ERR_INVALID;
	if (st == NULL || lease <= 0)
		goto fail;
	MLRTI_CHECK_GOTO(call(st, &req, 0, &c), rc, fail);
fail:
	call_fini(&c);
	return rc;
}

int mlrt_store_lease_renew(mlrt_store *st, int64_t lease)
{
	return store_lease_op(st, MLRTI_STORE_OP_LEASE_RENEW, lease);
}

int mlrt_store_lease_revoke(mlrt_store *st, int64_t lease)
{
	return store_lease_op(st, MLRTI_STORE_OP_LEASE_REVOKE, lease);
}
