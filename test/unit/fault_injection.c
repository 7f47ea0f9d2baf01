/* SPDX-License-Identifier: MIT */
/*
 * Fault injection, part 1: walk every allocation site of pool and mm
 * creation, CPU registration (plain and with address-space ids), mmap,
 * munmap, mprotect, first-touch faults, bulk writes, TLB growth, mm
 * teardown, smmu_cpu_switch_mm and smmu_thread_create; and every frame
 * allocation (smmu__pool_fail_after) of mmap POPULATE, demand-zero loads
 * and stores, trapping stores and bulk writes.  The fixture and the walk
 * are in fault_injection.h (its comment says what each iteration checks);
 * mremap, notifiers, smmu_mm_translate, smmu_mm_dup and the
 * shootdown-signal stalls are in fault_injection_more.c.
 */
#define _GNU_SOURCE
#include "fault_injection.h"

#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

TestSuite(fault_injection, .timeout = 120);

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
	walk(&(struct fi_op){.name = "pool create",
			     .setup = pool_setup,
			     .run = pool_run,
			     .done = pool_done,
			     .teardown = env_down,
			     .strict_live = true});
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
	walk(&(struct fi_op){.name = "mm create",
			     .setup = mm_setup,
			     .run = mm_run,
			     .done = mm_done,
			     .teardown = env_down,
			     .strict_live = true});
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
	walk(&(struct fi_op){.name = "cpu register",
			     .setup = cpu_setup,
			     .run = cpu_run,
			     .done = cpu_done,
			     .teardown = env_down,
			     .strict_live = true});
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
	walk(&(struct fi_op){.name = "mmap (first region)",
			     .setup = mmap_fresh_setup,
			     .run = mmap_plain_run,
			     .done = mmap_plain_done,
			     .teardown = env_down});
}

static void mmap_grow_setup(struct fi *f)
{
	env(f, 64, true);
	f->x = (smmu_addr_t)1 << 32;
	mapped_and_written(f, f->x, 4, RW);
	six_more_regions(f);
	watch(f, f->x, 4);
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
	walk(&(struct fi_op){.name = "mmap (region array grows)",
			     .setup = mmap_grow_setup,
			     .run = mmap_plain_run,
			     .done = mmap_grow_done,
			     .teardown = env_down});
}

/* FIXED over the middle 80 pages of a populated, written 100-page map:
 * the region array grows (split) and the gather needs a heap batch. */
static void fixed_setup(struct fi *f)
{
	env(f, 256, true);
	f->x = (smmu_addr_t)1 << 32;
	mapped_and_written(f, f->x, 100, RW);
	six_more_regions(f);
	watch(f, f->x, 100);
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
	walk(&(struct fi_op){.name = "mmap FIXED over existing",
			     .setup = fixed_setup,
			     .run = fixed_run,
			     .done = fixed_done,
			     .teardown = env_down,
			     .absorbable = true});
}

/* POPULATE of 600 pages right after a written 4-page map (so the two
 * merge), across a 1 GiB boundary: new level-1 and leaf tables. */
static void populate_setup(struct fi *f)
{
	env(f, 700, true);
	f->x = ((smmu_addr_t)1 << 30) - 104 * PS;
	mapped_and_written(f, f->x, 4, RW);
	watch(f, f->x, 604);
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
	walk(&(struct fi_op){.name = "mmap POPULATE",
			     .setup = populate_setup,
			     .run = populate_run,
			     .done = populate_done,
			     .teardown = env_down,
			     .strict_live = true});
}

/* ------------------------------------------------------------ munmap */

static void split_setup(struct fi *f)
{
	env(f, 256, true);
	f->x = (smmu_addr_t)1 << 32;
	mapped_and_written(f, f->x, 100, RW);
	six_more_regions(f);
	watch(f, f->x, 100);
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
	walk(&(struct fi_op){.name = "munmap with split",
			     .setup = split_setup,
			     .run = munmap_run,
			     .done = munmap_done,
			     .teardown = env_down,
			     .absorbable = true});
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
	snap_pages(f, now);
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
	walk(&(struct fi_op){.name = "mprotect with split",
			     .setup = split_setup,
			     .run = mprotect_run,
			     .done = mprotect_done,
			     .teardown = env_down,
			     .absorbable = true});
}

/* ------------------------------------------------- first-touch store */

static void touch_setup(struct fi *f)
{
	env(f, 16, true);
	cr_assert_eq(smmu_mmap(f->mm, (smmu_addr_t)3 << 39, 2 * PS, RW, SMMU_MAP_FIXED, &f->x), 0);
	watch(f, f->x, 2);
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
	walk(&(struct fi_op){.name = "first-touch store",
			     .setup = touch_setup,
			     .run = touch_run,
			     .done = touch_done,
			     .teardown = env_down});
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
	watch(f, f->x, 3);
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
	walk(&(struct fi_op){.name = "bulk write (first touch)",
			     .setup = bulk_setup,
			     .run = bulk_run,
			     .done = bulk_done,
			     .teardown = env_down});
}

/* ----------------------------------------------- TLB grow on a miss */

static void grow_setup(struct fi *f)
{
	env(f, 16, false);
	struct smmu_cpu_config cfg = {.tlb_entries = 16, .tlb_max_entries = 64};
	cr_assert_eq(smmu_cpu_register_ex(f->mm, &cfg, &f->cpu), 0);
	cr_assert_eq(smmu_mmap(f->mm, 0, PS, RW, SMMU_MAP_POPULATE, &f->x), 0);
	struct smmu__cpu *c = smmu__cpu_of(f->cpu);
	while (c->tlb->misses + 1 < 2 * c->tlb->entries)
		smmu__tlb_miss(c);
	watch(f, f->x, 1);
}

static int grow_run(struct fi *f)
{
	uint64_t v;
	return smmu_try_load64(f->cpu, f->x, &v);
}

static void grow_done(struct fi *f)
{
	struct smmu__cpu *c = smmu__cpu_of(f->cpu);
	cr_assert(c->tlb->entries == 16 || c->tlb->entries == 32);
	cr_assert_eq(smmu__tlb_entry(f->cpu, f->x)->read_tag, f->x, "filled after the (attempted) resize");
	smmu_store8(f->cpu, f->x, 1);
	cr_assert_eq(smmu_load8(f->cpu, f->x), 1);
}

Test(fault_injection, tlb_grow_on_miss)
{
	walk(&(struct fi_op){.name = "access with TLB grow",
			     .setup = grow_setup,
			     .run = grow_run,
			     .done = grow_done,
			     .teardown = env_down,
			     .absorbable = true,
			     .strict_live = true});
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
	walk(&(struct fi_op){.name = "mm destroy",
			     .setup = destroy_setup,
			     .run = destroy_run,
			     .done = destroy_done,
			     .teardown = env_down,
			     .absorbable = true});
}

/* -------------------------------------------- pool exhaustion (no seam) */

Test(fault_injection, populate_pool_exhaustion_unchanged)
{
	long live0 = smmu__alloc_live();
	struct fi *f = calloc(1, sizeof(*f));
	env(f, 40, true);
	f->x = (smmu_addr_t)1 << 32;
	mapped_and_written(f, f->x, 4, RW);
	watch(f, f->x, 64);
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

/* ------------------------------------- cpu register with a config */

/* A small TLB that may grow, and four address-space ids: the id array and
 * the first TLB are allocated at registration (the other ids' TLBs on
 * first use, by smmu_cpu_switch_mm). */
static int cpu_ex_run(struct fi *f)
{
	struct smmu_cpu_config cfg = {.tlb_entries = 16, .tlb_max_entries = 64, .asids = 4};
	f->cpu2 = (struct smmu_cpu *)(uintptr_t)0x1;
	int err = smmu_cpu_register_ex(f->mm, &cfg, &f->cpu2);
	if (err) {
		cr_assert_eq(f->cpu2, (struct smmu_cpu *)(uintptr_t)0x1, "*out written on error");
		cr_assert_null(smmu_cpu_self());
		cr_assert_eq(f->mm->nr_cpus, 0);
		cr_assert_null(f->mm->cpus);
		cr_assert_null(f->pool->caches);
		f->cpu2 = NULL;
	}
	return err;
}

static void cpu_ex_done(struct fi *f)
{
	struct smmu__cpu *c = smmu__cpu_of(f->cpu2);
	cr_assert_eq(c->nasids, 4);
	cr_assert_eq(c->tlb->entries, 16);
	cpu_done(f);
}

/* After a failed registration the thread can still register. */
static void cpu_ex_failed(struct fi *f)
{
	cr_assert_eq(smmu_cpu_register(f->mm, &f->cpu2), 0);
	cpu_done(f);
}

Test(fault_injection, cpu_register_ex_asids)
{
	walk(&(struct fi_op){.name = "cpu register_ex (4 asids)",
			     .setup = cpu_setup,
			     .run = cpu_ex_run,
			     .done = cpu_ex_done,
			     .teardown = env_down,
			     .strict_live = true,
			     .failed = cpu_ex_failed});
}

/* ------------------------------------------------------ switch_mm */

/* A CPU of mm with a written page, and a second mm (on the same pool, or
 * on a pool of its own) with a written page at the same address: the
 * first switch to it allocates its TLB. */
static void switch_setup_common(struct fi *f, bool own_pool, enum smmu_shootdown_mode mode)
{
	env_mode(f, 32, true, mode);
	f->x = (smmu_addr_t)1 << 32;
	mapped_and_written(f, f->x, 2, RW);
	watch(f, f->x, 2);
	struct smmu_pool *p2 = f->pool;
	if (own_pool) {
		struct smmu_pool_config cfg = {.size = 16 * PS};
		cr_assert_eq(smmu_pool_create(&cfg, &f->pool2), 0);
		p2 = f->pool2;
	}
	struct smmu_mm_config mcfg = {.mode = mode};
	cr_assert_eq(smmu_mm_create_ex(p2, &mcfg, &f->mm2), 0);
	smmu_addr_t out;
	cr_assert_eq(smmu_mmap(f->mm2, f->x, PS, RW, SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &out), 0);
	void *host;
	cr_assert_eq(smmu_mm_translate(f->mm2, f->x, RW, &host), 0);
	*(uint64_t *)host = 0x2222;
	/* Fill the TLB of mm's id, to see it kept across the switches. */
	cr_assert_eq(smmu_load64(f->cpu, f->x), pattern_value(f->x, 0));
}

static void switch_setup(struct fi *f)
{
	switch_setup_common(f, false, SMMU_SHOOTDOWN_SIGNAL);
}

static void switch_setup_pool2(struct fi *f)
{
	switch_setup_common(f, true, SMMU_SHOOTDOWN_SIGNAL);
}

static void switch_setup_rcu(struct fi *f)
{
	switch_setup_common(f, false, SMMU_SHOOTDOWN_RCU);
}

static int switch_run(struct fi *f)
{
	int err = smmu_cpu_switch_mm(f->cpu, f->mm2);
	if (err) {
		/* The CPU stays in its old mm, unchanged. */
		cr_assert_eq(smmu_cpu_mm(f->cpu), f->mm);
		cr_assert_eq(f->mm->nr_cpus, 1);
		cr_assert_eq(f->mm->cpus, smmu__cpu_of(f->cpu));
		cr_assert_eq(f->mm2->nr_cpus, 0);
		cr_assert_eq(smmu__cpu_of(f->cpu)->pcache.pool, f->pool);
		cr_assert_eq(smmu__tlb_entry(f->cpu, f->x)->read_tag, f->x, "the old mm's TLB was flushed");
	}
	return err;
}

static void switch_done(struct fi *f)
{
	cr_assert_eq(smmu_cpu_mm(f->cpu), f->mm2);
	cr_assert_eq(f->mm->nr_cpus, 0);
	cr_assert_eq(f->mm2->nr_cpus, 1);
	cr_assert_eq(smmu_load64(f->cpu, f->x), 0x2222);
	smmu_store64(f->cpu, f->x + 8, 0x3333);
	cr_assert_eq(smmu_load64(f->cpu, f->x + 8), 0x3333);
	/* Back, without allocating: mm's slot has its table. */
	smmu__alloc_fail_after(0);
	cr_assert_eq(smmu_cpu_switch_mm(f->cpu, f->mm), 0);
	cr_assert(!smmu__alloc_failure_fired(), "switching back allocated");
	smmu__alloc_fail_after(-1);
	cr_assert_eq(smmu_cpu_mm(f->cpu), f->mm);
	cr_assert_eq(smmu__tlb_entry(f->cpu, f->x)->read_tag, f->x, "mm's entries were not kept");
	cr_assert_eq(smmu_load64(f->cpu, f->x), pattern_value(f->x, 0));
}

/* The CPU still works in its old mm, and a later switch succeeds. */
static void switch_failed(struct fi *f)
{
	cr_assert_eq(smmu_load64(f->cpu, f->x + PS + pattern_offset(1)), pattern_value(f->x, 1));
	smmu_store64(f->cpu, f->x + 16, 0x4444);
	cr_assert_eq(smmu_load64(f->cpu, f->x + 16), 0x4444);
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(f->mm, 0, PS, RW, 0, &a), 0);
	smmu_store64(f->cpu, a, 5); /* demand-zero from the CPU's cache of mm's pool */
	cr_assert_eq(smmu_cpu_switch_mm(f->cpu, f->mm2), 0);
	switch_done(f);
}

Test(fault_injection, cpu_switch_mm_first_switch)
{
	walk(&(struct fi_op){.name = "switch_mm (new asid)",
			     .setup = switch_setup,
			     .run = switch_run,
			     .done = switch_done,
			     .teardown = env_down,
			     .strict_live = true,
			     .failed = switch_failed});
}

Test(fault_injection, cpu_switch_mm_other_pool)
{
	walk(&(struct fi_op){.name = "switch_mm (new asid, other pool)",
			     .setup = switch_setup_pool2,
			     .run = switch_run,
			     .done = switch_done,
			     .teardown = env_down,
			     .strict_live = true,
			     .failed = switch_failed});
}

Test(fault_injection, cpu_switch_mm_rcu)
{
	walk(&(struct fi_op){.name = "switch_mm (new asid, RCU mode)",
			     .setup = switch_setup_rcu,
			     .run = switch_run,
			     .done = switch_done,
			     .teardown = env_down,
			     .strict_live = true,
			     .failed = switch_failed});
}

/* With every id in use, a switch to a third mm recycles the least recently
 * used id and its table: no allocation at all (so nothing to walk). */
Test(fault_injection, cpu_switch_mm_recycled_asid_allocates_nothing)
{
	long live0 = smmu__alloc_live();
	struct fi *f = calloc(1, sizeof(*f));
	env(f, 32, false);
	struct smmu_cpu_config cfg = {.asids = 2};
	cr_assert_eq(smmu_cpu_register_ex(f->mm, &cfg, &f->cpu), 0);
	struct smmu_mm *mm3;
	cr_assert_eq(smmu_mm_create(f->pool, &f->mm2), 0);
	cr_assert_eq(smmu_mm_create(f->pool, &mm3), 0);
	cr_assert_eq(smmu_cpu_switch_mm(f->cpu, f->mm2), 0);
	smmu__alloc_fail_after(0);
	int err = smmu_cpu_switch_mm(f->cpu, mm3);
	bool fired = smmu__alloc_failure_fired();
	smmu__alloc_fail_after(-1);
	cr_assert_eq(err, 0);
	cr_assert(!fired, "recycling an address-space id allocated");
	cr_assert_eq(smmu_cpu_mm(f->cpu), mm3);
	cr_assert_eq(smmu_cpu_unregister(f->cpu), 0);
	f->cpu = NULL;
	cr_assert_eq(smmu_mm_destroy(mm3), 0);
	env_down(f);
	free(f);
	cr_assert_eq(smmu__alloc_live(), live0);
}

/* --------------------------------------------------- thread create */

/* Threads of this process (entries of /proc/self/task). */
static int count_tasks(void)
{
	DIR *d = opendir("/proc/self/task");
	cr_assert(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void *thread_fn(void *arg)
{
	struct fi *f = arg;
	struct smmu_cpu *cpu = smmu_cpu_self();
	atomic_store(&f->thread_ran, cpu ? 1 : -1);
	/* The page is populated and its table exists: no allocation here, so
	 * the walk's failure can only hit the registration. */
	if (cpu && smmu_try_store64(cpu, f->x, 0x7777))
		atomic_store(&f->thread_ran, -2);
	return f;
}

static void thread_setup_mode(struct fi *f, enum smmu_shootdown_mode mode)
{
	env_mode(f, 16, true, mode);
	cr_assert_eq(smmu_mmap(f->mm, (smmu_addr_t)1 << 32, PS, RW, SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &f->x), 0);
	watch(f, f->x, 1);
	f->tasks_before = count_tasks();
}

static void thread_setup(struct fi *f)
{
	thread_setup_mode(f, SMMU_SHOOTDOWN_SIGNAL);
}

/* The creator is an online CPU of an RCU-mode mm: it goes offline while
 * it waits for the new thread's registration, and comes back after. */
static void thread_rcu_setup(struct fi *f)
{
	thread_setup_mode(f, SMMU_SHOOTDOWN_RCU);
}

enum { THREAD_PLAIN, THREAD_EX, THREAD_EX_DETACHED };

static int thread_run(struct fi *f)
{
	if (f->variant == THREAD_PLAIN) {
		int err = smmu_thread_create(&f->thread, NULL, f->mm, thread_fn, f);
		f->thread_live = !err;
		return err;
	}
	struct smmu_cpu_config cfg = {.tlb_entries = 16, .tlb_max_entries = 64, .asids = 2};
	pthread_attr_t attr;
	cr_assert_eq(pthread_attr_init(&attr), 0);
	if (f->variant == THREAD_EX_DETACHED)
		cr_assert_eq(pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED), 0);
	int err = smmu_thread_create_ex(&f->thread, &attr, f->mm, &cfg, thread_fn, f);
	pthread_attr_destroy(&attr);
	f->thread_live = !err && f->variant != THREAD_EX_DETACHED;
	return err;
}

static unsigned nr_cpus_locked(struct smmu_mm *mm)
{
	pthread_mutex_lock(&mm->cpus_lock);
	unsigned n = mm->nr_cpus;
	pthread_mutex_unlock(&mm->cpus_lock);
	return n;
}

/* A detached thread: wait (bounded) until it has run and is gone - not
 * merely until its CPU left the mm's list, which happens before the
 * unregistration stops touching the mm (see
 * mm_destroy_while_a_cpu_is_still_leaving below). */
static void detached_done(struct fi *f)
{
	struct timespec nap = {0, 1000000};
	for (int i = 0;
	     atomic_load(&f->thread_ran) == 0 || nr_cpus_locked(f->mm) != 1 || count_tasks() != f->tasks_before; i++) {
		cr_assert_lt(i, 10000, "the detached thread did not run and leave within 10 s");
		nanosleep(&nap, NULL);
	}
	cr_assert_eq(atomic_load(&f->thread_ran), 1, "fn ran without its CPU, or its store failed (%d)",
		     atomic_load(&f->thread_ran));
	cr_assert_eq(smmu_load64(f->cpu, f->x), 0x7777);
}

static void thread_done(struct fi *f)
{
	if (f->variant == THREAD_EX_DETACHED) {
		detached_done(f);
		return;
	}
	void *ret = NULL;
	cr_assert_eq(smmu_thread_join(f->thread, &ret), 0);
	f->thread_live = false;
	cr_assert_eq(ret, f);
	cr_assert_eq(atomic_load(&f->thread_ran), 1, "fn ran without its CPU, or its store failed (%d)",
		     atomic_load(&f->thread_ran));
	cr_assert_eq(f->mm->nr_cpus, 1, "the thread's CPU outlived it");
	cr_assert_eq(smmu_load64(f->cpu, f->x), 0x7777);
}

/* fn never ran, the thread is gone, and a new one can be made. */
static void thread_failed(struct fi *f)
{
	cr_assert_eq(atomic_load(&f->thread_ran), 0, "fn ran after a failed registration");
	cr_assert_eq(nr_cpus_locked(f->mm), 1, "a CPU of the failed thread is left");
	/* The joined thread's task may linger a moment after the join. */
	struct timespec nap = {0, 1000000};
	for (int i = 0; count_tasks() != f->tasks_before; i++) {
		cr_assert_lt(i, 2000, "a thread is left: %d tasks, were %d", count_tasks(), f->tasks_before);
		nanosleep(&nap, NULL);
	}
	cr_assert_eq(thread_run(f), 0);
	thread_done(f);
}

static void thread_teardown(struct fi *f)
{
	if (f->thread_live)
		cr_assert_eq(smmu_thread_join(f->thread, NULL), 0);
	env_down(f);
}

Test(fault_injection, thread_create)
{
	walk(&(struct fi_op){.name = "thread create",
			     .setup = thread_setup,
			     .run = thread_run,
			     .done = thread_done,
			     .teardown = thread_teardown,
			     .strict_live = true,
			     .failed = thread_failed});
}

static void thread_ex_setup(struct fi *f)
{
	thread_setup(f);
	f->variant = THREAD_EX;
}

static void thread_ex_detached_setup(struct fi *f)
{
	thread_setup(f);
	f->variant = THREAD_EX_DETACHED;
}

Test(fault_injection, thread_create_rcu)
{
	walk(&(struct fi_op){.name = "thread create (RCU mode)",
			     .setup = thread_rcu_setup,
			     .run = thread_run,
			     .done = thread_done,
			     .teardown = thread_teardown,
			     .strict_live = true,
			     .failed = thread_failed});
}

Test(fault_injection, thread_create_ex)
{
	walk(&(struct fi_op){.name = "thread create_ex (2 asids)",
			     .setup = thread_ex_setup,
			     .run = thread_run,
			     .done = thread_done,
			     .teardown = thread_teardown,
			     .strict_live = true,
			     .failed = thread_failed});
}

Test(fault_injection, thread_create_ex_detached)
{
	walk(&(struct fi_op){.name = "thread create_ex (detached)",
			     .setup = thread_ex_detached_setup,
			     .run = thread_run,
			     .done = thread_done,
			     .teardown = thread_teardown,
			     .strict_live = true,
			     .failed = thread_failed});
}

/*
 * A CPU that is unregistering still counts in its mm until it no longer
 * touches it (lib/cpu.c, unregister_locked_out): smmu_mm_destroy says
 * -EBUSY meanwhile.  (It once decremented nr_cpus first, and a destroy
 * in that window freed the mm - and then the pool - under the leaving
 * CPU, which still settled its counters into it and detached its frame
 * cache.)  A detached smmu_thread_create thread makes that easy to hit.
 *
 * The test widens the window deterministically: the thread's fn takes a
 * reference on its own CPU (sd_refs, as an initiator waiting for its
 * acknowledgement holds one), so that after fn returns its unregistration
 * stops in cpu_detach.  Destroying the mm then must say -EBUSY.
 */
static void *leaving_fn(void *arg)
{
	struct fi *f = arg;
	struct smmu__cpu *c = smmu__cpu_self();
	atomic_fetch_add(&c->sd_refs, 1);
	f->host = c;
	atomic_store(&f->thread_ran, 1);
	return NULL;
}

Test(fault_injection, mm_destroy_while_a_cpu_is_still_leaving)
{
	long live0 = smmu__alloc_live();
	struct fi *f = calloc(1, sizeof(*f));
	env(f, 16, false);
	cr_assert_eq(smmu_thread_create(&f->thread, NULL, f->mm, leaving_fn, f), 0);
	struct timespec nap = {0, 1000000};
	for (int i = 0; !atomic_load(&f->thread_ran); i++) {
		cr_assert_lt(i, 10000, "the thread did not run");
		nanosleep(&nap, NULL);
	}
	struct smmu__cpu *c = f->host;
	/* Its unregistration has begun: cpu_detach took it offline first, and
	 * waits for the reference (c stays allocated until then). */
	for (int i = 0; atomic_load(&c->online); i++) {
		cr_assert_lt(i, 10000, "the thread's CPU did not start leaving");
		nanosleep(&nap, NULL);
	}
	int err = smmu_mm_destroy(f->mm);
	cr_assert_eq(err, -EBUSY, "smmu_mm_destroy returned %d while a CPU of the mm was still unregistering", err);
	atomic_fetch_sub(&c->sd_refs, 1);
	cr_assert_eq(smmu_thread_join(f->thread, NULL), 0);
	env_down(f);
	free(f);
	cr_assert_eq(smmu__alloc_live(), live0);
}

/* ------------------------------------- mmap FIXED|POPULATE over a map */

/* FIXED|POPULATE read-only over the middle 4 pages of a written 6-page
 * map: everything is taken before the old mapping goes, so a failure
 * (metadata or frame) leaves the old pages and their contents. */
static void fixpop_setup(struct fi *f)
{
	env(f, 64, true);
	f->x = (smmu_addr_t)1 << 32;
	mapped_and_written(f, f->x, 6, RW);
	six_more_regions(f);
	watch(f, f->x, 6);
}

static int fixpop_run(struct fi *f)
{
	return smmu_mmap(f->mm, f->x + PS, 4 * PS, SMMU_PROT_READ, SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &f->out);
}

static void fixpop_done(struct fi *f)
{
	smmu_addr_t lo = f->x + PS, hi = f->x + 5 * PS;
	cr_assert_eq(f->out, lo);
	struct smmu_region want[MAX_REGIONS];
	size_t n = regions_after(f, lo, hi, SMMU_PROT_READ, want);
	expect_regions(f, want, n);
	expect_pages_outside(f, lo, hi);
	for (smmu_addr_t a = lo; a < hi; a += PS) {
		smmu_pte_t p = pte_at(f->mm, a);
		cr_assert(p & SMMU_PTE_PRESENT, "page %#llx not populated", (unsigned long long)a);
		cr_assert(!(p & SMMU_PTE_WRITE));
		cr_assert_eq(page_hash(smmu__frame_host(f->pool, smmu__pte_frame(p)), PS), zero_hash(),
			     "old contents in the populated page %#llx", (unsigned long long)a);
	}
	/* Four frames freed, four taken. */
	cr_assert_eq(smmu_pool_free_frames(f->pool), f->free_frames);
	uint64_t v = 1;
	cr_assert_eq(smmu_try_load64(f->cpu, lo + 2 * PS + pattern_offset(3), &v), 0);
	cr_assert_eq(v, 0);
	cr_assert_eq(smmu_try_store64(f->cpu, lo, 1), -EACCES);
}

/* The old mapping still works after the failure. */
static void fixpop_failed(struct fi *f)
{
	for (size_t i = 0; i < 6; i++)
		cr_assert_eq(smmu_load64(f->cpu, f->x + i * PS + pattern_offset(i)), pattern_value(f->x, i));
	smmu_store64(f->cpu, f->x + 2 * PS, 9);
}

Test(fault_injection, mmap_fixed_populate_over_existing)
{
	walk(&(struct fi_op){.name = "mmap FIXED|POPULATE over a map",
			     .setup = fixpop_setup,
			     .run = fixpop_run,
			     .done = fixpop_done,
			     .teardown = env_down,
			     .absorbable = true, /* the gather of the replaced pages may fall back */
			     .strict_live = true,
			     .failed = fixpop_failed});
}

/* ====================================================================
 * The frame pool: smmu__pool_fail_after(n) makes the nth frame allocation
 * fail as if the pool were empty.
 * ==================================================================== */

Test(fault_injection, pool_mmap_fixed_populate_over_existing)
{
	long sites = walk(&(struct fi_op){.name = "mmap FIXED|POPULATE over a map",
					  .setup = fixpop_setup,
					  .run = fixpop_run,
					  .done = fixpop_done,
					  .teardown = env_down,
					  .strict_live = true,
					  .seam = FI_POOL,
					  .failed = fixpop_failed});
	cr_assert_eq(sites, 4, "one frame a populated page");
}

/* POPULATE of 8 pages after a written 2-page map (they merge), across a
 * 1 GiB boundary (new tables). */
static void pop8_setup(struct fi *f)
{
	env(f, 32, true);
	f->x = ((smmu_addr_t)2 << 30) - 6 * PS;
	mapped_and_written(f, f->x, 2, RW);
	watch(f, f->x, 10);
}

static int pop8_run(struct fi *f)
{
	return smmu_mmap(f->mm, f->x + 2 * PS, 8 * PS, RW, SMMU_MAP_POPULATE, &f->out);
}

static void pop8_done(struct fi *f)
{
	cr_assert_eq(f->out, f->x + 2 * PS, "the free hint is used");
	struct smmu_region want = {f->x, f->x + 10 * PS, RW, 0};
	expect_regions(f, &want, 1);
	expect_pages_outside(f, f->out, f->out + 8 * PS);
	for (size_t i = 0; i < 8; i++) {
		smmu_pte_t p = pte_at(f->mm, f->out + i * PS);
		cr_assert(p & SMMU_PTE_PRESENT, "page %zu not populated", i);
		cr_assert_eq(page_hash(smmu__frame_host(f->pool, smmu__pte_frame(p)), PS), zero_hash());
	}
	cr_assert_eq(smmu_pool_free_frames(f->pool), f->free_frames - 8);
}

/* Nothing mapped: the range is still free, and the same mmap succeeds. */
static void pop8_failed(struct fi *f)
{
	uint64_t v;
	cr_assert_eq(smmu_try_load64(f->cpu, f->x + 2 * PS, &v), -EFAULT);
	cr_assert_eq(pop8_run(f), 0);
	pop8_done(f);
}

/* The same from a thread that is no CPU: frames come straight from the
 * shared list (no CPU cache), and go back there on failure. */
static void pop8_nocpu_setup(struct fi *f)
{
	pop8_setup(f);
	cr_assert_eq(smmu_cpu_unregister(f->cpu), 0);
	f->cpu = NULL;
}

static void pop8_nocpu_failed(struct fi *f)
{
	cr_assert_eq(pop8_run(f), 0);
	pop8_done(f);
}

Test(fault_injection, pool_mmap_populate_no_cpu)
{
	long sites = walk(&(struct fi_op){.name = "mmap POPULATE (8 pages, no CPU)",
					  .setup = pop8_nocpu_setup,
					  .run = pop8_run,
					  .done = pop8_done,
					  .teardown = env_down,
					  .strict_live = true,
					  .seam = FI_POOL,
					  .failed = pop8_nocpu_failed});
	cr_assert_eq(sites, 8, "one frame a populated page");
}

Test(fault_injection, pool_mmap_populate)
{
	long sites = walk(&(struct fi_op){.name = "mmap POPULATE (8 pages)",
					  .setup = pop8_setup,
					  .run = pop8_run,
					  .done = pop8_done,
					  .teardown = env_down,
					  .strict_live = true,
					  .seam = FI_POOL,
					  .failed = pop8_failed});
	cr_assert_eq(sites, 8, "one frame a populated page");
}

/* Demand-zero store and load (touch_setup: two fresh pages). */
static void touch_failed(struct fi *f)
{
	cr_assert_eq(pte_at(f->mm, f->x), 0, "a page was mapped by the failed fault");
	cr_assert_eq(smmu_try_store64(f->cpu, f->x + 8, 0xfeedull), 0, "the retry failed");
	touch_done(f);
}

Test(fault_injection, pool_demand_zero_store)
{
	long sites = walk(&(struct fi_op){.name = "demand-zero try_store64",
					  .setup = touch_setup,
					  .run = touch_run,
					  .done = touch_done,
					  .teardown = env_down,
					  .seam = FI_POOL,
					  .failed = touch_failed});
	cr_assert_eq(sites, 1);
}

static int touch_load_run(struct fi *f)
{
	uint64_t v = 0x1234;
	int err = smmu_try_load64(f->cpu, f->x + PS + 8, &v);
	if (err) {
		cr_assert_eq(v, 0x1234, "*out written on error");
		cr_assert_neq(smmu__tlb_entry(f->cpu, f->x + PS)->read_tag, f->x + PS, "a failed fault filled the TLB");
	} else {
		cr_assert_eq(v, 0);
	}
	return err;
}

static void touch_load_done(struct fi *f)
{
	smmu_pte_t p = pte_at(f->mm, f->x + PS);
	cr_assert(p & SMMU_PTE_PRESENT);
	cr_assert_eq(page_hash(smmu__frame_host(f->pool, smmu__pte_frame(p)), PS), zero_hash());
	cr_assert_eq(pte_at(f->mm, f->x), 0);
	cr_assert_eq(smmu_pool_free_frames(f->pool), f->free_frames - 1);
	expect_regions(f, f->regions, f->nregions);
}

static void touch_load_failed(struct fi *f)
{
	cr_assert_eq(pte_at(f->mm, f->x + PS), 0, "a page was mapped by the failed fault");
	cr_assert_eq(touch_load_run(f), 0, "the retry failed");
	touch_load_done(f);
}

Test(fault_injection, pool_demand_zero_load)
{
	long sites = walk(&(struct fi_op){.name = "demand-zero try_load64",
					  .setup = touch_setup,
					  .run = touch_load_run,
					  .done = touch_load_done,
					  .teardown = env_down,
					  .seam = FI_POOL,
					  .failed = touch_load_failed});
	cr_assert_eq(sites, 1);
}

/* A trapping store whose frame allocation fails: the trap handler sees
 * -ENOMEM, returns, and the retried access gets its frame. */
Test(fault_injection, pool_trapping_store_retries_after_enomem)
{
	long live0 = smmu__alloc_live();
	struct fi *f = calloc(1, sizeof(*f));
	touch_setup(f);
	cr_assert_eq(smmu_cpu_set_trap_handler(f->cpu, record_trap, NULL), 0);
	trap_calls = 0;
	trap_err = 0;
	smmu__pool_fail_after(0);
	smmu_store64(f->cpu, f->x, 77);
	cr_assert(smmu__pool_failure_fired());
	smmu__pool_fail_after(-1);
	cr_assert_eq(trap_calls, 1);
	cr_assert_eq(trap_err, -ENOMEM);
	cr_assert_eq(smmu_load64(f->cpu, f->x), 77);
	env_down(f);
	free(f);
	cr_assert_eq(smmu__alloc_live(), live0);
}

/* Bulk write over three fresh pages (bulk_setup): a frame a page. */
Test(fault_injection, pool_bulk_write_first_touch)
{
	long sites = walk(&(struct fi_op){.name = "bulk write (first touch)",
					  .setup = bulk_setup,
					  .run = bulk_run,
					  .done = bulk_done,
					  .teardown = env_down,
					  .seam = FI_POOL});
	cr_assert_eq(sites, 3);
}
