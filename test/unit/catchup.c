/* SPDX-License-Identifier: MIT */
/*
 * Catching up (shootdown.c): a CPU that was offline while other threads
 * flushed replays the logged ranges - only those - and flushes everything
 * once it is further behind than the log holds; and it reads the log
 * without a lock while initiators keep writing it.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include <softmmu/softmmu.h>

#include "cpu.h"
#include "mm.h"
#include "shootdown.h"

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

/* ------------------------------------------------ the log read without a lock */

#define HPAGES 64
#define HLOGS 1000000

static struct {
	uint64_t first_gen;
	unsigned char page[HLOGS]; /* page[g - first_gen]: the page logged as generation g */
	atomic_bool done;
} hw;

/* Logs one-page ranges in bursts, as initiators would (no PTE changes:
 * only the log and the generation are under test). */
static void *log_writer(void *arg)
{
	uint64_t seed = (uintptr_t)arg;
	for (size_t i = 0; i < HLOGS;) {
		unsigned burst = 1 + (unsigned)(seed % 24);
		for (unsigned k = 0; k < burst && i < HLOGS; k++, i++) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			unsigned p = (unsigned)(seed >> 58); /* 0..63 */
			uint64_t g = smmu__flush_log(mm, base + p * PAGE, base + (p + 1) * PAGE);
			cr_assert_eq(g, hw.first_gen + i, "generations are not consecutive");
			hw.page[i] = (unsigned char)p;
		}
		for (volatile unsigned spin = (unsigned)(seed >> 40) % 2000; spin; spin--)
			;
	}
	atomic_store(&hw.done, true);
	return NULL;
}

struct catchup_result {
	uint64_t from, to, still; /* seen_gen before and after, pages still cached */
};

/* A CPU catches up over and over while a thread keeps logging: every page
 * logged in a generation it caught up past must be gone from its TLB
 * (whether it replayed the records or, finding one overwritten or being
 * rewritten, flushed everything). */
static void hammer_log(uint64_t seed)
{
	struct smmu_pool_config cfg = { .size = 1 << 20 };
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
	cr_assert_eq(smmu_mmap(mm, 0, HPAGES * PAGE, SMMU_PROT_READ, SMMU_MAP_POPULATE, &base), 0);
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	struct smmu__cpu *c = smmu__cpu_of(cpu);
	hw.first_gen = atomic_load(&mm->flush_gen) + 1;
	atomic_store(&hw.done, false);
	size_t cap = 1 << 18, n = 0;
	struct catchup_result *res = calloc(cap, sizeof(*res));
	cr_assert_not_null(res);
	pthread_t t;
	pthread_create(&t, NULL, log_writer, (void *)(uintptr_t)seed);
	while (!atomic_load(&hw.done) && n < cap) {
		for (unsigned p = 0; p < HPAGES; p++)
			smmu_load64(cpu, base + p * PAGE);
		res[n].from = c->seen_gen;
		smmu__tlb_catch_up(c);
		res[n].to = c->seen_gen;
		res[n].still = 0;
		for (unsigned p = 0; p < HPAGES; p++)
			if (cached(cpu, base + p * PAGE))
				res[n].still |= 1ull << p;
		n++;
	}
	pthread_join(t, NULL);
	size_t partial = 0, all = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t gone = 0;
		cr_assert_geq(res[i].from + 1, hw.first_gen);
		for (uint64_t g = res[i].from + 1; g <= res[i].to; g++)
			gone |= 1ull << hw.page[g - hw.first_gen];
		cr_assert_eq(res[i].still & gone, 0,
			     "catch-up %zu over generations %llu..%llu kept pages %#llx that they flushed", i,
			     (unsigned long long)res[i].from + 1, (unsigned long long)res[i].to,
			     (unsigned long long)(res[i].still & gone));
		if (res[i].to > res[i].from)
			res[i].still ? partial++ : all++;
	}
	cr_log_info("%zu catch-ups: %zu replayed the log, %zu flushed everything (or every page was logged)", n,
		    partial, all);
	free(res);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	cr_assert_eq(smmu_munmap(mm, base, HPAGES * PAGE), 0);
	cr_assert_eq(smmu_mm_destroy(mm), 0);
	cr_assert_eq(smmu_pool_destroy(pool), 0);
}

Test(catchup, lock_free_reads_of_a_log_being_written, .timeout = 300)
{
	/* A torn read needs the writer to rewrite the very record being
	 * copied: rare per round, so several rounds. */
	for (uint64_t seed = 1; seed <= 10; seed++)
		hammer_log(seed * 12345);
}
