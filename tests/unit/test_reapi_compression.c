/*
 * test_reapi_compression.c - the compressors' names and the zstd streams:
 * round trips in any chunking, several frames, output that ends exactly on
 * the decoder's buffer, and the bad input a client can send (corrupt and
 * truncated frames, bombs, frames that want a huge window).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include <cmocka.h>

#include "reapi/reapi.h"

/* A growing buffer as a sink; cap bounds it (the test fails past it). */
struct sink {
    uint8_t *p;
    size_t len, cap;
    int calls;
    int fail_after; /* > 0: the n-th call fails with -ENOSPC */
};

static int sink_put(void *ctx, const void *data, size_t len)
{
    struct sink *s = ctx;

    s->calls++;
    if (s->fail_after > 0 && s->calls >= s->fail_after)
        return -ENOSPC;
    assert_true(s->len + len <= s->cap);
    memcpy(s->p + s->len, data, len);
    s->len += len;
    return 0;
}

static void sink_init(struct sink *s, size_t cap)
{
    memset(s, 0, sizeof(*s));
    s->cap = cap;
    s->p = malloc(cap ? cap : 1);
    assert_non_null(s->p);
}

/* Text-like data: words in a random order, compressible, not trivially. */
static uint8_t *sample(size_t n)
{
    static const char *const words[] = {"static ", "int ",  "casbox_", "blob",    "(void) ", "{ ",
                                        "return ", "0; ",   "}\n",     "struct ", "size_t ", "len",
                                        " = ",     "NULL;", "\n\t",    "if ("};
    uint8_t *p = malloc(n + 16);
    uint32_t x = 12345;
    size_t i = 0;

    assert_non_null(p);
    while (i < n) {
        const char *w;

        x = x * 1103515245 + 12345;
        w = words[(x >> 16) % 16];
        memcpy(p + i, w, strlen(w));
        i += strlen(w);
    }
    return p;
}

/* Compresses in with the encoder, fed in pieces of step bytes. */
static void encode(const uint8_t *in, size_t n, size_t step, struct sink *out)
{
    struct reapi_zstd_encoder *enc;

    sink_init(out, ZSTD_compressBound(n) + 1024);
    assert_int_equal(reapi_zstd_encoder_new(REAPI_ZSTD_LEVEL, (int64_t)n, &enc), 0);
    for (size_t off = 0;;) {
        size_t k = n - off < step ? n - off : step;

        assert_int_equal(reapi_zstd_encoder_feed(enc, in + off, k, off + k == n, sink_put, out), 0);
        off += k;
        if (off == n)
            break;
    }
    reapi_zstd_encoder_free(enc);
}

/* Decompresses in, fed in pieces of step bytes, bounded to max_out; the
 * first error of feed or finish. */
static int decode(const uint8_t *in, size_t n, size_t step, int64_t max_out, struct sink *out)
{
    struct reapi_zstd_decoder *dec;
    int rc = 0;

    assert_int_equal(reapi_zstd_decoder_new(max_out, &dec), 0);
    for (size_t off = 0; rc == 0 && off < n; off += step)
        rc = reapi_zstd_decoder_feed(dec, in + off, n - off < step ? n - off : step, sink_put, out);
    if (rc == 0)
        rc = reapi_zstd_decoder_finish(dec);
    if (rc == 0) {
        assert_int_equal(reapi_zstd_decoder_consumed(dec), n);
        assert_int_equal(reapi_zstd_decoder_produced(dec), out->len);
    } else {
        assert_true(reapi_zstd_decoder_error(dec)[0] != '\0');
    }
    reapi_zstd_decoder_free(dec);
    return rc;
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(reapi_compressor_name(REAPI_COMPRESSOR_IDENTITY), "identity");
    assert_string_equal(reapi_compressor_name(REAPI_COMPRESSOR_ZSTD), "zstd");
    assert_string_equal(reapi_compressor_name(REAPI_COMPRESSOR_DEFLATE), "deflate");
    assert_string_equal(reapi_compressor_name(REAPI_COMPRESSOR_BROTLI), "brotli");
    assert_null(reapi_compressor_name(4));
    assert_null(reapi_compressor_name(-1));
    assert_true(reapi_compressor_supported(REAPI_COMPRESSOR_IDENTITY));
    assert_true(reapi_compressor_supported(REAPI_COMPRESSOR_ZSTD));
    assert_false(reapi_compressor_supported(REAPI_COMPRESSOR_DEFLATE));
    assert_false(reapi_compressor_supported(REAPI_COMPRESSOR_BROTLI));
    assert_false(reapi_compressor_supported(42));
}

/* Encoder and decoder agree in any chunking, and the encoder is
 * deterministic (a resumed compressed Read relies on it). */
static void test_round_trip(void **state)
{
    const size_t sizes[] = {0, 1, 1000, 300000, 3u << 20};
    const size_t steps[] = {1, 7, 4096, 1u << 20};

    (void)state;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *data = sample(sizes[i]);
        struct sink a, b;

        encode(data, sizes[i], 1u << 20, &a);
        encode(data, sizes[i], 333, &b);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.p, b.p, a.len);
        assert_int_equal(ZSTD_getFrameContentSize(a.p, a.len), sizes[i]);
        if (sizes[i] > 1000)
            assert_true(a.len < sizes[i] / 2);
        for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
            struct sink out;

            if (steps[k] == 1 && sizes[i] > 300000)
                continue; /* byte by byte: slow, and the 300 kB case covers it */
            sink_init(&out, sizes[i]);
            assert_int_equal(decode(a.p, a.len, steps[k], (int64_t)sizes[i], &out), 0);
            assert_int_equal(out.len, sizes[i]);
            assert_memory_equal(out.p, data, sizes[i]);
            free(out.p);
        }
        free(a.p);
        free(b.p);
        free(data);
    }
}

/* Output in whole multiples of the decoder's buffer: the frame ends exactly
 * as the buffer fills (a drain call after it must not look like a new
 * frame); and several frames one after another, one of them empty. */
static void test_frames(void **state)
{
    size_t n = 8 * ZSTD_DStreamOutSize();
    uint8_t *data = sample(n);
    uint8_t *joined = malloc(3 * ZSTD_compressBound(n));
    size_t len = 0;
    struct sink out;

    (void)state;
    for (int level = 1; level <= 19; level += 9) {
        size_t c = ZSTD_compress(joined, ZSTD_compressBound(n), data, n, level);

        assert_false(ZSTD_isError(c));
        sink_init(&out, n);
        assert_int_equal(decode(joined, c, c, (int64_t)n, &out), 0);
        assert_memory_equal(out.p, data, n);
        free(out.p);
    }
    len = ZSTD_compress(joined, ZSTD_compressBound(n), data, n / 2, 3);
    len += ZSTD_compress(joined + len, 64, data, 0, 3);
    len += ZSTD_compress(joined + len, ZSTD_compressBound(n), data + n / 2, n - n / 2, 3);
    sink_init(&out, n);
    assert_int_equal(decode(joined, len, 1000, (int64_t)n, &out), 0);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.p, data, n);
    free(out.p);
    /* No frame at all is no data. */
    sink_init(&out, 0);
    assert_int_equal(decode(joined, 0, 1, 0, &out), 0);
    assert_int_equal(out.len, 0);
    free(out.p);
    free(joined);
    free(data);
}

static void test_corrupt(void **state)
{
    uint8_t *data = sample(200000);
    struct reapi_zstd_decoder *dec;
    struct sink c, out;

    (void)state;
    encode(data, 200000, 1u << 20, &c);
    /* Truncated: the input stops inside the frame. */
    sink_init(&out, 200000);
    assert_int_equal(decode(c.p, c.len - 5, 4096, 200000, &out), -EBADMSG);
    free(out.p);
    /* The same for data that does not compress (raw blocks). */
    for (size_t i = 0; i < 200000; i++)
        data[i] = (uint8_t)(i * 2654435761u >> 13);
    free(c.p);
    encode(data, 200000, 1u << 20, &c);
    for (size_t cut = 1; cut < 8; cut++) {
        sink_init(&out, 200000);
        assert_int_equal(decode(c.p, c.len - cut, 4096, 200000, &out), -EBADMSG);
        free(out.p);
    }
    free(c.p);
    encode(data, 200000, 1u << 20, &c);
    /* Not zstd at all. */
    sink_init(&out, 200000);
    assert_int_equal(decode(data, 1000, 4096, 200000, &out), -EBADMSG);
    free(out.p);
    /* Garbage after a whole frame. */
    memcpy(data, c.p, c.len);
    memcpy(data + c.len, "garbage!", 8);
    sink_init(&out, 200000);
    assert_int_equal(decode(data, c.len + 8, 4096, 200000, &out), -EBADMSG);
    free(out.p);
    /* Bytes flipped in the middle of the sequences: an error, and it sticks;
     * reset clears it. (Flipped literals of a frame without a checksum decode
     * to other bytes without an error: the digest check catches those.) */
    for (size_t i = c.len / 2; i < c.len / 2 + 32; i++)
        c.p[i] ^= 0x5a;
    sink_init(&out, 200000);
    assert_int_equal(reapi_zstd_decoder_new(200000, &dec), 0);
    assert_int_equal(reapi_zstd_decoder_feed(dec, c.p, c.len, sink_put, &out), -EBADMSG);
    assert_int_equal(reapi_zstd_decoder_feed(dec, c.p, 1, sink_put, &out), -EBADMSG);
    assert_int_equal(reapi_zstd_decoder_finish(dec), -EBADMSG);
    assert_non_null(strstr(reapi_zstd_decoder_error(dec), "not valid zstd"));
    reapi_zstd_decoder_reset(dec);
    assert_int_equal(reapi_zstd_decoder_finish(dec), 0);
    assert_int_equal(reapi_zstd_decoder_consumed(dec), 0);
    reapi_zstd_decoder_free(dec);
    free(out.p);
    free(c.p);
    free(data);
}

/* 256 MiB of zeros in a few kB, for a digest of 1000 bytes: refused after at
 * most 1000 bytes of output; the sink sees no more. */
static void test_bomb(void **state)
{
    size_t n = 256u << 20;
    uint8_t *zeros = calloc(1, n);
    uint8_t *bomb = malloc(ZSTD_compressBound(n));
    struct reapi_zstd_decoder *dec;
    struct sink out;
    size_t len;

    (void)state;
    assert_non_null(zeros);
    assert_non_null(bomb);
    len = ZSTD_compress(bomb, ZSTD_compressBound(n), zeros, n, 1);
    free(zeros);
    assert_true(len < 100000);
    sink_init(&out, 1000);
    assert_int_equal(decode(bomb, len, len, 1000, &out), -EFBIG);
    assert_true(out.len <= 1000);
    free(out.p);
    /* The same through the one-shot buffer decoder. */
    assert_int_equal(reapi_zstd_decoder_new(1, &dec), 0);
    out.p = malloc(1000);
    assert_int_equal(reapi_zstd_decoder_buffer(dec, bomb, len, out.p, 1000), -EFBIG);
    assert_non_null(strstr(reapi_zstd_decoder_error(dec), "more than the 1000 bytes"));
    free(out.p);
    reapi_zstd_decoder_free(dec);
    free(bomb);
}

/* A frame that does not say its size and asks for a 128 MiB window: refused
 * before the decoder allocates it. */
static void test_window(void **state)
{
    uint8_t *data = sample(100000);
    size_t cap = ZSTD_compressBound(100000);
    uint8_t *frame = malloc(cap);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    ZSTD_inBuffer ib = {data, 100000, 0};
    ZSTD_outBuffer ob = {frame, cap, 0};
    struct sink out;

    (void)state;
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, 27)));
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0)));
    /* Streamed: given all the input at once with e_end, zstd would shrink
     * the window to fit it. */
    assert_false(ZSTD_isError(ZSTD_compressStream2(cctx, &ob, &ib, ZSTD_e_continue)));
    assert_int_equal(ZSTD_compressStream2(cctx, &ob, &ib, ZSTD_e_end), 0);
    ZSTD_freeCCtx(cctx);
    sink_init(&out, 100000);
    assert_int_equal(decode(frame, ob.pos, ob.pos, 100000, &out), -EBADMSG);
    assert_int_equal(out.len, 0);
    free(out.p);
    free(frame);
    free(data);
}

static void test_buffer(void **state)
{
    uint8_t *data = sample(50000);
    struct reapi_zstd_decoder *dec;
    uint8_t *plain = malloc(50000);
    struct sink c;

    (void)state;
    encode(data, 50000, 50000, &c);
    assert_int_equal(reapi_zstd_decoder_new(1, &dec), 0); /* buffer sets the bound */
    assert_int_equal(reapi_zstd_decoder_buffer(dec, c.p, c.len, plain, 50000), 0);
    assert_memory_equal(plain, data, 50000);
    assert_int_equal(reapi_zstd_decoder_buffer(dec, c.p, c.len, plain, 49999), -EFBIG);
    assert_int_equal(reapi_zstd_decoder_buffer(dec, c.p, c.len, plain, 50000), 0);
    /* Fewer bytes than the digest says. */
    free(c.p);
    encode(data, 40000, 40000, &c);
    assert_int_equal(reapi_zstd_decoder_buffer(dec, c.p, c.len, plain, 50000), -ENODATA);
    assert_non_null(strstr(reapi_zstd_decoder_error(dec), "40000 bytes"));
    /* The compressed size a client may send covers incompressible data. */
    assert_true(reapi_zstd_max_compressed(0) > 0);
    assert_true(reapi_zstd_max_compressed(1 << 20) >= (int64_t)ZSTD_compressBound(1 << 20));
    reapi_zstd_decoder_free(dec);
    free(plain);
    free(c.p);
    free(data);
}

/* A sink error stops the stream and is returned (e.g. ENOSPC from the
 * writer); an encoder whose input differs from the size it was given fails. */
static void test_sink_errors(void **state)
{
    uint8_t *data = sample(1u << 20);
    struct reapi_zstd_encoder *enc;
    struct sink c, out;
    void *packed;
    size_t len;

    (void)state;
    encode(data, 1u << 20, 1u << 20, &c);
    sink_init(&out, 1u << 20);
    out.fail_after = 2;
    assert_int_equal(decode(c.p, c.len, c.len, 1 << 20, &out), -ENOSPC);
    free(out.p);
    assert_int_equal(reapi_zstd_encoder_new(1, 100, &enc), 0);
    sink_init(&out, 1000);
    assert_int_equal(reapi_zstd_encoder_feed(enc, data, 50, false, sink_put, &out), 0);
    assert_int_equal(reapi_zstd_encoder_feed(enc, data, 10, true, sink_put, &out), -EIO);
    reapi_zstd_encoder_free(enc);
    free(out.p);
    assert_int_equal(reapi_zstd_compress_buffer(data, 1u << 20, REAPI_ZSTD_LEVEL, &packed, &len),
                     0);
    assert_true(len < (1u << 19));
    free(packed);
    free(c.p);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),  cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_frames), cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_bomb),   cmocka_unit_test(test_window),
        cmocka_unit_test(test_buffer), cmocka_unit_test(test_sink_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
