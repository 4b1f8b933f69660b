/* sandbox/spec.c - placeholder, being written. */
#include <stddef.h>
