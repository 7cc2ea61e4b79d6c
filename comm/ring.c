/* Ring algorithms.
 *
 * The message is cut into `size` segments, one per rank (counts that do
 * not divide evenly give the first segments one element more), and every
 * segment into columns of at most chunk_bytes.  For each column the ring
 * runs its size-1 steps; each step sends to the right neighbour while
 * receiving from the left one, and the kernel or the shared-memory ring
 * keeps the next bytes flowing while this rank reduces.  Reductions are
 * done once per segment, always in the same order (left accumulator op
 * own data), so every rank ends with the same bits, run after run. */
#include <stdlib.h>
#include <string.h>

#include "comm/algo.h"
#include "runtime/common.h"
#include "runtime/reduce.h"

typedef struct segments {
	size_t count, base, extra; /* count elements; segment j has base + (j < extra) */
} segments;

static size_t seg_off(const segments *s, int j)
{
	size_t uj = (size_t)j;
	return uj * s->base + (uj < s->extra ? uj : s->extra);
}

static size_t seg_len(const segments *s, int j)
{
	return s->base + ((size_t)j < s->extra);
}

/* Column k (of col elements) of segment j: first element and length. */
static size_t col_lo(const segments *s, int j, size_t k, size_t col)
{
	size_t len = seg_len(s, j), skip = k * col;

	return seg_off(s, j) + (skip < len ? skip : len);
}

static size_t col_n(const segments *s, int j, size_t k, size_t col)
{
	size_t len = seg_len(s, j), skip = k * col;

	return skip >= len ? 0 : (len - skip < col ? len - skip : col);
}

static int mod(int a, int n)
{
	return ((a % n) + n) % n;
}

/* A ring: n members, this rank at position me; ranks[i] is the
 * communicator rank at position i (NULL: position i is rank i).  lend:
 * the ring's sends may go by reference (mlrti_xfer.lend).  That holds for
 * a ring allreduce on its own: a segment sent is next written when its
 * final value comes round, which the right neighbour can only have helped
 * compute after reading what it was sent. */
typedef struct ring {
	const int *ranks;
	int n;
	int me;
	int lend;
} ring;

/* Communicator rank at position me + delta. */
static int ring_peer(const ring *g, int delta)
{
	int i = mod(g->me + delta, g->n);

	return g->ranks != NULL ? g->ranks[i] : i;
}

static ring world_ring(const mlrt_comm *c)
{
	return (ring){NULL, c->size, c->rank, 1};
}

void mlrti_reduce_piece(void *arg, const void *data, size_t off, size_t len)
{
	mlrti_reduce_ctx *r = arg;
	size_t n = len / r->es;

	if (r->own_first)
		mlrti_reduce3(r->out + off, r->own + off, data, n, r->t, r->op);
	else
		mlrti_reduce3(r->out + off, data, r->own + off, n, r->t, r->op);
}

/* Reduce-scatter of column k over segments: afterwards this rank holds
 * the fully reduced column of segment r+1 in rb (out of place: sb holds
 * the input and is only read). */
static int ring_reduce_scatter_col(mlrt_comm *c, const ring *g, const segments *s, size_t k,
                                   size_t col, const char *sb, char *rb, mlrt_dtype t, mlrt_op op)
{
	const size_t es = mlrt_dtype_size(t);
	const int n = g->n, r = g->me;
	int rc = MLRT_OK;

	for (int step = 0; step < n - 1 && rc == MLRT_OK; step++) {
		int sj = mod(r - step, n), rj = mod(r - step - 1, n);
		mlrti_reduce_ctx red = {rb + col_lo(s, rj, k, col) * es, sb + col_lo(s, rj, k, col) * es,
		                        0, t, op, es};
		mlrti_xfer x = {
			.to = ring_peer(g, 1),
			.sbuf = (step == 0 ? sb : rb) + col_lo(s, sj, k, col) * es,
			.slen = col_n(s, sj, k, col) * es,
			.from = ring_peer(g, -1),
			.rlen = col_n(s, rj, k, col) * es,
			.on_piece = mlrti_reduce_piece,
			.arg = &red,
			.elem_size = es,
			.lend = g->lend,
		};
		rc = mlrti_exchange(c, &x);
	}
	return rc;
}

/* Allgather of column k: segment `have` is complete here; afterwards all
 * are.  Step i passes on what arrived at step i-1. */
static int ring_allgather_col(mlrt_comm *c, const ring *g, const segments *s, size_t k,
                              size_t col, int have, char *rb, size_t es)
{
	const int n = g->n;
	int rc = MLRT_OK;

	for (int step = 0; step < n - 1 && rc == MLRT_OK; step++) {
		int sj = mod(have - step, n), rj = mod(have - step - 1, n);
		mlrti_xfer x = {
			.to = ring_peer(g, 1),
			.sbuf = rb + col_lo(s, sj, k, col) * es,
			.slen = col_n(s, sj, k, col) * es,
			.from = ring_peer(g, -1),
			.rbuf = rb + col_lo(s, rj, k, col) * es,
			.rlen = col_n(s, rj, k, col) * es,
			.elem_size = es,
			.lend = g->lend,
		};
		rc = mlrti_exchange(c, &x);
	}
	return rc;
}

/* Ring allreduce over g of count elements at recv (send: the input, may
 * equal recv).  AVG divides by `divisor` (the ring size, or the world size
 * when this ring is one stage of a larger reduction). */
static int allreduce_on(mlrt_comm *c, const ring *g, const void *send, void *recv, size_t count,
                        mlrt_dtype t, mlrt_op op, int divisor)
{
	const size_t es = mlrt_dtype_size(t), col = c->chunk_bytes / es;
	const int own = mod(g->me + 1, g->n);
	const segments s = {count, count / (size_t)g->n, count % (size_t)g->n};
	int rc = MLRT_OK;

	for (size_t k = 0; k * col < seg_len(&s, 0) && rc == MLRT_OK; k++) {
		rc = ring_reduce_scatter_col(c, g, &s, k, col, send, recv, t, op);
		if (rc == MLRT_OK)
			rc = mlrti_reduce_finish((char *)recv + col_lo(&s, own, k, col) * es,
			                         col_n(&s, own, k, col), t, op, divisor);
		if (rc == MLRT_OK)
			rc = ring_allgather_col(c, g, &s, k, col, own, recv, es);
	}
	return rc;
}

int mlrti_allreduce_ring(mlrt_comm *c, const void *send, void *recv, size_t count, mlrt_dtype t,
                         mlrt_op op)
{
	ring g = world_ring(c);

	return allreduce_on(c, &g, send, recv, count, t, op, c->size);
}

#define PAIR_LEND_MIN_BYTES (512 * 1024)

/* Two ranks, out of place: each sends its whole input to the other while
 * reducing the other's into recv as it arrives (rank 0's data first on
 * both).  One exchange where the ring takes two, the second waiting for
 * the first to drain.  In place a piece could be reduced into the buffer
 * before this rank had sent it, so the caller takes the ring there. */
int mlrti_allreduce_pair(mlrt_comm *c, const void *send, void *recv, size_t count, mlrt_dtype t,
                         mlrt_op op)
{
	const size_t es = mlrt_dtype_size(t);
	const int peer = 1 - c->rank;
	mlrti_reduce_ctx red = {recv, send, c->rank == 0, t, op, es};
	mlrti_xfer x = {
		.to = peer,
		.sbuf = send,
		.slen = count * es,
		.from = peer,
		.rlen = count * es,
		.on_piece = mlrti_reduce_piece,
		.arg = &red,
		.elem_size = es,
		/* The input is only read.  Lending costs an acknowledgement at
		 * the end, which below PAIR_LEND_MIN_BYTES two ranks with a
		 * core each do not earn back (docs/benchmarks.md). */
		.lend = count * es >= PAIR_LEND_MIN_BYTES,
	};
	int rc = mlrti_exchange(c, &x);

	return rc == MLRT_OK ? mlrti_reduce_finish(recv, count, t, op, 2) : rc;
}

/* The two rings of a host-major layout: the ranks of this host, and the
 * ranks with this rank's local index on every host.  Works when every host
 * runs the same number of ranks; *ok = 0 otherwise. */
static int host_rings(const mlrt_comm *c, int *local, int *cross, ring *gl, ring *gx, int *ok)
{
	int nl = 0, nx = 0, me_l = -1;

	*ok = 0;
	for (int r = 0; r < c->size; r++) {
		if (strcmp(c->hosts[r], c->hosts[c->rank]) == 0) {
			if (r == c->rank)
				me_l = nl;
			local[nl++] = r;
		}
	}
	/* Host h's member at local index me_l: walk the hosts in order of
	 * their first rank. */
	for (int r = 0; r < c->size; r++) {
		int first = 1, idx = 0, count = 0;

		for (int q = 0; q < r && first; q++)
			first = strcmp(c->hosts[q], c->hosts[r]) != 0;
		if (!first)
			continue;
		for (int q = 0; q < c->size; q++) {
			if (strcmp(c->hosts[q], c->hosts[r]) != 0)
				continue;
			if (idx == me_l)
				cross[nx] = q;
			idx++;
			count++;
		}
		if (count != nl)
			return MLRT_OK; /* uneven hosts */
		if (cross[nx] == c->rank)
			gx->me = nx;
		nx++;
	}
	/* Not lent: the hierarchical allreduce finishes (AVG) a part right
	 * after the cross-host ring has sent it. */
	*gl = (ring){local, nl, me_l, 0};
	gx->ranks = cross;
	gx->n = nx;
	gx->lend = 0;
	*ok = nl > 1 && nx > 1;
	return MLRT_OK;
}

/* Hierarchical allreduce for ranks on several hosts: reduce-scatter within
 * the host (shared memory), allreduce of this rank's part across hosts
 * (one ring per local index, all running at once), allgather within the
 * host.  Each part is finished once, so all ranks get the same bits. */
int mlrti_allreduce_hier(mlrt_comm *c, const void *send, void *recv, size_t count,
                         mlrt_dtype t, mlrt_op op, int *used)
{
	const size_t es = mlrt_dtype_size(t), col = c->chunk_bytes / es;
	const mlrt_op sum_op = op == MLRT_AVG ? MLRT_SUM : op;
	int *local = malloc(sizeof(int) * (size_t)c->size * 2), ok, own, rc;
	ring gl, gx;

	*used = 0;
	if (local == NULL)
		return MLRT_ERR_NOMEM;
	rc = host_rings(c, local, local + c->size, &gl, &gx, &ok);
	if (rc != MLRT_OK || !ok) {
		free(local);
		return rc;
	}
	*used = 1;
	own = mod(gl.me + 1, gl.n);
	mlrt_log(MLRT_LOG_DEBUG, "allreduce #%u: hierarchical, %d hosts x %d ranks", c->seq, gx.n,
	         gl.n);
	{
		const segments s = {count, count / (size_t)gl.n, count % (size_t)gl.n};

		for (size_t k = 0; k * col < seg_len(&s, 0) && rc == MLRT_OK; k++) {
			size_t lo = col_lo(&s, own, k, col), n = col_n(&s, own, k, col);
			char *part = (char *)recv + lo * es;

			rc = ring_reduce_scatter_col(c, &gl, &s, k, col, send, recv, t, sum_op);
			if (rc == MLRT_OK)
				rc = allreduce_on(c, &gx, part, part, n, t, sum_op, gx.n);
			if (rc == MLRT_OK)
				rc = mlrti_reduce_finish(part, n, t, op, c->size);
			if (rc == MLRT_OK)
				rc = ring_allgather_col(c, &gl, &s, k, col, own, recv, es);
		}
	}
	free(local);
	return rc;
}

int mlrti_allgather_ring(mlrt_comm *c, void *recv, size_t bytes)
{
	const int n = c->size;
	const segments s = {bytes * (size_t)n, bytes, 0};
	ring g = world_ring(c);
	int rc = MLRT_OK;

	for (size_t k = 0; k * c->chunk_bytes < bytes && rc == MLRT_OK; k++)
		rc = ring_allgather_col(c, &g, &s, k, c->chunk_bytes, c->rank, recv, 1);
	return rc;
}

/* Reduce-scatter with bounded memory: the running sum of the column in
 * flight lives in scratch (two halves, one being sent while the other
 * receives), and the last step writes straight into recv. */
int mlrti_reduce_scatter_ring(mlrt_comm *c, const void *send, void *recv, size_t count,
                              mlrt_dtype t, mlrt_op op)
{
	const size_t es = mlrt_dtype_size(t), col = c->chunk_bytes / es;
	const int n = c->size, r = c->rank;
	const char *sb = send;
	char *acc[2] = {c->scratch, (char *)c->scratch + c->chunk_bytes};
	int rc = MLRT_OK;

	for (size_t lo = 0; lo < count && rc == MLRT_OK; lo += col) {
		size_t len = count - lo < col ? count - lo : col;

		/* Step i sends the column of segment r-i-1 (own data at step 0,
		 * the running sum after) and receives that of segment r-i-2. */
		for (int step = 0; step < n - 1 && rc == MLRT_OK; step++) {
			int sj = mod(r - step - 1, n), rj = mod(r - step - 2, n);
			int last = step == n - 2;
			mlrti_reduce_ctx red = {last ? (char *)recv + lo * es : acc[step % 2],
			                        sb + ((size_t)rj * count + lo) * es, 0, t, op, es};
			mlrti_xfer x = {
				.to = mod(r + 1, n),
				.sbuf = step == 0 ? sb + ((size_t)sj * count + lo) * es : acc[(step + 1) % 2],
				.slen = len * es,
				.from = mod(r - 1, n),
				.rlen = len * es,
				.on_piece = mlrti_reduce_piece,
				.arg = &red,
				.elem_size = es,
			};
			rc = mlrti_exchange(c, &x);
		}
		if (rc == MLRT_OK)
			rc = mlrti_reduce_finish((char *)recv + lo * es, len, t, op, n);
	}
	return rc;
}

/* Pipelined chain from the root: rank root+i receives chunk k from its
 * left neighbour while passing chunk k-1 on to its right one. */
int mlrti_broadcast_chain(mlrt_comm *c, void *buf, size_t bytes, int root)
{
	const int n = c->size, v = mod(c->rank - root, n);
	const size_t ck = c->chunk_bytes, nchunks = (bytes + ck - 1) / ck;
	char *b = buf;
	int rc = MLRT_OK;

	for (size_t k = 0; k <= nchunks && rc == MLRT_OK; k++) {
		/* Chunk k arrives (k < nchunks); chunk k-1 leaves (k > 0). */
		int recv_now = v > 0 && k < nchunks, send_now = v < n - 1 && k > 0;
		size_t rlo = k * ck, slo = (k - 1) * ck;
		/* Lent: a chunk is written once, then only passed on. */
		mlrti_xfer x = {.to = -1, .from = -1, .elem_size = 1, .lend = 1};

		if (v == 0) {
			/* The root has every chunk: it sends chunk k at step k. */
			send_now = k < nchunks;
			slo = k * ck;
		}
		if (send_now) {
			x.to = mod(c->rank + 1, n);
			x.sbuf = b + slo;
			x.slen = bytes - slo < ck ? bytes - slo : ck;
		}
		if (recv_now) {
			x.from = mod(c->rank - 1, n);
			x.rbuf = b + rlo;
			x.rlen = bytes - rlo < ck ? bytes - rlo : ck;
		}
		if (x.to >= 0 || x.from >= 0)
			rc = mlrti_exchange(c, &x);
	}
	return rc;
}
