/* SPDX-License-Identifier: MIT */
/*
 * Switching a CPU between address spaces: smmu_cpu_switch_mm and the
 * per-CPU address-space ids it keeps (invariants in asid.h).
 *
 * A switch from mm A to mm B, on the CPU's own thread, outside any access:
 *   1. pick B's slot: the one that names B, else a never-used one, else the
 *      least recently used (recycled: its table is flushed).  A table that
 *      must be allocated is allocated first, so that -ENOMEM changes
 *      nothing;
 *   2. leave A: under A's CPU-list lock, settle the counters into A, unlink
 *      (still counted in nr_cpus, so that A cannot be destroyed under us,
 *      until step 3 is done with A and its pool), and read A's flush
 *      generation g.  The signal back-end advances the
 *      generation and posts its requests under that same lock, so every
 *      initiator that reached g or earlier has posted to this CPU (if it
 *      had to) and no later one will; the back-end's cpu_leave then flushes
 *      what was posted and acknowledges it, and the slot has seen g.  From
 *      here on A's shootdowns neither signal nor wait for this CPU (lazy
 *      TLB);
 *   3. swap the active TLB to B's slot inside an access critical section,
 *      so that a late signal from A lands in one consistent TLB (it is
 *      deferred to the end of the section and flushes B's table: a harmless
 *      over-flush, A's requests having been settled in step 2);
 *   4. join B: link under B's lock (a new id in B for a new slot), then,
 *      if online, catch up from the slot's seen_gen through B's flush log.
 *      With step 2's lock, an initiator of B either ran before the link
 *      (its generation is caught up here) or finds this CPU and posts.
 *      In the RCU modes the CPU stays a QSBR reader throughout: B's grace
 *      periods wait for its next quiescent state, whose catch-up reads B's
 *      generation; A's stale entries stay in an inactive table that is
 *      caught up before it is used again.
 * An offline CPU switches too, and catches up when it comes online.
 */
#include "asid.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "cpu.h"
#include "mm.h"
#include "notifier.h"
#include "pool.h"
#include "shootdown.h"
#include "util.h"

int smmu__asids_init(struct smmu__cpu *c, unsigned n)
{
	c->asids = smmu__zalloc(n * sizeof(*c->asids));
	if (!c->asids)
		return -ENOMEM;
	c->nasids = n;
	c->cur_asid = 0;
	c->asids[0].mm_serial = c->mm->serial;
	c->tlb = &c->asids[0].tlb;
	return 0;
}

void smmu__asids_fini(struct smmu__cpu *c)
{
	for (unsigned i = 0; i < c->nasids; i++) {
		struct smmu__asid *a = &c->asids[i];
		if (i != c->cur_asid && a->table) {
			smmu__tlb_free_spare(&a->tlb);
			smmu__free(a->table, a->tlb.entries * sizeof(struct smmu_tlb_entry));
		}
	}
	smmu__free(c->asids, c->nasids * sizeof(*c->asids));
	c->asids = NULL;
}

/* The slot for mm: its own, else a never-used one, else the least recently
 * used other than the active one (the active one when it is the only). */
static unsigned pick(const struct smmu__cpu *c, const struct smmu_mm *mm, bool *fresh)
{
	unsigned victim = c->cur_asid;
	uint64_t oldest = UINT64_MAX;
	*fresh = true;
	for (unsigned i = 0; i < c->nasids; i++) {
		const struct smmu__asid *a = &c->asids[i];
		if (a->mm_serial == mm->serial) {
			*fresh = false;
			return i;
		}
		if (i == c->cur_asid)
			continue;
		uint64_t age = a->mm_serial ? a->last_used : 0; /* never used: take it first */
		if (age < oldest) {
			oldest = age;
			victim = i;
		}
	}
	return victim;
}

/* Copy the active TLB's state out to its slot, and slot s's in (the
 * sizing state stays in the slots, c->tlb points at the active one's). */
static void swap_active(struct smmu__cpu *c, unsigned s)
{
	struct smmu__asid *out = &c->asids[c->cur_asid], *in = &c->asids[s];
	out->table = c->pub.tlb;
	out->mask = c->pub.tlb_mask;
	out->seen_gen = c->seen_gen;
	out->id = c->id;
	out->loaded = atomic_load_explicit(&c->loaded, memory_order_relaxed);
	out->last_used = ++c->switches;
	c->pub.tlb = in->table;
	c->pub.tlb_mask = in->mask;
	c->tlb = &in->tlb; /* sizing and fill log live in the slot: nothing to copy */
	c->seen_gen = in->seen_gen;
	c->id = in->id;
	atomic_store_explicit(&c->loaded, in->loaded, memory_order_relaxed);
	c->cur_asid = s;
}

SMMU_API int smmu_cpu_switch_mm(struct smmu_cpu *pub, struct smmu_mm *to)
{
	int err = smmu__cpu_check_owner(pub);
	if (err)
		return err;
	struct smmu__cpu *c = smmu__cpu_of(pub);
	struct smmu_mm *from = c->mm;
	if (!smmu__mm_check_live(to))
		return -EINVAL;
	if (to == from)
		return 0;
	if (to->sd != from->sd || (to->flags & SMMU_MM_APP_URCU) != (from->flags & SMMU_MM_APP_URCU) ||
	    c->pub.in_access || c->in_fault_handler || smmu__notify_in_any_callback())
		return -EINVAL;

	/* 1. The slot, and its table if it has none yet. */
	bool fresh;
	unsigned s = pick(c, to, &fresh);
	struct smmu__asid *slot = &c->asids[s];
	bool recycled = fresh && slot->mm_serial != 0;
	if (s != c->cur_asid && !slot->table) {
		size_t n = c->tlb->min_entries;
		slot->table = smmu__tlb_table_alloc(n);
		if (!slot->table)
			return -ENOMEM;
		slot->mask = (uint64_t)(n - 1) << SMMU_TLB_ENTRY_SHIFT;
		slot->tlb = (struct smmu__tlb){ .entries = n, .min_entries = n, .max_entries = c->tlb->max_entries };
	}

	/* 2. Leave the old mm. */
	pthread_mutex_lock(&from->cpus_lock);
	smmu__counters_settle(&from->counters, &c->counters, &c->counters_base);
	smmu__cpu_unlink(from, c);
	uint64_t gen = atomic_load(&from->flush_gen);
	pthread_mutex_unlock(&from->cpus_lock);
	from->sd->cpu_leave(c, gen);

	/* 3. The new mm's TLB becomes the active one. */
	smmu__access_enter(&c->pub);
	if (s != c->cur_asid)
		swap_active(c, s);
	c->mm = to;
	smmu__access_exit(&c->pub);
	if (fresh) {
		/* Whatever the table holds belongs to another mm: drop it.  A
		 * table that was never used is empty already. */
		if (recycled)
			smmu__tlb_flush_all_local(c);
		c->asids[s].mm_serial = to->serial;
	}
	if (from->pool != to->pool) {
		smmu__pcache_detach(&c->pcache);
		smmu__pcache_attach(to->pool, &c->pcache);
	}
	/* Done with the old mm (and its pool): it may be destroyed now. */
	pthread_mutex_lock(&from->cpus_lock);
	from->nr_cpus--;
	pthread_mutex_unlock(&from->cpus_lock);

	/* 4. Join it. */
	pthread_mutex_lock(&to->cpus_lock);
	if (fresh) {
		c->id = to->next_cpu_id++;
		atomic_store(&c->loaded, false);
		c->seen_gen = atomic_load(&to->flush_gen); /* an empty TLB is up to date */
	}
	smmu__cpu_link(to, c);
	to->nr_cpus++;
	smmu__cpu_count(c, SMMU_STAT_mm_switches, 1);
	if (recycled)
		smmu__cpu_count(c, SMMU_STAT_asid_recycles, 1);
	pthread_mutex_unlock(&to->cpus_lock);
	if (atomic_load(&c->online))
		smmu__tlb_catch_up(c);
	return 0;
}
