/*
 * spec.c - struct sandbox_spec as plain data: defaults, ownership, checks and
 * a stable one-field-per-line printout (for tests, logs and --dry-run).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SANDBOX_DEFAULT_HOSTNAME "casbox"

void sandbox_spec_init(struct sandbox_spec *spec)
{
    memset(spec, 0, sizeof(*spec));
    /* On allocation failure these stay NULL, which the runner reads as the
     * same default (sandbox_spec_exec_root and friends). */
    spec->exec_root_path = strdup(SANDBOX_EXEC_ROOT);
    spec->cwd = strdup(SANDBOX_EXEC_ROOT);
    spec->hostname = strdup(SANDBOX_DEFAULT_HOSTNAME);
    spec->seccomp = SANDBOX_SECCOMP_DEFAULT;
    spec->stdin_null = true;
}

static void spec_free_vector(char **v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; v[i] != NULL; i++)
        free(v[i]);
    free(v);
}

void sandbox_spec_free(struct sandbox_spec *spec)
{
    if (spec == NULL)
        return;
    spec_free_vector(spec->argv);
    spec_free_vector(spec->envp);
    free(spec->lower_dir);
    free(spec->upper_dir);
    free(spec->work_dir);
    free(spec->exec_root_path);
    free(spec->cwd);
    free(spec->root_dir);
    for (size_t i = 0; i < spec->n_mounts; i++) {
        free(spec->mounts[i].host);
        free(spec->mounts[i].inside);
    }
    free(spec->mounts);
    free(spec->hostname);
    free(spec->seccomp_file);
    free(spec->stdout_path);
    free(spec->stderr_path);
    free(spec->cgroup_parent);
    memset(spec, 0, sizeof(*spec));
}

int sandbox_spec_set_string(char **field, const char *value)
{
    char *copy = NULL;

    if (value != NULL) {
        copy = strdup(value);
        if (copy == NULL)
            return -ENOMEM;
    }
    free(*field);
    *field = copy;
    return 0;
}

static int spec_copy_vector(char ***field, const char *const *src)
{
    size_t n = 0;
    char **v;
    int rc = 0;

    while (src != NULL && src[n] != NULL)
        n++;
    v = calloc(n + 1, sizeof(*v));
    if (v == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        v[i] = strdup(src[i]);
        if (v[i] == NULL) {
            rc = -ENOMEM;
            goto out;
        }
    }
    spec_free_vector(*field);
    *field = v;
    v = NULL;
out:
    spec_free_vector(v);
    return rc;
}

int sandbox_spec_set_argv(struct sandbox_spec *spec, const char *const *argv)
{
    return spec_copy_vector(&spec->argv, argv);
}

int sandbox_spec_set_envp(struct sandbox_spec *spec, const char *const *envp)
{
    return spec_copy_vector(&spec->envp, envp);
}

int sandbox_spec_add_mount(struct sandbox_spec *spec, enum sandbox_mount_kind kind,
                           const char *host, const char *inside)
{
    struct sandbox_mount *grown;
    struct sandbox_mount m = {.kind = kind};
    int rc = -ENOMEM;

    if (inside == NULL || inside[0] != '/')
        return -EINVAL;
    if (kind != SANDBOX_MOUNT_TMPFS && (host == NULL || host[0] != '/'))
        return -EINVAL;
    if (kind != SANDBOX_MOUNT_RO && kind != SANDBOX_MOUNT_RW && kind != SANDBOX_MOUNT_TMPFS)
        return -EINVAL;
    m.inside = strdup(inside);
    if (m.inside == NULL)
        goto out;
    if (host != NULL && kind != SANDBOX_MOUNT_TMPFS) {
        m.host = strdup(host);
        if (m.host == NULL)
            goto out;
    }
    grown = realloc(spec->mounts, (spec->n_mounts + 1) * sizeof(*grown));
    if (grown == NULL)
        goto out;
    spec->mounts = grown;
    spec->mounts[spec->n_mounts++] = m;
    m.host = NULL;
    m.inside = NULL;
    rc = 0;
out:
    free(m.host);
    free(m.inside);
    return rc;
}

const char *sandbox_spec_exec_root(const struct sandbox_spec *spec)
{
    return spec->exec_root_path != NULL ? spec->exec_root_path : SANDBOX_EXEC_ROOT;
}

const char *sandbox_spec_cwd(const struct sandbox_spec *spec)
{
    return spec->cwd != NULL ? spec->cwd : sandbox_spec_exec_root(spec);
}

const char *sandbox_spec_hostname(const struct sandbox_spec *spec)
{
    return spec->hostname != NULL ? spec->hostname : SANDBOX_DEFAULT_HOSTNAME;
}

static bool spec_has_dotdot(const char *path)
{
    for (const char *p = path; *p != '\0';) {
        size_t n = strcspn(p, "/");

        if (n == 2 && p[0] == '.' && p[1] == '.')
            return true;
        p += n;
        p += strspn(p, "/");
    }
    return false;
}

static int spec_check_inside(const char *what, const char *path, char *err, size_t err_len)
{
    if (path == NULL || path[0] != '/') {
        sandbox_error_set(err, err_len, "%s must be an absolute path inside the sandbox", what);
        return -EINVAL;
    }
    if (spec_has_dotdot(path)) {
        sandbox_error_set(err, err_len, "%s %s must not contain ..", what, path);
        return -EINVAL;
    }
    return 0;
}

int sandbox_spec_check(const struct sandbox_spec *spec, char *err, size_t err_len)
{
    int rc;

    if (spec->argv == NULL || spec->argv[0] == NULL || spec->argv[0][0] == '\0') {
        sandbox_error_set(err, err_len, "argv is empty");
        return -EINVAL;
    }
    if (spec->envp == NULL) {
        sandbox_error_set(err, err_len, "envp is NULL (use an empty vector for no environment)");
        return -EINVAL;
    }
    rc = spec_check_inside("exec_root_path", sandbox_spec_exec_root(spec), err, err_len);
    if (rc != 0)
        return rc;
    if (strcmp(sandbox_spec_exec_root(spec), "/") == 0) {
        sandbox_error_set(err, err_len, "exec_root_path must not be /");
        return -EINVAL;
    }
    rc = spec_check_inside("cwd", sandbox_spec_cwd(spec), err, err_len);
    if (rc != 0)
        return rc;
    if (spec->root_dir != NULL && spec->root_dir[0] != '/') {
        sandbox_error_set(err, err_len, "root_dir %s is not absolute", spec->root_dir);
        return -EINVAL;
    }
    if (spec->lower_dir != NULL && spec->lower_dir[0] != '/') {
        sandbox_error_set(err, err_len, "lower_dir %s is not absolute", spec->lower_dir);
        return -EINVAL;
    }
    if (spec->upper_dir != NULL && (spec->lower_dir == NULL || spec->work_dir == NULL ||
                                    spec->upper_dir[0] != '/' || spec->work_dir[0] != '/')) {
        sandbox_error_set(err, err_len,
                          "upper_dir needs lower_dir and work_dir, all absolute host paths");
        return -EINVAL;
    }
    for (size_t i = 0; i < spec->n_mounts; i++) {
        const struct sandbox_mount *m = &spec->mounts[i];

        rc = spec_check_inside("mount point", m->inside, err, err_len);
        if (rc != 0)
            return rc;
        if (m->kind != SANDBOX_MOUNT_TMPFS && (m->host == NULL || m->host[0] != '/')) {
            sandbox_error_set(err, err_len, "mount %s needs an absolute host path", m->inside);
            return -EINVAL;
        }
    }
    if (spec->stdout_path != NULL && spec->stderr_path != NULL &&
        strcmp(spec->stdout_path, spec->stderr_path) == 0) {
        /* two opens of one file would overwrite each other's output */
        sandbox_error_set(err, err_len, "stdout_path and stderr_path are the same file");
        return -EINVAL;
    }
    if (spec->seccomp == SANDBOX_SECCOMP_FILE && spec->seccomp_file == NULL) {
        sandbox_error_set(err, err_len, "seccomp mode file without seccomp_file");
        return -EINVAL;
    }
    if (strlen(sandbox_spec_hostname(spec)) > 64) {
        sandbox_error_set(err, err_len, "hostname longer than 64 bytes");
        return -EINVAL;
    }
    return 0;
}

/* Strings are printed in double quotes with C escapes, so that a value with a
 * newline still takes one line; NULL prints as (none). */
static void spec_print_string(FILE *out, const char *s)
{
    if (s == NULL) {
        fputs("(none)", out);
        return;
    }
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", out);
        else if (*p == '\t')
            fputs("\\t", out);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static void spec_print_field(FILE *out, const char *key, const char *value)
{
    fprintf(out, "%s: ", key);
    spec_print_string(out, value);
    fputc('\n', out);
}

static const char *spec_mount_kind_name(enum sandbox_mount_kind kind)
{
    switch (kind) {
    case SANDBOX_MOUNT_RO:
        return "ro";
    case SANDBOX_MOUNT_RW:
        return "rw";
    case SANDBOX_MOUNT_TMPFS:
        return "tmpfs";
    }
    return "unknown";
}

void sandbox_spec_print(const struct sandbox_spec *spec, FILE *out)
{
    const struct sandbox_limits *l = &spec->limits;

    fputs("argv:", out);
    for (size_t i = 0; spec->argv != NULL && spec->argv[i] != NULL; i++) {
        fputc(' ', out);
        spec_print_string(out, spec->argv[i]);
    }
    fputc('\n', out);
    for (size_t i = 0; spec->envp != NULL && spec->envp[i] != NULL; i++)
        spec_print_field(out, "env", spec->envp[i]);
    spec_print_field(out, "lower_dir", spec->lower_dir);
    spec_print_field(out, "upper_dir", spec->upper_dir);
    spec_print_field(out, "work_dir", spec->work_dir);
    spec_print_field(out, "exec_root_path", spec->exec_root_path);
    spec_print_field(out, "cwd", spec->cwd);
    spec_print_field(out, "root_dir", spec->root_dir);
    for (size_t i = 0; i < spec->n_mounts; i++) {
        fprintf(out, "mount: %s ", spec_mount_kind_name(spec->mounts[i].kind));
        spec_print_string(out, spec->mounts[i].host);
        fputc(' ', out);
        spec_print_string(out, spec->mounts[i].inside);
        fputc('\n', out);
    }
    fprintf(out, "network: %s\n", spec->network ? "true" : "false");
    fprintf(out, "uid0: %s\n", spec->uid0 ? "true" : "false");
    spec_print_field(out, "hostname", spec->hostname);
    fprintf(out, "seccomp: %s\n", sandbox_seccomp_mode_name(spec->seccomp));
    spec_print_field(out, "seccomp_file", spec->seccomp_file);
    fprintf(out, "timeout_ms: %" PRIu64 "\n", l->timeout_ms);
    fprintf(out, "memory_bytes: %" PRIu64 "\n", l->memory_bytes);
    fprintf(out, "pids_max: %" PRIu64 "\n", l->pids_max);
    fprintf(out, "cpu_seconds: %" PRIu64 "\n", l->cpu_seconds);
    fprintf(out, "output_bytes: %" PRIu64 "\n", l->output_bytes);
    spec_print_field(out, "stdout_path", spec->stdout_path);
    spec_print_field(out, "stderr_path", spec->stderr_path);
    fprintf(out, "stdin_null: %s\n", spec->stdin_null ? "true" : "false");
    spec_print_field(out, "cgroup_parent", spec->cgroup_parent);
}

const char *sandbox_limit_name(enum sandbox_limit_hit limit)
{
    switch (limit) {
    case SANDBOX_LIMIT_NONE:
        return "none";
    case SANDBOX_LIMIT_TIMEOUT:
        return "timeout";
    case SANDBOX_LIMIT_MEMORY:
        return "memory";
    case SANDBOX_LIMIT_PIDS:
        return "pids";
    case SANDBOX_LIMIT_CPU:
        return "cpu";
    case SANDBOX_LIMIT_OUTPUT:
        return "output";
    }
    return "unknown";
}

const char *sandbox_limit_method_name(enum sandbox_limit_method method)
{
    switch (method) {
    case SANDBOX_METHOD_NONE:
        return "none";
    case SANDBOX_METHOD_CGROUP_V2:
        return "cgroup-v2";
    case SANDBOX_METHOD_CGROUP_V1:
        return "cgroup-v1";
    case SANDBOX_METHOD_RLIMIT:
        return "rlimit";
    }
    return "unknown";
}
