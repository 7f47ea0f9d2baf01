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
 *    or catch-up; a CPU coming online with seen_gen behind flushes.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <softmmu/softmmu.h>

#include "pool.h"
#include "stats_internal.h"
#include "tlb.h"

struct smmu__cpu {
	struct smmu_cpu pub; /* first: the inline fast path's view */
	uint64_t magic;
	struct smmu_mm *mm;
	pthread_t owner;
	unsigned id;
	bool online;           /* Sync: owner */
	uint64_t seen_gen;     /* Sync: owner */
	smmu_trap_fn trap;     /* Sync: owner */
	void *trap_arg;        /* Sync: owner */
	struct smmu__tlb tlb;  /* Sync: owner */
	struct smmu__pcache pcache;
	struct smmu__counters counters; /* written by owner, summed by anyone */
	struct smmu__cpu *next, *prev;  /* Sync: mm->cpus_lock */
};

static inline struct smmu__cpu *smmu__cpu_of(struct smmu_cpu *pub)
{
	return (struct smmu__cpu *)pub;
}

/* The calling thread's CPU, or NULL. */
struct smmu__cpu *smmu__cpu_self(void);

/* 0 if c is a live CPU owned by the calling thread, else -EINVAL / -EPERM. */
int smmu__cpu_check_owner(const struct smmu_cpu *c);

static inline void smmu__cpu_count(struct smmu__cpu *c, enum smmu__stat s, uint64_t n)
{
	smmu__count(smmu__counter(&c->counters, s), n);
}

#endif
