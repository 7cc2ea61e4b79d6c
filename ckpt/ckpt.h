/* The checkpoint handle and the pieces of save and restore shared between
 * ckpt.c (API, writer thread), commit.c (saving a step) and restore.c.
 * Not installed. */
#ifndef MLRT_CKPT_CKPT_H
#define MLRT_CKPT_CKPT_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>

#include <mlrt/ckpt.h>
#include <mlrt/store.h>

#include "ckpt/format.h"

#define MLRTI_CKPT_PREFIX_MAX 400 /* "<job>/g<gen>/ckpt/<id>/" */
#define MLRTI_CKPT_KEY_MAX (MLRTI_CKPT_PREFIX_MAX + 96)

/* A mlrt_ckpt is called from one user thread; the writer thread runs one
 * job at a time, handed over under mu: an async save, and on rank 0 the
 * removal of old steps after each commit.  The store client
 * is used by whichever of the two runs a collective step: the user thread
 * waits for the writer to be idle before a restore. */
struct mlrt_ckpt {
	char dir[PATH_MAX];
	mlrt_ckpt_opts opts;
	int rank;
	int world;
	int64_t seq;       /* collective operations so far: names their keys */
	mlrt_store *store; /* own client; NULL in a world of one */
	char prefix[MLRTI_CKPT_PREFIX_MAX];    /* "<job>/g<gen>/ckpt/<id>/" */
	char abort_key[MLRTI_CKPT_PREFIX_MAX]; /* set when the generation fails */

	size_t n, cap;
	mlrti_ckpt_tensor *t; /* registered tensors */
	void **data;          /* [n] the user's buffers */
	void **staging;       /* [n] host copies: of host buffers for async saves
	                       * (malloc, at the first one); of device buffers
	                       * for every save and restore (pinned, at
	                       * registration: device.c) */
	int *device;          /* [n] CUDA ordinal of data[i], -1 for host memory */
	void **src;           /* [n] what a save reads: data[i] or staging[i] */
	size_t ndevice;       /* tensors in device memory */
	void **streams;       /* [nstreams] cudaStream_t per ordinal, made on first use */
	int nstreams;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t writer;
	int writer_started;
	int stop;
	int busy;                 /* a job is handed to the writer */
	int job_save;             /* the job: save job_step (else only tidy up) */
	int64_t job_step, job_seq;
	int last_rc;              /* status of the last save not yet reported */
	int64_t committed;        /* newest step committed here, -1 if none */
};

/* Open dir as a checkpoint of one process, outside any job's
 * coordination (a parameter server's own shard, say). */
int mlrti_ckpt_open_local(const char *dir, const mlrt_ckpt_opts *o, mlrt_ckpt **ck);

/* Save every registered tensor as step, reading tensor i from src[i], and
 * commit it (collective; see commit.c).  Same status on every rank. */
int mlrti_ckpt_commit(mlrt_ckpt *ck, int64_t seq, int64_t step, void *const *src);

/* Take part in step's commit with nothing to write: this rank failed with
 * status (a device copy) before writing.  The step is not committed and
 * every rank returns the failure. */
int mlrti_ckpt_commit_failed(mlrt_ckpt *ck, int64_t seq, int64_t step, int status);

/* After step is committed: remove committed steps beyond opts.keep, every
 * uncommitted one, and any newer than step.  Rank 0, writer thread. */
void mlrti_ckpt_drop_old_steps(mlrt_ckpt *ck, int64_t step);

/* Wait until the writer thread is idle; returns the status of the last
 * save not yet reported (and clears it). */
int mlrti_ckpt_quiesce(mlrt_ckpt *ck);

/* The store key "<prefix><seq>/<what>" (what: at most 64 bytes). */
void mlrti_ckpt_key(const mlrt_ckpt *ck, int64_t seq, const char *what, char *key);

/* Publish (status, value) under key. */
int mlrti_ckpt_post(mlrt_ckpt *ck, const char *key, int status, int64_t value);

/* Wait for key and read what was posted.  MLRT_ERR_ABORTED when the
 * generation fails first, MLRT_ERR_TIMEOUT after opts.timeout_ms. */
int mlrti_ckpt_await(mlrt_ckpt *ck, const char *key, int *status, int64_t *value);

/* Wait for "<seq>/<what>/<r>" of every rank r; values[r] (may be NULL)
 * gets each value.  Returns the first error status posted (lowest rank),
 * *who its rank, or a wait's own error. */
int mlrti_ckpt_gather(mlrt_ckpt *ck, int64_t seq, const char *what, int64_t *values, int *who);

/* ---- Device memory (device.c; stubs without CUDA) ----
 * Called from the user's thread only, never while the writer runs a save
 * (it reads staging). */

/* Tensor i was just registered with data on ck->device[i] >= 0: allocate
 * its pinned staging.  MLRT_ERR_NOMEM, MLRT_ERR_UNAVAILABLE (no usable
 * device), MLRT_ERR_IO (another CUDA failure), logged. */
int mlrti_ckpt_dev_register(mlrt_ckpt *ck, size_t i);

/* Copy every device tensor into its staging and wait for the copies
 * (bounded by opts.timeout_ms: MLRT_ERR_TIMEOUT).  The copies are ordered
 * after the work already queued on each device's legacy default stream. */
int mlrti_ckpt_dev_to_host(mlrt_ckpt *ck, int64_t step);

/* Copy every device tensor's staging into the device buffer, and wait. */
int mlrti_ckpt_dev_from_host(mlrt_ckpt *ck, int64_t step);

/* Free the pinned staging of device tensors (staging[i] becomes NULL)
 * and the streams. */
void mlrti_ckpt_dev_fini(mlrt_ckpt *ck);

/* The name of a host's elastic-state segment in /dev/shm (elastic.c):
 * mlrun removes it when the job ends. */
void mlrti_elastic_segment_name(const char *job, const char *host, char *buf, size_t cap);

#endif
