/* `mlrun devices` and the GPU requirements of a job (--gpus-per-proc,
 * --gpu-mem, --cuda), checked against this host before anything starts. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include <mlrt/device.h>

#include "launcher/devices.h"

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

/* MLRT_DEVICE_INVENTORY=FILE, for tests: the inventory comes from FILE,
 * in the form `mlrun devices --json` prints: one host's object, or an
 * array of them, of which the one whose "host" is this host applies.
 * Reports what is wrong on stderr (MLRT_ERR_INVALID). */
static int inventory_file(const char *path, const char *host, mlrt_device_info **out, int *n,
                          int *driver, int *runtime)
{
	json_t *root, *me = NULL, *list;
	const char *name, *drv = "none", *rt = "none";
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
	if (me != NULL &&
	    json_unpack_ex(me, &e, JSON_STRICT, "{s:s, s?s, s?s, s:o}", "host", &name, "cuda_driver",
	                   &drv, "cuda_runtime", &rt, "devices", &list) != 0)
		snprintf(why, sizeof(why), "%s", e.text);
	else if (me != NULL && (!json_is_array(list) || version_of(drv) < 0 || version_of(rt) < 0))
		snprintf(why, sizeof(why), "\"devices\" must be an array, and \"cuda_driver\" and "
		         "\"cuda_runtime\" MAJOR.MINOR or \"none\"");
	if (why[0] == '\0') {
		*n = (int)json_array_size(list);
		*driver = version_of(drv);
		*runtime = version_of(rt);
		*out = *n > 0 ? calloc((size_t)*n, sizeof(**out)) : NULL;
		for (i = 0; i < (size_t)*n && why[0] == '\0'; i++)
			if (*out == NULL)
				snprintf(why, sizeof(why), "out of memory");
			else
				device_of_json(json_array_get(list, i), (int)i, &(*out)[i], why, sizeof(why));
	}
	json_decref(root);
	if (why[0] == '\0')
		return MLRT_OK;
	fprintf(stderr, "mlrun: MLRT_DEVICE_INVENTORY=%s: %s (the file holds what `mlrun devices "
	        "--json` prints: one host's object, or an array of them)\n", path, why);
	free(*out);
	*out = NULL;
	*n = 0;
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

int devices_main(int argc, char **argv)
{
	char host[256] = "localhost";
	mlrt_device_info *d;
	int n, driver = 0, runtime = 0, json = 0, rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			json = 1;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("usage: mlrun devices [--json]\n"
			       "The CUDA devices of this host: name, UUID, PCI bus id, memory total and\n"
			       "free, compute capability, utilisation (with NVML), CUDA versions.\n");
			return 0;
		} else {
			fprintf(stderr, "mlrun devices: unknown argument '%s' (see mlrun devices --help)\n",
			        argv[i]);
			return 2;
		}
	}
	if (getenv("MLRT_HOSTNAME") != NULL && getenv("MLRT_HOSTNAME")[0] != '\0')
		snprintf(host, sizeof(host), "%s", getenv("MLRT_HOSTNAME"));
	else
		gethostname(host, sizeof(host) - 1);
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
