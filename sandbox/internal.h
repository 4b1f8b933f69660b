/*
 * internal.h - declarations shared by the files of sandbox/, not public.
 *
 * The life-cycle is nsjail's: each subsystem has a part that runs in the
 * caller before clone (build the seccomp program, create the cgroup, open the
 * output files) and a part that runs in the child, inside the namespaces
 * (mounts, loopback, capabilities, seccomp load). run.c strings them together.
 */
#ifndef CASBOX_SANDBOX_INTERNAL_H
#define CASBOX_SANDBOX_INTERNAL_H

#include <limits.h>
#include <linux/filter.h>
#include <poll.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sandbox.h"

/* error.c: writes a one-line message into buf (always terminated). */
void sandbox_error_set(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Effective values of the spec's optional strings. */
const char *sandbox_spec_exec_root(const struct sandbox_spec *spec);
const char *sandbox_spec_cwd(const struct sandbox_spec *spec);
const char *sandbox_spec_hostname(const struct sandbox_spec *spec);
/* Rejects a spec that cannot run (no argv, relative paths, ...). */
int sandbox_spec_check(const struct sandbox_spec *spec, char *err, size_t err_len);

/* --- seccomp.c --- */

/* The same, always with libseccomp (the build-time generator, the tests). */
int sandbox_seccomp_compile(enum sandbox_seccomp_mode mode, const char *file,
                            struct sock_fprog *prog, char *err, size_t err_len);
/* The program compiled at build time for mode (DEFAULT or STRICT), if any:
 * defined by the generated seccomp_prebuilt.c, or gen/seccomp_prebuilt_none.c
 * when the build cannot run the generator (cross builds). */
bool sandbox_seccomp_prebuilt(enum sandbox_seccomp_mode mode, const struct sock_filter **filter,
                              size_t *len);
/* In the child: sets no_new_privs and installs prog (when non-empty). Raw
 * syscalls only. */
int sandbox_seccomp_apply(const struct sock_fprog *prog);

/* --- caps.c --- */

/* Drops every capability for good: securebits locked, bounding set and
 * ambient set emptied, permitted/effective/inheritable cleared. */
int sandbox_caps_drop_all(char *err, size_t err_len);

/* --- net.c --- */

/* Brings the loopback interface of the current network namespace up. */
int sandbox_net_loopback_up(void);

/* --- mounts.c --- */

/* The root's plan: every host path of the allow-list and the spec looked at
 * and resolved. Built in the caller before clone, so that the child
 * allocates nothing (each page it wrote would be a copy-on-write fault). */
struct sandbox_mounts_plan;
int sandbox_mounts_plan(struct sandbox_mounts_plan **plan, const struct sandbox_spec *spec,
                        char *err, size_t err_len);
void sandbox_mounts_plan_free(struct sandbox_mounts_plan *plan);

/* In the child (pid 1, own user and mount namespace, before capabilities are
 * dropped): builds the new root from the plan, pivots into it and changes
 * into spec->cwd. Records the extra mounts' fds in its copy of the plan. */
int sandbox_mounts_build_root(const struct sandbox_spec *spec, struct sandbox_mounts_plan *plan,
                              char *err, size_t err_len);

/* --- cgroup.c --- */

struct sandbox_cgroup {
    char v2_dir[PATH_MAX];        /* "" when not used */
    char v1_memory_dir[PATH_MAX]; /* "" when not used */
    char v1_pids_dir[PATH_MAX];   /* "" when not used */
    enum sandbox_limit_method memory_method;
    enum sandbox_limit_method pids_method;
};

/* Creates the action's cgroup(s) for the spec's memory and pids limits and
 * writes the limits; what cannot be had from a cgroup is left to rlimits
 * (memory_method/pids_method say which). */
int sandbox_cgroup_create(struct sandbox_cgroup *cg, const struct sandbox_spec *spec, char *err,
                          size_t err_len);
/* Moves pid into every cgroup created. */
int sandbox_cgroup_attach(const struct sandbox_cgroup *cg, pid_t pid);
/* Was any cgroup created (then it must be removed after pid 1 is gone)? */
bool sandbox_cgroup_in_use(const struct sandbox_cgroup *cg);
/* Kills every process in the v2 cgroup (cgroup.kill); -ENOENT without one. */
int sandbox_cgroup_kill(const struct sandbox_cgroup *cg);
/* After the run: did the OOM killer act, did a fork hit pids.max? */
void sandbox_cgroup_collect(const struct sandbox_cgroup *cg, bool *oom_killed, bool *pids_hit);
/* Removes the cgroups (waits briefly while they drain). */
int sandbox_cgroup_destroy(struct sandbox_cgroup *cg);

/* In the command's process: the rlimits of the spec (cpu always, memory and
 * pids only when no cgroup took them). */
int sandbox_rlimits_apply(const struct sandbox_limits *limits,
                          enum sandbox_limit_method memory_method,
                          enum sandbox_limit_method pids_method);

/* --- output.c --- */

/* One of stdout/stderr on its way to a host file. Without a cap the file's
 * fd is handed to the command; with one, a pipe the supervisor drains. */
struct sandbox_output {
    int file_fd;  /* host file, -1 when inheriting */
    int pipe_rd;  /* supervisor's end, -1 when not capped */
    int child_fd; /* what the command gets as its fd, -1 to inherit */
    uint64_t cap;
    uint64_t written;
    bool truncated;
};

int sandbox_output_open(struct sandbox_output *out, const char *path, uint64_t cap, char *err,
                        size_t err_len);
/* Reads what the pipe has; 1 at end of file, 0 when more may come. */
int sandbox_output_drain(struct sandbox_output *out);
/* Closes the child's end after clone. */
void sandbox_output_close_child(struct sandbox_output *out);
void sandbox_output_close(struct sandbox_output *out);

/* --- child.c --- */

/* What the child reports to the supervisor over the report pipe; each message
 * is one write below PIPE_BUF, so it arrives whole. */
enum sandbox_report_kind {
    SANDBOX_REPORT_SETUP_ERROR = 1, /* msg says why, the child exits 125 */
    SANDBOX_REPORT_EXEC_ERROR,      /* msg says why, the command exits 127 */
    SANDBOX_REPORT_STATUS,          /* status is the command's wait status */
};

struct sandbox_report {
    int kind;
    int status; /* STATUS: the command's wait status */
    /* STATUS: every process of the run is gone (pid 1 killed and reaped the
     * rest); the usage below covers them all and pid 1 itself */
    int all_reaped;
    uint64_t user_us;
    uint64_t sys_us;
    uint64_t max_rss_kb;
    char msg[200];
};

/* Everything the child needs, prepared by the caller before clone. */
struct sandbox_child {
    const struct sandbox_spec *spec;
    struct sandbox_mounts_plan *plan;
    const struct sock_fprog *seccomp;
    const struct sandbox_cgroup *cgroup; /* to move into, before anything */
    unsigned outer_uid;                  /* the caller's ids, mapped to themselves or to 0 */
    unsigned outer_gid;
    int report_wr;
    int stdin_fd;  /* -1 to inherit */
    int stdout_fd; /* -1 to inherit */
    int stderr_fd; /* -1 to inherit */
    enum sandbox_limit_method memory_method;
    enum sandbox_limit_method pids_method;
};

/* Runs in the child of the clone: pid 1 of the new namespaces. */
_Noreturn void sandbox_child_main(struct sandbox_child *c);

/* A warm pid 1 (see struct sandbox_warm): what it knows from its clone. */
struct sandbox_warm_child {
    unsigned outer_uid;
    unsigned outer_gid;
    bool uid0;
    const struct sock_fprog *seccomp_default; /* the caller's, NULL: none */
    const struct sock_fprog *seccomp_strict;
    struct sock_fprog seccomp_none; /* empty */
};

#define SANDBOX_WARM_SPEC_MAX (128u * 1024u) /* larger specs take a cold clone */

/* The message that starts a warm pid 1's run, with 4 fds (SCM_RIGHTS): the
 * report pipe's write end, the command's stdin, stdout and stderr. */
struct sandbox_warm_go {
    struct sandbox_cgroup cgroup; /* created by the caller, to join */
    int seccomp;                  /* enum sandbox_seccomp_mode: NONE, DEFAULT, STRICT */
    unsigned inherit;             /* bits 0..2: stdin/out/err keep pid 1's own fd */
    uint32_t spec_len;            /* encoded spec bytes after this header */
};

/* Waits on sock for its run, then is that run's pid 1. */
_Noreturn void sandbox_child_warm_main(int sock, const struct sandbox_warm_child *w);

/* --- run.c --- */

/* A pid 1 cloned ahead of its run: its namespaces made and its ids mapped,
 * waiting on sock for the spec (the spawner keeps one). That takes the
 * clone, the new task's first wait for a CPU and the id maps off the run's
 * critical path; everything that looks at the host (the root's plan, the
 * mounts, the cgroup) still happens when the run starts, so nothing is
 * stale. */
struct sandbox_warm {
    pid_t pid; /* -1: none */
    int pidfd;
    int sock; /* the caller's end of the go channel */
    bool uid0;
    bool network;
};

/* Clones a warm pid 1 (w->pid -1 on failure). opts supplies the prebuilt
 * seccomp programs, which must outlive it. */
int sandbox_warm_start(struct sandbox_warm *w, bool uid0, bool network,
                       const struct sandbox_run_options *opts);
/* Lets it go (it exits on EOF); returns its pid, to reap, or -1. */
pid_t sandbox_warm_discard(struct sandbox_warm *w);

/* One run, step by step (what sandbox_run_with does, for a caller with a
 * poll loop of its own). The struct is the caller's; its fields are run.c's. */
struct sandbox_run {
    const struct sandbox_spec *spec;
    struct sandbox_run_options opts;
    struct sandbox_result *res;
    uint64_t start_us;
    int rc;                           /* the first error; the run is over */
    struct sock_fprog seccomp_built;  /* ours to free */
    const struct sock_fprog *seccomp; /* the program to install */
    struct sandbox_mounts_plan *plan;
    struct sandbox_cgroup cgroup;
    struct sandbox_output out;
    struct sandbox_output err;
    int report[2];
    struct sandbox_report status;  /* kind 0 until pid 1 sent STATUS */
    struct sandbox_report failure; /* kind 0 unless set-up or exec failed */
    bool report_eof;               /* pid 1 is gone: its fds are closed */
    int stdin_fd;
    int pidfd;
    pid_t pid;
    pid_t warm_discarded; /* opts.warm's pid 1 when it failed us, to reap; else -1 */
    bool exited;          /* pid 1 is done (or may be left to exit on its own) */
    bool timed_out;
    bool cancelled;
};

#define SANDBOX_RUN_MAX_CANCEL 4
#define SANDBOX_RUN_POLL_MAX   (4 + SANDBOX_RUN_MAX_CANCEL)

/* Prepares and clones; 0 when pid 1 runs. On an error the run is over
 * (sandbox_run_done is true) and res says why. opts may be NULL; what it
 * points to must outlive the run. Always end with sandbox_run_end. */
int sandbox_run_begin(struct sandbox_run *run, const struct sandbox_spec *spec,
                      const struct sandbox_run_options *opts, struct sandbox_result *res);
/* The fds to poll (at most SANDBOX_RUN_POLL_MAX), and how long at most, in
 * ms (-1: no limit); hand the same array back to sandbox_run_step. */
size_t sandbox_run_poll_fds(const struct sandbox_run *run, struct pollfd *pfd);
int sandbox_run_poll_timeout(const struct sandbox_run *run);
void sandbox_run_step(struct sandbox_run *run, const struct pollfd *pfd, size_t n);
/* Kills the run (it is reported as cancelled). */
void sandbox_run_cancel(struct sandbox_run *run);
bool sandbox_run_done(const struct sandbox_run *run);
/* Reaps (or, per opts->unreaped, leaves) pid 1, fills res, frees the rest;
 * returns what sandbox_run_with returns. */
int sandbox_run_end(struct sandbox_run *run);

/* --- wire.c --- */

#define SANDBOX_WIRE_MAX (1u << 20) /* largest encoded spec */

/* Encodes the spec into one malloc'd buffer (length-prefixed fields). */
int sandbox_spec_encode(const struct sandbox_spec *spec, uint8_t **buf, size_t *len);
/* Decodes into an initialised spec (sandbox_spec_init); on error the spec is
 * left freeable. */
int sandbox_spec_decode(const uint8_t *buf, size_t len, struct sandbox_spec *spec);

#endif
