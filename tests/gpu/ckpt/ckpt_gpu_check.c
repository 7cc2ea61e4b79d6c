/* ckpt_gpu_check: checkpoints of device memory, for tests/gpu/ckpt/ckpt.sh.
 *
 *   ckpt_gpu_check probe                  exit 77 (reason on stderr) when
 *                                         no CUDA device can be used
 *   ckpt_gpu_check save DIR sync|async    saves steps 1, 2 and 3 of three
 *                                         device buffers (per-rank f32,
 *                                         replicated f64, a shard of an
 *                                         f32 tensor) and a host one; in
 *                                         async mode each buffer is
 *                                         overwritten as soon as the save
 *                                         returns, so the files must hold
 *                                         the values of the moment of the
 *                                         call
 *   ckpt_gpu_check restore DIR N sync|async
 *                                         fills the buffers with a
 *                                         sentinel, restores, and checks
 *                                         that step N came back bit for
 *                                         bit, on the device and the host
 *   ckpt_gpu_check none DIR sync|async    restore must give
 *                                         MLRT_ERR_NOT_FOUND and leave
 *                                         every buffer at the sentinel
 *
 * Each rank uses device local_rank % device_count.  Prints "<mode>: rank R
 * ok" on success, exits 1 with the reason otherwise. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include <mlrt/mlrt.h>

#define N_RANK ((1u << 20) + 3) /* f32 per rank: not a multiple of anything */
#define N_REP 4099u             /* f64, replicated */
#define SHARD_PER_RANK 1000     /* f32 shard; rank 0 gets 7 more */
#define N_HOST 513u             /* i32, host memory, per rank */
#define SENTINEL 0xa5

static int rank = -1, world;

#define CHECK(cond, ...)                                                                         \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "ckpt_gpu_check: rank %d: ", rank);                      \
			fprintf(stderr, __VA_ARGS__);                                            \
			fputc('\n', stderr);                                                     \
			exit(1);                                                                 \
		}                                                                                \
	} while (0)

#define CUDA(call)                                                                               \
	do {                                                                                     \
		cudaError_t e_ = (call);                                                         \
		CHECK(e_ == cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));               \
	} while (0)

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The value element i of buffer `which` holds at step (owner: the rank,
 * or -1 for data that is the same on every rank). */
static uint64_t value(int64_t step, int owner, int which, uint64_t i)
{
	return mix(mix((uint64_t)step * 1000003u + (uint64_t)(owner + 1)) ^ mix(which) ^ i);
}

struct bufs {
	size_t shard_lo, shard_n, shard_global;
	float *d_rank, *d_shard;
	double *d_rep;
	int32_t *host;
	/* Host images of what the device buffers should hold. */
	float *h_rank, *h_shard;
	double *h_rep;
};

static void layout(struct bufs *b)
{
	b->shard_global = (size_t)world * SHARD_PER_RANK + 7;
	b->shard_n = SHARD_PER_RANK + (rank == 0 ? 7 : 0);
	b->shard_lo = rank == 0 ? 0 : (size_t)rank * SHARD_PER_RANK + 7;
}

static void alloc_bufs(struct bufs *b)
{
	layout(b);
	CUDA(cudaMalloc((void **)&b->d_rank, N_RANK * sizeof(float)));
	CUDA(cudaMalloc((void **)&b->d_rep, N_REP * sizeof(double)));
	CUDA(cudaMalloc((void **)&b->d_shard, b->shard_n * sizeof(float)));
	b->host = malloc(N_HOST * sizeof(int32_t));
	b->h_rank = malloc(N_RANK * sizeof(float));
	b->h_rep = malloc(N_REP * sizeof(double));
	b->h_shard = malloc(b->shard_n * sizeof(float));
	CHECK(b->host && b->h_rank && b->h_rep && b->h_shard, "out of host memory");
}

/* The host images (and the host buffer itself) of step. */
static void expected(struct bufs *b, int64_t step)
{
	for (uint64_t i = 0; i < N_RANK; i++)
		b->h_rank[i] = (float)(value(step, rank, 0, i) >> 40) * 0.25f;
	for (uint64_t i = 0; i < N_REP; i++)
		b->h_rep[i] = (double)(value(step, -1, 1, i) >> 11) * 0x1p-20;
	for (uint64_t i = 0; i < b->shard_n; i++)
		b->h_shard[i] = (float)(value(step, -1, 2, b->shard_lo + i) >> 40) - 8388608.0f;
}

static void fill_step(struct bufs *b, int64_t step)
{
	expected(b, step);
	for (uint64_t i = 0; i < N_HOST; i++)
		b->host[i] = (int32_t)value(step, rank, 3, i);
	CUDA(cudaMemcpy(b->d_rank, b->h_rank, N_RANK * sizeof(float), cudaMemcpyHostToDevice));
	CUDA(cudaMemcpy(b->d_rep, b->h_rep, N_REP * sizeof(double), cudaMemcpyHostToDevice));
	CUDA(cudaMemcpy(b->d_shard, b->h_shard, b->shard_n * sizeof(float),
	                cudaMemcpyHostToDevice));
}

static void fill_sentinel(struct bufs *b)
{
	CUDA(cudaMemset(b->d_rank, SENTINEL, N_RANK * sizeof(float)));
	CUDA(cudaMemset(b->d_rep, SENTINEL, N_REP * sizeof(double)));
	CUDA(cudaMemset(b->d_shard, SENTINEL, b->shard_n * sizeof(float)));
	memset(b->host, SENTINEL, N_HOST * sizeof(int32_t));
	CUDA(cudaDeviceSynchronize());
}

/* Every byte of n at d (device) equals want's. */
static void check_device(const void *d, const void *want, size_t n, const char *name)
{
	unsigned char *got = malloc(n);

	CHECK(got != NULL, "out of host memory");
	CUDA(cudaMemcpy(got, d, n, cudaMemcpyDeviceToHost));
	for (size_t i = 0; i < n; i++)
		CHECK(got[i] == ((const unsigned char *)want)[i],
		      "%s: byte %zu of %zu is %02x, want %02x", name, i, n, got[i],
		      ((const unsigned char *)want)[i]);
	free(got);
}

static void check_step(struct bufs *b, int64_t step)
{
	expected(b, step);
	check_device(b->d_rank, b->h_rank, N_RANK * sizeof(float), "dev_rank");
	check_device(b->d_rep, b->h_rep, N_REP * sizeof(double), "dev_rep");
	check_device(b->d_shard, b->h_shard, b->shard_n * sizeof(float), "dev_shard");
	for (uint64_t i = 0; i < N_HOST; i++)
		CHECK(b->host[i] == (int32_t)value(step, rank, 3, i), "host_rank[%" PRIu64 "]", i);
}

static void check_sentinel(struct bufs *b)
{
	size_t n = N_RANK * sizeof(float);
	unsigned char *s = malloc(n);

	CHECK(s != NULL, "out of host memory");
	memset(s, SENTINEL, n);
	check_device(b->d_rank, s, N_RANK * sizeof(float), "dev_rank (untouched)");
	check_device(b->d_rep, s, N_REP * sizeof(double), "dev_rep (untouched)");
	check_device(b->d_shard, s, b->shard_n * sizeof(float), "dev_shard (untouched)");
	CHECK(memcmp(b->host, s, N_HOST * sizeof(int32_t)) == 0, "host_rank was touched");
	free(s);
}

static mlrt_ckpt *open_ck(mlrt_ctx *ctx, const char *dir, int async, struct bufs *b,
                          int64_t *step)
{
	int64_t gshape[1] = {(int64_t)b->shard_global}, off[1] = {(int64_t)b->shard_lo},
		shape[1] = {(int64_t)b->shard_n};
	mlrt_ckpt_opts o;
	mlrt_ckpt *ck;
	int rc;

	mlrt_ckpt_opts_init(&o);
	o.async = async;
	o.keep = 0; /* the test damages older steps */
	o.timeout_ms = 60000;
	rc = mlrt_ckpt_open_opts(ctx, dir, &o, &ck);
	CHECK(rc == MLRT_OK, "open %s: %s", dir, mlrt_strerror(rc));
	rc = mlrt_ckpt_add(ck, "dev_rank", b->d_rank, N_RANK, MLRT_F32);
	CHECK(rc == MLRT_OK, "add dev_rank: %s", mlrt_strerror(rc));
	rc = mlrt_ckpt_add_replicated(ck, "dev_rep", b->d_rep, N_REP, MLRT_F64);
	CHECK(rc == MLRT_OK, "add dev_rep: %s", mlrt_strerror(rc));
	rc = mlrt_ckpt_add_shard(ck, "dev_shard", b->d_shard, MLRT_F32, 1, gshape, off, shape);
	CHECK(rc == MLRT_OK, "add dev_shard: %s", mlrt_strerror(rc));
	rc = mlrt_ckpt_add(ck, "host_rank", b->host, N_HOST, MLRT_I32);
	CHECK(rc == MLRT_OK, "add host_rank: %s", mlrt_strerror(rc));
	rc = mlrt_ckpt_add_meta(ck, "step", step, 1, MLRT_I64);
	CHECK(rc == MLRT_OK, "add step: %s", mlrt_strerror(rc));
	/* Metadata must stay in host memory: a device pointer is refused. */
	rc = mlrt_ckpt_add_meta(ck, "bad_meta", b->d_rep, 1, MLRT_F64);
	CHECK(rc == MLRT_ERR_INVALID, "device metadata: %s, want invalid", mlrt_strerror(rc));
	return ck;
}

static int parse_mode(const char *s)
{
	if (strcmp(s, "sync") == 0)
		return 0;
	if (strcmp(s, "async") == 0)
		return 1;
	fprintf(stderr, "ckpt_gpu_check: mode %s: want sync or async\n", s);
	exit(2);
}

int main(int argc, char **argv)
{
	struct bufs b = {0};
	mlrt_ctx *ctx;
	mlrt_ckpt *ck;
	int64_t step = -1, got = -1;
	int ndev = 0, rc, async;

	if (argc < 2) {
		fprintf(stderr, "usage: ckpt_gpu_check probe | save DIR MODE | restore DIR N MODE | "
		                "none DIR MODE\n");
		return 2;
	}
	if (mlrt_device_count(&ndev) != MLRT_OK || ndev == 0) {
		fprintf(stderr, "ckpt_gpu_check: no CUDA device here: skipped\n");
		return 77;
	}
	if (strcmp(argv[1], "probe") == 0)
		return 0;
	if (argc < 4 || (strcmp(argv[1], "restore") == 0 && argc < 5)) {
		fprintf(stderr, "ckpt_gpu_check: %s: missing arguments\n", argv[1]);
		return 2;
	}
	async = parse_mode(argv[argc - 1]);
	rc = mlrt_init(&ctx);
	if (rc != MLRT_OK) {
		fprintf(stderr, "ckpt_gpu_check: mlrt_init: %s\n", mlrt_strerror(rc));
		return 1;
	}
	rank = mlrt_rank(ctx);
	world = mlrt_size(ctx);
	CUDA(cudaSetDevice(mlrt_local_rank(ctx) % ndev));
	alloc_bufs(&b);
	ck = open_ck(ctx, argv[2], async, &b, &step);

	if (strcmp(argv[1], "save") == 0) {
		for (step = 1; step <= 3; step++) {
			fill_step(&b, step);
			rc = mlrt_ckpt_save(ck, step);
			CHECK(rc == MLRT_OK, "save %" PRId64 ": %s", step, mlrt_strerror(rc));
			/* The snapshot is taken: what happens to the buffers now
			 * must not reach the files. */
			fill_sentinel(&b);
		}
		rc = mlrt_ckpt_wait(ck, &got);
		CHECK(rc == MLRT_OK && got == 3, "wait: %s, committed %" PRId64, mlrt_strerror(rc),
		      got);
	} else if (strcmp(argv[1], "restore") == 0) {
		int64_t want = strtoll(argv[3], NULL, 10);

		fill_sentinel(&b);
		rc = mlrt_ckpt_restore(ck, &got);
		CHECK(rc == MLRT_OK, "restore: %s", mlrt_strerror(rc));
		CHECK(got == want && step == want, "restored step %" PRId64 " (meta %" PRId64
		      "), want %" PRId64, got, step, want);
		check_step(&b, want);
	} else if (strcmp(argv[1], "none") == 0) {
		fill_sentinel(&b);
		rc = mlrt_ckpt_restore(ck, &got);
		CHECK(rc == MLRT_ERR_NOT_FOUND, "restore of damaged steps: %s, want not found",
		      mlrt_strerror(rc));
		check_sentinel(&b);
	} else {
		CHECK(0, "unknown mode %s", argv[1]);
	}
	rc = mlrt_ckpt_close(ck);
	CHECK(rc == MLRT_OK, "close: %s", mlrt_strerror(rc));
	printf("%s: rank %d ok\n", argv[1], rank);
	fflush(stdout);
	cudaFree(b.d_rank);
	cudaFree(b.d_rep);
	cudaFree(b.d_shard);
	free(b.host);
	free(b.h_rank);
	free(b.h_rep);
	free(b.h_shard);
	rc = mlrt_finalize(ctx);
	return rc == MLRT_OK ? 0 : 1;
}
