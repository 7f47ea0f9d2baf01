/* SPDX-License-Identifier: MIT */
/*
 * Linked into every Criterion test executable of a ThreadSanitizer build
 * (SMMU_SANITIZE=thread), and nowhere else.
 *
 * Why: Criterion's sandbox (BoxFort) maps its "inheritable arena" at an
 * address it picks with rand_r() in [0x200000000000, 0x600000000000), after
 * checking with mincore() that the spot is free.  Under TSan nearly all of
 * that range is TSan's shadow, meta shadow or protected gaps; only the
 * "mid app" range 0x550000000000-0x568000000000 (where PIE binaries live)
 * is usable, so the pick fails within its few tries and every test binary
 * dies with "criterion: Could not initialize inheritable arena: Resource
 * temporarily unavailable" (Criterion issue #274, open upstream).
 *
 * How: this rand_r, defined in the executable, interposes on libc's for the
 * whole process.  Called from libcriterion it returns a random slot index
 * that BoxFort turns into an address inside the mid app range (base
 * 0x200000000000 + index * 16 MiB); called from anywhere else it is the real
 * rand_r.  BoxFort still checks that the slot is free before it maps it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#define BXF_MMAP_BASE 0x200000000000ull
#define BXF_MMAP_OFF (1ull << 24)
#define TSAN_MID_APP_BEG 0x550000000000ull
#define TSAN_MID_APP_END 0x568000000000ull

static int called_from_criterion(const void *ret)
{
	Dl_info info;

	return dladdr(ret, &info) && info.dli_fname && strstr(info.dli_fname, "libcriterion");
}

int rand_r(unsigned int *seed)
{
	static int (*real_rand_r)(unsigned int *); /* relaxed atomics: idempotent lazy init */
	const unsigned first = (unsigned)((TSAN_MID_APP_BEG - BXF_MMAP_BASE) / BXF_MMAP_OFF);
	const unsigned slots = (unsigned)((TSAN_MID_APP_END - TSAN_MID_APP_BEG) / BXF_MMAP_OFF);

	if (!called_from_criterion(__builtin_return_address(0))) {
		int (*real)(unsigned int *) = __atomic_load_n(&real_rand_r, __ATOMIC_RELAXED);
		if (!real) {
			real = (int (*)(unsigned int *))dlsym(RTLD_NEXT, "rand_r");
			__atomic_store_n(&real_rand_r, real, __ATOMIC_RELAXED);
		}
		return real(seed);
	}
	*seed = *seed * 1103515245u + 12345u;
	return (int)(first + (*seed >> 8) % slots);
}
