/* The MLP's forward and backward passes and its optimiser. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <mlrt/status.h>

#include "model.h"

uint64_t mlp_mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Uniform in [-a, a) from the 24 high bits of a hash: exact in float. */
static float uniform(uint64_t seed, uint64_t i, float a)
{
	uint64_t r = mlp_mix64(seed ^ mlp_mix64(i)) >> 40;

	return a * ((float)r / 8388608.0f - 1.0f);
}

int mlp_model_init(mlp_model *m, int in, int hidden, int out, int max_batch, uint64_t seed)
{
	size_t nw1 = (size_t)hidden * in, nw2 = (size_t)out * hidden;
	float a1 = sqrtf(6.0f / (float)in), a2 = sqrtf(6.0f / (float)hidden);

	memset(m, 0, sizeof(*m));
	m->in = in;
	m->hidden = hidden;
	m->out = out;
	m->max_batch = max_batch;
	m->nparams = nw1 + (size_t)hidden + nw2 + (size_t)out;
	m->params = calloc(m->nparams, sizeof(float));
	m->grad = calloc(m->nparams, sizeof(float));
	m->momentum = calloc(m->nparams, sizeof(float));
	m->x = calloc((size_t)max_batch * in, sizeof(float));
	m->h = calloc((size_t)max_batch * hidden, sizeof(float));
	m->p = calloc((size_t)max_batch * out, sizeof(float));
	m->dz = calloc((size_t)out, sizeof(float));
	m->dh = calloc((size_t)hidden, sizeof(float));
	if (m->params == NULL || m->grad == NULL || m->momentum == NULL || m->x == NULL ||
	    m->h == NULL || m->p == NULL || m->dz == NULL || m->dh == NULL)
		return MLRT_ERR_NOMEM;
	m->w1 = m->params;
	m->b1 = m->w1 + nw1;
	m->w2 = m->b1 + hidden;
	m->b2 = m->w2 + nw2;
	m->gw1 = m->grad;
	m->gb1 = m->gw1 + nw1;
	m->gw2 = m->gb1 + hidden;
	m->gb2 = m->gw2 + nw2;
	/* Each weight is a function of (seed, its index): the model does not
	 * depend on the order in which anything else draws numbers. */
	for (size_t i = 0; i < nw1; i++)
		m->w1[i] = uniform(seed, i, a1);
	for (size_t i = 0; i < nw2; i++)
		m->w2[i] = uniform(seed, nw1 + i, a2);
	return MLRT_OK;
}

void mlp_model_fini(mlp_model *m)
{
	free(m->params);
	free(m->grad);
	free(m->momentum);
	free(m->x);
	free(m->h);
	free(m->p);
	free(m->dz);
	free(m->dh);
	memset(m, 0, sizeof(*m));
}

/* Forward pass over rows idx[0..n): fills m->x, m->h (after ReLU) and
 * m->p (softmax); returns the summed cross-entropy and counts the rows
 * whose largest probability is at the label. */
static double forward(mlp_model *m, const float *x, const uint8_t *y, const int *idx, int n,
                      int64_t *correct)
{
	const int in = m->in, hid = m->hidden, out = m->out;
	double loss = 0.0;

	for (int r = 0; r < n; r++) {
		float *xr = m->x + (size_t)r * in, *hr = m->h + (size_t)r * hid;
		float *pr = m->p + (size_t)r * out, zmax, zy, sum = 0.0f;
		int best = 0, label = y[idx[r]];

		memcpy(xr, x + (size_t)idx[r] * in, (size_t)in * sizeof(float));
		for (int j = 0; j < hid; j++) {
			const float *w = m->w1 + (size_t)j * in;
			float s = m->b1[j];

			for (int k = 0; k < in; k++)
				s += w[k] * xr[k];
			hr[j] = s > 0.0f ? s : 0.0f;
		}
		for (int c = 0; c < out; c++) {
			const float *w = m->w2 + (size_t)c * hid;
			float s = m->b2[c];

			for (int j = 0; j < hid; j++)
				s += w[j] * hr[j];
			pr[c] = s;
			if (s > pr[best])
				best = c;
		}
		/* Softmax shifted by the largest logit, so expf cannot overflow. */
		zmax = pr[best];
		zy = pr[label] - zmax;
		for (int c = 0; c < out; c++) {
			pr[c] = expf(pr[c] - zmax);
			sum += pr[c];
		}
		for (int c = 0; c < out; c++)
			pr[c] /= sum;
		/* -log softmax(z)_y = log(sum) - (z_y - zmax): no log(0) even
		 * when the label's probability underflows. */
		loss += (double)logf(sum) - (double)zy;
		if (correct != NULL && best == label)
			(*correct)++;
	}
	return loss;
}

double mlp_model_grad(mlp_model *m, const float *x, const uint8_t *y, const int *idx, int n)
{
	const int in = m->in, hid = m->hidden, out = m->out;
	const float inv_n = 1.0f / (float)n;
	double loss = forward(m, x, y, idx, n, NULL);
	float *dz = m->dz, *dh = m->dh;

	memset(m->grad, 0, m->nparams * sizeof(float));
	for (int r = 0; r < n; r++) {
		const float *xr = m->x + (size_t)r * in, *hr = m->h + (size_t)r * hid;
		const float *pr = m->p + (size_t)r * out;

		/* d(loss)/dz = softmax - onehot(label), over the mean. */
		for (int c = 0; c < out; c++)
			dz[c] = (pr[c] - (c == y[idx[r]] ? 1.0f : 0.0f)) * inv_n;
		for (int j = 0; j < hid; j++)
			dh[j] = 0.0f;
		for (int c = 0; c < out; c++) {
			const float *w = m->w2 + (size_t)c * hid;
			float *gw = m->gw2 + (size_t)c * hid;

			m->gb2[c] += dz[c];
			for (int j = 0; j < hid; j++) {
				gw[j] += dz[c] * hr[j];
				dh[j] += w[j] * dz[c];
			}
		}
		for (int j = 0; j < hid; j++) {
			float *gw = m->gw1 + (size_t)j * in;

			if (hr[j] <= 0.0f)
				continue; /* ReLU passes no gradient where it was off */
			m->gb1[j] += dh[j];
			for (int k = 0; k < in; k++)
				gw[k] += dh[j] * xr[k];
		}
	}
	return loss;
}

double mlp_model_eval(mlp_model *m, const float *x, const uint8_t *y, const int *idx, int n,
                      int64_t *correct)
{
	return forward(m, x, y, idx, n, correct);
}

void mlp_model_step(mlp_model *m, float lr, float mu)
{
	for (size_t i = 0; i < m->nparams; i++) {
		m->momentum[i] = mu * m->momentum[i] + m->grad[i];
		m->params[i] -= lr * m->momentum[i];
	}
}
