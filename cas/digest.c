/* cas/digest.c - placeholder, being written. */
#include <stddef.h>
