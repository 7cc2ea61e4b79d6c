/* The backup side of replication: a worker's copies of the pushes to a
 * range this server backs up, and the primary's orders (and forwards)
 * saying in which order to take them (docs/ps.md, "Replication and
 * failover"; replica.c is the primary's side).
 *
 * Copies wait in the range's list until ordered; orders and forwards wait
 * in the range's queue, in the primary's order, until the copy each names
 * is in.  While a snapshot of the range is on its way everything waits in
 * the server's early list.  A backup that takes over a range (or ends)
 * takes what it holds: the copies ordered, then the others as they came. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "ps/server.h"
#include "runtime/common.h"

static void append(mlrti_ps_held **list, mlrti_ps_held *r)
{
	while (*list != NULL)
		list = &(*list)->next;
	r->next = NULL;
	*list = r;
}

/* As backup, take push r (a forward, answered to the primary here, or a
 * worker's copy, answered when it came). */
static void take_copy(mlrti_ps_server *s, mlrti_ps_held *r)
{
	char why[MLRTI_PS_MSG_MAX];
	int rg = r->h.range, queued = 0, rc = mlrti_ps_take_push(s, r, &queued, why, sizeof(why));

	if (rc == 1)
		*(r->h.op == MLRTI_PS_FORWARD ? &s->took_forwards : &s->took_copies) += 1;
	if (r->h.op == MLRTI_PS_FORWARD)
		mlrti_ps_reply_to(s, &r->f[0], &r->h, rc < 0 ? rc : MLRT_OK, rc < 0 ? why : NULL, NULL);
	else if (rc < 0)
		mlrt_log(MLRT_LOG_ERROR, "ps: server %d: worker %d's copy of push %" PRIu64
		         " to range %d: %s", s->index, r->h.worker, r->h.seq, rg, why);
	if (!queued)
		mlrti_ps_held_free(r);
	mlrti_ps_settle(s, rg);
}

/* The copy of worker w's push seq, unlinked from the range's copies;
 * copies already taken (a forward carried them) are dropped on the way. */
static mlrti_ps_held *find_copy(mlrti_ps_range *g, int w, uint64_t seq)
{
	for (mlrti_ps_held **pp = &g->copies; *pp != NULL;) {
		mlrti_ps_held *c = *pp;

		if (c->h.seq <= g->seq[c->h.worker]) {
			*pp = c->next;
			mlrti_ps_held_free(c);
		} else if (c->h.worker == w && c->h.seq == seq) {
			*pp = c->next;
			c->next = NULL;
			return c;
		} else {
			pp = &c->next;
		}
	}
	return NULL;
}

/* Take what the primary ordered, in its order, as far as the copies are
 * in.  Once the primary is gone (gone != 0) nothing more is coming: an
 * order whose copy never came is dropped (the worker sends that push
 * again, to this server as the new primary), then the copies no order
 * named are taken in the order they came. */
static void take_orders(mlrti_ps_server *s, int rg, int gone)
{
	mlrti_ps_range *g = &s->ranges[rg];

	while (g->orders != NULL) {
		mlrti_ps_held *o = g->orders, *c = NULL;

		if (o->h.op == MLRTI_PS_ORDER) {
			c = find_copy(g, o->h.worker, o->h.seq);
			if (c == NULL && o->h.seq > g->seq[o->h.worker] && !gone)
				return; /* its copy is on its way */
		}
		g->orders = o->next;
		if (o->h.op == MLRTI_PS_FORWARD) {
			take_copy(s, o);
			continue;
		}
		mlrti_ps_held_free(o);
		if (c != NULL)
			take_copy(s, c);
	}
	while (gone && g->copies != NULL) {
		mlrti_ps_held *c = g->copies;

		g->copies = c->next;
		if (c->h.seq > g->seq[c->h.worker])
			take_copy(s, c);
		else
			mlrti_ps_held_free(c);
	}
}

void mlrti_ps_take_copies(mlrti_ps_server *s, int rg)
{
	take_orders(s, rg, 1);
}

/* From the primary of a range this server backs up: a push forwarded
 * (when the worker sent no copy here) or an order to take a copy.  Both
 * are taken in the order they come, after the snapshot when one is on its
 * way.  Forwards are answered once taken, orders not at all. */
void mlrti_ps_on_forward(mlrti_ps_server *s, mlrti_ps_held *r)
{
	int rg = r->h.range;

	if (s->ranges[rg].role != MLRTI_PS_BACKUP) {
		char why[MLRTI_PS_MSG_MAX];

		snprintf(why, sizeof(why), "server %d is not the backup of range %d", s->index, rg);
		if (r->h.op == MLRTI_PS_FORWARD)
			mlrti_ps_reply_to(s, &r->f[0], &r->h, MLRT_ERR_INVALID, why, NULL);
		else
			mlrt_log(MLRT_LOG_WARN, "ps: %s: dropped an order from server %d", why,
			         s->ranges[rg].primary);
		mlrti_ps_held_free(r);
		return;
	}
	if (s->ranges[rg].catching_up) { /* taken once the snapshot is in */
		append(&s->early, r);
		return;
	}
	append(&s->ranges[rg].orders, r);
	take_orders(s, rg, 0);
}

/* A primary's gathered orders (replica.c): one order each, taken as they
 * would have come one by one. */
void mlrti_ps_on_orders(mlrti_ps_server *s, mlrti_ps_held *r)
{
	size_t n = (size_t)r->h.nkeys;

	if (r->nf != 3 || zmq_msg_size(&r->f[2]) != n * 2 * sizeof(uint64_t)) {
		mlrt_log(MLRT_LOG_WARN, "ps: server %d: dropped malformed orders from a server",
		         s->index);
		mlrti_ps_held_free(r);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		mlrti_ps_held *o = calloc(1, sizeof(*o));
		uint64_t e[2];

		memcpy(e, (const char *)zmq_msg_data(&r->f[2]) + i * sizeof(e), sizeof(e));
		if (o == NULL || (uint32_t)e[0] >= (uint32_t)s->nworkers ||
		    (e[0] >> 32) >= (uint64_t)s->nservers) {
			mlrt_log(MLRT_LOG_WARN, "ps: server %d: dropped a malformed order", s->index);
			free(o);
			continue;
		}
		o->h.op = MLRTI_PS_ORDER;
		o->h.worker = (int32_t)(uint32_t)e[0];
		o->h.range = (int32_t)(e[0] >> 32);
		o->h.seq = e[1];
		mlrti_ps_on_forward(s, o);
	}
	mlrti_ps_held_free(r);
}

/* A worker's copy of a push it sent to the primary of a range this server
 * backs up: answered at once (this server has it), taken when the primary
 * orders it. */
void mlrti_ps_on_copy(mlrti_ps_server *s, mlrti_ps_held *r, int answered)
{
	mlrti_ps_range *g = &s->ranges[r->h.range];

	if (g->role != MLRTI_PS_BACKUP) {
		char why[MLRTI_PS_MSG_MAX];

		snprintf(why, sizeof(why), "server %d is not the backup of range %d", s->index,
		         r->h.range);
		if (!answered)
			mlrti_ps_reply_to(s, &r->f[0], &r->h, MLRT_ERR_UNAVAILABLE, why, NULL);
		mlrti_ps_held_free(r);
		return;
	}
	/* Kept until ordered, so the values are copied out of the worker's
	 * arena before it hears that this server has them. */
	if (mlrti_ps_held_own(r) != MLRT_OK) {
		if (!answered)
			mlrti_ps_reply_to(s, &r->f[0], &r->h, MLRT_ERR_NOMEM, "out of memory for a copy",
			                  NULL);
		mlrti_ps_held_free(r);
		return;
	}
	if (!answered)
		mlrti_ps_reply_to(s, &r->f[0], &r->h, MLRT_OK, NULL, NULL);
	if (g->catching_up) {
		append(&s->early, r);
		return;
	}
	if (r->h.seq <= g->seq[r->h.worker]) {
		mlrti_ps_held_free(r);
		return;
	}
	append(&g->copies, r);
	take_orders(s, r->h.range, 0);
}

/* The forwards, orders and copies a backup held while its range's
 * snapshot was on its way. */
void mlrti_ps_take_early(mlrti_ps_server *s, int rg)
{
	mlrti_ps_held *list = s->early, **keep = &s->early;

	s->early = NULL;
	while (list != NULL) {
		mlrti_ps_held *r = list;

		list = r->next;
		r->next = NULL;
		if (r->h.range == rg && r->h.op == MLRTI_PS_COPY) {
			mlrti_ps_on_copy(s, r, 1);
		} else if (r->h.range == rg) {
			mlrti_ps_on_forward(s, r);
		} else {
			*keep = r;
			keep = &r->next;
		}
	}
}

