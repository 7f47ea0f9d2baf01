/* SPDX-License-Identifier: MIT */
/* Counters: everything below is generated from SMMU_STATS_LIST. */
#include <errno.h>
#include <stdio.h>

#include <softmmu/softmmu.h>

#include "cpu.h"
#include "mm.h"
#include "stats_internal.h"

void smmu__stat_add(struct smmu_mm *mm, enum smmu__stat s, uint64_t n)
{
	struct smmu__cpu *c = smmu__cpu_self();
	if (c && c->mm == mm)
		smmu__cpu_count(c, s, n);
	else
		atomic_fetch_add_explicit(smmu__counter(&mm->counters, s), n, memory_order_relaxed);
}

void smmu__counters_sum(struct smmu_stats *dst, const struct smmu__counters *src)
{
#define SMMU__SUM(name, desc) dst->name += atomic_load_explicit(&src->name, memory_order_relaxed);
	SMMU_STATS_LIST(SMMU__SUM)
#undef SMMU__SUM
}

void smmu__counters_settle(struct smmu__counters *dst, struct smmu__counters *cur, struct smmu__counters *base)
{
	/* Most counters did not move: one plain load and compare each, and a
	 * locked add only for those that did (a switch pays for a few). */
#define SMMU__SETTLE(name, desc)                                                             \
	{                                                                                    \
		uint64_t now = atomic_load_explicit(&cur->name, memory_order_relaxed);       \
		uint64_t was = atomic_load_explicit(&base->name, memory_order_relaxed);      \
		if (now != was) {                                                            \
			atomic_fetch_add_explicit(&dst->name, now - was, memory_order_relaxed); \
			atomic_store_explicit(&base->name, now, memory_order_relaxed);       \
		}                                                                            \
	}
	SMMU_STATS_LIST(SMMU__SETTLE)
#undef SMMU__SETTLE
}

void smmu__counters_sum_unsettled(struct smmu_stats *dst, const struct smmu__counters *cur,
				  const struct smmu__counters *base)
{
#define SMMU__SUM_UNSETTLED(name, desc)                                  \
	dst->name += atomic_load_explicit(&cur->name, memory_order_relaxed) - \
		     atomic_load_explicit(&base->name, memory_order_relaxed);
	SMMU_STATS_LIST(SMMU__SUM_UNSETTLED)
#undef SMMU__SUM_UNSETTLED
}

SMMU_API int smmu_stats_get(struct smmu_mm *mm, struct smmu_stats *out)
{
	if (!smmu__mm_check_live(mm) || !out)
		return -EINVAL;
	struct smmu_stats st = { 0 };
	pthread_mutex_lock(&mm->cpus_lock);
	smmu__counters_sum(&st, &mm->counters);
	for (struct smmu__cpu *c = mm->cpus; c; c = c->next)
		smmu__counters_sum_unsettled(&st, &c->counters, &c->counters_base);
	pthread_mutex_unlock(&mm->cpus_lock);
	*out = st;
	return 0;
}

SMMU_API void smmu_stats_print(const struct smmu_stats *st, FILE *f)
{
#define SMMU__PRINT(name, desc) fprintf(f, "%-20s %12llu  %s\n", #name, (unsigned long long)st->name, desc);
	SMMU_STATS_LIST(SMMU__PRINT)
#undef SMMU__PRINT
}

SMMU_API void smmu_stats_print_json(const struct smmu_stats *st, FILE *f)
{
	const char *sep = "";
	fputc('{', f);
#define SMMU__JSON(name, desc)                                                      \
	fprintf(f, "%s\"%s\": %llu", sep, #name, (unsigned long long)st->name); \
	sep = ", ";
	SMMU_STATS_LIST(SMMU__JSON)
#undef SMMU__JSON
	fputc('}', f);
}
