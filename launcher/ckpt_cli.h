/* mlrun ckpt: list, verify and inspect a checkpoint directory without a
 * job running (docs/ckpt-cli.md). */
#ifndef MLRT_LAUNCHER_CKPT_CLI_H
#define MLRT_LAUNCHER_CKPT_CLI_H

/* Run `mlrun ckpt ARGS...`; argv[0] is "ckpt".  Results go to stdout,
 * errors about the invocation to stderr.  Blocks on file I/O only; takes
 * the checkpoint format's HDF5 lock through ckpt/format.h, so it may run in
 * a process with other threads.  Returns the exit status: 0 when every
 * step looked at is intact, 1 when one is damaged, missing or not
 * committed (or DIR is missing), 2 for bad usage. */
int ckpt_cli_main(int argc, char **argv);

#endif
