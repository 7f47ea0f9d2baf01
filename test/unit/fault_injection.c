/* SPDX-License-Identifier: MIT */
/*
 * Fault injection: walk every allocation site of each operation.
 *
 * For n = 0, 1, 2, ...: build fresh state, snapshot it (regions, page-table
 * entries and page contents, free frames), make the nth allocation from now
 * fail, run the operation, switch injection off.  Then:
 *  - the injected failure fired and the op failed: the error is -ENOMEM
 *    and the state is exactly the snapshot;
 *  - it fired and the op succeeded (the failure was absorbed, e.g. a gather
 *    batch fallback or a TLB that keeps its size): the state is the op's
 *    correct result;
 *  - it did not fire: the op succeeded with the correct result, and the
 *    walk is over.
 * Every iteration tears down and checks smmu__alloc_live() is back where it
 * was before the setup (no leak) and every frame is back in its pool.
 */
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

TestSuite(fault_injection, .timeout = 120);

#define PS 4096ull
#define RW (SMMU_PROT_READ | SMMU_PROT_WRITE)
#define MAX_REGIONS 64
#define MAX_SNAP 1024

struct page_snap {
	smmu_pte_t pte;
	uint64_t hash; /* of the frame's contents, if the page has one */
};

struct fi {
	/* state */
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	size_t nframes;
	/* op parameters and results */
	smmu_addr_t x, out;
	struct smmu_pool *pool2;
	struct smmu_mm *mm2;
	struct smmu_cpu *cpu2;
	bool destroyed;
	/* snapshot */
	struct smmu_region regions[MAX_REGIONS];
	size_t nregions;
	smmu_addr_t snap_lo;
	size_t snap_pages;
	struct page_snap pages[MAX_SNAP];
	size_t free_frames;
	long live_before_op;
};

struct fi_op {
	const char *name;
	void (*setup)(struct fi *);
	int (*run)(struct fi *);
	void (*done)(struct fi *); /* asserts the op's result */
	void (*teardown)(struct fi *);
	bool absorbable;  /* an injected failure may be absorbed (op succeeds) */
	bool strict_live; /* a failed op frees everything it allocated at once */
};

/* ------------------------------------------------------------ helpers */

static uint64_t page_hash(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

static uint64_t zero_hash(void)
{
	static unsigned char z[PS];
	return page_hash(z, PS);
}

static smmu_pte_t pte_at(struct smmu_mm *mm, smmu_addr_t a)
{
	_Atomic smmu_pte_t *slot = smmu__pt_lookup(mm->root, mm->page_shift, a);
	return slot ? atomic_load(slot) : 0;
}

static void snap_regions(struct smmu_mm *mm, struct smmu_region *out, size_t *n)
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

static void snap_pages(struct fi *f, smmu_addr_t lo, size_t n, struct page_snap *out)
{
	for (size_t i = 0; i < n; i++) {
		smmu_pte_t p = pte_at(f->mm, lo + i * PS);
		out[i].pte = p;
		out[i].hash =
			(p & SMMU_PTE_HAS_FRAME) ? page_hash(smmu__frame_host(f->pool, smmu__pte_frame(p)), PS) : 0;
	}
}

static void snapshot(struct fi *f)
{
	if (f->mm) {
		snap_regions(f->mm, f->regions, &f->nregions);
		cr_assert_leq(f->snap_pages, MAX_SNAP);
		snap_pages(f, f->snap_lo, f->snap_pages, f->pages);
	}
	f->free_frames = f->pool ? smmu_pool_free_frames(f->pool) : 0;
}

/* The state equals the snapshot. */
static void check_unchanged(struct fi *f, long n)
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
	snap_pages(f, f->snap_lo, f->snap_pages, pages);
	for (size_t i = 0; i < f->snap_pages; i++) {
		cr_assert_eq(pages[i].pte, f->pages[i].pte, "n=%ld: page %zu: pte %#llx, was %#llx", n, i,
			     (unsigned long long)pages[i].pte, (unsigned long long)f->pages[i].pte);
		cr_assert_eq(pages[i].hash, f->pages[i].hash, "n=%ld: page %zu contents changed", n, i);
	}
	cr_assert_eq(smmu_pool_free_frames(f->pool), f->free_frames, "n=%ld: free frames %zu, were %zu", n,
		     smmu_pool_free_frames(f->pool), f->free_frames);
}

static void expect_regions(struct fi *f, const struct smmu_region *want, size_t nwant)
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

/* The snapshot's regions with [lo, hi) replaced by `mid` (prot < 0: a hole),
 * merged as the library merges. */
static size_t regions_after(const struct fi *f, smmu_addr_t lo, smmu_addr_t hi, int mid, struct smmu_region *out)
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
	/* sort (small n) and merge */
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

/* Pages of the snapshot outside [lo, hi) are untouched. */
static void expect_pages_outside(struct fi *f, smmu_addr_t lo, smmu_addr_t hi)
{
	static struct page_snap pages[MAX_SNAP];
	snap_pages(f, f->snap_lo, f->snap_pages, pages);
	for (size_t i = 0; i < f->snap_pages; i++) {
		smmu_addr_t a = f->snap_lo + i * PS;
		if (a >= lo && a < hi)
			continue;
		cr_assert_eq(pages[i].pte, f->pages[i].pte, "page %#llx outside the op changed", (unsigned long long)a);
		cr_assert_eq(pages[i].hash, f->pages[i].hash);
	}
}

static void env(struct fi *f, size_t nframes, bool cpu)
{
	struct smmu_pool_config cfg = {.size = nframes * PS, .flags = SMMU_POOL_POISON};
	cr_assert_eq(smmu_pool_create(&cfg, &f->pool), 0);
	cr_assert_eq(smmu_mm_create(f->pool, &f->mm), 0);
	f->nframes = nframes;
	if (cpu)
		cr_assert_eq(smmu_cpu_register(f->mm, &f->cpu), 0);
}

static void env_down(struct fi *f)
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

/* Map [a, a + pages) FIXED and write a distinct pattern into every page. */
static void mapped_and_written(struct fi *f, smmu_addr_t a, size_t pages, int prot)
{
	smmu_addr_t out;
	cr_assert_eq(smmu_mmap(f->mm, a, pages * PS, RW, SMMU_MAP_FIXED_NOREPLACE, &out), 0);
	for (size_t i = 0; i < pages; i++) {
		uint64_t v[4] = {a + i * PS, ~(a + i * PS), i, 0x5eed};
		cr_assert_eq(smmu_write(f->cpu, a + i * PS + 64 * (i % 8), v, sizeof(v)), 0);
	}
	if (prot != RW)
		cr_assert_eq(smmu_mprotect(f->mm, a, pages * PS, prot), 0);
}

/* Six small regions of alternating protection far from the action, so the
 * region array (capacity 8) is at 7 and a split needs to grow it. */
static void six_more_regions(struct fi *f)
{
	smmu_addr_t out;
	for (int i = 0; i < 6; i++)
		cr_assert_eq(smmu_mmap(f->mm, ((smmu_addr_t)8 << 30) + (smmu_addr_t)i * 4 * PS, 2 * PS,
				       i % 2 ? SMMU_PROT_READ : SMMU_PROT_NONE, SMMU_MAP_FIXED_NOREPLACE, &out),
			     0);
}

/* --------------------------------------------------------- the driver */

static void walk(const struct fi_op *op)
{
	long n, sites = 0, errors = 0, absorbed = 0;
	for (n = 0; n < 100000; n++) {
		struct fi *f = calloc(1, sizeof(*f));
		cr_assert(f);
		long live0 = smmu__alloc_live();
		op->setup(f);
		snapshot(f);
		f->live_before_op = smmu__alloc_live();

		smmu__alloc_fail_after(n);
		int err = op->run(f);
		bool fired = smmu__alloc_failure_fired();
		smmu__alloc_fail_after(-1);

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
	cr_assert_lt(n, 100000);
	cr_log_info("fault injection: %-28s %ld allocation sites (%ld -> -ENOMEM, %ld absorbed)", op->name, sites,
		    errors, absorbed);
	cr_assert_gt(sites, 0, "%s allocates nothing?", op->name);
}

/* ------------------------------------------------------- pool create */

static void pool_setup(struct fi *f)
{
	(void)f;
}

static int pool_run(struct fi *f)
{
	struct smmu_pool_config cfg = {.size = 100 * PS};
	f->pool2 = (struct smmu_pool *)(uintptr_t)0x1;
	int err = smmu_pool_create(&cfg, &f->pool2);
	if (err) {
		cr_assert_eq(f->pool2, (struct smmu_pool *)(uintptr_t)0x1, "*out written on error");
		f->pool2 = NULL;
	}
	return err;
}

static void pool_done(struct fi *f)
{
	cr_assert_eq(smmu_pool_frames(f->pool2), 100);
	cr_assert_eq(smmu_pool_free_frames(f->pool2), 100);
}

Test(fault_injection, pool_create)
{
	walk(&(struct fi_op){"pool create", pool_setup, pool_run, pool_done, env_down, false, true});
}

/* --------------------------------------------------------- mm create */

static void mm_setup(struct fi *f)
{
	struct smmu_pool_config cfg = {.size = 16 * PS};
	cr_assert_eq(smmu_pool_create(&cfg, &f->pool), 0);
	f->nframes = 16;
}

static int mm_run(struct fi *f)
{
	int err = smmu_mm_create(f->pool, &f->mm2);
	if (err) {
		cr_assert_eq(f->pool->nr_mm, 0, "a failed create left the pool attached");
		f->mm2 = NULL;
	}
	return err;
}

static void mm_done(struct fi *f)
{
	smmu_addr_t a;
	cr_assert_eq(f->pool->nr_mm, 1);
	cr_assert_eq(smmu_pool_destroy(f->pool), -EBUSY);
	cr_assert_eq(smmu_mmap(f->mm2, 0, PS, RW, 0, &a), 0);
	cr_assert_eq(smmu_munmap(f->mm2, a, PS), 0);
}

Test(fault_injection, mm_create)
{
	walk(&(struct fi_op){"mm create", mm_setup, mm_run, mm_done, env_down, false, true});
}

/* ------------------------------------------------------ cpu register */

static void cpu_setup(struct fi *f)
{
	env(f, 16, false);
}

static int cpu_run(struct fi *f)
{
	int err = smmu_cpu_register(f->mm, &f->cpu2);
	if (err) {
		cr_assert_null(smmu_cpu_self());
		cr_assert_eq(f->mm->nr_cpus, 0);
		cr_assert_null(f->pool->caches);
		f->cpu2 = NULL;
	}
	return err;
}

static void cpu_done(struct fi *f)
{
	smmu_addr_t a;
	cr_assert_eq(smmu_cpu_self(), f->cpu2);
	cr_assert_eq(f->mm->nr_cpus, 1);
	cr_assert_eq(smmu_mmap(f->mm, 0, PS, RW, 0, &a), 0);
	smmu_store64(f->cpu2, a, 99);
	cr_assert_eq(smmu_load64(f->cpu2, a), 99);
}

Test(fault_injection, cpu_register)
{
	walk(&(struct fi_op){"cpu register", cpu_setup, cpu_run, cpu_done, env_down, false, true});
}

/* ----------------------------------------------------------- mmap */

static void mmap_fresh_setup(struct fi *f)
{
	env(f, 64, true);
}

static int mmap_plain_run(struct fi *f)
{
	return smmu_mmap(f->mm, 0, 8 * PS, RW, 0, &f->out);
}

static void mmap_plain_done(struct fi *f)
{
	struct smmu_region r;
	cr_assert_eq(smmu_mm_find(f->mm, f->out, &r), 0);
	cr_assert_eq(r.start, f->out);
	cr_assert_eq(r.end, f->out + 8 * PS);
	cr_assert_eq(r.prot, RW);
	smmu_store32(f->cpu, f->out + 7 * PS, 5);
	cr_assert_eq(smmu_load32(f->cpu, f->out + 7 * PS), 5);
}

Test(fault_injection, mmap_plain_first)
{
	walk(&(struct fi_op){"mmap (first region)", mmap_fresh_setup, mmap_plain_run, mmap_plain_done, env_down, false,
			     false});
}

static void mmap_grow_setup(struct fi *f)
{
	env(f, 64, true);
	f->x = (smmu_addr_t)1 << 32;
	mapped_and_written(f, f->x, 4, RW);
	six_more_regions(f);
	f->snap_lo = f->x;
	f->snap_pages = 4;
}

static void mmap_grow_done(struct fi *f)
{
	struct smmu_region want[MAX_REGIONS];
	size_t n = regions_after(f, f->out, f->out + 8 * PS, RW, want);
	expect_regions(f, want, n);
	expect_pages_outside(f, f->out, f->out + 8 * PS);
	mmap_plain_done(f);
}

Test(fault_injection, mmap_plain_growing_region_array)
{
	walk(&(struct fi_op){"mmap (region array grows)", mmap_grow_setup, mmap_plain_run, mmap_grow_done, env_down,
			     false, false});
}

/* FIXED over the middle 80 pages of a populated, written 100-page map:
 * the region array grows (split) and the gather needs a heap batch. */
static void fixed_setup(struct fi *f)
{
	env(f, 256, true);
	f->x = (smmu_addr_t)1 << 32;
	mapped_and_written(f, f->x, 100, RW);
	six_more_regions(f);
	f->snap_lo = f->x;
	f->snap_pages = 100;
}

static int fixed_run(struct fi *f)
{
	return smmu_mmap(f->mm, f->x + 10 * PS, 80 * PS, SMMU_PROT_READ, SMMU_MAP_FIXED, &f->out);
}

static void fixed_done(struct fi *f)
{
	smmu_addr_t lo = f->x + 10 * PS, hi = f->x + 90 * PS;
	cr_assert_eq(f->out, lo);
	struct smmu_region want[MAX_REGIONS];
	size_t n = regions_after(f, lo, hi, SMMU_PROT_READ, want);
	expect_regions(f, want, n);
	expect_pages_outside(f, lo, hi);
	for (smmu_addr_t a = lo; a < hi; a += PS)
		cr_assert_eq(pte_at(f->mm, a), 0, "the old page at %#llx is still mapped", (unsigned long long)a);
	cr_assert_eq(smmu_pool_free_frames(f->pool), f->free_frames + 80);
	/* The new mapping is demand-zero and read-only. */
	uint64_t v = 1;
	cr_assert_eq(smmu_try_load64(f->cpu, lo + 5 * PS + 64 * 5, &v), 0);
	cr_assert_eq(v, 0, "old contents visible through the new mapping");
	cr_assert_eq(smmu_try_store64(f->cpu, lo, 1), -EACCES);
}

Test(fault_injection, mmap_fixed_over_existing)
{
	walk(&(struct fi_op){"mmap FIXED over existing", fixed_setup, fixed_run, fixed_done, env_down, true, false});
}

/* POPULATE of 600 pages right after a written 4-page map (so the two
 * merge), across a 1 GiB boundary: new level-1 and leaf tables. */
static void populate_setup(struct fi *f)
{
	env(f, 700, true);
	f->x = ((smmu_addr_t)1 << 30) - 104 * PS;
	mapped_and_written(f, f->x, 4, RW);
	f->snap_lo = f->x;
	f->snap_pages = 604;
}

static int populate_run(struct fi *f)
{
	return smmu_mmap(f->mm, f->x + 4 * PS, 600 * PS, RW, SMMU_MAP_POPULATE, &f->out);
}

static void populate_done(struct fi *f)
{
	cr_assert_eq(f->out, f->x + 4 * PS, "the free hint is used");
	struct smmu_region want = {f->x, f->x + 604 * PS, RW, 0};
	expect_regions(f, &want, 1);
	expect_pages_outside(f, f->out, f->out + 600 * PS);
	for (size_t i = 0; i < 600; i++) {
		smmu_pte_t p = pte_at(f->mm, f->out + i * PS);
		cr_assert(p & SMMU_PTE_PRESENT, "page %zu not populated", i);
		cr_assert_eq(page_hash(smmu__frame_host(f->pool, smmu__pte_frame(p)), PS), zero_hash(),
			     "populated page %zu not zeroed", i);
	}
	cr_assert_eq(smmu_pool_free_frames(f->pool), f->free_frames - 600);
}

Test(fault_injection, mmap_populate)
{
	walk(&(struct fi_op){"mmap POPULATE", populate_setup, populate_run, populate_done, env_down, false, true});
}

/* ------------------------------------------------------------ munmap */

static void split_setup(struct fi *f)
{
	env(f, 256, true);
	f->x = (smmu_addr_t)1 << 32;
	mapped_and_written(f, f->x, 100, RW);
	six_more_regions(f);
	f->snap_lo = f->x;
	f->snap_pages = 100;
}

static int munmap_run(struct fi *f)
{
	return smmu_munmap(f->mm, f->x + 10 * PS, 80 * PS);
}

static void munmap_done(struct fi *f)
{
	smmu_addr_t lo = f->x + 10 * PS, hi = f->x + 90 * PS;
	struct smmu_region want[MAX_REGIONS];
	size_t n = regions_after(f, lo, hi, -1, want);
	expect_regions(f, want, n);
	expect_pages_outside(f, lo, hi);
	for (smmu_addr_t a = lo; a < hi; a += PS)
		cr_assert_eq(pte_at(f->mm, a), 0);
	cr_assert_eq(smmu_pool_free_frames(f->pool), f->free_frames + 80);
	uint64_t v;
	cr_assert_eq(smmu_try_load64(f->cpu, lo, &v), -EFAULT);
	cr_assert_eq(smmu_try_load64(f->cpu, f->x, &v), 0);
	cr_assert_eq(v, f->x);
}

Test(fault_injection, munmap_split)
{
	walk(&(struct fi_op){"munmap with split", split_setup, munmap_run, munmap_done, env_down, true, false});
}

/* ---------------------------------------------------------- mprotect */

static int mprotect_run(struct fi *f)
{
	return smmu_mprotect(f->mm, f->x + 10 * PS, 80 * PS, SMMU_PROT_READ);
}

static void mprotect_done(struct fi *f)
{
	smmu_addr_t lo = f->x + 10 * PS, hi = f->x + 90 * PS;
	struct smmu_region want[MAX_REGIONS];
	size_t n = regions_after(f, lo, hi, SMMU_PROT_READ, want);
	expect_regions(f, want, n);
	expect_pages_outside(f, lo, hi);
	static struct page_snap now[MAX_SNAP];
	snap_pages(f, f->snap_lo, f->snap_pages, now);
	for (size_t i = 10; i < 90; i++) {
		cr_assert_eq(now[i].pte & ~(smmu_pte_t)SMMU_PTE_WRITE, f->pages[i].pte & ~(smmu_pte_t)SMMU_PTE_WRITE);
		cr_assert(!(now[i].pte & SMMU_PTE_WRITE));
		cr_assert(now[i].pte & SMMU_PTE_PRESENT);
		cr_assert_eq(now[i].hash, f->pages[i].hash);
	}
	cr_assert_eq(smmu_pool_free_frames(f->pool), f->free_frames);
	cr_assert_eq(smmu_try_store64(f->cpu, lo, 1), -EACCES);
	cr_assert_eq(smmu_try_store64(f->cpu, f->x, 1), 0);
}

Test(fault_injection, mprotect_split)
{
	walk(&(struct fi_op){"mprotect with split", split_setup, mprotect_run, mprotect_done, env_down, true, false});
}

/* ------------------------------------------------- first-touch store */

static void touch_setup(struct fi *f)
{
	env(f, 16, true);
	cr_assert_eq(smmu_mmap(f->mm, (smmu_addr_t)3 << 39, 2 * PS, RW, SMMU_MAP_FIXED, &f->x), 0);
	f->snap_lo = f->x;
	f->snap_pages = 2;
}

static int touch_run(struct fi *f)
{
	int err = smmu_try_store64(f->cpu, f->x + 8, 0xfeedull);
	if (err)
		cr_assert_neq(smmu__tlb_entry(f->cpu, f->x)->read_tag, f->x, "a failed fault filled the TLB");
	return err;
}

static void touch_done(struct fi *f)
{
	uint64_t v = 0;
	cr_assert_eq(smmu_try_load64(f->cpu, f->x + 8, &v), 0);
	cr_assert_eq(v, 0xfeedull);
	cr_assert_eq(smmu_pool_free_frames(f->pool), f->free_frames - 1);
	expect_regions(f, f->regions, f->nregions);
}

Test(fault_injection, first_touch_store)
{
	walk(&(struct fi_op){"first-touch store", touch_setup, touch_run, touch_done, env_down, false, false});
}

/* A trapping store: the handler sees -ENOMEM, returns, and the retry
 * succeeds (injection fires once). */
static int trap_calls, trap_err;

static void record_trap(struct smmu_cpu *cpu, const struct smmu_fault *fault, void *arg)
{
	(void)cpu;
	(void)arg;
	trap_calls++;
	trap_err = fault->error;
}

Test(fault_injection, trapping_store_retries_after_enomem)
{
	long live0 = smmu__alloc_live();
	for (long n = 0; n < 3; n++) {
		struct fi *f = calloc(1, sizeof(*f));
		touch_setup(f);
		cr_assert_eq(smmu_cpu_set_trap_handler(f->cpu, record_trap, NULL), 0);
		trap_calls = 0;
		trap_err = 0;
		smmu__alloc_fail_after(n);
		smmu_store64(f->cpu, f->x, 77);
		smmu__alloc_fail_after(-1);
		cr_assert_eq(trap_calls, 1, "n=%ld", n);
		cr_assert_eq(trap_err, -ENOMEM);
		cr_assert_eq(smmu_load64(f->cpu, f->x), 77);
		env_down(f);
		free(f);
		cr_assert_eq(smmu__alloc_live(), live0);
	}
}

/* ------------------------------------------------ bulk write, fresh map */

static void bulk_setup(struct fi *f)
{
	env(f, 16, true);
	/* Three pages across a 2 MiB boundary: two leaf tables. */
	cr_assert_eq(smmu_mmap(f->mm, ((smmu_addr_t)5 << 30) - PS, 3 * PS, RW, SMMU_MAP_FIXED, &f->x), 0);
	f->snap_lo = f->x;
	f->snap_pages = 3;
}

static int bulk_run(struct fi *f)
{
	static unsigned char buf[3 * PS - 100];
	memset(buf, 0xc3, sizeof(buf));
	int err = smmu_write(f->cpu, f->x + 50, buf, sizeof(buf));
	if (err) {
		/* Nothing was copied, though earlier pages may have been
		 * demand-faulted in (as zero pages). */
		for (size_t i = 0; i < 3; i++) {
			smmu_pte_t p = pte_at(f->mm, f->x + i * PS);
			if (p)
				cr_assert_eq(page_hash(smmu__frame_host(f->pool, smmu__pte_frame(p)), PS), zero_hash(),
					     "bulk write copied a prefix before failing");
		}
		/* So that the common unchanged-state check applies: drop them. */
		smmu_addr_t out;
		cr_assert_eq(smmu_mmap(f->mm, f->x, 3 * PS, RW, SMMU_MAP_FIXED, &out), 0);
	}
	return err;
}

static void bulk_done(struct fi *f)
{
	unsigned char back[3 * PS];
	cr_assert_eq(smmu_read(f->cpu, f->x, back, sizeof(back)), 0);
	for (size_t i = 0; i < sizeof(back); i++)
		cr_assert_eq(back[i], i >= 50 && i < 50 + 3 * PS - 100 ? 0xc3 : 0, "byte %zu", i);
}

Test(fault_injection, bulk_write_first_touch)
{
	walk(&(struct fi_op){"bulk write (first touch)", bulk_setup, bulk_run, bulk_done, env_down, false, false});
}

/* ----------------------------------------------- TLB grow on a miss */

static void grow_setup(struct fi *f)
{
	env(f, 16, false);
	struct smmu_cpu_config cfg = {.tlb_entries = 16, .tlb_max_entries = 64};
	cr_assert_eq(smmu_cpu_register_ex(f->mm, &cfg, &f->cpu), 0);
	cr_assert_eq(smmu_mmap(f->mm, 0, PS, RW, SMMU_MAP_POPULATE, &f->x), 0);
	struct smmu__cpu *c = smmu__cpu_of(f->cpu);
	while (c->tlb.misses + 1 < 2 * c->tlb.entries)
		smmu__tlb_miss(c);
	f->snap_lo = f->x;
	f->snap_pages = 1;
}

static int grow_run(struct fi *f)
{
	uint64_t v;
	return smmu_try_load64(f->cpu, f->x, &v);
}

static void grow_done(struct fi *f)
{
	struct smmu__cpu *c = smmu__cpu_of(f->cpu);
	cr_assert(c->tlb.entries == 16 || c->tlb.entries == 32);
	cr_assert_eq(smmu__tlb_entry(f->cpu, f->x)->read_tag, f->x, "filled after the (attempted) resize");
	smmu_store8(f->cpu, f->x, 1);
	cr_assert_eq(smmu_load8(f->cpu, f->x), 1);
}

Test(fault_injection, tlb_grow_on_miss)
{
	walk(&(struct fi_op){"access with TLB grow", grow_setup, grow_run, grow_done, env_down, true, true});
}

/* ---------------------------------------------------------- mm destroy */

static void destroy_setup(struct fi *f)
{
	env(f, 300, true);
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(f->mm, 0, 250 * PS, RW, SMMU_MAP_POPULATE, &a), 0);
	cr_assert_eq(smmu_mmap(f->mm, (smmu_addr_t)7 << 39, 20 * PS, RW, SMMU_MAP_POPULATE, &a), 0);
	cr_assert_eq(smmu_cpu_unregister(f->cpu), 0);
	f->cpu = NULL;
}

static int destroy_run(struct fi *f)
{
	int err = smmu_mm_destroy(f->mm);
	if (!err)
		f->destroyed = true;
	return err;
}

static void destroy_done(struct fi *f)
{
	cr_assert(f->destroyed);
	cr_assert_eq(smmu_pool_free_frames(f->pool), f->nframes);
	cr_assert_eq(f->pool->nr_mm, 0);
}

Test(fault_injection, mm_destroy)
{
	walk(&(struct fi_op){"mm destroy", destroy_setup, destroy_run, destroy_done, env_down, true, false});
}

/* -------------------------------------------- pool exhaustion (no seam) */

Test(fault_injection, populate_pool_exhaustion_unchanged)
{
	long live0 = smmu__alloc_live();
	struct fi *f = calloc(1, sizeof(*f));
	env(f, 40, true);
	f->x = (smmu_addr_t)1 << 32;
	mapped_and_written(f, f->x, 4, RW);
	f->snap_lo = f->x;
	f->snap_pages = 64;
	snapshot(f);
	long live = smmu__alloc_live();
	/* 60 pages but only 36 frames left. */
	cr_assert_eq(smmu_mmap(f->mm, f->x + 4 * PS, 60 * PS, RW, SMMU_MAP_POPULATE, &f->out), -ENOMEM);
	check_unchanged(f, -1);
	cr_assert_eq(smmu__alloc_live(), live, "the rollback freed everything");
	/* First-touch with an empty pool: -ENOMEM, nothing changed. */
	smmu_addr_t b;
	cr_assert_eq(smmu_mmap(f->mm, 0, 40 * PS, RW, SMMU_MAP_POPULATE, &b), -ENOMEM);
	cr_assert_eq(smmu_mmap(f->mm, 0, 36 * PS, RW, SMMU_MAP_POPULATE, &b), 0);
	cr_assert_eq(smmu_pool_free_frames(f->pool), 0);
	cr_assert_eq(smmu_try_store8(f->cpu, f->x + 4 * PS, 1), -EFAULT);
	cr_assert_eq(smmu_mmap(f->mm, f->x + 4 * PS, PS, RW, SMMU_MAP_FIXED, &f->out), 0);
	cr_assert_eq(smmu_try_store8(f->cpu, f->x + 4 * PS, 1), -ENOMEM);
	cr_assert_eq(pte_at(f->mm, f->x + 4 * PS), 0);
	cr_assert_eq(smmu_munmap(f->mm, b, 36 * PS), 0);
	cr_assert_eq(smmu_try_store8(f->cpu, f->x + 4 * PS, 1), 0);
	env_down(f);
	free(f);
	cr_assert_eq(smmu__alloc_live(), live0);
}
