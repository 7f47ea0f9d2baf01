/* SPDX-License-Identifier: MIT */
/*
 * bench-fault: what a fault costs - a protection fault that a handler
 * resolves, and the first touch of an anonymous page - against the
 * kernel's own MMU doing the same in the same run.  One thread, no other
 * CPU: the main thread is the only CPU of the mm (signal mode), so no
 * shootdown signal is ever sent.
 *
 *   protnone_fault_vs_sigsegv
 *     ours: N pages mapped read-write with smmu_mmap_handler, populated,
 *       page i holding i.  Untimed, at the start of each repetition:
 *       smmu_mprotect(all N pages, PROT_NONE) - the re-protect, one call.
 *       Timed: for each page in order, smmu_load64(page): the walk finds
 *       the entry protnone, the mapping's fault handler runs (the CPU
 *       offline, outside the access) and calls smmu_mprotect(page, read-
 *       write) - adding access, so no flush; the load restarts from the
 *       TLB lookup, fills and completes.
 *     kernel: N pages of mmap(MAP_PRIVATE|MAP_ANONYMOUS) memory, touched,
 *       page i holding i (MADV_NOHUGEPAGE).  Untimed, at the start of
 *       each repetition: mprotect(all N pages, PROT_NONE), one call.
 *       Timed: for each page in order, a volatile 64-bit load: the CPU
 *       faults, the kernel delivers SIGSEGV, the handler (SA_SIGINFO)
 *       calls mprotect(page, PROT_READ|PROT_WRITE) and returns, the load
 *       restarts and completes.
 *     Both sides: one fault, one handler, one single-page protection
 *     change (a split of the protected mapping and a merge with the
 *     restored part before it) and the completed load per page; the timed
 *     loop holds nothing else (no clock read per access: a repetition's
 *     time is the loop's).  The loaded values are checked (page i must
 *     give i) and every handler call is counted: exactly N per
 *     repetition on each side.
 *
 *   demand_zero_vs_kernel
 *     ours: untimed, smmu_mmap N fresh read-write pages (not populated).
 *       Timed: one smmu_store64 to each page in order - each a demand-zero
 *       fault (a frame from the pool, zeroed, the entry installed, the TLB
 *       filled) and the store.  Untimed: check, smmu_munmap.
 *     kernel: untimed, mmap N fresh anonymous pages (MADV_NOHUGEPAGE).
 *       Timed: one 64-bit store to each page in order - each a page fault
 *       (a zeroed page allocated, the entry installed) and the store.
 *       Untimed: check, munmap.
 *     So the map and unmap are outside the timing on both sides, one call
 *     each per repetition; the timed loop is N first-touch stores.  Ours
 *     draws from the frame pool, which is pre-faulted once before the
 *     measurements (a populated mapping of the whole pool, unmapped again),
 *     as a runtime would hand over memory it already owns; the kernel
 *     allocates physical pages, which is the kernel's way of doing it.
 *
 * Each repetition is cut into CHUNKS timed pieces per side that alternate
 * finely (bench_case_run_chunked), so both sides see the same machine.
 */
#define _GNU_SOURCE
#include <softmmu/softmmu.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench_remote.h"
#include "bench_util.h"

#define PAGE 4096u
#define CHUNKS 8
#define RW (SMMU_PROT_READ | SMMU_PROT_WRITE)

struct fctx {
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	size_t pages;
	/* protnone: the protected range on each side */
	smmu_addr_t prot_ours;
	char *prot_host;
	/* demand zero: the fresh range of the current repetition */
	smmu_addr_t dz_ours;
	char *dz_host;
	/* handler calls, per side, in the current repetition */
	uint64_t handled_ours;
	uint64_t bad; /* wrong values loaded */
	struct smmu_stats acc_prot, acc_dz;
};

static struct fctx *g_ctx;                 /* for the SIGSEGV handler */
static volatile sig_atomic_t segv_handled; /* kernel handler calls, current repetition */
static volatile sig_atomic_t segv_bad;     /* faults outside the range or mprotect failures */

/* ------------------------------------------------------------ handlers */

/* Ours: restore read-write on the faulting page. */
static int restore_handler(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	struct fctx *c = arg;

	(void)cpu;
	c->handled_ours++;
	return smmu_mprotect(c->mm, f->addr & ~(smmu_addr_t)(PAGE - 1), PAGE, RW);
}

/* The kernel: the same with mprotect from a SIGSEGV handler. */
static void segv_handler(int sig, siginfo_t *si, void *uc)
{
	struct fctx *c = g_ctx;
	char *a = (char *)((uintptr_t)si->si_addr & ~(uintptr_t)(PAGE - 1));

	(void)uc;
	if (!c || a < c->prot_host || a >= c->prot_host + c->pages * PAGE ||
	    mprotect(a, PAGE, PROT_READ | PROT_WRITE) != 0) {
		/* not ours: die of it */
		segv_bad = 1;
		signal(sig, SIG_DFL);
		return;
	}
	segv_handled = segv_handled + 1;
}

/* ------------------------------------------------------------ pieces */

static size_t piece_lo(const struct fctx *c, int k)
{
	return c->pages * (size_t)k / CHUNKS;
}

static double prot_ours(void *arg, int k)
{
	struct fctx *c = arg;
	size_t lo = piece_lo(c, k), hi = piece_lo(c, k + 1);
	uint64_t sum = 0, t0, t1, want = 0;
	struct smmu_stats s0, s1;

	if (k == 0) {
		BENCH_CHECK(smmu_mprotect(c->mm, c->prot_ours, c->pages * PAGE, SMMU_PROT_NONE));
		c->handled_ours = 0;
	}
	BENCH_CHECK(smmu_stats_get(c->mm, &s0));
	t0 = bench_now_ns();
	for (size_t i = lo; i < hi; i++)
		sum += smmu_load64(c->cpu, c->prot_ours + (smmu_addr_t)i * PAGE);
	t1 = bench_now_ns();
	BENCH_CHECK(smmu_stats_get(c->mm, &s1));
	bench_stats_accumulate(&c->acc_prot, &s0, &s1);
	for (size_t i = lo; i < hi; i++)
		want += i;
	if (sum != want)
		c->bad++;
	if (k == CHUNKS - 1 && c->handled_ours != c->pages)
		bench_die("protnone ours: %" PRIu64 " handler calls for %zu pages", c->handled_ours, c->pages);
	return (double)(t1 - t0);
}

static double prot_kernel(void *arg, int k)
{
	struct fctx *c = arg;
	size_t lo = piece_lo(c, k), hi = piece_lo(c, k + 1);
	uint64_t sum = 0, t0, t1, want = 0;

	if (k == 0) {
		if (mprotect(c->prot_host, c->pages * PAGE, PROT_NONE) != 0)
			bench_die("mprotect(PROT_NONE): %s", strerror(errno));
		segv_handled = 0;
	}
	t0 = bench_now_ns();
	for (size_t i = lo; i < hi; i++)
		sum += *(volatile uint64_t *)(c->prot_host + i * PAGE);
	t1 = bench_now_ns();
	for (size_t i = lo; i < hi; i++)
		want += i;
	if (sum != want)
		c->bad++;
	if (segv_bad)
		bench_die("protnone kernel: a SIGSEGV outside the range, or mprotect failed in the handler");
	if (k == CHUNKS - 1 && (size_t)segv_handled != c->pages)
		bench_die("protnone kernel: %ld SIGSEGV handler calls for %zu pages", (long)segv_handled, c->pages);
	return (double)(t1 - t0);
}

static double dz_ours(void *arg, int k)
{
	struct fctx *c = arg;
	size_t lo = piece_lo(c, k), hi = piece_lo(c, k + 1);
	uint64_t t0, t1;
	struct smmu_stats s0, s1;

	if (k == 0)
		BENCH_CHECK(smmu_mmap(c->mm, 0, c->pages * PAGE, RW, 0, &c->dz_ours));
	BENCH_CHECK(smmu_stats_get(c->mm, &s0));
	t0 = bench_now_ns();
	for (size_t i = lo; i < hi; i++)
		smmu_store64(c->cpu, c->dz_ours + (smmu_addr_t)i * PAGE + 8, i);
	t1 = bench_now_ns();
	BENCH_CHECK(smmu_stats_get(c->mm, &s1));
	bench_stats_accumulate(&c->acc_dz, &s0, &s1);
	if (s1.faults_demand_zero - s0.faults_demand_zero != hi - lo)
		bench_die("demand zero ours: %" PRIu64 " demand-zero faults for %zu first touches",
			  s1.faults_demand_zero - s0.faults_demand_zero, hi - lo);
	for (size_t i = lo; i < hi; i++)
		if (smmu_load64(c->cpu, c->dz_ours + (smmu_addr_t)i * PAGE) != 0 ||
		    smmu_load64(c->cpu, c->dz_ours + (smmu_addr_t)i * PAGE + 8) != i)
			c->bad++;
	if (k == CHUNKS - 1)
		BENCH_CHECK(smmu_munmap(c->mm, c->dz_ours, c->pages * PAGE));
	return (double)(t1 - t0);
}

static double dz_kernel(void *arg, int k)
{
	struct fctx *c = arg;
	size_t lo = piece_lo(c, k), hi = piece_lo(c, k + 1);
	uint64_t t0, t1;

	if (k == 0) {
		c->dz_host = mmap(NULL, c->pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (c->dz_host == MAP_FAILED)
			bench_die("mmap: %s", strerror(errno));
		if (madvise(c->dz_host, c->pages * PAGE, MADV_NOHUGEPAGE) != 0 && errno != EINVAL)
			bench_die("madvise(MADV_NOHUGEPAGE): %s", strerror(errno));
	}
	t0 = bench_now_ns();
	for (size_t i = lo; i < hi; i++)
		*(volatile uint64_t *)(c->dz_host + i * PAGE + 8) = i;
	t1 = bench_now_ns();
	for (size_t i = lo; i < hi; i++)
		if (*(volatile uint64_t *)(c->dz_host + i * PAGE) != 0 ||
		    *(volatile uint64_t *)(c->dz_host + i * PAGE + 8) != i)
			c->bad++;
	if (k == CHUNKS - 1 && munmap(c->dz_host, c->pages * PAGE) != 0)
		bench_die("munmap: %s", strerror(errno));
	return (double)(t1 - t0);
}

/* ------------------------------------------------------------ main */

struct fopts {
	uint64_t pages;
};

static int fault_opt(const char *opt, const char *val, void *arg)
{
	struct fopts *fo = arg;

	if (!strcmp(opt, "--pages")) {
		if (!val)
			bench_die("--pages needs a number");
		fo->pages = bench_parse_size(opt, val);
		return 2;
	}
	return 0;
}

static void stats_note(struct bench_report *r, const char *name, const struct smmu_stats *st, double ops)
{
	char *s = bench_stats_json(st);
	char key[64];

	bench_report_note(r,
			  "%s ours, per page: %.2f faults handled, %.2f demand-zero, %.2f TLB misses, %.2f fills, "
			  "%.3f shootdowns, %.3f signals sent",
			  name, (double)st->faults_handled / ops, (double)st->faults_demand_zero / ops,
			  (double)st->tlb_misses / ops, (double)st->tlb_fills / ops, (double)st->shootdowns / ops,
			  (double)st->signals_sent / ops);
	snprintf(key, sizeof(key), "stats_%s", name);
	bench_report_json(r, key, s);
	free(s);
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	struct bench_report *r;
	struct bench_case *bc;
	struct smmu_pool_config pc;
	struct fctx c;
	struct fopts fo = {0};
	struct sigaction sa, old_sa;
	long host_page = sysconf(_SC_PAGESIZE);
	char thp[32];
	smmu_addr_t warm;
	size_t warm_len;
	double ops;

	bench_parse_args(&o, argc, argv, "bench-fault",
			 "  --pages N     pages faulted per repetition and side, each case (default 8192; quick 1024)",
			 fault_opt, &fo);
	if (host_page != PAGE)
		bench_die("host page size is %ld, this bench compares 4 KiB pages", host_page);
	memset(&c, 0, sizeof(c));
	c.pages = fo.pages ? (size_t)fo.pages : o.quick ? 1024 : 8192;
	if (c.pages < CHUNKS)
		bench_die("--pages must be at least %d", CHUNKS);
	ops = (double)c.pages;
	g_ctx = &c;
	bench_pin_main();

	r = bench_report_new("bench-fault", &o);
	bench_thp_mode(thp, sizeof(thp));
	bench_report_config_u64(r, "pages", c.pages);
	bench_report_config_u64(r, "chunks_per_rep", CHUNKS);
	bench_report_config_str(r, "protnone_ours",
				"smmu_mprotect(N pages, NONE) untimed; timed: smmu_load64 per page -> fault handler "
				"smmu_mprotect(page, RW) -> load completes");
	bench_report_config_str(r, "protnone_peer",
				"mprotect(N pages, PROT_NONE) untimed; timed: load per page -> SIGSEGV handler "
				"mprotect(page, RW) -> load completes");
	bench_report_config_str(r, "demand_zero_ours",
				"smmu_mmap N pages untimed; timed: smmu_store64 per page (demand-zero fault); "
				"smmu_munmap untimed; pool pre-faulted once");
	bench_report_config_str(r, "demand_zero_peer",
				"mmap N anonymous pages + MADV_NOHUGEPAGE untimed; timed: 64-bit store per page "
				"(page fault); munmap untimed");
	bench_report_config_u64(r, "signal", (uint64_t)smmu_shootdown_signal());
	bench_report_config_str(r, "thp", thp);
	bench_report_header(r);

	/* --- ours: a pool for the protected range and one demand-zero range,
	 * pre-faulted */
	memset(&pc, 0, sizeof(pc));
	pc.size = (2 * c.pages + 1024) * PAGE;
	pc.page_size = PAGE;
	BENCH_CHECK(smmu_pool_create(&pc, &c.pool));
	BENCH_CHECK(smmu_mm_create(c.pool, &c.mm));
	BENCH_CHECK(smmu_cpu_register(c.mm, &c.cpu));
	warm_len = (smmu_pool_free_frames(c.pool) - 64) * PAGE;
	BENCH_CHECK(smmu_mmap(c.mm, 0, warm_len, RW, SMMU_MAP_POPULATE, &warm));
	BENCH_CHECK(smmu_munmap(c.mm, warm, warm_len));

	/* --- protnone: both ranges populated, page i holds i */
	BENCH_CHECK(
		smmu_mmap_handler(c.mm, 0, c.pages * PAGE, RW, SMMU_MAP_POPULATE, restore_handler, &c, &c.prot_ours));
	for (size_t i = 0; i < c.pages; i++)
		smmu_store64(c.cpu, c.prot_ours + (smmu_addr_t)i * PAGE, i);
	c.prot_host = mmap(NULL, c.pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (c.prot_host == MAP_FAILED)
		bench_die("mmap: %s", strerror(errno));
	if (madvise(c.prot_host, c.pages * PAGE, MADV_NOHUGEPAGE) != 0 && errno != EINVAL)
		bench_die("madvise(MADV_NOHUGEPAGE): %s", strerror(errno));
	for (size_t i = 0; i < c.pages; i++)
		*(uint64_t *)(c.prot_host + i * PAGE) = i;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = segv_handler;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, &old_sa) != 0)
		bench_die("sigaction(SIGSEGV): %s", strerror(errno));

	/* warm-up, one untimed repetition of each side */
	for (int k = 0; k < CHUNKS; k++) {
		prot_ours(&c, k);
		prot_kernel(&c, k);
	}
	memset(&c.acc_prot, 0, sizeof(c.acc_prot));
	bc = bench_report_case(r, "protnone_fault_vs_sigsegv", "kernel SIGSEGV + mprotect", ops, "fault");
	bench_case_run_chunked(bc, o.reps, CHUNKS, prot_ours, prot_kernel, &c);
	if (sigaction(SIGSEGV, &old_sa, NULL) != 0)
		bench_die("sigaction(SIGSEGV): %s", strerror(errno));
	stats_note(r, "protnone", &c.acc_prot, ops * o.reps);
	BENCH_CHECK(smmu_munmap(c.mm, c.prot_ours, c.pages * PAGE));
	if (munmap(c.prot_host, c.pages * PAGE) != 0)
		bench_die("munmap: %s", strerror(errno));

	/* --- demand zero */
	for (int k = 0; k < CHUNKS; k++) {
		dz_ours(&c, k);
		dz_kernel(&c, k);
	}
	memset(&c.acc_dz, 0, sizeof(c.acc_dz));
	bc = bench_report_case(r, "demand_zero_vs_kernel", "kernel page fault", ops, "page");
	bench_case_run_chunked(bc, o.reps, CHUNKS, dz_ours, dz_kernel, &c);
	stats_note(r, "demand_zero", &c.acc_dz, ops * o.reps);

	if (c.bad)
		bench_die("%" PRIu64 " pieces loaded wrong values", c.bad);
	BENCH_CHECK(smmu_cpu_unregister(c.cpu));
	BENCH_CHECK(smmu_mm_destroy(c.mm));
	if (smmu_pool_free_frames(c.pool) != smmu_pool_frames(c.pool))
		bench_die("frames leaked: %zu of %zu free", smmu_pool_free_frames(c.pool), smmu_pool_frames(c.pool));
	BENCH_CHECK(smmu_pool_destroy(c.pool));
	bench_report_finish(r);
	return 0;
}
