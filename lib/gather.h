/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_GATHER_H
#define SMMU_LIB_GATHER_H

/*
 * mmu_gather: the batch that makes unmapping safe.  The order is the
 * specification:
 *
 *   1. clear page-table entries (the caller, under the mapping lock), and
 *      record here the range they covered and the frames and table pages
 *      they referenced;
 *   2. flush: every TLB that may hold an entry for the range drops it
 *      (smmu__flush_mm: the calling CPU now; remote CPUs when shootdown
 *      lands) and the mm's flush generation advances;
 *      then the secondary TLBs (MMU notifiers of the change, g->notify);
 *   3. only then free: drop the frames' references (back to the pool at
 *      zero) and free the table pages - now, or, when the back-end defers
 *      it (RCU deferred mode), from a call_rcu callback after the grace
 *      period.
 *
 * Nothing is freed before the flush that covers it.  The gather lives on
 * the caller's stack: a small on-stack batch, extended with page-sized heap
 * batches while allocation succeeds and the cap allows; when it cannot
 * grow it flushes and frees early and goes on with what it has - slower,
 * never wrong, never an error.
 *
 * Modes:
 *   SMMU_GATHER_UNMAP    munmap, mprotect, mmap(FIXED) replacing: range
 *                        tracking, heap batches up to SMMU_GATHER_MAX_BATCHES;
 *   SMMU_GATHER_BOUNDED  latency-bounded: never extends, so every flush
 *                        covers at most SMMU_GATHER_LOCAL entries;
 *   SMMU_GATHER_FULLMM   mm teardown: no CPU is registered, no range is
 *                        tracked, one full flush.
 *
 * A flush of more than SMMU_FLUSH_CEILING pages becomes a full flush, as
 * on x86 (33 pages).  Making an entry more permissive records nothing:
 * the next access misses and refills.
 */

#include <stdbool.h>
#include <stdint.h>

#include <softmmu/types.h>

#define SMMU_GATHER_LOCAL 64
#define SMMU_GATHER_BATCH_BYTES 4096
/* 8 bytes a queued page: 520 batches hold 265,000 entries (2 MiB of
 * batches), so unmapping 1 GiB of 4 KiB pages takes one shootdown, not
 * one every 65,000 pages. */
#define SMMU_GATHER_MAX_BATCHES 520
#define SMMU_FLUSH_CEILING 33

enum smmu__gather_mode {
	SMMU_GATHER_UNMAP,
	SMMU_GATHER_BOUNDED,
	SMMU_GATHER_FULLMM,
};

/* An entry is a frame number << 1, or a table page's address | 1. */
struct smmu__gather_batch {
	struct smmu__gather_batch *next;
	uint32_t nr, max;
	uint64_t *entries; /* local_entries, or right after a heap batch's header */
};

struct smmu__gather {
	struct smmu_mm *mm;
	enum smmu__gather_mode mode;
	smmu_addr_t start, end; /* range to flush; start > end when none */
	bool freed_tables;      /* table pages unhooked: walkers must be flushed */
	bool keep_tables;       /* zap leaves emptied table pages in place */
	uint32_t cpus;          /* CPU bits (pgtable.h) of the entries to flush */
	struct smmu__notify_op *notify; /* the change's notifier brackets ... */
	size_t nnotify;                 /* ... (one per range it changes), or 0 */
	unsigned nbatches;      /* heap batches allocated */
	struct smmu__gather_batch *active;
	struct smmu__gather_batch local;
	uint64_t local_entries[SMMU_GATHER_LOCAL]; /* storage of `local` */
};

void smmu__gather_init(struct smmu__gather *g, struct smmu_mm *mm, enum smmu__gather_mode mode);

/* Entries for [start, end) were cleared or lost permissions. */
static inline void smmu__gather_range(struct smmu__gather *g, smmu_addr_t start, smmu_addr_t end)
{
	if (start < g->start)
		g->start = start;
	if (end > g->end)
		g->end = end;
}

/* Queue a frame / an unhooked table page to be freed after the flush.
 * May flush and free early. */
void smmu__gather_frame(struct smmu__gather *g, uint32_t frame);
void smmu__gather_table(struct smmu__gather *g, void *table);

/* Flush what was recorded and free what was queued; the gather stays usable. */
void smmu__gather_flush(struct smmu__gather *g);

/* For back-ends that free later: the entries queued (and, if frames is not
 * NULL, add how many are frames); move them to dst (empties the gather);
 * free n entries taken earlier. */
size_t smmu__gather_count(struct smmu__gather *g, size_t *frames);
size_t smmu__gather_take(struct smmu__gather *g, uint64_t *dst);
void smmu__gather_free_entries(struct smmu_mm *mm, const uint64_t *entries, size_t n);

/* Flush, free, and release the heap batches. */
void smmu__gather_finish(struct smmu__gather *g);

#endif
