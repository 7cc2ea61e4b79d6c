/* Push values through shared memory (arena.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "ps/arena.h"
#include "runtime/common.h"

#define ARENA_ALIGN 64 /* regions start on cache lines (and float boundaries) */
#define ARENA_MAGIC 0x316176737074726dull /* "mlrtpsva1": the first word */
#define ARENA_HEAD ARENA_ALIGN /* magic and key; the regions follow */

int mlrti_ps_arena_open(mlrti_ps_arena *a, size_t size)
{
	memset(a, 0, sizeof(*a));
	a->fd = memfd_create("mlrt-ps-values", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (a->fd < 0 || ftruncate(a->fd, (off_t)size) != 0 ||
	    /* Sealed at its size: a server reading it can never fault on a
	     * page cut off under it. */
	    fcntl(a->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
		mlrt_log(MLRT_LOG_WARN, "ps: no shared memory for push values (%zu bytes): %s; "
		         "they go over the sockets", size, strerror(errno));
		mlrti_ps_arena_close(a);
		return MLRT_ERR_IO;
	}
	a->base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
	if (a->base == MAP_FAILED) {
		a->base = NULL;
		mlrt_log(MLRT_LOG_WARN, "ps: cannot map %zu bytes of shared memory for push values: "
		         "%s; they go over the sockets", size, strerror(errno));
		mlrti_ps_arena_close(a);
		return MLRT_ERR_NOMEM;
	}
	a->size = size;
	if (getrandom(&a->key, sizeof(a->key), 0) != (ssize_t)sizeof(a->key))
		a->key = (uint64_t)mlrti_wall_ms() << 20 ^ (uint64_t)getpid();
	memcpy(a->base, &(uint64_t[2]){ARENA_MAGIC, a->key}, 16);
	return MLRT_OK;
}

void mlrti_ps_arena_close(mlrti_ps_arena *a)
{
	if (a->base != NULL)
		munmap(a->base, a->size);
	if (a->fd >= 0)
		close(a->fd);
	memset(a, 0, sizeof(*a));
	a->fd = -1;
}

uint64_t mlrti_ps_arena_id(const mlrti_ps_arena *a)
{
	return (uint64_t)getpid() << 32 | (uint32_t)a->fd;
}

int64_t mlrti_ps_arena_take(mlrti_ps_arena *a, size_t n, uint64_t *end)
{
	size_t ring = a->size - ARENA_HEAD;
	uint64_t start = a->head;

	n = (n + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
	if (a->base == NULL || n > ring)
		return -1;
	if (start % ring + n > ring) /* does not fit before the end: wrap */
		start += ring - start % ring;
	if (start + n - a->tail > ring)
		return -1;
	a->head = start + n;
	*end = a->head;
	return (int64_t)(ARENA_HEAD + start % ring);
}

void mlrti_ps_arena_give(mlrti_ps_arena *a, uint64_t end)
{
	if (end > a->tail)
		a->tail = end;
	if (a->tail == a->head) /* empty: start again at the beginning */
		a->head = a->tail = 0;
}

/* ---- the server's side ---- */

void mlrti_ps_arena_unmap(mlrti_ps_arena_map *m)
{
	if (m->base != NULL)
		munmap((void *)m->base, m->size);
	memset(m, 0, sizeof(*m));
}

int mlrti_ps_arena_map_id(mlrti_ps_arena_map *m, uint64_t id, uint64_t key, char *why,
                          size_t whylen)
{
	char path[64];
	struct stat st;
	void *p = MAP_FAILED;
	uint64_t head[2] = {0, 0};
	int fd;

	if (m->id == id && m->base != NULL)
		return MLRT_OK;
	mlrti_ps_arena_unmap(m);
	snprintf(path, sizeof(path), "/proc/%" PRIu64 "/fd/%" PRIu64, id >> 32, id & 0xffffffffu);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > ARENA_HEAD)
		p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (p != MAP_FAILED)
		memcpy(head, p, sizeof(head));
	if (p != MAP_FAILED && (head[0] != ARENA_MAGIC || head[1] != key)) {
		munmap(p, (size_t)st.st_size);
		p = MAP_FAILED;
		errno = ESRCH; /* not the worker's memory: another pid namespace */
	}
	if (p == MAP_FAILED) {
		snprintf(why, whylen, "cannot map the worker's shared values at %s: %s", path,
		         strerror(errno));
		if (fd >= 0)
			close(fd);
		return MLRT_ERR_IO;
	}
	close(fd);
	m->id = id;
	m->base = p;
	m->size = (size_t)st.st_size;
	return MLRT_OK;
}

const void *mlrti_ps_arena_resolve(const mlrti_ps_arena_map *m, const void *desc, size_t desclen,
                                   size_t *len, char *why, size_t whylen)
{
	uint64_t d[2];

	if (desclen != sizeof(d) || m->base == NULL) {
		snprintf(why, whylen, "%s", m->base == NULL ? "values by reference before hello"
		                                            : "malformed values descriptor");
		return NULL;
	}
	memcpy(d, desc, sizeof(d));
	if (d[0] % ARENA_ALIGN != 0 || d[0] < ARENA_HEAD || d[0] > m->size || d[1] > m->size - d[0]) {
		snprintf(why, whylen, "values descriptor [%" PRIu64 ", +%" PRIu64 ") outside the "
		         "worker's %zu-byte arena", d[0], d[1], m->size);
		return NULL;
	}
	*len = (size_t)d[1];
	return m->base + d[0];
}
