/* The library's front door: identity, world communicator, shutdown.
 *
 * mlrt_init reads who this process is from the environment of whichever
 * launcher started it, in this order:
 *   mlrun    MLRT_RANK MLRT_WORLD_SIZE MLRT_LOCAL_RANK MLRT_LOCAL_SIZE MLRT_STORE ...
 *   torchrun RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE MASTER_ADDR MASTER_PORT
 *   Open MPI OMPI_COMM_WORLD_RANK _SIZE _LOCAL_RANK _LOCAL_SIZE
 *   Slurm    SLURM_PROCID SLURM_NTASKS SLURM_LOCALID SLURM_STEP_TASKS_PER_NODE
 *   none     a world of one
 * and connects to (or, as rank 0 outside mlrun, starts) the job's store.
 * See docs/runtime.md. */
#ifndef MLRT_RUNTIME_H
#define MLRT_RUNTIME_H

#include <stdint.h>

#include <mlrt/status.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mlrt_ctx mlrt_ctx;
typedef struct mlrt_comm mlrt_comm;
typedef struct mlrt_store mlrt_store;

/* Which launcher's environment gave this process its identity. */
typedef enum mlrt_launcher {
	MLRT_LAUNCHER_NONE = 0, /* no launcher: a world of one */
	MLRT_LAUNCHER_MLRUN = 1,
	MLRT_LAUNCHER_TORCHRUN = 2,
	MLRT_LAUNCHER_MPI = 3,
	MLRT_LAUNCHER_SLURM = 4,
} mlrt_launcher;

/* Initialise mlrt for this process.  Blocks until the job's store answers
 * (bounded by MLRT_TIMEOUT_MS, default 300000).  On error *ctx is NULL and
 * the log says what was wrong with the environment. */
MLRT_API int mlrt_init(mlrt_ctx **ctx);

/* Leave the job: waits for pending work, closes connections, frees ctx
 * (NULL is fine).  Does not synchronise with other ranks; call
 * mlrt_barrier first if you need that. */
MLRT_API int mlrt_finalize(mlrt_ctx *ctx);

/* Identity; these return the value itself. */
MLRT_API int mlrt_rank(const mlrt_ctx *ctx);
MLRT_API int mlrt_size(const mlrt_ctx *ctx);
MLRT_API int mlrt_local_rank(const mlrt_ctx *ctx);
MLRT_API int mlrt_local_size(const mlrt_ctx *ctx);

/* Generation of the gang (0 on the first start, +1 on each restart) and
 * how many times the job has been restarted (MLRT_RESTART_COUNT). */
MLRT_API int64_t mlrt_generation(const mlrt_ctx *ctx);
MLRT_API int mlrt_restart_count(const mlrt_ctx *ctx);
MLRT_API mlrt_launcher mlrt_launched_by(const mlrt_ctx *ctx);

/* The job id (MLRT_JOB_ID, or one derived from the launcher). */
MLRT_API const char *mlrt_job_id(const mlrt_ctx *ctx);

/* The CUDA device this process works on, chosen at mlrt_init and made
 * current on its thread (MLRT_DEVICE; by default the worker's own GPU when
 * mlrun --gpus-per-proc bound one: docs/devices.md), or -1 for none. */
MLRT_API int mlrt_ctx_device(const mlrt_ctx *ctx);

/* The communicator of every rank in the job.  Owned by ctx. */
MLRT_API mlrt_comm *mlrt_world(mlrt_ctx *ctx);

/* The job's store client (NULL in a world of one with no store).  Owned
 * by ctx; use it from the thread that called mlrt_init only. */
MLRT_API mlrt_store *mlrt_ctx_store(mlrt_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
