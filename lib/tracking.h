/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_TRACKING_H
#define SMMU_LIB_TRACKING_H

#include <stddef.h>

#include <softmmu/types.h>

struct smmu_mm;
struct smmu__gather;

/* Changes a page's state but not its frame or permission, under the mm
 * lock held exclusively: record on g what TLBs must drop.  Returns a
 * count for the caller. */
typedef size_t (*smmu__clear_op)(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t addr, smmu_addr_t end,
				 void *ctx);

/* Run op over [addr, end) as an SMMU_NOTIFY_CLEAR change (clearing dirty
 * state, arming write notification): subscribers bracketed, the entries op
 * recorded flushed after the lock is dropped.  op's result. */
size_t smmu__clear_change(struct smmu_mm *mm, smmu_addr_t addr, smmu_addr_t end, smmu__clear_op op, void *ctx);

#endif
