/*
 * fuzz_digest.c - feeds "HASH/SIZE" strings to cas_digest_parse and
 * cas_digest_parse_n (cas/digest.c), which turn every digest a client sends
 * (in a proto Digest, a resource name, `casbox run --action`) into the
 * store's form. The two must agree, and a parsed hash must print back as the
 * input's lowercase hex.
 */
#include <assert.h>
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cas/cas.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data, *slash = memchr(data, '/', size);
    size_t hex_len = slash != NULL ? (size_t)(slash - text) : size;
    struct cas_digest a, b;
    char *hex, back[CAS_HASH_HEX + 1];
    int64_t digest_size = -1;
    int rc_n, rc;

    hex = strndup(text, hex_len);
    if (hex == NULL)
        return 0;
    if (slash != NULL) {
        char *size_text = strndup(slash + 1, size - hex_len - 1);

        if (size_text == NULL) {
            free(hex);
            return 0;
        }
        digest_size = strtoll(size_text, NULL, 10);
        free(size_text);
    }
    rc_n = cas_digest_parse_n(text, hex_len, digest_size, &a);
    rc = cas_digest_parse(hex, digest_size, &b);
    /* A NUL in the hash shortens the string cas_digest_parse sees. */
    if (strlen(hex) == hex_len)
        assert(rc_n == rc);
    if (rc_n == 0) {
        assert(rc == 0 && cas_digest_equal(&a, &b) && a.size == digest_size);
        cas_digest_hex(&a, back);
        for (size_t i = 0; i < CAS_HASH_HEX; i++)
            assert(back[i] == tolower((unsigned char)hex[i]));
    }
    free(hex);
    return 0;
}
