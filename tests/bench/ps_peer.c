/* ps_peer: the floors bench_ps is judged against, measured in the same
 * ps.sh run, each between two processes on the loopback interface:
 *
 *   tcp  one plain TCP stream: the child writes --mib MiB in --chunk-kib
 *        KiB write()s, the parent read()s them; GB/s from the parent's
 *        "go" byte to the last byte in, median over --rounds rounds on one
 *        connection
 *   unix the same over a Unix stream socket pair (what mlrt's parameter
 *        server uses between processes of one machine: ZeroMQ's ipc://)
 *   zmq  a bare ZeroMQ REQ/REP round trip of --bytes bytes (default 64)
 *        over tcp://127.0.0.1, or ipc:// (an abstract Unix socket) with
 *        --over ipc, no work behind it; median over --iters round trips,
 *        each timed on its own
 *
 *   echo the REP side alone, for a round trip measured by another program
 *        (bench_ps interleaves it with its own): prints its endpoint on a
 *        line, echoes until an empty message
 *
 *   ps_peer tcp|unix [--mib N] [--chunk-kib N] [--rounds N]
 *   ps_peer zmq [--bytes N] [--iters N] [--over tcp|ipc]
 *   ps_peer echo [--over tcp|ipc]
 *
 * Prints one line, which ps.sh reads:
 *   tcp stream: X GB/s (...)      or   unix stream: X GB/s (...)
 *   zmq rtt 64 B: X us (...)      or   zmq ipc rtt 64 B: X us (...)        */
#include <arpa/inet.h>
#include <sched.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#define MAX_ROUNDS 99

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
	fprintf(stderr, "ps_peer: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int wait_child(pid_t pid)
{
	int st;

	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "ps_peer: the other process failed\n");
		return 1;
	}
	return 0;
}

/* ---- tcp ---- */

/* The sending side: for each round, wait for the go byte, then write. */
static void stream_sender(int fd, size_t total, size_t chunk, int rounds)
{
	char *buf = malloc(chunk), go;

	if (buf == NULL)
		die("malloc");
	memset(buf, 0x5a, chunk);
	for (int r = 0; r < rounds; r++) {
		if (read(fd, &go, 1) != 1)
			die("tcp: read go");
		for (size_t sent = 0; sent < total;) {
			size_t want = total - sent < chunk ? total - sent : chunk;
			ssize_t n = write(fd, buf, want);

			if (n <= 0)
				die("write");
			sent += (size_t)n;
		}
	}
	close(fd);
	free(buf);
	_exit(0);
}

static int tcp_connect(unsigned short port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
		die("tcp: connect");
	return fd;
}

static int stream(int argc, char **argv, int unix_socket)
{
	const char *kind = unix_socket ? "unix" : "tcp";
	int pair[2] = {-1, -1};
	size_t mib = 1024, chunk_kib = 1024;
	int rounds = 5;
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	double gbs[MAX_ROUNDS];
	int lfd, fd;
	pid_t pid;

	if (argc % 2 != 0)
		return 2;
	for (int i = 0; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--mib") == 0)
			mib = (size_t)atol(argv[i + 1]);
		else if (strcmp(argv[i], "--chunk-kib") == 0)
			chunk_kib = (size_t)atol(argv[i + 1]);
		else if (strcmp(argv[i], "--rounds") == 0)
			rounds = atoi(argv[i + 1]);
		else
			return 2;
	}
	if (mib == 0 || chunk_kib == 0 || rounds < 1 || rounds > MAX_ROUNDS)
		return 2;
	size_t total = mib << 20, chunk = chunk_kib << 10;
	char *buf = malloc(chunk);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (unix_socket) {
		if (buf == NULL || socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0)
			die("unix: socketpair");
		lfd = -1;
	} else {
		lfd = socket(AF_INET, SOCK_STREAM, 0);
		if (buf == NULL || lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
		    listen(lfd, 1) != 0 || getsockname(lfd, (struct sockaddr *)&a, &alen) != 0)
			die("tcp: listen on 127.0.0.1");
	}
	memset(buf, 0, chunk);
	fflush(stdout);
	if ((pid = fork()) < 0)
		die("fork");
	if (pid == 0) {
		if (unix_socket) {
			close(pair[0]);
			stream_sender(pair[1], total, chunk, rounds);
		}
		close(lfd);
		stream_sender(tcp_connect(ntohs(a.sin_port)), total, chunk, rounds);
	}
	if (unix_socket) {
		close(pair[1]);
		fd = pair[0];
	} else {
		if ((fd = accept(lfd, NULL, NULL)) < 0)
			die("tcp: accept");
		close(lfd);
	}
	for (int r = 0; r < rounds; r++) {
		double t0 = now();

		if (write(fd, "g", 1) != 1)
			die("write go");
		for (size_t got = 0; got < total;) {
			ssize_t n = read(fd, buf, chunk);

			if (n <= 0)
				die("read");
			got += (size_t)n;
		}
		gbs[r] = (double)total / (now() - t0) / 1e9;
		fprintf(stderr, "%s stream round %d: %.2f GB/s\n", kind, r + 1, gbs[r]);
	}
	close(fd);
	free(buf);
	if (wait_child(pid) != 0)
		return 1;
	printf("%s stream: %.2f GB/s (%zu MiB in %zu KiB writes, %s, 2 processes, median of %d)\n",
	       kind, median(gbs, (size_t)rounds), mib, chunk_kib,
	       unix_socket ? "socket pair" : "loopback", rounds);
	return 0;
}

/* ---- zmq ---- */

/* The REP side: echo every message; an empty one is the last. */
static void zmq_server(int pipe_fd, int ipc)
{
	void *zctx = zmq_ctx_new(), *sock = zmq_socket(zctx, ZMQ_REP);
	char ep[256], bind_to[64] = "tcp://127.0.0.1:*";
	size_t eplen = sizeof(ep);

	if (ipc)
		snprintf(bind_to, sizeof(bind_to), "ipc://@ps_peer-%d", (int)getpid());
	if (sock == NULL || zmq_bind(sock, bind_to) != 0 ||
	    zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, ep, &eplen) != 0 ||
	    write(pipe_fd, ep, eplen) != (ssize_t)eplen)
		die("zmq: bind");
	close(pipe_fd);
	for (;;) {
		zmq_msg_t m;
		size_t n;

		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, sock, 0) < 0)
			die("zmq: recv");
		n = zmq_msg_size(&m);
		if (zmq_msg_send(&m, sock, 0) < 0)
			die("zmq: send");
		if (n == 0)
			break;
	}
	zmq_close(sock);
	zmq_ctx_term(zctx);
	_exit(0);
}

static int zmq_rtt(int argc, char **argv)
{
	size_t bytes = 64;
	int iters = 10000, pfd[2], linger = 0, ipc = 0;
	char ep[256] = "";
	pid_t pid;

	if (argc % 2 != 0)
		return 2;
	for (int i = 0; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--bytes") == 0)
			bytes = (size_t)atol(argv[i + 1]);
		else if (strcmp(argv[i], "--iters") == 0)
			iters = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--over") == 0 && (strcmp(argv[i + 1], "tcp") == 0 ||
		                                               strcmp(argv[i + 1], "ipc") == 0))
			ipc = strcmp(argv[i + 1], "ipc") == 0;
		else
			return 2;
	}
	if (bytes == 0 || iters < 1)
		return 2;
	/* ZeroMQ contexts do not survive fork(): the child makes its own,
	 * the parent makes its one after the fork. */
	if (pipe(pfd) != 0)
		die("pipe");
	fflush(stdout);
	if ((pid = fork()) < 0)
		die("fork");
	if (pid == 0) {
		close(pfd[0]);
		zmq_server(pfd[1], ipc);
	}
	close(pfd[1]);
	if (read(pfd[0], ep, sizeof(ep) - 1) <= 0)
		die("zmq: no endpoint from the REP process");
	close(pfd[0]);

	void *zctx = zmq_ctx_new(), *sock = zmq_socket(zctx, ZMQ_REQ);
	char *msg = calloc(1, bytes), *back = malloc(bytes);
	double *us = malloc((size_t)iters * sizeof(double));
	int warm = iters / 10 + 10;

	if (sock == NULL || msg == NULL || back == NULL || us == NULL || zmq_connect(sock, ep) != 0)
		die("zmq: connect");
	zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof(linger));
	for (int i = -warm; i < iters; i++) {
		double t0 = now();

		if (zmq_send(sock, msg, bytes, 0) != (int)bytes ||
		    zmq_recv(sock, back, bytes, 0) != (int)bytes)
			die("zmq: round trip");
		if (i >= 0)
			us[i] = (now() - t0) * 1e6;
	}
	if (zmq_send(sock, "", 0, 0) != 0 || zmq_recv(sock, back, bytes, 0) != 0)
		die("zmq: the last round trip");
	zmq_close(sock);
	zmq_ctx_term(zctx);
	if (wait_child(pid) != 0)
		return 1;
	printf("zmq %srtt %zu B: %.1f us (REQ/REP, %s, 2 processes, median of %d)\n",
	       ipc ? "ipc " : "", bytes, median(us, (size_t)iters),
	       ipc ? "ipc, abstract Unix socket" : "tcp loopback", iters);
	free(us);
	free(msg);
	free(back);
	return 0;
}

/* The REP side for another program: the endpoint on stdout, then echo. */
static int zmq_echo(int argc, char **argv)
{
	cpu_set_t all;
	int pfd[2];

	/* Started by a worker mlrun pinned to a CPU: run anywhere, as the
	 * parameter servers do. */
	CPU_ZERO(&all);
	for (int i = 0; i < CPU_SETSIZE; i++)
		CPU_SET(i, &all);
	sched_setaffinity(0, sizeof(all), &all);
	if (argc == 2 && strcmp(argv[0], "--over") == 0 &&
	    (strcmp(argv[1], "tcp") == 0 || strcmp(argv[1], "ipc") == 0)) {
		if (pipe(pfd) != 0)
			die("pipe");
		/* zmq_server writes the endpoint to the pipe's write end: make
		 * that stdout, with a newline after it. */
		fflush(stdout);
		if (dup2(STDOUT_FILENO, pfd[1]) < 0)
			die("dup2");
		close(pfd[0]);
		zmq_server(pfd[1], strcmp(argv[1], "ipc") == 0);
	}
	return 2;
}

int main(int argc, char **argv)
{
	int rc = 2;

	if (argc >= 2 && (strcmp(argv[1], "tcp") == 0 || strcmp(argv[1], "unix") == 0))
		rc = stream(argc - 2, argv + 2, strcmp(argv[1], "unix") == 0);
	else if (argc >= 2 && strcmp(argv[1], "zmq") == 0)
		rc = zmq_rtt(argc - 2, argv + 2);
	else if (argc >= 2 && strcmp(argv[1], "echo") == 0)
		rc = zmq_echo(argc - 2, argv + 2);
	if (rc == 2)
		fprintf(stderr, "usage: ps_peer tcp|unix [--mib N] [--chunk-kib N] [--rounds N]\n"
		                "       ps_peer zmq [--bytes N] [--iters N] [--over tcp|ipc]\n"
		                "       ps_peer echo --over tcp|ipc\n");
	return rc;
}
