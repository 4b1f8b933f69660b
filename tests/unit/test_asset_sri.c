/*
 * test_asset_sri.c - the pure parts of asset/: checksum.sri values and
 * base64, checking content against them, qualifiers (headers, duplicates,
 * what origin fetches cannot honour), map keys, the allowed-prefix rule, and
 * the map with its log.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "asset/asset.h"

/* sha256("hello"), sha384("hello"), in base64 */
#define HELLO_SHA256 "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="
#define HELLO_SHA384 "WeF0h3dEjGnea4ANejO7+5/xtGPkQ1TDVTvNucZm+pASWjx5+QOXvfX2oT3oKGhP"

static void test_base64(void **state)
{
    uint8_t out[16];
    char enc[32];
    size_t n;

    (void)state;
    assert_int_equal(asset_base64_decode("aGVsbG8=", 8, out, sizeof(out), &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "hello", 5);
    /* Padding is optional. */
    assert_int_equal(asset_base64_decode("aGVsbG8", 7, out, sizeof(out), &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(asset_base64_decode("", 0, out, sizeof(out), &n), 0);
    assert_int_equal(n, 0);
    /* URL-safe characters, bad lengths, stray padding, non-zero trailing bits. */
    assert_int_equal(asset_base64_decode("aGV-bG8=", 8, out, sizeof(out), &n), -EINVAL);
    assert_int_equal(asset_base64_decode("aGVsb", 5, out, sizeof(out), &n), -EINVAL);
    assert_int_equal(asset_base64_decode("aGVsbG8==", 9, out, sizeof(out), &n), -EINVAL);
    assert_int_equal(asset_base64_decode("a=Vs", 4, out, sizeof(out), &n), -EINVAL);
    assert_int_equal(asset_base64_decode("aGVsbG9=", 8, out, sizeof(out), &n), -EINVAL);
    assert_int_equal(asset_base64_decode("aGVsbG8=", 8, out, 4, &n), -ENOSPC);
    asset_base64_encode((const uint8_t *)"hello", 5, enc);
    assert_string_equal(enc, "aGVsbG8=");
    asset_base64_encode((const uint8_t *)"hell", 4, enc);
    assert_string_equal(enc, "aGVsbA==");
}

static void test_sri_parse(void **state)
{
    struct asset_sri sri;
    char err[256], again[128];

    (void)state;
    assert_int_equal(asset_sri_parse("sha256-" HELLO_SHA256, &sri, err, sizeof(err)), 0);
    assert_int_equal(sri.n, 1);
    assert_int_equal(sri.hashes[0].alg, ASSET_SHA256);
    assert_int_equal(sri.hashes[0].len, 32);
    assert_int_equal(sri.hashes[0].digest[0], 0x2c);
    asset_sri_format(&sri.hashes[0], again, sizeof(again));
    assert_string_equal(again, "sha256-" HELLO_SHA256);

    /* Several tokens, white space around them, ?options ignored. */
    assert_int_equal(asset_sri_parse("  sha384-" HELLO_SHA384 "?ct=text/plain\tsha256-" HELLO_SHA256
                                     " ",
                                     &sri, err, sizeof(err)),
                     0);
    assert_int_equal(sri.n, 2);
    assert_int_equal(sri.hashes[0].alg, ASSET_SHA384);
    assert_int_equal(sri.hashes[0].len, 48);
    assert_int_equal(sri.hashes[1].alg, ASSET_SHA256);

    /* Unknown algorithms are refused by name. */
    assert_int_equal(asset_sri_parse("md5-XUFAKrxLKna5cZ2REBfFkg==", &sri, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "'md5'"));
    assert_non_null(strstr(err, "not supported"));
    assert_int_equal(asset_sri_parse("sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00=", &sri, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "'sha1'"));
    assert_int_equal(asset_sri_parse("SHA256-" HELLO_SHA256, &sri, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "'SHA256'"));

    /* Malformed values. */
    assert_int_equal(asset_sri_parse("", &sri, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(asset_sri_parse("   ", &sri, err, sizeof(err)), -EINVAL);
    assert_int_equal(asset_sri_parse("sha256", &sri, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "ALGORITHM-BASE64"));
    assert_int_equal(asset_sri_parse("sha256-", &sri, err, sizeof(err)), -EINVAL);
    assert_int_equal(asset_sri_parse("sha256-aGVsbG8=", &sri, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "32 bytes"));
    assert_int_equal(asset_sri_parse("sha256-" HELLO_SHA384, &sri, err, sizeof(err)), -EINVAL);
    assert_int_equal(asset_sri_parse("sha256-!!!!", &sri, err, sizeof(err)), -EINVAL);
    assert_int_equal(asset_sri_parse("?x-sha256-" HELLO_SHA256, &sri, err, sizeof(err)), -EINVAL);
    assert_int_equal(
        asset_sri_parse("sha256-" HELLO_SHA256 " sha256-" HELLO_SHA256 " sha256-" HELLO_SHA256
                        " sha256-" HELLO_SHA256 " sha256-" HELLO_SHA256 " sha256-" HELLO_SHA256
                        " sha256-" HELLO_SHA256 " sha256-" HELLO_SHA256 " sha256-" HELLO_SHA256,
                        &sri, err, sizeof(err)),
        -E2BIG);
}

static void test_sri_check(void **state)
{
    struct asset_sri_check *c;
    struct asset_sri sri;
    char err[512];

    (void)state;
    assert_int_equal(
        asset_sri_parse("sha256-" HELLO_SHA256 " sha384-" HELLO_SHA384, &sri, err, sizeof(err)), 0);
    assert_int_equal(asset_sri_check_new(&sri, &c), 0);
    asset_sri_check_update(c, "he", 2);
    asset_sri_check_update(c, "llo", 3);
    assert_int_equal(asset_sri_check_finish(c, err, sizeof(err)), 0);

    assert_int_equal(asset_sri_check_new(&sri, &c), 0);
    asset_sri_check_update(c, "hellO", 5);
    assert_int_equal(asset_sri_check_finish(c, err, sizeof(err)), -EBADMSG);
    assert_non_null(strstr(err, "mismatch"));
    assert_non_null(strstr(err, "sha256-" HELLO_SHA256));

    /* Freed without finishing. */
    assert_int_equal(asset_sri_check_new(&sri, &c), 0);
    asset_sri_check_update(c, "x", 1);
    asset_sri_check_free(c);
}

static void test_qualifiers(void **state)
{
    struct asset_qualifiers q;
    char err[256];
    const struct asset_qualifier good[] = {
        {"checksum.sri", "sha256-" HELLO_SHA256},
        {"bazel.canonical_id", "abc"},
        {"http_header:Accept", "application/octet-stream"},
        {"http_header_url:1:Authorization", "Bearer x"},
    };
    const struct asset_qualifier dup[] = {{"a", "1"}, {"b", "2"}, {"a", "3"}};
    const struct asset_qualifier crlf[] = {{"http_header:X", "a\r\nHost: evil"}};
    const struct asset_qualifier bad_name[] = {{"http_header:X Y", "v"}};
    const struct asset_qualifier bad_index[] = {{"http_header_url:-1:X", "v"}};
    const struct asset_qualifier bad_sri[] = {{"checksum.sri", "blake3-AAAA"}};
    const struct asset_qualifier unknown[] = {{"bazel.auth_headers", "{}"}, {"vcs.commit", "1"}};
    const struct asset_qualifier nameless[] = {{"", "x"}};

    (void)state;
    assert_int_equal(asset_qualifiers_parse(good, 4, &q, err, sizeof(err)), 0);
    assert_true(q.has_sri);
    assert_null(q.unsupported);
    assert_int_equal(q.n_headers, 2);
    assert_int_equal(q.headers[0].url_index, -1);
    assert_string_equal(q.headers[0].line, "Accept: application/octet-stream");
    assert_int_equal(q.headers[1].url_index, 1);
    assert_string_equal(q.headers[1].line, "Authorization: Bearer x");
    asset_qualifiers_free(&q);

    assert_int_equal(asset_qualifiers_parse(dup, 3, &q, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "\"a\""));
    assert_int_equal(asset_qualifiers_parse(crlf, 1, &q, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "http_header:X"));
    assert_int_equal(asset_qualifiers_parse(bad_name, 1, &q, err, sizeof(err)), -EINVAL);
    assert_int_equal(asset_qualifiers_parse(bad_index, 1, &q, err, sizeof(err)), -EINVAL);
    assert_int_equal(asset_qualifiers_parse(bad_sri, 1, &q, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "'blake3'"));
    assert_int_equal(asset_qualifiers_parse(nameless, 1, &q, err, sizeof(err)), -EINVAL);

    /* Accepted, but only a pushed mapping can answer them. */
    assert_int_equal(asset_qualifiers_parse(unknown, 2, &q, err, sizeof(err)), 0);
    assert_string_equal(q.unsupported, "bazel.auth_headers");
    asset_qualifiers_free(&q);
}

static void test_keys(void **state)
{
    const struct asset_qualifier ab[] = {{"a", "1"}, {"b", "2"}};
    const struct asset_qualifier ba[] = {{"b", "2"}, {"a", "1"}};
    const struct asset_qualifier joined[] = {{"a", "1b"}};
    uint8_t *k1, *k2, *k3;
    size_t l1, l2, l3;
    char big[ASSET_MAX_KEY_BYTES];

    (void)state;
    /* The order of qualifiers does not matter. */
    assert_int_equal(asset_key_make(ASSET_BLOB, "", "http://x/", ab, 2, &k1, &l1), 0);
    assert_int_equal(asset_key_make(ASSET_BLOB, "", "http://x/", ba, 2, &k2, &l2), 0);
    assert_int_equal(l1, l2);
    assert_memory_equal(k1, k2, l1);
    free(k2);
    /* The kind, the instance and the split between strings do. */
    assert_int_equal(asset_key_make(ASSET_DIRECTORY, "", "http://x/", ab, 2, &k2, &l2), 0);
    assert_true(l1 != l2 || memcmp(k1, k2, l1) != 0);
    free(k2);
    assert_int_equal(asset_key_make(ASSET_BLOB, "main", "http://x/", ab, 2, &k2, &l2), 0);
    assert_true(l1 != l2 || memcmp(k1, k2, l1) != 0);
    free(k2);
    assert_int_equal(asset_key_make(ASSET_BLOB, "", "http://x/", joined, 1, &k3, &l3), 0);
    assert_true(l1 != l3 || memcmp(k1, k3, l1) != 0);
    free(k3);
    free(k1);
    memset(big, 'u', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(asset_key_make(ASSET_BLOB, "", big, NULL, 0, &k1, &l1), -E2BIG);
}

static void test_url_prefixes(void **state)
{
    const char *prefixes = "https://example.com http://127.0.0.1:8000/files/ http://mirror/a";
    char norm[ASSET_MAX_URI_LEN];

    (void)state;
    assert_true(asset_url_prefix_match("https://example.com/x.tar.gz", prefixes));
    assert_true(asset_url_prefix_match("https://example.com", prefixes));
    assert_true(asset_url_prefix_match("HTTPS://EXAMPLE.COM/x", prefixes));
    assert_false(asset_url_prefix_match("https://example.com.evil.org/x", prefixes));
    assert_false(asset_url_prefix_match("https://example.comx/", prefixes));
    assert_true(asset_url_prefix_match("http://127.0.0.1:8000/files/a", prefixes));
    assert_false(asset_url_prefix_match("http://127.0.0.1:8000/other", prefixes));
    assert_false(asset_url_prefix_match("http://127.0.0.1:80001/files/a", prefixes));
    assert_true(asset_url_prefix_match("http://mirror/a?x=1", prefixes));
    assert_false(asset_url_prefix_match("http://mirror/ab", prefixes));
    /* The path compares with case. */
    assert_false(asset_url_prefix_match("http://mirror/A", prefixes));
    assert_false(asset_url_prefix_match("http://mirror/a", ""));
    assert_false(asset_url_prefix_match("http://mirror/a", "   "));

    assert_int_equal(asset_url_check("https://example.com/x", prefixes, norm, sizeof(norm)), 0);
    assert_string_equal(norm, "https://example.com/x");
    assert_int_equal(
        asset_url_check("https://example.com@evil.org/x", prefixes, norm, sizeof(norm)), -EINVAL);
    assert_int_equal(asset_url_check("https://evil.org/x", prefixes, norm, sizeof(norm)), -EPERM);
    assert_int_equal(
        asset_url_check("http://127.0.0.1:8000/files/../secret", prefixes, norm, sizeof(norm)),
        -EPERM);
    assert_int_equal(asset_url_check("ftp://example.com/x", prefixes, norm, sizeof(norm)),
                     -EPROTONOSUPPORT);
    assert_int_equal(asset_url_check("file:///etc/passwd", "file:///", norm, sizeof(norm)),
                     -EPROTONOSUPPORT);
    assert_int_equal(asset_url_check("not a url", prefixes, norm, sizeof(norm)), -EINVAL);
    assert_true(asset_url_is_http("HTTP://x"));
    assert_false(asset_url_is_http("urn:uuid:1"));
}

static void test_map(void **state)
{
    char dir[] = "/tmp/test_asset_map.XXXXXX", path[256];
    struct asset_map *m;
    struct asset_entry e = {.stored_us = 11, .expire_us = 22}, got;
    const uint8_t k1[] = "key\n1", k2[] = "key 2", k3[] = "k3";
    FILE *f;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/map.log", dir);
    cas_digest_buffer("hello", 5, &e.digest);

    assert_int_equal(asset_map_open(path, 2, &m), 0);
    assert_int_equal(asset_map_get(m, k1, sizeof(k1), &got), -ENOENT);
    assert_int_equal(asset_map_put(m, k1, sizeof(k1), &e), 0);
    assert_int_equal(asset_map_put(m, k2, sizeof(k2), &e), 0);
    assert_int_equal(asset_map_get(m, k1, sizeof(k1), &got), 0); /* k1 now the most recent */
    assert_true(cas_digest_equal(&got.digest, &e.digest));
    assert_int_equal(got.stored_us, 11);
    assert_int_equal(got.expire_us, 22);
    assert_int_equal(asset_map_put(m, k3, sizeof(k3), &e), 0); /* drops k2 */
    assert_int_equal(asset_map_count(m), 2);
    assert_int_equal(asset_map_get(m, k2, sizeof(k2), &got), -ENOENT);
    assert_int_equal(asset_map_remove(m, k3, sizeof(k3)), 0);
    assert_int_equal(asset_map_remove(m, k3, sizeof(k3)), -ENOENT);
    asset_map_close(m);

    /* A torn last line and a line that does not parse are skipped. */
    f = fopen(path, "a");
    assert_non_null(f);
    fputs("P nonsense\nP 2cf24dba", f);
    fclose(f);
    assert_int_equal(asset_map_open(path, 10, &m), 0);
    assert_int_equal(asset_map_count(m), 1);
    assert_int_equal(asset_map_get(m, k1, sizeof(k1), &got), 0);
    assert_true(cas_digest_equal(&got.digest, &e.digest));
    assert_int_equal(asset_map_get(m, k3, sizeof(k3), &got), -ENOENT);
    asset_map_close(m);

    /* A foreign file is not read. */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("something else\n", f);
    fclose(f);
    assert_int_equal(asset_map_open(path, 10, &m), 0);
    assert_int_equal(asset_map_count(m), 0);
    asset_map_close(m);

    /* Memory only. */
    assert_int_equal(asset_map_open(NULL, 10, &m), 0);
    assert_int_equal(asset_map_put(m, k1, sizeof(k1), &e), 0);
    assert_int_equal(asset_map_count(m), 1);
    asset_map_close(m);

    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),    cmocka_unit_test(test_sri_parse),
        cmocka_unit_test(test_sri_check), cmocka_unit_test(test_qualifiers),
        cmocka_unit_test(test_keys),      cmocka_unit_test(test_url_prefixes),
        cmocka_unit_test(test_map),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
