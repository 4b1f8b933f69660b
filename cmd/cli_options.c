/*
 * cli_options.c - `casbox run`'s command line becomes a struct cli_run: a
 * sandbox_spec (argv, the clean environment, mounts, limits, policy) plus
 * what the front end does around it (input tree, outputs, report, --action).
 *
 * As in bubblewrap, nothing is done while parsing: the spec can be printed
 * (--dry-run) before any namespace exists. Every mistake is one line on
 * stderr and exit status 2; checks that need the system (does --input
 * exist?) are left to the run, which fails with 125.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

extern char **environ;

enum {
    OPT_INPUT = 256,
    OPT_OUTPUT,
    OPT_OUTPUT_DIR,
    OPT_RO,
    OPT_RW,
    OPT_TMPFS,
    OPT_ENV,
    OPT_KEEP_ENV,
    OPT_CWD,
    OPT_NET,
    OPT_TIMEOUT,
    OPT_MEMORY,
    OPT_PIDS,
    OPT_CPU_SECONDS,
    OPT_SECCOMP,
    OPT_ROOT,
    OPT_JSON,
    OPT_DRY_RUN,
    OPT_ACTION,
    OPT_REMOTE,
    OPT_INSTANCE,
    OPT_CONFIG,
    OPT_COMPARE,
};

static const struct option options_long[] = {
    {"input", required_argument, NULL, OPT_INPUT},
    {"output", required_argument, NULL, OPT_OUTPUT},
    {"output-dir", required_argument, NULL, OPT_OUTPUT_DIR},
    {"ro", required_argument, NULL, OPT_RO},
    {"rw", required_argument, NULL, OPT_RW},
    {"tmpfs", required_argument, NULL, OPT_TMPFS},
    {"env", required_argument, NULL, OPT_ENV},
    {"keep-env", required_argument, NULL, OPT_KEEP_ENV},
    {"cwd", required_argument, NULL, OPT_CWD},
    {"net", no_argument, NULL, OPT_NET},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"pids", required_argument, NULL, OPT_PIDS},
    {"cpu-seconds", required_argument, NULL, OPT_CPU_SECONDS},
    {"seccomp", required_argument, NULL, OPT_SECCOMP},
    {"root", no_argument, NULL, OPT_ROOT},
    {"json", required_argument, NULL, OPT_JSON},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"action", required_argument, NULL, OPT_ACTION},
    {"remote", required_argument, NULL, OPT_REMOTE},
    {"instance", required_argument, NULL, OPT_INSTANCE},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"compare", no_argument, NULL, OPT_COMPARE},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

void cli_options_print_help(FILE *out)
{
    fputs("Usage: casbox run [OPTIONS] -- COMMAND [ARGS...]\n"
          "       casbox run --action HASH/SIZE --remote grpc://HOST:PORT [--instance NAME]\n"
          "                  [--compare] [--config FILE]\n"
          "\n"
          "Runs COMMAND in casbox's sandbox (the one casboxd runs actions in): new user,\n"
          "mount, pid, net, ipc, uts and cgroup namespaces, a read-only root of /usr and\n"
          "an allow-list of /etc, no host home, a clean environment, no capabilities, a\n"
          "seccomp filter. No root needed. The command starts in the exec root,\n" SANDBOX_EXEC_ROOT
          ".\n"
          "\n"
          "Files:\n"
          "  --input DIR           the exec root shows DIR, writable through an overlay;\n"
          "                        DIR itself is never modified (default: an empty tmpfs)\n"
          "  --output PATH         copy PATH (relative to the exec root) back after the\n"
          "                        command; repeatable\n"
          "  --output-dir DEST     where outputs go (default .); alone, copy all of the\n"
          "                        exec root there\n"
          "  --ro HOST[:INSIDE]    bind HOST read-only at INSIDE (default: the same path)\n"
          "  --rw HOST[:INSIDE]    bind HOST read-write\n"
          "  --tmpfs PATH          a fresh tmpfs at PATH\n"
          "  --cwd DIR             working directory inside (relative: to the exec root)\n"
          "\n"
          "Environment (only PATH=" CLI_DEFAULT_PATH " by default):\n"
          "  --env NAME=VALUE      set a variable; repeatable\n"
          "  --keep-env NAME       pass the caller's NAME through (NAME* for a prefix)\n"
          "\n"
          "Isolation and limits:\n"
          "  --net                 share the host's network (default: loopback only)\n"
          "  --root                run as uid 0 inside (default: your own uid)\n"
          "  --seccomp MODE        default, strict, none, or a policy FILE\n"
          "  --timeout SECONDS     kill everything after SECONDS (decimals allowed)\n"
          "  --memory BYTES        memory limit; K, M, G, T suffixes (powers of 1024)\n"
          "  --pids N              at most N processes and threads\n"
          "  --cpu-seconds N       CPU time limit (RLIMIT_CPU)\n"
          "\n"
          "Reporting:\n"
          "  --json FILE           write a JSON report: exit status, times, peak memory,\n"
          "                        the limit hit\n"
          "  --dry-run             print the sandbox spec and exit\n"
          "\n"
          "Replaying a remote action:\n"
          "  --action HASH/SIZE    fetch this Action, its Command and inputs and run it as\n"
          "                        casboxd would; print the ActionResult\n"
          "  --remote URL          grpc://HOST:PORT, grpcs://HOST:PORT or HOST:PORT\n"
          "  --instance NAME       REAPI instance name (default \"\")\n"
          "  --compare             diff against the cached ActionResult (exit 1 if different)\n"
          "  --config FILE         casboxd's configuration file (limits, seccomp, network)\n"
          "\n"
          "Exit status: the command's; 128+N when killed by signal N; 121 CPU limit,\n"
          "122 pids limit, 123 memory limit, 124 timeout; 125 casbox failed; 127 the\n"
          "command could not be executed; 2 bad command line. See man casbox-run.\n",
          out);
}

void cli_error(const char *fmt, ...)
{
    va_list ap;

    fputs("casbox run: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* --- the environment being built --- */

struct options_env {
    char **vars; /* "NAME=VALUE", in order of first appearance */
    size_t n;
};

static int options_env_set(struct options_env *env, const char *name, size_t name_len,
                           const char *value)
{
    char *var, **grown;

    if (asprintf(&var, "%.*s=%s", (int)name_len, name, value) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < env->n; i++) {
        if (strncmp(env->vars[i], name, name_len) == 0 && env->vars[i][name_len] == '=') {
            free(env->vars[i]);
            env->vars[i] = var;
            return 0;
        }
    }
    grown = realloc(env->vars, (env->n + 2) * sizeof(*grown));
    if (grown == NULL) {
        free(var);
        return -ENOMEM;
    }
    env->vars = grown;
    env->vars[env->n++] = var;
    env->vars[env->n] = NULL;
    return 0;
}

/* --keep-env NAME or PREFIX*: copies the caller's matching variables. */
static int options_env_keep(struct options_env *env, const char *pattern)
{
    size_t len = strlen(pattern);
    bool prefix = len > 0 && pattern[len - 1] == '*';
    int rc = 0;

    if (prefix)
        len--;
    for (char **e = environ; rc == 0 && e != NULL && *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        size_t name_len;

        if (eq == NULL)
            continue;
        name_len = (size_t)(eq - *e);
        if (prefix ? name_len >= len && strncmp(*e, pattern, len) == 0
                   : name_len == len && strncmp(*e, pattern, len) == 0)
            rc = options_env_set(env, *e, name_len, eq + 1);
    }
    return rc;
}

static void options_env_free(struct options_env *env)
{
    for (size_t i = 0; i < env->n; i++)
        free(env->vars[i]);
    free(env->vars);
    memset(env, 0, sizeof(*env));
}

static bool options_env_name_ok(const char *name, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (name[i] == '=' || name[i] == '\0')
            return false;
    return true;
}

/* --- values --- */

/* "12", "1.5", "0.25": milliseconds, rounded up. */
static int options_parse_seconds(const char *s, uint64_t *ms)
{
    uint64_t whole = 0, frac = 0;
    const char *p = s;
    bool below_ms = false;
    int digits = 0;

    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (whole > UINT64_MAX / 10000)
            return -ERANGE;
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++, digits++) {
            if (digits < 3)
                frac = frac * 10 + (uint64_t)(*p - '0');
            else if (*p != '0')
                below_ms = true;
        }
        for (; digits < 3; digits++)
            frac *= 10;
        if (below_ms)
            frac++; /* round up */
    }
    if (*p != '\0')
        return -EINVAL;
    *ms = whole * 1000 + frac;
    return 0;
}

static int options_parse_count(const char *s, uint64_t *out)
{
    char *end;

    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    *out = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -EINVAL;
    return 0;
}

static bool options_has_dotdot(const char *path)
{
    for (const char *p = path; *p != '\0';) {
        size_t n = strcspn(p, "/");

        if (n == 2 && p[0] == '.' && p[1] == '.')
            return true;
        p += n;
        p += strspn(p, "/");
    }
    return false;
}

/* An absolute host path: made so against the current directory, not
 * resolved (the sandbox resolves it when it mounts). */
static int options_host_path(const char *path, char **out)
{
    char cwd[PATH_MAX];

    if (path[0] == '/') {
        *out = strdup(path);
        return *out == NULL ? -ENOMEM : 0;
    }
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return -errno;
    if (asprintf(out, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, path) < 0) {
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* A path inside the sandbox: absolute, or relative to the exec root. */
static int options_inside_path(const char *path, char **out)
{
    int n;

    if (path[0] == '/')
        n = asprintf(out, "%s", path);
    else
        n = asprintf(out, "%s/%s", SANDBOX_EXEC_ROOT, path);
    if (n < 0) {
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* --output: a path relative to the exec root, normalised (no "." parts or
 * repeated slashes); "" for the exec root itself. */
static int options_output_path(const char *path, char **out, const char **why)
{
    const char *root = SANDBOX_EXEC_ROOT;
    size_t root_len = strlen(root), n = 0;
    char *norm;

    if (path[0] == '/') {
        if (strncmp(path, root, root_len) != 0 ||
            (path[root_len] != '\0' && path[root_len] != '/')) {
            *why = "only paths in the exec root (" SANDBOX_EXEC_ROOT ") can be copied back";
            return -EINVAL;
        }
        path += root_len;
    }
    if (options_has_dotdot(path)) {
        *why = "must not contain ..";
        return -EINVAL;
    }
    norm = malloc(strlen(path) + 1);
    if (norm == NULL)
        return -ENOMEM;
    for (const char *p = path; *p != '\0';) {
        size_t len;

        p += strspn(p, "/");
        len = strcspn(p, "/");
        if (len == 0)
            break;
        if (!(len == 1 && p[0] == '.')) {
            if (n > 0)
                norm[n++] = '/';
            memcpy(norm + n, p, len);
            n += len;
        }
        p += len;
    }
    norm[n] = '\0';
    *out = norm;
    return 0;
}

static int options_add_output(struct cli_run *run, const char *path)
{
    const char *why = "";
    char **grown, *norm;
    int rc;

    rc = options_output_path(path, &norm, &why);
    if (rc == -EINVAL) {
        cli_error("--output %s: %s", path, why);
        return CLI_EXIT_USAGE;
    }
    if (rc != 0)
        return rc;
    grown = realloc(run->outputs, (run->n_outputs + 1) * sizeof(*grown));
    if (grown == NULL) {
        free(norm);
        return -ENOMEM;
    }
    run->outputs = grown;
    run->outputs[run->n_outputs++] = norm;
    return 0;
}

/* --ro / --rw HOST[:INSIDE] */
static int options_add_bind(struct cli_run *run, enum sandbox_mount_kind kind, const char *flag,
                            const char *arg)
{
    const char *colon = strchr(arg, ':');
    char *host_arg = NULL, *host = NULL, *inside = NULL;
    int rc;

    host_arg = colon != NULL ? strndup(arg, (size_t)(colon - arg)) : strdup(arg);
    if (host_arg == NULL)
        return -ENOMEM;
    if (host_arg[0] == '\0' || (colon != NULL && colon[1] == '\0')) {
        cli_error("%s '%s': expected HOST[:INSIDE]", flag, arg);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    rc = options_host_path(host_arg, &host);
    if (rc == 0)
        rc = options_inside_path(colon != NULL ? colon + 1 : host, &inside);
    if (rc != 0)
        goto out;
    if (options_has_dotdot(inside)) {
        cli_error("%s %s: the path inside must not contain ..", flag, arg);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    rc = sandbox_spec_add_mount(&run->spec, kind, host, inside);
out:
    free(host_arg);
    free(host);
    free(inside);
    return rc;
}

static int options_set_seccomp(struct cli_run *run, const char *mode)
{
    struct sandbox_seccomp_rule *rules = NULL;
    char err[256], *path = NULL;
    size_t n = 0;
    int rc;

    run->spec.seccomp = SANDBOX_SECCOMP_FILE;
    if (strcmp(mode, "default") == 0)
        run->spec.seccomp = SANDBOX_SECCOMP_DEFAULT;
    else if (strcmp(mode, "strict") == 0)
        run->spec.seccomp = SANDBOX_SECCOMP_STRICT;
    else if (strcmp(mode, "none") == 0)
        run->spec.seccomp = SANDBOX_SECCOMP_NONE;
    if (run->spec.seccomp != SANDBOX_SECCOMP_FILE)
        return sandbox_spec_set_string(&run->spec.seccomp_file, NULL);
    /* A policy file is checked now, so that a typo is a usage error. */
    rc = options_host_path(mode, &path);
    if (rc != 0)
        return rc;
    rc = sandbox_seccomp_parse_file(path, &rules, &n, err, sizeof(err));
    if (rc == 0) {
        sandbox_seccomp_rules_free(rules, n);
        rc = sandbox_spec_set_string(&run->spec.seccomp_file, path);
    } else if (rc != -ENOMEM) {
        if (rc == -EINVAL && err[0] != '\0')
            cli_error("--seccomp: %s", err);
        else
            cli_error("--seccomp %s: not default, strict or none, and not a readable policy "
                      "file (%s)",
                      mode, strerror(-rc));
        rc = CLI_EXIT_USAGE;
    }
    free(path);
    return rc;
}

/* --- the parse --- */

struct options_state {
    struct options_env env;
    bool local_only; /* a flag that makes no sense with --action was given */
    char local_flag[32];
    bool replay_only; /* a flag that only makes sense with --action was given */
    char replay_flag[32];
};

static int options_value_error(const char *flag, const char *value, const char *what)
{
    cli_error("%s: '%s' is not %s", flag, value, what);
    return CLI_EXIT_USAGE;
}

/* --- one option ---
 *
 * options_apply hands each option to the step for its group; each step
 * returns 0, CLI_EXIT_USAGE (message printed) or a negative errno. */

/* *slot = arg made an absolute host path (options_host_path). */
static int options_set_host_path(char **slot, const char *arg)
{
    free(*slot);
    *slot = NULL;
    return options_host_path(arg, slot);
}

static int options_set_string(char **slot, const char *arg)
{
    free(*slot);
    *slot = strdup(arg);
    return *slot == NULL ? -ENOMEM : 0;
}

/* --tmpfs, --cwd: a path inside the sandbox, without "..". */
static int options_sandbox_path(const char *flag, const char *arg, char **out)
{
    int rc = options_inside_path(arg, out);

    if (rc == 0 && options_has_dotdot(*out)) {
        rc = options_value_error(flag, arg, "a path without ..");
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* --input, --output, --output-dir, --ro, --rw, --tmpfs, --cwd */
static int options_apply_files(struct cli_run *run, int opt, const char *arg, const char *flag)
{
    char *inside = NULL;
    int rc;

    switch (opt) {
    case OPT_INPUT:
        return options_set_host_path(&run->input_dir, arg);
    case OPT_OUTPUT:
        return options_add_output(run, arg);
    case OPT_OUTPUT_DIR:
        return options_set_host_path(&run->output_dir, arg);
    case OPT_RO:
    case OPT_RW:
        return options_add_bind(run, opt == OPT_RO ? SANDBOX_MOUNT_RO : SANDBOX_MOUNT_RW, flag,
                                arg);
    }
    rc = options_sandbox_path(flag, arg, &inside);
    if (rc == 0 && opt == OPT_TMPFS)
        rc = sandbox_spec_add_mount(&run->spec, SANDBOX_MOUNT_TMPFS, NULL, inside);
    else if (rc == 0)
        rc = sandbox_spec_set_string(&run->spec.cwd, inside);
    free(inside);
    return rc;
}

/* --env NAME=VALUE, --keep-env NAME */
static int options_apply_env(struct options_env *env, int opt, const char *arg, const char *flag)
{
    const char *eq = strchr(arg, '=');

    if (opt == OPT_KEEP_ENV) {
        if (!options_env_name_ok(arg, strlen(arg)))
            return options_value_error(flag, arg, "a variable name");
        return options_env_keep(env, arg);
    }
    if (eq == NULL || !options_env_name_ok(arg, (size_t)(eq - arg)))
        return options_value_error(flag, arg, "NAME=VALUE");
    return options_env_set(env, arg, (size_t)(eq - arg), eq + 1);
}

/* --net, --root, --seccomp */
static int options_apply_isolation(struct cli_run *run, int opt, const char *arg)
{
    if (opt == OPT_SECCOMP)
        return options_set_seccomp(run, arg);
    if (opt == OPT_NET)
        run->spec.network = true;
    else
        run->spec.uid0 = true;
    return 0;
}

/* --timeout, --memory, --pids, --cpu-seconds */
static int options_apply_limit(struct sandbox_limits *l, int opt, const char *arg, const char *flag)
{
    switch (opt) {
    case OPT_TIMEOUT:
        if (options_parse_seconds(arg, &l->timeout_ms) != 0)
            return options_value_error(flag, arg, "a number of seconds");
        break;
    case OPT_MEMORY:
        if (cli_parse_size(arg, &l->memory_bytes) != 0)
            return options_value_error(flag, arg, "a size (BYTES, or with a K/M/G/T suffix)");
        break;
    case OPT_PIDS:
        if (options_parse_count(arg, &l->pids_max) != 0)
            return options_value_error(flag, arg, "a number of processes");
        break;
    case OPT_CPU_SECONDS:
        if (options_parse_count(arg, &l->cpu_seconds) != 0)
            return options_value_error(flag, arg, "a whole number of seconds");
        break;
    }
    return 0;
}

/* --json FILE, --dry-run */
static int options_apply_report(struct cli_run *run, int opt, const char *arg)
{
    if (opt == OPT_JSON)
        return options_set_host_path(&run->json_path, arg);
    run->dry_run = true;
    return 0;
}

/* --action HASH/SIZE */
static int options_set_action(struct cli_run *run, const char *arg, const char *flag)
{
    const char *slash = strchr(arg, '/');
    uint64_t size;

    if (slash == NULL || slash - arg != 64 || strspn(arg, "0123456789abcdefABCDEF") != 64 ||
        options_parse_count(slash + 1, &size) != 0 || size > INT64_MAX)
        return options_value_error(flag, arg, "a digest HASH/SIZE (64 hex digits, bytes)");
    for (int i = 0; i < 64; i++)
        run->action_hash[i] = (char)tolower((unsigned char)arg[i]);
    run->action_hash[64] = '\0';
    run->action_size = (int64_t)size;
    run->replay = true;
    return 0;
}

/* --action, --remote, --instance, --config, --compare */
static int options_apply_replay(struct cli_run *run, int opt, const char *arg, const char *flag)
{
    switch (opt) {
    case OPT_ACTION:
        return options_set_action(run, arg, flag);
    case OPT_REMOTE:
        return options_set_string(&run->remote, arg);
    case OPT_INSTANCE:
        return options_set_string(&run->instance, arg);
    case OPT_CONFIG:
        return options_set_host_path(&run->config_path, arg);
    }
    run->compare = true;
    return 0;
}

/* Notes, for options_finish, a flag that only a replay (--action) takes or
 * one that only a local run takes; --action, --json and --dry-run go with
 * both. */
static void options_note_mode(struct options_state *os, int opt, const char *flag)
{
    if (opt == OPT_REMOTE || opt == OPT_INSTANCE || opt == OPT_CONFIG || opt == OPT_COMPARE) {
        os->replay_only = true;
        snprintf(os->replay_flag, sizeof(os->replay_flag), "%s", flag);
    } else if (opt != OPT_ACTION && opt != OPT_JSON && opt != OPT_DRY_RUN) {
        os->local_only = true;
        snprintf(os->local_flag, sizeof(os->local_flag), "%s", flag);
    }
}

/* One option; returns 0, CLI_EXIT_USAGE (message printed) or -ENOMEM. */
static int options_apply(struct cli_run *run, struct options_state *os, int opt, const char *arg,
                         const char *flag)
{
    int rc = 0;

    switch (opt) {
    case OPT_INPUT:
    case OPT_OUTPUT:
    case OPT_OUTPUT_DIR:
    case OPT_RO:
    case OPT_RW:
    case OPT_TMPFS:
    case OPT_CWD:
        rc = options_apply_files(run, opt, arg, flag);
        break;
    case OPT_ENV:
    case OPT_KEEP_ENV:
        rc = options_apply_env(&os->env, opt, arg, flag);
        break;
    case OPT_NET:
    case OPT_ROOT:
    case OPT_SECCOMP:
        rc = options_apply_isolation(run, opt, arg);
        break;
    case OPT_TIMEOUT:
    case OPT_MEMORY:
    case OPT_PIDS:
    case OPT_CPU_SECONDS:
        rc = options_apply_limit(&run->spec.limits, opt, arg, flag);
        break;
    case OPT_JSON:
    case OPT_DRY_RUN:
        rc = options_apply_report(run, opt, arg);
        break;
    case OPT_ACTION:
    case OPT_REMOTE:
    case OPT_INSTANCE:
    case OPT_CONFIG:
    case OPT_COMPARE:
        rc = options_apply_replay(run, opt, arg, flag);
        break;
    }
    options_note_mode(os, opt, flag);
    return rc;
}

/* The whole command line is known: cross-checks and the environment. */
static int options_finish(struct cli_run *run, struct options_state *os, int argc, char **argv)
{
    bool has_path = false;
    int rc;

    if (run->replay) {
        if (argc > 0) {
            cli_error("--action runs the action's own command: drop '%s'", argv[0]);
            return CLI_EXIT_USAGE;
        }
        if (os->local_only) {
            cli_error("%s cannot be used with --action (the action says what to run)",
                      os->local_flag);
            return CLI_EXIT_USAGE;
        }
        if (run->remote == NULL) {
            cli_error("--action needs --remote grpc://HOST:PORT");
            return CLI_EXIT_USAGE;
        }
        if (run->instance == NULL && (run->instance = strdup("")) == NULL)
            return -ENOMEM;
        return 0;
    }
    if (os->replay_only) {
        cli_error("%s only makes sense with --action HASH/SIZE", os->replay_flag);
        return CLI_EXIT_USAGE;
    }
    if (argc == 0) {
        cli_error("no command given (casbox run [OPTIONS] -- COMMAND [ARGS...])");
        return CLI_EXIT_USAGE;
    }
    rc = sandbox_spec_set_argv(&run->spec, (const char *const *)argv);
    for (size_t i = 0; rc == 0 && i < os->env.n; i++)
        if (strncmp(os->env.vars[i], "PATH=", 5) == 0)
            has_path = true;
    if (rc == 0 && !has_path)
        rc = options_env_set(&os->env, "PATH", 4, CLI_DEFAULT_PATH);
    if (rc == 0)
        rc = sandbox_spec_set_envp(
            &run->spec,
            (const char *const *)(os->env.vars != NULL ? os->env.vars : (char *[]){NULL}));
    /* --output-dir alone copies back the whole exec root. */
    if (rc == 0 && run->output_dir != NULL && run->n_outputs == 0)
        rc = options_add_output(run, "");
    if (rc == 0 && run->n_outputs > 0 && run->output_dir == NULL)
        rc = options_host_path(".", &run->output_dir);
    return rc;
}

int cli_options_parse(int argc, char **argv, struct cli_run *run)
{
    struct options_state os;
    int rc = 0, opt, index;

    memset(run, 0, sizeof(*run));
    memset(&os, 0, sizeof(os));
    sandbox_spec_init(&run->spec);
    run->spec.stdin_null = false; /* stdin, stdout and stderr pass through */
    opterr = 0;
    /* 0, not 1: glibc then also forgets where it stopped inside a group of
     * short options ("-hh") of an earlier argv, which may be freed by now. */
    optind = 0;
    /* "+": stop at the command, so that its own options stay its own. */
    while (rc == 0 &&
           (index = -1, opt = getopt_long(argc, argv, "+:h", options_long, &index)) != -1) {
        const char *flag = argv[optind - 1];
        char name[64];

        if (opt == 'h') {
            cli_options_print_help(stdout);
            rc = 0;
            goto out_exit;
        }
        if (opt == '?') {
            if (optopt != 0 && optopt < 256)
                cli_error("unknown option '-%c' (see casbox run --help)", optopt);
            else
                cli_error("unknown option '%s' (see casbox run --help)", flag);
            rc = CLI_EXIT_USAGE;
            goto out_exit;
        }
        if (opt == ':') {
            /* flag is the option itself here: its value is what is missing */
            cli_error("option '%s' needs a value (see casbox run --help)", flag);
            rc = CLI_EXIT_USAGE;
            goto out_exit;
        }
        snprintf(name, sizeof(name), "--%s", index >= 0 ? options_long[index].name : "?");
        rc = options_apply(run, &os, opt, optarg, name);
    }
    if (rc == 0)
        rc = options_finish(run, &os, argc - optind, argv + optind);
    if (rc == 0) {
        rc = CLI_OPTIONS_RUN;
        goto out_exit;
    }
    if (rc < 0) {
        cli_error("%s", strerror(-rc));
        rc = CLI_EXIT_FAILURE;
    }
out_exit:
    options_env_free(&os.env);
    return rc;
}

void cli_run_free(struct cli_run *run)
{
    sandbox_spec_free(&run->spec);
    free(run->input_dir);
    for (size_t i = 0; i < run->n_outputs; i++)
        free(run->outputs[i]);
    free(run->outputs);
    free(run->output_dir);
    free(run->json_path);
    free(run->remote);
    free(run->instance);
    free(run->config_path);
    memset(run, 0, sizeof(*run));
}
