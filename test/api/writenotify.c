/* SPDX-License-Identifier: MIT */
/*
 * Write-protect-and-notify: the first write to each armed page calls the
 * mm's handler before the write lands, on the writing CPU (local or
 * remote, also when its TLB held the page writable), or with cpu NULL for
 * smmu_mm_translate; reads never notify; a failing handler fails the
 * write and keeps the page armed; arming follows mprotect and mremap;
 * bad input.  Public API only.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include <softmmu/softmmu.h>

#include "common.h"

/* What the handler saw.  Sync: atomics (a remote CPU's thread calls it). */
static struct smmu_mm *seen_mm;
static _Atomic int calls;
static _Atomic(smmu_addr_t) last_addr;
static _Atomic(struct smmu_cpu *) last_cpu;
static _Atomic int last_error = 1, last_kind;
static _Atomic uint64_t value_before; /* the word at last_addr when the handler ran */
static _Atomic int fail_with;

static int handler(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	cr_assert_eq(arg, &calls);
	atomic_fetch_add(&calls, 1);
	atomic_store(&last_addr, f->addr);
	atomic_store(&last_cpu, cpu);
	atomic_store(&last_error, f->error);
	atomic_store(&last_kind, (int)f->kind);
	void *p;
	/* The write has not landed: read the page through the mm. */
	if (smmu_mm_translate(seen_mm, f->addr & ~(smmu_addr_t)7, SMMU_PROT_READ, &p) == 0)
		atomic_store(&value_before, *(uint64_t *)p);
	return atomic_load(&fail_with);
}

static void reset(void)
{
	atomic_store(&calls, 0);
	atomic_store(&last_addr, 0);
	atomic_store(&last_cpu, NULL);
	atomic_store(&fail_with, 0);
}

static smmu_addr_t map(struct env *e, smmu_addr_t at, size_t len, int prot)
{
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e->mm, at, len, prot, SMMU_MAP_FIXED_NOREPLACE, &a), 0);
	return a;
}

Test(writenotify, first_write_notified_before_it_lands)
{
	struct env e;
	env_init(&e, 256, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	seen_mm = e.mm;
	reset();
	smmu_addr_t a = map(&e, H, 4 * PS, RW);
	for (int i = 0; i < 3; i++) /* pages 0-2 written: writable in the TLB; page 3 absent */
		smmu_store64(e.cpu, a + (smmu_addr_t)i * PS, 100 + (uint64_t)i);
	smmu_addr_t ro = map(&e, H + 8 * PS, PS, SMMU_PROT_READ);
	cr_assert_eq(smmu_load64(e.cpu, ro), 0);
	cr_assert_eq(smmu_mm_set_write_notify(e.mm, handler, &calls), 0);
	size_t n = 99;
	cr_assert_eq(smmu_write_notify_arm(e.mm, H, 9 * PS, &n), 0);
	cr_assert_eq(n, 3, "armed %zu: only writable pages with a frame", n);
	struct smmu_stats st0;
	cr_assert_eq(smmu_stats_get(e.mm, &st0), 0);

	cr_assert_eq(smmu_load64(e.cpu, a + PS), 101);
	cr_assert_eq(atomic_load(&calls), 0, "a read notified");
	smmu_store64(e.cpu, a + PS + 8, 7); /* the TLB held page 1 writable before arming */
	cr_assert_eq(atomic_load(&calls), 1);
	cr_assert_eq(atomic_load(&last_addr), a + PS + 8);
	cr_assert_eq(atomic_load(&last_cpu), e.cpu);
	cr_assert_eq(atomic_load(&last_error), 0);
	cr_assert_eq(atomic_load(&last_kind), SMMU_ACCESS_WRITE);
	cr_assert_eq(atomic_load(&value_before), 0, "the write landed before the handler ran");
	cr_assert_eq(smmu_load64(e.cpu, a + PS + 8), 7);
	smmu_store64(e.cpu, a + PS + 16, 8);
	smmu_store64(e.cpu, a + PS, 9);
	cr_assert_eq(atomic_load(&calls), 1, "notified twice for one page");

	/* Every write form: bulk write, atomic. */
	cr_assert_eq(smmu_write(e.cpu, a + 2 * PS - 4, "abcdefgh", 8), 0); /* pages 1 and 2 */
	cr_assert_eq(atomic_load(&calls), 2);
	cr_assert_eq(atomic_load(&last_addr), a + 2 * PS);
	cr_assert_eq(smmu_fetch_add64(e.cpu, a, 1), 100);
	cr_assert_eq(atomic_load(&calls), 3);
	cr_assert_eq(atomic_load(&value_before), 100);
	/* Page 3 was faulted in after arming: not armed. */
	smmu_store64(e.cpu, a + 3 * PS, 1);
	cr_assert_eq(atomic_load(&calls), 3);
	struct smmu_stats st1;
	cr_assert_eq(smmu_stats_get(e.mm, &st1), 0);
	cr_assert_eq(st1.write_notifies - st0.write_notifies, 3);

	/* Re-arming is a new round; disarming silences it. */
	cr_assert_eq(smmu_write_notify_arm(e.mm, H, 4 * PS, &n), 0);
	cr_assert_eq(n, 4);
	cr_assert_eq(smmu_write_notify_disarm(e.mm, H, 2 * PS, &n), 0);
	cr_assert_eq(n, 2);
	smmu_store64(e.cpu, a, 5);
	smmu_store64(e.cpu, a + PS, 5);
	cr_assert_eq(atomic_load(&calls), 3);
	smmu_store64(e.cpu, a + 2 * PS, 5);
	cr_assert_eq(atomic_load(&calls), 4);
	cr_assert_eq(smmu_munmap(e.mm, H, 9 * PS), 0);
	env_fini(&e);
}

Test(writenotify, failing_handler_fails_the_write_and_keeps_the_page_armed)
{
	struct env e;
	env_init(&e, 256, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	seen_mm = e.mm;
	reset();
	smmu_addr_t a = map(&e, H, PS, RW);
	smmu_store64(e.cpu, a, 1);
	cr_assert_eq(smmu_mm_set_write_notify(e.mm, handler, &calls), 0);
	cr_assert_eq(smmu_write_notify_arm(e.mm, a, PS, NULL), 0);
	atomic_store(&fail_with, -EPERM);
	cr_assert_eq(smmu_try_store64(e.cpu, a, 2), -EPERM);
	cr_assert_eq(smmu_try_store64(e.cpu, a, 3), -EPERM);
	cr_assert_eq(atomic_load(&calls), 2);
	cr_assert_eq(smmu_load64(e.cpu, a), 1, "a refused write landed");
	atomic_store(&fail_with, 0);
	cr_assert_eq(smmu_try_store64(e.cpu, a, 4), 0);
	cr_assert_eq(smmu_load64(e.cpu, a), 4);
	cr_assert_eq(atomic_load(&calls), 3);
	/* No handler: arming still clears dirty, writes go ahead silently. */
	cr_assert_eq(smmu_mm_set_write_notify(e.mm, NULL, NULL), 0);
	cr_assert_eq(smmu_write_notify_arm(e.mm, a, PS, NULL), 0);
	smmu_store64(e.cpu, a, 5);
	cr_assert_eq(atomic_load(&calls), 3);
	cr_assert_eq(smmu_munmap(e.mm, a, PS), 0);
	env_fini(&e);
}

Test(writenotify, arming_follows_mprotect_and_mremap_and_translate_notifies)
{
	struct env e;
	env_init(&e, 256, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	seen_mm = e.mm;
	reset();
	smmu_addr_t a = map(&e, H, 2 * PS, RW);
	smmu_store64(e.cpu, a, 1);
	smmu_store64(e.cpu, a + PS, 2);
	cr_assert_eq(smmu_mm_set_write_notify(e.mm, handler, &calls), 0);
	cr_assert_eq(smmu_write_notify_arm(e.mm, a, 2 * PS, NULL), 0);
	cr_assert_eq(smmu_mprotect(e.mm, a, PS, SMMU_PROT_READ), 0);
	cr_assert_eq(smmu_try_store64(e.cpu, a, 3), -EACCES);
	cr_assert_eq(smmu_mprotect(e.mm, a, PS, RW), 0);
	smmu_store64(e.cpu, a, 3);
	cr_assert_eq(atomic_load(&calls), 1, "mprotect lost the arming");
	cr_assert_eq(smmu_mremap(e.mm, a + PS, PS, H + 64 * PS, 0), 0);
	smmu_store64(e.cpu, H + 64 * PS + 8, 4);
	cr_assert_eq(atomic_load(&calls), 2, "mremap lost the arming");
	cr_assert_eq(atomic_load(&last_addr), H + 64 * PS + 8);
	cr_assert_eq(smmu_load64(e.cpu, H + 64 * PS), 2);

	cr_assert_eq(smmu_write_notify_arm(e.mm, a, PS, NULL), 0);
	void *p;
	cr_assert_eq(smmu_mm_translate(e.mm, a, SMMU_PROT_READ, &p), 0);
	cr_assert_eq(atomic_load(&calls), 2, "translate for read notified");
	cr_assert_eq(smmu_mm_translate(e.mm, a + 16, RW, &p), 0);
	cr_assert_eq(atomic_load(&calls), 3);
	cr_assert_eq(atomic_load(&last_cpu), NULL, "translate: cpu must be NULL");
	cr_assert_eq(atomic_load(&last_addr), a + 16);
	cr_assert_eq(smmu_munmap(e.mm, a, PS), 0);
	cr_assert_eq(smmu_munmap(e.mm, H + 64 * PS, PS), 0);
	env_fini(&e);
}

/* Pages shared copy-on-write after smmu_mm_dup are writable pages too:
 * arming counts and arms them, and the write that breaks the sharing is
 * notified before it lands, whether the break copies the page or takes it
 * over in place; arming from before the dup survives the copy.  Disarming
 * reaches armed pages that mprotect made read-only meanwhile. */
Test(writenotify, shared_pages_after_dup_are_armed_and_notified)
{
	struct env e;
	env_init(&e, 256, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	seen_mm = e.mm;
	reset();
	smmu_addr_t a = map(&e, H, 3 * PS, RW);
	for (int i = 0; i < 3; i++)
		smmu_store64(e.cpu, a + (smmu_addr_t)i * PS, 1 + (uint64_t)i);
	cr_assert_eq(smmu_mm_set_write_notify(e.mm, handler, &calls), 0);
	size_t n = 99;

	/* Armed before the dup: the break copies the page (the child still
	 * shares it), and the copy stays armed. */
	cr_assert_eq(smmu_write_notify_arm(e.mm, a, PS, &n), 0);
	cr_assert_eq(n, 1);
	struct smmu_mm *child;
	cr_assert_eq(smmu_mm_dup(e.mm, &child), 0);
	smmu_store64(e.cpu, a, 10);
	cr_assert_eq(atomic_load(&calls), 1, "the copy-on-write break lost the arming");
	cr_assert_eq(atomic_load(&last_addr), a);
	cr_assert_eq(atomic_load(&value_before), 1, "the write landed before the handler ran");
	void *p;
	cr_assert_eq(smmu_mm_translate(child, a, SMMU_PROT_READ, &p), 0);
	cr_assert_eq(*(uint64_t *)p, 1, "the child saw the parent's write");

	/* Armed after the dup: shared pages count; one break copies, the
	 * other (the child let go of it) takes the frame over in place. */
	cr_assert_eq(smmu_write_notify_arm(e.mm, a + PS, 2 * PS, &n), 0);
	cr_assert_eq(n, 2, "armed %zu of 2 shared pages", n);
	smmu_store64(e.cpu, a + PS, 20);
	cr_assert_eq(atomic_load(&calls), 2, "a shared page was not armed (copy)");
	cr_assert_eq(atomic_load(&value_before), 2);
	cr_assert_eq(smmu_munmap(child, a + 2 * PS, PS), 0);
	smmu_store64(e.cpu, a + 2 * PS, 30);
	cr_assert_eq(atomic_load(&calls), 3, "a shared page was not armed (taken over in place)");
	cr_assert_eq(atomic_load(&value_before), 3);
	cr_assert_eq(smmu_load64(e.cpu, a + 2 * PS), 30);

	/* A shared page of a read-only mapping is not a writable page. */
	cr_assert_eq(smmu_mprotect(child, a, PS, SMMU_PROT_READ), 0);
	cr_assert_eq(smmu_write_notify_arm(child, a, 2 * PS, &n), 0);
	cr_assert_eq(n, 1, "armed %zu in the child: only its writable shared page", n);
	cr_assert_eq(smmu_write_notify_disarm(child, a, 2 * PS, &n), 0);
	cr_assert_eq(n, 1);

	/* Disarming reaches an armed page that mprotect made read-only. */
	cr_assert_eq(smmu_write_notify_arm(e.mm, a, PS, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(smmu_mprotect(e.mm, a, PS, SMMU_PROT_READ), 0);
	cr_assert_eq(smmu_write_notify_disarm(e.mm, a, PS, &n), 0);
	cr_assert_eq(n, 1, "disarm skipped a read-only armed page");
	cr_assert_eq(smmu_mprotect(e.mm, a, PS, RW), 0);
	smmu_store64(e.cpu, a, 11);
	cr_assert_eq(atomic_load(&calls), 3, "a disarmed page notified");

	cr_assert_eq(smmu_mm_destroy(child), 0);
	cr_assert_eq(smmu_munmap(e.mm, a, 3 * PS), 0);
	env_fini(&e);
}

/* A remote CPU whose TLB holds the page writable is notified on its own
 * thread after arming returns (signal and strict RCU modes: arming waits
 * for every CPU's flush). */
struct remote {
	struct smmu_mm *mm;
	smmu_addr_t a;
	atomic_int phase; /* 1: written once; 2: armed; 3: wrote again */
	struct smmu_cpu *cpu;
};

static void *remote_main(void *arg)
{
	struct remote *r = arg;
	struct smmu_cpu *c;
	cr_assert_eq(smmu_cpu_register(r->mm, &c), 0);
	r->cpu = c;
	smmu_store64(c, r->a, 1);
	atomic_store(&r->phase, 1);
	while (atomic_load(&r->phase) < 2) {
		smmu_store64(c, r->a + 8, 1); /* keeps hitting its writable entry */
		smmu_quiescent(c);
	}
	smmu_store64(c, r->a + 16, 2);
	atomic_store(&r->phase, 3);
	smmu_cpu_unregister(c);
	return NULL;
}

static void remote_notified(enum smmu_shootdown_mode mode)
{
	struct env e;
	env_init(&e, 256, mode, SMMU_POOL_POISON);
	seen_mm = e.mm;
	reset();
	smmu_addr_t a = map(&e, H, PS, RW);
	cr_assert_eq(smmu_mm_set_write_notify(e.mm, handler, &calls), 0);
	struct remote r = { .mm = e.mm, .a = a };
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, remote_main, &r), 0);
	while (atomic_load(&r.phase) < 1)
		;
	if (mode != SMMU_SHOOTDOWN_SIGNAL)
		cr_assert_eq(smmu_cpu_offline(e.cpu), 0); /* grace periods need not wait for us */
	cr_assert_eq(smmu_write_notify_arm(e.mm, a, PS, NULL), 0);
	int before = atomic_load(&calls);
	atomic_store(&r.phase, 2);
	pthread_join(t, NULL);
	if (mode != SMMU_SHOOTDOWN_SIGNAL)
		cr_assert_eq(smmu_cpu_online(e.cpu), 0);
	/* Writes that hit before the arming's flush reached the remote CPU
	 * are before the arming; the first after it notifies, once - maybe
	 * even before the arming returned (its loop runs on meanwhile). */
	cr_assert(before <= 1);
	cr_assert_eq(atomic_load(&calls), 1, "the remote CPU's write after arming was not notified exactly once");
	cr_assert_eq(atomic_load(&last_cpu), r.cpu);
	cr_assert_eq(smmu_load64(e.cpu, a + 16), 2);
	cr_assert_eq(smmu_munmap(e.mm, a, PS), 0);
	env_fini(&e);
}

Test(writenotify, remote_cpu_signal)
{
	remote_notified(SMMU_SHOOTDOWN_SIGNAL);
}

Test(writenotify, remote_cpu_rcu)
{
	remote_notified(SMMU_SHOOTDOWN_RCU);
}

Test(writenotify, bad_input)
{
	struct env e;
	env_init(&e, 256, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	smmu_addr_t a = map(&e, H, PS, RW);
	size_t n = 42;
	cr_assert_eq(smmu_mm_set_write_notify(NULL, handler, NULL), -EINVAL);
	cr_assert_eq(smmu_write_notify_arm(NULL, a, PS, &n), -EINVAL);
	cr_assert_eq(smmu_write_notify_arm(e.mm, a + 1, PS, &n), -EINVAL);
	cr_assert_eq(smmu_write_notify_arm(e.mm, a, 0, &n), -EINVAL);
	cr_assert_eq(smmu_write_notify_arm(e.mm, ~(smmu_addr_t)0 - PS + 1, 2 * PS, &n), -EINVAL);
	cr_assert_eq(smmu_write_notify_disarm(NULL, a, PS, &n), -EINVAL);
	cr_assert_eq(smmu_write_notify_disarm(e.mm, a, 0, &n), -EINVAL);
	cr_assert_eq(n, 42, "an error wrote the count");
	cr_assert_eq(smmu_write_notify_arm(e.mm, a, PS, NULL), 0, "NULL count is fine");
	cr_assert_eq(smmu_munmap(e.mm, a, PS), 0);
	env_fini(&e);
}
