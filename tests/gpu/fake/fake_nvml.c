/* A fake NVML for tests of GPU discovery (mlrun devices), preloaded with
 * the fake CUDA under the soname libnvidia-ml.so.1, so that
 * runtime/device.c's dlopen finds it.  It answers for the fake CUDA's
 * devices (FAKE_CUDA_DEVICES, physical GPU g at PCI bus g + 1): GPU g is
 * busy (30 + g)%, and 1 GiB of its memory is in use.  A bus id that is
 * not domain:bus:device.function in hex, or no fake GPU's, is not found. */
#include <stdio.h>
#include <stdlib.h>

typedef struct nvml_util {
	unsigned int gpu, memory;
} nvml_util;

typedef struct nvml_memory {
	unsigned long long total, free, used;
} nvml_memory;

enum { NVML_SUCCESS = 0, NVML_ERROR_UNINITIALIZED = 1, NVML_ERROR_INVALID_ARGUMENT = 2,
       NVML_ERROR_NOT_FOUND = 6 };

int nvmlInit_v2(void);
int nvmlDeviceGetHandleByPciBusId_v2(const char *bus, void **dev);
int nvmlDeviceGetUtilizationRates(void *dev, nvml_util *u);
int nvmlDeviceGetMemoryInfo(void *dev, nvml_memory *m);

static int initialized;

int nvmlInit_v2(void)
{
	initialized = 1;
	return NVML_SUCCESS;
}

/* The handle is the physical GPU plus one. */
int nvmlDeviceGetHandleByPciBusId_v2(const char *bus, void **dev)
{
	const char *v = getenv("FAKE_CUDA_DEVICES");
	unsigned int domain, b, d, f;
	int all = v != NULL && atoi(v) > 0 ? atoi(v) : 1;
	char end;

	if (!initialized)
		return NVML_ERROR_UNINITIALIZED;
	if (bus == NULL || dev == NULL)
		return NVML_ERROR_INVALID_ARGUMENT;
	if (sscanf(bus, "%x:%x:%x.%x%c", &domain, &b, &d, &f, &end) != 4 || domain != 0 || d != 0 ||
	    f != 0 || b < 1 || (int)b > all)
		return NVML_ERROR_NOT_FOUND;
	*dev = (void *)(unsigned long)b;
	return NVML_SUCCESS;
}

int nvmlDeviceGetUtilizationRates(void *dev, nvml_util *u)
{
	if (!initialized)
		return NVML_ERROR_UNINITIALIZED;
	u->gpu = 30 + (unsigned int)((unsigned long)dev - 1);
	u->memory = 5;
	return NVML_SUCCESS;
}

int nvmlDeviceGetMemoryInfo(void *dev, nvml_memory *m)
{
	(void)dev;
	if (!initialized)
		return NVML_ERROR_UNINITIALIZED;
	m->total = 80ull << 30;
	m->used = 1ull << 30;
	m->free = m->total - m->used;
	return NVML_SUCCESS;
}
