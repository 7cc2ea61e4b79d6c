/* The GPU MLP's element-wise and per-row kernels (kernels.h).  The
 * arithmetic follows examples/mlp/model.c, in float32. */
#include "kernels.h"

#define THREADS 256

/* Blocks for count items, at most 65535: every kernel loops over the grid
 * (grid-stride), so a capped grid still covers all of them. */
static unsigned int blocks(size_t count)
{
	size_t b = (count + THREADS - 1) / THREADS;

	return (unsigned int)(b > 65535 ? 65535 : (b > 0 ? b : 1));
}

__global__ void gather_k(const float *data, const int *idx, int n, int cols, float *x)
{
	size_t total = (size_t)n * cols;

	for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
	     t += (size_t)gridDim.x * blockDim.x) {
		size_t r = t / cols, k = t % cols;

		x[t] = data[(size_t)idx[r] * cols + k];
	}
}

__global__ void bias_relu_k(float *h, const float *b, int n, int cols)
{
	size_t total = (size_t)n * cols;

	for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
	     t += (size_t)gridDim.x * blockDim.x) {
		float s = h[t] + b[t % cols];

		h[t] = s > 0.0f ? s : 0.0f;
	}
}

/* A thread per row (grid-stride): out is small (10 classes). */
__global__ void softmax_xent_k(float *z, const float *b, const uint8_t *y, const int *idx, int n,
                               int out, float inv_n, int grad, double *row_loss, int *row_ok)
{
	for (size_t r = blockIdx.x * (size_t)blockDim.x + threadIdx.x; r < (size_t)n;
	     r += (size_t)gridDim.x * blockDim.x) {
		float *zr = z + r * out;
		int label = y[idx[r]], best = 0;
		float zmax, sum = 0.0f;

		for (int c = 0; c < out; c++) {
			zr[c] += b[c];
			if (zr[c] > zr[best])
				best = c;
		}
		zmax = zr[best];
		for (int c = 0; c < out; c++)
			sum += expf(zr[c] - zmax);
		/* -log softmax(z)_y = log(sum) - (z_y - zmax): no log(0). */
		row_loss[r] = (double)logf(sum) - (double)(zr[label] - zmax);
		row_ok[r] = best == label;
		if (grad)
			for (int c = 0; c < out; c++)
				zr[c] = (expf(zr[c] - zmax) / sum - (c == label ? 1.0f : 0.0f)) * inv_n;
	}
}

/* A thread per column (grid-stride). */
__global__ void col_sum_k(const float *a, int n, int cols, float *out)
{
	for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < (size_t)cols;
	     j += (size_t)gridDim.x * blockDim.x) {
		float s = 0.0f;

		for (int r = 0; r < n; r++)
			s += a[(size_t)r * cols + j];
		out[j] = s;
	}
}

__global__ void relu_back_k(float *dh, const float *h, size_t count)
{
	for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < count;
	     t += (size_t)gridDim.x * blockDim.x)
		if (h[t] <= 0.0f)
			dh[t] = 0.0f;
}

__global__ void sgd_k(float *p, float *mom, const float *g, size_t count, float lr, float mu)
{
	for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < count;
	     t += (size_t)gridDim.x * blockDim.x) {
		float m = mu * mom[t] + g[t];

		mom[t] = m;
		p[t] -= lr * m;
	}
}

extern "C" cudaError_t mlpg_gather(const float *data, const int *idx, int n, int cols, float *x)
{
	gather_k<<<blocks((size_t)n * cols), THREADS>>>(data, idx, n, cols, x);
	return cudaGetLastError();
}

extern "C" cudaError_t mlpg_bias_relu(float *h, const float *b, int n, int cols)
{
	bias_relu_k<<<blocks((size_t)n * cols), THREADS>>>(h, b, n, cols);
	return cudaGetLastError();
}

extern "C" cudaError_t mlpg_softmax_xent(float *z, const float *b, const uint8_t *y,
                                         const int *idx, int n, int out, float inv_n, int grad,
                                         double *row_loss, int *row_ok)
{
	softmax_xent_k<<<blocks((size_t)n), THREADS>>>(z, b, y, idx, n, out, inv_n, grad, row_loss,
	                                               row_ok);
	return cudaGetLastError();
}

extern "C" cudaError_t mlpg_col_sum(const float *a, int n, int cols, float *out)
{
	col_sum_k<<<blocks((size_t)cols), THREADS>>>(a, n, cols, out);
	return cudaGetLastError();
}

extern "C" cudaError_t mlpg_relu_back(float *dh, const float *h, size_t count)
{
	relu_back_k<<<blocks(count), THREADS>>>(dh, h, count);
	return cudaGetLastError();
}

extern "C" cudaError_t mlpg_sgd(float *p, float *mom, const float *g, size_t count, float lr,
                                float mu)
{
	sgd_k<<<blocks(count), THREADS>>>(p, mom, g, count, lr, mu);
	return cudaGetLastError();
}
