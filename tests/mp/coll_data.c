/* The inputs that the collective checkers (tests/mp/coll_check.c, and
 * tests/gpu/coll/dev_check.c on device memory) feed to every dtype and op,
 * and the hash they compare across ranks. */
#include <stdint.h>

#include "runtime/reduce.h"
#include "tests/mp/coll_data.h"

/* Input element i of rank r for op: small integers (PROD: +-1, +-2). */
int64_t coll_input(int r, size_t i, mlrt_op op, int u8)
{
	uint64_t h = (uint64_t)(r + 1) * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull;

	h ^= h >> 29;
	if (op == MLRT_PROD) {
		static const int v[] = {-2, -1, 1, 2};
		return u8 ? (int64_t)(h % 3) + 1 : v[h % 4];
	}
	return u8 ? (int64_t)(h % 17) : (int64_t)(h % 17) - 8;
}

void coll_store(void *buf, size_t i, mlrt_dtype t, double v)
{
	switch (t) {
	case MLRT_F32: ((float *)buf)[i] = (float)v; break;
	case MLRT_F64: ((double *)buf)[i] = v; break;
	case MLRT_F16: ((uint16_t *)buf)[i] = mlrti_f32_to_f16((float)v); break;
	case MLRT_BF16: ((uint16_t *)buf)[i] = mlrti_f32_to_bf16((float)v); break;
	case MLRT_I32: ((int32_t *)buf)[i] = (int32_t)(int64_t)v; break;
	case MLRT_I64: ((int64_t *)buf)[i] = (int64_t)v; break;
	case MLRT_U8: ((uint8_t *)buf)[i] = (uint8_t)(int64_t)v; break;
	default: break;
	}
}

void coll_fill(void *buf, size_t count, mlrt_dtype t, mlrt_op op, int r, size_t first)
{
	for (size_t i = 0; i < count; i++)
		coll_store(buf, i, t, (double)coll_input(r, first + i, op, t == MLRT_U8));
}

uint64_t coll_fnv(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}
