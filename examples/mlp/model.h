/* A one-hidden-layer perceptron: in -> hidden (ReLU) -> out (softmax),
 * trained on cross-entropy with SGD and momentum.
 *
 * Every parameter lives in one flat float array, so that one allreduce
 * averages every gradient and one checkpoint dataset holds every weight:
 *     params = W1[hidden][in] | b1[hidden] | W2[out][hidden] | b2[out]
 * grad and momentum have the same layout.  The arithmetic is plain float32
 * loops in a fixed order, so the same inputs give the same bits on every
 * rank and every run. */
#ifndef MLP_MODEL_H
#define MLP_MODEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct mlp_model {
	int in, hidden, out;
	int max_batch; /* rows the scratch buffers hold */
	size_t nparams;
	float *params;
	float *grad;
	float *momentum;
	/* Views into params (and their gradients into grad). */
	float *w1, *b1, *w2, *b2;
	float *gw1, *gb1, *gw2, *gb2;
	/* Per-batch scratch: inputs, hidden activations, class probabilities;
	 * per-row gradients of the logits and of the hidden layer. */
	float *x, *h, *p;
	float *dz, *dh;
} mlp_model;

/* 64-bit mixing function (splitmix64's finaliser): a stateless hash, used
 * to derive every random choice of a run from the seed. */
uint64_t mlp_mix64(uint64_t x);

/* Allocate a model for batches of up to max_batch rows and initialise it
 * from seed: weights uniform in +-sqrt(6 / fan_in) (He), biases and
 * momentum zero.  MLRT_OK or MLRT_ERR_NOMEM; a failed init is safe to
 * fini. */
int mlp_model_init(mlp_model *m, int in, int hidden, int out, int max_batch, uint64_t seed);
void mlp_model_fini(mlp_model *m);

/* Forward and backward pass over the n <= max_batch rows idx[] of the
 * data x (rows of m->in floats) with labels y: grad gets the gradient of
 * the mean cross-entropy over those rows.  Returns their summed loss. */
double mlp_model_grad(mlp_model *m, const float *x, const uint8_t *y, const int *idx, int n);

/* Forward pass only: summed loss of the n <= max_batch rows idx[], and
 * *correct (added to) how many of them the model classifies right. */
double mlp_model_eval(mlp_model *m, const float *x, const uint8_t *y, const int *idx, int n,
                      int64_t *correct);

/* One step of SGD with momentum on m->grad:
 *     momentum = mu * momentum + grad;  params -= lr * momentum */
void mlp_model_step(mlp_model *m, float lr, float mu);

#endif
