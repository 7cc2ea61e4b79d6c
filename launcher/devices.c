/* `mlrun devices` and the GPU requirements of a job (--gpus-per-proc,
 * --gpu-mem, --cuda), checked against this host before anything starts. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include <mlrt/device.h>

#include "launcher/devices.h"

/* The inventory of this host; *n gets the count.  Returns MLRT_OK, or
 * MLRT_ERR_UNSUPPORTED for a build without CUDA. */
static int inventory(mlrt_device_info **out, int *n, int *driver, int *runtime)
{
	int rc;

	*out = NULL;
	*n = 0;
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
	printf("%-3s %-28s %-40s %-13s %10s %10s %4s %5s\n", "idx", "name", "uuid", "pci", "total MiB",
	       "free MiB", "cc", "util");
	for (int i = 0; i < n; i++) {
		char util[16] = "-";

		if (d[i].util_percent >= 0)
			snprintf(util, sizeof(util), "%d%%", d[i].util_percent);
		printf("%-3d %-28.28s %-40s %-13s %10" PRIu64 " %10" PRIu64 " %d.%d %5s\n", d[i].index,
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
	gethostname(host, sizeof(host) - 1);
	rc = inventory(&d, &n, &driver, &runtime);
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
	rc = inventory(&d, &n, &driver, &runtime);
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
