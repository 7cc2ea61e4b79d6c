/* Running a command on a host through --rsh: ssh, or any command line in
 * which {host} stands for the host (else the host follows it). */
#ifndef MLRT_LAUNCHER_RSH_H
#define MLRT_LAUNCHER_RSH_H

#include <stddef.h>
#include <wordexp.h>

/* Append s to buf (at *len) after a space, in single quotes, for a POSIX
 * shell.  0, or -1 when buf (cap bytes) is full. */
int rsh_quote(char *buf, size_t cap, size_t *len, const char *s);

/* Start a command line that runs this mlrun (self) on host as the head
 * runs its agents: "cd CWD && exec env MLRT_HOSTNAME=HOST VARS... SELF",
 * VARS being this process's MLRT_*, FI_* and NCCL_* variables (not
 * MLRT_IFNAME and MLRT_HOSTNAME, which are per host) and those of fwd
 * (nfwd entries, mlrun -x: NAME, taken from here, or NAME=VALUE).  The
 * caller appends the arguments with rsh_quote.  0, or -1 when buf is
 * full. */
int rsh_mlrun_command(char *buf, size_t cap, size_t *len, const char *cwd, const char *self,
                      const char *host, const char *const *fwd, int nfwd);

/* The argv that runs cmd (one shell command line) on host: rsh's words
 * with {host} replaced, then, unless the program is ssh or rsh (which hand
 * their command to the remote shell), "sh -c", then cmd.  *argv (NULL-
 * terminated) points into we and cmd: free it, then wordfree(we).  0, or
 * -1 when rsh cannot be split into words. */
int rsh_argv(const char *rsh, const char *host, const char *cmd, char ***argv, wordexp_t *we);

#endif
