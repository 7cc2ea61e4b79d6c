/* Checkpoint files: HDF5 rank files, the manifest, step directories. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <isa-l/crc.h>

#include "ckpt/format.h"
#include "runtime/common.h"

#define WRITE_PIECE (8u << 20) /* bytes: see write_rows() */

/* ---- the HDF5 lock ----
 * HDF5 calls of the whole process go through one lock (the library may be
 * built without thread safety).  While it is held, HDF5's own error
 * printing is off: mlrt reports errors itself, with file and tensor. */

static pthread_mutex_t h5_mutex = PTHREAD_MUTEX_INITIALIZER;
static H5E_auto2_t h5_saved_func;
static void *h5_saved_data;

static void h5_lock(void)
{
	pthread_mutex_lock(&h5_mutex);
	H5Eget_auto2(H5E_DEFAULT, &h5_saved_func, &h5_saved_data);
	H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void h5_unlock(void)
{
	H5Eset_auto2(H5E_DEFAULT, h5_saved_func, h5_saved_data);
	pthread_mutex_unlock(&h5_mutex);
}

/* ---- small helpers ---- */

uint32_t mlrti_crc32c(uint32_t crc, const void *p, size_t n)
{
	const unsigned char *b = p;

	/* ISA-L's crc32_iscsi works on the uninverted register and takes an
	 * int length. */
	crc = ~crc;
	while (n > 0) {
		int len = n > (1u << 30) ? 1 << 30 : (int)n;

		crc = crc32_iscsi((unsigned char *)b, len, crc);
		b += len;
		n -= (size_t)len;
	}
	return ~crc;
}

static const char *const kind_names[MLRTI_CKPT_KIND_COUNT] = {
	[MLRTI_CKPT_RANK] = "rank",
	[MLRTI_CKPT_REPLICATED] = "replicated",
	[MLRTI_CKPT_SHARD] = "shard",
	[MLRTI_CKPT_META] = "meta",
};

const char *mlrti_ckpt_kind_name(mlrti_ckpt_kind k)
{
	return k < MLRTI_CKPT_KIND_COUNT ? kind_names[k] : "invalid";
}

static int kind_from_name(const char *s, mlrti_ckpt_kind *k)
{
	for (int i = 0; i < MLRTI_CKPT_KIND_COUNT; i++)
		if (strcmp(s, kind_names[i]) == 0) {
			*k = (mlrti_ckpt_kind)i;
			return MLRT_OK;
		}
	return MLRT_ERR_CORRUPT;
}

static int dtype_from_name(const char *s, mlrt_dtype *t)
{
	for (int i = 0; i < MLRT_DTYPE_COUNT; i++)
		if (strcmp(s, mlrt_dtype_name((mlrt_dtype)i)) == 0) {
			*t = (mlrt_dtype)i;
			return MLRT_OK;
		}
	return MLRT_ERR_CORRUPT;
}

int64_t mlrti_ckpt_elems(int ndim, const int64_t *shape)
{
	int64_t n = 1;

	for (int d = 0; d < ndim; d++)
		n *= shape[d];
	return n;
}

static int errno_status(int e)
{
	return e == ENOSPC || e == EDQUOT ? MLRT_ERR_NOSPACE : MLRT_ERR_IO;
}

int mlrti_ckpt_step_path(char *buf, size_t n, const char *dir, int64_t step)
{
	int len = snprintf(buf, n, "%s/step-%" PRId64, dir, step);

	return len < 0 || (size_t)len >= n ? MLRT_ERR_TOO_LARGE : MLRT_OK;
}

int mlrti_ckpt_rank_path(char *buf, size_t n, const char *dir, int64_t step, int rank)
{
	int len = snprintf(buf, n, "%s/step-%" PRId64 "/rank-%d.h5", dir, step, rank);

	return len < 0 || (size_t)len >= n ? MLRT_ERR_TOO_LARGE : MLRT_OK;
}

int mlrti_ckpt_fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = MLRT_OK;

	if (fd < 0 || fsync(fd) != 0) {
		rc = errno_status(errno);
		mlrt_log(MLRT_LOG_ERROR, "ckpt: cannot fsync %s: %s", path, strerror(errno));
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

/* ---- step directories ---- */

static int parse_step_name(const char *name, int64_t *step)
{
	if (strncmp(name, "step-", 5) != 0)
		return MLRT_ERR_INVALID;
	return mlrti_parse_int(name + 5, 0, INT64_MAX, step);
}

static int cmp_step_desc(const void *a, const void *b)
{
	int64_t x = ((const mlrti_ckpt_step *)a)->step, y = ((const mlrti_ckpt_step *)b)->step;

	return x < y ? 1 : x > y ? -1 : 0;
}

int mlrti_ckpt_list_steps(const char *dir, mlrti_ckpt_step **steps, size_t *n)
{
	mlrti_ckpt_step *v = NULL;
	size_t cap = 0, len = 0;
	struct dirent *e;
	DIR *d;

	*steps = NULL;
	*n = 0;
	d = opendir(dir);
	if (d == NULL) {
		if (errno == ENOENT)
			return MLRT_OK;
		mlrt_log(MLRT_LOG_ERROR, "ckpt: cannot read directory %s: %s", dir, strerror(errno));
		return MLRT_ERR_IO;
	}
	while ((e = readdir(d)) != NULL) {
		char path[PATH_MAX];
		struct stat st;
		int64_t step;

		if (parse_step_name(e->d_name, &step) != MLRT_OK)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s/" MLRTI_CKPT_MANIFEST, dir, e->d_name) >=
		    (int)sizeof(path))
			continue;
		if (len == cap) {
			mlrti_ckpt_step *nv = realloc(v, (cap = cap ? 2 * cap : 16) * sizeof(*v));

			if (nv == NULL) {
				free(v);
				closedir(d);
				return MLRT_ERR_NOMEM;
			}
			v = nv;
		}
		v[len].step = step;
		v[len].committed = stat(path, &st) == 0 && S_ISREG(st.st_mode);
		len++;
	}
	closedir(d);
	if (len > 0)
		qsort(v, len, sizeof(*v), cmp_step_desc);
	*steps = v;
	*n = len;
	return MLRT_OK;
}

/* Unlink every entry of stepdir but the manifest (flat: checkpoints make
 * no subdirectories). */
static int empty_dir(const char *stepdir)
{
	struct dirent *e;
	int rc = MLRT_OK;
	DIR *d = opendir(stepdir);

	if (d == NULL)
		return errno == ENOENT ? MLRT_OK : errno_status(errno);
	while ((e = readdir(d)) != NULL) {
		char path[PATH_MAX];

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", stepdir, e->d_name);
		if (unlink(path) != 0 && errno != ENOENT) {
			mlrt_log(MLRT_LOG_ERROR, "ckpt: cannot remove %s: %s", path, strerror(errno));
			rc = MLRT_ERR_IO;
		}
	}
	closedir(d);
	return rc;
}

/* Remove stepdir's manifest, durably. */
static int uncommit(const char *stepdir)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/" MLRTI_CKPT_MANIFEST, stepdir);
	if (unlink(path) != 0) {
		if (errno == ENOENT)
			return MLRT_OK;
		mlrt_log(MLRT_LOG_ERROR, "ckpt: cannot remove %s: %s", path, strerror(errno));
		return MLRT_ERR_IO;
	}
	return mlrti_ckpt_fsync_path(stepdir);
}

int mlrti_ckpt_remove_step(const char *dir, int64_t step)
{
	char stepdir[PATH_MAX];
	int rc;

	MLRTI_CHECK_GOTO(mlrti_ckpt_step_path(stepdir, sizeof(stepdir), dir, step), rc, out);
	MLRTI_CHECK_GOTO(uncommit(stepdir), rc, out);
	MLRTI_CHECK_GOTO(empty_dir(stepdir), rc, out);
	if (rmdir(stepdir) != 0 && errno != ENOENT) {
		mlrt_log(MLRT_LOG_ERROR, "ckpt: cannot remove %s: %s", stepdir, strerror(errno));
		rc = MLRT_ERR_IO;
	}
out:
	return rc;
}

int mlrti_ckpt_prepare_step(const char *dir, int64_t step)
{
	char stepdir[PATH_MAX];
	int rc;

	MLRTI_CHECK_GOTO(mlrti_ckpt_step_path(stepdir, sizeof(stepdir), dir, step), rc, out);
	if (mkdir(stepdir, 0755) == 0) {
		rc = mlrti_ckpt_fsync_path(dir);
		goto out;
	}
	if (errno != EEXIST) {
		rc = errno_status(errno);
		mlrt_log(MLRT_LOG_ERROR, "ckpt: cannot create %s: %s", stepdir, strerror(errno));
		goto out;
	}
	/* Left by an earlier run (a crash, or a step saved again after a
	 * restore from an older one). */
	MLRTI_CHECK_GOTO(uncommit(stepdir), rc, out);
	rc = empty_dir(stepdir);
out:
	return rc;
}

/* ---- HDF5 types and attributes ---- */

/* The HDF5 type of t, little-endian as in memory; the caller closes it.
 * Half and bfloat16 are IEEE-style floats of 16 bits, which h5py maps
 * to numpy's float16 (half) and to a 16-bit float (bfloat16). */
static hid_t h5_type(mlrt_dtype t)
{
	hid_t ty;

	switch (t) {
	case MLRT_F32: return H5Tcopy(H5T_IEEE_F32LE);
	case MLRT_F64: return H5Tcopy(H5T_IEEE_F64LE);
	case MLRT_I32: return H5Tcopy(H5T_STD_I32LE);
	case MLRT_I64: return H5Tcopy(H5T_STD_I64LE);
	case MLRT_U8: return H5Tcopy(H5T_STD_U8LE);
	case MLRT_F16:
	case MLRT_BF16:
		ty = H5Tcopy(H5T_IEEE_F32LE);
		if (ty < 0)
			return ty;
		if ((t == MLRT_F16 ? H5Tset_fields(ty, 15, 10, 5, 0, 10)
		                   : H5Tset_fields(ty, 15, 7, 8, 0, 7)) < 0 ||
		    H5Tset_precision(ty, 16) < 0 || H5Tset_size(ty, 2) < 0 ||
		    H5Tset_ebias(ty, t == MLRT_F16 ? 15 : 127) < 0) {
			H5Tclose(ty);
			return -1;
		}
		return ty;
	case MLRT_DTYPE_COUNT: break;
	}
	return -1;
}

static hid_t str_type(size_t len)
{
	hid_t ty = H5Tcopy(H5T_C_S1);

	if (ty >= 0 && (H5Tset_size(ty, len) < 0 || H5Tset_strpad(ty, H5T_STR_NULLTERM) < 0)) {
		H5Tclose(ty);
		return -1;
	}
	return ty;
}

static int attr_write(hid_t obj, const char *name, hid_t type, int rank, hsize_t len,
                      const void *val)
{
	hid_t space = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &len, NULL);
	hid_t attr = space < 0 ? -1 : H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
	int ok = attr >= 0 && H5Awrite(attr, type, val) >= 0;

	if (attr >= 0)
		H5Aclose(attr);
	if (space >= 0)
		H5Sclose(space);
	return ok ? MLRT_OK : MLRT_ERR_IO;
}

static int attr_write_str(hid_t obj, const char *name, const char *val)
{
	hid_t ty = str_type(strlen(val) + 1);
	int rc = ty < 0 ? MLRT_ERR_IO : attr_write(obj, name, ty, 0, 0, val);

	if (ty >= 0)
		H5Tclose(ty);
	return rc;
}

static int attr_write_i64(hid_t obj, const char *name, int64_t v)
{
	return attr_write(obj, name, H5T_NATIVE_INT64, 0, 0, &v);
}

/* Read a scalar or 1-D attribute of up to cap elements of memory type
 * type; *len (may be NULL) gets the element count. */
static int attr_read(hid_t obj, const char *name, hid_t type, void *val, hsize_t cap,
                     hsize_t *len)
{
	hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
	hid_t space = attr < 0 ? -1 : H5Aget_space(attr);
	hssize_t n = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
	int ok = n >= 0 && (hsize_t)n <= cap && H5Aread(attr, type, val) >= 0;

	if (ok && len != NULL)
		*len = (hsize_t)n;
	if (space >= 0)
		H5Sclose(space);
	if (attr >= 0)
		H5Aclose(attr);
	return ok ? MLRT_OK : MLRT_ERR_CORRUPT;
}

/* A string attribute of any fixed length into buf (NUL-terminated). */
static int attr_read_str(hid_t obj, const char *name, char *buf, size_t cap)
{
	hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
	hid_t ftype = attr < 0 ? -1 : H5Aget_type(attr);
	size_t len = ftype < 0 ? 0 : H5Tget_size(ftype);
	hid_t mtype = -1;
	int ok = 0;

	if (ftype >= 0 && H5Tget_class(ftype) == H5T_STRING && !H5Tis_variable_str(ftype) &&
	    len > 0 && len < cap) {
		mtype = str_type(len + 1);
		memset(buf, 0, cap);
		ok = mtype >= 0 && H5Aread(attr, mtype, buf) >= 0;
	}
	if (mtype >= 0)
		H5Tclose(mtype);
	if (ftype >= 0)
		H5Tclose(ftype);
	if (attr >= 0)
		H5Aclose(attr);
	return ok ? MLRT_OK : MLRT_ERR_CORRUPT;
}

static hid_t file_access_plist(void)
{
	hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);

	if (fapl < 0)
		return fapl;
	H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
#if H5_VERSION_GE(1, 10, 7)
	/* Readers (h5py, `mlrun ckpt`) may hold a file while a job runs. */
	H5Pset_file_locking(fapl, 0, 1);
#endif
	return fapl;
}

/* Create (truncate) path for writing; -1 with *err set on failure. */
static hid_t create_h5(const char *path, hid_t fapl, int *err)
{
	hid_t file;

	errno = 0;
	file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
	if (file < 0)
		*err = errno;
	return file;
}

/* Close *file, which writes what HDF5 still holds; *file becomes -1. */
static int close_h5(hid_t *file, int *err)
{
	int rc = MLRT_OK;

	errno = 0;
	if (H5Fclose(*file) < 0) {
		*err = errno;
		rc = MLRT_ERR_IO;
	}
	*file = -1;
	return rc;
}

/* ---- rank files ---- */

/* Write src into dset in pieces of about WRITE_PIECE bytes (whole rows
 * of the first dimension), each checksummed while it is in cache and
 * handed to the disk at once (sync_file_range on fd), so that the disk
 * works while the next piece is checksummed and copied. */
static int write_rows(hid_t dset, hid_t type, mlrti_ckpt_tensor *t, const char *src, int fd,
                      int *err)
{
	hsize_t start[MLRT_CKPT_MAX_DIMS] = {0}, count[MLRT_CKPT_MAX_DIMS];
	hsize_t rows = (hsize_t)t->shape[0], per, row;
	hid_t fspace = H5Dget_space(dset), mspace = -1;
	int rc = MLRT_ERR_IO;

	t->crc = 0;
	if (fspace < 0)
		return MLRT_ERR_IO;
	row = t->bytes / rows;
	per = row >= WRITE_PIECE ? 1 : WRITE_PIECE / row;
	for (int d = 0; d < t->ndim; d++)
		count[d] = (hsize_t)t->shape[d];
	for (hsize_t r = 0; r < rows; r += per) {
		const char *p = src + r * row;

		start[0] = r;
		count[0] = rows - r < per ? rows - r : per;
		t->crc = mlrti_crc32c(t->crc, p, count[0] * row);
		mspace = H5Screate_simple(t->ndim, count, NULL);
		errno = 0;
		if (mspace < 0 ||
		    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
		    H5Dwrite(dset, type, mspace, fspace, H5P_DEFAULT, p) < 0) {
			*err = errno;
			goto out;
		}
		H5Sclose(mspace);
		mspace = -1;
		if (fd >= 0)
			sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	}
	rc = MLRT_OK;
out:
	if (mspace >= 0)
		H5Sclose(mspace);
	H5Sclose(fspace);
	return rc;
}

static int write_tensor(hid_t file, hid_t lcpl, hid_t dcpl, mlrti_ckpt_tensor *t,
                        const void *src, int fd, int *err)
{
	hsize_t dims[MLRT_CKPT_MAX_DIMS];
	hid_t type = h5_type(t->dtype), space = -1, dset = -1;
	int rc = MLRT_ERR_IO;

	for (int d = 0; d < t->ndim; d++)
		dims[d] = (hsize_t)t->shape[d];
	t->crc = 0;
	space = H5Screate_simple(t->ndim, dims, NULL);
	if (type < 0 || space < 0)
		goto out;
	dset = H5Dcreate2(file, t->name, type, space, lcpl, dcpl, H5P_DEFAULT);
	if (dset < 0 || (t->bytes > 0 && write_rows(dset, type, t, src, fd, err) != MLRT_OK))
		goto out;
	if (attr_write_str(dset, "dtype", mlrt_dtype_name(t->dtype)) != MLRT_OK ||
	    attr_write_str(dset, "kind", mlrti_ckpt_kind_name(t->kind)) != MLRT_OK ||
	    attr_write(dset, "global_shape", H5T_NATIVE_INT64, 1, (hsize_t)t->ndim,
	               t->global_shape) != MLRT_OK ||
	    attr_write(dset, "offset", H5T_NATIVE_INT64, 1, (hsize_t)t->ndim, t->offset) !=
	            MLRT_OK ||
	    attr_write(dset, "crc32c", H5T_NATIVE_UINT32, 0, 0, &t->crc) != MLRT_OK)
		goto out;
	rc = MLRT_OK;
out:
	if (dset >= 0)
		H5Dclose(dset);
	if (space >= 0)
		H5Sclose(space);
	if (type >= 0)
		H5Tclose(type);
	return rc;
}

static int write_h5(const char *tmp, int64_t step, int rank, int world, mlrti_ckpt_tensor *t,
                    const void *const *src, size_t n, const char **what, int *err)
{
	hid_t fapl = file_access_plist(), lcpl = H5Pcreate(H5P_LINK_CREATE);
	hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE), file = -1;
	int rc = MLRT_ERR_IO, fd = -1;

	*what = NULL;
	if (fapl < 0 || lcpl < 0 || dcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0 ||
	    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0)
		goto out;
	file = create_h5(tmp, fapl, err);
	if (file < 0)
		goto out;
	if (attr_write_str(file, "format", MLRTI_CKPT_FORMAT) != MLRT_OK ||
	    attr_write_i64(file, "step", step) != MLRT_OK ||
	    attr_write_i64(file, "rank", rank) != MLRT_OK ||
	    attr_write_i64(file, "world_size", world) != MLRT_OK)
		goto out;
	fd = open(tmp, O_RDONLY | O_CLOEXEC); /* only to start writeback early */
	for (size_t i = 0; i < n; i++) {
		rc = write_tensor(file, lcpl, dcpl, &t[i], src[i], fd, err);
		if (rc != MLRT_OK) {
			*what = t[i].name;
			goto out;
		}
	}
	rc = close_h5(&file, err);
out:
	if (fd >= 0)
		close(fd);
	if (file >= 0)
		H5Fclose(file);
	if (dcpl >= 0)
		H5Pclose(dcpl);
	if (lcpl >= 0)
		H5Pclose(lcpl);
	if (fapl >= 0)
		H5Pclose(fapl);
	return rc;
}

/* When HDF5 fails without saying why, a full filesystem is the usual
 * reason: ask the filesystem. */
static int guess_errno(const char *path, int err)
{
	int fd;

	if (err != 0)
		return err;
	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd >= 0) {
		err = posix_fallocate(fd, 0, 1 << 20); /* returns the error */
		if (err == 0)
			err = EIO;
		close(fd);
	}
	return err != 0 ? err : EIO;
}

/* tmp was just written by an HDF5 writer that returned rc (err: its
 * errno, when it knew it).  On success make it durable and rename it to
 * path (*bytes, when not NULL, gets its size); on any failure log what
 * went wrong with path (and tensor what), remove tmp and return it. */
static int put_in_place(const char *tmp, const char *path, int rc, int err, const char *what,
                        int64_t *bytes)
{
	struct stat st;

	if (rc != MLRT_OK) {
		err = guess_errno(tmp, err);
		rc = errno_status(err);
		mlrt_log(MLRT_LOG_ERROR, "ckpt: cannot write %s%s%s%s: %s", path,
		         what ? " (tensor " : "", what ? what : "", what ? ")" : "", strerror(err));
		goto fail;
	}
	MLRTI_CHECK_GOTO(mlrti_ckpt_fsync_path(tmp), rc, fail);
	if (stat(tmp, &st) != 0 || rename(tmp, path) != 0) {
		rc = errno_status(errno);
		mlrt_log(MLRT_LOG_ERROR, "ckpt: cannot rename %s into place: %s", tmp, strerror(errno));
		goto fail;
	}
	if (bytes != NULL)
		*bytes = st.st_size;
	return MLRT_OK;
fail:
	unlink(tmp);
	return rc;
}

int mlrti_ckpt_write_file(const char *path, int64_t step, int rank, int world,
                          mlrti_ckpt_tensor *t, const void *const *src, size_t n, int64_t *bytes)
{
	char tmp[PATH_MAX];
	const char *what = NULL;
	int rc, err = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return MLRT_ERR_TOO_LARGE;
	h5_lock();
	rc = write_h5(tmp, step, rank, world, t, src, n, &what, &err);
	h5_unlock();
	return put_in_place(tmp, path, rc, err, what, bytes);
}

/* ---- the manifest ---- */

/* Rows of the manifest's tables, as stored. */
typedef struct file_row {
	char name[32];
	int64_t bytes;
} file_row;

typedef struct tensor_row {
	char name[MLRTI_CKPT_NAME_MAX];
	char kind[16];
	char dtype[8];
	int32_t ndim;
	int64_t global_shape[MLRT_CKPT_MAX_DIMS];
} tensor_row;

static hid_t file_row_type(void)
{
	hid_t ty = H5Tcreate(H5T_COMPOUND, sizeof(file_row)), s = str_type(32);

	if (ty < 0 || s < 0 || H5Tinsert(ty, "name", HOFFSET(file_row, name), s) < 0 ||
	    H5Tinsert(ty, "bytes", HOFFSET(file_row, bytes), H5T_NATIVE_INT64) < 0) {
		if (ty >= 0)
			H5Tclose(ty);
		ty = -1;
	}
	if (s >= 0)
		H5Tclose(s);
	return ty;
}

static hid_t tensor_row_type(void)
{
	hsize_t dims = MLRT_CKPT_MAX_DIMS;
	hid_t ty = H5Tcreate(H5T_COMPOUND, sizeof(tensor_row));
	hid_t name = str_type(MLRTI_CKPT_NAME_MAX), kind = str_type(16), dtype = str_type(8);
	hid_t shape = H5Tarray_create2(H5T_NATIVE_INT64, 1, &dims);
	int ok = ty >= 0 && name >= 0 && kind >= 0 && dtype >= 0 && shape >= 0 &&
	         H5Tinsert(ty, "name", HOFFSET(tensor_row, name), name) >= 0 &&
	         H5Tinsert(ty, "kind", HOFFSET(tensor_row, kind), kind) >= 0 &&
	         H5Tinsert(ty, "dtype", HOFFSET(tensor_row, dtype), dtype) >= 0 &&
	         H5Tinsert(ty, "ndim", HOFFSET(tensor_row, ndim), H5T_NATIVE_INT32) >= 0 &&
	         H5Tinsert(ty, "global_shape", HOFFSET(tensor_row, global_shape), shape) >= 0;

	if (!ok && ty >= 0) {
		H5Tclose(ty);
		ty = -1;
	}
	if (name >= 0)
		H5Tclose(name);
	if (kind >= 0)
		H5Tclose(kind);
	if (dtype >= 0)
		H5Tclose(dtype);
	if (shape >= 0)
		H5Tclose(shape);
	return ty;
}

static int table_write(hid_t file, const char *name, hid_t type, hsize_t n, const void *rows)
{
	hid_t space = H5Screate_simple(1, &n, NULL);
	hid_t dset = space < 0 ? -1 : H5Dcreate2(file, name, type, space, H5P_DEFAULT,
	                                          H5P_DEFAULT, H5P_DEFAULT);
	int ok = dset >= 0 && (n == 0 || H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT,
	                                          rows) >= 0);

	if (dset >= 0)
		H5Dclose(dset);
	if (space >= 0)
		H5Sclose(space);
	return ok ? MLRT_OK : MLRT_ERR_IO;
}

/* Read a 1-D table of at most cap rows; *n gets the row count. */
static int table_read(hid_t file, const char *name, hid_t type, size_t row, void **rows,
                      size_t *n, size_t cap)
{
	hid_t dset = H5Dopen2(file, name, H5P_DEFAULT);
	hid_t space = dset < 0 ? -1 : H5Dget_space(dset);
	hssize_t len = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
	int ok = 0;

	*rows = NULL;
	if (len >= 0 && (size_t)len <= cap) {
		*rows = calloc((size_t)len + 1, row);
		ok = *rows != NULL &&
		     (len == 0 || H5Dread(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, *rows) >= 0);
		*n = (size_t)len;
	}
	if (space >= 0)
		H5Sclose(space);
	if (dset >= 0)
		H5Dclose(dset);
	if (!ok) {
		free(*rows);
		*rows = NULL;
	}
	return ok ? MLRT_OK : MLRT_ERR_CORRUPT;
}

static int write_meta(hid_t file, hid_t lcpl, const mlrti_ckpt_tensor *t, const void *val)
{
	char path[MLRTI_CKPT_NAME_MAX + 8];
	hsize_t dims = (hsize_t)t->shape[0];
	hid_t type = h5_type(t->dtype), space = H5Screate_simple(1, &dims, NULL), dset = -1;
	int ok = 0;

	snprintf(path, sizeof(path), "meta/%s", t->name);
	if (type >= 0 && space >= 0)
		dset = H5Dcreate2(file, path, type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
	ok = dset >= 0 &&
	     (t->bytes == 0 || H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, val) >= 0) &&
	     attr_write_str(dset, "dtype", mlrt_dtype_name(t->dtype)) == MLRT_OK;
	if (dset >= 0)
		H5Dclose(dset);
	if (space >= 0)
		H5Sclose(space);
	if (type >= 0)
		H5Tclose(type);
	return ok ? MLRT_OK : MLRT_ERR_IO;
}

static int write_manifest_h5(const char *tmp, const mlrti_ckpt_manifest *m, int *err)
{
	hid_t fapl = file_access_plist(), lcpl = H5Pcreate(H5P_LINK_CREATE), file = -1;
	hid_t frow = file_row_type(), trow = tensor_row_type();
	file_row *files = calloc((size_t)m->world_size, sizeof(*files));
	tensor_row *tensors = calloc(m->ntensors + 1, sizeof(*tensors));
	int rc = MLRT_ERR_IO;

	if (fapl < 0 || lcpl < 0 || frow < 0 || trow < 0 || files == NULL || tensors == NULL ||
	    H5Pset_create_intermediate_group(lcpl, 1) < 0)
		goto out;
	for (int r = 0; r < m->world_size; r++) {
		snprintf(files[r].name, sizeof(files[r].name), "rank-%d.h5", r);
		files[r].bytes = m->file_bytes[r];
	}
	for (size_t i = 0; i < m->ntensors; i++) {
		const mlrti_ckpt_tensor *t = &m->tensors[i];

		snprintf(tensors[i].name, sizeof(tensors[i].name), "%s", t->name);
		snprintf(tensors[i].kind, sizeof(tensors[i].kind), "%s",
		         mlrti_ckpt_kind_name(t->kind));
		snprintf(tensors[i].dtype, sizeof(tensors[i].dtype), "%s", mlrt_dtype_name(t->dtype));
		tensors[i].ndim = t->ndim;
		memcpy(tensors[i].global_shape, t->global_shape, sizeof(t->global_shape));
	}
	file = create_h5(tmp, fapl, err);
	if (file < 0)
		goto out;
	if (attr_write_str(file, "format", MLRTI_CKPT_FORMAT) != MLRT_OK ||
	    attr_write_i64(file, "step", m->step) != MLRT_OK ||
	    attr_write_i64(file, "world_size", m->world_size) != MLRT_OK ||
	    attr_write_i64(file, "time", m->time) != MLRT_OK ||
	    table_write(file, "files", frow, (hsize_t)m->world_size, files) != MLRT_OK ||
	    table_write(file, "tensors", trow, m->ntensors, tensors) != MLRT_OK)
		goto out;
	for (size_t i = 0; i < m->ntensors; i++)
		if (m->tensors[i].kind == MLRTI_CKPT_META &&
		    write_meta(file, lcpl, &m->tensors[i], m->meta[i]) != MLRT_OK)
			goto out;
	rc = close_h5(&file, err);
out:
	if (file >= 0)
		H5Fclose(file);
	free(tensors);
	free(files);
	if (trow >= 0)
		H5Tclose(trow);
	if (frow >= 0)
		H5Tclose(frow);
	if (lcpl >= 0)
		H5Pclose(lcpl);
	if (fapl >= 0)
		H5Pclose(fapl);
	return rc;
}

int mlrti_ckpt_write_manifest(const char *stepdir, const mlrti_ckpt_manifest *m)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	int rc, err = 0;

	snprintf(path, sizeof(path), "%s/" MLRTI_CKPT_MANIFEST, stepdir);
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return MLRT_ERR_TOO_LARGE;
	h5_lock();
	rc = write_manifest_h5(tmp, m, &err);
	h5_unlock();
	rc = put_in_place(tmp, path, rc, err, NULL, NULL);
	return rc != MLRT_OK ? rc : mlrti_ckpt_fsync_path(stepdir);
}

static int read_meta(hid_t file, mlrti_ckpt_tensor *t, void **val)
{
	char path[MLRTI_CKPT_NAME_MAX + 8], dtype[16];
	hid_t dset, type = -1, space = -1;
	hssize_t n = -1;
	int ok = 0;

	snprintf(path, sizeof(path), "meta/%s", t->name);
	dset = H5Dopen2(file, path, H5P_DEFAULT);
	if (dset >= 0) {
		space = H5Dget_space(dset);
		n = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
	}
	if (n >= 0 && attr_read_str(dset, "dtype", dtype, sizeof(dtype)) == MLRT_OK &&
	    dtype_from_name(dtype, &t->dtype) == MLRT_OK &&
	    (size_t)n * mlrt_dtype_size(t->dtype) <= MLRTI_CKPT_META_MAX) {
		t->ndim = 1;
		t->shape[0] = t->global_shape[0] = n;
		t->bytes = (size_t)n * mlrt_dtype_size(t->dtype);
		type = h5_type(t->dtype);
		*val = malloc(t->bytes + 1);
		ok = type >= 0 && *val != NULL &&
		     (n == 0 || H5Dread(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, *val) >= 0);
	}
	if (type >= 0)
		H5Tclose(type);
	if (space >= 0)
		H5Sclose(space);
	if (dset >= 0)
		H5Dclose(dset);
	return ok ? MLRT_OK : MLRT_ERR_CORRUPT;
}

static int read_manifest_h5(const char *path, mlrti_ckpt_manifest *m, const char **what)
{
	hid_t fapl = file_access_plist(), file = -1;
	hid_t frow = file_row_type(), trow = tensor_row_type();
	file_row *files = NULL;
	tensor_row *rows = NULL;
	char format[32];
	int64_t world = 0;
	size_t nfiles = 0;
	int rc = MLRT_ERR_CORRUPT;

	*what = "cannot be opened as HDF5";
	if (fapl < 0 || frow < 0 || trow < 0)
		goto out;
	file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
	if (file < 0)
		goto out;
	*what = "lacks the attributes of an mlrt manifest";
	if (attr_read_str(file, "format", format, sizeof(format)) != MLRT_OK ||
	    strcmp(format, MLRTI_CKPT_FORMAT) != 0 ||
	    attr_read(file, "step", H5T_NATIVE_INT64, &m->step, 1, NULL) != MLRT_OK ||
	    attr_read(file, "world_size", H5T_NATIVE_INT64, &world, 1, NULL) != MLRT_OK ||
	    attr_read(file, "time", H5T_NATIVE_INT64, &m->time, 1, NULL) != MLRT_OK ||
	    world < 1 || world > (1 << 24))
		goto out;
	m->world_size = (int)world;
	*what = "has a malformed table of files or tensors";
	if (table_read(file, "files", frow, sizeof(*files), (void **)&files, &nfiles,
	               (size_t)world) != MLRT_OK ||
	    nfiles != (size_t)world ||
	    table_read(file, "tensors", trow, sizeof(*rows), (void **)&rows, &m->ntensors,
	               1u << 20) != MLRT_OK)
		goto out;
	m->file_bytes = calloc((size_t)world, sizeof(*m->file_bytes));
	m->tensors = calloc(m->ntensors + 1, sizeof(*m->tensors));
	m->meta = calloc(m->ntensors + 1, sizeof(*m->meta));
	if (m->file_bytes == NULL || m->tensors == NULL || m->meta == NULL) {
		rc = MLRT_ERR_NOMEM;
		goto out;
	}
	for (int r = 0; r < m->world_size; r++)
		m->file_bytes[r] = files[r].bytes;
	for (size_t i = 0; i < m->ntensors; i++) {
		mlrti_ckpt_tensor *t = &m->tensors[i];

		rows[i].name[sizeof(rows[i].name) - 1] = '\0';
		rows[i].kind[sizeof(rows[i].kind) - 1] = '\0';
		rows[i].dtype[sizeof(rows[i].dtype) - 1] = '\0';
		snprintf(t->name, sizeof(t->name), "%s", rows[i].name);
		if (kind_from_name(rows[i].kind, &t->kind) != MLRT_OK ||
		    dtype_from_name(rows[i].dtype, &t->dtype) != MLRT_OK || rows[i].ndim < 1 ||
		    rows[i].ndim > MLRT_CKPT_MAX_DIMS)
			goto out;
		t->ndim = rows[i].ndim;
		memcpy(t->global_shape, rows[i].global_shape, sizeof(t->global_shape));
		if (t->kind == MLRTI_CKPT_META) {
			*what = "has a malformed metadata value";
			if (read_meta(file, t, &m->meta[i]) != MLRT_OK)
				goto out;
		}
	}
	rc = MLRT_OK;
out:
	free(rows);
	free(files);
	if (file >= 0)
		H5Fclose(file);
	if (trow >= 0)
		H5Tclose(trow);
	if (frow >= 0)
		H5Tclose(frow);
	if (fapl >= 0)
		H5Pclose(fapl);
	return rc;
}

int mlrti_ckpt_read_manifest(const char *stepdir, mlrti_ckpt_manifest *m)
{
	char path[PATH_MAX];
	const char *what = NULL;
	struct stat st;
	int rc;

	memset(m, 0, sizeof(*m));
	snprintf(path, sizeof(path), "%s/" MLRTI_CKPT_MANIFEST, stepdir);
	if (stat(path, &st) != 0)
		return MLRT_ERR_NOT_FOUND;
	h5_lock();
	rc = read_manifest_h5(path, m, &what);
	h5_unlock();
	if (rc != MLRT_OK) {
		mlrt_log(MLRT_LOG_WARN, "ckpt: %s %s", path, what);
		mlrti_ckpt_manifest_fini(m);
	}
	return rc;
}

void mlrti_ckpt_manifest_fini(mlrti_ckpt_manifest *m)
{
	if (m->meta != NULL)
		for (size_t i = 0; i < m->ntensors; i++)
			free(m->meta[i]);
	free(m->meta);
	free(m->tensors);
	free(m->file_bytes);
	memset(m, 0, sizeof(*m));
}

/* ---- reading rank files ---- */

int mlrti_ckpt_file_has(const mlrti_ckpt_tensor *t, int rank)
{
	switch (t->kind) {
	case MLRTI_CKPT_RANK:
	case MLRTI_CKPT_SHARD: return 1;
	case MLRTI_CKPT_REPLICATED: return rank == 0;
	default: return 0;
	}
}

int mlrti_ckpt_file_open(const char *path, mlrti_ckpt_file *f)
{
	hid_t fapl;

	snprintf(f->path, sizeof(f->path), "%s", path);
	f->h5 = -1;
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return errno == ENOENT ? MLRT_ERR_NOT_FOUND : MLRT_ERR_IO;
	h5_lock();
	fapl = file_access_plist();
	if (fapl >= 0) {
		f->h5 = H5Fopen(path, H5F_ACC_RDONLY, fapl);
		H5Pclose(fapl);
	}
	h5_unlock();
	if (f->h5 < 0) {
		close(f->fd);
		f->fd = -1;
		return MLRT_ERR_CORRUPT;
	}
	return MLRT_OK;
}

void mlrti_ckpt_file_close(mlrti_ckpt_file *f)
{
	if (f->h5 >= 0) {
		h5_lock();
		H5Fclose(f->h5);
		h5_unlock();
	}
	if (f->fd >= 0)
		close(f->fd);
	f->h5 = -1;
	f->fd = -1;
}

static int describe(hid_t dset, mlrti_ckpt_tensor *t, int64_t *off)
{
	hsize_t dims[MLRT_CKPT_MAX_DIMS], n = 0;
	char s[32];
	hid_t space = H5Dget_space(dset);
	int ndim = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
	haddr_t addr;
	int rc = MLRT_ERR_CORRUPT;

	if (ndim < 1 || ndim > MLRT_CKPT_MAX_DIMS ||
	    H5Sget_simple_extent_dims(space, dims, NULL) < 0)
		goto out;
	t->ndim = ndim;
	for (int d = 0; d < ndim; d++)
		t->shape[d] = (int64_t)dims[d];
	if (attr_read_str(dset, "dtype", s, sizeof(s)) != MLRT_OK ||
	    dtype_from_name(s, &t->dtype) != MLRT_OK ||
	    attr_read_str(dset, "kind", s, sizeof(s)) != MLRT_OK ||
	    kind_from_name(s, &t->kind) != MLRT_OK ||
	    attr_read(dset, "global_shape", H5T_NATIVE_INT64, t->global_shape, (hsize_t)ndim,
	              &n) != MLRT_OK || n != (hsize_t)ndim ||
	    attr_read(dset, "offset", H5T_NATIVE_INT64, t->offset, (hsize_t)ndim, &n) !=
	            MLRT_OK || n != (hsize_t)ndim ||
	    attr_read(dset, "crc32c", H5T_NATIVE_UINT32, &t->crc, 1, NULL) != MLRT_OK)
		goto out;
	t->bytes = (size_t)mlrti_ckpt_elems(ndim, t->shape) * mlrt_dtype_size(t->dtype);
	addr = H5Dget_offset(dset);
	*off = addr == HADDR_UNDEF ? -1 : (int64_t)addr;
	if (*off < 0 && t->bytes > 0)
		goto out;
	rc = MLRT_OK;
out:
	if (space >= 0)
		H5Sclose(space);
	return rc;
}

int mlrti_ckpt_file_tensor(mlrti_ckpt_file *f, const char *name, mlrti_ckpt_tensor *t,
                           int64_t *off)
{
	hid_t dset;
	int rc;

	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	h5_lock();
	dset = H5Lexists(f->h5, name, H5P_DEFAULT) > 0 ? H5Dopen2(f->h5, name, H5P_DEFAULT) : -1;
	rc = dset < 0 ? MLRT_ERR_NOT_FOUND : describe(dset, t, off);
	if (dset >= 0)
		H5Dclose(dset);
	h5_unlock();
	return rc;
}

int mlrti_ckpt_file_read(mlrti_ckpt_file *f, int64_t off, void *dst, size_t bytes)
{
	char *p = dst;

	while (bytes > 0) {
		ssize_t got = pread(f->fd, p, bytes, off);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			mlrt_log(MLRT_LOG_WARN, "ckpt: %s: %s", f->path,
			         got < 0 ? strerror(errno) : "data ends early (truncated file)");
			return got < 0 ? MLRT_ERR_IO : MLRT_ERR_CORRUPT;
		}
		p += got;
		off += got;
		bytes -= (size_t)got;
	}
	return MLRT_OK;
}

int mlrti_ckpt_file_read_block(mlrti_ckpt_file *f, const mlrti_ckpt_tensor *src,
                               const int64_t *start, const int64_t *count, void *dst,
                               const int64_t *dst_shape, const int64_t *dst_start)
{
	hsize_t fstart[MLRT_CKPT_MAX_DIMS], mstart[MLRT_CKPT_MAX_DIMS];
	hsize_t cnt[MLRT_CKPT_MAX_DIMS], mdims[MLRT_CKPT_MAX_DIMS];
	hid_t dset, fspace = -1, mspace = -1, type = -1;
	int ok = 0;

	for (int d = 0; d < src->ndim; d++) {
		fstart[d] = (hsize_t)start[d];
		mstart[d] = (hsize_t)dst_start[d];
		cnt[d] = (hsize_t)count[d];
		mdims[d] = (hsize_t)dst_shape[d];
	}
	h5_lock();
	dset = H5Dopen2(f->h5, src->name, H5P_DEFAULT);
	if (dset >= 0) {
		fspace = H5Dget_space(dset);
		mspace = H5Screate_simple(src->ndim, mdims, NULL);
		type = h5_type(src->dtype);
	}
	ok = fspace >= 0 && mspace >= 0 && type >= 0 &&
	     H5Sselect_hyperslab(fspace, H5S_SELECT_SET, fstart, NULL, cnt, NULL) >= 0 &&
	     H5Sselect_hyperslab(mspace, H5S_SELECT_SET, mstart, NULL, cnt, NULL) >= 0 &&
	     H5Dread(dset, type, mspace, fspace, H5P_DEFAULT, dst) >= 0;
	if (type >= 0)
		H5Tclose(type);
	if (mspace >= 0)
		H5Sclose(mspace);
	if (fspace >= 0)
		H5Sclose(fspace);
	if (dset >= 0)
		H5Dclose(dset);
	h5_unlock();
	if (!ok)
		mlrt_log(MLRT_LOG_WARN, "ckpt: %s: cannot read a block of tensor %s", f->path,
		         src->name);
	return ok ? MLRT_OK : MLRT_ERR_CORRUPT;
}

/* ---- verification ---- */

static int crc_of(mlrti_ckpt_file *f, int64_t off, size_t bytes, void *scratch, size_t len,
                  uint32_t *crc)
{
	/* The kernel reads ahead while the CRC of each piece is computed. */
	posix_fadvise(f->fd, off, (off_t)bytes, POSIX_FADV_WILLNEED);
	*crc = 0;
	while (bytes > 0) {
		size_t n = bytes < len ? bytes : len;
		int rc = mlrti_ckpt_file_read(f, off, scratch, n);

		if (rc != MLRT_OK)
			return rc;
		*crc = mlrti_crc32c(*crc, scratch, n);
		off += (int64_t)n;
		bytes -= n;
	}
	return MLRT_OK;
}

int mlrti_ckpt_verify_file(const char *stepdir, const mlrti_ckpt_manifest *m, int rank,
                           void *scratch, size_t len, char *why, size_t whylen)
{
	char path[PATH_MAX];
	mlrti_ckpt_file f;
	struct stat st;
	int rc;

	snprintf(path, sizeof(path), "%s/rank-%d.h5", stepdir, rank);
	if (stat(path, &st) != 0) {
		snprintf(why, whylen, "%s: %s", path, strerror(errno));
		return MLRT_ERR_CORRUPT;
	}
	if (st.st_size != m->file_bytes[rank]) {
		snprintf(why, whylen, "%s is %lld bytes but the manifest says %lld (truncated?)",
		         path, (long long)st.st_size, (long long)m->file_bytes[rank]);
		return MLRT_ERR_CORRUPT;
	}
	rc = mlrti_ckpt_file_open(path, &f);
	if (rc != MLRT_OK) {
		snprintf(why, whylen, "%s cannot be opened as HDF5", path);
		return MLRT_ERR_CORRUPT;
	}
	for (size_t i = 0; i < m->ntensors && rc == MLRT_OK; i++) {
		const mlrti_ckpt_tensor *want = &m->tensors[i];
		mlrti_ckpt_tensor t;
		int64_t off;
		uint32_t crc = 0;

		if (!mlrti_ckpt_file_has(want, rank))
			continue;
		rc = mlrti_ckpt_file_tensor(&f, want->name, &t, &off);
		if (rc != MLRT_OK) {
			snprintf(why, whylen, "%s: tensor %s is %s", path, want->name,
			         rc == MLRT_ERR_NOT_FOUND ? "missing" : "malformed");
			break;
		}
		rc = crc_of(&f, off, t.bytes, scratch, len, &crc);
		if (rc != MLRT_OK)
			snprintf(why, whylen, "%s: tensor %s cannot be read", path, want->name);
		else if (crc != t.crc) {
			snprintf(why, whylen,
			         "%s: tensor %s fails its CRC32C (stored %08x, computed %08x)", path,
			         want->name, t.crc, crc);
			rc = MLRT_ERR_CORRUPT;
		}
	}
	mlrti_ckpt_file_close(&f);
	return rc == MLRT_OK ? MLRT_OK : MLRT_ERR_CORRUPT;
}
