/* Parameter server: the optimizer math a server applies to one key.  Not
 * installed.
 *
 * A key holds n float32 weights w[0..n) and, for optimizers with state,
 * mlrti_optim_state_floats(opt) * n floats of state laid out planar
 * (state[k * n + i] is slot k of element i), all zero when the key is
 * created, plus an update count t starting at 0.
 *
 * Every update is element-wise float32 arithmetic in a fixed order (written
 * out in optim.c), so two servers running the same binary on the same
 * pushes hold bit-identical weights.  The functions here never allocate,
 * never block and keep no state of their own: any thread may call them, as
 * long as no two threads update the same key at once. */
#ifndef MLRT_PS_OPTIM_H
#define MLRT_PS_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include <mlrt/ps.h>

/* Floats of optimizer state per weight for opt: 0 for SUM and SGD, 1 for
 * MOMENTUM (velocity v) and ADAGRAD (sum of squares h), 2 for ADAM (m then
 * v) and FTRL (z then n).  0 for an unknown opt. */
size_t mlrti_optim_state_floats(mlrt_ps_optimizer opt);

/* Apply one push to the weights w[0..n) of one key: g[0..n) is a gradient,
 * or for SUM the values to add.  state holds mlrti_optim_state_floats *
 * n floats as described above (NULL is fine when that is 0).  *t is the
 * key's update count: ADAM's bias correction uses step *t + 1; every
 * optimizer increments *t.  o must have passed mlrti_optim_check.  w,
 * state and g must not overlap. */
void mlrti_optim_apply(const mlrt_ps_opts *o, float *w, float *state, const float *g, size_t n,
                       int64_t *t);

/* Fill w[0..n) of key with its starting values as o->init says: ZEROS,
 * CONSTANT (every element init_a), UNIFORM in [init_a, init_b), NORMAL
 * (mean init_a, standard deviation init_b).  Element i is a function of
 * (o->seed, key, i) alone, so every server, every restart and every
 * length of the key agree on it (given the same libm, for NORMAL).
 *
 * FTRL ignores o->init: its weights are derived from its state, which
 * starts at z = n = 0, and that state means w = 0, so w is zeroed. */
void mlrti_optim_init(const mlrt_ps_opts *o, uint64_t key, float *w, size_t n);

/* Check the fields of o that its optimizer, consistency mode and init kind
 * use: known enum values; lr > 0 (all but SUM); 0 <= momentum < 1;
 * 0 <= beta1, beta2 < 1; eps > 0; l1, l2, ftrl_beta >= 0; for UNIFORM
 * finite init_a < init_b; for NORMAL finite init_a and init_b >= 0; for
 * BOUNDED staleness >= 0.  NaN fails every test.  MLRT_OK, or
 * MLRT_ERR_INVALID with a message naming the field written into why (when
 * why is not NULL and whylen > 0; always NUL-terminated). */
int mlrti_optim_check(const mlrt_ps_opts *o, char *why, size_t whylen);

#endif
