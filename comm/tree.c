/* Latency algorithms: few steps, whole (small) messages per step. */
#include <string.h>

#include "comm/algo.h"
#include "runtime/common.h"
#include "runtime/reduce.h"

static int mod(int a, int n)
{
	return ((a % n) + n) % n;
}

/* Recursive doubling on the largest power of two p2 <= size.  The first
 * 2*rem ranks (rem = size - p2) pair up first: each even one hands its
 * data to the odd one above it and gets the result back at the end.
 * Partners combine as op(lower rank's data, higher rank's data), so both
 * compute the same bits.  The message must fit in scratch. */
int mlrti_allreduce_rd(mlrt_comm *c, const void *send, void *recv, size_t count, mlrt_dtype t,
                       mlrt_op op)
{
	const size_t bytes = count * mlrt_dtype_size(t);
	const int n = c->size, r = c->rank;
	int p2 = 1, rem, vr, rc = MLRT_OK;
	void *tmp = c->scratch;

	while (p2 * 2 <= n)
		p2 *= 2;
	rem = n - p2;
	if (send != recv)
		memcpy(recv, send, bytes);

	if (r < 2 * rem) {
		if (r % 2 == 0) {
			mlrti_xfer x = {.to = r + 1, .sbuf = recv, .slen = bytes, .from = -1};

			rc = mlrti_exchange(c, &x);
			vr = -1; /* sits out until the result comes back */
		} else {
			mlrti_xfer x = {.to = -1, .from = r - 1, .rbuf = tmp, .rlen = bytes};

			rc = mlrti_exchange(c, &x);
			if (rc == MLRT_OK)
				rc = mlrti_reduce3(recv, tmp, recv, count, t, op);
			vr = r / 2;
		}
	} else {
		vr = r - rem;
	}
	for (int mask = 1; vr >= 0 && mask < p2 && rc == MLRT_OK; mask <<= 1) {
		int pv = vr ^ mask, peer = pv < rem ? pv * 2 + 1 : pv + rem;
		mlrti_xfer x = {.to = peer, .sbuf = recv, .slen = bytes,
		                .from = peer, .rbuf = tmp, .rlen = bytes};

		rc = mlrti_exchange(c, &x);
		if (rc == MLRT_OK)
			rc = pv < vr ? mlrti_reduce3(recv, tmp, recv, count, t, op)
			             : mlrti_reduce3(recv, recv, tmp, count, t, op);
	}
	/* Finish (AVG) before the result goes back to the ranks that sat out,
	 * so that they get exactly these bits. */
	if (rc == MLRT_OK && vr >= 0)
		rc = mlrti_reduce_finish(recv, count, t, op, n);
	if (rc == MLRT_OK && r < 2 * rem) {
		mlrti_xfer x = {.to = -1, .from = -1};

		if (r % 2 == 0)
			x.from = r + 1, x.rbuf = recv, x.rlen = bytes;
		else
			x.to = r - 1, x.sbuf = recv, x.slen = bytes;
		rc = mlrti_exchange(c, &x);
	}
	return rc;
}

/* Binomial tree from the root: in round k, ranks that have the data send
 * it 2^k ranks further. */
int mlrti_broadcast_binomial(mlrt_comm *c, void *buf, size_t bytes, int root)
{
	const int n = c->size, v = mod(c->rank - root, n);
	int mask = 1, rc = MLRT_OK;

	/* Receive from the parent: v with its highest set bit cleared. */
	while (mask < n) {
		if (v & mask) {
			mlrti_xfer x = {.to = -1, .from = mod(v - mask + root, n), .rbuf = buf,
			                .rlen = bytes};

			rc = mlrti_exchange(c, &x);
			break;
		}
		mask <<= 1;
	}
	/* Send to the children: v + 2^k for every 2^k below that bit. */
	for (mask >>= 1; mask > 0 && rc == MLRT_OK; mask >>= 1) {
		if (v + mask < n) {
			mlrti_xfer x = {.to = mod(v + mask + root, n), .sbuf = buf, .slen = bytes,
			                .from = -1};

			rc = mlrti_exchange(c, &x);
		}
	}
	return rc;
}

/* Dissemination: round k, signal rank+2^k and hear from rank-2^k. */
int mlrti_barrier_dissemination(mlrt_comm *c)
{
	const int n = c->size;
	char out = 1, in = 0;
	int rc = MLRT_OK;

	for (int k = 1; k < n && rc == MLRT_OK; k <<= 1) {
		mlrti_xfer x = {.to = mod(c->rank + k, n), .sbuf = &out, .slen = 1,
		                .from = mod(c->rank - k, n), .rbuf = &in, .rlen = 1};

		rc = mlrti_exchange(c, &x);
	}
	return rc;
}

/* Halving-doubling (Rabenseifner): recursive halving reduce-scatter, then
 * recursive doubling allgather, on the largest power of two p2 <= size,
 * with the first 2*rem ranks folded in pairs as in mlrti_allreduce_rd.
 * 2 log2(p2) steps instead of the ring's 2(n-1), the same bytes.  Each
 * element is reduced along one fixed tree (lower rank's data first) and
 * finished by one rank, so every rank gets the same bits.
 *
 * Every send may go by reference (mlrti_xfer.lend): a block sent is never
 * written again, except the blocks given away while halving, which are
 * written when the same partner sends them back finished, after it has
 * read them. */
int mlrti_allreduce_hd(mlrt_comm *c, const void *send, void *recv, size_t count, mlrt_dtype t,
                       mlrt_op op)
{
	const size_t es = mlrt_dtype_size(t);
	const int n = c->size, r = c->rank;
	size_t keep_lo[32], keep_hi[32], give_lo[32], give_hi[32], lo = 0, hi = count;
	int p2 = 1, rem, vr, steps = 0, rc = MLRT_OK;
	const char *src = send;
	char *rb = recv;

	while (p2 * 2 <= n)
		p2 *= 2;
	rem = n - p2;
	if (r < 2 * rem) {
		if (r % 2 == 0) {
			mlrti_xfer x = {.to = r + 1, .sbuf = send, .slen = count * es, .from = -1,
			                .lend = 1};

			rc = mlrti_exchange(c, &x);
			vr = -1;
		} else {
			mlrti_reduce_ctx h = {rb, send, 0, t, op, es};
			mlrti_xfer x = {.to = -1, .from = r - 1, .rlen = count * es,
			                .on_piece = mlrti_reduce_piece, .arg = &h, .elem_size = es};

			rc = mlrti_exchange(c, &x);
			src = rb;
			vr = r / 2;
		}
	} else {
		vr = r - rem;
	}
	/* Recursive halving: keep one half, send the other, reduce the
	 * partner's copy of the kept half into it. */
	for (int mask = p2 / 2; vr >= 0 && mask > 0 && rc == MLRT_OK; mask /= 2, steps++) {
		int pv = vr ^ mask, peer = pv < rem ? pv * 2 + 1 : pv + rem, lower = !(vr & mask);
		size_t mid = lo + (hi - lo) / 2;
		size_t klo = lower ? lo : mid, khi = lower ? mid : hi;
		size_t glo = lower ? mid : lo, ghi = lower ? hi : mid;
		mlrti_reduce_ctx h = {rb + klo * es, src + klo * es, pv > vr, t, op, es};
		mlrti_xfer x = {.to = peer, .sbuf = src + glo * es, .slen = (ghi - glo) * es,
		                .from = peer, .rlen = (khi - klo) * es,
		                .on_piece = mlrti_reduce_piece, .arg = &h, .elem_size = es,
		                .lend = 1};

		rc = mlrti_exchange(c, &x);
		keep_lo[steps] = klo, keep_hi[steps] = khi, give_lo[steps] = glo, give_hi[steps] = ghi;
		lo = klo, hi = khi;
		src = rb;
	}
	if (rc == MLRT_OK && vr >= 0)
		rc = mlrti_reduce_finish(rb + lo * es, hi - lo, t, op, n);
	/* Recursive doubling: swap blocks back up the same levels. */
	for (int mask = 1, k = steps - 1; vr >= 0 && k >= 0 && rc == MLRT_OK; mask *= 2, k--) {
		int pv = vr ^ mask, peer = pv < rem ? pv * 2 + 1 : pv + rem;
		mlrti_xfer x = {.to = peer, .sbuf = rb + keep_lo[k] * es,
		                .slen = (keep_hi[k] - keep_lo[k]) * es, .from = peer,
		                .rbuf = rb + give_lo[k] * es, .rlen = (give_hi[k] - give_lo[k]) * es,
		                .elem_size = es, .lend = 1};

		rc = mlrti_exchange(c, &x);
	}
	if (rc == MLRT_OK && r < 2 * rem) {
		mlrti_xfer x = {.to = -1, .from = -1, .lend = 1};

		if (r % 2 == 0)
			x.from = r + 1, x.rbuf = rb, x.rlen = count * es;
		else
			x.to = r - 1, x.sbuf = rb, x.slen = count * es;
		rc = mlrti_exchange(c, &x);
	}
	return rc;
}
