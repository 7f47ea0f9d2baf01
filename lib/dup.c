/* SPDX-License-Identifier: MIT */
/*
 * Copy-on-write duplication: smmu_mm_dup, and breaking the sharing on the
 * first write.
 *
 * Dup, under the parent's mapping lock held exclusively:
 *   1. create the child (same pool and shootdown configuration), copy the
 *      regions, and allocate every child table page a leaf will need -
 *      everything that can fail, before anything of the parent changes;
 *   2. for every leaf with a frame: take a frame reference, clear WRITE
 *      and set COW in the parent's entry, store the same frame, COW and
 *      clean, in the child.  The parent's entries lose write permission:
 *      those a TLB may hold writable (dirty ones) go on an invalidate-only
 *      gather - it frees nothing, so it never has to restart a batch;
 *      Subscribers see an SMMU_NOTIFY_PROTECTION change of the whole space;
 *   3. drop the lock, then flush: when dup returns no parent CPU (and no
 *      secondary TLB) can write a shared frame.  A write that landed before the flush is in both
 *      address spaces, as if it came before the dup.
 * A COW entry never carries WRITE (mprotect keeps it off); its mapping's
 * protection says whether a write may break the sharing.
 *
 * Break (a write finds a COW entry whose mapping allows writing), under the
 * mapping lock held exclusively, as a change of that one page:
 *   - the frame's only reference is this entry (the other side unmapped or
 *     broke away): make it writable in place, no copy, no flush;
 *   - else copy the frame into a new one, exchange the entry to the copy,
 *     and free the old reference through a gather - after the flush, since
 *     other CPUs of this mm may still read the shared frame through their
 *     TLBs - with an SMMU_NOTIFY_UNMAP bracket for secondary TLBs, whose
 *     host pointers name the old frame.
 * Either way the entry keeps SMMU_PTE_WRNOTIFY: a shared page may be armed
 * (writenotify.c), and the walk after the break calls the handler before
 * the write lands.
 * Refcounts never grow outside dup, which holds the parent's lock; so a
 * count of 1 seen under the child's (or parent's) own lock stays 1.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <softmmu/softmmu.h>

#include "dup.h"
#include "gather.h"
#include "mm.h"
#include "notifier.h"
#include "pgtable.h"
#include "pool.h"
#include "region.h"
#include "stall.h"

struct dup_ctx {
	struct smmu_mm *parent, *child;
	struct smmu__gather *g; /* step 2 */
	int err;                /* step 1 */
};

static void reserve_leaf(_Atomic smmu_pte_t *slot, smmu_addr_t addr, void *arg)
{
	struct dup_ctx *x = arg;
	_Atomic smmu_pte_t *cslot;
	if (!x->err && (atomic_load_explicit(slot, memory_order_relaxed) & SMMU_PTE_HAS_FRAME))
		x->err = smmu__pt_lookup_alloc(x->child->root, x->child->page_shift, addr, &cslot);
}

static void share_leaf(_Atomic smmu_pte_t *slot, smmu_addr_t addr, void *arg)
{
	struct dup_ctx *x = arg;
	smmu_pte_t old = atomic_load_explicit(slot, memory_order_relaxed), new;
	do { /* walkers CAS accessed/dirty in */
		if (!(old & SMMU_PTE_HAS_FRAME))
			return;
		new = (old & ~SMMU_PTE_WRITE) | SMMU_PTE_COW;
	} while (new != old && !atomic_compare_exchange_weak(slot, &old, new));
	smmu__pool_get(x->parent->pool, smmu__pte_frame(old));
	if ((old & SMMU_PTE_WRITE) && (old & SMMU_PTE_DIRTY)) { /* a TLB may write through it */
		smmu__gather_range(x->g, addr, addr + x->parent->page_size);
		x->g->cpus |= smmu__pte_cpus(old);
	}
	const smmu_pte_t keep = SMMU_PTE_FRAME_MASK | SMMU_PTE_PRESENT | SMMU_PTE_PROTNONE | SMMU_PTE_COW;
	_Atomic smmu_pte_t *cslot = smmu__pt_lookup(x->child->root, x->child->page_shift, addr);
	atomic_store_explicit(cslot, new & keep, memory_order_relaxed); /* published by dup's return */
}

SMMU_API int smmu_mm_dup(struct smmu_mm *parent, struct smmu_mm **out)
{
	if (!smmu__mm_check_live(parent) || !out)
		return -EINVAL;
	struct smmu_mm_config cfg = { .mode = parent->mode, .flags = parent->flags, .deferred_max = parent->deferred_max };
	smmu__watchdog_config(parent, &cfg);
	struct smmu_mm *child;
	int err = smmu_mm_create_ex(parent->pool, &cfg, &child);
	if (err)
		return err;
	if ((err = smmu__mm_lock_for_change(parent, 0))) {
		smmu_mm_destroy(child);
		return err;
	}

	/* 1. */
	struct dup_ctx x = { .parent = parent, .child = child };
	const struct smmu__regions *rs = &parent->regions;
	err = smmu__regions_reserve(&child->regions, rs->n);
	for (size_t i = 0; i < rs->n && !err; i++)
		smmu__regions_insert_handler(&child->regions, rs->v[i].start, rs->v[i].end, rs->v[i].prot,
					     rs->v[i].flags, rs->v[i].handler, rs->v[i].handler_arg);
	if (!err) {
		smmu__pt_for_each_leaf(parent, 0, parent->va_limit, reserve_leaf, &x);
		err = x.err;
	}
	if (err) {
		pthread_rwlock_unlock(&parent->lock);
		smmu_mm_destroy(child); /* tables and regions only: no frame is shared yet */
		return err;
	}
	if (atomic_load(&parent->has_handlers))
		atomic_store(&child->has_handlers, true);
	child->wn_fn = parent->wn_fn;
	child->wn_arg = parent->wn_arg;

	/* 2.  Subscribers of the parent drop write access too: a mirror
	 * writing through a cached pointer would write into the child. */
	struct smmu__notify_op nop;
	smmu__notify_start(parent, &nop, 0, parent->va_limit, SMMU_NOTIFY_PROTECTION, true); /* cannot fail */
	struct smmu__gather g;
	smmu__gather_init(&g, parent, SMMU_GATHER_BOUNDED); /* frees nothing */
	g.notify = &nop;
	g.nnotify = 1;
	x.g = &g;
	smmu__pt_for_each_leaf(parent, 0, parent->va_limit, share_leaf, &x);
	/* 3. */
	pthread_rwlock_unlock(&parent->lock);
	smmu__gather_finish(&g);
	smmu__notify_end(&nop);
	*out = child;
	return 0;
}

int smmu__cow_break(struct smmu_mm *mm, smmu_addr_t addr, struct smmu__pcache *pc)
{
	const smmu_addr_t page = addr & ~(mm->page_size - 1);
	int err = smmu__mm_lock_for_change(mm, 0);
	if (err)
		return err;
	const struct smmu__region *r = smmu__regions_find(&mm->regions, page);
	_Atomic smmu_pte_t *slot = smmu__pt_lookup(mm->root, mm->page_shift, page);
	smmu_pte_t pte = slot ? atomic_load(slot) : 0;
	if (!r || !(r->prot & SMMU_PROT_WRITE) || !(pte & SMMU_PTE_PRESENT) || !(pte & SMMU_PTE_COW)) {
		/* Changed meanwhile, or not writable: the walk decides again. */
		pthread_rwlock_unlock(&mm->lock);
		return r && !(r->prot & SMMU_PROT_WRITE) ? -EACCES : 0;
	}
	uint32_t old = smmu__pte_frame(pte);
	if (atomic_load(&smmu__frame_desc(mm->pool, old)->refcount) == 1) {
		/* Ours alone: writable in place.  More permission: no flush. */
		while (!atomic_compare_exchange_weak(slot, &pte, (pte & ~SMMU_PTE_COW) | SMMU_PTE_WRITE))
			;
		pthread_rwlock_unlock(&mm->lock);
		smmu__stat_add(mm, SMMU_STAT_cow_reuses, 1);
		return 0;
	}
	uint32_t copy;
	if ((err = smmu__pool_alloc(mm->pool, pc, false, &copy))) {
		pthread_rwlock_unlock(&mm->lock);
		return err;
	}
	memcpy(smmu__frame_host(mm->pool, copy), smmu__frame_host(mm->pool, old), mm->page_size);
	struct smmu__notify_op nop;
	smmu__notify_start(mm, &nop, page, page + mm->page_size, SMMU_NOTIFY_UNMAP, true); /* cannot fail */
	struct smmu__gather g;
	smmu__gather_init(&g, mm, SMMU_GATHER_BOUNDED);
	g.notify = &nop;
	g.nnotify = 1;
	/* Release: the copy is visible before its entry.  Walkers may CAS
	 * accessed in meanwhile: keep what the exchange replaced. */
	smmu_pte_t flags = SMMU_PTE_PRESENT | SMMU_PTE_WRITE | SMMU_PTE_ACCESSED;
	flags |= pte & SMMU_PTE_WRNOTIFY; /* the copy stays armed: this write's walk notifies */
	smmu_pte_t was = atomic_exchange_explicit(slot, smmu__pte_make(copy, flags), memory_order_acq_rel);
	smmu__gather_range(&g, page, page + mm->page_size);
	g.cpus |= smmu__pte_cpus(was);
	smmu__gather_frame(&g, old); /* our reference, dropped after the flush */
	pthread_rwlock_unlock(&mm->lock);
	smmu__gather_finish(&g);
	smmu__notify_end(&nop);
	smmu__stat_add(mm, SMMU_STAT_cow_copies, 1);
	return 0;
}
