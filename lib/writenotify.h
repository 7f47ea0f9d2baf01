/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_WRITENOTIFY_H
#define SMMU_LIB_WRITENOTIFY_H

#include <stddef.h>

#include <softmmu/types.h>

struct smmu_mm;
struct smmu__cpu;

/*
 * A write to addr found its page armed: call the mm's write-notify handler
 * (offline, for CPU c; c is NULL for smmu_mm_translate), then disarm the
 * page unless the handler failed.  Outside any access critical section and
 * without mm->lock.  0 (walk again: the write may go ahead) or the
 * handler's error.
 */
int smmu__write_notify(struct smmu_mm *mm, struct smmu__cpu *c, smmu_addr_t addr, size_t size,
		       enum smmu_access_kind kind);

#endif
