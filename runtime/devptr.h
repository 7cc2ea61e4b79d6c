/* Where a buffer lives.  Not installed.
 *
 * Threads: any thread. */
#ifndef MLRT_RUNTIME_DEVPTR_H
#define MLRT_RUNTIME_DEVPTR_H

/* The CUDA device ordinal of the memory p points into, or -1 for host
 * memory (pageable or pinned), NULL, a build without CUDA, or a machine
 * without a driver.  Managed memory counts as device memory. */
int mlrti_device_of(const void *p);

#endif
