/* Loading the digits CSV with zlib's gzip reader. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include <mlrt/status.h>

#include "digits.h"

/* 65 fields of at most 2 digits and their commas: 195 bytes.  Anything
 * much longer is not a row of this file. */
#define LINE_MAX_BYTES 1024
#define PIXEL_MAX 16

/* Parse one row into x (64 scaled pixels) and *y.  On error, print what is
 * wrong with which field and return MLRT_ERR_INVALID. */
static int parse_row(const char *path, long lineno, char *line, float *x, uint8_t *y)
{
	char *p = line, *end;
	long v;

	for (int f = 0; f <= DIGITS_FEATURES; f++) {
		long hi = f < DIGITS_FEATURES ? PIXEL_MAX : DIGITS_CLASSES - 1;

		errno = 0;
		v = strtol(p, &end, 10);
		if (end == p || errno != 0 || v < 0 || v > hi) {
			fprintf(stderr, "mlp: %s:%ld: field %d ('%.16s') is not an integer in "
			                "[0, %ld]; want 64 pixels 0..16 then a label 0..9\n",
			        path, lineno, f + 1, p, hi);
			return MLRT_ERR_INVALID;
		}
		if (f < DIGITS_FEATURES) {
			x[f] = (float)v / PIXEL_MAX;
			if (*end != ',') {
				fprintf(stderr, "mlp: %s:%ld: the row ends after %d fields; want %d\n",
				        path, lineno, f + 1, DIGITS_FEATURES + 1);
				return MLRT_ERR_INVALID;
			}
			p = end + 1;
		} else {
			*y = (uint8_t)v;
			if (*end != '\0') {
				fprintf(stderr, "mlp: %s:%ld: junk after field %d ('%.16s'); want %d "
				                "fields\n",
				        path, lineno, f + 1, end, DIGITS_FEATURES + 1);
				return MLRT_ERR_INVALID;
			}
		}
	}
	return MLRT_OK;
}

/* Make room for at least n + 1 rows. */
static int grow(digits *d, int *cap)
{
	float *x;
	uint8_t *y;
	int ncap;

	if (d->n < *cap)
		return MLRT_OK;
	ncap = *cap > 0 ? *cap * 2 : 2048;
	x = realloc(d->x, (size_t)ncap * DIGITS_FEATURES * sizeof(*x));
	if (x == NULL)
		return MLRT_ERR_NOMEM;
	d->x = x;
	y = realloc(d->y, (size_t)ncap);
	if (y == NULL)
		return MLRT_ERR_NOMEM;
	d->y = y;
	*cap = ncap;
	return MLRT_OK;
}

int digits_load(const char *path, digits *d)
{
	char line[LINE_MAX_BYTES];
	const char *zmsg;
	long lineno = 0;
	int cap = 0, zerr, rc = MLRT_OK;
	gzFile gz;

	memset(d, 0, sizeof(*d));
	gz = gzopen(path, "rb");
	if (gz == NULL) {
		fprintf(stderr, "mlp: cannot open %s: %s (pass the digits file with --data)\n", path,
		        errno != 0 ? strerror(errno) : "out of memory");
		return MLRT_ERR_IO;
	}
	while (gzgets(gz, line, sizeof(line)) != NULL) {
		size_t len = strlen(line);

		lineno++;
		if (len > 0 && line[len - 1] == '\n') {
			line[--len] = '\0';
		} else if (!gzeof(gz)) {
			fprintf(stderr, "mlp: %s:%ld: line longer than %d bytes; is this the digits "
			                "CSV?\n",
			        path, lineno, LINE_MAX_BYTES - 2);
			rc = MLRT_ERR_INVALID;
			goto fail;
		} else {
			/* A last line without its newline: say so if it is cut
			 * short by a truncated file rather than misparse it. */
			zmsg = gzerror(gz, &zerr);
			if (zerr != Z_OK)
				break;
		}
		if (len > 0 && line[len - 1] == '\r')
			line[--len] = '\0';
		if (grow(d, &cap) != MLRT_OK) {
			fprintf(stderr, "mlp: out of memory reading %s at line %ld\n", path, lineno);
			rc = MLRT_ERR_NOMEM;
			goto fail;
		}
		rc = parse_row(path, lineno, line, d->x + (size_t)d->n * DIGITS_FEATURES,
		               &d->y[d->n]);
		if (rc != MLRT_OK)
			goto fail;
		d->n++;
	}
	/* gzgets returns NULL at the end and on errors alike; a truncated
	 * file shows as Z_BUF_ERROR ("unexpected end of file"). */
	zmsg = gzerror(gz, &zerr);
	if (zerr != Z_OK) {
		size_t plen = strlen(path);

		/* zlib's message starts with the path: say it once. */
		if (strncmp(zmsg, path, plen) == 0 && strncmp(zmsg + plen, ": ", 2) == 0)
			zmsg += plen + 2;
		fprintf(stderr, "mlp: cannot read %s at line %ld: %s (is the file damaged or "
		                "truncated?)\n",
		        path, lineno, zerr == Z_ERRNO ? strerror(errno) : zmsg);
		rc = MLRT_ERR_IO;
		goto fail;
	}
	if (d->n == 0) {
		fprintf(stderr, "mlp: %s holds no rows\n", path);
		rc = MLRT_ERR_INVALID;
		goto fail;
	}
	gzclose(gz);
	return MLRT_OK;
fail:
	gzclose(gz);
	digits_free(d);
	return rc;
}

void digits_free(digits *d)
{
	free(d->x);
	free(d->y);
	memset(d, 0, sizeof(*d));
}
