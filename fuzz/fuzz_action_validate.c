/*
 * fuzz_action_validate.c - feeds blobs a client uploads to the CAS to the
 * checks action_load makes before anything is staged or run (exec/exec.h):
 * each input is unpacked with protobuf-c as a Directory (names, order,
 * digests, symlink targets), a Command (arguments, environment, output
 * paths, working directory, platform) and an Action (timeout, platform,
 * digests), as casboxd unpacks what the Action names. A check that fails
 * must say why in the status, one that passes must leave it OK.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "exec/exec.h"

static struct casbox_config cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    config_init_defaults(&cfg);
    cfg.exec_allow_network = true;
    strcpy(cfg.exec_accepted_properties, "container-image, Pool,dockerNetwork");
    return 0;
}

/* rc and the status agree: an error has a code and a message. */
static void check(int rc, struct reapi_status *st)
{
    assert((rc == 0) == reapi_status_ok(st));
    assert(rc == 0 || st->message[0] != '\0');
    reapi_status_free(st);
    reapi_status_init(st);
}

static void validate_directory(const uint8_t *data, size_t size, struct reapi_status *st)
{
    Build__Bazel__Remote__Execution__V2__Directory *dir =
        build__bazel__remote__execution__v2__directory__unpack(NULL, size, data);
    int rc;

    if (dir == NULL)
        return;
    rc = action_validate_directory(dir, "pkg/sub", st);
    check(rc, st);
    for (size_t i = 0; rc == 0 && i < dir->n_symlinks; i++) {
        /* A symlink two levels below the input root. */
        rc =
            action_validate_symlink_target(dir->symlinks[i]->target, 2, dir->symlinks[i]->name, st);
        check(rc, st);
    }
    build__bazel__remote__execution__v2__directory__free_unpacked(dir, NULL);
}

static void validate_command(const uint8_t *data, size_t size, struct reapi_status *st)
{
    Build__Bazel__Remote__Execution__V2__Command *cmd =
        build__bazel__remote__execution__v2__command__unpack(NULL, size, data);
    bool network;

    if (cmd == NULL)
        return;
    check(action_validate_command(cmd, st), st);
    check(action_validate_platform(cmd->platform, &cfg, &network, st), st);
    build__bazel__remote__execution__v2__command__free_unpacked(cmd, NULL);
}

static void validate_action(const uint8_t *data, size_t size, struct reapi_status *st)
{
    Build__Bazel__Remote__Execution__V2__Action *act =
        build__bazel__remote__execution__v2__action__unpack(NULL, size, data);
    struct cas_digest d;
    uint64_t timeout_ms;
    bool network;

    if (act == NULL)
        return;
    check(reapi_digest_from_proto(act->command_digest, &d, st, "command_digest"), st);
    check(reapi_digest_from_proto(act->input_root_digest, &d, st, "input_root_digest"), st);
    check(action_validate_timeout(act->timeout, &timeout_ms, st), st);
    check(action_validate_platform(act->platform, &cfg, &network, st), st);
    build__bazel__remote__execution__v2__action__free_unpacked(act, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reapi_status st;

    reapi_status_init(&st);
    validate_directory(data, size, &st);
    validate_command(data, size, &st);
    validate_action(data, size, &st);
    reapi_status_free(&st);
    return 0;
}
