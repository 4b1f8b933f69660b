/*
 * main.c - casboxd: command line, start-up order and shutdown.
 *
 * Order matters: signals are blocked and the sandbox spawner is forked before
 * grpc_init, because grpc starts threads that would inherit an unblocked mask,
 * and a multi-threaded process cannot create user namespaces. Then the store
 * opens, the server starts, and the main thread waits in sigwait for SIGTERM
 * or SIGINT, on which calls are cancelled and drained before exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grpc/grpc.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "asset/asset.h"
#include "casboxd.h"
#include "fuse/casfs.h"
#include "util/util.h"
#include "rootless.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: casboxd [--listen HOST:PORT] [--state-dir DIR] [--config FILE] [options]\n"
            "\n"
            "A remote-execution server for Bazel (REAPI v2): CAS, ByteStream, ActionCache,\n"
            "Capabilities and Execution on grpc://HOST:PORT; with [asset] enabled, the\n"
            "Remote Asset API (Fetch, Push) too.\n"
            "\n"
            "  -l, --listen HOST:PORT   address to serve on (default 127.0.0.1:8980)\n"
            "  -s, --state-dir DIR      CAS, action cache and scratch space\n"
            "  -c, --config FILE        INI configuration file (see docs/configuration.md)\n"
            "  -o, --set SECTION.KEY=V  set one configuration key (repeatable)\n"
            "      --log-level LEVEL    error, warn, info or debug\n"
            "      --no-execution       serve only the cache services\n"
            "      --role ROLE          all (default: one host does everything), scheduler\n"
            "                           (queues actions for workers) or worker (docs/fleet.md)\n"
            "      --scheduler URL      role worker: grpc://HOST:PORT of the scheduler\n"
            "      --cas URL            role worker: the CAS to read inputs from and write\n"
            "                           outputs to (default: the scheduler)\n"
            "      --print-config       print the effective configuration and exit\n"
            "  -h, --help               this text\n"
            "  -V, --version            the version\n"
            "\n"
            "Flags override the configuration file.\n");
}

/* "section.key=value" -> config_set. */
static int main_apply_set(struct casbox_config *cfg, const char *arg, char *err, size_t err_len)
{
    char buf[1200];
    char *eq, *dot, *section = NULL, *key;

    if (snprintf(buf, sizeof(buf), "%s", arg) >= (int)sizeof(buf)) {
        snprintf(err, err_len, "--set %s: too long", arg);
        return -EINVAL;
    }
    eq = strchr(buf, '=');
    if (eq == NULL) {
        snprintf(err, err_len, "--set %s: expected SECTION.KEY=VALUE", arg);
        return -EINVAL;
    }
    *eq = '\0';
    key = buf;
    dot = strchr(buf, '.');
    if (dot != NULL) {
        *dot = '\0';
        section = buf;
        key = dot + 1;
    }
    return config_set(cfg, section, key, eq + 1, err, err_len);
}

static int main_parse_args(int argc, char **argv, struct casbox_config *cfg, bool *print_config)
{
    enum { OPT_LOG_LEVEL = 256, OPT_NO_EXEC, OPT_PRINT_CONFIG, OPT_ROLE, OPT_SCHEDULER, OPT_CAS };
    static const struct option options[] = {
        {"listen", required_argument, NULL, 'l'},
        {"state-dir", required_argument, NULL, 's'},
        {"config", required_argument, NULL, 'c'},
        {"set", required_argument, NULL, 'o'},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"no-execution", no_argument, NULL, OPT_NO_EXEC},
        {"print-config", no_argument, NULL, OPT_PRINT_CONFIG},
        {"role", required_argument, NULL, OPT_ROLE},
        {"scheduler", required_argument, NULL, OPT_SCHEDULER},
        {"cas", required_argument, NULL, OPT_CAS},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_file = NULL;
    char err[1024];
    int opt;

    /* First pass: find --config so that flags override the file. */
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "l:s:c:o:hV", options, NULL)) != -1) {
        if (opt == 'c')
            config_file = optarg;
    }
    if (config_file != NULL && config_load_file(cfg, config_file, err, sizeof(err)) != 0) {
        fprintf(stderr, "casboxd: %s\n", err);
        return 2;
    }
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "l:s:c:o:hV", options, NULL)) != -1) {
        int rc = 0;

        switch (opt) {
        case 'l':
            rc = config_set(cfg, "server", "listen", optarg, err, sizeof(err));
            break;
        case 's':
            rc = config_set(cfg, "server", "state_dir", optarg, err, sizeof(err));
            break;
        case 'c':
            break;
        case 'o':
            rc = main_apply_set(cfg, optarg, err, sizeof(err));
            break;
        case OPT_LOG_LEVEL:
            rc = config_set(cfg, "server", "log_level", optarg, err, sizeof(err));
            break;
        case OPT_NO_EXEC:
            cfg->exec_enabled = false;
            break;
        case OPT_PRINT_CONFIG:
            *print_config = true;
            break;
        case OPT_ROLE:
            rc = config_set(cfg, "server", "role", optarg, err, sizeof(err));
            break;
        case OPT_SCHEDULER:
            rc = config_set(cfg, "worker", "scheduler", optarg, err, sizeof(err));
            break;
        case OPT_CAS:
            rc = config_set(cfg, "cas", "remote", optarg, err, sizeof(err));
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'V':
            printf("casboxd %s\n", CASBOX_VERSION);
            exit(0);
        default:
            fprintf(stderr, "casboxd: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return 2;
        }
        if (rc != 0) {
            fprintf(stderr, "casboxd: %s\n", err);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "casboxd: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (config_finish(cfg, err, sizeof(err)) != 0 && !*print_config) {
        fprintf(stderr, "casboxd: %s\n", err);
        return 2;
    }
    return 0;
}

static int main_make_dir(const char *path)
{
    if (mkdir(path, 0750) != 0 && errno != EEXIST) {
        fprintf(stderr, "casboxd: cannot create %s: %s\n", path, strerror(errno));
        return -errno;
    }
    return 0;
}

static void main_fuse_log(void *arg, const char *line)
{
    (void)arg;
    LOG_W("%s", line);
}

/* An unprivileged casboxd that may use FUSE enters a user and mount
 * namespace of its own, where it may mount it without fusermount3
 * (rootless.c). Before the spawner and any thread. With staging = auto,
 * only when it can open /dev/fuse: otherwise it stages by hardlinks and
 * needs no namespace. */
static int main_enter_rootless(const struct casbox_config *cfg)
{
    int rc, unshare_errno, fd;

    if (geteuid() == 0 || !cfg->exec_enabled || strcmp(cfg->exec_staging, "hardlink") == 0 ||
        strcmp(cfg->role, "scheduler") == 0)
        return 0;
    if (strcmp(cfg->exec_staging, "auto") == 0) {
        fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
        if (fd < 0)
            return 0; /* main_staging_start logs the fallback */
        close(fd);
    }
    rc = rootless_enter_namespace(&unshare_errno);
    if (rc != 0) {
        fprintf(stderr, "casboxd: cannot set up its own user namespace: %s\n", strerror(-rc));
        return rc;
    }
    if (unshare_errno != 0)
        LOG_I("rootless: no user namespace of its own (%s); FUSE needs fusermount3",
              strerror(unshare_errno));
    else
        LOG_I("rootless: running in a user and mount namespace of its own (uid %u) for FUSE",
              (unsigned)geteuid());
    return 0;
}

/* [execution] staging: mounts the FUSE input-tree filesystem at
 * <state>/cas/fuse for fuse and auto (auto falls back to hardlinks). */
static int main_staging_start(struct casboxd *d)
{
    struct casfs_options opt = {.threads = (unsigned)d->cfg.exec_fuse_threads,
                                .log = main_fuse_log};
    char mnt[PATH_MAX];
    int rc;

    if (strcmp(d->cfg.exec_staging, "hardlink") == 0) {
        LOG_I("input staging: hardlink (execution.staging = hardlink)");
        return 0;
    }
    snprintf(mnt, sizeof(mnt), "%s/cas/fuse", d->cfg.state_dir);
    opt.mountpoint = mnt;
    if (casfs_passthrough_parse(d->cfg.exec_fuse_passthrough, &opt.passthrough) != 0 ||
        casfs_uring_parse(d->cfg.exec_fuse_uring, &opt.uring) != 0)
        return -EINVAL; /* config_check refuses it first */
    rc = casfs_mount(d->store, &opt, &d->fs);
    if (rc == 0) {
        LOG_I("input staging: fuse, mounted on %s with %u threads (execution.staging = %s)", mnt,
              opt.threads, d->cfg.exec_staging);
        return 0;
    }
    if (strcmp(d->cfg.exec_staging, "fuse") == 0) {
        fprintf(stderr,
                "casboxd: cannot mount the FUSE input filesystem on %s: %s (see docs/fuse.md)\n",
                mnt, strerror(-rc));
        return rc;
    }
    LOG_I("input staging: hardlink (execution.staging = auto; FUSE unavailable: %s)",
          strerror(-rc));
    return 0;
}

/* SIGHUP: the configuration file and flags again, as at start-up; the keys
 * that are safe to change apply at once (reload.c). A broken file changes
 * nothing. */
static void main_reload(struct casboxd *d, int argc, char **argv)
{
    struct casbox_config fresh;
    bool print_config = false;

    config_init_defaults(&fresh);
    if (main_parse_args(argc, argv, &fresh, &print_config) != 0) {
        LOG_W("reload: the configuration has errors (above); nothing changed");
        return;
    }
    casboxd_auth_reload(d, &fresh);
    if (casboxd_config_reload(d, &fresh) != 0)
        LOG_W("reload failed: out of memory");
}

/* Raises the soft open-file limit to the hard one: every upload, blob read
 * and FUSE open holds an fd, and 1024 is too few for a busy server. */
static void main_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            LOG_W("cannot raise the open-file limit: %s", strerror(errno));
    }
}

/* ByteStream moves data in 1 MiB buffers. glibc serves allocations that
 * large with mmap and returns them with munmap, so every chunk faulted in
 * 257 fresh pages and every free flushed TLBs: downloads ran 5-10x slower
 * (docs/benchmarks.md). Keep them on the heap and let it hold some memory. */
static void main_tune_malloc(void)
{
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

/* Concatenates the service tables into one method list: execution and the
 * Remote Asset API only when on (else their calls answer UNIMPLEMENTED);
 * with_queue: the worker protocol, unless [scheduler] worker_listen gives it
 * an address of its own. */
static struct rpc_method *main_methods(bool with_exec, bool with_asset, bool with_fleet,
                                       bool with_queue, size_t *n)
{
    const struct rpc_method *tables[] = {
        capabilities_methods, cas_methods,   bytestream_methods,      action_cache_methods,
        execution_methods,    asset_methods, operation_queue_methods, fleet_admin_methods};
    const size_t counts[] = {capabilities_n_methods,    cas_n_methods,        bytestream_n_methods,
                             action_cache_n_methods,    execution_n_methods,  asset_n_methods,
                             operation_queue_n_methods, fleet_admin_n_methods};
    const bool on[] = {true, true, true, true, with_exec, with_asset, with_queue, with_fleet};
    size_t total = 0;
    struct rpc_method *m;

    for (size_t i = 0; i < 8; i++)
        total += on[i] ? counts[i] : 0;
    m = calloc(total, sizeof(*m));
    if (m == NULL)
        return NULL;
    *n = 0;
    for (size_t i = 0; i < 8; i++) {
        if (!on[i])
            continue;
        memcpy(&m[*n], tables[i], counts[i] * sizeof(*m));
        *n += counts[i];
    }
    return m;
}

int main(int argc, char **argv)
{
    struct casboxd d;
    struct rpc_server_options ropt;
    struct cas_store_options sopt;
    struct rpc_method *methods = NULL;
    size_t n_methods = 0;
    bool print_config = false;
    char path[PATH_MAX];
    sigset_t sigs;
    enum log_level level;
    int rc, sig = 0;
    int status = 1;

    memset(&d, 0, sizeof(d));
    pthread_mutex_init(&d.cfg_lock, NULL);
    config_init_defaults(&d.cfg);
    rc = main_parse_args(argc, argv, &d.cfg, &print_config);
    if (rc != 0)
        return rc;
    if (print_config) {
        config_print(&d.cfg, stdout);
        return 0;
    }
    exec_copies_init(&d.copies, d.cfg.exec_copy_cache_bytes);
    if (log_parse_level(d.cfg.log_level, &level) == 0)
        log_set_level(level);

    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (main_make_dir(d.cfg.state_dir) != 0)
        return 1;
    /* Credentials and TLS files: refuse to start on any problem with them. */
    if (casboxd_auth_start(&d) != 0)
        return 1;
    /* libcurl's global state, before any thread (asset/http.c). */
    if (d.cfg.asset_enabled && asset_http_global_init() != 0) {
        fprintf(stderr, "casboxd: cannot initialise libcurl for [asset]\n");
        return 1;
    }
    main_raise_nofile();
    main_tune_malloc();
    if (main_enter_rootless(&d.cfg) != 0)
        return 1;
    if (d.cfg.exec_enabled && strcmp(d.cfg.role, "scheduler") == 0) {
        ; /* the scheduler runs no action: no spawner, no staging */
    } else if (d.cfg.exec_enabled) {
        /* Before grpc_init: the spawner must be forked while single-threaded. */
        rc = sandbox_spawner_start(&d.spawner);
        if (rc != 0) {
            fprintf(stderr, "casboxd: cannot start the sandbox spawner: %s\n", strerror(-rc));
            return 1;
        }
    }

    snprintf(path, sizeof(path), "%s/cas", d.cfg.state_dir);
    memset(&sopt, 0, sizeof(sopt));
    sopt.max_bytes = d.cfg.cas_max_bytes;
    sopt.disk_headroom_bytes = d.cfg.cas_disk_headroom;
    sopt.disk_headroom_percent = d.cfg.cas_disk_headroom_percent;
    sopt.max_blob_percent = d.cfg.cas_max_blob_percent;
    sopt.scan_in_background = true; /* serve while a large store is indexed */
    sopt.lock_wait_ms = d.cfg.cas_lock_wait * 1000;
    (void)cas_fsync_mode_parse(d.cfg.cas_fsync, &sopt.fsync); /* config_finish checked it */
    rc = cas_store_open(path, &sopt, &d.store);
    if (rc != 0) {
        fprintf(stderr, "casboxd: cannot open the CAS at %s: %s\n", path, strerror(-rc));
        goto out;
    }
    rc = shared_storage_start(&d);
    if (rc != 0)
        goto out;
    rc = bytestream_uploads_new(d.cfg.max_uploads, &d.uploads);
    if (rc != 0)
        goto out;
    rc = observe_start(&d);
    if (rc != 0) {
        fprintf(stderr, "casboxd: cannot set up metrics: %s\n", strerror(-rc));
        goto out;
    }
    if (d.cfg.asset_enabled) {
        rc = asset_service_start(&d, &d.asset);
        if (rc != 0) {
            fprintf(stderr, "casboxd: cannot start the remote asset API: %s\n", strerror(-rc));
            goto out;
        }
    }
    if (d.cfg.exec_enabled && strcmp(d.cfg.role, "scheduler") != 0 && main_staging_start(&d) != 0)
        goto out;
    if (strcmp(d.cfg.role, "worker") == 0) {
        /* no server: one Synchronize loop per slot until SIGTERM (worker.c) */
        grpc_init();
        /* [http] listen set: /metrics and the pages of this worker's runs */
        if (observe_serve(&d) != 0)
            LOG_E("http: the web pages and /metrics are off ([http] listen = %s)",
                  d.cfg.http_listen);
        rc = fleet_worker_run(&d, &sigs);
        observe_stop_serving(&d);
        grpc_shutdown();
        status = rc == 0 ? 0 : 1;
        goto out;
    }
    if (d.cfg.exec_enabled) {
        rc = exec_service_start(&d, &d.exec);
        if (rc != 0) {
            fprintf(stderr, "casboxd: cannot start execution: %s\n", strerror(-rc));
            goto out;
        }
    }

    grpc_init();
    bool fleet = d.exec != NULL && strcmp(d.cfg.role, "scheduler") == 0;
    methods = main_methods(d.exec != NULL, d.asset != NULL, fleet,
                           fleet && d.cfg.sched_worker_listen[0] == '\0', &n_methods);
    if (methods == NULL)
        goto out_grpc;
    memset(&ropt, 0, sizeof(ropt));
    ropt.listen = d.cfg.listen;
    ropt.max_message_bytes = d.cfg.max_message_bytes;
    ropt.threads[RPC_POOL_SHORT] = d.cfg.rpc_threads;
    ropt.threads[RPC_POOL_STREAM] = d.cfg.stream_threads;
    ropt.threads[RPC_POOL_TRANSFER] = d.cfg.transfer_threads;
    ropt.queue_length[RPC_POOL_SHORT] = d.cfg.max_inflight_calls;
    ropt.queue_length[RPC_POOL_STREAM] = d.cfg.max_inflight_calls;
    ropt.queue_length[RPC_POOL_TRANSFER] = d.cfg.max_inflight_calls;
    ropt.tls.certificate_chain = d.tls.certificate_chain;
    ropt.tls.private_key = d.tls.private_key;
    ropt.tls.client_ca = d.tls.client_ca;
    ropt.auth = &d.auth;
    ropt.metrics = observe_metrics(&d);
    ropt.stall_timeout_ms = d.cfg.stream_stall_timeout * 1000;
    ropt.event_threads = d.cfg.event_threads;
    ropt.max_async_calls = d.cfg.max_async_calls;
    rc = rpc_server_start(&ropt, methods, n_methods, &d, &d.rpc);
    if (rc != 0) {
        fprintf(stderr, "casboxd: cannot serve on %s: %s\n", d.cfg.listen, strerror(-rc));
        goto out_grpc;
    }
    /* The worker protocol alone, with the same TLS, credentials and bounds */
    if (fleet && d.cfg.sched_worker_listen[0] != '\0') {
        ropt.listen = d.cfg.sched_worker_listen;
        rc = rpc_server_start(&ropt, operation_queue_methods, operation_queue_n_methods, &d,
                              &d.rpc_workers);
        if (rc != 0) {
            fprintf(stderr, "casboxd: cannot serve workers on %s ([scheduler] worker_listen): %s\n",
                    d.cfg.sched_worker_listen, strerror(-rc));
            rpc_server_stop(d.rpc);
            d.rpc = NULL;
            goto out_grpc;
        }
        fprintf(stderr, "casboxd: serving workers on %s\n", d.cfg.sched_worker_listen);
    }
    LOG_I("state in %s, CAS limit %" PRIu64 " bytes, execution %s (%" PRIu64
          " slots), remote asset API %s",
          d.cfg.state_dir, d.cfg.cas_max_bytes, d.exec ? "on" : "off", d.cfg.exec_slots,
          d.asset ? "on" : "off");
    for (size_t i = 0; i < d.cfg.n_environments; i++)
        LOG_I("execution environment %s: container-image '%s' runs on %s",
              d.cfg.environments[i].name, d.cfg.environments[i].image, d.cfg.environments[i].root);
    /* The pages are for people: casboxd serves builds without them. */
    if (observe_serve(&d) != 0)
        LOG_E("http: the web pages and /metrics are off ([http] listen = %s)", d.cfg.http_listen);
    fprintf(stderr, "casboxd: listening on %s\n", d.cfg.listen);

    for (;;) {
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            main_reload(&d, argc, argv);
            continue;
        }
        break;
    }
    LOG_I("signal %d: shutting down", sig);
    status = 0;
    observe_stop_serving(&d);
    if (d.exec != NULL)
        exec_service_begin_stop(d.exec);
    asset_service_begin_stop(d.asset);
    rpc_server_stop(d.rpc_workers);
    rpc_server_stop(d.rpc);
out_grpc:
    exec_service_stop(d.exec);
    d.exec = NULL;
    grpc_shutdown();
out:
    free(methods);
    exec_service_stop(d.exec);
    bytestream_uploads_free(d.uploads);
    asset_service_stop(d.asset);
    observe_stop(&d);
    if (d.cfg.asset_enabled)
        asset_http_global_cleanup();
    casfs_unmount(d.fs); /* after the last action: nothing reads it any more */
    exec_tree_cache_free(d.env.trees);
    shared_storage_stop(&d);
    cas_store_close(d.store);
    if (d.spawner != NULL)
        sandbox_spawner_stop(d.spawner);
    exec_copies_destroy(&d.copies);
    casboxd_auth_stop(&d);
    if (status == 0)
        LOG_I("stopped");
    return status;
}
