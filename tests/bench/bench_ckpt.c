/* bench_ckpt: checkpoint speed against the plain system calls, in one run.
 * Run under mlrun (bench_ckpt.sh: 4 ranks, 1 GiB of state in all).
 *
 *   write:   mlrt_ckpt_save (synchronous: files, fsync, manifest commit)
 *            against write() + fsync() of the same bytes, one file per rank
 *   restore: mlrt_ckpt_restore (verify every CRC32C, then read into the
 *            buffers) against read() of the plain files; page cache
 *            dropped before each when running as root
 *   stall:   mlrt_ckpt_save in async mode (the time training is blocked)
 *            against memcpy() of the same bytes into a warm buffer
 *
 * Every figure is the slowest rank's, median over --reps rounds (default
 * 5), with the ranks' work in each round started together; ratios are the
 * median of the rounds' ratios.  Each round runs the peer
 * and mlrt back to back (writes in alternating order).
 *
 *   bench_ckpt DIR [--mib-per-rank N] [--reps N] [--tensors N]          */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mlrt/mlrt.h>

static int rank, world;
static mlrt_comm *comm;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench_ckpt: rank %d: %s: %s\n", rank, what,
	        rc < 0 ? mlrt_strerror(rc) : "failed");
	exit(1);
}

/* The slowest rank's time for its part between two barriers. */
static double slowest(double t)
{
	if (mlrt_allreduce(comm, &t, &t, 1, MLRT_F64, MLRT_MAX) != MLRT_OK)
		die("allreduce", -1);
	return t;
}

static void drop_caches(void)
{
	int fd;

	sync();
	mlrt_barrier(comm);
	if (rank == 0 && (fd = open("/proc/sys/vm/drop_caches", O_WRONLY)) >= 0) {
		if (write(fd, "1", 1) != 1)
			perror("drop_caches");
		close(fd);
	}
	mlrt_barrier(comm);
}

static double plain_write(const char *path, char *const *buf, size_t nt, size_t bytes)
{
	double t0;
	int fd;

	unlink(path); /* a fresh file, as a checkpoint step is */
	mlrt_barrier(comm);
	t0 = now();
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die(path, -1);
	for (size_t k = 0; k < nt; k++)
		for (size_t off = 0; off < bytes;) {
			ssize_t n = write(fd, buf[k] + off, bytes - off);

			if (n <= 0)
				die("write", -1);
			off += (size_t)n;
		}
	if (fsync(fd) != 0)
		die("fsync", -1);
	close(fd);
	return slowest(now() - t0);
}

static double plain_read(const char *path, char *const *buf, size_t nt, size_t bytes)
{
	double t0;
	int fd;

	drop_caches();
	t0 = now();
	fd = open(path, O_RDONLY);
	if (fd < 0)
		die(path, -1);
	for (size_t k = 0; k < nt; k++)
		for (size_t off = 0; off < bytes;) {
			ssize_t n = read(fd, buf[k] + off, bytes - off);

			if (n <= 0)
				die("read", -1);
			off += (size_t)n;
		}
	close(fd);
	return slowest(now() - t0);
}

static double copy(char *const *dst, char *const *src, size_t nt, size_t bytes)
{
	double t0;

	mlrt_barrier(comm);
	t0 = now();
	for (size_t k = 0; k < nt; k++)
		memcpy(dst[k], src[k], bytes);
	return slowest(now() - t0);
}

static mlrt_ckpt *open_ck(mlrt_ctx *ctx, const char *dir, int async, char *const *buf,
                          size_t nt, size_t bytes)
{
	mlrt_ckpt_opts o;
	mlrt_ckpt *ck;
	int rc;

	mlrt_ckpt_opts_init(&o);
	o.async = async;
	o.keep = 1;
	if ((rc = mlrt_ckpt_open_opts(ctx, dir, &o, &ck)) != MLRT_OK)
		die("open", rc);
	for (size_t k = 0; k < nt; k++) {
		char name[64];

		snprintf(name, sizeof(name), "layer%zu/weight", k);
		if ((rc = mlrt_ckpt_add(ck, name, buf[k], bytes / 4, MLRT_F32)) != MLRT_OK)
			die("add", rc);
	}
	return ck;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return v[n / 2];
}

int main(int argc, char **argv)
{
	size_t mib = 256, nt = 4, bytes;
	int reps = 5, rc;
	const char *dir;
	char path[4096], sync_dir[4096], async_dir[4096];
	mlrt_ctx *ctx;

	if (argc < 2) {
		fprintf(stderr, "usage: bench_ckpt DIR [--mib-per-rank N] [--reps N] [--tensors N]\n");
		return 2;
	}
	dir = argv[1];
	for (int i = 2; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--mib-per-rank") == 0)
			mib = (size_t)atol(argv[i + 1]);
		else if (strcmp(argv[i], "--reps") == 0)
			reps = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--tensors") == 0)
			nt = (size_t)atol(argv[i + 1]);
		else {
			fprintf(stderr, "bench_ckpt: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (mib == 0 || nt == 0 || reps < 1 || (mib << 20) % nt != 0) {
		fprintf(stderr, "bench_ckpt: want --mib-per-rank, --tensors, --reps >= 1 (tensors "
		                "dividing the bytes)\n");
		return 2;
	}
	if ((rc = mlrt_init(&ctx)) != MLRT_OK)
		die("init", rc);
	rank = mlrt_rank(ctx);
	world = mlrt_size(ctx);
	comm = mlrt_world(ctx);
	bytes = (mib << 20) / nt;

	char **state = calloc(nt, sizeof(*state)), **other = calloc(nt, sizeof(*other));
	for (size_t k = 0; k < nt; k++) {
		state[k] = malloc(bytes);
		other[k] = malloc(bytes);
		if (state[k] == NULL || other[k] == NULL)
			die("malloc", MLRT_ERR_NOMEM);
		for (size_t i = 0; i < bytes; i++)
			state[k][i] = (char)(i * 31 + k + (size_t)rank);
		memset(other[k], 1, bytes);
	}
	snprintf(path, sizeof(path), "%s/plain-r%d", dir, rank);
	snprintf(sync_dir, sizeof(sync_dir), "%s/sync", dir);
	snprintf(async_dir, sizeof(async_dir), "%s/async", dir);
	mlrt_ckpt *ck = open_ck(ctx, sync_dir, 0, state, nt, bytes);
	mlrt_ckpt *ack = open_ck(ctx, async_dir, 1, state, nt, bytes);

	/* Warm-up: the async staging memory is allocated and first touched
	 * by the first async save. */
	if ((rc = mlrt_ckpt_save(ack, 0)) != MLRT_OK || (rc = mlrt_ckpt_wait(ack, NULL)) != MLRT_OK)
		die("warm-up save", rc);

	double *w_plain = calloc((size_t)reps, sizeof(double)), *w_mlrt = calloc((size_t)reps, 8);
	double *r_plain = calloc((size_t)reps, sizeof(double)), *r_mlrt = calloc((size_t)reps, 8);
	double *s_copy = calloc((size_t)reps, sizeof(double)), *s_mlrt = calloc((size_t)reps, 8);
	for (int rep = 0; rep < reps; rep++) {
		double t0;
		int64_t step;

		/* Which of the two writes first alternates, so that neither
		 * always meets the disk right after the other. */
		if (rep % 2 == 0)
			w_plain[rep] = plain_write(path, state, nt, bytes);
		mlrt_barrier(comm);
		t0 = now();
		if ((rc = mlrt_ckpt_save(ck, rep + 1)) != MLRT_OK)
			die("save", rc);
		w_mlrt[rep] = slowest(now() - t0);
		if (rep % 2 == 1)
			w_plain[rep] = plain_write(path, state, nt, bytes);

		r_plain[rep] = plain_read(path, other, nt, bytes);
		drop_caches();
		t0 = now();
		if ((rc = mlrt_ckpt_restore(ck, &step)) != MLRT_OK || step != rep + 1)
			die("restore", rc);
		r_mlrt[rep] = slowest(now() - t0);

		s_copy[rep] = copy(other, state, nt, bytes);
		mlrt_barrier(comm);
		t0 = now();
		if ((rc = mlrt_ckpt_save(ack, rep + 1)) != MLRT_OK)
			die("async save", rc);
		s_mlrt[rep] = slowest(now() - t0);
		if ((rc = mlrt_ckpt_wait(ack, NULL)) != MLRT_OK)
			die("async write", rc);
		if (rank == 0)
			fprintf(stderr, "round %d: write %.2f/%.2f s, read %.2f/%.2f s, stall "
			        "%.1f/%.1f ms (plain/mlrt)\n", rep + 1, w_plain[rep], w_mlrt[rep],
			        r_plain[rep], r_mlrt[rep], s_copy[rep] * 1e3, s_mlrt[rep] * 1e3);
	}
	if (rank == 0) {
		double *wr = calloc((size_t)reps, sizeof(double)), *rr = calloc((size_t)reps, 8);
		double *sr = calloc((size_t)reps, sizeof(double));

		/* The disk's speed drifts between rounds: the ratio is the
		 * median of each round's ratio. */
		for (int i = 0; i < reps; i++) {
			wr[i] = w_plain[i] / w_mlrt[i];
			rr[i] = r_plain[i] / r_mlrt[i];
			sr[i] = s_mlrt[i] / s_copy[i];
		}
		double gb = (double)(mib << 20) * world / 1e9;
		double wp = gb / median(w_plain, reps), wm = gb / median(w_mlrt, reps);
		double rp = gb / median(r_plain, reps), rm = gb / median(r_mlrt, reps);
		double sc = median(s_copy, reps), sm = median(s_mlrt, reps);

		printf("# checkpoint of %.2f GB over %d ranks (%zu tensors of %zu MiB each), "
		       "median of %d rounds%s\n", gb, world, nt, bytes >> 20, reps,
		       access("/proc/sys/vm/drop_caches", W_OK) == 0 ? ", cold page cache for reads"
		                                                     : ", warm page cache (not root)");
		printf("write:   mlrt %.3f GB/s   write()+fsync() %.3f GB/s   ratio %.2f (target >= 0.90)\n",
		       wm, wp, median(wr, reps));
		printf("restore: mlrt %.3f GB/s   read() %.3f GB/s   ratio %.2f (mlrt also verifies every CRC32C)\n",
		       rm, rp, median(rr, reps));
		printf("stall:   mlrt async save %.1f ms   memcpy %.1f ms   ratio %.2f (target <= 2.00)\n",
		       sm * 1e3, sc * 1e3, median(sr, reps));
	}
	unlink(path);
	mlrt_ckpt_close(ack);
	mlrt_ckpt_close(ck);
	mlrt_finalize(ctx);
	return 0;
}
