/*
 * fuzz_auth_table.c - feeds bytes to auth_table_parse (auth/table.c), the
 * parser of [auth] tokens_file and certificates_file: the first byte picks
 * the kind, the rest is the file. Whatever it holds, parsing must not crash
 * and must either fail with a message naming the source and a line, or give
 * a table whose every entry answers lookups and permission queries (within
 * AUTH_PERM_ALL) without crashing.
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "auth/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const instances[] = {"", "a", "teamA", "teamA/x", "teamAB", "x/y/z"};
    enum auth_table_kind kind;
    struct auth_table *t = NULL;
    char err[512] = "";
    const char *text;
    size_t len;

    if (size == 0)
        return 0;
    kind = data[0] & 1 ? AUTH_TABLE_NAMES : AUTH_TABLE_TOKENS;
    text = (const char *)data + 1;
    len = size - 1;
    if (auth_table_parse(kind, "fuzz", text, len, &t, err, sizeof(err)) != 0) {
        assert(t == NULL);
        assert(strncmp(err, "fuzz:", 5) == 0);
        return 0;
    }
    assert(t != NULL);
    assert(auth_table_count(t) <= AUTH_MAX_ENTRIES);
    /* Look up every first field of the input as a token or a name. */
    for (size_t pos = 0; pos < len;) {
        size_t n = 0;
        const struct auth_entry *e;

        while (pos + n < len && text[pos + n] != ' ' && text[pos + n] != '\t' &&
               text[pos + n] != '\n')
            n++;
        e = kind == AUTH_TABLE_TOKENS ? auth_table_find_token(t, text + pos, n)
                                      : auth_table_find_name(t, text + pos, n);
        for (size_t i = 0; e != NULL && i < sizeof(instances) / sizeof(instances[0]); i++)
            assert((auth_entry_perms(e, instances[i]) & ~AUTH_PERM_ALL) == 0);
        while (pos + n < len && text[pos + n] != '\n')
            n++;
        pos += n + 1;
    }
    auth_table_free(t);
    return 0;
}
