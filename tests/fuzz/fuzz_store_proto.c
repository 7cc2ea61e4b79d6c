/* libFuzzer target: the store's request and reply decoders on arbitrary
 * bytes.  Neither may crash, leak or allocate out of proportion. */
#include <stddef.h>
#include <stdint.h>

#include "runtime/store_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mlrti_store_req req;
	mlrti_store_rep rep;

	(void)mlrti_store_decode_request(data, size, &req);
	mlrti_store_req_fini(&req);
	(void)mlrti_store_decode_reply(data, size, &rep);
	mlrti_store_rep_fini(&rep);
	return 0;
}
