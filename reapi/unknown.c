/*
 * unknown.c - varint fields the generated types do not have, read from and
 * written to a protobuf-c message's unknown fields.
 *
 * Why: Debian 12's protos are the v2.2-era REAPI, so its generated C types
 * lack fields added later (API 2.3's digest_function in the requests,
 * ExecuteOperationMetadata and ExecutionCapabilities; the compressor fields).
 * protobuf-c keeps every field it does not know of a decoded message in
 * base.unknown_fields (the tag, the wire type and the bytes after the tag,
 * a length prefix included) and packs the unknown fields of a message it is
 * given after its known ones. So a field of a newer proto can be read from
 * a request and added to a reply without regenerating anything: this file
 * does it for varint scalars (enums, integers, bools) and repeated varints.
 *
 * Memory: what reapi_unknown_varint_put adds is malloc'd, as
 * protobuf_c_message_free_unpacked (with the default allocator) frees it; a
 * message built on the stack releases it with reapi_unknown_clear.
 */
#include "reapi.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Decodes the varint at p[0..len); its length, or 0 when malformed. */
static size_t varint_decode(const uint8_t *p, size_t len, uint64_t *out)
{
    uint64_t v = 0;

    for (size_t i = 0; i < len && i < 10; i++) {
        v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if ((p[i] & 0x80) == 0) {
            *out = v;
            return i + 1;
        }
    }
    return 0;
}

static size_t varint_encode(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Calls fn on every value of field in m, in wire order: a varint field, or
 * (when packed_ok: a repeated field) a packed run of them. -EINVAL when an
 * occurrence is neither or malformed. */
static int unknown_each(const ProtobufCMessage *m, uint32_t field, bool packed_ok,
                        void (*fn)(void *arg, uint64_t v), void *arg)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *u = &m->unknown_fields[i];
        uint64_t v, run;
        size_t n, at;

        if (u->tag != field)
            continue;
        if (u->wire_type == PROTOBUF_C_WIRE_TYPE_VARINT) {
            n = varint_decode(u->data, u->len, &v);
            if (n == 0 || n != u->len)
                return -EINVAL;
            fn(arg, v);
            continue;
        }
        if (u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED || !packed_ok)
            return -EINVAL;
        n = varint_decode(u->data, u->len, &run);
        if (n == 0 || run != u->len - n)
            return -EINVAL;
        for (at = n; at < u->len; at += n) {
            n = varint_decode(u->data + at, u->len - at, &v);
            if (n == 0)
                return -EINVAL;
            fn(arg, v);
        }
    }
    return 0;
}

struct last_value {
    uint64_t v;
    bool seen;
};

static void keep_last(void *arg, uint64_t v)
{
    struct last_value *l = arg;

    l->v = v;
    l->seen = true;
}

int reapi_unknown_varint_get(const ProtobufCMessage *m, uint32_t field, uint64_t *value)
{
    struct last_value l = {0, false};
    int rc = unknown_each(m, field, false, keep_last, &l);

    /* A scalar given twice: the last one wins, as protobuf parses it. */
    *value = l.v;
    if (rc != 0)
        return rc;
    return l.seen ? 1 : 0;
}

struct value_list {
    uint64_t *values;
    size_t max, n;
};

static void append_value(void *arg, uint64_t v)
{
    struct value_list *l = arg;

    if (l->n < l->max)
        l->values[l->n] = v;
    l->n++;
}

int reapi_unknown_varints_get(const ProtobufCMessage *m, uint32_t field, uint64_t *values,
                              size_t max, size_t *n)
{
    struct value_list l = {values, max, 0};
    int rc = unknown_each(m, field, true, append_value, &l);

    *n = l.n;
    return rc;
}

int reapi_unknown_varint_put(ProtobufCMessage *m, uint32_t field, uint64_t value)
{
    ProtobufCMessageUnknownField *grown, *u;
    uint8_t buf[10];
    size_t n = varint_encode(buf, value);

    grown = realloc(m->unknown_fields, (m->n_unknown_fields + 1) * sizeof(*grown));
    if (grown == NULL)
        return -ENOMEM;
    m->unknown_fields = grown;
    u = &grown[m->n_unknown_fields];
    u->data = malloc(n);
    if (u->data == NULL)
        return -ENOMEM;
    memcpy(u->data, buf, n);
    u->len = n;
    u->tag = field;
    u->wire_type = PROTOBUF_C_WIRE_TYPE_VARINT;
    m->n_unknown_fields++;
    return 0;
}

void reapi_unknown_clear(ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        free(m->unknown_fields[i].data);
    free(m->unknown_fields);
    m->unknown_fields = NULL;
    m->n_unknown_fields = 0;
}
