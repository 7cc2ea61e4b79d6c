/* The worker processes of one host: spawn, relay output, stop. */
#ifndef MLRT_LAUNCHER_WORKER_H
#define MLRT_LAUNCHER_WORKER_H

#include <stddef.h>
#include <sys/types.h>

#define TAIL_LINES 10
#define TAIL_LINE_MAX 512

/* Last lines a worker wrote to stderr, for the failure summary. */
typedef struct tail {
	char lines[TAIL_LINES][TAIL_LINE_MAX];
	int next; /* slot the next line goes to */
	int count;
} tail;

/* One stream of a worker (stdout or stderr), relayed line by line. */
typedef struct stream {
	int fd;          /* read end of the pipe; -1 once closed */
	int out_fd;      /* where lines go (1 or 2) */
	char buf[8192];  /* partial line */
	size_t len;
} stream;

enum { ROLE_WORKER, ROLE_SERVER, ROLE_EVALUATOR };

typedef struct worker {
	int rank;        /* a worker's rank, or a parameter server's index */
	int server;      /* ROLE_WORKER, ROLE_SERVER (mlrun --servers), ROLE_EVALUATOR */
	char name[24];   /* "rank 3" or "server 1", for messages */
	int local_rank;
	pid_t pid;       /* 0 once reaped */
	int status;      /* wait status, valid once reaped */
	int exited;
	stream out, err;
	int log_fd;      /* --log-dir file, or -1 */
	tail err_tail;
	int respawns;    /* times a replicated parameter server was started again */
} worker;

/* Output options shared by the workers of a host. */
typedef struct relay_opts {
	int tag;         /* prefix lines with "[rank]: " */
} relay_opts;

/* The scheduling priority (nice) workers run at: mlrun's own from before
 * it raised its own (see mlrun.c). */
extern int worker_nice;

/* Start w->rank's process: argv[0] is an absolute or PATH-resolved program
 * path, envp its full environment; cpu >= 0 binds it to that CPU.  The
 * child gets its own process group and dies with mlrun
 * (PR_SET_PDEATHSIG).  Returns 0 or -1 (errno set). */
int worker_spawn(worker *w, const char *path, char *const argv[], char *const envp[], int cpu);

/* Read what is available on fd (one of w's streams) and relay complete
 * lines.  Closes the stream at end of file. */
void worker_relay(worker *w, stream *s, const relay_opts *ro);

/* Send sig to the worker's process group (if it still runs). */
void worker_signal(worker *w, int sig);

/* Describe how a reaped worker ended: "exited with code 3", "was killed by
 * signal 9 (SIGKILL)". */
void worker_describe_exit(const worker *w, char *buf, size_t cap);

/* Exit code convention: the code itself, or 128 + signal number. */
int worker_exit_code(const worker *w);

/* Find program in PATH (or check it when it contains '/').  Returns a
 * malloc'd path, or NULL with errno set. */
char *worker_find_program(const char *program);

#endif
