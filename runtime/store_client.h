/* The store client's backends (internal; see docs/store.md).
 *
 * runtime/store_client.c is the one front door: it implements every public
 * mlrt_store_* function, checks the arguments once, and hands the checked
 * call to the backend that the address picked, through the ops table
 * below:
 *
 *     tcp://HOST:PORT (any ZeroMQ endpoint)  runtime/store_zmq.c
 *         mlrt's own store server (runtime/store_server.c)
 *     etcd://HOST:PORT, http://HOST:PORT     runtime/store_etcd.c
 *         an etcd v3 server through its HTTP/JSON gateway (-Detcd)
 *
 * Every backend gives the semantics and the status codes that
 * include/mlrt/store.h documents.  Threads: like the handle, a backend's
 * state is used by one thread at a time. */
#ifndef MLRT_RUNTIME_STORE_CLIENT_H
#define MLRT_RUNTIME_STORE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <mlrt/store.h>

#include "runtime/store_proto.h"

/* A client handle: the backend, its state and what every backend needs. */
struct mlrt_store {
	const struct mlrti_store_ops *ops;
	void *be;       /* the backend's state: made by ops->open, freed by ops->close */
	char *addr;     /* the address as the caller gave it, for messages */
	int timeout_ms; /* the request timeout, > 0 */
};

/* One backend.  The front door has checked every argument: keys are 1..
 * MLRT_STORE_MAX_KEY bytes (prefixes may be empty), values at most
 * MLRT_STORE_MAX_VALUE, key lists 1..MLRTI_STORE_MAX_WAIT_KEYS long,
 * leases > 0, and output pointers are not NULL unless said otherwise.
 * Every member must be set (there are no optional operations); every one
 * that talks to the store blocks for at most the request timeout (plus the
 * wait's own timeout for wait) and returns MLRT_OK or a negative
 * mlrt_status, having logged what went wrong, to what, and what to do.
 * Values handed back are malloc'd, NUL-terminated copies (see
 * mlrti_store_copy) that the caller owns; on an error nothing is handed
 * back. */
struct mlrti_store_ops {
	/* Shown in messages: "zmq", "etcd". */
	const char *name;
	/* Make st->be for st->addr.  Does not block on the network.  On an
	 * error st->be may be left set: ops->close frees it. */
	int (*open)(mlrt_store *st);
	/* Free st->be (NULL is fine).  Does not block. */
	void (*close)(mlrt_store *st);
	/* set (lease 0) and set_leased.  NOT_FOUND: the lease is gone. */
	int (*set)(mlrt_store *st, mlrti_store_str key, mlrti_store_bytes val, int64_t lease);
	/* get: *val, *len.  NOT_FOUND when absent. */
	int (*get)(mlrt_store *st, mlrti_store_str key, void **val, size_t *len);
	/* wait (any 0) and wait_any (any 1, *which gets the index).  timeout_ms
	 * >= 0 (the front door has replaced a negative one); TIMEOUT after it. */
	int (*wait)(mlrt_store *st, const mlrti_store_str *keys, size_t nkeys, int timeout_ms,
	            int any, size_t *which);
	/* add: *result gets the new value.  INVALID: not an integer, overflow. */
	int (*add)(mlrt_store *st, mlrti_store_str key, int64_t delta, int64_t *result);
	/* cas: exp NULL means "expect absent".  *swapped says whether it did;
	 * cur (may be NULL) and *curlen get the value after the call (NULL/0
	 * when absent; the front door has set them so already). */
	int (*cas)(mlrt_store *st, mlrti_store_str key, const mlrti_store_bytes *exp,
	           mlrti_store_bytes val, int *swapped, void **cur, size_t *curlen);
	/* delete.  NOT_FOUND when absent. */
	int (*del)(mlrt_store *st, mlrti_store_str key);
	/* delete_prefix: *count gets how many went. */
	int (*del_prefix)(mlrt_store *st, mlrti_store_str prefix, size_t *count);
	/* list: *items (NULL when none; free with mlrt_store_kv_free), *count.
	 * In byte order of the keys. */
	int (*list)(mlrt_store *st, mlrti_store_str prefix, mlrt_store_kv **items, size_t *count);
	/* Leases.  renew and revoke: NOT_FOUND once the lease is gone. */
	int (*lease_grant)(mlrt_store *st, int ttl_ms, int64_t *lease);
	int (*lease_renew)(mlrt_store *st, int64_t lease);
	int (*lease_revoke)(mlrt_store *st, int64_t lease);
};

/* The backends (store_etcd.c is only built with -Detcd). */
extern const struct mlrti_store_ops mlrti_store_zmq_ops;
extern const struct mlrti_store_ops mlrti_store_etcd_ops;

/* A malloc'd copy of the len bytes at p with a NUL after them, in *out.
 * MLRT_ERR_NOMEM. */
int mlrti_store_copy(const void *p, size_t len, void **out);

#endif
