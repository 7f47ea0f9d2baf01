/* SPDX-License-Identifier: MIT */
/*
 * White-box tests of the frame pool (lib/pool.c): chains, per-CPU caches,
 * stealing, refcounts, the SMMU_FRAME_ZERO fast path, poisoning, exact free
 * counts, and a multi-threaded hammer that proves no frame is ever handed
 * out twice.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "pool.h"

_Static_assert(sizeof(struct smmu__frame) <= 16, "descriptor at most 16 bytes a frame");

/* Every test ends leak-clean: rmpool checks the allocation count against
 * the value at the start of the test. */
static long live_at_start;

static void record_live(void)
{
	live_at_start = smmu__alloc_live();
}

TestSuite(pool, .init = record_live, .timeout = 120);

/* ------------------------------------------------------------ helpers */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static struct smmu_pool *mkpool(void *region, size_t nframes, size_t page_size, unsigned flags)
{
	struct smmu_pool_config cfg = {
		.region = region, .size = nframes * page_size, .page_size = page_size, .flags = flags};
	struct smmu_pool *pool = NULL;
	int err = smmu_pool_create(&cfg, &pool);
	cr_assert_eq(err, 0, "smmu_pool_create: %d", err);
	return pool;
}

static void rmpool(struct smmu_pool *pool)
{
	cr_assert_eq(smmu_pool_free_frames(pool), smmu_pool_frames(pool), "frames leaked: %zu free of %zu",
		     smmu_pool_free_frames(pool), smmu_pool_frames(pool));
	cr_assert_eq(smmu_pool_destroy(pool), 0);
}

/* The hammer lets caches grow past a chain (free_unused); the bound is
 * checked by its own test. */
static bool check_chain_bound = true;

static uint32_t rc_of(struct smmu_pool *pool, uint32_t f)
{
	return atomic_load(&pool->frames[f].refcount);
}

/*
 * Walk the shared chains and every attached cache (quiescent pool only):
 * every free frame is in exactly one place, has refcount 0, chains are
 * well formed and at most SMMU_POOL_CHAIN long, the counters match.  If
 * `used` is given, a frame is free exactly when !used[f].  Returns the
 * number of free frames found.
 */
static size_t check_pool(struct smmu_pool *pool, const uint8_t *used)
{
	uint8_t *seen = calloc(pool->nframes, 1);
	size_t nshared = 0, total = 0;
	cr_assert(seen);
	for (uint32_t h = pool->free_chains; h != SMMU_NO_FRAME; h = pool->frames[h].next_chain) {
		uint32_t len = 0;
		cr_assert_lt(h, pool->nframes);
		for (uint32_t f = h; f != SMMU_NO_FRAME; f = pool->frames[f].next) {
			cr_assert_lt(f, pool->nframes, "bad frame number %u on a chain", f);
			cr_assert(!seen[f], "frame %u twice on the free lists", f);
			seen[f] = 1;
			cr_assert_eq(rc_of(pool, f), 0, "free frame %u has refcount %u", f, rc_of(pool, f));
			len++;
		}
		cr_assert_eq(len, pool->frames[h].chain_len, "chain at %u: %u frames linked, chain_len %u", h, len,
			     pool->frames[h].chain_len);
		if (check_chain_bound)
			cr_assert_leq(len, SMMU_POOL_CHAIN, "chain at %u holds %u frames, more than SMMU_POOL_CHAIN", h,
				      len);
		nshared += len;
	}
	cr_assert_eq(nshared, pool->nfree_shared, "nfree_shared %zu, chains hold %zu", pool->nfree_shared, nshared);
	total = nshared;
	for (struct smmu__pcache *pc = pool->caches; pc; pc = pc->next) {
		uint32_t n = 0;
		cr_assert_eq(pc->pool, pool);
		for (uint32_t f = pc->head; f != SMMU_NO_FRAME; f = pool->frames[f].next) {
			cr_assert_lt(f, pool->nframes);
			cr_assert(!seen[f], "frame %u twice on the free lists (cache)", f);
			seen[f] = 1;
			cr_assert_eq(rc_of(pool, f), 0);
			n++;
		}
		cr_assert_eq(n, pc->count, "cache count %u, list holds %u", pc->count, n);
		total += n;
	}
	if (used) {
		for (uint32_t f = 0; f < pool->nframes; f++)
			cr_assert_eq(!!seen[f], !used[f], "frame %u: free %d, in use %d", f, seen[f], used[f]);
	}
	cr_assert_eq(total, smmu_pool_free_frames(pool));
	free(seen);
	return total;
}

static uint32_t alloc1(struct smmu_pool *pool, struct smmu__pcache *pc, bool zero)
{
	uint32_t f = SMMU_NO_FRAME;
	int err = smmu__pool_alloc(pool, pc, zero, &f);
	cr_assert_eq(err, 0, "smmu__pool_alloc: %d", err);
	cr_assert_lt(f, pool->nframes);
	cr_assert_eq(rc_of(pool, f), 1);
	return f;
}

static void put1(struct smmu_pool *pool, uint32_t f)
{
	smmu__pool_put_frames(pool, &f, 1);
}

/* ---------------------------------------------------------- structure */

Test(pool, descriptor_size)
{
	cr_assert_leq(sizeof(struct smmu__frame), 16);
	struct smmu_pool *pool = mkpool(NULL, 10, 4096, 0);
	cr_assert_eq(pool->nframes, 10);
	rmpool(pool);
}

Test(pool, create_builds_chains)
{
	long base = smmu__alloc_live();
	struct smmu_pool *pool = mkpool(NULL, 200, 4096, 0);
	cr_assert_eq(smmu_pool_frames(pool), 200);
	cr_assert_eq(smmu_pool_free_frames(pool), 200);
	cr_assert_eq(smmu_pool_page_size(pool), 4096);
	/* 64 + 64 + 64 + 8, lowest frames first. */
	unsigned nchains = 0;
	for (uint32_t h = pool->free_chains; h != SMMU_NO_FRAME; h = pool->frames[h].next_chain) {
		cr_assert_eq(h, nchains * 64u);
		cr_assert_eq(pool->frames[h].chain_len, nchains < 3 ? 64 : 8);
		nchains++;
	}
	cr_assert_eq(nchains, 4);
	check_pool(pool, NULL);
	/* A library-mapped region starts zero: every frame is flagged. */
	for (uint32_t f = 0; f < 200; f++)
		cr_assert(pool->frames[f].flags & SMMU_FRAME_ZERO);
	rmpool(pool);
	cr_assert_eq(smmu__alloc_live(), base);
}

Test(pool, destroy_busy_while_cache_attached)
{
	struct smmu_pool *pool = mkpool(NULL, 64, 4096, 0);
	struct smmu__pcache pc;
	smmu__pcache_attach(pool, &pc);
	cr_assert_eq(smmu_pool_destroy(pool), -EBUSY);
	smmu__pcache_detach(&pc);
	rmpool(pool);
}

/* ------------------------------------------------------------- chains */

Test(pool, refill_takes_one_chain)
{
	long base = smmu__alloc_live();
	struct smmu_pool *pool = mkpool(NULL, 256, 4096, 0);
	struct smmu__pcache pc;
	smmu__pcache_attach(pool, &pc);
	uint8_t used[256] = {0};

	uint32_t f = alloc1(pool, &pc, false);
	used[f] = 1;
	cr_assert_eq(f, 0, "low frames first");
	cr_assert_eq(pc.count, SMMU_POOL_CHAIN - 1, "one whole chain moved to the cache");
	cr_assert_eq(pool->nfree_shared, 256 - SMMU_POOL_CHAIN);
	check_pool(pool, used);

	/* The rest of the chain comes from the cache: the shared list is
	 * untouched until the cache is empty. */
	for (unsigned i = 1; i < SMMU_POOL_CHAIN; i++) {
		f = alloc1(pool, &pc, false);
		cr_assert(!used[f]);
		used[f] = 1;
		cr_assert_eq(pool->nfree_shared, 256 - SMMU_POOL_CHAIN);
	}
	cr_assert_eq(pc.count, 0);
	f = alloc1(pool, &pc, false);
	used[f] = 1;
	cr_assert_eq(pc.count, SMMU_POOL_CHAIN - 1);
	cr_assert_eq(pool->nfree_shared, 256 - 2 * SMMU_POOL_CHAIN);
	check_pool(pool, used);

	/* Without a cache: one frame, the rest of the chain goes back. */
	f = alloc1(pool, NULL, false);
	cr_assert(!used[f]);
	used[f] = 1;
	cr_assert_eq(pool->nfree_shared, 256 - 2 * SMMU_POOL_CHAIN - 1);
	check_pool(pool, used);

	for (uint32_t i = 0; i < 256; i++)
		if (used[i])
			put1(pool, i);
	smmu__pcache_detach(&pc);
	check_pool(pool, NULL);
	rmpool(pool);
	cr_assert_eq(smmu__alloc_live(), base);
}

/* nframes frames across two caches, then -ENOMEM: stealing makes
 * exhaustion exact. */
static void exhaust_two_caches(size_t nframes, uint64_t seed)
{
	long base = smmu__alloc_live();
	struct smmu_pool *pool = mkpool(NULL, nframes, 4096, 0);
	struct smmu__pcache a, b;
	smmu__pcache_attach(pool, &a);
	smmu__pcache_attach(pool, &b);
	uint8_t *used = calloc(nframes, 1);
	uint32_t *list = calloc(nframes, sizeof(*list));
	cr_assert(used && list);

	for (size_t i = 0; i < nframes; i++) {
		struct smmu__pcache *pc = (rng_next(&seed) & 1) ? &a : &b;
		uint32_t f = alloc1(pool, pc, false);
		cr_assert(!used[f], "frame %u handed out twice", f);
		used[f] = 1;
		list[i] = f;
		if (i % 37 == 0)
			check_pool(pool, used);
	}
	cr_assert_eq(smmu_pool_free_frames(pool), 0);
	uint32_t f;
	cr_assert_eq(smmu__pool_alloc(pool, &a, false, &f), -ENOMEM);
	cr_assert_eq(smmu__pool_alloc(pool, &b, true, &f), -ENOMEM);
	cr_assert_eq(smmu__pool_alloc(pool, NULL, false, &f), -ENOMEM);
	check_pool(pool, used);

	cr_assert_eq(smmu__pool_put_frames(pool, list, nframes), nframes);
	cr_assert_eq(smmu_pool_free_frames(pool), nframes);
	check_pool(pool, NULL);
	smmu__pcache_detach(&a);
	smmu__pcache_detach(&b);
	rmpool(pool);
	free(used);
	free(list);
	cr_assert_eq(smmu__alloc_live(), base);
}

Test(pool, steal_exact_exhaustion_two_chains)
{
	exhaust_two_caches(128, 1);
}

Test(pool, steal_exact_exhaustion_uneven)
{
	exhaust_two_caches(100, 2);
	exhaust_two_caches(1, 3);
	exhaust_two_caches(300, 4);
}

Test(pool, steal_directed)
{
	/* Two chains; A takes one, B the other; A drains its cache and then
	 * must steal B's 63 frames. */
	struct smmu_pool *pool = mkpool(NULL, 128, 4096, 0);
	struct smmu__pcache a, b;
	smmu__pcache_attach(pool, &a);
	smmu__pcache_attach(pool, &b);
	uint8_t used[128] = {0};
	uint32_t f;

	used[alloc1(pool, &a, false)] = 1;
	used[alloc1(pool, &b, false)] = 1;
	cr_assert_eq(a.count, 63);
	cr_assert_eq(b.count, 63);
	cr_assert_eq(pool->nfree_shared, 0);
	for (int i = 0; i < 63; i++)
		used[alloc1(pool, &a, false)] = 1;
	cr_assert_eq(a.count, 0);
	f = alloc1(pool, &a, false);
	cr_assert(!used[f]);
	used[f] = 1;
	cr_assert_eq(b.count, 0, "B's frames were stolen");
	cr_assert_eq(a.count, 62);
	check_pool(pool, used);

	/* B now steals back from A. */
	f = alloc1(pool, &b, false);
	cr_assert(!used[f]);
	used[f] = 1;
	cr_assert_eq(a.count, 0);
	cr_assert_eq(b.count, 61);
	check_pool(pool, used);

	/* No cache: steals B's frames, hands one out, and the rest return to
	 * the shared list. */
	f = alloc1(pool, NULL, false);
	cr_assert(!used[f]);
	used[f] = 1;
	cr_assert_eq(b.count, 0);
	cr_assert_eq(pool->nfree_shared, 60);
	check_pool(pool, used);

	for (uint32_t i = 0; i < 128; i++)
		if (used[i])
			put1(pool, i);
	smmu__pcache_detach(&a);
	smmu__pcache_detach(&b);
	rmpool(pool);
}

/*
 * pool.h: "Free frames sit on singly linked chains of at most
 * SMMU_POOL_CHAIN frames".  A cache can hold more than a chain (lost fault
 * races give frames back one by one through smmu__pool_free_unused); when
 * an allocator without a cache steals such a cache, the remainder must
 * still go back as bounded chains.
 */
Test(pool, steal_oversized_cache_keeps_chains_bounded)
{
	struct smmu_pool *pool = mkpool(NULL, 128, 4096, 0);
	struct smmu__pcache a;
	smmu__pcache_attach(pool, &a);
	uint32_t held[128];
	for (int i = 0; i < 128; i++)
		held[i] = alloc1(pool, NULL, false);
	/* 100 frames come back to A one by one (lost demand-fault races). */
	for (int i = 0; i < 100; i++)
		smmu__pool_free_unused(pool, &a, held[i]);
	cr_assert_eq(a.count, 100);
	cr_assert_eq(pool->nfree_shared, 0);
	uint32_t f = alloc1(pool, NULL, false); /* steals A */
	cr_assert_eq(a.count, 0);
	cr_assert_eq(smmu_pool_free_frames(pool), 99);
	uint8_t used[128] = {0};
	for (int i = 100; i < 128; i++)
		used[held[i]] = 1;
	used[f] = 1;
	check_pool(pool, used); /* fails: one chain of 99 frames */
	put1(pool, f);
	smmu__pool_put_frames(pool, held + 100, 28);
	smmu__pcache_detach(&a);
	rmpool(pool);
}

/* The consequence of the unbounded chain above: chain_len is 16 bits, so a
 * cache of more than 65535 frames stolen by a cacheless allocator corrupts
 * the free count. */
Test(pool, steal_huge_cache_free_count_exact)
{
	const size_t n = 70000;
	struct smmu_pool *pool = mkpool(NULL, n, 4096, 0);
	struct smmu__pcache a;
	smmu__pcache_attach(pool, &a);
	uint32_t *held = malloc(n * sizeof(*held));
	cr_assert(held);
	for (size_t i = 0; i < n; i++)
		held[i] = alloc1(pool, NULL, false);
	for (size_t i = 0; i < n; i++)
		smmu__pool_free_unused(pool, &a, held[i]);
	cr_assert_eq(a.count, n);
	uint32_t f = alloc1(pool, NULL, false);
	size_t nfree = smmu_pool_free_frames(pool);
	put1(pool, f);
	smmu__pcache_detach(&a);
	size_t nfree_end = smmu_pool_free_frames(pool);
	free(held);
	cr_assert_eq(nfree, n - 1, "free count after the steal: %zu, expected %zu", nfree, n - 1);
	cr_assert_eq(nfree_end, n);
	rmpool(pool);
}

Test(pool, detach_returns_cache_in_bounded_chains)
{
	struct smmu_pool *pool = mkpool(NULL, 256, 4096, 0);
	struct smmu__pcache a;
	smmu__pcache_attach(pool, &a);
	uint32_t held[200];
	for (int i = 0; i < 200; i++)
		held[i] = alloc1(pool, NULL, false);
	for (int i = 0; i < 200; i++)
		smmu__pool_free_unused(pool, &a, held[i]);
	cr_assert_eq(a.count, 200);
	cr_assert_eq(smmu_pool_free_frames(pool), 256);
	check_pool(pool, NULL);
	smmu__pcache_detach(&a);
	cr_assert_eq(pool->caches, NULL);
	cr_assert_eq(pool->nfree_shared, 256);
	check_pool(pool, NULL); /* chains of <= 64 */
	rmpool(pool);
}

Test(pool, free_unused_goes_to_cache_or_shared)
{
	struct smmu_pool *pool = mkpool(NULL, 64, 4096, SMMU_POOL_POISON);
	struct smmu__pcache a;
	smmu__pcache_attach(pool, &a);
	uint32_t f = alloc1(pool, &a, true);
	cr_assert_eq(a.count, 63);
	memset(smmu__frame_host(pool, f), 0x11, pool->page_size);
	smmu__pool_free_unused(pool, &a, f);
	cr_assert_eq(a.count, 64);
	cr_assert_eq(a.head, f, "the frame is the next one the cache hands out");
	cr_assert_eq(rc_of(pool, f), 0);
	const unsigned char *p = smmu__frame_host(pool, f);
	for (size_t i = 0; i < pool->page_size; i++)
		cr_assert_eq(p[i], SMMU_POISON_BYTE);
	cr_assert_eq(alloc1(pool, &a, true), f);
	for (size_t i = 0; i < pool->page_size; i++)
		cr_assert_eq(p[i], 0, "reused frame not zeroed at %zu", i);
	smmu__pool_free_unused(pool, NULL, f);
	cr_assert_eq(pool->nfree_shared, 1);
	check_pool(pool, NULL);
	smmu__pcache_detach(&a);
	rmpool(pool);
}

Test(pool, put_frames_to_a_cache_keeps_at_most_two_chains_there)
{
	struct smmu_pool *pool = mkpool(NULL, 256, 4096, SMMU_POOL_POISON);
	struct smmu__pcache a;
	smmu__pcache_attach(pool, &a);
	uint32_t held[200];
	for (int i = 0; i < 200; i++)
		held[i] = alloc1(pool, NULL, false); /* the shared list: 56 left */
	cr_assert_eq(pool->nfree_shared, 56);
	cr_assert_eq(a.count, 0);
	/* One frame: into the cache, first out again, and poisoned. */
	cr_assert_eq(smmu__pool_put_frames_to(pool, &a, held, 1), 1);
	cr_assert_eq(a.count, 1);
	cr_assert_eq(a.head, held[0]);
	cr_assert_eq(pool->nfree_shared, 56);
	cr_assert_eq(((const unsigned char *)smmu__frame_host(pool, held[0]))[0], SMMU_POISON_BYTE);
	cr_assert_eq(alloc1(pool, &a, false), held[0]);
	cr_assert_eq(a.count, 0);
	/* A chain fits; more than one chain at once goes to the shared list. */
	cr_assert_eq(smmu__pool_put_frames_to(pool, &a, held + 1, SMMU_POOL_CHAIN), SMMU_POOL_CHAIN);
	cr_assert_eq(a.count, SMMU_POOL_CHAIN);
	cr_assert_eq(smmu__pool_put_frames_to(pool, &a, held + 1 + SMMU_POOL_CHAIN, SMMU_POOL_CHAIN + 1),
		     SMMU_POOL_CHAIN + 1);
	cr_assert_eq(a.count, SMMU_POOL_CHAIN);
	cr_assert_eq(pool->nfree_shared, 56 + SMMU_POOL_CHAIN + 1);
	/* Up to two chains in the cache, then the shared list again. */
	size_t at = 2 + 2 * SMMU_POOL_CHAIN;
	cr_assert_eq(smmu__pool_put_frames_to(pool, &a, held + at, 60), 60);
	cr_assert_eq(a.count, SMMU_POOL_CHAIN + 60);
	cr_assert_eq(smmu__pool_put_frames_to(pool, &a, held + at + 60, 5), 5);
	cr_assert_eq(a.count, SMMU_POOL_CHAIN + 60, "the cache grew past two chains");
	cr_assert_eq(pool->nfree_shared, 56 + SMMU_POOL_CHAIN + 1 + 5);
	/* Frames still mapped elsewhere are not freed, into the cache or not. */
	smmu__pool_get(pool, held[0]);
	cr_assert_eq(smmu__pool_put_frames_to(pool, &a, held, 1), 0);
	cr_assert_eq(a.count, SMMU_POOL_CHAIN + 60);
	cr_assert_eq(smmu__pool_put_frames_to(pool, &a, held, 1), 1);
	cr_assert_eq(smmu__pool_put_frames(pool, held + at + 65, 200 - (at + 65)), 200 - (at + 65));
	cr_assert_eq(smmu_pool_free_frames(pool), 256);
	check_pool(pool, NULL);
	smmu__pcache_detach(&a);
	rmpool(pool);
}

/* ---------------------------------------------------------- refcounts */

Test(pool, get_then_put_twice_frees_once)
{
	struct smmu_pool *pool = mkpool(NULL, 64, 4096, 0);
	uint32_t f = alloc1(pool, NULL, false);
	cr_assert_eq(smmu_pool_free_frames(pool), 63);
	smmu__pool_get(pool, f);
	cr_assert_eq(rc_of(pool, f), 2);
	cr_assert_eq(smmu__pool_put_frames(pool, &f, 1), 0);
	cr_assert_eq(rc_of(pool, f), 1);
	cr_assert_eq(smmu_pool_free_frames(pool), 63);
	cr_assert_eq(smmu__pool_put_frames(pool, &f, 1), 1);
	cr_assert_eq(rc_of(pool, f), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), 64);
	check_pool(pool, NULL);
	rmpool(pool);
}

Test(pool, put_frames_mixed_refcounts)
{
	long base = smmu__alloc_live();
	const unsigned n = 300;
	struct smmu_pool *pool = mkpool(NULL, n, 4096, 0);
	uint32_t fr[300], rc[300];
	uint8_t used[300] = {0};
	uint64_t seed = 42;
	for (unsigned i = 0; i < n; i++) {
		fr[i] = alloc1(pool, NULL, false);
		used[fr[i]] = 1;
		rc[i] = 1 + (uint32_t)(rng_next(&seed) % 3);
		for (uint32_t k = 1; k < rc[i]; k++)
			smmu__pool_get(pool, fr[i]);
	}
	/* Make sure the last frame of the first round is skipped (exercises
	 * closing the chain after the loop). */
	if (rc[n - 1] == 1) {
		smmu__pool_get(pool, fr[n - 1]);
		rc[n - 1] = 2;
	}
	unsigned round = 0;
	for (;;) {
		size_t expect = 0;
		for (unsigned i = 0; i < n; i++)
			if (rc[i] == 1)
				expect++;
		size_t before = smmu_pool_free_frames(pool);
		/* All frames still referenced, in one call. */
		uint32_t batch[300];
		unsigned nb = 0;
		for (unsigned i = 0; i < n; i++)
			if (rc[i] > 0)
				batch[nb++] = fr[i];
		if (!nb)
			break;
		size_t freed = smmu__pool_put_frames(pool, batch, nb);
		cr_assert_eq(freed, expect, "round %u: freed %zu, expected %zu", round, freed, expect);
		cr_assert_eq(smmu_pool_free_frames(pool), before + expect);
		for (unsigned i = 0; i < n; i++) {
			if (rc[i] == 0)
				continue;
			rc[i]--;
			cr_assert_eq(rc_of(pool, fr[i]), rc[i]);
			if (rc[i] == 0)
				used[fr[i]] = 0;
		}
		check_pool(pool, used);
		round++;
	}
	cr_assert_eq(round, 3);
	rmpool(pool);
	cr_assert_eq(smmu__alloc_live(), base);
}

Test(pool, put_frames_duplicates_in_one_call)
{
	struct smmu_pool *pool = mkpool(NULL, 64, 4096, 0);
	uint32_t f = alloc1(pool, NULL, false), g = alloc1(pool, NULL, false);
	smmu__pool_get(pool, f);
	smmu__pool_get(pool, f);
	uint32_t batch[] = {f, g, f, f};
	cr_assert_eq(smmu__pool_put_frames(pool, batch, 4), 2);
	cr_assert_eq(smmu_pool_free_frames(pool), 64);
	check_pool(pool, NULL);
	rmpool(pool);
}

Test(pool, put_frames_builds_bounded_chains)
{
	struct smmu_pool *pool = mkpool(NULL, 200, 4096, 0);
	uint32_t fr[200];
	for (int i = 0; i < 200; i++)
		fr[i] = alloc1(pool, NULL, false);
	cr_assert_eq(pool->nfree_shared, 0);
	cr_assert_eq(smmu__pool_put_frames(pool, fr, 150), 150);
	unsigned chains = 0;
	for (uint32_t h = pool->free_chains; h != SMMU_NO_FRAME; h = pool->frames[h].next_chain)
		chains++;
	cr_assert_eq(chains, 3, "150 frames: chains of 64, 64, 22");
	check_pool(pool, NULL);
	cr_assert_eq(smmu__pool_put_frames(pool, fr + 150, 50), 50);
	cr_assert_eq(smmu__pool_put_frames(pool, fr, 0), 0);
	check_pool(pool, NULL);
	rmpool(pool);
}

/* ------------------------------------------------------- zero, poison */

Test(pool, zero_fast_path_skips_memset_on_fresh_library_frames)
{
	struct smmu_pool *pool = mkpool(NULL, 64, 4096, 0);
	/* A fresh library-mapped frame carries SMMU_FRAME_ZERO; scribble on
	 * it behind the pool's back: if alloc(zero) skips the memset, as it
	 * should, the scribble survives. */
	cr_assert(pool->frames[0].flags & SMMU_FRAME_ZERO);
	unsigned char *p0 = smmu__frame_host(pool, 0);
	p0[7] = 0xab;
	uint32_t f = alloc1(pool, NULL, true);
	cr_assert_eq(f, 0);
	cr_assert_eq(p0[7], 0xab, "a frame known to be zero was memset anyway");
	cr_assert(!(pool->frames[f].flags & SMMU_FRAME_ZERO), "ZERO flag cleared on alloc");
	/* Freed and reused, it must be zeroed for real. */
	memset(p0, 0x5a, pool->page_size);
	put1(pool, f);
	cr_assert(!(pool->frames[f].flags & SMMU_FRAME_ZERO));
	/* Frames come back LIFO from the shared list: get it again. */
	uint32_t g = alloc1(pool, NULL, true);
	cr_assert_eq(g, f);
	for (size_t i = 0; i < pool->page_size; i++)
		cr_assert_eq(p0[i], 0, "byte %zu of a reused frame not zeroed", i);
	/* zero = false: no memset, contents left. */
	memset(p0, 0x33, pool->page_size);
	put1(pool, g);
	g = alloc1(pool, NULL, false);
	cr_assert_eq(g, f);
	cr_assert_eq(p0[100], 0x33);
	put1(pool, g);
	rmpool(pool);
}

Test(pool, caller_region_garbage_is_zeroed_on_alloc)
{
	const size_t n = 70, ps = 4096;
	unsigned char *region = mmap(NULL, n * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(region, MAP_FAILED);
	memset(region, 0xee, n * ps);
	struct smmu_pool *pool = mkpool(region, n, ps, 0);
	cr_assert_eq(pool->base, (char *)region);
	for (uint32_t f = 0; f < n; f++)
		cr_assert(!(pool->frames[f].flags & SMMU_FRAME_ZERO), "caller memory is not assumed zero");
	struct smmu__pcache pc;
	smmu__pcache_attach(pool, &pc);
	uint32_t fr[70];
	for (size_t i = 0; i < n; i++) {
		fr[i] = alloc1(pool, i % 2 ? &pc : NULL, true);
		const unsigned char *p = smmu__frame_host(pool, fr[i]);
		cr_assert_eq(p, region + (size_t)fr[i] * ps);
		for (size_t k = 0; k < ps; k++)
			cr_assert_eq(p[k], 0, "frame %u byte %zu: %#x", fr[i], k, p[k]);
	}
	smmu__pool_put_frames(pool, fr, n);
	smmu__pcache_detach(&pc);
	rmpool(pool);
	/* The region stays the caller's. */
	region[0] = 1;
	munmap(region, n * ps);
}

Test(pool, large_pages_caller_region_4k_aligned)
{
	/* 16 KiB frames over a region that is only 4 KiB aligned. */
	const size_t ps = 16384, n = 8;
	unsigned char *map = mmap(NULL, (n + 1) * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(map, MAP_FAILED);
	unsigned char *region = map + 4096;
	if (((uintptr_t)region & (ps - 1)) == 0)
		region += 4096;
	memset(region, 0x77, n * ps);
	struct smmu_pool *pool = mkpool(region, n, ps, 0);
	cr_assert_eq(pool->page_shift, 14);
	uint32_t f = alloc1(pool, NULL, true);
	cr_assert_eq((unsigned char *)smmu__frame_host(pool, f), region + f * ps);
	for (size_t i = 0; i < ps; i++)
		cr_assert_eq(region[f * ps + i], 0);
	cr_assert_eq(region[((f + 1) % n) * ps], 0x77, "only the allocated frame is zeroed");
	put1(pool, f);
	rmpool(pool);
	munmap(map, (n + 1) * ps);
}

Test(pool, poison_on_free)
{
	struct smmu_pool *pool = mkpool(NULL, 64, 4096, SMMU_POOL_POISON);
	uint32_t f = alloc1(pool, NULL, true), g = alloc1(pool, NULL, true);
	memset(smmu__frame_host(pool, f), 0x12, pool->page_size);
	memset(smmu__frame_host(pool, g), 0x34, pool->page_size);
	smmu__pool_get(pool, g);
	uint32_t both[] = {f, g};
	cr_assert_eq(smmu__pool_put_frames(pool, both, 2), 1);
	const unsigned char *pf = smmu__frame_host(pool, f), *pg = smmu__frame_host(pool, g);
	for (size_t i = 0; i < pool->page_size; i++) {
		cr_assert_eq(pf[i], SMMU_POISON_BYTE, "freed frame byte %zu not poisoned", i);
		cr_assert_eq(pg[i], 0x34, "a frame still referenced was poisoned");
	}
	put1(pool, g);
	for (size_t i = 0; i < pool->page_size; i++)
		cr_assert_eq(pg[i], SMMU_POISON_BYTE);
	rmpool(pool);

	/* Without the flag, freed contents stay as they were. */
	pool = mkpool(NULL, 64, 4096, 0);
	f = alloc1(pool, NULL, true);
	memset(smmu__frame_host(pool, f), 0x12, pool->page_size);
	put1(pool, f);
	cr_assert_eq(((unsigned char *)smmu__frame_host(pool, f))[5], 0x12);
	rmpool(pool);
}

/*
 * "when the shared list is empty an allocator steals the other caches'
 * frames before it reports -ENOMEM, so exhaustion is exact" (pool.h).
 * A stealer walks the stolen list to its tail outside every lock; frames in
 * that walk are on no list.  Another allocator that looks then finds
 * nothing.  The interleaving is made deterministic by protecting a page of
 * the descriptor array that the walk must read: the stealer faults in the
 * middle of its walk and waits in the handler until the second allocation
 * has returned (or a second has passed, so that an implementation which
 * makes the second allocator wait cannot deadlock here).
 */
static char *tp_page;
static pthread_t tp_main;
static atomic_int tp_in_transit, tp_b_done;

static void tp_segv(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	char *a = si->si_addr;
	if (a < tp_page || a >= tp_page + 4096) {
		signal(SIGSEGV, SIG_DFL); /* a real crash: let it happen */
		return;
	}
	if (!pthread_equal(pthread_self(), tp_main) && !atomic_load(&tp_in_transit)) {
		struct timespec t0, t;
		atomic_store(&tp_in_transit, 1);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		do
			clock_gettime(CLOCK_MONOTONIC, &t);
		while (!atomic_load(&tp_b_done) && t.tv_sec - t0.tv_sec < 2);
	}
	mprotect(tp_page, 4096, PROT_READ | PROT_WRITE);
}

struct tp_arg {
	struct smmu_pool *pool;
	struct smmu__pcache *pc;
	uint32_t f;
	int err;
	atomic_int done;
};

static void *tp_stealer(void *p)
{
	struct tp_arg *t = p;
	t->err = smmu__pool_alloc(t->pool, t->pc, false, &t->f);
	atomic_store(&t->done, 1);
	return NULL;
}

Test(pool, frames_in_a_steal_are_not_lost_to_a_concurrent_allocator)
{
	const uint32_t n = 4096;
	struct smmu_pool *pool = mkpool(NULL, n, 4096, 0);
	struct smmu__pcache a, b, c;
	smmu__pcache_attach(pool, &c);
	uint32_t *held = malloc(n * sizeof(*held));
	cr_assert(held);
	for (uint32_t i = 0; i < n; i++)
		held[i] = alloc1(pool, NULL, false);
	/* Every frame back into C, one by one: C's list runs n-1, ..., 0. */
	for (uint32_t i = 0; i < n; i++)
		smmu__pool_free_unused(pool, &c, held[i]);
	smmu__pcache_attach(pool, &a);
	smmu__pcache_attach(pool, &b);
	cr_assert_eq(pool->nfree_shared, 0);
	cr_assert_eq(c.count, n);

	/* A page of descriptors in the middle of the array. */
	uintptr_t lo = ((uintptr_t)&pool->frames[n / 2] + 4095) & ~(uintptr_t)4095;
	cr_assert_leq(lo + 4096, (uintptr_t)&pool->frames[n]);
	tp_page = (char *)lo;
	tp_main = pthread_self();
	atomic_store(&tp_in_transit, 0);
	atomic_store(&tp_b_done, 0);
	struct sigaction sa = {.sa_sigaction = tp_segv, .sa_flags = SA_SIGINFO}, old;
	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGSEGV, &sa, &old), 0);
	cr_assert_eq(mprotect(tp_page, 4096, PROT_NONE), 0);

	struct tp_arg t = {.pool = pool, .pc = &a};
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, tp_stealer, &t), 0);
	while (!atomic_load(&tp_in_transit) && !atomic_load(&t.done))
		sched_yield();
	bool caught = atomic_load(&tp_in_transit);
	uint32_t fb = SMMU_NO_FRAME;
	int errb = smmu__pool_alloc(pool, &b, false, &fb);
	atomic_store(&tp_b_done, 1);
	pthread_join(th, NULL);
	mprotect(tp_page, 4096, PROT_READ | PROT_WRITE);
	sigaction(SIGSEGV, &old, NULL);

	cr_log_info("steal walk interrupted: %s", caught ? "yes" : "no (walk did not touch the page)");
	cr_assert_eq(t.err, 0);
	size_t nfree = smmu_pool_free_frames(pool);
	if (errb == 0)
		smmu__pool_put_frames(pool, &fb, 1);
	smmu__pool_put_frames(pool, &t.f, 1);
	smmu__pcache_detach(&a);
	smmu__pcache_detach(&b);
	smmu__pcache_detach(&c);
	free(held);
	rmpool(pool);
	cr_assert_eq(errb, 0, "-ENOMEM with %zu of %u frames free: a concurrent steal hid them", nfree, n);
}

/* ------------------------------------------------------------- hammer */

#define HAMMER_THREADS 4
#define HAMMER_FRAMES 300u
#define HAMMER_ITERS 20000

struct hammer {
	struct smmu_pool *pool;
	_Atomic int owner[HAMMER_FRAMES]; /* 0 free, else thread index + 1 */
	atomic_int errors;
	atomic_int enomem;
	pthread_barrier_t start;
	char msg[256];
};

struct hammer_thread {
	struct hammer *h;
	int id;
};

static void hammer_fail(struct hammer *h, const char *what, uint32_t f)
{
	if (atomic_fetch_add(&h->errors, 1) == 0)
		snprintf(h->msg, sizeof(h->msg), "%s (frame %u)", what, f);
}

static void claim(struct hammer *h, int me, uint32_t f, bool zero)
{
	int expected = 0;
	if (f >= HAMMER_FRAMES) {
		hammer_fail(h, "frame number out of range", f);
		return;
	}
	if (!atomic_compare_exchange_strong(&h->owner[f], &expected, me)) {
		hammer_fail(h, "frame handed out twice", f);
		return;
	}
	uint64_t *p = smmu__frame_host(h->pool, f);
	if (zero && (p[0] != 0 || p[h->pool->page_size / 8 - 1] != 0))
		hammer_fail(h, "frame not zeroed", f);
	p[0] = (uint64_t)me; /* a stamp: a second owner would overwrite it */
	p[1] = f;
}

static void release(struct hammer *h, int me, uint32_t f)
{
	uint64_t *p = smmu__frame_host(h->pool, f);
	if (p[0] != (uint64_t)me || p[1] != f)
		hammer_fail(h, "frame contents changed while owned", f);
	int expected = me;
	if (!atomic_compare_exchange_strong(&h->owner[f], &expected, 0))
		hammer_fail(h, "frame owner changed while owned", f);
}

static void *hammer_main(void *arg)
{
	struct hammer_thread *t = arg;
	struct hammer *h = t->h;
	const int me = t->id + 1;
	struct smmu__pcache pc;
	uint32_t held[HAMMER_FRAMES];
	unsigned nheld = 0;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)me;

	smmu__pcache_attach(h->pool, &pc);
	pthread_barrier_wait(&h->start);
	for (int it = 0; it < HAMMER_ITERS && !atomic_load(&h->errors); it++) {
		unsigned op = (unsigned)(rng_next(&seed) % 16);
		if (op < 8) { /* allocate a few */
			unsigned k = 1 + (unsigned)(rng_next(&seed) % 8);
			for (unsigned i = 0; i < k && nheld < HAMMER_FRAMES; i++) {
				uint32_t f;
				bool zero = rng_next(&seed) & 1;
				struct smmu__pcache *use = (rng_next(&seed) % 8) ? &pc : NULL;
				int err = smmu__pool_alloc(h->pool, use, zero, &f);
				if (err == -ENOMEM) {
					atomic_fetch_add(&h->enomem, 1);
					break;
				}
				if (err) {
					hammer_fail(h, "alloc error", 0);
					break;
				}
				claim(h, me, f, zero);
				held[nheld++] = f;
			}
		} else if (op < 13 && nheld) { /* free a random batch */
			unsigned k = 1 + (unsigned)(rng_next(&seed) % nheld);
			uint32_t batch[HAMMER_FRAMES];
			for (unsigned i = 0; i < k; i++) {
				unsigned j = (unsigned)(rng_next(&seed) % nheld);
				batch[i] = held[j];
				held[j] = held[--nheld];
				release(h, me, batch[i]);
			}
			if (rng_next(&seed) & 1) {
				/* Take an extra reference on one and drop it first. */
				smmu__pool_get(h->pool, batch[0]);
				if (smmu__pool_put_frames(h->pool, batch, 1) != 0)
					hammer_fail(h, "put with refcount 2 freed the frame", batch[0]);
			}
			size_t freed = smmu__pool_put_frames(h->pool, batch, k);
			if (freed != k)
				hammer_fail(h, "put_frames freed the wrong number", (uint32_t)freed);
		} else if (op < 15 && nheld) { /* a lost fault race */
			unsigned j = (unsigned)(rng_next(&seed) % nheld);
			uint32_t f = held[j];
			held[j] = held[--nheld];
			release(h, me, f);
			smmu__pool_free_unused(h->pool, (rng_next(&seed) % 4) ? &pc : NULL, f);
		} else { /* a snapshot never exceeds the total */
			if (smmu_pool_free_frames(h->pool) > HAMMER_FRAMES)
				hammer_fail(h, "free count above total", 0);
		}
	}
	for (unsigned i = 0; i < nheld; i++)
		release(h, me, held[i]);
	smmu__pool_put_frames(h->pool, held, nheld);
	smmu__pcache_detach(&pc);
	return NULL;
}

Test(pool, hammer_no_double_handout)
{
	long base = smmu__alloc_live();
	struct hammer *h = calloc(1, sizeof(*h));
	cr_assert(h);
	h->pool = mkpool(NULL, HAMMER_FRAMES, 4096, SMMU_POOL_POISON);
	pthread_barrier_init(&h->start, NULL, HAMMER_THREADS);
	pthread_t th[HAMMER_THREADS];
	struct hammer_thread ts[HAMMER_THREADS];
	for (int i = 0; i < HAMMER_THREADS; i++) {
		ts[i] = (struct hammer_thread){.h = h, .id = i};
		cr_assert_eq(pthread_create(&th[i], NULL, hammer_main, &ts[i]), 0);
	}
	for (int i = 0; i < HAMMER_THREADS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&h->start);
	cr_log_info("pool hammer: %d -ENOMEM under contention", atomic_load(&h->enomem));
	cr_assert_eq(atomic_load(&h->errors), 0, "%s", h->msg);
	for (uint32_t f = 0; f < HAMMER_FRAMES; f++)
		cr_assert_eq(atomic_load(&h->owner[f]), 0);
	cr_assert_eq(smmu_pool_free_frames(h->pool), HAMMER_FRAMES);
	cr_assert_eq(h->pool->nfree_shared, HAMMER_FRAMES);
	check_chain_bound = false;
	check_pool(h->pool, NULL);
	rmpool(h->pool);
	free(h);
	cr_assert_eq(smmu__alloc_live(), base);
}
