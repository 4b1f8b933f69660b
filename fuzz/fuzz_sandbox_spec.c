/*
 * fuzz_sandbox_spec.c - feeds buffers to sandbox_spec_decode
 * (sandbox/wire.c), which reads the spec a casboxd thread sends to the
 * spawner, and the spawner to each sandbox's pid 1: the last parser before
 * namespaces are made. A buffer that decodes must encode again, and the
 * re-encoded spec must decode to the same bytes (encoding is canonical).
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sandbox_spec spec, again;
    uint8_t *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;

    sandbox_spec_init(&spec);
    sandbox_spec_init(&again);
    if (sandbox_spec_decode(data, size, &spec) == 0) {
        assert(sandbox_spec_encode(&spec, &buf, &len) == 0);
        assert(sandbox_spec_decode(buf, len, &again) == 0);
        assert(sandbox_spec_encode(&again, &buf2, &len2) == 0);
        assert(len == len2 && memcmp(buf, buf2, len) == 0);
    }
    free(buf);
    free(buf2);
    sandbox_spec_free(&spec);
    sandbox_spec_free(&again);
    return 0;
}
