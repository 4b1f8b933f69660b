/*
 * fuzz_asset_sri.c - feeds what a FetchBlob or PushBlob client sends to the
 * parsers of asset/: the input is a checksum.sri value for asset_sri_parse
 * and base64 for asset_base64_decode, and, split at newlines into
 * NAME=VALUE lines, a list of qualifiers for asset_qualifiers_parse and
 * asset_key_make. A parsed SRI must format back to tokens that parse to the
 * same hashes, decoded base64 must encode and decode to the same bytes, and
 * a key must not depend on the order of the qualifiers.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "asset/asset.h"

static void check_sri(const char *text)
{
    struct asset_sri sri, again;
    char err[512], token[160];

    if (asset_sri_parse(text, &sri, err, sizeof(err)) != 0)
        return;
    assert(sri.n >= 1 && sri.n <= ASSET_SRI_MAX_HASHES);
    for (size_t i = 0; i < sri.n; i++) {
        assert(sri.hashes[i].len == asset_hash_alg_len(sri.hashes[i].alg));
        asset_sri_format(&sri.hashes[i], token, sizeof(token));
        assert(asset_sri_parse(token, &again, err, sizeof(err)) == 0);
        assert(again.n == 1 && again.hashes[0].alg == sri.hashes[i].alg);
        assert(memcmp(again.hashes[0].digest, sri.hashes[i].digest, sri.hashes[i].len) == 0);
    }
}

static void check_base64(const char *text, size_t len)
{
    uint8_t out[512], back[512];
    char *enc;
    size_t n, m;

    if (asset_base64_decode(text, len, out, sizeof(out), &n) != 0)
        return;
    enc = malloc(4 * ((n + 2) / 3) + 1);
    if (enc == NULL)
        return;
    asset_base64_encode(out, n, enc);
    assert(asset_base64_decode(enc, strlen(enc), back, sizeof(back), &m) == 0);
    assert(m == n && memcmp(out, back, n) == 0);
    free(enc);
}

static void check_qualifiers(char *text)
{
    struct asset_qualifier q[ASSET_MAX_QUALIFIERS + 2], rev[ASSET_MAX_QUALIFIERS + 2];
    struct asset_qualifiers parsed;
    uint8_t *k1, *k2;
    size_t n = 0, l1, l2;
    char err[512];
    char *line, *save = NULL;

    for (line = strtok_r(text, "\n", &save); line != NULL && n < ASSET_MAX_QUALIFIERS + 2;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');

        if (eq != NULL)
            *eq = '\0';
        q[n].name = line;
        q[n].value = eq != NULL ? eq + 1 : "";
        n++;
    }
    if (asset_qualifiers_parse(q, n, &parsed, err, sizeof(err)) != 0)
        return;
    for (size_t i = 0; i < parsed.n_headers; i++)
        assert(strchr(parsed.headers[i].line, '\n') == NULL &&
               strchr(parsed.headers[i].line, '\r') == NULL);
    asset_qualifiers_free(&parsed);
    for (size_t i = 0; i < n; i++)
        rev[i] = q[n - 1 - i];
    if (asset_key_make(ASSET_BLOB, "", "http://x/", q, n, &k1, &l1) != 0)
        return;
    assert(asset_key_make(ASSET_BLOB, "", "http://x/", rev, n, &k2, &l2) == 0);
    assert(l1 == l2 && memcmp(k1, k2, l1) == 0);
    free(k1);
    free(k2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = strndup((const char *)data, size);

    if (text == NULL)
        return 0;
    check_sri(text);
    check_base64(text, strlen(text));
    check_qualifiers(text);
    free(text);
    return 0;
}
