/* SPDX-License-Identifier: MIT */
/*
 * bench-unmap: tearing down a large, fully touched mapping, against the
 * kernel's munmap of the same amount of touched anonymous memory in the
 * same run.
 *
 *   unmap_1g_vs_kernel  ours: smmu_mmap 1 GiB read-write with
 *                       SMMU_MAP_POPULATE and a one-byte store to every
 *                       page through a registered CPU (untimed), then time
 *                       smmu_munmap of the whole range.  Peer: mmap
 *                       MAP_PRIVATE|MAP_ANONYMOUS 1 GiB (transparent huge
 *                       pages refused with MADV_NOHUGEPAGE, so it is 4 KiB
 *                       pages), write one byte per page (untimed), time
 *                       munmap.
 *
 *   unmap_1g_remote_vs_kernel
 *                       the same with one other CPU running: ours, a
 *                       thread registered as a CPU of the same mm loops
 *                       smmu_load64 over a small separate mapping (4
 *                       pages); the kernel, a plain thread loops relaxed
 *                       loads over 4 touched pages of the process.  Each
 *                       side's remote is started (and seen loading) after
 *                       the untimed setup and parked (blocked; ours also
 *                       offline) after the timed munmap, so the two never
 *                       run at once.  The main thread and the remote are
 *                       pinned to different CPUs for this case only.
 *
 * Per-page times are the timed part divided by the number of 4 KiB pages.
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

#define SMALL_BYTES (BENCH_REMOTE_PAGES * BENCH_REMOTE_PAGE) /* the remotes' area, each side */

struct unmap_ctx {
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	size_t size, page, pages;
	size_t free_before;    /* pool frames free before each of our mappings */
	uint64_t not_returned; /* frames missing from the pool after a munmap, summed */
	double *setup_ours, *setup_peer;
	int nsetup_ours, nsetup_peer;
	/* unmap_1g_remote_vs_kernel: NULL in unmap_1g_vs_kernel */
	struct bench_remote *remote_ours, *remote_peer;
	struct smmu_stats remote_acc;           /* ours: counter deltas over the timed munmaps */
	uint64_t remote_idle[2];                /* timed munmaps the remote made no load in: [0] ours, [1] peer */
	double remote_wall[2], remote_oncpu[2]; /* the remote's on-CPU time within the timed munmaps */
	bool oncpu_unknown;
};

/* Before and after a timed munmap: what the remote (if any) did. */
struct remote_mark {
	uint64_t loads, wall;
	int64_t oncpu;
};

static void remote_mark(struct bench_remote *r, struct remote_mark *m)
{
	if (!r)
		return;
	m->oncpu = bench_remote_oncpu_ns(r);
	m->loads = bench_remote_loads(r);
	m->wall = bench_now_ns();
}

static void remote_account(struct unmap_ctx *c, int side, const struct remote_mark *a, const struct remote_mark *b)
{
	if (b->loads == a->loads)
		c->remote_idle[side]++;
	c->remote_wall[side] += (double)(b->wall - a->wall);
	if (a->oncpu < 0 || b->oncpu < 0)
		c->oncpu_unknown = true;
	else
		c->remote_oncpu[side] += (double)(b->oncpu - a->oncpu);
}

static double unmap_ours(void *arg)
{
	struct unmap_ctx *c = arg;
	smmu_addr_t a;
	uint64_t s0, t0, t1;
	size_t free_after;
	struct smmu_stats st0, st1;
	struct remote_mark m0 = {0, 0, 0}, m1 = {0, 0, 0};

	s0 = bench_now_ns();
	BENCH_CHECK(smmu_mmap(c->mm, 0, c->size, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE, &a));
	for (size_t i = 0; i < c->pages; i++)
		smmu_store8(c->cpu, a + i * c->page, 1);
	if (smmu_load8(c->cpu, a + (c->pages - 1) * c->page) != 1)
		bench_die("smmu_load8 of the last page did not return the byte just stored");
	if (c->remote_ours) {
		bench_remote_run(c->remote_ours);
		BENCH_CHECK(smmu_stats_get(c->mm, &st0));
		remote_mark(c->remote_ours, &m0);
	}
	t0 = bench_now_ns();
	BENCH_CHECK(smmu_munmap(c->mm, a, c->size));
	t1 = bench_now_ns();
	if (c->remote_ours) {
		remote_mark(c->remote_ours, &m1);
		BENCH_CHECK(smmu_stats_get(c->mm, &st1));
		bench_remote_park(c->remote_ours);
		remote_account(c, 0, &m0, &m1);
		bench_stats_accumulate(&c->remote_acc, &st0, &st1);
	}
	c->setup_ours[c->nsetup_ours++] = (double)(t0 - s0);

	free_after = smmu_pool_free_frames(c->pool);
	if (free_after < c->free_before)
		c->not_returned += c->free_before - free_after;
	return (double)(t1 - t0);
}

static double unmap_peer(void *arg)
{
	struct unmap_ctx *c = arg;
	volatile unsigned char *p;
	uint64_t s0, t0, t1;
	struct remote_mark m0 = {0, 0, 0}, m1 = {0, 0, 0};

	s0 = bench_now_ns();
	p = mmap(NULL, c->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		bench_die("mmap(%zu bytes): %s", c->size, strerror(errno));
	/* 4 KiB pages, as ours: no transparent huge pages (EINVAL: no THP
	 * support in this kernel, which is just as well) */
	if (madvise((void *)p, c->size, MADV_NOHUGEPAGE) != 0 && errno != EINVAL)
		bench_die("madvise(MADV_NOHUGEPAGE): %s", strerror(errno));
	for (size_t i = 0; i < c->pages; i++)
		p[i * c->page] = 1;
	if (c->remote_peer) {
		bench_remote_run(c->remote_peer);
		remote_mark(c->remote_peer, &m0);
	}
	t0 = bench_now_ns();
	if (munmap((void *)p, c->size) != 0)
		bench_die("munmap: %s", strerror(errno));
	t1 = bench_now_ns();
	if (c->remote_peer) {
		remote_mark(c->remote_peer, &m1);
		bench_remote_park(c->remote_peer);
		remote_account(c, 1, &m0, &m1);
	}
	c->setup_peer[c->nsetup_peer++] = (double)(t0 - s0);
	return (double)(t1 - t0);
}

static int unmap_opt(const char *opt, const char *val, void *arg)
{
	uint64_t *size = arg;

	if (!strcmp(opt, "--size")) {
		*size = bench_parse_size(opt, val);
		return 2;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	struct bench_report *r;
	struct bench_case *bc;
	struct smmu_pool_config pc;
	struct unmap_ctx c;
	uint64_t size = 0, pool_size;
	long host_page = sysconf(_SC_PAGESIZE);
	char thp[32], json[512];

	bench_parse_args(&o, argc, argv, "bench-unmap",
			 "  --size SIZE   bytes to map, touch and unmap per repetition (default 1g; quick 256m)",
			 unmap_opt, &size);
	if (!size)
		size = o.quick ? 256ull << 20 : 1ull << 30;
	if (host_page != 4096)
		bench_die("host page size is %ld, this bench compares 4 KiB pages", host_page);
	if (size < (1u << 20) || size % 4096)
		bench_die("--size must be a multiple of 4 KiB, at least 1 MiB");
	pool_size = size + size / 16 + (16ull << 20);

	memset(&c, 0, sizeof(c));
	c.size = (size_t)size;
	c.page = 4096;
	c.pages = c.size / c.page;
	c.setup_ours = calloc((size_t)o.reps, sizeof(double));
	c.setup_peer = calloc((size_t)o.reps, sizeof(double));
	if (!c.setup_ours || !c.setup_peer)
		bench_die("out of memory");

	r = bench_report_new("bench-unmap", &o);
	bench_thp_mode(thp, sizeof(thp));
	bench_report_config_u64(r, "bytes", size);
	bench_report_config_u64(r, "pages", c.pages);
	bench_report_config_u64(r, "page_bytes", c.page);
	bench_report_config_u64(r, "pool_bytes", pool_size);
	bench_report_config_str(r, "ours", "smmu_mmap POPULATE + smmu_store8 per page (untimed), smmu_munmap (timed)");
	bench_report_config_str(r, "peer", "mmap + MADV_NOHUGEPAGE + 1-byte write per page (untimed), munmap (timed)");
	bench_report_config_str(r, "thp", thp);
	bench_report_header(r);

	memset(&pc, 0, sizeof(pc));
	pc.region = NULL;
	pc.size = pool_size;
	pc.page_size = 4096;
	BENCH_CHECK(smmu_pool_create(&pc, &c.pool));
	if (smmu_pool_page_size(c.pool) != 4096)
		bench_die("pool page size %zu, asked for 4096", smmu_pool_page_size(c.pool));
	BENCH_CHECK(smmu_mm_create(c.pool, &c.mm));
	BENCH_CHECK(smmu_cpu_register(c.mm, &c.cpu));
	c.free_before = smmu_pool_free_frames(c.pool);
	if (c.free_before < c.pages)
		bench_die("pool has %zu free frames, need %zu", c.free_before, c.pages);

	bc = bench_report_case(r, "unmap_1g_vs_kernel", "kernel munmap", (double)c.pages, "page");
	bench_case_run(bc, o.reps, unmap_ours, unmap_peer, &c);

	{
		double so = bench_median(c.setup_ours, (size_t)c.nsetup_ours);
		double sp = bench_median(c.setup_peer, (size_t)c.nsetup_peer);
		struct smmu_stats st;

		BENCH_CHECK(smmu_stats_get(c.mm, &st));
		bench_report_note(r,
				  "untimed setup, median ns/page: ours (smmu_mmap POPULATE + store) %.1f, kernel "
				  "(page faults) %.1f",
				  so / (double)c.pages, sp / (double)c.pages);
		bench_report_note(r,
				  "ours: %" PRIu64 " frames freed, %" PRIu64 " table pages freed, %" PRIu64
				  " gathers, %" PRIu64 " full / %" PRIu64 " range flushes over all reps",
				  st.frames_freed, st.tables_freed, st.gathers, st.flush_full, st.flush_range);
		if (c.not_returned)
			bench_report_note(r, "WARNING: %" PRIu64 " frames were not back in the pool after smmu_munmap",
					  c.not_returned);
		snprintf(json, sizeof(json),
			 "{\"ours_ns_per_page\":%.2f,\"peer_ns_per_page\":%.2f,\"frames_not_returned\":%" PRIu64 "}",
			 so / (double)c.pages, sp / (double)c.pages, c.not_returned);
		bench_report_json(r, "setup", json);
		{
			char *s = bench_stats_json(&st);

			bench_report_json(r, "stats", s);
			free(s);
		}
	}

	/* --- the same with one other CPU running */
	{
		struct bench_remote ro, rp;
		smmu_addr_t small;
		uint64_t *host_small;
		uint64_t not_returned0 = c.not_returned;
		int rcpu;
		double so, sp, ops = (double)o.reps;
		char *s = NULL;
		size_t len = 0;
		FILE *f;

		bench_pin_main();
		rcpu = bench_remote_cpu(0);
		BENCH_CHECK(
			smmu_mmap(c.mm, 0, SMALL_BYTES, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE, &small));
		for (unsigned k = 0; k < BENCH_REMOTE_PAGES; k++)
			smmu_store64(c.cpu, small + (smmu_addr_t)k * BENCH_REMOTE_PAGE, bench_remote_want(k));
		host_small = mmap(NULL, SMALL_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
				  -1, 0);
		if (host_small == MAP_FAILED)
			bench_die("mmap(%u bytes): %s", SMALL_BYTES, strerror(errno));
		for (unsigned k = 0; k < BENCH_REMOTE_PAGES; k++)
			host_small[(size_t)k * (BENCH_REMOTE_PAGE / 8)] = bench_remote_want(k);
		bench_remote_start(&ro, BENCH_REMOTE_CPU, "ours (CPU)", c.mm, small, 0, NULL, rcpu);
		bench_remote_start(&rp, BENCH_REMOTE_HOST, "kernel (plain thread)", NULL, 0, 0, host_small, rcpu);
		c.remote_ours = &ro;
		c.remote_peer = &rp;
		c.nsetup_ours = c.nsetup_peer = 0;
		c.free_before = smmu_pool_free_frames(c.pool);
		if (c.free_before < c.pages)
			bench_die("pool has %zu free frames, need %zu", c.free_before, c.pages);

		bc = bench_report_case(r, "unmap_1g_remote_vs_kernel", "kernel munmap", (double)c.pages, "page");
		bench_case_run(bc, o.reps, unmap_ours, unmap_peer, &c);

		c.remote_ours = c.remote_peer = NULL;
		bench_remote_stop(&ro);
		bench_remote_stop(&rp);
		if (c.remote_idle[0] == (uint64_t)o.reps || c.remote_idle[1] == (uint64_t)o.reps)
			bench_die("unmap_1g_remote_vs_kernel: the %s remote made no load during any timed munmap: it "
				  "was not running",
				  c.remote_idle[0] == (uint64_t)o.reps ? "ours" : "kernel");

		so = bench_median(c.setup_ours, (size_t)c.nsetup_ours);
		sp = bench_median(c.setup_peer, (size_t)c.nsetup_peer);
		bench_report_note(r,
				  "unmap_1g_remote_vs_kernel: ours per munmap: %.2f signals sent, %.2f received, "
				  "%.2f acks deferred, %.2f shootdowns, %.2f full flushes",
				  (double)c.remote_acc.signals_sent / ops, (double)c.remote_acc.signals_received / ops,
				  (double)c.remote_acc.acks_deferred / ops, (double)c.remote_acc.shootdowns / ops,
				  (double)c.remote_acc.flush_full / ops);
		if (c.oncpu_unknown)
			bench_report_note(
				r,
				"unmap_1g_remote_vs_kernel: timed munmaps without a remote load: ours %" PRIu64
				"/%d, kernel %" PRIu64 "/%d (remote on-CPU time unknown)",
				c.remote_idle[0], o.reps, c.remote_idle[1], o.reps);
		else
			bench_report_note(
				r,
				"unmap_1g_remote_vs_kernel: remote on CPU during the timed munmaps: ours %.0f%%, "
				"kernel %.0f%% (thread CPU clock); munmaps without a remote load: ours %" PRIu64
				"/%d, kernel %" PRIu64 "/%d",
				100.0 * c.remote_oncpu[0] / c.remote_wall[0],
				100.0 * c.remote_oncpu[1] / c.remote_wall[1], c.remote_idle[0], o.reps,
				c.remote_idle[1], o.reps);
		if (c.remote_idle[0] || c.remote_idle[1])
			bench_report_note(r, "WARNING: unmap_1g_remote_vs_kernel: a remote made no load during some "
					     "timed munmaps (descheduled?)");
		bench_report_note(r,
				  "unmap_1g_remote_vs_kernel: untimed setup, median ns/page: ours %.1f, kernel %.1f; "
				  "main on one CPU, remote pinned to cpu %d",
				  so / (double)c.pages, sp / (double)c.pages, rcpu);
		if (c.not_returned > not_returned0)
			bench_report_note(r,
					  "WARNING: unmap_1g_remote_vs_kernel: %" PRIu64
					  " frames were not back in the pool after smmu_munmap",
					  c.not_returned - not_returned0);

		f = open_memstream(&s, &len);
		if (!f)
			bench_die("out of memory");
		fprintf(f,
			"{\"signals_sent_per_munmap\":%.3f,\"signals_received_per_munmap\":%.3f,"
			"\"acks_deferred_per_munmap\":%.3f,\"ours_idle_reps\":%" PRIu64 ",\"kernel_idle_reps\":%" PRIu64
			",\"remote_cpu\":%d,",
			(double)c.remote_acc.signals_sent / ops, (double)c.remote_acc.signals_received / ops,
			(double)c.remote_acc.acks_deferred / ops, c.remote_idle[0], c.remote_idle[1], rcpu);
		if (c.oncpu_unknown)
			fputs("\"ours_remote_oncpu_fraction\":null,\"kernel_remote_oncpu_fraction\":null,", f);
		else
			fprintf(f, "\"ours_remote_oncpu_fraction\":%.3f,\"kernel_remote_oncpu_fraction\":%.3f,",
				c.remote_oncpu[0] / c.remote_wall[0], c.remote_oncpu[1] / c.remote_wall[1]);
		fprintf(f,
			"\"setup_ours_ns_per_page\":%.2f,\"setup_peer_ns_per_page\":%.2f,\"frames_not_returned\":"
			"%" PRIu64 ",\"stats_delta\":",
			so / (double)c.pages, sp / (double)c.pages, c.not_returned - not_returned0);
		smmu_stats_print_json(&c.remote_acc, f);
		fputc('}', f);
		if (fclose(f) != 0 || !s)
			bench_die("out of memory");
		bench_report_json(r, "remote", s);
		free(s);

		BENCH_CHECK(smmu_munmap(c.mm, small, SMALL_BYTES));
		if (munmap(host_small, SMALL_BYTES) != 0)
			bench_die("munmap: %s", strerror(errno));
	}

	BENCH_CHECK(smmu_cpu_unregister(c.cpu));
	BENCH_CHECK(smmu_mm_destroy(c.mm));
	BENCH_CHECK(smmu_pool_destroy(c.pool));
	free(c.setup_ours);
	free(c.setup_peer);

	bench_report_finish(r);
	return 0;
}
