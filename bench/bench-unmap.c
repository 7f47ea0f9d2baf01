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

#include "bench_util.h"

struct unmap_ctx {
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	size_t size, page, pages;
	size_t free_before;    /* pool frames free before each of our mappings */
	uint64_t not_returned; /* frames missing from the pool after a munmap, summed */
	double *setup_ours, *setup_peer;
	int nsetup_ours, nsetup_peer;
};

static double unmap_ours(void *arg)
{
	struct unmap_ctx *c = arg;
	smmu_addr_t a;
	uint64_t s0, t0, t1;
	size_t free_after;

	s0 = bench_now_ns();
	BENCH_CHECK(smmu_mmap(c->mm, 0, c->size, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE, &a));
	for (size_t i = 0; i < c->pages; i++)
		smmu_store8(c->cpu, a + i * c->page, 1);
	if (smmu_load8(c->cpu, a + (c->pages - 1) * c->page) != 1)
		bench_die("smmu_load8 of the last page did not return the byte just stored");
	t0 = bench_now_ns();
	BENCH_CHECK(smmu_munmap(c->mm, a, c->size));
	t1 = bench_now_ns();
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
	t0 = bench_now_ns();
	if (munmap((void *)p, c->size) != 0)
		bench_die("munmap: %s", strerror(errno));
	t1 = bench_now_ns();
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

static void thp_mode(char *buf, size_t len)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	char line[128], *a, *b;

	snprintf(buf, len, "unknown");
	if (!f)
		return;
	if (fgets(line, sizeof(line), f) && (a = strchr(line, '[')) && (b = strchr(a, ']'))) {
		*b = 0;
		snprintf(buf, len, "%s", a + 1);
	}
	fclose(f);
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
	thp_mode(thp, sizeof(thp));
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
			char *s = NULL;
			size_t len = 0;
			FILE *f = open_memstream(&s, &len);

			if (!f)
				bench_die("out of memory");
			smmu_stats_print_json(&st, f);
			fclose(f);
			bench_report_json(r, "stats", s);
			free(s);
		}
	}

	BENCH_CHECK(smmu_cpu_unregister(c.cpu));
	BENCH_CHECK(smmu_mm_destroy(c.mm));
	BENCH_CHECK(smmu_pool_destroy(c.pool));
	free(c.setup_ours);
	free(c.setup_peer);

	bench_report_finish(r);
	return 0;
}
