/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_TLB_H
#define SMMU_LIB_TLB_H

/*
 * A CPU's software TLB: direct-mapped, a power of two of 32-byte entries
 * {read tag, write tag, addend} (layout in <softmmu/types.h>).
 *
 * Entries cover 4 KiB granules (SMMU_TLB_GRANULE), whatever the page size:
 * a 64 KiB page is cached as up to 16 entries, one per granule touched.
 *
 * Invariants:
 *  - an entry is all-invalid, or describes exactly one granule G: read_tag
 *    == G, write_tag == G only if the PTE was writable and dirty when
 *    filled, addend == host(G) - G;
 *  - at most one entry per granule (direct-mapped: the index is a function
 *    of the granule);
 *  - fill_log holds the index of every entry filled since the last full
 *    flush while fill_count <= SMMU_TLB_FILL_LOG, so a full flush of a TLB
 *    that holds few entries touches only those;
 *  - min_entries <= entries <= max_entries, all powers of two;
 *  - spare is NULL or a second table of `entries` entries, never the
 *    active one, whose entries below scrub_pos are all invalid (the rest
 *    may hold anything: nothing looks up in it).
 *
 * Full flush of a big TLB (entries >= SMMU_TLB_SWAP_MIN_ENTRIES, more than
 * the fill log holds): on the owner thread, outside the signal handler,
 * the clean spare becomes the active table - one pointer store instead of
 * a memset of megabytes - and the old table becomes the spare, scrubbed a
 * slice per miss (SMMU_TLB_SCRUB_SLICE entries) on the owner thread.  A
 * full flush that finds the spare not yet clean finishes scrubbing it
 * first, so it never costs more than the memset it replaces.  The spare is
 * allocated at the second such flush at one size (steady), not the first:
 * a TLB whose size keeps changing would pay a fresh allocation, page
 * faults included, at every flush.  The price is memory: a big TLB keeps
 * two tables.  The handler's full flush
 * (smmu__tlb_flush_all_in_handler) always clears in place: the thread it
 * interrupted may be in the middle of a swap or a resize.
 *
 * Sizing (after QEMU's dynamic TLB, driven by misses instead of a clock):
 * a CPU that misses 2 x entries times between two full flushes has a
 * working set the TLB cannot hold, and the next miss doubles it; a CPU
 * that filled fewer than entries / 8 entries between two full flushes
 * halves it at its next miss.  A miss only decides; the slow path resizes
 * right after, outside the access critical section (then re-enters it and
 * walks), never inside a flush or an access, so neither allocates; a
 * failed allocation keeps the old size.
 *
 * Sync: owner thread only.  (A flush may interrupt the owner between any
 * two statements once signal shootdowns exist; resize orders its stores so
 * that entries never exceeds the table in place.)
 */

#include <stdbool.h>
#include <stdint.h>

#include <softmmu/types.h>

#define SMMU_TLB_DEFAULT_ENTRIES 1024u
#define SMMU_TLB_DEFAULT_MAX_ENTRIES (1u << 18)
#define SMMU_TLB_MIN_ENTRIES 16u
#define SMMU_TLB_MAX_ENTRIES (1u << 22)
#define SMMU_TLB_FILL_LOG 64u
#define SMMU_TLB_SWAP_MIN_ENTRIES (1u << 14) /* 512 KiB: a memset of ~25 us */
#define SMMU_TLB_SCRUB_SLICE 64u             /* 2 KiB per miss */

struct smmu__tlb {
	size_t entries;
	size_t min_entries, max_entries;
	uint64_t misses;    /* since the last full flush or resize */
	uint64_t fills;     /* since the last full flush */
	bool shrink_wanted; /* set by a full flush, decided by the next miss */
	size_t resize_to;   /* decided by a miss, done outside the access */
	uint32_t fill_count;
	uint32_t fill_log[SMMU_TLB_FILL_LOG];
	struct smmu_tlb_entry *spare; /* see the invariants */
	size_t scrub_pos;
	bool steady; /* a big full flush cleared the table in place since its last resize */
};

struct smmu__cpu;

/* An empty table of entries entries (every tag invalid), or NULL. */
struct smmu_tlb_entry *smmu__tlb_table_alloc(size_t entries);
int smmu__tlb_init(struct smmu__cpu *c, size_t entries, size_t max_entries);
void smmu__tlb_fini(struct smmu__cpu *c);
/* Called once per slow-path translation (inside the access): counts the
 * miss and decides whether to resize. */
void smmu__tlb_miss(struct smmu__cpu *c);
/* Outside any access: carry out a resize that a miss decided.  Allocates. */
void smmu__tlb_maybe_resize(struct smmu__cpu *c);
void smmu__tlb_fill(struct smmu__cpu *c, smmu_addr_t granule, void *host, bool writable);
/* Owner thread, not in the signal handler (may swap tables, may allocate
 * the spare). */
void smmu__tlb_flush_all_local(struct smmu__cpu *c);
/* The same from the shootdown signal handler: clears in place. */
void smmu__tlb_flush_all_in_handler(struct smmu__cpu *c);
/* Free a TLB's spare table, if any (the caller frees the table itself). */
void smmu__tlb_free_spare(struct smmu__tlb *t);
void smmu__tlb_flush_range_local(struct smmu__cpu *c, smmu_addr_t start, smmu_addr_t end);

#endif
