/* Unit tests of the store's wire protocol: round trips, every malformed
 * case with its exact status, and a seeded mutation loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/common.h"
#include "runtime/store_proto.h"

/* ---- building messages by hand ---- */

typedef struct mb {
	msgpack_sbuffer sb;
	msgpack_packer pk;
} mb;

static void mb_init(mb *m)
{
	msgpack_sbuffer_init(&m->sb);
	msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mb_fini(mb *m)
{
	msgpack_sbuffer_destroy(&m->sb);
}

static void mb_str(mb *m, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(&m->pk, n);
	msgpack_pack_str_body(&m->pk, s, n);
}

static void mb_strn(mb *m, const char *s, size_t n)
{
	msgpack_pack_str(&m->pk, n);
	if (n > 0)
		msgpack_pack_str_body(&m->pk, s, n);
}

static void mb_bin(mb *m, const void *p, size_t n)
{
	msgpack_pack_bin(&m->pk, n);
	if (n > 0)
		msgpack_pack_bin_body(&m->pk, p, n);
}

/* Start a request map of n fields with v, id and op already in it (those
 * three count in n). */
static void mb_req(mb *m, uint32_t n, unsigned v, uint64_t id, const char *op)
{
	mb_init(m);
	msgpack_pack_map(&m->pk, n);
	mb_str(m, "v");
	msgpack_pack_unsigned_int(&m->pk, v);
	mb_str(m, "id");
	msgpack_pack_uint64(&m->pk, id);
	mb_str(m, "op");
	mb_str(m, op);
}

/* Decode m as a request and return the status; req is finalised. */
static int dec_req(mb *m, int *has_id, uint64_t *id)
{
	mlrti_store_req req;
	int rc = mlrti_store_decode_request(m->sb.data, m->sb.size, &req);

	if (has_id != NULL)
		*has_id = req.has_id;
	if (id != NULL)
		*id = req.id;
	if (rc != MLRT_OK)
		assert_true(req.why[0] != '\0');
	mlrti_store_req_fini(&req);
	mb_fini(m);
	return rc;
}

static int dec_rep(mb *m)
{
	mlrti_store_rep rep;
	int rc = mlrti_store_decode_reply(m->sb.data, m->sb.size, &rep);

	mlrti_store_rep_fini(&rep);
	mb_fini(m);
	return rc;
}

static int dec_req_bytes(const void *p, size_t n)
{
	mlrti_store_req req;
	int rc = mlrti_store_decode_request(p, n, &req);

	mlrti_store_req_fini(&req);
	return rc;
}

/* ---- round trips ---- */

static mlrti_store_str S(const char *s)
{
	return (mlrti_store_str){s, strlen(s)};
}

/* Encode req, decode it again into *out (caller finalises). */
static void round_trip(const mlrti_store_req *req, mlrti_store_req *out, void **buf)
{
	size_t len;

	assert_int_equal(mlrti_store_encode_request(req, buf, &len), MLRT_OK);
	assert_int_equal(mlrti_store_decode_request(*buf, len, out), MLRT_OK);
	assert_int_equal(out->op, req->op);
	assert_true(out->has_id);
	assert_true(out->id == req->id);
}

static void assert_str(mlrti_store_str got, const char *want)
{
	assert_int_equal(got.len, strlen(want));
	assert_memory_equal(got.ptr, want, got.len);
}

static void test_round_trip_requests(void **state)
{
	static const char bin[] = {'a', '\0', 'b', '\xff'};
	const mlrti_store_str keys[3] = {S("k1"), S("k2"), S("k/3")};
	mlrti_store_req in, out;
	void *buf;

	(void)state;
	in = (mlrti_store_req){.op = MLRTI_STORE_OP_SET, .id = 7, .key = S("a/b"),
	                       .val = {bin, sizeof(bin)}};
	round_trip(&in, &out, &buf);
	assert_str(out.key, "a/b");
	assert_int_equal(out.val.len, sizeof(bin));
	assert_memory_equal(out.val.ptr, bin, sizeof(bin));
	assert_int_equal(out.lease, 0);
	mlrti_store_req_fini(&out);
	free(buf);

	in.lease = 99;
	in.val = (mlrti_store_bytes){NULL, 0};
	in.id = UINT64_MAX;
	round_trip(&in, &out, &buf);
	assert_int_equal(out.lease, 99);
	assert_int_equal(out.val.len, 0);
	mlrti_store_req_fini(&out);
	free(buf);

	in = (mlrti_store_req){.op = MLRTI_STORE_OP_GET, .id = 1, .key = S("x")};
	round_trip(&in, &out, &buf);
	assert_str(out.key, "x");
	mlrti_store_req_fini(&out);
	free(buf);

	for (int any = 0; any < 2; any++) {
		in = (mlrti_store_req){.op = any ? MLRTI_STORE_OP_WAIT_ANY : MLRTI_STORE_OP_WAIT,
		                       .id = 2, .keys = keys, .nkeys = 3, .timeout_ms = 1500};
		round_trip(&in, &out, &buf);
		assert_int_equal(out.nkeys, 3);
		assert_str(out.keys[2], "k/3");
		assert_int_equal(out.timeout_ms, 1500);
		mlrti_store_req_fini(&out);
		free(buf);
	}

	in = (mlrti_store_req){.op = MLRTI_STORE_OP_ADD, .id = 3, .key = S("c"),
	                       .delta = INT64_MIN};
	round_trip(&in, &out, &buf);
	assert_true(out.delta == INT64_MIN);
	mlrti_store_req_fini(&out);
	free(buf);

	in = (mlrti_store_req){.op = MLRTI_STORE_OP_CAS, .id = 4, .key = S("c"), .has_exp = 1,
	                       .exp = {"old", 3}, .val = {"new", 3}};
	round_trip(&in, &out, &buf);
	assert_true(out.has_exp);
	assert_memory_equal(out.exp.ptr, "old", 3);
	assert_memory_equal(out.val.ptr, "new", 3);
	mlrti_store_req_fini(&out);
	free(buf);
	in.has_exp = 0;
	round_trip(&in, &out, &buf);
	assert_false(out.has_exp);
	mlrti_store_req_fini(&out);
	free(buf);

	in = (mlrti_store_req){.op = MLRTI_STORE_OP_DEL, .id = 5, .key = S("d")};
	round_trip(&in, &out, &buf);
	mlrti_store_req_fini(&out);
	free(buf);

	for (int list = 0; list < 2; list++) {
		in = (mlrti_store_req){.op = list ? MLRTI_STORE_OP_LIST : MLRTI_STORE_OP_DEL_PREFIX,
		                       .id = 6, .key = S("")};
		round_trip(&in, &out, &buf);
		assert_int_equal(out.key.len, 0);
		mlrti_store_req_fini(&out);
		free(buf);
	}

	in = (mlrti_store_req){.op = MLRTI_STORE_OP_LEASE_GRANT, .id = 8, .ttl_ms = 5000};
	round_trip(&in, &out, &buf);
	assert_int_equal(out.ttl_ms, 5000);
	mlrti_store_req_fini(&out);
	free(buf);

	for (int revoke = 0; revoke < 2; revoke++) {
		in = (mlrti_store_req){.op = revoke ? MLRTI_STORE_OP_LEASE_REVOKE
		                                    : MLRTI_STORE_OP_LEASE_RENEW,
		                       .id = 9, .lease = INT64_MAX};
		round_trip(&in, &out, &buf);
		assert_true(out.lease == INT64_MAX);
		mlrti_store_req_fini(&out);
		free(buf);
	}
	assert_int_equal(mlrti_store_encode_request(&(mlrti_store_req){.op = MLRTI_STORE_OP_NONE},
	                                            &buf, &(size_t){0}),
	                 MLRT_ERR_INVALID);
}

static void test_round_trip_replies(void **state)
{
	const mlrti_store_item items[2] = {{S("a"), {"1", 1}}, {S("b"), {NULL, 0}}};
	mlrti_store_rep in, out;
	void *buf;
	size_t len;

	(void)state;
	in = (mlrti_store_rep){.id = 11, .st = MLRT_ERR_NOT_FOUND, .err = S("no such key")};
	assert_int_equal(mlrti_store_encode_reply(&in, &buf, &len), MLRT_OK);
	assert_int_equal(mlrti_store_decode_reply(buf, len, &out), MLRT_OK);
	assert_true(out.id == 11);
	assert_int_equal(out.st, MLRT_ERR_NOT_FOUND);
	assert_false(out.has_val || out.has_n || out.has_items);
	assert_str(out.err, "no such key");
	mlrti_store_rep_fini(&out);
	free(buf);

	in = (mlrti_store_rep){.id = 12, .has_val = 1, .val = {"x\0y", 3}, .has_n = 1, .n = -5};
	assert_int_equal(mlrti_store_encode_reply(&in, &buf, &len), MLRT_OK);
	assert_int_equal(mlrti_store_decode_reply(buf, len, &out), MLRT_OK);
	assert_int_equal(out.st, MLRT_OK);
	assert_true(out.has_val && out.has_n);
	assert_memory_equal(out.val.ptr, "x\0y", 3);
	assert_true(out.n == -5);
	assert_int_equal(out.err.len, 0);
	mlrti_store_rep_fini(&out);
	free(buf);

	in = (mlrti_store_rep){.id = 13, .has_items = 1, .items = items, .nitems = 2};
	assert_int_equal(mlrti_store_encode_reply(&in, &buf, &len), MLRT_OK);
	assert_int_equal(mlrti_store_decode_reply(buf, len, &out), MLRT_OK);
	assert_true(out.has_items);
	assert_int_equal(out.nitems, 2);
	assert_str(out.items[0].key, "a");
	assert_memory_equal(out.items[0].val.ptr, "1", 1);
	assert_str(out.items[1].key, "b");
	assert_int_equal(out.items[1].val.len, 0);
	mlrti_store_rep_fini(&out);
	free(buf);

	in = (mlrti_store_rep){.id = 14, .has_items = 1};
	assert_int_equal(mlrti_store_encode_reply(&in, &buf, &len), MLRT_OK);
	assert_int_equal(mlrti_store_decode_reply(buf, len, &out), MLRT_OK);
	assert_true(out.has_items);
	assert_int_equal(out.nitems, 0);
	mlrti_store_rep_fini(&out);
	free(buf);
}

/* ---- malformed requests ---- */

static void test_not_msgpack(void **state)
{
	static const uint8_t garbage[] = {0xc1, 0x00, 0x01};
	static const uint8_t array[] = {0x91, 0x01};
	static const uint8_t integer[] = {0x2a};
	static const uint8_t huge_array[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x00};
	static const uint8_t huge_map[] = {0xdf, 0x7f, 0xff, 0xff, 0xff};
	static const uint8_t huge_str[] = {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'};
	uint8_t deep[16];
	mlrti_store_req req;

	(void)state;
	assert_int_equal(dec_req_bytes(garbage, sizeof(garbage)), MLRT_ERR_PROTOCOL);
	assert_int_equal(dec_req_bytes(garbage, 0), MLRT_ERR_PROTOCOL);
	assert_int_equal(dec_req_bytes(NULL, 0), MLRT_ERR_PROTOCOL);
	assert_int_equal(dec_req_bytes(array, sizeof(array)), MLRT_ERR_PROTOCOL);
	assert_int_equal(dec_req_bytes(integer, sizeof(integer)), MLRT_ERR_PROTOCOL);
	assert_int_equal(dec_req_bytes(huge_array, sizeof(huge_array)), MLRT_ERR_PROTOCOL);
	assert_int_equal(dec_req_bytes(huge_map, sizeof(huge_map)), MLRT_ERR_PROTOCOL);
	assert_int_equal(dec_req_bytes(huge_str, sizeof(huge_str)), MLRT_ERR_PROTOCOL);
	/* Arrays nested 15 deep. */
	memset(deep, 0x91, sizeof(deep));
	deep[15] = 0x00;
	assert_int_equal(dec_req_bytes(deep, sizeof(deep)), MLRT_ERR_PROTOCOL);
	/* The decoder leaves a failed request safe to finalise twice. */
	assert_int_equal(mlrti_store_decode_request(garbage, 1, &req), MLRT_ERR_PROTOCOL);
	assert_false(req.has_id);
	mlrti_store_req_fini(&req);
	mlrti_store_req_fini(&req);
}

static void test_truncated_and_trailing(void **state)
{
	mlrti_store_req in = {.op = MLRTI_STORE_OP_SET, .id = 3, .key = S("key"),
	                      .val = {"value", 5}};
	uint8_t *buf, *longer;
	size_t len;

	(void)state;
	assert_int_equal(mlrti_store_encode_request(&in, (void **)&buf, &len), MLRT_OK);
	for (size_t cut = 0; cut < len; cut++)
		assert_int_equal(dec_req_bytes(buf, cut), MLRT_ERR_PROTOCOL);
	assert_int_equal(dec_req_bytes(buf, len), MLRT_OK);
	longer = malloc(len + 1);
	assert_non_null(longer);
	memcpy(longer, buf, len);
	longer[len] = 0xc0;
	assert_int_equal(dec_req_bytes(longer, len + 1), MLRT_ERR_PROTOCOL);
	free(longer);
	free(buf);
}

static void test_header_fields(void **state)
{
	mb m;
	int has_id;
	uint64_t id;

	(void)state;
	/* Wrong version: rejected, but the id is recovered for the error reply. */
	mb_req(&m, 4, 2, 77, "get");
	mb_str(&m, "key");
	mb_str(&m, "k");
	assert_int_equal(dec_req(&m, &has_id, &id), MLRT_ERR_VERSION);
	assert_true(has_id);
	assert_true(id == 77);

	mb_req(&m, 4, 0, 1, "get");
	mb_str(&m, "key");
	mb_str(&m, "k");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_VERSION);

	/* v missing; v of the wrong type. */
	mb_init(&m);
	msgpack_pack_map(&m.pk, 3);
	mb_str(&m, "id");
	msgpack_pack_uint64(&m.pk, 5);
	mb_str(&m, "op");
	mb_str(&m, "get");
	mb_str(&m, "key");
	mb_str(&m, "k");
	assert_int_equal(dec_req(&m, &has_id, &id), MLRT_ERR_PROTOCOL);
	assert_true(has_id && id == 5);

	mb_init(&m);
	msgpack_pack_map(&m.pk, 4);
	mb_str(&m, "v");
	mb_str(&m, "1");
	mb_str(&m, "id");
	msgpack_pack_uint64(&m.pk, 5);
	mb_str(&m, "op");
	mb_str(&m, "get");
	mb_str(&m, "key");
	mb_str(&m, "k");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	/* id missing; id negative. */
	mb_init(&m);
	msgpack_pack_map(&m.pk, 3);
	mb_str(&m, "v");
	msgpack_pack_uint32(&m.pk, 1);
	mb_str(&m, "op");
	mb_str(&m, "get");
	mb_str(&m, "key");
	mb_str(&m, "k");
	assert_int_equal(dec_req(&m, &has_id, NULL), MLRT_ERR_PROTOCOL);
	assert_false(has_id);

	mb_init(&m);
	msgpack_pack_map(&m.pk, 4);
	mb_str(&m, "v");
	msgpack_pack_uint32(&m.pk, 1);
	mb_str(&m, "id");
	msgpack_pack_int64(&m.pk, -3);
	mb_str(&m, "op");
	mb_str(&m, "get");
	mb_str(&m, "key");
	mb_str(&m, "k");
	assert_int_equal(dec_req(&m, &has_id, NULL), MLRT_ERR_PROTOCOL);
	assert_false(has_id);

	/* op missing, of the wrong type, unknown. */
	mb_init(&m);
	msgpack_pack_map(&m.pk, 3);
	mb_str(&m, "v");
	msgpack_pack_uint32(&m.pk, 1);
	mb_str(&m, "id");
	msgpack_pack_uint64(&m.pk, 5);
	mb_str(&m, "key");
	mb_str(&m, "k");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	mb_init(&m);
	msgpack_pack_map(&m.pk, 4);
	mb_str(&m, "v");
	msgpack_pack_uint32(&m.pk, 1);
	mb_str(&m, "id");
	msgpack_pack_uint64(&m.pk, 5);
	mb_str(&m, "op");
	msgpack_pack_uint32(&m.pk, 2);
	mb_str(&m, "key");
	mb_str(&m, "k");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	mb_req(&m, 4, 1, 5, "frobnicate\n");
	mb_str(&m, "key");
	mb_str(&m, "k");
	assert_int_equal(dec_req(&m, &has_id, NULL), MLRT_ERR_PROTOCOL);
	assert_true(has_id);

	/* A field name that is not a string; a field given twice. */
	mb_req(&m, 4, 1, 5, "get");
	msgpack_pack_uint32(&m.pk, 3);
	mb_str(&m, "k");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	mb_req(&m, 5, 1, 5, "get");
	mb_str(&m, "key");
	mb_str(&m, "k");
	mb_str(&m, "key");
	mb_str(&m, "j");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	/* Unknown fields are ignored. */
	mb_req(&m, 5, 1, 5, "get");
	mb_str(&m, "key");
	mb_str(&m, "k");
	mb_str(&m, "future");
	msgpack_pack_nil(&m.pk);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_OK);
}

static void test_key_fields(void **state)
{
	char key[MLRT_STORE_MAX_KEY + 2];
	mb m;

	(void)state;
	memset(key, 'k', sizeof(key));
	/* key missing, not a string, empty, with NUL, at and over the limit. */
	mb_req(&m, 3, 1, 1, "get");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	mb_req(&m, 4, 1, 1, "get");
	mb_str(&m, "key");
	mb_bin(&m, "k", 1);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	mb_req(&m, 4, 1, 1, "get");
	mb_str(&m, "key");
	mb_str(&m, "");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	mb_req(&m, 4, 1, 1, "list");
	mb_str(&m, "key");
	mb_str(&m, "");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_OK);

	mb_req(&m, 4, 1, 1, "get");
	mb_str(&m, "key");
	mb_strn(&m, "a\0b", 3);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	mb_req(&m, 4, 1, 1, "get");
	mb_str(&m, "key");
	mb_strn(&m, key, MLRT_STORE_MAX_KEY);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_OK);

	mb_req(&m, 4, 1, 1, "get");
	mb_str(&m, "key");
	mb_strn(&m, key, MLRT_STORE_MAX_KEY + 1);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_TOO_LARGE);
}

static void test_value_fields(void **state)
{
	char *big = calloc(1, (size_t)MLRT_STORE_MAX_VALUE + 1);
	mb m;

	(void)state;
	assert_non_null(big);
	/* val missing, a string instead of bin, at and over the limit. */
	mb_req(&m, 4, 1, 1, "set");
	mb_str(&m, "key");
	mb_str(&m, "k");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	mb_req(&m, 5, 1, 1, "set");
	mb_str(&m, "key");
	mb_str(&m, "k");
	mb_str(&m, "val");
	mb_str(&m, "text");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	mb_req(&m, 5, 1, 1, "set");
	mb_str(&m, "key");
	mb_str(&m, "k");
	mb_str(&m, "val");
	mb_bin(&m, big, MLRT_STORE_MAX_VALUE);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_OK);

	mb_req(&m, 5, 1, 1, "set");
	mb_str(&m, "key");
	mb_str(&m, "k");
	mb_str(&m, "val");
	mb_bin(&m, big, (size_t)MLRT_STORE_MAX_VALUE + 1);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_TOO_LARGE);

	/* lease of the wrong type, zero. */
	mb_req(&m, 6, 1, 1, "set");
	mb_str(&m, "key");
	mb_str(&m, "k");
	mb_str(&m, "val");
	mb_bin(&m, "v", 1);
	mb_str(&m, "lease");
	mb_str(&m, "7");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	mb_req(&m, 4, 1, 1, "lease_renew");
	mb_str(&m, "lease");
	msgpack_pack_int(&m.pk, 0);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	/* cas: exp missing, exp of the wrong type. */
	mb_req(&m, 5, 1, 1, "cas");
	mb_str(&m, "key");
	mb_str(&m, "k");
	mb_str(&m, "val");
	mb_bin(&m, "v", 1);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	mb_req(&m, 6, 1, 1, "cas");
	mb_str(&m, "key");
	mb_str(&m, "k");
	mb_str(&m, "val");
	mb_bin(&m, "v", 1);
	mb_str(&m, "exp");
	msgpack_pack_true(&m.pk);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	/* add: delta as a float. */
	mb_req(&m, 5, 1, 1, "add");
	mb_str(&m, "key");
	mb_str(&m, "k");
	mb_str(&m, "delta");
	msgpack_pack_double(&m.pk, 1.0);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);
	free(big);
}

/* A wait request with n keys named k0.. and timeout tmo. */
static void mb_wait(mb *m, size_t n, int64_t tmo)
{
	char name[32];

	mb_req(m, 5, 1, 1, "wait");
	mb_str(m, "tmo");
	msgpack_pack_int64(&m->pk, tmo);
	mb_str(m, "keys");
	msgpack_pack_array(&m->pk, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "k%zu", i);
		mb_str(m, name);
	}
}

static void test_wait_fields(void **state)
{
	mb m;

	(void)state;
	mb_wait(&m, 1, 0);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_OK);
	mb_wait(&m, MLRTI_STORE_MAX_WAIT_KEYS, MLRTI_STORE_MAX_MS);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_OK);
	mb_wait(&m, MLRTI_STORE_MAX_WAIT_KEYS + 1, 10);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_TOO_LARGE);
	mb_wait(&m, 0, 10);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);
	mb_wait(&m, 2, -1);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);
	mb_wait(&m, 2, (int64_t)MLRTI_STORE_MAX_MS + 1);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	/* keys not an array; an element not a string; tmo missing. */
	mb_req(&m, 5, 1, 1, "wait_any");
	mb_str(&m, "tmo");
	msgpack_pack_int(&m.pk, 5);
	mb_str(&m, "keys");
	mb_str(&m, "k0");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	mb_req(&m, 5, 1, 1, "wait_any");
	mb_str(&m, "tmo");
	msgpack_pack_int(&m.pk, 5);
	mb_str(&m, "keys");
	msgpack_pack_array(&m.pk, 2);
	mb_str(&m, "k0");
	msgpack_pack_nil(&m.pk);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	mb_req(&m, 4, 1, 1, "wait");
	mb_str(&m, "keys");
	msgpack_pack_array(&m.pk, 1);
	mb_str(&m, "k0");
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);

	/* ttl zero and over the limit. */
	mb_req(&m, 4, 1, 1, "lease_grant");
	mb_str(&m, "ttl");
	msgpack_pack_int(&m.pk, 0);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);
	mb_req(&m, 4, 1, 1, "lease_grant");
	mb_str(&m, "ttl");
	msgpack_pack_int64(&m.pk, (int64_t)MLRTI_STORE_MAX_MS + 1);
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_PROTOCOL);
}

static void test_size_limits(void **state)
{
	size_t n = MLRTI_STORE_MAX_REQUEST + 1;
	uint8_t *big = calloc(1, n);
	mb m;

	(void)state;
	assert_non_null(big);
	assert_int_equal(dec_req_bytes(big, n), MLRT_ERR_TOO_LARGE);
	free(big);

	/* Small, but too many objects: 5000 unknown fields. */
	mb_req(&m, 5003, 1, 1, "list");
	mb_str(&m, "key");
	mb_str(&m, "");
	for (int i = 0; i < 5000 - 1; i++) {
		mb_str(&m, "x");
		msgpack_pack_nil(&m.pk);
	}
	assert_int_equal(dec_req(&m, NULL, NULL), MLRT_ERR_TOO_LARGE);
}

static void test_malformed_replies(void **state)
{
	mb m;

	(void)state;
	/* Good baseline. */
	mb_init(&m);
	msgpack_pack_map(&m.pk, 3);
	mb_str(&m, "v");
	msgpack_pack_uint32(&m.pk, 1);
	mb_str(&m, "id");
	msgpack_pack_uint64(&m.pk, 1);
	mb_str(&m, "st");
	msgpack_pack_int(&m.pk, MLRT_ERR_TIMEOUT);
	assert_int_equal(dec_rep(&m), MLRT_OK);

	/* Positive status; status missing; wrong version. */
	mb_init(&m);
	msgpack_pack_map(&m.pk, 3);
	mb_str(&m, "v");
	msgpack_pack_uint32(&m.pk, 1);
	mb_str(&m, "id");
	msgpack_pack_uint64(&m.pk, 1);
	mb_str(&m, "st");
	msgpack_pack_int(&m.pk, 3);
	assert_int_equal(dec_rep(&m), MLRT_ERR_PROTOCOL);

	mb_init(&m);
	msgpack_pack_map(&m.pk, 2);
	mb_str(&m, "v");
	msgpack_pack_uint32(&m.pk, 1);
	mb_str(&m, "id");
	msgpack_pack_uint64(&m.pk, 1);
	assert_int_equal(dec_rep(&m), MLRT_ERR_PROTOCOL);

	mb_init(&m);
	msgpack_pack_map(&m.pk, 3);
	mb_str(&m, "v");
	msgpack_pack_uint32(&m.pk, 9);
	mb_str(&m, "id");
	msgpack_pack_uint64(&m.pk, 1);
	mb_str(&m, "st");
	msgpack_pack_int(&m.pk, 0);
	assert_int_equal(dec_rep(&m), MLRT_ERR_VERSION);

	/* items: not an array; an item not a pair; a key with NUL; val as str. */
	for (int c = 0; c < 4; c++) {
		mb_init(&m);
		msgpack_pack_map(&m.pk, 4);
		mb_str(&m, "v");
		msgpack_pack_uint32(&m.pk, 1);
		mb_str(&m, "id");
		msgpack_pack_uint64(&m.pk, 1);
		mb_str(&m, "st");
		msgpack_pack_int(&m.pk, 0);
		mb_str(&m, "items");
		if (c == 0) {
			msgpack_pack_nil(&m.pk);
		} else if (c == 1) {
			msgpack_pack_array(&m.pk, 1);
			msgpack_pack_array(&m.pk, 1);
			mb_str(&m, "k");
		} else {
			msgpack_pack_array(&m.pk, 1);
			msgpack_pack_array(&m.pk, 2);
			if (c == 2)
				mb_strn(&m, "k\0", 2);
			else
				mb_str(&m, "k");
			mb_str(&m, "v");
		}
		assert_int_equal(dec_rep(&m), MLRT_ERR_PROTOCOL);
	}

	/* err not a string; val not bin; n not an int. */
	for (int c = 0; c < 3; c++) {
		mb_init(&m);
		msgpack_pack_map(&m.pk, 4);
		mb_str(&m, "v");
		msgpack_pack_uint32(&m.pk, 1);
		mb_str(&m, "id");
		msgpack_pack_uint64(&m.pk, 1);
		mb_str(&m, "st");
		msgpack_pack_int(&m.pk, 0);
		mb_str(&m, c == 0 ? "err" : c == 1 ? "val" : "n");
		msgpack_pack_array(&m.pk, 0);
		assert_int_equal(dec_rep(&m), MLRT_ERR_PROTOCOL);
	}
}

/* ---- mutation loop ---- */

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* xorshift64*: deterministic for a given seed. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

static void test_mutations(void **state)
{
	const mlrti_store_str keys[2] = {S("rank/0"), S("rank/1")};
	const mlrti_store_item items[2] = {{S("a"), {"1", 1}}, {S("bb"), {"22", 2}}};
	const mlrti_store_req reqs[] = {
		{.op = MLRTI_STORE_OP_SET, .id = 1, .key = S("k"), .val = {"v\0w", 3}, .lease = 3},
		{.op = MLRTI_STORE_OP_WAIT_ANY, .id = 2, .keys = keys, .nkeys = 2, .timeout_ms = 9},
		{.op = MLRTI_STORE_OP_CAS, .id = 3, .key = S("c"), .has_exp = 1, .exp = {"1", 1},
		 .val = {"2", 1}},
		{.op = MLRTI_STORE_OP_ADD, .id = 4, .key = S("n"), .delta = -300},
		{.op = MLRTI_STORE_OP_LEASE_GRANT, .id = 5, .ttl_ms = 100},
	};
	const mlrti_store_rep reps[] = {
		{.id = 6, .has_items = 1, .items = items, .nitems = 2},
		{.id = 7, .st = MLRT_ERR_INVALID, .err = S("bad"), .has_val = 1, .val = {"x", 1},
		 .has_n = 1, .n = 70000},
	};
	const size_t nseeds = MLRTI_ARRAY_LEN(reqs) + MLRTI_ARRAY_LEN(reps);
	void *seeds[MLRTI_ARRAY_LEN(reqs) + MLRTI_ARRAY_LEN(reps)];
	size_t lens[MLRTI_ARRAY_LEN(reqs) + MLRTI_ARRAY_LEN(reps)];
	static const uint8_t lengthy[] = {0xdd, 0xdf, 0xdb, 0xc6, 0xff, 0x00};
	size_t ok = 0;

	(void)state;
	for (size_t i = 0; i < nseeds; i++) {
		if (i < MLRTI_ARRAY_LEN(reqs))
			assert_int_equal(mlrti_store_encode_request(&reqs[i], &seeds[i], &lens[i]),
			                 MLRT_OK);
		else
			assert_int_equal(mlrti_store_encode_reply(&reps[i - MLRTI_ARRAY_LEN(reqs)],
			                                          &seeds[i], &lens[i]),
			                 MLRT_OK);
	}
	rng_state = 0x5eed5eed12345678ull;
	for (int it = 0; it < 20000; it++) {
		size_t s = rng() % nseeds, len = lens[s];
		uint8_t *buf = malloc(len + 8);
		int nmut = 1 + (int)(rng() % 4), rc;
		mlrti_store_req req;
		mlrti_store_rep rep;

		assert_non_null(buf);
		memcpy(buf, seeds[s], len);
		for (int k = 0; k < nmut && len > 0; k++) {
			size_t pos = rng() % len;

			switch (rng() % 5) {
			case 0: buf[pos] ^= (uint8_t)(1u << (rng() % 8)); break;
			case 1: buf[pos] = (uint8_t)rng(); break;
			case 2: len = pos; break; /* truncate */
			case 3:                   /* insert a byte */
				if (len < lens[s] + 8) {
					memmove(buf + pos + 1, buf + pos, len - pos);
					buf[pos] = (uint8_t)rng();
					len++;
				}
				break;
			default: /* a length-like byte */
				buf[pos] = lengthy[rng() % sizeof(lengthy)];
				break;
			}
		}
		rc = mlrti_store_decode_request(buf, len, &req);
		assert_true(rc == MLRT_OK || rc == MLRT_ERR_PROTOCOL || rc == MLRT_ERR_VERSION ||
		            rc == MLRT_ERR_TOO_LARGE);
		ok += rc == MLRT_OK;
		mlrti_store_req_fini(&req);
		rc = mlrti_store_decode_reply(buf, len, &rep);
		assert_true(rc == MLRT_OK || rc == MLRT_ERR_PROTOCOL || rc == MLRT_ERR_VERSION ||
		            rc == MLRT_ERR_TOO_LARGE);
		ok += rc == MLRT_OK;
		mlrti_store_rep_fini(&rep);
		free(buf);
	}
	/* Some mutations leave a valid message: both paths were exercised. */
	assert_true(ok > 0);
	for (size_t i = 0; i < nseeds; i++)
		free(seeds[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_requests),
		cmocka_unit_test(test_round_trip_replies),
		cmocka_unit_test(test_not_msgpack),
		cmocka_unit_test(test_truncated_and_trailing),
		cmocka_unit_test(test_header_fields),
		cmocka_unit_test(test_key_fields),
		cmocka_unit_test(test_value_fields),
		cmocka_unit_test(test_wait_fields),
		cmocka_unit_test(test_size_limits),
		cmocka_unit_test(test_malformed_replies),
		cmocka_unit_test(test_mutations),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
