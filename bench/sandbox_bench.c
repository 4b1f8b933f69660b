/*
 * sandbox_bench.c - start-to-exit time of `true` in the sandbox, against
 * plain fork+exec and bubblewrap, measured in the same run.
 *
 *   sandbox_bench [ROUNDS]     (default 200)
 *
 * Each round runs every contender once, in turn, so that the noise of a
 * shared machine spreads over all of them; the medians and their ratios are
 * printed. Contenders:
 *   plain    fork + execve("/bin/true") + waitpid
 *   bwrap    bwrap --unshare-all --ro-bind / / true (if installed)
 *   sandbox  sandbox_run(): 6 namespaces, the allow-list root, caps, seccomp
 *            (a copy of the program compiled at build time, as `casbox run`
 *            does; libseccomp only without the generator)
 *   prebuilt the same with the program handed in (internal
 *            sandbox_run_with, no copy)
 *   host net the prebuilt run with network=true: the price of the netns
 *   spawner  sandbox_spawner_run (the daemon's path: a request over a
 *            socket to the spawner, whose warm pid 1 takes it)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/filter.h>

#include "bench_stats.h"
#include "sandbox/sandbox.h"

enum { C_PLAIN, C_BWRAP, C_SANDBOX, C_PREBUILT, C_SANDBOX_NET, C_SPAWNER, C_COUNT };

static const char *const contender_names[C_COUNT] = {
    "plain fork+exec",       "bwrap --unshare-all",    "sandbox_run",
    "sandbox_run, prebuilt", "prebuilt, host network", "sandbox_spawner_run",
};

static double bench_sandbox(const struct sandbox_spec *spec, struct sandbox_spawner *sp,
                            const struct sandbox_run_options *opts)
{
    struct sandbox_result res;
    double start = bench_now();
    int rc = sp != NULL     ? sandbox_spawner_run(sp, spec, &res)
             : opts != NULL ? sandbox_run_with(spec, &res, opts)
                            : sandbox_run(spec, &res);

    if (rc != 0 || res.exit_code != 0) {
        fprintf(stderr, "sandbox: rc %d exit %d: %s\n", rc, res.exit_code, res.error);
        return -1;
    }
    return (bench_now() - start) * 1e6;
}

int main(int argc, char **argv)
{
    char *plain_argv[] = {"/bin/true", NULL};
    char *bwrap_argv[] = {"/usr/bin/bwrap", "--unshare-all", "--ro-bind", "/", "/", "true", NULL};
    const char *envp[] = {"PATH=/usr/bin:/bin", NULL};
    const char *true_argv[] = {"true", NULL};
    struct sandbox_spawner *sp = NULL;
    struct sandbox_spec spec, spec_net;
    struct sock_fprog prog = {0};
    struct sandbox_run_options opts = {.seccomp_default = &prog};
    char err[256];
    size_t rounds = argc > 1 ? strtoul(argv[1], NULL, 10) : 200, n[C_COUNT] = {0};
    double *samples[C_COUNT], median[C_COUNT];
    bool have_bwrap = access(bwrap_argv[0], X_OK) == 0;
    int rc = 1;

    if (rounds == 0)
        rounds = 1;
    for (int c = 0; c < C_COUNT; c++) {
        samples[c] = calloc(rounds, sizeof(double));
        if (samples[c] == NULL)
            return 1;
    }
    sandbox_spec_init(&spec);
    sandbox_spec_init(&spec_net);
    if (sandbox_spec_set_argv(&spec, true_argv) != 0 || sandbox_spec_set_envp(&spec, envp) != 0 ||
        sandbox_spec_set_argv(&spec_net, true_argv) != 0 ||
        sandbox_spec_set_envp(&spec_net, envp) != 0)
        goto out;
    spec_net.network = true;
    if (sandbox_seccomp_build(SANDBOX_SECCOMP_DEFAULT, NULL, &prog, err, sizeof(err)) != 0) {
        fprintf(stderr, "seccomp: %s\n", err);
        goto out;
    }
    if (sandbox_spawner_start(&sp) != 0) {
        fprintf(stderr, "cannot start the spawner\n");
        goto out;
    }
    for (size_t r = 0; r < rounds; r++) {
        double t;

        if ((t = bench_spawn_us(plain_argv)) >= 0)
            samples[C_PLAIN][n[C_PLAIN]++] = t;
        if (have_bwrap && (t = bench_spawn_us(bwrap_argv)) >= 0)
            samples[C_BWRAP][n[C_BWRAP]++] = t;
        if ((t = bench_sandbox(&spec, NULL, NULL)) >= 0)
            samples[C_SANDBOX][n[C_SANDBOX]++] = t;
        if ((t = bench_sandbox(&spec, NULL, &opts)) >= 0)
            samples[C_PREBUILT][n[C_PREBUILT]++] = t;
        if ((t = bench_sandbox(&spec_net, NULL, &opts)) >= 0)
            samples[C_SANDBOX_NET][n[C_SANDBOX_NET]++] = t;
        if ((t = bench_sandbox(&spec, sp, NULL)) >= 0)
            samples[C_SPAWNER][n[C_SPAWNER]++] = t;
    }
    printf("start-to-exit of `true`, median of %zu rounds (microseconds)\n", rounds);
    for (int c = 0; c < C_COUNT; c++) {
        if (n[c] == 0) {
            median[c] = 0;
            printf("  %-24s  (not run)\n", contender_names[c]);
            continue;
        }
        median[c] = bench_percentile(samples[c], n[c], 50);
        printf("  %-24s %8.0f   (min %6.0f, n=%zu)\n", contender_names[c], median[c], samples[c][0],
               n[c]);
    }
    if (median[C_PLAIN] > 0)
        printf("ratio sandbox_run / plain:   %.2fx\n", median[C_SANDBOX] / median[C_PLAIN]);
    if (median[C_BWRAP] > 0) {
        printf("ratio sandbox_run / bwrap:   %.2fx (target <= 0.5x)\n",
               median[C_SANDBOX] / median[C_BWRAP]);
        printf("ratio prebuilt    / bwrap:   %.2fx\n", median[C_PREBUILT] / median[C_BWRAP]);
        printf("ratio spawner     / bwrap:   %.2fx\n", median[C_SPAWNER] / median[C_BWRAP]);
    }
    rc = 0;
out:
    sandbox_spawner_stop(sp);
    sandbox_seccomp_program_free(&prog);
    sandbox_spec_free(&spec);
    sandbox_spec_free(&spec_net);
    for (int c = 0; c < C_COUNT; c++)
        free(samples[c]);
    return rc;
}
