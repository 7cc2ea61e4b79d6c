/* coll_check: every collective, dtype and op against a reference that
 * each rank computes on its own, run under mlrun:
 *
 *   mlrun -np N [env MLRT_TRANSPORT=tcp|shm ...] coll_check
 *
 * Inputs are small integers, so that every reduction order gives the
 * exact result and a sequential reference can be compared bit for bit.
 * A second part sums random floats (where order matters) and checks that
 * every rank got the same bits, through the store rather than through the
 * collectives under test, and that a repeat gives them again.
 * Exit 0 when everything matched; each mismatch is printed. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mlrt/mlrt.h>

#include "runtime/reduce.h"
#include "tests/mp/coll_data.h"

static int failures;
static int rank, size;

static void FAILF(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Count a failure; print the first few. */
static void FAILF(const char *fmt, ...)
{
	va_list ap;

	if (failures++ >= 20)
		return;
	fprintf(stderr, "rank %d: FAIL: ", rank);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* The reference of element i: op over ranks 0..size-1, exact. */
static void reference(void *out, size_t i, mlrt_dtype t, mlrt_op op, size_t elem_index)
{
	int u8 = t == MLRT_U8;
	int64_t acc = coll_input(0, elem_index, op, u8);

	for (int r = 1; r < size; r++) {
		int64_t v = coll_input(r, elem_index, op, u8);

		switch (op) {
		case MLRT_SUM:
		case MLRT_AVG: acc += v; break;
		case MLRT_MIN: acc = v < acc ? v : acc; break;
		case MLRT_MAX: acc = v > acc ? v : acc; break;
		case MLRT_PROD: acc *= v; break;
		default: break;
		}
	}
	if (u8)
		acc = (uint8_t)acc;
	if (op != MLRT_AVG) {
		coll_store(out, i, t, (double)acc);
		return;
	}
	switch (t) {
	case MLRT_F32: ((float *)out)[i] = (float)acc / (float)size; break;
	case MLRT_F64: ((double *)out)[i] = (double)acc / size; break;
	case MLRT_F16: ((uint16_t *)out)[i] = mlrti_f32_to_f16((float)acc / (float)size); break;
	case MLRT_BF16: ((uint16_t *)out)[i] = mlrti_f32_to_bf16((float)acc / (float)size); break;
	case MLRT_I32: ((int32_t *)out)[i] = (int32_t)(acc / size); break;
	case MLRT_I64: ((int64_t *)out)[i] = acc / size; break;
	case MLRT_U8: ((uint8_t *)out)[i] = (uint8_t)(acc / size); break;
	default: break;
	}
}

/* A buffer of count elements at an offset of `skew` elements from a
 * 64-byte boundary, with guard bytes around it. */
typedef struct region {
	unsigned char *base;
	void *p;
	size_t bytes;
} region;

#define GUARD 64

static void region_alloc(region *g, size_t bytes, size_t skew)
{
	g->base = malloc(bytes + skew + 2 * GUARD + 64);
	g->bytes = bytes;
	g->p = g->base + GUARD + skew;
	memset(g->base, 0xA5, bytes + skew + 2 * GUARD + 64);
}

static int guards_intact(const region *g)
{
	const unsigned char *after = (const unsigned char *)g->p + g->bytes;

	for (size_t i = 0; i < GUARD; i++)
		if (g->base[i] != 0xA5 || after[i] != 0xA5)
			return 0;
	return 1;
}

static void check_allreduce(mlrt_comm *w, mlrt_dtype t, mlrt_op op, size_t count, int in_place,
                            size_t skew)
{
	size_t es = mlrt_dtype_size(t), bytes = count * es;
	region in, out;
	void *want = malloc(bytes + 1);
	int rc;

	region_alloc(&in, bytes, skew * es);
	region_alloc(&out, bytes, skew * es);
	coll_fill(in.p, count, t, op, rank, 0);
	for (size_t i = 0; i < count; i++)
		reference(want, i, t, op, i);
	rc = mlrt_allreduce(w, in.p, in_place ? in.p : out.p, count, t, op);
	if (rc != MLRT_OK)
		FAILF("allreduce %s %s count %zu: %s", mlrt_dtype_name(t), mlrt_op_name(op), count,
		      mlrt_strerror(rc));
	else if (memcmp(in_place ? in.p : out.p, want, bytes) != 0)
		FAILF("allreduce %s %s count %zu %s skew %zu: wrong result", mlrt_dtype_name(t),
		      mlrt_op_name(op), count, in_place ? "in place" : "out of place", skew);
	else if (!guards_intact(&in) || !guards_intact(&out))
		FAILF("allreduce %s %s count %zu: wrote outside the buffer", mlrt_dtype_name(t),
		      mlrt_op_name(op), count);
	if (!in_place) {
		void *again = malloc(bytes + 1);

		coll_fill(again, count, t, op, rank, 0);
		if (memcmp(again, in.p, bytes) != 0)
			FAILF("allreduce %s %s count %zu: modified the send buffer", mlrt_dtype_name(t),
			      mlrt_op_name(op), count);
		free(again);
	}
	free(in.base);
	free(out.base);
	free(want);
}

static void check_reduce_scatter(mlrt_comm *w, mlrt_dtype t, mlrt_op op, size_t count,
                                 int in_place)
{
	size_t es = mlrt_dtype_size(t), total = count * (size_t)size;
	char *in = malloc(total * es + 1), *out = malloc(count * es + 1), *want = malloc(count * es + 1);
	char *dst = in_place ? in + (size_t)rank * count * es : out;
	int rc;

	coll_fill(in, total, t, op, rank, 0);
	for (size_t i = 0; i < count; i++)
		reference(want, i, t, op, (size_t)rank * count + i);
	rc = mlrt_reduce_scatter(w, in, dst, count, t, op);
	if (rc != MLRT_OK || memcmp(dst, want, count * es) != 0)
		FAILF("reduce_scatter %s %s count %zu %s: %s", mlrt_dtype_name(t), mlrt_op_name(op),
		      count, in_place ? "in place" : "out of place",
		      rc != MLRT_OK ? mlrt_strerror(rc) : "wrong result");
	free(in);
	free(out);
	free(want);
}

static void check_allgather(mlrt_comm *w, size_t count, int in_place)
{
	size_t total = count * (size_t)size;
	int32_t *mine = malloc(count * 4 + 1), *all = malloc(total * 4 + 1);
	int rc;

	for (size_t i = 0; i < count; i++)
		mine[i] = (int32_t)(rank * 1000003 + (int)i);
	if (in_place)
		memcpy(all + (size_t)rank * count, mine, count * 4);
	rc = mlrt_allgather(w, in_place ? all + (size_t)rank * count : mine, all, count, MLRT_I32);
	for (size_t i = 0; rc == MLRT_OK && i < total; i++) {
		int32_t want = (int32_t)((int)(i / (count ? count : 1)) * 1000003 + (int)(i % count));

		if (all[i] != want) {
			rc = MLRT_ERR_CORRUPT;
			break;
		}
	}
	if (rc != MLRT_OK)
		FAILF("allgather count %zu %s: %s", count, in_place ? "in place" : "out of place",
		      mlrt_strerror(rc));
	free(mine);
	free(all);
}

static void check_broadcast(mlrt_comm *w, size_t count, int root)
{
	uint8_t *buf = malloc(count + 1);
	int rc;

	for (size_t i = 0; i < count; i++)
		buf[i] = rank == root ? (uint8_t)(i * 7 + (size_t)root) : 0xEE;
	rc = mlrt_broadcast(w, buf, count, MLRT_U8, root);
	for (size_t i = 0; rc == MLRT_OK && i < count; i++)
		if (buf[i] != (uint8_t)(i * 7 + (size_t)root))
			rc = MLRT_ERR_CORRUPT;
	if (rc != MLRT_OK)
		FAILF("broadcast count %zu root %d: %s", count, root, mlrt_strerror(rc));
	free(buf);
}

/* Random floats: order matters, so check that every rank got the same
 * bits (compared through the store) and that a repeat gives them again. */
static void check_bitwise_agreement(mlrt_ctx *ctx, mlrt_comm *w, size_t count, int round)
{
	float *in = malloc(count * 4 + 4), *out = malloc(count * 4 + 4);
	uint64_t h1, h2;
	char key[128], val[32];
	int rc;

	srand(1234u + (unsigned)rank);
	for (size_t i = 0; i < count; i++)
		in[i] = (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
	rc = mlrt_allreduce(w, in, out, count, MLRT_F32, MLRT_SUM);
	h1 = coll_fnv(out, count * 4);
	if (rc == MLRT_OK)
		rc = mlrt_allreduce(w, in, out, count, MLRT_F32, MLRT_SUM);
	h2 = coll_fnv(out, count * 4);
	if (rc != MLRT_OK || h1 != h2)
		FAILF("random f32 sum count %zu: %s", count, rc ? mlrt_strerror(rc) : "not repeatable");
	snprintf(key, sizeof(key), "%s/check/%d/%d", mlrt_job_id(ctx), round, rank);
	snprintf(val, sizeof(val), "%016" PRIx64, h1);
	mlrt_store_set(mlrt_ctx_store(ctx), key, val, strlen(val));
	if (mlrt_barrier(w) != MLRT_OK)
		FAILF("barrier after bitwise check");
	for (int r = 0; r < size; r++) {
		void *v = NULL;
		size_t len;

		snprintf(key, sizeof(key), "%s/check/%d/%d", mlrt_job_id(ctx), round, r);
		if (mlrt_store_get(mlrt_ctx_store(ctx), key, &v, &len) != MLRT_OK ||
		    strcmp(v, val) != 0)
			FAILF("random f32 sum count %zu: rank %d's bits differ from rank %d's", count, r,
			      rank);
		free(v);
	}
	free(in);
	free(out);
}

int main(void)
{
	const mlrt_op ops[] = {MLRT_SUM, MLRT_AVG, MLRT_MIN, MLRT_MAX, MLRT_PROD};
	mlrt_ctx *ctx;
	mlrt_comm *w;
	int rc = mlrt_init(&ctx);

	if (rc != MLRT_OK) {
		fprintf(stderr, "coll_check: mlrt_init: %s\n", mlrt_strerror(rc));
		return 2;
	}
	w = mlrt_world(ctx);
	rank = mlrt_rank(ctx);
	size = mlrt_size(ctx);
	{
		const size_t counts[] = {0, 1, (size_t)size - 1, (size_t)size + 1, 1000 + (size_t)size,
		                         70000 + 3 * (size_t)size};

		for (int t = 0; t < MLRT_DTYPE_COUNT; t++)
			for (size_t o = 0; o < sizeof(ops) / sizeof(ops[0]); o++)
				for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++)
					for (int ip = 0; ip < 2; ip++)
						check_allreduce(w, (mlrt_dtype)t, ops[o], counts[k], ip,
						                (k + (size_t)ip) % 3);
		for (int t = 0; t < MLRT_DTYPE_COUNT; t++)
			for (size_t o = 0; o < sizeof(ops) / sizeof(ops[0]); o++)
				for (size_t k = 0; k < 4; k++)
					check_reduce_scatter(w, (mlrt_dtype)t, ops[o], counts[k] + 3 * k, k % 2);
		check_reduce_scatter(w, MLRT_F32, MLRT_SUM, 300001, 0);
		check_reduce_scatter(w, MLRT_BF16, MLRT_MAX, 300001, 1);
		for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++)
			for (int ip = 0; ip < 2; ip++)
				check_allgather(w, counts[k], ip);
		for (int root = 0; root < size; root++) {
			check_broadcast(w, 0, root);
			check_broadcast(w, 13, root);
			check_broadcast(w, 100000 + (size_t)root, root);
		}
		check_broadcast(w, 3000001, size - 1);
		check_allreduce(w, MLRT_F32, MLRT_SUM, 3000001, 1, 1);
		check_allreduce(w, MLRT_BF16, MLRT_AVG, 1000003, 0, 2);
		check_bitwise_agreement(ctx, w, 1000, 0);
		check_bitwise_agreement(ctx, w, 1000003, 1);
		for (int i = 0; i < 20; i++)
			if ((rc = mlrt_barrier(w)) != MLRT_OK)
				FAILF("barrier %d: %s", i, mlrt_strerror(rc));
	}
	if (failures == 0 && rank == 0)
		printf("coll_check: %d ranks: all collectives match the reference\n", size);
	mlrt_finalize(ctx);
	return failures == 0 ? 0 : 1;
}
