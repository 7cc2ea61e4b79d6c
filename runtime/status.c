/* mlrt_strerror: text for each status code. */
#include <mlrt/status.h>

const char *mlrt_strerror(int status)
{
	switch ((mlrt_status)status) {
	case MLRT_OK: return "success";
	case MLRT_ERR_INVALID: return "invalid argument";
	case MLRT_ERR_NOMEM: return "out of memory";
	case MLRT_ERR_IO: return "input/output error";
	case MLRT_ERR_TIMEOUT: return "timed out";
	case MLRT_ERR_NOT_FOUND: return "not found";
	case MLRT_ERR_EXISTS: return "already exists";
	case MLRT_ERR_PEER_LOST: return "peer lost: a member of the gang died";
	case MLRT_ERR_PROTOCOL: return "malformed message";
	case MLRT_ERR_UNSUPPORTED: return "not supported in this build or on this machine";
	case MLRT_ERR_UNAVAILABLE: return "service unavailable";
	case MLRT_ERR_TOO_LARGE: return "too large";
	case MLRT_ERR_VERSION: return "protocol version mismatch";
	case MLRT_ERR_ABORTED: return "aborted";
	case MLRT_ERR_INTERNAL: return "internal error (a bug in mlrt)";
	case MLRT_ERR_CORRUPT: return "data corrupt";
	case MLRT_ERR_NOSPACE: return "no space left on device";
	}
	return "unknown status";
}
