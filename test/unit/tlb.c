/* SPDX-License-Identifier: MIT */
/*
 * White-box tests of the software TLB (lib/tlb.c): fill, flush_all (the
 * fill-log path and the memset path), flush_range (the per-granule path
 * and the sweep path for ranges larger than the TLB), at most one entry
 * per granule, miss-driven resizing, the public flush API at the top of
 * the address space, and big TLBs' spare table: the swap, the scrub by
 * misses, the handler's flush in place, and what frees the spare.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "cpu.h"
#include "mm.h"
#include "tlb.h"

/* A miss as the slow path sees it: count it, then carry out a resize it
 * decided (the slow path does this outside the access critical section). */
static void miss(struct smmu__cpu *c)
{
	smmu__tlb_miss(c);
	smmu__tlb_maybe_resize(c);
}

TestSuite(tlb, .timeout = 60);

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

struct env {
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	struct smmu__cpu *c;
	long live0;
};

static void env_init(struct env *e, size_t entries, size_t max_entries)
{
	e->live0 = smmu__alloc_live();
	struct smmu_pool_config pcfg = {.size = 64 * 4096};
	cr_assert_eq(smmu_pool_create(&pcfg, &e->pool), 0);
	cr_assert_eq(smmu_mm_create(e->pool, &e->mm), 0);
	struct smmu_cpu_config cfg = {.tlb_entries = entries, .tlb_max_entries = max_entries};
	cr_assert_eq(smmu_cpu_register_ex(e->mm, &cfg, &e->cpu), 0);
	e->c = smmu__cpu_of(e->cpu);
	cr_assert_eq(e->c->tlb->entries, entries);
}

static void env_fini(struct env *e)
{
	cr_assert_eq(smmu_cpu_unregister(e->cpu), 0);
	cr_assert_eq(smmu_mm_destroy(e->mm), 0);
	cr_assert_eq(smmu_pool_destroy(e->pool), 0);
	cr_assert_eq(smmu__alloc_live(), e->live0, "leak: %ld blocks", smmu__alloc_live() - e->live0);
}

static size_t idx_of(const struct smmu__cpu *c, smmu_addr_t g)
{
	return (size_t)(g >> SMMU_TLB_GRANULE_SHIFT) & (c->tlb->entries - 1);
}

static const struct smmu_tlb_entry *ent(const struct smmu__cpu *c, size_t i)
{
	return &c->pub.tlb[i];
}

static bool valid(const struct smmu_tlb_entry *e)
{
	return e->read_tag != SMMU_TLB_INVALID;
}

/* A fake host address for granule g (never dereferenced). */
static void *host_for(smmu_addr_t g)
{
	return (void *)(uintptr_t)(0x100000000000ull + (g & 0xffffffffffull));
}

static void fill(struct smmu__cpu *c, smmu_addr_t g, bool w)
{
	smmu__tlb_fill(c, g, host_for(g), w);
}

/* The TLB's invariants: an entry is invalid in both tags or describes one
 * granule, at its index, with the matching addend. */
static unsigned check_tlb(const struct smmu__cpu *c)
{
	unsigned n = 0;
	cr_assert_eq(c->pub.tlb_mask, (uint64_t)(c->tlb->entries - 1) << SMMU_TLB_ENTRY_SHIFT);
	for (size_t i = 0; i < c->tlb->entries; i++) {
		const struct smmu_tlb_entry *e = ent(c, i);
		if (!valid(e)) {
			cr_assert_eq(e->write_tag, SMMU_TLB_INVALID, "entry %zu: write tag without read tag", i);
			continue;
		}
		n++;
		cr_assert_eq(e->read_tag & (SMMU_TLB_GRANULE - 1), 0);
		cr_assert_eq(idx_of(c, e->read_tag), i, "entry %zu holds a granule of another index", i);
		cr_assert(e->write_tag == SMMU_TLB_INVALID || e->write_tag == e->read_tag);
		cr_assert_eq(e->read_tag + e->addend, (uintptr_t)host_for(e->read_tag));
	}
	return n;
}

static struct smmu_stats stats(struct smmu_mm *mm)
{
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(mm, &st), 0);
	return st;
}

/* ------------------------------------------------------------------- */

Test(tlb, fill_sets_tags_and_addend)
{
	struct env e;
	env_init(&e, 16, 16);
	struct smmu__cpu *c = e.c;
	cr_assert_eq(check_tlb(c), 0, "a new TLB is empty");
	struct smmu_stats st0 = stats(e.mm);

	smmu_addr_t g = 0x12345000;
	fill(c, g, false);
	const struct smmu_tlb_entry *x = ent(c, idx_of(c, g));
	cr_assert_eq(x->read_tag, g);
	cr_assert_eq(x->write_tag, SMMU_TLB_INVALID, "not writable: no write tag");
	cr_assert_eq(x->addend, (uintptr_t)host_for(g) - g);
	cr_assert_eq(c->tlb->fill_count, 1);
	cr_assert_eq(c->tlb->fill_log[0], idx_of(c, g));
	/* The inline path finds it. */
	cr_assert_eq((const void *)smmu__tlb_entry(e.cpu, g + 123), (const void *)x);
	cr_assert_eq(smmu__tag_of(g + 8, 8), x->read_tag);
	cr_assert_neq(smmu__tag_of(g + 9, 8), x->read_tag, "misaligned never matches");

	fill(c, g, true);
	cr_assert_eq(x->write_tag, g);
	/* The same index, another granule: replaced, never two entries. */
	smmu_addr_t g2 = g + 16 * SMMU_TLB_GRANULE;
	fill(c, g2, false);
	cr_assert_eq(x->read_tag, g2);
	cr_assert_eq(x->write_tag, SMMU_TLB_INVALID);
	cr_assert_eq(check_tlb(c), 1);
	cr_assert_eq(stats(e.mm).tlb_fills - st0.tlb_fills, 3);
	env_fini(&e);
}

Test(tlb, at_most_one_entry_per_granule_random)
{
	struct env e;
	env_init(&e, 64, 64);
	struct smmu__cpu *c = e.c;
	smmu_addr_t model[64];
	bool mw[64];
	for (int i = 0; i < 64; i++)
		model[i] = SMMU_TLB_INVALID;
	uint64_t seed = 11;
	smmu_addr_t pool[200];
	for (int i = 0; i < 200; i++)
		pool[i] = (rng_next(&seed) & 0xffffffffffffull) & ~(SMMU_TLB_GRANULE - 1);
	for (int step = 0; step < 5000; step++) {
		smmu_addr_t g = pool[rng_next(&seed) % 200];
		bool w = rng_next(&seed) & 1;
		fill(c, g, w);
		model[idx_of(c, g)] = g;
		mw[idx_of(c, g)] = w;
		if (step % 97 == 0) {
			smmu__tlb_flush_all_local(c);
			for (int i = 0; i < 64; i++)
				model[i] = SMMU_TLB_INVALID;
		}
		if (step % 13 == 0) {
			check_tlb(c);
			for (int i = 0; i < 64; i++) {
				cr_assert_eq(ent(c, i)->read_tag, model[i], "step %d entry %d", step, i);
				if (model[i] != SMMU_TLB_INVALID)
					cr_assert_eq(ent(c, i)->write_tag, mw[i] ? model[i] : SMMU_TLB_INVALID);
			}
		}
	}
	env_fini(&e);
}

/* Plant a valid entry that no fill logged: only the memset path clears it. */
static void plant(struct smmu__cpu *c, size_t i, smmu_addr_t g)
{
	struct smmu_tlb_entry *x = &c->pub.tlb[i];
	x->read_tag = g;
	x->write_tag = g;
	x->addend = (uintptr_t)host_for(g) - g;
}

static void flush_all_after(unsigned nfills, bool expect_log_path)
{
	struct env e;
	env_init(&e, 256, 256);
	struct smmu__cpu *c = e.c;
	/* Fills land on indices 0..127 (repeats included); the planted entry
	 * sits at 200. */
	for (unsigned i = 0; i < nfills; i++)
		fill(c, (smmu_addr_t)((i * 7) % 128) << SMMU_TLB_GRANULE_SHIFT, i & 1);
	cr_assert_eq(c->tlb->fill_count, nfills <= SMMU_TLB_FILL_LOG ? nfills : SMMU_TLB_FILL_LOG + 1);
	smmu_addr_t pg = (smmu_addr_t)200 << SMMU_TLB_GRANULE_SHIFT;
	plant(c, 200, pg);
	struct smmu_stats st0 = stats(e.mm);
	smmu__tlb_flush_all_local(c);
	cr_assert_eq(stats(e.mm).flush_full - st0.flush_full, 1);
	cr_assert_eq(c->tlb->fill_count, 0);
	for (size_t i = 0; i < 128; i++)
		cr_assert(!valid(ent(c, i)), "%u fills: entry %zu survived the flush", nfills, i);
	if (expect_log_path)
		cr_assert(valid(ent(c, 200)), "%u fills: the flush should have used the fill log", nfills);
	else
		cr_assert(!valid(ent(c, 200)), "%u fills: the flush should have cleared every entry", nfills);
	/* Log restarted: the next fills are logged again. */
	fill(c, 5 << SMMU_TLB_GRANULE_SHIFT, false);
	cr_assert_eq(c->tlb->fill_count, 1);
	smmu__tlb_flush_all_local(c);
	cr_assert(!valid(ent(c, 5)));
	env_fini(&e);
}

Test(tlb, flush_all_log_path)
{
	flush_all_after(0, true);
	flush_all_after(1, true);
	flush_all_after(40, true);
	flush_all_after(SMMU_TLB_FILL_LOG, true);
}

Test(tlb, flush_all_memset_path)
{
	flush_all_after(SMMU_TLB_FILL_LOG + 1, false);
	flush_all_after(SMMU_TLB_FILL_LOG + 2, false);
	flush_all_after(1000, false);
}

/* flush_range against a model: random fills, random ranges, both paths. */
static void flush_range_random(size_t entries, uint64_t seed, uint64_t max_len_granules)
{
	struct env e;
	env_init(&e, entries, entries);
	struct smmu__cpu *c = e.c;
	const smmu_addr_t base = 0x40000000;
	for (int step = 0; step < 400; step++) {
		for (int k = 0; k < 40; k++) {
			smmu_addr_t g = base + ((rng_next(&seed) % (4 * entries)) << SMMU_TLB_GRANULE_SHIFT);
			fill(c, g, rng_next(&seed) & 1);
		}
		struct smmu_tlb_entry before[1024];
		memcpy(before, c->pub.tlb, entries * sizeof(before[0]));
		smmu_addr_t s = base + rng_next(&seed) % ((4 * entries) << SMMU_TLB_GRANULE_SHIFT);
		smmu_addr_t len = 1 + rng_next(&seed) % (max_len_granules << SMMU_TLB_GRANULE_SHIFT);
		smmu_addr_t lo = s & ~(SMMU_TLB_GRANULE - 1), hi = s + len;
		struct smmu_stats st0 = stats(e.mm);
		smmu__tlb_flush_range_local(c, s, s + len);
		cr_assert_eq(stats(e.mm).flush_range - st0.flush_range, 1);
		for (size_t i = 0; i < entries; i++) {
			const struct smmu_tlb_entry *x = ent(c, i);
			bool in = before[i].read_tag != SMMU_TLB_INVALID && before[i].read_tag >= lo &&
				  before[i].read_tag < hi;
			if (in)
				cr_assert(!valid(x), "step %d: entry %zu (%#llx) in [%#llx, %#llx) kept", step, i,
					  (unsigned long long)before[i].read_tag, (unsigned long long)lo,
					  (unsigned long long)hi);
			else
				cr_assert(memcmp(x, &before[i], sizeof(*x)) == 0,
					  "step %d: entry %zu (%#llx) outside [%#llx, %#llx) changed", step, i,
					  (unsigned long long)before[i].read_tag, (unsigned long long)lo,
					  (unsigned long long)hi);
		}
		check_tlb(c);
	}
	env_fini(&e);
}

Test(tlb, flush_range_small_ranges)
{
	flush_range_random(64, 5, 16);
	flush_range_random(1024, 6, 100);
}

Test(tlb, flush_range_larger_than_tlb_keeps_unrelated_entries)
{
	/* Ranges of up to 8x the TLB: the sweep path. */
	flush_range_random(16, 7, 128);
	flush_range_random(64, 8, 512);
}

Test(tlb, flush_range_sweep_directed)
{
	struct env e;
	env_init(&e, 16, 16);
	struct smmu__cpu *c = e.c;
	/* Entries far away from the range, on every index the range covers. */
	const smmu_addr_t far = 0x7000000000ull, R = 0x10000000;
	for (int i = 0; i < 16; i++)
		fill(c, far + ((smmu_addr_t)i << SMMU_TLB_GRANULE_SHIFT), true);
	smmu__tlb_flush_range_local(c, R, R + (64 << SMMU_TLB_GRANULE_SHIFT));
	cr_assert_eq(check_tlb(c), 16, "a range larger than the TLB dropped unrelated entries");
	/* Half of them inside a large range. */
	smmu__tlb_flush_range_local(c, far - (100 << SMMU_TLB_GRANULE_SHIFT), far + (8 << SMMU_TLB_GRANULE_SHIFT));
	cr_assert_eq(check_tlb(c), 8);
	for (int i = 0; i < 16; i++)
		cr_assert_eq(valid(ent(c, i)), i >= 8);
	/* The end is exclusive and an unaligned start covers its granule. */
	smmu__tlb_flush_range_local(c, far + (8 << SMMU_TLB_GRANULE_SHIFT) + 100, far + (9 << SMMU_TLB_GRANULE_SHIFT));
	cr_assert(!valid(ent(c, 8)));
	cr_assert(valid(ent(c, 9)));
	smmu__tlb_flush_range_local(c, far + (10 << SMMU_TLB_GRANULE_SHIFT), far + (10 << SMMU_TLB_GRANULE_SHIFT) + 1);
	cr_assert(!valid(ent(c, 10)));
	cr_assert(valid(ent(c, 11)));
	env_fini(&e);
}

/* The public range flush at the top of the address space: a range that
 * ends at or near 2^64 must neither wrap nor hang. */
Test(tlb, flush_range_whole_space_terminates, .timeout = 3)
{
	struct env e;
	env_init(&e, 16, 16);
	fill(e.c, 0x5000, true);
	fill(e.c, 0xfffffffffffff000ull, true);
	cr_assert_eq(smmu_tlb_flush_range(e.cpu, 0, SIZE_MAX), 0);
	cr_assert_eq(check_tlb(e.c), 0);
	env_fini(&e);
}

Test(tlb, flush_range_last_granule_terminates, .timeout = 3)
{
	struct env e;
	env_init(&e, 16, 16);
	fill(e.c, 0xfffffffffffff000ull, true);
	fill(e.c, 0x2000, true);
	cr_assert_eq(smmu_tlb_flush_range(e.cpu, 0xfffffffffffff000ull, 0xfff), 0);
	cr_assert(!valid(ent(e.c, idx_of(e.c, 0xfffffffffffff000ull))));
	cr_assert(valid(ent(e.c, idx_of(e.c, 0x2000))));
	env_fini(&e);
}

Test(tlb, public_flush_api)
{
	struct env e;
	env_init(&e, 16, 16);
	fill(e.c, 0x5000, true);
	fill(e.c, 0x6000, true);
	cr_assert_eq(smmu_tlb_flush_range(e.cpu, 0x5000, 0), -EINVAL);
	cr_assert_eq(smmu_tlb_flush_range(e.cpu, 0x5000, SIZE_MAX), -EINVAL, "wrapping range");
	cr_assert_eq(smmu_tlb_flush_range(e.cpu, 0x5fff, 1), 0);
	cr_assert_eq(check_tlb(e.c), 1);
	cr_assert_eq(smmu_tlb_flush_all(e.cpu), 0);
	cr_assert_eq(check_tlb(e.c), 0);
	env_fini(&e);
}

/* ------------------------------------------------------------ resizing */

Test(tlb, grows_after_twice_entries_misses_up_to_max)
{
	struct env e;
	env_init(&e, 16, 64);
	struct smmu__cpu *c = e.c;
	long live = smmu__alloc_live();
	fill(c, 0x3000, true);
	for (int i = 0; i < 31; i++)
		miss(c);
	cr_assert_eq(c->tlb->entries, 16);
	cr_assert(valid(ent(c, 3)));
	miss(c);
	cr_assert_eq(c->tlb->entries, 32, "32 misses on 16 entries: doubled");
	cr_assert_eq(check_tlb(c), 0, "a resized TLB starts empty");
	cr_assert_eq(c->tlb->fill_count, 0);
	cr_assert_eq(smmu__alloc_live(), live, "the old table was freed");
	for (int i = 0; i < 64; i++)
		miss(c);
	cr_assert_eq(c->tlb->entries, 64);
	for (int i = 0; i < 1000; i++)
		miss(c);
	cr_assert_eq(c->tlb->entries, 64, "never above max");
	/* Fills and flushes work at the new size. */
	for (int i = 0; i < 64; i++)
		fill(c, (smmu_addr_t)i << SMMU_TLB_GRANULE_SHIFT, false);
	cr_assert_eq(check_tlb(c), 64);
	smmu__tlb_flush_range_local(c, 0, 32 << SMMU_TLB_GRANULE_SHIFT);
	cr_assert_eq(check_tlb(c), 32);
	cr_assert_eq(smmu__alloc_live(), live);
	cr_assert_eq(stats(e.mm).tlb_misses, 31 + 1 + 64 + 1000);
	env_fini(&e);
}

Test(tlb, shrinks_after_sparse_use_down_to_min)
{
	struct env e;
	env_init(&e, 16, 64);
	struct smmu__cpu *c = e.c;
	for (int i = 0; i < 32 + 64; i++)
		miss(c);
	cr_assert_eq(c->tlb->entries, 64);
	/* 3 fills < 64 / 8 between two full flushes: halve at the next miss. */
	for (int i = 0; i < 3; i++)
		fill(c, (smmu_addr_t)i << SMMU_TLB_GRANULE_SHIFT, false);
	smmu__tlb_flush_all_local(c);
	cr_assert_eq(c->tlb->entries, 64, "a flush never resizes");
	miss(c);
	cr_assert_eq(c->tlb->entries, 32);
	smmu__tlb_flush_all_local(c);
	miss(c);
	cr_assert_eq(c->tlb->entries, 16);
	smmu__tlb_flush_all_local(c);
	miss(c);
	cr_assert_eq(c->tlb->entries, 16, "never below the configured start");
	/* Dense use keeps the size. */
	for (int i = 0; i < 32; i++)
		miss(c);
	cr_assert_eq(c->tlb->entries, 32);
	for (int i = 0; i < 20; i++)
		fill(c, (smmu_addr_t)i << SMMU_TLB_GRANULE_SHIFT, false);
	smmu__tlb_flush_all_local(c);
	miss(c);
	cr_assert_eq(c->tlb->entries, 32);
	check_tlb(c);
	env_fini(&e);
}

Test(tlb, resize_allocation_failure_keeps_old_table)
{
	struct env e;
	env_init(&e, 16, 64);
	struct smmu__cpu *c = e.c;
	long live = smmu__alloc_live();
	for (int i = 0; i < 31; i++)
		miss(c);
	fill(c, 0x7000, true);
	smmu__alloc_fail_after(0);
	miss(c);
	bool fired = smmu__alloc_failure_fired();
	smmu__alloc_fail_after(-1);
	cr_assert(fired, "the grow allocated");
	cr_assert_eq(c->tlb->entries, 16);
	cr_assert(valid(ent(c, 7)), "a failed grow keeps the old table and its entries");
	cr_assert_eq(smmu__alloc_live(), live);
	check_tlb(c);
	/* It backs off: another 2 x entries misses before it tries again. */
	for (int i = 0; i < 31; i++)
		miss(c);
	cr_assert_eq(c->tlb->entries, 16, "a failed grow is not retried on every miss");
	miss(c);
	cr_assert_eq(c->tlb->entries, 32, "tried again after as many misses");
	cr_assert_eq(smmu__alloc_live(), live);
	env_fini(&e);
}

Test(tlb, fixed_size_never_resizes)
{
	struct env e;
	env_init(&e, 32, 32);
	struct smmu__cpu *c = e.c;
	for (int i = 0; i < 1000; i++)
		miss(c);
	cr_assert_eq(c->tlb->entries, 32);
	smmu__tlb_flush_all_local(c);
	miss(c);
	cr_assert_eq(c->tlb->entries, 32);
	env_fini(&e);
}

/* ------------------------------------------- big TLBs: the spare table */

#define BIG SMMU_TLB_SWAP_MIN_ENTRIES

/* Fill n granules spread over the whole TLB (more than the fill log). */
static void fill_spread(struct smmu__cpu *c, unsigned n, unsigned salt)
{
	for (unsigned i = 0; i < n; i++)
		fill(c, (smmu_addr_t)((i * 97 + salt) % c->tlb->entries) << SMMU_TLB_GRANULE_SHIFT, (i + salt) & 1);
}

/* A fixed TLB of `entries` that had one full flush (so a big one is
 * steady: its next full flush swaps), with 1000 entries filled; returns
 * its table. */
static struct smmu_tlb_entry *make_steady(struct smmu__cpu *c)
{
	struct smmu_tlb_entry *t = c->pub.tlb;
	fill_spread(c, 1000, 0);
	smmu__tlb_flush_all_local(c);
	cr_assert_eq(c->pub.tlb, t, "the first full flush at a size swapped");
	cr_assert_null(c->tlb->spare, "the first full flush at a size allocated a spare");
	fill_spread(c, 1000, 0);
	return t;
}

static struct smmu_tlb_entry *filled_env(struct env *e, size_t entries)
{
	env_init(e, entries, entries);
	return make_steady(e->c);
}

static bool all_invalid(const struct smmu_tlb_entry *t, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (t[i].read_tag != SMMU_TLB_INVALID || t[i].write_tag != SMMU_TLB_INVALID)
			return false;
	return true;
}

Test(tlb, big_flush_all_swaps_in_a_clean_spare_and_misses_scrub_the_old)
{
	struct env e;
	struct smmu_tlb_entry *a = filled_env(&e, BIG);
	struct smmu__cpu *c = e.c;
	struct smmu_stats st0 = stats(e.mm);
	smmu__tlb_flush_all_local(c);
	struct smmu_stats st1 = stats(e.mm);
	cr_assert_eq(st1.flush_full - st0.flush_full, 1);
	cr_assert_eq(st1.flush_full_swapped - st0.flush_full_swapped, 1);
	struct smmu_tlb_entry *b = c->pub.tlb;
	cr_assert_neq(b, a, "the flush should have swapped tables");
	cr_assert_eq(c->tlb->spare, a);
	cr_assert_eq(c->tlb->scrub_pos, 0);
	cr_assert_eq(check_tlb(c), 0, "the new table holds entries");
	cr_assert(!all_invalid(a, 0, BIG), "the old table was cleared at the flush: nothing was saved");

	/* Each miss scrubs one slice of the old table, and never the active
	 * one: a fill between misses survives them. */
	fill(c, 0x5000, true);
	for (size_t done = 0; done < BIG; done += SMMU_TLB_SCRUB_SLICE) {
		cr_assert_eq(c->tlb->scrub_pos, done);
		cr_assert(all_invalid(a, 0, done));
		miss(c);
	}
	cr_assert_eq(c->tlb->scrub_pos, BIG);
	cr_assert(all_invalid(a, 0, BIG));
	miss(c);
	cr_assert_eq(c->tlb->scrub_pos, BIG, "scrubbing past the end");
	cr_assert(valid(ent(c, 5)), "scrubbing touched the active table");
	cr_assert_eq(check_tlb(c), 1);

	/* The next big flush swaps back. */
	fill_spread(c, 1000, 3);
	smmu__tlb_flush_all_local(c);
	cr_assert_eq(c->pub.tlb, a);
	cr_assert_eq(c->tlb->spare, b);
	cr_assert_eq(check_tlb(c), 0);
	cr_assert_eq(stats(e.mm).flush_full_swapped - st0.flush_full_swapped, 2);
	env_fini(&e);
}

Test(tlb, big_flush_all_before_the_scrub_ends_finishes_it_first)
{
	struct env e;
	struct smmu_tlb_entry *a = filled_env(&e, BIG);
	struct smmu__cpu *c = e.c;
	fill_spread(c, BIG, 0); /* every entry valid */
	smmu__tlb_flush_all_local(c);
	for (int i = 0; i < 10; i++)
		miss(c);
	cr_assert_eq(c->tlb->scrub_pos, 10 * SMMU_TLB_SCRUB_SLICE);
	fill_spread(c, 1000, 1);
	smmu__tlb_flush_all_local(c);
	cr_assert_eq(c->pub.tlb, a);
	cr_assert_eq(check_tlb(c), 0, "the half-scrubbed table came back with entries");
	env_fini(&e);
}

Test(tlb, big_flush_in_the_handler_clears_in_place)
{
	struct env e;
	struct smmu_tlb_entry *a = filled_env(&e, BIG);
	struct smmu__cpu *c = e.c;
	struct smmu_stats st0 = stats(e.mm);
	smmu__tlb_flush_all_in_handler(c);
	cr_assert_eq(c->pub.tlb, a, "the handler swapped tables");
	cr_assert_null(c->tlb->spare);
	cr_assert_eq(check_tlb(c), 0);
	cr_assert_eq(stats(e.mm).flush_full_swapped, st0.flush_full_swapped);
	/* Fill log path and small TLBs: no swap either. */
	fill_spread(c, SMMU_TLB_FILL_LOG, 0);
	smmu__tlb_flush_all_local(c);
	cr_assert_eq(c->pub.tlb, a);
	env_fini(&e);

	a = filled_env(&e, BIG / 2);
	smmu__tlb_flush_all_local(e.c);
	cr_assert_eq(e.c->pub.tlb, a, "a small TLB swapped");
	cr_assert_eq(check_tlb(e.c), 0);
	env_fini(&e);
}

Test(tlb, big_flush_without_memory_for_a_spare_clears_in_place)
{
	struct env e;
	struct smmu_tlb_entry *a = filled_env(&e, BIG);
	struct smmu__cpu *c = e.c;
	smmu__alloc_fail_after(0);
	smmu__tlb_flush_all_local(c);
	bool fired = smmu__alloc_failure_fired();
	smmu__alloc_fail_after(-1);
	cr_assert(fired, "the flush did not try to allocate a spare");
	cr_assert_eq(c->pub.tlb, a);
	cr_assert_null(c->tlb->spare);
	cr_assert_eq(check_tlb(c), 0);
	env_fini(&e); /* and nothing leaked */
}

Test(tlb, resizing_frees_the_spare)
{
	struct env e;
	env_init(&e, BIG, 2 * BIG);
	struct smmu__cpu *c = e.c;
	make_steady(c);
	smmu__tlb_flush_all_local(c);
	cr_assert_not_null(c->tlb->spare);
	for (size_t i = 0; i < 2 * BIG; i++)
		miss(c);
	cr_assert_eq(c->tlb->entries, 2 * BIG);
	cr_assert_null(c->tlb->spare, "the spare of the old size was kept");
	/* A new size is not steady yet: the first flush clears in place. */
	struct smmu_tlb_entry *t = c->pub.tlb;
	fill_spread(c, 1000, 0);
	smmu__tlb_flush_all_local(c);
	cr_assert_eq(c->pub.tlb, t);
	cr_assert_null(c->tlb->spare);
	fill_spread(c, 1000, 0);
	smmu__tlb_flush_all_local(c);
	cr_assert_not_null(c->tlb->spare);
	cr_assert_neq(c->pub.tlb, t);
	cr_assert_eq(check_tlb(c), 0);
	env_fini(&e); /* the leak check counts the spare of the new size */
}

Test(tlb, an_inactive_address_space_keeps_and_frees_its_spare)
{
	struct env e;
	filled_env(&e, BIG);
	struct smmu__cpu *c = e.c;
	struct smmu_mm *other;
	cr_assert_eq(smmu_mm_create(e.pool, &other), 0);
	smmu__tlb_flush_all_local(c);
	struct smmu__tlb *first = c->tlb;
	cr_assert_not_null(first->spare);
	cr_assert_eq(smmu_cpu_switch_mm(e.cpu, other), 0);
	cr_assert_neq(c->tlb, first);
	cr_assert_not_null(first->spare, "switching away dropped the spare");
	cr_assert_eq(smmu_cpu_switch_mm(e.cpu, e.mm), 0);
	cr_assert_eq(c->tlb, first);
	cr_assert_eq(smmu_cpu_switch_mm(e.cpu, other), 0);
	/* Unregistered while the slot with the spare is inactive: the leak
	 * check in env_fini counts it. */
	cr_assert_eq(smmu_cpu_unregister(e.cpu), 0);
	cr_assert_eq(smmu_mm_destroy(other), 0);
	cr_assert_eq(smmu_cpu_register(e.mm, &e.cpu), 0);
	env_fini(&e);
}
