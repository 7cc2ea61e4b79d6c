/* GPU devices: what this host has.  With a CUDA build (meson -Dcuda=auto
 * and the toolkit present) the CUDA runtime answers, and NVML, loaded at
 * run time when the driver has it, adds utilisation and memory in use.
 * Without CUDA every call returns MLRT_ERR_UNSUPPORTED (logged).
 *
 * Threads: any thread. */
#ifndef MLRT_DEVICE_H
#define MLRT_DEVICE_H

#include <stdint.h>

#include <mlrt/status.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mlrt_device_info {
	int index;            /* CUDA device ordinal (after CUDA_VISIBLE_DEVICES) */
	char name[256];
	char uuid[48];        /* "GPU-xxxxxxxx-xxxx-...", as nvidia-smi prints it */
	char pci_bus_id[32];  /* "0000:3b:00.0" */
	uint64_t mem_total;   /* bytes */
	uint64_t mem_free;    /* bytes */
	int cc_major, cc_minor; /* compute capability */
	int util_percent;     /* NVML: GPU utilisation, -1 when unknown */
	int64_t mem_used;     /* NVML: bytes in use by all processes, -1 when unknown */
} mlrt_device_info;

/* Devices this process can see: *count gets 0 (with a reason logged at
 * info level) when there is no GPU or no driver.  MLRT_ERR_UNSUPPORTED in a
 * build without CUDA. */
MLRT_API int mlrt_device_count(int *count);

/* Describe device index (0 <= index < count). */
MLRT_API int mlrt_device_query(int index, mlrt_device_info *info);

/* CUDA versions as 1000 * major + 10 * minor (12020 for 12.2): the
 * driver's (0 when there is no driver) and the runtime's mlrt was built
 * with. */
MLRT_API int mlrt_cuda_versions(int *driver, int *runtime);

#ifdef __cplusplus
}
#endif
#endif
