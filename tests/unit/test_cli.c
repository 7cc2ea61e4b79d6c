/* mlrun's command line: bad input gets one clear line and exit status 2. */
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#ifndef MLRUN_PATH
#error "MLRUN_PATH must name the mlrun binary"
#endif

extern char **environ;

typedef struct run_result {
	int status;      /* exit code, or 128 + signal */
	char out[16384];
	char err[16384];
} run_result;

static void slurp(int fd, char *buf, size_t cap)
{
	size_t n = 0;
	ssize_t r;

	while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0)
		n += (size_t)r;
	buf[n] = '\0';
}

/* Run mlrun with args (NULL-terminated) and collect its output.  Output
 * stays small in these cases, so reading one pipe after the other is fine. */
static void run_mlrun(run_result *res, ...)
{
	char *argv[32];
	int out[2], err[2], st, n = 0;
	posix_spawn_file_actions_t fa;
	va_list ap;
	pid_t pid;

	argv[n++] = (char *)MLRUN_PATH;
	va_start(ap, res);
	while (n < 31 && (argv[n] = va_arg(ap, char *)) != NULL)
		n++;
	va_end(ap);
	argv[n] = NULL;
	assert_int_equal(pipe(out), 0);
	assert_int_equal(pipe(err), 0);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	posix_spawn_file_actions_adddup2(&fa, err[1], 2);
	posix_spawn_file_actions_addclose(&fa, out[0]);
	posix_spawn_file_actions_addclose(&fa, err[0]);
	assert_int_equal(posix_spawn(&pid, MLRUN_PATH, &fa, NULL, argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	close(out[1]);
	close(err[1]);
	slurp(out[0], res->out, sizeof(res->out));
	slurp(err[0], res->err, sizeof(res->err));
	close(out[0]);
	close(err[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	res->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* Usage error: status 2, one line on stderr containing want. */
static void expect_usage_error(run_result *r, const char *want)
{
	if (r->status != 2 || strstr(r->err, want) == NULL || count_lines(r->err) != 1)
		fprintf(stderr, "status %d, stderr: %s", r->status, r->err);
	assert_int_equal(r->status, 2);
	assert_non_null(strstr(r->err, want));
	assert_int_equal(count_lines(r->err), 1);
	assert_string_equal(r->out, "");
}

static void test_no_program(void **state)
{
	run_result *r = *state;

	run_mlrun(r, NULL);
	expect_usage_error(r, "no program to run");
	run_mlrun(r, "-np", "2", "--", NULL);
	expect_usage_error(r, "no program to run");
}

static void test_bad_worker_count(void **state)
{
	run_result *r = *state;

	run_mlrun(r, "-np", "0", "true", NULL);
	expect_usage_error(r, "invalid worker count '0'");
	run_mlrun(r, "-np", "abc", "true", NULL);
	expect_usage_error(r, "invalid worker count 'abc'");
	run_mlrun(r, "-np", "4x", "true", NULL);
	expect_usage_error(r, "invalid worker count '4x'");
	run_mlrun(r, "-np", NULL);
	expect_usage_error(r, "needs a value");
}

static void test_unknown_option(void **state)
{
	run_result *r = *state;

	run_mlrun(r, "--frobnicate", "true", NULL);
	expect_usage_error(r, "unknown option '--frobnicate'");
	run_mlrun(r, "-q", "true", NULL);
	expect_usage_error(r, "unknown option '-q'");
}

static void test_bad_values(void **state)
{
	run_result *r = *state;

	run_mlrun(r, "--restart-policy", "sometimes", "true", NULL);
	expect_usage_error(r, "invalid --restart-policy 'sometimes'");
	run_mlrun(r, "--max-restarts", "-1", "true", NULL);
	expect_usage_error(r, "invalid --max-restarts '-1'");
	run_mlrun(r, "--grace-period", "soon", "true", NULL);
	expect_usage_error(r, "invalid --grace-period 'soon'");
	run_mlrun(r, "--nnodes", "3:2", "true", NULL);
	expect_usage_error(r, "invalid --nnodes '3:2'");
	run_mlrun(r, "--rdzv-timeout", "-5", "true", NULL);
	expect_usage_error(r, "invalid --rdzv-timeout '-5'");
	run_mlrun(r, "--job-id", "a/b", "true", NULL);
	expect_usage_error(r, "invalid --job-id 'a/b'");
	run_mlrun(r, "--bind-to", "socket", "true", NULL);
	expect_usage_error(r, "invalid --bind-to 'socket'");
}

static void test_bad_hosts(void **state)
{
	run_result *r = *state;
	char path[] = "/tmp/mlrt-cli-hosts-XXXXXX";
	int fd = mkstemp(path);

	run_mlrun(r, "-H", "node1:0", "true", NULL);
	expect_usage_error(r, "invalid worker count '0' for host 'node1'");
	run_mlrun(r, "-H", "a;b", "true", NULL);
	expect_usage_error(r, "invalid host 'a;b'");
	run_mlrun(r, "--hostfile", "/nonexistent/hosts", "true", NULL);
	expect_usage_error(r, "cannot read hostfile /nonexistent/hosts");
	assert_true(fd >= 0);
	assert_true(write(fd, "node1 slots=2\nnode2 slot=2\n", 28) == 28);
	close(fd);
	run_mlrun(r, "--hostfile", path, "true", NULL);
	expect_usage_error(r, ":2: unknown 'slot=2'");
	run_mlrun(r, "-H", "a", "--hostfile", path, "true", NULL);
	expect_usage_error(r, "give -H or --hostfile, not both");
	unlink(path);
	run_mlrun(r, "--heartbeat-interval", "1", "--heartbeat-timeout", "0.5", "true", NULL);
	expect_usage_error(r, "--heartbeat-timeout (0.5 s) must be longer");
	run_mlrun(r, "--rsh-fanout", "0", "true", NULL);
	expect_usage_error(r, "invalid --rsh-fanout '0'");
}

/* An agent that cannot start (here: --rsh fails) stops the job at once,
 * naming the host, instead of leaving the others to wait out the
 * rendezvous. */
static void test_agent_cannot_start(void **state)
{
	run_result *r = *state;

	run_mlrun(r, "-H", "hostA:1,hostB:1", "--rsh", "sh -c 'test {host} = hostA && exec \"$0\" \"$@\"'",
	          "--rdzv-timeout", "60", "true", NULL);
	if (r->status == 0 || strstr(r->err, "the agent of host hostB exited with code 1 before the "
	                                      "gang formed") == NULL)
		fprintf(stderr, "status %d, stderr: %s", r->status, r->err);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "the agent of host hostB exited with code 1 before the gang "
	                               "formed; stopping the job"));
}

static void test_missing_program(void **state)
{
	run_result *r = *state;

	run_mlrun(r, "-np", "2", "/nonexistent/dir/prog", NULL);
	expect_usage_error(r, "cannot run program '/nonexistent/dir/prog': No such file");
	run_mlrun(r, "no-such-program-mlrt-test", NULL);
	expect_usage_error(r, "(searched PATH)");
	/* A file without execute permission (root could "access" it). */
	run_mlrun(r, MESON_SOURCE_ROOT "/README.md", NULL);
	expect_usage_error(r, "Permission denied");
}

static void test_help_documents_every_option(void **state)
{
	static const char *const options[] = {
		"-np", "--nproc-per-node", "--nnodes", "--job-id", "--restart-policy",
		"--max-restarts", "--grace-period", "--rdzv-timeout", "--rdzv-last-call",
		"--tag-output", "--no-tag-output", "--log-dir", "--verbose", "--help",
		"--version", "mlrun store", "--bind-to",
	};
	run_result *r = *state;

	run_mlrun(r, "--help", NULL);
	assert_int_equal(r->status, 0);
	for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
		const char *opt = options[i];

		/* Compared as strings so that a failure names the option. */
		assert_string_equal(strstr(r->out, opt) != NULL ? opt : "(not in --help)", opt);
	}
}

static void test_store_bad_port(void **state)
{
	run_result *r = *state;

	run_mlrun(r, "store", "--port", "99999", NULL);
	expect_usage_error(r, "invalid --port '99999'");
	run_mlrun(r, "store", "--bogus", NULL);
	expect_usage_error(r, "unknown argument '--bogus'");
}

static void test_exit_status_follows_workers(void **state)
{
	run_result *r = *state;

	run_mlrun(r, "-np", "2", "true", NULL);
	assert_int_equal(r->status, 0);
	run_mlrun(r, "-np", "2", "--restart-policy", "never", "false", NULL);
	assert_int_equal(r->status, 1);
	assert_non_null(strstr(r->err, "exited with code 1"));
}

static int setup(void **state)
{
	*state = calloc(1, sizeof(run_result));
	return *state == NULL;
}

static int teardown(void **state)
{
	free(*state);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_program),
		cmocka_unit_test(test_bad_worker_count),
		cmocka_unit_test(test_unknown_option),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_missing_program),
		cmocka_unit_test(test_bad_hosts),
		cmocka_unit_test(test_agent_cannot_start),
		cmocka_unit_test(test_help_documents_every_option),
		cmocka_unit_test(test_store_bad_port),
		cmocka_unit_test(test_exit_status_follows_workers),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
