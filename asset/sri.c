/*
 * sri.c - Subresource Integrity values (checksum.sri qualifiers): parsing,
 * base64, and checking streamed content against them with OpenSSL's EVP
 * digests.
 */
#include "asset.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static const struct {
    const char *name;
    enum asset_hash_alg alg;
    size_t len;
} sri_algs[] = {
    {"sha256", ASSET_SHA256, 32},
    {"sha384", ASSET_SHA384, 48},
    {"sha512", ASSET_SHA512, 64},
};

const char *asset_hash_alg_name(enum asset_hash_alg alg)
{
    for (size_t i = 0; i < sizeof(sri_algs) / sizeof(sri_algs[0]); i++) {
        if (sri_algs[i].alg == alg)
            return sri_algs[i].name;
    }
    return "?";
}

size_t asset_hash_alg_len(enum asset_hash_alg alg)
{
    for (size_t i = 0; i < sizeof(sri_algs) / sizeof(sri_algs[0]); i++) {
        if (sri_algs[i].alg == alg)
            return sri_algs[i].len;
    }
    return 0;
}

static int base64_value(char c)
{
    const char *p;

    if (c == '\0')
        return -1;
    p = strchr(base64_alphabet, c);
    return p ? (int)(p - base64_alphabet) : -1;
}

int asset_base64_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap,
                        size_t *out_len)
{
    uint32_t acc = 0;
    size_t bits = 0, n = 0, pad = 0;

    while (in_len > 0 && in[in_len - 1] == '=' && pad < 2) {
        in_len--;
        pad++;
    }
    if (in_len % 4 == 1 || (pad > 0 && (in_len + pad) % 4 != 0))
        return -EINVAL;
    for (size_t i = 0; i < in_len; i++) {
        int v = base64_value(in[i]);

        if (v < 0)
            return -EINVAL;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == out_cap)
                return -ENOSPC;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    /* The bits left over must be zero: one encoding per value. */
    if ((acc & ((1u << bits) - 1)) != 0)
        return -EINVAL;
    *out_len = n;
    return 0;
}

void asset_base64_encode(const uint8_t *in, size_t len, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;

        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = base64_alphabet[(v >> 18) & 63];
        out[o++] = base64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < len ? base64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? base64_alphabet[v & 63] : '=';
    }
    out[o] = '\0';
}

void asset_sri_format(const struct asset_sri_hash *h, char *out, size_t out_len)
{
    char b64[4 * ((ASSET_HASH_MAX_BYTES + 2) / 3) + 1];

    asset_base64_encode(h->digest, h->len, b64);
    snprintf(out, out_len, "%s-%s", asset_hash_alg_name(h->alg), b64);
}

/* One "ALG-BASE64[?options]" token of len bytes. */
static int sri_parse_token(const char *tok, size_t len, struct asset_sri_hash *out, char *err,
                           size_t err_len)
{
    const char *dash = memchr(tok, '-', len);
    const char *q = memchr(tok, '?', len);
    size_t alg_len, b64_len, n;

    if (dash == NULL || (q != NULL && q < dash)) {
        snprintf(err, err_len, "checksum.sri token '%.*s' is not ALGORITHM-BASE64", (int)len, tok);
        return -EINVAL;
    }
    alg_len = (size_t)(dash - tok);
    b64_len = (size_t)((q ? q : tok + len) - dash - 1);
    for (size_t i = 0; i < sizeof(sri_algs) / sizeof(sri_algs[0]); i++) {
        if (strlen(sri_algs[i].name) != alg_len || memcmp(sri_algs[i].name, tok, alg_len) != 0)
            continue;
        out->alg = sri_algs[i].alg;
        if (asset_base64_decode(dash + 1, b64_len, out->digest, sizeof(out->digest), &n) != 0 ||
            n != sri_algs[i].len) {
            snprintf(err, err_len,
                     "checksum.sri token '%.*s': the %s digest is not %zu bytes of base64",
                     (int)len, tok, sri_algs[i].name, sri_algs[i].len);
            return -EINVAL;
        }
        out->len = n;
        return 0;
    }
    snprintf(err, err_len,
             "checksum.sri hash algorithm '%.*s' is not supported (sha256, sha384 or sha512)",
             (int)(alg_len > 64 ? 64 : alg_len), tok);
    return -EINVAL;
}

int asset_sri_parse(const char *value, struct asset_sri *out, char *err, size_t err_len)
{
    const char *p = value;
    int rc;

    memset(out, 0, sizeof(*out));
    for (;;) {
        size_t len = 0;

        while (*p != '\0' && isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            break;
        while (p[len] != '\0' && !isspace((unsigned char)p[len]))
            len++;
        if (out->n == ASSET_SRI_MAX_HASHES) {
            snprintf(err, err_len, "checksum.sri has more than %d hashes", ASSET_SRI_MAX_HASHES);
            return -E2BIG;
        }
        rc = sri_parse_token(p, len, &out->hashes[out->n], err, err_len);
        if (rc != 0)
            return rc;
        out->n++;
        p += len;
    }
    if (out->n == 0) {
        snprintf(err, err_len, "checksum.sri is empty");
        return -EINVAL;
    }
    return 0;
}

struct asset_sri_check {
    const struct asset_sri *sri;
    EVP_MD_CTX *ctx[ASSET_SRI_MAX_HASHES];
};

static const EVP_MD *sri_md(enum asset_hash_alg alg)
{
    switch (alg) {
    case ASSET_SHA256:
        return EVP_sha256();
    case ASSET_SHA384:
        return EVP_sha384();
    case ASSET_SHA512:
        return EVP_sha512();
    }
    return NULL;
}

void asset_sri_check_free(struct asset_sri_check *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < ASSET_SRI_MAX_HASHES; i++)
        EVP_MD_CTX_free(c->ctx[i]);
    free(c);
}

int asset_sri_check_new(const struct asset_sri *sri, struct asset_sri_check **out)
{
    struct asset_sri_check *c = calloc(1, sizeof(*c));

    *out = NULL;
    if (c == NULL)
        return -ENOMEM;
    c->sri = sri;
    for (size_t i = 0; i < sri->n; i++) {
        c->ctx[i] = EVP_MD_CTX_new();
        if (c->ctx[i] == NULL ||
            EVP_DigestInit_ex(c->ctx[i], sri_md(sri->hashes[i].alg), NULL) != 1) {
            asset_sri_check_free(c);
            return -ENOMEM;
        }
    }
    *out = c;
    return 0;
}

void asset_sri_check_update(struct asset_sri_check *c, const void *buf, size_t len)
{
    for (size_t i = 0; i < c->sri->n; i++)
        EVP_DigestUpdate(c->ctx[i], buf, len);
}

int asset_sri_check_finish(struct asset_sri_check *c, char *err, size_t err_len)
{
    int rc = 0;

    for (size_t i = 0; i < c->sri->n && rc == 0; i++) {
        struct asset_sri_hash got = {.alg = c->sri->hashes[i].alg};
        unsigned int n = 0;
        char want_s[128], got_s[128];

        if (EVP_DigestFinal_ex(c->ctx[i], got.digest, &n) != 1) {
            rc = -ENOMEM;
            break;
        }
        got.len = n;
        if (got.len == c->sri->hashes[i].len &&
            memcmp(got.digest, c->sri->hashes[i].digest, got.len) == 0)
            continue;
        asset_sri_format(&c->sri->hashes[i], want_s, sizeof(want_s));
        asset_sri_format(&got, got_s, sizeof(got_s));
        snprintf(err, err_len, "checksum mismatch: checksum.sri wants %s, the content is %s",
                 want_s, got_s);
        rc = -EBADMSG;
    }
    asset_sri_check_free(c);
    return rc;
}
