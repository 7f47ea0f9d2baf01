/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_CPU_H
#define SMMU_LIB_CPU_H

/*
 * A CPU: a registered thread, its TLB, frame cache, trap handler and
 * counters.  The public struct smmu_cpu (what the inline path reads) is
 * the first member, so the two pointers convert both ways.
 *
 * Invariants:
 *  - a thread has at most one CPU (the thread-local `self`), and a CPU is
 *    on exactly one mm's list while registered;
 *  - seen_gen is the mm's flush generation at this CPU's last full flush
 *    or catch-up; a CPU coming online with seen_gen behind flushes;
 *  - ack_seq only grows (modulo 2^32), and never passes req_seq;
 *  - the CPU is on the list of exactly its current mm (c->mm); the active
 *    TLB (pub.tlb, tlb, seen_gen, id, loaded) is the address space
 *    asids[cur] names, whose own copies of those fields are stale until it
 *    is switched out (asid.h);
 *  - counters minus counters_base is what the CPU did in its current mm
 *    and has not yet added to that mm's totals.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <softmmu/softmmu.h>

#include "pool.h"
#include "stats_internal.h"
#include "tlb.h"

struct smmu__cpu {
	struct smmu_cpu pub; /* first: the inline fast path's view */
	uint64_t magic;
	struct smmu_mm *mm;
	pthread_t owner;
	pid_t tid; /* the owner's kernel thread id, for tgkill */
	unsigned id;

	/* Shootdown state (protocol and ordering in shootdown_signal.c).
	 * Written by the owner, read by initiators (seq_cst): */
	_Atomic bool online;
	_Atomic bool loaded; /* in the mm's CPU set: set before the first walk */
	/* The mailbox, written by initiators, consumed by the owner: */
	_Atomic uint64_t mb_start, mb_end; /* merged range to flush */
	_Atomic uint32_t req_seq;          /* requests posted (merged first) */
	_Atomic uint32_t signal_pending;   /* a signal is in flight */
	/* Written by the owner only, as a maximum; initiators wait on it: */
	_Atomic uint32_t ack_seq;
	_Atomic uint32_t ack_waiters; /* initiators asleep on ack_seq */
	_Atomic uint32_t sd_refs;     /* initiators that may still wait on us */

	uint64_t seen_gen;     /* Sync: owner */
	/* RCU modes: quiescent states passed (and times come online), counted
	 * by the owner - a relaxed store, no clock read on the quiescent path -
	 * and sampled by the mm's watchdog, which keeps, under cpus_lock, the
	 * count it last saw, since when, and whether the stall was reported. */
	_Atomic uint64_t qs_count;
	uint64_t wd_count, wd_since_ns;
	bool stall_reported;
	bool in_fault_handler; /* Sync: owner.  A mapping's fault handler runs */
	smmu_trap_fn trap;     /* Sync: owner */
	void *trap_arg;        /* Sync: owner */
	struct smmu__tlb *tlb; /* Sync: owner.  The active ASID's (asids[cur_asid].tlb) */
	struct smmu__pcache pcache;
	struct smmu__counters counters; /* written by owner, summed by anyone */
	struct smmu__counters counters_base; /* written by owner (relaxed), read by anyone */
	struct smmu__cpu *next, *prev;  /* Sync: mm->cpus_lock */

	/* Address spaces (asid.c).  Sync: owner. */
	struct smmu__asid *asids;
	unsigned nasids, cur_asid;
	uint64_t switches; /* LRU clock */
};

static inline struct smmu__cpu *smmu__cpu_of(struct smmu_cpu *pub)
{
	return (struct smmu__cpu *)pub;
}

/* Call a fault or write-notify handler for CPU c (its thread, outside the
 * access critical section): offline for the call, since it may block on a
 * thread whose shootdown or grace period would otherwise wait for c; online
 * again after (catching up), unless the handler left c online itself.
 * Returns the handler's result. */
int smmu__cpu_call_handler(struct smmu__cpu *c, smmu_fault_handler_fn fn, void *arg, const struct smmu_fault *f);

/* The calling thread's CPU, or NULL. */
struct smmu__cpu *smmu__cpu_self(void);

/* Put c on mm's CPU list (c->id set) / take it off.  Caller holds
 * mm->cpus_lock; nr_cpus is the caller's (it counts leaving CPUs too). */
void smmu__cpu_link(struct smmu_mm *mm, struct smmu__cpu *c);
void smmu__cpu_unlink(struct smmu_mm *mm, struct smmu__cpu *c);

/* 0 if c is a live CPU owned by the calling thread, else -EINVAL / -EPERM. */
int smmu__cpu_check_owner(const struct smmu_cpu *c);

/* Counted with an atomic add: the shootdown handler counts too, and may
 * interrupt the owner in the middle of an increment. */
static inline void smmu__cpu_count(struct smmu__cpu *c, enum smmu__stat s, uint64_t n)
{
	atomic_fetch_add_explicit(smmu__counter(&c->counters, s), n, memory_order_relaxed);
}

#endif
