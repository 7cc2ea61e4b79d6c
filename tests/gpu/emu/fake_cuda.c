/* The CUDA runtime calls of examples/mlp_gpu's model over host memory
 * (include/cuda_runtime_api.h, emu.h), for the unit test; cuBLAS is in
 * fake_cublas.c.  Every pointer is checked against the register of device
 * blocks: a host pointer where a device one belongs, or a range past a
 * block's end, aborts with a message, since real CUDA would corrupt
 * memory or fault later instead. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_runtime_api.h"
#include "emu.h"

struct block {
	char *p;
	size_t bytes;
	struct block *next;
};

static struct block *blocks; /* live device allocations */
static cudaError_t last_error = cudaSuccess;
long emu_launches;

int emu_device_range(const void *p, size_t *avail)
{
	const char *c = p;

	for (struct block *b = blocks; b != NULL; b = b->next)
		if (c >= b->p && c < b->p + (b->bytes > 0 ? b->bytes : 1)) {
			if (avail != NULL)
				*avail = (size_t)(b->p + b->bytes - c);
			return 1;
		}
	return 0;
}

int emu_live_blocks(void)
{
	int n = 0;

	for (struct block *b = blocks; b != NULL; b = b->next)
		n++;
	return n;
}

void emu_violation(const char *what, const char *why)
{
	fprintf(stderr, "emu: %s: %s\n", what, why);
	abort();
}

/* One thread, one stream: nothing is ever pending. */
void emu_before_launch(void)
{
}

void emu_launch_failed(cudaError_t e)
{
	last_error = e;
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
	struct block *b = malloc(sizeof(*b));

	if (b == NULL || (b->p = malloc(bytes > 0 ? bytes : 1)) == NULL) {
		free(b);
		return cudaErrorMemoryAllocation;
	}
	memset(b->p, 0xA5, bytes); /* device memory is not zeroed */
	b->bytes = bytes;
	b->next = blocks;
	blocks = b;
	*p = b->p;
	return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
	if (p == NULL)
		return cudaSuccess;
	for (struct block **b = &blocks; *b != NULL; b = &(*b)->next)
		if ((*b)->p == p) {
			struct block *dead = *b;

			*b = dead->next;
			free(dead->p);
			free(dead);
			return cudaSuccess;
		}
	emu_violation("cudaFree", "not the start of a device allocation");
	return cudaErrorInvalidDevicePointer;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind)
{
	switch (kind) {
	case cudaMemcpyHostToDevice:
		emu_need(dst, bytes, 1, "cudaMemcpy HostToDevice destination");
		emu_need(src, 0, 0, "cudaMemcpy HostToDevice source");
		break;
	case cudaMemcpyDeviceToHost:
		emu_need(dst, 0, 0, "cudaMemcpy DeviceToHost destination");
		emu_need(src, bytes, 1, "cudaMemcpy DeviceToHost source");
		break;
	case cudaMemcpyDeviceToDevice:
		emu_need(dst, bytes, 1, "cudaMemcpy DeviceToDevice destination");
		emu_need(src, bytes, 1, "cudaMemcpy DeviceToDevice source");
		break;
	default:
		emu_violation("cudaMemcpy", "kind not emulated");
	}
	memcpy(dst, src, bytes);
	return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int value, size_t bytes)
{
	emu_need(p, bytes, 1, "cudaMemset");
	memset(p, value, bytes);
	return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t stream)
{
	(void)stream;
	return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
	cudaError_t e = last_error;

	last_error = cudaSuccess;
	return e;
}

const char *cudaGetErrorString(cudaError_t e)
{
	return e == cudaSuccess ? "no error" : "emulated error";
}

const char *cudaGetErrorName(cudaError_t e)
{
	return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated";
}
