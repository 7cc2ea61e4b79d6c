/* Gang rendezvous: rounds close by min/max/last call, ranks are assigned
 * deterministically, and a gang that cannot form fails at its deadline
 * with a message naming who is missing. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/common.h"
#include "runtime/rdzv.h"

typedef struct participant {
	const char *addr;
	mlrti_rdzv_opts opts;
	char name[32];
	int nproc;
	int rc;
	int64_t took_ms;
	mlrti_rdzv_result res;
} participant;

static mlrt_store_server *server;

static void *join_thread(void *arg)
{
	participant *p = arg;
	mlrt_store *st;
	int64_t t0 = mlrti_now_ms();

	p->rc = mlrt_store_open(p->addr, &st);
	if (p->rc == MLRT_OK)
		p->rc = mlrti_rdzv_join(st, &p->opts, p->name, p->nproc, &p->res);
	p->took_ms = mlrti_now_ms() - t0;
	mlrt_store_close(st);
	return NULL;
}

/* Run n participants of one round concurrently; names are given in an
 * order different from the sorted one on purpose. */
static void run_round(participant *ps, int n, const mlrti_rdzv_opts *o, const char *const *names,
                      const int *nprocs)
{
	pthread_t th[16];

	for (int i = 0; i < n; i++) {
		memset(&ps[i], 0, sizeof(ps[i]));
		ps[i].addr = mlrt_store_server_addr(server);
		ps[i].opts = *o;
		snprintf(ps[i].name, sizeof(ps[i].name), "%s", names[i]);
		ps[i].nproc = nprocs[i];
		assert_int_equal(pthread_create(&th[i], NULL, join_thread, &ps[i]), 0);
	}
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
}

static void test_full_round_assigns_ranks_by_name(void **state)
{
	const char *names[] = {"host-c", "host-a", "host-b"};
	const int nprocs[] = {1, 4, 2};
	mlrti_rdzv_opts o = {.job = "full", .round = 0, .min = 3, .max = 3, .timeout_ms = 10000};
	participant ps[3];

	(void)state;
	run_round(ps, 3, &o, names, nprocs);
	for (int i = 0; i < 3; i++) {
		mlrti_rdzv_result *r = &ps[i].res;

		assert_int_equal(ps[i].rc, MLRT_OK);
		assert_int_equal(r->generation, 0);
		assert_int_equal(r->nmembers, 3);
		assert_int_equal(r->world_size, 7);
		assert_string_equal(r->members[0].name, "host-a");
		assert_string_equal(r->members[1].name, "host-b");
		assert_string_equal(r->members[2].name, "host-c");
		assert_int_equal(r->members[0].first_rank, 0);
		assert_int_equal(r->members[1].first_rank, 4);
		assert_int_equal(r->members[2].first_rank, 6);
		assert_string_equal(r->members[r->index].name, ps[i].name);
		assert_int_equal(r->members[r->index].nproc, ps[i].nproc);
		mlrti_rdzv_result_fini(r);
	}
}

static void test_last_call_closes_with_min(void **state)
{
	const char *names[] = {"b", "a"};
	const int nprocs[] = {1, 1};
	mlrti_rdzv_opts o = {.job = "lastcall", .round = 4, .min = 2, .max = 4,
	                     .last_call_ms = 300, .timeout_ms = 10000};
	participant ps[2];

	(void)state;
	run_round(ps, 2, &o, names, nprocs);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(ps[i].rc, MLRT_OK);
		assert_int_equal(ps[i].res.nmembers, 2);
		assert_int_equal(ps[i].res.generation, 4);
		/* It waited for the last call, and not much more. */
		assert_true(ps[i].took_ms >= 300);
		assert_true(ps[i].took_ms < 5000);
		mlrti_rdzv_result_fini(&ps[i].res);
	}
}

static void test_max_closes_without_last_call(void **state)
{
	const char *names[] = {"x", "y"};
	const int nprocs[] = {2, 3};
	mlrti_rdzv_opts o = {.job = "max", .round = 0, .min = 1, .max = 2,
	                     .last_call_ms = 30000, .timeout_ms = 30000};
	participant ps[2];

	(void)state;
	run_round(ps, 2, &o, names, nprocs);
	for (int i = 0; i < 2; i++) {
		/* The last call is 30 s: only reaching max can close it this fast. */
		assert_int_equal(ps[i].rc, MLRT_OK);
		assert_int_equal(ps[i].res.nmembers, 2);
		assert_int_equal(ps[i].res.world_size, 5);
		assert_true(ps[i].took_ms < 10000);
		mlrti_rdzv_result_fini(&ps[i].res);
	}
}

static void test_missing_participant_fails_at_deadline(void **state)
{
	const char *expected[] = {"node1", "node2", "node3"};
	const char *names[] = {"node2", "node1"};
	const int nprocs[] = {1, 1};
	mlrti_rdzv_opts o = {.job = "short", .round = 0, .min = 3, .max = 3, .timeout_ms = 500,
	                     .expected = expected, .nexpected = 3};
	participant ps[2];

	(void)state;
	run_round(ps, 2, &o, names, nprocs);
	for (int i = 0; i < 2; i++) {
		const char *err = ps[i].res.error;

		assert_int_equal(ps[i].rc, MLRT_ERR_TIMEOUT);
		assert_non_null(strstr(err, "2 of 3 needed participants joined"));
		assert_non_null(strstr(err, "node1"));
		assert_non_null(strstr(err, "node2"));
		assert_non_null(strstr(err, "missing: node3"));
		assert_null(strstr(err, "missing: node1"));
		assert_true(ps[i].took_ms >= 500);
		assert_true(ps[i].took_ms < 5000);
		mlrti_rdzv_result_fini(&ps[i].res);
	}
}

static void test_duplicate_and_late_participants(void **state)
{
	mlrti_rdzv_opts o = {.job = "dup", .round = 0, .min = 1, .max = 1, .timeout_ms = 5000};
	mlrti_rdzv_result r1, r2, r3;
	mlrt_store *st;

	(void)state;
	assert_int_equal(mlrt_store_open(mlrt_store_server_addr(server), &st), MLRT_OK);
	assert_int_equal(mlrti_rdzv_join(st, &o, "solo", 1, &r1), MLRT_OK);
	assert_int_equal(r1.nmembers, 1);
	/* The same name twice in one round is refused... */
	assert_int_equal(mlrti_rdzv_join(st, &o, "solo", 1, &r2), MLRT_ERR_EXISTS);
	assert_non_null(strstr(r2.error, "already joined"));
	/* ...and a newcomer after the round closed is told it is too late. */
	assert_int_equal(mlrti_rdzv_join(st, &o, "late", 1, &r3), MLRT_ERR_ABORTED);
	assert_non_null(strstr(r3.error, "closed with 1 participants before 'late' joined"));
	mlrti_rdzv_result_fini(&r1);
	mlrti_rdzv_result_fini(&r2);
	mlrti_rdzv_result_fini(&r3);
	mlrt_store_close(st);
}

static void test_bad_arguments_and_cancel(void **state)
{
	mlrti_rdzv_opts o = {.job = "bad", .round = 0, .min = 2, .max = 1, .timeout_ms = 100};
	volatile int cancel = 1;
	mlrti_rdzv_result r;
	mlrt_store *st;

	(void)state;
	assert_int_equal(mlrt_store_open(mlrt_store_server_addr(server), &st), MLRT_OK);
	assert_int_equal(mlrti_rdzv_join(st, &o, "a", 1, &r), MLRT_ERR_INVALID);
	o.max = 2;
	assert_int_equal(mlrti_rdzv_join(st, &o, "a/b", 1, &r), MLRT_ERR_INVALID);
	assert_int_equal(mlrti_rdzv_join(st, &o, "", 1, &r), MLRT_ERR_INVALID);
	assert_int_equal(mlrti_rdzv_join(st, &o, "a", 0, &r), MLRT_ERR_INVALID);
	o.timeout_ms = 60000;
	o.cancel = &cancel;
	assert_int_equal(mlrti_rdzv_join(st, &o, "a", 1, &r), MLRT_ERR_ABORTED);
	mlrti_rdzv_result_fini(&r);
	mlrt_store_close(st);
}

static int start_server(void **state)
{
	(void)state;
	return mlrt_store_server_start("tcp://127.0.0.1:0", &server);
}

static int stop_server(void **state)
{
	(void)state;
	return mlrt_store_server_stop(server);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_round_assigns_ranks_by_name),
		cmocka_unit_test(test_last_call_closes_with_min),
		cmocka_unit_test(test_max_closes_without_last_call),
		cmocka_unit_test(test_missing_participant_fails_at_deadline),
		cmocka_unit_test(test_duplicate_and_late_participants),
		cmocka_unit_test(test_bad_arguments_and_cancel),
	};

	return cmocka_run_group_tests(tests, start_server, stop_server);
}
