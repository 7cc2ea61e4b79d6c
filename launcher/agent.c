/* One generation of the gang on this host. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launcher/agent.h"
#include "launcher/heartbeat.h"
#include "launcher/membership.h"
#include "runtime/common.h"
#include "runtime/netaddr.h"
#include "runtime/rdzv.h"

#define TICK_MS 100
/* After the last worker is reaped, how long to drain output still held
 * open by its children before closing the pipes. */
#define DRAIN_MS 1000
#define SUSPECT_MS 200 /* see reap() */
#define MAX_RESPAWNS 3 /* of one parameter server in a generation */
#define RESCALE "rescale: " /* abort reasons that are membership changes */

volatile sig_atomic_t agent_interrupted;

extern char **environ;

/* Variables mlrun sets; inherited values of these are dropped. */
static const char *const owned_vars[] = {
	"MLRT_RANK", "MLRT_WORLD_SIZE", "MLRT_LOCAL_RANK", "MLRT_LOCAL_SIZE", "MLRT_STORE",
	"MLRT_JOB_ID", "MLRT_GENERATION", "MLRT_RESTART_COUNT", "MLRT_NODE_RANK", "RANK",
	"WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
	"GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK", "ROLE_WORLD_SIZE",
	"TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_MAX_RESTARTS",
	"MLRT_ROLE", "MLRT_NUM_SERVERS", "MLRT_NUM_WORKERS", "MLRT_PS_REPLICAS",
	"MLRT_PS_CKPT_DIR", "MLRT_PS_CKPT_MS", "MLRT_PS_REJOIN", "MLRT_GPUS_PER_PROC",
};

static int is_owned(const char *entry)
{
	for (size_t i = 0; i < MLRTI_ARRAY_LEN(owned_vars); i++) {
		size_t n = strlen(owned_vars[i]);

		if (strncmp(entry, owned_vars[i], n) == 0 && entry[n] == '=')
			return 1;
	}
	return 0;
}

typedef struct env_list {
	char **v;
	size_t n, cap;
} env_list;

/* Append entry ("NAME=value", copied) to e. */
static int env_push(env_list *e, const char *entry)
{
	if (e->n + 2 > e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 64;
		char **v = realloc(e->v, cap * sizeof(*v));

		if (v == NULL)
			return -1;
		e->v = v;
		e->cap = cap;
	}
	e->v[e->n] = strdup(entry);
	if (e->v[e->n] == NULL)
		return -1;
	e->v[++e->n] = NULL;
	return 0;
}

static int env_add(env_list *e, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int env_add(env_list *e, const char *name, const char *fmt, ...)
{
	char entry[640];
	int n = snprintf(entry, sizeof(entry), "%s=", name);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(entry + n, sizeof(entry) - (size_t)n, fmt, ap);
	va_end(ap);
	return env_push(e, entry);
}

static void env_free(env_list *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->v[i]);
	free(e->v);
	memset(e, 0, sizeof(*e));
}

/* Whether parameter servers keep a copy of each other's keys. */
static int replicated(const agent *a)
{
	return a->o->ps_replicas > 0 || (a->o->ps_replicas < 0 && a->o->servers >= 2);
}

void agent_job_key(const agent *a, const char *name, char *key, size_t cap)
{
	snprintf(key, cap, "%s/%s", a->job_id, name);
}

/* MASTER_ADDR and MASTER_PORT, the same on every host: rank 0's host
 * publishes its own in the store for the generation; the others read it.
 * On one host: loopback. */
static int agree_master(agent *a, int64_t gen, const mlrti_rdzv_result *r, gen_outcome *out)
{
	char key[300], val[128];
	const char *keys[1] = {key};
	void *got = NULL;
	size_t len;
	int rc;

	snprintf(a->master_addr, sizeof(a->master_addr), "127.0.0.1");
	if (r->nmembers <= 1)
		return 0;
	snprintf(key, sizeof(key), "%s/g%" PRId64 "/master", a->job_id, gen);
	if (r->index == 0) {
		char host[256];

		if (mlrti_endpoint_host(a->store_addr, host, sizeof(host)) != MLRT_OK ||
		    mlrti_reachable_addr(host, a->master_addr, sizeof(a->master_addr)) != MLRT_OK)
			snprintf(a->master_addr, sizeof(a->master_addr), "127.0.0.1");
		snprintf(val, sizeof(val), "%s %d", a->master_addr, a->master_port);
		rc = mlrt_store_set(a->store, key, val, strlen(val));
	} else {
		rc = mlrt_store_wait(a->store, keys, 1, a->o->rdzv_timeout_ms);
		if (rc == MLRT_OK)
			rc = mlrt_store_get(a->store, key, &got, &len);
		if (rc == MLRT_OK && sscanf(got, "%63s %d", a->master_addr, &a->master_port) != 2)
			rc = MLRT_ERR_PROTOCOL;
		free(got);
	}
	if (rc == MLRT_OK)
		return 0;
	out->result = GEN_ERROR;
	snprintf(out->error, sizeof(out->error), "generation %" PRId64 ": cannot agree on "
	         "MASTER_ADDR with the other hosts: %s", gen, mlrt_strerror(rc));
	return -1;
}

/* The GPUs of the worker of local rank lr, g each: devices lr*g ..
 * lr*g+g-1 of those this agent sees.  When the agent was itself given
 * CUDA_VISIBLE_DEVICES (by a batch scheduler), they are entries of that
 * list, since a worker's list is read against all the host's GPUs. */
static void gpu_list(int lr, int g, char *list, size_t len)
{
	const char *mine = getenv("CUDA_VISIBLE_DEVICES");
	size_t used = 0;

	list[0] = '\0';
	for (int k = lr * g; k < lr * g + g && used < len; k++) {
		const char *p = mine;
		int field = 0;

		if (mine == NULL || mine[0] == '\0') {
			used += (size_t)snprintf(list + used, len - used, "%s%d", used ? "," : "", k);
			continue;
		}
		/* Entry k of the agent's list; the requirement check made sure
		 * it has enough (the runtime counts only those). */
		while (field < k && p != NULL && (p = strchr(p, ',')) != NULL)
			p++, field++;
		if (p == NULL || *p == '\0')
			p = "-1"; /* not there: a worker that sees no GPU, not another's */
		used += (size_t)snprintf(list + used, len - used, "%s%.*s", used ? "," : "",
		                         (int)strcspn(p, ","), p);
	}
}

/* The full environment of one worker. */
static int build_env(const agent *a, const mlrti_rdzv_result *r, int local_rank, int64_t gen,
                     int restarts, env_list *e)
{
	const mlrti_rdzv_member *me = &r->members[r->index];
	int rank = me->first_rank + local_rank, fail = 0;

	for (char **p = environ; *p != NULL; p++)
		if (!is_owned(*p) &&
		    !(a->o->gpus_per_proc > 0 && strncmp(*p, "CUDA_VISIBLE_DEVICES=", 21) == 0))
			fail |= env_push(e, *p);
	fail |= env_add(e, "MLRT_RANK", "%d", rank);
	fail |= env_add(e, "MLRT_WORLD_SIZE", "%d", r->world_size);
	fail |= env_add(e, "MLRT_LOCAL_RANK", "%d", local_rank);
	fail |= env_add(e, "MLRT_LOCAL_SIZE", "%d", me->nproc);
	fail |= env_add(e, "MLRT_NODE_RANK", "%d", r->index);
	fail |= env_add(e, "MLRT_STORE", "%s", a->store_addr);
	fail |= env_add(e, "MLRT_JOB_ID", "%s", a->job_id);
	fail |= env_add(e, "MLRT_GENERATION", "%" PRId64, gen);
	fail |= env_add(e, "MLRT_RESTART_COUNT", "%d", restarts);
	fail |= env_add(e, "MLRT_ROLE", "%s", "worker");
	if (a->o->gpus_per_proc > 0) {
		char list[256];

		gpu_list(local_rank, a->o->gpus_per_proc, list, sizeof(list));
		fail |= env_add(e, "CUDA_VISIBLE_DEVICES", "%s", list);
		/* The library then works on the first of them (mlrt_ctx_device). */
		fail |= env_add(e, "MLRT_GPUS_PER_PROC", "%d", a->o->gpus_per_proc);
	}
	fail |= env_add(e, "MLRT_NUM_SERVERS", "%d", a->o->servers);
	fail |= env_add(e, "MLRT_PS_REPLICAS", "%d", replicated(a));
	/* torchrun's names, so that PyTorch programs run unchanged. */
	fail |= env_add(e, "RANK", "%d", rank);
	fail |= env_add(e, "WORLD_SIZE", "%d", r->world_size);
	fail |= env_add(e, "LOCAL_RANK", "%d", local_rank);
	fail |= env_add(e, "LOCAL_WORLD_SIZE", "%d", me->nproc);
	fail |= env_add(e, "GROUP_RANK", "%d", r->index);
	fail |= env_add(e, "GROUP_WORLD_SIZE", "%d", r->nmembers);
	fail |= env_add(e, "ROLE_RANK", "%d", rank);
	fail |= env_add(e, "ROLE_WORLD_SIZE", "%d", r->world_size);
	fail |= env_add(e, "MASTER_ADDR", "%s", a->master_addr);
	fail |= env_add(e, "MASTER_PORT", "%d", a->master_port);
	fail |= env_add(e, "TORCHELASTIC_RESTART_COUNT", "%d", restarts);
	fail |= env_add(e, "TORCHELASTIC_MAX_RESTARTS", "%d", a->o->max_restarts);
	fail |= env_add(e, "TORCHELASTIC_RUN_ID", "%s", a->job_id);
	return fail ? -1 : 0;
}

/* The environment of a parameter server (mlrun --servers; index among
 * them) or of the evaluator (--evaluator): the workers' variables, with the
 * servers counted among themselves and the evaluator alone. */
static int build_server_env(const agent *a, const mlrti_rdzv_result *r, const worker *w,
                            int64_t gen, int restarts, env_list *e)
{
	int n = w->server == ROLE_EVALUATOR ? 1 : a->o->servers, fail = 0;

	for (char **p = environ; *p != NULL; p++)
		if (!is_owned(*p))
			fail |= env_push(e, *p);
	fail |= env_add(e, "MLRT_ROLE", "%s", w->server == ROLE_EVALUATOR ? "evaluator" : "server");
	fail |= env_add(e, "MLRT_RANK", "%d", w->rank);
	fail |= env_add(e, "MLRT_WORLD_SIZE", "%d", n);
	fail |= env_add(e, "MLRT_LOCAL_RANK", "%d", w->rank);
	fail |= env_add(e, "MLRT_LOCAL_SIZE", "%d", n);
	fail |= env_add(e, "MLRT_NUM_SERVERS", "%d", a->o->servers);
	fail |= env_add(e, "MLRT_NUM_WORKERS", "%d", r->world_size);
	fail |= env_add(e, "MLRT_PS_REPLICAS", "%d", replicated(a));
	fail |= env_add(e, "MLRT_PS_CKPT_MS", "%d", a->o->ps_ckpt_ms);
	if (a->o->ps_ckpt_dir != NULL)
		fail |= env_add(e, "MLRT_PS_CKPT_DIR", "%s", a->o->ps_ckpt_dir);
	fail |= env_add(e, "MLRT_STORE", "%s", a->store_addr);
	fail |= env_add(e, "MLRT_JOB_ID", "%s", a->job_id);
	fail |= env_add(e, "MLRT_GENERATION", "%" PRId64, gen);
	fail |= env_add(e, "MLRT_RESTART_COUNT", "%d", restarts);
	return fail ? -1 : 0;
}

static int open_log(const agent *a, int rank)
{
	char path[4096];
	int fd;

	if (a->o->log_dir == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/rank-%d.log", a->o->log_dir, rank);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		mlrt_log(MLRT_LOG_WARN, "mlrun: cannot write %s: %s; rank %d's output goes to the "
		                        "terminal only", path, strerror(errno), rank);
	return fd;
}

/* State of the host's gang while it runs. */
typedef struct gang {
	worker *w;
	int n;
	int running;          /* not yet reaped */
	int stopping;         /* SIGTERM sent; SIGKILL at kill_at */
	int64_t kill_at;
	int64_t drain_until;  /* set once every worker is reaped */
	char prefix[256];     /* "<job>/g<gen>/" */
	const mlrti_rdzv_result *r; /* the generation's gang */
	int64_t gen;
	int restarts;
	worker *suspect;      /* first failure seen, not yet recorded */
	int64_t suspect_until;
	char abort_key[256];
	heartbeat *hb;        /* NULL on a single host that cannot grow */
} gang;

static void stop_all(agent *a, gang *g, int sig)
{
	if (!g->stopping) {
		g->stopping = 1;
		g->kill_at = mlrti_now_ms() + a->o->grace_ms;
	}
	for (int i = 0; i < g->n; i++)
		worker_signal(&g->w[i], sig);
}

void agent_end_generation(mlrt_store *st, const char *job_id, int64_t gen, const char *why)
{
	char key[300], now[32];
	int swapped = 0;

	snprintf(key, sizeof(key), "%s/g%" PRId64 "/abort", job_id, gen);
	if (mlrt_store_cas(st, key, NULL, 0, why, strlen(why), &swapped, NULL, NULL) != MLRT_OK) {
		mlrt_log(MLRT_LOG_WARN, "mlrun: cannot publish the end of the generation to the store");
		return;
	}
	if (swapped) {
		snprintf(key, sizeof(key), "%s/g%" PRId64 "/ended", job_id, gen);
		snprintf(now, sizeof(now), "%" PRId64, mlrti_wall_ms());
		mlrt_store_set(st, key, now, strlen(now));
	}
}

static void publish_abort(agent *a, gang *g, const char *why)
{
	agent_end_generation(a->store, a->job_id, g->gen, why);
}

static void record_failure(agent *a, gang *g, worker *w, gen_outcome *out)
{
	char why[512];

	out->result = GEN_FAILED;
	out->failed_rank = w->rank;
	snprintf(out->failed_name, sizeof(out->failed_name), "%s", w->name);
	out->failed_pid = w->pid;
	out->exit_code = worker_exit_code(w);
	out->retryable = out->exit_code >= 128;
	worker_describe_exit(w, out->how, sizeof(out->how));
	snprintf(why, sizeof(why), "%s (host %s, pid %d) %s", w->name, a->host, (int)w->pid,
	         out->how);
	publish_abort(a, g, why);
}

/* A replicated parameter server died: mark it down in the store (its
 * backup takes over its keys, and workers send it their requests) and let
 * the job go on.  0 when it cannot be marked: then it ends the generation. */
static int server_down(agent *a, gang *g, worker *w)
{
	char key[300], val[32], how[128];

	snprintf(key, sizeof(key), "%sps/down/%d", g->prefix, w->rank);
	snprintf(val, sizeof(val), "%" PRId64, mlrti_wall_ms());
	if (g->stopping || mlrt_store_set(a->store, key, val, strlen(val)) != MLRT_OK)
		return 0;
	worker_describe_exit(w, how, sizeof(how));
	fprintf(stderr, "mlrun: %s (host %s, pid %d) %s; its backup takes over its keys and the "
	        "job goes on\n", w->name, a->host, (int)w->pid, how);
	return 1;
}

/* Start a replicated parameter server again after it died: it rejoins
 * the running job as the backup of its ranges (MLRT_PS_REJOIN=1), brought
 * up to date by their primaries.  At most MAX_RESPAWNS times a generation. */
static void respawn_server(agent *a, gang *g, worker *w)
{
	env_list env = {0};

	if (w->respawns >= MAX_RESPAWNS || g->stopping)
		return;
	/* What the dead process left in its pipes is lost with it. */
	if (w->out.fd >= 0)
		close(w->out.fd), w->out.fd = -1;
	if (w->err.fd >= 0)
		close(w->err.fd), w->err.fd = -1;
	if (build_server_env(a, g->r, w, g->gen, g->restarts, &env) == 0 &&
	    env_add(&env, "MLRT_PS_REJOIN", "%d", 1) == 0 &&
	    worker_spawn(w, a->program, a->o->argv, env.v, -1) == 0) {
		w->exited = 0;
		w->status = 0;
		w->respawns++;
		g->running++;
		fprintf(stderr, "mlrun: %s started again (pid %d); it rejoins as a backup\n", w->name,
		        (int)w->pid);
	}
	env_free(&env);
}

static void check_remote_abort(agent *a, gang *g, gen_outcome *out);

/* Reap every worker that has ended.  The first failure is the root cause,
 * with one refinement: a worker killed by a signal is preferred to one
 * that exited non-zero, since survivors of a crash exit with an error
 * (MLRT_ERR_PEER_LOST) a moment after it, sometimes before the kernel has
 * reported the killed one.  So a non-zero exit is held as a suspect for
 * SUSPECT_MS (the gang is stopped only then, and the generation does not
 * end before it even when no worker is left) in case a signalled worker
 * turns up, or another host or the head publishes the cause (a lost
 * host). */
static void reap(agent *a, gang *g, gen_outcome *out)
{
	int64_t now = mlrti_now_ms();
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (int i = 0; i < g->n; i++) {
			worker *w = &g->w[i];

			if (w->pid != pid || w->exited)
				continue;
			w->exited = 1;
			w->status = status;
			g->running--;
			if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
				continue;
			if (w->server == ROLE_SERVER && replicated(a) && server_down(a, g, w)) {
				respawn_server(a, g, w);
				continue;
			}
			if (g->suspect == NULL) {
				g->suspect = w;
				g->suspect_until = now + SUSPECT_MS;
			} else if (WIFSIGNALED(status) && !WIFSIGNALED(g->suspect->status)) {
				g->suspect = w;
			}
		}
	}
	if (g->suspect != NULL && out->result == GEN_SUCCEEDED &&
	    (WIFSIGNALED(g->suspect->status) || now >= g->suspect_until || g->stopping)) {
		/* A worker that exited with an error may have lost a peer: a
		 * failure another host (or the head) published first is then
		 * the root cause. */
		if (!WIFSIGNALED(g->suspect->status))
			check_remote_abort(a, g, out);
		if (out->result == GEN_SUCCEEDED)
			record_failure(a, g, g->suspect, out);
		stop_all(a, g, SIGTERM);
	}
}

/* Another host's agent ended the generation. */
static void check_remote_abort(agent *a, gang *g, gen_outcome *out)
{
	void *why = NULL;
	size_t len;

	if (out->result != GEN_SUCCEEDED || g->stopping)
		return;
	if (mlrt_store_get(a->store, g->abort_key, &why, &len) == MLRT_OK) {
		out->result = strncmp(why, RESCALE, strlen(RESCALE)) == 0 ? GEN_RESCALE : GEN_FAILED;
		out->failed_rank = -1;
		out->retryable = 1;
		snprintf(out->error, sizeof(out->error), "%s", (char *)why);
		stop_all(a, g, SIGTERM);
	}
	free(why);
}

/* What the heartbeats saw: a lost host ends the generation for everyone;
 * a lost store takes this host out of the job; hosts waiting to join
 * start a new generation. */
static void check_heartbeat(agent *a, gang *g, gen_outcome *out)
{
	char detail[512], why[600];

	if (out->result != GEN_SUCCEEDED || g->stopping)
		return;
	switch (heartbeat_event(g->hb, detail, sizeof(detail))) {
	case HB_NONE:
		return;
	case HB_MEMBER_LOST:
		/* The first reason published stands: a host that stopped beating
		 * because another host or the head had already ended the
		 * generation is not its cause. */
		publish_abort(a, g, detail);
		check_remote_abort(a, g, out);
		if (out->result != GEN_SUCCEEDED)
			return;
		out->result = GEN_FAILED;
		out->failed_rank = -1;
		out->retryable = 1;
		snprintf(out->error, sizeof(out->error), "%s", detail);
		break;
	case HB_STORE_LOST:
		out->result = GEN_ERROR;
		snprintf(out->error, sizeof(out->error), "host %s is cut off from the job: %s; "
		         "its workers were stopped and it leaves the job", a->host, detail);
		break;
	case HB_JOINERS:
		out->result = GEN_RESCALE;
		snprintf(why, sizeof(why), "%s%s", RESCALE, detail);
		snprintf(out->error, sizeof(out->error), "%s", why);
		publish_abort(a, g, why);
		break;
	}
	stop_all(a, g, SIGTERM);
}

static void handle_signal(agent *a, gang *g, gen_outcome *out)
{
	char buf[64];
	int sig = agent_interrupted;

	while (read(a->signal_fd, buf, sizeof(buf)) > 0)
		;
	if (sig == 0)
		return;
	if (out->result == GEN_INTERRUPTED) {
		/* A second interrupt: no more grace. */
		stop_all(a, g, SIGKILL);
		return;
	}
	out->result = GEN_INTERRUPTED;
	out->signal = sig;
	publish_abort(a, g, "mlrun was interrupted");
	stop_all(a, g, sig);
}

/* Watch the gang until every worker is reaped and its output drained. */
static void watch(agent *a, gang *g, const relay_opts *ro, gen_outcome *out)
{
	struct pollfd *fds = calloc((size_t)g->n * 2 + 1, sizeof(*fds));
	stream **streams = calloc((size_t)g->n * 2 + 1, sizeof(*streams));
	worker **owners = calloc((size_t)g->n * 2 + 1, sizeof(*owners));
	int64_t next_check = 0;

	if (fds == NULL || streams == NULL || owners == NULL) {
		/* Without memory to watch, at least leave nothing behind. */
		stop_all(a, g, SIGKILL);
		while (g->running > 0 && waitpid(-1, NULL, 0) > 0)
			g->running--;
		goto out;
	}
	for (;;) {
		int nfds = 1, open_streams = 0;
		int64_t now = mlrti_now_ms();

		fds[0].fd = a->signal_fd;
		fds[0].events = POLLIN;
		for (int i = 0; i < g->n; i++) {
			stream *ss[2] = {&g->w[i].out, &g->w[i].err};

			for (int j = 0; j < 2; j++) {
				if (ss[j]->fd < 0)
					continue;
				fds[nfds].fd = ss[j]->fd;
				fds[nfds].events = POLLIN;
				streams[nfds] = ss[j];
				owners[nfds] = &g->w[i];
				nfds++;
				open_streams++;
			}
		}
		/* Done once every worker is reaped, its output drained and the
		 * root cause of a failure settled (see reap). */
		if (g->running == 0 && (g->suspect == NULL || out->result != GEN_SUCCEEDED)) {
			if (g->drain_until == 0)
				g->drain_until = now + DRAIN_MS;
			if (open_streams == 0 || now >= g->drain_until)
				break;
		}
		int tick = TICK_MS;

		if (g->suspect != NULL && out->result == GEN_SUCCEEDED && g->suspect_until - now < tick)
			tick = g->suspect_until > now ? (int)(g->suspect_until - now) : 0;
		if (poll(fds, (nfds_t)nfds, tick) < 0 && errno != EINTR)
			break;
		for (int k = 1; k < nfds; k++)
			if (fds[k].revents != 0)
				worker_relay(owners[k], streams[k], ro);
		if (fds[0].revents != 0 || agent_interrupted)
			handle_signal(a, g, out);
		reap(a, g, out);
		now = mlrti_now_ms();
		if (g->stopping && now >= g->kill_at)
			stop_all(a, g, SIGKILL);
		if (now >= next_check) {
			check_heartbeat(a, g, out);
			check_remote_abort(a, g, out);
			next_check = now + TICK_MS;
		}
	}
out:
	/* Close what grandchildren still hold open. */
	for (int i = 0; i < g->n; i++) {
		if (g->w[i].out.fd >= 0)
			close(g->w[i].out.fd), g->w[i].out.fd = -1;
		if (g->w[i].err.fd >= 0)
			close(g->w[i].err.fd), g->w[i].err.fd = -1;
	}
	free(fds);
	free(streams);
	free(owners);
}

/* The CPU for local rank i of n under --bind-to (Open MPI's default):
 * the i-th CPU mlrun may run on, when every worker gets one of its own;
 * -1 (no binding) otherwise. */
static int cpu_for(const agent *a, int i, int n)
{
	cpu_set_t allowed;
	int seen = 0;

	if (a->o->bind == 0 || sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
		return -1;
	if (CPU_COUNT(&allowed) < n) {
		if (a->o->bind == 1 && i == 0)
			mlrt_log(MLRT_LOG_WARN, "mlrun: %d workers but %d CPUs: not binding them",
			         n, CPU_COUNT(&allowed));
		return -1;
	}
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &allowed) && seen++ == i)
			return cpu;
	return -1;
}

static int join_gang(agent *a, int64_t gen, mlrti_rdzv_result *r, gen_outcome *out)
{
	mlrti_rdzv_opts ro = {
		.job = a->job_id,
		.round = gen,
		.min = a->o->nnodes_min,
		.max = a->o->nnodes_max,
		.last_call_ms = a->o->nnodes_min == a->o->nnodes_max ? 0 : a->o->rdzv_last_call_ms,
		.timeout_ms = a->o->rdzv_timeout_ms,
		.expected = (const char *const *)a->expected,
		.nexpected = (size_t)a->nexpected,
		.cancel = &agent_interrupted,
		.order = a->order,
		.expect = a->expect,
		.await = (const char *const *)a->await,
		.nawait = (size_t)a->nawait,
	};
	int rc = mlrti_rdzv_join(a->store, &ro, a->host, a->o->nproc, r);

	if (rc == MLRT_OK)
		return 0;
	if (rc == MLRT_ERR_ABORTED && agent_interrupted) {
		out->result = GEN_INTERRUPTED;
		out->signal = agent_interrupted;
		return -1;
	}
	if (rc == MLRT_ERR_ABORTED) {
		out->result = GEN_MISSED;
		snprintf(out->error, sizeof(out->error), "%s", r->error);
		return -1;
	}
	out->result = GEN_NOT_FORMED;
	if (r->error[0] != '\0')
		snprintf(out->error, sizeof(out->error), "%s", r->error);
	else
		snprintf(out->error, sizeof(out->error), "rendezvous of generation %" PRId64
		         " failed: %s", gen, mlrt_strerror(rc));
	return -1;
}

void agent_fini(agent *a)
{
	free(a->await);
	a->await = NULL;
	a->nawait = 0;
	for (int i = 0; i < a->nexpected; i++)
		free(a->expected[i]);
	free(a->expected);
	a->expected = NULL;
	a->nexpected = 0;
}

/* After the round: the job's current generation (hosts that come later
 * join the next one), the membership log, and the heartbeats. */
static int start_generation(agent *a, int64_t gen, gang *g, gen_outcome *out)
{
	const mlrti_rdzv_result *r = g->r;
	char key[300], val[32];
	heartbeat_opts ho = {
		.store_addr = a->store_addr,
		.prefix = g->prefix,
		.gang = r,
		.interval_ms = a->o->hb_interval_ms,
		.timeout_ms = a->o->hb_timeout_ms,
		.watch_joiners = r->nmembers < a->o->nnodes_max,
	};
	int rc;

	agent_job_key(a, "generation", key, sizeof(key));
	snprintf(val, sizeof(val), "%" PRId64, gen);
	rc = mlrt_store_set(a->store, key, val, strlen(val));
	membership_remember(a, r);
	if (rc == MLRT_OK && (r->nmembers > 1 || a->o->nnodes_max > 1)) {
		membership_log(a, gen, r);
		rc = heartbeat_start(&ho, &g->hb);
	}
	if (rc == MLRT_OK)
		return 0;
	out->result = GEN_ERROR;
	snprintf(out->error, sizeof(out->error), "generation %" PRId64 ": cannot start the "
	         "heartbeat in the job's store: %s", gen, mlrt_strerror(rc));
	return -1;
}

void agent_run_generation(agent *a, int64_t gen, int restart_count, gen_outcome *out)
{
	relay_opts ro = {.tag = a->o->tag_output > 0};
	mlrti_rdzv_result r;
	gang g = {0};
	env_list env = {0};

	memset(out, 0, sizeof(*out));
	out->result = GEN_SUCCEEDED;
	out->failed_rank = -1;
	snprintf(g.abort_key, sizeof(g.abort_key), "%s/g%" PRId64 "/abort", a->job_id, gen);
	snprintf(g.prefix, sizeof(g.prefix), "%s/g%" PRId64 "/", a->job_id, gen);
	g.r = &r;
	g.gen = gen;
	g.restarts = restart_count;

	a->index = 0;
	if (join_gang(a, gen, &r, out) != 0 || (a->index = r.index, 0) ||
	    agree_master(a, gen, &r, out) != 0 ||
	    start_generation(a, gen, &g, out) != 0) {
		mlrti_rdzv_result_fini(&r);
		return;
	}
	/* The first host also runs the parameter servers and the evaluator,
	 * after its workers. */
	g.n = r.members[r.index].nproc +
	      (r.index == 0 ? a->o->servers + (a->o->evaluator ? 1 : 0) : 0);
	g.w = calloc((size_t)g.n, sizeof(*g.w));
	if (g.w == NULL) {
		out->result = GEN_ERROR;
		snprintf(out->error, sizeof(out->error), "out of memory for %d workers", g.n);
		goto done;
	}
	mlrt_log(MLRT_LOG_INFO, "mlrun: generation %" PRId64 ": %d worker(s) here, world size %d",
	         gen, g.n, r.world_size);
	for (int i = 0; i < g.n; i++) {
		worker *w = &g.w[i];
		int nw = r.members[r.index].nproc;

		w->server = i < nw ? ROLE_WORKER : i < nw + a->o->servers ? ROLE_SERVER : ROLE_EVALUATOR;
		w->rank = w->server == ROLE_WORKER ? r.members[r.index].first_rank + i
		          : w->server == ROLE_SERVER ? i - nw : 0;
		snprintf(w->name, sizeof(w->name), "%s %d",
		         w->server == ROLE_WORKER ? "rank" : w->server == ROLE_SERVER ? "server"
		                                                                       : "evaluator",
		         w->rank);
		w->local_rank = i;
		w->out.fd = w->err.fd = -1;
		w->log_fd = w->server ? -1 : open_log(a, w->rank);
		env_free(&env);
		if ((w->server ? build_server_env(a, &r, w, gen, restart_count, &env)
		               : build_env(a, &r, i, gen, restart_count, &env)) != 0 ||
		    worker_spawn(w, a->program, a->o->argv, env.v, cpu_for(a, i, g.n)) != 0) {
			out->result = GEN_ERROR;
			snprintf(out->error, sizeof(out->error), "cannot start %s (%s): %s",
			         w->name, a->program, strerror(errno));
			publish_abort(a, &g, out->error);
			stop_all(a, &g, SIGKILL);
			break;
		}
		g.running++;
	}
	watch(a, &g, &ro, out);
	if (out->result == GEN_FAILED && out->failed_rank >= 0) {
		for (int i = 0; i < g.n; i++)
			if (strcmp(g.w[i].name, out->failed_name) == 0)
				out->err_tail = g.w[i].err_tail;
	}
done:
	heartbeat_stop(g.hb, out->result == GEN_SUCCEEDED);
	for (int i = 0; g.w != NULL && i < g.n; i++)
		if (g.w[i].log_fd >= 0)
			close(g.w[i].log_fd);
	free(g.w);
	env_free(&env);
	mlrti_rdzv_result_fini(&r);
}
