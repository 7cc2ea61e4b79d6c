/* Running a command on a host through --rsh: ssh, or any command line in
 * which {host} stands for the host (else the host follows it). */
#ifndef MLRT_LAUNCHER_RSH_H
#define MLRT_LAUNCHER_RSH_H

#include <stddef.h>
#include <wordexp.h>

/* Append s to buf (at *len) after a space, in single quotes, for a POSIX
 * shell.  0, or -1 when buf (cap bytes) is full. */
int rsh_quote(char *buf, size_t cap, size_t *len, const char *s);

/* The argv that runs cmd (one shell command line) on host: rsh's words
 * with {host} replaced, then, unless the program is ssh or rsh (which hand
 * their command to the remote shell), "sh -c", then cmd.  *argv (NULL-
 * terminated) points into we and cmd: free it, then wordfree(we).  0, or
 * -1 when rsh cannot be split into words. */
int rsh_argv(const char *rsh, const char *host, const char *cmd, char ***argv, wordexp_t *we);

#endif
