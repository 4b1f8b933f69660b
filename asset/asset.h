/*
 * asset.h - the Remote Asset API's work without gRPC: what a URI and its
 * qualifiers name, where it was found before, and fetching it from origin
 * into the CAS. daemon/svc_asset.c turns requests into these calls and their
 * errors into gRPC statuses.
 *
 * Qualifiers (qualifier.c): parsed once per request; checksum.sri is decoded
 * (sri.c) and the qualifiers that shape an HTTP request (http_header:NAME,
 * http_header_url:N:NAME) become headers. The request's qualifiers, sorted,
 * with the kind, instance and URI, make the key under which a result is
 * remembered.
 * The map (map.c): key -> digest, bounded, least recently used dropped first,
 * kept in an append-only log beside the CAS so that a restart remembers it.
 * Fetching (fetch.c, http.c, url.c): http(s) URLs only, inside the configured
 * prefixes (redirects too), bounded in bytes and time and in fetches at once;
 * the body goes to a temp file in the store's tmp/ while its SRI hashes are
 * computed, and only a verified file enters the CAS, by cas_store_put_file.
 *
 * Functions return 0 or a negative errno; those that can fail for a reason
 * the client must learn also write a one-line message into err.
 */
#ifndef CASBOX_ASSET_H
#define CASBOX_ASSET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cas/cas.h"

/* --- Subresource Integrity (sri.c) ---
 *
 * A checksum.sri value is one or more "ALG-BASE64" tokens separated by white
 * space (https://www.w3.org/TR/SRI/), each optionally followed by "?options",
 * which are ignored. casbox knows sha256, sha384 and sha512 (the SRI
 * algorithms) and refuses any other name. Fetched content must match every
 * token given. */

enum asset_hash_alg { ASSET_SHA256, ASSET_SHA384, ASSET_SHA512 };

#define ASSET_HASH_MAX_BYTES 64
#define ASSET_SRI_MAX_HASHES 8

struct asset_sri_hash {
    enum asset_hash_alg alg;
    uint8_t digest[ASSET_HASH_MAX_BYTES];
    size_t len;
};

struct asset_sri {
    struct asset_sri_hash hashes[ASSET_SRI_MAX_HASHES];
    size_t n;
};

/* -EINVAL with err naming the token (an unknown algorithm by its name, bad
 * base64, a digest of the wrong length, no token at all); -E2BIG for more
 * than ASSET_SRI_MAX_HASHES tokens. */
int asset_sri_parse(const char *value, struct asset_sri *out, char *err, size_t err_len);
/* "sha256". */
const char *asset_hash_alg_name(enum asset_hash_alg alg);
/* Bytes of the algorithm's digest (32, 48, 64). */
size_t asset_hash_alg_len(enum asset_hash_alg alg);
/* "sha256-BASE64" into out (at most out_len bytes with the NUL). */
void asset_sri_format(const struct asset_sri_hash *h, char *out, size_t out_len);

/* Standard base64 (RFC 4648 section 4), padding optional; bytes in out.
 * -EINVAL on any other character or a bad length, -ENOSPC when out is too
 * small. */
int asset_base64_decode(const char *in, size_t in_len, uint8_t *out, size_t out_cap,
                        size_t *out_len);
/* Padded standard base64 of in; out must hold 4 * ceil(len / 3) + 1 bytes. */
void asset_base64_encode(const uint8_t *in, size_t len, char *out);

/* Checks content against an SRI as it streams by. */
struct asset_sri_check;

int asset_sri_check_new(const struct asset_sri *sri, struct asset_sri_check **out);
void asset_sri_check_update(struct asset_sri_check *c, const void *buf, size_t len);
/* 0 when every hash matches; -EBADMSG with err giving the expected and
 * actual values of the first that does not. Frees c either way. */
int asset_sri_check_finish(struct asset_sri_check *c, char *err, size_t err_len);
void asset_sri_check_free(struct asset_sri_check *c);

/* --- qualifiers and keys (qualifier.c) --- */

#define ASSET_MAX_QUALIFIERS 64
#define ASSET_MAX_URIS       64
#define ASSET_MAX_URI_LEN    8192
#define ASSET_MAX_HEADERS    32
#define ASSET_MAX_KEY_BYTES  (64u << 10)

#define ASSET_QUALIFIER_SRI          "checksum.sri"
#define ASSET_QUALIFIER_CANONICAL_ID "bazel.canonical_id"
#define ASSET_QUALIFIER_RESOURCE     "resource_type"

struct asset_qualifier {
    const char *name;
    const char *value;
};

/* One header for the HTTP request: "Name: value", for every URL (url_index
 * -1) or for the URL at url_index of the request. */
struct asset_header {
    int url_index;
    char *line;
};

struct asset_qualifiers {
    bool has_sri;
    struct asset_sri sri;
    struct asset_header headers[ASSET_MAX_HEADERS];
    size_t n_headers;
    /* The first qualifier that fetching from origin cannot honour, or NULL
     * (points into the request). A Push'd mapping may still answer it. */
    const char *unsupported;
};

/* Parses and checks a request's qualifiers: names unique and non-empty,
 * checksum.sri well formed, http_header* names and values safe to send.
 * -EINVAL (or -E2BIG) with err naming the qualifier. Free with
 * asset_qualifiers_free. */
int asset_qualifiers_parse(const struct asset_qualifier *q, size_t n, struct asset_qualifiers *out,
                           char *err, size_t err_len);
void asset_qualifiers_free(struct asset_qualifiers *q);

enum asset_kind { ASSET_BLOB, ASSET_DIRECTORY };

/* The map key of (kind, instance, uri, qualifiers in any order): a malloc'd
 * byte string, the same for the same qualifiers in any order. -E2BIG above
 * ASSET_MAX_KEY_BYTES. */
int asset_key_make(enum asset_kind kind, const char *instance, const char *uri,
                   const struct asset_qualifier *q, size_t n, uint8_t **key, size_t *key_len);

/* --- URLs (url.c) --- */

/* Whether url may be fetched from origin: it must parse as an absolute
 * http:// or https:// URL without user name or password, and start with one
 * of the space-separated prefixes at a boundary (the prefix ends with '/',
 * or the URL continues with '/', '?' or '#' or ends there): the prefix
 * "https://example.com" allows "https://example.com/x" but not
 * "https://example.com.evil.org/". The comparison is on the URL as curl
 * normalises it (into normalized), which is also what is requested.
 * 0; -EPERM outside the prefixes; -EPROTONOSUPPORT not http(s); -EINVAL not
 * a URL (or with credentials). */
int asset_url_check(const char *url, const char *prefixes, char *normalized, size_t normalized_len);
/* The prefix rule alone, on an already normalised URL: true or false. */
bool asset_url_prefix_match(const char *url, const char *prefixes);
/* Whether uri starts with "http://" or "https://" (case-insensitively). */
bool asset_url_is_http(const char *uri);

/* --- HTTP (http.c, libcurl) --- */

/* Once, before any thread starts (curl_global_init). */
int asset_http_global_init(void);
void asset_http_global_cleanup(void);

struct asset_http_request {
    const char *url;            /* normalised by asset_url_check */
    const char *prefixes;       /* every redirect must stay inside them */
    const char *const *headers; /* "Name: value" lines */
    size_t n_headers;
    uint64_t max_bytes;   /* larger bodies are refused, early when announced */
    uint64_t deadline_us; /* clock_mono_us() at which the transfer is abandoned */
    int fd;               /* the body is written here */
    void (*on_data)(void *ctx, const void *buf, size_t len);
    void *ctx;
    const atomic_bool *cancel; /* when it becomes true, the transfer ends (-ECANCELED) */
};

/* GETs the URL, following up to 8 redirects, each checked with
 * asset_url_check. 0 with *bytes set when the server answered 2xx with a
 * body no larger than max_bytes. Else: -ENOENT (404, 410, another HTTP
 * error, or the server could not be reached), -EACCES (401, 403), -EPERM (a
 * redirect outside the prefixes), -ETIMEDOUT, -EFBIG (over max_bytes), -EIO
 * (writing fd failed), -ECANCELED (cancel became true; within about a
 * second), -ENOMEM; err says what happened, with the URL. */
int asset_http_get(const struct asset_http_request *req, uint64_t *bytes, char *err,
                   size_t err_len);

/* --- fetching into the CAS (fetch.c) --- */

struct asset_fetcher;

/* At most max_fetches downloads at once; as many requests again may wait
 * for one. Temp files go to the store's tmp/. */
int asset_fetcher_new(struct cas_store *store, unsigned max_fetches, struct asset_fetcher **out);
/* For shutdown: ends the downloads in progress and every wait, and refuses
 * new downloads, all with -ECANCELED. */
void asset_fetcher_cancel(struct asset_fetcher *f);
void asset_fetcher_free(struct asset_fetcher *f);

struct asset_fetch_request {
    const char *const *uris; /* tried in order; the first that works wins */
    size_t n_uris;
    const struct asset_qualifiers *qualifiers;
    const char *prefixes; /* [asset] allowed_url_prefixes */
    uint64_t max_bytes;
    uint64_t timeout_us; /* for the whole request, all URIs together */
    /* clock_mono_us() after which waiting (for a slot, or for the same
     * download in flight) gives up */
    uint64_t wait_deadline_us;
    /* Requests with the same key are one download: while one is in flight
     * the others wait for it (NULL: no such sharing). */
    const uint8_t *flight_key;
    size_t flight_key_len;
    /* Called with the result before the flight lands, so that a request
     * that waited for it finds it recorded (may be NULL). */
    void (*on_stored)(void *ctx, const struct cas_digest *digest, size_t uri_index);
    void *ctx;
};

/* Downloads the first URI that can be fetched, verifies it against the SRI
 * qualifier and stores it: 0 with *digest and *uri_index set. Otherwise the
 * error of the first URI (see asset_http_get; also -EPERM for a URL outside
 * the prefixes, -EPROTONOSUPPORT for a URI that is not http(s), -EBADMSG for
 * content that does not match checksum.sri, -EAGAIN when no download slot
 * was free in time), with err listing every URI's failure. Nothing is stored
 * unless verified. -EALREADY: the same download was in flight and has ended
 * meanwhile (look for its result, or call again); -EINPROGRESS: it is still
 * in flight at the wait deadline (it goes on; ask again later). */
int asset_fetch_blob(struct asset_fetcher *f, const struct asset_fetch_request *req,
                     struct cas_digest *digest, size_t *uri_index, char *err, size_t err_len);

/* --- the map (map.c) --- */

struct asset_entry {
    struct cas_digest digest;
    uint64_t stored_us; /* real time the fetch started, or of the Push */
    uint64_t expire_us; /* real time after which it is not returned; 0: never */
};

struct asset_map;

/* A map of at most max_entries keys. path: its log, loaded now (a torn or
 * foreign line is skipped) and appended to from then on; NULL: memory
 * only. */
int asset_map_open(const char *path, size_t max_entries, struct asset_map **out);
void asset_map_close(struct asset_map *m);
/* -ENOENT when absent. Marks it recently used. */
int asset_map_get(struct asset_map *m, const uint8_t *key, size_t key_len, struct asset_entry *out);
/* Adds or replaces; drops the least recently used key beyond max_entries.
 * A log that cannot be written is logged, and the map goes on in memory. */
int asset_map_put(struct asset_map *m, const uint8_t *key, size_t key_len,
                  const struct asset_entry *e);
int asset_map_remove(struct asset_map *m, const uint8_t *key, size_t key_len);
size_t asset_map_count(struct asset_map *m);

#endif
