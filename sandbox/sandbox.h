/*
 * sandbox.h - run one command in a fresh set of Linux namespaces.
 *
 * A command to run is described by a struct sandbox_spec: argv, the exact
 * environment, the exec root and its writable layer, extra mounts, limits and
 * the seccomp policy. The spec is plain data: it can be built, printed and
 * compared without creating a namespace (sandbox_spec_print). One function
 * applies it (sandbox_run). The daemon, which is multi-threaded because of
 * grpc, cannot create user namespaces itself, so it starts a single-threaded
 * spawner process before grpc_init and asks it to run specs
 * (sandbox_spawner_*). `casbox run` calls sandbox_run directly.
 *
 * What the command sees: a new user (uid 0 or the caller's uid mapped), mount,
 * pid, net (loopback only unless network is set), ipc, uts and cgroup
 * namespace; a read-only root assembled from an allow-list of host paths
 * (/usr, /bin, /lib*, /sbin symlinks, selected /etc files); the exec root at
 * spec->exec_root_path (an overlay of the staged tree with a writable upper
 * layer); a private /tmp; a minimal /dev; a fresh /proc. No capabilities,
 * no_new_privs, a seccomp filter. This library depends on nothing of casbox's.
 *
 * Functions return 0 or a negative errno.
 */
#ifndef CASBOX_SANDBOX_H
#define CASBOX_SANDBOX_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define SANDBOX_EXEC_ROOT "/casbox/exec"

enum sandbox_mount_kind {
    SANDBOX_MOUNT_RO,    /* read-only bind of host -> inside */
    SANDBOX_MOUNT_RW,    /* read-write bind of host -> inside */
    SANDBOX_MOUNT_TMPFS, /* a fresh tmpfs at inside (host unused) */
};

struct sandbox_mount {
    enum sandbox_mount_kind kind;
    char *host;
    char *inside;
};

enum sandbox_seccomp_mode {
    SANDBOX_SECCOMP_DEFAULT, /* deny the dangerous table (ptrace, mount, bpf, ...) */
    SANDBOX_SECCOMP_STRICT,  /* default plus more (e.g. personality, io_uring, userfaultfd) */
    SANDBOX_SECCOMP_NONE,    /* no filter (no_new_privs still set) */
    SANDBOX_SECCOMP_FILE,    /* default plus the rules in seccomp_file */
};

struct sandbox_limits {
    uint64_t timeout_ms;      /* 0 = none; past it the whole tree is killed */
    uint64_t memory_bytes;    /* 0 = none; cgroup (v2 or v1) else RLIMIT_AS */
    uint64_t pids_max;        /* 0 = none; cgroup pids else RLIMIT_NPROC */
    uint64_t cpu_seconds;     /* 0 = none; RLIMIT_CPU */
    uint64_t output_bytes;    /* cap on each of stdout/stderr files; 0 = none */
};

struct sandbox_spec {
    char **argv; /* NULL-terminated, argv[0] resolved with the spec's PATH */
    char **envp; /* NULL-terminated; exactly the command's environment */

    /* The exec root. lower_dir is the staged input tree (never modified);
     * upper_dir/work_dir (same filesystem, both empty dirs) take the writes
     * through overlayfs. When upper_dir is NULL, lower_dir is bound read-write
     * directly. */
    char *lower_dir;
    char *upper_dir;
    char *work_dir;
    char *exec_root_path; /* path inside the sandbox; SANDBOX_EXEC_ROOT */
    char *cwd;            /* absolute path inside the sandbox */

    struct sandbox_mount *mounts; /* extra mounts, applied in order after the base root */
    size_t n_mounts;

    bool network;     /* share the host network namespace instead of loopback only */
    bool uid0;        /* be uid 0 inside (else the caller's uid and gid) */
    char *hostname;   /* default "casbox" */

    enum sandbox_seccomp_mode seccomp;
    char *seccomp_file;

    struct sandbox_limits limits;

    /* Host files that receive stdout/stderr (created/truncated). NULL means
     * inherit the caller's fd (casbox run). stdin is /dev/null when
     * stdin_null, else inherited. */
    char *stdout_path;
    char *stderr_path;
    bool stdin_null;

    /* Cgroup parent to create the action's cgroup under; NULL = autodetect
     * from /proc/self/cgroup. */
    char *cgroup_parent;
};

enum sandbox_limit_hit {
    SANDBOX_LIMIT_NONE = 0,
    SANDBOX_LIMIT_TIMEOUT,
    SANDBOX_LIMIT_MEMORY,
    SANDBOX_LIMIT_PIDS,
    SANDBOX_LIMIT_CPU,
    SANDBOX_LIMIT_OUTPUT,
};

struct sandbox_result {
    int exit_code;       /* the command's exit code, or 128 + signal */
    int term_signal;     /* signal that killed it, 0 if it exited */
    enum sandbox_limit_hit limit; /* first limit hit, if any */
    bool stdout_truncated;
    bool stderr_truncated;
    uint64_t wall_us;
    uint64_t user_us;
    uint64_t sys_us;
    uint64_t max_rss_bytes;
    /* The runner itself failed (namespace, mount, exec): a one-line reason,
     * exit_code is then 127 for exec failures and 125 for set-up failures. */
    char error[256];
};

/* --- the spec (sandbox/spec.c) --- */

/* An empty spec with the defaults filled in (exec root path, hostname, seccomp
 * default, stdin null). Free with sandbox_spec_free. */
void sandbox_spec_init(struct sandbox_spec *spec);
void sandbox_spec_free(struct sandbox_spec *spec);
int sandbox_spec_add_mount(struct sandbox_spec *spec, enum sandbox_mount_kind kind,
                           const char *host, const char *inside);
/* Prints every field, one per line, stable order; for tests and --dry-run. */
void sandbox_spec_print(const struct sandbox_spec *spec, FILE *out);
const char *sandbox_limit_name(enum sandbox_limit_hit limit);

/* --- running (sandbox/run.c) --- */

/* Runs the spec and waits for it. Must be called from a single-threaded
 * process (or the spawner). Fills *res; returns a negative errno only when the
 * sandbox could not be attempted at all (res->error says why). */
int sandbox_run(const struct sandbox_spec *spec, struct sandbox_result *res);

/* --- the spawner (sandbox/spawner.c) --- */

struct sandbox_spawner;
/* Forks the spawner; call before any thread exists (before grpc_init). */
int sandbox_spawner_start(struct sandbox_spawner **out);
/* Sends the spec to the spawner and waits for the result; thread-safe, many
 * runs may be in flight at once. */
int sandbox_spawner_run(struct sandbox_spawner *sp, const struct sandbox_spec *spec,
                        struct sandbox_result *res);
/* Stops the spawner (running sandboxes are killed) and frees sp. */
void sandbox_spawner_stop(struct sandbox_spawner *sp);

/* --- the seccomp policy table (sandbox/seccomp.c) --- */

struct sandbox_seccomp_rule {
    const char *syscall;
    int errno_value; /* returned errno, e.g. EPERM */
};
/* The rules of a mode (not FILE); *n set to the count. Static storage. */
const struct sandbox_seccomp_rule *sandbox_seccomp_rules(enum sandbox_seccomp_mode mode, size_t *n);

#endif
