/* GPU discovery through the CUDA runtime, with NVML (dlopen) for what the
 * runtime does not tell (device.h). */
#include <dlfcn.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlrt_config.h"

#if HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include <mlrt/device.h>

#include "runtime/common.h"
#include "runtime/devptr.h"

/* MLRT_DEVICE: *want gets the ordinal asked for, DEVICE_LOCAL (local rank
 * modulo the devices seen) or -1 (none).  Unset or "auto": the first of
 * the worker's own devices when mlrun bound some (--gpus-per-proc sets
 * MLRT_GPUS_PER_PROC), else none, so that a program that does not use a
 * GPU never makes a context on one.  *explicit: MLRT_DEVICE asked. */
enum { DEVICE_LOCAL = -2 };

static int device_wanted(int *want, int *explicit)
{
	const char *v = getenv("MLRT_DEVICE"), *g = getenv("MLRT_GPUS_PER_PROC");
	char *end;
	long n;

	*want = -1;
	*explicit = v != NULL && *v != '\0' && strcmp(v, "auto") != 0;
	if (!*explicit) {
		if (g != NULL && atoi(g) > 0)
			*want = 0;
		return MLRT_OK;
	}
	if (strcmp(v, "none") == 0)
		return MLRT_OK;
	if (strcmp(v, "local") == 0) {
		*want = DEVICE_LOCAL;
		return MLRT_OK;
	}
	n = strtol(v, &end, 10);
	if (end == v || *end != '\0' || n < 0 || n > 1 << 20) {
		mlrt_log(MLRT_LOG_ERROR, "device: MLRT_DEVICE=%s is not auto, local, none or a device "
		                         "ordinal; unset it or pick one", v);
		return MLRT_ERR_INVALID;
	}
	*want = (int)n;
	return MLRT_OK;
}

#if HAVE_CUDA

/* ---- Where a pointer points: the driver's answer, loaded at run time ----
 *
 * The driver API's cuPointerGetAttribute needs cuInit but no context, so
 * asking about a host buffer costs a program that never touches a GPU
 * nothing more than loading libcuda once (and nothing at all on a machine
 * without a driver). */

static struct {
	pthread_once_t once;
	int (*attr)(void *data, int attribute, unsigned long long ptr);
	/* Free memory without keeping a context (mlrt_device_query). */
	int (*dev_get)(int *dev, int ordinal);
	int (*retain)(void **ctx, int dev);
	int (*release)(int dev);
	int (*push)(void *ctx);
	int (*pop)(void **ctx);
	int (*mem_info)(size_t *free_b, size_t *total_b);
} drv = {.once = PTHREAD_ONCE_INIT};

static void drv_load(void)
{
	void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	int (*init)(unsigned int);

	if (lib == NULL)
		return;
	init = (int (*)(unsigned int))dlsym(lib, "cuInit");
	if (init == NULL || init(0) != 0)
		return;
	drv.attr = (int (*)(void *, int, unsigned long long))dlsym(lib, "cuPointerGetAttribute");
	drv.dev_get = (int (*)(int *, int))dlsym(lib, "cuDeviceGet");
	drv.retain = (int (*)(void **, int))dlsym(lib, "cuDevicePrimaryCtxRetain");
	drv.release = (int (*)(int))dlsym(lib, "cuDevicePrimaryCtxRelease_v2");
	drv.push = (int (*)(void *))dlsym(lib, "cuCtxPushCurrent_v2");
	drv.pop = (int (*)(void **))dlsym(lib, "cuCtxPopCurrent_v2");
	drv.mem_info = (int (*)(size_t *, size_t *))dlsym(lib, "cuMemGetInfo_v2");
}

/* Free memory of device `index`, through a reference to its primary
 * context that is dropped afterwards: a launcher that only looks (mlrun
 * checking --gpu-mem) leaves no context behind, which would hold memory
 * for the whole job and lock the workers out of a GPU in exclusive-process
 * mode.  0 when it cannot be read. */
static size_t free_memory(int index)
{
	size_t free_b = 0, total_b = 0;
	void *ctx = NULL;
	int dev;

	pthread_once(&drv.once, drv_load);
	if (drv.dev_get == NULL || drv.retain == NULL || drv.release == NULL || drv.push == NULL ||
	    drv.pop == NULL || drv.mem_info == NULL)
		return 0;
	if (drv.dev_get(&dev, index) != 0 || drv.retain(&ctx, dev) != 0)
		return 0;
	if (drv.push(ctx) == 0) {
		if (drv.mem_info(&free_b, &total_b) != 0)
			free_b = 0;
		drv.pop(&ctx);
	}
	drv.release(dev);
	return free_b;
}

int mlrti_device_of(const void *p)
{
	/* CUpointer_attribute and CUmemorytype values of the driver API. */
	enum { ATTR_MEMORY_TYPE = 2, ATTR_DEVICE_ORDINAL = 9, MEMORYTYPE_DEVICE = 2 };
	unsigned int type = 0;
	int ordinal = -1;

	if (p == NULL)
		return -1;
	pthread_once(&drv.once, drv_load);
	if (drv.attr == NULL ||
	    drv.attr(&type, ATTR_MEMORY_TYPE, (unsigned long long)(uintptr_t)p) != 0 ||
	    type != MEMORYTYPE_DEVICE)
		return -1;
	if (drv.attr(&ordinal, ATTR_DEVICE_ORDINAL, (unsigned long long)(uintptr_t)p) != 0)
		return -1;
	return ordinal;
}

/* ---- NVML, when the driver has it ---- */

typedef struct nvml_util {
	unsigned int gpu, memory;
} nvml_util;

typedef struct nvml_memory {
	unsigned long long total, free, used;
} nvml_memory;

static struct {
	pthread_once_t once;
	int ok;
	int (*by_pci)(const char *bus, void **dev);
	int (*util)(void *dev, nvml_util *u);
	int (*memory)(void *dev, nvml_memory *m);
} nvml = {.once = PTHREAD_ONCE_INIT};

static void nvml_load(void)
{
	void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
	int (*init)(void);

	if (lib == NULL)
		return;
	init = (int (*)(void))dlsym(lib, "nvmlInit_v2");
	nvml.by_pci = (int (*)(const char *, void **))dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2");
	nvml.util = (int (*)(void *, nvml_util *))dlsym(lib, "nvmlDeviceGetUtilizationRates");
	nvml.memory = (int (*)(void *, nvml_memory *))dlsym(lib, "nvmlDeviceGetMemoryInfo");
	nvml.ok = init != NULL && nvml.by_pci != NULL && nvml.util != NULL && nvml.memory != NULL &&
	          init() == 0;
}

static void nvml_fill(mlrt_device_info *info)
{
	nvml_util u;
	nvml_memory m;
	void *dev;

	pthread_once(&nvml.once, nvml_load);
	if (!nvml.ok || nvml.by_pci(info->pci_bus_id, &dev) != 0)
		return;
	if (nvml.util(dev, &u) == 0)
		info->util_percent = (int)u.gpu;
	if (nvml.memory(dev, &m) == 0)
		info->mem_used = (int64_t)m.used;
}

int mlrt_device_count(int *count)
{
	cudaError_t e;
	int n = 0;

	if (count == NULL)
		return MLRT_ERR_INVALID;
	*count = 0;
	e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess) {
		int driver = 0;

		/* No driver, or no device: nothing to say.  A driver that is
		 * there but fails is worth a warning: the GPUs are not seen. */
		cudaDriverGetVersion(&driver);
		mlrt_log(driver == 0 || e == cudaErrorNoDevice ? MLRT_LOG_INFO : MLRT_LOG_WARN,
		         "device: no usable CUDA device: %s (%s; driver CUDA version %d); check "
		         "nvidia-smi", cudaGetErrorString(e), cudaGetErrorName(e), driver);
		return MLRT_OK;
	}
	*count = n;
	return MLRT_OK;
}

int mlrt_device_query(int index, mlrt_device_info *info)
{
	struct cudaDeviceProp p;
	const unsigned char *u;
	int n = 0;

	if (info == NULL || mlrt_device_count(&n) != MLRT_OK || index < 0 || index >= n)
		return MLRT_ERR_INVALID;
	memset(info, 0, sizeof(*info));
	if (cudaGetDeviceProperties(&p, index) != cudaSuccess)
		return MLRT_ERR_UNAVAILABLE;
	info->index = index;
	snprintf(info->name, sizeof(info->name), "%s", p.name);
	u = (const unsigned char *)p.uuid.bytes;
	snprintf(info->uuid, sizeof(info->uuid),
	         "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
	         u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
	         u[14], u[15]);
	cudaDeviceGetPCIBusId(info->pci_bus_id, (int)sizeof(info->pci_bus_id), index);
	info->mem_total = p.totalGlobalMem;
	info->cc_major = p.major;
	info->cc_minor = p.minor;
	info->mem_free = free_memory(index);
	info->util_percent = -1;
	info->mem_used = -1;
	nvml_fill(info);
	return MLRT_OK;
}

int mlrti_device_select(int local_rank, int *device)
{
	const char *visible = getenv("CUDA_VISIBLE_DEVICES");
	int want, explicit, n = 0;
	cudaError_t e;
	int rc = device_wanted(&want, &explicit);

	*device = -1;
	if (rc != MLRT_OK || want == -1)
		return rc;
	mlrt_device_count(&n);
	if (n == 0 || want >= n) {
		/* mlrun's binding without a device seen is worth a warning; an
		 * explicit choice that cannot be met fails init. */
		mlrt_log(explicit ? MLRT_LOG_ERROR : MLRT_LOG_WARN,
		         "device: %s%s, but this process sees %d CUDA device%s "
		         "(CUDA_VISIBLE_DEVICES=%s); check nvidia-smi and mlrun devices",
		         explicit ? "MLRT_DEVICE=" : "mlrun gave this worker GPUs",
		         explicit ? getenv("MLRT_DEVICE") : "", n, n == 1 ? "" : "s",
		         visible != NULL ? visible : "(unset)");
		return explicit ? MLRT_ERR_UNAVAILABLE : MLRT_OK;
	}
	if (want == DEVICE_LOCAL)
		want = local_rank % n;
	if ((e = cudaSetDevice(want)) != cudaSuccess) {
		mlrt_log(MLRT_LOG_ERROR, "device: cudaSetDevice(%d) failed: %s (%s); check the device "
		                         "(nvidia-smi)", want, cudaGetErrorString(e), cudaGetErrorName(e));
		return MLRT_ERR_UNAVAILABLE;
	}
	mlrt_log(MLRT_LOG_INFO, "device: working on CUDA device %d of %d (CUDA_VISIBLE_DEVICES=%s)",
	         want, n, visible != NULL ? visible : "(unset)");
	*device = want;
	return MLRT_OK;
}

int mlrt_cuda_versions(int *driver, int *runtime)
{
	if (driver == NULL || runtime == NULL)
		return MLRT_ERR_INVALID;
	*driver = 0;
	*runtime = CUDART_VERSION;
	if (cudaDriverGetVersion(driver) != cudaSuccess)
		*driver = 0;
	return MLRT_OK;
}

#else /* !HAVE_CUDA */

int mlrti_device_of(const void *p)
{
	(void)p;
	return -1;
}

static int unsupported(void)
{
	mlrt_log(MLRT_LOG_ERROR, "device: this mlrt was built without CUDA (install the CUDA "
	                         "toolkit and rebuild with meson -Dcuda=enabled)");
	return MLRT_ERR_UNSUPPORTED;
}

int mlrt_device_count(int *count)
{
	if (count != NULL)
		*count = 0;
	return unsupported();
}

int mlrt_device_query(int index, mlrt_device_info *info)
{
	(void)index;
	(void)info;
	return unsupported();
}

int mlrti_device_select(int local_rank, int *device)
{
	int want, explicit, rc = device_wanted(&want, &explicit);

	(void)local_rank;
	*device = -1;
	if (rc != MLRT_OK || !explicit || want == -1)
		return rc;
	return unsupported();
}

int mlrt_cuda_versions(int *driver, int *runtime)
{
	if (driver != NULL)
		*driver = 0;
	if (runtime != NULL)
		*runtime = 0;
	return unsupported();
}

#endif
