/* async_check: nonblocking collectives and tensor fusion, under mlrun.
 * Exit 0 when every check passed; each failure is printed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mlrt/mlrt.h>

static int failures, rank, size;

#define CHECK(cond, ...)                                                                         \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			failures++;                                                              \
			fprintf(stderr, "rank %d: FAIL line %d: ", rank, __LINE__);              \
			fprintf(stderr, __VA_ARGS__);                                            \
			fputc('\n', stderr);                                                     \
		}                                                                                \
	} while (0)

static mlrt_comm_stats stats(mlrt_comm *w)
{
	mlrt_comm_stats s;

	mlrt_comm_get_stats(w, &s);
	return s;
}

/* n allreduces of i+1 floats each, value rank+i: the sum is known. */
static void many_small(mlrt_comm *w, int n, int grouped, unsigned long long *collectives,
                       unsigned long long *fused)
{
	mlrt_request **req = calloc((size_t)n, sizeof(*req));
	float **buf = calloc((size_t)n, sizeof(*buf));
	mlrt_comm_stats before = stats(w), after;

	if (grouped)
		CHECK(mlrt_group_start(w) == MLRT_OK, "group_start");
	for (int i = 0; i < n; i++) {
		buf[i] = malloc(sizeof(float) * (size_t)(i + 1));
		for (int k = 0; k <= i; k++)
			buf[i][k] = (float)(rank + i + k);
		CHECK(mlrt_iallreduce(w, buf[i], buf[i], (size_t)i + 1, MLRT_F32, MLRT_SUM, &req[i]) ==
		              MLRT_OK,
		      "iallreduce %d", i);
	}
	if (grouped) {
		CHECK(mlrt_wait(req[0]) == MLRT_ERR_INVALID, "wait inside an open group must refuse");
		CHECK(mlrt_group_end(w) == MLRT_OK, "group_end");
	}
	for (int i = 0; i < n; i++) {
		int done = 0, rc = MLRT_OK;

		if (i % 2 == 0) {
			rc = mlrt_wait(req[i]);
		} else {
			while (rc == MLRT_OK && !done)
				rc = mlrt_test(req[i], &done);
		}
		CHECK(rc == MLRT_OK, "request %d: %s", i, mlrt_strerror(rc));
		for (int k = 0; k <= i; k++) {
			float want = (float)(size * (size - 1) / 2 + size * (i + k));

			CHECK(buf[i][k] == want, "request %d element %d: %g, want %g", i, k, buf[i][k],
			      want);
		}
		free(buf[i]);
	}
	after = stats(w);
	*collectives = after.collectives - before.collectives;
	*fused = after.fused_requests - before.fused_requests;
	free(buf);
	free(req);
}

int main(void)
{
	unsigned long long colls, fused;
	mlrt_ctx *ctx;
	mlrt_comm *w;
	int rc = mlrt_init(&ctx);

	if (rc != MLRT_OK)
		return 2;
	w = mlrt_world(ctx);
	rank = mlrt_rank(ctx);
	size = mlrt_size(ctx);

	/* Not grouped: every request is its own collective. */
	many_small(w, 20, 0, &colls, &fused);
	CHECK(colls == 20 && fused == 0, "ungrouped: %llu collectives, %llu fused", colls, fused);

	/* Grouped: all 50 fit in one fusion buffer. */
	many_small(w, 50, 1, &colls, &fused);
	CHECK(colls == 1 && fused == 49, "grouped: %llu collectives, %llu fused", colls, fused);

	/* A 16-byte threshold splits a group of 1..10 floats into {1,2} (12
	 * bytes), then each alone: 9 collectives, one request fused. */
	mlrt_comm_set_fusion_bytes(w, 16);
	many_small(w, 10, 1, &colls, &fused);
	CHECK(colls == 9 && fused == 1, "threshold 16: %llu collectives, %llu fused", colls, fused);
	mlrt_comm_set_fusion_bytes(w, 64u << 20);

	/* Different ops and collectives in one group: only neighbours of the
	 * same dtype and op fuse; order is kept. */
	{
		float a[4] = {1, 2, 3, 4}, b[4] = {1, 1, 1, 1};
		int32_t m[3] = {rank, -rank, 7};
		uint8_t bc[5] = {0};
		mlrt_request *r[4];
		mlrt_comm_stats before = stats(w), after;

		if (rank == 0)
			memcpy(bc, "hello", 5);
		mlrt_group_start(w);
		mlrt_iallreduce(w, a, a, 4, MLRT_F32, MLRT_SUM, &r[0]);
		mlrt_iallreduce(w, m, m, 3, MLRT_I32, MLRT_MAX, &r[1]);
		mlrt_ibroadcast(w, bc, 5, MLRT_U8, 0, &r[2]);
		mlrt_iallreduce(w, b, b, 4, MLRT_F32, MLRT_SUM, &r[3]);
		mlrt_group_end(w);
		for (int i = 0; i < 4; i++)
			CHECK(mlrt_wait(r[i]) == MLRT_OK, "mixed request %d", i);
		after = stats(w);
		CHECK(a[3] == 4.0f * (float)size && b[0] == (float)size, "mixed sums");
		CHECK(m[0] == size - 1 && m[1] == 0 && m[2] == 7, "mixed max");
		CHECK(memcmp(bc, "hello", 5) == 0, "mixed broadcast");
		CHECK(after.collectives - before.collectives == 4 &&
		              after.fused_requests == before.fused_requests,
		      "mixed: nothing fuses across a different collective");
	}

	/* Blocking collectives take their turn behind queued requests. */
	{
		double big[1000];
		mlrt_request *r;

		for (int i = 0; i < 1000; i++)
			big[i] = rank;
		CHECK(mlrt_iallreduce(w, big, big, 1000, MLRT_F64, MLRT_MAX, &r) == MLRT_OK, "queue");
		CHECK(mlrt_barrier(w) == MLRT_OK, "barrier behind a request");
		CHECK(mlrt_wait(r) == MLRT_OK && big[999] == size - 1, "request before the barrier");
		CHECK(mlrt_iallreduce(w, NULL, big, 5, MLRT_F64, MLRT_SUM, &r) == MLRT_ERR_INVALID &&
		              r == NULL,
		      "bad arguments are refused at once");
	}
	if (failures == 0 && rank == 0)
		printf("async_check: %d ranks: ok\n", size);
	mlrt_finalize(ctx);
	return failures == 0 ? 0 : 1;
}
