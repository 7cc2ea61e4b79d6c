/* Element-wise reduction kernels (see reduce.h).
 *
 * This file is built at -O3 and every loop in it is written for GCC's
 * vectoriser.  The kernels of one (type, op) pair come from one macro in
 * four aliasing variants whose restrict qualifiers are true for that
 * variant: out distinct from both inputs, out == a, out == b, and
 * out == a == b.  Partial overlap is outside the contract of reduce.h.
 *
 * Integer sum and product wrap around: they are computed in the unsigned
 * type of the same width (which may alias the signed one), so there is no
 * signed overflow.  u8 wraps modulo 256.
 *
 * Floating-point MIN and MAX are "a < b ? a : b" and "a > b ? a : b", which
 * is exactly what SSE/AVX min and max compute.  When either operand is NaN,
 * or both are zeros of either sign, the result is the second operand (b, or
 * `in` for mlrti_reduce): a NaN arriving in `in` propagates, a NaN already
 * in `inout` is replaced by the other value.
 *
 * float16 and bfloat16 are widened in blocks of HALF_BLOCK elements into
 * float32 arrays on the stack, reduced with the float32 kernels and rounded
 * back; the conversions are branch-free so those loops vectorise as well. */
#include <string.h>

#include "runtime/reduce.h"

#define HALF_BLOCK 256

#define OP_ADD(x, y) ((x) + (y))
#define OP_MUL(x, y) ((x) * (y))
#define OP_MIN(x, y) ((x) < (y) ? (x) : (y))
#define OP_MAX(x, y) ((x) > (y) ? (x) : (y))

/* out[i] = op(a[i], b[i]) for one (type, op) pair, any allowed aliasing. */
typedef void (*kernel_fn)(void *out, const void *a, const void *b, size_t n);

/* inout[i] = op(inout[i], in[i]) on float32, for the 16-bit formats. */
typedef void (*f32_inplace_fn)(float *restrict o, const float *restrict b, size_t n);

#define DEF_KERNEL(name, T, OP)                                                          \
	static void name##_3(T *restrict o, const T *restrict a, const T *restrict b,    \
	                     size_t n)                                                   \
	{                                                                                \
		for (size_t i = 0; i < n; i++)                                           \
			o[i] = (T)OP(a[i], b[i]);                                        \
	}                                                                                \
	static void name##_a(T *restrict o, const T *restrict b, size_t n)               \
	{                                                                                \
		for (size_t i = 0; i < n; i++)                                           \
			o[i] = (T)OP(o[i], b[i]);                                        \
	}                                                                                \
	static void name##_b(T *restrict o, const T *restrict a, size_t n)               \
	{                                                                                \
		for (size_t i = 0; i < n; i++)                                           \
			o[i] = (T)OP(a[i], o[i]);                                        \
	}                                                                                \
	static void name##_s(T *o, size_t n)                                             \
	{                                                                                \
		for (size_t i = 0; i < n; i++)                                           \
			o[i] = (T)OP(o[i], o[i]);                                        \
	}                                                                                \
	static void name(void *o, const void *a, const void *b, size_t n)                \
	{                                                                                \
		if (o == a && o == b)                                                    \
			name##_s(o, n);                                                  \
		else if (o == a)                                                         \
			name##_a(o, b, n);                                               \
		else if (o == b)                                                         \
			name##_b(o, a, n);                                               \
		else                                                                     \
			name##_3(o, a, b, n);                                            \
	}

/* T is the element type, TW the type sum and product are computed in. */
#define DEF_KERNELS(tn, T, TW)                                                           \
	DEF_KERNEL(tn##_sum, TW, OP_ADD)                                                 \
	DEF_KERNEL(tn##_prod, TW, OP_MUL)                                                \
	DEF_KERNEL(tn##_min, T, OP_MIN)                                                  \
	DEF_KERNEL(tn##_max, T, OP_MAX)

DEF_KERNELS(f32, float, float)
DEF_KERNELS(f64, double, double)
DEF_KERNELS(i32, int32_t, uint32_t)
DEF_KERNELS(i64, int64_t, uint64_t)
DEF_KERNELS(u8, uint8_t, uint8_t)

#define KERNEL_ROW(tn)                                                                   \
	{                                                                                \
		[MLRT_SUM] = tn##_sum, [MLRT_AVG] = tn##_sum, [MLRT_MIN] = tn##_min,     \
		[MLRT_MAX] = tn##_max, [MLRT_PROD] = tn##_prod,                          \
	}

/* F16 and BF16 have no row: they go through half_reduce. */
static const kernel_fn kernels[MLRT_DTYPE_COUNT][MLRT_OP_COUNT] = {
	[MLRT_F32] = KERNEL_ROW(f32),
	[MLRT_F64] = KERNEL_ROW(f64),
	[MLRT_I32] = KERNEL_ROW(i32),
	[MLRT_I64] = KERNEL_ROW(i64),
	[MLRT_U8] = KERNEL_ROW(u8),
};

static const f32_inplace_fn f32_inplace[MLRT_OP_COUNT] = {
	[MLRT_SUM] = f32_sum_a,
	[MLRT_AVG] = f32_sum_a,
	[MLRT_MIN] = f32_min_a,
	[MLRT_MAX] = f32_max_a,
	[MLRT_PROD] = f32_prod_a,
};

static inline uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

static inline float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

/* All-ones when c holds, else zero.  The 16-bit conversions select with
 * masks, not "?:": GCC lowers "?:" to branches, may then sink a float
 * operation into one of them, and will not if-convert a float operation
 * that could trap, which leaves the loop unvectorised. */
static inline uint32_t mask_if(int c)
{
	return 0u - (uint32_t)c;
}

static inline uint32_t select_u32(uint32_t mask, uint32_t x, uint32_t y)
{
	return (x & mask) | (y & ~mask);
}

/* float16 -> float32, exact.  Branch-free so that it vectorises. */
static inline float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t em = (uint32_t)(h & 0x7fff) << 13; /* exponent and mantissa, in place */
	uint32_t exp = em & 0x0f800000;
	uint32_t u, sub;

	/* Rebias 15 -> 127; Inf/NaN get exponent 255. */
	u = em + (112u << 23) + (mask_if(exp == 0x0f800000) & (112u << 23));
	/* Zero and subnormals: build 2^-14 * (1 + m/1024) and subtract 2^-14.
	 * Exact, and no float32 subnormal is involved, so it also holds under
	 * flush-to-zero / denormals-are-zero. */
	sub = f32_bits(bits_f32(em + (113u << 23)) - bits_f32(113u << 23));
	u = select_u32(mask_if(exp == 0), sub, u);
	return bits_f32(u | sign);
}

/* float32 -> float16, round to nearest even; overflow gives Inf, NaN stays
 * NaN (quietened, top payload bits kept).  Branch-free. */
static inline uint16_t f32_to_f16(float f)
{
	uint32_t u = f32_bits(f);
	uint32_t sign = (u >> 16) & 0x8000;
	uint32_t a = u & 0x7fffffff;
	uint32_t norm, sub, big, r;

	/* Normal result: rebias and add 0xfff plus the lowest kept bit, which
	 * rounds to nearest even; a carry out of the mantissa bumps the
	 * exponent, up to Inf for [65520, 65536). */
	norm = (a - (112u << 23) + 0xfff + ((a >> 13) & 1)) >> 13;
	/* Subnormal or zero result (|f| < 2^-14): adding 0.5 makes the float32
	 * ulp 2^-24, the float16 subnormal step, so the FPU's own round to
	 * nearest even does the work. */
	sub = f32_bits(bits_f32(a) + 0.5f) - 0x3f000000;
	big = 0x7c00 | (mask_if(a > 0x7f800000) & (0x200 | ((a >> 13) & 0x3ff)));
	r = select_u32(mask_if(a < 0x38800000), sub, norm);
	r = select_u32(mask_if(a >= 0x47800000), big, r);
	return (uint16_t)(r | sign);
}

static inline float bf16_to_f32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}

/* float32 -> bfloat16, round to nearest even (overflow carries into Inf);
 * NaN is truncated with the quiet bit set, so it can never become Inf. */
static inline uint16_t f32_to_bf16(float f)
{
	uint32_t u = f32_bits(f);
	uint32_t r = (u + 0x7fff + ((u >> 16) & 1)) >> 16;

	r = select_u32(mask_if((u & 0x7fffffff) > 0x7f800000), (u >> 16) | 0x40, r);
	return (uint16_t)r;
}

#define DEF_HALF_IO(fmt)                                                                 \
	static void fmt##_load(float *restrict d, const uint16_t *restrict s, size_t n)  \
	{                                                                                \
		for (size_t i = 0; i < n; i++)                                           \
			d[i] = fmt##_to_f32(s[i]);                                       \
	}                                                                                \
	static void fmt##_store(uint16_t *restrict d, const float *restrict s, size_t n) \
	{                                                                                \
		for (size_t i = 0; i < n; i++)                                           \
			d[i] = f32_to_##fmt(s[i]);                                       \
	}

DEF_HALF_IO(f16)
DEF_HALF_IO(bf16)

struct half_fmt {
	void (*load)(float *restrict d, const uint16_t *restrict s, size_t n);
	void (*store)(uint16_t *restrict d, const float *restrict s, size_t n);
};

static const struct half_fmt half_fmts[2] = {
	{ .load = f16_load, .store = f16_store },
	{ .load = bf16_load, .store = bf16_store },
};

static const struct half_fmt *half_fmt_of(mlrt_dtype t)
{
	return &half_fmts[t == MLRT_BF16];
}

/* Each block is read completely before it is written, so o may equal a
 * or b here without special cases. */
static void half_reduce(uint16_t *o, const uint16_t *a, const uint16_t *b, size_t n,
                        const struct half_fmt *fmt, f32_inplace_fn fn)
{
	float fa[HALF_BLOCK], fb[HALF_BLOCK];

	for (size_t i = 0; i < n; i += HALF_BLOCK) {
		size_t m = n - i < HALF_BLOCK ? n - i : HALF_BLOCK;

		fmt->load(fa, a + i, m);
		fmt->load(fb, b + i, m);
		fn(fa, fb, m);
		fmt->store(o + i, fa, m);
	}
}

static int valid(mlrt_dtype t, mlrt_op op)
{
	return (unsigned)t < MLRT_DTYPE_COUNT && (unsigned)op < MLRT_OP_COUNT;
}

int mlrti_reduce3(void *out, const void *a, const void *b, size_t count, mlrt_dtype t,
                  mlrt_op op)
{
	if (!valid(t, op))
		return MLRT_ERR_INVALID;
	if (count == 0)
		return MLRT_OK;
	if (out == NULL || a == NULL || b == NULL)
		return MLRT_ERR_INVALID;
	if (t == MLRT_F16 || t == MLRT_BF16)
		half_reduce(out, a, b, count, half_fmt_of(t), f32_inplace[op]);
	else
		kernels[t][op](out, a, b, count);
	return MLRT_OK;
}

int mlrti_reduce(void *inout, const void *in, size_t count, mlrt_dtype t, mlrt_op op)
{
	return mlrti_reduce3(inout, inout, in, count, t, op);
}

/* x[i] /= d, computed in DT: C division truncates integers toward zero. */
#define DEF_DIV(name, T, DT)                                                             \
	static void name(T *x, size_t n, int d)                                          \
	{                                                                                \
		DT dd = (DT)d;                                                           \
		for (size_t i = 0; i < n; i++)                                           \
			x[i] = (T)(x[i] / dd);                                           \
	}

DEF_DIV(f32_div, float, float)
DEF_DIV(f64_div, double, double)
DEF_DIV(i32_div, int32_t, int32_t)
DEF_DIV(i64_div, int64_t, int64_t)
DEF_DIV(u8_div, uint8_t, uint32_t)

static void half_div(uint16_t *x, size_t n, int d, const struct half_fmt *fmt)
{
	float f[HALF_BLOCK];

	for (size_t i = 0; i < n; i += HALF_BLOCK) {
		size_t m = n - i < HALF_BLOCK ? n - i : HALF_BLOCK;

		fmt->load(f, x + i, m);
		f32_div(f, m, d);
		fmt->store(x + i, f, m);
	}
}

int mlrti_reduce_finish(void *buf, size_t count, mlrt_dtype t, mlrt_op op, int n)
{
	if (!valid(t, op) || n <= 0)
		return MLRT_ERR_INVALID;
	if (op != MLRT_AVG || count == 0)
		return MLRT_OK;
	if (buf == NULL)
		return MLRT_ERR_INVALID;
	switch (t) {
	case MLRT_F32: f32_div(buf, count, n); break;
	case MLRT_F64: f64_div(buf, count, n); break;
	case MLRT_F16:
	case MLRT_BF16: half_div(buf, count, n, half_fmt_of(t)); break;
	case MLRT_I32: i32_div(buf, count, n); break;
	case MLRT_I64: i64_div(buf, count, n); break;
	case MLRT_U8: u8_div(buf, count, n); break;
	case MLRT_DTYPE_COUNT: return MLRT_ERR_INVALID;
	}
	return MLRT_OK;
}

float mlrti_f16_to_f32(uint16_t h)
{
	return f16_to_f32(h);
}

uint16_t mlrti_f32_to_f16(float f)
{
	return f32_to_f16(f);
}

float mlrti_bf16_to_f32(uint16_t h)
{
	return bf16_to_f32(h);
}

uint16_t mlrti_f32_to_bf16(float f)
{
	return f32_to_bf16(f);
}
