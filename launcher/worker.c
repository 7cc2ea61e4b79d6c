/* Spawning workers and relaying their output. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launcher/worker.h"

char *worker_find_program(const char *program)
{
	const char *path = getenv("PATH");
	struct stat stbuf;
	char buf[PATH_MAX];

	if (strchr(program, '/') != NULL) {
		if (stat(program, &stbuf) != 0)
			return NULL;
		/* access() alone would let root "execute" any file. */
		if (!S_ISREG(stbuf.st_mode) || (stbuf.st_mode & 0111) == 0 ||
		    access(program, X_OK) != 0) {
			errno = EACCES;
			return NULL;
		}
		return strdup(program);
	}
	if (path == NULL)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path != '\0') {
		size_t n = strcspn(path, ":");

		if (snprintf(buf, sizeof(buf), "%.*s/%s", (int)(n ? n : 1), n ? path : ".", program) <
		        (int)sizeof(buf) &&
		    stat(buf, &stbuf) == 0 && S_ISREG(stbuf.st_mode) && (stbuf.st_mode & 0111) != 0 &&
		    access(buf, X_OK) == 0)
			return strdup(buf);
		path += n;
		if (*path == ':')
			path++;
	}
	errno = ENOENT;
	return NULL;
}

int worker_nice;

int worker_spawn(worker *w, const char *path, char *const argv[], char *const envp[], int cpu)
{
	int out[2] = {-1, -1}, err[2] = {-1, -1};
	pid_t pid;

	if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
		goto fail;
	pid = fork();
	if (pid < 0)
		goto fail;
	if (pid == 0) {
		sigset_t none;

		/* Child: only async-signal-safe calls until execve. */
		setpgid(0, 0);
		setpriority(PRIO_PROCESS, 0, worker_nice);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() == 1)
			_exit(127); /* mlrun already died */
		dup2(out[1], STDOUT_FILENO);
		dup2(err[1], STDERR_FILENO);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (cpu >= 0) {
			cpu_set_t set;

			CPU_ZERO(&set);
			CPU_SET(cpu, &set);
			sched_setaffinity(0, sizeof(set), &set);
		}
		execve(path, argv, envp);
		dprintf(STDERR_FILENO, "mlrun: cannot execute %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	/* Parent: the group is set on both sides so that a signal sent right
	 * after fork already reaches it. */
	setpgid(pid, pid);
	close(out[1]);
	close(err[1]);
	w->pid = pid;
	w->exited = 0;
	w->out.fd = out[0];
	w->out.out_fd = STDOUT_FILENO;
	w->out.len = 0;
	w->err.fd = err[0];
	w->err.out_fd = STDERR_FILENO;
	w->err.len = 0;
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fcntl(err[0], F_SETFL, O_NONBLOCK);
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (out[i] >= 0)
			close(out[i]);
		if (err[i] >= 0)
			close(err[i]);
	}
	return -1;
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t r = write(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return; /* a closed terminal: nothing better to do */
		p += r;
		n -= (size_t)r;
	}
}

static void tail_add(tail *t, const char *line, size_t len)
{
	if (len >= TAIL_LINE_MAX)
		len = TAIL_LINE_MAX - 1;
	memcpy(t->lines[t->next], line, len);
	t->lines[t->next][len] = '\0';
	t->next = (t->next + 1) % TAIL_LINES;
	if (t->count < TAIL_LINES)
		t->count++;
}

/* Emit one line (without its newline) of stream s. */
static void emit_line(worker *w, stream *s, const char *line, size_t len, const relay_opts *ro)
{
	char prefix[32];
	int plen = snprintf(prefix, sizeof(prefix),
	                    w->server == ROLE_SERVER ? "[s%d]: " : w->server ? "[e%d]: " : "[%d]: ",
	                    w->rank);
	char buf[sizeof(s->buf) + 40];
	size_t n = 0;

	if (ro->tag) {
		memcpy(buf, prefix, (size_t)plen);
		n = (size_t)plen;
	}
	memcpy(buf + n, line, len);
	n += len;
	buf[n++] = '\n';
	/* One write per line keeps lines of different workers whole. */
	write_all(s->out_fd, buf, n);
	if (w->log_fd >= 0)
		write_all(w->log_fd, line, len), write_all(w->log_fd, "\n", 1);
	if (s == &w->err)
		tail_add(&w->err_tail, line, len);
}

void worker_relay(worker *w, stream *s, const relay_opts *ro)
{
	for (;;) {
		ssize_t r = read(s->fd, s->buf + s->len, sizeof(s->buf) - s->len);
		size_t start = 0;

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r <= 0) {
			/* End of stream: flush a last line without newline. */
			if (s->len > 0)
				emit_line(w, s, s->buf, s->len, ro);
			s->len = 0;
			close(s->fd);
			s->fd = -1;
			return;
		}
		s->len += (size_t)r;
		for (size_t i = 0; i < s->len; i++) {
			if (s->buf[i] == '\n') {
				emit_line(w, s, s->buf + start, i - start, ro);
				start = i + 1;
			}
		}
		if (start == 0 && s->len == sizeof(s->buf)) {
			/* An over-long line: pass it on in pieces. */
			emit_line(w, s, s->buf, s->len, ro);
			start = s->len;
		}
		memmove(s->buf, s->buf + start, s->len - start);
		s->len -= start;
	}
}

void worker_signal(worker *w, int sig)
{
	if (w->pid > 0 && !w->exited)
		kill(-w->pid, sig);
}

void worker_describe_exit(const worker *w, char *buf, size_t cap)
{
	if (WIFSIGNALED(w->status)) {
		int sig = WTERMSIG(w->status);
		const char *name = sigabbrev_np(sig);

		snprintf(buf, cap, "was killed by signal %d (SIG%s)", sig, name ? name : "?");
	} else {
		snprintf(buf, cap, "exited with code %d", WEXITSTATUS(w->status));
	}
}

int worker_exit_code(const worker *w)
{
	if (WIFSIGNALED(w->status))
		return 128 + WTERMSIG(w->status);
	return WEXITSTATUS(w->status);
}
