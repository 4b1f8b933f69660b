/*
 * fuzz_web_route.c - feeds request paths to web_route_parse (web/route.c),
 * which decides from a path sent by any HTTP client which page to render and
 * which digest and download name it names; and the same bytes to the HTML
 * escaper (web/html.c) every page's client-controlled text goes through.
 * A parsed route must name a valid digest, a download name must be made of
 * [A-Za-z0-9._+-] only, and escaped text must hold no raw < > " ' or &
 * outside an entity.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "web_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = strndup((const char *)data, size);
    struct web_route r;
    struct util_buf b = {0};
    char detail[200];
    int rc;

    if (path == NULL)
        return 0;
    rc = web_route_parse(path, &r, detail, sizeof(detail));
    assert(rc == 0 || rc == -ENOENT || rc == -EINVAL);
    if (rc == -EINVAL)
        assert(detail[0] != '\0');
    if (rc == 0 &&
        (r.kind == WEB_ROUTE_ACTION || r.kind == WEB_ROUTE_DIR || r.kind == WEB_ROUTE_BLOB)) {
        assert(r.digest.size >= 0);
        for (const char *p = r.name; *p; p++)
            assert(strchr("._+-", *p) != NULL || (*p >= 'a' && *p <= 'z') ||
                   (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'));
    }
    web_buf_html(&b, (const char *)data, size);
    for (size_t i = 0; b.data != NULL && i < b.len; i++) {
        assert(b.data[i] != '<' && b.data[i] != '>' && b.data[i] != '"' && b.data[i] != '\'');
        if (b.data[i] == '&')
            assert(strncmp(b.data + i, "&amp;", 5) == 0 || strncmp(b.data + i, "&lt;", 4) == 0 ||
                   strncmp(b.data + i, "&gt;", 4) == 0 || strncmp(b.data + i, "&quot;", 6) == 0 ||
                   strncmp(b.data + i, "&#39;", 5) == 0);
    }
    util_buf_free(&b);
    free(path);
    return 0;
}
