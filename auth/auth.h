/*
 * auth.h - who may call casboxd, and what they may do: permissions, the
 * tokens and certificate-names files, the policy that combines them with
 * [auth] anonymous, its reload, and the checks of the TLS files.
 *
 * No gRPC here: rpc/ turns a call into a struct auth_peer (its bearer token
 * and its verified certificate's names) and asks auth_policy_check. Tokens
 * are kept only as SHA-256 digests (a file may hold `sha256:<hex>` instead
 * of the token) and compared in constant time (CRYPTO_memcmp); nothing here
 * ever logs or returns a token.
 *
 * Files (tokens_file and certificates_file): one credential per line,
 * `NAME PERMISSIONS [INSTANCE_PREFIX...]`, fields separated by spaces or
 * tabs, `#` starting a comment line. PERMISSIONS is a comma list of read,
 * write, write-ac, execute, worker. A prefix matches whole instance-name
 * segments (`teamA` covers `teamA` and `teamA/x`, not `teamAB`); no prefix:
 * every instance.
 */
#ifndef CASBOX_AUTH_H
#define CASBOX_AUTH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Permissions: a method needs all the bits of its set. */
enum auth_perm {
    AUTH_PERM_READ = 1u << 0, /* FindMissingBlobs, BatchReadBlobs, Read, GetTree, GetActionResult */
    AUTH_PERM_WRITE = 1u << 1,    /* ByteStream Write, QueryWriteStatus, BatchUpdateBlobs */
    AUTH_PERM_WRITE_AC = 1u << 2, /* UpdateActionResult */
    AUTH_PERM_EXECUTE = 1u << 3,  /* Execute, WaitExecution */
    AUTH_PERM_WORKER = 1u << 4,   /* the worker protocol (a scheduler's workers) */
};
#define AUTH_PERM_NONE 0u
#define AUTH_PERM_ALL  0x1fu

/* "read,write" -> bits; "none" -> 0; "all" -> AUTH_PERM_ALL. -EINVAL with
 * err naming the bad word. */
int auth_perms_parse(const char *list, size_t len, unsigned *out, char *err, size_t err_len);
/* bits -> "read,write" ("none" for 0), into out. */
void auth_perms_format(unsigned perms, char *out, size_t len);

/* Whether instance lies under prefix, whole segments only. */
bool auth_prefix_matches(const char *prefix, const char *instance);

/* --- a credentials file --- */

enum auth_table_kind {
    AUTH_TABLE_TOKENS, /* NAME is a token or sha256:<hex> of it */
    AUTH_TABLE_NAMES,  /* NAME is a certificate's subject CN or a DNS SAN */
};

struct auth_table;
struct auth_entry;

#define AUTH_MAX_LINE      8192
#define AUTH_MAX_ENTRIES   100000
#define AUTH_MAX_PREFIXES  64
#define AUTH_MAX_PREFIX    1024
#define AUTH_MAX_FILE_SIZE (16u << 20)

/* Parses text (len bytes, any content) as a file of kind; source names it
 * in messages. -EINVAL with a one-line err "SOURCE:LINE: what is wrong",
 * -ENOMEM. */
int auth_table_parse(enum auth_table_kind kind, const char *source, const char *text, size_t len,
                     struct auth_table **out, char *err, size_t err_len);
/* Reads and parses path. Refuses a file other users may read (o+r: -EPERM)
 * or that is not a regular file; a group-readable one loads, and warn (may
 * be NULL) gets a line saying so. Every error is one line naming the file. */
int auth_table_load(enum auth_table_kind kind, const char *path, struct auth_table **out,
                    void (*warn)(const char *line), char *err, size_t err_len);
void auth_table_free(struct auth_table *t);
size_t auth_table_count(const struct auth_table *t);
/* The entry of token, or NULL; every entry is compared, in constant time. */
const struct auth_entry *auth_table_find_token(const struct auth_table *t, const char *token,
                                               size_t len);
/* The entry named name (a certificate name), or NULL. */
const struct auth_entry *auth_table_find_name(const struct auth_table *t, const char *name,
                                              size_t len);
/* The permissions e grants on instance (0 outside its prefixes). */
unsigned auth_entry_perms(const struct auth_entry *e, const char *instance);
/* The file line it came from (for logs: never the token itself). */
unsigned auth_entry_line(const struct auth_entry *e);

/* --- the policy: the files, anonymous, and whether certificates are checked --- */

struct auth_settings {
    const char *tokens_file;       /* "" or NULL: none */
    const char *certificates_file; /* "" or NULL: none */
    const char *anonymous;         /* "" or NULL: the default (below) */
    bool client_certificates;      /* [tls] client_ca set: every peer has a verified certificate */
};

struct auth_policy;

/* Loads the files of s. With none of tokens_file, certificates_file and
 * client certificates, anonymous defaults to every permission (an open
 * server, as before); otherwise to none. warn (may be NULL) receives each
 * warning line. */
int auth_policy_load(const struct auth_settings *s, struct auth_policy **out,
                     void (*warn)(const char *line), char *err, size_t err_len);
void auth_policy_free(struct auth_policy *p);
/* Whether calls are checked at all (false: an open server). */
bool auth_policy_enabled(const struct auth_policy *p);
/* One line saying what the policy is, for the start-up log. */
void auth_policy_describe(const struct auth_policy *p, char *out, size_t len);

/* What rpc/ knows of a caller. */
struct auth_peer {
    const char *token; /* the bearer token, NULL when none was sent */
    size_t token_len;
    const char *const *names; /* the verified client certificate's CN and SANs */
    size_t n_names;
    bool has_certificate; /* a client certificate verified by client_ca */
};

enum auth_result {
    AUTH_OK = 0,
    AUTH_UNAUTHENTICATED, /* no credentials where some are needed, or unknown ones */
    AUTH_DENIED,          /* known, but not allowed this on this instance */
};

/* Who the caller is, once per call: resolves the credentials against the
 * policy. */
struct auth_identity {
    enum auth_result result;        /* AUTH_OK or AUTH_UNAUTHENTICATED or AUTH_DENIED */
    const struct auth_entry *entry; /* NULL: anonymous (or certificate-only) */
    unsigned anonymous_perms;       /* when entry is NULL */
    char who[128];    /* "token of line 3", "certificate 'ci'", "anonymous": never the token */
    char reason[160]; /* why, when not AUTH_OK */
};

void auth_policy_identify(const struct auth_policy *p, const struct auth_peer *peer,
                          struct auth_identity *out);
/* The permissions id has on instance (0 unless id->result is AUTH_OK). */
unsigned auth_identity_perms(const struct auth_identity *id, const char *instance);
/* AUTH_OK when id may do need on instance; otherwise the result, and reason
 * names the missing permission and the instance. */
enum auth_result auth_identity_check(const struct auth_identity *id, unsigned need,
                                     const char *instance, char *reason, size_t reason_len);

/* --- the current policy, swapped by a reload while calls use the old one --- */

struct auth_guard {
    pthread_mutex_t lock;
    struct auth_policy *current; /* reference counted */
};

/* Takes p. */
int auth_guard_init(struct auth_guard *g, struct auth_policy *p);
void auth_guard_destroy(struct auth_guard *g);
/* A reference to the current policy; give it back with auth_guard_release. */
struct auth_policy *auth_guard_acquire(struct auth_guard *g);
void auth_guard_release(struct auth_guard *g, struct auth_policy *p);
/* Makes p current (takes it); calls holding the old one finish with it. */
void auth_guard_replace(struct auth_guard *g, struct auth_policy *p);

/* At most burst lines per second; the rest are counted and reported with
 * the next line let through. */
struct auth_log_limiter {
    pthread_mutex_t lock;
    uint64_t window_start_us;
    unsigned in_window;
    unsigned burst;
    uint64_t suppressed;
};

void auth_log_limiter_init(struct auth_log_limiter *l, unsigned burst);
void auth_log_limiter_destroy(struct auth_log_limiter *l);
/* true: log this one (*suppressed: how many were dropped since the last). */
bool auth_log_limiter_allow(struct auth_log_limiter *l, uint64_t now_us, uint64_t *suppressed);

/* --- the TLS files ([tls]) --- */

/* The PEM texts grpc needs, read and checked: the chain parses, every
 * certificate is valid now (not expired, not before its start), the key
 * matches the first certificate and is not readable by others (o+r refused,
 * g+r a warning), the CA file parses. malloc'd, NUL-terminated. */
struct auth_tls_files {
    char *certificate_chain; /* NULL when TLS is off */
    char *private_key;
    char *client_ca; /* NULL: no client certificates asked for */
};

/* certificate and private_key both set or both empty; client_ca needs them.
 * A one-line err naming the file on failure. warn as auth_policy_load. */
int auth_tls_files_load(const char *certificate, const char *private_key, const char *client_ca,
                        struct auth_tls_files *out, void (*warn)(const char *line), char *err,
                        size_t err_len);
void auth_tls_files_free(struct auth_tls_files *f);
/* A secret file (a client's token file) whole, NUL-terminated, malloc'd:
 * refused when other users may read it, as the server's files are. */
int auth_secret_file_read(const char *path, char **out, size_t *len, void (*warn)(const char *line),
                          char *err, size_t err_len);
/* Client side: reads a CA bundle, or a certificate and key pair, the same
 * way (the key's mode is checked). NULL path: *out NULL. */
int auth_tls_read_pem(const char *path, bool secret, char **out, void (*warn)(const char *line),
                      char *err, size_t err_len);

#endif
