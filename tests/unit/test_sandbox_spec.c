/*
 * test_sandbox_spec.c - struct sandbox_spec as data: defaults, mounts, the
 * stable printout, ownership, the checks, and the wire encoding used by the
 * spawner (round trip, and every truncation rejected).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"
#include "sandbox/sandbox.h"

static char *print_spec(const struct sandbox_spec *spec)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    assert_non_null(f);
    sandbox_spec_print(spec, f);
    assert_int_equal(fclose(f), 0);
    return text;
}

static void fill_spec(struct sandbox_spec *spec)
{
    const char *argv[] = {"sh", "-c", "echo \"hi\"\n", NULL};
    const char *envp[] = {"PATH=/usr/bin:/bin", "HOME=/tmp", NULL};

    sandbox_spec_init(spec);
    assert_int_equal(sandbox_spec_set_argv(spec, argv), 0);
    assert_int_equal(sandbox_spec_set_envp(spec, envp), 0);
    assert_int_equal(sandbox_spec_set_string(&spec->lower_dir, "/var/lib/casbox/in"), 0);
    assert_int_equal(sandbox_spec_set_string(&spec->upper_dir, "/var/lib/casbox/up"), 0);
    assert_int_equal(sandbox_spec_set_string(&spec->work_dir, "/var/lib/casbox/work"), 0);
    assert_int_equal(sandbox_spec_set_string(&spec->cwd, "/casbox/exec/pkg"), 0);
    assert_int_equal(sandbox_spec_set_string(&spec->root_dir, "/var/lib/casbox/roots/sid"), 0);
    assert_int_equal(sandbox_spec_add_mount(spec, SANDBOX_MOUNT_RO, "/opt/jdk", "/opt/jdk"), 0);
    assert_int_equal(sandbox_spec_add_mount(spec, SANDBOX_MOUNT_TMPFS, NULL, "/scratch"), 0);
    spec->network = true;
    spec->uid0 = true;
    spec->seccomp = SANDBOX_SECCOMP_FILE;
    assert_int_equal(sandbox_spec_set_string(&spec->seccomp_file, "/etc/casbox/seccomp"), 0);
    spec->limits.timeout_ms = 60000;
    spec->limits.memory_bytes = 1 << 30;
    spec->limits.pids_max = 512;
    spec->limits.cpu_seconds = 120;
    spec->limits.output_bytes = 1 << 20;
    assert_int_equal(sandbox_spec_set_string(&spec->stdout_path, "/tmp/out"), 0);
    assert_int_equal(sandbox_spec_set_string(&spec->stderr_path, "/tmp/err"), 0);
    spec->stdin_null = false;
    assert_int_equal(sandbox_spec_set_string(&spec->cgroup_parent, "/casbox"), 0);
}

static const char filled_text[] = "argv: \"sh\" \"-c\" \"echo \\\"hi\\\"\\n\"\n"
                                  "env: \"PATH=/usr/bin:/bin\"\n"
                                  "env: \"HOME=/tmp\"\n"
                                  "lower_dir: \"/var/lib/casbox/in\"\n"
                                  "upper_dir: \"/var/lib/casbox/up\"\n"
                                  "work_dir: \"/var/lib/casbox/work\"\n"
                                  "exec_root_path: \"/casbox/exec\"\n"
                                  "cwd: \"/casbox/exec/pkg\"\n"
                                  "root_dir: \"/var/lib/casbox/roots/sid\"\n"
                                  "mount: ro \"/opt/jdk\" \"/opt/jdk\"\n"
                                  "mount: tmpfs (none) \"/scratch\"\n"
                                  "network: true\n"
                                  "uid0: true\n"
                                  "hostname: \"casbox\"\n"
                                  "seccomp: file\n"
                                  "seccomp_file: \"/etc/casbox/seccomp\"\n"
                                  "timeout_ms: 60000\n"
                                  "memory_bytes: 1073741824\n"
                                  "pids_max: 512\n"
                                  "cpu_seconds: 120\n"
                                  "output_bytes: 1048576\n"
                                  "stdout_path: \"/tmp/out\"\n"
                                  "stderr_path: \"/tmp/err\"\n"
                                  "stdin_null: false\n"
                                  "cgroup_parent: \"/casbox\"\n";

static void test_init_defaults(void **state)
{
    struct sandbox_spec spec;

    (void)state;
    memset(&spec, 0xa5, sizeof(spec));
    sandbox_spec_init(&spec);
    assert_null(spec.argv);
    assert_null(spec.envp);
    assert_null(spec.lower_dir);
    assert_null(spec.upper_dir);
    assert_null(spec.work_dir);
    assert_string_equal(spec.exec_root_path, SANDBOX_EXEC_ROOT);
    assert_string_equal(spec.cwd, SANDBOX_EXEC_ROOT);
    assert_null(spec.root_dir);
    assert_string_equal(spec.hostname, "casbox");
    assert_int_equal(spec.n_mounts, 0);
    assert_null(spec.mounts);
    assert_false(spec.network);
    assert_false(spec.uid0);
    assert_int_equal(spec.seccomp, SANDBOX_SECCOMP_DEFAULT);
    assert_null(spec.seccomp_file);
    assert_int_equal(spec.limits.timeout_ms, 0);
    assert_int_equal(spec.limits.memory_bytes, 0);
    assert_int_equal(spec.limits.pids_max, 0);
    assert_int_equal(spec.limits.cpu_seconds, 0);
    assert_int_equal(spec.limits.output_bytes, 0);
    assert_null(spec.stdout_path);
    assert_null(spec.stderr_path);
    assert_true(spec.stdin_null);
    assert_null(spec.cgroup_parent);
    sandbox_spec_free(&spec);
}

static void test_add_mounts(void **state)
{
    struct sandbox_spec spec;

    (void)state;
    sandbox_spec_init(&spec);
    assert_int_equal(sandbox_spec_add_mount(&spec, SANDBOX_MOUNT_RO, "/a", "/in/a"), 0);
    assert_int_equal(sandbox_spec_add_mount(&spec, SANDBOX_MOUNT_RW, "/b", "/in/b"), 0);
    assert_int_equal(sandbox_spec_add_mount(&spec, SANDBOX_MOUNT_TMPFS, "/ignored", "/in/c"), 0);
    assert_int_equal(spec.n_mounts, 3);
    assert_int_equal(spec.mounts[0].kind, SANDBOX_MOUNT_RO);
    assert_string_equal(spec.mounts[0].host, "/a");
    assert_string_equal(spec.mounts[0].inside, "/in/a");
    assert_int_equal(spec.mounts[1].kind, SANDBOX_MOUNT_RW);
    assert_string_equal(spec.mounts[1].host, "/b");
    assert_int_equal(spec.mounts[2].kind, SANDBOX_MOUNT_TMPFS);
    assert_null(spec.mounts[2].host);
    assert_string_equal(spec.mounts[2].inside, "/in/c");
    /* rejected: relative paths, a bind without a source, an unknown kind */
    assert_int_equal(sandbox_spec_add_mount(&spec, SANDBOX_MOUNT_RO, "/a", "in/a"), -EINVAL);
    assert_int_equal(sandbox_spec_add_mount(&spec, SANDBOX_MOUNT_RO, "a", "/in/a"), -EINVAL);
    assert_int_equal(sandbox_spec_add_mount(&spec, SANDBOX_MOUNT_RW, NULL, "/in/a"), -EINVAL);
    assert_int_equal(sandbox_spec_add_mount(&spec, (enum sandbox_mount_kind)7, "/a", "/in/a"),
                     -EINVAL);
    assert_int_equal(spec.n_mounts, 3);
    sandbox_spec_free(&spec);
}

static void test_print_every_field_in_order(void **state)
{
    struct sandbox_spec spec;
    char *text;

    (void)state;
    fill_spec(&spec);
    text = print_spec(&spec);
    assert_string_equal(text, filled_text);
    free(text);
    sandbox_spec_free(&spec);
}

static void test_print_defaults(void **state)
{
    struct sandbox_spec spec;
    const char *keys[] = {"argv:",
                          "lower_dir: (none)",
                          "upper_dir:",
                          "work_dir:",
                          "exec_root_path: \"/casbox/exec\"",
                          "cwd:",
                          "root_dir: (none)",
                          "network: false",
                          "uid0: false",
                          "hostname: \"casbox\"",
                          "seccomp: default",
                          "seccomp_file:",
                          "timeout_ms: 0",
                          "memory_bytes:",
                          "pids_max:",
                          "cpu_seconds:",
                          "output_bytes:",
                          "stdout_path: (none)",
                          "stderr_path:",
                          "stdin_null: true",
                          "cgroup_parent:"};
    const char *at;
    char *text;

    (void)state;
    sandbox_spec_init(&spec);
    text = print_spec(&spec);
    at = text;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *found = strstr(at, keys[i]);

        if (found == NULL)
            fail_msg("'%s' missing or out of order in:\n%s", keys[i], text);
        at = found;
    }
    free(text);
    sandbox_spec_free(&spec);
}

static void test_free_clears(void **state)
{
    struct sandbox_spec spec, zero;

    (void)state;
    fill_spec(&spec);
    sandbox_spec_free(&spec);
    memset(&zero, 0, sizeof(zero));
    assert_memory_equal(&spec, &zero, sizeof(spec));
    sandbox_spec_free(&spec); /* twice is harmless */
    sandbox_spec_free(NULL);
}

static void test_set_string_and_vectors(void **state)
{
    struct sandbox_spec spec;
    const char *argv[] = {"a", "b", NULL};
    const char *none[] = {NULL};

    (void)state;
    sandbox_spec_init(&spec);
    assert_int_equal(sandbox_spec_set_string(&spec.hostname, "box"), 0);
    assert_string_equal(spec.hostname, "box");
    assert_int_equal(sandbox_spec_set_string(&spec.hostname, NULL), 0);
    assert_null(spec.hostname);
    assert_int_equal(sandbox_spec_set_argv(&spec, argv), 0);
    assert_string_equal(spec.argv[1], "b");
    assert_null(spec.argv[2]);
    assert_int_equal(sandbox_spec_set_envp(&spec, none), 0);
    assert_non_null(spec.envp);
    assert_null(spec.envp[0]);
    sandbox_spec_free(&spec);
}

static void test_check(void **state)
{
    struct sandbox_spec spec;
    const char *argv[] = {"true", NULL};
    const char *none[] = {NULL};
    char err[256];

    (void)state;
    sandbox_spec_init(&spec);
    assert_int_equal(sandbox_spec_check(&spec, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "argv"));
    assert_int_equal(sandbox_spec_set_argv(&spec, argv), 0);
    assert_int_equal(sandbox_spec_check(&spec, err, sizeof(err)), -EINVAL); /* no envp */
    assert_int_equal(sandbox_spec_set_envp(&spec, none), 0);
    assert_int_equal(sandbox_spec_check(&spec, err, sizeof(err)), 0);
    assert_int_equal(sandbox_spec_set_string(&spec.cwd, "relative"), 0);
    assert_int_equal(sandbox_spec_check(&spec, err, sizeof(err)), -EINVAL);
    assert_int_equal(sandbox_spec_set_string(&spec.cwd, "/casbox/exec/../../etc"), 0);
    assert_int_equal(sandbox_spec_check(&spec, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, ".."));
    assert_int_equal(sandbox_spec_set_string(&spec.cwd, "/casbox/exec/..x"), 0);
    assert_int_equal(sandbox_spec_check(&spec, err, sizeof(err)), 0);
    assert_int_equal(sandbox_spec_set_string(&spec.upper_dir, "/up"), 0);
    assert_int_equal(sandbox_spec_check(&spec, err, sizeof(err)), -EINVAL); /* no lower/work */
    assert_int_equal(sandbox_spec_set_string(&spec.upper_dir, NULL), 0);
    assert_int_equal(sandbox_spec_set_string(&spec.stdout_path, "/tmp/o"), 0);
    assert_int_equal(sandbox_spec_set_string(&spec.stderr_path, "/tmp/o"), 0);
    assert_int_equal(sandbox_spec_check(&spec, err, sizeof(err)), -EINVAL);
    assert_int_equal(sandbox_spec_set_string(&spec.stderr_path, "/tmp/e"), 0);
    assert_int_equal(sandbox_spec_check(&spec, err, sizeof(err)), 0);
    assert_int_equal(sandbox_spec_set_string(&spec.root_dir, "roots/sid"), 0);
    assert_int_equal(sandbox_spec_check(&spec, err, sizeof(err)), -EINVAL); /* relative */
    assert_non_null(strstr(err, "root_dir"));
    assert_int_equal(sandbox_spec_set_string(&spec.root_dir, "/roots/sid"), 0);
    assert_int_equal(sandbox_spec_check(&spec, err, sizeof(err)), 0);
    spec.seccomp = SANDBOX_SECCOMP_FILE;
    assert_int_equal(sandbox_spec_check(&spec, err, sizeof(err)), -EINVAL);
    sandbox_spec_free(&spec);
}

static void test_encode_round_trip(void **state)
{
    struct sandbox_spec spec, back;
    uint8_t *buf;
    size_t len;
    char *a, *b;

    (void)state;
    fill_spec(&spec);
    assert_int_equal(sandbox_spec_encode(&spec, &buf, &len), 0);
    sandbox_spec_init(&back);
    assert_int_equal(sandbox_spec_decode(buf, len, &back), 0);
    a = print_spec(&spec);
    b = print_spec(&back);
    assert_string_equal(a, b);
    free(a);
    free(b);
    sandbox_spec_free(&back);

    /* Every truncation and a flipped magic are rejected, and leave a spec
     * that can still be freed. */
    for (size_t cut = 0; cut < len; cut++) {
        sandbox_spec_init(&back);
        assert_int_equal(sandbox_spec_decode(buf, cut, &back), -EINVAL);
        sandbox_spec_free(&back);
    }
    buf[0] ^= 1;
    sandbox_spec_init(&back);
    assert_int_equal(sandbox_spec_decode(buf, len, &back), -EINVAL);
    sandbox_spec_free(&back);
    free(buf);
    sandbox_spec_free(&spec);
}

static void test_decode_rejects_garbage(void **state)
{
    struct sandbox_spec spec;
    uint8_t buf[512];
    uint32_t seed = 12345;

    (void)state;
    /* Valid header, then noise: must fail cleanly, never crash or leak. */
    for (int round = 0; round < 2000; round++) {
        size_t len = 8 + seed % (sizeof(buf) - 8);

        memcpy(buf, "CBXS\1\0\0\0", 8);
        for (size_t i = 8; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (uint8_t)(seed >> 16) & (round % 2 ? 0x03 : 0xff);
        }
        sandbox_spec_init(&spec);
        assert_int_not_equal(sandbox_spec_decode(buf, len, &spec), 0);
        sandbox_spec_free(&spec);
    }
}

static void test_limit_names(void **state)
{
    (void)state;
    assert_string_equal(sandbox_limit_name(SANDBOX_LIMIT_NONE), "none");
    assert_string_equal(sandbox_limit_name(SANDBOX_LIMIT_TIMEOUT), "timeout");
    assert_string_equal(sandbox_limit_name(SANDBOX_LIMIT_MEMORY), "memory");
    assert_string_equal(sandbox_limit_name(SANDBOX_LIMIT_PIDS), "pids");
    assert_string_equal(sandbox_limit_name(SANDBOX_LIMIT_CPU), "cpu");
    assert_string_equal(sandbox_limit_name(SANDBOX_LIMIT_OUTPUT), "output");
    assert_string_equal(sandbox_limit_method_name(SANDBOX_METHOD_CGROUP_V1), "cgroup-v1");
    assert_string_equal(sandbox_limit_method_name(SANDBOX_METHOD_RLIMIT), "rlimit");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_defaults),
        cmocka_unit_test(test_add_mounts),
        cmocka_unit_test(test_print_every_field_in_order),
        cmocka_unit_test(test_print_defaults),
        cmocka_unit_test(test_free_clears),
        cmocka_unit_test(test_set_string_and_vectors),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_encode_round_trip),
        cmocka_unit_test(test_decode_rejects_garbage),
        cmocka_unit_test(test_limit_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
