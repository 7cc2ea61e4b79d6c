/* Elastic state in memory: a shared-memory segment per host with two
 * slots, the active one named in its header (include/mlrt/elastic.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mlrt/comm.h>
#include <mlrt/elastic.h>

#include "ckpt/ckpt.h"
#include "runtime/common.h"

#define ES_MAGIC 0x6d6c72742d657331ULL /* "mlrt-es1" */
#define ES_HDR_BYTES 4096
#define ES_MAX_BUFS 256

typedef struct es_hdr {
	uint64_t magic;
	uint64_t layout;       /* hash of the registered names, counts and dtypes */
	uint64_t bytes;        /* payload of one slot */
	int64_t step[2];
	_Atomic int64_t active; /* the slot last completed, or -1 */
} es_hdr;

typedef struct es_buf {
	char name[64];
	void *data;
	size_t count;
	mlrt_dtype t;
} es_buf;

struct mlrt_elastic {
	mlrt_ctx *ctx;
	char shm_name[256];
	es_buf bufs[ES_MAX_BUFS];
	int nbufs;
	size_t bytes;
	es_hdr *seg;           /* mapped on local rank 0 once committed or restored */
	size_t seg_bytes;
};

void mlrti_elastic_segment_name(const char *job, const char *host, char *buf, size_t cap)
{
	snprintf(buf, cap, "/mlrt-es-%s-%s", job, host);
	for (char *p = buf + 1; *p != '\0'; p++)
		if (*p == '/')
			*p = '_';
}

static uint64_t layout_hash(const mlrt_elastic *es)
{
	uint64_t h = 1469598103934665603ULL;

	for (int i = 0; i < es->nbufs; i++) {
		const es_buf *b = &es->bufs[i];
		uint64_t parts[2] = {b->count, (uint64_t)b->t};

		for (const char *p = b->name; *p != '\0'; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211ULL;
		for (size_t k = 0; k < sizeof(parts); k++)
			h = (h ^ ((const unsigned char *)parts)[k]) * 1099511628211ULL;
	}
	return h;
}

int mlrt_elastic_open(mlrt_ctx *ctx, mlrt_elastic **out)
{
	mlrt_elastic *es;
	char host[128] = "";

	if (ctx == NULL || out == NULL)
		return MLRT_ERR_INVALID;
	es = calloc(1, sizeof(*es));
	if (es == NULL)
		return MLRT_ERR_NOMEM;
	/* The same host name as the communicator's (MLRT_HOSTNAME first). */
	if (getenv("MLRT_HOSTNAME") != NULL && *getenv("MLRT_HOSTNAME") != '\0')
		snprintf(host, sizeof(host), "%s", getenv("MLRT_HOSTNAME"));
	else
		gethostname(host, sizeof(host) - 1);
	es->ctx = ctx;
	mlrti_elastic_segment_name(mlrt_job_id(ctx), host, es->shm_name, sizeof(es->shm_name));
	*out = es;
	return MLRT_OK;
}

int mlrt_elastic_add(mlrt_elastic *es, const char *name, void *data, size_t count, mlrt_dtype t)
{
	es_buf *b;

	if (es == NULL || name == NULL || (data == NULL && count > 0) || mlrt_dtype_size(t) == 0 ||
	    strlen(name) >= sizeof(b->name))
		return MLRT_ERR_INVALID;
	if (es->nbufs == ES_MAX_BUFS || es->seg != NULL) {
		mlrt_log(MLRT_LOG_ERROR, "elastic: cannot add '%s': %s", name,
		         es->seg != NULL ? "register every buffer before the first commit or restore"
		                         : "too many buffers");
		return MLRT_ERR_INVALID;
	}
	b = &es->bufs[es->nbufs++];
	snprintf(b->name, sizeof(b->name), "%s", name);
	b->data = data;
	b->count = count;
	b->t = t;
	es->bytes += count * mlrt_dtype_size(t);
	return MLRT_OK;
}

/* Map the host's segment: create (and size) it for a commit, or only open
 * an existing one for a restore.  A segment of another layout is replaced
 * on commit and ignored on restore. */
static int map_segment(mlrt_elastic *es, int create)
{
	size_t slot = (es->bytes + 4095) & ~(size_t)4095;
	size_t want = ES_HDR_BYTES + 2 * slot;
	uint64_t layout = layout_hash(es);
	struct stat st;
	int fd, err;
	void *m;

	if (es->seg != NULL)
		return MLRT_OK;
	fd = shm_open(es->shm_name, O_RDWR | (create ? O_CREAT : 0), 0600);
	if (fd < 0)
		return create ? MLRT_ERR_IO : MLRT_ERR_NOT_FOUND;
	/* A segment of another size holds another layout: nothing to read
	 * (and mapping past its end would fault). */
	if (!create && (fstat(fd, &st) != 0 || (size_t)st.st_size != want)) {
		close(fd);
		return MLRT_ERR_NOT_FOUND;
	}
	err = 0;
	if (create && ftruncate(fd, (off_t)want) == 0)
		err = posix_fallocate(fd, 0, (off_t)want);
	else if (create)
		err = errno;
	if (err != 0) {
		mlrt_log(MLRT_LOG_ERROR, "elastic: cannot size /dev/shm%s to %zu bytes: %s", es->shm_name,
		         want, strerror(err));
		close(fd);
		return err == ENOSPC ? MLRT_ERR_NOSPACE : MLRT_ERR_IO;
	}
	m = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return create ? MLRT_ERR_IO : MLRT_ERR_NOT_FOUND;
	es->seg = m;
	es->seg_bytes = want;
	if (es->seg->magic != ES_MAGIC || es->seg->layout != layout || es->seg->bytes != es->bytes) {
		if (!create) { /* another program's, or an older layout */
			munmap(m, want);
			es->seg = NULL;
			return MLRT_ERR_NOT_FOUND;
		}
		memset(es->seg, 0, sizeof(*es->seg));
		es->seg->layout = layout;
		es->seg->bytes = es->bytes;
		atomic_store(&es->seg->active, -1);
		es->seg->magic = ES_MAGIC;
	}
	return MLRT_OK;
}

static char *slot_data(mlrt_elastic *es, int64_t s)
{
	return (char *)es->seg + ES_HDR_BYTES + (size_t)s * ((es->bytes + 4095) & ~(size_t)4095);
}

int mlrt_elastic_commit(mlrt_elastic *es, int64_t step)
{
	int64_t active, s;
	char *p;
	int rc;

	if (es == NULL || step < 0)
		return MLRT_ERR_INVALID;
	if (mlrt_local_rank(es->ctx) != 0)
		return MLRT_OK; /* one copy per host */
	rc = map_segment(es, 1);
	if (rc != MLRT_OK) {
		mlrt_log(MLRT_LOG_ERROR, "elastic: cannot keep state in /dev/shm%s: %s", es->shm_name,
		         mlrt_strerror(rc));
		return rc;
	}
	/* Fill the slot not in use, then make it the active one. */
	active = atomic_load_explicit(&es->seg->active, memory_order_acquire);
	s = active == 0 ? 1 : 0;
	p = slot_data(es, s);
	for (int i = 0; i < es->nbufs; i++) {
		size_t n = es->bufs[i].count * mlrt_dtype_size(es->bufs[i].t);

		memcpy(p, es->bufs[i].data, n);
		p += n;
	}
	es->seg->step[s] = step;
	atomic_store_explicit(&es->seg->active, s, memory_order_release);
	return MLRT_OK;
}

int mlrt_elastic_restore(mlrt_elastic *es, int64_t *step)
{
	mlrt_comm *world;
	int64_t mine = -1, newest, root;
	int rc;

	if (es == NULL || step == NULL)
		return MLRT_ERR_INVALID;
	world = mlrt_world(es->ctx);
	if (mlrt_local_rank(es->ctx) == 0 && map_segment(es, 0) == MLRT_OK) {
		int64_t a = atomic_load_explicit(&es->seg->active, memory_order_acquire);

		if (a == 0 || a == 1)
			mine = es->seg->step[a];
	}
	/* The newest step any host has; the lowest rank that has it sends. */
	newest = mine;
	MLRTI_CHECK_GOTO(mlrt_allreduce(world, &newest, &newest, 1, MLRT_I64, MLRT_MAX), rc, out);
	if (newest < 0)
		return MLRT_ERR_NOT_FOUND;
	root = mine == newest ? mlrt_rank(es->ctx) : INT64_MAX;
	MLRTI_CHECK_GOTO(mlrt_allreduce(world, &root, &root, 1, MLRT_I64, MLRT_MIN), rc, out);
	if (root == mlrt_rank(es->ctx)) {
		const char *p = slot_data(es, atomic_load(&es->seg->active));

		for (int i = 0; i < es->nbufs; i++) {
			size_t n = es->bufs[i].count * mlrt_dtype_size(es->bufs[i].t);

			memcpy(es->bufs[i].data, p, n);
			p += n;
		}
	}
	for (int i = 0; i < es->nbufs; i++)
		MLRTI_CHECK_GOTO(mlrt_broadcast(world, es->bufs[i].data, es->bufs[i].count,
		                                es->bufs[i].t, (int)root), rc, out);
	*step = newest;
	mlrt_log(MLRT_LOG_INFO, "elastic: state of step %" PRId64 " from rank %" PRId64
	         "'s host, in memory", newest, root);
	return MLRT_OK;
out:
	mlrt_log(MLRT_LOG_ERROR, "elastic: restore: %s", mlrt_strerror(rc));
	return rc;
}

int mlrt_elastic_close(mlrt_elastic *es)
{
	if (es == NULL)
		return MLRT_OK;
	if (es->seg != NULL)
		munmap(es->seg, es->seg_bytes);
	free(es);
	return MLRT_OK;
}
