/* Small internal helpers: clock, integer parsing, environment. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "runtime/common.h"

int64_t mlrti_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mlrti_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int mlrti_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
	char *end;
	long long v;

	if (s == NULL || *s == '\0')
		return MLRT_ERR_INVALID;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < lo || v > hi)
		return MLRT_ERR_INVALID;
	*out = v;
	return MLRT_OK;
}

int mlrti_env_int(const char *name, int64_t lo, int64_t hi, int64_t def, int64_t *out)
{
	const char *s = getenv(name);

	if (s == NULL || *s == '\0') {
		*out = def;
		return MLRT_OK;
	}
	if (mlrti_parse_int(s, lo, hi, out) != MLRT_OK) {
		mlrt_log(MLRT_LOG_ERROR, "environment: %s=%s is not an integer in [%lld, %lld]",
		         name, s, (long long)lo, (long long)hi);
		return MLRT_ERR_INVALID;
	}
	return MLRT_OK;
}

int mlrti_pidfd_open(int pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

char *mlrti_strdup(const char *s)
{
	char *d = strdup(s);

	if (d == NULL)
		mlrt_log(MLRT_LOG_ERROR, "out of memory copying a %zu-byte string", strlen(s));
	return d;
}
