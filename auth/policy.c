/*
 * policy.c - who a caller is and what it may do: a bearer token (tokens
 * file), else a verified client certificate (its names in the certificates
 * file, or any certificate of client_ca with the anonymous permissions),
 * else anonymous. Unknown credentials are UNAUTHENTICATED; known ones
 * (anonymous too) without the permission are DENIED, naming it and the
 * instance.
 */
#include "auth_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct auth_policy {
    unsigned refs; /* under the guard's lock */
    struct auth_table *tokens;
    struct auth_table *names;
    unsigned anonymous;
    bool enabled;
    bool client_certificates;
};

static bool auth_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

int auth_policy_load(const struct auth_settings *s, struct auth_policy **out,
                     void (*warn)(const char *line), char *err, size_t err_len)
{
    struct auth_policy *p = calloc(1, sizeof(*p));
    char why[256];
    int rc = 0;

    *out = NULL;
    if (p == NULL) {
        snprintf(err, err_len, "out of memory");
        return -ENOMEM;
    }
    p->refs = 1;
    p->client_certificates = s->client_certificates;
    p->enabled = auth_set(s->tokens_file) || auth_set(s->certificates_file) ||
                 s->client_certificates || auth_set(s->anonymous);
    p->anonymous = p->enabled ? AUTH_PERM_NONE : AUTH_PERM_ALL;
    if (auth_set(s->anonymous)) {
        rc = auth_perms_parse(s->anonymous, strlen(s->anonymous), &p->anonymous, why, sizeof(why));
        if (rc != 0) {
            snprintf(err, err_len, "[auth] anonymous: %s", why);
            goto fail;
        }
    }
    if (auth_set(s->certificates_file) && !s->client_certificates) {
        snprintf(err, err_len,
                 "[auth] certificates_file needs [tls] client_ca: without it no client "
                 "certificate is asked for");
        rc = -EINVAL;
        goto fail;
    }
    if (auth_set(s->tokens_file)) {
        rc = auth_table_load(AUTH_TABLE_TOKENS, s->tokens_file, &p->tokens, warn, err, err_len);
        if (rc != 0)
            goto fail;
    }
    if (auth_set(s->certificates_file)) {
        rc = auth_table_load(AUTH_TABLE_NAMES, s->certificates_file, &p->names, warn, err, err_len);
        if (rc != 0)
            goto fail;
    }
    *out = p;
    return 0;
fail:
    auth_policy_free(p);
    return rc;
}

void auth_policy_free(struct auth_policy *p)
{
    if (p == NULL)
        return;
    auth_table_free(p->tokens);
    auth_table_free(p->names);
    free(p);
}

bool auth_policy_enabled(const struct auth_policy *p)
{
    return p != NULL && p->enabled;
}

void auth_policy_describe(const struct auth_policy *p, char *out, size_t len)
{
    char anon[64];

    if (!auth_policy_enabled(p)) {
        snprintf(out, len, "auth: off, every caller may do everything (docs/security.md)");
        return;
    }
    auth_perms_format(p->anonymous, anon, sizeof(anon));
    snprintf(out, len,
             "auth: %zu token(s), %zu certificate name(s), client certificates %s, anonymous %s",
             auth_table_count(p->tokens), auth_table_count(p->names),
             p->client_certificates ? "required" : "not asked for", anon);
}

static void auth_identity_fail(struct auth_identity *id, enum auth_result r, const char *who,
                               const char *reason)
{
    id->result = r;
    snprintf(id->who, sizeof(id->who), "%s", who);
    snprintf(id->reason, sizeof(id->reason), "%s", reason);
}

/* The certificate's first name, for logs. */
static void auth_certificate_who(const struct auth_peer *peer, const char *name, char *who,
                                 size_t len)
{
    if (name == NULL)
        name = peer->n_names > 0 ? peer->names[0] : "(no name)";
    snprintf(who, len, "certificate '%.80s'", name);
}

void auth_policy_identify(const struct auth_policy *p, const struct auth_peer *peer,
                          struct auth_identity *id)
{
    /* A certificate counts only where client_ca verified it. */
    bool cert = p != NULL && p->client_certificates && peer->has_certificate;

    memset(id, 0, sizeof(*id));
    if (!auth_policy_enabled(p)) {
        id->anonymous_perms = AUTH_PERM_ALL;
        snprintf(id->who, sizeof(id->who), "anonymous");
        return;
    }
    if (peer->token != NULL && p->tokens != NULL) {
        id->entry = auth_table_find_token(p->tokens, peer->token, peer->token_len);
        if (id->entry == NULL) {
            auth_identity_fail(id, AUTH_UNAUTHENTICATED, "unknown token",
                               "the bearer token is not in [auth] tokens_file");
            return;
        }
        snprintf(id->who, sizeof(id->who), "token of line %u", id->entry->line);
        return;
    }
    if (cert && p->names != NULL) {
        for (size_t i = 0; i < peer->n_names && id->entry == NULL; i++)
            id->entry = auth_table_find_name(p->names, peer->names[i], strlen(peer->names[i]));
        if (id->entry == NULL) {
            auth_certificate_who(peer, NULL, id->who, sizeof(id->who));
            id->result = AUTH_DENIED;
            snprintf(id->reason, sizeof(id->reason),
                     "the client certificate's names are not in [auth] certificates_file");
            return;
        }
        auth_certificate_who(peer, id->entry->name, id->who, sizeof(id->who));
        return;
    }
    if (cert) {
        id->anonymous_perms = p->anonymous;
        auth_certificate_who(peer, NULL, id->who, sizeof(id->who));
        return;
    }
    if (p->anonymous == AUTH_PERM_NONE) {
        auth_identity_fail(id, AUTH_UNAUTHENTICATED, "anonymous",
                           "no credentials: send 'authorization: Bearer <token>'");
        return;
    }
    id->anonymous_perms = p->anonymous;
    snprintf(id->who, sizeof(id->who), "anonymous");
}

unsigned auth_identity_perms(const struct auth_identity *id, const char *instance)
{
    if (id->result != AUTH_OK)
        return AUTH_PERM_NONE;
    if (id->entry == NULL)
        return id->anonymous_perms;
    return auth_entry_perms(id->entry, instance != NULL ? instance : "");
}

enum auth_result auth_identity_check(const struct auth_identity *id, unsigned need,
                                     const char *instance, char *reason, size_t reason_len)
{
    unsigned have, missing;
    char names[64];

    if (id->result != AUTH_OK) {
        snprintf(reason, reason_len, "%s", id->reason);
        return id->result;
    }
    if (instance == NULL)
        instance = "";
    have = auth_identity_perms(id, instance);
    missing = need & ~have;
    if (missing == 0)
        return AUTH_OK;
    auth_perms_format(missing, names, sizeof(names));
    if (have == AUTH_PERM_NONE && id->entry != NULL && id->entry->n_prefixes > 0)
        snprintf(reason, reason_len,
                 "%s may not use instance '%.200s' (outside its instance prefixes); '%s' needed",
                 id->who, instance, names);
    else
        snprintf(reason, reason_len, "%s lacks permission '%s' on instance '%.200s'", id->who,
                 names, instance);
    return AUTH_DENIED;
}

/* --- the guard --- */

int auth_guard_init(struct auth_guard *g, struct auth_policy *p)
{
    int rc = -pthread_mutex_init(&g->lock, NULL);

    if (rc != 0)
        return rc;
    g->current = p;
    return 0;
}

void auth_guard_destroy(struct auth_guard *g)
{
    auth_guard_release(g, g->current);
    g->current = NULL;
    pthread_mutex_destroy(&g->lock);
}

struct auth_policy *auth_guard_acquire(struct auth_guard *g)
{
    struct auth_policy *p;

    pthread_mutex_lock(&g->lock);
    p = g->current;
    if (p != NULL)
        p->refs++;
    pthread_mutex_unlock(&g->lock);
    return p;
}

void auth_guard_release(struct auth_guard *g, struct auth_policy *p)
{
    bool last;

    if (p == NULL)
        return;
    pthread_mutex_lock(&g->lock);
    last = --p->refs == 0;
    pthread_mutex_unlock(&g->lock);
    if (last)
        auth_policy_free(p);
}

void auth_guard_replace(struct auth_guard *g, struct auth_policy *p)
{
    struct auth_policy *old;

    pthread_mutex_lock(&g->lock);
    old = g->current;
    g->current = p;
    pthread_mutex_unlock(&g->lock);
    auth_guard_release(g, old);
}

/* --- rate-limited refusal lines --- */

void auth_log_limiter_init(struct auth_log_limiter *l, unsigned burst)
{
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->lock, NULL);
    l->burst = burst;
}

void auth_log_limiter_destroy(struct auth_log_limiter *l)
{
    pthread_mutex_destroy(&l->lock);
}

bool auth_log_limiter_allow(struct auth_log_limiter *l, uint64_t now_us, uint64_t *suppressed)
{
    bool allow;

    pthread_mutex_lock(&l->lock);
    if (now_us - l->window_start_us >= 1000000 || now_us < l->window_start_us) {
        l->window_start_us = now_us;
        l->in_window = 0;
    }
    allow = l->in_window < l->burst;
    if (allow) {
        l->in_window++;
        *suppressed = l->suppressed;
        l->suppressed = 0;
    } else {
        l->suppressed++;
    }
    pthread_mutex_unlock(&l->lock);
    return allow;
}
