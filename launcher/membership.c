/* Who is in the job, across generations: hosts that arrive while it runs
 * (admission), the last gang's hosts and who the next round waits for,
 * the membership log, and the job's end. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launcher/membership.h"
#include "runtime/common.h"

#define ADMISSION_POLL_MS 100

/* Remember the gang's hosts: the next round names them when they are
 * missing. */
void membership_remember(agent *a, const mlrti_rdzv_result *r)
{
	agent_fini(a);
	a->expected = calloc((size_t)r->nmembers, sizeof(*a->expected));
	if (a->expected == NULL)
		return;
	for (int i = 0; i < r->nmembers; i++)
		if ((a->expected[a->nexpected] = strdup(r->members[i].name)) != NULL)
			a->nexpected++;
}

int membership_expected_next(agent *a, int64_t gen, int *nlost_out)
{
	char key[300];
	mlrt_store_kv *lost = NULL;
	size_t nlost = 0;
	int64_t joiners = 0;

	*nlost_out = 0;
	snprintf(key, sizeof(key), "%s/g%" PRId64 "/lost/", a->job_id, gen);
	if (mlrt_store_list(a->store, key, &lost, &nlost) != MLRT_OK)
		return 0;
	/* The hosts the next round waits for by name: the last gang's, less
	 * the lost ones. */
	free(a->await);
	a->await = calloc((size_t)a->nexpected + 1, sizeof(*a->await));
	a->nawait = 0;
	for (int i = 0; a->await != NULL && i < a->nexpected; i++) {
		int gone = 0;

		for (size_t k = 0; k < nlost && !gone; k++)
			gone = strcmp(lost[k].key + strlen(key), a->expected[i]) == 0;
		if (!gone)
			a->await[a->nawait++] = a->expected[i];
	}
	mlrt_store_kv_free(lost, nlost);
	*nlost_out = (int)nlost;
	snprintf(key, sizeof(key), "%s/g%" PRId64 "/joiners", a->job_id, gen);
	if (a->await == NULL || mlrt_store_add(a->store, key, 0, &joiners) != MLRT_OK)
		return 0;
	return a->nawait + (int)joiners;
}

/* Whether name is a word of the space-separated list. */
static int in_list(const char *list, const char *name, size_t n)
{
	for (const char *p = list; (p = strstr(p, name)) != NULL; p++)
		if ((p == list || p[-1] == ' ') && strncmp(p, name, n) == 0 &&
		    (p[n] == ' ' || p[n] == '\0'))
			return 1;
	return 0;
}

/* The words of list a that are not in list b, as "x, y", or "none". */
static void missing_from(const char *a, const char *b, char *out, size_t cap)
{
	size_t used = 0;

	out[0] = '\0';
	for (const char *p = a; *p != '\0' && used < cap; p += strspn(p, " ")) {
		size_t w = strcspn(p, " ");
		char name[MLRTI_RDZV_NAME_MAX];

		snprintf(name, sizeof(name), "%.*s", (int)w, p);
		if (!in_list(b, name, strlen(name)))
			used += (size_t)snprintf(out + used, cap - used, "%s%s", used ? ", " : "", name);
		p += w;
	}
	if (used == 0)
		snprintf(out, cap, "none");
}

/* The first host of each generation logs how the gang changed since the
 * last one (under mlrun -H its log is the head's): who left, who joined,
 * the world size, and how long after the last generation ended the new
 * one formed.  <job>/members holds the last gang: "<gen> <host>...". */
void membership_log(agent *a, int64_t gen, const mlrti_rdzv_result *r)
{
	char key[300], cur[4096], left[1024], joined[1024], took[64] = "";
	void *prev = NULL, *ended = NULL;
	size_t used, len;
	int64_t prev_gen = -1;
	int off = 0;

	if (r->index != 0)
		return;
	used = (size_t)snprintf(cur, sizeof(cur), "%" PRId64, gen);
	for (int i = 0; i < r->nmembers && used < sizeof(cur); i++)
		used += (size_t)snprintf(cur + used, sizeof(cur) - used, " %s", r->members[i].name);
	const char *names = cur + strcspn(cur, " ") + 1;

	agent_job_key(a, "members", key, sizeof(key));
	if (mlrt_store_get(a->store, key, &prev, &len) != MLRT_OK ||
	    sscanf(prev, "%" SCNd64 " %n", &prev_gen, &off) != 1) {
		fprintf(stderr, "mlrun: membership: generation %" PRId64 " formed with %d host(s) "
		        "(%s), world size %d\n", gen, r->nmembers, names, r->world_size);
	} else {
		missing_from((char *)prev + off, names, left, sizeof(left));
		missing_from(names, (char *)prev + off, joined, sizeof(joined));
		snprintf(key, sizeof(key), "%s/g%" PRId64 "/ended", a->job_id, prev_gen);
		if (mlrt_store_get(a->store, key, &ended, &len) == MLRT_OK)
			snprintf(took, sizeof(took), " %.2f s after generation %" PRId64 " ended",
			         (mlrti_wall_ms() - strtoll(ended, NULL, 10)) / 1000.0, prev_gen);
		if (strcmp(left, "none") != 0 || strcmp(joined, "none") != 0)
			fprintf(stderr, "mlrun: membership: generation %" PRId64 " formed%s with %d "
			        "host(s), world size %d; left: %s; joined: %s\n", gen, took,
			        r->nmembers, r->world_size, left, joined);
	}
	free(prev);
	free(ended);
	agent_job_key(a, "members", key, sizeof(key));
	mlrt_store_set(a->store, key, cur, strlen(cur));
}

/* Whether key exists in the store. */
static int key_exists(mlrt_store *st, const char *key)
{
	void *val = NULL;
	size_t len;
	int rc = mlrt_store_get(st, key, &val, &len);

	free(val);
	return rc == MLRT_OK;
}

/* Which generation this host joins.  A host that arrives while the job
 * runs (elastic scale-up, a host coming back, or one that missed a round)
 * asks to join and waits for the running generation to end.  Returns the
 * generation, -1 when the job has already finished, -2 on interrupt or
 * when the job is gone (a message printed). */
int64_t membership_admission(agent *a)
{
	char key[300], abort_key[300], done_key[300], alive[300];
	int64_t asked = -1, silent_since = mlrti_now_ms();

	agent_job_key(a, "done", done_key, sizeof(done_key));
	for (;;) {
		int64_t gen;
		void *val = NULL;
		size_t len;
		int rc;

		if (agent_interrupted)
			return -2;
		agent_job_key(a, "generation", key, sizeof(key));
		rc = mlrt_store_get(a->store, key, &val, &len);
		if (rc == MLRT_ERR_NOT_FOUND)
			return 0; /* the job is starting */
		if (rc != MLRT_OK) {
			fprintf(stderr, "mlrun: cannot read job %s's state from its store at %s: %s\n",
			        a->job_id, a->store_addr, mlrt_strerror(rc));
			return -2;
		}
		gen = strtoll(val, NULL, 10);
		free(val);
		if (key_exists(a->store, done_key))
			return -1;
		snprintf(abort_key, sizeof(abort_key), "%s/g%" PRId64 "/abort", a->job_id, gen);
		if (key_exists(a->store, abort_key))
			return gen + 1;
		if (asked != gen) {
			int64_t n;

			snprintf(key, sizeof(key), "%s/g%" PRId64 "/joiner/%s", a->job_id, gen, a->host);
			mlrt_store_set(a->store, key, "1", 1);
			snprintf(key, sizeof(key), "%s/g%" PRId64 "/joiners", a->job_id, gen);
			mlrt_store_add(a->store, key, 1, &n);
			fprintf(stderr, "mlrun: job %s is running generation %" PRId64 "; host %s asks "
			        "to join the next one\n", a->job_id, gen, a->host);
			asked = gen;
		}
		/* Bounded by the job's own life: its hosts' heartbeats. */
		snprintf(alive, sizeof(alive), "%s/g%" PRId64 "/alive/", a->job_id, gen);
		{
			mlrt_store_kv *items = NULL;
			size_t n = 0;

			if (mlrt_store_list(a->store, alive, &items, &n) == MLRT_OK && n > 0)
				silent_since = mlrti_now_ms();
			mlrt_store_kv_free(items, n);
		}
		if (mlrti_now_ms() - silent_since > 2 * a->o->hb_timeout_ms + a->o->rdzv_timeout_ms) {
			fprintf(stderr, "mlrun: job %s's generation %" PRId64 " shows no heartbeat from "
			        "any host; host %s cannot join it\n", a->job_id, gen, a->host);
			return -2;
		}
		usleep(ADMISSION_POLL_MS * 1000);
	}
}

/* The job is over (for every host): hosts that arrive later learn it. */
void membership_done(agent *a, int status)
{
	char key[300], val[16];

	agent_job_key(a, "done", key, sizeof(key));
	snprintf(val, sizeof(val), "%d", status);
	mlrt_store_cas(a->store, key, NULL, 0, val, strlen(val), NULL, NULL, NULL);
}
