/* SPDX-License-Identifier: MIT */
/* The one place a "cannot happen" ends. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

void smmu__die(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "libsoftmmu: fatal: %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}
