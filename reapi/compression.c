/*
 * compression.c - the REAPI's compressors: their names, and zstd streams
 * (libzstd) in both directions.
 *
 * The CAS keeps blobs uncompressed: staging hardlinks blob files into an
 * action's input tree and FUSE serves them with reads at any offset, both of
 * which need the plain bytes in a file. Compression is only on the wire:
 * the decoder here turns a client's compressed upload into the bytes the
 * verified writer hashes and stores, and the encoder compresses a stored blob
 * as it is sent.
 *
 * Decompression is bounded, since a few bytes of zstd can claim gigabytes:
 * the output may not pass the size the blob's digest declares (the caller's
 * max_out; checked before every piece is passed on, so no more than that
 * reaches the disk), and the window a frame asks for, which is what the
 * decoder allocates, may not pass REAPI_ZSTD_WINDOW_LOG_MAX.
 */
#include "reapi.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

/* 16 MiB: what zstd's levels up to 19 use on large inputs (--ultra levels and
 * --long want up to 128 MiB). A decoder allocates about its frame's window
 * when the frame does not say its size, and casboxd runs one per upload in
 * flight (server.transfer_threads), so this is what bounds their memory. */
#define REAPI_ZSTD_WINDOW_LOG_MAX 24

static const char *const compressor_names[] = {
    [REAPI_COMPRESSOR_IDENTITY] = "identity",
    [REAPI_COMPRESSOR_ZSTD] = "zstd",
    [REAPI_COMPRESSOR_DEFLATE] = "deflate",
    [REAPI_COMPRESSOR_BROTLI] = "brotli",
};

const char *reapi_compressor_name(int64_t value)
{
    if (value < 0 || value >= (int64_t)(sizeof(compressor_names) / sizeof(compressor_names[0])))
        return NULL;
    return compressor_names[value];
}

bool reapi_compressor_supported(int64_t value)
{
    return value == REAPI_COMPRESSOR_IDENTITY || value == REAPI_COMPRESSOR_ZSTD;
}

/* --- decoding --- */

struct reapi_zstd_decoder {
    ZSTD_DCtx *dctx;
    int64_t max_out;
    int64_t consumed, produced;
    size_t pending; /* the last ZSTD_decompressStream hint: 0 between frames */
    int error;      /* sticky */
    char message[160];
    uint8_t *buf; /* output, ZSTD_DStreamOutSize() bytes */
    size_t buf_size;
};

int reapi_zstd_decoder_new(int64_t max_out, struct reapi_zstd_decoder **out)
{
    struct reapi_zstd_decoder *dec = calloc(1, sizeof(*dec));

    *out = NULL;
    if (dec == NULL)
        return -ENOMEM;
    dec->max_out = max_out;
    dec->buf_size = ZSTD_DStreamOutSize();
    dec->buf = malloc(dec->buf_size);
    dec->dctx = ZSTD_createDCtx();
    if (dec->buf == NULL || dec->dctx == NULL ||
        ZSTD_isError(
            ZSTD_DCtx_setParameter(dec->dctx, ZSTD_d_windowLogMax, REAPI_ZSTD_WINDOW_LOG_MAX))) {
        reapi_zstd_decoder_free(dec);
        return -ENOMEM;
    }
    *out = dec;
    return 0;
}

void reapi_zstd_decoder_free(struct reapi_zstd_decoder *dec)
{
    if (dec == NULL)
        return;
    ZSTD_freeDCtx(dec->dctx);
    free(dec->buf);
    free(dec);
}

void reapi_zstd_decoder_reset(struct reapi_zstd_decoder *dec)
{
    ZSTD_DCtx_reset(dec->dctx, ZSTD_reset_session_only);
    dec->consumed = dec->produced = 0;
    dec->pending = 0;
    dec->error = 0;
    dec->message[0] = '\0';
}

static int decoder_fail(struct reapi_zstd_decoder *dec, int error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int decoder_fail(struct reapi_zstd_decoder *dec, int error, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(dec->message, sizeof(dec->message), fmt, ap);
    va_end(ap);
    dec->error = error;
    return error;
}

/* The error of a failed ZSTD_decompressStream, in words. */
static int decoder_zstd_error(struct reapi_zstd_decoder *dec, size_t r)
{
    if (ZSTD_getErrorCode(r) == ZSTD_error_frameParameter_windowTooLarge)
        return decoder_fail(dec, -EBADMSG,
                            "zstd frame needs a window larger than the %u MiB this server decodes "
                            "with (compress at a level up to 19, without --long)",
                            (1u << REAPI_ZSTD_WINDOW_LOG_MAX) >> 20);
    return decoder_fail(dec, -EBADMSG, "not valid zstd data at compressed byte %" PRId64 ": %s",
                        dec->consumed, ZSTD_getErrorName(r));
}

int reapi_zstd_decoder_feed(struct reapi_zstd_decoder *dec, const void *in, size_t len,
                            reapi_sink_fn sink, void *ctx)
{
    ZSTD_inBuffer ib = {in, len, 0};
    ZSTD_outBuffer ob;
    int rc;

    if (dec->error != 0)
        return dec->error;
    do {
        size_t before = ib.pos;
        size_t r;

        ob = (ZSTD_outBuffer){dec->buf, dec->buf_size, 0};
        r = ZSTD_decompressStream(dec->dctx, &ob, &ib);
        dec->consumed += (int64_t)(ib.pos - before);
        if (ZSTD_isError(r))
            return decoder_zstd_error(dec, r);
        /* 0: a frame ended and all its output is out. A call that moved
         * nothing (only draining) may answer the next frame's header size:
         * that is no frame in progress. */
        if (ib.pos != before || ob.pos != 0)
            dec->pending = r;
        if (ob.pos == 0)
            continue;
        if ((int64_t)ob.pos > dec->max_out - dec->produced)
            return decoder_fail(dec, -EFBIG,
                                "zstd data decompresses to more than the %" PRId64
                                " bytes the digest declares",
                                dec->max_out);
        rc = sink(ctx, dec->buf, ob.pos);
        if (rc < 0)
            return decoder_fail(dec, rc, "storing the decompressed data failed");
        dec->produced += (int64_t)ob.pos;
        /* A full output buffer may leave more output inside zstd: go on
         * until it is drained, even when the input is used up. */
    } while (ib.pos < ib.size || ob.pos == ob.size);
    return 0;
}

int reapi_zstd_decoder_finish(struct reapi_zstd_decoder *dec)
{
    if (dec->error != 0)
        return dec->error;
    if (dec->pending != 0)
        return decoder_fail(dec, -EBADMSG,
                            "zstd data ends inside a frame (after %" PRId64
                            " compressed bytes): truncated",
                            dec->consumed);
    return 0;
}

int64_t reapi_zstd_decoder_consumed(const struct reapi_zstd_decoder *dec)
{
    return dec->consumed;
}

int64_t reapi_zstd_decoder_produced(const struct reapi_zstd_decoder *dec)
{
    return dec->produced;
}

const char *reapi_zstd_decoder_error(const struct reapi_zstd_decoder *dec)
{
    return dec->message;
}

struct decoder_buffer {
    uint8_t *p;
    size_t used;
};

static int decoder_buffer_sink(void *ctx, const void *data, size_t len)
{
    struct decoder_buffer *b = ctx;

    memcpy(b->p + b->used, data, len); /* bounded by the decoder's max_out */
    b->used += len;
    return 0;
}

int reapi_zstd_decoder_buffer(struct reapi_zstd_decoder *dec, const void *in, size_t len, void *out,
                              size_t size)
{
    struct decoder_buffer b = {out, 0};
    int rc;

    reapi_zstd_decoder_reset(dec);
    dec->max_out = (int64_t)size;
    rc = reapi_zstd_decoder_feed(dec, in, len, decoder_buffer_sink, &b);
    if (rc == 0)
        rc = reapi_zstd_decoder_finish(dec);
    if (rc == 0 && b.used != size)
        rc = decoder_fail(dec, -ENODATA,
                          "zstd data decompresses to %zu bytes, the digest declares %zu", b.used,
                          size);
    return rc;
}

int64_t reapi_zstd_max_compressed(int64_t size)
{
    /* ZSTD_compressBound for one frame, plus 1/128 and 64 KiB for the
     * headers of more frames and skippable frames. */
    return (int64_t)ZSTD_compressBound((size_t)size) + size / 128 + 65536;
}

/* --- encoding --- */

struct reapi_zstd_encoder {
    ZSTD_CCtx *cctx;
    uint8_t *buf; /* output, ZSTD_CStreamOutSize() bytes */
    size_t buf_size;
};

int reapi_zstd_encoder_new(int level, int64_t size, struct reapi_zstd_encoder **out)
{
    struct reapi_zstd_encoder *enc = calloc(1, sizeof(*enc));

    *out = NULL;
    if (enc == NULL)
        return -ENOMEM;
    enc->buf_size = ZSTD_CStreamOutSize();
    enc->buf = malloc(enc->buf_size);
    enc->cctx = ZSTD_createCCtx();
    if (enc->buf == NULL || enc->cctx == NULL ||
        ZSTD_isError(ZSTD_CCtx_setParameter(enc->cctx, ZSTD_c_compressionLevel, level)) ||
        ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(enc->cctx, (unsigned long long)size))) {
        reapi_zstd_encoder_free(enc);
        return -ENOMEM;
    }
    *out = enc;
    return 0;
}

void reapi_zstd_encoder_free(struct reapi_zstd_encoder *enc)
{
    if (enc == NULL)
        return;
    ZSTD_freeCCtx(enc->cctx);
    free(enc->buf);
    free(enc);
}

int reapi_zstd_encoder_feed(struct reapi_zstd_encoder *enc, const void *in, size_t len, bool end,
                            reapi_sink_fn sink, void *ctx)
{
    ZSTD_inBuffer ib = {in, len, 0};
    ZSTD_EndDirective mode = end ? ZSTD_e_end : ZSTD_e_continue;
    size_t left;
    int rc;

    do {
        ZSTD_outBuffer ob = {enc->buf, enc->buf_size, 0};

        left = ZSTD_compressStream2(enc->cctx, &ob, &ib, mode);
        if (ZSTD_isError(left))
            return -EIO;
        if (ob.pos > 0) {
            rc = sink(ctx, enc->buf, ob.pos);
            if (rc < 0)
                return rc;
        }
        /* continue: until zstd has taken all the input; end: until the
         * frame is flushed (it returns 0). */
    } while (end ? left != 0 : ib.pos < ib.size);
    return 0;
}

int reapi_zstd_compress_buffer(const void *in, size_t len, int level, void **out, size_t *out_len)
{
    size_t cap = ZSTD_compressBound(len);
    void *buf = malloc(cap ? cap : 1);
    size_t n;

    if (buf == NULL)
        return -ENOMEM;
    n = ZSTD_compress(buf, cap, in, len, level);
    if (ZSTD_isError(n)) {
        free(buf);
        return -EIO;
    }
    *out = buf;
    *out_len = n;
    return 0;
}
