/* The store's wire protocol (internal; see docs/store.md).
 *
 * Every request and every reply is one ZeroMQ frame holding one msgpack
 * map with string keys.  Requests:
 *     {"v":1, "op":"set", "id":42, "key":"a", "val":<bin>, "lease":7}
 * replies:
 *     {"v":1, "id":42, "st":0, "val":<bin>, "n":3, "items":[["k",<bin>]..],
 *      "err":"text"}
 * Which fields an op uses is listed with mlrti_store_req below.  Fields a
 * decoder does not know are ignored (room to grow within version 1); a
 * field given twice, of the wrong type or out of range is an error.
 *
 * The decoders take arbitrary bytes and never crash, leak or allocate more
 * than a small multiple of the input: the input is first checked to be one
 * complete msgpack object of bounded depth and object count, and only then
 * handed to msgpack_unpack_next.
 *
 * Threads: every function here is pure and may be called from any thread. */
#ifndef MLRT_RUNTIME_STORE_PROTO_H
#define MLRT_RUNTIME_STORE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include <mlrt/store.h>

#define MLRTI_STORE_VERSION 1

/* Most keys in one wait or wait_any. */
#define MLRTI_STORE_MAX_WAIT_KEYS 1024

/* Largest request frame: a cas carries two values. */
#define MLRTI_STORE_MAX_REQUEST ((size_t)2 * MLRT_STORE_MAX_VALUE + 2u * 1024 * 1024)

/* Largest reply frame (a list of many keys); the server answers a bigger
 * list with MLRT_ERR_TOO_LARGE. */
#define MLRTI_STORE_MAX_REPLY ((size_t)256 * 1024 * 1024)

/* Most items in a list reply. */
#define MLRTI_STORE_MAX_ITEMS ((size_t)1 << 20)

/* Room for the decoders' explanation of a failure. */
#define MLRTI_STORE_WHY_LEN 96

/* Longest wait timeout and lease ttl on the wire, in milliseconds. */
#define MLRTI_STORE_MAX_MS INT32_MAX

typedef enum mlrti_store_op {
	MLRTI_STORE_OP_NONE = 0,
	MLRTI_STORE_OP_SET,          /* key, val, [lease]      -> st */
	MLRTI_STORE_OP_GET,          /* key                    -> val */
	MLRTI_STORE_OP_WAIT,         /* keys, tmo              -> st */
	MLRTI_STORE_OP_WAIT_ANY,     /* keys, tmo              -> n (index) */
	MLRTI_STORE_OP_ADD,          /* key, delta             -> n (new value) */
	MLRTI_STORE_OP_CAS,          /* key, exp|nil, val      -> n (swapped), [val] */
	MLRTI_STORE_OP_DEL,          /* key                    -> st */
	MLRTI_STORE_OP_DEL_PREFIX,   /* key (prefix, may be "") -> n (count) */
	MLRTI_STORE_OP_LIST,         /* key (prefix, may be "") -> items */
	MLRTI_STORE_OP_LEASE_GRANT,  /* ttl                    -> n (lease id) */
	MLRTI_STORE_OP_LEASE_RENEW,  /* lease                  -> st */
	MLRTI_STORE_OP_LEASE_REVOKE, /* lease                  -> st */
	MLRTI_STORE_OP_COUNT_,
} mlrti_store_op;

/* A byte string that is not owned: it points into a message or a caller's
 * buffer. */
typedef struct mlrti_store_bytes {
	const void *ptr;
	size_t len;
} mlrti_store_bytes;

/* A key: bytes without NUL, not NUL-terminated on the wire side. */
typedef struct mlrti_store_str {
	const char *ptr;
	size_t len;
} mlrti_store_str;

/* One item of a list reply. */
typedef struct mlrti_store_item {
	mlrti_store_str key;
	mlrti_store_bytes val;
} mlrti_store_item;

/* A request.  For encoding the caller fills op, id and the op's fields.
 * After decoding, the views point into the input buffer and into msg's
 * zone: they stay valid until mlrti_store_req_fini and only while the input
 * buffer lives. */
typedef struct mlrti_store_req {
	mlrti_store_op op;
	uint64_t id;
	mlrti_store_str key;        /* set get add cas del; the prefix of del_prefix, list */
	mlrti_store_bytes val;      /* set: the value; cas: the desired value */
	mlrti_store_bytes exp;      /* cas: the expected value, when has_exp */
	int has_exp;                /* cas: 0 means "expect the key to be absent" */
	int64_t lease;              /* set: 0 or the lease; lease_renew, lease_revoke */
	const mlrti_store_str *keys; /* wait, wait_any: 1..MLRTI_STORE_MAX_WAIT_KEYS */
	size_t nkeys;
	int64_t timeout_ms;         /* wait, wait_any: 0..MLRTI_STORE_MAX_MS */
	int64_t delta;              /* add */
	int64_t ttl_ms;             /* lease_grant: 1..MLRTI_STORE_MAX_MS */

	/* Set by the decoder only. */
	int has_id;             /* id was read, even when decoding failed later */
	char why[MLRTI_STORE_WHY_LEN]; /* on failure: what was wrong */
	mlrti_store_str *owned; /* the keys array */
	msgpack_unpacked msg;
} mlrti_store_req;

/* A reply; same ownership rules as mlrti_store_req. */
typedef struct mlrti_store_rep {
	uint64_t id;
	int st;                /* MLRT_OK or a negative mlrt_status */
	int has_val;
	mlrti_store_bytes val;
	int has_n;
	int64_t n;
	int has_items;
	const mlrti_store_item *items;
	size_t nitems;
	mlrti_store_str err;   /* optional text; len 0 when absent */

	/* Set by the decoder only. */
	int has_id;
	char why[MLRTI_STORE_WHY_LEN];
	mlrti_store_item *owned; /* the items array */
	msgpack_unpacked msg;
} mlrti_store_rep;

/* Parse a counter's value the way add reads it: an optional '-' and 1..19
 * digits (nothing else: no '+', no spaces), fitting int64.  Every store
 * backend uses it, so that add means the same everywhere.
 * MLRT_ERR_INVALID otherwise. */
int mlrti_store_parse_counter(const void *p, size_t len, int64_t *out);

/* The wire name of op ("set", "wait_any", ...), or "?" for none. */
const char *mlrti_store_op_name(mlrti_store_op op);

/* Encode req (its op's fields only) into a malloc'd buffer *buf of *len
 * bytes; the caller frees it with free().  Does not validate beyond what
 * it needs: callers check arguments first.  MLRT_ERR_NOMEM,
 * MLRT_ERR_INVALID (unknown op). */
int mlrti_store_encode_request(const mlrti_store_req *req, void **buf, size_t *len);

/* Encode rep (the fields that are set) like mlrti_store_encode_request.
 * MLRT_ERR_NOMEM. */
int mlrti_store_encode_reply(const mlrti_store_rep *rep, void **buf, size_t *len);

/* Decode a request from len bytes at buf into *req.  Errors:
 * MLRT_ERR_TOO_LARGE (message over MLRTI_STORE_MAX_REQUEST, key over
 * MLRT_STORE_MAX_KEY, value over MLRT_STORE_MAX_VALUE, too many keys),
 * MLRT_ERR_VERSION (v is not MLRTI_STORE_VERSION), MLRT_ERR_PROTOCOL
 * (anything else malformed), MLRT_ERR_NOMEM.  On failure req->why says
 * what was wrong, and req->has_id whether req->id could still be read (so
 * that an error reply can be sent).  Call mlrti_store_req_fini afterwards
 * whatever the result. */
int mlrti_store_decode_request(const void *buf, size_t len, mlrti_store_req *req);

/* Release what decoding req allocated; safe on a zeroed or failed req. */
void mlrti_store_req_fini(mlrti_store_req *req);

/* Decode a reply, as mlrti_store_decode_request (cap MLRTI_STORE_MAX_REPLY). */
int mlrti_store_decode_reply(const void *buf, size_t len, mlrti_store_rep *rep);

/* Release what decoding rep allocated; safe on a zeroed or failed rep. */
void mlrti_store_rep_fini(mlrti_store_rep *rep);

/* Check that the len bytes at buf (at most max) are exactly one complete
 * msgpack object of bounded depth with at most max_objects objects, then
 * unpack it into msg (initialised by the caller).  Safe on any input: a
 * container announcing more elements than the bytes can hold is refused
 * before msgpack-c allocates for them.  why: MLRTI_STORE_WHY_LEN bytes. */
int mlrti_msgpack_unpack(const void *buf, size_t len, size_t max, size_t max_objects,
                         msgpack_unpacked *msg, char *why);

#endif
