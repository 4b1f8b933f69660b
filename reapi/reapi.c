/*
 * reapi.c - digest conversion and ByteStream resource-name parsing
 * (blobs/ and compressed-blobs/, with the optional digest function segment).
 */
#include "reapi.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int reapi_digest_from_proto(const Digest *pd, struct cas_digest *out, struct reapi_status *st,
                            const char *field)
{
    size_t len;

    if (pd == NULL) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "%s: digest is missing", field);
        return -EINVAL;
    }
    len = pd->hash ? strlen(pd->hash) : 0;
    if (len != CAS_HASH_HEX) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "%s: hash '%.80s' has %zu characters, a SHA-256 digest has 64 (the only "
                         "digest function served)",
                         field, pd->hash ? pd->hash : "", len);
        return -EINVAL;
    }
    if (pd->size_bytes < 0) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "%s: negative size %" PRId64, field,
                         pd->size_bytes);
        return -EINVAL;
    }
    if (cas_digest_parse(pd->hash, pd->size_bytes, out) != 0) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "%s: hash '%s' is not hexadecimal",
                         field, pd->hash);
        return -EINVAL;
    }
    return 0;
}

void reapi_digest_to_proto(const struct cas_digest *d, struct reapi_digest_buf *buf)
{
    build__bazel__remote__execution__v2__digest__init(&buf->pd);
    cas_digest_hex(d, buf->hex);
    buf->pd.hash = buf->hex;
    buf->pd.size_bytes = d->size;
}

Digest *reapi_digest_new(const struct cas_digest *d)
{
    Digest *pd = malloc(sizeof(*pd) + CAS_HASH_HEX + 1);

    if (pd == NULL)
        return NULL;
    build__bazel__remote__execution__v2__digest__init(pd);
    pd->hash = (char *)(pd + 1);
    cas_digest_hex(d, pd->hash);
    pd->size_bytes = d->size;
    return pd;
}

void reapi_digest_free(Digest *pd)
{
    free(pd); /* the hash string lives in the same allocation */
}

int reapi_parse_size(const char *s, size_t len, int64_t *out)
{
    int64_t v = 0;

    if (len == 0 || len > 19)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        if (v > (INT64_MAX - (s[i] - '0')) / 10)
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Splits name at '/' into at most max segments; -EINVAL if more. */
struct reapi_segment {
    const char *p;
    size_t len;
};

static int reapi_split(const char *name, struct reapi_segment *seg, size_t max, size_t *n)
{
    const char *p = name;

    *n = 0;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);

        if (*n == max)
            return -EINVAL;
        seg[*n].p = p;
        seg[*n].len = len;
        (*n)++;
        if (slash == NULL)
            return 0;
        p = slash + 1;
    }
}

static bool reapi_segment_is(const struct reapi_segment *s, const char *word)
{
    return s->len == strlen(word) && memcmp(s->p, word, s->len) == 0;
}

static const char *const reapi_reserved[] = {
    "blobs",      "uploads",      "actions",          "actionResults",
    "operations", "capabilities", "compressed-blobs",
};

/* Checks the instance: the segments before first. */
static int reapi_resource_instance(const char *name, const struct reapi_segment *seg, size_t first,
                                   struct reapi_resource *out)
{
    out->instance = name;
    out->instance_len = first == 0 ? 0 : (size_t)(seg[first - 1].p + seg[first - 1].len - name);
    for (size_t k = 0; k < first; k++) {
        if (seg[k].len == 0)
            return -EINVAL; /* "a//b" or a leading slash */
        /* The REAPI reserves these words: they cannot be part of an instance
         * name, so "uploads/x/blobs/..." is not a read name. */
        for (size_t r = 0; r < sizeof(reapi_reserved) / sizeof(reapi_reserved[0]); r++) {
            if (reapi_segment_is(&seg[k], reapi_reserved[r]))
                return -EINVAL;
        }
    }
    return 0;
}

/* Whether seg could be a digest function's name ("sha256", "blake3",
 * "sha256tree"): a short lowercase word. A hash is 64 characters. */
static bool reapi_segment_is_word(const struct reapi_segment *seg)
{
    if (seg->len == 0 || seg->len > 16 || seg->p[0] < 'a' || seg->p[0] > 'z')
        return false;
    for (size_t k = 0; k < seg->len; k++) {
        if (!((seg->p[k] >= 'a' && seg->p[k] <= 'z') || (seg->p[k] >= '0' && seg->p[k] <= '9')))
            return false;
    }
    return true;
}

/* Parses "{digest_function/}{hash}/{size}" from segment i on. API 2.3 puts
 * the digest function's lowercase name before the hash and omits it for
 * SHA-256; "sha256" given explicitly is accepted too. It is told apart from
 * "{hash}/{size}/{metadata}" by what follows it: a hash, not a size. */
static int reapi_resource_digest(const char *name, struct reapi_segment *seg, size_t n, size_t i,
                                 struct reapi_resource *out)
{
    int64_t size;

    if (i + 2 < n && reapi_segment_is_word(&seg[i]) &&
        reapi_parse_size(seg[i + 1].p, seg[i + 1].len, &size) != 0) {
        if (!reapi_segment_is(&seg[i], "sha256")) {
            out->unsupported = seg[i].p;
            out->unsupported_len = seg[i].len;
            return -EPROTONOSUPPORT;
        }
        i++;
    }
    if (i + 1 >= n)
        return -EINVAL;
    if (reapi_parse_size(seg[i + 1].p, seg[i + 1].len, &size) != 0)
        return -EINVAL;
    if (cas_digest_parse_n(seg[i].p, seg[i].len, size, &out->digest) != 0)
        return -EINVAL;
    out->key_len = (size_t)(seg[i + 1].p + seg[i + 1].len - name);
    return 0;
}

/* Parses what follows the instance (and the upload's uuid) from segment i:
 * "blobs/..." or "compressed-blobs/{compressor}/...". */
static int reapi_resource_blob(const char *name, struct reapi_segment *seg, size_t n, size_t i,
                               struct reapi_resource *out)
{
    out->compressor = REAPI_COMPRESSOR_IDENTITY;
    if (reapi_segment_is(&seg[i], "blobs"))
        return reapi_resource_digest(name, seg, n, i + 1, out);
    if (!reapi_segment_is(&seg[i], "compressed-blobs") || i + 1 >= n || seg[i + 1].len == 0)
        return -EINVAL;
    if (reapi_segment_is(&seg[i + 1], "zstd")) {
        out->compressor = REAPI_COMPRESSOR_ZSTD;
    } else if (!reapi_segment_is(&seg[i + 1], "identity")) {
        out->unsupported = seg[i + 1].p;
        out->unsupported_len = seg[i + 1].len;
        return -ENOTSUP;
    }
    return reapi_resource_digest(name, seg, n, i + 2, out);
}

static bool reapi_segment_is_blobs(const struct reapi_segment *seg)
{
    return reapi_segment_is(seg, "blobs") || reapi_segment_is(seg, "compressed-blobs");
}

#define REAPI_MAX_SEGMENTS 64

int reapi_resource_parse_read(const char *name, struct reapi_resource *out)
{
    struct reapi_segment seg[REAPI_MAX_SEGMENTS];
    size_t n;

    memset(out, 0, sizeof(*out));
    if (name == NULL || reapi_split(name, seg, REAPI_MAX_SEGMENTS, &n) != 0)
        return -EINVAL;
    for (size_t i = 0; i + 2 < n; i++) {
        if (!reapi_segment_is_blobs(&seg[i]))
            continue;
        if (reapi_resource_instance(name, seg, i, out) != 0)
            return -EINVAL;
        return reapi_resource_blob(name, seg, n, i, out);
    }
    return -EINVAL;
}

int reapi_resource_parse_write(const char *name, struct reapi_resource *out)
{
    struct reapi_segment seg[REAPI_MAX_SEGMENTS];
    size_t n;

    memset(out, 0, sizeof(*out));
    if (name == NULL || reapi_split(name, seg, REAPI_MAX_SEGMENTS, &n) != 0)
        return -EINVAL;
    for (size_t i = 0; i + 4 < n; i++) {
        if (!reapi_segment_is(&seg[i], "uploads") || !reapi_segment_is_blobs(&seg[i + 2]))
            continue;
        if (seg[i + 1].len == 0 || reapi_resource_instance(name, seg, i, out) != 0)
            return -EINVAL;
        out->upload_id = seg[i + 1].p;
        out->upload_id_len = seg[i + 1].len;
        return reapi_resource_blob(name, seg, n, i + 2, out);
    }
    return -EINVAL;
}

void reapi_resource_status(struct reapi_status *st, const char *name, int rc,
                           const struct reapi_resource *res, bool upload)
{
    const char *uploads = upload ? "uploads/{uuid}/" : "";
    int len = (int)(res->unsupported_len > 64 ? 64 : res->unsupported_len);

    if (name == NULL)
        name = "";
    if (rc == -ENOTSUP)
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "resource name '%.300s': compressor '%.*s' is not supported (this server "
                         "offers identity and zstd)",
                         name, len, res->unsupported);
    else if (rc == -EPROTONOSUPPORT)
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "resource name '%.300s': digest function '%.*s' is not supported (this "
                         "server serves sha256 only)",
                         name, len, res->unsupported);
    else
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "resource name '%.300s' is not {instance}/%sblobs/{sha256}/{size} or "
                         "{instance}/%scompressed-blobs/zstd/{sha256}/{size}",
                         name, uploads, uploads);
}
