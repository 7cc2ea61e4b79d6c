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
 * Threads: progress and close run on the thread that owns the
 * communicator; abort only raises a flag and is safe from any thread. */
#include "mlrt_config.h"

#include <stddef.h>

#include "comm/comm.h"
#include "runtime/common.h"

#if HAVE_OFI

#include <errno.h>
#include <poll.h>
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

/* Pieces are a multiple of every element size (powers of two up to 64)
 * and small enough that reducing one overlaps with receiving the next. */
#define PIECE_BYTES ((size_t)256 * 1024)
#define WINDOW 4 /* pieces posted at once per direction */

/* Tag: bits 0-31 the collective number, 32-51 the piece index, 52-63 the
 * message counter of the direction (both wrap; only a window of them is
 * ever outstanding). */
#define TAG_SEQ_MASK 0xffffffffull
#define TAG_PIECE_SHIFT 32
#define TAG_PIECE_MASK 0xfffffull
#define TAG_MSG_SHIFT 52
#define TAG_MSG_MASK 0xfffull

#define CQ_BATCH 16
#define CQ_ROUNDS 64 /* batches per progress call, so that it returns */
/* A direction idle this long checks that its peer's process is alive
 * (peers on this host only), then again every LIVENESS_MS. */
#define LIVENESS_MS 100
#define CLOSE_DRAIN_MS 200

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
	ofi_dir *dir;
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
	int cq_data;         /* the provider carries 8 bytes of remote CQ data */
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

static uint64_t make_tag(uint32_t seq, size_t piece, uint32_t msgno)
{
	return (uint64_t)seq | ((uint64_t)piece & TAG_PIECE_MASK) << TAG_PIECE_SHIFT |
	       ((uint64_t)msgno & TAG_MSG_MASK) << TAG_MSG_SHIFT;
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

/* pidfd_open(2) where the headers know it; -1 (use kill) otherwise. */
static int open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

/* Whether a local peer's process still runs; a zombie counts as dead. */
static int peer_alive(const ofi_link *l)
{
	char path[64], stat[256], *paren;

	if (l->pidfd >= 0) {
		struct pollfd pfd = {.fd = l->pidfd, .events = POLLIN};

		return poll(&pfd, 1, 0) == 0;
	}
	if (kill(l->pid, 0) != 0 && errno != EPERM)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)l->pid);
	read_line(path, stat, sizeof(stat));
	paren = strrchr(stat, ')');
	return paren == NULL || (paren[1] != ' ' || (paren[2] != 'Z' && paren[2] != 'X'));
}

/* ---- set-up ---- */

/* Pick a provider that does tagged messages on a reliable endpoint. */
static int get_info(ofi_state *st)
{
	struct fi_info *hints = fi_allocinfo();
	const char *want = getenv("FI_PROVIDER");
	int r;

	if (hints == NULL)
		return MLRT_ERR_NOMEM;
	hints->caps = FI_TAGGED | FI_MSG | FI_DIRECTED_RECV;
	/* Every operation carries a struct fi_context2 of ours. */
	hints->mode = FI_CONTEXT | FI_CONTEXT2;
	hints->ep_attr->type = FI_EP_RDM;
	/* No memory is registered: only modes that concern RMA are fine. */
	hints->domain_attr->mr_mode = FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
	hints->domain_attr->threading = FI_THREAD_DOMAIN;
	r = fi_getinfo(FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION), NULL, NULL, 0, hints,
	               &st->info);
	fi_freeinfo(hints);
	if (r == -FI_ENODATA) {
		mlrt_log(MLRT_LOG_ERROR, "ofi: no libfabric provider%s%s offers reliable tagged "
		                         "messages (FI_EP_RDM, FI_TAGGED) here; try FI_PROVIDER=tcp",
		         want ? " matching FI_PROVIDER=" : "", want ? want : "");
		return MLRT_ERR_UNSUPPORTED;
	}
	if (r != 0) {
		mlrt_log(MLRT_LOG_ERROR, "ofi: fi_getinfo: %s", fi_strerror(-r));
		return MLRT_ERR_IO;
	}
	st->cq_data = st->info->domain_attr->cq_data_size >= sizeof(uint64_t);
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
		mlrt_log(MLRT_LOG_ERROR, "ofi: rank %d published a malformed address at %s", p, key);
		rc = MLRT_ERR_PROTOCOL;
		goto out;
	}
	card->prov[sizeof(card->prov) - 1] = '\0';
	if (strcmp(card->prov, mine->prov) != 0 || card->addr_format != mine->addr_format) {
		mlrt_log(MLRT_LOG_ERROR, "ofi: rank %d uses provider %s but rank %d uses %s: set the "
		                         "same FI_PROVIDER for every rank",
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
		l->pidfd = open_pidfd(l->pid);
out:
	free(card);
	return rc;
}

int mlrti_ofi_open(mlrt_comm *c, const int *peers)
{
	char key[MLRTI_PREFIX_MAX + 32];
	int64_t deadline = mlrti_now_ms() + c->timeout_ms;
	ofi_state *st = calloc(1, sizeof(*st));
	void *card = NULL;
	size_t card_len = 0;
	int rc;

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
		for (int i = 0; i < WINDOW; i++)
			l->tx.slots[i].dir = &l->tx, l->rx.slots[i].dir = &l->rx;
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

/* A piece that is not the one expected: ranks disagree.  have_len: the
 * sender's message length is known (remote CQ data). */
static int bad_piece(const ofi_dir *d, const ofi_slot *s, uint64_t tag, int have_len,
                     uint64_t sent_len, const char *what)
{
	const mlrti_op *op = d->op;
	uint32_t seq = (uint32_t)(tag & TAG_SEQ_MASK);

	if (have_len)
		mlrt_log(MLRT_LOG_ERROR,
		         "comm: rank %d sent %llu bytes for collective #%u, but this rank expected %zu "
		         "bytes for collective #%u: the ranks disagree on the collective or its count",
		         d->link->peer, (unsigned long long)sent_len, seq, op->len, op->seq);
	else
		mlrt_log(MLRT_LOG_ERROR,
		         "comm: rank %d sent %s as piece %zu of a message for collective #%u, but this "
		         "rank expected %zu bytes there (of %zu) for collective #%u: the ranks "
		         "disagree on the collective or its count",
		         d->link->peer, what, s->piece, seq, s->len, op->len, op->seq);
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
	uint64_t tag = make_tag(op->seq, piece, d->msgno);
	ssize_t r;

	s->piece = piece;
	s->len = len;
	if (d->is_send) {
		const void *buf = len > 0 ? (const char *)op->sbuf + off : (const void *)s;

		r = st->cq_data ? fi_tsenddata(st->ep, buf, len, NULL, op->len, l->addr, tag, &s->ctx)
		                : fi_tsend(st->ep, buf, len, NULL, l->addr, tag, &s->ctx);
	} else {
		void *buf = op->rbuf != NULL ? (char *)op->rbuf + off
		          : d->staging != NULL ? d->staging + (piece % WINDOW) * PIECE_BYTES
		                               : (void *)s;

		/* Any collective number matches: a wrong one is reported. */
		r = fi_trecv(st->ep, buf, len, NULL, l->addr, tag, TAG_SEQ_MASK, &s->ctx);
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
	if (!s->busy || d->op == NULL)
		return MLRT_OK; /* left over from an abandoned message */
	s->busy = 0;
	if (!d->is_send) {
		int have_len = d->link->st->cq_data && (e->flags & FI_REMOTE_CQ_DATA);
		char what[64];

		snprintf(what, sizeof(what), "%zu bytes", e->len);
		if ((uint32_t)(e->tag & TAG_SEQ_MASK) != d->op->seq ||
		    (have_len && e->data != d->op->len) || e->len != s->len)
			return bad_piece(d, s, e->tag, have_len, e->data, what);
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
	if (err.err == FI_ECANCELED)
		return MLRT_OK;
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
		char what[64];
		/* The tag's match bits show that the provider filled it in. */
		uint64_t tag = (err.tag & ~TAG_SEQ_MASK) == (make_tag(0, s->piece, d->msgno))
		                   ? err.tag
		                   : d->op->seq;

		snprintf(what, sizeof(what), "more than %zu bytes", s->len);
		return bad_piece(d, s, tag, st->cq_data && (err.flags & FI_REMOTE_CQ_DATA), err.data,
		                 what);
	}
	mlrt_log(MLRT_LOG_ERROR, "comm: lost rank %d (ofi %s of piece %zu: %s%s)", d->link->peer,
	         d->is_send ? "send" : "receive", s->piece, fi_strerror(err.err), detail);
	return MLRT_ERR_PEER_LOST;
}

/* Read the CQ until it is empty (bounded), advancing every direction
 * whose pieces completed.  Reading also drives providers with manual
 * progress. */
static int drain_cq(ofi_state *st)
{
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
		for (ssize_t i = 0; i < n; i++)
			if ((rc = completed(&e[i])) != MLRT_OK)
				return rc;
		if (n < CQ_BATCH)
			return MLRT_OK;
	}
	return MLRT_OK;
}

/* Cancel every posted piece and forget the messages in flight: after a
 * failure nothing may land in the callers' buffers any more.  The
 * cancellations complete later (drained by close). */
static void cancel_all(ofi_state *st)
{
	for (int p = 0; p < st->size; p++) {
		ofi_link *l = &st->links[p];
		ofi_dir *dirs[2] = {&l->tx, &l->rx};

		if (l->st == NULL)
			continue;
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
 * provider says (a posted receive from it may never complete). */
static int check_alive(ofi_link *l, const ofi_dir *d, const mlrti_op *op)
{
	int64_t now;

	if (!l->local)
		return MLRT_OK;
	now = mlrti_now_ms();
	if (now - d->last_ms < LIVENESS_MS || now < l->next_check)
		return MLRT_OK;
	l->next_check = now + LIVENESS_MS;
	if (peer_alive(l))
		return MLRT_OK;
	mlrt_log(MLRT_LOG_ERROR, "comm: lost rank %d (its process %d on this host is gone; ofi %s)",
	         l->peer, (int)l->pid, op->is_send ? "send" : "receive");
	return MLRT_ERR_PEER_LOST;
}

static int ofi_progress(mlrt_comm *c, mlrti_op *op)
{
	ofi_state *st = c->ofi;
	ofi_link *l = op->link->state;
	ofi_dir *d = op->is_send ? &l->tx : &l->rx;
	int rc = MLRT_OK;

	if (atomic_load(&st->aborted)) {
		cancel_all(st);
		return MLRT_ERR_PEER_LOST;
	}
	if (op->hdr_done == 0)
		rc = start(d, op);
	if (rc == MLRT_OK)
		rc = drain_cq(st);
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

static int ofi_wait_fd(const mlrti_op *op, struct pollfd *pfd)
{
	const ofi_link *l = op->link->state;
	ofi_state *st = l->st;
	struct fid *fids[1] = {&st->cq->fid};

	/* fi_trywait succeeds only when the CQ is empty and the fd armed. */
	if (st->cq_fd < 0 || st->stalled > 0 || atomic_load(&st->aborted) ||
	    fi_trywait(st->fabric, fids, 1) != FI_SUCCESS)
		return 0;
	pfd->fd = st->cq_fd;
	pfd->events = POLLIN;
	pfd->revents = 0;
	return 1;
}

static void ofi_abort(mlrt_comm *c)
{
	ofi_state *st = c->ofi;

	/* Only a flag: the owner's next progress cancels what is posted.
	 * Peers learn from their own sends failing, from the launcher's
	 * abort key or from their timeout. */
	if (st != NULL)
		atomic_store(&st->aborted, 1);
}

static void close_fid(struct fid *f, const char *what)
{
	int r;

	if (f != NULL && (r = fi_close(f)) != 0)
		mlrt_log(MLRT_LOG_WARN, "ofi: fi_close (%s): %s", what, fi_strerror(-r));
}

static void ofi_close(mlrt_comm *c)
{
	ofi_state *st = c->ofi;

	if (st == NULL)
		return;
	if (st->ep != NULL && st->links != NULL) {
		int64_t until = mlrti_now_ms() + CLOSE_DRAIN_MS;
		int busy = 1;

		cancel_all(st);
		/* Let the cancellations complete before the endpoint goes. */
		while (busy && st->cq != NULL && mlrti_now_ms() < until) {
			struct fi_cq_tagged_entry e[CQ_BATCH];
			ssize_t n = fi_cq_read(st->cq, e, CQ_BATCH);

			if (n == -FI_EAVAIL) {
				struct fi_cq_err_entry err = {0};

				if (fi_cq_readerr(st->cq, &err, 0) > 0 && err.op_context != NULL)
					((ofi_slot *)err.op_context)->busy = 0;
			}
			for (ssize_t i = 0; i < n; i++)
				if (e[i].op_context != NULL)
					((ofi_slot *)e[i].op_context)->busy = 0;
			busy = 0;
			for (int p = 0; p < st->size; p++)
				for (int i = 0; i < WINDOW; i++)
					busy |= st->links[p].tx.slots[i].busy | st->links[p].rx.slots[i].busy;
		}
	}
	close_fid(st->ep ? &st->ep->fid : NULL, "endpoint");
	close_fid(st->av ? &st->av->fid : NULL, "address vector");
	close_fid(st->cq ? &st->cq->fid : NULL, "completion queue");
	close_fid(st->domain ? &st->domain->fid : NULL, "domain");
	close_fid(st->fabric ? &st->fabric->fid : NULL, "fabric");
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

/* Never reached: no link uses this table when there is no ofi state. */
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
	/* Never blocks: posts pieces, reads the CQ. */
	.progress = ofi_progress,
	/* The CQ's wait fd when the provider has one and it is armed, else 0. */
	.wait_fd = ofi_wait_fd,
	/* Raises a flag; the owner's next progress cancels what is posted. */
	.abort = ofi_abort,
	/* Cancels, drains briefly (bounded), closes every libfabric object. */
	.close = ofi_close,
};
