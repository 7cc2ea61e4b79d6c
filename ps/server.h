/* The parameter server's state, shared by server.c (serving), replica.c
 * (replication) and shard.c (checkpoints of its keys).  Not installed.
 * Everything here belongs to the server's one thread. */
#ifndef MLRT_PS_SERVER_H
#define MLRT_PS_SERVER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <uthash.h>
#include <zmq.h>

#include <mlrt/ps.h>
#include <mlrt/store.h>

#include "ps/arena.h"
#include "ps/proto.h"

#define MLRTI_PS_MAX_FRAMES 5 /* routing id, header, keys, lens, vals */

/* A key's values.  A pull reply of a large key lends them to ZeroMQ
 * without a copy; a write then first copies them (mlrti_ps_key_writable). */
typedef struct mlrti_ps_vals {
	atomic_int refs;  /* the key's own reference + replies in flight */
	float v[];
} mlrti_ps_vals;

typedef struct mlrti_ps_key {
	uint64_t key;
	size_t len;
	mlrti_ps_vals *vals;
	float *w;         /* the values: vals->v */
	float *state;     /* the optimizer's, mlrti_optim_state_floats() * len */
	float *acc;       /* SYNC: sum of the step's pushes */
	int64_t acc_step; /* the step acc holds, -1: none */
	int64_t t;        /* updates applied */
	UT_hash_handle hh;
} mlrti_ps_key;

/* A request kept for later: a queued SYNC push or a waiting pull. */
typedef struct mlrti_ps_held {
	zmq_msg_t f[MLRTI_PS_MAX_FRAMES];
	int nf;
	int borrowed;     /* f[4] shows the values in the worker's arena */
	mlrti_ps_hdr h;
	struct mlrti_ps_held *next;
} mlrti_ps_held;

/* A push taken as primary whose acknowledgement waits for the backup. */
typedef struct mlrti_ps_ack {
	zmq_msg_t route;  /* the worker's routing frame */
	mlrti_ps_hdr h;   /* the worker's request */
	uint64_t fid;     /* id of the forward */
	int backup;       /* forwarded to */
	int64_t since;    /* when (ms) */
	struct mlrti_ps_ack *next;
} mlrti_ps_ack;

/* Orders for one backup not sent yet: entries {worker | range << 32, seq}. */
typedef struct mlrti_ps_orders {
	uint64_t *e;
	size_t n, cap;
	size_t bytes;     /* of the pushes they order */
} mlrti_ps_orders;

/* What a server is for a key range. */
enum { MLRTI_PS_NO_ROLE, MLRTI_PS_PRIMARY, MLRTI_PS_BACKUP };

/* What this server keeps of one key range. */
typedef struct mlrti_ps_range {
	int role;
	int backup;       /* PRIMARY: the server with the copy; -1: none */
	uint32_t backup_epoch; /* PRIMARY: changes with backup (and when it restarts) */
	int primary;      /* BACKUP: the server answering for the range */
	int catching_up;  /* BACKUP: waiting for the primary's snapshot */
	int64_t *clock;   /* pushes taken from each worker */
	uint64_t *seq;    /* sequence number of each worker's last push taken */
	mlrti_ps_held **queue;     /* SYNC: each worker's pushes not yet applied (FIFO) */
	int64_t applied;  /* SYNC: steps applied */
	/* BACKUP: workers' copies of pushes, in arrival order, and the
	 * primary's orders (and forwards) to take them, in its order. */
	mlrti_ps_held *copies;
	mlrti_ps_held *orders;
} mlrti_ps_range;

typedef struct mlrti_ps_server {
	void *zctx, *sock;
	void **peer;      /* DEALER to each other server, opened on first use */
	mlrt_store *store;
	char prefix[256]; /* "<job>/g<gen>/" */
	int index, nservers, nworkers, replicas;
	mlrt_ps_opts opts;
	int have_opts;
	mlrti_ps_key *keys;
	mlrti_ps_range *ranges;    /* [nservers] */
	int *left;
	int nleft;
	mlrti_ps_held *waiting;    /* pulls that wait */
	mlrti_ps_held *early;      /* forwards that came before their range's snapshot */
	int rejoin;                /* started again after a death (MLRT_PS_REJOIN) */
	mlrti_ps_ack *acks; /* pushes waiting for their backup */
	int64_t next_backup_check;
	mlrti_ps_orders *pending;   /* [nservers]: orders gathered for each backup */
	int ordered;                /* orders sent since the last look for down backups */
	int64_t orders_since;       /* when the oldest order not sent was gathered, 0: none */
	int rcvtimeo;               /* the ROUTER's receive timeout now, ms */
	int64_t next_order_check;
	uint64_t next_fwd;
	float *vals;      /* aligned copy of a push's values (check_payload) */
	size_t cap_vals;
	mlrti_ps_key **touched; /* SYNC: keys of the step being applied */
	size_t ntouched, cap_touched;
	int64_t max_lead; /* BOUNDED: largest lead over the slowest at a served pull */
	mlrti_ps_arena_map *arenas; /* [nworkers]: each worker's push values, mapped */
	uint64_t took_copies, took_forwards; /* pushes taken as backup, by how they came */
	uint64_t borrowed; /* pushes and copies whose values were in a worker's arena */
	const char *ckpt_dir; /* MLRT_PS_CKPT_DIR: shard checkpoints, or NULL */
	int64_t ckpt_ms;      /* between them */
	int64_t next_save;
} mlrti_ps_server;

/* Find key, creating it with len floats from the options' init when
 * absent.  MLRT_ERR_INVALID (why filled) when it has another length. */
int mlrti_ps_key_get(mlrti_ps_server *s, uint64_t key, size_t len, mlrti_ps_key **out, char *why,
                     size_t whylen);
mlrti_ps_key *mlrti_ps_key_find(mlrti_ps_server *s, uint64_t key);
/* Make k->w safe to write: a copy of its own when a reply still holds the
 * values.  MLRT_ERR_NOMEM when there is no memory for the copy. */
int mlrti_ps_key_writable(mlrti_ps_key *k);

/* Answer request req of the worker (or server) behind routing frame route. */
void mlrti_ps_reply_to(mlrti_ps_server *s, zmq_msg_t *route, const mlrti_ps_hdr *req, int status,
                       const char *msg, zmq_msg_t *vals);

/* server.c, for the replication files */

void mlrti_ps_held_free(mlrti_ps_held *r);
/* Copy the values push r borrows from a worker's arena into a frame of
 * its own: before it is kept past the current request (a worker reuses
 * the memory once answered) or sent on.  MLRT_ERR_NOMEM. */
int mlrti_ps_held_own(mlrti_ps_held *r);
/* Take push r into its range: 1 when taken, 0 for a duplicate (its
 * sequence number was seen), or an error (why filled).  r stays the
 * caller's unless *queued is set (a SYNC push waiting for its step). */
int mlrti_ps_take_push(mlrti_ps_server *s, mlrti_ps_held *r, int *queued, char *why,
                       size_t whylen);
/* After pushes into range rg: apply the complete SYNC steps, answer the
 * pulls that may now be answered. */
void mlrti_ps_settle(mlrti_ps_server *s, int rg);

/* backup.c: the backup side of replication */

/* From the range's primary: a forward (answered once taken) or one order. */
void mlrti_ps_on_forward(mlrti_ps_server *s, mlrti_ps_held *r);
/* From a primary: its gathered orders (replica.c), each taken as one. */
void mlrti_ps_on_orders(mlrti_ps_server *s, mlrti_ps_held *r);
/* A worker's copy of a push; answered here unless answered != 0. */
void mlrti_ps_on_copy(mlrti_ps_server *s, mlrti_ps_held *r, int answered);
/* The snapshot of range rg is in: take what waited for it. */
void mlrti_ps_take_early(mlrti_ps_server *s, int rg);
/* Taking over range rg from a dead primary, or ending: take the workers'
 * copies it ordered, then those it never ordered, in the order they came. */
void mlrti_ps_take_copies(mlrti_ps_server *s, int rg);

/* replica.c: the primary side of replication */

/* Send push r (taken here as primary of its range) on to backup, and
 * acknowledge it to the worker once the backup has it. */
int mlrti_ps_forward(mlrti_ps_server *s, mlrti_ps_held *r, int backup);
/* Send push r to backup with no acknowledgement to a worker (a queued push
 * replayed to a new backup). */
int mlrti_ps_forward_quiet(mlrti_ps_server *s, mlrti_ps_held *r, int backup);
/* Tell backup, which has the worker's copy of push r, to take it now
 * (gathered with others: see replica.c). */
int mlrti_ps_order(mlrti_ps_server *s, const mlrti_ps_held *r, int backup);
/* Send the gathered orders (to every backup): when idle, before a
 * snapshot, at the end. */
void mlrti_ps_flush_all_orders(mlrti_ps_server *s);
/* After orders: a backup marked down leaves its range without a copy (at
 * most every 100 ms, one store lookup per range). */
void mlrti_ps_check_order_backups(mlrti_ps_server *s);
/* The backup answered forward fid. */
void mlrti_ps_forward_done(mlrti_ps_server *s, uint64_t fid, int status, const char *msg);
/* Acknowledge the pushes waiting on a backup that is down (at most every
 * 100 ms, one store lookup per backup). */
void mlrti_ps_check_backups(mlrti_ps_server *s);
/* May this server answer workers for range rg?  A backup takes over once
 * the primary is marked down. */
int mlrti_ps_serves(mlrti_ps_server *s, int rg);
void mlrti_ps_ack_free(mlrti_ps_ack *a);
/* As primary of range rg, record in the store who answers for it and who
 * holds the copy: "<gen>/ps/range/<rg>" = "primary backup" (for workers
 * failing over). */
void mlrti_ps_publish_range(mlrti_ps_server *s, int rg);

/* A server started again (rejoin): ask the primary of each range it backs
 * up for a snapshot of the range. */
void mlrti_ps_request_snapshots(mlrti_ps_server *s);
/* As primary, answer catch-up request r with the snapshot of its range and
 * make the asking server the range's backup. */
void mlrti_ps_send_snapshot(mlrti_ps_server *s, mlrti_ps_held *r);
/* Read the rest of a snapshot (header h already read) from sock and take
 * it as the range's copy. */
int mlrti_ps_install_snapshot(mlrti_ps_server *s, void *sock, const mlrti_ps_hdr *h);

/* shard.c */

/* Save the keys of the ranges this server answers for (blocks). */
int mlrti_ps_save_shard(mlrti_ps_server *s);
/* Load the keys of every range this server holds from the newest valid
 * checkpoints (once the options are known). */
void mlrti_ps_load_shards(mlrti_ps_server *s);

#endif
