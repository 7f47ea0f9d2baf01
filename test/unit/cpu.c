/* SPDX-License-Identifier: MIT */
/*
 * White-box tests of CPUs and the access slow path (lib/cpu.c,
 * lib/fault.c): registration and the frame cache, the thread-exit
 * destructor, online catch-up with the flush generation, accessed/dirty
 * bits and write tags, granule fills for large pages, concurrent demand
 * faults on the same pages, and the fatal paths.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
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

TestSuite(cpu, .timeout = 60);

#define RW (SMMU_PROT_READ | SMMU_PROT_WRITE)

struct env {
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	size_t nframes, page_size;
	long live0;
};

static void env_init(struct env *e, size_t nframes, size_t page_size)
{
	e->live0 = smmu__alloc_live();
	e->nframes = nframes;
	e->page_size = page_size;
	struct smmu_pool_config cfg = {.size = nframes * page_size, .page_size = page_size, .flags = SMMU_POOL_POISON};
	cr_assert_eq(smmu_pool_create(&cfg, &e->pool), 0);
	cr_assert_eq(smmu_mm_create(e->pool, &e->mm), 0);
}

static void env_fini(struct env *e)
{
	cr_assert_eq(smmu_mm_destroy(e->mm), 0);
	cr_assert_eq(smmu_pool_free_frames(e->pool), e->nframes, "frames leaked");
	cr_assert_eq(smmu_pool_destroy(e->pool), 0);
	cr_assert_eq(smmu__alloc_live(), e->live0, "leak: %ld blocks", smmu__alloc_live() - e->live0);
}

static struct smmu_stats stats(struct smmu_mm *mm)
{
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(mm, &st), 0);
	return st;
}

static smmu_pte_t pte_at(struct smmu_mm *mm, smmu_addr_t a)
{
	_Atomic smmu_pte_t *slot = smmu__pt_lookup(mm->root, mm->page_shift, a);
	return slot ? atomic_load(slot) : 0;
}

static const struct smmu_tlb_entry *tlbe(struct smmu_cpu *cpu, smmu_addr_t a)
{
	return smmu__tlb_entry(cpu, a);
}

/* ------------------------------------------------------------------- */

Test(cpu, register_attaches_cache_unregister_returns_it)
{
	struct env e;
	env_init(&e, 256, 4096);
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(e.mm, &cpu), 0);
	struct smmu__cpu *c = smmu__cpu_of(cpu);
	cr_assert_eq(smmu__cpu_self(), c);
	cr_assert_eq(e.pool->caches, &c->pcache);
	cr_assert_eq(e.mm->nr_cpus, 1);
	cr_assert_eq(e.mm->cpus, c);
	cr_assert_eq(c->tlb->entries, SMMU_TLB_DEFAULT_ENTRIES);
	cr_assert_eq(smmu_cpu_register(e.mm, &cpu), -EBUSY);
	cr_assert_eq(smmu_mm_destroy(e.mm), -EBUSY);

	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e.mm, 0, 4 * 4096, RW, 0, &a), 0);
	smmu_store8(cpu, a, 1);
	/* The fault took a chain into the CPU's cache. */
	cr_assert_eq(c->pcache.count, SMMU_POOL_CHAIN - 1);
	cr_assert_eq(smmu_pool_free_frames(e.pool), 255);
	struct smmu_stats st = stats(e.mm);
	cr_assert_eq(st.faults_demand_zero, 1);
	cr_assert_geq(st.tlb_fills, 1);

	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	cr_assert_null(smmu_cpu_self());
	cr_assert_null(e.pool->caches);
	cr_assert_eq(e.mm->nr_cpus, 0);
	cr_assert_eq(e.pool->nfree_shared, 255, "the cache's frames went back to the shared list");
	struct smmu_stats st2 = stats(e.mm);
	cr_assert(memcmp(&st, &st2, sizeof(st)) == 0, "a departed CPU's counters are kept");
	env_fini(&e);
}

static void *exit_registered(void *arg)
{
	struct env *e = arg;
	struct smmu_cpu *cpu;
	smmu_addr_t a;
	if (smmu_cpu_register(e->mm, &cpu))
		return (void *)1;
	if (smmu_mmap(e->mm, 0, 8 * 4096, RW, 0, &a))
		return (void *)2;
	for (int i = 0; i < 8; i++)
		smmu_store32(cpu, a + (smmu_addr_t)i * 4096, (uint32_t)i);
	return NULL; /* exits registered */
}

Test(cpu, thread_exit_unregisters)
{
	struct env e;
	env_init(&e, 256, 4096);
	pthread_t t;
	void *ret;
	cr_assert_eq(pthread_create(&t, NULL, exit_registered, &e), 0);
	pthread_join(t, &ret);
	cr_assert_null(ret);
	cr_assert_eq(e.mm->nr_cpus, 0, "the exit destructor unregistered the CPU");
	cr_assert_null(e.pool->caches);
	cr_assert_eq(smmu_pool_free_frames(e.pool), 248);
	cr_assert_eq(stats(e.mm).faults_demand_zero, 8);
	env_fini(&e);
}

Test(cpu, accessed_dirty_and_write_tag)
{
	struct env e;
	env_init(&e, 64, 4096);
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(e.mm, &cpu), 0);
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e.mm, 0, 2 * 4096, RW, SMMU_MAP_POPULATE, &a), 0);
	smmu_pte_t p = pte_at(e.mm, a);
	cr_assert_eq(p & (SMMU_PTE_ACCESSED | SMMU_PTE_DIRTY), 0, "populated but untouched");
	/* A read sets accessed only, and a clean page gets no write tag. */
	cr_assert_eq(smmu_load64(cpu, a), 0);
	p = pte_at(e.mm, a);
	cr_assert_eq(p & (SMMU_PTE_ACCESSED | SMMU_PTE_DIRTY), SMMU_PTE_ACCESSED);
	cr_assert_eq(tlbe(cpu, a)->read_tag, a);
	cr_assert_eq(tlbe(cpu, a)->write_tag, SMMU_TLB_INVALID);
	/* The first write takes the slow path and sets dirty. */
	uint64_t misses = stats(e.mm).tlb_misses;
	smmu_store64(cpu, a, 5);
	cr_assert_eq(stats(e.mm).tlb_misses, misses + 1);
	p = pte_at(e.mm, a);
	cr_assert_eq(p & (SMMU_PTE_ACCESSED | SMMU_PTE_DIRTY), SMMU_PTE_ACCESSED | SMMU_PTE_DIRTY);
	cr_assert_eq(tlbe(cpu, a)->write_tag, a);
	/* Hits from now on. */
	smmu_store64(cpu, a + 8, 6);
	cr_assert_eq(smmu_load64(cpu, a), 5);
	cr_assert_eq(stats(e.mm).tlb_misses, misses + 1);
	/* Read-only mapping: a read fills, a write is refused. */
	cr_assert_eq(smmu_mprotect(e.mm, a, 4096, SMMU_PROT_READ), 0);
	cr_assert_eq(tlbe(cpu, a)->read_tag, SMMU_TLB_INVALID, "reduced: flushed");
	cr_assert_eq(smmu_load64(cpu, a), 5);
	cr_assert_eq(tlbe(cpu, a)->write_tag, SMMU_TLB_INVALID, "dirty but read-only: no write tag");
	cr_assert_eq(smmu_try_store64(cpu, a, 1), -EACCES);
	/* PROTNONE keeps the frame and refuses both. */
	cr_assert_eq(smmu_mprotect(e.mm, a, 4096, SMMU_PROT_NONE), 0);
	uint64_t v;
	cr_assert_eq(smmu_try_load64(cpu, a, &v), -EACCES);
	cr_assert(pte_at(e.mm, a) & SMMU_PTE_PROTNONE);
	cr_assert_eq(smmu_mprotect(e.mm, a, 4096, RW), 0);
	cr_assert_eq(smmu_load64(cpu, a), 5, "contents survive PROTNONE");
	cr_assert_eq(tlbe(cpu, a)->write_tag, a, "still dirty: writable at once");
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	env_fini(&e);
}

Test(cpu, large_pages_fill_per_granule)
{
	struct env e;
	env_init(&e, 16, 16384);
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(e.mm, &cpu), 0);
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e.mm, (smmu_addr_t)1 << 32, 2 * 16384, RW, SMMU_MAP_FIXED, &a), 0);
	smmu_store64(cpu, a + 12288 + 8, 0xabc);
	smmu_store64(cpu, a + 8, 0xdef);
	smmu_pte_t p = pte_at(e.mm, a);
	char *host = smmu__frame_host(e.pool, smmu__pte_frame(p));
	cr_assert_eq(*(uint64_t *)(host + 12288 + 8), 0xabc);
	cr_assert_eq(*(uint64_t *)(host + 8), 0xdef);
	for (smmu_addr_t g = a; g < a + 16384; g += 4096) {
		bool filled = g == a || g == a + 12288;
		cr_assert_eq(tlbe(cpu, g)->read_tag == g, filled, "granule %#llx", (unsigned long long)g);
		if (filled)
			cr_assert_eq(g + tlbe(cpu, g)->addend, (uintptr_t)host + (g - a));
	}
	/* A bulk copy across the page boundary. */
	char buf[20000];
	memset(buf, 0x3c, sizeof(buf));
	cr_assert_eq(smmu_write(cpu, a + 10000, buf, sizeof(buf)), 0);
	char back[20000];
	cr_assert_eq(smmu_read(cpu, a + 10000, back, sizeof(back)), 0);
	cr_assert(memcmp(buf, back, sizeof(buf)) == 0);
	/* Unmapping the page drops every granule of it. */
	cr_assert_eq(smmu_munmap(e.mm, a, 16384), 0);
	for (smmu_addr_t g = a; g < a + 16384; g += 4096)
		cr_assert_neq(tlbe(cpu, g)->read_tag, g);
	uint64_t v;
	cr_assert_eq(smmu_try_load64(cpu, a + 12288, &v), -EFAULT);
	cr_assert_eq(smmu_load64(cpu, a + 16384 + 4096), *(uint64_t *)(buf + 16384 + 4096 - 10000));
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	env_fini(&e);
}

/* ------------------------------------------------- online catch-up */

struct unmapper {
	struct smmu_mm *mm;
	smmu_addr_t a;
	size_t len;
	int err;
};

static void *do_munmap(void *arg)
{
	struct unmapper *u = arg;
	u->err = smmu_munmap(u->mm, u->a, u->len);
	return NULL;
}

Test(cpu, online_catches_up_with_flush_generation)
{
	struct env e;
	env_init(&e, 64, 4096);
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(e.mm, &cpu), 0);
	struct smmu__cpu *c = smmu__cpu_of(cpu);
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e.mm, 0, 8 * 4096, RW, 0, &a), 0);
	smmu_store8(cpu, a, 1);
	smmu_store8(cpu, a + 4096, 1);
	/* Offline and back with nothing flushed meanwhile: entries stay. */
	cr_assert_eq(smmu_cpu_offline(cpu), 0);
	cr_assert(!c->online);
	cr_assert_eq(smmu_cpu_offline(cpu), 0, "twice is harmless");
	cr_assert_eq(smmu_cpu_online(cpu), 0);
	cr_assert_eq(smmu_cpu_online(cpu), 0);
	cr_assert_eq(tlbe(cpu, a)->read_tag, a);
	cr_assert_eq(c->seen_gen, atomic_load(&e.mm->flush_gen));
	/* Offline while another thread unmaps elsewhere: no signal reaches an
	 * offline CPU; coming online replays the logged range (only). */
	smmu_store8(cpu, a + 4 * 4096, 1);
	cr_assert_eq(smmu_cpu_offline(cpu), 0);
	uint64_t gen = atomic_load(&e.mm->flush_gen);
	struct unmapper u = {e.mm, a + 4 * 4096, 4096, -1};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, do_munmap, &u), 0);
	pthread_join(t, NULL);
	cr_assert_eq(u.err, 0);
	cr_assert_eq(atomic_load(&e.mm->flush_gen), gen + 1);
	cr_assert_eq(tlbe(cpu, a + 4 * 4096)->read_tag, a + 4 * 4096, "an offline CPU is not signalled");
	cr_assert_eq(smmu_cpu_online(cpu), 0);
	cr_assert_neq(tlbe(cpu, a + 4 * 4096)->read_tag, a + 4 * 4096, "online flushed the stale entry");
	cr_assert_eq(tlbe(cpu, a)->read_tag, a, "and only it: the log has the range");
	cr_assert_eq(c->seen_gen, gen + 1);
	uint8_t v;
	cr_assert_eq(smmu_try_load8(cpu, a + 4 * 4096, &v), -EFAULT);
	cr_assert_eq(smmu_load8(cpu, a), 1);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	env_fini(&e);
}

/* ------------------------------------------------------- fatal paths */

static void offline_access(void)
{
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	smmu_addr_t a;
	struct smmu_pool_config cfg = {.size = 16 * 4096};
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	cr_assert_eq(smmu_mmap(mm, 0, 4096, RW, 0, &a), 0);
	cr_assert_eq(smmu_cpu_offline(cpu), 0);
	smmu_store8(cpu, a, 1); /* a miss while offline: fatal */
}

Test(cpu, access_while_offline_aborts, .signal = SIGABRT)
{
	offline_access();
}

Test(cpu, default_trap_aborts, .signal = SIGABRT)
{
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	struct smmu_pool_config cfg = {.size = 16 * 4096};
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	(void)smmu_load32(cpu, 0x20000); /* unmapped */
}

/* -------------------------------------------------------- foreign thread */

struct foreign {
	struct smmu_cpu *cpu;
	int flush_all, flush_range, offline, trap, unreg, rd;
};

static void *use_foreign(void *arg)
{
	struct foreign *f = arg;
	char b;
	f->flush_all = smmu_tlb_flush_all(f->cpu);
	f->flush_range = smmu_tlb_flush_range(f->cpu, 0x10000, 4096);
	f->offline = smmu_cpu_offline(f->cpu);
	f->trap = smmu_cpu_set_trap_handler(f->cpu, NULL, NULL);
	f->unreg = smmu_cpu_unregister(f->cpu);
	f->rd = smmu_read(f->cpu, 0x10000, &b, 1);
	return NULL;
}

Test(cpu, foreign_thread_gets_eperm)
{
	struct env e;
	env_init(&e, 16, 4096);
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(e.mm, &cpu), 0);
	struct foreign f = {.cpu = cpu};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, use_foreign, &f), 0);
	pthread_join(t, NULL);
	cr_assert_eq(f.flush_all, -EPERM);
	cr_assert_eq(f.flush_range, -EPERM);
	cr_assert_eq(f.offline, -EPERM);
	cr_assert_eq(f.trap, -EPERM);
	cr_assert_eq(f.unreg, -EPERM);
	cr_assert_eq(f.rd, -EPERM);
	cr_assert(smmu__cpu_of(cpu)->online);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	env_fini(&e);
}

/* ------------------------------------------- concurrent demand faults */

#define DF_THREADS 4
#define DF_PAGES 64
#define DF_ROUNDS 5

struct df {
	struct smmu_mm *mm;
	smmu_addr_t a;
	pthread_barrier_t go;
	atomic_int errors;
};

struct df_arg {
	struct df *d;
	int id;
};

static void *df_main(void *p)
{
	struct df_arg *arg = p;
	struct df *d = arg->d;
	struct smmu_cpu *cpu;
	if (smmu_cpu_register(d->mm, &cpu)) {
		atomic_fetch_add(&d->errors, 1);
		pthread_barrier_wait(&d->go);
		return NULL;
	}
	pthread_barrier_wait(&d->go);
	/* Every thread faults the same pages, in a different order. */
	for (int i = 0; i < DF_PAGES; i++) {
		int pg = (i * (2 * arg->id + 1) + arg->id * 7) % DF_PAGES;
		smmu_addr_t at = d->a + (smmu_addr_t)pg * 4096 + (smmu_addr_t)arg->id * 8;
		if (smmu_try_store64(cpu, at, (uint64_t)(arg->id + 1) << 32 | (uint64_t)pg))
			atomic_fetch_add(&d->errors, 1);
	}
	smmu_cpu_unregister(cpu);
	return NULL;
}

Test(cpu, concurrent_demand_faults_one_frame_per_page)
{
	struct env e;
	env_init(&e, 512, 4096);
	for (int round = 0; round < DF_ROUNDS; round++) {
		struct df d = {.mm = e.mm};
		/* Across a 2 MiB boundary so two leaf tables are raced for too. */
		cr_assert_eq(smmu_mmap(e.mm, ((smmu_addr_t)(round + 1) << 30) - 32 * 4096, DF_PAGES * 4096, RW,
				       SMMU_MAP_FIXED, &d.a),
			     0);
		long live = smmu__alloc_live();
		pthread_barrier_init(&d.go, NULL, DF_THREADS);
		pthread_t t[DF_THREADS];
		struct df_arg args[DF_THREADS];
		for (int i = 0; i < DF_THREADS; i++) {
			args[i] = (struct df_arg){&d, i};
			cr_assert_eq(pthread_create(&t[i], NULL, df_main, &args[i]), 0);
		}
		for (int i = 0; i < DF_THREADS; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&d.go);
		cr_assert_eq(atomic_load(&d.errors), 0);
		cr_assert_null(e.pool->caches);
		cr_assert_eq(smmu_pool_free_frames(e.pool), e.nframes - DF_PAGES,
			     "round %d: lost races leaked or double-mapped frames", round);
		/* The range straddles a 1 GiB boundary: a level-2 table, two
		 * level-1 tables and two leaf tables (all freed by the munmap of
		 * the round before). */
		cr_assert_eq(smmu__alloc_live(), live + 5, "round %d: tables leaked", round);
		for (int pg = 0; pg < DF_PAGES; pg++) {
			smmu_pte_t p = pte_at(e.mm, d.a + (smmu_addr_t)pg * 4096);
			cr_assert(p & SMMU_PTE_PRESENT);
			const uint64_t *h = smmu__frame_host(e.pool, smmu__pte_frame(p));
			for (int id = 0; id < DF_THREADS; id++)
				cr_assert_eq(h[id], (uint64_t)(id + 1) << 32 | (uint64_t)pg,
					     "round %d page %d: thread %d's store lost", round, pg, id);
		}
		cr_assert_eq(smmu_munmap(e.mm, d.a, DF_PAGES * 4096), 0);
		cr_assert_eq(smmu_pool_free_frames(e.pool), e.nframes);
	}
	env_fini(&e);
}
