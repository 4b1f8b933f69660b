/*
 * exec_bench.c - end-to-end latency of Execute on casboxd over gRPC on
 * loopback, beside the same commands run by plain fork+exec (from a helper),
 * measured in the same run.
 *
 * Each action is `/bin/sh -c 'echo casbox-bench-<run>-<n>'` with an empty
 * environment and an empty input root, do_not_cache, and sent with
 * skip_cache_lookup: a distinct n per action, so neither the action cache
 * nor the server's merging of identical in-flight actions answers. Commands
 * and Actions are uploaded first (not timed); then each Execute is timed
 * from the call to the final (done) Operation on its stream.
 *
 *   sequential   one action at a time, remote and local interleaved so that
 *                the noise of a shared machine falls on both alike
 *   in flight    --inflight K actions at once (K Execute streams on one
 *                channel; K fork+exec children)
 *
 * The local runs are made by a helper process forked before grpc_init: a
 * fork in the gRPC client itself would leave every page of it copy-on-write,
 * and the client's next Execute would pay for the page faults (about 2.5 ms
 * on a PVM guest), which is the benchmark's cost, not casboxd's.
 *
 * Every ExecuteResponse must have status OK, exit code 0 and the expected
 * stdout; every local run exit 0 with the expected output. Failures are
 * counted and printed, and make the exit status non-zero: figures measured
 * over errors are worthless. The median and p99 per action are printed,
 * with their ratio to the baseline, and casboxd's own step timings from
 * ExecutedActionMetadata. "The rest" (the client's latency minus queued ..
 * worker completed) is split by the host's wall clock into its two ends:
 * the call's start to queued (gRPC in, loading the action) and worker
 * completed to the done Operation (clean-up, the hand-off to the stream,
 * gRPC out).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "google/longrunning/operations.pb-c.h"
#include "google/protobuf/duration.pb-c.h"

#define MAX_SHOWN_FAILURES 10

enum step { S_QUEUED, S_FETCH, S_EXEC, S_UPLOAD, S_WORKER, S_REST, S_BEFORE, S_AFTER, S_COUNT };
static const char *const step_names[S_COUNT] = {
    "queued",
    "input fetch",
    "execution",
    "output upload",
    "worker total",
    "the rest (gRPC, loading the action, streaming)",
    "of which call to queued",
    "worker done to the done Operation",
};

struct item {
    size_t idx;
    char text[96]; /* what the action echoes */
    char *argv[4];
    struct bench_digest action, command, out; /* out: digest of text + "\n" */
    uint8_t *action_buf, *command_buf;
    size_t action_len, command_len;
    /* results */
    double latency;          /* seconds; < 0 when it failed */
    double wall0, wall_done; /* CLOCK_REALTIME seconds: call started, done Operation */
    double step[S_COUNT];
    bool have_steps;
};

struct options {
    const char *casboxd;
    const char *target;
    const char *dir;
    size_t actions;
    size_t inflight;
    size_t warmup;
    bool keep;
    char *daemon_args[BENCH_MAX_ARGS];
    int n_daemon_args;
};

static int failures;
static pid_t daemon_pid;

static void failure(const struct item *it, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void failure(const struct item *it, const char *fmt, ...)
{
    va_list ap;

    failures++;
    if (failures > MAX_SHOWN_FAILURES) {
        if (failures == MAX_SHOWN_FAILURES + 1)
            fprintf(stderr, "exec_bench: (more failures not shown)\n");
        return;
    }
    fprintf(stderr, "exec_bench: FAILED: action %zu (%s): ", it ? it->idx : 0, it ? it->text : "-");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* --- building and uploading the actions --- */

static int item_build(struct item *it, size_t idx, uint64_t run, const Digest *empty_root)
{
    Command cmd = BUILD__BAZEL__REMOTE__EXECUTION__V2__COMMAND__INIT;
    Action act = BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION__INIT;
    Google__Protobuf__Duration timeout = GOOGLE__PROTOBUF__DURATION__INIT;
    Digest cmd_pd;
    char script[128], out[128];

    memset(it, 0, sizeof(*it));
    it->idx = idx;
    it->latency = -1;
    snprintf(it->text, sizeof(it->text), "casbox-bench-%016" PRIx64 "-%zu", run, idx);
    snprintf(script, sizeof(script), "echo %s", it->text);
    it->argv[0] = "/bin/sh";
    it->argv[1] = "-c";
    it->argv[2] = strdup(script);
    it->argv[3] = NULL;
    if (it->argv[2] == NULL)
        return -1;
    snprintf(out, sizeof(out), "%s\n", it->text);
    bench_sha256(out, strlen(out), &it->out);

    cmd.n_arguments = 3;
    cmd.arguments = it->argv;
    if (bench_pack(&cmd.base, &it->command_buf, &it->command_len, &it->command) != 0)
        return -1;
    bench_digest_to_proto(&it->command, &cmd_pd);
    act.command_digest = &cmd_pd;
    act.input_root_digest = (Digest *)empty_root;
    timeout.seconds = 60;
    act.timeout = &timeout;
    act.do_not_cache = 1;
    return bench_pack(&act.base, &it->action_buf, &it->action_len, &it->action);
}

static void item_free(struct item *it)
{
    free(it->argv[2]);
    free(it->action_buf);
    free(it->command_buf);
}

/* Uploads every Command and Action, and the empty input root. */
static int upload_items(struct bench_client *c, struct item *items, size_t n,
                        const struct bench_digest *empty)
{
    size_t cap = 2 * n + 1, k = 0;
    struct bench_digest *dg = calloc(cap, sizeof(*dg));
    const uint8_t **data = calloc(cap, sizeof(*data));
    struct rpc_client_status st;
    int rc = 0;

    if (dg == NULL || data == NULL) {
        rc = -1;
        goto out;
    }
    dg[k] = *empty;
    data[k++] = (const uint8_t *)"";
    for (size_t i = 0; i < n; i++) {
        dg[k] = items[i].command;
        data[k++] = items[i].command_buf;
        dg[k] = items[i].action;
        data[k++] = items[i].action_buf;
    }
    for (size_t i = 0; i < k && rc == 0; i += 1000) {
        size_t m = k - i < 1000 ? k - i : 1000;

        if (bench_batch_update(c, dg + i, data + i, m, &st) != 0) {
            fprintf(stderr, "exec_bench: uploading the actions failed: status %d: %s\n", st.code,
                    st.message);
            rc = -1;
        }
    }
out:
    free(dg);
    free(data);
    return rc;
}

/* --- Execute over gRPC: K streams at once, read together --- */

struct exec_call {
    struct item *it;
    bool done_seen;
    bool failed;
    double t0;
};

/* CLOCK_REALTIME seconds, to compare with casboxd's timestamps. */
static double bench_wall_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double ts_diff_ms(const Google__Protobuf__Timestamp *a, const Google__Protobuf__Timestamp *b)
{
    if (a == NULL || b == NULL)
        return NAN;
    return (double)(b->seconds - a->seconds) * 1e3 + (double)(b->nanos - a->nanos) / 1e6;
}

static double ts_seconds(const Google__Protobuf__Timestamp *t)
{
    return t == NULL ? NAN : (double)t->seconds + (double)t->nanos / 1e9;
}

static void take_steps(struct item *it, const ExecutedActionMetadata *md)
{
    if (md == NULL)
        return;
    it->step[S_QUEUED] = ts_diff_ms(md->queued_timestamp, md->worker_start_timestamp);
    it->step[S_FETCH] =
        ts_diff_ms(md->input_fetch_start_timestamp, md->input_fetch_completed_timestamp);
    it->step[S_EXEC] = ts_diff_ms(md->execution_start_timestamp, md->execution_completed_timestamp);
    it->step[S_UPLOAD] =
        ts_diff_ms(md->output_upload_start_timestamp, md->output_upload_completed_timestamp);
    it->step[S_WORKER] = ts_diff_ms(md->worker_start_timestamp, md->worker_completed_timestamp);
    /* What the client saw beyond queued..worker done (same host clock). */
    it->step[S_REST] = ts_diff_ms(md->queued_timestamp, md->worker_completed_timestamp);
    it->step[S_REST] = it->latency * 1e3 - it->step[S_REST]; /* NAN stays NAN */
    /* The two ends of the rest, by the client's wall clock (same host). */
    it->step[S_BEFORE] = (ts_seconds(md->queued_timestamp) - it->wall0) * 1e3;
    it->step[S_AFTER] = (it->wall_done - ts_seconds(md->worker_completed_timestamp)) * 1e3;
    it->have_steps = true;
}

/* Checks the final Operation: an ExecuteResponse with status OK, exit code 0
 * and the expected stdout. */
static void check_done(struct exec_call *ec, const Operation *op)
{
    static const char suffix[] = "build.bazel.remote.execution.v2.ExecuteResponse";
    struct item *it = ec->it;
    ExecuteResponse *resp;
    const Build__Bazel__Remote__Execution__V2__ActionResult *r;
    size_t tl;

    if (op->result_case == GOOGLE__LONGRUNNING__OPERATION__RESULT_ERROR) {
        failure(it, "operation error %d: %s", op->error ? op->error->code : -1,
                op->error && op->error->message ? op->error->message : "");
        ec->failed = true;
        return;
    }
    if (op->result_case != GOOGLE__LONGRUNNING__OPERATION__RESULT_RESPONSE ||
        op->response == NULL || op->response->type_url == NULL ||
        (tl = strlen(op->response->type_url)) < sizeof(suffix) - 1 ||
        strcmp(op->response->type_url + tl - (sizeof(suffix) - 1), suffix) != 0) {
        failure(it, "done Operation without an ExecuteResponse");
        ec->failed = true;
        return;
    }
    resp = build__bazel__remote__execution__v2__execute_response__unpack(
        NULL, op->response->value.len, op->response->value.data);
    if (resp == NULL) {
        failure(it, "ExecuteResponse does not parse");
        ec->failed = true;
        return;
    }
    r = resp->result;
    if (resp->status != NULL && resp->status->code != 0) {
        failure(it, "ExecuteResponse status %d: %s", resp->status->code,
                resp->status->message ? resp->status->message : "");
        ec->failed = true;
    } else if (r == NULL) {
        failure(it, "ExecuteResponse has no result");
        ec->failed = true;
    } else if (r->exit_code != 0) {
        failure(it, "exit code %d", r->exit_code);
        ec->failed = true;
    } else if (!(r->stdout_raw.len == strlen(it->text) + 1 &&
                 memcmp(r->stdout_raw.data, it->text, strlen(it->text)) == 0) &&
               !(r->stdout_digest != NULL && r->stdout_digest->hash != NULL &&
                 strcmp(r->stdout_digest->hash, it->out.hex) == 0 &&
                 r->stdout_digest->size_bytes == it->out.size)) {
        failure(it, "stdout is not '%s\\n' (digest %s/%" PRId64 ")", it->text,
                r->stdout_digest && r->stdout_digest->hash ? r->stdout_digest->hash : "none",
                r->stdout_digest ? r->stdout_digest->size_bytes : 0);
        ec->failed = true;
    } else {
        take_steps(it, r->execution_metadata);
    }
    build__bazel__remote__execution__v2__execute_response__free_unpacked(resp, NULL);
}

/* Starts the Execute of it in streams; NULL (the failure counted) when it
 * could not start. */
static struct exec_call *exec_start(struct bench_client *c, struct rpc_client_streams *streams,
                                    struct item *it)
{
    ExecuteRequest req = BUILD__BAZEL__REMOTE__EXECUTION__V2__EXECUTE_REQUEST__INIT;
    struct exec_call *ec = calloc(1, sizeof(*ec));
    Digest pd;

    if (ec == NULL) {
        failure(it, "out of memory");
        return NULL;
    }
    ec->it = it;
    bench_digest_to_proto(&it->action, &pd);
    req.instance_name = (char *)c->instance;
    req.skip_cache_lookup = 1;
    req.action_digest = &pd;
    ec->t0 = bench_now();
    it->wall0 = bench_wall_now();
    if (rpc_client_stream_start(streams, RPC_CLIENT_EXECUTE, &req.base, ec) != 0) {
        failure(it, "cannot start the Execute call");
        free(ec);
        return NULL;
    }
    return ec;
}

/* One Operation of ec's stream: the first done one stops the clock. */
static void exec_message(struct exec_call *ec, grpc_byte_buffer *message)
{
    Operation *op =
        (Operation *)rpc_message_unpack(message, &google__longrunning__operation__descriptor);

    if (op == NULL) {
        failure(ec->it, "Operation does not parse");
        ec->failed = true;
        return;
    }
    if (op->done && !ec->done_seen) {
        ec->done_seen = true;
        ec->it->latency = bench_now() - ec->t0;
        ec->it->wall_done = bench_wall_now();
        check_done(ec, op);
    }
    protobuf_c_message_free_unpacked(&op->base, NULL);
}

static void exec_finish(struct exec_call *ec, const struct rpc_client_status *st)
{
    struct item *it = ec->it;

    if (!ec->failed) {
        if (st->code != GRPC_STATUS_OK) {
            failure(it, "Execute status %d: %s", st->code, st->message);
        } else if (!ec->done_seen) {
            failure(it, "Execute stream ended without a done Operation");
        }
    }
    if (ec->failed || st->code != GRPC_STATUS_OK || !ec->done_seen)
        it->latency = -1;
    free(ec);
}

/* Executes items[0..n) with at most k in flight; returns the wall time. */
static double run_remote(struct bench_client *c, struct item *items, size_t n, size_t k)
{
    struct rpc_client_streams *streams;
    struct rpc_client_stream_event ev;
    size_t next = 0, inflight = 0;
    double t0;

    if (rpc_client_streams_create(c->rpc, &streams) != 0) {
        failure(NULL, "out of memory");
        return 0;
    }
    t0 = bench_now();
    while (next < n || inflight > 0) {
        while (inflight < k && next < n) {
            if (exec_start(c, streams, &items[next++]) != NULL)
                inflight++;
        }
        if (inflight == 0 || rpc_client_streams_next(streams, &ev) != 1)
            continue;
        if (ev.message != NULL) {
            exec_message(ev.user, ev.message);
        } else {
            exec_finish(ev.user, &ev.status);
            inflight--;
        }
    }
    t0 = bench_now() - t0;
    rpc_client_streams_destroy(streams);
    return t0;
}

/* --- the baseline: fork + exec of the same commands --- */

struct child {
    pid_t pid;
    int fd;
    double t0;
    struct item *it;
};

static int spawn(struct child *ch, struct item *it)
{
    static char *const envp[] = {NULL};
    int p[2];

    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    ch->it = it;
    ch->t0 = bench_now();
    ch->pid = fork();
    if (ch->pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (ch->pid == 0) {
        int null = open("/dev/null", O_RDWR);

        if (null < 0 || dup2(null, 0) < 0 || dup2(p[1], 1) < 0 || dup2(null, 2) < 0)
            _exit(126);
        execve(it->argv[0], it->argv, envp);
        _exit(127);
    }
    close(p[1]);
    ch->fd = p[0];
    return 0;
}

/* Runs items[0..n) by fork+exec with at most k at once; returns wall time. */
static double run_local(struct item *items, size_t n, size_t k)
{
    struct child *kids = calloc(k, sizeof(*kids));
    size_t next = 0, running = 0;
    double t0 = bench_now();

    if (kids == NULL) {
        failure(NULL, "out of memory");
        return 0;
    }
    while (next < n || running > 0) {
        int status;
        pid_t pid;
        size_t slot;

        while (running < k && next < n) {
            for (slot = 0; kids[slot].pid != 0; slot++)
                ;
            if (spawn(&kids[slot], &items[next]) != 0) {
                failure(&items[next], "fork: %s", strerror(errno));
                kids[slot].pid = 0;
            } else {
                running++;
            }
            next++;
        }
        if (running == 0)
            break;
        pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            failure(NULL, "waitpid: %s", strerror(errno));
            break;
        }
        for (slot = 0; slot < k && kids[slot].pid != pid; slot++)
            ;
        if (slot == k) {
            if (pid == daemon_pid) {
                failure(NULL, "casboxd exited (status 0x%x)", status);
                daemon_pid = -1;
            }
            continue;
        }
        {
            struct child *ch = &kids[slot];
            double lat = bench_now() - ch->t0;
            char out[256];
            ssize_t got = read(ch->fd, out, sizeof(out) - 1);
            size_t tl = strlen(ch->it->text);

            close(ch->fd);
            ch->pid = 0;
            running--;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                failure(ch->it, "local run: status 0x%x", status);
            } else if (got != (ssize_t)tl + 1 || memcmp(out, ch->it->text, tl) != 0) {
                failure(ch->it, "local run: unexpected output");
            } else {
                ch->it->latency = lat;
            }
        }
    }
    free(kids);
    return bench_now() - t0;
}

/* --- the local runner: a helper process that does the fork+exec --- */

struct local_runner {
    pid_t pid;
    int req_fd, resp_fd; /* ours: requests out, results in */
};

struct local_req {
    size_t first, n, k;
};

static int fd_read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t got = read(fd, p, len);

        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        p += got;
        len -= (size_t)got;
    }
    return 0;
}

static int fd_write_full(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t put = write(fd, p, len);

        if (put < 0 && errno == EINTR)
            continue;
        if (put <= 0)
            return -1;
        p += put;
        len -= (size_t)put;
    }
    return 0;
}

/* The helper's loop: a request names items[first..first+n) and k; the answer
 * is the wall time, the failures counted and the n latencies. */
static void local_runner_main(struct item *items, size_t total, int req_fd, int resp_fd)
{
    struct local_req rq;

    while (fd_read_full(req_fd, &rq, sizeof(rq)) == 0) {
        int before = failures;
        double wall;

        if (rq.first > total || rq.n > total - rq.first)
            break;
        wall = run_local(items + rq.first, rq.n, rq.k);
        before = failures - before;
        if (fd_write_full(resp_fd, &wall, sizeof(wall)) != 0 ||
            fd_write_full(resp_fd, &before, sizeof(before)) != 0)
            break;
        for (size_t i = 0; i < rq.n; i++) {
            if (fd_write_full(resp_fd, &items[rq.first + i].latency, sizeof(double)) != 0)
                _exit(1);
        }
    }
    _exit(0);
}

/* Forks the helper; call before grpc_init, with items built. */
static int local_runner_start(struct local_runner *lr, struct item *items, size_t total)
{
    int req[2], resp[2];

    if (pipe2(req, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(resp, O_CLOEXEC) != 0) {
        close(req[0]);
        close(req[1]);
        return -1;
    }
    fflush(NULL);
    lr->pid = fork();
    if (lr->pid < 0) {
        close(req[0]);
        close(req[1]);
        close(resp[0]);
        close(resp[1]);
        return -1;
    }
    if (lr->pid == 0) {
        close(req[1]);
        close(resp[0]);
        local_runner_main(items, total, req[0], resp[1]);
    }
    close(req[0]);
    close(resp[1]);
    lr->req_fd = req[1];
    lr->resp_fd = resp[0];
    return 0;
}

/* run_local in the helper; the latencies land in items[0..n). */
static double local_runner_run(struct local_runner *lr, struct item *all, struct item *items,
                               size_t n, size_t k)
{
    struct local_req rq = {(size_t)(items - all), n, k};
    double wall = 0;
    int failed = 0;

    if (fd_write_full(lr->req_fd, &rq, sizeof(rq)) != 0 ||
        fd_read_full(lr->resp_fd, &wall, sizeof(wall)) != 0 ||
        fd_read_full(lr->resp_fd, &failed, sizeof(failed)) != 0)
        goto broken;
    failures += failed;
    for (size_t i = 0; i < n; i++) {
        if (fd_read_full(lr->resp_fd, &items[i].latency, sizeof(double)) != 0)
            goto broken;
    }
    return wall;
broken:
    failure(NULL, "the local runner process died");
    return 0;
}

static void local_runner_stop(struct local_runner *lr)
{
    if (lr->pid <= 0)
        return;
    close(lr->req_fd);
    close(lr->resp_fd);
    while (waitpid(lr->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    lr->pid = 0;
}

/* --- figures --- */

struct stats {
    size_t ok;
    double median, p99, mean;
};

static struct stats latency_stats(const struct item *items, size_t n)
{
    struct stats s = {0};
    double *v = calloc(n + 1, sizeof(*v));
    double sum = 0;

    if (v == NULL)
        return s;
    for (size_t i = 0; i < n; i++) {
        if (items[i].latency >= 0) {
            v[s.ok++] = items[i].latency * 1e3;
            sum += items[i].latency * 1e3;
        }
    }
    if (s.ok > 0) {
        s.median = bench_percentile(v, s.ok, 50);
        s.p99 = bench_percentile(v, s.ok, 99);
        s.mean = sum / (double)s.ok;
    }
    free(v);
    return s;
}

static void print_row(const char *name, const struct stats *s, size_t n, double wall)
{
    printf("  %-28s %9.2f %9.2f %9.2f %10.1f", name, s->median, s->p99, s->mean,
           wall > 0 ? (double)s->ok / wall : 0);
    if (s->ok != n)
        printf("   (%zu of %zu ok)", s->ok, n);
    printf("\n");
}

static void print_ratio(const struct stats *remote, const struct stats *local, double wr, double wl)
{
    if (local->median <= 0 || remote->median <= 0)
        return;
    printf("  %-28s %8.2fx %8.2fx %8.2fx %9.2fx\n", "ratio Execute / fork+exec",
           remote->median / local->median, remote->p99 / local->p99, remote->mean / local->mean,
           wl > 0 && wr > 0 ? wr / wl : 0);
}

static void print_steps(const struct item *items, size_t n)
{
    double *v = calloc(n + 1, sizeof(*v));
    size_t have = 0;

    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        have += items[i].have_steps;
    if (have == 0) {
        printf("  (no ExecutedActionMetadata in the results)\n");
        free(v);
        return;
    }
    printf("  where an Execute's time goes, median ms (casboxd's ExecutedActionMetadata):\n   ");
    for (int s = 0; s < S_COUNT; s++) {
        size_t m = 0;

        for (size_t i = 0; i < n; i++) {
            if (items[i].have_steps && items[i].latency >= 0 && !isnan(items[i].step[s]))
                v[m++] = items[i].step[s];
        }
        if (m > 0)
            printf("%s %s %.2f",
                   s == 0          ? ""
                   : s == S_REST   ? "\n   "
                   : s == S_BEFORE ? ";"
                                   : ",",
                   step_names[s], bench_percentile(v, m, 50));
    }
    printf("\n");
    free(v);
}

/* --- main --- */

static void usage(FILE *f)
{
    fprintf(f, "usage: exec_bench [options]\n"
               "\n"
               "Latency of Execute on casboxd (trivial actions, empty input root) beside\n"
               "plain fork+exec of the same commands.\n"
               "\n"
               "  --casboxd PATH      daemon to start (default $CASBOXD, else beside this binary)\n"
               "  --target HOST:PORT  use a running server instead\n"
               "  --dir DIR           where the work dir goes (default $TMPDIR or /tmp)\n"
               "  --actions N         actions per phase (default 200)\n"
               "  --inflight K        actions at once in the second phase (default 8)\n"
               "  --warmup N          untimed actions first (default 5)\n"
               "  --daemon-arg ARG    extra casboxd argument (repeatable)\n"
               "  --keep              keep the work dir (state, daemon log)\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
    enum { O_CASBOXD = 256, O_TARGET, O_DIR, O_ACTIONS, O_INFLIGHT, O_WARMUP, O_DARG, O_KEEP };
    static const struct option opts[] = {
        {"casboxd", required_argument, NULL, O_CASBOXD},
        {"target", required_argument, NULL, O_TARGET},
        {"dir", required_argument, NULL, O_DIR},
        {"actions", required_argument, NULL, O_ACTIONS},
        {"inflight", required_argument, NULL, O_INFLIGHT},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"daemon-arg", required_argument, NULL, O_DARG},
        {"keep", no_argument, NULL, O_KEEP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *tmp = getenv("TMPDIR");
    int opt;

    memset(o, 0, sizeof(*o));
    o->dir = tmp && tmp[0] ? tmp : "/tmp";
    o->actions = 200;
    o->inflight = 8;
    o->warmup = 5;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        uint64_t v = 0;

        if (opt >= O_ACTIONS && opt <= O_WARMUP &&
            (bench_parse_size(optarg, &v) != 0 || v > 1000000)) {
            fprintf(stderr, "exec_bench: bad number '%s'\n", optarg);
            return -1;
        }
        switch (opt) {
        case O_CASBOXD:
            o->casboxd = optarg;
            break;
        case O_TARGET:
            o->target = optarg;
            break;
        case O_DIR:
            o->dir = optarg;
            break;
        case O_ACTIONS:
            o->actions = v;
            break;
        case O_INFLIGHT:
            o->inflight = v;
            break;
        case O_WARMUP:
            o->warmup = v;
            break;
        case O_DARG:
            if (o->n_daemon_args >= BENCH_MAX_ARGS) {
                fprintf(stderr, "exec_bench: too many --daemon-arg\n");
                return -1;
            }
            o->daemon_args[o->n_daemon_args++] = optarg;
            break;
        case O_KEEP:
            o->keep = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc || o->actions < 1 || o->inflight < 1 || o->inflight > 1024) {
        usage(stderr);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;
    struct bench_daemon daemon = {0};
    struct bench_client client = {0};
    struct local_runner runner = {0};
    struct bench_digest empty;
    Digest empty_pd;
    char workdir[PATH_MAX], exe[PATH_MAX];
    const char *target;
    struct item *items = NULL, *warm, *seq_r, *seq_l, *par_r, *par_l;
    size_t total;
    uint64_t run = bench_random_u64();
    double load0 = bench_loadavg(), t_start = bench_now();
    bool enabled = false;
    int rc;

    if (parse_args(argc, argv, &o) != 0)
        return 2;
    bench_tune_malloc();
    total = o.warmup * 2 + o.actions * 4;
    if (bench_workdir_create(o.dir, o.keep, workdir, sizeof(workdir)) != 0)
        return 1;
    if (o.target == NULL) {
        const char *casboxd = bench_casboxd_path(o.casboxd, exe, sizeof(exe));

        if (bench_daemon_start(&daemon, casboxd, workdir, o.daemon_args, o.n_daemon_args) != 0)
            return 1;
        daemon_pid = daemon.pid;
        target = daemon.target;
    } else {
        target = o.target;
    }

    /* warmup (remote, local), then 4 disjoint sets: sequential remote and
     * local, in-flight remote and local. Built before the local runner is
     * forked (it runs its copy), which is before grpc_init. */
    items = calloc(total, sizeof(*items));
    if (items == NULL) {
        fprintf(stderr, "exec_bench: out of memory\n");
        failures++;
    }
    bench_sha256("", 0, &empty);
    bench_digest_to_proto(&empty, &empty_pd);
    for (size_t i = 0; items != NULL && i < total && failures == 0; i++) {
        if (item_build(&items[i], i, run, &empty_pd) != 0) {
            fprintf(stderr, "exec_bench: out of memory\n");
            failures++;
        }
    }
    if (failures == 0 && local_runner_start(&runner, items, total) != 0) {
        fprintf(stderr, "exec_bench: cannot fork the local runner: %s\n", strerror(errno));
        failures++;
    }
    if (failures > 0)
        goto out;
    if (bench_client_open(&client, target, 300) != 0) {
        failures++;
        goto out;
    }
    if (bench_check_server(&client, "exec_bench", &enabled) != 0) {
        failures++;
        goto out;
    }
    if (!enabled) {
        fprintf(stderr, "exec_bench: %s does not advertise execution (exec_enabled false)\n",
                target);
        failures++;
        goto out;
    }

    warm = items;
    seq_r = warm + 2 * o.warmup;
    seq_l = seq_r + o.actions;
    par_r = seq_l + o.actions;
    par_l = par_r + o.actions;
    if (upload_items(&client, items, total, &empty) != 0) {
        failures++;
        goto out;
    }
    printf("exec_bench: server %s%s, %ld CPUs, load %.2f at start\n", target,
           o.target               ? ""
           : o.n_daemon_args == 0 ? " (private casboxd, default execution slots = CPUs)"
                                  : " (private casboxd)",
           sysconf(_SC_NPROCESSORS_ONLN), load0);
    printf("actions: /bin/sh -c 'echo <unique>', empty env and input root, do_not_cache, "
           "skip_cache_lookup\n");
    fflush(stdout);

    fprintf(stderr, "exec_bench: %zu warm-up actions...\n", o.warmup);
    run_remote(&client, warm, o.warmup, 1);
    local_runner_run(&runner, items, warm + o.warmup, o.warmup, 1);
    if (failures > 0)
        goto out;

    fprintf(stderr, "exec_bench: %zu actions one at a time...\n", o.actions);
    double wall_sr = 0, wall_sl = 0;
    for (size_t i = 0; i < o.actions; i++) {
        wall_sr += run_remote(&client, &seq_r[i], 1, 1);
        wall_sl += local_runner_run(&runner, items, &seq_l[i], 1, 1);
    }
    fprintf(stderr, "exec_bench: %zu actions, %zu in flight...\n", o.actions, o.inflight);
    double wall_pr = run_remote(&client, par_r, o.actions, o.inflight);
    double wall_pl = local_runner_run(&runner, items, par_l, o.actions, o.inflight);

    struct stats s_sr = latency_stats(seq_r, o.actions), s_sl = latency_stats(seq_l, o.actions);
    struct stats s_pr = latency_stats(par_r, o.actions), s_pl = latency_stats(par_l, o.actions);

    printf("\n%zu actions one at a time (remote and local interleaved), ms per action\n",
           o.actions);
    printf("  %-28s %9s %9s %9s %10s\n", "", "median", "p99", "mean", "actions/s");
    print_row("fork+exec, helper process", &s_sl, o.actions, wall_sl);
    print_row("Execute over gRPC", &s_sr, o.actions, wall_sr);
    print_ratio(&s_sr, &s_sl, wall_sr, wall_sl);
    print_steps(seq_r, o.actions);

    printf("\n%zu actions, %zu in flight, ms per action (submit to done)\n", o.actions, o.inflight);
    printf("  %-28s %9s %9s %9s %10s\n", "", "median", "p99", "mean", "actions/s");
    print_row("fork+exec, helper process", &s_pl, o.actions, wall_pl);
    print_row("Execute over gRPC", &s_pr, o.actions, wall_pr);
    print_ratio(&s_pr, &s_pl, wall_pr, wall_pl);
    print_steps(par_r, o.actions);
    printf("  (the last column of a ratio row is the inverse ratio of actions/s)\n");
    printf("\nload %.2f at the end; %.0f s in all; %d failure(s)\n", bench_loadavg(),
           bench_now() - t_start, failures);

out:
    local_runner_stop(&runner);
    bench_client_close(&client);
    if (daemon.pid > 0 && daemon_pid > 0) {
        rc = bench_daemon_stop(&daemon);
        if (rc != 0) {
            fprintf(stderr, "exec_bench: casboxd exited with status %d on SIGTERM\n", rc);
            failures++;
        }
    }
    if (failures > 0 && daemon.log[0] != '\0') {
        fprintf(stderr, "exec_bench: %d failure(s); the end of casboxd's log:\n", failures);
        bench_daemon_log_tail(&daemon, 15);
    }
    if (items != NULL) {
        for (size_t i = 0; i < total; i++)
            item_free(&items[i]);
        free(items);
    }
    if (o.keep)
        printf("kept %s\n", workdir);
    else
        bench_rm_rf(workdir);
    return failures > 0 ? 1 : 0;
}
