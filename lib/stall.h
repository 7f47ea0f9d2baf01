/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_STALL_H
#define SMMU_LIB_STALL_H

/*
 * Stall reports for the RCU modes: a watchdog thread per RCU-mode mm wakes
 * every quarter of the stall time and samples each CPU's count of
 * quiescent states (a quiescent state only counts: it reads no clock);
 * while something waits for a grace period (a thread in a grace-period
 * wait, or deferred frees pending), it reports each online CPU whose count
 * has not moved for the stall time or more - once, until it moves again.
 * Lock order: the watchdog takes mm->cpus_lock alone and calls the
 * callback with no lock held.
 */

#include <stdint.h>

#include <softmmu/softmmu.h>

struct smmu__cpu;

uint64_t smmu__now_ns(void);

/* Grace-period waits and deferred batches in flight, of every RCU-mode mm
 * of the process (shootdown_rcu.c): liburcu's QSBR domain is one per
 * process, so a quiet CPU of any mm holds up every mm's grace periods, and
 * each watchdog reports its own mm's CPUs while anything waits. */
extern _Atomic unsigned long smmu__rcu_waiting;

/* Start / stop the watchdog of an RCU-mode mm.  -ENOMEM / -EAGAIN. */
int smmu__watchdog_start(struct smmu_mm *mm, const struct smmu_mm_config *cfg);
void smmu__watchdog_stop(struct smmu_mm *mm);
/* Fill cfg's stall fields with those mm's watchdog was started with (an
 * mm without one leaves them alone). */
void smmu__watchdog_config(const struct smmu_mm *mm, struct smmu_mm_config *cfg);

/* A CPU passed a quiescent state (or came online): its stall, if any, ends. */
void smmu__stall_clear(struct smmu__cpu *c);

#endif
