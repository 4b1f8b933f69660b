/*
 * test_auth.c - auth/: permission lists, whole-segment instance prefixes,
 * the tokens and certificates files (comments, tabs, CRLF, sha256: lines,
 * every malformed line named by its number), constant-time token lookup,
 * the policy's answers (unknown credentials, anonymous, certificates,
 * prefixes), the files' modes, the guard's reload and the log limiter.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/auth.h"

#define HASHED_TOKEN "hashed-token"

static void test_perms(void **state)
{
    unsigned p;
    char err[256], out[64];

    (void)state;
    assert_int_equal(auth_perms_parse("read,write-ac", 13, &p, err, sizeof(err)), 0);
    assert_int_equal(p, AUTH_PERM_READ | AUTH_PERM_WRITE_AC);
    assert_int_equal(auth_perms_parse("none", 4, &p, err, sizeof(err)), 0);
    assert_int_equal(p, 0);
    assert_int_equal(auth_perms_parse("all", 3, &p, err, sizeof(err)), 0);
    assert_int_equal(p, AUTH_PERM_ALL);
    assert_int_equal(auth_perms_parse("read,wrte", 9, &p, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "'wrte'"));
    assert_int_equal(auth_perms_parse("read,", 5, &p, err, sizeof(err)), -EINVAL);
    assert_int_equal(auth_perms_parse("", 0, &p, err, sizeof(err)), -EINVAL);
    assert_int_equal(auth_perms_parse("READ", 4, &p, err, sizeof(err)), -EINVAL);
    auth_perms_format(AUTH_PERM_WRITE | AUTH_PERM_WORKER, out, sizeof(out));
    assert_string_equal(out, "write,worker");
    auth_perms_format(0, out, sizeof(out));
    assert_string_equal(out, "none");
}

static void test_prefixes(void **state)
{
    (void)state;
    assert_true(auth_prefix_matches("teamA", "teamA"));
    assert_true(auth_prefix_matches("teamA", "teamA/x"));
    assert_true(auth_prefix_matches("teamA/x", "teamA/x/y"));
    assert_false(auth_prefix_matches("teamA", "teamAB"));
    assert_false(auth_prefix_matches("teamA", "team"));
    assert_false(auth_prefix_matches("teamA", ""));
    assert_false(auth_prefix_matches("teamA/x", "teamA"));
}

static struct auth_table *parse_ok(enum auth_table_kind kind, const char *text)
{
    struct auth_table *t = NULL;
    char err[512] = "";
    int rc = auth_table_parse(kind, "f", text, strlen(text), &t, err, sizeof(err));

    if (rc != 0)
        fail_msg("parse failed: %s", err);
    return t;
}

static void test_table_parse(void **state)
{
    char text[512];
    struct auth_table *t;
    const struct auth_entry *e;

    (void)state;
    snprintf(text, sizeof(text),
             "# a comment\r\n"
             "\r\n"
             "   tok-a\tread,write   teamA other/deep\r\n"
             "  # indented comment\n"
             "sha256:%s execute\n"
             "tok-b worker",
             "6D2C6B0D0C1A7A4AA0BE59F1E4BE4F5B3C3B1D9E3C8E0E9D0A3C2C6A0B1C2D3E");
    t = parse_ok(AUTH_TABLE_TOKENS, text);
    assert_int_equal(auth_table_count(t), 3);
    e = auth_table_find_token(t, "tok-a", 5);
    assert_non_null(e);
    assert_int_equal(auth_entry_line(e), 3);
    assert_int_equal(auth_entry_perms(e, "teamA"), AUTH_PERM_READ | AUTH_PERM_WRITE);
    assert_int_equal(auth_entry_perms(e, "teamA/b"), AUTH_PERM_READ | AUTH_PERM_WRITE);
    assert_int_equal(auth_entry_perms(e, "other/deep/x"), AUTH_PERM_READ | AUTH_PERM_WRITE);
    assert_int_equal(auth_entry_perms(e, "other"), 0);
    assert_int_equal(auth_entry_perms(e, "teamAB"), 0);
    assert_int_equal(auth_entry_perms(e, ""), 0);
    e = auth_table_find_token(t, "tok-b", 5);
    assert_non_null(e);
    assert_int_equal(auth_entry_line(e), 6);
    assert_int_equal(auth_entry_perms(e, "anything/at/all"), AUTH_PERM_WORKER);
    assert_null(auth_table_find_token(t, "tok-", 4));
    assert_null(auth_table_find_token(t, "tok-a ", 6));
    assert_null(auth_table_find_token(t, "", 0));
    /* names are not looked up as tokens */
    assert_null(auth_table_find_name(t, "tok-a", 5));
    auth_table_free(t);
}

static void test_table_hashed(void **state)
{
    char text[256], digest_hex[65];
    struct auth_table *t;
    FILE *p;

    (void)state;
    /* The digest of the token, computed by the system's sha256sum. */
    p = popen("printf %s " HASHED_TOKEN " | sha256sum", "r");
    assert_non_null(p);
    assert_non_null(fgets(digest_hex, sizeof(digest_hex), p));
    pclose(p);
    assert_int_equal(strlen(digest_hex), 64);
    snprintf(text, sizeof(text), "sha256:%s read\n", digest_hex);
    t = parse_ok(AUTH_TABLE_TOKENS, text);
    assert_non_null(auth_table_find_token(t, HASHED_TOKEN, strlen(HASHED_TOKEN)));
    /* the digest itself is not the token */
    assert_null(auth_table_find_token(t, digest_hex, 64));
    auth_table_free(t);
    /* upper-case hex works the same */
    for (char *c = digest_hex; *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    snprintf(text, sizeof(text), "sha256:%s read\n", digest_hex);
    t = parse_ok(AUTH_TABLE_TOKENS, text);
    assert_non_null(auth_table_find_token(t, HASHED_TOKEN, strlen(HASHED_TOKEN)));
    auth_table_free(t);
}

static void expect_error(enum auth_table_kind kind, const char *text, size_t len, const char *want)
{
    struct auth_table *t = NULL;
    char err[512] = "";

    assert_int_equal(auth_table_parse(kind, "tokens.txt", text, len, &t, err, sizeof(err)),
                     -EINVAL);
    assert_null(t);
    if (strstr(err, want) == NULL)
        fail_msg("error '%s' lacks '%s'", err, want);
}

static void test_table_errors(void **state)
{
    char big[AUTH_MAX_LINE + 64];

    (void)state;
    expect_error(AUTH_TABLE_TOKENS, "ok read\nlonely\n", 15, "tokens.txt:2: expected TOKEN");
    expect_error(AUTH_TABLE_TOKENS, "ok read\nx reed\n", 15, "tokens.txt:2: unknown permission");
    expect_error(AUTH_TABLE_TOKENS, "x read /abs\n", 12, "tokens.txt:1: instance prefix '/abs'");
    expect_error(AUTH_TABLE_TOKENS, "x read a//b\n", 12, "'a//b'");
    expect_error(AUTH_TABLE_TOKENS, "x read a/\n", 10, "'a/'");
    expect_error(AUTH_TABLE_TOKENS, "x read\ny write\nx write\n", 22,
                 "tokens.txt:3: the same token as line 1");
    expect_error(AUTH_TABLE_TOKENS, "sha256:abcd read\n", 17, "64 hex digits");
    expect_error(AUTH_TABLE_TOKENS,
                 "sha256:zz00000000000000000000000000000000000000000000000000000000000000 read\n",
                 76, "not hex");
    expect_error(AUTH_TABLE_TOKENS, "x read\ny\0 read\n", 15, "tokens.txt:2: contains a NUL");
    expect_error(AUTH_TABLE_TOKENS, "t\xc3\xa9 read\n", 9, "printable");
    expect_error(AUTH_TABLE_NAMES, "ci read\nci write\n", 17, "the same name as line 1");
    memset(big, 'a', sizeof(big));
    expect_error(AUTH_TABLE_TOKENS, big, sizeof(big), "tokens.txt:1: longer than");
}

static void test_names(void **state)
{
    struct auth_table *t = parse_ok(AUTH_TABLE_NAMES, "ci read,write-ac\nbuild.example.com read\n");

    (void)state;
    assert_non_null(auth_table_find_name(t, "ci", 2));
    assert_non_null(auth_table_find_name(t, "build.example.com", 17));
    assert_null(auth_table_find_name(t, "c", 1));
    assert_null(auth_table_find_token(t, "ci", 2));
    auth_table_free(t);
}

/* A file under a fresh temp dir with mode; its path in path. */
static void write_file(char *path, size_t len, const char *name, const char *text, mode_t mode)
{
    static char dir[64];
    int fd;

    if (dir[0] == '\0') {
        snprintf(dir, sizeof(dir), "/tmp/casbox-test-auth.XXXXXX");
        assert_non_null(mkdtemp(dir));
    }
    snprintf(path, len, "%s/%s", dir, name);
    unlink(path);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
}

static int warnings;
static void count_warning(const char *line)
{
    (void)line;
    warnings++;
}

static void test_file_modes(void **state)
{
    struct auth_table *t = NULL;
    char path[256], err[512];

    (void)state;
    write_file(path, sizeof(path), "world", "tok read\n", 0644);
    assert_int_equal(auth_table_load(AUTH_TABLE_TOKENS, path, &t, NULL, err, sizeof(err)), -EPERM);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "other users"));
    write_file(path, sizeof(path), "group", "tok read\n", 0640);
    warnings = 0;
    assert_int_equal(auth_table_load(AUTH_TABLE_TOKENS, path, &t, count_warning, err, sizeof(err)),
                     0);
    assert_int_equal(warnings, 1);
    auth_table_free(t);
    write_file(path, sizeof(path), "bad-line", "tok read\nnope\n", 0600);
    assert_int_equal(auth_table_load(AUTH_TABLE_TOKENS, path, &t, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, ":2:"));
    assert_non_null(strstr(err, path));
    assert_int_equal(
        auth_table_load(AUTH_TABLE_TOKENS, "/nonexistent/tokens", &t, NULL, err, sizeof(err)),
        -ENOENT);
    assert_non_null(strstr(err, "/nonexistent/tokens"));
    assert_int_equal(auth_table_load(AUTH_TABLE_TOKENS, "/tmp", &t, NULL, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "not a regular file"));
    assert_null(t);
}

static struct auth_policy *policy(const char *tokens, const char *names, const char *anonymous,
                                  bool client_certs)
{
    struct auth_settings s = {.anonymous = anonymous, .client_certificates = client_certs};
    struct auth_policy *p = NULL;
    char tpath[256], npath[256], err[512];

    if (tokens != NULL) {
        write_file(tpath, sizeof(tpath), "policy-tokens", tokens, 0600);
        s.tokens_file = tpath;
    }
    if (names != NULL) {
        write_file(npath, sizeof(npath), "policy-names", names, 0600);
        s.certificates_file = npath;
    }
    if (auth_policy_load(&s, &p, NULL, err, sizeof(err)) != 0)
        fail_msg("policy: %s", err);
    return p;
}

static enum auth_result check(const struct auth_policy *p, const char *token, const char *name,
                              unsigned need, const char *instance, char *reason, size_t len)
{
    const char *names[1] = {name};
    struct auth_peer peer = {.token = token,
                             .token_len = token ? strlen(token) : 0,
                             .names = names,
                             .n_names = name ? 1 : 0,
                             .has_certificate = name != NULL};
    struct auth_identity id;

    auth_policy_identify(p, &peer, &id);
    return auth_identity_check(&id, need, instance, reason, len);
}

static void test_policy(void **state)
{
    struct auth_policy *p;
    char reason[512];

    (void)state;
    /* off: everything allowed */
    p = policy(NULL, NULL, NULL, false);
    assert_false(auth_policy_enabled(p));
    assert_int_equal(check(p, NULL, NULL, AUTH_PERM_WRITE_AC, "x", reason, sizeof(reason)),
                     AUTH_OK);
    auth_policy_free(p);

    p = policy("dev read,write,execute\nteam read,write-ac teamA\n", NULL, NULL, false);
    assert_true(auth_policy_enabled(p));
    assert_int_equal(check(p, NULL, NULL, 0, "", reason, sizeof(reason)), AUTH_UNAUTHENTICATED);
    assert_int_equal(check(p, "nope", NULL, 0, "", reason, sizeof(reason)), AUTH_UNAUTHENTICATED);
    assert_null(strstr(reason, "nope"));
    assert_int_equal(check(p, "dev", NULL, AUTH_PERM_EXECUTE, "any", reason, sizeof(reason)),
                     AUTH_OK);
    assert_int_equal(check(p, "dev", NULL, AUTH_PERM_WRITE_AC, "inst/x", reason, sizeof(reason)),
                     AUTH_DENIED);
    assert_non_null(strstr(reason, "'write-ac'"));
    assert_non_null(strstr(reason, "'inst/x'"));
    assert_null(strstr(reason, "dev "));
    assert_int_equal(check(p, "team", NULL, AUTH_PERM_WRITE_AC, "teamA/x", reason, sizeof(reason)),
                     AUTH_OK);
    assert_int_equal(check(p, "team", NULL, AUTH_PERM_READ, "teamAB", reason, sizeof(reason)),
                     AUTH_DENIED);
    assert_non_null(strstr(reason, "outside its instance prefixes"));
    /* a certificate name without a certificates file: anonymous (none) */
    assert_int_equal(check(p, NULL, "ci", AUTH_PERM_READ, "", reason, sizeof(reason)),
                     AUTH_UNAUTHENTICATED);
    auth_policy_free(p);

    /* anonymous = read */
    p = policy("dev read,write\n", NULL, "read", false);
    assert_int_equal(check(p, NULL, NULL, AUTH_PERM_READ, "", reason, sizeof(reason)), AUTH_OK);
    assert_int_equal(check(p, NULL, NULL, AUTH_PERM_WRITE, "", reason, sizeof(reason)),
                     AUTH_DENIED);
    assert_int_equal(check(p, "bad", NULL, AUTH_PERM_READ, "", reason, sizeof(reason)),
                     AUTH_UNAUTHENTICATED);
    auth_policy_free(p);

    /* client certificates: names mapped; unlisted DENIED; a token wins */
    p = policy("dev read\n", "ci read,write-ac\n", NULL, true);
    assert_int_equal(check(p, NULL, "ci", AUTH_PERM_WRITE_AC, "", reason, sizeof(reason)), AUTH_OK);
    assert_int_equal(check(p, NULL, "stranger", AUTH_PERM_READ, "", reason, sizeof(reason)),
                     AUTH_DENIED);
    assert_int_equal(check(p, "dev", "ci", AUTH_PERM_WRITE_AC, "", reason, sizeof(reason)),
                     AUTH_DENIED);
    auth_policy_free(p);

    /* client_ca alone: a certificate gets the anonymous permissions */
    p = policy(NULL, NULL, "read,write", true);
    assert_int_equal(check(p, NULL, "anyone", AUTH_PERM_WRITE, "", reason, sizeof(reason)),
                     AUTH_OK);
    assert_int_equal(check(p, NULL, "anyone", AUTH_PERM_WRITE_AC, "", reason, sizeof(reason)),
                     AUTH_DENIED);
    auth_policy_free(p);
}

static void test_policy_errors(void **state)
{
    struct auth_settings s = {0};
    struct auth_policy *p = NULL;
    char path[256], err[512];

    (void)state;
    s.anonymous = "reed";
    assert_int_equal(auth_policy_load(&s, &p, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "[auth] anonymous"));
    write_file(path, sizeof(path), "names-no-ca", "ci read\n", 0600);
    s.anonymous = NULL;
    s.certificates_file = path;
    assert_int_equal(auth_policy_load(&s, &p, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "client_ca"));
    assert_null(p);
}

static void test_guard(void **state)
{
    struct auth_guard g;
    struct auth_policy *a = policy("one read\n", NULL, NULL, false);
    struct auth_policy *b = policy("two read\n", NULL, NULL, false);
    struct auth_policy *held;
    char reason[256];

    (void)state;
    assert_int_equal(auth_guard_init(&g, a), 0);
    held = auth_guard_acquire(&g);
    assert_ptr_equal(held, a);
    auth_guard_replace(&g, b);
    /* the call that holds a keeps its rules */
    assert_int_equal(check(held, "one", NULL, AUTH_PERM_READ, "", reason, sizeof(reason)), AUTH_OK);
    auth_guard_release(&g, held); /* frees a (ASan would see a leak otherwise) */
    held = auth_guard_acquire(&g);
    assert_int_equal(check(held, "one", NULL, AUTH_PERM_READ, "", reason, sizeof(reason)),
                     AUTH_UNAUTHENTICATED);
    assert_int_equal(check(held, "two", NULL, AUTH_PERM_READ, "", reason, sizeof(reason)), AUTH_OK);
    auth_guard_release(&g, held);
    auth_guard_destroy(&g);
}

static void test_limiter(void **state)
{
    struct auth_log_limiter l;
    uint64_t suppressed = 99;
    unsigned allowed = 0;

    (void)state;
    auth_log_limiter_init(&l, 3);
    for (int i = 0; i < 10; i++)
        allowed += auth_log_limiter_allow(&l, 1000000 + (uint64_t)i, &suppressed);
    assert_int_equal(allowed, 3);
    assert_true(auth_log_limiter_allow(&l, 2500000, &suppressed));
    assert_int_equal(suppressed, 7);
    auth_log_limiter_destroy(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_perms),         cmocka_unit_test(test_prefixes),
        cmocka_unit_test(test_table_parse),   cmocka_unit_test(test_table_hashed),
        cmocka_unit_test(test_table_errors),  cmocka_unit_test(test_names),
        cmocka_unit_test(test_file_modes),    cmocka_unit_test(test_policy),
        cmocka_unit_test(test_policy_errors), cmocka_unit_test(test_guard),
        cmocka_unit_test(test_limiter),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
