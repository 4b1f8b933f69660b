/*
 * cli_fleet.c - `casbox fleet status|drain|undrain --scheduler URL`: the
 * fleet's admin view over the scheduler's casbox.fleet.v1.FleetAdmin service
 * (daemon/svc_fleet_admin.c). Part of casbox-replay, which links the gRPC
 * client; casbox hands `fleet` over to it as it does `run --action`.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_replay.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "rpc/rpc.h"

#define FLEET_TIMEOUT_MS 10000

static void cli_fleet_usage(FILE *out)
{
    fputs("Usage: casbox fleet status --scheduler grpc://HOST:PORT\n"
          "       casbox fleet drain PATTERN --scheduler grpc://HOST:PORT\n"
          "       casbox fleet undrain PATTERN --scheduler grpc://HOST:PORT\n"
          "\n"
          "status prints the scheduler's queues, its worker slots (id, state, current\n"
          "action, since) and drains. drain stops giving work to the slots whose id\n"
          "matches the fnmatch PATTERN (e.g. 'hostname=build3,*'); their running\n"
          "actions finish. undrain removes a drain.\n",
          out);
}

int cli_fleet_main(int argc, char **argv)
{
    static const struct option options[] = {
        {"scheduler", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct rpc_client_options copt = {.timeout_ms = FLEET_TIMEOUT_MS};
    Google__Protobuf__StringValue req = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
    Google__Protobuf__StringValue *resp = NULL;
    struct rpc_client *c = NULL;
    struct rpc_client_status st;
    enum rpc_client_method method;
    const char *scheduler = NULL, *verb, *pattern = "";
    char err[512];
    int opt, status = CLI_EXIT_FAILURE;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "s:h", options, NULL)) != -1) {
        if (opt == 's') {
            scheduler = optarg;
        } else if (opt == 'h') {
            cli_fleet_usage(stdout);
            return 0;
        } else {
            cli_fleet_usage(stderr);
            return CLI_EXIT_USAGE;
        }
    }
    if (optind >= argc || scheduler == NULL) {
        cli_error("fleet: give a command and --scheduler grpc://HOST:PORT (casbox fleet --help)");
        return CLI_EXIT_USAGE;
    }
    verb = argv[optind];
    if (strcmp(verb, "status") == 0 && optind + 1 == argc) {
        method = RPC_CLIENT_FLEET_STATUS;
    } else if ((strcmp(verb, "drain") == 0 || strcmp(verb, "undrain") == 0) && optind + 2 == argc) {
        method = verb[0] == 'd' ? RPC_CLIENT_FLEET_DRAIN : RPC_CLIENT_FLEET_UNDRAIN;
        pattern = argv[optind + 1];
    } else {
        cli_error("fleet: expected status, drain PATTERN or undrain PATTERN (casbox fleet --help)");
        return CLI_EXIT_USAGE;
    }
    rpc_client_options_from_env(&copt); /* CASBOX_TLS_CA, CASBOX_TOKEN_FILE, ... */
    if (rpc_client_open(scheduler, &copt, &c, err, sizeof(err)) != 0) {
        cli_error("fleet: %s", err);
        return CLI_EXIT_FAILURE;
    }
    req.value = (char *)pattern;
    if (rpc_client_unary(c, method, &req.base, &google__protobuf__string_value__descriptor,
                         (ProtobufCMessage **)&resp, &st) != 0) {
        cli_error("fleet %s: %s: %s: %s", verb, scheduler, rpc_status_code_name(st.code),
                  st.message);
        goto out;
    }
    if (method == RPC_CLIENT_FLEET_STATUS)
        fputs(resp->value ? resp->value : "", stdout);
    else
        printf("%s %s\n", method == RPC_CLIENT_FLEET_DRAIN ? "draining" : "undrained", pattern);
    status = 0;
out:
    if (resp != NULL)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    rpc_client_close(c);
    return status;
}
