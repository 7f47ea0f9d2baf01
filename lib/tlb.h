/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_TLB_H
#define SMMU_LIB_TLB_H

/*
 * A CPU's software TLB: direct-mapped, a power of two of 32-byte entries
 * {read tag, write tag, addend} (layout in <softmmu/types.h>).
 *
 * Invariants:
 *  - an entry is all-invalid, or describes exactly one page P: read_tag ==
 *    P, write_tag == P only if the PTE was writable and dirty when filled,
 *    addend == host(P) - P;
 *  - at most one entry per page (direct-mapped: the index is a function of
 *    the page);
 *  - fill_log holds the index of every entry filled since the last full
 *    flush while fill_count <= SMMU_TLB_FILL_LOG, so a full flush of a TLB
 *    that holds few entries touches only those.
 * Sync: owner thread only.
 */

#include <stdbool.h>
#include <stdint.h>

#include <softmmu/types.h>

#define SMMU_TLB_DEFAULT_ENTRIES 4096u
#define SMMU_TLB_MIN_ENTRIES 16u
#define SMMU_TLB_MAX_ENTRIES (1u << 20)
#define SMMU_TLB_FILL_LOG 64u

struct smmu__tlb {
	size_t entries;
	uint32_t fill_count;
	uint32_t fill_log[SMMU_TLB_FILL_LOG];
};

struct smmu__cpu;

int smmu__tlb_init(struct smmu__cpu *c, size_t entries);
void smmu__tlb_fini(struct smmu__cpu *c);
void smmu__tlb_fill(struct smmu__cpu *c, smmu_addr_t page, void *host, bool writable);
void smmu__tlb_flush_all_local(struct smmu__cpu *c);
void smmu__tlb_flush_range_local(struct smmu__cpu *c, smmu_addr_t start, smmu_addr_t end);

#endif
