/* The on-disk format of checkpoints: step directories, per-rank HDF5
 * files and the manifest.  Used by the checkpoint API (ckpt.c, restore.c)
 * and by `mlrun ckpt`.  Not installed.
 *
 *   DIR/step-N/rank-R.h5     one dataset per tensor this rank saves, with
 *                            attributes dtype, kind, global_shape, offset,
 *                            crc32c (of the dataset's bytes); file
 *                            attributes format, step, rank, world_size
 *   DIR/step-N/manifest.h5   attributes format, step, world_size, time;
 *                            datasets files {name, bytes}, tensors {name,
 *                            kind, dtype, ndim, global_shape}, meta/<name>
 *
 * A step is committed when its manifest exists.  Every function here takes
 * the process-wide HDF5 lock itself; none blocks on other ranks.  Errors are
 * logged with the file and tensor at fault. */
#ifndef MLRT_CKPT_FORMAT_H
#define MLRT_CKPT_FORMAT_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

#include <mlrt/ckpt.h>
#include <mlrt/types.h>

#define MLRTI_CKPT_NAME_MAX 256       /* bytes of a tensor name, with the NUL */
#define MLRTI_CKPT_META_MAX (64 * 1024) /* bytes of one metadata value */
#define MLRTI_CKPT_FORMAT "mlrt-ckpt-1"
#define MLRTI_CKPT_MANIFEST "manifest.h5"

typedef enum mlrti_ckpt_kind {
	MLRTI_CKPT_RANK,       /* every rank saves its own */
	MLRTI_CKPT_REPLICATED, /* rank 0 saves it, in rank-0.h5 */
	MLRTI_CKPT_SHARD,      /* block of a global tensor */
	MLRTI_CKPT_META,       /* small value in the manifest */
	MLRTI_CKPT_KIND_COUNT,
} mlrti_ckpt_kind;

/* A tensor as registered, or as described by a file or the manifest. */
typedef struct mlrti_ckpt_tensor {
	char name[MLRTI_CKPT_NAME_MAX];
	mlrti_ckpt_kind kind;
	mlrt_dtype dtype;
	int ndim;
	int64_t shape[MLRT_CKPT_MAX_DIMS];        /* this block; [count] unless a shard */
	int64_t global_shape[MLRT_CKPT_MAX_DIMS]; /* == shape unless a shard */
	int64_t offset[MLRT_CKPT_MAX_DIMS];       /* zeros unless a shard */
	size_t bytes;                             /* of this block */
	uint32_t crc;                             /* CRC32C of the block's bytes */
} mlrti_ckpt_tensor;

typedef struct mlrti_ckpt_manifest {
	int64_t step;
	int world_size;
	int64_t time; /* seconds since the epoch, when committed */
	int64_t *file_bytes; /* [world_size]: size of rank-R.h5 */
	size_t ntensors;
	mlrti_ckpt_tensor *tensors;
	void **meta; /* [ntensors]: value of each META tensor (malloc'd), else NULL */
} mlrti_ckpt_manifest;

/* Step directories found in a checkpoint directory, newest first. */
typedef struct mlrti_ckpt_step {
	int64_t step;
	int committed;
} mlrti_ckpt_step;

/* One open rank file, for reading. */
typedef struct mlrti_ckpt_file {
	hid_t h5;
	int fd;
	char path[PATH_MAX];
} mlrti_ckpt_file;

/* CRC32C (Castagnoli) of n bytes at p, continuing from crc (0 to start). */
uint32_t mlrti_crc32c(uint32_t crc, const void *p, size_t n);

const char *mlrti_ckpt_kind_name(mlrti_ckpt_kind k);

/* Elements in a block of ndim dimensions. */
int64_t mlrti_ckpt_elems(int ndim, const int64_t *shape);

/* "DIR/step-N" and "DIR/step-N/rank-R.h5" into buf (MLRT_ERR_TOO_LARGE when
 * they do not fit). */
int mlrti_ckpt_step_path(char *buf, size_t n, const char *dir, int64_t step);
int mlrti_ckpt_rank_path(char *buf, size_t n, const char *dir, int64_t step, int rank);

/* The step directories of dir, newest first (*steps malloc'd, NULL when
 * none).  Entries that are not step-N directories are ignored. */
int mlrti_ckpt_list_steps(const char *dir, mlrti_ckpt_step **steps, size_t *n);

/* Make DIR/step-N empty and durable: an existing one is uncommitted first
 * (manifest removed and the removal fsynced), then emptied. */
int mlrti_ckpt_prepare_step(const char *dir, int64_t step);

/* Remove DIR/step-N: the manifest first, so that a crash half-way leaves
 * an uncommitted step, never a committed one with files missing. */
int mlrti_ckpt_remove_step(const char *dir, int64_t step);

/* fsync the file or directory at path. */
int mlrti_ckpt_fsync_path(const char *path);

/* Write rank's file of step: under a temporary name, fsynced, then renamed
 * to path.  t[i].crc is set from src[i] (t[i].bytes bytes).  *bytes gets
 * the file's size.  MLRT_ERR_NOSPACE or MLRT_ERR_IO, with the temporary file
 * removed. */
int mlrti_ckpt_write_file(const char *path, int64_t step, int rank, int world,
                          mlrti_ckpt_tensor *t, const void *const *src, size_t n, int64_t *bytes);

/* Write and commit the manifest of m into stepdir: temporary name, fsync,
 * rename, fsync of stepdir.  m->meta[i] holds each META tensor's bytes. */
int mlrti_ckpt_write_manifest(const char *stepdir, const mlrti_ckpt_manifest *m);

/* Read stepdir's manifest (MLRT_ERR_NOT_FOUND when the step is not
 * committed, MLRT_ERR_CORRUPT when it cannot be read). */
int mlrti_ckpt_read_manifest(const char *stepdir, mlrti_ckpt_manifest *m);
void mlrti_ckpt_manifest_fini(mlrti_ckpt_manifest *m);

/* Check rank's file of the step against m: its size, every tensor present
 * and each CRC32C.  MLRT_ERR_CORRUPT with why (file and tensor) filled in
 * when damaged.  scratch (len bytes) streams the data. */
int mlrti_ckpt_verify_file(const char *stepdir, const mlrti_ckpt_manifest *m, int rank,
                           void *scratch, size_t len, char *why, size_t whylen);

/* Whether rank's file of a step holds tensor t of the manifest. */
int mlrti_ckpt_file_has(const mlrti_ckpt_tensor *t, int rank);

int mlrti_ckpt_file_open(const char *path, mlrti_ckpt_file *f);
void mlrti_ckpt_file_close(mlrti_ckpt_file *f);

/* Describe tensor name of f into *t; *off gets the byte offset of its data
 * in the file (-1 when it has none).  MLRT_ERR_NOT_FOUND when absent,
 * MLRT_ERR_CORRUPT when its attributes are malformed. */
int mlrti_ckpt_file_tensor(mlrti_ckpt_file *f, const char *name, mlrti_ckpt_tensor *t,
                           int64_t *off);

/* Read bytes bytes at file offset off into dst (a short read is
 * MLRT_ERR_CORRUPT). */
int mlrti_ckpt_file_read(mlrti_ckpt_file *f, int64_t off, void *dst, size_t bytes);

/* Read the block [start, start+count) of tensor src (as described by
 * mlrti_ckpt_file_tensor) into the block dst_start of dst, an array of
 * dst_shape.  Indices are relative to each array. */
int mlrti_ckpt_file_read_block(mlrti_ckpt_file *f, const mlrti_ckpt_tensor *src,
                               const int64_t *start, const int64_t *count, void *dst,
                               const int64_t *dst_shape, const int64_t *dst_start);

#endif
