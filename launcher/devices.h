/* `mlrun devices` and the GPU requirements of a job. */
#ifndef MLRT_LAUNCHER_DEVICES_H
#define MLRT_LAUNCHER_DEVICES_H

#include <stddef.h>

#include "launcher/options.h"

/* `mlrun devices [--json]`: this host's inventory.  Returns the exit
 * status. */
int devices_main(int argc, char **argv);

/* Whether this host meets the job's GPU requirements (--gpus-per-proc,
 * --gpu-mem, --cuda): 0, or -1 with why naming the host and what is
 * missing. */
int devices_check(const mlrun_opts *o, const char *host, char *why, size_t len);

#endif
