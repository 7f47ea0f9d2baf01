/* SPDX-License-Identifier: MIT */
/*
 * bench-remap: moving mappings without copying them (smmu_mremap,
 * smmu_mremap_batch) against the kernel's mremap of the same amount of
 * touched anonymous memory, in the same run.
 *
 * Every case moves its ranges there and back: a repetition is two timed
 * pieces per side, piece 0 moves from -> to and piece 1 moves to -> from,
 * so every repetition moves the same pages between the same addresses,
 * and pieces alternate between the sides (bench_case_run_chunked: piece
 * k of rep i runs ours first when i + k is even).  Before each timed move,
 * untimed, each side loads the first word of every page at the source and
 * checks it (page p holds page_tag(p), stamped at setup): that checks the
 * previous move and leaves the pages touched - in the software TLB for
 * ours (so the move has a TLB to shoot down, as the kernel has), in the
 * hardware TLB for the kernel.  The mappings are made and populated once
 * per case, outside the timing; ours are 4 KiB frames of a pool, the
 * kernel's 4 KiB pages (MADV_NOHUGEPAGE: no transparent huge pages).
 * Ours' TLB has a fixed size per case: the power of two that holds every
 * page the case touches (2^18 entries, 8 MiB, the default maximum, for 1
 * GiB; 2^15 for the batch), the size the adaptive TLB grows towards.
 * (Adaptive, --adaptive-tlb, the size follows the touches: with 2 x
 * entries misses per pass it doubles at the end of one pass and halves at
 * the start of the next, so moves alternate between a nearly empty TLB
 * and a full one.)  A CPU of its own per case, so no case inherits one.
 * With --untouched there is no touch before a move: ours flushes its own
 * TLB instead (untimed), so the move's shootdown finds it empty; the
 * contents are checked once, after the last repetition.  That shows what
 * the move costs apart from flushing a full software TLB.
 *
 *   remap_1g_4k_offset_vs_kernel
 *     ours: one populated read-write mapping of SIZE bytes at A (2 MiB
 *       aligned, not 1 GiB aligned); timed: smmu_mremap(A -> B) with B 4
 *       KiB past a 2 MiB boundary, then smmu_mremap(B -> A).  Leaves move
 *       one by one (the two sides' leaf tables do not line up).
 *     kernel: a PROT_NONE reservation holding A and B at the same offsets
 *       modulo 1 GiB; SIZE bytes mmap'ed read-write at A, MADV_NOHUGEPAGE,
 *       one store per page; timed: mremap(A, SIZE, SIZE,
 *       MREMAP_MAYMOVE | MREMAP_FIXED, B) over the reserved PROT_NONE
 *       pages at B, then back.  Untimed after each move: the vacated
 *       source is reserved PROT_NONE again (MAP_FIXED_NOREPLACE), so each
 *       move lands on a reservation.  The kernel moves PTEs one by one.
 *   remap_1g_2m_aligned_vs_kernel
 *     the same with B 2 MiB aligned (and not 1 GiB aligned, so no side
 *     moves whole 1 GiB tables): ours moves leaf-table pages (one
 *     upper-level entry per 2 MiB), the kernel moves PMDs.
 *   remap_batch_64_vs_kernel
 *     64 moves of 2 MiB between random non-overlapping 2 MiB-aligned
 *     slots (fixed seed) of a range of BATCH_SLOTS slots: ours, one
 *     smmu_mremap_batch of the 64 (one lock, one gather, one shootdown);
 *     the kernel, 64 mremap calls, each onto a reserved PROT_NONE slot.
 *
 * ns/page: a repetition's time (both moves) / the pages it moved (2 x the
 * pages of the case).  GB/s: bytes of mapping moved (10^9 bytes) per
 * second, from the median repetition of each side.
 * The same pieces are also read on the thread's CPU clock
 * (CLOCK_THREAD_CPUTIME_ID: user and system time of this thread, so the
 * kernel's mremap counts and time spent preempted does not): that ratio
 * is a note and "cpu_clock_ratio" in the JSON, not under "ratios".
 *
 * Memory: ours holds SIZE bytes of pool frames, the kernel SIZE bytes of
 * anonymous memory, at once (about 2.2 x SIZE with page tables, the pool's
 * slack and the TLB).  MemAvailable is checked first; when it is short,
 * SIZE is halved until it fits, with a note.
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
#include "cpu.h" /* white-box: the size of ours' TLB at each move */

#define PAGE 4096ull
#define PMD_BYTES (2ull << 20)
#define GIB (1ull << 30)
#define RW (SMMU_PROT_READ | SMMU_PROT_WRITE)
#define CHUNKS 2 /* there and back */

#define BATCH_MOVES 64
#define BATCH_SLOTS 512 /* 1 GiB of 2 MiB slots to scatter 2 x 64 over */
#define BATCH_SEED 0x72656d6170ull

/* Where ours are placed: A at 4 GiB + 2 MiB, the batch range at 1 TiB + 2
 * MiB.  The kernel's reservations are 1 GiB aligned and use the same
 * offsets modulo 1 GiB, so both sides cut the same table boundaries. */
#define OURS_BASE (4ull * GIB)
#define OURS_BATCH_BASE (1024ull * GIB)

/* What the first word of page p of a case holds. */
static inline uint64_t page_tag(uint64_t p)
{
	return 0x7e3a5c0000000000ull ^ p;
}

/* One case: n moves of len bytes each, from[j] <-> to[j] on each side. */
struct rcase {
	const char *name;
	size_t n, len, pages; /* pages = n * len / PAGE */
	smmu_addr_t *o_from, *o_to;
	struct smmu_remap *o_there, *o_back;
	char **k_from, **k_to;
	char *k_resv; /* the kernel's PROT_NONE reservation */
	size_t k_resv_len;
	/* each side's timed pieces in call order: rep r is [2r] + [2r+1] */
	double *t_ours, *t_kern;
	double *cpu_ours, *cpu_kern; /* the same pieces on the thread's CPU clock */
	size_t nt_ours, nt_kern, cap;
	size_t *tlb_entries;   /* ours: the TLB's size at each timed move */
	struct smmu_stats acc; /* ours: counter deltas over the timed moves */
	uint64_t moves_ours;
};

struct ctx {
	bool untouched;    /* --untouched */
	bool adaptive_tlb; /* --adaptive-tlb */
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	struct rcase *rc;
};

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n, sz);

	if (!p)
		bench_die("out of memory");
	return p;
}

/* ------------------------------------------------------------ checks */

/* Load and check the first word of every page of the case at its current
 * place (from[] before piece 0, to[] before piece 1): the untimed touch. */
static void touch_ours(struct ctx *c, const smmu_addr_t *at)
{
	struct rcase *rc = c->rc;
	size_t per = rc->len / PAGE;

	for (size_t j = 0; j < rc->n; j++)
		for (size_t i = 0; i < per; i++) {
			uint64_t p = j * per + i, v = smmu_load64(c->cpu, at[j] + i * PAGE);

			if (v != page_tag(p))
				bench_die("%s: ours: page %" PRIu64 " at 0x%" PRIx64 " holds 0x%" PRIx64
					  ", want 0x%" PRIx64,
					  rc->name, p, (uint64_t)(at[j] + i * PAGE), v, page_tag(p));
		}
}

static void touch_kern(struct rcase *rc, char *const *at)
{
	size_t per = rc->len / PAGE;

	for (size_t j = 0; j < rc->n; j++)
		for (size_t i = 0; i < per; i++) {
			uint64_t p = j * per + i;
			uint64_t v = __atomic_load_n((const uint64_t *)(at[j] + i * PAGE), __ATOMIC_RELAXED);

			if (v != page_tag(p))
				bench_die("%s: kernel: page %" PRIu64 " at %p holds 0x%" PRIx64 ", want 0x%" PRIx64,
					  rc->name, p, (void *)(at[j] + i * PAGE), v, page_tag(p));
		}
}

static void reserve_at(char *p, size_t len)
{
	void *q = mmap(p, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);

	if (q == MAP_FAILED)
		bench_die("mmap(PROT_NONE, FIXED_NOREPLACE at %p, %zu): %s", (void *)p, len, strerror(errno));
	if (q != p)
		bench_die("mmap(FIXED_NOREPLACE at %p) returned %p (kernel without MAP_FIXED_NOREPLACE?)", (void *)p,
			  q);
}

/* ------------------------------------------------------------ pieces */

/* This thread's CPU time: the timed part without the time the thread was
 * preempted (two shared cores, other work on them). */
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
		bench_die("clock_gettime(CLOCK_THREAD_CPUTIME_ID): %s", strerror(errno));
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* v has room for reps * CHUNKS pieces (rcase_init) */
static void record(double *v, size_t *n, size_t cap, double t)
{
	if (*n == cap)
		bench_die("more timed pieces than reps x %d", CHUNKS);
	v[(*n)++] = t;
}

static double move_ours(void *arg, int k)
{
	struct ctx *c = arg;
	struct rcase *rc = c->rc;
	const smmu_addr_t *from = k == 0 ? rc->o_from : rc->o_to;
	const struct smmu_remap *moves = k == 0 ? rc->o_there : rc->o_back;
	struct smmu_stats s0, s1;
	uint64_t t0, t1, u0, u1;
	size_t tlb;

	if (c->untouched)
		BENCH_CHECK(smmu_tlb_flush_all(c->cpu));
	else
		touch_ours(c, from);
	BENCH_CHECK(smmu_stats_get(c->mm, &s0));
	tlb = ((struct smmu__cpu *)c->cpu)->tlb->entries;
	u0 = thread_cpu_ns();
	t0 = bench_now_ns();
	if (rc->n == 1)
		BENCH_CHECK(smmu_mremap(c->mm, moves[0].from, moves[0].len, moves[0].to, 0));
	else
		BENCH_CHECK(smmu_mremap_batch(c->mm, moves, rc->n));
	t1 = bench_now_ns();
	u1 = thread_cpu_ns();
	BENCH_CHECK(smmu_stats_get(c->mm, &s1));
	bench_stats_accumulate(&rc->acc, &s0, &s1);
	rc->moves_ours += rc->n;
	rc->cpu_ours[rc->nt_ours] = (double)(u1 - u0);
	record(rc->t_ours, &rc->nt_ours, rc->cap, (double)(t1 - t0));
	rc->tlb_entries[rc->nt_ours - 1] = tlb;
	return (double)(t1 - t0);
}

static double move_kern(void *arg, int k)
{
	struct ctx *c = arg;
	struct rcase *rc = c->rc;
	char *const *from = k == 0 ? rc->k_from : rc->k_to;
	char *const *to = k == 0 ? rc->k_to : rc->k_from;
	uint64_t t0, t1, u0, u1;

	if (!c->untouched)
		touch_kern(rc, from);
	u0 = thread_cpu_ns();
	t0 = bench_now_ns();
	for (size_t j = 0; j < rc->n; j++) {
		void *q = mremap(from[j], rc->len, rc->len, MREMAP_MAYMOVE | MREMAP_FIXED, to[j]);

		if (q != to[j])
			bench_die("%s: mremap(%p -> %p, %zu): %s", rc->name, (void *)from[j], (void *)to[j], rc->len,
				  q == MAP_FAILED ? strerror(errno) : "moved elsewhere");
	}
	t1 = bench_now_ns();
	u1 = thread_cpu_ns();
	/* the vacated sources are the next move's destinations: reserved */
	for (size_t j = 0; j < rc->n; j++)
		reserve_at(from[j], rc->len);
	rc->cpu_kern[rc->nt_kern] = (double)(u1 - u0);
	record(rc->t_kern, &rc->nt_kern, rc->cap, (double)(t1 - t0));
	return (double)(t1 - t0);
}

/* ------------------------------------------------------------ setup */

static void rcase_init(struct rcase *rc, const char *name, size_t n, size_t len, int reps)
{
	memset(rc, 0, sizeof(*rc));
	rc->name = name;
	rc->n = n;
	rc->len = len;
	rc->pages = n * len / PAGE;
	rc->o_from = xcalloc(n, sizeof(*rc->o_from));
	rc->o_to = xcalloc(n, sizeof(*rc->o_to));
	rc->o_there = xcalloc(n, sizeof(*rc->o_there));
	rc->o_back = xcalloc(n, sizeof(*rc->o_back));
	rc->k_from = xcalloc(n, sizeof(*rc->k_from));
	rc->k_to = xcalloc(n, sizeof(*rc->k_to));
	rc->cap = (size_t)reps * CHUNKS;
	rc->t_ours = xcalloc(rc->cap, sizeof(double));
	rc->t_kern = xcalloc(rc->cap, sizeof(double));
	rc->cpu_ours = xcalloc(rc->cap + 1, sizeof(double));
	rc->cpu_kern = xcalloc(rc->cap + 1, sizeof(double));
	rc->tlb_entries = xcalloc(rc->cap, sizeof(size_t));
}

static void rcase_free(struct rcase *rc)
{
	free(rc->o_from);
	free(rc->o_to);
	free(rc->o_there);
	free(rc->o_back);
	free(rc->k_from);
	free(rc->k_to);
	free(rc->t_ours);
	free(rc->t_kern);
	free(rc->cpu_ours);
	free(rc->cpu_kern);
	free(rc->tlb_entries);
}

/* A PROT_NONE reservation of len bytes whose start is 1 GiB aligned. */
static char *reserve_aligned(struct rcase *rc, size_t len)
{
	size_t total = len + GIB;
	char *p = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uintptr_t base;

	if (p == MAP_FAILED)
		bench_die("mmap(PROT_NONE, %zu): %s", total, strerror(errno));
	rc->k_resv = p;
	rc->k_resv_len = total;
	base = ((uintptr_t)p + GIB - 1) & ~(uintptr_t)(GIB - 1);
	return (char *)base;
}

/* Fill in the moves' addresses (from[], to[] on each side) before this. */
static void rcase_map(struct ctx *c, struct rcase *rc)
{
	size_t per = rc->len / PAGE;

	for (size_t j = 0; j < rc->n; j++) {
		smmu_addr_t got;
		char *p;

		rc->o_there[j] = (struct smmu_remap){rc->o_from[j], rc->o_to[j], rc->len};
		rc->o_back[j] = (struct smmu_remap){rc->o_to[j], rc->o_from[j], rc->len};

		BENCH_CHECK(smmu_mmap(c->mm, rc->o_from[j], rc->len, RW, SMMU_MAP_FIXED_NOREPLACE | SMMU_MAP_POPULATE,
				      &got));
		for (size_t i = 0; i < per; i++)
			smmu_store64(c->cpu, rc->o_from[j] + i * PAGE, page_tag(j * per + i));

		p = mmap(rc->k_from[j], rc->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
			 0);
		if (p != rc->k_from[j])
			bench_die("mmap(FIXED at %p, %zu): %s", (void *)rc->k_from[j], rc->len, strerror(errno));
		/* 4 KiB pages, as ours (EINVAL: no THP in this kernel) */
		if (madvise(p, rc->len, MADV_NOHUGEPAGE) != 0 && errno != EINVAL)
			bench_die("madvise(MADV_NOHUGEPAGE): %s", strerror(errno));
		for (size_t i = 0; i < per; i++)
			*(volatile uint64_t *)(p + i * PAGE) = page_tag(j * per + i);
	}
}

/* After an even number of moves everything is back at from[]: check it
 * and unmap. */
static void rcase_unmap(struct ctx *c, struct rcase *rc)
{
	touch_ours(c, rc->o_from);
	touch_kern(rc, rc->k_from);
	for (size_t j = 0; j < rc->n; j++)
		BENCH_CHECK(smmu_munmap(c->mm, rc->o_from[j], rc->len));
	if (munmap(rc->k_resv, rc->k_resv_len) != 0)
		bench_die("munmap: %s", strerror(errno));
}

/* One 1 GiB-style case: a single move of size bytes, A -> B and back. */
static void setup_single(struct rcase *rc, size_t size, size_t b_offset)
{
	size_t a_off = PMD_BYTES, b_off = a_off + size + PMD_BYTES + b_offset;
	char *base = reserve_aligned(rc, b_off + size + PMD_BYTES);

	rc->o_from[0] = OURS_BASE + a_off;
	rc->o_to[0] = OURS_BASE + b_off;
	rc->k_from[0] = base + a_off;
	rc->k_to[0] = base + b_off;
}

/* The batch: 2 x BATCH_MOVES distinct slots of BATCH_SLOTS, shuffled with
 * a fixed seed: the first half are sources, the second destinations. */
static void setup_batch(struct rcase *rc)
{
	unsigned slot[BATCH_SLOTS];
	uint64_t seed = BATCH_SEED;
	size_t off = PMD_BYTES; /* 2 MiB past a 1 GiB boundary, as A */
	char *base = reserve_aligned(rc, off + (size_t)BATCH_SLOTS * PMD_BYTES + PMD_BYTES);

	for (unsigned i = 0; i < BATCH_SLOTS; i++)
		slot[i] = i;
	for (unsigned i = BATCH_SLOTS - 1; i > 0; i--) {
		unsigned j = (unsigned)(bench_splitmix64(&seed) % (i + 1)), t = slot[i];

		slot[i] = slot[j];
		slot[j] = t;
	}
	for (size_t j = 0; j < BATCH_MOVES; j++) {
		size_t s = off + slot[j] * PMD_BYTES, d = off + slot[BATCH_MOVES + j] * PMD_BYTES;

		rc->o_from[j] = OURS_BATCH_BASE + s;
		rc->o_to[j] = OURS_BATCH_BASE + d;
		rc->k_from[j] = base + s;
		rc->k_to[j] = base + d;
	}
}

/* ------------------------------------------------------------ memory */

static uint64_t mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	unsigned long long kb;
	uint64_t v = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
			v = (uint64_t)kb << 10;
			break;
		}
	fclose(f);
	return v;
}

static uint64_t pool_bytes(uint64_t size)
{
	uint64_t data = size > BATCH_MOVES * PMD_BYTES ? size : BATCH_MOVES * PMD_BYTES;

	/* page tables (a few pages a 2 MiB, both ends of a move) and room */
	return data + data / 16 + (16ull << 20);
}

/* Both sides at once: the pool, the kernel's copy, its page tables, the
 * software TLB (up to 8 MiB) and a margin. */
static uint64_t need_bytes(uint64_t size)
{
	uint64_t data = size > BATCH_MOVES * PMD_BYTES ? size : BATCH_MOVES * PMD_BYTES;

	return pool_bytes(size) + data + data / 256 + (8ull << 20) + (128ull << 20);
}

/* ------------------------------------------------------------ report */

/* The median over repetitions of ours / peer, each a repetition's pieces
 * summed (as the report's ratio). */
static double rep_ratio_median(const double *a, const double *b, size_t n)
{
	size_t reps = n / CHUNKS;
	double *v = xcalloc(reps ? reps : 1, sizeof(double)), m;

	for (size_t r = 0; r < reps; r++) {
		double x = 0, y = 0;

		for (int k = 0; k < CHUNKS; k++) {
			x += a[r * CHUNKS + (size_t)k];
			y += b[r * CHUNKS + (size_t)k];
		}
		v[r] = y > 0 ? x / y : 0;
	}
	m = bench_median(v, reps);
	free(v);
	return m;
}

static double rep_median(const double *t, size_t n)
{
	size_t reps = n / CHUNKS;
	double *v = xcalloc(reps ? reps : 1, sizeof(double)), m;

	for (size_t r = 0; r < reps; r++)
		for (int k = 0; k < CHUNKS; k++)
			v[r] += t[r * CHUNKS + (size_t)k];
	m = bench_median(v, reps);
	free(v);
	return m;
}

static void report_case(struct bench_report *r, struct rcase *rc, FILE *json, bool first)
{
	double pages = (double)rc->pages * CHUNKS, bytes = pages * (double)PAGE;
	double mo = rep_median(rc->t_ours, rc->nt_ours), mk = rep_median(rc->t_kern, rc->nt_kern);
	double calls = (double)rc->moves_ours / (double)rc->n; /* timed calls of ours */
	const struct smmu_stats *a = &rc->acc;
	size_t lo = rc->tlb_entries[0], hi = lo;
	double co = rep_median(rc->cpu_ours, rc->nt_ours), ck = rep_median(rc->cpu_kern, rc->nt_kern);
	double cratio = rep_ratio_median(rc->cpu_ours, rc->cpu_kern, rc->nt_ours);

	for (size_t i = 1; i < rc->nt_ours; i++) {
		lo = rc->tlb_entries[i] < lo ? rc->tlb_entries[i] : lo;
		hi = rc->tlb_entries[i] > hi ? rc->tlb_entries[i] : hi;
	}
	bench_report_note(r,
			  "%s: ours %.2f ns/page %.1f GB/s, kernel %.2f ns/page %.1f GB/s (median rep; %zu move%s x "
			  "%zu KiB; per move: ours %.1f us, kernel %.1f us)",
			  rc->name, mo / pages, bytes / mo, mk / pages, bytes / mk, rc->n, rc->n == 1 ? "" : "s",
			  rc->len >> 10, mo / (CHUNKS * (double)rc->n) / 1e3, mk / (CHUNKS * (double)rc->n) / 1e3);
	bench_report_note(r,
			  "%s: on the thread's CPU clock (preemption left out): ratio %.3f; ours %.2f ns/page, kernel "
			  "%.2f ns/page",
			  rc->name, cratio, co / pages, ck / pages);
	bench_report_note(r,
			  "%s: ours per call: %.2f gathers, %.2f full / %.2f range flushes, %.2f shootdowns, %.1f "
			  "table pages freed; TLB at the move %zu .. %zu entries (%zu .. %zu KiB)",
			  rc->name, (double)a->gathers / calls, (double)a->flush_full / calls,
			  (double)a->flush_range / calls, (double)a->shootdowns / calls,
			  (double)a->tables_freed / calls, lo, hi, lo * sizeof(struct smmu_tlb_entry) >> 10,
			  hi * sizeof(struct smmu_tlb_entry) >> 10);
	fprintf(json,
		"%s\"%s\":{\"moves_per_call\":%zu,\"bytes_per_move\":%zu,\"pages_per_rep\":%.0f,"
		"\"ours_ns_per_page\":%.3f,\"kernel_ns_per_page\":%.3f,\"ours_gb_per_s\":%.3f,\"kernel_gb_per_s\":%.3f,"
		"\"ours_tlb_entries_min\":%zu,\"ours_tlb_entries_max\":%zu,\"cpu_clock_ratio\":%.6g,"
		"\"ours_cpu_ns_per_page\":%.3f,\"kernel_cpu_ns_per_page\":%.3f,\"ours_stats_delta\":",
		first ? "" : ",", rc->name, rc->n, rc->len, pages, mo / pages, mk / pages, bytes / mo, bytes / mk, lo,
		hi, cratio, co / pages, ck / pages);
	smmu_stats_print_json(a, json);
	fputc('}', json);
}

struct remap_opts {
	uint64_t size;
	bool untouched, adaptive_tlb;
};

static int remap_opt(const char *opt, const char *val, void *arg)
{
	struct remap_opts *ro = arg;

	if (!strcmp(opt, "--size")) {
		ro->size = bench_parse_size(opt, val);
		return 2;
	}
	if (!strcmp(opt, "--untouched")) {
		ro->untouched = true;
		return 1;
	}
	if (!strcmp(opt, "--adaptive-tlb")) {
		ro->adaptive_tlb = true;
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	struct bench_report *r;
	struct smmu_pool_config pc;
	struct ctx c;
	struct rcase cases[3];
	struct remap_opts ro = {0, false, false};
	uint64_t size, asked, avail, need;
	long host_page = sysconf(_SC_PAGESIZE);
	char thp[32], *js = NULL;
	size_t jslen = 0;
	size_t free0;
	FILE *jf;
	bool scaled = false;

	bench_parse_args(&o, argc, argv, "bench-remap",
			 "  --size SIZE   bytes each 1 GiB case moves (default 1g; quick 256m; a multiple of 2m,\n"
			 "                at least 64m; halved while MemAvailable is short of ~2.2 x SIZE)\n"
			 "  --untouched   no touch of the pages before each move (ours: its TLB flushed instead)\n"
			 "  --adaptive-tlb  ours' TLB sized by the library's adaptive policy, not fixed per case",
			 remap_opt, &ro);
	size = ro.size;
	if (!size)
		size = o.quick ? 256ull << 20 : GIB;
	if (host_page != (long)PAGE)
		bench_die("host page size is %ld, this bench compares 4 KiB pages", host_page);
	if (size < (64ull << 20) || size > 256 * GIB || size % PMD_BYTES)
		bench_die("--size must be a multiple of 2 MiB, at least 64 MiB (and at most 256 GiB)");
	asked = size;
	avail = mem_available();
	need = need_bytes(size);
	while (avail && need_bytes(size) > avail && size / 2 >= (64ull << 20)) {
		size = (size / 2) & ~(PMD_BYTES - 1);
		scaled = true;
	}
	if (avail && need_bytes(size) > avail)
		bench_die("MemAvailable is %" PRIu64 " MiB; even --size %" PRIu64 " MiB needs %" PRIu64 " MiB",
			  avail >> 20, size >> 20, need_bytes(size) >> 20);

	memset(&c, 0, sizeof(c));
	c.untouched = ro.untouched;
	c.adaptive_tlb = ro.adaptive_tlb;
	r = bench_report_new("bench-remap", &o);
	bench_thp_mode(thp, sizeof(thp));
	bench_report_config_u64(r, "bytes", size);
	bench_report_config_u64(r, "pages", size / PAGE);
	bench_report_config_u64(r, "batch_moves", BATCH_MOVES);
	bench_report_config_u64(r, "batch_move_bytes", PMD_BYTES);
	bench_report_config_u64(r, "batch_slots", BATCH_SLOTS);
	bench_report_config_u64(r, "pool_bytes", pool_bytes(size));
	bench_report_config_u64(r, "mem_available", avail);
	bench_report_config_str(r, "ours", "smmu_mremap / one smmu_mremap_batch (timed) of populated 4 KiB frames");
	bench_report_config_str(r, "peer", "mremap(MAYMOVE|FIXED) onto PROT_NONE (timed) of touched NOHUGEPAGE memory");
	bench_report_config_str(r, "thp", thp);
	bench_report_config_str(r, "before_each_move",
				ro.untouched ? "nothing touched (ours: own TLB flushed, untimed)"
					     : "every source page loaded and checked (untimed)");
	bench_report_config_str(r, "ours_tlb",
				ro.adaptive_tlb ? "adaptive (library default)"
						: "fixed: pages touched by the case, rounded up to 2^k");
	if (scaled) {
		bench_report_config_u64(r, "size_asked", asked);
		fprintf(bench_report_table(r),
			"# note: MemAvailable %" PRIu64 " MiB < %" PRIu64 " MiB needed for %" PRIu64
			" MiB: scaled down to %" PRIu64 " MiB\n",
			avail >> 20, need >> 20, asked >> 20, size >> 20);
		bench_report_note(
			r, "NOTE: scaled down from %" PRIu64 " MiB to %" PRIu64 " MiB (MemAvailable %" PRIu64 " MiB)",
			asked >> 20, size >> 20, avail >> 20);
	}
	bench_report_header(r);

	/* One thread does everything on both sides; keep it on one CPU so the
	 * kernel's flushes stay local too (no IPIs to CPUs it left). */
	bench_pin_main();

	memset(&pc, 0, sizeof(pc));
	pc.size = pool_bytes(size);
	pc.page_size = PAGE;
	BENCH_CHECK(smmu_pool_create(&pc, &c.pool));
	if (smmu_pool_page_size(c.pool) != PAGE)
		bench_die("pool page size %zu, asked for 4096", smmu_pool_page_size(c.pool));
	BENCH_CHECK(smmu_mm_create(c.pool, &c.mm));
	free0 = smmu_pool_free_frames(c.pool);

	rcase_init(&cases[0], "remap_1g_4k_offset_vs_kernel", 1, size, o.reps);
	setup_single(&cases[0], size, PAGE);
	rcase_init(&cases[1], "remap_1g_2m_aligned_vs_kernel", 1, size, o.reps);
	setup_single(&cases[1], size, 0);
	rcase_init(&cases[2], "remap_batch_64_vs_kernel", BATCH_MOVES, PMD_BYTES, o.reps);
	setup_batch(&cases[2]);

	jf = open_memstream(&js, &jslen);
	if (!jf)
		bench_die("out of memory");
	fputc('{', jf);
	for (int i = 0; i < 3; i++) {
		struct rcase *rc = &cases[i];
		struct bench_case *bc;
		size_t free_after;

		c.rc = rc;
		/* A CPU of its own per case: its TLB starts at the default size
		 * and grows to what this case touches, not to what the case
		 * before it touched (a full flush clears the whole table). */
		if (c.adaptive_tlb) {
			BENCH_CHECK(smmu_cpu_register(c.mm, &c.cpu));
		} else {
			struct smmu_cpu_config cc = {0, 0, 0};

			cc.tlb_entries = 16;
			while (cc.tlb_entries < rc->pages && cc.tlb_entries < (1u << 18))
				cc.tlb_entries *= 2;
			cc.tlb_max_entries = cc.tlb_entries;
			BENCH_CHECK(smmu_cpu_register_ex(c.mm, &cc, &c.cpu));
		}
		rcase_map(&c, rc);
		bc = bench_report_case(r, rc->name, rc->n == 1 ? "kernel mremap" : "64 kernel mremaps",
				       (double)rc->pages * CHUNKS, "page");
		bench_case_run_chunked(bc, o.reps, CHUNKS, move_ours, move_kern, &c);
		rcase_unmap(&c, rc);
		BENCH_CHECK(smmu_cpu_unregister(c.cpu));
		free_after = smmu_pool_free_frames(c.pool);
		if (free_after != free0)
			bench_report_note(r, "WARNING: %s: pool has %zu free frames after smmu_munmap, %zu before",
					  rc->name, free_after, free0);
		report_case(r, rc, jf, i == 0);
	}
	fputc('}', jf);
	if (fclose(jf) != 0 || !js)
		bench_die("out of memory");
	bench_report_json(r, "moves", js);
	free(js);
	bench_report_note(r, "ns/page: a repetition (there and back) / pages moved; GB/s: 10^9 bytes of mapping moved "
			     "per second; main thread pinned to one CPU");

	BENCH_CHECK(smmu_mm_destroy(c.mm));
	BENCH_CHECK(smmu_pool_destroy(c.pool));
	for (int i = 0; i < 3; i++)
		rcase_free(&cases[i]);

	bench_report_finish(r);
	return 0;
}
