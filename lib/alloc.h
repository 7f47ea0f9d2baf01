/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_ALLOC_H
#define SMMU_LIB_ALLOC_H

/*
 * The library's one allocation seam.  Every byte of metadata (page-table
 * pages, gather batches, region arrays, CPU state, frame descriptors) comes
 * from here: jemalloc's own non-standard API (mallocx/sdallocx, which never
 * replaces the application's malloc), or libc under AddressSanitizer, which
 * wants to own every allocation itself.
 *
 * Tests can make the Nth call from now fail and can count live blocks, so a
 * fault-injection test walks every allocation site and proves no leak.
 */

#include <stddef.h>

/* size bytes, uninitialised; NULL on failure. */
void *smmu__malloc(size_t size);
/* size bytes, zeroed, aligned to align (a power of two); NULL on failure. */
void *smmu__zalloc_aligned(size_t align, size_t size);
/* size bytes, zeroed; NULL on failure. */
void *smmu__zalloc(size_t size);
/* Grow or shrink a smmu__malloc block; NULL (and p untouched) on failure. */
void *smmu__realloc(void *p, size_t old_size, size_t new_size);
/* Free a block; size is the size it was allocated with.  NULL is a no-op. */
void smmu__free(void *p, size_t size);

/* Fault injection, for tests: the nth allocation from now (0 = the next)
 * fails; a negative n disables injection.  Global, atomic. */
void smmu__alloc_fail_after(long n);
/* Whether an injected failure has fired since the last smmu__alloc_fail_after. */
int smmu__alloc_failure_fired(void);
/* Blocks allocated and not yet freed, process-wide. */
long smmu__alloc_live(void);

#endif
