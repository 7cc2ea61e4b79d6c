/* The store's wire protocol: msgpack maps in single ZeroMQ frames. */
#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/store_proto.h"

/* Deepest container nesting a message may have: a reply's map holds the
 * items array, which holds [key, value] arrays. */
#define SCAN_MAX_DEPTH 4

/* Most msgpack objects in a request (a wait with all its keys, plus the
 * other fields and some unknown ones) and in a reply (a full list). */
#define REQ_MAX_OBJECTS 4096
#define REP_MAX_OBJECTS (3 * MLRTI_STORE_MAX_ITEMS + 64)

/* Lowest status a reply may carry: mlrt_status values are small negatives. */
#define REP_MIN_STATUS (-1024)

/* The fields each op carries, as bits. */
enum {
	F_KEY = 1u << 0,    /* "key": non-empty string */
	F_PREFIX = 1u << 1, /* "key": string, may be empty */
	F_VAL = 1u << 2,    /* "val": bin */
	F_EXP = 1u << 3,    /* "exp": bin or nil */
	F_LEASE = 1u << 4,  /* "lease": int > 0 */
	F_LEASE_OPT = 1u << 5,
	F_KEYS = 1u << 6,   /* "keys": array of non-empty strings */
	F_TMO = 1u << 7,    /* "tmo": int in [0, MLRTI_STORE_MAX_MS] */
	F_DELTA = 1u << 8,  /* "delta": int */
	F_TTL = 1u << 9,    /* "ttl": int in [1, MLRTI_STORE_MAX_MS] */
};

static const struct {
	const char *name;
	unsigned fields;
} ops[MLRTI_STORE_OP_COUNT_] = {
	[MLRTI_STORE_OP_NONE] = {"?", 0},
	[MLRTI_STORE_OP_SET] = {"set", F_KEY | F_VAL | F_LEASE_OPT},
	[MLRTI_STORE_OP_GET] = {"get", F_KEY},
	[MLRTI_STORE_OP_WAIT] = {"wait", F_KEYS | F_TMO},
	[MLRTI_STORE_OP_WAIT_ANY] = {"wait_any", F_KEYS | F_TMO},
	[MLRTI_STORE_OP_ADD] = {"add", F_KEY | F_DELTA},
	[MLRTI_STORE_OP_CAS] = {"cas", F_KEY | F_EXP | F_VAL},
	[MLRTI_STORE_OP_DEL] = {"del", F_KEY},
	[MLRTI_STORE_OP_DEL_PREFIX] = {"del_prefix", F_PREFIX},
	[MLRTI_STORE_OP_LIST] = {"list", F_PREFIX},
	[MLRTI_STORE_OP_LEASE_GRANT] = {"lease_grant", F_TTL},
	[MLRTI_STORE_OP_LEASE_RENEW] = {"lease_renew", F_LEASE},
	[MLRTI_STORE_OP_LEASE_REVOKE] = {"lease_revoke", F_LEASE},
};

/* Field names, in the order of the slots the decoders collect them into. */
enum {
	RQ_V, RQ_OP, RQ_ID, RQ_KEY, RQ_VAL, RQ_EXP, RQ_LEASE, RQ_KEYS, RQ_TMO, RQ_DELTA, RQ_TTL,
	RQ_COUNT
};
static const char *const req_names[RQ_COUNT] = {
	[RQ_V] = "v", [RQ_OP] = "op", [RQ_ID] = "id", [RQ_KEY] = "key",
	[RQ_VAL] = "val", [RQ_EXP] = "exp", [RQ_LEASE] = "lease", [RQ_KEYS] = "keys",
	[RQ_TMO] = "tmo", [RQ_DELTA] = "delta", [RQ_TTL] = "ttl",
};

enum { RP_V, RP_ID, RP_ST, RP_VAL, RP_N, RP_ITEMS, RP_ERR, RP_COUNT };
static const char *const rep_names[RP_COUNT] = {
	[RP_V] = "v", [RP_ID] = "id", [RP_ST] = "st", [RP_VAL] = "val",
	[RP_N] = "n", [RP_ITEMS] = "items", [RP_ERR] = "err",
};

int mlrti_store_parse_counter(const void *p, size_t len, int64_t *out)
{
	const char *s = p;
	char text[24];
	size_t i = s != NULL && len > 0 && s[0] == '-';

	if (len == i || len >= sizeof(text))
		return MLRT_ERR_INVALID;
	for (; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return MLRT_ERR_INVALID;
	memcpy(text, s, len);
	text[len] = '\0';
	return mlrti_parse_int(text, INT64_MIN, INT64_MAX, out);
}

const char *mlrti_store_op_name(mlrti_store_op op)
{
	if ((int)op <= 0 || op >= MLRTI_STORE_OP_COUNT_)
		return "?";
	return ops[op].name;
}

/* ---- encoding ---- */

/* Pack a string (or bin when bin) of n bytes; 0 or -1 like msgpack_pack_*. */
static int pack_bytes(msgpack_packer *pk, const void *p, size_t n, int bin)
{
	int err = bin ? msgpack_pack_bin(pk, n) : msgpack_pack_str(pk, n);

	/* A zero-length body may come with a NULL pointer: skip the write. */
	if (err == 0 && n > 0)
		err = bin ? msgpack_pack_bin_body(pk, p, n) : msgpack_pack_str_body(pk, p, n);
	return err;
}

/* Pack a field name. */
static int pack_name(msgpack_packer *pk, const char *name)
{
	return pack_bytes(pk, name, strlen(name), 0);
}

/* Hand the packed bytes of sb to the caller, or free them on error. */
static int finish(msgpack_sbuffer *sb, int err, void **buf, size_t *len)
{
	if (err != 0) {
		msgpack_sbuffer_destroy(sb);
		mlrt_log(MLRT_LOG_ERROR, "store: out of memory encoding a message");
		return MLRT_ERR_NOMEM;
	}
	*len = sb->size;
	*buf = msgpack_sbuffer_release(sb);
	return MLRT_OK;
}

/* Count the bits set in x. */
static uint32_t count_bits(unsigned x)
{
	uint32_t n = 0;

	for (; x != 0; x &= x - 1)
		n++;
	return n;
}

int mlrti_store_encode_request(const mlrti_store_req *req, void **buf, size_t *len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	unsigned f;
	uint32_t n;
	int err = 0;

	if ((int)req->op <= 0 || req->op >= MLRTI_STORE_OP_COUNT_)
		return MLRT_ERR_INVALID;
	f = ops[req->op].fields;
	if ((f & F_LEASE_OPT) && req->lease == 0)
		f &= ~(unsigned)F_LEASE_OPT;
	n = 3 + count_bits(f);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	err |= msgpack_pack_map(&pk, n);
	err |= pack_name(&pk, "v") | msgpack_pack_uint32(&pk, MLRTI_STORE_VERSION);
	err |= pack_name(&pk, "op") | pack_name(&pk, ops[req->op].name);
	err |= pack_name(&pk, "id") | msgpack_pack_uint64(&pk, req->id);
	if (f & (F_KEY | F_PREFIX))
		err |= pack_name(&pk, "key") | pack_bytes(&pk, req->key.ptr, req->key.len, 0);
	if (f & F_VAL)
		err |= pack_name(&pk, "val") | pack_bytes(&pk, req->val.ptr, req->val.len, 1);
	if (f & F_EXP) {
		err |= pack_name(&pk, "exp");
		if (req->has_exp)
			err |= pack_bytes(&pk, req->exp.ptr, req->exp.len, 1);
		else
			err |= msgpack_pack_nil(&pk);
	}
	if (f & (F_LEASE | F_LEASE_OPT))
		err |= pack_name(&pk, "lease") | msgpack_pack_int64(&pk, req->lease);
	if (f & F_KEYS) {
		err |= pack_name(&pk, "keys") | msgpack_pack_array(&pk, (uint32_t)req->nkeys);
		for (size_t i = 0; i < req->nkeys; i++)
			err |= pack_bytes(&pk, req->keys[i].ptr, req->keys[i].len, 0);
	}
	if (f & F_TMO)
		err |= pack_name(&pk, "tmo") | msgpack_pack_int64(&pk, req->timeout_ms);
	if (f & F_DELTA)
		err |= pack_name(&pk, "delta") | msgpack_pack_int64(&pk, req->delta);
	if (f & F_TTL)
		err |= pack_name(&pk, "ttl") | msgpack_pack_int64(&pk, req->ttl_ms);
	return finish(&sb, err, buf, len);
}

int mlrti_store_encode_reply(const mlrti_store_rep *rep, void **buf, size_t *len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint32_t n = 3;
	int err = 0;

	n += (rep->has_val != 0) + (rep->has_n != 0) + (rep->has_items != 0) + (rep->err.len > 0);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	err |= msgpack_pack_map(&pk, n);
	err |= pack_name(&pk, "v") | msgpack_pack_uint32(&pk, MLRTI_STORE_VERSION);
	err |= pack_name(&pk, "id") | msgpack_pack_uint64(&pk, rep->id);
	err |= pack_name(&pk, "st") | msgpack_pack_int(&pk, rep->st);
	if (rep->has_val)
		err |= pack_name(&pk, "val") | pack_bytes(&pk, rep->val.ptr, rep->val.len, 1);
	if (rep->has_n)
		err |= pack_name(&pk, "n") | msgpack_pack_int64(&pk, rep->n);
	if (rep->has_items) {
		err |= pack_name(&pk, "items") | msgpack_pack_array(&pk, (uint32_t)rep->nitems);
		for (size_t i = 0; i < rep->nitems; i++) {
			err |= msgpack_pack_array(&pk, 2);
			err |= pack_bytes(&pk, rep->items[i].key.ptr, rep->items[i].key.len, 0);
			err |= pack_bytes(&pk, rep->items[i].val.ptr, rep->items[i].val.len, 1);
		}
	}
	if (rep->err.len > 0)
		err |= pack_name(&pk, "err") | pack_bytes(&pk, rep->err.ptr, rep->err.len, 0);
	return finish(&sb, err, buf, len);
}

/* ---- decoding ---- */

/* Record why decoding failed and return rc. */
static int fail_with(char *why, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail_with(char *why, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, MLRTI_STORE_WHY_LEN, fmt, ap);
	va_end(ap);
	return rc;
}

/* Read an n-byte big-endian count. */
static size_t read_be(const uint8_t *p, size_t n)
{
	size_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

/* Check that the len bytes at p are exactly one complete msgpack object,
 * containers nested at most SCAN_MAX_DEPTH deep, with at most max_objects
 * objects.  msgpack_unpack_next allocates room for every element a
 * container header announces before it reads them, so a few bytes
 * announcing 2^32 elements would make it allocate gigabytes; after this
 * check each announced element is known to be there. */
static int scan(const uint8_t *p, size_t len, size_t max_objects, char *why)
{
	size_t stack[SCAN_MAX_DEPTH + 1];
	size_t depth = 1, pos = 0, objects = 0;

	stack[0] = 1;
	while (depth > 0) {
		size_t cnt = 0, lenbytes = 0, skip = 0, children = 0;
		int container = 0, map = 0;
		uint8_t b;

		if (stack[depth - 1] == 0) {
			depth--;
			continue;
		}
		stack[depth - 1]--;
		if (pos >= len)
			return fail_with(why, MLRT_ERR_PROTOCOL, "truncated msgpack");
		if (++objects > max_objects)
			return fail_with(why, MLRT_ERR_TOO_LARGE, "more than %zu msgpack objects",
			                 max_objects);
		b = p[pos++];
		if (b <= 0x7f || b >= 0xe0) {
			/* fixint */
		} else if (b <= 0x8f) {
			container = map = 1;
			cnt = b & 0x0f;
		} else if (b <= 0x9f) {
			container = 1;
			cnt = b & 0x0f;
		} else if (b <= 0xbf) {
			cnt = b & 0x1f;
		} else {
			switch (b) {
			case 0xc0: case 0xc2: case 0xc3: break;                 /* nil, bool */
			case 0xc4: case 0xd9: lenbytes = 1; break;              /* bin8, str8 */
			case 0xc5: case 0xda: lenbytes = 2; break;
			case 0xc6: case 0xdb: lenbytes = 4; break;
			case 0xc7: lenbytes = 1; skip = 1; break;               /* ext: + type */
			case 0xc8: lenbytes = 2; skip = 1; break;
			case 0xc9: lenbytes = 4; skip = 1; break;
			case 0xca: skip = 4; break;                             /* float32 */
			case 0xcb: skip = 8; break;                             /* float64 */
			case 0xcc: case 0xd0: skip = 1; break;                  /* (u)int8 */
			case 0xcd: case 0xd1: skip = 2; break;
			case 0xce: case 0xd2: skip = 4; break;
			case 0xcf: case 0xd3: skip = 8; break;
			case 0xd4: skip = 2; break;                             /* fixext 1 */
			case 0xd5: skip = 3; break;
			case 0xd6: skip = 5; break;
			case 0xd7: skip = 9; break;
			case 0xd8: skip = 17; break;
			case 0xdc: container = 1; lenbytes = 2; break;          /* array16 */
			case 0xdd: container = 1; lenbytes = 4; break;
			case 0xde: container = map = 1; lenbytes = 2; break;    /* map16 */
			case 0xdf: container = map = 1; lenbytes = 4; break;
			default:
				return fail_with(why, MLRT_ERR_PROTOCOL,
				                 "invalid msgpack byte 0x%02x", b);
			}
		}
		if (lenbytes > 0) {
			if (len - pos < lenbytes)
				return fail_with(why, MLRT_ERR_PROTOCOL, "truncated msgpack");
			cnt = read_be(p + pos, lenbytes);
			pos += lenbytes;
		}
		if (container)
			children = map ? 2 * cnt : cnt;
		else
			skip += cnt;
		if (len - pos < skip)
			return fail_with(why, MLRT_ERR_PROTOCOL, "truncated msgpack");
		pos += skip;
		if (children > 0) {
			/* Every element takes at least one byte. */
			if (children > len - pos)
				return fail_with(why, MLRT_ERR_PROTOCOL, "truncated msgpack");
			if (depth == SCAN_MAX_DEPTH)
				return fail_with(why, MLRT_ERR_PROTOCOL, "msgpack nested too deep");
			stack[depth++] = children;
		}
	}
	if (pos != len)
		return fail_with(why, MLRT_ERR_PROTOCOL, "%zu bytes after the msgpack object",
		                 len - pos);
	return MLRT_OK;
}

int mlrti_msgpack_unpack(const void *buf, size_t len, size_t max, size_t max_objects,
                         msgpack_unpacked *msg, char *why)
{
	size_t off = 0;
	int rc;

	if (len > max)
		return fail_with(why, MLRT_ERR_TOO_LARGE,
		                 "%zu-byte message over the %zu-byte limit", len, max);
	if (len == 0 || buf == NULL)
		return fail_with(why, MLRT_ERR_PROTOCOL, "empty message");
	rc = scan(buf, len, max_objects, why);
	if (rc != MLRT_OK)
		return rc;
	switch (msgpack_unpack_next(msg, buf, len, &off)) {
	case MSGPACK_UNPACK_SUCCESS:
		break;
	case MSGPACK_UNPACK_NOMEM_ERROR:
		return fail_with(why, MLRT_ERR_NOMEM, "out of memory unpacking");
	default:
		/* scan() accepted it, so this is msgpack-c disagreeing with us. */
		return fail_with(why, MLRT_ERR_PROTOCOL, "msgpack rejected the message");
	}
	if (off != len)
		return fail_with(why, MLRT_ERR_PROTOCOL, "bytes after the msgpack object");
	return MLRT_OK;
}

/* Point slot[i] at the value of the field named names[i] in the map o.
 * Unknown fields are ignored; a repeated one is an error. */
static int collect(const msgpack_object *o, const char *const *names, size_t nnames,
                   const msgpack_object **slot, char *why)
{
	if (o->type != MSGPACK_OBJECT_MAP)
		return fail_with(why, MLRT_ERR_PROTOCOL, "message is not a msgpack map");
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[i];

		if (kv->key.type != MSGPACK_OBJECT_STR)
			return fail_with(why, MLRT_ERR_PROTOCOL, "a field name is not a string");
		for (size_t j = 0; j < nnames; j++) {
			const msgpack_object_str *k = &kv->key.via.str;
			size_t n = strlen(names[j]);

			if (k->size != n || memcmp(k->ptr, names[j], n) != 0)
				continue;
			if (slot[j] != NULL)
				return fail_with(why, MLRT_ERR_PROTOCOL, "field '%s' given twice",
				                 names[j]);
			slot[j] = &kv->val;
		}
	}
	return MLRT_OK;
}

/* Read field name (o may be NULL: missing) as an integer in [lo, hi]. */
static int get_int(const msgpack_object *o, const char *name, int64_t lo, int64_t hi,
                   int64_t *out, char *why)
{
	int64_t v;

	if (o == NULL)
		return fail_with(why, MLRT_ERR_PROTOCOL, "field '%s' missing", name);
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t)INT64_MAX)
		v = (int64_t)o->via.u64;
	else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		v = o->via.i64;
	else
		return fail_with(why, MLRT_ERR_PROTOCOL, "field '%s' is not an integer", name);
	if (v < lo || v > hi)
		return fail_with(why, MLRT_ERR_PROTOCOL, "field '%s' out of range", name);
	*out = v;
	return MLRT_OK;
}

/* Read a key (a string of 1..MLRT_STORE_MAX_KEY bytes without NUL; empty
 * allowed when allow_empty). */
static int get_key(const msgpack_object *o, const char *name, int allow_empty,
                   mlrti_store_str *out, char *why)
{
	if (o == NULL)
		return fail_with(why, MLRT_ERR_PROTOCOL, "field '%s' missing", name);
	if (o->type != MSGPACK_OBJECT_STR)
		return fail_with(why, MLRT_ERR_PROTOCOL, "field '%s' is not a string", name);
	if (o->via.str.size > MLRT_STORE_MAX_KEY)
		return fail_with(why, MLRT_ERR_TOO_LARGE, "%s of %u bytes over the %d-byte limit",
		                 name, o->via.str.size, MLRT_STORE_MAX_KEY);
	if (o->via.str.size == 0 && !allow_empty)
		return fail_with(why, MLRT_ERR_PROTOCOL, "field '%s' is empty", name);
	if (o->via.str.size > 0 && memchr(o->via.str.ptr, '\0', o->via.str.size) != NULL)
		return fail_with(why, MLRT_ERR_PROTOCOL, "field '%s' contains a NUL byte", name);
	out->ptr = o->via.str.ptr;
	out->len = o->via.str.size;
	return MLRT_OK;
}

/* Read a value: bin of at most MLRT_STORE_MAX_VALUE bytes. */
static int get_val(const msgpack_object *o, const char *name, mlrti_store_bytes *out, char *why)
{
	if (o == NULL)
		return fail_with(why, MLRT_ERR_PROTOCOL, "field '%s' missing", name);
	if (o->type != MSGPACK_OBJECT_BIN)
		return fail_with(why, MLRT_ERR_PROTOCOL, "field '%s' is not bin", name);
	if (o->via.bin.size > MLRT_STORE_MAX_VALUE)
		return fail_with(why, MLRT_ERR_TOO_LARGE,
		                 "value of %u bytes over the %u-byte limit", o->via.bin.size,
		                 MLRT_STORE_MAX_VALUE);
	out->ptr = o->via.bin.ptr;
	out->len = o->via.bin.size;
	return MLRT_OK;
}

/* Read the "id" (recovered first, so that even a bad message can be
 * answered) and check the "v" field. */
static int get_header(const msgpack_object *v, const msgpack_object *id, uint64_t *out,
                      int *has_id, char *why)
{
	int64_t ver = 0;
	int rc;

	if (id != NULL && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		*out = id->via.u64;
		*has_id = 1;
	}
	if (v == NULL)
		return fail_with(why, MLRT_ERR_PROTOCOL, "field 'v' missing");
	rc = get_int(v, "v", 0, INT64_MAX, &ver, why);
	if (rc != MLRT_OK)
		return rc;
	if (ver != MLRTI_STORE_VERSION)
		return fail_with(why, MLRT_ERR_VERSION, "protocol version %lld, not %d",
		                 (long long)ver, MLRTI_STORE_VERSION);
	if (!*has_id)
		return fail_with(why, MLRT_ERR_PROTOCOL, "field 'id' %s",
		                 id == NULL ? "missing" : "is not an unsigned integer");
	return MLRT_OK;
}

/* Read the "keys" array of a wait into a malloc'd array (*owned). */
static int get_keys(const msgpack_object *o, mlrti_store_req *req)
{
	mlrti_store_str *keys;
	int rc;

	if (o == NULL)
		return fail_with(req->why, MLRT_ERR_PROTOCOL, "field 'keys' missing");
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return fail_with(req->why, MLRT_ERR_PROTOCOL, "field 'keys' is not an array");
	if (o->via.array.size == 0)
		return fail_with(req->why, MLRT_ERR_PROTOCOL, "field 'keys' is empty");
	if (o->via.array.size > MLRTI_STORE_MAX_WAIT_KEYS)
		return fail_with(req->why, MLRT_ERR_TOO_LARGE, "%u keys, over the limit of %d",
		                 o->via.array.size, MLRTI_STORE_MAX_WAIT_KEYS);
	keys = calloc(o->via.array.size, sizeof(*keys));
	if (keys == NULL)
		return fail_with(req->why, MLRT_ERR_NOMEM, "out of memory");
	req->owned = keys;
	for (uint32_t i = 0; i < o->via.array.size; i++) {
		rc = get_key(&o->via.array.ptr[i], "keys[]", 0, &keys[i], req->why);
		if (rc != MLRT_OK)
			return rc;
	}
	req->keys = keys;
	req->nkeys = o->via.array.size;
	return MLRT_OK;
}

/* Read the fields op uses from the collected slots f. */
static int get_op_fields(const msgpack_object *const *f, mlrti_store_req *req)
{
	unsigned need = ops[req->op].fields;
	int rc = MLRT_OK;

	if (need & (F_KEY | F_PREFIX))
		MLRTI_CHECK_GOTO(get_key(f[RQ_KEY], "key", (need & F_PREFIX) != 0, &req->key,
		                         req->why), rc, fail);
	if (need & F_VAL)
		MLRTI_CHECK_GOTO(get_val(f[RQ_VAL], "val", &req->val, req->why), rc, fail);
	if ((need & F_EXP) && f[RQ_EXP] != NULL && f[RQ_EXP]->type == MSGPACK_OBJECT_NIL) {
		req->has_exp = 0;
	} else if (need & F_EXP) {
		MLRTI_CHECK_GOTO(get_val(f[RQ_EXP], "exp", &req->exp, req->why), rc, fail);
		req->has_exp = 1;
	}
	if ((need & F_LEASE) || ((need & F_LEASE_OPT) && f[RQ_LEASE] != NULL))
		MLRTI_CHECK_GOTO(get_int(f[RQ_LEASE], "lease", 1, INT64_MAX, &req->lease, req->why),
		                 rc, fail);
	if (need & F_KEYS)
		MLRTI_CHECK_GOTO(get_keys(f[RQ_KEYS], req), rc, fail);
	if (need & F_TMO)
		MLRTI_CHECK_GOTO(get_int(f[RQ_TMO], "tmo", 0, MLRTI_STORE_MAX_MS, &req->timeout_ms,
		                         req->why), rc, fail);
	if (need & F_DELTA)
		MLRTI_CHECK_GOTO(get_int(f[RQ_DELTA], "delta", INT64_MIN, INT64_MAX, &req->delta,
		                         req->why), rc, fail);
	if (need & F_TTL)
		MLRTI_CHECK_GOTO(get_int(f[RQ_TTL], "ttl", 1, MLRTI_STORE_MAX_MS, &req->ttl_ms,
		                         req->why), rc, fail);
fail:
	return rc;
}

int mlrti_store_decode_request(const void *buf, size_t len, mlrti_store_req *req)
{
	const msgpack_object *f[RQ_COUNT] = {0};
	const msgpack_object *op;
	int rc;

	memset(req, 0, sizeof(*req));
	msgpack_unpacked_init(&req->msg);
	MLRTI_CHECK_GOTO(mlrti_msgpack_unpack(buf, len, MLRTI_STORE_MAX_REQUEST, REQ_MAX_OBJECTS, &req->msg,
	                        req->why), rc, fail);
	MLRTI_CHECK_GOTO(collect(&req->msg.data, req_names, RQ_COUNT, f, req->why), rc, fail);
	MLRTI_CHECK_GOTO(get_header(f[RQ_V], f[RQ_ID], &req->id, &req->has_id, req->why), rc,
	                 fail);
	op = f[RQ_OP];
	if (op == NULL || op->type != MSGPACK_OBJECT_STR) {
		rc = fail_with(req->why, MLRT_ERR_PROTOCOL, "field 'op' %s",
		               op == NULL ? "missing" : "is not a string");
		goto fail;
	}
	for (int i = 1; i < MLRTI_STORE_OP_COUNT_; i++) {
		size_t n = strlen(ops[i].name);

		if (op->via.str.size == n && memcmp(op->via.str.ptr, ops[i].name, n) == 0)
			req->op = (mlrti_store_op)i;
	}
	if (req->op == MLRTI_STORE_OP_NONE) {
		char name[33];
		size_t n = op->via.str.size < 32 ? op->via.str.size : 32;

		/* The name goes into a log line: keep it printable. */
		for (size_t i = 0; i < n; i++) {
			char ch = op->via.str.ptr[i];

			name[i] = isprint((unsigned char)ch) ? ch : '?';
		}
		name[n] = '\0';
		rc = fail_with(req->why, MLRT_ERR_PROTOCOL, "unknown op '%s'", name);
		goto fail;
	}
	MLRTI_CHECK_GOTO(get_op_fields(f, req), rc, fail);
	return MLRT_OK;
fail:
	return rc;
}

void mlrti_store_req_fini(mlrti_store_req *req)
{
	msgpack_unpacked_destroy(&req->msg);
	free(req->owned);
	req->owned = NULL;
	req->keys = NULL;
	req->nkeys = 0;
}

/* Read the "items" array of a list reply into a malloc'd array (*owned). */
static int get_items(const msgpack_object *o, mlrti_store_rep *rep)
{
	mlrti_store_item *items;
	int rc;

	if (o->type != MSGPACK_OBJECT_ARRAY)
		return fail_with(rep->why, MLRT_ERR_PROTOCOL, "field 'items' is not an array");
	if (o->via.array.size > MLRTI_STORE_MAX_ITEMS)
		return fail_with(rep->why, MLRT_ERR_TOO_LARGE, "%u items, over the limit",
		                 o->via.array.size);
	rep->has_items = 1;
	if (o->via.array.size == 0)
		return MLRT_OK;
	items = calloc(o->via.array.size, sizeof(*items));
	if (items == NULL)
		return fail_with(rep->why, MLRT_ERR_NOMEM, "out of memory");
	rep->owned = items;
	for (uint32_t i = 0; i < o->via.array.size; i++) {
		const msgpack_object *it = &o->via.array.ptr[i];

		if (it->type != MSGPACK_OBJECT_ARRAY || it->via.array.size != 2)
			return fail_with(rep->why, MLRT_ERR_PROTOCOL,
			                 "an item is not a [key, value] array");
		rc = get_key(&it->via.array.ptr[0], "item key", 0, &items[i].key, rep->why);
		if (rc != MLRT_OK)
			return rc;
		rc = get_val(&it->via.array.ptr[1], "item value", &items[i].val, rep->why);
		if (rc != MLRT_OK)
			return rc;
	}
	rep->items = items;
	rep->nitems = o->via.array.size;
	return MLRT_OK;
}

int mlrti_store_decode_reply(const void *buf, size_t len, mlrti_store_rep *rep)
{
	const msgpack_object *f[RP_COUNT] = {0};
	int64_t st = 0;
	int rc;

	memset(rep, 0, sizeof(*rep));
	msgpack_unpacked_init(&rep->msg);
	MLRTI_CHECK_GOTO(mlrti_msgpack_unpack(buf, len, MLRTI_STORE_MAX_REPLY, REP_MAX_OBJECTS, &rep->msg,
	                        rep->why), rc, fail);
	MLRTI_CHECK_GOTO(collect(&rep->msg.data, rep_names, RP_COUNT, f, rep->why), rc, fail);
	MLRTI_CHECK_GOTO(get_header(f[RP_V], f[RP_ID], &rep->id, &rep->has_id, rep->why), rc,
	                 fail);
	MLRTI_CHECK_GOTO(get_int(f[RP_ST], "st", REP_MIN_STATUS, 0, &st, rep->why), rc, fail);
	rep->st = (int)st;
	if (f[RP_VAL] != NULL) {
		MLRTI_CHECK_GOTO(get_val(f[RP_VAL], "val", &rep->val, rep->why), rc, fail);
		rep->has_val = 1;
	}
	if (f[RP_N] != NULL) {
		MLRTI_CHECK_GOTO(get_int(f[RP_N], "n", INT64_MIN, INT64_MAX, &rep->n, rep->why), rc,
		                 fail);
		rep->has_n = 1;
	}
	if (f[RP_ITEMS] != NULL)
		MLRTI_CHECK_GOTO(get_items(f[RP_ITEMS], rep), rc, fail);
	if (f[RP_ERR] != NULL) {
		if (f[RP_ERR]->type != MSGPACK_OBJECT_STR) {
			rc = fail_with(rep->why, MLRT_ERR_PROTOCOL, "field 'err' is not a string");
			goto fail;
		}
		rep->err.ptr = f[RP_ERR]->via.str.ptr;
		rep->err.len = f[RP_ERR]->via.str.size;
	}
	return MLRT_OK;
fail:
	return rc;
}

void mlrti_store_rep_fini(mlrti_store_rep *rep)
{
	msgpack_unpacked_destroy(&rep->msg);
	free(rep->owned);
	rep->owned = NULL;
	rep->items = NULL;
	rep->nitems = 0;
}
