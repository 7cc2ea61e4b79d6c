/* Element types and reduction operators: sizes and names. */
#include <mlrt/types.h>

size_t mlrt_dtype_size(mlrt_dtype t)
{
	switch (t) {
	case MLRT_F32: return 4;
	case MLRT_F64: return 8;
	case MLRT_F16: return 2;
	case MLRT_BF16: return 2;
	case MLRT_I32: return 4;
	case MLRT_I64: return 8;
	case MLRT_U8: return 1;
	case MLRT_DTYPE_COUNT: break;
	}
	return 0;
}

const char *mlrt_dtype_name(mlrt_dtype t)
{
	switch (t) {
	case MLRT_F32: return "f32";
	case MLRT_F64: return "f64";
	case MLRT_F16: return "f16";
	case MLRT_BF16: return "bf16";
	case MLRT_I32: return "i32";
	case MLRT_I64: return "i64";
	case MLRT_U8: return "u8";
	case MLRT_DTYPE_COUNT: break;
	}
	return "invalid";
}

const char *mlrt_op_name(mlrt_op op)
{
	switch (op) {
	case MLRT_SUM: return "sum";
	case MLRT_AVG: return "avg";
	case MLRT_MIN: return "min";
	case MLRT_MAX: return "max";
	case MLRT_PROD: return "prod";
	case MLRT_OP_COUNT: break;
	}
	return "invalid";
}
