/* SPDX-License-Identifier: MIT */
/*
 * Counters (<softmmu/stats.h>): they move as the documented events happen
 * - exactly where the behaviour is exact (one demand-zero fault per fresh
 * page, one miss per access after a full flush, no miss on a TLB hit, one
 * freed frame per unmapped touched page, one trapped fault per failed try_)
 * - and survive their CPU; the printers.  Public API only.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <softmmu/softmmu.h>

#define PS 4096u
#define RW (SMMU_PROT_READ | SMMU_PROT_WRITE)
#define R SMMU_PROT_READ
#define H ((smmu_addr_t)0x40000000)

struct env {
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
};

static void env_init(struct env *e, size_t frames)
{
	struct smmu_pool_config cfg = {.size = frames * PS};
	cr_assert_eq(smmu_pool_create(&cfg, &e->pool), 0);
	cr_assert_eq(smmu_mm_create(e->pool, &e->mm), 0);
	cr_assert_eq(smmu_cpu_register(e->mm, &e->cpu), 0);
}

static void env_fini(struct env *e)
{
	if (e->cpu)
		cr_assert_eq(smmu_cpu_unregister(e->cpu), 0);
	cr_assert_eq(smmu_mm_destroy(e->mm), 0);
	cr_assert_eq(smmu_pool_free_frames(e->pool), smmu_pool_frames(e->pool), "frames leaked");
	cr_assert_eq(smmu_pool_destroy(e->pool), 0);
}

static struct smmu_stats get(struct smmu_mm *mm)
{
	struct smmu_stats st;
	memset(&st, 0xff, sizeof(st));
	cr_assert_eq(smmu_stats_get(mm, &st), 0);
	return st;
}

Test(stats, fresh_mm_all_zero)
{
	struct env e;
	env_init(&e, 4);
	struct smmu_stats st = get(e.mm), zero;
	memset(&zero, 0, sizeof(zero));
	cr_assert_eq(memcmp(&st, &zero, sizeof(st)), 0, "a new mm has counted something");
	env_fini(&e);
}

Test(stats, exact_counts_single_cpu)
{
	struct env e;
	env_init(&e, 64);
	const unsigned n = 16;
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e.mm, H, n * PS, RW, SMMU_MAP_FIXED, &a), 0);
	struct smmu_stats s0 = get(e.mm);

	/* First touch of each page, a write: one miss, one demand-zero fault. */
	for (unsigned i = 0; i < n; i++)
		smmu_store64(e.cpu, a + i * PS, i);
	struct smmu_stats s1 = get(e.mm);
	cr_assert_eq(s1.faults_demand_zero - s0.faults_demand_zero, n);
	cr_assert_eq(s1.tlb_misses - s0.tlb_misses, n);
	cr_assert_geq(s1.tlb_fills - s0.tlb_fills, n);
	cr_assert_eq(s1.faults_trapped, s0.faults_trapped);

	/* Second pass, loads and stores of every aligned size: all TLB hits. */
	for (unsigned i = 0; i < n; i++) {
		cr_assert_eq(smmu_load64(e.cpu, a + i * PS), i);
		smmu_store32(e.cpu, a + i * PS + 8, i);
		cr_assert_eq(smmu_load16(e.cpu, a + i * PS + 8), i);
		smmu_store8(e.cpu, a + i * PS + 100, 1);
		cr_assert_eq(smmu_fetch_add64(e.cpu, a + i * PS + 16, 1), 0);
	}
	struct smmu_stats s2 = get(e.mm);
	cr_assert_eq(s2.tlb_misses, s1.tlb_misses, "a hit counted as a miss");
	cr_assert_eq(s2.tlb_fills, s1.tlb_fills);
	cr_assert_eq(s2.faults_demand_zero, s1.faults_demand_zero);

	/* Misaligned and page-crossing accesses always take the slow path. */
	cr_assert_eq(smmu_load32(e.cpu, a + 2), 0);
	smmu_store64(e.cpu, a + PS - 4, 0);
	struct smmu_stats s3 = get(e.mm);
	cr_assert_eq(s3.tlb_misses - s2.tlb_misses, 2);
	cr_assert_eq(s3.faults_demand_zero, s2.faults_demand_zero);

	/* After a full flush every access misses once. */
	cr_assert_eq(smmu_tlb_flush_all(e.cpu), 0);
	for (unsigned i = 0; i < n; i++)
		cr_assert_eq(smmu_load8(e.cpu, a + i * PS + 100), 1);
	struct smmu_stats s4 = get(e.mm);
	cr_assert_eq(s4.flush_full - s3.flush_full, 1);
	cr_assert_eq(s4.tlb_misses - s3.tlb_misses, n);
	cr_assert_eq(s4.faults_demand_zero, s3.faults_demand_zero);

	/* Failed try_ accesses: one trapped fault each. */
	uint64_t v;
	cr_assert_eq(smmu_try_load64(e.cpu, H + 100 * PS, &v), -EFAULT);
	cr_assert_eq(smmu_try_store8(e.cpu, H + 100 * PS, 1), -EFAULT);
	cr_assert_eq(smmu_mprotect(e.mm, a, PS, R), 0);
	cr_assert_eq(smmu_try_store8(e.cpu, a, 1), -EACCES);
	struct smmu_stats s5 = get(e.mm);
	cr_assert_eq(s5.faults_trapped - s4.faults_trapped, 3);
	cr_assert_geq(s5.gathers - s4.gathers, 1, "mprotect finished a gather");
	cr_assert_geq(s5.flush_range + s5.flush_full, s4.flush_range + s4.flush_full + 1,
		      "write-protecting a page the CPU holds flushed");
	cr_assert_eq(s5.frames_freed, s4.frames_freed, "mprotect freed frames");

	/* Unmap: one frame back per touched page. */
	cr_assert_eq(smmu_munmap(e.mm, a, n * PS), 0);
	struct smmu_stats s6 = get(e.mm);
	cr_assert_eq(s6.frames_freed - s5.frames_freed, n);
	cr_assert_geq(s6.gathers - s5.gathers, 1);
	cr_assert_geq(s6.flush_range + s6.flush_full, s5.flush_range + s5.flush_full + 1);
	cr_assert_eq(smmu_pool_free_frames(e.pool), 64);

	/* Unmapping untouched or empty ranges frees no frame. */
	cr_assert_eq(smmu_mmap(e.mm, H, 8 * PS, RW, SMMU_MAP_FIXED, &a), 0);
	cr_assert_eq(smmu_munmap(e.mm, H, 8 * PS), 0);
	cr_assert_eq(smmu_munmap(e.mm, H, 8 * PS), 0);
	struct smmu_stats s7 = get(e.mm);
	cr_assert_eq(s7.frames_freed, s6.frames_freed);
	cr_assert_eq(s7.faults_demand_zero, s6.faults_demand_zero);
	env_fini(&e);
}

Test(stats, populate_is_not_a_fault)
{
	struct env e;
	env_init(&e, 16);
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e.mm, 0, 8 * PS, RW, SMMU_MAP_POPULATE, &a), 0);
	for (unsigned i = 0; i < 8; i++)
		smmu_store64(e.cpu, a + i * PS, 1);
	struct smmu_stats st = get(e.mm);
	cr_assert_eq(st.faults_demand_zero, 0);
	cr_assert_eq(st.tlb_misses, 8);
	cr_assert_eq(smmu_munmap(e.mm, a, 8 * PS), 0);
	st = get(e.mm);
	cr_assert_eq(st.frames_freed, 8);
	env_fini(&e);
}

Test(stats, bulk_counts_pages)
{
	struct env e;
	env_init(&e, 16);
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e.mm, H, 6 * PS, RW, SMMU_MAP_FIXED, &a), 0);
	unsigned char buf[4 * PS];
	memset(buf, 3, sizeof(buf));
	cr_assert_eq(smmu_write(e.cpu, a + PS / 2, buf, sizeof(buf)), 0); /* 5 pages */
	struct smmu_stats st = get(e.mm);
	cr_assert_eq(st.faults_demand_zero, 5);
	cr_assert_geq(st.tlb_misses, 5);
	cr_assert_eq(smmu_pool_free_frames(e.pool), 11);
	env_fini(&e);
}

Test(stats, large_munmap_batches)
{
	const unsigned n = 1000;
	struct env e;
	env_init(&e, 1024);
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e.mm, H, n * PS, RW, SMMU_MAP_FIXED, &a), 0);
	for (unsigned i = 0; i < n; i++)
		smmu_store16(e.cpu, a + i * PS + 2 * (i % 100), (uint16_t)i);
	struct smmu_stats s0 = get(e.mm);
	cr_assert_eq(s0.faults_demand_zero, n);
	cr_assert_eq(smmu_pool_free_frames(e.pool), 1024 - n);
	/* Unmap all but the first and last page in one call: more frames than
	 * one on-stack batch holds. */
	cr_assert_eq(smmu_munmap(e.mm, a + PS, (n - 2) * PS), 0);
	struct smmu_stats s1 = get(e.mm);
	cr_assert_eq(s1.frames_freed - s0.frames_freed, n - 2);
	cr_assert_geq(s1.batch_extensions + s1.batch_fallbacks, s0.batch_extensions + s0.batch_fallbacks + 1,
		      "998 frames fit no single small batch");
	cr_assert_eq(smmu_pool_free_frames(e.pool), 1024 - 2);
	cr_assert_eq(smmu_load16(e.cpu, a), 0);
	cr_assert_eq(smmu_load16(e.cpu, a + (n - 1) * PS + 2 * ((n - 1) % 100)), n - 1);
	uint16_t v;
	cr_assert_eq(smmu_try_load16(e.cpu, a + PS, &v), -EFAULT);
	cr_assert_eq(smmu_try_load16(e.cpu, a + (n - 2) * PS, &v), -EFAULT);
	/* The space is reusable at once, zeroed. */
	cr_assert_eq(smmu_mmap(e.mm, a + PS, (n - 2) * PS, RW, SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &a), 0);
	cr_assert_eq(smmu_pool_free_frames(e.pool), 24);
	cr_assert_eq(smmu_load64(e.cpu, H + 500 * PS), 0);
	env_fini(&e);
}

/* Work by a thread that is no CPU of the mm, and by CPUs that left. */
struct departed_ctx {
	struct smmu_mm *mm;
	int ok;
};

static void *departed_thread(void *arg)
{
	struct departed_ctx *c = arg;
	struct smmu_cpu *cpu;
	if (smmu_cpu_register(c->mm, &cpu))
		return NULL;
	for (unsigned i = 0; i < 7; i++)
		smmu_store8(cpu, H + i * PS, 1);
	uint8_t v;
	c->ok = smmu_try_load8(cpu, H + 50 * PS, &v) == -EFAULT;
	c->ok &= smmu_cpu_unregister(cpu) == 0;
	return NULL;
}

Test(stats, departed_cpus_and_non_cpu_work_are_kept)
{
	struct env e;
	env_init(&e, 16);
	cr_assert_eq(smmu_cpu_unregister(e.cpu), 0);
	e.cpu = NULL;
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e.mm, H, 8 * PS, RW, SMMU_MAP_FIXED, &a), 0);
	for (int k = 0; k < 2; k++) {
		struct departed_ctx c = {.mm = e.mm};
		pthread_t t;
		cr_assert_eq(pthread_create(&t, NULL, departed_thread, &c), 0);
		cr_assert_eq(pthread_join(t, NULL), 0);
		cr_assert(c.ok);
	}
	struct smmu_stats st = get(e.mm);
	cr_assert_eq(st.faults_demand_zero, 7, "the first CPU faulted 7 pages, the second none");
	cr_assert_eq(st.faults_trapped, 2);
	cr_assert_geq(st.tlb_misses, 16);
	/* The main thread, no CPU, unmaps: counted on the mm. */
	cr_assert_eq(smmu_munmap(e.mm, H, 8 * PS), 0);
	struct smmu_stats st2 = get(e.mm);
	cr_assert_eq(st2.frames_freed - st.frames_freed, 7);
	cr_assert_geq(st2.gathers - st.gathers, 1);
	env_fini(&e);
}

Test(stats, counters_are_per_mm)
{
	struct env e;
	env_init(&e, 16);
	struct smmu_mm *mm2;
	cr_assert_eq(smmu_mm_create(e.pool, &mm2), 0);
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(e.mm, H, 4 * PS, RW, SMMU_MAP_FIXED, &a), 0);
	for (unsigned i = 0; i < 4; i++)
		smmu_store8(e.cpu, a + i * PS, 1);
	cr_assert_eq(smmu_mmap(mm2, H, 4 * PS, RW, SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &a), 0);
	cr_assert_eq(smmu_munmap(mm2, H, 4 * PS), 0); /* by a CPU of the other mm */
	struct smmu_stats s1 = get(e.mm), s2 = get(mm2);
	cr_assert_eq(s1.faults_demand_zero, 4);
	cr_assert_eq(s1.frames_freed, 0);
	cr_assert_eq(s2.faults_demand_zero, 0);
	cr_assert_eq(s2.tlb_misses, 0);
	cr_assert_eq(s2.frames_freed, 4);
	cr_assert_eq(smmu_mm_destroy(mm2), 0);
	env_fini(&e);
}

/* ------------------------------------------------------------ printers */

static char *print_to_string(const struct smmu_stats *st, int json)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	cr_assert_not_null(f);
	if (json)
		smmu_stats_print_json(st, f);
	else
		smmu_stats_print(st, f);
	cr_assert_eq(fclose(f), 0);
	return buf;
}

Test(stats, print_text_and_json)
{
	struct smmu_stats st;
	memset(&st, 0, sizeof(st));
	st.tlb_misses = 12345;
	st.tlb_fills = 6789;
	st.faults_demand_zero = 42;
	st.faults_trapped = 1;
	st.flush_full = 2;
	st.flush_range = 3;
	st.gathers = 4;
	st.batch_extensions = 5;
	st.batch_fallbacks = 6;
	st.frames_freed = UINT64_MAX;
	st.tables_freed = 8;
	st.shootdowns = 9;
	st.shootdowns_nested = 10;
	st.signals_sent = 11;
	st.signals_received = 12;
	st.acks_deferred = 13;
	st.grace_periods = 14;
	st.deferred_frees = 15;
	st.deferred_bound_waits = 16;
	st.faults_handled = 17;
	st.mm_switches = 18;
	st.asid_recycles = 19;
	st.write_notifies = 20;
	st.cow_copies = 21;
	st.cow_reuses = 22;
	st.flush_full_swapped = 23;
	static const char *const names[] = {
		"tlb_misses",       "tlb_fills",    "faults_demand_zero", "faults_trapped",    "flush_full",
		"flush_range",      "gathers",      "batch_extensions",   "batch_fallbacks",   "frames_freed",
		"tables_freed",     "shootdowns",   "shootdowns_nested",  "signals_sent",      "signals_received",
		"acks_deferred",    "grace_periods", "deferred_frees",    "deferred_bound_waits", "faults_handled",
		"mm_switches",      "asid_recycles", "write_notifies", "cow_copies",
		"cow_reuses",       "flush_full_swapped"};
	const uint64_t values[] = {12345, 6789, 42, 1, 2, 3, 4, 5, 6, UINT64_MAX, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23};
	enum { N = sizeof(values) / sizeof(values[0]) };
	_Static_assert(N * sizeof(uint64_t) == sizeof(struct smmu_stats), "a counter is missing here");

	char *text = print_to_string(&st, 0);
	int lines = 0;
	for (const char *p = text; *p; p++)
		lines += *p == '\n';
	cr_assert_eq(lines, N, "one line per counter:\n%s", text);
	/* Each line: the name, then the value. */
	int seen[N] = {0};
	for (const char *line = text; *line; line = strchr(line, '\n') + 1) {
		char name[64];
		unsigned long long v;
		cr_assert_eq(sscanf(line, "%63s %llu", name, &v), 2, "line: %.60s", line);
		size_t i = 0;
		while (i < N && strcmp(name, names[i]))
			i++;
		cr_assert_lt(i, N, "unknown counter %s", name);
		cr_assert_eq(v, values[i], "%s", names[i]);
		seen[i]++;
	}
	for (size_t i = 0; i < N; i++)
		cr_assert_eq(seen[i], 1, "%s printed %d times", names[i], seen[i]);
	free(text);

	char *json = print_to_string(&st, 1);
	size_t n = strlen(json);
	cr_assert_gt(n, 2);
	cr_assert_eq(json[0], '{');
	cr_assert_eq(json[n - 1], '}', "no trailing newline: %s", json);
	for (size_t i = 0; i < N; i++) {
		char key[64];
		snprintf(key, sizeof(key), "\"%s\":", names[i]);
		const char *at = strstr(json, key);
		cr_assert_not_null(at, "%s missing in %s", key, json);
		unsigned long long v = strtoull(at + strlen(key), NULL, 10);
		cr_assert_eq(v, values[i], "%s", names[i]);
	}
	free(json);
}
