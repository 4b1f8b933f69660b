/*
 * perms.c - permission names (read, write, write-ac, execute, worker) and
 * instance-name prefixes matched by whole segments.
 */
#include "auth.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    unsigned bit;
} auth_perm_names[] = {
    {"read", AUTH_PERM_READ},       {"write", AUTH_PERM_WRITE},   {"write-ac", AUTH_PERM_WRITE_AC},
    {"execute", AUTH_PERM_EXECUTE}, {"worker", AUTH_PERM_WORKER},
};

#define AUTH_N_PERMS (sizeof(auth_perm_names) / sizeof(auth_perm_names[0]))

static int auth_perm_word(const char *w, size_t n, unsigned *out)
{
    if (n == 4 && memcmp(w, "none", 4) == 0) {
        *out = AUTH_PERM_NONE;
        return 0;
    }
    if (n == 3 && memcmp(w, "all", 3) == 0) {
        *out = AUTH_PERM_ALL;
        return 0;
    }
    for (size_t i = 0; i < AUTH_N_PERMS; i++) {
        if (strlen(auth_perm_names[i].name) == n && memcmp(auth_perm_names[i].name, w, n) == 0) {
            *out = auth_perm_names[i].bit;
            return 0;
        }
    }
    return -EINVAL;
}

int auth_perms_parse(const char *list, size_t len, unsigned *out, char *err, size_t err_len)
{
    unsigned perms = 0, bit;
    size_t start = 0;

    *out = 0;
    if (len == 0) {
        snprintf(err, err_len,
                 "empty permission list (read, write, write-ac, execute, worker, "
                 "all or none)");
        return -EINVAL;
    }
    for (size_t i = 0; i <= len; i++) {
        if (i < len && list[i] != ',')
            continue;
        if (auth_perm_word(list + start, i - start, &bit) != 0) {
            snprintf(err, err_len,
                     "unknown permission '%.*s' (read, write, write-ac, execute, worker, all or "
                     "none)",
                     (int)(i - start > 64 ? 64 : i - start), list + start);
            return -EINVAL;
        }
        perms |= bit;
        start = i + 1;
    }
    *out = perms;
    return 0;
}

void auth_perms_format(unsigned perms, char *out, size_t len)
{
    size_t used = 0;

    if (len == 0)
        return;
    out[0] = '\0';
    if ((perms & AUTH_PERM_ALL) == 0) {
        snprintf(out, len, "none");
        return;
    }
    for (size_t i = 0; i < AUTH_N_PERMS; i++) {
        int n;

        if (!(perms & auth_perm_names[i].bit))
            continue;
        n = snprintf(out + used, len - used, "%s%s", used ? "," : "", auth_perm_names[i].name);
        if (n < 0 || (size_t)n >= len - used)
            return;
        used += (size_t)n;
    }
}

bool auth_prefix_matches(const char *prefix, const char *instance)
{
    size_t n = strlen(prefix);

    if (strncmp(prefix, instance, n) != 0)
        return false;
    return instance[n] == '\0' || instance[n] == '/';
}
