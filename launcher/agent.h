/* The agent: runs one generation of the gang on this host.  It joins the
 * rendezvous, spawns its workers with their identity, relays their output,
 * and stops them all when one fails, when another host's agent reports a
 * failure (the generation's abort key) or when mlrun is interrupted. */
#ifndef MLRT_LAUNCHER_AGENT_H
#define MLRT_LAUNCHER_AGENT_H

#include <signal.h>
#include <stdint.h>
#include <sys/types.h>

#include <mlrt/store.h>

#include "launcher/options.h"
#include "launcher/worker.h"

typedef struct agent {
	const mlrun_opts *o;
	mlrt_store *store;
	const char *store_addr;
	const char *job_id;
	const char *host;   /* this agent's name in the rendezvous */
	int master_port;    /* MASTER_PORT given to the workers */
	char master_addr[64]; /* MASTER_ADDR given to the workers (set each generation) */
	char *program;      /* resolved path of o->argv[0] */
	int signal_fd;      /* read end of mlrun's self-pipe for signals */
	int order;          /* sort key in the rendezvous (--node-rank) */
	int index;          /* this host's place in the last generation's gang */
	char **expected;    /* the last generation's hosts, to name the missing */
	int nexpected;
	int expect;         /* hosts known to come to the next round (0: unknown) */
	char **await;       /* those of them named (expected less the lost; borrowed) */
	int nawait;
} agent;

typedef enum gen_result {
	GEN_SUCCEEDED,   /* every worker exited 0 */
	GEN_FAILED,      /* a worker failed (here or on another host) */
	GEN_INTERRUPTED, /* mlrun got SIGINT/SIGTERM/SIGHUP */
	GEN_NOT_FORMED,  /* the rendezvous failed */
	GEN_MISSED,      /* the round closed without this host: join the next */
	GEN_RESCALE,     /* hosts asked to join: a new generation, not a failure */
	GEN_ERROR,       /* mlrun itself could not go on (spawn, store, cut off) */
} gen_result;

typedef struct gen_outcome {
	gen_result result;
	int signal;          /* GEN_INTERRUPTED: which signal */
	int failed_rank;     /* GEN_FAILED: first rank to fail, -1 if remote */
	char failed_name[24]; /* "rank 3" or "server 1" */
	pid_t failed_pid;
	int exit_code;       /* its exit code, or 128 + signal */
	int retryable;       /* for --restart-policy exit-code */
	char how[128];       /* "exited with code 3", "was killed by signal 9 (SIGKILL)" */
	char error[1024];    /* GEN_NOT_FORMED / GEN_ERROR / GEN_RESCALE / remote failure text */
	tail err_tail;       /* last stderr lines of the failed rank */
} gen_outcome;

/* Run generation gen (restart_count restarts so far).  Blocks until every
 * local worker has ended; never leaves a worker behind. */
void agent_run_generation(agent *a, int64_t gen, int restart_count, gen_outcome *out);

/* Publish that generation gen is over, for every rank and host: the first
 * reason published stays (it is the root cause); the time it ended goes
 * beside it (<job>/g<gen>/ended), for the membership log. */
void agent_end_generation(mlrt_store *st, const char *job_id, int64_t gen, const char *why);

/* Free what the agent keeps between generations. */
void agent_fini(agent *a);

/* The key of job-wide state: "<job>/<name>". */
void agent_job_key(const agent *a, const char *name, char *key, size_t cap);

/* The signal that interrupted mlrun, or 0; set by mlrun's handler. */
extern volatile sig_atomic_t agent_interrupted;

#endif
