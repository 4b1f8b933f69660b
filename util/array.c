/*
 * array.c - growing a malloc'd array by doubling (util.h).
 */
#include "util.h"

#include <errno.h>
#include <stdlib.h>

int array_reserve(void **arr, size_t *cap, size_t n, size_t elem)
{
    size_t new_cap;
    void *p;

    if (n < *cap)
        return 0;
    new_cap = *cap ? *cap * 2 : 8;
    while (new_cap <= n)
        new_cap *= 2;
    p = realloc(*arr, new_cap * elem);
    if (p == NULL)
        return -ENOMEM;
    *arr = p;
    *cap = new_cap;
    return 0;
}
