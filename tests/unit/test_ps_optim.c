/* Parameter-server optimizer math (ps/optim.c): every optimizer against a
 * reference written out here element by element, bit for bit after each of
 * five pushes; a few updates whose results are exact by hand; the starting
 * values of each init kind; and the option check, one bad field at a time. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <mlrt/ps.h>

#include "ps/optim.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* as in optim.c: no fused multiply-add */
#endif

#define N 6
#define STEPS 5

/* Starting weights and five gradients; element 5 gets tiny gradients so
 * that FTRL keeps it at exactly 0. */
static const float w_start[N] = { 0.5f, -0.25f, 1.0f, 0.0f, 3.0f, -2.0f };
static const float grads[STEPS][N] = {
	{ 0.3f, -1.7f, 0.01f, 2.5f, -0.6f, 0.001f },
	{ -0.2f, -1.1f, 0.02f, 0.0f, 0.9f, -0.002f },
	{ 0.7f, 0.4f, -0.03f, -3.0f, 0.0f, 0.003f },
	{ 0.1f, -2.2f, 0.04f, 1.5f, -1.3f, -0.001f },
	{ -0.5f, 0.8f, -0.05f, 0.25f, 0.6f, 0.002f },
};

/* The documented defaults (mlrt_ps_opts_init lives elsewhere in ps/). */
static mlrt_ps_opts defaults(mlrt_ps_optimizer opt)
{
	mlrt_ps_opts o;

	memset(&o, 0, sizeof(o));
	o.optimizer = opt;
	o.lr = 0.01f;
	o.momentum = 0.9f;
	o.beta1 = 0.9f;
	o.beta2 = 0.999f;
	o.eps = 1e-8f;
	o.l1 = 0.0f;
	o.l2 = 0.0f;
	o.ftrl_beta = 1.0f;
	o.consistency = MLRT_PS_ASYNC;
	o.staleness = 2;
	o.init = MLRT_PS_ZEROS;
	o.timeout_ms = 1000;
	return o;
}

/* The reference: one element at a time through all five steps, with its
 * weight and two state values in locals; ref_w[s][i] and ref_st[k][s][i]
 * are element i after step s. */
static void reference(const mlrt_ps_opts *o, float ref_w[STEPS][N], float ref_st[2][STEPS][N])
{
	for (int i = 0; i < N; i++) {
		float w = o->optimizer == MLRT_PS_FTRL ? 0.0f : w_start[i];
		float s0 = 0.0f, s1 = 0.0f;

		for (int s = 0; s < STEPS; s++) {
			float g = grads[s][i];

			if (o->optimizer == MLRT_PS_SUM) {
				w = w + g;
			} else if (o->optimizer == MLRT_PS_SGD) {
				w = w - o->lr * g;
			} else if (o->optimizer == MLRT_PS_MOMENTUM) {
				s0 = o->momentum * s0 + g;
				w = w - o->lr * s0;
			} else if (o->optimizer == MLRT_PS_ADAGRAD) {
				s0 = s0 + g * g;
				w = w - (o->lr * g) / (sqrtf(s0) + o->eps);
			} else if (o->optimizer == MLRT_PS_ADAM) {
				int t = s + 1;
				float bc1 = (float)(1.0 - pow((double)o->beta1, (double)t));
				float bc2 = (float)(1.0 - pow((double)o->beta2, (double)t));
				float one_b1 = 1.0f - o->beta1, one_b2 = 1.0f - o->beta2;

				s0 = o->beta1 * s0 + one_b1 * g;
				s1 = o->beta2 * s1 + (one_b2 * g) * g;
				float step = (o->lr * (s0 / bc1)) / (sqrtf(s1 / bc2) + o->eps);
				w = w - step;
			} else { /* FTRL: s0 = z, s1 = n */
				float g2 = g * g;
				float sigma = (sqrtf(s1 + g2) - sqrtf(s1)) / o->lr;
				s0 = s0 + (g - sigma * w);
				s1 = s1 + g2;
				if (fabsf(s0) <= o->l1) {
					w = 0.0f;
				} else {
					float sgn_l1 = s0 < 0 ? -o->l1 : o->l1;
					float den = (o->ftrl_beta + sqrtf(s1)) / o->lr + o->l2;
					w = -(s0 - sgn_l1) / den;
				}
			}
			ref_w[s][i] = w;
			ref_st[0][s][i] = s0;
			ref_st[1][s][i] = s1;
		}
	}
}

/* Five pushes through mlrti_optim_apply, compared bitwise with the
 * reference after each, weights and state both. */
static void run_against_reference(const mlrt_ps_opts *o)
{
	float ref_w[STEPS][N], ref_st[2][STEPS][N];
	float w[N], state[2 * N];
	size_t k = mlrti_optim_state_floats(o->optimizer);
	int64_t t = 0;
	char why[200];

	assert_int_equal(mlrti_optim_check(o, why, sizeof(why)), MLRT_OK);
	reference(o, ref_w, ref_st);
	mlrti_optim_init(o, 42, w, N);
	if (o->optimizer != MLRT_PS_FTRL)
		memcpy(w, w_start, sizeof(w));
	memset(state, 0, sizeof(state));
	for (int s = 0; s < STEPS; s++) {
		mlrti_optim_apply(o, w, k ? state : NULL, grads[s], N, &t);
		assert_int_equal(t, s + 1);
		assert_memory_equal(w, ref_w[s], sizeof(w));
		for (size_t j = 0; j < k; j++)
			assert_memory_equal(state + j * N, ref_st[j][s], N * sizeof(float));
	}
}

static void test_state_floats(void **unused)
{
	(void)unused;
	assert_int_equal(mlrti_optim_state_floats(MLRT_PS_SUM), 0);
	assert_int_equal(mlrti_optim_state_floats(MLRT_PS_SGD), 0);
	assert_int_equal(mlrti_optim_state_floats(MLRT_PS_MOMENTUM), 1);
	assert_int_equal(mlrti_optim_state_floats(MLRT_PS_ADAGRAD), 1);
	assert_int_equal(mlrti_optim_state_floats(MLRT_PS_ADAM), 2);
	assert_int_equal(mlrti_optim_state_floats(MLRT_PS_FTRL), 2);
	assert_int_equal(mlrti_optim_state_floats((mlrt_ps_optimizer)99), 0);
}

static void test_sum(void **unused)
{
	mlrt_ps_opts o = defaults(MLRT_PS_SUM);

	(void)unused;
	run_against_reference(&o);
	o.lr = 0.0f; /* SUM has no learning rate */
	run_against_reference(&o);
}

static void test_sgd(void **unused)
{
	mlrt_ps_opts o = defaults(MLRT_PS_SGD);

	(void)unused;
	run_against_reference(&o);
	o.lr = 0.37f;
	run_against_reference(&o);
}

static void test_momentum(void **unused)
{
	mlrt_ps_opts o = defaults(MLRT_PS_MOMENTUM);

	(void)unused;
	run_against_reference(&o);
	o.lr = 0.2f;
	o.momentum = 0.5f;
	run_against_reference(&o);
}

static void test_adagrad(void **unused)
{
	mlrt_ps_opts o = defaults(MLRT_PS_ADAGRAD);

	(void)unused;
	run_against_reference(&o);
	o.lr = 0.5f;
	o.eps = 0.1f;
	run_against_reference(&o);
	o.lr = 0.3f;
	o.eps = 1e-3f;
	run_against_reference(&o);
}

static void test_adam(void **unused)
{
	mlrt_ps_opts o = defaults(MLRT_PS_ADAM);

	(void)unused;
	run_against_reference(&o);
	o.lr = 0.05f;
	o.beta1 = 0.5f;
	o.beta2 = 0.75f;
	o.eps = 1e-3f;
	run_against_reference(&o);
	o.beta1 = 0.0f; /* no first moment: RMSprop with bias correction */
	run_against_reference(&o);
	o.lr = 0.003f;
	o.beta1 = 0.8f;
	o.beta2 = 0.99f;
	o.eps = 1e-6f;
	run_against_reference(&o);
}

/* Adam's first step is lr * sign(g) (to within eps and rounding) thanks to
 * the bias correction; without it it would be about 3.16 lr here. */
static void test_adam_first_step(void **unused)
{
	mlrt_ps_opts o = defaults(MLRT_PS_ADAM);
	float w[N] = { 0 }, state[2 * N] = { 0 };
	int64_t t = 0;

	(void)unused;
	mlrti_optim_apply(&o, w, state, grads[0], N, &t);
	for (int i = 0; i < N; i++) {
		if (grads[0][i] == 0.0f)
			continue;
		assert_true(fabsf(fabsf(w[i]) - o.lr) < 1e-3f * o.lr);
		assert_true((w[i] < 0) == (grads[0][i] > 0));
	}
	/* A key with a history keeps counting from its own t. */
	t = 1000;
	memset(state, 0, sizeof(state));
	memset(w, 0, sizeof(w));
	mlrti_optim_apply(&o, w, state, grads[0], N, &t);
	assert_int_equal(t, 1001);
	/* At step 1001 the correction of m is ~1, of v ~0.63: the step is
	 * about lr * 0.1 / sqrt(0.001 / 0.632) = 2.5 lr. */
	assert_true(fabsf(w[0]) > 2.0f * o.lr);
}

static void test_ftrl(void **unused)
{
	mlrt_ps_opts o = defaults(MLRT_PS_FTRL);

	(void)unused;
	run_against_reference(&o);
	o.lr = 0.1f;
	o.ftrl_beta = 1.0f;
	o.l1 = 0.5f;
	o.l2 = 0.25f;
	run_against_reference(&o);
	o.ftrl_beta = 0.0f;
	run_against_reference(&o);
}

/* With l1 = 0.5, element 5's tiny gradients never bring |z| past l1: its
 * weight is exactly +0 after every step while the others move. */
static void test_ftrl_sparsity(void **unused)
{
	mlrt_ps_opts o = defaults(MLRT_PS_FTRL);
	float w[N], state[2 * N] = { 0 };
	const float zero = 0.0f;
	int64_t t = 0;

	(void)unused;
	o.lr = 0.1f;
	o.l1 = 0.5f;
	mlrti_optim_init(&o, 7, w, N);
	for (int s = 0; s < STEPS; s++) {
		mlrti_optim_apply(&o, w, state, grads[s], N, &t);
		assert_true(fabsf(state[5]) <= o.l1);
		assert_memory_equal(&w[5], &zero, sizeof(float));
		assert_true(fabsf(state[1]) > o.l1);
		assert_true(w[1] != 0.0f);
	}
}

/* Updates whose exact results are easy to work out by hand. */
static void test_known_values(void **unused)
{
	mlrt_ps_opts o;
	float w[1], st[2];
	const float g1 = 1.0f, g2 = 2.0f, g_half = 0.5f;
	int64_t t;

	(void)unused;
	o = defaults(MLRT_PS_SUM);
	w[0] = 1.5f;
	t = 0;
	mlrti_optim_apply(&o, w, NULL, &g2, 1, &t);
	assert_true(w[0] == 3.5f && t == 1);

	o = defaults(MLRT_PS_SGD);
	o.lr = 0.5f;
	w[0] = 1.5f;
	mlrti_optim_apply(&o, w, NULL, &g2, 1, &t);
	assert_true(w[0] == 0.5f && t == 2);

	o = defaults(MLRT_PS_MOMENTUM);
	o.lr = 0.5f;
	o.momentum = 0.5f;
	w[0] = 0.0f;
	st[0] = 0.0f;
	mlrti_optim_apply(&o, w, st, &g1, 1, &t);
	assert_true(st[0] == 1.0f && w[0] == -0.5f);
	mlrti_optim_apply(&o, w, st, &g1, 1, &t); /* v = 1.5, w -= 0.75 */
	assert_true(st[0] == 1.5f && w[0] == -1.25f);

	o = defaults(MLRT_PS_ADAGRAD);
	o.lr = 1.0f;
	o.eps = 1.0f;
	w[0] = 0.0f;
	st[0] = 0.0f;
	mlrti_optim_apply(&o, w, st, &g1, 1, &t); /* h = 1, w -= 1 / (1 + 1) */
	assert_true(st[0] == 1.0f && w[0] == -0.5f);

	/* FTRL, alpha = beta = 1, no regularisation, g = 1 from zero:
	 * sigma = 1, z = 1, n = 1, w = -1 / ((1 + 1) / 1) = -0.5. */
	o = defaults(MLRT_PS_FTRL);
	o.lr = 1.0f;
	w[0] = 0.0f;
	st[0] = st[1] = 0.0f;
	mlrti_optim_apply(&o, w, st, &g1, 1, &t);
	assert_true(st[0] == 1.0f && st[1] == 1.0f && w[0] == -0.5f);

	/* |z| == l1 is still inside the dead zone: w is +0, not
	 * -(0.5 - 0.5) / ... = -0. */
	o.l1 = 0.5f;
	w[0] = 0.0f;
	st[0] = st[1] = 0.0f;
	mlrti_optim_apply(&o, w, st, &g_half, 1, &t);
	assert_true(st[0] == 0.5f && w[0] == 0.0f && !signbit(w[0]));
	assert_int_equal(t, 7);
}

/* ZEROS and CONSTANT are exact, and FTRL starts at 0 whatever init says. */
static void test_init_exact(void **unused)
{
	mlrt_ps_opts o = defaults(MLRT_PS_SGD);
	float w[100];

	(void)unused;
	memset(w, 0xff, sizeof(w));
	mlrti_optim_init(&o, 1, w, 100);
	for (int i = 0; i < 100; i++)
		assert_true(w[i] == 0.0f && !signbit(w[i]));
	o.init = MLRT_PS_CONSTANT;
	o.init_a = -0.125f;
	mlrti_optim_init(&o, 1, w, 100);
	for (int i = 0; i < 100; i++)
		assert_true(w[i] == -0.125f);
	o.optimizer = MLRT_PS_FTRL;
	mlrti_optim_init(&o, 1, w, 100);
	for (int i = 0; i < 100; i++)
		assert_true(w[i] == 0.0f);
	o.init = MLRT_PS_NORMAL;
	o.init_b = 1.0f;
	mlrti_optim_init(&o, 1, w, 100);
	for (int i = 0; i < 100; i++)
		assert_true(w[i] == 0.0f);
}

/* Count of positions where a and b hold the same bits. */
static size_t same_count(const float *a, const float *b, size_t n)
{
	size_t c = 0;

	for (size_t i = 0; i < n; i++)
		c += memcmp(&a[i], &b[i], sizeof(float)) == 0;
	return c;
}

/* Values depend on (seed, key, i) only: the same again, the same for a
 * prefix of the key, and different for another key or seed. */
static void test_init_deterministic(void **unused)
{
	const mlrt_ps_init_kind kinds[] = { MLRT_PS_UNIFORM, MLRT_PS_NORMAL };
	enum { M = 1000 };
	float *a = malloc(M * sizeof(float)), *b = malloc(M * sizeof(float));

	(void)unused;
	assert_non_null(a);
	assert_non_null(b);
	for (size_t k = 0; k < 2; k++) {
		mlrt_ps_opts o = defaults(MLRT_PS_ADAM);

		o.init = kinds[k];
		o.init_a = -1.0f;
		o.init_b = 1.0f;
		o.seed = 12345;
		mlrti_optim_init(&o, 77, a, M);
		mlrti_optim_init(&o, 77, b, M);
		assert_memory_equal(a, b, M * sizeof(float));
		mlrti_optim_init(&o, 77, b, 10);
		assert_memory_equal(a, b, 10 * sizeof(float));
		/* Neighbouring elements differ too. */
		assert_true(same_count(a, a + 1, M - 1) == 0);

		mlrti_optim_init(&o, 78, b, M);
		assert_true(same_count(a, b, M) <= 1);
		mlrti_optim_init(&o, 77ull ^ (1ull << 63), b, M);
		assert_true(same_count(a, b, M) <= 1);
		o.seed = 12346;
		mlrti_optim_init(&o, 77, b, M);
		assert_true(same_count(a, b, M) <= 1);
	}
	free(a);
	free(b);
}

/* UNIFORM stays in [init_a, init_b), also where float rounding of
 * a + (b - a) * u would reach b, and covers the range evenly. */
static void test_init_uniform(void **unused)
{
	enum { M = 100000 };
	float *w = malloc(M * sizeof(float));
	mlrt_ps_opts o = defaults(MLRT_PS_SGD);
	double sum = 0;
	float lo = 2, hi = -2;
	size_t below_half = 0;

	(void)unused;
	assert_non_null(w);
	o.init = MLRT_PS_UNIFORM;
	o.init_a = -0.5f;
	o.init_b = 1.5f;
	o.seed = 9;
	mlrti_optim_init(&o, 3, w, M);
	for (size_t i = 0; i < M; i++) {
		assert_true(w[i] >= -0.5f && w[i] < 1.5f);
		sum += w[i];
		lo = fminf(lo, w[i]);
		hi = fmaxf(hi, w[i]);
		below_half += w[i] < 0.5f;
	}
	assert_true(fabs(sum / M - 0.5) < 0.01);
	assert_true(lo < -0.49f && hi > 1.49f);
	assert_true(below_half > M / 2 - 1000 && below_half < M / 2 + 1000);

	/* A range one float wide holds a single value: a + (b - a) * u rounds
	 * to b for about half of the draws, and must be kept below it. */
	o.init_a = 1.0f;
	o.init_b = nextafterf(1.0f, 2.0f);
	mlrti_optim_init(&o, 5, w, M);
	for (size_t i = 0; i < M; i++)
		assert_true(w[i] == 1.0f);
	free(w);
}

/* Assert that w[0..n) has the given mean and sd (within 1.5% of the sd,
 * about five standard errors) and that 68.3% of it lies within one sd of
 * the mean. */
static void check_normal(const float *w, size_t n, double mean, double sd)
{
	double s = 0, ss = 0, m;
	size_t within = 0;

	for (size_t i = 0; i < n; i++)
		s += w[i];
	m = s / (double)n;
	for (size_t i = 0; i < n; i++) {
		ss += (w[i] - m) * (w[i] - m);
		within += fabs(w[i] - mean) < sd;
	}
	assert_true(fabs(m - mean) < 0.015 * sd);
	assert_true(fabs(sqrt(ss / (double)(n - 1)) - sd) < 0.015 * sd);
	assert_true(fabs((double)within / (double)n - 0.6827) < 0.008);
}

/* NORMAL over 100000 samples of one key, and over element 0 of 100000
 * keys. */
static void test_init_normal(void **unused)
{
	enum { M = 100000 };
	float *w = malloc(M * sizeof(float));
	mlrt_ps_opts o = defaults(MLRT_PS_MOMENTUM);

	(void)unused;
	assert_non_null(w);
	o.init = MLRT_PS_NORMAL;
	o.init_a = 3.0f;
	o.init_b = 0.5f;
	o.seed = 2024;
	mlrti_optim_init(&o, 11, w, M);
	check_normal(w, M, 3.0, 0.5);
	for (uint64_t k = 0; k < M; k++)
		mlrti_optim_init(&o, k, &w[k], 1);
	check_normal(w, M, 3.0, 0.5);

	/* sd 0 is allowed and gives the mean exactly. */
	o.init_b = 0.0f;
	mlrti_optim_init(&o, 11, w, 1000);
	for (size_t i = 0; i < 1000; i++)
		assert_true(w[i] == 3.0f);
	free(w);
}

/* Expect MLRT_ERR_INVALID with a message that names field. */
static void expect_bad(const mlrt_ps_opts *o, const char *field)
{
	char why[256] = "";
	char want[64];

	assert_int_equal(mlrti_optim_check(o, why, sizeof(why)), MLRT_ERR_INVALID);
	snprintf(want, sizeof(want), "ps: %s ", field);
	if (!strstr(why, want))
		fail_msg("message \"%s\" does not name %s", why, field);
}

static void test_check(void **unused)
{
	mlrt_ps_opts o;
	char why[128];

	(void)unused;
	for (int k = MLRT_PS_SUM; k <= MLRT_PS_FTRL; k++) {
		o = defaults((mlrt_ps_optimizer)k);
		assert_int_equal(mlrti_optim_check(&o, why, sizeof(why)), MLRT_OK);
	}

	/* Enums. */
	o = defaults(MLRT_PS_SGD);
	o.optimizer = (mlrt_ps_optimizer)6;
	expect_bad(&o, "unknown optimizer");
	o.optimizer = (mlrt_ps_optimizer)-1;
	expect_bad(&o, "unknown optimizer");
	o = defaults(MLRT_PS_SGD);
	o.consistency = (mlrt_ps_consistency)3;
	expect_bad(&o, "unknown consistency");
	o = defaults(MLRT_PS_SGD);
	o.init = (mlrt_ps_init_kind)4;
	expect_bad(&o, "unknown init");

	/* lr: every optimizer but SUM. */
	for (int k = MLRT_PS_SGD; k <= MLRT_PS_FTRL; k++) {
		o = defaults((mlrt_ps_optimizer)k);
		o.lr = 0.0f;
		expect_bad(&o, "lr");
		o.lr = -0.1f;
		expect_bad(&o, "lr");
		o.lr = NAN;
		expect_bad(&o, "lr");
		o.lr = INFINITY;
		expect_bad(&o, "lr");
	}
	o = defaults(MLRT_PS_SUM);
	o.lr = 0.0f;
	assert_int_equal(mlrti_optim_check(&o, why, sizeof(why)), MLRT_OK);

	o = defaults(MLRT_PS_MOMENTUM);
	o.momentum = 1.0f;
	expect_bad(&o, "momentum");
	o.momentum = -0.1f;
	expect_bad(&o, "momentum");
	o.momentum = NAN;
	expect_bad(&o, "momentum");
	o.momentum = 0.0f;
	assert_int_equal(mlrti_optim_check(&o, why, sizeof(why)), MLRT_OK);

	o = defaults(MLRT_PS_ADAM);
	o.beta1 = 1.0f;
	expect_bad(&o, "beta1");
	o.beta1 = -0.5f;
	expect_bad(&o, "beta1");
	o = defaults(MLRT_PS_ADAM);
	o.beta2 = 1.0f;
	expect_bad(&o, "beta2");
	o.beta2 = NAN;
	expect_bad(&o, "beta2");

	o = defaults(MLRT_PS_ADAGRAD);
	o.eps = 0.0f;
	expect_bad(&o, "eps");
	o = defaults(MLRT_PS_ADAM);
	o.eps = -1e-8f;
	expect_bad(&o, "eps");

	o = defaults(MLRT_PS_FTRL);
	o.l1 = -0.1f;
	expect_bad(&o, "l1");
	o = defaults(MLRT_PS_FTRL);
	o.l2 = -0.1f;
	expect_bad(&o, "l2");
	o = defaults(MLRT_PS_FTRL);
	o.ftrl_beta = -1.0f;
	expect_bad(&o, "ftrl_beta");
	o.ftrl_beta = 0.0f;
	assert_int_equal(mlrti_optim_check(&o, why, sizeof(why)), MLRT_OK);

	o = defaults(MLRT_PS_SGD);
	o.consistency = MLRT_PS_BOUNDED;
	o.staleness = -1;
	expect_bad(&o, "staleness");
	o.staleness = 0;
	assert_int_equal(mlrti_optim_check(&o, why, sizeof(why)), MLRT_OK);

	o = defaults(MLRT_PS_SGD);
	o.init = MLRT_PS_UNIFORM;
	o.init_a = 1.0f;
	o.init_b = 1.0f;
	expect_bad(&o, "init_b");
	o.init_b = 0.5f;
	expect_bad(&o, "init_b");
	o.init_b = INFINITY;
	expect_bad(&o, "init_a and init_b");
	o.init_b = 2.0f;
	assert_int_equal(mlrti_optim_check(&o, why, sizeof(why)), MLRT_OK);

	o = defaults(MLRT_PS_SGD);
	o.init = MLRT_PS_NORMAL;
	o.init_b = -0.1f;
	expect_bad(&o, "init_b");
	o.init_b = NAN;
	expect_bad(&o, "init_b");
	o.init_b = 0.0f;
	o.init_a = NAN;
	expect_bad(&o, "init_a");

	/* why may be NULL, and a short buffer is still terminated. */
	o = defaults(MLRT_PS_ADAGRAD);
	o.eps = 0.0f;
	assert_int_equal(mlrti_optim_check(&o, NULL, 0), MLRT_ERR_INVALID);
	memset(why, 'x', sizeof(why));
	assert_int_equal(mlrti_optim_check(&o, why, 8), MLRT_ERR_INVALID);
	assert_string_equal(why, "ps: eps");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_state_floats),
		cmocka_unit_test(test_sum),
		cmocka_unit_test(test_sgd),
		cmocka_unit_test(test_momentum),
		cmocka_unit_test(test_adagrad),
		cmocka_unit_test(test_adam),
		cmocka_unit_test(test_adam_first_step),
		cmocka_unit_test(test_ftrl),
		cmocka_unit_test(test_ftrl_sparsity),
		cmocka_unit_test(test_known_values),
		cmocka_unit_test(test_init_exact),
		cmocka_unit_test(test_init_deterministic),
		cmocka_unit_test(test_init_uniform),
		cmocka_unit_test(test_init_normal),
		cmocka_unit_test(test_check),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
