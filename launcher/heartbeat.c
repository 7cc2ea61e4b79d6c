/* Agents' heartbeats through store leases. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mlrt/store.h>

#include "launcher/heartbeat.h"
#include "runtime/common.h"

#define KEY_MAX 512

struct heartbeat {
	heartbeat_opts o;
	mlrt_store *st;
	int64_t lease;
	pthread_t thread;
	int stop;           /* under lock; wake signals it */
	pthread_cond_t wake;
	pthread_mutex_t lock;
	hb_event event;
	char detail[512];
	int *seen;          /* [nmembers]: its key was seen at least once */
	int64_t started_ms;
	int64_t last_ok_ms; /* last renewal the store answered */
};

static void raise_event(heartbeat *hb, hb_event ev, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void raise_event(heartbeat *hb, hb_event ev, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&hb->lock);
	if (hb->event == HB_NONE) {
		hb->event = ev;
		va_start(ap, fmt);
		vsnprintf(hb->detail, sizeof(hb->detail), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&hb->lock);
}

/* Whether an event has been raised: the generation is ending, and only
 * the beating itself still matters. */
static int raised(heartbeat *hb)
{
	int r;

	pthread_mutex_lock(&hb->lock);
	r = hb->event != HB_NONE;
	pthread_mutex_unlock(&hb->lock);
	return r;
}

void heartbeat_mark_lost(mlrt_store *st, const char *prefix, const char *host)
{
	char key[KEY_MAX];

	snprintf(key, sizeof(key), "%slost/%s", prefix, host);
	mlrt_store_set(st, key, "1", 1);
}

/* Whether key (prefix + "<i>") is among items. */
static int listed(const mlrt_store_kv *items, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(items[i].key, key) == 0)
			return 1;
	return 0;
}

/* Whether someone has ended the generation (<prefix>abort is set). */
static int generation_ended(heartbeat *hb)
{
	char key[KEY_MAX + 8];
	void *why = NULL;
	size_t len;
	int rc;

	snprintf(key, sizeof(key), "%sabort", hb->o.prefix);
	rc = mlrt_store_get(hb->st, key, &why, &len);
	free(why);
	return rc == MLRT_OK;
}

/* Look for members that stopped beating. */
static void check_members(heartbeat *hb, int64_t now)
{
	const mlrti_rdzv_result *g = hb->o.gang;
	char alive[KEY_MAX], done[KEY_MAX], key[KEY_MAX + 16];
	mlrt_store_kv *a = NULL, *d = NULL;
	size_t na = 0, nd = 0;

	snprintf(alive, sizeof(alive), "%salive/", hb->o.prefix);
	snprintf(done, sizeof(done), "%sdone/", hb->o.prefix);
	if (mlrt_store_list(hb->st, alive, &a, &na) != MLRT_OK ||
	    mlrt_store_list(hb->st, done, &d, &nd) != MLRT_OK)
		goto out;
	for (int i = 0; i < g->nmembers; i++) {
		const mlrti_rdzv_member *m = &g->members[i];

		if (i == g->index)
			continue;
		snprintf(key, sizeof(key), "%s%d", alive, i);
		if (listed(a, na, key)) {
			hb->seen[i] = 1;
			continue;
		}
		snprintf(key, sizeof(key), "%s%d", done, i);
		if (listed(d, nd, key))
			continue;
		/* A member that never showed up gets one timeout to do so. */
		if (hb->seen[i] || now - hb->started_ms > hb->o.timeout_ms + hb->o.interval_ms) {
			/* Once the generation has ended, its members stop beating
			 * (and revoke their leases): that is not a loss. */
			if (generation_ended(hb))
				break;
			heartbeat_mark_lost(hb->st, hb->o.prefix, m->name);
			raise_event(hb, HB_MEMBER_LOST, "host %s (ranks %d-%d) lost: no heartbeat "
			            "for %.1f s", m->name, m->first_rank,
			            m->first_rank + m->nproc - 1, hb->o.timeout_ms / 1000.0);
		}
	}
out:
	mlrt_store_kv_free(a, na);
	mlrt_store_kv_free(d, nd);
}

/* Hosts waiting to join a gang that may grow. */
static void check_joiners(heartbeat *hb)
{
	char key[KEY_MAX], names[256] = "";
	mlrt_store_kv *j = NULL;
	size_t nj = 0, used = 0;
	int64_t count = 0;

	snprintf(key, sizeof(key), "%sjoiners", hb->o.prefix);
	if (mlrt_store_add(hb->st, key, 0, &count) != MLRT_OK || count <= 0)
		return;
	snprintf(key, sizeof(key), "%sjoiner/", hb->o.prefix);
	if (mlrt_store_list(hb->st, key, &j, &nj) == MLRT_OK)
		for (size_t i = 0; i < nj && used < sizeof(names); i++)
			used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s",
			                         i ? ", " : "", j[i].key + strlen(key));
	mlrt_store_kv_free(j, nj);
	raise_event(hb, HB_JOINERS, "%s asking to join", names[0] ? names : "a host");
}

static void *beat(void *arg)
{
	heartbeat *hb = arg;
	/* Beat every interval; look at the others twice as often, so that a
	 * lost host is seen at most half an interval after its key expires. */
	int tick_ms = hb->o.interval_ms / 2 > 5 ? hb->o.interval_ms / 2 : 5;

	for (unsigned n = 1;; n++) {
		struct timespec until;
		int64_t now;
		int rc = MLRT_OK, stop;

		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += tick_ms / 1000;
		until.tv_nsec += (tick_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&hb->lock);
		while (!hb->stop && pthread_cond_timedwait(&hb->wake, &hb->lock, &until) == 0)
			;
		stop = hb->stop;
		pthread_mutex_unlock(&hb->lock);
		if (stop)
			break;
		if (n % 2 == 0)
			rc = mlrt_store_lease_renew(hb->st, hb->lease);
		now = mlrti_now_ms();
		if (rc == MLRT_OK) {
			if (n % 2 == 0)
				hb->last_ok_ms = now;
		} else if (rc == MLRT_ERR_NOT_FOUND) {
			raise_event(hb, HB_STORE_LOST, "this host's heartbeat lease expired in the job's "
			            "store at %s (it was silent for over %.1f s; the other hosts count "
			            "it as lost)", hb->o.store_addr, hb->o.timeout_ms / 1000.0);
			continue;
		} else {
			if (now - hb->last_ok_ms >= hb->o.timeout_ms)
				raise_event(hb, HB_STORE_LOST, "no answer from the job's store at %s for "
				            "%.1f s (%s)", hb->o.store_addr,
				            (now - hb->last_ok_ms) / 1000.0, mlrt_strerror(rc));
			continue;
		}
		if (raised(hb))
			continue;
		check_members(hb, now);
		if (hb->o.watch_joiners && !raised(hb))
			check_joiners(hb);
	}
	return NULL;
}

static void destroy(heartbeat *hb)
{
	if (hb->lease != 0)
		mlrt_store_lease_revoke(hb->st, hb->lease);
	mlrt_store_close(hb->st);
	pthread_mutex_destroy(&hb->lock);
	pthread_cond_destroy(&hb->wake);
	free(hb->seen);
	free(hb);
}

int heartbeat_start(const heartbeat_opts *o, heartbeat **out)
{
	heartbeat *hb = calloc(1, sizeof(*hb));
	const mlrti_rdzv_member *me = &o->gang->members[o->gang->index];
	char key[KEY_MAX];
	int rc = MLRT_ERR_NOMEM;

	*out = NULL;
	if (hb == NULL)
		return rc;
	hb->o = *o;
	pthread_mutex_init(&hb->lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&hb->wake, &ca);
		pthread_condattr_destroy(&ca);
	}
	hb->seen = calloc((size_t)o->gang->nmembers, sizeof(*hb->seen));
	if (hb->seen == NULL)
		goto fail;
	MLRTI_CHECK_GOTO(mlrt_store_open(o->store_addr, &hb->st), rc, fail);
	/* A renewal must never block longer than a beat. */
	mlrt_store_set_timeout(hb->st, o->interval_ms > 100 ? o->interval_ms : 100);
	MLRTI_CHECK_GOTO(mlrt_store_lease_grant(hb->st, o->timeout_ms, &hb->lease), rc, fail);
	snprintf(key, sizeof(key), "%salive/%d", o->prefix, o->gang->index);
	MLRTI_CHECK_GOTO(mlrt_store_set_leased(hb->st, key, me->name, strlen(me->name), hb->lease),
	                 rc, fail);
	hb->started_ms = hb->last_ok_ms = mlrti_now_ms();
	if (pthread_create(&hb->thread, NULL, beat, hb) != 0) {
		rc = MLRT_ERR_NOMEM;
		goto fail;
	}
	*out = hb;
	return MLRT_OK;
fail:
	destroy(hb);
	return rc;
}

hb_event heartbeat_event(heartbeat *hb, char *detail, size_t cap)
{
	hb_event ev;

	if (hb == NULL)
		return HB_NONE;
	pthread_mutex_lock(&hb->lock);
	ev = hb->event;
	if (ev != HB_NONE)
		snprintf(detail, cap, "%s", hb->detail);
	pthread_mutex_unlock(&hb->lock);
	return ev;
}

void heartbeat_stop(heartbeat *hb, int finished)
{
	char key[KEY_MAX];

	if (hb == NULL)
		return;
	pthread_mutex_lock(&hb->lock);
	hb->stop = 1;
	pthread_cond_signal(&hb->wake);
	pthread_mutex_unlock(&hb->lock);
	pthread_join(hb->thread, NULL);
	if (finished) {
		snprintf(key, sizeof(key), "%sdone/%d", hb->o.prefix, hb->o.gang->index);
		mlrt_store_set(hb->st, key, "1", 1);
	}
	destroy(hb);
}
