/* SPDX-License-Identifier: MIT */
/*
 * The allocation seam (see alloc.h).  jemalloc's mallocx/sdallocx give the
 * library its own arenas without interposing on the application's malloc;
 * under ASan the seam uses libc so that ASan sees every block.
 */
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "smmu_config.h"
#include "util.h"

#if !SMMU_ALLOC_LIBC
#include <jemalloc/jemalloc.h>
#endif

static struct smmu__inject inject = SMMU_INJECT_INIT;
static _Atomic long live_blocks;

void smmu__alloc_fail_after(long n)
{
	smmu__inject_arm(&inject, n);
}

int smmu__alloc_failure_fired(void)
{
	return atomic_load(&inject.fired);
}

long smmu__alloc_live(void)
{
	return atomic_load(&live_blocks);
}

static int inject_failure(void)
{
	return smmu__inject_check(&inject);
}

static void *counted(void *p)
{
	if (p)
		atomic_fetch_add_explicit(&live_blocks, 1, memory_order_relaxed);
	return p;
}

void *smmu__malloc(size_t size)
{
	if (inject_failure())
		return NULL;
#if SMMU_ALLOC_LIBC
	return counted(malloc(size ? size : 1));
#else
	return counted(mallocx(size ? size : 1, 0));
#endif
}

void *smmu__zalloc(size_t size)
{
	if (inject_failure())
		return NULL;
#if SMMU_ALLOC_LIBC
	return counted(calloc(1, size ? size : 1));
#else
	return counted(mallocx(size ? size : 1, MALLOCX_ZERO));
#endif
}

void *smmu__zalloc_aligned(size_t align, size_t size)
{
	if (inject_failure())
		return NULL;
	size = size ? size : 1;
#if SMMU_ALLOC_LIBC
	size_t rounded = (size + align - 1) & ~(align - 1);
	void *p = aligned_alloc(align, rounded);
	if (p)
		memset(p, 0, rounded);
	return counted(p);
#else
	return counted(mallocx(size, MALLOCX_ALIGN(align) | MALLOCX_ZERO));
#endif
}

void *smmu__realloc(void *p, size_t old_size, size_t new_size)
{
	if (!p)
		return smmu__malloc(new_size);
	(void)old_size;
	if (inject_failure())
		return NULL;
#if SMMU_ALLOC_LIBC
	return realloc(p, new_size ? new_size : 1);
#else
	return rallocx(p, new_size ? new_size : 1, 0);
#endif
}

void smmu__free(void *p, size_t size)
{
	if (!p)
		return;
	atomic_fetch_sub_explicit(&live_blocks, 1, memory_order_relaxed);
#if SMMU_ALLOC_LIBC
	(void)size;
	free(p);
#else
	(void)size; /* sdallocx needs the exact usable class; dallocx is exact enough */
	dallocx(p, 0);
#endif
}
