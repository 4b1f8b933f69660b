/*
 * action_spec.c - a validated action and the daemon's configuration become a
 * struct sandbox_spec: plain data, printable with sandbox_spec_print, applied
 * later by the spawner.
 *
 * The environment is exactly the Command's (Bazel's
 * --incompatible_strict_action_env relies on it: nothing from the daemon may
 * leak into an action, or the same action would behave differently on
 * another worker). The command runs as the daemon's own uid mapped into the
 * user namespace, as Bazel's local linux-sandbox does, not as uid 0: tools
 * and tests behave differently as root.
 */
#include "action_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int spec_seccomp(const char *mode, struct sandbox_spec *spec, struct reapi_status *st)
{
    if (strcmp(mode, "default") == 0 || mode[0] == '\0') {
        spec->seccomp = SANDBOX_SECCOMP_DEFAULT;
    } else if (strcmp(mode, "strict") == 0) {
        spec->seccomp = SANDBOX_SECCOMP_STRICT;
    } else if (strcmp(mode, "none") == 0) {
        spec->seccomp = SANDBOX_SECCOMP_NONE;
    } else if (mode[0] == '/') {
        spec->seccomp = SANDBOX_SECCOMP_FILE;
        if (sandbox_spec_set_string(&spec->seccomp_file, mode) != 0)
            return -ENOMEM;
    } else {
        reapi_status_set(st, GRPC_STATUS_INTERNAL,
                         "execution seccomp = '%s' is neither default, strict, none nor an "
                         "absolute policy file path",
                         mode);
        return -EINVAL;
    }
    return 0;
}

static int spec_env(const Command *cmd, struct sandbox_spec *spec)
{
    size_t n = cmd->n_environment_variables;
    char **env = calloc(n + 1, sizeof(*env));
    int rc = 0;

    if (env == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const Build__Bazel__Remote__Execution__V2__Command__EnvironmentVariable *v =
            cmd->environment_variables[i];

        if (asprintf(&env[i], "%s=%s", v->name, v->value ? v->value : "") < 0) {
            env[i] = NULL;
            rc = -ENOMEM;
            goto out;
        }
    }
    rc = sandbox_spec_set_envp(spec, (const char *const *)env);
out:
    for (size_t i = 0; i < n; i++)
        free(env[i]);
    free(env);
    return rc;
}

static int spec_argv(const Command *cmd, struct sandbox_spec *spec)
{
    const char **argv = calloc(cmd->n_arguments + 1, sizeof(*argv));
    int rc;

    if (argv == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cmd->n_arguments; i++)
        argv[i] = cmd->arguments[i];
    rc = sandbox_spec_set_argv(spec, argv);
    free(argv);
    return rc;
}

/* The root tree of the execution environment the action's container-image
 * selected when it was loaded; a reload may have removed it since. */
static int spec_root(const char *image, const struct casbox_config *cfg, struct sandbox_spec *spec,
                     struct reapi_status *st)
{
    const struct casbox_environment *env = config_environment_find(cfg, image);
    char known[512];

    if (env == NULL) {
        config_environment_list(cfg, known, sizeof(known));
        reapi_status_set(st, GRPC_STATUS_FAILED_PRECONDITION,
                         "platform property container-image=%.300s: no execution environment of "
                         "this server has that image any more (the config was reloaded); known "
                         "images: %s",
                         image, known);
        return -EINVAL;
    }
    return sandbox_spec_set_string(&spec->root_dir, env->root);
}

int action_spec_build(const struct action *act, const struct casbox_config *cfg,
                      const struct action_scratch *scratch, struct sandbox_spec *spec,
                      struct action_spec_notes *notes, struct reapi_status *st)
{
    char *cwd = NULL;
    uint64_t max_ms = cfg->exec_max_timeout * 1000u;
    int rc;

    memset(notes, 0, sizeof(*notes));
    notes->requested_timeout_ms = act->timeout_ms;
    notes->timeout_ms = act->timeout_ms ? act->timeout_ms : cfg->exec_default_timeout * 1000u;
    if (max_ms != 0 && notes->timeout_ms > max_ms) {
        notes->timeout_ms = max_ms;
        notes->timeout_capped = act->timeout_ms != 0;
    }
    if (act->working_directory[0] != '\0') {
        if (asprintf(&cwd, "%s/%s", SANDBOX_EXEC_ROOT, act->working_directory) < 0) {
            cwd = NULL;
            rc = -ENOMEM;
            goto out;
        }
    }
    rc = spec_argv(act->command, spec);
    if (rc == 0)
        rc = spec_env(act->command, spec);
    if (rc == 0)
        rc = sandbox_spec_set_string(&spec->lower_dir, scratch->lower);
    if (rc == 0)
        rc = sandbox_spec_set_string(&spec->upper_dir, scratch->upper);
    if (rc == 0)
        rc = sandbox_spec_set_string(&spec->work_dir, scratch->work);
    if (rc == 0)
        rc = sandbox_spec_set_string(&spec->exec_root_path, SANDBOX_EXEC_ROOT);
    if (rc == 0)
        rc = sandbox_spec_set_string(&spec->cwd, cwd ? cwd : SANDBOX_EXEC_ROOT);
    if (rc == 0 && act->container_image != NULL)
        rc = spec_root(act->container_image, cfg, spec, st);
    if (rc == 0)
        rc = sandbox_spec_set_string(&spec->stdout_path, scratch->stdout_path);
    if (rc == 0)
        rc = sandbox_spec_set_string(&spec->stderr_path, scratch->stderr_path);
    if (rc != 0)
        goto out;
    spec->stdin_null = true;
    spec->uid0 = false;
    spec->network = act->network && cfg->exec_allow_network;
    spec->limits.timeout_ms = notes->timeout_ms;
    spec->limits.memory_bytes = cfg->exec_memory_bytes;
    spec->limits.pids_max = cfg->exec_pids_max;
    spec->limits.output_bytes = cfg->exec_stdio_bytes;
    spec->limits.cpu_seconds = 0; /* the timeout bounds wall time, which bounds CPU */
    rc = spec_seccomp(cfg->exec_seccomp, spec, st);
out:
    if (rc == -ENOMEM)
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                         "out of memory building the sandbox spec");
    free(cwd);
    return rc;
}
