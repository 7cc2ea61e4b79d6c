/* mlrun -H / --hostfile: the head.  It serves the job's store, starts an
 * agent (mlrun --agent) on every host through --rsh, lets their output
 * through, and ends with their verdict.  The agents form the gang, run the
 * workers and apply the restart policy; see docs/launcher.md. */
#ifndef MLRT_LAUNCHER_HEAD_H
#define MLRT_LAUNCHER_HEAD_H

#include "launcher/options.h"

/* Run the job; signal_fd is mlrun's self-pipe for signals.  Returns
 * mlrun's exit status. */
int head_run(mlrun_opts *o, int signal_fd);

#endif
