/* The library's front door: mlrt_init, mlrt_finalize, mlrt_world.
 *
 * The one file of runtime/ that calls upward (into comm/) to wire the
 * layers together: it reads the identity, reaches (or serves) the store
 * and creates the world communicator. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mlrt_config.h"

#if HAVE_MPI
#include <mpi.h>
#endif

#include <mlrt/runtime.h>
#include <mlrt/store.h>

#include "comm/comm.h"
#include "runtime/common.h"
#include "runtime/ctx.h"
#include "runtime/devptr.h"
#include "runtime/env.h"

#define DEFAULT_TIMEOUT_MS 300000
/* How long rank 0, when it serves the store, waits at finalize for the
 * other ranks to leave before it stops serving. */
#define FINALIZE_WAIT_MS 30000

struct mlrt_ctx {
	mlrti_identity id;
	int timeout_ms;
	mlrt_store_server *server; /* rank 0 outside mlrun */
	mlrt_store *store;
	mlrt_comm *world;
	char gen_prefix[MLRTI_PREFIX_MAX];
	int store_answered; /* the store answered init's first request */
	int device;         /* CUDA ordinal chosen at init; -1: none */
	int mpi_initialized_here;
};

/* Under mpirun without a store address: rank 0 serves the store and sends
 * its address to every rank with MPI_Bcast. */
static int mpi_bootstrap(mlrt_ctx *ctx)
{
#if HAVE_MPI
	char addr[MLRTI_ADDR_MAX] = {0};
	int inited = 0, rc = MLRT_OK;

	MPI_Initialized(&inited);
	if (!inited) {
		if (MPI_Init(NULL, NULL) != MPI_SUCCESS) {
			mlrt_log(MLRT_LOG_ERROR, "init: MPI_Init failed");
			return MLRT_ERR_UNAVAILABLE;
		}
		ctx->mpi_initialized_here = 1;
	}
	if (ctx->id.rank == 0) {
		rc = mlrt_store_server_start("tcp://0.0.0.0:0", &ctx->server);
		if (rc == MLRT_OK)
			snprintf(addr, sizeof(addr), "%s", mlrt_store_server_addr(ctx->server));
	}
	/* Broadcast even after a failure, so that no rank hangs: an empty
	 * address tells the others that rank 0 could not start the store. */
	MPI_Bcast(addr, (int)sizeof(addr), MPI_CHAR, 0, MPI_COMM_WORLD);
	if (addr[0] == '\0') {
		mlrt_log(MLRT_LOG_ERROR, "init: rank 0 could not start the store under mpirun");
		return rc != MLRT_OK ? rc : MLRT_ERR_UNAVAILABLE;
	}
	snprintf(ctx->id.store_addr, sizeof(ctx->id.store_addr), "%s", addr);
	return MLRT_OK;
#else
	(void)ctx;
	return MLRT_ERR_UNSUPPORTED;
#endif
}

static int reach_store(mlrt_ctx *ctx)
{
	char key[MLRTI_PREFIX_MAX + 32], host[256] = "?", val[320];
	int rc;

	switch (ctx->id.store_mode) {
	case MLRTI_STORE_NONE:
		return MLRT_OK;
	case MLRTI_STORE_HOST:
		if (ctx->id.rank == 0) {
			rc = mlrt_store_server_start(ctx->id.store_bind, &ctx->server);
			if (rc != MLRT_OK) {
				mlrt_log(MLRT_LOG_ERROR, "init: rank 0 cannot serve the store at %s: %s "
				                         "(%s; is the port taken? set MLRT_STORE_PORT)",
				         ctx->id.store_bind, mlrt_strerror(rc), ctx->id.store_how);
				return rc;
			}
			mlrt_log(MLRT_LOG_INFO, "init: serving the store at %s (%s)", ctx->id.store_bind,
			         ctx->id.store_how);
		}
		break;
	case MLRTI_STORE_MPI:
		rc = mpi_bootstrap(ctx);
		if (rc != MLRT_OK)
			return rc;
		break;
	case MLRTI_STORE_CONNECT:
		break;
	}
	rc = mlrt_store_open(ctx->id.store_addr, &ctx->store);
	if (rc != MLRT_OK)
		return rc;
	rc = mlrt_store_set_timeout(ctx->store, ctx->timeout_ms);
	if (rc != MLRT_OK)
		return rc;
	/* The first request proves the store answers, and leaves a trace of
	 * who joined for the launcher's diagnostics. */
	gethostname(host, sizeof(host) - 1);
	snprintf(key, sizeof(key), "%sinit/%d", ctx->gen_prefix, ctx->id.rank);
	snprintf(val, sizeof(val), "%s:%d", host, (int)getpid());
	rc = mlrt_store_set(ctx->store, key, val, strlen(val));
	ctx->store_answered = rc == MLRT_OK;
	if (rc != MLRT_OK && ctx->id.store_how[0] != '\0')
		mlrt_log(MLRT_LOG_ERROR, "init: the store at %s does not answer: %s (%s; if rank 0 "
		                         "failed, or runs elsewhere, set MLRT_STORE=tcp://HOST:PORT, "
		                         "or MASTER_ADDR and MASTER_PORT)",
		         ctx->id.store_addr, mlrt_strerror(rc), ctx->id.store_how);
	else if (rc != MLRT_OK)
		mlrt_log(MLRT_LOG_ERROR, "init: the store at %s does not answer: %s",
		         ctx->id.store_addr, mlrt_strerror(rc));
	return rc;
}

int mlrt_init(mlrt_ctx **out)
{
	mlrt_ctx *ctx;
	int64_t timeout;
	int rc;

	if (out == NULL)
		return MLRT_ERR_INVALID;
	*out = NULL;
	ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL)
		return MLRT_ERR_NOMEM;
	(void)mlrt_log_get_level(); /* read MLRT_LOG_LEVEL now */
	MLRTI_CHECK_GOTO(mlrti_env_int("MLRT_TIMEOUT_MS", 1, INT32_MAX, DEFAULT_TIMEOUT_MS, &timeout),
	                 rc, fail);
	ctx->timeout_ms = (int)timeout;
	MLRTI_CHECK_GOTO(mlrti_env_identity(&ctx->id, HAVE_MPI), rc, fail);
	mlrt_log_set_rank(ctx->id.rank);
	MLRTI_CHECK_GOTO(mlrti_device_select(ctx->id.local_rank, &ctx->device), rc, fail);
	snprintf(ctx->gen_prefix, sizeof(ctx->gen_prefix), "%s/g%" PRId64 "/", ctx->id.job_id,
	         ctx->id.generation);
	MLRTI_CHECK_GOTO(reach_store(ctx), rc, fail);
	if (ctx->id.role != MLRTI_ROLE_WORKER) {
		/* Parameter servers and the evaluator are not in the workers'
		 * world. */
		mlrt_log(MLRT_LOG_INFO, "init: %s %d of %d, job %s, generation %" PRId64,
		         ctx->id.role == MLRTI_ROLE_SERVER ? "parameter server" : "evaluator",
		         ctx->id.rank, ctx->id.size, ctx->id.job_id, ctx->id.generation);
		*out = ctx;
		return MLRT_OK;
	}
	MLRTI_CHECK_GOTO(mlrti_comm_create(ctx->store, ctx->id.store_addr, ctx->gen_prefix, "world",
	                                   ctx->id.rank, ctx->id.size, ctx->timeout_ms, &ctx->world),
	                 rc, fail);
	mlrt_log(MLRT_LOG_INFO, "init: rank %d of %d (local %d of %d), job %s, generation %" PRId64,
	         ctx->id.rank, ctx->id.size, ctx->id.local_rank, ctx->id.local_size, ctx->id.job_id,
	         ctx->id.generation);
	*out = ctx;
	return MLRT_OK;
fail:
	mlrt_finalize(ctx);
	return rc;
}

/* Rank 0 serving the store keeps it up until every rank has said goodbye
 * (or FINALIZE_WAIT_MS passes: a rank that died will not).  The last rank
 * to leave sets "<gen>/left/all", which rank 0 waits for. */
static void wait_for_leavers(mlrt_ctx *ctx)
{
	char count_key[MLRTI_PREFIX_MAX + 16], all_key[MLRTI_PREFIX_MAX + 16];
	const char *keys[1] = {all_key};
	int64_t left = 0;

	snprintf(count_key, sizeof(count_key), "%sleft/count", ctx->gen_prefix);
	snprintf(all_key, sizeof(all_key), "%sleft/all", ctx->gen_prefix);
	if (mlrt_store_add(ctx->store, count_key, 1, &left) != MLRT_OK)
		return;
	if (left == ctx->id.size)
		mlrt_store_set(ctx->store, all_key, "1", 1);
	if (ctx->server != NULL && mlrt_store_wait(ctx->store, keys, 1, FINALIZE_WAIT_MS) != MLRT_OK)
		mlrt_log(MLRT_LOG_WARN, "finalize: not every one of %d ranks left within %d ms; "
		                        "stopping the store anyway", ctx->id.size, FINALIZE_WAIT_MS);
}

int mlrt_finalize(mlrt_ctx *ctx)
{
	if (ctx == NULL)
		return MLRT_OK;
	/* A store that never answered will not now: waiting for the other
	 * ranks through it would only add another timeout to a failed init. */
	if (ctx->store != NULL && ctx->store_answered && ctx->id.store_mode != MLRTI_STORE_CONNECT)
		wait_for_leavers(ctx);
	mlrti_comm_free(ctx->world);
	mlrt_store_close(ctx->store);
	if (ctx->server != NULL)
		mlrt_store_server_stop(ctx->server);
#if HAVE_MPI
	if (ctx->mpi_initialized_here) {
		int finalized = 0;

		MPI_Finalized(&finalized);
		if (!finalized)
			MPI_Finalize();
	}
#endif
	free(ctx);
	return MLRT_OK;
}

int mlrt_rank(const mlrt_ctx *ctx)
{
	return ctx->id.rank;
}

int mlrt_size(const mlrt_ctx *ctx)
{
	return ctx->id.size;
}

int mlrt_local_rank(const mlrt_ctx *ctx)
{
	return ctx->id.local_rank;
}

int mlrt_local_size(const mlrt_ctx *ctx)
{
	return ctx->id.local_size;
}

int64_t mlrt_generation(const mlrt_ctx *ctx)
{
	return ctx->id.generation;
}

int mlrt_restart_count(const mlrt_ctx *ctx)
{
	return ctx->id.restart_count;
}

mlrt_launcher mlrt_launched_by(const mlrt_ctx *ctx)
{
	return ctx->id.launcher;
}

const char *mlrt_job_id(const mlrt_ctx *ctx)
{
	return ctx->id.job_id;
}

mlrt_comm *mlrt_world(mlrt_ctx *ctx)
{
	return ctx->world;
}

int mlrt_ctx_device(const mlrt_ctx *ctx)
{
	return ctx->device;
}

mlrt_store *mlrt_ctx_store(mlrt_ctx *ctx)
{
	return ctx->store;
}

const char *mlrti_ctx_store_addr(const mlrt_ctx *ctx)
{
	return ctx->store != NULL ? ctx->id.store_addr : NULL;
}

const char *mlrti_ctx_gen_prefix(const mlrt_ctx *ctx)
{
	return ctx->gen_prefix;
}

int mlrti_ctx_timeout_ms(const mlrt_ctx *ctx)
{
	return ctx->timeout_ms;
}

int mlrti_ctx_is_server(const mlrt_ctx *ctx)
{
	return ctx->id.role == MLRTI_ROLE_SERVER;
}

int mlrti_ctx_is_evaluator(const mlrt_ctx *ctx)
{
	return ctx->id.role == MLRTI_ROLE_EVALUATOR;
}

int mlrti_ctx_num_servers(const mlrt_ctx *ctx)
{
	return ctx->id.num_servers;
}

int mlrti_ctx_num_workers(const mlrt_ctx *ctx)
{
	return ctx->id.num_workers;
}

int mlrti_ctx_ps_replicas(const mlrt_ctx *ctx)
{
	return ctx->id.ps_replicas;
}
