/* SPDX-License-Identifier: MIT */
/*
 * bench-shootdown: mapping changes that must reach another CPU's TLB while
 * that CPU runs, against the kernel doing the same in this process while
 * another thread runs, in the same run.
 *
 * Both sides work in an 8-page read-write mapping whose pages all hold a
 * known value at offset 0 (ours: an smmu_mmap of the mm; the kernel: an
 * anonymous mmap of the process).  P is page 6.  A remote thread loads,
 * in a loop, from pages 0..3 (never P) and checks the values:
 *   ours:   a thread registered as a CPU of the same mm, smmu_load64;
 *   kernel: a plain pthread, relaxed atomic 64-bit loads of host memory.
 * The main thread is a registered CPU of the mm.  Each side's remote runs
 * only during that side's pieces: it is started (and seen loading) before
 * the clock starts and parked (blocked on a condition variable; ours also
 * offline, so it gets no signal) after it stops, so the two remotes never
 * compete for the cores.  The main thread is pinned to one CPU and the
 * remote to another (else a remote woken by the main thread queues behind
 * it and is not running when the shootdown comes).
 *
 *   munmap_page_remote_vs_kernel   N x {munmap P; mmap P FIXED read-write;
 *                                  store to P}: ours smmu_munmap /
 *                                  smmu_mmap(SMMU_MAP_FIXED) / smmu_store64
 *                                  (a demand-zero fault), the kernel munmap
 *                                  / mmap(MAP_FIXED) / a 64-bit store (a
 *                                  page fault).  ns per iteration.
 *   mprotect_page_remote_vs_kernel mprotect(P, READ) alone; between timed
 *                                  calls, untimed: mprotect(P, RW) and a
 *                                  store.
 *   mprotect_upgrade_vs_kernel     mprotect(P, RW) from READ alone; between
 *                                  timed calls, untimed: a store,
 *                                  mprotect(P, READ) and a load of P.  Ours
 *                                  sends no signal for it.
 *   munmap_page_remote_hot_vs_kernel, mprotect_page_remote_hot_vs_kernel
 *                                  the same, but our remote CPU also loads P
 *                                  (every 8th load), so it holds an entry
 *                                  for P and every munmap / mprotect(READ)
 *                                  must signal it.  In the cases above it
 *                                  never touches P and the per-entry CPU
 *                                  bits let ours send no signal at all; the
 *                                  kernel signals a running thread of the
 *                                  mm either way, so its side is the same.
 *   munmap_page_remote_qsbr_vs_kernel
 *                                  munmap_page_remote_vs_kernel on an mm
 *                                  made with SMMU_SHOOTDOWN_RCU: the remote
 *                                  CPU calls smmu_quiescent every 1000
 *                                  loads.  It never caches P, so the CPU
 *                                  bits let munmap skip the grace period,
 *                                  as they let the signal mode skip the
 *                                  signal.  The main thread calls
 *                                  smmu_quiescent after each iteration
 *                                  (timed).  The kernel side is unchanged.
 *   munmap_page_remote_deferred_vs_kernel
 *                                  the same on an SMMU_SHOOTDOWN_RCU_DEFERRED
 *                                  mm: P's frame goes back to the pool at
 *                                  once, for the same reason.
 *   munmap_page_remote_hot_qsbr_vs_kernel,
 *   munmap_page_remote_hot_deferred_vs_kernel
 *                                  the two above with the remote also
 *                                  loading P: every munmap waits for a
 *                                  grace period (strict) or hands P's frame
 *                                  to call_rcu (deferred).
 *
 * Each shootdown mode has its own pool, mm, area, P and remote CPU
 * threads.  A thread is a CPU of one mm at a time: the main thread leaves
 * one mm and registers with the next when the mode changes (untimed).  Of
 * an RCU-mode mm it is online only while it works (an ours piece or sweep
 * side) and offline otherwise, like a parked remote: an online QSBR reader
 * that makes no quiescent state holds up every grace period.
 *
 * Every operation is timed on its own (a clock read is ~30 ns, the
 * operations microseconds); the case's time is their sum, and the notes
 * add the distribution (mean, p50, p90, p99, max per side): on a shared
 * machine a few operations that wait milliseconds for a descheduled remote
 * weigh heavily in the sum.  The notes also give how much of each piece
 * the remote spent on a CPU (its thread CPU-time clock): the kernel sends
 * no IPI to a remote that is not running, ours must wait for it.
 *
 * Signals: the library's counters (smmu_stats_get) are read around the
 * timed part of every ours piece (around every timed call for the mprotect
 * cases), so their deltas count only timed work; expected one signal sent
 * per munmap / mprotect(READ) in the hot cases, none otherwise, and never
 * one in an RCU mode (the bench fails if one is sent).  The notes and the
 * JSON give grace periods per op too (one per munmap in the hot RCU
 * strict case, none in the other; in deferred mode the grace periods are
 * call_rcu's and not counted, only the waits when the backlog is full).
 *
 * Then, without a ratio:
 *   sweep    one-page munmap latency (munmap timed alone) against the
 *            number of active remote threads (1, 2, 4, 8) that all hold P
 *            (each loads P every 8th load), for every mode (signal, rcu,
 *            rcu_deferred; RCU remotes call smmu_quiescent every 1000
 *            loads) and the kernel, interleaved (the four sides of a
 *            repetition in rotating order), medians ("sweep_modes" in the
 *            JSON; --no-sweep skips it; with more remote threads than
 *            cores the numbers are mostly the scheduler's).
 *   offline  a CPU that loaded pages of the mm (P included) and then went
 *            offline and sleeps is the only other CPU; munmap/mmap/store
 *            cycles must send it no signal ("offline_signals_per_op" in
 *            the JSON, must be 0).  P is then unmapped and the CPU comes
 *            back online: smmu_try_load64(P) must fail with -EFAULT (its
 *            stale entry was flushed by generation).
 *
 * Every library call is checked (BENCH_CHECK) and every value read back
 * is checked.  A remote that made no load in any piece of a case, or a
 * state change that takes more than 10 s, stops the bench with a message;
 * pieces in which a remote made no load are counted and warned about.
 */
#define _GNU_SOURCE
#include <softmmu/softmmu.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench_remote.h"
#include "bench_util.h"

#define PAGE 4096u
#define AREA_PAGES 8  /* the mapping each side works in */
#define TARGET_PAGE 6 /* P */
#define CHUNKS 8      /* timed pieces per repetition and side */
#define MAX_REMOTES 8
#define NCASES 9
#define QUIESCE_EVERY 1000 /* an RCU-mode remote calls smmu_quiescent after this many loads */

_Static_assert(PAGE == BENCH_REMOTE_PAGE, "a remote's pages are the area's pages");
_Static_assert(TARGET_PAGE >= BENCH_REMOTE_PAGES && TARGET_PAGE < AREA_PAGES, "P is in the area, not a remote's page");

/* ------------------------------------------------------------ context */

/* Our shootdown modes: each has its own pool, mm, area, P and remotes. */
enum { M_SIGNAL, M_RCU, M_DEFERRED, NMODES };

static const char *const mode_names[NMODES] = {"signal", "rcu", "rcu_deferred"};
static const enum smmu_shootdown_mode mode_sd[NMODES] = {SMMU_SHOOTDOWN_SIGNAL, SMMU_SHOOTDOWN_RCU,
							 SMMU_SHOOTDOWN_RCU_DEFERRED};

static bool mode_rcu(int mode)
{
	return mode == M_RCU || mode == M_DEFERRED;
}

struct ours_mm {
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	smmu_addr_t area, p;
	uint64_t seq; /* the value last stored to P */
	struct bench_remote cpu_remote[MAX_REMOTES];
};

struct ctx {
	struct ours_mm m[NMODES];
	int cur;              /* the mode whose mm the main thread is a CPU of, -1: none */
	struct smmu_cpu *cpu; /* the main thread's CPU of m[cur] */
	char *host_area, *host_p;
	uint64_t host_seq; /* the value last stored to the kernel's P */
	struct bench_remote host_remote[MAX_REMOTES];
};

/*
 * Make the main thread a CPU of m[mode]'s mm (-1: of none): a thread is a
 * CPU of at most one mm, so it unregisters from the current one first.
 * Of an RCU-mode mm it is left offline; main_work_begin brings it online.
 */
static void main_use(struct ctx *x, int mode)
{
	if (x->cur == mode)
		return;
	if (x->cur >= 0) {
		BENCH_CHECK(smmu_cpu_unregister(x->cpu));
		x->cpu = NULL;
		x->cur = -1;
	}
	if (mode < 0)
		return;
	BENCH_CHECK(smmu_cpu_register(x->m[mode].mm, &x->cpu));
	x->cur = mode;
	if (mode_rcu(mode))
		BENCH_CHECK(smmu_cpu_offline(x->cpu));
}

/* The main thread is about to access m[mode]'s memory: a CPU of it, online. */
static void main_work_begin(struct ctx *x, int mode)
{
	main_use(x, mode);
	if (mode_rcu(mode))
		BENCH_CHECK(smmu_cpu_online(x->cpu));
}

/* ... and is done: of an RCU-mode mm, it goes offline (no grace period
 * waits for it while it spins for remotes or runs the kernel's side). */
static void main_work_end(struct ctx *x)
{
	if (x->cur >= 0 && mode_rcu(x->cur))
		BENCH_CHECK(smmu_cpu_offline(x->cpu));
}

enum case_kind { K_MUNMAP, K_MPROTECT, K_UPGRADE };

/* [0] ours, [1] the kernel's */
struct sd_case {
	struct ctx *x;
	int mode; /* ours: M_* */
	enum case_kind kind;
	bool hot; /* ours: the remote CPU also loads P, so it holds an entry for it */
	const char *name;
	uint64_t iters;        /* timed operations per repetition and side */
	struct smmu_stats acc; /* ours: counter deltas over the timed operations */
	uint64_t ours_ops;
	double *lat[2]; /* every timed operation's ns, all repetitions */
	size_t nlat[2], caplat;
	/* the remotes during the pieces */
	uint64_t pieces[2], idle_pieces[2], loads[2];
	double piece_ns[2], oncpu_ns[2]; /* wall time of the pieces; the remote's run time in them */
	bool oncpu_unknown;
};

static uint64_t piece_len(const struct sd_case *c, int k)
{
	return c->iters * (uint64_t)(k + 1) / CHUNKS - c->iters * (uint64_t)k / CHUNKS;
}

static void lat_add(struct sd_case *c, int side, uint64_t t0, uint64_t t1)
{
	if (c->nlat[side] == c->caplat)
		bench_die("%s: more operations than planned", c->name);
	c->lat[side][c->nlat[side]++] = (double)(t1 - t0);
}

/* What the remote did while a piece ran. */
struct piece_mark {
	uint64_t loads, wall;
	int64_t oncpu;
};

static void piece_mark(struct bench_remote *r, struct piece_mark *m)
{
	m->oncpu = bench_remote_oncpu_ns(r);
	m->loads = bench_remote_loads(r);
	m->wall = bench_now_ns();
}

static void remote_account(struct sd_case *c, int side, const struct piece_mark *a, const struct piece_mark *b)
{
	c->pieces[side]++;
	c->loads[side] += b->loads - a->loads;
	c->piece_ns[side] += (double)(b->wall - a->wall);
	if (a->oncpu < 0 || b->oncpu < 0)
		c->oncpu_unknown = true;
	else
		c->oncpu_ns[side] += (double)(b->oncpu - a->oncpu);
	if (b->loads == a->loads)
		c->idle_pieces[side]++;
}

/* After a case: a remote that never loaded during a piece was not running
 * at all, and the case measured something else. */
static void remote_verdict(const struct sd_case *c)
{
	for (int side = 0; side < 2; side++)
		if (c->pieces[side] && c->idle_pieces[side] == c->pieces[side])
			bench_die("%s: the %s remote made no load during any of the %" PRIu64
				  " timed pieces: it was not running",
				  c->name, side == 0 ? "ours (CPU)" : "kernel (plain thread)", c->pieces[side]);
}

static double ours_piece(void *arg, int k)
{
	struct sd_case *c = arg;
	struct ctx *x = c->x;
	struct ours_mm *m = &x->m[c->mode];
	struct bench_remote *r = &m->cpu_remote[0];
	bool rcu = mode_rcu(c->mode);
	uint64_t n = piece_len(c, k), t0, t1, v;
	struct piece_mark m0, m1;
	struct smmu_stats s0, s1;
	double ns = 0;
	smmu_addr_t got;

	main_work_begin(x, c->mode);
	r->touch = c->hot ? m->p : 0; /* parked: it reads this after it is woken */
	bench_remote_run(r);
	piece_mark(r, &m0);
	switch (c->kind) {
	case K_MUNMAP:
		BENCH_CHECK(smmu_stats_get(m->mm, &s0));
		for (uint64_t i = 0; i < n; i++) {
			t0 = bench_now_ns();
			BENCH_CHECK(smmu_munmap(m->mm, m->p, PAGE));
			BENCH_CHECK(
				smmu_mmap(m->mm, m->p, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got));
			if (got != m->p)
				bench_die("%s: smmu_mmap FIXED at %#" PRIx64 " gave %#" PRIx64, c->name, m->p, got);
			smmu_store64(x->cpu, m->p, ++m->seq);
			if (rcu) /* an RCU-mode CPU's safepoint: timed, part of the cost */
				BENCH_CHECK(smmu_quiescent(x->cpu));
			t1 = bench_now_ns();
			ns += (double)(t1 - t0);
			lat_add(c, 0, t0, t1);
		}
		BENCH_CHECK(smmu_stats_get(m->mm, &s1));
		bench_stats_accumulate(&c->acc, &s0, &s1);
		break;
	case K_MPROTECT:
		for (uint64_t i = 0; i < n; i++) {
			BENCH_CHECK(smmu_stats_get(m->mm, &s0));
			t0 = bench_now_ns();
			BENCH_CHECK(smmu_mprotect(m->mm, m->p, PAGE, SMMU_PROT_READ));
			t1 = bench_now_ns();
			BENCH_CHECK(smmu_stats_get(m->mm, &s1));
			bench_stats_accumulate(&c->acc, &s0, &s1);
			ns += (double)(t1 - t0);
			lat_add(c, 0, t0, t1);
			BENCH_CHECK(smmu_mprotect(m->mm, m->p, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE));
			smmu_store64(x->cpu, m->p, ++m->seq);
			if (rcu)
				BENCH_CHECK(smmu_quiescent(x->cpu));
		}
		break;
	case K_UPGRADE:
		for (uint64_t i = 0; i < n; i++) {
			BENCH_CHECK(smmu_mprotect(m->mm, m->p, PAGE, SMMU_PROT_READ));
			if ((v = smmu_load64(x->cpu, m->p)) != m->seq)
				bench_die("%s: P read %#" PRIx64 " after mprotect(READ), stored %#" PRIx64, c->name, v,
					  m->seq);
			BENCH_CHECK(smmu_stats_get(m->mm, &s0));
			t0 = bench_now_ns();
			BENCH_CHECK(smmu_mprotect(m->mm, m->p, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE));
			t1 = bench_now_ns();
			BENCH_CHECK(smmu_stats_get(m->mm, &s1));
			bench_stats_accumulate(&c->acc, &s0, &s1);
			ns += (double)(t1 - t0);
			lat_add(c, 0, t0, t1);
			smmu_store64(x->cpu, m->p, ++m->seq);
			if (rcu)
				BENCH_CHECK(smmu_quiescent(x->cpu));
		}
		break;
	}
	piece_mark(r, &m1);
	bench_remote_park(r);
	remote_account(c, 0, &m0, &m1);
	c->ours_ops += n;
	if ((v = smmu_load64(x->cpu, m->p)) != m->seq)
		bench_die("%s: P read %#" PRIx64 ", last stored %#" PRIx64 " (the library returned a wrong value)",
			  c->name, v, m->seq);
	main_work_end(x);
	return ns;
}

static double kernel_piece(void *arg, int k)
{
	struct sd_case *c = arg;
	struct ctx *x = c->x;
	struct bench_remote *r = &x->host_remote[0];
	volatile uint64_t *p = (volatile uint64_t *)x->host_p;
	uint64_t n = piece_len(c, k), t0, t1, v;
	struct piece_mark m0, m1;
	double ns = 0;

	bench_remote_run(r);
	piece_mark(r, &m0);
	switch (c->kind) {
	case K_MUNMAP:
		for (uint64_t i = 0; i < n; i++) {
			void *q;

			t0 = bench_now_ns();
			if (munmap(x->host_p, PAGE) != 0)
				bench_die("%s: munmap: %s", c->name, strerror(errno));
			q = mmap(x->host_p, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
				 0);
			if (q != x->host_p)
				bench_die("%s: mmap MAP_FIXED: %s", c->name,
					  q == MAP_FAILED ? strerror(errno) : "moved");
			*p = ++x->host_seq;
			t1 = bench_now_ns();
			ns += (double)(t1 - t0);
			lat_add(c, 1, t0, t1);
		}
		break;
	case K_MPROTECT:
		for (uint64_t i = 0; i < n; i++) {
			int rc;

			t0 = bench_now_ns();
			rc = mprotect(x->host_p, PAGE, PROT_READ);
			t1 = bench_now_ns();
			if (rc != 0)
				bench_die("%s: mprotect(READ): %s", c->name, strerror(errno));
			ns += (double)(t1 - t0);
			lat_add(c, 1, t0, t1);
			if (mprotect(x->host_p, PAGE, PROT_READ | PROT_WRITE) != 0)
				bench_die("%s: mprotect(RW): %s", c->name, strerror(errno));
			*p = ++x->host_seq;
		}
		break;
	case K_UPGRADE:
		for (uint64_t i = 0; i < n; i++) {
			int rc;

			if (mprotect(x->host_p, PAGE, PROT_READ) != 0)
				bench_die("%s: mprotect(READ): %s", c->name, strerror(errno));
			if ((v = *p) != x->host_seq)
				bench_die("%s: host P read %#" PRIx64 ", stored %#" PRIx64, c->name, v, x->host_seq);
			t0 = bench_now_ns();
			rc = mprotect(x->host_p, PAGE, PROT_READ | PROT_WRITE);
			t1 = bench_now_ns();
			if (rc != 0)
				bench_die("%s: mprotect(RW): %s", c->name, strerror(errno));
			ns += (double)(t1 - t0);
			lat_add(c, 1, t0, t1);
			*p = ++x->host_seq;
		}
		break;
	}
	piece_mark(r, &m1);
	bench_remote_park(r);
	remote_account(c, 1, &m0, &m1);
	if ((v = *p) != x->host_seq)
		bench_die("%s: host P read %#" PRIx64 ", last stored %#" PRIx64, c->name, v, x->host_seq);
	return ns;
}

/* Percentile q (0..1) of the sorted v[0..n). */
static double pctl(const double *v, size_t n, double q)
{
	size_t i = (size_t)(q * (double)(n - 1) + 0.5);

	return v[i < n ? i : n - 1];
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

struct lat_summary {
	double mean, p50, p90, p99, max;
};

static struct lat_summary lat_summarize(double *v, size_t n)
{
	struct lat_summary s = {0, 0, 0, 0, 0};
	double sum = 0;

	if (!n)
		return s;
	qsort(v, n, sizeof(*v), cmp_dbl);
	for (size_t i = 0; i < n; i++)
		sum += v[i];
	s.mean = sum / (double)n;
	s.p50 = pctl(v, n, 0.50);
	s.p90 = pctl(v, n, 0.90);
	s.p99 = pctl(v, n, 0.99);
	s.max = v[n - 1];
	return s;
}

/* ------------------------------------------------------------ sweep */

/*
 * One-page munmap latency (the munmap timed alone; mmap, a store and, in
 * an RCU mode, smmu_quiescent between, untimed) with nr remotes loading,
 * all of which also load P (every 8th load), so all may hold an entry for
 * it.  A side's repetition stops after `iters` munmaps or, past
 * SWEEP_MIN_OPS, once it has run for `budget_ns`: with more remotes than
 * cores, a signal or a grace period waits for each remote to be scheduled
 * and one munmap can take milliseconds.
 */
#define SWEEP_MIN_OPS 5
#define SWEEP_SIDES (NMODES + 1) /* ours in every mode, then the kernel */

struct sweep_point {
	int remotes;
	double ours_ns[NMODES], kernel_ns;                /* medians over reps of each rep's mean, ns per munmap */
	double signals_per_op[NMODES], gp_per_op[NMODES]; /* ours */
	uint64_t ours_ops[NMODES], kernel_ops;            /* over all reps */
	uint64_t ours_active[NMODES], kernel_active;      /* remotes that loaded during a rep's timed part, summed */
	struct smmu_stats acc[NMODES];                    /* ours: counter deltas over the timed munmaps */
};

struct sweep_side {
	struct ctx *x;
	struct sweep_point *pt;
	uint64_t iters, budget_ns;
};

/* How many of the nr remotes made loads since l0, added to *sum. */
static void sweep_active(struct bench_remote *rs, int nr, const uint64_t *l0, uint64_t *sum)
{
	int n = 0;

	for (int i = 0; i < nr; i++)
		n += bench_remote_loads(&rs[i]) != l0[i];
	*sum += (uint64_t)n;
}

/* ns per munmap of one repetition of ours in mode */
static double sweep_ours(struct sweep_side *sw, int mode)
{
	struct ctx *x = sw->x;
	struct ours_mm *m = &x->m[mode];
	int nr = sw->pt->remotes;
	bool rcu = mode_rcu(mode);
	struct smmu_stats s0, s1;
	double ns = 0;
	smmu_addr_t got;
	uint64_t l0[MAX_REMOTES], t0, t1, start, n = 0;

	main_work_begin(x, mode);
	for (int i = 0; i < nr; i++) {
		m->cpu_remote[i].touch = m->p; /* parked: read after it is woken */
		bench_remote_run(&m->cpu_remote[i]);
	}
	for (int i = 0; i < nr; i++)
		l0[i] = bench_remote_loads(&m->cpu_remote[i]);
	start = bench_now_ns();
	while (n < sw->iters && (n < SWEEP_MIN_OPS || bench_now_ns() - start < sw->budget_ns)) {
		BENCH_CHECK(smmu_stats_get(m->mm, &s0));
		t0 = bench_now_ns();
		BENCH_CHECK(smmu_munmap(m->mm, m->p, PAGE));
		t1 = bench_now_ns();
		BENCH_CHECK(smmu_stats_get(m->mm, &s1));
		bench_stats_accumulate(&sw->pt->acc[mode], &s0, &s1);
		ns += (double)(t1 - t0);
		n++;
		BENCH_CHECK(smmu_mmap(m->mm, m->p, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got));
		if (got != m->p)
			bench_die("sweep (%s): smmu_mmap FIXED at %#" PRIx64 " gave %#" PRIx64, mode_names[mode], m->p,
				  got);
		smmu_store64(x->cpu, m->p, ++m->seq);
		if (rcu)
			BENCH_CHECK(smmu_quiescent(x->cpu));
	}
	sweep_active(m->cpu_remote, nr, l0, &sw->pt->ours_active[mode]);
	for (int i = 0; i < nr; i++)
		bench_remote_park(&m->cpu_remote[i]);
	if (smmu_load64(x->cpu, m->p) != m->seq)
		bench_die("sweep (%s): P does not hold the value last stored", mode_names[mode]);
	main_work_end(x);
	sw->pt->ours_ops[mode] += n;
	return ns / (double)n;
}

/* ns per munmap of one repetition of the kernel */
static double sweep_kernel(struct sweep_side *sw)
{
	struct ctx *x = sw->x;
	int nr = sw->pt->remotes;
	volatile uint64_t *p = (volatile uint64_t *)x->host_p;
	double ns = 0;
	uint64_t l0[MAX_REMOTES], t0, t1, start, n = 0;

	for (int i = 0; i < nr; i++)
		bench_remote_run(&x->host_remote[i]);
	for (int i = 0; i < nr; i++)
		l0[i] = bench_remote_loads(&x->host_remote[i]);
	start = bench_now_ns();
	while (n < sw->iters && (n < SWEEP_MIN_OPS || bench_now_ns() - start < sw->budget_ns)) {
		int rc;
		void *q;

		t0 = bench_now_ns();
		rc = munmap(x->host_p, PAGE);
		t1 = bench_now_ns();
		if (rc != 0)
			bench_die("sweep: munmap: %s", strerror(errno));
		ns += (double)(t1 - t0);
		n++;
		q = mmap(x->host_p, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (q != x->host_p)
			bench_die("sweep: mmap MAP_FIXED: %s", q == MAP_FAILED ? strerror(errno) : "moved");
		*p = ++x->host_seq;
	}
	sweep_active(x->host_remote, nr, l0, &sw->pt->kernel_active);
	for (int i = 0; i < nr; i++)
		bench_remote_park(&x->host_remote[i]);
	if (*p != x->host_seq)
		bench_die("sweep: host P does not hold the value last stored");
	sw->pt->kernel_ops += n;
	return ns / (double)n;
}

/* Repetition i runs the sides (ours in each mode, the kernel) in the
 * order starting at side i mod SWEEP_SIDES. */
static void sweep_run(struct ctx *x, struct sweep_point *pt, int reps, uint64_t iters, uint64_t budget_ns)
{
	double *v[SWEEP_SIDES];
	struct sweep_side sw;

	for (int s = 0; s < SWEEP_SIDES; s++)
		if (!(v[s] = calloc((size_t)reps, sizeof(double))))
			bench_die("out of memory");
	memset(&sw, 0, sizeof(sw));
	sw.x = x;
	sw.pt = pt;
	sw.iters = iters;
	sw.budget_ns = budget_ns;
	for (int i = 0; i < reps; i++)
		for (int j = 0; j < SWEEP_SIDES; j++) {
			int s = (i + j) % SWEEP_SIDES;

			v[s][i] = s == NMODES ? sweep_kernel(&sw) : sweep_ours(&sw, s);
		}
	for (int mode = 0; mode < NMODES; mode++) {
		pt->ours_ns[mode] = bench_median(v[mode], (size_t)reps);
		pt->signals_per_op[mode] = (double)pt->acc[mode].signals_sent / (double)pt->ours_ops[mode];
		pt->gp_per_op[mode] = (double)pt->acc[mode].grace_periods / (double)pt->ours_ops[mode];
		if (!pt->ours_active[mode])
			bench_die("sweep, %d remotes: no ours (%s) remote made a load during any timed part: not "
				  "running",
				  pt->remotes, mode_names[mode]);
	}
	pt->kernel_ns = bench_median(v[NMODES], (size_t)reps);
	if (!pt->kernel_active)
		bench_die("sweep, %d remotes: no kernel remote made a load during any timed part: not running",
			  pt->remotes);
	for (int s = 0; s < SWEEP_SIDES; s++)
		free(v[s]);
}

/* ------------------------------------------------------------ options */

struct sd_opts {
	uint64_t iters;       /* per case, repetition and side; 0: default */
	uint64_t sweep_iters; /* per sweep point, repetition and side; 0: default */
	int no_sweep;
};

static int sd_opt(const char *opt, const char *val, void *arg)
{
	struct sd_opts *s = arg;

	if (!strcmp(opt, "--iters")) {
		s->iters = bench_parse_at_least(opt, val, CHUNKS);
		return 2;
	}
	if (!strcmp(opt, "--sweep-iters")) {
		s->sweep_iters = bench_parse_size(opt, val);
		if (!s->sweep_iters)
			bench_die("--sweep-iters must be positive");
		return 2;
	}
	if (!strcmp(opt, "--no-sweep")) {
		s->no_sweep = 1;
		return 1;
	}
	return 0;
}

/* Median cost of one bench_now_ns() call (each timed call includes one). */
static double clock_cost_ns(void)
{
	double v[101];

	for (int i = 0; i < 101; i++) {
		uint64_t t0 = bench_now_ns(), t1;

		for (int j = 0; j < 99; j++)
			bench_sink_u64(bench_now_ns());
		t1 = bench_now_ns();
		v[i] = (double)(t1 - t0) / 100.0;
	}
	return bench_median(v, 101);
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
	struct sd_opts so = {0, 0, 0};
	struct bench_opts o;
	struct bench_report *r;
	struct ctx x;
	struct sd_case cases[NCASES];
	static const int sweep_remotes[] = {1, 2, 4, 8};
	enum { NSWEEP = sizeof(sweep_remotes) / sizeof(sweep_remotes[0]) };
	struct sweep_point sweep[NSWEEP];
	int nsweep = 0, rcu_signal_fail = 0;
	uint64_t iters, sweep_iters, sweep_budget_ns, offline_ops;
	long host_page = sysconf(_SC_PAGESIZE), nproc = sysconf(_SC_NPROCESSORS_ONLN);
	char thp[32], buf[4096];
	double offline_spo, offline_ns;
	int offline_probe_err, ncpus_allowed;

	_Static_assert(MAX_REMOTES >= 8, "the sweep goes up to 8 remotes");
	bench_parse_args(
		&o, argc, argv, "bench-shootdown",
		"  --iters N         timed operations per case, repetition and side (default 4000; quick 400)\n"
		"  --sweep-iters N   munmaps per sweep point, repetition and side (default 300; quick 50;\n"
		"                    a side stops early after 120 ms, quick 30 ms)\n"
		"  --no-sweep        skip the sweep over 1, 2, 4, 8 remote threads and every mode",
		sd_opt, &so);
	if (host_page != PAGE)
		bench_die("host page size is %ld, this bench compares 4 KiB pages", host_page);
	iters = so.iters ? so.iters : o.quick ? 400 : 4000;
	sweep_iters = so.sweep_iters ? so.sweep_iters : o.quick ? 50 : 300;
	sweep_budget_ns = o.quick ? 30000000ull : 120000000ull;
	offline_ops = o.quick ? 2000 : 20000;

	memset(&x, 0, sizeof(x));
	memset(sweep, 0, sizeof(sweep));
	x.cur = -1;
	ncpus_allowed = bench_pin_main();
	r = bench_report_new("bench-shootdown", &o);
	bench_thp_mode(thp, sizeof(thp));
	bench_report_config_u64(r, "iters", iters);
	bench_report_config_u64(r, "chunks_per_rep", CHUNKS);
	bench_report_config_u64(r, "area_pages", AREA_PAGES);
	bench_report_config_str(r, "layout", "remote loads pages 0..3 of the area; P is page 6");
	bench_report_config_str(r, "ours_remote", "registered CPU of the same mm, smmu_load64 loop");
	bench_report_config_str(r, "kernel_remote", "plain pthread, relaxed 64-bit load loop on host pages");
	bench_report_config_str(r, "modes",
				"signal (smmu_mm_create), rcu and rcu_deferred (smmu_mm_create_ex): one pool, mm, "
				"area and remotes each");
	bench_report_config_u64(r, "rcu_quiesce_every", QUIESCE_EVERY);
	bench_report_config_u64(r, "signal", (uint64_t)smmu_shootdown_signal());
	bench_report_config_u64(r, "sweep_iters", so.no_sweep ? 0 : sweep_iters);
	bench_report_config_u64(r, "sweep_budget_ms", so.no_sweep ? 0 : sweep_budget_ns / 1000000);
	bench_report_config_str(r, "thp", thp);
	if (ncpus_allowed >= 2) {
		snprintf(buf, sizeof(buf), "main on cpu %d, remote i on allowed cpu (i+1) mod %d (remote 0: cpu %d)",
			 bench_main_cpu(), ncpus_allowed, bench_remote_cpu(0));
		bench_report_config_str(r, "pinning", buf);
	} else {
		bench_report_config_str(r, "pinning", "none (one allowed cpu)");
	}
	bench_report_header(r);
	if (ncpus_allowed < 2)
		bench_report_note(r,
				  "WARNING: %d CPU allowed (%ld online): the remote threads share the main "
				  "thread's core",
				  ncpus_allowed, nproc);

	/* --- ours, in every mode: pool, mm, the area (written by the main
	 * thread as a CPU of the mm), the remotes (parked) */
	for (int mode = 0; mode < NMODES; mode++) {
		struct ours_mm *m = &x.m[mode];
		struct smmu_pool_config pc;
		struct smmu_mm_config mc;

		memset(&pc, 0, sizeof(pc));
		pc.size = 16ull << 20;
		pc.page_size = PAGE;
		BENCH_CHECK(smmu_pool_create(&pc, &m->pool));
		if (mode == M_SIGNAL) {
			BENCH_CHECK(smmu_mm_create(m->pool, &m->mm));
		} else {
			memset(&mc, 0, sizeof(mc));
			mc.mode = mode_sd[mode];
			BENCH_CHECK(smmu_mm_create_ex(m->pool, &mc, &m->mm));
		}
		main_work_begin(&x, mode);
		BENCH_CHECK(smmu_mmap(m->mm, 0, AREA_PAGES * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE,
				      &m->area));
		for (unsigned k = 0; k < AREA_PAGES; k++)
			smmu_store64(x.cpu, m->area + (smmu_addr_t)k * PAGE, bench_remote_want(k));
		m->p = m->area + (smmu_addr_t)TARGET_PAGE * PAGE;
		smmu_store64(x.cpu, m->p, 0); /* P holds m->seq */
		main_work_end(&x);
		for (int i = 0; i < MAX_REMOTES; i++) {
			char name[32];

			snprintf(name, sizeof(name), "%s-cpu%d", mode_names[mode], i);
			bench_remote_start(&m->cpu_remote[i], BENCH_REMOTE_CPU, name, m->mm, m->area, 0, NULL,
					   bench_remote_cpu(i));
			if (mode_rcu(mode))
				bench_remote_set_quiescent(&m->cpu_remote[i], QUIESCE_EVERY);
		}
	}

	/* --- the kernel: the same area in the process */
	x.host_area = mmap(NULL, AREA_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
			   -1, 0);
	if (x.host_area == MAP_FAILED)
		bench_die("mmap(%u bytes): %s", AREA_PAGES * PAGE, strerror(errno));
	for (unsigned k = 0; k < AREA_PAGES; k++)
		*(volatile uint64_t *)(x.host_area + (size_t)k * PAGE) = bench_remote_want(k);
	x.host_p = x.host_area + (size_t)TARGET_PAGE * PAGE;
	*(volatile uint64_t *)x.host_p = 0; /* P holds x.host_seq */
	for (int i = 0; i < MAX_REMOTES; i++) {
		char name[32];

		snprintf(name, sizeof(name), "host%d", i);
		bench_remote_start(&x.host_remote[i], BENCH_REMOTE_HOST, name, NULL, 0, 0,
				   (const uint64_t *)x.host_area, bench_remote_cpu(i));
	}

	/* --- the cases */
	{
		static const struct {
			const char *name, *peer;
			enum case_kind kind;
			bool hot;
			int mode;
		} defs[NCASES] = {
			{"munmap_page_remote_vs_kernel", "kernel munmap", K_MUNMAP, false, M_SIGNAL},
			{"mprotect_page_remote_vs_kernel", "kernel mprotect", K_MPROTECT, false, M_SIGNAL},
			{"mprotect_upgrade_vs_kernel", "kernel mprotect", K_UPGRADE, false, M_SIGNAL},
			{"munmap_page_remote_hot_vs_kernel", "kernel munmap", K_MUNMAP, true, M_SIGNAL},
			{"mprotect_page_remote_hot_vs_kernel", "kernel mprotect", K_MPROTECT, true, M_SIGNAL},
			{"munmap_page_remote_qsbr_vs_kernel", "kernel munmap", K_MUNMAP, false, M_RCU},
			{"munmap_page_remote_deferred_vs_kernel", "kernel munmap", K_MUNMAP, false, M_DEFERRED},
			{"munmap_page_remote_hot_qsbr_vs_kernel", "kernel munmap", K_MUNMAP, true, M_RCU},
			{"munmap_page_remote_hot_deferred_vs_kernel", "kernel munmap", K_MUNMAP, true, M_DEFERRED},
		};

		for (int i = 0; i < NCASES; i++) {
			struct bench_case *bc;

			memset(&cases[i], 0, sizeof(cases[i]));
			cases[i].x = &x;
			cases[i].mode = defs[i].mode;
			cases[i].kind = defs[i].kind;
			cases[i].hot = defs[i].hot;
			cases[i].name = defs[i].name;
			cases[i].iters = iters;
			cases[i].caplat = (size_t)(iters * (uint64_t)o.reps);
			for (int side = 0; side < 2; side++)
				if (!(cases[i].lat[side] = calloc(cases[i].caplat, sizeof(double))))
					bench_die("out of memory");
			main_use(&x, defs[i].mode); /* untimed: the pieces find it done */
			bc = bench_report_case(r, defs[i].name, defs[i].peer, (double)iters,
					       defs[i].kind == K_MUNMAP ? "iteration" : "call");
			bench_case_run_chunked(bc, o.reps, CHUNKS, ours_piece, kernel_piece, &cases[i]);
			remote_verdict(&cases[i]);
			if (mode_rcu(cases[i].mode) && cases[i].acc.signals_sent)
				rcu_signal_fail = 1;
		}
	}

	/* --- the sweep */
	if (!so.no_sweep) {
		for (int i = 0; i < NSWEEP; i++) {
			sweep[i].remotes = sweep_remotes[i];
			sweep_run(&x, &sweep[i], o.reps, sweep_iters, sweep_budget_ns);
			for (int mode = M_RCU; mode < NMODES; mode++)
				if (sweep[i].acc[mode].signals_sent)
					rcu_signal_fail = 1;
			nsweep++;
		}
	}

	/* --- the remotes leave: the offline test has no other CPU */
	for (int i = 0; i < MAX_REMOTES; i++) {
		for (int mode = 0; mode < NMODES; mode++)
			bench_remote_stop(&x.m[mode].cpu_remote[i]);
		bench_remote_stop(&x.host_remote[i]);
	}

	/* --- offline: one other CPU, offline and asleep (signal mode) */
	{
		struct ours_mm *m = &x.m[M_SIGNAL];
		struct bench_remote off;
		struct smmu_stats s0, s1;
		uint64_t t0, t1, seq = 0;
		smmu_addr_t got;

		main_use(&x, M_SIGNAL);
		bench_remote_start(&off, BENCH_REMOTE_OFFLINE, "offline", m->mm, m->area, m->p, NULL,
				   bench_remote_cpu(0));
		BENCH_CHECK(smmu_stats_get(m->mm, &s0));
		t0 = bench_now_ns();
		for (uint64_t i = 0; i < offline_ops; i++) {
			BENCH_CHECK(smmu_munmap(m->mm, m->p, PAGE));
			BENCH_CHECK(
				smmu_mmap(m->mm, m->p, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got));
			if (got != m->p)
				bench_die("offline: smmu_mmap FIXED at %#" PRIx64 " gave %#" PRIx64, m->p, got);
			smmu_store64(x.cpu, m->p, ++seq);
		}
		t1 = bench_now_ns();
		BENCH_CHECK(smmu_stats_get(m->mm, &s1));
		if (smmu_load64(x.cpu, m->p) != seq)
			bench_die("offline: P does not hold the value last stored");
		offline_spo = (double)(s1.signals_sent - s0.signals_sent) / (double)offline_ops;
		offline_ns = (double)(t1 - t0) / (double)offline_ops;
		/* now P goes away; the CPU that still has it in its TLB comes back */
		BENCH_CHECK(smmu_munmap(m->mm, m->p, PAGE));
		bench_remote_stop(&off);
		offline_probe_err = off.probe_err;
		if (off.probe_err != -EFAULT)
			bench_die("offline: after coming back online, the CPU's smmu_try_load64 of the unmapped page "
				  "returned %d (value %#" PRIx64 "), expected %d (-EFAULT): a stale TLB entry survived",
				  off.probe_err, off.probe_val, -EFAULT);
		BENCH_CHECK(smmu_mmap(m->mm, m->p, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got));
	}

	/* --- notes and JSON (the report keeps at most 32 notes: one line per
	 * case and topic, one per sweep point) */
	{
		FILE *f;
		char *s = NULL;
		size_t len = 0;
		struct lat_summary lat[NCASES][2];

		bench_report_note(r,
				  "each repetition runs as %d alternating pieces per side; each side's remote "
				  "runs only during its own pieces",
				  CHUNKS);
		bench_report_note(r, "clock read: %.1f ns (one is inside every timed mprotect call, both sides)",
				  clock_cost_ns());
		for (int i = 0; i < NCASES; i++) {
			const struct sd_case *c = &cases[i];
			double ops = (double)c->ours_ops;
			const char *warn = c->idle_pieces[0] || c->idle_pieces[1]
						   ? "WARNING (a remote made no load during some timed pieces: "
						     "descheduled?): "
						   : "";

			if (mode_rcu(c->mode))
				bench_report_note(
					r,
					"%s: ours (%s mode) per op: %.3f signals sent, %.3f grace periods "
					"waited, %.3f deferred frees queued, %.3f backlog waits, %.3f "
					"shootdowns, %.3f full / %.3f range flushes",
					c->name, mode_names[c->mode], (double)c->acc.signals_sent / ops,
					(double)c->acc.grace_periods / ops, (double)c->acc.deferred_frees / ops,
					(double)c->acc.deferred_bound_waits / ops, (double)c->acc.shootdowns / ops,
					(double)c->acc.flush_full / ops, (double)c->acc.flush_range / ops);
			else
				bench_report_note(r,
						  "%s: ours per op: %.3f signals sent, %.3f received, %.3f acks "
						  "deferred, %.3f shootdowns, %.3f full / %.3f range flushes",
						  c->name, (double)c->acc.signals_sent / ops,
						  (double)c->acc.signals_received / ops,
						  (double)c->acc.acks_deferred / ops, (double)c->acc.shootdowns / ops,
						  (double)c->acc.flush_full / ops, (double)c->acc.flush_range / ops);
			if (c->oncpu_unknown)
				bench_report_note(
					r,
					"%s%s: remote during the pieces: ours %.1f loads/us, kernel %.1f loads/us "
					"(on-CPU time unknown: no thread CPU clock); pieces without a load: ours "
					"%" PRIu64 "/%" PRIu64 ", kernel %" PRIu64 "/%" PRIu64,
					warn, c->name, (double)c->loads[0] * 1000.0 / c->piece_ns[0],
					(double)c->loads[1] * 1000.0 / c->piece_ns[1], c->idle_pieces[0], c->pieces[0],
					c->idle_pieces[1], c->pieces[1]);
			else
				bench_report_note(
					r,
					"%s%s: remote during the pieces: ours on CPU %.0f%% of the time, %.1f "
					"loads/us; kernel on CPU %.0f%%, %.1f loads/us (thread CPU clock); "
					"pieces without a load: ours %" PRIu64 "/%" PRIu64 ", kernel %" PRIu64
					"/%" PRIu64,
					warn, c->name, 100.0 * c->oncpu_ns[0] / c->piece_ns[0],
					(double)c->loads[0] * 1000.0 / c->piece_ns[0],
					100.0 * c->oncpu_ns[1] / c->piece_ns[1],
					(double)c->loads[1] * 1000.0 / c->piece_ns[1], c->idle_pieces[0], c->pieces[0],
					c->idle_pieces[1], c->pieces[1]);
			lat[i][0] = lat_summarize(c->lat[0], c->nlat[0]);
			lat[i][1] = lat_summarize(c->lat[1], c->nlat[1]);
			bench_report_note(
				r,
				"%s: per-op ns ours mean %.0f p50 %.0f p90 %.0f p99 %.0f max %.0f | kernel mean "
				"%.0f p50 %.0f p90 %.0f p99 %.0f max %.0f | p50 ratio %.3f",
				c->name, lat[i][0].mean, lat[i][0].p50, lat[i][0].p90, lat[i][0].p99, lat[i][0].max,
				lat[i][1].mean, lat[i][1].p50, lat[i][1].p90, lat[i][1].p99, lat[i][1].max,
				lat[i][0].p50 / lat[i][1].p50);
		}
		for (int i = 0; i < nsweep; i++) {
			const struct sweep_point *pt = &sweep[i];

			bench_report_note(
				r,
				"sweep: %d active remote thread%s (all load P): one-page munmap ns: signal %.0f "
				"(%.2fx kernel, %.2f signals/op), rcu %.0f (%.2fx, %.2f grace periods/op), "
				"rcu_deferred %.0f (%.2fx), kernel %.0f; remotes loading per rep: ours %.1f / %.1f / "
				"%.1f, kernel %.1f; munmaps %" PRIu64 " / %" PRIu64 " / %" PRIu64 " / %" PRIu64,
				pt->remotes, pt->remotes == 1 ? "" : "s", pt->ours_ns[M_SIGNAL],
				pt->ours_ns[M_SIGNAL] / pt->kernel_ns, pt->signals_per_op[M_SIGNAL], pt->ours_ns[M_RCU],
				pt->ours_ns[M_RCU] / pt->kernel_ns, pt->gp_per_op[M_RCU], pt->ours_ns[M_DEFERRED],
				pt->ours_ns[M_DEFERRED] / pt->kernel_ns, pt->kernel_ns,
				(double)pt->ours_active[M_SIGNAL] / o.reps, (double)pt->ours_active[M_RCU] / o.reps,
				(double)pt->ours_active[M_DEFERRED] / o.reps, (double)pt->kernel_active / o.reps,
				pt->ours_ops[M_SIGNAL], pt->ours_ops[M_RCU], pt->ours_ops[M_DEFERRED], pt->kernel_ops);
		}
		if (nsweep && nproc <= 4)
			bench_report_note(r,
					  "sweep: %ld CPUs online: with more threads than cores, the remotes wait "
					  "for the scheduler",
					  nproc);
		bench_report_note(r,
				  "offline: signals sent per operation to an offline CPU: %.4f over %" PRIu64
				  " munmap/mmap/store cycles (%.0f ns each); back online, it faulted on the "
				  "unmapped page (%s)",
				  offline_spo, offline_ops, offline_ns, offline_probe_err == -EFAULT ? "EFAULT" : "?");
		if (offline_spo != 0)
			bench_report_note(r, "FAIL: an offline CPU was sent signals");
		if (rcu_signal_fail)
			bench_report_note(r, "FAIL: an RCU-mode mm sent signals");

		/* "signals": per case, ours' counter deltas over the timed operations */
		f = open_memstream(&s, &len);
		if (!f)
			bench_die("out of memory");
		fputc('{', f);
		for (int i = 0; i < NCASES; i++) {
			const struct sd_case *c = &cases[i];
			double ops = (double)c->ours_ops;
			char *d = bench_stats_json(&c->acc);

			fprintf(f,
				"%s\"%s\":{\"mode\":\"%s\",\"ops\":%" PRIu64
				",\"signals_sent_per_op\":%.4f,\"signals_received_per_op\":"
				"%.4f,\"acks_deferred_per_op\":%.4f,\"shootdowns_per_op\":%.4f"
				",\"grace_periods_per_op\":%.4f,\"deferred_frees_per_op\":%.4f"
				",\"deferred_bound_waits_per_op\":%.4f,\"stats_delta\":%s}",
				i ? "," : "", c->name, mode_names[c->mode], c->ours_ops,
				(double)c->acc.signals_sent / ops, (double)c->acc.signals_received / ops,
				(double)c->acc.acks_deferred / ops, (double)c->acc.shootdowns / ops,
				(double)c->acc.grace_periods / ops, (double)c->acc.deferred_frees / ops,
				(double)c->acc.deferred_bound_waits / ops, d);
			free(d);
		}
		fputc('}', f);
		if (fclose(f) != 0 || !s)
			bench_die("out of memory");
		bench_report_json(r, "signals", s);
		free(s);

		snprintf(buf, sizeof(buf), "%.6g", offline_spo);
		bench_report_json(r, "offline_signals_per_op", buf);
		snprintf(buf, sizeof(buf),
			 "{\"ops\":%" PRIu64 ",\"signals_per_op\":%.6g,\"ns_per_op\":%.1f,\"probe_after_online\":%d}",
			 offline_ops, offline_spo, offline_ns, offline_probe_err);
		bench_report_json(r, "offline", buf);

		/* "remotes": what each case's remotes did during the pieces */
		s = NULL;
		f = open_memstream(&s, &len);
		if (!f)
			bench_die("out of memory");
		fputc('{', f);
		for (int i = 0; i < NCASES; i++) {
			const struct sd_case *c = &cases[i];
			char f0[32], f1[32];

			if (c->oncpu_unknown) {
				snprintf(f0, sizeof(f0), "null");
				snprintf(f1, sizeof(f1), "null");
			} else {
				snprintf(f0, sizeof(f0), "%.3f", c->oncpu_ns[0] / c->piece_ns[0]);
				snprintf(f1, sizeof(f1), "%.3f", c->oncpu_ns[1] / c->piece_ns[1]);
			}
			fprintf(f,
				"%s\"%s\":{\"ours_loads_per_us\":%.2f,\"kernel_loads_per_us\":%.2f,"
				"\"ours_oncpu_fraction\":%s,\"kernel_oncpu_fraction\":%s,"
				"\"ours_idle_pieces\":%" PRIu64 ",\"kernel_idle_pieces\":%" PRIu64
				",\"pieces_per_side\":%" PRIu64 "}",
				i ? "," : "", c->name, (double)c->loads[0] * 1000.0 / c->piece_ns[0],
				(double)c->loads[1] * 1000.0 / c->piece_ns[1], f0, f1, c->idle_pieces[0],
				c->idle_pieces[1], c->pieces[0]);
		}
		fputc('}', f);
		if (fclose(f) != 0 || !s)
			bench_die("out of memory");
		bench_report_json(r, "remotes", s);
		free(s);

		/* "latency_ns": every case's per-operation distribution */
		s = NULL;
		f = open_memstream(&s, &len);
		if (!f)
			bench_die("out of memory");
		fputc('{', f);
		for (int i = 0; i < NCASES; i++)
			fprintf(f,
				"%s\"%s\":{\"ours\":{\"mean\":%.0f,\"p50\":%.0f,\"p90\":%.0f,"
				"\"p99\":%.0f,\"max\":%.0f},\"kernel\":{\"mean\":%.0f,\"p50\":%.0f,"
				"\"p90\":%.0f,\"p99\":%.0f,\"max\":%.0f},\"p50_ratio\":%.4f}",
				i ? "," : "", cases[i].name, lat[i][0].mean, lat[i][0].p50, lat[i][0].p90,
				lat[i][0].p99, lat[i][0].max, lat[i][1].mean, lat[i][1].p50, lat[i][1].p90,
				lat[i][1].p99, lat[i][1].max, lat[i][0].p50 / lat[i][1].p50);
		fputc('}', f);
		if (fclose(f) != 0 || !s)
			bench_die("out of memory");
		bench_report_json(r, "latency_ns", s);
		free(s);

		if (nsweep) {
			/* "sweep_munmap_page": signal mode, as before */
			s = NULL;
			f = open_memstream(&s, &len);
			if (!f)
				bench_die("out of memory");
			fputc('[', f);
			for (int i = 0; i < nsweep; i++)
				fprintf(f,
					"%s{\"remotes\":%d,\"ours_ops\":%" PRIu64 ",\"kernel_ops\":%" PRIu64
					",\"ours_ns\":%.1f,\"kernel_ns\":%.1f,\"ours_signals_per_op\":%.4f"
					",\"ours_remotes_loading_per_rep\":%.2f"
					",\"kernel_remotes_loading_per_rep\":%.2f}",
					i ? "," : "", sweep[i].remotes, sweep[i].ours_ops[M_SIGNAL],
					sweep[i].kernel_ops, sweep[i].ours_ns[M_SIGNAL], sweep[i].kernel_ns,
					sweep[i].signals_per_op[M_SIGNAL],
					(double)sweep[i].ours_active[M_SIGNAL] / o.reps,
					(double)sweep[i].kernel_active / o.reps);
			fputc(']', f);
			if (fclose(f) != 0 || !s)
				bench_die("out of memory");
			bench_report_json(r, "sweep_munmap_page", s);
			free(s);

			/* "sweep_modes": one flat object per mode and point; kernel_ns
			 * is the point's one kernel measurement */
			s = NULL;
			f = open_memstream(&s, &len);
			if (!f)
				bench_die("out of memory");
			fputc('[', f);
			for (int i = 0; i < nsweep; i++)
				for (int mode = 0; mode < NMODES; mode++)
					fprintf(f,
						"%s{\"mode\":\"%s\",\"remotes\":%d,\"ours_ns\":%.1f,\"kernel_ns\":%.1f"
						",\"ratio\":%.4f,\"ours_ops\":%" PRIu64 ",\"kernel_ops\":%" PRIu64
						",\"signals_per_op\":%.4f,\"grace_periods_per_op\":%.4f"
						",\"ours_remotes_loading_per_rep\":%.2f"
						",\"kernel_remotes_loading_per_rep\":%.2f}",
						i || mode ? "," : "", mode_names[mode], sweep[i].remotes,
						sweep[i].ours_ns[mode], sweep[i].kernel_ns,
						sweep[i].ours_ns[mode] / sweep[i].kernel_ns, sweep[i].ours_ops[mode],
						sweep[i].kernel_ops, sweep[i].signals_per_op[mode],
						sweep[i].gp_per_op[mode], (double)sweep[i].ours_active[mode] / o.reps,
						(double)sweep[i].kernel_active / o.reps);
			fputc(']', f);
			if (fclose(f) != 0 || !s)
				bench_die("out of memory");
			bench_report_json(r, "sweep_modes", s);
			free(s);
		}

		/* "stats": the signal-mode mm's totals, as before; "stats_by_mode": every mm's */
		s = NULL;
		f = open_memstream(&s, &len);
		if (!f)
			bench_die("out of memory");
		fputc('{', f);
		for (int mode = 0; mode < NMODES; mode++) {
			struct smmu_stats tot;
			char *d;

			BENCH_CHECK(smmu_stats_get(x.m[mode].mm, &tot));
			d = bench_stats_json(&tot);
			if (mode == M_SIGNAL)
				bench_report_json(r, "stats", d);
			fprintf(f, "%s\"%s\":%s", mode ? "," : "", mode_names[mode], d);
			free(d);
		}
		fputc('}', f);
		if (fclose(f) != 0 || !s)
			bench_die("out of memory");
		bench_report_json(r, "stats_by_mode", s);
		free(s);
	}

	/* --- teardown, checked: the main thread leaves, then each mm and pool */
	main_use(&x, -1);
	for (int mode = 0; mode < NMODES; mode++) {
		BENCH_CHECK(smmu_munmap(x.m[mode].mm, x.m[mode].area, AREA_PAGES * PAGE));
		BENCH_CHECK(smmu_mm_destroy(x.m[mode].mm));
		BENCH_CHECK(smmu_pool_destroy(x.m[mode].pool));
	}
	if (munmap(x.host_area, AREA_PAGES * PAGE) != 0)
		bench_die("munmap: %s", strerror(errno));

	for (int i = 0; i < NCASES; i++)
		for (int side = 0; side < 2; side++)
			free(cases[i].lat[side]);
	bench_report_finish(r);
	if (offline_spo != 0)
		bench_die("an offline CPU was sent %.4f signals per operation (must be 0)", offline_spo);
	if (rcu_signal_fail)
		bench_die("an RCU-mode mm sent shootdown signals (must be 0)");
	return 0;
}
