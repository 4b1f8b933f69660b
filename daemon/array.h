/*
 * array.h - growing a malloc'd array by doubling, for the daemon's modules.
 */
#ifndef CASBOX_ARRAY_H
#define CASBOX_ARRAY_H

#include <stddef.h>

/* Grows *arr (elements of size elem, *cap of them) so that it holds at least
 * n + 1. 0 or -ENOMEM (*arr and *cap unchanged). */
int array_reserve(void **arr, size_t *cap, size_t n, size_t elem);

#endif
