/* bench_gpu_ckpt: checkpoints of device memory, against the disk's own
 * speed, in one run (one process, a world of one).
 *
 * 8 GiB of device buffers (8 x 1 GiB) are registered with an async
 * mlrt_ckpt.  Each round measures
 *   stall:  mlrt_ckpt_save until it returns (what training waits for:
 *           the copy device -> pinned staging)
 *   commit: mlrt_ckpt_save until mlrt_ckpt_wait returns (the step is
 *           written, fsynced and its manifest committed)
 *   plain:  write() + fsync() of the same bytes from pinned host memory
 *           into a fresh file in the same directory
 * and prints the medians, the ratios and the reference and
 * targets: PyTorch's dcp.async_save stalled 6.25 s on 8 GiB; targets
 * stall <= 0.5 s for 8 GiB and commit throughput >= 0.9x plain.
 *
 *   bench_gpu_ckpt DIR    (gpu_ckpt.sh makes DIR in BENCH_GPU_CKPT_DIR and
 *                         removes it)
 *
 * Environment: BENCH_GPU_CKPT_GIB (default 8), BENCH_GPU_CKPT_ROUNDS
 * (default 2), BENCH_GPU_CKPT_BUDGET_S (default 100: no round is started
 * that would, at the pace of the longest so far, end later than that after
 * the start; the medians are those of the rounds done, at least one).  At
 * 8 GiB a round writes 16 GiB with fsync, about 15 s at 1.1 GB/s, and the
 * setup pins 16 GiB of host memory: tests/gpu/run.sh gives a check 180 s.
 * Exit 77 without a GPU or without room in DIR for two copies of the data
 * (ROOM_COPIES). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include <mlrt/mlrt.h>

#define NBUF 8
#define REF_STALL_S 6.25  /* PyTorch dcp.async_save on 8 GiB */
#define TARGET_STALL_S 0.5 /* for 8 GiB */
#define TARGET_RATIO 0.9
#define MAX_ROUNDS 20
/* Copies of the data on disk at once, at most two (keep = 1): while a step
 * is saved, the one before it, still committed (the writer removes it after
 * the new one commits, before mlrt_ckpt_wait returns, ckpt/ckpt.c
 * writer_main); the plain file is written while one step alone is on disk
 * and removed at once.  The 0.2 covers the files' metadata and the
 * filesystem's own. */
#define ROOM_COPIES 2.2

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const char *why)
{
	fprintf(stderr, "bench_gpu_ckpt: %s: %s\n", what, why);
	exit(1);
}

#define CUDA(call)                                                                               \
	do {                                                                                     \
		cudaError_t e_ = (call);                                                         \
		if (e_ != cudaSuccess)                                                           \
			die(#call, cudaGetErrorString(e_));                                      \
	} while (0)

#define MLRT(call)                                                                               \
	do {                                                                                     \
		int rc_ = (call);                                                                \
		if (rc_ != MLRT_OK)                                                              \
			die(#call, mlrt_strerror(rc_));                                          \
	} while (0)

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
	double s[MAX_ROUNDS];

	memcpy(s, v, (size_t)n * sizeof(*v));
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* write() + fsync() of n bytes at p into a new file path; seconds. */
static double plain_write(const char *path, const char *p, size_t n)
{
	double t0 = now(), t;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		die(path, strerror(errno));
	for (size_t done = 0; done < n;) {
		size_t chunk = n - done < ((size_t)1 << 30) ? n - done : ((size_t)1 << 30);
		ssize_t w = write(fd, p + done, chunk);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die(path, w < 0 ? strerror(errno) : "short write");
		done += (size_t)w;
	}
	if (fsync(fd) != 0)
		die(path, strerror(errno));
	t = now() - t0;
	close(fd);
	unlink(path);
	return t;
}

static double env_num(const char *name, double def, double lo, double hi)
{
	const char *s = getenv(name);
	char *end;
	double v;

	if (s == NULL || s[0] == '\0')
		return def;
	v = strtod(s, &end);
	if (*end != '\0' || !(v >= lo && v <= hi)) {
		fprintf(stderr, "bench_gpu_ckpt: %s=%s: want a number in [%g, %g]\n", name, s, lo,
		        hi);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	double gib = env_num("BENCH_GPU_CKPT_GIB", 8, 0.001, 64);
	int rounds = (int)env_num("BENCH_GPU_CKPT_ROUNDS", 2, 1, MAX_ROUNDS);
	double budget = env_num("BENCH_GPU_CKPT_BUDGET_S", 100, 1, 86400);
	double t_start = now(), longest = 0, dt;
	const char *dir = argc == 2 ? argv[1] : NULL;
	double stall[MAX_ROUNDS], commit[MAX_ROUNDS], plain[MAX_ROUNDS];
	double t0, t_reg, ms_stall, ms_commit, ms_plain, target_stall;
	char ckdir[4200], plainpath[4200];
	size_t per, total;
	void *dev[NBUF];
	char *pinned;
	uint64_t x = 0x243f6a8885a308d3ull;
	struct statvfs vfs;
	struct cudaDeviceProp prop;
	mlrt_ckpt_opts o;
	mlrt_ckpt *ck;
	mlrt_ctx *ctx;
	int ndev = 0, ran = 0;

	if (dir == NULL) {
		fprintf(stderr, "usage: bench_gpu_ckpt DIR\n");
		return 2;
	}
	if (mlrt_device_count(&ndev) != MLRT_OK || ndev == 0) {
		fprintf(stderr, "bench_gpu_ckpt: no CUDA device here: skipped\n");
		return 77;
	}
	per = ((size_t)(gib * (double)(1u << 30)) / NBUF) & ~(size_t)4095;
	total = per * NBUF;
	if (statvfs(dir, &vfs) != 0)
		die(dir, strerror(errno));
	if ((double)vfs.f_bavail * (double)vfs.f_frsize < ROOM_COPIES * (double)total) {
		fprintf(stderr, "bench_gpu_ckpt: %s has %.1f GiB free; %.1f GiB needed: skipped "
		                "(set BENCH_GPU_CKPT_DIR or BENCH_GPU_CKPT_GIB)\n", dir,
		        (double)vfs.f_bavail * (double)vfs.f_frsize / (1u << 30),
		        ROOM_COPIES * (double)total / (1u << 30));
		return 77;
	}
	snprintf(ckdir, sizeof(ckdir), "%s/ck", dir);
	snprintf(plainpath, sizeof(plainpath), "%s/plain.bin", dir);

	MLRT(mlrt_init(&ctx));
	CUDA(cudaSetDevice(0));
	CUDA(cudaGetDeviceProperties(&prop, 0));
	/* The same bytes on the device and in the plain write's buffer:
	 * pseudo-random, so no layer below can shortcut them. */
	CUDA(cudaHostAlloc((void **)&pinned, total, cudaHostAllocDefault));
	for (size_t i = 0; i + 8 <= total; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(pinned + i, &x, 8);
	}
	for (int b = 0; b < NBUF; b++) {
		CUDA(cudaMalloc(&dev[b], per));
		CUDA(cudaMemcpy(dev[b], pinned + (size_t)b * per, per, cudaMemcpyHostToDevice));
	}
	printf("# gpu_ckpt: %d buffers x %.3f GiB = %.2f GiB on device 0 (%s), async mlrt_ckpt, "
	       "up to %d rounds within %.0f s, in %s\n", NBUF, (double)per / (1u << 30),
	       (double)total / (1u << 30), prop.name, rounds, budget, dir);

	mlrt_ckpt_opts_init(&o);
	o.async = 1;
	o.keep = 1;
	MLRT(mlrt_ckpt_open_opts(ctx, ckdir, &o, &ck));
	t0 = now();
	for (int b = 0; b < NBUF; b++) {
		char name[32];

		snprintf(name, sizeof(name), "layer%d", b);
		MLRT(mlrt_ckpt_add(ck, name, dev[b], per / sizeof(float), MLRT_F32));
	}
	t_reg = now() - t0;
	printf("# registration (pins %.2f GiB of staging, once): %.2f s\n",
	       (double)total / (1u << 30), t_reg);
	printf("%-6s %10s %10s %10s\n", "round", "stall_s", "commit_s", "plain_s");
	for (int r = 0; r < rounds; r++) {
		double t_round = now();

		/* Alternate which goes first, so neither always finds the
		 * disk's cache state left by the other. */
		if (r % 2 == 1)
			plain[r] = plain_write(plainpath, pinned, total);
		CUDA(cudaDeviceSynchronize());
		t0 = now();
		MLRT(mlrt_ckpt_save(ck, r + 1));
		stall[r] = now() - t0;
		MLRT(mlrt_ckpt_wait(ck, NULL));
		commit[r] = now() - t0;
		if (r % 2 == 0)
			plain[r] = plain_write(plainpath, pinned, total);
		printf("%-6d %10.3f %10.3f %10.3f\n", r + 1, stall[r], commit[r], plain[r]);
		fflush(stdout);
		ran = r + 1;
		dt = now() - t_round;
		if (dt > longest)
			longest = dt;
		if (ran < rounds && now() - t_start + longest > budget) {
			printf("# %d of %d rounds: another would end past the %.0f s budget "
			       "(BENCH_GPU_CKPT_BUDGET_S; %.0f s so far, up to %.0f s a round)\n",
			       ran, rounds, budget, now() - t_start, longest);
			break;
		}
	}
	MLRT(mlrt_ckpt_close(ck));

	ms_stall = median(stall, ran);
	ms_commit = median(commit, ran);
	ms_plain = median(plain, ran);
	target_stall = TARGET_STALL_S * (double)total / (8.0 * (1u << 30));
	printf("median stall (async mlrt_ckpt_save returns): %.3f s for %.2f GiB "
	       "(%.1f GB/s device -> pinned host)\n",
	       ms_stall, (double)total / (1u << 30), (double)total / ms_stall / 1e9);
	printf("median commit (until mlrt_ckpt_wait): %.3f s = %.2f GB/s; plain write()+fsync(): "
	       "%.3f s = %.2f GB/s\n",
	       ms_commit, (double)total / ms_commit / 1e9, ms_plain, (double)total / ms_plain / 1e9);
	printf("reference: PyTorch dcp.async_save stalled %.2f s on 8 GiB; mlrt's stall is %.1fx "
	       "shorter%s\n", REF_STALL_S, REF_STALL_S * (double)total / (8.0 * (1u << 30)) / ms_stall,
	       total == ((size_t)8 << 30) ? "" : " (reference scaled to this size)");
	printf("target stall <= %.3f s: %.3f s %s\n", target_stall, ms_stall,
	       ms_stall <= target_stall ? "met" : "MISSED");
	printf("target commit throughput >= %.2fx plain: %.2fx %s\n", TARGET_RATIO,
	       ms_plain / ms_commit, ms_plain / ms_commit >= TARGET_RATIO ? "met" : "MISSED");

	for (int b = 0; b < NBUF; b++)
		cudaFree(dev[b]);
	cudaFreeHost(pinned);
	MLRT(mlrt_finalize(ctx));
	return 0;
}
