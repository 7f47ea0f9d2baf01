/* SPDX-License-Identifier: MIT */
/*
 * Catching up (shootdown.c): a CPU that was offline while other threads
 * flushed replays the logged ranges - only those - and flushes everything
 * once it is further behind than the log holds.
 */
#include <criterion/criterion.h>

#include <pthread.h>

#include <softmmu/softmmu.h>

#include "cpu.h"
#include "mm.h"

#define PAGE 4096u

static struct smmu_pool *pool;
static struct smmu_mm *mm;
static smmu_addr_t base;

struct unmap_args {
	smmu_addr_t addr;
	int n; /* unmap and remap this many times */
};

/* Another thread (no CPU): its flushes reach no TLB directly. */
static void *remap(void *arg)
{
	struct unmap_args *u = arg;
	for (int i = 0; i < u->n; i++) {
		smmu_addr_t got;
		cr_assert_eq(smmu_munmap(mm, u->addr, PAGE), 0);
		cr_assert_eq(smmu_mmap(mm, u->addr, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE,
				       SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &got),
			     0);
	}
	return NULL;
}

static bool cached(struct smmu_cpu *cpu, smmu_addr_t a)
{
	return smmu__tlb_entry(cpu, a)->read_tag == a;
}

static void run(int flushes, bool expect_all)
{
	struct smmu_pool_config cfg = { .size = 1 << 20 };
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
	cr_assert_eq(smmu_mmap(mm, 0, 16 * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE, &base), 0);
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	smmu_load64(cpu, base);
	smmu_load64(cpu, base + 8 * PAGE);
	cr_assert(cached(cpu, base) && cached(cpu, base + 8 * PAGE));
	cr_assert_eq(smmu_cpu_offline(cpu), 0);
	struct unmap_args u = { base + 8 * PAGE, flushes };
	pthread_t t;
	pthread_create(&t, NULL, remap, &u);
	pthread_join(t, NULL);
	cr_assert(cached(cpu, base + 8 * PAGE), "an offline CPU was flushed");
	cr_assert_eq(smmu_cpu_online(cpu), 0);
	cr_assert_not(cached(cpu, base + 8 * PAGE), "the remapped page's old entry survived coming online");
	cr_assert_eq(cached(cpu, base), !expect_all, "%s",
		     expect_all ? "too far behind: everything should be flushed"
				: "within the log: only the logged range should be flushed");
	cr_assert_eq(smmu__cpu_of(cpu)->seen_gen, atomic_load(&mm->flush_gen));
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	cr_assert_eq(smmu_munmap(mm, base, 16 * PAGE), 0);
	cr_assert_eq(smmu_mm_destroy(mm), 0);
	cr_assert_eq(smmu_pool_destroy(pool), 0);
}

Test(catchup, within_the_log_replays_ranges)
{
	run(3, false);
}

Test(catchup, at_the_log_size_still_replays)
{
	run(SMMU_FLUSH_LOG, false);
}

Test(catchup, beyond_the_log_flushes_all)
{
	run(SMMU_FLUSH_LOG + 1, true);
}
