/* Logging.  Lines go to stderr as
 *     [mlrt 3] warn: store: reply from tcp://10.0.0.1:29400 late, retrying
 * (the number is the rank, when known).  The level comes from MLRT_LOG_LEVEL
 * (error, warn, info, debug, trace; default warn) or mlrt_log_set_level.
 * Thread-safe: one line is written with one write(2). */
#ifndef MLRT_LOG_H
#define MLRT_LOG_H

#include <mlrt/status.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mlrt_log_level {
	MLRT_LOG_ERROR = 0,
	MLRT_LOG_WARN = 1,
	MLRT_LOG_INFO = 2,
	MLRT_LOG_DEBUG = 3,
	MLRT_LOG_TRACE = 4,
} mlrt_log_level;

MLRT_API void mlrt_log_set_level(mlrt_log_level level);
MLRT_API mlrt_log_level mlrt_log_get_level(void);

/* Parse "error".."trace" (or "0".."4"); MLRT_ERR_INVALID otherwise. */
MLRT_API int mlrt_log_parse_level(const char *s, mlrt_log_level *level);

/* The rank shown in the prefix; -1 shows none. */
MLRT_API void mlrt_log_set_rank(int rank);

MLRT_API void mlrt_log(mlrt_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif
