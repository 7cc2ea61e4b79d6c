/* Reduction kernels used by the collectives.  Not installed.
 *
 * All kernels are element-wise over count elements of type t; they never
 * allocate and are safe to call from any thread.  float16 and bfloat16 are
 * widened to float32, reduced, and rounded back (round to nearest even). */
#ifndef MLRT_RUNTIME_REDUCE_H
#define MLRT_RUNTIME_REDUCE_H

#include <stddef.h>
#include <stdint.h>

#include <mlrt/types.h>

/* inout[i] = op(inout[i], in[i]).  MLRT_AVG accumulates a sum here; call
 * mlrti_reduce_finish afterwards.  inout and in may be the same buffer but
 * must not otherwise overlap.  MLRT_ERR_INVALID for a bad t or op. */
int mlrti_reduce(void *inout, const void *in, size_t count, mlrt_dtype t, mlrt_op op);

/* out[i] = op(a[i], b[i]) (out may equal a or b). */
int mlrti_reduce3(void *out, const void *a, const void *b, size_t count, mlrt_dtype t,
                  mlrt_op op);

/* Finish a reduction over n contributors: for MLRT_AVG divide every element
 * by n (integers truncate toward zero); nothing for other ops. */
int mlrti_reduce_finish(void *buf, size_t count, mlrt_dtype t, mlrt_op op, int n);

/* Conversions between the 16-bit float formats and float32. */
float mlrti_f16_to_f32(uint16_t h);
uint16_t mlrti_f32_to_f16(float f);
float mlrti_bf16_to_f32(uint16_t h);
uint16_t mlrti_f32_to_bf16(float f);

#endif
