/* Inputs of the collective checkers (coll_data.c).  Not installed. */
#ifndef MLRT_TESTS_COLL_DATA_H
#define MLRT_TESTS_COLL_DATA_H

#include <stddef.h>
#include <stdint.h>

#include <mlrt/mlrt.h>

/* Input element i of rank r for op: small integers (PROD: +-1, +-2), so
 * that every dtype holds every partial result exactly; u8: unsigned. */
int64_t coll_input(int r, size_t i, mlrt_op op, int u8);
/* buf[i] = v in dtype t. */
void coll_store(void *buf, size_t i, mlrt_dtype t, double v);
/* count elements of rank r's input for op, from element first. */
void coll_fill(void *buf, size_t count, mlrt_dtype t, mlrt_op op, int r, size_t first);
/* FNV-1a of n bytes. */
uint64_t coll_fnv(const void *p, size_t n);

#endif
