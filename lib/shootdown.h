/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_SHOOTDOWN_H
#define SMMU_LIB_SHOOTDOWN_H

/*
 * Shootdown back-ends.  Each is one ops table, chosen per mm at creation;
 * the TLB hit path never branches on it.  The gather calls
 * smmu__shootdown() between clearing entries and freeing what they
 * referenced (gather.h).
 */

#include <stdbool.h>

#include <softmmu/types.h>

struct smmu_mm;
struct smmu__cpu;

struct smmu__shootdown_ops {
	const char *name;
	/* A CPU is being registered on its own thread: prepare delivery. */
	int (*cpu_attach)(struct smmu__cpu *c);
	/* The CPU is leaving (its own thread): no initiator may still wait on it
	 * when this returns. */
	void (*cpu_detach)(struct smmu__cpu *c);
	/* Advance mm's flush generation, then make every TLB of mm that may
	 * hold a translation in [start, end) (all of them if full) drop it,
	 * the calling CPU's included, before returning.  Only CPUs whose bit
	 * (pgtable.h) is in cpus can hold one. */
	void (*flush)(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end, bool full, uint32_t cpus);
};

extern const struct smmu__shootdown_ops smmu__shootdown_signal;

#endif
