/*
 * action_cache.c - the action cache: serialized ActionResult bytes stored per
 * (instance name, action digest) under <dir>/ac/<aa>/<key>.
 *
 * key = hex SHA-256 of (instance + '\0' + action hash hex + '/' + size), so
 * any instance name (empty, with slashes, with dots) maps to a safe fixed-
 * length file name and instances never share entries. Entries are written to
 * a temp file and renamed into place (an update replaces the entry
 * atomically). The AC does not count toward the CAS size limit.
 *
 * Each file starts with a header: 8 bytes of magic, the payload length
 * (little-endian 64-bit) and the payload's SHA-256. Without it, a file left
 * empty or short by a power loss (nothing is fsync'ed) would parse as a valid,
 * empty ActionResult: a cache hit with no outputs. A file that fails the check
 * is removed and reported absent.
 */
#include "cas.h"
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define AC_MAGIC       "casbxac1"
#define AC_MAGIC_BYTES 8
#define AC_HEADER      (AC_MAGIC_BYTES + 8 + CAS_HASH_BYTES)

static int ac_relpath(const char *instance, const struct cas_digest *action,
                      char out[CAS_BLOB_RELPATH])
{
    struct cas_hasher *h;
    struct cas_digest key;
    char hex[CAS_HASH_HEX + 1];
    char size[24];
    int n;

    if (instance == NULL)
        instance = "";
    h = cas_hasher_new();
    if (h == NULL)
        return -ENOMEM;
    cas_digest_hex(action, hex);
    n = snprintf(size, sizeof(size), "/%" PRId64, action->size);
    cas_hasher_update(h, instance, strlen(instance) + 1); /* with its NUL */
    cas_hasher_update(h, hex, CAS_HASH_HEX);
    cas_hasher_update(h, size, (size_t)n);
    cas_hasher_finish(h, &key);
    if (key.size < 0)
        return -ENOMEM; /* hashing failed, see digest.c */
    cas_blob_relpath(&key, out);
    return 0;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

int cas_ac_put(struct cas_store *s, const char *instance, const struct cas_digest *action,
               const void *buf, size_t len)
{
    uint8_t header[AC_HEADER];
    char rel[CAS_BLOB_RELPATH];
    struct iovec iov[2] = {{header, sizeof(header)}, {(void *)buf, len}};
    struct cas_commit_target to = {.dir_fd = s->ac_fd, .rel = rel};
    struct cas_digest payload;
    int ret;

    if (action->size < 0 || (buf == NULL && len > 0))
        return -EINVAL;
    ret = ac_relpath(instance, action, rel);
    if (ret < 0)
        return ret;
    cas_digest_buffer(buf, len, &payload);
    if (payload.size < 0)
        return -ENOMEM;
    memcpy(header, AC_MAGIC, AC_MAGIC_BYTES);
    put_le64(header + AC_MAGIC_BYTES, len);
    memcpy(header + AC_MAGIC_BYTES + 8, payload.hash, CAS_HASH_BYTES);

    return cas_store_write_commit(s, "ac", iov, 2, &to);
}

/* Removes an entry that failed its check, unless it was replaced meanwhile. */
static void ac_remove_corrupt(struct cas_store *s, const char *rel, const struct stat *bad)
{
    struct stat cur;

    pthread_mutex_lock(&s->name_lock);
    if (fstatat(s->ac_fd, rel, &cur, AT_SYMLINK_NOFOLLOW) == 0 && cur.st_dev == bad->st_dev &&
        cur.st_ino == bad->st_ino)
        unlinkat(s->ac_fd, rel, 0); /* failing leaves a file every get rejects */
    pthread_mutex_unlock(&s->name_lock);
}

int cas_ac_get(struct cas_store *s, const char *instance, const struct cas_digest *action,
               void **buf, size_t *len)
{
    uint8_t header[AC_HEADER];
    char rel[CAS_BLOB_RELPATH];
    struct cas_digest actual;
    struct stat st;
    uint8_t *data = NULL;
    uint64_t payload_len;
    size_t got = 0;
    int fd = -1;
    int ret;

    if (action->size < 0)
        return -EINVAL;
    ret = ac_relpath(instance, action, rel);
    if (ret < 0)
        return ret;
    fd = openat(s->ac_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        ret = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < AC_HEADER)
        goto corrupt;
    ret = cas_io_pread_all(fd, header, sizeof(header), 0, &got);
    if (ret < 0)
        goto out;
    payload_len = get_le64(header + AC_MAGIC_BYTES);
    if (got != sizeof(header) || memcmp(header, AC_MAGIC, AC_MAGIC_BYTES) != 0 ||
        payload_len != (uint64_t)st.st_size - AC_HEADER || payload_len >= SIZE_MAX)
        goto corrupt;
    data = malloc(payload_len > 0 ? payload_len : 1);
    if (data == NULL) {
        ret = -ENOMEM;
        goto out;
    }
    ret = cas_io_pread_all(fd, data, payload_len, AC_HEADER, &got);
    if (ret < 0)
        goto out;
    if (got != payload_len)
        goto corrupt;
    cas_digest_buffer(data, got, &actual);
    if (actual.size < 0) {
        ret = -ENOMEM;
        goto out;
    }
    if (memcmp(actual.hash, header + AC_MAGIC_BYTES + 8, CAS_HASH_BYTES) != 0)
        goto corrupt;
    *buf = data;
    *len = got;
    data = NULL;
    ret = 0;
    goto out;
corrupt:
    ac_remove_corrupt(s, rel, &st);
    ret = -ENOENT;
out:
    free(data);
    close(fd);
    return ret;
}
