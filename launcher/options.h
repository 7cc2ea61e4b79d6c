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
	char **argv;           /* the program and its arguments */
} mlrun_opts;

/* Parse argv (after the program name) into o.  Returns 0 to run, 1 when
 * --help or --version was printed, 2 on bad usage (a one-line error has
 * been written to err). */
int mlrun_parse_options(int argc, char **argv, mlrun_opts *o, FILE *err);

void mlrun_print_help(FILE *f);

#endif
