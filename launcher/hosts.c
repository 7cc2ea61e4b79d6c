/* Host lists and hostfiles. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launcher/hosts.h"
#include "runtime/common.h"

/* Host names end up in shell commands and store keys: letters, digits and
 * ". - _ @ :" only ("user@host" for ssh; ':' only inside IPv6 brackets is
 * not supported). */
static int valid_name(const char *s, size_t len)
{
	if (len == 0 || len >= HOST_NAME_MAX_LEN)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '_' || c == '@'))
			return 0;
	}
	return 1;
}

/* Add slots on host (merging a repeated host); -1 when out of memory. */
static int add_host(host_entry **hosts, int *n, const char *name, size_t len, int slots)
{
	host_entry *h;

	for (int i = 0; i < *n; i++)
		if (strlen((*hosts)[i].name) == len && strncmp((*hosts)[i].name, name, len) == 0) {
			(*hosts)[i].slots += slots;
			return 0;
		}
	h = realloc(*hosts, (size_t)(*n + 1) * sizeof(*h));
	if (h == NULL)
		return -1;
	*hosts = h;
	snprintf(h[*n].name, sizeof(h[*n].name), "%.*s", (int)len, name);
	h[*n].slots = slots;
	(*n)++;
	return 0;
}

static int fail(host_entry **hosts, int *n, char *err, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static int fail(host_entry **hosts, int *n, char *err, size_t cap, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, cap, fmt, ap);
	va_end(ap);
	free(*hosts);
	*hosts = NULL;
	*n = 0;
	return -1;
}

int hosts_parse_list(const char *list, int default_slots, host_entry **hosts, int *n,
                     char *err, size_t cap)
{
	const char *p = list;

	*hosts = NULL;
	*n = 0;
	while (*p != '\0') {
		size_t len = strcspn(p, ",");
		const char *colon = memchr(p, ':', len);
		size_t name_len = colon != NULL ? (size_t)(colon - p) : len;
		int64_t slots = default_slots;
		char count[32];

		if (colon != NULL) {
			snprintf(count, sizeof(count), "%.*s", (int)(len - name_len - 1), colon + 1);
			if (len - name_len - 1 >= sizeof(count) ||
			    mlrti_parse_int(count, 1, 65536, &slots) != MLRT_OK)
				return fail(hosts, n, err, cap, "invalid worker count '%s' for host "
				            "'%.*s' in -H: want an integer from 1 to 65536", count,
				            (int)name_len, p);
		}
		if (!valid_name(p, name_len))
			return fail(hosts, n, err, cap, "invalid host '%.*s' in -H '%s': want a name "
			            "or address (letters, digits, '.', '-', '_', '@')", (int)name_len, p,
			            list);
		if (add_host(hosts, n, p, name_len, (int)slots) != 0)
			return fail(hosts, n, err, cap, "out of memory");
		p += len;
		if (*p == ',' && *++p == '\0')
			return fail(hosts, n, err, cap, "-H '%s' ends with a comma", list);
	}
	if (*n == 0)
		return fail(hosts, n, err, cap, "-H names no host");
	return 0;
}

int hosts_parse_file(const char *path, int default_slots, host_entry **hosts, int *n,
                     char *err, size_t cap)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	int lineno = 0;

	*hosts = NULL;
	*n = 0;
	if (f == NULL)
		return fail(hosts, n, err, cap, "cannot read hostfile %s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL) {
		char *save = NULL, *word, *name;
		int64_t slots = default_slots;

		lineno++;
		line[strcspn(line, "#\n")] = '\0';
		name = strtok_r(line, " \t\r", &save);
		if (name == NULL)
			continue;
		if (!valid_name(name, strlen(name))) {
			fclose(f);
			return fail(hosts, n, err, cap, "%s:%d: invalid host '%s'", path, lineno, name);
		}
		while ((word = strtok_r(NULL, " \t\r", &save)) != NULL) {
			if (strncmp(word, "slots=", 6) == 0) {
				if (mlrti_parse_int(word + 6, 1, 65536, &slots) != MLRT_OK) {
					fclose(f);
					return fail(hosts, n, err, cap, "%s:%d: invalid '%s': want slots=N "
					            "with N from 1 to 65536", path, lineno, word);
				}
			} else if (strncmp(word, "max_slots=", 10) != 0 &&
			           strncmp(word, "max-slots=", 10) != 0) {
				fclose(f);
				return fail(hosts, n, err, cap, "%s:%d: unknown '%s' (want 'host "
				            "slots=N')", path, lineno, word);
			}
		}
		if (add_host(hosts, n, name, strlen(name), (int)slots) != 0) {
			fclose(f);
			return fail(hosts, n, err, cap, "out of memory");
		}
	}
	fclose(f);
	if (*n == 0)
		return fail(hosts, n, err, cap, "hostfile %s names no host", path);
	return 0;
}

void hosts_this_name(char *buf, size_t len)
{
	const char *v = getenv("MLRT_HOSTNAME");

	if (v != NULL && v[0] != '\0')
		snprintf(buf, len, "%s", v);
	else if (gethostname(buf, len - 1) != 0)
		snprintf(buf, len, "localhost");
	buf[len - 1] = '\0';
}
