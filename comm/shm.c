/* Shared-memory transport between the ranks of one host.
 *
 * Each rank owns one POSIX shared-memory segment holding a header and one
 * inbound ring per peer (indexed by the sending rank).  A sender copies
 * its message into free slots of the ring it owns in the receiver's
 * segment; the receiver copies out of the slots, or reduces straight from
 * them (on_piece), and hands them back.  Segments are unlinked as soon as
 * every peer has mapped them, so a crash leaves nothing in /dev/shm.
 * A dead peer is found from its pid (pidfd where the kernel has it) and
 * an aborted one from the flag in its header.  See docs/shm.md.
 *
 * Threads: progress runs on the thread that owns the link; abort may be
 * called from any thread while progress runs; open and close run alone. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "comm/comm.h"
#include "comm/shm.h"
#include "runtime/common.h"

#define SHM_MAGIC 0x316d687374726c6dull /* "mlrtshm1" */
#define SHM_VERSION 2u
#define SHM_LINE 64
#define SHM_PAGE 4096

/* Ring geometry: defaults, bounds of the environment overrides, and the
 * smallest we shrink to when /dev/shm is short. */
#define SHM_SLOTS_DEF 8
#define SHM_SLOTS_MIN 2
#define SHM_SLOTS_MAX 1024
#define SHM_SLOT_KIB_DEF 512
#define SHM_SLOT_KIB_MIN 4
#define SHM_SLOT_KIB_MAX (64 * 1024)
#define SHM_SEG_BUDGET (32u << 20) /* a rank's rings, unless MLRT_SHM_SLOT_KB says otherwise */
/* ... and where the direct allreduce's area carries the allreduces, so
 * that the rings carry only the other collectives (with 8 ranks this keeps
 * what each rank maps of the host's segments near 45 MiB instead of 75). */
#define SHM_SEG_BUDGET_DIRECT (16u << 20)
/* Each buffer of the direct allreduce's area (comm/shm.h). */
#define SHM_AREA_KIB_DEF 1024
#define SHM_AREA_KIB_MAX (64 * 1024)

#define SHM_NT_MIN (1u << 20) /* messages this long are received with streaming stores */
#define SHM_CHECK_MS 50 /* liveness checks of a stalled link, at most this often */
#define SHM_WAIT_BATCH 1024 /* keys in one mlrt_store_wait */
#define SHM_KEY_MAX (MLRTI_PREFIX_MAX + 32)
#define SHM_NAME_MAX 64

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "shared counters must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "shared flags must be lock-free");

/* ---- the segment, as mapped by its owner and its peers ---- */

/* Written by the sender before it publishes the slot. */
typedef struct shm_slot {
	uint32_t magic; /* MLRTI_MSG_MAGIC */
	uint32_t seq;   /* the message's sequence number */
	uint64_t len;   /* the whole message's length */
	uint64_t off;   /* where this slot's payload belongs in the message */
	uint64_t plen;  /* payload bytes in this slot */
	char pad[SHM_LINE - 32];
} shm_slot;

/* One inbound ring: counters on their own cache lines, then the slot
 * headers; the payloads follow, page-aligned, at data_off from here.
 * head and tail count slots since the start; slot i lives at i % nslots. */
typedef struct shm_ring {
	_Alignas(SHM_LINE) atomic_uint_least64_t head; /* published by the sender */
	_Alignas(SHM_LINE) atomic_uint_least64_t tail; /* released by the receiver */
	_Alignas(SHM_LINE) shm_slot slots[];
} shm_ring;

/* The front of a segment.  Everything but `aborted` is written once by
 * the owner before it publishes the segment's name. */
typedef struct shm_seg_hdr {
	uint64_t magic;      /* SHM_MAGIC */
	uint32_t version;    /* SHM_VERSION */
	int32_t pid;         /* the owner's */
	int32_t rank;        /* the owner's */
	int32_t size;        /* communicator size: entries of ring_off */
	uint32_t nslots;     /* slots per ring */
	uint32_t slot_bytes; /* payload bytes per slot, a multiple of SHM_PAGE */
	uint64_t seg_bytes;  /* the whole segment */
	uint64_t data_off;   /* from a ring to its payloads */
	uint64_t area_off;   /* the direct allreduce's area (comm/shm.h) */
	uint64_t area_bytes; /* each of its two buffers, after one page of counters; 0: none */
	_Alignas(SHM_LINE) atomic_int aborted; /* raised by the owner's abort() */
	_Alignas(SHM_LINE) uint64_t ring_off[]; /* by sender rank; 0: no ring */
} shm_seg_hdr;

/* ---- this process's state ---- */

typedef struct shm_link {
	int peer;
	pid_t pid;          /* the peer's, from its segment header */
	int pidfd;          /* -1 where pidfd_open is missing: /proc, kill(pid, 0) */
	unsigned long long start; /* without pidfd: its start time, 0 if unknown */
	int err;            /* the link's first failure, returned from then on */
	int64_t next_check; /* mlrti_now_ms() of the next liveness check */

	uint8_t *peer_seg; /* the peer's whole segment, or NULL */
	size_t peer_seg_bytes;
	shm_seg_hdr *peer_hdr;

	/* Sending: my ring in the peer's segment. */
	shm_ring *tx;
	uint8_t *tx_data;
	uint32_t tx_nslots;
	size_t tx_slot_bytes;
	uint64_t tx_head; /* slots I have published */
	uint64_t tx_tail; /* the receiver's tail, as last read */

	/* Receiving: the peer's ring in my segment. */
	shm_ring *rx;
	uint8_t *rx_data;
	uint64_t rx_tail; /* slots I have released */
	uint64_t rx_head; /* the sender's head, as last read */

	/* The peer's area and its buffers (links[rank]: my own), or NULL. */
	mlrti_shm_area *area;
	uint8_t *abuf;
} shm_link;

typedef struct shm_state {
	atomic_int aborted; /* set by abort(): every progress fails from then on */
	char name[SHM_NAME_MAX];
	int linked;          /* name still in /dev/shm: unlink on the way out */
	uint8_t *seg;
	size_t seg_bytes;
	shm_seg_hdr *hdr;
	uint32_t nslots;
	size_t slot_bytes;
	int size;
	shm_link *links; /* [size]; used where peer_seg != NULL */
	size_t direct_bytes; /* the areas' common buffer size; 0: no direct path */
	uint64_t step;       /* direct steps taken */
} shm_state;

/* Round x up to a multiple of a (a power of two). */
static size_t round_up(size_t x, size_t a)
{
	return (x + a - 1) & ~(a - 1);
}

/* FNV-1a, to fold a communicator's store prefix into a short name. */
static uint64_t hash_str(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *s != '\0'; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
	return h;
}


/* Read the state letter and start time (clock ticks since boot) of pid
 * from /proc/<pid>/stat.  MLRT_ERR_NOT_FOUND when the process is gone,
 * MLRT_ERR_UNSUPPORTED when /proc cannot tell. */
static int proc_stat(pid_t pid, char *state, unsigned long long *start)
{
	char path[64], buf[1024];
	const char *p;
	ssize_t n;
	int fd, i;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ESRCH ? MLRT_ERR_NOT_FOUND : MLRT_ERR_UNSUPPORTED;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return n < 0 && errno == ESRCH ? MLRT_ERR_NOT_FOUND : MLRT_ERR_UNSUPPORTED;
	buf[n] = '\0';
	/* "pid (comm) S ppid ...": comm may hold anything, so start after the
	 * last ')'.  p + 3 is the blank before field 4; the start time is
	 * field 22, 18 blanks further. */
	p = strrchr(buf, ')');
	if (p == NULL || p[1] != ' ' || p[2] == '\0')
		return MLRT_ERR_UNSUPPORTED;
	*state = p[2];
	p += 3;
	for (i = 0; i < 18 && p != NULL; i++)
		p = strchr(p + 1, ' ');
	if (p == NULL || sscanf(p, " %llu", start) != 1)
		return MLRT_ERR_UNSUPPORTED;
	return MLRT_OK;
}

/* Whether the peer's process is still running.  Through its pidfd a
 * zombie counts as dead.  Without pidfd (kernels before 5.3), /proc says
 * whether it is a zombie or a new process that got the same pid; with
 * neither, kill(pid, 0) is all there is (a zombie still answers). */
static int peer_alive(const shm_link *l)
{
	unsigned long long start;
	char state;
	int rc;

	if (l->pidfd >= 0) {
		struct pollfd pfd = {.fd = l->pidfd, .events = POLLIN};

		return poll(&pfd, 1, 0) == 0;
	}
	rc = proc_stat(l->pid, &state, &start);
	if (rc == MLRT_ERR_NOT_FOUND)
		return 0;
	if (rc == MLRT_OK && l->start != 0)
		return state != 'Z' && state != 'X' && start == l->start;
	return kill(l->pid, 0) == 0 || errno == EPERM;
}

/* ---- set-up ---- */

/* Bytes of each buffer of this rank's area: MLRT_SHM_DIRECT_KB (0 turns
 * the direct allreduce off); none unless shm links every rank of the
 * communicator; at most an eighth of this rank's share of what /dev/shm
 * has free. */
static int choose_area(int npeers, int size, size_t *bytes)
{
	struct statvfs vfs;
	int64_t kib;
	int rc = mlrti_env_int("MLRT_SHM_DIRECT_KB", 0, SHM_AREA_KIB_MAX, SHM_AREA_KIB_DEF, &kib);

	*bytes = 0;
	if (rc != MLRT_OK || npeers != size - 1 || kib == 0)
		return rc;
	kib = (int64_t)round_up((size_t)kib, SHM_PAGE / 1024);
	if (statvfs("/dev/shm", &vfs) == 0) {
		uint64_t share = (uint64_t)vfs.f_bavail * vfs.f_frsize / (uint64_t)(npeers + 1);

		while (kib > SHM_PAGE / 1024 && (uint64_t)kib * 1024 * 2 > share / 8)
			kib = (kib / 2) & ~(int64_t)(SHM_PAGE / 1024 - 1);
	}
	*bytes = (size_t)(kib < SHM_PAGE / 1024 ? SHM_PAGE / 1024 : kib) * 1024;
	return MLRT_OK;
}

/* Ring geometry for a segment with npeers inbound rings: the defaults or
 * MLRT_SHM_SLOTS / MLRT_SHM_SLOT_KB, shrunk (with a warning) so that this
 * host's ranks fit in what /dev/shm has free besides the area (reserve
 * bytes per rank). */
static int choose_geometry(int npeers, size_t reserve, uint32_t *nslots, size_t *slot_bytes)
{
	int64_t slots, kib;
	struct statvfs vfs;
	int rc;

	MLRTI_CHECK_GOTO(mlrti_env_int("MLRT_SHM_SLOTS", SHM_SLOTS_MIN, SHM_SLOTS_MAX,
	                               SHM_SLOTS_DEF, &slots), rc, fail);
	MLRTI_CHECK_GOTO(mlrti_env_int("MLRT_SHM_SLOT_KB", SHM_SLOT_KIB_MIN, SHM_SLOT_KIB_MAX,
	                               SHM_SLOT_KIB_DEF, &kib), rc, fail);
	kib = (int64_t)round_up((size_t)kib, SHM_PAGE / 1024);
	/* Many local ranks share the budget of a segment: rings shrink
	 * rather than grow the memory (and the set-up time) quadratically. */
	if (npeers > 0 && getenv("MLRT_SHM_SLOT_KB") == NULL) {
		uint64_t budget = reserve > 0 ? SHM_SEG_BUDGET_DIRECT : SHM_SEG_BUDGET;
		uint64_t per_ring = budget / (uint64_t)npeers;

		while ((uint64_t)(slots * kib * 1024) > per_ring && kib > 64)
			kib /= 2;
	}
	if (npeers > 0 && statvfs("/dev/shm", &vfs) == 0) {
		/* Every rank of the host (npeers + 1) takes at most its share of
		 * what it sees free, so the sum fits even when they race. */
		uint64_t share = (uint64_t)vfs.f_bavail * vfs.f_frsize / (uint64_t)(npeers + 1);
		uint64_t per_ring = (share > reserve ? share - reserve : 0) / (uint64_t)npeers;
		int64_t want_slots = slots, want_kib = kib;

		/* Leave room for the header and the rings' control pages. */
		per_ring = per_ring > 4 * SHM_PAGE ? per_ring - 4 * SHM_PAGE : 0;
		while ((uint64_t)(slots * kib * 1024) > per_ring && kib > 64)
			kib /= 2;
		while ((uint64_t)(slots * kib * 1024) > per_ring && slots > SHM_SLOTS_MIN)
			slots--;
		while ((uint64_t)(slots * kib * 1024) > per_ring && kib > SHM_SLOT_KIB_MIN)
			kib /= 2;
		kib &= ~(int64_t)(SHM_PAGE / 1024 - 1);
		kib = kib < SHM_SLOT_KIB_MIN ? SHM_SLOT_KIB_MIN : kib;
		if (slots != want_slots || kib != want_kib)
			mlrt_log(MLRT_LOG_WARN,
			         "shm: /dev/shm has %" PRIu64 " MiB free for %d local ranks: rings "
			         "shrunk from %" PRId64 " x %" PRId64 " KiB to %" PRId64 " x %" PRId64
			         " KiB (slower; enlarge /dev/shm, e.g. docker --shm-size)",
			         (uint64_t)vfs.f_bavail * vfs.f_frsize >> 20, npeers + 1,
			         want_slots, want_kib, slots, kib);
	}
	*nslots = (uint32_t)slots;
	*slot_bytes = (size_t)kib * 1024;
	return MLRT_OK;
fail:
	return rc;
}

/* Create, size and map this rank's segment and lay out its rings, one
 * per peer.  On failure the caller's free_state unmaps and unlinks what
 * was made (st->linked says whether the name exists). */
static int create_segment(mlrt_comm *c, shm_state *st, const int *peers)
{
	size_t hdr_bytes, area_bytes, area_total, ring_ctl, ring_bytes, off;
	shm_seg_hdr *h;
	int npeers = 0, fd = -1, rc, err, p;
	void *m;

	for (p = 0; p < c->size; p++)
		npeers += p != c->rank && peers[p] != 0;
	MLRTI_CHECK_GOTO(choose_area(npeers, c->size, &area_bytes), rc, fail);
	area_total = area_bytes > 0 ? SHM_PAGE + 2 * area_bytes : 0;
	MLRTI_CHECK_GOTO(choose_geometry(npeers, area_total, &st->nslots, &st->slot_bytes), rc, fail);

	hdr_bytes = round_up(offsetof(shm_seg_hdr, ring_off) + sizeof(uint64_t) * (size_t)c->size,
	                     SHM_PAGE);
	ring_ctl = round_up(offsetof(shm_ring, slots) + sizeof(shm_slot) * st->nslots, SHM_PAGE);
	ring_bytes = ring_ctl + st->slot_bytes * st->nslots;
	st->seg_bytes = hdr_bytes + area_total + ring_bytes * (size_t)npeers;

	snprintf(st->name, sizeof(st->name), "/mlrt-%016" PRIx64 "-%d-%ld", hash_str(c->prefix),
	         c->rank, (long)getpid());
	fd = shm_open(st->name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0 && errno == EEXIST) {
		/* Left by an earlier process with our pid that crashed before it
		 * could unlink: the name is ours. */
		shm_unlink(st->name);
		fd = shm_open(st->name, O_RDWR | O_CREAT | O_EXCL, 0600);
	}
	if (fd < 0) {
		mlrt_log(MLRT_LOG_ERROR, "shm: cannot create /dev/shm%s: %s (is /dev/shm mounted "
		         "and writable? else set MLRT_TRANSPORT=tcp)", st->name, strerror(errno));
		return MLRT_ERR_IO;
	}
	st->linked = 1;
	/* Reserve the memory now: a full tmpfs must give ENOSPC here, not
	 * SIGBUS at the first touch. */
	err = ftruncate(fd, (off_t)st->seg_bytes) != 0 ? errno : 0;
	if (err == 0)
		err = posix_fallocate(fd, 0, (off_t)st->seg_bytes);
	if (err != 0) {
		mlrt_log(MLRT_LOG_ERROR,
		         "shm: cannot reserve %zu MiB in /dev/shm for %s: %s (enlarge /dev/shm, "
		         "lower MLRT_SHM_SLOTS / MLRT_SHM_SLOT_KB, or set MLRT_TRANSPORT=tcp)",
		         st->seg_bytes >> 20, st->name, strerror(err));
		rc = err == ENOSPC ? MLRT_ERR_NOSPACE : MLRT_ERR_IO;
		goto fail;
	}
	/* posix_fallocate gave the pages; MAP_POPULATE maps them all now
	 * (not in the first collective) without writing them again. */
	m = mmap(NULL, st->seg_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (m == MAP_FAILED) {
		mlrt_log(MLRT_LOG_ERROR, "shm: cannot map %zu MiB of %s: %s", st->seg_bytes >> 20,
		         st->name, strerror(errno));
		rc = MLRT_ERR_NOMEM;
		goto fail;
	}
	close(fd);
	fd = -1;
	st->seg = m;
#ifdef MADV_HUGEPAGE
	madvise(m, st->seg_bytes, MADV_HUGEPAGE); /* a hint; tmpfs may say no */
#endif

	h = (shm_seg_hdr *)m;
	h->magic = SHM_MAGIC;
	h->version = SHM_VERSION;
	h->pid = (int32_t)getpid();
	h->rank = c->rank;
	h->size = c->size;
	h->nslots = st->nslots;
	h->slot_bytes = (uint32_t)st->slot_bytes;
	h->seg_bytes = st->seg_bytes;
	h->data_off = ring_ctl;
	h->area_off = area_bytes > 0 ? hdr_bytes : 0;
	h->area_bytes = area_bytes;
	atomic_init(&h->aborted, 0);
	if (area_bytes > 0) {
		mlrti_shm_area *a = (mlrti_shm_area *)(st->seg + hdr_bytes);

		atomic_init(&a->arrived, 0);
		atomic_init(&a->reduced, 0);
		st->links[c->rank].area = a;
		st->links[c->rank].abuf = st->seg + hdr_bytes + SHM_PAGE;
	}
	off = hdr_bytes + area_total;
	for (p = 0; p < c->size; p++) {
		shm_ring *r;

		if (p == c->rank || peers[p] == 0)
			continue;
		h->ring_off[p] = off;
		r = (shm_ring *)(st->seg + off);
		atomic_init(&r->head, 0);
		atomic_init(&r->tail, 0);
		st->links[p].rx = r;
		st->links[p].rx_data = st->seg + off + ring_ctl;
		off += ring_bytes;
	}
	st->hdr = h;
	return MLRT_OK;
fail:
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Map peer p's segment (named name) and find the ring p keeps for me. */
static int map_peer(mlrt_comm *c, shm_state *st, int p, const char *name)
{
	shm_link *l = &st->links[p];
	const shm_seg_hdr *h;
	struct stat sb;
	size_t ring_ctl;
	uint64_t off;
	void *m;
	int fd;

	if (name[0] == '\0') {
		mlrt_log(MLRT_LOG_ERROR, "shm: rank %d could not set up its shared memory (see its log)",
		         p);
		return MLRT_ERR_PEER_LOST;
	}
	fd = shm_open(name, O_RDWR, 0);
	if (fd < 0) {
		mlrt_log(MLRT_LOG_ERROR,
		         "shm: cannot open rank %d's segment /dev/shm%s: %s (rank %d failed, or "
		         "is not on this host or in this container)", p, name, strerror(errno), p);
		return MLRT_ERR_IO;
	}
	if (fstat(fd, &sb) != 0 || (size_t)sb.st_size < sizeof(shm_seg_hdr)) {
		mlrt_log(MLRT_LOG_ERROR, "shm: rank %d's segment %s is truncated", p, name);
		close(fd);
		return MLRT_ERR_PROTOCOL;
	}
	m = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED) {
		mlrt_log(MLRT_LOG_ERROR, "shm: cannot map rank %d's segment %s: %s", p, name,
		         strerror(errno));
		return MLRT_ERR_NOMEM;
	}
	l->peer_seg = m;
	l->peer_seg_bytes = (size_t)sb.st_size;
	l->peer_hdr = m;
	l->pidfd = -1;
	h = l->peer_hdr;

	if (h->magic != SHM_MAGIC || h->version != SHM_VERSION) {
		mlrt_log(MLRT_LOG_ERROR, "shm: rank %d's segment %s has version %" PRIu32
		         " (magic %#" PRIx64 "), this rank speaks %u: mixed mlrt builds?",
		         p, name, h->version, h->magic, SHM_VERSION);
		return MLRT_ERR_VERSION;
	}
	ring_ctl = round_up(offsetof(shm_ring, slots) + sizeof(shm_slot) * h->nslots, SHM_PAGE);
	if (h->rank != p || h->size != c->size || h->seg_bytes != l->peer_seg_bytes ||
	    h->nslots < SHM_SLOTS_MIN || h->slot_bytes == 0 || h->slot_bytes % SHM_PAGE != 0 ||
	    h->data_off != ring_ctl ||
	    offsetof(shm_seg_hdr, ring_off) + sizeof(uint64_t) * (size_t)c->size > h->seg_bytes) {
		mlrt_log(MLRT_LOG_ERROR, "shm: rank %d's segment %s is malformed (rank %d, size %d)",
		         p, name, h->rank, h->size);
		return MLRT_ERR_PROTOCOL;
	}
	off = h->ring_off[c->rank];
	if (off == 0) {
		mlrt_log(MLRT_LOG_ERROR,
		         "shm: rank %d has no ring for rank %d: the ranks disagree on who shares "
		         "this host", p, c->rank);
		return MLRT_ERR_PROTOCOL;
	}
	if (off % SHM_PAGE != 0 || off > h->seg_bytes ||
	    h->seg_bytes - off < ring_ctl + (uint64_t)h->slot_bytes * h->nslots) {
		mlrt_log(MLRT_LOG_ERROR, "shm: rank %d's ring for rank %d lies outside its segment",
		         p, c->rank);
		return MLRT_ERR_PROTOCOL;
	}
	if (h->area_bytes > 0 &&
	    (h->area_off % SHM_PAGE != 0 || h->area_bytes % SHM_PAGE != 0 ||
	     h->area_off > h->seg_bytes || h->area_bytes > h->seg_bytes ||
	     h->seg_bytes - h->area_off < SHM_PAGE + 2 * h->area_bytes)) {
		mlrt_log(MLRT_LOG_ERROR, "shm: rank %d's direct area lies outside its segment", p);
		return MLRT_ERR_PROTOCOL;
	}
	if (h->area_bytes > 0) {
		l->area = (mlrti_shm_area *)(l->peer_seg + h->area_off);
		l->abuf = l->peer_seg + h->area_off + SHM_PAGE;
#ifdef MADV_POPULATE_READ
		madvise(l->abuf, 2 * h->area_bytes, MADV_POPULATE_READ);
#endif
	}
	if (c->pids != NULL && c->pids[p] != h->pid) {
		mlrt_log(MLRT_LOG_ERROR,
		         "shm: rank %d published pid %d but its segment says %d: another PID "
		         "namespace? (set MLRT_TRANSPORT=tcp)", p, c->pids[p], (int)h->pid);
		return MLRT_ERR_UNSUPPORTED;
	}
	l->peer = p;
	l->pid = h->pid;
	l->tx = (shm_ring *)(l->peer_seg + off);
	l->tx_data = l->peer_seg + off + ring_ctl;
	l->tx_nslots = h->nslots;
	l->tx_slot_bytes = h->slot_bytes;
	/* Fault the pages I write into my page table now.  Kernels before
	 * 5.14 lack MADV_POPULATE_WRITE: the first message pays instead. */
#ifdef MADV_POPULATE_WRITE
	madvise(l->peer_seg + off, ring_ctl + (size_t)h->slot_bytes * h->nslots,
	        MADV_POPULATE_WRITE);
#endif
	l->pidfd = mlrti_pidfd_open(l->pid);
	if (l->pidfd < 0 && errno != ENOSYS) {
		mlrt_log(MLRT_LOG_ERROR,
		         "shm: rank %d (pid %d) is not visible from here: %s (it died, or runs in "
		         "another PID namespace: set MLRT_TRANSPORT=tcp)", p, (int)l->pid,
		         strerror(errno));
		return MLRT_ERR_PEER_LOST;
	}
	if (l->pidfd < 0) {
		char state;

		if (proc_stat(l->pid, &state, &l->start) != MLRT_OK)
			l->start = 0;
	}
	if (l->pidfd < 0 && !peer_alive(l)) {
		mlrt_log(MLRT_LOG_ERROR, "shm: rank %d (pid %d) is not running", p, (int)l->pid);
		return MLRT_ERR_PEER_LOST;
	}
	return MLRT_OK;
}

/* Wait until "<prefix>shm/<sub><p>" exists for every peer p, bounded by
 * the communicator's timeout; on a timeout, name the ranks missing. */
static int wait_peers(mlrt_comm *c, const int *peers, const char *sub, const char *what)
{
	char (*keys)[SHM_KEY_MAX] = NULL;
	const char **kp = NULL;
	int64_t deadline = mlrti_now_ms() + c->timeout_ms;
	int n = 0, i, p, rc = MLRT_OK;

	keys = calloc((size_t)c->size, sizeof(*keys));
	kp = calloc((size_t)c->size, sizeof(*kp));
	if (keys == NULL || kp == NULL) {
		rc = MLRT_ERR_NOMEM;
		goto fail;
	}
	for (p = 0; p < c->size; p++) {
		if (p == c->rank || peers[p] == 0)
			continue;
		snprintf(keys[n], sizeof(keys[n]), "%sshm/%s%d", c->prefix, sub, p);
		kp[n] = keys[n];
		n++;
	}
	for (i = 0; i < n; i += SHM_WAIT_BATCH) {
		int64_t left = deadline - mlrti_now_ms();
		size_t batch = (size_t)(n - i < SHM_WAIT_BATCH ? n - i : SHM_WAIT_BATCH);

		rc = mlrt_store_wait(c->store, kp + i, batch, left > 0 ? (int)left : 1);
		if (rc != MLRT_OK)
			break;
	}
	if (rc == MLRT_ERR_TIMEOUT) {
		for (i = 0; i < n; i++) {
			void *v = NULL;
			size_t len;

			if (mlrt_store_get(c->store, kp[i], &v, &len) == MLRT_ERR_NOT_FOUND)
				mlrt_log(MLRT_LOG_ERROR, "shm: %s (%s) did not appear within %d ms",
				         what, kp[i], c->timeout_ms);
			free(v);
		}
	} else if (rc != MLRT_OK) {
		mlrt_log(MLRT_LOG_ERROR, "shm: waiting for %s: %s", what, mlrt_strerror(rc));
	}
fail:
	free(kp);
	free(keys);
	return rc;
}

/* After the "mapped" round: fail if a peer reported that it could not
 * map the segments (it wrote "error" instead of "ok"). */
static int check_mapped(mlrt_comm *c, const int *peers)
{
	char prefix[SHM_KEY_MAX];
	mlrt_store_kv *kv = NULL;
	size_t n = 0, i;
	int rc;

	snprintf(prefix, sizeof(prefix), "%sshm/mapped/", c->prefix);
	MLRTI_CHECK_GOTO(mlrt_store_list(c->store, prefix, &kv, &n), rc, fail);
	for (i = 0; i < n; i++) {
		int64_t p;

		if (mlrti_parse_int(kv[i].key + strlen(prefix), 0, c->size - 1, &p) != MLRT_OK ||
		    p == c->rank || peers[p] == 0)
			continue;
		if (kv[i].len != 2 || memcmp(kv[i].val, "ok", 2) != 0) {
			mlrt_log(MLRT_LOG_ERROR, "shm: rank %" PRId64 " could not map the segments "
			         "of this host (see its log)", p);
			rc = MLRT_ERR_PEER_LOST;
			goto fail;
		}
	}
	rc = MLRT_OK;
fail:
	mlrt_store_kv_free(kv, n);
	return rc;
}

/* Unmap and free everything st holds, unlinking the segment if that has
 * not happened yet.  Safe on any partly built state. */
static void free_state(shm_state *st)
{
	int p;

	if (st == NULL)
		return;
	for (p = 0; st->links != NULL && p < st->size; p++) {
		shm_link *l = &st->links[p];

		if (l->pidfd >= 0)
			close(l->pidfd);
		if (l->peer_seg != NULL)
			munmap(l->peer_seg, l->peer_seg_bytes);
	}
	if (st->seg != NULL)
		munmap(st->seg, st->seg_bytes);
	if (st->linked)
		shm_unlink(st->name);
	free(st->links);
	free(st);
}

/* Set up shared memory to every rank p with peers[p] != 0 (all on this
 * host; see comm/comm.h).  Blocks on the store, each wait bounded by
 * c->timeout_ms: publish my segment, map every peer's, then unlink mine
 * once all have mapped it.  On success fills c->links[p] and c->shm; on
 * failure leaves both alone, removes the segment and tells the peers
 * through the store so that they fail at once too. */
int mlrti_shm_open(mlrt_comm *c, const int *peers)
{
	char key[SHM_KEY_MAX];
	shm_state *st;
	int published = 0, mapped = 0, rc, p;

	if (c == NULL || peers == NULL || c->size < 1 || c->rank < 0 || c->rank >= c->size ||
	    c->links == NULL || c->timeout_ms <= 0)
		return MLRT_ERR_INVALID;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return MLRT_ERR_NOMEM;
	atomic_init(&st->aborted, 0);
	st->size = c->size;
	st->links = calloc((size_t)c->size, sizeof(*st->links));
	if (st->links == NULL) {
		rc = MLRT_ERR_NOMEM;
		goto fail;
	}
	for (p = 0; p < c->size; p++)
		st->links[p].pidfd = -1;

	MLRTI_CHECK_GOTO(create_segment(c, st, peers), rc, fail);
	snprintf(key, sizeof(key), "%sshm/%d", c->prefix, c->rank);
	MLRTI_CHECK_GOTO(mlrt_store_set(c->store, key, st->name, strlen(st->name)), rc, fail);
	published = 1;

	/* Map every peer's segment: it holds the ring I write into. */
	MLRTI_CHECK_GOTO(wait_peers(c, peers, "", "a peer's segment name"), rc, fail);
	for (p = 0; p < c->size; p++) {
		void *name = NULL;
		size_t len;

		if (p == c->rank || peers[p] == 0)
			continue;
		snprintf(key, sizeof(key), "%sshm/%d", c->prefix, p);
		MLRTI_CHECK_GOTO(mlrt_store_get(c->store, key, &name, &len), rc, fail);
		rc = map_peer(c, st, p, name);
		free(name);
		if (rc != MLRT_OK)
			goto fail;
	}

	/* Once every peer has mapped my segment, its name can go: from then
	 * on the memory lives exactly as long as the mappings. */
	snprintf(key, sizeof(key), "%sshm/mapped/%d", c->prefix, c->rank);
	MLRTI_CHECK_GOTO(mlrt_store_set(c->store, key, "ok", 2), rc, fail);
	mapped = 1;
	MLRTI_CHECK_GOTO(wait_peers(c, peers, "mapped/", "a peer's readiness"), rc, fail);
	MLRTI_CHECK_GOTO(check_mapped(c, peers), rc, fail);
	shm_unlink(st->name);
	st->linked = 0;

	for (p = 0; p < c->size; p++) {
		if (p == c->rank || peers[p] == 0)
			continue;
		c->links[p] = (mlrti_link){.ops = &mlrti_shm_ops, .peer = p, .state = &st->links[p]};
	}
	/* The direct allreduce takes the smallest area, where every rank has
	 * one (this rank has one only when shm links it to every rank). */
	st->direct_bytes = st->hdr->area_bytes;
	for (p = 0; p < c->size && st->direct_bytes > 0; p++)
		if (p != c->rank && st->links[p].peer_hdr->area_bytes < st->direct_bytes)
			st->direct_bytes = st->links[p].peer_hdr->area_bytes;
	c->shm = st;
	mlrt_log(MLRT_LOG_DEBUG, "shm: %s: %zu MiB, %u slots of %zu KiB per peer", st->name,
	         st->seg_bytes >> 20, st->nslots, st->slot_bytes >> 10);
	return MLRT_OK;

fail:
	/* Tell the peers now rather than let them wait for the timeout (not
	 * when the store itself is what failed). */
	if (rc == MLRT_ERR_UNAVAILABLE)
		published = mapped = 1;
	if (!published) {
		snprintf(key, sizeof(key), "%sshm/%d", c->prefix, c->rank);
		mlrt_store_set(c->store, key, "", 0);
	}
	if (!mapped) {
		snprintf(key, sizeof(key), "%sshm/mapped/%d", c->prefix, c->rank);
		mlrt_store_set(c->store, key, "error", 5);
	}
	free_state(st);
	return rc;
}

/* ---- data path ---- */

/* Copy as much of op into free slots as there is room for now, at most
 * a ringful (a receiver that keeps up would keep us here forever, and the
 * driver must get its turn at the other direction of an exchange).
 * Returns the number of slots published. */
static int send_some(shm_link *l, mlrti_op *op)
{
	const uint32_t nslots = l->tx_nslots;
	const size_t sb = l->tx_slot_bytes;
	int moved = 0;

	while (!op->complete && (uint32_t)moved < nslots) {
		uint64_t idx;
		shm_slot *s;
		size_t plen;

		if (l->tx_head - l->tx_tail == nslots) {
			/* Acquire: the receiver's reads of the slot are done. */
			l->tx_tail = atomic_load_explicit(&l->tx->tail, memory_order_acquire);
			if (l->tx_head - l->tx_tail == nslots)
				break;
		}
		idx = l->tx_head % nslots;
		s = &l->tx->slots[idx];
		plen = op->len - op->done < sb ? op->len - op->done : sb;
		s->magic = MLRTI_MSG_MAGIC;
		s->seq = op->seq;
		s->len = op->len;
		s->off = op->done;
		s->plen = plen;
		if (plen > 0)
			memcpy(l->tx_data + idx * sb, (const uint8_t *)op->sbuf + op->done, plen);
		l->tx_head++;
		atomic_store_explicit(&l->tx->head, l->tx_head, memory_order_release);
		op->done += plen;
		op->hdr_done = sizeof(mlrti_msg_hdr);
		moved++;
		if (op->done == op->len)
			op->complete = 1;
	}
	return moved;
}

/* memcpy with streaming (non-temporal) stores: the destination goes to
 * memory without being read into the cache first.  For a large receive
 * buffer this halves the memory traffic of the copy (no read for
 * ownership), which on the machines measured made the copy out of a slot
 * 2.4x as fast (docs/shm.md).  The fence makes the data visible to other
 * threads in the usual way before the slot is handed back. */
void *mlrti_copy_stream(void *dst, const void *src, size_t n)
{
#if defined(__SSE2__)
	uint8_t *d = dst;
	const uint8_t *s = src;
	size_t head = (SHM_LINE - ((uintptr_t)d & (SHM_LINE - 1))) & (SHM_LINE - 1);

	if (head > n)
		head = n;
	memcpy(d, s, head);
	d += head;
	s += head;
	n -= head;
	for (; n >= SHM_LINE; n -= SHM_LINE, d += SHM_LINE, s += SHM_LINE) {
		__m128i a = _mm_loadu_si128((const __m128i *)(const void *)s);
		__m128i b = _mm_loadu_si128((const __m128i *)(const void *)(s + 16));
		__m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + 32));
		__m128i y = _mm_loadu_si128((const __m128i *)(const void *)(s + 48));

		_mm_stream_si128((__m128i *)(void *)d, a);
		_mm_stream_si128((__m128i *)(void *)(d + 16), b);
		_mm_stream_si128((__m128i *)(void *)(d + 32), x);
		_mm_stream_si128((__m128i *)(void *)(d + 48), y);
	}
	_mm_sfence();
	memcpy(d, s, n);
#else
	memcpy(dst, src, n);
#endif
	return dst;
}

/* Report a slot that does not continue the message op expects. */
static int bad_slot(const mlrt_comm *c, const shm_link *l, const mlrti_op *op, const shm_slot *s)
{
	if (s->magic != MLRTI_MSG_MAGIC)
		mlrt_log(MLRT_LOG_ERROR, "shm: corrupt slot from rank %d (magic %#" PRIx32 ")",
		         l->peer, s->magic);
	else if (s->seq != op->seq || s->len != op->len)
		mlrt_log(MLRT_LOG_ERROR,
		         "shm: rank %d sent collective #%" PRIu32 " of %" PRIu64 " bytes; rank %d "
		         "expected collective #%" PRIu32 " of %zu bytes (the ranks disagree on the "
		         "sequence of collectives or their sizes)",
		         l->peer, s->seq, s->len, c->rank, op->seq, op->len);
	else
		mlrt_log(MLRT_LOG_ERROR,
		         "shm: rank %d sent bytes %" PRIu64 "..+%" PRIu64 " of collective #%" PRIu32
		         " where rank %d expected byte %zu", l->peer, s->off, s->plen, s->seq,
		         c->rank, op->done);
	return MLRT_ERR_PROTOCOL;
}

/* Deliver the published slots of op's message, at most a ringful (as in
 * send_some).  Returns the number of slots released, or
 * MLRT_ERR_PROTOCOL. */
static int recv_some(const mlrt_comm *c, const shm_state *st, shm_link *l, mlrti_op *op)
{
	const uint32_t nslots = st->nslots;
	const size_t sb = st->slot_bytes;
	int moved = 0;

	while (!op->complete && (uint32_t)moved < nslots) {
		const uint8_t *data;
		const shm_slot *s;
		uint64_t idx;
		size_t want;

		if (l->rx_head == l->rx_tail) {
			/* Acquire: the slot's header and payload are visible. */
			l->rx_head = atomic_load_explicit(&l->rx->head, memory_order_acquire);
			if (l->rx_head == l->rx_tail)
				break;
		}
		idx = l->rx_tail % nslots;
		s = &l->rx->slots[idx];
		want = op->len - op->done < sb ? op->len - op->done : sb;
		if (s->magic != MLRTI_MSG_MAGIC || s->seq != op->seq || s->len != op->len ||
		    s->off != op->done || s->plen != want)
			return bad_slot(c, l, op, s);
		data = l->rx_data + idx * sb;
		if (want > 0) {
			if (op->rbuf != NULL && op->len >= SHM_NT_MIN)
				mlrti_copy_stream((uint8_t *)op->rbuf + op->done, data, want);
			else if (op->rbuf != NULL)
				memcpy((uint8_t *)op->rbuf + op->done, data, want);
			else
				op->on_piece(op->arg, data, op->done, want);
		}
		/* The slot is the sender's again after the store: fill op->hdr
		 * from op's own (checked equal) fields, not from the slot. */
		op->hdr = (mlrti_msg_hdr){.magic = MLRTI_MSG_MAGIC, .seq = op->seq, .len = op->len};
		op->hdr_done = sizeof(mlrti_msg_hdr);
		l->rx_tail++;
		atomic_store_explicit(&l->rx->tail, l->rx_tail, memory_order_release);
		op->done += want;
		moved++;
		if (op->done == op->len)
			op->complete = 1;
	}
	return moved;
}

/* A stalled link: has the peer aborted or died?  The flag costs a load
 * and is read every time; the process check is a system call and runs at
 * most every SHM_CHECK_MS. */
static int check_peer(shm_link *l)
{
	int64_t now;

	if (atomic_load_explicit(&l->peer_hdr->aborted, memory_order_relaxed)) {
		mlrt_log(MLRT_LOG_ERROR, "shm: rank %d (pid %d) aborted the communicator", l->peer,
		         (int)l->pid);
		return MLRT_ERR_PEER_LOST;
	}
	now = mlrti_now_ms();
	if (now < l->next_check)
		return MLRT_OK;
	l->next_check = now + SHM_CHECK_MS;
	if (!peer_alive(l)) {
		mlrt_log(MLRT_LOG_ERROR, "shm: rank %d (pid %d) on this host has exited", l->peer,
		         (int)l->pid);
		return MLRT_ERR_PEER_LOST;
	}
	return MLRT_OK;
}

/* progress: nonblocking; see mlrti_transport_ops. */
static int shm_progress(mlrt_comm *c, mlrti_op *op)
{
	shm_state *st = c->shm;
	shm_link *l = op->link->state;
	int moved;

	if (atomic_load_explicit(&st->aborted, memory_order_relaxed))
		return MLRT_ERR_PEER_LOST;
	if (l->err != MLRT_OK)
		return l->err; /* logged when it happened */
	if (op->is_send) {
		moved = send_some(l, op);
	} else {
		if (op->rbuf == NULL && op->elem_size > 1 && st->slot_bytes % op->elem_size != 0) {
			mlrt_log(MLRT_LOG_ERROR, "shm: elements of %zu bytes do not divide the "
			         "%zu-byte slots", op->elem_size, st->slot_bytes);
			return MLRT_ERR_INVALID;
		}
		moved = recv_some(c, st, l, op);
		if (moved < 0)
			return l->err = moved;
	}
	if (moved > 0 || op->complete)
		return MLRT_OK;
	return l->err = check_peer(l);
}

/* wait_fd: shared memory has nothing to poll on. */
static int shm_wait_fd(const mlrti_op *op, struct pollfd *pfd)
{
	(void)op;
	(void)pfd;
	return 0;
}

/* abort: raise the flag my peers watch, and fail my own progress from now
 * on.  Two atomic stores: never blocks, any thread. */
static void shm_abort(mlrt_comm *c)
{
	shm_state *st = c->shm;

	if (st == NULL)
		return;
	atomic_store(&st->aborted, 1);
	atomic_store(&st->hdr->aborted, 1);
}

/* close: unmap and free everything; c->shm is NULL afterwards.  Peers
 * keep their own mappings of my segment until they close too. */
static void shm_close(mlrt_comm *c)
{
	free_state(c->shm);
	c->shm = NULL;
}

/* ---- the direct allreduce's areas (comm/shm.h) ---- */

size_t mlrti_shm_buf_bytes(const mlrt_comm *c)
{
	const shm_state *st = c->shm;

	return st != NULL ? st->direct_bytes : 0;
}

mlrti_shm_area *mlrti_shm_area_of(mlrt_comm *c, int r)
{
	shm_state *st = c->shm;

	return st->links[r].area;
}

uint8_t *mlrti_shm_buf(mlrt_comm *c, int r, int b)
{
	shm_state *st = c->shm;
	size_t bytes = r == c->rank ? st->hdr->area_bytes : st->links[r].peer_hdr->area_bytes;

	return st->links[r].abuf + (size_t)b * bytes;
}

uint64_t mlrti_shm_next_step(mlrt_comm *c)
{
	shm_state *st = c->shm;

	return ++st->step;
}

int mlrti_shm_check_peer(mlrt_comm *c, int r)
{
	shm_state *st = c->shm;
	shm_link *l = &st->links[r];

	if (atomic_load_explicit(&st->aborted, memory_order_relaxed))
		return MLRT_ERR_PEER_LOST;
	if (l->err == MLRT_OK)
		l->err = check_peer(l);
	return l->err;
}

const mlrti_transport_ops mlrti_shm_ops = {
	.name = "shm",
	.progress = shm_progress, /* nonblocking; moves what the ring allows now */
	.wait_fd = shm_wait_fd,   /* always 0: the driver polls progress */
	.abort = shm_abort,       /* two atomic stores; any thread */
	.close = shm_close,       /* no wait; tolerates NULL c->shm */
};
