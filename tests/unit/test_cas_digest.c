/*
 * test_cas_digest.c - unit tests for cas/digest.c: hex parsing and printing,
 * SHA-256 test vectors, incremental vs one-shot hashing, hashing files.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cas/cas.h"

#define EMPTY_HEX "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define ABC_HEX   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/* SHA-256 of one million 'a' (FIPS 180-2 appendix B.3). */
#define MILLION_A_HEX "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"

static void fill_pattern(uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed ? seed : 1;

    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
}

static void test_parse_valid(void **state)
{
    struct cas_digest d;
    char hex[CAS_HASH_HEX + 1];

    (void)state;
    assert_int_equal(cas_digest_parse(ABC_HEX, 3, &d), 0);
    assert_int_equal(d.size, 3);
    assert_int_equal(d.hash[0], 0xba);
    assert_int_equal(d.hash[31], 0xad);
    cas_digest_hex(&d, hex);
    assert_string_equal(hex, ABC_HEX);
}

static void test_parse_uppercase(void **state)
{
    struct cas_digest lower, upper, mixed;
    char up[CAS_HASH_HEX + 1], mix[CAS_HASH_HEX + 1], hex[CAS_HASH_HEX + 1];

    (void)state;
    for (int i = 0; i <= CAS_HASH_HEX; i++) {
        up[i] = (char)(ABC_HEX[i] >= 'a' && ABC_HEX[i] <= 'f' ? ABC_HEX[i] - 32 : ABC_HEX[i]);
        mix[i] = (char)(i % 2 ? up[i] : ABC_HEX[i]);
    }
    assert_int_equal(cas_digest_parse(ABC_HEX, 3, &lower), 0);
    assert_int_equal(cas_digest_parse(up, 3, &upper), 0);
    assert_int_equal(cas_digest_parse(mix, 3, &mixed), 0);
    assert_true(cas_digest_equal(&lower, &upper));
    assert_true(cas_digest_equal(&lower, &mixed));
    cas_digest_hex(&upper, hex);
    assert_string_equal(hex, ABC_HEX); /* always printed lowercase */
}

static void test_parse_rejects(void **state)
{
    struct cas_digest d = {.size = 77};
    char bad[CAS_HASH_HEX + 2];

    (void)state;
    /* wrong length */
    assert_int_equal(cas_digest_parse("", 0, &d), -EINVAL);
    assert_int_equal(cas_digest_parse("abc", 0, &d), -EINVAL);
    memcpy(bad, ABC_HEX, CAS_HASH_HEX - 1);
    bad[CAS_HASH_HEX - 1] = '\0';
    assert_int_equal(cas_digest_parse(bad, 3, &d), -EINVAL);
    memcpy(bad, ABC_HEX, CAS_HASH_HEX);
    bad[CAS_HASH_HEX] = '0';
    bad[CAS_HASH_HEX + 1] = '\0';
    assert_int_equal(cas_digest_parse(bad, 3, &d), -EINVAL);
    /* non-hex characters, at the start, middle and end */
    const char *const bad_chars = "gG -xz/\x01\xff";
    for (const char *c = bad_chars; *c != '\0'; c++) {
        for (int pos = 0; pos < CAS_HASH_HEX; pos += 31) {
            memcpy(bad, ABC_HEX, CAS_HASH_HEX + 1);
            bad[pos] = *c;
            assert_int_equal(cas_digest_parse(bad, 3, &d), -EINVAL);
        }
    }
    /* negative size */
    assert_int_equal(cas_digest_parse(ABC_HEX, -1, &d), -EINVAL);
    assert_int_equal(cas_digest_parse(ABC_HEX, INT64_MIN, &d), -EINVAL);
    assert_int_equal(cas_digest_parse(NULL, 0, &d), -EINVAL);
    /* nothing written on failure */
    assert_int_equal(d.size, 77);
}

static void test_parse_n(void **state)
{
    /* A hash inside a resource name: not NUL-terminated after 64 chars. */
    const char *resource = "blobs/" ABC_HEX "/3";
    struct cas_digest d, ref;

    (void)state;
    assert_int_equal(cas_digest_parse_n(resource + 6, CAS_HASH_HEX, 3, &d), 0);
    assert_int_equal(cas_digest_parse(ABC_HEX, 3, &ref), 0);
    assert_true(cas_digest_equal(&d, &ref));
    assert_int_equal(cas_digest_parse_n(resource + 6, CAS_HASH_HEX + 1, 3, &d), -EINVAL);
    assert_int_equal(cas_digest_parse_n(resource + 6, CAS_HASH_HEX - 1, 3, &d), -EINVAL);
    assert_int_equal(cas_digest_parse_n(resource + 6, CAS_HASH_HEX, -5, &d), -EINVAL);
}

static void assert_digest_hex(const struct cas_digest *d, const char *hex, int64_t size)
{
    char out[CAS_HASH_HEX + 1];

    cas_digest_hex(d, out);
    assert_string_equal(out, hex);
    assert_int_equal(d->size, size);
}

static void test_vectors(void **state)
{
    struct cas_digest d;
    char *million;

    (void)state;
    cas_digest_buffer("", 0, &d);
    assert_digest_hex(&d, EMPTY_HEX, 0);
    assert_true(cas_digest_equal(&d, cas_digest_empty()));
    assert_digest_hex(cas_digest_empty(), EMPTY_HEX, 0);

    cas_digest_buffer("abc", 3, &d);
    assert_digest_hex(&d, ABC_HEX, 3);
    assert_false(cas_digest_equal(&d, cas_digest_empty()));

    million = malloc(1000000);
    assert_non_null(million);
    memset(million, 'a', 1000000);
    cas_digest_buffer(million, 1000000, &d);
    assert_digest_hex(&d, MILLION_A_HEX, 1000000);
    free(million);
}

static void test_equal_compares_size(void **state)
{
    struct cas_digest a, b;

    (void)state;
    cas_digest_buffer("abc", 3, &a);
    b = a;
    assert_true(cas_digest_equal(&a, &b));
    b.size = 4;
    assert_false(cas_digest_equal(&a, &b));
    b = a;
    b.hash[17] ^= 1;
    assert_false(cas_digest_equal(&a, &b));
}

static void test_hasher_incremental(void **state)
{
    const size_t len = 3 * 1024 * 1024 + 12345;
    uint8_t *buf = malloc(len);
    struct cas_digest one, inc;
    struct cas_hasher *h;
    size_t off = 0, step = 1;

    (void)state;
    assert_non_null(buf);
    fill_pattern(buf, len, 42);
    cas_digest_buffer(buf, len, &one);

    h = cas_hasher_new();
    assert_non_null(h);
    while (off < len) {
        size_t n = step < len - off ? step : len - off;

        cas_hasher_update(h, buf + off, n);
        off += n;
        step = step * 3 + 7; /* odd sizes: 1, 10, 37, ... */
    }
    cas_hasher_update(h, buf, 0);
    cas_hasher_finish(h, &inc);
    assert_true(cas_digest_equal(&one, &inc));
    assert_int_equal(inc.size, (int64_t)len);

    /* "abc" fed one byte at a time */
    h = cas_hasher_new();
    assert_non_null(h);
    cas_hasher_update(h, "a", 1);
    cas_hasher_update(h, "b", 1);
    cas_hasher_update(h, "c", 1);
    cas_hasher_finish(h, &inc);
    assert_digest_hex(&inc, ABC_HEX, 3);

    /* nothing fed: the empty digest; and free without finish does not leak */
    h = cas_hasher_new();
    assert_non_null(h);
    cas_hasher_finish(h, &inc);
    assert_true(cas_digest_equal(&inc, cas_digest_empty()));
    h = cas_hasher_new();
    assert_non_null(h);
    cas_hasher_update(h, "x", 1);
    cas_hasher_free(h);
    cas_hasher_free(NULL);
    free(buf);
}

static void test_digest_fd(void **state)
{
    char path[] = "/tmp/casbox-test-digest-XXXXXX";
    const size_t lens[] = {0, 1, 4095, 4096, 1024 * 1024, 1024 * 1024 + 1, 2 * 1024 * 1024 + 333};
    uint8_t *buf = malloc(lens[6]);
    int fd;

    (void)state;
    assert_non_null(buf);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        struct cas_digest want, got;

        fill_pattern(buf, lens[i], (uint32_t)i + 1);
        assert_int_equal(ftruncate(fd, 0), 0);
        assert_int_equal(pwrite(fd, buf, lens[i], 0), (ssize_t)lens[i]);
        /* the fd's offset is wherever: hashing starts at 0 and does not move it */
        assert_int_equal(lseek(fd, 7, SEEK_SET), 7);
        cas_digest_buffer(buf, lens[i], &want);
        assert_int_equal(cas_digest_fd(fd, &got), 0);
        assert_true(cas_digest_equal(&want, &got));
        assert_int_equal(lseek(fd, 0, SEEK_CUR), 7);
    }
    assert_int_equal(cas_digest_fd(-1, &(struct cas_digest){0}), -EBADF);
    close(fd);
    unlink(path);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_uppercase),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_n),
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_equal_compares_size),
        cmocka_unit_test(test_hasher_incremental),
        cmocka_unit_test(test_digest_fd),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
