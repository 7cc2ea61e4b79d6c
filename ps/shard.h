/* A parameter server's keys as flat arrays, saved and loaded through
 * ckpt/ (one checkpoint directory per server: DIR/server-<i>/step-N/...).
 * Not installed. */
#ifndef MLRT_PS_SHARD_H
#define MLRT_PS_SHARD_H

#include <stddef.h>
#include <stdint.h>

typedef struct mlrti_ps_shard {
	int64_t optimizer;  /* the mlrt_ps_optimizer the state belongs to */
	int64_t nkeys;
	int64_t nvals;      /* floats of all the keys' values */
	int64_t nstate;     /* floats of all the keys' optimizer state */
	uint64_t *keys;     /* [nkeys] */
	uint64_t *lens;     /* [nkeys] */
	int64_t *updates;   /* [nkeys] updates applied (Adam's step) */
	float *vals;        /* [nvals] key after key */
	float *state;       /* [nstate] key after key */
} mlrti_ps_shard;

/* Allocate the arrays for the sizes set in sh (zero-filled). */
int mlrti_ps_shard_alloc(mlrti_ps_shard *sh);
void mlrti_ps_shard_fini(mlrti_ps_shard *sh);

/* Save sh as step in dir (committed, the last 2 steps kept).  Blocks for
 * the write. */
int mlrti_ps_shard_save(const char *dir, int64_t step, const mlrti_ps_shard *sh);

/* Load the newest valid step of dir into sh (allocated here); *step gets
 * it.  MLRT_ERR_NOT_FOUND when there is none. */
int mlrti_ps_shard_load(const char *dir, mlrti_ps_shard *sh, int64_t *step);

#endif
