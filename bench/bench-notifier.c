/* SPDX-License-Identifier: MIT */
/*
 * bench-notifier: what MMU notifiers add to a munmap, against the kernel's
 * munmap of the same number of touched host pages in the same run.
 *
 * Four address spaces (one pool), identical but for their subscriptions:
 *   n0    none;
 *   n1    one smmu_notifier_register subscriber;
 *   n8    eight of them;
 *   ival  one smmu_interval_notifier_insert subscription over the 64 pages
 *         the cases unmap (so it overlaps every range unmapped).
 * A plain subscriber is a small secondary TLB: 8 entries {address, host
 * pointer}; invalidate_range_start and invalidate_range_end count,
 * invalidate_secondary_tlbs counts and clears the entries that fall in the
 * range.  The interval subscriber keeps the same 8-entry mirror under its
 * own mutex; its invalidate takes the mutex, calls smmu_interval_set_seq,
 * clears the entries in the range and drops the mutex.
 *
 * One iteration of ours (the main thread is a registered CPU of the mm):
 *   untimed: smmu_mmap the range (1 or 64 pages, read-write,
 *            FIXED_NOREPLACE at the same address every time), one
 *            smmu_store64 per page (a demand-zero fault each), and the
 *            secondary-TLB fill: smmu_mm_translate of the first
 *            min(pages, 8) pages into every subscriber's entries (the
 *            interval subscriber fills by its protocol: read_begin,
 *            translate, read_retry under its mutex, publish).  The
 *            translates are made in n0 too (into a dummy array), so that
 *            the four mms differ only in what munmap calls;
 *   timed:   smmu_munmap of the range;
 *   untimed: check that every subscriber's entries were cleared (and that
 *            the interval fill's read_retry now says "retry").
 * The kernel: mmap(MAP_FIXED) of the same number of pages into a PROT_NONE
 * reservation (so that the timed munmap removes one whole VMA between two
 * PROT_NONE ones: no split, no merge, no page-table page freed - ours
 * keeps another mapping in the same leaf table for the same reason), one
 * 64-bit store per page (a page fault each), untimed; munmap, timed.
 *
 * Groups of four cases, one per mm (n0, n1, n8, ival), with the kernel as
 * the peer of each:
 *   munmap1_*          one page, no other thread running;
 *   munmap64_*         64 pages (a full flush: more than 33 pages);
 *   munmap1_remote_*   one page with one other CPU running: ours, a
 *                      thread registered as a CPU of the same mm loads
 *                      its own 4 pages in a loop and also the first page of
 *                      the range every 8th load (so it holds a TLB entry
 *                      for it and every munmap must signal it); the main
 *                      thread waits after the setup until it has done that
 *                      again (16 more loads).  The kernel, a plain thread
 *                      loads 4 other pages of the process (the kernel
 *                      sends its IPI to a running thread of the mm whatever
 *                      it touched); the main thread waits for 16 more loads
 *                      of it too.  Each side's remote runs only during its
 *                      own pieces, pinned to another CPU than the main
 *                      thread.
 *   munmap64_remote_*  the same with 64 pages (the remote holds an entry
 *                      for the first of them: one signal per munmap, as
 *                      for 64 entries).
 *
 * Interleaving: a repetition is CHUNKS pieces per side; in each piece the
 * four mms of the group run in rotating order, each as an ours piece and a
 * kernel piece in alternating order.  So the four cases of a group see the
 * same machine, and "added" - a case's median minus the n0 case's, both
 * sides - is a fair difference; the kernel's difference (the kernel does
 * the same work in all four) is the noise floor to read it against.
 *
 * Every munmap is timed on its own; the case time is their sum (the table)
 * and the notes give the per-munmap median (p50) too, which a few
 * descheduled munmaps on a shared machine do not move.  The library's
 * counters are read around each piece (nothing but the munmaps flushes or
 * signals in it).  The bench fails if a subscriber missed a callback or an
 * entry was not cleared.
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
#define MAX_PAGES 64            /* the largest range unmapped */
#define MAX_SUBS 8              /* plain subscribers of n8 */
#define SUB_ENTRIES 8           /* entries of a subscriber's secondary TLB */
#define CHUNKS 8                /* timed pieces per repetition and side */
#define REMOTE_WAIT 16          /* loads a remote makes after the setup before the munmap (two touches) */
#define OURS_BASE 0x40000000ull /* 2 MiB-aligned: the remote's area; the range is RANGE_OFF above */
#define RANGE_OFF (8ull * PAGE)
#define NO_ADDR UINT64_MAX
#define WAIT_LIMIT_NS (10ull * 1000000000ull)

_Static_assert(PAGE == BENCH_REMOTE_PAGE, "the remote's pages are pages");
_Static_assert(RANGE_OFF >= BENCH_REMOTE_PAGES * PAGE, "the range is not the remote's area");
_Static_assert(RANGE_OFF + MAX_PAGES * PAGE <= (2ull << 20), "area and range share one leaf table");

/* ------------------------------------------------------------ subscribers */

struct sec_entry {
	smmu_addr_t va; /* NO_ADDR: empty */
	const void *host;
};

/* A plain subscriber: a small secondary TLB and its callback counts. */
struct sub {
	_Alignas(64) uint64_t starts, secondaries, ends, releases;
	uint64_t cleared; /* entries dropped by invalidate_secondary_tlbs */
	uint64_t bad;     /* callbacks with an unexpected range */
	struct sec_entry ent[SUB_ENTRIES];
};

static int sub_start(void *arg, const struct smmu_notify_range *r)
{
	struct sub *s = arg;

	s->starts++;
	if (r->event != SMMU_NOTIFY_UNMAP || !(r->flags & SMMU_NOTIFY_BLOCKABLE) || r->start >= r->end)
		s->bad++;
	return 0;
}

static void sub_secondary(void *arg, const struct smmu_notify_range *r)
{
	struct sub *s = arg;

	s->secondaries++;
	for (int i = 0; i < SUB_ENTRIES; i++) {
		if (s->ent[i].va >= r->start && s->ent[i].va < r->end) {
			s->ent[i].va = NO_ADDR;
			s->ent[i].host = NULL;
			s->cleared++;
		}
	}
}

static void sub_end(void *arg, const struct smmu_notify_range *r)
{
	struct sub *s = arg;

	s->ends++;
	if (r->start >= r->end)
		s->bad++;
}

static void sub_release(void *arg, struct smmu_mm *mm)
{
	struct sub *s = arg;

	(void)mm;
	s->releases++;
}

static const struct smmu_notifier_ops sub_ops = {
	.invalidate_range_start = sub_start,
	.invalidate_secondary_tlbs = sub_secondary,
	.invalidate_range_end = sub_end,
	.release = sub_release,
};

/* The interval subscriber: a mirror under its own mutex. */
struct ival {
	pthread_mutex_t lock;
	struct smmu_interval_notifier *sub;
	unsigned long seq; /* what the last fill's read_begin returned */
	uint64_t invalidations, cleared, refused, bad;
	struct sec_entry ent[SUB_ENTRIES];
};

static bool ival_invalidate(struct smmu_interval_notifier *sub, void *arg, const struct smmu_notify_range *r,
			    unsigned long cur_seq)
{
	struct ival *iv = arg;

	if (r->flags & SMMU_NOTIFY_BLOCKABLE) {
		pthread_mutex_lock(&iv->lock);
	} else if (pthread_mutex_trylock(&iv->lock) != 0) {
		iv->refused++;
		return false;
	}
	smmu_interval_set_seq(sub, cur_seq);
	iv->invalidations++;
	if (r->event != SMMU_NOTIFY_UNMAP)
		iv->bad++;
	for (int i = 0; i < SUB_ENTRIES; i++) {
		if (iv->ent[i].va >= r->start && iv->ent[i].va < r->end) {
			iv->ent[i].va = NO_ADDR;
			iv->ent[i].host = NULL;
			iv->cleared++;
		}
	}
	pthread_mutex_unlock(&iv->lock);
	return true;
}

static const struct smmu_interval_notifier_ops ival_ops = {
	.invalidate = ival_invalidate,
};

/* ------------------------------------------------------------ context */

enum { C_N0, C_N1, C_N8, C_IVAL, NCONF };

static const char *const conf_tags[NCONF] = {"n0", "n1", "n8", "ival"};
static const int conf_subs[NCONF] = {0, 1, MAX_SUBS, 0};

/* One mm and its subscriptions. */
struct conf {
	struct smmu_mm *mm;
	smmu_addr_t area, range;
	int nsubs;
	bool ival;
	struct sub *subs; /* nsubs of them */
	struct smmu_notifier *handles[MAX_SUBS];
	struct ival iv;
	struct sec_entry dummy[SUB_ENTRIES]; /* n0's fill goes here */
	struct bench_remote remote;          /* a CPU of this mm */
	uint64_t seq;                        /* stamp of the last fill */
};

struct ctx {
	struct smmu_pool *pool;
	struct conf conf[NCONF];
	int cur;              /* the conf whose mm the main thread is a CPU of, -1: none */
	struct smmu_cpu *cpu; /* the main thread's CPU of conf[cur] */
	char *host_resv, *host_range;
	uint64_t *host_area;
	struct bench_remote host_remote;
	uint64_t host_seq;
};

/* The main thread becomes a CPU of conf[c]'s mm (-1: of none); a thread is
 * a CPU of one mm at a time. */
static void main_use(struct ctx *x, int c)
{
	if (x->cur == c)
		return;
	if (x->cur >= 0) {
		BENCH_CHECK(smmu_cpu_unregister(x->cpu));
		x->cpu = NULL;
		x->cur = -1;
	}
	if (c < 0)
		return;
	BENCH_CHECK(smmu_cpu_register(x->conf[c].mm, &x->cpu));
	x->cur = c;
}

static uint64_t page_value(uint64_t seq, unsigned pg)
{
	return (seq << 8) | pg;
}

/* Spin (the main thread is an online CPU: it does not block) until r has
 * made n more loads than l0. */
static void wait_loads(struct bench_remote *r, uint64_t l0, uint64_t n)
{
	uint64_t t0 = 0;
	unsigned spins = 0;

	while (bench_remote_loads(r) < l0 + n) {
		if (++spins % 1024 == 0) {
			uint64_t now = bench_now_ns();

			if (!t0)
				t0 = now;
			else if (now - t0 > WAIT_LIMIT_NS)
				bench_die("remote %s: no loads for 10 s", r->name);
			sched_yield();
		}
		__builtin_ia32_pause();
	}
}

/* ------------------------------------------------------------ a case */

struct ncase {
	struct ctx *x;
	int conf;
	unsigned pages;
	bool remote;
	char name[32];
	uint64_t iters; /* munmaps per repetition and side */
	struct bench_case *bc;
	double *rep[2]; /* each repetition's time, per side */
	int nrep;
	double *lat[2]; /* every munmap's ns, all repetitions */
	size_t nlat[2], caplat;
	struct smmu_stats acc; /* ours: counter deltas over the pieces */
	uint64_t ops[2];
	/* callbacks during the pieces, summed over the subscribers */
	uint64_t cb_start, cb_secondary, cb_end, cb_ival;
	/* the remote during the pieces */
	uint64_t pieces[2], idle_pieces[2], idle_ops[2], loads[2];
	double piece_ns[2], oncpu_ns[2];
	bool oncpu_unknown;
};

static uint64_t piece_len(const struct ncase *c, int k)
{
	return c->iters * (uint64_t)(k + 1) / CHUNKS - c->iters * (uint64_t)k / CHUNKS;
}

static void lat_add(struct ncase *c, int side, double ns)
{
	if (c->nlat[side] == c->caplat)
		bench_die("%s: more munmaps than planned", c->name);
	c->lat[side][c->nlat[side]++] = ns;
}

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

static void remote_account(struct ncase *c, int side, const struct piece_mark *a, const struct piece_mark *b)
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

static void cb_snapshot(const struct conf *m, uint64_t v[4])
{
	v[0] = v[1] = v[2] = 0;
	for (int s = 0; s < m->nsubs; s++) {
		v[0] += m->subs[s].starts;
		v[1] += m->subs[s].secondaries;
		v[2] += m->subs[s].ends;
	}
	v[3] = m->iv.invalidations;
}

/* The secondary TLBs fill from the first min(pages, SUB_ENTRIES) pages
 * (untimed; in every mm, n0 into a dummy). */
static void fill_secondary(struct conf *m, unsigned pages, uint64_t seq)
{
	unsigned n = pages < SUB_ENTRIES ? pages : SUB_ENTRIES;
	void *host[SUB_ENTRIES];
	unsigned long s = 0;

	for (;;) {
		if (m->ival)
			s = smmu_interval_read_begin(m->iv.sub);
		for (unsigned e = 0; e < n; e++) {
			smmu_addr_t a = m->range + (smmu_addr_t)e * PAGE;
			uint64_t v;

			BENCH_CHECK(smmu_mm_translate(m->mm, a, SMMU_PROT_READ, &host[e]));
			memcpy(&v, host[e], sizeof(v));
			if (v != page_value(seq, e))
				bench_die("smmu_mm_translate(%#" PRIx64 "): the host page holds %#" PRIx64
					  ", the CPU stored %#" PRIx64,
					  a, v, page_value(seq, e));
		}
		if (!m->ival)
			break;
		pthread_mutex_lock(&m->iv.lock);
		if (smmu_interval_read_retry(m->iv.sub, s)) { /* nothing else changes the mm: unexpected */
			pthread_mutex_unlock(&m->iv.lock);
			bench_die("interval fill: read_retry with no change in progress");
		}
		for (unsigned e = 0; e < n; e++)
			m->iv.ent[e] = (struct sec_entry){m->range + (smmu_addr_t)e * PAGE, host[e]};
		m->iv.seq = s;
		pthread_mutex_unlock(&m->iv.lock);
		return;
	}
	for (unsigned e = 0; e < n; e++) {
		struct sec_entry ent = {m->range + (smmu_addr_t)e * PAGE, host[e]};

		if (!m->nsubs)
			m->dummy[e] = ent;
		for (int i = 0; i < m->nsubs; i++)
			m->subs[i].ent[e] = ent;
	}
}

/* After a munmap: nothing of the range may be left in a secondary TLB. */
static void check_cleared(const struct ncase *c, const struct conf *m)
{
	for (int i = 0; i < m->nsubs; i++)
		for (int e = 0; e < SUB_ENTRIES; e++)
			if (m->subs[i].ent[e].va != NO_ADDR)
				bench_die("%s: subscriber %d still holds %#" PRIx64 " after smmu_munmap returned",
					  c->name, i, m->subs[i].ent[e].va);
	if (m->ival) {
		for (int e = 0; e < SUB_ENTRIES; e++)
			if (m->iv.ent[e].va != NO_ADDR)
				bench_die("%s: the interval mirror still holds %#" PRIx64 " after smmu_munmap returned",
					  c->name, m->iv.ent[e].va);
		if (!smmu_interval_read_retry(m->iv.sub, m->iv.seq))
			bench_die("%s: smmu_interval_read_retry says no invalidation since the fill, after a munmap "
				  "of the interval",
				  c->name);
	}
}

static double ours_piece(struct ncase *c, int k)
{
	struct ctx *x = c->x;
	struct conf *m = &x->conf[c->conf];
	struct bench_remote *r = c->remote ? &m->remote : NULL;
	size_t len = (size_t)c->pages * PAGE;
	uint64_t n = piece_len(c, k), cb0[4], cb1[4];
	struct piece_mark m0 = {0, 0, 0}, m1 = {0, 0, 0};
	struct smmu_stats s0, s1;
	double ns = 0;

	main_use(x, c->conf);
	if (r) {
		bench_remote_run(r);
		piece_mark(r, &m0);
	}
	cb_snapshot(m, cb0);
	BENCH_CHECK(smmu_stats_get(m->mm, &s0));
	for (uint64_t i = 0; i < n; i++) {
		smmu_addr_t got;
		uint64_t seq = ++m->seq, l0 = 0, t0, t1;
		int rc;

		BENCH_CHECK(smmu_mmap(m->mm, m->range, len, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED_NOREPLACE,
				      &got));
		if (got != m->range)
			bench_die("%s: smmu_mmap at %#" PRIx64 " gave %#" PRIx64, c->name, m->range, got);
		for (unsigned pg = 0; pg < c->pages; pg++)
			smmu_store64(x->cpu, m->range + (smmu_addr_t)pg * PAGE, page_value(seq, pg));
		fill_secondary(m, c->pages, seq);
		if (r) {
			wait_loads(r, bench_remote_loads(r), REMOTE_WAIT);
			l0 = bench_remote_loads(r);
		}
		t0 = bench_now_ns();
		rc = smmu_munmap(m->mm, m->range, len);
		t1 = bench_now_ns();
		if (rc != 0)
			bench_die("%s: smmu_munmap: %d (%s)", c->name, rc, strerror(-rc));
		if (r && bench_remote_loads(r) == l0)
			c->idle_ops[0]++;
		ns += (double)(t1 - t0);
		lat_add(c, 0, (double)(t1 - t0));
		check_cleared(c, m);
	}
	BENCH_CHECK(smmu_stats_get(m->mm, &s1));
	bench_stats_accumulate(&c->acc, &s0, &s1);
	cb_snapshot(m, cb1);
	c->cb_start += cb1[0] - cb0[0];
	c->cb_secondary += cb1[1] - cb0[1];
	c->cb_end += cb1[2] - cb0[2];
	c->cb_ival += cb1[3] - cb0[3];
	if (r) {
		piece_mark(r, &m1);
		bench_remote_park(r);
		remote_account(c, 0, &m0, &m1);
	}
	c->ops[0] += n;
	return ns;
}

static double kernel_piece(struct ncase *c, int k)
{
	struct ctx *x = c->x;
	struct bench_remote *r = c->remote ? &x->host_remote : NULL;
	size_t len = (size_t)c->pages * PAGE;
	uint64_t n = piece_len(c, k);
	struct piece_mark m0 = {0, 0, 0}, m1 = {0, 0, 0};
	double ns = 0;

	if (r) {
		bench_remote_run(r);
		piece_mark(r, &m0);
	}
	for (uint64_t i = 0; i < n; i++) {
		uint64_t seq = ++x->host_seq, l0 = 0, t0, t1;
		char *p;
		int rc;

		p = mmap(x->host_range, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (p != x->host_range)
			bench_die("%s: mmap MAP_FIXED: %s", c->name, p == MAP_FAILED ? strerror(errno) : "moved");
		for (unsigned pg = 0; pg < c->pages; pg++)
			*(volatile uint64_t *)(p + (size_t)pg * PAGE) = page_value(seq, pg);
		if (*(volatile uint64_t *)p != page_value(seq, 0))
			bench_die("%s: host page does not hold the value just stored", c->name);
		if (r) {
			wait_loads(r, bench_remote_loads(r), REMOTE_WAIT);
			l0 = bench_remote_loads(r);
		}
		t0 = bench_now_ns();
		rc = munmap(p, len);
		t1 = bench_now_ns();
		if (rc != 0)
			bench_die("%s: munmap: %s", c->name, strerror(errno));
		if (r && bench_remote_loads(r) == l0)
			c->idle_ops[1]++;
		ns += (double)(t1 - t0);
		lat_add(c, 1, (double)(t1 - t0));
	}
	if (r) {
		piece_mark(r, &m1);
		bench_remote_park(r);
		remote_account(c, 1, &m0, &m1);
	}
	c->ops[1] += n;
	return ns;
}

/*
 * A group: the four mms' cases, each repetition CHUNKS pieces; in global
 * piece t the mms run in the order starting at t mod NCONF, and mm c runs
 * ours first when (t / NCONF + c) is even: every case has ours first in
 * half of its pieces.
 */
static void run_group(struct ncase *cs, int reps)
{
	bool progress = isatty(STDERR_FILENO);

	if (progress) {
		fprintf(stderr, "  %s .. %s ", cs[0].name, cs[NCONF - 1].name);
		fflush(stderr);
	}
	for (int i = 0; i < reps; i++) {
		double o[NCONF] = {0}, p[NCONF] = {0};

		for (int k = 0; k < CHUNKS; k++) {
			int t = i * CHUNKS + k;

			for (int j = 0; j < NCONF; j++) {
				int cf = (t + j) % NCONF;

				if (((t / NCONF + cf) & 1) == 0) {
					o[cf] += ours_piece(&cs[cf], k);
					p[cf] += kernel_piece(&cs[cf], k);
				} else {
					p[cf] += kernel_piece(&cs[cf], k);
					o[cf] += ours_piece(&cs[cf], k);
				}
			}
		}
		for (int cf = 0; cf < NCONF; cf++) {
			bench_case_record(cs[cf].bc, o[cf], p[cf]);
			cs[cf].rep[0][cs[cf].nrep] = o[cf];
			cs[cf].rep[1][cs[cf].nrep] = p[cf];
			cs[cf].nrep++;
		}
		if (progress) {
			fputc('.', stderr);
			fflush(stderr);
		}
	}
	if (progress)
		fputs("\r\033[K", stderr);
	for (int cf = 0; cf < NCONF; cf++)
		for (int side = 0; side < 2; side++)
			if (cs[cf].remote && cs[cf].pieces[side] && cs[cf].idle_pieces[side] == cs[cf].pieces[side])
				bench_die("%s: the %s remote made no load during any of its %" PRIu64
					  " pieces: it was not running",
					  cs[cf].name, side ? "kernel" : "ours", cs[cf].pieces[side]);
}

/* Untimed warm-up: a few munmaps of each mm (urcu-bp registers the thread
 * at its first read-side section, frame caches fill, code is paged in). */
static void warm_up(struct ctx *x, const struct ncase *c)
{
	struct ncase w = *c;
	double lat[2][32];

	w.x = x;
	w.remote = false;
	w.iters = 32;
	w.lat[0] = lat[0];
	w.lat[1] = lat[1];
	w.nlat[0] = w.nlat[1] = 0;
	w.caplat = 32;
	for (int k = 0; k < CHUNKS; k++) {
		ours_piece(&w, k);
		kernel_piece(&w, k);
	}
}

/* ------------------------------------------------------------ summaries */

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double p50(double *v, size_t n)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_dbl);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct summary {
	double ours, kernel; /* ns per munmap: median over reps */
	double ratio;        /* median over reps of ours/kernel */
	double ours_p50, kernel_p50;
};

static struct summary summarize(struct ncase *c)
{
	struct summary s;
	double q[1000];
	int n = c->nrep < 1000 ? c->nrep : 1000;

	s.ours = bench_median(c->rep[0], (size_t)c->nrep) / (double)c->iters;
	s.kernel = bench_median(c->rep[1], (size_t)c->nrep) / (double)c->iters;
	for (int i = 0; i < n; i++)
		q[i] = c->rep[0][i] / c->rep[1][i];
	s.ratio = bench_median(q, (size_t)n);
	s.ours_p50 = p50(c->lat[0], c->nlat[0]);
	s.kernel_p50 = p50(c->lat[1], c->nlat[1]);
	return s;
}

/* ------------------------------------------------------------ options */

struct nf_opts {
	uint64_t iters1, iters64;
	int no_remote;
};

static int nf_opt(const char *opt, const char *val, void *arg)
{
	struct nf_opts *s = arg;

	if (!strcmp(opt, "--iters") || !strcmp(opt, "--iters64")) {
		uint64_t v = bench_parse_size(opt, val);

		if (v < CHUNKS)
			bench_die("%s must be at least %d", opt, CHUNKS);
		if (!strcmp(opt, "--iters"))
			s->iters1 = v;
		else
			s->iters64 = v;
		return 2;
	}
	if (!strcmp(opt, "--no-remote")) {
		s->no_remote = 1;
		return 1;
	}
	return 0;
}

/* ------------------------------------------------------------ main */

#define NGROUPS 4

int main(int argc, char **argv)
{
	static const struct {
		const char *prefix;
		unsigned pages;
		bool remote;
	} groups[NGROUPS] = {
		{"munmap1", 1, false},
		{"munmap64", MAX_PAGES, false},
		{"munmap1_remote", 1, true},
		{"munmap64_remote", MAX_PAGES, true},
	};
	struct nf_opts no = {0, 0, 0};
	struct bench_opts o;
	struct bench_report *r;
	struct ctx x;
	struct ncase cases[NGROUPS][NCONF];
	struct summary sum[NGROUPS][NCONF];
	int ngroups, ncpus_allowed;
	uint64_t iters1, iters64;
	long host_page = sysconf(_SC_PAGESIZE);
	char thp[32], buf[512];
	struct smmu_pool_config pc;
	uint64_t t_start = bench_now_ns();

	bench_parse_args(&o, argc, argv, "bench-notifier",
			 "  --iters N     one-page munmaps per case, repetition and side (default 2000; quick 200)\n"
			 "  --iters64 N   64-page munmaps per case, repetition and side (default 200; quick 24)\n"
			 "  --no-remote   skip the cases with another CPU running",
			 nf_opt, &no);
	if (host_page != PAGE)
		bench_die("host page size is %ld, this bench compares 4 KiB pages", host_page);
	iters1 = no.iters1 ? no.iters1 : o.quick ? 200 : 2000;
	iters64 = no.iters64 ? no.iters64 : o.quick ? 24 : 200;
	ngroups = no.no_remote ? 2 : NGROUPS;

	memset(&x, 0, sizeof(x));
	x.cur = -1;
	ncpus_allowed = bench_pin_main();
	r = bench_report_new("bench-notifier", &o);
	bench_thp_mode(thp, sizeof(thp));
	bench_report_config_u64(r, "iters_1page", iters1);
	bench_report_config_u64(r, "iters_64page", iters64);
	bench_report_config_u64(r, "chunks_per_rep", CHUNKS);
	bench_report_config_str(r, "mms",
				"n0: no subscriber; n1: 1 smmu_notifier; n8: 8; ival: 1 interval "
				"subscription over the range");
	bench_report_config_str(r, "subscriber",
				"start/end count; invalidate_secondary_tlbs clears matching entries of an 8-entry "
				"array; interval: mutex + smmu_interval_set_seq + clear");
	bench_report_config_str(r, "ours",
				"smmu_mmap + smmu_store64/page + smmu_mm_translate fill (untimed), "
				"smmu_munmap (timed)");
	bench_report_config_str(r, "peer",
				"mmap MAP_FIXED in a PROT_NONE reservation + 64-bit store/page (untimed), munmap "
				"(timed)");
	bench_report_config_u64(r, "signal", (uint64_t)smmu_shootdown_signal());
	bench_report_config_str(r, "thp", thp);
	if (ncpus_allowed >= 2) {
		snprintf(buf, sizeof(buf), "main on cpu %d, remotes on cpu %d", bench_main_cpu(), bench_remote_cpu(0));
		bench_report_config_str(r, "pinning", buf);
	} else {
		bench_report_config_str(r, "pinning", "none (one allowed cpu)");
	}
	bench_report_header(r);
	if (ncpus_allowed < 2 && !no.no_remote)
		bench_report_note(r, "WARNING: one CPU allowed: the remote threads share the main thread's core");

	/* --- ours: one pool, four mms */
	memset(&pc, 0, sizeof(pc));
	pc.size = 32ull << 20;
	pc.page_size = PAGE;
	BENCH_CHECK(smmu_pool_create(&pc, &x.pool));
	for (int cf = 0; cf < NCONF; cf++) {
		struct conf *m = &x.conf[cf];
		smmu_addr_t got;

		BENCH_CHECK(smmu_mm_create(x.pool, &m->mm));
		m->nsubs = conf_subs[cf];
		m->ival = cf == C_IVAL;
		m->area = OURS_BASE;
		m->range = OURS_BASE + RANGE_OFF;
		for (int e = 0; e < SUB_ENTRIES; e++)
			m->dummy[e].va = m->iv.ent[e].va = NO_ADDR;
		if (m->nsubs) {
			m->subs = aligned_alloc(64, sizeof(struct sub) * (size_t)m->nsubs);
			if (!m->subs)
				bench_die("out of memory");
			memset(m->subs, 0, sizeof(struct sub) * (size_t)m->nsubs);
			for (int i = 0; i < m->nsubs; i++) {
				for (int e = 0; e < SUB_ENTRIES; e++)
					m->subs[i].ent[e].va = NO_ADDR;
				BENCH_CHECK(smmu_notifier_register(m->mm, &sub_ops, &m->subs[i], &m->handles[i]));
			}
		}
		if (m->ival) {
			int err = pthread_mutex_init(&m->iv.lock, NULL);

			if (err)
				bench_die("pthread_mutex_init: %s", strerror(err));
			BENCH_CHECK(smmu_interval_notifier_insert(m->mm, m->range, MAX_PAGES * PAGE, &ival_ops, &m->iv,
								  &m->iv.sub));
		}
		main_use(&x, cf);
		BENCH_CHECK(smmu_mmap(m->mm, m->area, BENCH_REMOTE_PAGES * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE,
				      SMMU_MAP_FIXED_NOREPLACE | SMMU_MAP_POPULATE, &got));
		if (got != m->area)
			bench_die("smmu_mmap at %#" PRIx64 " gave %#" PRIx64, m->area, got);
		for (unsigned k = 0; k < BENCH_REMOTE_PAGES; k++)
			smmu_store64(x.cpu, m->area + (smmu_addr_t)k * PAGE, bench_remote_want(k));
		if (!no.no_remote) {
			char name[32];

			snprintf(name, sizeof(name), "ours-%s", conf_tags[cf]);
			bench_remote_start(&m->remote, BENCH_REMOTE_CPU, name, m->mm, m->area, 0, NULL,
					   bench_remote_cpu(0));
			m->remote.touch = m->range; /* parked: read after it is woken */
		}
	}

	/* --- the kernel: the remote's area and a PROT_NONE reservation with
	 * a guard page on each side of the range */
	x.host_area = mmap(NULL, BENCH_REMOTE_PAGES * PAGE, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (x.host_area == MAP_FAILED)
		bench_die("mmap: %s", strerror(errno));
	for (unsigned k = 0; k < BENCH_REMOTE_PAGES; k++)
		x.host_area[(size_t)k * (PAGE / 8)] = bench_remote_want(k);
	x.host_resv = mmap(NULL, (MAX_PAGES + 2) * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (x.host_resv == MAP_FAILED)
		bench_die("mmap: %s", strerror(errno));
	x.host_range = x.host_resv + PAGE;
	if (!no.no_remote)
		bench_remote_start(&x.host_remote, BENCH_REMOTE_HOST, "kernel", NULL, 0, 0, x.host_area,
				   bench_remote_cpu(0));

	/* --- the cases */
	memset(cases, 0, sizeof(cases));
	for (int g = 0; g < ngroups; g++) {
		for (int cf = 0; cf < NCONF; cf++) {
			struct ncase *c = &cases[g][cf];

			c->x = &x;
			c->conf = cf;
			c->pages = groups[g].pages;
			c->remote = groups[g].remote;
			c->iters = c->pages == 1 ? iters1 : iters64;
			snprintf(c->name, sizeof(c->name), "%s_%s", groups[g].prefix, conf_tags[cf]);
			c->caplat = (size_t)(c->iters * (uint64_t)o.reps);
			for (int side = 0; side < 2; side++) {
				c->lat[side] = calloc(c->caplat, sizeof(double));
				c->rep[side] = calloc((size_t)o.reps, sizeof(double));
				if (!c->lat[side] || !c->rep[side])
					bench_die("out of memory");
			}
			c->bc = bench_report_case(r, c->name, "kernel munmap", (double)c->iters, "munmap");
			/* no repetition: only says that the time comes in CHUNKS pieces */
			bench_case_run_chunked(c->bc, 0, CHUNKS, NULL, NULL, NULL);
		}
	}
	for (int g = 0; g < ngroups && g < 2; g++)
		for (int cf = 0; cf < NCONF; cf++)
			warm_up(&x, &cases[g][cf]);
	for (int g = 0; g < ngroups; g++)
		run_group(cases[g], o.reps);

	/* --- every callback was made once per munmap, and nothing else ran */
	for (int g = 0; g < ngroups; g++) {
		for (int cf = 0; cf < NCONF; cf++) {
			const struct ncase *c = &cases[g][cf];
			uint64_t want = c->ops[0] * (uint64_t)conf_subs[cf];

			if (c->cb_start != want || c->cb_end != want || c->cb_secondary < want)
				bench_die("%s: %" PRIu64 " munmaps x %d subscribers, but %" PRIu64 " starts, %" PRIu64
					  " secondary invalidations, %" PRIu64 " ends",
					  c->name, c->ops[0], conf_subs[cf], c->cb_start, c->cb_secondary, c->cb_end);
			if (cf == C_IVAL && c->cb_ival != c->ops[0])
				bench_die("%s: %" PRIu64 " munmaps but %" PRIu64 " interval invalidations", c->name,
					  c->ops[0], c->cb_ival);
		}
	}
	for (int cf = 0; cf < NCONF; cf++) {
		const struct conf *m = &x.conf[cf];

		for (int i = 0; i < m->nsubs; i++)
			if (m->subs[i].bad)
				bench_die("%s: subscriber %d saw %" PRIu64 " callbacks with a wrong range or event",
					  conf_tags[cf], i, m->subs[i].bad);
		if (m->iv.bad || m->iv.refused)
			bench_die("ival: %" PRIu64 " invalidations of a wrong event, %" PRIu64 " refused", m->iv.bad,
				  m->iv.refused);
	}

	/* --- notes: the cost table */
	for (int g = 0; g < ngroups; g++)
		for (int cf = 0; cf < NCONF; cf++)
			sum[g][cf] = summarize(&cases[g][cf]);
	bench_report_note(r, "notifier cost, ns per munmap; added = this case - the n0 case of its group (same run, "
			     "interleaved); the kernel does the same work in all four: its diff is the noise floor");
	bench_report_note(r, "%-22s %9s %9s %7s %11s %11s %9s %9s %11s %8s %8s", "case", "ours", "kernel", "ratio",
			  "ours added", "kernel diff", "ours p50", "kern p50", "p50 added", "sig/op", "cb/op");
	for (int g = 0; g < ngroups; g++) {
		for (int cf = 0; cf < NCONF; cf++) {
			const struct ncase *c = &cases[g][cf];
			const struct summary *s = &sum[g][cf], *z = &sum[g][C_N0];
			double ops = (double)c->ops[0];
			double cb = (double)(c->cb_start + c->cb_secondary + c->cb_end + c->cb_ival) / ops;

			if (cf == C_N0)
				bench_report_note(r, "%-22s %9.0f %9.0f %7.3f %11s %11s %9.0f %9.0f %11s %8.3f %8.2f",
						  c->name, s->ours, s->kernel, s->ratio, "-", "-", s->ours_p50,
						  s->kernel_p50, "-", (double)c->acc.signals_sent / ops, cb);
			else
				bench_report_note(
					r, "%-22s %9.0f %9.0f %7.3f %+11.0f %+11.0f %9.0f %9.0f %+11.0f %8.3f %8.2f",
					c->name, s->ours, s->kernel, s->ratio, s->ours - z->ours, s->kernel - z->kernel,
					s->ours_p50, s->kernel_p50, s->ours_p50 - z->ours_p50,
					(double)c->acc.signals_sent / ops, cb);
		}
	}
	bench_report_note(r, "(ours/kernel: median over reps of a rep's time / munmaps; ratio: median of per-rep "
			     "ratios; p50: median of all single munmaps; sig/op: shootdown signals per munmap; "
			     "cb/op: callbacks per munmap, all subscribers)");
	for (int g = 0; g < ngroups; g++) {
		uint64_t idle[2] = {0, 0}, ops[2] = {0, 0}, pieces[2] = {0, 0}, ipieces[2] = {0, 0};
		double pns[2] = {0, 0}, ons[2] = {0, 0};
		bool unknown = false;

		if (!groups[g].remote)
			continue;
		for (int cf = 0; cf < NCONF; cf++) {
			const struct ncase *c = &cases[g][cf];

			for (int side = 0; side < 2; side++) {
				idle[side] += c->idle_ops[side];
				ops[side] += c->ops[side];
				pieces[side] += c->pieces[side];
				ipieces[side] += c->idle_pieces[side];
				pns[side] += c->piece_ns[side];
				ons[side] += c->oncpu_ns[side];
			}
			unknown |= c->oncpu_unknown;
		}
		if (unknown)
			bench_report_note(
				r,
				"%s_*: remote on-CPU time unknown; munmaps without a remote load: ours %" PRIu64
				"/%" PRIu64 ", kernel %" PRIu64 "/%" PRIu64,
				groups[g].prefix, idle[0], ops[0], idle[1], ops[1]);
		else
			bench_report_note(r,
					  "%s_*: remote on CPU during the pieces: ours %.0f%%, kernel %.0f%%; "
					  "munmaps without a remote load: ours %" PRIu64 "/%" PRIu64 ", kernel %" PRIu64
					  "/%" PRIu64 "; pieces without one: %" PRIu64 "/%" PRIu64 ", %" PRIu64
					  "/%" PRIu64,
					  groups[g].prefix, 100.0 * ons[0] / pns[0], 100.0 * ons[1] / pns[1], idle[0],
					  ops[0], idle[1], ops[1], ipieces[0], pieces[0], ipieces[1], pieces[1]);
		if (idle[0] * 20 > ops[0] || idle[1] * 20 > ops[1])
			bench_report_note(r,
					  "WARNING: %s_*: the remote made no load during more than 5%% of the timed "
					  "munmaps (descheduled?)",
					  groups[g].prefix);
	}

	/* --- JSON: the added cost per group, and per case what ran */
	{
		FILE *f;
		char *s = NULL;
		size_t len = 0;

		f = open_memstream(&s, &len);
		if (!f)
			bench_die("out of memory");
		fputc('{', f);
		for (int g = 0; g < ngroups; g++) {
			const struct summary *z = &sum[g][C_N0];

			fprintf(f, "%s\"%s\":{\"pages\":%u,\"remote\":%s,\"n0_ours_ns\":%.1f,\"n0_kernel_ns\":%.1f",
				g ? "," : "", groups[g].prefix, groups[g].pages, groups[g].remote ? "true" : "false",
				z->ours, z->kernel);
			for (int cf = 1; cf < NCONF; cf++) {
				const struct summary *q = &sum[g][cf];

				fprintf(f,
					",\"%s\":{\"ours_added_ns\":%.1f,\"kernel_diff_ns\":%.1f,"
					"\"ours_added_p50_ns\":%.1f,\"kernel_diff_p50_ns\":%.1f,"
					"\"ours_added_ratio_based_ns\":%.1f}",
					conf_tags[cf], q->ours - z->ours, q->kernel - z->kernel,
					q->ours_p50 - z->ours_p50, q->kernel_p50 - z->kernel_p50,
					(q->ratio - z->ratio) * z->kernel);
			}
			fputc('}', f);
		}
		fputc('}', f);
		if (fclose(f) != 0 || !s)
			bench_die("out of memory");
		bench_report_json(r, "notifier_cost", s);
		free(s);

		s = NULL;
		f = open_memstream(&s, &len);
		if (!f)
			bench_die("out of memory");
		fputc('{', f);
		for (int g = 0, first = 1; g < ngroups; g++) {
			for (int cf = 0; cf < NCONF; cf++, first = 0) {
				const struct ncase *c = &cases[g][cf];
				const struct summary *q = &sum[g][cf];
				double ops = (double)c->ops[0];
				char *d = bench_stats_json(&c->acc);

				fprintf(f,
					"%s\"%s\":{\"mm\":\"%s\",\"pages\":%u,\"subscribers\":%d,\"interval\":%s,"
					"\"ours_ns\":%.1f,\"kernel_ns\":%.1f,\"ratio\":%.4f,\"ours_p50_ns\":%.1f,"
					"\"kernel_p50_ns\":%.1f,\"munmaps\":%" PRIu64 ",\"signals_per_munmap\":%.4f,"
					"\"flush_full_per_munmap\":%.4f,\"flush_range_per_munmap\":%.4f,"
					"\"range_start_per_munmap\":%.4f,\"secondary_tlbs_per_munmap\":%.4f,"
					"\"range_end_per_munmap\":%.4f,\"interval_invalidate_per_munmap\":%.4f",
					first ? "" : ",", c->name, conf_tags[cf], c->pages, conf_subs[cf],
					cf == C_IVAL ? "true" : "false", q->ours, q->kernel, q->ratio, q->ours_p50,
					q->kernel_p50, c->ops[0], (double)c->acc.signals_sent / ops,
					(double)c->acc.flush_full / ops, (double)c->acc.flush_range / ops,
					(double)c->cb_start / ops, (double)c->cb_secondary / ops,
					(double)c->cb_end / ops, (double)c->cb_ival / ops);
				if (c->remote) {
					if (c->oncpu_unknown)
						fputs(",\"ours_remote_oncpu_fraction\":null,\"kernel_remote_oncpu_"
						      "fraction\":null",
						      f);
					else
						fprintf(f,
							",\"ours_remote_oncpu_fraction\":%.3f,\"kernel_remote_oncpu_"
							"fraction\":%.3f",
							c->oncpu_ns[0] / c->piece_ns[0],
							c->oncpu_ns[1] / c->piece_ns[1]);
					fprintf(f,
						",\"ours_idle_munmaps\":%" PRIu64 ",\"kernel_idle_munmaps\":%" PRIu64,
						c->idle_ops[0], c->idle_ops[1]);
				}
				fprintf(f, ",\"stats_delta\":%s}", d);
				free(d);
			}
		}
		fputc('}', f);
		if (fclose(f) != 0 || !s)
			bench_die("out of memory");
		bench_report_json(r, "per_case", s);
		free(s);
	}

	/* --- teardown, checked */
	if (!no.no_remote) {
		for (int cf = 0; cf < NCONF; cf++)
			bench_remote_stop(&x.conf[cf].remote);
		bench_remote_stop(&x.host_remote);
	}
	main_use(&x, -1);
	{
		FILE *f;
		char *s = NULL;
		size_t len = 0;

		f = open_memstream(&s, &len);
		if (!f)
			bench_die("out of memory");
		fputc('{', f);
		for (int cf = 0; cf < NCONF; cf++) {
			struct conf *m = &x.conf[cf];
			struct smmu_stats st;
			char *d;

			BENCH_CHECK(smmu_stats_get(m->mm, &st));
			d = bench_stats_json(&st);
			fprintf(f, "%s\"%s\":%s", cf ? "," : "", conf_tags[cf], d);
			free(d);
			for (int i = 0; i < m->nsubs; i++) {
				BENCH_CHECK(smmu_notifier_unregister(m->handles[i]));
				if (m->subs[i].releases != 1)
					bench_die("%s: subscriber %d: release called %" PRIu64 " times by unregister",
						  conf_tags[cf], i, m->subs[i].releases);
			}
			if (m->ival) {
				BENCH_CHECK(smmu_interval_notifier_remove(m->iv.sub));
				pthread_mutex_destroy(&m->iv.lock);
			}
			BENCH_CHECK(smmu_munmap(m->mm, m->area, BENCH_REMOTE_PAGES * PAGE));
			BENCH_CHECK(smmu_mm_destroy(m->mm));
			free(m->subs);
		}
		fputc('}', f);
		if (fclose(f) != 0 || !s)
			bench_die("out of memory");
		bench_report_json(r, "stats_by_mm", s);
		free(s);
	}
	BENCH_CHECK(smmu_pool_destroy(x.pool));
	if (munmap(x.host_resv, (MAX_PAGES + 2) * PAGE) != 0 || munmap(x.host_area, BENCH_REMOTE_PAGES * PAGE) != 0)
		bench_die("munmap: %s", strerror(errno));
	snprintf(buf, sizeof(buf), "%.2f", (double)(bench_now_ns() - t_start) / 1e9);
	bench_report_json(r, "wall_s", buf);

	for (int g = 0; g < ngroups; g++)
		for (int cf = 0; cf < NCONF; cf++)
			for (int side = 0; side < 2; side++) {
				free(cases[g][cf].lat[side]);
				free(cases[g][cf].rep[side]);
			}
	bench_report_finish(r);
	return 0;
}
