/*
 * config.h - casboxd's configuration: defaults, the INI file, command-line
 * overrides, and the bounds of every key.
 *
 * The file is INI (parsed by Debian's libinih): [server], [cas], [execution],
 * [asset] and [http] sections, and one [environment.NAME] section per execution
 * environment; docs/configuration.md lists every key. Sizes accept
 * K/M/G/T suffixes (powers of 1024), durations are seconds. [action_cache]
 * holds the one key `remote`.
 */
#ifndef CASBOX_CONFIG_H
#define CASBOX_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_LIST 32
/* [environment.NAME] sections: named root filesystems (docs/configuration.md). */
#define CONFIG_MAX_ENVIRONMENTS 64

/* One execution environment: actions whose platform property container-image
 * equals image run on root (a root tree on the host, bound read-only) instead
 * of the host's allow-list. */
struct casbox_environment {
    char name[64];   /* NAME of the [environment.NAME] section */
    char image[256]; /* the container-image value that selects it */
    char root[512];  /* absolute path of the root tree on the host */
};

struct casbox_config {
    /* [server] */
    char listen[256];
    char state_dir[1024];
    char worker_name[256];
    char log_level[16];
    uint64_t rpc_threads;        /* threads serving short calls */
    uint64_t stream_threads;     /* threads for Execute's first part */
    uint64_t transfer_threads;   /* threads for the blocking steps of ByteStream, FetchBlob */
    uint64_t event_threads;      /* threads driving event-driven streams */
    uint64_t max_async_calls;    /* event-driven streams open at once */
    uint64_t max_inflight_calls; /* accepted calls waiting for a thread, per pool */
    uint64_t max_message_bytes;  /* largest gRPC message received or sent */
    uint64_t max_batch_bytes;    /* max_batch_total_size_bytes advertised and enforced */
    uint64_t max_batch_blobs;    /* digests in one batch / FindMissingBlobs request */
    uint64_t read_chunk_bytes;   /* ByteStream.Read chunk size */
    uint64_t max_uploads;        /* concurrent resumable uploads kept */
    /* seconds a stream may wait on its client before it is cancelled; 0 = none */
    uint64_t stream_stall_timeout;

    /* [cas] */
    uint64_t cas_max_bytes;      /* LRU eviction above this */
    char ingest_mode[16];        /* auto | uring | threads (cas.h, cas_ingest_mode_parse) */
    uint64_t ingest_threads;     /* hashing threads for output collection; 0 = CPUs */
    uint64_t ingest_queue_depth; /* io_uring: output files in flight */
    /* free space kept on the store's filesystem: the smaller of bytes and percent */
    uint64_t cas_disk_headroom;
    uint64_t cas_disk_headroom_percent;
    uint64_t cas_max_blob_percent;
    /* none | data | full (cas.h, cas_fsync_mode_parse) */
    char cas_fsync[8];
    /* seconds start-up waits for a dying predecessor's store lock */
    uint64_t cas_lock_wait;
    /* [cas] remote: the upstream CAS that is the source of truth (remote/remote.h) */
    char cas_remote[512];               /* grpc://HOST:PORT; empty: none */
    char cas_remote_instance_name[256]; /* instance name used with it */
    uint64_t cas_remote_timeout;        /* seconds, every call to it */
    uint64_t cas_remote_batch_digests;  /* digests per forwarded FindMissingBlobs */
    uint64_t cas_remote_batch_bytes;    /* bytes per BatchUpdateBlobs sent to it */

    /* [action_cache] */
    char ac_remote[512]; /* grpc://HOST:PORT of a remote ActionCache; empty: local */

    /* [execution] */
    bool exec_enabled;
    uint64_t exec_slots;        /* actions running at once; 0 = number of CPUs */
    uint64_t exec_queue_length; /* actions waiting for a slot */
    /* input subtrees remembered as checked complete; 0 = off */
    uint64_t exec_tree_cache_entries;
    uint64_t exec_default_timeout; /* seconds, when the Action has none */
    uint64_t exec_max_timeout;     /* seconds, cap on Action.timeout */
    uint64_t exec_memory_bytes;    /* per action; 0 = unlimited */
    uint64_t exec_pids_max;        /* per action; 0 = unlimited */
    uint64_t exec_stdio_bytes;     /* cap on each of stdout and stderr */
    uint64_t exec_max_output_bytes;
    uint64_t exec_max_output_files;
    uint64_t exec_copy_cache_bytes;
    uint64_t operation_retention;        /* seconds a finished operation stays queryable */
    bool exec_allow_network;             /* honour the platform property network=on */
    char exec_seccomp[256];              /* default | strict | none | /path/to/policy */
    char exec_staging[16];               /* hardlink | fuse | auto */
    uint64_t exec_fuse_threads;          /* FUSE request threads (fuse/casfs.h) */
    char exec_fuse_passthrough[8];       /* auto | off: FUSE passthrough (docs/fuse.md) */
    char exec_fuse_uring[8];             /* auto | on | off: FUSE over io_uring (docs/fuse.md) */
    char exec_accepted_properties[1024]; /* comma-separated property names to accept */

    /* [asset]: the Remote Asset API (daemon/svc_asset.c) */
    bool asset_enabled;
    uint64_t asset_max_bytes;              /* largest download */
    uint64_t asset_timeout;                /* seconds, cap on one FetchBlob's downloads */
    uint64_t asset_max_fetches;            /* downloads at once */
    uint64_t asset_max_mappings;           /* URI -> digest entries remembered */
    char asset_allowed_url_prefixes[4096]; /* space-separated; empty: no download */

    /* [tls], [auth]: the server's TLS and who may do what (docs/security.md) */
    char tls_certificate[1024];
    char tls_private_key[1024];
    char tls_client_ca[1024];
    char auth_tokens_file[1024];
    char auth_certificates_file[1024];
    char auth_anonymous[128];

    /* [client]: casboxd calling another server (worker, remote CAS) */
    char client_tls_ca[1024];
    char client_tls_certificate[1024];
    char client_tls_private_key[1024];
    char client_token_file[1024];

    /* [server] role and the fleet's [scheduler] and [worker] sections
     * (docs/fleet.md) */
    char role[16];                    /* all | scheduler | worker */
    uint64_t sched_worker_timeout;    /* seconds of silence after which a worker slot is lost */
    uint64_t sched_max_retries;       /* requeues of an action after its worker was lost */
    uint64_t sched_max_workers;       /* worker slots known at once */
    uint64_t sched_max_queued;        /* actions waiting for a worker */
    uint64_t sched_grace;             /* seconds after start: unknown platforms UNAVAILABLE */
    uint64_t sched_idle_poll;         /* seconds an idle worker's Synchronize is held */
    uint64_t sched_orphan_timeout;    /* seconds an action nobody waits for is kept */
    char sched_worker_listen[256];    /* HOST:PORT of Synchronize alone; empty: [server] listen */
    char worker_scheduler[256];       /* grpc://HOST:PORT of the scheduler */
    char worker_platform[1024];       /* "OSFamily=Linux,ISA=x86-64" */
    char worker_instance_prefix[256]; /* instance_name_prefix announced */
    uint64_t worker_size_class;       /* size_class announced (docs/fleet.md, matching) */

    /* [http]: /metrics and the web pages (web/web.h) */
    char http_listen[256];            /* HOST:PORT; empty: off */
    bool http_listen_set;             /* set by the file or --set (role worker: else off) */
    uint64_t http_history_size;       /* finished actions kept for the pages */
    uint64_t http_max_connections;    /* at once */
    uint64_t http_connection_timeout; /* seconds idle */
    uint64_t http_request_bytes;      /* memory per connection: request line, headers */
    uint64_t http_threads;            /* polling threads */
    uint64_t http_inline_bytes;       /* stdout/stderr shown on a page */
    uint64_t http_max_message_bytes;  /* largest message a page decodes */

    /* [environment.NAME] sections, in file order */
    struct casbox_environment environments[CONFIG_MAX_ENVIRONMENTS];
    size_t n_environments;
};

/* Fills the compiled-in defaults. */
void config_init_defaults(struct casbox_config *cfg);
/* Loads an INI file over the current values. On error writes a one-line
 * message naming the file, line and key into err and returns -EINVAL (or
 * -errno when the file cannot be read). */
int config_load_file(struct casbox_config *cfg, const char *path, char *err, size_t err_len);
/* Sets one key ("section.key" or bare "key"), checking bounds. Section
 * "environment.NAME" adds (or updates) the environment NAME: keys image and
 * root. */
int config_set(struct casbox_config *cfg, const char *section, const char *key, const char *value,
               char *err, size_t err_len);
/* Checks cross-key constraints and resolves derived defaults (exec_slots 0).
 * Every environment needs an image, unique among them, and a root that is an
 * existing directory (given as an absolute path). */
int config_finish(struct casbox_config *cfg, char *err, size_t err_len);
/* Writes the effective configuration as an INI file with comments. */
void config_print(const struct casbox_config *cfg, FILE *out);
/* The environment whose image is image, or NULL. */
const struct casbox_environment *config_environment_find(const struct casbox_config *cfg,
                                                         const char *image);
/* The known images, quoted and comma-separated ("'a', 'b'"), or "none", into
 * out (truncated with "..." when it does not fit). */
void config_environment_list(const struct casbox_config *cfg, char *out, size_t len);
/* Parses "12", "4K", "16M", "1G", "2T". -EINVAL on garbage or overflow. */
int config_parse_size(const char *s, uint64_t *out);

#endif
