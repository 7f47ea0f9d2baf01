/* SPDX-License-Identifier: MIT */
/*
 * Black-box tests of the MMU notifiers (<softmmu/notifier.h>): the order
 * start -> (entries cleared, TLBs flushed) -> secondary -> (frames freed)
 * -> end, every event the library emits with its range and flags, release
 * (exactly once, at destroy or unregister), non-blocking changes that a
 * subscriber refuses, unregister racing with a running callback, -EDEADLK
 * from inside callbacks, interval subscriptions and their sequence count,
 * young/dirty tracking, smmu_mm_translate, and bad input.  Public API only.
 *
 * Callbacks run on library threads (or on a test thread inside a library
 * call): they never use cr_assert, they record into a log and report
 * failures through CHECK, which the test thread turns into an assertion.
 * Every wait is bounded, so a bug fails instead of hanging; a deadlock
 * inside the library (which no wait of ours can bound) is cut by a
 * watchdog that aborts the test after 20 s.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <softmmu/softmmu.h>

#define PS 4096u
#define RW (SMMU_PROT_READ | SMMU_PROT_WRITE)
#define R SMMU_PROT_READ
#define NONE SMMU_PROT_NONE
#define H ((smmu_addr_t)0x40000000)
#define TOP ((smmu_addr_t)1 << 48) /* end of a 4 KiB-page address space */
#define POISON64 0x6b6b6b6b6b6b6b6bull
#define PAT(i) (0x1122334455000000ull + (uint64_t)(i))
#define BLOCK SMMU_NOTIFY_BLOCKABLE

/* Bounds of every wait (ms): generous for the sanitizer builds. */
#define WAIT_MS 5000
#define QUIET_MS 300 /* "does not return meanwhile" windows */

static _Alignas(4096) unsigned char fake_obj[8192]; /* not a live mm */

/* ------------------------------------------------------------ failures from other threads */

static pthread_mutex_t tf_lock = PTHREAD_MUTEX_INITIALIZER;
static int tf_failed;
static char tf_why[400];

static void tfail(int line, const char *cond, const char *fmt, ...)
{
	pthread_mutex_lock(&tf_lock);
	if (!tf_failed) {
		tf_failed = 1;
		int n = snprintf(tf_why, sizeof(tf_why), "line %d: %s: ", line, cond);
		if (n > 0 && (size_t)n < sizeof(tf_why)) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(tf_why + n, sizeof(tf_why) - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	pthread_mutex_unlock(&tf_lock);
}

#define CHECK(cond, ...)                                         \
	do {                                                     \
		if (!(cond))                                     \
			tfail(__LINE__, #cond, __VA_ARGS__);     \
	} while (0)

static void expect_no_tfail(void)
{
	char why[sizeof(tf_why)];
	pthread_mutex_lock(&tf_lock);
	int f = tf_failed;
	memcpy(why, tf_why, sizeof(why));
	pthread_mutex_unlock(&tf_lock);
	cr_assert(!f, "%s", why);
}

/* ------------------------------------------------------------ time */

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
	nanosleep(&ts, NULL);
}

/* Wait until *f == want, at most ms. */
static bool wait_flag(atomic_int *f, int want, unsigned ms)
{
	uint64_t deadline = now_ms() + ms;
	while (atomic_load(f) != want) {
		if (now_ms() > deadline)
			return false;
		sleep_us(200);
	}
	return true;
}

/* A thread running one call, joined with a bound. */
struct task {
	pthread_t th;
	atomic_int done;
	long (*fn)(void *);
	void *arg;
	long ret;
	bool joined;
};

static void *task_main(void *p)
{
	struct task *t = p;
	t->ret = t->fn(t->arg);
	atomic_store(&t->done, 1);
	return NULL;
}

static void task_start(struct task *t, long (*fn)(void *), void *arg)
{
	memset(t, 0, sizeof(*t));
	t->fn = fn;
	t->arg = arg;
	cr_assert_eq(pthread_create(&t->th, NULL, task_main, t), 0);
}

static bool task_wait(struct task *t, unsigned ms)
{
	if (!wait_flag(&t->done, 1, ms))
		return false;
	if (!t->joined) {
		pthread_join(t->th, NULL);
		t->joined = true;
	}
	return true;
}

/*
 * Watchdog: a library deadlock (a callback that waits for itself) cannot be
 * bounded from inside the call, so a test still running after WATCHDOG_MS
 * aborts, which Criterion reports as a crash instead of hanging.
 */
#define WATCHDOG_MS 20000
static atomic_int wd_stop;
static pthread_t wd_th;

static void *wd_main(void *arg)
{
	(void)arg;
	uint64_t deadline = now_ms() + WATCHDOG_MS;
	while (!atomic_load(&wd_stop)) {
		if (now_ms() > deadline) {
			fprintf(stderr, "notifier test still running after %d ms: deadlock?\n", WATCHDOG_MS);
			abort();
		}
		sleep_us(20000);
	}
	return NULL;
}

static void wd_start(void)
{
	atomic_store(&wd_stop, 0);
	pthread_create(&wd_th, NULL, wd_main, NULL);
}

static void wd_finish(void)
{
	atomic_store(&wd_stop, 1);
	pthread_join(wd_th, NULL);
}

TestSuite(notifier, .init = wd_start, .fini = wd_finish);

/* ------------------------------------------------------------ environment */

struct env {
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
};

static void env_init_mode(struct env *e, size_t frames, enum smmu_shootdown_mode mode, bool cpu)
{
	memset(e, 0, sizeof(*e));
	struct smmu_pool_config cfg = {.size = frames * PS, .flags = SMMU_POOL_POISON};
	struct smmu_mm_config mc = {.mode = mode};
	cr_assert_eq(smmu_pool_create(&cfg, &e->pool), 0);
	cr_assert_eq(smmu_mm_create_ex(e->pool, &mc, &e->mm), 0);
	if (cpu)
		cr_assert_eq(smmu_cpu_register(e->mm, &e->cpu), 0);
}

static void env_init(struct env *e, size_t frames)
{
	env_init_mode(e, frames, SMMU_SHOOTDOWN_SIGNAL, true);
}

static void env_fini(struct env *e)
{
	if (e->cpu)
		cr_assert_eq(smmu_cpu_unregister(e->cpu), 0);
	cr_assert_eq(smmu_mm_destroy(e->mm), 0);
	cr_assert_eq(smmu_pool_free_frames(e->pool), smmu_pool_frames(e->pool), "frames leaked");
	cr_assert_eq(smmu_pool_destroy(e->pool), 0);
}

static smmu_addr_t map(struct env *e, smmu_addr_t addr, size_t len, int prot, int flags)
{
	smmu_addr_t out = 0;
	int err = smmu_mmap(e->mm, addr, len, prot, flags | SMMU_MAP_FIXED_NOREPLACE, &out);
	cr_assert_eq(err, 0, "mmap(0x%llx, %zu, %d, %d) = %d", (unsigned long long)addr, len, prot, flags, err);
	cr_assert_eq(out, addr);
	return out;
}

static void fill(struct env *e, smmu_addr_t a, size_t pages)
{
	for (size_t i = 0; i < pages; i++) {
		smmu_store64(e->cpu, a + i * PS, PAT(i));
		smmu_store64(e->cpu, a + i * PS + PS - 8, PAT(i) + 1);
	}
}

/* Through the CPU, after dropping its TLB (so the page table is walked). */
static void expect_filled(struct env *e, smmu_addr_t a, size_t pages)
{
	cr_assert_eq(smmu_tlb_flush_all(e->cpu), 0);
	for (size_t i = 0; i < pages; i++) {
		uint64_t v = 0;
		cr_assert_eq(smmu_try_load64(e->cpu, a + i * PS, &v), 0, "page %zu unreadable", i);
		cr_assert_eq(v, PAT(i), "page %zu", i);
		cr_assert_eq(smmu_try_load64(e->cpu, a + i * PS + PS - 8, &v), 0);
		cr_assert_eq(v, PAT(i) + 1, "page %zu end", i);
	}
}

static void expect_region(struct smmu_mm *mm, smmu_addr_t at, smmu_addr_t start, smmu_addr_t end, int prot)
{
	struct smmu_region r;
	cr_assert_eq(smmu_mm_find(mm, at, &r), 0);
	cr_assert_eq(r.start, start, "region start 0x%llx", (unsigned long long)r.start);
	cr_assert_eq(r.end, end, "region end 0x%llx", (unsigned long long)r.end);
	cr_assert_eq(r.prot, prot, "region prot %d", r.prot);
}

/* ------------------------------------------------------------ the log */

enum { EV_START = 1, EV_SEC, EV_END, EV_RELEASE, EV_INVAL, EV_CLEAR_YOUNG, EV_TEST_YOUNG };

struct ev {
	int kind, who;
	struct smmu_mm *mm;
	smmu_addr_t start, end;
	int event;
	unsigned flags;
	unsigned long seq;
};

#define LOG_MAX 512
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ev evlog[LOG_MAX];
static int evn;

static void log_add(struct ev e)
{
	pthread_mutex_lock(&log_lock);
	CHECK(evn < LOG_MAX, "log full");
	if (evn < LOG_MAX)
		evlog[evn++] = e;
	pthread_mutex_unlock(&log_lock);
}

static void log_reset(void)
{
	pthread_mutex_lock(&log_lock);
	evn = 0;
	pthread_mutex_unlock(&log_lock);
}

/* A copy of the log (the entries of who, or all with who < 0). */
static int log_get(int who, struct ev *out, int max)
{
	int n = 0;
	pthread_mutex_lock(&log_lock);
	for (int i = 0; i < evn && n < max; i++)
		if (who < 0 || evlog[i].who == who)
			out[n++] = evlog[i];
	pthread_mutex_unlock(&log_lock);
	return n;
}

static int log_count(int kind, int who)
{
	int n = 0;
	pthread_mutex_lock(&log_lock);
	for (int i = 0; i < evn; i++)
		n += evlog[i].kind == kind && (who < 0 || evlog[i].who == who);
	pthread_mutex_unlock(&log_lock);
	return n;
}

/*
 * who saw exactly one change: START, one or more SEC, END, in this order,
 * all with the range [s, e), event and flags; nothing else.
 */
static void expect_op(int who, struct smmu_mm *mm, smmu_addr_t s, smmu_addr_t e, int event, unsigned flags)
{
	struct ev v[LOG_MAX];
	int n = log_get(who, v, LOG_MAX);
	cr_assert_geq(n, 3, "sub %d: %d callbacks, want start, secondary, end", who, n);
	cr_assert_eq(v[0].kind, EV_START, "sub %d: first callback %d is not start", who, v[0].kind);
	cr_assert_eq(v[n - 1].kind, EV_END, "sub %d: last callback %d is not end", who, v[n - 1].kind);
	for (int i = 1; i < n - 1; i++)
		cr_assert_eq(v[i].kind, EV_SEC, "sub %d: callback %d is %d, not secondary", who, i, v[i].kind);
	for (int i = 0; i < n; i++) {
		cr_assert_eq(v[i].mm, mm, "sub %d cb %d: mm", who, i);
		cr_assert_eq(v[i].start, s, "sub %d cb %d: start 0x%llx, want 0x%llx", who, i,
			     (unsigned long long)v[i].start, (unsigned long long)s);
		cr_assert_eq(v[i].end, e, "sub %d cb %d: end 0x%llx, want 0x%llx", who, i, (unsigned long long)v[i].end,
			     (unsigned long long)e);
		cr_assert_eq(v[i].event, event, "sub %d cb %d: event %d, want %d", who, i, v[i].event, event);
		cr_assert_eq(v[i].flags, flags, "sub %d cb %d: flags %u, want %u", who, i, v[i].flags, flags);
	}
}

static void expect_no_callbacks(void)
{
	struct ev v[4];
	int n = log_get(-1, v, 4);
	cr_assert_eq(n, 0, "%d unexpected callbacks (first: kind %d of sub %d)", n, n ? v[0].kind : 0,
		     n ? v[0].who : 0);
}

/* ------------------------------------------------------------ gates: block a callback */

struct gate {
	atomic_int armed, entered, open;
};

static void gate_arm(struct gate *g)
{
	atomic_store(&g->entered, 0);
	atomic_store(&g->open, 0);
	atomic_store(&g->armed, 1);
}

/* In a callback: if armed (once), say so and wait to be let go. */
static void gate_pass(struct gate *g)
{
	if (!atomic_exchange(&g->armed, 0))
		return;
	atomic_store(&g->entered, 1);
	CHECK(wait_flag(&g->open, 1, WAIT_MS), "a blocked callback was never let go");
}

static void gate_wait_entered(struct gate *g)
{
	cr_assert(wait_flag(&g->entered, 1, WAIT_MS), "the callback never reached the gate");
}

/* ------------------------------------------------------------ subscribers */

struct sub;
typedef void (*hook_fn)(struct sub *s, int kind, const struct smmu_notify_range *r, unsigned long seq);

struct sub {
	int id;
	struct smmu_notifier *n;
	struct smmu_interval_notifier *in;
	struct smmu_mm *mm; /* the mm subscribed to */
	bool refuse_nonblock; /* start -EAGAIN / invalidate false when !BLOCKABLE */
	int start_ret;        /* start's result otherwise */
	int test_young_ret, clear_young_ret;
	struct gate g_start, g_sec, g_end;
	hook_fn hook;
	void *ctx;
	atomic_int dead;   /* its unregister / remove returned: no callback may follow */
	atomic_int starts; /* starts that returned 0 */
	atomic_int ends;
	pthread_mutex_t lock; /* the subscriber's own lock (interval protocol) */
};

static void sub_init(struct sub *s, int id)
{
	memset(s, 0, sizeof(*s));
	s->id = id;
	pthread_mutex_init(&s->lock, NULL);
}

static void record(struct sub *s, int kind, struct smmu_mm *mm, const struct smmu_notify_range *r,
		   unsigned long seq)
{
	CHECK(!atomic_load(&s->dead), "callback %d of sub %d after its unregister returned", kind, s->id);
	struct ev e = {.kind = kind, .who = s->id, .mm = mm, .seq = seq};
	if (r) {
		CHECK(r->mm == mm, "range mm");
		e.start = r->start;
		e.end = r->end;
		e.event = (int)r->event;
		e.flags = r->flags;
	}
	log_add(e);
}

static int cb_start(void *arg, const struct smmu_notify_range *r)
{
	struct sub *s = arg;
	record(s, EV_START, r->mm, r, 0);
	gate_pass(&s->g_start);
	if (s->hook)
		s->hook(s, EV_START, r, 0);
	if (s->refuse_nonblock && !(r->flags & BLOCK))
		return -EAGAIN;
	if (s->start_ret == 0)
		atomic_fetch_add(&s->starts, 1);
	return s->start_ret;
}

static void cb_sec(void *arg, const struct smmu_notify_range *r)
{
	struct sub *s = arg;
	record(s, EV_SEC, r->mm, r, 0);
	gate_pass(&s->g_sec);
	if (s->hook)
		s->hook(s, EV_SEC, r, 0);
}

static void cb_end(void *arg, const struct smmu_notify_range *r)
{
	struct sub *s = arg;
	record(s, EV_END, r->mm, r, 0);
	gate_pass(&s->g_end);
	if (s->hook)
		s->hook(s, EV_END, r, 0);
	atomic_fetch_add(&s->ends, 1);
}

static int cb_clear_young(void *arg, struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end)
{
	struct sub *s = arg;
	struct smmu_notify_range r = {.mm = mm, .start = start, .end = end};
	record(s, EV_CLEAR_YOUNG, mm, &r, 0);
	if (s->hook)
		s->hook(s, EV_CLEAR_YOUNG, &r, 0);
	return s->clear_young_ret;
}

static int cb_test_young(void *arg, struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end)
{
	struct sub *s = arg;
	struct smmu_notify_range r = {.mm = mm, .start = start, .end = end};
	record(s, EV_TEST_YOUNG, mm, &r, 0);
	if (s->hook)
		s->hook(s, EV_TEST_YOUNG, &r, 0);
	return s->test_young_ret;
}

static void cb_release(void *arg, struct smmu_mm *mm)
{
	struct sub *s = arg;
	record(s, EV_RELEASE, mm, NULL, 0);
	CHECK(mm == s->mm, "release of sub %d with another mm", s->id);
	if (s->hook)
		s->hook(s, EV_RELEASE, NULL, 0);
}

static const struct smmu_notifier_ops sub_ops = {
	.invalidate_range_start = cb_start,
	.invalidate_secondary_tlbs = cb_sec,
	.invalidate_range_end = cb_end,
	.clear_young = cb_clear_young,
	.test_young = cb_test_young,
	.release = cb_release,
};

static bool cb_invalidate(struct smmu_interval_notifier *in, void *arg, const struct smmu_notify_range *r,
			  unsigned long cur_seq)
{
	struct sub *s = arg;
	record(s, EV_INVAL, r->mm, r, cur_seq);
	CHECK(cur_seq & 1, "sub %d: cur_seq %lu is even during an invalidation", s->id, cur_seq);
	if (s->refuse_nonblock && !(r->flags & BLOCK))
		return false;
	pthread_mutex_lock(&s->lock);
	smmu_interval_set_seq(in, cur_seq);
	pthread_mutex_unlock(&s->lock);
	gate_pass(&s->g_start);
	if (s->hook)
		s->hook(s, EV_INVAL, r, cur_seq);
	return true;
}

static const struct smmu_interval_notifier_ops interval_ops = {.invalidate = cb_invalidate};

/* Marks the end of a change, as a plain subscriber sees it. */
static void set_flag_at_end_hook(struct sub *s, int kind, const struct smmu_notify_range *r, unsigned long seq)
{
	(void)r;
	(void)seq;
	if (kind == EV_END)
		atomic_store((atomic_int *)s->ctx, 1);
}

static void sub_register(struct sub *s, struct smmu_mm *mm)
{
	s->mm = mm;
	cr_assert_eq(smmu_notifier_register(mm, &sub_ops, s, &s->n), 0);
	cr_assert_not_null(s->n);
}

static void sub_unregister(struct sub *s)
{
	cr_assert_eq(smmu_notifier_unregister(s->n), 0);
	atomic_store(&s->dead, 1);
}

static void sub_insert(struct sub *s, struct smmu_mm *mm, smmu_addr_t start, size_t len)
{
	s->mm = mm;
	cr_assert_eq(smmu_interval_notifier_insert(mm, start, len, &interval_ops, s, &s->in), 0);
	cr_assert_not_null(s->in);
}

static void sub_remove(struct sub *s)
{
	cr_assert_eq(smmu_interval_notifier_remove(s->in), 0);
	atomic_store(&s->dead, 1);
}

/* ------------------------------------------------------------ a second CPU that probes the page table */

/*
 * A CPU on its own thread, offline while idle.  probe(): it comes online
 * and loads addr with smmu_try_load64.  With flush, it drops its TLB first:
 * a lock-free walk of the page table, 0 if the PTE is present, else the
 * demand-fault path (-EFAULT once the region is gone).  Without, a TLB hit
 * is possible: -EFAULT then proves that the TLB was shot down (coming
 * online catches up with the flushes made while offline).  Usable from
 * inside callbacks.
 */
struct prober {
	struct smmu_mm *mm;
	pthread_t th;
	atomic_int ready, quit, cmd, done;
	atomic_bool flush;
	_Atomic smmu_addr_t addr;
	_Atomic int res;
	_Atomic uint64_t val;
};

static void *prober_main(void *arg)
{
	struct prober *p = arg;
	struct smmu_cpu *cpu;
	if (smmu_cpu_register(p->mm, &cpu)) {
		atomic_store(&p->ready, -1);
		return NULL;
	}
	smmu_cpu_offline(cpu);
	atomic_store(&p->ready, 1);
	int seen = 0;
	for (;;) {
		while (atomic_load(&p->cmd) == seen && !atomic_load(&p->quit))
			sleep_us(100);
		if (atomic_load(&p->quit))
			break;
		seen = atomic_load(&p->cmd);
		smmu_cpu_online(cpu);
		if (atomic_load(&p->flush))
			smmu_tlb_flush_all(cpu);
		uint64_t v = 0;
		int r = smmu_try_load64(cpu, atomic_load(&p->addr), &v);
		smmu_cpu_offline(cpu);
		atomic_store(&p->res, r);
		atomic_store(&p->val, v);
		atomic_store(&p->done, seen);
	}
	smmu_cpu_online(cpu);
	smmu_cpu_unregister(cpu);
	return NULL;
}

static void prober_start(struct prober *p, struct smmu_mm *mm)
{
	memset(p, 0, sizeof(*p));
	p->mm = mm;
	cr_assert_eq(pthread_create(&p->th, NULL, prober_main, p), 0);
	cr_assert(wait_flag(&p->ready, 1, WAIT_MS), "prober did not start");
}

static void prober_stop(struct prober *p)
{
	atomic_store(&p->quit, 1);
	pthread_join(p->th, NULL);
}

static int probe(struct prober *p, smmu_addr_t a, bool flush, uint64_t *val)
{
	atomic_store(&p->addr, a);
	atomic_store(&p->flush, flush);
	int c = atomic_fetch_add(&p->cmd, 1) + 1;
	if (!wait_flag(&p->done, c, WAIT_MS))
		return -ETIMEDOUT;
	*val = atomic_load(&p->val);
	return atomic_load(&p->res);
}

/* ------------------------------------------------------------ 1. order: start, secondary, end */

struct order_ctx {
	struct env *e;
	struct prober *pr; /* NULL: no probe (the lock is held throughout) */
	smmu_addr_t a;
	size_t pages;
	void *host[8];
	size_t expect_freed;
	bool check_end_free; /* false in RCU deferred mode: frees follow a grace period */
	size_t free_at_start;
	int starts, secs, ends;
};

static void host_intact(struct order_ctx *c, const char *when)
{
	for (size_t i = 0; i < c->pages; i++) {
		uint64_t v0 = __atomic_load_n((uint64_t *)c->host[i], __ATOMIC_RELAXED);
		uint64_t v1 = __atomic_load_n((uint64_t *)((char *)c->host[i] + PS - 8), __ATOMIC_RELAXED);
		CHECK(v0 == PAT(i) && v1 == PAT(i) + 1, "%s: page %zu holds 0x%llx/0x%llx (poison: freed too early)",
		      when, i, (unsigned long long)v0, (unsigned long long)v1);
	}
}

static void order_hook(struct sub *s, int kind, const struct smmu_notify_range *r, unsigned long seq)
{
	(void)r;
	(void)seq;
	struct order_ctx *c = s->ctx;
	size_t fr = smmu_pool_free_frames(c->e->pool);
	uint64_t v = 0;
	void *p = NULL;
	switch (kind) {
	case EV_START:
		c->starts++;
		CHECK(c->secs == 0 && c->ends == 0, "start after secondary/end");
		c->free_at_start = fr;
		host_intact(c, "start");
		CHECK(smmu_mm_translate(c->e->mm, c->a, R, &p) == -EDEADLK, "translate inside start");
		if (c->pr) {
			/* The page-table entries are still there: a lock-free walk finds them. */
			int err = probe(c->pr, c->a, true, &v);
			CHECK(err == 0 && v == PAT(0), "start: walk of the first page: %d 0x%llx", err,
			      (unsigned long long)v);
			err = probe(c->pr, c->a + (c->pages - 1) * PS, true, &v);
			CHECK(err == 0 && v == PAT(c->pages - 1), "start: walk of the last page: %d", err);
		}
		break;
	case EV_SEC:
		c->secs++;
		CHECK(c->starts == 1 && c->ends == 0, "secondary outside start..end");
		CHECK(fr == c->free_at_start, "secondary: %zu frames freed before it", fr - c->free_at_start);
		host_intact(c, "secondary");
		if (c->pr) {
			/* The CPUs' TLBs are flushed by now: the prober filled its
			 * TLB with the last page at start, and no longer hits. */
			int err = probe(c->pr, c->a + (c->pages - 1) * PS, false, &v);
			CHECK(err == -EFAULT, "secondary: a CPU's TLB still reaches the last page (%d)", err);
			/* And the entries are cleared: a walk finds nothing. */
			err = probe(c->pr, c->a, true, &v);
			CHECK(err == -EFAULT, "secondary: the first page is still mapped (%d)", err);
		}
		break;
	case EV_END:
		c->ends++;
		CHECK(c->starts == 1 && c->secs >= 1, "end without start/secondary");
		if (c->check_end_free) {
			CHECK(fr == c->free_at_start + c->expect_freed, "end: %zu frames freed, want %zu",
			      fr - c->free_at_start, c->expect_freed);
			for (size_t i = 0; i < c->pages; i++) {
				uint64_t v0 = __atomic_load_n((uint64_t *)c->host[i], __ATOMIC_RELAXED);
				CHECK(v0 == POISON64, "end: freed page %zu not poisoned: 0x%llx", i,
				      (unsigned long long)v0);
			}
		}
		break;
	default:
		break;
	}
}

static void take_host_pointers(struct env *e, struct order_ctx *c)
{
	for (size_t i = 0; i < c->pages; i++) {
		cr_assert_eq(smmu_mm_translate(e->mm, c->a + i * PS, R, &c->host[i]), 0);
		cr_assert_eq(*(uint64_t *)c->host[i], PAT(i));
		cr_assert_eq(*(uint64_t *)((char *)c->host[i] + PS - 8), PAT(i) + 1);
	}
}

Test(notifier, munmap_order_start_secondary_end)
{
	struct env e;
	env_init(&e, 64);
	smmu_addr_t a = map(&e, H, 4 * PS, RW, 0);
	fill(&e, a, 4);
	struct prober pr;
	prober_start(&pr, e.mm);
	struct order_ctx c = {.e = &e, .pr = &pr, .a = a, .pages = 4, .expect_freed = 4, .check_end_free = true};
	take_host_pointers(&e, &c);
	struct sub s;
	sub_init(&s, 1);
	s.hook = order_hook;
	s.ctx = &c;
	sub_register(&s, e.mm);
	size_t free0 = smmu_pool_free_frames(e.pool);
	log_reset();

	cr_assert_eq(smmu_munmap(e.mm, a, 4 * PS), 0);
	expect_no_tfail();
	expect_op(1, e.mm, a, a + 4 * PS, SMMU_NOTIFY_UNMAP, BLOCK);
	cr_assert_eq(c.starts, 1);
	cr_assert_eq(c.ends, 1);
	cr_assert_eq(smmu_pool_free_frames(e.pool), free0 + 4);
	/* The registered CPU (it had every page in its TLB) can no longer reach them. */
	uint64_t v;
	for (size_t i = 0; i < 4; i++) {
		cr_assert_eq(smmu_try_load64(e.cpu, a + i * PS, &v), -EFAULT, "page %zu still readable", i);
		cr_assert_eq(smmu_try_store64(e.cpu, a + i * PS + 8, 1), -EFAULT, "page %zu still writable", i);
	}
	struct smmu_region reg;
	cr_assert_eq(smmu_mm_find(e.mm, a, &reg), -ENOENT);
	prober_stop(&pr);
	log_reset();
	sub_unregister(&s);
	cr_assert_eq(log_count(EV_RELEASE, 1), 1);
	env_fini(&e);
}

/* mmap(FIXED) over a mapping: the same order, the old frames freed at end. */
Test(notifier, mmap_fixed_over_mapping_order)
{
	for (int populate = 0; populate < 2; populate++) {
		struct env e;
		env_init(&e, 64);
		smmu_addr_t a = map(&e, H, 4 * PS, RW, 0);
		fill(&e, a, 4);
		struct order_ctx c = {.e = &e, .a = a + PS, .pages = 2, .expect_freed = 2, .check_end_free = true};
		for (size_t i = 0; i < 2; i++) {
			cr_assert_eq(smmu_mm_translate(e.mm, a + (1 + i) * PS, R, &c.host[i]), 0);
			*(uint64_t *)c.host[i] = PAT(i);
			*(uint64_t *)((char *)c.host[i] + PS - 8) = PAT(i) + 1;
		}
		struct sub s;
		sub_init(&s, 1);
		s.hook = order_hook;
		s.ctx = &c;
		sub_register(&s, e.mm);
		log_reset();
		smmu_addr_t out = 0;
		cr_assert_eq(smmu_mmap(e.mm, a + PS, 2 * PS, R, SMMU_MAP_FIXED | (populate ? SMMU_MAP_POPULATE : 0),
				       &out),
			     0);
		cr_assert_eq(out, a + PS);
		expect_no_tfail();
		expect_op(1, e.mm, a + PS, a + 3 * PS, SMMU_NOTIFY_UNMAP, BLOCK);
		expect_region(e.mm, a + PS, a + PS, a + 3 * PS, R);
		cr_assert_eq(smmu_tlb_flush_all(e.cpu), 0);
		cr_assert_eq(smmu_load64(e.cpu, a + PS), 0, "the new mapping is not zero");
		cr_assert_eq(smmu_load64(e.cpu, a + 3 * PS - 8), 0);
		cr_assert_eq(smmu_load64(e.cpu, a), PAT(0), "the page below was touched");
		cr_assert_eq(smmu_load64(e.cpu, a + 3 * PS), PAT(3), "the page above was touched");
		sub_unregister(&s);
		env_fini(&e);
	}
}

/* "An mm with any subscriber frees no frame before its secondary
 * invalidation, in every shootdown mode." */
Test(notifier, secondary_before_free_every_mode)
{
	const enum smmu_shootdown_mode modes[] = {SMMU_SHOOTDOWN_SIGNAL, SMMU_SHOOTDOWN_RCU,
						  SMMU_SHOOTDOWN_RCU_DEFERRED};
	for (size_t m = 0; m < 3; m++) {
		struct env e;
		env_init_mode(&e, 64, modes[m], false);
		smmu_addr_t a = map(&e, H, 4 * PS, RW, SMMU_MAP_POPULATE);
		struct order_ctx c = {.e = &e,
				      .a = a,
				      .pages = 4,
				      .expect_freed = 4,
				      .check_end_free = modes[m] != SMMU_SHOOTDOWN_RCU_DEFERRED};
		for (size_t i = 0; i < 4; i++) {
			cr_assert_eq(smmu_mm_translate(e.mm, a + i * PS, RW, &c.host[i]), 0);
			*(uint64_t *)c.host[i] = PAT(i);
			*(uint64_t *)((char *)c.host[i] + PS - 8) = PAT(i) + 1;
		}
		struct sub s;
		sub_init(&s, 1);
		s.hook = order_hook;
		s.ctx = &c;
		sub_register(&s, e.mm);
		size_t free0 = smmu_pool_free_frames(e.pool);
		log_reset();
		cr_assert_eq(smmu_munmap(e.mm, a, 4 * PS), 0);
		expect_no_tfail();
		expect_op(1, e.mm, a, a + 4 * PS, SMMU_NOTIFY_UNMAP, BLOCK);
		/* Deferred: the frames come back after a grace period. */
		uint64_t deadline = now_ms() + WAIT_MS;
		while (smmu_pool_free_frames(e.pool) != free0 + 4 && now_ms() < deadline)
			sleep_us(1000);
		cr_assert_eq(smmu_pool_free_frames(e.pool), free0 + 4, "mode %d", (int)modes[m]);
		sub_unregister(&s);
		env_fini(&e);
	}
}

/* ------------------------------------------------------------ 2. every event, its range and flags */

Test(notifier, events_ranges_and_flags)
{
	struct env e;
	env_init(&e, 64);
	smmu_addr_t a = map(&e, H, 8 * PS, RW, 0);
	fill(&e, a, 8);
	struct sub s;
	sub_init(&s, 1);
	sub_register(&s, e.mm);
	size_t free0 = smmu_pool_free_frames(e.pool);

	/* munmap of the middle: exactly that range. */
	log_reset();
	cr_assert_eq(smmu_munmap(e.mm, a + PS, 2 * PS), 0);
	expect_op(1, e.mm, a + PS, a + 3 * PS, SMMU_NOTIFY_UNMAP, BLOCK);
	cr_assert_eq(smmu_pool_free_frames(e.pool), free0 + 2);

	/* mmap(FIXED) over a mapping: UNMAP of the replaced range. */
	log_reset();
	smmu_addr_t out;
	cr_assert_eq(smmu_mmap(e.mm, a + 3 * PS, 2 * PS, R, SMMU_MAP_FIXED, &out), 0);
	expect_op(1, e.mm, a + 3 * PS, a + 5 * PS, SMMU_NOTIFY_UNMAP, BLOCK);

	/* mprotect: PROTECTION, frames stay. */
	size_t free1 = smmu_pool_free_frames(e.pool);
	log_reset();
	cr_assert_eq(smmu_mprotect(e.mm, a + 5 * PS, PS, R), 0);
	expect_op(1, e.mm, a + 5 * PS, a + 6 * PS, SMMU_NOTIFY_PROTECTION, BLOCK);
	cr_assert_eq(smmu_pool_free_frames(e.pool), free1);
	cr_assert_eq(smmu_try_store64(e.cpu, a + 5 * PS, 1), -EACCES, "the CPU still writes a read-only page");
	cr_assert_eq(smmu_load64(e.cpu, a + 5 * PS), PAT(5));

	/* mprotect to NONE. */
	log_reset();
	cr_assert_eq(smmu_mprotect(e.mm, a + 6 * PS, PS, NONE), 0);
	expect_op(1, e.mm, a + 6 * PS, a + 7 * PS, SMMU_NOTIFY_PROTECTION, BLOCK);
	uint64_t v;
	cr_assert_eq(smmu_try_load64(e.cpu, a + 6 * PS, &v), -EACCES);

	/* clear_dirty: CLEAR, frames stay. */
	log_reset();
	size_t dirty = 99;
	cr_assert_eq(smmu_clear_dirty(e.mm, a, 8 * PS, &dirty), 0);
	expect_op(1, e.mm, a, a + 8 * PS, SMMU_NOTIFY_CLEAR, BLOCK);
	cr_assert_eq(smmu_pool_free_frames(e.pool), free1);

	/* The non-blocking forms: the same events without BLOCKABLE. */
	log_reset();
	cr_assert_eq(smmu_mprotect_ex(e.mm, a + 7 * PS, PS, R, SMMU_OP_NONBLOCK), 0);
	expect_op(1, e.mm, a + 7 * PS, a + 8 * PS, SMMU_NOTIFY_PROTECTION, 0);
	log_reset();
	cr_assert_eq(smmu_munmap_ex(e.mm, a + 7 * PS, PS, SMMU_OP_NONBLOCK), 0);
	expect_op(1, e.mm, a + 7 * PS, a + 8 * PS, SMMU_NOTIFY_UNMAP, 0);
	cr_assert_eq(smmu_try_load64(e.cpu, a + 7 * PS, &v), -EFAULT);
	/* ... and with flags 0, the blocking ones. */
	log_reset();
	cr_assert_eq(smmu_mprotect_ex(e.mm, a, PS, R, 0), 0);
	expect_op(1, e.mm, a, a + PS, SMMU_NOTIFY_PROTECTION, BLOCK);

	/* A length that is not a page multiple: the range is rounded up. */
	log_reset();
	cr_assert_eq(smmu_munmap(e.mm, a + 6 * PS, 1), 0);
	expect_op(1, e.mm, a + 6 * PS, a + 7 * PS, SMMU_NOTIFY_UNMAP, BLOCK);

	/* No release while the mm lives and the subscription stands. */
	cr_assert_eq(log_count(EV_RELEASE, -1), 0);
	log_reset();
	sub_unregister(&s);
	env_fini(&e);
}

/* release at smmu_mm_destroy: exactly once per subscriber, before the
 * frames go, nothing else during the teardown; unregister afterwards only
 * frees. */
struct destroy_ctx {
	struct env *e;
	void *host;
	size_t free_before;
	bool self_unregister;
	int self_unregister_ret;
	int register_ret;
	int translate_ret;
};

static void destroy_hook(struct sub *s, int kind, const struct smmu_notify_range *r, unsigned long seq)
{
	(void)r;
	(void)seq;
	struct destroy_ctx *c = s->ctx;
	if (kind != EV_RELEASE)
		return;
	uint64_t v = __atomic_load_n((uint64_t *)c->host, __ATOMIC_RELAXED);
	CHECK(v == PAT(0), "release at destroy: the frames are already gone (0x%llx)", (unsigned long long)v);
	CHECK(smmu_pool_free_frames(c->e->pool) == c->free_before, "release at destroy: frames freed before it");
	struct smmu_notifier *n = NULL;
	c->register_ret = smmu_notifier_register(s->mm, &sub_ops, s, &n);
	void *p;
	c->translate_ret = smmu_mm_translate(s->mm, H, R, &p);
	if (c->self_unregister) {
		/* "from then on its owner may unregister it (which only frees it),
		 * even from the release itself" */
		c->self_unregister_ret = smmu_notifier_unregister(s->n);
		s->n = NULL;
	}
}

Test(notifier, release_at_destroy_exactly_once)
{
	struct env e;
	env_init(&e, 64);
	smmu_addr_t a = map(&e, H, 4 * PS, RW, 0);
	fill(&e, a, 4);
	void *host;
	cr_assert_eq(smmu_mm_translate(e.mm, a, R, &host), 0);
	cr_assert_eq(smmu_cpu_unregister(e.cpu), 0);
	e.cpu = NULL;

	struct destroy_ctx c1 = {.e = &e, .host = host}, c2 = {.e = &e, .host = host, .self_unregister = true};
	struct sub s1, s2, iv;
	sub_init(&s1, 1);
	sub_init(&s2, 2);
	sub_init(&iv, 3);
	s1.hook = destroy_hook;
	s1.ctx = &c1;
	s2.hook = destroy_hook;
	s2.ctx = &c2;
	sub_register(&s1, e.mm);
	sub_register(&s2, e.mm);
	sub_insert(&iv, e.mm, a, 4 * PS);
	c1.free_before = c2.free_before = smmu_pool_free_frames(e.pool);
	log_reset();

	struct smmu_mm *mm = e.mm;
	cr_assert_eq(smmu_mm_destroy(e.mm), 0);
	expect_no_tfail();
	cr_assert_eq(log_count(EV_RELEASE, 1), 1, "sub 1: %d releases", log_count(EV_RELEASE, 1));
	cr_assert_eq(log_count(EV_RELEASE, 2), 1, "sub 2: %d releases", log_count(EV_RELEASE, 2));
	struct ev v[16];
	int n = log_get(-1, v, 16);
	cr_assert_eq(n, 2, "teardown made %d callbacks, want the two releases only", n);
	cr_assert_eq(v[0].mm, mm);
	cr_assert_eq(c1.register_ret, -EINVAL, "register on a dying mm: %d", c1.register_ret);
	cr_assert_eq(c1.translate_ret, -EINVAL, "translate on a dying mm: %d", c1.translate_ret);
	cr_assert_eq(c2.self_unregister_ret, 0, "unregister from its own release at destroy: %d",
		     c2.self_unregister_ret);
	/* After the teardown: unregister and remove only free. */
	cr_assert_eq(smmu_notifier_unregister(s1.n), 0);
	atomic_store(&s1.dead, 1);
	cr_assert_eq(smmu_interval_notifier_remove(iv.in), 0);
	cr_assert_eq(log_count(EV_RELEASE, -1), 2, "release again after destroy");
	cr_assert_eq(log_count(EV_INVAL, -1), 0);
	cr_assert_eq(smmu_pool_free_frames(e.pool), smmu_pool_frames(e.pool), "frames leaked");
	cr_assert_eq(smmu_pool_destroy(e.pool), 0);
}

/* release at smmu_notifier_unregister while the mm lives: once, then no
 * callback, and none at destroy. */
Test(notifier, release_at_unregister_exactly_once)
{
	struct env e;
	env_init(&e, 64);
	smmu_addr_t a = map(&e, H, 4 * PS, RW, 0);
	fill(&e, a, 4);
	struct sub s1, s2;
	sub_init(&s1, 1);
	sub_init(&s2, 2);
	sub_register(&s1, e.mm);
	sub_register(&s2, e.mm);
	log_reset();
	sub_unregister(&s1);
	struct ev v[8];
	int n = log_get(-1, v, 8);
	cr_assert_eq(n, 1, "unregister made %d callbacks", n);
	cr_assert_eq(v[0].kind, EV_RELEASE);
	cr_assert_eq(v[0].who, 1);
	cr_assert_eq(v[0].mm, e.mm);

	/* s1 hears nothing more; s2 still does. */
	log_reset();
	cr_assert_eq(smmu_munmap(e.mm, a, PS), 0);
	cr_assert_eq(log_count(EV_START, 1) + log_count(EV_END, 1) + log_count(EV_SEC, 1), 0);
	expect_op(2, e.mm, a, a + PS, SMMU_NOTIFY_UNMAP, BLOCK);
	size_t young;
	cr_assert_eq(smmu_test_young(e.mm, a, 4 * PS, &young), 0);
	cr_assert_eq(log_count(EV_TEST_YOUNG, 1), 0);
	cr_assert_eq(log_count(EV_TEST_YOUNG, 2), 1);

	/* Destroy: s2 released once, s1 not again. */
	cr_assert_eq(smmu_cpu_unregister(e.cpu), 0);
	e.cpu = NULL;
	log_reset();
	cr_assert_eq(smmu_mm_destroy(e.mm), 0);
	cr_assert_eq(log_count(EV_RELEASE, 1), 0, "released twice");
	cr_assert_eq(log_count(EV_RELEASE, 2), 1);
	cr_assert_eq(smmu_notifier_unregister(s2.n), 0);
	cr_assert_eq(log_count(EV_RELEASE, 2), 1, "released again by unregister after destroy");
	cr_assert_eq(smmu_pool_free_frames(e.pool), smmu_pool_frames(e.pool));
	cr_assert_eq(smmu_pool_destroy(e.pool), 0);
}

/* ------------------------------------------------------------ 3. non-blocking changes */

/* The mapping [a, a + pages) is as fill() left its first 4 pages. */
static void expect_unchanged(struct env *e, smmu_addr_t a, size_t pages, size_t free0)
{
	expect_filled(e, a, 4);
	expect_region(e->mm, a, a, a + pages * PS, RW);
	cr_assert_eq(smmu_try_store64(e->cpu, a + 16, 7), 0, "no longer writable");
	cr_assert_eq(smmu_try_store64(e->cpu, a + 16, 0), 0);
	cr_assert_eq(smmu_pool_free_frames(e->pool), free0, "frames freed by a refused change");
}

Test(notifier, nonblock_refused_by_start)
{
	int b_started_then_ended = 0;
	for (int order = 0; order < 2; order++) {
		struct env e;
		env_init(&e, 64);
		smmu_addr_t a = map(&e, H, 4 * PS, RW, 0);
		fill(&e, a, 4);
		struct sub A, B;
		sub_init(&A, 1);
		sub_init(&B, 2);
		A.refuse_nonblock = true;
		if (order == 0) {
			sub_register(&A, e.mm);
			sub_register(&B, e.mm);
		} else {
			sub_register(&B, e.mm);
			sub_register(&A, e.mm);
		}
		size_t free0 = smmu_pool_free_frames(e.pool);

		for (int op = 0; op < 2; op++) {
			log_reset();
			atomic_store(&B.starts, 0);
			atomic_store(&B.ends, 0);
			int err = op == 0 ? smmu_munmap_ex(e.mm, a, 4 * PS, SMMU_OP_NONBLOCK)
					  : smmu_mprotect_ex(e.mm, a, 4 * PS, R, SMMU_OP_NONBLOCK);
			cr_assert_eq(err, -EAGAIN, "order %d op %d: %d", order, op, err);
			expect_no_tfail();
			/* A was asked (not blockable) and refused: no secondary, no end. */
			struct ev v[16];
			int n = log_get(1, v, 16);
			cr_assert_eq(n, 1, "refusing sub: %d callbacks, want its start only", n);
			cr_assert_eq(v[0].kind, EV_START);
			cr_assert_eq(v[0].flags, 0u, "start of a non-blocking change has BLOCKABLE");
			cr_assert_eq(v[0].event, op == 0 ? SMMU_NOTIFY_UNMAP : SMMU_NOTIFY_PROTECTION);
			/* B: an end for each start that returned 0, and no secondary. */
			cr_assert_eq(log_count(EV_SEC, 2), 0);
			cr_assert_eq(log_count(EV_START, 2), atomic_load(&B.starts));
			cr_assert_eq(atomic_load(&B.ends), atomic_load(&B.starts),
				     "order %d op %d: %d starts, %d ends of the other subscriber", order, op,
				     atomic_load(&B.starts), atomic_load(&B.ends));
			if (atomic_load(&B.starts)) {
				b_started_then_ended++;
				n = log_get(2, v, 16);
				cr_assert_eq(n, 2);
				cr_assert_eq(v[0].kind, EV_START);
				cr_assert_eq(v[1].kind, EV_END);
				cr_assert_eq(v[1].start, a);
				cr_assert_eq(v[1].end, a + 4 * PS);
				cr_assert_eq(v[1].flags, 0u);
			}
			/* Nothing changed. */
			expect_unchanged(&e, a, 4, free0);
		}

		/* Blocking: A is asked with BLOCKABLE, does not refuse, the change is made. */
		log_reset();
		cr_assert_eq(smmu_mprotect_ex(e.mm, a, PS, R, 0), 0);
		expect_op(1, e.mm, a, a + PS, SMMU_NOTIFY_PROTECTION, BLOCK);
		expect_op(2, e.mm, a, a + PS, SMMU_NOTIFY_PROTECTION, BLOCK);
		cr_assert_eq(smmu_try_store64(e.cpu, a, 1), -EACCES);
		log_reset();
		cr_assert_eq(smmu_munmap(e.mm, a, 4 * PS), 0);
		expect_op(1, e.mm, a, a + 4 * PS, SMMU_NOTIFY_UNMAP, BLOCK);
		expect_op(2, e.mm, a, a + 4 * PS, SMMU_NOTIFY_UNMAP, BLOCK);
		uint64_t x;
		cr_assert_eq(smmu_try_load64(e.cpu, a + PS, &x), -EFAULT);
		cr_assert_eq(smmu_pool_free_frames(e.pool), free0 + 4);

		/* Without the refusing one a non-blocking change goes through. */
		sub_unregister(&A);
		smmu_addr_t b = map(&e, H + 16 * PS, 2 * PS, RW, 0);
		fill(&e, b, 2);
		log_reset();
		cr_assert_eq(smmu_munmap_ex(e.mm, b, 2 * PS, SMMU_OP_NONBLOCK), 0);
		expect_op(2, e.mm, b, b + 2 * PS, SMMU_NOTIFY_UNMAP, 0);
		cr_assert_eq(smmu_try_load64(e.cpu, b, &x), -EFAULT);
		sub_unregister(&B);
		env_fini(&e);
	}
	/* In one of the two orders B was asked before A refused. */
	cr_assert_geq(b_started_then_ended, 1, "the end-for-started path was never exercised");
}

/* Errors other than -EAGAIN from start are ignored in blocking changes. */
Test(notifier, blocking_ignores_start_errors)
{
	struct env e;
	env_init(&e, 64);
	smmu_addr_t a = map(&e, H, 4 * PS, RW, 0);
	fill(&e, a, 4);
	struct sub s;
	sub_init(&s, 1);
	s.start_ret = -ENOMEM;
	sub_register(&s, e.mm);
	log_reset();
	cr_assert_eq(smmu_munmap(e.mm, a, 2 * PS), 0);
	expect_op(1, e.mm, a, a + 2 * PS, SMMU_NOTIFY_UNMAP, BLOCK);
	uint64_t v;
	cr_assert_eq(smmu_try_load64(e.cpu, a, &v), -EFAULT);
	sub_unregister(&s);
	env_fini(&e);
}

struct rb_arg {
	struct smmu_interval_notifier *in;
	atomic_int *flag; /* sampled when read_begin returns */
	int flag_at_return;
	unsigned long seq;
};

static long rb_fn(void *p)
{
	struct rb_arg *r = p;
	r->seq = smmu_interval_read_begin(r->in);
	r->flag_at_return = r->flag ? atomic_load(r->flag) : 0;
	return 0;
}

/* read_begin on another thread, bounded: whether it returned in ms. */
static bool read_begin_within(struct smmu_interval_notifier *in, unsigned ms, unsigned long *seq)
{
	struct rb_arg r = {.in = in};
	struct task t;
	task_start(&t, rb_fn, &r);
	bool ok = task_wait(&t, ms);
	cr_assert(ok, "smmu_interval_read_begin blocked with no invalidation running");
	*seq = r.seq;
	return ok;
}

Test(notifier, nonblock_refused_by_interval)
{
	struct env e;
	env_init(&e, 64);
	smmu_addr_t a = map(&e, H, 8 * PS, RW, 0);
	fill(&e, a, 4);
	struct sub I, I2, B;
	sub_init(&I, 1);
	sub_init(&I2, 2);
	sub_init(&B, 3);
	I.refuse_nonblock = true;
	sub_insert(&I, e.mm, a, 4 * PS);
	sub_insert(&I2, e.mm, a + 2 * PS, 4 * PS); /* accepts; overlaps the change too */
	sub_register(&B, e.mm);
	size_t free0 = smmu_pool_free_frames(e.pool);
	unsigned long s1 = smmu_interval_read_begin(I.in);

	for (int op = 0; op < 2; op++) {
		log_reset();
		int err = op == 0 ? smmu_munmap_ex(e.mm, a, 4 * PS, SMMU_OP_NONBLOCK)
				  : smmu_mprotect_ex(e.mm, a, 4 * PS, R, SMMU_OP_NONBLOCK);
		cr_assert_eq(err, -EAGAIN, "op %d: %d", op, err);
		expect_no_tfail();
		cr_assert_eq(log_count(EV_INVAL, 1), 1, "the refusing interval was not asked");
		/* The plain subscriber is neither started nor ended. */
		cr_assert_eq(log_count(EV_START, 3) + log_count(EV_SEC, 3) + log_count(EV_END, 3), 0);
		expect_unchanged(&e, a, 8, free0);
		/* The sequence is not left "in progress": read_begin returns. */
		unsigned long s;
		read_begin_within(I2.in, WAIT_MS, &s);
		read_begin_within(I.in, WAIT_MS, &s);
		cr_assert(!smmu_interval_read_retry(I.in, s1), "the refusing interval's sequence moved");
	}

	/* Non-blocking, not overlapping the refusing interval: goes through. */
	log_reset();
	cr_assert_eq(smmu_munmap_ex(e.mm, a + 7 * PS, PS, SMMU_OP_NONBLOCK), 0);
	cr_assert_eq(log_count(EV_INVAL, 1), 0);
	expect_op(3, e.mm, a + 7 * PS, a + 8 * PS, SMMU_NOTIFY_UNMAP, 0);

	/* Blocking: the interval is asked with BLOCKABLE and accepts. */
	log_reset();
	cr_assert_eq(smmu_munmap(e.mm, a, 4 * PS), 0);
	struct ev v[8];
	cr_assert_eq(log_get(1, v, 8), 1);
	cr_assert_eq(v[0].kind, EV_INVAL);
	cr_assert_eq(v[0].flags, BLOCK);
	cr_assert(smmu_interval_read_retry(I.in, s1));
	expect_op(3, e.mm, a, a + 4 * PS, SMMU_NOTIFY_UNMAP, BLOCK);
	cr_assert_eq(smmu_pool_free_frames(e.pool), free0 + 4);
	sub_remove(&I);
	sub_remove(&I2);
	sub_unregister(&B);
	env_fini(&e);
}

/* ------------------------------------------------------------ 4. unregister racing a callback */

struct race_ctx {
	atomic_int change_ended;    /* a subscriber that stays saw the change's end */
	atomic_int cb_returned;     /* the blocked start returned */
	atomic_int unreg_other_ret; /* unregister(other) returned */
	atomic_int unreg_self_ret;  /* unregister(blocked) returned */
};

static void blocker_hook(struct sub *s, int kind, const struct smmu_notify_range *r, unsigned long seq)
{
	(void)r;
	(void)seq;
	struct race_ctx *c = s->ctx;
	if (kind == EV_START) {
		/* Let go: the unregisters are still waiting for us. */
		CHECK(!atomic_load(&c->unreg_other_ret), "unregister(other) returned while a callback ran");
		CHECK(!atomic_load(&c->unreg_self_ret), "unregister(self) returned while its callback ran");
		sleep_us(20000); /* give a wrong unregister time to return */
		CHECK(!atomic_load(&c->unreg_other_ret), "unregister(other) returned while a callback ran");
		CHECK(!atomic_load(&c->unreg_self_ret), "unregister(self) returned while its callback ran");
		atomic_store(&c->cb_returned, 1);
	} else if (kind == EV_RELEASE) {
		CHECK(atomic_load(&c->cb_returned), "release while its start still runs");
	}
}

struct unreg_arg {
	struct sub *s;
	struct race_ctx *c;
	atomic_int *ret_flag;
};

static long unreg_fn(void *p)
{
	struct unreg_arg *u = p;
	int err = smmu_notifier_unregister(u->s->n);
	CHECK(atomic_load(&u->c->cb_returned), "unregister of sub %d returned before the callback did", u->s->id);
	/* "unregistering waits for the changes in flight that may have seen
	 * the subscriber" */
	CHECK(atomic_load(&u->c->change_ended), "unregister of sub %d returned before the change in flight ended",
	      u->s->id);
	atomic_store(&u->s->dead, 1);
	atomic_store(u->ret_flag, 1);
	return err;
}

struct munmap_arg {
	struct smmu_mm *mm;
	smmu_addr_t a;
	size_t len;
};

static long munmap_fn(void *p)
{
	struct munmap_arg *m = p;
	return smmu_munmap(m->mm, m->a, m->len);
}

Test(notifier, unregister_waits_for_running_callback)
{
	struct env e;
	env_init_mode(&e, 64, SMMU_SHOOTDOWN_SIGNAL, false);
	smmu_addr_t a = map(&e, H, 4 * PS, RW, SMMU_MAP_POPULATE);
	smmu_addr_t b = map(&e, H + 16 * PS, PS, RW, 0);
	struct race_ctx c = {0};
	struct sub blk, other_before, other_after, witness;
	sub_init(&blk, 1);
	sub_init(&other_before, 2);
	sub_init(&other_after, 3);
	sub_init(&witness, 4);
	blk.hook = blocker_hook;
	blk.ctx = &c;
	witness.hook = set_flag_at_end_hook;
	witness.ctx = &c.change_ended;
	sub_register(&witness, e.mm);
	/* One other subscriber on each side of the blocker in whatever order
	 * the library calls them. */
	sub_register(&other_before, e.mm);
	sub_register(&blk, e.mm);
	sub_register(&other_after, e.mm);
	gate_arm(&blk.g_start);
	log_reset();

	struct munmap_arg ma = {e.mm, a, 4 * PS};
	struct task m;
	task_start(&m, munmap_fn, &ma);
	gate_wait_entered(&blk.g_start);

	/* The mapping lock is held: the non-blocking forms refuse at once. */
	cr_assert_eq(smmu_munmap_ex(e.mm, b, PS, SMMU_OP_NONBLOCK), -EAGAIN);
	cr_assert_eq(smmu_mprotect_ex(e.mm, b, PS, R, SMMU_OP_NONBLOCK), -EAGAIN);

	atomic_int other2_ret = 0;
	struct unreg_arg u_other = {&other_before, &c, &c.unreg_other_ret};
	struct unreg_arg u_other2 = {&other_after, &c, &other2_ret};
	struct unreg_arg u_self = {&blk, &c, &c.unreg_self_ret};
	struct task t_other, t_other2, t_self;
	task_start(&t_other, unreg_fn, &u_other);
	task_start(&t_other2, unreg_fn, &u_other2);
	task_start(&t_self, unreg_fn, &u_self);
	sleep_us(QUIET_MS * 1000);
	cr_assert(!atomic_load(&c.unreg_other_ret), "unregister(other) returned while a start callback blocks");
	cr_assert(!atomic_load(&other2_ret), "unregister(other) returned while a start callback blocks");
	cr_assert(!atomic_load(&c.unreg_self_ret), "unregister(self) returned while its start callback blocks");
	cr_assert(!atomic_load(&m.done));

	atomic_store(&blk.g_start.open, 1);
	cr_assert(task_wait(&m, WAIT_MS), "munmap did not finish");
	cr_assert(task_wait(&t_other, WAIT_MS), "unregister did not return");
	cr_assert(task_wait(&t_other2, WAIT_MS), "unregister did not return");
	cr_assert(task_wait(&t_self, WAIT_MS), "unregister did not return");
	expect_no_tfail();
	cr_assert_eq(m.ret, 0);
	cr_assert_eq(t_other.ret, 0);
	cr_assert_eq(t_other2.ret, 0);
	cr_assert_eq(t_self.ret, 0);
	cr_assert_eq(log_count(EV_RELEASE, 1), 1);
	cr_assert_eq(log_count(EV_RELEASE, 2), 1);
	cr_assert_eq(log_count(EV_RELEASE, 3), 1);
	/* Whoever was started got an end, or was unregistered first; nobody
	 * got an end without a start. */
	for (int who = 1; who <= 3; who++)
		cr_assert_leq(log_count(EV_END, who), log_count(EV_START, who), "sub %d: end without start", who);
	struct smmu_region reg;
	cr_assert_eq(smmu_mm_find(e.mm, a, &reg), 0);
	cr_assert_eq(reg.start, b, "the munmap did not happen");
	expect_op(4, e.mm, a, a + 4 * PS, SMMU_NOTIFY_UNMAP, BLOCK);
	log_reset();
	cr_assert_eq(smmu_munmap(e.mm, b, PS), 0);
	cr_assert_eq(log_count(EV_START, 1) + log_count(EV_START, 2) + log_count(EV_START, 3), 0);
	expect_op(4, e.mm, b, b + PS, SMMU_NOTIFY_UNMAP, BLOCK);
	witness.hook = NULL;
	sub_unregister(&witness);
	env_fini(&e);
}

/* ------------------------------------------------------------ -EDEADLK from inside callbacks */

struct dl_ctx {
	struct env *e;
	struct smmu_mm *other_mm; /* another mm: its API stays usable */
	struct sub *peer;         /* another subscription of the same mm */
	struct sub *interval;     /* an interval subscription of the same mm */
	smmu_addr_t a;
	atomic_int checked[8]; /* per callback kind */
};

static void deadlock_checks(struct sub *s, struct dl_ctx *c, int kind)
{
	struct smmu_mm *mm = c->e->mm;
	void *p = NULL;
	struct smmu_notifier *n = NULL;
	struct smmu_interval_notifier *in = NULL;
	size_t y = 0;
	int err;
#define DL(call)                                                                                 \
	do {                                                                                     \
		err = (call);                                                                    \
		CHECK(err == -EDEADLK, "callback %d of sub %d: %s = %d", kind, s->id, #call, err); \
	} while (0)
	if (s->n)
		DL(smmu_notifier_unregister(s->n));
	if (s->in)
		DL(smmu_interval_notifier_remove(s->in));
	DL(smmu_notifier_unregister(c->peer->n));
	DL(smmu_notifier_register(mm, &sub_ops, s, &n));
	DL(smmu_interval_notifier_insert(mm, c->a, PS, &interval_ops, s, &in));
	DL(smmu_interval_notifier_remove(c->interval->in));
	smmu_addr_t out = 0;
	struct smmu_region reg;
	DL(smmu_mmap(mm, c->a + 64 * PS, PS, RW, 0, &out));
	DL(smmu_mmap(mm, c->a + 64 * PS, PS, RW, SMMU_MAP_FIXED, &out));
	DL(smmu_mm_find(mm, c->a, &reg));
	DL(smmu_mm_translate(mm, c->a, R, &p));
	DL(smmu_mm_translate(mm, c->a, RW, &p));
	DL(smmu_munmap(mm, c->a + 2 * PS, PS));
	DL(smmu_munmap_ex(mm, c->a + 2 * PS, PS, SMMU_OP_NONBLOCK));
	DL(smmu_mprotect(mm, c->a + 2 * PS, PS, R));
	DL(smmu_mprotect_ex(mm, c->a + 2 * PS, PS, R, SMMU_OP_NONBLOCK));
	DL(smmu_clear_dirty(mm, c->a, PS, &y));
	DL(smmu_test_young(mm, c->a, PS, &y));
	DL(smmu_test_and_clear_young(mm, c->a, PS, &y));
#undef DL
	CHECK(n == NULL && in == NULL && out == 0, "an out parameter was set by a refused call");
	/* Another mm is not this one. */
	err = smmu_mm_translate(c->other_mm, H, R, &p);
	CHECK(err == 0, "translate of another mm inside a callback: %d", err);
	if (kind >= 0 && kind < 8)
		atomic_fetch_add(&c->checked[kind], 1);
}

static void dl_hook(struct sub *s, int kind, const struct smmu_notify_range *r, unsigned long seq)
{
	(void)r;
	(void)seq;
	deadlock_checks(s, s->ctx, kind);
}

Test(notifier, calls_from_inside_callbacks_edeadlk)
{
	struct env e;
	env_init(&e, 64);
	smmu_addr_t a = map(&e, H, 4 * PS, RW, 0);
	fill(&e, a, 4);
	struct smmu_mm *mm2;
	cr_assert_eq(smmu_mm_create(e.pool, &mm2), 0);
	smmu_addr_t out;
	cr_assert_eq(smmu_mmap(mm2, H, PS, RW, SMMU_MAP_FIXED, &out), 0);

	struct sub s, peer, iv, ivp;
	sub_init(&s, 1);
	sub_init(&peer, 2);
	sub_init(&iv, 3);
	sub_init(&ivp, 4);
	struct dl_ctx c = {.e = &e, .other_mm = mm2, .peer = &peer, .interval = &ivp, .a = a};
	s.hook = dl_hook;
	s.ctx = &c;
	iv.hook = dl_hook;
	iv.ctx = &c;
	peer.hook = dl_hook;
	peer.ctx = &c;
	sub_register(&peer, e.mm);
	sub_register(&s, e.mm);
	sub_insert(&iv, e.mm, a, 4 * PS);
	sub_insert(&ivp, e.mm, H + 64 * PS, PS);
	log_reset();

	cr_assert_eq(smmu_munmap(e.mm, a, PS), 0); /* start, secondary, end; interval invalidate */
	size_t y;
	cr_assert_eq(smmu_test_young(e.mm, a, 4 * PS, &y), 0);
	cr_assert_eq(smmu_test_and_clear_young(e.mm, a, 4 * PS, &y), 0);
	expect_no_tfail();
	cr_assert_geq(atomic_load(&c.checked[EV_START]), 2);
	cr_assert_geq(atomic_load(&c.checked[EV_SEC]), 2);
	cr_assert_geq(atomic_load(&c.checked[EV_END]), 2);
	cr_assert_geq(atomic_load(&c.checked[EV_INVAL]), 1);
	cr_assert_geq(atomic_load(&c.checked[EV_TEST_YOUNG]), 2);
	cr_assert_geq(atomic_load(&c.checked[EV_CLEAR_YOUNG]), 2);
	/* Nothing the refused calls asked for happened, and the mapping lock
	 * is sane (a refused call neither took nor dropped it). */
	expect_region(e.mm, a + PS, a + PS, a + 4 * PS, RW);
	struct smmu_region reg;
	cr_assert_eq(smmu_mm_find(e.mm, a + 64 * PS, &reg), -ENOENT, "a refused mmap was made");
	cr_assert_eq(smmu_mprotect_ex(e.mm, a + 3 * PS, PS, RW, SMMU_OP_NONBLOCK), 0, "mm->lock left held");
	uint64_t v;
	cr_assert_eq(smmu_try_load64(e.cpu, a + 2 * PS, &v), 0);
	cr_assert_eq(v, PAT(2));
	cr_assert_eq(smmu_try_store64(e.cpu, a + 2 * PS + 8, 1), 0);

	/* release from unregister runs as a callback too. */
	atomic_store(&c.checked[EV_RELEASE], 0);
	sub_unregister(&s);
	expect_no_tfail();
	cr_assert_eq(atomic_load(&c.checked[EV_RELEASE]), 1);

	/* The calls refused inside work outside. */
	peer.hook = NULL;
	iv.hook = NULL;
	sub_unregister(&peer);
	sub_remove(&ivp);
	sub_remove(&iv);
	cr_assert_eq(smmu_munmap(e.mm, a + 2 * PS, PS), 0);
	cr_assert_eq(smmu_mm_destroy(mm2), 0);
	env_fini(&e);
}

/* ------------------------------------------------------------ 5. interval notifiers */

Test(notifier, interval_invalidate_and_sequence)
{
	struct env e;
	env_init(&e, 64);
	smmu_addr_t a = map(&e, H, 8 * PS, RW, 0);
	fill(&e, a, 8);
	struct sub I;
	sub_init(&I, 1);
	sub_insert(&I, e.mm, a, 4 * PS);
	smmu_addr_t s = 0, en = 0;
	smmu_interval_notifier_range(I.in, &s, &en);
	cr_assert_eq(s, a);
	cr_assert_eq(en, a + 4 * PS);

	unsigned long seq0 = smmu_interval_read_begin(I.in);
	cr_assert(!smmu_interval_read_retry(I.in, seq0), "retry with nothing invalidated");

	/* Not overlapping (adjacent above, and below): not called. */
	log_reset();
	cr_assert_eq(smmu_munmap(e.mm, a + 4 * PS, PS), 0);
	cr_assert_eq(smmu_munmap(e.mm, a - 4 * PS, 4 * PS), 0);
	expect_no_callbacks();
	cr_assert(!smmu_interval_read_retry(I.in, seq0), "retry after a change outside the interval");

	/* Overlapping (the last page): called with an odd cur_seq, at the start. */
	size_t free0 = smmu_pool_free_frames(e.pool);
	log_reset();
	cr_assert_eq(smmu_munmap(e.mm, a + 3 * PS, 2 * PS), 0);
	struct ev v[8];
	int n = log_get(1, v, 8);
	cr_assert_eq(n, 1, "%d callbacks", n);
	cr_assert_eq(v[0].kind, EV_INVAL);
	cr_assert_eq(v[0].start, a + 3 * PS);
	cr_assert_eq(v[0].end, a + 5 * PS);
	cr_assert_eq(v[0].event, SMMU_NOTIFY_UNMAP);
	cr_assert_eq(v[0].flags, BLOCK);
	cr_assert(v[0].seq & 1, "cur_seq %lu not odd", v[0].seq);
	cr_assert_eq(smmu_pool_free_frames(e.pool), free0 + 1);
	cr_assert(smmu_interval_read_retry(I.in, seq0), "no retry after an overlapping invalidation");
	unsigned long seq1 = smmu_interval_read_begin(I.in);
	cr_assert(!smmu_interval_read_retry(I.in, seq1), "fresh read_begin already stale");

	/* mprotect and clear_dirty overlapping: called with their events. */
	log_reset();
	cr_assert_eq(smmu_mprotect(e.mm, a, PS, R), 0);
	n = log_get(1, v, 8);
	cr_assert_eq(n, 1);
	cr_assert_eq(v[0].event, SMMU_NOTIFY_PROTECTION);
	cr_assert_eq(v[0].start, a);
	cr_assert_eq(v[0].end, a + PS);
	cr_assert(v[0].seq & 1);
	cr_assert_neq(v[0].seq, seq1, "the same odd sequence for two invalidations");
	cr_assert(smmu_interval_read_retry(I.in, seq1));
	unsigned long seq2 = smmu_interval_read_begin(I.in);
	cr_assert(!smmu_interval_read_retry(I.in, seq2));
	log_reset();
	size_t d;
	cr_assert_eq(smmu_clear_dirty(e.mm, a + PS, PS, &d), 0);
	n = log_get(1, v, 8);
	cr_assert_eq(n, 1);
	cr_assert_eq(v[0].event, SMMU_NOTIFY_CLEAR);
	cr_assert(smmu_interval_read_retry(I.in, seq2));

	/* A sub-page interval: byte-granular overlap. */
	struct sub J;
	sub_init(&J, 2);
	sub_insert(&J, e.mm, a + 2 * PS + 100, 1);
	smmu_interval_notifier_range(J.in, &s, &en);
	cr_assert_eq(s, a + 2 * PS + 100);
	cr_assert_eq(en, a + 2 * PS + 101);
	log_reset();
	cr_assert_eq(smmu_mprotect(e.mm, a + 2 * PS, PS, R), 0);
	cr_assert_eq(log_count(EV_INVAL, 2), 1);

	/* Removed: no more callbacks. */
	sub_remove(&I);
	sub_remove(&J);
	log_reset();
	cr_assert_eq(smmu_munmap(e.mm, a, 4 * PS), 0);
	expect_no_callbacks();
	env_fini(&e);
}

/* The fill protocol with a mirror thread: translate under read_begin /
 * read_retry; an invalidation between them forces the retry. */
Test(notifier, interval_fill_protocol_with_translate)
{
	struct env e;
	env_init(&e, 64);
	smmu_addr_t a = map(&e, H, 4 * PS, RW, 0);
	fill(&e, a, 4);
	struct sub I;
	sub_init(&I, 1);
	sub_insert(&I, e.mm, a, 4 * PS);

	unsigned long seq = smmu_interval_read_begin(I.in);
	void *p;
	cr_assert_eq(smmu_mm_translate(e.mm, a + PS, R, &p), 0);
	pthread_mutex_lock(&I.lock);
	cr_assert(!smmu_interval_read_retry(I.in, seq));
	pthread_mutex_unlock(&I.lock);
	cr_assert_eq(*(uint64_t *)p, PAT(1));

	seq = smmu_interval_read_begin(I.in);
	cr_assert_eq(smmu_mm_translate(e.mm, a + PS, R, &p), 0);
	cr_assert_eq(smmu_mprotect(e.mm, a + PS, PS, R), 0); /* races the fill */
	pthread_mutex_lock(&I.lock);
	cr_assert(smmu_interval_read_retry(I.in, seq), "a fill that raced an invalidation would be published");
	pthread_mutex_unlock(&I.lock);
	sub_remove(&I);
	env_fini(&e);
}

/* read_begin waits while an overlapping invalidation is in progress. */
Test(notifier, interval_read_begin_waits_for_invalidation)
{
	struct env e;
	env_init_mode(&e, 64, SMMU_SHOOTDOWN_SIGNAL, false);
	smmu_addr_t a = map(&e, H, 8 * PS, RW, SMMU_MAP_POPULATE);
	struct sub I, J, P;
	sub_init(&I, 1);
	sub_init(&J, 2);
	sub_init(&P, 3);
	sub_insert(&I, e.mm, a, 4 * PS);
	sub_insert(&J, e.mm, a + 6 * PS, PS);
	sub_register(&P, e.mm);
	atomic_int end_seen = 0;
	P.hook = set_flag_at_end_hook;
	P.ctx = &end_seen;
	unsigned long seq0 = smmu_interval_read_begin(I.in);
	unsigned long seqJ = smmu_interval_read_begin(J.in);
	gate_arm(&P.g_start);
	log_reset();

	struct munmap_arg ma = {e.mm, a, PS};
	struct task m;
	task_start(&m, munmap_fn, &ma);
	gate_wait_entered(&P.g_start);
	cr_assert_eq(log_count(EV_INVAL, 1), 1, "the interval was not invalidated before the plain start");
	cr_assert(smmu_interval_read_retry(I.in, seq0));

	struct rb_arg rb = {.in = I.in, .flag = &end_seen};
	struct task t;
	task_start(&t, rb_fn, &rb);
	/* Not overlapping: J's read_begin does not wait. */
	unsigned long sJ;
	read_begin_within(J.in, WAIT_MS, &sJ);
	cr_assert(!smmu_interval_read_retry(J.in, seqJ));
	sleep_us(QUIET_MS * 1000);
	cr_assert(!atomic_load(&t.done), "read_begin returned while an overlapping invalidation runs");

	/* end_seen is set by P's end callback: the change's end. */
	atomic_store(&P.g_start.open, 1);
	cr_assert(task_wait(&m, WAIT_MS));
	cr_assert_eq(m.ret, 0);
	cr_assert(task_wait(&t, WAIT_MS), "read_begin still blocked after the invalidation ended");
	cr_assert_eq(atomic_load(&P.ends), 1);
	cr_assert_eq(rb.flag_at_return, 1, "read_begin returned before the change's end");
	cr_assert(!smmu_interval_read_retry(I.in, rb.seq), "the sequence read_begin gave is stale at once");
	expect_no_tfail();
	sub_remove(&I);
	sub_remove(&J);
	sub_unregister(&P);
	env_fini(&e);
}

struct insert_arg {
	struct sub *s;
	struct smmu_mm *mm;
	smmu_addr_t a;
	size_t len;
};

static long insert_fn(void *p)
{
	struct insert_arg *ia = p;
	ia->s->mm = ia->mm;
	return smmu_interval_notifier_insert(ia->mm, ia->a, ia->len, &interval_ops, ia->s, &ia->s->in);
}

/* Insert while an invalidation runs: the new subscription's first
 * read_begin waits for that change's end; the change does not call it. */
Test(notifier, interval_insert_during_invalidation)
{
	struct env e;
	env_init_mode(&e, 64, SMMU_SHOOTDOWN_SIGNAL, false);
	smmu_addr_t a = map(&e, H, 8 * PS, RW, SMMU_MAP_POPULATE);
	struct sub I, P, K;
	sub_init(&I, 1);
	sub_init(&P, 2);
	sub_init(&K, 3);
	atomic_int ended = 0;
	P.hook = set_flag_at_end_hook;
	P.ctx = &ended;
	sub_insert(&I, e.mm, a, 4 * PS); /* an interval the change meets */
	sub_register(&P, e.mm);
	gate_arm(&P.g_start);
	gate_arm(&P.g_sec);
	log_reset();

	struct munmap_arg ma = {e.mm, a, PS};
	struct task m;
	task_start(&m, munmap_fn, &ma);
	gate_wait_entered(&P.g_start);

	/* Insert from another thread while the start callback blocks. */
	struct insert_arg ia = {&K, e.mm, a, 4 * PS};
	struct task ins;
	task_start(&ins, insert_fn, &ia);
	sleep_us(50000);
	atomic_store(&P.g_start.open, 1);
	gate_wait_entered(&P.g_sec);
	/* The change is between its start and its end: the insert is done. */
	cr_assert(task_wait(&ins, WAIT_MS), "insert blocked by an invalidation past its start");
	cr_assert_eq(ins.ret, 0);

	struct rb_arg rb = {.in = K.in, .flag = &ended};
	struct task t;
	task_start(&t, rb_fn, &rb);
	sleep_us(QUIET_MS * 1000);
	cr_assert(!atomic_load(&t.done), "the new subscription's read_begin did not wait for the change");
	atomic_store(&P.g_sec.open, 1);
	cr_assert(task_wait(&m, WAIT_MS));
	cr_assert_eq(m.ret, 0);
	cr_assert(task_wait(&t, WAIT_MS), "read_begin still blocked after the change ended");
	cr_assert_eq(rb.flag_at_return, 1, "read_begin returned before the change's end");
	expect_no_tfail();
	cr_assert_eq(log_count(EV_INVAL, 3), 0, "a change that began before the insert reached it");
	cr_assert(!smmu_interval_read_retry(K.in, rb.seq));

	/* From now on K is invalidated like any other. */
	unsigned long seq = smmu_interval_read_begin(K.in);
	log_reset();
	cr_assert_eq(smmu_munmap(e.mm, a + PS, PS), 0);
	cr_assert_eq(log_count(EV_INVAL, 3), 1);
	cr_assert(smmu_interval_read_retry(K.in, seq));
	sub_remove(&K);
	sub_remove(&I);
	sub_unregister(&P);
	env_fini(&e);
}

/*
 * The same, but with no other interval subscription, so the change in
 * progress never made the sequence odd: the insert took the mapping lock
 * after the change had cleared its entries, so the new subscription's
 * first fill (read_begin at once, then translate) already finds the page
 * gone - what the header promises - and the change never calls it.
 */
Test(notifier, interval_insert_during_invalidation_no_other_interval)
{
	struct env e;
	env_init_mode(&e, 64, SMMU_SHOOTDOWN_SIGNAL, false);
	smmu_addr_t a = map(&e, H, 8 * PS, RW, SMMU_MAP_POPULATE);
	struct sub P, K;
	sub_init(&P, 2);
	sub_init(&K, 3);
	sub_register(&P, e.mm);
	gate_arm(&P.g_sec);
	struct munmap_arg ma = {e.mm, a, PS};
	struct task m;
	task_start(&m, munmap_fn, &ma);
	gate_wait_entered(&P.g_sec);
	cr_assert_eq(smmu_interval_notifier_insert(e.mm, a, 4 * PS, &interval_ops, &K, &K.in), 0);
	unsigned long seq = smmu_interval_read_begin(K.in);
	void *host = NULL;
	cr_assert_eq(smmu_mm_translate(e.mm, a, R, &host), -EFAULT,
		     "the first fill saw the entry the change in progress had cleared");
	cr_assert_eq(smmu_mm_translate(e.mm, a + PS, R, &host), 0, "the rest of the interval is mapped");
	atomic_store(&P.g_sec.open, 1);
	cr_assert(task_wait(&m, WAIT_MS));
	cr_assert_eq(log_count(EV_INVAL, 3), 0, "the change called a subscription made after it began");
	cr_assert(!smmu_interval_read_retry(K.in, seq), "nothing invalidated the new subscription");
	sub_remove(&K);
	sub_unregister(&P);
	env_fini(&e);
}

/* ------------------------------------------------------------ 6. young */

Test(notifier, young_test_and_clear)
{
	struct env e;
	env_init(&e, 64);
	smmu_addr_t a = map(&e, H, 4 * PS, RW, SMMU_MAP_POPULATE);
	size_t y = 99;
	cr_assert_eq(smmu_test_young(e.mm, a, 4 * PS, &y), 0);
	cr_assert_eq(y, 0, "populated, never touched pages are young: %zu", y);

	smmu_load64(e.cpu, a);
	smmu_load64(e.cpu, a + 2 * PS);
	cr_assert_eq(smmu_test_young(e.mm, a, 4 * PS, &y), 0);
	cr_assert_eq(y, 2);
	cr_assert_eq(smmu_test_young(e.mm, a + PS, PS, &y), 0);
	cr_assert_eq(y, 0, "an untouched page in the range");
	void *p;
	cr_assert_eq(smmu_mm_translate(e.mm, a + 3 * PS, R, &p), 0);
	cr_assert_eq(smmu_test_young(e.mm, a, 4 * PS, &y), 0);
	cr_assert_eq(y, 3, "translate does not mark accessed");
	cr_assert_eq(smmu_test_young(e.mm, a, 4 * PS, &y), 0);
	cr_assert_eq(y, 3, "test_young cleared");

	cr_assert_eq(smmu_test_and_clear_young(e.mm, a, 4 * PS, &y), 0);
	cr_assert_eq(y, 3);
	cr_assert_eq(smmu_test_young(e.mm, a, 4 * PS, &y), 0);
	cr_assert_eq(y, 0, "still young after clear");
	cr_assert_eq(smmu_test_and_clear_young(e.mm, a, 4 * PS, &y), 0);
	cr_assert_eq(y, 0);

	/* The CPU had page 0 in its TLB: a hit would not mark it.  Young again
	 * proves the clear flushed the TLB. */
	cr_assert_eq(smmu_load64(e.cpu, a), 0);
	cr_assert_eq(smmu_test_young(e.mm, a, 4 * PS, &y), 0);
	cr_assert_eq(y, 1, "access after clear not seen: the TLB was not flushed");
	smmu_store64(e.cpu, a + 2 * PS, 5); /* a write marks accessed too */
	cr_assert_eq(smmu_test_young(e.mm, a, 4 * PS, &y), 0);
	cr_assert_eq(y, 2);
	/* Several rounds through the same CPU. */
	for (int round = 0; round < 3; round++) {
		cr_assert_eq(smmu_test_and_clear_young(e.mm, a, 4 * PS, &y), 0);
		cr_assert_eq(y, round == 0 ? 2u : 1u, "round %d", round);
		cr_assert_eq(smmu_load64(e.cpu, a + 2 * PS), 5);
	}

	/* Subscribers: their results are added, with the (rounded) range. */
	struct sub s1, s2;
	sub_init(&s1, 1);
	sub_init(&s2, 2);
	s1.test_young_ret = 3;
	s1.clear_young_ret = 5;
	s2.test_young_ret = 1;
	s2.clear_young_ret = 2;
	sub_register(&s1, e.mm);
	sub_register(&s2, e.mm);
	log_reset();
	cr_assert_eq(smmu_test_young(e.mm, a, 4 * PS, &y), 0);
	cr_assert_eq(y, 1 + 3 + 1, "test_young with subscribers: %zu", y);
	cr_assert_eq(log_count(EV_TEST_YOUNG, 1), 1);
	cr_assert_eq(log_count(EV_TEST_YOUNG, 2), 1);
	cr_assert_eq(log_count(EV_CLEAR_YOUNG, -1), 0);
	log_reset();
	cr_assert_eq(smmu_test_and_clear_young(e.mm, a, 3 * PS + 1, &y), 0);
	cr_assert_eq(y, 1 + 5 + 2, "test_and_clear_young with subscribers: %zu", y);
	struct ev v[8];
	for (int who = 1; who <= 2; who++) {
		int n = log_get(who, v, 8);
		cr_assert_eq(n, 1, "sub %d: %d callbacks", who, n);
		cr_assert_eq(v[0].kind, EV_CLEAR_YOUNG);
		cr_assert_eq(v[0].mm, e.mm);
		cr_assert_eq(v[0].start, a);
		cr_assert_eq(v[0].end, a + 4 * PS, "clear_young range not rounded: 0x%llx", (unsigned long long)v[0].end);
	}
	cr_assert_eq(smmu_test_young(e.mm, a, 4 * PS, &y), 0);
	cr_assert_eq(y, 0 + 3 + 1);
	sub_unregister(&s1);
	sub_unregister(&s2);
	env_fini(&e);
}

/* ------------------------------------------------------------ 7. dirty */

Test(notifier, clear_dirty)
{
	struct env e;
	env_init(&e, 64);
	smmu_addr_t a = map(&e, H, 4 * PS, RW, 0);
	smmu_addr_t ro = map(&e, H + 16 * PS, PS, R, SMMU_MAP_POPULATE);
	smmu_store64(e.cpu, a, PAT(0));
	smmu_store64(e.cpu, a + PS + 8, PAT(1));
	cr_assert_eq(smmu_load64(e.cpu, a + 2 * PS), 0); /* read fault: clean */
	cr_assert_eq(smmu_load64(e.cpu, ro), 0);
	size_t d = 99;
	cr_assert_eq(smmu_clear_dirty(e.mm, a, 4 * PS, &d), 0);
	cr_assert_eq(d, 2, "was_dirty %zu", d);
	cr_assert_eq(smmu_clear_dirty(e.mm, a, 4 * PS, &d), 0);
	cr_assert_eq(d, 0, "dirty again without a write: %zu", d);
	cr_assert_eq(smmu_clear_dirty(e.mm, ro, PS, &d), 0);
	cr_assert_eq(d, 0);

	/* The CPU had page 0 writable in its TLB: a hit would not mark it. */
	for (int round = 0; round < 3; round++) {
		smmu_store64(e.cpu, a + 16, (uint64_t)round);
		cr_assert_eq(smmu_clear_dirty(e.mm, a, 4 * PS, &d), 0);
		cr_assert_eq(d, 1, "round %d: write after clear not seen: the TLB was not flushed", round);
	}
	/* The frames stay, with their data. */
	cr_assert_eq(smmu_load64(e.cpu, a), PAT(0));
	cr_assert_eq(smmu_load64(e.cpu, a + PS + 8), PAT(1));
	cr_assert_eq(smmu_load64(e.cpu, a + 16), 2);

	/* A write through a translated host pointer marks the page dirty. */
	void *p;
	cr_assert_eq(smmu_mm_translate(e.mm, a + 3 * PS, RW, &p), 0);
	cr_assert_eq(smmu_clear_dirty(e.mm, a, 4 * PS, NULL), 0);
	cr_assert_eq(smmu_clear_dirty(e.mm, a, 4 * PS, &d), 0);
	cr_assert_eq(d, 0);
	cr_assert_eq(smmu_mm_translate(e.mm, a + 3 * PS, R, &p), 0);
	cr_assert_eq(smmu_clear_dirty(e.mm, a, 4 * PS, &d), 0);
	cr_assert_eq(d, 0, "translate for read marked dirty");
	cr_assert_eq(smmu_mm_translate(e.mm, a + 3 * PS, RW, &p), 0);
	cr_assert_eq(smmu_clear_dirty(e.mm, a + 3 * PS, PS, &d), 0);
	cr_assert_eq(d, 1, "translate for write did not mark dirty");

	/* Subscribers see a CLEAR invalidation; no frame moves. */
	struct sub s;
	sub_init(&s, 1);
	sub_register(&s, e.mm);
	smmu_store64(e.cpu, a + PS, 1);
	size_t free0 = smmu_pool_free_frames(e.pool);
	log_reset();
	cr_assert_eq(smmu_clear_dirty(e.mm, a, 3 * PS + 5, &d), 0);
	cr_assert_eq(d, 1);
	expect_op(1, e.mm, a, a + 4 * PS, SMMU_NOTIFY_CLEAR, BLOCK);
	cr_assert_eq(smmu_pool_free_frames(e.pool), free0);
	smmu_store64(e.cpu, a + PS, 2);
	cr_assert_eq(smmu_clear_dirty(e.mm, a, 4 * PS, &d), 0);
	cr_assert_eq(d, 1);
	sub_unregister(&s);
	env_fini(&e);
}

/* collect_dirty: the bitmap of written pages, across words; cleared in the
 * same pass with SMMU_DIRTY_CLEAR (with the flush that lets a TLB-hit
 * write mark its page again, and the subscribers' CLEAR); bad input
 * leaves the bitmap alone. */
Test(notifier, collect_dirty)
{
	struct env e;
	env_init(&e, 128);
	smmu_addr_t a = map(&e, H, 70 * PS, RW, 0);
	const unsigned written[] = { 0, 5, 63, 64, 69 };
	for (size_t i = 0; i < 5; i++)
		smmu_store64(e.cpu, a + written[i] * PS, PAT(i));
	cr_assert_eq(smmu_load64(e.cpu, a + 10 * PS), 0); /* read: clean */
	const uint64_t want0 = (1ull << 0) | (1ull << 5) | (1ull << 63), want1 = (1ull << 0) | (1ull << 5);
	uint64_t bm[3] = { ~0ull, ~0ull, 0x1234 };
	size_t n = 0;
	cr_assert_eq(smmu_collect_dirty(e.mm, a, 70 * PS, bm, 0, &n), 0);
	cr_assert_eq(bm[0], want0, "word 0: %#llx", (unsigned long long)bm[0]);
	cr_assert_eq(bm[1], want1, "word 1: %#llx", (unsigned long long)bm[1]);
	cr_assert_eq(bm[2], 0x1234, "wrote past (pages + 63) / 64 words");
	cr_assert_eq(n, 5);
	cr_assert_eq(smmu_collect_dirty(e.mm, a, 70 * PS, bm, 0, NULL), 0);
	cr_assert(bm[0] == want0 && bm[1] == want1, "collecting without SMMU_DIRTY_CLEAR changed the state");

	struct sub s;
	sub_init(&s, 1);
	sub_register(&s, e.mm);
	log_reset();
	cr_assert_eq(smmu_collect_dirty(e.mm, a, 70 * PS, bm, SMMU_DIRTY_CLEAR, &n), 0);
	cr_assert(bm[0] == want0 && bm[1] == want1 && n == 5);
	expect_op(1, e.mm, a, a + 70 * PS, SMMU_NOTIFY_CLEAR, BLOCK);
	cr_assert_eq(smmu_collect_dirty(e.mm, a, 70 * PS, bm, 0, &n), 0);
	cr_assert(bm[0] == 0 && bm[1] == 0 && n == 0, "still dirty after SMMU_DIRTY_CLEAR");
	sub_unregister(&s);

	/* Page 5 was writable in the CPU's TLB: only a flush makes this
	 * write walk and mark it. */
	smmu_store64(e.cpu, a + 5 * PS + 8, 1);
	cr_assert_eq(smmu_collect_dirty(e.mm, a + 4 * PS, 2 * PS, bm, SMMU_DIRTY_CLEAR, &n), 0);
	cr_assert_eq(bm[0], 2, "page 5 is bit 1 of a range from page 4: %#llx", (unsigned long long)bm[0]);
	cr_assert_eq(n, 1);
	cr_assert_eq(smmu_load64(e.cpu, a + 5 * PS), PAT(1), "the frames stay");

	uint64_t keep[2] = { 7, 7 };
	cr_assert_eq(smmu_collect_dirty(NULL, a, PS, keep, 0, NULL), -EINVAL);
	cr_assert_eq(smmu_collect_dirty(e.mm, a, PS, NULL, 0, NULL), -EINVAL);
	cr_assert_eq(smmu_collect_dirty(e.mm, a, PS, keep, 0x2, NULL), -EINVAL);
	cr_assert_eq(smmu_collect_dirty(e.mm, a + 1, PS, keep, 0, NULL), -EINVAL);
	cr_assert_eq(smmu_collect_dirty(e.mm, a, 0, keep, 0, NULL), -EINVAL);
	cr_assert_eq(smmu_collect_dirty(e.mm, ~(smmu_addr_t)0 - PS + 1, 2 * PS, keep, 0, NULL), -EINVAL);
	cr_assert(keep[0] == 7 && keep[1] == 7, "bad input wrote the bitmap");
	env_fini(&e);
}

/* ------------------------------------------------------------ 8. translate */

Test(notifier, translate)
{
	struct env e;
	env_init(&e, 64);
	/* Leave poisoned frames in the pool, so that zeroing is visible. */
	smmu_addr_t junk = map(&e, H + 128 * PS, 32 * PS, RW, SMMU_MAP_POPULATE);
	for (size_t i = 0; i < 32; i++)
		smmu_store64(e.cpu, junk + i * PS, 0x5555);
	cr_assert_eq(smmu_munmap(e.mm, junk, 32 * PS), 0);

	smmu_addr_t a = map(&e, H, 4 * PS, RW, 0);
	smmu_addr_t ro = map(&e, H + 16 * PS, PS, R, 0);
	smmu_addr_t no = map(&e, H + 32 * PS, PS, NONE, 0);
	void *const sentinel = fake_obj;
	void *p = sentinel;

	/* Not mapped. */
	cr_assert_eq(smmu_mm_translate(e.mm, H + 8 * PS, R, &p), -EFAULT);
	cr_assert_eq(smmu_mm_translate(e.mm, H + 8 * PS, RW, &p), -EFAULT);
	cr_assert_eq(smmu_mm_translate(e.mm, 0x1000, R, &p), -EFAULT);
	cr_assert_eq(p, sentinel);
	/* Protection. */
	cr_assert_eq(smmu_mm_translate(e.mm, ro, RW, &p), -EACCES);
	cr_assert_eq(smmu_mm_translate(e.mm, no, R, &p), -EACCES);
	cr_assert_eq(smmu_mm_translate(e.mm, no, RW, &p), -EACCES);
	cr_assert_eq(p, sentinel);
	/* Bad input. */
	const int bad_access[] = {0, SMMU_PROT_WRITE, 4, RW | 4, R | 8, -1};
	for (size_t i = 0; i < sizeof(bad_access) / sizeof(bad_access[0]); i++)
		cr_assert_eq(smmu_mm_translate(e.mm, a, bad_access[i], &p), -EINVAL, "access %d", bad_access[i]);
	cr_assert_eq(smmu_mm_translate(e.mm, a, R, NULL), -EINVAL);
	cr_assert_eq(smmu_mm_translate(NULL, a, R, &p), -EINVAL);
	cr_assert_eq(smmu_mm_translate((struct smmu_mm *)fake_obj, a, R, &p), -EINVAL);
	cr_assert_eq(smmu_mm_translate(e.mm, TOP, R, &p), -EINVAL);
	cr_assert_eq(smmu_mm_translate(e.mm, UINT64_MAX, R, &p), -EINVAL);
	cr_assert_eq(p, sentinel);

	/* A fresh page is faulted in, zeroed (the pool's frames are poisoned). */
	size_t free0 = smmu_pool_free_frames(e.pool);
	cr_assert_eq(smmu_mm_translate(e.mm, a + PS + 128, R, &p), 0);
	cr_assert_eq(smmu_pool_free_frames(e.pool), free0 - 1, "no frame faulted in");
	cr_assert_eq((uintptr_t)p & (PS - 1), 128, "pointer not at the byte's offset");
	unsigned char *page = (unsigned char *)p - 128;
	for (size_t i = 0; i < PS; i++)
		cr_assert_eq(page[i], 0, "byte %zu of a fresh page is 0x%x", i, page[i]);
	void *q;
	cr_assert_eq(smmu_mm_translate(e.mm, a + PS + 128, RW, &q), 0);
	cr_assert_eq(q, p, "the same byte at two addresses");
	cr_assert_eq(smmu_pool_free_frames(e.pool), free0 - 1);
	cr_assert_eq(smmu_mm_translate(e.mm, a + 2 * PS - 1, R, &q), 0);
	cr_assert_eq((unsigned char *)q, page + PS - 1);
	/* Read-only mapping: readable, zero. */
	cr_assert_eq(smmu_mm_translate(e.mm, ro + 8, R, &q), 0);
	cr_assert_eq(*(uint64_t *)q, 0);

	/* Host writes are what the CPU loads, and the reverse. */
	cr_assert_eq(smmu_mm_translate(e.mm, a + PS + 256, RW, &q), 0);
	*(uint64_t *)q = 0xfeedface12345678ull;
	cr_assert_eq(smmu_load64(e.cpu, a + PS + 256), 0xfeedface12345678ull);
	smmu_store64(e.cpu, a + 3 * PS + 8, 0xabcdef);
	cr_assert_eq(smmu_mm_translate(e.mm, a + 3 * PS + 8, R, &q), 0);
	cr_assert_eq(*(uint64_t *)q, 0xabcdef);
	/* A write translation of a page the CPU faulted in for reading. */
	cr_assert_eq(smmu_load64(e.cpu, a + 2 * PS), 0);
	cr_assert_eq(smmu_mm_translate(e.mm, a + 2 * PS, RW, &q), 0);
	*(uint64_t *)q = 77;
	cr_assert_eq(smmu_tlb_flush_all(e.cpu), 0);
	cr_assert_eq(smmu_load64(e.cpu, a + 2 * PS), 77);

	/* Protection changed after the fact. */
	cr_assert_eq(smmu_mprotect(e.mm, a + PS, PS, R), 0);
	cr_assert_eq(smmu_mm_translate(e.mm, a + PS, RW, &q), -EACCES);
	cr_assert_eq(smmu_mm_translate(e.mm, a + PS + 256, R, &q), 0);
	cr_assert_eq(*(uint64_t *)q, 0xfeedface12345678ull);
	cr_assert_eq(smmu_mprotect(e.mm, a + PS, PS, NONE), 0);
	cr_assert_eq(smmu_mm_translate(e.mm, a + PS, R, &q), -EACCES, "PROT_NONE over a present page");
	cr_assert_eq(smmu_munmap(e.mm, a + 3 * PS, PS), 0);
	cr_assert_eq(smmu_mm_translate(e.mm, a + 3 * PS, R, &q), -EFAULT);
	env_fini(&e);
}

/* ------------------------------------------------------------ 9. bad input */

Test(notifier, bad_input)
{
	struct env e;
	env_init(&e, 64);
	smmu_addr_t a = map(&e, H, 4 * PS, RW, 0);
	fill(&e, a, 4); /* all four accessed and dirty */
	struct sub s;
	sub_init(&s, 1);
	sub_register(&s, e.mm);
	struct sub I;
	sub_init(&I, 2);
	sub_insert(&I, e.mm, a, 4 * PS);
	unsigned long seq = smmu_interval_read_begin(I.in);
	size_t free0 = smmu_pool_free_frames(e.pool);
	struct smmu_mm *fake = (struct smmu_mm *)fake_obj;
	log_reset();

	/* register / unregister */
	struct smmu_notifier *const nsent = (struct smmu_notifier *)fake_obj;
	struct smmu_notifier *n = nsent;
	cr_assert_eq(smmu_notifier_register(NULL, &sub_ops, NULL, &n), -EINVAL);
	cr_assert_eq(smmu_notifier_register(fake, &sub_ops, NULL, &n), -EINVAL);
	cr_assert_eq(smmu_notifier_register(e.mm, NULL, NULL, &n), -EINVAL);
	cr_assert_eq(smmu_notifier_register(e.mm, &sub_ops, NULL, NULL), -EINVAL);
	cr_assert_eq(n, nsent);
	cr_assert_eq(smmu_notifier_unregister(NULL), -EINVAL);

	/* interval insert / remove */
	struct smmu_interval_notifier *const isent = (struct smmu_interval_notifier *)fake_obj;
	struct smmu_interval_notifier *in = isent;
	const struct smmu_interval_notifier_ops no_cb = {.invalidate = NULL};
	cr_assert_eq(smmu_interval_notifier_insert(NULL, a, PS, &interval_ops, NULL, &in), -EINVAL);
	cr_assert_eq(smmu_interval_notifier_insert(fake, a, PS, &interval_ops, NULL, &in), -EINVAL);
	cr_assert_eq(smmu_interval_notifier_insert(e.mm, a, PS, NULL, NULL, &in), -EINVAL);
	cr_assert_eq(smmu_interval_notifier_insert(e.mm, a, PS, &no_cb, NULL, &in), -EINVAL);
	cr_assert_eq(smmu_interval_notifier_insert(e.mm, a, PS, &interval_ops, NULL, NULL), -EINVAL);
	cr_assert_eq(smmu_interval_notifier_insert(e.mm, a, 0, &interval_ops, NULL, &in), -EINVAL);
	cr_assert_eq(smmu_interval_notifier_insert(e.mm, UINT64_MAX - PS + 1, 2 * PS, &interval_ops, NULL, &in),
		     -EINVAL);
	cr_assert_eq(smmu_interval_notifier_insert(e.mm, 1, SIZE_MAX, &interval_ops, NULL, &in), -EINVAL);
	cr_assert_eq(in, isent);
	cr_assert_eq(smmu_interval_notifier_remove(NULL), -EINVAL);

	/* munmap_ex / mprotect_ex */
	const unsigned bad_flags[] = {2, 4, 0x80000000u, SMMU_OP_NONBLOCK | 2, ~0u};
	for (size_t i = 0; i < sizeof(bad_flags) / sizeof(bad_flags[0]); i++) {
		cr_assert_eq(smmu_munmap_ex(e.mm, a, PS, bad_flags[i]), -EINVAL, "munmap_ex flags 0x%x", bad_flags[i]);
		cr_assert_eq(smmu_mprotect_ex(e.mm, a, PS, R, bad_flags[i]), -EINVAL, "mprotect_ex flags 0x%x",
			     bad_flags[i]);
	}
	for (unsigned f = 0; f <= SMMU_OP_NONBLOCK; f++) {
		cr_assert_eq(smmu_munmap_ex(NULL, a, PS, f), -EINVAL);
		cr_assert_eq(smmu_munmap_ex(fake, a, PS, f), -EINVAL);
		cr_assert_eq(smmu_munmap_ex(e.mm, a, 0, f), -EINVAL);
		cr_assert_eq(smmu_munmap_ex(e.mm, a + 1, PS, f), -EINVAL);
		cr_assert_eq(smmu_munmap_ex(e.mm, a + PS / 2, PS, f), -EINVAL);
		cr_assert_eq(smmu_munmap_ex(e.mm, UINT64_MAX - PS + 1, 2 * PS, f), -EINVAL);
		cr_assert_eq(smmu_munmap_ex(e.mm, TOP - PS, 2 * PS, f), -EINVAL);
		cr_assert_eq(smmu_mprotect_ex(NULL, a, PS, R, f), -EINVAL);
		cr_assert_eq(smmu_mprotect_ex(fake, a, PS, R, f), -EINVAL);
		cr_assert_eq(smmu_mprotect_ex(e.mm, a, 0, R, f), -EINVAL);
		cr_assert_eq(smmu_mprotect_ex(e.mm, a + 1, PS, R, f), -EINVAL);
		cr_assert_eq(smmu_mprotect_ex(e.mm, a, PS, SMMU_PROT_WRITE, f), -EINVAL);
		cr_assert_eq(smmu_mprotect_ex(e.mm, a, PS, 4, f), -EINVAL);
		cr_assert_eq(smmu_mprotect_ex(e.mm, a, PS, -1, f), -EINVAL);
		cr_assert_eq(smmu_mprotect_ex(e.mm, UINT64_MAX - PS + 1, 2 * PS, R, f), -EINVAL);
		/* Not mapped in part: the error of smmu_mprotect. */
		cr_assert_eq(smmu_mprotect_ex(e.mm, a, 5 * PS, R, f), -ENOMEM);
	}

	/* young */
	size_t y = 12345;
	for (int clear = 0; clear < 2; clear++) {
		int (*fn)(struct smmu_mm *, smmu_addr_t, size_t, size_t *) =
			clear ? smmu_test_and_clear_young : smmu_test_young;
		cr_assert_eq(fn(NULL, a, PS, &y), -EINVAL);
		cr_assert_eq(fn(fake, a, PS, &y), -EINVAL);
		cr_assert_eq(fn(e.mm, a, PS, NULL), -EINVAL);
		cr_assert_eq(fn(e.mm, a + 1, PS, &y), -EINVAL);
		cr_assert_eq(fn(e.mm, a, 0, &y), -EINVAL);
		cr_assert_eq(fn(e.mm, UINT64_MAX - PS + 1, 2 * PS, &y), -EINVAL);
		cr_assert_eq(fn(e.mm, TOP - PS, 2 * PS, &y), -EINVAL);
		cr_assert_eq(y, 12345, "young set by a failed call");
	}

	/* dirty */
	size_t d = 12345;
	cr_assert_eq(smmu_clear_dirty(NULL, a, PS, &d), -EINVAL);
	cr_assert_eq(smmu_clear_dirty(fake, a, PS, &d), -EINVAL);
	cr_assert_eq(smmu_clear_dirty(e.mm, a + 8, PS, &d), -EINVAL);
	cr_assert_eq(smmu_clear_dirty(e.mm, a, 0, &d), -EINVAL);
	cr_assert_eq(smmu_clear_dirty(e.mm, UINT64_MAX - PS + 1, 2 * PS, &d), -EINVAL);
	cr_assert_eq(smmu_clear_dirty(e.mm, TOP - PS, 2 * PS, &d), -EINVAL);
	cr_assert_eq(smmu_clear_dirty(NULL, a, PS, NULL), -EINVAL);
	cr_assert_eq(d, 12345, "was_dirty set by a failed call");

	/* Nothing happened: no callback, the mapping, its data, its accessed
	 * and dirty state, the interval's sequence. */
	expect_no_tfail();
	expect_no_callbacks();
	cr_assert(!smmu_interval_read_retry(I.in, seq));
	cr_assert_eq(smmu_pool_free_frames(e.pool), free0);
	expect_region(e.mm, a, a, a + 4 * PS, RW);
	cr_assert_eq(smmu_test_young(e.mm, a, 4 * PS, &y), 0);
	cr_assert_eq(y, 4, "accessed state lost: %zu", y);
	sub_remove(&I);
	sub_unregister(&s);
	cr_assert_eq(smmu_clear_dirty(e.mm, a, 4 * PS, &d), 0);
	cr_assert_eq(d, 4, "dirty state lost: %zu", d);
	expect_filled(&e, a, 4);
	env_fini(&e);
}
