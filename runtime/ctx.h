/* Internal accessors of mlrt_ctx for the layers above runtime/ (ckpt, ps).
 * Not installed. */
#ifndef MLRT_RUNTIME_CTX_H
#define MLRT_RUNTIME_CTX_H

#include <mlrt/runtime.h>

/* The store's address ("tcp://HOST:PORT"), or NULL in a world of one with
 * no store.  Layers that need a client of their own (a background thread
 * must not share the ctx's) open one with it. */
const char *mlrti_ctx_store_addr(const mlrt_ctx *ctx);

/* The generation's key prefix in the store, "<job>/g<gen>/". */
const char *mlrti_ctx_gen_prefix(const mlrt_ctx *ctx);

/* The job's default bound on waits (MLRT_TIMEOUT_MS), in milliseconds. */
int mlrti_ctx_timeout_ms(const mlrt_ctx *ctx);

/* Parameter-server jobs: whether this process is a server, and how many
 * servers and workers the job has (0 servers outside such jobs). */
int mlrti_ctx_is_server(const mlrt_ctx *ctx);
int mlrti_ctx_is_evaluator(const mlrt_ctx *ctx);
int mlrti_ctx_num_servers(const mlrt_ctx *ctx);
int mlrti_ctx_num_workers(const mlrt_ctx *ctx);
/* Copies of each parameter-server key range on another server (0 or 1). */
int mlrti_ctx_ps_replicas(const mlrt_ctx *ctx);

#endif
