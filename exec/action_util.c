/*
 * action_util.c - helpers shared by the action_*.c files: a hash map keyed by
 * digest (the SHA-256 bytes are uniformly distributed, so their first eight
 * bytes are the hash), wire digest conversion and a few small utilities.
 */
#include "action_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static size_t digest_map_bucket(const struct cas_digest *key, size_t mask)
{
    uint64_t h;

    memcpy(&h, key->hash, sizeof(h));
    return (size_t)(h ^ (uint64_t)key->size) & mask;
}

static bool digest_key_equal(const struct cas_digest *a, const struct cas_digest *b)
{
    return a->size == b->size && memcmp(a->hash, b->hash, CAS_HASH_BYTES) == 0;
}

static int digest_map_grow(struct action_digest_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    struct action_digest_map_slot *slots = calloc(cap, sizeof(*slots));

    if (slots == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        size_t b;

        if (!m->slots[i].used)
            continue;
        b = digest_map_bucket(&m->slots[i].key, cap - 1);
        while (slots[b].used)
            b = (b + 1) & (cap - 1);
        slots[b] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

int action_digest_map_put(struct action_digest_map *m, const struct cas_digest *key, size_t value,
                          size_t *value_out)
{
    size_t b;
    int rc;

    /* Keep the load factor at or below one half. */
    if ((m->count + 1) * 2 > m->cap) {
        rc = digest_map_grow(m);
        if (rc != 0)
            return rc;
    }
    b = digest_map_bucket(key, m->cap - 1);
    while (m->slots[b].used) {
        if (digest_key_equal(&m->slots[b].key, key)) {
            if (value_out != NULL)
                *value_out = m->slots[b].value;
            return 0;
        }
        b = (b + 1) & (m->cap - 1);
    }
    m->slots[b].used = true;
    m->slots[b].key = *key;
    m->slots[b].value = value;
    m->count++;
    return 1;
}

bool action_digest_map_get(const struct action_digest_map *m, const struct cas_digest *key,
                           size_t *value)
{
    size_t b;

    if (m->cap == 0)
        return false;
    b = digest_map_bucket(key, m->cap - 1);
    while (m->slots[b].used) {
        if (digest_key_equal(&m->slots[b].key, key)) {
            if (value != NULL)
                *value = m->slots[b].value;
            return true;
        }
        b = (b + 1) & (m->cap - 1);
    }
    return false;
}

void action_digest_map_free(struct action_digest_map *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

Digest *action_digest_proto_new(const struct cas_digest *d)
{
    Digest *pd = malloc(sizeof(*pd));

    if (pd == NULL)
        return NULL;
    build__bazel__remote__execution__v2__digest__init(pd);
    pd->hash = malloc(CAS_HASH_HEX + 1);
    if (pd->hash == NULL) {
        free(pd);
        return NULL;
    }
    cas_digest_hex(d, pd->hash);
    pd->size_bytes = d->size;
    return pd;
}

int action_digest_from_proto(const Digest *pd, struct cas_digest *out, const char *what,
                             struct reapi_status *st)
{
    size_t len;

    if (pd == NULL) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "%s: digest is missing", what);
        return -EINVAL;
    }
    len = pd->hash != NULL ? strlen(pd->hash) : 0;
    if (pd->size_bytes < 0) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "%s: digest has negative size %" PRId64,
                         what, pd->size_bytes);
        return -EINVAL;
    }
    if (cas_digest_parse_n(pd->hash, len, pd->size_bytes, out) != 0) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "%s: digest hash '%.80s' is not 64 hexadecimal digits (SHA-256, the only "
                         "digest function served)",
                         what, pd->hash != NULL ? pd->hash : "");
        return -EINVAL;
    }
    return 0;
}

void action_digest_valid(const Digest *pd, struct cas_digest *out)
{
    if (pd == NULL || pd->hash == NULL ||
        cas_digest_parse_n(pd->hash, strlen(pd->hash), pd->size_bytes, out) != 0)
        memset(out, 0, sizeof(*out));
}

char *action_path_join(const char *a, const char *b)
{
    char *p;

    if (a[0] == '\0')
        return strdup(b);
    if (b[0] == '\0')
        return strdup(a);
    if (asprintf(&p, "%s/%s", a, b) < 0)
        return NULL;
    return p;
}
