/* A parameter server's keys in checkpoints (--ps-ckpt-dir): flattened
 * into arrays, saved through ckpt/ in DIR/server-<i>/step-N/ (N: wall-clock
 * ms, the last 2 kept), and loaded back on a (re)start. */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include <mlrt/ckpt.h>

#include "ckpt/ckpt.h"
#include "ps/optim.h"
#include "ps/server.h"
#include "runtime/common.h"

/* The keys as flat arrays. */
typedef struct flat {
	int64_t optimizer;  /* the mlrt_ps_optimizer the state belongs to */
	int64_t nkeys;
	int64_t nvals;      /* floats of all the keys' values */
	int64_t nstate;     /* floats of all the keys' optimizer state */
	uint64_t *keys;     /* [nkeys] */
	uint64_t *lens;     /* [nkeys] */
	int64_t *updates;   /* [nkeys] updates applied (Adam's step) */
	float *vals;        /* [nvals] key after key */
	float *state;       /* [nstate] key after key */
} flat;

static void flat_fini(flat *sh);

static int flat_alloc(flat *sh)
{
	size_t n = (size_t)sh->nkeys;

	sh->keys = calloc(n + 1, sizeof(*sh->keys));
	sh->lens = calloc(n + 1, sizeof(*sh->lens));
	sh->updates = calloc(n + 1, sizeof(*sh->updates));
	sh->vals = calloc((size_t)sh->nvals + 1, sizeof(*sh->vals));
	sh->state = calloc((size_t)sh->nstate + 1, sizeof(*sh->state));
	if (sh->keys == NULL || sh->lens == NULL || sh->updates == NULL || sh->vals == NULL ||
	    sh->state == NULL) {
		flat_fini(sh);
		return MLRT_ERR_NOMEM;
	}
	return MLRT_OK;
}

static void flat_fini(flat *sh)
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
static int add_sizes(mlrt_ckpt *ck, flat *sh)
{
	int rc;

	MLRTI_CHECK_GOTO(mlrt_ckpt_add_meta(ck, "optimizer", &sh->optimizer, 1, MLRT_I64), rc, out);
	MLRTI_CHECK_GOTO(mlrt_ckpt_add_meta(ck, "nkeys", &sh->nkeys, 1, MLRT_I64), rc, out);
	MLRTI_CHECK_GOTO(mlrt_ckpt_add_meta(ck, "nvals", &sh->nvals, 1, MLRT_I64), rc, out);
	rc = mlrt_ckpt_add_meta(ck, "nstate", &sh->nstate, 1, MLRT_I64);
out:
	return rc;
}

static int add_arrays(mlrt_ckpt *ck, flat *sh)
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

static int flat_save(const char *dir, int64_t step, const flat *sh)
{
	flat copy = *sh; /* the API takes non-const buffers */
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

static int flat_load(const char *dir, flat *sh, int64_t *step)
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
	MLRTI_CHECK_GOTO(flat_alloc(sh), rc, out);
	MLRTI_CHECK_GOTO(add_sizes(ck, sh), rc, out);
	MLRTI_CHECK_GOTO(add_arrays(ck, sh), rc, out);
	rc = mlrt_ckpt_restore(ck, step);
out:
	mlrt_ckpt_close(ck);
	if (rc != MLRT_OK)
		flat_fini(sh);
	return rc;
}

/* ---- a server's keys ---- */

static void shard_dir(const mlrti_ps_server *s, int i, char *buf, size_t n)
{
	snprintf(buf, n, "%s/server-%d", s->ckpt_dir, i);
}

/* Save the keys of the ranges this server answers for. */
int mlrti_ps_save_shard(mlrti_ps_server *s)
{
	size_t per = mlrti_optim_state_floats(s->opts.optimizer);
	flat sh = {.optimizer = s->opts.optimizer};
	int64_t i = 0, v = 0, st = 0;
	char dir[PATH_MAX];
	mlrti_ps_key *k, *tmp;
	int rc;

	HASH_ITER(hh, s->keys, k, tmp) {
		if (s->ranges[mlrti_ps_server_of(k->key, s->nservers)].role != MLRTI_PS_PRIMARY)
			continue;
		sh.nkeys++;
		sh.nvals += (int64_t)k->len;
		sh.nstate += (int64_t)(per * k->len);
	}
	MLRTI_CHECK_GOTO(flat_alloc(&sh), rc, out);
	HASH_ITER(hh, s->keys, k, tmp) {
		if (s->ranges[mlrti_ps_server_of(k->key, s->nservers)].role != MLRTI_PS_PRIMARY)
			continue;
		sh.keys[i] = k->key;
		sh.lens[i] = k->len;
		sh.updates[i++] = k->t;
		memcpy(sh.vals + v, k->w, k->len * sizeof(float));
		v += (int64_t)k->len;
		if (per > 0)
			memcpy(sh.state + st, k->state, per * k->len * sizeof(float));
		st += (int64_t)(per * k->len);
	}
	shard_dir(s, s->index, dir, sizeof(dir));
	rc = flat_save(dir, mlrti_wall_ms(), &sh);
out:
	flat_fini(&sh);
	if (rc != MLRT_OK)
		mlrt_log(MLRT_LOG_ERROR, "ps: server %d cannot checkpoint its keys in %s: %s",
		         s->index, s->ckpt_dir, mlrt_strerror(rc));
	return rc;
}

/* Take the keys of range rg from server i's newest shard checkpoint. */
static void load_range(mlrti_ps_server *s, int i, int rg)
{
	size_t per = mlrti_optim_state_floats(s->opts.optimizer);
	flat sh;
	char dir[PATH_MAX], why[MLRTI_PS_MSG_MAX];
	int64_t step, v = 0, st = 0, n = 0;
	int rc;

	shard_dir(s, i, dir, sizeof(dir));
	rc = flat_load(dir, &sh, &step);
	if (rc != MLRT_OK) {
		if (rc != MLRT_ERR_NOT_FOUND)
			mlrt_log(MLRT_LOG_WARN, "ps: server %d: no usable checkpoint in %s (%s); range %d "
			         "starts afresh", s->index, dir, mlrt_strerror(rc), rg);
		return;
	}
	int state_ok = sh.optimizer == (int64_t)s->opts.optimizer;

	if (!state_ok)
		mlrt_log(MLRT_LOG_WARN, "ps: server %d: %s was saved with another optimizer; its "
		         "values are kept, its optimizer state is not", s->index, dir);
	for (int64_t k = 0; k < sh.nkeys; k++) {
		size_t len = (size_t)sh.lens[k];
		mlrti_ps_key *key;

		if (mlrti_ps_server_of(sh.keys[k], s->nservers) == rg &&
		    mlrti_ps_key_get(s, sh.keys[k], len, &key, why, sizeof(why)) == MLRT_OK &&
		    v + (int64_t)len <= sh.nvals && mlrti_ps_key_writable(key) == MLRT_OK) {
			memcpy(key->w, sh.vals + v, len * sizeof(float));
			if (state_ok && per > 0 && st + (int64_t)(per * len) <= sh.nstate)
				memcpy(key->state, sh.state + st, per * len * sizeof(float));
			key->t = state_ok ? sh.updates[k] : 0;
			n++;
		}
		v += (int64_t)len;
		st += (int64_t)(state_ok ? per * len : 0);
	}
	mlrt_log(MLRT_LOG_INFO, "ps: server %d restored %" PRId64 " keys of range %d from %s",
	         s->index, n, rg, dir);
	flat_fini(&sh);
}

/* Once the options are known (the first hello): the keys of the ranges
 * this server holds, from the checkpoints of the servers that owned them. */
void mlrti_ps_load_shards(mlrti_ps_server *s)
{
	if (s->ckpt_dir == NULL)
		return;
	for (int rg = 0; rg < s->nservers; rg++)
		if (s->ranges[rg].role != MLRTI_PS_NO_ROLE)
			load_range(s, rg, rg);
	s->next_save = mlrti_now_ms() + s->ckpt_ms;
}

