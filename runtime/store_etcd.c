/* The store client's etcd backend: every operation of include/mlrt/store.h
 * on an etcd v3 server (3.4 or later) through its HTTP/JSON gateway.
 *
 * One libcurl easy handle per mlrt_store (it keeps the connection open),
 * one request at a time, each bounded by the request timeout; jansson for
 * JSON; keys and values travel in base64 (OpenSSL's EVP_EncodeBlock and
 * EVP_DecodeBlock), integers as decimal strings, as etcd's gateway writes
 * them.  docs/store.md ("The etcd backend") lists how each operation maps
 * to etcd requests and where etcd differs (whole-second lease TTLs). */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "runtime/common.h"
#include "runtime/store_client.h"

/* Keys checked by one txn in wait and wait_any: under etcd's default
 * --max-txn-ops of 128. */
#define WAIT_BATCH 64
/* Pause between two looks of wait and wait_any: a key that appears is
 * seen within about this much (plus one round trip). */
#define POLL_MS 5
/* Pause between connection attempts while nothing listens at the address. */
#define RECONNECT_MS 50
/* Largest response body taken: a list of MLRTI_STORE_MAX_REPLY bytes in
 * base64, with room for the JSON around it. */
#define MAX_BODY ((size_t)MLRTI_STORE_MAX_REPLY / 3 * 4 + (size_t)64 * 1024 * 1024)
/* A body buffer bigger than this is freed after the call that needed it. */
#define KEEP_BODY ((size_t)1024 * 1024)

/* gRPC status codes that etcd's gateway passes on ("code"). */
enum {
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_ABORTED = 10,
	GRPC_UNAVAILABLE = 14,
	GRPC_UNAUTHENTICATED = 16,
};

/* The backend's state. */
struct etcd {
	CURL *curl;
	struct curl_slist *headers;
	char *url;      /* base URL "http://HOST:PORT", then room for a path */
	size_t base_len;
	char *body;     /* the response being received */
	size_t len, cap;
	int too_big;    /* the response went over MAX_BODY */
	int nomem;      /* growing body failed */
	char err[CURL_ERROR_SIZE];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

/* pthread_once routine: libcurl's global set-up, once per process. */
static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0)
		;
}

/* ---- JSON and base64 ---- */

/* o with name: v added, taking v.  Any NULL on the way (out of memory)
 * gives NULL and frees what was built, so builders nest and are checked
 * once at the end. */
static json_t *with(json_t *o, const char *name, json_t *v)
{
	if (o == NULL) {
		json_decref(v);
		return NULL;
	}
	if (json_object_set_new(o, name, v) != 0) { /* takes v even when it fails */
		json_decref(o);
		return NULL;
	}
	return o;
}

/* a with v appended, taking v; NULL handling as with(). */
static json_t *append(json_t *a, json_t *v)
{
	if (a == NULL) {
		json_decref(v);
		return NULL;
	}
	if (json_array_append_new(a, v) != 0) {
		json_decref(a);
		return NULL;
	}
	return a;
}

/* The len bytes at p as a base64 JSON string. */
static json_t *b64(const void *p, size_t len)
{
	unsigned char *buf = malloc(len / 3 * 4 + 5);
	json_t *s = NULL;
	int n;

	if (buf == NULL)
		return NULL;
	n = len > 0 ? EVP_EncodeBlock(buf, p, (int)len) : 0;
	s = json_stringn_nocheck((const char *)buf, (size_t)n);
	free(buf);
	return s;
}

/* A key as a base64 JSON string. */
static json_t *b64_key(mlrti_store_str k)
{
	return b64(k.ptr, k.len);
}

/* An int64 as etcd writes them: a decimal string. */
static json_t *int_json(int64_t v)
{
	return json_sprintf("%" PRId64, v);
}

/* Decode the base64 string s (NULL: absent, which etcd's gateway writes
 * for an empty value) into a malloc'd, NUL-terminated *out of *len bytes.
 * MLRT_ERR_PROTOCOL when s is not base64. */
static int unb64(const json_t *s, void **out, size_t *len)
{
	size_t n = 0, pad = 0;
	const char *text = "";
	unsigned char *buf;
	int got = 0;

	if (s != NULL) {
		if (!json_is_string(s))
			return MLRT_ERR_PROTOCOL;
		text = json_string_value(s);
		n = json_string_length(s);
	}
	if (n % 4 != 0 || n / 4 * 3 > (size_t)INT_MAX)
		return MLRT_ERR_PROTOCOL;
	buf = malloc(n / 4 * 3 + 1);
	if (buf == NULL)
		return MLRT_ERR_NOMEM;
	if (n > 0) {
		/* EVP_DecodeBlock counts the padding as bytes: take them off. */
		pad = (text[n - 1] == '=') + (text[n - 2] == '=');
		got = EVP_DecodeBlock(buf, (const unsigned char *)text, (int)n);
		if (got < 0 || (size_t)got < pad) {
			free(buf);
			return MLRT_ERR_PROTOCOL;
		}
		got -= (int)pad;
	}
	buf[got] = '\0';
	*out = buf;
	*len = (size_t)got;
	return MLRT_OK;
}

/* obj[name] as an int64: etcd writes them as decimal strings; absent is 0
 * (its gateway leaves out zero values).  MLRT_ERR_PROTOCOL otherwise. */
static int get_int(const json_t *obj, const char *name, int64_t *out)
{
	const json_t *v = json_object_get(obj, name);

	*out = 0;
	if (v == NULL)
		return MLRT_OK;
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return MLRT_OK;
	}
	if (json_is_string(v))
		return mlrti_parse_int(json_string_value(v), INT64_MIN, INT64_MAX, out) == MLRT_OK ?
		               MLRT_OK : MLRT_ERR_PROTOCOL;
	return MLRT_ERR_PROTOCOL;
}

/* The first key-value of a range response (NULL when there is none). */
static json_t *first_kv(const json_t *range)
{
	return json_array_get(json_object_get(range, "kvs"), 0);
}

/* The range response at index i of a txn response's "responses" (NULL if
 * it is not there). */
static json_t *txn_range(const json_t *txn, size_t i)
{
	return json_object_get(json_array_get(json_object_get(txn, "responses"), i),
	                       "response_range");
}

/* ---- HTTP ---- */

/* libcurl write callback: append to the body, up to MAX_BODY. */
static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct etcd *e = arg;
	size_t len = size * n;

	if (len > MAX_BODY - e->len) {
		e->too_big = 1;
		return 0;
	}
	if (e->len + len + 1 > e->cap) {
		size_t cap = e->cap > 0 ? e->cap : 4096;
		char *b;

		while (cap < e->len + len + 1)
			cap *= 2;
		b = realloc(e->body, cap);
		if (b == NULL) {
			e->nomem = 1;
			return 0;
		}
		e->body = b;
		e->cap = cap;
	}
	memcpy(e->body + e->len, p, len);
	e->len += len;
	e->body[e->len] = '\0'; /* for messages that quote it */
	return len;
}

/* "http://HOST:PORT" from "etcd://HOST:PORT" or "http://HOST:PORT" (a '/'
 * after the port is allowed), in a buffer with room for a path. */
static int base_url(mlrt_store *st)
{
	struct etcd *e = st->be;
	const char *hp = st->addr + 7; /* both schemes are 7 characters long */
	size_t n = strlen(hp);
	const char *colon;
	int64_t port;
	char digits[8];

	if (n > 0 && hp[n - 1] == '/')
		n--;
	colon = memrchr(hp, ':', n);
	if (colon == NULL || colon == hp || strcspn(hp, "/?#@ \t") < n ||
	    (size_t)(hp + n - colon - 1) >= sizeof(digits))
		goto bad;
	memcpy(digits, colon + 1, (size_t)(hp + n - colon - 1));
	digits[hp + n - colon - 1] = '\0';
	if (strspn(digits, "0123456789") != strlen(digits) ||
	    mlrti_parse_int(digits, 1, 65535, &port) != MLRT_OK)
		goto bad;
	e->url = malloc(n + 7 + 32);
	if (e->url == NULL)
		return MLRT_ERR_NOMEM;
	e->base_len = (size_t)snprintf(e->url, n + 7 + 32, "http://%.*s", (int)n, hp);
	return MLRT_OK;
bad:
	mlrt_log(MLRT_LOG_ERROR, "store: bad etcd address '%s': expected etcd://HOST:PORT or "
	         "http://HOST:PORT (an etcd client URL)", st->addr);
	return MLRT_ERR_INVALID;
}

/* The status for an error etcd answered (a gRPC status as JSON: "code"
 * and "message", or "grpc_code" inside a stream's "error"), logged. */
static int etcd_error(mlrt_store *st, const char *what, const json_t *err)
{
	int64_t code = 0;
	const char *msg = json_string_value(json_object_get(err, "message"));

	if (get_int(err, "code", &code) != MLRT_OK || code == 0)
		(void)get_int(err, "grpc_code", &code);
	if (msg == NULL)
		msg = json_string_value(json_object_get(err, "error"));
	if (msg == NULL)
		msg = "(no message)";
	if (code == GRPC_NOT_FOUND) {
		/* A lease that is gone: an answer, not a failure. */
		mlrt_log(MLRT_LOG_DEBUG, "store: etcd at %s: %s: %s", st->addr, what, msg);
		return MLRT_ERR_NOT_FOUND;
	}
	if (strstr(msg, "too large") != NULL || strstr(msg, "larger than max") != NULL) {
		mlrt_log(MLRT_LOG_ERROR,
		         "store: etcd at %s refused %s: %s; etcd takes requests up to its "
		         "--max-request-bytes (1.5 MiB unless set): raise it to store bigger values",
		         st->addr, what, msg);
		return MLRT_ERR_TOO_LARGE;
	}
	if (strstr(msg, "space exceeded") != NULL) {
		mlrt_log(MLRT_LOG_ERROR, "store: etcd at %s refused %s: %s; compact and defragment "
		         "it, or raise --quota-backend-bytes", st->addr, what, msg);
		return MLRT_ERR_NOSPACE;
	}
	if (code == GRPC_PERMISSION_DENIED || code == GRPC_UNAUTHENTICATED) {
		mlrt_log(MLRT_LOG_ERROR, "store: etcd at %s refused %s: %s; mlrt's etcd backend does "
		         "not log in: use an etcd without authentication", st->addr, what, msg);
		return MLRT_ERR_UNSUPPORTED;
	}
	if (code == GRPC_UNAVAILABLE || code == GRPC_DEADLINE_EXCEEDED ||
	    code == GRPC_RESOURCE_EXHAUSTED || code == GRPC_ABORTED) {
		mlrt_log(MLRT_LOG_WARN, "store: etcd at %s could not serve %s: %s; is its cluster "
		         "healthy (a leader, a quorum)?", st->addr, what, msg);
		return MLRT_ERR_UNAVAILABLE;
	}
	mlrt_log(MLRT_LOG_WARN, "store: etcd at %s refused %s: %s (gRPC code %lld)", st->addr,
	         what, msg, (long long)code);
	return MLRT_ERR_PROTOCOL;
}

/* POST the JSON req (taken; NULL means out of memory) to path, e.g.
 * "/v3/kv/range", and parse the answer into *rep (the caller frees it with
 * json_decref).  Blocks until deadline (monotonic ms) at most.  While
 * nothing listens at the address (etcd starting or restarting), tries
 * again every RECONNECT_MS until the deadline: nothing was sent, so that
 * is safe for every operation.  what names the operation in messages.
 * Errors: MLRT_ERR_UNAVAILABLE (no answer in time, connection lost), what
 * etcd_error makes of an etcd error, MLRT_ERR_PROTOCOL (an answer that is
 * not etcd's), MLRT_ERR_TOO_LARGE, MLRT_ERR_NOMEM. */
static int request(mlrt_store *st, const char *what, const char *path, json_t *req,
                   int64_t deadline, json_t **rep)
{
	struct etcd *e = st->be;
	int64_t start = mlrti_now_ms();
	char *text = NULL;
	json_t *r = NULL;
	json_error_t jerr;
	CURLcode cc = CURLE_OK;
	long http = 0;
	int rc;

	*rep = NULL;
	rc = MLRT_ERR_NOMEM;
	if (req == NULL || (text = json_dumps(req, JSON_COMPACT)) == NULL)
		goto out;
	snprintf(e->url + e->base_len, 32, "%s", path);
	curl_easy_setopt(e->curl, CURLOPT_URL, e->url);
	curl_easy_setopt(e->curl, CURLOPT_POSTFIELDS, text);
	curl_easy_setopt(e->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(text));
	for (;;) {
		int64_t left = deadline - mlrti_now_ms();

		if (left <= 0) {
			mlrt_log(MLRT_LOG_WARN,
			         "store: no answer from etcd at %s to %s within %lld ms (%s); is etcd "
			         "running and reachable there?", st->addr, what,
			         (long long)(deadline - start),
			         cc != CURLE_OK ? e->err : "not tried: no time left");
			rc = MLRT_ERR_UNAVAILABLE;
			goto out;
		}
		e->len = 0;
		e->too_big = e->nomem = 0;
		e->err[0] = '\0';
		curl_easy_setopt(e->curl, CURLOPT_TIMEOUT_MS, (long)left);
		curl_easy_setopt(e->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)left);
		cc = curl_easy_perform(e->curl);
		if (e->err[0] == '\0')
			snprintf(e->err, sizeof(e->err), "%s", curl_easy_strerror(cc));
		if (cc != CURLE_COULDNT_CONNECT && cc != CURLE_COULDNT_RESOLVE_HOST)
			break;
		left = deadline - mlrti_now_ms();
		sleep_ms(left < RECONNECT_MS ? (left > 0 ? left : 0) : RECONNECT_MS);
	}
	if (cc == CURLE_OPERATION_TIMEDOUT) {
		mlrt_log(MLRT_LOG_WARN,
		         "store: no answer from etcd at %s to %s within %lld ms (%s); is etcd "
		         "running and reachable there?", st->addr, what,
		         (long long)(deadline - start), e->err);
		rc = MLRT_ERR_UNAVAILABLE;
		goto out;
	}
	if (e->too_big) {
		mlrt_log(MLRT_LOG_ERROR, "store: etcd at %s answered %s with more than %zu bytes; "
		         "use a longer prefix", st->addr, what, MAX_BODY);
		rc = MLRT_ERR_TOO_LARGE;
		goto out;
	}
	rc = MLRT_ERR_NOMEM;
	if (e->nomem || cc == CURLE_OUT_OF_MEMORY)
		goto out;
	if (cc != CURLE_OK) {
		mlrt_log(MLRT_LOG_WARN, "store: lost etcd at %s during %s: %s; is etcd running and "
		         "reachable there?", st->addr, what, e->err);
		rc = MLRT_ERR_UNAVAILABLE;
		goto out;
	}
	curl_easy_getinfo(e->curl, CURLINFO_RESPONSE_CODE, &http);
	/* A stream (lease keepalive) may be followed by more: take the first. */
	r = json_loadb(e->body != NULL ? e->body : "", e->len, JSON_DISABLE_EOF_CHECK, &jerr);
	if (!json_is_object(r)) {
		mlrt_log(MLRT_LOG_WARN,
		         "store: %s answered %s with HTTP %ld and no JSON object ('%.60s'); is it "
		         "the client URL of an etcd 3.4 or later?", st->addr, what, http,
		         e->len > 0 ? e->body : "");
		rc = MLRT_ERR_PROTOCOL;
		goto out;
	}
	if (http != 200) {
		rc = etcd_error(st, what, r);
		goto out;
	}
	/* An error inside a stream's answer: {"error": {"grpc_code": ...}}. */
	if (json_is_object(json_object_get(r, "error"))) {
		rc = etcd_error(st, what, json_object_get(r, "error"));
		goto out;
	}
	*rep = r;
	r = NULL;
	rc = MLRT_OK;
out:
	if (e->cap > KEEP_BODY) {
		free(e->body);
		e->body = NULL;
		e->cap = 0;
	}
	e->len = 0;
	json_decref(r);
	free(text);
	json_decref(req);
	return rc;
}

/* An answer that lacks what its request promises. */
static int malformed(mlrt_store *st, const char *what, const char *detail)
{
	mlrt_log(MLRT_LOG_WARN, "store: etcd at %s answered %s with %s", st->addr, what, detail);
	return MLRT_ERR_PROTOCOL;
}

/* The deadline of a request sent now. */
static int64_t deadline_of(const mlrt_store *st)
{
	return mlrti_now_ms() + st->timeout_ms;
}

/* ---- opening ---- */

static int etcd_open(mlrt_store *st)
{
	struct etcd *e = calloc(1, sizeof(*e));
	int rc;

	if (e == NULL)
		return MLRT_ERR_NOMEM;
	st->be = e;
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK) {
		mlrt_log(MLRT_LOG_ERROR, "store: cannot set up libcurl for %s: %s", st->addr,
		         curl_easy_strerror(curl_init_rc));
		return MLRT_ERR_IO;
	}
	MLRTI_CHECK_GOTO(base_url(st), rc, fail);
	rc = MLRT_ERR_NOMEM;
	e->curl = curl_easy_init();
	if (e->curl == NULL)
		goto fail;
	e->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (e->headers == NULL)
		goto fail;
	/* No "Expect: 100-continue" round trip before big bodies. */
	{
		struct curl_slist *h = curl_slist_append(e->headers, "Expect:");

		if (h == NULL)
			goto fail;
		e->headers = h;
	}
	curl_easy_setopt(e->curl, CURLOPT_HTTPHEADER, e->headers);
	curl_easy_setopt(e->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e->curl, CURLOPT_WRITEDATA, e);
	curl_easy_setopt(e->curl, CURLOPT_ERRORBUFFER, e->err);
	curl_easy_setopt(e->curl, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM */
	curl_easy_setopt(e->curl, CURLOPT_PROXY, "");    /* the store is not reached via proxies */
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e->curl, CURLOPT_PROTOCOLS_STR, "http");
#else
	curl_easy_setopt(e->curl, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTP);
#endif
	return MLRT_OK;
fail:
	return rc;
}

static void etcd_close(mlrt_store *st)
{
	struct etcd *e = st->be;

	if (e == NULL)
		return;
	if (e->curl != NULL)
		curl_easy_cleanup(e->curl);
	curl_slist_free_all(e->headers);
	free(e->url);
	free(e->body);
	free(e);
	st->be = NULL;
}

/* ---- requests ---- */

/* {"key": key} */
static json_t *key_req(mlrti_store_str key)
{
	return with(json_object(), "key", b64_key(key));
}

/* A txn operation: {"request_range": {"key": key[, "count_only": true]}} */
static json_t *op_range(mlrti_store_str key, int count_only)
{
	json_t *r = key_req(key);

	if (count_only)
		r = with(r, "count_only", json_true());
	return with(json_object(), "request_range", r);
}

/* A txn operation: {"request_put": {"key", "value"[, "ignore_lease": true]}};
 * ignore_lease keeps the key's lease (the key must exist). */
static json_t *op_put(mlrti_store_str key, const void *val, size_t len, int ignore_lease)
{
	json_t *r = with(key_req(key), "value", b64(val, len));

	if (ignore_lease)
		r = with(r, "ignore_lease", json_true());
	return with(json_object(), "request_put", r);
}

/* A txn comparison: {"key", "target": target, "result": "EQUAL", field: v}. */
static json_t *compare(mlrti_store_str key, const char *target, const char *field, json_t *v)
{
	return with(with(with(key_req(key), "target", json_string(target)), "result",
	                 json_string("EQUAL")),
	            field, v);
}

/* The range [key, end) of every key that starts with prefix, as etcd
 * wants it in base64: end is the prefix with its last byte below 0xff
 * incremented and what follows dropped.  An empty prefix (or one of 0xff
 * bytes only) gives key "\0" and end "\0", which etcd reads as "every key
 * from key on"; keys never hold a NUL, so "\0" comes before all. */
static json_t *prefix_req(mlrti_store_str prefix)
{
	char end[MLRT_STORE_MAX_KEY];
	size_t n = prefix.len;
	static const char nul[1] = {'\0'};

	memcpy(end, prefix.ptr, n);
	while (n > 0 && (unsigned char)end[n - 1] == 0xff)
		n--;
	if (n == 0)
		return with(with(json_object(), "key", b64(prefix.len > 0 ? prefix.ptr : nul,
		                                           prefix.len > 0 ? prefix.len : 1)),
		            "range_end", b64(nul, 1));
	end[n - 1]++;
	return with(key_req(prefix), "range_end", b64(end, n));
}

/* ---- operations ---- */

static int etcd_set(mlrt_store *st, mlrti_store_str key, mlrti_store_bytes val, int64_t lease)
{
	json_t *req = with(key_req(key), "value", b64(val.ptr, val.len)), *rep = NULL;
	int rc;

	/* Without "lease" a put unties the key from its lease, as in mlrt's store. */
	if (lease > 0)
		req = with(req, "lease", int_json(lease));
	rc = request(st, "set", "/v3/kv/put", req, deadline_of(st), &rep);
	json_decref(rep);
	return rc;
}

static int etcd_get(mlrt_store *st, mlrti_store_str key, void **val, size_t *len)
{
	json_t *rep = NULL, *kv;
	int rc;

	MLRTI_CHECK_GOTO(request(st, "get", "/v3/kv/range", key_req(key), deadline_of(st), &rep),
	                 rc, out);
	kv = first_kv(rep);
	rc = MLRT_ERR_NOT_FOUND;
	if (kv == NULL)
		goto out;
	rc = unb64(json_object_get(kv, "value"), val, len);
	if (rc == MLRT_ERR_PROTOCOL)
		rc = malformed(st, "get", "a value that is not base64");
out:
	json_decref(rep);
	return rc;
}

/* Which of the n (at most WAIT_BATCH) keys exist, seen in one snapshot
 * (one txn of count-only ranges): here[i] 1 or 0. */
static int look(mlrt_store *st, const char *what, const mlrti_store_str *keys, size_t n,
                int64_t deadline, unsigned char *here)
{
	json_t *ops = json_array(), *rep = NULL;
	int rc;

	for (size_t i = 0; i < n; i++)
		ops = append(ops, op_range(keys[i], 1));
	MLRTI_CHECK_GOTO(request(st, what, "/v3/kv/txn", with(json_object(), "success", ops),
	                         deadline, &rep), rc, out);
	for (size_t i = 0; i < n; i++) {
		json_t *r = txn_range(rep, i);
		int64_t count;

		if (r == NULL || get_int(r, "count", &count) != MLRT_OK) {
			rc = malformed(st, what, "fewer ranges than asked for");
			goto out;
		}
		here[i] = count > 0;
	}
out:
	json_decref(rep);
	return rc;
}

/* One look for wait: *done when every key exists.  *cursor is the first
 * key not seen yet; keys before it were there at some point, so they are
 * looked at again (as one pass from the start) before saying done. */
static int look_all(mlrt_store *st, const mlrti_store_str *keys, size_t nkeys,
                    int64_t deadline, size_t *cursor, int *done)
{
	unsigned char here[WAIT_BATCH];
	int rc;

	*done = 0;
	for (;;) {
		int from_start = *cursor == 0;

		while (*cursor < nkeys) {
			size_t n = nkeys - *cursor < WAIT_BATCH ? nkeys - *cursor : WAIT_BATCH;

			MLRTI_CHECK_GOTO(look(st, "wait", keys + *cursor, n, deadline, here), rc,
			                 fail);
			for (size_t i = 0; i < n; i++, (*cursor)++)
				if (!here[i])
					return MLRT_OK;
		}
		if (from_start) {
			*done = 1;
			return MLRT_OK;
		}
		*cursor = 0; /* keys may have gone meanwhile */
	}
fail:
	return rc;
}

/* One look for wait_any: *done with *which the first key, in the caller's
 * order, that exists. */
static int look_any(mlrt_store *st, const mlrti_store_str *keys, size_t nkeys,
                    int64_t deadline, size_t *which, int *done)
{
	unsigned char here[WAIT_BATCH];
	int rc;

	*done = 0;
	for (size_t at = 0; at < nkeys; at += WAIT_BATCH) {
		size_t n = nkeys - at < WAIT_BATCH ? nkeys - at : WAIT_BATCH;

		MLRTI_CHECK_GOTO(look(st, "wait_any", keys + at, n, deadline, here), rc, fail);
		for (size_t i = 0; i < n; i++)
			if (here[i]) {
				*which = at + i;
				*done = 1;
				return MLRT_OK;
			}
	}
	return MLRT_OK;
fail:
	return rc;
}

/* wait and wait_any: look every POLL_MS until done or timeout_ms has
 * passed.  Each look is one request with the request timeout, so the whole
 * call is bounded by the wait's timeout plus the request timeout, as with
 * the ZeroMQ client; but an etcd that dies during a long wait is noticed
 * within the request timeout. */
static int etcd_wait(mlrt_store *st, const mlrti_store_str *keys, size_t nkeys, int timeout_ms,
                     int any, size_t *which)
{
	int64_t end = mlrti_now_ms() + timeout_ms;
	size_t cursor = 0;

	for (;;) {
		int64_t left;
		int done, rc;

		rc = any ? look_any(st, keys, nkeys, deadline_of(st), which, &done) :
		           look_all(st, keys, nkeys, deadline_of(st), &cursor, &done);
		if (rc != MLRT_OK || done)
			return rc;
		left = end - mlrti_now_ms();
		if (left <= 0)
			return MLRT_ERR_TIMEOUT;
		sleep_ms(left < POLL_MS ? left : POLL_MS);
	}
}

/* add: read the counter, then write the sum in a txn that holds only if
 * the key's mod_revision is still the one read (0: still absent); when it
 * is not, the txn's failure branch reads the key again, and we retry.  An
 * existing key keeps its lease (ignore_lease). */
static int etcd_add(mlrt_store *st, mlrti_store_str key, int64_t delta, int64_t *result)
{
	int64_t deadline = deadline_of(st);
	json_t *rep = NULL, *kv;
	int rc;

	MLRTI_CHECK_GOTO(request(st, "add", "/v3/kv/range", key_req(key), deadline, &rep), rc,
	                 out);
	kv = first_kv(rep);
	for (;;) {
		int64_t cur = 0, sum, mod = 0;
		char text[24];
		void *val = NULL;
		size_t len = 0;
		json_t *txn;

		if (kv != NULL) {
			if (get_int(kv, "mod_revision", &mod) != MLRT_OK || mod <= 0 ||
			    unb64(json_object_get(kv, "value"), &val, &len) != MLRT_OK) {
				rc = malformed(st, "add", "a malformed key-value");
				goto out;
			}
			rc = mlrti_store_parse_counter(val, len, &cur);
			free(val);
			if (rc != MLRT_OK) {
				mlrt_log(MLRT_LOG_DEBUG, "store: add: %.*s is not a decimal integer",
				         (int)key.len, key.ptr);
				goto out;
			}
		}
		rc = MLRT_ERR_INVALID;
		if (__builtin_add_overflow(cur, delta, &sum))
			goto out;
		snprintf(text, sizeof(text), "%" PRId64, sum);
		txn = with(json_object(), "compare",
		           append(json_array(), compare(key, "MOD", "mod_revision", int_json(mod))));
		txn = with(txn, "success", append(json_array(), op_put(key, text, strlen(text),
		                                                         kv != NULL)));
		txn = with(txn, "failure", append(json_array(), op_range(key, 0)));
		json_decref(rep);
		rep = NULL;
		MLRTI_CHECK_GOTO(request(st, "add", "/v3/kv/txn", txn, deadline, &rep), rc, out);
		if (json_is_true(json_object_get(rep, "succeeded"))) {
			*result = sum;
			rc = MLRT_OK;
			goto out;
		}
		/* Someone else changed it first: start again from what is there now. */
		if (txn_range(rep, 0) == NULL) {
			rc = malformed(st, "add", "a failed txn without its range");
			goto out;
		}
		kv = first_kv(txn_range(rep, 0));
	}
out:
	json_decref(rep);
	return rc;
}

/* cas: one txn.  Compare the value (or create_revision 0: absent); on
 * success put, keeping an existing key's lease, and read; on failure read. */
static int etcd_cas(mlrt_store *st, mlrti_store_str key, const mlrti_store_bytes *exp,
                    mlrti_store_bytes val, int *swapped, void **cur, size_t *curlen)
{
	json_t *cmp, *txn, *rep = NULL, *range, *kv;
	int succeeded, rc;

	cmp = exp != NULL ? compare(key, "VALUE", "value", b64(exp->ptr, exp->len)) :
	                    compare(key, "CREATE", "create_revision", int_json(0));
	txn = with(json_object(), "compare", append(json_array(), cmp));
	txn = with(txn, "success",
	           append(append(json_array(), op_put(key, val.ptr, val.len, exp != NULL)),
	                  op_range(key, 0)));
	txn = with(txn, "failure", append(json_array(), op_range(key, 0)));
	MLRTI_CHECK_GOTO(request(st, "cas", "/v3/kv/txn", txn, deadline_of(st), &rep), rc, out);
	succeeded = json_is_true(json_object_get(rep, "succeeded"));
	range = txn_range(rep, succeeded ? 1 : 0);
	if (range == NULL) {
		rc = malformed(st, "cas", "a txn without its range");
		goto out;
	}
	*swapped = succeeded;
	kv = first_kv(range);
	if (cur != NULL && kv != NULL) {
		rc = unb64(json_object_get(kv, "value"), cur, curlen);
		if (rc == MLRT_ERR_PROTOCOL)
			rc = malformed(st, "cas", "a value that is not base64");
	}
out:
	json_decref(rep);
	return rc;
}

/* deleterange of req; *count gets the number of keys deleted. */
static int delete_range(mlrt_store *st, const char *what, json_t *req, size_t *count)
{
	json_t *rep = NULL;
	int64_t n;
	int rc;

	MLRTI_CHECK_GOTO(request(st, what, "/v3/kv/deleterange", req, deadline_of(st), &rep), rc,
	                 out);
	if (get_int(rep, "deleted", &n) != MLRT_OK || n < 0) {
		rc = malformed(st, what, "a bad 'deleted' count");
		goto out;
	}
	*count = (size_t)n;
out:
	json_decref(rep);
	return rc;
}

static int etcd_del(mlrt_store *st, mlrti_store_str key)
{
	size_t n = 0;
	int rc = delete_range(st, "delete", key_req(key), &n);

	return rc == MLRT_OK && n == 0 ? MLRT_ERR_NOT_FOUND : rc;
}

static int etcd_del_prefix(mlrt_store *st, mlrti_store_str prefix, size_t *count)
{
	return delete_range(st, "delete_prefix", prefix_req(prefix), count);
}

static int etcd_list(mlrt_store *st, mlrti_store_str prefix, mlrt_store_kv **items,
                     size_t *count)
{
	/* etcd sorts a range by key bytes unless asked otherwise. */
	json_t *req = with(prefix_req(prefix), "limit", int_json(MLRTI_STORE_MAX_ITEMS + 1));
	json_t *rep = NULL, *kvs;
	mlrt_store_kv *kv = NULL;
	size_t n = 0, total;
	int64_t more;
	int rc;

	MLRTI_CHECK_GOTO(request(st, "list", "/v3/kv/range", req, deadline_of(st), &rep), rc,
	                 fail);
	kvs = json_object_get(rep, "kvs");
	total = json_array_size(kvs);
	if (get_int(rep, "count", &more) != MLRT_OK) {
		rc = malformed(st, "list", "a bad count");
		goto fail;
	}
	if (total > MLRTI_STORE_MAX_ITEMS || more > (int64_t)MLRTI_STORE_MAX_ITEMS) {
		mlrt_log(MLRT_LOG_ERROR, "store: more than %zu keys under '%.*s' at %s: use a "
		         "longer prefix", MLRTI_STORE_MAX_ITEMS, (int)prefix.len, prefix.ptr,
		         st->addr);
		rc = MLRT_ERR_TOO_LARGE;
		goto fail;
	}
	if (total > 0) {
		rc = MLRT_ERR_NOMEM;
		kv = calloc(total, sizeof(*kv));
		if (kv == NULL)
			goto fail;
	}
	for (; n < total; n++) {
		json_t *it = json_array_get(kvs, n);
		void *k = NULL;
		size_t klen;

		rc = unb64(json_object_get(it, "key"), &k, &klen);
		if (rc == MLRT_OK) {
			rc = unb64(json_object_get(it, "value"), &kv[n].val, &kv[n].len);
			if (rc != MLRT_OK)
				free(k);
		}
		if (rc == MLRT_ERR_PROTOCOL)
			rc = malformed(st, "list", "a key or value that is not base64");
		if (rc != MLRT_OK)
			goto fail;
		kv[n].key = k;
	}
	*items = kv;
	*count = n;
	json_decref(rep);
	return MLRT_OK;
fail:
	mlrt_store_kv_free(kv, n);
	json_decref(rep);
	return rc;
}

/* lease_grant: etcd's TTLs are whole seconds, so ttl_ms is rounded up;
 * etcd also raises a TTL below its minimum (2 s with default settings). */
static int etcd_lease_grant(mlrt_store *st, int ttl_ms, int64_t *lease)
{
	int64_t ttl_s = ((int64_t)ttl_ms + 999) / 1000, id, got;
	json_t *rep = NULL;
	int rc;

	MLRTI_CHECK_GOTO(request(st, "lease_grant", "/v3/lease/grant",
	                         with(json_object(), "TTL", int_json(ttl_s)), deadline_of(st),
	                         &rep), rc, out);
	if (get_int(rep, "ID", &id) != MLRT_OK || id <= 0 || get_int(rep, "TTL", &got) != MLRT_OK) {
		const char *why = json_string_value(json_object_get(rep, "error"));

		rc = malformed(st, "lease_grant", why != NULL ? why : "no lease id");
		goto out;
	}
	if (got != ttl_s)
		mlrt_log(MLRT_LOG_DEBUG, "store: etcd at %s gave lease %" PRId64 " a ttl of %" PRId64
		         " s for the %d ms asked", st->addr, id, got, ttl_ms);
	*lease = id;
out:
	json_decref(rep);
	return rc;
}

/* lease_renew: one keepalive.  etcd answers a lease it does not know with
 * a TTL of 0 (left out of the JSON). */
static int etcd_lease_renew(mlrt_store *st, int64_t lease)
{
	json_t *rep = NULL, *res;
	int64_t ttl = 0;
	int rc;

	MLRTI_CHECK_GOTO(request(st, "lease_renew", "/v3/lease/keepalive",
	                         with(json_object(), "ID", int_json(lease)), deadline_of(st),
	                         &rep), rc, out);
	res = json_object_get(rep, "result");
	if (!json_is_object(res) || get_int(res, "TTL", &ttl) != MLRT_OK) {
		rc = malformed(st, "lease_renew", "no result");
		goto out;
	}
	rc = ttl > 0 ? MLRT_OK : MLRT_ERR_NOT_FOUND;
out:
	json_decref(rep);
	return rc;
}

static int etcd_lease_revoke(mlrt_store *st, int64_t lease)
{
	json_t *rep = NULL;
	int rc = request(st, "lease_revoke", "/v3/lease/revoke",
	                 with(json_object(), "ID", int_json(lease)), deadline_of(st), &rep);

	json_decref(rep);
	return rc;
}

const struct mlrti_store_ops mlrti_store_etcd_ops = {
	.name = "etcd",
	.open = etcd_open,
	.close = etcd_close,
	.set = etcd_set,
	.get = etcd_get,
	.wait = etcd_wait,
	.add = etcd_add,
	.cas = etcd_cas,
	.del = etcd_del,
	.del_prefix = etcd_del_prefix,
	.list = etcd_list,
	.lease_grant = etcd_lease_grant,
	.lease_renew = etcd_lease_renew,
	.lease_revoke = etcd_lease_revoke,
};
