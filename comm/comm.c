/* Communicators and the store-based barrier. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "comm/comm.h"
#include "runtime/common.h"

int mlrti_comm_create(mlrt_store *store, const char *gen_prefix, const char *name, int rank,
                      int size, int timeout_ms, mlrt_comm **out)
{
	mlrt_comm *c;

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
	snprintf(c->prefix, sizeof(c->prefix), "%scomm/%s/", gen_prefix, name);
	snprintf(c->abort_key, sizeof(c->abort_key), "%sabort", gen_prefix);
	*out = c;
	return MLRT_OK;
}

void mlrti_comm_free(mlrt_comm *c)
{
	free(c);
}

int mlrt_comm_rank(const mlrt_comm *c)
{
	return c->rank;
}

int mlrt_comm_size(const mlrt_comm *c)
{
	return c->size;
}

/* Say why the generation ended, as the launcher wrote it. */
static void log_abort(mlrt_comm *c)
{
	void *why = NULL;
	size_t len;

	if (mlrt_store_get(c->store, c->abort_key, &why, &len) == MLRT_OK)
		mlrt_log(MLRT_LOG_ERROR, "barrier: the gang ended: %s", (char *)why);
	free(why);
}

/* Counter barrier on the store: every rank adds one to the round's counter;
 * the last to arrive sets the round's done key (and removes the previous
 * round's keys, which every rank has left by then); the others wait for
 * done or for the generation's abort key. */
int mlrt_barrier(mlrt_comm *c)
{
	char count_key[MLRTI_PREFIX_MAX + 40], done_key[MLRTI_PREFIX_MAX + 40];
	const char *keys[2];
	size_t which = 0;
	int64_t arrived;
	uint64_t seq;
	int rc;

	if (c == NULL)
		return MLRT_ERR_INVALID;
	if (c->size == 1)
		return MLRT_OK;
	seq = ++c->barrier_seq;
	snprintf(count_key, sizeof(count_key), "%sbarrier/%" PRIu64 "/count", c->prefix, seq);
	snprintf(done_key, sizeof(done_key), "%sbarrier/%" PRIu64 "/done", c->prefix, seq);

	rc = mlrt_store_add(c->store, count_key, 1, &arrived);
	if (rc != MLRT_OK)
		return rc;
	if (arrived == c->size) {
		rc = mlrt_store_set(c->store, done_key, "1", 1);
		if (rc == MLRT_OK && seq > 1) {
			char old[MLRTI_PREFIX_MAX + 40];

			snprintf(old, sizeof(old), "%sbarrier/%" PRIu64 "/", c->prefix, seq - 1);
			rc = mlrt_store_delete_prefix(c->store, old, NULL);
		}
		return rc;
	}
	keys[0] = done_key;
	keys[1] = c->abort_key;
	rc = mlrt_store_wait_any(c->store, keys, 2, c->timeout_ms, &which);
	if (rc == MLRT_ERR_TIMEOUT) {
		mlrt_log(MLRT_LOG_ERROR, "barrier %" PRIu64 ": not every rank of %d arrived within %d ms",
		         seq, c->size, c->timeout_ms);
		return rc;
	}
	if (rc != MLRT_OK)
		return rc;
	if (which == 1) {
		log_abort(c);
		return MLRT_ERR_PEER_LOST;
	}
	return MLRT_OK;
}
