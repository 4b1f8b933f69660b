/*
 * fuzz_unknown_fields.c - feeds requests to the readers of fields newer than
 * the generated types (reapi/unknown_fields.c) and the digest_function check
 * (reapi/digest_function.c): each input is unpacked with protobuf-c as a
 * FindMissingBlobsRequest, as casboxd unpacks a request, and every field
 * number it kept as unknown is read as a scalar and as a repeated varint.
 * The two readers must agree (malformed for both or neither; the scalar is
 * the last value), the check's status must match its return code, and
 * values written with reapi_unknown_out_* must come back after a pack and
 * unpack.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "reapi/reapi.h"

/* Written on a fresh message: protobuf-c accepts some inputs it does not
 * pack back (an overlong tag 0, "\x80\x00", kept as unknown field 0). */
static void round_trip(const uint8_t *data, size_t size)
{
    FindMissingBlobsRequest fresh =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__FIND_MISSING_BLOBS_REQUEST__INIT;
    uint32_t field = 3 + (uint32_t)(size % 1000);
    uint64_t value = size > 0 ? data[0] * 0x0101010101010101ull : 0, run[3], back_run[3], v;
    struct reapi_unknown_out out;
    ProtobufCMessage *back;
    uint8_t buf[128];
    size_t len, n;
    int rc;

    for (size_t i = 0; i < 3; i++)
        run[i] = i < size ? data[i] : i;
    reapi_unknown_out_init(&out);
    rc = reapi_unknown_out_varint(&out, field, value);
    assert(rc == 0);
    rc = reapi_unknown_out_packed(&out, field + 1, run, 3);
    assert(rc == 0);
    reapi_unknown_out_attach(&out, &fresh.base);
    len = protobuf_c_message_get_packed_size(&fresh.base);
    assert(len <= sizeof(buf));
    n = protobuf_c_message_pack(&fresh.base, buf);
    assert(n == len);
    back = protobuf_c_message_unpack(fresh.base.descriptor, NULL, len, buf);
    assert(back != NULL);
    rc = reapi_unknown_varint(back, field, &v);
    assert(rc == 1 && v == value);
    rc = reapi_unknown_varints(back, field + 1, back_run, 3);
    assert(rc == 3 && back_run[0] == run[0] && back_run[1] == run[1] && back_run[2] == run[2]);
    protobuf_c_message_free_unpacked(back, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(
        &build__bazel__remote__execution__v2__find_missing_blobs_request__descriptor, NULL, size,
        data);
    struct reapi_status st;
    uint64_t one, many[4];
    int r1, rn, rc;

    round_trip(data, size);
    if (m == NULL)
        return 0;
    for (unsigned i = 0; i < m->n_unknown_fields; i++) {
        uint32_t field = m->unknown_fields[i].tag;

        r1 = reapi_unknown_varint(m, field, &one);
        rn = reapi_unknown_varints(m, field, many, 4);
        assert(r1 == 1 || r1 == 0 || r1 == -EINVAL);
        assert(rn >= 0 || rn == -EINVAL);
        assert((r1 < 0) == (rn < 0));
        assert((r1 == 0) == (rn == 0));
        if (r1 == 1 && rn < 4)
            assert(many[rn - 1] == one);
    }
    reapi_status_init(&st);
    rc =
        reapi_digest_function_check(m, REAPI_FIELD_FIND_MISSING_BLOBS_REQUEST_DIGEST_FUNCTION, &st);
    assert((rc == 0) == reapi_status_ok(&st));
    assert(rc == 0 || st.message[0] != '\0');
    reapi_status_free(&st);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
