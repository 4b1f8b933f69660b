/*
 * names.c - Prometheus' naming rules for metric and label names, checked at
 * registration so that a scrape never fails on a name we chose.
 */
#include <string.h>

#include "metrics.h"

static bool metrics_name_char(char c, bool first, bool colon)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
        return true;
    if (colon && c == ':')
        return true;
    return !first && c >= '0' && c <= '9';
}

bool metrics_name_valid(const char *name)
{
    if (name == NULL || name[0] == '\0' || strlen(name) > 200)
        return false;
    for (size_t i = 0; name[i] != '\0'; i++) {
        if (!metrics_name_char(name[i], i == 0, true))
            return false;
    }
    return true;
}

bool metrics_label_name_valid(const char *name)
{
    if (name == NULL || name[0] == '\0' || strlen(name) > 100 || strncmp(name, "__", 2) == 0)
        return false;
    for (size_t i = 0; name[i] != '\0'; i++) {
        if (!metrics_name_char(name[i], i == 0, false))
            return false;
    }
    return true;
}
