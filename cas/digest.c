/*
 * digest.c - SHA-256 digests: parsing and printing hex, hashing buffers, files
 * and streams with OpenSSL's EVP interface (which uses the SHA-NI instructions
 * where the CPU has them).
 *
 * The void functions cannot report an OpenSSL failure (only an allocation
 * failure inside libcrypto can cause one), so they poison the result instead:
 * the size becomes -1, which no valid digest has, so the result never compares
 * equal to any expected digest and a caller can never accept bytes on its
 * strength.
 */
#include "cas.h"
#include "store_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

struct cas_hasher {
    EVP_MD_CTX *ctx;
    int64_t bytes;
    bool failed;
};

static const struct cas_digest empty_digest = {
    .hash = {0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4,
             0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b,
             0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55},
    .size = 0,
};

/* Hex digit values plus one (the zero-filled rest means "not hex"): one
 * load per character, no branches (FindMissingBlobs parses 100,000 digests
 * in one request). */
static const int8_t hex_values[256] = {
    ['0'] = 0 + 1,  ['1'] = 1 + 1,  ['2'] = 2 + 1,  ['3'] = 3 + 1,  ['4'] = 4 + 1,  ['5'] = 5 + 1,
    ['6'] = 6 + 1,  ['7'] = 7 + 1,  ['8'] = 8 + 1,  ['9'] = 9 + 1,  ['a'] = 10 + 1, ['b'] = 11 + 1,
    ['c'] = 12 + 1, ['d'] = 13 + 1, ['e'] = 14 + 1, ['f'] = 15 + 1, ['A'] = 10 + 1, ['B'] = 11 + 1,
    ['C'] = 12 + 1, ['D'] = 13 + 1, ['E'] = 14 + 1, ['F'] = 15 + 1,
};

static int hex_value(char c)
{
    return hex_values[(unsigned char)c] - 1;
}

int cas_digest_parse_n(const char *hex, size_t hex_len, int64_t size, struct cas_digest *out)
{
    struct cas_digest d;

    if (hex == NULL || hex_len != CAS_HASH_HEX || size < 0)
        return -EINVAL;
    for (size_t i = 0; i < CAS_HASH_BYTES; i++) {
        int hi = hex_value(hex[2 * i]);
        int lo = hex_value(hex[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return -EINVAL;
        d.hash[i] = (uint8_t)(hi << 4 | lo);
    }
    d.size = size;
    *out = d;
    return 0;
}

int cas_digest_parse(const char *hex, int64_t size, struct cas_digest *out)
{
    if (hex == NULL)
        return -EINVAL;
    /* strnlen: a longer string is rejected without reading all of it. */
    return cas_digest_parse_n(hex, strnlen(hex, CAS_HASH_HEX + 1), size, out);
}

void cas_digest_hex(const struct cas_digest *d, char out[CAS_HASH_HEX + 1])
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < CAS_HASH_BYTES; i++) {
        out[2 * i] = digits[d->hash[i] >> 4];
        out[2 * i + 1] = digits[d->hash[i] & 0xf];
    }
    out[CAS_HASH_HEX] = '\0';
}

bool cas_digest_equal(const struct cas_digest *a, const struct cas_digest *b)
{
    return a->size == b->size && memcmp(a->hash, b->hash, CAS_HASH_BYTES) == 0;
}

const struct cas_digest *cas_digest_empty(void)
{
    return &empty_digest;
}

bool cas_digest_is_empty(const struct cas_digest *d)
{
    return cas_digest_equal(d, &empty_digest);
}

void cas_digest_buffer(const void *buf, size_t len, struct cas_digest *out)
{
    unsigned int md_len = 0;

    memset(out->hash, 0, sizeof(out->hash));
    out->size = (int64_t)len;
    if (EVP_Digest(buf, len, out->hash, &md_len, EVP_sha256(), NULL) != 1 ||
        md_len != CAS_HASH_BYTES)
        out->size = -1;
}

struct cas_hasher *cas_hasher_new(void)
{
    struct cas_hasher *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (h->ctx == NULL || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        cas_hasher_free(h);
        return NULL;
    }
    return h;
}

void cas_hasher_update(struct cas_hasher *h, const void *buf, size_t len)
{
    if (len == 0 || h->failed)
        return;
    if (EVP_DigestUpdate(h->ctx, buf, len) != 1)
        h->failed = true;
    h->bytes += (int64_t)len;
}

void cas_hasher_finish(struct cas_hasher *h, struct cas_digest *out)
{
    unsigned int md_len = 0;

    memset(out->hash, 0, sizeof(out->hash));
    out->size = h->bytes;
    if (h->failed || EVP_DigestFinal_ex(h->ctx, out->hash, &md_len) != 1 ||
        md_len != CAS_HASH_BYTES)
        out->size = -1;
    cas_hasher_free(h);
}

void cas_hasher_free(struct cas_hasher *h)
{
    if (h == NULL)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

size_t cas_io_buffer_size(int64_t expected)
{
    if (expected <= 0)
        return CAS_IO_ALIGN;
    if (expected >= CAS_IO_CHUNK)
        return CAS_IO_CHUNK;
    return ((size_t)expected + CAS_IO_ALIGN - 1) & ~(size_t)(CAS_IO_ALIGN - 1);
}

int cas_digest_fd(int fd, struct cas_digest *out)
{
    struct cas_hasher *h = NULL;
    struct stat st;
    uint8_t *buf = NULL;
    size_t cap;
    off_t off = 0;
    int ret;

    if (fstat(fd, &st) < 0)
        return -errno;
    /* Size the buffer to the file: a 1 MiB buffer for a 4 KiB file costs more
     * than the read. The loop reads to EOF whatever fstat said. */
    cap = cas_io_buffer_size(st.st_size);
    buf = aligned_alloc(CAS_IO_ALIGN, cap);
    h = cas_hasher_new();
    if (buf == NULL || h == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    for (;;) {
        ssize_t n = pread(fd, buf, cap, off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            ret = -errno;
            goto out;
        }
        if (n == 0)
            break;
        cas_hasher_update(h, buf, (size_t)n);
        off += n;
    }
    cas_hasher_finish(h, out);
    h = NULL;
    ret = out->size < 0 ? -ENOMEM : 0; /* only an allocation in libcrypto can fail */
out:
    cas_hasher_free(h);
    free(buf);
    return ret;
}
