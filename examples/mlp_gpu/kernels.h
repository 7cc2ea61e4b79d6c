/* The GPU MLP's own kernels (kernels.cu), launched on the legacy default
 * stream, where cuBLAS runs them too: each call only queues work.
 * Returns the launch's status (cudaGetLastError); a fault inside a kernel
 * shows at the next synchronising call.  Matrices are row-major, as in
 * examples/mlp/model.h. */
#ifndef MLP_GPU_KERNELS_H
#define MLP_GPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x[r][k] = data[idx[r]][k] for the n rows idx[] (cols floats a row). */
cudaError_t mlpg_gather(const float *data, const int *idx, int n, int cols, float *x);

/* h[r][j] = max(h[r][j] + b[j], 0) over n rows of cols. */
cudaError_t mlpg_bias_relu(float *h, const float *b, int n, int cols);

/* Per row r of the logits z[n][out] (before the bias b): softmax,
 * row_loss[r] = cross-entropy against label y[idx[r]], row_ok[r] = 1 when
 * the first largest logit is at the label.  grad: z becomes
 * (softmax - onehot) * inv_n, the gradient of the mean loss. */
cudaError_t mlpg_softmax_xent(float *z, const float *b, const uint8_t *y, const int *idx, int n,
                              int out, float inv_n, int grad, double *row_loss, int *row_ok);

/* out[j] = sum over the n rows of a[r][j] (cols columns): a bias's
 * gradient, summed in row order. */
cudaError_t mlpg_col_sum(const float *a, int n, int cols, float *out);

/* dh[i] = 0 where h[i] <= 0 (ReLU passes no gradient where it was off). */
cudaError_t mlpg_relu_back(float *dh, const float *h, size_t count);

/* SGD with momentum: mom = mu * mom + g; p -= lr * mom. */
cudaError_t mlpg_sgd(float *p, float *mom, const float *g, size_t count, float lr, float mu);

#ifdef __cplusplus
}
#endif
#endif
