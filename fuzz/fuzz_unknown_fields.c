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

    /* A value put on a message comes back after a pack and unpack. (On a
     * fresh message: protobuf-c accepts some inputs it does not pack back,
     * such as an overlong tag 0, "\x80\x00".) */
    {
        FindMissingBlobsRequest fresh =
            BUILD__BAZEL__REMOTE__EXECUTION__V2__FIND_MISSING_BLOBS_REQUEST__INIT;
        uint32_t field = 3 + (uint32_t)(size % 1000);
        uint64_t value = size > 0 ? data[0] * 0x0101010101010101ull : 0;
        uint8_t buf[32];
        ProtobufCMessage *back;
        size_t len;

        rc = reapi_unknown_varint_put(&fresh.base, field, value);
        assert(rc == 0);
        len = protobuf_c_message_get_packed_size(&fresh.base);
        assert(len <= sizeof(buf));
        n = protobuf_c_message_pack(&fresh.base, buf);
        assert(n == len);
        back = protobuf_c_message_unpack(fresh.base.descriptor, NULL, len, buf);
        assert(back != NULL);
        rc = reapi_unknown_varint_get(back, field, &one);
        assert(rc == 1 && one == value);
        protobuf_c_message_free_unpacked(back, NULL);
        reapi_unknown_clear(&fresh.base);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
