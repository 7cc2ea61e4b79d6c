/* Communicator creation and teardown, failure handling and the watchdog. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/async.h"
#include "comm/comm.h"
#include "comm/device.h"
#include "runtime/common.h"

#define WATCHDOG_PERIOD_MS 250
#define PUBLISH_EVERY 4 /* watchdog periods between publications of progress */
#define DEFAULT_CHUNK_BYTES (256u * 1024) /* measured: better than 1 MiB on tcp and shm */
/* Two ranks over tcp: every column of a ring ends waiting for its last
 * bytes, and with two ranks nothing else overlaps that wait.  Measured in
 * paired back-to-back runs of the ring allreduce with zero-copy sends:
 * 4-8 MiB columns took 0.89-0.94 of the 2-rank pair algorithm's time at
 * 1 MiB, and 0.86-0.96 of 2 MiB columns' at 512 KiB-8 MiB. */
#define TWO_TCP_CHUNK_BYTES (4u << 20)
/* Messages up to this size may use the latency algorithms, which stage
 * a whole message in scratch memory. */
#define LATENCY_SCRATCH_BYTES (256u * 1024)
#define DEFAULT_FUSION_BYTES (64 << 20)

const char *mlrti_coll_name(mlrti_coll coll)
{
	switch (coll) {
	case MLRTI_COLL_ALLREDUCE: return "allreduce";
	case MLRTI_COLL_BROADCAST: return "broadcast";
	case MLRTI_COLL_ALLGATHER: return "allgather";
	case MLRTI_COLL_REDUCE_SCATTER: return "reduce_scatter";
	case MLRTI_COLL_BARRIER: return "barrier";
	case MLRTI_COLL_NONE: break;
	}
	return "none";
}

int mlrt_comm_rank(const mlrt_comm *c)
{
	return c->rank;
}

int mlrt_comm_size(const mlrt_comm *c)
{
	return c->size;
}

int mlrt_comm_get_stats(const mlrt_comm *c, mlrt_comm_stats *stats)
{
	if (c == NULL || stats == NULL)
		return MLRT_ERR_INVALID;
	stats->collectives = atomic_load(&c->collectives);
	stats->fused_requests = atomic_load(&c->fused_requests);
	return MLRT_OK;
}

int mlrt_comm_set_fusion_bytes(mlrt_comm *c, size_t bytes)
{
	if (c == NULL)
		return MLRT_ERR_INVALID;
	c->fusion_bytes = bytes;
	return MLRT_OK;
}

int mlrti_comm_fail(mlrt_comm *c, int status)
{
	int expected = MLRT_OK;

	if (atomic_compare_exchange_strong(&c->failed, &expected, status)) {
		if (status != MLRT_ERR_INVALID)
			mlrt_log(MLRT_LOG_ERROR, "comm: communicator failed at collective #%u (%s): %s; "
			                         "it refuses further collectives",
			         atomic_load(&c->started_seq),
			         mlrti_coll_name((mlrti_coll)atomic_load(&c->cur_coll)),
			         mlrt_strerror(status));
		if (c->tcp != NULL)
			mlrti_tcp_ops.abort(c);
		if (c->shm != NULL)
			mlrti_shm_ops.abort(c);
		if (c->ofi != NULL)
			mlrti_ofi_ops.abort(c);
	}
	return atomic_load(&c->failed);
}

/* The watchdog publishes this rank's progress (for hang attribution) and
 * turns the launcher's end-of-generation key into MLRT_ERR_PEER_LOST. */
static void *watchdog_main(void *arg)
{
	mlrt_comm *c = arg;
	char key[MLRTI_PREFIX_MAX + 32], val[64];
	unsigned published_start = UINT32_MAX, published_done = UINT32_MAX, ticks = 0;
	mlrt_store *st = NULL;

	if (mlrt_store_open(c->store_addr, &st) != MLRT_OK)
		return NULL;
	mlrt_store_set_timeout(st, 5000);
	snprintf(key, sizeof(key), "%sprogress/%d", c->prefix, c->rank);
	for (;;) {
		struct pollfd pfd = {.fd = c->watchdog_pipe[0], .events = POLLIN};
		unsigned done = atomic_load(&c->done_seq), started = atomic_load(&c->started_seq);
		void *why = NULL;
		size_t len;

		if (poll(&pfd, 1, WATCHDOG_PERIOD_MS) != 0)
			break; /* asked to stop */
		/* Progress (for hang attribution) goes out every PUBLISH_EVERY
		 * periods: waits that time out last far longer. */
		if (++ticks % PUBLISH_EVERY == 0 &&
		    (done != published_done || started != published_start)) {
			snprintf(val, sizeof(val), "%u %u %s", started, done,
			         mlrti_coll_name((mlrti_coll)atomic_load(&c->done_coll)));
			if (mlrt_store_set(st, key, val, strlen(val)) == MLRT_OK) {
				published_done = done;
				published_start = started;
			}
		}
		if (atomic_load(&c->failed) == MLRT_OK &&
		    mlrt_store_get(st, c->abort_key, &why, &len) == MLRT_OK) {
			mlrt_log(MLRT_LOG_ERROR, "comm: the gang ended: %s", (char *)why);
			mlrti_comm_fail(c, MLRT_ERR_PEER_LOST);
		}
		free(why);
	}
	mlrt_store_close(st);
	return NULL;
}

#define GATHER_BATCH 1024 /* keys in one mlrt_store_wait */

int mlrti_comm_gather(mlrt_comm *c, const char *what, const int *want, char **vals)
{
	char (*keys)[MLRTI_PREFIX_MAX + 64] = calloc((size_t)c->size, sizeof(*keys));
	const char **kp = calloc((size_t)c->size, sizeof(*kp));
	char prefix[MLRTI_PREFIX_MAX + 32];
	mlrt_store_kv *items = NULL;
	size_t nitems = 0;
	int64_t deadline = mlrti_now_ms() + c->timeout_ms;
	int n = 0, rc = MLRT_OK;

	for (int r = 0; r < c->size; r++)
		vals[r] = NULL;
	if (keys == NULL || kp == NULL) {
		rc = MLRT_ERR_NOMEM;
		goto out;
	}
	snprintf(prefix, sizeof(prefix), "%s%s/", c->prefix, what);
	for (int r = 0; r < c->size; r++)
		if (want == NULL || want[r]) {
			snprintf(keys[n], sizeof(keys[n]), "%s%d", prefix, r);
			kp[n] = keys[n];
			n++;
		}
	for (int i = 0; i < n && rc == MLRT_OK; i += GATHER_BATCH) {
		int64_t left = deadline - mlrti_now_ms();

		rc = mlrt_store_wait(c->store, kp + i, (size_t)(n - i < GATHER_BATCH ? n - i : GATHER_BATCH),
		                     left > 0 ? (int)left : 1);
	}
	if (rc == MLRT_ERR_TIMEOUT) {
		for (int i = 0; i < n; i++) {
			void *v = NULL;
			size_t len;

			if (mlrt_store_get(c->store, kp[i], &v, &len) == MLRT_ERR_NOT_FOUND) {
				mlrt_log(MLRT_LOG_ERROR, "comm: rank %s never published its %s (waited %d ms)",
				         kp[i] + strlen(prefix), what, c->timeout_ms);
				break;
			}
			free(v);
		}
	}
	if (rc == MLRT_OK)
		rc = mlrt_store_list(c->store, prefix, &items, &nitems);
	for (size_t i = 0; i < nitems && rc == MLRT_OK; i++) {
		int64_t r;

		if (mlrti_parse_int(items[i].key + strlen(prefix), 0, c->size - 1, &r) != MLRT_OK ||
		    (want != NULL && !want[r]))
			continue;
		vals[r] = mlrti_strdup(items[i].val);
		if (vals[r] == NULL)
			rc = MLRT_ERR_NOMEM;
	}
	for (int r = 0; r < c->size && rc == MLRT_OK; r++)
		if ((want == NULL || want[r]) && vals[r] == NULL) {
			mlrt_log(MLRT_LOG_ERROR, "comm: rank %d's %s vanished from the store", r, what);
			rc = MLRT_ERR_PROTOCOL;
		}
	mlrt_store_kv_free(items, nitems);
	if (rc != MLRT_OK)
		mlrti_comm_gather_free(c, vals);
out:
	free(keys);
	free(kp);
	return rc;
}

void mlrti_comm_gather_free(mlrt_comm *c, char **vals)
{
	for (int r = 0; r < c->size; r++) {
		free(vals[r]);
		vals[r] = NULL;
	}
}

/* Publish this rank's host and pid; learn everybody's. */
static int exchange_members(mlrt_comm *c)
{
	char key[MLRTI_PREFIX_MAX + 32], val[MLRTI_HOST_MAX + 32], host[MLRTI_HOST_MAX] = "";
	char **vals = calloc((size_t)c->size, sizeof(*vals));
	int rc;

	if (vals == NULL)
		return MLRT_ERR_NOMEM;

	/* MLRT_HOSTNAME names the host when its name is not unique, and lets
	 * tests lay out several "hosts" on one machine. */
	if (getenv("MLRT_HOSTNAME") != NULL && *getenv("MLRT_HOSTNAME") != '\0')
		snprintf(host, sizeof(host), "%s", getenv("MLRT_HOSTNAME"));
	else
		gethostname(host, sizeof(host) - 1);
	snprintf(key, sizeof(key), "%smember/%d", c->prefix, c->rank);
	snprintf(val, sizeof(val), "%d %s", (int)getpid(), host);
	rc = mlrt_store_set(c->store, key, val, strlen(val));
	if (rc == MLRT_OK)
		rc = mlrti_comm_gather(c, "member", NULL, vals);
	for (int r = 0; r < c->size && rc == MLRT_OK; r++) {
		int used = 0;

		if (sscanf(vals[r], "%d %n", &c->pids[r], &used) != 1 || used == 0) {
			mlrt_log(MLRT_LOG_ERROR, "comm: rank %d published a malformed member record", r);
			rc = MLRT_ERR_PROTOCOL;
			break;
		}
		snprintf(c->hosts[r], MLRTI_HOST_MAX, "%s", vals[r] + used);
		if (strcmp(c->hosts[r], c->hosts[0]) != 0)
			c->multi_host = 1;
	}
	if (rc == MLRT_OK)
		mlrti_comm_gather_free(c, vals);
	free(vals);
	return rc;
}

/* Which transport carries each link (MLRT_TRANSPORT forces one). */
static int open_transports(mlrt_comm *c)
{
	const char *force = getenv("MLRT_TRANSPORT");
	int *shm = calloc((size_t)c->size, sizeof(int));
	int *tcp = calloc((size_t)c->size, sizeof(int));
	int nshm = 0, ntcp = 0, rc = MLRT_OK;

	if (shm == NULL || tcp == NULL) {
		rc = MLRT_ERR_NOMEM;
		goto out;
	}
	if (force != NULL && strcmp(force, "ofi") == 0) {
		/* Every peer over libfabric, on this host too. */
		for (int r = 0; r < c->size; r++)
			tcp[r] = r != c->rank;
		rc = mlrti_ofi_open(c, tcp);
		goto out;
	}
	if (force != NULL && *force != '\0' && strcmp(force, "tcp") != 0 &&
	    strcmp(force, "shm") != 0) {
		mlrt_log(MLRT_LOG_ERROR, "comm: MLRT_TRANSPORT=%s is not one of tcp, shm, ofi", force);
		rc = MLRT_ERR_INVALID;
		goto out;
	}
	for (int r = 0; r < c->size; r++) {
		int local = strcmp(c->hosts[r], c->hosts[c->rank]) == 0;

		if (r == c->rank)
			continue;
		if (force != NULL && strcmp(force, "shm") == 0 && !local) {
			mlrt_log(MLRT_LOG_ERROR, "comm: MLRT_TRANSPORT=shm, but rank %d is on host %s",
			         r, c->hosts[r]);
			rc = MLRT_ERR_INVALID;
			goto out;
		}
		if (local && (force == NULL || *force == '\0' || strcmp(force, "shm") == 0))
			shm[r] = 1, nshm++;
		else
			tcp[r] = 1, ntcp++;
	}
	if (ntcp > 0)
		MLRTI_CHECK_GOTO(mlrti_tcp_open(c, tcp), rc, out);
	if (nshm > 0)
		MLRTI_CHECK_GOTO(mlrti_shm_open(c, shm), rc, out);
out:
	free(shm);
	free(tcp);
	return rc;
}

/* MLRT_CHUNK_BYTES, or 0 when unset: the default depends on the links. */
static int read_chunk_bytes(mlrt_comm *c)
{
	int64_t chunk;
	int rc = mlrti_env_int("MLRT_CHUNK_BYTES", 4096, 1 << 30, 0, &chunk);

	c->chunk_bytes = (size_t)chunk & ~(size_t)63;
	return rc;
}

/* Scratch for the algorithms, once the links are known. */
static int alloc_scratch(mlrt_comm *c)
{
	if (c->chunk_bytes == 0)
		c->chunk_bytes = c->size == 2 && c->links[1 - c->rank].ops == &mlrti_tcp_ops
		                         ? TWO_TCP_CHUNK_BYTES
		                         : DEFAULT_CHUNK_BYTES;
	c->scratch_size = 2 * c->chunk_bytes + LATENCY_SCRATCH_BYTES;
	if (posix_memalign(&c->scratch, 64, c->scratch_size) != 0)
		return MLRT_ERR_NOMEM;
	/* Touch it now: first-touch page faults are slow and belong here,
	 * not in the first collective. */
	memset(c->scratch, 0, c->scratch_size);
	return MLRT_OK;
}

static int read_fusion_bytes(mlrt_comm *c)
{
	int64_t v;
	int rc = mlrti_env_int("MLRT_FUSION_BYTES", 0, INT64_MAX, DEFAULT_FUSION_BYTES, &v);

	c->fusion_bytes = (size_t)v;
	return rc;
}

int mlrti_comm_create(mlrt_store *store, const char *store_addr, const char *gen_prefix,
                      const char *name, int rank, int size, int timeout_ms, mlrt_comm **out)
{
	mlrti_device_mode mode;
	mlrt_comm *c;
	int rc;

	*out = NULL;
	if ((store == NULL && size > 1) || rank < 0 || rank >= size || timeout_ms <= 0)
		return MLRT_ERR_INVALID;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return MLRT_ERR_NOMEM;
	c->store = store;
	c->rank = rank;
	c->size = size;
	c->timeout_ms = timeout_ms;
	c->watchdog_pipe[0] = c->watchdog_pipe[1] = -1;
	snprintf(c->store_addr, sizeof(c->store_addr), "%s", store_addr ? store_addr : "");
	snprintf(c->prefix, sizeof(c->prefix), "%scomm/%s/", gen_prefix, name);
	snprintf(c->abort_key, sizeof(c->abort_key), "%sabort", gen_prefix);
	c->links = calloc((size_t)size, sizeof(*c->links));
	c->hosts = calloc((size_t)size, sizeof(*c->hosts));
	c->pids = calloc((size_t)size, sizeof(*c->pids));
	if (c->links == NULL || c->hosts == NULL || c->pids == NULL) {
		rc = MLRT_ERR_NOMEM;
		goto fail;
	}
	MLRTI_CHECK_GOTO(read_chunk_bytes(c), rc, fail);
	MLRTI_CHECK_GOTO(read_fusion_bytes(c), rc, fail);
	MLRTI_CHECK_GOTO(mlrti_device_mode_read(&mode), rc, fail);
	c->device_mode = (int)mode;
	if (size > 1) {
		MLRTI_CHECK_GOTO(exchange_members(c), rc, fail);
		MLRTI_CHECK_GOTO(open_transports(c), rc, fail);
	}
	MLRTI_CHECK_GOTO(alloc_scratch(c), rc, fail);
	if (size > 1) {
		if (pipe2(c->watchdog_pipe, O_CLOEXEC) != 0 ||
		    pthread_create(&c->watchdog, NULL, watchdog_main, c) != 0) {
			rc = MLRT_ERR_IO;
			goto fail;
		}
		c->watchdog_running = 1;
	}
	*out = c;
	return MLRT_OK;
fail:
	mlrti_comm_free(c);
	return rc;
}

void mlrti_comm_free(mlrt_comm *c)
{
	if (c == NULL)
		return;
	mlrti_async_stop(c);
	/* Before the transports: an NCCL or staged collective never runs
	 * after this, and their buffers go first. */
	mlrti_device_free(c);
	if (c->watchdog_running) {
		if (write(c->watchdog_pipe[1], "x", 1) < 0)
			mlrt_log(MLRT_LOG_WARN, "comm: cannot stop the watchdog: %s", strerror(errno));
		pthread_join(c->watchdog, NULL);
	}
	for (int i = 0; i < 2; i++)
		if (c->watchdog_pipe[i] >= 0)
			close(c->watchdog_pipe[i]);
	if (c->tcp != NULL)
		mlrti_tcp_ops.close(c);
	if (c->shm != NULL)
		mlrti_shm_ops.close(c);
	if (c->ofi != NULL)
		mlrti_ofi_ops.close(c);
	free(c->scratch);
	free(c->links);
	free(c->hosts);
	free(c->pids);
	free(c);
}
