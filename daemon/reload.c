/*
 * reload.c - the configuration at run time: snapshots for the action
 * pipeline, and SIGHUP's reload of the keys that are safe to change while
 * serving.
 *
 * Safe keys are those read afresh for each action (limits, timeouts,
 * platform-property policy, seccomp policy), the log level, and [asset]
 * timeout and allowed_url_prefixes (read afresh for each FetchBlob). The pipeline
 * copies the configuration under cfg_lock at the start of each action, so a
 * reload never changes a value under a running action. Keys that size pools,
 * queues, the listener or the store need a restart: a reload that changes one
 * says so in the log and leaves it as it was.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "casboxd.h"
#include "util/util.h"

/* "key = value" lines of config_print whose key may change at run time. */
static const char *const reload_safe_keys[] = {
    "log_level",           "worker_name",       "default_timeout",
    "max_timeout",         "memory_bytes",      "pids_max",
    "stdio_bytes",         "max_output_bytes",  "max_output_files",
    "operation_retention", "allow_network",     "seccomp",
    "accepted_properties", "timeout",           "allowed_url_prefixes",
    "tokens_file",         "certificates_file", "anonymous", /* auth_setup.c */
    "certificate",         "private_key",       "client_ca",
};

void casboxd_config_snapshot(struct casboxd *d, struct casbox_config *out)
{
    pthread_mutex_lock(&d->cfg_lock);
    *out = d->cfg;
    pthread_mutex_unlock(&d->cfg_lock);
}

static bool reload_key_is_safe(const char *line)
{
    for (size_t i = 0; i < sizeof(reload_safe_keys) / sizeof(reload_safe_keys[0]); i++) {
        size_t n = strlen(reload_safe_keys[i]);

        if (strncmp(line, reload_safe_keys[i], n) == 0 && line[n] == ' ')
            return true;
    }
    return false;
}

/* The config as config_print's text, one malloc'd buffer. */
static char *reload_render(const struct casbox_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    if (f == NULL)
        return NULL;
    config_print(cfg, f);
    fclose(f);
    return buf;
}

int casboxd_config_reload(struct casboxd *d, const struct casbox_config *fresh)
{
    struct casbox_config next;
    char *old_text = NULL, *new_text = NULL;
    char *old_save = NULL, *new_save = NULL, *ol, *nl;
    enum log_level level;
    unsigned changed = 0, ignored = 0;
    int rc = -ENOMEM;

    casboxd_config_snapshot(d, &next);
    old_text = reload_render(&next);
    new_text = reload_render(fresh);
    if (old_text == NULL || new_text == NULL)
        goto out;
    /* Both texts list the same keys in the same order (one table). */
    for (ol = strtok_r(old_text, "\n", &old_save), nl = strtok_r(new_text, "\n", &new_save);
         ol != NULL && nl != NULL;
         ol = strtok_r(NULL, "\n", &old_save), nl = strtok_r(NULL, "\n", &new_save)) {
        if (ol[0] == '#' || ol[0] == '[' || strcmp(ol, nl) == 0)
            continue;
        if (reload_key_is_safe(nl)) {
            LOG_I("reload: %s (was %s)", nl, strchr(ol, '=') ? strchr(ol, '=') + 2 : ol);
            changed++;
        } else {
            LOG_W("reload: '%s' needs a restart; keeping '%s'", nl, ol);
            ignored++;
        }
    }
    next.exec_default_timeout = fresh->exec_default_timeout;
    next.exec_max_timeout = fresh->exec_max_timeout;
    next.exec_memory_bytes = fresh->exec_memory_bytes;
    next.exec_pids_max = fresh->exec_pids_max;
    next.exec_stdio_bytes = fresh->exec_stdio_bytes;
    next.exec_max_output_bytes = fresh->exec_max_output_bytes;
    next.exec_max_output_files = fresh->exec_max_output_files;
    next.operation_retention = fresh->operation_retention;
    next.exec_allow_network = fresh->exec_allow_network;
    memcpy(next.exec_seccomp, fresh->exec_seccomp, sizeof(next.exec_seccomp));
    memcpy(next.exec_accepted_properties, fresh->exec_accepted_properties,
           sizeof(next.exec_accepted_properties));
    memcpy(next.worker_name, fresh->worker_name, sizeof(next.worker_name));
    next.asset_timeout = fresh->asset_timeout;
    memcpy(next.asset_allowed_url_prefixes, fresh->asset_allowed_url_prefixes,
           sizeof(next.asset_allowed_url_prefixes));
    memcpy(next.log_level, fresh->log_level, sizeof(next.log_level));
    pthread_mutex_lock(&d->cfg_lock);
    d->cfg = next;
    pthread_mutex_unlock(&d->cfg_lock);
    if (log_parse_level(next.log_level, &level) == 0)
        log_set_level(level);
    LOG_I("reload: %u key(s) applied, %u need a restart", changed, ignored);
    rc = 0;
out:
    free(old_text);
    free(new_text);
    return rc;
}
