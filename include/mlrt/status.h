/* mlrt status codes: one convention for the whole library.
 *
 * Every function that can fail returns int: MLRT_OK (0) on success or a
 * negative mlrt_status.  Values are stable; new codes are only appended. */
#ifndef MLRT_STATUS_H
#define MLRT_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MLRT_API __attribute__((visibility("default")))
#else
#define MLRT_API
#endif

typedef enum mlrt_status {
	MLRT_OK = 0,
	MLRT_ERR_INVALID = -1,     /* bad argument or option */
	MLRT_ERR_NOMEM = -2,       /* out of memory */
	MLRT_ERR_IO = -3,          /* system call or file error (see log) */
	MLRT_ERR_TIMEOUT = -4,     /* a bounded wait ran out */
	MLRT_ERR_NOT_FOUND = -5,   /* no such key, step, lease, ... */
	MLRT_ERR_EXISTS = -6,      /* already there */
	MLRT_ERR_PEER_LOST = -7,   /* a member of the gang died; the generation is over */
	MLRT_ERR_PROTOCOL = -8,    /* malformed message on the wire */
	MLRT_ERR_UNSUPPORTED = -9, /* not built in, or not available here */
	MLRT_ERR_UNAVAILABLE = -10, /* a service (store, peer) cannot be reached */
	MLRT_ERR_TOO_LARGE = -11,  /* message or value over its limit */
	MLRT_ERR_VERSION = -12,    /* peer speaks another protocol version */
	MLRT_ERR_ABORTED = -13,    /* operation abandoned (gang failed, shut down) */
	MLRT_ERR_INTERNAL = -14,   /* a bug in mlrt: please report it */
	MLRT_ERR_CORRUPT = -15,    /* data failed its integrity check */
	MLRT_ERR_NOSPACE = -16,    /* no space left on a device */
} mlrt_status;

/* A short English description of status; never NULL, also for unknown
 * values.  Thread-safe. */
MLRT_API const char *mlrt_strerror(int status);

#ifdef __cplusplus
}
#endif
#endif
