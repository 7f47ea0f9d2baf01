/* SPDX-License-Identifier: MIT */
/* The software TLB (invariants and the sizing policy in tlb.h). */
#include "tlb.h"

#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "cpu.h"
#include "util.h"

static inline struct smmu_tlb_entry *entry_at(struct smmu__cpu *c, size_t idx)
{
	return &c->pub.tlb[idx];
}

static inline size_t index_of(const struct smmu__cpu *c, smmu_addr_t addr)
{
	return (size_t)(addr >> SMMU_TLB_GRANULE_SHIFT) & (c->tlb->entries - 1);
}

static inline void invalidate(struct smmu_tlb_entry *e)
{
	e->read_tag = SMMU_TLB_INVALID;
	e->write_tag = SMMU_TLB_INVALID;
}

struct smmu_tlb_entry *smmu__tlb_table_alloc(size_t entries)
{
	struct smmu_tlb_entry *t = smmu__zalloc_aligned(64, entries * sizeof(*t));
	if (t)
		memset(t, 0xff, entries * sizeof(*t)); /* every tag SMMU_TLB_INVALID */
	return t;
}

int smmu__tlb_init(struct smmu__cpu *c, size_t entries, size_t max_entries)
{
	struct smmu_tlb_entry *t = smmu__tlb_table_alloc(entries);
	if (!t)
		return -ENOMEM;
	c->pub.tlb = t;
	c->pub.tlb_mask = (uint64_t)(entries - 1) << SMMU_TLB_ENTRY_SHIFT;
	*c->tlb = (struct smmu__tlb){ .entries = entries, .min_entries = entries, .max_entries = max_entries };
	return 0;
}

void smmu__tlb_free_spare(struct smmu__tlb *t)
{
	if (t->spare)
		smmu__free(t->spare, t->entries * sizeof(struct smmu_tlb_entry));
	t->spare = NULL;
}

void smmu__tlb_fini(struct smmu__cpu *c)
{
	smmu__tlb_free_spare(c->tlb);
	smmu__free(c->pub.tlb, c->tlb->entries * sizeof(struct smmu_tlb_entry));
	c->pub.tlb = NULL;
}

/* Clear spare entries [scrub_pos, scrub_pos + n), at most to the end. */
static void scrub(struct smmu__tlb *t, size_t n)
{
	if (n > t->entries - t->scrub_pos)
		n = t->entries - t->scrub_pos;
	memset(t->spare + t->scrub_pos, 0xff, n * sizeof(struct smmu_tlb_entry));
	t->scrub_pos += n;
}

/* Replace the table with an empty one of n entries (a full flush). */
static void resize(struct smmu__cpu *c, size_t n)
{
	struct smmu_tlb_entry *t = smmu__tlb_table_alloc(n), *old = c->pub.tlb;
	size_t old_n = c->tlb->entries;
	if (!t)
		return; /* keep the old size; try again after more misses */
	/* Whatever runs between these stores (a flush on this thread) must
	 * see a count that fits the table in place and an empty fill log. */
	c->tlb->fill_count = 0;
	atomic_signal_fence(memory_order_seq_cst);
	if (n < old_n)
		c->tlb->entries = n;
	atomic_signal_fence(memory_order_seq_cst);
	c->pub.tlb = t;
	c->pub.tlb_mask = (uint64_t)(n - 1) << SMMU_TLB_ENTRY_SHIFT;
	atomic_signal_fence(memory_order_seq_cst);
	if (c->tlb->spare) /* of the old size: useless now */
		smmu__free(c->tlb->spare, old_n * sizeof(struct smmu_tlb_entry));
	c->tlb->spare = NULL;
	c->tlb->steady = false;
	c->tlb->entries = n;
	c->tlb->misses = 0;
	c->tlb->fills = 0;
	smmu__free(old, old_n * sizeof(struct smmu_tlb_entry));
}

void smmu__tlb_miss(struct smmu__cpu *c)
{
	struct smmu__tlb *t = c->tlb;
	smmu__cpu_count(c, SMMU_STAT_tlb_misses, 1);
	if (unlikely(t->spare && t->scrub_pos < t->entries))
		scrub(t, SMMU_TLB_SCRUB_SLICE);
	if (unlikely(t->shrink_wanted)) {
		t->shrink_wanted = false;
		if (t->entries > t->min_entries)
			t->resize_to = t->entries / 2;
	} else if (unlikely(++t->misses >= 2 * t->entries) && t->entries < t->max_entries) {
		t->resize_to = t->entries * 2;
	}
}

void smmu__tlb_maybe_resize(struct smmu__cpu *c)
{
	if (likely(!c->tlb->resize_to))
		return;
	resize(c, c->tlb->resize_to);
	c->tlb->resize_to = 0;
	c->tlb->misses = 0; /* a failed allocation tries again after as many misses */
}

void smmu__tlb_fill(struct smmu__cpu *c, smmu_addr_t granule, void *host, bool writable)
{
	size_t idx = index_of(c, granule);
	struct smmu_tlb_entry *e = entry_at(c, idx);
	if (c->tlb->fill_count < SMMU_TLB_FILL_LOG)
		c->tlb->fill_log[c->tlb->fill_count] = (uint32_t)idx;
	if (c->tlb->fill_count <= SMMU_TLB_FILL_LOG)
		c->tlb->fill_count++;
	c->tlb->fills++;
	e->read_tag = granule;
	e->write_tag = writable ? granule : SMMU_TLB_INVALID;
	e->addend = (uintptr_t)host - (uintptr_t)granule;
	smmu__cpu_count(c, SMMU_STAT_tlb_fills, 1);
}

/* Make the clean spare the active table (see tlb.h); false when there is
 * no spare yet (the size is not steady, or no memory): clear in place. */
static bool swap_in_spare(struct smmu__cpu *c)
{
	struct smmu__tlb *t = c->tlb;
	if (!t->spare) {
		if (!t->steady) {
			t->steady = true; /* clear in place this time (tlb.h) */
			return false;
		}
		t->spare = smmu__tlb_table_alloc(t->entries);
		if (!t->spare)
			return false;
		t->scrub_pos = t->entries;
	}
	scrub(t, t->entries); /* whatever the misses since the last swap left */
	struct smmu_tlb_entry *old = c->pub.tlb;
	/* A handler that lands between these stores clears the table it
	 * finds through pub.tlb, in place, with the old fill log: harmless
	 * for either table, and it never touches the spare. */
	c->pub.tlb = t->spare;
	atomic_signal_fence(memory_order_seq_cst);
	t->fill_count = 0;
	atomic_signal_fence(memory_order_seq_cst);
	t->spare = old;
	t->scrub_pos = 0;
	smmu__cpu_count(c, SMMU_STAT_flush_full_swapped, 1);
	return true;
}

static void flush_all(struct smmu__cpu *c, bool may_swap)
{
	if (c->tlb->fill_count <= SMMU_TLB_FILL_LOG) {
		for (uint32_t i = 0; i < c->tlb->fill_count; i++)
			invalidate(entry_at(c, c->tlb->fill_log[i]));
	} else if (!may_swap || c->tlb->entries < SMMU_TLB_SWAP_MIN_ENTRIES || !swap_in_spare(c)) {
		memset(c->pub.tlb, 0xff, c->tlb->entries * sizeof(struct smmu_tlb_entry));
	}
	c->tlb->fill_count = 0;
	if (c->tlb->fills < c->tlb->entries / 8 && c->tlb->entries > c->tlb->min_entries)
		c->tlb->shrink_wanted = true;
	c->tlb->fills = 0;
	c->tlb->misses = 0;
	smmu__cpu_count(c, SMMU_STAT_flush_full, 1);
}

void smmu__tlb_flush_all_local(struct smmu__cpu *c)
{
	flush_all(c, true);
}

void smmu__tlb_flush_all_in_handler(struct smmu__cpu *c)
{
	flush_all(c, false);
}

void smmu__tlb_flush_range_local(struct smmu__cpu *c, smmu_addr_t start, smmu_addr_t end)
{
	if (end <= start)
		return;
	/* Counted in granules from both ends, so that a range that ends at
	 * the top of the 64-bit space cannot overflow. */
	uint64_t first = start >> SMMU_TLB_GRANULE_SHIFT, last = (end - 1) >> SMMU_TLB_GRANULE_SHIFT;

	if (last - first < c->tlb->entries) {
		for (uint64_t g = first;; g++) {
			smmu_addr_t p = g << SMMU_TLB_GRANULE_SHIFT;
			struct smmu_tlb_entry *e = entry_at(c, index_of(c, p));
			if (e->read_tag == p)
				invalidate(e);
			if (g == last)
				break;
		}
	} else {
		/* Larger than the TLB: visit each entry once instead. */
		for (size_t i = 0; i < c->tlb->entries; i++) {
			struct smmu_tlb_entry *e = entry_at(c, i);
			uint64_t g = e->read_tag >> SMMU_TLB_GRANULE_SHIFT;
			if (e->read_tag != SMMU_TLB_INVALID && g >= first && g <= last)
				invalidate(e);
		}
	}
	smmu__cpu_count(c, SMMU_STAT_flush_range, 1);
}
