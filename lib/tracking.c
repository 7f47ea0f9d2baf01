/* SPDX-License-Identifier: MIT */
/*
 * Access and dirty tracking: the accessed and dirty bits of the page
 * table, cleared so that the next access (write) sets them again.
 *
 * A CPU's TLB entry stands for a walk that set the accessed bit - and, if
 * it allows writes, the dirty bit (fault.c fills writable entries only
 * from dirty PTEs).  A hit sets nothing.  So clearing a bit must flush the
 * TLBs that hold the page, exactly as reducing a permission does: the
 * cleared entries go through a gather, to the CPUs whose bits the PTE
 * carried.  Secondary TLBs are told through their subscriptions:
 * clear_young / test_young for the accessed state, an SMMU_NOTIFY_CLEAR
 * invalidation for the dirty state (a mirror that writes through cached
 * host pointers must translate again to mark the page).
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <softmmu/softmmu.h>

#include "gather.h"
#include "mm.h"
#include "notifier.h"
#include "pgtable.h"
#include "tracking.h"

static int check(struct smmu_mm *mm, smmu_addr_t addr, size_t len, smmu_addr_t *end)
{
	if (!smmu__mm_check_live(mm))
		return -EINVAL;
	int err = smmu__mm_check_range(mm, addr, len, end);
	return err ? err : smmu__notify_in_callback(mm) ? -EDEADLK : 0;
}

SMMU_API int smmu_test_young(struct smmu_mm *mm, smmu_addr_t addr, size_t len, size_t *young)
{
	smmu_addr_t end;
	int err = check(mm, addr, len, &end);
	if (err || !young)
		return err ? err : -EINVAL;
	smmu__mm_rdlock(mm);
	size_t n = smmu__pt_clear_bits(mm, NULL, addr, end, SMMU_PTE_ACCESSED, NULL);
	pthread_rwlock_unlock(&mm->lock);
	*young = n + (size_t)smmu__notify_young(mm, addr, end, false);
	return 0;
}

SMMU_API int smmu_test_and_clear_young(struct smmu_mm *mm, smmu_addr_t addr, size_t len, size_t *young)
{
	smmu_addr_t end;
	int err = check(mm, addr, len, &end);
	if (err || !young)
		return err ? err : -EINVAL;
	smmu__mm_wrlock(mm);
	struct smmu__gather g;
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	size_t n = smmu__pt_clear_bits(mm, &g, addr, end, SMMU_PTE_ACCESSED, NULL);
	pthread_rwlock_unlock(&mm->lock);
	smmu__gather_finish(&g);
	*young = n + (size_t)smmu__notify_young(mm, addr, end, true);
	return 0;
}

size_t smmu__clear_change(struct smmu_mm *mm, smmu_addr_t addr, smmu_addr_t end, smmu__clear_op op, void *ctx)
{
	smmu__mm_wrlock(mm);
	struct smmu__notify_op nop;
	smmu__notify_start(mm, &nop, addr, end, SMMU_NOTIFY_CLEAR, true); /* blockable: cannot fail */
	struct smmu__gather g;
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	g.notify = &nop;
	g.nnotify = 1;
	size_t n = op(mm, &g, addr, end, ctx);
	pthread_rwlock_unlock(&mm->lock);
	smmu__gather_finish(&g);
	smmu__notify_end(&nop);
	return n;
}

static size_t clear_dirty_op(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t addr, smmu_addr_t end,
			     void *bitmap)
{
	return smmu__pt_clear_bits(mm, g, addr, end, SMMU_PTE_DIRTY, bitmap);
}

/* Dirty pages of [addr, end) into bitmap (if not NULL), cleared with
 * their flush if clear; the number of dirty pages. */
static size_t dirty(struct smmu_mm *mm, smmu_addr_t addr, smmu_addr_t end, uint64_t *bitmap, bool clear)
{
	if (clear)
		return smmu__clear_change(mm, addr, end, clear_dirty_op, bitmap);
	smmu__mm_rdlock(mm);
	size_t n = smmu__pt_clear_bits(mm, NULL, addr, end, SMMU_PTE_DIRTY, bitmap);
	pthread_rwlock_unlock(&mm->lock);
	return n;
}

SMMU_API int smmu_clear_dirty(struct smmu_mm *mm, smmu_addr_t addr, size_t len, size_t *was_dirty)
{
	smmu_addr_t end;
	int err = check(mm, addr, len, &end);
	if (err)
		return err;
	size_t n = dirty(mm, addr, end, NULL, true);
	if (was_dirty)
		*was_dirty = n;
	return 0;
}

SMMU_API int smmu_collect_dirty(struct smmu_mm *mm, smmu_addr_t addr, size_t len, uint64_t *bitmap, unsigned flags,
				size_t *ndirty)
{
	smmu_addr_t end;
	int err = check(mm, addr, len, &end);
	if (err)
		return err;
	if (!bitmap || (flags & ~(unsigned)SMMU_DIRTY_CLEAR))
		return -EINVAL;
	uint64_t pages = (end - addr) >> mm->page_shift;
	memset(bitmap, 0, (size_t)((pages + 63) / 64) * sizeof(*bitmap));
	size_t n = dirty(mm, addr, end, bitmap, flags & SMMU_DIRTY_CLEAR);
	if (ndirty)
		*ndirty = n;
	return 0;
}
