/* SPDX-License-Identifier: MIT */
/*
 * bench-switch: CPUs that switch address spaces (issue 8).
 *
 * (a) Switch cost.  The main thread, a CPU, switches back and forth
 *     between two mms A and B (signal mode) that map the same P pages at
 *     the same guest addresses (A's pages and B's hold different values),
 *     and after every switch loads each of the P pages of the mm it is now
 *     in: the work an emulator does when it runs a guest process for a
 *     while.  Ours: the CPU registered with the default ASIDs (8): each mm
 *     keeps its TLB, so the loads after a switch hit.  Peer: the same CPU
 *     registered with asids = 1, which flushes on every switch (what a
 *     software MMU without address-space tags must do), so every load
 *     after a switch misses and walks the page table.  Cases:
 *       switch_touch_P1, _P16, _P64   P = 1, 16, 64 pages touched
 *       switch_only                   the smmu_cpu_switch_mm call alone
 *     ns per switch (a round trip is two); the sum of the loaded values is
 *     checked every piece (a load that reached the other mm's page would
 *     change it).  The CPU re-registers (untimed) before each piece with
 *     the side's config, and warms both mms' TLBs.
 *
 * (b) One-page munmap latency in mm A while N other CPU threads run in
 *     other mms.  Each iteration, timed: munmap P; mmap P FIXED read-write;
 *     store to P (a demand-zero fault) - bench-shootdown's
 *     munmap_page_remote.  The N remotes are smmu_thread_create'd as CPUs
 *     of A; whenever they are woken they switch to A, load P (so their A
 *     TLB holds an entry for it, as a CPU of A that is running would make
 *     every munmap of P signal it), switch to their own mm B_i and load
 *     four pages of B_i in a loop until parked.  With lazy TLB, A's
 *     munmaps neither signal nor wait for them: the latency must not grow
 *     with N, and A must send no signal (the bench fails if it does).
 *     Peer: the kernel - munmap / mmap(MAP_FIXED) / a store of one page of
 *     the process while N plain threads of the process spin loading
 *     (as bench-shootdown's kernel remotes).  Cases:
 *       munmap_rN_other_mms_vs_kernel  N = 0, 1, 2, 4 (ours / the kernel)
 *       munmap_rN_other_mms_vs_r0      N = 1, 2, 4 (ours with N / ours with
 *                                      none: the growth, interleaved)
 *     The JSON's "growth" gives ours(N)/ours(0) and kernel(N)/kernel(0) from
 *     the medians of the vs_kernel cases too.  The main thread is pinned to
 *     one core and every remote to the others (never the main thread's:
 *     a spinner sharing its core would show the scheduler, not the
 *     shootdown).  Remotes run only during their side's pieces.
 *
 * Every library call is checked and every value read back is checked.
 */
#define _GNU_SOURCE
#include <softmmu/softmmu.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench_remote.h"
#include "bench_util.h"

#define PAGE 4096u
#define AREA ((smmu_addr_t)0x40000000) /* (a): the same guest address in A and B */
#define MAX_P 64
#define CHUNKS 4
#define MAX_REMOTES 4
#define LZ_AREA_PAGES 8
#define LZ_TARGET_PAGE 6 /* P of (b) */
#define WAIT_LIMIT_NS (10ull * 1000000000ull)

_Static_assert(PAGE == BENCH_REMOTE_PAGE, "a remote's pages are the area's pages");

static uint64_t want_a(unsigned k)
{
	return 0xaaaa000000000000ull | k;
}

static uint64_t want_b(unsigned k)
{
	return 0xbbbb000000000000ull | k;
}

/* ------------------------------------------------------------ (a) switch cost */

struct sw_ctx {
	struct smmu_pool *pool;
	struct smmu_mm *a, *b;
	struct smmu_cpu *cpu; /* the main thread's, or NULL */
	unsigned asids;       /* the config it registered with */
};

struct sw_case {
	struct sw_ctx *x;
	const char *name;
	unsigned p; /* pages touched after each switch, 0: none */
	uint64_t iters;
	struct smmu_stats acc[2]; /* [0] ours, [1] peer: A's and B's deltas */
	uint64_t switches[2];
};

static void sw_register(struct sw_ctx *x, unsigned asids)
{
	struct smmu_cpu_config cc;

	if (x->cpu && x->asids == asids)
		return;
	if (x->cpu)
		BENCH_CHECK(smmu_cpu_unregister(x->cpu));
	memset(&cc, 0, sizeof(cc));
	cc.asids = asids;
	BENCH_CHECK(smmu_cpu_register_ex(x->a, &cc, &x->cpu));
	x->asids = asids;
}

static uint64_t sw_touch(struct smmu_cpu *cpu, unsigned p)
{
	uint64_t sum = 0;

	for (unsigned k = 0; k < p; k++)
		sum += smmu_load64(cpu, AREA + (smmu_addr_t)k * PAGE);
	return sum;
}

static double sw_piece(struct sw_case *c, int side, int k)
{
	struct sw_ctx *x = c->x;
	uint64_t n = c->iters * (uint64_t)(k + 1) / CHUNKS - c->iters * (uint64_t)k / CHUNKS;
	uint64_t sum = 0, want = 0, t0, t1;
	struct smmu_stats a0, a1, b0, b1;

	sw_register(x, side == 0 ? 0 : 1);
	/* warm both TLBs (untimed); end in A */
	BENCH_CHECK(smmu_cpu_switch_mm(x->cpu, x->a));
	bench_sink_u64(sw_touch(x->cpu, MAX_P));
	BENCH_CHECK(smmu_cpu_switch_mm(x->cpu, x->b));
	bench_sink_u64(sw_touch(x->cpu, MAX_P));
	BENCH_CHECK(smmu_cpu_switch_mm(x->cpu, x->a));
	bench_sink_u64(sw_touch(x->cpu, MAX_P));
	for (unsigned j = 0; j < c->p; j++)
		want += want_a(j) + want_b(j);
	want *= n;
	BENCH_CHECK(smmu_stats_get(x->a, &a0));
	BENCH_CHECK(smmu_stats_get(x->b, &b0));
	t0 = bench_now_ns();
	for (uint64_t i = 0; i < n; i++) {
		BENCH_CHECK(smmu_cpu_switch_mm(x->cpu, x->b));
		sum += sw_touch(x->cpu, c->p);
		BENCH_CHECK(smmu_cpu_switch_mm(x->cpu, x->a));
		sum += sw_touch(x->cpu, c->p);
	}
	t1 = bench_now_ns();
	BENCH_CHECK(smmu_stats_get(x->a, &a1));
	BENCH_CHECK(smmu_stats_get(x->b, &b1));
	if (sum != want)
		bench_die("%s (%s): the loads after the switches summed to %#" PRIx64 ", expected %#" PRIx64
			  " (a load reached the other mm's page?)",
			  c->name, side ? "asids=1" : "asids=default", sum, want);
	bench_stats_accumulate(&c->acc[side], &a0, &a1);
	bench_stats_accumulate(&c->acc[side], &b0, &b1);
	c->switches[side] += 2 * n;
	return (double)(t1 - t0);
}

static double sw_ours(void *arg, int k)
{
	return sw_piece(arg, 0, k);
}

static double sw_peer(void *arg, int k)
{
	return sw_piece(arg, 1, k);
}

/* ------------------------------------------------------------ (b) remotes in other mms */

enum { CMD_PARK, CMD_RUN, CMD_EXIT };
enum { ST_STARTING, ST_PARKED, ST_RUNNING, ST_EXITED };

struct lz_remote {
	char name[32];
	struct smmu_mm *a, *b;
	smmu_addr_t pa;    /* P in A */
	smmu_addr_t bbase; /* its area in b: BENCH_REMOTE_PAGES pages holding bench_remote_want(k) */
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int cmd;                     /* atomic; written under mu */
	int state;                   /* atomic */
	_Alignas(64) uint64_t loads; /* atomic, written by the remote */
	char pad[56];
};

static void *lz_main(void *arg)
{
	struct lz_remote *r = arg;
	struct smmu_cpu *cpu = smmu_cpu_self();
	uint64_t n = 0, v;
	int cmd;

	if (!cpu || smmu_cpu_mm(cpu) != r->a)
		bench_die("remote %s: not a CPU of A", r->name);
	for (;;) {
		BENCH_CHECK(smmu_cpu_offline(cpu)); /* about to block */
		pthread_mutex_lock(&r->mu);
		__atomic_store_n(&r->state, ST_PARKED, __ATOMIC_RELEASE);
		while ((cmd = __atomic_load_n(&r->cmd, __ATOMIC_ACQUIRE)) == CMD_PARK)
			pthread_cond_wait(&r->cv, &r->mu);
		pthread_mutex_unlock(&r->mu);
		BENCH_CHECK(smmu_cpu_online(cpu));
		if (cmd == CMD_EXIT)
			break;
		/* In A, take an entry for P; then run in B. */
		BENCH_CHECK(smmu_cpu_switch_mm(cpu, r->a));
		if (smmu_try_load64(cpu, r->pa, &v) != 0)
			bench_die("remote %s: P not mapped in A when woken", r->name);
		BENCH_CHECK(smmu_cpu_switch_mm(cpu, r->b));
		__atomic_store_n(&r->state, ST_RUNNING, __ATOMIC_RELEASE);
		while (__atomic_load_n(&r->cmd, __ATOMIC_RELAXED) == CMD_RUN) {
			unsigned k = (unsigned)n & (BENCH_REMOTE_PAGES - 1);
			smmu_addr_t a = r->bbase + (smmu_addr_t)k * PAGE;

			if ((v = smmu_load64(cpu, a)) != bench_remote_want(k))
				bench_die("remote %s: B page %u read %#" PRIx64, r->name, k, v);
			__atomic_store_n(&r->loads, ++n, __ATOMIC_RELAXED);
		}
	}
	__atomic_store_n(&r->state, ST_EXITED, __ATOMIC_RELEASE);
	return NULL;
}

static void lz_wait_state(struct lz_remote *r, int st, const char *what)
{
	uint64_t t0 = bench_now_ns();

	while (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) != st) {
		if (bench_now_ns() - t0 > WAIT_LIMIT_NS)
			bench_die("remote %s: not %s after 10 s: hang?", r->name, what);
		sched_yield();
	}
}

static void lz_command(struct lz_remote *r, int cmd)
{
	pthread_mutex_lock(&r->mu);
	__atomic_store_n(&r->cmd, cmd, __ATOMIC_RELEASE);
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static uint64_t lz_loads(const struct lz_remote *r)
{
	return __atomic_load_n(&r->loads, __ATOMIC_RELAXED);
}

static void lz_run(struct lz_remote *r)
{
	uint64_t l0 = lz_loads(r), t0;

	lz_command(r, CMD_RUN);
	lz_wait_state(r, ST_RUNNING, "running");
	t0 = bench_now_ns();
	while (lz_loads(r) < l0 + 64) {
		if (bench_now_ns() - t0 > WAIT_LIMIT_NS)
			bench_die("remote %s: running but no loads for 10 s", r->name);
		sched_yield();
	}
}

static void lz_park(struct lz_remote *r)
{
	lz_command(r, CMD_PARK);
	lz_wait_state(r, ST_PARKED, "parked");
}

/* Remote i's core: never the main thread's (with 2+ allowed CPUs). */
static int lz_cpu(int i, int ncpus)
{
	if (ncpus < 2)
		return -1;
	return bench_remote_cpu(i % (ncpus - 1));
}

static void lz_start(struct lz_remote *r, int i, struct smmu_mm *a, struct smmu_mm *b, smmu_addr_t pa,
		     smmu_addr_t bbase, int cpu)
{
	pthread_attr_t attr;
	int err;

	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "lazy%d", i);
	r->a = a;
	r->b = b;
	r->pa = pa;
	r->bbase = bbase;
	if ((err = pthread_mutex_init(&r->mu, NULL)) != 0 || (err = pthread_cond_init(&r->cv, NULL)) != 0)
		bench_die("remote %s: mutex/cond: %s", r->name, strerror(err));
	if ((err = pthread_attr_init(&attr)) != 0)
		bench_die("pthread_attr_init: %s", strerror(err));
	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if ((err = pthread_attr_setaffinity_np(&attr, sizeof(set), &set)) != 0)
			bench_die("pthread_attr_setaffinity_np: %s", strerror(err));
	}
	BENCH_CHECK(smmu_thread_create(&r->th, &attr, a, lz_main, r)); /* attr passed through: pinned */
	pthread_attr_destroy(&attr);
	lz_wait_state(r, ST_PARKED, "parked after start");
}

static void lz_stop(struct lz_remote *r)
{
	lz_command(r, CMD_EXIT);
	BENCH_CHECK(smmu_thread_join(r->th, NULL));
	if (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) != ST_EXITED)
		bench_die("remote %s: did not exit cleanly", r->name);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
}

struct lz_ctx {
	struct smmu_pool *pool;
	struct smmu_mm *a, *b[MAX_REMOTES];
	struct smmu_cpu *cpu; /* main, a CPU of a */
	smmu_addr_t area, p;
	uint64_t seq;
	struct lz_remote rem[MAX_REMOTES];
	char *host_area, *host_p;
	uint64_t host_seq;
	struct bench_remote host[MAX_REMOTES];
};

/* Every timed iteration's ns, by the number of remotes running (0..4),
 * ours and the kernel's: the growth is read from their percentiles, which a
 * preempted iteration does not move (the medians of sums do). */
struct lat_set {
	double *v;
	size_t n, cap;
};

static struct lat_set lat_ours[MAX_REMOTES + 1], lat_kernel[MAX_REMOTES + 1];
static bool lat_on; /* off during the warm-up */

static void lat_push(struct lat_set *l, double ns)
{
	if (!lat_on)
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 4096;
		double *v = realloc(l->v, cap * sizeof(double));

		if (!v)
			bench_die("out of memory");
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = ns;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Percentile q of l (sorts it). */
static double lat_pctl(struct lat_set *l, double q)
{
	size_t i;

	if (!l->n)
		return 0;
	qsort(l->v, l->n, sizeof(double), cmp_dbl);
	i = (size_t)(q * (double)(l->n - 1) + 0.5);
	return l->v[i < l->n ? i : l->n - 1];
}

struct lz_case {
	struct lz_ctx *x;
	const char *name;
	int n_ours;       /* remotes in other mms during ours */
	int n_peer;       /* remotes during the peer: the kernel's, or ours */
	bool peer_kernel; /* peer: the kernel with n_peer host spinners; else ours with n_peer */
	uint64_t iters;
	struct smmu_stats acc; /* A's counters over ours' timed parts (both sides if ours) */
	uint64_t ops_ours;     /* timed iterations of ours, both sides if the peer is ours too */
	uint64_t pieces[2], idle[2];
};

static double lz_ours_piece(struct lz_case *c, int side, int nr, int k)
{
	struct lz_ctx *x = c->x;
	uint64_t n = c->iters * (uint64_t)(k + 1) / CHUNKS - c->iters * (uint64_t)k / CHUNKS, l0[MAX_REMOTES];
	uint64_t t0, t1, v;
	struct smmu_stats s0, s1;
	smmu_addr_t got;
	double ns = 0;
	int idle = 0;

	for (int i = 0; i < nr; i++)
		lz_run(&x->rem[i]);
	for (int i = 0; i < nr; i++)
		l0[i] = lz_loads(&x->rem[i]);
	BENCH_CHECK(smmu_stats_get(x->a, &s0));
	for (uint64_t i = 0; i < n; i++) {
		t0 = bench_now_ns();
		BENCH_CHECK(smmu_munmap(x->a, x->p, PAGE));
		BENCH_CHECK(smmu_mmap(x->a, x->p, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got));
		if (got != x->p)
			bench_die("%s: smmu_mmap FIXED moved", c->name);
		smmu_store64(x->cpu, x->p, ++x->seq);
		t1 = bench_now_ns();
		ns += (double)(t1 - t0);
		lat_push(&lat_ours[nr], (double)(t1 - t0));
	}
	BENCH_CHECK(smmu_stats_get(x->a, &s1));
	for (int i = 0; i < nr; i++)
		idle += lz_loads(&x->rem[i]) == l0[i];
	for (int i = 0; i < nr; i++)
		lz_park(&x->rem[i]);
	if ((v = smmu_load64(x->cpu, x->p)) != x->seq)
		bench_die("%s: P read %#" PRIx64 ", last stored %#" PRIx64, c->name, v, x->seq);
	bench_stats_accumulate(&c->acc, &s0, &s1);
	c->ops_ours += n;
	if (nr) {
		c->pieces[side]++;
		c->idle[side] += idle == nr;
	}
	return ns;
}

static double lz_kernel_piece(struct lz_case *c, int nr, int k)
{
	struct lz_ctx *x = c->x;
	volatile uint64_t *p = (volatile uint64_t *)x->host_p;
	uint64_t n = c->iters * (uint64_t)(k + 1) / CHUNKS - c->iters * (uint64_t)k / CHUNKS, l0[MAX_REMOTES];
	uint64_t t0, t1;
	double ns = 0;
	int idle = 0;

	for (int i = 0; i < nr; i++)
		bench_remote_run(&x->host[i]);
	for (int i = 0; i < nr; i++)
		l0[i] = bench_remote_loads(&x->host[i]);
	for (uint64_t i = 0; i < n; i++) {
		void *q;

		t0 = bench_now_ns();
		if (munmap(x->host_p, PAGE) != 0)
			bench_die("%s: munmap: %s", c->name, strerror(errno));
		q = mmap(x->host_p, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (q != x->host_p)
			bench_die("%s: mmap MAP_FIXED: %s", c->name, q == MAP_FAILED ? strerror(errno) : "moved");
		*p = ++x->host_seq;
		t1 = bench_now_ns();
		ns += (double)(t1 - t0);
		lat_push(&lat_kernel[nr], (double)(t1 - t0));
	}
	for (int i = 0; i < nr; i++)
		idle += bench_remote_loads(&x->host[i]) == l0[i];
	for (int i = 0; i < nr; i++)
		bench_remote_park(&x->host[i]);
	if (*p != x->host_seq)
		bench_die("%s: host P lost its value", c->name);
	if (nr) {
		c->pieces[1]++;
		c->idle[1] += idle == nr;
	}
	return ns;
}

static double lz_ours(void *arg, int k)
{
	struct lz_case *c = arg;

	return lz_ours_piece(c, 0, c->n_ours, k);
}

static double lz_peer(void *arg, int k)
{
	struct lz_case *c = arg;

	return c->peer_kernel ? lz_kernel_piece(c, c->n_peer, k) : lz_ours_piece(c, 1, c->n_peer, k);
}

/* ------------------------------------------------------------ options, main */

struct sw_opts {
	uint64_t switch_iters, munmap_iters;
};

static int sw_opt(const char *opt, const char *val, void *arg)
{
	struct sw_opts *s = arg;

	if (!strcmp(opt, "--switch-iters")) {
		s->switch_iters = bench_parse_at_least(opt, val, CHUNKS);
		return 2;
	}
	if (!strcmp(opt, "--munmap-iters")) {
		s->munmap_iters = bench_parse_at_least(opt, val, CHUNKS);
		return 2;
	}
	return 0;
}

#define NSW 4
#define NLZ 7

int main(int argc, char **argv)
{
	struct sw_opts so = {0, 0};
	struct bench_opts o;
	struct bench_report *r;
	struct sw_ctx sx;
	struct lz_ctx *lx;
	struct sw_case sw[NSW];
	struct lz_case *lz;
	struct bench_case *bc_lz[NLZ];
	static const unsigned sw_p[NSW] = {1, 16, 64, 0};
	static const char *const sw_names[NSW] = {"switch_touch_P1", "switch_touch_P16", "switch_touch_P64",
						  "switch_only"};
	static const struct {
		const char *name;
		int n_ours, n_peer;
		bool peer_kernel;
	} lz_defs[NLZ] = {
		{"munmap_r0_other_mms_vs_kernel", 0, 0, true}, {"munmap_r1_other_mms_vs_kernel", 1, 1, true},
		{"munmap_r2_other_mms_vs_kernel", 2, 2, true}, {"munmap_r4_other_mms_vs_kernel", 4, 4, true},
		{"munmap_r1_other_mms_vs_r0", 1, 0, false},    {"munmap_r2_other_mms_vs_r0", 2, 0, false},
		{"munmap_r4_other_mms_vs_r0", 4, 0, false},
	};
	uint64_t switch_iters, munmap_iters;
	long host_page = sysconf(_SC_PAGESIZE);
	int ncpus, signal_fail = 0;
	char buf[512];

	bench_parse_args(&o, argc, argv, "bench-switch",
			 "  --switch-iters N  round trips A->B->A per switch case, repetition and side\n"
			 "                    (default 50000; quick 5000)\n"
			 "  --munmap-iters N  munmap/mmap/store iterations per munmap case, repetition and side\n"
			 "                    (default 8000; quick 800)",
			 sw_opt, &so);
	if (host_page != PAGE)
		bench_die("host page size is %ld, this bench compares 4 KiB pages", host_page);
	switch_iters = so.switch_iters ? so.switch_iters : o.quick ? 5000 : 50000;
	munmap_iters = so.munmap_iters ? so.munmap_iters : o.quick ? 800 : 8000;

	ncpus = bench_pin_main();
	r = bench_report_new("bench-switch", &o);
	bench_report_config_u64(r, "switch_iters", switch_iters);
	bench_report_config_u64(r, "munmap_iters", munmap_iters);
	bench_report_config_u64(r, "chunks_per_rep", CHUNKS);
	bench_report_config_u64(r, "default_asids", SMMU_ASIDS_DEFAULT);
	bench_report_config_str(r, "switch_peer", "the same CPU registered with asids=1 (flush on every switch)");
	bench_report_config_str(r, "munmap_remotes",
				"smmu_thread_create'd CPUs of A that load P in A, switch to their own mm and load "
				"there");
	bench_report_config_str(r, "kernel_remotes", "plain pthreads, relaxed 64-bit load loop on host pages");
	if (ncpus >= 2) {
		snprintf(buf, sizeof(buf), "main on cpu %d, remotes on the other %d allowed cpu(s)", bench_main_cpu(),
			 ncpus - 1);
		bench_report_config_str(r, "pinning", buf);
	} else {
		bench_report_config_str(r, "pinning", "none (one allowed cpu)");
	}
	bench_report_header(r);
	if (ncpus < 2)
		bench_report_note(r, "WARNING: one CPU allowed: the remotes share the main thread's core");

	/* --- (a) */
	memset(&sx, 0, sizeof(sx));
	{
		struct smmu_pool_config pc;
		smmu_addr_t got;

		memset(&pc, 0, sizeof(pc));
		pc.size = (2 * MAX_P + 16) * PAGE;
		BENCH_CHECK(smmu_pool_create(&pc, &sx.pool));
		BENCH_CHECK(smmu_mm_create(sx.pool, &sx.a));
		BENCH_CHECK(smmu_mm_create(sx.pool, &sx.b));
		BENCH_CHECK(smmu_mmap(sx.a, AREA, MAX_P * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE,
				      SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &got));
		BENCH_CHECK(smmu_mmap(sx.b, AREA, MAX_P * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE,
				      SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &got));
		sw_register(&sx, 0);
		for (unsigned k = 0; k < MAX_P; k++)
			smmu_store64(sx.cpu, AREA + (smmu_addr_t)k * PAGE, want_a(k));
		BENCH_CHECK(smmu_cpu_switch_mm(sx.cpu, sx.b));
		for (unsigned k = 0; k < MAX_P; k++)
			smmu_store64(sx.cpu, AREA + (smmu_addr_t)k * PAGE, want_b(k));
		BENCH_CHECK(smmu_cpu_switch_mm(sx.cpu, sx.a));
	}
	for (int i = 0; i < NSW; i++) {
		struct bench_case *bc;

		memset(&sw[i], 0, sizeof(sw[i]));
		sw[i].x = &sx;
		sw[i].name = sw_names[i];
		sw[i].p = sw_p[i];
		sw[i].iters = switch_iters;
		bc = bench_report_case(r, sw_names[i], "asids=1 (flush)", (double)(2 * switch_iters), "switch");
		bench_case_run_chunked(bc, o.reps, CHUNKS, sw_ours, sw_peer, &sw[i]);
	}
	BENCH_CHECK(smmu_cpu_unregister(sx.cpu));
	sx.cpu = NULL;

	/* --- (b) */
	lx = calloc(1, sizeof(*lx));
	lz = calloc(NLZ, sizeof(*lz));
	if (!lx || !lz)
		bench_die("out of memory");
	{
		struct smmu_pool_config pc;
		smmu_addr_t got;
		struct smmu_cpu *c;

		memset(&pc, 0, sizeof(pc));
		pc.size = 4u << 20;
		BENCH_CHECK(smmu_pool_create(&pc, &lx->pool));
		BENCH_CHECK(smmu_mm_create(lx->pool, &lx->a));
		BENCH_CHECK(smmu_cpu_register(lx->a, &lx->cpu));
		BENCH_CHECK(smmu_mmap(lx->a, 0, LZ_AREA_PAGES * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE,
				      SMMU_MAP_POPULATE, &lx->area));
		for (unsigned k = 0; k < LZ_AREA_PAGES; k++)
			smmu_store64(lx->cpu, lx->area + (smmu_addr_t)k * PAGE, bench_remote_want(k));
		lx->p = lx->area + (smmu_addr_t)LZ_TARGET_PAGE * PAGE;
		smmu_store64(lx->cpu, lx->p, 0);
		for (int i = 0; i < MAX_REMOTES; i++) {
			BENCH_CHECK(smmu_mm_create(lx->pool, &lx->b[i]));
			BENCH_CHECK(smmu_mmap(lx->b[i], AREA, BENCH_REMOTE_PAGES * PAGE,
					      SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED | SMMU_MAP_POPULATE,
					      &got));
		}
		/* B_i's values, written by a helper CPU that visits each */
		BENCH_CHECK(smmu_cpu_unregister(lx->cpu));
		BENCH_CHECK(smmu_cpu_register(lx->b[0], &c));
		for (int i = 0; i < MAX_REMOTES; i++) {
			BENCH_CHECK(smmu_cpu_switch_mm(c, lx->b[i]));
			for (unsigned k = 0; k < BENCH_REMOTE_PAGES; k++)
				smmu_store64(c, AREA + (smmu_addr_t)k * PAGE, bench_remote_want(k));
		}
		BENCH_CHECK(smmu_cpu_unregister(c));
		BENCH_CHECK(smmu_cpu_register(lx->a, &lx->cpu));
		if (smmu_load64(lx->cpu, lx->p) != 0)
			bench_die("P lost its value");
		for (int i = 0; i < MAX_REMOTES; i++)
			lz_start(&lx->rem[i], i, lx->a, lx->b[i], lx->p, AREA, lz_cpu(i, ncpus));

		lx->host_area = mmap(NULL, LZ_AREA_PAGES * PAGE, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (lx->host_area == MAP_FAILED)
			bench_die("mmap: %s", strerror(errno));
		for (unsigned k = 0; k < LZ_AREA_PAGES; k++)
			*(volatile uint64_t *)(lx->host_area + (size_t)k * PAGE) = bench_remote_want(k);
		lx->host_p = lx->host_area + (size_t)LZ_TARGET_PAGE * PAGE;
		*(volatile uint64_t *)lx->host_p = 0;
		for (int i = 0; i < MAX_REMOTES; i++) {
			char name[32];

			snprintf(name, sizeof(name), "host%d", i);
			bench_remote_start(&lx->host[i], BENCH_REMOTE_HOST, name, NULL, 0, 0,
					   (const uint64_t *)lx->host_area, lz_cpu(i, ncpus));
		}
	}
	/* Warm-up, untimed: the page-table path, the pool's and the CPU's frame
	 * caches, the kernel's VMA and page-fault paths, every remote once. */
	{
		struct lz_case w;

		memset(&w, 0, sizeof(w));
		w.x = lx;
		w.name = "warm-up";
		w.iters = munmap_iters / 2 < 1000 ? 1000 : munmap_iters / 2;
		for (int k = 0; k < CHUNKS; k++) {
			lz_ours_piece(&w, 0, k % 2 ? MAX_REMOTES : 0, k);
			lz_kernel_piece(&w, k % 2 ? MAX_REMOTES : 0, k);
		}
		if (w.acc.signals_sent)
			signal_fail = 1;
	}
	lat_on = true;
	for (int i = 0; i < NLZ; i++) {
		lz[i].x = lx;
		lz[i].name = lz_defs[i].name;
		lz[i].n_ours = lz_defs[i].n_ours;
		lz[i].n_peer = lz_defs[i].n_peer;
		lz[i].peer_kernel = lz_defs[i].peer_kernel;
		lz[i].iters = munmap_iters;
		bc_lz[i] = bench_report_case(r, lz_defs[i].name,
					     lz_defs[i].peer_kernel ? "kernel munmap" : "ours, 0 remotes",
					     (double)munmap_iters, "iteration");
		bench_case_run_chunked(bc_lz[i], o.reps, CHUNKS, lz_ours, lz_peer, &lz[i]);
		if (lz[i].acc.signals_sent)
			signal_fail = 1;
		for (int side = 0; side < 2; side++)
			if (lz[i].pieces[side] && lz[i].idle[side] == lz[i].pieces[side])
				bench_die("%s: the %s remotes made no load during any timed piece: not running",
					  lz[i].name, side ? "peer's" : "ours'");
	}
	(void)bc_lz;

	/* --- notes and JSON */
	{
		FILE *f;
		char *s = NULL;
		size_t len = 0;

		for (int i = 0; i < NSW; i++) {
			const struct sw_case *c = &sw[i];
			double n0 = (double)c->switches[0], n1 = (double)c->switches[1];

			bench_report_note(r,
					  "%s: per switch: ours (asids=%u) %.3f misses, %.3f full flushes, %.3f ASID "
					  "recycles | asids=1 %.3f misses, %.3f full flushes, %.3f ASID recycles",
					  c->name, SMMU_ASIDS_DEFAULT, (double)c->acc[0].tlb_misses / n0,
					  (double)c->acc[0].flush_full / n0, (double)c->acc[0].asid_recycles / n0,
					  (double)c->acc[1].tlb_misses / n1, (double)c->acc[1].flush_full / n1,
					  (double)c->acc[1].asid_recycles / n1);
		}
		for (int i = 0; i < NLZ; i++) {
			const struct lz_case *c = &lz[i];

			bench_report_note(r,
					  "%s: in A per munmap (ours, all sides): %.3f signals sent, %.3f shootdowns, "
					  "%.3f frames freed; pieces where no remote loaded: ours %" PRIu64 "/%" PRIu64
					  ", peer %" PRIu64 "/%" PRIu64,
					  c->name, (double)c->acc.signals_sent / (double)c->ops_ours,
					  (double)c->acc.shootdowns / (double)c->ops_ours,
					  (double)c->acc.frames_freed / (double)c->ops_ours, c->idle[0], c->pieces[0],
					  c->idle[1], c->pieces[1]);
		}
		if (signal_fail)
			bench_report_note(r, "FAIL: A signalled CPUs that run in other mms");

		/* "growth": per-iteration percentiles by the number of remotes
		 * running (ours: every case's ours side with N, and the vs_r0
		 * cases' peer with 0; the kernel: the vs_kernel cases), over
		 * N = 0's.  The vs_r0 cases' ratios are the interleaved form. */
		{
			double o50[4], o90[4], k50[4], k90[4];
			static const int nr[4] = {0, 1, 2, 4};

			for (int i = 0; i < 4; i++) {
				o50[i] = lat_pctl(&lat_ours[nr[i]], 0.5);
				o90[i] = lat_pctl(&lat_ours[nr[i]], 0.9);
				k50[i] = lat_pctl(&lat_kernel[nr[i]], 0.5);
				k90[i] = lat_pctl(&lat_kernel[nr[i]], 0.9);
			}
			bench_report_note(
				r, "growth: one iteration (munmap+mmap+store) in A, p50 / p90 ns by N remotes "
				   "running, and p50 over N=0's; ours' remotes run in other mms, the kernel's are "
				   "spinning threads of the process:");
			bench_report_note(
				r,
				"growth:   ours   N=0 %.0f/%.0f, N=1 %.0f/%.0f (%.2fx), N=2 %.0f/%.0f (%.2fx), "
				"N=4 %.0f/%.0f (%.2fx)",
				o50[0], o90[0], o50[1], o90[1], o50[1] / o50[0], o50[2], o90[2], o50[2] / o50[0],
				o50[3], o90[3], o50[3] / o50[0]);
			bench_report_note(
				r,
				"growth:   kernel N=0 %.0f/%.0f, N=1 %.0f/%.0f (%.2fx), N=2 %.0f/%.0f (%.2fx), "
				"N=4 %.0f/%.0f (%.2fx)",
				k50[0], k90[0], k50[1], k90[1], k50[1] / k50[0], k50[2], k90[2], k50[2] / k50[0],
				k50[3], k90[3], k50[3] / k50[0]);
			f = open_memstream(&s, &len);
			if (!f)
				bench_die("out of memory");
			fputs("{\"method\":\"per-iteration percentiles by remotes running; growth = p50(N)/p50(0)\"",
			      f);
			fputs(",\"ours_p50_ns\":{", f);
			for (int i = 0; i < 4; i++)
				fprintf(f, "%s\"%d\":%.1f", i ? "," : "", nr[i], o50[i]);
			fputs("},\"ours_p90_ns\":{", f);
			for (int i = 0; i < 4; i++)
				fprintf(f, "%s\"%d\":%.1f", i ? "," : "", nr[i], o90[i]);
			fputs("},\"kernel_p50_ns\":{", f);
			for (int i = 0; i < 4; i++)
				fprintf(f, "%s\"%d\":%.1f", i ? "," : "", nr[i], k50[i]);
			fputs("},\"kernel_p90_ns\":{", f);
			for (int i = 0; i < 4; i++)
				fprintf(f, "%s\"%d\":%.1f", i ? "," : "", nr[i], k90[i]);
			fputs("},\"ours\":{", f);
			for (int i = 0; i < 4; i++)
				fprintf(f, "%s\"%d\":%.4f", i ? "," : "", nr[i], o50[i] / o50[0]);
			fputs("},\"kernel\":{", f);
			for (int i = 0; i < 4; i++)
				fprintf(f, "%s\"%d\":%.4f", i ? "," : "", nr[i], k50[i] / k50[0]);
			fputs("}}", f);
			if (fclose(f) != 0 || !s)
				bench_die("out of memory");
			bench_report_json(r, "growth", s);
			free(s);
			s = NULL;
		}
		f = open_memstream(&s, &len);
		if (!f)
			bench_die("out of memory");
		fputc('{', f);
		for (int i = 0; i < NSW; i++) {
			char *d0 = bench_stats_json(&sw[i].acc[0]), *d1 = bench_stats_json(&sw[i].acc[1]);

			fprintf(f, "%s\"%s\":{\"switches\":%" PRIu64 ",\"ours\":%s,\"peer\":%s}", i ? "," : "",
				sw[i].name, sw[i].switches[0], d0, d1);
			free(d0);
			free(d1);
		}
		for (int i = 0; i < NLZ; i++) {
			char *d = bench_stats_json(&lz[i].acc);

			fprintf(f,
				",\"%s\":{\"ours_ops\":%" PRIu64
				",\"signals_sent_per_op\":%.4f,\"stats_delta_in_A\":%s}",
				lz[i].name, lz[i].ops_ours, (double)lz[i].acc.signals_sent / (double)lz[i].ops_ours, d);
			free(d);
		}
		fputc('}', f);
		if (fclose(f) != 0 || !s)
			bench_die("out of memory");
		bench_report_json(r, "counters", s);
		free(s);
	}

	/* --- teardown */
	for (int i = 0; i < MAX_REMOTES; i++) {
		lz_stop(&lx->rem[i]);
		bench_remote_stop(&lx->host[i]);
	}
	BENCH_CHECK(smmu_cpu_unregister(lx->cpu));
	BENCH_CHECK(smmu_mm_destroy(lx->a));
	for (int i = 0; i < MAX_REMOTES; i++)
		BENCH_CHECK(smmu_mm_destroy(lx->b[i]));
	BENCH_CHECK(smmu_pool_destroy(lx->pool));
	if (munmap(lx->host_area, LZ_AREA_PAGES * PAGE) != 0)
		bench_die("munmap: %s", strerror(errno));
	BENCH_CHECK(smmu_mm_destroy(sx.a));
	BENCH_CHECK(smmu_mm_destroy(sx.b));
	BENCH_CHECK(smmu_pool_destroy(sx.pool));
	free(lx);
	free(lz);
	for (int i = 0; i <= MAX_REMOTES; i++) {
		free(lat_ours[i].v);
		free(lat_kernel[i].v);
	}
	bench_report_finish(r);
	if (signal_fail)
		bench_die("mm A sent shootdown signals to CPUs that run in other mms (must be 0)");
	return 0;
}
