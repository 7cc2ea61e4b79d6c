/* Metrics: numbers a training program reports to the tuner and to
 * monitoring (loss, accuracy, throughput, ...).
 *
 * A report goes to up to two places:
 *   - the job's store, when there is one, under the key
 *         <job id>/metrics/<rank>/<name>
 *     with the text "<step> <value>" (the newest report of each name wins).
 *     The key is not scoped by generation, so a value survives a restart
 *     of the gang and the tuner reads it wherever the job got to;
 *   - the file named by MLRT_METRICS_FILE, when that variable is set: one
 *     line "<name>=<value> step=<step> rank=<rank>" appended per report.
 *     Each line is written with one write(2) on a descriptor opened with
 *     O_APPEND, so the lines of ranks sharing the file never interleave.
 * Values are printed with %.17g, which reads back to the same double.
 *
 * Threads: call mlrt_report from the thread that called mlrt_init (it
 * uses the context's store client, which is not thread-safe). */
#ifndef MLRT_METRICS_H
#define MLRT_METRICS_H

#include <stdint.h>

#include <mlrt/runtime.h>
#include <mlrt/status.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest metric name accepted, in bytes. */
#define MLRT_METRIC_NAME_MAX 128

/* Report value for metric name at step (an epoch, an iteration: the
 * caller's choice; any int64).  name is 1..MLRT_METRIC_NAME_MAX printable
 * ASCII characters other than space and '='; value must be finite.  Blocks
 * for one store round trip (bounded by the store's request timeout) and
 * one append to MLRT_METRICS_FILE.  Not collective: each rank reports its
 * own values.
 * Errors: MLRT_ERR_INVALID (ctx NULL, bad name, NaN or infinite value;
 * nothing is written), MLRT_ERR_IO (MLRT_METRICS_FILE cannot be opened or
 * written: the log names the file), or the store's error
 * (MLRT_ERR_UNAVAILABLE, ...).  On an error from one destination the other
 * is still written. */
MLRT_API int mlrt_report(mlrt_ctx *ctx, const char *name, double value, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
