/* SPDX-License-Identifier: MIT */
/*
 * Fault injection: the fixture and the walk shared by fault_injection.c
 * (allocation seam: create, map, unmap, protect, CPUs, notifiers, threads)
 * and fault_injection_more.c (mremap, dup, the frame pool, shootdown
 * signals).
 *
 * For n = 0, 1, 2, ...: build fresh state, snapshot it (regions, page-table
 * entries and page contents of the watched ranges, free frames), make the
 * nth allocation from now fail - from the allocation seam
 * (smmu__alloc_fail_after) or the frame pool (smmu__pool_fail_after) - run
 * the operation, switch injection off.  Then:
 *  - the injected failure fired and the op failed: the error is -ENOMEM
 *    and the state is exactly the snapshot (then op->failed, if any, checks
 *    that what is left still works);
 *  - it fired and the op succeeded (the failure was absorbed, e.g. a gather
 *    batch fallback or a TLB that keeps its size): the state is the op's
 *    correct result;
 *  - it did not fire: the op succeeded with the correct result, and the
 *    walk is over.
 * Every iteration tears down and checks smmu__alloc_live() is back where it
 * was before the setup (no leak) and every frame is back in its pool.
 *
 * Each test program includes this once; every function is static (and
 * marked unused: not every program uses every helper).
 */
#ifndef SMMU_TEST_FAULT_INJECTION_H
#define SMMU_TEST_FAULT_INJECTION_H

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "cpu.h"
#include "mm.h"
#include "pgtable.h"
#include "pool.h"

#define FI_FN static __attribute__((unused))

#define PS 4096ull
#define RW (SMMU_PROT_READ | SMMU_PROT_WRITE)
#define MAX_REGIONS 64
#define MAX_SNAP 2048     /* watched pages in all */
#define MAX_SNAP_RANGES 6 /* watched ranges */
#define MAX_MOVES 4
#define FI_MAX_N 100000 /* no walk has that many sites: a runaway guard */

struct page_snap {
	smmu_pte_t pte;
	uint64_t hash; /* of the frame's contents, if the page has one */
};

struct snap_range {
	smmu_addr_t lo;
	size_t pages;
};

struct fi {
	/* state */
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	size_t nframes;
	/* op parameters and results */
	smmu_addr_t x, y, out;
	struct smmu_pool *pool2;
	struct smmu_mm *mm2;
	struct smmu_cpu *cpu2;
	bool destroyed;
	struct smmu_remap moves[MAX_MOVES];
	size_t nmoves;
	/* subscriptions, threads, translations (fault_injection.c / _more.c) */
	struct smmu_notifier *notifier;
	struct smmu_interval_notifier *isub;
	_Atomic int cb_start, cb_secondary, cb_end, cb_invalidate;
	pthread_t thread;
	bool thread_live;
	int variant; /* which form of the op a shared setup/run/done makes */
	_Atomic int thread_ran;
	int tasks_before;
	void *host;
	/* snapshot: the watched ranges, their pages in order */
	struct snap_range snap[MAX_SNAP_RANGES];
	size_t nsnap;
	struct smmu_region regions[MAX_REGIONS];
	size_t nregions;
	struct page_snap pages[MAX_SNAP];
	size_t free_frames;
	long live_before_op;
};

enum fi_seam {
	FI_ALLOC = 0, /* smmu__alloc_fail_after: metadata allocations */
	FI_POOL,      /* smmu__pool_fail_after: frame allocations */
};

struct fi_op {
	const char *name;
	void (*setup)(struct fi *);
	int (*run)(struct fi *);
	void (*done)(struct fi *); /* asserts the op's result */
	void (*teardown)(struct fi *);
	bool absorbable;  /* an injected failure may be absorbed (op succeeds) */
	bool strict_live; /* a failed op frees everything it allocated at once */
	enum fi_seam seam;
	void (*failed)(struct fi *); /* after a failure and the unchanged check:
	                              * what is left still works (may change state) */
};

/* ------------------------------------------------------------ helpers */

FI_FN uint64_t page_hash(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

FI_FN uint64_t zero_hash(void)
{
	static unsigned char z[PS];
	return page_hash(z, PS);
}

FI_FN smmu_pte_t pte_at(struct smmu_mm *mm, smmu_addr_t a)
{
	_Atomic smmu_pte_t *slot = smmu__pt_lookup(mm->root, mm->page_shift, a);
	return slot ? atomic_load(slot) : 0;
}

FI_FN smmu_pte_t pte_no_cpus(smmu_pte_t p)
{
	return p & ~((smmu_pte_t)SMMU_CPUS_ALL << SMMU_PTE_CPUS_SHIFT);
}

/* Watch [lo, lo + pages * PS): snapshot() records it, check_unchanged()
 * compares it. */
FI_FN void watch(struct fi *f, smmu_addr_t lo, size_t pages)
{
	cr_assert_lt(f->nsnap, MAX_SNAP_RANGES);
	f->snap[f->nsnap++] = (struct snap_range){lo, pages};
	size_t total = 0;
	for (size_t i = 0; i < f->nsnap; i++)
		total += f->snap[i].pages;
	cr_assert_leq(total, MAX_SNAP);
}

FI_FN size_t snap_total(const struct fi *f)
{
	size_t total = 0;
	for (size_t i = 0; i < f->nsnap; i++)
		total += f->snap[i].pages;
	return total;
}

/* The address of the ith watched page. */
FI_FN smmu_addr_t snap_addr(const struct fi *f, size_t i)
{
	for (size_t r = 0; r < f->nsnap; r++) {
		if (i < f->snap[r].pages)
			return f->snap[r].lo + i * PS;
		i -= f->snap[r].pages;
	}
	cr_assert_fail("watched page out of range");
	return 0;
}

/* The index of the watched page at a, or -1. */
FI_FN long snap_index(const struct fi *f, smmu_addr_t a)
{
	size_t base = 0;
	for (size_t r = 0; r < f->nsnap; r++) {
		if (a >= f->snap[r].lo && a < f->snap[r].lo + f->snap[r].pages * PS)
			return (long)(base + (a - f->snap[r].lo) / PS);
		base += f->snap[r].pages;
	}
	return -1;
}

FI_FN void snap_regions(struct smmu_mm *mm, struct smmu_region *out, size_t *n)
{
	struct smmu_region r;
	smmu_addr_t a = 0;
	*n = 0;
	while (smmu_mm_find(mm, a, &r) == 0) {
		cr_assert_lt(*n, MAX_REGIONS);
		out[(*n)++] = r;
		a = r.end;
	}
}

FI_FN void snap_pages(struct fi *f, struct page_snap *out)
{
	size_t n = snap_total(f);
	for (size_t i = 0; i < n; i++) {
		smmu_pte_t p = pte_at(f->mm, snap_addr(f, i));
		out[i].pte = p;
		out[i].hash =
			(p & SMMU_PTE_HAS_FRAME) ? page_hash(smmu__frame_host(f->pool, smmu__pte_frame(p)), PS) : 0;
	}
}

FI_FN void snapshot(struct fi *f)
{
	if (f->mm) {
		snap_regions(f->mm, f->regions, &f->nregions);
		snap_pages(f, f->pages);
	}
	f->free_frames = f->pool ? smmu_pool_free_frames(f->pool) : 0;
}

/* The state equals the snapshot. */
FI_FN void check_unchanged(struct fi *f, long n)
{
	if (!f->mm)
		return;
	struct smmu_region now[MAX_REGIONS];
	size_t nnow;
	snap_regions(f->mm, now, &nnow);
	cr_assert_eq(nnow, f->nregions, "n=%ld: %zu regions, were %zu", n, nnow, f->nregions);
	for (size_t i = 0; i < nnow; i++)
		cr_assert(now[i].start == f->regions[i].start && now[i].end == f->regions[i].end &&
				  now[i].prot == f->regions[i].prot,
			  "n=%ld: region %zu changed: [%#llx, %#llx) %d, was [%#llx, %#llx) %d", n, i,
			  (unsigned long long)now[i].start, (unsigned long long)now[i].end, now[i].prot,
			  (unsigned long long)f->regions[i].start, (unsigned long long)f->regions[i].end,
			  f->regions[i].prot);
	static struct page_snap pages[MAX_SNAP];
	snap_pages(f, pages);
	for (size_t i = 0; i < snap_total(f); i++) {
		cr_assert_eq(pages[i].pte, f->pages[i].pte, "n=%ld: page %#llx: pte %#llx, was %#llx", n,
			     (unsigned long long)snap_addr(f, i), (unsigned long long)pages[i].pte,
			     (unsigned long long)f->pages[i].pte);
		cr_assert_eq(pages[i].hash, f->pages[i].hash, "n=%ld: page %#llx contents changed", n,
			     (unsigned long long)snap_addr(f, i));
	}
	cr_assert_eq(smmu_pool_free_frames(f->pool), f->free_frames, "n=%ld: free frames %zu, were %zu", n,
		     smmu_pool_free_frames(f->pool), f->free_frames);
}

FI_FN void expect_regions(struct fi *f, const struct smmu_region *want, size_t nwant)
{
	struct smmu_region now[MAX_REGIONS];
	size_t nnow;
	snap_regions(f->mm, now, &nnow);
	cr_assert_eq(nnow, nwant, "%zu regions, want %zu", nnow, nwant);
	for (size_t i = 0; i < nnow; i++)
		cr_assert(now[i].start == want[i].start && now[i].end == want[i].end && now[i].prot == want[i].prot,
			  "region %zu: [%#llx, %#llx) %d, want [%#llx, %#llx) %d", i, (unsigned long long)now[i].start,
			  (unsigned long long)now[i].end, now[i].prot, (unsigned long long)want[i].start,
			  (unsigned long long)want[i].end, want[i].prot);
}

/* Sort by start (small n) and merge neighbours of equal protection, as the
 * library merges. */
FI_FN size_t sort_merge(struct smmu_region *tmp, size_t n, struct smmu_region *out)
{
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && tmp[j - 1].start > tmp[j].start; j--) {
			struct smmu_region t = tmp[j];
			tmp[j] = tmp[j - 1];
			tmp[j - 1] = t;
		}
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (m && out[m - 1].end == tmp[i].start && out[m - 1].prot == tmp[i].prot)
			out[m - 1].end = tmp[i].end;
		else
			out[m++] = tmp[i];
	}
	return m;
}

/* The snapshot's regions with [lo, hi) replaced by `mid` (prot < 0: a hole),
 * merged as the library merges. */
FI_FN size_t regions_after(const struct fi *f, smmu_addr_t lo, smmu_addr_t hi, int mid, struct smmu_region *out)
{
	size_t n = 0;
	struct smmu_region tmp[MAX_REGIONS + 3];
	for (size_t i = 0; i < f->nregions; i++) {
		struct smmu_region r = f->regions[i];
		if (r.end <= lo || r.start >= hi) {
			tmp[n++] = r;
			continue;
		}
		if (r.start < lo)
			tmp[n++] = (struct smmu_region){r.start, lo, r.prot, 0};
		if (r.end > hi)
			tmp[n++] = (struct smmu_region){hi, r.end, r.prot, 0};
	}
	if (mid >= 0)
		tmp[n++] = (struct smmu_region){lo, hi, mid, 0};
	return sort_merge(tmp, n, out);
}

/* Watched pages outside [lo, hi) are untouched. */
FI_FN void expect_pages_outside(struct fi *f, smmu_addr_t lo, smmu_addr_t hi)
{
	static struct page_snap pages[MAX_SNAP];
	snap_pages(f, pages);
	for (size_t i = 0; i < snap_total(f); i++) {
		smmu_addr_t a = snap_addr(f, i);
		if (a >= lo && a < hi)
			continue;
		cr_assert_eq(pages[i].pte, f->pages[i].pte, "page %#llx outside the op changed", (unsigned long long)a);
		cr_assert_eq(pages[i].hash, f->pages[i].hash);
	}
}

FI_FN void env_pool(struct fi *f, size_t nframes)
{
	struct smmu_pool_config cfg = {.size = nframes * PS, .flags = SMMU_POOL_POISON};
	cr_assert_eq(smmu_pool_create(&cfg, &f->pool), 0);
	f->nframes = nframes;
}

FI_FN void env_mode(struct fi *f, size_t nframes, bool cpu, enum smmu_shootdown_mode mode)
{
	env_pool(f, nframes);
	struct smmu_mm_config cfg = {.mode = mode};
	cr_assert_eq(smmu_mm_create_ex(f->pool, &cfg, &f->mm), 0);
	if (cpu)
		cr_assert_eq(smmu_cpu_register(f->mm, &f->cpu), 0);
}

FI_FN void env(struct fi *f, size_t nframes, bool cpu)
{
	env_mode(f, nframes, cpu, SMMU_SHOOTDOWN_SIGNAL);
}

FI_FN void env_down(struct fi *f)
{
	if (f->cpu2)
		cr_assert_eq(smmu_cpu_unregister(f->cpu2), 0);
	if (f->cpu)
		cr_assert_eq(smmu_cpu_unregister(f->cpu), 0);
	if (f->mm2)
		cr_assert_eq(smmu_mm_destroy(f->mm2), 0);
	if (f->mm && !f->destroyed)
		cr_assert_eq(smmu_mm_destroy(f->mm), 0);
	if (f->pool) {
		cr_assert_eq(smmu_pool_free_frames(f->pool), f->nframes, "frames leaked");
		cr_assert_eq(smmu_pool_destroy(f->pool), 0);
	}
	if (f->pool2)
		cr_assert_eq(smmu_pool_destroy(f->pool2), 0);
}

/* The value mapped_and_written() stores at the start of its ith page's
 * pattern, and the pattern's offset in the page. */
FI_FN uint64_t pattern_value(smmu_addr_t a, size_t i)
{
	return a + i * PS;
}

FI_FN smmu_addr_t pattern_offset(size_t i)
{
	return 64 * (i % 8);
}

/* Map [a, a + pages) FIXED and write a distinct pattern into every page. */
FI_FN void mapped_and_written(struct fi *f, smmu_addr_t a, size_t pages, int prot)
{
	smmu_addr_t out;
	cr_assert_eq(smmu_mmap(f->mm, a, pages * PS, RW, SMMU_MAP_FIXED_NOREPLACE, &out), 0);
	for (size_t i = 0; i < pages; i++) {
		uint64_t v[4] = {pattern_value(a, i), ~(a + i * PS), i, 0x5eed};
		cr_assert_eq(smmu_write(f->cpu, a + i * PS + pattern_offset(i), v, sizeof(v)), 0);
	}
	if (prot != RW)
		cr_assert_eq(smmu_mprotect(f->mm, a, pages * PS, prot), 0);
}

/* Six small regions of alternating protection far from the action, so the
 * region array (capacity 8) is at 7 and a split needs to grow it. */
FI_FN void six_more_regions(struct fi *f)
{
	smmu_addr_t out;
	for (int i = 0; i < 6; i++)
		cr_assert_eq(smmu_mmap(f->mm, ((smmu_addr_t)8 << 30) + (smmu_addr_t)i * 4 * PS, 2 * PS,
				       i % 2 ? SMMU_PROT_READ : SMMU_PROT_NONE, SMMU_MAP_FIXED_NOREPLACE, &out),
			     0);
}

/* --------------------------------------------------------- the driver */

FI_FN void seam_arm(enum fi_seam s, long n)
{
	if (s == FI_POOL)
		smmu__pool_fail_after(n);
	else
		smmu__alloc_fail_after(n);
}

FI_FN bool seam_fired(enum fi_seam s)
{
	return s == FI_POOL ? smmu__pool_failure_fired() : smmu__alloc_failure_fired();
}

/* Walks op; returns the number of sites found. */
FI_FN long walk(const struct fi_op *op)
{
	long n, sites = 0, errors = 0, absorbed = 0;
	for (n = 0; n < FI_MAX_N; n++) {
		struct fi *f = calloc(1, sizeof(*f));
		cr_assert(f);
		long live0 = smmu__alloc_live();
		op->setup(f);
		snapshot(f);
		f->live_before_op = smmu__alloc_live();

		seam_arm(op->seam, n);
		int err = op->run(f);
		bool fired = seam_fired(op->seam);
		seam_arm(op->seam, -1);

		if (fired) {
			sites++;
			if (err) {
				errors++;
				cr_assert_eq(err, -ENOMEM, "%s, n=%ld: error %d, not -ENOMEM", op->name, n, err);
				check_unchanged(f, n);
				if (op->strict_live)
					cr_assert_eq(smmu__alloc_live(), f->live_before_op,
						     "%s, n=%ld: the failed op kept %ld blocks", op->name, n,
						     smmu__alloc_live() - f->live_before_op);
				if (op->failed)
					op->failed(f);
			} else {
				absorbed++;
				cr_assert(op->absorbable, "%s, n=%ld: the failure vanished and the op succeeded",
					  op->name, n);
				op->done(f);
			}
		} else {
			cr_assert_eq(err, 0, "%s without injected failure: %d", op->name, err);
			op->done(f);
		}
		op->teardown(f);
		cr_assert_eq(smmu__alloc_live(), live0, "%s, n=%ld: leaked %ld blocks", op->name, n,
			     smmu__alloc_live() - live0);
		free(f);
		if (!fired)
			break;
	}
	cr_assert_lt(n, FI_MAX_N);
	cr_log_info("fault injection: %-34s %3ld %s sites (%ld -> -ENOMEM, %ld absorbed)", op->name, sites,
		    op->seam == FI_POOL ? "frame" : "allocation", errors, absorbed);
	cr_assert_gt(sites, 0, "%s allocates nothing?", op->name);
	return sites;
}

#endif
