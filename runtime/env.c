/* Identity bootstrap from launcher environments. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "runtime/common.h"
#include "runtime/env.h"

/* Default store port offset from MASTER_PORT when mlrt runs under a
 * launcher that does not start an mlrt store (torchrun's own TCPStore
 * already listens on MASTER_PORT). */
#define STORE_PORT_OFFSET 1

static const char *env(const char *name)
{
	const char *s = getenv(name);
	return (s != NULL && *s != '\0') ? s : NULL;
}

/* Required integer variable: logged error when missing or malformed. */
static int need_int(const char *name, int64_t lo, int64_t hi, const char *launcher, int *out)
{
	int64_t v;

	if (env(name) == NULL) {
		mlrt_log(MLRT_LOG_ERROR, "%s environment: %s is not set", launcher, name);
		return MLRT_ERR_INVALID;
	}
	if (mlrti_env_int(name, lo, hi, 0, &v) != MLRT_OK)
		return MLRT_ERR_INVALID;
	*out = (int)v;
	return MLRT_OK;
}

static int opt_int(const char *name, int64_t lo, int64_t hi, int def, int *out)
{
	int64_t v;
	int rc = mlrti_env_int(name, lo, hi, def, &v);

	if (rc == MLRT_OK)
		*out = (int)v;
	return rc;
}

static void copy(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src);
}

/* The store address of a launcher that names a master host and port but
 * does not run an mlrt store: rank 0 serves one on MASTER_PORT + 1 (or
 * MLRT_STORE_PORT). */
static int store_from_master(mlrti_identity *id, const char *launcher)
{
	const char *addr = env("MASTER_ADDR");
	int port, master_port;

	if (addr == NULL)
		return MLRT_ERR_NOT_FOUND;
	if (env("MLRT_STORE_PORT") != NULL) {
		if (opt_int("MLRT_STORE_PORT", 1, 65535, 0, &port) != MLRT_OK)
			return MLRT_ERR_INVALID;
	} else {
		if (need_int("MASTER_PORT", 1, 65535 - STORE_PORT_OFFSET, launcher,
		             &master_port) != MLRT_OK)
			return MLRT_ERR_INVALID;
		port = master_port + STORE_PORT_OFFSET;
	}
	id->store_mode = MLRTI_STORE_HOST;
	snprintf(id->store_addr, sizeof(id->store_addr), "tcp://%s:%d", addr, port);
	snprintf(id->store_bind, sizeof(id->store_bind), "tcp://0.0.0.0:%d", port);
	snprintf(id->store_how, sizeof(id->store_how), "rank 0 serves it on MASTER_ADDR, port %d %s",
	         port, env("MLRT_STORE_PORT") != NULL ? "from MLRT_STORE_PORT" : "= MASTER_PORT+1");
	return MLRT_OK;
}

/* After the first bound of a hostlist range set ("-03,7]" of "[01-03,7]"):
 * check the rest is ranges and single numbers and step past the ']'.
 * 0 when malformed. */
static int skip_range_set(const char **pp)
{
	const char *p = *pp;
	int dash_ok = 1;

	for (;;) {
		if (*p == ']') {
			*pp = p + 1;
			return 1;
		}
		if (*p == '-' && dash_ok)
			dash_ok = 0;
		else if (*p == ',')
			dash_ok = 1;
		else
			return 0;
		p++;
		if (!isdigit((unsigned char)*p))
			return 0;
		while (isdigit((unsigned char)*p))
			p++;
	}
}

int mlrti_slurm_first_host(const char *list, char *out, size_t cap)
{
	const char *p = list;
	size_t n = 0;

	if (out == NULL || cap == 0)
		return MLRT_ERR_INVALID;
	out[0] = '\0';
	if (list == NULL)
		return MLRT_ERR_INVALID;
	/* The first entry ends at the first comma outside brackets; in it,
	 * each range set contributes its first bound, as written (so with its
	 * zero padding). */
	while (*p != '\0' && *p != ',') {
		const char *from = p, *to;

		if (*p == '[') {
			from = ++p;
			while (isdigit((unsigned char)*p))
				p++;
			to = p;
			if (to == from || !skip_range_set(&p))
				goto bad;
		} else if (*p == ']' || isspace((unsigned char)*p)) {
			goto bad;
		} else {
			to = ++p;
		}
		if (n + (size_t)(to - from) >= cap)
			goto bad;
		memcpy(out + n, from, (size_t)(to - from));
		n += (size_t)(to - from);
	}
	if (n == 0)
		goto bad;
	out[n] = '\0';
	return MLRT_OK;
bad:
	out[0] = '\0';
	return MLRT_ERR_INVALID;
}

int mlrti_slurm_store_port(uint64_t job_id, uint64_t step_id)
{
	return MLRTI_SLURM_PORT_BASE +
	       (int)((job_id * MLRTI_SLURM_STEPS + step_id) % MLRTI_SLURM_PORT_SPAN);
}

/* host's IPv4 address as text (the store listens on IPv4). */
static int resolve_ipv4(const char *host, char *out, size_t cap, const char **why)
{
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
	struct sockaddr_in sin;
	int err = getaddrinfo(host, NULL, &hints, &res);

	if (err != 0) {
		*why = gai_strerror(err);
		return MLRT_ERR_NOT_FOUND;
	}
	memcpy(&sin, res->ai_addr, sizeof(sin));
	freeaddrinfo(res);
	if (inet_ntop(AF_INET, &sin.sin_addr, out, (socklen_t)cap) == NULL) {
		*why = "address does not fit";
		return MLRT_ERR_INVALID;
	}
	return MLRT_OK;
}

#define SLURM_WHAT_TO_SET                                                                        \
	"set MASTER_ADDR and MASTER_PORT (rank 0 serves the store on MASTER_PORT+1) or "          \
	"MLRT_STORE=tcp://HOST:PORT"

/* The Slurm store rule for an srun step that names no store (see env.h and
 * docs/launcher.md): rank 0 serves on the first node of the step's node
 * list, on a port derived from the job and step ids. */
static int store_from_slurm(mlrti_identity *id)
{
	const char *list_var = "SLURM_STEP_NODELIST", *step_var = "SLURM_STEP_ID";
	const char *list = env(list_var), *node, *why = "";
	char host[MLRTI_ADDR_MAX - 32], ip[INET_ADDRSTRLEN];
	int64_t job, step;
	int port;

	if (list == NULL) {
		list_var = "SLURM_JOB_NODELIST";
		list = env(list_var);
	}
	if (env(step_var) == NULL)
		step_var = "SLURM_STEPID";
	if (env(step_var) == NULL) {
		mlrt_log(MLRT_LOG_ERROR, "Slurm environment: SLURM_NTASKS=%d but SLURM_STEP_ID is not "
		                         "set, so this process is not one of a job step's tasks (is "
		                         "it the batch script itself?); start the program with srun, "
		                         "or " SLURM_WHAT_TO_SET, id->size);
		return MLRT_ERR_INVALID;
	}
	if (list == NULL || env("SLURM_JOB_ID") == NULL) {
		mlrt_log(MLRT_LOG_ERROR, "Slurm environment: %s is not set, so rank 0's host and the "
		                         "store's port are unknown; " SLURM_WHAT_TO_SET,
		         list == NULL ? "neither SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST" :
		                        "SLURM_JOB_ID");
		return MLRT_ERR_INVALID;
	}
	if (mlrti_env_int("SLURM_JOB_ID", 0, UINT32_MAX, 0, &job) != MLRT_OK ||
	    mlrti_env_int(step_var, 0, UINT32_MAX, 0, &step) != MLRT_OK)
		return MLRT_ERR_INVALID;
	if (mlrti_slurm_first_host(list, host, sizeof(host)) != MLRT_OK) {
		mlrt_log(MLRT_LOG_ERROR, "Slurm environment: cannot read the first host of %s='%s'; "
		                         SLURM_WHAT_TO_SET, list_var, list);
		return MLRT_ERR_INVALID;
	}
	port = mlrti_slurm_store_port((uint64_t)job, (uint64_t)step);
	if (env("MLRT_STORE_PORT") != NULL &&
	    opt_int("MLRT_STORE_PORT", 1, 65535, 0, &port) != MLRT_OK)
		return MLRT_ERR_INVALID;
	/* Rank 0 is on the step's first node unless the tasks were placed by
	 * hand (--distribution=arbitrary, SLURM_HOSTFILE): then nobody would
	 * find its store, and only rank 0 can tell. */
	node = env("SLURMD_NODENAME");
	if (id->rank == 0 && node != NULL && strcmp(node, host) != 0) {
		mlrt_log(MLRT_LOG_ERROR, "Slurm environment: rank 0 runs on %s, not on %s, the first "
		                         "node of %s, where the other ranks look for the store; "
		                         "set MASTER_ADDR=%s and MASTER_PORT, or MLRT_STORE",
		         node, host, list_var, node);
		return MLRT_ERR_INVALID;
	}
	if (resolve_ipv4(host, ip, sizeof(ip), &why) != MLRT_OK) {
		mlrt_log(MLRT_LOG_ERROR, "Slurm environment: cannot resolve %s, the first node of %s "
		                         "and rank 0's host: %s; set MASTER_ADDR to its address and "
		                         "MASTER_PORT, or MLRT_STORE=tcp://HOST:PORT",
		         host, list_var, why);
		return MLRT_ERR_NOT_FOUND;
	}
	id->store_mode = MLRTI_STORE_HOST;
	snprintf(id->store_addr, sizeof(id->store_addr), "tcp://%s:%d", ip, port);
	snprintf(id->store_bind, sizeof(id->store_bind), "tcp://0.0.0.0:%d", port);
	snprintf(id->store_how, sizeof(id->store_how),
	         "Slurm rule: rank 0 serves it on %s, the first node of %s, port %d %s", host,
	         list_var, port,
	         env("MLRT_STORE_PORT") != NULL ? "from MLRT_STORE_PORT" :
	                                          "= 20000 + (SLURM_JOB_ID*16 + SLURM_STEP_ID) % 10000");
	return MLRT_OK;
}

/* Pick how to reach the store for launchers other than mlrun. */
static int choose_store(mlrti_identity *id, const char *launcher, int have_mpi)
{
	const char *store = env("MLRT_STORE");
	int rc;

	if (store != NULL) {
		id->store_mode = MLRTI_STORE_CONNECT;
		copy(id->store_addr, sizeof(id->store_addr), store);
		return MLRT_OK;
	}
	rc = store_from_master(id, launcher);
	if (rc != MLRT_ERR_NOT_FOUND)
		return rc;
	if (id->size == 1) {
		id->store_mode = MLRTI_STORE_NONE;
		return MLRT_OK;
	}
	if (id->launcher == MLRT_LAUNCHER_MPI && have_mpi) {
		id->store_mode = MLRTI_STORE_MPI;
		return MLRT_OK;
	}
	if (id->launcher == MLRT_LAUNCHER_SLURM)
		return store_from_slurm(id);
	mlrt_log(MLRT_LOG_ERROR,
	         "%s environment: no way to find the job's store; set MASTER_ADDR and "
	         "MASTER_PORT (rank 0 serves the store on MASTER_PORT+1) or MLRT_STORE=tcp://HOST:PORT%s",
	         launcher, id->launcher == MLRT_LAUNCHER_MPI ? ", or build mlrt with MPI (-Dmpi=enabled)" : "");
	return MLRT_ERR_INVALID;
}

int mlrti_slurm_tasks_on_node(const char *list, int node_id)
{
	const char *p = list;
	int node = 0;

	if (list == NULL || node_id < 0)
		return -1;
	while (*p != '\0') {
		char *end;
		long tasks = strtol(p, &end, 10), repeat = 1;

		if (end == p || tasks <= 0)
			return -1;
		p = end;
		if (p[0] == '(') {
			if (p[1] != 'x')
				return -1;
			repeat = strtol(p + 2, &end, 10);
			if (end == p + 2 || repeat <= 0 || *end != ')')
				return -1;
			p = end + 1;
		}
		if (node_id < node + repeat)
			return (int)tasks;
		node += (int)repeat;
		if (*p == ',')
			p++;
		else if (*p != '\0')
			return -1;
	}
	return -1;
}

static int from_mlrun(mlrti_identity *id)
{
	const char *s;
	int64_t gen;

	id->launcher = MLRT_LAUNCHER_MLRUN;
	if (need_int("MLRT_RANK", 0, 1 << 24, "mlrun", &id->rank) != MLRT_OK ||
	    need_int("MLRT_WORLD_SIZE", 1, 1 << 24, "mlrun", &id->size) != MLRT_OK ||
	    opt_int("MLRT_LOCAL_RANK", 0, 1 << 24, id->rank, &id->local_rank) != MLRT_OK ||
	    opt_int("MLRT_LOCAL_SIZE", 1, 1 << 24, id->size, &id->local_size) != MLRT_OK ||
	    opt_int("MLRT_RESTART_COUNT", 0, 1 << 30, 0, &id->restart_count) != MLRT_OK ||
	    mlrti_env_int("MLRT_GENERATION", 0, INT64_MAX, 0, &gen) != MLRT_OK)
		return MLRT_ERR_INVALID;
	id->generation = gen;
	copy(id->job_id, sizeof(id->job_id), (s = env("MLRT_JOB_ID")) ? s : "mlrt");
	/* Parameter-server jobs (mlrun --servers): servers count among
	 * themselves in MLRT_RANK / MLRT_WORLD_SIZE. */
	if (opt_int("MLRT_NUM_SERVERS", 0, 1 << 16, 0, &id->num_servers) != MLRT_OK ||
	    opt_int("MLRT_NUM_WORKERS", 1, 1 << 24, id->size, &id->num_workers) != MLRT_OK ||
	    opt_int("MLRT_PS_REPLICAS", 0, 1, id->num_servers >= 2, &id->ps_replicas) != MLRT_OK)
		return MLRT_ERR_INVALID;
	s = env("MLRT_ROLE");
	if (s != NULL && strcmp(s, "server") == 0) {
		id->role = MLRTI_ROLE_SERVER;
	} else if (s != NULL && strcmp(s, "evaluator") == 0) {
		id->role = MLRTI_ROLE_EVALUATOR;
	} else if (s != NULL && strcmp(s, "worker") != 0) {
		mlrt_log(MLRT_LOG_ERROR, "mlrun environment: MLRT_ROLE=%s; want worker, server or "
		                         "evaluator", s);
		return MLRT_ERR_INVALID;
	}
	if (id->role == MLRTI_ROLE_SERVER && id->num_servers != id->size) {
		mlrt_log(MLRT_LOG_ERROR, "mlrun environment: a server with MLRT_WORLD_SIZE=%d but "
		                         "MLRT_NUM_SERVERS=%d", id->size, id->num_servers);
		return MLRT_ERR_INVALID;
	}
	if ((s = env("MLRT_STORE")) != NULL) {
		id->store_mode = MLRTI_STORE_CONNECT;
		copy(id->store_addr, sizeof(id->store_addr), s);
	} else if (id->size > 1) {
		mlrt_log(MLRT_LOG_ERROR, "mlrun environment: MLRT_STORE is not set but "
		                         "MLRT_WORLD_SIZE=%d; start the program with mlrun",
		         id->size);
		return MLRT_ERR_INVALID;
	}
	return MLRT_OK;
}

static int from_torchrun(mlrti_identity *id, int have_mpi)
{
	const char *s;

	id->launcher = MLRT_LAUNCHER_TORCHRUN;
	if (need_int("RANK", 0, 1 << 24, "torchrun", &id->rank) != MLRT_OK ||
	    need_int("WORLD_SIZE", 1, 1 << 24, "torchrun", &id->size) != MLRT_OK ||
	    opt_int("LOCAL_RANK", 0, 1 << 24, 0, &id->local_rank) != MLRT_OK ||
	    opt_int("LOCAL_WORLD_SIZE", 1, 1 << 24, 1, &id->local_size) != MLRT_OK ||
	    opt_int("TORCHELASTIC_RESTART_COUNT", 0, 1 << 30, 0, &id->restart_count) != MLRT_OK)
		return MLRT_ERR_INVALID;
	id->generation = id->restart_count;
	copy(id->job_id, sizeof(id->job_id), (s = env("TORCHELASTIC_RUN_ID")) ? s : "torchrun");
	return choose_store(id, "torchrun", have_mpi);
}

static int from_mpi(mlrti_identity *id, int have_mpi)
{
	const char *s;

	id->launcher = MLRT_LAUNCHER_MPI;
	if (need_int("OMPI_COMM_WORLD_RANK", 0, 1 << 24, "Open MPI", &id->rank) != MLRT_OK ||
	    need_int("OMPI_COMM_WORLD_SIZE", 1, 1 << 24, "Open MPI", &id->size) != MLRT_OK ||
	    opt_int("OMPI_COMM_WORLD_LOCAL_RANK", 0, 1 << 24, 0, &id->local_rank) != MLRT_OK ||
	    opt_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1, 1 << 24, 1, &id->local_size) != MLRT_OK)
		return MLRT_ERR_INVALID;
	if ((s = env("OMPI_MCA_ess_base_jobid")) != NULL || (s = env("PMIX_NAMESPACE")) != NULL)
		snprintf(id->job_id, sizeof(id->job_id), "mpi-%s", s);
	else
		copy(id->job_id, sizeof(id->job_id), "mpi");
	return choose_store(id, "Open MPI", have_mpi);
}

static int from_slurm(mlrti_identity *id, int have_mpi)
{
	const char *s;
	int node_id = 0;

	id->launcher = MLRT_LAUNCHER_SLURM;
	if (need_int("SLURM_PROCID", 0, 1 << 24, "Slurm", &id->rank) != MLRT_OK ||
	    need_int("SLURM_NTASKS", 1, 1 << 24, "Slurm", &id->size) != MLRT_OK ||
	    opt_int("SLURM_LOCALID", 0, 1 << 24, 0, &id->local_rank) != MLRT_OK ||
	    opt_int("SLURM_NODEID", 0, 1 << 24, 0, &node_id) != MLRT_OK ||
	    opt_int("SLURM_RESTART_COUNT", 0, 1 << 30, 0, &id->restart_count) != MLRT_OK)
		return MLRT_ERR_INVALID;
	s = env("SLURM_STEP_TASKS_PER_NODE");
	if (s == NULL)
		s = env("SLURM_TASKS_PER_NODE");
	id->local_size = s != NULL ? mlrti_slurm_tasks_on_node(s, node_id) : 1;
	if (id->local_size < 1) {
		mlrt_log(MLRT_LOG_ERROR, "Slurm environment: cannot read node %d's task count from "
		                         "tasks-per-node list '%s'", node_id, s);
		return MLRT_ERR_INVALID;
	}
	id->generation = id->restart_count;
	snprintf(id->job_id, sizeof(id->job_id), "slurm-%s.%s",
	         (s = env("SLURM_JOB_ID")) ? s : "0", env("SLURM_STEP_ID") ? env("SLURM_STEP_ID") : "0");
	return choose_store(id, "Slurm", have_mpi);
}

int mlrti_env_identity(mlrti_identity *id, int have_mpi)
{
	int rc;

	memset(id, 0, sizeof(*id));
	id->size = 1;
	id->local_size = 1;
	copy(id->job_id, sizeof(id->job_id), "local");

	if (env("MLRT_RANK") != NULL)
		rc = from_mlrun(id);
	else if (env("RANK") != NULL && env("WORLD_SIZE") != NULL)
		rc = from_torchrun(id, have_mpi);
	else if (env("OMPI_COMM_WORLD_RANK") != NULL)
		rc = from_mpi(id, have_mpi);
	else if (env("SLURM_PROCID") != NULL && env("SLURM_NTASKS") != NULL)
		rc = from_slurm(id, have_mpi);
	else
		rc = choose_store(id, "standalone", have_mpi);
	if (rc != MLRT_OK)
		return rc;
	if (id->num_workers == 0)
		id->num_workers = id->size;

	if (id->rank >= id->size || id->local_rank >= id->local_size || id->local_size > id->size) {
		mlrt_log(MLRT_LOG_ERROR, "environment: inconsistent identity: rank %d of %d, "
		                         "local rank %d of %d",
		         id->rank, id->size, id->local_rank, id->local_size);
		return MLRT_ERR_INVALID;
	}
	return MLRT_OK;
}
