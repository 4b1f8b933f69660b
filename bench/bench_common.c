/*
 * bench_common.c - clocks, statistics, digests, the private casboxd and the
 * gRPC client as the casbox benchmarks share them (see bench_common.h).
 */
#include "bench_common.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <malloc.h>
#include <math.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024 * 1024)

/* --- clocks, sizes, statistics --- */

int bench_parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint64_t mult = 1;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        return -1;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        mult = 1024;
        break;
    case 'm':
    case 'M':
        mult = 1024 * 1024;
        break;
    case 'g':
    case 'G':
        mult = 1024ULL * 1024 * 1024;
        break;
    default:
        return -1;
    }
    if (*end != '\0' && end[1] != '\0' && strcmp(end + 1, "iB") != 0 && strcmp(end + 1, "B") != 0)
        return -1;
    if (v > UINT64_MAX / mult)
        return -1;
    *out = (uint64_t)v * mult;
    return 0;
}

void bench_fill_random(void *buf, size_t len, uint64_t seed)
{
    uint8_t *p = buf;
    uint64_t x = seed;

    while (len > 0) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
        size_t n = len < 8 ? len : 8;

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        memcpy(p, &z, n);
        p += n;
        len -= n;
    }
}

uint64_t bench_random_u64(void)
{
    uint64_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

    if (fd < 0 || read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
        v = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(bench_now() * 1e9);
    if (fd >= 0)
        close(fd);
    return v;
}

void bench_tune_malloc(void)
{
    mallopt(M_MMAP_THRESHOLD, 64 * MIB);
    mallopt(M_TRIM_THRESHOLD, 512 * MIB);
}

/* --- digests --- */

static void bench_hex(const uint8_t *h, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[h[i] >> 4];
        out[2 * i + 1] = digits[h[i] & 15];
    }
    out[64] = '\0';
}

void bench_sha256(const void *buf, size_t len, struct bench_digest *out)
{
    uint8_t h[EVP_MAX_MD_SIZE];
    unsigned int hl = 0;

    if (EVP_Digest(buf, len, h, &hl, EVP_sha256(), NULL) != 1 || hl != 32) {
        fprintf(stderr, "bench: EVP_Digest(sha256) failed\n");
        abort();
    }
    bench_hex(h, out->hex);
    out->size = (int64_t)len;
}

void bench_digest_to_proto(const struct bench_digest *d, Digest *pd)
{
    build__bazel__remote__execution__v2__digest__init(pd);
    pd->hash = (char *)d->hex;
    pd->size_bytes = d->size;
}

int bench_pack(const ProtobufCMessage *msg, uint8_t **out, size_t *len, struct bench_digest *d)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);

    if (buf == NULL)
        return -1;
    protobuf_c_message_pack(msg, buf);
    if (d != NULL)
        bench_sha256(buf, n, d);
    *out = buf;
    *len = n;
    return 0;
}

/* --- the work directory and its watcher --- */

static int watcher_fd = -1; /* write end: the watcher reads the daemon's pid, then EOF */

static int rm_chmod_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type == FTW_D && (sb->st_mode & 0700) != 0700)
        chmod(path, (sb->st_mode & 07777) | 0700);
    return 0;
}

static int rm_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (type == FTW_DP)
        return rmdir(path) == 0 || errno == ENOENT ? 0 : -1;
    return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
}

int bench_rm_rf(const char *path)
{
    struct stat st;

    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    nftw(path, rm_chmod_cb, 64, FTW_PHYS);
    return nftw(path, rm_cb, 64, FTW_PHYS | FTW_DEPTH);
}

/* The watcher: waits for this process to exit (EOF on the pipe), then for
 * the daemon whose pid it was told, then removes the work directory. */
static void bench_watcher(int rfd, const char *dir)
{
    pid_t daemon_pid = 0, p;
    ssize_t n;

    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    while ((n = read(rfd, &p, sizeof(p))) != 0) {
        if (n == (ssize_t)sizeof(p))
            daemon_pid = p;
        else if (n < 0 && errno != EINTR)
            break;
    }
    for (int i = 0; daemon_pid > 0 && i < 600 && kill(daemon_pid, 0) == 0; i++)
        usleep(100 * 1000);
    bench_rm_rf(dir);
    _exit(0);
}

int bench_workdir_create(const char *parent, bool keep, char *out, size_t out_len)
{
    int p[2];
    pid_t pid;

    if (snprintf(out, out_len, "%s/casbox-bench.XXXXXX", parent) >= (int)out_len) {
        fprintf(stderr, "bench: work directory name too long\n");
        return -1;
    }
    if (mkdtemp(out) == NULL) {
        fprintf(stderr, "bench: mkdtemp %s: %s\n", out, strerror(errno));
        return -1;
    }
    if (keep)
        return 0;
    if (pipe2(p, O_CLOEXEC) != 0) {
        fprintf(stderr, "bench: pipe: %s\n", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "bench: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close(p[1]);
        bench_watcher(p[0], out);
    }
    close(p[0]);
    watcher_fd = p[1];
    return 0;
}

/* --- the private casboxd --- */

const char *bench_casboxd_path(const char *path, char *buf, size_t len)
{
    const char *env = getenv("CASBOXD");
    ssize_t n;
    char *slash;

    if (path != NULL && path[0] != '\0')
        return path;
    if (env != NULL && env[0] != '\0')
        return env;
    n = readlink("/proc/self/exe", buf, len - 1);
    if (n <= 0)
        return "casboxd";
    buf[n] = '\0';
    slash = strrchr(buf, '/');
    if (slash == NULL || (size_t)(slash - buf) + sizeof("/casboxd") > len)
        return "casboxd";
    strcpy(slash, "/casboxd");
    return buf;
}

static int bench_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port = -1;

    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* 1 when the log holds needle, 0 when not, -1 when it cannot be read. */
static int bench_log_has(const char *log, const char *needle)
{
    char line[4096];
    FILE *f = fopen(log, "r");
    int found = 0;

    if (f == NULL)
        return -1;
    while (!found && fgets(line, sizeof(line), f) != NULL)
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

void bench_daemon_log_tail(const struct bench_daemon *d, int lines)
{
    char cmd[PATH_MAX + 64];

    snprintf(cmd, sizeof(cmd), "tail -n %d '%s' >&2", lines, d->log);
    if (system(cmd) != 0)
        fprintf(stderr, "(cannot show %s)\n", d->log);
}

int bench_daemon_start(struct bench_daemon *d, const char *casboxd, const char *workdir,
                       char *const *extra, int n_extra)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->workdir, sizeof(d->workdir), "%s", workdir);
    snprintf(d->state, sizeof(d->state), "%s/state", workdir);
    snprintf(d->log, sizeof(d->log), "%s/casboxd.log", workdir);
    if (access(casboxd, X_OK) != 0) {
        fprintf(stderr,
                "bench: casboxd '%s' is not executable (%s): build it (scripts/build) or "
                "pass --casboxd PATH\n",
                casboxd, strerror(errno));
        return -1;
    }
    if (n_extra > BENCH_MAX_ARGS) {
        fprintf(stderr, "bench: too many daemon arguments\n");
        return -1;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        char listen[64], ready[96], port_s[16];
        char *argv[BENCH_MAX_ARGS + 8];
        pid_t parent = getpid(), pid;
        int argc = 0, status;
        double deadline;

        d->port = bench_free_port();
        if (d->port < 0) {
            fprintf(stderr, "bench: no free port: %s\n", strerror(errno));
            return -1;
        }
        snprintf(port_s, sizeof(port_s), "%d", d->port);
        snprintf(listen, sizeof(listen), "127.0.0.1:%d", d->port);
        snprintf(d->target, sizeof(d->target), "%s", listen);
        snprintf(ready, sizeof(ready), "casboxd: listening on %s", listen);
        argv[argc++] = (char *)casboxd;
        argv[argc++] = "--listen";
        argv[argc++] = listen;
        argv[argc++] = "--state-dir";
        argv[argc++] = d->state;
        for (int i = 0; i < n_extra; i++)
            argv[argc++] = extra[i];
        argv[argc] = NULL;

        unlink(d->log);
        fflush(NULL);
        pid = fork();
        if (pid < 0) {
            fprintf(stderr, "bench: fork: %s\n", strerror(errno));
            return -1;
        }
        if (pid == 0) {
            int null = open("/dev/null", O_RDONLY);
            int log = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent)
                _exit(127);
            if (null < 0 || log < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
                _exit(127);
            execv(casboxd, argv);
            dprintf(2, "bench: exec %s: %s\n", casboxd, strerror(errno));
            _exit(127);
        }
        d->pid = pid;
        deadline = bench_now() + 60;
        for (;;) {
            if (bench_log_has(d->log, ready) == 1) {
                if (watcher_fd >= 0 && write(watcher_fd, &pid, sizeof(pid)) != sizeof(pid))
                    fprintf(stderr, "bench: cannot tell the cleanup watcher the daemon pid\n");
                return 0;
            }
            if (waitpid(pid, &status, WNOHANG) == pid) {
                d->pid = 0;
                if (bench_log_has(d->log, "in use") == 1)
                    break; /* the port was taken meanwhile: try another */
                fprintf(stderr, "bench: casboxd exited (status 0x%x) before it was ready:\n",
                        status);
                bench_daemon_log_tail(d, 20);
                return -1;
            }
            if (bench_now() > deadline) {
                fprintf(stderr, "bench: casboxd printed no '%s' within 60 s\n", ready);
                bench_daemon_log_tail(d, 20);
                bench_daemon_stop(d);
                return -1;
            }
            usleep(10 * 1000);
        }
    }
    fprintf(stderr, "bench: could not start casboxd on a free port\n");
    return -1;
}

int bench_daemon_stop(struct bench_daemon *d)
{
    int status;
    double deadline;

    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    deadline = bench_now() + 30;
    for (;;) {
        pid_t r = waitpid(d->pid, &status, WNOHANG);

        if (r == d->pid)
            break;
        if (r < 0 && errno != EINTR) {
            d->pid = 0;
            return -1;
        }
        if (bench_now() > deadline) {
            fprintf(stderr, "bench: casboxd did not exit within 30 s of SIGTERM; killing it\n");
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &status, 0);
            d->pid = 0;
            return -1;
        }
        usleep(10 * 1000);
    }
    d->pid = 0;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* --- the gRPC client --- */

int bench_client_open(struct bench_client *c, const char *target, double timeout_s)
{
    struct rpc_client_options opt = {.timeout_ms = (uint64_t)(timeout_s * 1000)};
    char err[512];
    int rc;

    /* --target grpcs://...: CASBOX_TLS_CA, CASBOX_TOKEN_FILE, ... name the
     * CA, client certificate and token of a casboxd with [tls] and [auth]. */
    rpc_client_options_from_env(&opt);
    memset(c, 0, sizeof(*c));
    c->instance = "";
    rc = rpc_client_open(target, &opt, &c->rpc, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "bench: cannot open a channel: %s\n", rc == -EINVAL ? err : strerror(-rc));
        return -1;
    }
    return 0;
}

void bench_client_close(struct bench_client *c)
{
    rpc_client_close(c->rpc);
    c->rpc = NULL;
}

int bench_batch_update(struct bench_client *c, const struct bench_digest *digests,
                       const uint8_t *const *data, size_t n, struct rpc_client_status *st)
{
    BatchUpdateBlobsRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_UPDATE_BLOBS_REQUEST__INIT;
    BatchUpdateBlobsResponse *resp = NULL;
    BatchUpdateBlobsRequest_Request *entries = calloc(n + 1, sizeof(*entries));
    BatchUpdateBlobsRequest_Request **ptrs = calloc(n + 1, sizeof(*ptrs));
    Digest *pds = calloc(n + 1, sizeof(*pds));
    int rc = -1;

    if (entries == NULL || ptrs == NULL || pds == NULL) {
        st->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(st->message, sizeof(st->message), "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        build__bazel__remote__execution__v2__batch_update_blobs_request__request__init(&entries[i]);
        bench_digest_to_proto(&digests[i], &pds[i]);
        entries[i].digest = &pds[i];
        entries[i].data.len = (size_t)digests[i].size;
        entries[i].data.data = (uint8_t *)data[i];
        ptrs[i] = &entries[i];
    }
    req.instance_name = (char *)c->instance;
    req.n_requests = n;
    req.requests = ptrs;
    if (rpc_client_unary(
            c->rpc, RPC_CLIENT_BATCH_UPDATE_BLOBS, &req.base,
            &build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
            (ProtobufCMessage **)&resp, st) != 0)
        goto out;
    if (resp->n_responses != n) {
        st->code = GRPC_STATUS_INTERNAL;
        snprintf(st->message, sizeof(st->message), "BatchUpdateBlobs: %zu responses for %zu blobs",
                 resp->n_responses, n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const Google__Rpc__Status *s = resp->responses[i]->status;

        if (s != NULL && s->code != 0) {
            st->code = (grpc_status_code)s->code;
            snprintf(st->message, sizeof(st->message), "BatchUpdateBlobs blob %zu: %s", i,
                     s->message ? s->message : "");
            goto out;
        }
    }
    rc = 0;
out:
    if (resp != NULL)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    free(entries);
    free(ptrs);
    free(pds);
    return rc;
}

int bench_check_server(struct bench_client *c, const char *who, bool *exec_enabled)
{
    Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest req =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_CAPABILITIES_REQUEST__INIT;
    Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps = NULL;
    struct rpc_client_status st;

    req.instance_name = (char *)c->instance;
    if (rpc_client_unary(c->rpc, RPC_CLIENT_GET_CAPABILITIES, &req.base,
                         &build__bazel__remote__execution__v2__server_capabilities__descriptor,
                         (ProtobufCMessage **)&caps, &st) != 0) {
        fprintf(stderr, "%s: GetCapabilities failed: status %d: %s\n", who, st.code, st.message);
        return -1;
    }
    *exec_enabled =
        caps->execution_capabilities != NULL && caps->execution_capabilities->exec_enabled;
    protobuf_c_message_free_unpacked(&caps->base, NULL);
    return 0;
}

/* --- ByteStream.Write --- */

static size_t bench_put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    do {
        p[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        p[n] |= v ? 0x80 : 0;
        n++;
    } while (v);
    return n;
}

static void bench_noop_destroy(void *p)
{
    (void)p;
}

static void bench_make_uuid(char out[37])
{
    uint64_t a = bench_random_u64(), b = bench_random_u64();

    snprintf(out, 37, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)((a >> 16) & 0xffff), (unsigned)(a & 0xfff),
             (unsigned)(0x8000 | ((b >> 48) & 0x3fff)),
             (unsigned long long)(b & 0xffffffffffffULL));
}

int bench_bytestream_write(struct bench_client *c, const struct bench_digest *d, bool zstd,
                           const uint8_t *data, size_t len, size_t chunk,
                           struct rpc_client_status *st)
{
    char name[512], uuid[37];
    Google__Bytestream__WriteResponse *resp = NULL;
    size_t name_len, off = 0, size = len;
    struct rpc_client_writer *w;
    int rc = -1;
    bool first = true;

    bench_make_uuid(uuid);
    name_len = (size_t)snprintf(name, sizeof(name), "%s%suploads/%s/%s/%s/%" PRId64, c->instance,
                                c->instance[0] ? "/" : "", uuid,
                                zstd ? "compressed-blobs/zstd" : "blobs", d->hex, d->size);
    if (rpc_client_writer_start(c->rpc, RPC_CLIENT_BYTESTREAM_WRITE, &w) != 0) {
        st->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(st->message, sizeof(st->message), "Write: cannot start the call");
        return -1;
    }
    for (;;) {
        size_t n = size - off < chunk ? size - off : chunk;
        bool last = off + n == size;
        uint8_t hdr[sizeof(name) + 64];
        size_t h = 0;
        grpc_slice slices[2];

        if (first) {
            hdr[h++] = 0x0a; /* resource_name = 1 */
            h += bench_put_varint(hdr + h, name_len);
            memcpy(hdr + h, name, name_len);
            h += name_len;
        }
        if (off > 0) {
            hdr[h++] = 0x10; /* write_offset = 2 */
            h += bench_put_varint(hdr + h, off);
        }
        if (last) {
            hdr[h++] = 0x18; /* finish_write = 3 */
            hdr[h++] = 1;
        }
        if (n > 0) {
            hdr[h++] = 0x52; /* data = 10 */
            h += bench_put_varint(hdr + h, n);
        }
        slices[0] = grpc_slice_from_copied_buffer((const char *)hdr, h);
        if (n > 0)
            slices[1] = grpc_slice_new((void *)(data + off), n, bench_noop_destroy);
        if (rpc_client_writer_send(w, slices, n > 0 ? 2 : 1, last) != 0)
            break; /* the server ended the call: its status says why */
        first = false;
        off += n;
        if (last)
            break;
    }
    if (rpc_client_writer_finish(w, &google__bytestream__write_response__descriptor,
                                 (ProtobufCMessage **)&resp, st) != 0)
        goto out;
    if (resp->committed_size != (int64_t)size || off != size) {
        st->code = GRPC_STATUS_INTERNAL;
        snprintf(st->message, sizeof(st->message),
                 "Write: sent %zu of %zu bytes, committed_size %" PRId64, off, size,
                 resp->committed_size);
        goto out;
    }
    rc = 0;
out:
    if (resp != NULL)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}
