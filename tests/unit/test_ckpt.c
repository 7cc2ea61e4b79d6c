/* Checkpoints in a world of one: round trips of every kind of tensor,
 * async saves and retention, fallback past damaged steps, uncommitted
 * steps, mismatched registrations and the CRC32C itself. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <mlrt/mlrt.h>

#include "ckpt/format.h"

#define N 5000

typedef struct state {
	float w[N];
	double r[16];
	uint16_t h[33];
	int32_t g[6][7]; /* one shard covering the whole 6x7 tensor */
	int64_t epoch;
	uint8_t rng[20];
} state;

static mlrt_ctx *ctx;
static char dir[64];

static void fill(state *s, int seed)
{
	for (int i = 0; i < N; i++)
		s->w[i] = (float)(seed * 1000 + i) * 0.25f;
	for (int i = 0; i < 16; i++)
		s->r[i] = seed + i / 7.0;
	for (int i = 0; i < 33; i++)
		s->h[i] = (uint16_t)(seed * 31 + i);
	for (int i = 0; i < 6; i++)
		for (int j = 0; j < 7; j++)
			s->g[i][j] = seed * 100 + i * 7 + j;
	s->epoch = seed;
	for (int i = 0; i < 20; i++)
		s->rng[i] = (uint8_t)(seed + i * 3);
}

static mlrt_ckpt *open_registered(state *s, int async, int keep)
{
	static const int64_t gshape[2] = {6, 7}, off[2] = {0, 0};
	mlrt_ckpt_opts o;
	mlrt_ckpt *ck = NULL;

	mlrt_ckpt_opts_init(&o);
	o.async = async;
	o.keep = keep;
	assert_int_equal(mlrt_ckpt_open_opts(ctx, dir, &o, &ck), MLRT_OK);
	assert_int_equal(mlrt_ckpt_add(ck, "model/w", s->w, N, MLRT_F32), MLRT_OK);
	assert_int_equal(mlrt_ckpt_add_replicated(ck, "r", s->r, 16, MLRT_F64), MLRT_OK);
	assert_int_equal(mlrt_ckpt_add(ck, "half", s->h, 33, MLRT_F16), MLRT_OK);
	assert_int_equal(mlrt_ckpt_add_shard(ck, "grid", s->g, MLRT_I32, 2, gshape, off, gshape),
	                 MLRT_OK);
	assert_int_equal(mlrt_ckpt_add_meta(ck, "epoch", &s->epoch, 1, MLRT_I64), MLRT_OK);
	assert_int_equal(mlrt_ckpt_add_meta(ck, "rng", s->rng, 20, MLRT_U8), MLRT_OK);
	return ck;
}

static int setup(void **unused)
{
	(void)unused;
	snprintf(dir, sizeof(dir), "/tmp/mlrt-test-ckpt.XXXXXX");
	assert_non_null(mkdtemp(dir));
	return 0;
}

static int teardown(void **unused)
{
	char cmd[128];

	(void)unused;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int exists(const char *fmt, int64_t step)
{
	char path[256];
	struct stat st;

	snprintf(path, sizeof(path), fmt, dir, (long long)step);
	return stat(path, &st) == 0;
}

static void test_crc32c_known_value(void **unused)
{
	(void)unused;
	/* The check value of CRC-32C (RFC 3720). */
	assert_int_equal(mlrti_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(mlrti_crc32c(mlrti_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

static void test_roundtrip_every_kind(void **unused)
{
	state *s = calloc(1, sizeof(*s)), *want = calloc(1, sizeof(*want));
	mlrt_ckpt *ck;
	int64_t step = -1;

	(void)unused;
	ck = open_registered(s, 0, 3);
	fill(s, 7);
	*want = *s;
	assert_int_equal(mlrt_ckpt_save(ck, 40), MLRT_OK);
	assert_true(exists("%s/step-%lld/manifest.h5", 40));
	assert_true(exists("%s/step-%lld/rank-0.h5", 40));
	fill(s, 9);
	assert_int_equal(mlrt_ckpt_restore(ck, &step), MLRT_OK);
	assert_int_equal(step, 40);
	assert_memory_equal(s, want, sizeof(*s));
	assert_int_equal(mlrt_ckpt_close(ck), MLRT_OK);
	free(want);
	free(s);
}

static void test_async_saves_and_keeps_three(void **unused)
{
	state *s = calloc(1, sizeof(*s)), *want = calloc(1, sizeof(*want));
	mlrt_ckpt *ck;
	int64_t step = -1;

	(void)unused;
	ck = open_registered(s, 1, 3);
	for (int k = 1; k <= 5; k++) {
		fill(s, k);
		assert_int_equal(mlrt_ckpt_save(ck, k * 10), MLRT_OK);
		/* The snapshot is taken at save: changing the buffers now must
		 * not change what is written. */
		fill(s, 100 + k);
	}
	fill(want, 5);
	assert_int_equal(mlrt_ckpt_wait(ck, &step), MLRT_OK);
	assert_int_equal(step, 50);
	assert_true(exists("%s/step-%lld/manifest.h5", 50));
	assert_true(exists("%s/step-%lld/manifest.h5", 40));
	assert_true(exists("%s/step-%lld/manifest.h5", 30));
	assert_false(exists("%s/step-%lld", 20));
	assert_false(exists("%s/step-%lld", 10));
	assert_int_equal(mlrt_ckpt_restore(ck, &step), MLRT_OK);
	assert_int_equal(step, 50);
	assert_memory_equal(s, want, sizeof(*s));
	assert_int_equal(mlrt_ckpt_close(ck), MLRT_OK);
	free(want);
	free(s);
}

/* Byte offset of tensor name's data in step's rank-0 file. */
static int64_t data_offset(int64_t step, const char *name)
{
	char path[256];
	mlrti_ckpt_file f;
	mlrti_ckpt_tensor t;
	int64_t off = -1;

	snprintf(path, sizeof(path), "%s/step-%lld/rank-0.h5", dir, (long long)step);
	assert_int_equal(mlrti_ckpt_file_open(path, &f), MLRT_OK);
	assert_int_equal(mlrti_ckpt_file_tensor(&f, name, &t, &off), MLRT_OK);
	mlrti_ckpt_file_close(&f);
	return off;
}

static void flip_byte(int64_t step, int64_t off)
{
	char path[256];
	unsigned char b;
	int fd;

	snprintf(path, sizeof(path), "%s/step-%lld/rank-0.h5", dir, (long long)step);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, off), 1);
	b ^= 0x10;
	assert_int_equal(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

static void test_damage_falls_back(void **unused)
{
	state *s = calloc(1, sizeof(*s)), *s1 = calloc(1, sizeof(*s1));
	char path[256];
	mlrt_ckpt *ck;
	int64_t step = -1;

	(void)unused;
	ck = open_registered(s, 0, 0);
	fill(s, 1);
	*s1 = *s;
	assert_int_equal(mlrt_ckpt_save(ck, 1), MLRT_OK);
	fill(s, 2);
	assert_int_equal(mlrt_ckpt_save(ck, 2), MLRT_OK);
	fill(s, 3);
	assert_int_equal(mlrt_ckpt_save(ck, 3), MLRT_OK);

	/* A flipped bit inside step 3's data, a truncated step 2. */
	flip_byte(3, data_offset(3, "model/w") + 4 * 1234 + 1);
	snprintf(path, sizeof(path), "%s/step-2/rank-0.h5", dir);
	assert_int_equal(truncate(path, 3000), 0);

	fill(s, 9);
	assert_int_equal(mlrt_ckpt_restore(ck, &step), MLRT_OK);
	assert_int_equal(step, 1);
	assert_memory_equal(s, s1, sizeof(*s));
	assert_int_equal(mlrt_ckpt_close(ck), MLRT_OK);
	free(s1);
	free(s);
}

static void test_nothing_to_restore_leaves_buffers(void **unused)
{
	state *s = calloc(1, sizeof(*s)), *want = calloc(1, sizeof(*want));
	char path[256];
	mlrt_ckpt *ck;
	int64_t step = 77;

	(void)unused;
	ck = open_registered(s, 0, 3);
	assert_int_equal(mlrt_ckpt_restore(ck, &step), MLRT_ERR_NOT_FOUND);
	assert_int_equal(step, 77);

	/* Only damaged steps: still NOT_FOUND, buffers untouched. */
	fill(s, 4);
	assert_int_equal(mlrt_ckpt_save(ck, 4), MLRT_OK);
	flip_byte(4, data_offset(4, "r"));
	fill(s, 5);
	*want = *s;
	assert_int_equal(mlrt_ckpt_restore(ck, &step), MLRT_ERR_NOT_FOUND);
	assert_memory_equal(s, want, sizeof(*s));

	/* A step without its manifest does not count, and the next commit
	 * removes it. */
	snprintf(path, sizeof(path), "%s/step-9", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	assert_int_equal(mlrt_ckpt_restore(ck, &step), MLRT_ERR_NOT_FOUND);
	assert_int_equal(mlrt_ckpt_save(ck, 5), MLRT_OK);
	assert_int_equal(mlrt_ckpt_wait(ck, &step), MLRT_OK); /* old steps go in the background */
	assert_int_equal(step, 5);
	assert_false(exists("%s/step-%lld", 9));
	assert_int_equal(mlrt_ckpt_close(ck), MLRT_OK);
	free(want);
	free(s);
}

static void test_resave_replaces_step(void **unused)
{
	state *s = calloc(1, sizeof(*s)), *want = calloc(1, sizeof(*want));
	mlrt_ckpt *ck;
	int64_t step;

	(void)unused;
	ck = open_registered(s, 0, 3);
	fill(s, 1);
	assert_int_equal(mlrt_ckpt_save(ck, 8), MLRT_OK);
	fill(s, 2);
	*want = *s;
	assert_int_equal(mlrt_ckpt_save(ck, 8), MLRT_OK);
	fill(s, 3);
	assert_int_equal(mlrt_ckpt_restore(ck, &step), MLRT_OK);
	assert_int_equal(step, 8);
	assert_memory_equal(s, want, sizeof(*s));
	assert_int_equal(mlrt_ckpt_close(ck), MLRT_OK);
	free(want);
	free(s);
}

static void test_mismatch_is_an_error(void **unused)
{
	static float a[10], b[11];
	mlrt_ckpt *ck;
	int64_t step;

	(void)unused;
	assert_int_equal(mlrt_ckpt_open(ctx, dir, &ck), MLRT_OK);
	assert_int_equal(mlrt_ckpt_add(ck, "a", a, 10, MLRT_F32), MLRT_OK);
	assert_int_equal(mlrt_ckpt_add(ck, "a", b, 10, MLRT_F32), MLRT_ERR_EXISTS);
	assert_int_equal(mlrt_ckpt_add(ck, "bad name", b, 10, MLRT_F32), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_ckpt_save(ck, 1), MLRT_OK);
	mlrt_ckpt_close(ck);

	assert_int_equal(mlrt_ckpt_open(ctx, dir, &ck), MLRT_OK);
	assert_int_equal(mlrt_ckpt_add(ck, "a", b, 11, MLRT_F32), MLRT_OK);
	assert_int_equal(mlrt_ckpt_restore(ck, &step), MLRT_ERR_INVALID);
	mlrt_ckpt_close(ck);

	assert_int_equal(mlrt_ckpt_open(ctx, dir, &ck), MLRT_OK);
	assert_int_equal(mlrt_ckpt_add(ck, "other", a, 10, MLRT_F32), MLRT_OK);
	assert_int_equal(mlrt_ckpt_restore(ck, &step), MLRT_ERR_INVALID);
	mlrt_ckpt_close(ck);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_known_value),
		cmocka_unit_test_setup_teardown(test_roundtrip_every_kind, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async_saves_and_keeps_three, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damage_falls_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nothing_to_restore_leaves_buffers, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_resave_replaces_step, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mismatch_is_an_error, setup, teardown),
	};
	int rc;

	if (mlrt_init(&ctx) != MLRT_OK)
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	mlrt_finalize(ctx);
	return rc;
}
