/*
 * test_action_helpers.h - shared set-up for the test_action_*.c unit tests:
 * a temporary directory holding a real CAS, and builders for the REAPI
 * messages (heap-allocated so that protobuf-c's free_unpacked frees them).
 */
#ifndef CASBOX_TEST_ACTION_HELPERS_H
#define CASBOX_TEST_ACTION_HELPERS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "cas/cas.h"
#include "config/config.h"
#include "reapi/reapi.h"
#include "util/util.h"

struct th_env {
    char dir[PATH_MAX];
    char cas_dir[PATH_MAX + 8];
    struct cas_store *cas;
    struct casbox_config cfg;
};

static inline void th_env_setup(struct th_env *e)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->dir, sizeof(e->dir), "/tmp/casbox-test-action-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(e->cas_dir, sizeof(e->cas_dir), "%s/cas", e->dir);
    assert_int_equal(cas_store_open(e->cas_dir, &(struct cas_store_options){0}, &e->cas), 0);
    config_init_defaults(&e->cfg);
}

static inline void th_env_teardown(struct th_env *e)
{
    cas_store_close(e->cas);
    assert_int_equal(util_remove_tree(e->dir), 0);
}

static inline void th_put(struct cas_store *s, const void *buf, size_t len, struct cas_digest *d)
{
    cas_digest_buffer(buf, len, d);
    assert_int_equal(cas_store_put(s, d, buf, len), 0);
}

static inline void th_put_msg(struct cas_store *s, const ProtobufCMessage *m, struct cas_digest *d)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);

    assert_non_null(buf);
    protobuf_c_message_pack(m, buf);
    th_put(s, buf, len, d);
    free(buf);
}

/* The digest a message would have, without storing it. */
static inline void th_msg_digest(const ProtobufCMessage *m, struct cas_digest *d)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);

    assert_non_null(buf);
    protobuf_c_message_pack(m, buf);
    cas_digest_buffer(buf, len, d);
    free(buf);
}

static inline Digest *th_digest_new(const struct cas_digest *d)
{
    Digest *pd = malloc(sizeof(*pd));

    assert_non_null(pd);
    build__bazel__remote__execution__v2__digest__init(pd);
    pd->hash = malloc(CAS_HASH_HEX + 1);
    assert_non_null(pd->hash);
    cas_digest_hex(d, pd->hash);
    pd->size_bytes = d->size;
    return pd;
}

/* Appends to a protobuf-c repeated field of pointers. */
#define TH_APPEND(arr, n, item)                                                                    \
    do {                                                                                           \
        (arr) = realloc((arr), ((n) + 1) * sizeof(*(arr)));                                        \
        assert_non_null(arr);                                                                      \
        (arr)[(n)++] = (item);                                                                     \
    } while (0)

static inline Directory *th_dir_new(void)
{
    Directory *d = malloc(sizeof(*d));

    assert_non_null(d);
    build__bazel__remote__execution__v2__directory__init(d);
    return d;
}

static inline void th_dir_free(Directory *d)
{
    build__bazel__remote__execution__v2__directory__free_unpacked(d, NULL);
}

static inline void th_dir_add_file_digest(Directory *d, const char *name,
                                          const struct cas_digest *dg, bool exec)
{
    Build__Bazel__Remote__Execution__V2__FileNode *f = malloc(sizeof(*f));

    assert_non_null(f);
    build__bazel__remote__execution__v2__file_node__init(f);
    f->name = strdup(name);
    f->digest = th_digest_new(dg);
    f->is_executable = exec;
    TH_APPEND(d->files, d->n_files, f);
}

/* Stores content (when s is not NULL) and adds a file node for it. */
static inline void th_dir_add_file(struct cas_store *s, Directory *d, const char *name,
                                   const char *content, bool exec)
{
    struct cas_digest dg;

    if (s != NULL)
        th_put(s, content, strlen(content), &dg);
    else
        cas_digest_buffer(content, strlen(content), &dg);
    th_dir_add_file_digest(d, name, &dg, exec);
}

static inline void th_dir_add_dir(Directory *d, const char *name, const struct cas_digest *dg)
{
    Build__Bazel__Remote__Execution__V2__DirectoryNode *n = malloc(sizeof(*n));

    assert_non_null(n);
    build__bazel__remote__execution__v2__directory_node__init(n);
    n->name = strdup(name);
    n->digest = th_digest_new(dg);
    TH_APPEND(d->directories, d->n_directories, n);
}

static inline void th_dir_add_symlink(Directory *d, const char *name, const char *target)
{
    Build__Bazel__Remote__Execution__V2__SymlinkNode *n = malloc(sizeof(*n));

    assert_non_null(n);
    build__bazel__remote__execution__v2__symlink_node__init(n);
    n->name = strdup(name);
    n->target = strdup(target);
    TH_APPEND(d->symlinks, d->n_symlinks, n);
}

/* Stores d (and frees it); *dg gets its digest. */
static inline void th_dir_put(struct cas_store *s, Directory *d, struct cas_digest *dg)
{
    th_put_msg(s, &d->base, dg);
    th_dir_free(d);
}

/* A Command running argv (NULL-terminated). */
static inline Command *th_cmd_new(const char *const *argv)
{
    Command *c = malloc(sizeof(*c));

    assert_non_null(c);
    build__bazel__remote__execution__v2__command__init(c);
    for (size_t i = 0; argv[i] != NULL; i++)
        TH_APPEND(c->arguments, c->n_arguments, strdup(argv[i]));
    return c;
}

static inline void th_cmd_add_env(Command *c, const char *name, const char *value)
{
    Build__Bazel__Remote__Execution__V2__Command__EnvironmentVariable *v = malloc(sizeof(*v));

    assert_non_null(v);
    build__bazel__remote__execution__v2__command__environment_variable__init(v);
    v->name = strdup(name);
    v->value = strdup(value);
    TH_APPEND(c->environment_variables, c->n_environment_variables, v);
}

static inline Build__Bazel__Remote__Execution__V2__Platform *th_platform_new(const char *name,
                                                                             const char *value)
{
    Build__Bazel__Remote__Execution__V2__Platform *p = malloc(sizeof(*p));

    assert_non_null(p);
    build__bazel__remote__execution__v2__platform__init(p);
    if (name != NULL) {
        Build__Bazel__Remote__Execution__V2__Platform__Property *pr = malloc(sizeof(*pr));

        assert_non_null(pr);
        build__bazel__remote__execution__v2__platform__property__init(pr);
        pr->name = strdup(name);
        pr->value = strdup(value);
        TH_APPEND(p->properties, p->n_properties, pr);
    }
    return p;
}

static inline void th_platform_add(Build__Bazel__Remote__Execution__V2__Platform *p,
                                   const char *name, const char *value)
{
    Build__Bazel__Remote__Execution__V2__Platform__Property *pr = malloc(sizeof(*pr));

    assert_non_null(pr);
    build__bazel__remote__execution__v2__platform__property__init(pr);
    pr->name = strdup(name);
    pr->value = strdup(value);
    TH_APPEND(p->properties, p->n_properties, pr);
}

/* Stores the Command (and frees it) and an Action for it; timeout_s < 0: none. */
static inline void th_action_put(struct cas_store *s, Command *cmd, const struct cas_digest *root,
                                 int64_t timeout_s,
                                 Build__Bazel__Remote__Execution__V2__Platform *platform,
                                 struct cas_digest *action_digest)
{
    Action a = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION__INIT;
    Google__Protobuf__Duration timeout = GOOGLE__PROTOBUF__DURATION__INIT;
    struct cas_digest cd;

    th_put_msg(s, &cmd->base, &cd);
    build__bazel__remote__execution__v2__command__free_unpacked(cmd, NULL);
    a.command_digest = th_digest_new(&cd);
    a.input_root_digest = th_digest_new(root);
    if (timeout_s >= 0) {
        timeout.seconds = timeout_s;
        a.timeout = &timeout;
    }
    a.platform = platform;
    th_put_msg(s, &a.base, action_digest);
    free(a.command_digest->hash);
    free(a.command_digest);
    free(a.input_root_digest->hash);
    free(a.input_root_digest);
    if (platform != NULL)
        build__bazel__remote__execution__v2__platform__free_unpacked(platform, NULL);
}

/* Writes a file with content and mode under dir. */
static inline void th_write_file(const char *dir, const char *rel, const char *content, mode_t mode)
{
    char path[PATH_MAX];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static inline void th_mkdir(const char *dir, const char *rel)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    assert_int_equal(mkdir(path, 0755), 0);
}

static inline void th_symlink(const char *dir, const char *rel, const char *target)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    assert_int_equal(symlink(target, path), 0);
}

#endif
