/* The parameter server's header frames: round trips of requests and
 * replies, and refusal of malformed, truncated, oversized or
 * other-version input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "ps/proto.h"

static void test_request_round_trip(void **unused)
{
	mlrti_ps_hdr h = {
		.op = MLRTI_PS_HELLO, .id = 1ull << 40, .worker = 3, .nworkers = 8, .range = 2,
		.seq = 99, .clock = 7, .nkeys = 12345, .has_opts = 1,
	}, back;
	char buf[MLRTI_PS_MAX_HEADER], why[MLRTI_PS_MSG_MAX];
	size_t len;

	(void)unused;
	mlrt_ps_opts_init(&h.opts);
	h.opts.optimizer = MLRT_PS_FTRL;
	h.opts.lr = 0.25f;
	h.opts.l1 = 1.5f;
	h.opts.consistency = MLRT_PS_BOUNDED;
	h.opts.staleness = 4;
	h.opts.init = MLRT_PS_NORMAL;
	h.opts.init_b = 0.1f;
	h.opts.seed = 0xfeedfacecafebeefull;
	assert_int_equal(mlrti_ps_hdr_encode(&h, 0, buf, sizeof(buf), &len), MLRT_OK);
	assert_int_equal(mlrti_ps_hdr_decode(buf, len, &back, why, sizeof(why)), MLRT_OK);
	assert_int_equal(back.op, h.op);
	assert_true(back.id == h.id && back.seq == 99 && back.clock == 7 && back.nkeys == 12345);
	assert_int_equal(back.worker, 3);
	assert_int_equal(back.nworkers, 8);
	assert_int_equal(back.range, 2);
	assert_true(back.has_opts);
	assert_memory_equal(&back.opts, &h.opts, offsetof(mlrt_ps_opts, timeout_ms));
}

static void test_reply_round_trip(void **unused)
{
	mlrti_ps_hdr h = {.op = MLRTI_PS_PULL, .id = 5, .range = 1, .status = MLRT_ERR_INVALID},
	             back;
	char buf[MLRTI_PS_MAX_HEADER], why[MLRTI_PS_MSG_MAX];
	size_t len;

	(void)unused;
	strcpy(h.msg, "key 42 holds 4 floats, not 5");
	assert_int_equal(mlrti_ps_hdr_encode(&h, 1, buf, sizeof(buf), &len), MLRT_OK);
	assert_int_equal(mlrti_ps_hdr_decode(buf, len, &back, why, sizeof(why)), MLRT_OK);
	assert_int_equal(back.status, MLRT_ERR_INVALID);
	assert_int_equal(back.range, 1);
	assert_string_equal(back.msg, h.msg);
	/* Too small a buffer is an error, not an overflow. */
	assert_int_equal(mlrti_ps_hdr_encode(&h, 1, buf, 8, &len), MLRT_ERR_TOO_LARGE);
}

/* A map {"v": v, "op": op, key: <value packed by fn>}. */
static size_t pack3(char *out, unsigned v, unsigned op, const char *key, int64_t ival, int as_str)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t len;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	msgpack_pack_str_with_body(&pk, "v", 1);
	msgpack_pack_uint32(&pk, v);
	msgpack_pack_str_with_body(&pk, "op", 2);
	msgpack_pack_uint32(&pk, op);
	msgpack_pack_str_with_body(&pk, key, strlen(key));
	if (as_str)
		msgpack_pack_str_with_body(&pk, "x", 1);
	else
		msgpack_pack_int64(&pk, ival);
	memcpy(out, sb.data, sb.size);
	len = sb.size;
	msgpack_sbuffer_destroy(&sb);
	return len;
}

static void test_malformed_is_refused(void **unused)
{
	char buf[MLRTI_PS_MAX_HEADER * 2], why[MLRTI_PS_MSG_MAX];
	mlrti_ps_hdr h;
	size_t len;

	(void)unused;
	len = pack3(buf, 1, MLRTI_PS_PUSH, "n", 3, 0);
	assert_int_equal(mlrti_ps_hdr_decode(buf, len, &h, why, sizeof(why)), MLRT_OK);
	/* Truncated at every length. */
	for (size_t cut = 0; cut < len; cut++)
		assert_int_not_equal(mlrti_ps_hdr_decode(buf, cut, &h, why, sizeof(why)), MLRT_OK);
	/* Another version. */
	len = pack3(buf, 2, MLRTI_PS_PUSH, "n", 3, 0);
	assert_int_equal(mlrti_ps_hdr_decode(buf, len, &h, why, sizeof(why)), MLRT_ERR_VERSION);
	/* Unknown op, wrong types, out of range. */
	len = pack3(buf, 1, 99, "n", 3, 0);
	assert_int_equal(mlrti_ps_hdr_decode(buf, len, &h, why, sizeof(why)), MLRT_ERR_PROTOCOL);
	len = pack3(buf, 1, MLRTI_PS_PUSH, "n", 0, 1);
	assert_int_equal(mlrti_ps_hdr_decode(buf, len, &h, why, sizeof(why)), MLRT_ERR_PROTOCOL);
	assert_non_null(strstr(why, "\"n\""));
	len = pack3(buf, 1, MLRTI_PS_PUSH, "w", -1, 0);
	assert_int_equal(mlrti_ps_hdr_decode(buf, len, &h, why, sizeof(why)), MLRT_ERR_PROTOCOL);
	len = pack3(buf, 1, MLRTI_PS_PUSH, "n", (int64_t)MLRTI_PS_MAX_KEYS + 1, 0);
	assert_int_equal(mlrti_ps_hdr_decode(buf, len, &h, why, sizeof(why)), MLRT_ERR_PROTOCOL);
	/* Unknown fields are ignored. */
	len = pack3(buf, 1, MLRTI_PS_PUSH, "future", 5, 0);
	assert_int_equal(mlrti_ps_hdr_decode(buf, len, &h, why, sizeof(why)), MLRT_OK);
	/* A map announcing 2^32 entries in a few bytes, and an oversized frame. */
	memcpy(buf, "\xdf\xff\xff\xff\xff\xa1v\x01", 8);
	assert_int_equal(mlrti_ps_hdr_decode(buf, 8, &h, why, sizeof(why)), MLRT_ERR_PROTOCOL);
	memset(buf, 0xc0, sizeof(buf));
	assert_int_not_equal(mlrti_ps_hdr_decode(buf, sizeof(buf), &h, why, sizeof(why)), MLRT_OK);
	/* Not a map at all. */
	assert_int_not_equal(mlrti_ps_hdr_decode("\x93\x01\x02\x03", 4, &h, why, sizeof(why)),
	                     MLRT_OK);
}

static void test_ranges_split_the_key_space(void **unused)
{
	(void)unused;
	assert_int_equal(mlrti_ps_server_of(0, 3), 0);
	assert_int_equal(mlrti_ps_server_of(UINT64_MAX, 3), 2);
	assert_int_equal(mlrti_ps_server_of(UINT64_MAX / 3, 3), 0);
	assert_int_equal(mlrti_ps_server_of(UINT64_MAX / 3 + 1, 3), 1);
	assert_int_equal(mlrti_ps_server_of(12345, 1), 0);
}

/* A server's published address: ipc for a peer on this machine (same
 * kernel and network namespace), tcp for others, tcp when forced, and a
 * malformed value refused. */
static void test_endpoint_choice(void **unused)
{
	char mine[128], pub[512], ep[MLRTI_PS_ENDPOINT_MAX];

	(void)unused;
	assert_int_equal(mlrti_ps_machine_key(mine, sizeof(mine)), MLRT_OK);
	snprintf(pub, sizeof(pub), "tcp://10.0.0.1:5000 ipc://@mlrt-ps-0-1-2 %s", mine);
	unsetenv("MLRT_PS_TRANSPORT");
	assert_int_equal(mlrti_ps_endpoint(pub, ep, sizeof(ep)), MLRT_OK);
	assert_string_equal(ep, "ipc://@mlrt-ps-0-1-2");
	setenv("MLRT_PS_TRANSPORT", "tcp", 1);
	assert_int_equal(mlrti_ps_endpoint(pub, ep, sizeof(ep)), MLRT_OK);
	assert_string_equal(ep, "tcp://10.0.0.1:5000");
	unsetenv("MLRT_PS_TRANSPORT");
	assert_int_equal(mlrti_ps_endpoint("tcp://10.0.0.1:5000 ipc://@x other-machine/1", ep,
	                                   sizeof(ep)), MLRT_OK);
	assert_string_equal(ep, "tcp://10.0.0.1:5000");
	assert_int_equal(mlrti_ps_endpoint("tcp://10.0.0.1:5000", ep, sizeof(ep)),
	                 MLRT_ERR_PROTOCOL);
	assert_int_equal(mlrti_ps_endpoint("ipc://@x tcp://1.2.3.4:1 m", ep, sizeof(ep)),
	                 MLRT_ERR_PROTOCOL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_round_trip),
		cmocka_unit_test(test_reply_round_trip),
		cmocka_unit_test(test_malformed_is_refused),
		cmocka_unit_test(test_ranges_split_the_key_space),
		cmocka_unit_test(test_endpoint_choice),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
