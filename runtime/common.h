/* Internal helpers shared by every file of the library.  Not installed.
 * Internal names carry the mlrti_ prefix (mlrt_ is the public API). */
#ifndef MLRT_RUNTIME_COMMON_H
#define MLRT_RUNTIME_COMMON_H

#include <stdint.h>

#include <mlrt/log.h>
#include <mlrt/status.h>

#define MLRTI_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Run call; on error keep its status in rc, log the failing call site at
 * debug level (a trail through the stack) and jump to label. */
#define MLRTI_CHECK_GOTO(call, rc, label)                                                        \
	do {                                                                                     \
		(rc) = (call);                                                                   \
		if ((rc) != MLRT_OK) {                                                           \
			mlrt_log(MLRT_LOG_DEBUG, "%s:%d: %s: %s", __FILE__, __LINE__, #call,     \
			         mlrt_strerror(rc));                                             \
			goto label;                                                              \
		}                                                                                \
	} while (0)

/* Monotonic clock in milliseconds. */
int64_t mlrti_now_ms(void);

/* Wall clock (CLOCK_REALTIME) in milliseconds since the epoch: for times
 * that other processes compare. */
int64_t mlrti_wall_ms(void);

/* Parse a decimal integer in [lo, hi] from s (whole string, no junk).
 * MLRT_ERR_INVALID otherwise. */
int mlrti_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out);

/* Integer environment variable name in [lo, hi], or def when unset/empty.
 * A set but malformed value logs an error naming the variable and gives
 * MLRT_ERR_INVALID. */
int mlrti_env_int(const char *name, int64_t lo, int64_t hi, int64_t def, int64_t *out);

/* pidfd_open(2) for pid where the system has it; -1 with errno set
 * otherwise (callers fall back to kill(pid, 0)). */
int mlrti_pidfd_open(int pid);

/* strdup that logs on failure. */
char *mlrti_strdup(const char *s);

#endif
