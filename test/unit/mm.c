/* SPDX-License-Identifier: MIT */
/*
 * White-box tests of address spaces (lib/mm.c): random mmap / munmap /
 * mprotect / touch sequences with the page table checked against the
 * region set after every step, placement and the address-space limit for
 * every supported page size, and teardown.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "cpu.h"
#include "mm.h"
#include "pgtable.h"
#include "pool.h"
#include "region.h"

TestSuite(mm, .timeout = 60);

#define RW (SMMU_PROT_READ | SMMU_PROT_WRITE)

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static smmu_pte_t pte_at(struct smmu_mm *mm, smmu_addr_t a)
{
	_Atomic smmu_pte_t *slot = smmu__pt_lookup(mm->root, mm->page_shift, a);
	return slot ? atomic_load(slot) : 0;
}

/* Tables below t (and, at the leaves, PTEs); no table in the tree is
 * empty. */
static unsigned count_level(struct smmu__ptable *t, unsigned level, unsigned *leaf_ptes)
{
	unsigned n = 0, used = 0;
	for (unsigned i = 0; i < SMMU_PT_ENTRIES; i++) {
		smmu_pte_t e = atomic_load(&t->e[i]);
		if (!e)
			continue;
		used++;
		if (level > 0)
			n += 1 + count_level(smmu__pt_child(e), level - 1, leaf_ptes);
	}
	if (level == 0)
		*leaf_ptes += used;
	if (level < SMMU_PT_LEVELS - 1)
		cr_assert_gt(used, 0, "an empty level-%u table stayed in the tree", level);
	return n;
}

/* ------------------------------------------------ random ops vs tables */

#define NP 1100 /* pages: more than two leaf tables */

Test(mm, random_api_ops_keep_page_table_consistent)
{
	long live0 = smmu__alloc_live();
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	struct smmu_pool_config cfg = {.size = (NP + 64) * 4096, .flags = SMMU_POOL_POISON};
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	const smmu_addr_t B = ((smmu_addr_t)1 << 30) - 300 * 4096; /* straddles 1 GiB */
	static int prot[NP];                                       /* -1 unmapped */
	static uint8_t val[NP];                                    /* expected first byte; only meaningful if touched */
	static bool touched[NP];                                   /* has a frame */
	uint64_t seed = 31337;
	const int prots[3] = {SMMU_PROT_NONE, SMMU_PROT_READ, RW};
	for (int i = 0; i < NP; i++)
		prot[i] = -1;

	for (int step = 0; step < 1500; step++) {
		unsigned lo = (unsigned)(rng_next(&seed) % NP);
		unsigned len = 1 + (unsigned)(rng_next(&seed) % (rng_next(&seed) % 5 ? 16 : 400));
		unsigned hi = lo + len > NP ? NP : lo + len;
		smmu_addr_t a = B + (smmu_addr_t)lo * 4096, out;
		size_t bytes = (size_t)(hi - lo) * 4096;
		unsigned op = (unsigned)(rng_next(&seed) % 8);
		int p = prots[rng_next(&seed) % 3];
		if (op < 2) { /* mmap FIXED (replacing) */
			bool populate = rng_next(&seed) % 3 == 0;
			cr_assert_eq(
				smmu_mmap(mm, a, bytes, p, SMMU_MAP_FIXED | (populate ? SMMU_MAP_POPULATE : 0), &out),
				0, "step %d", step);
			for (unsigned i = lo; i < hi; i++) {
				prot[i] = p;
				touched[i] = populate && p != SMMU_PROT_NONE;
				val[i] = 0;
			}
		} else if (op < 4) { /* munmap */
			cr_assert_eq(smmu_munmap(mm, a, bytes), 0);
			for (unsigned i = lo; i < hi; i++)
				prot[i] = -1;
		} else if (op < 6) { /* mprotect: covered or -ENOMEM */
			bool covered = true;
			for (unsigned i = lo; i < hi; i++)
				covered &= prot[i] >= 0;
			int err = smmu_mprotect(mm, a, bytes, p);
			cr_assert_eq(err, covered ? 0 : -ENOMEM, "step %d", step);
			if (covered)
				for (unsigned i = lo; i < hi; i++)
					prot[i] = p;
		} else { /* touch a few pages */
			for (unsigned i = lo; i < hi && i < lo + 8; i++) {
				uint8_t v = (uint8_t)rng_next(&seed);
				int err = smmu_try_store8(cpu, B + (smmu_addr_t)i * 4096, v);
				int want = prot[i] < 0 ? -EFAULT : prot[i] != RW ? -EACCES : 0;
				cr_assert_eq(err, want, "step %d page %u", step, i);
				if (!err) {
					touched[i] = true;
					val[i] = v;
				}
				uint8_t r;
				err = smmu_try_load8(cpu, B + (smmu_addr_t)i * 4096, &r);
				want = prot[i] < 0 ? -EFAULT : prot[i] == SMMU_PROT_NONE ? -EACCES : 0;
				cr_assert_eq(err, want, "step %d page %u", step, i);
				if (!err) {
					if (!touched[i])
						touched[i] = true, val[i] = 0;
					cr_assert_eq(r, val[i], "step %d page %u", step, i);
				}
			}
		}
		/* The region set is the model; PTEs exist only inside regions,
		 * carry the region's protection, and hold the frames that the pool
		 * is missing; no empty table stays. */
		smmu__regions_check(&mm->regions);
		unsigned frames = 0;
		for (unsigned i = 0; i < NP; i++) {
			smmu_addr_t pa = B + (smmu_addr_t)i * 4096;
			const struct smmu__region *r = smmu__regions_find(&mm->regions, pa);
			smmu_pte_t pte = pte_at(mm, pa);
			if (prot[i] < 0) {
				cr_assert_null(r, "step %d page %u", step, i);
				cr_assert_eq(pte, 0, "step %d page %u: a PTE outside any mapping", step, i);
				touched[i] = false;
				continue;
			}
			cr_assert_not_null(r, "step %d page %u", step, i);
			cr_assert_eq(r->prot, prot[i]);
			if (!touched[i]) {
				cr_assert_eq(pte, 0, "step %d page %u", step, i);
				continue;
			}
			frames++;
			cr_assert_eq(pte & (SMMU_PTE_PRESENT | SMMU_PTE_WRITE | SMMU_PTE_PROTNONE),
				     smmu__pte_prot_bits(prot[i]), "step %d page %u: pte %#llx, prot %d", step, i,
				     (unsigned long long)pte, prot[i]);
			cr_assert_eq(*(uint8_t *)smmu__frame_host(pool, smmu__pte_frame(pte)), val[i]);
		}
		unsigned ptes = 0;
		count_level(mm->root, SMMU_PT_LEVELS - 1, &ptes);
		cr_assert_eq(ptes, frames, "step %d", step);
		cr_assert_eq(smmu_pool_free_frames(pool), NP + 64 - frames, "step %d", step);
	}
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	cr_assert_eq(smmu_mm_destroy(mm), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), NP + 64);
	cr_assert_eq(smmu_pool_destroy(pool), 0);
	cr_assert_eq(smmu__alloc_live(), live0);
}

/* --------------------------------------------------- page sizes */

/* mmap without FIXED must return a page-aligned address that works, for
 * every supported page size (the lowest usable address, 64 KiB, is not a
 * page boundary when pages are larger). */
static void placement(size_t page_size)
{
	long live0 = smmu__alloc_live();
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	struct smmu_pool_config cfg = {.size = 4 * page_size, .page_size = page_size};
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	smmu_addr_t a = 1;
	int err = smmu_mmap(mm, 0, page_size, RW, 0, &a);
	cr_assert_eq(err, 0);
	cr_assert_eq(a % page_size, 0, "page size %zu: mmap returned %#llx, not page-aligned", page_size,
		     (unsigned long long)a);
	cr_assert_geq(a, SMMU_MM_MIN_ADDR);
	cr_assert_eq(smmu_try_store64(cpu, a, 42), 0, "page size %zu: the returned address faults", page_size);
	cr_assert_eq(smmu_load64(cpu, a), 42);
	cr_assert_eq(smmu_munmap(mm, a, page_size), 0);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	cr_assert_eq(smmu_mm_destroy(mm), 0);
	cr_assert_eq(smmu_pool_destroy(pool), 0);
	cr_assert_eq(smmu__alloc_live(), live0);
}

Test(mm, placement_small_pages)
{
	placement(4096);
	placement(16384);
	placement(65536);
}

Test(mm, placement_128k_pages)
{
	placement(128 * 1024);
}

Test(mm, placement_2m_pages)
{
	placement(2 * 1024 * 1024);
}

/* The address space is 2^(page_shift + 36) bytes: 2^63 with the largest
 * pages (128 MiB), which must work end to end. */
static void big_page_space(size_t page_size)
{
	long live0 = smmu__alloc_live();
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	struct smmu_pool_config cfg = {.size = page_size, .page_size = page_size};
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
	cr_assert_gt(mm->va_limit, (smmu_addr_t)1 << 48, "page size %zu: address space ends at %#llx", page_size,
		     (unsigned long long)mm->va_limit);
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	smmu_addr_t a;
	const smmu_addr_t at = (smmu_addr_t)4 << 30;
	cr_assert_eq(smmu_mmap(mm, at, page_size, RW, SMMU_MAP_FIXED, &a), 0, "page size %zu", page_size);
	cr_assert_eq(smmu_try_store64(cpu, at + page_size - 8, 7), 0);
	cr_assert_eq(smmu_load64(cpu, at + page_size - 8), 7);
	cr_assert_eq(smmu_munmap(mm, at, page_size), 0);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	cr_assert_eq(smmu_mm_destroy(mm), 0);
	cr_assert_eq(smmu_pool_destroy(pool), 0);
	cr_assert_eq(smmu__alloc_live(), live0);
}

Test(mm, address_space_128m_pages)
{
	big_page_space((size_t)128 << 20);
}

/* Larger pages would make the space 2^64 bytes or more: refused. */
Test(mm, pages_above_128m_refused)
{
	struct smmu_pool *pool;
	struct smmu_pool_config cfg = {.size = (size_t)256 << 20, .page_size = (size_t)256 << 20};
	cr_assert_eq(smmu_pool_create(&cfg, &pool), -EINVAL);
	cfg.size = cfg.page_size = (size_t)1 << 30;
	cr_assert_eq(smmu_pool_create(&cfg, &pool), -EINVAL);
}

/* ------------------------------------------------------ the edges */

Test(mm, top_of_address_space)
{
	long live0 = smmu__alloc_live();
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	struct smmu_pool_config cfg = {.size = 16 * 4096};
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
	cr_assert_eq(mm->va_limit, (smmu_addr_t)1 << 48);
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	smmu_addr_t a, top = mm->va_limit - 4096;
	cr_assert_eq(smmu_mmap(mm, top, 4096, RW, SMMU_MAP_FIXED, &a), 0);
	cr_assert_eq(smmu_mmap(mm, mm->va_limit, 4096, RW, SMMU_MAP_FIXED, &a), -EINVAL);
	cr_assert_eq(smmu_mmap(mm, top, 8192, RW, SMMU_MAP_FIXED, &a), -EINVAL);
	smmu_store64(cpu, top + 4088, 0x77);
	cr_assert_eq(smmu_load64(cpu, top + 4088), 0x77);
	uint64_t v;
	cr_assert_eq(smmu_try_load64(cpu, mm->va_limit, &v), -EFAULT);
	cr_assert_eq(smmu_try_load64(cpu, top + 4092, &v), -EFAULT, "crosses the end of the space");
	/* The whole space but the bottom 64 KiB, in one mapping. */
	cr_assert_eq(smmu_munmap(mm, top, 4096), 0);
	cr_assert_eq(smmu_mmap(mm, 0, mm->va_limit - SMMU_MM_MIN_ADDR, SMMU_PROT_READ, 0, &a), 0);
	cr_assert_eq(a, SMMU_MM_MIN_ADDR);
	cr_assert_eq(smmu_mmap(mm, 0, 4096, SMMU_PROT_READ, 0, &a), -ENOMEM, "full");
	cr_assert_eq(smmu_load64(cpu, top), 0);
	cr_assert_eq(smmu_load64(cpu, SMMU_MM_MIN_ADDR), 0);
	cr_assert_eq(smmu_munmap(mm, 0, mm->va_limit), 0);
	struct smmu_region r;
	cr_assert_eq(smmu_mm_find(mm, 0, &r), -ENOENT);
	cr_assert_eq(smmu_pool_free_frames(pool), 16);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	long before_destroy = smmu__alloc_live();
	cr_assert_eq(smmu_mm_destroy(mm), 0);
	cr_assert_eq(before_destroy - smmu__alloc_live(), 3, "only mm, root and region array were left");
	cr_assert_eq(smmu_pool_destroy(pool), 0);
	cr_assert_eq(smmu__alloc_live(), live0);
}

Test(mm, destroy_frees_scattered_tables_and_frames)
{
	long live0 = smmu__alloc_live();
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	struct smmu_pool_config cfg = {.size = 2048 * 4096};
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	uint64_t seed = 5;
	for (int i = 0; i < 200; i++) {
		smmu_addr_t a = (rng_next(&seed) % ((mm->va_limit - (1 << 20)) >> 12)) << 12;
		if (a < SMMU_MM_MIN_ADDR)
			continue;
		smmu_addr_t out;
		int prot = i % 3 == 0 ? SMMU_PROT_NONE : RW;
		if (smmu_mmap(mm, a, 8 * 4096, RW, SMMU_MAP_FIXED_NOREPLACE | SMMU_MAP_POPULATE, &out))
			continue;
		cr_assert_eq(smmu_mprotect(mm, a, 4 * 4096, prot), 0);
	}
	cr_assert_lt(smmu_pool_free_frames(pool), 2048 - 1000);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	cr_assert_eq(smmu_mm_destroy(mm), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), 2048);
	cr_assert_eq(smmu_pool_destroy(pool), 0);
	cr_assert_eq(smmu__alloc_live(), live0);
}
