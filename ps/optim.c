/* The optimizer math of a parameter server (see optim.h).
 *
 * Each optimizer is one loop over the elements of a key, in float32, with
 * the operations in the order written: the expressions are the
 * specification, and tests/unit/test_ps_optim.c checks them bit for bit
 * against an independent copy.  That only holds if the compiler does not
 * fuse a*b+c into an FMA: GCC does not in ISO C mode (meson builds with
 * -std=c11, which implies -ffp-contract=off), clang needs the pragma. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#include "ps/optim.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

size_t mlrti_optim_state_floats(mlrt_ps_optimizer opt)
{
	switch (opt) {
	case MLRT_PS_MOMENTUM:
	case MLRT_PS_ADAGRAD:
		return 1;
	case MLRT_PS_ADAM:
	case MLRT_PS_FTRL:
		return 2;
	default:
		return 0;
	}
}

/* SUM: the pushed values are added in (gradient aggregation, counters). */
static void apply_sum(float *restrict w, const float *restrict g, size_t n)
{
	for (size_t i = 0; i < n; i++)
		w[i] += g[i];
}

/* SGD: plain gradient descent. */
static void apply_sgd(float lr, float *restrict w, const float *restrict g, size_t n)
{
	for (size_t i = 0; i < n; i++)
		w[i] -= lr * g[i];
}

/* MOMENTUM: heavy-ball momentum; v is a decaying sum of the gradients. */
static void apply_momentum(float lr, float mu, float *restrict w, float *restrict v,
                           const float *restrict g, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		v[i] = mu * v[i] + g[i];
		w[i] -= lr * v[i];
	}
}

/* ADAGRAD (Duchi et al. 2011): each coordinate's step shrinks with the
 * root of its summed squared gradients h. */
static void apply_adagrad(float lr, float eps, float *restrict w, float *restrict h,
                          const float *restrict g, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h[i] += g[i] * g[i];
		w[i] -= lr * g[i] / (sqrtf(h[i]) + eps);
	}
}

/* ADAM (Kingma and Ba 2015): moving averages m of the gradient and v of
 * its square, divided by 1 - beta^step to remove their bias toward zero
 * in the first steps.  The corrections are computed in double and rounded
 * once to float (beta2^step is close to 1, so 1 - beta2^step in float
 * would keep few correct bits). */
static void apply_adam(const mlrt_ps_opts *o, float *restrict w, float *restrict m,
                       float *restrict v, const float *restrict g, size_t n, int64_t step)
{
	const float b1 = o->beta1, b2 = o->beta2, lr = o->lr, eps = o->eps;
	const float c1 = (float)(1.0 - pow(b1, (double)step));
	const float c2 = (float)(1.0 - pow(b2, (double)step));

	for (size_t i = 0; i < n; i++) {
		m[i] = b1 * m[i] + (1.0f - b1) * g[i];
		v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
		float mhat = m[i] / c1;
		float vhat = v[i] / c2;
		w[i] -= lr * mhat / (sqrtf(vhat) + eps);
	}
}

/* FTRL-proximal (McMahan et al., "Ad Click Prediction: a View from the
 * Trenches", 2013, algorithm 1), per coordinate, alpha = lr,
 * beta = ftrl_beta, lambda1 = l1, lambda2 = l2.  The state is z and nn
 * (the paper's n, the sum of squared gradients); w is a function of them,
 * and is exactly 0 wherever |z| <= l1, which is what makes the model
 * sparse. */
static void apply_ftrl(const mlrt_ps_opts *o, float *restrict w, float *restrict z,
                       float *restrict nn, const float *restrict g, size_t n)
{
	const float alpha = o->lr, beta = o->ftrl_beta, l1 = o->l1, l2 = o->l2;

	for (size_t i = 0; i < n; i++) {
		float sigma = (sqrtf(nn[i] + g[i] * g[i]) - sqrtf(nn[i])) / alpha;
		z[i] += g[i] - sigma * w[i];
		nn[i] += g[i] * g[i];
		w[i] = fabsf(z[i]) <= l1 ? 0.0f
		                         : -(z[i] - copysignf(l1, z[i])) /
		                                   ((beta + sqrtf(nn[i])) / alpha + l2);
	}
}

void mlrti_optim_apply(const mlrt_ps_opts *o, float *w, float *state, const float *g, size_t n,
                       int64_t *t)
{
	switch (o->optimizer) {
	case MLRT_PS_SUM:
		apply_sum(w, g, n);
		break;
	case MLRT_PS_SGD:
		apply_sgd(o->lr, w, g, n);
		break;
	case MLRT_PS_MOMENTUM:
		apply_momentum(o->lr, o->momentum, w, state, g, n);
		break;
	case MLRT_PS_ADAGRAD:
		apply_adagrad(o->lr, o->eps, w, state, g, n);
		break;
	case MLRT_PS_ADAM:
		apply_adam(o, w, state, state + n, g, n, *t + 1);
		break;
	case MLRT_PS_FTRL:
		apply_ftrl(o, w, state, state + n, g, n);
		break;
	}
	++*t;
}

/* splitmix64's output function: a bijection of 64-bit words whose every
 * output bit depends on every input bit. */
static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15u;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
	return x ^ (x >> 31);
}

/* [0, 1) and (0, 1] from the top 53 bits of h. */
static double unit_co(uint64_t h)
{
	return (double)(h >> 11) * 0x1p-53;
}

static double unit_oc(uint64_t h)
{
	return (double)((h >> 11) + 1) * 0x1p-53;
}

void mlrti_optim_init(const mlrt_ps_opts *o, uint64_t key, float *w, size_t n)
{
	const float a = o->init_a, b = o->init_b;
	/* A hash of (seed, key, i) rather than a generator stream, so that an
	 * element's value does not depend on which elements were drawn first. */
	const uint64_t hk = mix64(mix64(o->seed) ^ key);
	mlrt_ps_init_kind kind = o->optimizer == MLRT_PS_FTRL ? MLRT_PS_ZEROS : o->init;

	if (kind != MLRT_PS_UNIFORM && kind != MLRT_PS_NORMAL) {
		for (size_t i = 0; i < n; i++)
			w[i] = kind == MLRT_PS_CONSTANT ? a : 0.0f;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t h = mix64(hk ^ (uint64_t)i);

		switch (kind) {
		case MLRT_PS_UNIFORM:
			/* In double, so that b - a cannot overflow; rounding to
			 * float may reach b, which the range excludes. */
			w[i] = (float)(a + ((double)b - a) * unit_co(h));
			if (w[i] >= b)
				w[i] = nextafterf(b, a);
			break;
		case MLRT_PS_NORMAL: {
			/* Box-Muller, keeping the cosine half; u1 > 0 for log. */
			double u1 = unit_oc(h), u2 = unit_co(mix64(h));
			double s = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);

			w[i] = (float)(a + b * s);
			break;
		}
		default:
			w[i] = 0.0f;
			break;
		}
	}
}

static const char *const optimizer_names[] = {
	[MLRT_PS_SUM] = "SUM",         [MLRT_PS_SGD] = "SGD",   [MLRT_PS_MOMENTUM] = "MOMENTUM",
	[MLRT_PS_ADAGRAD] = "ADAGRAD", [MLRT_PS_ADAM] = "ADAM", [MLRT_PS_FTRL] = "FTRL",
};

/* Write the message and give MLRT_ERR_INVALID. */
static int bad(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why && whylen > 0) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return MLRT_ERR_INVALID;
}

int mlrti_optim_check(const mlrt_ps_opts *o, char *why, size_t whylen)
{
	/* Unsigned casts: an enum may be signed or unsigned, and -1 must fail. */
	if ((unsigned)o->optimizer > (unsigned)MLRT_PS_FTRL)
		return bad(why, whylen, "ps: unknown optimizer %d", (int)o->optimizer);
	if ((unsigned)o->consistency > (unsigned)MLRT_PS_BOUNDED)
		return bad(why, whylen, "ps: unknown consistency %d", (int)o->consistency);
	if ((unsigned)o->init > (unsigned)MLRT_PS_NORMAL)
		return bad(why, whylen, "ps: unknown init %d", (int)o->init);

	/* Written as !(good) so that NaN fails too. */
	const char *opt = optimizer_names[o->optimizer];
	mlrt_ps_optimizer k = o->optimizer;

	if (k != MLRT_PS_SUM && !(o->lr > 0 && isfinite(o->lr)))
		return bad(why, whylen, "ps: lr must be finite and > 0 for %s, got %g", opt, o->lr);
	if (k == MLRT_PS_MOMENTUM && !(o->momentum >= 0 && o->momentum < 1))
		return bad(why, whylen, "ps: momentum must be in [0, 1), got %g", o->momentum);
	if (k == MLRT_PS_ADAM && !(o->beta1 >= 0 && o->beta1 < 1))
		return bad(why, whylen, "ps: beta1 must be in [0, 1) for ADAM, got %g", o->beta1);
	if (k == MLRT_PS_ADAM && !(o->beta2 >= 0 && o->beta2 < 1))
		return bad(why, whylen, "ps: beta2 must be in [0, 1) for ADAM, got %g", o->beta2);
	if ((k == MLRT_PS_ADAGRAD || k == MLRT_PS_ADAM) && !(o->eps > 0 && isfinite(o->eps)))
		return bad(why, whylen, "ps: eps must be finite and > 0 for %s, got %g", opt, o->eps);
	if (k == MLRT_PS_FTRL && !(o->l1 >= 0 && isfinite(o->l1)))
		return bad(why, whylen, "ps: l1 must be finite and >= 0 for FTRL, got %g", o->l1);
	if (k == MLRT_PS_FTRL && !(o->l2 >= 0 && isfinite(o->l2)))
		return bad(why, whylen, "ps: l2 must be finite and >= 0 for FTRL, got %g", o->l2);
	if (k == MLRT_PS_FTRL && !(o->ftrl_beta >= 0 && isfinite(o->ftrl_beta)))
		return bad(why, whylen, "ps: ftrl_beta must be finite and >= 0 for FTRL, got %g",
		           o->ftrl_beta);

	if (o->consistency == MLRT_PS_BOUNDED && o->staleness < 0)
		return bad(why, whylen, "ps: staleness must be >= 0 for BOUNDED, got %d",
		           o->staleness);

	if (o->init == MLRT_PS_UNIFORM && !(isfinite(o->init_a) && isfinite(o->init_b)))
		return bad(why, whylen, "ps: init_a and init_b must be finite for UNIFORM, got %g, %g",
		           o->init_a, o->init_b);
	if (o->init == MLRT_PS_UNIFORM && !(o->init_b > o->init_a))
		return bad(why, whylen, "ps: init_b must be > init_a for UNIFORM, got [%g, %g)",
		           o->init_a, o->init_b);
	if (o->init == MLRT_PS_NORMAL && !isfinite(o->init_a))
		return bad(why, whylen, "ps: init_a (mean) must be finite for NORMAL, got %g",
		           o->init_a);
	if (o->init == MLRT_PS_NORMAL && !(o->init_b >= 0 && isfinite(o->init_b)))
		return bad(why, whylen, "ps: init_b (sd) must be finite and >= 0 for NORMAL, got %g",
		           o->init_b);
	return MLRT_OK;
}
