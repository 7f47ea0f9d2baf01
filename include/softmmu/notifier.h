/* SPDX-License-Identifier: MIT */
#ifndef SOFTMMU_NOTIFIER_H
#define SOFTMMU_NOTIFIER_H

/*
 * MMU notifiers: keeping secondary TLBs coherent.
 *
 * A secondary TLB is anything outside the CPUs' TLBs that caches
 * translations of an mm or host pointers into its frames: a JIT's inline
 * caches, an emulated device, a mirror kept by another subsystem.  It
 * subscribes to the mm and is told about every change that may make what
 * it caches wrong, in this order:
 *
 *   invalidate_range_start   before any entry of the range changes; the
 *                            subscriber stops filling from the range
 *   (the page-table entries are cleared and the CPUs' TLBs flushed)
 *   invalidate_secondary_tlbs the subscriber drops what it caches for the
 *                            range; the frames are still allocated
 *   (frames and page-table pages go back to the pool)
 *   invalidate_range_end     the change is complete
 *
 * A large change may call invalidate_secondary_tlbs more than once between
 * start and end (one per gather flush), each time before the frames that
 * flush frees.  A subscriber may also drop its entries at start, as
 * interval subscriptions do.  An mm with any subscriber frees no frame
 * before its secondary invalidation, in every shootdown mode.
 *
 * Two kinds of subscription:
 *  - smmu_notifier_register: the whole mm, the full ops table;
 *  - smmu_interval_notifier_insert: one range [start, end), one callback,
 *    and a sequence count that lets a mirror fill from the page table
 *    without a lock held across the fill: read_begin, translate, then under
 *    the subscriber's own lock read_retry, and publish only if it says no
 *    invalidation raced the fill (the interval notifiers of Linux).
 *
 * Callbacks run on the thread that changes the mapping, with the mm's
 * mapping lock held (except invalidate_range_end and
 * invalidate_secondary_tlbs, which may run after it was dropped).  A
 * callback must not call back into the mapping API of the same mm: mmap,
 * munmap, mprotect (and their _ex forms), smmu_mm_find, smmu_mm_translate,
 * the young/dirty functions, register, insert, unregister and remove fail
 * there with -EDEADLK instead of deadlocking.  The subscriber
 * lists are read under RCU (liburcu's bulletproof flavour, one read-side
 * section from a change's start to its end): a mapping change never takes
 * a lock to find its subscribers, and unregistering waits for the changes
 * in flight that may have seen the subscriber.
 */

#include <stdbool.h>
#include <stddef.h>

#include <softmmu/export.h>
#include <softmmu/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct smmu_mm;

/* Why a range is being invalidated. */
enum smmu_notify_event {
	SMMU_NOTIFY_UNMAP = 1,  /* munmap, or mmap(FIXED) over a mapping: the frames go away */
	SMMU_NOTIFY_PROTECTION, /* mprotect: the frames stay, the permission changes */
	SMMU_NOTIFY_REMAP,      /* translations move to other addresses (mremap) */
	SMMU_NOTIFY_CLEAR,      /* accessed/dirty state cleared (smmu_clear_dirty): the frames
				   stay, but the next write must go through the page table */
	SMMU_NOTIFY_RELEASE,    /* mm teardown: only ->release sees it */
};

/* smmu_notify_range.flags */
#define SMMU_NOTIFY_BLOCKABLE 1u /* callbacks may sleep; without it start may refuse */

/* The range a callback is told about. */
struct smmu_notify_range {
	struct smmu_mm *mm;
	smmu_addr_t start, end; /* [start, end), page-aligned */
	enum smmu_notify_event event;
	unsigned flags; /* SMMU_NOTIFY_BLOCKABLE */
};

/*
 * A subscriber's callbacks; any may be NULL.  arg is the one given to
 * smmu_notifier_register.
 *
 * invalidate_range_start: return 0, or -EAGAIN when the range is not
 *   blockable (!(r->flags & SMMU_NOTIFY_BLOCKABLE)) and the subscriber
 *   would have to sleep; the operation then fails with -EAGAIN and changes
 *   nothing, and invalidate_range_end is called for the subscribers whose
 *   start had returned 0.  Any other error is treated as 0 in blockable
 *   ranges.
 * invalidate_secondary_tlbs: after the CPU TLB flush, before any frame or
 *   table page of the range is freed.  Must not fail.
 * invalidate_range_end: the change is complete.
 * clear_young / test_young: smmu_test_and_clear_young / smmu_test_young over
 *   [start, end): return how many pages of the range the secondary TLB saw
 *   accessed since it last cleared them (clear_young also clears), >= 0.
 * release: exactly once, when the mm is destroyed with the subscriber still
 *   registered, or from smmu_notifier_unregister.  After it the subscriber
 *   must not use translations of the mm.
 */
struct smmu_notifier_ops {
	int (*invalidate_range_start)(void *arg, const struct smmu_notify_range *r);
	void (*invalidate_secondary_tlbs)(void *arg, const struct smmu_notify_range *r);
	void (*invalidate_range_end)(void *arg, const struct smmu_notify_range *r);
	int (*clear_young)(void *arg, struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end);
	int (*test_young)(void *arg, struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end);
	void (*release)(void *arg, struct smmu_mm *mm);
};

struct smmu_notifier;

/*
 * smmu_notifier_register: subscribe ops/arg to every invalidation of mm.
 * The ops table must outlive the subscription.  Changes that began before
 * the call may or may not be reported to it.
 * Errors: -EINVAL (NULL mm, ops or out; mm not live), -ENOMEM.
 * Thread: any, but not from inside a callback of this mm.  Blocks: briefly.
 */
SMMU_API int smmu_notifier_register(struct smmu_mm *mm, const struct smmu_notifier_ops *ops, void *arg,
				    struct smmu_notifier **out);

/*
 * smmu_notifier_unregister: remove the subscription, call its release
 * (unless the mm's teardown already did - then n is freed by this call and
 * nothing else happens), and return only when no callback of it can still
 * be running.  n is freed.  A change that had called the subscriber's
 * invalidate_range_start may then end without its invalidate_range_end
 * reaching it (release stands for it).
 * Errors: -EINVAL (NULL), -EDEADLK (called from inside a callback of the
 * same mm: waiting for the callbacks to finish would wait for itself).
 * Thread: any.  Blocks: for an RCU grace period.
 */
SMMU_API int smmu_notifier_unregister(struct smmu_notifier *n);

/* ------------------------------------------------------ interval notifiers */

struct smmu_interval_notifier;

/*
 * invalidate: an invalidation overlaps the interval.  The subscriber takes
 * the lock under which it calls smmu_interval_read_retry, calls
 * smmu_interval_set_seq(sub, cur_seq), stops using the translations of
 * r's range, drops the lock, and returns true.  It may return false only
 * when r is not blockable and it would have to sleep: the operation then
 * fails with -EAGAIN and changes nothing (in a blockable range the result
 * is ignored).  Called at the start of the change, with the page table
 * still intact and the mapping lock held - so:
 *  - never call into the library (translate, read_begin, insert, remove,
 *    mapping functions) while holding that lock: the callback would wait
 *    for it while the library waits for the callback;
 *  - keep what is done under that lock short: every fault and translate
 *    of the mm waits while the callback waits for it.
 * Every change that overlaps the interval calls it, whatever the event;
 * r->event tells a mirror whether it may keep something (for example,
 * read-only entries across an SMMU_NOTIFY_PROTECTION that removes write).
 */
struct smmu_interval_notifier_ops {
	bool (*invalidate)(struct smmu_interval_notifier *sub, void *arg, const struct smmu_notify_range *r,
			   unsigned long cur_seq);
};

/*
 * smmu_interval_notifier_insert: subscribe ops/arg to invalidations that
 * overlap [start, start+len).  Safe while invalidations run: it takes the
 * mapping lock, so it waits for any change that is still clearing entries,
 * and the subscription's first fill reads the page table as that change
 * left it (the change never calls the new subscription).
 * Errors: -EINVAL (NULL argument, len 0, range wraps), -ENOMEM.
 * Thread: any, but not from inside a callback of this mm.  Blocks: briefly.
 */
SMMU_API int smmu_interval_notifier_insert(struct smmu_mm *mm, smmu_addr_t start, size_t len,
					   const struct smmu_interval_notifier_ops *ops, void *arg,
					   struct smmu_interval_notifier **out);

/*
 * smmu_interval_notifier_remove: remove the subscription and return only
 * when its callback cannot still be running; sub is freed.
 * Errors: -EINVAL (NULL), -EDEADLK (from inside a callback of the same mm).
 * Thread: any.  Blocks: for an RCU grace period.
 */
SMMU_API int smmu_interval_notifier_remove(struct smmu_interval_notifier *sub);

/*
 * smmu_interval_read_begin: start a fill of the mirror.  Waits while an
 * invalidation that overlaps the interval is in progress (its page-table
 * entries may still be the old ones), then returns the sequence to pass to
 * smmu_interval_read_retry.  The sequence is the mm's: while changes that
 * overlap the interval keep overlapping each other in time, it waits for
 * all of them.  These functions take a live subscription of a live mm
 * (not one orphaned by smmu_mm_destroy).
 * Thread: any, not inside a callback.  Blocks: while such changes run.
 */
SMMU_API unsigned long smmu_interval_read_begin(struct smmu_interval_notifier *sub);

/*
 * smmu_interval_read_retry: true if an invalidation began since the
 * smmu_interval_read_begin that returned seq: what the fill read must not
 * be published.  Call it under the lock the invalidate callback takes.
 * Thread: any.  Blocks: never.
 */
SMMU_API bool smmu_interval_read_retry(struct smmu_interval_notifier *sub, unsigned long seq);

/* smmu_interval_set_seq: from the invalidate callback only, under the
 * subscriber's lock.  Thread: the callback's.  Blocks: never. */
SMMU_API void smmu_interval_set_seq(struct smmu_interval_notifier *sub, unsigned long cur_seq);

/* The interval [*start, *end) a subscription covers.  Blocks: never. */
SMMU_API void smmu_interval_notifier_range(const struct smmu_interval_notifier *sub, smmu_addr_t *start,
					   smmu_addr_t *end);

/* ------------------------------------------------------ for secondary TLBs */

/*
 * smmu_mm_translate: the host address of the byte at addr, for a secondary
 * TLB to cache under a subscription.  access is SMMU_PROT_READ or
 * SMMU_PROT_READ | SMMU_PROT_WRITE.  A page not yet present is faulted in
 * (zeroed) as a CPU access would; the page-table entry is marked accessed,
 * and dirty for a write.  The pointer stays valid until an invalidation of
 * the page reaches the subscriber - and no longer: use it under the
 * subscription's protocol (smmu_interval_read_begin / _read_retry).
 * Errors: -EINVAL (NULL mm or host, unknown access, addr outside the
 * address space), -EFAULT (not mapped), -EACCES (protection forbids it),
 * -ENOMEM (the pool or page-table memory ran out).
 * Thread: any, not inside a callback.  Blocks: may (mm lock, shared).
 */
SMMU_API int smmu_mm_translate(struct smmu_mm *mm, smmu_addr_t addr, int access, void **host);

/* smmu_munmap_ex / smmu_mprotect_ex flags */
#define SMMU_OP_NONBLOCK 1u /* do not sleep on the mm lock or in notifiers: -EAGAIN instead */

/*
 * smmu_munmap_ex, smmu_mprotect_ex: smmu_munmap and smmu_mprotect with
 * flags.  With SMMU_OP_NONBLOCK the mm lock is only tried and the
 * notifiers are called without SMMU_NOTIFY_BLOCKABLE; if the lock is busy
 * or a subscriber refuses, the call fails with -EAGAIN and nothing
 * changed.  (The shootdown itself still waits for the CPUs.)
 * Errors: those of smmu_munmap / smmu_mprotect, -EINVAL for unknown flags,
 * -EAGAIN.  Thread: any.  Blocks: may, unless SMMU_OP_NONBLOCK.
 */
SMMU_API int smmu_munmap_ex(struct smmu_mm *mm, smmu_addr_t addr, size_t len, unsigned flags);
SMMU_API int smmu_mprotect_ex(struct smmu_mm *mm, smmu_addr_t addr, size_t len, int prot, unsigned flags);

/*
 * smmu_test_and_clear_young: count the pages of [addr, addr+len) accessed
 * since the last clear, and clear their accessed state: in the page table
 * (the CPUs' TLBs that hold those pages are flushed, so that the next
 * access walks and marks the page again) and in every subscriber
 * (clear_young).  *young = pages young in the page table + the sum of the
 * subscribers' clear_young results.  smmu_test_young counts the same
 * without clearing (test_young).
 * Errors: -EINVAL (NULL, misaligned addr, len 0, wrap).
 * Thread: any.  Blocks: may (mm lock, shootdown).
 */
SMMU_API int smmu_test_and_clear_young(struct smmu_mm *mm, smmu_addr_t addr, size_t len, size_t *young);
SMMU_API int smmu_test_young(struct smmu_mm *mm, smmu_addr_t addr, size_t len, size_t *young);

/*
 * smmu_clear_dirty: clear the dirty state of the pages of [addr, addr+len)
 * so that the next write to each marks it again: the page-table entries'
 * dirty bits are cleared, the CPUs' TLBs that may write them are flushed,
 * and the subscribers see an SMMU_NOTIFY_CLEAR invalidation.  *was_dirty
 * (if not NULL) gets the number of pages that were dirty.  (In the RCU
 * deferred mode a CPU's writes before its next quiescent state may still
 * go through an entry filled before the clear, without marking.)
 * Errors: -EINVAL (NULL mm, misaligned addr, len 0, wrap).
 * Thread: any.  Blocks: may.
 */
SMMU_API int smmu_clear_dirty(struct smmu_mm *mm, smmu_addr_t addr, size_t len, size_t *was_dirty);

/*
 * smmu_collect_dirty: which pages of [addr, addr+len) were written since
 * their dirty state was last cleared.  bitmap gets one bit per page (page
 * i of the range: bit i % 64 of bitmap[i / 64]), set if dirty; it must
 * hold (pages + 63) / 64 words, all of which are written.  With
 * SMMU_DIRTY_CLEAR the dirty state is cleared in the same pass, as
 * smmu_clear_dirty does (flush, SMMU_NOTIFY_CLEAR), so a write that races
 * with the call is either in this bitmap or marks its page for the next
 * one - the round of an incremental snapshot or a card-marking collector.
 * Without it nothing changes.  *ndirty (if not NULL) gets the number of
 * bits set.  Pages not mapped or never written read 0.
 * Errors: -EINVAL (NULL mm or bitmap, misaligned addr, len 0, wrap,
 * unknown flags), -EDEADLK (from a notifier callback of mm).
 * Thread: any.  Blocks: may (mm lock; with SMMU_DIRTY_CLEAR, a shootdown).
 */
#define SMMU_DIRTY_CLEAR 0x1u
SMMU_API int smmu_collect_dirty(struct smmu_mm *mm, smmu_addr_t addr, size_t len, uint64_t *bitmap, unsigned flags,
				size_t *ndirty);

/*
 * Write-protect-and-notify: the first write to each armed page calls the
 * mm's write-notify handler before the write lands - to mark a card, or
 * to copy the page for an incremental snapshot.
 *
 * smmu_mm_set_write_notify: fn (NULL: none) is called as
 * fn(cpu, fault, arg) with fault->error 0, fault->addr the written
 * address, on the writing CPU's thread, outside the access critical
 * section and with the CPU offline (it may block, take locks, change
 * mappings); cpu is NULL when the write is a smmu_mm_translate for write.
 * fn returns 0 and the write goes ahead, or a negative errno and the
 * access fails with it (the page stays armed).
 * smmu_write_notify_arm: arm every writable page of [addr, addr+len) that
 * has a frame now (pages faulted in later are not armed); their dirty
 * state is cleared with it (flush, SMMU_NOTIFY_CLEAR), as a write must
 * walk to be seen.  A page shared copy-on-write since smmu_mm_dup is a
 * writable page where its mapping allows writing: the write that breaks
 * the sharing is notified before it lands (a copy keeps the arming).
 * *armed (if not NULL) gets the number armed.
 * smmu_write_notify_disarm: disarm every armed page of the range without
 * notifying, also those that mprotect made read-only since;
 * *disarmed gets their number.
 * A page stays armed until a write's handler call returns 0 (then the
 * write lands and the page is dirty); concurrent first writes may each
 * call the handler, and no write lands before one call for it returned.
 * Reads never notify.  mprotect keeps the arming, mremap moves it.  In
 * the RCU deferred mode a CPU sees the arming (as any flush) only at its
 * next quiescent state: its writes before that are not notified.
 * Errors: -EINVAL (NULL or dead mm, misaligned addr, len 0, wrap),
 * -EDEADLK (from a notifier callback of mm).
 * Thread: any.  Blocks: may (mm lock; arming: a shootdown).
 */
SMMU_API int smmu_mm_set_write_notify(struct smmu_mm *mm, smmu_fault_handler_fn fn, void *arg);
SMMU_API int smmu_write_notify_arm(struct smmu_mm *mm, smmu_addr_t addr, size_t len, size_t *armed);
SMMU_API int smmu_write_notify_disarm(struct smmu_mm *mm, smmu_addr_t addr, size_t len, size_t *disarmed);

#ifdef __cplusplus
}
#endif

#endif
