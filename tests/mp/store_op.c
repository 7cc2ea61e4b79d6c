/* store_op: one store operation from the command line, for the tests that
 * drive a store from a script (tests/mp/store_etcd.sh).
 *
 *   store_op ADDR set KEY VALUE
 *   store_op ADDR get KEY                  prints the value
 *   store_op ADDR lease KEY VALUE TTL_MS   sets KEY under a new lease and
 *                                          prints the lease's id
 *   store_op ADDR renew LEASE
 *   store_op ADDR wait KEY TIMEOUT_MS
 *
 * The request timeout comes from MLRT_STORE_TIMEOUT_MS, as for any client.
 * Exit status: 0 on success; otherwise the mlrt_status negated (4 TIMEOUT,
 * 5 NOT_FOUND, 10 UNAVAILABLE, ...) with "store_op: OP: error" on stderr;
 * 64 for a bad command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mlrt/store.h>

static int usage(void)
{
	fprintf(stderr, "usage: store_op ADDR set KEY VALUE | get KEY | lease KEY VALUE TTL_MS | "
	                "renew LEASE | wait KEY TIMEOUT_MS\n");
	return 64;
}

int main(int argc, char **argv)
{
	mlrt_store *st = NULL;
	const char *op;
	int rc;

	if (argc < 4)
		return usage();
	op = argv[2];
	rc = mlrt_store_open(argv[1], &st);
	if (rc != MLRT_OK)
		goto out;
	if (strcmp(op, "set") == 0 && argc == 5) {
		rc = mlrt_store_set(st, argv[3], argv[4], strlen(argv[4]));
	} else if (strcmp(op, "get") == 0 && argc == 4) {
		void *val = NULL;
		size_t len;

		rc = mlrt_store_get(st, argv[3], &val, &len);
		if (rc == MLRT_OK)
			printf("%s\n", (char *)val);
		free(val);
	} else if (strcmp(op, "lease") == 0 && argc == 6) {
		int64_t lease = 0;

		rc = mlrt_store_lease_grant(st, atoi(argv[5]), &lease);
		if (rc == MLRT_OK)
			rc = mlrt_store_set_leased(st, argv[3], argv[4], strlen(argv[4]), lease);
		if (rc == MLRT_OK)
			printf("%lld\n", (long long)lease);
	} else if (strcmp(op, "renew") == 0 && argc == 4) {
		rc = mlrt_store_lease_renew(st, strtoll(argv[3], NULL, 10));
	} else if (strcmp(op, "wait") == 0 && argc == 5) {
		const char *keys[1] = {argv[3]};

		rc = mlrt_store_wait(st, keys, 1, atoi(argv[4]));
	} else {
		mlrt_store_close(st);
		return usage();
	}
out:
	mlrt_store_close(st);
	if (rc != MLRT_OK)
		fprintf(stderr, "store_op: %s: %s\n", op, mlrt_strerror(rc));
	return -rc;
}
