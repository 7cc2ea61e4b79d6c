/* report_check: a worker for tests/mp/metrics.sh.
 *
 *   report_check               every rank reports "loss" = 0.5 + rank +
 *                              0.25 * step for steps 0..2 and "accuracy" =
 *                              0.1 at step 7, checks the store holds its
 *                              newest values, checks that bad names and
 *                              values give MLRT_ERR_INVALID, and prints
 *                              "report_check: rank R: ok"
 *   report_check name NAME     report NAME = 1 at step 0; exit 0 when
 *                              mlrt_report returns MLRT_OK, else print
 *                              "report_check: rank R: <error>" and exit 3 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mlrt/mlrt.h>

static int check_store(mlrt_ctx *ctx, const char *name, const char *want)
{
	char key[512];
	void *val = NULL;
	size_t len = 0;
	int rc;

	snprintf(key, sizeof(key), "%s/metrics/%d/%s", mlrt_job_id(ctx), mlrt_rank(ctx), name);
	rc = mlrt_store_get(mlrt_ctx_store(ctx), key, &val, &len);
	if (rc != MLRT_OK) {
		fprintf(stderr, "report_check: get %s: %s\n", key, mlrt_strerror(rc));
		return 1;
	}
	if (len != strlen(want) || memcmp(val, want, len) != 0) {
		fprintf(stderr, "report_check: %s holds '%s', want '%s'\n", key, (char *)val, want);
		free(val);
		return 1;
	}
	free(val);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *what, *name;
		double value;
	} bad[] = {
		{"NULL name", NULL, 1.0},
		{"empty name", "", 1.0},
		{"name with a space", "bad name", 1.0},
		{"name with '='", "a=b", 1.0},
		{"name with a tab", "a\tb", 1.0},
		{"name with a newline", "a\nb", 1.0},
		{"NaN", "loss", NAN},
		{"+inf", "loss", INFINITY},
		{"-inf", "loss", -INFINITY},
	};
	char want[64], longname[MLRT_METRIC_NAME_MAX + 2];
	mlrt_ctx *ctx;
	int rc, rank;

	rc = mlrt_init(&ctx);
	if (rc != MLRT_OK) {
		fprintf(stderr, "report_check: mlrt_init: %s\n", mlrt_strerror(rc));
		return 2;
	}
	rank = mlrt_rank(ctx);
	if (argc >= 3 && strcmp(argv[1], "name") == 0) {
		rc = mlrt_report(ctx, argv[2], 1.0, 0);
		if (rc != MLRT_OK) {
			printf("report_check: rank %d: %s\n", rank, mlrt_strerror(rc));
			fflush(stdout);
			mlrt_finalize(ctx);
			return 3;
		}
		return mlrt_finalize(ctx) == MLRT_OK ? 0 : 2;
	}
	if (mlrt_ctx_store(ctx) == NULL) {
		fprintf(stderr, "report_check: no store; run under mlrun\n");
		return 2;
	}
	for (int step = 0; step < 3; step++) {
		rc = mlrt_report(ctx, "loss", 0.5 + rank + 0.25 * step, step);
		if (rc != MLRT_OK) {
			fprintf(stderr, "report_check: report loss: %s\n", mlrt_strerror(rc));
			return 1;
		}
	}
	rc = mlrt_report(ctx, "accuracy", 0.1, 7);
	if (rc != MLRT_OK) {
		fprintf(stderr, "report_check: report accuracy: %s\n", mlrt_strerror(rc));
		return 1;
	}
	snprintf(want, sizeof(want), "2 %.17g", 0.5 + rank + 0.5);
	if (check_store(ctx, "loss", want) != 0 ||
	    check_store(ctx, "accuracy", "7 0.10000000000000001") != 0)
		return 1;

	rc = mlrt_report(NULL, "x", 1.0, 0);
	if (rc != MLRT_ERR_INVALID) {
		fprintf(stderr, "report_check: NULL ctx gave %s\n", mlrt_strerror(rc));
		return 1;
	}
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	rc = mlrt_report(ctx, longname, 1.0, 0);
	if (rc != MLRT_ERR_INVALID) {
		fprintf(stderr, "report_check: a %zu-byte name gave %s, want %s\n",
		        strlen(longname), mlrt_strerror(rc), mlrt_strerror(MLRT_ERR_INVALID));
		return 1;
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		rc = mlrt_report(ctx, bad[i].name, bad[i].value, 99);
		if (rc != MLRT_ERR_INVALID) {
			fprintf(stderr, "report_check: %s gave %s, want %s\n", bad[i].what,
			        mlrt_strerror(rc), mlrt_strerror(MLRT_ERR_INVALID));
			return 1;
		}
	}
	/* A refused report leaves the stored value alone. */
	if (check_store(ctx, "loss", want) != 0)
		return 1;
	rc = mlrt_barrier(mlrt_world(ctx));
	if (rc != MLRT_OK) {
		fprintf(stderr, "report_check: barrier: %s\n", mlrt_strerror(rc));
		return 1;
	}
	printf("report_check: rank %d: ok\n", rank);
	return mlrt_finalize(ctx) == MLRT_OK ? 0 : 1;
}
