/* Restoring the newest valid step, the same on every rank.
 *
 *   rank 0 lists the committed steps, newest first, and posts the list;
 *   for each step: every rank reads the manifest and verifies its share of
 *   the rank files (file i is checked by rank i mod world: each byte is
 *   read once across the gang); the ranks agree on the verdict; if every
 *   file is sound, each rank reads its tensors straight into the registered
 *   buffers (shards gather the overlapping blocks of every saved shard),
 *   and the ranks agree that every load worked.  Tensors in device memory
 *   are read into their pinned staging instead, and copied to the device
 *   once every tensor of this rank has loaded.
 *
 * Buffers are written only after the whole step has verified. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mlrt/store.h>

#include "ckpt/ckpt.h"
#include "runtime/common.h"

#define SCRATCH_BYTES (8u << 20)
#define MAX_CANDIDATES 64

/* Post this rank's status for <seq>/<what> and return the first error of
 * any rank (or a wait's own error). */
static int agree(mlrt_ckpt *ck, int64_t seq, const char *what, int rc, int *who)
{
	char key[MLRTI_CKPT_KEY_MAX], sub[64];
	int posted;

	*who = ck->rank;
	if (ck->store == NULL)
		return rc;
	snprintf(sub, sizeof(sub), "%s/%d", what, ck->rank);
	mlrti_ckpt_key(ck, seq, sub, key);
	posted = mlrti_ckpt_post(ck, key, rc, 0);
	if (posted != MLRT_OK)
		return posted;
	return mlrti_ckpt_gather(ck, seq, what, NULL, who);
}

/* The committed steps to try, newest first, as rank 0 sees them. */
static int candidates(mlrt_ckpt *ck, int64_t seq, int64_t *cand, int *n)
{
	char key[MLRTI_CKPT_KEY_MAX], text[MAX_CANDIDATES * 24 + 8] = "";
	const char *keys[1] = {key};
	void *val = NULL;
	size_t len = 0;
	int rc = MLRT_OK;

	mlrti_ckpt_key(ck, seq, "candidates", key);
	if (ck->rank == 0) {
		mlrti_ckpt_step *steps;
		size_t nsteps, used = 0;

		MLRTI_CHECK_GOTO(mlrti_ckpt_list_steps(ck->dir, &steps, &nsteps), rc, out);
		for (size_t i = 0; i < nsteps && *n < MAX_CANDIDATES; i++)
			if (steps[i].committed)
				used += (size_t)snprintf(text + used, sizeof(text) - used, "%" PRId64 " ",
				                         steps[i].step);
		free(steps);
		if (ck->store != NULL)
			MLRTI_CHECK_GOTO(mlrt_store_set(ck->store, key, text, used), rc, out);
	} else {
		MLRTI_CHECK_GOTO(mlrt_store_wait(ck->store, keys, 1, ck->opts.timeout_ms), rc, out);
		MLRTI_CHECK_GOTO(mlrt_store_get(ck->store, key, &val, &len), rc, out);
		snprintf(text, sizeof(text), "%.*s", (int)len, (const char *)val);
	}
	*n = 0;
	for (char *tok = strtok(text, " "); tok != NULL && *n < MAX_CANDIDATES;
	     tok = strtok(NULL, " "))
		if (mlrti_parse_int(tok, 0, INT64_MAX, &cand[*n]) == MLRT_OK)
			(*n)++;
out:
	free(val);
	return rc;
}

static int verify_share(mlrt_ckpt *ck, const char *stepdir, const mlrti_ckpt_manifest *m,
                        void *scratch)
{
	char why[PATH_MAX + 256];

	for (int r = ck->rank; r < m->world_size; r += ck->world)
		if (mlrti_ckpt_verify_file(stepdir, m, r, scratch, SCRATCH_BYTES, why, sizeof(why)) !=
		    MLRT_OK) {
			mlrt_log(MLRT_LOG_WARN, "ckpt: step %" PRId64 " is damaged: %s", m->step, why);
			return MLRT_ERR_CORRUPT;
		}
	return MLRT_OK;
}

/* The saved files of a step, opened on first use. */
typedef struct files {
	const char *stepdir;
	int n;
	mlrti_ckpt_file *f;
	int *open;
} files;

static int file_get(files *fs, int r, mlrti_ckpt_file **out)
{
	char path[PATH_MAX];

	if (!fs->open[r]) {
		snprintf(path, sizeof(path), "%s/rank-%d.h5", fs->stepdir, r);
		int rc = mlrti_ckpt_file_open(path, &fs->f[r]);

		if (rc != MLRT_OK) {
			mlrt_log(MLRT_LOG_WARN, "ckpt: cannot open %s: %s", path, mlrt_strerror(rc));
			return rc;
		}
		fs->open[r] = 1;
	}
	*out = &fs->f[r];
	return MLRT_OK;
}

static int mismatch(const mlrt_ckpt *ck, const mlrti_ckpt_tensor *want, int64_t step,
                    const char *what)
{
	mlrt_log(MLRT_LOG_ERROR, "ckpt: rank %d: tensor %s does not match step %" PRId64
	         " of %s: %s", ck->rank, want->name, step, ck->dir, what);
	return MLRT_ERR_INVALID;
}

/* A whole dataset (rank or replicated) from file r into data. */
static int load_flat(const mlrt_ckpt *ck, files *fs, int r, const mlrti_ckpt_tensor *want,
                     void *data, int64_t step)
{
	mlrti_ckpt_file *f;
	mlrti_ckpt_tensor t;
	int64_t off;
	int rc;

	MLRTI_CHECK_GOTO(file_get(fs, r, &f), rc, out);
	rc = mlrti_ckpt_file_tensor(f, want->name, &t, &off);
	if (rc != MLRT_OK)
		return mismatch(ck, want, step, "missing from the rank file");
	if (t.dtype != want->dtype || t.bytes != want->bytes)
		return mismatch(ck, want, step, "saved with another dtype or element count");
	rc = mlrti_ckpt_file_read(f, off, data, t.bytes);
out:
	return rc;
}

/* This rank's block of a sharded tensor, from every saved block that
 * overlaps it. */
static int load_shard(const mlrt_ckpt *ck, files *fs, const mlrti_ckpt_tensor *want,
                      void *data, int64_t step)
{
	int64_t start[MLRT_CKPT_MAX_DIMS], count[MLRT_CKPT_MAX_DIMS], dst[MLRT_CKPT_MAX_DIMS];
	int64_t covered = 0, need = mlrti_ckpt_elems(want->ndim, want->shape);
	int rc = MLRT_OK;

	for (int r = 0; r < fs->n && rc == MLRT_OK && covered < need; r++) {
		mlrti_ckpt_file *f;
		mlrti_ckpt_tensor t;
		int64_t off, n = 1;

		MLRTI_CHECK_GOTO(file_get(fs, r, &f), rc, out);
		if (mlrti_ckpt_file_tensor(f, want->name, &t, &off) != MLRT_OK)
			return mismatch(ck, want, step, "missing from a rank file");
		if (t.ndim != want->ndim || t.dtype != want->dtype ||
		    memcmp(t.global_shape, want->global_shape, sizeof(int64_t) * (size_t)t.ndim) != 0)
			return mismatch(ck, want, step, "saved with another dtype or global shape");
		for (int d = 0; d < t.ndim; d++) {
			int64_t lo = t.offset[d] > want->offset[d] ? t.offset[d] : want->offset[d];
			int64_t hi_t = t.offset[d] + t.shape[d], hi_w = want->offset[d] + want->shape[d];
			int64_t hi = hi_t < hi_w ? hi_t : hi_w;

			count[d] = hi > lo ? hi - lo : 0;
			start[d] = lo - t.offset[d];
			dst[d] = lo - want->offset[d];
			n *= count[d];
		}
		if (n == 0)
			continue;
		MLRTI_CHECK_GOTO(mlrti_ckpt_file_read_block(f, &t, start, count, data, want->shape,
		                                            dst),
		                 rc, out);
		covered += n;
	}
	if (rc == MLRT_OK && covered != need)
		return mismatch(ck, want, step, "the saved shards do not cover this rank's block");
out:
	return rc;
}

static int load_all(mlrt_ckpt *ck, const char *stepdir, const mlrti_ckpt_manifest *m)
{
	files fs = {.stepdir = stepdir, .n = m->world_size};
	int rc = MLRT_OK;

	fs.f = calloc((size_t)m->world_size, sizeof(*fs.f));
	fs.open = calloc((size_t)m->world_size, sizeof(*fs.open));
	if (fs.f == NULL || fs.open == NULL) {
		rc = MLRT_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < ck->n && rc == MLRT_OK; i++) {
		const mlrti_ckpt_tensor *want = &ck->t[i];
		const mlrti_ckpt_tensor *have = NULL;
		void *dst = ck->device[i] >= 0 ? ck->staging[i] : ck->data[i];
		size_t j;

		for (j = 0; j < m->ntensors; j++)
			if (strcmp(m->tensors[j].name, want->name) == 0) {
				have = &m->tensors[j];
				break;
			}
		if (have == NULL || have->kind != want->kind) {
			rc = mismatch(ck, want, m->step, have ? "saved as another kind of tensor"
			                                      : "not in the checkpoint");
			break;
		}
		switch (want->kind) {
		case MLRTI_CKPT_META:
			if (have->dtype != want->dtype || have->bytes != want->bytes)
				rc = mismatch(ck, want, m->step, "saved with another dtype or count");
			else
				memcpy(ck->data[i], m->meta[j], want->bytes);
			break;
		case MLRTI_CKPT_RANK:
			if (ck->rank >= m->world_size)
				rc = mismatch(ck, want, m->step,
				              "it is per-rank and this rank did not exist when it was "
				              "saved; register it as replicated or as a shard to restore "
				              "at another world size");
			else
				rc = load_flat(ck, &fs, ck->rank, want, dst, m->step);
			break;
		case MLRTI_CKPT_REPLICATED:
			rc = load_flat(ck, &fs, 0, want, dst, m->step);
			break;
		case MLRTI_CKPT_SHARD:
			rc = load_shard(ck, &fs, want, dst, m->step);
			break;
		default:
			rc = MLRT_ERR_INTERNAL;
		}
	}
	if (rc == MLRT_OK && ck->ndevice > 0)
		rc = mlrti_ckpt_dev_from_host(ck, m->step);
out:
	for (int r = 0; fs.open != NULL && r < fs.n; r++)
		if (fs.open[r])
			mlrti_ckpt_file_close(&fs.f[r]);
	free(fs.open);
	free(fs.f);
	return rc;
}

/* Try step cand (the k-th candidate); MLRT_OK when restored. */
static int try_step(mlrt_ckpt *ck, int64_t seq, int k, int64_t cand, void *scratch)
{
	char stepdir[PATH_MAX], what[32];
	mlrti_ckpt_manifest m;
	int rc, who;

	MLRTI_CHECK_GOTO(mlrti_ckpt_step_path(stepdir, sizeof(stepdir), ck->dir, cand), rc, out);
	rc = mlrti_ckpt_read_manifest(stepdir, &m);
	if (rc == MLRT_OK)
		rc = verify_share(ck, stepdir, &m, scratch);
	snprintf(what, sizeof(what), "verify%d", k);
	rc = agree(ck, seq, what, rc == MLRT_OK ? MLRT_OK : MLRT_ERR_CORRUPT, &who);
	if (rc == MLRT_OK) {
		rc = load_all(ck, stepdir, &m);
		snprintf(what, sizeof(what), "load%d", k);
		rc = agree(ck, seq, what, rc, &who);
	}
	if (rc != MLRT_OK && ck->rank == 0 && rc != MLRT_ERR_INVALID)
		mlrt_log(MLRT_LOG_WARN, "ckpt: step %" PRId64 " of %s cannot be restored (rank %d: "
		         "%s)", cand, ck->dir, who, mlrt_strerror(rc));
	mlrti_ckpt_manifest_fini(&m);
out:
	return rc;
}

int mlrt_ckpt_restore(mlrt_ckpt *ck, int64_t *step)
{
	int64_t cand[MAX_CANDIDATES], seq;
	void *scratch = NULL;
	int n = 0, rc;

	if (ck == NULL)
		return MLRT_ERR_INVALID;
	(void)mlrti_ckpt_quiesce(ck);
	seq = ck->seq++;
	MLRTI_CHECK_GOTO(candidates(ck, seq, cand, &n), rc, out);
	scratch = malloc(SCRATCH_BYTES);
	if (scratch == NULL) {
		rc = MLRT_ERR_NOMEM;
		goto out;
	}
	rc = MLRT_ERR_NOT_FOUND;
	for (int k = 0; k < n; k++) {
		rc = try_step(ck, seq, k, cand[k], scratch);
		if (rc == MLRT_OK) {
			ck->committed = cand[k];
			if (step != NULL)
				*step = cand[k];
			mlrt_log(MLRT_LOG_INFO, "ckpt: restored step %" PRId64 " from %s", cand[k],
			         ck->dir);
			goto out;
		}
		/* Damage sends us to the step before; anything else (a
		 * mismatch, a silent rank) would repeat there. */
		if (rc != MLRT_ERR_CORRUPT && rc != MLRT_ERR_IO)
			goto out;
		rc = MLRT_ERR_NOT_FOUND;
	}
	if (ck->rank == 0)
		mlrt_log(n > 0 ? MLRT_LOG_WARN : MLRT_LOG_INFO,
		         "ckpt: no %scheckpoint to restore in %s", n > 0 ? "valid " : "", ck->dir);
out:
	free(scratch);
	return rc;
}
