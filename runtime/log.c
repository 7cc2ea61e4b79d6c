/* Levelled logging to stderr with a rank prefix. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mlrt/log.h>

#include "runtime/common.h"

static atomic_int log_level = -1; /* -1: not yet read from the environment */
static atomic_int log_rank = -1;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

int mlrt_log_parse_level(const char *s, mlrt_log_level *level)
{
	for (size_t i = 0; i < MLRTI_ARRAY_LEN(level_names); i++) {
		if (strcmp(s, level_names[i]) == 0 ||
		    (s[0] == (char)('0' + i) && s[1] == '\0')) {
			*level = (mlrt_log_level)i;
			return MLRT_OK;
		}
	}
	if (strcmp(s, "warning") == 0) {
		*level = MLRT_LOG_WARN;
		return MLRT_OK;
	}
	return MLRT_ERR_INVALID;
}

mlrt_log_level mlrt_log_get_level(void)
{
	int lv = atomic_load(&log_level);
	mlrt_log_level parsed = MLRT_LOG_WARN;
	const char *s;

	if (lv >= 0)
		return (mlrt_log_level)lv;
	s = getenv("MLRT_LOG_LEVEL");
	if (s != NULL && *s != '\0' && mlrt_log_parse_level(s, &parsed) != MLRT_OK) {
		atomic_store(&log_level, MLRT_LOG_WARN);
		mlrt_log(MLRT_LOG_WARN,
		         "MLRT_LOG_LEVEL=%s is not one of error, warn, info, debug, trace; using warn",
		         s);
		return MLRT_LOG_WARN;
	}
	atomic_store(&log_level, (int)parsed);
	return parsed;
}

void mlrt_log_set_level(mlrt_log_level level)
{
	atomic_store(&log_level, (int)level);
}

void mlrt_log_set_rank(int rank)
{
	atomic_store(&log_rank, rank);
}

void mlrt_log(mlrt_log_level level, const char *fmt, ...)
{
	char line[2048];
	int n, rank;
	va_list ap;

	if ((int)level > (int)mlrt_log_get_level())
		return;
	rank = atomic_load(&log_rank);
	if (rank >= 0)
		n = snprintf(line, sizeof(line), "[mlrt %d] %s: ", rank, level_names[level]);
	else
		n = snprintf(line, sizeof(line), "[mlrt] %s: ", level_names[level]);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line so that lines of concurrent threads never mix. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* Nowhere left to report it. */
	}
}
