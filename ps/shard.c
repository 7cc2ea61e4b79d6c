/* Saving and loading a parameter server's keys with ckpt/ (shard.h). */
#include <stdlib.h>
#include <string.h>

#include <mlrt/ckpt.h>

#include "ckpt/ckpt.h"
#include "ps/shard.h"
#include "runtime/common.h"

int mlrti_ps_shard_alloc(mlrti_ps_shard *sh)
{
	size_t n = (size_t)sh->nkeys;

	sh->keys = calloc(n + 1, sizeof(*sh->keys));
	sh->lens = calloc(n + 1, sizeof(*sh->lens));
	sh->updates = calloc(n + 1, sizeof(*sh->updates));
	sh->vals = calloc((size_t)sh->nvals + 1, sizeof(*sh->vals));
	sh->state = calloc((size_t)sh->nstate + 1, sizeof(*sh->state));
	if (sh->keys == NULL || sh->lens == NULL || sh->updates == NULL || sh->vals == NULL ||
	    sh->state == NULL) {
		mlrti_ps_shard_fini(sh);
		return MLRT_ERR_NOMEM;
	}
	return MLRT_OK;
}

void mlrti_ps_shard_fini(mlrti_ps_shard *sh)
{
	free(sh->keys);
	free(sh->lens);
	free(sh->updates);
	free(sh->vals);
	free(sh->state);
	sh->keys = sh->lens = NULL;
	sh->updates = NULL;
	sh->vals = sh->state = NULL;
}

/* The sizes, as metadata in the manifest. */
static int add_sizes(mlrt_ckpt *ck, mlrti_ps_shard *sh)
{
	int rc;

	MLRTI_CHECK_GOTO(mlrt_ckpt_add_meta(ck, "optimizer", &sh->optimizer, 1, MLRT_I64), rc, out);
	MLRTI_CHECK_GOTO(mlrt_ckpt_add_meta(ck, "nkeys", &sh->nkeys, 1, MLRT_I64), rc, out);
	MLRTI_CHECK_GOTO(mlrt_ckpt_add_meta(ck, "nvals", &sh->nvals, 1, MLRT_I64), rc, out);
	rc = mlrt_ckpt_add_meta(ck, "nstate", &sh->nstate, 1, MLRT_I64);
out:
	return rc;
}

static int add_arrays(mlrt_ckpt *ck, mlrti_ps_shard *sh)
{
	size_t n = (size_t)sh->nkeys;
	int rc;

	/* uint64 keys and lengths travel as their int64 bit patterns. */
	MLRTI_CHECK_GOTO(mlrt_ckpt_add(ck, "keys", sh->keys, n, MLRT_I64), rc, out);
	MLRTI_CHECK_GOTO(mlrt_ckpt_add(ck, "lens", sh->lens, n, MLRT_I64), rc, out);
	MLRTI_CHECK_GOTO(mlrt_ckpt_add(ck, "updates", sh->updates, n, MLRT_I64), rc, out);
	MLRTI_CHECK_GOTO(mlrt_ckpt_add(ck, "values", sh->vals, (size_t)sh->nvals, MLRT_F32), rc,
	                 out);
	rc = mlrt_ckpt_add(ck, "state", sh->state, (size_t)sh->nstate, MLRT_F32);
out:
	return rc;
}

static mlrt_ckpt *open_dir(const char *dir)
{
	mlrt_ckpt_opts o;
	mlrt_ckpt *ck = NULL;

	mlrt_ckpt_opts_init(&o);
	o.keep = 2;
	if (mlrti_ckpt_open_local(dir, &o, &ck) != MLRT_OK)
		return NULL;
	return ck;
}

int mlrti_ps_shard_save(const char *dir, int64_t step, const mlrti_ps_shard *sh)
{
	mlrti_ps_shard copy = *sh; /* the API takes non-const buffers */
	mlrt_ckpt *ck = open_dir(dir);
	int rc;

	if (ck == NULL)
		return MLRT_ERR_IO;
	MLRTI_CHECK_GOTO(add_sizes(ck, &copy), rc, out);
	MLRTI_CHECK_GOTO(add_arrays(ck, &copy), rc, out);
	rc = mlrt_ckpt_save(ck, step);
out:
	mlrt_ckpt_close(ck);
	return rc;
}

int mlrti_ps_shard_load(const char *dir, mlrti_ps_shard *sh, int64_t *step)
{
	mlrt_ckpt *ck = open_dir(dir);
	int rc;

	memset(sh, 0, sizeof(*sh));
	if (ck == NULL)
		return MLRT_ERR_IO;
	/* First the sizes (restore fills only what is registered)... */
	MLRTI_CHECK_GOTO(add_sizes(ck, sh), rc, out);
	MLRTI_CHECK_GOTO(mlrt_ckpt_restore(ck, step), rc, out);
	mlrt_ckpt_close(ck);
	if (sh->nkeys < 0 || sh->nvals < 0 || sh->nstate < 0)
		return MLRT_ERR_CORRUPT;
	/* ... then the arrays, from the same step: nothing writes here now. */
	if ((ck = open_dir(dir)) == NULL)
		return MLRT_ERR_IO;
	MLRTI_CHECK_GOTO(mlrti_ps_shard_alloc(sh), rc, out);
	MLRTI_CHECK_GOTO(add_sizes(ck, sh), rc, out);
	MLRTI_CHECK_GOTO(add_arrays(ck, sh), rc, out);
	rc = mlrt_ckpt_restore(ck, step);
out:
	mlrt_ckpt_close(ck);
	if (rc != MLRT_OK)
		mlrti_ps_shard_fini(sh);
	return rc;
}
