/* The store: mlrt's control-plane key-value service.
 *
 * A small server (embedded in mlrun, or `mlrun store --port P`) holds byte
 * values under string keys.  Clients talk to it over ZeroMQ with msgpack
 * messages.  Besides set/get it offers what rendezvous and failure detection
 * need: blocking waits with timeouts, atomic counters, compare-and-set,
 * prefix listing and leases (keys that vanish unless their lease is renewed).
 * The same client can keep the data in an etcd v3 server instead.
 *
 * Threads: an mlrt_store client handle is NOT thread-safe; open one per
 * thread.  The server runs in its own thread and may be stopped from any
 * thread.  Every call that talks to the server is bounded in time: a reply
 * that does not come within the request timeout (mlrt_store_set_timeout,
 * default 30 s; MLRT_STORE_TIMEOUT_MS) gives MLRT_ERR_UNAVAILABLE. */
#ifndef MLRT_STORE_H
#define MLRT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <mlrt/status.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MLRT_STORE_MAX_KEY 1024                /* bytes, without the NUL */
#define MLRT_STORE_MAX_VALUE (16u * 1024 * 1024) /* bytes per value */

typedef struct mlrt_store mlrt_store;
typedef struct mlrt_store_server mlrt_store_server;

/* One key and its value, as returned by mlrt_store_list. */
typedef struct mlrt_store_kv {
	char *key;
	void *val;
	size_t len;
} mlrt_store_kv;

/* ---- server ---- */

/* Start a store server in a background thread, bound to endpoint, e.g.
 * "tcp://127.0.0.1:0" (port 0: any free port; read it back with
 * mlrt_store_server_addr) or "tcp://0.0.0.0:29400".  Does not block.
 * On success *srv owns the thread; stop it with mlrt_store_server_stop.
 * Errors: MLRT_ERR_INVALID (bad endpoint), MLRT_ERR_IO (cannot bind). */
MLRT_API int mlrt_store_server_start(const char *endpoint, mlrt_store_server **srv);

/* The address clients should connect to ("tcp://HOST:PORT", with the real
 * port).  A wildcard bind reports the host's name.  Owned by srv. */
MLRT_API const char *mlrt_store_server_addr(const mlrt_store_server *srv);

/* Stop the server: blocks until its thread has ended, then frees srv.
 * Clients still connected get MLRT_ERR_UNAVAILABLE on their next call. */
MLRT_API int mlrt_store_server_stop(mlrt_store_server *srv);

/* ---- client ---- */

/* Connect to the store at addr: "tcp://HOST:PORT" for mlrt's own store
 * server, "etcd://HOST:PORT" (or "http://HOST:PORT") for an etcd v3 server
 * (docs/store.md; MLRT_ERR_UNSUPPORTED when mlrt was built without the
 * etcd backend, MLRT_ERR_INVALID for a malformed address).  Does not block
 * on the network: an unreachable store shows as MLRT_ERR_UNAVAILABLE on the
 * first call that needs it.  Close with mlrt_store_close. */
MLRT_API int mlrt_store_open(const char *addr, mlrt_store **st);

/* Close the connection and free st (NULL is fine).  Does not block. */
MLRT_API void mlrt_store_close(mlrt_store *st);

/* Bound on the wait for any reply, in milliseconds (> 0).  Waits asked for
 * with an explicit timeout get that timeout on top of this one. */
MLRT_API int mlrt_store_set_timeout(mlrt_store *st, int timeout_ms);

/* Set key to the len bytes at val, replacing any value. */
MLRT_API int mlrt_store_set(mlrt_store *st, const char *key, const void *val, size_t len);

/* As mlrt_store_set, tied to a lease: the key is deleted when the lease
 * expires or is revoked.  MLRT_ERR_NOT_FOUND when the lease is gone. */
MLRT_API int mlrt_store_set_leased(mlrt_store *st, const char *key, const void *val, size_t len,
                                   int64_t lease);

/* Get key's value: *val is a malloc'd copy the caller frees, with a NUL
 * after the last byte so text values can be used as strings; *len its
 * length.  MLRT_ERR_NOT_FOUND when the key is absent. */
MLRT_API int mlrt_store_get(mlrt_store *st, const char *key, void **val, size_t *len);

/* Block until every one of the nkeys keys exists, or timeout_ms passes
 * (MLRT_ERR_TIMEOUT).  timeout_ms < 0 waits up to the request timeout. */
MLRT_API int mlrt_store_wait(mlrt_store *st, const char *const *keys, size_t nkeys, int timeout_ms);

/* Block until at least one of the keys exists; *which (may be NULL) gets
 * the index of the first that does.  MLRT_ERR_TIMEOUT after timeout_ms. */
MLRT_API int mlrt_store_wait_any(mlrt_store *st, const char *const *keys, size_t nkeys,
                                 int timeout_ms, size_t *which);

/* Atomically add delta to the integer stored as decimal text under key
 * (absent counts as 0) and return the new value in *result (may be NULL).
 * MLRT_ERR_INVALID when the current value is not an integer. */
MLRT_API int mlrt_store_add(mlrt_store *st, const char *key, int64_t delta, int64_t *result);

/* Atomically: if key's value equals expected (expected == NULL: the key is
 * absent), set it to desired.  *swapped (may be NULL) says whether it did.
 * If cur is not NULL, *cur and *curlen receive the value after the call
 * (malloc'd, NUL-terminated, caller frees; NULL/0 when absent). */
MLRT_API int mlrt_store_cas(mlrt_store *st, const char *key, const void *expected, size_t elen,
                            const void *desired, size_t dlen, int *swapped, void **cur,
                            size_t *curlen);

/* Delete key.  MLRT_ERR_NOT_FOUND when it was absent. */
MLRT_API int mlrt_store_delete(mlrt_store *st, const char *key);

/* Delete every key that starts with prefix; *count (may be NULL) gets how
 * many went. */
MLRT_API int mlrt_store_delete_prefix(mlrt_store *st, const char *prefix, size_t *count);

/* List the keys starting with prefix, in byte order, with their values.
 * Free the array with mlrt_store_kv_free. */
MLRT_API int mlrt_store_list(mlrt_store *st, const char *prefix, mlrt_store_kv **items,
                             size_t *count);
MLRT_API void mlrt_store_kv_free(mlrt_store_kv *items, size_t count);

/* Leases: grant one that lives ttl_ms unless renewed; renew resets its
 * clock (MLRT_ERR_NOT_FOUND once it has expired); revoke ends it now.
 * When a lease ends, every key set under it is deleted. */
MLRT_API int mlrt_store_lease_grant(mlrt_store *st, int ttl_ms, int64_t *lease);
MLRT_API int mlrt_store_lease_renew(mlrt_store *st, int64_t lease);
MLRT_API int mlrt_store_lease_revoke(mlrt_store *st, int64_t lease);

#ifdef __cplusplus
}
#endif
#endif
