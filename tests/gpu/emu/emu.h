/* The CPU emulation's own calls (fake_cuda.c), beside the stand-in CUDA
 * API of include/: for kernel_emu.hpp and the test.  One thread. */
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

/* A launch failed: cudaGetLastError returns e next. */
void emu_launch_failed(cudaError_t e);

/* Device allocations not yet freed. */
int emu_live_blocks(void);

/* Kernels launched and cublasSgemm calls made so far. */
extern long emu_launches, emu_gemms;

#ifdef __cplusplus
}
#endif
#endif
