/* mlrun's command line. */
#ifndef MLRT_LAUNCHER_OPTIONS_H
#define MLRT_LAUNCHER_OPTIONS_H

#include <stdint.h>
#include <stdio.h>

typedef enum restart_policy {
	RESTART_NEVER = 0,
	RESTART_ON_FAILURE = 1, /* any failure, up to --max-restarts */
	RESTART_EXIT_CODE = 2,  /* Kubeflow's contract: 1-127 permanent, 128+ retryable */
} restart_policy;

typedef struct mlrun_opts {
	int nproc;             /* workers on this host (-np) */
	int servers;           /* parameter servers, started on the first host */
	int ps_replicas;       /* copies of each server's keys: 0, 1, -1 auto */
	const char *ps_ckpt_dir; /* servers' shard checkpoints, or NULL */
	int ps_ckpt_ms;
	int evaluator;         /* start an evaluator (parameter-server jobs) */
	int gpus_per_proc;     /* GPUs each worker gets (CUDA_VISIBLE_DEVICES) */
	uint64_t gpu_mem;      /* bytes each of those GPUs must have, 0: any */
	int cuda_version;      /* CUDA the driver must support (12020 = 12.2), 0: any */
	const char *rdzv_endpoint; /* "HOST:PORT" of the job's store (one mlrun per host), or NULL */
	int etcd;              /* --rdzv-backend etcd: the store is an etcd there */
	char store_url[300];   /* with rdzv_endpoint: "tcp://HOST:PORT" or "etcd://HOST:PORT" */
	const char *rdzv_hostport; /* rdzv_endpoint without its scheme */
	int nnodes_min;        /* agents in the gang (--nnodes MIN[:MAX]) */
	int nnodes_max;
	restart_policy policy;
	int max_restarts;
	int grace_ms;          /* SIGTERM to SIGKILL */
	int tag_output;        /* 1 on, 0 off, -1 when stdout is a terminal */
	const char *log_dir;
	const char *job_id;
	int rdzv_timeout_ms;
	int rdzv_last_call_ms;
	int verbose;
	int bind;              /* 1 bind each worker to a CPU, 0 not, -1 auto */
	int hb_interval_ms;    /* agents renew their heartbeat lease this often */
	int hb_timeout_ms;     /* an agent silent this long is lost */
	int node_rank;         /* this agent's place in the rank order (-1: by name) */
	/* Several hosts from one command (mlrun -H / --hostfile): */
	const char *hosts;     /* "host1:4,host2:4", or NULL */
	const char *hostfile;  /* Open MPI's format, or NULL */
	const char *rsh;       /* how to start a command on a host */
	int rsh_fanout;        /* agents starting at once */
	const char **env_fwd;  /* -x NAME[=VALUE]: variables the agents get */
	int nenv_fwd;
	int agent;             /* started by a head mlrun: join its store, never serve one */
	int nnodes_given;      /* --nnodes was on the command line */
	int nproc_given;       /* -np was on the command line */
	char **pass;           /* the options a head passes on to its agents (NULL-terminated) */
	char **argv;           /* the program and its arguments */
} mlrun_opts;

/* Parse argv (after the program name) into o.  Returns 0 to run, 1 when
 * --help or --version was printed, 2 on bad usage (a one-line error has
 * been written to err).  Free with mlrun_free_options. */
int mlrun_parse_options(int argc, char **argv, mlrun_opts *o, FILE *err);

void mlrun_free_options(mlrun_opts *o);

/* Whether o starts agents on several hosts (-H or --hostfile). */
static inline int mlrun_is_head(const mlrun_opts *o)
{
	return o->hosts != NULL || o->hostfile != NULL;
}

void mlrun_print_help(FILE *f);

#endif
