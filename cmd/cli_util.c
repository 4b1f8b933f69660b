/*
 * cli_util.c - small things both casbox programs need: a scratch directory
 * and sizes with suffixes. (A scratch tree is removed with util_remove_tree,
 * whatever the command left in it.)
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_scratch_create(const char *prefix, char **out, char *err, size_t err_len)
{
    const char *tmp = getenv("TMPDIR");
    char *path;

    if (tmp == NULL || tmp[0] != '/')
        tmp = "/tmp";
    if (asprintf(&path, "%s/%s.XXXXXX", tmp, prefix) < 0)
        return -ENOMEM;
    if (mkdtemp(path) == NULL) {
        int rc = -errno;

        snprintf(err, err_len, "cannot create a scratch directory in %s: %s (set TMPDIR)", tmp,
                 strerror(-rc));
        free(path);
        return rc;
    }
    *out = path;
    return 0;
}

int cli_parse_size(const char *s, uint64_t *out)
{
    uint64_t v = 0, mult = 1;
    const char *p = s;

    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10)
            return -EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    switch (*p) {
    case '\0':
        break;
    case 'k':
    case 'K':
        mult = 1ull << 10;
        break;
    case 'm':
    case 'M':
        mult = 1ull << 20;
        break;
    case 'g':
    case 'G':
        mult = 1ull << 30;
        break;
    case 't':
    case 'T':
        mult = 1ull << 40;
        break;
    default:
        return -EINVAL;
    }
    if (*p != '\0' && p[1] != '\0')
        return -EINVAL;
    if (v > UINT64_MAX / mult)
        return -EINVAL;
    *out = v * mult;
    return 0;
}
