/* SPDX-License-Identifier: MIT */
#ifndef SMMU_TEST_API_COMMON_H
#define SMMU_TEST_API_COMMON_H

/*
 * What the API tests share: shorthands, a pool + mm + CPU fixture, and
 * failure records for worker threads (Criterion asserts only on the main
 * thread).  Public headers only, like the tests.
 */

#include <criterion/criterion.h>
#include <stdio.h>

#include <softmmu/softmmu.h>

#define PS 4096u
#define RW (SMMU_PROT_READ | SMMU_PROT_WRITE)
#define R SMMU_PROT_READ
#define NONE SMMU_PROT_NONE
#define H ((smmu_addr_t)0x40000000)

/* A pool of frames 4 KiB frames (pool_flags: SMMU_POOL_*), an mm in mode
 * over it, and the calling thread registered as its CPU. */
struct env {
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
};

static inline void env_init(struct env *e, size_t frames, enum smmu_shootdown_mode mode, unsigned pool_flags)
{
	struct smmu_pool_config pc = { .size = frames * PS, .flags = pool_flags };
	cr_assert_eq(smmu_pool_create(&pc, &e->pool), 0);
	struct smmu_mm_config mc = { .mode = mode };
	cr_assert_eq(smmu_mm_create_ex(e->pool, &mc, &e->mm), 0);
	cr_assert_eq(smmu_cpu_register(e->mm, &e->cpu), 0);
}

/* Tear it down (the CPU only if still registered: e->cpu not NULL); every
 * frame must be back. */
static inline void env_fini(struct env *e)
{
	if (e->cpu)
		cr_assert_eq(smmu_cpu_unregister(e->cpu), 0);
	cr_assert_eq(smmu_mm_destroy(e->mm), 0);
	cr_assert_eq(smmu_pool_free_frames(e->pool), smmu_pool_frames(e->pool), "frames leaked");
	cr_assert_eq(smmu_pool_destroy(e->pool), 0);
}

/* Failures seen on a worker thread, asserted by the main thread. */
struct tfail {
	int failed;
	char why[240];
};

#define TCHECK(tf, cond, ...)                                                                              \
	do {                                                                                               \
		if (!(cond) && !(tf)->failed) {                                                            \
			(tf)->failed = 1;                                                                  \
			int n_ = snprintf((tf)->why, sizeof((tf)->why), "line %d: %s: ", __LINE__, #cond); \
			if (n_ > 0 && (size_t)n_ < sizeof((tf)->why))                                      \
				snprintf((tf)->why + n_, sizeof((tf)->why) - n_, __VA_ARGS__);             \
		}                                                                                          \
	} while (0)

#endif
