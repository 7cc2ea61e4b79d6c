/* Where a buffer lives, and which device this process works on.  Not
 * installed.
 *
 * Threads: any thread. */
#ifndef MLRT_RUNTIME_DEVPTR_H
#define MLRT_RUNTIME_DEVPTR_H

/* The CUDA device ordinal of the memory p points into, or -1 for host
 * memory (pageable or pinned), NULL, a build without CUDA, or a machine
 * without a driver.  Managed memory counts as device memory. */
int mlrti_device_of(const void *p);

/* Choose this process's device by MLRT_DEVICE (docs/devices.md) and make
 * it current on the calling thread (mlrt_init): *device gets its ordinal,
 * or -1 when none is chosen.  MLRT_ERR_INVALID / UNAVAILABLE /
 * UNSUPPORTED, logged, when the choice cannot be made. */
int mlrti_device_select(int local_rank, int *device);

#endif
