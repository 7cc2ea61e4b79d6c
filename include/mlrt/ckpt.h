/* Checkpoints: register buffers once, then save and restore them by step.
 *
 * A checkpoint of step N lives in DIR/step-N/: one HDF5 file per rank
 * (rank-R.h5, one dataset per registered buffer, with its dtype, global
 * shape, offset and CRC32C as attributes) and manifest.h5, written by rank
 * 0 once every rank's file is durable.  A step counts only when its manifest
 * is in place, so a crash at any moment leaves either the new step or the
 * previous one.  The files open with h5dump and h5py.
 *
 * Save and restore are collective: every rank of the world calls them, in
 * the same order, with the same buffers registered under the same names.
 * DIR must be one directory that every rank sees (a shared filesystem when
 * ranks span hosts).
 *
 * Threads: one mlrt_ckpt is used by one thread at a time (the library's
 * own writer thread aside). */
#ifndef MLRT_CKPT_H
#define MLRT_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include <mlrt/runtime.h>
#include <mlrt/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mlrt_ckpt mlrt_ckpt;

#define MLRT_CKPT_MAX_DIMS 8

typedef struct mlrt_ckpt_opts {
	/* Committed steps kept on disk (older ones are removed after each
	 * commit); 0 keeps every step.  Default 3. */
	int keep;
	/* 1: mlrt_ckpt_save copies the buffers into staging memory and
	 * returns; a background thread writes and commits.  Default 0. */
	int async;
	/* Bound, in milliseconds, on each wait for the other ranks during a
	 * save or restore.  Default 600000 (10 minutes). */
	int timeout_ms;
} mlrt_ckpt_opts;

/* Fill o with the defaults above. */
MLRT_API void mlrt_ckpt_opts_init(mlrt_ckpt_opts *o);

/* Open the checkpoint directory dir (created when missing) with default
 * options.  Does not block on other ranks.  Errors: MLRT_ERR_INVALID,
 * MLRT_ERR_IO (dir cannot be created), MLRT_ERR_NOMEM. */
MLRT_API int mlrt_ckpt_open(mlrt_ctx *ctx, const char *dir, mlrt_ckpt **ck);
MLRT_API int mlrt_ckpt_open_opts(mlrt_ctx *ctx, const char *dir, const mlrt_ckpt_opts *o,
                                 mlrt_ckpt **ck);

/* Register count elements of type t at data under name (letters, digits,
 * "_-.", and "/" for HDF5 groups).  The buffer belongs to this rank: every
 * rank saves its own, and restore reads rank R's back into rank R, so the
 * world size must not change between save and restore.  The memory must
 * stay valid until mlrt_ckpt_close.  MLRT_ERR_EXISTS for a name taken. */
MLRT_API int mlrt_ckpt_add(mlrt_ckpt *ck, const char *name, void *data, size_t count,
                           mlrt_dtype t);

/* Register a buffer that holds the same value on every rank (model
 * weights in data-parallel training): rank 0 saves it once and every rank
 * restores it, whatever the world size. */
MLRT_API int mlrt_ckpt_add_replicated(mlrt_ckpt *ck, const char *name, void *data,
                                      size_t count, mlrt_dtype t);

/* Register this rank's shard of a global tensor: a row-major block of
 * shape[0..ndim) elements starting at offset[] inside global_shape[].
 * Restore reads the block back from whichever saved shards overlap it,
 * so it works when the world size or the sharding changed since the
 * save.  Shards of one tensor must not overlap; ndim <= MLRT_CKPT_MAX_DIMS. */
MLRT_API int mlrt_ckpt_add_shard(mlrt_ckpt *ck, const char *name, void *data, mlrt_dtype t,
                                 int ndim, const int64_t *global_shape, const int64_t *offset,
                                 const int64_t *shape);

/* Register a small value kept in the manifest (epoch, RNG state, ...):
 * rank 0's value is saved and every rank gets it back on restore.  At most
 * 64 KiB. */
MLRT_API int mlrt_ckpt_add_meta(mlrt_ckpt *ck, const char *name, void *data, size_t count,
                                mlrt_dtype t);

/* Save every registered buffer as step (>= 0).  Collective.
 * Synchronous mode: returns once the step is committed on disk (the same
 * status on every rank).  Async mode: waits for the previous save, copies
 * the buffers to staging and returns; if the previous save failed, returns
 * its error instead and takes no new snapshot.
 * Errors: MLRT_ERR_NOSPACE, MLRT_ERR_IO (the previous step is intact),
 * MLRT_ERR_TIMEOUT / MLRT_ERR_ABORTED (another rank did not finish). */
MLRT_API int mlrt_ckpt_save(mlrt_ckpt *ck, int64_t step);

/* Block until the last save has committed or failed; returns its status
 * (MLRT_OK when there was none).  *step (may be NULL) gets the newest step
 * committed by this mlrt_ckpt, -1 if none. */
MLRT_API int mlrt_ckpt_wait(mlrt_ckpt *ck, int64_t *step);

/* Restore the newest committed step whose files verify on every rank,
 * reading straight into the registered buffers.  Collective; every rank
 * picks the same step.  A truncated, missing or damaged file makes its
 * step invalid (a warning names file and tensor) and the step before is
 * tried; corrupt bytes are never loaded.  Buffers are left untouched when
 * no step can be restored.
 * Errors: MLRT_ERR_NOT_FOUND (no valid step), MLRT_ERR_INVALID (a
 * registered buffer does not match the checkpoint: named in the log). */
MLRT_API int mlrt_ckpt_restore(mlrt_ckpt *ck, int64_t *step);

/* Wait for a pending save, stop the writer thread and free ck (NULL is
 * fine).  Returns the pending save's status. */
MLRT_API int mlrt_ckpt_close(mlrt_ckpt *ck);

#ifdef __cplusplus
}
#endif
#endif
