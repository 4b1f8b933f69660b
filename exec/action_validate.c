/*
 * action_validate.c - the rules a client's Action, Command, Directory and
 * platform must follow before casbox stages or runs anything. Each check
 * names the field, path or property at fault in an INVALID_ARGUMENT status,
 * so that a user can tell from Bazel's error what to fix.
 *
 * Audited against remote_execution.proto's own words (v2.2, the text Debian
 * ships; 2026-12): strict where the spec is, not stricter. Where casbox
 * refuses more than the text does, the reason is given.
 *
 *   Directory: "every child ... a path of exactly one segment", "a unique
 *     path segment" (across files, directories and symlinks), "sorted ... by
 *     UTF-8 bytes": all enforced (FUSE staging looks names up by binary
 *     search). Also refused: "", "." and "..", which are not one segment
 *     naming an entry, and names over NAME_MAX. A size-0 digest must be the
 *     empty blob's.
 *   NodeProperties (inputs): ignored, so their order is not checked; the
 *     file mode comes from is_executable.
 *   SymlinkNode.target: relative or absolute, ".." anywhere: all accepted,
 *     as Capabilities advertises symlink_absolute_path_strategy ALLOWED
 *     ("allow symlink targets to escape the input root tree"). The sandbox
 *     resolves them inside the action's own root (docs/security.md); casbox
 *     itself never follows one. Refused: empty, or PATH_MAX bytes and over
 *     (no symlink can hold it).
 *   Command.arguments: argv[0] must be there and non-empty (a path).
 *   Command.environment_variables: "MUST be lexicographically sorted by
 *     name" is the client's rule for a stable digest; casbox runs the same
 *     whatever the order, so it does not refuse unsorted ones. Refused: an
 *     empty name or one with '=' (environ cannot hold it) and a name given
 *     twice (the spec gives no way to say which value wins).
 *   Output paths (output_files, output_directories, output_paths): "MUST
 *     NOT include a trailing slash, nor a leading slash": enforced. "." and
 *     empty components ("a/./b", "a//b") are allowed and dropped when the
 *     path is walked (action_path_normalize); duplicates and parents are
 *     found on that form. "" is the working directory itself, allowed for
 *     output_directories (as the spec says) and output_paths (an
 *     OutputDirectory's "" path "denotes the entire working directory"), not
 *     for an output file. An output file "cannot be duplicated, be a parent
 *     of another output file, or have the same path as any of the listed
 *     output directories"; output directories cannot repeat; output_paths
 *     "MUST be deduplicated": enforced. Sorted order: not checked (as for the
 *     environment). Refused beyond the text: a ".." component (the worker
 *     creates the parents of every output before the action runs, and must
 *     not walk out of the exec root doing so) and a component over NAME_MAX.
 *   Command.working_directory: "relative to the input root ... If it is left
 *     empty, then the action is run in the input root". "." (buildbox's trexe
 *     sends it), "./a", "a/" and "a//b" are accepted and normalised ("" and
 *     "a"); ".." is refused as for output paths; absolute is refused.
 *   Command.output_node_properties: "If a property is not recognized by the
 *     server, the server will return an INVALID_ARGUMENT": casbox recognises
 *     none (ExecutionCapabilities.supported_node_properties is empty), so any
 *     is refused, naming it.
 *   Platform: "If an unknown name is provided ... the server SHOULD reject":
 *     OSFamily, network, container-image and execution.accepted_properties
 *     are known, the rest refused. A name may repeat ("if permitted by the server"): the
 *     last network= wins. Sorted order: not checked.
 *   Action.timeout: negative or malformed is refused here; one longer than
 *     execution.max_timeout is refused by casboxd (daemon/execution_run.c),
 *     as "the server MUST reject the request" says.
 */
#include "action_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* google.protobuf.Duration's documented range: +-10000 years. */
#define DURATION_MAX_SECONDS 315576000000LL

static void directory_label(const char *where, char *buf, size_t len)
{
    if (where[0] == '\0')
        snprintf(buf, len, "input root directory");
    else
        snprintf(buf, len, "input directory '%.900s'", where);
}

/* A size-0 digest can only be the empty blob's: nothing else can be uploaded. */
static int check_empty_digest(const struct cas_digest *d, const char *what, struct reapi_status *st)
{
    if (d->size != 0 || cas_digest_equal(d, cas_digest_empty()))
        return 0;
    reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                     "%s: digest has size 0 but not the empty blob's hash", what);
    return -EINVAL;
}

static int check_entry_name(const char *name, const char *kind, const char *label,
                            struct reapi_status *st)
{
    const char *why = NULL;

    if (name == NULL || name[0] == '\0')
        why = "is empty";
    else if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        why = "is not allowed";
    else if (strchr(name, '/') != NULL)
        why = "contains '/' (one path segment per entry)";
    else if (strlen(name) > NAME_MAX)
        why = "is longer than 255 bytes";
    if (why == NULL)
        return 0;
    reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "%s: %s name '%.300s' %s", label, kind,
                     name ? name : "", why);
    return -EINVAL;
}

/* Names of one kind must be strictly increasing by bytes: sorted, no repeat. */
static int check_order(const char *prev, const char *cur, const char *kind, const char *label,
                       struct reapi_status *st)
{
    int cmp;

    if (prev == NULL)
        return 0;
    cmp = strcmp(prev, cur);
    if (cmp < 0)
        return 0;
    if (cmp == 0)
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "%s: %s name '%.300s' appears twice",
                         label, kind, cur);
    else
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "%s: %s names are not sorted ('%.300s' before '%.300s')", label, kind,
                         prev, cur);
    return -EINVAL;
}

/* Walks the three sorted lists at once: a name may belong to one kind only. */
static int check_cross_kind(const Directory *dir, const char *label, struct reapi_status *st)
{
    size_t i = 0, j = 0, k = 0;

    while (true) {
        const char *names[3] = {
            i < dir->n_files ? dir->files[i]->name : NULL,
            j < dir->n_directories ? dir->directories[j]->name : NULL,
            k < dir->n_symlinks ? dir->symlinks[k]->name : NULL,
        };
        static const char *const kinds[3] = {"file", "directory", "symlink"};
        int min = -1;

        for (int n = 0; n < 3; n++) {
            if (names[n] != NULL && (min < 0 || strcmp(names[n], names[min]) < 0))
                min = n;
        }
        if (min < 0)
            return 0;
        for (int n = 0; n < 3; n++) {
            if (n != min && names[n] != NULL && strcmp(names[n], names[min]) == 0) {
                reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                                 "%s: name '%.300s' is both a %s and a %s", label, names[min],
                                 kinds[min], kinds[n]);
                return -EINVAL;
            }
        }
        if (min == 0)
            i++;
        else if (min == 1)
            j++;
        else
            k++;
    }
}

/* A node's digest: parsed without formatting anything when it is good (this
 * runs for every file of an input tree); the message is built on error. */
static int check_node_digest(const Digest *pd, const char *label, const char *kind,
                             const char *name, struct cas_digest *d, struct reapi_status *st)
{
    char what[1400];
    int rc;

    if (pd != NULL && pd->hash != NULL && pd->size_bytes > 0 &&
        cas_digest_parse_n(pd->hash, strlen(pd->hash), pd->size_bytes, d) == 0)
        return 0;
    snprintf(what, sizeof(what), "%s: %s '%.300s'", label, kind, name);
    rc = action_digest_from_proto(pd, d, what, st);
    if (rc == 0)
        rc = check_empty_digest(d, what, st);
    return rc;
}

int action_validate_directory(const Directory *dir, const char *where, struct reapi_status *st)
{
    return action_validate_directory_digests(dir, where, NULL, st);
}

int action_validate_directory_digests(const Directory *dir, const char *where,
                                      struct cas_digest *file_digests, struct reapi_status *st)
{
    char label[1024];
    struct cas_digest d;
    int rc;

    directory_label(where, label, sizeof(label));
    for (size_t i = 0; i < dir->n_files; i++) {
        const FileNode *f = dir->files[i];

        rc = check_entry_name(f->name, "file", label, st);
        if (rc == 0)
            rc = check_order(i ? dir->files[i - 1]->name : NULL, f->name, "file", label, st);
        if (rc == 0)
            rc = check_node_digest(f->digest, label, "file", f->name, &d, st);
        if (rc != 0)
            return rc;
        if (file_digests != NULL)
            file_digests[i] = d;
    }
    for (size_t i = 0; i < dir->n_directories; i++) {
        const DirectoryNode *n = dir->directories[i];

        rc = check_entry_name(n->name, "directory", label, st);
        if (rc == 0)
            rc = check_order(i ? dir->directories[i - 1]->name : NULL, n->name, "directory", label,
                             st);
        if (rc == 0)
            rc = check_node_digest(n->digest, label, "directory", n->name, &d, st);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < dir->n_symlinks; i++) {
        const SymlinkNode *s = dir->symlinks[i];

        rc = check_entry_name(s->name, "symlink", label, st);
        if (rc == 0)
            rc = check_order(i ? dir->symlinks[i - 1]->name : NULL, s->name, "symlink", label, st);
        if (rc != 0)
            return rc;
        if (s->target == NULL || s->target[0] == '\0') {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                             "%s: symlink '%.300s' has an empty target", label, s->name);
            return -EINVAL;
        }
    }
    return check_cross_kind(dir, label, st);
}

int action_validate_symlink_target(const char *target, const char *where, struct reapi_status *st)
{
    if (target == NULL || target[0] == '\0') {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "input symlink '%.900s' has an empty target", where);
        return -EINVAL;
    }
    if (strlen(target) >= PATH_MAX) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "input symlink '%.900s' has a target of %zu bytes (PATH_MAX is %d)", where,
                         strlen(target), PATH_MAX);
        return -EINVAL;
    }
    return 0;
}

int action_validate_relative_path(const char *path, unsigned flags, const char **why)
{
    size_t total = strlen(path);
    const char *p = path;

    *why = NULL;
    if (path[0] == '\0') {
        if (flags & ACTION_PATH_EMPTY_OK)
            return 0;
        *why = "is empty";
        return -EINVAL;
    }
    if (path[0] == '/') {
        *why = "is absolute";
        return -EINVAL;
    }
    if (path[total - 1] == '/' && !(flags & ACTION_PATH_TRAILING_SLASH_OK)) {
        *why = "ends with '/'";
        return -EINVAL;
    }
    while (*p != '\0') {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);

        if (len == 2 && p[0] == '.' && p[1] == '.')
            *why = "has a '..' component";
        else if (len > NAME_MAX)
            *why = "has a component longer than 255 bytes";
        if (*why != NULL)
            return -EINVAL;
        p += len;
        if (*p == '/')
            p++;
    }
    if (total >= PATH_MAX - sizeof(SANDBOX_EXEC_ROOT) - 1) {
        *why = "is longer than PATH_MAX inside the sandbox";
        return -EINVAL;
    }
    return 0;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Whether key[0..len) is in the sorted array. */
static bool sorted_contains(char *const *sorted, size_t n, const char *key, size_t len)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strncmp(sorted[mid], key, len);

        if (cmp == 0)
            cmp = sorted[mid][len] == '\0' ? 0 : 1;
        if (cmp == 0)
            return true;
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* A Command's list of output paths as they are walked: each normalised
 * (action_path_normalize), sorted. */
struct path_list {
    char **norm;
    size_t n;
};

static void path_list_free(struct path_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->norm[i]);
    free(l->norm);
    l->norm = NULL;
    l->n = 0;
}

/* Checks each path of a list and builds *l; then that none repeats and,
 * with no_parents, that none is a parent of another (output files), both on
 * the normalised forms. allow_empty: "" (or ".") is the working directory
 * itself, an output directory. */
static int check_path_list(char **paths, size_t n, const char *field, bool allow_empty,
                           bool no_parents, struct path_list *l, struct reapi_status *st)
{
    const char *why;

    l->norm = calloc(n + 1, sizeof(*l->norm));
    if (l->norm == NULL)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        if (action_validate_relative_path(paths[i], allow_empty ? ACTION_PATH_EMPTY_OK : 0, &why) !=
            0) {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "Command.%s[%zu] '%.600s' %s", field,
                             i, paths[i], why);
            return -EINVAL;
        }
        l->norm[l->n] = action_path_normalize(paths[i]);
        if (l->norm[l->n] == NULL)
            goto nomem;
        l->n++;
        if (!allow_empty && l->norm[l->n - 1][0] == '\0') {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                             "Command.%s[%zu] '%.600s' names the working directory itself", field,
                             i, paths[i]);
            return -EINVAL;
        }
    }
    qsort(l->norm, l->n, sizeof(*l->norm), compare_strings);
    for (size_t i = 1; i < l->n; i++) {
        if (strcmp(l->norm[i - 1], l->norm[i]) == 0) {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "Command.%s: '%.600s' appears twice",
                             field, l->norm[i]);
            return -EINVAL;
        }
    }
    for (size_t i = 0; no_parents && i < l->n; i++) {
        const char *p = l->norm[i];

        for (const char *s = strchr(p, '/'); s != NULL; s = strchr(s + 1, '/')) {
            if (sorted_contains(l->norm, l->n, p, (size_t)(s - p))) {
                reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                                 "Command.%s: '%.*s' is a parent of '%.600s'", field, (int)(s - p),
                                 p, p);
                return -EINVAL;
            }
        }
    }
    return 0;
nomem:
    reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory checking Command.%s",
                     field);
    return -ENOMEM;
}

/* No output file may also be an output directory. */
static int check_files_vs_dirs(const struct path_list *files, const struct path_list *dirs,
                               struct reapi_status *st)
{
    for (size_t i = 0; i < files->n; i++) {
        const char *f = files->norm[i];

        if (sorted_contains(dirs->norm, dirs->n, f, strlen(f))) {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                             "Command: '%.600s' is both an output file and an output directory", f);
            return -EINVAL;
        }
    }
    return 0;
}

static int check_environment(const Command *cmd, struct reapi_status *st)
{
    char **names = NULL;
    int rc = 0;

    for (size_t i = 0; i < cmd->n_environment_variables; i++) {
        const char *name = cmd->environment_variables[i]->name;

        if (name == NULL || name[0] == '\0') {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                             "Command.environment_variables[%zu] has an empty name", i);
            return -EINVAL;
        }
        if (strchr(name, '=') != NULL) {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                             "Command.environment_variables[%zu]: name '%.300s' contains '='", i,
                             name);
            return -EINVAL;
        }
    }
    if (cmd->n_environment_variables < 2)
        return 0;
    names = malloc(cmd->n_environment_variables * sizeof(*names));
    if (names == NULL) {
        reapi_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                         "out of memory checking the environment");
        return -ENOMEM;
    }
    for (size_t i = 0; i < cmd->n_environment_variables; i++)
        names[i] = cmd->environment_variables[i]->name;
    qsort(names, cmd->n_environment_variables, sizeof(*names), compare_strings);
    for (size_t i = 1; i < cmd->n_environment_variables; i++) {
        if (strcmp(names[i - 1], names[i]) == 0) {
            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                             "Command.environment_variables: '%.300s' is set twice", names[i]);
            rc = -EINVAL;
            break;
        }
    }
    free(names);
    return rc;
}

int action_validate_command(const Command *cmd, struct reapi_status *st)
{
    const char *wd = cmd->working_directory ? cmd->working_directory : "";
    struct path_list files = {0}, dirs = {0};
    const char *why;
    int rc;

    if (cmd->n_arguments == 0) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "Command.arguments is empty: there is no program to run");
        return -EINVAL;
    }
    if (cmd->arguments[0] == NULL || cmd->arguments[0][0] == '\0') {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "Command.arguments[0] is empty");
        return -EINVAL;
    }
    rc = check_environment(cmd, st);
    if (rc != 0)
        return rc;
    if (action_validate_relative_path(wd, ACTION_PATH_EMPTY_OK | ACTION_PATH_TRAILING_SLASH_OK,
                                      &why) != 0) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT, "Command.working_directory '%.600s' %s",
                         wd, why);
        return -EINVAL;
    }
    if (cmd->n_output_node_properties > 0) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "Command.output_node_properties: '%.300s' is not supported by this server",
                         cmd->output_node_properties[0]);
        return -EINVAL;
    }
    if (cmd->n_output_paths > 0) {
        rc = check_path_list(cmd->output_paths, cmd->n_output_paths, "output_paths", true, false,
                             &files, st);
    } else {
        rc = check_path_list(cmd->output_files, cmd->n_output_files, "output_files", false, true,
                             &files, st);
        if (rc == 0)
            rc = check_path_list(cmd->output_directories, cmd->n_output_directories,
                                 "output_directories", true, false, &dirs, st);
        if (rc == 0)
            rc = check_files_vs_dirs(&files, &dirs, st);
    }
    path_list_free(&files);
    path_list_free(&dirs);
    return rc;
}

/* Whether name is one of the comma-separated names of list (spaces around
 * names ignored, case-insensitive); the list "*" holds every name (the
 * fleet's roles: the scheduler matches platforms to workers). */
static bool name_in_list(const char *list, const char *name)
{
    size_t name_len = strlen(name);
    const char *p = list;

    if (strcmp(list, "*") == 0)
        return true;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        const char *stop = end ? end : p + strlen(p);

        while (p < stop && (*p == ' ' || *p == '\t'))
            p++;
        while (stop > p && (stop[-1] == ' ' || stop[-1] == '\t'))
            stop--;
        if ((size_t)(stop - p) == name_len && name_len > 0 && strncasecmp(p, name, name_len) == 0)
            return true;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return false;
}

int action_validate_platform(const Platform *p, const struct casbox_config *cfg, bool *network,
                             struct reapi_status *st)
{
    *network = false;
    if (p == NULL)
        return 0;
    for (size_t i = 0; i < p->n_properties; i++) {
        const char *name = p->properties[i]->name ? p->properties[i]->name : "";
        const char *value = p->properties[i]->value ? p->properties[i]->value : "";

        if (strcasecmp(name, "OSFamily") == 0) {
            if (strcasecmp(value, "Linux") != 0) {
                reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                                 "platform property OSFamily=%.200s: this server runs Linux "
                                 "actions only",
                                 value);
                return -EINVAL;
            }
        } else if (strcasecmp(name, "network") == 0) {
            if (strcasecmp(value, "off") == 0) {
                *network = false;
            } else if (strcasecmp(value, "on") == 0) {
                if (!cfg->exec_allow_network) {
                    reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                                     "platform property network=on: this server does not give "
                                     "actions network access (execution allow_network = false)");
                    return -EINVAL;
                }
                *network = true;
            } else {
                reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                                 "platform property network=%.200s: the value must be on or off",
                                 value);
                return -EINVAL;
            }
        } else if (strcasecmp(name, "container-image") == 0) {
            char known[512];

            if (config_environment_find(cfg, value) != NULL ||
                name_in_list(cfg->exec_accepted_properties, name))
                continue;
            config_environment_list(cfg, known, sizeof(known));
            reapi_status_set(st, GRPC_STATUS_FAILED_PRECONDITION,
                             "platform property container-image=%.300s: no execution environment "
                             "of this server has that image; known images: %s "
                             "([environment.NAME] image in the config)",
                             value, known);
            return -EINVAL;
        } else if (!name_in_list(cfg->exec_accepted_properties, name)) {
            const char *list = cfg->exec_accepted_properties;

            reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                             "platform property '%.200s' (= '%.200s') is not supported by this "
                             "server: it knows OSFamily, network and container-image%s%.300s%s",
                             name, value, list[0] ? ", and accepts " : "", list,
                             list[0] ? " (execution accepted_properties)"
                                     : " (add it to execution accepted_properties to accept it)");
            return -EINVAL;
        }
    }
    return 0;
}

int action_validate_timeout(const Google__Protobuf__Duration *d, uint64_t *timeout_ms,
                            struct reapi_status *st)
{
    *timeout_ms = 0;
    if (d == NULL)
        return 0;
    if (d->seconds < 0 || d->nanos < 0 || d->nanos > 999999999) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "Action.timeout (%" PRId64 " s, %" PRId32 " ns) is negative or malformed",
                         d->seconds, d->nanos);
        return -EINVAL;
    }
    if (d->seconds > DURATION_MAX_SECONDS) {
        reapi_status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "Action.timeout (%" PRId64 " s) is beyond the range of a Duration",
                         d->seconds);
        return -EINVAL;
    }
    *timeout_ms = (uint64_t)d->seconds * 1000u + ((uint64_t)d->nanos + 999999u) / 1000000u;
    return 0;
}
