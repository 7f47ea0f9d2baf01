/* SPDX-License-Identifier: MIT */
/*
 * The signal shootdown's ordering rules, each forced into the one
 * interleaving where breaking it shows.  Test hooks (lib/testhook.h) stop
 * threads at named points of the protocol; the test drives the order.
 *
 * This file is built once against the library with hooks (every test must
 * pass) and once per broken variant SMMU_BREAK=N (ctest expects the
 * "RULE N VIOLATED" message of test ruleN; see test/CMakeLists.txt), which
 * proves each test fails when its rule is broken.
 *
 *   rule1: a signal that lands inside an access is acknowledged only after
 *          the end of the access flushed what it filled;
 *   rule2: acknowledgements are a maximum: a deferred acknowledgement of an
 *          older request does not undo a newer one;
 *   rule3: the handler clears "signal pending" before it reads the mailbox;
 *   rule4: the initiator merges its request before it reads that flag;
 *   rule5: (RCU modes) smmu_quiescent announces the quiescent state before
 *          it compares the flush generation.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include <softmmu/softmmu.h>

#include "cpu.h"
#include "testhook.h"

#define WAIT_NS 3000000000ull

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Spin until *flag is set; false after WAIT_NS.  Async-signal-safe. */
static bool await(atomic_int *flag)
{
	uint64_t t0 = now_ns();
	while (!atomic_load(flag))
		if (now_ns() - t0 > WAIT_NS)
			return false;
	return true;
}

static struct smmu_pool *pool;
static struct smmu_mm *mm;
static smmu_addr_t pages; /* 8 pages, read-write, populated */
static struct smmu__cpu *x;      /* the target CPU */
static pthread_t i2_thread;      /* the second initiator */

/* Flags the hook and the threads use to order each scenario. */
static atomic_int armed, x_walked, x_signalled, x_before_ack, i2_acked, i2_posted, x_in_handler, x_acked,
	unmapped, x_blocked, done_x, done_i2, stop_x;
static _Atomic int rule;

static smmu_addr_t P(int i)
{
	return pages + (smmu_addr_t)i * 4096;
}

static void hook(enum smmu__hook point, struct smmu__cpu *c, int in_handler)
{
	if (point == SMMU_HOOK_RCU_LOGGED && atomic_load(&rule) == 5) {
		atomic_store(&i2_posted, 1);
		return;
	}
	if (c != x)
		return;
	switch (atomic_load(&rule)) {
	case 1:
		if (point == SMMU_HOOK_WALKED && !in_handler && atomic_exchange(&armed, 0)) {
			atomic_store(&x_walked, 1);
			await(&x_signalled); /* the shootdown signal lands here */
		} else if ((point == SMMU_HOOK_HANDLER_DEFERRED || point == SMMU_HOOK_ACKED) && in_handler) {
			atomic_store(&x_signalled, 1);
		}
		break;
	case 2:
		if (point == SMMU_HOOK_WALKED && !in_handler && atomic_exchange(&armed, 0)) {
			atomic_store(&x_walked, 1);
			await(&x_signalled);
		} else if (point == SMMU_HOOK_HANDLER_DEFERRED && in_handler) {
			atomic_store(&x_signalled, 1);
		} else if (point == SMMU_HOOK_BEFORE_ACK && !in_handler && atomic_load(&x_signalled) &&
			   !atomic_exchange(&x_before_ack, 1)) {
			await(&i2_acked); /* the second request is handled here */
		} else if (point == SMMU_HOOK_ACKED && in_handler && atomic_load(&x_before_ack)) {
			atomic_store(&i2_acked, 1);
		} else if (point == SMMU_HOOK_ACKED && !in_handler && atomic_load(&i2_acked)) {
			atomic_store(&x_acked, 1); /* the older, deferred acknowledgement is stored */
		}
		break;
	case 3:
		if (point == SMMU_HOOK_HANDLER_READ && in_handler && atomic_exchange(&armed, 0)) {
			atomic_store(&x_in_handler, 1);
			await(&i2_posted);
		} else if (point == SMMU_HOOK_POSTED && pthread_equal(pthread_self(), i2_thread)) {
			atomic_store(&i2_posted, 1);
		}
		break;
	case 5:
		if (point == SMMU_HOOK_QUIESCENT && atomic_exchange(&armed, 0)) {
			atomic_store(&x_in_handler, 1);
			await(&i2_posted); /* the initiator advances the generation here */
		}
		break;
	case 4:
		if (point == SMMU_HOOK_POSTED && pthread_equal(pthread_self(), i2_thread)) {
			atomic_store(&i2_posted, 1);
			await(&x_acked); /* X's handler runs to the end here */
		} else if (point == SMMU_HOOK_ACKED && in_handler) {
			atomic_store(&x_acked, 1);
		}
		break;
	}
}

static void setup(void)
{
	struct smmu_pool_config cfg = { .size = 1 << 20, .flags = SMMU_POOL_POISON };
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
	cr_assert_eq(smmu_mmap(mm, 0, 8 * 4096, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE, &pages), 0);
	smmu__test_hook = hook;
}

static void teardown(void)
{
	smmu__test_hook = NULL;
	smmu_munmap(mm, pages, 8 * 4096);
	smmu_mm_destroy(mm);
	smmu_pool_destroy(pool);
}

static void register_x(void)
{
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	__atomic_store_n(&x, smmu__cpu_of(cpu), __ATOMIC_RELEASE);
}

/* ---- rule 1 */

static atomic_int rule1_result = 1;

static void *rule1_x(void *arg)
{
	(void)arg;
	register_x();
	uint64_t v;
	atomic_store(&armed, 1);
	smmu_try_load64(&x->pub, P(0), &v); /* stops at WALKED; the signal lands */
	await(&unmapped);
	atomic_store(&rule1_result, smmu_try_load64(&x->pub, P(0), &v));
	smmu_cpu_unregister(&x->pub);
	return NULL;
}

Test(rules, rule1_flush_after_fill, .init = setup, .fini = teardown, .timeout = 20)
{
	pthread_t t;
	atomic_store(&rule, 1);
	pthread_create(&t, NULL, rule1_x, NULL);
	cr_assert(await(&x_walked), "X never reached the walk");
	cr_assert_eq(smmu_munmap(mm, P(0), 4096), 0);
	atomic_store(&unmapped, 1);
	pthread_join(t, NULL);
	cr_assert_eq(atomic_load(&rule1_result), -EFAULT,
		     "RULE 1 VIOLATED: an access completed through a translation after munmap returned (got %d)",
		     atomic_load(&rule1_result));
}

/* ---- rule 2 */

static void *rule2_x(void *arg)
{
	(void)arg;
	register_x();
	uint64_t v;
	smmu_try_load64(&x->pub, P(1), &v); /* P1 and P3 cached: both unmaps target X */
	smmu_try_load64(&x->pub, P(3), &v);
	atomic_store(&armed, 1);
	smmu_try_load64(&x->pub, P(2), &v); /* deferred, then acknowledged at the end */
	await(&stop_x);
	smmu_cpu_unregister(&x->pub);
	return NULL;
}

static void *rule2_i2(void *arg)
{
	(void)arg;
	await(&x_before_ack);
	smmu_munmap(mm, P(3), 4096);
	atomic_store(&done_i2, 1);
	return NULL;
}

Test(rules, rule2_ack_is_max, .init = setup, .fini = teardown, .timeout = 20)
{
	pthread_t t;
	atomic_store(&rule, 2);
	pthread_create(&t, NULL, rule2_x, NULL);
	pthread_create(&i2_thread, NULL, rule2_i2, NULL);
	cr_assert(await(&x_walked), "X never reached the walk");
	cr_assert_eq(smmu_munmap(mm, P(1), 4096), 0);
	cr_assert(await(&i2_acked), "the second request was never handled");
	cr_assert(await(&x_acked), "the deferred acknowledgement was never stored");
	uint32_t req = atomic_load(&x->req_seq), ack = atomic_load(&x->ack_seq);
	cr_assert_eq(ack, req, "RULE 2 VIOLATED: acknowledgement went back to %u after %u requests", ack, req);
	cr_assert(await(&done_i2), "RULE 2 VIOLATED: the second initiator never saw its acknowledgement");
	atomic_store(&stop_x, 1);
	pthread_join(t, NULL);
	pthread_join(i2_thread, NULL);
}

/* ---- rule 3 */

static void *rule3_x(void *arg)
{
	(void)arg;
	register_x();
	uint64_t v;
	smmu_try_load64(&x->pub, P(1), &v); /* P1 and P2 cached: both unmaps target X */
	smmu_try_load64(&x->pub, P(2), &v);
	while (!atomic_load(&stop_x))
		; /* outside any access: the handler processes at once */
	smmu_cpu_unregister(&x->pub);
	atomic_store(&done_x, 1);
	return NULL;
}

static void *rule3_i2(void *arg)
{
	(void)arg;
	await(&x_in_handler);
	smmu_munmap(mm, P(2), 4096);
	atomic_store(&done_i2, 1);
	return NULL;
}

Test(rules, rule3_pending_cleared_before_read, .init = setup, .fini = teardown, .timeout = 20)
{
	pthread_t t;
	atomic_store(&rule, 3);
	pthread_create(&t, NULL, rule3_x, NULL);
	while (!__atomic_load_n(&x, __ATOMIC_ACQUIRE) || !atomic_load(&x->loaded))
		;
	pthread_create(&i2_thread, NULL, rule3_i2, NULL);
	atomic_store(&armed, 1);
	cr_assert_eq(smmu_munmap(mm, P(1), 4096), 0);
	cr_assert(await(&done_i2), "RULE 3 VIOLATED: a request posted while the handler ran was never handled");
	atomic_store(&stop_x, 1);
	pthread_join(t, NULL);
	pthread_join(i2_thread, NULL);
}

/* ---- rule 4 */

static void *rule4_x(void *arg)
{
	(void)arg;
	register_x();
	uint64_t v;
	smmu_try_load64(&x->pub, P(1), &v); /* P1 and P2 cached: both unmaps target X */
	smmu_try_load64(&x->pub, P(2), &v);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, smmu_shootdown_signal());
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* hold the first signal */
	atomic_store(&x_blocked, 1);
	await(&i2_posted);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL); /* the handler runs here */
	while (!atomic_load(&stop_x))
		smmu_try_load64(&x->pub, P(0), &v);
	smmu_cpu_unregister(&x->pub);
	return NULL;
}

static void *rule4_i1(void *arg)
{
	(void)arg;
	smmu_munmap(mm, P(1), 4096);
	return NULL;
}

static void *rule4_i2(void *arg)
{
	(void)arg;
	smmu_munmap(mm, P(2), 4096);
	atomic_store(&done_i2, 1);
	return NULL;
}

Test(rules, rule4_merge_before_flag, .init = setup, .fini = teardown, .timeout = 20)
{
	pthread_t t, i1;
	atomic_store(&rule, 4);
	pthread_create(&t, NULL, rule4_x, NULL);
	cr_assert(await(&x_blocked));
	pthread_create(&i1, NULL, rule4_i1, NULL);
	while (!atomic_load(&x->signal_pending))
		; /* the first signal is in flight */
	pthread_create(&i2_thread, NULL, rule4_i2, NULL);
	cr_assert(await(&done_i2), "RULE 4 VIOLATED: a request merged after the flag was read was never handled");
	atomic_store(&stop_x, 1);
	pthread_join(i1, NULL);
	pthread_join(t, NULL);
	pthread_join(i2_thread, NULL);
}

/* ---- rule 5 */

static atomic_int rule5_result = 1;

static void *rule5_x(void *arg)
{
	(void)arg;
	register_x();
	uint64_t v;
	smmu_try_load64(&x->pub, P(4), &v); /* P4 cached */
	atomic_store(&armed, 1);
	smmu_quiescent(&x->pub); /* stops between announce and compare */
	atomic_store(&rule5_result, smmu_try_load64(&x->pub, P(4), &v));
	while (!atomic_load(&stop_x))
		smmu_quiescent(&x->pub); /* lets the grace period end */
	smmu_cpu_unregister(&x->pub);
	return NULL;
}

static void *rule5_unmap(void *arg)
{
	(void)arg;
	smmu_munmap(mm, P(4), 4096);
	atomic_store(&done_i2, 1);
	return NULL;
}

Test(rules, rule5_quiescent_announces_before_compare, .timeout = 20)
{
	struct smmu_pool_config cfg = { .size = 1 << 20, .flags = SMMU_POOL_POISON };
	struct smmu_mm_config mc = { .mode = SMMU_SHOOTDOWN_RCU };
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create_ex(pool, &mc, &mm), 0);
	cr_assert_eq(smmu_mmap(mm, 0, 8 * 4096, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE, &pages), 0);
	smmu__test_hook = hook;
	atomic_store(&rule, 5);
	pthread_t t, u;
	pthread_create(&t, NULL, rule5_x, NULL);
	cr_assert(await(&x_in_handler), "X never reached its quiescent state");
	pthread_create(&u, NULL, rule5_unmap, NULL);
	while (atomic_load(&rule5_result) == 1)
		;
	int got = atomic_load(&rule5_result);
	atomic_store(&stop_x, 1);
	pthread_join(u, NULL);
	pthread_join(t, NULL);
	cr_assert_eq(got, -EFAULT,
		     "RULE 5 VIOLATED: after its quiescent state, X used a translation a grace period was waiting on (got %d)",
		     got);
	teardown();
}
