/* The allreduce benchmark's driver, shared by bench_allreduce (mlrt) and
 * mpi_allreduce (Open MPI), so that both sides allocate, check, time and
 * print in exactly the same way and differ only in the calls below.
 *
 * Not thread-safe: one driver per process, called from main. */
#ifndef MLRT_BENCH_ALLREDUCE_DRIVER_H
#define MLRT_BENCH_ALLREDUCE_DRIVER_H

#include <stddef.h>

/* The collectives the driver needs, over every rank of the job.  Each
 * member blocks until this rank's part is done, returns 0 on success or
 * the backend's own nonzero error code (turned into text by strerror),
 * and may not be NULL.  Buffers stay owned by the caller. */
struct ar_backend {
	const char *name; /* "mlrt", "MPI": printed in the header line */
	int rank, size;
	void *state; /* passed back to every call */

	/* recv[0..count) = sum over ranks of send[0..count), float32;
	 * send != recv. */
	int (*allreduce_f32_sum)(void *state, const float *send, float *recv, size_t count);
	/* buf[0..n) = elementwise max over ranks, float64, in place (the
	 * backend may use a scratch buffer of its own). */
	int (*max_f64)(void *state, double *buf, size_t n);
	/* Every rank waits for every other. */
	int (*barrier)(void *state);
	/* Text for an error code returned by the members above. */
	const char *(*strerror)(int rc);

	/* Device memory, for -d (the collectives then get device buffers).
	 * NULL when the backend has none: -d is refused.  dev_alloc returns
	 * bytes of device memory or NULL (having said why on stderr);
	 * dev_put / dev_get copy host to device / device to host, blocking,
	 * returning 0 or an error code for strerror; dev_free takes NULL. */
	void *(*dev_alloc)(void *state, size_t bytes);
	int (*dev_put)(void *state, void *dst, const void *src, size_t bytes);
	int (*dev_get)(void *state, void *dst, const void *src, size_t bytes);
	void (*dev_free)(void *state, void *p);
};

/* Parse the command line (see usage in allreduce_driver.c), run the sweep
 * and print the table on rank 0's stdout.  Returns the exit status for
 * main: 0, 1 after a failed collective or a wrong result (with a message
 * on stderr), 2 for bad usage. */
int ar_bench_main(const struct ar_backend *b, int argc, char **argv);

#endif
