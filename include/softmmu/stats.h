/* SPDX-License-Identifier: MIT */
#ifndef SOFTMMU_STATS_H
#define SOFTMMU_STATS_H

/*
 * Event counters.  One list generates the struct, the per-CPU sum and the
 * printers (text and JSON): add a counter here and it appears everywhere.
 * Counters are per CPU (written by the owner thread only) plus per mm for
 * work done by threads that are not CPUs of that mm; smmu_stats_get sums
 * them on demand.
 */

#include <stdint.h>
#include <stdio.h>

#include <softmmu/export.h>

#ifdef __cplusplus
extern "C" {
#endif

struct smmu_mm;

/* X(name, description) */
#define SMMU_STATS_LIST(X)                                                              \
	X(tlb_misses, "accesses that missed the TLB or needed the slow path")           \
	X(tlb_fills, "TLB entries filled from the page table")                         \
	X(faults_demand_zero, "not-present faults served with a zeroed frame")         \
	X(faults_trapped, "faults given to the trap handler or returned by try_")      \
	X(flush_full, "whole-TLB flushes")                                             \
	X(flush_full_swapped, "whole-TLB flushes that swapped in a clean spare table")  \
	X(flush_range, "range TLB flushes")                                            \
	X(gathers, "mmu_gather batches finished")                                      \
	X(batch_extensions, "heap batches added to a gather")                          \
	X(batch_fallbacks, "gathers that flushed early because a batch could not grow") \
	X(frames_freed, "frames returned to the pool after a flush")                   \
	X(tables_freed, "page-table pages freed after a flush")                        \
	X(shootdowns, "flushes that had to reach every TLB of the mm")                 \
	X(shootdowns_nested, "gathers that found another in flight: full flush")        \
	X(signals_sent, "shootdown signals sent to other CPUs")                        \
	X(signals_received, "shootdown signals handled")                               \
	X(acks_deferred, "shootdowns acknowledged at the end of an interrupted access") \
	X(grace_periods, "RCU grace periods waited for")                               \
	X(deferred_frees, "RCU deferred mode: batches freed by call_rcu")              \
	X(deferred_bound_waits, "RCU deferred mode: waits because the backlog was full") \
	X(faults_handled, "faults given to a mapping's fault handler")                 \
	X(mm_switches, "smmu_cpu_switch_mm into this mm")                             \
	X(asid_recycles, "switches into this mm that recycled an address-space id")    \
	X(write_notifies, "write-notify handler calls (first writes to armed pages)")   \
	X(cow_copies, "copy-on-write breaks that copied the shared frame")            \
	X(cow_reuses, "copy-on-write breaks that found the frame no longer shared")

struct smmu_stats {
#define SMMU__STATS_FIELD(name, desc) uint64_t name;
	SMMU_STATS_LIST(SMMU__STATS_FIELD)
#undef SMMU__STATS_FIELD
};

/*
 * smmu_stats_get: sum the counters of every CPU of mm (live and departed)
 * and of the mm itself into *out.
 * Errors: -EINVAL if mm or out is NULL or mm is not a live address space.
 * Thread: any.  Blocks: briefly, on the mm's CPU-list lock.
 */
SMMU_API int smmu_stats_get(struct smmu_mm *mm, struct smmu_stats *out);

/* smmu_stats_print: one "name value" line per counter.  Thread: any. */
SMMU_API void smmu_stats_print(const struct smmu_stats *st, FILE *f);

/* smmu_stats_print_json: one JSON object, no trailing newline.  Thread: any. */
SMMU_API void smmu_stats_print_json(const struct smmu_stats *st, FILE *f);

#ifdef __cplusplus
}
#endif

#endif
