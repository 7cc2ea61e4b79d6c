/* Parameter server: float32 vectors under uint64 keys, kept by server
 * processes, pushed to and pulled from by workers.
 *
 * `mlrun --servers S -np W PROG` starts S servers and W workers of PROG.
 * A program asks its role (mlrt_ps_role); a server calls mlrt_ps_serve,
 * which returns once every worker has closed; a worker opens a handle and
 * pushes and pulls.  Keys are split across servers by range (key k lives on
 * server k * S / 2^64), so a push or pull of many keys is one message per
 * server, sent to all of them at once.
 *
 * In a job with servers, mlrt_rank, mlrt_size and mlrt_world count the
 * workers only; on a server, mlrt_rank and mlrt_size give its index among
 * the servers and their number, and mlrt_world is NULL.  Worker 0 is the
 * chief (by convention: initialisation, checkpoints).  `mlrun --evaluator`
 * adds one evaluator process (rank 0 of 1, no world) that opens a handle
 * and pulls, to evaluate the model while it trains; its pushes are
 * refused, and the servers do not wait for it to close.
 *
 * Threads: one mlrt_ps is used by one thread at a time. */
#ifndef MLRT_PS_H
#define MLRT_PS_H

#include <stddef.h>
#include <stdint.h>

#include <mlrt/runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mlrt_ps mlrt_ps;

/* Roles (mlrt_ps_role, and MLRT_ROLE in the environment: "worker",
 * "server"). */
#define MLRT_ROLE_WORKER 0
#define MLRT_ROLE_SERVER 1
#define MLRT_ROLE_EVALUATOR 2 /* mlrun --evaluator: pulls, never pushes */

/* What a server does with a push. */
typedef enum mlrt_ps_optimizer {
	MLRT_PS_SUM = 0,  /* add the pushed values into the stored ones */
	MLRT_PS_SGD,      /* w -= lr * g */
	MLRT_PS_MOMENTUM, /* v = momentum * v + g; w -= lr * v */
	MLRT_PS_ADAGRAD,  /* h += g^2; w -= lr * g / (sqrt(h) + eps) */
	MLRT_PS_ADAM,     /* Adam with bias correction, its step counted per key */
	MLRT_PS_FTRL,     /* FTRL-proximal (McMahan et al. 2013): lr is alpha */
} mlrt_ps_optimizer;

/* When a server applies pushes and answers pulls. */
typedef enum mlrt_ps_consistency {
	MLRT_PS_ASYNC = 0, /* apply each push at once; pulls never wait */
	MLRT_PS_SYNC,      /* step t is applied once every worker's push t is in
	                    * (summed in worker order); pull t+1 waits for it */
	MLRT_PS_BOUNDED,   /* apply at once, but a worker more than `staleness`
	                    * pushes ahead of the slowest waits */
} mlrt_ps_consistency;

/* How a key's vector starts (at first use, or mlrt_ps_init). */
typedef enum mlrt_ps_init_kind {
	MLRT_PS_ZEROS = 0,
	MLRT_PS_CONSTANT, /* every element init_a */
	MLRT_PS_UNIFORM,  /* uniform in [init_a, init_b) */
	MLRT_PS_NORMAL,   /* normal, mean init_a, standard deviation init_b */
} mlrt_ps_init_kind;

typedef struct mlrt_ps_opts {
	mlrt_ps_optimizer optimizer;
	float lr;        /* default 0.01 */
	float momentum;  /* MOMENTUM: default 0.9 */
	float beta1;     /* ADAM: default 0.9 */
	float beta2;     /* ADAM: default 0.999 */
	float eps;       /* ADAGRAD, ADAM: default 1e-8 */
	float l1, l2;    /* FTRL regularisation: default 0 */
	float ftrl_beta; /* FTRL: default 1 */
	mlrt_ps_consistency consistency;
	int staleness;   /* BOUNDED: default 2 */
	mlrt_ps_init_kind init;
	float init_a, init_b;
	uint64_t seed;   /* UNIFORM, NORMAL: values depend on (seed, key, index) only */
	int timeout_ms;  /* bound on each request; default MLRT_TIMEOUT_MS */
} mlrt_ps_opts;

/* Fill o with the defaults above (SUM, ASYNC, ZEROS). */
MLRT_API void mlrt_ps_opts_init(mlrt_ps_opts *o);

/* This process's role: MLRT_ROLE_WORKER (also in a job without servers),
 * MLRT_ROLE_SERVER or MLRT_ROLE_EVALUATOR. */
MLRT_API int mlrt_ps_role(const mlrt_ctx *ctx);

/* Server role: serve until every worker has closed its handle (or the
 * generation fails).  Blocks. */
MLRT_API int mlrt_ps_serve(mlrt_ctx *ctx);

/* Worker role: connect to every server.  Collective over the workers: the
 * options (optimizer, consistency, init) must be the same on all; the
 * first worker's reach the servers.  MLRT_ERR_UNAVAILABLE when the job has
 * no servers. */
MLRT_API int mlrt_ps_open(mlrt_ctx *ctx, mlrt_ps **ps);
MLRT_API int mlrt_ps_open_opts(mlrt_ctx *ctx, const mlrt_ps_opts *o, mlrt_ps **ps);

/* Push nkeys keys (ascending or not), key i with lens[i] floats taken in
 * order from vals.  A key's length is fixed at its first push, pull or
 * init; another length is MLRT_ERR_INVALID.  Returns once every server
 * has acknowledged (applied, or in SYNC mode queued) the values.  In SYNC
 * and BOUNDED modes, each push is one step of this worker's clock. */
MLRT_API int mlrt_ps_push(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, const float *vals,
                          const size_t *lens);

/* Pull the current values of nkeys keys into vals (laid out as in push).
 * A key never seen starts as the options' init says.  In SYNC mode waits
 * until every worker's pushes up to this worker's clock are applied. */
MLRT_API int mlrt_ps_pull(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, float *vals,
                          const size_t *lens);

/* Push vals, then pull the keys' values after that push into out, in one
 * round trip: the pull goes right behind the push on each server's
 * connection (as ps-lite's PushPull), and the call returns when both are
 * answered (and, with replication, the push's copy too).  In SYNC mode the
 * pull waits for the step this push completes.  out must not overlap
 * vals (MLRT_ERR_INVALID). */
MLRT_API int mlrt_ps_push_pull(mlrt_ps *ps, const uint64_t *keys, size_t nkeys,
                               const float *vals, float *out, const size_t *lens);

/* Nonblocking push and pull: send the requests and return at once with a
 * ticket for mlrt_ps_wait.  keys, lens and vals must stay untouched until
 * the wait returns.  Up to MLRT_PS_MAX_INFLIGHT requests may be in flight;
 * one more first waits for the oldest.  Errors of the request itself come
 * back from the wait. */
#define MLRT_PS_MAX_INFLIGHT 256
MLRT_API int mlrt_ps_push_async(mlrt_ps *ps, const uint64_t *keys, size_t nkeys,
                                const float *vals, const size_t *lens, int64_t *ticket);
MLRT_API int mlrt_ps_pull_async(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, float *vals,
                                const size_t *lens, int64_t *ticket);
MLRT_API int mlrt_ps_push_pull_async(mlrt_ps *ps, const uint64_t *keys, size_t nkeys,
                                     const float *vals, float *out, const size_t *lens,
                                     int64_t *ticket);

/* Wait for the request of ticket (and every earlier one) to complete;
 * returns its status (the first error among them). */
MLRT_API int mlrt_ps_wait(mlrt_ps *ps, int64_t ticket);

/* Give keys their starting values now (each server fills its own keys
 * from the options' init), so that every worker sees the same start. */
MLRT_API int mlrt_ps_init(mlrt_ps *ps, const uint64_t *keys, size_t nkeys, const size_t *lens);

/* Disconnect; the servers return from mlrt_ps_serve once every worker has
 * closed.  NULL is fine. */
MLRT_API int mlrt_ps_close(mlrt_ps *ps);

#ifdef __cplusplus
}
#endif
#endif
