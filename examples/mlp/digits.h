/* The digits data set: 8x8 images of handwritten digits, 10 classes.
 *
 * The file is a gzip-compressed CSV without a header: per row, 64 integer
 * pixels in 0..16 then the label 0..9 (data/README.md). */
#ifndef MLP_DIGITS_H
#define MLP_DIGITS_H

#include <stdint.h>

#define DIGITS_FEATURES 64
#define DIGITS_CLASSES 10

typedef struct digits {
	int n;      /* rows */
	float *x;   /* n * DIGITS_FEATURES pixels, scaled to [0, 1] */
	uint8_t *y; /* n labels */
} digits;

/* Read the whole file at path into d.  On error d is left empty (safe to
 * digits_free), a message on stderr names the file and, for malformed
 * input, the line and field.  Returns MLRT_OK, MLRT_ERR_IO (cannot open or
 * decompress), MLRT_ERR_INVALID (malformed) or MLRT_ERR_NOMEM. */
int digits_load(const char *path, digits *d);

/* Free what digits_load allocated; d becomes empty. */
void digits_free(digits *d);

#endif
