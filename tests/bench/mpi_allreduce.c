/* Allreduce benchmark, MPI side: the same driver as bench_allreduce (see
 * allreduce_driver.c) over MPI_COMM_WORLD with MPI_Allreduce, the peer
 * figure measured in the same run by tests/bench/allreduce.sh:
 *
 *   mpirun -np 4 -x GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 \
 *       build/tests/bench/mpi_allreduce -b 4K -e 256M
 *
 * A plain MPI program: it does not link mlrt. */
#include <limits.h>
#include <stdio.h>

#include <mpi.h>

#include "allreduce_driver.h"

static int mpi_sum_f32(void *state, const float *send, float *recv, size_t count)
{
	if (count > INT_MAX)
		return MPI_ERR_COUNT;
	return MPI_Allreduce(send, recv, (int)count, MPI_FLOAT, MPI_SUM, *(MPI_Comm *)state);
}

static int mpi_max_f64(void *state, double *buf, size_t n)
{
	if (n > INT_MAX)
		return MPI_ERR_COUNT;
	return MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_MAX, *(MPI_Comm *)state);
}

static int mpi_wait_all(void *state)
{
	return MPI_Barrier(*(MPI_Comm *)state);
}

static const char *mpi_error_text(int rc)
{
	static char text[MPI_MAX_ERROR_STRING];
	int len = 0;

	if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
		snprintf(text, sizeof(text), "MPI error %d", rc);
	return text;
}

int main(int argc, char **argv)
{
	MPI_Comm world = MPI_COMM_WORLD;
	struct ar_backend b;
	int rank, size, status;

	MPI_Init(&argc, &argv);
	/* Errors come back as return codes, so the driver can say where. */
	MPI_Comm_set_errhandler(world, MPI_ERRORS_RETURN);
	MPI_Comm_rank(world, &rank);
	MPI_Comm_size(world, &size);
	b = (struct ar_backend){
		.name = "MPI",
		.rank = rank,
		.size = size,
		.state = &world,
		.allreduce_f32_sum = mpi_sum_f32,
		.max_f64 = mpi_max_f64,
		.barrier = mpi_wait_all,
		.strerror = mpi_error_text,
	};
	status = ar_bench_main(&b, argc, argv);
	/* Every rank gets the same usage error (2), but after a failure (1)
	 * other ranks may be blocked in a collective, which only an abort
	 * ends. */
	if (status == 1)
		MPI_Abort(world, 1);
	MPI_Finalize();
	return status;
}
