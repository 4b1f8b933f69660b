/*
 * fuzz_unknown_fields.c - feeds requests to the readers of fields newer than
 * the generated types (reapi/unknown.c) and the digest_function check
 * (reapi/digest_function.c): each input is unpacked with protobuf-c as a
 * FindMissingBlobsRequest, as casboxd unpacks a request, and every field
 * number it kept as unknown is read as a varint and as a repeated varint.
 * The two readers must agree on what they accept, a value must survive
 * reapi_unknown_varint_put and a pack/unpack, and the check's status must
 * match its return code.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "reapi/reapi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(
        &build__bazel__remote__execution__v2__find_missing_blobs_request__descriptor, NULL, size,
        data);
    struct reapi_status st;
    uint64_t one, many[4];
    size_t n;
    int rc1, rcn, rc;

    if (m == NULL)
        return 0;
    for (unsigned i = 0; i < m->n_unknown_fields; i++) {
        uint32_t field = m->unknown_fields[i].tag;

        rc1 = reapi_unknown_varint_get(m, field, &one);
        rcn = reapi_unknown_varints_get(m, field, many, 4, &n);
        assert(rc1 == 1 || rc1 == -EINVAL);
        assert(rcn == 0 || rcn == -EINVAL);
        /* Every varint the scalar reader accepts, the repeated one does. */
        if (rc1 == 1) {
            assert(rcn == 0 && n >= 1);
            if (n <= 4)
                assert(many[n - 1] == one);
        }
    }
    reapi_status_init(&st);
    rc =
        reapi_digest_function_check(m, REAPI_FIELD_FIND_MISSING_BLOBS_REQUEST_DIGEST_FUNCTION, &st);
    assert((rc == 0) == reapi_status_ok(&st));
    assert(rc == 0 || st.message[0] != '\0');
    reapi_status_free(&st);

    /* A value put on the decoded message comes back after a round trip
     * (field 1000 unless the input has one already). */
    if (reapi_unknown_varint_get(m, 1000, &one) == 0 &&
        reapi_unknown_varint_put(m, 1000, size) == 0) {
        size_t len = protobuf_c_message_get_packed_size(m);
        uint8_t *buf = malloc(len ? len : 1);
        ProtobufCMessage *back;

        if (buf != NULL) {
            protobuf_c_message_pack(m, buf);
            back = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
            assert(back != NULL);
            assert(reapi_unknown_varint_get(back, 1000, &one) == 1 && one == size);
            protobuf_c_message_free_unpacked(back, NULL);
            free(buf);
        }
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
