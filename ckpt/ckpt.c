/* The checkpoint API: open, register, save (synchronous or through the
 * writer thread), wait, close.  Restore is in restore.c, the commit
 * protocol in commit.c, the files in format.c.  See docs/ckpt.md. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <mlrt/ckpt.h>
#include <mlrt/runtime.h>
#include <mlrt/store.h>

#include "ckpt/ckpt.h"
#include "runtime/common.h"
#include "runtime/ctx.h"
#include "runtime/devptr.h"

#define DEFAULT_KEEP 3
#define DEFAULT_TIMEOUT_MS 600000

/* Numbers the mlrt_ckpt_open calls of this process, so that each
 * checkpoint directory of a job has its own keys (ranks open them in the
 * same order). */
static atomic_int next_id;

void mlrt_ckpt_opts_init(mlrt_ckpt_opts *o)
{
	if (o == NULL)
		return;
	memset(o, 0, sizeof(*o));
	o->keep = DEFAULT_KEEP;
	o->timeout_ms = DEFAULT_TIMEOUT_MS;
}

/* mkdir -p */
static int make_dirs(const char *dir)
{
	char path[PATH_MAX];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(path))
		return MLRT_ERR_INVALID;
	memcpy(path, dir, len + 1);
	for (char *p = path + 1; ; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;

		*p = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST) {
			mlrt_log(MLRT_LOG_ERROR, "ckpt: cannot create directory %s: %s", path,
			         strerror(errno));
			return MLRT_ERR_IO;
		}
		*p = c;
		if (c == '\0')
			break;
	}
	return MLRT_OK;
}

void mlrti_ckpt_key(const mlrt_ckpt *ck, int64_t seq, const char *what, char *key)
{
	snprintf(key, MLRTI_CKPT_KEY_MAX, "%s%" PRId64 "/%.64s", ck->prefix, seq, what);
}

int mlrti_ckpt_post(mlrt_ckpt *ck, const char *key, int status, int64_t value)
{
	char val[64];
	int len = snprintf(val, sizeof(val), "%d %" PRId64, status, value);

	return mlrt_store_set(ck->store, key, val, (size_t)len);
}

int mlrti_ckpt_await(mlrt_ckpt *ck, const char *key, int *status, int64_t *value)
{
	const char *keys[2] = {key, ck->abort_key};
	size_t which = 0, len = 0;
	void *val = NULL;
	int rc;

	rc = mlrt_store_wait_any(ck->store, keys, 2, ck->opts.timeout_ms, &which);
	if (rc == MLRT_OK && which == 1)
		rc = MLRT_ERR_ABORTED;
	if (rc == MLRT_OK)
		rc = mlrt_store_get(ck->store, key, &val, &len);
	if (rc == MLRT_OK && sscanf(val, "%d %" SCNd64, status, value) != 2)
		rc = MLRT_ERR_PROTOCOL;
	free(val);
	if (rc == MLRT_ERR_TIMEOUT)
		mlrt_log(MLRT_LOG_ERROR, "ckpt: rank %d waited %d ms for %s in vain; is every rank "
		         "saving and restoring in the same order?", ck->rank, ck->opts.timeout_ms, key);
	else if (rc == MLRT_ERR_ABORTED)
		mlrt_log(MLRT_LOG_ERROR, "ckpt: the gang failed while rank %d waited for %s",
		         ck->rank, key);
	return rc;
}

int mlrti_ckpt_gather(mlrt_ckpt *ck, int64_t seq, const char *what, int64_t *values, int *who)
{
	int first = MLRT_OK;

	*who = -1;
	for (int r = 0; r < ck->world; r++) {
		char key[MLRTI_CKPT_KEY_MAX], sub[64];
		int64_t v = 0;
		int status = MLRT_OK, rc;

		if (r == ck->rank && ck->rank == 0 && strcmp(what, "done") == 0)
			continue; /* rank 0 keeps its own */
		snprintf(sub, sizeof(sub), "%s/%d", what, r);
		mlrti_ckpt_key(ck, seq, sub, key);
		rc = mlrti_ckpt_await(ck, key, &status, &v);
		if (rc != MLRT_OK)
			status = rc;
		if (values != NULL)
			values[r] = v;
		if (status != MLRT_OK && first == MLRT_OK) {
			first = status;
			*who = r;
		}
		if (rc != MLRT_OK)
			break; /* the gang is gone or silent: no use waiting on */
	}
	return first;
}

/* Open dir as rank of world; with a store at addr (world > 1) the ranks
 * coordinate under "<gen_prefix>ckpt/<tag><id>/". */
static int open_as(const char *dir, const mlrt_ckpt_opts *o, int rank, int world,
                   const char *gen_prefix, const char *tag, const char *addr, int timeout_ms,
                   mlrt_ckpt **out)
{
	mlrt_ckpt *ck;
	int rc;

	if (out == NULL)
		return MLRT_ERR_INVALID;
	*out = NULL;
	if (dir == NULL || dir[0] == '\0' || strlen(dir) >= PATH_MAX - 64 ||
	    (o != NULL && (o->keep < 0 || o->timeout_ms < 0))) {
		mlrt_log(MLRT_LOG_ERROR, "ckpt: open: bad arguments (dir %s)", dir ? dir : "NULL");
		return MLRT_ERR_INVALID;
	}
	ck = calloc(1, sizeof(*ck));
	if (ck == NULL)
		return MLRT_ERR_NOMEM;
	mlrt_ckpt_opts_init(&ck->opts);
	if (o != NULL) {
		ck->opts.keep = o->keep;
		ck->opts.async = o->async;
		if (o->timeout_ms > 0)
			ck->opts.timeout_ms = o->timeout_ms;
	}
	ck->rank = rank;
	ck->world = world;
	ck->committed = -1;
	snprintf(ck->dir, sizeof(ck->dir), "%s", dir);
	snprintf(ck->prefix, sizeof(ck->prefix), "%sckpt/%s%d/", gen_prefix, tag,
	         atomic_fetch_add(&next_id, 1));
	snprintf(ck->abort_key, sizeof(ck->abort_key), "%sabort", gen_prefix);
	pthread_mutex_init(&ck->mu, NULL);
	pthread_cond_init(&ck->cv, NULL);
	MLRTI_CHECK_GOTO(make_dirs(dir), rc, fail);
	if (addr != NULL && world > 1) {
		MLRTI_CHECK_GOTO(mlrt_store_open(addr, &ck->store), rc, fail);
		MLRTI_CHECK_GOTO(mlrt_store_set_timeout(ck->store, timeout_ms), rc, fail);
	}
	*out = ck;
	return MLRT_OK;
fail:
	mlrt_ckpt_close(ck);
	return rc;
}

int mlrt_ckpt_open_opts(mlrt_ctx *ctx, const char *dir, const mlrt_ckpt_opts *o,
                        mlrt_ckpt **out)
{
	if (ctx == NULL) {
		if (out != NULL)
			*out = NULL;
		mlrt_log(MLRT_LOG_ERROR, "ckpt: open: no mlrt context");
		return MLRT_ERR_INVALID;
	}
	/* Parameter servers count among themselves: their checkpoints
	 * coordinate apart from the workers'. */
	return open_as(dir, o, mlrt_rank(ctx), mlrt_size(ctx), mlrti_ctx_gen_prefix(ctx),
	               mlrti_ctx_is_server(ctx) ? "s" : "", mlrti_ctx_store_addr(ctx),
	               mlrti_ctx_timeout_ms(ctx), out);
}

int mlrti_ckpt_open_local(const char *dir, const mlrt_ckpt_opts *o, mlrt_ckpt **out)
{
	return open_as(dir, o, 0, 1, "", "", NULL, 0, out);
}

int mlrt_ckpt_open(mlrt_ctx *ctx, const char *dir, mlrt_ckpt **ck)
{
	return mlrt_ckpt_open_opts(ctx, dir, NULL, ck);
}

static int valid_name(const char *name)
{
	size_t len = name ? strlen(name) : 0;

	if (len == 0 || len >= MLRTI_CKPT_NAME_MAX || name[0] == '/' || name[len - 1] == '/' ||
	    strstr(name, "//") != NULL || strcmp(name, ".") == 0)
		return 0;
	for (const char *p = name; *p; p++)
		if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') ||
		      ('0' <= *p && *p <= '9') || strchr("_-./", *p) != NULL))
			return 0;
	return 1;
}

/* Append a tensor to the registry after checking what every kind shares;
 * a buffer in device memory gets its pinned staging now (device.c). */
static int add(mlrt_ckpt *ck, const mlrti_ckpt_tensor *t, void *data)
{
	int dev = data != NULL ? mlrti_device_of(data) : -1, rc;

	pthread_mutex_lock(&ck->mu);
	int busy = ck->busy;

	pthread_mutex_unlock(&ck->mu);
	if (busy) {
		mlrt_log(MLRT_LOG_ERROR, "ckpt: cannot add %s while a save is being written; "
		         "register every buffer before the first save", t->name);
		return MLRT_ERR_INVALID;
	}
	if (!valid_name(t->name) || (uint32_t)t->dtype >= MLRT_DTYPE_COUNT ||
	    (data == NULL && t->bytes > 0)) {
		mlrt_log(MLRT_LOG_ERROR, "ckpt: cannot add tensor \"%s\": names use letters, "
		         "digits and _-./ (at most %d bytes), with a valid dtype and buffer",
		         t->name, MLRTI_CKPT_NAME_MAX - 1);
		return MLRT_ERR_INVALID;
	}
	if (dev >= 0 && t->kind == MLRTI_CKPT_META) {
		mlrt_log(MLRT_LOG_ERROR, "ckpt: metadata %s is in device memory (device %d); "
		         "keep metadata in host memory, or register the buffer with "
		         "mlrt_ckpt_add", t->name, dev);
		return MLRT_ERR_INVALID;
	}
	for (size_t i = 0; i < ck->n; i++)
		if (strcmp(ck->t[i].name, t->name) == 0) {
			mlrt_log(MLRT_LOG_ERROR, "ckpt: tensor %s is already registered", t->name);
			return MLRT_ERR_EXISTS;
		}
	if (ck->n == ck->cap) {
		size_t cap = ck->cap ? 2 * ck->cap : 16;
		mlrti_ckpt_tensor *nt = realloc(ck->t, cap * sizeof(*nt));
		void **nd, **ns, **nsrc;
		int *ndev;

		if (nt == NULL)
			return MLRT_ERR_NOMEM;
		ck->t = nt;
		nd = realloc(ck->data, cap * sizeof(*nd));
		if (nd == NULL)
			return MLRT_ERR_NOMEM;
		ck->data = nd;
		ns = realloc(ck->staging, cap * sizeof(*ns));
		if (ns == NULL)
			return MLRT_ERR_NOMEM;
		ck->staging = ns;
		ndev = realloc(ck->device, cap * sizeof(*ndev));
		if (ndev == NULL)
			return MLRT_ERR_NOMEM;
		ck->device = ndev;
		nsrc = realloc(ck->src, cap * sizeof(*nsrc));
		if (nsrc == NULL)
			return MLRT_ERR_NOMEM;
		ck->src = nsrc;
		ck->cap = cap;
	}
	ck->t[ck->n] = *t;
	ck->data[ck->n] = data;
	ck->staging[ck->n] = NULL;
	ck->device[ck->n] = dev;
	ck->src[ck->n] = data;
	if (dev >= 0) {
		rc = mlrti_ckpt_dev_register(ck, ck->n);
		if (rc != MLRT_OK)
			return rc; /* not registered: n unchanged */
		ck->src[ck->n] = ck->staging[ck->n];
		ck->ndevice++;
		mlrt_log(MLRT_LOG_DEBUG, "ckpt: %s is in the memory of device %d: %zu bytes of "
		         "pinned staging", t->name, dev, t->bytes);
	}
	ck->n++;
	return MLRT_OK;
}

static void flat(mlrti_ckpt_tensor *t, const char *name, mlrti_ckpt_kind kind, size_t count,
                 mlrt_dtype dt)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name ? name : "");
	t->kind = kind;
	t->dtype = dt;
	t->ndim = 1;
	t->shape[0] = t->global_shape[0] = (int64_t)count;
	t->bytes = count * mlrt_dtype_size(dt);
}

int mlrt_ckpt_add(mlrt_ckpt *ck, const char *name, void *data, size_t count, mlrt_dtype t)
{
	mlrti_ckpt_tensor d;

	if (ck == NULL)
		return MLRT_ERR_INVALID;
	flat(&d, name, MLRTI_CKPT_RANK, count, t);
	return add(ck, &d, data);
}

int mlrt_ckpt_add_replicated(mlrt_ckpt *ck, const char *name, void *data, size_t count,
                             mlrt_dtype t)
{
	mlrti_ckpt_tensor d;

	if (ck == NULL)
		return MLRT_ERR_INVALID;
	flat(&d, name, MLRTI_CKPT_REPLICATED, count, t);
	return add(ck, &d, data);
}

int mlrt_ckpt_add_meta(mlrt_ckpt *ck, const char *name, void *data, size_t count, mlrt_dtype t)
{
	mlrti_ckpt_tensor d;

	if (ck == NULL)
		return MLRT_ERR_INVALID;
	flat(&d, name, MLRTI_CKPT_META, count, t);
	if ((uint32_t)t >= MLRT_DTYPE_COUNT || d.bytes > MLRTI_CKPT_META_MAX) {
		mlrt_log(MLRT_LOG_ERROR, "ckpt: metadata %s is %zu bytes; at most %d fit in the "
		         "manifest (register larger state with mlrt_ckpt_add)",
		         d.name, d.bytes, MLRTI_CKPT_META_MAX);
		return MLRT_ERR_INVALID;
	}
	return add(ck, &d, data);
}

int mlrt_ckpt_add_shard(mlrt_ckpt *ck, const char *name, void *data, mlrt_dtype t, int ndim,
                        const int64_t *global_shape, const int64_t *offset,
                        const int64_t *shape)
{
	mlrti_ckpt_tensor d;

	if (ck == NULL || ndim < 1 || ndim > MLRT_CKPT_MAX_DIMS || global_shape == NULL ||
	    offset == NULL || shape == NULL) {
		mlrt_log(MLRT_LOG_ERROR, "ckpt: shard %s: ndim must be 1..%d with global shape, "
		         "offset and shape given", name ? name : "NULL", MLRT_CKPT_MAX_DIMS);
		return MLRT_ERR_INVALID;
	}
	flat(&d, name, MLRTI_CKPT_SHARD, 0, t);
	d.ndim = ndim;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || offset[i] < 0 || global_shape[i] < 0 ||
		    offset[i] + shape[i] > global_shape[i]) {
			mlrt_log(MLRT_LOG_ERROR, "ckpt: shard %s: dimension %d: block [%" PRId64
			         ", %" PRId64 ") lies outside the global extent %" PRId64,
			         d.name, i, offset[i], offset[i] + shape[i], global_shape[i]);
			return MLRT_ERR_INVALID;
		}
		d.shape[i] = shape[i];
		d.global_shape[i] = global_shape[i];
		d.offset[i] = offset[i];
	}
	if ((uint32_t)t < MLRT_DTYPE_COUNT)
		d.bytes = (size_t)mlrti_ckpt_elems(ndim, shape) * mlrt_dtype_size(t);
	return add(ck, &d, data);
}

/* ---- the writer thread ---- */

static void *writer_main(void *arg)
{
	mlrt_ckpt *ck = arg;

	pthread_mutex_lock(&ck->mu);
	for (;;) {
		while (!ck->busy && !ck->stop)
			pthread_cond_wait(&ck->cv, &ck->mu);
		if (!ck->busy)
			break;
		int save = ck->job_save, rc = MLRT_OK;
		int64_t step = ck->job_step, seq = ck->job_seq;

		pthread_mutex_unlock(&ck->mu);
		if (save)
			rc = mlrti_ckpt_commit(ck, seq, step, ck->staging);
		if (rc == MLRT_OK && ck->rank == 0)
			mlrti_ckpt_drop_old_steps(ck, step);
		pthread_mutex_lock(&ck->mu);
		if (save)
			ck->last_rc = rc;
		ck->busy = 0;
		pthread_cond_broadcast(&ck->cv);
	}
	pthread_mutex_unlock(&ck->mu);
	return NULL;
}

/* Give the (idle) writer a job: save step (save != 0), or only remove
 * the steps that step's commit made old. */
static int hand_over(mlrt_ckpt *ck, int save, int64_t step, int64_t seq)
{
	if (!ck->writer_started) {
		if (pthread_create(&ck->writer, NULL, writer_main, ck) != 0) {
			mlrt_log(MLRT_LOG_ERROR, "ckpt: cannot start the writer thread");
			return MLRT_ERR_NOMEM;
		}
		ck->writer_started = 1;
	}
	pthread_mutex_lock(&ck->mu);
	ck->job_save = save;
	ck->job_step = step;
	ck->job_seq = seq;
	ck->busy = 1;
	pthread_cond_broadcast(&ck->cv);
	pthread_mutex_unlock(&ck->mu);
	return MLRT_OK;
}

/* Wait until no save is handed to the writer; returns the status of the
 * last save not yet reported, and clears it. */
static int wait_idle(mlrt_ckpt *ck)
{
	int rc;

	pthread_mutex_lock(&ck->mu);
	while (ck->busy)
		pthread_cond_wait(&ck->cv, &ck->mu);
	rc = ck->last_rc;
	ck->last_rc = MLRT_OK;
	pthread_mutex_unlock(&ck->mu);
	return rc;
}

/* Staging memory for every host tensor, allocated at the first async
 * save and reused after; device tensors have theirs from registration
 * and are copied by mlrti_ckpt_dev_to_host. */
static int stage(mlrt_ckpt *ck)
{
	for (size_t i = 0; i < ck->n; i++) {
		if (ck->device[i] >= 0)
			continue;
		if (ck->staging[i] == NULL) {
			ck->staging[i] = malloc(ck->t[i].bytes > 0 ? ck->t[i].bytes : 1);
			if (ck->staging[i] == NULL) {
				mlrt_log(MLRT_LOG_ERROR, "ckpt: no memory to stage %s (%zu bytes)",
				         ck->t[i].name, ck->t[i].bytes);
				return MLRT_ERR_NOMEM;
			}
		}
		memcpy(ck->staging[i], ck->data[i], ck->t[i].bytes);
	}
	return MLRT_OK;
}

int mlrt_ckpt_save(mlrt_ckpt *ck, int64_t step)
{
	int rc;

	if (ck == NULL || step < 0)
		return MLRT_ERR_INVALID;
	rc = wait_idle(ck);
	if (rc != MLRT_OK)
		return rc;
	if (ck->opts.async) {
		MLRTI_CHECK_GOTO(stage(ck), rc, out);
		/* For device buffers this copy is the whole stall. */
		rc = ck->ndevice > 0 ? mlrti_ckpt_dev_to_host(ck, step) : MLRT_OK;
		if (rc != MLRT_OK) {
			/* The other ranks' writers are in the commit by now: fail it
			 * with them here (the writer is idle) rather than leave them
			 * waiting for our file. */
			rc = mlrti_ckpt_commit_failed(ck, ck->seq++, step, rc);
			goto out;
		}
		rc = hand_over(ck, 1, step, ck->seq++);
	} else {
		/* Device buffers are written from their staging: a failed copy
		 * fails the save on every rank through the commit protocol,
		 * which each rank must still join. */
		int copied = MLRT_OK;

		if (ck->ndevice > 0)
			copied = mlrti_ckpt_dev_to_host(ck, step);
		if (copied != MLRT_OK)
			rc = mlrti_ckpt_commit_failed(ck, ck->seq++, step, copied);
		else
			rc = mlrti_ckpt_commit(ck, ck->seq++, step, ck->src);
		/* Old steps go while training goes on. */
		if (rc == MLRT_OK && ck->rank == 0 && hand_over(ck, 0, step, 0) != MLRT_OK)
			mlrti_ckpt_drop_old_steps(ck, step);
	}
out:
	return rc;
}

int mlrt_ckpt_wait(mlrt_ckpt *ck, int64_t *step)
{
	int rc;

	if (ck == NULL)
		return MLRT_ERR_INVALID;
	rc = wait_idle(ck);
	if (step != NULL)
		*step = ck->committed;
	return rc;
}

/* For restore.c: the writer is idle and stays so (one user thread). */
int mlrti_ckpt_quiesce(mlrt_ckpt *ck)
{
	return wait_idle(ck);
}

int mlrt_ckpt_close(mlrt_ckpt *ck)
{
	int rc;

	if (ck == NULL)
		return MLRT_OK;
	rc = wait_idle(ck);
	if (ck->writer_started) {
		pthread_mutex_lock(&ck->mu);
		ck->stop = 1;
		pthread_cond_broadcast(&ck->cv);
		pthread_mutex_unlock(&ck->mu);
		pthread_join(ck->writer, NULL);
	}
	mlrti_ckpt_dev_fini(ck); /* the pinned staging of device tensors */
	for (size_t i = 0; i < ck->n; i++)
		free(ck->staging[i]);
	free(ck->staging);
	free(ck->src);
	free(ck->device);
	free(ck->data);
	free(ck->t);
	mlrt_store_close(ck->store);
	pthread_cond_destroy(&ck->cv);
	pthread_mutex_destroy(&ck->mu);
	free(ck);
	return rc;
}
