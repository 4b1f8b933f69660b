/*
 * wire.c - a spec as one flat buffer, for the trip to the spawner.
 *
 * Layout: the magic "CBXS", a version, then every field in a fixed order:
 * integers as little-endian u32/u64, strings as a u32 length and the bytes
 * (0xffffffff for NULL), vectors and mounts as a u32 count and their items.
 * The decoder checks every length against what is left and the total against
 * SANDBOX_WIRE_MAX, and rejects strings with a NUL inside, so a truncated or
 * hostile buffer gives -EINVAL, never a read past the end.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define WIRE_MAGIC     0x53584243u /* "CBXS" */
#define WIRE_VERSION   2u
#define WIRE_NULL      0xffffffffu
#define WIRE_MAX_ITEMS 65536u

struct wire_writer {
    uint8_t *buf;
    size_t len;
    size_t cap;
    int rc;
};

static void wire_put(struct wire_writer *w, const void *data, size_t len)
{
    if (w->rc != 0)
        return;
    if (w->len + len > SANDBOX_WIRE_MAX) {
        w->rc = -E2BIG;
        return;
    }
    if (w->len + len > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        uint8_t *grown;

        while (cap < w->len + len)
            cap *= 2;
        grown = realloc(w->buf, cap);
        if (grown == NULL) {
            w->rc = -ENOMEM;
            return;
        }
        w->buf = grown;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, data, len);
    w->len += len;
}

static void wire_put_u32(struct wire_writer *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};

    wire_put(w, b, sizeof(b));
}

static void wire_put_u64(struct wire_writer *w, uint64_t v)
{
    wire_put_u32(w, (uint32_t)v);
    wire_put_u32(w, (uint32_t)(v >> 32));
}

static void wire_put_str(struct wire_writer *w, const char *s)
{
    size_t len;

    if (s == NULL) {
        wire_put_u32(w, WIRE_NULL);
        return;
    }
    len = strlen(s);
    if (len >= WIRE_NULL) {
        w->rc = -E2BIG;
        return;
    }
    wire_put_u32(w, (uint32_t)len);
    wire_put(w, s, len);
}

static void wire_put_vector(struct wire_writer *w, char *const *v)
{
    uint32_t n = 0;

    if (v == NULL) {
        wire_put_u32(w, WIRE_NULL);
        return;
    }
    while (v[n] != NULL)
        n++;
    wire_put_u32(w, n);
    for (uint32_t i = 0; i < n; i++)
        wire_put_str(w, v[i]);
}

int sandbox_spec_encode(const struct sandbox_spec *spec, uint8_t **buf, size_t *len)
{
    const struct sandbox_limits *l = &spec->limits;
    struct wire_writer w = {0};

    wire_put_u32(&w, WIRE_MAGIC);
    wire_put_u32(&w, WIRE_VERSION);
    wire_put_vector(&w, spec->argv);
    wire_put_vector(&w, spec->envp);
    wire_put_str(&w, spec->lower_dir);
    wire_put_str(&w, spec->upper_dir);
    wire_put_str(&w, spec->work_dir);
    wire_put_str(&w, spec->exec_root_path);
    wire_put_str(&w, spec->cwd);
    wire_put_str(&w, spec->root_dir);
    wire_put_u32(&w, (uint32_t)spec->n_mounts);
    for (size_t i = 0; i < spec->n_mounts; i++) {
        wire_put_u32(&w, (uint32_t)spec->mounts[i].kind);
        wire_put_str(&w, spec->mounts[i].host);
        wire_put_str(&w, spec->mounts[i].inside);
    }
    wire_put_u32(&w, spec->network);
    wire_put_u32(&w, spec->uid0);
    wire_put_str(&w, spec->hostname);
    wire_put_u32(&w, (uint32_t)spec->seccomp);
    wire_put_str(&w, spec->seccomp_file);
    wire_put_u64(&w, l->timeout_ms);
    wire_put_u64(&w, l->memory_bytes);
    wire_put_u64(&w, l->pids_max);
    wire_put_u64(&w, l->cpu_seconds);
    wire_put_u64(&w, l->output_bytes);
    wire_put_str(&w, spec->stdout_path);
    wire_put_str(&w, spec->stderr_path);
    wire_put_u32(&w, spec->stdin_null);
    wire_put_str(&w, spec->cgroup_parent);
    if (spec->n_mounts >= WIRE_MAX_ITEMS && w.rc == 0)
        w.rc = -E2BIG;
    if (w.rc != 0) {
        free(w.buf);
        return w.rc;
    }
    *buf = w.buf;
    *len = w.len;
    return 0;
}

struct wire_reader {
    const uint8_t *p;
    size_t left;
    int rc;
};

static uint32_t wire_get_u32(struct wire_reader *r)
{
    uint32_t v;

    if (r->rc != 0 || r->left < 4) {
        r->rc = -EINVAL;
        return 0;
    }
    v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
        (uint32_t)r->p[3] << 24;
    r->p += 4;
    r->left -= 4;
    return v;
}

static uint64_t wire_get_u64(struct wire_reader *r)
{
    uint64_t lo = wire_get_u32(r);

    return lo | (uint64_t)wire_get_u32(r) << 32;
}

static bool wire_get_bool(struct wire_reader *r)
{
    uint32_t v = wire_get_u32(r);

    if (v > 1)
        r->rc = -EINVAL;
    return v == 1;
}

/* Replaces *out (freeing what was there) with the next string. */
static void wire_get_str(struct wire_reader *r, char **out)
{
    uint32_t len = wire_get_u32(r);
    char *s;

    if (r->rc != 0)
        return;
    free(*out);
    *out = NULL;
    if (len == WIRE_NULL)
        return;
    if (len > r->left || memchr(r->p, '\0', len) != NULL) {
        r->rc = -EINVAL;
        return;
    }
    s = malloc((size_t)len + 1);
    if (s == NULL) {
        r->rc = -ENOMEM;
        return;
    }
    memcpy(s, r->p, len);
    s[len] = '\0';
    r->p += len;
    r->left -= len;
    *out = s;
}

static void wire_get_vector(struct wire_reader *r, char ***out)
{
    uint32_t n = wire_get_u32(r);
    char **v;

    if (r->rc != 0 || n == WIRE_NULL)
        return;
    /* every item takes at least its 4-byte length */
    if (n >= WIRE_MAX_ITEMS || (size_t)n * 4 > r->left) {
        r->rc = -EINVAL;
        return;
    }
    v = calloc((size_t)n + 1, sizeof(*v));
    if (v == NULL) {
        r->rc = -ENOMEM;
        return;
    }
    *out = v; /* owned by the spec from here on, even half-filled */
    for (uint32_t i = 0; i < n && r->rc == 0; i++) {
        wire_get_str(r, &v[i]);
        /* Stop at a NULL item: it would end the vector early for every
         * reader, sandbox_spec_free included, which would leak the rest. */
        if (r->rc == 0 && v[i] == NULL)
            r->rc = -EINVAL;
    }
}

static void wire_get_mounts(struct wire_reader *r, struct sandbox_spec *spec)
{
    uint32_t n = wire_get_u32(r);

    if (r->rc != 0)
        return;
    if (n >= WIRE_MAX_ITEMS || (size_t)n * 12 > r->left) {
        r->rc = -EINVAL;
        return;
    }
    for (uint32_t i = 0; i < n && r->rc == 0; i++) {
        uint32_t kind = wire_get_u32(r);
        char *host = NULL, *inside = NULL;

        wire_get_str(r, &host);
        wire_get_str(r, &inside);
        if (r->rc == 0 && (kind > SANDBOX_MOUNT_TMPFS || inside == NULL))
            r->rc = -EINVAL;
        if (r->rc == 0)
            r->rc = sandbox_spec_add_mount(spec, (enum sandbox_mount_kind)kind, host, inside);
        free(host);
        free(inside);
    }
}

int sandbox_spec_decode(const uint8_t *buf, size_t len, struct sandbox_spec *spec)
{
    struct wire_reader r = {.p = buf, .left = len};
    struct sandbox_limits *l = &spec->limits;
    uint32_t seccomp;

    if (len > SANDBOX_WIRE_MAX)
        return -E2BIG;
    if (wire_get_u32(&r) != WIRE_MAGIC || wire_get_u32(&r) != WIRE_VERSION)
        return -EINVAL;
    wire_get_vector(&r, &spec->argv);
    wire_get_vector(&r, &spec->envp);
    wire_get_str(&r, &spec->lower_dir);
    wire_get_str(&r, &spec->upper_dir);
    wire_get_str(&r, &spec->work_dir);
    wire_get_str(&r, &spec->exec_root_path);
    wire_get_str(&r, &spec->cwd);
    wire_get_str(&r, &spec->root_dir);
    wire_get_mounts(&r, spec);
    spec->network = wire_get_bool(&r);
    spec->uid0 = wire_get_bool(&r);
    wire_get_str(&r, &spec->hostname);
    seccomp = wire_get_u32(&r);
    if (seccomp > SANDBOX_SECCOMP_FILE)
        r.rc = r.rc != 0 ? r.rc : -EINVAL;
    spec->seccomp = (enum sandbox_seccomp_mode)seccomp;
    wire_get_str(&r, &spec->seccomp_file);
    l->timeout_ms = wire_get_u64(&r);
    l->memory_bytes = wire_get_u64(&r);
    l->pids_max = wire_get_u64(&r);
    l->cpu_seconds = wire_get_u64(&r);
    l->output_bytes = wire_get_u64(&r);
    wire_get_str(&r, &spec->stdout_path);
    wire_get_str(&r, &spec->stderr_path);
    spec->stdin_null = wire_get_bool(&r);
    wire_get_str(&r, &spec->cgroup_parent);
    if (r.rc == 0 && r.left != 0)
        r.rc = -EINVAL;
    return r.rc;
}
