/* mlrun ckpt: look into a checkpoint directory without a job running.
 *
 *   mlrun ckpt ls DIR              one row per step directory, newest first
 *   mlrun ckpt verify DIR [STEP]   sizes, tensors and CRC32Cs of rank files
 *   mlrun ckpt inspect DIR STEP    manifest, where each block lies, metadata
 *
 * Everything about the format goes through ckpt/format.h; this file makes
 * no HDF5 calls of its own.  See docs/ckpt-cli.md. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ckpt/format.h"
#include "launcher/ckpt_cli.h"
#include "runtime/common.h"

#define SCRATCH_BYTES ((size_t)8 << 20) /* verify streams tensor data through this */
#define META_SHOWN 16                   /* metadata values printed before "..." */
#define SHAPE_MAX (MLRT_CKPT_MAX_DIMS * 22 + 4)

/* Exit statuses (ckpt_cli.h). */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

static void usage(FILE *to)
{
	fputs("usage: mlrun ckpt ls DIR\n"
	      "       mlrun ckpt verify DIR [STEP]\n"
	      "       mlrun ckpt inspect DIR STEP\n"
	      "\n"
	      "Look into a checkpoint directory (the DIR given to mlrt_ckpt_open):\n"
	      "  ls       one row per step directory, newest first: committed or not,\n"
	      "           world size, bytes on disk, tensors, commit time (UTC)\n"
	      "  verify   check each rank file of STEP (default: of every committed step)\n"
	      "           against the manifest: size, tensors present, CRC32C of the data\n"
	      "  inspect  the manifest of STEP, each tensor's block in each rank file\n"
	      "           (shape, position, CRC32C, byte offset in the file) and the\n"
	      "           metadata values\n"
	      "\n"
	      "Exit status: 0 when all is well; 1 when DIR or a step is missing, damaged\n"
	      "or not committed; 2 for bad usage.\n",
	      to);
}

/* ---- small helpers ---- */

static int check_dir(const char *dir)
{
	struct stat st;

	if (stat(dir, &st) != 0) {
		if (errno == ENOENT)
			fprintf(stderr, "mlrun ckpt: no such directory %s\n", dir);
		else
			fprintf(stderr, "mlrun ckpt: cannot read %s: %s\n", dir, strerror(errno));
		return CLI_FAIL;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "mlrun ckpt: %s is not a directory\n", dir);
		return CLI_FAIL;
	}
	return CLI_OK;
}

static int parse_step(const char *s, int64_t *step)
{
	if (mlrti_parse_int(s, 0, INT64_MAX, step) != MLRT_OK) {
		fprintf(stderr, "mlrun ckpt: invalid step '%s': want a whole number >= 0\n", s);
		return CLI_USAGE;
	}
	return CLI_OK;
}

static int step_dir(char *buf, size_t n, const char *dir, int64_t step)
{
	if (mlrti_ckpt_step_path(buf, n, dir, step) != MLRT_OK) {
		fprintf(stderr, "mlrun ckpt: path of step %" PRId64 " in %s is too long\n", step, dir);
		return CLI_FAIL;
	}
	return CLI_OK;
}

/* ISO 8601 in UTC: 2026-11-30T11:40:00Z. */
static void format_time(char *buf, size_t n, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, n, "%" PRId64, t);
}

/* "[4, 250]" */
static void format_shape(char *buf, size_t n, int ndim, const int64_t *shape)
{
	size_t len = 0;

	buf[0] = '\0';
	for (int d = 0; d < ndim && len < n; d++)
		len += (size_t)snprintf(buf + len, n - len, "%s%" PRId64, d ? ", " : "[", shape[d]);
	if (len < n)
		snprintf(buf + len, n - len, "]");
}

/* Bytes of the regular files in stepdir. */
static int dir_bytes(const char *stepdir, int64_t *bytes)
{
	struct dirent *e;
	DIR *d = opendir(stepdir);

	*bytes = 0;
	if (d == NULL)
		return MLRT_ERR_IO;
	while ((e = readdir(d)) != NULL) {
		char path[PATH_MAX];
		struct stat st;

		if (snprintf(path, sizeof(path), "%s/%s", stepdir, e->d_name) >= (int)sizeof(path))
			continue;
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
			*bytes += st.st_size;
	}
	closedir(d);
	return MLRT_OK;
}

/* ---- ls ---- */

#define LS_ROW "%-10s %-9s %5s %12s %7s  %s\n"

/* One row; CLI_FAIL (row still printed) when the step cannot be read. */
static int ls_row(const char *dir, const mlrti_ckpt_step *s)
{
	char stepdir[PATH_MAX], step[24], world[16] = "-", bytes[24] = "?", tensors[24] = "-";
	char when[32] = "-";
	mlrti_ckpt_manifest m;
	int64_t b;
	int rc = CLI_OK;

	if (step_dir(stepdir, sizeof(stepdir), dir, s->step) != CLI_OK)
		return CLI_FAIL;
	snprintf(step, sizeof(step), "%" PRId64, s->step);
	if (dir_bytes(stepdir, &b) == MLRT_OK)
		snprintf(bytes, sizeof(bytes), "%" PRId64, b);
	if (s->committed) {
		if (mlrti_ckpt_read_manifest(stepdir, &m) == MLRT_OK) {
			snprintf(world, sizeof(world), "%d", m.world_size);
			snprintf(tensors, sizeof(tensors), "%zu", m.ntensors);
			format_time(when, sizeof(when), m.time);
			mlrti_ckpt_manifest_fini(&m);
		} else {
			fprintf(stderr,
			        "mlrun ckpt: %s/" MLRTI_CKPT_MANIFEST " cannot be read: step %" PRId64
			        " is damaged (run mlrun ckpt verify %s %" PRId64 ")\n",
			        stepdir, s->step, dir, s->step);
			snprintf(world, sizeof(world), "?");
			snprintf(tensors, sizeof(tensors), "?");
			snprintf(when, sizeof(when), "?");
			rc = CLI_FAIL;
		}
	}
	printf(LS_ROW, step, s->committed ? "yes" : "no", world, bytes, tensors, when);
	return rc;
}

static int cmd_ls(int argc, char **argv)
{
	mlrti_ckpt_step *steps = NULL;
	size_t n = 0;
	int rc;

	if (argc != 2) {
		usage(stderr);
		return CLI_USAGE;
	}
	rc = check_dir(argv[1]);
	if (rc != CLI_OK)
		return rc;
	if (mlrti_ckpt_list_steps(argv[1], &steps, &n) != MLRT_OK) {
		fprintf(stderr, "mlrun ckpt: cannot list %s\n", argv[1]);
		return CLI_FAIL;
	}
	if (n == 0)
		printf("no checkpoint steps in %s (no step-N directories)\n", argv[1]);
	else
		printf(LS_ROW, "STEP", "COMMITTED", "WORLD", "BYTES", "TENSORS", "TIME (UTC)");
	for (size_t i = 0; i < n; i++)
		if (ls_row(argv[1], &steps[i]) != CLI_OK)
			rc = CLI_FAIL;
	free(steps);
	return rc;
}

/* ---- verify ---- */

/* Verify every rank file of one step and print its verdict. */
static int verify_step(const char *dir, int64_t step, void *scratch)
{
	char stepdir[PATH_MAX], why[PATH_MAX + 512];
	mlrti_ckpt_manifest m;
	int64_t bytes = 0;
	int damaged = 0, rc;

	if (step_dir(stepdir, sizeof(stepdir), dir, step) != CLI_OK)
		return CLI_FAIL;
	rc = mlrti_ckpt_read_manifest(stepdir, &m);
	if (rc == MLRT_ERR_NOT_FOUND) {
		printf("step %" PRId64 ": not committed (no " MLRTI_CKPT_MANIFEST
		       " in %s): a save did not finish; nothing to verify\n",
		       step, stepdir);
		return CLI_FAIL;
	}
	if (rc != MLRT_OK) {
		printf("step %" PRId64 ": DAMAGED: %s/" MLRTI_CKPT_MANIFEST " cannot be read (%s)\n",
		       step, stepdir, mlrt_strerror(rc));
		return CLI_FAIL;
	}
	if (m.step != step) {
		printf("step %" PRId64 ": DAMAGED: %s/" MLRTI_CKPT_MANIFEST " is for step %" PRId64
		       "\n",
		       step, stepdir, m.step);
		damaged++;
	}
	for (int r = 0; r < m.world_size; r++) {
		if (mlrti_ckpt_verify_file(stepdir, &m, r, scratch, SCRATCH_BYTES, why, sizeof(why)) !=
		    MLRT_OK) {
			printf("step %" PRId64 ": DAMAGED: %s\n", step, why);
			damaged++;
		}
		bytes += m.file_bytes[r];
	}
	if (damaged == 0)
		printf("step %" PRId64 ": ok (%d files, %" PRId64 " bytes)\n", step, m.world_size,
		       bytes);
	mlrti_ckpt_manifest_fini(&m);
	return damaged ? CLI_FAIL : CLI_OK;
}

/* Every committed step, newest first. */
static int verify_all(const char *dir, void *scratch)
{
	mlrti_ckpt_step *steps = NULL;
	size_t n = 0, committed = 0;
	int rc = CLI_OK;

	if (mlrti_ckpt_list_steps(dir, &steps, &n) != MLRT_OK) {
		fprintf(stderr, "mlrun ckpt: cannot list %s\n", dir);
		return CLI_FAIL;
	}
	for (size_t i = 0; i < n; i++) {
		if (!steps[i].committed) {
			printf("step %" PRId64 ": not committed, skipped\n", steps[i].step);
			continue;
		}
		committed++;
		if (verify_step(dir, steps[i].step, scratch) != CLI_OK)
			rc = CLI_FAIL;
	}
	if (committed == 0) {
		fprintf(stderr, "mlrun ckpt: no committed step in %s: nothing to restore\n", dir);
		rc = CLI_FAIL;
	}
	free(steps);
	return rc;
}

static int cmd_verify(int argc, char **argv)
{
	char stepdir[PATH_MAX];
	void *scratch = NULL;
	int64_t step = -1;
	struct stat st;
	int rc;

	if (argc < 2 || argc > 3) {
		usage(stderr);
		return CLI_USAGE;
	}
	if (argc == 3 && (rc = parse_step(argv[2], &step)) != CLI_OK)
		return rc;
	rc = check_dir(argv[1]);
	if (rc != CLI_OK)
		goto out;
	if (step >= 0) {
		rc = step_dir(stepdir, sizeof(stepdir), argv[1], step);
		if (rc != CLI_OK)
			goto out;
		if (stat(stepdir, &st) != 0) {
			fprintf(stderr, "mlrun ckpt: no step %" PRId64 " in %s (see mlrun ckpt ls %s)\n",
			        step, argv[1], argv[1]);
			rc = CLI_FAIL;
			goto out;
		}
	}
	scratch = malloc(SCRATCH_BYTES);
	if (scratch == NULL) {
		fprintf(stderr, "mlrun ckpt: out of memory for an 8 MiB read buffer\n");
		rc = CLI_FAIL;
		goto out;
	}
	rc = step >= 0 ? verify_step(argv[1], step, scratch) : verify_all(argv[1], scratch);
out:
	free(scratch);
	return rc;
}

/* ---- inspect ---- */

/* Open rank r's file into *f and print its line of the files section.
 * f->h5 < 0 when it cannot be read. */
static int open_rank_file(const char *dir, const mlrti_ckpt_manifest *m, int r,
                          mlrti_ckpt_file *f)
{
	char path[PATH_MAX];
	struct stat st;
	int rc;

	f->h5 = -1;
	f->fd = -1;
	printf("  rank-%d.h5  %" PRId64 " bytes", r, m->file_bytes[r]);
	if (mlrti_ckpt_rank_path(path, sizeof(path), dir, m->step, r) != MLRT_OK) {
		printf("  DAMAGED: path too long\n");
		return CLI_FAIL;
	}
	if (stat(path, &st) != 0) {
		printf("  DAMAGED: %s: %s\n", path, strerror(errno));
		return CLI_FAIL;
	}
	if (st.st_size != m->file_bytes[r]) {
		printf("  DAMAGED: %lld bytes on disk (truncated?)\n", (long long)st.st_size);
		rc = CLI_FAIL;
	} else {
		rc = CLI_OK;
	}
	if (mlrti_ckpt_file_open(path, f) != MLRT_OK) {
		if (rc == CLI_OK)
			printf("  DAMAGED: cannot be opened as HDF5\n");
		return CLI_FAIL;
	}
	if (rc == CLI_OK)
		printf("\n");
	return rc;
}

/* One line per rank file that holds want: its block, where the block lies
 * in the global tensor, its CRC32C and where its data starts in the file. */
static int print_blocks(const mlrti_ckpt_manifest *m, const mlrti_ckpt_tensor *want,
                        mlrti_ckpt_file *files)
{
	char shape[SHAPE_MAX], at[SHAPE_MAX];
	int rc = CLI_OK;

	if (want->kind == MLRTI_CKPT_META) {
		printf("    (in the manifest)\n");
		return CLI_OK;
	}
	for (int r = 0; r < m->world_size; r++) {
		mlrti_ckpt_tensor t;
		int64_t off;
		int got;

		if (!mlrti_ckpt_file_has(want, r))
			continue;
		printf("    rank-%d.h5  ", r);
		if (files[r].h5 < 0) {
			printf("DAMAGED: file unreadable (see files above)\n");
			rc = CLI_FAIL;
			continue;
		}
		got = mlrti_ckpt_file_tensor(&files[r], want->name, &t, &off);
		if (got != MLRT_OK) {
			printf("DAMAGED: tensor %s\n", got == MLRT_ERR_NOT_FOUND ? "missing"
			                                                         : "has malformed attributes");
			rc = CLI_FAIL;
			continue;
		}
		format_shape(shape, sizeof(shape), t.ndim, t.shape);
		format_shape(at, sizeof(at), t.ndim, t.offset);
		printf("block %s at %s  crc32c %08" PRIx32 "  offset %" PRId64 "  bytes %zu\n", shape,
		       at, t.crc, off, t.bytes);
	}
	return rc;
}

/* Up to META_SHOWN values of a metadata tensor. */
static void print_values(const mlrti_ckpt_tensor *t, const void *v)
{
	int64_t n = t->shape[0];

	for (int64_t i = 0; i < n && i < META_SHOWN; i++) {
		if (i > 0)
			printf(" ");
		switch (t->dtype) {
		case MLRT_F32: printf("%.9g", (double)((const float *)v)[i]); break;
		case MLRT_F64: printf("%.17g", ((const double *)v)[i]); break;
		case MLRT_I32: printf("%" PRId32, ((const int32_t *)v)[i]); break;
		case MLRT_I64: printf("%" PRId64, ((const int64_t *)v)[i]); break;
		case MLRT_U8: printf("%u", (unsigned)((const uint8_t *)v)[i]); break;
		case MLRT_F16:
		case MLRT_BF16: printf("0x%04x", (unsigned)((const uint16_t *)v)[i]); break;
		case MLRT_DTYPE_COUNT: printf("?"); break;
		}
	}
	printf("%s\n", n > META_SHOWN ? " ..." : "");
}

static void print_meta(const mlrti_ckpt_manifest *m)
{
	char shape[SHAPE_MAX];
	int any = 0;

	for (size_t i = 0; i < m->ntensors; i++) {
		const mlrti_ckpt_tensor *t = &m->tensors[i];

		if (t->kind != MLRTI_CKPT_META || m->meta[i] == NULL)
			continue;
		if (!any++)
			printf("metadata:\n");
		format_shape(shape, sizeof(shape), 1, t->shape);
		printf("  %s (%s %s) = ", t->name, mlrt_dtype_name(t->dtype), shape);
		print_values(t, m->meta[i]);
	}
}

static int inspect_step(const char *dir, const char *stepdir, int64_t step)
{
	char when[32], shape[SHAPE_MAX];
	mlrti_ckpt_manifest m;
	mlrti_ckpt_file *files = NULL;
	int rc, opened = 0;

	rc = mlrti_ckpt_read_manifest(stepdir, &m);
	if (rc == MLRT_ERR_NOT_FOUND) {
		fprintf(stderr,
		        "mlrun ckpt: step %" PRId64 " is not committed (no " MLRTI_CKPT_MANIFEST
		        " in %s): a save did not finish\n",
		        step, stepdir);
		return CLI_FAIL;
	}
	if (rc != MLRT_OK) {
		fprintf(stderr, "mlrun ckpt: %s/" MLRTI_CKPT_MANIFEST " cannot be read (%s)\n",
		        stepdir, mlrt_strerror(rc));
		return CLI_FAIL;
	}
	rc = CLI_OK;
	files = calloc((size_t)m.world_size, sizeof(*files));
	if (files == NULL) {
		fprintf(stderr, "mlrun ckpt: out of memory\n");
		rc = CLI_FAIL;
		goto out;
	}
	format_time(when, sizeof(when), m.time);
	printf("step %" PRId64 ": committed %s, world size %d, %zu tensors\n", m.step, when,
	       m.world_size, m.ntensors);
	printf("files:\n");
	for (; opened < m.world_size; opened++)
		if (open_rank_file(dir, &m, opened, &files[opened]) != CLI_OK)
			rc = CLI_FAIL;
	printf("tensors:\n");
	for (size_t i = 0; i < m.ntensors; i++) {
		const mlrti_ckpt_tensor *t = &m.tensors[i];

		format_shape(shape, sizeof(shape), t->ndim, t->global_shape);
		printf("  %-24s %-10s %-5s %s\n", t->name, mlrti_ckpt_kind_name(t->kind),
		       mlrt_dtype_name(t->dtype), shape);
		if (print_blocks(&m, t, files) != CLI_OK)
			rc = CLI_FAIL;
	}
	print_meta(&m);
	if (rc != CLI_OK)
		fprintf(stderr,
		        "mlrun ckpt: step %" PRId64 " of %s is damaged (see the DAMAGED lines above); "
		        "a restore would skip it\n",
		        step, dir);
out:
	for (int r = 0; r < opened; r++)
		mlrti_ckpt_file_close(&files[r]);
	free(files);
	mlrti_ckpt_manifest_fini(&m);
	return rc;
}

static int cmd_inspect(int argc, char **argv)
{
	char stepdir[PATH_MAX];
	struct stat st;
	int64_t step;
	int rc;

	if (argc != 3) {
		usage(stderr);
		return CLI_USAGE;
	}
	rc = parse_step(argv[2], &step);
	if (rc == CLI_OK)
		rc = check_dir(argv[1]);
	if (rc == CLI_OK)
		rc = step_dir(stepdir, sizeof(stepdir), argv[1], step);
	if (rc != CLI_OK)
		return rc;
	if (stat(stepdir, &st) != 0) {
		fprintf(stderr, "mlrun ckpt: no step %" PRId64 " in %s (see mlrun ckpt ls %s)\n", step,
		        argv[1], argv[1]);
		return CLI_FAIL;
	}
	return inspect_step(argv[1], stepdir, step);
}

/* ---- dispatch ---- */

static const struct {
	const char *name;
	int (*run)(int argc, char **argv); /* argv[0] is the subcommand */
} commands[] = {
	{.name = "ls", .run = cmd_ls},
	{.name = "verify", .run = cmd_verify},
	{.name = "inspect", .run = cmd_inspect},
};

int ckpt_cli_main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return CLI_USAGE;
	}
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return CLI_OK;
		}
	for (size_t i = 0; i < MLRTI_ARRAY_LEN(commands); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr,
	        "mlrun ckpt: unknown subcommand '%s' (want ls, verify or inspect; see mlrun ckpt "
	        "--help)\n",
	        argv[1]);
	return CLI_USAGE;
}
