/*
 * find_missing.c - FindMissingBlobsRequest decoded and its response encoded
 * by hand, in place and in bounded memory.
 *
 * A build asks about 100,000 digests at once. protobuf-c spends most of the
 * call on them: a malloc for every Digest and every hash string, then the
 * handler parses each hash again (87 ms of a 259 ms call). Copying the
 * request into one buffer and the digests into one array is no good either:
 * 11 MB of fresh memory cost 25-55 ms of page faults per call here (5 ms
 * when malloc happened to reuse warm memory). So the request is read where
 * grpc received it, as spans of its slices, in two passes: the scan checks
 * the top-level structure and reads the instance name, digest_function and
 * the count (so the caller can authorize and check limits before it touches
 * the store); the second pass checks and parses each Digest and hands them
 * over in chunks of FIND_MISSING_CHUNK, which the caller looks up and
 * appends to the response as it goes.
 *
 * FindMissingBlobsRequest: instance_name = 1 (string), blob_digests = 2
 * (repeated Digest), digest_function = 3 (enum, API 2.3). Digest: hash = 1
 * (string), size_bytes = 2 (int64). As protobuf reads them: the last
 * occurrence of a scalar wins, an enum may also come packed, unknown fields
 * are skipped by wire type, a known field with the wrong wire type is an
 * error. A digest that is not a SHA-256 digest does not fail the decode: the
 * first one's index and fields are kept so the caller can say what was wrong.
 */
#include "reapi.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { FM_VARINT = 0, FM_I64 = 1, FM_LEN = 2, FM_I32 = 5 };

/* Digest messages up to this size are parsed from one contiguous view (a
 * copy when one straddles two slices); larger ones (unknown fields in them)
 * are copied into a buffer of their own. */
#define FM_STITCH 4096

/* --- contiguous bytes (a Digest, a packed run) --- */

struct fm_bytes {
    const uint8_t *p, *end;
};

/* Up to ten bytes; bits past the 64th are dropped, as protobuf-c does. */
static int fm_varint(struct fm_bytes *c, uint64_t *v)
{
    uint64_t x = 0;

    for (unsigned shift = 0; shift < 70; shift += 7) {
        uint8_t b;

        if (c->p >= c->end)
            return -EINVAL;
        b = *c->p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = x;
            return 0;
        }
    }
    return -EINVAL;
}

/* The length of a field of wire type `wire` to skip after its key (for a
 * varint, the varint is consumed and *len is 0). */
static int fm_skip_len(struct fm_bytes *c, uint64_t wire, uint64_t *len)
{
    uint64_t ignored;

    *len = 0;
    switch (wire) {
    case FM_VARINT:
        return fm_varint(c, &ignored);
    case FM_I64:
        *len = 8;
        return 0;
    case FM_I32:
        *len = 4;
        return 0;
    case FM_LEN:
        return fm_varint(c, len);
    default:
        return -EINVAL; /* groups and reserved wire types */
    }
}

/* One Digest message: hash and size as protobuf would read them. */
static int fm_digest(struct fm_bytes *c, const uint8_t **hash, size_t *hash_len, int64_t *size)
{
    *hash = NULL;
    *hash_len = 0;
    *size = 0;
    while (c->p < c->end) {
        uint64_t key, v;

        if (fm_varint(c, &key) != 0 || (key >> 3) == 0)
            return -EINVAL;
        if ((key >> 3) == 1 && (key & 7) == FM_LEN) {
            if (fm_varint(c, &v) != 0 || v > (uint64_t)(c->end - c->p))
                return -EINVAL;
            *hash = c->p;
            *hash_len = (size_t)v;
            c->p += v;
        } else if ((key >> 3) == 2 && (key & 7) == FM_VARINT) {
            if (fm_varint(c, &v) != 0)
                return -EINVAL;
            *size = (int64_t)v;
        } else if ((key >> 3) <= 2) {
            return -EINVAL; /* a known field with the wrong wire type */
        } else {
            if (fm_skip_len(c, key & 7, &v) != 0 || v > (uint64_t)(c->end - c->p))
                return -EINVAL;
            c->p += v;
        }
    }
    return 0;
}

/* --- the request's spans --- */

struct fm_cursor {
    const struct find_missing_span *spans;
    size_t n_spans, span;
    const uint8_t *p, *end; /* within spans[span] */
    uint8_t stitch[FM_STITCH];
};

static void fm_cursor_init(struct fm_cursor *c, const struct find_missing_request *r)
{
    c->spans = r->spans;
    c->n_spans = r->n_spans;
    c->span = 0;
    c->p = c->end = NULL;
    if (c->n_spans > 0) {
        c->p = c->spans[0].data;
        c->end = c->p + c->spans[0].len;
    }
}

/* Moves past exhausted spans; false at the end of the message. */
static bool fm_more(struct fm_cursor *c)
{
    while (c->p == c->end) {
        if (c->span + 1 >= c->n_spans)
            return false;
        c->span++;
        c->p = c->spans[c->span].data;
        c->end = c->p + c->spans[c->span].len;
    }
    return true;
}

static int fm_cursor_varint(struct fm_cursor *c, uint64_t *v)
{
    uint64_t x = 0;

    if (c->end - c->p >= 10) { /* the common case: all of it in this span */
        struct fm_bytes b = {c->p, c->end};
        int rc = fm_varint(&b, v);

        c->p = b.p;
        return rc;
    }
    for (unsigned shift = 0; shift < 70; shift += 7) {
        uint8_t b;

        if (!fm_more(c))
            return -EINVAL;
        b = *c->p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = x;
            return 0;
        }
    }
    return -EINVAL;
}

/* Consumes len bytes, copying them to out when not NULL. */
static int fm_cursor_take(struct fm_cursor *c, uint64_t len, uint8_t *out)
{
    while (len > 0) {
        size_t n;

        if (!fm_more(c))
            return -EINVAL;
        n = (size_t)(c->end - c->p);
        if (n > len)
            n = (size_t)len;
        if (out != NULL) {
            memcpy(out, c->p, n);
            out += n;
        }
        c->p += n;
        len -= n;
    }
    return 0;
}

/* The bytes left in the message from the cursor on. */
static uint64_t fm_cursor_left(const struct fm_cursor *c)
{
    uint64_t left = (uint64_t)(c->end - c->p);

    for (size_t i = c->span + 1; i < c->n_spans; i++)
        left += c->spans[i].len;
    return left;
}

/* len bytes as one contiguous view: in place, or copied into the stitch
 * buffer or (*big, to free) a buffer of their own. -EINVAL when the message
 * has fewer bytes left (checked before anything is allocated). */
static int fm_cursor_view(struct fm_cursor *c, uint64_t len, struct fm_bytes *view, uint8_t **big)
{
    uint8_t *dst = c->stitch;

    *big = NULL;
    if (len == 0 || (fm_more(c) && (uint64_t)(c->end - c->p) >= len)) {
        view->p = c->p;
        view->end = c->p + len;
        c->p += len;
        return 0;
    }
    if (len > fm_cursor_left(c))
        return -EINVAL;
    if (len > FM_STITCH) {
        *big = malloc((size_t)len);
        if (*big == NULL)
            return -ENOMEM;
        dst = *big;
    }
    if (fm_cursor_take(c, len, dst) != 0)
        return -EINVAL;
    view->p = dst;
    view->end = dst + len;
    return 0;
}

/* The next top-level field: its number and wire type, and for a
 * length-delimited one its length (not consumed). 0, 1 at the end, -EINVAL. */
static int fm_cursor_field(struct fm_cursor *c, uint64_t *field, uint64_t *wire, uint64_t *len)
{
    uint64_t key;

    if (!fm_more(c))
        return 1;
    if (fm_cursor_varint(c, &key) != 0 || (key >> 3) == 0)
        return -EINVAL;
    *field = key >> 3;
    *wire = key & 7;
    *len = 0;
    if (*wire == FM_LEN)
        return fm_cursor_varint(c, len);
    if (*wire == FM_VARINT)
        return 0;
    if (*wire == FM_I64 || *wire == FM_I32) {
        *len = *wire == FM_I64 ? 8 : 4;
        return 0;
    }
    return -EINVAL;
}

/* --- the scan --- */

static int fm_scan_instance(struct fm_cursor *c, uint64_t len, struct find_missing_request *r)
{
    char *name;

    if (len > 64 * 1024 || len > fm_cursor_left(c))
        return -EINVAL; /* no instance name is that long */
    name = malloc((size_t)len + 1);
    if (name == NULL)
        return -ENOMEM;
    if (fm_cursor_take(c, len, (uint8_t *)name) != 0) {
        free(name);
        return -EINVAL;
    }
    name[len] = '\0';
    free(r->instance_name);
    r->instance_name = name;
    return 0;
}

/* Notes digest number index as the first bad one, as protobuf-c would give
 * its fields: the hash a C string (cut at a NUL). */
static int fm_note_bad(struct find_missing_request *r, size_t index, const uint8_t *hash,
                       size_t hash_len, int64_t size)
{
    char *copy = malloc(hash_len + 1);

    if (copy == NULL)
        return -ENOMEM;
    if (hash_len > 0)
        memcpy(copy, hash, hash_len);
    copy[hash_len] = '\0';
    free(r->bad_hash);
    r->bad_hash = copy;
    r->has_bad = true;
    r->bad_index = index;
    r->bad_size = size;
    return 0;
}

/* digest_function: a varint, or packed varints of which the last counts;
 * another wire type is kept by protobuf-c as an unknown field and then
 * fails as an enum. */
static int fm_scan_digest_function(struct fm_cursor *c, uint64_t wire, uint64_t len,
                                   struct find_missing_request *r)
{
    struct fm_bytes view;
    uint8_t *big;
    uint64_t v;
    int rc;

    if (wire == FM_VARINT) {
        if (fm_cursor_varint(c, &v) != 0)
            return -EINVAL;
        r->digest_function = v;
        r->has_digest_function = true;
        return 0;
    }
    if (wire != FM_LEN) {
        r->digest_function_malformed = true;
        return fm_cursor_take(c, len, NULL);
    }
    rc = fm_cursor_view(c, len, &view, &big);
    while (rc == 0 && view.p < view.end) {
        if (fm_varint(&view, &v) != 0) {
            r->digest_function_malformed = true;
            break;
        }
        r->digest_function = v;
        r->has_digest_function = true;
    }
    free(big);
    return rc;
}

int find_missing_request_scan(const struct find_missing_span *spans, size_t n_spans,
                              struct find_missing_request *r)
{
    struct fm_cursor *c = malloc(sizeof(*c));
    uint64_t field, wire, len;
    int rc;

    memset(r, 0, sizeof(*r));
    r->spans = spans;
    r->n_spans = n_spans;
    if (c == NULL)
        return -ENOMEM;
    fm_cursor_init(c, r);
    while ((rc = fm_cursor_field(c, &field, &wire, &len)) == 0) {
        if (field == 1)
            rc = wire == FM_LEN ? fm_scan_instance(c, len, r) : -EINVAL;
        else if (field == 2)
            rc = wire == FM_LEN ? (r->n_digests++, fm_cursor_take(c, len, NULL)) : -EINVAL;
        else if (field == 3)
            rc = fm_scan_digest_function(c, wire, len, r);
        else if (wire == FM_VARINT)
            rc = fm_cursor_varint(c, &len);
        else
            rc = fm_cursor_take(c, len, NULL);
        if (rc != 0)
            break;
    }
    if (rc == 1)
        rc = 0; /* the end */
    if (rc == 0 && r->instance_name == NULL) {
        r->instance_name = strdup("");
        if (r->instance_name == NULL)
            rc = -ENOMEM;
    }
    free(c);
    return rc;
}

/* --- the digests --- */

struct fm_pass {
    struct fm_cursor c;
    struct cas_digest chunk[FIND_MISSING_CHUNK];
};

int find_missing_request_digests(struct find_missing_request *r, find_missing_digests_fn fn,
                                 void *ctx)
{
    struct fm_pass *ps = malloc(sizeof(*ps));
    uint64_t field, wire, len;
    size_t index = 0, n = 0;
    int rc;

    if (ps == NULL)
        return -ENOMEM;
    fm_cursor_init(&ps->c, r);
    while ((rc = fm_cursor_field(&ps->c, &field, &wire, &len)) == 0) {
        struct fm_bytes view;
        const uint8_t *hash;
        size_t hash_len;
        int64_t size;
        uint8_t *big;

        if (field != 2) { /* the scan read everything else */
            rc = wire == FM_VARINT ? fm_cursor_varint(&ps->c, &len)
                                   : fm_cursor_take(&ps->c, len, NULL);
            if (rc != 0)
                break;
            continue;
        }
        rc = fm_cursor_view(&ps->c, len, &view, &big);
        if (rc == 0 && fm_digest(&view, &hash, &hash_len, &size) != 0)
            rc = -EBADMSG;
        /* After the first bad digest the rest is only checked for structure
         * (protobuf-c would not parse the request at all). */
        if (rc == 0 && !r->has_bad) {
            if (cas_digest_parse_n((const char *)hash, hash_len, size, &ps->chunk[n]) != 0 ||
                memchr(hash, '\0', hash_len) != NULL)
                rc = fm_note_bad(r, index, hash, hash_len, size);
            else if (++n == FIND_MISSING_CHUNK) {
                rc = fn != NULL ? fn(ctx, ps->chunk, n) : 0;
                n = 0;
            }
        }
        free(big);
        if (rc != 0)
            break;
        index++;
    }
    if (rc == 1) { /* the end */
        if (r->has_bad)
            rc = -EINVAL;
        else
            rc = n > 0 && fn != NULL ? fn(ctx, ps->chunk, n) : 0;
    } else if (rc == -EINVAL) {
        rc = -EBADMSG; /* the scan passed, so this cannot be; say it is malformed */
    }
    free(ps);
    return rc;
}

void find_missing_request_free(struct find_missing_request *r)
{
    free(r->instance_name);
    free(r->bad_hash);
    memset(r, 0, sizeof(*r));
}

/* --- the response --- */

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

int find_missing_response_add(struct find_missing_response *resp, const struct cas_digest *digests,
                              const bool *missing, size_t n)
{
    size_t need = 0;
    uint8_t *p;

    /* Each entry: tag, length, then the Digest (hash, and size when not 0,
     * as proto3 leaves zero values out); under 128 bytes, so a one-byte length. */
    for (size_t i = 0; i < n; i++) {
        if (missing[i])
            need += 4 + CAS_HASH_HEX +
                    (digests[i].size ? 1 + fm_varint_len((uint64_t)digests[i].size) : 0);
    }
    if (need == 0)
        return 0; /* nothing missing (and perhaps no buffer yet) */
    if (need > resp->cap - resp->len) {
        size_t cap = resp->cap ? resp->cap : 4096;
        uint8_t *buf;

        while (cap - resp->len < need)
            cap *= 2;
        buf = realloc(resp->buf, cap);
        if (buf == NULL)
            return -ENOMEM;
        resp->buf = buf;
        resp->cap = cap;
    }
    p = resp->buf + resp->len;
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
    resp->len = (size_t)(p - resp->buf);
    return 0;
}

void find_missing_response_free(struct find_missing_response *resp)
{
    free(resp->buf);
    memset(resp, 0, sizeof(*resp));
}
