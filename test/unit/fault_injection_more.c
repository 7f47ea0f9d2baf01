/* SPDX-License-Identifier: MIT */
/*
 * Fault injection, part 2 (part 1 and the shared walk: fault_injection.c,
 * fault_injection.h):
 *  - every allocation site of smmu_mremap (a run of leaves that splits its
 *    source's regions, a 2 MiB subtree), smmu_mremap_batch (three moves
 *    at once) and smmu_mremap_batch_leave (the same, PROT_NONE left at
 *    the sources), smmu_notifier_register, smmu_interval_notifier_insert and
 *    smmu_mm_translate; failure leaves mappings, contents, protections and
 *    regions as they were;
 *  - every frame allocation of smmu_mm_translate;
 *  - munmap and mprotect(READ) with 17 CPUs to signal, more than the
 *    shootdown's on-stack target list: its heap list is an allocation site
 *    whose failure must be absorbed (wait with the list locked);
 *  - shootdown signals that stall (smmu__signal_stall_after): a remote CPU
 *    loads (and stores) in a loop while munmap, mprotect(READ) and mremap
 *    run, the nth signal's handler sleeping a few ms before it acts; each
 *    call still returns 0 only after the stalled CPU acknowledged, and the
 *    remote CPU never completes an access through the old translation once
 *    the call has returned;
 *  - every allocation site of smmu_mm_dup: failure leaves the parent's
 *    entries writable and unshared, and no child.
 */
#define _GNU_SOURCE
#include "fault_injection.h"

#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "shootdown.h"

TestSuite(fault_injection, .timeout = 120);

#define MIB ((smmu_addr_t)1 << 20)
enum { REMAP_PLAIN, REMAP_LEAVE }; /* f->variant of the mremap walks */
#define BOUND_NS 10000000000ull /* no wait of the test is longer */
#define GIB ((smmu_addr_t)1 << 30)

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Write mapped_and_written()'s pattern for page index i at page a. */
static void write_pattern(struct fi *f, smmu_addr_t a, size_t i)
{
	uint64_t v[4] = {pattern_value(a - i * PS, i), ~a, i, 0x5eed};
	cr_assert_eq(smmu_write(f->cpu, a + pattern_offset(i), v, sizeof(v)), 0);
}

/* ============================================================ mremap */

/* The snapshot's regions with each move applied (sources do not overlap). */
static size_t regions_after_moves(const struct fi *f, struct smmu_region *out)
{
	struct smmu_region tmp[MAX_REGIONS * 3];
	size_t n = 0;
	for (size_t i = 0; i < f->nregions; i++) {
		/* Cut the region at every source: parts outside stay, parts
		 * inside move with their source. */
		struct smmu_region todo[MAX_MOVES * 2 + 1];
		size_t nt = 0;
		todo[nt++] = f->regions[i];
		for (size_t k = 0; k < f->nmoves; k++) {
			smmu_addr_t from = f->moves[k].from, end = from + f->moves[k].len;
			struct smmu_region next[MAX_MOVES * 2 + 1];
			size_t nn = 0;
			for (size_t j = 0; j < nt; j++) {
				struct smmu_region r = todo[j];
				if (r.end <= from || r.start >= end) {
					next[nn++] = r;
					continue;
				}
				if (r.start < from)
					next[nn++] = (struct smmu_region){r.start, from, r.prot, 0};
				if (r.end > end)
					next[nn++] = (struct smmu_region){end, r.end, r.prot, 0};
				smmu_addr_t s = r.start > from ? r.start : from, e = r.end < end ? r.end : end;
				smmu_addr_t to = f->moves[k].to;
				cr_assert_lt(n, MAX_REGIONS * 3);
				tmp[n++] = (struct smmu_region){to + (s - from), to + (e - from), r.prot, 0};
			}
			memcpy(todo, next, nn * sizeof(*next));
			nt = nn;
		}
		for (size_t j = 0; j < nt; j++) {
			cr_assert_lt(n, MAX_REGIONS * 3);
			tmp[n++] = todo[j];
		}
	}
	for (size_t k = 0; f->variant == REMAP_LEAVE && k < f->nmoves; k++) { /* the mappings left behind */
		cr_assert_lt(n, MAX_REGIONS * 3);
		tmp[n++] = (struct smmu_region){f->moves[k].from, f->moves[k].from + f->moves[k].len, SMMU_PROT_NONE, 0};
	}
	return sort_merge(tmp, n, out);
}

/* The move whose source (dest false) or destination (dest true) holds a,
 * or -1. */
static long move_of(const struct fi *f, smmu_addr_t a, bool dest)
{
	for (size_t k = 0; k < f->nmoves; k++) {
		smmu_addr_t lo = dest ? f->moves[k].to : f->moves[k].from;
		if (a >= lo && a < lo + f->moves[k].len)
			return (long)k;
	}
	return -1;
}

static int mremap_run(struct fi *f)
{
	if (f->variant == REMAP_LEAVE)
		return smmu_mremap_batch_leave(f->mm, f->moves, f->nmoves,
					       &(struct smmu_remap_leave){.prot = SMMU_PROT_NONE});
	if (f->nmoves == 1)
		return smmu_mremap(f->mm, f->moves[0].from, f->moves[0].len, f->moves[0].to, 0);
	return smmu_mremap_batch(f->mm, f->moves, f->nmoves);
}

static void mremap_done(struct fi *f)
{
	struct smmu_region want[MAX_REGIONS];
	size_t nwant = regions_after_moves(f, want);
	expect_regions(f, want, nwant);
	static struct page_snap now[MAX_SNAP];
	snap_pages(f, now);
	static unsigned char buf[PS];
	for (size_t i = 0; i < snap_total(f); i++) {
		smmu_addr_t a = snap_addr(f, i);
		long k;
		if (move_of(f, a, false) >= 0) {
			cr_assert_eq(now[i].pte, 0, "source page %#llx still mapped", (unsigned long long)a);
			uint64_t v;
			cr_assert_eq(smmu_try_load64(f->cpu, a, &v), f->variant == REMAP_LEAVE ? -EACCES : -EFAULT);
		} else if ((k = move_of(f, a, true)) >= 0) {
			long j = snap_index(f, a - f->moves[k].to + f->moves[k].from);
			cr_assert_geq(j, 0, "the test watches every source page");
			cr_assert_eq(pte_no_cpus(now[i].pte), pte_no_cpus(f->pages[j].pte),
				     "page %#llx: pte %#llx, its source's was %#llx", (unsigned long long)a,
				     (unsigned long long)now[i].pte, (unsigned long long)f->pages[j].pte);
			cr_assert_eq(now[i].hash, f->pages[j].hash, "page %#llx: contents not those of its source",
				     (unsigned long long)a);
			if (f->pages[j].pte & SMMU_PTE_PRESENT) { /* through the CPU too */
				cr_assert_eq(smmu_read(f->cpu, a, buf, PS), 0);
				cr_assert_eq(page_hash(buf, PS), f->pages[j].hash);
			}
		} else {
			cr_assert_eq(now[i].pte, f->pages[i].pte, "page %#llx outside the moves changed",
				     (unsigned long long)a);
			cr_assert_eq(now[i].hash, f->pages[i].hash);
		}
	}
	cr_assert_eq(smmu_pool_free_frames(f->pool), f->free_frames, "frames move, none is freed or taken");
}

/* After a failure the sources still work through the CPU, and the same
 * move succeeds. */
static void mremap_failed(struct fi *f)
{
	static unsigned char buf[PS];
	for (size_t i = 0; i < snap_total(f); i++)
		if ((f->pages[i].pte & SMMU_PTE_PRESENT) && move_of(f, snap_addr(f, i), false) >= 0) {
			cr_assert_eq(smmu_read(f->cpu, snap_addr(f, i), buf, PS), 0);
			cr_assert_eq(page_hash(buf, PS), f->pages[i].hash);
		}
	snapshot(f); /* the reads marked pages accessed */
	cr_assert_eq(mremap_run(f), 0, "the move fails without injection");
	mremap_done(f);
}

/* [x, x+4p) RW and [x+4p, x+6p) READ, written; move [x+2p, x+6p) (two
 * regions, one split) to another leaf table 64 MiB up. */
static void leaves_setup(struct fi *f)
{
	f->x = (smmu_addr_t)4 * GIB;
	mapped_and_written(f, f->x, 6, RW);
	cr_assert_eq(smmu_mprotect(f->mm, f->x + 4 * PS, 2 * PS, SMMU_PROT_READ), 0);
	f->moves[f->nmoves++] = (struct smmu_remap){f->x + 2 * PS, f->x + 64 * MIB, 4 * PS};
	watch(f, f->x, 6);
	watch(f, f->x + 64 * MIB, 4);
}

/* A 2 MiB-aligned 2 MiB map with three written pages; move it whole to
 * 2 MiB-aligned space in another 512 GiB (new upper tables): one subtree
 * entry moves. */
static void subtree_setup(struct fi *f)
{
	smmu_addr_t z = 6 * GIB, w = ((smmu_addr_t)1 << 39) + 6 * MIB, out;
	cr_assert_eq(smmu_mmap(f->mm, z, 2 * MIB, RW, SMMU_MAP_FIXED_NOREPLACE, &out), 0);
	write_pattern(f, z, 0);
	write_pattern(f, z + 255 * PS, 255);
	write_pattern(f, z + 511 * PS, 511);
	f->moves[f->nmoves++] = (struct smmu_remap){z, w, 2 * MIB};
	watch(f, z, 512);
	watch(f, w, 512);
}

static void remap_leaves_setup(struct fi *f)
{
	env(f, 64, true);
	leaves_setup(f);
	six_more_regions(f);
}

static void remap_subtree_setup(struct fi *f)
{
	env(f, 64, true);
	subtree_setup(f);
	six_more_regions(f);
}

/* Three moves: the leaves, the subtree, and a 2-page move within one leaf
 * table. */
static void remap_batch_setup(struct fi *f)
{
	env(f, 64, true);
	leaves_setup(f);
	subtree_setup(f);
	mapped_and_written(f, f->x + 20 * PS, 2, RW);
	f->moves[f->nmoves++] = (struct smmu_remap){f->x + 20 * PS, f->x + 30 * PS, 2 * PS};
	/* x's watch grows to cover the third move's source and destination. */
	f->snap[0].pages = 32;
	six_more_regions(f);
}

Test(fault_injection, mremap_leaves)
{
	walk(&(struct fi_op){.name = "mremap (leaves, split source)",
			     .setup = remap_leaves_setup,
			     .run = mremap_run,
			     .done = mremap_done,
			     .teardown = env_down,
			     .strict_live = true,
			     .failed = mremap_failed});
}

Test(fault_injection, mremap_subtree_2mib)
{
	walk(&(struct fi_op){.name = "mremap (2 MiB subtree)",
			     .setup = remap_subtree_setup,
			     .run = mremap_run,
			     .done = mremap_done,
			     .teardown = env_down,
			     .strict_live = true,
			     .failed = mremap_failed});
}

static void remap_batch_leave_setup(struct fi *f)
{
	remap_batch_setup(f);
	f->variant = REMAP_LEAVE;
}

Test(fault_injection, mremap_batch_leave_three_moves)
{
	walk(&(struct fi_op){.name = "mremap_batch_leave (3 moves, PROT_NONE left behind)",
			     .setup = remap_batch_leave_setup,
			     .run = mremap_run,
			     .done = mremap_done,
			     .teardown = env_down,
			     .strict_live = true,
			     .failed = mremap_failed});
}

Test(fault_injection, mremap_batch_three_moves)
{
	walk(&(struct fi_op){.name = "mremap_batch (3 moves)",
			     .setup = remap_batch_setup,
			     .run = mremap_run,
			     .done = mremap_done,
			     .teardown = env_down,
			     .strict_live = true,
			     .failed = mremap_failed});
}

/* ========================================================= notifiers */

static int cb_start(void *arg, const struct smmu_notify_range *r)
{
	(void)r;
	atomic_fetch_add(&((struct fi *)arg)->cb_start, 1);
	return 0;
}

static void cb_secondary(void *arg, const struct smmu_notify_range *r)
{
	(void)r;
	atomic_fetch_add(&((struct fi *)arg)->cb_secondary, 1);
}

static void cb_end(void *arg, const struct smmu_notify_range *r)
{
	(void)r;
	atomic_fetch_add(&((struct fi *)arg)->cb_end, 1);
}

static const struct smmu_notifier_ops counting_ops = {
	.invalidate_range_start = cb_start,
	.invalidate_secondary_tlbs = cb_secondary,
	.invalidate_range_end = cb_end,
};

static bool cb_invalidate(struct smmu_interval_notifier *sub, void *arg, const struct smmu_notify_range *r,
			  unsigned long cur_seq)
{
	(void)r;
	smmu_interval_set_seq(sub, cur_seq);
	atomic_fetch_add(&((struct fi *)arg)->cb_invalidate, 1);
	return true;
}

static const struct smmu_interval_notifier_ops interval_ops = {.invalidate = cb_invalidate};

static void notifier_setup(struct fi *f)
{
	env(f, 32, true);
	f->x = (smmu_addr_t)1 << 32;
	mapped_and_written(f, f->x, 4, RW);
	watch(f, f->x, 4);
}

static void notifier_teardown(struct fi *f)
{
	if (f->notifier)
		cr_assert_eq(smmu_notifier_unregister(f->notifier), 0);
	if (f->isub)
		cr_assert_eq(smmu_interval_notifier_remove(f->isub), 0);
	env_down(f);
}

static int register_run(struct fi *f)
{
	struct smmu_notifier *sentinel = (struct smmu_notifier *)(uintptr_t)0x1;
	f->notifier = sentinel;
	int err = smmu_notifier_register(f->mm, &counting_ops, f, &f->notifier);
	if (err) {
		cr_assert_eq(f->notifier, sentinel, "*out written on error");
		f->notifier = NULL;
		cr_assert_eq(atomic_load(&f->mm->notify.count), 0, "a subscription is left");
		cr_assert_null(atomic_load(&f->mm->notify.subs));
	}
	return err;
}

static void register_done(struct fi *f)
{
	cr_assert_eq(atomic_load(&f->mm->notify.count), 1);
	cr_assert_eq(smmu_munmap(f->mm, f->x + PS, PS), 0);
	cr_assert_eq(atomic_load(&f->cb_start), 1);
	cr_assert_geq(atomic_load(&f->cb_secondary), 1);
	cr_assert_eq(atomic_load(&f->cb_end), 1);
}

/* No callback of the failed subscription runs; a new one works. */
static void register_failed(struct fi *f)
{
	cr_assert_eq(smmu_munmap(f->mm, f->x + 3 * PS, PS), 0);
	cr_assert_eq(atomic_load(&f->cb_start), 0);
	cr_assert_eq(register_run(f), 0);
	register_done(f);
}

Test(fault_injection, notifier_register)
{
	walk(&(struct fi_op){.name = "notifier register",
			     .setup = notifier_setup,
			     .run = register_run,
			     .done = register_done,
			     .teardown = notifier_teardown,
			     .strict_live = true,
			     .failed = register_failed});
}

static int insert_run(struct fi *f)
{
	struct smmu_interval_notifier *sentinel = (struct smmu_interval_notifier *)(uintptr_t)0x1;
	f->isub = sentinel;
	int err = smmu_interval_notifier_insert(f->mm, f->x, 2 * PS, &interval_ops, f, &f->isub);
	if (err) {
		cr_assert_eq(f->isub, sentinel, "*out written on error");
		f->isub = NULL;
		cr_assert_eq(atomic_load(&f->mm->notify.count), 0, "a subscription is left");
		cr_assert_null(atomic_load(&f->mm->notify.intervals));
	}
	return err;
}

static void insert_done(struct fi *f)
{
	smmu_addr_t s, e;
	smmu_interval_notifier_range(f->isub, &s, &e);
	cr_assert(s == f->x && e == f->x + 2 * PS);
	unsigned long seq = smmu_interval_read_begin(f->isub);
	cr_assert(!smmu_interval_read_retry(f->isub, seq));
	cr_assert_eq(smmu_mprotect(f->mm, f->x + 3 * PS, PS, SMMU_PROT_READ), 0); /* outside */
	cr_assert_eq(atomic_load(&f->cb_invalidate), 0);
	cr_assert_eq(smmu_mprotect(f->mm, f->x + PS, PS, SMMU_PROT_READ), 0);
	cr_assert_eq(atomic_load(&f->cb_invalidate), 1);
	cr_assert(smmu_interval_read_retry(f->isub, seq), "the invalidation did not bump the sequence");
}

static void insert_failed(struct fi *f)
{
	cr_assert_eq(smmu_mprotect(f->mm, f->x, PS, SMMU_PROT_READ), 0);
	cr_assert_eq(atomic_load(&f->cb_invalidate), 0);
	cr_assert_eq(insert_run(f), 0);
	insert_done(f);
}

Test(fault_injection, interval_notifier_insert)
{
	walk(&(struct fi_op){.name = "interval notifier insert",
			     .setup = notifier_setup,
			     .run = insert_run,
			     .done = insert_done,
			     .teardown = notifier_teardown,
			     .strict_live = true,
			     .failed = insert_failed});
}

/* ================================================= smmu_mm_translate */

/* A write translation of a fresh page in a fresh 512 GiB: three table
 * pages (allocation seam) and a frame (pool seam); no CPU. */
static void translate_setup(struct fi *f)
{
	env(f, 16, false);
	cr_assert_eq(smmu_mmap(f->mm, (smmu_addr_t)5 << 39, 2 * PS, RW, SMMU_MAP_FIXED, &f->x), 0);
	watch(f, f->x, 2);
}

static int translate_run(struct fi *f)
{
	void *sentinel = (void *)(uintptr_t)0x1;
	f->host = sentinel;
	int err = smmu_mm_translate(f->mm, f->x + PS + 16, RW, &f->host);
	if (err)
		cr_assert_eq(f->host, sentinel, "*host written on error");
	return err;
}

static void translate_done(struct fi *f)
{
	smmu_pte_t p = pte_at(f->mm, f->x + PS);
	cr_assert(p & SMMU_PTE_PRESENT);
	cr_assert_eq(p & (SMMU_PTE_ACCESSED | SMMU_PTE_DIRTY), SMMU_PTE_ACCESSED | SMMU_PTE_DIRTY);
	cr_assert_eq((char *)f->host, (char *)smmu__frame_host(f->pool, smmu__pte_frame(p)) + 16);
	cr_assert_eq(*(uint64_t *)f->host, 0, "not a zeroed frame");
	*(uint64_t *)f->host = 0xabcd;
	void *again;
	cr_assert_eq(smmu_mm_translate(f->mm, f->x + PS + 16, SMMU_PROT_READ, &again), 0);
	cr_assert_eq(again, f->host);
	cr_assert_eq(pte_at(f->mm, f->x), 0);
	cr_assert_eq(smmu_pool_free_frames(f->pool), f->free_frames - 1);
	expect_regions(f, f->regions, f->nregions);
}

static void translate_failed(struct fi *f)
{
	cr_assert_eq(pte_at(f->mm, f->x + PS), 0, "a page was mapped by the failed translation");
	cr_assert_eq(translate_run(f), 0, "the retry failed");
	translate_done(f);
}

Test(fault_injection, mm_translate)
{
	walk(&(struct fi_op){.name = "mm_translate (fresh tables)",
			     .setup = translate_setup,
			     .run = translate_run,
			     .done = translate_done,
			     .teardown = env_down,
			     .failed = translate_failed});
}

Test(fault_injection, pool_mm_translate)
{
	long sites = walk(&(struct fi_op){.name = "mm_translate (demand zero)",
					  .setup = translate_setup,
					  .run = translate_run,
					  .done = translate_done,
					  .teardown = env_down,
					  .seam = FI_POOL,
					  .failed = translate_failed});
	cr_assert_eq(sites, 1);
}

/* ================================================ many CPUs to signal */

/*
 * More CPUs than the shootdown's on-stack target list holds (16): the
 * initiator allocates a longer list, and when that fails it waits for the
 * targets it has with the CPU list locked and goes on - slower, not an
 * error.  IDLE_CPUS threads register, load the page and then sleep online
 * in sem_wait (a signal interrupts it: the handler answers).  After the
 * call each of them must fault at the page (munmap) or fail to store to
 * it (mprotect READ).
 */
#define IDLE_CPUS 17

struct idle {
	struct fi *f;
	pthread_t t[IDLE_CPUS];
	sem_t go;
	_Atomic int ready, bad;
	_Atomic int result[IDLE_CPUS];
	int id[IDLE_CPUS];
};

static struct idle *idle_of(struct fi *f)
{
	return (struct idle *)f->host;
}

static void *idle_main(void *p)
{
	int *idp = p; /* &id->id[i], which holds i: container_of back to id */
	struct idle *id = (struct idle *)((char *)(idp - *idp) - offsetof(struct idle, id));
	struct fi *f = id->f;
	struct smmu_cpu *cpu;
	if (smmu_cpu_register(f->mm, &cpu)) {
		atomic_store(&id->bad, 1);
		atomic_fetch_add(&id->ready, 1);
		return NULL;
	}
	uint64_t v = 0;
	if (smmu_try_load64(cpu, f->x, &v) || v != 0x1d1e)
		atomic_store(&id->bad, 2);
	if (f->variant && smmu_try_store64(cpu, f->x, 0x1d1e))
		atomic_store(&id->bad, 3);
	atomic_fetch_add(&id->ready, 1);
	while (sem_wait(&id->go) && errno == EINTR)
		; /* a shootdown signal: answered, sleep on */
	atomic_store(&id->result[*idp], f->variant ? smmu_try_store64(cpu, f->x, 1) : smmu_try_load64(cpu, f->x, &v));
	smmu_cpu_unregister(cpu);
	return NULL;
}

static void idle_setup_common(struct fi *f, int variant)
{
	env(f, 32, true);
	f->variant = variant; /* 0: munmap, 1: mprotect(READ) */
	cr_assert_eq(smmu_mmap(f->mm, (smmu_addr_t)1 << 32, PS, RW, SMMU_MAP_FIXED, &f->x), 0);
	smmu_store64(f->cpu, f->x, 0x1d1e);
	cr_assert_eq(smmu_cpu_unregister(f->cpu), 0);
	f->cpu = NULL;
	struct idle *id = calloc(1, sizeof(*id));
	cr_assert(id);
	f->host = id;
	id->f = f;
	cr_assert_eq(sem_init(&id->go, 0, 0), 0);
	for (int i = 0; i < IDLE_CPUS; i++) {
		id->id[i] = i;
		cr_assert_eq(pthread_create(&id->t[i], NULL, idle_main, &id->id[i]), 0);
	}
	uint64_t t0 = now_ns();
	while (atomic_load(&id->ready) < IDLE_CPUS) {
		cr_assert_lt(now_ns() - t0, BOUND_NS, "the idle CPUs did not start");
		sched_yield();
	}
	cr_assert_eq(atomic_load(&id->bad), 0, "an idle CPU failed to start (%d)", atomic_load(&id->bad));
	watch(f, f->x, 1);
}

static void idle_unmap_setup(struct fi *f)
{
	idle_setup_common(f, 0);
}

static void idle_prot_setup(struct fi *f)
{
	idle_setup_common(f, 1);
}

static int idle_run(struct fi *f)
{
	return f->variant ? smmu_mprotect(f->mm, f->x, PS, SMMU_PROT_READ) : smmu_munmap(f->mm, f->x, PS);
}

/* Wake the idle CPUs and join them (bounded). */
static void idle_finish(struct fi *f)
{
	struct idle *id = idle_of(f);
	if (!id)
		return;
	for (int i = 0; i < IDLE_CPUS; i++)
		sem_post(&id->go);
	for (int i = 0; i < IDLE_CPUS; i++) {
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += BOUND_NS / 1000000000u;
		cr_assert_eq(pthread_timedjoin_np(id->t[i], NULL, &dl), 0, "idle CPU %d did not stop", i);
	}
	sem_destroy(&id->go);
}

static void idle_done(struct fi *f)
{
	struct idle *id = idle_of(f);
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(f->mm, &st), 0);
	cr_assert_geq(st.signals_sent, IDLE_CPUS, "every idle CPU held the page: each is signalled");
	idle_finish(f);
	for (int i = 0; i < IDLE_CPUS; i++)
		cr_assert_eq(atomic_load(&id->result[i]), f->variant ? -EACCES : -EFAULT,
			     "idle CPU %d still reached the page through its old entry (%d)", i,
			     atomic_load(&id->result[i]));
	free(id);
	f->host = NULL;
	if (f->variant) {
		smmu_pte_t p = pte_at(f->mm, f->x);
		cr_assert((p & SMMU_PTE_PRESENT) && !(p & SMMU_PTE_WRITE));
		cr_assert_eq(page_hash(smmu__frame_host(f->pool, smmu__pte_frame(p)), PS), f->pages[0].hash);
	} else {
		cr_assert_eq(pte_at(f->mm, f->x), 0);
		cr_assert_eq(smmu_pool_free_frames(f->pool), f->free_frames + 1);
	}
}

static void idle_teardown(struct fi *f)
{
	struct idle *id = idle_of(f);
	if (id) {
		idle_finish(f);
		free(id);
		f->host = NULL;
	}
	env_down(f);
}

Test(fault_injection, munmap_signals_more_cpus_than_on_stack)
{
	walk(&(struct fi_op){.name = "munmap, 17 CPUs to signal",
			     .setup = idle_unmap_setup,
			     .run = idle_run,
			     .done = idle_done,
			     .teardown = idle_teardown,
			     .absorbable = true /* the target list falls back */});
}

Test(fault_injection, mprotect_signals_more_cpus_than_on_stack)
{
	walk(&(struct fi_op){.name = "mprotect(READ), 17 CPUs to signal",
			     .setup = idle_prot_setup,
			     .run = idle_run,
			     .done = idle_done,
			     .teardown = idle_teardown,
			     .absorbable = true /* the target list falls back */});
}

/* ================================================== stalled signals */

/*
 * One remote CPU thread (signal mode) loads every watched address in a
 * loop - and stores the value back where `store` says - checking each
 * result against the address's state, which the main thread sets only
 * after the call that changed it has returned:
 *   W_ANY      either mapped with the right contents or not mapped;
 *   W_PRESENT  mapped, right contents (stores succeed);
 *   W_GONE     unmapped or moved away: the access must fault (-EFAULT);
 *   W_RO       made read-only: loads succeed, stores fail (-EACCES).
 * The remote reads the state before its access, so an access that starts
 * after it saw W_GONE / W_RO and still completes went through the old
 * translation: a violation.  Before each call the main thread waits (with
 * a bound) until the remote has been round its loop twice, so that it
 * holds every live translation and the call must signal it: one signal a
 * call, and the nth of them (n walked) stalls STALL_NS in its handler.
 */
#define STALL_NS 3000000L /* 3 ms */
#define MAX_WATCH 8

enum { W_ANY, W_PRESENT, W_GONE, W_RO };

struct wpage {
	smmu_addr_t a;
	uint64_t want;
	bool store;
	_Atomic int state;
};

struct remote {
	struct smmu_mm *mm;
	struct wpage w[MAX_WATCH];
	size_t nw;
	pthread_t t;
	_Atomic int stop, started;
	_Atomic uint64_t iters;
	_Atomic int violations;
	char why[256];
};

static void violation(struct remote *r, const char *fmt, ...)
{
	if (atomic_fetch_add(&r->violations, 1))
		return; /* keep the first */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
}

static void *remote_main(void *p)
{
	struct remote *r = p;
	struct smmu_cpu *cpu;
	if (smmu_cpu_register(r->mm, &cpu)) {
		atomic_store(&r->started, -1);
		return NULL;
	}
	atomic_store(&r->started, 1);
	while (!atomic_load(&r->stop)) {
		for (size_t i = 0; i < r->nw; i++) {
			struct wpage *w = &r->w[i];
			int st = atomic_load(&w->state); /* before the access */
			uint64_t v = 0;
			int err = smmu_try_load64(cpu, w->a, &v);
			if (st == W_GONE && err != -EFAULT)
				violation(r, "load at %#llx after its unmap/move returned: %d (value %#llx)",
					  (unsigned long long)w->a, err, (unsigned long long)v);
			else if ((st == W_PRESENT || st == W_RO) && err)
				violation(r, "load at %#llx, which stays mapped: %d", (unsigned long long)w->a, err);
			else if (err && err != -EFAULT)
				violation(r, "load at %#llx: %d", (unsigned long long)w->a, err);
			if (!err && v != w->want)
				violation(r, "load at %#llx: %#llx, want %#llx", (unsigned long long)w->a,
					  (unsigned long long)v, (unsigned long long)w->want);
			if (!w->store || st == W_GONE)
				continue;
			err = smmu_try_store64(cpu, w->a, w->want);
			if (st == W_RO && err != -EACCES)
				violation(r, "store at %#llx after its mprotect(READ) returned: %d",
					  (unsigned long long)w->a, err);
			else if (st == W_PRESENT && err)
				violation(r, "store at %#llx, which stays writable: %d", (unsigned long long)w->a, err);
			else if (err && err != -EACCES && err != -EFAULT)
				violation(r, "store at %#llx: %d", (unsigned long long)w->a, err);
		}
		atomic_fetch_add(&r->iters, 1);
		sched_yield(); /* two shared cores; and TSan delivers signals in calls */
	}
	smmu_cpu_unregister(cpu);
	return NULL;
}

/* Wait (bounded) until the remote has gone round its loop k more times. */
static void remote_rounds(struct remote *r, uint64_t k, const char *what)
{
	uint64_t target = atomic_load(&r->iters) + k, t0 = now_ns();
	struct timespec nap = {0, 20000};
	while (atomic_load(&r->iters) < target) {
		cr_assert_eq(atomic_load(&r->violations), 0, "%s: %s", what, r->why);
		cr_assert_lt(now_ns() - t0, BOUND_NS, "%s: the remote CPU made no progress for 10 s", what);
		nanosleep(&nap, NULL);
	}
}

static void remote_watch(struct remote *r, smmu_addr_t a, uint64_t want, bool store, int state)
{
	cr_assert_lt(r->nw, MAX_WATCH);
	struct wpage *w = &r->w[r->nw++];
	w->a = a;
	w->want = want;
	w->store = store;
	atomic_store(&w->state, state);
}

static void remote_set(struct remote *r, smmu_addr_t a, int state)
{
	for (size_t i = 0; i < r->nw; i++)
		if (r->w[i].a == a) {
			atomic_store(&r->w[i].state, state);
			return;
		}
	cr_assert_fail("%#llx is not watched", (unsigned long long)a);
}

struct stall_case {
	const char *name;
	int nops;
	/* Map and write (f->cpu is registered), and say what to watch. */
	void (*setup)(struct fi *f, struct remote *r);
	/* The kth call, and then the states it changed. */
	int (*op)(struct fi *f, int k);
	void (*after)(struct fi *f, struct remote *r, int k);
	/* Optional: before the kth call, W_PRESENT pages it will change
	 * become W_ANY (either outcome is right while it runs). */
	void (*before)(struct fi *f, struct remote *r, int k);
};

/* The address of the pattern's first word in page i of x, and its value. */
static smmu_addr_t pat_addr(struct fi *f, size_t i)
{
	return f->x + i * PS + pattern_offset(i);
}

/* munmap pages 1, 0, 3 of four, one call each; page 2 stays. */
static void unmap_case_setup(struct fi *f, struct remote *r)
{
	f->x = (smmu_addr_t)4 * GIB;
	mapped_and_written(f, f->x, 4, RW);
	for (size_t i = 0; i < 4; i++)
		remote_watch(r, pat_addr(f, i), pattern_value(f->x, i), false, i == 2 ? W_PRESENT : W_ANY);
}

static const size_t case_page[3] = {1, 0, 3};

static int unmap_case_op(struct fi *f, int k)
{
	return smmu_munmap(f->mm, f->x + case_page[k] * PS, PS);
}

static void unmap_case_after(struct fi *f, struct remote *r, int k)
{
	remote_set(r, pat_addr(f, case_page[k]), W_GONE);
}

/* mprotect(READ) pages 1, 0, 3 of four, which the remote also stores to;
 * page 2 stays writable. */
static void prot_case_setup(struct fi *f, struct remote *r)
{
	f->x = (smmu_addr_t)4 * GIB;
	mapped_and_written(f, f->x, 4, RW);
	for (size_t i = 0; i < 4; i++)
		remote_watch(r, pat_addr(f, i), pattern_value(f->x, i), true, i == 2 ? W_PRESENT : W_ANY);
}

static int prot_case_op(struct fi *f, int k)
{
	return smmu_mprotect(f->mm, f->x + case_page[k] * PS, PS, SMMU_PROT_READ);
}

static void prot_case_after(struct fi *f, struct remote *r, int k)
{
	remote_set(r, pat_addr(f, case_page[k]), W_RO);
}

/* mremap page 1 to d1, page 0 to d0, then one batch: page 3 to d2 and d0
 * on to e0.  The destinations are watched for the moved contents. */
#define D(f, i) ((f)->x + 64 * MIB + (smmu_addr_t)(i)*4 * PS)

static void remap_case_setup(struct fi *f, struct remote *r)
{
	f->x = (smmu_addr_t)4 * GIB;
	mapped_and_written(f, f->x, 4, RW);
	for (size_t i = 0; i < 4; i++)
		remote_watch(r, pat_addr(f, i), pattern_value(f->x, i), false, i == 2 ? W_PRESENT : W_ANY);
	/* d0, d1, d2, e0 = D(0..3), at the pattern offset of their page. */
	remote_watch(r, D(f, 0) + pattern_offset(0), pattern_value(f->x, 0), false, W_ANY);
	remote_watch(r, D(f, 1) + pattern_offset(1), pattern_value(f->x, 1), false, W_ANY);
	remote_watch(r, D(f, 2) + pattern_offset(3), pattern_value(f->x, 3), false, W_ANY);
	remote_watch(r, D(f, 3) + pattern_offset(0), pattern_value(f->x, 0), false, W_ANY);
}

static int remap_case_op(struct fi *f, int k)
{
	switch (k) {
	case 0:
		return smmu_mremap(f->mm, f->x + PS, PS, D(f, 1), 0);
	case 1:
		return smmu_mremap(f->mm, f->x, PS, D(f, 0), 0);
	default: {
		struct smmu_remap moves[2] = {{f->x + 3 * PS, D(f, 2), PS}, {D(f, 0), D(f, 3), PS}};
		return smmu_mremap_batch(f->mm, moves, 2);
	}
	}
}

static void remap_case_before(struct fi *f, struct remote *r, int k)
{
	if (k == 2)
		remote_set(r, D(f, 0) + pattern_offset(0), W_ANY); /* moves on to e0 */
}

static void remap_case_after(struct fi *f, struct remote *r, int k)
{
	switch (k) {
	case 0:
		remote_set(r, pat_addr(f, 1), W_GONE);
		remote_set(r, D(f, 1) + pattern_offset(1), W_PRESENT);
		break;
	case 1:
		remote_set(r, pat_addr(f, 0), W_GONE);
		remote_set(r, D(f, 0) + pattern_offset(0), W_PRESENT);
		break;
	default:
		remote_set(r, pat_addr(f, 3), W_GONE);
		remote_set(r, D(f, 2) + pattern_offset(3), W_PRESENT);
		remote_set(r, D(f, 0) + pattern_offset(0), W_GONE);
		remote_set(r, D(f, 3) + pattern_offset(0), W_PRESENT);
		break;
	}
}

struct opcall {
	struct fi *f;
	const struct stall_case *sc;
	int k, err;
};

static void *opcall_main(void *p)
{
	struct opcall *c = p;
	c->err = c->sc->op(c->f, c->k);
	return NULL;
}

/* Run the kth call on a thread of its own and wait for it with a bound:
 * a call that never returns fails the test instead of hanging it. */
static int run_bounded(struct fi *f, const struct stall_case *sc, int k, long n, uint64_t *ns)
{
	struct opcall c = {f, sc, k, -1};
	pthread_t t;
	uint64_t t0 = now_ns();
	cr_assert_eq(pthread_create(&t, NULL, opcall_main, &c), 0);
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += BOUND_NS / 1000000000u;
	int jerr = pthread_timedjoin_np(t, NULL, &dl);
	cr_assert_eq(jerr, 0, "%s, n=%ld: call %d did not return within 10 s (%d)", sc->name, n, k, jerr);
	*ns = now_ns() - t0;
	return c.err;
}

static void stall_walk(const struct stall_case *sc)
{
	long n, sites = 0;
	uint64_t worst = 0;
	for (n = 0; n < 8; n++) {
		long live0 = smmu__alloc_live();
		struct fi *f = calloc(1, sizeof(*f));
		struct remote *r = calloc(1, sizeof(*r));
		cr_assert(f && r);
		env(f, 64, true);
		sc->setup(f, r);
		/* The main thread is no CPU while the calls run: the remote is
		 * the only one signalled, and the stall is always its. */
		cr_assert_eq(smmu_cpu_unregister(f->cpu), 0);
		f->cpu = NULL;
		struct smmu_stats st0, st1;
		cr_assert_eq(smmu_stats_get(f->mm, &st0), 0);

		r->mm = f->mm;
		cr_assert_eq(pthread_create(&r->t, NULL, remote_main, r), 0);
		uint64_t t0 = now_ns();
		while (!atomic_load(&r->started)) {
			cr_assert_lt(now_ns() - t0, BOUND_NS, "the remote CPU did not start");
			sched_yield();
		}
		cr_assert_eq(atomic_load(&r->started), 1, "the remote CPU could not register");

		int stalled_in = -1;
		smmu__signal_stall_after(n, STALL_NS);
		for (int k = 0; k < sc->nops; k++) {
			remote_rounds(r, 2, sc->name);
			if (sc->before)
				sc->before(f, r, k);
			uint64_t ns;
			int err = run_bounded(f, sc, k, n, &ns);
			cr_assert_eq(err, 0, "%s, n=%ld: call %d: %d", sc->name, n, k, err);
			sc->after(f, r, k);
			if (stalled_in < 0 && smmu__signal_stall_fired()) {
				stalled_in = k;
				/* The call waited for the stalled handler's acknowledgement. */
				cr_assert_geq(ns, (uint64_t)STALL_NS,
					      "%s, n=%ld: call %d returned after %llu ns, before the stalled CPU "
					      "acknowledged",
					      sc->name, n, k, (unsigned long long)ns);
				if (ns > worst)
					worst = ns;
			}
		}
		remote_rounds(r, 2, sc->name); /* every state checked after the last call */
		bool fired = smmu__signal_stall_fired();
		smmu__signal_stall_after(-1, 0);

		atomic_store(&r->stop, 1);
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += BOUND_NS / 1000000000u;
		cr_assert_eq(pthread_timedjoin_np(r->t, NULL, &dl), 0, "%s, n=%ld: the remote CPU did not stop",
			     sc->name, n);
		cr_assert_eq(atomic_load(&r->violations), 0, "%s, n=%ld (stall in call %d): %s", sc->name, n,
			     stalled_in, r->why);

		/* Counters: one signal a call, each handled (the remote has
		 * left, its counters are in the mm's). */
		cr_assert_eq(smmu_stats_get(f->mm, &st1), 0);
		cr_assert_eq(st1.signals_sent - st0.signals_sent, (uint64_t)sc->nops, "%s, n=%ld: %llu signals sent",
			     sc->name, n, (unsigned long long)(st1.signals_sent - st0.signals_sent));
		cr_assert_eq(st1.signals_received - st0.signals_received, st1.signals_sent - st0.signals_sent,
			     "%s, n=%ld: %llu signals handled of %llu", sc->name, n,
			     (unsigned long long)(st1.signals_received - st0.signals_received),
			     (unsigned long long)(st1.signals_sent - st0.signals_sent));
		cr_assert_geq(st1.shootdowns - st0.shootdowns, (uint64_t)sc->nops);
		cr_assert_leq(st1.acks_deferred - st0.acks_deferred, st1.signals_received - st0.signals_received);

		env_down(f);
		free(r);
		free(f);
		cr_assert_eq(smmu__alloc_live(), live0, "%s, n=%ld: leaked %ld blocks", sc->name, n,
			     smmu__alloc_live() - live0);
		if (!fired)
			break;
		sites++;
		cr_assert_eq(stalled_in, (int)n, "%s: the %ldth signal stalled in call %d", sc->name, n, stalled_in);
	}
	cr_assert_lt(n, 8);
	cr_log_info("signal stall: %-30s %ld signals stalled in turn (%d calls, slowest stalled call %.1f ms)",
		    sc->name, sites, sc->nops, worst / 1e6);
	cr_assert_eq(sites, sc->nops, "%s: one signal a call", sc->name);
}

Test(fault_injection, signal_stall_munmap)
{
	stall_walk(&(struct stall_case){"munmap", 3, unmap_case_setup, unmap_case_op, unmap_case_after, NULL});
}

Test(fault_injection, signal_stall_mprotect_read)
{
	stall_walk(&(struct stall_case){"mprotect(READ)", 3, prot_case_setup, prot_case_op, prot_case_after, NULL});
}

Test(fault_injection, signal_stall_mremap)
{
	stall_walk(&(struct stall_case){"mremap, mremap_batch", 3, remap_case_setup, remap_case_op, remap_case_after,
					remap_case_before});
}

/* ------------------------------------------------------------ mm_dup */

/* Written pages on two table paths and several regions: dup allocates the
 * child's mm, regions and tables before it touches the parent, so any
 * failure leaves the parent exactly as it was (writable, not shared). */
static void dup_setup(struct fi *f)
{
	env(f, 64, true);
	f->x = (smmu_addr_t)1 << 32;
	mapped_and_written(f, f->x, 6, RW);
	cr_assert_eq(smmu_mprotect(f->mm, f->x + 4 * PS, PS, SMMU_PROT_READ), 0);
	f->y = (smmu_addr_t)1 << 40;
	mapped_and_written(f, f->y, 2, RW);
	watch(f, f->x, 6);
	watch(f, f->y, 2);
}

static int dup_run(struct fi *f)
{
	struct smmu_mm *sentinel = (struct smmu_mm *)(uintptr_t)0x1;
	f->mm2 = sentinel;
	int err = smmu_mm_dup(f->mm, &f->mm2);
	if (err) {
		cr_assert_eq(f->mm2, sentinel, "*child written on error");
		f->mm2 = NULL;
	}
	return err;
}

/* The child reads the parent's data; a write on either side stays there. */
static void dup_done(struct fi *f)
{
	size_t free0 = smmu_pool_free_frames(f->pool);
	smmu_store64(f->cpu, f->x + pattern_offset(0), 1); /* copies */
	cr_assert_eq(smmu_pool_free_frames(f->pool), free0 - 1);
	cr_assert_eq(smmu_cpu_switch_mm(f->cpu, f->mm2), 0);
	for (size_t i = 0; i < 6; i++)
		cr_assert_eq(smmu_load64(f->cpu, f->x + i * PS + pattern_offset(i)), pattern_value(f->x, i),
			     "child page %zu", i);
	cr_assert_eq(smmu_load64(f->cpu, f->y + PS + pattern_offset(1)), pattern_value(f->y, 1));
	cr_assert_eq(smmu_try_store64(f->cpu, f->x + 4 * PS, 1), -EACCES, "a read-only page became writable in the child");
	cr_assert_eq(smmu_cpu_switch_mm(f->cpu, f->mm), 0);
}

/* The parent still works, writable in place, and a retry succeeds. */
static void dup_failed(struct fi *f)
{
	size_t free0 = smmu_pool_free_frames(f->pool);
	smmu_store64(f->cpu, f->x + pattern_offset(0), 1);
	cr_assert_eq(smmu_pool_free_frames(f->pool), free0, "a failed dup left a page shared");
	cr_assert_eq(dup_run(f), 0);
}

Test(fault_injection, mm_dup)
{
	walk(&(struct fi_op){.name = "mm_dup",
			     .setup = dup_setup,
			     .run = dup_run,
			     .done = dup_done,
			     .teardown = env_down,
			     .strict_live = true,
			     .failed = dup_failed});
}
