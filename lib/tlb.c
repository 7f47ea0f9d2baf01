/* SPDX-License-Identifier: MIT */
/* The software TLB (invariants in tlb.h). */
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

static inline size_t index_of(const struct smmu__cpu *c, smmu_addr_t page)
{
	return (size_t)((page >> c->pub.tlb_shift) & c->pub.tlb_mask) >> SMMU_TLB_ENTRY_SHIFT;
}

static inline void invalidate(struct smmu_tlb_entry *e)
{
	e->read_tag = SMMU_TLB_INVALID;
	e->write_tag = SMMU_TLB_INVALID;
}

int smmu__tlb_init(struct smmu__cpu *c, size_t entries)
{
	struct smmu_tlb_entry *t = smmu__zalloc_aligned(64, entries * sizeof(*t));
	if (!t)
		return -ENOMEM;
	memset(t, 0xff, entries * sizeof(*t)); /* every tag SMMU_TLB_INVALID */
	c->pub.tlb = t;
	c->pub.tlb_mask = (uint64_t)(entries - 1) << SMMU_TLB_ENTRY_SHIFT;
	c->tlb.entries = entries;
	c->tlb.fill_count = 0;
	return 0;
}

void smmu__tlb_fini(struct smmu__cpu *c)
{
	smmu__free(c->pub.tlb, c->tlb.entries * sizeof(struct smmu_tlb_entry));
	c->pub.tlb = NULL;
}

void smmu__tlb_fill(struct smmu__cpu *c, smmu_addr_t page, void *host, bool writable)
{
	size_t idx = index_of(c, page);
	struct smmu_tlb_entry *e = entry_at(c, idx);
	if (c->tlb.fill_count < SMMU_TLB_FILL_LOG)
		c->tlb.fill_log[c->tlb.fill_count] = (uint32_t)idx;
	if (c->tlb.fill_count <= SMMU_TLB_FILL_LOG)
		c->tlb.fill_count++;
	e->read_tag = page;
	e->write_tag = writable ? page : SMMU_TLB_INVALID;
	e->addend = (uintptr_t)host - (uintptr_t)page;
	smmu__cpu_count(c, SMMU_STAT_tlb_fills, 1);
}

void smmu__tlb_flush_all_local(struct smmu__cpu *c)
{
	if (c->tlb.fill_count <= SMMU_TLB_FILL_LOG) {
		for (uint32_t i = 0; i < c->tlb.fill_count; i++)
			invalidate(entry_at(c, c->tlb.fill_log[i]));
	} else {
		memset(c->pub.tlb, 0xff, c->tlb.entries * sizeof(struct smmu_tlb_entry));
	}
	c->tlb.fill_count = 0;
	smmu__cpu_count(c, SMMU_STAT_flush_full, 1);
}

void smmu__tlb_flush_range_local(struct smmu__cpu *c, smmu_addr_t start, smmu_addr_t end)
{
	uint64_t page_size = ~c->pub.page_mask + 1;
	start &= c->pub.page_mask;
	uint64_t pages = (end - start + page_size - 1) / page_size;

	if (pages < c->tlb.entries) {
		for (smmu_addr_t p = start; p < end; p += page_size) {
			struct smmu_tlb_entry *e = entry_at(c, index_of(c, p));
			if (e->read_tag == p)
				invalidate(e);
		}
	} else {
		/* Larger than the TLB: visit each entry once instead. */
		for (size_t i = 0; i < c->tlb.entries; i++) {
			struct smmu_tlb_entry *e = entry_at(c, i);
			if (e->read_tag != SMMU_TLB_INVALID && e->read_tag >= start && e->read_tag < end)
				invalidate(e);
		}
	}
	smmu__cpu_count(c, SMMU_STAT_flush_range, 1);
}
