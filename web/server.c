/*
 * server.c - the HTTP listener: libmicrohttpd (Debian's libmicrohttpd,
 * a small long-kept HTTP/1.1 server library) parses every request, so casbox
 * carries no HTTP parser. This file binds [http] listen, applies the bounds
 * (connections, idle time, memory per connection: libmicrohttpd itself
 * answers 414/431 when the URL or headers pass it), answers only GET and
 * HEAD without a body, asks the authorize hook, and sends each page:
 * HTML from page_*.c, /metrics from the registry, blobs streamed from their
 * CAS file (MHD_create_response_from_fd64: sendfile, never whole in memory).
 *
 * With [tls] the listener is HTTPS only, with the gRPC side's certificate
 * and key; with [tls] client_ca a request must come over a connection whose
 * client certificate GnuTLS verified against that CA, or it is answered 403
 * (libmicrohttpd asks for the certificate but leaves the verdict to us).
 *
 * Every response carries a Content-Security-Policy that allows no script
 * and no outside resource: the pages are HTML and inline CSS/SVG only.
 */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "metrics/metrics.h"
#include "util/util.h"
#include "web_internal.h"

#define WEB_CSP                                                                                    \
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "                        \
    "form-action 'none'; frame-ancestors 'none'"

struct web_server {
    struct MHD_Daemon *mhd;
    struct web_options opt;
    struct metrics_family *requests;
    char *tls_certificate, *tls_private_key, *tls_client_ca; /* owned copies */
};

/* What *con_cls points to between the calls of one request. */
enum web_request_state { WEB_REQ_HEADERS = 1, WEB_REQ_BODY };
static const enum web_request_state web_req_headers = WEB_REQ_HEADERS;
static const enum web_request_state web_req_body = WEB_REQ_BODY;

static const char *web_route_label(int rc, const struct web_route *r)
{
    static const char *const names[] = {"overview", "metrics", "action", "dir", "blob", "history"};

    if (rc != 0 || (size_t)r->kind >= sizeof(names) / sizeof(names[0]))
        return "other";
    return names[r->kind];
}

static void web_headers(struct MHD_Response *resp, const char *type)
{
    MHD_add_response_header(resp, "Content-Type", type);
    MHD_add_response_header(resp, "Content-Security-Policy", WEB_CSP);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
}

static enum MHD_Result web_send(struct web_server *s, struct MHD_Connection *con, const char *page,
                                unsigned status, struct MHD_Response *resp)
{
    char code[8];
    enum MHD_Result r;

    snprintf(code, sizeof(code), "%u", status);
    metrics_counter_add(s->requests, METRICS_LABELS(page, code), 1);
    if (resp == NULL)
        return MHD_NO; /* out of memory: libmicrohttpd closes the connection */
    r = MHD_queue_response(con, status, resp);
    MHD_destroy_response(resp);
    return r;
}

/* Sends b (taken over) as type, with one more header when header is set. */
static enum MHD_Result web_send_buf_with(struct web_server *s, struct MHD_Connection *con,
                                         const char *page, unsigned status, struct util_buf *b,
                                         const char *type, const char *header, const char *value)
{
    struct MHD_Response *resp = NULL;

    if (b->err == 0 && b->data != NULL) {
        resp = MHD_create_response_from_buffer(b->len, b->data, MHD_RESPMEM_MUST_FREE);
        if (resp != NULL)
            b->data = NULL;
    }
    util_buf_free(b);
    if (resp != NULL) {
        web_headers(resp, type);
        if (header != NULL)
            MHD_add_response_header(resp, header, value);
    }
    return web_send(s, con, page, status, resp);
}

static enum MHD_Result web_send_buf(struct web_server *s, struct MHD_Connection *con,
                                    const char *page, unsigned status, struct util_buf *b,
                                    const char *type)
{
    return web_send_buf_with(s, con, page, status, b, type, NULL, NULL);
}

/* An error page, with one more header when header is set. */
static enum MHD_Result web_send_error_with(struct web_server *s, struct MHD_Connection *con,
                                           const char *page, unsigned status, const char *title,
                                           const char *detail, const char *header,
                                           const char *value)
{
    struct util_buf b = {0};

    web_page_error(&b, status, title, detail);
    return web_send_buf_with(s, con, page, status, &b, "text/html; charset=utf-8", header, value);
}

static enum MHD_Result web_send_error(struct web_server *s, struct MHD_Connection *con,
                                      const char *page, unsigned status, const char *title,
                                      const char *detail)
{
    return web_send_error_with(s, con, page, status, title, detail, NULL, NULL);
}

static bool web_name_is_text(const char *name)
{
    size_t n = strlen(name);

    return strcmp(name, "stdout") == 0 || strcmp(name, "stderr") == 0 ||
           (n > 4 && (strcmp(name + n - 4, ".txt") == 0 || strcmp(name + n - 4, ".log") == 0));
}

static enum MHD_Result web_send_blob(struct web_server *s, struct MHD_Connection *con,
                                     const struct web_route *r)
{
    struct MHD_Response *resp;
    char disposition[320];
    struct stat st;
    int fd = cas_store_open_blob(s->opt.store, &r->digest);

    if (fd < 0)
        return web_send_error(s, con, "blob", 404, "Unknown blob",
                              "No blob with this digest is in the CAS.");
    if (fstat(fd, &st) != 0 || st.st_size != r->digest.size) {
        close(fd);
        return web_send_error(s, con, "blob", 500, "Blob unreadable",
                              "The blob's file does not have the digest's size.");
    }
    resp = MHD_create_response_from_fd64((uint64_t)st.st_size, fd);
    if (resp == NULL) {
        close(fd);
        return web_send(s, con, "blob", 500, NULL);
    }
    web_headers(resp, r->name[0] && web_name_is_text(r->name) ? "text/plain; charset=utf-8"
                                                              : "application/octet-stream");
    if (r->name[0] != '\0') {
        snprintf(disposition, sizeof(disposition), "%s; filename=\"%s\"",
                 web_name_is_text(r->name) ? "inline" : "attachment", r->name);
        MHD_add_response_header(resp, "Content-Disposition", disposition);
    }
    return web_send(s, con, "blob", 200, resp);
}

static enum MHD_Result web_dispatch(struct web_server *s, struct MHD_Connection *con,
                                    const char *url)
{
    struct web_route r;
    struct util_buf b = {0};
    char detail[200];
    unsigned status = 200;
    const char *instance;
    char *text;
    size_t len;
    int rc = web_route_parse(url, &r, detail, sizeof(detail));
    const char *page = web_route_label(rc, &r);

    if (rc == -ENOENT)
        return web_send_error(s, con, page, 404, "Not found", "casboxd has no page here.");
    if (rc != 0)
        return web_send_error(s, con, page, 400, "Bad request", detail);
    switch (r.kind) {
    case WEB_ROUTE_METRICS:
        rc = metrics_render(s->opt.metrics, &text, &len);
        if (rc != 0)
            return web_send(s, con, page, 500, NULL);
        b.data = text;
        b.len = len;
        return web_send_buf(s, con, page, 200, &b, "text/plain; version=0.0.4; charset=utf-8");
    case WEB_ROUTE_OVERVIEW:
    case WEB_ROUTE_HISTORY:
        rc = web_page_overview(&s->opt, &b, r.kind == WEB_ROUTE_HISTORY);
        break;
    case WEB_ROUTE_ACTION:
        instance = MHD_lookup_connection_value(con, MHD_GET_ARGUMENT_KIND, "instance");
        rc = web_page_action(&s->opt, &r.digest, instance ? instance : "", &b, &status);
        break;
    case WEB_ROUTE_DIR:
        rc = web_page_dir(&s->opt, &r.digest, &b, &status);
        break;
    case WEB_ROUTE_BLOB:
        return web_send_blob(s, con, &r);
    }
    if (rc != 0) {
        util_buf_free(&b);
        return web_send(s, con, page, 500, NULL);
    }
    return web_send_buf(s, con, page, status, &b, "text/html; charset=utf-8");
}

/* Appends one name, truncated; names past WEB_PEER_NAMES are dropped. */
static void web_peer_add_name(struct web_peer *peer, const char *v, size_t len)
{
    if (peer->n_names == WEB_PEER_NAMES || len == 0)
        return;
    if (len >= WEB_PEER_NAME_LEN)
        len = WEB_PEER_NAME_LEN - 1;
    memcpy(peer->names[peer->n_names], v, len);
    peer->names[peer->n_names][len] = '\0';
    peer->n_names++;
}

/* The DER certificate's CN, then its DNS, URI and e-mail SANs. */
static void web_peer_names(const gnutls_datum_t *der, struct web_peer *peer)
{
    gnutls_x509_crt_t crt;
    char v[WEB_PEER_NAME_LEN];
    size_t len = sizeof(v);

    if (gnutls_x509_crt_init(&crt) != 0)
        return;
    if (gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER) != 0)
        goto out;
    if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, v, &len) == 0)
        web_peer_add_name(peer, v, len);
    for (unsigned i = 0; peer->n_names < WEB_PEER_NAMES; i++) {
        len = sizeof(v);
        int type = gnutls_x509_crt_get_subject_alt_name(crt, i, v, &len, NULL);

        if (type == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
            break;
        if (type == GNUTLS_SAN_DNSNAME || type == GNUTLS_SAN_URI || type == GNUTLS_SAN_RFC822NAME)
            web_peer_add_name(peer, v, len);
    }
out:
    gnutls_x509_crt_deinit(crt);
}

/* The connection's client certificate chain verifies against [tls]
 * client_ca (libmicrohttpd loaded it as the session's trust list); its
 * names into peer. */
static bool web_peer_certificate(struct MHD_Connection *con, struct web_peer *peer)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(con, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    const gnutls_datum_t *chain;
    unsigned status = 0, n = 0;

    if (ci == NULL || ci->tls_session == NULL)
        return false;
    if (gnutls_certificate_verify_peers2((gnutls_session_t)ci->tls_session, &status) != 0 ||
        status != 0)
        return false; /* none, or not signed by client_ca */
    chain = gnutls_certificate_get_peers((gnutls_session_t)ci->tls_session, &n);
    if (chain == NULL || n == 0)
        return false;
    peer->has_certificate = true;
    web_peer_names(&chain[0], peer);
    return true;
}

static enum MHD_Result web_handle(void *cls, struct MHD_Connection *con, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct web_server *s = cls;
    struct web_peer peer;

    (void)version;
    (void)upload_data;
    if (*con_cls == NULL) {
        *con_cls = (void *)&web_req_headers; /* headers only: the body comes next */
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        *con_cls = (void *)&web_req_body; /* drop it; answered 413 below */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return web_send_error_with(s, con, "other", 405, "Method not allowed",
                                   "casboxd's pages answer GET and HEAD.", "Allow", "GET, HEAD");
    if (*con_cls == &web_req_body)
        return web_send_error(s, con, "other", 413, "Request body not accepted",
                              "casboxd's pages take no request body.");
    memset(&peer, 0, sizeof(peer));
    if (s->opt.tls_client_ca != NULL && !web_peer_certificate(con, &peer))
        return web_send_error(s, con, "other", 403, "Client certificate required",
                              "This listener takes requests with a client certificate signed by "
                              "casboxd's [tls] client_ca.");
    if (s->opt.authorize != NULL) {
        peer.authorization =
            MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (s->opt.authorize(s->opt.authorize_ctx, &peer) != 0)
            return web_send_error_with(
                s, con, "other", 401, "Unauthorized",
                "These pages need a token with read access (Authorization: Bearer).",
                "WWW-Authenticate", "Bearer realm=\"casboxd\"");
    }
    return web_dispatch(s, con, url);
}

static void web_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];

    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    LOG_D("http: %s", line);
}

/* "HOST:PORT" or "[V6]:PORT" -> a socket address. */
static int web_resolve(const char *listen, struct sockaddr_storage *addr, bool *v6)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    struct addrinfo hints, *res = NULL;
    size_t n;
    int rc;

    if (colon == NULL || colon[1] == '\0')
        return -EINVAL;
    n = (size_t)(colon - listen);
    if (n >= 2 && listen[0] == '[' && listen[n - 1] == ']') {
        listen++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(host))
        return -EINVAL;
    memcpy(host, listen, n);
    host[n] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || res == NULL)
        return -EINVAL;
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return 0;
}

static void web_server_free(struct web_server *s)
{
    free(s->tls_certificate);
    free(s->tls_private_key);
    free(s->tls_client_ca);
    free(s);
}

/* The TLS PEM texts copied into s (libmicrohttpd keeps the pointers). */
static int web_tls_copy(const struct web_options *opt, struct web_server *s)
{
    if (opt->tls_certificate == NULL)
        return 0;
    if (opt->tls_private_key == NULL)
        return -EINVAL;
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        return -ENOTSUP;
    s->tls_certificate = strdup(opt->tls_certificate);
    s->tls_private_key = strdup(opt->tls_private_key);
    s->tls_client_ca = opt->tls_client_ca ? strdup(opt->tls_client_ca) : NULL;
    if (s->tls_certificate == NULL || s->tls_private_key == NULL ||
        (opt->tls_client_ca != NULL && s->tls_client_ca == NULL))
        return -ENOMEM;
    return 0;
}

int web_server_start(const struct web_options *opt, struct web_server **out)
{
    struct web_server *s;
    struct sockaddr_storage addr;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    bool v6 = false;
    int rc;

    *out = NULL;
    rc = web_resolve(opt->listen, &addr, &v6);
    if (rc != 0)
        return LOG_ERRNO_E(rc, "[http] listen: '%s' is not HOST:PORT", opt->listen);
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    rc = web_tls_copy(opt, s);
    if (rc != 0) {
        web_server_free(s);
        return LOG_ERRNO_E(rc, "[http] cannot serve HTTPS on %s%s", opt->listen,
                           rc == -ENOTSUP ? " (this libmicrohttpd has no TLS)" : "");
    }
    s->opt = *opt;
    s->opt.tls_certificate = s->tls_certificate;
    s->opt.tls_private_key = s->tls_private_key;
    s->opt.tls_client_ca = s->tls_client_ca;
    s->requests = metrics_counter(opt->metrics, "casbox_http_requests_total",
                                  "HTTP requests answered, by page and status code.", "page,code");
    if (v6)
        flags |= MHD_USE_IPv6;
    if (s->tls_certificate != NULL)
        flags |= MHD_USE_TLS;
    /* The TLS options come last: without TLS (or without client_ca) an
     * MHD_OPTION_END takes the first one's place and the rest is not read. */
    s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, web_handle, s, MHD_OPTION_SOCK_ADDR,
                              (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)opt->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
                              (unsigned)opt->connection_timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                              (size_t)opt->request_bytes, MHD_OPTION_THREAD_POOL_SIZE,
                              (unsigned)opt->threads, MHD_OPTION_EXTERNAL_LOGGER, web_log, NULL,
                              s->tls_certificate ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END,
                              s->tls_certificate, MHD_OPTION_HTTPS_MEM_KEY, s->tls_private_key,
                              s->tls_client_ca ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END,
                              s->tls_client_ca, MHD_OPTION_END);
    if (s->mhd == NULL) {
        bool tls = s->tls_certificate != NULL;

        web_server_free(s);
        return LOG_ERRNO_E(-EADDRINUSE, "[http] cannot listen on %s%s", opt->listen,
                           tls ? " (or GnuTLS refused the [tls] files)" : "");
    }
    *out = s;
    return 0;
}

void web_server_stop(struct web_server *s)
{
    if (s == NULL)
        return;
    MHD_stop_daemon(s->mhd);
    web_server_free(s);
}
