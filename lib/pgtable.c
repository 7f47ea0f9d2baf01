/* SPDX-License-Identifier: MIT */
/*
 * Page-table walks and range operations.  Structure, entry format and the
 * concurrency rules are in pgtable.h.
 */
#include "pgtable.h"

#include <errno.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "gather.h"
#include "mm.h"
#include "shootdown.h"
#include "util.h"

_Atomic smmu_pte_t *smmu__pt_slot(struct smmu__ptable *root, unsigned page_shift, smmu_addr_t addr, unsigned at)
{
	struct smmu__ptable *t = root;
	for (unsigned level = SMMU_PT_LEVELS - 1; level > at; level--) {
		smmu_pte_t e = atomic_load(&t->e[smmu__pt_index(page_shift, addr, level)]);
		if (!e)
			return NULL;
		t = smmu__pt_child(e);
	}
	return &t->e[smmu__pt_index(page_shift, addr, at)];
}

_Atomic smmu_pte_t *smmu__pt_lookup(struct smmu__ptable *root, unsigned page_shift, smmu_addr_t addr)
{
	return smmu__pt_slot(root, page_shift, addr, 0);
}

int smmu__pt_slot_alloc(struct smmu__ptable *root, unsigned page_shift, smmu_addr_t addr, unsigned at,
			_Atomic smmu_pte_t **slot)
{
	struct smmu__ptable *t = root;
	for (unsigned level = SMMU_PT_LEVELS - 1; level > at; level--) {
		_Atomic smmu_pte_t *pe = &t->e[smmu__pt_index(page_shift, addr, level)];
		smmu_pte_t e = atomic_load_explicit(pe, memory_order_acquire);
		if (!e) {
			struct smmu__ptable *n = smmu__zalloc_aligned(SMMU_PT_TABLE_SIZE, SMMU_PT_TABLE_SIZE);
			if (!n)
				return -ENOMEM;
			smmu_pte_t want = (smmu_pte_t)(uintptr_t)n | SMMU_PTE_PRESENT;
			/* Release: the zeroed table is visible before the link. */
			if (atomic_compare_exchange_strong_explicit(pe, &e, want, memory_order_acq_rel,
								    memory_order_acquire)) {
				e = want;
			} else {
				smmu__free(n, SMMU_PT_TABLE_SIZE); /* another faulter won; nobody saw ours */
			}
		}
		t = smmu__pt_child(e);
	}
	*slot = &t->e[smmu__pt_index(page_shift, addr, at)];
	return 0;
}

int smmu__pt_lookup_alloc(struct smmu__ptable *root, unsigned page_shift, smmu_addr_t addr, _Atomic smmu_pte_t **slot)
{
	return smmu__pt_slot_alloc(root, page_shift, addr, 0, slot);
}

smmu_pte_t smmu__pte_prot_bits(int prot)
{
	if (prot == SMMU_PROT_NONE)
		return SMMU_PTE_PROTNONE;
	if (prot & SMMU_PROT_WRITE)
		return SMMU_PTE_PRESENT | SMMU_PTE_WRITE;
	return SMMU_PTE_PRESENT;
}

/* Whether t has no entry, looking from hint on (where the caller just
 * cleared entries: what a table keeps is usually near what it lost, and a
 * scan from 0 would read most of a sparse table on every munmap). */
static bool table_empty(struct smmu__ptable *t, unsigned hint)
{
	for (unsigned k = 0; k < SMMU_PT_ENTRIES; k++)
		if (atomic_load_explicit(&t->e[(hint + k) % SMMU_PT_ENTRIES], memory_order_relaxed))
			return false;
	return true;
}

/* Queue the frames of every leaf in a leaf table that was already unhooked
 * (or is being emptied whole). */
static void zap_leaf_table(struct smmu_mm *mm, struct smmu__gather *g, struct smmu__ptable *t, smmu_addr_t base,
			   unsigned from, unsigned to, bool unhooked)
{
	unsigned shift = mm->page_shift;
	/* Under a lazy flush (shootdown.h) a CPU may still hold a PROTNONE
	 * entry's old, accessible translation, as its kept CPU bits say: it
	 * is flushed and waited for like a present one. */
	const smmu_pte_t cached = mm->sd->lazy_flush ? SMMU_PTE_HAS_FRAME : SMMU_PTE_PRESENT;
	for (unsigned i = from; i < to; i++) {
		smmu_pte_t pte = atomic_load_explicit(&t->e[i], memory_order_relaxed);
		if (!(pte & SMMU_PTE_HAS_FRAME))
			continue;
		/* In a table still in the tree, a concurrent walker may CAS
		 * accessed/dirty in: exchange so the entry ends empty whatever
		 * it does.  An unhooked table is only read until it is freed. */
		if (!unhooked) {
			pte = atomic_exchange(&t->e[i], 0);
			if (!(pte & SMMU_PTE_HAS_FRAME))
				continue;
		}
		if (pte & cached) {
			smmu__gather_range(g, base + ((smmu_addr_t)i << shift), base + ((smmu_addr_t)(i + 1) << shift));
			g->cpus |= smmu__pte_cpus(pte);
		}
		smmu__gather_frame(g, smmu__pte_frame(pte));
	}
}

static void zap_level(struct smmu_mm *mm, struct smmu__gather *g, struct smmu__ptable *t, unsigned level,
		      smmu_addr_t base, smmu_addr_t start, smmu_addr_t end, bool unhooked)
{
	unsigned shift = mm->page_shift;
	uint64_t span = smmu__pt_span(shift, level);
	unsigned first = smmu__pt_index_from(shift, level, base, start);
	unsigned last = smmu__pt_index_from(shift, level, base, end - 1); /* inclusive */

	if (level == 0) {
		zap_leaf_table(mm, g, t, base, first, last + 1, unhooked);
		return;
	}
	for (unsigned i = first; i <= last; i++) {
		smmu_pte_t e = atomic_load_explicit(&t->e[i], memory_order_acquire);
		if (!e)
			continue;
		struct smmu__ptable *child = smmu__pt_child(e);
		smmu_addr_t cbase = base + i * span;
		smmu_addr_t cs = start > cbase ? start : cbase;
		smmu_addr_t ce = end < cbase + span ? end : cbase + span;
		if (cs == cbase && ce == cbase + span && !g->keep_tables) {
			/* Whole subtree: unhook it first, then collect it. */
			if (!unhooked)
				atomic_store(&t->e[i], 0);
			zap_level(mm, g, child, level - 1, cbase, cbase, cbase + span, true);
		} else {
			zap_level(mm, g, child, level - 1, cbase, cs, ce, unhooked);
			if (g->keep_tables || !table_empty(child, smmu__pt_index_from(shift, level - 1, cbase, cs)))
				continue;
			atomic_store(&t->e[i], 0);
		}
		/* Walkers may hold the child until the flush, and may set their
		 * bit in an unhooked table's entries after we read them: every
		 * CPU of the mm is a target. */
		smmu__gather_range(g, cbase, cbase + span);
		g->freed_tables = true;
		g->cpus = SMMU_CPUS_ALL;
		smmu__gather_table(g, child);
	}
}

void smmu__pt_zap(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t start, smmu_addr_t end)
{
	if (start >= end)
		return;
	zap_level(mm, g, mm->root, SMMU_PT_LEVELS - 1, 0, start, end, false);
}

static void prune_level(struct smmu__gather *g, struct smmu__ptable *t, unsigned level, smmu_addr_t base,
			smmu_addr_t start, smmu_addr_t end, unsigned shift)
{
	uint64_t span = smmu__pt_span(shift, level);
	unsigned first = smmu__pt_index_from(shift, level, base, start);
	unsigned last = smmu__pt_index_from(shift, level, base, end - 1);
	for (unsigned i = first; i <= last; i++) {
		smmu_pte_t e = atomic_load(&t->e[i]);
		if (!e)
			continue;
		struct smmu__ptable *child = smmu__pt_child(e);
		smmu_addr_t cbase = base + i * span;
		if (level > 1)
			prune_level(g, child, level - 1, cbase, start > cbase ? start : cbase,
				    end < cbase + span ? end : cbase + span, shift);
		if (!table_empty(child, smmu__pt_index_from(shift, level - 1, cbase, start > cbase ? start : cbase)))
			continue;
		atomic_store(&t->e[i], 0);
		smmu__gather_range(g, cbase, cbase + span);
		g->freed_tables = true;
		g->cpus = SMMU_CPUS_ALL; /* any walker may be in it */
		smmu__gather_table(g, child);
	}
}

void smmu__pt_prune(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t start, smmu_addr_t end)
{
	if (start < end)
		prune_level(g, mm->root, SMMU_PT_LEVELS - 1, 0, start, end, mm->page_shift);
}

/* Would moving from old to new remove a permission a TLB entry may hold? */
static bool prot_reduced(smmu_pte_t old, smmu_pte_t new)
{
	if (!(old & SMMU_PTE_PRESENT))
		return false; /* never reached a TLB */
	if (!(new & SMMU_PTE_PRESENT))
		return true;
	return (old & SMMU_PTE_WRITE) && !(new & SMMU_PTE_WRITE);
}

/* Call leaf(slot, addr, ctx) for every leaf slot of [start, end) whose
 * tables exist (the range within the table t at `level` based at base). */
typedef void (*leaf_fn)(_Atomic smmu_pte_t *slot, smmu_addr_t addr, void *ctx);

static void for_each_leaf(unsigned shift, struct smmu__ptable *t, unsigned level, smmu_addr_t base,
			  smmu_addr_t start, smmu_addr_t end, leaf_fn leaf, void *ctx)
{
	uint64_t span = smmu__pt_span(shift, level);
	unsigned first = smmu__pt_index_from(shift, level, base, start);
	unsigned last = smmu__pt_index_from(shift, level, base, end - 1);

	for (unsigned i = first; i <= last; i++) {
		smmu_addr_t cbase = base + i * span;
		if (level == 0) {
			leaf(&t->e[i], cbase, ctx);
			continue;
		}
		smmu_pte_t e = atomic_load_explicit(&t->e[i], memory_order_acquire);
		if (e)
			for_each_leaf(shift, smmu__pt_child(e), level - 1, cbase, start > cbase ? start : cbase,
				      end < cbase + span ? end : cbase + span, leaf, ctx);
	}
}

void smmu__pt_for_each_leaf(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end, leaf_fn fn, void *ctx)
{
	if (start < end)
		for_each_leaf(mm->page_shift, mm->root, SMMU_PT_LEVELS - 1, 0, start, end, fn, ctx);
}

struct leaf_ctx {
	struct smmu__gather *g; /* NULL: count only */
	uint64_t *bitmap;       /* clear_bits: a bit per page from start, or NULL */
	smmu_addr_t start;
	smmu_pte_t bits;
	uint64_t page_size;
	size_t n;
};

/* The cleared or reduced entry old at addr may be in TLBs: flush it. */
static void record(struct leaf_ctx *x, smmu_addr_t addr, smmu_pte_t old)
{
	smmu__gather_range(x->g, addr, addr + x->page_size);
	x->g->cpus |= smmu__pte_cpus(old);
}

static void change_prot_leaf(_Atomic smmu_pte_t *slot, smmu_addr_t addr, void *ctx)
{
	struct leaf_ctx *x = ctx;
	const smmu_pte_t perm = SMMU_PTE_PRESENT | SMMU_PTE_WRITE | SMMU_PTE_PROTNONE;
	smmu_pte_t old = atomic_load_explicit(slot, memory_order_relaxed), new;
	do {
		if (!(old & SMMU_PTE_HAS_FRAME))
			return;
		new = (old & ~perm) | x->bits;
		if (old & SMMU_PTE_COW) /* shared: a write must fault and copy */
			new &= ~SMMU_PTE_WRITE;
	} while (new != old && !atomic_compare_exchange_weak(slot, &old, new));
	if (prot_reduced(old, new))
		record(x, addr, old);
}

void smmu__pt_change_prot(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t start, smmu_addr_t end, int prot)
{
	if (start >= end)
		return;
	struct leaf_ctx x = { .g = g, .bits = smmu__pte_prot_bits(prot), .page_size = mm->page_size };
	for_each_leaf(mm->page_shift, mm->root, SMMU_PT_LEVELS - 1, 0, start, end, change_prot_leaf, &x);
}

static void clear_bits_leaf(_Atomic smmu_pte_t *slot, smmu_addr_t addr, void *ctx)
{
	struct leaf_ctx *x = ctx;
	smmu_pte_t old = atomic_load_explicit(slot, memory_order_relaxed);
	if (!(old & SMMU_PTE_HAS_FRAME) || !(old & x->bits))
		return;
	x->n++;
	if (x->bitmap) {
		uint64_t i = (addr - x->start) / x->page_size;
		x->bitmap[i / 64] |= 1ull << (i % 64);
	}
	if (!x->g)
		return; /* count only */
	/* A walker may be setting accessed/dirty with its own CAS. */
	while (!atomic_compare_exchange_weak(slot, &old, old & ~x->bits))
		;
	record(x, addr, old);
}

size_t smmu__pt_clear_bits(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t start, smmu_addr_t end,
			   smmu_pte_t bits, uint64_t *bitmap)
{
	if (start >= end)
		return 0;
	struct leaf_ctx x = { .g = g, .bits = bits, .page_size = mm->page_size, .bitmap = bitmap, .start = start };
	for_each_leaf(mm->page_shift, mm->root, SMMU_PT_LEVELS - 1, 0, start, end, clear_bits_leaf, &x);
	return x.n;
}

static void write_notify_leaf(_Atomic smmu_pte_t *slot, smmu_addr_t addr, void *ctx)
{
	struct leaf_ctx *x = ctx;
	smmu_pte_t old = atomic_load_explicit(slot, memory_order_relaxed), new;
	do {
		if (x->g) {
			/* x->bits: WRITE, and COW when the mapping allows writing
			 * (a COW entry never carries WRITE); no frame, nothing to
			 * notify */
			if (!(old & x->bits))
				return;
			new = (old | SMMU_PTE_WRNOTIFY) & ~SMMU_PTE_DIRTY;
		} else {
			new = old & ~SMMU_PTE_WRNOTIFY; /* wherever it is, also under read-only */
		}
		if (new == old)
			return;
	} while (!atomic_compare_exchange_weak(slot, &old, new)); /* walkers CAS accessed/dirty in */
	x->n++;
	if (x->g && (old & SMMU_PTE_DIRTY) && (old & SMMU_PTE_PRESENT))
		record(x, addr, old); /* a TLB may hold it writable: only dirty entries fill so */
}

size_t smmu__pt_write_notify(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t start, smmu_addr_t end,
			     bool arm, bool shared)
{
	if (start >= end)
		return 0;
	struct leaf_ctx x = { .g = arm ? g : NULL,
			      .bits = SMMU_PTE_WRITE | (shared ? SMMU_PTE_COW : 0),
			      .page_size = mm->page_size };
	for_each_leaf(mm->page_shift, mm->root, SMMU_PT_LEVELS - 1, 0, start, end, write_notify_leaf, &x);
	return x.n;
}

static void free_level(struct smmu__ptable *t, unsigned level)
{
	if (level > 0) {
		for (unsigned i = 0; i < SMMU_PT_ENTRIES; i++) {
			smmu_pte_t e = atomic_load_explicit(&t->e[i], memory_order_relaxed);
			if (e)
				free_level(smmu__pt_child(e), level - 1);
		}
	}
	SMMU_ASSERT(level > 0 || table_empty(t, 0));
	smmu__free(t, SMMU_PT_TABLE_SIZE);
}

void smmu__pt_free_root(struct smmu__ptable *root)
{
	free_level(root, SMMU_PT_LEVELS - 1);
}
