/* SPDX-License-Identifier: MIT */
/*
 * What every shootdown back-end shares: the mm's log of recent flushes and
 * the catch-up of a CPU that was not reached directly (offline, or an RCU
 * reader between quiescent states).
 *
 * Invariant: log[g % SMMU_FLUSH_LOG] holds generation g's range for the
 * last SMMU_FLUSH_LOG generations; flush_gen is advanced under log_lock
 * right after its record is written, so a reader that sees generation g
 * under the lock finds g's record (or a newer one, and then flushes all).
 */
#include <stdatomic.h>
#include <stdbool.h>

#include "cpu.h"
#include "gather.h"
#include "mm.h"
#include "shootdown.h"
#include "tlb.h"

uint64_t smmu__flush_log(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end)
{
	pthread_mutex_lock(&mm->log_lock);
	uint64_t gen = atomic_load(&mm->flush_gen) + 1;
	mm->log[gen % SMMU_FLUSH_LOG] = (struct smmu__flush_rec){ .gen = gen, .start = start, .end = end };
	atomic_store(&mm->flush_gen, gen); /* seq_cst: the generation bump of the protocols */
	pthread_mutex_unlock(&mm->log_lock);
	return gen;
}

bool smmu__flush_is_wide(const struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end)
{
	return start >= end || end - start > (uint64_t)SMMU_FLUSH_CEILING * mm->page_size;
}

void smmu__tlb_catch_up(struct smmu__cpu *c)
{
	struct smmu_mm *mm = c->mm;
	if (atomic_load(&mm->flush_gen) == c->seen_gen)
		return;
	/* Copy the records under the lock, flush after it. */
	struct smmu__flush_rec rec[SMMU_FLUSH_LOG];
	size_t n = 0;
	bool all = false;
	pthread_mutex_lock(&mm->log_lock);
	uint64_t gen = atomic_load(&mm->flush_gen);
	if (gen - c->seen_gen > SMMU_FLUSH_LOG) {
		all = true;
	} else {
		for (uint64_t g = c->seen_gen + 1; g <= gen; g++)
			rec[n++] = mm->log[g % SMMU_FLUSH_LOG];
	}
	pthread_mutex_unlock(&mm->log_lock);
	for (size_t i = 0; i < n && !all; i++)
		all = smmu__flush_is_wide(mm, rec[i].start, rec[i].end);
	if (all) {
		smmu__tlb_flush_all_local(c);
	} else {
		for (size_t i = 0; i < n; i++)
			smmu__tlb_flush_range_local(c, rec[i].start, rec[i].end);
	}
	c->seen_gen = gen;
}
