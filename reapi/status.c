/*
 * status.c - building gRPC statuses with details for REAPI handlers.
 *
 * The wire form is a google.rpc.Status whose details hold, when blobs were
 * missing, one google.rpc.PreconditionFailure with a MISSING violation per
 * blob, subject "blobs/{hash}/{size}".
 */
#include "reapi.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/rpc/error_details.pb-c.h"
#include "google/protobuf/any.pb-c.h"

#define PRECONDITION_FAILURE_TYPE "type.googleapis.com/google.rpc.PreconditionFailure"

void reapi_status_init(struct reapi_status *st)
{
    memset(st, 0, sizeof(*st));
}

void reapi_status_free(struct reapi_status *st)
{
    free(st->missing);
    reapi_status_init(st);
}

void reapi_status_set(struct reapi_status *st, grpc_status_code code, const char *fmt, ...)
{
    va_list ap;

    if (st->code != GRPC_STATUS_OK)
        return;
    st->code = code;
    va_start(ap, fmt);
    vsnprintf(st->message, sizeof(st->message), fmt, ap);
    va_end(ap);
}

int reapi_status_add_missing(struct reapi_status *st, const struct cas_digest *d)
{
    for (size_t i = 0; i < st->n_missing; i++) {
        if (cas_digest_equal(&st->missing[i], d))
            return 0;
    }
    if (st->n_missing == st->missing_cap) {
        size_t cap = st->missing_cap ? st->missing_cap * 2 : 16;
        struct cas_digest *m = realloc(st->missing, cap * sizeof(*m));

        if (m == NULL)
            return -ENOMEM;
        st->missing = m;
        st->missing_cap = cap;
    }
    st->missing[st->n_missing++] = *d;
    if (st->code == GRPC_STATUS_OK) {
        st->code = GRPC_STATUS_FAILED_PRECONDITION;
        snprintf(st->message, sizeof(st->message), "missing blobs in the CAS");
    }
    if (st->code == GRPC_STATUS_FAILED_PRECONDITION)
        snprintf(st->message, sizeof(st->message), "%zu blob(s) missing in the CAS", st->n_missing);
    return 0;
}

void reapi_status_fill_simple(Google__Rpc__Status *s, grpc_status_code code, char *message)
{
    google__rpc__status__init(s);
    s->code = code;
    s->message = message;
}

static int reapi_status_pack_missing(const struct reapi_status *st, ProtobufCBinaryData *out)
{
    Google__Rpc__PreconditionFailure pf = GOOGLE__RPC__PRECONDITION_FAILURE__INIT;
    Google__Rpc__PreconditionFailure__Violation *v = NULL, **vp = NULL;
    char(*subjects)[CAS_HASH_HEX + 32] = NULL;
    int rc = -ENOMEM;

    v = calloc(st->n_missing, sizeof(*v));
    vp = calloc(st->n_missing, sizeof(*vp));
    subjects = calloc(st->n_missing, sizeof(*subjects));
    if (v == NULL || vp == NULL || subjects == NULL)
        goto out;
    for (size_t i = 0; i < st->n_missing; i++) {
        char hex[CAS_HASH_HEX + 1];

        cas_digest_hex(&st->missing[i], hex);
        snprintf(subjects[i], sizeof(subjects[i]), "blobs/%s/%" PRId64, hex, st->missing[i].size);
        google__rpc__precondition_failure__violation__init(&v[i]);
        v[i].type = "MISSING";
        v[i].subject = subjects[i];
        v[i].description = "";
        vp[i] = &v[i];
    }
    pf.n_violations = st->n_missing;
    pf.violations = vp;
    out->len = google__rpc__precondition_failure__get_packed_size(&pf);
    out->data = malloc(out->len ? out->len : 1);
    if (out->data == NULL)
        goto out;
    google__rpc__precondition_failure__pack(&pf, out->data);
    rc = 0;
out:
    free(v);
    free(vp);
    free(subjects);
    return rc;
}

Google__Rpc__Status *reapi_status_to_proto(const struct reapi_status *st)
{
    Google__Rpc__Status *s = calloc(1, sizeof(*s));
    Google__Protobuf__Any *any = NULL;

    if (s == NULL)
        return NULL;
    google__rpc__status__init(s);
    s->code = st->code;
    s->message = strdup(st->message);
    if (s->message == NULL)
        goto fail;
    if (st->n_missing > 0) {
        any = calloc(1, sizeof(*any));
        s->details = calloc(1, sizeof(*s->details));
        if (any == NULL || s->details == NULL)
            goto fail;
        google__protobuf__any__init(any);
        any->type_url = strdup(PRECONDITION_FAILURE_TYPE);
        if (any->type_url == NULL || reapi_status_pack_missing(st, &any->value) != 0)
            goto fail;
        s->details[0] = any;
        s->n_details = 1;
    }
    return s;
fail:
    if (any != NULL) {
        free(any->type_url);
        free(any->value.data);
        free(any);
    }
    if (s->details != NULL && s->n_details == 0)
        free(s->details), s->details = NULL;
    reapi_status_proto_free(s);
    return NULL;
}

void reapi_status_proto_free(Google__Rpc__Status *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_details; i++) {
        free(s->details[i]->type_url);
        free(s->details[i]->value.data);
        free(s->details[i]);
    }
    free(s->details);
    free(s->message);
    free(s);
}
