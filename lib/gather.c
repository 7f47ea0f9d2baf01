/* SPDX-License-Identifier: MIT */
/* mmu_gather (the specification is the comment at the top of gather.h). */
#include "gather.h"

#include <stdatomic.h>
#include <string.h>

#include "alloc.h"
#include "cpu.h"
#include "mm.h"
#include "pgtable.h"
#include "pool.h"
#include "shootdown.h"
#include "stats_internal.h"
#include "util.h"

#define BATCH_MAX ((SMMU_GATHER_BATCH_BYTES - sizeof(struct smmu__gather_batch)) / sizeof(uint64_t))

static void reset_range(struct smmu__gather *g)
{
	g->start = UINT64_MAX;
	g->end = 0;
	g->freed_tables = false;
	g->cpus = 0;
}

void smmu__gather_init(struct smmu__gather *g, struct smmu_mm *mm, enum smmu__gather_mode mode)
{
	g->mm = mm;
	g->mode = mode;
	g->keep_tables = false;
	g->notify = NULL;
	g->nnotify = 0;
	g->nbatches = 0;
	g->local.next = NULL;
	g->local.nr = 0;
	g->local.max = SMMU_GATHER_LOCAL;
	g->local.entries = g->local_entries;
	g->active = &g->local;
	reset_range(g);
	atomic_fetch_add(&mm->flush_pending, 1);
}

/* Move to the next batch, reusing one kept from an earlier flush or
 * allocating one; false when the gather may not or cannot grow. */
static bool next_batch(struct smmu__gather *g)
{
	struct smmu__gather_batch *b = g->active;
	if (b->next) {
		g->active = b->next;
		return true;
	}
	if (g->mode == SMMU_GATHER_BOUNDED || g->nbatches >= SMMU_GATHER_MAX_BATCHES)
		return false;
	struct smmu__gather_batch *n = smmu__malloc(SMMU_GATHER_BATCH_BYTES);
	if (!n) {
		smmu__stat_add(g->mm, SMMU_STAT_batch_fallbacks, 1);
		return false;
	}
	n->next = NULL;
	n->nr = 0;
	n->max = (uint32_t)BATCH_MAX;
	n->entries = (uint64_t *)(n + 1);
	b->next = n;
	g->active = n;
	g->nbatches++;
	smmu__stat_add(g->mm, SMMU_STAT_batch_extensions, 1);
	return true;
}

static void add_entry(struct smmu__gather *g, uint64_t ent)
{
	if (g->active->nr == g->active->max && !next_batch(g))
		smmu__gather_flush(g); /* degrade: flush and free early, then go on */
	g->active->entries[g->active->nr++] = ent;
}

void smmu__gather_frame(struct smmu__gather *g, uint32_t frame)
{
	add_entry(g, (uint64_t)frame << 1);
}

void smmu__gather_table(struct smmu__gather *g, void *table)
{
	add_entry(g, (uint64_t)(uintptr_t)table | 1);
}

/* Free n queued entries: frames back to the pool in chains, table pages
 * to the allocator.  Counts into mm's stats (the caller may be the call_rcu
 * thread, which is no CPU). */
void smmu__gather_free_entries(struct smmu_mm *mm, const uint64_t *entries, size_t n)
{
	uint32_t frames[256];
	size_t nf = 0, freed = 0, tables = 0;
	/* A CPU's thread (its cache stays attached while it is one) keeps a
	 * few of the frames for its next faults. */
	struct smmu__cpu *self = smmu__cpu_self();
	struct smmu__pcache *pc = self && self->pcache.pool == mm->pool ? &self->pcache : NULL;

	for (size_t i = 0; i < n; i++) {
		uint64_t ent = entries[i];
		if (ent & 1) {
			smmu__free((void *)(uintptr_t)(ent & ~1ull), SMMU_PT_TABLE_SIZE);
			tables++;
			continue;
		}
		frames[nf++] = (uint32_t)(ent >> 1);
		if (nf == SMMU_ARRAY_SIZE(frames)) {
			freed += smmu__pool_put_frames_to(mm->pool, pc, frames, nf);
			nf = 0;
		}
	}
	if (nf)
		freed += smmu__pool_put_frames_to(mm->pool, pc, frames, nf);
	if (freed)
		smmu__stat_add(mm, SMMU_STAT_frames_freed, freed);
	if (tables)
		smmu__stat_add(mm, SMMU_STAT_tables_freed, tables);
}

/* The batches in use, local first. */
#define for_each_used_batch(g, b) for (struct smmu__gather_batch *b = &(g)->local; b; b = b == (g)->active ? NULL : b->next)

size_t smmu__gather_count(struct smmu__gather *g, size_t *frames)
{
	size_t n = 0;
	for_each_used_batch (g, b) {
		n += b->nr;
		if (frames)
			for (uint32_t i = 0; i < b->nr; i++)
				*frames += !(b->entries[i] & 1);
	}
	return n;
}

size_t smmu__gather_take(struct smmu__gather *g, uint64_t *dst)
{
	size_t n = 0;
	for_each_used_batch (g, b) {
		memcpy(dst + n, b->entries, b->nr * sizeof(uint64_t));
		n += b->nr;
		b->nr = 0;
	}
	g->active = &g->local;
	return n;
}

/* Step 3: everything queued goes back. */
static void free_queued(struct smmu__gather *g)
{
	for_each_used_batch (g, b) {
		smmu__gather_free_entries(g->mm, b->entries, b->nr);
		b->nr = 0;
	}
	g->active = &g->local;
}

void smmu__gather_flush(struct smmu__gather *g)
{
	/* Step 2: no TLB may reach what step 3 frees. */
	uint32_t cpus = g->mode == SMMU_GATHER_FULLMM ? SMMU_CPUS_ALL : g->cpus;
	if (g->mode == SMMU_GATHER_FULLMM) {
		smmu__flush_mm(g->mm, 0, 0, 1, SMMU_CPUS_ALL);
	} else if (g->start < g->end) {
		uint64_t pages = (g->end - g->start) >> g->mm->page_shift;
		smmu__flush_mm(g->mm, g->start, g->end, pages > SMMU_FLUSH_CEILING, g->cpus);
	}
	reset_range(g);
	for (size_t i = 0; i < g->nnotify; i++)
		smmu__notify_secondary(&g->notify[i]);
	/* Step 3, now - or after a grace period, if the back-end defers it. */
	if (!(g->mm->sd->defer_free && g->mm->sd->defer_free(g, cpus)))
		free_queued(g);
}

void smmu__gather_finish(struct smmu__gather *g)
{
	if (atomic_load(&g->mm->flush_pending) > 1 && g->mode != SMMU_GATHER_FULLMM) {
		/* Another gather is in flight: it may have cleared entries we
		 * then found empty, and not yet flushed them.  Flush all. */
		smmu__stat_add(g->mm, SMMU_STAT_shootdowns_nested, 1);
		smmu__gather_range(g, 0, UINT64_MAX);
		g->cpus = SMMU_CPUS_ALL;
	}
	smmu__gather_flush(g);
	atomic_fetch_sub(&g->mm->flush_pending, 1);
	struct smmu__gather_batch *b = g->local.next;
	while (b) {
		struct smmu__gather_batch *next = b->next;
		smmu__free(b, SMMU_GATHER_BATCH_BYTES);
		b = next;
	}
	g->local.next = NULL;
	smmu__stat_add(g->mm, SMMU_STAT_gathers, 1);
}
