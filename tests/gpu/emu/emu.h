/* The CPU emulation's own calls, beside the stand-in CUDA API of
 * include/: for kernel_emu.hpp, fake_cublas.c and the test.  Defined by
 * fake_cuda.c for the unit test (one thread), and by on_fake.c over the
 * preloaded tests/gpu/fake for the whole program. */
#ifndef EMU_EMU_H
#define EMU_EMU_H

#include <stddef.h>

#include "cuda_runtime_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when p lies inside a live cudaMalloc'd block; *avail (may be NULL)
 * gets the bytes from p to the block's end. */
int emu_device_range(const void *p, size_t *avail);

/* Print "emu: <what>: <why>" and abort: the code under test broke a rule
 * of the CUDA or cuBLAS API that the real ones would not report (a host
 * pointer handed to a kernel, a gemm reading past an allocation). */
void emu_violation(const char *what, const char *why);

/* Abort (emu_violation) unless p is device memory with bytes left in its
 * block (dev), or is not device memory (!dev). */
void emu_need(const void *p, size_t bytes, int dev, const char *what);

/* Before a kernel runs: it follows the work queued before it. */
void emu_before_launch(void);

/* A launch failed: cudaGetLastError returns e next. */
void emu_launch_failed(cudaError_t e);

/* Device allocations not yet freed (fake_cuda.c only). */
int emu_live_blocks(void);

/* Kernels launched and cublasSgemm calls made so far. */
extern long emu_launches, emu_gemms;

#ifdef __cplusplus
}
#endif
#endif
