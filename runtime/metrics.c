/* mlrt_report: metrics to the store and to MLRT_METRICS_FILE. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mlrt/metrics.h>
#include <mlrt/store.h>

#include "runtime/common.h"
#include "runtime/env.h"

/* "<name>=<%.17g> step=<int64> rank=<int>\n": a %.17g double takes at
 * most 24 characters, an int64 20, an int 11. */
#define LINE_MAX_BYTES (MLRT_METRIC_NAME_MAX + 96)

static int check_name(const char *name)
{
	size_t len;

	if (name == NULL || name[0] == '\0') {
		mlrt_log(MLRT_LOG_ERROR, "metrics: empty metric name");
		return MLRT_ERR_INVALID;
	}
	len = strnlen(name, MLRT_METRIC_NAME_MAX + 1);
	if (len > MLRT_METRIC_NAME_MAX) {
		mlrt_log(MLRT_LOG_ERROR, "metrics: metric name '%.32s...' is longer than %d bytes",
		         name, MLRT_METRIC_NAME_MAX);
		return MLRT_ERR_INVALID;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		/* Printable ASCII but space, which separates fields of the
		 * file's lines, and '=', which ends the name in them. */
		if (c <= ' ' || c > '~' || c == '=') {
			mlrt_log(MLRT_LOG_ERROR, "metrics: metric name '%s' has character 0x%02x at "
			                         "offset %zu; use printable ASCII without spaces or '='",
			         name, c, i);
			return MLRT_ERR_INVALID;
		}
	}
	return MLRT_OK;
}

static int report_store(mlrt_ctx *ctx, mlrt_store *st, const char *name, double value,
                        int64_t step)
{
	char key[MLRTI_JOB_MAX + MLRT_METRIC_NAME_MAX + 32], val[64];
	int n, rc;

	snprintf(key, sizeof(key), "%s/metrics/%d/%s", mlrt_job_id(ctx), mlrt_rank(ctx), name);
	n = snprintf(val, sizeof(val), "%" PRId64 " %.17g", step, value);
	rc = mlrt_store_set(st, key, val, (size_t)n);
	if (rc != MLRT_OK)
		mlrt_log(MLRT_LOG_ERROR, "metrics: cannot set %s in the store: %s", key,
		         mlrt_strerror(rc));
	return rc;
}

static int report_file(mlrt_ctx *ctx, const char *path, const char *name, double value,
                       int64_t step)
{
	char line[LINE_MAX_BYTES];
	ssize_t w;
	int fd, n, err;

	n = snprintf(line, sizeof(line), "%s=%.17g step=%" PRId64 " rank=%d\n", name, value, step,
	             mlrt_rank(ctx));
	if (n < 0 || (size_t)n >= sizeof(line))
		return MLRT_ERR_INTERNAL;
	/* Opened per report: the file may be rotated or removed between
	 * reports, and reports are rare next to training steps. */
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		mlrt_log(MLRT_LOG_ERROR, "metrics: cannot open MLRT_METRICS_FILE=%s: %s (check the "
		                         "directory exists and is writable)",
		         path, strerror(errno));
		return MLRT_ERR_IO;
	}
	/* One write(2) of the whole line: with O_APPEND the kernel places it
	 * at the end in one piece, so ranks sharing the file do not mix
	 * their lines.  A retry after a short write could, so there is none. */
	do
		w = write(fd, line, (size_t)n);
	while (w < 0 && errno == EINTR);
	err = errno;
	close(fd);
	if (w != n) {
		mlrt_log(MLRT_LOG_ERROR, "metrics: cannot append to MLRT_METRICS_FILE=%s: %s", path,
		         w < 0 ? strerror(err) : "short write");
		return MLRT_ERR_IO;
	}
	return MLRT_OK;
}

int mlrt_report(mlrt_ctx *ctx, const char *name, double value, int64_t step)
{
	mlrt_store *st;
	const char *path;
	int rc = MLRT_OK, rc2;

	if (ctx == NULL) {
		mlrt_log(MLRT_LOG_ERROR, "metrics: mlrt_report called with a NULL context");
		return MLRT_ERR_INVALID;
	}
	rc2 = check_name(name);
	if (rc2 != MLRT_OK)
		return rc2;
	if (!isfinite(value)) {
		mlrt_log(MLRT_LOG_ERROR, "metrics: %s at step %" PRId64 " is %g; only finite values "
		                         "can be reported (did training diverge?)",
		         name, step, value);
		return MLRT_ERR_INVALID;
	}
	st = mlrt_ctx_store(ctx);
	if (st != NULL)
		rc = report_store(ctx, st, name, value, step);
	path = getenv("MLRT_METRICS_FILE");
	if (path != NULL && path[0] != '\0') {
		rc2 = report_file(ctx, path, name, value, step);
		if (rc == MLRT_OK)
			rc = rc2;
	}
	return rc;
}
