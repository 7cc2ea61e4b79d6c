/* CUDA C kernels compiled as C++ and run on the CPU (tests/gpu/emu).
 * launch.py turns each launch  k<<<grid, block>>>(args)  of a .cu file
 * into  emu_kernel(k, grid, block)(args)  and puts this header first.
 *
 * A launch runs every (block, thread) of its 1-D grid in turn, with
 * blockIdx, threadIdx, blockDim and gridDim set.  That gives the GPU's
 * result only for kernels whose threads do not talk to each other (no
 * __shared__, __syncthreads, atomics or warp shuffles: launch.py refuses a
 * file that uses them) and do not read what another thread writes.
 * A pointer argument must be device memory (emu.h) or the launch aborts. */
#ifndef EMU_KERNEL_EMU_HPP
#define EMU_KERNEL_EMU_HPP

#include <math.h>
#include <stdint.h>

#include "emu.h"

#define __global__ static

struct emu_dim3 {
	unsigned int x, y, z;
	emu_dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_)
	{
	}
};

static emu_dim3 blockIdx, threadIdx, blockDim, gridDim;

template <class T> static void emu_check_arg(T *p)
{
	if (p != nullptr && !emu_device_range(p, nullptr))
		emu_violation("kernel launch", "a pointer argument is not device memory");
}

template <class T> static void emu_check_arg(T)
{
}

template <class... P> struct emu_launch {
	void (*kernel)(P...);
	emu_dim3 grid, block;
	size_t shared_bytes;

	void operator()(P... args) const
	{
		emu_launches++;
		if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1 || shared_bytes != 0)
			emu_violation("kernel launch", "only 1-D launches without dynamic shared "
			                               "memory are emulated");
		/* What the device refuses: the launch does not run. */
		if (grid.x == 0 || grid.x > 2147483647u || block.x == 0 || block.x > 1024) {
			emu_launch_failed(cudaErrorInvalidConfiguration);
			return;
		}
		(emu_check_arg(args), ...);
		emu_before_launch();
		gridDim = grid;
		blockDim = block;
		for (unsigned int b = 0; b < grid.x; b++)
			for (unsigned int t = 0; t < block.x; t++) {
				blockIdx = emu_dim3(b);
				threadIdx = emu_dim3(t);
				kernel(args...);
			}
	}
};

template <class... P>
static emu_launch<P...> emu_kernel(void (*kernel)(P...), emu_dim3 grid, emu_dim3 block,
                                   size_t shared_bytes = 0, cudaStream_t stream = nullptr)
{
	(void)stream; /* one stream: everything runs in order */
	return emu_launch<P...>{kernel, grid, block, shared_bytes};
}

#endif
