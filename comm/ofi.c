/* The ofi transport: tagged messages over libfabric (docs/ofi.md).
 *
 * One reliable-datagram endpoint (FI_EP_RDM) per communicator, with one
 * completion queue and one address vector; libfabric picks the provider
 * (FI_PROVIDER=tcp, sockets, ...).  Each rank publishes its endpoint's
 * address under "<prefix>ofi/<rank>" and inserts every peer's into the
 * address vector; the provider connects on first use.
 *
 * A message is cut into pieces of PIECE_BYTES (the last one shorter; a
 * zero-length message is one empty piece), each one tagged message.  The
 * tag carries the collective number, the piece's index and a per-link,
 * per-direction message counter; the remote CQ data carries the whole
 * message's length.  Receives match on counter and piece only, so that a
 * sender on another collective or with another length is caught and
 * reported (MLRT_ERR_PROTOCOL) instead of waited for.  Up to WINDOW
 * pieces per direction are posted at once.
 *
 * A lost peer shows as an error completion (its connection broke), as
 * its process gone (peers on this host, checked when a direction has
 * been idle a while), or through the launcher's abort key and the
 * driver's timeout.  close trades goodbyes with the peers first, so that
 * no rank's last messages die with its endpoint (say_goodbye).
 *
 * Threads: progress and close run on the thread that owns the
 * communicator; abort only raises a flag and is safe from any thread. */
#include "mlrt_config.h"

#include <stddef.h>

#include "comm/comm.h"
#include "runtime/common.h"

#if HAVE_OFI

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>

#include <dlfcn.h>
#include <pthread.h>

/* libfabric is loaded when a communicator first asks for it, not with
 * libmlrt: loading it runs its providers' constructors (psm's calibrates a
 * timer for about 0.2 s), which every process of every job would pay.
 * These are its only functions that are not inline in its headers; the
 * versions are the ones its headers were written for. */
static struct {
	int (*getinfo)(uint32_t, const char *, const char *, uint64_t, const struct fi_info *,
	               struct fi_info **);
	void (*freeinfo)(struct fi_info *);
	struct fi_info *(*dupinfo)(const struct fi_info *);
	int (*fabric)(struct fi_fabric_attr *, struct fid_fabric **, void *);
	const char *(*strerror)(int);
} fi;
static pthread_once_t fi_once = PTHREAD_ONCE_INIT;
static char fi_why[300];

static void load_libfabric(void)
{
	struct sigaction saved[NSIG];
	void *h;

	/* The psm provider's constructor also installs handlers for SIGINT,
	 * SIGTERM, SIGSEGV...: the program's own dispositions stay. */
	for (int sig = 1; sig < NSIG; sig++)
		sigaction(sig, NULL, &saved[sig]);
	h = dlopen("libfabric.so.1", RTLD_NOW | RTLD_LOCAL);
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &saved[sig], NULL);
	if (h == NULL) {
		snprintf(fi_why, sizeof(fi_why), "%s", dlerror());
		return;
	}
	*(void **)&fi.getinfo = dlvsym(h, "fi_getinfo", "FABRIC_1.3");
	*(void **)&fi.freeinfo = dlvsym(h, "fi_freeinfo", "FABRIC_1.3");
	*(void **)&fi.dupinfo = dlvsym(h, "fi_dupinfo", "FABRIC_1.3");
	*(void **)&fi.fabric = dlvsym(h, "fi_fabric", "FABRIC_1.1");
	*(void **)&fi.strerror = dlvsym(h, "fi_strerror", "FABRIC_1.0");
	if (fi.getinfo == NULL || fi.freeinfo == NULL || fi.dupinfo == NULL || fi.fabric == NULL ||
	    fi.strerror == NULL) {
		snprintf(fi_why, sizeof(fi_why), "libfabric.so.1 lacks the functions of libfabric 1.3+");
		fi.getinfo = NULL;
	}
}

static int need_libfabric(void)
{
	pthread_once(&fi_once, load_libfabric);
	if (fi.getinfo != NULL)
		return MLRT_OK;
	mlrt_log(MLRT_LOG_ERROR, "ofi: cannot load libfabric: %s (install libfabric1, or use "
	         "another transport: unset MLRT_TRANSPORT)", fi_why);
	return MLRT_ERR_UNSUPPORTED;
}

#define fi_getinfo fi.getinfo
#define fi_freeinfo fi.freeinfo
#define fi_fabric fi.fabric
#define fi_strerror fi.strerror

/* Pieces are a multiple of every element size (powers of two up to 64)
 * and small enough that reducing one overlaps with receiving the next. */
#define PIECE_BYTES ((size_t)256 * 1024)
#define WINDOW 4 /* pieces posted at once per direction */

/* Tag, from bit 0: the collective number (32 bits, fewer where the
 * provider's tags are narrower), the piece index (12 bits), the
 * direction's message counter (12 bits) and a control bit (set only in
 * the goodbye of close).  Index and counter wrap; only a window of them is
 * ever outstanding.  Providers may keep top bits for themselves
 * (mem_tag_format 0x5555...: libfabric 1.17's "net" keeps bit 63), so the
 * fields start at the bottom. */
#define TAG_FIELD_BITS 12
#define TAG_FIELD_MASK 0xfffull
#define TAG_MIN_SEQ_BITS 8

#define CQ_BATCH 16
#define CQ_ROUNDS 64 /* batches per progress call, so that it returns */
/* A direction idle this long checks that its peer's process is alive
 * (peers on this host only), then again every LIVENESS_MS. */
#define LIVENESS_MS 100
/* Longest wait in close for the peers' goodbyes; then how long the
 * provider may still send (see say_goodbye). */
#define GOODBYE_MS 1000
#define GOODBYE_LINGER_MS 5
/* How long a dead local peer's last messages are read for. */
#define LAST_WORDS_MS 50
#define LAST_WORDS_ROUNDS 16
#define CLOSE_DRAIN_MS 200

/* The driver sleeps on a wait fd at most 100 ms at a time (comm/p2p.c):
 * finding completions this long after offering the fd means it did not
 * wake the driver; FD_MISSES such sleeps in a row, and it is dropped. */
#define FD_SUSPECT_MS 90
#define FD_MISSES 3

#define CARD_MAGIC 0x6d6c6f66u /* "mlof" */

/* What a rank publishes: who provides its endpoint, how to tell whether
 * it shares this host and pid namespace, then the address itself. */
typedef struct ofi_card {
	uint32_t magic;
	uint32_t addr_format;
	uint32_t addrlen;
	uint32_t reserved;
	uint64_t pidns;    /* inode of /proc/self/ns/pid, 0 if unknown */
	char boot_id[40];  /* /proc/sys/kernel/random/boot_id */
	char prov[64];     /* provider name, e.g. "tcp;ofi_rxm" */
} ofi_card;

typedef struct ofi_state ofi_state;
typedef struct ofi_link ofi_link;
typedef struct ofi_dir ofi_dir;

/* One posted piece.  ctx comes first: a completion's op_context is &ctx. */
typedef struct ofi_slot {
	struct fi_context2 ctx;
	ofi_link *link;
	ofi_dir *dir;  /* NULL: a goodbye (link->bye_tx or bye_rx) */
	size_t piece; /* index in the message */
	size_t len;   /* bytes expected */
	int busy;     /* posted, no completion yet */
	int done;     /* completed, not yet retired in order */
} ofi_slot;

/* One direction of a link: at most one message in flight. */
struct ofi_dir {
	ofi_link *link;
	int is_send;
	mlrti_op *op;       /* the message in flight; NULL between messages */
	uint32_t msgno;     /* this message's counter */
	uint32_t next_msg;  /* messages started in this direction */
	size_t npieces;
	size_t posted;      /* pieces posted, in order */
	size_t retired;     /* pieces completed and accounted, in order */
	int stalled;        /* a post was refused for lack of resources */
	int64_t last_ms;    /* when this direction last moved */
	ofi_slot slots[WINDOW];
	unsigned char *staging; /* recv: WINDOW pieces for on_piece, on first use */
};

struct ofi_link {
	ofi_state *st;
	int peer;
	fi_addr_t addr;
	int local;          /* same host and pid namespace: watch its pid */
	pid_t pid;
	int pidfd;          /* -1: kill(pid, 0) */
	int64_t next_check;
	ofi_dir tx, rx;
	ofi_slot bye_tx;    /* this rank's goodbye, sent by close */
	ofi_slot bye_rx;    /* the peer's, posted from the start */
	int bye_todo;
};

struct ofi_state {
	atomic_int aborted;  /* every progress fails from now on */
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_av *av;
	struct fid_cq *cq;
	struct fid_ep *ep;
	int cq_fd;           /* the CQ's wait fd, or -1 (the driver spins) */
	int64_t armed_ms;    /* when wait_fd last offered cq_fd; 0 once used */
	int fd_missed;       /* sleeps in a row that cq_fd did not end */
	int cq_data;         /* the provider carries 8 bytes of remote CQ data */
	int seq_bits;        /* of the collective number in a tag */
	uint64_t seq_mask;
	uint64_t ctrl_tag;   /* the goodbye's tag: no data receive matches it */
	int stalled;         /* directions with a refused post */
	int size;
	ofi_link *links;     /* [size]; used where links[p].st != NULL */
};

/* ---- small helpers ---- */

/* Bytes of piece of op's message. */
static size_t piece_len(const mlrti_op *op, size_t piece)
{
	size_t off = piece * PIECE_BYTES;

	return op->len - off < PIECE_BYTES ? op->len - off : PIECE_BYTES;
}

static uint64_t make_tag(const ofi_state *st, uint32_t seq, size_t piece, uint32_t msgno)
{
	return ((uint64_t)seq & st->seq_mask) |
	       ((uint64_t)piece & TAG_FIELD_MASK) << st->seq_bits |
	       ((uint64_t)msgno & TAG_FIELD_MASK) << (st->seq_bits + TAG_FIELD_BITS);
}

/* Status for a failed post or read of libfabric: a broken connection is a
 * lost peer, anything else an I/O error. */
static int ofi_status(ssize_t err)
{
	switch (-err) {
	case FI_ECONNRESET:
	case FI_ECONNREFUSED:
	case FI_ECONNABORTED:
	case FI_ENOTCONN:
	case FI_EHOSTUNREACH:
	case FI_ENETUNREACH:
	case FI_ESHUTDOWN:
		return MLRT_ERR_PEER_LOST;
	default:
		return MLRT_ERR_IO;
	}
}

/* Read a small text file's first line into buf (empty on failure). */
static void read_line(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");

	buf[0] = '\0';
	if (f == NULL)
		return;
	if (fgets(buf, (int)cap, f) == NULL)
		buf[0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	fclose(f);
}


/* Whether a local peer's process still runs; a zombie counts as dead. */
static int peer_alive(const ofi_link *l)
{
	char path[64], line[256], *paren;

	if (l->pidfd >= 0) {
		struct pollfd pfd = {.fd = l->pidfd, .events = POLLIN};

		return poll(&pfd, 1, 0) == 0;
	}
	if (kill(l->pid, 0) != 0 && errno != EPERM)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)l->pid);
	read_line(path, line, sizeof(line));
	paren = strrchr(line, ')');
	return paren == NULL || (paren[1] != ' ' || (paren[2] != 'Z' && paren[2] != 'X'));
}

/* ---- set-up ---- */

/* Pick a provider that does tagged messages on a reliable endpoint. */
static int get_info(ofi_state *st)
{
	struct fi_info *hints = fi.dupinfo(NULL); /* fi_allocinfo() */
	const char *want = getenv("FI_PROVIDER");
	uint64_t fmt;
	int r, tag_bits;

	if (hints == NULL)
		return MLRT_ERR_NOMEM;
	hints->caps = FI_TAGGED | FI_MSG | FI_DIRECTED_RECV;
	/* Every operation carries a struct fi_context2 of ours. */
	hints->mode = FI_CONTEXT | FI_CONTEXT2;
	hints->ep_attr->type = FI_EP_RDM;
	/* No memory is registered: only modes that concern RMA are fine. */
	hints->domain_attr->mr_mode = FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
	hints->domain_attr->threading = FI_THREAD_DOMAIN;
	/* Sends on a link arrive in order: the goodbye of close comes last. */
	hints->tx_attr->msg_order = FI_ORDER_SAS;
	hints->rx_attr->msg_order = FI_ORDER_SAS;
	r = fi_getinfo(FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION), NULL, NULL, 0, hints,
	               &st->info);
	fi_freeinfo(hints);
	if (r == -FI_ENODATA) {
		mlrt_log(MLRT_LOG_ERROR,
		         "ofi: no libfabric provider%s%s offers reliable tagged messages "
		         "(FI_EP_RDM, FI_TAGGED) here; try FI_PROVIDER=tcp",
		         want ? " matching FI_PROVIDER=" : "", want ? want : "");
		return MLRT_ERR_UNSUPPORTED;
	}
	if (r != 0) {
		mlrt_log(MLRT_LOG_ERROR, "ofi: fi_getinfo: %s", fi_strerror(-r));
		return MLRT_ERR_IO;
	}
	st->cq_data = st->info->domain_attr->cq_data_size >= sizeof(uint64_t);
	fmt = st->info->ep_attr->mem_tag_format;
	/* The highest bit set in the format is the provider's highest tag bit. */
	tag_bits = fmt == 0 ? 64 : 64 - __builtin_clzll(fmt);
	st->seq_bits = tag_bits - 2 * TAG_FIELD_BITS - 1;
	if (st->seq_bits > 32)
		st->seq_bits = 32;
	if (st->seq_bits < TAG_MIN_SEQ_BITS) {
		mlrt_log(MLRT_LOG_ERROR, "ofi: provider %s has %d-bit tags, too few; try "
		                         "FI_PROVIDER=tcp",
		         st->info->fabric_attr->prov_name, tag_bits);
		return MLRT_ERR_UNSUPPORTED;
	}
	st->seq_mask = (1ull << st->seq_bits) - 1;
	st->ctrl_tag = 1ull << (st->seq_bits + 2 * TAG_FIELD_BITS);
	return MLRT_OK;
}

/* Log a failed set-up call by name; r is its negative fi_errno. */
static int setup_failed(const char *call, int r)
{
	mlrt_log(MLRT_LOG_ERROR, "ofi: %s: %s", call, fi_strerror(-r));
	return r == -FI_ENOSYS || r == -FI_EOPNOTSUPP ? MLRT_ERR_UNSUPPORTED : MLRT_ERR_IO;
}

/* The CQ, with a file descriptor to sleep on where the provider has one. */
static int open_cq(ofi_state *st)
{
	struct fi_cq_attr attr = {.format = FI_CQ_FORMAT_TAGGED, .wait_obj = FI_WAIT_FD};
	int r = fi_cq_open(st->domain, &attr, &st->cq, NULL);

	if (r == 0 && fi_control(&st->cq->fid, FI_GETWAIT, &st->cq_fd) != 0) {
		fi_close(&st->cq->fid);
		st->cq = NULL;
		r = -FI_ENOSYS;
	}
	if (r != 0) {
		mlrt_log(MLRT_LOG_DEBUG, "ofi: no wait fd on the CQ (%s): progress spins",
		         fi_strerror(-r));
		st->cq_fd = -1;
		attr.wait_obj = FI_WAIT_NONE;
		r = fi_cq_open(st->domain, &attr, &st->cq, NULL);
	}
	return r == 0 ? MLRT_OK : setup_failed("fi_cq_open", r);
}

/* Fabric, domain, CQ, AV and endpoint, bound and enabled. */
static int open_endpoint(ofi_state *st)
{
	struct fi_av_attr av_attr = {.type = FI_AV_TABLE, .count = (size_t)st->size};
	int r, rc;

	if ((r = fi_fabric(st->info->fabric_attr, &st->fabric, NULL)) != 0)
		return setup_failed("fi_fabric", r);
	if ((r = fi_domain(st->fabric, st->info, &st->domain, NULL)) != 0)
		return setup_failed("fi_domain", r);
	if ((rc = open_cq(st)) != MLRT_OK)
		return rc;
	if ((r = fi_av_open(st->domain, &av_attr, &st->av, NULL)) != 0)
		return setup_failed("fi_av_open", r);
	if ((r = fi_endpoint(st->domain, st->info, &st->ep, NULL)) != 0)
		return setup_failed("fi_endpoint", r);
	if ((r = fi_ep_bind(st->ep, &st->av->fid, 0)) != 0)
		return setup_failed("fi_ep_bind (address vector)", r);
	if ((r = fi_ep_bind(st->ep, &st->cq->fid, FI_TRANSMIT | FI_RECV)) != 0)
		return setup_failed("fi_ep_bind (completion queue)", r);
	if ((r = fi_enable(st->ep)) != 0)
		return setup_failed("fi_enable", r);
	return MLRT_OK;
}

/* This rank's card and address, malloc'd into *out (*len bytes). */
static int make_card(ofi_state *st, void **out, size_t *len)
{
	size_t addrlen = 0;
	ofi_card *card;
	struct stat ns;
	int r;

	*out = NULL;
	r = fi_getname(&st->ep->fid, NULL, &addrlen);
	if (r != -FI_ETOOSMALL && r != 0)
		return setup_failed("fi_getname", r);
	card = calloc(1, sizeof(*card) + addrlen);
	if (card == NULL)
		return MLRT_ERR_NOMEM;
	if ((r = fi_getname(&st->ep->fid, card + 1, &addrlen)) != 0) {
		free(card);
		return setup_failed("fi_getname", r);
	}
	card->magic = CARD_MAGIC;
	card->addr_format = st->info->addr_format;
	card->addrlen = (uint32_t)addrlen;
	if (stat("/proc/self/ns/pid", &ns) == 0)
		card->pidns = (uint64_t)ns.st_ino;
	read_line("/proc/sys/kernel/random/boot_id", card->boot_id, sizeof(card->boot_id));
	snprintf(card->prov, sizeof(card->prov), "%s", st->info->fabric_attr->prov_name);
	*out = card;
	*len = sizeof(*card) + addrlen;
	return MLRT_OK;
}

/* Wait for peer p's card, check that it speaks our provider, insert its
 * address and decide whether its pid can be watched. */
static int add_peer(mlrt_comm *c, ofi_state *st, const ofi_card *mine, int p, int64_t deadline)
{
	char key[MLRTI_PREFIX_MAX + 32];
	const char *keys[1] = {key};
	ofi_link *l = &st->links[p];
	ofi_card *card = NULL;
	int64_t left = deadline - mlrti_now_ms();
	size_t len = 0;
	int r, rc;

	snprintf(key, sizeof(key), "%sofi/%d", c->prefix, p);
	rc = mlrt_store_wait(c->store, keys, 1, left > 0 ? (int)left : 1);
	if (rc == MLRT_OK)
		rc = mlrt_store_get(c->store, key, (void **)&card, &len);
	if (rc != MLRT_OK) {
		mlrt_log(MLRT_LOG_ERROR, "ofi: rank %d never published its address: %s", p,
		         mlrt_strerror(rc));
		return rc;
	}
	if (len < sizeof(*card) || card->magic != CARD_MAGIC ||
	    len != sizeof(*card) + card->addrlen) {
		mlrt_log(MLRT_LOG_ERROR, "ofi: rank %d published a malformed address at %s", p,
		         key);
		rc = MLRT_ERR_PROTOCOL;
		goto out;
	}
	card->prov[sizeof(card->prov) - 1] = '\0';
	if (strcmp(card->prov, mine->prov) != 0 || card->addr_format != mine->addr_format) {
		mlrt_log(MLRT_LOG_ERROR,
		         "ofi: rank %d uses provider %s but rank %d uses %s: set the same "
		         "FI_PROVIDER for every rank",
		         p, card->prov, c->rank, mine->prov);
		rc = MLRT_ERR_INVALID;
		goto out;
	}
	r = fi_av_insert(st->av, card + 1, 1, &l->addr, 0, NULL);
	if (r != 1) {
		mlrt_log(MLRT_LOG_ERROR, "ofi: fi_av_insert of rank %d's address: %s", p,
		         fi_strerror(r < 0 ? -r : FI_EINVAL));
		rc = MLRT_ERR_IO;
		goto out;
	}
	l->pid = (pid_t)c->pids[p];
	l->local = c->pids[p] > 0 && card->pidns != 0 && card->pidns == mine->pidns &&
	           card->boot_id[0] != '\0' && strcmp(card->boot_id, mine->boot_id) == 0 &&
	           strcmp(c->hosts[p], c->hosts[c->rank]) == 0;
	if (l->local)
		l->pidfd = mlrti_pidfd_open(l->pid);
out:
	free(card);
	return rc;
}

/* The peer's goodbye (see say_goodbye) is matched at once, whenever it
 * comes: some providers acknowledge only matched messages. */
static int post_goodbye_recv(ofi_state *st, ofi_link *l)
{
	ssize_t r = fi_trecv(st->ep, &l->bye_rx, 0, NULL, l->addr, st->ctrl_tag, 0,
	                     &l->bye_rx.ctx);

	if (r != 0)
		return setup_failed("fi_trecv (goodbye)", (int)r);
	l->bye_rx.busy = 1;
	return MLRT_OK;
}

int mlrti_ofi_open(mlrt_comm *c, const int *peers)
{
	char key[MLRTI_PREFIX_MAX + 32];
	int64_t deadline = mlrti_now_ms() + c->timeout_ms;
	ofi_state *st = calloc(1, sizeof(*st));
	void *card = NULL;
	size_t card_len = 0;
	int rc = need_libfabric();

	if (rc != MLRT_OK) {
		free(st);
		return rc;
	}
	if (st == NULL)
		return MLRT_ERR_NOMEM;
	/* From here on mlrti_ofi_ops.close undoes whatever was set up. */
	c->ofi = st;
	st->cq_fd = -1;
	st->size = c->size;
	st->links = calloc((size_t)c->size, sizeof(*st->links));
	if (st->links == NULL)
		return MLRT_ERR_NOMEM;
	for (int p = 0; p < c->size; p++)
		st->links[p].pidfd = -1;
	MLRTI_CHECK_GOTO(get_info(st), rc, out);
	MLRTI_CHECK_GOTO(open_endpoint(st), rc, out);
	MLRTI_CHECK_GOTO(make_card(st, &card, &card_len), rc, out);
	snprintf(key, sizeof(key), "%sofi/%d", c->prefix, c->rank);
	MLRTI_CHECK_GOTO(mlrt_store_set(c->store, key, card, card_len), rc, out);
	for (int p = 0; p < c->size; p++) {
		ofi_link *l = &st->links[p];

		if (!peers[p] || p == c->rank)
			continue;
		MLRTI_CHECK_GOTO(add_peer(c, st, card, p, deadline), rc, out);
		l->st = st;
		l->peer = p;
		l->tx = (ofi_dir){.link = l, .is_send = 1};
		l->rx = (ofi_dir){.link = l, .is_send = 0};
		for (int i = 0; i < WINDOW; i++) {
			l->tx.slots[i] = (ofi_slot){.link = l, .dir = &l->tx};
			l->rx.slots[i] = (ofi_slot){.link = l, .dir = &l->rx};
		}
		l->bye_tx = (ofi_slot){.link = l};
		l->bye_rx = (ofi_slot){.link = l};
		MLRTI_CHECK_GOTO(post_goodbye_recv(st, l), rc, out);
		c->links[p] = (mlrti_link){.ops = &mlrti_ofi_ops, .peer = p, .state = l};
	}
	mlrt_log(MLRT_LOG_DEBUG, "ofi: rank %d on provider %s (fabric %s, domain %s)%s", c->rank,
	         st->info->fabric_attr->prov_name, st->info->fabric_attr->name,
	         st->info->domain_attr->name, st->cq_fd >= 0 ? "" : ", polling");
out:
	free(card);
	return rc;
}

/* ---- data path ---- */

/* A piece that is not the one expected: ranks disagree.  sent says what
 * the peer sent, seq is from its tag. */
static int bad_piece(const ofi_dir *d, uint32_t seq, const char *sent)
{
	mlrt_log(MLRT_LOG_ERROR,
	         "comm: rank %d sent %s for collective #%u, but this rank expected %zu bytes for "
	         "collective #%u: the ranks disagree on the collective or its count",
	         d->link->peer, sent, seq, d->op->len, d->op->seq);
	return MLRT_ERR_PROTOCOL;
}

static int post(ofi_dir *d, ofi_slot *s, size_t piece);

/* Post the pieces that fit in the window. */
static int refill(ofi_dir *d)
{
	ofi_state *st = d->link->st;
	int was = d->stalled;

	d->stalled = 0;
	while (d->posted < d->npieces) {
		ofi_slot *s = &d->slots[d->posted % WINDOW];
		int rc;

		if (s->busy || s->done)
			break;
		rc = post(d, s, d->posted);
		if (rc == -FI_EAGAIN) {
			d->stalled = 1;
			break;
		}
		if (rc != MLRT_OK)
			return rc;
		d->posted++;
	}
	st->stalled += d->stalled - was;
	return MLRT_OK;
}

/* Post piece of d's message into slot s: MLRT_OK, -FI_EAGAIN (retry
 * later) or an mlrt error. */
static int post(ofi_dir *d, ofi_slot *s, size_t piece)
{
	ofi_link *l = d->link;
	ofi_state *st = l->st;
	mlrti_op *op = d->op;
	size_t off = piece * PIECE_BYTES, len = piece_len(op, piece);
	uint64_t tag = make_tag(st, op->seq, piece, d->msgno);
	ssize_t r;

	s->piece = piece;
	s->len = len;
	if (d->is_send) {
		const void *buf = len > 0 ? (const char *)op->sbuf + off : (const void *)s;

		if (st->cq_data)
			r = fi_tsenddata(st->ep, buf, len, NULL, op->len, l->addr, tag, &s->ctx);
		else
			r = fi_tsend(st->ep, buf, len, NULL, l->addr, tag, &s->ctx);
	} else {
		void *buf = op->rbuf != NULL ? (char *)op->rbuf + off
		          : d->staging != NULL ? d->staging + (piece % WINDOW) * PIECE_BYTES
		                               : (void *)s;

		/* Any collective number matches: a wrong one is reported. */
		r = fi_trecv(st->ep, buf, len, NULL, l->addr, tag, st->seq_mask, &s->ctx);
	}
	if (r == -FI_EAGAIN)
		return -FI_EAGAIN;
	if (r != 0) {
		mlrt_log(MLRT_LOG_ERROR, "comm: ofi %s of %zu bytes %s rank %d failed: %s",
		         d->is_send ? "fi_tsend" : "fi_trecv", len, d->is_send ? "to" : "from",
		         l->peer, fi_strerror((int)-r));
		return ofi_status(r);
	}
	s->busy = 1;
	return MLRT_OK;
}

/* Account for the completed pieces in order (handing staged ones to
 * on_piece), finish the message or post more. */
static int retire(ofi_dir *d)
{
	mlrti_op *op = d->op;

	while (d->retired < d->posted && d->slots[d->retired % WINDOW].done) {
		ofi_slot *s = &d->slots[d->retired % WINDOW];

		if (!d->is_send && op->rbuf == NULL && s->len > 0)
			op->on_piece(op->arg, d->staging + (d->retired % WINDOW) * PIECE_BYTES,
			             d->retired * PIECE_BYTES, s->len);
		op->done += s->len;
		s->done = 0;
		d->retired++;
	}
	if (d->retired == d->npieces) {
		op->complete = 1;
		d->op = NULL;
		return MLRT_OK;
	}
	return refill(d);
}

/* One completion: check a received piece, then advance its direction
 * (which may be another op of the same exchange). */
static int completed(const struct fi_cq_tagged_entry *e)
{
	ofi_slot *s = e->op_context;
	ofi_dir *d;

	if (s == NULL)
		return MLRT_OK;
	d = s->dir;
	s->busy = 0;
	if (d == NULL || d->op == NULL)
		return MLRT_OK; /* a goodbye, or left over from an abandoned message */
	if (!d->is_send) {
		const ofi_state *st = d->link->st;
		int have_len = st->cq_data && (e->flags & FI_REMOTE_CQ_DATA);
		uint32_t seq = (uint32_t)(e->tag & st->seq_mask);
		char sent[128];

		if (seq != (d->op->seq & st->seq_mask) || (have_len && e->data != d->op->len) ||
		    e->len != s->len) {
			if (have_len)
				snprintf(sent, sizeof(sent), "%llu bytes",
				         (unsigned long long)e->data);
			else
				snprintf(sent, sizeof(sent),
				         "a message with %zu bytes in piece %zu (%zu expected "
				         "there)",
				         e->len, s->piece, s->len);
			return bad_piece(d, seq, sent);
		}
	}
	s->done = 1;
	d->last_ms = mlrti_now_ms();
	return retire(d);
}

/* The error entry at the head of the CQ: a cancelled piece is forgotten,
 * a truncated receive means the sender's message is longer than ours,
 * anything else is a lost peer. */
static int completed_with_error(ofi_state *st)
{
	struct fi_cq_err_entry err = {0};
	char detail[256] = "";
	ofi_slot *s;
	ofi_dir *d;
	ssize_t r = fi_cq_readerr(st->cq, &err, 0);

	if (r == -FI_EAGAIN)
		return MLRT_OK;
	if (r < 0) {
		mlrt_log(MLRT_LOG_ERROR, "comm: ofi fi_cq_readerr: %s", fi_strerror((int)-r));
		return MLRT_ERR_IO;
	}
	s = err.op_context;
	if (s != NULL)
		s->busy = 0;
	if (err.err == FI_ECANCELED || (s != NULL && s->dir == NULL))
		return MLRT_OK; /* or a goodbye that failed: its peer is gone or going */
	if (err.prov_errno != 0)
		snprintf(detail, sizeof(detail), " (%s)",
		         fi_cq_strerror(st->cq, err.prov_errno, err.err_data, NULL, 0));
	if (s == NULL) {
		mlrt_log(MLRT_LOG_ERROR, "comm: ofi completion error: %s%s", fi_strerror(err.err),
		         detail);
		return MLRT_ERR_PEER_LOST;
	}
	d = s->dir;
	if (!d->is_send && err.err == FI_ETRUNC && d->op != NULL) {
		char sent[64];
		/* The tag's match bits show whether the provider filled it in. */
		uint32_t seq = (err.tag & ~st->seq_mask) == make_tag(st, 0, s->piece, d->msgno)
		                   ? (uint32_t)(err.tag & st->seq_mask)
		                   : d->op->seq;

		if (st->cq_data && (err.flags & FI_REMOTE_CQ_DATA))
			snprintf(sent, sizeof(sent), "%llu bytes", (unsigned long long)err.data);
		else
			snprintf(sent, sizeof(sent), "more than %zu bytes",
			         s->piece * PIECE_BYTES + s->len);
		return bad_piece(d, seq, sent);
	}
	mlrt_log(MLRT_LOG_ERROR, "comm: lost rank %d (ofi %s of piece %zu: %s%s)", d->link->peer,
	         d->is_send ? "send" : "receive", s->piece, fi_strerror(err.err), detail);
	return MLRT_ERR_PEER_LOST;
}

/* Read the CQ until it is empty (bounded), advancing every direction
 * whose pieces completed.  Reading also drives providers with manual
 * progress. */
static int drain_cq(ofi_state *st, size_t *seen)
{
	*seen = 0;
	for (int round = 0; round < CQ_ROUNDS; round++) {
		struct fi_cq_tagged_entry e[CQ_BATCH];
		ssize_t n = fi_cq_read(st->cq, e, CQ_BATCH);
		int rc;

		if (n == -FI_EAGAIN)
			return MLRT_OK;
		if (n == -FI_EAVAIL) {
			if ((rc = completed_with_error(st)) != MLRT_OK)
				return rc;
			continue;
		}
		if (n < 0) {
			mlrt_log(MLRT_LOG_ERROR, "comm: ofi fi_cq_read: %s", fi_strerror((int)-n));
			return MLRT_ERR_IO;
		}
		*seen += (size_t)n;
		for (ssize_t i = 0; i < n; i++)
			if ((rc = completed(&e[i])) != MLRT_OK)
				return rc;
		if (n < CQ_BATCH)
			return MLRT_OK;
	}
	return MLRT_OK;
}

/* Cancel every posted piece and forget the messages in flight: after a
 * failure the callers' buffers are theirs again (a piece the provider is
 * already receiving cannot be cancelled; providers with manual progress
 * move no data once progress stops).  The cancellations complete later
 * (drained by close). */
static void cancel_all(ofi_state *st)
{
	for (int p = 0; p < st->size; p++) {
		ofi_link *l = &st->links[p];
		ofi_dir *dirs[2] = {&l->tx, &l->rx};

		if (l->st == NULL)
			continue;
		if (l->bye_rx.busy)
			fi_cancel(&st->ep->fid, &l->bye_rx.ctx);
		if (l->bye_tx.busy)
			fi_cancel(&st->ep->fid, &l->bye_tx.ctx);
		for (int k = 0; k < 2; k++) {
			for (int i = 0; i < WINDOW; i++)
				if (dirs[k]->slots[i].busy)
					fi_cancel(&st->ep->fid, &dirs[k]->slots[i].ctx);
			dirs[k]->op = NULL;
		}
	}
}

/* Start op on direction d: post the first window of pieces. */
static int start(ofi_dir *d, mlrti_op *op)
{
	if (d->op != NULL) {
		mlrt_log(MLRT_LOG_ERROR, "comm: ofi: a second %s to rank %d while one is in flight",
		         d->is_send ? "send" : "receive", d->link->peer);
		return MLRT_ERR_INTERNAL;
	}
	if (!d->is_send && op->rbuf == NULL && op->len > 0) {
		if (op->on_piece == NULL || PIECE_BYTES % op->elem_size != 0) {
			mlrt_log(MLRT_LOG_ERROR, "comm: ofi: cannot hand %zu-byte elements to a "
			                         "receiver in %zu-byte pieces",
			         op->elem_size, PIECE_BYTES);
			return MLRT_ERR_INVALID;
		}
		if (d->staging == NULL && (d->staging = malloc(WINDOW * PIECE_BYTES)) == NULL)
			return MLRT_ERR_NOMEM;
	}
	d->op = op;
	d->msgno = d->next_msg++;
	d->npieces = op->len == 0 ? 1 : (op->len + PIECE_BYTES - 1) / PIECE_BYTES;
	d->posted = d->retired = 0;
	d->last_ms = mlrti_now_ms();
	op->hdr = (mlrti_msg_hdr){.magic = MLRTI_MSG_MAGIC, .seq = op->seq, .len = op->len};
	op->hdr_done = sizeof(op->hdr);
	return refill(d);
}

/* A peer on this host whose process is gone is lost, whatever the
 * provider says (a posted receive from it may never complete).  What it
 * sent before it went may still wait in this host's socket buffers: that
 * is read first, so that a peer that sent its last message and exited
 * is not taken for one that died. */
static int check_alive(ofi_link *l, const ofi_dir *d, const mlrti_op *op)
{
	ofi_state *st = l->st;
	int64_t now;

	if (!l->local)
		return MLRT_OK;
	now = mlrti_now_ms();
	if (now - d->last_ms < LIVENESS_MS || now < l->next_check)
		return MLRT_OK;
	l->next_check = now + LIVENESS_MS;
	if (peer_alive(l))
		return MLRT_OK;
	for (int64_t i = 0, until = now + LAST_WORDS_MS;
	     !op->complete && (i < LAST_WORDS_ROUNDS || mlrti_now_ms() < until); i++) {
		size_t seen;
		int rc = drain_cq(st, &seen);

		if (rc != MLRT_OK)
			return rc;
		if (!op->complete)
			sched_yield();
	}
	if (op->complete)
		return MLRT_OK;
	mlrt_log(MLRT_LOG_ERROR, "comm: lost rank %d (its process %d on this host is gone; ofi %s)",
	         l->peer, (int)l->pid, op->is_send ? "send" : "receive");
	return MLRT_ERR_PEER_LOST;
}

/* The first progress after the driver slept on the CQ's fd.  Some
 * providers' fds do not wake for arrivals (libfabric 1.17's "net"): the
 * driver then sleeps its whole poll slice every time and finds work at
 * once after it.  A few of those in a row, and never a prompt wake-up,
 * and this transport stops offering the fd and spins instead. */
static void check_wakeup(ofi_state *st, size_t seen)
{
	int64_t slept = mlrti_now_ms() - st->armed_ms;

	st->armed_ms = 0;
	if (seen == 0)
		return;
	if (slept < FD_SUSPECT_MS) {
		st->fd_missed = 0;
		return;
	}
	if (++st->fd_missed >= FD_MISSES) {
		mlrt_log(MLRT_LOG_DEBUG, "ofi: the CQ's wait fd does not wake up for arrivals "
		                         "(provider %s): polling instead",
		         st->info->fabric_attr->prov_name);
		st->cq_fd = -1;
	}
}

/* Start op if it is new, read the CQ, retry refused posts, watch a local
 * peer.  Any error fails every link of st (the communicator fails). */
static int ofi_progress(mlrt_comm *c, mlrti_op *op)
{
	ofi_state *st = c->ofi;
	ofi_link *l = op->link->state;
	ofi_dir *d = op->is_send ? &l->tx : &l->rx;
	size_t seen = 0;
	int rc = MLRT_OK;

	if (atomic_load(&st->aborted)) {
		cancel_all(st);
		return MLRT_ERR_PEER_LOST;
	}
	if (op->hdr_done == 0)
		rc = start(d, op);
	if (rc == MLRT_OK)
		rc = drain_cq(st, &seen);
	if (rc == MLRT_OK && st->armed_ms != 0)
		check_wakeup(st, seen);
	if (rc == MLRT_OK && !op->complete && d->stalled)
		rc = refill(d);
	if (rc == MLRT_OK && !op->complete)
		rc = check_alive(l, d, op);
	if (rc != MLRT_OK) {
		/* The communicator fails with this error: so does every link. */
		atomic_store(&st->aborted, 1);
		cancel_all(st);
	}
	return rc;
}

/* The CQ's fd once fi_trywait has armed it; 0 (spin) otherwise. */
static int ofi_wait_fd(const mlrti_op *op, struct pollfd *pfd)
{
	const ofi_link *l = op->link->state;
	ofi_state *st = l->st;
	struct fid *fids[1] = {&st->cq->fid};

	/* fi_trywait succeeds only when the CQ is empty and the fd armed. */
	if (st->cq_fd < 0 || st->stalled > 0 || atomic_load(&st->aborted) ||
	    fi_trywait(st->fabric, fids, 1) != FI_SUCCESS)
		return 0;
	st->armed_ms = mlrti_now_ms();
	pfd->fd = st->cq_fd;
	pfd->events = POLLIN;
	pfd->revents = 0;
	return 1;
}

/* Fail every link from now on; safe from any thread. */
static void ofi_abort(mlrt_comm *c)
{
	ofi_state *st = c->ofi;

	/* Only a flag: the owner's next progress cancels what is posted.
	 * Peers learn from their own sends failing, from the launcher's
	 * abort key or from their timeout. */
	if (st != NULL)
		atomic_store(&st->aborted, 1);
}

/* Close one libfabric object.  After a failure a provider may still hold
 * on to what a lost peer never finished (FI_EBUSY): that is only noted. */
static void close_fid(ofi_state *st, struct fid *f, const char *what)
{
	int r;

	if (f != NULL && (r = fi_close(f)) != 0)
		mlrt_log(atomic_load(&st->aborted) ? MLRT_LOG_DEBUG : MLRT_LOG_WARN,
		         "ofi: fi_close (%s): %s", what, fi_strerror(-r));
}

/* Whether any slot of st is still posted. */
static int any_busy(const ofi_state *st)
{
	for (int p = 0; p < st->size; p++) {
		const ofi_link *l = &st->links[p];

		if (l->bye_tx.busy || l->bye_rx.busy)
			return 1;
		for (int i = 0; i < WINDOW; i++)
			if (l->tx.slots[i].busy || l->rx.slots[i].busy)
				return 1;
	}
	return 0;
}

/* Read the CQ for close: completions only free their slots. */
static void drain_quietly(ofi_state *st)
{
	struct fi_cq_tagged_entry e[CQ_BATCH];
	ssize_t n = fi_cq_read(st->cq, e, CQ_BATCH);

	if (n == -FI_EAVAIL) {
		struct fi_cq_err_entry err = {0};

		if (fi_cq_readerr(st->cq, &err, 0) > 0 && err.op_context != NULL) {
			ofi_slot *s = err.op_context;

			s->busy = 0;
			if (s->dir == NULL && err.err != FI_ECANCELED)
				mlrt_log(MLRT_LOG_DEBUG, "ofi: goodbye %s rank %d: %s",
				         s == &s->link->bye_tx ? "to" : "from", s->link->peer,
				         fi_strerror(err.err));
		}
	}
	for (ssize_t i = 0; i < n; i++)
		if (e[i].op_context != NULL)
			((ofi_slot *)e[i].op_context)->busy = 0;
}

/* Send one goodbye to l's peer; 1 when it must be tried again. */
static int send_goodbye(ofi_state *st, ofi_link *l)
{
	struct iovec iov = {.iov_base = &l->bye_tx, .iov_len = 0};
	struct fi_msg_tagged m = {.msg_iov = &iov, .iov_count = 1, .addr = l->addr,
	                          .tag = st->ctrl_tag, .context = &l->bye_tx.ctx};
	ssize_t r = fi_tsendmsg(st->ep, &m, FI_TRANSMIT_COMPLETE | FI_COMPLETION);

	if (r == -FI_EAGAIN)
		return 1;
	if (r == 0)
		l->bye_tx.busy = 1;
	else
		mlrt_log(MLRT_LOG_DEBUG, "ofi: goodbye to rank %d: fi_tsendmsg: %s", l->peer,
		         fi_strerror((int)-r));
	return 0;
}

/* Close must not lose what this rank sent last: a provider may complete a
 * send while the data still sits in its own buffers, and closing the
 * endpoint drops them (libfabric 1.17's "net" does).  So before it goes,
 * each rank trades goodbyes with its peers, bounded by GOODBYE_MS:
 *   - it waits for the goodbye of every peer it sent to: a peer says
 *     goodbye only after its last collective, which needed all this rank
 *     sent it, and goodbyes come after the data (FI_ORDER_SAS);
 *   - its own goodbye goes to every peer that sent to it (those wait for
 *     it), with FI_TRANSMIT_COMPLETE, and is waited for;
 *   - then the provider gets GOODBYE_LINGER_MS to send its own
 *     acknowledgements.
 * A peer that is gone answers with an error; one that never closes is
 * waited for until the bound. */
static void say_goodbye(mlrt_comm *c, ofi_state *st)
{
	int64_t bound = c->timeout_ms < GOODBYE_MS ? c->timeout_ms : GOODBYE_MS;
	int64_t until = mlrti_now_ms() + bound;
	int pending;

	for (int p = 0; p < st->size; p++)
		st->links[p].bye_todo = st->links[p].st != NULL && st->links[p].rx.next_msg > 0;
	for (;;) {
		pending = 0;
		for (int p = 0; p < st->size; p++) {
			ofi_link *l = &st->links[p];

			if (l->bye_todo)
				l->bye_todo = send_goodbye(st, l);
			pending |= l->bye_todo || l->bye_tx.busy ||
			           (l->st != NULL && l->tx.next_msg > 0 && l->bye_rx.busy);
		}
		if (!pending || mlrti_now_ms() >= until)
			break;
		drain_quietly(st);
		sched_yield();
	}
	if (pending)
		mlrt_log(MLRT_LOG_DEBUG, "ofi: rank %d: not every peer said goodbye within %lld ms",
		         c->rank, (long long)bound);
	for (until = mlrti_now_ms() + GOODBYE_LINGER_MS; mlrti_now_ms() < until;) {
		drain_quietly(st);
		sched_yield();
	}
}

/* Goodbyes (unless failed), cancel, drain, close in reverse, free.
 * Tolerates a set-up that stopped anywhere. */
static void ofi_close(mlrt_comm *c)
{
	ofi_state *st = c->ofi;

	if (st == NULL)
		return;
	if (st->ep != NULL && st->cq != NULL && st->links != NULL) {
		int64_t until;

		if (!atomic_load(&st->aborted))
			say_goodbye(c, st);
		cancel_all(st);
		/* Let the cancellations complete before the endpoint goes. */
		until = mlrti_now_ms() + CLOSE_DRAIN_MS;
		while (any_busy(st) && mlrti_now_ms() < until)
			drain_quietly(st);
	}
	close_fid(st, st->ep ? &st->ep->fid : NULL, "endpoint");
	close_fid(st, st->av ? &st->av->fid : NULL, "address vector");
	close_fid(st, st->cq ? &st->cq->fid : NULL, "completion queue");
	close_fid(st, st->domain ? &st->domain->fid : NULL, "domain");
	close_fid(st, st->fabric ? &st->fabric->fid : NULL, "fabric");
	if (st->info != NULL)
		fi_freeinfo(st->info);
	for (int p = 0; st->links != NULL && p < st->size; p++) {
		free(st->links[p].rx.staging);
		if (st->links[p].pidfd >= 0)
			close(st->links[p].pidfd);
	}
	free(st->links);
	free(st);
	c->ofi = NULL;
}

#else /* !HAVE_OFI */

int mlrti_ofi_open(mlrt_comm *c, const int *peers)
{
	(void)c;
	(void)peers;
	mlrt_log(MLRT_LOG_ERROR, "comm: MLRT_TRANSPORT=ofi, but this build has no libfabric "
	                         "(install libfabric-dev and reconfigure with -Dofi=enabled)");
	return MLRT_ERR_UNSUPPORTED;
}

/* Never reached: no link uses this table when there is no ofi state;
 * close and abort are called only where c->ofi is set. */
static int ofi_progress(mlrt_comm *c, mlrti_op *op)
{
	(void)c;
	(void)op;
	return MLRT_ERR_UNSUPPORTED;
}

static int ofi_wait_fd(const mlrti_op *op, struct pollfd *pfd)
{
	(void)op;
	(void)pfd;
	return 0;
}

static void ofi_abort(mlrt_comm *c)
{
	(void)c;
}

static void ofi_close(mlrt_comm *c)
{
	(void)c;
}

#endif /* HAVE_OFI */

const mlrti_transport_ops mlrti_ofi_ops = {
	.name = "ofi",
	/* Never blocks (a dead local peer's last messages are read for up
	 * to 50 ms): posts pieces, reads the CQ.  Buffers stay the caller's;
	 * on error every posted piece is cancelled (one a provider is
	 * already receiving may still land). */
	.progress = ofi_progress,
	/* The CQ's wait fd when the provider has one and it is armed, else 0. */
	.wait_fd = ofi_wait_fd,
	/* Never blocks: raises a flag; the owner's next progress cancels
	 * what is posted. */
	.abort = ofi_abort,
	/* Blocks, bounded (about 1.2 s at most): goodbyes with the peers,
	 * cancels, drains, closes every libfabric object. */
	.close = ofi_close,
};
