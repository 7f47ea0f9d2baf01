/* SPDX-License-Identifier: MIT */
/*
 * smmu_thread_create / smmu_thread_create_ex / smmu_thread_join (issue 8):
 * threads that are CPUs from their first instruction to their last.
 * Public API only.
 *
 *  - fn runs as a CPU of mm (smmu_cpu_self, smmu_cpu_mm) and its result
 *    comes back through smmu_thread_join;
 *  - the pthread attributes are passed through (stack size, detached);
 *  - returning, pthread_exit, unregistering first, or ending in another mm
 *    after a switch all leave no CPU behind (smmu_mm_destroy succeeds);
 *  - a registration that fails (bad cfg, fake mm) or a pthread_create that
 *    fails returns the error, fn never runs and no thread is left;
 *  - NULL arguments are -EINVAL, joining oneself -EDEADLK;
 *  - threads that exit while shootdowns (signal) or grace periods (RCU)
 *    target them: no hang, no crash, nothing leaked;
 *  - created from an online CPU of an RCU-mode mm, without deadlock, and
 *    from a signal-mode CPU that shootdowns keep signalling meanwhile.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <softmmu/softmmu.h>

#include "common.h"

static _Alignas(4096) unsigned char fake_zero[8192];

static struct smmu_pool *pool;
static struct smmu_mm *mm, *mm2;

static void setup_mode(enum smmu_shootdown_mode mode)
{
	struct smmu_pool_config cfg = {.size = 256 * PS, .flags = SMMU_POOL_POISON};
	struct smmu_mm_config mc = {.mode = mode};
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create_ex(pool, &mc, &mm), 0);
	cr_assert_eq(smmu_mm_create_ex(pool, &mc, &mm2), 0);
	smmu_addr_t out;
	cr_assert_eq(smmu_mmap(mm, H, 64 * PS, RW, SMMU_MAP_FIXED, &out), 0);
	cr_assert_eq(smmu_mmap(mm2, H, 64 * PS, RW, SMMU_MAP_FIXED, &out), 0);
}

static void setup(void)
{
	setup_mode(SMMU_SHOOTDOWN_SIGNAL);
}

static void teardown(void)
{
	cr_expect_eq(smmu_mm_destroy(mm), 0, "a CPU was left registered in mm");
	cr_expect_eq(smmu_mm_destroy(mm2), 0, "a CPU was left registered in mm2");
	cr_expect_eq(smmu_pool_free_frames(pool), smmu_pool_frames(pool), "frames leaked");
	cr_expect_eq(smmu_pool_destroy(pool), 0);
}

/* Threads of this process (entries of /proc/self/task). */
static int thread_count(void)
{
	DIR *d = opendir("/proc/self/task");
	cr_assert_not_null(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* Wait up to 5 s for the thread count to come down to n (an exited
 * thread's task lingers a moment after join returns on some kernels). */
static int thread_count_settles(int n)
{
	for (int i = 0; i < 500; i++) {
		if (thread_count() == n)
			return 1;
		struct timespec ts = {0, 10000000};
		nanosleep(&ts, NULL);
	}
	return 0;
}

/* ------------------------------------------------------------ basics */

struct basic {
	struct smmu_mm *want_mm;
	struct smmu_cpu *seen;
	int ran, self_ok, mm_ok;
	uint64_t read;
	struct tfail tf;
};

static void *basic_fn(void *arg)
{
	struct basic *b = arg;
	b->ran = 1;
	struct smmu_cpu *cpu = smmu_cpu_self();
	b->seen = cpu;
	b->self_ok = cpu != NULL;
	if (!cpu)
		return NULL;
	b->mm_ok = smmu_cpu_mm(cpu) == b->want_mm;
	smmu_store64(cpu, H + 8, 0xc0ffee);
	b->read = smmu_load64(cpu, H + 8);
	TCHECK(&b->tf, smmu_cpu_offline(cpu) == 0, "offline");
	TCHECK(&b->tf, smmu_cpu_online(cpu) == 0, "online");
	return (void *)(uintptr_t)0x1234;
}

Test(thread, fn_runs_as_a_cpu_of_mm_and_returns_through_join, .init = setup, .fini = teardown)
{
	struct basic b = {.want_mm = mm};
	pthread_t t;
	cr_assert_eq(smmu_thread_create(&t, NULL, mm, basic_fn, &b), 0);
	void *ret = NULL;
	cr_assert_eq(smmu_thread_join(t, &ret), 0);
	cr_assert(b.ran);
	cr_assert(b.self_ok, "smmu_cpu_self() was NULL inside fn");
	cr_assert(b.mm_ok, "smmu_cpu_mm(self) was not mm");
	cr_assert_eq(b.read, 0xc0ffee);
	cr_assert_eq(ret, (void *)(uintptr_t)0x1234);
	cr_assert(!b.tf.failed, "%s", b.tf.why);
	cr_assert_null(smmu_cpu_self(), "the creating thread became a CPU");

	/* _ex with a config, and join without a result. */
	struct smmu_cpu_config cc = {.tlb_entries = 16, .tlb_max_entries = 64, .asids = 2};
	struct basic b2 = {.want_mm = mm2};
	cr_assert_eq(smmu_thread_create_ex(&t, NULL, mm2, &cc, basic_fn, &b2), 0);
	cr_assert_eq(smmu_thread_join(t, NULL), 0);
	cr_assert(b2.self_ok && b2.mm_ok);
	cr_assert_eq(b2.read, 0xc0ffee);
	struct basic b3 = {.want_mm = mm};
	cr_assert_eq(smmu_thread_create_ex(&t, NULL, mm, NULL, basic_fn, &b3), 0, "NULL cfg means defaults");
	cr_assert_eq(smmu_thread_join(t, NULL), 0);
	cr_assert(b3.self_ok && b3.mm_ok);

	/* Several at once: distinct CPUs. */
	struct basic bs[4];
	pthread_t ts[4];
	for (int i = 0; i < 4; i++) {
		bs[i] = (struct basic){.want_mm = mm};
		cr_assert_eq(smmu_thread_create(&ts[i], NULL, mm, basic_fn, &bs[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(smmu_thread_join(ts[i], NULL), 0);
		cr_assert(bs[i].self_ok && bs[i].mm_ok);
	}
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(mm, &st), 0);
	cr_assert_eq(st.faults_demand_zero, 1, "one page touched by every thread");
}

/* ------------------------------------------------------------ attributes */

struct attr_seen {
	size_t stack;
	int detach;
	int is_cpu;
	atomic_int done;
};

static void *attr_fn(void *arg)
{
	struct attr_seen *s = arg;
	pthread_attr_t a;
	if (pthread_getattr_np(pthread_self(), &a) == 0) {
		pthread_attr_getstacksize(&a, &s->stack);
		pthread_attr_getdetachstate(&a, &s->detach);
		pthread_attr_destroy(&a);
	}
	struct smmu_cpu *cpu = smmu_cpu_self();
	s->is_cpu = cpu != NULL && smmu_cpu_mm(cpu) == mm;
	if (cpu)
		smmu_store64(cpu, H, 1);
	atomic_store(&s->done, 1);
	return NULL;
}

/* Not the default (8 MiB, or ulimit -s); the sanitizers' pthread_create
 * may add room for their own per-thread data, hence the slack below. */
#define SMALL_STACK ((size_t)3 * 1024 * 1024)

Test(thread, pthread_attributes_are_passed_through, .init = setup, .fini = teardown, .timeout = 30)
{
	pthread_attr_t attr;
	cr_assert_eq(pthread_attr_init(&attr), 0);
	size_t want = SMALL_STACK < (size_t)PTHREAD_STACK_MIN ? (size_t)PTHREAD_STACK_MIN : SMALL_STACK;
	cr_assert_eq(pthread_attr_setstacksize(&attr, want), 0);
	struct attr_seen s = {0};
	pthread_t t;
	cr_assert_eq(smmu_thread_create(&t, &attr, mm, attr_fn, &s), 0);
	cr_assert_eq(smmu_thread_join(t, NULL), 0);
	cr_assert(s.is_cpu);
	cr_assert_geq(s.stack, want);
	cr_assert_lt(s.stack, want + 1024 * 1024, "stack size %zu, asked for %zu: attr not passed through", s.stack,
		     want);
	cr_assert_eq(s.detach, PTHREAD_CREATE_JOINABLE);

	/* Detached: never joined; its CPU still goes away when fn returns. */
	cr_assert_eq(pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED), 0);
	struct attr_seen d = {0};
	cr_assert_eq(smmu_thread_create(&t, &attr, mm, attr_fn, &d), 0);
	pthread_attr_destroy(&attr);
	for (int i = 0; i < 1000 && !atomic_load(&d.done); i++) {
		struct timespec ts = {0, 5000000};
		nanosleep(&ts, NULL);
	}
	cr_assert(atomic_load(&d.done), "the detached thread did not run");
	cr_assert(d.is_cpu);
	cr_assert_eq(d.detach, PTHREAD_CREATE_DETACHED, "detached state not passed through");
	/* Until its destructor ran, mm is busy; then it can go. */
	int r = -EBUSY;
	for (int i = 0; i < 1000 && r == -EBUSY; i++) {
		r = smmu_mm_destroy(mm);
		if (r == -EBUSY) {
			struct timespec ts = {0, 5000000};
			nanosleep(&ts, NULL);
		}
	}
	cr_assert_eq(r, 0, "a detached smmu thread left its CPU registered (%d)", r);
	/* teardown destroys it again: make a fresh one for it */
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
}

/* ------------------------------------------------------------ ways to end */

enum how { END_RETURN, END_PTHREAD_EXIT, END_UNREGISTER_FIRST, END_IN_OTHER_MM, END_OFFLINE };

static void *ending_fn(void *arg)
{
	enum how h = (enum how)(uintptr_t)arg;
	struct smmu_cpu *cpu = smmu_cpu_self();
	if (!cpu)
		return (void *)(uintptr_t)0xbad;
	smmu_store64(cpu, H + 16 * (unsigned)h, h);
	switch (h) {
	case END_RETURN:
		return (void *)(uintptr_t)(100 + h);
	case END_PTHREAD_EXIT:
		pthread_exit((void *)(uintptr_t)(100 + h));
	case END_UNREGISTER_FIRST:
		if (smmu_cpu_unregister(cpu) != 0 || smmu_cpu_self() != NULL)
			return (void *)(uintptr_t)0xbad;
		return (void *)(uintptr_t)(100 + h);
	case END_IN_OTHER_MM:
		if (smmu_cpu_switch_mm(cpu, mm2) != 0)
			return (void *)(uintptr_t)0xbad;
		smmu_store64(cpu, H + 16 * (unsigned)h, h);
		return (void *)(uintptr_t)(100 + h);
	case END_OFFLINE:
		smmu_cpu_offline(cpu);
		return (void *)(uintptr_t)(100 + h);
	}
	return NULL;
}

Test(thread, every_way_of_ending_unregisters, .init = setup, .fini = teardown, .timeout = 30)
{
	for (int h = END_RETURN; h <= END_OFFLINE; h++) {
		pthread_t t;
		cr_assert_eq(smmu_thread_create(&t, NULL, mm, ending_fn, (void *)(uintptr_t)h), 0);
		void *ret = NULL;
		cr_assert_eq(smmu_thread_join(t, &ret), 0);
		cr_assert_eq(ret, (void *)(uintptr_t)(100 + h), "ending %d: fn's result", h);
		cr_assert_eq(smmu_mm_destroy(mm), 0, "ending %d left a CPU registered in mm", h);
		cr_assert_eq(smmu_mm_destroy(mm2), 0, "ending %d left a CPU registered in mm2", h);
		cr_assert_eq(smmu_mm_create(pool, &mm), 0);
		cr_assert_eq(smmu_mm_create(pool, &mm2), 0);
		smmu_addr_t out;
		cr_assert_eq(smmu_mmap(mm, H, 64 * PS, RW, SMMU_MAP_FIXED, &out), 0);
		cr_assert_eq(smmu_mmap(mm2, H, 64 * PS, RW, SMMU_MAP_FIXED, &out), 0);
	}
}

/* ------------------------------------------------------------ failures */

static atomic_int never_ran;

static void *must_not_run(void *arg)
{
	(void)arg;
	atomic_fetch_add(&never_ran, 1);
	return NULL;
}

Test(thread, failed_registration_returns_the_error_and_leaves_no_thread, .init = setup, .fini = teardown, .timeout = 30)
{
	int n0 = thread_count();
	pthread_t t;
	struct smmu_cpu_config bad[] = {
		{.tlb_entries = 3},                         /* not a power of two */
		{.tlb_entries = 8},                         /* below 16 */
		{.tlb_entries = 64, .tlb_max_entries = 32}, /* max below start */
		{.tlb_entries = (size_t)1 << 23},           /* above 2^22 */
		{.asids = SMMU_ASIDS_MAX + 1},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = smmu_thread_create_ex(&t, NULL, mm, &bad[i], must_not_run, NULL);
		cr_assert_eq(r, -EINVAL, "bad cfg %zu: %d", i, r);
	}
	cr_assert_eq(smmu_thread_create(&t, NULL, (struct smmu_mm *)fake_zero, must_not_run, NULL), -EINVAL);
	/* pthread_create itself fails: a stack no machine can give. */
	pthread_attr_t attr;
	cr_assert_eq(pthread_attr_init(&attr), 0);
	cr_assert_eq(pthread_attr_setstacksize(&attr, (size_t)1 << 50), 0);
	int r = smmu_thread_create(&t, &attr, mm, must_not_run, NULL);
	pthread_attr_destroy(&attr);
	cr_assert(r == -EAGAIN || r == -ENOMEM, "impossible stack: %d", r);
	cr_assert(thread_count_settles(n0), "a failed smmu_thread_create left a thread (%d, was %d)", thread_count(),
		  n0);
	cr_assert_eq(atomic_load(&never_ran), 0, "fn ran although the creation failed");
	/* Nothing registered: both mms can go (teardown checks) and a good
	 * create still works. */
	struct basic b = {.want_mm = mm};
	cr_assert_eq(smmu_thread_create(&t, NULL, mm, basic_fn, &b), 0);
	cr_assert_eq(smmu_thread_join(t, NULL), 0);
	cr_assert(b.self_ok && b.mm_ok);
}

Test(thread, null_arguments, .init = setup, .fini = teardown)
{
	pthread_t t;
	struct smmu_cpu_config cc = {0};
	cr_assert_eq(smmu_thread_create(NULL, NULL, mm, must_not_run, NULL), -EINVAL);
	cr_assert_eq(smmu_thread_create(&t, NULL, NULL, must_not_run, NULL), -EINVAL);
	cr_assert_eq(smmu_thread_create(&t, NULL, mm, NULL, NULL), -EINVAL);
	cr_assert_eq(smmu_thread_create_ex(NULL, NULL, mm, &cc, must_not_run, NULL), -EINVAL);
	cr_assert_eq(smmu_thread_create_ex(&t, NULL, NULL, &cc, must_not_run, NULL), -EINVAL);
	cr_assert_eq(smmu_thread_create_ex(&t, NULL, mm, &cc, NULL, NULL), -EINVAL);
	cr_assert_eq(smmu_thread_join(pthread_self(), NULL), -EDEADLK);
	cr_assert_eq(atomic_load(&never_ran), 0);
}

/* ------------------------------------------------------------ exits under shootdowns */

struct storm {
	struct smmu_mm *a, *b;
	atomic_int stop;
	atomic_long touches;
	int rcu;
};

/* Touch pages the main thread keeps unmapping, then leave in one of
 * several ways (possibly from the other mm). */
static void *short_lived(void *arg)
{
	struct storm *s = arg;
	struct smmu_cpu *cpu = smmu_cpu_self();
	if (!cpu)
		return (void *)(uintptr_t)0xbad;
	unsigned me = smmu_cpu_id(cpu);
	uint64_t v;
	for (int i = 0; i < 64; i++) {
		smmu_try_load64(cpu, H + (smmu_addr_t)((i + me) % 8) * PS, &v); /* may race an unmap */
		smmu_try_store64(cpu, H + (smmu_addr_t)((i + me) % 8) * PS + 8 * (me % 64), i);
		if (s->rcu && i % 8 == 7)
			smmu_quiescent(cpu);
	}
	atomic_fetch_add(&s->touches, 64);
	switch ((me + (unsigned)atomic_load(&s->touches) / 64) % 4) {
	case 0:
		return (void *)(uintptr_t)1;
	case 1:
		pthread_exit((void *)(uintptr_t)1);
	case 2:
		if (smmu_cpu_switch_mm(cpu, s->b) == 0) {
			smmu_try_load64(cpu, H, &v);
			if (s->rcu)
				smmu_quiescent(cpu);
		}
		return (void *)(uintptr_t)1;
	default:
		smmu_cpu_offline(cpu);
		return (void *)(uintptr_t)1;
	}
}

static void exits_while_targeted(enum smmu_shootdown_mode mode)
{
	setup_mode(mode);
	struct storm s = {.a = mm, .b = mm2, .rcu = mode != SMMU_SHOOTDOWN_SIGNAL};
	for (int round = 0; round < 40; round++) {
		pthread_t t[4];
		for (int i = 0; i < 4; i++)
			cr_assert_eq(smmu_thread_create(&t[i], NULL, mm, short_lived, &s), 0);
		for (int i = 0; i < 8; i++) {
			smmu_addr_t got;
			smmu_addr_t p = H + (smmu_addr_t)(i % 8) * PS;
			cr_assert_eq(smmu_munmap(mm, p, PS), 0);
			cr_assert_eq(smmu_mmap(mm, p, PS, RW, SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &got), 0);
			cr_assert_eq(smmu_mprotect(mm, p, PS, SMMU_PROT_READ), 0);
			cr_assert_eq(smmu_mprotect(mm, p, PS, RW), 0);
		}
		for (int i = 0; i < 4; i++) {
			void *ret = NULL;
			cr_assert_eq(smmu_thread_join(t[i], &ret), 0);
			cr_assert_eq(ret, (void *)(uintptr_t)1);
		}
	}
	cr_assert_eq(atomic_load(&s.touches), 40 * 4 * 64);
	cr_assert_eq(smmu_munmap(mm, H, 64 * PS), 0);
	cr_assert_eq(smmu_munmap(mm2, H, 64 * PS), 0);
	teardown();
}

Test(thread, exits_while_signal_shootdowns_target_them, .timeout = 120)
{
	exits_while_targeted(SMMU_SHOOTDOWN_SIGNAL);
}

Test(thread, exits_while_grace_periods_wait_for_them, .timeout = 120)
{
	exits_while_targeted(SMMU_SHOOTDOWN_RCU);
}

Test(thread, exits_with_deferred_frees_pending, .timeout = 120)
{
	exits_while_targeted(SMMU_SHOOTDOWN_RCU_DEFERRED);
}

/* ------------------------------------------------------------ from an RCU CPU */

static void *rcu_child(void *arg)
{
	(void)arg;
	struct smmu_cpu *cpu = smmu_cpu_self();
	if (!cpu)
		return (void *)(uintptr_t)0xbad;
	smmu_store64(cpu, H + 2 * PS, 5);
	/* A grace period: the creator must not hold it up. */
	if (smmu_munmap(mm, H + 3 * PS, PS) != 0)
		return (void *)(uintptr_t)0xbad;
	smmu_quiescent(cpu);
	return (void *)(uintptr_t)7;
}

Test(thread, created_by_an_online_rcu_cpu, .timeout = 60)
{
	setup_mode(SMMU_SHOOTDOWN_RCU);
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	smmu_store64(cpu, H + 3 * PS, 1); /* online, holding a page the child unmaps */
	for (int i = 0; i < 5; i++) {
		pthread_t t;
		cr_assert_eq(smmu_thread_create(&t, NULL, mm, rcu_child, NULL), 0);
		smmu_quiescent(cpu);
		cr_assert_eq(smmu_cpu_offline(cpu), 0); /* about to block in join */
		void *ret = NULL;
		cr_assert_eq(smmu_thread_join(t, &ret), 0);
		cr_assert_eq(smmu_cpu_online(cpu), 0);
		cr_assert_eq(ret, (void *)(uintptr_t)7);
		uint64_t v;
		cr_assert_eq(smmu_try_load64(cpu, H + 3 * PS, &v), -EFAULT);
		smmu_addr_t got;
		cr_assert_eq(smmu_mmap(mm, H + 3 * PS, PS, RW, SMMU_MAP_FIXED, &got), 0);
		smmu_store64(cpu, H + 3 * PS, 1);
	}
	cr_assert_eq(smmu_load64(cpu, H + 2 * PS), 5);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	teardown();
}

/* ------------------------------------------------------------ from a signalled CPU */

/* The creator is an online CPU holding pages that another thread keeps
 * unmapping: it is signalled while smmu_thread_create waits for the new
 * thread's registration, answers, and the creation goes on. */
struct churn {
	atomic_int stop;
	long rounds;
};

static void *churn_main(void *arg)
{
	struct churn *c = arg;
	while (!atomic_load(&c->stop)) {
		for (int i = 0; i < 8; i++) {
			smmu_addr_t got, p = H + (smmu_addr_t)(16 + i) * PS; /* basic_fn uses page 0 */
			cr_assert_eq(smmu_munmap(mm, p, PS), 0);
			cr_assert_eq(smmu_mmap(mm, p, PS, RW, SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &got), 0);
		}
		c->rounds++;
	}
	return NULL;
}

Test(thread, created_by_a_cpu_that_shootdowns_target, .init = setup, .fini = teardown, .timeout = 120)
{
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	struct churn c = {0};
	pthread_t u;
	cr_assert_eq(pthread_create(&u, NULL, churn_main, &c), 0);
	struct smmu_stats s0;
	cr_assert_eq(smmu_stats_get(mm, &s0), 0);
	for (int i = 0; i < 100; i++) {
		uint64_t v;
		for (int k = 0; k < 8; k++)
			smmu_try_load64(cpu, H + (smmu_addr_t)(16 + k) * PS, &v); /* hold entries: be a target */
		struct basic b = {.want_mm = mm};
		pthread_t t;
		cr_assert_eq(smmu_thread_create(&t, NULL, mm, basic_fn, &b), 0, "round %d", i);
		cr_assert_eq(smmu_cpu_offline(cpu), 0); /* about to block in join */
		cr_assert_eq(smmu_thread_join(t, NULL), 0);
		cr_assert_eq(smmu_cpu_online(cpu), 0);
		cr_assert(b.self_ok && b.mm_ok, "round %d", i);
		cr_assert_eq(b.read, 0xc0ffee);
	}
	atomic_store(&c.stop, 1);
	cr_assert_eq(pthread_join(u, NULL), 0);
	struct smmu_stats s1;
	cr_assert_eq(smmu_stats_get(mm, &s1), 0);
	cr_assert_gt(s1.signals_received, s0.signals_received, "the creator was never signalled: no test");
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
}
