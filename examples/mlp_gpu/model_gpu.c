/* The MLP on a GPU (model_gpu.h).
 *
 * cuBLAS is column-major; our matrices are row-major, and a row-major
 * A[r][c] is the column-major A^T (c x r, leading dimension c).  With a
 * batch of n rows:
 *     H = X W1^T      as  H^T  (hid x n) = op(W1^T, T) . X^T             (k = in)
 *     Z = H W2^T      as  Z^T  (out x n) = op(W2^T, T) . H^T             (k = hid)
 *     gW2 = dZ^T H    as  gW2^T (hid x out) = H^T . op(dZ^T, T)          (k = n)
 *     dH = dZ W2      as  dH^T (hid x n) = W2^T . dZ^T                   (k = out)
 *     gW1 = dH^T X    as  gW1^T (in x hid) = X^T . op(dH^T, T)           (k = n)
 * where each "^T" on the right is simply our row-major buffer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include <mlrt/status.h>

#include "kernels.h"
#include "model_gpu.h"

static int cuda_check(cudaError_t e, const char *call)
{
	if (e == cudaSuccess)
		return MLRT_OK;
	fprintf(stderr, "mlp_gpu: %s failed: %s (%s)%s\n", call, cudaGetErrorString(e),
	        cudaGetErrorName(e),
	        e == cudaErrorMemoryAllocation ? "; is the GPU's memory taken by another process?"
	                                       : "");
	return e == cudaErrorMemoryAllocation ? MLRT_ERR_NOMEM : MLRT_ERR_UNAVAILABLE;
}

static int blas_check(cublasStatus_t s, const char *call)
{
	if (s == CUBLAS_STATUS_SUCCESS)
		return MLRT_OK;
	fprintf(stderr, "mlp_gpu: %s failed: cuBLAS status %d%s\n", call, (int)s,
	        s == CUBLAS_STATUS_ALLOC_FAILED ? " (out of device memory)" :
	        s == CUBLAS_STATUS_NOT_INITIALIZED ? " (no usable GPU or driver)" : "");
	return s == CUBLAS_STATUS_ALLOC_FAILED ? MLRT_ERR_NOMEM : MLRT_ERR_UNAVAILABLE;
}

#define CU(call)                                                                                 \
	do {                                                                                     \
		int cu_rc_ = cuda_check((call), #call);                                          \
		if (cu_rc_ != MLRT_OK)                                                           \
			return cu_rc_;                                                           \
	} while (0)

#define BLAS(call)                                                                               \
	do {                                                                                     \
		int blas_rc_ = blas_check((call), #call);                                        \
		if (blas_rc_ != MLRT_OK)                                                         \
			return blas_rc_;                                                         \
	} while (0)

int mlpg_init(mlpg_model *m, int in, int hidden, int out, int max_rows,
              const float *init_params, const float *x, const uint8_t *y, int ndata)
{
	size_t nw1 = (size_t)hidden * in, nw2 = (size_t)out * hidden, pbytes;
	size_t rows = (size_t)max_rows;

	memset(m, 0, sizeof(*m));
	m->in = in;
	m->hidden = hidden;
	m->out = out;
	m->max_rows = max_rows;
	m->nparams = nw1 + (size_t)hidden + nw2 + (size_t)out;
	pbytes = m->nparams * sizeof(float);
	BLAS(cublasCreate(&m->blas));
	CU(cudaMalloc((void **)&m->params, pbytes));
	CU(cudaMalloc((void **)&m->grad, pbytes));
	CU(cudaMalloc((void **)&m->momentum, pbytes));
	CU(cudaMalloc((void **)&m->data_x, (size_t)ndata * in * sizeof(float)));
	CU(cudaMalloc((void **)&m->data_y, (size_t)ndata));
	CU(cudaMalloc((void **)&m->idx, rows * sizeof(int)));
	CU(cudaMalloc((void **)&m->x, rows * in * sizeof(float)));
	CU(cudaMalloc((void **)&m->h, rows * hidden * sizeof(float)));
	CU(cudaMalloc((void **)&m->z, rows * out * sizeof(float)));
	CU(cudaMalloc((void **)&m->dh, rows * hidden * sizeof(float)));
	CU(cudaMalloc((void **)&m->row_loss, rows * sizeof(double)));
	CU(cudaMalloc((void **)&m->row_ok, rows * sizeof(int)));
	m->h_loss = calloc(rows, sizeof(double));
	m->h_ok = calloc(rows, sizeof(int));
	if (m->h_loss == NULL || m->h_ok == NULL)
		return MLRT_ERR_NOMEM;
	m->w1 = m->params;
	m->b1 = m->w1 + nw1;
	m->w2 = m->b1 + hidden;
	m->b2 = m->w2 + nw2;
	m->gw1 = m->grad;
	m->gb1 = m->gw1 + nw1;
	m->gw2 = m->gb1 + hidden;
	m->gb2 = m->gw2 + nw2;
	CU(cudaMemcpy(m->params, init_params, pbytes, cudaMemcpyHostToDevice));
	CU(cudaMemset(m->momentum, 0, pbytes));
	CU(cudaMemset(m->grad, 0, pbytes));
	CU(cudaMemcpy(m->data_x, x, (size_t)ndata * in * sizeof(float), cudaMemcpyHostToDevice));
	CU(cudaMemcpy(m->data_y, y, (size_t)ndata, cudaMemcpyHostToDevice));
	return MLRT_OK;
}

void mlpg_fini(mlpg_model *m)
{
	void *dev[] = {m->params, m->grad, m->momentum, m->data_x, m->data_y, m->idx,
	               m->x, m->h, m->z, m->dh, m->row_loss, m->row_ok};

	for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++)
		if (dev[i] != NULL)
			cudaFree(dev[i]);
	if (m->blas != NULL)
		cublasDestroy(m->blas);
	free(m->h_loss);
	free(m->h_ok);
	memset(m, 0, sizeof(*m));
}

/* Rows idx[0..n) to the device, gathered into x; then H and Z (softmax
 * and loss per row; with grad, Z becomes dZ). */
static int forward(mlpg_model *m, const int *idx, int n, int grad)
{
	const float one = 1.0f, zero = 0.0f;

	/* Pageable source: the copy is done when the call returns, so idx
	 * may change after. */
	CU(cudaMemcpy(m->idx, idx, (size_t)n * sizeof(int), cudaMemcpyHostToDevice));
	CU(mlpg_gather(m->data_x, m->idx, n, m->in, m->x));
	BLAS(cublasSgemm(m->blas, CUBLAS_OP_T, CUBLAS_OP_N, m->hidden, n, m->in, &one, m->w1,
	                 m->in, m->x, m->in, &zero, m->h, m->hidden));
	CU(mlpg_bias_relu(m->h, m->b1, n, m->hidden));
	BLAS(cublasSgemm(m->blas, CUBLAS_OP_T, CUBLAS_OP_N, m->out, n, m->hidden, &one, m->w2,
	                 m->hidden, m->h, m->hidden, &zero, m->z, m->out));
	CU(mlpg_softmax_xent(m->z, m->b2, m->data_y, m->idx, n, m->out, 1.0f / (float)n, grad,
	                     m->row_loss, m->row_ok));
	return MLRT_OK;
}

int mlpg_grad(mlpg_model *m, const int *idx, int n)
{
	const float one = 1.0f, zero = 0.0f;
	int rc;

	if (n < 1 || n > m->max_rows)
		return MLRT_ERR_INVALID;
	rc = forward(m, idx, n, 1);
	if (rc != MLRT_OK)
		return rc;
	/* gW2 and gb2 from dZ (in z). */
	BLAS(cublasSgemm(m->blas, CUBLAS_OP_N, CUBLAS_OP_T, m->hidden, m->out, n, &one, m->h,
	                 m->hidden, m->z, m->out, &zero, m->gw2, m->hidden));
	CU(mlpg_col_sum(m->z, n, m->out, m->gb2));
	/* dH = dZ W2, zero where the ReLU was off. */
	BLAS(cublasSgemm(m->blas, CUBLAS_OP_N, CUBLAS_OP_N, m->hidden, n, m->out, &one, m->w2,
	                 m->hidden, m->z, m->out, &zero, m->dh, m->hidden));
	CU(mlpg_relu_back(m->dh, m->h, (size_t)n * m->hidden));
	/* gW1 and gb1 from dH. */
	BLAS(cublasSgemm(m->blas, CUBLAS_OP_N, CUBLAS_OP_T, m->in, m->hidden, n, &one, m->x, m->in,
	                 m->dh, m->hidden, &zero, m->gw1, m->in));
	CU(mlpg_col_sum(m->dh, n, m->hidden, m->gb1));
	return MLRT_OK;
}

int mlpg_sync(mlpg_model *m, const char *what)
{
	struct timespec t0, t, nap = {0, 20000};
	cudaError_t e;

	(void)m;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while ((e = cudaStreamQuery(0)) == cudaErrorNotReady) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >
		    MLPG_WAIT_MS) {
			fprintf(stderr, "mlp_gpu: the GPU did not finish %s within %d ms; is the "
			                "device stuck or shared with a long job?\n", what, MLPG_WAIT_MS);
			return MLRT_ERR_TIMEOUT;
		}
		nanosleep(&nap, NULL);
	}
	return cuda_check(e, what);
}

int mlpg_eval(mlpg_model *m, const int *idx, int n, double *loss, int64_t *correct)
{
	int rc;

	*loss = 0.0;
	if (n < 1 || n > m->max_rows)
		return MLRT_ERR_INVALID;
	rc = forward(m, idx, n, 0);
	if (rc == MLRT_OK)
		rc = mlpg_sync(m, "the evaluation");
	if (rc != MLRT_OK)
		return rc;
	CU(cudaMemcpy(m->h_loss, m->row_loss, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost));
	CU(cudaMemcpy(m->h_ok, m->row_ok, (size_t)n * sizeof(int), cudaMemcpyDeviceToHost));
	for (int r = 0; r < n; r++) {
		*loss += m->h_loss[r];
		*correct += m->h_ok[r];
	}
	return MLRT_OK;
}

int mlpg_step(mlpg_model *m, float lr, float mu)
{
	CU(mlpg_sgd(m->params, m->momentum, m->grad, m->nparams, lr, mu));
	return MLRT_OK;
}

int mlpg_params_to_host(mlpg_model *m, float *out)
{
	int rc = mlpg_sync(m, "the last step");

	if (rc != MLRT_OK)
		return rc;
	CU(cudaMemcpy(out, m->params, m->nparams * sizeof(float), cudaMemcpyDeviceToHost));
	return MLRT_OK;
}
