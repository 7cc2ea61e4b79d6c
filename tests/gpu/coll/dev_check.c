/* dev_check: the collectives on CUDA device memory, under mlrun:
 *
 *   dev_check --count             print this host's number of CUDA devices
 *   mlrun -np N dev_check         check every collective (below)
 *   mlrun -np N dev_check spin DIR
 *                                 write DIR/pid-r<R>, then allreduce 16 MiB
 *                                 of device memory over and over; when one
 *                                 fails print "spin: rank R failed at
 *                                 <wall ms>: <error>" and exit 3 (SIGTERM
 *                                 is ignored: survivors must leave through
 *                                 the error)
 *
 * Each rank uses device local_rank % device_count, fills device buffers
 * from a host reference (small integers, so that every reduction order is
 * exact), runs the collective and compares the bytes copied back, with
 * guard bytes around every device buffer.  Covered: allreduce (every
 * dtype and op), reduce_scatter, allgather, broadcast; counts 0, 1, fewer
 * than ranks, not divisible, several staging chunks; in place and out of
 * place; host buffers mixed with device ones; nonblocking collectives in a
 * group (device requests are not fused); random floats, whose sums must
 * have the same bits on every rank (compared through the store) and on a
 * rerun.  MLRT_AVG goes through NCCL's ncclAvg, which may round
 * differently from sum/n: it is compared within a tolerance (every other
 * op exactly).  Exit 0 when everything matched; each mismatch printed. */
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include <mlrt/mlrt.h>

#include "runtime/reduce.h"
#include "tests/mp/coll_data.h"

#define GUARD 256

static int failures;
static int rank, size;

static void FAILF(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void FAILF(const char *fmt, ...)
{
	va_list ap;

	if (failures++ >= 30)
		return;
	fprintf(stderr, "rank %d: FAIL: ", rank);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void cuda_or_die(cudaError_t e, const char *what)
{
	if (e != cudaSuccess) {
		fprintf(stderr, "rank %d: %s: %s\n", rank, what, cudaGetErrorString(e));
		exit(2);
	}
}

static double load_value(const void *buf, size_t i, mlrt_dtype t)
{
	switch (t) {
	case MLRT_F32: return ((const float *)buf)[i];
	case MLRT_F64: return ((const double *)buf)[i];
	case MLRT_F16: return mlrti_f16_to_f32(((const uint16_t *)buf)[i]);
	case MLRT_BF16: return mlrti_bf16_to_f32(((const uint16_t *)buf)[i]);
	case MLRT_I32: return ((const int32_t *)buf)[i];
	case MLRT_I64: return (double)((const int64_t *)buf)[i];
	case MLRT_U8: return ((const uint8_t *)buf)[i];
	default: return 0.0;
	}
}

/* The exact reduction over ranks of element elem (before AVG's division). */
static int64_t reduced(mlrt_dtype t, mlrt_op op, size_t elem)
{
	int u8 = t == MLRT_U8;
	int64_t acc = coll_input(0, elem, op, u8);

	for (int r = 1; r < size; r++) {
		int64_t v = coll_input(r, elem, op, u8);

		switch (op) {
		case MLRT_SUM:
		case MLRT_AVG: acc += v; break;
		case MLRT_MIN: acc = v < acc ? v : acc; break;
		case MLRT_MAX: acc = v > acc ? v : acc; break;
		case MLRT_PROD: acc *= v; break;
		default: break;
		}
	}
	return u8 ? (uint8_t)acc : acc;
}

/* Whether got[i] is the reduction of element elem: exact, except AVG
 * (within rounding of the type; integers within 1). */
static int matches(const void *got, size_t i, mlrt_dtype t, mlrt_op op, size_t elem)
{
	int64_t acc = reduced(t, op, elem);
	char want[8];

	if (op != MLRT_AVG) {
		coll_store(want, 0, t, (double)acc);
		return memcmp((const char *)got + i * mlrt_dtype_size(t), want, mlrt_dtype_size(t)) == 0;
	}
	{
		double w = (double)acc / size, g = load_value(got, i, t);
		double tol = t == MLRT_F16 || t == MLRT_BF16 ? 1e-2 * (fabs(w) + 1)
		             : t == MLRT_F32                 ? 1e-6 * (fabs(w) + 1)
		             : t == MLRT_F64                 ? 1e-12 * (fabs(w) + 1)
		                                             : 1.0;

		return fabs(g - w) <= tol;
	}
}

/* Device memory with GUARD bytes of 0xA5 on each side. */
typedef struct dbuf {
	unsigned char *base;
	void *p;
	size_t bytes;
} dbuf;

static void dbuf_alloc(dbuf *d, size_t bytes)
{
	d->bytes = bytes;
	cuda_or_die(cudaMalloc((void **)&d->base, bytes + 2 * GUARD), "cudaMalloc");
	cuda_or_die(cudaMemset(d->base, 0xA5, bytes + 2 * GUARD), "cudaMemset");
	d->p = d->base + GUARD;
}

static void dbuf_put(dbuf *d, const void *host, size_t bytes)
{
	cuda_or_die(cudaMemcpy(d->p, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}

static void dbuf_get(const dbuf *d, void *host, size_t off, size_t bytes)
{
	cuda_or_die(cudaMemcpy(host, (char *)d->p + off, bytes, cudaMemcpyDeviceToHost),
	            "cudaMemcpy D2H");
}

static int dbuf_guards_intact(const dbuf *d)
{
	unsigned char g[2 * GUARD];

	cuda_or_die(cudaMemcpy(g, d->base, GUARD, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
	cuda_or_die(cudaMemcpy(g + GUARD, (char *)d->p + d->bytes, GUARD, cudaMemcpyDeviceToHost),
	            "cudaMemcpy D2H");
	for (size_t i = 0; i < sizeof(g); i++)
		if (g[i] != 0xA5)
			return 0;
	return 1;
}

static void dbuf_free(dbuf *d)
{
	cudaFree(d->base);
}

/* mixed: 0 both device, 1 host send, 2 host receive. */
static void check_allreduce(mlrt_comm *w, mlrt_dtype t, mlrt_op op, size_t count, int in_place,
                            int mixed)
{
	size_t es = mlrt_dtype_size(t), bytes = count * es;
	char *h_in = malloc(bytes + 1), *h_out = malloc(bytes + 1);
	dbuf in, out;
	const void *send;
	void *recv;
	int rc;

	coll_fill(h_in, count, t, op, rank, 0);
	dbuf_alloc(&in, bytes);
	dbuf_alloc(&out, bytes);
	dbuf_put(&in, h_in, bytes);
	send = mixed == 1 ? (const void *)h_in : in.p;
	recv = in_place ? (void *)in.p : mixed == 2 ? (void *)h_out : out.p;
	rc = mlrt_allreduce(w, send, recv, count, t, op);
	if (rc != MLRT_OK) {
		FAILF("allreduce %s %s count %zu: %s", mlrt_dtype_name(t), mlrt_op_name(op), count,
		      mlrt_strerror(rc));
		goto out;
	}
	if (recv != h_out)
		dbuf_get(in_place ? &in : &out, h_out, 0, bytes);
	for (size_t i = 0; i < count; i++)
		if (!matches(h_out, i, t, op, i)) {
			FAILF("allreduce %s %s count %zu %s%s: wrong result at %zu (%g)",
			      mlrt_dtype_name(t), mlrt_op_name(op), count,
			      in_place ? "in place" : "out of place",
			      mixed == 1 ? ", host send" : mixed == 2 ? ", host recv" : "", i,
			      load_value(h_out, i, t));
			break;
		}
	if (!dbuf_guards_intact(&in) || !dbuf_guards_intact(&out))
		FAILF("allreduce %s %s count %zu: wrote outside the buffer", mlrt_dtype_name(t),
		      mlrt_op_name(op), count);
	if (!in_place && mixed != 1) {
		char *again = malloc(bytes + 1);

		dbuf_get(&in, again, 0, bytes);
		if (memcmp(again, h_in, bytes) != 0)
			FAILF("allreduce %s %s count %zu: modified the send buffer", mlrt_dtype_name(t),
			      mlrt_op_name(op), count);
		free(again);
	}
out:
	dbuf_free(&in);
	dbuf_free(&out);
	free(h_in);
	free(h_out);
}

static void check_reduce_scatter(mlrt_comm *w, mlrt_dtype t, mlrt_op op, size_t count,
                                 int in_place)
{
	size_t es = mlrt_dtype_size(t), total = count * (size_t)size;
	char *h_in = malloc(total * es + 1), *h_out = malloc(count * es + 1);
	dbuf in, out;
	void *dst;
	int rc;

	coll_fill(h_in, total, t, op, rank, 0);
	dbuf_alloc(&in, total * es);
	dbuf_alloc(&out, count * es);
	dbuf_put(&in, h_in, total * es);
	dst = in_place ? (char *)in.p + (size_t)rank * count * es : out.p;
	rc = mlrt_reduce_scatter(w, in.p, dst, count, t, op);
	if (rc != MLRT_OK) {
		FAILF("reduce_scatter %s %s count %zu: %s", mlrt_dtype_name(t), mlrt_op_name(op),
		      count, mlrt_strerror(rc));
		goto out;
	}
	if (in_place)
		dbuf_get(&in, h_out, (size_t)rank * count * es, count * es);
	else
		dbuf_get(&out, h_out, 0, count * es);
	for (size_t i = 0; i < count; i++)
		if (!matches(h_out, i, t, op, (size_t)rank * count + i)) {
			FAILF("reduce_scatter %s %s count %zu %s: wrong result at %zu", mlrt_dtype_name(t),
			      mlrt_op_name(op), count, in_place ? "in place" : "out of place", i);
			break;
		}
	if (!dbuf_guards_intact(&in) || !dbuf_guards_intact(&out))
		FAILF("reduce_scatter count %zu: wrote outside the buffer", count);
out:
	dbuf_free(&in);
	dbuf_free(&out);
	free(h_in);
	free(h_out);
}

static void check_allgather(mlrt_comm *w, mlrt_dtype t, size_t count, int in_place)
{
	size_t es = mlrt_dtype_size(t), total = count * (size_t)size;
	char *mine = malloc(count * es + 1), *all = malloc(total * es + 1);
	char *want = malloc(total * es + 1);
	dbuf in, out;
	int rc;

	for (int r = 0; r < size; r++)
		coll_fill(want + (size_t)r * count * es, count, t, MLRT_SUM, r, 0);
	memcpy(mine, want + (size_t)rank * count * es, count * es);
	dbuf_alloc(&in, count * es);
	dbuf_alloc(&out, total * es);
	dbuf_put(&in, mine, count * es);
	if (in_place)
		cuda_or_die(cudaMemcpy((char *)out.p + (size_t)rank * count * es, mine, count * es,
		                       cudaMemcpyHostToDevice), "cudaMemcpy H2D");
	rc = mlrt_allgather(w, in_place ? (char *)out.p + (size_t)rank * count * es : in.p, out.p,
	                    count, t);
	if (rc != MLRT_OK) {
		FAILF("allgather %s count %zu: %s", mlrt_dtype_name(t), count, mlrt_strerror(rc));
		goto out;
	}
	dbuf_get(&out, all, 0, total * es);
	if (memcmp(all, want, total * es) != 0)
		FAILF("allgather %s count %zu %s: wrong result", mlrt_dtype_name(t), count,
		      in_place ? "in place" : "out of place");
	if (!dbuf_guards_intact(&out))
		FAILF("allgather count %zu: wrote outside the buffer", count);
out:
	dbuf_free(&in);
	dbuf_free(&out);
	free(mine);
	free(all);
	free(want);
}

static void check_broadcast(mlrt_comm *w, mlrt_dtype t, size_t count, int root)
{
	size_t es = mlrt_dtype_size(t), bytes = count * es;
	char *h = malloc(bytes + 1), *want = malloc(bytes + 1);
	dbuf b;
	int rc;

	coll_fill(want, count, t, MLRT_SUM, root, 7);
	if (rank == root)
		memcpy(h, want, bytes);
	else
		memset(h, 0xEE, bytes);
	dbuf_alloc(&b, bytes);
	dbuf_put(&b, h, bytes);
	rc = mlrt_broadcast(w, b.p, count, t, root);
	if (rc == MLRT_OK) {
		dbuf_get(&b, h, 0, bytes);
		if (memcmp(h, want, bytes) != 0)
			FAILF("broadcast %s count %zu root %d: wrong result", mlrt_dtype_name(t), count,
			      root);
		if (!dbuf_guards_intact(&b))
			FAILF("broadcast count %zu: wrote outside the buffer", count);
	} else {
		FAILF("broadcast count %zu root %d: %s", count, root, mlrt_strerror(rc));
	}
	dbuf_free(&b);
	free(h);
	free(want);
}

/* Nonblocking allreduces in a group: device requests run unfused, and
 * every one is right. */
static void check_group(mlrt_comm *w)
{
	enum { N = 6, COUNT = 1000 };
	char *h = malloc(COUNT * 4);
	dbuf b[N];
	mlrt_request *req[N];
	int rc;

	coll_fill(h, COUNT, MLRT_F32, MLRT_SUM, rank, 0);
	for (int i = 0; i < N; i++) {
		dbuf_alloc(&b[i], COUNT * 4);
		dbuf_put(&b[i], h, COUNT * 4);
	}
	rc = mlrt_group_start(w);
	for (int i = 0; i < N && rc == MLRT_OK; i++)
		rc = mlrt_iallreduce(w, b[i].p, b[i].p, COUNT, MLRT_F32, MLRT_SUM, &req[i]);
	if (rc == MLRT_OK)
		rc = mlrt_group_end(w);
	for (int i = 0; i < N && rc == MLRT_OK; i++)
		rc = mlrt_wait(req[i]);
	if (rc != MLRT_OK)
		FAILF("grouped device allreduces: %s", mlrt_strerror(rc));
	for (int i = 0; i < N && rc == MLRT_OK; i++) {
		dbuf_get(&b[i], h, 0, COUNT * 4);
		for (size_t k = 0; k < COUNT; k++)
			if (!matches(h, k, MLRT_F32, MLRT_SUM, k)) {
				FAILF("grouped device allreduce %d: wrong result at %zu", i, k);
				break;
			}
	}
	for (int i = 0; i < N; i++)
		dbuf_free(&b[i]);
	free(h);
}

/* Random floats: every rank must get the same bits, and a rerun too. */
static void check_bitwise_agreement(mlrt_ctx *ctx, mlrt_comm *w, size_t count, int round)
{
	float *h = malloc(count * 4 + 4);
	char key[128], val[32];
	uint64_t h1, h2;
	dbuf in, out;
	int rc;

	srand(1234u + (unsigned)rank);
	for (size_t i = 0; i < count; i++)
		h[i] = (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
	dbuf_alloc(&in, count * 4);
	dbuf_alloc(&out, count * 4);
	dbuf_put(&in, h, count * 4);
	rc = mlrt_allreduce(w, in.p, out.p, count, MLRT_F32, MLRT_SUM);
	dbuf_get(&out, h, 0, count * 4);
	h1 = coll_fnv(h, count * 4);
	if (rc == MLRT_OK)
		rc = mlrt_allreduce(w, in.p, out.p, count, MLRT_F32, MLRT_SUM);
	dbuf_get(&out, h, 0, count * 4);
	h2 = coll_fnv(h, count * 4);
	if (rc != MLRT_OK || h1 != h2)
		FAILF("random f32 sum count %zu: %s", count, rc ? mlrt_strerror(rc) : "not repeatable");
	snprintf(key, sizeof(key), "%s/devcheck/%d/%d", mlrt_job_id(ctx), round, rank);
	snprintf(val, sizeof(val), "%016" PRIx64, h1);
	mlrt_store_set(mlrt_ctx_store(ctx), key, val, strlen(val));
	if (mlrt_barrier(w) != MLRT_OK)
		FAILF("barrier after bitwise check");
	for (int r = 0; r < size; r++) {
		void *v = NULL;
		size_t len;

		snprintf(key, sizeof(key), "%s/devcheck/%d/%d", mlrt_job_id(ctx), round, r);
		if (mlrt_store_get(mlrt_ctx_store(ctx), key, &v, &len) != MLRT_OK || strcmp(v, val) != 0)
			FAILF("random f32 sum count %zu: rank %d's bits differ from rank %d's", count, r,
			      rank);
		free(v);
	}
	dbuf_free(&in);
	dbuf_free(&out);
	free(h);
}

static long long wall_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static int spin(mlrt_comm *w, const char *dir)
{
	size_t count = (16u << 20) / 4;
	char path[4096];
	FILE *f;
	dbuf b;

	dbuf_alloc(&b, count * 4);
	cuda_or_die(cudaMemset(b.p, 0, count * 4), "cudaMemset");
	/* One allreduce first, so that the path is set up before the kill. */
	if (mlrt_allreduce(w, b.p, b.p, count, MLRT_F32, MLRT_SUM) != MLRT_OK)
		return 2;
	snprintf(path, sizeof(path), "%s/pid-r%d", dir, rank);
	f = fopen(path, "w");
	if (f == NULL)
		return 2;
	fprintf(f, "%d\n", (int)getpid());
	fclose(f);
	for (;;) {
		int rc = mlrt_allreduce(w, b.p, b.p, count, MLRT_F32, MLRT_SUM);

		if (rc != MLRT_OK) {
			printf("spin: rank %d failed at %lld: %s\n", rank, wall_ms(), mlrt_strerror(rc));
			fflush(stdout);
			return 3;
		}
	}
}

int main(int argc, char **argv)
{
	const mlrt_op ops[] = {MLRT_SUM, MLRT_AVG, MLRT_MIN, MLRT_MAX, MLRT_PROD};
	mlrt_ctx *ctx;
	mlrt_comm *w;
	int ndev = 0, rc;

	if (mlrt_device_count(&ndev) != MLRT_OK)
		ndev = 0;
	if (argc == 2 && strcmp(argv[1], "--count") == 0) {
		printf("%d\n", ndev);
		return 0;
	}
	if (ndev == 0) {
		fprintf(stderr, "dev_check: no CUDA device here: skipped\n");
		return 77;
	}
	/* spin: mlrun stops the survivors with SIGTERM when a rank dies;
	 * they must leave through the collective's error instead. */
	if (argc == 3 && strcmp(argv[1], "spin") == 0)
		signal(SIGTERM, SIG_IGN);
	rc = mlrt_init(&ctx);
	if (rc != MLRT_OK) {
		fprintf(stderr, "dev_check: mlrt_init: %s\n", mlrt_strerror(rc));
		return 2;
	}
	w = mlrt_world(ctx);
	rank = mlrt_rank(ctx);
	size = mlrt_size(ctx);
	cuda_or_die(cudaSetDevice(mlrt_local_rank(ctx) % ndev), "cudaSetDevice");
	if (argc == 3 && strcmp(argv[1], "spin") == 0)
		return spin(w, argv[2]);
	{
		/* The last count spans several 4 MiB staging chunks even as u8. */
		const size_t counts[] = {0, 1, (size_t)size - 1, (size_t)size + 1, 1000 + (size_t)size,
		                         70000 + 3 * (size_t)size, 9000001};
		const size_t nc = sizeof(counts) / sizeof(counts[0]);

		for (int t = 0; t < MLRT_DTYPE_COUNT; t++)
			for (size_t o = 0; o < sizeof(ops) / sizeof(ops[0]); o++)
				for (size_t k = 0; k < nc; k++)
					for (int ip = 0; ip < 2; ip++)
						if (k + 1 < nc || (o == 0 && t != MLRT_F64))
							check_allreduce(w, (mlrt_dtype)t, ops[o], counts[k], ip, 0);
		check_allreduce(w, MLRT_F32, MLRT_SUM, 70001, 0, 1);
		check_allreduce(w, MLRT_F32, MLRT_SUM, 70001, 0, 2);
		check_allreduce(w, MLRT_BF16, MLRT_MAX, 3000001, 0, 1);
		check_allreduce(w, MLRT_BF16, MLRT_MAX, 3000001, 0, 2);
		for (int t = 0; t < MLRT_DTYPE_COUNT; t++)
			for (size_t o = 0; o < sizeof(ops) / sizeof(ops[0]); o++)
				for (size_t k = 0; k < 5; k++)
					check_reduce_scatter(w, (mlrt_dtype)t, ops[o], counts[k] + 3 * k, k % 2);
		check_reduce_scatter(w, MLRT_F32, MLRT_SUM, 1500001, 0);
		check_reduce_scatter(w, MLRT_BF16, MLRT_MAX, 1500001, 1);
		for (int t = 0; t < MLRT_DTYPE_COUNT; t++)
			for (size_t k = 0; k < nc; k++)
				for (int ip = 0; ip < 2; ip++)
					if (k + 1 < nc || t == MLRT_U8 || t == MLRT_F32)
						check_allgather(w, (mlrt_dtype)t, counts[k] / (k + 1 < nc ? 1 : 4),
						                ip);
		for (int root = 0; root < size; root++) {
			check_broadcast(w, MLRT_U8, 0, root);
			check_broadcast(w, MLRT_F16, 13, root);
			check_broadcast(w, MLRT_I64, 100000 + (size_t)root, root);
		}
		check_broadcast(w, MLRT_F32, 3000001, size - 1);
		check_group(w);
		check_bitwise_agreement(ctx, w, 1000, 0);
		check_bitwise_agreement(ctx, w, 5000003, 1);
		for (int i = 0; i < 5; i++)
			if ((rc = mlrt_barrier(w)) != MLRT_OK)
				FAILF("barrier %d: %s", i, mlrt_strerror(rc));
	}
	if (failures == 0 && rank == 0)
		printf("dev_check: %d ranks: all device collectives match the reference\n", size);
	mlrt_finalize(ctx);
	return failures == 0 ? 0 : 1;
}
