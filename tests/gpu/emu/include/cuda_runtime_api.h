/* A stand-in for the CUDA runtime's header, for the CPU emulation of
 * examples/mlp_gpu (tests/gpu/emu): only what model_gpu.c and kernels.cu
 * use, with the real names, values and signatures.  "Device" memory is
 * host memory that fake_cuda.c keeps a register of, so it can check every
 * pointer a call is given.  Not thread-safe: one thread. */
#ifndef EMU_CUDA_RUNTIME_API_H
#define EMU_CUDA_RUNTIME_API_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cudaError {
	cudaSuccess = 0,
	cudaErrorInvalidValue = 1,
	cudaErrorMemoryAllocation = 2,
	cudaErrorInvalidConfiguration = 9,
	cudaErrorInvalidDevicePointer = 17,
	cudaErrorNotReady = 600,
} cudaError_t;

typedef enum cudaMemcpyKind {
	cudaMemcpyHostToHost = 0,
	cudaMemcpyHostToDevice = 1,
	cudaMemcpyDeviceToHost = 2,
	cudaMemcpyDeviceToDevice = 3,
	cudaMemcpyDefault = 4,
} cudaMemcpyKind;

typedef struct CUstream_st *cudaStream_t;

cudaError_t cudaSetDevice(int device); /* mlp_gpu.c; in tests/gpu/fake only */
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind);
cudaError_t cudaMemset(void *p, int value, size_t bytes);
/* Work runs when it is queued: the stream is always idle. */
cudaError_t cudaStreamQuery(cudaStream_t stream);
/* The last failed launch's error, then cleared. */
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);

#ifdef __cplusplus
}
#endif
#endif
