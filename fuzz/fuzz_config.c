/*
 * fuzz_config.c - feeds configuration files to config_load_file
 * (config/config.c, libinih underneath), which reads casboxd's --config at
 * start and again on every SIGHUP reload, and casbox-replay's --config. The
 * input is written to a memfd and loaded by its /proc path, the way a real
 * file is. A file that loads must print (config_print: casboxd
 * --print-config, the reload's diff) as a file that loads back and prints
 * the same.
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config/config.h"

static int file_fd = -1;
static char file_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    file_fd = memfd_create("casbox-fuzz-config", 0);
    assert(file_fd >= 0);
    snprintf(file_path, sizeof(file_path), "/proc/self/fd/%d", file_fd);
    return 0;
}

/* Loads data as a configuration file over the defaults. */
static int load(const void *data, size_t size, struct casbox_config *cfg, char *err, size_t err_len)
{
    assert(ftruncate(file_fd, 0) == 0);
    assert(pwrite(file_fd, data, size, 0) == (ssize_t)size);
    config_init_defaults(cfg);
    return config_load_file(cfg, file_path, err, err_len);
}

/* config_print's text, malloc'd. */
static char *printed(const struct casbox_config *cfg, size_t *len)
{
    char *text = NULL;
    FILE *out = open_memstream(&text, len);

    assert(out != NULL);
    config_print(cfg, out);
    assert(fclose(out) == 0);
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct casbox_config cfg;
    char err[1024] = "", *text, *again;
    size_t len, len_again;

    if (load(data, size, &cfg, err, sizeof(err)) != 0) {
        assert(err[0] != '\0');
        return 0;
    }
    text = printed(&cfg, &len);
    assert(load(text, len, &cfg, err, sizeof(err)) == 0);
    again = printed(&cfg, &len_again);
    assert(len == len_again && memcmp(text, again, len) == 0);
    (void)config_finish(&cfg, err, sizeof(err));
    free(text);
    free(again);
    return 0;
}
