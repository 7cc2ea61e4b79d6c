/* Small helpers the example programs share: option parsing with messages
 * that name the program and the option, a clock, and the parameter
 * server's side of main.  Not part of libmlrt. */
#ifndef MLRT_EXAMPLES_EXAMPLE_H
#define MLRT_EXAMPLES_EXAMPLE_H

#include <stdint.h>

#include <mlrt/mlrt.h>

/* An integer in [lo, hi] from --opt's value s; -1 (message to stderr,
 * "PROG: --opt: ...") when it is not one. */
int arg_int(const char *prog, const char *opt, const char *s, int64_t lo, int64_t hi,
            int64_t *out);

/* A finite number in [lo, hi), or in (lo, hi) when !lo_ok. */
int arg_real(const char *prog, const char *opt, const char *s, double lo, double hi,
             int lo_ok, double *out);

/* Monotonic seconds. */
double example_now_s(void);

/* A parameter server's whole life after mlrt_init: serve until every
 * worker has closed, then finalize.  Returns the exit status. */
int example_serve(mlrt_ctx *ctx, const char *prog);

#endif
