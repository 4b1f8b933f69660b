/*
 * test_config_environment.c - [environment.NAME] sections: parsed from the
 * INI file and from section.key overrides, bounded in count and length,
 * checked at load (image and root both set, image unique, root an existing
 * directory given as an absolute path), found by image, listed in messages
 * and printed back.
 */
#include <errno.h>
#include <limits.h>
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

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void fresh(struct casbox_config *cfg)
{
    config_init_defaults(cfg);
    snprintf(cfg->state_dir, sizeof(cfg->state_dir), "/tmp/s");
}

static void test_file_sections(void **state)
{
    char dir[] = "/tmp/casbox-env-XXXXXX";
    char conf[PATH_MAX], text[4 * PATH_MAX], err[512], *printed = NULL;
    struct casbox_config cfg, again;
    const struct casbox_environment *e;
    size_t len = 0;
    FILE *out;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(conf, sizeof(conf), "%s/casboxd.conf", dir);
    snprintf(text, sizeof(text),
             "[server]\nstate_dir = /tmp/s\n"
             "[environment.debian-sid]\nimage = debian-sid\nroot = %s\n"
             "[execution]\nslots = 2\n"
             "[environment.docker]\nimage = docker://debian:sid\nroot = %s/\n",
             dir, dir);
    write_file(conf, text);
    config_init_defaults(&cfg);
    assert_int_equal(config_load_file(&cfg, conf, err, sizeof(err)), 0);
    assert_int_equal(config_finish(&cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.n_environments, 2);
    assert_int_equal(cfg.exec_slots, 2);
    assert_string_equal(cfg.environments[0].name, "debian-sid");
    assert_string_equal(cfg.environments[1].image, "docker://debian:sid");
    e = config_environment_find(&cfg, "debian-sid");
    assert_non_null(e);
    assert_string_equal(e->root, dir);
    assert_null(config_environment_find(&cfg, "Debian-sid")); /* exact match */
    assert_null(config_environment_find(&cfg, "nope"));
    config_environment_list(&cfg, text, sizeof(text));
    assert_string_equal(text, "'debian-sid', 'docker://debian:sid'");

    /* --print-config writes them back; the output loads to the same */
    out = open_memstream(&printed, &len);
    config_print(&cfg, out);
    assert_int_equal(fclose(out), 0);
    assert_non_null(strstr(printed, "[environment.debian-sid]\nimage = debian-sid\n"));
    write_file(conf, printed);
    free(printed);
    config_init_defaults(&again);
    assert_int_equal(config_load_file(&again, conf, err, sizeof(err)), 0);
    assert_int_equal(again.n_environments, 2);
    assert_string_equal(again.environments[1].root, cfg.environments[1].root);

    /* a later section of the same name updates it; section.key too */
    assert_int_equal(config_set(&cfg, "environment.debian-sid", "image", "sid2", err, sizeof(err)),
                     0);
    assert_int_equal(cfg.n_environments, 2);
    assert_non_null(config_environment_find(&cfg, "sid2"));
    unlink(conf);
    rmdir(dir);
}

static void test_bad_keys(void **state)
{
    struct casbox_config cfg;
    char err[512], name[96], big[600];

    (void)state;
    fresh(&cfg);
    assert_int_equal(config_set(&cfg, "environment.x", "rootfs", "/", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "rootfs"));
    assert_int_equal(config_set(&cfg, "environment.", "image", "a", err, sizeof(err)), -EINVAL);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(config_set(&cfg, "environment.x", "root", big, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "longer"));
    assert_int_equal(cfg.n_environments, 0);
    /* bounded count */
    for (int i = 0; i < CONFIG_MAX_ENVIRONMENTS; i++) {
        snprintf(name, sizeof(name), "environment.e%d", i);
        assert_int_equal(config_set(&cfg, name, "image", name, err, sizeof(err)), 0);
    }
    assert_int_equal(config_set(&cfg, "environment.one-more", "image", "x", err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "more than 64"));
    assert_int_equal(cfg.n_environments, CONFIG_MAX_ENVIRONMENTS);
    config_environment_list(&cfg, big, 40);
    assert_int_equal(strlen(big), 39);
    assert_string_equal(big + 36, "...");
}

static void test_finish_checks(void **state)
{
    char dir[] = "/tmp/casbox-env-XXXXXX";
    char file[PATH_MAX], err[512];
    struct casbox_config cfg;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(file, sizeof(file), "%s/plain", dir);
    write_file(file, "x");

    fresh(&cfg);
    assert_int_equal(config_set(&cfg, "environment.a", "image", "img", err, sizeof(err)), 0);
    assert_int_equal(config_finish(&cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "needs both image and root"));

    assert_int_equal(config_set(&cfg, "environment.a", "root", "relative/x", err, sizeof(err)), 0);
    assert_int_equal(config_finish(&cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not an absolute path"));

    assert_int_equal(config_set(&cfg, "environment.a", "root", "/nonexistent/r", err, sizeof(err)),
                     0);
    assert_int_equal(config_finish(&cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "/nonexistent/r"));
    assert_non_null(strstr(err, "No such file"));

    assert_int_equal(config_set(&cfg, "environment.a", "root", file, err, sizeof(err)), 0);
    assert_int_equal(config_finish(&cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not a directory"));

    assert_int_equal(config_set(&cfg, "environment.a", "root", dir, err, sizeof(err)), 0);
    assert_int_equal(config_finish(&cfg, err, sizeof(err)), 0);

    /* two environments with one image */
    assert_int_equal(config_set(&cfg, "environment.b", "image", "img", err, sizeof(err)), 0);
    assert_int_equal(config_set(&cfg, "environment.b", "root", dir, err, sizeof(err)), 0);
    assert_int_equal(config_finish(&cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "[environment.b]: image 'img' is already the image of "
                                "[environment.a]"));
    unlink(file);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_sections),
        cmocka_unit_test(test_bad_keys),
        cmocka_unit_test(test_finish_checks),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
