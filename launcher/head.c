/* The head of a job started on several hosts from one command. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <wordexp.h>

#include <mlrt/store.h>

#include "launcher/agent.h"
#include "launcher/head.h"
#include "launcher/heartbeat.h"
#include "launcher/hosts.h"
#include "launcher/rsh.h"
#include "launcher/worker.h"
#include "runtime/common.h"
#include "runtime/netaddr.h"

#define TICK_MS 100
#define CHECKIN_WAIT_MS 30000 /* an agent that never checks in stops holding up the others */

/* One host's agent, as the head sees it. */
typedef struct remote {
	pid_t pid;          /* the --rsh process (0: not running) */
	int stdin_fd;       /* its standard input, held open while we live */
	int status;         /* wait status of its last run */
	int64_t started_ms;
} remote;

typedef struct head {
	mlrun_opts *o;
	host_entry *hosts;
	int nhosts;
	remote *r;
	char job_id[128];
	char store_addr[300];
	mlrt_store *store;
	char self[PATH_MAX]; /* this mlrun's path, run on the hosts too */
	char cwd[PATH_MAX];
	int relaunches;
	int interrupted;    /* the signal that stops the job, or SIGTERM when the head stops it */
	int failed;         /* exit status when the job failed before it formed */
	int64_t kill_at;    /* once stopping: when SIGTERM turns into SIGKILL */
} head;

/* The command line an agent runs on host i, as one shell command. */
static int agent_command(const head *h, int i, char *cmd, size_t cap)
{
	const mlrun_opts *o = h->o;
	char num[64 + HOST_NAME_MAX_LEN];
	size_t len = 0;
	int fail = 0;

	cmd[0] = '\0';
	fail |= rsh_mlrun_command(cmd, cap, &len, h->cwd, h->self, h->hosts[i].name, o->env_fwd,
	                          o->nenv_fwd);
	fail |= rsh_quote(cmd, cap, &len, "--agent");
	fail |= rsh_quote(cmd, cap, &len, "--rdzv-endpoint");
	fail |= rsh_quote(cmd, cap, &len, h->store_addr);
	fail |= rsh_quote(cmd, cap, &len, "--job-id");
	fail |= rsh_quote(cmd, cap, &len, h->job_id);
	fail |= rsh_quote(cmd, cap, &len, "--nnodes");
	snprintf(num, sizeof(num), "%d:%d", o->nnodes_min, o->nnodes_max);
	fail |= rsh_quote(cmd, cap, &len, num);
	fail |= rsh_quote(cmd, cap, &len, "-np");
	snprintf(num, sizeof(num), "%d", h->hosts[i].slots);
	fail |= rsh_quote(cmd, cap, &len, num);
	fail |= rsh_quote(cmd, cap, &len, "--node-rank");
	snprintf(num, sizeof(num), "%d", i);
	fail |= rsh_quote(cmd, cap, &len, num);
	if (o->tag_output >= 0 || isatty(STDOUT_FILENO))
		fail |= rsh_quote(cmd, cap, &len, o->tag_output == 0 ? "--no-tag-output" : "--tag-output");
	for (char **p = o->pass; *p != NULL; p++)
		fail |= rsh_quote(cmd, cap, &len, *p);
	fail |= rsh_quote(cmd, cap, &len, "--");
	for (char **p = o->argv; *p != NULL; p++)
		fail |= rsh_quote(cmd, cap, &len, *p);
	return fail ? -1 : 0;
}

/* Start host i's agent through --rsh. */
static int launch(head *h, int i)
{
	remote *r = &h->r[i];
	static char cmd[65536];
	char **argv = NULL;
	wordexp_t we;
	int in[2] = {-1, -1}, rc = -1;

	if (agent_command(h, i, cmd, sizeof(cmd)) != 0) {
		fprintf(stderr, "mlrun: the command for host %s is too long\n", h->hosts[i].name);
		return -1;
	}
	/* cmd + 1: past rsh_quote's leading space. */
	if (rsh_argv(h->o->rsh, h->hosts[i].name, cmd + 1, &argv, &we) != 0) {
		fprintf(stderr, "mlrun: cannot split --rsh '%s' into words\n", h->o->rsh);
		return -1;
	}
	if (pipe2(in, O_CLOEXEC) != 0) {
		fprintf(stderr, "mlrun: cannot start the agent for host %s: %s\n", h->hosts[i].name,
		        strerror(errno));
		goto out;
	}
	r->pid = fork();
	if (r->pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		setpgid(0, 0); /* a terminal's ^C reaches the head only */
		setpriority(PRIO_PROCESS, 0, worker_nice);
		dup2(in[0], STDIN_FILENO);
		execvp(argv[0], argv);
		fprintf(stderr, "mlrun: cannot run --rsh '%s' for host %s: %s\n", argv[0],
		        h->hosts[i].name, strerror(errno));
		_exit(127);
	}
	close(in[0]);
	if (r->pid < 0) {
		fprintf(stderr, "mlrun: cannot start the agent for host %s: %s\n", h->hosts[i].name,
		        strerror(errno));
		r->pid = 0;
		close(in[1]);
		goto out;
	}
	r->stdin_fd = in[1];
	r->started_ms = mlrti_now_ms();
	mlrt_log(MLRT_LOG_INFO, "mlrun: agent for host %s started (pid %d)", h->hosts[i].name,
	         (int)r->pid);
	rc = 0;
out:
	free(argv);
	wordfree(&we);
	return rc;
}

/* The store's address for the agents: the etcd with --rdzv-backend etcd;
 * else a store served here, at --rdzv-endpoint when given, else
 * this host's address towards the first remote host (loopback when every
 * host is this one). */
static int serve_store(head *h, mlrt_store_server **srv)
{
	char bind[300], addr[MLRTI_ADDR_MAX] = "127.0.0.1";
	const char *port = "0";
	int far = 0, rc;

	if (h->o->etcd) { /* the store is there already */
		snprintf(h->store_addr, sizeof(h->store_addr), "%s", h->o->store_url);
		return mlrt_store_open(h->store_addr, &h->store);
	}
	if (h->o->rdzv_endpoint != NULL) {
		port = strrchr(h->o->rdzv_hostport, ':') + 1;
		if (mlrti_endpoint_host(h->o->rdzv_hostport, addr, sizeof(addr)) != MLRT_OK)
			return MLRT_ERR_INVALID;
	} else {
		for (int i = 0; i < h->nhosts && !far; i++)
			if (!mlrti_is_loopback(h->hosts[i].name)) {
				far = 1;
				rc = mlrti_reachable_addr(h->hosts[i].name, addr, sizeof(addr));
				if (rc != MLRT_OK)
					return rc;
			}
	}
	snprintf(bind, sizeof(bind), "tcp://%s:%s", far || h->o->rdzv_endpoint ? "0.0.0.0"
	                                                                        : "127.0.0.1", port);
	rc = mlrt_store_server_start(bind, srv);
	if (rc != MLRT_OK)
		return rc;
	port = strrchr(mlrt_store_server_addr(*srv), ':') + 1;
	snprintf(h->store_addr, sizeof(h->store_addr), "tcp://%s:%s", addr, port);
	return mlrt_store_open(h->store_addr, &h->store);
}

/* Read job-wide key name as an integer; -1 when absent. */
static int64_t job_int(head *h, const char *name)
{
	char key[300];
	void *val = NULL;
	size_t len;
	int64_t v = -1;

	snprintf(key, sizeof(key), "%s/%s", h->job_id, name);
	if (mlrt_store_get(h->store, key, &val, &len) == MLRT_OK)
		v = strtoll(val, NULL, 10);
	free(val);
	return v;
}

/* Whether host is in the running generation (*gen), as the agents
 * recorded it in <job>/members: "<gen> <host> <host>...". */
static int in_gang(head *h, const char *host, int64_t *gen)
{
	char key[300];
	void *val = NULL;
	size_t len, n = strlen(host);
	int found = 0, off = 0;

	snprintf(key, sizeof(key), "%s/members", h->job_id);
	if (mlrt_store_get(h->store, key, &val, &len) == MLRT_OK &&
	    sscanf(val, "%" SCNd64 " %n", gen, &off) == 1)
		for (const char *p = (char *)val + off; *p != '\0' && !found; p += strcspn(p, " "),
		                                                               p += *p == ' ')
			found = strncmp(p, host, n) == 0 && (p[n] == ' ' || p[n] == '\0');
	free(val);
	return found;
}

static void signal_all(head *h, int sig);

static void describe(int status, char *buf, size_t cap)
{
	if (WIFEXITED(status))
		snprintf(buf, cap, "exited with code %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, cap, "was killed by signal %d (SIG%s)", WTERMSIG(status),
		         sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?");
	else
		snprintf(buf, cap, "ended (status %d)", status);
}

/* Host i's agent ended.  Before the job is over that is a lost host: the
 * running generation ends at once (faster than the heartbeats would
 * notice), and a job that cannot shrink gets the agent started again. */
static void agent_ended(head *h, int i)
{
	remote *r = &h->r[i];
	char how[96], why[512];
	int64_t gen;

	close(r->stdin_fd);
	r->stdin_fd = -1;
	r->pid = 0;
	if (h->interrupted || job_int(h, "done") >= 0 ||
	    (WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0))
		return;
	describe(r->status, how, sizeof(how));
	snprintf(why, sizeof(why), "the agent of host %s %s", h->hosts[i].name, how);
	if (job_int(h, "generation") < 0 && h->o->nnodes_min >= h->nhosts) {
		/* The gang cannot form without it: stop, rather than let the
		 * others wait out the rendezvous. */
		fprintf(stderr, "mlrun: %s before the gang formed; stopping the job\n", why);
		h->failed = WIFEXITED(r->status) ? WEXITSTATUS(r->status) : 128 + WTERMSIG(r->status);
		h->interrupted = SIGTERM;
		signal_all(h, SIGTERM);
		return;
	}
	fprintf(stderr, "mlrun: %s\n", why);
	if (in_gang(h, h->hosts[i].name, &gen)) {
		char prefix[160];

		snprintf(prefix, sizeof(prefix), "%s/g%" PRId64 "/", h->job_id, gen);
		heartbeat_mark_lost(h->store, prefix, h->hosts[i].name);
		agent_end_generation(h->store, h->job_id, gen, why);
	}
	if (h->o->nnodes_min < h->o->nnodes_max || h->o->policy == RESTART_NEVER ||
	    h->relaunches >= h->o->max_restarts)
		return;
	h->relaunches++;
	fprintf(stderr, "mlrun: starting the agent of host %s again (%d of %d)\n",
	        h->hosts[i].name, h->relaunches, h->o->max_restarts);
	launch(h, i);
}

static void signal_all(head *h, int sig)
{
	if (sig == SIGTERM && h->kill_at == 0)
		h->kill_at = mlrti_now_ms() + h->o->grace_ms + 2000;
	for (int i = 0; i < h->nhosts; i++) {
		if (h->r[i].pid > 0)
			kill(h->r[i].pid, sig);
		if (h->r[i].stdin_fd >= 0)
			close(h->r[i].stdin_fd), h->r[i].stdin_fd = -1;
	}
}

static int running(const head *h)
{
	int n = 0;

	for (int i = 0; i < h->nhosts; i++)
		n += h->r[i].pid > 0;
	return n;
}

/* Start the agents (at most --rsh-fanout starting at once: an agent has
 * started once it checks in at the store) and wait for them all. */
static void run_agents(head *h, int signal_fd)
{
	int next = 0;

	while (next < h->nhosts || running(h) > 0) {
		struct pollfd p = {.fd = signal_fd, .events = POLLIN};
		int64_t up = job_int(h, "agents-up"), starting = 0, now = mlrti_now_ms();
		int status;
		pid_t pid;

		for (int i = 0; i < next; i++)
			starting += h->r[i].pid > 0 && now - h->r[i].started_ms < CHECKIN_WAIT_MS;
		starting -= up > 0 ? up : 0;
		while (next < h->nhosts && !h->interrupted && starting < h->o->rsh_fanout) {
			if (launch(h, next) == 0)
				starting++;
			next++;
		}
		if (h->interrupted)
			next = h->nhosts;
		if (poll(&p, 1, TICK_MS) > 0) {
			char buf[64];

			while (read(signal_fd, buf, sizeof(buf)) > 0)
				;
		}
		if (agent_interrupted && !h->interrupted) {
			h->interrupted = agent_interrupted;
			fprintf(stderr, "mlrun: interrupted by signal %d; stopping the agents\n",
			        h->interrupted);
			signal_all(h, SIGTERM);
		}
		if (h->kill_at > 0 && mlrti_now_ms() >= h->kill_at)
			signal_all(h, SIGKILL);
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
			for (int i = 0; i < h->nhosts; i++)
				if (h->r[i].pid == pid) {
					h->r[i].status = status;
					agent_ended(h, i);
				}
	}
}

int head_run(mlrun_opts *o, int signal_fd)
{
	head h = {.o = o};
	mlrt_store_server *srv = NULL;
	char err[512];
	sigset_t mask;
	int status = 1, rc;
	ssize_t n;

	rc = o->hosts != NULL
	             ? hosts_parse_list(o->hosts, o->nproc, &h.hosts, &h.nhosts, err, sizeof(err))
	             : hosts_parse_file(o->hostfile, o->nproc, &h.hosts, &h.nhosts, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "mlrun: %s\n", err);
		return 2;
	}
	if (!o->nnodes_given)
		o->nnodes_min = o->nnodes_max = h.nhosts;
	if (o->nnodes_min > h.nhosts)
		fprintf(stderr, "mlrun: --nnodes %d:%d needs more hosts than the %d listed; the job "
		        "waits for others to join\n", o->nnodes_min, o->nnodes_max, h.nhosts);
	h.r = calloc((size_t)h.nhosts, sizeof(*h.r));
	n = readlink("/proc/self/exe", h.self, sizeof(h.self) - 1);
	if (h.r == NULL || n <= 0 || getcwd(h.cwd, sizeof(h.cwd)) == NULL) {
		fprintf(stderr, "mlrun: cannot set up the job: %s\n", strerror(errno));
		goto out;
	}
	h.self[n] = '\0';
	for (int i = 0; i < h.nhosts; i++) {
		h.r[i].stdin_fd = -1;
	}
	if (o->job_id != NULL)
		snprintf(h.job_id, sizeof(h.job_id), "%s", o->job_id);
	else
		snprintf(h.job_id, sizeof(h.job_id), "mlrt-%d", (int)getpid());
	/* The store's thread must leave our signals to the main thread. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	rc = serve_store(&h, &srv);
	pthread_sigmask(SIG_UNBLOCK, &mask, NULL);
	if (rc != MLRT_OK) {
		fprintf(stderr, "mlrun: cannot serve the job's store%s%s: %s\n",
		        o->rdzv_endpoint ? " at " : "", o->rdzv_endpoint ? o->rdzv_endpoint : "",
		        mlrt_strerror(rc));
		goto out;
	}
	mlrt_log(MLRT_LOG_INFO, "mlrun: job %s on %d hosts, store at %s", h.job_id, h.nhosts,
	         h.store_addr);
	run_agents(&h, signal_fd);
	/* The job's verdict, as its agents recorded it; else theirs. */
	{
		int64_t done = job_int(&h, "done");

		status = done >= 0 ? (int)done : 0;
		for (int i = 0; i < h.nhosts && done < 0; i++)
			if (!WIFEXITED(h.r[i].status) || WEXITSTATUS(h.r[i].status) != 0) {
				status = WIFEXITED(h.r[i].status) ? WEXITSTATUS(h.r[i].status)
				                                  : 128 + WTERMSIG(h.r[i].status);
				break;
			}
		if (h.failed)
			status = h.failed;
		else if (h.interrupted)
			status = 128 + h.interrupted;
	}
	if (o->etcd) { /* the etcd outlives the job: leave nothing behind */
		char prefix[140];

		snprintf(prefix, sizeof(prefix), "%s/", h.job_id);
		mlrt_store_delete_prefix(h.store, prefix, NULL);
	}
out:
	mlrt_store_close(h.store);
	if (srv != NULL)
		mlrt_store_server_stop(srv);
	free(h.r);
	free(h.hosts);
	return status;
}
