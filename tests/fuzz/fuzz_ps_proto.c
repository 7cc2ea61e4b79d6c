/* libFuzzer target: the parameter server's header decoder on arbitrary
 * bytes.  It may not crash, leak or allocate out of proportion; what it
 * accepts must encode again. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "ps/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char why[MLRTI_PS_MSG_MAX], buf[MLRTI_PS_MAX_HEADER];
	mlrti_ps_hdr h;
	size_t len;

	if (mlrti_ps_hdr_decode(data, size, &h, why, sizeof(why)) == MLRT_OK &&
	    mlrti_ps_hdr_encode(&h, 0, buf, sizeof(buf), &len) != MLRT_OK)
		abort();
	return 0;
}
