/* The staged path of the device collectives (comm/staged.c) on a
 * communicator of one rank, with host buffers and memcpy copies
 * (MLRT_DEVICE_COLL=staged-host): the chunking, the slot turns and the
 * 2D copies of allgather and reduce_scatter, in place and out of place,
 * counts 0, 1, and spanning many chunks; and MLRT_DEVICE_COLL parsing.
 * (Several ranks: tests/mp/staged.sh.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <mlrt/mlrt.h>

#include "comm/device.h"

static void test_mode_parse(void **state)
{
	static const struct {
		const char *v;
		int rc;
		mlrti_device_mode mode;
	} cases[] = {
		{"", MLRT_OK, MLRTI_DEVICE_AUTO},
		{"auto", MLRT_OK, MLRTI_DEVICE_AUTO},
		{"nccl", MLRT_OK, MLRTI_DEVICE_NCCL},
		{"staged", MLRT_OK, MLRTI_DEVICE_STAGED},
		{"staged-host", MLRT_OK, MLRTI_DEVICE_STAGED_HOST},
		{"gloo", MLRT_ERR_INVALID, MLRTI_DEVICE_AUTO},
	};
	mlrti_device_mode mode;

	(void)state;
	unsetenv("MLRT_DEVICE_COLL");
	assert_int_equal(mlrti_device_mode_read(&mode), MLRT_OK);
	assert_int_equal(mode, MLRTI_DEVICE_AUTO);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		setenv("MLRT_DEVICE_COLL", cases[i].v, 1);
		assert_int_equal(mlrti_device_mode_read(&mode), cases[i].rc);
		if (cases[i].rc == MLRT_OK)
			assert_int_equal(mode, cases[i].mode);
	}
	unsetenv("MLRT_DEVICE_COLL");
}

static mlrt_comm *one_rank(void)
{
	mlrt_comm *c = NULL;

	setenv("MLRT_DEVICE_COLL", "staged-host", 1);
	/* 4160: chunks that are not a power of two. */
	setenv("MLRT_STAGE_CHUNK_BYTES", "4160", 1);
	assert_int_equal(mlrti_comm_create(NULL, NULL, "job/g0/", "t", 0, 1, 5000, &c), MLRT_OK);
	return c;
}

/* MLRT_STAGE_CHUNK_BYTES is read at the first staged collective. */
static void one_rank_free(mlrt_comm *c)
{
	mlrti_comm_free(c);
	unsetenv("MLRT_DEVICE_COLL");
	unsetenv("MLRT_STAGE_CHUNK_BYTES");
}

static void fill(int32_t *p, size_t n, int32_t base)
{
	for (size_t i = 0; i < n; i++)
		p[i] = base + (int32_t)(i * 7919 % 100003);
}

static const size_t counts[] = {0, 1, 3, 1039, 1040, 1041, 50000};

static void test_allreduce_and_broadcast(void **state)
{
	mlrt_comm *c = one_rank();
	mlrt_comm_stats st0, st1;

	(void)state;
	for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
		size_t n = counts[k];
		int32_t *in = malloc(n * 4 + 4), *out = malloc(n * 4 + 4), *want = malloc(n * 4 + 4);

		fill(in, n, 1);
		memcpy(want, in, n * 4);
		memset(out, 0xEE, n * 4);
		assert_int_equal(mlrt_comm_get_stats(c, &st0), MLRT_OK);
		assert_int_equal(mlrt_allreduce(c, in, out, n, MLRT_I32, MLRT_SUM), MLRT_OK);
		assert_memory_equal(out, want, n * 4);
		assert_memory_equal(in, want, n * 4);
		/* A staged collective counts once, however many chunks. */
		assert_int_equal(mlrt_comm_get_stats(c, &st1), MLRT_OK);
		assert_int_equal(st1.collectives, st0.collectives + 1);
		assert_int_equal(mlrt_allreduce(c, in, in, n, MLRT_I32, MLRT_MAX), MLRT_OK);
		assert_memory_equal(in, want, n * 4);
		assert_int_equal(mlrt_broadcast(c, in, n, MLRT_I32, 0), MLRT_OK);
		assert_memory_equal(in, want, n * 4);
		free(in);
		free(out);
		free(want);
	}
	one_rank_free(c);
}

static void test_allgather_and_reduce_scatter(void **state)
{
	mlrt_comm *c = one_rank();

	(void)state;
	for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
		size_t n = counts[k];
		int32_t *in = malloc(n * 4 + 4), *out = malloc(n * 4 + 4), *want = malloc(n * 4 + 4);

		fill(in, n, 5);
		memcpy(want, in, n * 4);
		memset(out, 0xEE, n * 4);
		assert_int_equal(mlrt_allgather(c, in, out, n, MLRT_I32), MLRT_OK);
		assert_memory_equal(out, want, n * 4);
		memset(out, 0xEE, n * 4);
		assert_int_equal(mlrt_reduce_scatter(c, in, out, n, MLRT_I32, MLRT_SUM), MLRT_OK);
		assert_memory_equal(out, want, n * 4);
		assert_int_equal(mlrt_allgather(c, in, in, n, MLRT_I32), MLRT_OK);
		assert_memory_equal(in, want, n * 4);
		assert_int_equal(mlrt_reduce_scatter(c, in, in, n, MLRT_I32, MLRT_PROD), MLRT_OK);
		assert_memory_equal(in, want, n * 4);
		free(in);
		free(out);
		free(want);
	}
	one_rank_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mode_parse),
		cmocka_unit_test(test_allreduce_and_broadcast),
		cmocka_unit_test(test_allgather_and_reduce_scatter),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
