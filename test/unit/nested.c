/* SPDX-License-Identifier: MIT */
/*
 * Overlapping gathers on one mm (Linux's tlb_flush_pending): gather A has
 * cleared a PTE and dropped the mapping lock but not yet flushed; gather B
 * then finds that PTE empty and records nothing.  B must still not return
 * while a CPU can use the old translation: it sees A in flight and flushes
 * everything.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#include <softmmu/softmmu.h>

#include "cpu.h"
#include "gather.h"
#include "mm.h"
#include "pgtable.h"
#include "region.h"

#define PAGE 4096u

static struct smmu_pool *pool;
static struct smmu_mm *mm;
static smmu_addr_t base;
static atomic_int cmd, state, result;
static uint64_t value;
#define STAMP 0xabcdef0123456789ull

/* CPU X: caches the page, then loads it on command. */
static void *cpu_x(void *arg)
{
	(void)arg;
	struct smmu_cpu *cpu;
	uint64_t v = 0;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	cr_assert_eq(smmu_try_store64(cpu, base, STAMP), 0); /* cached, writable */
	atomic_store(&state, 1);
	while (atomic_load(&cmd) != 1)
		; /* outside any access: answers shootdowns at once */
	atomic_store(&result, smmu_try_load64(cpu, base, &v));
	value = v;
	atomic_store(&state, 2);
	while (atomic_load(&cmd) != 2)
		;
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	return NULL;
}

static void run(bool second_is_mprotect)
{
	struct smmu_pool_config cfg = { .size = 1 << 20, .flags = SMMU_POOL_POISON };
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
	cr_assert_eq(smmu_mmap(mm, 0, 4 * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE, &base), 0);
	atomic_store(&cmd, 0);
	atomic_store(&state, 0);
	pthread_t t;
	pthread_create(&t, NULL, cpu_x, NULL);
	while (atomic_load(&state) != 1)
		;

	/* Gather A: clear the first page and drop the lock, as munmap does,
	 * but do not flush yet. */
	struct smmu__gather a;
	smmu__mm_wrlock(mm);
	smmu__gather_init(&a, mm, SMMU_GATHER_UNMAP);
	smmu__pt_zap(mm, &a, base, base + PAGE);
	pthread_rwlock_unlock(&mm->lock);

	/* Gather B over the same page finds nothing to clear. */
	struct smmu_stats before, after;
	cr_assert_eq(smmu_stats_get(mm, &before), 0);
	if (second_is_mprotect)
		cr_assert_eq(smmu_mprotect(mm, base, PAGE, SMMU_PROT_READ), 0);
	else
		cr_assert_eq(smmu_munmap(mm, base, PAGE), 0);
	cr_assert_eq(smmu_stats_get(mm, &after), 0);
	cr_assert_eq(after.shootdowns_nested - before.shootdowns_nested, 1, "B did not see A in flight");

	atomic_store(&cmd, 1);
	while (atomic_load(&state) != 2)
		;
	/* The page is gone (munmap) or freshly demand-zeroed (mprotect: the
	 * region stays): either way not the old frame's stamp. */
	cr_assert(!(atomic_load(&result) == 0 && value == STAMP),
		  "X still used the translation A cleared after B returned (A had not flushed yet)");

	smmu__gather_finish(&a); /* A flushes and frees now */
	atomic_store(&cmd, 2);
	pthread_join(t, NULL);
	cr_assert_eq(smmu_munmap(mm, base, 4 * PAGE), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), smmu_pool_frames(pool));
	cr_assert_eq(smmu_mm_destroy(mm), 0);
	cr_assert_eq(smmu_pool_destroy(pool), 0);
}

Test(nested, munmap_during_an_unflushed_gather_flushes_all, .timeout = 30)
{
	run(false);
}

Test(nested, mprotect_during_an_unflushed_gather_flushes_all, .timeout = 30)
{
	run(true);
}
