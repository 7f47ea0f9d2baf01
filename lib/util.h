/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_UTIL_H
#define SMMU_LIB_UTIL_H

/* Small helpers shared by every module: the one die function, branch hints,
 * debug assertions, counters. */

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "smmu_config.h"

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define SMMU_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* "Cannot happen": print where and why, then abort. */
__attribute__((noreturn, format(printf, 3, 4))) void smmu__die(const char *file, int line, const char *fmt, ...);
#define SMMU_DIE(...) smmu__die(__FILE__, __LINE__, __VA_ARGS__)

/* Invariant checks: always evaluated in debug builds, compiled out otherwise. */
#if SMMU_DEBUG
#define SMMU_ASSERT(cond)                                                     \
	do {                                                                  \
		if (unlikely(!(cond)))                                        \
			smmu__die(__FILE__, __LINE__, "assertion failed: %s", #cond); \
	} while (0)
#else
#define SMMU_ASSERT(cond) ((void)0)
#endif

/* Magic numbers that tell a live object from garbage or a freed one, so
 * that bad handles are -EINVAL instead of a crash where we can tell. */
#define SMMU_POOL_MAGIC 0x736d6d75706f6f6cull /* "smmupool" */
#define SMMU_MM_MAGIC 0x736d6d756d6d2121ull   /* "smmumm!!" */
#define SMMU_CPU_MAGIC 0x736d6d7563707521ull  /* "smmucpu!" */
#define SMMU_DEAD_MAGIC 0xdeaddeaddeaddeadull

/* CLOCK_REALTIME now plus ns (< 1 s): a deadline for the timed waits that
 * ThreadSanitizer builds use so that signals get delivered. */
static inline struct timespec smmu__realtime_in(long ns)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += ns;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

/* Fault injection for tests: the nth check from arming (0 = the next)
 * fails, once; a negative n disarms.  Sync: atomics; tests arm it from one
 * thread while no other runs the code it guards. */
struct smmu__inject {
	_Atomic long countdown;
	atomic_int fired;
};
#define SMMU_INJECT_INIT { -1, 0 }

static inline void smmu__inject_arm(struct smmu__inject *in, long n)
{
	atomic_store(&in->fired, 0);
	atomic_store(&in->countdown, n < 0 ? -1 : n);
}

/* One check per guarded call: nonzero means "fail this one".  Disarmed, a
 * relaxed load and a branch. */
static inline int smmu__inject_check(struct smmu__inject *in)
{
	long n = atomic_load_explicit(&in->countdown, memory_order_relaxed);
	while (unlikely(n >= 0)) {
		if (atomic_compare_exchange_weak(&in->countdown, &n, n - 1)) {
			if (n == 0) {
				atomic_store(&in->fired, 1);
				return 1;
			}
			return 0;
		}
	}
	return 0;
}

static inline int smmu__is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

static inline unsigned smmu__log2(uint64_t x)
{
	return 63u - (unsigned)__builtin_clzll(x);
}

#endif
