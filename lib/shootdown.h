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
struct smmu__gather;

struct smmu__shootdown_ops {
	const char *name;
	/* A CPU may keep using an entry after the flush that cleared it
	 * returned (RCU deferred mode: until its next quiescent state), so a
	 * moved frame's CPU bits must travel with it (remap.c): a CPU still
	 * using the old address may read it when the new one is unmapped. */
	bool lazy_flush;
	/* A CPU is being registered on its own thread: prepare delivery. */
	int (*cpu_attach)(struct smmu__cpu *c);
	/* The CPU is leaving (its own thread): no initiator may still wait on it
	 * when this returns. */
	void (*cpu_detach)(struct smmu__cpu *c);
	/* The CPU (its own thread) has just gone offline / come online (its
	 * `online` flag already says so): a back-end's part of the handshake,
	 * including the catch-up flush when coming online. */
	void (*cpu_offline)(struct smmu__cpu *c);
	void (*cpu_online)(struct smmu__cpu *c);
	/* The CPU (its own thread, outside any access) has just left mm's
	 * CPU list (smmu_cpu_switch_mm), where gen was mm's flush generation
	 * under the list lock: settle what mm's initiators posted before, so
	 * that none waits for it, and record in seen_gen what its TLB has
	 * caught up to. */
	void (*cpu_leave)(struct smmu__cpu *c, uint64_t gen);
	/* smmu_quiescent. */
	void (*quiescent)(struct smmu__cpu *c);
	/* After the gather's flush (of entries that CPUs with a bit in cpus
	 * may have cached): take over freeing what it queued, to do it later
	 * (after a grace period), and return true; or return false and the
	 * gather frees now.  NULL: always now. */
	bool (*defer_free)(struct smmu__gather *g, uint32_t cpus);
	/* Advance mm's flush generation, then make every TLB of mm that may
	 * hold a translation in [start, end) (all of them if full) drop it,
	 * the calling CPU's included, before returning.  Only CPUs whose bit
	 * (pgtable.h) is in cpus can hold one. */
	void (*flush)(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end, bool full, uint32_t cpus);
};

extern const struct smmu__shootdown_ops smmu__shootdown_signal;
extern const struct smmu__shootdown_ops smmu__shootdown_rcu;
extern const struct smmu__shootdown_ops smmu__shootdown_rcu_deferred;

/* Whether flushing [start, end) page by page costs more than a full flush:
 * wider than SMMU_FLUSH_CEILING pages (or an empty or inverted range). */
bool smmu__flush_is_wide(const struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end);

/* Bring c's TLB up to mm's flush generation (online, quiescent): from the
 * mm's log of recent flushes, or all of it when too far behind. */
void smmu__tlb_catch_up(struct smmu__cpu *c);

/* Fault injection, for tests (signal back-end): the nth shootdown signal
 * handled from now (0 = the next) stalls ns nanoseconds before it acts;
 * negative n disables.  Global, atomic. */
void smmu__signal_stall_after(long n, long ns);
int smmu__signal_stall_fired(void);

/* Wait for every deferred free of mm (mm teardown). */
void smmu__rcu_barrier(struct smmu_mm *mm);

/* Around a blocking wait by thread of CPU c (NULL: not a CPU): if c is an
 * online CPU of an RCU-mode mm, go offline and return true; _end comes
 * back online and catches up. */
bool smmu__rcu_block_begin(struct smmu__cpu *c);
void smmu__rcu_block_end(struct smmu__cpu *c);

#endif
