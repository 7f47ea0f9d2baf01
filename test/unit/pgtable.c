/* SPDX-License-Identifier: MIT */
/*
 * White-box tests of the page table (lib/pgtable.c): lookup and
 * lookup_alloc over random addresses, zap of partial and whole tables
 * (emptied tables freed through the gather, after its flush),
 * change_prot (gather range recorded only for reductions, PROTNONE keeps
 * the frame), concurrent lookup_alloc, and a random operation sequence
 * checked against a model.
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
#include "gather.h"
#include "mm.h"
#include "pgtable.h"
#include "pool.h"

TestSuite(pgtable, .timeout = 120);

/* ------------------------------------------------------------ helpers */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static struct smmu__ptable *new_root(void)
{
	struct smmu__ptable *r = smmu__zalloc_aligned(SMMU_PT_TABLE_SIZE, SMMU_PT_TABLE_SIZE);
	cr_assert(r);
	return r;
}

struct env {
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	long live0; /* before the pool */
	long live1; /* after the mm */
	size_t nframes;
};

static void env_init(struct env *e, size_t nframes, size_t page_size)
{
	e->live0 = smmu__alloc_live();
	struct smmu_pool_config cfg = {.size = nframes * page_size, .page_size = page_size, .flags = SMMU_POOL_POISON};
	cr_assert_eq(smmu_pool_create(&cfg, &e->pool), 0);
	cr_assert_eq(smmu_mm_create(e->pool, &e->mm), 0);
	e->nframes = nframes;
	e->live1 = smmu__alloc_live();
}

static void env_fini(struct env *e)
{
	cr_assert_eq(smmu_mm_destroy(e->mm), 0);
	cr_assert_eq(smmu_pool_free_frames(e->pool), e->nframes, "frames leaked");
	cr_assert_eq(smmu_pool_destroy(e->pool), 0);
	cr_assert_eq(smmu__alloc_live(), e->live0, "allocation leak: %ld blocks", smmu__alloc_live() - e->live0);
}

static struct smmu_stats stats(struct smmu_mm *mm)
{
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(mm, &st), 0);
	return st;
}

/* Install a fresh frame at each of npages pages from addr with the given
 * leaf flag bits; every page must be empty. */
static void fill(struct smmu_mm *mm, smmu_addr_t addr, size_t npages, smmu_pte_t bits)
{
	for (size_t i = 0; i < npages; i++) {
		smmu_addr_t a = addr + (i << mm->page_shift);
		_Atomic smmu_pte_t *slot;
		uint32_t f;
		cr_assert_eq(smmu__pt_lookup_alloc(mm->root, mm->page_shift, a, &slot), 0);
		cr_assert_eq(atomic_load(slot), 0, "page %#llx already filled", (unsigned long long)a);
		cr_assert_eq(smmu__pool_alloc(mm->pool, NULL, true, &f), 0);
		atomic_store(slot, smmu__pte_make(f, bits));
	}
}

static smmu_pte_t pte_at(struct smmu_mm *mm, smmu_addr_t a)
{
	_Atomic smmu_pte_t *slot = smmu__pt_lookup(mm->root, mm->page_shift, a);
	return slot ? atomic_load(slot) : 0;
}

static unsigned count_level(struct smmu__ptable *t, unsigned level, unsigned *per_level)
{
	unsigned n = 0;
	if (level == 0)
		return 0;
	for (unsigned i = 0; i < SMMU_PT_ENTRIES; i++) {
		smmu_pte_t e = atomic_load(&t->e[i]);
		if (!e)
			continue;
		cr_assert(e & SMMU_PTE_PRESENT, "upper-level entry without PRESENT");
		cr_assert_eq((uintptr_t)smmu__pt_child(e) & (SMMU_PT_TABLE_SIZE - 1), 0);
		if (per_level)
			per_level[level - 1]++;
		n += 1 + count_level(smmu__pt_child(e), level - 1, per_level);
	}
	return n;
}

/* Tables in the tree, the root excluded. */
static unsigned count_tables(struct smmu__ptable *root)
{
	return count_level(root, SMMU_PT_LEVELS - 1, NULL);
}

static bool gather_has_range(const struct smmu__gather *g)
{
	return g->start < g->end;
}

static unsigned gather_queued(const struct smmu__gather *g)
{
	unsigned n = 0;
	for (const struct smmu__gather_batch *b = &g->local; b; b = b->next) {
		n += b->nr;
		if (b == g->active)
			break;
	}
	return n;
}

#define PG(mm, n) ((smmu_addr_t)(n) << (mm)->page_shift)

/* -------------------------------------------------------------- basics */

Test(pgtable, index_span_prot_bits)
{
	cr_assert_eq(smmu__pt_span(12, 0), 4096);
	cr_assert_eq(smmu__pt_span(12, 1), 2ull << 20);
	cr_assert_eq(smmu__pt_span(12, 2), 1ull << 30);
	cr_assert_eq(smmu__pt_span(12, 3), 512ull << 30);
	smmu_addr_t a = (0x1ull << 39) * 5 + (0x1ull << 30) * 7 + (0x1ull << 21) * 9 + 4096 * 11 + 123;
	cr_assert_eq(smmu__pt_index(12, a, 3), 5);
	cr_assert_eq(smmu__pt_index(12, a, 2), 7);
	cr_assert_eq(smmu__pt_index(12, a, 1), 9);
	cr_assert_eq(smmu__pt_index(12, a, 0), 11);
	cr_assert_eq(smmu__pte_prot_bits(SMMU_PROT_NONE), SMMU_PTE_PROTNONE);
	cr_assert_eq(smmu__pte_prot_bits(SMMU_PROT_READ), SMMU_PTE_PRESENT);
	cr_assert_eq(smmu__pte_prot_bits(SMMU_PROT_READ | SMMU_PROT_WRITE), SMMU_PTE_PRESENT | SMMU_PTE_WRITE);
	smmu_pte_t p = smmu__pte_make(0xfffffffeu, SMMU_PTE_PRESENT | SMMU_PTE_DIRTY);
	cr_assert_eq(smmu__pte_frame(p), 0xfffffffeu);
	cr_assert_eq(p & SMMU_PTE_FLAGS_MASK, SMMU_PTE_PRESENT | SMMU_PTE_DIRTY);
}

struct rec {
	smmu_addr_t addr;
	_Atomic smmu_pte_t *slot;
};

static int rec_cmp(const void *a, const void *b)
{
	const struct rec *x = a, *y = b;
	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static size_t distinct(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), u64_cmp);
	size_t d = 0;
	for (size_t i = 0; i < n; i++)
		if (i == 0 || v[i] != v[i - 1])
			d++;
	return d;
}

static void lookup_alloc_random(unsigned shift, uint64_t seed)
{
	const size_t n = 3000;
	long base = smmu__alloc_live();
	struct smmu__ptable *root = new_root();
	struct rec *r = calloc(n, sizeof(*r));
	uint64_t *k2 = calloc(n, 8), *k1 = calloc(n, 8), *k0 = calloc(n, 8);
	cr_assert(r && k2 && k1 && k0);
	const unsigned vabits = shift + 36;
	smmu_addr_t clusters[8];
	for (int i = 0; i < 8; i++)
		clusters[i] = rng_next(&seed) & (((smmu_addr_t)1 << vabits) - 1);
	size_t nk0 = 0;

	for (size_t i = 0; i < n; i++) {
		smmu_addr_t a;
		if (rng_next(&seed) % 4 == 0)
			a = rng_next(&seed);
		else
			a = clusters[rng_next(&seed) % 8] + (rng_next(&seed) % (2048ull << shift));
		a &= (((smmu_addr_t)1 << vabits) - 1) & ~(((smmu_addr_t)1 << shift) - 1);
		/* A missing leaf table makes lookup return NULL. */
		bool have = false;
		for (size_t j = 0; j < nk0 && !have; j++)
			have = k0[j] == a >> (shift + 9);
		_Atomic smmu_pte_t *s0 = smmu__pt_lookup(root, shift, a);
		cr_assert_eq(s0 != NULL, have, "lookup(%#llx) before alloc", (unsigned long long)a);
		_Atomic smmu_pte_t *slot = NULL;
		cr_assert_eq(smmu__pt_lookup_alloc(root, shift, a, &slot), 0);
		cr_assert(slot);
		if (s0)
			cr_assert_eq(s0, slot);
		cr_assert_eq(smmu__pt_lookup(root, shift, a), slot);
		cr_assert_eq(((uintptr_t)slot & (SMMU_PT_TABLE_SIZE - 1)) / sizeof(smmu_pte_t),
			     smmu__pt_index(shift, a, 0));
		atomic_store(slot, a | 1);
		r[i] = (struct rec){a, slot};
		k2[i] = a >> (shift + 27);
		k1[i] = a >> (shift + 18);
		if (!have)
			k0[nk0++] = a >> (shift + 9);
	}
	for (size_t i = 0; i < n; i++)
		k0[i] = r[i].addr >> (shift + 9);
	size_t expect_tables = distinct(k2, n) + distinct(k1, n) + distinct(k0, n);
	cr_assert_eq(smmu__alloc_live() - base, (long)(1 + expect_tables), "tables: %ld, expected 1 + %zu",
		     smmu__alloc_live() - base, expect_tables);
	cr_assert_eq(count_tables(root), expect_tables);

	qsort(r, n, sizeof(*r), rec_cmp);
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(atomic_load(r[i].slot), r[i].addr | 1, "two pages share a slot");
		if (i == 0)
			continue;
		if (r[i].addr == r[i - 1].addr)
			cr_assert_eq(r[i].slot, r[i - 1].slot);
		else
			cr_assert_neq(r[i].slot, r[i - 1].slot);
		if (r[i].addr == r[i - 1].addr + ((smmu_addr_t)1 << shift) && smmu__pt_index(shift, r[i].addr, 0) != 0)
			cr_assert_eq(r[i].slot, r[i - 1].slot + 1, "neighbours in one leaf table are adjacent");
	}
	for (size_t i = 0; i < n; i++)
		atomic_store(r[i].slot, 0);
	smmu__pt_free_root(root);
	cr_assert_eq(smmu__alloc_live(), base);
	free(r);
	free(k2);
	free(k1);
	free(k0);
}

Test(pgtable, lookup_alloc_random_4k)
{
	lookup_alloc_random(12, 0x1234);
}

Test(pgtable, lookup_alloc_random_64k)
{
	lookup_alloc_random(16, 0x5678);
}

Test(pgtable, lookup_alloc_failure_leaves_empty_tables)
{
	long base = smmu__alloc_live();
	for (long k = 0; k <= 3; k++) {
		struct smmu__ptable *root = new_root();
		_Atomic smmu_pte_t *slot = NULL;
		smmu_addr_t a = 0x7f1234567000ull;
		smmu__alloc_fail_after(k);
		int err = smmu__pt_lookup_alloc(root, 12, a, &slot);
		bool fired = smmu__alloc_failure_fired();
		smmu__alloc_fail_after(-1);
		if (k < 3) {
			cr_assert(fired);
			cr_assert_eq(err, -ENOMEM);
			cr_assert_eq(count_tables(root), (unsigned)k, "tables allocated on the way stay");
			cr_assert_null(smmu__pt_lookup(root, 12, a));
			cr_assert_eq(smmu__pt_lookup_alloc(root, 12, a, &slot), 0);
		} else {
			cr_assert(!fired);
			cr_assert_eq(err, 0);
		}
		cr_assert_eq(count_tables(root), 3);
		cr_assert_eq(smmu__pt_lookup(root, 12, a), slot);
		smmu__pt_free_root(root);
		cr_assert_eq(smmu__alloc_live(), base);
	}
}

/* ----------------------------------------------------------------- zap */

/* A 1 GiB-aligned address well inside the space: its leaf tables are
 * PG(512) apart. */
#define ZBASE(mm) ((smmu_addr_t)3 << 30)

Test(pgtable, zap_partial_keeps_table)
{
	struct env e;
	env_init(&e, 1024, 4096);
	struct smmu_mm *mm = e.mm;
	smmu_addr_t A = ZBASE(mm) + PG(mm, 100);
	fill(mm, A, 10, SMMU_PTE_PRESENT | SMMU_PTE_WRITE);
	cr_assert_eq(count_tables(mm->root), 3);
	long live = smmu__alloc_live();
	size_t nfree = smmu_pool_free_frames(e.pool);
	uint32_t frames[10];
	for (int i = 0; i < 10; i++)
		frames[i] = smmu__pte_frame(pte_at(mm, A + PG(mm, i)));

	struct smmu__gather g;
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_zap(mm, &g, A + PG(mm, 3), A + PG(mm, 7));
	cr_assert_eq(g.start, A + PG(mm, 3));
	cr_assert_eq(g.end, A + PG(mm, 7));
	cr_assert(!g.freed_tables);
	cr_assert_eq(gather_queued(&g), 4);
	for (int i = 0; i < 10; i++)
		cr_assert_eq(pte_at(mm, A + PG(mm, i)) != 0, i < 3 || i >= 7);
	/* Nothing freed before the flush. */
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree);
	for (int i = 3; i < 7; i++)
		cr_assert_eq(atomic_load(&e.pool->frames[frames[i]].refcount), 1);
	struct smmu_stats st0 = stats(mm);
	smmu__gather_finish(&g);
	struct smmu_stats st1 = stats(mm);
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree + 4);
	cr_assert_eq(st1.frames_freed - st0.frames_freed, 4);
	cr_assert_eq(st1.tables_freed - st0.tables_freed, 0);
	cr_assert_eq(st1.gathers - st0.gathers, 1);
	cr_assert_eq(smmu__alloc_live(), live);
	cr_assert_eq(count_tables(mm->root), 3);
	/* Freed frames are poisoned; the others are intact zero pages. */
	cr_assert_eq(*(unsigned char *)smmu__frame_host(e.pool, frames[3]), SMMU_POISON_BYTE);
	cr_assert_eq(*(unsigned char *)smmu__frame_host(e.pool, frames[0]), 0);
	env_fini(&e);
}

Test(pgtable, zap_empties_table_through_gather)
{
	struct env e;
	env_init(&e, 1024, 4096);
	struct smmu_mm *mm = e.mm;
	smmu_addr_t T0 = ZBASE(mm), T1 = ZBASE(mm) + PG(mm, 512);
	fill(mm, T0 + PG(mm, 100), 10, SMMU_PTE_PRESENT);
	fill(mm, T1 + PG(mm, 5), 1, SMMU_PTE_PRESENT);
	cr_assert_eq(count_tables(mm->root), 4);
	struct smmu__ptable *l1 = smmu__pt_child(atomic_load(
		&smmu__pt_child(atomic_load(&mm->root->e[smmu__pt_index(12, T0, 3)]))->e[smmu__pt_index(12, T0, 2)]));
	smmu_pte_t l1e = atomic_load(&l1->e[smmu__pt_index(12, T0, 1)]);
	cr_assert_neq(l1e, 0);
	long live = smmu__alloc_live();

	/* Partial with respect to the table's span, but it covers every PTE. */
	struct smmu__gather g;
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_zap(mm, &g, T0 + PG(mm, 50), T0 + PG(mm, 200));
	cr_assert(g.freed_tables);
	cr_assert_eq(atomic_load(&l1->e[smmu__pt_index(12, T0, 1)]), 0, "emptied table unhooked");
	cr_assert_eq(count_tables(mm->root), 3);
	cr_assert_eq(smmu__alloc_live(), live, "the table is freed only after the flush");
	cr_assert_leq(g.start, T0);
	cr_assert_geq(g.end, T0 + PG(mm, 512), "the freed table's span is flushed");
	cr_assert_eq(gather_queued(&g), 11);
	struct smmu_stats st0 = stats(mm);
	smmu__gather_finish(&g);
	struct smmu_stats st1 = stats(mm);
	cr_assert_eq(smmu__alloc_live(), live - 1);
	cr_assert_eq(st1.tables_freed - st0.tables_freed, 1);
	cr_assert_eq(st1.frames_freed - st0.frames_freed, 10);
	cr_assert_neq(pte_at(mm, T1 + PG(mm, 5)), 0);

	/* Zapping the last page frees its leaf table and the now empty upper
	 * levels (not the root). */
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_zap(mm, &g, T1 + PG(mm, 5), T1 + PG(mm, 6));
	smmu__gather_finish(&g);
	cr_assert_eq(count_tables(mm->root), 0);
	cr_assert_eq(smmu__alloc_live(), e.live1);
	cr_assert_eq(stats(mm).tables_freed - st1.tables_freed, 3);
	env_fini(&e);
}

Test(pgtable, zap_whole_table_unhooked)
{
	struct env e;
	env_init(&e, 2048, 4096);
	struct smmu_mm *mm = e.mm;
	smmu_addr_t T0 = ZBASE(mm);
	/* Partial T0, all of T1, partial T2. */
	fill(mm, T0 + PG(mm, 500), 12 + 512 + 10, SMMU_PTE_PRESENT | SMMU_PTE_WRITE);
	cr_assert_eq(count_tables(mm->root), 2 + 3);
	long live = smmu__alloc_live();
	size_t nfree = smmu_pool_free_frames(e.pool);
	struct smmu__gather g;
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_zap(mm, &g, T0 + PG(mm, 505), T0 + PG(mm, 1024 + 5));
	cr_assert(g.freed_tables);
	cr_assert_eq(count_tables(mm->root), 4);
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree);
	cr_assert_eq(g.nbatches, 1, "524 entries: one heap batch");
	cr_assert_eq(smmu__alloc_live(), live + 1, "the unhooked table is not freed before the flush");
	cr_assert_eq(g.start, T0 + PG(mm, 505));
	cr_assert_eq(g.end, T0 + PG(mm, 1024 + 5));
	smmu__gather_finish(&g);
	cr_assert_eq(smmu__alloc_live(), live - 1);
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree + 7 + 512 + 5);
	for (int i = 500; i < 500 + 534; i++)
		cr_assert_eq(pte_at(mm, T0 + PG(mm, i)) != 0, i < 505 || i >= 1029, "page %d", i);

	/* The rest, over the whole address space: every table goes. */
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_zap(mm, &g, 0, mm->va_limit);
	smmu__gather_finish(&g);
	cr_assert_eq(count_tables(mm->root), 0);
	cr_assert_eq(smmu__alloc_live(), e.live1);
	cr_assert_eq(smmu_pool_free_frames(e.pool), e.nframes);
	env_fini(&e);
}

Test(pgtable, zap_protnone_records_no_range)
{
	struct env e;
	env_init(&e, 256, 4096);
	struct smmu_mm *mm = e.mm;
	smmu_addr_t A = ZBASE(mm) + PG(mm, 10);
	fill(mm, A, 8, SMMU_PTE_PROTNONE);
	size_t nfree = smmu_pool_free_frames(e.pool);
	struct smmu__gather g;
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_zap(mm, &g, A, A + PG(mm, 4));
	cr_assert(!gather_has_range(&g), "PROTNONE entries never reached a TLB: nothing to flush");
	cr_assert_eq(gather_queued(&g), 4, "but their frames are freed");
	smmu__gather_finish(&g);
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree + 4);
	/* An empty range records nothing at all. */
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_zap(mm, &g, (smmu_addr_t)7 << 39, ((smmu_addr_t)7 << 39) + PG(mm, 3000));
	smmu__pt_zap(mm, &g, A, A); /* start == end */
	cr_assert(!gather_has_range(&g));
	cr_assert(!g.freed_tables);
	cr_assert_eq(gather_queued(&g), 0);
	smmu__gather_finish(&g);
	env_fini(&e);
}

/* --------------------------------------------------------- change_prot */

static void check_prot(struct smmu_mm *mm, smmu_addr_t a, size_t n, smmu_pte_t want, const uint32_t *frames)
{
	const smmu_pte_t perm = SMMU_PTE_PRESENT | SMMU_PTE_WRITE | SMMU_PTE_PROTNONE;
	for (size_t i = 0; i < n; i++) {
		smmu_pte_t p = pte_at(mm, a + PG(mm, i));
		cr_assert_eq(p & perm, want, "page %zu: %#llx", i, (unsigned long long)p);
		cr_assert_eq(smmu__pte_frame(p), frames[i], "the frame stays");
	}
}

Test(pgtable, change_prot_records_only_reductions)
{
	struct env e;
	env_init(&e, 256, 4096);
	struct smmu_mm *mm = e.mm;
	smmu_addr_t A = ZBASE(mm) + PG(mm, 20);
	const size_t n = 10;
	fill(mm, A, n, SMMU_PTE_PRESENT | SMMU_PTE_WRITE);
	uint32_t frames[10];
	for (size_t i = 0; i < n; i++)
		frames[i] = smmu__pte_frame(pte_at(mm, A + PG(mm, i)));
	/* Walkers set accessed/dirty on some. */
	_Atomic smmu_pte_t *s2 = smmu__pt_lookup(mm->root, 12, A + PG(mm, 2));
	atomic_fetch_or(s2, SMMU_PTE_ACCESSED | SMMU_PTE_DIRTY);
	long live = smmu__alloc_live();
	size_t nfree = smmu_pool_free_frames(e.pool);
	struct smmu__gather g;

	/* RW -> R: reduced, recorded exactly. */
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_change_prot(mm, &g, A + PG(mm, 1), A + PG(mm, 6), SMMU_PROT_READ);
	cr_assert_eq(g.start, A + PG(mm, 1));
	cr_assert_eq(g.end, A + PG(mm, 6));
	cr_assert_eq(gather_queued(&g), 0);
	smmu__gather_finish(&g);
	check_prot(mm, A, 1, SMMU_PTE_PRESENT | SMMU_PTE_WRITE, frames);
	check_prot(mm, A + PG(mm, 1), 5, SMMU_PTE_PRESENT, frames + 1);
	check_prot(mm, A + PG(mm, 6), 4, SMMU_PTE_PRESENT | SMMU_PTE_WRITE, frames + 6);
	cr_assert_eq(atomic_load(s2) & (SMMU_PTE_ACCESSED | SMMU_PTE_DIRTY), SMMU_PTE_ACCESSED | SMMU_PTE_DIRTY,
		     "accessed/dirty survive");

	/* Mixed range to R: only the pages that were writable count. */
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_change_prot(mm, &g, A, A + PG(mm, 6), SMMU_PROT_READ);
	cr_assert_eq(g.start, A);
	cr_assert_eq(g.end, A + PG(mm, 1));
	smmu__gather_finish(&g);

	/* R -> R: nothing.  R -> RW: an increase, nothing recorded. */
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_change_prot(mm, &g, A, A + PG(mm, 6), SMMU_PROT_READ);
	cr_assert(!gather_has_range(&g));
	smmu__pt_change_prot(mm, &g, A, A + PG(mm, n), SMMU_PROT_READ | SMMU_PROT_WRITE);
	cr_assert(!gather_has_range(&g), "an increase needs no flush");
	smmu__gather_finish(&g);
	check_prot(mm, A, n, SMMU_PTE_PRESENT | SMMU_PTE_WRITE, frames);

	/* RW -> NONE: reduced; PROTNONE keeps the frame. */
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_change_prot(mm, &g, A + PG(mm, 4), A + PG(mm, 8), SMMU_PROT_NONE);
	cr_assert_eq(g.start, A + PG(mm, 4));
	cr_assert_eq(g.end, A + PG(mm, 8));
	smmu__gather_finish(&g);
	check_prot(mm, A + PG(mm, 4), 4, SMMU_PTE_PROTNONE, frames + 4);

	/* NONE -> NONE and NONE -> R: nothing to flush. */
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_change_prot(mm, &g, A + PG(mm, 4), A + PG(mm, 8), SMMU_PROT_NONE);
	cr_assert(!gather_has_range(&g));
	smmu__pt_change_prot(mm, &g, A + PG(mm, 4), A + PG(mm, 6), SMMU_PROT_READ);
	cr_assert(!gather_has_range(&g));
	smmu__gather_finish(&g);
	check_prot(mm, A + PG(mm, 4), 2, SMMU_PTE_PRESENT, frames + 4);
	check_prot(mm, A + PG(mm, 6), 2, SMMU_PTE_PROTNONE, frames + 6);

	/* R -> NONE: reduced. */
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_change_prot(mm, &g, A + PG(mm, 3), A + PG(mm, 7), SMMU_PROT_NONE);
	cr_assert_eq(g.start, A + PG(mm, 3), "RW and R pages lose access");
	cr_assert_eq(g.end, A + PG(mm, 6), "PROTNONE pages were never in a TLB");
	smmu__gather_finish(&g);

	/* Holes and missing tables are skipped and never allocated. */
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	smmu__pt_change_prot(mm, &g, ZBASE(mm) + PG(mm, 5000), ZBASE(mm) + PG(mm, 9000), SMMU_PROT_NONE);
	cr_assert(!gather_has_range(&g));
	smmu__gather_finish(&g);
	cr_assert_eq(smmu__alloc_live(), live);
	cr_assert_eq(smmu_pool_free_frames(e.pool), nfree, "change_prot never frees a frame");
	env_fini(&e);
}

/* -------------------------------------------- concurrent lookup_alloc */

#define CL_THREADS 4
#define CL_ADDRS 256

struct cl_shared {
	struct smmu__ptable *root;
	smmu_addr_t addrs[CL_ADDRS];
	_Atomic smmu_pte_t *slots[CL_THREADS][CL_ADDRS];
	pthread_barrier_t go, done;
	atomic_int errors;
	int rounds;
};

struct cl_arg {
	struct cl_shared *s;
	int id;
};

static void *cl_main(void *p)
{
	struct cl_arg *a = p;
	struct cl_shared *s = a->s;
	uint64_t seed = 77 + (uint64_t)a->id;
	unsigned order[CL_ADDRS];
	for (int r = 0; r < s->rounds; r++) {
		for (unsigned i = 0; i < CL_ADDRS; i++)
			order[i] = i;
		for (unsigned i = CL_ADDRS - 1; i > 0; i--) {
			unsigned j = (unsigned)(rng_next(&seed) % (i + 1)), t = order[i];
			order[i] = order[j];
			order[j] = t;
		}
		pthread_barrier_wait(&s->go);
		for (unsigned i = 0; i < CL_ADDRS; i++) {
			unsigned k = order[i];
			if (smmu__pt_lookup_alloc(s->root, 12, s->addrs[k], &s->slots[a->id][k]))
				atomic_fetch_add(&s->errors, 1);
		}
		pthread_barrier_wait(&s->done);
	}
	return NULL;
}

Test(pgtable, concurrent_lookup_alloc_one_table_per_slot)
{
	long base = smmu__alloc_live();
	struct cl_shared *s = calloc(1, sizeof(*s));
	cr_assert(s);
	s->rounds = 20;
	uint64_t seed = 99;
	uint64_t k[3][CL_ADDRS];
	/* Few distinct tables, so that threads collide on them. */
	for (unsigned i = 0; i < CL_ADDRS; i++) {
		smmu_addr_t a = ((rng_next(&seed) % 2) << 39) | ((rng_next(&seed) % 2) << 30) |
				((rng_next(&seed) % 4) << 21) | ((rng_next(&seed) % 512) << 12);
		s->addrs[i] = a;
		k[0][i] = a >> 39;
		k[1][i] = a >> 30;
		k[2][i] = a >> 21;
	}
	size_t expect = distinct(k[0], CL_ADDRS) + distinct(k[1], CL_ADDRS) + distinct(k[2], CL_ADDRS);
	pthread_barrier_init(&s->go, NULL, CL_THREADS + 1);
	pthread_barrier_init(&s->done, NULL, CL_THREADS + 1);
	pthread_t th[CL_THREADS];
	struct cl_arg args[CL_THREADS];
	for (int i = 0; i < CL_THREADS; i++) {
		args[i] = (struct cl_arg){s, i};
		cr_assert_eq(pthread_create(&th[i], NULL, cl_main, &args[i]), 0);
	}
	for (int r = 0; r < s->rounds; r++) {
		s->root = new_root();
		pthread_barrier_wait(&s->go);
		pthread_barrier_wait(&s->done);
		cr_assert_eq(atomic_load(&s->errors), 0);
		cr_assert_eq(smmu__alloc_live() - base, (long)(1 + expect), "round %d: %ld blocks, expected %zu", r,
			     smmu__alloc_live() - base, 1 + expect);
		cr_assert_eq(count_tables(s->root), expect);
		for (unsigned i = 0; i < CL_ADDRS; i++) {
			cr_assert_eq(s->slots[0][i], smmu__pt_lookup(s->root, 12, s->addrs[i]));
			for (int t = 1; t < CL_THREADS; t++)
				cr_assert_eq(s->slots[t][i], s->slots[0][i], "threads got different slots");
		}
		smmu__pt_free_root(s->root);
		cr_assert_eq(smmu__alloc_live(), base);
	}
	for (int i = 0; i < CL_THREADS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&s->go);
	pthread_barrier_destroy(&s->done);
	free(s);
}

/* ----------------------------------------------- random ops vs a model */

#define RM_PAGES 2048 /* straddles a 1 GiB boundary: two L1 tables */

enum { M_EMPTY = -1 };

Test(pgtable, random_ops_against_model)
{
	struct env e;
	env_init(&e, RM_PAGES + 16, 4096);
	struct smmu_mm *mm = e.mm;
	const smmu_addr_t B = ((smmu_addr_t)5 << 30) - PG(mm, 700);
	static int prot[RM_PAGES]; /* M_EMPTY or SMMU_PROT_* */
	static uint32_t frame[RM_PAGES];
	uint64_t seed = 2024;
	for (int i = 0; i < RM_PAGES; i++)
		prot[i] = M_EMPTY;
	const smmu_pte_t perm = SMMU_PTE_PRESENT | SMMU_PTE_WRITE | SMMU_PTE_PROTNONE;
	const int prots[3] = {SMMU_PROT_NONE, SMMU_PROT_READ, SMMU_PROT_READ | SMMU_PROT_WRITE};

	for (int step = 0; step < 1500; step++) {
		unsigned lo = (unsigned)(rng_next(&seed) % RM_PAGES);
		unsigned len = 1 + (unsigned)(rng_next(&seed) % (rng_next(&seed) % 4 ? 40 : 700));
		unsigned hi = lo + len > RM_PAGES ? RM_PAGES : lo + len;
		unsigned op = (unsigned)(rng_next(&seed) % 3);
		struct smmu__gather g;
		if (op == 0) { /* fill the empty pages of the range */
			int p = prots[rng_next(&seed) % 3];
			for (unsigned i = lo; i < hi; i++) {
				if (prot[i] != M_EMPTY)
					continue;
				fill(mm, B + PG(mm, i), 1, smmu__pte_prot_bits(p));
				prot[i] = p;
				frame[i] = smmu__pte_frame(pte_at(mm, B + PG(mm, i)));
			}
		} else if (op == 1) { /* zap */
			unsigned nframes = 0, pmin = UINT32_MAX, pmax = 0;
			for (unsigned i = lo; i < hi; i++) {
				if (prot[i] == M_EMPTY)
					continue;
				nframes++;
				if (prot[i] != SMMU_PROT_NONE) {
					pmin = i < pmin ? i : pmin;
					pmax = i;
				}
			}
			size_t nfree = smmu_pool_free_frames(e.pool);
			smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
			smmu__pt_zap(mm, &g, B + PG(mm, lo), B + PG(mm, hi));
			if (pmin != UINT32_MAX) {
				cr_assert_leq(g.start, B + PG(mm, pmin));
				cr_assert_geq(g.end, B + PG(mm, pmax + 1));
			}
			cr_assert_eq(smmu_pool_free_frames(e.pool), nfree);
			smmu__gather_finish(&g);
			cr_assert_eq(smmu_pool_free_frames(e.pool), nfree + nframes);
			for (unsigned i = lo; i < hi; i++)
				prot[i] = M_EMPTY;
		} else { /* change_prot */
			int p = prots[rng_next(&seed) % 3];
			unsigned rmin = UINT32_MAX, rmax = 0;
			for (unsigned i = lo; i < hi; i++) {
				if (prot[i] == M_EMPTY)
					continue;
				bool reduced = prot[i] != SMMU_PROT_NONE &&
					       (p == SMMU_PROT_NONE ||
						((prot[i] & SMMU_PROT_WRITE) && !(p & SMMU_PROT_WRITE)));
				if (reduced) {
					rmin = i < rmin ? i : rmin;
					rmax = i;
				}
				prot[i] = p;
			}
			smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
			smmu__pt_change_prot(mm, &g, B + PG(mm, lo), B + PG(mm, hi), p);
			if (rmin == UINT32_MAX) {
				cr_assert(!gather_has_range(&g), "step %d: range recorded without a reduction", step);
			} else {
				cr_assert_eq(g.start, B + PG(mm, rmin), "step %d", step);
				cr_assert_eq(g.end, B + PG(mm, rmax + 1), "step %d", step);
			}
			cr_assert(!g.freed_tables);
			smmu__gather_finish(&g);
		}
		/* Check every page and the table structure. */
		unsigned used = 0, leafs = 0, l1s = 0;
		bool leaf_has[RM_PAGES / 512 + 2] = {false};
		for (int i = 0; i < RM_PAGES; i++) {
			smmu_pte_t pte = pte_at(mm, B + PG(mm, i));
			if (prot[i] == M_EMPTY) {
				cr_assert_eq(pte, 0, "step %d page %d: %#llx", step, i, (unsigned long long)pte);
				continue;
			}
			used++;
			cr_assert_eq(pte & perm, smmu__pte_prot_bits(prot[i]), "step %d page %d", step, i);
			cr_assert_eq(smmu__pte_frame(pte), frame[i]);
			leaf_has[(B + PG(mm, i) - (B & ~(PG(mm, 512) - 1))) >> 21] = true;
		}
		bool l1_has[2] = {false, false};
		for (unsigned t = 0; t < RM_PAGES / 512 + 2; t++) {
			if (!leaf_has[t])
				continue;
			leafs++;
			smmu_addr_t ta = (B & ~(PG(mm, 512) - 1)) + ((smmu_addr_t)t << 21);
			l1_has[(ta >> 30) - 4] = true;
		}
		l1s = l1_has[0] + l1_has[1];
		unsigned expect_tables = leafs + l1s + (l1s ? 1 : 0);
		cr_assert_eq(count_tables(mm->root), expect_tables, "step %d: tables exist exactly where PTEs are",
			     step);
		cr_assert_eq(smmu__alloc_live(), e.live1 + (long)expect_tables, "step %d", step);
		cr_assert_eq(smmu_pool_free_frames(e.pool), e.nframes - used);
	}
	env_fini(&e);
}
