/*
 * test_sandbox_seccomp.c - the seccomp policy tables and the policy-file
 * parser; the filter's effect on real syscalls is in test_sandbox_run.c.
 */
#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"
#include "sandbox/sandbox.h"

/* What the brief requires the default mode to deny with EPERM. */
static const char *const required_eperm[] = {
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "reboot",
    "swapon",
    "swapoff",
    "unshare",
    "setns",
    "userfaultfd",
    "acct",
    "quotactl",
    "lookup_dcookie",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "adjtimex",
};

static const struct sandbox_seccomp_rule *find_rule(const struct sandbox_seccomp_rule *rules,
                                                    size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(rules[i].syscall, name) == 0)
            return &rules[i];
    return NULL;
}

static void test_default_denies_required(void **state)
{
    const struct sandbox_seccomp_rule *rules, *r;
    size_t n;

    (void)state;
    rules = sandbox_seccomp_rules(SANDBOX_SECCOMP_DEFAULT, &n);
    assert_non_null(rules);
    for (size_t i = 0; i < sizeof(required_eperm) / sizeof(required_eperm[0]); i++) {
        r = find_rule(rules, n, required_eperm[i]);
        if (r == NULL)
            fail_msg("%s is not in the default table", required_eperm[i]);
        if (r->errno_value != EPERM || r->arg_mask != 0)
            fail_msg("%s: errno %d mask %#llx, want unconditional EPERM", r->syscall,
                     r->errno_value, (unsigned long long)r->arg_mask);
    }
    r = find_rule(rules, n, "clone");
    assert_non_null(r);
    assert_int_equal(r->errno_value, EPERM);
    assert_int_equal(r->arg_index, 0);
    assert_int_equal(r->arg_mask, CLONE_NEWUSER);
    assert_int_equal(r->arg_value, CLONE_NEWUSER);
    r = find_rule(rules, n, "clone3");
    assert_non_null(r);
    assert_int_equal(r->errno_value, ENOSYS);
    /* not denied: what every build needs */
    assert_null(find_rule(rules, n, "execve"));
    assert_null(find_rule(rules, n, "fork"));
    assert_null(find_rule(rules, n, "personality"));
}

static void test_strict_is_superset(void **state)
{
    const struct sandbox_seccomp_rule *def, *strict;
    size_t n_def, n_strict;

    (void)state;
    def = sandbox_seccomp_rules(SANDBOX_SECCOMP_DEFAULT, &n_def);
    strict = sandbox_seccomp_rules(SANDBOX_SECCOMP_STRICT, &n_strict);
    assert_true(n_strict > n_def);
    for (size_t i = 0; i < n_def; i++) {
        bool found = false;

        for (size_t j = 0; j < n_strict && !found; j++)
            found = strcmp(def[i].syscall, strict[j].syscall) == 0 &&
                    def[i].errno_value == strict[j].errno_value &&
                    def[i].arg_index == strict[j].arg_index &&
                    def[i].arg_mask == strict[j].arg_mask &&
                    def[i].arg_value == strict[j].arg_value;
        if (!found)
            fail_msg("strict lacks default rule %s", def[i].syscall);
    }
    assert_non_null(find_rule(strict, n_strict, "personality"));
    assert_non_null(find_rule(strict, n_strict, "io_uring_setup"));
    assert_non_null(find_rule(strict, n_strict, "userfaultfd"));
    assert_null(find_rule(def, n_def, "io_uring_setup"));
}

static void test_names_resolve(void **state)
{
    const enum sandbox_seccomp_mode modes[] = {SANDBOX_SECCOMP_DEFAULT, SANDBOX_SECCOMP_STRICT};

    (void)state;
    for (size_t m = 0; m < 2; m++) {
        const struct sandbox_seccomp_rule *rules;
        size_t n;

        rules = sandbox_seccomp_rules(modes[m], &n);
        for (size_t i = 0; i < n; i++) {
            int nr = seccomp_syscall_resolve_name(rules[i].syscall);

            if (nr == __NR_SCMP_ERROR)
                fail_msg("%s does not resolve", rules[i].syscall);
            if (rules[i].errno_value <= 0 || rules[i].errno_value > 4095)
                fail_msg("%s has errno %d", rules[i].syscall, rules[i].errno_value);
        }
    }
}

static void test_none_is_empty(void **state)
{
    struct sock_fprog prog;
    size_t n = 99;
    char err[256];

    (void)state;
    assert_null(sandbox_seccomp_rules(SANDBOX_SECCOMP_NONE, &n));
    assert_int_equal(n, 0);
    assert_int_equal(sandbox_seccomp_build(SANDBOX_SECCOMP_NONE, NULL, &prog, err, sizeof(err)), 0);
    assert_int_equal(prog.len, 0);
    assert_int_equal(sandbox_seccomp_build(SANDBOX_SECCOMP_DEFAULT, NULL, &prog, err, sizeof(err)),
                     0);
    assert_true(prog.len > 20);
    sandbox_seccomp_program_free(&prog);
    assert_int_equal(sandbox_seccomp_build(SANDBOX_SECCOMP_STRICT, NULL, &prog, err, sizeof(err)),
                     0);
    assert_true(prog.len > 20);
    sandbox_seccomp_program_free(&prog);
}

/* The programs compiled at build time are what libseccomp compiles now:
 * a stale generated file (tables changed, libseccomp upgraded) fails here. */
static void test_prebuilt_matches(void **state)
{
    static const enum sandbox_seccomp_mode modes[] = {SANDBOX_SECCOMP_DEFAULT,
                                                      SANDBOX_SECCOMP_STRICT};
    char err[256];

    (void)state;
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        const struct sock_filter *filter;
        struct sock_fprog built, fresh;
        size_t len;

        if (!sandbox_seccomp_prebuilt(modes[m], &filter, &len))
            skip(); /* a build without the generator (cross build) */
        assert_int_equal(sandbox_seccomp_compile(modes[m], NULL, &fresh, err, sizeof(err)), 0);
        assert_int_equal(len, fresh.len);
        assert_memory_equal(filter, fresh.filter, len * sizeof(*filter));
        assert_int_equal(sandbox_seccomp_build(modes[m], NULL, &built, err, sizeof(err)), 0);
        assert_int_equal(built.len, fresh.len);
        assert_memory_equal(built.filter, fresh.filter, len * sizeof(*filter));
        sandbox_seccomp_program_free(&built);
        sandbox_seccomp_program_free(&fresh);
    }
}

static void test_parse_valid(void **state)
{
    const char text[] = "# casbox policy\n"
                        "\n"
                        "personality\n"
                        "  io_uring_setup   errno=ENOSYS   # trailing comment\n"
                        "\tuname errno=13\r\n"
                        "ptrace allow\n"
                        "   # only a comment\n"
                        "kcmp errno=EACCES";
    struct sandbox_seccomp_rule *rules = NULL;
    size_t n = 0;
    char err[256] = "";

    (void)state;
    assert_int_equal(sandbox_seccomp_parse(text, "p", &rules, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 5);
    assert_string_equal(rules[0].syscall, "personality");
    assert_int_equal(rules[0].errno_value, EPERM);
    assert_string_equal(rules[1].syscall, "io_uring_setup");
    assert_int_equal(rules[1].errno_value, ENOSYS);
    assert_string_equal(rules[2].syscall, "uname");
    assert_int_equal(rules[2].errno_value, 13);
    assert_string_equal(rules[3].syscall, "ptrace");
    assert_int_equal(rules[3].errno_value, SANDBOX_SECCOMP_ALLOW);
    assert_string_equal(rules[4].syscall, "kcmp");
    assert_int_equal(rules[4].errno_value, EACCES);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(rules[i].arg_mask, 0);
    sandbox_seccomp_rules_free(rules, n);

    assert_int_equal(sandbox_seccomp_parse("# nothing\n\n", "p", &rules, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 0);
    sandbox_seccomp_rules_free(rules, n);
}

static void expect_parse_error(const char *text, const char *want)
{
    struct sandbox_seccomp_rule *rules = NULL;
    size_t n = 0;
    char err[256] = "";

    assert_int_equal(sandbox_seccomp_parse(text, "policy", &rules, &n, err, sizeof(err)), -EINVAL);
    if (strstr(err, want) == NULL)
        fail_msg("error '%s' lacks '%s'", err, want);
    assert_null(rules);
}

static void test_parse_errors(void **state)
{
    (void)state;
    expect_parse_error("ptrace\n# fine\nno_such_call\n",
                       "policy:3: unknown syscall 'no_such_call'");
    expect_parse_error("ptrace errno=EWHAT\n", "policy:1: bad action 'errno=EWHAT'");
    expect_parse_error("\n\nptrace errno=0\n", "policy:3: bad action");
    expect_parse_error("ptrace errno=4096\n", "policy:1:");
    expect_parse_error("ptrace kill\n", "policy:1: bad action 'kill'");
    expect_parse_error("ptrace errno=EPERM extra\n", "policy:1: expected");
}

static void test_parse_file(void **state)
{
    char dir[] = "/tmp/casbox-seccomp-XXXXXX", path[64];
    struct sandbox_seccomp_rule *rules = NULL;
    struct sock_fprog prog;
    size_t n = 0;
    char err[256] = "";
    FILE *f;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/policy", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("uname errno=EACCES\nptrace allow\n", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(sandbox_seccomp_parse_file(path, &rules, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 2);
    sandbox_seccomp_rules_free(rules, n);
    /* the FILE mode builds: default table with ptrace taken off, uname added */
    assert_int_equal(sandbox_seccomp_build(SANDBOX_SECCOMP_FILE, path, &prog, err, sizeof(err)), 0);
    assert_true(prog.len > 20);
    sandbox_seccomp_program_free(&prog);

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("uname\nbogus_call\n", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(sandbox_seccomp_build(SANDBOX_SECCOMP_FILE, path, &prog, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, ":2: unknown syscall 'bogus_call'"));
    assert_int_equal(unlink(path), 0);
    assert_int_equal(sandbox_seccomp_parse_file(path, &rules, &n, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, path));
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_denies_required),
        cmocka_unit_test(test_strict_is_superset),
        cmocka_unit_test(test_names_resolve),
        cmocka_unit_test(test_none_is_empty),
        cmocka_unit_test(test_prebuilt_matches),
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_file),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
