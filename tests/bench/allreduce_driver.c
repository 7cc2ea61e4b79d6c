/* The allreduce benchmark's driver (see allreduce_driver.h), in the manner
 * of nccl-tests: float32 sum, out of place, message sizes doubling from
 * -b to -e bytes.  For each size:
 *
 *   1. one checked iteration: every rank sends rank+1, so every element of
 *      the result must be n(n+1)/2 (exact in float32);
 *   2. up to -w untimed warm-up iterations, whose median time (slowest
 *      rank) sets the number of timed iterations;
 *   3. timed iterations, each timed on each rank; at the end the times are
 *      reduced with max across ranks (the slowest rank is the iteration's
 *      time) and the median of those is reported.  Without -n, as many
 *      iterations as fit in -t seconds, at least 5.  The result is checked
 *      again after them.
 *
 * The buffers are allocated once, for the largest size, and touched before
 * any timing: first touch of fresh memory is slow on some VMs and would
 * otherwise be charged to the first large size.  Iteration counts are
 * derived from times agreed across ranks (max), so every rank runs the same
 * number of collectives. */
#include "allreduce_driver.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MIN_TIMED_ITERS 5
#define MAX_TIMED_ITERS 10000
/* Warm-up stops after this much time even when -w allows more. */
#define WARMUP_TARGET_S 0.05

struct ar_opts {
	size_t min_bytes, max_bytes;
	int iters;  /* timed iterations per size; 0: from target_s */
	int warmup; /* most warm-up iterations per size */
	double target_s;
	int device; /* -d: device buffers */
};

static const char usage_text[] =
	"usage: %s [-b MIN] [-e MAX] [-n ITERS] [-w WARMUP] [-t SECONDS] [-d]\n"
	"  -b MIN      smallest message in bytes, K/M/G suffixes allowed (default 4K)\n"
	"  -e MAX      largest message (default 256M); sizes double from MIN\n"
	"  -n ITERS    timed iterations per size (default: as many as fit in -t, at\n"
	"              least %d, at most %d)\n"
	"  -w WARMUP   most untimed warm-up iterations per size, after the checked\n"
	"              one (default 5, fewer where they would take over %.2f s)\n"
	"  -t SECONDS  time to spend on the timed iterations of each size (default 0.3)\n"
	"  -d          send and receive buffers in device (GPU) memory\n"
	"Prints one line per size: size count time_us algbw_GBs busbw_GBs iters\n"
	"rss0_MiB rss_max_MiB.  float32 sum, out of place.\n";

/* Monotonic time in seconds. */
static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Peak resident set of this process so far, in MiB (ru_maxrss is KiB on
 * Linux). */
static double peak_rss_mib(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0.0;
	return (double)ru.ru_maxrss / 1024.0;
}

/* "4096", "4K", "256M", "1G" -> bytes.  Returns 0 or -1 for bad text. */
static int parse_size(const char *s, size_t *out)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *s == '-')
		return -1;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: break;
	}
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end != '\0' || v > (SIZE_MAX >> shift))
		return -1;
	*out = (size_t)v << shift;
	return 0;
}

/* Returns 0, or 2 after printing the usage (rank 0 only) for bad input. */
static int parse_opts(const struct ar_backend *b, int argc, char **argv, struct ar_opts *o)
{
	char *end;
	int ch;

	*o = (struct ar_opts){.min_bytes = 4096, .max_bytes = (size_t)256 << 20, .iters = 0,
			      .warmup = 5, .target_s = 0.3, .device = 0};
	opterr = b->rank == 0;
	while ((ch = getopt(argc, argv, "b:e:n:w:t:dh")) != -1) {
		switch (ch) {
		case 'd':
			if (b->dev_alloc == NULL) {
				if (b->rank == 0)
					fprintf(stderr, "%s: -d: %s has no device memory support\n", argv[0],
						b->name);
				return 2;
			}
			o->device = 1;
			break;
		case 'b':
			if (parse_size(optarg, &o->min_bytes) != 0)
				goto usage;
			break;
		case 'e':
			if (parse_size(optarg, &o->max_bytes) != 0)
				goto usage;
			break;
		case 'n':
			o->iters = (int)strtol(optarg, &end, 10);
			if (*end != '\0' || o->iters < 1 || o->iters > 1000000)
				goto usage;
			break;
		case 'w':
			o->warmup = (int)strtol(optarg, &end, 10);
			if (*end != '\0' || o->warmup < 0 || o->warmup > 1000000)
				goto usage;
			break;
		case 't':
			o->target_s = strtod(optarg, &end);
			if (*end != '\0' || !(o->target_s > 0.0) || o->target_s > 3600.0)
				goto usage;
			break;
		default:
			goto usage;
		}
	}
	if (optind != argc)
		goto usage;
	/* Whole float32 elements, at least one. */
	o->min_bytes = (o->min_bytes + 3) / 4 * 4;
	if (o->min_bytes == 0)
		o->min_bytes = 4;
	if (o->max_bytes < o->min_bytes) {
		if (b->rank == 0)
			fprintf(stderr, "%s: -e %zu is below -b %zu\n", argv[0], o->max_bytes,
				o->min_bytes);
		goto usage;
	}
	return 0;
usage:
	if (b->rank == 0)
		fprintf(stderr, usage_text, argv[0], MIN_TIMED_ITERS, MAX_TIMED_ITERS,
			WARMUP_TARGET_S);
	return 2;
}

static int cmp_double(const void *pa, const void *pb)
{
	double a = *(const double *)pa, b = *(const double *)pb;

	return (a > b) - (a < b);
}

/* Median of v[0..n), n > 0; sorts v. */
static double median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Index of the first element of recv[0..count) that is not want (NaN
 * never is), or count when all are. */
static size_t first_wrong(const float *recv, size_t count, float want)
{
	for (size_t i = 0; i < count; i++)
		if (!(recv[i] == want))
			return i;
	return count;
}

/* Checks recv against want and says on stderr what is wrong, if anything.
 * Returns 1 when wrong, 0 when right. */
static int check_result(const struct ar_backend *b, const float *recv, size_t count,
			float want, const char *when)
{
	size_t i = first_wrong(recv, count, want);

	if (i == count)
		return 0;
	fprintf(stderr,
		"%s allreduce: rank %d: wrong result %s at %zu bytes: element %zu of %zu is %g, "
		"want %g (the sum of rank+1 over %d ranks)\n",
		b->name, b->rank, when, count * sizeof(float), i, count, (double)recv[i],
		(double)want, b->size);
	return 1;
}

/* Says which collective failed, where, on stderr; returns 1 for main. */
static int report_failure(const struct ar_backend *b, const char *what, size_t bytes, int rc)
{
	fprintf(stderr, "%s allreduce: rank %d: %s failed at %zu bytes: %s\n", b->name, b->rank,
		what, bytes, b->strerror(rc));
	return 1;
}

/* With -d: copy the device result d_recv into recv for the check.
 * Returns 0, or 1 with a message. */
static int fetch(const struct ar_backend *b, const struct ar_opts *o, float *recv,
		 const float *d_recv, size_t bytes)
{
	int rc;

	if (!o->device)
		return 0;
	rc = b->dev_get(b->state, recv, d_recv, bytes);
	return rc == 0 ? 0 : report_failure(b, "copy from the device", bytes, rc);
}

/* Warm-up iterations after a checked one that took t0 seconds (slowest
 * rank): up to o->warmup, but no more than fit in WARMUP_TARGET_S, and at
 * least one when o->warmup allows any. */
static int warmup_count(const struct ar_opts *o, double t0)
{
	double fit = t0 > 0.0 ? ceil(WARMUP_TARGET_S / t0) : (double)o->warmup;

	if (o->warmup == 0)
		return 0;
	return fit < 1.0 ? 1 : fit > (double)o->warmup ? o->warmup : (int)fit;
}

/* Timed iterations for an iteration time of t seconds (slowest rank). */
static int timed_count(const struct ar_opts *o, double t)
{
	double fit = t > 0.0 ? ceil(o->target_s / t) : (double)MAX_TIMED_ITERS;

	if (o->iters > 0)
		return o->iters;
	return fit < MIN_TIMED_ITERS ? MIN_TIMED_ITERS
	       : fit > MAX_TIMED_ITERS ? MAX_TIMED_ITERS
				       : (int)fit;
}

/* Makes room for n timings in *times (capacity *cap).  Returns 0, or 1
 * with a message when out of memory. */
static int grow_times(const struct ar_backend *b, double **times, size_t *cap, size_t n)
{
	double *grown;

	if (n <= *cap)
		return 0;
	grown = realloc(*times, n * sizeof(*grown));
	if (grown == NULL) {
		fprintf(stderr, "%s allreduce: rank %d: out of memory for %zu timings\n", b->name,
			b->rank, n);
		return 1;
	}
	*times = grown;
	*cap = n;
	return 0;
}

/* Run n allreduces of count floats back to back, times[i] each one's
 * duration on this rank; a failure is reported and returns nonzero. */
static int time_allreduces(const struct ar_backend *b, const float *send, float *recv,
                           size_t count, double *times, int n)
{
	for (int i = 0; i < n; i++) {
		double t = now_s();
		int rc = b->allreduce_f32_sum(b->state, send, recv, count);

		times[i] = now_s() - t;
		if (rc != 0)
			return report_failure(b, "allreduce", count * sizeof(float), rc);
	}
	return 0;
}

int ar_bench_main(const struct ar_backend *b, int argc, char **argv)
{
	const float want = (float)b->size * (float)(b->size + 1) / 2.0f;
	double busbw_factor = b->size > 1 ? 2.0 * (b->size - 1) / b->size : 0.0;
	double *times = NULL, rss0 = 0.0, rss_max = 0.0;
	size_t top = 0, times_cap = 0;
	float *send = NULL, *recv = NULL, *d_send = NULL, *d_recv = NULL, *c_send, *c_recv;
	struct ar_opts o;
	int rc, status = 1;

	rc = parse_opts(b, argc, argv, &o);
	if (rc != 0)
		return rc;
	for (size_t bytes = o.min_bytes; bytes <= o.max_bytes && bytes <= SIZE_MAX / 2; bytes *= 2)
		top = bytes;
	if (posix_memalign((void **)&send, 64, top) != 0 ||
	    posix_memalign((void **)&recv, 64, top) != 0) {
		fprintf(stderr, "%s allreduce: rank %d: cannot allocate 2 x %zu bytes\n", b->name,
			b->rank, top);
		goto fail;
	}
	for (size_t i = 0; i < top / sizeof(float); i++)
		send[i] = (float)(b->rank + 1);
	memset(recv, 0, top);
	if (o.device) {
		/* The collectives get device buffers; send and recv stay as the
		 * host copies that fill and check them. */
		d_send = b->dev_alloc(b->state, top);
		d_recv = b->dev_alloc(b->state, top);
		if (d_send == NULL || d_recv == NULL)
			goto fail;
		rc = b->dev_put(b->state, d_send, send, top);
		if (rc == 0)
			rc = b->dev_put(b->state, d_recv, recv, top);
		if (rc != 0) {
			report_failure(b, "copy to the device", top, rc);
			goto fail;
		}
	}
	c_send = o.device ? d_send : send;
	c_recv = o.device ? d_recv : recv;

	if (b->rank == 0) {
		printf("# %s allreduce: float32 sum, out of place, %s buffers, %d ranks; time = median "
		       "over the timed iterations of the slowest rank's time\n",
		       b->name, o.device ? "device" : "host", b->size);
		printf("# algbw = size/time, busbw = algbw * 2(n-1)/n, GB = 1e9 bytes; rss0 = rank "
		       "0's peak RSS, rss_max = the largest over ranks (MiB, 2 x %.1f MiB of it "
		       "buffers)\n",
		       (double)top / (1 << 20));
		printf("#%11s %11s %10s %10s %10s %6s %9s %12s\n", "size", "count", "time_us",
		       "algbw_GBs", "busbw_GBs", "iters", "rss0_MiB", "rss_max_MiB");
		fflush(stdout);
	}

	for (size_t bytes = o.min_bytes; bytes <= top; bytes *= 2) {
		size_t count = bytes / sizeof(float);
		double agree[2], t, t_iter, t_med;
		int nw, n, wrong;

		/* recv still holds the previous size's (right) answer: spoil it
		 * (0xff.. is a NaN) so that the check sees this size's result. */
		memset(recv, 0xff, bytes);
		if (o.device && (rc = b->dev_put(b->state, d_recv, recv, bytes)) != 0) {
			report_failure(b, "copy to the device", bytes, rc);
			goto fail;
		}
		rc = b->barrier(b->state);
		if (rc != 0) {
			report_failure(b, "barrier", bytes, rc);
			goto fail;
		}
		t = now_s();
		rc = b->allreduce_f32_sum(b->state, c_send, c_recv, count);
		t = now_s() - t;
		if (rc != 0) {
			report_failure(b, "allreduce", bytes, rc);
			goto fail;
		}
		if (fetch(b, &o, recv, d_recv, bytes) != 0)
			goto fail;
		wrong = check_result(b, recv, count, want, "of the first iteration");
		/* Agree on the time and on whether every rank got it right, so
		 * that all stop together after a wrong result. */
		agree[0] = t;
		agree[1] = wrong;
		rc = b->max_f64(b->state, agree, 2);
		if (rc != 0) {
			report_failure(b, "max of the timings", bytes, rc);
			goto fail;
		}
		if (agree[1] != 0.0) {
			if (b->rank == 0)
				fprintf(stderr, "%s allreduce: wrong result at %zu bytes (see above)\n",
					b->name, bytes);
			goto fail;
		}

		nw = warmup_count(&o, agree[0]);
		t_iter = agree[0];
		if (nw > 0) {
			if (grow_times(b, &times, &times_cap, (size_t)nw) != 0)
				goto fail;
			if (time_allreduces(b, c_send, c_recv, count, times, nw) != 0)
				goto fail;
			/* The median, so that one slow warm-up iteration (a busy
			 * machine) does not cut the timed iterations short. */
			agree[0] = median(times, (size_t)nw);
			agree[1] = 0.0;
			rc = b->max_f64(b->state, agree, 2);
			if (rc != 0) {
				report_failure(b, "max of the timings", bytes, rc);
				goto fail;
			}
			t_iter = agree[0];
		}

		n = timed_count(&o, t_iter);
		if (grow_times(b, &times, &times_cap, (size_t)n + 2) != 0)
			goto fail;
		rc = b->barrier(b->state);
		if (rc != 0) {
			report_failure(b, "barrier", bytes, rc);
			goto fail;
		}
		if (time_allreduces(b, c_send, c_recv, count, times, n) != 0)
			goto fail;
		if (fetch(b, &o, recv, d_recv, bytes) != 0)
			goto fail;
		/* One reduction carries the timings, the peak RSS and whether
		 * the last result was right. */
		rss0 = peak_rss_mib();
		times[n] = rss0;
		times[n + 1] = check_result(b, recv, count, want, "after the timed iterations");
		rc = b->max_f64(b->state, times, (size_t)n + 2);
		if (rc != 0) {
			report_failure(b, "max of the timings", bytes, rc);
			goto fail;
		}
		rss_max = times[n];
		if (times[n + 1] != 0.0) {
			if (b->rank == 0)
				fprintf(stderr, "%s allreduce: wrong result at %zu bytes (see above)\n",
					b->name, bytes);
			goto fail;
		}
		t_med = median(times, (size_t)n);
		if (b->rank == 0) {
			double algbw = t_med > 0.0 ? (double)bytes / t_med / 1e9 : 0.0;

			printf("%12zu %11zu %10.2f %10.3f %10.3f %6d %9.1f %12.1f\n", bytes, count,
			       t_med * 1e6, algbw, algbw * busbw_factor, n, rss0, rss_max);
			fflush(stdout);
		}
	}
	if (b->rank == 0) {
		printf("# peak RSS: rank 0 %.1f MiB, max over ranks %.1f MiB; buffers 2 x %.1f MiB; "
		       "beyond the buffers (max over ranks) %.1f MiB\n",
		       rss0, rss_max, (double)top / (1 << 20),
		       rss_max - 2.0 * (double)top / (1 << 20));
		fflush(stdout);
	}
	status = 0;
fail:
	if (b->dev_free != NULL) {
		b->dev_free(b->state, d_send);
		b->dev_free(b->state, d_recv);
	}
	free(times);
	free(recv);
	free(send);
	return status;
}
