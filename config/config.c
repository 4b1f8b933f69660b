/*
 * config.c - defaults, INI parsing (libinih) and bounds for casboxd's keys.
 *
 * Every key is a row of one table: its section, name, type, where it lives in
 * struct casbox_config, its bounds and a one-line description. Parsing, bounds
 * checking and config_print all walk that table, so a key cannot be parsed
 * without being bounded and documented.
 *
 * Execution environments are the exception: one [environment.NAME] section
 * each (at most CONFIG_MAX_ENVIRONMENTS), with the keys image and root,
 * parsed by config_set_environment and printed after the table.
 */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

enum config_type { CONFIG_STRING, CONFIG_SIZE, CONFIG_BOOL };

struct config_key {
    const char *section;
    const char *name;
    enum config_type type;
    size_t offset;
    size_t string_len; /* CONFIG_STRING: capacity */
    uint64_t min;
    uint64_t max;
    const char *help;
};

#define KIB (1024ULL)
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)
#define TIB (1024ULL * GIB)

#define STR(sec, field, help)                                                                      \
    {                                                                                              \
        sec, #field, CONFIG_STRING, offsetof(struct casbox_config, field),                         \
            sizeof(((struct casbox_config *)0)->field), 0, 0, help                                 \
    }
#define STR_KEY(sec, key, field, help)                                                             \
    {                                                                                              \
        sec, key, CONFIG_STRING, offsetof(struct casbox_config, field),                            \
            sizeof(((struct casbox_config *)0)->field), 0, 0, help                                 \
    }
#define SIZE(sec, key, field, lo, hi, help)                                                        \
    {                                                                                              \
        sec, key, CONFIG_SIZE, offsetof(struct casbox_config, field), 0, lo, hi, help              \
    }
#define BOOL(sec, key, field, help)                                                                \
    {                                                                                              \
        sec, key, CONFIG_BOOL, offsetof(struct casbox_config, field), 0, 0, 1, help                \
    }

static const struct config_key config_keys[] = {
    STR("server", listen, "address to serve gRPC on (HOST:PORT)"),
    STR("server", state_dir, "directory holding the CAS, the action cache and scratch space"),
    STR("server", worker_name,
        "name reported in ExecutedActionMetadata.worker (default: hostname)"),
    STR("server", log_level, "error, warn, info or debug"),
    STR("server", role, "all (one host), scheduler or worker (docs/fleet.md)"),
    SIZE("server", "rpc_threads", rpc_threads, 1, 256, "threads serving short calls"),
    SIZE("server", "stream_threads", stream_threads, 1, 4096,
         "threads for Execute's first part (cache lookup, loading the action); its stream then "
         "waits without a thread"),
    SIZE("server", "transfer_threads", transfer_threads, 1, 4096,
         "threads for the blocking steps of ByteStream Read and Write (a remote fetch or "
         "write-through) and for remote asset fetches"),
    SIZE("server", "event_threads", event_threads, 1, 64,
         "threads driving event-driven streams (ByteStream Read and Write), which hold no "
         "thread while they wait on the client"),
    SIZE("server", "max_async_calls", max_async_calls, 1, 1000000,
         "event-driven streams open at once; beyond it RESOURCE_EXHAUSTED"),
    SIZE("server", "max_inflight_calls", max_inflight_calls, 1, 1000000,
         "accepted calls waiting for a thread, per pool; beyond it RESOURCE_EXHAUSTED"),
    SIZE("server", "max_message_bytes", max_message_bytes, 1 * MIB, 1 * GIB,
         "largest gRPC message received or sent"),
    SIZE("server", "max_batch_bytes", max_batch_bytes, 64 * KIB, 1 * GIB,
         "max_batch_total_size_bytes: largest Batch* request or response"),
    SIZE("server", "max_batch_blobs", max_batch_blobs, 1, 10000000,
         "digests in one FindMissingBlobs/BatchUpdateBlobs/BatchReadBlobs request"),
    SIZE("server", "read_chunk_bytes", read_chunk_bytes, 4 * KIB, 64 * MIB,
         "ByteStream.Read chunk size"),
    SIZE("server", "stream_stall_timeout", stream_stall_timeout, 0, 86400,
         "seconds a call may wait on a client that neither reads nor writes before it is "
         "cancelled with RESOURCE_EXHAUSTED, freeing its thread (0 = until its deadline)"),
    SIZE("server", "max_uploads", max_uploads, 1, 100000,
         "resumable ByteStream uploads kept at once (oldest idle one dropped)"),
    SIZE("cas", "max_bytes", cas_max_bytes, 0, 1024 * TIB,
         "CAS size above which least recently used blobs are evicted (0 = no limit)"),
    STR("cas", ingest_mode,
        "how action outputs are read and hashed: auto, uring or threads (docs/ingestion.md)"),
    SIZE("cas", "disk_headroom", cas_disk_headroom, 0, 1024 * TIB,
         "free space kept on the state dir's filesystem (the smaller of this and "
         "disk_headroom_percent); the CAS limit is at most the blobs plus the free space minus it"),
    SIZE("cas", "disk_headroom_percent", cas_disk_headroom_percent, 0, 90,
         "free space kept on the state dir's filesystem, in percent of its size"),
    SIZE("cas", "max_blob_percent", cas_max_blob_percent, 1, 100,
         "an action output over this percent of the CAS size (max_bytes, or the disk less "
         "headroom) fails the action instead of evicting the cache; 100: no bound"),
    STR_KEY(
        "cas", "fsync", cas_fsync,
        "what a commit syncs before a blob or action-cache entry is visible: none, data or full"),
    SIZE("cas", "lock_wait", cas_lock_wait, 0, 3600,
         "seconds start-up waits for the store lock of a casboxd that is still exiting"),
    SIZE("cas", "ingest_threads", ingest_threads, 0, 256,
         "hashing threads per output collection (0 = number of CPUs)"),
    SIZE("cas", "ingest_queue_depth", ingest_queue_depth, 1, 1024,
         "io_uring ingestion: output files read at once"),
    STR_KEY("cas", "remote", cas_remote,
            "grpc://HOST:PORT of a REAPI CAS that is the source of truth; the local store is "
            "then a cache in front of it (empty: none; docs/shared-storage.md)"),
    STR_KEY("cas", "remote_instance_name", cas_remote_instance_name,
            "instance name used with [cas] remote"),
    SIZE("cas", "remote_timeout", cas_remote_timeout, 1, 86400,
         "seconds each call to [cas] remote may take"),
    SIZE("cas", "remote_batch_digests", cas_remote_batch_digests, 1, 100000,
         "digests per FindMissingBlobs request sent to [cas] remote"),
    SIZE("cas", "remote_batch_bytes", cas_remote_batch_bytes, 4 * KIB, 64 * MIB,
         "bytes per BatchUpdateBlobs request sent to [cas] remote (larger blobs are streamed)"),
    STR_KEY("action_cache", "remote", ac_remote,
            "grpc://HOST:PORT of a REAPI ActionCache to use instead of the local one (empty: "
            "local)"),
    BOOL("execution", "enabled", exec_enabled, "serve the Execution service"),
    SIZE("execution", "slots", exec_slots, 0, 4096, "actions running at once (0 = number of CPUs)"),
    SIZE("execution", "queue_length", exec_queue_length, 1, 1000000,
         "actions waiting for a slot; beyond it Execute answers RESOURCE_EXHAUSTED"),
    SIZE("execution", "tree_cache_entries", exec_tree_cache_entries, 0, 10000000,
         "input subtrees remembered as checked complete (0 = walk every input tree)"),
    SIZE("execution", "default_timeout", exec_default_timeout, 1, 86400 * 7,
         "seconds an action may run when it asks for no timeout"),
    SIZE("execution", "max_timeout", exec_max_timeout, 1, 86400 * 7,
         "cap in seconds on the timeout an action asks for"),
    SIZE("execution", "memory_bytes", exec_memory_bytes, 0, 1024 * TIB,
         "memory limit per action (0 = none)"),
    SIZE("execution", "pids_max", exec_pids_max, 0, 4194304,
         "processes and threads per action (0 = none)"),
    SIZE("execution", "stdio_bytes", exec_stdio_bytes, 1 * KIB, 16 * GIB,
         "cap on each of an action's stdout and stderr"),
    SIZE("execution", "max_output_bytes", exec_max_output_bytes, 0, 1024 * TIB,
         "total bytes of outputs one action may produce (0 = none)"),
    SIZE("execution", "max_output_files", exec_max_output_files, 0, 100000000,
         "output files one action may produce (0 = none)"),
    SIZE("execution", "exec_copy_cache_bytes", exec_copy_cache_bytes, 0, 1024 * TIB,
         "hardlink staging: bytes of 0555 copies of executable inputs kept before the cache is "
         "emptied"),
    SIZE("execution", "operation_retention", operation_retention, 1, 86400 * 7,
         "seconds a finished operation stays available to WaitExecution"),
    BOOL("execution", "allow_network", exec_allow_network,
         "let actions with the platform property network=on use the host network"),
    STR("execution", exec_seccomp, "seccomp policy: default, strict, none or a policy file path"),
    STR("execution", exec_staging, "input staging: hardlink, fuse or auto"),
    SIZE("execution", "fuse_threads", exec_fuse_threads, 1, 256,
         "threads serving the FUSE input-tree mount (staging = fuse or auto)"),
    STR("execution", exec_fuse_passthrough,
        "FUSE passthrough for input reads: auto (when the kernel and CAP_SYS_ADMIN allow) or off"),
    STR("execution", exec_fuse_uring,
        "FUSE requests over io_uring: auto (when the fuse module offers it), on (required) or off"),
    STR("execution", exec_accepted_properties,
        "comma-separated platform property names accepted and ignored"),
    BOOL("asset", "enabled", asset_enabled,
         "serve the Remote Asset API (Fetch and Push; docs/bazel.md, "
         "--experimental_remote_downloader)"),
    SIZE("asset", "max_bytes", asset_max_bytes, 1, 1024 * GIB,
         "largest file FetchBlob downloads; a larger one is refused and nothing is stored"),
    SIZE("asset", "timeout", asset_timeout, 1, 86400,
         "seconds one FetchBlob may spend downloading (a shorter request timeout wins)"),
    SIZE("asset", "max_fetches", asset_max_fetches, 1, 1024,
         "downloads at once; as many FetchBlob calls again may wait for one"),
    SIZE("asset", "max_mappings", asset_max_mappings, 1, 10000000,
         "URI -> digest mappings remembered (least recently used dropped first)"),
    STR_KEY("asset", "allowed_url_prefixes", asset_allowed_url_prefixes,
            "space-separated http(s) URL prefixes FetchBlob may download from (empty: none)"),
    /* TLS, credentials and permissions (auth/auth.h, docs/security.md) */
    STR_KEY("tls", "certificate", tls_certificate,
            "PEM certificate chain; with private_key, turns TLS on (empty: plaintext)"),
    STR_KEY("tls", "private_key", tls_private_key,
            "PEM private key of certificate (not readable by other users)"),
    STR_KEY("tls", "client_ca", tls_client_ca,
            "PEM CA: clients must present a certificate it signed (mutual TLS; empty: none asked)"),
    STR_KEY("auth", "tokens_file", auth_tokens_file,
            "TOKEN PERMISSIONS [INSTANCE_PREFIX...] lines; calls then need 'authorization: Bearer' "
            "(SIGHUP re-reads it)"),
    STR_KEY("auth", "certificates_file", auth_certificates_file,
            "NAME PERMISSIONS [INSTANCE_PREFIX...] lines: a client certificate's CN or DNS SAN "
            "(needs client_ca; SIGHUP re-reads it)"),
    STR_KEY("auth", "anonymous", auth_anonymous,
            "what a call without credentials may do: none or a list of read, write, write-ac, "
            "execute, worker (empty: none when auth is on, everything when off)"),
    STR_KEY("client", "tls_ca", client_tls_ca,
            "casboxd as a client (worker, remote CAS) of grpcs://: the CA of the server (empty: "
            "the system's)"),
    STR_KEY("client", "tls_certificate", client_tls_certificate,
            "casboxd as a client: its certificate for mutual TLS (with tls_private_key)"),
    STR_KEY("client", "tls_private_key", client_tls_private_key,
            "casboxd as a client: the key of tls_certificate"),
    STR_KEY("client", "token_file", client_token_file,
            "casboxd as a client: a file holding the bearer token it sends (empty: none)"),
    /* the fleet (docs/fleet.md) */
    SIZE("scheduler", "worker_timeout", sched_worker_timeout, 2, 3600,
         "seconds without a Synchronize after which a worker slot is lost and its action requeued"),
    SIZE("scheduler", "max_retries", sched_max_retries, 0, 100,
         "times an action is requeued after losing its worker before it fails UNAVAILABLE"),
    SIZE("scheduler", "max_workers", sched_max_workers, 1, 1000000,
         "worker slots known at once; beyond it Synchronize answers RESOURCE_EXHAUSTED"),
    SIZE("scheduler", "max_queued", sched_max_queued, 1, 10000000,
         "actions waiting for a worker; beyond it Execute answers RESOURCE_EXHAUSTED"),
    SIZE("scheduler", "grace", sched_grace, 0, 3600,
         "seconds after start during which an action no worker fits is UNAVAILABLE, not refused"),
    SIZE("scheduler", "idle_poll", sched_idle_poll, 1, 600,
         "seconds an idle worker's Synchronize is held waiting for work (below worker_timeout)"),
    SIZE("scheduler", "orphan_timeout", sched_orphan_timeout, 1, 86400,
         "seconds an action stays queued or on its worker after its last client left; then it "
         "is cancelled"),
    STR_KEY("scheduler", "worker_listen", sched_worker_listen,
            "HOST:PORT serving the worker protocol alone (then not [server] listen, which keeps "
            "the client services); empty: workers use [server] listen"),
    STR_KEY("worker", "scheduler", worker_scheduler, "grpc://HOST:PORT of the scheduler"),
    STR_KEY("worker", "name", worker_name,
            "NAME in the worker_id {hostname: NAME, slot: N} (same as [server] worker_name)"),
    STR_KEY("worker", "platform", worker_platform,
            "platform properties announced, NAME=VALUE,NAME=VALUE"),
    STR_KEY("worker", "instance_name_prefix", worker_instance_prefix,
            "instance_name_prefix announced: the instance names this worker serves"),
    SIZE("worker", "size_class", worker_size_class, 0, 1000000,
         "size class announced: an action runs in the smallest class whose workers fit it "
         "(docs/fleet.md)"),
    STR_KEY("http", "listen", http_listen,
            "HOST:PORT of the web pages and /metrics (empty: off; docs/operations.md)"),
    SIZE("http", "history_size", http_history_size, 1, 100000,
         "finished actions (failed ones too) kept for the web pages"),
    SIZE("http", "max_connections", http_max_connections, 1, 10000,
         "HTTP connections at once; more are refused"),
    SIZE("http", "connection_timeout", http_connection_timeout, 1, 3600,
         "seconds an HTTP connection may stay idle before it is closed"),
    SIZE("http", "request_bytes", http_request_bytes, 4 * KIB, 1 * MIB,
         "memory per HTTP connection for the request line and headers (larger: 414/431)"),
    SIZE("http", "threads", http_threads, 1, 64, "threads serving HTTP"),
    SIZE("http", "inline_bytes", http_inline_bytes, 1 * KIB, 16 * MIB,
         "bytes of an action's stdout and stderr shown on its page (the rest is a download)"),
    SIZE("http", "max_message_bytes", http_max_message_bytes, 64 * KIB, 1 * GIB,
         "largest Action, Command or Directory a page decodes"),
};

/* Names in the file for the exec_* string fields (the table uses the field). */
static const char *config_key_name(const struct config_key *k)
{
    if (strncmp(k->name, "exec_", 5) == 0)
        return k->name + 5;
    return k->name;
}

void config_init_defaults(struct casbox_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->listen, sizeof(cfg->listen), "127.0.0.1:8980");
    snprintf(cfg->log_level, sizeof(cfg->log_level), "info");
    if (gethostname(cfg->worker_name, sizeof(cfg->worker_name) - 1) != 0)
        snprintf(cfg->worker_name, sizeof(cfg->worker_name), "casboxd");
    cfg->rpc_threads = 8;
    cfg->stream_threads = 256;
    cfg->transfer_threads = 64;
    cfg->event_threads = 2;
    cfg->max_async_calls = 10000;
    cfg->max_inflight_calls = 1024;
    cfg->stream_stall_timeout = 120;
    cfg->max_message_bytes = 16 * MIB;
    cfg->max_batch_bytes = 4 * MIB;
    cfg->max_batch_blobs = 100000;
    cfg->read_chunk_bytes = 1 * MIB;
    cfg->max_uploads = 1024;
    cfg->cas_max_bytes = 20 * GIB;
    snprintf(cfg->ingest_mode, sizeof(cfg->ingest_mode), "auto");
    cfg->ingest_threads = 0;
    cfg->cas_disk_headroom = 1 * GIB;
    cfg->cas_disk_headroom_percent = 5;
    cfg->cas_max_blob_percent = 50;
    snprintf(cfg->cas_fsync, sizeof(cfg->cas_fsync), "none");
    cfg->cas_lock_wait = 10;
    cfg->ingest_queue_depth = 64;
    cfg->cas_remote_timeout = 60;
    cfg->cas_remote_batch_digests = 4096;
    cfg->cas_remote_batch_bytes = 1 * MIB;
    cfg->exec_enabled = true;
    cfg->exec_slots = 0;
    cfg->exec_queue_length = 1024;
    cfg->exec_tree_cache_entries = 65536;
    cfg->exec_default_timeout = 900;
    cfg->exec_max_timeout = 3600;
    cfg->exec_memory_bytes = 8 * GIB;
    cfg->exec_pids_max = 4096;
    cfg->exec_stdio_bytes = 64 * MIB;
    cfg->exec_max_output_bytes = 16 * GIB;
    cfg->exec_max_output_files = 1000000;
    cfg->exec_copy_cache_bytes = 1 * GIB;
    cfg->operation_retention = 600;
    cfg->exec_allow_network = false;
    snprintf(cfg->exec_seccomp, sizeof(cfg->exec_seccomp), "default");
    snprintf(cfg->exec_staging, sizeof(cfg->exec_staging), "auto");
    cfg->exec_fuse_threads = 8;
    snprintf(cfg->exec_fuse_passthrough, sizeof(cfg->exec_fuse_passthrough), "auto");
    snprintf(cfg->exec_fuse_uring, sizeof(cfg->exec_fuse_uring), "auto");
    cfg->asset_enabled = false;
    cfg->asset_max_bytes = 1 * GIB;
    cfg->asset_timeout = 600;
    cfg->asset_max_fetches = 4;
    cfg->asset_max_mappings = 100000;
    snprintf(cfg->role, sizeof(cfg->role), "all");
    cfg->sched_worker_timeout = 60;
    cfg->sched_max_retries = 2;
    cfg->sched_max_workers = 4096;
    cfg->sched_max_queued = 100000;
    cfg->sched_grace = 30;
    cfg->sched_idle_poll = 20;
    cfg->sched_orphan_timeout = 60;
    snprintf(cfg->worker_platform, sizeof(cfg->worker_platform), "OSFamily=Linux,ISA=x86-64");
    snprintf(cfg->http_listen, sizeof(cfg->http_listen), "127.0.0.1:8981");
    cfg->http_history_size = 1000;
    cfg->http_max_connections = 64;
    cfg->http_connection_timeout = 30;
    cfg->http_request_bytes = 32 * KIB;
    cfg->http_threads = 2;
    cfg->http_inline_bytes = 64 * KIB;
    cfg->http_max_message_bytes = 4 * MIB;
}

int config_parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint64_t mul = 1;

    if (*s == '\0' || *s == '-')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        return -EINVAL;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        mul = KIB;
        end++;
        break;
    case 'm':
    case 'M':
        mul = MIB;
        end++;
        break;
    case 'g':
    case 'G':
        mul = GIB;
        end++;
        break;
    case 't':
    case 'T':
        mul = TIB;
        end++;
        break;
    default:
        return -EINVAL;
    }
    if (*end == 'i' || *end == 'B')
        end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
    if (*end != '\0')
        return -EINVAL;
    if (v > UINT64_MAX / mul)
        return -EINVAL;
    *out = v * mul;
    return 0;
}

static int config_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

#define CONFIG_ENV_PREFIX "environment."

/* One key of [environment.NAME]: finds NAME or adds it. */
static int config_set_environment(struct casbox_config *cfg, const char *name, const char *key,
                                  const char *value, char *err, size_t err_len)
{
    struct casbox_environment *env = NULL;
    char *field;
    size_t cap;

    if (name[0] == '\0' || strlen(name) >= sizeof(env->name)) {
        snprintf(err, err_len, "[" CONFIG_ENV_PREFIX "%s]: the name must be 1 to %zu bytes", name,
                 sizeof(env->name) - 1);
        return -EINVAL;
    }
    for (size_t i = 0; i < cfg->n_environments && env == NULL; i++)
        if (strcmp(cfg->environments[i].name, name) == 0)
            env = &cfg->environments[i];
    if (strcmp(key, "image") == 0) {
        cap = sizeof(env->image);
    } else if (strcmp(key, "root") == 0) {
        cap = sizeof(env->root);
    } else {
        snprintf(err, err_len, "[" CONFIG_ENV_PREFIX "%s] %s: unknown key (image and root are)",
                 name, key);
        return -EINVAL;
    }
    if (strlen(value) >= cap) {
        snprintf(err, err_len, "[" CONFIG_ENV_PREFIX "%s] %s: value longer than %zu bytes", name,
                 key, cap - 1);
        return -EINVAL;
    }
    if (env == NULL) {
        if (cfg->n_environments == CONFIG_MAX_ENVIRONMENTS) {
            snprintf(err, err_len, "[" CONFIG_ENV_PREFIX "%s]: more than %d execution environments",
                     name, CONFIG_MAX_ENVIRONMENTS);
            return -EINVAL;
        }
        env = &cfg->environments[cfg->n_environments++];
        memset(env, 0, sizeof(*env));
        memcpy(env->name, name, strlen(name) + 1);
    }
    field = strcmp(key, "image") == 0 ? env->image : env->root;
    memcpy(field, value, strlen(value) + 1);
    return 0;
}

const struct casbox_environment *config_environment_find(const struct casbox_config *cfg,
                                                         const char *image)
{
    for (size_t i = 0; i < cfg->n_environments; i++)
        if (strcmp(cfg->environments[i].image, image) == 0)
            return &cfg->environments[i];
    return NULL;
}

void config_environment_list(const struct casbox_config *cfg, char *out, size_t len)
{
    size_t used = 0;

    if (len == 0)
        return;
    snprintf(out, len, "%s", cfg->n_environments == 0 ? "none" : "");
    for (size_t i = 0; i < cfg->n_environments; i++) {
        int n =
            snprintf(out + used, len - used, "%s'%s'", i ? ", " : "", cfg->environments[i].image);

        if (n < 0 || (size_t)n >= len - used) {
            if (len >= 4)
                memcpy(out + len - 4, "...", 4);
            return;
        }
        used += (size_t)n;
    }
}

/* Every environment complete, its image unique, its root a directory. */
static int config_finish_environments(const struct casbox_config *cfg, char *err, size_t err_len)
{
    for (size_t i = 0; i < cfg->n_environments; i++) {
        const struct casbox_environment *env = &cfg->environments[i];
        struct stat st;

        if (env->image[0] == '\0' || env->root[0] == '\0') {
            snprintf(err, err_len, "[" CONFIG_ENV_PREFIX "%s]: needs both image and root",
                     env->name);
            return -EINVAL;
        }
        if (config_environment_find(cfg, env->image) != env) {
            snprintf(err, err_len,
                     "[" CONFIG_ENV_PREFIX "%s]: image '%s' is already the image of "
                     "[" CONFIG_ENV_PREFIX "%s]",
                     env->name, env->image, config_environment_find(cfg, env->image)->name);
            return -EINVAL;
        }
        if (env->root[0] != '/') {
            snprintf(err, err_len, "[" CONFIG_ENV_PREFIX "%s] root '%s' is not an absolute path",
                     env->name, env->root);
            return -EINVAL;
        }
        if (stat(env->root, &st) != 0) {
            snprintf(err, err_len, "[" CONFIG_ENV_PREFIX "%s] root %s: %s", env->name, env->root,
                     strerror(errno));
            return -EINVAL;
        }
        if (!S_ISDIR(st.st_mode)) {
            snprintf(err, err_len, "[" CONFIG_ENV_PREFIX "%s] root %s is not a directory",
                     env->name, env->root);
            return -EINVAL;
        }
    }
    return 0;
}

int config_set(struct casbox_config *cfg, const char *section, const char *key, const char *value,
               char *err, size_t err_len)
{
    if (section != NULL && strncmp(section, CONFIG_ENV_PREFIX, strlen(CONFIG_ENV_PREFIX)) == 0)
        return config_set_environment(cfg, section + strlen(CONFIG_ENV_PREFIX), key, value, err,
                                      err_len);
    for (size_t i = 0; i < sizeof(config_keys) / sizeof(config_keys[0]); i++) {
        const struct config_key *k = &config_keys[i];
        char *field = (char *)cfg + k->offset;
        uint64_t size;

        if (strcmp(config_key_name(k), key) != 0)
            continue;
        if (section != NULL && strcmp(section, k->section) != 0)
            continue;
        switch (k->type) {
        case CONFIG_STRING:
            if (strlen(value) >= k->string_len) {
                snprintf(err, err_len, "[%s] %s: value longer than %zu bytes", k->section, key,
                         k->string_len - 1);
                return -EINVAL;
            }
            /* config_print writes "key = value": a value starting with ';'
             * would read back as a comment, one with a line break as two
             * lines. Refused, so that --print-config is always the same
             * configuration. */
            if (value[0] == ';' || strpbrk(value, "\r\n") != NULL) {
                snprintf(err, err_len, "[%s] %s: a value cannot start with ';' or span lines",
                         k->section, key);
                return -EINVAL;
            }
            memcpy(field, value, strlen(value) + 1);
            /* a worker serves HTTP only when told to (config_finish) */
            cfg->http_listen_set |= field == cfg->http_listen;
            return 0;
        case CONFIG_SIZE:
            if (config_parse_size(value, &size) != 0) {
                snprintf(err, err_len, "[%s] %s: '%s' is not a size (e.g. 512, 64K, 16M, 2G)",
                         k->section, key, value);
                return -EINVAL;
            }
            if (size < k->min || size > k->max) {
                snprintf(err, err_len,
                         "[%s] %s: %" PRIu64 " is out of bounds [%" PRIu64 ", %" PRIu64 "]",
                         k->section, key, size, k->min, k->max);
                return -EINVAL;
            }
            memcpy(field, &size, sizeof(size));
            return 0;
        case CONFIG_BOOL:
            if (config_parse_bool(value, (bool *)field) != 0) {
                snprintf(err, err_len, "[%s] %s: '%s' is not a boolean (true/false)", k->section,
                         key, value);
                return -EINVAL;
            }
            return 0;
        }
    }
    snprintf(err, err_len, "unknown key '%s%s%s'", section ? section : "", section ? "." : "", key);
    return -EINVAL;
}

struct config_load_state {
    struct casbox_config *cfg;
    char *err;
    size_t err_len;
    int rc;
    FILE *f;
    char *line; /* getline's buffer */
    size_t line_cap;
    int lineno;
    size_t max_line; /* longest line inih takes whole, without its newline */
};

/* inih reads a line into a fixed buffer and parses the rest of a longer one
 * as the next line: a long value would be cut short silently. So lines are
 * read here whole, and a line inih cannot take is an error. */
static char *config_ini_reader(char *str, int num, void *user)
{
    struct config_load_state *st = user;
    ssize_t n;
    size_t len;

    if (st->rc != 0 || num < 3)
        return NULL;
    st->max_line = (size_t)num - 2;
    n = getline(&st->line, &st->line_cap, st->f);
    if (n < 0)
        return NULL;
    st->lineno++;
    len = (size_t)n;
    if (len > 0 && st->line[len - 1] == '\n')
        len--;
    if (len > st->max_line || memchr(st->line, '\0', len) != NULL) {
        snprintf(st->err, st->err_len, "line %d is %s (at most %zu bytes of text)", st->lineno,
                 len > st->max_line ? "too long" : "not text", st->max_line);
        st->rc = -EINVAL;
        return NULL;
    }
    memcpy(str, st->line, len);
    str[len] = '\n';
    str[len + 1] = '\0';
    return str;
}

static int config_ini_handler(void *user, const char *section, const char *name, const char *value)
{
    struct config_load_state *st = user;

    if (st->rc != 0)
        return 0;
    /* what --print-config writes for it must fit on one line too */
    if (strlen(name) + strlen(" = ") + strlen(value) > st->max_line) {
        snprintf(st->err, st->err_len, "%s%s%s: the value is too long (a line holds %zu bytes)",
                 section[0] ? section : "", section[0] ? "." : "", name, st->max_line);
        st->rc = -EINVAL;
        return 0;
    }
    /* inih strips "value ; comment" on a key's own line but not on an
     * indented continuation line, so such a value would print back as
     * something that loads differently (found by fuzz_config). */
    for (const char *c = strchr(value, ';'); c != NULL; c = strchr(c + 1, ';')) {
        if (c > value && (c[-1] == ' ' || c[-1] == '\t')) {
            snprintf(st->err, st->err_len,
                     "%s%s%s: a ';' comment on an indented continuation line; write each value "
                     "on one line",
                     section[0] ? section : "", section[0] ? "." : "", name);
            st->rc = -EINVAL;
            return 0;
        }
    }
    st->rc = config_set(st->cfg, section[0] ? section : NULL, name, value, st->err, st->err_len);
    return st->rc == 0;
}

int config_load_file(struct casbox_config *cfg, const char *path, char *err, size_t err_len)
{
    char detail[512] = "";
    struct config_load_state st = {.cfg = cfg, .err = detail, .err_len = sizeof(detail)};
    int line;

    st.f = fopen(path, "re");
    if (st.f == NULL) {
        int e = errno;
        snprintf(err, err_len, "%s: %s", path, strerror(e));
        return -e;
    }
    line = ini_parse_stream(config_ini_reader, &st, config_ini_handler, &st);
    fclose(st.f);
    free(st.line);
    if (line == 0 && st.rc != 0)
        line = st.lineno; /* the reader refused a line */
    if (line != 0) {
        snprintf(err, err_len, "%s:%d: %s", path, line, detail[0] ? detail : "syntax error");
        return -EINVAL;
    }
    return 0;
}

/* [asset] allowed_url_prefixes: each an http:// or https:// prefix with a
 * host. */
static int config_check_url_prefixes(const char *list, char *err, size_t err_len)
{
    const char *p = list;

    for (;;) {
        size_t len, scheme;

        p += strspn(p, " \t");
        len = strcspn(p, " \t");
        if (len == 0)
            return 0;
        scheme = strncasecmp(p, "http://", 7) == 0 ? 7 : strncasecmp(p, "https://", 8) == 0 ? 8 : 0;
        if (scheme == 0 || len == scheme || p[scheme] == '/') {
            snprintf(err, err_len,
                     "[asset] allowed_url_prefixes: '%.*s' is not an http:// or https:// URL "
                     "prefix with a host",
                     (int)(len > 200 ? 200 : len), p);
            return -EINVAL;
        }
        p += len;
    }
}

/* A remote is empty (none) or grpc://HOST:PORT (grpcs:// with TLS). */
static int config_check_remote(const char *key, const char *url, char *err, size_t err_len)
{
    const char *rest = NULL;

    if (url[0] == '\0')
        return 0;
    if (strncmp(url, "grpc://", 7) == 0)
        rest = url + 7;
    else if (strncmp(url, "grpcs://", 8) == 0)
        rest = url + 8;
    if (rest == NULL || rest[0] == '\0' || strchr(rest, ':') == NULL || strchr(rest, '/') != NULL) {
        snprintf(err, err_len, "%s '%s' is not grpc://HOST:PORT", key, url);
        return -EINVAL;
    }
    return 0;
}

int config_finish(struct casbox_config *cfg, char *err, size_t err_len)
{
    enum { LEVELS = 4 };
    static const char *const levels[LEVELS] = {"error", "warn", "info", "debug"};
    bool level_ok = false;

    if (cfg->exec_slots == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->exec_slots = n > 0 ? (uint64_t)n : 1;
    }
    if (strcmp(cfg->role, "all") != 0 && strcmp(cfg->role, "scheduler") != 0 &&
        strcmp(cfg->role, "worker") != 0) {
        snprintf(err, err_len, "[server] role '%s' is not all, scheduler or worker", cfg->role);
        return -EINVAL;
    }
    if (strcmp(cfg->role, "worker") == 0 && cfg->worker_scheduler[0] == '\0') {
        snprintf(err, err_len,
                 "role worker needs [worker] scheduler (--scheduler grpc://HOST:PORT)");
        return -EINVAL;
    }
    if (config_check_remote("[worker] scheduler", cfg->worker_scheduler, err, err_len) != 0)
        return -EINVAL;
    /* a worker's CAS is the scheduler's unless --cas / [cas] remote says otherwise */
    if (strcmp(cfg->role, "worker") == 0 && cfg->cas_remote[0] == '\0')
        snprintf(cfg->cas_remote, sizeof(cfg->cas_remote), "%s", cfg->worker_scheduler);
    if (strcmp(cfg->role, "worker") == 0 && !cfg->http_listen_set)
        cfg->http_listen[0] = '\0';
    if (strcmp(cfg->role, "worker") == 0 && cfg->ac_remote[0] == '\0')
        snprintf(cfg->ac_remote, sizeof(cfg->ac_remote), "%s", cfg->cas_remote);
    /* grpc binds with SO_REUSEPORT: the same address twice would split the
     * connections between the two servers at random */
    if (cfg->sched_worker_listen[0] != '\0' && strcmp(cfg->sched_worker_listen, cfg->listen) == 0) {
        snprintf(err, err_len,
                 "[scheduler] worker_listen %s is [server] listen: give workers another address "
                 "or leave it empty",
                 cfg->sched_worker_listen);
        return -EINVAL;
    }
    if (cfg->sched_idle_poll >= cfg->sched_worker_timeout) {
        snprintf(err, err_len,
                 "[scheduler] idle_poll %" PRIu64 " must be below worker_timeout %" PRIu64,
                 cfg->sched_idle_poll, cfg->sched_worker_timeout);
        return -EINVAL;
    }
    if (cfg->exec_default_timeout > cfg->exec_max_timeout) {
        snprintf(err, err_len,
                 "[execution] default_timeout %" PRIu64 " exceeds max_timeout %" PRIu64,
                 cfg->exec_default_timeout, cfg->exec_max_timeout);
        return -EINVAL;
    }
    if (cfg->max_batch_bytes > cfg->max_message_bytes) {
        snprintf(err, err_len, "[server] max_batch_bytes exceeds max_message_bytes");
        return -EINVAL;
    }
    if (cfg->read_chunk_bytes + 4096 > cfg->max_message_bytes) {
        snprintf(err, err_len, "[server] read_chunk_bytes must be below max_message_bytes");
        return -EINVAL;
    }
    for (int i = 0; i < LEVELS; i++)
        level_ok |= strcasecmp(cfg->log_level, levels[i]) == 0;
    if (!level_ok) {
        snprintf(err, err_len, "[server] log_level '%s' is not error, warn, info or debug",
                 cfg->log_level);
        return -EINVAL;
    }
    if (strcmp(cfg->exec_staging, "hardlink") != 0 && strcmp(cfg->exec_staging, "fuse") != 0 &&
        strcmp(cfg->exec_staging, "auto") != 0) {
        snprintf(err, err_len, "[execution] staging '%s' is not hardlink, fuse or auto",
                 cfg->exec_staging);
        return -EINVAL;
    }
    if (strcmp(cfg->exec_fuse_passthrough, "auto") != 0 &&
        strcmp(cfg->exec_fuse_passthrough, "off") != 0) {
        snprintf(err, err_len, "[execution] fuse_passthrough '%s' is not auto or off",
                 cfg->exec_fuse_passthrough);
        return -EINVAL;
    }
    if (strcmp(cfg->exec_fuse_uring, "auto") != 0 && strcmp(cfg->exec_fuse_uring, "on") != 0 &&
        strcmp(cfg->exec_fuse_uring, "off") != 0) {
        snprintf(err, err_len, "[execution] fuse_uring '%s' is not auto, on or off",
                 cfg->exec_fuse_uring);
        return -EINVAL;
    }
    if (strcmp(cfg->cas_fsync, "none") != 0 && strcmp(cfg->cas_fsync, "data") != 0 &&
        strcmp(cfg->cas_fsync, "full") != 0) {
        snprintf(err, err_len, "[cas] fsync '%s' is not none, data or full", cfg->cas_fsync);
        return -EINVAL;
    }
    if (strcmp(cfg->ingest_mode, "auto") != 0 && strcmp(cfg->ingest_mode, "uring") != 0 &&
        strcmp(cfg->ingest_mode, "threads") != 0) {
        snprintf(err, err_len, "[cas] ingest_mode '%s' is not auto, uring or threads",
                 cfg->ingest_mode);
        return -EINVAL;
    }
    if (config_check_url_prefixes(cfg->asset_allowed_url_prefixes, err, err_len) != 0)
        return -EINVAL;
    if (config_check_remote("[cas] remote", cfg->cas_remote, err, err_len) != 0 ||
        config_check_remote("[action_cache] remote", cfg->ac_remote, err, err_len) != 0)
        return -EINVAL;
    if (cfg->state_dir[0] == '\0') {
        snprintf(err, err_len, "no state directory: pass --state-dir or set [server] state_dir");
        return -EINVAL;
    }
    return config_finish_environments(cfg, err, err_len);
}

void config_print(const struct casbox_config *cfg, FILE *out)
{
    const char *section = "";

    for (size_t i = 0; i < sizeof(config_keys) / sizeof(config_keys[0]); i++) {
        const struct config_key *k = &config_keys[i];
        const char *field = (const char *)cfg + k->offset;
        uint64_t size;

        if (strcmp(section, k->section) != 0) {
            fprintf(out, "%s[%s]\n", i ? "\n" : "", k->section);
            section = k->section;
        }
        if (k->type == CONFIG_SIZE)
            fprintf(out, "# %s [%" PRIu64 " .. %" PRIu64 "]\n", k->help, k->min, k->max);
        else
            fprintf(out, "# %s\n", k->help);
        switch (k->type) {
        case CONFIG_STRING:
            fprintf(out, "%s = %s\n", config_key_name(k), field);
            break;
        case CONFIG_SIZE:
            memcpy(&size, field, sizeof(size));
            fprintf(out, "%s = %" PRIu64 "\n", config_key_name(k), size);
            break;
        case CONFIG_BOOL:
            fprintf(out, "%s = %s\n", config_key_name(k), *(const bool *)field ? "true" : "false");
            break;
        }
    }
    fprintf(out,
            "\n# Execution environments: one [" CONFIG_ENV_PREFIX
            "NAME] section each (at most %d):\n"
            "# actions whose platform property container-image equals image run on the\n"
            "# root tree root (read-only) instead of the host's /usr, /bin, /lib*, /etc.\n",
            CONFIG_MAX_ENVIRONMENTS);
    if (cfg->n_environments == 0)
        fprintf(out, "# [" CONFIG_ENV_PREFIX "debian-sid]\n# image = debian-sid\n"
                     "# root = /var/lib/casbox/roots/debian-sid\n");
    for (size_t i = 0; i < cfg->n_environments; i++) {
        const struct casbox_environment *env = &cfg->environments[i];

        fprintf(out, "[" CONFIG_ENV_PREFIX "%s]\nimage = %s\nroot = %s\n", env->name, env->image,
                env->root);
    }
}
