/* Running a command on a host through --rsh (rsh.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/rsh.h"

int rsh_quote(char *buf, size_t cap, size_t *len, const char *s)
{
	size_t n = *len;

	if (n + 3 >= cap)
		return -1;
	buf[n++] = ' ';
	buf[n++] = '\'';
	for (; *s != '\0'; s++) {
		if (*s == '\'') {
			if (n + 5 >= cap)
				return -1;
			memcpy(buf + n, "'\\''", 4);
			n += 4;
		} else {
			if (n + 2 >= cap)
				return -1;
			buf[n++] = *s;
		}
	}
	buf[n++] = '\'';
	buf[n] = '\0';
	*len = n;
	return 0;
}

extern char **environ;

/* Whether entry ("NAME=value") goes to the hosts. */
static int forwarded(const char *entry, const char *const *fwd, int nfwd)
{
	size_t n = strcspn(entry, "=");

	if ((strncmp(entry, "MLRT_", 5) == 0 || strncmp(entry, "FI_", 3) == 0 ||
	     strncmp(entry, "NCCL_", 5) == 0) &&
	    strncmp(entry, "MLRT_IFNAME=", 12) != 0 && strncmp(entry, "MLRT_HOSTNAME=", 14) != 0)
		return 1;
	for (int i = 0; i < nfwd; i++)
		if (strchr(fwd[i], '=') == NULL && strlen(fwd[i]) == n && strncmp(fwd[i], entry, n) == 0)
			return 1;
	return 0;
}

int rsh_mlrun_command(char *buf, size_t cap, size_t *len, const char *cwd, const char *self,
                      const char *host, const char *const *fwd, int nfwd)
{
	char var[512];
	int fail = 0;

	fail |= rsh_quote(buf, cap, len, "cd");
	fail |= rsh_quote(buf, cap, len, cwd);
	if (*len + 8 >= cap)
		return -1;
	*len += (size_t)snprintf(buf + *len, cap - *len, " && exec");
	fail |= rsh_quote(buf, cap, len, "env");
	snprintf(var, sizeof(var), "MLRT_HOSTNAME=%s", host);
	fail |= rsh_quote(buf, cap, len, var);
	for (char **e = environ; *e != NULL; e++)
		if (forwarded(*e, fwd, nfwd))
			fail |= rsh_quote(buf, cap, len, *e);
	for (int k = 0; k < nfwd; k++)
		if (strchr(fwd[k], '=') != NULL)
			fail |= rsh_quote(buf, cap, len, fwd[k]);
	fail |= rsh_quote(buf, cap, len, self);
	return fail ? -1 : 0;
}

/* rsh as words for host: {host} replaced by it, else it follows. */
static int rsh_words(const char *rsh, const char *host, wordexp_t *we)
{
	const char *p = rsh, *at;
	char tmpl[4096];
	size_t n = 0;

	while ((at = strstr(p, "{host}")) != NULL && n < sizeof(tmpl)) {
		n += (size_t)snprintf(tmpl + n, sizeof(tmpl) - n, "%.*s%s", (int)(at - p), p, host);
		p = at + strlen("{host}");
	}
	if (n < sizeof(tmpl))
		n += (size_t)snprintf(tmpl + n, sizeof(tmpl) - n, "%s%s%s", p, p == rsh ? " " : "",
		                      p == rsh ? host : "");
	if (n >= sizeof(tmpl) || wordexp(tmpl, we, WRDE_NOCMD) != 0)
		return -1;
	if (we->we_wordc == 0) {
		wordfree(we);
		return -1;
	}
	return 0;
}

int rsh_argv(const char *rsh, const char *host, const char *cmd, char ***argv, wordexp_t *we)
{
	const char *prog;
	size_t argc = 0;

	*argv = NULL;
	if (rsh_words(rsh, host, we) != 0)
		return -1;
	*argv = calloc(we->we_wordc + 4, sizeof(**argv));
	if (*argv == NULL) {
		wordfree(we);
		return -1;
	}
	for (size_t k = 0; k < we->we_wordc; k++)
		(*argv)[argc++] = we->we_wordv[k];
	prog = strrchr((*argv)[0], '/') != NULL ? strrchr((*argv)[0], '/') + 1 : (*argv)[0];
	if (strcmp(prog, "ssh") != 0 && strcmp(prog, "rsh") != 0) {
		(*argv)[argc++] = "sh";
		(*argv)[argc++] = "-c";
	}
	(*argv)[argc] = (char *)cmd;
	return 0;
}
