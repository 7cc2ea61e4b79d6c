/* The CUDA runtime and cuBLAS calls of examples/mlp_gpu over host memory
 * (include/cuda_runtime_api.h, include/cublas_v2.h, emu.h).  Every
 * pointer is checked against the register of device blocks: a host
 * pointer where a device one belongs, or a range past a block's end,
 * aborts with a message, since real CUDA would corrupt memory or fault
 * later instead. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cublas_v2.h"
#include "emu.h"

struct block {
	char *p;
	size_t bytes;
	struct block *next;
};

static struct block *blocks; /* live device allocations */
static cudaError_t last_error = cudaSuccess;
long emu_launches, emu_gemms;

int emu_device_range(const void *p, size_t *avail)
{
	const char *c = p;

	for (struct block *b = blocks; b != NULL; b = b->next)
		if (c >= b->p && c < b->p + (b->bytes > 0 ? b->bytes : 1)) {
			if (avail != NULL)
				*avail = (size_t)(b->p + b->bytes - c);
			return 1;
		}
	return 0;
}

int emu_live_blocks(void)
{
	int n = 0;

	for (struct block *b = blocks; b != NULL; b = b->next)
		n++;
	return n;
}

void emu_violation(const char *what, const char *why)
{
	fprintf(stderr, "emu: %s: %s\n", what, why);
	abort();
}

void emu_launch_failed(cudaError_t e)
{
	last_error = e;
}

/* p must be device memory with bytes left in its block (dev), or must not
 * be device memory (!dev). */
static void need(const void *p, size_t bytes, int dev, const char *what)
{
	size_t avail = 0;
	int is_dev = emu_device_range(p, &avail);

	if (dev && !is_dev)
		emu_violation(what, "not device memory");
	if (!dev && is_dev)
		emu_violation(what, "device memory where host memory belongs");
	if (dev && bytes > avail)
		emu_violation(what, "range runs past the end of its device allocation");
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
	struct block *b = malloc(sizeof(*b));

	if (b == NULL || (b->p = malloc(bytes > 0 ? bytes : 1)) == NULL) {
		free(b);
		return cudaErrorMemoryAllocation;
	}
	memset(b->p, 0xA5, bytes); /* device memory is not zeroed */
	b->bytes = bytes;
	b->next = blocks;
	blocks = b;
	*p = b->p;
	return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
	if (p == NULL)
		return cudaSuccess;
	for (struct block **b = &blocks; *b != NULL; b = &(*b)->next)
		if ((*b)->p == p) {
			struct block *dead = *b;

			*b = dead->next;
			free(dead->p);
			free(dead);
			return cudaSuccess;
		}
	emu_violation("cudaFree", "not the start of a device allocation");
	return cudaErrorInvalidDevicePointer;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind)
{
	switch (kind) {
	case cudaMemcpyHostToDevice:
		need(dst, bytes, 1, "cudaMemcpy HostToDevice destination");
		need(src, 0, 0, "cudaMemcpy HostToDevice source");
		break;
	case cudaMemcpyDeviceToHost:
		need(dst, 0, 0, "cudaMemcpy DeviceToHost destination");
		need(src, bytes, 1, "cudaMemcpy DeviceToHost source");
		break;
	case cudaMemcpyDeviceToDevice:
		need(dst, bytes, 1, "cudaMemcpy DeviceToDevice destination");
		need(src, bytes, 1, "cudaMemcpy DeviceToDevice source");
		break;
	default:
		emu_violation("cudaMemcpy", "kind not emulated");
	}
	memcpy(dst, src, bytes);
	return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int value, size_t bytes)
{
	need(p, bytes, 1, "cudaMemset");
	memset(p, value, bytes);
	return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t stream)
{
	(void)stream;
	return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
	cudaError_t e = last_error;

	last_error = cudaSuccess;
	return e;
}

const char *cudaGetErrorString(cudaError_t e)
{
	return e == cudaSuccess ? "no error" : "emulated error";
}

const char *cudaGetErrorName(cudaError_t e)
{
	return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated";
}

struct cublasContext {
	int unused;
};

cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
	*handle = calloc(1, sizeof(**handle));
	return *handle != NULL ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
	if (handle == NULL)
		return CUBLAS_STATUS_NOT_INITIALIZED;
	free(handle);
	return CUBLAS_STATUS_SUCCESS;
}

static int max1(int a)
{
	return a > 1 ? a : 1;
}

/* Column-major: element (i, j) of a matrix with leading dimension ld is
 * at i + j * ld.  op(A) is m x k, op(B) k x n, C m x n. */
cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float *alpha,
                           const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc)
{
	int ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
	int arows = ta ? k : m, acols = ta ? m : k, brows = tb ? n : k, bcols = tb ? k : n;

	emu_gemms++;
	if (handle == NULL)
		return CUBLAS_STATUS_NOT_INITIALIZED;
	/* cuBLAS's own checks: it returns INVALID_VALUE for these. */
	if (m < 0 || n < 0 || k < 0 || lda < max1(arows) || ldb < max1(brows) || ldc < max1(m)) {
		fprintf(stderr, "emu: cublasSgemm(m=%d n=%d k=%d lda=%d ldb=%d ldc=%d): "
		        "invalid value\n", m, n, k, lda, ldb, ldc);
		return CUBLAS_STATUS_INVALID_VALUE;
	}
	need(alpha, 0, 0, "cublasSgemm alpha");
	need(beta, 0, 0, "cublasSgemm beta");
	if (m == 0 || n == 0)
		return CUBLAS_STATUS_SUCCESS;
	if (k > 0) {
		need(A, ((size_t)(acols - 1) * lda + arows) * sizeof(float), 1, "cublasSgemm A");
		need(B, ((size_t)(bcols - 1) * ldb + brows) * sizeof(float), 1, "cublasSgemm B");
	}
	need(C, ((size_t)(n - 1) * ldc + m) * sizeof(float), 1, "cublasSgemm C");
	for (int j = 0; j < n; j++)
		for (int i = 0; i < m; i++) {
			float s = 0.0f, *c = C + i + (size_t)j * ldc;

			for (int l = 0; l < k; l++)
				s += (ta ? A[l + (size_t)i * lda] : A[i + (size_t)l * lda]) *
				     (tb ? B[j + (size_t)l * ldb] : B[l + (size_t)j * ldb]);
			/* With beta = 0, C is not read: it may hold NaNs. */
			*c = *beta == 0.0f ? *alpha * s : *alpha * s + *beta * *c;
		}
	return CUBLAS_STATUS_SUCCESS;
}
