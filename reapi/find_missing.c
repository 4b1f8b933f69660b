/*
 * find_missing.c - FindMissingBlobsRequest decoded and its response encoded
 * by hand.
 *
 * A build asks about 100,000 digests at once. protobuf-c spends most of the
 * call on them: a malloc for every Digest and every hash string, then the
 * handler parses each hash again (87 ms of a 259 ms call). Here the request
 * is read in one pass over contiguous bytes, each hash parsed straight into a
 * struct cas_digest, and the response written into one buffer.
 *
 * FindMissingBlobsRequest: instance_name = 1 (string), blob_digests = 2
 * (repeated Digest), digest_function = 3 (enum, API 2.3). Digest: hash = 1
 * (string), size_bytes = 2 (int64). As protobuf reads them: the last
 * occurrence of a scalar wins, an enum may also come packed, unknown fields
 * are skipped by wire type, a known field with the wrong wire type is an
 * error. A digest that is not a SHA-256 digest does not fail the decode: its
 * index and fields are kept so the caller can say what was wrong with it.
 */
#include "reapi.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

enum { FM_VARINT = 0, FM_I64 = 1, FM_LEN = 2, FM_I32 = 5 };

struct fm_cursor {
    const uint8_t *p, *end;
};

static int fm_varint(struct fm_cursor *c, uint64_t *v)
{
    uint64_t x = 0;

    for (unsigned shift = 0; shift < 70; shift += 7) {
        uint8_t b;

        if (c->p >= c->end)
            return -EINVAL;
        b = *c->p++;
        if (shift == 63 && b > 1)
            return -EINVAL; /* more than 64 bits */
        x |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = x;
            return 0;
        }
    }
    return -EINVAL;
}

/* Skips a field of an unknown number by its wire type. */
static int fm_skip(struct fm_cursor *c, uint64_t wire)
{
    uint64_t v;

    switch (wire) {
    case FM_VARINT:
        return fm_varint(c, &v);
    case FM_I64:
    case FM_I32:
        v = wire == FM_I64 ? 8 : 4;
        break;
    case FM_LEN:
        if (fm_varint(c, &v) != 0)
            return -EINVAL;
        break;
    default:
        return -EINVAL; /* groups and reserved wire types */
    }
    if (v > (uint64_t)(c->end - c->p))
        return -EINVAL;
    c->p += v;
    return 0;
}

/* The length-delimited payload that follows; -EINVAL when it overruns. */
static int fm_len(struct fm_cursor *c, struct fm_cursor *inner)
{
    uint64_t len;

    if (fm_varint(c, &len) != 0 || len > (uint64_t)(c->end - c->p))
        return -EINVAL;
    inner->p = c->p;
    inner->end = c->p + len;
    c->p += len;
    return 0;
}

/* One Digest message: hash and size as protobuf would read them. */
static int fm_digest(struct fm_cursor *c, const uint8_t **hash, size_t *hash_len, int64_t *size)
{
    *hash = NULL;
    *hash_len = 0;
    *size = 0;
    while (c->p < c->end) {
        uint64_t key, v;
        struct fm_cursor s;

        if (fm_varint(c, &key) != 0 || (key >> 3) == 0)
            return -EINVAL;
        if ((key >> 3) == 1) {
            if ((key & 7) != FM_LEN || fm_len(c, &s) != 0)
                return -EINVAL;
            *hash = s.p;
            *hash_len = (size_t)(s.end - s.p);
        } else if ((key >> 3) == 2) {
            if ((key & 7) != FM_VARINT || fm_varint(c, &v) != 0)
                return -EINVAL;
            *size = (int64_t)v;
        } else if (fm_skip(c, key & 7) != 0) {
            return -EINVAL;
        }
    }
    return 0;
}

static int fm_add_digest(struct fm_cursor *c, struct find_missing_request *r)
{
    const uint8_t *hash;
    size_t hash_len;
    int64_t size;

    if (fm_digest(c, &hash, &hash_len, &size) != 0)
        return -EINVAL;
    if (array_reserve((void **)&r->digests, &r->cap_digests, r->n_digests, sizeof(*r->digests)) !=
        0)
        return -ENOMEM;
    if (r->has_bad)
        goto out; /* only the first bad one is reported */
    if (cas_digest_parse_n((const char *)hash, hash_len, size, &r->digests[r->n_digests]) != 0 ||
        memchr(hash, '\0', hash_len) != NULL) {
        /* Kept as protobuf-c would give it: a C string (cut at a NUL). */
        r->bad_hash = malloc(hash_len + 1);
        if (r->bad_hash == NULL)
            return -ENOMEM;
        if (hash_len > 0)
            memcpy(r->bad_hash, hash, hash_len);
        r->bad_hash[hash_len] = '\0';
        r->has_bad = true;
        r->bad_index = r->n_digests;
        r->bad_size = size;
    }
out:
    r->n_digests++;
    return 0;
}

/* digest_function: a varint, or packed varints of which the last counts. */
static int fm_digest_function(struct fm_cursor *c, uint64_t wire, struct find_missing_request *r)
{
    struct fm_cursor s;
    uint64_t v;

    if (wire == FM_VARINT) {
        if (fm_varint(c, &v) != 0)
            return -EINVAL;
        r->digest_function = v;
        r->has_digest_function = true;
        return 0;
    }
    if (wire == FM_LEN) {
        if (fm_len(c, &s) != 0)
            return -EINVAL;
        while (s.p < s.end) {
            if (fm_varint(&s, &v) != 0) {
                r->digest_function_malformed = true;
                return 0;
            }
            r->digest_function = v;
            r->has_digest_function = true;
        }
        return 0;
    }
    /* Unknown to Debian's protos, so protobuf-c keeps it; reading it as an
     * enum then fails. */
    r->digest_function_malformed = true;
    return fm_skip(c, wire);
}

static int fm_instance(struct fm_cursor *c, struct find_missing_request *r)
{
    struct fm_cursor s;
    size_t len;
    char *name;

    if (fm_len(c, &s) != 0)
        return -EINVAL;
    len = (size_t)(s.end - s.p);
    name = malloc(len + 1);
    if (name == NULL)
        return -ENOMEM;
    memcpy(name, s.p, len);
    name[len] = '\0';
    free(r->instance_name);
    r->instance_name = name;
    return 0;
}

int find_missing_request_decode(const uint8_t *buf, size_t len, struct find_missing_request *r)
{
    struct fm_cursor c = {.p = buf, .end = buf + len}, s;
    int rc = 0;

    memset(r, 0, sizeof(*r));
    while (rc == 0 && c.p < c.end) {
        uint64_t key, field, wire;

        if (fm_varint(&c, &key) != 0 || (key >> 3) == 0) {
            rc = -EINVAL;
            break;
        }
        field = key >> 3;
        wire = key & 7;
        if (field == 1)
            rc = wire == FM_LEN ? fm_instance(&c, r) : -EINVAL;
        else if (field == 2)
            rc = wire == FM_LEN && fm_len(&c, &s) == 0 ? fm_add_digest(&s, r) : -EINVAL;
        else if (field == 3)
            rc = fm_digest_function(&c, wire, r);
        else
            rc = fm_skip(&c, wire);
    }
    if (rc == 0 && r->instance_name == NULL) {
        r->instance_name = strdup("");
        if (r->instance_name == NULL)
            rc = -ENOMEM;
    }
    return rc;
}

void find_missing_request_free(struct find_missing_request *r)
{
    free(r->instance_name);
    free(r->digests);
    free(r->bad_hash);
    memset(r, 0, sizeof(*r));
}

static size_t fm_varint_len(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *fm_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

int find_missing_response_encode(const struct cas_digest *digests, const bool *missing, size_t n,
                                 uint8_t **out, size_t *out_len)
{
    size_t total = 0;
    uint8_t *buf, *p;

    *out = NULL;
    *out_len = 0;
    /* Each entry: tag, length, then the Digest (hash, and size when not 0,
     * as proto3 leaves zero values out); under 128 bytes, so a one-byte length. */
    for (size_t i = 0; i < n; i++) {
        if (missing[i])
            total += 4 + CAS_HASH_HEX +
                     (digests[i].size ? 1 + fm_varint_len((uint64_t)digests[i].size) : 0);
    }
    buf = malloc(total ? total : 1);
    if (buf == NULL)
        return -ENOMEM;
    p = buf;
    for (size_t i = 0; i < n; i++) {
        char hex[CAS_HASH_HEX + 1];
        uint64_t size = (uint64_t)digests[i].size;

        if (!missing[i])
            continue;
        *p++ = 0x12; /* missing_blob_digests = 2, length-delimited */
        *p++ = (uint8_t)(2 + CAS_HASH_HEX + (size ? 1 + fm_varint_len(size) : 0));
        *p++ = 0x0a; /* hash = 1 */
        *p++ = CAS_HASH_HEX;
        cas_digest_hex(&digests[i], hex);
        memcpy(p, hex, CAS_HASH_HEX);
        p += CAS_HASH_HEX;
        if (size) {
            *p++ = 0x10; /* size_bytes = 2, varint */
            p = fm_put_varint(p, size);
        }
    }
    *out = buf;
    *out_len = (size_t)(p - buf);
    return 0;
}
