/* A fake NCCL, built into the fake CUDA library (fake_cuda.c) and
 * preloaded with it, so that the library's NCCL path (comm/nccl.c) runs on
 * machines without a GPU, across processes, with NCCL's rules:
 *
 *   - a unique id made by one rank and passed to the others;
 *   - nonblocking communicators (ncclConfig_t blocking = 0): init answers
 *     ncclInProgress until every rank has joined, and a collective now and
 *     then answers ncclInProgress too; a call on a communicator whose
 *     state is not ncclSuccess is a misuse (abort), as NCCL's docs ask the
 *     caller to poll ncclCommGetAsyncError first;
 *   - two ranks on one physical GPU fail init with ncclInvalidUsage
 *     ("Duplicate GPU detected");
 *   - collectives are queued on the caller's stream and run when the
 *     stream gets to them; buffers must be device memory of the
 *     communicator's device (else misuse: NCCL would fault);
 *   - a collective waits for every rank's part without a time limit, as
 *     NCCL's kernels do; only ncclCommAbort ends it;
 *   - ncclCommFinalize answers ncclInProgress, and the state turns
 *     ncclSuccess once every rank has finalized.
 *
 * The ranks meet in files under $FAKE_NCCL_DIR (default $TMPDIR or /tmp):
 * a folder per communicator, named by the unique id, with one file per
 * rank per collective, and one when it joins, finalizes and leaves.  Every rank reduces the parts in rank order, so
 * that all get the same bits.
 *
 *   FAKE_NCCL_PEER_DEATH=hang    (default) a dead peer's part never comes,
 *                                as within a node
 *   FAKE_NCCL_PEER_DEATH=remote  a dead peer is noticed within 100 ms and
 *                                the state becomes ncclRemoteError, as
 *                                NCCL's network transports do */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop

#include "fake.h"

enum { MAX_RANKS = 64 };

struct ncclComm {
	char dir[1024];
	int rank, nranks, device;
	int blocking;
	pthread_mutex_t mu;
	ncclResult_t state;     /* what ncclCommGetAsyncError answers */
	int joined;             /* every rank's join file seen */
	int call_pending;       /* a call answered ncclInProgress */
	int finalizing, fin_written;
	int aborted;
	int in_flight;          /* collectives queued, not done */
	unsigned long seq;      /* collectives issued */
	unsigned long calls;
	pid_t pids[MAX_RANKS];
	char last_error[256];
};

typedef struct coll {
	struct ncclComm *c;
	enum { C_ALLREDUCE, C_BROADCAST, C_ALLGATHER, C_REDUCE_SCATTER } kind;
	const char *send;
	char *recv;
	size_t count;
	ncclDataType_t dt;
	ncclRedOp_t op;
	int root;
	unsigned long seq;
} coll;

static int peer_death_noticed(void)
{
	const char *v = getenv("FAKE_NCCL_PEER_DEATH");

	return v != NULL && strcmp(v, "remote") == 0;
}

static size_t type_size(ncclDataType_t t)
{
	switch (t) {
	case ncclInt8:
	case ncclUint8: return 1;
	case ncclFloat16:
	case ncclBfloat16: return 2;
	case ncclInt32:
	case ncclUint32:
	case ncclFloat32: return 4;
	case ncclInt64:
	case ncclUint64:
	case ncclFloat64: return 8;
	default: return 0;
	}
}

static void path_of(const struct ncclComm *c, char *out, size_t n, const char *what, unsigned long seq,
                    int rank)
{
	snprintf(out, n, "%s/%s-%lu.r%d", c->dir, what, seq, rank);
}

/* Write a file whole, under a temporary name first. */
static int put_file(const char *path, const void *data, size_t n)
{
	char tmp[PATH_MAX];
	int fd;
	size_t off = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return -1;
	while (off < n) {
		ssize_t w = write(fd, (const char *)data + off, n - off);

		if (w <= 0) {
			close(fd);
			return -1;
		}
		off += (size_t)w;
	}
	close(fd);
	return rename(tmp, path);
}

static char *get_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long len;

	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)len + 1);
		if (buf != NULL && fread(buf, 1, (size_t)len, f) != (size_t)len) {
			free(buf);
			buf = NULL;
		}
		*n = (size_t)len;
	}
	fclose(f);
	return buf;
}

static int exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static void fail_comm(struct ncclComm *c, ncclResult_t r, const char *msg)
{
	pthread_mutex_lock(&c->mu);
	if (c->state == ncclSuccess || c->state == ncclInProgress) {
		c->state = r;
		snprintf(c->last_error, sizeof(c->last_error), "%s", msg);
	}
	pthread_mutex_unlock(&c->mu);
}

/* Whether a rank that joined has died (FAKE_NCCL_PEER_DEATH=remote). */
static int peer_dead(struct ncclComm *c)
{
	for (int r = 0; r < c->nranks; r++)
		if (r != c->rank && c->pids[r] > 0 && kill(c->pids[r], 0) != 0 && errno == ESRCH) {
			char msg[128];

			snprintf(msg, sizeof(msg), "fake NCCL: rank %d (pid %d) exited", r,
			         (int)c->pids[r]);
			fail_comm(c, ncclRemoteError, msg);
			return 1;
		}
	return 0;
}

/* ---- reductions, in rank order ---- */

static float f16_to_f32(uint16_t h)
{
	_Float16 v;

	memcpy(&v, &h, 2);
	return (float)v;
}

static uint16_t f32_to_f16(float f)
{
	_Float16 v = (_Float16)f;
	uint16_t h;

	memcpy(&h, &v, 2);
	return h;
}

static float bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;

	memcpy(&f, &u, 4);
	return f;
}

static uint16_t f32_to_bf16(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
	return (uint16_t)(u >> 16);
}

#define REDUCE(T, LOAD, STORE)                                                                 \
	do {                                                                                   \
		for (size_t i = 0; i < count; i++) {                                           \
			T acc = LOAD(parts[0], i), v;                   \
			for (int r = 1; r < n; r++) {                                          \
				v = LOAD(parts[r], i);                                         \
				switch (op) {                                                  \
				case ncclSum:                                                  \
				case ncclAvg: acc = acc + v; break;                            \
				case ncclProd: acc = acc * v; break;                           \
				case ncclMax: acc = v > acc ? v : acc; break;                  \
				case ncclMin: acc = v < acc ? v : acc; break;                  \
				default: break;                                                \
				}                                                              \
			}                                                                      \
			if (op == ncclAvg)                                                     \
				acc = acc / n;                                                 \
			STORE(out, i, acc);                                                    \
		}                                                                              \
	} while (0)

static void reduce(char *out, char *const *parts, int n, size_t count, ncclDataType_t dt,
                   ncclRedOp_t op)
{
#define L_I8(p, i) (((const int8_t *)(p))[i])
#define S_I8(o, i, v) (((int8_t *)(o))[i] = (int8_t)(v))
#define L_U8(p, i) (((const uint8_t *)(p))[i])
#define S_U8(o, i, v) (((uint8_t *)(o))[i] = (uint8_t)(v))
#define L_I32(p, i) (((const int32_t *)(p))[i])
#define S_I32(o, i, v) (((int32_t *)(o))[i] = (int32_t)(v))
#define L_U32(p, i) (((const uint32_t *)(p))[i])
#define S_U32(o, i, v) (((uint32_t *)(o))[i] = (uint32_t)(v))
#define L_I64(p, i) (((const int64_t *)(p))[i])
#define S_I64(o, i, v) (((int64_t *)(o))[i] = (int64_t)(v))
#define L_U64(p, i) (((const uint64_t *)(p))[i])
#define S_U64(o, i, v) (((uint64_t *)(o))[i] = (uint64_t)(v))
#define L_F32(p, i) (((const float *)(p))[i])
#define S_F32(o, i, v) (((float *)(o))[i] = (float)(v))
#define L_F64(p, i) (((const double *)(p))[i])
#define S_F64(o, i, v) (((double *)(o))[i] = (double)(v))
#define L_F16(p, i) f16_to_f32(((const uint16_t *)(p))[i])
#define S_F16(o, i, v) (((uint16_t *)(o))[i] = f32_to_f16(v))
#define L_BF16(p, i) bf16_to_f32(((const uint16_t *)(p))[i])
#define S_BF16(o, i, v) (((uint16_t *)(o))[i] = f32_to_bf16(v))
	switch (dt) {
	case ncclInt8: REDUCE(int8_t, L_I8, S_I8); break;
	case ncclUint8: REDUCE(uint8_t, L_U8, S_U8); break;
	case ncclInt32: REDUCE(int32_t, L_I32, S_I32); break;
	case ncclUint32: REDUCE(uint32_t, L_U32, S_U32); break;
	case ncclInt64: REDUCE(int64_t, L_I64, S_I64); break;
	case ncclUint64: REDUCE(uint64_t, L_U64, S_U64); break;
	case ncclFloat32: REDUCE(float, L_F32, S_F32); break;
	case ncclFloat64: REDUCE(double, L_F64, S_F64); break;
	case ncclFloat16: REDUCE(float, L_F16, S_F16); break;
	case ncclBfloat16: REDUCE(float, L_BF16, S_BF16); break;
	default: break;
	}
}

/* ---- collectives, on the stream's thread ---- */

/* Every rank writes its part (a broadcast's non-roots an empty one) and
 * waits for all the parts: each collective is a barrier too, which lets
 * rank r delete its part of collective k-1 at collective k+1, when every
 * rank has read it. */
static void run_coll(void *arg)
{
	coll *a = arg;
	struct ncclComm *c = a->c;
	size_t es = type_size(a->dt), block = a->count * es;
	size_t mine = a->kind == C_REDUCE_SCATTER ? block * (size_t)c->nranks
	              : a->kind == C_BROADCAST && c->rank != a->root ? 0
	                                                            : block;
	char path[PATH_MAX], *parts[MAX_RANKS] = {0};
	int n = c->nranks, have = 0;
	struct timespec tick = {0, 200000};
	unsigned polls = 0;

	if (a->seq >= 2) {
		path_of(c, path, sizeof(path), "coll", a->seq - 2, c->rank);
		unlink(path);
	}
	path_of(c, path, sizeof(path), "coll", a->seq, c->rank);
	if (put_file(path, a->send, mine) != 0) {
		fail_comm(c, ncclSystemError, "fake NCCL: cannot write a part under FAKE_NCCL_DIR");
		goto done;
	}
	while (have < n) {
		have = 0;
		for (int r = 0; r < n; r++) {
			path_of(c, path, sizeof(path), "coll", a->seq, r);
			have += exists(path);
		}
		if (have == n)
			break;
		pthread_mutex_lock(&c->mu);
		if (c->aborted || c->state != ncclSuccess) {
			pthread_mutex_unlock(&c->mu);
			goto done; /* an abort ends the kernel; the result is garbage */
		}
		pthread_mutex_unlock(&c->mu);
		if (++polls % 500 == 0 && peer_death_noticed() && peer_dead(c))
			goto done;
		nanosleep(&tick, NULL);
	}
	for (int r = 0; r < n; r++) {
		size_t len = 0;
		size_t want = a->kind == C_REDUCE_SCATTER ? block * (size_t)n
		              : a->kind == C_BROADCAST && r != a->root ? 0
		                                                       : block;

		path_of(c, path, sizeof(path), "coll", a->seq, r);
		parts[r] = get_file(path, &len);
		if (parts[r] == NULL || len != want)
			fake_misuse("collective #%lu: rank %d gave %zu bytes, rank %d expected %zu: the "
			            "ranks called different collectives or counts", a->seq, r, len, c->rank,
			            want);
	}
	switch (a->kind) {
	case C_ALLREDUCE: reduce(a->recv, parts, n, a->count, a->dt, a->op); break;
	case C_REDUCE_SCATTER: {
		char *blocks[MAX_RANKS];

		for (int r = 0; r < n; r++)
			blocks[r] = parts[r] + (size_t)c->rank * block;
		reduce(a->recv, blocks, n, a->count, a->dt, a->op);
		break;
	}
	case C_ALLGATHER:
		for (int r = 0; r < n; r++)
			memcpy(a->recv + (size_t)r * block, parts[r], block);
		break;
	case C_BROADCAST: memcpy(a->recv, parts[a->root], block); break;
	}
done:
	for (int r = 0; r < n; r++)
		free(parts[r]);
	pthread_mutex_lock(&c->mu);
	c->in_flight--;
	pthread_mutex_unlock(&c->mu);
	free(a);
}

/* Check the state of c before a call: it must be ncclSuccess. */
static ncclResult_t callable(struct ncclComm *c, const char *call)
{
	ncclResult_t st;

	if (c == NULL)
		fake_misuse("%s on a NULL communicator", call);
	pthread_mutex_lock(&c->mu);
	if (c->aborted)
		fake_misuse("%s on an aborted communicator", call);
	if (c->finalizing)
		fake_misuse("%s after ncclCommFinalize", call);
	if (c->call_pending || c->state == ncclInProgress)
		fake_misuse("%s while the communicator's state is ncclInProgress: poll "
		            "ncclCommGetAsyncError until it is ncclSuccess first", call);
	st = c->state;
	pthread_mutex_unlock(&c->mu);
	return st;
}

static ncclResult_t enqueue(struct ncclComm *c, int kind, const void *send, void *recv,
                            size_t count, ncclDataType_t dt, ncclRedOp_t op, int root,
                            cudaStream_t stream, const char *call)
{
	size_t es = type_size(dt);
	size_t sbytes = count * es * (kind == C_REDUCE_SCATTER ? (size_t)c->nranks : 1);
	size_t rbytes = count * es * (kind == C_ALLGATHER ? (size_t)c->nranks : 1);
	ncclResult_t st = callable(c, call);
	int pending;
	coll *a;

	if (st != ncclSuccess)
		return st; /* NCCL returns the communicator's error */
	if (es == 0 || (int)op < 0 || op >= ncclNumOps || root < 0 || root >= c->nranks)
		return ncclInvalidArgument;
	if (fake_stream_device(stream) != c->device)
		fake_misuse("%s on a stream of device %d; the communicator is on device %d", call,
		            fake_stream_device(stream), c->device);
	if (count > 0 && (kind != C_BROADCAST || c->rank == root) &&
	    fake_device_of_range(send, sbytes) != c->device)
		fake_misuse("%s: send buffer %p (%zu bytes) is not memory of device %d", call, send,
		            sbytes, c->device);
	if (count > 0 && fake_device_of_range(recv, rbytes) != c->device)
		fake_misuse("%s: receive buffer %p (%zu bytes) is not memory of device %d", call, recv,
		            rbytes, c->device);
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return ncclSystemError;
	*a = (coll){c, kind, send, recv, count, dt, op, root, c->seq++};
	pthread_mutex_lock(&c->mu);
	c->in_flight++;
	/* Nonblocking communicators may answer a call with ncclInProgress. */
	pending = !c->blocking && ++c->calls % 3 == 0;
	c->call_pending = pending;
	pthread_mutex_unlock(&c->mu);
	if (fake_stream_call(stream, run_coll, a) != cudaSuccess) {
		free(a);
		return ncclUnhandledCudaError;
	}
	return pending ? ncclInProgress : ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t dt,
                           ncclRedOp_t op, ncclComm_t c, cudaStream_t s)
{
	return enqueue(c, C_ALLREDUCE, send, recv, count, dt, op, 0, s, "ncclAllReduce");
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t dt, int root,
                           ncclComm_t c, cudaStream_t s)
{
	return enqueue(c, C_BROADCAST, send, recv, count, dt, ncclSum, root, s, "ncclBroadcast");
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, ncclDataType_t dt,
                           ncclComm_t c, cudaStream_t s)
{
	return enqueue(c, C_ALLGATHER, send, recv, count, dt, ncclSum, 0, s, "ncclAllGather");
}

ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t count, ncclDataType_t dt,
                               ncclRedOp_t op, ncclComm_t c, cudaStream_t s)
{
	return enqueue(c, C_REDUCE_SCATTER, send, recv, count, dt, op, 0, s, "ncclReduceScatter");
}

/* ---- communicators ---- */

ncclResult_t ncclGetUniqueId(ncclUniqueId *id)
{
	static unsigned long made;
	struct timespec t;

	clock_gettime(CLOCK_REALTIME, &t);
	memset(id, 0, sizeof(*id));
	snprintf(id->internal, sizeof(id->internal), "fakenccl-%d-%lld%09ld-%lu", (int)getpid(),
	         (long long)t.tv_sec, t.tv_nsec, __atomic_add_fetch(&made, 1, __ATOMIC_RELAXED));
	return ncclSuccess;
}

/* Join: every rank's file there, with its pid and GPU. */
static void poll_join(struct ncclComm *c)
{
	int gpus[MAX_RANKS];

	for (int r = 0; r < c->nranks; r++) {
		char path[PATH_MAX], *text;
		size_t len;
		int pid, gpu;

		path_of(c, path, sizeof(path), "join", 0, r);
		text = get_file(path, &len);
		if (text == NULL)
			return;
		text[len] = '\0';
		if (sscanf(text, "%d %d", &pid, &gpu) != 2)
			fake_misuse("malformed join file %s", path);
		free(text);
		c->pids[r] = pid;
		gpus[r] = gpu;
	}
	c->joined = 1;
	for (int a = 0; a < c->nranks; a++)
		for (int b = a + 1; b < c->nranks; b++)
			if (gpus[a] == gpus[b]) {
				char msg[160];

				snprintf(msg, sizeof(msg), "fake NCCL: ranks %d and %d are both on GPU %d "
				         "(NCCL: Duplicate GPU detected)", a, b, gpus[a]);
				fail_comm(c, ncclInvalidUsage, msg);
				return;
			}
	pthread_mutex_lock(&c->mu);
	if (c->state == ncclInProgress)
		c->state = ncclSuccess;
	pthread_mutex_unlock(&c->mu);
}

/* Finalize: quiescent here, then every rank's fin file there. */
static void poll_finalize(struct ncclComm *c)
{
	char path[PATH_MAX];
	int in_flight;

	pthread_mutex_lock(&c->mu);
	in_flight = c->in_flight;
	pthread_mutex_unlock(&c->mu);
	if (in_flight > 0)
		return;
	if (!c->fin_written) {
		path_of(c, path, sizeof(path), "fin", 0, c->rank);
		if (put_file(path, "", 0) != 0)
			return;
		c->fin_written = 1;
	}
	for (int r = 0; r < c->nranks; r++) {
		path_of(c, path, sizeof(path), "fin", 0, r);
		if (!exists(path))
			return;
	}
	pthread_mutex_lock(&c->mu);
	if (c->state == ncclInProgress)
		c->state = ncclSuccess;
	pthread_mutex_unlock(&c->mu);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *out)
{
	if (c == NULL)
		fake_misuse("ncclCommGetAsyncError on a NULL communicator");
	if (c->aborted)
		fake_misuse("ncclCommGetAsyncError on an aborted communicator");
	if (!c->joined)
		poll_join(c);
	else if (c->finalizing)
		poll_finalize(c);
	if (peer_death_noticed() && c->joined)
		peer_dead(c);
	pthread_mutex_lock(&c->mu);
	/* A call that answered ncclInProgress: this poll sees it through. */
	*out = c->call_pending && c->state == ncclSuccess ? ncclInProgress : c->state;
	c->call_pending = 0;
	pthread_mutex_unlock(&c->mu);
	return ncclSuccess;
}

/* What a call that started c's asynchronous work answers: a blocking
 * communicator waits for the outcome. */
static ncclResult_t settle(struct ncclComm *c)
{
	ncclResult_t st = ncclInProgress;

	if (!c->blocking)
		return ncclInProgress;
	while (st == ncclInProgress) {
		ncclCommGetAsyncError(c, &st);
		if (st == ncclInProgress)
			usleep(1000);
	}
	return st;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t *out, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t *config)
{
	const char *base = getenv("FAKE_NCCL_DIR");
	struct ncclComm *c;
	char path[PATH_MAX], text[64];
	int dev = 0;

	*out = NULL;
	if (nranks < 1 || nranks > MAX_RANKS || rank < 0 || rank >= nranks ||
	    strncmp(id.internal, "fakenccl-", 9) != 0)
		return ncclInvalidArgument;
	if (base == NULL)
		base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return ncclSystemError;
	pthread_mutex_init(&c->mu, NULL);
	c->rank = rank;
	c->nranks = nranks;
	cudaGetDevice(&dev);
	c->device = dev;
	c->blocking = config == NULL || config->blocking != 0;
	c->state = ncclInProgress;
	snprintf(c->dir, sizeof(c->dir), "%s/%.100s", base, id.internal);
	if (mkdir(c->dir, 0700) != 0 && errno != EEXIST) {
		free(c);
		return ncclSystemError;
	}
	path_of(c, path, sizeof(path), "join", 0, rank);
	snprintf(text, sizeof(text), "%d %d\n", (int)getpid(), fake_physical_gpu(dev));
	if (put_file(path, text, strlen(text)) != 0) {
		free(c);
		return ncclSystemError;
	}
	*out = c;
	return settle(c);
}

ncclResult_t ncclCommFinalize(ncclComm_t c)
{
	if (callable(c, "ncclCommFinalize") != ncclSuccess)
		return c->state;
	pthread_mutex_lock(&c->mu);
	c->finalizing = 1;
	c->state = ncclInProgress;
	pthread_mutex_unlock(&c->mu);
	return settle(c);
}

/* This rank's parts; the folder goes with the last rank to leave (the
 * others may still read the join and fin files until they leave). */
static void free_comm(struct ncclComm *c)
{
	char path[PATH_MAX];
	int gone = 0;

	for (unsigned long k = c->seq >= 2 ? c->seq - 2 : 0; k < c->seq; k++) {
		path_of(c, path, sizeof(path), "coll", k, c->rank);
		unlink(path);
	}
	path_of(c, path, sizeof(path), "gone", 0, c->rank);
	put_file(path, "", 0);
	for (int r = 0; r < c->nranks; r++) {
		path_of(c, path, sizeof(path), "gone", 0, r);
		gone += exists(path);
	}
	if (gone == c->nranks) {
		DIR *d = opendir(c->dir);
		struct dirent *e;

		while (d != NULL && (e = readdir(d)) != NULL)
			if (e->d_name[0] != '.') {
				snprintf(path, sizeof(path), "%s/%s", c->dir, e->d_name);
				unlink(path);
			}
		if (d != NULL)
			closedir(d);
		rmdir(c->dir);
	}
	pthread_mutex_destroy(&c->mu);
	free(c);
}

ncclResult_t ncclCommDestroy(ncclComm_t c)
{
	if (c == NULL)
		fake_misuse("ncclCommDestroy on a NULL communicator");
	pthread_mutex_lock(&c->mu);
	if (c->aborted)
		fake_misuse("ncclCommDestroy on an aborted communicator");
	if (c->in_flight > 0)
		fake_misuse("ncclCommDestroy with %d collectives still running (finalize first)",
		            c->in_flight);
	pthread_mutex_unlock(&c->mu);
	free_comm(c);
	return ncclSuccess;
}

/* Ends the collectives in flight (they leave their results unwritten),
 * then frees. */
ncclResult_t ncclCommAbort(ncclComm_t c)
{
	struct timespec tick = {0, 100000};

	if (c == NULL)
		return ncclSuccess;
	pthread_mutex_lock(&c->mu);
	if (c->aborted)
		fake_misuse("ncclCommAbort twice on one communicator");
	c->aborted = 1;
	while (c->in_flight > 0) {
		pthread_mutex_unlock(&c->mu);
		nanosleep(&tick, NULL);
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	free_comm(c);
	return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t r)
{
	switch (r) {
	case ncclSuccess: return "fake NCCL: success";
	case ncclUnhandledCudaError: return "fake NCCL: a CUDA call failed";
	case ncclSystemError: return "fake NCCL: a system call failed";
	case ncclInternalError: return "fake NCCL: internal error";
	case ncclInvalidArgument: return "fake NCCL: invalid argument";
	case ncclInvalidUsage: return "fake NCCL: invalid usage";
	case ncclRemoteError: return "fake NCCL: a peer exited";
	case ncclInProgress: return "fake NCCL: in progress";
	default: return "fake NCCL: unknown result";
	}
}

const char *ncclGetLastError(ncclComm_t c)
{
	return c != NULL ? c->last_error : "";
}
