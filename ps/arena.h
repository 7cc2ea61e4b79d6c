/* Push values through shared memory between a worker and the servers on
 * its machine (internal; see docs/ps.md, "Values through shared memory").
 *
 * A worker owns an arena: an anonymous memory file (memfd) it maps and
 * fills like a ring, one region per push in flight, freed in the order
 * the pushes complete.  A push of large values to a server on the same
 * machine copies them into a region once and sends, instead of the values
 * frame, a 16-byte descriptor {offset, bytes}; the header names the arena
 * (the worker's pid and descriptor number).  The server maps the arena
 * read-only through /proc/PID/fd/FD, checks the random key at its start
 * against the one the worker's hello gave (a pid of another pid namespace
 * names another process), and reads the values where they are:
 * the primary adds them into its keys straight from the worker's memory,
 * the backup copies them once before it answers.  So a replicated push
 * costs one copy and two additions, where a socket costs four kernel
 * copies.  Whether a server could map the arena is settled in the hello
 * exchange: a server that cannot gets the values over the socket.
 *
 * Threads: an arena belongs to one worker handle or one server thread. */
#ifndef MLRT_PS_ARENA_H
#define MLRT_PS_ARENA_H

#include <stddef.h>
#include <stdint.h>

#define MLRTI_PS_ARENA_DESC 16 /* bytes of a descriptor frame */

/* ---- the worker's side ---- */

typedef struct mlrti_ps_arena {
	int fd;       /* -1: none */
	char *base;
	size_t size;
	uint64_t key; /* random, written at its start, told to servers in hello */
	uint64_t head, tail; /* bytes handed out / given back, from the start */
} mlrti_ps_arena;

/* Create an arena of size bytes.  MLRT_ERR_NOMEM / MLRT_ERR_IO (logged)
 * when the system refuses. */
int mlrti_ps_arena_open(mlrti_ps_arena *a, size_t size);
void mlrti_ps_arena_close(mlrti_ps_arena *a);
/* What servers map it by: pid << 32 | fd. */
uint64_t mlrti_ps_arena_id(const mlrti_ps_arena *a);
/* A contiguous region of n bytes (n <= size): its offset, and in *end
 * the counter to give back when the push is done; -1 when the regions in
 * use leave no room now. */
int64_t mlrti_ps_arena_take(mlrti_ps_arena *a, size_t n, uint64_t *end);
/* Regions are given back in the order they were taken: everything up to
 * end is free again. */
void mlrti_ps_arena_give(mlrti_ps_arena *a, uint64_t end);

/* ---- the server's side ---- */

typedef struct mlrti_ps_arena_map {
	uint64_t id;  /* 0: nothing mapped */
	const char *base;
	size_t size;
} mlrti_ps_arena_map;

/* Map arena id, whose start must hold key (again when it changed: a
 * worker started again).  MLRT_ERR_IO with why filled when it cannot. */
int mlrti_ps_arena_map_id(mlrti_ps_arena_map *m, uint64_t id, uint64_t key, char *why,
                          size_t whylen);
void mlrti_ps_arena_unmap(mlrti_ps_arena_map *m);
/* The bytes a descriptor frame names, or NULL (why filled) when it is
 * malformed or outside the arena. */
const void *mlrti_ps_arena_resolve(const mlrti_ps_arena_map *m, const void *desc, size_t desclen,
                                   size_t *len, char *why, size_t whylen);

#endif
