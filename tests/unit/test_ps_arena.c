/* The arena of push values in shared memory (ps/arena.h): the worker's
 * ring of regions (taken in order, given back in order, wrapping, full),
 * a server's mapping (the key at the start checked) and its reading of
 * descriptors (anything outside the arena refused); and the header fields
 * that carry it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ps/arena.h"
#include "ps/proto.h"
#include "runtime/common.h"

#define SIZE (1u << 20)

static void test_ring_takes_and_gives_back_in_order(void **unused)
{
	mlrti_ps_arena a;
	uint64_t e1, e2, e3, e4;
	int64_t o1, o2, o3, o4;

	(void)unused;
	assert_int_equal(mlrti_ps_arena_open(&a, SIZE), MLRT_OK);
	o1 = mlrti_ps_arena_take(&a, 400 * 1024, &e1);
	o2 = mlrti_ps_arena_take(&a, 400 * 1024, &e2);
	assert_true(o1 >= 64 && o1 % 64 == 0);
	assert_true(o2 >= o1 + 400 * 1024 && o2 % 64 == 0);
	/* 800 KiB of 1 MiB in use: 400 KiB more does not fit until the first goes. */
	assert_int_equal(mlrti_ps_arena_take(&a, 400 * 1024, &e3), -1);
	assert_int_equal(mlrti_ps_arena_take(&a, SIZE, &e3), -1); /* never fits */
	mlrti_ps_arena_give(&a, e1);
	o3 = mlrti_ps_arena_take(&a, 400 * 1024, &e3); /* wraps to the start */
	assert_int_equal(o3, o1);
	/* Regions never overlap the ones in use. */
	assert_int_equal(mlrti_ps_arena_take(&a, 300 * 1024, &e4), -1);
	mlrti_ps_arena_give(&a, e2);
	mlrti_ps_arena_give(&a, e3);
	/* Empty again: the next region starts at the beginning. */
	o4 = mlrti_ps_arena_take(&a, 1000, &e4);
	assert_int_equal(o4, o1);
	mlrti_ps_arena_close(&a);
}

static void test_server_maps_and_resolves(void **unused)
{
	char why[MLRTI_PS_MSG_MAX];
	mlrti_ps_arena a;
	mlrti_ps_arena_map m = {0};
	uint64_t end, desc[2];
	int64_t off;
	size_t len;
	const char *p;

	(void)unused;
	assert_int_equal(mlrti_ps_arena_open(&a, SIZE), MLRT_OK);
	off = mlrti_ps_arena_take(&a, 4096, &end);
	assert_true(off > 0);
	memcpy(a.base + off, "values", 7);
	/* The wrong key: another process's memory; refused. */
	assert_int_equal(mlrti_ps_arena_map_id(&m, mlrti_ps_arena_id(&a), a.key + 1, why,
	                                       sizeof(why)), MLRT_ERR_IO);
	assert_non_null(strstr(why, "cannot map the worker's shared values"));
	assert_int_equal(mlrti_ps_arena_map_id(&m, mlrti_ps_arena_id(&a), a.key, why, sizeof(why)),
	                 MLRT_OK);
	desc[0] = (uint64_t)off;
	desc[1] = 7;
	p = mlrti_ps_arena_resolve(&m, desc, sizeof(desc), &len, why, sizeof(why));
	assert_non_null(p);
	assert_int_equal(len, 7);
	assert_string_equal(p, "values");
	/* Outside the arena, unaligned, in its head, truncated: refused. */
	desc[1] = SIZE;
	assert_null(mlrti_ps_arena_resolve(&m, desc, sizeof(desc), &len, why, sizeof(why)));
	assert_non_null(strstr(why, "outside"));
	desc[0] = UINT64_MAX - 63;
	desc[1] = 128;
	assert_null(mlrti_ps_arena_resolve(&m, desc, sizeof(desc), &len, why, sizeof(why)));
	desc[0] = (uint64_t)off + 4;
	desc[1] = 4;
	assert_null(mlrti_ps_arena_resolve(&m, desc, sizeof(desc), &len, why, sizeof(why)));
	desc[0] = 0;
	assert_null(mlrti_ps_arena_resolve(&m, desc, sizeof(desc), &len, why, sizeof(why)));
	assert_null(mlrti_ps_arena_resolve(&m, desc, 8, &len, why, sizeof(why)));
	/* A process that is not there. */
	mlrti_ps_arena_unmap(&m);
	assert_int_equal(mlrti_ps_arena_map_id(&m, (uint64_t)0x7ffffffe << 32 | 3, a.key, why,
	                                       sizeof(why)), MLRT_ERR_IO);
	assert_null(mlrti_ps_arena_resolve(&m, desc, sizeof(desc), &len, why, sizeof(why)));
	mlrti_ps_arena_close(&a);
}

static void test_header_fields_round_trip(void **unused)
{
	mlrti_ps_hdr h = {.op = MLRTI_PS_HELLO, .has_opts = 1, .has_arena = 1,
	                  .arena = 1234ull << 32 | 7, .arena_key = 0xabcdef0123456789ull}, back;
	char buf[MLRTI_PS_MAX_HEADER], why[MLRTI_PS_MSG_MAX];
	size_t len;

	(void)unused;
	mlrt_ps_opts_init(&h.opts);
	assert_int_equal(mlrti_ps_hdr_encode(&h, 0, buf, sizeof(buf), &len), MLRT_OK);
	assert_int_equal(mlrti_ps_hdr_decode(buf, len, &back, why, sizeof(why)), MLRT_OK);
	assert_true(back.has_arena && back.arena == h.arena && back.arena_key == h.arena_key);
	h = (mlrti_ps_hdr){.op = MLRTI_PS_HELLO, .arena_ok = 1};
	assert_int_equal(mlrti_ps_hdr_encode(&h, 1, buf, sizeof(buf), &len), MLRT_OK);
	assert_int_equal(mlrti_ps_hdr_decode(buf, len, &back, why, sizeof(why)), MLRT_OK);
	assert_int_equal(back.arena_ok, 1);
	h.arena_ok = 0;
	assert_int_equal(mlrti_ps_hdr_encode(&h, 1, buf, sizeof(buf), &len), MLRT_OK);
	assert_int_equal(mlrti_ps_hdr_decode(buf, len, &back, why, sizeof(why)), MLRT_OK);
	assert_int_equal(back.arena_ok, 0);
	assert_false(back.has_arena);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ring_takes_and_gives_back_in_order),
		cmocka_unit_test(test_server_maps_and_resolves),
		cmocka_unit_test(test_header_fields_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
