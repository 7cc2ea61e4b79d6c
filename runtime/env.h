/* Identity bootstrap: who this process is, read from the environment of
 * the launcher that started it (mlrun, torchrun, Open MPI, Slurm).
 * Not installed.  See docs/runtime.md for the variables. */
#ifndef MLRT_RUNTIME_ENV_H
#define MLRT_RUNTIME_ENV_H

#include <stddef.h>
#include <stdint.h>

#include <mlrt/runtime.h>

#define MLRTI_ADDR_MAX 256
#define MLRTI_JOB_MAX 128
#define MLRTI_HOW_MAX 512

/* The Slurm store rule (see docs/launcher.md): without MLRT_STORE or
 * MASTER_ADDR, rank 0 of a job step serves the store on the first node of
 * the step's node list, on port
 *   MLRTI_SLURM_PORT_BASE + (job_id * MLRTI_SLURM_STEPS + step_id) % MLRTI_SLURM_PORT_SPAN
 * (20000-29999: below Linux's ephemeral ports; up to 16 steps of a job and
 * 625 consecutive jobs get different ports).  MLRT_STORE_PORT overrides. */
#define MLRTI_SLURM_PORT_BASE 20000
#define MLRTI_SLURM_PORT_SPAN 10000
#define MLRTI_SLURM_STEPS 16

/* How this process finds the job's store. */
typedef enum mlrti_store_mode {
	MLRTI_STORE_NONE = 0,    /* a world of one: no store needed */
	MLRTI_STORE_CONNECT = 1, /* connect to store_addr (rank 0 included) */
	MLRTI_STORE_HOST = 2,    /* rank 0 serves at store_bind, all connect to store_addr */
	MLRTI_STORE_MPI = 3,     /* rank 0 serves; the address travels by MPI_Bcast */
} mlrti_store_mode;

/* Role in a parameter-server job (mlrun --servers); workers otherwise. */
typedef enum mlrti_role {
	MLRTI_ROLE_WORKER = 0,
	MLRTI_ROLE_SERVER = 1,
	MLRTI_ROLE_EVALUATOR = 2, /* pulls parameters, never pushes */
} mlrti_role;

typedef struct mlrti_identity {
	mlrt_launcher launcher;
	mlrti_role role;
	int num_servers; /* 0: no parameter servers */
	int num_workers; /* workers in the job (== size for a worker) */
	int ps_replicas; /* copies of each key range on other servers (0 or 1) */
	int rank;
	int size;
	int local_rank;
	int local_size;
	int64_t generation;
	int restart_count;
	char job_id[MLRTI_JOB_MAX];
	mlrti_store_mode store_mode;
	char store_addr[MLRTI_ADDR_MAX]; /* "tcp://HOST:PORT" */
	char store_bind[MLRTI_ADDR_MAX]; /* where rank 0 binds (MLRTI_STORE_HOST) */
	char store_how[MLRTI_HOW_MAX];   /* how store_addr was derived, for error
	                                  * messages; "" when named outright */
} mlrti_identity;

/* Fill id from the environment.  have_mpi says whether this build can
 * bootstrap through MPI.  Errors (MLRT_ERR_INVALID) are logged with the
 * variable at fault and what to set instead. */
int mlrti_env_identity(mlrti_identity *id, int have_mpi);

/* Local task count of node node_id from a Slurm tasks-per-node list such as
 * "2(x3),1" (nodes 0-2 run 2 tasks, node 3 runs 1).  -1 when malformed or
 * node_id is out of range. */
int mlrti_slurm_tasks_on_node(const char *list, int node_id);

/* The first host of a Slurm hostlist, as Slurm writes SLURM_STEP_NODELIST:
 * "node[01-03,7],gpu5" gives "node01" (zero padding kept), "r[1-2]-n[5-6]"
 * gives "r1-n5".  Writes the name, NUL-terminated, to out (cap bytes).
 * MLRT_ERR_INVALID when the list is malformed or the name does not fit;
 * out is then "". */
int mlrti_slurm_first_host(const char *list, char *out, size_t cap);

/* The store port of Slurm job job_id's step step_id by the rule above
 * (without MLRT_STORE_PORT). */
int mlrti_slurm_store_port(uint64_t job_id, uint64_t step_id);

#endif
