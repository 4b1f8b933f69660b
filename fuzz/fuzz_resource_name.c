/*
 * fuzz_resource_name.c - feeds ByteStream resource names, as a client sends
 * them in ReadRequest.resource_name and WriteRequest.resource_name, to
 * reapi_resource_parse_read and reapi_resource_parse_write (reapi/reapi.c):
 * the first thing casboxd does with a Read or Write stream, before anything
 * else looks at it. A name that parses must have its instance, upload id and
 * key (the name up to the size) inside the name, and a compressor served; a
 * name refused for its compressor or digest function must point at that
 * segment inside the name, and every refusal becomes a status message
 * (reapi_resource_status). The raw bytes also go to reapi_parse_size, which
 * reads a length-bounded, not NUL-terminated, size.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reapi/reapi.h"

static void check_inside(const char *name, const struct reapi_resource *r)
{
    size_t len = strlen(name);

    assert(r->instance == name && r->instance_len <= len);
    assert(r->upload_id == NULL ||
           (r->upload_id > name && r->upload_id + r->upload_id_len <= name + len));
    assert(r->digest.size >= 0);
    assert(r->key_len > r->instance_len && r->key_len <= len);
    assert(r->compressor == REAPI_COMPRESSOR_IDENTITY || r->compressor == REAPI_COMPRESSOR_ZSTD);
}

/* A refused name: the segment named is inside it, and the message is made. */
static void check_refused(const char *name, int rc, const struct reapi_resource *r, bool upload)
{
    struct reapi_status st;

    assert(rc == -EINVAL || rc == -ENOTSUP || rc == -EPROTONOSUPPORT);
    if (rc != -EINVAL)
        assert(r->unsupported > name && r->unsupported_len > 0 &&
               r->unsupported + r->unsupported_len <= name + strlen(name));
    reapi_status_init(&st);
    reapi_resource_status(&st, name, rc, r, upload);
    assert(st.code == GRPC_STATUS_INVALID_ARGUMENT && st.message[0] != '\0');
    reapi_status_free(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reapi_resource r;
    char *name;
    int64_t n;
    int rc;

    (void)reapi_parse_size((const char *)data, size, &n);
    /* A proto string as the handlers see it: NUL-terminated. */
    name = strndup((const char *)data, size);
    if (name == NULL)
        return 0;
    rc = reapi_resource_parse_read(name, &r);
    if (rc == 0)
        check_inside(name, &r);
    else
        check_refused(name, rc, &r, false);
    rc = reapi_resource_parse_write(name, &r);
    if (rc == 0) {
        check_inside(name, &r);
        assert(r.upload_id != NULL && r.upload_id_len > 0);
    } else {
        check_refused(name, rc, &r, true);
    }
    free(name);
    return 0;
}
