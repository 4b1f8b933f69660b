/*
 * seccomp.c - the seccomp policy: the deny tables of the DEFAULT and STRICT
 * modes, the policy-file parser of the FILE mode, and the BPF program.
 *
 * The policy is a deny list on top of "allow": a build runs arbitrary
 * compilers and tests, so an allow list would break them, while the calls
 * below are the ones a build never needs and an escape always does (kernel
 * attack surface, namespace and mount games, other processes' memory).
 * The program is built with libseccomp in the caller, before clone, and
 * exported as plain BPF, so the child installs it with one raw syscall and no
 * allocation. Denied calls fail with an errno instead of killing the process,
 * so that a tool that probes (e.g. for io_uring) falls back cleanly.
 */
#include <errno.h>
#include <fcntl.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/seccomp.h>
#include <sched.h>

#include "internal.h"

/* clang-format off */
#define DENY(name)                 {.syscall = name, .errno_value = EPERM}
#define DENY_ERRNO(name, e)        {.syscall = name, .errno_value = e}
#define DENY_ARG(name, i, mask, v) {.syscall = name, .errno_value = EPERM, \
                                    .arg_index = i, .arg_mask = mask, .arg_value = v}

/* The DEFAULT table; STRICT repeats it and adds more. */
#define SECCOMP_DEFAULT_RULES                                                  \
    /* other processes' memory */                                             \
    DENY("ptrace"), DENY("process_vm_readv"), DENY("process_vm_writev"),      \
    /* the mount table: the sandbox's root must stay as built */              \
    DENY("mount"), DENY("umount2"), DENY("pivot_root"), DENY("move_mount"),   \
    DENY("open_tree"), DENY("fsopen"), DENY("fsconfig"), DENY("fsmount"),     \
    DENY("fspick"), DENY("mount_setattr"),                                    \
    /* new namespaces: the user namespace is the door to the rest */          \
    DENY("unshare"), DENY("setns"),                                           \
    DENY_ARG("clone", 0, CLONE_NEWUSER, CLONE_NEWUSER),                       \
    /* clone3 passes its flags in memory, which seccomp cannot read; ENOSYS   \
     * makes glibc fall back to clone, which is checked above */              \
    DENY_ERRNO("clone3", ENOSYS),                                             \
    /* the kernel itself */                                                   \
    DENY("kexec_load"), DENY("kexec_file_load"), DENY("init_module"),         \
    DENY("finit_module"), DENY("delete_module"), DENY("bpf"),                 \
    DENY("perf_event_open"), DENY("userfaultfd"), DENY("lookup_dcookie"),     \
    DENY("reboot"), DENY("swapon"), DENY("swapoff"), DENY("acct"),            \
    DENY("quotactl"), DENY("quotactl_fd"), DENY("iopl"), DENY("ioperm"),      \
    /* keyrings are not namespaced */                                         \
    DENY("keyctl"), DENY("add_key"), DENY("request_key"),                     \
    /* the clock is the host's */                                             \
    DENY("settimeofday"), DENY("clock_settime"), DENY("clock_adjtime"),       \
    DENY("adjtimex"),                                                         \
    /* typing into the caller's terminal (casbox run inherits it) */          \
    DENY_ARG("ioctl", 1, 0xffffffffu, TIOCSTI),                               \
    DENY_ARG("ioctl", 1, 0xffffffffu, TIOCLINUX)
/* clang-format on */

static const struct sandbox_seccomp_rule seccomp_default_rules[] = {SECCOMP_DEFAULT_RULES};

static const struct sandbox_seccomp_rule seccomp_strict_rules[] = {
    SECCOMP_DEFAULT_RULES,
    /* execution domains (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE) */
    DENY("personality"),
    /* io_uring: a large attack surface that bypasses per-syscall filtering */
    DENY("io_uring_setup"),
    DENY("io_uring_enter"),
    DENY("io_uring_register"),
    /* file handles reach files outside the mount tree */
    DENY("name_to_handle_at"),
    DENY("open_by_handle_at"),
    /* other processes and the memory policy of the host */
    DENY("kcmp"),
    DENY("pidfd_getfd"),
    DENY("process_madvise"),
    DENY("migrate_pages"),
    DENY("move_pages"),
    DENY("mbind"),
    DENY("set_mempolicy"),
    /* obsolete or host-wide calls */
    DENY("syslog"),
    DENY("vhangup"),
    DENY("uselib"),
    DENY("ustat"),
    DENY("sysfs"),
    DENY("_sysctl"),
    DENY("nfsservctl"),
    DENY("modify_ldt"),
    DENY("fanotify_init"),
    DENY("memfd_secret"),
    DENY("chroot"),
};

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

const struct sandbox_seccomp_rule *sandbox_seccomp_rules(enum sandbox_seccomp_mode mode, size_t *n)
{
    switch (mode) {
    case SANDBOX_SECCOMP_DEFAULT:
    case SANDBOX_SECCOMP_FILE:
        *n = ARRAY_LEN(seccomp_default_rules);
        return seccomp_default_rules;
    case SANDBOX_SECCOMP_STRICT:
        *n = ARRAY_LEN(seccomp_strict_rules);
        return seccomp_strict_rules;
    case SANDBOX_SECCOMP_NONE:
        break;
    }
    *n = 0;
    return NULL;
}

const char *sandbox_seccomp_mode_name(enum sandbox_seccomp_mode mode)
{
    switch (mode) {
    case SANDBOX_SECCOMP_DEFAULT:
        return "default";
    case SANDBOX_SECCOMP_STRICT:
        return "strict";
    case SANDBOX_SECCOMP_NONE:
        return "none";
    case SANDBOX_SECCOMP_FILE:
        return "file";
    }
    return "unknown";
}

/* errno names accepted by `errno=NAME` in a policy file. */
static const struct {
    const char *name;
    int value;
} seccomp_errno_names[] = {
    {"EPERM", EPERM},
    {"ENOENT", ENOENT},
    {"ESRCH", ESRCH},
    {"EIO", EIO},
    {"ENXIO", ENXIO},
    {"EBADF", EBADF},
    {"EAGAIN", EAGAIN},
    {"ENOMEM", ENOMEM},
    {"EACCES", EACCES},
    {"EFAULT", EFAULT},
    {"EBUSY", EBUSY},
    {"EEXIST", EEXIST},
    {"ENODEV", ENODEV},
    {"EINVAL", EINVAL},
    {"ENOTTY", ENOTTY},
    {"EROFS", EROFS},
    {"ENOSYS", ENOSYS},
    {"ENOTSUP", ENOTSUP},
    {"EOPNOTSUPP", EOPNOTSUPP},
    {"EAFNOSUPPORT", EAFNOSUPPORT},
    {"EPROTONOSUPPORT", EPROTONOSUPPORT},
    {"ENETUNREACH", ENETUNREACH},
    {"ECONNREFUSED", ECONNREFUSED},
};

static int seccomp_parse_errno(const char *s, int *value)
{
    char *end;
    long v;

    for (size_t i = 0; i < ARRAY_LEN(seccomp_errno_names); i++) {
        if (strcmp(s, seccomp_errno_names[i].name) == 0) {
            *value = seccomp_errno_names[i].value;
            return 0;
        }
    }
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 4095)
        return -EINVAL;
    *value = (int)v;
    return 0;
}

void sandbox_seccomp_rules_free(struct sandbox_seccomp_rule *rules, size_t n)
{
    if (rules == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free((char *)rules[i].syscall);
    free(rules);
}

/* Splits one line (modified in place) into at most 3 blank-separated words. */
static size_t seccomp_split_words(char *line, char **words, size_t max)
{
    size_t n = 0;
    char *p = line;

    for (;;) {
        p += strspn(p, " \t\r");
        if (*p == '\0')
            return n;
        if (n == max)
            return max + 1;
        words[n++] = p;
        p += strcspn(p, " \t\r");
        if (*p != '\0')
            *p++ = '\0';
    }
}

static int seccomp_parse_line(char *line, const char *name, unsigned lineno,
                              struct sandbox_seccomp_rule *rule, bool *empty, char *err,
                              size_t err_len)
{
    char *words[2];
    char *hash = strchr(line, '#');
    size_t n;
    int value = EPERM;

    *empty = false;
    if (hash != NULL)
        *hash = '\0';
    n = seccomp_split_words(line, words, 2);
    if (n == 0) {
        *empty = true;
        return 0;
    }
    if (n > 2) {
        sandbox_error_set(err, err_len, "%s:%u: expected `SYSCALL [errno=NAME|allow]`", name,
                          lineno);
        return -EINVAL;
    }
    if (seccomp_syscall_resolve_name(words[0]) == __NR_SCMP_ERROR) {
        sandbox_error_set(err, err_len, "%s:%u: unknown syscall '%s'", name, lineno, words[0]);
        return -EINVAL;
    }
    if (n == 2) {
        if (strcmp(words[1], "allow") == 0) {
            value = SANDBOX_SECCOMP_ALLOW;
        } else if (strncmp(words[1], "errno=", 6) != 0 ||
                   seccomp_parse_errno(words[1] + 6, &value) != 0) {
            sandbox_error_set(err, err_len, "%s:%u: bad action '%s' (errno=NAME or allow)", name,
                              lineno, words[1]);
            return -EINVAL;
        }
    }
    memset(rule, 0, sizeof(*rule));
    rule->syscall = strdup(words[0]);
    if (rule->syscall == NULL)
        return -ENOMEM;
    rule->errno_value = value;
    return 0;
}

int sandbox_seccomp_parse(const char *text, const char *name, struct sandbox_seccomp_rule **rules,
                          size_t *n, char *err, size_t err_len)
{
    struct sandbox_seccomp_rule *out = NULL, *grown;
    size_t count = 0, cap = 0;
    char *copy = strdup(text), *line, *next;
    unsigned lineno = 0;
    int rc = -ENOMEM;

    if (copy == NULL)
        goto out;
    for (line = copy; line != NULL; line = next) {
        struct sandbox_seccomp_rule rule;
        bool empty;

        lineno++;
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        rc = seccomp_parse_line(line, name, lineno, &rule, &empty, err, err_len);
        if (rc != 0)
            goto out;
        if (empty)
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            grown = realloc(out, cap * sizeof(*out));
            if (grown == NULL) {
                free((char *)rule.syscall);
                rc = -ENOMEM;
                goto out;
            }
            out = grown;
        }
        out[count++] = rule;
    }
    *rules = out;
    *n = count;
    out = NULL;
    rc = 0;
out:
    if (rc == -ENOMEM)
        sandbox_error_set(err, err_len, "%s: out of memory", name);
    sandbox_seccomp_rules_free(out, count);
    free(copy);
    return rc;
}

int sandbox_seccomp_parse_file(const char *path, struct sandbox_seccomp_rule **rules, size_t *n,
                               char *err, size_t err_len)
{
    const size_t max = 1u << 20;
    char *text = NULL;
    size_t len = 0;
    ssize_t got;
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        sandbox_error_set(err, err_len, "seccomp file %s: %s", path, strerror(-rc));
        return rc;
    }
    text = malloc(max + 1);
    if (text == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    while ((got = read(fd, text + len, max + 1 - len)) > 0)
        len += (size_t)got;
    if (got < 0) {
        rc = -errno;
        sandbox_error_set(err, err_len, "seccomp file %s: %s", path, strerror(-rc));
        goto out;
    }
    if (len > max) {
        rc = -EFBIG;
        sandbox_error_set(err, err_len, "seccomp file %s: larger than 1 MiB", path);
        goto out;
    }
    text[len] = '\0';
    if (strlen(text) != len) {
        rc = -EINVAL;
        sandbox_error_set(err, err_len, "seccomp file %s: contains a NUL byte", path);
        goto out;
    }
    rc = sandbox_seccomp_parse(text, path, rules, n, err, err_len);
out:
    free(text);
    close(fd);
    return rc;
}

/* Is the syscall named in the file's rules (which then replace the table's)? */
static bool seccomp_overridden(const char *syscall, const struct sandbox_seccomp_rule *extra,
                               size_t n_extra)
{
    for (size_t i = 0; i < n_extra; i++)
        if (strcmp(extra[i].syscall, syscall) == 0)
            return true;
    return false;
}

static int seccomp_add_rule(scmp_filter_ctx ctx, const struct sandbox_seccomp_rule *r, char *err,
                            size_t err_len)
{
    int nr = seccomp_syscall_resolve_name(r->syscall);
    int rc;

    if (r->errno_value == SANDBOX_SECCOMP_ALLOW)
        return 0;
    if (nr == __NR_SCMP_ERROR) {
        sandbox_error_set(err, err_len, "seccomp: unknown syscall %s", r->syscall);
        return -EINVAL;
    }
    if (r->arg_mask != 0)
        rc =
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO((unsigned)r->errno_value), nr, 1,
                             SCMP_CMP(r->arg_index, SCMP_CMP_MASKED_EQ, r->arg_mask, r->arg_value));
    else
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO((unsigned)r->errno_value), nr, 0);
    if (rc != 0)
        sandbox_error_set(err, err_len, "seccomp: rule for %s: %s", r->syscall, strerror(-rc));
    return rc;
}

/* Exports the filter through a memfd into a malloc'd array. */
static int seccomp_export(scmp_filter_ctx ctx, struct sock_fprog *prog, char *err, size_t err_len)
{
    struct sock_filter *filter = NULL;
    struct stat st;
    int fd, rc;

    fd = memfd_create("casbox-seccomp", MFD_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        sandbox_error_set(err, err_len, "seccomp: memfd_create: %s", strerror(-rc));
        return rc;
    }
    rc = seccomp_export_bpf(ctx, fd);
    if (rc != 0) {
        sandbox_error_set(err, err_len, "seccomp: export: %s", strerror(-rc));
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if (st.st_size == 0 || st.st_size % sizeof(struct sock_filter) != 0 ||
        st.st_size / sizeof(struct sock_filter) > BPF_MAXINSNS) {
        rc = -EINVAL;
        sandbox_error_set(err, err_len, "seccomp: exported program has a bad size");
        goto out;
    }
    filter = malloc((size_t)st.st_size);
    if (filter == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if (pread(fd, filter, (size_t)st.st_size, 0) != st.st_size) {
        rc = -EIO;
        sandbox_error_set(err, err_len, "seccomp: short read of the exported program");
        goto out;
    }
    prog->filter = filter;
    prog->len = (unsigned short)(st.st_size / sizeof(struct sock_filter));
    filter = NULL;
    rc = 0;
out:
    free(filter);
    close(fd);
    return rc;
}

/* A program compiled at build time (gen/seccomp_gen.c) for the mode, as a
 * malloc'd copy; false when there is none. */
static bool seccomp_copy_prebuilt(enum sandbox_seccomp_mode mode, struct sock_fprog *prog)
{
    const struct sock_filter *filter;
    size_t len;

    if (!sandbox_seccomp_prebuilt(mode, &filter, &len) || len == 0 || len > BPF_MAXINSNS)
        return false;
    prog->filter = malloc(len * sizeof(*filter));
    if (prog->filter == NULL)
        return false;
    memcpy(prog->filter, filter, len * sizeof(*filter));
    prog->len = (unsigned short)len;
    return true;
}

int sandbox_seccomp_build(enum sandbox_seccomp_mode mode, const char *file, struct sock_fprog *prog,
                          char *err, size_t err_len)
{
    prog->filter = NULL;
    prog->len = 0;
    if (file == NULL && seccomp_copy_prebuilt(mode, prog))
        return 0;
    return sandbox_seccomp_compile(mode, file, prog, err, err_len);
}

int sandbox_seccomp_compile(enum sandbox_seccomp_mode mode, const char *file,
                            struct sock_fprog *prog, char *err, size_t err_len)
{
    struct sandbox_seccomp_rule *extra = NULL;
    const struct sandbox_seccomp_rule *table;
    scmp_filter_ctx ctx = NULL;
    size_t n_table, n_extra = 0;
    int rc;

    prog->filter = NULL;
    prog->len = 0;
    if (mode == SANDBOX_SECCOMP_NONE)
        return 0;
    if (mode == SANDBOX_SECCOMP_FILE) {
        rc = sandbox_seccomp_parse_file(file, &extra, &n_extra, err, err_len);
        if (rc != 0)
            return rc;
    }
    table = sandbox_seccomp_rules(mode, &n_table);
    if (table == NULL) {
        sandbox_error_set(err, err_len, "seccomp: unknown mode %d", (int)mode);
        rc = -EINVAL;
        goto out;
    }
    ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (ctx == NULL) {
        rc = -ENOMEM;
        sandbox_error_set(err, err_len, "seccomp: seccomp_init failed");
        goto out;
    }
    /* 32-bit calls go through the same table instead of killing the
     * process: a 32-bit tool in a build is legitimate. x32 calls (a dead ABI)
     * are left to libseccomp's default for a foreign ABI: kill. */
    if (seccomp_arch_native() == SCMP_ARCH_X86_64) {
        rc = seccomp_arch_add(ctx, SCMP_ARCH_X86);
        if (rc != 0 && rc != -EEXIST) {
            sandbox_error_set(err, err_len, "seccomp: adding x86: %s", strerror(-rc));
            goto out;
        }
    }
    for (size_t i = 0; i < n_table; i++) {
        if (seccomp_overridden(table[i].syscall, extra, n_extra))
            continue;
        rc = seccomp_add_rule(ctx, &table[i], err, err_len);
        if (rc != 0)
            goto out;
    }
    for (size_t i = 0; i < n_extra; i++) {
        /* A later line about the same syscall wins. */
        if (seccomp_overridden(extra[i].syscall, extra + i + 1, n_extra - i - 1))
            continue;
        rc = seccomp_add_rule(ctx, &extra[i], err, err_len);
        if (rc != 0)
            goto out;
    }
    rc = seccomp_export(ctx, prog, err, err_len);
out:
    if (ctx != NULL)
        seccomp_release(ctx);
    sandbox_seccomp_rules_free(extra, n_extra);
    return rc;
}

void sandbox_seccomp_program_free(struct sock_fprog *prog)
{
    free(prog->filter);
    prog->filter = NULL;
    prog->len = 0;
}

int sandbox_seccomp_apply(const struct sock_fprog *prog)
{
    /* no_new_privs first: it is required to install a filter without
     * CAP_SYS_ADMIN, and it stays set in mode NONE too. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -errno;
    if (prog->len == 0)
        return 0;
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog) != 0)
        return -errno;
    return 0;
}
