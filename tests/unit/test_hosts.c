/* mlrun -H lists and hostfiles (launcher/hosts.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "launcher/hosts.h"

static void test_list(void **state)
{
	host_entry *h;
	char err[256];
	int n;

	(void)state;
	assert_int_equal(hosts_parse_list("a:4,b,c.example.org:2,a:1", 3, &h, &n, err,
	                                  sizeof(err)), 0);
	assert_int_equal(n, 3);
	assert_string_equal(h[0].name, "a");
	assert_int_equal(h[0].slots, 5); /* named twice: the sum */
	assert_string_equal(h[1].name, "b");
	assert_int_equal(h[1].slots, 3); /* no count: the default */
	assert_string_equal(h[2].name, "c.example.org");
	assert_int_equal(h[2].slots, 2);
	free(h);
	assert_int_equal(hosts_parse_list("10.0.0.1:2,user@node-2_x", 1, &h, &n, err,
	                                  sizeof(err)), 0);
	assert_int_equal(n, 2);
	assert_string_equal(h[1].name, "user@node-2_x");
	free(h);
}

static void test_bad_list(void **state)
{
	const struct {
		const char *list, *want;
	} cases[] = {
		{"a:0", "invalid worker count '0' for host 'a'"},
		{"a:x", "invalid worker count 'x' for host 'a'"},
		{"a,", "ends with a comma"},
		{"", "names no host"},
		{"a,,b", "invalid host ''"},
		{"a b", "invalid host 'a b'"},
		{"$(reboot)", "invalid host '$(reboot)'"},
	};
	host_entry *h;
	char err[256];
	int n;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(hosts_parse_list(cases[i].list, 1, &h, &n, err, sizeof(err)), -1);
		if (strstr(err, cases[i].want) == NULL)
			fail_msg("-H '%s': got '%s', want '%s'", cases[i].list, err, cases[i].want);
		assert_null(h);
		assert_int_equal(n, 0);
	}
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_file(void **state)
{
	char path[] = "/tmp/mlrt-hostfile-XXXXXX", err[256];
	host_entry *h;
	int n, fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	close(fd);
	write_file(path, "# the cluster\n\nnode1 slots=4\nnode2 slots=2 max_slots=8   # busy\n"
	                 "  node3\nnode1 slots=1\n");
	assert_int_equal(hosts_parse_file(path, 2, &h, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 3);
	assert_string_equal(h[0].name, "node1");
	assert_int_equal(h[0].slots, 5);
	assert_int_equal(h[1].slots, 2);
	assert_string_equal(h[2].name, "node3");
	assert_int_equal(h[2].slots, 2);
	free(h);

	write_file(path, "node1 slots=4\nnode2 cpus=3\n");
	assert_int_equal(hosts_parse_file(path, 1, &h, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ":2: unknown 'cpus=3'"));
	write_file(path, "node1 slots=-1\n");
	assert_int_equal(hosts_parse_file(path, 1, &h, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ":1: invalid 'slots=-1'"));
	write_file(path, "# nothing\n\n");
	assert_int_equal(hosts_parse_file(path, 1, &h, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "names no host"));
	unlink(path);
	assert_int_equal(hosts_parse_file(path, 1, &h, &n, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot read hostfile"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_bad_list),
		cmocka_unit_test(test_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
