/* Gang rendezvous: a counter, one key per participant, and a "closed"
 * record set once by compare-and-set.
 *
 *   <job>/rdzv/<round>/count      participants so far (atomic add)
 *   <job>/rdzv/<round>/p/<i>      "<nproc> <order> <name>" of the i-th to join
 *   <job>/rdzv/<round>/name/<n>   claims name n in this round
 *   <job>/rdzv/<round>/closed     "ok <n>" (the first n are in) or "fail <n>"
 *
 * Every participant watches the round and may close it; CAS makes the
 * first decision the only one, so all of them see the same outcome. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/common.h"
#include "runtime/rdzv.h"

#define POLL_MS 50
#define BASE_MAX 192 /* "<job>/rdzv/<round>/"; job ids are at most 128 bytes */
#define KEY_MAX (BASE_MAX + MLRTI_RDZV_NAME_MAX + 32)

typedef struct round_keys {
	char base[BASE_MAX];
	char count[KEY_MAX];
	char closed[KEY_MAX];
} round_keys;

static int cmp_member(const void *a, const void *b)
{
	const mlrti_rdzv_member *x = a, *y = b;

	if (x->order != y->order)
		return x->order < y->order ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Parse a participant record "<nproc> <order> <name>"; name points into rec. */
static int parse_record(const char *rec, int *nproc, int *order, const char **name)
{
	int used = 0;

	if (sscanf(rec, "%d %d %n", nproc, order, &used) != 2 || *nproc < 1 || used <= 0 ||
	    rec[used] == '\0' || strlen(rec + used) >= MLRTI_RDZV_NAME_MAX)
		return -1;
	*name = rec + used;
	return 0;
}

/* Read the first n participants' records into res, sorted by name. */
static int read_members(mlrt_store *st, const round_keys *k, int n, int timeout_ms,
                        const char *self, mlrti_rdzv_result *res)
{
	char key[KEY_MAX];
	const char *keys[1] = {key};
	int rc = MLRT_OK, first = 0;

	res->members = calloc((size_t)n, sizeof(*res->members));
	if (res->members == NULL)
		return MLRT_ERR_NOMEM;
	res->index = -1;
	for (int i = 0; i < n; i++) {
		void *val = NULL;
		size_t len;
		const char *name;

		snprintf(key, sizeof(key), "%sp/%d", k->base, i);
		/* A participant adds to the counter before it writes its record. */
		rc = mlrt_store_wait(st, keys, 1, timeout_ms);
		if (rc == MLRT_OK)
			rc = mlrt_store_get(st, key, &val, &len);
		if (rc != MLRT_OK)
			return rc;
		if (parse_record(val, &res->members[i].nproc, &res->members[i].order, &name) != 0) {
			mlrt_log(MLRT_LOG_ERROR, "rendezvous: malformed participant record %s", key);
			free(val);
			return MLRT_ERR_PROTOCOL;
		}
		snprintf(res->members[i].name, MLRTI_RDZV_NAME_MAX, "%s", name);
		free(val);
	}
	qsort(res->members, (size_t)n, sizeof(*res->members), cmp_member);
	for (int i = 0; i < n; i++) {
		res->members[i].first_rank = first;
		first += res->members[i].nproc;
		if (strcmp(res->members[i].name, self) == 0)
			res->index = i;
	}
	res->nmembers = n;
	res->world_size = first;
	return MLRT_OK;
}

/* Fill res->error for a round that failed with n participants. */
static void describe_failure(mlrt_store *st, const round_keys *k, const mlrti_rdzv_opts *o, int n,
                             mlrti_rdzv_result *res)
{
	char joined[512] = "", missing[512] = "", key[KEY_MAX];
	size_t jl = 0, ml = 0;

	for (int i = 0; i < n && jl < sizeof(joined); i++) {
		void *val = NULL;
		size_t len;
		int nproc, order;
		const char *name;

		snprintf(key, sizeof(key), "%sp/%d", k->base, i);
		if (mlrt_store_get(st, key, &val, &len) == MLRT_OK &&
		    parse_record(val, &nproc, &order, &name) == 0)
			jl += (size_t)snprintf(joined + jl, sizeof(joined) - jl, "%s%s", jl ? ", " : "",
			                       name);
		free(val);
	}
	for (size_t e = 0; e < o->nexpected && ml < sizeof(missing); e++) {
		char claim[KEY_MAX];
		void *val = NULL;
		size_t len;

		snprintf(claim, sizeof(claim), "%sname/%s", k->base, o->expected[e]);
		if (mlrt_store_get(st, claim, &val, &len) == MLRT_ERR_NOT_FOUND)
			ml += (size_t)snprintf(missing + ml, sizeof(missing) - ml, "%s%s",
			                       ml ? ", " : "", o->expected[e]);
		free(val);
	}
	if (o->nexpected == 0 && n < o->min)
		snprintf(missing, sizeof(missing), "%d more, not named in advance", o->min - n);
	snprintf(res->error, sizeof(res->error),
	         "rendezvous of job %s (generation %" PRId64 ") failed after %.1f s: %d of %d "
	         "needed participants joined (joined: %s; missing: %s)",
	         o->job, o->round, o->timeout_ms / 1000.0, n, o->min, jl ? joined : "none",
	         missing[0] ? missing : "none");
}

/* Try to close the round with outcome "<what> <n>"; returns the outcome
 * that won in *closed (ours or an earlier one). */
static int close_round(mlrt_store *st, const round_keys *k, const char *what, int64_t n,
                       char *closed, size_t cap)
{
	char want[64];
	void *cur = NULL;
	size_t len;
	int rc;

	snprintf(want, sizeof(want), "%s %" PRId64, what, n);
	rc = mlrt_store_cas(st, k->closed, NULL, 0, want, strlen(want), NULL, &cur, &len);
	if (rc == MLRT_OK)
		snprintf(closed, cap, "%s", cur != NULL ? (char *)cur : "");
	free(cur);
	return rc;
}

/* Whether every awaited participant has joined the round. */
static int all_claimed(mlrt_store *st, const round_keys *k, const mlrti_rdzv_opts *o)
{
	for (size_t e = 0; e < o->nawait; e++) {
		char claim[KEY_MAX];
		void *val = NULL;
		size_t len;
		int rc;

		snprintf(claim, sizeof(claim), "%sname/%s", k->base, o->await[e]);
		rc = mlrt_store_get(st, claim, &val, &len);
		free(val);
		if (rc != MLRT_OK)
			return 0;
	}
	return 1;
}

/* Watch the round until it is closed, closing it ourselves when its rule
 * says so.  *closed receives the outcome text. */
static int watch_round(mlrt_store *st, const round_keys *k, const mlrti_rdzv_opts *o,
                       char *closed, size_t cap)
{
	const char *keys[1] = {k->closed};
	int64_t start = mlrti_now_ms(), min_reached_at = -1;

	for (;;) {
		int64_t now, count;
		void *val = NULL;
		size_t len;
		int rc = mlrt_store_wait(st, keys, 1, POLL_MS);

		if (rc == MLRT_OK) {
			rc = mlrt_store_get(st, k->closed, &val, &len);
			if (rc == MLRT_OK)
				snprintf(closed, cap, "%s", (char *)val);
			free(val);
			return rc;
		}
		if (rc != MLRT_ERR_TIMEOUT)
			return rc;
		if (o->cancel != NULL && *o->cancel)
			return MLRT_ERR_ABORTED;
		rc = mlrt_store_add(st, k->count, 0, &count);
		if (rc != MLRT_OK)
			return rc;
		now = mlrti_now_ms();
		if (count >= o->min && min_reached_at < 0)
			min_reached_at = now;
		if (count >= o->max ||
		    (o->expect > 0 && count >= o->expect && count >= o->min && all_claimed(st, k, o)) ||
		    (min_reached_at >= 0 && now - min_reached_at >= o->last_call_ms))
			return close_round(st, k, "ok", count < o->max ? count : o->max, closed, cap);
		if (min_reached_at < 0 && now - start >= o->timeout_ms)
			return close_round(st, k, "fail", count, closed, cap);
	}
}

int mlrti_rdzv_join(mlrt_store *st, const mlrti_rdzv_opts *o, const char *name, int nproc,
                    mlrti_rdzv_result *res)
{
	char key[KEY_MAX], rec[MLRTI_RDZV_NAME_MAX + 32], closed[64] = "";
	int64_t idx, n = 0;
	int swapped = 0, rc;

	memset(res, 0, sizeof(*res));
	res->index = -1;
	if (st == NULL || o == NULL || name == NULL || o->job == NULL || o->min < 1 ||
	    o->max < o->min || nproc < 1 || o->timeout_ms < 0 || o->last_call_ms < 0 ||
	    strlen(name) == 0 || strlen(name) >= MLRTI_RDZV_NAME_MAX || strchr(name, '/') != NULL ||
	    strlen(o->job) > 128)
		return MLRT_ERR_INVALID;

	round_keys k;
	snprintf(k.base, sizeof(k.base), "%s/rdzv/%" PRId64 "/", o->job, o->round);
	snprintf(k.count, sizeof(k.count), "%scount", k.base);
	snprintf(k.closed, sizeof(k.closed), "%sclosed", k.base);

	snprintf(key, sizeof(key), "%sname/%s", k.base, name);
	rc = mlrt_store_cas(st, key, NULL, 0, "1", 1, &swapped, NULL, NULL);
	if (rc != MLRT_OK)
		return rc;
	if (!swapped) {
		snprintf(res->error, sizeof(res->error),
		         "rendezvous: '%s' already joined generation %" PRId64 " of job %s", name,
		         o->round, o->job);
		return MLRT_ERR_EXISTS;
	}
	rc = mlrt_store_add(st, k.count, 1, &idx);
	if (rc != MLRT_OK)
		return rc;
	snprintf(key, sizeof(key), "%sp/%" PRId64, k.base, idx - 1);
	snprintf(rec, sizeof(rec), "%d %d %s", nproc, o->order, name);
	rc = mlrt_store_set(st, key, rec, strlen(rec));
	if (rc != MLRT_OK)
		return rc;

	rc = watch_round(st, &k, o, closed, sizeof(closed));
	if (rc != MLRT_OK)
		return rc;
	if (sscanf(closed, "fail %" SCNd64, &n) == 1) {
		describe_failure(st, &k, o, (int)n, res);
		return MLRT_ERR_TIMEOUT;
	}
	if (sscanf(closed, "ok %" SCNd64, &n) != 1 || n < 1) {
		mlrt_log(MLRT_LOG_ERROR, "rendezvous: malformed outcome '%s' at %s", closed, k.closed);
		return MLRT_ERR_PROTOCOL;
	}
	if (idx > n) {
		snprintf(res->error, sizeof(res->error),
		         "rendezvous: generation %" PRId64 " of job %s closed with %" PRId64
		         " participants before '%s' joined",
		         o->round, o->job, n, name);
		return MLRT_ERR_ABORTED;
	}
	rc = read_members(st, &k, (int)n, o->timeout_ms + o->last_call_ms, name, res);
	if (rc != MLRT_OK)
		return rc;
	res->generation = o->round;
	if (res->index < 0)
		return MLRT_ERR_INTERNAL;
	return MLRT_OK;
}

void mlrti_rdzv_result_fini(mlrti_rdzv_result *res)
{
	free(res->members);
	res->members = NULL;
	res->nmembers = 0;
}
