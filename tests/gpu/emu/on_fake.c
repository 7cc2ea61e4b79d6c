/* emu.h's calls over the preloaded fake CUDA (tests/gpu/fake), for the
 * test mlp_gpu_fake: examples/mlp_gpu whole, its kernels run by
 * kernel_emu.hpp, its cuBLAS by fake_cublas.c, its CUDA runtime calls
 * answered by tests/gpu/fake, and its collectives and checkpoints through
 * libmlrt's device paths.  Built against the real CUDA headers, as
 * tests/gpu/fake is. */
#include "emu.h"
#include "fake.h"

long emu_launches;

int emu_device_range(const void *p, size_t *avail)
{
	return fake_device_range(p, avail) >= 0;
}

void emu_violation(const char *what, const char *why)
{
	fake_misuse("%s: %s", what, why);
}

/* A kernel on the legacy default stream follows the work queued on every
 * blocking stream. */
void emu_before_launch(void)
{
	cudaDeviceSynchronize();
}

void emu_launch_failed(cudaError_t e)
{
	fake_launch_failed(e);
}
