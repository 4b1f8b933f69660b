/*
 * fuzz_asset_map.c - feeds a file to asset_map_open (asset/map.c), which
 * replays <state>/asset-map.log at start-up: whatever the file holds (torn,
 * foreign, hostile lines), loading must not crash, must keep at most
 * max_entries, and must leave a log that loads again to the same count.
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "asset/asset.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    struct asset_map *m;
    size_t count;
    FILE *f;

    log_set_level(LOG_LEVEL_ERROR); /* skipped lines are expected here */
    if (path[0] == '\0')
        snprintf(path, sizeof(path), "/tmp/fuzz_asset_map.%d", (int)getpid());
    f = fopen(path, "w");
    if (f == NULL)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    if (asset_map_open(path, 8, &m) != 0)
        return 0;
    count = asset_map_count(m);
    assert(count <= 8);
    asset_map_close(m);
    /* Loading rewrote the log from what it kept. */
    assert(asset_map_open(path, 8, &m) == 0);
    assert(asset_map_count(m) == count);
    asset_map_close(m);
    unlink(path);
    return 0;
}
