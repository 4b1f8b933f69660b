/*
 * fuzz_resource_name.c - feeds ByteStream resource names, as a client sends
 * them in ReadRequest.resource_name and WriteRequest.resource_name, to
 * reapi_resource_parse_read and reapi_resource_parse_write (reapi/reapi.c):
 * the first thing casboxd does with a Read or Write stream, before anything
 * else looks at it. A name that parses must have its instance and upload id
 * inside the name. The raw bytes also go to reapi_parse_size, which reads a
 * length-bounded, not NUL-terminated, size.
 */
#include <assert.h>
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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reapi_resource r;
    char *name;
    int64_t n;

    (void)reapi_parse_size((const char *)data, size, &n);
    /* A proto string as the handlers see it: NUL-terminated. */
    name = strndup((const char *)data, size);
    if (name == NULL)
        return 0;
    if (reapi_resource_parse_read(name, &r) == 0)
        check_inside(name, &r);
    if (reapi_resource_parse_write(name, &r) == 0) {
        check_inside(name, &r);
        assert(r.upload_id != NULL && r.upload_id_len > 0);
    }
    free(name);
    return 0;
}
