/* examples/mlp_gpu's model on the CPU: model_gpu.c and kernels.cu, built
 * against this folder's stand-ins for the CUDA runtime and cuBLAS
 * (include/, fake_cuda.c, kernel_emu.hpp), trained side by side with the
 * host model examples/mlp/model.c, which is known right.  From the same
 * initial weights, on the same batches of the digits data, after every
 * step the gradient (block by block: gW1, gb1, gW2, gb2) and the batch
 * loss, then the parameters and momentum must agree to float rounding; at
 * the end, the test loss too, and the number of test rows classified right
 * exactly.  A wrong transpose or leading dimension in a cublasSgemm, a
 * wrong kernel (ReLU backward, a bias gradient, softmax) or a host pointer
 * where a device one belongs fails it. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include <mlrt/status.h>

#include "emu.h"
#include "kernels.h"
#include "mlp/digits.h"
#include "mlp/model.h"
#include "model_gpu.h"

/* Relative to the largest value of the block compared.  Seen: gradient
 * 2.7e-6, parameters and momentum 1.2e-6, losses 1.2e-6 (some sums run in
 * another order or precision, nothing else differs); a planted bug gives
 * 0.01 to 2. */
#define GRAD_TOL 1e-5
#define STATE_TOL 1e-5
#define LOSS_TOL 1e-5

static digits data;
static int *train, ntrain; /* rows 1-4 of every 5, shuffled once */
static int *test, ntest;   /* every 5th row */

/* max |host - gpu| over max |host|, of n floats; where: its index. */
static double rel_diff(const float *host, const float *gpu, size_t n, size_t *where)
{
	double scale = 0.0, worst = 0.0;

	*where = 0;
	for (size_t i = 0; i < n; i++)
		scale = fmax(scale, fabs((double)host[i]));
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)host[i] - (double)gpu[i]) / (scale > 0.0 ? scale : 1.0);

		if (!(d <= worst)) { /* also takes a NaN */
			worst = d;
			*where = i;
		}
	}
	return worst;
}

/* The four blocks of a flat parameter array (model.h), each compared on
 * its own scale: a bias gradient is not hidden by a larger weight one. */
static void check_blocks(const char *what, int step, const mlp_model *hm, const float *host,
                         const float *gpu, double tol, double *worst)
{
	size_t nw1 = (size_t)hm->hidden * hm->in, nw2 = (size_t)hm->out * hm->hidden;
	const struct {
		const char *name;
		size_t off, n;
	} blk[] = {
		{"W1", 0, nw1},
		{"b1", nw1, (size_t)hm->hidden},
		{"W2", nw1 + (size_t)hm->hidden, nw2},
		{"b2", nw1 + (size_t)hm->hidden + nw2, (size_t)hm->out},
	};

	for (size_t b = 0; b < sizeof(blk) / sizeof(blk[0]); b++) {
		size_t at;
		double d = rel_diff(host + blk[b].off, gpu + blk[b].off, blk[b].n, &at);

		if (!(d <= tol))
			fail_msg("step %d, %s of %s: relative difference %.3g > %.3g at [%zu]: "
			         "host %.9g, gpu %.9g", step, what, blk[b].name, d, tol, at,
			         (double)host[blk[b].off + at], (double)gpu[blk[b].off + at]);
		*worst = fmax(*worst, d);
	}
}

static void check_loss(const char *what, int step, double host, double gpu, double *worst)
{
	double d = fabs(host - gpu) / fmax(fabs(host), 1e-30);

	if (!(d <= LOSS_TOL))
		fail_msg("step %d, %s: host %.9g, gpu %.9g (relative %.3g > %.3g)", step, what, host,
		         gpu, d, LOSS_TOL);
	*worst = fmax(*worst, d);
}

static int load(void **state)
{
	uint64_t seed = 7;

	(void)state;
	if (digits_load(DIGITS_PATH, &data) != MLRT_OK)
		return -1;
	train = malloc((size_t)data.n * sizeof(int));
	test = malloc((size_t)data.n * sizeof(int));
	if (train == NULL || test == NULL)
		return -1;
	for (int r = 0; r < data.n; r++) {
		if (r % 5 == 0)
			test[ntest++] = r;
		else
			train[ntrain++] = r;
	}
	for (int i = ntrain - 1; i > 0; i--) {
		int j = (int)(mlp_mix64(seed ^ (uint64_t)i) % (uint64_t)(i + 1)), t = train[i];

		train[i] = train[j];
		train[j] = t;
	}
	return 0;
}

static int unload(void **state)
{
	(void)state;
	free(train);
	free(test);
	digits_free(&data);
	return 0;
}

struct shape {
	int hidden, batch, steps;
};

static void run_shape(const struct shape *s)
{
	const float lr = 0.05f, mu = 0.9f;
	int max_rows = s->batch > 512 ? s->batch : 512; /* as mlp_gpu.c */
	double worst_grad = 0.0, worst_state = 0.0, worst_loss = 0.0, hloss = 0.0, gloss = 0.0;
	int64_t hcorrect = 0, gcorrect = 0;
	int live = emu_live_blocks(); /* a failed test before may have left some */
	mlp_model hm;
	mlpg_model gm;
	float *g;
	double *row_loss;
	int *idx;

	assert_int_equal(mlp_model_init(&hm, DIGITS_FEATURES, s->hidden, DIGITS_CLASSES, max_rows,
	                                 mlp_mix64(1)), MLRT_OK);
	assert_int_equal(mlpg_init(&gm, DIGITS_FEATURES, s->hidden, DIGITS_CLASSES, max_rows,
	                           hm.params, data.x, data.y, data.n), MLRT_OK);
	assert_int_equal(gm.nparams, hm.nparams);
	g = malloc(hm.nparams * sizeof(float));
	row_loss = malloc((size_t)s->batch * sizeof(double));
	idx = malloc((size_t)s->batch * sizeof(int));
	assert_non_null(g);
	assert_non_null(row_loss);
	assert_non_null(idx);

	for (int step = 0; step < s->steps; step++) {
		long gemms = emu_gemms;
		double hl, gl = 0.0;

		for (int i = 0; i < s->batch; i++)
			idx[i] = train[((size_t)step * s->batch + i) % (size_t)ntrain];
		hl = mlp_model_grad(&hm, data.x, data.y, idx, s->batch);
		assert_int_equal(mlpg_grad(&gm, idx, s->batch), MLRT_OK);
		assert_int_equal(emu_gemms - gemms, 5); /* model_gpu.c's five products */
		assert_int_equal(mlpg_sync(&gm, "the gradient"), MLRT_OK);
		assert_int_equal(cudaMemcpy(g, gm.grad, hm.nparams * sizeof(float),
		                            cudaMemcpyDeviceToHost), cudaSuccess);
		check_blocks("the gradient", step, &hm, hm.grad, g, GRAD_TOL, &worst_grad);
		assert_int_equal(cudaMemcpy(row_loss, gm.row_loss, (size_t)s->batch * sizeof(double),
		                            cudaMemcpyDeviceToHost), cudaSuccess);
		for (int i = 0; i < s->batch; i++)
			gl += row_loss[i];
		check_loss("the batch loss", step, hl, gl, &worst_loss);

		mlp_model_step(&hm, lr, mu);
		assert_int_equal(mlpg_step(&gm, lr, mu), MLRT_OK);
		assert_int_equal(mlpg_params_to_host(&gm, g), MLRT_OK);
		check_blocks("the parameters", step, &hm, hm.params, g, STATE_TOL, &worst_state);
		assert_int_equal(cudaMemcpy(g, gm.momentum, hm.nparams * sizeof(float),
		                            cudaMemcpyDeviceToHost), cudaSuccess);
		check_blocks("the momentum", step, &hm, hm.momentum, g, STATE_TOL, &worst_state);
	}

	for (int i = 0; i < ntest; i += max_rows) {
		int n = ntest - i < max_rows ? ntest - i : max_rows;
		double part;

		hloss += mlp_model_eval(&hm, data.x, data.y, test + i, n, &hcorrect);
		assert_int_equal(mlpg_eval(&gm, test + i, n, &part, &gcorrect), MLRT_OK);
		gloss += part;
	}
	check_loss("the test loss", s->steps, hloss, gloss, &worst_loss);
	assert_int_equal(gcorrect, hcorrect);
	printf("hidden %d, batch %d, %d steps: worst relative difference: gradient %.2g, "
	       "parameters and momentum %.2g, loss %.2g; test loss %.6f, accuracy %.4f\n",
	       s->hidden, s->batch, s->steps, worst_grad, worst_state, worst_loss, hloss / ntest,
	       (double)hcorrect / ntest);

	free(idx);
	free(row_loss);
	free(g);
	mlpg_fini(&gm);
	mlp_model_fini(&hm);
	assert_int_equal(emu_live_blocks(), live);
}

/* The example's shape (--hidden 64 --batch 16). */
static void test_default(void **state)
{
	const struct shape s = {64, 16, 150};

	(void)state;
	run_shape(&s);
}

/* A batch over one 256-thread block and not a multiple of it; hidden
 * differs from in and out, so no swapped dimension goes unnoticed. */
static void test_odd_batch(void **state)
{
	const struct shape s = {37, 300, 30};

	(void)state;
	run_shape(&s);
}

/* One row a batch; a hidden layer wider than in. */
static void test_one_row(void **state)
{
	const struct shape s = {129, 1, 60};

	(void)state;
	run_shape(&s);
}

/* A batch over 512 rows (max_rows = batch) and a 5-unit hidden layer. */
static void test_large_batch(void **state)
{
	const struct shape s = {5, 600, 30};

	(void)state;
	run_shape(&s);
}

/* More items than the 65535 blocks of 256 threads that kernels.cu's
 * grid is capped at: the grid-stride loop must reach the last ones. */
static void test_grid_stride(void **state)
{
	const size_t count = (size_t)65535 * 256 + 77;
	int live = emu_live_blocks();
	float *p, *mom, *g, *h;

	(void)state;
	h = malloc(count * sizeof(float));
	assert_non_null(h);
	assert_int_equal(cudaMalloc((void **)&p, count * sizeof(float)), cudaSuccess);
	assert_int_equal(cudaMalloc((void **)&mom, count * sizeof(float)), cudaSuccess);
	assert_int_equal(cudaMalloc((void **)&g, count * sizeof(float)), cudaSuccess);
	/* Small integers: every result below is exact. */
	for (size_t i = 0; i < count; i++)
		h[i] = (float)(i % 7);
	assert_int_equal(cudaMemcpy(p, h, count * sizeof(float), cudaMemcpyHostToDevice),
	                 cudaSuccess);
	for (size_t i = 0; i < count; i++)
		h[i] = (float)(i % 3);
	assert_int_equal(cudaMemcpy(mom, h, count * sizeof(float), cudaMemcpyHostToDevice),
	                 cudaSuccess);
	for (size_t i = 0; i < count; i++)
		h[i] = (float)(i % 5);
	assert_int_equal(cudaMemcpy(g, h, count * sizeof(float), cudaMemcpyHostToDevice),
	                 cudaSuccess);
	assert_int_equal(mlpg_sgd(p, mom, g, count, 0.25f, 0.5f), cudaSuccess);
	assert_int_equal(cudaMemcpy(h, p, count * sizeof(float), cudaMemcpyDeviceToHost),
	                 cudaSuccess);
	for (size_t i = 0; i < count; i++) {
		float m = 0.5f * (float)(i % 3) + (float)(i % 5);

		if (h[i] != (float)(i % 7) - 0.25f * m)
			fail_msg("sgd over %zu items: [%zu] = %g, want %g", count, i, (double)h[i],
			         (double)((float)(i % 7) - 0.25f * m));
	}
	cudaFree(p);
	cudaFree(mom);
	cudaFree(g);
	free(h);
	assert_int_equal(emu_live_blocks(), live);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default),
		cmocka_unit_test(test_odd_batch),
		cmocka_unit_test(test_one_row),
		cmocka_unit_test(test_large_batch),
		cmocka_unit_test(test_grid_stride),
	};

	return cmocka_run_group_tests(tests, load, unload);
}
