/* SPDX-License-Identifier: MIT */
/*
 * Write-protect-and-notify: the first write to an armed page calls the
 * mm's handler before the write lands (card marking, incremental
 * snapshots).
 *
 * Arming a page sets SMMU_PTE_WRNOTIFY and clears its dirty bit, with the
 * flush that clearing dirty needs anyway (tracking.c): a TLB fills a
 * writable entry only from a dirty PTE, so after the flush every write to
 * the page walks, and the walk stops at the armed bit.  The writer leaves
 * the access critical section, calls the handler (offline: it may block),
 * and only then clears the bit; its retried walk sets dirty and fills.
 * Until the bit is clear, every writer to the page calls the handler too:
 * concurrent first writes may each be notified - never none, and no write
 * lands before a handler call for it has returned.  Reads are not
 * affected.  The bit travels with the entry (mprotect keeps it, mremap
 * moves it, a copy-on-write break keeps it); pages faulted in after arming
 * are not armed.  A copy-on-write entry never carries WRITE, so arming
 * takes the mapping's protection, region by region, to tell whether it is
 * a writable page; the walk breaks the sharing first, then stops at the
 * armed bit.
 */
#include "writenotify.h"

#include <errno.h>
#include <stdatomic.h>

#include <softmmu/softmmu.h>

#include "cpu.h"
#include "mm.h"
#include "notifier.h"
#include "pgtable.h"
#include "region.h"
#include "tracking.h"

int smmu__write_notify(struct smmu_mm *mm, struct smmu__cpu *c, smmu_addr_t addr, size_t size,
		       enum smmu_access_kind kind)
{
	smmu__mm_rdlock(mm);
	smmu_fault_handler_fn fn = mm->wn_fn;
	void *arg = mm->wn_arg;
	pthread_rwlock_unlock(&mm->lock);
	if (fn) {
		struct smmu_fault f = { .addr = addr, .size = size, .kind = kind, .error = 0, .cpu_id = c ? c->id : 0 };
		int r = c ? smmu__cpu_call_handler(c, fn, arg, &f) : fn(NULL, &f, arg);
		if (c)
			smmu__cpu_count(c, SMMU_STAT_write_notifies, 1);
		else
			smmu__stat_add(mm, SMMU_STAT_write_notifies, 1);
		if (r < 0)
			return r;
	}
	/* Disarm; the page may have changed meanwhile (unmapped, moved,
	 * re-armed by another round): then the walk again decides. */
	smmu__mm_rdlock(mm);
	_Atomic smmu_pte_t *slot = smmu__pt_lookup(mm->root, mm->page_shift, addr & ~(mm->page_size - 1));
	if (slot) {
		smmu_pte_t pte = atomic_load(slot);
		while ((pte & SMMU_PTE_WRNOTIFY) && !atomic_compare_exchange_weak(slot, &pte, pte & ~SMMU_PTE_WRNOTIFY))
			;
	}
	pthread_rwlock_unlock(&mm->lock);
	return 0;
}

SMMU_API int smmu_mm_set_write_notify(struct smmu_mm *mm, smmu_fault_handler_fn fn, void *arg)
{
	if (!smmu__mm_check_live(mm))
		return -EINVAL;
	if (smmu__notify_in_callback(mm))
		return -EDEADLK;
	smmu__mm_wrlock(mm);
	mm->wn_fn = fn;
	mm->wn_arg = arg;
	pthread_rwlock_unlock(&mm->lock);
	return 0;
}

/* Region by region: a page shared copy-on-write is a writable page where
 * its mapping allows writing (its entry never carries WRITE). */
static size_t arm_op(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t addr, smmu_addr_t end, void *ctx)
{
	(void)ctx;
	size_t n = 0;
	for (size_t i = smmu__regions_lower_bound(&mm->regions, addr); i < mm->regions.n; i++) {
		const struct smmu__region *r = &mm->regions.v[i];
		if (r->start >= end)
			break;
		smmu_addr_t s = r->start > addr ? r->start : addr, e = r->end < end ? r->end : end;
		n += smmu__pt_write_notify(mm, g, s, e, true, r->prot & SMMU_PROT_WRITE);
	}
	return n;
}

static int arm_or_disarm(struct smmu_mm *mm, smmu_addr_t addr, size_t len, bool arm, size_t *changed)
{
	if (!smmu__mm_check_live(mm))
		return -EINVAL;
	smmu_addr_t end;
	int err = smmu__mm_check_range(mm, addr, len, &end);
	if (err)
		return err;
	if (smmu__notify_in_callback(mm))
		return -EDEADLK;
	size_t n;
	if (arm) {
		/* The dirty bits go: secondary TLBs that write through cached
		 * pointers must translate again, which notifies too. */
		n = smmu__clear_change(mm, addr, end, arm_op, NULL);
	} else {
		smmu__mm_wrlock(mm);
		n = smmu__pt_write_notify(mm, NULL, addr, end, false, false); /* no permission goes: no flush */
		pthread_rwlock_unlock(&mm->lock);
	}
	if (changed)
		*changed = n;
	return 0;
}

SMMU_API int smmu_write_notify_arm(struct smmu_mm *mm, smmu_addr_t addr, size_t len, size_t *armed)
{
	return arm_or_disarm(mm, addr, len, true, armed);
}

SMMU_API int smmu_write_notify_disarm(struct smmu_mm *mm, smmu_addr_t addr, size_t len, size_t *disarmed)
{
	return arm_or_disarm(mm, addr, len, false, disarmed);
}
