/* SPDX-License-Identifier: MIT */
/*
 * Several CPUs (one per thread) on one address space, none of them racing
 * with an unmap (softmmu.h rule 4): unmaps happen only after the threads
 * joined, or while they are offline (rule 5: coming online catches up).
 * Covers concurrent faults on the same fresh pages, atomics on shared
 * counters, a lock kept in emulated memory, private regions mapped and
 * protected concurrently, per-CPU trap handlers, thread exit while
 * registered, and the online/offline handshake.  Public API only.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <softmmu/softmmu.h>

#include "common.h"

#define NT 4

struct shared {
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	pthread_barrier_t bar;
	smmu_addr_t base;
	size_t pages;
	int rounds;
};

struct worker {
	struct shared *sh;
	int t;
	unsigned id;
	struct smmu_cpu *cpu;
	struct tfail tf;
	pthread_t th;
};

static void start_all(struct shared *sh, struct worker *w, void *(*fn)(void *))
{
	for (int t = 0; t < NT; t++) {
		w[t] = (struct worker){.sh = sh, .t = t};
		cr_assert_eq(pthread_create(&w[t].th, NULL, fn, &w[t]), 0);
	}
}

static void join_all(struct worker *w)
{
	for (int t = 0; t < NT; t++)
		cr_assert_eq(pthread_join(w[t].th, NULL), 0);
	for (int t = 0; t < NT; t++)
		cr_assert(!w[t].tf.failed, "thread %d: %s", t, w[t].tf.why);
}

static void shared_init(struct shared *sh, size_t frames, unsigned barrier_count)
{
	memset(sh, 0, sizeof(*sh));
	struct smmu_pool_config cfg = {.size = frames * PS, .flags = SMMU_POOL_POISON};
	cr_assert_eq(smmu_pool_create(&cfg, &sh->pool), 0);
	cr_assert_eq(smmu_mm_create(sh->pool, &sh->mm), 0);
	pthread_barrier_init(&sh->bar, NULL, barrier_count);
}

static void shared_fini(struct shared *sh)
{
	cr_assert_eq(smmu_mm_destroy(sh->mm), 0);
	cr_assert_eq(smmu_pool_free_frames(sh->pool), smmu_pool_frames(sh->pool), "frames leaked");
	cr_assert_eq(smmu_pool_destroy(sh->pool), 0);
	pthread_barrier_destroy(&sh->bar);
}

static int do_register(struct worker *w)
{
	int err = smmu_cpu_register(w->sh->mm, &w->cpu);
	TCHECK(&w->tf, err == 0, "register: %d", err);
	if (!err)
		w->id = smmu_cpu_id(w->cpu);
	return err == 0;
}

/* ------------------------------------------------------------ counters, lock, private regions */

#define ITERS 2000
#define LOCKED_ITERS 300
#define PRIV_PAGES 8
#define S H /* shared page: counters and the lock */
#define PRIV(t) (H + (smmu_addr_t)(1 + (t)) * 64 * PS)

static void *counters_thread(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	if (!do_register(w)) {
		pthread_barrier_wait(&sh->bar);
		return NULL;
	}
	struct smmu_cpu *cpu = w->cpu;
	/* Private region, mapped by this thread while the others run. */
	smmu_addr_t out = 0;
	int err = smmu_mmap(sh->mm, PRIV(w->t), PRIV_PAGES * PS, RW, 0, &out);
	TCHECK(&w->tf, err == 0 && out == PRIV(w->t), "mmap: %d 0x%llx", err, (unsigned long long)out);
	pthread_barrier_wait(&sh->bar);

	for (int i = 0; i < ITERS; i++) {
		smmu_fetch_add64(cpu, S, 1);
		smmu_fetch_add64(cpu, S + 8 * (1 + w->t), 1);
		if (i % 64 == 0) {
			/* private work in between */
			smmu_addr_t p = PRIV(w->t) + (size_t)(i / 64 % (PRIV_PAGES - 1)) * PS + 8 * (size_t)(i / 64);
			smmu_store64(cpu, p, ((uint64_t)w->t << 32) | (uint64_t)i);
		}
	}
	for (int i = 0; i < LOCKED_ITERS; i++) {
		/* A lock in emulated memory guards a plain read-modify-write. */
		while (smmu_cmpxchg64(cpu, S + 128, 0, 1 + w->id) != 0)
			sched_yield();
		uint64_t v = smmu_load64(cpu, S + 136);
		smmu_store64(cpu, S + 136, v + 1);
		uint64_t owner = smmu_xchg64(cpu, S + 128, 0);
		TCHECK(&w->tf, owner == 1 + w->id, "lock owner %llu", (unsigned long long)owner);
	}
	/* Bulk copies of the private region and of the shared page. */
	unsigned char buf[PS];
	memset(buf, 0x10 + w->t, sizeof(buf));
	TCHECK(&w->tf, smmu_write(cpu, PRIV(w->t) + 7 * PS, buf, PS) == 0, "write");
	unsigned char back[PS];
	TCHECK(&w->tf, smmu_read(cpu, PRIV(w->t) + 7 * PS, back, PS) == 0, "read");
	TCHECK(&w->tf, memcmp(buf, back, PS) == 0, "bulk round trip");
	TCHECK(&w->tf, smmu_read(cpu, S + PS, back, 64) == 0, "read shared R page");
	for (int i = 0; i < 64; i++)
		TCHECK(&w->tf, back[i] == 0, "shared read-only page byte %d", i);
	TCHECK(&w->tf, smmu_cpu_unregister(cpu) == 0, "unregister");
	return NULL;
}

Test(multicpu, shared_counters_lock_and_private_regions)
{
	struct shared sh;
	shared_init(&sh, 64, NT + 1);
	smmu_addr_t out;
	cr_assert_eq(smmu_mmap(sh.mm, S, PS, RW, SMMU_MAP_FIXED, &out), 0);
	cr_assert_eq(smmu_mmap(sh.mm, S + PS, PS, R, SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &out), 0);
	struct worker w[NT];
	start_all(&sh, w, counters_thread);
	pthread_barrier_wait(&sh.bar); /* every private region is mapped */
	join_all(w);

	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(sh.mm, &cpu), 0);
	cr_assert_eq(smmu_load64(cpu, S), (uint64_t)NT * ITERS, "fetch_add lost updates");
	for (int t = 0; t < NT; t++)
		cr_assert_eq(smmu_load64(cpu, S + 8 * (1 + t)), ITERS);
	cr_assert_eq(smmu_load64(cpu, S + 128), 0, "lock left held");
	cr_assert_eq(smmu_load64(cpu, S + 136), (uint64_t)NT * LOCKED_ITERS, "the lock did not exclude");
	for (int t = 0; t < NT; t++) {
		for (int i = 0; i < ITERS; i += 64) {
			smmu_addr_t p = PRIV(t) + (size_t)(i / 64 % (PRIV_PAGES - 1)) * PS + 8 * (size_t)(i / 64);
			cr_assert_eq(smmu_load64(cpu, p), ((uint64_t)t << 32) | (uint64_t)i, "thread %d i %d", t, i);
		}
		cr_assert_eq(smmu_load8(cpu, PRIV(t) + 8 * PS - 1), 0x10 + t);
	}
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	/* All joined: unmapping is safe now. */
	cr_assert_eq(smmu_munmap(sh.mm, 0, (size_t)1 << 47), 0);
	cr_assert_eq(smmu_pool_free_frames(sh.pool), smmu_pool_frames(sh.pool));
	shared_fini(&sh);
}

/* ------------------------------------------------------------ demand-zero races */

/* Phase 1: everybody reads every fresh page (all faulting at once) and
 * sees zero; phase 2: everybody writes its own slot of every page and
 * bumps the page's counter; phase 3: everybody sees every slot. */
static void *dz_barrier_thread(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	int ok = do_register(w);
	pthread_barrier_wait(&sh->bar);
	for (size_t k = 0; ok && k < sh->pages; k++) {
		size_t i = (k + (size_t)w->t * sh->pages / NT) % sh->pages; /* different starting points */
		for (int s = 0; s < NT; s++) {
			uint64_t v = 1;
			int err = smmu_try_load64(w->cpu, sh->base + i * PS + 8 * s, &v);
			TCHECK(&w->tf, err == 0 && v == 0, "page %zu slot %d: %d 0x%llx", i, s, err,
			       (unsigned long long)v);
		}
	}
	pthread_barrier_wait(&sh->bar);
	for (size_t k = 0; ok && k < sh->pages; k++) {
		size_t i = (sh->pages - 1 - k + (size_t)w->t * 7) % sh->pages;
		smmu_store64(w->cpu, sh->base + i * PS + 8 * w->t, 0xd0000000ull + i * 16 + w->t);
		smmu_fetch_add64(w->cpu, sh->base + i * PS + 512, 1);
	}
	pthread_barrier_wait(&sh->bar);
	for (size_t i = 0; ok && i < sh->pages; i++) {
		for (int s = 0; s < NT; s++)
			TCHECK(&w->tf, smmu_load64(w->cpu, sh->base + i * PS + 8 * s) == 0xd0000000ull + i * 16 + s,
			       "page %zu slot %d", i, s);
		TCHECK(&w->tf, smmu_load64(w->cpu, sh->base + i * PS + 512) == NT, "page %zu counter", i);
	}
	if (ok)
		smmu_cpu_unregister(w->cpu);
	return NULL;
}

Test(multicpu, demand_zero_race_all_see_zero_then_consistent)
{
	struct shared sh;
	shared_init(&sh, 80, NT);
	sh.pages = 64;
	cr_assert_eq(smmu_mmap(sh.mm, H, sh.pages * PS, RW, SMMU_MAP_FIXED, &sh.base), 0);
	struct worker w[NT];
	start_all(&sh, w, dz_barrier_thread);
	join_all(w);
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(sh.mm, &st), 0);
	cr_assert_eq(st.faults_demand_zero, sh.pages, "one demand-zero fault per page, whoever won");
	cr_assert_eq(smmu_pool_free_frames(sh.pool), 80 - sh.pages, "a lost fault race leaked a frame");
	cr_assert_eq(smmu_munmap(sh.mm, sh.base, sh.pages * PS), 0);
	shared_fini(&sh);
}

/* Writes race the faults themselves: no barrier between first touch and
 * write, so a loser that installed a second zeroed frame would lose the
 * winner's data.  Between rounds the CPUs go offline, the main thread
 * replaces the mapping at the same address, and coming online must drop
 * the stale entries. */
static void *dz_write_race_thread(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	int ok = do_register(w);
	for (int round = 0; round < sh->rounds; round++) {
		pthread_barrier_wait(&sh->bar); /* fresh mapping ready */
		if (ok)
			TCHECK(&w->tf, smmu_cpu_online(w->cpu) == 0, "online");
		for (size_t k = 0; ok && k < sh->pages; k++) {
			size_t i = (k * 5 + (size_t)w->t * 3) % sh->pages; /* 5 is coprime with the page count */
			smmu_store16(w->cpu, sh->base + i * PS + 2 * w->t + 1, (uint16_t)(0xa000 + round * 16 + w->t));
		}
		pthread_barrier_wait(&sh->bar);
		for (size_t i = 0; ok && i < sh->pages; i++)
			for (int s = 0; s < NT; s++) {
				uint16_t v = smmu_load16(w->cpu, sh->base + i * PS + 2 * s + 1);
				TCHECK(&w->tf, v == 0xa000 + round * 16 + s, "round %d page %zu slot %d: 0x%x", round,
				       i, s, v);
			}
		if (ok)
			TCHECK(&w->tf, smmu_cpu_offline(w->cpu) == 0, "offline");
		pthread_barrier_wait(&sh->bar); /* main may now unmap */
	}
	if (ok)
		smmu_cpu_unregister(w->cpu);
	return NULL;
}

Test(multicpu, demand_zero_race_with_writes_and_offline_remap)
{
	struct shared sh;
	shared_init(&sh, 40, NT + 1);
	sh.pages = 32;
	sh.rounds = 4;
	sh.base = H;
	struct worker w[NT];
	start_all(&sh, w, dz_write_race_thread);
	struct smmu_stats s0, s1;
	cr_assert_eq(smmu_stats_get(sh.mm, &s0), 0);
	for (int round = 0; round < sh.rounds; round++) {
		smmu_addr_t out;
		cr_assert_eq(smmu_mmap(sh.mm, H, sh.pages * PS, RW, SMMU_MAP_FIXED, &out), 0);
		pthread_barrier_wait(&sh.bar);
		pthread_barrier_wait(&sh.bar);
		pthread_barrier_wait(&sh.bar); /* every CPU is offline */
		cr_assert_eq(smmu_stats_get(sh.mm, &s1), 0);
		cr_assert_eq(s1.faults_demand_zero - s0.faults_demand_zero, sh.pages, "round %d", round);
		s0 = s1;
		cr_assert_eq(smmu_pool_free_frames(sh.pool), 40 - sh.pages);
		/* The next round's FIXED mmap replaces this one (old frames freed,
		 * poisoned); the last round's is unmapped after the join. */
	}
	join_all(w);
	cr_assert_eq(smmu_munmap(sh.mm, H, sh.pages * PS), 0);
	shared_fini(&sh);
}

/* ------------------------------------------------------------ concurrent mprotect of own regions */

static void *own_region_thread(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	if (!do_register(w))
		return NULL;
	struct smmu_cpu *cpu = w->cpu;
	smmu_addr_t base = PRIV(w->t), out;
	TCHECK(&w->tf, smmu_mmap(sh->mm, base, 4 * PS, RW, SMMU_MAP_FIXED_NOREPLACE, &out) == 0, "mmap");
	for (int round = 0; round < 50 && !w->tf.failed; round++) {
		uint64_t v;
		smmu_store64(cpu, base + (round % 4) * PS, (uint64_t)round);
		TCHECK(&w->tf, smmu_mprotect(sh->mm, base, 4 * PS, R) == 0, "mprotect R");
		TCHECK(&w->tf, smmu_try_store64(cpu, base + (round % 4) * PS, 1) == -EACCES, "store to R");
		TCHECK(&w->tf, smmu_load64(cpu, base + (round % 4) * PS) == (uint64_t)round, "round %d", round);
		TCHECK(&w->tf, smmu_mprotect(sh->mm, base + PS, PS, NONE) == 0, "mprotect NONE");
		TCHECK(&w->tf, smmu_try_load64(cpu, base + PS, &v) == -EACCES, "load from NONE");
		TCHECK(&w->tf, smmu_mprotect(sh->mm, base, 4 * PS, RW) == 0, "mprotect RW");
		struct smmu_region r;
		TCHECK(&w->tf, smmu_mm_find(sh->mm, base, &r) == 0 && r.start == base && r.end == base + 4 * PS,
		       "merged back");
	}
	TCHECK(&w->tf, smmu_cpu_unregister(cpu) == 0, "unregister");
	return NULL;
}

Test(multicpu, concurrent_mmap_and_mprotect_of_own_regions)
{
	struct shared sh;
	shared_init(&sh, 4 * NT + 4, NT);
	struct worker w[NT];
	start_all(&sh, w, own_region_thread);
	join_all(w);
	struct smmu_region r;
	smmu_addr_t a = 0;
	int n = 0;
	while (smmu_mm_find(sh.mm, a, &r) == 0) {
		cr_assert_eq(r.prot, RW);
		cr_assert_eq(r.end - r.start, 4 * PS);
		a = r.end;
		n++;
	}
	cr_assert_eq(n, NT);
	shared_fini(&sh); /* destroy returns every frame */
}

/* ------------------------------------------------------------ per-CPU trap handlers */

struct trap_rec {
	struct worker *w;
	int calls;
	int wrong;
};

static void own_handler(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	struct trap_rec *r = arg;
	r->calls++;
	if (cpu != r->w->cpu || f->cpu_id != r->w->id || smmu_cpu_self() != cpu)
		r->wrong++;
	smmu_addr_t out;
	if (smmu_mmap(r->w->sh->mm, f->addr & ~(smmu_addr_t)(PS - 1), PS, RW, SMMU_MAP_FIXED, &out))
		r->wrong++;
}

static void *trap_thread(void *arg)
{
	struct worker *w = arg;
	if (!do_register(w))
		return NULL;
	struct trap_rec rec = {.w = w};
	TCHECK(&w->tf, smmu_cpu_set_trap_handler(w->cpu, own_handler, &rec) == 0, "set handler");
	for (int i = 0; i < 16; i++) {
		smmu_addr_t p = PRIV(w->t) + (smmu_addr_t)i * 2 * PS;
		smmu_store32(w->cpu, p + 4, 0xfeed0000u + (unsigned)i);
		TCHECK(&w->tf, smmu_load32(w->cpu, p + 4) == 0xfeed0000u + (unsigned)i, "i %d", i);
	}
	TCHECK(&w->tf, rec.calls == 16, "calls %d", rec.calls);
	TCHECK(&w->tf, rec.wrong == 0, "wrong %d", rec.wrong);
	smmu_cpu_unregister(w->cpu);
	return NULL;
}

Test(multicpu, per_cpu_trap_handlers_map_concurrently)
{
	struct shared sh;
	shared_init(&sh, 16 * NT, NT);
	struct worker w[NT];
	start_all(&sh, w, trap_thread);
	join_all(w);
	unsigned ids[NT];
	for (int t = 0; t < NT; t++) {
		ids[t] = w[t].id;
		for (int u = 0; u < t; u++)
			cr_assert_neq(ids[t], ids[u], "two CPUs share id %u", ids[t]);
	}
	shared_fini(&sh);
}

/* ------------------------------------------------------------ identity, exit while registered */

static void *exit_registered_thread(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	if (do_register(w)) {
		TCHECK(&w->tf, smmu_cpu_self() == w->cpu, "self");
		TCHECK(&w->tf, smmu_cpu_mm(w->cpu) == sh->mm, "mm");
		for (size_t i = 0; i < sh->pages; i++)
			smmu_store8(w->cpu, sh->base + ((size_t)w->t * sh->pages + i) * PS, (uint8_t)(w->t + 1));
	}
	pthread_barrier_wait(&sh->bar); /* main looks at the live CPUs */
	pthread_barrier_wait(&sh->bar);
	return NULL; /* exits still registered: the destructor unregisters */
}

Test(multicpu, thread_exit_while_registered_unregisters)
{
	struct shared sh;
	shared_init(&sh, 64, NT + 1);
	sh.pages = 5;
	cr_assert_eq(smmu_mmap(sh.mm, H, NT * sh.pages * PS, RW, SMMU_MAP_FIXED, &sh.base), 0);
	struct worker w[NT];
	start_all(&sh, w, exit_registered_thread);
	pthread_barrier_wait(&sh.bar);
	/* Thread: any - identity of live CPUs from another thread. */
	for (int t = 0; t < NT; t++) {
		cr_assert_eq(smmu_cpu_id(w[t].cpu), w[t].id);
		cr_assert_eq(smmu_cpu_mm(w[t].cpu), sh.mm);
		for (int u = 0; u < t; u++)
			cr_assert_neq(w[t].id, w[u].id);
	}
	cr_assert_null(smmu_cpu_self());
	cr_assert_eq(smmu_mm_destroy(sh.mm), -EBUSY);
	cr_assert_eq(smmu_pool_destroy(sh.pool), -EBUSY);
	pthread_barrier_wait(&sh.bar);
	join_all(w);

	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(sh.mm, &st), 0);
	cr_assert_eq(st.faults_demand_zero, NT * sh.pages, "departed CPUs' counters are kept");
	cr_assert_eq(smmu_pool_free_frames(sh.pool), 64 - NT * sh.pages, "exited CPUs' caches not returned");
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(sh.mm, &cpu), 0);
	for (int t = 0; t < NT; t++)
		for (size_t i = 0; i < sh.pages; i++)
			cr_assert_eq(smmu_load8(cpu, sh.base + ((size_t)t * sh.pages + i) * PS), t + 1);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	shared_fini(&sh); /* mm_destroy succeeds: no CPU left */
}

/* ------------------------------------------------------------ online / offline */

struct onoff_ctx {
	struct smmu_mm *mm;
	pthread_barrier_t bar;
	struct tfail tf;
	uint64_t flushes_without, flushes_with;
};

/* TLB flushes of any kind (catching up replays the ranges flushed
 * meanwhile, or flushes everything when far behind). */
static uint64_t my_flush_full(struct smmu_mm *mm)
{
	struct smmu_stats st;
	smmu_stats_get(mm, &st);
	return st.flush_full + st.flush_range;
}

static void *onoff_thread(void *arg)
{
	struct onoff_ctx *c = arg;
	struct smmu_cpu *cpu;
	if (smmu_cpu_register(c->mm, &cpu)) {
		c->tf.failed = 1;
		pthread_barrier_wait(&c->bar);
		pthread_barrier_wait(&c->bar);
		return NULL;
	}
	smmu_store64(cpu, H, 1);
	smmu_store64(cpu, H + PS, 2);
	/* Nothing happened while offline: still correct. */
	TCHECK(&c->tf, smmu_cpu_offline(cpu) == 0, "offline");
	TCHECK(&c->tf, smmu_cpu_online(cpu) == 0, "online");
	TCHECK(&c->tf, smmu_load64(cpu, H) == 1, "value");
	/* Offline while the main thread changes the mm. */
	TCHECK(&c->tf, smmu_cpu_offline(cpu) == 0, "offline");
	uint64_t before = my_flush_full(c->mm);
	pthread_barrier_wait(&c->bar);
	pthread_barrier_wait(&c->bar);
	TCHECK(&c->tf, smmu_cpu_online(cpu) == 0, "online");
	c->flushes_with = my_flush_full(c->mm) - before;
	uint64_t v = 0;
	TCHECK(&c->tf, smmu_try_store64(cpu, H, 5) == -EACCES, "write-protected while offline");
	TCHECK(&c->tf, smmu_try_load64(cpu, H, &v) == 0 && v == 1, "value 0x%llx", (unsigned long long)v);
	TCHECK(&c->tf, smmu_try_load64(cpu, H + PS, &v) == -EFAULT, "unmapped while offline");
	/* Offline and online are owner-only but otherwise always fine. */
	TCHECK(&c->tf, smmu_cpu_online(cpu) == 0, "online twice");
	TCHECK(&c->tf, smmu_cpu_unregister(cpu) == 0, "unregister");
	return NULL;
}

Test(multicpu, offline_online_catch_up)
{
	struct smmu_pool_config cfg = {.size = 8 * PS, .flags = SMMU_POOL_POISON};
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
	smmu_addr_t out;
	cr_assert_eq(smmu_mmap(mm, H, 2 * PS, RW, SMMU_MAP_FIXED, &out), 0);
	struct onoff_ctx c = {.mm = mm};
	pthread_barrier_init(&c.bar, NULL, 2);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, onoff_thread, &c), 0);
	pthread_barrier_wait(&c.bar);
	cr_assert_eq(smmu_mprotect(mm, H, PS, R), 0);
	cr_assert_eq(smmu_munmap(mm, H + PS, PS), 0);
	pthread_barrier_wait(&c.bar);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert(!c.tf.failed, "%s", c.tf.why);
	cr_assert_geq(c.flushes_with, 1, "coming online after mm flushes did not flush");
	pthread_barrier_destroy(&c.bar);
	cr_assert_eq(smmu_mm_destroy(mm), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), smmu_pool_frames(pool));
	cr_assert_eq(smmu_pool_destroy(pool), 0);
}

/* ------------------------------------------------------------ adding access under concurrency */

/* CPUs keep trying a page whose protection only grows (NONE -> R -> RW)
 * while the main thread, no CPU, changes it: before, they see the error;
 * after, the data; never anything else.  Rule 4: adding access is safe
 * under concurrency (the next access misses and refills). */
#define UP_PAGES 4

static void *upgrade_thread(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	int ok = do_register(w);
	pthread_barrier_wait(&sh->bar);
	if (ok) {
		/* Wait for reads to work, checking every intermediate answer. */
		for (size_t i = 0; i < UP_PAGES && !w->tf.failed; i++) {
			for (long spins = 0;; spins++) {
				uint64_t v = 0;
				int err = smmu_try_load64(w->cpu, sh->base + i * PS + 8 * w->t, &v);
				if (err == 0) {
					TCHECK(&w->tf, v == 0xabc00000ull + i * 16 + w->t, "page %zu: 0x%llx", i,
					       (unsigned long long)v);
					break;
				}
				TCHECK(&w->tf, err == -EACCES, "page %zu: %d", i, err);
				if (w->tf.failed)
					break;
				if (spins % 64 == 63)
					sched_yield();
			}
		}
		/* Then for writes to work. */
		for (size_t i = 0; i < UP_PAGES && !w->tf.failed; i++) {
			for (long spins = 0;; spins++) {
				int err = smmu_try_store64(w->cpu, sh->base + i * PS + 8 * w->t,
							   0xdef00000ull + i * 16 + w->t);
				if (err == 0)
					break;
				TCHECK(&w->tf, err == -EACCES, "page %zu: %d", i, err);
				if (w->tf.failed)
					break;
				uint64_t v = 0;
				err = smmu_try_load64(w->cpu, sh->base + i * PS + 8 * w->t, &v);
				TCHECK(&w->tf, err == 0 && v == 0xabc00000ull + i * 16 + w->t,
				       "read-only page %zu: %d 0x%llx", i, err, (unsigned long long)v);
				if (spins % 64 == 63)
					sched_yield();
			}
		}
	}
	pthread_barrier_wait(&sh->bar);
	if (ok)
		smmu_cpu_unregister(w->cpu);
	return NULL;
}

Test(multicpu, adding_access_under_concurrency)
{
	struct shared sh;
	shared_init(&sh, 16, NT + 1);
	cr_assert_eq(smmu_mmap(sh.mm, H, UP_PAGES * PS, RW, SMMU_MAP_FIXED, &sh.base), 0);
	/* Fill the pages before any worker exists, then close them. */
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(sh.mm, &cpu), 0);
	for (size_t i = 0; i < UP_PAGES; i++)
		for (int t = 0; t < NT; t++)
			smmu_store64(cpu, H + i * PS + 8 * t, 0xabc00000ull + i * 16 + t);
	cr_assert_eq(smmu_mprotect(sh.mm, H, UP_PAGES * PS, NONE), 0);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);

	struct worker w[NT];
	start_all(&sh, w, upgrade_thread);
	pthread_barrier_wait(&sh.bar);
	for (size_t i = 0; i < UP_PAGES; i++) {
		cr_assert_eq(smmu_mprotect(sh.mm, H + i * PS, PS, R), 0);
		sched_yield();
	}
	for (size_t i = 0; i < UP_PAGES; i++) {
		cr_assert_eq(smmu_mprotect(sh.mm, H + i * PS, PS, RW), 0);
		sched_yield();
	}
	pthread_barrier_wait(&sh.bar);
	join_all(w);
	cr_assert_eq(smmu_cpu_register(sh.mm, &cpu), 0);
	for (size_t i = 0; i < UP_PAGES; i++)
		for (int t = 0; t < NT; t++)
			cr_assert_eq(smmu_load64(cpu, H + i * PS + 8 * t), 0xdef00000ull + i * 16 + t);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	shared_fini(&sh);
}

/* ------------------------------------------------------------ exhaustion under concurrency */

/* Every CPU wants more frames than the pool has, on its own pages: in the
 * end every frame is mapped exactly once (none stranded in a CPU's cache
 * while another CPU got -ENOMEM), and nothing else but -ENOMEM is seen. */
#define EX_FRAMES 64
#define EX_ROUNDS 5

static void *exhaust_thread(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	int ok = do_register(w);
	for (int round = 0; round < EX_ROUNDS; round++) {
		pthread_barrier_wait(&sh->bar); /* fresh mapping */
		if (ok)
			TCHECK(&w->tf, smmu_cpu_online(w->cpu) == 0, "online");
		for (size_t i = 0; ok && i < EX_FRAMES; i++) {
			smmu_addr_t p = PRIV(w->t) + i * PS;
			int err = smmu_try_store64(w->cpu, p, 0xe0000000ull + (uint64_t)w->t * 1000 + i);
			TCHECK(&w->tf, err == 0 || err == -ENOMEM, "page %zu: %d", i, err);
		}
		if (ok)
			TCHECK(&w->tf, smmu_cpu_offline(w->cpu) == 0, "offline");
		pthread_barrier_wait(&sh->bar); /* main counts and unmaps */
	}
	if (ok)
		smmu_cpu_unregister(w->cpu);
	return NULL;
}

Test(multicpu, exhaustion_exact_under_concurrency)
{
	struct shared sh;
	shared_init(&sh, EX_FRAMES, NT + 1);
	struct worker w[NT];
	start_all(&sh, w, exhaust_thread);
	struct smmu_stats s0, s1;
	cr_assert_eq(smmu_stats_get(sh.mm, &s0), 0);
	for (int round = 0; round < EX_ROUNDS; round++) {
		for (int t = 0; t < NT; t++) {
			smmu_addr_t out;
			cr_assert_eq(smmu_mmap(sh.mm, PRIV(t), EX_FRAMES * PS, RW, SMMU_MAP_FIXED, &out), 0);
		}
		pthread_barrier_wait(&sh.bar);
		pthread_barrier_wait(&sh.bar); /* every CPU is done and offline */
		cr_assert_eq(smmu_stats_get(sh.mm, &s1), 0);
		cr_assert_eq(s1.faults_demand_zero - s0.faults_demand_zero, EX_FRAMES,
			     "round %d: frames left unused while CPUs got -ENOMEM", round);
		cr_assert_eq(smmu_pool_free_frames(sh.pool), 0);
		s0 = s1;
		for (int t = 0; t < NT; t++)
			cr_assert_eq(smmu_munmap(sh.mm, PRIV(t), EX_FRAMES * PS), 0);
		cr_assert_eq(smmu_pool_free_frames(sh.pool), EX_FRAMES);
	}
	join_all(w);
	shared_fini(&sh);
}

/* ------------------------------------------------------------ page-table pages and concurrent walks */

/*
 * BUG: CPU B only ever accesses an address that is never mapped; CPU A
 * maps, touches and unmaps its own page in the same 1 GiB (so A's fault
 * creates the level-1 and leaf tables B's walk goes through, and A's unmap
 * empties and frees them).  Nobody unmaps memory another CPU uses, which
 * softmmu.h rule 4 allows.  But the gather frees the emptied table pages
 * right after flushing only A's own TLB, while B's lock-free walk
 * (smmu__pt_lookup on the TLB-miss path) may still be reading them:
 * a use-after-free of page-table memory.  DESIGN.md section 3: "Page-table
 * pages are freed through the gather, after the same shootdown or grace
 * period as data frames: a concurrent walker may be reading them."
 * The plain build usually gets away with it (the freed block is reused as
 * another table); AddressSanitizer reports heap-use-after-free and
 * ThreadSanitizer a race with the reallocation, within these 20000 rounds
 * in practice.
 */
#define WALK_ROUNDS 20000
#define WALK_A (H)
#define WALK_B (H + ((smmu_addr_t)64 << 20)) /* same 1 GiB, another 2 MiB */

struct walk_ctx {
	struct smmu_mm *mm;
	atomic_int stop;
	struct tfail tfa, tfb; /* one per thread */
	long b_iters;
};

static void *walk_unmapper(void *arg)
{
	struct walk_ctx *c = arg;
	struct smmu_cpu *cpu;
	if (smmu_cpu_register(c->mm, &cpu)) {
		c->tfa.failed = 1;
		atomic_store(&c->stop, 1);
		return NULL;
	}
	for (int i = 0; i < WALK_ROUNDS && !c->tfa.failed && !atomic_load(&c->stop); i++) {
		smmu_addr_t out;
		TCHECK(&c->tfa, smmu_mmap(c->mm, WALK_A, PS, RW, SMMU_MAP_FIXED, &out) == 0, "mmap");
		smmu_store8(cpu, WALK_A, 1);
		TCHECK(&c->tfa, smmu_munmap(c->mm, WALK_A, PS) == 0, "munmap");
	}
	atomic_store(&c->stop, 1);
	smmu_cpu_unregister(cpu);
	return NULL;
}

static void *walk_walker(void *arg)
{
	struct walk_ctx *c = arg;
	struct smmu_cpu *cpu;
	if (smmu_cpu_register(c->mm, &cpu))
		return NULL;
	while (!atomic_load(&c->stop)) {
		uint8_t v = 0x77;
		int err = smmu_try_load8(cpu, WALK_B, &v);
		if (err != -EFAULT || v != 0x77) {
			TCHECK(&c->tfb, 0, "a never-mapped address gave %d, 0x%x", err, v);
			atomic_store(&c->stop, 1);
		}
		c->b_iters++;
	}
	smmu_cpu_unregister(cpu);
	return NULL;
}

Test(multicpu, walk_while_another_cpu_unmaps_its_own_region)
{
	struct walk_ctx c = {0};
	struct smmu_pool_config cfg = {.size = 8 * PS};
	struct smmu_pool *pool;
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &c.mm), 0);
	pthread_t a, b;
	cr_assert_eq(pthread_create(&b, NULL, walk_walker, &c), 0);
	cr_assert_eq(pthread_create(&a, NULL, walk_unmapper, &c), 0);
	cr_assert_eq(pthread_join(a, NULL), 0);
	cr_assert_eq(pthread_join(b, NULL), 0);
	cr_assert(!c.tfa.failed, "unmapper: %s", c.tfa.why);
	cr_assert(!c.tfb.failed, "walker: %s", c.tfb.why);
	cr_assert_eq(smmu_mm_destroy(c.mm), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), smmu_pool_frames(pool));
	cr_assert_eq(smmu_pool_destroy(pool), 0);
}
