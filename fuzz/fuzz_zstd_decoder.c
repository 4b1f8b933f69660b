/*
 * fuzz_zstd_decoder.c - feeds the bytes a client sends as a zstd-compressed
 * blob (a compressed-blobs/zstd ByteStream Write, compressed inline data in
 * BatchUpdateBlobs) to reapi_zstd_decoder (reapi/compression.c). The first
 * two bytes choose the declared size (0 .. 65535 bytes, what the digest
 * says) and the piece size the stream is cut into; the rest is the stream.
 * The decoder must never give more than the declared size to its sink,
 * must count what it consumed and produced, and must end every error with
 * a message; the one-shot decoder of the batch calls must agree.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reapi/reapi.h"

struct sink {
    size_t got, max;
};

static int sink_count(void *ctx, const void *data, size_t len)
{
    struct sink *s = ctx;

    (void)data;
    s->got += len;
    assert(s->got <= s->max);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reapi_zstd_decoder *dec;
    struct sink s = {0, 0};
    size_t piece, off;
    uint8_t *out;
    int rc = 0, rc2;

    if (size < 2)
        return 0;
    s.max = (size_t)data[0] << 8 | data[1];
    piece = 1 + (data[1] % 64) * 37;
    data += 2;
    size -= 2;
    if (reapi_zstd_decoder_new((int64_t)s.max, &dec) != 0)
        return 0;
    for (off = 0; rc == 0 && off < size; off += piece)
        rc = reapi_zstd_decoder_feed(dec, data + off, size - off < piece ? size - off : piece,
                                     sink_count, &s);
    if (rc == 0)
        rc = reapi_zstd_decoder_finish(dec);
    assert(rc == 0 || rc == -EBADMSG || rc == -EFBIG);
    assert(rc == 0 || reapi_zstd_decoder_error(dec)[0] != '\0');
    assert(reapi_zstd_decoder_produced(dec) == (int64_t)s.got);
    if (rc == 0)
        assert(reapi_zstd_decoder_consumed(dec) == (int64_t)size);
    /* The batch calls' decoder: exactly the declared size, or an error. */
    out = malloc(s.max + 1);
    if (out != NULL) {
        rc2 = reapi_zstd_decoder_buffer(dec, data, size, out, s.max);
        assert(rc2 == 0 || rc2 == -EBADMSG || rc2 == -EFBIG || rc2 == -ENODATA);
        if (rc == 0)
            assert(rc2 == 0 ? s.got == s.max : s.got != s.max);
        free(out);
    }
    reapi_zstd_decoder_free(dec);
    return 0;
}
