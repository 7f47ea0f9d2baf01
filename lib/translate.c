/* SPDX-License-Identifier: MIT */
/*
 * Translation for secondary TLBs: smmu_mm_translate walks the page table
 * for a thread that is not a CPU (a mirror filling under an interval
 * subscription) and faults the page in as a CPU access would.
 *
 * It holds mm->lock shared for the whole walk: the unmapping paths clear
 * entries and unhook table pages only under the lock held exclusively, so
 * nothing the walk reads can be freed under it - no access critical
 * section needed.  The host pointer it returns outlives the lock; the
 * subscription protocol (notifier.c) is what makes using it safe.
 */
#include <errno.h>
#include <stdatomic.h>

#include <softmmu/softmmu.h>

#include "mm.h"
#include "notifier.h"
#include "pgtable.h"
#include "pool.h"
#include "region.h"
#include "dup.h"
#include "writenotify.h"

/* Not present: install a zeroed frame if the mapping allows access.
 * 0 means "walk again". */
static int fault_in(struct smmu_mm *mm, smmu_addr_t page, bool write)
{
	const struct smmu__region *r = smmu__regions_find(&mm->regions, page);
	if (!r)
		return -EFAULT;
	if (r->prot == SMMU_PROT_NONE || (write && !(r->prot & SMMU_PROT_WRITE)))
		return -EACCES;
	_Atomic smmu_pte_t *slot;
	int err = smmu__pt_lookup_alloc(mm->root, mm->page_shift, page, &slot);
	if (err)
		return err;
	if (atomic_load_explicit(slot, memory_order_acquire))
		return 0; /* a CPU got there first */
	uint32_t frame;
	if ((err = smmu__pool_alloc(mm->pool, NULL, true, &frame)))
		return err;
	smmu_pte_t expected = 0, pte = smmu__pte_make(frame, smmu__pte_prot_bits(r->prot));
	/* Release: the zeroed frame is visible before its PTE. */
	if (!atomic_compare_exchange_strong_explicit(slot, &expected, pte, memory_order_release, memory_order_relaxed))
		smmu__pool_free_unused(mm->pool, NULL, frame);
	else
		smmu__stat_add(mm, SMMU_STAT_faults_demand_zero, 1);
	return 0;
}

SMMU_API int smmu_mm_translate(struct smmu_mm *mm, smmu_addr_t addr, int access, void **host)
{
	if (!smmu__mm_check_live(mm) || !host || addr >= mm->va_limit ||
	    (access != SMMU_PROT_READ && access != (SMMU_PROT_READ | SMMU_PROT_WRITE)))
		return -EINVAL;
	if (smmu__notify_in_callback(mm))
		return -EDEADLK;
	const bool write = access & SMMU_PROT_WRITE;
	const smmu_addr_t page = addr & ~(mm->page_size - 1);
	int err;
	smmu__mm_rdlock(mm);
	for (;;) {
		_Atomic smmu_pte_t *slot = smmu__pt_lookup(mm->root, mm->page_shift, page);
		smmu_pte_t pte = slot ? atomic_load(slot) : 0;
		if (!(pte & SMMU_PTE_PRESENT)) {
			err = (pte & SMMU_PTE_PROTNONE) ? -EACCES : fault_in(mm, page, write);
			if (err)
				break;
			continue;
		}
		if (write && !(pte & SMMU_PTE_WRITE) && (pte & SMMU_PTE_COW)) {
			pthread_rwlock_unlock(&mm->lock); /* the break takes it exclusively */
			err = smmu__cow_break(mm, addr, NULL);
			smmu__mm_rdlock(mm);
			if (err)
				break;
			continue;
		}
		if (write && !(pte & SMMU_PTE_WRITE)) {
			err = -EACCES;
			break;
		}
		if (write && (pte & SMMU_PTE_WRNOTIFY)) {
			/* The handler runs without the lock (it may change the
			 * mapping); then walk again. */
			pthread_rwlock_unlock(&mm->lock);
			err = smmu__write_notify(mm, NULL, addr, 1, SMMU_ACCESS_WRITE);
			smmu__mm_rdlock(mm);
			if (err)
				break;
			continue;
		}
		/* Marked as a CPU's walk marks it (no CPU bit: a secondary TLB
		 * is told through its subscription, not by a signal). */
		smmu_pte_t want = SMMU_PTE_ACCESSED | (write ? SMMU_PTE_DIRTY : 0);
		if ((pte & want) != want && !atomic_compare_exchange_weak(slot, &pte, pte | want))
			continue;
		*host = (char *)smmu__frame_host(mm->pool, smmu__pte_frame(pte)) + (addr - page);
		err = 0;
		break;
	}
	pthread_rwlock_unlock(&mm->lock);
	return err;
}
