/*
 * page_dir.c - /dir/<hash>/<size>: one Directory of an input tree, decoded
 * from the CAS (up to max_message_bytes): subdirectories link to their own
 * listing, files to their blob with their size and executable bit, symlinks
 * show their target. Names come from clients and are escaped.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "web_internal.h"

/* A download name: the file name itself when made of [A-Za-z0-9._+-]. */
static bool web_dir_name_plain(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 255)
        return false;
    for (; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-' || *s == '+'))
            return false;
    }
    return true;
}

static void web_dir_link(struct util_buf *b, const char *page, const Digest *pd, const char *name,
                         const char *text)
{
    struct cas_digest d;
    char hex[CAS_HASH_HEX + 1];

    if (web_digest_from_proto(pd, &d) != 0) {
        web_buf_html_str(b, text);
        return;
    }
    cas_digest_hex(&d, hex);
    util_buf_printf(b, "<a href=\"/%s/%s/%" PRId64 "%s%s\">", page, hex, d.size,
                    web_dir_name_plain(name) && strcmp(name, ".") && strcmp(name, "..") ? "/" : "",
                    web_dir_name_plain(name) && strcmp(name, ".") && strcmp(name, "..") ? name
                                                                                        : "");
    web_buf_html_str(b, text);
    util_buf_str(b, "</a>");
}

int web_page_dir(const struct web_options *opt, const struct cas_digest *d, struct util_buf *b,
                 unsigned *status)
{
    Directory *dir = NULL;
    char hex[CAS_HASH_HEX + 1], title[128];
    int rc;

    cas_digest_hex(d, hex);
    rc = web_load_message(opt, d, &build__bazel__remote__execution__v2__directory__descriptor,
                          (ProtobufCMessage **)&dir);
    if (rc != 0) {
        *status = rc == -ENOENT ? 404 : 422;
        web_page_error(b, *status, rc == -ENOENT ? "Unknown directory" : "Not a directory",
                       rc == -ENOENT ? "No blob with this digest is in the CAS."
                                     : "The blob with this digest is not a Directory message "
                                       "(or larger than [http] max_message_bytes).");
        return b->err;
    }
    *status = 200;
    snprintf(title, sizeof(title), "Directory %.16s…/%" PRId64, hex, d->size);
    web_page_begin(b, title, 0);
    util_buf_str(b, "<table id=\"listing\"><tr><th>name</th><th>kind</th><th>size</th></tr>\n");
    for (size_t i = 0; i < dir->n_directories; i++) {
        const DirectoryNode *n = dir->directories[i];

        util_buf_str(b, "<tr><td>");
        web_dir_link(b, "dir", n->digest, NULL, n->name ? n->name : "");
        util_buf_str(b, "/</td><td>directory</td><td></td></tr>\n");
    }
    for (size_t i = 0; i < dir->n_files; i++) {
        const FileNode *n = dir->files[i];

        util_buf_str(b, "<tr><td>");
        web_dir_link(b, "blob", n->digest, n->name, n->name ? n->name : "");
        util_buf_printf(b, "</td><td>file%s</td><td>", n->is_executable ? " (executable)" : "");
        web_buf_bytes(b, n->digest ? (uint64_t)n->digest->size_bytes : 0);
        util_buf_str(b, "</td></tr>\n");
    }
    for (size_t i = 0; i < dir->n_symlinks; i++) {
        const SymlinkNode *n = dir->symlinks[i];

        util_buf_str(b, "<tr><td>");
        web_buf_html_str(b, n->name ? n->name : "");
        util_buf_str(b, "</td><td>symlink → <code>");
        web_buf_html_str(b, n->target ? n->target : "");
        util_buf_str(b, "</code></td><td></td></tr>\n");
    }
    util_buf_str(b, "</table>\n");
    web_page_end(b);
    protobuf_c_message_free_unpacked(&dir->base, NULL);
    return b->err;
}
