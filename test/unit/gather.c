/* SPDX-License-Identifier: MIT */
/*
 * White-box tests of the mmu_gather (lib/gather.c): nothing is freed
 * before the flush that covers it, heap batch extension, the bounded mode,
 * the batch cap, the fallback when a batch cannot be allocated, reuse of
 * kept batches, and the flush ceiling (range vs full flush).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "cpu.h"
#include "gather.h"
#include "mm.h"
#include "pgtable.h"
#include "pool.h"

TestSuite(gather, .timeout = 60);

#define BATCH_ENTRIES ((SMMU_GATHER_BATCH_BYTES - sizeof(struct smmu__gather_batch)) / sizeof(uint64_t))

struct env {
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	size_t nframes, page_size;
	long live0;
};

static void env_init(struct env *e, size_t nframes, size_t page_size, bool with_cpu)
{
	e->live0 = smmu__alloc_live();
	e->nframes = nframes;
	e->page_size = page_size;
	struct smmu_pool_config cfg = {.size = nframes * page_size, .page_size = page_size, .flags = SMMU_POOL_POISON};
	cr_assert_eq(smmu_pool_create(&cfg, &e->pool), 0);
	cr_assert_eq(smmu_mm_create(e->pool, &e->mm), 0);
	e->cpu = NULL;
	if (with_cpu)
		cr_assert_eq(smmu_cpu_register(e->mm, &e->cpu), 0);
}

static void env_fini(struct env *e)
{
	if (e->cpu)
		cr_assert_eq(smmu_cpu_unregister(e->cpu), 0);
	cr_assert_eq(smmu_mm_destroy(e->mm), 0);
	cr_assert_eq(smmu_pool_free_frames(e->pool), e->nframes, "frames leaked");
	cr_assert_eq(smmu_pool_destroy(e->pool), 0);
	cr_assert_eq(smmu__alloc_live(), e->live0, "leak: %ld blocks", smmu__alloc_live() - e->live0);
}

static struct smmu_stats stats(struct smmu_mm *mm)
{
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(mm, &st), 0);
	return st;
}

static uint32_t new_frame(struct env *e)
{
	uint32_t f;
	cr_assert_eq(smmu__pool_alloc(e->pool, NULL, false, &f), 0);
	return f;
}

static bool tlb_holds(struct smmu_cpu *cpu, smmu_addr_t a)
{
	return smmu__tlb_entry(cpu, a)->read_tag == (a & ~(SMMU_TLB_GRANULE - 1));
}

static smmu_addr_t map(struct env *e, size_t pages, int prot, int flags)
{
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e->mm, 0, pages * e->page_size, prot, flags, &a), 0);
	return a;
}

/* ------------------------------------------------------------------- */

Test(gather, frames_freed_only_after_flush)
{
	struct env e;
	env_init(&e, 64, 4096, true);
	smmu_addr_t a = map(&e, 4, SMMU_PROT_READ | SMMU_PROT_WRITE, 0);
	smmu_store64(e.cpu, a, 0x1122334455667788ull);
	smmu_store64(e.cpu, a + 4096, 7);
	smmu_store64(e.cpu, a + 2 * 4096, 8); /* keeps the leaf table in use */
	cr_assert_eq(smmu_load64(e.cpu, a + 4096), 7);
	cr_assert(tlb_holds(e.cpu, a) && tlb_holds(e.cpu, a + 4096));
	cr_assert_neq(smmu__tlb_entry(e.cpu, a)->write_tag, SMMU_TLB_INVALID);
	uint32_t f0 = smmu__pte_frame(atomic_load(smmu__pt_lookup(e.mm->root, 12, a)));
	const uint64_t *h0 = smmu__frame_host(e.pool, f0);
	size_t nfree = smmu_pool_free_frames(e.pool);
	uint64_t gen = atomic_load(&e.mm->flush_gen);
	struct smmu_stats st0 = stats(e.mm);

	pthread_rwlock_wrlock(&e.mm->lock);
	struct smmu__gather g;
	smmu__gather_init(&g, e.mm, SMMU_GATHER_UNMAP);
	smmu__pt_zap(e.mm, &g, a, a + 2 * 4096);
	/* PTEs are gone, but the TLB still reaches the frames: they must not
	 * be free yet. */
	cr_assert_eq(atomic_load(smmu__pt_lookup(e.mm->root, 12, a)), 0);
	cr_assert(tlb_holds(e.cpu, a), "the zap itself does not flush");
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree, "a frame was freed before the flush");
	cr_assert_eq(atomic_load(&e.pool->frames[f0].refcount), 1);
	cr_assert_eq(h0[0], 0x1122334455667788ull, "contents intact (not poisoned) before the flush");
	cr_assert_eq(atomic_load(&e.mm->flush_gen), gen);

	smmu__gather_flush(&g);
	cr_assert(!tlb_holds(e.cpu, a) && !tlb_holds(e.cpu, a + 4096), "flushed");
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree + 2);
	cr_assert_eq(atomic_load(&e.pool->frames[f0].refcount), 0);
	cr_assert_eq(h0[0], 0x6b6b6b6b6b6b6b6bull, "poisoned once freed");
	cr_assert_eq(atomic_load(&e.mm->flush_gen), gen + 1);
	struct smmu_stats st1 = stats(e.mm);
	cr_assert_eq(st1.frames_freed - st0.frames_freed, 2);
	cr_assert_eq(st1.flush_range - st0.flush_range, 1);
	cr_assert_eq(st1.gathers - st0.gathers, 0);
	smmu__gather_finish(&g);
	pthread_rwlock_unlock(&e.mm->lock);
	struct smmu_stats st2 = stats(e.mm);
	cr_assert_eq(st2.gathers - st1.gathers, 1);
	cr_assert_eq(st2.flush_range - st1.flush_range, 0, "nothing left to flush");
	cr_assert_eq(st2.frames_freed - st1.frames_freed, 0);
	cr_assert_eq(smmu_munmap(e.mm, a, 4 * 4096), 0);
	env_fini(&e);
}

Test(gather, tables_freed_only_after_flush)
{
	struct env e;
	env_init(&e, 64, 4096, true);
	smmu_addr_t a = map(&e, 1, SMMU_PROT_READ | SMMU_PROT_WRITE, 0);
	smmu_store8(e.cpu, a, 1);
	long live = smmu__alloc_live();
	struct smmu__gather g;
	pthread_rwlock_wrlock(&e.mm->lock);
	smmu__gather_init(&g, e.mm, SMMU_GATHER_UNMAP);
	smmu__pt_zap(e.mm, &g, a, a + 4096);
	cr_assert(g.freed_tables);
	cr_assert_eq(smmu__alloc_live(), live, "unhooked tables stay allocated until the flush");
	smmu__gather_finish(&g);
	pthread_rwlock_unlock(&e.mm->lock);
	cr_assert_eq(smmu__alloc_live(), live - 3, "leaf, level 1 and level 2 tables freed");
	cr_assert_eq(stats(e.mm).tables_freed, 3);
	env_fini(&e);
}

Test(gather, batch_extension)
{
	struct env e;
	env_init(&e, 2048, 4096, true);
	const size_t n = SMMU_GATHER_LOCAL + 2 * BATCH_ENTRIES - 10; /* needs two heap batches */
	uint32_t *fr = malloc(n * sizeof(*fr));
	cr_assert(fr);
	for (size_t i = 0; i < n; i++)
		fr[i] = new_frame(&e);
	size_t nfree = smmu_pool_free_frames(e.pool);
	long live = smmu__alloc_live();
	struct smmu_stats st0 = stats(e.mm);
	struct smmu__gather g;
	smmu__gather_init(&g, e.mm, SMMU_GATHER_UNMAP);
	for (size_t i = 0; i < n; i++) {
		smmu__gather_frame(&g, fr[i]);
		unsigned want = i < SMMU_GATHER_LOCAL ? 0 : i < SMMU_GATHER_LOCAL + BATCH_ENTRIES ? 1 : 2;
		cr_assert_eq(g.nbatches, want, "after %zu frames", i + 1);
	}
	cr_assert_eq(stats(e.mm).batch_extensions - st0.batch_extensions, 2);
	cr_assert_eq(smmu__alloc_live(), live + 2);
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree, "no early free while the batch can grow");
	smmu__gather_finish(&g);
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree + n);
	cr_assert_eq(smmu__alloc_live(), live, "heap batches released");
	struct smmu_stats st1 = stats(e.mm);
	cr_assert_eq(st1.frames_freed - st0.frames_freed, n);
	cr_assert_eq(st1.batch_fallbacks - st0.batch_fallbacks, 0);
	free(fr);
	env_fini(&e);
}

Test(gather, kept_batches_are_reused_after_a_flush)
{
	struct env e;
	env_init(&e, 512, 4096, false);
	uint32_t fr[200];
	struct smmu__gather g;
	smmu__gather_init(&g, e.mm, SMMU_GATHER_UNMAP);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 200; i++)
			fr[i] = new_frame(&e);
		for (int i = 0; i < 200; i++)
			smmu__gather_frame(&g, fr[i]);
		cr_assert_eq(g.nbatches, 1, "round %d", round);
		smmu__gather_flush(&g);
		cr_assert_eq(smmu_pool_free_frames(e.pool), e.nframes);
	}
	cr_assert_eq(stats(e.mm).batch_extensions, 1, "one heap batch, reused");
	smmu__gather_finish(&g);
	env_fini(&e);
}

Test(gather, bounded_never_extends)
{
	struct env e;
	env_init(&e, 512, 4096, true);
	smmu_addr_t a = map(&e, 1, SMMU_PROT_READ | SMMU_PROT_WRITE, 0);
	smmu_store8(e.cpu, a, 1);
	uint32_t fr[300];
	for (int i = 0; i < 300; i++)
		fr[i] = new_frame(&e);
	size_t nfree = smmu_pool_free_frames(e.pool);
	long live = smmu__alloc_live();
	struct smmu_stats st0 = stats(e.mm);
	struct smmu__gather g;
	smmu__gather_init(&g, e.mm, SMMU_GATHER_BOUNDED);
	smmu__gather_range(&g, a, a + 4096); /* as if a's PTE had been cleared */
	for (int i = 0; i < 300; i++) {
		smmu__gather_frame(&g, fr[i]);
		cr_assert_eq(g.nbatches, 0);
		cr_assert_eq(smmu__alloc_live(), live, "bounded mode allocated");
		/* Every 65th frame flushes the 64 before it. */
		size_t early = (size_t)(i / SMMU_GATHER_LOCAL) * SMMU_GATHER_LOCAL;
		cr_assert_eq(smmu_pool_free_frames(e.pool), nfree + early, "after %d frames", i + 1);
		if (i == SMMU_GATHER_LOCAL)
			cr_assert(!tlb_holds(e.cpu, a), "an early flush covers the range recorded so far");
	}
	smmu__gather_finish(&g);
	struct smmu_stats st1 = stats(e.mm);
	cr_assert_eq(st1.batch_extensions - st0.batch_extensions, 0);
	cr_assert_eq(st1.batch_fallbacks - st0.batch_fallbacks, 0);
	cr_assert_eq(st1.frames_freed - st0.frames_freed, 300);
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree + 300);
	env_fini(&e);
}

Test(gather, batch_cap_flushes_early)
{
	struct env e;
	env_init(&e, 16, 4096, false);
	const size_t cap = SMMU_GATHER_LOCAL + (size_t)SMMU_GATHER_MAX_BATCHES * BATCH_ENTRIES;
	/* One frame queued cap + 1 times (a frame mapped cap + 2 times). */
	uint32_t f = new_frame(&e);
	for (size_t i = 0; i < cap + 1; i++)
		smmu__pool_get(e.pool, f);
	long live = smmu__alloc_live();
	struct smmu__gather g;
	smmu__gather_init(&g, e.mm, SMMU_GATHER_UNMAP);
	for (size_t i = 0; i < cap; i++)
		smmu__gather_frame(&g, f);
	cr_assert_eq(g.nbatches, SMMU_GATHER_MAX_BATCHES);
	cr_assert_eq(smmu__alloc_live(), live + SMMU_GATHER_MAX_BATCHES);
	cr_assert_eq(atomic_load(&e.pool->frames[f].refcount), cap + 2, "nothing dropped yet");
	smmu__gather_frame(&g, f); /* full: flush early instead of growing */
	cr_assert_eq(g.nbatches, SMMU_GATHER_MAX_BATCHES);
	cr_assert_eq(atomic_load(&e.pool->frames[f].refcount), 2);
	struct smmu_stats st = stats(e.mm);
	cr_assert_eq(st.batch_extensions, SMMU_GATHER_MAX_BATCHES);
	cr_assert_eq(st.batch_fallbacks, 0, "the cap is not an allocation failure");
	smmu__gather_finish(&g);
	cr_assert_eq(atomic_load(&e.pool->frames[f].refcount), 1);
	cr_assert_eq(smmu__alloc_live(), live);
	smmu__pool_put_frames(e.pool, &f, 1);
	env_fini(&e);
}

Test(gather, fallback_when_batch_allocation_fails)
{
	struct env e;
	env_init(&e, 512, 4096, true);
	uint32_t fr[200];
	for (int i = 0; i < 200; i++)
		fr[i] = new_frame(&e);
	size_t nfree = smmu_pool_free_frames(e.pool);
	long live = smmu__alloc_live();
	struct smmu_stats st0 = stats(e.mm);
	struct smmu__gather g;
	smmu__gather_init(&g, e.mm, SMMU_GATHER_UNMAP);
	for (int i = 0; i < SMMU_GATHER_LOCAL; i++)
		smmu__gather_frame(&g, fr[i]);
	smmu__alloc_fail_after(0);
	smmu__gather_frame(&g, fr[SMMU_GATHER_LOCAL]);
	bool fired = smmu__alloc_failure_fired();
	smmu__alloc_fail_after(-1);
	cr_assert(fired, "the 65th frame needed a heap batch");
	cr_assert_eq(g.nbatches, 0);
	cr_assert_eq(stats(e.mm).batch_fallbacks - st0.batch_fallbacks, 1);
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree + SMMU_GATHER_LOCAL, "flushed and freed early");
	cr_assert_eq(smmu__alloc_live(), live);
	/* Allocation works again: the gather grows as usual. */
	for (int i = SMMU_GATHER_LOCAL + 1; i < 200; i++)
		smmu__gather_frame(&g, fr[i]);
	cr_assert_eq(g.nbatches, 1);
	smmu__gather_finish(&g);
	struct smmu_stats st1 = stats(e.mm);
	cr_assert_eq(st1.batch_extensions - st0.batch_extensions, 1);
	cr_assert_eq(st1.batch_fallbacks - st0.batch_fallbacks, 1);
	cr_assert_eq(st1.frames_freed - st0.frames_freed, 200);
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree + 200);
	cr_assert_eq(smmu__alloc_live(), live);
	env_fini(&e);
}

Test(gather, munmap_absorbs_batch_allocation_failure)
{
	struct env e;
	env_init(&e, 512, 4096, true);
	smmu_addr_t a = map(&e, 200, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE);
	for (int i = 0; i < 200; i++)
		smmu_store32(e.cpu, a + (smmu_addr_t)i * 4096, (uint32_t)i);
	size_t nfree = smmu_pool_free_frames(e.pool);
	struct smmu_stats st0 = stats(e.mm);
	smmu__alloc_fail_after(0); /* munmap's first allocation: the heap batch */
	int err = smmu_munmap(e.mm, a, 200 * 4096);
	bool fired = smmu__alloc_failure_fired();
	smmu__alloc_fail_after(-1);
	cr_assert(fired);
	cr_assert_eq(err, 0, "a batch failure is a slower path, not an error");
	struct smmu_stats st1 = stats(e.mm);
	cr_assert_geq(st1.batch_fallbacks - st0.batch_fallbacks, 1);
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree + 200);
	struct smmu_region r;
	cr_assert_eq(smmu_mm_find(e.mm, 0, &r), -ENOENT);
	uint32_t v;
	cr_assert_eq(smmu_try_load32(e.cpu, a + 4096, &v), -EFAULT);
	env_fini(&e);
}

/* ---------------------------------------------------------- ceiling */

static void ceiling_case(size_t page_size)
{
	struct env e;
	env_init(&e, 512, page_size, true);
	const smmu_addr_t base = (smmu_addr_t)1 << 32;
	struct smmu__gather g;
	for (unsigned pages = SMMU_FLUSH_CEILING - 1; pages <= SMMU_FLUSH_CEILING + 2; pages++) {
		struct smmu_stats st0 = stats(e.mm);
		smmu__gather_init(&g, e.mm, SMMU_GATHER_UNMAP);
		smmu__gather_range(&g, base, base + pages * page_size);
		smmu__gather_finish(&g);
		struct smmu_stats st1 = stats(e.mm);
		bool full = pages > SMMU_FLUSH_CEILING;
		cr_assert_eq(st1.flush_full - st0.flush_full, full, "%u pages of %zu bytes", pages, page_size);
		cr_assert_eq(st1.flush_range - st0.flush_range, !full, "%u pages of %zu bytes", pages, page_size);
	}
	env_fini(&e);
}

Test(gather, ceiling_range_vs_full)
{
	ceiling_case(4096);
	ceiling_case(16384);
}

Test(gather, ceiling_through_munmap_and_mprotect)
{
	struct env e;
	env_init(&e, 512, 4096, true);
	/* 300 pages inside one leaf table's span, so no table is freed and
	 * the range is exactly the pages. */
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e.mm, (smmu_addr_t)1 << 32, 300 * 4096, SMMU_PROT_READ | SMMU_PROT_WRITE,
			       SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &a),
		     0);
	for (int i = 0; i < 300; i++)
		smmu_store8(e.cpu, a + (smmu_addr_t)i * 4096, 1);
	struct smmu_stats s0 = stats(e.mm), s1;

	cr_assert_eq(smmu_mprotect(e.mm, a, SMMU_FLUSH_CEILING * 4096, SMMU_PROT_READ), 0);
	s1 = stats(e.mm);
	cr_assert_eq(s1.flush_range - s0.flush_range, 1);
	cr_assert_eq(s1.flush_full - s0.flush_full, 0);
	cr_assert(!tlb_holds(e.cpu, a));
	cr_assert(tlb_holds(e.cpu, a + SMMU_FLUSH_CEILING * 4096), "a range flush keeps the rest");

	s0 = s1;
	cr_assert_eq(smmu_mprotect(e.mm, a, 300 * 4096, SMMU_PROT_READ | SMMU_PROT_WRITE), 0);
	s1 = stats(e.mm);
	cr_assert_eq(s1.flush_range - s0.flush_range, 0, "more access needs no flush");
	cr_assert_eq(s1.flush_full - s0.flush_full, 0);
	cr_assert_eq(s1.gathers - s0.gathers, 1);

	s0 = s1;
	cr_assert_eq(smmu_munmap(e.mm, a + 100 * 4096, SMMU_FLUSH_CEILING * 4096), 0);
	s1 = stats(e.mm);
	cr_assert_eq(s1.flush_range - s0.flush_range, 1);
	cr_assert_eq(s1.flush_full - s0.flush_full, 0);

	s0 = s1;
	cr_assert_eq(smmu_munmap(e.mm, a + 200 * 4096, (SMMU_FLUSH_CEILING + 1) * 4096), 0);
	s1 = stats(e.mm);
	cr_assert_eq(s1.flush_range - s0.flush_range, 0);
	cr_assert_eq(s1.flush_full - s0.flush_full, 1);
	env_fini(&e);
}

Test(gather, fullmm_and_empty)
{
	struct env e;
	env_init(&e, 64, 4096, true);
	smmu_addr_t a = map(&e, 2, SMMU_PROT_READ | SMMU_PROT_WRITE, 0);
	smmu_store8(e.cpu, a, 1);
	struct smmu_stats s0 = stats(e.mm), s1;
	uint64_t gen = atomic_load(&e.mm->flush_gen);
	struct smmu__gather g;
	/* Nothing recorded: no flush at all. */
	smmu__gather_init(&g, e.mm, SMMU_GATHER_UNMAP);
	smmu__gather_finish(&g);
	s1 = stats(e.mm);
	cr_assert_eq(s1.flush_full + s1.flush_range, s0.flush_full + s0.flush_range);
	cr_assert_eq(s1.gathers - s0.gathers, 1);
	cr_assert_eq(atomic_load(&e.mm->flush_gen), gen);
	cr_assert(tlb_holds(e.cpu, a));
	/* FULLMM: one full flush, whatever was recorded. */
	smmu__gather_init(&g, e.mm, SMMU_GATHER_FULLMM);
	smmu__gather_finish(&g);
	s0 = s1;
	s1 = stats(e.mm);
	cr_assert_eq(s1.flush_full - s0.flush_full, 1);
	cr_assert_eq(s1.flush_range - s0.flush_range, 0);
	cr_assert(!tlb_holds(e.cpu, a));
	cr_assert_eq(atomic_load(&e.mm->flush_gen), gen + 1);
	env_fini(&e);
}
