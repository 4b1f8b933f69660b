/*
 * cli_result.c - ActionResults as text: what `casbox run --action` prints,
 * and the diff of --compare.
 *
 * Outputs are compared by path and kind. A file is its digest and
 * executable bit, a directory the digest of its Tree, a symlink its target:
 * what Bazel would see. stdout and stderr often hold timings or addresses,
 * so their digests are shown but do not count as a difference.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_replay.h"
#include "reapi/reapi.h"

#define RESULT_PRINT_MAX (1u << 20) /* bytes of stdout/stderr printed */

void cli_digest_string(const struct cas_digest *d, char *buf, size_t len)
{
    char hex[CAS_HASH_HEX + 1];

    cas_digest_hex(d, hex);
    snprintf(buf, len, "%s/%" PRId64, hex, d->size);
}

/* "hash/size" of a wire digest, or "(none)". */
static void result_digest(const Digest *pd, char *buf, size_t len)
{
    if (pd == NULL || pd->hash == NULL)
        snprintf(buf, len, "(none)");
    else
        snprintf(buf, len, "%s/%" PRId64, pd->hash, pd->size_bytes);
}

/* --- one list of outputs per result --- */

struct result_entry {
    const char *kind; /* output_file, output_directory, output_symlink */
    const char *path;
    char value[CAS_HASH_HEX + 64]; /* digest [executable], tree digest, -> target */
    const char *target;            /* symlinks: printed after the value */
};

struct result_list {
    struct result_entry *e;
    size_t n;
};

static int result_entry_compare(const void *a, const void *b)
{
    const struct result_entry *x = a, *y = b;
    int c = strcmp(x->kind, y->kind);

    return c != 0 ? c : strcmp(x->path, y->path);
}

static void result_add_symlinks(struct result_list *l,
                                Build__Bazel__Remote__Execution__V2__OutputSymlink **links,
                                size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct result_entry *e = &l->e[l->n++];

        e->kind = "output_symlink";
        e->path = links[i]->path ? links[i]->path : "";
        e->target = links[i]->target ? links[i]->target : "";
        snprintf(e->value, sizeof(e->value), "->");
    }
}

static int result_list_build(const ActionResult *r, struct result_list *l)
{
    size_t n = r->n_output_files + r->n_output_directories + r->n_output_symlinks +
               r->n_output_file_symlinks + r->n_output_directory_symlinks;

    l->n = 0;
    l->e = calloc(n ? n : 1, sizeof(*l->e));
    if (l->e == NULL)
        return -1;
    for (size_t i = 0; i < r->n_output_files; i++) {
        struct result_entry *e = &l->e[l->n++];

        e->kind = "output_file";
        e->path = r->output_files[i]->path ? r->output_files[i]->path : "";
        result_digest(r->output_files[i]->digest, e->value, sizeof(e->value));
        if (r->output_files[i]->is_executable)
            strcat(e->value, " executable");
    }
    for (size_t i = 0; i < r->n_output_directories; i++) {
        struct result_entry *e = &l->e[l->n++];
        char d[CAS_HASH_HEX + 32];

        e->kind = "output_directory";
        e->path = r->output_directories[i]->path ? r->output_directories[i]->path : "";
        result_digest(r->output_directories[i]->tree_digest, d, sizeof(d));
        snprintf(e->value, sizeof(e->value), "tree %s", d);
    }
    result_add_symlinks(l, r->output_symlinks, r->n_output_symlinks);
    result_add_symlinks(l, r->output_file_symlinks, r->n_output_file_symlinks);
    result_add_symlinks(l, r->output_directory_symlinks, r->n_output_directory_symlinks);
    qsort(l->e, l->n, sizeof(*l->e), result_entry_compare);
    return 0;
}

static bool result_entry_same(const struct result_entry *a, const struct result_entry *b)
{
    return strcmp(a->value, b->value) == 0 &&
           strcmp(a->target ? a->target : "", b->target ? b->target : "") == 0;
}

static void result_entry_print(FILE *out, const struct result_entry *e)
{
    fprintf(out, "%s %s %s%s%s", e->kind, e->path, e->value, e->target ? " " : "",
            e->target ? e->target : "");
}

/* --- printing --- */

static void result_print_stream(FILE *out, const char *name, const Digest *pd,
                                const ProtobufCBinaryData *raw, struct cas_store *cas)
{
    struct reapi_status st;
    struct cas_digest d;
    void *buf = NULL;
    size_t len = 0;

    if (raw->len > 0) {
        buf = raw->data;
        len = raw->len;
    } else if (pd != NULL) {
        reapi_status_init(&st);
        if (reapi_digest_from_proto(pd, &d, &st, name) == 0 && d.size > 0 &&
            cas_store_get(cas, &d, &buf, &len) != 0) {
            fprintf(out, "--- %s: not in the local CAS ---\n", name);
            reapi_status_free(&st);
            return;
        }
        reapi_status_free(&st);
    }
    fprintf(out, "--- %s (%zu bytes) ---\n", name, len);
    if (len > 0)
        fwrite(buf, 1, len > RESULT_PRINT_MAX ? RESULT_PRINT_MAX : len, out);
    if (len > RESULT_PRINT_MAX)
        fprintf(out, "\n[... %zu more bytes]\n", len - RESULT_PRINT_MAX);
    else if (len > 0 && ((const char *)buf)[len - 1] != '\n')
        fputs("\n[no newline at the end]\n", out);
    if (buf != raw->data)
        free(buf);
}

void cli_result_print(FILE *out, const ActionResult *r, struct cas_store *cas)
{
    struct result_list l;
    char d[CAS_HASH_HEX + 32];

    fprintf(out, "exit_code: %d\n", r->exit_code);
    if (result_list_build(r, &l) == 0) {
        for (size_t i = 0; i < l.n; i++) {
            fprintf(out, "%s: %s %s%s%s\n", l.e[i].kind, l.e[i].path, l.e[i].value,
                    l.e[i].target ? " " : "", l.e[i].target ? l.e[i].target : "");
        }
        free(l.e);
    }
    result_digest(r->stdout_digest, d, sizeof(d));
    fprintf(out, "stdout: %s\n", d);
    result_digest(r->stderr_digest, d, sizeof(d));
    fprintf(out, "stderr: %s\n", d);
    result_print_stream(out, "stdout", r->stdout_digest, &r->stdout_raw, cas);
    result_print_stream(out, "stderr", r->stderr_digest, &r->stderr_raw, cas);
}

/* --- comparing --- */

size_t cli_result_compare(FILE *out, const ActionResult *local, const ActionResult *cached)
{
    struct result_list a, b;
    char da[CAS_HASH_HEX + 32], db[CAS_HASH_HEX + 32];
    size_t diffs = 0, i = 0, j = 0;

    fputs("compared with the cached ActionResult:\n", out);
    if (local->exit_code == cached->exit_code) {
        fprintf(out, "  same        exit_code %d\n", local->exit_code);
    } else {
        fprintf(out, "  DIFFERENT   exit_code: here %d, cached %d\n", local->exit_code,
                cached->exit_code);
        diffs++;
    }
    if (result_list_build(local, &a) != 0)
        return diffs + 1;
    if (result_list_build(cached, &b) != 0) {
        free(a.e);
        return diffs + 1;
    }
    while (i < a.n || j < b.n) {
        int c = i == a.n ? 1 : j == b.n ? -1 : result_entry_compare(&a.e[i], &b.e[j]);

        if (c == 0) {
            if (result_entry_same(&a.e[i], &b.e[j])) {
                fputs("  same        ", out);
                result_entry_print(out, &a.e[i]);
            } else {
                fprintf(out, "  DIFFERENT   %s %s: here %s%s%s, cached %s%s%s", a.e[i].kind,
                        a.e[i].path, a.e[i].value, a.e[i].target ? " " : "",
                        a.e[i].target ? a.e[i].target : "", b.e[j].value, b.e[j].target ? " " : "",
                        b.e[j].target ? b.e[j].target : "");
                diffs++;
            }
            i++;
            j++;
        } else if (c < 0) {
            fputs("  ONLY HERE   ", out);
            result_entry_print(out, &a.e[i++]);
            diffs++;
        } else {
            fputs("  ONLY CACHED ", out);
            result_entry_print(out, &b.e[j++]);
            diffs++;
        }
        fputc('\n', out);
    }
    free(a.e);
    free(b.e);
    result_digest(local->stdout_digest, da, sizeof(da));
    result_digest(cached->stdout_digest, db, sizeof(db));
    fprintf(out, "  %-11s stdout %s%s%s (not counted)\n", strcmp(da, db) == 0 ? "same" : "differs",
            da, strcmp(da, db) == 0 ? "" : ", cached ", strcmp(da, db) == 0 ? "" : db);
    result_digest(local->stderr_digest, da, sizeof(da));
    result_digest(cached->stderr_digest, db, sizeof(db));
    fprintf(out, "  %-11s stderr %s%s%s (not counted)\n", strcmp(da, db) == 0 ? "same" : "differs",
            da, strcmp(da, db) == 0 ? "" : ", cached ", strcmp(da, db) == 0 ? "" : db);
    if (diffs == 0)
        fputs("result: the same\n", out);
    else
        fprintf(out, "result: %zu difference%s\n", diffs, diffs == 1 ? "" : "s");
    return diffs;
}
