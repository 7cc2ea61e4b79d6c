/* What the fake NCCL (fake_nccl.c) uses of the fake CUDA (fake_cuda.c).
 * Both are built into one library, preloaded into the test's processes;
 * see fake_cuda.c. */
#ifndef MLRT_TESTS_FAKE_H
#define MLRT_TESTS_FAKE_H

#include <stddef.h>

#include <cuda_runtime_api.h>

/* Print "fake CUDA/NCCL: misuse: ..." and abort: the library broke a rule
 * of the API that a real GPU would punish (a crash, a hang or garbage). */
void fake_misuse(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* The device of the fake allocation holding all of [p, p + n), or -1. */
int fake_device_of_range(const void *p, size_t n);

/* The device of the fake allocation holding p, or -1; *avail (may be
 * NULL) gets the bytes from p to the allocation's end. */
int fake_device_range(const void *p, size_t *avail);

/* A kernel launch failed: cudaGetLastError returns e next (for the CPU
 * emulation of kernels, tests/gpu/emu/on_fake.c). */
void fake_launch_failed(cudaError_t e);

/* The physical GPU behind ordinal `device` of this process (it honours
 * CUDA_VISIBLE_DEVICES), or -1. */
int fake_physical_gpu(int device);

/* The device a stream was made on (the current one for the legacy
 * stream). */
int fake_stream_device(cudaStream_t s);

/* Queue fn(arg) on stream s, after the work queued there before; the
 * stream's later work waits until it returns. */
cudaError_t fake_stream_call(cudaStream_t s, void (*fn)(void *), void *arg);

#endif
