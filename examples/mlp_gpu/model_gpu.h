/* The MLP of examples/mlp/model.h with its state and its math on a GPU:
 * cuBLAS (cublasSgemm) for the matrix products, kernels.cu for the rest.
 * Same layout (params = W1[hidden][in] | b1 | W2[out][hidden] | b2, in one
 * flat device array, and grad and momentum alike), same initial weights
 * (mlp_model_init's), same loss and update.
 *
 * Everything runs on the current device's legacy default stream; calls
 * return once their work is queued, except mlpg_eval and mlpg_sync,
 * which wait for it (bounded: MLRT_ERR_TIMEOUT after MLPG_WAIT_MS).
 * Errors are MLRT_ERR_NOMEM (device memory), MLRT_ERR_UNAVAILABLE (a CUDA
 * or cuBLAS failure), with a message on stderr naming the call.
 *
 * Threads: one thread per model. */
#ifndef MLP_GPU_MODEL_GPU_H
#define MLP_GPU_MODEL_GPU_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>

#define MLPG_WAIT_MS 120000

typedef struct mlpg_model {
	int in, hidden, out;
	int max_rows; /* rows the scratch buffers hold */
	size_t nparams;
	cublasHandle_t blas;
	/* Device memory. */
	float *params, *grad, *momentum;
	float *w1, *b1, *w2, *b2;     /* views into params */
	float *gw1, *gb1, *gw2, *gb2; /* views into grad */
	float *data_x;                /* the whole data set, rows of in */
	uint8_t *data_y;
	int *idx;                     /* [max_rows] rows of this batch */
	float *x, *h, *z, *dh;        /* [max_rows] x in, hidden, out, hidden */
	double *row_loss;             /* [max_rows] */
	int *row_ok;                  /* [max_rows] */
	/* Host copies of row_loss and row_ok for mlpg_eval. */
	double *h_loss;
	int *h_ok;
} mlpg_model;

/* Put the model on the current device: parameters from init_params
 * (nparams floats on the host), momentum zero, and the ndata rows of x
 * and y (the data set) copied to the device once.  A failed init is safe
 * to fini. */
int mlpg_init(mlpg_model *m, int in, int hidden, int out, int max_rows,
              const float *init_params, const float *x, const uint8_t *y, int ndata);
void mlpg_fini(mlpg_model *m);

/* Queue the forward and backward pass over the n <= max_rows rows idx[]
 * (host array): grad gets the gradient of the mean cross-entropy. */
int mlpg_grad(mlpg_model *m, const int *idx, int n);

/* Forward pass over rows idx[0..n), n <= max_rows; waits: *loss gets the
 * summed loss, *correct (added to) the rows classified right. */
int mlpg_eval(mlpg_model *m, const int *idx, int n, double *loss, int64_t *correct);

/* Queue one SGD step with momentum on grad (model.h's mlp_model_step). */
int mlpg_step(mlpg_model *m, float lr, float mu);

/* Wait for the queued work (before handing grad to the host side of a
 * collective, say). */
int mlpg_sync(mlpg_model *m, const char *what);

/* Copy the parameters to host memory (nparams floats); waits. */
int mlpg_params_to_host(mlpg_model *m, float *out);

#endif
