/* SPDX-License-Identifier: MIT */
/*
 * TLB shootdown by RCU grace periods (liburcu, QSBR flavor).
 *
 * Every CPU of an RCU-mode mm is a QSBR reader: registered with its CPU
 * (unless the application registers its threads itself, SMMU_MM_APP_URCU),
 * offline while offline, and between two calls of smmu_quiescent it may
 * hold any translation it filled.  No signal is ever sent; the access
 * critical section marker is never looked at.
 *
 * Initiator (the gather's flush):
 *   1. record the range in the mm's flush log and advance flush_gen;
 *   2. flush its own TLB;
 *   3. strict mode: wait for a grace period (urcu_qsbr_synchronize_rcu,
 *      which takes the caller offline meanwhile if it is a reader), then the
 *      gather frees; deferred mode: return, and the gather hands what it
 *      queued to call_rcu, so frames and table pages come back after the
 *      grace period - unless more than deferred_max frames already wait,
 *      in which case it waits for a grace period itself instead.
 *
 * CPU: smmu_quiescent announces the quiescent state FIRST (it carries a
 * full barrier) and THEN compares flush_gen and flushes what it is behind
 * on from the log.  No access runs between the two.  Reversed, a CPU could
 * read the old generation, let a grace period that began in between end
 * with its announcement, and keep a stale entry to a frame that is then
 * freed (test/protocol/rules.c, rule 5).  Coming online is the same:
 * online first, then compare and flush.
 *
 * Why that is enough: a grace period that starts after step 1 ends only
 * when every online reader has announced a quiescent state after it began
 * (or gone offline); each such reader compares after its announcement and
 * so sees the new generation and flushes before its next access.  Table
 * pages are freed after the same grace period, so no walk is in them.
 *
 * No grace period at all (strict: no wait; deferred: free now) when no
 * CPU but the initiator may have cached the cleared entries: none in the
 * mm's CPU list has its bit among the CPU bits the clears returned
 * (pgtable.h: a walk sets its CPU's bit with the compare-and-swap that
 * orders it with the clear, before it fills, so a CPU whose TLB holds an
 * entry, or whose walk read it and will fill from it, has its bit there).
 * Freeing table pages sets every bit: any walker may be in them.  The
 * caller's own bit is left out because its own TLB is flushed first - and
 * caught up with every earlier flush, lazy ones included (rcu_flush).
 * Under a lazy flush a moved entry keeps its bits (remap.c) and so does a
 * PROTNONE one, whose bits the unmap collects (pgtable.c).  A CPU
 * that is not in the list holds the mm's entries only in an inactive TLB,
 * which catches up from the flush log (step 1, before the list is read)
 * before its first access, or joins the list after us and walks after our
 * clears.  The same rule lets the signal back-end signal only those CPUs.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <urcu/urcu-qsbr.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "cpu.h"
#include "gather.h"
#include "mm.h"
#include "pool.h"
#include "shootdown.h"
#include "stall.h"
#include "testhook.h"
#include "util.h"

/*
 * ThreadSanitizer cannot see a grace period (liburcu's barriers and futex
 * are not instrumented), so it would report every frame freed after one as
 * racing with the readers' last accesses.  Tell it what the grace period
 * guarantees: a reader's accesses before a quiescent state (or before it
 * goes offline or leaves) happen before whatever follows a grace period.
 * One clock for the whole process, as liburcu's QSBR domain is one: it may
 * also order accesses made after a later quiescent state, so TSan misses
 * some use-after-free races here - the poisoned-frame checks of the tests
 * catch those.
 *
 * call_rcu hands its rcu_head (and so our whole deferred batch) to the
 * worker thread through liburcu's lock-free queue, which TSan cannot see
 * either: the batch is released before call_rcu and acquired by the
 * callback, and the callback releases gp_clock when it is done with the
 * mm, for the barrier in smmu_mm_destroy.  (An initiator that is a CPU
 * also releases gp_clock at its quiescent states; one that is not - a
 * collector thread - has only this.)
 */
#if SMMU_TSAN
#include <sanitizer/tsan_interface.h>
static char gp_clock;
#define TSAN_QUIESCENT() __tsan_release(&gp_clock)
#define TSAN_AFTER_GP() __tsan_acquire(&gp_clock)
#define TSAN_HAND_OVER(p) __tsan_release(p)
#define TSAN_TAKE_OVER(p) __tsan_acquire(p)
#else
#define TSAN_QUIESCENT() ((void)0)
#define TSAN_AFTER_GP() ((void)0)
#define TSAN_HAND_OVER(p) ((void)(p))
#define TSAN_TAKE_OVER(p) ((void)(p))
#endif

static int cpu_attach(struct smmu__cpu *c)
{
	if (!(c->mm->flags & SMMU_MM_APP_URCU))
		urcu_qsbr_register_thread();
	smmu__stall_clear(c);
	return 0;
}

static void cpu_detach(struct smmu__cpu *c)
{
	TSAN_QUIESCENT();
	if (!(c->mm->flags & SMMU_MM_APP_URCU))
		urcu_qsbr_unregister_thread();
	else
		urcu_qsbr_quiescent_state(); /* its last accesses as a CPU are done */
}

static void cpu_offline(struct smmu__cpu *c)
{
	(void)c;
	TSAN_QUIESCENT();
	urcu_qsbr_thread_offline();
}

static void cpu_online(struct smmu__cpu *c)
{
	urcu_qsbr_thread_online(); /* announces, with a full barrier */
	smmu__stall_clear(c);
	smmu__tlb_catch_up(c);     /* then compares */
}

static void quiescent(struct smmu__cpu *c)
{
#if SMMU_BREAK == 5
	smmu__tlb_catch_up(c); /* broken: compares first ... */
	SMMU_HOOK(SMMU_HOOK_QUIESCENT, c, 0);
	TSAN_QUIESCENT();
	urcu_qsbr_quiescent_state(); /* ... and announces after */
	smmu__stall_clear(c);
#else
	TSAN_QUIESCENT();
	urcu_qsbr_quiescent_state();
	smmu__stall_clear(c);
	SMMU_HOOK(SMMU_HOOK_QUIESCENT, c, 0);
	smmu__tlb_catch_up(c);
#endif
}

static void cpu_leave(struct smmu__cpu *c, uint64_t gen)
{
	/* Nothing was posted: flushes reach a reader at its quiescent states,
	 * and seen_gen already says how far those got.  The CPU stays a
	 * reader; its quiescent states now compare the new mm's generation,
	 * and this mm's grace periods still end with them, the old TLB being
	 * out of use until it is caught up. */
	(void)c;
	(void)gen;
}

_Atomic unsigned long smmu__rcu_waiting;

static bool is_rcu(const struct smmu_mm *mm)
{
	return mm->sd == &smmu__shootdown_rcu || mm->sd == &smmu__shootdown_rcu_deferred;
}

/* Offline for the length of a wait, in liburcu's eyes and ours (so that
 * the stall watchdog does not report a CPU that waits for a grace period
 * or a lock); coming back catches up. */
bool smmu__rcu_block_begin(struct smmu__cpu *c)
{
	if (!c || !is_rcu(c->mm) || !atomic_load(&c->online))
		return false;
	atomic_store(&c->online, false);
	cpu_offline(c);
	return true;
}

void smmu__rcu_block_end(struct smmu__cpu *c)
{
	atomic_store(&c->online, true);
	cpu_online(c);
}

/* Whether a CPU of mm other than the caller may hold or be about to fill
 * a translation from entries whose clears returned the CPU bits cpus
 * (the rule at the top).  With every bit (table pages freed), whether mm
 * has any CPU at all: with none (teardown, a collector thread working on
 * an mm whose CPUs all left) no walk is in its tables; a CPU that
 * registers or switches in later takes cpus_lock after us, so walks after
 * our clears. */
static bool others_may_cache(struct smmu_mm *mm, uint32_t cpus)
{
	struct smmu__cpu *self = smmu__cpu_self();
	bool any = false;
	pthread_mutex_lock(&mm->cpus_lock);
	if (cpus == SMMU_CPUS_ALL) {
		any = mm->nr_cpus != 0;
	} else {
		/* Counts per bit, not the CPUs' own state: that is written by
		 * their threads all the time, and reading it would cost a
		 * cache miss per CPU. */
		uint32_t own = self && self->mm == mm ? smmu__cpu_bit(self->id) : 0;
		for (uint32_t b = cpus; b && !any; b &= b - 1) {
			unsigned i = (unsigned)__builtin_ctz(b);
			any = mm->bit_cpus[i] > ((1u << i) == own ? 1u : 0u);
		}
	}
	pthread_mutex_unlock(&mm->cpus_lock);
	return any;
}

/* Wait for a grace period, offline if the caller is a CPU of an RCU mm
 * (it catches up after). */
static void grace_period(struct smmu_mm *mm)
{
	struct smmu__cpu *self = smmu__cpu_self();
	bool reader = smmu__rcu_block_begin(self);
	atomic_fetch_add(&smmu__rcu_waiting, 1);
	urcu_qsbr_synchronize_rcu();
	atomic_fetch_sub(&smmu__rcu_waiting, 1);
	TSAN_AFTER_GP();
	smmu__stat_add(mm, SMMU_STAT_grace_periods, 1);
	if (reader)
		smmu__rcu_block_end(self);
}

static void rcu_flush(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end, bool full, uint32_t cpus)
{
	struct smmu__cpu *self = smmu__cpu_self();
	if (full) {
		start = 0;
		end = UINT64_MAX;
	}
	uint64_t gen = smmu__flush_log(mm, start, end);
	SMMU_HOOK(SMMU_HOOK_RCU_LOGGED, NULL, 0);
	if (self && self->mm == mm) {
		if (full) {
			smmu__tlb_flush_all_local(self);
			self->seen_gen = gen;
		} else {
			smmu__tlb_flush_range_local(self, start, end);
			/* Behind on other flushes: catch up with them now.  A lazy
			 * one (deferred mode) may have left this CPU an entry at a
			 * moved page's old address, or a mprotect'ed page's old
			 * permission, that only its own bit on our entries stands
			 * for - and others_may_cache leaves that bit out. */
			if (self->seen_gen == gen - 1)
				self->seen_gen = gen;
			else
				smmu__tlb_catch_up(self);
		}
	}
	smmu__stat_add(mm, SMMU_STAT_shootdowns, 1);
	if (mm->sd == &smmu__shootdown_rcu && others_may_cache(mm, cpus))
		grace_period(mm);
}

/* What a deferred gather hands to call_rcu. */
struct deferred_free {
	struct rcu_head head;
	struct smmu_mm *mm;
	size_t frames; /* of the n entries */
	size_t n;
	uint64_t entries[];
};

static void deferred_free_cb(struct rcu_head *head)
{
	struct deferred_free *d = caa_container_of(head, struct deferred_free, head);
	TSAN_TAKE_OVER(d);
	TSAN_AFTER_GP();
	smmu__gather_free_entries(d->mm, d->entries, d->n);
	atomic_fetch_sub(&d->mm->deferred_frames, d->frames);
	atomic_fetch_sub(&smmu__rcu_waiting, 1);
	/* For smmu__rcu_barrier (urcu_qsbr_barrier, which TSan cannot see
	 * either): this callback's uses of the mm come before its destroy. */
	TSAN_QUIESCENT();
	smmu__free(d, sizeof(*d) + d->n * sizeof(uint64_t));
}

static bool defer_free(struct smmu__gather *g, uint32_t cpus)
{
	struct smmu_mm *mm = g->mm;
	size_t frames = 0, n = smmu__gather_count(g, &frames);
	if (!n || !others_may_cache(mm, cpus))
		return false; /* free now: nobody can reach it */
	struct deferred_free *d = NULL;
	if (atomic_load(&mm->deferred_frames) + frames <= mm->deferred_max)
		d = smmu__malloc(sizeof(*d) + n * sizeof(uint64_t));
	if (!d) {
		/* The backlog is at its bound (or no memory to queue it): wait
		 * for a grace period and let the gather free now. */
		grace_period(mm);
		smmu__stat_add(mm, SMMU_STAT_deferred_bound_waits, 1);
		return false;
	}
	d->mm = mm;
	d->n = smmu__gather_take(g, d->entries);
	d->frames = frames;
	atomic_fetch_add(&mm->deferred_frames, frames);
	atomic_fetch_add(&smmu__rcu_waiting, 1);
	TSAN_HAND_OVER(d);
	urcu_qsbr_call_rcu(&d->head, deferred_free_cb);
	smmu__stat_add(mm, SMMU_STAT_deferred_frees, 1);
	return true;
}

void smmu__rcu_barrier(struct smmu_mm *mm)
{
	if (mm->sd != &smmu__shootdown_rcu_deferred)
		return;
	/* The barrier waits for grace periods: not as an online reader. */
	struct smmu__cpu *self = smmu__cpu_self();
	bool reader = smmu__rcu_block_begin(self);
	urcu_qsbr_barrier();
	TSAN_AFTER_GP();
	if (reader)
		smmu__rcu_block_end(self);
}

const struct smmu__shootdown_ops smmu__shootdown_rcu = {
	.name = "rcu",
	.cpu_attach = cpu_attach,
	.cpu_detach = cpu_detach,
	.cpu_offline = cpu_offline,
	.cpu_online = cpu_online,
	.cpu_leave = cpu_leave,
	.quiescent = quiescent,
	.defer_free = NULL,
	.flush = rcu_flush,
};

const struct smmu__shootdown_ops smmu__shootdown_rcu_deferred = {
	.name = "rcu-deferred",
	.lazy_flush = true,
	.cpu_attach = cpu_attach,
	.cpu_detach = cpu_detach,
	.cpu_offline = cpu_offline,
	.cpu_online = cpu_online,
	.cpu_leave = cpu_leave,
	.quiescent = quiescent,
	.defer_free = defer_free,
	.flush = rcu_flush,
};
