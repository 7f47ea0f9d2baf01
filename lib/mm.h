/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_MM_H
#define SMMU_LIB_MM_H

/*
 * An address space.
 *
 * Lock order (outermost first; checked by convention and by the debug
 * build's assertions where cheap):
 *   mm->lock (mapping lock, rwlock)
 *     mm->notify.lock, mm->notify.seq_lock (notifier.c; never both)
 *     mm->cpus_lock (of one mm at a time: a CPU switching mms holds one,
 *                    then the other)
 *       mm->log_lock (the signal back-end advances the generation under
 *                     cpus_lock)
 *       pool->lock
 *         pcache->lock
 *
 * mm->lock: exclusive for every change of the region set or removal or
 * reduction of page-table entries (mmap, munmap, mprotect, teardown);
 * shared for the demand-fault path, which only fills empty slots with
 * compare-and-swap.  The TLB-miss walk takes no lock at all.
 * A thread never takes mm->lock inside an access critical section.
 * munmap and mprotect drop mm->lock before their gather's final flush, so
 * faults on other CPUs go on while the initiator waits for
 * acknowledgements; flush_pending keeps overlapping gathers correct.
 */

#include <pthread.h>
#include <stdint.h>

#include <softmmu/types.h>

#include "notifier.h"
#include "pgtable.h"
#include "region.h"
#include "stats_internal.h"

struct smmu__cpu;
struct smmu__watchdog;

#define SMMU_FLUSH_LOG 16 /* flushes a catching-up CPU can replay */

struct smmu_mm {
	uint64_t magic;
	uint64_t serial; /* unique in the process, never reused: names the mm in CPUs' ASIDs */
	struct smmu_pool *pool;
	unsigned page_shift;
	uint64_t page_size;
	smmu_addr_t va_limit;      /* 2^(page_shift + 36) */
	smmu_addr_t min_addr;      /* lowest mappable address: max(64 KiB, page size) */
	struct smmu__ptable *root; /* never changes while the mm lives */

	pthread_rwlock_t lock;
	struct smmu__regions regions; /* Sync: lock */

	pthread_mutex_t cpus_lock;
	struct smmu__cpu *cpus; /* Sync: cpus_lock.  Registered CPUs */
	unsigned nr_cpus;       /* Sync: cpus_lock.  On the list, plus those
	                         * leaving it (unregistering, switching away)
	                         * that still use the mm: smmu_mm_destroy
	                         * waits for 0 */
	unsigned next_cpu_id;   /* Sync: cpus_lock */
	/* Sync: cpus_lock.  How many CPUs on the list have each CPU bit
	 * (pgtable.h), so that an initiator can tell from a clear's bits
	 * whether any other CPU may cache it without touching their state. */
	unsigned bit_cpus[SMMU_PTE_CPUS_BITS];

	const struct smmu__shootdown_ops *sd; /* the shootdown back-end */
	int mode;                             /* SMMU_SHOOTDOWN_* */
	unsigned flags;                       /* SMMU_MM_* */
	size_t deferred_max;                  /* RCU deferred: frames waiting at most */
	_Atomic size_t deferred_frames;       /* RCU deferred: frames waiting now */
	struct smmu__watchdog *watchdog;      /* RCU: the stall watchdog, or NULL */

	/* The last SMMU_FLUSH_LOG flushes, so that a CPU catching up (online,
	 * quiescent) flushes their ranges, not everything.  Sync: writers
	 * hold log_lock (flush_gen is advanced under it too); readers take
	 * no lock, each record is a sequence lock of its own (shootdown.c). */
	pthread_mutex_t log_lock;
	struct smmu__flush_rec {
		_Atomic uint64_t gen; /* 0 while it is rewritten */
		_Atomic smmu_addr_t start, end;
	} log[SMMU_FLUSH_LOG];

	/* Advanced by every flush; a CPU that comes online behind it flushes.
	 * Sync: atomic, seq_cst on both sides. */
	_Atomic uint64_t flush_gen;

	/* Gathers between init and the end of their final flush.  A gather
	 * that finishes while another is in flight flushes everything: the
	 * other may have cleared entries this one then found empty, and their
	 * remote TLB entries may not be gone yet (Linux's tlb_flush_pending).
	 * Sync: atomic; raised under lock, lowered after the flush. */
	_Atomic unsigned flush_pending;

	/* Departed CPUs' counters and non-CPU callers' work.  Sync: atomic add. */
	struct smmu__counters counters;

	/* MMU notifier subscriptions (notifier.c). */
	struct smmu__notify notify;

	/* The write-notify handler (writenotify.c).  Sync: written under lock
	 * held exclusively, read under it shared. */
	smmu_fault_handler_fn wn_fn;
	void *wn_arg;

	/* A mapping with a fault handler was ever made: protection faults
	 * must look up their region (fault.c).  Sync: atomic. */
	_Atomic bool has_handlers;
};

#define SMMU_MM_MIN_ADDR 0x10000ull /* 64 KiB: low addresses always fault (or one page, if larger) */

int smmu__mm_check_live(const struct smmu_mm *mm);

/*
 * Take mm->lock.  A CPU may wait here while an initiator that holds the
 * lock waits for that CPU's acknowledgement: the signal interrupts the
 * wait and the handler answers.  ThreadSanitizer defers signals that
 * arrive inside a lock call it intercepts until the call returns, which
 * would deadlock; in TSan builds the lock is taken with a short timeout in
 * a loop, so that each return lets the handler run.
 */
void smmu__mm_rdlock(struct smmu_mm *mm);
void smmu__mm_wrlock(struct smmu_mm *mm);

/* mm->lock exclusively for a change of the mapping; with SMMU_OP_NONBLOCK
 * only tried.  0, -EAGAIN, or -EDEADLK from inside a notifier callback of
 * mm (the change that called back holds the lock). */
int smmu__mm_lock_for_change(struct smmu_mm *mm, unsigned flags);

/* A page-aligned, non-empty range inside the address space: 0 with *end =
 * addr + len rounded up to whole pages, or -EINVAL. */
int smmu__mm_check_range(const struct smmu_mm *mm, smmu_addr_t addr, size_t len, smmu_addr_t *end);

/* 0 for a protection a mapping may have (none, read, read-write), else
 * -EINVAL. */
int smmu__mm_check_prot(int prot);

/* Advance the flush generation and flush every TLB of mm that may hold
 * [start, end) (full: all of it), through the mm's shootdown back-end.
 * cpus: the CPU bits (pgtable.h) that may cache it; other CPUs are left
 * alone (SMMU_CPUS_ALL: every CPU of the mm). */
void smmu__flush_mm(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end, int full, uint32_t cpus);

/* Record a flush of [start, end) in the log and advance the flush
 * generation (seq_cst); returns the new generation.  For back-ends. */
uint64_t smmu__flush_log(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end);

#endif
