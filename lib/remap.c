/* SPDX-License-Identifier: MIT */
/*
 * mremap: move translations to other addresses without copying frames -
 * many moves under one gather and one shootdown, all or nothing.
 *
 * Order, under mm->lock held exclusively:
 *   1. check every move and reserve everything that can fail: region
 *      slots, the destination's table pages, the notifier brackets and the
 *      source regions' copies; an error here changes nothing (tables made
 *      for nothing are pruned again, through a gather);
 *   2. invalidate_range_start(SMMU_NOTIFY_REMAP) over each source;
 *   3. move each piece (a leaf, or a whole subtree when both sides are
 *      aligned to it: see next_piece): exchange the source slot with 0,
 *      store the value in the (empty) destination slot (a leaf without its
 *      CPU bits: no TLB holds the new address - except with a lazy flush,
 *      shootdown.h, where the bits stay: a CPU that keeps the source entry
 *      after the flush reaches the frame, and unmapping the destination
 *      must wait for it); the source's CPU bits (all
 *      CPUs for a subtree) and range go on the gather, as a zap's would -
 *      a CPU that filled from the old entry is among them (pgtable.h), and
 *      a walk that missed the exchange faults, waits for the lock and finds
 *      the source unmapped;
 *   4. move the regions (protection, fault handler); after every move,
 *      prune the sources' emptied table pages onto the gather;
 * then, without the lock, the gather's flush shoots down the sources (the
 * secondary TLBs too) and frees only the pruned tables; end brackets.
 * A CPU that still holds a source entry until the shootdown reaches the
 * same frame the destination now maps: no write is lost.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "gather.h"
#include "mm.h"
#include "notifier.h"
#include "pgtable.h"
#include "region.h"
#include "shootdown.h"

struct span {
	smmu_addr_t start, end;
};

static int by_start(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* Every move well-formed, and no two of its 2n ranges overlap. */
static int check_moves(struct smmu_mm *mm, const struct smmu_remap *moves, size_t n, smmu_addr_t *ends)
{
	struct span *v = smmu__malloc(2 * n * sizeof(*v));
	if (!v)
		return -ENOMEM;
	int err = 0;
	for (size_t i = 0; i < n && !err; i++) {
		smmu_addr_t to_end;
		err = smmu__mm_check_range(mm, moves[i].from, moves[i].len, &ends[i]);
		if (!err)
			err = smmu__mm_check_range(mm, moves[i].to, moves[i].len, &to_end);
		if (!err && moves[i].to < mm->min_addr)
			err = -EINVAL;
		v[2 * i] = (struct span){ moves[i].from, ends[i] };
		v[2 * i + 1] = (struct span){ moves[i].to, moves[i].to + (ends[i] - moves[i].from) };
	}
	if (!err) {
		qsort(v, 2 * n, sizeof(*v), by_start);
		for (size_t i = 1; i < 2 * n && !err; i++)
			if (v[i].start < v[i - 1].end)
				err = -EINVAL;
	}
	smmu__free(v, 2 * n * sizeof(*v));
	return err;
}

/*
 * A move goes piece by piece.  A piece is a whole subtree when source and
 * destination are both aligned to what one entry of some upper level
 * covers, the move covers all of it, the source has a table there and the
 * destination's slot is empty: then that one entry moves, as the kernel
 * moves PMDs and PUDs - 1 GiB aligned is a few hundred pointer moves.
 * Otherwise it is a run of leaves that ends where either side's leaf
 * table ends, or a stretch where the source has no table at all.
 * The plan is a pure function of the tree, which nothing else changes
 * while the mapping lock is held exclusively, so reserving (step 1) and
 * moving (step 3) cut the same pieces.
 */
enum piece_kind { PIECE_HOLE = -1, PIECE_LEAF = 0 /* > 0: a subtree at that level */ };

static uint64_t next_piece(struct smmu_mm *mm, smmu_addr_t a, smmu_addr_t b, uint64_t rem, int *kind)
{
	const unsigned shift = mm->page_shift;
	struct smmu__ptable *t = mm->root;
	for (unsigned level = SMMU_PT_LEVELS - 1;; level--) {
		if (level == 0) { /* leaves, up to the end of either side's leaf table */
			unsigned ia = smmu__pt_index(shift, a, 0), ib = smmu__pt_index(shift, b, 0);
			uint64_t run = (uint64_t)(SMMU_PT_ENTRIES - (ia > ib ? ia : ib)) << shift;
			*kind = PIECE_LEAF;
			return run < rem ? run : rem;
		}
		uint64_t span = smmu__pt_span(shift, level);
		smmu_pte_t e = atomic_load_explicit(&t->e[smmu__pt_index(shift, a, level)], memory_order_relaxed);
		if (!e) { /* nothing mapped up to the end of this entry's span */
			uint64_t left = span - (a & (span - 1));
			*kind = PIECE_HOLE;
			return left < rem ? left : rem;
		}
		if (!(a & (span - 1)) && !(b & (span - 1)) && rem >= span) {
			_Atomic smmu_pte_t *d = smmu__pt_slot(mm->root, shift, b, level);
			if (!d || !atomic_load_explicit(d, memory_order_relaxed)) {
				*kind = (int)level;
				return span;
			}
		}
		t = smmu__pt_child(e);
	}
}

/* Step 1 for one move: the destination's tables above each piece. */
static int reserve(struct smmu_mm *mm, smmu_addr_t from, smmu_addr_t to, uint64_t len)
{
	for (uint64_t off = 0, n; off < len; off += n) {
		int kind;
		n = next_piece(mm, from + off, to + off, len - off, &kind);
		_Atomic smmu_pte_t *slot;
		if (kind != PIECE_HOLE) {
			int err = smmu__pt_slot_alloc(mm->root, mm->page_shift, to + off, (unsigned)kind, &slot);
			if (err)
				return err;
		}
	}
	return 0;
}

/* Step 3 for one move: [from, from + len) moves to [to, to + len).  What
 * the source's TLB entries could hold goes on g: each leaf's CPU bits and
 * page, or for a subtree its whole span and every CPU (reading 512 entries
 * a table for their bits would cost more than the move). */
static void move_pieces(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t from, smmu_addr_t to, uint64_t len)
{
	const smmu_pte_t keep = mm->sd->lazy_flush ? ~(smmu_pte_t)0 : ~((smmu_pte_t)SMMU_CPUS_ALL << SMMU_PTE_CPUS_SHIFT);
	for (uint64_t off = 0, n; off < len; off += n) {
		int kind;
		n = next_piece(mm, from + off, to + off, len - off, &kind);
		if (kind == PIECE_HOLE)
			continue;
		_Atomic smmu_pte_t *src = smmu__pt_slot(mm->root, mm->page_shift, from + off, (unsigned)kind);
		_Atomic smmu_pte_t *dst = smmu__pt_slot(mm->root, mm->page_shift, to + off, (unsigned)kind);
		SMMU_ASSERT(src && dst);
		if (kind > 0) {
			SMMU_ASSERT(!atomic_load_explicit(dst, memory_order_relaxed));
			/* A walker that read the source link before the exchange
			 * walks a table that stays alive (it is the destination's
			 * now); what it fills is shot down below. */
			atomic_store(dst, atomic_exchange(src, 0));
			smmu__gather_range(g, from + off, from + off + n);
			g->cpus = SMMU_CPUS_ALL;
			continue;
		}
		/* A run of leaves within one leaf table on each side.  An empty
		 * slot stays empty (faults need the lock we hold), so it is
		 * skipped without a locked instruction. */
		for (uint64_t i = 0; i < n >> mm->page_shift; i++) {
			if (!atomic_load_explicit(&src[i], memory_order_relaxed))
				continue;
			smmu_pte_t pte = atomic_exchange(&src[i], 0);
			/* Release: whatever was written through the source before
			 * the exchange is visible to a walker of the destination.
			 * No TLB holds the new address: the CPU bits start empty
			 * (unless the flush is lazy: see the top). */
			atomic_store_explicit(&dst[i], pte & keep, memory_order_release);
			/* A PROTNONE entry is in no TLB as such.  (Under a lazy flush
			 * a CPU may still hold its old translation: the flush of the
			 * mprotect is logged, and the kept bits make unmapping the
			 * destination wait for that CPU.) */
			if (pte & SMMU_PTE_PRESENT) {
				smmu_addr_t at = from + off + (i << mm->page_shift);
				smmu__gather_range(g, at, at + mm->page_size);
				g->cpus |= smmu__pte_cpus(pte);
			}
		}
	}
}

/* What becomes of the sources' mappings. */
enum source_fate {
	FATE_UNMAP, /* unmapped (smmu_mremap_batch) */
	FATE_KEEP,  /* stay as they were, emptied (SMMU_MREMAP_DONTUNMAP) */
	FATE_LEAVE, /* mapped anew as leave says (smmu_mremap_batch_leave) */
};

static int remap(struct smmu_mm *mm, const struct smmu_remap *moves, size_t n, enum source_fate fate,
		 const struct smmu_remap_leave *leave)
{
	if (!smmu__mm_check_live(mm) || (n && !moves))
		return -EINVAL;
	if (fate == FATE_LEAVE && (!leave || smmu__mm_check_prot(leave->prot)))
		return -EINVAL;
	if (n == 0)
		return 0;
	if (n > SIZE_MAX / (2 * sizeof(struct span)))
		return -ENOMEM;
	smmu_addr_t *ends = smmu__malloc(n * sizeof(*ends));
	struct smmu__notify_op *ops = smmu__malloc(n * sizeof(*ops));
	int err = ends && ops ? check_moves(mm, moves, n, ends) : -ENOMEM;
	if (err || (err = smmu__mm_lock_for_change(mm, 0)))
		goto out_free;

	/* 1. Sources mapped, destinations free; region copies and slots. */
	size_t pieces = 0;
	for (size_t i = 0; i < n && !err; i++) {
		if (!smmu__regions_covered(&mm->regions, moves[i].from, ends[i]))
			err = -EFAULT;
		else if (smmu__regions_any(&mm->regions, moves[i].to, moves[i].to + (ends[i] - moves[i].from)))
			err = -EEXIST;
		for (size_t j = smmu__regions_lower_bound(&mm->regions, moves[i].from);
		     !err && j < mm->regions.n && mm->regions.v[j].start < ends[i]; j++)
			pieces++;
	}
	struct smmu__region *copy = NULL;
	if (!err && !(copy = smmu__malloc(pieces * sizeof(*copy))))
		err = -ENOMEM;
	if (!err) /* splits at the sources' ends, the destinations, the left mappings */
		err = smmu__regions_reserve(&mm->regions, 2 * n + pieces + (fate == FATE_LEAVE ? n : 0));
	for (size_t i = 0; i < n && !err; i++)
		err = reserve(mm, moves[i].from, moves[i].to, ends[i] - moves[i].from);
	if (err) {
		struct smmu__gather g; /* tables made for nothing: after a flush */
		smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
		for (size_t i = 0; i < n; i++)
			smmu__pt_prune(mm, &g, moves[i].to, moves[i].to + (ends[i] - moves[i].from));
		pthread_rwlock_unlock(&mm->lock);
		smmu__gather_finish(&g);
		smmu__free(copy, pieces * sizeof(*copy));
		goto out_free;
	}

	/* 2. */
	for (size_t i = 0; i < n; i++)
		smmu__notify_start(mm, &ops[i], moves[i].from, ends[i], SMMU_NOTIFY_REMAP, true); /* cannot fail */

	/* 3, 4. */
	struct smmu__gather g;
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	g.notify = ops;
	g.nnotify = n;
	if (fate == FATE_LEAVE && leave->handler)
		atomic_store(&mm->has_handlers, true);
	for (size_t i = 0; i < n; i++) {
		const smmu_addr_t from = moves[i].from, end = ends[i], to = moves[i].to;
		move_pieces(mm, &g, from, to, end - from);
		size_t k = 0;
		for (size_t j = smmu__regions_lower_bound(&mm->regions, from);
		     j < mm->regions.n && mm->regions.v[j].start < end; j++)
			copy[k++] = mm->regions.v[j];
		if (fate != FATE_KEEP)
			smmu__regions_remove(&mm->regions, from, end);
		for (size_t j = 0; j < k; j++) {
			const struct smmu__region *r = &copy[j];
			smmu_addr_t s = r->start > from ? r->start : from, e = r->end < end ? r->end : end;
			smmu__regions_insert_handler(&mm->regions, to + (s - from), to + (e - from), r->prot, r->flags,
						     r->handler, r->handler_arg);
		}
		/* In the same step: no access finds the source unmapped.  Its
		 * entries are empty, so a walk faults into the new mapping
		 * (once it has the lock we hold). */
		if (fate == FATE_LEAVE)
			smmu__regions_insert_handler(&mm->regions, from, end, leave->prot, 0, leave->handler,
						     leave->handler_arg);
	}
	/* Only after every move: a table emptied by one move's source may be
	 * on the way to a later move's reserved destination. */
	for (size_t i = 0; i < n; i++)
		smmu__pt_prune(mm, &g, moves[i].from, ends[i]);
	pthread_rwlock_unlock(&mm->lock);
	smmu__gather_finish(&g);
	for (size_t i = 0; i < n; i++)
		smmu__notify_end(&ops[i]);
	smmu__free(copy, pieces * sizeof(*copy));
out_free:
	smmu__free(ops, n * sizeof(*ops));
	smmu__free(ends, n * sizeof(*ends));
	return err;
}

SMMU_API int smmu_mremap_batch(struct smmu_mm *mm, const struct smmu_remap *moves, size_t n)
{
	return remap(mm, moves, n, FATE_UNMAP, NULL);
}

SMMU_API int smmu_mremap_batch_leave(struct smmu_mm *mm, const struct smmu_remap *moves, size_t n,
				     const struct smmu_remap_leave *leave)
{
	return remap(mm, moves, n, FATE_LEAVE, leave);
}

SMMU_API int smmu_mremap(struct smmu_mm *mm, smmu_addr_t from, size_t len, smmu_addr_t to, unsigned flags)
{
	if (flags & ~(unsigned)SMMU_MREMAP_DONTUNMAP)
		return -EINVAL;
	struct smmu_remap move = { .from = from, .to = to, .len = len };
	return remap(mm, &move, 1, (flags & SMMU_MREMAP_DONTUNMAP) ? FATE_KEEP : FATE_UNMAP, NULL);
}
