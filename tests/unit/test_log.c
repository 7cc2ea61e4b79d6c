/* Logging: level filter, MLRT_LOG_LEVEL parsing and the rank prefix. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <mlrt/log.h>

/* Run the logging calls of fn with stderr sent to a pipe; return what was
 * written. */
static void capture(void (*fn)(void), char *buf, size_t cap)
{
	int fds[2], saved = dup(STDERR_FILENO);
	ssize_t n;

	assert_int_equal(pipe(fds), 0);
	assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
	fn();
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fds[1]);
	n = read(fds[0], buf, cap - 1);
	buf[n > 0 ? n : 0] = '\0';
	close(fds[0]);
}

static void log_three(void)
{
	mlrt_log(MLRT_LOG_ERROR, "disk %s is full", "/data");
	mlrt_log(MLRT_LOG_INFO, "step %d done", 40);
	mlrt_log(MLRT_LOG_DEBUG, "detail %d", 1);
}

static void test_prefix_and_filter(void **state)
{
	char out[1024];

	(void)state;
	mlrt_log_set_level(MLRT_LOG_INFO);
	mlrt_log_set_rank(3);
	capture(log_three, out, sizeof(out));
	assert_string_equal(out, "[mlrt 3] error: disk /data is full\n"
	                         "[mlrt 3] info: step 40 done\n");
	mlrt_log_set_rank(-1);
	mlrt_log_set_level(MLRT_LOG_ERROR);
	capture(log_three, out, sizeof(out));
	assert_string_equal(out, "[mlrt] error: disk /data is full\n");
}

static void log_long(void)
{
	char big[4096];

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	mlrt_log(MLRT_LOG_ERROR, "%s", big);
}

static void test_long_line_is_cut_but_whole(void **state)
{
	char out[8192];
	size_t n;

	(void)state;
	mlrt_log_set_level(MLRT_LOG_WARN);
	capture(log_long, out, sizeof(out));
	n = strlen(out);
	assert_true(n > 1000 && n <= 2048);
	assert_int_equal(out[n - 1], '\n');
	assert_ptr_equal(strchr(out, '\n'), out + n - 1);
}

static void test_parse_level(void **state)
{
	static const char *const names[] = {"error", "warn", "info", "debug", "trace"};
	mlrt_log_level lv;

	(void)state;
	for (int i = 0; i < 5; i++) {
		char digit[2] = {(char)('0' + i), '\0'};

		assert_int_equal(mlrt_log_parse_level(names[i], &lv), MLRT_OK);
		assert_int_equal(lv, i);
		assert_int_equal(mlrt_log_parse_level(digit, &lv), MLRT_OK);
		assert_int_equal(lv, i);
	}
	assert_int_equal(mlrt_log_parse_level("warning", &lv), MLRT_OK);
	assert_int_equal(lv, MLRT_LOG_WARN);
	assert_int_equal(mlrt_log_parse_level("loud", &lv), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_log_parse_level("5", &lv), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_log_parse_level("", &lv), MLRT_ERR_INVALID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prefix_and_filter),
		cmocka_unit_test(test_long_line_is_cut_but_whole),
		cmocka_unit_test(test_parse_level),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
