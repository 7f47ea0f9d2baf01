/* SPDX-License-Identifier: MIT */
/*
 * Shootdown by RCU grace periods (liburcu QSBR): strict and deferred mode,
 * quiescent states, no grace period for entries only the caller cached,
 * the deferred backlog bound, coexistence with an
 * application's own liburcu, and the configuration's bad input.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <urcu/urcu-memb.h>
#include <urcu/urcu-qsbr.h>

#include <softmmu/softmmu.h>

#define PAGE 4096u

static struct smmu_pool *pool;
static struct smmu_mm *mm;
static smmu_addr_t base; /* 64 pages, read-write, populated */

static void setup_mode(enum smmu_shootdown_mode mode, size_t deferred_max)
{
	struct smmu_pool_config cfg = { .size = 1 << 20, .flags = SMMU_POOL_POISON };
	struct smmu_mm_config mc = { .mode = mode, .deferred_max = deferred_max };
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create_ex(pool, &mc, &mm), 0);
	cr_assert_eq(smmu_mmap(mm, 0, 64 * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE, &base), 0);
}

static void teardown(void)
{
	smmu_munmap(mm, base, 64 * PAGE);
	cr_expect_eq(smmu_mm_destroy(mm), 0); /* waits for the deferred frees */
	cr_expect_eq(smmu_pool_free_frames(pool), smmu_pool_frames(pool), "frames leaked");
	cr_expect_eq(smmu_pool_destroy(pool), 0);
}

static struct smmu_stats stats(void)
{
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(mm, &st), 0);
	return st;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* A CPU that caches page 3 and pages [8, 56), then loads page 5 and runs
 * quiescent states (or not) until told to check page 3 again.  It never
 * caches pages 56..63. */
struct reader {
	pthread_t t;
	atomic_int ready, quiesce, check, done;
	int result;
	uint64_t value; /* of the last load of page 3 */
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct smmu_cpu *cpu;
	uint64_t v;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	cr_assert_eq(smmu_try_load64(cpu, base + 3 * PAGE, &v), 0);
	for (unsigned p = 8; p < 56; p++)
		smmu_load64(cpu, base + p * PAGE);
	atomic_store(&r->ready, 1);
	while (!atomic_load(&r->check)) {
		if (atomic_load(&r->quiesce))
			cr_assert_eq(smmu_quiescent(cpu), 0);
		smmu_load64(cpu, base + 5 * PAGE);
	}
	r->result = smmu_try_load64(cpu, base + 3 * PAGE, &r->value);
	/* Leave: offline first, so nobody's grace period waits for us. */
	cr_assert_eq(smmu_cpu_offline(cpu), 0);
	atomic_store(&r->done, 1);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	return NULL;
}

static void reader_start(struct reader *r, bool quiesce)
{
	atomic_store(&r->quiesce, quiesce);
	pthread_create(&r->t, NULL, reader_main, r);
	while (!atomic_load(&r->ready))
		sched_yield();
}

Test(rcu, strict_munmap_waits_for_the_reader_and_sends_no_signal, .timeout = 30)
{
	setup_mode(SMMU_SHOOTDOWN_RCU, 0);
	struct reader r = { 0 };
	reader_start(&r, true);
	struct smmu_stats before = stats();
	cr_assert_eq(smmu_munmap(mm, base + 3 * PAGE, PAGE), 0); /* a grace period */
	struct smmu_stats after = stats();
	cr_assert_eq(after.signals_sent, before.signals_sent);
	cr_assert_geq(after.grace_periods, before.grace_periods + 1);
	atomic_store(&r.check, 1);
	pthread_join(r.t, NULL);
	cr_assert_eq(r.result, -EFAULT, "the reader used the old translation after munmap returned");
	teardown();
}

Test(rcu, strict_mprotect_reaches_the_reader, .timeout = 30)
{
	setup_mode(SMMU_SHOOTDOWN_RCU, 0);
	struct reader r = { 0 };
	reader_start(&r, true);
	cr_assert_eq(smmu_mprotect(mm, base + 3 * PAGE, PAGE, SMMU_PROT_NONE), 0);
	atomic_store(&r.check, 1);
	pthread_join(r.t, NULL);
	cr_assert_eq(r.result, -EACCES);
	teardown();
}

Test(rcu, deferred_munmap_returns_at_once_and_frees_after_the_grace_period, .timeout = 30)
{
	setup_mode(SMMU_SHOOTDOWN_RCU_DEFERRED, 0);
	struct reader r = { 0 };
	reader_start(&r, false); /* online, no quiescent state yet */
	size_t free0 = smmu_pool_free_frames(pool);
	cr_assert_eq(smmu_munmap(mm, base + 3 * PAGE, PAGE), 0); /* does not wait */
	sleep_ms(50);
	cr_assert_eq(smmu_pool_free_frames(pool), free0, "a frame came back before the reader's quiescent state");
	cr_assert_eq(stats().deferred_frees, 1);
	atomic_store(&r.quiesce, 1); /* now the grace period can end */
	for (int i = 0; i < 500 && smmu_pool_free_frames(pool) == free0; i++)
		sleep_ms(10);
	cr_assert_eq(smmu_pool_free_frames(pool), free0 + 1, "the frame never came back");
	atomic_store(&r.check, 1);
	pthread_join(r.t, NULL);
	cr_assert_eq(r.result, -EFAULT, "a quiescent state did not drop the old entry");
	teardown();
}

Test(rcu, deferred_backlog_is_bounded, .timeout = 60)
{
	setup_mode(SMMU_SHOOTDOWN_RCU_DEFERRED, 4);
	struct reader r = { 0 };
	reader_start(&r, true);
	for (int i = 0; i < 32; i++)
		cr_assert_eq(smmu_munmap(mm, base + (smmu_addr_t)(8 + i) * PAGE, PAGE), 0);
	cr_assert_eq(smmu_munmap(mm, base + 40 * PAGE, 16 * PAGE), 0); /* more than the bound at once */
	struct smmu_stats st = stats();
	cr_assert_gt(st.deferred_bound_waits, 0, "the backlog never hit its bound of 4 frames");
	cr_assert_gt(st.deferred_frees, 0);
	atomic_store(&r.check, 1);
	pthread_join(r.t, NULL);
	teardown();
}

/* No CPU but the caller can have cached a page the reader never touched:
 * no grace period to wait for (strict) or to free after (deferred), even
 * while the reader never passes a quiescent state; and the caller may be a
 * CPU that cached it. */
static void unmap_uncached(enum smmu_shootdown_mode mode, bool caller_is_cpu)
{
	setup_mode(mode, 0);
	struct reader r = { 0 };
	reader_start(&r, false);
	struct smmu_cpu *self = NULL;
	if (caller_is_cpu) {
		cr_assert_eq(smmu_cpu_register(mm, &self), 0);
		smmu_load64(self, base + 60 * PAGE);
	}
	size_t free0 = smmu_pool_free_frames(pool);
	struct smmu_stats before = stats();
	cr_assert_eq(smmu_munmap(mm, base + 60 * PAGE, PAGE), 0);
	struct smmu_stats after = stats();
	cr_assert_eq(smmu_pool_free_frames(pool), free0 + 1, "the frame was not freed at once");
	cr_assert_eq(after.grace_periods, before.grace_periods);
	cr_assert_eq(after.deferred_frees, before.deferred_frees);
	cr_assert_eq(after.shootdowns - before.shootdowns, 1);
	if (self) {
		uint64_t v;
		cr_assert_eq(smmu_try_load64(self, base + 60 * PAGE, &v), -EFAULT, "the caller's own entry survived");
		/* A page the reader did cache still waits (strict) or defers. */
		cr_assert_eq(smmu_cpu_offline(self), 0);
	}
	atomic_store(&r.quiesce, 1);
	cr_assert_eq(smmu_munmap(mm, base + 9 * PAGE, PAGE), 0);
	struct smmu_stats last = stats();
	if (mode == SMMU_SHOOTDOWN_RCU)
		cr_assert_eq(last.grace_periods - after.grace_periods, 1);
	else
		cr_assert_eq(last.deferred_frees - after.deferred_frees, 1);
	atomic_store(&r.check, 1);
	pthread_join(r.t, NULL);
	if (self)
		cr_assert_eq(smmu_cpu_unregister(self), 0);
	teardown();
}

Test(rcu, strict_munmap_of_a_page_no_other_cpu_cached_waits_for_nothing, .timeout = 30)
{
	unmap_uncached(SMMU_SHOOTDOWN_RCU, false);
	unmap_uncached(SMMU_SHOOTDOWN_RCU, true);
}

Test(rcu, deferred_munmap_of_a_page_no_other_cpu_cached_frees_at_once, .timeout = 30)
{
	unmap_uncached(SMMU_SHOOTDOWN_RCU_DEFERRED, false);
	unmap_uncached(SMMU_SHOOTDOWN_RCU_DEFERRED, true);
}

/* Deferred mode: a reader keeps the moved page's old entry until its next
 * quiescent state, so the reader's CPU bit moves with the frame and
 * unmapping the new address still waits for it. */
Test(rcu, deferred_unmap_after_a_move_waits_for_the_old_address_reader, .timeout = 30)
{
	setup_mode(SMMU_SHOOTDOWN_RCU_DEFERRED, 0);
	struct reader r = { 0 };
	reader_start(&r, false); /* has page 10 cached, no quiescent state */
	cr_assert_eq(smmu_munmap(mm, base + 60 * PAGE, PAGE), 0); /* never cached: freed now */
	cr_assert_eq(smmu_mremap(mm, base + 10 * PAGE, PAGE, base + 60 * PAGE, 0), 0);
	size_t free0 = smmu_pool_free_frames(pool);
	struct smmu_stats before = stats();
	cr_assert_eq(smmu_munmap(mm, base + 60 * PAGE, PAGE), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), free0, "freed while the reader may still use its old address");
	cr_assert_eq(stats().deferred_frees - before.deferred_frees, 1);
	atomic_store(&r.quiesce, 1);
	for (int i = 0; i < 500 && smmu_pool_free_frames(pool) == free0; i++)
		sleep_ms(10);
	cr_assert_eq(smmu_pool_free_frames(pool), free0 + 1, "the frame never came back");
	atomic_store(&r.check, 1);
	pthread_join(r.t, NULL);
	teardown();
}

#define POISON64 0x6b6b6b6b6b6b6b6bull /* SMMU_POOL_POISON's byte, 8 times */

/* Deferred mode: a mprotect(PROT_NONE) is lazy too, so a reader may still
 * hold the old entry; its bit stays on the PROTNONE entry, and unmapping
 * it (here, or at the address it was moved to) waits for the reader. */
static void unmap_protnone(bool move)
{
	setup_mode(SMMU_SHOOTDOWN_RCU_DEFERRED, 0);
	struct reader r = { 0 };
	reader_start(&r, false); /* has page 3 cached, no quiescent state */
	cr_assert_eq(smmu_mprotect(mm, base + 3 * PAGE, PAGE, SMMU_PROT_NONE), 0);
	smmu_addr_t at = base + 3 * PAGE;
	if (move) {
		cr_assert_eq(smmu_munmap(mm, base + 60 * PAGE, PAGE), 0);
		cr_assert_eq(smmu_mremap(mm, at, PAGE, base + 60 * PAGE, 0), 0);
		at = base + 60 * PAGE;
	}
	size_t free0 = smmu_pool_free_frames(pool);
	struct smmu_stats before = stats();
	cr_assert_eq(smmu_munmap(mm, at, PAGE), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), free0, "freed while the reader may still use its old entry");
	cr_assert_eq(stats().deferred_frees - before.deferred_frees, 1);
	atomic_store(&r.check, 1);
	pthread_join(r.t, NULL);
	cr_assert(r.result != 0 || r.value != POISON64, "the reader read a freed frame");
	teardown();
}

Test(rcu, deferred_unmap_of_a_protnone_page_waits_for_a_reader_of_its_old_entry, .timeout = 30)
{
	unmap_protnone(false);
	unmap_protnone(true);
}

static void *move_page_3_to_60(void *arg)
{
	(void)arg; /* no CPU: its flush reaches no TLB at once */
	cr_assert_eq(smmu_mremap(mm, base + 3 * PAGE, PAGE, base + 60 * PAGE, 0), 0);
	return NULL;
}

/* Deferred mode: another thread's move leaves this CPU's entry at the old
 * address until it catches up, and its own bit on the moved entry stands
 * for it.  Its own munmap of the new address catches up first, so freeing
 * the frame at once is safe: the old address faults, it does not read the
 * freed frame. */
Test(rcu, deferred_own_unmap_after_a_lazy_move_drops_the_old_address, .timeout = 30)
{
	setup_mode(SMMU_SHOOTDOWN_RCU_DEFERRED, 0);
	cr_assert_eq(smmu_munmap(mm, base + 60 * PAGE, PAGE), 0);
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	smmu_store64(cpu, base + 3 * PAGE, 0x1122334455667788ull);
	pthread_t t;
	pthread_create(&t, NULL, move_page_3_to_60, NULL);
	pthread_join(t, NULL);
	cr_assert_eq(smmu_munmap(mm, base + 60 * PAGE, PAGE), 0);
	uint64_t v = 0;
	int err = smmu_try_load64(cpu, base + 3 * PAGE, &v);
	cr_assert_eq(err, -EFAULT, "the old address still loads (%d, value %#llx)", err, (unsigned long long)v);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	teardown();
}

Test(rcu, quiescent_and_config_errors)
{
	struct smmu_pool_config cfg = { .size = 1 << 20 };
	struct smmu_mm_config bad_mode = { .mode = 7 }, bad_flag = { .flags = 0x100 };
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create_ex(pool, &bad_mode, &mm), -EINVAL);
	cr_assert_eq(smmu_mm_create_ex(pool, &bad_flag, &mm), -EINVAL);
	cr_assert_eq(smmu_mm_create_ex(NULL, NULL, &mm), -EINVAL);
	cr_assert_eq(smmu_mm_create_ex(pool, NULL, NULL), -EINVAL);
	cr_assert_eq(smmu_mm_create_ex(pool, NULL, &mm), 0); /* signals */
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_quiescent(NULL), -EINVAL);
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	cr_assert_eq(smmu_quiescent(cpu), 0, "a no-op in signal mode");
	cr_assert_eq(smmu_cpu_offline(cpu), 0);
	cr_assert_eq(smmu_quiescent(cpu), -EINVAL, "offline");
	cr_assert_eq(smmu_cpu_online(cpu), 0);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	cr_assert_eq(smmu_mm_destroy(mm), 0);
	cr_assert_eq(smmu_pool_destroy(pool), 0);
}

/* An application that uses liburcu itself: a urcu-memb reader and
 * synchronize_rcu of its own, in the same process, while an RCU-mode mm
 * unmaps under its CPUs. */
static atomic_int app_stop;
static int app_value = 1;

static void *app_memb_reader(void *arg)
{
	(void)arg;
	urcu_memb_register_thread();
	long sum = 0;
	while (!atomic_load(&app_stop)) {
		urcu_memb_read_lock();
		sum += __atomic_load_n(&app_value, __ATOMIC_RELAXED);
		urcu_memb_read_unlock();
	}
	urcu_memb_unregister_thread();
	return (void *)sum;
}

Test(rcu, coexists_with_the_applications_urcu_memb, .timeout = 60)
{
	setup_mode(SMMU_SHOOTDOWN_RCU, 0);
	pthread_t app;
	pthread_create(&app, NULL, app_memb_reader, NULL);
	struct reader r = { 0 };
	reader_start(&r, true);
	for (int i = 0; i < 50; i++) {
		smmu_addr_t got;
		cr_assert_eq(smmu_munmap(mm, base + 10 * PAGE, PAGE), 0);
		cr_assert_eq(smmu_mmap(mm, base + 10 * PAGE, PAGE, SMMU_PROT_READ, SMMU_MAP_FIXED, &got), 0);
		urcu_memb_synchronize_rcu(); /* the application's own grace period */
	}
	atomic_store(&app_stop, 1);
	pthread_join(app, NULL);
	cr_assert_eq(smmu_munmap(mm, base + 3 * PAGE, PAGE), 0);
	atomic_store(&r.check, 1);
	pthread_join(r.t, NULL);
	cr_assert_eq(r.result, -EFAULT);
	teardown();
}

/* SMMU_MM_APP_URCU: the application registers its threads with urcu-qsbr
 * itself; the library neither registers nor unregisters them. */
static void *app_registered_cpu(void *arg)
{
	(void)arg;
	urcu_qsbr_register_thread();
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	smmu_store64(cpu, base, 7);
	cr_assert_eq(smmu_quiescent(cpu), 0);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	urcu_qsbr_quiescent_state(); /* still registered with urcu-qsbr */
	urcu_qsbr_unregister_thread();
	return NULL;
}

Test(rcu, application_registered_threads, .timeout = 30)
{
	struct smmu_pool_config cfg = { .size = 1 << 20 };
	struct smmu_mm_config mc = { .mode = SMMU_SHOOTDOWN_RCU, .flags = SMMU_MM_APP_URCU };
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create_ex(pool, &mc, &mm), 0);
	cr_assert_eq(smmu_mmap(mm, 0, 64 * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, 0, &base), 0);
	pthread_t t;
	pthread_create(&t, NULL, app_registered_cpu, NULL);
	pthread_join(t, NULL);
	teardown();
}

/* A CPU that stays online without a quiescent state while munmap waits for
 * a grace period is reported once, by id, through the stall callback. */
static atomic_int stall_reports;
static atomic_uint stall_cpu;

static void on_stall(struct smmu_mm *m, unsigned cpu_id, uint64_t stalled_ns, void *arg)
{
	(void)stalled_ns;
	cr_assert_eq(m, mm);
	cr_assert_eq(arg, &stall_reports);
	atomic_store(&stall_cpu, cpu_id);
	atomic_fetch_add(&stall_reports, 1);
}

struct staller {
	atomic_int ready, release;
	unsigned id;
};

static void *staller_main(void *arg)
{
	struct staller *s = arg;
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	s->id = smmu_cpu_id(cpu);
	smmu_load64(cpu, base + 3 * PAGE);
	atomic_store(&s->ready, 1);
	while (!atomic_load(&s->release))
		smmu_load64(cpu, base + 5 * PAGE); /* online, never quiescent */
	cr_assert_eq(smmu_quiescent(cpu), 0); /* the grace period can end */
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	return NULL;
}

/* The unmapper is a CPU too: waiting for the grace period it is offline,
 * so it must not be reported itself. */
static void *unmapper(void *arg)
{
	atomic_int *done = arg;
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	smmu_load64(cpu, base + 7 * PAGE);
	cr_assert_eq(smmu_munmap(mm, base + 3 * PAGE, PAGE), 0);
	atomic_store(done, 1);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	return NULL;
}

Test(rcu, a_stalled_cpu_is_reported_once, .timeout = 30)
{
	struct smmu_pool_config cfg = { .size = 1 << 20 };
	struct smmu_mm_config mc = {
		.mode = SMMU_SHOOTDOWN_RCU, .stall_ns = 50000000, .stall = on_stall, .stall_arg = &stall_reports
	};
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create_ex(pool, &mc, &mm), 0);
	cr_assert_eq(smmu_mmap(mm, 0, 64 * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE, &base), 0);
	struct staller s = { 0 };
	pthread_t st, um;
	atomic_int done = 0;
	pthread_create(&st, NULL, staller_main, &s);
	while (!atomic_load(&s.ready))
		sched_yield();
	sleep_ms(150); /* quiet: nothing waits, so no report */
	cr_assert_eq(atomic_load(&stall_reports), 0, "reported a stall while nothing waited for a grace period");
	pthread_create(&um, NULL, unmapper, &done);
	for (int i = 0; i < 300 && !atomic_load(&stall_reports); i++)
		sleep_ms(10);
	sleep_ms(200); /* more watchdog rounds: still one report */
	cr_assert_eq(atomic_load(&stall_reports), 1);
	cr_assert_eq(atomic_load(&stall_cpu), s.id);
	cr_assert_eq(atomic_load(&done), 0, "munmap returned while the reader stalled the grace period");
	atomic_store(&s.release, 1);
	pthread_join(um, NULL);
	pthread_join(st, NULL);
	cr_assert_eq(atomic_load(&done), 1);
	teardown();
}
