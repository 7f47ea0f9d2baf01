/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_ASID_H
#define SMMU_LIB_ASID_H

/*
 * A CPU's address-space ids: one TLB per address space the CPU ran in
 * recently, so that smmu_cpu_switch_mm flushes nothing (asid.c).
 *
 * The tag is which table an entry lives in, not a field of the entry: the
 * hit path reads the active table through pub.tlb as before and pays
 * nothing for the tag, and an entry can never match in another address
 * space, whatever address an access names.
 *
 * Invariants (c->asids[i], owner thread only):
 *  - mm_serial names the mm whose translations table holds (0: none yet),
 *    and at most one slot names a given mm;
 *  - the active slot is c->cur_asid: its table, seen_gen, id and loaded
 *    live in the CPU (pub.tlb, ...) and its copies here are stale until it
 *    is switched out; its sizing state is its own (c->tlb points at it);
 *  - an inactive slot's seen_gen is a generation of its mm such that every
 *    flush of that mm up to it has been applied to its table; the table
 *    may hold translations that later flushes removed (even to frames that
 *    were freed and reused since), and it is caught up from that
 *    generation before it is used again.  No walk is in progress in an
 *    inactive slot's mm on behalf of this CPU: walks happen only inside an
 *    access, on the current mm, so that mm may free page-table pages
 *    without waiting for this CPU (the table holds frames' host addresses,
 *    never page-table pointers).
 */

#include <stdbool.h>
#include <stdint.h>

#include <softmmu/types.h>

#include "tlb.h"

struct smmu__cpu;
struct smmu_mm;

struct smmu__asid {
	uint64_t mm_serial; /* 0: never used */
	uint64_t last_used; /* the CPU's switch count when it was last switched out */
	uint64_t seen_gen;
	unsigned id;
	bool loaded;
	struct smmu_tlb_entry *table; /* NULL until first used */
	uint64_t mask;
	struct smmu__tlb tlb;
};

/* Give c n slots, slot 0 active for c->mm (c->tlb points at its sizing
 * state; smmu__tlb_init then sets it up).  0 or -ENOMEM. */
int smmu__asids_init(struct smmu__cpu *c, unsigned n);
/* Free every inactive slot's table and the slots (the active table is
 * smmu__tlb_fini's: call that first). */
void smmu__asids_fini(struct smmu__cpu *c);

#endif
