/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_DUP_H
#define SMMU_LIB_DUP_H

#include <softmmu/types.h>

struct smmu_mm;
struct smmu__pcache;

/*
 * A write found a COW entry at addr (dup.c): give this mm its own frame
 * (or the shared one, if no longer shared).  Outside any access critical
 * section and without mm->lock; takes it exclusively.  pc: the caller's
 * frame cache, or NULL.  0 (walk again), -EACCES (the mapping forbids
 * writing), -ENOMEM (no frame for the copy).
 */
int smmu__cow_break(struct smmu_mm *mm, smmu_addr_t addr, struct smmu__pcache *pc);

#endif
