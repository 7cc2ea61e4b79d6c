/* Saving one step: every rank writes its file, rank 0 commits.
 *
 *   rank 0: prepare DIR/step-N (an old one is uncommitted and emptied)
 *           -> posts <seq>/ready
 *   all:    write rank-R.h5 (temporary name, fsync, rename)
 *           -> post <seq>/done/R with the file's size or the error
 *   rank 0: once every rank is done: fsync the step directory, write the
 *           manifest (temporary name, fsync, rename, fsync) = committed
 *           -> posts <seq>/commit
 *   all:    return the commit's status
 *   rank 0: later, off the training loop's path (the writer thread):
 *           drop old steps (mlrti_ckpt_drop_old_steps)
 *
 * A crash anywhere before the manifest's rename leaves the step without a
 * manifest: not committed, removed by the next commit. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mlrt/store.h>

#include "ckpt/ckpt.h"
#include "runtime/common.h"

/* Whether this rank writes tensor t into its file. */
static int writes(const mlrt_ckpt *ck, const mlrti_ckpt_tensor *t)
{
	return t->kind != MLRTI_CKPT_META && mlrti_ckpt_file_has(t, ck->rank);
}

static int write_own_file(mlrt_ckpt *ck, int64_t step, void *const *src, int64_t *bytes)
{
	char path[PATH_MAX];
	mlrti_ckpt_tensor *mine = calloc(ck->n + 1, sizeof(*mine));
	const void **from = calloc(ck->n + 1, sizeof(*from));
	size_t k = 0;
	int rc;

	if (mine == NULL || from == NULL) {
		rc = MLRT_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < ck->n; i++)
		if (writes(ck, &ck->t[i])) {
			mine[k] = ck->t[i];
			from[k++] = src[i];
		}
	MLRTI_CHECK_GOTO(mlrti_ckpt_rank_path(path, sizeof(path), ck->dir, step, ck->rank), rc, out);
	rc = mlrti_ckpt_write_file(path, step, ck->rank, ck->world, mine, from, k, bytes);
out:
	free(from);
	free(mine);
	return rc;
}

/* After step is committed: drop committed steps beyond opts.keep, every
 * uncommitted one, and any newer than step (left by an earlier run whose
 * history this one no longer follows). */
void mlrti_ckpt_drop_old_steps(mlrt_ckpt *ck, int64_t step)
{
	mlrti_ckpt_step *steps;
	size_t n, kept = 0;

	if (mlrti_ckpt_list_steps(ck->dir, &steps, &n) != MLRT_OK)
		return;
	for (size_t i = 0; i < n; i++) {
		int keep = steps[i].committed && steps[i].step <= step &&
		           (ck->opts.keep == 0 || kept < (size_t)ck->opts.keep);

		if (keep)
			kept++;
		else if (steps[i].step != step && mlrti_ckpt_remove_step(ck->dir, steps[i].step) == MLRT_OK)
			mlrt_log(MLRT_LOG_DEBUG, "ckpt: removed %s step %" PRId64 " of %s",
			         steps[i].committed ? "old" : "uncommitted", steps[i].step, ck->dir);
	}
	free(steps);
}

static int write_manifest(mlrt_ckpt *ck, int64_t step, void *const *src, int64_t *file_bytes)
{
	char stepdir[PATH_MAX];
	mlrti_ckpt_manifest m = {
		.step = step,
		.world_size = ck->world,
		.time = (int64_t)time(NULL),
		.file_bytes = file_bytes,
		.ntensors = ck->n,
		.tensors = ck->t,
		.meta = (void **)src,
	};
	int rc;

	MLRTI_CHECK_GOTO(mlrti_ckpt_step_path(stepdir, sizeof(stepdir), ck->dir, step), rc, out);
	/* The renames of every rank's file into place are durable... */
	MLRTI_CHECK_GOTO(mlrti_ckpt_fsync_path(stepdir), rc, out);
	/* ... before the manifest commits the step. */
	rc = mlrti_ckpt_write_manifest(stepdir, &m);
out:
	return rc;
}

/* Rank 0's part once its own file is written (or failed with rc). */
static int commit_as_root(mlrt_ckpt *ck, int64_t seq, int64_t step, void *const *src, int rc,
                          int64_t own_bytes)
{
	int64_t *bytes = calloc((size_t)ck->world, sizeof(*bytes));
	int who = 0, other;

	if (bytes == NULL)
		return MLRT_ERR_NOMEM;
	bytes[0] = own_bytes;
	if (ck->store != NULL) {
		int grc = mlrti_ckpt_gather(ck, seq, "done", bytes, &other);

		if (rc == MLRT_OK) {
			rc = grc;
			who = other;
		}
	}
	if (rc == MLRT_OK)
		rc = write_manifest(ck, step, src, bytes);
	if (rc == MLRT_OK) {
		ck->committed = step;
	} else {
		mlrti_ckpt_remove_step(ck->dir, step);
		if (ck->committed >= 0)
			mlrt_log(MLRT_LOG_ERROR,
			         "ckpt: step %" PRId64 " was not saved (rank %d: %s); step %" PRId64
			         " in %s is intact",
			         step, who, mlrt_strerror(rc), ck->committed, ck->dir);
		else
			mlrt_log(MLRT_LOG_ERROR, "ckpt: step %" PRId64 " was not saved (rank %d: %s)",
			         step, who, mlrt_strerror(rc));
	}
	free(bytes);
	return rc;
}

/* The protocol above; own_rc != MLRT_OK: this rank has nothing to write
 * (its device copy failed) and posts own_rc in place of its file. */
static int commit(mlrt_ckpt *ck, int64_t seq, int64_t step, void *const *src, int own_rc)
{
	char key[MLRTI_CKPT_KEY_MAX], what[MLRTI_CKPT_KEY_MAX];
	int64_t bytes = 0, unused, t0 = mlrti_now_ms(), t1, t2;
	int rc, posted;

	if (ck->rank == 0) {
		rc = mlrti_ckpt_prepare_step(ck->dir, step);
		mlrti_ckpt_key(ck, seq, "ready", key);
		if (ck->store != NULL && (posted = mlrti_ckpt_post(ck, key, rc, 0)) != MLRT_OK)
			return posted;
	} else {
		mlrti_ckpt_key(ck, seq, "ready", key);
		posted = mlrti_ckpt_await(ck, key, &rc, &unused);
		if (posted != MLRT_OK)
			return posted;
	}
	t1 = mlrti_now_ms();
	if (rc == MLRT_OK)
		rc = own_rc;
	if (rc == MLRT_OK)
		rc = write_own_file(ck, step, src, &bytes);
	t2 = mlrti_now_ms();
	mlrt_log(MLRT_LOG_DEBUG, "ckpt: step %" PRId64 ": %" PRId64 " ms until the directory was "
	         "ready, %" PRId64 " bytes written in %" PRId64 " ms", step, t1 - t0, bytes, t2 - t1);
	if (ck->rank == 0) {
		rc = commit_as_root(ck, seq, step, src, rc, bytes);
		mlrt_log(MLRT_LOG_DEBUG, "ckpt: step %" PRId64 ": committed %" PRId64 " ms after "
		         "this rank's file", step, mlrti_now_ms() - t2);
		if (ck->store == NULL)
			return rc;
		mlrti_ckpt_key(ck, seq, "commit", key);
		posted = mlrti_ckpt_post(ck, key, rc, step);
		/* Every rank has finished the previous operation by now: its
		 * keys can go. */
		snprintf(what, sizeof(what), "%s%" PRId64 "/", ck->prefix, seq - 1);
		if (seq > 0)
			mlrt_store_delete_prefix(ck->store, what, NULL);
		return posted != MLRT_OK ? posted : rc;
	}
	snprintf(what, sizeof(what), "done/%d", ck->rank);
	mlrti_ckpt_key(ck, seq, what, key);
	posted = mlrti_ckpt_post(ck, key, rc, bytes);
	if (posted != MLRT_OK)
		return posted;
	mlrti_ckpt_key(ck, seq, "commit", key);
	posted = mlrti_ckpt_await(ck, key, &rc, &unused);
	if (posted != MLRT_OK)
		return posted;
	if (rc == MLRT_OK)
		ck->committed = step;
	return rc;
}

int mlrti_ckpt_commit(mlrt_ckpt *ck, int64_t seq, int64_t step, void *const *src)
{
	return commit(ck, seq, step, src, MLRT_OK);
}

int mlrti_ckpt_commit_failed(mlrt_ckpt *ck, int64_t seq, int64_t step, int status)
{
	return commit(ck, seq, step, NULL, status);
}
