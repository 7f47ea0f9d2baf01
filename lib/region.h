/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_REGION_H
#define SMMU_LIB_REGION_H

/*
 * The region set of an mm: a sorted array of disjoint [start, end) regions,
 * adjacent regions with equal prot and flags always merged.  Binary search
 * to find; memmove to insert or split.  Sync: the owning mm's lock.
 *
 * Operations that can add slots (insert, a split in remove or set_prot)
 * need room reserved first with smmu__regions_reserve, so that once an
 * operation starts changing state it cannot fail: errors leave the set
 * unchanged.
 */

#include <stdbool.h>
#include <stddef.h>

#include <softmmu/types.h>

struct smmu__region {
	smmu_addr_t start, end;
	int prot;
	int flags;
	smmu_fault_handler_fn handler; /* or NULL: demand-zero, faults fail */
	void *handler_arg;
};

struct smmu__regions {
	struct smmu__region *v;
	size_t n, cap;
};

void smmu__regions_init(struct smmu__regions *rs);
void smmu__regions_fini(struct smmu__regions *rs);

/* Make room for `extra` more regions.  -ENOMEM, set unchanged. */
int smmu__regions_reserve(struct smmu__regions *rs, size_t extra);

/* Index of the first region with end > addr (n if none). */
size_t smmu__regions_lower_bound(const struct smmu__regions *rs, smmu_addr_t addr);

/* The region containing addr, or NULL. */
const struct smmu__region *smmu__regions_find(const struct smmu__regions *rs, smmu_addr_t addr);

/* Whether any / every page of [start, end) is mapped. */
bool smmu__regions_any(const struct smmu__regions *rs, smmu_addr_t start, smmu_addr_t end);
bool smmu__regions_covered(const struct smmu__regions *rs, smmu_addr_t start, smmu_addr_t end);

/* Remove [start, end) (splitting the regions at its ends); needs 2 slots reserved. */
void smmu__regions_remove(struct smmu__regions *rs, smmu_addr_t start, smmu_addr_t end);

/* Insert a region over a free range, merging with equal neighbours; needs 1 slot reserved. */
void smmu__regions_insert(struct smmu__regions *rs, smmu_addr_t start, smmu_addr_t end, int prot, int flags);
/* The same with a fault handler (neighbours merge only with the same one). */
void smmu__regions_insert_handler(struct smmu__regions *rs, smmu_addr_t start, smmu_addr_t end, int prot, int flags,
				  smmu_fault_handler_fn handler, void *arg);

/* Set the protection of the covered range [start, end); needs 2 slots reserved. */
void smmu__regions_set_prot(struct smmu__regions *rs, smmu_addr_t start, smmu_addr_t end, int prot);

/* Lowest free range of len bytes at or above from, below limit: its start in
 * *out, or -ENOMEM. */
int smmu__regions_find_free(const struct smmu__regions *rs, smmu_addr_t from, smmu_addr_t limit, uint64_t len,
			    smmu_addr_t *out);

/* Debug validator: sorted, disjoint, non-empty, merged. */
void smmu__regions_check(const struct smmu__regions *rs);

#endif
