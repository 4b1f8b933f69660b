/*
 * reapi.h - the REAPI as the other libraries see it: a gRPC status being
 * built up by a request handler (with the missing blobs the client must
 * re-upload), digests between the wire and the store, ByteStream resource
 * names, the in-place WriteRequest decoder, and the generated protobuf-c
 * types under one set of short names.
 *
 * Status (status.c): the code, a one-line message naming what was wrong,
 * and the blobs found missing (sent to the client as a
 * google.rpc.PreconditionFailure, one MISSING violation per blob, as the
 * REAPI requires so that Bazel re-uploads them).
 * Values (reapi.c): digests and resource names, parsed strictly.
 * WriteRequest (write_request.c): google.bytestream.WriteRequest decoded
 * straight from the grpc byte buffer it arrived in, its data left in grpc's
 * slices.
 * FindMissingBlobs (find_missing.c): the request decoded in place, in two
 * passes and in chunks, and the response encoded by hand: 100,000 digests in
 * bounded memory, without an allocation each.
 * Unknown fields (unknown_fields.c): the REAPI fields newer than Debian's
 * protos, read from and written to a message's unknown fields; API 2.3's
 * digest_function in requests checked with them (digest_function.c).
 * Compression (compression.c): the compressors' names and zstd streams in
 * both directions, decompression bounded by the size the digest declares.
 */
#ifndef CASBOX_REAPI_H
#define CASBOX_REAPI_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/status.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "cas/cas.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "google/longrunning/operations.pb-c.h"
#include "google/rpc/status.pb-c.h"

/* --- the generated types' short names ---
 *
 * One name per protobuf message, for every library that includes this header
 * (exec, fuse, rpc, daemon, cmd, bench, the tests): the message's own name in
 * the .proto, without its package, nested messages joined by '_'
 * (BatchUpdateBlobsRequest.Request is BatchUpdateBlobsRequest_Request). Code
 * then reads like the REAPI specification and like its own comments ("the
 * Directory", "an ActionResult"), and a Digest has one name instead of four.
 * None of these names is used by our code, libc, grpc, protobuf-c, libfuse,
 * OpenSSL or cmocka for anything else; C keeps typedef names apart from
 * struct tags, so `Action` and `struct action` do not clash.
 *
 * Messages whose bare names would be ambiguous keep their generated names:
 * google.rpc.Status (beside struct reapi_status and grpc's status codes),
 * ByteStream's ReadRequest and WriteRequest (beside struct write_request),
 * and the well-known types (Timestamp, Duration, Any). Other REAPI messages
 * get their short name here, by the same rule, when code needs one.
 * cas/ cannot include this header (reapi depends on cas): it spells the
 * generated names out. */

/* build.bazel.remote.execution.v2: the data */
typedef Build__Bazel__Remote__Execution__V2__Digest Digest;
typedef Build__Bazel__Remote__Execution__V2__Action Action;
typedef Build__Bazel__Remote__Execution__V2__Command Command;
typedef Build__Bazel__Remote__Execution__V2__Platform Platform;
typedef Build__Bazel__Remote__Execution__V2__Directory Directory;
typedef Build__Bazel__Remote__Execution__V2__FileNode FileNode;
typedef Build__Bazel__Remote__Execution__V2__DirectoryNode DirectoryNode;
typedef Build__Bazel__Remote__Execution__V2__SymlinkNode SymlinkNode;
typedef Build__Bazel__Remote__Execution__V2__Tree Tree;
typedef Build__Bazel__Remote__Execution__V2__ActionResult ActionResult;
typedef Build__Bazel__Remote__Execution__V2__OutputFile OutputFile;
typedef Build__Bazel__Remote__Execution__V2__OutputDirectory OutputDirectory;
typedef Build__Bazel__Remote__Execution__V2__OutputSymlink OutputSymlink;
typedef Build__Bazel__Remote__Execution__V2__ExecutedActionMetadata ExecutedActionMetadata;

/* ContentAddressableStorage */
typedef Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest FindMissingBlobsRequest;
typedef Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse FindMissingBlobsResponse;
typedef Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest BatchUpdateBlobsRequest;
typedef Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request
    BatchUpdateBlobsRequest_Request;
typedef Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse BatchUpdateBlobsResponse;
typedef Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse__Response
    BatchUpdateBlobsResponse_Response;
typedef Build__Bazel__Remote__Execution__V2__BatchReadBlobsRequest BatchReadBlobsRequest;
typedef Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse BatchReadBlobsResponse;
typedef Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse__Response
    BatchReadBlobsResponse_Response;
typedef Build__Bazel__Remote__Execution__V2__GetTreeRequest GetTreeRequest;
typedef Build__Bazel__Remote__Execution__V2__GetTreeResponse GetTreeResponse;

/* Execution, and google.longrunning */
typedef Build__Bazel__Remote__Execution__V2__ExecuteRequest ExecuteRequest;
typedef Build__Bazel__Remote__Execution__V2__WaitExecutionRequest WaitExecutionRequest;
typedef Build__Bazel__Remote__Execution__V2__ExecuteResponse ExecuteResponse;
typedef Build__Bazel__Remote__Execution__V2__ExecuteOperationMetadata ExecuteOperationMetadata;
typedef Google__Longrunning__Operation Operation;

/* --- statuses (status.c) --- */

struct reapi_status {
    grpc_status_code code; /* GRPC_STATUS_OK until set */
    char message[1024];
    struct cas_digest *missing;
    size_t n_missing;
    size_t missing_cap;
};

void reapi_status_init(struct reapi_status *st);
void reapi_status_free(struct reapi_status *st);
/* Sets code and message; the first error set wins (later calls are ignored). */
void reapi_status_set(struct reapi_status *st, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Adds a missing blob (deduplicated) and sets FAILED_PRECONDITION. */
int reapi_status_add_missing(struct reapi_status *st, const struct cas_digest *d);
static inline bool reapi_status_ok(const struct reapi_status *st)
{
    return st->code == GRPC_STATUS_OK;
}
/* Builds a google.rpc.Status (with details) for the wire; free with
 * reapi_status_proto_free. */
Google__Rpc__Status *reapi_status_to_proto(const struct reapi_status *st);
void reapi_status_proto_free(Google__Rpc__Status *s);
/* Fills a google.rpc.Status for a plain code and message (no details) into
 * caller-owned storage; message must outlive the use. */
void reapi_status_fill_simple(Google__Rpc__Status *s, grpc_status_code code, char *message);

/* --- digests and resource names (reapi.c) --- */

/* A proto Digest with the storage for its hash string. */
struct reapi_digest_buf {
    Digest pd;
    char hex[CAS_HASH_HEX + 1];
};

/* Checks and converts a wire digest. On a malformed one sets INVALID_ARGUMENT
 * in st naming field and returns -EINVAL. A NULL pd is invalid too. */
int reapi_digest_from_proto(const Digest *pd, struct cas_digest *out, struct reapi_status *st,
                            const char *field);
/* Fills buf so that &buf->pd is a wire digest equal to d. */
void reapi_digest_to_proto(const struct cas_digest *d, struct reapi_digest_buf *buf);
/* A malloc'd wire digest (with its hash string); free with reapi_digest_free. */
Digest *reapi_digest_new(const struct cas_digest *d);
void reapi_digest_free(Digest *pd);

/* Compressor.Value (API 2.1; not in Debian's protos): the wire numbers. */
enum reapi_compressor {
    REAPI_COMPRESSOR_IDENTITY = 0,
    REAPI_COMPRESSOR_ZSTD = 1,
    REAPI_COMPRESSOR_DEFLATE = 2,
    REAPI_COMPRESSOR_BROTLI = 3,
};

/* ByteStream resource names. Parsing never allocates: instance points into
 * name and instance_len is its length (0 for the empty instance). */
struct reapi_resource {
    const char *instance;
    size_t instance_len;
    const char *upload_id; /* uploads only */
    size_t upload_id_len;
    /* IDENTITY for blobs/, else the compressed-blobs/{compressor} segment's */
    enum reapi_compressor compressor;
    /* The name up to the end of the size segment (what names the upload:
     * optional metadata after it does not). */
    size_t key_len;
    struct cas_digest digest;
    /* -ENOTSUP / -EPROTONOSUPPORT: the compressor or digest function segment
     * that is not served (points into name). */
    const char *unsupported;
    size_t unsupported_len;
};

/* "{instance}/blobs/{digest_function/}{hash}/{size}[/...]" or
 * "{instance}/compressed-blobs/{compressor}/{digest_function/}{hash}/{size}[/...]".
 * The digest function segment (API 2.3) may be omitted; "sha256" is the only
 * one served. The compressor is "identity" or "zstd". Returns 0; -EINVAL
 * when the name is malformed; -ENOTSUP for a compressor not served
 * ("deflate", "brotli", anything else) and -EPROTONOSUPPORT for a digest
 * function not served ("blake3", ...), both with out->unsupported set. */
int reapi_resource_parse_read(const char *name, struct reapi_resource *out);
/* "{instance}/uploads/{uuid}/blobs/..." or
 * "{instance}/uploads/{uuid}/compressed-blobs/...", the rest as for reads. */
int reapi_resource_parse_write(const char *name, struct reapi_resource *out);
/* Sets INVALID_ARGUMENT in st for a parse error rc of name: what the name
 * should look like, or which compressor or digest function is not served. */
void reapi_resource_status(struct reapi_status *st, const char *name, int rc,
                           const struct reapi_resource *res, bool upload);
/* Parses a non-negative decimal without sign; -EINVAL on anything else. */
int reapi_parse_size(const char *s, size_t len, int64_t *out);

/* --- the WriteRequest decoder (write_request.c) --- */

/* One piece of the data field, pointing into a slice of the buffer. */
struct write_request_span {
    const uint8_t *data;
    size_t len;
};

struct write_request {
    char *resource_name; /* NUL-terminated copy; "" when absent */
    int64_t write_offset;
    bool finish_write;
    size_t data_len;                  /* total of the spans */
    struct write_request_span *spans; /* the data field, in order */
    size_t n_spans;
    /* private: what the spans point into */
    grpc_byte_buffer_reader reader;
    bool reader_live;
    grpc_slice *slices;
    size_t n_slices, cap_slices;
};

/* Decodes bb (which must outlive r) into r, as protobuf would: the last
 * occurrence of a field wins, unknown fields are skipped. Returns 0, -EINVAL
 * when it is not a valid WriteRequest, -ENOMEM. Always call
 * write_request_free afterwards. */
int write_request_decode(grpc_byte_buffer *bb, struct write_request *r);
void write_request_free(struct write_request *r);

/* --- FindMissingBlobs, by hand (find_missing.c) --- */

/* A piece of the request as received (a grpc slice). */
struct find_missing_span {
    const uint8_t *data;
    size_t len;
};

struct find_missing_request {
    char *instance_name; /* NUL-terminated copy; "" when absent */
    /* The last digest_function given (0 when none); malformed: the field is
     * there but is not an enum value. */
    uint64_t digest_function;
    bool has_digest_function, digest_function_malformed;
    size_t n_digests; /* blob_digests given */
    /* The first digest that is not a SHA-256 digest, as protobuf-c would
     * have given its fields (hash cut at a NUL), for the error message
     * (found by the second pass). */
    bool has_bad;
    size_t bad_index;
    char *bad_hash;
    int64_t bad_size;
    /* private: the request's bytes, which must outlive r */
    const struct find_missing_span *spans;
    size_t n_spans;
};

/* Digests handed over by find_missing_request_digests at a time. */
#define FIND_MISSING_CHUNK 1024

/* Checks the top level of a FindMissingBlobsRequest given as n_spans spans
 * and reads all but its digests (counted), as protobuf would (see
 * find_missing.c). 0; -EINVAL when it is not a valid message; -ENOMEM. Call
 * find_missing_request_free afterwards, whatever it returned. */
int find_missing_request_scan(const struct find_missing_span *spans, size_t n_spans,
                              struct find_missing_request *r);
/* Receives the next n (at most FIND_MISSING_CHUNK) digests of the request,
 * in order; a negative return stops the pass with it. */
typedef int (*find_missing_digests_fn)(void *ctx, const struct cas_digest *d, size_t n);
/* The second pass over a scanned request: checks and parses every Digest and
 * gives them to fn (may be NULL: only check). 0; -EINVAL when a digest is
 * not a SHA-256 digest (r's bad_* name the first); -EBADMSG when a Digest
 * message is malformed (the request is not parseable); -ENOMEM; fn's error.
 * On an error the chunks given so far are to be thrown away. */
int find_missing_request_digests(struct find_missing_request *r, find_missing_digests_fn fn,
                                 void *ctx);
void find_missing_request_free(struct find_missing_request *r);

/* A FindMissingBlobsResponse being written. */
struct find_missing_response {
    uint8_t *buf; /* malloc'd; the encoded message is buf[0, len) */
    size_t len, cap;
};

/* Appends digests[i] for each missing[i], in order. 0 or -ENOMEM. */
int find_missing_response_add(struct find_missing_response *resp, const struct cas_digest *digests,
                              const bool *missing, size_t n);
void find_missing_response_free(struct find_missing_response *resp);

/* --- fields newer than Debian's protos (unknown_fields.c) ---
 *
 * Debian 12's generated protobuf-c types are the v2.2-era REAPI; the fields
 * added since (compressors, digest_function in requests) are unknown to them.
 * protobuf-c keeps a decoded message's unknown fields (base.unknown_fields)
 * and packs the unknown fields a message is given, so these read and write
 * them by field number; the numbers are wire facts of the REAPI. */

/* CacheCapabilities */
#define REAPI_FIELD_CACHE_CAPABILITIES_SUPPORTED_COMPRESSORS              6
#define REAPI_FIELD_CACHE_CAPABILITIES_SUPPORTED_BATCH_UPDATE_COMPRESSORS 7
/* BatchUpdateBlobsRequest.Request */
#define REAPI_FIELD_BATCH_UPDATE_REQUEST_COMPRESSOR 3
/* BatchReadBlobsRequest */
#define REAPI_FIELD_BATCH_READ_ACCEPTABLE_COMPRESSORS 3
/* BatchReadBlobsResponse.Response */
#define REAPI_FIELD_BATCH_READ_RESPONSE_COMPRESSOR 4

/* The last value of varint field number in m's unknown fields (packed or
 * not, as protobuf reads a scalar): 1 with *value set, 0 when absent,
 * -EINVAL when the field is there but malformed. */
int reapi_unknown_varint(const ProtobufCMessage *m, uint32_t number, uint64_t *value);
/* Every value of repeated varint field number (packed and unpacked
 * occurrences, in order), at most max: the count, or -EINVAL. */
int reapi_unknown_varints(const ProtobufCMessage *m, uint32_t number, uint64_t *values, size_t max);

/* Unknown fields for a message being built: the fields and their bytes live
 * here, so the message must be packed before this goes away. */
#define REAPI_UNKNOWN_MAX_FIELDS 4
#define REAPI_UNKNOWN_MAX_BYTES  64
struct reapi_unknown_out {
    ProtobufCMessageUnknownField fields[REAPI_UNKNOWN_MAX_FIELDS];
    uint8_t bytes[REAPI_UNKNOWN_MAX_BYTES];
    size_t n_fields, n_bytes;
};

void reapi_unknown_out_init(struct reapi_unknown_out *u);
/* Adds varint field number = value; -ENOSPC when u is full. */
int reapi_unknown_out_varint(struct reapi_unknown_out *u, uint32_t number, uint64_t value);
/* Adds repeated varint field number, packed (proto3's encoding); -ENOSPC. */
int reapi_unknown_out_packed(struct reapi_unknown_out *u, uint32_t number, const uint64_t *values,
                             size_t n);
/* Makes u's fields m's unknown fields (replacing any). */
void reapi_unknown_out_attach(struct reapi_unknown_out *u, ProtobufCMessage *m);

/* --- digest_function (digest_function.c) ---
 *
 * DigestFunction.Value (API 2.3) and the field numbers that carry it, all
 * read and written with the unknown-field helpers above. */
#define REAPI_DIGEST_FUNCTION_UNSET  0
#define REAPI_DIGEST_FUNCTION_SHA256 1
#define REAPI_DIGEST_FUNCTION_BLAKE3 9

#define REAPI_FIELD_EXECUTE_REQUEST_DIGEST_FUNCTION              9
#define REAPI_FIELD_EXECUTE_OPERATION_METADATA_DIGEST_FUNCTION   6
#define REAPI_FIELD_GET_ACTION_RESULT_REQUEST_DIGEST_FUNCTION    6
#define REAPI_FIELD_UPDATE_ACTION_RESULT_REQUEST_DIGEST_FUNCTION 5
#define REAPI_FIELD_FIND_MISSING_BLOBS_REQUEST_DIGEST_FUNCTION   3
#define REAPI_FIELD_BATCH_UPDATE_BLOBS_REQUEST_DIGEST_FUNCTION   5
#define REAPI_FIELD_BATCH_READ_BLOBS_REQUEST_DIGEST_FUNCTION     4
#define REAPI_FIELD_GET_TREE_REQUEST_DIGEST_FUNCTION             5
/* ExecutionCapabilities.digest_functions (repeated; 1 is the older singular one) */
#define REAPI_FIELD_EXECUTION_CAPABILITIES_DIGEST_FUNCTIONS 5

/* The enum name of a DigestFunction.Value ("SHA256", "BLAKE3"), NULL when
 * out of range. */
const char *reapi_digest_function_name(uint64_t value);
/* Checks req's digest_function (field number `field`): unset or SHA256 is
 * 0; anything else sets INVALID_ARGUMENT naming it ("digest_function BLAKE3
 * (9) is not supported: this server uses SHA256") and returns -EINVAL. */
int reapi_digest_function_check(const ProtobufCMessage *req, uint32_t field,
                                struct reapi_status *st);
/* The same for a value already read: present says whether the field was
 * given; message_name and field name it when malformed. */
int reapi_digest_function_check_value(const char *message_name, uint32_t field, bool present,
                                      bool malformed, uint64_t value, struct reapi_status *st);

/* --- compression (compression.c) ---
 *
 * The CAS stores blobs uncompressed (FUSE staging and hardlinks need plain
 * files); clients may send and receive them zstd-compressed. */

/* "zstd" for REAPI_COMPRESSOR_ZSTD: the lowercase enum name the resource
 * names use; NULL for a value outside the enum. */
const char *reapi_compressor_name(int64_t value);
/* IDENTITY and ZSTD. */
bool reapi_compressor_supported(int64_t value);

/* The level casboxd compresses at: fast, and the same everywhere, so that a
 * resumed compressed Read sees the same bytes. */
#define REAPI_ZSTD_LEVEL 1

/* Receives output; a negative return stops the stream with that error. */
typedef int (*reapi_sink_fn)(void *ctx, const void *data, size_t len);

/* A streaming zstd decoder whose output is bounded. */
struct reapi_zstd_decoder;

/* A decoder whose output may total at most max_out bytes (the size the
 * digest declares); its window (memory) is bounded accordingly. -ENOMEM. */
int reapi_zstd_decoder_new(int64_t max_out, struct reapi_zstd_decoder **out);
void reapi_zstd_decoder_free(struct reapi_zstd_decoder *dec);
/* Back to the start, for an upload written again from offset 0. */
void reapi_zstd_decoder_reset(struct reapi_zstd_decoder *dec);
/* Decompresses len bytes of input (one or more frames, in any pieces),
 * giving all output to sink. -EFBIG when the output would pass max_out
 * (the excess is not given to sink), -EBADMSG when the input is not zstd or
 * corrupt, or the sink's error. Errors stick: later calls return them. */
int reapi_zstd_decoder_feed(struct reapi_zstd_decoder *dec, const void *in, size_t len,
                            reapi_sink_fn sink, void *ctx);
/* The input has ended: 0 when it ended after a whole frame (or was empty),
 * -EBADMSG when it stops inside one, or the sticky error. */
int reapi_zstd_decoder_finish(struct reapi_zstd_decoder *dec);
/* Compressed bytes fed so far, and uncompressed bytes produced. */
int64_t reapi_zstd_decoder_consumed(const struct reapi_zstd_decoder *dec);
int64_t reapi_zstd_decoder_produced(const struct reapi_zstd_decoder *dec);
/* A one-line account of the last error ("" when none). */
const char *reapi_zstd_decoder_error(const struct reapi_zstd_decoder *dec);

/* Decompresses the whole of in (len bytes, the inline data of a batch call)
 * into out, which has room for size bytes (dec is reset and bounded to
 * size): 0 when it is exactly size bytes; -EFBIG more, -ENODATA fewer,
 * -EBADMSG corrupt or truncated, with reapi_zstd_decoder_error saying so. */
int reapi_zstd_decoder_buffer(struct reapi_zstd_decoder *dec, const void *in, size_t len, void *out,
                              size_t size);
/* The most compressed bytes a client may send for a blob of size bytes:
 * what zstd needs for incompressible data, with room for many frames. */
int64_t reapi_zstd_max_compressed(int64_t size);

/* A streaming zstd encoder of one frame. */
struct reapi_zstd_encoder;

/* size: the bytes that will be fed (written into the frame header, so the
 * reader knows the size and needs no larger window). -ENOMEM. */
int reapi_zstd_encoder_new(int level, int64_t size, struct reapi_zstd_encoder **out);
void reapi_zstd_encoder_free(struct reapi_zstd_encoder *enc);
/* Compresses len bytes, giving the output to sink as it fills; end: this is
 * the last input, the frame is finished. -EIO when zstd fails, or the
 * sink's error. */
int reapi_zstd_encoder_feed(struct reapi_zstd_encoder *enc, const void *in, size_t len, bool end,
                            reapi_sink_fn sink, void *ctx);

/* One-shot compression of a buffer into a malloc'd one; -ENOMEM, -EIO. */
int reapi_zstd_compress_buffer(const void *in, size_t len, int level, void **out, size_t *out_len);

#endif
