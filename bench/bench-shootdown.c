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
 * per munmap / mprotect(READ) in the hot cases, none otherwise.
 *
 * Then, without a ratio:
 *   sweep    one-page munmap latency (munmap timed alone) against the
 *            number of active remote threads (1, 2, 4), ours and kernel,
 *            interleaved, medians (--no-sweep skips it; with more remote
 *            threads than cores the numbers are mostly the scheduler's).
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
#define MAX_REMOTES 4
#define NCASES 5

_Static_assert(PAGE == BENCH_REMOTE_PAGE, "a remote's pages are the area's pages");
_Static_assert(TARGET_PAGE >= BENCH_REMOTE_PAGES && TARGET_PAGE < AREA_PAGES, "P is in the area, not a remote's page");

/* ------------------------------------------------------------ context */

struct ctx {
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu; /* the main thread */
	smmu_addr_t area, p;  /* ours */
	char *host_area, *host_p;
	uint64_t seq[2]; /* the value last stored to P: [0] ours, [1] the kernel's */
	struct bench_remote cpu_remote[MAX_REMOTES], host_remote[MAX_REMOTES];
};

enum case_kind { K_MUNMAP, K_MPROTECT, K_UPGRADE };

/* [0] ours, [1] the kernel's */
struct sd_case {
	struct ctx *x;
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
	struct bench_remote *r = &x->cpu_remote[0];
	uint64_t n = piece_len(c, k), t0, t1, v;
	struct piece_mark m0, m1;
	struct smmu_stats s0, s1;
	double ns = 0;
	smmu_addr_t got;

	r->touch = c->hot ? x->p : 0; /* parked: it reads this after it is woken */
	bench_remote_run(r);
	piece_mark(r, &m0);
	switch (c->kind) {
	case K_MUNMAP:
		BENCH_CHECK(smmu_stats_get(x->mm, &s0));
		for (uint64_t i = 0; i < n; i++) {
			t0 = bench_now_ns();
			BENCH_CHECK(smmu_munmap(x->mm, x->p, PAGE));
			BENCH_CHECK(
				smmu_mmap(x->mm, x->p, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got));
			if (got != x->p)
				bench_die("%s: smmu_mmap FIXED at %#" PRIx64 " gave %#" PRIx64, c->name, x->p, got);
			smmu_store64(x->cpu, x->p, ++x->seq[0]);
			t1 = bench_now_ns();
			ns += (double)(t1 - t0);
			lat_add(c, 0, t0, t1);
		}
		BENCH_CHECK(smmu_stats_get(x->mm, &s1));
		bench_stats_accumulate(&c->acc, &s0, &s1);
		break;
	case K_MPROTECT:
		for (uint64_t i = 0; i < n; i++) {
			BENCH_CHECK(smmu_stats_get(x->mm, &s0));
			t0 = bench_now_ns();
			BENCH_CHECK(smmu_mprotect(x->mm, x->p, PAGE, SMMU_PROT_READ));
			t1 = bench_now_ns();
			BENCH_CHECK(smmu_stats_get(x->mm, &s1));
			bench_stats_accumulate(&c->acc, &s0, &s1);
			ns += (double)(t1 - t0);
			lat_add(c, 0, t0, t1);
			BENCH_CHECK(smmu_mprotect(x->mm, x->p, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE));
			smmu_store64(x->cpu, x->p, ++x->seq[0]);
		}
		break;
	case K_UPGRADE:
		for (uint64_t i = 0; i < n; i++) {
			BENCH_CHECK(smmu_mprotect(x->mm, x->p, PAGE, SMMU_PROT_READ));
			if ((v = smmu_load64(x->cpu, x->p)) != x->seq[0])
				bench_die("%s: P read %#" PRIx64 " after mprotect(READ), stored %#" PRIx64, c->name, v,
					  x->seq[0]);
			BENCH_CHECK(smmu_stats_get(x->mm, &s0));
			t0 = bench_now_ns();
			BENCH_CHECK(smmu_mprotect(x->mm, x->p, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE));
			t1 = bench_now_ns();
			BENCH_CHECK(smmu_stats_get(x->mm, &s1));
			bench_stats_accumulate(&c->acc, &s0, &s1);
			ns += (double)(t1 - t0);
			lat_add(c, 0, t0, t1);
			smmu_store64(x->cpu, x->p, ++x->seq[0]);
		}
		break;
	}
	piece_mark(r, &m1);
	bench_remote_park(r);
	remote_account(c, 0, &m0, &m1);
	c->ours_ops += n;
	if ((v = smmu_load64(x->cpu, x->p)) != x->seq[0])
		bench_die("%s: P read %#" PRIx64 ", last stored %#" PRIx64 " (the library returned a wrong value)",
			  c->name, v, x->seq[0]);
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
			*p = ++x->seq[1];
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
			*p = ++x->seq[1];
		}
		break;
	case K_UPGRADE:
		for (uint64_t i = 0; i < n; i++) {
			int rc;

			if (mprotect(x->host_p, PAGE, PROT_READ) != 0)
				bench_die("%s: mprotect(READ): %s", c->name, strerror(errno));
			if ((v = *p) != x->seq[1])
				bench_die("%s: host P read %#" PRIx64 ", stored %#" PRIx64, c->name, v, x->seq[1]);
			t0 = bench_now_ns();
			rc = mprotect(x->host_p, PAGE, PROT_READ | PROT_WRITE);
			t1 = bench_now_ns();
			if (rc != 0)
				bench_die("%s: mprotect(RW): %s", c->name, strerror(errno));
			ns += (double)(t1 - t0);
			lat_add(c, 1, t0, t1);
			*p = ++x->seq[1];
		}
		break;
	}
	piece_mark(r, &m1);
	bench_remote_park(r);
	remote_account(c, 1, &m0, &m1);
	if ((v = *p) != x->seq[1])
		bench_die("%s: host P read %#" PRIx64 ", last stored %#" PRIx64, c->name, v, x->seq[1]);
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
 * One-page munmap latency (the munmap timed alone; mmap and a store
 * between, untimed) with nr remotes loading.  A side's repetition stops
 * after `iters` munmaps or, past SWEEP_MIN_OPS, once it has run for
 * `budget_ns`: with more remotes than cores, ours waits for each target to
 * be scheduled and one munmap can take milliseconds.
 */
#define SWEEP_MIN_OPS 5

struct sweep_point {
	int remotes;
	double ours_ns, kernel_ns;           /* medians over reps of each rep's mean, ns per munmap */
	double signals_per_op;               /* ours */
	uint64_t ours_ops, kernel_ops;       /* over all reps */
	uint64_t ours_active, kernel_active; /* remotes that loaded during a rep's timed part, summed */
};

struct sweep_side {
	struct ctx *x;
	struct sweep_point *pt;
	uint64_t iters, budget_ns;
	struct smmu_stats acc; /* ours */
};

/* How many of the nr remotes made loads since l0, added to *sum. */
static void sweep_active(struct bench_remote *rs, int nr, const uint64_t *l0, uint64_t *sum)
{
	int n = 0;

	for (int i = 0; i < nr; i++)
		n += bench_remote_loads(&rs[i]) != l0[i];
	*sum += (uint64_t)n;
}

/* ns per munmap of one repetition of ours */
static double sweep_ours(struct sweep_side *sw)
{
	struct ctx *x = sw->x;
	int nr = sw->pt->remotes;
	struct smmu_stats s0, s1;
	double ns = 0;
	smmu_addr_t got;
	uint64_t l0[MAX_REMOTES], t0, t1, start, n = 0;

	for (int i = 0; i < nr; i++)
		bench_remote_run(&x->cpu_remote[i]);
	for (int i = 0; i < nr; i++)
		l0[i] = bench_remote_loads(&x->cpu_remote[i]);
	start = bench_now_ns();
	while (n < sw->iters && (n < SWEEP_MIN_OPS || bench_now_ns() - start < sw->budget_ns)) {
		BENCH_CHECK(smmu_stats_get(x->mm, &s0));
		t0 = bench_now_ns();
		BENCH_CHECK(smmu_munmap(x->mm, x->p, PAGE));
		t1 = bench_now_ns();
		BENCH_CHECK(smmu_stats_get(x->mm, &s1));
		bench_stats_accumulate(&sw->acc, &s0, &s1);
		ns += (double)(t1 - t0);
		n++;
		BENCH_CHECK(smmu_mmap(x->mm, x->p, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got));
		if (got != x->p)
			bench_die("sweep: smmu_mmap FIXED at %#" PRIx64 " gave %#" PRIx64, x->p, got);
		smmu_store64(x->cpu, x->p, ++x->seq[0]);
	}
	sweep_active(x->cpu_remote, nr, l0, &sw->pt->ours_active);
	for (int i = 0; i < nr; i++)
		bench_remote_park(&x->cpu_remote[i]);
	if (smmu_load64(x->cpu, x->p) != x->seq[0])
		bench_die("sweep: P does not hold the value last stored");
	sw->pt->ours_ops += n;
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
		*p = ++x->seq[1];
	}
	sweep_active(x->host_remote, nr, l0, &sw->pt->kernel_active);
	for (int i = 0; i < nr; i++)
		bench_remote_park(&x->host_remote[i]);
	if (*p != x->seq[1])
		bench_die("sweep: host P does not hold the value last stored");
	sw->pt->kernel_ops += n;
	return ns / (double)n;
}

static void sweep_run(struct ctx *x, struct sweep_point *pt, int reps, uint64_t iters, uint64_t budget_ns)
{
	double *o = calloc((size_t)reps, sizeof(double)), *k = calloc((size_t)reps, sizeof(double));
	struct sweep_side sw;

	if (!o || !k)
		bench_die("out of memory");
	memset(&sw, 0, sizeof(sw));
	sw.x = x;
	sw.pt = pt;
	sw.iters = iters;
	sw.budget_ns = budget_ns;
	for (int i = 0; i < reps; i++) {
		if ((i & 1) == 0) {
			o[i] = sweep_ours(&sw);
			k[i] = sweep_kernel(&sw);
		} else {
			k[i] = sweep_kernel(&sw);
			o[i] = sweep_ours(&sw);
		}
	}
	pt->ours_ns = bench_median(o, (size_t)reps);
	pt->kernel_ns = bench_median(k, (size_t)reps);
	pt->signals_per_op = (double)sw.acc.signals_sent / (double)pt->ours_ops;
	if (!pt->ours_active || !pt->kernel_active)
		bench_die("sweep, %d remotes: no %s remote made a load during any timed part: not running", pt->remotes,
			  pt->ours_active ? "kernel" : "ours");
	free(o);
	free(k);
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
		s->iters = bench_parse_size(opt, val);
		if (s->iters < CHUNKS)
			bench_die("--iters must be at least %d", CHUNKS);
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
	struct smmu_pool_config pc;
	struct ctx x;
	struct sd_case cases[NCASES];
	static const int sweep_remotes[] = {1, 2, 4};
	struct sweep_point sweep[3] = {{0}};
	int nsweep = 0;
	uint64_t iters, sweep_iters, offline_ops;
	long host_page = sysconf(_SC_PAGESIZE), nproc = sysconf(_SC_NPROCESSORS_ONLN);
	char thp[32], buf[4096];
	double offline_spo, offline_ns;
	int offline_probe_err, ncpus_allowed;

	bench_parse_args(
		&o, argc, argv, "bench-shootdown",
		"  --iters N         timed operations per case, repetition and side (default 4000; quick 400)\n"
		"  --sweep-iters N   munmaps per sweep point, repetition and side (default 300; quick 50;\n"
		"                    a side stops early after 150 ms, quick 40 ms)\n"
		"  --no-sweep        skip the sweep over 1, 2, 4 remote threads",
		sd_opt, &so);
	if (host_page != PAGE)
		bench_die("host page size is %ld, this bench compares 4 KiB pages", host_page);
	iters = so.iters ? so.iters : o.quick ? 400 : 4000;
	sweep_iters = so.sweep_iters ? so.sweep_iters : o.quick ? 50 : 300;
	offline_ops = o.quick ? 2000 : 20000;

	memset(&x, 0, sizeof(x));
	ncpus_allowed = bench_pin_main();
	r = bench_report_new("bench-shootdown", &o);
	bench_thp_mode(thp, sizeof(thp));
	bench_report_config_u64(r, "iters", iters);
	bench_report_config_u64(r, "chunks_per_rep", CHUNKS);
	bench_report_config_u64(r, "area_pages", AREA_PAGES);
	bench_report_config_str(r, "layout", "remote loads pages 0..3 of the area; P is page 6");
	bench_report_config_str(r, "ours_remote", "registered CPU of the same mm, smmu_load64 loop");
	bench_report_config_str(r, "kernel_remote", "plain pthread, relaxed 64-bit load loop on host pages");
	bench_report_config_u64(r, "signal", (uint64_t)smmu_shootdown_signal());
	bench_report_config_u64(r, "sweep_iters", so.no_sweep ? 0 : sweep_iters);
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

	/* --- ours: pool, mm, the main CPU, the area */
	memset(&pc, 0, sizeof(pc));
	pc.size = 16ull << 20;
	pc.page_size = PAGE;
	BENCH_CHECK(smmu_pool_create(&pc, &x.pool));
	BENCH_CHECK(smmu_mm_create(x.pool, &x.mm));
	BENCH_CHECK(smmu_cpu_register(x.mm, &x.cpu));
	BENCH_CHECK(
		smmu_mmap(x.mm, 0, AREA_PAGES * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE, &x.area));
	for (unsigned k = 0; k < AREA_PAGES; k++)
		smmu_store64(x.cpu, x.area + (smmu_addr_t)k * PAGE, bench_remote_want(k));
	x.p = x.area + (smmu_addr_t)TARGET_PAGE * PAGE;
	smmu_store64(x.cpu, x.p, 0); /* P holds x.seq[0] */

	/* --- the kernel: the same area in the process */
	x.host_area = mmap(NULL, AREA_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
			   -1, 0);
	if (x.host_area == MAP_FAILED)
		bench_die("mmap(%u bytes): %s", AREA_PAGES * PAGE, strerror(errno));
	for (unsigned k = 0; k < AREA_PAGES; k++)
		*(volatile uint64_t *)(x.host_area + (size_t)k * PAGE) = bench_remote_want(k);
	x.host_p = x.host_area + (size_t)TARGET_PAGE * PAGE;
	*(volatile uint64_t *)x.host_p = 0; /* P holds x.seq[1] */

	/* --- remotes, all parked */
	for (int i = 0; i < MAX_REMOTES; i++) {
		char name[32];

		snprintf(name, sizeof(name), "cpu%d", i);
		bench_remote_start(&x.cpu_remote[i], BENCH_REMOTE_CPU, name, x.mm, x.area, 0, NULL,
				   bench_remote_cpu(i));
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
		} defs[NCASES] = {
			{"munmap_page_remote_vs_kernel", "kernel munmap", K_MUNMAP, false},
			{"mprotect_page_remote_vs_kernel", "kernel mprotect", K_MPROTECT, false},
			{"mprotect_upgrade_vs_kernel", "kernel mprotect", K_UPGRADE, false},
			{"munmap_page_remote_hot_vs_kernel", "kernel munmap", K_MUNMAP, true},
			{"mprotect_page_remote_hot_vs_kernel", "kernel mprotect", K_MPROTECT, true},
		};

		for (int i = 0; i < NCASES; i++) {
			struct bench_case *bc;

			memset(&cases[i], 0, sizeof(cases[i]));
			cases[i].x = &x;
			cases[i].kind = defs[i].kind;
			cases[i].hot = defs[i].hot;
			cases[i].name = defs[i].name;
			cases[i].iters = iters;
			cases[i].caplat = (size_t)(iters * (uint64_t)o.reps);
			for (int side = 0; side < 2; side++)
				if (!(cases[i].lat[side] = calloc(cases[i].caplat, sizeof(double))))
					bench_die("out of memory");
			bc = bench_report_case(r, defs[i].name, defs[i].peer, (double)iters,
					       defs[i].kind == K_MUNMAP ? "iteration" : "call");
			bench_case_run_chunked(bc, o.reps, CHUNKS, ours_piece, kernel_piece, &cases[i]);
			remote_verdict(&cases[i]);
		}
	}

	/* --- the sweep */
	if (!so.no_sweep) {
		for (int i = 0; i < 3; i++) {
			sweep[i].remotes = sweep_remotes[i];
			sweep_run(&x, &sweep[i], o.reps, sweep_iters, o.quick ? 40000000ull : 150000000ull);
			nsweep++;
		}
	}

	/* --- the remotes leave: the offline test has no other CPU */
	for (int i = 0; i < MAX_REMOTES; i++) {
		bench_remote_stop(&x.cpu_remote[i]);
		bench_remote_stop(&x.host_remote[i]);
	}

	/* --- offline: one other CPU, offline and asleep */
	{
		struct bench_remote off;
		struct smmu_stats s0, s1;
		uint64_t t0, t1, seq = 0;
		smmu_addr_t got;

		bench_remote_start(&off, BENCH_REMOTE_OFFLINE, "offline", x.mm, x.area, x.p, NULL, bench_remote_cpu(0));
		BENCH_CHECK(smmu_stats_get(x.mm, &s0));
		t0 = bench_now_ns();
		for (uint64_t i = 0; i < offline_ops; i++) {
			BENCH_CHECK(smmu_munmap(x.mm, x.p, PAGE));
			BENCH_CHECK(smmu_mmap(x.mm, x.p, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got));
			if (got != x.p)
				bench_die("offline: smmu_mmap FIXED at %#" PRIx64 " gave %#" PRIx64, x.p, got);
			smmu_store64(x.cpu, x.p, ++seq);
		}
		t1 = bench_now_ns();
		BENCH_CHECK(smmu_stats_get(x.mm, &s1));
		if (smmu_load64(x.cpu, x.p) != seq)
			bench_die("offline: P does not hold the value last stored");
		offline_spo = (double)(s1.signals_sent - s0.signals_sent) / (double)offline_ops;
		offline_ns = (double)(t1 - t0) / (double)offline_ops;
		/* now P goes away; the CPU that still has it in its TLB comes back */
		BENCH_CHECK(smmu_munmap(x.mm, x.p, PAGE));
		bench_remote_stop(&off);
		offline_probe_err = off.probe_err;
		if (off.probe_err != -EFAULT)
			bench_die("offline: after coming back online, the CPU's smmu_try_load64 of the unmapped page "
				  "returned %d (value %#" PRIx64 "), expected %d (-EFAULT): a stale TLB entry survived",
				  off.probe_err, off.probe_val, -EFAULT);
		BENCH_CHECK(smmu_mmap(x.mm, x.p, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got));
	}

	/* --- notes and JSON */
	{
		FILE *f;
		char *s = NULL;
		size_t len = 0;
		struct smmu_stats tot;
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

			bench_report_note(r,
					  "%s: ours per op: %.3f signals sent, %.3f received, %.3f acks deferred, "
					  "%.3f shootdowns, %.3f full / %.3f range flushes",
					  c->name, (double)c->acc.signals_sent / ops,
					  (double)c->acc.signals_received / ops, (double)c->acc.acks_deferred / ops,
					  (double)c->acc.shootdowns / ops, (double)c->acc.flush_full / ops,
					  (double)c->acc.flush_range / ops);
			if (c->oncpu_unknown)
				bench_report_note(
					r,
					"%s: remote during the pieces: ours %.1f loads/us, kernel %.1f loads/us "
					"(on-CPU time unknown: no thread CPU clock); pieces without a load: ours "
					"%" PRIu64 "/%" PRIu64 ", kernel %" PRIu64 "/%" PRIu64,
					c->name, (double)c->loads[0] * 1000.0 / c->piece_ns[0],
					(double)c->loads[1] * 1000.0 / c->piece_ns[1], c->idle_pieces[0], c->pieces[0],
					c->idle_pieces[1], c->pieces[1]);
			else
				bench_report_note(r,
						  "%s: remote during the pieces: ours on CPU %.0f%% of the time, %.1f "
						  "loads/us; kernel on CPU %.0f%%, %.1f loads/us (thread CPU clock); "
						  "pieces without a load: ours %" PRIu64 "/%" PRIu64 ", kernel %" PRIu64
						  "/%" PRIu64,
						  c->name, 100.0 * c->oncpu_ns[0] / c->piece_ns[0],
						  (double)c->loads[0] * 1000.0 / c->piece_ns[0],
						  100.0 * c->oncpu_ns[1] / c->piece_ns[1],
						  (double)c->loads[1] * 1000.0 / c->piece_ns[1], c->idle_pieces[0],
						  c->pieces[0], c->idle_pieces[1], c->pieces[1]);
			if (c->idle_pieces[0] || c->idle_pieces[1])
				bench_report_note(r,
						  "WARNING: %s: a remote made no load during some timed pieces "
						  "(descheduled?)",
						  c->name);
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
		for (int i = 0; i < nsweep; i++)
			bench_report_note(
				r,
				"sweep: %d active remote thread%s: one-page munmap ours %.0f ns, kernel %.0f "
				"ns (%.2fx), ours %.2f signals/op; remotes that loaded during the timed "
				"part: ours %.1f, kernel %.1f (mean per rep); %" PRIu64 " / %" PRIu64 " munmaps",
				sweep[i].remotes, sweep[i].remotes == 1 ? "" : "s", sweep[i].ours_ns,
				sweep[i].kernel_ns, sweep[i].ours_ns / sweep[i].kernel_ns, sweep[i].signals_per_op,
				(double)sweep[i].ours_active / o.reps, (double)sweep[i].kernel_active / o.reps,
				sweep[i].ours_ops, sweep[i].kernel_ops);
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
				"%s\"%s\":{\"ops\":%" PRIu64
				",\"signals_sent_per_op\":%.4f,\"signals_received_per_op\":"
				"%.4f,\"acks_deferred_per_op\":%.4f,\"shootdowns_per_op\":%.4f,\"stats_delta\":%s}",
				i ? "," : "", c->name, c->ours_ops, (double)c->acc.signals_sent / ops,
				(double)c->acc.signals_received / ops, (double)c->acc.acks_deferred / ops,
				(double)c->acc.shootdowns / ops, d);
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

		{
			size_t n = 0;

			n += (size_t)snprintf(buf + n, sizeof(buf) - n, "{");
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
				n += (size_t)snprintf(
					buf + n, sizeof(buf) - n,
					"%s\"%s\":{\"ours_loads_per_us\":%.2f,\"kernel_loads_per_us\":%.2f,"
					"\"ours_oncpu_fraction\":%s,\"kernel_oncpu_fraction\":%s,"
					"\"ours_idle_pieces\":%" PRIu64 ",\"kernel_idle_pieces\":%" PRIu64
					",\"pieces_per_side\":%" PRIu64 "}",
					i ? "," : "", c->name, (double)c->loads[0] * 1000.0 / c->piece_ns[0],
					(double)c->loads[1] * 1000.0 / c->piece_ns[1], f0, f1, c->idle_pieces[0],
					c->idle_pieces[1], c->pieces[0]);
			}
			snprintf(buf + n, sizeof(buf) - n, "}");
			bench_report_json(r, "remotes", buf);
		}
		{
			size_t n = 0;

			n += (size_t)snprintf(buf + n, sizeof(buf) - n, "{");
			for (int i = 0; i < 3; i++)
				n += (size_t)snprintf(
					buf + n, sizeof(buf) - n,
					"%s\"%s\":{\"ours\":{\"mean\":%.0f,\"p50\":%.0f,\"p90\":%.0f,"
					"\"p99\":%.0f,\"max\":%.0f},\"kernel\":{\"mean\":%.0f,\"p50\":%.0f,"
					"\"p90\":%.0f,\"p99\":%.0f,\"max\":%.0f},\"p50_ratio\":%.4f}",
					i ? "," : "", cases[i].name, lat[i][0].mean, lat[i][0].p50, lat[i][0].p90,
					lat[i][0].p99, lat[i][0].max, lat[i][1].mean, lat[i][1].p50, lat[i][1].p90,
					lat[i][1].p99, lat[i][1].max, lat[i][0].p50 / lat[i][1].p50);
			snprintf(buf + n, sizeof(buf) - n, "}");
			bench_report_json(r, "latency_ns", buf);
		}

		if (nsweep) {
			size_t n = 0;

			n += (size_t)snprintf(buf + n, sizeof(buf) - n, "[");
			for (int i = 0; i < nsweep; i++)
				n += (size_t)snprintf(
					buf + n, sizeof(buf) - n,
					"%s{\"remotes\":%d,\"ours_ops\":%" PRIu64 ",\"kernel_ops\":%" PRIu64
					",\"ours_ns\":%.1f,\"kernel_ns\":%.1f,\"ours_signals_per_op\":%.4f"
					",\"ours_remotes_loading_per_rep\":%.2f"
					",\"kernel_remotes_loading_per_rep\":%.2f}",
					i ? "," : "", sweep[i].remotes, sweep[i].ours_ops, sweep[i].kernel_ops,
					sweep[i].ours_ns, sweep[i].kernel_ns, sweep[i].signals_per_op,
					(double)sweep[i].ours_active / o.reps, (double)sweep[i].kernel_active / o.reps);
			snprintf(buf + n, sizeof(buf) - n, "]");
			bench_report_json(r, "sweep_munmap_page", buf);
		}

		BENCH_CHECK(smmu_stats_get(x.mm, &tot));
		s = bench_stats_json(&tot);
		bench_report_json(r, "stats", s);
		free(s);
	}

	/* --- teardown, checked */
	BENCH_CHECK(smmu_munmap(x.mm, x.area, AREA_PAGES * PAGE));
	BENCH_CHECK(smmu_cpu_unregister(x.cpu));
	BENCH_CHECK(smmu_mm_destroy(x.mm));
	BENCH_CHECK(smmu_pool_destroy(x.pool));
	if (munmap(x.host_area, AREA_PAGES * PAGE) != 0)
		bench_die("munmap: %s", strerror(errno));

	for (int i = 0; i < 3; i++)
		for (int side = 0; side < 2; side++)
			free(cases[i].lat[side]);
	bench_report_finish(r);
	if (offline_spo != 0)
		bench_die("an offline CPU was sent %.4f signals per operation (must be 0)", offline_spo);
	return 0;
}
