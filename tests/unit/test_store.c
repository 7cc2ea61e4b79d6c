/* Unit tests of the store: a server on tcp://127.0.0.1:0 in this process,
 * every client operation and its errors, and a server that keeps working
 * through malformed traffic.
 *
 * With MLRT_TEST_STORE set (e.g. etcd://127.0.0.1:23790, see
 * tests/mp/store_etcd.sh) the client cases run against that store instead,
 * and the cases about mlrt's own server are skipped.  That store must be
 * a scratch one: setup deletes every key in it.  Leases there may end
 * later than asked (etcd: whole seconds, 2 s at least): the expiry checks
 * wait up to MLRT_TEST_LEASE_SLACK_MS more (default 5000) for them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <zmq.h>

#include <mlrt/store.h>

#include "mlrt_config.h"
#include "runtime/common.h"
#include "runtime/store_proto.h"

static mlrt_store_server *srv;
static mlrt_store *cl;
static const char *addr;
/* The external store under test (MLRT_TEST_STORE), or NULL: our own. */
static const char *ext;
/* How much longer than asked a lease may live in the store under test. */
static int64_t lease_slack_ms;

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0)
		;
}

static int setup(void **state)
{
	(void)state;
	ext = getenv("MLRT_TEST_STORE");
	if (ext != NULL && *ext == '\0')
		ext = NULL;
	if (ext == NULL) {
		if (mlrt_store_server_start("tcp://127.0.0.1:0", &srv) != MLRT_OK)
			return -1;
		addr = mlrt_store_server_addr(srv);
		return mlrt_store_open(addr, &cl);
	}
	if (mlrti_env_int("MLRT_TEST_LEASE_SLACK_MS", 0, 600000, 5000, &lease_slack_ms) != MLRT_OK)
		return -1;
	addr = ext;
	if (mlrt_store_open(addr, &cl) != MLRT_OK)
		return -1;
	/* A scratch store: start from nothing. */
	return mlrt_store_delete_prefix(cl, "", NULL);
}

static int teardown(void **state)
{
	(void)state;
	mlrt_store_close(cl);
	return srv != NULL ? mlrt_store_server_stop(srv) : 0;
}

/* Skip a case about mlrt's own server when testing an external store. */
#define SKIP_IF_EXTERNAL()                                                                       \
	do {                                                                                     \
		if (ext != NULL) {                                                               \
			print_message("skipped: this case is about mlrt's own store server\n");  \
			skip();                                                                  \
		}                                                                                \
	} while (0)

/* Get key and check it holds the len bytes at want. */
static void assert_value(mlrt_store *st, const char *key, const void *want, size_t len)
{
	void *val = NULL;
	size_t n = 12345;

	assert_int_equal(mlrt_store_get(st, key, &val, &n), MLRT_OK);
	assert_int_equal(n, len);
	if (len > 0)
		assert_memory_equal(val, want, len);
	assert_int_equal(((char *)val)[len], '\0');
	free(val);
}

static void assert_absent(mlrt_store *st, const char *key)
{
	void *val = (void *)1;
	size_t n;

	assert_int_equal(mlrt_store_get(st, key, &val, &n), MLRT_ERR_NOT_FOUND);
}

/* A key under an expired lease is gone: at once in our store, within
 * lease_slack_ms in one with coarser leases. */
static void assert_expired(mlrt_store *st, const char *key)
{
	int64_t end = mlrti_now_ms() + lease_slack_ms;
	void *val;
	size_t n;
	int rc;

	while ((rc = mlrt_store_get(st, key, &val, &n)) == MLRT_OK && mlrti_now_ms() < end) {
		free(val);
		sleep_ms(20);
	}
	if (rc == MLRT_OK)
		free(val);
	assert_int_equal(rc, MLRT_ERR_NOT_FOUND);
}

/* ---- server ---- */

static void test_server_start(void **state)
{
	mlrt_store_server *s2 = NULL;
	char host[256], want[300], port[16];
	const char *colon;

	(void)state;
	SKIP_IF_EXTERNAL();
	assert_int_equal(strncmp(addr, "tcp://127.0.0.1:", 16), 0);
	assert_true(atoi(addr + 16) > 0);
	assert_int_equal(mlrt_store_server_start(NULL, &s2), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_server_start("nonsense", &s2), MLRT_ERR_INVALID);
	assert_null(s2);
	/* The port of the running server is taken. */
	assert_int_equal(mlrt_store_server_start(addr, &s2), MLRT_ERR_IO);
	assert_null(s2);
	/* A wildcard bind reports the host's name. */
	assert_int_equal(mlrt_store_server_start("tcp://0.0.0.0:0", &s2), MLRT_OK);
	assert_int_equal(gethostname(host, sizeof(host)), 0);
	colon = strrchr(mlrt_store_server_addr(s2), ':');
	assert_non_null(colon);
	snprintf(port, sizeof(port), "%s", colon);
	snprintf(want, sizeof(want), "tcp://%s%s", host, port);
	assert_string_equal(mlrt_store_server_addr(s2), want);
	assert_int_equal(mlrt_store_server_stop(s2), MLRT_OK);
	assert_int_equal(mlrt_store_server_stop(NULL), MLRT_ERR_INVALID);
}

/* ---- set, get ---- */

static void test_set_get(void **state)
{
	static const char bin[] = {'\0', 'a', '\0', '\xff', '\0'};
	void *val;
	size_t n;

	(void)state;
	assert_int_equal(mlrt_store_set(cl, "sg/a", "one", 3), MLRT_OK);
	assert_value(cl, "sg/a", "one", 3);
	assert_int_equal(mlrt_store_set(cl, "sg/a", "second", 6), MLRT_OK);
	assert_value(cl, "sg/a", "second", 6);
	assert_absent(cl, "sg/missing");
	assert_int_equal(mlrt_store_set(cl, "sg/bin", bin, sizeof(bin)), MLRT_OK);
	assert_value(cl, "sg/bin", bin, sizeof(bin));
	/* An empty value, also given as NULL. */
	assert_int_equal(mlrt_store_set(cl, "sg/empty", "", 0), MLRT_OK);
	assert_value(cl, "sg/empty", "", 0);
	assert_int_equal(mlrt_store_set(cl, "sg/null", NULL, 0), MLRT_OK);
	assert_int_equal(mlrt_store_get(cl, "sg/null", &val, &n), MLRT_OK);
	assert_int_equal(n, 0);
	assert_string_equal(val, "");
	free(val);
}

static void test_arguments(void **state)
{
	char key[MLRT_STORE_MAX_KEY + 2];
	const char *keys[MLRTI_STORE_MAX_WAIT_KEYS + 1];
	mlrt_store *other = (mlrt_store *)1;
	char *big;
	void *val;
	size_t n;
	int64_t lease;

	(void)state;
	memset(key, 'k', sizeof(key));
	key[MLRT_STORE_MAX_KEY + 1] = '\0';
	assert_int_equal(mlrt_store_set(NULL, "a", "b", 1), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_set(cl, NULL, "b", 1), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_set(cl, "", "b", 1), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_set(cl, "a", NULL, 1), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_set(cl, key, "b", 1), MLRT_ERR_TOO_LARGE);
	assert_int_equal(mlrt_store_get(cl, key, &val, &n), MLRT_ERR_TOO_LARGE);
	assert_int_equal(mlrt_store_get(cl, "a", NULL, &n), MLRT_ERR_INVALID);
	key[MLRT_STORE_MAX_KEY] = '\0';
	assert_int_equal(mlrt_store_set(cl, key, "b", 1), MLRT_OK);
	assert_value(cl, key, "b", 1);

	big = calloc(1, (size_t)MLRT_STORE_MAX_VALUE + 1);
	assert_non_null(big);
	assert_int_equal(mlrt_store_set(cl, "arg/big", big, (size_t)MLRT_STORE_MAX_VALUE + 1),
	                 MLRT_ERR_TOO_LARGE);
	/* The largest value goes through. */
	big[MLRT_STORE_MAX_VALUE - 1] = 'z';
	assert_int_equal(mlrt_store_set(cl, "arg/big", big, MLRT_STORE_MAX_VALUE), MLRT_OK);
	assert_value(cl, "arg/big", big, MLRT_STORE_MAX_VALUE);
	assert_int_equal(mlrt_store_delete(cl, "arg/big"), MLRT_OK);
	free(big);

	for (size_t i = 0; i < MLRTI_ARRAY_LEN(keys); i++)
		keys[i] = "arg/w";
	assert_int_equal(mlrt_store_wait(cl, keys, 0, 10), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_wait(cl, NULL, 1, 10), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_wait(cl, keys, MLRTI_ARRAY_LEN(keys), 10), MLRT_ERR_TOO_LARGE);
	keys[1] = NULL;
	assert_int_equal(mlrt_store_wait_any(cl, keys, 2, 10, NULL), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_lease_grant(cl, 0, &lease), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_lease_grant(cl, 100, NULL), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_lease_renew(cl, 0), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_set_leased(cl, "a", "b", 1, -1), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_set_timeout(cl, 0), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_cas(cl, "a", NULL, 3, "x", 1, NULL, NULL, NULL),
	                 MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_list(cl, "a", NULL, &n), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_open(NULL, &other), MLRT_ERR_INVALID);
	assert_null(other);
	assert_int_equal(mlrt_store_open("", &other), MLRT_ERR_INVALID);
	mlrt_store_close(NULL);
}

/* ---- addresses ---- */

static void test_addresses(void **state)
{
	mlrt_store *st = (mlrt_store *)1;

	(void)state;
#if HAVE_ETCD
	static const char *const bad[] = {
		"etcd://", "etcd://host", "etcd://:2379", "etcd://host:", "etcd://host:0",
		"etcd://host:65536", "etcd://host:12x", "http://host:2379/v3",
		"etcd://user@host:2379",
	};

	for (size_t i = 0; i < MLRTI_ARRAY_LEN(bad); i++) {
		assert_int_equal(mlrt_store_open(bad[i], &st), MLRT_ERR_INVALID);
		assert_null(st);
	}
	/* Opening does not touch the network. */
	assert_int_equal(mlrt_store_open("etcd://127.0.0.1:2379", &st), MLRT_OK);
	mlrt_store_close(st);
	assert_int_equal(mlrt_store_open("http://[::1]:2379/", &st), MLRT_OK);
	mlrt_store_close(st);
#else
	/* Built without the etcd backend: said so, not tried over ZeroMQ. */
	assert_int_equal(mlrt_store_open("etcd://127.0.0.1:2379", &st), MLRT_ERR_UNSUPPORTED);
	assert_null(st);
	assert_int_equal(mlrt_store_open("http://127.0.0.1:2379", &st), MLRT_ERR_UNSUPPORTED);
	assert_null(st);
#endif
}

/* ---- add ---- */

#define ADD_THREADS 8
#define ADDS_PER_THREAD 200

static void *add_thread(void *arg)
{
	mlrt_store *st;
	intptr_t bad = 0;

	(void)arg;
	if (mlrt_store_open(addr, &st) != MLRT_OK)
		return (void *)1;
	for (int i = 0; i < ADDS_PER_THREAD; i++)
		bad += mlrt_store_add(st, "add/shared", 1, NULL) != MLRT_OK;
	mlrt_store_close(st);
	return (void *)bad;
}

static void test_add(void **state)
{
	pthread_t t[ADD_THREADS];
	int64_t r = 0;
	void *ret;

	(void)state;
	assert_int_equal(mlrt_store_add(cl, "add/n", 5, &r), MLRT_OK);
	assert_true(r == 5);
	assert_value(cl, "add/n", "5", 1);
	assert_int_equal(mlrt_store_add(cl, "add/n", -12, &r), MLRT_OK);
	assert_true(r == -7);
	assert_value(cl, "add/n", "-7", 2);
	assert_int_equal(mlrt_store_add(cl, "add/n", 0, NULL), MLRT_OK);
	/* A value set as text counts too. */
	assert_int_equal(mlrt_store_set(cl, "add/text", "40", 2), MLRT_OK);
	assert_int_equal(mlrt_store_add(cl, "add/text", 2, &r), MLRT_OK);
	assert_true(r == 42);
	/* Not integers: left alone. */
	assert_int_equal(mlrt_store_set(cl, "add/word", "forty", 5), MLRT_OK);
	assert_int_equal(mlrt_store_add(cl, "add/word", 1, &r), MLRT_ERR_INVALID);
	assert_value(cl, "add/word", "forty", 5);
	assert_int_equal(mlrt_store_set(cl, "add/word", " 4", 2), MLRT_OK);
	assert_int_equal(mlrt_store_add(cl, "add/word", 1, &r), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_set(cl, "add/word", "", 0), MLRT_OK);
	assert_int_equal(mlrt_store_add(cl, "add/word", 1, &r), MLRT_ERR_INVALID);
	assert_int_equal(mlrt_store_add(cl, "add/big", INT64_MAX, &r), MLRT_OK);
	assert_int_equal(mlrt_store_add(cl, "add/big", 1, &r), MLRT_ERR_INVALID);

	for (int i = 0; i < ADD_THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, add_thread, NULL), 0);
	for (int i = 0; i < ADD_THREADS; i++) {
		assert_int_equal(pthread_join(t[i], &ret), 0);
		assert_null(ret);
	}
	assert_int_equal(mlrt_store_add(cl, "add/shared", 0, &r), MLRT_OK);
	assert_true(r == ADD_THREADS * ADDS_PER_THREAD);
}

/* ---- cas ---- */

static void test_cas(void **state)
{
	void *cur;
	size_t len;
	int swapped;

	(void)state;
	/* Expect absent: creates. */
	assert_int_equal(mlrt_store_cas(cl, "cas/k", NULL, 0, "v1", 2, &swapped, &cur, &len),
	                 MLRT_OK);
	assert_int_equal(swapped, 1);
	assert_int_equal(len, 2);
	assert_string_equal(cur, "v1");
	free(cur);
	/* Expect absent again: fails, returns what is there. */
	assert_int_equal(mlrt_store_cas(cl, "cas/k", NULL, 0, "v2", 2, &swapped, &cur, &len),
	                 MLRT_OK);
	assert_int_equal(swapped, 0);
	assert_string_equal(cur, "v1");
	free(cur);
	/* Mismatch. */
	assert_int_equal(mlrt_store_cas(cl, "cas/k", "zz", 2, "v2", 2, &swapped, &cur, &len),
	                 MLRT_OK);
	assert_int_equal(swapped, 0);
	assert_int_equal(len, 2);
	assert_string_equal(cur, "v1");
	free(cur);
	/* A prefix of the value is not a match. */
	assert_int_equal(mlrt_store_cas(cl, "cas/k", "v", 1, "v2", 2, &swapped, NULL, NULL),
	                 MLRT_OK);
	assert_int_equal(swapped, 0);
	/* Match. */
	assert_int_equal(mlrt_store_cas(cl, "cas/k", "v1", 2, "third", 5, &swapped, &cur, &len),
	                 MLRT_OK);
	assert_int_equal(swapped, 1);
	assert_int_equal(len, 5);
	assert_string_equal(cur, "third");
	free(cur);
	assert_value(cl, "cas/k", "third", 5);
	/* Expecting a value of an absent key: nothing, cur NULL. */
	cur = (void *)1;
	assert_int_equal(mlrt_store_cas(cl, "cas/none", "x", 1, "y", 1, &swapped, &cur, &len),
	                 MLRT_OK);
	assert_int_equal(swapped, 0);
	assert_null(cur);
	assert_int_equal(len, 0);
	assert_absent(cl, "cas/none");
	/* Expecting the empty value. */
	assert_int_equal(mlrt_store_set(cl, "cas/e", "", 0), MLRT_OK);
	assert_int_equal(mlrt_store_cas(cl, "cas/e", "", 0, "full", 4, &swapped, NULL, NULL),
	                 MLRT_OK);
	assert_int_equal(swapped, 1);
	assert_value(cl, "cas/e", "full", 4);
}

/* ---- delete, list ---- */

static void test_delete(void **state)
{
	size_t count = 99;

	(void)state;
	assert_int_equal(mlrt_store_set(cl, "del/a", "1", 1), MLRT_OK);
	assert_int_equal(mlrt_store_delete(cl, "del/a"), MLRT_OK);
	assert_absent(cl, "del/a");
	assert_int_equal(mlrt_store_delete(cl, "del/a"), MLRT_ERR_NOT_FOUND);

	assert_int_equal(mlrt_store_set(cl, "dp/x/1", "1", 1), MLRT_OK);
	assert_int_equal(mlrt_store_set(cl, "dp/x/2", "2", 1), MLRT_OK);
	assert_int_equal(mlrt_store_set(cl, "dp/x", "3", 1), MLRT_OK);
	assert_int_equal(mlrt_store_set(cl, "dp/y/1", "4", 1), MLRT_OK);
	assert_int_equal(mlrt_store_delete_prefix(cl, "dp/x/", &count), MLRT_OK);
	assert_int_equal(count, 2);
	assert_absent(cl, "dp/x/1");
	assert_value(cl, "dp/x", "3", 1);
	assert_value(cl, "dp/y/1", "4", 1);
	assert_int_equal(mlrt_store_delete_prefix(cl, "dp/none", &count), MLRT_OK);
	assert_int_equal(count, 0);
	assert_int_equal(mlrt_store_delete_prefix(cl, "dp/", NULL), MLRT_OK);
	assert_absent(cl, "dp/y/1");
}

static void test_list(void **state)
{
	static const char *const order[] = {"ls/", "ls/B", "ls/a", "ls/ab", "ls/b", "ls/\xc3\xa9"};
	static const char *const set_order[] = {"ls/b", "ls/\xc3\xa9", "ls/a", "ls/", "ls/ab",
	                                        "ls/B"};
	mlrt_store_kv *items;
	size_t n, count;
	char key[32], val[32];

	(void)state;
	for (size_t i = 0; i < MLRTI_ARRAY_LEN(set_order); i++) {
		const char *k = set_order[i];

		assert_int_equal(mlrt_store_set(cl, k, k, strlen(k)), MLRT_OK);
	}
	assert_int_equal(mlrt_store_set(cl, "lsx", "out", 3), MLRT_OK);
	assert_int_equal(mlrt_store_list(cl, "ls/", &items, &n), MLRT_OK);
	assert_int_equal(n, MLRTI_ARRAY_LEN(order));
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(items[i].key, order[i]);
		assert_int_equal(items[i].len, strlen(order[i]));
		assert_string_equal(items[i].val, order[i]);
	}
	mlrt_store_kv_free(items, n);
	assert_int_equal(mlrt_store_list(cl, "nothing/", &items, &n), MLRT_OK);
	assert_int_equal(n, 0);
	assert_null(items);
	mlrt_store_kv_free(NULL, 0);

	/* Thousands of keys. */
	for (int i = 0; i < 3000; i++) {
		snprintf(key, sizeof(key), "many/%05d", (i * 7919) % 3000);
		snprintf(val, sizeof(val), "%d", (i * 7919) % 3000);
		assert_int_equal(mlrt_store_set(cl, key, val, strlen(val)), MLRT_OK);
	}
	assert_int_equal(mlrt_store_list(cl, "many/", &items, &n), MLRT_OK);
	assert_int_equal(n, 3000);
	for (size_t i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "many/%05zu", i);
		assert_string_equal(items[i].key, key);
		assert_int_equal(atoi(items[i].val), (int)i);
	}
	mlrt_store_kv_free(items, n);
	assert_value(cl, "many/01234", "1234", 4);
	assert_int_equal(mlrt_store_delete_prefix(cl, "many/", &count), MLRT_OK);
	assert_int_equal(count, 3000);
	assert_int_equal(mlrt_store_list(cl, "many/", &items, &n), MLRT_OK);
	assert_int_equal(n, 0);
}

/* ---- wait, wait_any ---- */

struct later {
	const char *key;
	int delay_ms;
	int how; /* 0 set, 1 add, 2 cas */
	int rc;
	int64_t at; /* when the key was asked for */
};

/* Create a key from another client after a delay. */
static void *later_thread(void *arg)
{
	struct later *l = arg;
	mlrt_store *st;

	l->rc = mlrt_store_open(addr, &st);
	if (l->rc != MLRT_OK)
		return NULL;
	sleep_ms(l->delay_ms);
	l->at = mlrti_now_ms();
	if (l->how == 0)
		l->rc = mlrt_store_set(st, l->key, "here", 4);
	else if (l->how == 1)
		l->rc = mlrt_store_add(st, l->key, 1, NULL);
	else
		l->rc = mlrt_store_cas(st, l->key, NULL, 0, "c", 1, NULL, NULL, NULL);
	mlrt_store_close(st);
	return NULL;
}

static void test_wait(void **state)
{
	const char *keys[3] = {"w/a", "w/b", "w/c"};
	pthread_t t;
	int64_t t0, dt, lag;

	(void)state;
	assert_int_equal(mlrt_store_set(cl, "w/a", "1", 1), MLRT_OK);
	assert_int_equal(mlrt_store_wait(cl, keys, 1, 1000), MLRT_OK);
	assert_int_equal(mlrt_store_wait(cl, keys, 1, 0), MLRT_OK);
	/* Missing, no waiting: at once. */
	t0 = mlrti_now_ms();
	assert_int_equal(mlrt_store_wait(cl, keys, 3, 0), MLRT_ERR_TIMEOUT);
	assert_true(mlrti_now_ms() - t0 < 500);

	/* The last keys appear later, by set, add and cas. */
	for (int how = 0; how < 3; how++) {
		struct later l = {.key = keys[1 + how % 2], .delay_ms = 150, .how = how};

		assert_int_equal(mlrt_store_set(cl, keys[1 + (how + 1) % 2], "x", 1), MLRT_OK);
		t0 = mlrti_now_ms();
		assert_int_equal(pthread_create(&t, NULL, later_thread, &l), 0);
		assert_int_equal(mlrt_store_wait(cl, keys, 3, 5000), MLRT_OK);
		dt = mlrti_now_ms() - t0;
		lag = mlrti_now_ms() - l.at;
		assert_int_equal(pthread_join(t, NULL), 0);
		assert_int_equal(l.rc, MLRT_OK);
		assert_true(dt >= 100 && dt < 4000);
		/* The waiter returns soon after the key is created. */
		print_message("wait returned %lld ms after the key was created\n", (long long)lag);
		assert_true(lag < 50);
		assert_int_equal(mlrt_store_delete(cl, "w/b"), MLRT_OK);
		assert_int_equal(mlrt_store_delete(cl, "w/c"), MLRT_OK);
	}

	/* Timeout, within a bound. */
	t0 = mlrti_now_ms();
	assert_int_equal(mlrt_store_wait(cl, keys, 3, 200), MLRT_ERR_TIMEOUT);
	dt = mlrti_now_ms() - t0;
	assert_true(dt >= 190 && dt < 1500);
	/* The client still works after that. */
	assert_value(cl, "w/a", "1", 1);
}

static void test_wait_any(void **state)
{
	const char *keys[3] = {"wa/a", "wa/b", "wa/c"};
	struct later l = {.key = "wa/c", .delay_ms = 150};
	size_t which = 99;
	pthread_t t;
	int64_t t0, dt;

	(void)state;
	t0 = mlrti_now_ms();
	assert_int_equal(mlrt_store_wait_any(cl, keys, 3, 200, &which), MLRT_ERR_TIMEOUT);
	dt = mlrti_now_ms() - t0;
	assert_true(dt >= 190 && dt < 1500);

	assert_int_equal(pthread_create(&t, NULL, later_thread, &l), 0);
	assert_int_equal(mlrt_store_wait_any(cl, keys, 3, 5000, &which), MLRT_OK);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(which, 2);

	/* Two present: the first in the caller's order. */
	assert_int_equal(mlrt_store_set(cl, "wa/b", "1", 1), MLRT_OK);
	assert_int_equal(mlrt_store_wait_any(cl, keys, 3, 0, &which), MLRT_OK);
	assert_int_equal(which, 1);
	assert_int_equal(mlrt_store_wait_any(cl, keys, 3, 100, NULL), MLRT_OK);
}

/* ---- leases ---- */

static void test_leases(void **state)
{
	int64_t lease, l2, l3;

	(void)state;
	/* Expires without renewal. */
	assert_int_equal(mlrt_store_lease_grant(cl, 200, &lease), MLRT_OK);
	assert_true(lease > 0);
	assert_int_equal(mlrt_store_set_leased(cl, "ls1/a", "1", 1, lease), MLRT_OK);
	assert_int_equal(mlrt_store_set_leased(cl, "ls1/b", "2", 1, lease), MLRT_OK);
	assert_value(cl, "ls1/a", "1", 1);
	sleep_ms(450);
	assert_expired(cl, "ls1/a");
	assert_absent(cl, "ls1/b");
	assert_int_equal(mlrt_store_lease_renew(cl, lease), MLRT_ERR_NOT_FOUND);
	assert_int_equal(mlrt_store_set_leased(cl, "ls1/c", "3", 1, lease), MLRT_ERR_NOT_FOUND);
	assert_absent(cl, "ls1/c");

	/* Survives while renewed. */
	assert_int_equal(mlrt_store_lease_grant(cl, 300, &l2), MLRT_OK);
	assert_true(l2 != lease);
	assert_int_equal(mlrt_store_set_leased(cl, "ls2/a", "x", 1, l2), MLRT_OK);
	for (int i = 0; i < 8; i++) {
		sleep_ms(100);
		assert_int_equal(mlrt_store_lease_renew(cl, l2), MLRT_OK);
	}
	assert_value(cl, "ls2/a", "x", 1);
	/* A plain set unties a key from its lease; add and cas keep the tie. */
	assert_int_equal(mlrt_store_set_leased(cl, "ls2/plain", "p", 1, l2), MLRT_OK);
	assert_int_equal(mlrt_store_set(cl, "ls2/plain", "q", 1), MLRT_OK);
	assert_int_equal(mlrt_store_set_leased(cl, "ls2/n", "1", 1, l2), MLRT_OK);
	assert_int_equal(mlrt_store_add(cl, "ls2/n", 1, NULL), MLRT_OK);
	/* Revoke deletes now. */
	assert_int_equal(mlrt_store_lease_revoke(cl, l2), MLRT_OK);
	assert_absent(cl, "ls2/a");
	assert_absent(cl, "ls2/n");
	assert_value(cl, "ls2/plain", "q", 1);
	assert_int_equal(mlrt_store_lease_revoke(cl, l2), MLRT_ERR_NOT_FOUND);
	assert_int_equal(mlrt_store_lease_renew(cl, l2), MLRT_ERR_NOT_FOUND);

	/* Unknown leases. */
	assert_int_equal(mlrt_store_set_leased(cl, "ls3/a", "1", 1, 999999), MLRT_ERR_NOT_FOUND);
	assert_absent(cl, "ls3/a");
	assert_int_equal(mlrt_store_lease_renew(cl, 999999), MLRT_ERR_NOT_FOUND);

	/* Moving a key to another lease. */
	assert_int_equal(mlrt_store_lease_grant(cl, 60000, &l2), MLRT_OK);
	assert_int_equal(mlrt_store_lease_grant(cl, 60000, &l3), MLRT_OK);
	assert_int_equal(mlrt_store_set_leased(cl, "ls4/a", "1", 1, l2), MLRT_OK);
	assert_int_equal(mlrt_store_set_leased(cl, "ls4/a", "2", 1, l3), MLRT_OK);
	assert_int_equal(mlrt_store_lease_revoke(cl, l2), MLRT_OK);
	assert_value(cl, "ls4/a", "2", 1);
	assert_int_equal(mlrt_store_lease_revoke(cl, l3), MLRT_OK);
	assert_absent(cl, "ls4/a");
}

/* ---- unreachable store ---- */

/* A TCP port on 127.0.0.1 where nothing listens (bound, then closed). */
static int free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static void test_unavailable(void **state)
{
	mlrt_store_server *s2;
	mlrt_store *st;
	char where[64], scheme[16] = "tcp";
	const char *sep;
	void *val;
	size_t n;
	int64_t t0, dt;

	(void)state;
	/* The same kind of store as the one under test, where nothing listens. */
	sep = ext != NULL ? strstr(ext, "://") : NULL;
	if (sep != NULL && (size_t)(sep - ext) < sizeof(scheme))
		snprintf(scheme, sizeof(scheme), "%.*s", (int)(sep - ext), ext);
	snprintf(where, sizeof(where), "%s://127.0.0.1:%d", scheme, free_port());
	assert_int_equal(mlrt_store_open(where, &st), MLRT_OK);
	assert_int_equal(mlrt_store_set_timeout(st, 300), MLRT_OK);
	t0 = mlrti_now_ms();
	assert_int_equal(mlrt_store_get(st, "x", &val, &n), MLRT_ERR_UNAVAILABLE);
	dt = mlrti_now_ms() - t0;
	assert_true(dt >= 290 && dt < 2000);
	/* Waits are bounded by their own timeout plus the request timeout.
	 * (etcd's waits are many requests: the first one fails.) */
	t0 = mlrti_now_ms();
	assert_int_equal(mlrt_store_wait(st, (const char *[]){"x"}, 1, 200), MLRT_ERR_UNAVAILABLE);
	dt = mlrti_now_ms() - t0;
	assert_true(dt >= (ext != NULL ? 290 : 490) && dt < 2500);
	mlrt_store_close(st);

	/* The request timeout from the environment; a bad value is refused. */
	assert_int_equal(setenv("MLRT_STORE_TIMEOUT_MS", "nope", 1), 0);
	st = (mlrt_store *)1;
	assert_int_equal(mlrt_store_open(where, &st), MLRT_ERR_INVALID);
	assert_null(st);
	assert_int_equal(setenv("MLRT_STORE_TIMEOUT_MS", "250", 1), 0);
	assert_int_equal(mlrt_store_open(where, &st), MLRT_OK);
	assert_int_equal(unsetenv("MLRT_STORE_TIMEOUT_MS"), 0);
	t0 = mlrti_now_ms();
	assert_int_equal(mlrt_store_delete(st, "x"), MLRT_ERR_UNAVAILABLE);
	dt = mlrti_now_ms() - t0;
	assert_true(dt >= 240 && dt < 2000);
	mlrt_store_close(st);

	/* A server that stops: its clients get UNAVAILABLE on the next call.
	 * (For an external store, tests/mp/store_etcd.sh kills it.) */
	if (ext != NULL)
		return;
	assert_int_equal(mlrt_store_server_start("tcp://127.0.0.1:0", &s2), MLRT_OK);
	assert_int_equal(mlrt_store_open(mlrt_store_server_addr(s2), &st), MLRT_OK);
	assert_int_equal(mlrt_store_set_timeout(st, 300), MLRT_OK);
	assert_int_equal(mlrt_store_set(st, "k", "v", 1), MLRT_OK);
	assert_int_equal(mlrt_store_server_stop(s2), MLRT_OK);
	assert_int_equal(mlrt_store_get(st, "k", &val, &n), MLRT_ERR_UNAVAILABLE);
	mlrt_store_close(st);
}

/* ---- robustness against bad peers ---- */

/* A reply's id and status as a raw peer sees them. */
struct raw_reply {
	uint64_t id;
	int st;
};

/* Send raw bytes from sock; then wait up to ms for a reply and decode it
 * into *rep (1), or see none (0). */
static int raw_exchange(void *sock, const void *data, size_t len, int ms, struct raw_reply *rep)
{
	zmq_pollitem_t item = {.socket = sock, .events = ZMQ_POLLIN};
	mlrti_store_rep dec;
	zmq_msg_t m;

	memset(rep, 0, sizeof(*rep));
	assert_true(zmq_send(sock, data, len, 0) == (int)len);
	if (zmq_poll(&item, 1, ms) != 1)
		return 0;
	zmq_msg_init(&m);
	assert_true(zmq_msg_recv(&m, sock, 0) >= 0);
	assert_int_equal(mlrti_store_decode_reply(zmq_msg_data(&m), zmq_msg_size(&m), &dec),
	                 MLRT_OK);
	rep->id = dec.id;
	rep->st = dec.st;
	mlrti_store_rep_fini(&dec);
	zmq_msg_close(&m);
	return 1;
}

/* A hand-built request: {"v":v, "id":id, "op":op, "key":key as int}. */
static void *raw_request(unsigned v, uint64_t id, const char *op, int key_as_int, size_t *len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	msgpack_pack_str_with_body(&pk, "v", 1);
	msgpack_pack_unsigned_int(&pk, v);
	msgpack_pack_str_with_body(&pk, "id", 2);
	msgpack_pack_uint64(&pk, id);
	msgpack_pack_str_with_body(&pk, "op", 2);
	msgpack_pack_str_with_body(&pk, op, strlen(op));
	msgpack_pack_str_with_body(&pk, "key", 3);
	if (key_as_int)
		msgpack_pack_int(&pk, 5);
	else
		msgpack_pack_str_with_body(&pk, "robust/keep", 11);
	*len = sb.size;
	return msgpack_sbuffer_release(&sb);
}

static void test_robustness(void **state)
{
	static const uint8_t garbage[] = {0xc1, 0xde, 0xad, 0xbe, 0xef, 0x00, 0xff};
	struct raw_reply rep;
	mlrti_store_req set = {.op = MLRTI_STORE_OP_SET, .id = 4245, .key = {"robust/x", 8}};
	void *ctx, *sock, *buf;
	size_t len;
	int zero = 0, got;
	char *big;

	(void)state;
	SKIP_IF_EXTERNAL();
	ctx = zmq_ctx_new();
	assert_int_equal(mlrt_store_set(cl, "robust/keep", "precious", 8), MLRT_OK);
	sock = zmq_socket(ctx, ZMQ_DEALER);
	assert_non_null(sock);
	assert_int_equal(zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof(zero)), 0);
	assert_int_equal(zmq_connect(sock, addr), 0);

	/* Garbage and truncated msgpack: dropped, no reply. */
	assert_int_equal(raw_exchange(sock, garbage, sizeof(garbage), 200, &rep), 0);
	buf = raw_request(1, 4240, "get", 0, &len);
	assert_int_equal(raw_exchange(sock, buf, len - 3, 200, &rep), 0);
	/* ...while the whole of it is answered. */
	assert_int_equal(raw_exchange(sock, buf, len, 2000, &rep), 1);
	assert_true(rep.id == 4240);
	assert_int_equal(rep.st, MLRT_OK);
	free(buf);
	/* An empty frame and a two-frame message: dropped. */
	assert_int_equal(raw_exchange(sock, "", 0, 200, &rep), 0);
	assert_true(zmq_send(sock, "a", 1, ZMQ_SNDMORE) == 1);
	assert_int_equal(raw_exchange(sock, "b", 1, 200, &rep), 0);

	/* Wrong version, wrong field type, unknown op: error replies. */
	buf = raw_request(7, 4241, "get", 0, &len);
	assert_int_equal(raw_exchange(sock, buf, len, 2000, &rep), 1);
	assert_true(rep.id == 4241);
	assert_int_equal(rep.st, MLRT_ERR_VERSION);
	free(buf);
	buf = raw_request(1, 4242, "set", 1, &len);
	assert_int_equal(raw_exchange(sock, buf, len, 2000, &rep), 1);
	assert_true(rep.id == 4242);
	assert_int_equal(rep.st, MLRT_ERR_PROTOCOL);
	free(buf);
	buf = raw_request(1, 4243, "explode", 0, &len);
	assert_int_equal(raw_exchange(sock, buf, len, 2000, &rep), 1);
	assert_true(rep.id == 4243);
	assert_int_equal(rep.st, MLRT_ERR_PROTOCOL);
	free(buf);

	/* A value over the limit in a frame under the frame limit: TOO_LARGE. */
	big = calloc(1, (size_t)MLRT_STORE_MAX_VALUE + 1);
	assert_non_null(big);
	set.val = (mlrti_store_bytes){big, (size_t)MLRT_STORE_MAX_VALUE + 1};
	assert_int_equal(mlrti_store_encode_request(&set, &buf, &len), MLRT_OK);
	assert_int_equal(raw_exchange(sock, buf, len, 5000, &rep), 1);
	assert_true(rep.id == 4245);
	assert_int_equal(rep.st, MLRT_ERR_TOO_LARGE);
	free(buf);
	free(big);

	/* A frame over the limit: the server drops the connection. */
	len = MLRTI_STORE_MAX_REQUEST + 4096;
	big = calloc(1, len);
	assert_non_null(big);
	assert_int_equal(raw_exchange(sock, big, len, 500, &rep), 0);
	free(big);

	/* The well-behaved client's data is intact and the server answers. */
	assert_value(cl, "robust/keep", "precious", 8);
	assert_absent(cl, "robust/x");
	/* The offending peer, reconnected, is served again. */
	buf = raw_request(1, 4250, "get", 0, &len);
	got = 0;
	for (int i = 0; i < 20 && !got; i++) {
		got = raw_exchange(sock, buf, len, 250, &rep);
		if (got) {
			assert_true(rep.id == 4250);
			assert_int_equal(rep.st, MLRT_OK);
		}
	}
	assert_true(got);
	free(buf);
	zmq_close(sock);
	zmq_ctx_term(ctx);
}

/* ---- a client facing a misbehaving server ---- */

struct fake_client {
	const char *addr;
	int rc[3];
	char got[8];
};

/* Three gets against the fake server; the first value is kept. */
static void *fake_client_thread(void *arg)
{
	struct fake_client *f = arg;
	mlrt_store *st;
	void *val;
	size_t len;

	if (mlrt_store_open(f->addr, &st) != MLRT_OK)
		return NULL;
	mlrt_store_set_timeout(st, 5000);
	for (int i = 0; i < 3; i++) {
		f->rc[i] = mlrt_store_get(st, "k", &val, &len);
		if (f->rc[i] == MLRT_OK) {
			if (i == 0)
				snprintf(f->got, sizeof(f->got), "%s", (char *)val);
			free(val);
		}
	}
	mlrt_store_close(st);
	return NULL;
}

/* Receive one request on the fake server's ROUTER; keep the routing id in
 * rid and return the request id. */
static uint64_t fake_recv(void *sock, zmq_msg_t *rid)
{
	mlrti_store_req req;
	zmq_msg_t body;
	uint64_t id;

	zmq_msg_init(rid);
	zmq_msg_init(&body);
	assert_true(zmq_msg_recv(rid, sock, 0) >= 0);
	assert_true(zmq_msg_recv(&body, sock, 0) >= 0);
	assert_int_equal(mlrti_store_decode_request(zmq_msg_data(&body), zmq_msg_size(&body), &req),
	                 MLRT_OK);
	assert_int_equal(req.op, MLRTI_STORE_OP_GET);
	id = req.id;
	mlrti_store_req_fini(&req);
	zmq_msg_close(&body);
	return id;
}

/* Send len bytes to the client rid. */
static void fake_send(void *sock, zmq_msg_t *rid, const void *data, size_t len)
{
	assert_true(zmq_send(sock, zmq_msg_data(rid), zmq_msg_size(rid), ZMQ_SNDMORE) >= 0);
	assert_true(zmq_send(sock, data, len, 0) == (int)len);
}

static void fake_send_rep(void *sock, zmq_msg_t *rid, const mlrti_store_rep *rep)
{
	void *buf;
	size_t len;

	assert_int_equal(mlrti_store_encode_reply(rep, &buf, &len), MLRT_OK);
	fake_send(sock, rid, buf, len);
	free(buf);
}

static void test_bad_server(void **state)
{
	struct fake_client f = {.rc = {1, 1, 1}};
	void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_ROUTER);
	char where[128];
	size_t n = sizeof(where);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	pthread_t t;
	zmq_msg_t rid;
	uint64_t id;
	int zero = 0;

	(void)state;
	assert_non_null(sock);
	assert_int_equal(zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof(zero)), 0);
	assert_int_equal(zmq_bind(sock, "tcp://127.0.0.1:*"), 0);
	assert_int_equal(zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, where, &n), 0);
	f.addr = where;
	assert_int_equal(pthread_create(&t, NULL, fake_client_thread, &f), 0);

	/* 1: a stale reply and garbage first, both ignored, then the answer. */
	id = fake_recv(sock, &rid);
	fake_send_rep(sock, &rid, &(mlrti_store_rep){.id = id + 100, .has_val = 1,
	                                               .val = {"stale", 5}});
	fake_send(sock, &rid, "\xc1garbage", 8);
	fake_send_rep(sock, &rid, &(mlrti_store_rep){.id = id, .has_val = 1, .val = {"ok", 2}});
	zmq_msg_close(&rid);

	/* 2: a reply without the value a get promises. */
	id = fake_recv(sock, &rid);
	fake_send_rep(sock, &rid, &(mlrti_store_rep){.id = id});
	zmq_msg_close(&rid);

	/* 3: a reply in another protocol version. */
	id = fake_recv(sock, &rid);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	msgpack_pack_str_with_body(&pk, "v", 1);
	msgpack_pack_int(&pk, 2);
	msgpack_pack_str_with_body(&pk, "id", 2);
	msgpack_pack_uint64(&pk, id);
	msgpack_pack_str_with_body(&pk, "st", 2);
	msgpack_pack_int(&pk, 0);
	fake_send(sock, &rid, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	zmq_msg_close(&rid);

	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(f.rc[0], MLRT_OK);
	assert_string_equal(f.got, "ok");
	assert_int_equal(f.rc[1], MLRT_ERR_PROTOCOL);
	assert_int_equal(f.rc[2], MLRT_ERR_VERSION);
	zmq_close(sock);
	zmq_ctx_term(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_server_start),
		cmocka_unit_test(test_set_get),
		cmocka_unit_test(test_arguments),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_add),
		cmocka_unit_test(test_cas),
		cmocka_unit_test(test_delete),
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_wait),
		cmocka_unit_test(test_wait_any),
		cmocka_unit_test(test_leases),
		cmocka_unit_test(test_unavailable),
		cmocka_unit_test(test_robustness),
		cmocka_unit_test(test_bad_server),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
