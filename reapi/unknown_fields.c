/*
 * unknown_fields.c - REAPI fields that Debian's generated types lack.
 *
 * Debian 12 ships the REAPI protos at about v2.2, and the project generates
 * its C types from them (no third-party .proto text is copied into the
 * tree). Later additions, such as the compressors (API 2.1) and
 * digest_function in requests (API 2.3), are additive fields with numbers
 * that are wire facts (docs: ../shared/reapi-v23.md). protobuf-c keeps the
 * fields it does not know in base.unknown_fields when it decodes, and packs
 * the unknown fields a message carries when it encodes, so the newer
 * fields are read and written here by number, through the message's base.
 * Only varints (enums, integers, bools) are needed so far.
 */
#include "reapi.h"

#include <errno.h>
#include <string.h>

/* Reads one varint from p[0..len); the bytes used, or 0 when malformed. */
static size_t unknown_varint_read(const uint8_t *p, size_t len, uint64_t *v)
{
    uint64_t x = 0;

    for (size_t i = 0; i < len && i < 10; i++) {
        x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if ((p[i] & 0x80) == 0) {
            *v = x;
            return i + 1;
        }
    }
    return 0;
}

static size_t unknown_varint_write(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    do {
        uint8_t b = v & 0x7f;

        v >>= 7;
        p[n++] = b | (v ? 0x80 : 0);
    } while (v);
    return n;
}

/* Calls each value of field number in order: unpacked varints, and packed
 * runs (a length-delimited field whose bytes are varints; protobuf-c keeps
 * its length prefix in data). Stops after max values. The count, or
 * -EINVAL. */
static int unknown_varints_walk(const ProtobufCMessage *m, uint32_t number, uint64_t *values,
                                size_t max, uint64_t *last)
{
    size_t count = 0;

    for (unsigned i = 0; m != NULL && i < m->n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *f = &m->unknown_fields[i];
        uint64_t v, run;
        size_t used, at;

        if (f->tag != number)
            continue;
        if (f->wire_type == PROTOBUF_C_WIRE_TYPE_VARINT) {
            used = unknown_varint_read(f->data, f->len, &v);
            if (used == 0 || used != f->len)
                return -EINVAL;
            if (count < max && values != NULL)
                values[count] = v;
            count++;
            *last = v;
            continue;
        }
        if (f->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
            return -EINVAL;
        used = unknown_varint_read(f->data, f->len, &run);
        if (used == 0 || run != f->len - used)
            return -EINVAL;
        for (at = used; at < f->len; at += used) {
            used = unknown_varint_read(f->data + at, f->len - at, &v);
            if (used == 0)
                return -EINVAL;
            if (count < max && values != NULL)
                values[count] = v;
            count++;
            *last = v;
        }
    }
    return (int)(count < max ? count : max);
}

int reapi_unknown_varint(const ProtobufCMessage *m, uint32_t number, uint64_t *value)
{
    uint64_t last = 0;
    int n = unknown_varints_walk(m, number, NULL, (size_t)-1 >> 1, &last);

    if (n <= 0)
        return n;
    *value = last; /* a repeated scalar read as a single one: the last wins */
    return 1;
}

int reapi_unknown_varints(const ProtobufCMessage *m, uint32_t number, uint64_t *values, size_t max)
{
    uint64_t last;

    return unknown_varints_walk(m, number, values, max, &last);
}

void reapi_unknown_out_init(struct reapi_unknown_out *u)
{
    memset(u, 0, sizeof(*u));
}

/* A new field of u with room for len bytes; NULL when u is full. */
static ProtobufCMessageUnknownField *unknown_out_add(struct reapi_unknown_out *u, uint32_t number,
                                                     ProtobufCWireType wire_type, size_t len)
{
    ProtobufCMessageUnknownField *f;

    if (u->n_fields == REAPI_UNKNOWN_MAX_FIELDS || len > REAPI_UNKNOWN_MAX_BYTES - u->n_bytes)
        return NULL;
    f = &u->fields[u->n_fields++];
    f->tag = number;
    f->wire_type = wire_type;
    f->data = u->bytes + u->n_bytes;
    f->len = 0;
    return f;
}

int reapi_unknown_out_varint(struct reapi_unknown_out *u, uint32_t number, uint64_t value)
{
    ProtobufCMessageUnknownField *f = unknown_out_add(u, number, PROTOBUF_C_WIRE_TYPE_VARINT, 10);

    if (f == NULL)
        return -ENOSPC;
    f->len = unknown_varint_write(f->data, value);
    u->n_bytes += f->len;
    return 0;
}

int reapi_unknown_out_packed(struct reapi_unknown_out *u, uint32_t number, const uint64_t *values,
                             size_t n)
{
    uint8_t run[REAPI_UNKNOWN_MAX_BYTES + 10];
    ProtobufCMessageUnknownField *f;
    size_t run_len = 0;

    if (n == 0)
        return 0; /* an empty repeated field is not sent at all */
    for (size_t i = 0; i < n; i++) {
        if (run_len > REAPI_UNKNOWN_MAX_BYTES)
            return -ENOSPC;
        run_len += unknown_varint_write(run + run_len, values[i]);
    }
    f = unknown_out_add(u, number, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED, run_len + 10);
    if (f == NULL)
        return -ENOSPC;
    /* The data is what follows the tag: the length, then the values. */
    f->len = unknown_varint_write(f->data, run_len);
    memcpy(f->data + f->len, run, run_len);
    f->len += run_len;
    u->n_bytes += f->len;
    return 0;
}

void reapi_unknown_out_attach(struct reapi_unknown_out *u, ProtobufCMessage *m)
{
    m->n_unknown_fields = (unsigned)u->n_fields;
    m->unknown_fields = u->n_fields ? u->fields : NULL;
}
