/* mlrun: start a gang of workers, watch it, restart it on failure.
 *
 *   mlrun [options] -- PROGRAM ARGS...   run a job (see mlrun --help)
 *   mlrun store [--host H] [--port P]    run a standalone store
 *   mlrun ckpt ls|verify|inspect DIR ... look into a checkpoint directory
 *
 * On one host mlrun is the store, the controller (restart policy) and the
 * host's agent at once; docs/launcher.md has the whole picture. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mlrt/log.h>
#include <mlrt/store.h>

#include "ckpt/ckpt.h"
#include "launcher/agent.h"
#include "launcher/ckpt_cli.h"
#include "launcher/devices.h"
#include "launcher/head.h"
#include "launcher/hosts.h"
#include "launcher/membership.h"
#include "launcher/options.h"
#include "runtime/common.h"

#define BACKOFF_FIRST_MS 200
#define BACKOFF_MAX_MS 10000
#define LEAVE_WAIT_MS 5000 /* the store's host waits this long for the other hosts to leave */
#define CONTROL_PLANE_BOOST 10 /* nice levels above the workers */
#define UNORDERED 1000000 /* hosts without --node-rank come after those with one, by name */

static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
	int saved = errno;
	char c = (char)sig;

	if (sig != SIGCHLD)
		agent_interrupted = sig;
	if (write(signal_pipe[1], &c, 1) < 0) {
		/* The pipe is full: a wake-up is already pending. */
	}
	errno = saved;
}

static int install_signals(void)
{
	struct sigaction sa;
	const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGCHLD};

	if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < MLRTI_ARRAY_LEN(sigs); i++)
		if (sigaction(sigs[i], &sa, NULL) != 0)
			return -1;
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

/* A free TCP port for MASTER_PORT (torch's TCPStore in rank 0). */
static int free_port(void)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = 29500;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
		port = ntohs(sin.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static void print_tail(const char *who, const tail *t)
{
	if (t->count == 0)
		return;
	fprintf(stderr, "mlrun: last %d line(s) of %s's stderr:\n", t->count, who);
	for (int i = 0; i < t->count; i++) {
		int slot = (t->next - t->count + i + TAIL_LINES) % TAIL_LINES;

		fprintf(stderr, "  | %s\n", t->lines[slot]);
	}
}

/* The root-cause summary: one place that says what went wrong first.
 * Under a head (mlrun -H) every agent's log is the head's: a failure on
 * another host is told by the first host only. */
static void summarise(const agent *a, const gen_outcome *out, int64_t gen, int restarts,
                      const char *verdict)
{
	char who[32];

	if (out->failed_rank < 0 && a->o->agent && a->index != 0)
		return;
	if (out->failed_rank < 0) {
		fprintf(stderr, "mlrun: job %s failed in generation %" PRId64 ": %s (%s)\n",
		        a->job_id, gen, out->error, verdict);
		return;
	}
	snprintf(who, sizeof(who), "%s", out->failed_name);
	fprintf(stderr,
	        "mlrun: job %s failed in generation %" PRId64 ": %s (host %s, pid %d) %s; "
	        "restarts used: %d of %d (%s)\n",
	        a->job_id, gen, out->failed_name, a->host, (int)out->failed_pid, out->how, restarts,
	        a->o->max_restarts, verdict);
	print_tail(who, &out->err_tail);
}

/* Should a failed generation be restarted?  verdict explains the answer. */
static int should_restart(const mlrun_opts *o, const gen_outcome *out, int restarts,
                          const char **verdict)
{
	if (o->policy == RESTART_NEVER) {
		*verdict = "restart policy 'never'";
		return 0;
	}
	if (o->policy == RESTART_EXIT_CODE && !out->retryable) {
		*verdict = "exit codes 1-127 are permanent under restart policy 'exit-code'";
		return 0;
	}
	if (restarts >= o->max_restarts) {
		*verdict = o->max_restarts == 0 ? "no restarts allowed (--max-restarts 0)"
		                                 : "out of restarts";
		return 0;
	}
	*verdict = "restarting";
	return 1;
}

/* 200 ms before the first restart, doubling up to 10 s. */
static int backoff_ms(int restarts)
{
	int ms = BACKOFF_FIRST_MS;

	for (int i = 0; i < restarts && ms < BACKOFF_MAX_MS; i++)
		ms *= 2;
	return ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS;
}

/* Wait ms, waking early for an interrupt. */
static void backoff(int ms)
{
	int64_t until = mlrti_now_ms() + ms;

	while (!agent_interrupted && mlrti_now_ms() < until)
		usleep(10000);
}

/* Whether something listens on "HOST:PORT" (a connect within 500 ms). */
static int listening(const char *endpoint)
{
	char host[256];
	const char *colon = strrchr(endpoint, ':');
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
	struct pollfd p = {.events = POLLOUT};
	int ok = 0, err = 0;
	socklen_t len = sizeof(err);

	snprintf(host, sizeof(host), "%.*s", (int)(colon - endpoint), endpoint);
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
		return 0;
	p.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p.fd >= 0) {
		if (connect(p.fd, ai->ai_addr, ai->ai_addrlen) == 0)
			ok = 1;
		else if (errno == EINPROGRESS && poll(&p, 1, 500) == 1 &&
		         getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
			ok = 1;
		close(p.fd);
	}
	freeaddrinfo(ai);
	return ok;
}

/* With one mlrun per host, the one serving the store keeps it until the
 * others have left (or LEAVE_WAIT_MS passes: a host may be gone).  On an
 * etcd, which outlives the job, the last host out removes the job's keys
 * (last: as many as the last gang had). */
static void leave_job(mlrt_store *store, const char *job_id, int serving, int nnodes,
                      int etcd_members)
{
	char key[300];
	int64_t left = 0, deadline = mlrti_now_ms() + LEAVE_WAIT_MS;

	snprintf(key, sizeof(key), "%s/agents-left", job_id);
	if (mlrt_store_add(store, key, 1, &left) != MLRT_OK)
		return;
	if (etcd_members > 0 && left >= etcd_members) {
		snprintf(key, sizeof(key), "%s/", job_id);
		mlrt_store_delete_prefix(store, key, NULL);
	}
	if (!serving)
		return;
	while (left < nnodes && mlrti_now_ms() < deadline) {
		usleep(20000);
		if (mlrt_store_add(store, key, 0, &left) != MLRT_OK)
			return;
	}
}

/* An agent started by a head mlrun (mlrun -H) reads its standard input,
 * which the head holds open: end of file means the head is gone, and the
 * agent stops its workers as if interrupted. */
static void *watch_head(void *arg)
{
	char buf[256];
	char c = (char)SIGHUP;

	(void)arg;
	while (read(STDIN_FILENO, buf, sizeof(buf)) > 0)
		;
	agent_interrupted = SIGHUP;
	if (write(signal_pipe[1], &c, 1) < 0) {
		/* A wake-up is already pending. */
	}
	return NULL;
}

static int run_job(mlrun_opts *o)
{
	char job_id[128], host[256] = "localhost", gen_prefix[192], endpoint[300];
	mlrt_store_server *srv = NULL;
	mlrt_store *store = NULL;
	agent a = {0};
	sigset_t mask;
	int restarts = 0, status = 1, rc, lost = 0;
	int64_t gen = 0;

	a.program = worker_find_program(o->argv[0]);
	if (a.program == NULL) {
		fprintf(stderr, "mlrun: cannot run program '%s': %s%s\n", o->argv[0], strerror(errno),
		        strchr(o->argv[0], '/') ? "" : " (searched PATH)");
		return 2;
	}
	if (o->log_dir != NULL && mkdir(o->log_dir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "mlrun: cannot create --log-dir %s: %s\n", o->log_dir, strerror(errno));
		free(a.program);
		return 2;
	}
	if (o->tag_output < 0)
		o->tag_output = isatty(STDOUT_FILENO);
	/* This host's name in the gang; the workers see MLRT_HOSTNAME too. */
	hosts_this_name(host, sizeof(host));
	/* Gang semantics: a host that cannot meet the job's GPU needs starts
	 * nothing. */
	{
		char why[512];

		if (devices_check(o, host, why, sizeof(why)) != 0) {
			fprintf(stderr, "mlrun: %s; nothing was started\n", why);
			free(a.program);
			return 1;
		}
	}
	if (o->job_id != NULL)
		snprintf(job_id, sizeof(job_id), "%s", o->job_id);
	else if (o->rdzv_endpoint != NULL) /* the same on every host */
		snprintf(job_id, sizeof(job_id), "mlrt-%s", strrchr(o->rdzv_hostport, ':') + 1);
	else
		snprintf(job_id, sizeof(job_id), "mlrt-%d", (int)getpid());

	if (install_signals() != 0) {
		fprintf(stderr, "mlrun: cannot install signal handlers: %s\n", strerror(errno));
		goto out;
	}
	/* The store's thread inherits a mask that keeps our signals for the
	 * main thread, whose handler feeds the agent's self-pipe. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	if (o->rdzv_endpoint != NULL) {
		/* The first mlrun that can listen there serves the store (an
		 * agent started by a head joins the head's; etcd serves itself). */
		snprintf(endpoint, sizeof(endpoint), "%s", o->store_url);
		if (o->agent || o->etcd || listening(o->rdzv_hostport) ||
		    mlrt_store_server_start(endpoint, &srv) != MLRT_OK)
			srv = NULL;
		rc = mlrt_store_open(endpoint, &store);
	} else {
		rc = mlrt_store_server_start("tcp://127.0.0.1:0", &srv);
		if (rc == MLRT_OK)
			rc = mlrt_store_open(mlrt_store_server_addr(srv), &store);
	}
	pthread_sigmask(SIG_UNBLOCK, &mask, NULL);
	if (rc != MLRT_OK) {
		fprintf(stderr, "mlrun: cannot start the job's store: %s\n", mlrt_strerror(rc));
		goto out;
	}
	/* Between hosts, a store that stops answering must not hold the
	 * agent longer than the heartbeats tolerate. */
	if (o->rdzv_endpoint != NULL)
		mlrt_store_set_timeout(store, 2 * o->hb_timeout_ms);
	a.o = o;
	a.store = store;
	a.store_addr = o->rdzv_endpoint != NULL ? endpoint : mlrt_store_server_addr(srv);
	a.job_id = job_id;
	a.host = host;
	a.master_port = free_port();
	a.signal_fd = signal_pipe[0];
	a.order = o->node_rank >= 0 ? o->node_rank : UNORDERED;
	mlrt_log(MLRT_LOG_INFO, "mlrun: job %s, store at %s", job_id, a.store_addr);
	if (o->agent) {
		pthread_t t;
		char key[300];
		int64_t n;

		if (pthread_create(&t, NULL, watch_head, NULL) == 0)
			pthread_detach(t);
		agent_job_key(&a, "agents-up", key, sizeof(key));
		mlrt_store_add(store, key, 1, &n);
	}
	gen = membership_admission(&a);

	while (gen >= 0) {
		gen_outcome out;
		const char *verdict;
		int64_t failed_at;

		agent_run_generation(&a, gen, restarts, &out);
		switch (out.result) {
		case GEN_SUCCEEDED:
			status = 0;
			membership_done(&a, status);
			goto out;
		case GEN_INTERRUPTED:
			fprintf(stderr, "mlrun: interrupted by signal %d; workers stopped\n", out.signal);
			status = 128 + out.signal;
			goto out;
		case GEN_NOT_FORMED:
			fprintf(stderr, "mlrun: %s\n", out.error);
			status = 1;
			membership_done(&a, status);
			goto out;
		case GEN_ERROR:
			fprintf(stderr, "mlrun: %s\n", out.error);
			status = 1;
			goto out;
		case GEN_MISSED:
			fprintf(stderr, "mlrun: %s\n", out.error);
			a.expect = 0;
			gen = membership_admission(&a);
			continue;
		case GEN_RESCALE:
			if (!o->agent || a.index == 0)
				fprintf(stderr, "mlrun: generation %" PRId64 " ends for a membership "
				        "change (%s); the gang forms again\n", gen,
				        out.error + strlen("rescale: "));
			a.expect = membership_expected_next(&a, gen, &lost);
			gen++;
			continue;
		case GEN_FAILED:
			break;
		}
		failed_at = mlrti_now_ms();
		if (!should_restart(o, &out, restarts, &verdict)) {
			summarise(&a, &out, gen, restarts, verdict);
			status = out.exit_code != 0 ? out.exit_code : 1;
			membership_done(&a, status);
			goto out;
		}
		summarise(&a, &out, gen, restarts, verdict);
		/* Old generations' keys are no longer needed; with an agent on
		 * other hosts, the one just ended still is (its abort tells
		 * them to stop), so drop the one before. */
		if (o->rdzv_endpoint == NULL || gen >= 1) {
			snprintf(gen_prefix, sizeof(gen_prefix), "%s/g%" PRId64 "/", job_id,
			         o->rdzv_endpoint == NULL ? gen : gen - 1);
			mlrt_store_delete_prefix(store, gen_prefix, NULL);
		}
		/* A lost host is no fault of the program: no backoff. */
		a.expect = membership_expected_next(&a, gen, &lost);
		if (lost == 0)
			backoff(backoff_ms(restarts));
		restarts++;
		gen++;
		if (!o->agent || a.index == 0)
			fprintf(stderr, "mlrun: restarting the gang as generation %" PRId64
			        " (restart %d of %d) after %" PRId64 " ms\n",
			        gen, restarts, o->max_restarts, mlrti_now_ms() - failed_at);
	}
	if (gen == -1) {
		fprintf(stderr, "mlrun: job %s has already finished; host %s has nothing to join\n",
		        job_id, host);
		status = 0;
	}
out:
	{
		/* The workers' elastic state in memory is this host's to remove. */
		char seg[512];

		mlrti_elastic_segment_name(job_id, host, seg, sizeof(seg));
		shm_unlink(seg);
	}
	if (o->rdzv_endpoint != NULL && store != NULL)
		leave_job(store, job_id, srv != NULL, o->nnodes_min,
		          o->etcd && !o->agent ? a.nexpected : 0);
	mlrt_store_close(store);
	if (srv != NULL)
		mlrt_store_server_stop(srv);
	agent_fini(&a);
	free(a.program);
	return status;
}

/* mlrun store: a standalone store until SIGINT/SIGTERM. */
static int run_store(int argc, char **argv)
{
	const char *host = "0.0.0.0";
	char endpoint[300];
	int64_t port = 29400;
	mlrt_store_server *srv;
	sigset_t set;
	int sig, rc;

	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "--port") == 0 || strcmp(argv[i], "-p") == 0) && i + 1 < argc) {
			if (mlrti_parse_int(argv[++i], 0, 65535, &port) != MLRT_OK) {
				fprintf(stderr, "mlrun store: invalid --port '%s': want 0 to 65535\n", argv[i]);
				return 2;
			}
		} else if (strcmp(argv[i], "--host") == 0 && i + 1 < argc) {
			host = argv[++i];
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("usage: mlrun store [--host ADDR] [--port P]\n"
			       "Serve a standalone mlrt store (default 0.0.0.0:29400; port 0 picks a\n"
			       "free one) until SIGINT or SIGTERM.  Prints the address to connect to.\n");
			return 0;
		} else {
			fprintf(stderr, "mlrun store: unknown argument '%s' (see mlrun store --help)\n",
			        argv[i]);
			return 2;
		}
	}
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	snprintf(endpoint, sizeof(endpoint), "tcp://%s:%d", host, (int)port);
	rc = mlrt_store_server_start(endpoint, &srv);
	if (rc != MLRT_OK) {
		fprintf(stderr, "mlrun store: cannot serve at %s: %s\n", endpoint, mlrt_strerror(rc));
		return 1;
	}
	printf("%s\n", mlrt_store_server_addr(srv));
	fflush(stdout);
	sigwait(&set, &sig);
	mlrt_store_server_stop(srv);
	return 0;
}

/* mlrun is the control plane (the store, heartbeats, failure detection):
 * it runs ahead of the workers where it may (root, CAP_SYS_NICE), so that
 * a host crowded with workers does not starve it; workers get the
 * priority mlrun started with. */
static void raise_priority(void)
{
	errno = 0;
	worker_nice = getpriority(PRIO_PROCESS, 0);
	if (errno != 0)
		worker_nice = 0;
	else if (setpriority(PRIO_PROCESS, 0, worker_nice - CONTROL_PLANE_BOOST) != 0)
		mlrt_log(MLRT_LOG_DEBUG, "mlrun: runs at the workers' priority (%s)", strerror(errno));
}

int main(int argc, char **argv)
{
	mlrun_opts o;
	int rc;

	if (argc > 1 && strcmp(argv[1], "store") == 0)
		return run_store(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "ckpt") == 0)
		return ckpt_cli_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "devices") == 0)
		return devices_main(argc - 1, argv + 1);
	rc = mlrun_parse_options(argc, argv, &o, stderr);
	if (rc == 1)
		return 0;
	if (rc != 0)
		return rc;
	raise_priority();
	if (o.verbose && getenv("MLRT_LOG_LEVEL") == NULL)
		mlrt_log_set_level(MLRT_LOG_INFO);
	if (mlrun_is_head(&o)) {
		if (install_signals() != 0) {
			fprintf(stderr, "mlrun: cannot install signal handlers: %s\n", strerror(errno));
			rc = 1;
		} else {
			rc = head_run(&o, signal_pipe[0]);
		}
	} else {
		rc = run_job(&o);
	}
	mlrun_free_options(&o);
	return rc;
}
