/* daemon/log.c - placeholder, being written. */
#include <stddef.h>
