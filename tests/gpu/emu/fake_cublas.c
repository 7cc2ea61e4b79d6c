/* cuBLAS's calls of examples/mlp_gpu over "device" memory (emu.h says
 * whose: fake_cuda.c's for the unit test, tests/gpu/fake's for the whole
 * program), with cuBLAS's argument checks. */
#include <stdio.h>
#include <stdlib.h>

#include "cublas_v2.h"
#include "emu.h"

long emu_gemms;

/* emu.h */
void emu_need(const void *p, size_t bytes, int dev, const char *what)
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
	emu_need(alpha, 0, 0, "cublasSgemm alpha");
	emu_need(beta, 0, 0, "cublasSgemm beta");
	if (m == 0 || n == 0)
		return CUBLAS_STATUS_SUCCESS;
	if (k > 0) {
		emu_need(A, ((size_t)(acols - 1) * lda + arows) * sizeof(float), 1, "cublasSgemm A");
		emu_need(B, ((size_t)(bcols - 1) * ldb + brows) * sizeof(float), 1, "cublasSgemm B");
	}
	emu_need(C, ((size_t)(n - 1) * ldc + m) * sizeof(float), 1, "cublasSgemm C");
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
