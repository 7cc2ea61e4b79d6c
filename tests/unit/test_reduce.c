/* Unit tests for the reduction kernels (runtime/reduce.c) and the dtype and
 * op names (runtime/dtype.c).
 *
 * Every kernel is compared with a plain scalar reference written here.  The
 * reference float16/bfloat16 conversions are built on frexp/ldexp/rint, not
 * on the bit tricks of reduce.c, so the two check each other. */
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/reduce.h"

static const size_t counts[] = { 0, 1, 7, 255, 256, 257, 1000 };

/* Deterministic xorshift64 so that a failure is reproducible. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

static float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

static float ref_f16_to_f32(uint16_t h)
{
	int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	float s = (h & 0x8000) ? -1.0f : 1.0f;

	if (e == 31)
		return m != 0 ? NAN : s * INFINITY;
	if (e == 0)
		return s * ldexpf((float)m, -24);
	return s * ldexpf((float)(m + 1024), e - 25);
}

static float ref_bf16_to_f32(uint16_t h)
{
	int e = (h >> 7) & 0xff, m = h & 0x7f;
	float s = (h & 0x8000) ? -1.0f : 1.0f;

	if (e == 255)
		return m != 0 ? NAN : s * INFINITY;
	if (e == 0)
		return s * ldexpf((float)m, -133);
	return s * ldexpf((float)(m + 128), e - 134);
}

/* Round x to a 16-bit format with mbits mantissa bits and exponent bias
 * `bias`; inf is the bit pattern of +Inf.  Round to nearest even comes from
 * rint in the default rounding mode.  NaN gives the canonical quiet NaN. */
static uint16_t ref_round16(float x, int mbits, int bias, unsigned inf)
{
	unsigned sign = signbit(x) ? 0x8000 : 0;
	double ax = fabs((double)x), q, bits;
	int e;

	if (isnan(x))
		return (uint16_t)(sign | inf | (1u << (mbits - 1)));
	if (isinf(x))
		return (uint16_t)(sign | inf);
	if (ax == 0.0)
		return (uint16_t)sign;
	frexp(ax, &e); /* ax = f * 2^e with f in [0.5, 1) */
	e -= 1;
	if (e < 1 - bias)
		e = 1 - bias; /* subnormal: the scale of the smallest normal */
	q = rint(ldexp(ax, mbits - e)); /* significand in units of the last place */
	/* Patterns are monotonic, so a carry out of q moves to the next binade. */
	bits = (double)(e + bias) * (1 << mbits) + q - (1 << mbits);
	if (bits >= inf)
		return (uint16_t)(sign | inf);
	return (uint16_t)(sign | (unsigned)bits);
}

static uint16_t ref_f32_to_f16(float x)
{
	return ref_round16(x, 10, 15, 0x7c00);
}

static uint16_t ref_f32_to_bf16(float x)
{
	return ref_round16(x, 7, 127, 0x7f80);
}

static int is_nan16(mlrt_dtype t, uint16_t h)
{
	return t == MLRT_F16 ? (h & 0x7fff) > 0x7c00 : (h & 0x7fff) > 0x7f80;
}

/* The documented semantics: MIN/MAX give the second operand when either is
 * NaN or the two compare equal (+0 and -0). */
#define REF_FLOAT_OP(op, x, y)                                                           \
	((op) == MLRT_SUM || (op) == MLRT_AVG ? (x) + (y)                               \
	 : (op) == MLRT_PROD                  ? (x) * (y)                               \
	 : isnan(x) || isnan(y) || (x) == (y) ? (y)                                     \
	 : (op) == MLRT_MIN                   ? ((x) < (y) ? (x) : (y))                 \
	                                      : ((x) > (y) ? (x) : (y)))

static float ref_f32_op(mlrt_op op, float x, float y)
{
	return REF_FLOAT_OP(op, x, y);
}

static double ref_f64_op(mlrt_op op, double x, double y)
{
	return REF_FLOAT_OP(op, x, y);
}

static uint64_t ref_int_op(mlrt_op op, int64_t x, int64_t y)
{
	switch (op) {
	case MLRT_SUM:
	case MLRT_AVG: return (uint64_t)x + (uint64_t)y;
	case MLRT_PROD: return (uint64_t)x * (uint64_t)y;
	case MLRT_MIN: return (uint64_t)(x < y ? x : y);
	case MLRT_MAX: return (uint64_t)(x > y ? x : y);
	default: break;
	}
	return 0;
}

/* *o = op(*a, *b) for one element of type t. */
static void ref_elem(mlrt_dtype t, mlrt_op op, void *o, const void *a, const void *b)
{
	float f[2];
	double d[2];
	int32_t i32[2];
	int64_t i64[2];
	uint16_t h[2];
	uint32_t u32;
	uint64_t u64;
	uint8_t u8;

	switch (t) {
	case MLRT_F32:
		memcpy(&f[0], a, 4);
		memcpy(&f[1], b, 4);
		f[0] = ref_f32_op(op, f[0], f[1]);
		memcpy(o, &f[0], 4);
		break;
	case MLRT_F64:
		memcpy(&d[0], a, 8);
		memcpy(&d[1], b, 8);
		d[0] = ref_f64_op(op, d[0], d[1]);
		memcpy(o, &d[0], 8);
		break;
	case MLRT_F16:
	case MLRT_BF16:
		memcpy(&h[0], a, 2);
		memcpy(&h[1], b, 2);
		if (t == MLRT_F16)
			h[0] = ref_f32_to_f16(
				ref_f32_op(op, ref_f16_to_f32(h[0]), ref_f16_to_f32(h[1])));
		else
			h[0] = ref_f32_to_bf16(
				ref_f32_op(op, ref_bf16_to_f32(h[0]), ref_bf16_to_f32(h[1])));
		memcpy(o, &h[0], 2);
		break;
	case MLRT_I32:
		memcpy(i32, a, 4);
		memcpy(&i32[1], b, 4);
		u32 = (uint32_t)ref_int_op(op, i32[0], i32[1]);
		memcpy(o, &u32, 4);
		break;
	case MLRT_I64:
		memcpy(i64, a, 8);
		memcpy(&i64[1], b, 8);
		u64 = ref_int_op(op, i64[0], i64[1]);
		memcpy(o, &u64, 8);
		break;
	case MLRT_U8:
		u8 = (uint8_t)ref_int_op(op, *(const uint8_t *)a, *(const uint8_t *)b);
		memcpy(o, &u8, 1);
		break;
	default: fail_msg("bad dtype %d", (int)t);
	}
}

/* Whether two elements of type t are the same result: equal bits, or
 * both NaN (the payload of a computed NaN is not specified). */
static int same_elem(mlrt_dtype t, const void *p, const void *q)
{
	float f[2];
	double d[2];
	uint16_t h[2];

	switch (t) {
	case MLRT_F32:
		memcpy(&f[0], p, 4);
		memcpy(&f[1], q, 4);
		return (isnan(f[0]) && isnan(f[1])) || memcmp(p, q, 4) == 0;
	case MLRT_F64:
		memcpy(&d[0], p, 8);
		memcpy(&d[1], q, 8);
		return (isnan(d[0]) && isnan(d[1])) || memcmp(p, q, 8) == 0;
	case MLRT_F16:
	case MLRT_BF16:
		memcpy(&h[0], p, 2);
		memcpy(&h[1], q, 2);
		return (is_nan16(t, h[0]) && is_nan16(t, h[1])) || h[0] == h[1];
	default: return memcmp(p, q, mlrt_dtype_size(t)) == 0;
	}
}

/* Random element: float32/64 are mostly small exact values with some
 * specials and raw bit patterns; the others are raw random bits, which for
 * f16/bf16 covers NaN, Inf and subnormals. */
static void rand_elem(mlrt_dtype t, void *p)
{
	static const double specials[] = { NAN, 0.0, -0.0, INFINITY, -INFINITY, 1.0, -1.0 };
	uint64_t r = rng();
	double v = (double)((int64_t)(r >> 40) % 20001 - 10000) / 64.0;
	float f;

	if (r % 16 == 0)
		v = specials[(r >> 8) % (sizeof(specials) / sizeof(specials[0]))];
	if (t == MLRT_F32 && r % 16 != 1) {
		f = (float)v;
		memcpy(p, &f, 4);
	} else if (t == MLRT_F64 && r % 16 != 1) {
		memcpy(p, &v, 8);
	} else {
		r = rng();
		memcpy(p, &r, mlrt_dtype_size(t));
	}
}

enum variant {
	V_OUT_OF_PLACE, /* reduce3(out, a, b), all distinct */
	V_IN_PLACE,     /* reduce(inout = a, b) */
	V_OUT_IS_B,     /* reduce3(out = b, a, out) */
	V_SELF,         /* reduce(inout = a, inout) */
	V_A_IS_B,       /* reduce3(out, a, a) */
	V_COUNT
};

static const char *const variant_names[V_COUNT] = {
	[V_OUT_OF_PLACE] = "reduce3 out of place",
	[V_IN_PLACE] = "reduce in place",
	[V_OUT_IS_B] = "reduce3 out == b",
	[V_SELF] = "reduce inout == in",
	[V_A_IS_B] = "reduce3 a == b",
};

/* Run one variant over count elements that start `off` elements into
 * buffers of count + 2 elements, and check the result against the
 * reference, the untouched elements around it, and the unchanged inputs. */
static void check_variant(mlrt_dtype t, mlrt_op op, size_t count, size_t off, enum variant v)
{
	size_t sz = mlrt_dtype_size(t), n = count + 2, bytes = n * sz, lo = off * sz;
	unsigned char *a = malloc(bytes), *b = malloc(bytes), *a0 = malloc(bytes);
	unsigned char *b0 = malloc(bytes), *out = malloc(bytes), *before = malloc(bytes);
	unsigned char *want = malloc(bytes);
	int rc = MLRT_ERR_INTERNAL;

	assert_non_null(a && b && a0 && b0 && out && before && want);
	for (size_t i = 0; i < n; i++) {
		rand_elem(t, a + i * sz);
		rand_elem(t, b + i * sz);
		rand_elem(t, out + i * sz);
	}
	memcpy(a0, a, bytes);
	memcpy(b0, b, bytes);
	if (v == V_IN_PLACE || v == V_SELF)
		memcpy(out, a, bytes);
	if (v == V_OUT_IS_B)
		memcpy(out, b, bytes);
	memcpy(before, out, bytes);
	for (size_t i = 0; i < n; i++)
		ref_elem(t, op, want + i * sz, a0 + i * sz,
		         (v == V_SELF || v == V_A_IS_B ? a0 : b0) + i * sz);

	switch (v) {
	case V_OUT_OF_PLACE: rc = mlrti_reduce3(out + lo, a + lo, b + lo, count, t, op); break;
	case V_IN_PLACE: rc = mlrti_reduce(out + lo, b + lo, count, t, op); break;
	case V_OUT_IS_B: rc = mlrti_reduce3(out + lo, a + lo, out + lo, count, t, op); break;
	case V_SELF: rc = mlrti_reduce(out + lo, out + lo, count, t, op); break;
	case V_A_IS_B: rc = mlrti_reduce3(out + lo, a + lo, a + lo, count, t, op); break;
	case V_COUNT: break;
	}
	assert_int_equal(rc, MLRT_OK);

	for (size_t i = 0; i < n; i++) {
		const unsigned char *got = out + i * sz;
		int inside = i >= off && i < off + count;

		if (inside && !same_elem(t, got, want + i * sz))
			fail_msg("%s %s count %zu offset %zu %s: element %zu wrong",
			         mlrt_dtype_name(t), mlrt_op_name(op), count, off,
			         variant_names[v], i - off);
		if (!inside && memcmp(got, before + i * sz, sz) != 0)
			fail_msg("%s %s count %zu offset %zu %s: wrote outside at %zu",
			         mlrt_dtype_name(t), mlrt_op_name(op), count, off,
			         variant_names[v], i);
	}
	assert_memory_equal(a, a0, bytes);
	assert_memory_equal(b, b0, bytes);
	free(a), free(b), free(a0), free(b0), free(out), free(before), free(want);
}

static void check_dtype(mlrt_dtype t)
{
	for (int op = 0; op < MLRT_OP_COUNT; op++)
		for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++)
			for (size_t off = 0; off < 2; off++)
				for (int v = 0; v < V_COUNT; v++)
					check_variant(t, (mlrt_op)op, counts[c], off, (enum variant)v);
}

#define DTYPE_TEST(tn, t)                                                                \
	static void test_reduce_##tn(void **state)                                       \
	{                                                                                \
		(void)state;                                                             \
		check_dtype(t);                                                          \
	}

DTYPE_TEST(f32, MLRT_F32)
DTYPE_TEST(f64, MLRT_F64)
DTYPE_TEST(f16, MLRT_F16)
DTYPE_TEST(bf16, MLRT_BF16)
DTYPE_TEST(i32, MLRT_I32)
DTYPE_TEST(i64, MLRT_I64)
DTYPE_TEST(u8, MLRT_U8)

/* *p = *p / n for one element, as finish does for AVG: integers truncate
 * toward zero, 16-bit floats divide in float32 and round back. */
static void ref_divide(mlrt_dtype t, void *p, int n)
{
	float f;
	double d;
	int32_t i32;
	int64_t i64;
	uint16_t h;

	switch (t) {
	case MLRT_F32:
		memcpy(&f, p, 4);
		f /= (float)n;
		memcpy(p, &f, 4);
		break;
	case MLRT_F64:
		memcpy(&d, p, 8);
		d /= n;
		memcpy(p, &d, 8);
		break;
	case MLRT_F16:
		memcpy(&h, p, 2);
		h = ref_f32_to_f16(ref_f16_to_f32(h) / (float)n);
		memcpy(p, &h, 2);
		break;
	case MLRT_BF16:
		memcpy(&h, p, 2);
		h = ref_f32_to_bf16(ref_bf16_to_f32(h) / (float)n);
		memcpy(p, &h, 2);
		break;
	case MLRT_I32:
		memcpy(&i32, p, 4);
		i32 /= n;
		memcpy(p, &i32, 4);
		break;
	case MLRT_I64:
		memcpy(&i64, p, 8);
		i64 /= n;
		memcpy(p, &i64, 8);
		break;
	case MLRT_U8: *(uint8_t *)p = (uint8_t)(*(uint8_t *)p / n); break;
	default: fail_msg("bad dtype %d", (int)t);
	}
}

/* AVG over three contributors: two accumulating reduces into a misaligned
 * buffer, then finish(3), against the reference sum (rounded after each
 * step, as the kernels do) divided by 3. */
static void test_avg_three(void **state)
{
	enum { N = 300 };
	(void)state;
	for (int ti = 0; ti < MLRT_DTYPE_COUNT; ti++) {
		mlrt_dtype t = (mlrt_dtype)ti;
		size_t sz = mlrt_dtype_size(t);
		unsigned char *buf = malloc((N + 1) * sz), *x = malloc(N * sz);
		unsigned char *y = malloc(N * sz), *want = malloc(N * sz);
		unsigned char *acc = buf + sz;

		assert_non_null(buf && x && y && want);
		for (size_t i = 0; i < N; i++) {
			rand_elem(t, acc + i * sz);
			rand_elem(t, x + i * sz);
			rand_elem(t, y + i * sz);
			ref_elem(t, MLRT_SUM, want + i * sz, acc + i * sz, x + i * sz);
			ref_elem(t, MLRT_SUM, want + i * sz, want + i * sz, y + i * sz);
			ref_divide(t, want + i * sz, 3);
		}
		assert_int_equal(mlrti_reduce(acc, x, N, t, MLRT_AVG), MLRT_OK);
		assert_int_equal(mlrti_reduce(acc, y, N, t, MLRT_AVG), MLRT_OK);
		assert_int_equal(mlrti_reduce_finish(acc, N, t, MLRT_AVG, 3), MLRT_OK);
		for (size_t i = 0; i < N; i++)
			if (!same_elem(t, acc + i * sz, want + i * sz))
				fail_msg("avg %s: element %zu wrong", mlrt_dtype_name(t), i);
		free(buf), free(x), free(y), free(want);
	}
}

/* Integer averages truncate toward zero, also for negative values. */
static void test_avg_truncates(void **state)
{
	int32_t v32[] = { -7, 7, -1, -2, -3, -4, INT32_MIN, INT32_MAX };
	const int32_t w32[] = { -2, 2, 0, 0, -1, -1, -715827882, 715827882 };
	int64_t v64[] = { -7, 7, -1, -2, -3, -4, INT64_MIN, INT64_MAX };
	const int64_t w64[] = { -2, 2, 0, 0, -1, -1, INT64_MIN / 3, INT64_MAX / 3 };
	uint8_t v8[] = { 0, 1, 2, 3, 254, 255 };
	const uint8_t w8[] = { 0, 0, 0, 1, 84, 85 };

	(void)state;
	assert_int_equal(mlrti_reduce_finish(v32, 8, MLRT_I32, MLRT_AVG, 3), MLRT_OK);
	assert_memory_equal(v32, w32, sizeof(w32));
	assert_int_equal(mlrti_reduce_finish(v64, 8, MLRT_I64, MLRT_AVG, 3), MLRT_OK);
	assert_memory_equal(v64, w64, sizeof(w64));
	assert_int_equal(mlrti_reduce_finish(v8, 6, MLRT_U8, MLRT_AVG, 3), MLRT_OK);
	assert_memory_equal(v8, w8, sizeof(w8));
	/* More contributors than a u8 can count. */
	v8[5] = 255;
	assert_int_equal(mlrti_reduce_finish(&v8[5], 1, MLRT_U8, MLRT_AVG, 300), MLRT_OK);
	assert_int_equal(v8[5], 0);
	v32[0] = -250000;
	assert_int_equal(mlrti_reduce_finish(v32, 1, MLRT_I32, MLRT_AVG, 100000), MLRT_OK);
	assert_int_equal(v32[0], -2);
}

/* finish leaves every op but AVG alone, and AVG over one contributor too. */
static void test_finish_noop(void **state)
{
	float f[4] = { 1.0f, -2.5f, 3.0f, NAN };
	float g[4];
	int32_t i[3] = { -7, 8, 9 };

	(void)state;
	memcpy(g, f, sizeof(f));
	for (int op = 0; op < MLRT_OP_COUNT; op++) {
		if (op == MLRT_AVG)
			continue;
		assert_int_equal(mlrti_reduce_finish(f, 4, MLRT_F32, (mlrt_op)op, 3), MLRT_OK);
		assert_memory_equal(f, g, sizeof(f));
		assert_int_equal(mlrti_reduce_finish(i, 3, MLRT_I32, (mlrt_op)op, 3), MLRT_OK);
		assert_int_equal(i[0], -7);
	}
	assert_int_equal(mlrti_reduce_finish(f, 4, MLRT_F32, MLRT_AVG, 1), MLRT_OK);
	assert_memory_equal(f, g, sizeof(f));
	assert_int_equal(mlrti_reduce_finish(NULL, 0, MLRT_F32, MLRT_AVG, 2), MLRT_OK);
}

static void test_bad_args(void **state)
{
	float x[4] = { 1, 2, 3, 4 }, y[4] = { 5, 6, 7, 8 }, o[4] = { 0 };
	const float x0[4] = { 1, 2, 3, 4 };
	const mlrt_dtype bad_t[] = { MLRT_DTYPE_COUNT, (mlrt_dtype)-1, (mlrt_dtype)1000 };
	const mlrt_op bad_op[] = { MLRT_OP_COUNT, (mlrt_op)-1, (mlrt_op)1000 };

	(void)state;
	for (size_t k = 0; k < 3; k++) {
		assert_int_equal(mlrti_reduce(x, y, 4, bad_t[k], MLRT_SUM), MLRT_ERR_INVALID);
		assert_int_equal(mlrti_reduce(x, y, 4, MLRT_F32, bad_op[k]), MLRT_ERR_INVALID);
		assert_int_equal(mlrti_reduce(x, y, 0, bad_t[k], MLRT_SUM), MLRT_ERR_INVALID);
		assert_int_equal(mlrti_reduce3(o, x, y, 4, bad_t[k], MLRT_SUM), MLRT_ERR_INVALID);
		assert_int_equal(mlrti_reduce3(o, x, y, 4, MLRT_F32, bad_op[k]), MLRT_ERR_INVALID);
		assert_int_equal(mlrti_reduce_finish(x, 4, bad_t[k], MLRT_AVG, 2),
		                 MLRT_ERR_INVALID);
		assert_int_equal(mlrti_reduce_finish(x, 4, MLRT_F32, bad_op[k], 2),
		                 MLRT_ERR_INVALID);
	}
	assert_int_equal(mlrti_reduce_finish(x, 4, MLRT_F32, MLRT_AVG, 0), MLRT_ERR_INVALID);
	assert_int_equal(mlrti_reduce_finish(x, 4, MLRT_F32, MLRT_AVG, -3), MLRT_ERR_INVALID);
	assert_int_equal(mlrti_reduce_finish(x, 4, MLRT_I32, MLRT_SUM, 0), MLRT_ERR_INVALID);
	assert_int_equal(mlrti_reduce(NULL, y, 4, MLRT_F32, MLRT_SUM), MLRT_ERR_INVALID);
	assert_int_equal(mlrti_reduce3(o, NULL, y, 4, MLRT_F32, MLRT_SUM), MLRT_ERR_INVALID);
	/* A rejected call writes nothing. */
	assert_memory_equal(x, x0, sizeof(x));
	assert_true(o[0] == 0.0f && o[3] == 0.0f);
	/* Zero elements is fine, even without buffers. */
	assert_int_equal(mlrti_reduce(NULL, NULL, 0, MLRT_F16, MLRT_MAX), MLRT_OK);
	assert_int_equal(mlrti_reduce3(NULL, NULL, NULL, 0, MLRT_U8, MLRT_PROD), MLRT_OK);
}

static void test_f16_known(void **state)
{
	(void)state;
	assert_int_equal(mlrti_f32_to_f16(1.0f), 0x3c00);
	assert_int_equal(mlrti_f32_to_f16(-2.0f), 0xc000);
	assert_int_equal(mlrti_f32_to_f16(0.0f), 0x0000);
	assert_int_equal(mlrti_f32_to_f16(-0.0f), 0x8000);
	assert_int_equal(mlrti_f32_to_f16(65504.0f), 0x7bff);
	assert_int_equal(mlrti_f32_to_f16(65519.996f), 0x7bff);
	assert_int_equal(mlrti_f32_to_f16(65520.0f), 0x7c00);
	assert_int_equal(mlrti_f32_to_f16(-1e10f), 0xfc00);
	assert_int_equal(mlrti_f32_to_f16(INFINITY), 0x7c00);
	assert_int_equal(mlrti_f32_to_f16(ldexpf(1.0f, -24)), 0x0001);
	assert_int_equal(mlrti_f32_to_f16(ldexpf(1.0f, -14)), 0x0400);
	/* Ties go to even: 1 + 2^-11 down to 1, 1 + 3 * 2^-11 up to 1 + 2^-9;
	 * among subnormals 2^-25 down to 0 and 3 * 2^-25 up to 2 * 2^-24. */
	assert_int_equal(mlrti_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00);
	assert_int_equal(mlrti_f32_to_f16(1.0f + ldexpf(3.0f, -11)), 0x3c02);
	assert_int_equal(mlrti_f32_to_f16(ldexpf(1.0f, -25)), 0x0000);
	assert_int_equal(mlrti_f32_to_f16(ldexpf(3.0f, -25)), 0x0002);
	assert_int_equal(mlrti_f32_to_f16(ldexpf(1.0f, -26)), 0x0000);
	/* NaN stays NaN, including a signalling one whose payload is only in
	 * the bits a truncation would drop. */
	assert_true(is_nan16(MLRT_F16, mlrti_f32_to_f16(NAN)));
	assert_true(is_nan16(MLRT_F16, mlrti_f32_to_f16(bits_f32(0x7f800001))));
	assert_true(is_nan16(MLRT_F16, mlrti_f32_to_f16(bits_f32(0xff800001))));

	assert_true(mlrti_f16_to_f32(0x3c00) == 1.0f);
	assert_true(mlrti_f16_to_f32(0x7bff) == 65504.0f);
	assert_true(mlrti_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
	assert_true(mlrti_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24));
	assert_true(mlrti_f16_to_f32(0xfc00) == -INFINITY);
	assert_int_equal(f32_bits(mlrti_f16_to_f32(0x8000)), 0x80000000u);
	assert_true(isnan(mlrti_f16_to_f32(0x7e00)));
	assert_true(isnan(mlrti_f16_to_f32(0x7c01)));
}

static void test_bf16_known(void **state)
{
	(void)state;
	assert_int_equal(mlrti_f32_to_bf16(1.0f), 0x3f80);
	assert_int_equal(mlrti_f32_to_bf16(-2.0f), 0xc000);
	assert_int_equal(mlrti_f32_to_bf16(-0.0f), 0x8000);
	/* Ties to even: 1 + 2^-8 down to 1, 1 + 3 * 2^-8 up to 1 + 2^-6. */
	assert_int_equal(mlrti_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3f80);
	assert_int_equal(mlrti_f32_to_bf16(1.0f + ldexpf(3.0f, -8)), 0x3f82);
	assert_int_equal(mlrti_f32_to_bf16(bits_f32(0x3f808001)), 0x3f81);
	assert_int_equal(mlrti_f32_to_bf16(bits_f32(0x00008000)), 0x0000); /* subnormal tie */
	assert_int_equal(mlrti_f32_to_bf16(bits_f32(0x00018000)), 0x0002);
	assert_int_equal(mlrti_f32_to_bf16(bits_f32(0x7f7fffff)), 0x7f80); /* FLT_MAX */
	assert_int_equal(mlrti_f32_to_bf16(-INFINITY), 0xff80);
	assert_true(is_nan16(MLRT_BF16, mlrti_f32_to_bf16(NAN)));
	assert_true(is_nan16(MLRT_BF16, mlrti_f32_to_bf16(bits_f32(0x7f800001))));
	assert_true(is_nan16(MLRT_BF16, mlrti_f32_to_bf16(bits_f32(0xffffffff))));

	assert_true(mlrti_bf16_to_f32(0x3f80) == 1.0f);
	assert_true(mlrti_bf16_to_f32(0x0001) == ldexpf(1.0f, -133));
	assert_true(isnan(mlrti_bf16_to_f32(0x7fc0)));
}

/* All 65536 float16 patterns: widening is exact, and narrowing back gives
 * the same pattern (NaN stays NaN). */
static void test_f16_exhaustive(void **state)
{
	(void)state;
	for (uint32_t h = 0; h <= 0xffff; h++) {
		float f = mlrti_f16_to_f32((uint16_t)h), r = ref_f16_to_f32((uint16_t)h);
		uint16_t back = mlrti_f32_to_f16(f);

		if (isnan(r) ? !isnan(f) : f32_bits(f) != f32_bits(r))
			fail_msg("f16 0x%04x widens to %a, want %a", (unsigned)h, (double)f, (double)r);
		if (isnan(r) ? !is_nan16(MLRT_F16, back) : back != h)
			fail_msg("f16 0x%04x round trips to 0x%04x", (unsigned)h, (unsigned)back);
	}
}

static void check_narrow(mlrt_dtype t, float x, uint16_t want)
{
	uint16_t got = t == MLRT_F16 ? mlrti_f32_to_f16(x) : mlrti_f32_to_bf16(x);
	uint16_t ref = t == MLRT_F16 ? ref_f32_to_f16(x) : ref_f32_to_bf16(x);

	if (got != want || ref != want)
		fail_msg("%s(%a = 0x%08x): got 0x%04x, reference 0x%04x, want 0x%04x",
		         mlrt_dtype_name(t), (double)x, (unsigned)f32_bits(x), (unsigned)got,
		         (unsigned)ref, (unsigned)want);
}

/* Around every finite non-negative 16-bit value v (and its negation): v
 * itself, the midpoint to the next value (a tie, to even), and the floats
 * just below and above that midpoint.  Then random float32 patterns
 * against the reference. */
static void check_rounding(mlrt_dtype t, uint16_t max_finite)
{
	float (*widen)(uint16_t) = t == MLRT_F16 ? ref_f16_to_f32 : ref_bf16_to_f32;

	for (uint32_t h = 0; h <= max_finite; h++) {
		float lo = widen((uint16_t)h);
		/* The step to the next value; past the largest finite one it
		 * is the same as below it (the next value would be Inf). */
		float step = h < max_finite ? widen((uint16_t)(h + 1)) - lo
		                            : lo - widen((uint16_t)(h - 1));
		float mid = lo + step / 2; /* exact: one more significant bit */
		uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;

		for (int s = 0; s < 2; s++) {
			float sg = s ? -1.0f : 1.0f;
			uint16_t sb = s ? 0x8000 : 0;

			check_narrow(t, sg * lo, (uint16_t)(sb | h));
			check_narrow(t, sg * mid, (uint16_t)(sb | even));
			check_narrow(t, sg * nextafterf(mid, 0.0f), (uint16_t)(sb | h));
			check_narrow(t, sg * nextafterf(mid, INFINITY), (uint16_t)(sb | (h + 1)));
		}
	}
	for (int k = 0; k < (1 << 20); k++) {
		float x = bits_f32((uint32_t)rng());
		uint16_t got = t == MLRT_F16 ? mlrti_f32_to_f16(x) : mlrti_f32_to_bf16(x);

		if (isnan(x))
			assert_true(is_nan16(t, got));
		else
			check_narrow(t, x, t == MLRT_F16 ? ref_f32_to_f16(x) : ref_f32_to_bf16(x));
	}
}

static void test_f16_rounding(void **state)
{
	(void)state;
	check_rounding(MLRT_F16, 0x7bff);
}

static void test_bf16_rounding(void **state)
{
	(void)state;
	check_rounding(MLRT_BF16, 0x7f7f);
}

static void test_names(void **state)
{
	static const size_t sizes[] = { 4, 8, 2, 2, 4, 8, 1 };
	static const char *const dnames[] = { "f32", "f64", "f16", "bf16", "i32", "i64", "u8" };
	static const char *const onames[] = { "sum", "avg", "min", "max", "prod" };

	(void)state;
	for (int t = 0; t < MLRT_DTYPE_COUNT; t++) {
		assert_int_equal(mlrt_dtype_size((mlrt_dtype)t), sizes[t]);
		assert_string_equal(mlrt_dtype_name((mlrt_dtype)t), dnames[t]);
	}
	for (int op = 0; op < MLRT_OP_COUNT; op++)
		assert_string_equal(mlrt_op_name((mlrt_op)op), onames[op]);
	assert_int_equal(mlrt_dtype_size(MLRT_DTYPE_COUNT), 0);
	assert_int_equal(mlrt_dtype_size((mlrt_dtype)-1), 0);
	assert_string_equal(mlrt_dtype_name(MLRT_DTYPE_COUNT), "invalid");
	assert_string_equal(mlrt_dtype_name((mlrt_dtype)77), "invalid");
	assert_string_equal(mlrt_op_name(MLRT_OP_COUNT), "invalid");
	assert_string_equal(mlrt_op_name((mlrt_op)-1), "invalid");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_reduce_f32),
		cmocka_unit_test(test_reduce_f64),
		cmocka_unit_test(test_reduce_f16),
		cmocka_unit_test(test_reduce_bf16),
		cmocka_unit_test(test_reduce_i32),
		cmocka_unit_test(test_reduce_i64),
		cmocka_unit_test(test_reduce_u8),
		cmocka_unit_test(test_avg_three),
		cmocka_unit_test(test_avg_truncates),
		cmocka_unit_test(test_finish_noop),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_f16_known),
		cmocka_unit_test(test_bf16_known),
		cmocka_unit_test(test_f16_exhaustive),
		cmocka_unit_test(test_f16_rounding),
		cmocka_unit_test(test_bf16_rounding),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
