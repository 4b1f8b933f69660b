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
 * (/usr, /bin, /lib*, /sbin symlinks, selected /etc files), or from the
 * top-level entries of spec->root_dir (an execution environment's root
 * tree, e.g. made with debootstrap); the exec root at
 * spec->exec_root_path (an overlay of the staged tree with a writable upper
 * layer); a private /tmp; a minimal /dev; a fresh /proc. No capabilities,
 * no_new_privs, a seccomp filter. Of casbox's own code this library uses
 * util/ only (mkdir -p, write-all: libc alone, nothing allocated).
 *
 * Functions return 0 or a negative errno.
 */
#ifndef CASBOX_SANDBOX_H
#define CASBOX_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

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
    uint64_t timeout_ms;   /* 0 = none; past it the whole tree is killed */
    uint64_t memory_bytes; /* 0 = none; cgroup (v2 or v1) else RLIMIT_AS */
    uint64_t pids_max;     /* 0 = none; cgroup pids else RLIMIT_NPROC */
    uint64_t cpu_seconds;  /* 0 = none; RLIMIT_CPU */
    uint64_t output_bytes; /* cap on each of stdout/stderr files; 0 = none */
};

struct sandbox_spec {
    char **argv; /* NULL-terminated, argv[0] resolved with the spec's PATH */
    char **envp; /* NULL-terminated; exactly the command's environment */

    /* The exec root. lower_dir is the staged input tree (never modified);
     * upper_dir/work_dir (same filesystem, both empty dirs) take the writes
     * through overlayfs. When upper_dir is NULL, lower_dir is bound read-write
     * directly. When lower_dir is NULL the exec root is an empty tmpfs. */
    char *lower_dir;
    char *upper_dir;
    char *work_dir;
    char *exec_root_path; /* path inside the sandbox; SANDBOX_EXEC_ROOT */
    char *cwd;            /* absolute path inside the sandbox */

    /* The root filesystem: NULL = the host's allow-list (/usr, /bin, /lib*,
     * /sbin, some of /etc). Else an absolute host path of a root tree (an
     * execution environment): every top-level entry of it except proc, dev,
     * sys, tmp and the exec root's first component is bound read-only (or
     * mirrored, for a symlink); /proc, /dev, /tmp and the exec root are the
     * sandbox's own as with the allow-list. The tree is never written. */
    char *root_dir;

    struct sandbox_mount *mounts; /* extra mounts, applied in order after the base root */
    size_t n_mounts;

    bool network;   /* share the host network namespace instead of loopback only */
    bool uid0;      /* be uid 0 inside (else the caller's uid and gid) */
    char *hostname; /* default "casbox" */

    enum sandbox_seccomp_mode seccomp;
    char *seccomp_file;

    struct sandbox_limits limits;

    /* Host files that receive stdout/stderr (created/truncated). NULL means
     * inherit the caller's fd (casbox run). stdin is /dev/null when
     * stdin_null, else inherited. */
    char *stdout_path;
    char *stderr_path;
    bool stdin_null;

    /* Cgroup parent to create the action's cgroup under, as a cgroup path
     * (e.g. "/system.slice/casbox.service"), applied in each hierarchy used;
     * NULL = the caller's own cgroup from /proc/self/cgroup. */
    char *cgroup_parent;
};

/* How a memory or pids limit was enforced (see docs/sandbox.md). */
enum sandbox_limit_method {
    SANDBOX_METHOD_NONE = 0,  /* no limit was asked for */
    SANDBOX_METHOD_CGROUP_V2, /* memory.max / pids.max in a cgroup2 child */
    SANDBOX_METHOD_CGROUP_V1, /* memory.limit_in_bytes / pids.max in v1 children */
    SANDBOX_METHOD_RLIMIT,    /* RLIMIT_AS / RLIMIT_NPROC: no cgroup could be made */
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
    int exit_code;                /* the command's exit code, or 128 + signal */
    int term_signal;              /* signal that killed it, 0 if it exited */
    enum sandbox_limit_hit limit; /* the limit that decided the outcome, if any:
                                   * memory, pids, timeout, cpu, output */
    bool stdout_truncated;
    bool stderr_truncated;
    uint64_t wall_us;
    uint64_t user_us;
    uint64_t sys_us;
    uint64_t max_rss_bytes;
    /* The runner itself failed (namespace, mount, exec): a one-line reason,
     * exit_code is then 127 for exec failures and 125 for set-up failures. */
    char error[256];
    /* How the memory and pids limits were enforced. A limit hit is only
     * detected with a cgroup; under RLIMIT_AS an allocation simply fails. */
    enum sandbox_limit_method memory_method;
    enum sandbox_limit_method pids_method;
};

/* --- the spec (sandbox/spec.c) --- */

/* An empty spec with the defaults filled in (exec root path, hostname, seccomp
 * default, stdin null). Free with sandbox_spec_free. */
void sandbox_spec_init(struct sandbox_spec *spec);
/* Frees every pointer in the spec (argv and envp and their strings, all
 * strings, mounts) and leaves it empty: fields set by hand must be malloc'd. */
void sandbox_spec_free(struct sandbox_spec *spec);
/* Replaces one of the spec's strings (e.g. &spec->cwd) with a copy of value
 * (NULL clears it). */
int sandbox_spec_set_string(char **field, const char *value);
/* Replace argv / envp with copies of a NULL-terminated vector. */
int sandbox_spec_set_argv(struct sandbox_spec *spec, const char *const *argv);
int sandbox_spec_set_envp(struct sandbox_spec *spec, const char *const *envp);
int sandbox_spec_add_mount(struct sandbox_spec *spec, enum sandbox_mount_kind kind,
                           const char *host, const char *inside);
/* Prints every field, one per line, stable order; for tests and --dry-run. */
void sandbox_spec_print(const struct sandbox_spec *spec, FILE *out);
const char *sandbox_limit_name(enum sandbox_limit_hit limit);
const char *sandbox_limit_method_name(enum sandbox_limit_method method);

/* --- running (sandbox/run.c) --- */

/* Runs the spec and waits for it. Must be called from a single-threaded
 * process (or the spawner), which must not reap other children with
 * waitpid(-1) meanwhile. Fills *res; returns a negative errno only when the
 * sandbox could not be attempted at all (res->error says why). */
int sandbox_run(const struct sandbox_spec *spec, struct sandbox_result *res);

/* Copies path to out (cap bytes) with the characters overlayfs splits its
 * mount options on (',', ':', '\\') escaped; -ENAMETOOLONG when it does not fit. */
int sandbox_overlay_escape(char *out, size_t cap, const char *path);

/* --- the spawner (sandbox/spawner.c) --- */

struct sandbox_spawner;
/* Forks the spawner; call before any thread exists (before grpc_init), from
 * the thread that lives longest (the spawner stops when it exits). */
int sandbox_spawner_start(struct sandbox_spawner **out);
/* Sends the spec to the spawner and waits for the result; thread-safe, many
 * runs may be in flight at once. */
int sandbox_spawner_run(struct sandbox_spawner *sp, const struct sandbox_spec *spec,
                        struct sandbox_result *res);
/* A per-run cancel token (cancel.c): fire it from any thread to kill the
 * one run waiting on it (its whole process tree and cgroup, cleaned up as
 * after a timeout); the run then answers with error "cancelled". */
struct sandbox_cancel {
    int fd; /* an eventfd; -1 when not initialised */
};
int sandbox_cancel_init(struct sandbox_cancel *c);
int sandbox_cancel_fire(struct sandbox_cancel *c);
bool sandbox_cancel_fired(const struct sandbox_cancel *c);
void sandbox_cancel_destroy(struct sandbox_cancel *c);
/* sandbox_spawner_run, killed when cancel (may be NULL) fires; a token
 * fired before the run starts makes it fail at once with -ECANCELED. */
int sandbox_spawner_run_cancellable(struct sandbox_spawner *sp, const struct sandbox_spec *spec,
                                    const struct sandbox_cancel *cancel,
                                    struct sandbox_result *res);
/* Kills every running sandbox and makes later runs fail at once (for a
 * daemon that is shutting down); sandbox_spawner_stop still frees sp. */
void sandbox_spawner_cancel(struct sandbox_spawner *sp);
/* Stops the spawner and frees sp: runs in flight are killed and answer
 * "cancelled"; no run may start during or after this call. */
void sandbox_spawner_stop(struct sandbox_spawner *sp);

/* --- the seccomp policy table (sandbox/seccomp.c) --- */

/* errno_value of a policy-file rule that takes a syscall off the deny list. */
#define SANDBOX_SECCOMP_ALLOW (-1)

struct sandbox_seccomp_rule {
    const char *syscall;
    int errno_value; /* returned errno, e.g. EPERM; SANDBOX_SECCOMP_ALLOW */
    /* When arg_mask is non-zero the rule applies only to calls where
     * (argument arg_index & arg_mask) == arg_value (clone with CLONE_NEWUSER,
     * ioctl TIOCSTI); otherwise to every call. */
    unsigned arg_index;
    uint64_t arg_mask;
    uint64_t arg_value;
};
/* The table of a mode (FILE: the default table, which the file's rules
 * amend; NONE: NULL); *n set to the count. Static storage. */
const struct sandbox_seccomp_rule *sandbox_seccomp_rules(enum sandbox_seccomp_mode mode, size_t *n);
const char *sandbox_seccomp_mode_name(enum sandbox_seccomp_mode mode);

/* Parses a policy file's text (format in docs/sandbox.md): one syscall per
 * line, optional `errno=NAME` or `allow`, `#` comments. name is used in error
 * messages. On success *rules is malloc'd (free with sandbox_seccomp_rules_free).
 * On a bad line: -EINVAL and err = "NAME:LINE: reason". */
int sandbox_seccomp_parse(const char *text, const char *name, struct sandbox_seccomp_rule **rules,
                          size_t *n, char *err, size_t err_len);
/* The same for a file on disk (at most 1 MiB). */
int sandbox_seccomp_parse_file(const char *path, struct sandbox_seccomp_rule **rules, size_t *n,
                               char *err, size_t err_len);
void sandbox_seccomp_rules_free(struct sandbox_seccomp_rule *rules, size_t n);

/* --- runs with options (run.c), for callers that tune them: the spawner,
 * `casbox run` (a SIGTERM signalfd, leaving pid 1 unreaped at exit) and
 * bench/sandbox_bench.c (prebuilt seccomp programs) --- */

struct sock_fprog;
struct sandbox_warm;

struct sandbox_run_options {
    /* fds that cancel the run when they become readable or hang up (the
     * spawner's request socket, a SIGTERM signalfd); at most 4 */
    const int *cancel_fds;
    size_t n_cancel_fds;
    /* programs built ahead of time for these modes (the spawner builds them
     * once); NULL: build per run */
    const struct sock_fprog *seccomp_default;
    const struct sock_fprog *seccomp_strict;
    /* Non-NULL: a warm pid 1 to use when it fits the spec (same uid0 and
     * network, a seccomp mode it has the program for, a spec below
     * SANDBOX_WARM_SPEC_MAX); its pid is then -1 (taken). */
    struct sandbox_warm *warm;
    /* Non-NULL: pid 1 may be left unreaped once it has reported that every
     * process of the run is gone (its exit, the namespaces' teardown, then
     * runs while the caller goes on). *unreaped is then its pid, which the
     * caller must reap (or exit); -1 when sandbox_run_with reaped it. Never
     * used when the run has a cgroup, which can only go after pid 1. */
    pid_t *unreaped;
};

/* sandbox_run with options (NULL: none). */
int sandbox_run_with(const struct sandbox_spec *spec, struct sandbox_result *res,
                     const struct sandbox_run_options *opts);

/* Builds the BPF program of the spec's policy in the caller (no namespace
 * needed). prog->filter is malloc'd; free it with sandbox_seccomp_program_free.
 * Mode NONE gives an empty program (len 0). DEFAULT and STRICT come from the
 * programs compiled at build time when there are some (a copy: no libseccomp
 * work, which costs about a millisecond and dirties ~200 KB of heap). */
int sandbox_seccomp_build(enum sandbox_seccomp_mode mode, const char *file, struct sock_fprog *prog,
                          char *err, size_t err_len);
void sandbox_seccomp_program_free(struct sock_fprog *prog);

#endif
