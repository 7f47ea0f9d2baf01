/* SPDX-License-Identifier: MIT */
/*
 * smmu_mm_dup: copy-on-write duplication.  The child sees the parent's
 * data, mappings, protections and handlers; writes on either side stay
 * private (copied on the first write, or made writable in place once the
 * other side let go); frames are shared by count and come back to the pool
 * when the last mm lets go; the parent's CPUs - local and remote, with the
 * page writable in their TLBs - lose write access by the time dup returns;
 * mprotect never makes a shared frame writable; secondary TLBs see the
 * break; bad input.  Public API only.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <softmmu/softmmu.h>

#define PS 4096u
#define RW (SMMU_PROT_READ | SMMU_PROT_WRITE)
#define R SMMU_PROT_READ
#define H ((smmu_addr_t)0x40000000)

static struct smmu_pool *pool;
static struct smmu_mm *mm;
static struct smmu_cpu *cpu;

static void setup_mode(enum smmu_shootdown_mode mode)
{
	struct smmu_pool_config pc = { .size = 64 * PS, .flags = SMMU_POOL_POISON };
	cr_assert_eq(smmu_pool_create(&pc, &pool), 0);
	struct smmu_mm_config mc = { .mode = mode };
	cr_assert_eq(smmu_mm_create_ex(pool, &mc, &mm), 0);
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
}

static void setup(void)
{
	setup_mode(SMMU_SHOOTDOWN_SIGNAL);
}

static void teardown(void)
{
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	cr_assert_eq(smmu_mm_destroy(mm), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), smmu_pool_frames(pool), "frames leaked");
	cr_assert_eq(smmu_pool_destroy(pool), 0);
}

static struct smmu_stats stats(struct smmu_mm *m)
{
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(m, &st), 0);
	return st;
}

Test(dup, shares_then_copies_on_write, .init = setup, .fini = teardown)
{
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(mm, H, 4 * PS, RW, SMMU_MAP_FIXED, &a), 0);
	for (int i = 0; i < 3; i++) /* page 3 never touched */
		smmu_store64(cpu, a + (smmu_addr_t)i * PS, 10 + (uint64_t)i);
	size_t free0 = smmu_pool_free_frames(pool);
	struct smmu_mm *child;
	cr_assert_eq(smmu_mm_dup(mm, &child), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), free0, "dup copied frames");

	/* The parent's CPU had page 0 writable in its TLB: now it copies. */
	smmu_store64(cpu, a, 100);
	cr_assert_eq(smmu_pool_free_frames(pool), free0 - 1);
	cr_assert_eq(stats(mm).cow_copies, 1);
	cr_assert_eq(smmu_load64(cpu, a + PS), 11, "the parent lost a page");

	cr_assert_eq(smmu_cpu_switch_mm(cpu, child), 0);
	cr_assert_eq(smmu_load64(cpu, a), 10, "the child saw the parent's write after dup");
	cr_assert_eq(smmu_load64(cpu, a + 2 * PS), 12);
	cr_assert_eq(smmu_load64(cpu, a + 3 * PS), 0, "an untouched page is demand-zero in the child");
	/* Page 0 is the child's alone now (the parent copied away): in place. */
	size_t free1 = smmu_pool_free_frames(pool);
	smmu_store64(cpu, a, 200);
	cr_assert_eq(smmu_pool_free_frames(pool), free1, "a frame no longer shared was copied");
	cr_assert_eq(stats(child).cow_reuses, 1);
	smmu_store64(cpu, a + PS, 201); /* still shared: copies */
	cr_assert_eq(stats(child).cow_copies, 1);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, mm), 0);
	cr_assert_eq(smmu_load64(cpu, a), 100);
	cr_assert_eq(smmu_load64(cpu, a + PS), 11, "the child's write reached the parent");
	smmu_store64(cpu, a + PS, 111); /* the parent's copy of page 1 is its own now */
	cr_assert_eq(stats(mm).cow_reuses, 1);

	/* The last mapper's unmap frees a shared frame, not the first. */
	cr_assert_eq(smmu_munmap(mm, a + 2 * PS, PS), 0);
	size_t free2 = smmu_pool_free_frames(pool);
	cr_assert_eq(smmu_mm_destroy(child), 0);
	/* Child: page 0 (kept in place), 1 (its copy), 2 (the parent let go),
	 * 3 (demand-zero in the child). */
	cr_assert_eq(smmu_pool_free_frames(pool), free2 + 4, "the child's frames were not all returned");
	cr_assert_eq(smmu_load64(cpu, a), 100);
	cr_assert_eq(smmu_munmap(mm, a, 4 * PS), 0);
}

Test(dup, protections_and_handlers_follow, .init = setup, .fini = teardown)
{
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(mm, H, 3 * PS, RW, SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &a), 0);
	smmu_store64(cpu, a + PS, 5);
	cr_assert_eq(smmu_mprotect(mm, a + PS, PS, R), 0);
	cr_assert_eq(smmu_mprotect(mm, a + 2 * PS, PS, SMMU_PROT_NONE), 0);
	struct smmu_mm *child;
	cr_assert_eq(smmu_mm_dup(mm, &child), 0);
	struct smmu_region reg;
	cr_assert_eq(smmu_mm_find(child, a + PS, &reg), 0);
	cr_assert_eq(reg.prot, R);
	cr_assert_eq(smmu_try_store64(cpu, a + PS, 1), -EACCES, "a read-only shared page became writable");
	/* mprotect back to read-write: the frame is still shared, so the
	 * write copies instead of writing through. */
	cr_assert_eq(smmu_mprotect(mm, a + PS, 2 * PS, RW), 0);
	smmu_store64(cpu, a + PS, 6);
	smmu_store64(cpu, a + 2 * PS, 7);
	cr_assert_eq(stats(mm).cow_copies, 2);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, child), 0);
	cr_assert_eq(smmu_load64(cpu, a + PS), 5, "mprotect made a shared frame writable");
	uint64_t v;
	cr_assert_eq(smmu_try_load64(cpu, a + 2 * PS, &v), -EACCES, "the child's PROT_NONE page is readable");
	cr_assert_eq(smmu_cpu_switch_mm(cpu, mm), 0);
	cr_assert_eq(smmu_mm_destroy(child), 0);
	cr_assert_eq(smmu_munmap(mm, a, 3 * PS), 0);
}

/* A remote CPU of the parent holds the page writable in its TLB: after
 * dup returns, its write copies instead of reaching the child. */
struct remote {
	smmu_addr_t a;
	atomic_int phase; /* 1: writable in its TLB; 2: duplicated; 3: wrote */
};

static void *remote_main(void *arg)
{
	struct remote *r = arg;
	struct smmu_cpu *c;
	cr_assert_eq(smmu_cpu_register(mm, &c), 0);
	smmu_store64(c, r->a, 1);
	atomic_store(&r->phase, 1);
	while (atomic_load(&r->phase) < 2) {
		smmu_store64(c, r->a + 8, 1); /* keeps hitting its writable entry */
		smmu_quiescent(c);
	}
	smmu_store64(c, r->a, 2);
	atomic_store(&r->phase, 3);
	cr_assert_eq(smmu_cpu_unregister(c), 0);
	return NULL;
}

static void remote_parent_cpu(enum smmu_shootdown_mode mode)
{
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(mm, H, PS, RW, SMMU_MAP_FIXED, &a), 0);
	struct remote r = { .a = a };
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, remote_main, &r), 0);
	while (atomic_load(&r.phase) < 1)
		;
	if (mode != SMMU_SHOOTDOWN_SIGNAL)
		cr_assert_eq(smmu_cpu_offline(cpu), 0); /* grace periods need not wait for us */
	struct smmu_mm *child;
	cr_assert_eq(smmu_mm_dup(mm, &child), 0);
	atomic_store(&r.phase, 2);
	pthread_join(t, NULL);
	if (mode != SMMU_SHOOTDOWN_SIGNAL)
		cr_assert_eq(smmu_cpu_online(cpu), 0);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, child), 0);
	cr_assert_eq(smmu_load64(cpu, a), 1, "the parent's write after dup reached the child");
	cr_assert_eq(smmu_cpu_switch_mm(cpu, mm), 0);
	cr_assert_eq(smmu_load64(cpu, a), 2);
	cr_assert_eq(smmu_mm_destroy(child), 0);
	cr_assert_eq(smmu_munmap(mm, a, PS), 0);
}

Test(dup, remote_parent_cpu_signal, .init = setup, .fini = teardown)
{
	remote_parent_cpu(SMMU_SHOOTDOWN_SIGNAL);
}

static void setup_rcu(void)
{
	setup_mode(SMMU_SHOOTDOWN_RCU);
}

Test(dup, remote_parent_cpu_rcu, .init = setup_rcu, .fini = teardown)
{
	remote_parent_cpu(SMMU_SHOOTDOWN_RCU);
}

/* Secondary TLBs of the parent lose write access at the dup, and learn of
 * each break. */
static _Atomic int unmaps, protections;
static int on_start(void *arg, const struct smmu_notify_range *rg)
{
	(void)arg;
	if (rg->event == SMMU_NOTIFY_UNMAP)
		atomic_fetch_add(&unmaps, 1);
	if (rg->event == SMMU_NOTIFY_PROTECTION)
		atomic_fetch_add(&protections, 1);
	return 0;
}

Test(dup, break_notifies_and_translate_breaks, .init = setup, .fini = teardown)
{
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(mm, H, 2 * PS, RW, SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &a), 0);
	smmu_store64(cpu, a, 3);
	static const struct smmu_notifier_ops ops = { .invalidate_range_start = on_start };
	struct smmu_notifier *n;
	cr_assert_eq(smmu_notifier_register(mm, &ops, NULL, &n), 0);
	struct smmu_mm *child;
	cr_assert_eq(smmu_mm_dup(mm, &child), 0);
	cr_assert_eq(atomic_load(&protections), 1, "the dup's write protection was not notified");
	smmu_store64(cpu, a, 4);
	cr_assert_eq(atomic_load(&unmaps), 1, "a copy on write was not an UNMAP of the old frame");
	void *p;
	cr_assert_eq(smmu_mm_translate(mm, a + PS, RW, &p), 0);
	cr_assert_eq(atomic_load(&unmaps), 2);
	*(uint64_t *)p = 9;
	cr_assert_eq(smmu_notifier_unregister(n), 0);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, child), 0);
	cr_assert_eq(smmu_load64(cpu, a), 3);
	cr_assert_eq(smmu_load64(cpu, a + PS), 0, "a write through a translated pointer reached the child");
	cr_assert_eq(smmu_cpu_switch_mm(cpu, mm), 0);
	cr_assert_eq(smmu_load64(cpu, a + PS), 9);
	cr_assert_eq(smmu_mm_destroy(child), 0);
	cr_assert_eq(smmu_munmap(mm, a, 2 * PS), 0);
}

Test(dup, bad_input, .init = setup, .fini = teardown)
{
	struct smmu_mm *child = (struct smmu_mm *)&child;
	cr_assert_eq(smmu_mm_dup(NULL, &child), -EINVAL);
	cr_assert_eq(smmu_mm_dup(mm, NULL), -EINVAL);
	cr_assert_eq(child, (struct smmu_mm *)&child, "an error wrote *child");
}
