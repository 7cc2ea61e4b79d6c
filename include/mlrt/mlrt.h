/* mlrt: distributed training runtime.  Include this one header. */
#ifndef MLRT_MLRT_H
#define MLRT_MLRT_H

#include <mlrt/status.h>
#include <mlrt/types.h>
#include <mlrt/log.h>
#include <mlrt/runtime.h>
#include <mlrt/comm.h>
#include <mlrt/store.h>
#include <mlrt/ckpt.h>
#include <mlrt/elastic.h>
#include <mlrt/metrics.h>
#include <mlrt/ps.h>
#include <mlrt/device.h>

#endif
