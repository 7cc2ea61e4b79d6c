/* Element types and reduction operators shared by collectives,
 * checkpoints and the parameter server. */
#ifndef MLRT_TYPES_H
#define MLRT_TYPES_H

#include <stddef.h>

#include <mlrt/status.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mlrt_dtype {
	MLRT_F32 = 0,
	MLRT_F64 = 1,
	MLRT_F16 = 2,  /* IEEE 754 binary16, reduced through float32 */
	MLRT_BF16 = 3, /* bfloat16, reduced through float32 */
	MLRT_I32 = 4,
	MLRT_I64 = 5,
	MLRT_U8 = 6,
	MLRT_DTYPE_COUNT
} mlrt_dtype;

typedef enum mlrt_op {
	MLRT_SUM = 0,
	MLRT_AVG = 1, /* sum, then divide by the number of contributors */
	MLRT_MIN = 2,
	MLRT_MAX = 3,
	MLRT_PROD = 4,
	MLRT_OP_COUNT
} mlrt_op;

/* Size in bytes of one element of t; 0 for an invalid t. */
MLRT_API size_t mlrt_dtype_size(mlrt_dtype t);

/* Lower-case name ("f32", "bf16", ...); "invalid" for an invalid t. */
MLRT_API const char *mlrt_dtype_name(mlrt_dtype t);

/* Lower-case name ("sum", "avg", ...); "invalid" for an invalid op. */
MLRT_API const char *mlrt_op_name(mlrt_op op);

#ifdef __cplusplus
}
#endif
#endif
