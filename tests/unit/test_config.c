/*
 * test_daemon_config.c - configuration keys: sizes, bounds, booleans, the INI
 * file with line numbers in errors, and cross-key checks.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"

static void test_sizes(void **state)
{
    uint64_t v;

    (void)state;
    assert_int_equal(config_parse_size("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(config_parse_size("64K", &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(config_parse_size("16MiB", &v), 0);
    assert_int_equal(v, 16ULL << 20);
    assert_int_equal(config_parse_size("2G", &v), 0);
    assert_int_equal(v, 2ULL << 30);
    assert_int_equal(config_parse_size("-1", &v), -EINVAL);
    assert_int_equal(config_parse_size("", &v), -EINVAL);
    assert_int_equal(config_parse_size("12Q", &v), -EINVAL);
    assert_int_equal(config_parse_size("99999999999T", &v), -EINVAL);
}

static void test_set_and_bounds(void **state)
{
    struct casbox_config cfg;
    char err[512];

    (void)state;
    config_init_defaults(&cfg);
    assert_int_equal(config_set(&cfg, "execution", "slots", "3", err, sizeof(err)), 0);
    assert_int_equal(cfg.exec_slots, 3);
    assert_int_equal(config_set(&cfg, "server", "rpc_threads", "0", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "rpc_threads"));
    assert_non_null(strstr(err, "out of bounds"));
    assert_int_equal(config_set(&cfg, "execution", "allow_network", "yes", err, sizeof(err)), 0);
    assert_true(cfg.exec_allow_network);
    assert_int_equal(config_set(&cfg, "execution", "allow_network", "maybe", err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(config_set(&cfg, "cas", "nonsense", "1", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "nonsense"));
    assert_int_equal(config_set(&cfg, "execution", "staging", "fuse", err, sizeof(err)), 0);
    assert_string_equal(cfg.exec_staging, "fuse");
}

static void test_file(void **state)
{
    struct casbox_config cfg;
    char path[] = "/tmp/casbox-config-XXXXXX";
    char err[512];
    FILE *f;
    int fd;

    (void)state;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    fprintf(f, "# comment\n[server]\nlisten = 0.0.0.0:9000\nstate_dir = /tmp/x\n"
               "[cas]\nmax_bytes = 1G\n[execution]\nqueue_length = banana\n");
    fclose(f);
    config_init_defaults(&cfg);
    assert_int_equal(config_load_file(&cfg, path, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, ":8:"));
    assert_non_null(strstr(err, "queue_length"));
    assert_string_equal(cfg.listen, "0.0.0.0:9000");
    assert_int_equal(cfg.cas_max_bytes, 1ULL << 30);

    config_init_defaults(&cfg);
    assert_true(config_load_file(&cfg, "/nonexistent/casbox.conf", err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "/nonexistent/casbox.conf"));
    unlink(path);
}

/* A ';' comment on an indented continuation line is not stripped by inih:
 * refused, so that what --print-config writes always loads back the same. */
static void test_continuation_comment(void **state)
{
    struct casbox_config cfg;
    char path[] = "/tmp/casbox-config-XXXXXX";
    char err[512];
    FILE *f;
    int fd;

    (void)state;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    fprintf(f, "[server]\nlisten = 127.0.0.1:1 ; a comment\nstate_dir = /a\n  /b ; c\n");
    fclose(f);
    config_init_defaults(&cfg);
    assert_int_equal(config_load_file(&cfg, path, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, ":4:"));
    assert_non_null(strstr(err, "continuation"));
    assert_string_equal(cfg.listen, "127.0.0.1:1");

    /* a line longer than inih's buffer is refused, not cut in two */
    f = fopen(path, "w");
    fprintf(f, "[server]\nstate_dir = /%0300d\n", 0);
    fclose(f);
    config_init_defaults(&cfg);
    assert_int_equal(config_load_file(&cfg, path, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, ":2: line 2 is too long"));
    unlink(path);
}

static void test_finish(void **state)
{
    struct casbox_config cfg;
    char err[512];

    (void)state;
    config_init_defaults(&cfg);
    assert_int_equal(config_finish(&cfg, err, sizeof(err)), -EINVAL); /* no state dir */
    assert_non_null(strstr(err, "state"));
    snprintf(cfg.state_dir, sizeof(cfg.state_dir), "/tmp/s");
    cfg.exec_default_timeout = 100;
    cfg.exec_max_timeout = 10;
    assert_int_equal(config_finish(&cfg, err, sizeof(err)), -EINVAL);
    cfg.exec_max_timeout = 1000;
    assert_int_equal(config_finish(&cfg, err, sizeof(err)), 0);
    assert_true(cfg.exec_slots >= 1);
}

/* [cas] remote and [action_cache] remote: empty or grpc(s)://HOST:PORT. */
static void test_remote_urls(void **state)
{
    static const char *const bad[] = {"http://h:1", "grpc://", "grpc://host", "h:1",
                                      "grpc://h:1/x"};
    struct casbox_config cfg;
    char err[512];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        config_init_defaults(&cfg);
        snprintf(cfg.state_dir, sizeof(cfg.state_dir), "/tmp/s");
        assert_int_equal(config_set(&cfg, "cas", "remote", bad[i], err, sizeof(err)), 0);
        assert_int_equal(config_finish(&cfg, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "[cas] remote"));
        assert_non_null(strstr(err, bad[i]));
    }
    config_init_defaults(&cfg);
    snprintf(cfg.state_dir, sizeof(cfg.state_dir), "/tmp/s");
    assert_int_equal(config_set(&cfg, "action_cache", "remote", "grpc:/x", err, sizeof(err)), 0);
    assert_int_equal(config_finish(&cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "[action_cache] remote"));
    assert_int_equal(config_set(&cfg, "action_cache", "remote", "grpcs://ac:443", err, sizeof(err)),
                     0);
    assert_int_equal(config_set(&cfg, "cas", "remote", "grpc://10.0.0.1:9000", err, sizeof(err)),
                     0);
    assert_int_equal(config_set(&cfg, "cas", "remote_timeout", "0", err, sizeof(err)), -EINVAL);
    assert_int_equal(config_finish(&cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.cas_remote_timeout, 60);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),       cmocka_unit_test(test_set_and_bounds),
        cmocka_unit_test(test_file),        cmocka_unit_test(test_finish),
        cmocka_unit_test(test_remote_urls), cmocka_unit_test(test_continuation_comment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
