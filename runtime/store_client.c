/* The store client's front door: every public mlrt_store_* function.  It
 * checks the arguments, then hands the call to the backend the address
 * picked (runtime/store_client.h): mlrt's own server over ZeroMQ
 * (store_zmq.c) or etcd (store_etcd.c).  See docs/store.md. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <mlrt/store.h>

#include "mlrt_config.h"
#include "runtime/common.h"
#include "runtime/store_client.h"

#define DEFAULT_TIMEOUT_MS 30000

int mlrti_store_copy(const void *p, size_t len, void **out)
{
	char *d = malloc(len + 1);

	if (d == NULL)
		return MLRT_ERR_NOMEM;
	if (len > 0)
		memcpy(d, p, len);
	d[len] = '\0';
	*out = d;
	return MLRT_OK;
}

/* ---- opening ---- */

/* The backend for addr: etcd for "etcd://" and "http://", ZeroMQ for the
 * rest (zmq_connect judges those).  NULL when etcd is asked for but not
 * built in. */
static const struct mlrti_store_ops *pick_backend(const char *addr)
{
	if (strncmp(addr, "etcd://", 7) != 0 && strncmp(addr, "http://", 7) != 0)
		return &mlrti_store_zmq_ops;
#if HAVE_ETCD
	return &mlrti_store_etcd_ops;
#else
	mlrt_log(MLRT_LOG_ERROR,
	         "store: %s is an etcd address, but this mlrt was built without the etcd "
	         "backend (it needs libcurl and libcrypto: install libcurl4-openssl-dev and "
	         "libssl-dev, then reconfigure with -Detcd=enabled)", addr);
	return NULL;
#endif
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
	rc = MLRT_ERR_NOMEM;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		goto fail;
	st->addr = mlrti_strdup(addr);
	if (st->addr == NULL)
		goto fail;
	st->timeout_ms = (int)tmo;
	rc = MLRT_ERR_UNSUPPORTED;
	st->ops = pick_backend(addr);
	if (st->ops == NULL)
		goto fail;
	MLRTI_CHECK_GOTO(st->ops->open(st), rc, fail);
	mlrt_log(MLRT_LOG_DEBUG, "store: %s through the %s backend", addr, st->ops->name);
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
	if (st->ops != NULL)
		st->ops->close(st);
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

/* ---- argument checks ---- */

/* Check key (non-empty unless allow_empty, at most MLRT_STORE_MAX_KEY
 * bytes) and make the view of it that backends take. */
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

/* ---- operations ---- */

/* set and set_leased (lease 0: none). */
static int store_set(mlrt_store *st, const char *key, const void *val, size_t len, int64_t lease)
{
	mlrti_store_str k;
	mlrti_store_bytes v;
	int rc;

	if (st == NULL)
		return MLRT_ERR_INVALID;
	MLRTI_CHECK_GOTO(check_key(key, 0, &k), rc, fail);
	MLRTI_CHECK_GOTO(check_val(val, len, &v), rc, fail);
	rc = st->ops->set(st, k, v, lease);
fail:
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
	mlrti_store_str k;
	int rc;

	if (st == NULL || val == NULL || len == NULL)
		return MLRT_ERR_INVALID;
	MLRTI_CHECK_GOTO(check_key(key, 0, &k), rc, fail);
	rc = st->ops->get(st, k, val, len);
fail:
	return rc;
}

/* wait and wait_any; *which (may be NULL) gets the index for wait_any. */
static int store_wait(mlrt_store *st, int any, const char *const *keys, size_t nkeys,
                      int timeout_ms, size_t *which)
{
	mlrti_store_str *views = NULL;
	size_t first = 0;
	int rc;

	if (st == NULL || keys == NULL || nkeys == 0)
		return MLRT_ERR_INVALID;
	if (nkeys > MLRTI_STORE_MAX_WAIT_KEYS)
		return MLRT_ERR_TOO_LARGE;
	views = calloc(nkeys, sizeof(*views));
	if (views == NULL)
		return MLRT_ERR_NOMEM;
	for (size_t i = 0; i < nkeys; i++)
		MLRTI_CHECK_GOTO(check_key(keys[i], 0, &views[i]), rc, fail);
	rc = st->ops->wait(st, views, nkeys, timeout_ms < 0 ? st->timeout_ms : timeout_ms, any,
	                   &first);
	if (rc == MLRT_OK && which != NULL)
		*which = first;
fail:
	free(views);
	return rc;
}

int mlrt_store_wait(mlrt_store *st, const char *const *keys, size_t nkeys, int timeout_ms)
{
	return store_wait(st, 0, keys, nkeys, timeout_ms, NULL);
}

int mlrt_store_wait_any(mlrt_store *st, const char *const *keys, size_t nkeys, int timeout_ms,
                        size_t *which)
{
	return store_wait(st, 1, keys, nkeys, timeout_ms, which);
}

int mlrt_store_add(mlrt_store *st, const char *key, int64_t delta, int64_t *result)
{
	mlrti_store_str k;
	int64_t n = 0;
	int rc;

	if (st == NULL)
		return MLRT_ERR_INVALID;
	MLRTI_CHECK_GOTO(check_key(key, 0, &k), rc, fail);
	rc = st->ops->add(st, k, delta, &n);
	if (rc == MLRT_OK && result != NULL)
		*result = n;
fail:
	return rc;
}

int mlrt_store_cas(mlrt_store *st, const char *key, const void *expected, size_t elen,
                   const void *desired, size_t dlen, int *swapped, void **cur, size_t *curlen)
{
	mlrti_store_str k;
	mlrti_store_bytes e, d;
	int sw = 0, rc;

	if (cur != NULL)
		*cur = NULL;
	if (curlen != NULL)
		*curlen = 0;
	if (st == NULL || (expected == NULL && elen > 0) || (cur != NULL && curlen == NULL))
		return MLRT_ERR_INVALID;
	MLRTI_CHECK_GOTO(check_key(key, 0, &k), rc, fail);
	if (expected != NULL)
		MLRTI_CHECK_GOTO(check_val(expected, elen, &e), rc, fail);
	MLRTI_CHECK_GOTO(check_val(desired, dlen, &d), rc, fail);
	rc = st->ops->cas(st, k, expected != NULL ? &e : NULL, d, &sw, cur, curlen);
	if (rc == MLRT_OK && swapped != NULL)
		*swapped = sw;
fail:
	return rc;
}

int mlrt_store_delete(mlrt_store *st, const char *key)
{
	mlrti_store_str k;
	int rc;

	if (st == NULL)
		return MLRT_ERR_INVALID;
	MLRTI_CHECK_GOTO(check_key(key, 0, &k), rc, fail);
	rc = st->ops->del(st, k);
fail:
	return rc;
}

int mlrt_store_delete_prefix(mlrt_store *st, const char *prefix, size_t *count)
{
	mlrti_store_str p;
	size_t n = 0;
	int rc;

	if (st == NULL)
		return MLRT_ERR_INVALID;
	MLRTI_CHECK_GOTO(check_key(prefix, 1, &p), rc, fail);
	rc = st->ops->del_prefix(st, p, &n);
	if (rc == MLRT_OK && count != NULL)
		*count = n;
fail:
	return rc;
}

int mlrt_store_list(mlrt_store *st, const char *prefix, mlrt_store_kv **items, size_t *count)
{
	mlrti_store_str p;
	int rc;

	if (st == NULL || items == NULL || count == NULL)
		return MLRT_ERR_INVALID;
	*items = NULL;
	*count = 0;
	MLRTI_CHECK_GOTO(check_key(prefix, 1, &p), rc, fail);
	rc = st->ops->list(st, p, items, count);
fail:
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
	if (st == NULL || ttl_ms <= 0 || lease == NULL)
		return MLRT_ERR_INVALID;
	return st->ops->lease_grant(st, ttl_ms, lease);
}

int mlrt_store_lease_renew(mlrt_store *st, int64_t lease)
{
	if (st == NULL || lease <= 0)
		return MLRT_ERR_INVALID;
	return st->ops->lease_renew(st, lease);
}

int mlrt_store_lease_revoke(mlrt_store *st, int64_t lease)
{
	if (st == NULL || lease <= 0)
		return MLRT_ERR_INVALID;
	return st->ops->lease_revoke(st, lease);
}
