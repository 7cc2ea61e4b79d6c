/* The direct allreduce, for communicators whose ranks all share one host
 * and are linked by shared memory (docs/shm.md, "The direct allreduce").
 *
 * The message goes in columns of at most one area buffer.  For each,
 * every rank copies its part of the input into its own area and says so
 * (`arrived`); once every rank has, each reduces its slice of the column
 * from all the areas, puts the result back in its area (`reduced`) and,
 * once every rank has, copies the other slices from theirs.  Two waits
 * per column, whatever the number of ranks, and every byte is read once,
 * where a ring passes it through n-1 steps.  Each element is reduced in
 * rank order by one rank, so every rank gets the same bits, run after run.
 *
 * Steps alternate between the two buffers of each area: a rank refills
 * buffer b at step k+2 only after every rank arrived at step k+1, and a
 * rank arrives there only after it has finished reading step k. */
#include <stdatomic.h>
#include <string.h>

#include "comm/algo.h"
#include "comm/shm.h"
#include "runtime/common.h"
#include "runtime/reduce.h"

enum { ARRIVED, REDUCED };

/* Results of messages this long are copied out with streaming stores
 * (measured with 4 ranks: 1.2-1.5x at 2-8 MiB, even at 1 MiB). */
#define STREAM_MIN ((size_t)1 << 20)

static const char *kind_dtype(const mlrti_shm_meta *m)
{
	return mlrt_dtype_name((mlrt_dtype)(m->kind >> 8));
}

static const char *kind_op(const mlrti_shm_meta *m)
{
	return mlrt_op_name((mlrt_op)(m->kind & 0xff));
}

static int disagree(mlrt_comm *c, int r, const mlrti_shm_meta *got, const mlrti_shm_meta *want)
{
	mlrt_log(MLRT_LOG_ERROR,
	         "comm: rank %d entered collective #%u with %llu bytes of %s %s, but rank %d "
	         "entered collective #%u with %llu bytes of %s %s: the ranks disagree on the "
	         "collective, its count, dtype or op",
	         r, got->seq, (unsigned long long)got->bytes, kind_dtype(got), kind_op(got),
	         c->rank, want->seq, (unsigned long long)want->bytes, kind_dtype(want),
	         kind_op(want));
	return mlrti_comm_fail(c, MLRT_ERR_PROTOCOL);
}

/* Wait until every other rank's counter `which` reached step, bounded by
 * the communicator's timeout; on arrival, check that it is in the same
 * collective (its meta for buffer b). */
static int wait_all(mlrt_comm *c, int which, uint64_t step, int b, const mlrti_shm_meta *want)
{
	int64_t deadline = mlrti_now_ms() + c->timeout_ms;

	for (int i = 1; i < c->size; i++) {
		int r = (c->rank + i) % c->size, rc;
		mlrti_shm_area *a = mlrti_shm_area_of(c, r);
		atomic_uint_least64_t *ctr = which == ARRIVED ? &a->arrived : &a->reduced;
		mlrti_idle idle = {0};

		while (atomic_load_explicit(ctr, memory_order_acquire) < step) {
			rc = atomic_load(&c->failed);
			if (rc != MLRT_OK)
				return rc;
			rc = mlrti_shm_check_peer(c, r);
			if (rc != MLRT_OK)
				return mlrti_comm_fail(c, rc);
			if (mlrti_now_ms() >= deadline)
				return mlrti_timed_out(c, r, "hear from");
			mlrti_idle_step(&idle);
		}
		if (which == ARRIVED) {
			const mlrti_shm_meta *m = &a->meta[b];

			if (m->seq != want->seq || m->kind != want->kind || m->bytes != want->bytes)
				return disagree(c, r, m, want);
		}
	}
	return MLRT_OK;
}

/* out[0..n) = buffer b of rank 0 op rank 1 op ... op rank size-1, from
 * element `at` of the buffers, then finished (AVG divides). */
static void reduce_from_all(mlrt_comm *c, int b, char *out, size_t at, size_t n, mlrt_dtype t,
                            mlrt_op op)
{
	const size_t off = at * mlrt_dtype_size(t);

	mlrti_reduce3(out, mlrti_shm_buf(c, 0, b) + off, mlrti_shm_buf(c, 1, b) + off, n, t, op);
	for (int r = 2; r < c->size; r++)
		mlrti_reduce3(out, out, mlrti_shm_buf(c, r, b) + off, n, t, op);
	mlrti_reduce_finish(out, n, t, op, c->size);
}

/* Rank r's slice of a column of len elements. */
static size_t slice_lo(size_t len, int n, int r)
{
	size_t base = len / (size_t)n, extra = len % (size_t)n, ur = (size_t)r;

	return ur * base + (ur < extra ? ur : extra);
}

static size_t slice_n(size_t len, int n, int r)
{
	return len / (size_t)n + ((size_t)r < len % (size_t)n);
}

int mlrti_allreduce_direct(mlrt_comm *c, const void *send, void *recv, size_t count,
                           mlrt_dtype t, mlrt_op op)
{
	const size_t es = mlrt_dtype_size(t), col = mlrti_shm_buf_bytes(c) / es;
	const int n = c->size, me = c->rank;
	const mlrti_shm_meta want = {c->seq, (uint32_t)t << 8 | (uint32_t)op, count * es};
	void *(*copy_out)(void *, const void *, size_t) =
		count * es >= STREAM_MIN ? mlrti_copy_stream : memcpy;
	mlrti_shm_area *mine = mlrti_shm_area_of(c, me);
	int rc;

	for (size_t lo = 0; lo < count; lo += col) {
		const size_t len = count - lo < col ? count - lo : col;
		const uint64_t step = mlrti_shm_next_step(c);
		const int b = (int)(step & 1);
		char *out = (char *)recv + lo * es;
		uint8_t *buf = mlrti_shm_buf(c, me, b);

		memcpy(buf, (const char *)send + lo * es, len * es);
		mine->meta[b] = want;
		atomic_store_explicit(&mine->arrived, step, memory_order_release);
		rc = wait_all(c, ARRIVED, step, b, &want);
		if (rc != MLRT_OK)
			return rc;
		{
			const size_t at = slice_lo(len, n, me), m = slice_n(len, n, me);

			reduce_from_all(c, b, out + at * es, at, m, t, op);
			memcpy(buf + at * es, out + at * es, m * es);
		}
		atomic_store_explicit(&mine->reduced, step, memory_order_release);
		rc = wait_all(c, REDUCED, step, b, &want);
		if (rc != MLRT_OK)
			return rc;
		for (int i = 1; i < n; i++) {
			const int r = (me + i) % n;
			const size_t at = slice_lo(len, n, r);

			copy_out(out + at * es, mlrti_shm_buf(c, r, b) + at * es, slice_n(len, n, r) * es);
		}
	}
	return MLRT_OK;
}
