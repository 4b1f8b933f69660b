/*
 * test_sandbox_run.c - sandbox_run and the spawner on the real kernel.
 *
 * Every test creates real namespaces; they are skipped (with a message) only
 * when user namespaces are unavailable. The test binary doubles as a probe:
 * bound read-only into the sandbox at /casbox/probe and started as
 * `probe MODE`, it tries syscalls and connections from the inside and prints
 * what happened, one `name=result` per line.
 *
 * Run as root (limits through cgroup v1 here) and as an ordinary user
 * (limits through rlimits): the assertions depend on res.memory_method and
 * res.pids_method, never on who runs the test.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sandbox/sandbox.h"

#define PROBE_INSIDE "/casbox/probe"

/* Test-wide facts, found once in main (not mutated by the tests). */
static char probe_host[4096];
static bool userns_ok;

/* --- the probe, run inside the sandbox --- */

static void probe_report(const char *name, long rc)
{
    if (rc >= 0)
        printf("%s=ok\n", name);
    else
        printf("%s=%s\n", name, strerrorname_np(errno));
}

static int probe_syscalls(void)
{
    struct utsname u;
    long rc;
    int fd;

    probe_report("ptrace", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
    probe_report("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
    probe_report("umount2", umount2("/proc", MNT_DETACH));
    probe_report("unshare", unshare(CLONE_NEWUSER));
    rc = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0);
    if (rc == 0)
        _exit(0);
    if (rc > 0)
        waitpid((pid_t)rc, NULL, 0);
    probe_report("clone_newuser", rc);
    probe_report("clone3", syscall(SYS_clone3, NULL, 0));
    probe_report("bpf", syscall(SYS_bpf, 0, NULL, 0));
    probe_report("keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0));
    fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    probe_report("setns", fd < 0 ? -1 : setns(fd, 0));
    probe_report("uname", uname(&u));
    probe_report("sethostname", sethostname("x", 1));
    probe_report("write_sysrq", (fd = open("/proc/sysrq-trigger", O_WRONLY)) < 0 ? -1 : 0);
    probe_report("tiocsti", ioctl(0, TIOCSTI, "x"));
    return 0;
}

static int probe_net(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(80)};
    socklen_t alen = sizeof(a);
    int s, l;

    a.sin_addr.s_addr = inet_addr("1.1.1.1");
    s = socket(AF_INET, SOCK_STREAM, 0);
    probe_report("outside", connect(s, (struct sockaddr *)&a, sizeof(a)));
    close(s);
    l = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(l, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &alen) != 0) {
        probe_report("loopback", -1);
        return 0;
    }
    s = socket(AF_INET, SOCK_STREAM, 0);
    probe_report("loopback", connect(s, (struct sockaddr *)&a, sizeof(a)));
    return 0;
}

/* Forks children that wait, until fork fails; prints how many it got. */
static int probe_forkbomb(void)
{
    int n = 0;

    for (; n < 1000; n++) {
        pid_t pid = fork();

        if (pid == 0) {
            pause();
            _exit(0);
        }
        if (pid < 0)
            break;
    }
    printf("forked=%d errno=%s\n", n, n < 1000 ? strerrorname_np(errno) : "none");
    return 0; /* the children die with the namespace */
}

static int probe_main(const char *mode)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(mode, "syscalls") == 0)
        return probe_syscalls();
    if (strcmp(mode, "net") == 0)
        return probe_net();
    if (strcmp(mode, "forkbomb") == 0)
        return probe_forkbomb();
    return 2;
}

/* --- helpers --- */

struct fixture {
    char dir[64];   /* a fresh host directory for the test */
    char lower[96]; /* dir/lower, dir/upper, dir/work */
    char upper[96];
    char work[96];
    char out[96]; /* stdout and stderr files */
    char err[96];
    struct sandbox_spec spec;
    struct sandbox_result res;
};

static const char *const base_env[] = {"PATH=/usr/bin:/bin", "ASAN_OPTIONS=detect_leaks=0", NULL};

static void require_userns(void)
{
    if (!userns_ok) {
        print_message("user namespaces are not available here: skipping\n");
        skip();
    }
}

static int fixture_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/casbox-run-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->lower, sizeof(f->lower), "%s/lower", f->dir);
    snprintf(f->upper, sizeof(f->upper), "%s/upper", f->dir);
    snprintf(f->work, sizeof(f->work), "%s/work", f->dir);
    snprintf(f->out, sizeof(f->out), "%s/stdout", f->dir);
    snprintf(f->err, sizeof(f->err), "%s/stderr", f->dir);
    assert_int_equal(mkdir(f->lower, 0755), 0);
    assert_int_equal(mkdir(f->upper, 0755), 0);
    assert_int_equal(mkdir(f->work, 0755), 0);
    sandbox_spec_init(&f->spec);
    assert_int_equal(sandbox_spec_set_envp(&f->spec, base_env), 0);
    assert_int_equal(sandbox_spec_set_string(&f->spec.lower_dir, f->lower), 0);
    assert_int_equal(sandbox_spec_set_string(&f->spec.upper_dir, f->upper), 0);
    assert_int_equal(sandbox_spec_set_string(&f->spec.work_dir, f->work), 0);
    assert_int_equal(sandbox_spec_set_string(&f->spec.stdout_path, f->out), 0);
    assert_int_equal(sandbox_spec_set_string(&f->spec.stderr_path, f->err), 0);
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    sandbox_spec_free(&f->spec);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void set_argv(struct sandbox_spec *spec, const char *first, ...)
{
    const char *argv[16];
    size_t n = 0;
    va_list ap;

    argv[n++] = first;
    va_start(ap, first);
    while (n < 15 && (argv[n] = va_arg(ap, const char *)) != NULL)
        n++;
    va_end(ap);
    argv[n] = NULL;
    assert_int_equal(sandbox_spec_set_argv(spec, argv), 0);
}

static void clear_mounts(struct sandbox_spec *spec)
{
    for (size_t i = 0; i < spec->n_mounts; i++) {
        free(spec->mounts[i].host);
        free(spec->mounts[i].inside);
    }
    free(spec->mounts);
    spec->mounts = NULL;
    spec->n_mounts = 0;
}

static void use_probe(struct sandbox_spec *spec, const char *mode)
{
    assert_int_equal(sandbox_spec_add_mount(spec, SANDBOX_MOUNT_RO, probe_host, PROBE_INSIDE), 0);
    set_argv(spec, PROBE_INSIDE, "probe", mode, NULL);
}

/* The file's content (at most 64 KiB), NUL-terminated; free it. */
static char *slurp(const char *path)
{
    char *buf = calloc(1, 65537);
    ssize_t n;
    int fd;

    assert_non_null(buf);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return buf;
    n = read(fd, buf, 65536);
    assert_true(n >= 0);
    close(fd);
    return buf;
}

static void write_file(const char *path, const char *content, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* Runs the fixture's spec; fails the test on a set-up error. */
static void run_ok(struct fixture *f)
{
    int rc = sandbox_run(&f->spec, &f->res);

    if (rc != 0 || f->res.error[0] != '\0') {
        char *err = slurp(f->err);

        fail_msg("sandbox_run: rc %d, exit %d, error '%s', stderr '%s'", rc, f->res.exit_code,
                 f->res.error, err);
    }
}

static void expect_output(struct fixture *f, const char *want)
{
    char *got = slurp(f->out);

    if (strcmp(got, want) != 0) {
        char *err = slurp(f->err);

        fail_msg("stdout '%s', want '%s' (stderr '%s')", got, want, err);
    }
    free(got);
}

static void expect_line(const char *text, const char *line)
{
    char want[256];

    snprintf(want, sizeof(want), "%s\n", line);
    if (strncmp(text, want, strlen(want)) != 0 &&
        (snprintf(want, sizeof(want), "\n%s\n", line), strstr(text, want) == NULL))
        fail_msg("no line '%s' in:\n%s", line, text);
}

static void expect_no_line(const char *text, const char *line)
{
    char want[256];

    snprintf(want, sizeof(want), "%s\n", line);
    if (strncmp(text, want, strlen(want)) == 0 ||
        (snprintf(want, sizeof(want), "\n%s\n", line), strstr(text, want) != NULL))
        fail_msg("unexpected line '%s' in:\n%s", line, text);
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* --- the tests --- */

static void test_echo_to_file(void **state)
{
    struct fixture *f = *state;

    require_userns();
    set_argv(&f->spec, "echo", "hi", NULL);
    run_ok(f);
    assert_int_equal(f->res.exit_code, 0);
    assert_int_equal(f->res.term_signal, 0);
    assert_int_equal(f->res.limit, SANDBOX_LIMIT_NONE);
    assert_true(f->res.wall_us > 0);
    assert_true(f->res.max_rss_bytes > 0);
    expect_output(f, "hi\n");
}

static void test_exit_code(void **state)
{
    struct fixture *f = *state;

    require_userns();
    set_argv(&f->spec, "sh", "-c", "echo oops >&2; exit 3", NULL);
    run_ok(f);
    assert_int_equal(f->res.exit_code, 3);
    assert_int_equal(f->res.term_signal, 0);
    char *err = slurp(f->err);
    assert_string_equal(err, "oops\n");
    free(err);
}

static void test_killed_by_signal(void **state)
{
    struct fixture *f = *state;

    require_userns();
    set_argv(&f->spec, "sh", "-c", "kill -TERM $$; sleep 5", NULL);
    run_ok(f);
    assert_int_equal(f->res.term_signal, SIGTERM);
    assert_int_equal(f->res.exit_code, 128 + SIGTERM);
    assert_int_equal(f->res.limit, SANDBOX_LIMIT_NONE);
}

static void test_environment_is_exact(void **state)
{
    struct fixture *f = *state;
    const char *envp[] = {"PATH=/usr/bin:/bin", "FOO=bar baz", "EMPTY=", NULL};

    require_userns();
    assert_int_equal(sandbox_spec_set_envp(&f->spec, envp), 0);
    set_argv(&f->spec, "env", NULL);
    run_ok(f);
    assert_int_equal(f->res.exit_code, 0);
    expect_output(f, "PATH=/usr/bin:/bin\nFOO=bar baz\nEMPTY=\n");
}

static void test_path_from_envp(void **state)
{
    struct fixture *f = *state;
    const char *envp[] = {"PATH=/nonexistent:" SANDBOX_EXEC_ROOT "/bin:/usr/bin", NULL};
    char path[160];

    require_userns();
    snprintf(path, sizeof(path), "%s/bin", f->lower);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/bin/mytool", f->lower);
    write_file(path, "#!/bin/sh\necho \"mytool $1\"\n", 0755);
    assert_int_equal(sandbox_spec_set_envp(&f->spec, envp), 0);
    set_argv(&f->spec, "mytool", "ran", NULL);
    run_ok(f);
    assert_int_equal(f->res.exit_code, 0);
    expect_output(f, "mytool ran\n");
}

static void test_exec_failure(void **state)
{
    struct fixture *f = *state;

    require_userns();
    set_argv(&f->spec, "no-such-command-casbox", NULL);
    assert_int_equal(sandbox_run(&f->spec, &f->res), 0);
    assert_int_equal(f->res.exit_code, 127);
    assert_string_equal(f->res.error, "exec no-such-command-casbox: No such file or directory");
}

static void test_setup_failure(void **state)
{
    struct fixture *f = *state;

    require_userns();
    set_argv(&f->spec, "true", NULL);
    assert_int_equal(sandbox_spec_set_string(&f->spec.lower_dir, "/nonexistent/casbox"), 0);
    assert_int_equal(sandbox_run(&f->spec, &f->res), 0);
    assert_int_equal(f->res.exit_code, 125);
    assert_non_null(strstr(f->res.error, "lower_dir /nonexistent/casbox"));

    /* an invalid spec is refused before anything starts */
    assert_int_equal(sandbox_spec_set_string(&f->spec.cwd, "relative"), 0);
    assert_int_equal(sandbox_run(&f->spec, &f->res), -EINVAL);
    assert_int_equal(f->res.exit_code, 125);
    assert_non_null(strstr(f->res.error, "cwd"));
}

static void test_host_secrets_hidden(void **state)
{
    struct fixture *f = *state;

    require_userns();
    /* each line prints only if the path is visible */
    set_argv(&f->spec, "sh", "-c",
             "for p in /root /home /etc/shadow /etc/gshadow /etc/ssh /var /run /opt /srv "
             "/mnt /boot /work /sys " SANDBOX_EXEC_ROOT "/../../tmp/casbox; do "
             "  [ -e \"$p\" ] && echo \"visible $p\"; done; "
             "[ -r /etc/passwd ] && [ -x /bin/sh ] && [ -r /etc/ld.so.cache ] && echo base-ok",
             NULL);
    run_ok(f);
    expect_output(f, "base-ok\n");
}

static void test_filesystem_layout(void **state)
{
    struct fixture *f = *state;

    require_userns();
    set_argv(&f->spec, "sh", "-c",
             "touch /usr/x 2>/dev/null && echo usr-writable; "
             "touch /etc/x 2>/dev/null && echo etc-writable; "
             "touch /x 2>/dev/null && echo root-writable; "
             "echo t > /tmp/t && echo tmp-ok; "
             "echo s > /dev/shm/s && echo shm-ok; "
             "echo n > /dev/null && echo null-ok; "
             "head -c 4 /dev/urandom | wc -c; "
             "[ -e /dev/fd/0 ] && echo fd-ok; "
             "pwd; echo $$; cat /proc/self/cgroup | grep -c -v ':/$'",
             NULL);
    run_ok(f);
    assert_int_equal(f->res.exit_code, 1); /* grep -c found 0 non-root cgroup lines */
    expect_output(f, "tmp-ok\nshm-ok\nnull-ok\n4\nfd-ok\n" SANDBOX_EXEC_ROOT "\n2\n0\n");
}

static void test_hostname_and_ids(void **state)
{
    struct fixture *f = *state;
    char want[128];

    require_userns();
    set_argv(&f->spec, "sh", "-c", "hostname; id -u; id -g", NULL);
    run_ok(f);
    snprintf(want, sizeof(want), "casbox\n%u\n%u\n", (unsigned)geteuid(), (unsigned)getegid());
    expect_output(f, want);

    f->spec.uid0 = true;
    assert_int_equal(sandbox_spec_set_string(&f->spec.hostname, "box7"), 0);
    run_ok(f);
    expect_output(f, "box7\n0\n0\n");
}

static void test_capabilities_and_nnp(void **state)
{
    struct fixture *f = *state;

    require_userns();
    f->spec.uid0 = true;
    set_argv(&f->spec, "sh", "-c",
             "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' "
             "/proc/self/status | tr -d ' \\t'",
             NULL);
    run_ok(f);
    expect_output(f, "CapInh:0000000000000000\nCapPrm:0000000000000000\n"
                     "CapEff:0000000000000000\nCapBnd:0000000000000000\n"
                     "CapAmb:0000000000000000\nNoNewPrivs:1\nSeccomp:2\n");
}

static void test_loopback_only(void **state)
{
    struct fixture *f = *state;
    char *out;

    require_userns();
    set_argv(&f->spec, "sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '", NULL);
    run_ok(f);
    expect_output(f, "lo\n");

    use_probe(&f->spec, "net");
    run_ok(f);
    out = slurp(f->out);
    assert_int_equal(f->res.exit_code, 0);
    expect_line(out, "outside=ENETUNREACH");
    expect_line(out, "loopback=ok");
    free(out);
}

static void test_network_shared(void **state)
{
    struct fixture *f = *state;
    char *out;
    int host_ifaces = 0;
    FILE *dev = fopen("/proc/net/dev", "r");
    char line[512];

    require_userns();
    assert_non_null(dev);
    while (fgets(line, sizeof(line), dev) != NULL)
        host_ifaces += strchr(line, ':') != NULL;
    fclose(dev);
    f->spec.network = true;
    set_argv(&f->spec, "sh", "-c", "grep -c : /proc/net/dev", NULL);
    run_ok(f);
    out = slurp(f->out);
    assert_int_equal(atoi(out), host_ifaces);
    free(out);
}

static void test_seccomp_denies(void **state)
{
    struct fixture *f = *state;
    const char *denied[] = {"ptrace=EPERM",  "mount=EPERM",         "umount2=EPERM",
                            "unshare=EPERM", "clone_newuser=EPERM", "clone3=ENOSYS",
                            "bpf=EPERM",     "keyctl=EPERM",        "setns=EPERM",
                            "uname=ok",      "sethostname=EPERM"};
    char *out;

    require_userns();
    f->spec.uid0 = true; /* even uid 0 inside gets nothing */
    use_probe(&f->spec, "syscalls");
    run_ok(f);
    assert_int_equal(f->res.exit_code, 0);
    out = slurp(f->out);
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++)
        expect_line(out, denied[i]);
    /* stdin is /dev/null: without the filter this would be ENOTTY */
    expect_line(out, "tiocsti=EPERM");
    /* read-only (EROFS) for a root caller, not even permitted otherwise */
    expect_no_line(out, "write_sysrq=ok");
    free(out);
}

static void test_seccomp_none_and_file(void **state)
{
    struct fixture *f = *state;
    char policy[160], *out;

    require_userns();
    /* Without the filter, ptrace(TRACEME) and a new user namespace work:
     * what denies them above is the filter, not the missing capabilities. */
    f->spec.seccomp = SANDBOX_SECCOMP_NONE;
    use_probe(&f->spec, "syscalls");
    run_ok(f);
    out = slurp(f->out);
    expect_line(out, "ptrace=ok");
    expect_line(out, "unshare=ok");
    expect_line(out, "mount=EPERM"); /* no capability left */
    free(out);

    snprintf(policy, sizeof(policy), "%s/policy", f->dir);
    write_file(policy, "# test policy\nuname errno=EACCES\nptrace allow\n", 0644);
    f->spec.seccomp = SANDBOX_SECCOMP_FILE;
    assert_int_equal(sandbox_spec_set_string(&f->spec.seccomp_file, policy), 0);
    run_ok(f);
    out = slurp(f->out);
    expect_line(out, "uname=EACCES");
    expect_line(out, "ptrace=ok");
    expect_line(out, "bpf=EPERM"); /* the default table still applies */
    free(out);
}

static void test_overlay_keeps_lower(void **state)
{
    struct fixture *f = *state;
    char path[160], *content;
    struct stat st;

    require_userns();
    snprintf(path, sizeof(path), "%s/in.txt", f->lower);
    write_file(path, "orig\n", 0644);
    set_argv(&f->spec, "sh", "-c",
             "cat in.txt; echo changed > in.txt; echo new > out.txt; mkdir d; cat in.txt", NULL);
    run_ok(f);
    assert_int_equal(f->res.exit_code, 0);
    expect_output(f, "orig\nchanged\n");
    content = slurp(path);
    assert_string_equal(content, "orig\n");
    free(content);
    snprintf(path, sizeof(path), "%s/out.txt", f->lower);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof(path), "%s/in.txt", f->upper);
    content = slurp(path);
    assert_string_equal(content, "changed\n");
    free(content);
    snprintf(path, sizeof(path), "%s/out.txt", f->upper);
    content = slurp(path);
    assert_string_equal(content, "new\n");
    free(content);
    snprintf(path, sizeof(path), "%s/d", f->upper);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
}

static void test_chmod_keeps_lower_mode(void **state)
{
    struct fixture *f = *state;
    char path[160];
    struct stat st;

    require_userns();
    snprintf(path, sizeof(path), "%s/tool.sh", f->lower);
    write_file(path, "#!/bin/sh\n", 0644);
    set_argv(&f->spec, "sh", "-c", "chmod 0700 tool.sh && stat -c %a tool.sh", NULL);
    run_ok(f);
    expect_output(f, "700\n");
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    snprintf(path, sizeof(path), "%s/tool.sh", f->upper);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
}

static void test_rw_bind_without_upper(void **state)
{
    struct fixture *f = *state;
    char path[160], *content;

    require_userns();
    assert_int_equal(sandbox_spec_set_string(&f->spec.upper_dir, NULL), 0);
    assert_int_equal(sandbox_spec_set_string(&f->spec.work_dir, NULL), 0);
    set_argv(&f->spec, "sh", "-c", "echo direct > made.txt", NULL);
    run_ok(f);
    snprintf(path, sizeof(path), "%s/made.txt", f->lower);
    content = slurp(path);
    assert_string_equal(content, "direct\n");
    free(content);
}

static void test_extra_mounts(void **state)
{
    struct fixture *f = *state;
    char host[160];

    require_userns();
    snprintf(host, sizeof(host), "%s/tools", f->dir);
    assert_int_equal(mkdir(host, 0755), 0);
    snprintf(host, sizeof(host), "%s/tools/hello", f->dir);
    write_file(host, "hello from tools\n", 0644);
    snprintf(host, sizeof(host), "%s/tools", f->dir);
    assert_int_equal(sandbox_spec_add_mount(&f->spec, SANDBOX_MOUNT_RO, host, "/opt/tools"), 0);
    assert_int_equal(sandbox_spec_add_mount(&f->spec, SANDBOX_MOUNT_TMPFS, NULL, "/scratch"), 0);
    set_argv(&f->spec, "sh", "-c",
             "cat /opt/tools/hello; touch /opt/tools/x 2>/dev/null || echo ro; "
             "echo w > /scratch/w && echo scratch-ok",
             NULL);
    run_ok(f);
    expect_output(f, "hello from tools\nro\nscratch-ok\n");
}

static void test_mount_point_symlink_stays_inside(void **state)
{
    struct fixture *f = *state;
    char host[160];

    require_userns();
    /* The action's tree has escape -> /etc; a mount point under it must
     * resolve inside the sandbox (its own /etc), never to the host's. */
    snprintf(host, sizeof(host), "%s/escape", f->lower);
    assert_int_equal(symlink("/etc", host), 0);
    assert_int_equal(sandbox_spec_add_mount(&f->spec, SANDBOX_MOUNT_TMPFS, NULL,
                                            SANDBOX_EXEC_ROOT "/escape/inner"),
                     0);
    set_argv(&f->spec, "sh", "-c", "[ -d /etc/inner ] && echo inside", NULL);
    run_ok(f);
    expect_output(f, "inside\n");
    assert_int_equal(access("/etc/inner", F_OK), -1);

    /* a relative symlink that climbs out is clamped to the root as well */
    clear_mounts(&f->spec);
    snprintf(host, sizeof(host), "%s/up", f->lower);
    assert_int_equal(symlink("../../../../../../tmp", host), 0);
    assert_int_equal(
        sandbox_spec_add_mount(&f->spec, SANDBOX_MOUNT_TMPFS, NULL, SANDBOX_EXEC_ROOT "/up/inner"),
        0);
    set_argv(&f->spec, "sh", "-c", "[ -d /tmp/inner ] && echo clamped", NULL);
    run_ok(f);
    expect_output(f, "clamped\n");
}

static void test_caller_without_stdio(void **state)
{
    struct fixture *f = *state;
    int status;

    require_userns();
    set_argv(&f->spec, "sh", "-c", "echo out; echo err >&2", NULL);
    for (int capped = 0; capped < 2; capped++) {
        pid_t pid;
        char *out, *err;

        f->spec.limits.output_bytes = capped ? 4096 : 0;
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            /* our files and pipes now land on 0, 1 and 2 themselves */
            close(0);
            close(1);
            close(2);
            _exit(sandbox_run(&f->spec, &f->res) == 0 && f->res.exit_code == 0 ? 0 : 1);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        out = slurp(f->out);
        err = slurp(f->err);
        assert_string_equal(out, "out\n");
        assert_string_equal(err, "err\n");
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        free(out);
        free(err);
    }
}

static void test_handler(int sig)
{
    (void)sig;
}

static void test_signals_reset(void **state)
{
    struct fixture *f = *state;
    struct sigaction ign = {.sa_handler = SIG_IGN}, handle = {.sa_handler = test_handler};
    struct sigaction old_pipe, old_int, old_usr1;
    sigset_t block, old_mask;
    char *out;

    require_userns();
    /* what a daemon does: ignore SIGPIPE, catch some, block others */
    assert_int_equal(sigaction(SIGPIPE, &ign, &old_pipe), 0);
    assert_int_equal(sigaction(SIGINT, &ign, &old_int), 0);
    assert_int_equal(sigaction(SIGUSR1, &handle, &old_usr1), 0);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    assert_int_equal(sigprocmask(SIG_BLOCK, &block, &old_mask), 0);
    /* cat installs no handler of its own (grep does: SIGSEGV) */
    set_argv(&f->spec, "cat", "/proc/self/status", NULL);
    run_ok(f);
    sigaction(SIGPIPE, &old_pipe, NULL);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGUSR1, &old_usr1, NULL);
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    out = slurp(f->out);
    expect_line(out, "SigBlk:\t0000000000000000");
    expect_line(out, "SigIgn:\t0000000000000000");
    expect_line(out, "SigCgt:\t0000000000000000");
    free(out);
}

static void test_stdin_null(void **state)
{
    struct fixture *f = *state;

    require_userns();
    set_argv(&f->spec, "sh", "-c", "cat; echo done", NULL);
    run_ok(f);
    expect_output(f, "done\n");
}

static void test_timeout_kills_tree(void **state)
{
    struct fixture *f = *state;
    uint64_t start;
    char *out;

    require_userns();
    /* Output goes through pipes (cap set): if any process of the tree
     * survived it would hold the pipe and sandbox_run could not return. */
    f->spec.limits.output_bytes = 4096;
    f->spec.limits.timeout_ms = 500;
    set_argv(&f->spec, "sh", "-c", "sleep 100 & echo started; sleep 100", NULL);
    start = now_ms();
    assert_int_equal(sandbox_run(&f->spec, &f->res), 0);
    assert_true(now_ms() - start < 3000);
    assert_true(f->res.wall_us >= 500000);
    assert_int_equal(f->res.limit, SANDBOX_LIMIT_TIMEOUT);
    assert_int_equal(f->res.exit_code, 128 + SIGKILL);
    assert_int_equal(f->res.term_signal, SIGKILL);
    assert_string_equal(f->res.error, "");
    out = slurp(f->out);
    assert_string_equal(out, "started\n");
    free(out);
}

static void test_fork_bomb_contained(void **state)
{
    struct fixture *f = *state;
    int forked = -1;
    uint64_t start;
    pid_t pid;
    char *out;

    require_userns();
    f->spec.limits.pids_max = 64;
    f->spec.limits.timeout_ms = 10000;
    use_probe(&f->spec, "forkbomb");
    run_ok(f);
    out = slurp(f->out);
    assert_int_equal(sscanf(out, "forked=%d", &forked), 1);
    assert_true(forked > 0);
    assert_true(forked < 64);
    assert_non_null(strstr(out, "errno=EAGAIN"));
    free(out);
    assert_int_not_equal(f->res.pids_method, SANDBOX_METHOD_NONE);
    if (f->res.pids_method != SANDBOX_METHOD_RLIMIT)
        assert_int_equal(f->res.limit, SANDBOX_LIMIT_PIDS);

    /* a real one, that never stops by itself */
    set_argv(&f->spec, "sh", "-c", "f() { f | f & }; f; sleep 1000", NULL);
    clear_mounts(&f->spec);
    f->spec.limits.timeout_ms = 2000;
    start = now_ms();
    assert_int_equal(sandbox_run(&f->spec, &f->res), 0);
    assert_true(now_ms() - start < 8000);
    assert_true(f->res.limit == SANDBOX_LIMIT_PIDS || f->res.limit == SANDBOX_LIMIT_TIMEOUT);
    /* and the caller can still fork */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
}

static void test_memory_hog_killed(void **state)
{
    struct fixture *f = *state;
    pid_t pid;

    require_userns();
    f->spec.limits.memory_bytes = 64 << 20;
    f->spec.limits.timeout_ms = 30000;
    /* the shell keeps the whole 300 MB in one variable */
    set_argv(&f->spec, "sh", "-c", "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo ${#x}",
             NULL);
    run_ok(f);
    assert_int_not_equal(f->res.exit_code, 0);
    assert_int_not_equal(f->res.memory_method, SANDBOX_METHOD_NONE);
    if (f->res.memory_method == SANDBOX_METHOD_RLIMIT) {
        print_message("memory limit through RLIMIT_AS: exit %d\n", f->res.exit_code);
    } else {
        assert_int_equal(f->res.limit, SANDBOX_LIMIT_MEMORY);
        assert_int_equal(f->res.exit_code, 128 + SIGKILL);
        assert_true(f->res.max_rss_bytes <= (uint64_t)(64 << 20) + (4 << 20));
    }
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);

    /* below the limit it passes */
    set_argv(&f->spec, "sh", "-c", "x=$(head -c 8000000 /dev/zero | tr '\\0' a); echo ${#x}", NULL);
    run_ok(f);
    assert_int_equal(f->res.exit_code, 0);
    expect_output(f, "8000000\n");
    assert_int_equal(f->res.limit, SANDBOX_LIMIT_NONE);
}

static void test_output_cap(void **state)
{
    struct fixture *f = *state;
    struct stat st;

    require_userns();
    f->spec.limits.output_bytes = 1000;
    set_argv(&f->spec, "sh", "-c", "head -c 1000000 /dev/zero; echo small >&2; exit 4", NULL);
    run_ok(f);
    assert_int_equal(f->res.exit_code, 4); /* not killed */
    assert_true(f->res.stdout_truncated);
    assert_false(f->res.stderr_truncated);
    assert_int_equal(f->res.limit, SANDBOX_LIMIT_OUTPUT);
    assert_int_equal(stat(f->out, &st), 0);
    assert_int_equal(st.st_size, 1000);
    char *err = slurp(f->err);
    assert_string_equal(err, "small\n");
    free(err);
}

static void test_cpu_limit(void **state)
{
    struct fixture *f = *state;

    require_userns();
    f->spec.limits.cpu_seconds = 1;
    f->spec.limits.timeout_ms = 20000;
    set_argv(&f->spec, "sh", "-c", "while :; do :; done", NULL);
    run_ok(f);
    assert_int_equal(f->res.limit, SANDBOX_LIMIT_CPU);
    assert_true(f->res.term_signal == SIGXCPU || f->res.term_signal == SIGKILL);
    /* The kernel fires RLIMIT_CPU on scheduler runtime; rusage reports it
     * adjusted (steal, tick sampling): on a VM 1 s can read as 0.86 s. */
    if (f->res.user_us + f->res.sys_us < 500000)
        fail_msg("cpu %llu us user + %llu us sys, wall %llu us, signal %d",
                 (unsigned long long)f->res.user_us, (unsigned long long)f->res.sys_us,
                 (unsigned long long)f->res.wall_us, f->res.term_signal);
}

/* Is a process with exactly this command line alive (in any namespace)? */
static bool process_alive(const char *arg0, const char *arg1)
{
    char want[128], path[64], buf[128];
    size_t want_len;
    bool found = false;
    DIR *proc = opendir("/proc");
    struct dirent *e;

    assert_non_null(proc);
    want_len = (size_t)snprintf(want, sizeof(want), "%s%c%s", arg0, 0, arg1) + 1;
    while (!found && (e = readdir(proc)) != NULL) {
        ssize_t n;
        int fd;

        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        n = read(fd, buf, sizeof(buf));
        close(fd);
        found = n == (ssize_t)want_len && memcmp(buf, want, want_len) == 0;
    }
    closedir(proc);
    return found;
}

static bool wait_for_process(const char *arg0, const char *arg1, bool alive, int ms)
{
    for (int waited = 0; waited < ms; waited += 20) {
        if (process_alive(arg0, arg1) == alive)
            return true;
        usleep(20 * 1000);
    }
    return false;
}

static void test_caller_death_kills_sandbox(void **state)
{
    struct fixture *f = *state;
    pid_t caller;
    int status;

    require_userns();
    set_argv(&f->spec, "sh", "-c", "sleep 4242.25 & exec sleep 4242.5", NULL);
    caller = fork();
    assert_true(caller >= 0);
    if (caller == 0) {
        sandbox_run(&f->spec, &f->res);
        _exit(0);
    }
    assert_true(wait_for_process("sleep", "4242.5", true, 5000));
    assert_int_equal(kill(caller, SIGKILL), 0);
    assert_int_equal(waitpid(caller, &status, 0), caller);
    /* pid 1 had PDEATHSIG: the whole namespace goes, background job too */
    assert_true(wait_for_process("sleep", "4242.5", false, 5000));
    assert_true(wait_for_process("sleep", "4242.25", false, 5000));
}

/* --- the spawner --- */

struct spawn_job {
    struct sandbox_spawner *sp;
    struct sandbox_spec spec;
    struct sandbox_result res;
    char out[128];
    int rc;
};

static void *spawn_thread(void *arg)
{
    struct spawn_job *job = arg;

    job->rc = sandbox_spawner_run(job->sp, &job->spec, &job->res);
    return NULL;
}

static void test_spawner_concurrent(void **state)
{
    struct fixture *f = *state;
    struct sandbox_spawner *sp = NULL;
    struct spawn_job jobs[4];
    pthread_t threads[4];
    uint64_t start, elapsed;

    require_userns();
    assert_int_equal(sandbox_spawner_start(&sp), 0);
    for (int i = 0; i < 4; i++) {
        char script[128];

        memset(&jobs[i], 0, sizeof(jobs[i]));
        jobs[i].sp = sp;
        sandbox_spec_init(&jobs[i].spec);
        assert_int_equal(sandbox_spec_set_envp(&jobs[i].spec, base_env), 0);
        snprintf(script, sizeof(script), "sleep 1; echo job %d; exit %d", i, 10 + i);
        set_argv(&jobs[i].spec, "sh", "-c", script, NULL);
        snprintf(jobs[i].out, sizeof(jobs[i].out), "%s/out%d", f->dir, i);
        assert_int_equal(sandbox_spec_set_string(&jobs[i].spec.stdout_path, jobs[i].out), 0);
        if (i == 3) { /* one with limits and a timeout, through the same path */
            jobs[i].spec.limits.timeout_ms = 300;
            jobs[i].spec.limits.pids_max = 32;
        }
    }
    start = now_ms();
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, spawn_thread, &jobs[i]), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    elapsed = now_ms() - start;
    for (int i = 0; i < 3; i++) {
        char want[32], *out = slurp(jobs[i].out);

        assert_int_equal(jobs[i].rc, 0);
        if (jobs[i].res.error[0] != '\0')
            fail_msg("job %d: %s", i, jobs[i].res.error);
        assert_int_equal(jobs[i].res.exit_code, 10 + i);
        snprintf(want, sizeof(want), "job %d\n", i);
        assert_string_equal(out, want);
        free(out);
    }
    assert_int_equal(jobs[3].res.limit, SANDBOX_LIMIT_TIMEOUT);
    assert_int_equal(jobs[3].res.exit_code, 128 + SIGKILL);
    /* four one-second jobs at once, not one after the other */
    assert_true(elapsed < 3500);

    /* an invalid spec is answered without a run */
    set_argv(&jobs[0].spec, "true", NULL);
    assert_int_equal(sandbox_spec_set_string(&jobs[0].spec.cwd, "relative"), 0);
    assert_int_equal(sandbox_spawner_run(sp, &jobs[0].spec, &jobs[0].res), -EINVAL);
    assert_int_equal(jobs[0].res.exit_code, 125);

    for (int i = 0; i < 4; i++)
        sandbox_spec_free(&jobs[i].spec);
    sandbox_spawner_stop(sp);
}

static void test_spawner_stop_cancels(void **state)
{
    struct fixture *f = *state;
    struct sandbox_spawner *sp = NULL;
    struct spawn_job job;
    pthread_t thread;
    uint64_t start;

    require_userns();
    (void)f;
    assert_int_equal(sandbox_spawner_start(&sp), 0);
    memset(&job, 0, sizeof(job));
    job.sp = sp;
    sandbox_spec_init(&job.spec);
    assert_int_equal(sandbox_spec_set_envp(&job.spec, base_env), 0);
    set_argv(&job.spec, "sleep", "100", NULL);
    start = now_ms();
    assert_int_equal(pthread_create(&thread, NULL, spawn_thread, &job), 0);
    usleep(300 * 1000);
    sandbox_spawner_stop(sp);
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_true(now_ms() - start < 5000);
    assert_int_equal(job.rc, 0);
    assert_string_equal(job.res.error, "cancelled");
    assert_int_equal(job.res.exit_code, 128 + SIGKILL);
    sandbox_spec_free(&job.spec);
}

struct cancel_job {
    struct spawn_job job;
    struct sandbox_cancel cancel;
};

static void *cancel_thread(void *arg)
{
    struct cancel_job *c = arg;

    c->job.rc = sandbox_spawner_run_cancellable(c->job.sp, &c->job.spec, &c->cancel, &c->job.res);
    return NULL;
}

/* A per-run cancel kills that run's whole process tree (a background child
 * too) and leaves the other run alone; a token fired before the run
 * refuses it at once. */
static void test_spawner_cancel_one(void **state)
{
    struct sandbox_spawner *sp = NULL;
    struct cancel_job jobs[2];
    pthread_t threads[2];

    require_userns();
    (void)state;
    assert_int_equal(sandbox_spawner_start(&sp), 0);
    for (int i = 0; i < 2; i++) {
        char script[96];

        memset(&jobs[i], 0, sizeof(jobs[i]));
        jobs[i].job.sp = sp;
        assert_int_equal(sandbox_cancel_init(&jobs[i].cancel), 0);
        sandbox_spec_init(&jobs[i].job.spec);
        assert_int_equal(sandbox_spec_set_envp(&jobs[i].job.spec, base_env), 0);
        snprintf(script, sizeof(script), "sleep 4545.%d & exec sleep 4646.%d", i, i);
        set_argv(&jobs[i].job.spec, "sh", "-c", script, NULL);
        assert_int_equal(pthread_create(&threads[i], NULL, cancel_thread, &jobs[i]), 0);
    }
    assert_true(wait_for_process("sleep", "4646.0", true, 5000));
    assert_true(wait_for_process("sleep", "4646.1", true, 5000));
    assert_false(sandbox_cancel_fired(&jobs[0].cancel));
    assert_int_equal(sandbox_cancel_fire(&jobs[0].cancel), 0);
    assert_true(sandbox_cancel_fired(&jobs[0].cancel));
    assert_int_equal(pthread_join(threads[0], NULL), 0);
    assert_int_equal(jobs[0].job.rc, 0);
    assert_string_equal(jobs[0].job.res.error, "cancelled");
    assert_int_equal(jobs[0].job.res.exit_code, 128 + SIGKILL);
    assert_true(wait_for_process("sleep", "4646.0", false, 5000));
    assert_true(wait_for_process("sleep", "4545.0", false, 5000));
    /* the other run is untouched */
    assert_true(process_alive("sleep", "4646.1"));
    assert_true(process_alive("sleep", "4545.1"));
    /* a token fired before the run: refused, nothing started */
    assert_int_equal(
        sandbox_spawner_run_cancellable(sp, &jobs[0].job.spec, &jobs[0].cancel, &jobs[0].job.res),
        -ECANCELED);
    assert_int_equal(jobs[0].job.res.exit_code, 125);
    assert_int_equal(sandbox_cancel_fire(&jobs[1].cancel), 0);
    assert_int_equal(pthread_join(threads[1], NULL), 0);
    assert_string_equal(jobs[1].job.res.error, "cancelled");
    for (int i = 0; i < 2; i++) {
        sandbox_cancel_destroy(&jobs[i].cancel);
        sandbox_spec_free(&jobs[i].job.spec);
    }
    sandbox_spawner_stop(sp);
}

/* A stand-in daemon: starts a spawner, runs a long command from a thread,
 * and is then killed without any chance to clean up. */
static void fake_daemon(void)
{
    struct sandbox_spawner *sp;
    struct spawn_job job;
    pthread_t thread;

    if (sandbox_spawner_start(&sp) != 0)
        _exit(1);
    memset(&job, 0, sizeof(job));
    job.sp = sp;
    sandbox_spec_init(&job.spec);
    if (sandbox_spec_set_envp(&job.spec, base_env) != 0)
        _exit(1);
    set_argv(&job.spec, "sleep", "4343.5", NULL);
    if (pthread_create(&thread, NULL, spawn_thread, &job) != 0)
        _exit(1);
    pause();
    _exit(0);
}

static void test_daemon_death_kills_sandboxes(void **state)
{
    struct fixture *f = *state;
    pid_t daemon;
    int status;

    require_userns();
    (void)f;
    daemon = fork();
    assert_true(daemon >= 0);
    if (daemon == 0)
        fake_daemon();
    assert_true(wait_for_process("sleep", "4343.5", true, 5000));
    assert_int_equal(kill(daemon, SIGKILL), 0);
    assert_int_equal(waitpid(daemon, &status, 0), daemon);
    assert_true(wait_for_process("sleep", "4343.5", false, 5000));
}

static bool check_userns(void)
{
    pid_t pid = fork();
    int status;

    if (pid == 0)
        _exit(unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0 ? 0 : 1);
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return false;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

#define RUN_TEST(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        RUN_TEST(test_echo_to_file),
        RUN_TEST(test_spawner_cancel_one),
        RUN_TEST(test_exit_code),
        RUN_TEST(test_killed_by_signal),
        RUN_TEST(test_environment_is_exact),
        RUN_TEST(test_path_from_envp),
        RUN_TEST(test_exec_failure),
        RUN_TEST(test_setup_failure),
        RUN_TEST(test_host_secrets_hidden),
        RUN_TEST(test_filesystem_layout),
        RUN_TEST(test_hostname_and_ids),
        RUN_TEST(test_capabilities_and_nnp),
        RUN_TEST(test_loopback_only),
        RUN_TEST(test_network_shared),
        RUN_TEST(test_seccomp_denies),
        RUN_TEST(test_seccomp_none_and_file),
        RUN_TEST(test_overlay_keeps_lower),
        RUN_TEST(test_chmod_keeps_lower_mode),
        RUN_TEST(test_rw_bind_without_upper),
        RUN_TEST(test_extra_mounts),
        RUN_TEST(test_mount_point_symlink_stays_inside),
        RUN_TEST(test_caller_without_stdio),
        RUN_TEST(test_signals_reset),
        RUN_TEST(test_stdin_null),
        RUN_TEST(test_timeout_kills_tree),
        RUN_TEST(test_fork_bomb_contained),
        RUN_TEST(test_memory_hog_killed),
        RUN_TEST(test_output_cap),
        RUN_TEST(test_cpu_limit),
        RUN_TEST(test_spawner_concurrent),
        RUN_TEST(test_spawner_stop_cancels),
        RUN_TEST(test_caller_death_kills_sandbox),
        RUN_TEST(test_daemon_death_kills_sandboxes),
    };

    if (argc == 3 && strcmp(argv[1], "probe") == 0)
        return probe_main(argv[2]);
    if (realpath("/proc/self/exe", probe_host) == NULL) {
        perror("realpath /proc/self/exe");
        return 1;
    }
    userns_ok = check_userns();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
