/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_STATS_INTERNAL_H
#define SMMU_LIB_STATS_INTERNAL_H

/* Counters generated from SMMU_STATS_LIST.  A CPU's counters are written by
 * its owner and its shootdown handler (smmu__cpu_count, an atomic add); an
 * mm's are written by any thread (atomic add) and hold departed CPUs'
 * totals and work done by threads that are not CPUs of the mm. */

#include <softmmu/stats.h>

#include "util.h"

struct smmu__counters {
#define SMMU__COUNTER_FIELD(name, desc) _Atomic uint64_t name;
	SMMU_STATS_LIST(SMMU__COUNTER_FIELD)
#undef SMMU__COUNTER_FIELD
};

enum smmu__stat {
#define SMMU__STAT_ENUM(name, desc) SMMU_STAT_##name,
	SMMU_STATS_LIST(SMMU__STAT_ENUM)
#undef SMMU__STAT_ENUM
	SMMU_STAT_COUNT
};

struct smmu_mm;

/* Add n to counter s of the calling thread's CPU if it is a CPU of mm,
 * else to mm's shared counters. */
void smmu__stat_add(struct smmu_mm *mm, enum smmu__stat s, uint64_t n);

/* Add every counter of src into the sum dst. */
void smmu__counters_sum(struct smmu_stats *dst, const struct smmu__counters *src);

/* A CPU's counters: add what it counted since its last settle (cur -
 * base) to dst and move base up; only the CPU's owner settles.  The sum
 * adds cur - base into a total. */
void smmu__counters_settle(struct smmu__counters *dst, struct smmu__counters *cur, struct smmu__counters *base);
void smmu__counters_sum_unsettled(struct smmu_stats *dst, const struct smmu__counters *cur,
				  const struct smmu__counters *base);

static inline _Atomic uint64_t *smmu__counter(struct smmu__counters *c, enum smmu__stat s)
{
	return &((_Atomic uint64_t *)c)[s];
}

#endif
