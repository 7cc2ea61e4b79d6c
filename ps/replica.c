/* Replication between parameter servers: the primary of a range forwards
 * its pushes to the range's backup and acknowledges them to the worker
 * once the backup has them; a backup takes over its range when mlrun has
 * marked the primary down (see server.c and docs/ps.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include <mlrt/store.h>

#include "ps/server.h"
#include "runtime/common.h"

#define FORWARD_CHECK_MS 100 /* a forward unanswered this long: is the backup down? */

/* Whether server i has been marked down (by mlrun, in the store). */
static int is_down(mlrti_ps_server *s, int i)
{
	char key[400];
	void *val = NULL;
	size_t len;
	int down;

	snprintf(key, sizeof(key), "%sps/down/%d", s->prefix, i);
	down = mlrt_store_get(s->store, key, &val, &len) == MLRT_OK;
	free(val);
	return down;
}

static void *peer_socket(mlrti_ps_server *s, int i)
{
	char key[400];
	void *addr = NULL;
	size_t len;
	int zero = 0;

	if (s->peer[i] != NULL)
		return s->peer[i];
	snprintf(key, sizeof(key), "%sps/server/%d", s->prefix, i);
	if (mlrt_store_get(s->store, key, &addr, &len) != MLRT_OK)
		return NULL;
	s->peer[i] = zmq_socket(s->zctx, ZMQ_DEALER);
	if (s->peer[i] != NULL &&
	    (zmq_setsockopt(s->peer[i], ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
	     zmq_connect(s->peer[i], addr) != 0)) {
		zmq_close(s->peer[i]);
		s->peer[i] = NULL;
	}
	free(addr);
	return s->peer[i];
}

/* Send push r (taken here as primary of its range) on to backup, and
 * remember to acknowledge it to the worker once the backup has it. */
int mlrti_ps_forward(mlrti_ps_server *s, mlrti_ps_held *r, int backup)
{
	void *sock = peer_socket(s, backup);
	mlrti_ps_hdr h = r->h;
	mlrti_ps_ack *a;
	char buf[1024];
	size_t len;

	if (sock == NULL || (a = calloc(1, sizeof(*a))) == NULL)
		return MLRT_ERR_UNAVAILABLE;
	h.op = MLRTI_PS_FORWARD;
	h.id = ++s->next_fwd;
	if (mlrti_ps_hdr_encode(&h, 0, buf, sizeof(buf), &len) != MLRT_OK ||
	    zmq_send(sock, buf, len, ZMQ_SNDMORE) < 0)
		goto fail;
	for (int i = 2; i < 5; i++) {
		zmq_msg_t m;

		zmq_msg_init(&m);
		zmq_msg_copy(&m, &r->f[i]); /* shares the data */
		if (zmq_msg_send(&m, sock, i < 4 ? ZMQ_SNDMORE : 0) < 0) {
			zmq_msg_close(&m);
			goto fail;
		}
	}
	zmq_msg_init(&a->route);
	zmq_msg_copy(&a->route, &r->f[0]);
	a->h = r->h;
	a->fid = h.id;
	a->backup = backup;
	a->since = mlrti_now_ms();
	a->next = s->acks;
	s->acks = a;
	return MLRT_OK;
fail:
	free(a);
	return MLRT_ERR_IO;
}

void mlrti_ps_ack_free(mlrti_ps_ack *a)
{
	zmq_msg_close(&a->route);
	free(a);
}

/* The backup answered forward fid: acknowledge the push to its worker. */
void mlrti_ps_forward_done(mlrti_ps_server *s, uint64_t fid, int status, const char *msg)
{
	for (mlrti_ps_ack **pp = &s->acks; *pp != NULL; pp = &(*pp)->next) {
		mlrti_ps_ack *a = *pp;

		if (a->fid != fid)
			continue;
		*pp = a->next;
		mlrti_ps_reply_to(s, &a->route, &a->h, status, msg, NULL);
		mlrti_ps_ack_free(a);
		return;
	}
}

/* Pushes waiting on a backup that is down: acknowledge them, and go on
 * without a copy of the range until the backup is back.  Asks the store
 * once per backup, at most every FORWARD_CHECK_MS. */
void mlrti_ps_check_backups(mlrti_ps_server *s)
{
	int64_t now = mlrti_now_ms();
	int down[s->nservers];

	if (now < s->next_backup_check)
		return;
	s->next_backup_check = now + FORWARD_CHECK_MS;
	for (int i = 0; i < s->nservers; i++)
		down[i] = -1; /* not asked */
	for (mlrti_ps_ack **pp = &s->acks; *pp != NULL;) {
		mlrti_ps_ack *a = *pp;
		mlrti_ps_range *g = &s->ranges[a->h.range];

		if (now - a->since >= FORWARD_CHECK_MS && down[a->backup] < 0)
			down[a->backup] = is_down(s, a->backup);
		if (down[a->backup] <= 0) {
			pp = &a->next;
			continue;
		}
		if (g->backup == a->backup) {
			mlrt_log(MLRT_LOG_WARN, "ps: server %d: backup server %d of range %d is down; "
			         "the range goes on without a copy", s->index, a->backup, a->h.range);
			g->backup = -1;
			mlrti_ps_publish_range(s, a->h.range);
		}
		*pp = a->next;
		mlrti_ps_reply_to(s, &a->route, &a->h, MLRT_OK, NULL, NULL);
		mlrti_ps_ack_free(a);
	}
}

void mlrti_ps_publish_range(mlrti_ps_server *s, int rg)
{
	char key[400], val[32];

	snprintf(key, sizeof(key), "%sps/range/%d", s->prefix, rg);
	snprintf(val, sizeof(val), "%d %d", s->index, s->ranges[rg].backup);
	if (mlrt_store_set(s->store, key, val, strlen(val)) != MLRT_OK)
		mlrt_log(MLRT_LOG_WARN, "ps: server %d cannot record range %d in the store", s->index,
		         rg);
}

/* May this server answer workers for range rg?  A backup takes over its
 * range once the primary is down. */
int mlrti_ps_serves(mlrti_ps_server *s, int rg)
{
	mlrti_ps_range *g = &s->ranges[rg];

	if (g->role == MLRTI_PS_PRIMARY)
		return 1;
	if (g->role == MLRTI_PS_BACKUP && !g->catching_up && is_down(s, g->primary)) {
		mlrt_log(MLRT_LOG_WARN, "ps: server %d takes over range %d: server %d is down",
		         s->index, rg, g->primary);
		g->role = MLRTI_PS_PRIMARY;
		g->backup = -1;
		mlrti_ps_publish_range(s, rg);
		return 1;
	}
	return 0;
}

