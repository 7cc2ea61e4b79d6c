/* Helpers the example programs share (example.h). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "example.h"

int arg_int(const char *prog, const char *opt, const char *s, int64_t lo, int64_t hi,
            int64_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (end == s || *end != '\0' || errno != 0 || v < lo || v > hi) {
		fprintf(stderr, "%s: --%s: '%s' is not an integer in [%" PRId64 ", %" PRId64 "]\n",
		        prog, opt, s, lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

int arg_real(const char *prog, const char *opt, const char *s, double lo, double hi,
             int lo_ok, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0' || errno != 0 || !isfinite(v) || v < lo || v >= hi ||
	    (!lo_ok && v == lo)) {
		fprintf(stderr, "%s: --%s: '%s' is not a number in %c%g, %g)\n", prog, opt, s,
		        lo_ok ? '[' : '(', lo, hi);
		return -1;
	}
	*out = v;
	return 0;
}

double example_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int example_serve(mlrt_ctx *ctx, const char *prog)
{
	int rc = mlrt_ps_serve(ctx);

	if (rc != MLRT_OK)
		fprintf(stderr, "%s: server %d: %s\n", prog, mlrt_rank(ctx), mlrt_strerror(rc));
	if (mlrt_finalize(ctx) != MLRT_OK && rc == MLRT_OK)
		rc = MLRT_ERR_INTERNAL;
	return rc == MLRT_OK ? 0 : 1;
}
