/* SPDX-License-Identifier: MIT */
/*
 * What every shootdown back-end shares: the mm's log of recent flushes and
 * the catch-up of a CPU that was not reached directly (offline, or an RCU
 * reader between quiescent states).
 *
 * Invariant: log[g % SMMU_FLUSH_LOG] holds generation g's range for the
 * last SMMU_FLUSH_LOG generations; flush_gen is advanced under log_lock
 * right after its record is written, so a reader that sees generation g
 * finds g's record, or a newer one (or one being written), and then
 * flushes all.
 *
 * Readers take no lock (they are CPUs catching up at every quiescent
 * state; a shared lock would bounce between them and the initiators): each
 * record is a sequence lock of its own.  The writer stores gen 0, then the
 * range (release: a reader that sees a new bound sees the 0 too), then gen
 * (release); the reader loads gen, the range (acquire: its next load cannot
 * come first) and gen again, and uses the range only if both loads gave
 * the generation it wanted.  No fences: ThreadSanitizer sees these.
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
	struct smmu__flush_rec *r = &mm->log[gen % SMMU_FLUSH_LOG];
	atomic_store_explicit(&r->gen, 0, memory_order_relaxed);
	atomic_store_explicit(&r->start, start, memory_order_release);
	atomic_store_explicit(&r->end, end, memory_order_release);
	atomic_store_explicit(&r->gen, gen, memory_order_release);
	atomic_store(&mm->flush_gen, gen); /* seq_cst: the generation bump of the protocols */
	pthread_mutex_unlock(&mm->log_lock);
	return gen;
}

/* Copy generation g's record; false if it is gone (overwritten by a newer
 * generation, or being overwritten). */
static bool read_rec(struct smmu_mm *mm, uint64_t g, smmu_addr_t *start, smmu_addr_t *end)
{
	struct smmu__flush_rec *r = &mm->log[g % SMMU_FLUSH_LOG];
	uint64_t g1 = atomic_load_explicit(&r->gen, memory_order_acquire);
	*start = atomic_load_explicit(&r->start, memory_order_acquire);
	*end = atomic_load_explicit(&r->end, memory_order_acquire);
	uint64_t g2 = atomic_load_explicit(&r->gen, memory_order_relaxed);
	return g1 == g && g2 == g;
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
	/* Copy the records first, flush after. */
	struct {
		smmu_addr_t start, end;
	} rec[SMMU_FLUSH_LOG];
	size_t n = 0;
	uint64_t gen = atomic_load(&mm->flush_gen);
	bool all = gen - c->seen_gen > SMMU_FLUSH_LOG;
	for (uint64_t g = c->seen_gen + 1; g <= gen && !all; g++, n++)
		all = !read_rec(mm, g, &rec[n].start, &rec[n].end) || smmu__flush_is_wide(mm, rec[n].start, rec[n].end);
	if (all) {
		smmu__tlb_flush_all_local(c);
	} else {
		for (size_t i = 0; i < n; i++)
			smmu__tlb_flush_range_local(c, rec[i].start, rec[i].end);
	}
	c->seen_gen = gen;
}
