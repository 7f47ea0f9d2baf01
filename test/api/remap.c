/* SPDX-License-Identifier: MIT */
/*
 * smmu_mremap / smmu_mremap_batch: translations move without copying
 * frames, with their protection and fault handlers; the sources stop
 * working for every CPU (local and remote, in every shootdown mode); one
 * gather and one shootdown per call; all or nothing on bad input;
 * subscribers see SMMU_NOTIFY_REMAP.  Public API only.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <softmmu/softmmu.h>

#include "common.h"

#define MAGIC 0x5eed5eed5eed5eedull /* the hammers' page contents */

static smmu_addr_t map(struct env *e, smmu_addr_t at, size_t len, int prot)
{
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e->mm, at, len, prot, SMMU_MAP_FIXED_NOREPLACE, &a), 0);
	return a;
}

static void stamp(struct env *e, smmu_addr_t a, size_t pages, uint64_t tag)
{
	for (size_t i = 0; i < pages; i++)
		smmu_store64(e->cpu, a + i * PS + 8, tag + i);
}

static void check_stamps(struct env *e, smmu_addr_t a, size_t pages, uint64_t tag)
{
	for (size_t i = 0; i < pages; i++)
		cr_assert_eq(smmu_load64(e->cpu, a + i * PS + 8), tag + i, "page %zu", i);
}

static struct smmu_stats stats(struct env *e)
{
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(e->mm, &st), 0);
	return st;
}

Test(remap, moves_frames_not_copies)
{
	struct env e;
	env_init(&e, 512, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	smmu_addr_t a = map(&e, H, 8 * PS, RW);
	stamp(&e, a, 6, 100); /* pages 6, 7 stay not present */
	size_t free_before = smmu_pool_free_frames(e.pool);
	cr_assert_eq(smmu_mremap(e.mm, a, 8 * PS, H + 64 * PS, 0), 0);
	cr_assert_eq(smmu_pool_free_frames(e.pool), free_before, "frames were copied or freed");
	check_stamps(&e, H + 64 * PS, 6, 100);
	cr_assert_eq(smmu_load64(e.cpu, H + 64 * PS + 7 * PS), 0, "a not-present page is demand-zero at its new place");
	uint64_t v;
	for (size_t i = 0; i < 8; i++)
		cr_assert_eq(smmu_try_load64(e.cpu, a + i * PS, &v), -EFAULT, "source page %zu still reachable", i);
	struct smmu_region reg;
	cr_assert_eq(smmu_mm_find(e.mm, H + 64 * PS, &reg), 0);
	cr_assert_eq(reg.start, H + 64 * PS);
	cr_assert_eq(reg.end, H + 72 * PS);
	cr_assert_eq(smmu_mm_find(e.mm, a, &reg), 0);
	cr_assert_eq(reg.start, H + 64 * PS, "the source is still mapped");
	cr_assert_eq(smmu_munmap(e.mm, H + 64 * PS, 8 * PS), 0);
	env_fini(&e);
}

static int fh_calls;
static int fh(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	(void)cpu;
	(void)f;
	(void)arg;
	fh_calls++;
	return -EIO;
}

Test(remap, keeps_protection_and_handler)
{
	struct env e;
	env_init(&e, 512, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	smmu_addr_t a = map(&e, H, 4 * PS, RW);
	stamp(&e, a, 4, 7);
	cr_assert_eq(smmu_mprotect(e.mm, a + PS, PS, R), 0);
	cr_assert_eq(smmu_mprotect(e.mm, a + 2 * PS, PS, SMMU_PROT_NONE), 0);
	smmu_addr_t h;
	cr_assert_eq(smmu_mmap_handler(e.mm, a + 4 * PS, PS, RW, SMMU_MAP_FIXED, fh, NULL, &h), 0);
	cr_assert_eq(smmu_mremap(e.mm, a, 5 * PS, H + 32 * PS, 0), 0);
	smmu_addr_t b = H + 32 * PS;
	cr_assert_eq(smmu_load64(e.cpu, b + 8), 7);
	cr_assert_eq(smmu_load64(e.cpu, b + PS + 8), 8);
	cr_assert_eq(smmu_try_store64(e.cpu, b + PS, 1), -EACCES, "read-only page became writable");
	uint64_t v;
	cr_assert_eq(smmu_try_load64(e.cpu, b + 2 * PS, &v), -EACCES, "PROT_NONE page became readable");
	cr_assert_eq(smmu_mprotect(e.mm, b + 2 * PS, PS, R), 0);
	cr_assert_eq(smmu_load64(e.cpu, b + 2 * PS + 8), 9, "the PROT_NONE page's frame did not move");
	cr_assert_eq(smmu_try_load64(e.cpu, b + 4 * PS, &v), -EIO, "the fault handler did not move");
	cr_assert_eq(fh_calls, 1);
	cr_assert_eq(smmu_munmap(e.mm, b, 5 * PS), 0);
	env_fini(&e);
}

/* A remote CPU that cached the source: after the move it faults there. */
struct remote {
	struct smmu_mm *mm;
	smmu_addr_t src, dst;
	atomic_int phase; /* 1: loaded src; 2: moved; 3: checked */
	int src_err, dst_ok;
};

static void *remote_main(void *arg)
{
	struct remote *r = arg;
	struct smmu_cpu *c;
	cr_assert_eq(smmu_cpu_register(r->mm, &c), 0);
	uint64_t v;
	(void)smmu_try_load64(c, r->src, &v);
	atomic_store(&r->phase, 1);
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (atomic_load(&r->phase) < 2) {
		(void)smmu_try_load64(c, r->src + 8, &v); /* keeps hitting its entry */
		smmu_quiescent(c);
		struct timespec t;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > 10)
			break;
	}
	smmu_quiescent(c);
	r->src_err = smmu_try_load64(c, r->src + 8, &v);
	v = 0;
	r->dst_ok = smmu_try_load64(c, r->dst + 8, &v) == 0 && v == 42;
	atomic_store(&r->phase, 3);
	smmu_cpu_unregister(c);
	return NULL;
}

/* Move len bytes from src to dst (page 0 written, the rest not present). */
static void remote_cpu_loses_source(enum smmu_shootdown_mode mode, smmu_addr_t src, smmu_addr_t dst, size_t len)
{
	struct env e;
	env_init(&e, 512, mode, SMMU_POOL_POISON);
	smmu_addr_t a = map(&e, src, len, RW);
	smmu_store64(e.cpu, a + 8, 42);
	struct remote r = { .mm = e.mm, .src = a, .dst = dst };
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, remote_main, &r), 0);
	while (atomic_load(&r.phase) < 1)
		;
	if (mode != SMMU_SHOOTDOWN_SIGNAL)
		cr_assert_eq(smmu_cpu_offline(e.cpu), 0); /* grace periods need not wait for us */
	struct smmu_stats before = stats(&e);
	cr_assert_eq(smmu_mremap(e.mm, a, len, r.dst, 0), 0);
	struct smmu_stats after = stats(&e);
	atomic_store(&r.phase, 2);
	pthread_join(t, NULL);
	if (mode != SMMU_SHOOTDOWN_SIGNAL)
		cr_assert_eq(smmu_cpu_online(e.cpu), 0);
	cr_assert_eq(r.src_err, -EFAULT, "the remote CPU still reached the source");
	cr_assert(r.dst_ok, "the remote CPU did not find the data at the destination");
	cr_assert_eq(after.shootdowns - before.shootdowns, 1);
	if (mode == SMMU_SHOOTDOWN_SIGNAL)
		cr_assert_eq(after.signals_sent - before.signals_sent, 1, "the remote CPU was not signalled");
	cr_assert_eq(smmu_munmap(e.mm, r.dst, len), 0);
	env_fini(&e);
}

Test(remap, remote_cpu_loses_source_signal)
{
	remote_cpu_loses_source(SMMU_SHOOTDOWN_SIGNAL, H, H + 16 * PS, PS);
}

Test(remap, remote_cpu_loses_source_rcu)
{
	remote_cpu_loses_source(SMMU_SHOOTDOWN_RCU, H, H + 16 * PS, PS);
}

Test(remap, remote_cpu_loses_source_rcu_deferred)
{
	remote_cpu_loses_source(SMMU_SHOOTDOWN_RCU_DEFERRED, H, H + 16 * PS, PS);
}

/* The same when a whole leaf table moves (2 MiB aligned on both sides). */
#define MB2 ((smmu_addr_t)2 << 20)

Test(remap, remote_cpu_loses_subtree_source_signal)
{
	remote_cpu_loses_source(SMMU_SHOOTDOWN_SIGNAL, H + MB2, H + 32 * MB2, MB2);
}

Test(remap, remote_cpu_loses_subtree_source_rcu)
{
	remote_cpu_loses_source(SMMU_SHOOTDOWN_RCU, H + MB2, H + 32 * MB2, MB2);
}

Test(remap, remote_cpu_loses_subtree_source_rcu_deferred)
{
	remote_cpu_loses_source(SMMU_SHOOTDOWN_RCU_DEFERRED, H + MB2, H + 32 * MB2, MB2);
}

/*
 * Aligned moves take whole table pages along (the source's tables are not
 * emptied and freed, so tables_freed stays 0), at the leaf-table level (2
 * MiB) and the level above (1 GiB); a move 4 KiB off alignment goes entry
 * by entry and frees the source's emptied leaf tables.  Data, holes and
 * the unreachability of the source are the same either way.
 */
static void move_and_check(struct env *e, smmu_addr_t from, size_t len, smmu_addr_t to, const size_t *pages,
			   size_t np, uint64_t tables_freed)
{
	map(e, from, len, RW);
	for (size_t i = 0; i < np; i++)
		smmu_store64(e->cpu, from + pages[i] * PS + 8, 500 + i);
	struct smmu_stats before = stats(e);
	size_t free_before = smmu_pool_free_frames(e->pool);
	cr_assert_eq(smmu_mremap(e->mm, from, len, to, 0), 0);
	struct smmu_stats after = stats(e);
	cr_assert_eq(after.tables_freed - before.tables_freed, tables_freed, "tables freed: %llu",
		     (unsigned long long)(after.tables_freed - before.tables_freed));
	cr_assert_eq(after.shootdowns - before.shootdowns, 1);
	cr_assert_eq(smmu_pool_free_frames(e->pool), free_before);
	uint64_t v;
	for (size_t i = 0; i < np; i++) {
		cr_assert_eq(smmu_load64(e->cpu, to + pages[i] * PS + 8), 500 + i, "page %zu", pages[i]);
		cr_assert_eq(smmu_try_load64(e->cpu, from + pages[i] * PS + 8, &v), -EFAULT);
	}
	cr_assert_eq(smmu_load64(e->cpu, to + PS + 16), 0, "a hole is demand-zero at its new place");
	cr_assert_eq(smmu_munmap(e->mm, to, len), 0);
}

Test(remap, aligned_moves_take_tables_along)
{
	struct env e;
	env_init(&e, 512, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	const size_t two_mb[] = { 0, 100, 511, 512, 1023 };
	move_and_check(&e, H + 2 * MB2, 2 * MB2, H + 16 * MB2, two_mb, 5, 0);
	move_and_check(&e, H + 2 * MB2, 2 * MB2, H + 16 * MB2 + PS, two_mb, 5, 2);
	const size_t one_gb[] = { 0, 77777, 262143 };
	move_and_check(&e, (smmu_addr_t)1 << 30, (size_t)1 << 30, (smmu_addr_t)4 << 30, one_gb, 3, 0);
	env_fini(&e);
}

/* In one batch, the source of one move and the destination of a later one
 * share a leaf table: the table emptied by the first move must still be
 * there for the second. */
Test(remap, batch_source_and_later_destination_share_a_table)
{
	struct env e;
	env_init(&e, 512, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	smmu_addr_t a = map(&e, H, PS, RW), b = map(&e, H + 2 * MB2, PS, RW);
	smmu_store64(e.cpu, a + 8, 1);
	smmu_store64(e.cpu, b + 8, 2);
	struct smmu_remap m[2] = { { .from = a, .to = H + 8 * MB2, .len = PS }, { .from = b, .to = H + PS, .len = PS } };
	cr_assert_eq(smmu_mremap_batch(e.mm, m, 2), 0);
	cr_assert_eq(smmu_load64(e.cpu, H + 8 * MB2 + 8), 1);
	cr_assert_eq(smmu_load64(e.cpu, H + PS + 8), 2);
	cr_assert_eq(smmu_munmap(e.mm, H + 8 * MB2, PS), 0);
	cr_assert_eq(smmu_munmap(e.mm, H + PS, PS), 0);
	env_fini(&e);
}

Test(remap, batch_one_gather_one_shootdown)
{
	struct env e;
	env_init(&e, 512, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	struct smmu_remap m[3];
	for (int i = 0; i < 3; i++) {
		smmu_addr_t a = map(&e, H + (smmu_addr_t)i * 16 * PS, 4 * PS, RW);
		stamp(&e, a, 4, 1000u * (unsigned)i);
		m[i] = (struct smmu_remap){ .from = a, .to = H + 256 * PS + (smmu_addr_t)i * 8 * PS, .len = 4 * PS };
	}
	struct smmu_stats before = stats(&e);
	cr_assert_eq(smmu_mremap_batch(e.mm, m, 3), 0);
	struct smmu_stats after = stats(&e);
	cr_assert_eq(after.gathers - before.gathers, 1);
	cr_assert_eq(after.shootdowns - before.shootdowns, 1);
	uint64_t v;
	for (int i = 0; i < 3; i++) {
		check_stamps(&e, m[i].to, 4, 1000u * (unsigned)i);
		cr_assert_eq(smmu_try_load64(e.cpu, m[i].from, &v), -EFAULT);
		cr_assert_eq(smmu_munmap(e.mm, m[i].to, 4 * PS), 0);
	}
	cr_assert_eq(smmu_mremap_batch(e.mm, NULL, 0), 0);
	env_fini(&e);
}

Test(remap, all_or_nothing)
{
	struct env e;
	env_init(&e, 512, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	smmu_addr_t a = map(&e, H, 4 * PS, RW), b = map(&e, H + 16 * PS, 4 * PS, RW);
	map(&e, H + 64 * PS, PS, RW); /* an obstacle */
	stamp(&e, a, 4, 1);
	stamp(&e, b, 4, 50);
	struct smmu_stats before = stats(&e);
	struct smmu_remap m[2] = { { .from = a, .to = H + 32 * PS, .len = 4 * PS },
				   { .from = b, .to = H + 62 * PS, .len = 4 * PS } };
	cr_assert_eq(smmu_mremap_batch(e.mm, m, 2), -EEXIST, "destination over a mapping");
	m[1].to = H + 34 * PS;
	cr_assert_eq(smmu_mremap_batch(e.mm, m, 2), -EINVAL, "overlapping destinations");
	m[1].to = H + 40 * PS;
	m[1].from = b + PS;
	m[1].len = 4 * PS;
	cr_assert_eq(smmu_mremap_batch(e.mm, m, 2), -EFAULT, "a source page not mapped");
	m[1] = (struct smmu_remap){ .from = b, .to = a + 2 * PS, .len = 4 * PS };
	cr_assert_eq(smmu_mremap_batch(e.mm, m, 2), -EINVAL, "destination overlapping a source");
	m[1] = (struct smmu_remap){ .from = b + 1, .to = H + 40 * PS, .len = PS };
	cr_assert_eq(smmu_mremap_batch(e.mm, m, 2), -EINVAL, "misaligned");
	m[1] = (struct smmu_remap){ .from = b, .to = H + 40 * PS, .len = 0 };
	cr_assert_eq(smmu_mremap_batch(e.mm, m, 2), -EINVAL, "empty");
	m[1] = (struct smmu_remap){ .from = b, .to = 0, .len = PS };
	cr_assert_eq(smmu_mremap_batch(e.mm, m, 2), -EINVAL, "below the lowest address");
	cr_assert_eq(smmu_mremap_batch(e.mm, NULL, 1), -EINVAL);
	cr_assert_eq(smmu_mremap_batch(NULL, m, 1), -EINVAL);
	cr_assert_eq(smmu_mremap(e.mm, a, PS, H + 40 * PS, 2), -EINVAL, "unknown flag");
	/* Nothing moved, nothing flushed. */
	struct smmu_stats after = stats(&e);
	cr_assert_eq(after.shootdowns, before.shootdowns);
	check_stamps(&e, a, 4, 1);
	check_stamps(&e, b, 4, 50);
	struct smmu_region reg;
	cr_assert_eq(smmu_mm_find(e.mm, H + 32 * PS, &reg), 0);
	cr_assert_eq(reg.start, H + 64 * PS, "a destination was mapped");
	cr_assert_eq(smmu_munmap(e.mm, H, 128 * PS), 0);
	env_fini(&e);
}

/* The hammers' common parts: the writer goes offline (it only moves),
 * three readers start; a run lasts a second. */
static void hammer_start(struct env *e, pthread_t t[3], void *(*reader)(void *), void *arg, struct timespec *t0)
{
	cr_assert_eq(smmu_cpu_offline(e->cpu), 0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, reader, arg), 0);
	clock_gettime(CLOCK_MONOTONIC, t0);
}

static bool hammer_go_on(const struct timespec *t0)
{
	struct timespec pause = {0, 20000}, now; /* readers get windows between moves */
	nanosleep(&pause, NULL);
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t0->tv_sec) * 1000000000L + (now.tv_nsec - t0->tv_nsec) < 1000000000L;
}

static void hammer_stop(struct env *e, pthread_t t[3], atomic_bool *stop)
{
	atomic_store(stop, true);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	cr_assert_eq(smmu_cpu_online(e->cpu), 0);
}

/* ------------------------------------------------ leaving a mapping behind */

static _Atomic int stub_calls;
static _Atomic(smmu_addr_t) stub_addr;
static int stub(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	(void)cpu;
	cr_assert_eq(arg, &stub_calls);
	atomic_fetch_add(&stub_calls, 1);
	atomic_store(&stub_addr, f->addr);
	return -ESTALE; /* a collector's stub: "look it up again" */
}

Test(remap, leave_maps_each_source_in_the_same_step)
{
	struct env e;
	env_init(&e, 512, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	atomic_store(&stub_calls, 0);
	smmu_addr_t a = map(&e, H, 4 * PS, RW);
	stamp(&e, a, 4, 40);
	size_t free_before = smmu_pool_free_frames(e.pool);
	struct smmu_remap m[2] = {{.from = a, .to = H + 32 * PS, .len = 2 * PS},
				  {.from = a + 2 * PS, .to = H + 48 * PS, .len = 2 * PS}};
	const struct smmu_remap_leave tomb = {.prot = SMMU_PROT_NONE, .handler = stub, .handler_arg = &stub_calls};
	cr_assert_eq(smmu_mremap_batch_leave(e.mm, m, 2, &tomb), 0);
	cr_assert_eq(smmu_pool_free_frames(e.pool), free_before, "frames were copied or freed");
	check_stamps(&e, H + 32 * PS, 2, 40);
	check_stamps(&e, H + 48 * PS, 2, 42);
	uint64_t v = 77;
	for (size_t i = 0; i < 4; i++) {
		cr_assert_eq(smmu_try_load64(e.cpu, a + i * PS + 8, &v), -ESTALE, "source page %zu: not the stub", i);
		cr_assert_eq(atomic_load(&stub_addr), a + i * PS + 8);
	}
	cr_assert_eq(v, 77);
	cr_assert_eq(atomic_load(&stub_calls), 4);
	struct smmu_region reg;
	cr_assert_eq(smmu_mm_find(e.mm, a, &reg), 0);
	cr_assert(reg.start == a && reg.end == a + 4 * PS && reg.prot == SMMU_PROT_NONE,
		  "the two left mappings: [%#llx, %#llx) prot %d", (unsigned long long)reg.start,
		  (unsigned long long)reg.end, reg.prot);

	/* Demand-zero memory left behind: a fresh page on the next access. */
	const struct smmu_remap_leave anon = {.prot = RW};
	cr_assert_eq(smmu_mremap_batch_leave(e.mm, &(struct smmu_remap){H + 32 * PS, H + 64 * PS, 2 * PS}, 1, &anon), 0);
	check_stamps(&e, H + 64 * PS, 2, 40);
	cr_assert_eq(smmu_load64(e.cpu, H + 32 * PS + 8), 0, "the left page is not a fresh one");
	cr_assert_eq(smmu_pool_free_frames(e.pool), free_before - 1);
	cr_assert_eq(smmu_munmap(e.mm, H, 128 * PS), 0);
	env_fini(&e);
}

Test(remap, dontunmap_keeps_the_source_mappings_emptied)
{
	struct env e;
	env_init(&e, 512, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	atomic_store(&stub_calls, 0);
	smmu_addr_t a = map(&e, H, 2 * PS, RW), h;
	cr_assert_eq(smmu_mmap_handler(e.mm, a + 2 * PS, PS, R, SMMU_MAP_FIXED, stub, &stub_calls, &h), 0);
	stamp(&e, a, 2, 5);
	cr_assert_eq(smmu_mprotect(e.mm, a + PS, PS, R), 0);
	cr_assert_eq(smmu_mremap(e.mm, a, 3 * PS, H + 32 * PS, SMMU_MREMAP_DONTUNMAP), 0);
	check_stamps(&e, H + 32 * PS, 2, 5);
	struct smmu_region reg;
	cr_assert_eq(smmu_mm_find(e.mm, a, &reg), 0);
	cr_assert(reg.start == a && reg.end == a + PS && reg.prot == RW);
	cr_assert_eq(smmu_mm_find(e.mm, a + PS, &reg), 0);
	cr_assert(reg.start == a + PS && reg.end == a + 2 * PS && reg.prot == R);
	cr_assert_eq(smmu_load64(e.cpu, a + 8), 0, "the source page was not emptied");
	cr_assert_eq(smmu_load64(e.cpu, a + PS + 8), 0);
	cr_assert_eq(smmu_try_store64(e.cpu, a + PS, 1), -EACCES, "the source lost its protection");
	uint64_t v;
	cr_assert_eq(smmu_try_load64(e.cpu, a + 2 * PS, &v), -ESTALE, "the source lost its handler");
	cr_assert_eq(smmu_try_load64(e.cpu, H + 34 * PS, &v), -ESTALE, "the destination did not get the handler");
	cr_assert_eq(smmu_munmap(e.mm, H, 128 * PS), 0);
	env_fini(&e);
}

Test(remap, leave_bad_input_changes_nothing)
{
	struct env e;
	env_init(&e, 512, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	smmu_addr_t a = map(&e, H, 2 * PS, RW);
	map(&e, H + 64 * PS, PS, RW); /* an obstacle */
	stamp(&e, a, 2, 9);
	struct smmu_stats before = stats(&e);
	struct smmu_remap m = {.from = a, .to = H + 32 * PS, .len = 2 * PS};
	const struct smmu_remap_leave ok = {.prot = SMMU_PROT_NONE, .handler = stub, .handler_arg = &stub_calls};
	const int bad_prots[] = {SMMU_PROT_WRITE, 0x4, 0x7, -1};
	cr_assert_eq(smmu_mremap_batch_leave(e.mm, &m, 1, NULL), -EINVAL);
	for (size_t i = 0; i < sizeof(bad_prots) / sizeof(bad_prots[0]); i++) {
		const struct smmu_remap_leave bad = {.prot = bad_prots[i]};
		cr_assert_eq(smmu_mremap_batch_leave(e.mm, &m, 1, &bad), -EINVAL, "prot %d", bad_prots[i]);
	}
	cr_assert_eq(smmu_mremap_batch_leave(NULL, &m, 1, &ok), -EINVAL);
	cr_assert_eq(smmu_mremap_batch_leave(e.mm, NULL, 1, &ok), -EINVAL);
	m.to = H + 63 * PS;
	cr_assert_eq(smmu_mremap_batch_leave(e.mm, &m, 1, &ok), -EEXIST);
	m = (struct smmu_remap){.from = a, .to = H + 32 * PS, .len = 3 * PS};
	cr_assert_eq(smmu_mremap_batch_leave(e.mm, &m, 1, &ok), -EFAULT);
	cr_assert_eq(smmu_mremap(e.mm, a, PS, H + 32 * PS, SMMU_MREMAP_DONTUNMAP | 2), -EINVAL);
	cr_assert_eq(smmu_mremap(e.mm, a, 3 * PS, H + 32 * PS, SMMU_MREMAP_DONTUNMAP), -EFAULT);
	struct smmu_stats after = stats(&e);
	cr_assert_eq(after.shootdowns, before.shootdowns);
	check_stamps(&e, a, 2, 9);
	struct smmu_region reg;
	cr_assert_eq(smmu_mm_find(e.mm, a, &reg), 0);
	cr_assert(reg.start == a && reg.end == a + 2 * PS && reg.prot == RW, "the source changed");
	cr_assert_eq(smmu_mm_find(e.mm, H + 2 * PS, &reg), 0);
	cr_assert_eq(reg.start, H + 64 * PS, "something was mapped");
	cr_assert_eq(smmu_munmap(e.mm, H, 128 * PS), 0);
	env_fini(&e);
}

/*
 * The window smmu_mremap_batch_leave closes: a page moves round a ring of
 * three slots, each move unmapping the stub two moves old at its
 * destination and leaving a stub (PROT_NONE, a handler) at its source.
 * Readers take a snapshot of where the page is (w) and where it was (p)
 * between two moves, and load from one of them while moves go on:
 *  - at w, until the third move after the snapshot begins (it unmaps that
 *    slot), the load reads the page or reaches the stub left there -
 *    never -EFAULT: no access finds a source unmapped, not even in the
 *    middle of the move;
 *  - at p, until the second move after the snapshot begins (it unmaps p),
 *    the stub: never data, never -EFAULT.
 */
struct leave_hammer {
	struct smmu_mm *mm;
	smmu_addr_t slot[3];
	enum smmu_shootdown_mode mode;
	_Atomic smmu_addr_t where, prev; /* prev: 0 before the first move */
	atomic_ulong seq;                 /* odd while a move runs */
	atomic_bool stop;
	atomic_ulong stubbed, hits, unmapped, leaked, bad_values;
};

static void *leave_reader(void *arg)
{
	struct leave_hammer *h = arg;
	struct smmu_cpu *c;
	cr_assert_eq(smmu_cpu_register(h->mm, &c), 0);
	for (unsigned long n = 0; !atomic_load(&h->stop); n++) {
		if (h->mode != SMMU_SHOOTDOWN_SIGNAL)
			smmu_quiescent(c);
		unsigned long s1 = atomic_load(&h->seq);
		smmu_addr_t w = atomic_load(&h->where), p = atomic_load(&h->prev);
		if ((s1 & 1) || atomic_load(&h->seq) != s1 || !p)
			continue; /* no snapshot between two moves */
		const bool at_w = n & 1;
		uint64_t v = 0;
		int err = smmu_try_load64(c, (at_w ? w : p) + 8, &v);
		unsigned long moves_since = (atomic_load(&h->seq) - s1 + 1) / 2; /* begun after the snapshot */
		if (err == -ESTALE)
			atomic_fetch_add(&h->stubbed, 1);
		else if (err == -EFAULT && moves_since < (at_w ? 2u : 1u) + 1)
			atomic_fetch_add(&h->unmapped, 1);
		else if (err == 0 && at_w && v == MAGIC)
			atomic_fetch_add(&h->hits, 1);
		else if (err == 0 && !at_w && moves_since <= 1 && h->mode != SMMU_SHOOTDOWN_RCU_DEFERRED)
			atomic_fetch_add(&h->leaked, 1); /* deferred: an entry may live to the next quiescent state */
		else if ((err == 0 && v != MAGIC) || (err != 0 && err != -EFAULT))
			atomic_fetch_add(&h->bad_values, 1);
	}
	cr_assert_eq(smmu_cpu_unregister(c), 0);
	return NULL;
}

static void leave_hammer(enum smmu_shootdown_mode mode)
{
	struct env e;
	env_init(&e, 512, mode, SMMU_POOL_POISON);
	struct leave_hammer h = {.mm = e.mm, .slot = {H, H + 64 * PS, H + 128 * PS}, .mode = mode};
	const struct smmu_remap_leave tomb = {.prot = SMMU_PROT_NONE, .handler = stub, .handler_arg = &stub_calls};
	map(&e, h.slot[0], PS, RW);
	smmu_store64(e.cpu, h.slot[0] + 8, MAGIC);
	atomic_store(&h.where, h.slot[0]);
	pthread_t t[3];
	struct timespec t0;
	hammer_start(&e, t, leave_reader, &h, &t0);
	unsigned long moves = 0;
	do {
		unsigned k = (unsigned)(moves % 3);
		smmu_addr_t from = h.slot[k], to = h.slot[(k + 1) % 3];
		atomic_fetch_add(&h.seq, 1); /* odd: moving */
		cr_assert_eq(smmu_munmap(e.mm, to, PS), 0); /* the stub left two moves ago */
		struct smmu_remap m = {.from = from, .to = to, .len = PS};
		cr_assert_eq(smmu_mremap_batch_leave(e.mm, &m, 1, &tomb), 0);
		atomic_store(&h.prev, from);
		atomic_store(&h.where, to);
		atomic_fetch_add(&h.seq, 1); /* even: the move returned */
		moves++;
	} while (hammer_go_on(&t0));
	hammer_stop(&e, t, &h.stop);
	cr_log_info("%lu moves, %lu loads at the page, %lu at a stub", moves, atomic_load(&h.hits),
		    atomic_load(&h.stubbed));
	cr_assert_gt(moves, 1);
	cr_assert_gt(atomic_load(&h.hits), 0, "no load at the page succeeded: the test checked nothing");
	if (mode != SMMU_SHOOTDOWN_RCU_DEFERRED)
		cr_assert_gt(atomic_load(&h.stubbed), 0, "no load reached a stub: the test checked nothing");
	cr_assert_eq(atomic_load(&h.unmapped), 0, "a load found a move's source unmapped");
	cr_assert_eq(atomic_load(&h.leaked), 0, "a load completed at a stub");
	cr_assert_eq(atomic_load(&h.bad_values), 0, "a load failed otherwise or read something else than the page");
	cr_assert_eq(smmu_munmap(e.mm, H, 192 * PS), 0);
	env_fini(&e);
}

Test(remap, leave_hammer_signal)
{
	leave_hammer(SMMU_SHOOTDOWN_SIGNAL);
}

Test(remap, leave_hammer_rcu)
{
	leave_hammer(SMMU_SHOOTDOWN_RCU);
}

/* Deferred: a reader may still reach the moved page through an old entry
 * until its next quiescent state, so a load at the source may read data;
 * it still never finds the source unmapped. */
Test(remap, leave_hammer_rcu_deferred)
{
	leave_hammer(SMMU_SHOOTDOWN_RCU_DEFERRED);
}

/* Subscribers see one REMAP change per source, secondary before end. */
struct log {
	int n;
	int ev[16];
	smmu_addr_t s[16], e[16];
	char what[16];
};

static int n_start(void *arg, const struct smmu_notify_range *r)
{
	struct log *l = arg;
	l->ev[l->n] = r->event;
	l->s[l->n] = r->start;
	l->e[l->n] = r->end;
	l->what[l->n++] = 's';
	return 0;
}

static void n_sec(void *arg, const struct smmu_notify_range *r)
{
	struct log *l = arg;
	l->ev[l->n] = r->event;
	l->s[l->n] = r->start;
	l->e[l->n] = r->end;
	l->what[l->n++] = 'x';
}

static void n_end(void *arg, const struct smmu_notify_range *r)
{
	struct log *l = arg;
	l->ev[l->n] = r->event;
	l->s[l->n] = r->start;
	l->e[l->n] = r->end;
	l->what[l->n++] = 'e';
}

Test(remap, notifiers_see_remap)
{
	struct env e;
	env_init(&e, 512, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	smmu_addr_t a = map(&e, H, 2 * PS, RW), b = map(&e, H + 8 * PS, PS, RW);
	stamp(&e, a, 2, 5);
	static const struct smmu_notifier_ops ops = {
		.invalidate_range_start = n_start, .invalidate_secondary_tlbs = n_sec, .invalidate_range_end = n_end
	};
	struct log l = { 0 };
	struct smmu_notifier *n;
	cr_assert_eq(smmu_notifier_register(e.mm, &ops, &l, &n), 0);
	struct smmu_remap m[2] = { { .from = a, .to = H + 32 * PS, .len = 2 * PS },
				   { .from = b, .to = H + 40 * PS, .len = PS } };
	cr_assert_eq(smmu_mremap_batch(e.mm, m, 2), 0);
	cr_assert_eq(l.n, 6, "calls: %d", l.n);
	cr_assert_eq(strncmp(l.what, "ssxxee", 6), 0, "order %.6s", l.what);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(l.ev[i], SMMU_NOTIFY_REMAP);
	cr_assert_eq(l.s[0], a);
	cr_assert_eq(l.e[0], a + 2 * PS);
	cr_assert_eq(l.s[1], b);
	cr_assert_eq(l.e[1], b + PS);
	cr_assert_eq(smmu_notifier_unregister(n), 0);
	check_stamps(&e, H + 32 * PS, 2, 5);
	cr_assert_eq(smmu_munmap(e.mm, H, 64 * PS), 0);
	env_fini(&e);
}

/*
 * Hammer: a writer moves one page back and forth between A and B while
 * reader CPUs load from the address it is NOT at.  The writer brackets
 * each move with a sequence count, odd while it runs (a seqlock).
 * Property 1 for moves: a load that began after a move to w had returned,
 * with no other move begun before the load ended (the even count did not
 * change across it), never succeeds at the other address; and any load
 * that succeeds reads the page's contents (never a fresh zero page or a
 * poisoned, freed frame).
 */

struct hammer {
	struct smmu_mm *mm;
	smmu_addr_t a, b;
	enum smmu_shootdown_mode mode;
	_Atomic smmu_addr_t where;
	atomic_ulong seq;
	atomic_bool stop;
	atomic_ulong loads, hits, violations, bad_values;
};

static void *hammer_reader(void *arg)
{
	struct hammer *h = arg;
	struct smmu_cpu *c;
	cr_assert_eq(smmu_cpu_register(h->mm, &c), 0);
	unsigned long n = 0, hits = 0;
	while (!atomic_load(&h->stop)) {
		if (h->mode != SMMU_SHOOTDOWN_SIGNAL)
			smmu_quiescent(c);
		unsigned long s1 = atomic_load(&h->seq);
		if (s1 & 1)
			continue; /* a move is running: where is in flux */
		smmu_addr_t w = atomic_load(&h->where);
		smmu_addr_t other = w == h->a ? h->b : h->a;
		uint64_t v;
		/* now and then the current place too: fills a TLB entry there */
		smmu_addr_t at = (n & 3) == 0 ? w : other;
		int err = smmu_try_load64(c, at + 8, &v);
		n++;
		if (err)
			continue;
		hits++;
		if (v != MAGIC)
			atomic_fetch_add(&h->bad_values, 1);
		if (at == other && atomic_load(&h->seq) == s1)
			atomic_fetch_add(&h->violations, 1);
	}
	atomic_fetch_add(&h->loads, n);
	atomic_fetch_add(&h->hits, hits);
	cr_assert_eq(smmu_cpu_unregister(c), 0);
	return NULL;
}

static void hammer(enum smmu_shootdown_mode mode)
{
	struct env e;
	env_init(&e, 512, mode, SMMU_POOL_POISON);
	struct hammer h = { .mm = e.mm, .a = H, .b = H + 64 * PS, .mode = mode };
	map(&e, h.a, PS, RW);
	smmu_store64(e.cpu, h.a + 8, MAGIC);
	atomic_store(&h.where, h.a);
	pthread_t t[3];
	struct timespec t0;
	hammer_start(&e, t, hammer_reader, &h, &t0);
	unsigned long moves = 0;
	do {
		smmu_addr_t from = atomic_load(&h.where), to = from == h.a ? h.b : h.a;
		atomic_fetch_add(&h.seq, 1); /* odd: moving */
		cr_assert_eq(smmu_mremap(e.mm, from, PS, to, 0), 0);
		atomic_store(&h.where, to);
		atomic_fetch_add(&h.seq, 1); /* even: the move returned */
		moves++;
	} while (hammer_go_on(&t0));
	hammer_stop(&e, t, &h.stop);
	cr_log_info("%lu moves, %lu loads, %lu hits", moves, atomic_load(&h.loads), atomic_load(&h.hits));
	cr_assert_gt(moves, 1);
	cr_assert_gt(atomic_load(&h.hits), 0, "no load ever succeeded: the test checked nothing");
	cr_assert_eq(atomic_load(&h.bad_values), 0, "a load read something else than the moved page");
	cr_assert_eq(atomic_load(&h.violations), 0, "a load succeeded at the address a returned move had left");
	cr_assert_eq(smmu_load64(e.cpu, atomic_load(&h.where) + 8), MAGIC);
	cr_assert_eq(smmu_munmap(e.mm, atomic_load(&h.where), PS), 0);
	env_fini(&e);
}

Test(remap, hammer_signal)
{
	hammer(SMMU_SHOOTDOWN_SIGNAL);
}

Test(remap, hammer_rcu)
{
	hammer(SMMU_SHOOTDOWN_RCU);
}
