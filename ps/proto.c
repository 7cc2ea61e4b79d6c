/* Header frames of the parameter server's protocol (proto.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <msgpack.h>

#include "ps/proto.h"
#include "runtime/common.h"
#include "runtime/store_proto.h"

/* ---- encoding into a fixed buffer ---- */

typedef struct fixed_buf {
	char *p;
	size_t len, cap;
} fixed_buf;

static int fixed_write(void *data, const char *buf, size_t len)
{
	fixed_buf *f = data;

	if (len > f->cap - f->len)
		return -1;
	memcpy(f->p + f->len, buf, len);
	f->len += len;
	return 0;
}

static int pack_key(msgpack_packer *pk, const char *k)
{
	size_t n = strlen(k);

	return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, k, n);
}

static int pack_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
	return pack_key(pk, k) || msgpack_pack_uint64(pk, v);
}

static int pack_i64(msgpack_packer *pk, const char *k, int64_t v)
{
	return pack_key(pk, k) || msgpack_pack_int64(pk, v);
}

static int pack_f32(msgpack_packer *pk, const char *k, float v)
{
	return pack_key(pk, k) || msgpack_pack_float(pk, v);
}

static int pack_opts(msgpack_packer *pk, const mlrt_ps_opts *o)
{
	return pack_u64(pk, "opt", (uint64_t)o->optimizer) || pack_f32(pk, "lr", o->lr) ||
	       pack_f32(pk, "mom", o->momentum) || pack_f32(pk, "b1", o->beta1) ||
	       pack_f32(pk, "b2", o->beta2) || pack_f32(pk, "eps", o->eps) ||
	       pack_f32(pk, "l1", o->l1) || pack_f32(pk, "l2", o->l2) ||
	       pack_f32(pk, "fb", o->ftrl_beta) || pack_u64(pk, "cons", (uint64_t)o->consistency) ||
	       pack_i64(pk, "stale", o->staleness) || pack_u64(pk, "init", (uint64_t)o->init) ||
	       pack_f32(pk, "ia", o->init_a) || pack_f32(pk, "ib", o->init_b) ||
	       pack_u64(pk, "seed", o->seed);
}

#define OPTS_FIELDS 15

int mlrti_ps_hdr_encode(const mlrti_ps_hdr *h, int reply, void *buf, size_t cap, size_t *len)
{
	fixed_buf f = {.p = buf, .cap = cap};
	msgpack_packer pk;
	size_t msglen = strnlen(h->msg, sizeof(h->msg) - 1);
	int err;

	msgpack_packer_init(&pk, &f, fixed_write);
	if (reply) {
		err = msgpack_pack_map(&pk, 5 + (msglen > 0) + 2 * (h->has_backup != 0) +
		                               (h->arena_ok != 0)) ||
		      pack_u64(&pk, "v", MLRTI_PS_VERSION) ||
		      pack_u64(&pk, "op", (uint64_t)h->op) || pack_u64(&pk, "id", h->id) ||
		      pack_i64(&pk, "rg", h->range) || pack_i64(&pk, "st", h->status) ||
		      (h->has_backup && (pack_i64(&pk, "bk", h->backup) ||
		                         pack_u64(&pk, "be", h->backup_epoch))) ||
		      (h->arena_ok && pack_u64(&pk, "sm", 1));
		if (!err && msglen > 0)
			err = pack_key(&pk, "msg") || msgpack_pack_str(&pk, msglen) ||
			      msgpack_pack_str_body(&pk, h->msg, msglen);
	} else {
		err = msgpack_pack_map(&pk, 9 + 2 * (h->has_copy != 0) + (h->has_arena != 0) +
		                               (h->arena_key != 0) +
		                               (h->has_opts ? OPTS_FIELDS : 0)) ||
		      pack_u64(&pk, "v", MLRTI_PS_VERSION) || pack_u64(&pk, "op", (uint64_t)h->op) ||
		      pack_u64(&pk, "id", h->id) || pack_i64(&pk, "w", h->worker) ||
		      pack_i64(&pk, "rg", h->range) ||
		      pack_i64(&pk, "nw", h->nworkers) || pack_u64(&pk, "seq", h->seq) ||
		      pack_i64(&pk, "clk", h->clock) || pack_u64(&pk, "n", h->nkeys) ||
		      (h->has_copy && (pack_i64(&pk, "cp", h->copy_to) ||
		                       pack_u64(&pk, "ce", h->copy_epoch))) ||
		      (h->has_arena && pack_u64(&pk, "sa", h->arena)) ||
		      (h->arena_key != 0 && pack_u64(&pk, "sk", h->arena_key)) ||
		      (h->has_opts && pack_opts(&pk, &h->opts));
	}
	if (err)
		return MLRT_ERR_TOO_LARGE;
	*len = f.len;
	return MLRT_OK;
}

/* ---- decoding ---- */

static int key_is(const msgpack_object_str *k, const char *name)
{
	return k->size == strlen(name) && memcmp(k->ptr, name, k->size) == 0;
}

/* An integer in [lo, hi] from a msgpack object. */
static int get_int(const msgpack_object *o, int64_t lo, int64_t hi, int64_t *out)
{
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (o->via.u64 > (uint64_t)INT64_MAX || (int64_t)o->via.u64 > hi)
			return -1;
		*out = (int64_t)o->via.u64;
	} else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		if (o->via.i64 < lo)
			return -1;
		*out = o->via.i64;
	} else {
		return -1;
	}
	return *out < lo ? -1 : 0;
}

static int get_u64(const msgpack_object *o, uint64_t *out)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return -1;
	*out = o->via.u64;
	return 0;
}

static int get_f32(const msgpack_object *o, float *out)
{
	if (o->type != MSGPACK_OBJECT_FLOAT32 && o->type != MSGPACK_OBJECT_FLOAT64)
		return -1;
	*out = (float)o->via.f64;
	return isfinite(*out) ? 0 : -1;
}

/* One field of the map into h; -1 when malformed. */
static int decode_field(const msgpack_object_str *k, const msgpack_object *v, mlrti_ps_hdr *h,
                        int64_t *version)
{
	mlrt_ps_opts *o = &h->opts;
	int64_t i;

	if (key_is(k, "v"))
		return get_int(v, 0, INT32_MAX, version);
	if (key_is(k, "op")) {
		if (get_int(v, MLRTI_PS_HELLO, MLRTI_PS_OP_COUNT - 1, &i))
			return -1;
		h->op = (mlrti_ps_op)i;
		return 0;
	}
	if (key_is(k, "id"))
		return get_u64(v, &h->id);
	if (key_is(k, "w") || key_is(k, "nw") || key_is(k, "rg")) {
		if (get_int(v, 0, 1 << 24, &i))
			return -1;
		*(key_is(k, "w") ? &h->worker : key_is(k, "nw") ? &h->nworkers : &h->range) = (int32_t)i;
		return 0;
	}
	if (key_is(k, "ce") || key_is(k, "be")) {
		if (get_int(v, 0, UINT32_MAX, &i))
			return -1;
		*(key_is(k, "ce") ? &h->copy_epoch : &h->backup_epoch) = (uint32_t)i;
		return 0;
	}
	if (key_is(k, "cp") || key_is(k, "bk")) {
		if (get_int(v, key_is(k, "bk") ? -1 : 0, 1 << 24, &i))
			return -1;
		if (key_is(k, "cp"))
			h->has_copy = 1, h->copy_to = (int32_t)i;
		else
			h->has_backup = 1, h->backup = (int32_t)i;
		return 0;
	}
	if (key_is(k, "seq"))
		return get_u64(v, &h->seq);
	if (key_is(k, "sa")) {
		h->has_arena = 1;
		return get_u64(v, &h->arena);
	}
	if (key_is(k, "sk"))
		return get_u64(v, &h->arena_key);
	if (key_is(k, "sm")) {
		if (get_int(v, 0, 1, &i))
			return -1;
		h->arena_ok = (int)i;
		return 0;
	}
	if (key_is(k, "clk"))
		return get_int(v, 0, INT64_MAX, &h->clock);
	if (key_is(k, "n")) {
		if (get_u64(v, &h->nkeys) || h->nkeys > MLRTI_PS_MAX_KEYS)
			return -1;
		return 0;
	}
	if (key_is(k, "st")) {
		if (get_int(v, -1000, 0, &i))
			return -1;
		h->status = (int32_t)i;
		return 0;
	}
	if (key_is(k, "msg")) {
		if (v->type != MSGPACK_OBJECT_STR)
			return -1;
		snprintf(h->msg, sizeof(h->msg), "%.*s", (int)v->via.str.size, v->via.str.ptr);
		return 0;
	}
	/* The options (hello). */
	if (key_is(k, "opt") || key_is(k, "cons") || key_is(k, "init") || key_is(k, "stale")) {
		if (get_int(v, 0, 1 << 20, &i))
			return -1;
		h->has_opts = 1;
		if (key_is(k, "opt"))
			o->optimizer = (mlrt_ps_optimizer)i;
		else if (key_is(k, "cons"))
			o->consistency = (mlrt_ps_consistency)i;
		else if (key_is(k, "init"))
			o->init = (mlrt_ps_init_kind)i;
		else
			o->staleness = (int)i;
		return 0;
	}
	if (key_is(k, "seed"))
		return get_u64(v, &o->seed);
	static const struct {
		const char *name;
		size_t off;
	} floats[] = {
		{"lr", offsetof(mlrt_ps_opts, lr)},     {"mom", offsetof(mlrt_ps_opts, momentum)},
		{"b1", offsetof(mlrt_ps_opts, beta1)},  {"b2", offsetof(mlrt_ps_opts, beta2)},
		{"eps", offsetof(mlrt_ps_opts, eps)},   {"l1", offsetof(mlrt_ps_opts, l1)},
		{"l2", offsetof(mlrt_ps_opts, l2)},     {"fb", offsetof(mlrt_ps_opts, ftrl_beta)},
		{"ia", offsetof(mlrt_ps_opts, init_a)}, {"ib", offsetof(mlrt_ps_opts, init_b)},
	};
	for (size_t f = 0; f < MLRTI_ARRAY_LEN(floats); f++)
		if (key_is(k, floats[f].name))
			return get_f32(v, (float *)((char *)o + floats[f].off));
	return 0; /* unknown: ignored */
}

int mlrti_ps_hdr_decode(const void *buf, size_t len, mlrti_ps_hdr *h, char *why, size_t whylen)
{
	char scan_why[MLRTI_STORE_WHY_LEN] = "";
	msgpack_unpacked u;
	int64_t version = -1;
	int rc = MLRT_ERR_PROTOCOL;

	memset(h, 0, sizeof(*h));
	msgpack_unpacked_init(&u);
	if (mlrti_msgpack_unpack(buf, len, MLRTI_PS_MAX_HEADER, 256, &u, scan_why) != MLRT_OK ||
	    u.data.type != MSGPACK_OBJECT_MAP) {
		snprintf(why, whylen, "malformed header: %s", scan_why[0] ? scan_why : "not a map");
		goto out;
	}
	for (uint32_t i = 0; i < u.data.via.map.size; i++) {
		const msgpack_object_kv *kv = &u.data.via.map.ptr[i];

		if (kv->key.type != MSGPACK_OBJECT_STR) {
			snprintf(why, whylen, "a header key that is not a string");
			goto out;
		}
		if (decode_field(&kv->key.via.str, &kv->val, h, &version) != 0) {
			snprintf(why, whylen, "bad value for header field \"%.*s\"",
			         (int)kv->key.via.str.size, kv->key.via.str.ptr);
			goto out;
		}
	}
	if (version != MLRTI_PS_VERSION) {
		snprintf(why, whylen, "protocol version %lld (this side speaks %d)", (long long)version,
		         MLRTI_PS_VERSION);
		rc = MLRT_ERR_VERSION;
		goto out;
	}
	if (h->op == 0) {
		snprintf(why, whylen, "no op in the header");
		goto out;
	}
	rc = MLRT_OK;
out:
	msgpack_unpacked_destroy(&u);
	return rc;
}

int mlrti_ps_machine_key(char *out, size_t cap)
{
	char boot[64] = "";
	struct stat st;
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");

	if (f != NULL) {
		if (fgets(boot, sizeof(boot), f) == NULL)
			boot[0] = '\0';
		fclose(f);
	}
	boot[strcspn(boot, "\n")] = '\0';
	if (boot[0] == '\0' || stat("/proc/self/ns/net", &st) != 0)
		return MLRT_ERR_NOT_FOUND;
	snprintf(out, cap, "%s/%llu", boot, (unsigned long long)st.st_ino);
	return MLRT_OK;
}

int mlrti_ps_endpoint(const char *published, char *out, size_t cap)
{
	char tcp[MLRTI_PS_ENDPOINT_MAX], ipc[MLRTI_PS_ENDPOINT_MAX], machine[128], mine[128];
	const char *want = getenv("MLRT_PS_TRANSPORT");

	if (sscanf(published, "%255s %255s %127s", tcp, ipc, machine) != 3 ||
	    strncmp(tcp, "tcp://", 6) != 0 || strncmp(ipc, "ipc://", 6) != 0) {
		mlrt_log(MLRT_LOG_ERROR, "ps: a server published a malformed address \"%.80s\"",
		         published);
		return MLRT_ERR_PROTOCOL;
	}
	if ((want == NULL || strcmp(want, "tcp") != 0) &&
	    mlrti_ps_machine_key(mine, sizeof(mine)) == MLRT_OK && strcmp(mine, machine) == 0)
		snprintf(out, cap, "%s", ipc);
	else
		snprintf(out, cap, "%s", tcp);
	return MLRT_OK;
}
