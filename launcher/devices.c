/* `mlrun devices` and the GPU requirements of a job (--gpus-per-proc,
 * --gpu-mem, --cuda), checked against this host before anything starts. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include <mlrt/device.h>

#include "launcher/devices.h"
#include "launcher/hosts.h"
#include "launcher/rsh.h"
#include "runtime/common.h"

#define REMOTE_TIMEOUT_MS 60000          /* one host's answer */
#define REMOTE_MAX_BYTES (4 << 20)

/* "12.2" -> 12020; "none" -> 0.  -1 when it is neither. */
static int version_of(const char *s)
{
	int major, minor, used = 0;

	if (strcmp(s, "none") == 0)
		return 0;
	if (sscanf(s, "%d.%d%n", &major, &minor, &used) != 2 || s[used] != '\0' || major < 1 ||
	    minor < 0 || minor > 99)
		return -1;
	return major * 1000 + minor * 10;
}

/* One device of an inventory file: d gets it, or why gets what is wrong. */
static int device_of_json(json_t *j, int i, mlrt_device_info *d, char *why, size_t len)
{
	const char *name, *uuid, *pci, *cc;
	json_int_t total, free_b = -1, used = -1;
	int index = i, util = -1;
	json_error_t e;

	if (json_unpack_ex(j, &e, JSON_STRICT, "{s?i, s:s, s:s, s:s, s:I, s?I, s:s, s?i, s?I}",
	                   "index", &index, "name", &name, "uuid", &uuid, "pci_bus_id", &pci,
	                   "mem_total", &total, "mem_free", &free_b, "compute_capability", &cc,
	                   "util_percent", &util, "mem_used", &used) != 0) {
		snprintf(why, len, "device %d: %s", i, e.text);
		return -1;
	}
	memset(d, 0, sizeof(*d));
	if (sscanf(cc, "%d.%d", &d->cc_major, &d->cc_minor) != 2 || total <= 0) {
		snprintf(why, len, "device %d: compute_capability \"%s\" is not MAJOR.MINOR, or "
		         "mem_total %" JSON_INTEGER_FORMAT " is not a positive byte count", i, cc,
		         total);
		return -1;
	}
	d->index = index;
	snprintf(d->name, sizeof(d->name), "%s", name);
	snprintf(d->uuid, sizeof(d->uuid), "%s", uuid);
	snprintf(d->pci_bus_id, sizeof(d->pci_bus_id), "%s", pci);
	d->mem_total = (uint64_t)total;
	d->mem_free = free_b >= 0 && free_b <= total ? (uint64_t)free_b : (uint64_t)total;
	d->util_percent = util;
	d->mem_used = used;
	return 0;
}

/* One host's inventory, as `mlrun devices --json` prints it: 0, or -1
 * with why set (and nothing in *out). */
static int host_of_json(json_t *me, mlrt_device_info **out, int *n, int *driver, int *runtime,
                        char *why, size_t len)
{
	const char *name, *drv = "none", *rt = "none";
	json_error_t e;
	json_t *list;

	*out = NULL;
	*n = 0;
	why[0] = '\0';
	if (json_unpack_ex(me, &e, JSON_STRICT, "{s:s, s?s, s?s, s:o}", "host", &name, "cuda_driver",
	                   &drv, "cuda_runtime", &rt, "devices", &list) != 0)
		snprintf(why, len, "%s", e.text);
	else if (!json_is_array(list) || version_of(drv) < 0 || version_of(rt) < 0)
		snprintf(why, len, "\"devices\" must be an array, and \"cuda_driver\" and "
		         "\"cuda_runtime\" MAJOR.MINOR or \"none\"");
	if (why[0] != '\0')
		return -1;
	*n = (int)json_array_size(list);
	*driver = version_of(drv);
	*runtime = version_of(rt);
	*out = *n > 0 ? calloc((size_t)*n, sizeof(**out)) : NULL;
	for (int i = 0; i < *n && why[0] == '\0'; i++)
		if (*out == NULL)
			snprintf(why, len, "out of memory");
		else
			device_of_json(json_array_get(list, (size_t)i), i, &(*out)[i], why, len);
	if (why[0] == '\0')
		return 0;
	free(*out);
	*out = NULL;
	*n = 0;
	return -1;
}

/* MLRT_DEVICE_INVENTORY=FILE, for tests: the inventory comes from FILE,
 * in the form `mlrun devices --json` prints: one host's object, or an
 * array of them, of which the one whose "host" is this host applies.
 * Reports what is wrong on stderr (MLRT_ERR_INVALID). */
static int inventory_file(const char *path, const char *host, mlrt_device_info **out, int *n,
                          int *driver, int *runtime)
{
	json_t *root, *me = NULL;
	char why[400] = "";
	json_error_t e;
	size_t i;

	root = json_load_file(path, 0, &e);
	if (root == NULL) {
		fprintf(stderr, "mlrun: MLRT_DEVICE_INVENTORY=%s: line %d: %s\n", path, e.line, e.text);
		return MLRT_ERR_INVALID;
	}
	if (json_is_array(root)) {
		json_t *h;

		json_array_foreach(root, i, h) {
			json_t *hn = json_object_get(h, "host");

			if (json_is_string(hn) && strcmp(json_string_value(hn), host) == 0)
				me = h;
		}
		if (me == NULL)
			snprintf(why, sizeof(why), "no entry with \"host\": \"%s\"", host);
	} else {
		me = root;
	}
	if (me != NULL)
		host_of_json(me, out, n, driver, runtime, why, sizeof(why));
	json_decref(root);
	if (why[0] == '\0')
		return MLRT_OK;
	fprintf(stderr, "mlrun: MLRT_DEVICE_INVENTORY=%s: %s (the file holds what `mlrun devices "
	        "--json` prints: one host's object, or an array of them)\n", path, why);
	return MLRT_ERR_INVALID;
}

/* The inventory of this host; *n gets the count.  Returns MLRT_OK, or
 * MLRT_ERR_UNSUPPORTED for a build without CUDA. */
static int inventory(const char *host, mlrt_device_info **out, int *n, int *driver,
                     int *runtime)
{
	const char *file = getenv("MLRT_DEVICE_INVENTORY");
	int rc;

	*out = NULL;
	*n = 0;
	if (file != NULL && file[0] != '\0')
		return inventory_file(file, host, out, n, driver, runtime);
	rc = mlrt_device_count(n);
	if (rc != MLRT_OK)
		return rc;
	mlrt_cuda_versions(driver, runtime);
	if (*n == 0)
		return MLRT_OK;
	*out = calloc((size_t)*n, sizeof(**out));
	if (*out == NULL)
		return MLRT_ERR_NOMEM;
	for (int i = 0; i < *n; i++)
		if ((rc = mlrt_device_query(i, &(*out)[i])) != MLRT_OK) {
			free(*out);
			*out = NULL;
			return rc;
		}
	return MLRT_OK;
}

static void version_str(int v, char *buf, size_t n)
{
	if (v <= 0)
		snprintf(buf, n, "none");
	else
		snprintf(buf, n, "%d.%d", v / 1000, (v % 1000) / 10);
}

static int print_json(const char *host, const mlrt_device_info *d, int n, int driver,
                      int runtime)
{
	char drv[16], rt[16];
	json_t *root = json_object(), *list = json_array();
	int rc;

	version_str(driver, drv, sizeof(drv));
	version_str(runtime, rt, sizeof(rt));
	json_object_set_new(root, "host", json_string(host));
	json_object_set_new(root, "cuda_driver", json_string(drv));
	json_object_set_new(root, "cuda_runtime", json_string(rt));
	for (int i = 0; i < n; i++) {
		char cc[16];

		snprintf(cc, sizeof(cc), "%d.%d", d[i].cc_major, d[i].cc_minor);
		json_array_append_new(list, json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:i, s:I}",
		                                      "index", d[i].index, "name", d[i].name, "uuid",
		                                      d[i].uuid, "pci_bus_id", d[i].pci_bus_id,
		                                      "mem_total", (json_int_t)d[i].mem_total,
		                                      "mem_free", (json_int_t)d[i].mem_free,
		                                      "compute_capability", cc, "util_percent",
		                                      d[i].util_percent, "mem_used",
		                                      (json_int_t)d[i].mem_used));
	}
	json_object_set_new(root, "devices", list);
	rc = json_dumpf(root, stdout, JSON_INDENT(2)) == 0 ? 0 : 1;
	putchar('\n');
	json_decref(root);
	return rc;
}

static void print_table(const char *host, const mlrt_device_info *d, int n, int driver,
                        int runtime)
{
	char drv[16], rt[16];

	version_str(driver, drv, sizeof(drv));
	version_str(runtime, rt, sizeof(rt));
	printf("host %s: %d CUDA device%s (driver CUDA %s, runtime %s)\n", host, n,
	       n == 1 ? "" : "s", drv, rt);
	if (n == 0)
		return;
	printf("%-3s %-28s %-40s %-16s %10s %10s %4s %5s\n", "idx", "name", "uuid", "pci", "total MiB",
	       "free MiB", "cc", "util");
	for (int i = 0; i < n; i++) {
		char util[16] = "-";

		if (d[i].util_percent >= 0)
			snprintf(util, sizeof(util), "%d%%", d[i].util_percent);
		printf("%-3d %-28.28s %-40s %-16s %10" PRIu64 " %10" PRIu64 " %d.%d %5s\n", d[i].index,
		       d[i].name, d[i].uuid, d[i].pci_bus_id, d[i].mem_total >> 20, d[i].mem_free >> 20,
		       d[i].cc_major, d[i].cc_minor, util);
	}
}

/* `mlrun devices --json` on host through rsh, run as the head runs an
 * agent (same folder, MLRT_HOSTNAME, mlrt's variables): *out gets its
 * answer.  0, or -1 with why. */
static int remote_json(const char *rsh, const char *host, json_t **out, char *why, size_t len)
{
	char cmd[32768], self[PATH_MAX], cwd[PATH_MAX];
	char *buf = NULL, **argv = NULL;
	size_t clen = 0, used = 0, cap = 0;
	int64_t deadline = mlrti_now_ms() + REMOTE_TIMEOUT_MS;
	int p[2], status = 0, fail = 0;
	ssize_t self_len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	json_error_t e;
	wordexp_t we;
	pid_t pid;

	*out = NULL;
	if (self_len <= 0 || getcwd(cwd, sizeof(cwd)) == NULL) {
		snprintf(why, len, "cannot tell this mlrun's path or folder: %s", strerror(errno));
		return -1;
	}
	self[self_len] = '\0';
	cmd[0] = '\0';
	fail |= rsh_mlrun_command(cmd, sizeof(cmd), &clen, cwd, self, host, NULL, 0);
	fail |= rsh_quote(cmd, sizeof(cmd), &clen, "devices");
	fail |= rsh_quote(cmd, sizeof(cmd), &clen, "--json");
	if (fail || rsh_argv(rsh, host, cmd + 1, &argv, &we) != 0) {
		snprintf(why, len, "cannot make the command (--rsh '%s')", rsh);
		return -1;
	}
	p[0] = p[1] = -1;
	if (pipe2(p, O_CLOEXEC) != 0 || (pid = fork()) < 0) {
		snprintf(why, len, "cannot start --rsh: %s", strerror(errno));
		if (p[0] >= 0)
			close(p[0]), close(p[1]);
		free(argv);
		wordfree(&we);
		return -1;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, STDIN_FILENO);
		dup2(p[1], STDOUT_FILENO);
		execvp(argv[0], argv);
		fprintf(stderr, "mlrun devices: cannot run --rsh '%s': %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(p[1]);
	free(argv);
	wordfree(&we);
	for (;;) {
		struct pollfd pfd = {.fd = p[0], .events = POLLIN};
		int64_t left = deadline - mlrti_now_ms();
		int ready = left > 0 ? poll(&pfd, 1, (int)left) : 0;
		ssize_t r;

		if (ready < 0 && errno == EINTR)
			continue;
		if (ready == 0) {
			kill(pid, SIGKILL);
			snprintf(why, len, "no answer within %d s", REMOTE_TIMEOUT_MS / 1000);
			fail = 1;
			break;
		}
		if (used + 4096 + 1 > cap) {
			char *grown = cap < REMOTE_MAX_BYTES ? realloc(buf, cap + 65536) : NULL;

			if (grown == NULL) {
				kill(pid, SIGKILL);
				snprintf(why, len, "its answer is over %d bytes", REMOTE_MAX_BYTES);
				fail = 1;
				break;
			}
			buf = grown;
			cap += 65536;
		}
		r = read(p[0], buf + used, 4096);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		used += (size_t)r;
	}
	close(p[0]);
	waitpid(pid, &status, 0);
	if (!fail && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		snprintf(why, len, "`mlrun devices --json` there %s %d (its messages are above)",
		         WIFEXITED(status) ? "exited with" : "was killed by signal",
		         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		fail = 1;
	}
	if (!fail && (buf == NULL || (*out = json_loadb(buf, used, 0, &e)) == NULL)) {
		snprintf(why, len, "its answer is not JSON (line %d: %s)", buf ? e.line : 0,
		         buf ? e.text : "empty");
		fail = 1;
	}
	free(buf);
	return fail ? -1 : 0;
}

/* mlrun devices -H/--hostfile: every host's inventory, in the hosts'
 * order; --json: an array of the hosts' objects (a multi-host
 * MLRT_DEVICE_INVENTORY file).  1 when a host did not answer. */
static int remote_main(const char *list, const char *file, const char *rsh, int json)
{
	json_t *all = json_array();
	host_entry *hosts = NULL;
	char err[512];
	int n = 0, failed = 0;

	if ((list != NULL ? hosts_parse_list(list, 1, &hosts, &n, err, sizeof(err))
	                  : hosts_parse_file(file, 1, &hosts, &n, err, sizeof(err))) != 0) {
		fprintf(stderr, "mlrun devices: %s\n", err);
		json_decref(all);
		return 2;
	}
	for (int i = 0; i < n; i++) {
		mlrt_device_info *d;
		int nd, driver, runtime;
		json_t *one = NULL;

		if (remote_json(rsh, hosts[i].name, &one, err, sizeof(err)) != 0 ||
		    host_of_json(one, &d, &nd, &driver, &runtime, err, sizeof(err)) != 0) {
			fprintf(stderr, "mlrun devices: host %s: %s\n", hosts[i].name, err);
			json_decref(one);
			failed = 1;
			continue;
		}
		if (json)
			json_array_append(all, one);
		else
			print_table(hosts[i].name, d, nd, driver, runtime);
		json_decref(one);
		free(d);
	}
	if (json) {
		json_dumpf(all, stdout, JSON_INDENT(2));
		putchar('\n');
	}
	json_decref(all);
	free(hosts);
	return failed;
}

int devices_main(int argc, char **argv)
{
	char host[256] = "localhost";
	const char *list = NULL, *file = NULL, *rsh = "ssh -o BatchMode=yes";
	mlrt_device_info *d;
	int n, driver = 0, runtime = 0, json = 0, rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			json = 1;
		} else if ((strcmp(argv[i], "-H") == 0 || strcmp(argv[i], "--hostfile") == 0 ||
		            strcmp(argv[i], "--rsh") == 0) && i + 1 < argc) {
			const char **to = argv[i][1] == 'H' ? &list : argv[i][2] == 'h' ? &file : &rsh;

			*to = argv[++i];
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("usage: mlrun devices [--json] [-H HOSTS | --hostfile FILE] [--rsh CMD]\n"
			       "The CUDA devices of this host: name, UUID, PCI bus id, memory total and\n"
			       "free, compute capability, utilisation (with NVML), CUDA versions.\n"
			       "With -H or --hostfile, those of every host, asked through --rsh as mlrun\n"
			       "starts its agents (default 'ssh -o BatchMode=yes'); --json then prints\n"
			       "an array of the hosts' objects.\n");
			return 0;
		} else {
			fprintf(stderr, "mlrun devices: unknown argument '%s' (see mlrun devices --help)\n",
			        argv[i]);
			return 2;
		}
	}
	if (list != NULL || file != NULL)
		return remote_main(list, file, rsh, json);
	hosts_this_name(host, sizeof(host));
	rc = inventory(host, &d, &n, &driver, &runtime);
	if (rc == MLRT_ERR_UNSUPPORTED) {
		fprintf(stderr, "mlrun devices: this mlrun was built without CUDA\n");
		return 1;
	}
	if (rc != MLRT_OK) {
		fprintf(stderr, "mlrun devices: cannot query the devices: %s\n", mlrt_strerror(rc));
		return 1;
	}
	if (json)
		rc = print_json(host, d, n, driver, runtime);
	else
		print_table(host, d, n, driver, runtime);
	free(d);
	return rc;
}

int devices_check(const mlrun_opts *o, const char *host, char *why, size_t len)
{
	mlrt_device_info *d;
	int n, driver = 0, runtime = 0, need, rc;

	if (o->gpus_per_proc == 0 && o->gpu_mem == 0 && o->cuda_version == 0)
		return 0;
	rc = inventory(host, &d, &n, &driver, &runtime);
	if (rc != MLRT_OK) {
		snprintf(why, len, "host %s cannot tell its GPUs: %s", host,
		         rc == MLRT_ERR_UNSUPPORTED ? "mlrun was built without CUDA" : mlrt_strerror(rc));
		return -1;
	}
	need = o->gpus_per_proc * o->nproc;
	rc = -1;
	if (need > n) {
		snprintf(why, len, "host %s has %d GPU%s; the job needs %d (%d processes x "
		         "--gpus-per-proc %d)", host, n, n == 1 ? "" : "s", need, o->nproc,
		         o->gpus_per_proc);
		goto out;
	}
	if (o->cuda_version > 0 && driver < o->cuda_version) {
		char have[16], want[16];

		version_str(driver, have, sizeof(have));
		version_str(o->cuda_version, want, sizeof(want));
		snprintf(why, len, "host %s: the driver supports CUDA %s; the job needs %s", host,
		         have, want);
		goto out;
	}
	for (int i = 0; i < need; i++)
		if (d[i].mem_total < o->gpu_mem) {
			snprintf(why, len, "host %s: GPU %d (%s) has %" PRIu64 " MiB; the job needs %" PRIu64
			         " MiB per GPU (--gpu-mem)", host, i, d[i].name, d[i].mem_total >> 20,
			         o->gpu_mem >> 20);
			goto out;
		}
	rc = 0;
out:
	free(d);
	return rc;
}
