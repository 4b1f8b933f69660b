/*
 * fuzz_seccomp_policy.c - feeds seccomp policy files (`casbox run --seccomp
 * FILE`, [execution] seccomp = /path) to sandbox_seccomp_parse
 * (sandbox/seccomp.c): one syscall per line, `errno=NAME|N` or `allow`, `#`
 * comments. A policy that parses has only syscalls libseccomp knows, each
 * with an errno in 1..4095 or allow; one that does not says why.
 */
#include <assert.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox/sandbox.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sandbox_seccomp_rule *rules = NULL;
    char err[256] = "", *text = strndup((const char *)data, size);
    size_t n = 0;

    if (text == NULL)
        return 0;
    if (sandbox_seccomp_parse(text, "policy", &rules, &n, err, sizeof(err)) == 0) {
        for (size_t i = 0; i < n; i++) {
            int e = rules[i].errno_value;

            assert(seccomp_syscall_resolve_name(rules[i].syscall) != __NR_SCMP_ERROR);
            assert(e == SANDBOX_SECCOMP_ALLOW || (e >= 1 && e <= 4095));
        }
        sandbox_seccomp_rules_free(rules, n);
    } else {
        assert(err[0] != '\0');
    }
    free(text);
    return 0;
}
