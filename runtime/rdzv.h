/* Gang rendezvous on the store.  Not installed.
 *
 * Participants (one per host agent) join a round.  The round closes when
 * `min` have joined and either `max` have joined or `last_call_ms` has
 * passed since `min` was reached; every participant then learns the same
 * member list, sorted by order then name, with a contiguous block of ranks for each
 * (nproc ranks, in member order).  All or nothing: if `min` is not reached
 * by the deadline every participant fails with a message that says how
 * many joined, how many were needed and who is missing.  See docs/rdzv.md. */
#ifndef MLRT_RUNTIME_RDZV_H
#define MLRT_RUNTIME_RDZV_H

#include <stddef.h>
#include <stdint.h>

#include <mlrt/store.h>

#define MLRTI_RDZV_NAME_MAX 128

typedef struct mlrti_rdzv_opts {
	const char *job;   /* job id: keys live under "<job>/rdzv/<round>/" */
	int64_t round;     /* the generation this round will start */
	int min;           /* participants needed (>= 1) */
	int max;           /* participants accepted (>= min) */
	int last_call_ms;  /* wait for more after min is reached */
	int timeout_ms;    /* deadline for reaching min */
	const char *const *expected; /* names expected, for the error message; may be NULL */
	size_t nexpected;
	const volatile int *cancel; /* may be NULL; nonzero gives MLRT_ERR_ABORTED */
	int order;         /* this participant's sort key (mlrun -H: its place in the host list) */
	int expect;        /* > 0: close as soon as this many (and min) joined, every one
	                      of await among them, without the last call: the
	                      participants known to be coming */
	const char *const *await;
	size_t nawait;
} mlrti_rdzv_opts;

typedef struct mlrti_rdzv_member {
	char name[MLRTI_RDZV_NAME_MAX];
	int nproc;      /* ranks this member runs */
	int order;      /* its sort key; ties are broken by name */
	int first_rank; /* its first global rank */
} mlrti_rdzv_member;

typedef struct mlrti_rdzv_result {
	int64_t generation;
	int index;    /* this participant's position in members */
	int nmembers;
	int world_size; /* sum of nproc */
	mlrti_rdzv_member *members;
	char error[1024]; /* why the round failed, when it did */
} mlrti_rdzv_result;

/* Join round o->round as name (unique in the job) running nproc ranks.
 * Blocks until the round closes (bounded by o->timeout_ms plus
 * o->last_call_ms).  Errors: MLRT_ERR_TIMEOUT (min not reached: res->error
 * says who is missing), MLRT_ERR_ABORTED (the round closed without this
 * participant), MLRT_ERR_EXISTS (name already joined this round), store
 * errors.  Free res with mlrti_rdzv_result_fini. */
int mlrti_rdzv_join(mlrt_store *st, const mlrti_rdzv_opts *o, const char *name, int nproc,
                    mlrti_rdzv_result *res);

void mlrti_rdzv_result_fini(mlrti_rdzv_result *res);

#endif
