/* SPDX-License-Identifier: MIT */
/*
 * White-box tests of the region set (lib/region.c): insert, merge, remove,
 * split, set_prot, find_free, covered, any, find and lower_bound, over
 * many random operations checked against a page-bitmap reference model,
 * with the set's invariants checked after each one (smmu__regions_check,
 * which is compiled out of release builds, and the same checks here).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "region.h"

TestSuite(region, .timeout = 60);

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

#define NPAGES 256
#define PS 4096ull
#define BASE 0x100000ull
#define MARGIN 8 /* pages either side of the model that are always free */
#define A(p) (BASE + (smmu_addr_t)(p)*PS)

/* The reference model: per page, -1 (free) or the protection; flags. */
struct model {
	int prot[NPAGES];
	int flags[NPAGES];
};

static bool page_free(const struct model *m, long p)
{
	return p < 0 || p >= NPAGES || m->prot[p] < 0;
}

/* Invariants: sorted, disjoint, non-empty, merged, page-aligned, n <= cap. */
static void check_invariants(const struct smmu__regions *rs)
{
	smmu__regions_check(rs);
	cr_assert_leq(rs->n, rs->cap);
	for (size_t i = 0; i < rs->n; i++) {
		const struct smmu__region *r = &rs->v[i];
		cr_assert_lt(r->start, r->end, "region %zu empty", i);
		cr_assert_eq(r->start % PS, 0);
		cr_assert_eq(r->end % PS, 0);
		if (i + 1 < rs->n) {
			const struct smmu__region *s = &rs->v[i + 1];
			cr_assert_leq(r->end, s->start, "regions %zu and %zu overlap or are unsorted", i, i + 1);
			cr_assert(!(r->end == s->start && r->prot == s->prot && r->flags == s->flags),
				  "regions %zu and %zu should have been merged", i, i + 1);
		}
	}
}

/* The set must be exactly the maximal runs of equal (prot, flags). */
static void check_against_model(const struct smmu__regions *rs, const struct model *m, int step)
{
	check_invariants(rs);
	size_t k = 0;
	for (int p = 0; p < NPAGES;) {
		if (m->prot[p] < 0) {
			p++;
			continue;
		}
		int q = p + 1;
		while (q < NPAGES && m->prot[q] == m->prot[p] && m->flags[q] == m->flags[p])
			q++;
		cr_assert_lt(k, rs->n, "step %d: region [%d, %d) missing", step, p, q);
		const struct smmu__region *r = &rs->v[k];
		cr_assert(
			r->start == A(p) && r->end == A(q) && r->prot == m->prot[p] && r->flags == m->flags[p],
			"step %d: region %zu is [%#llx, %#llx) prot %d flags %d; model [%#llx, %#llx) prot %d flags %d",
			step, k, (unsigned long long)r->start, (unsigned long long)r->end, r->prot, r->flags,
			(unsigned long long)A(p), (unsigned long long)A(q), m->prot[p], m->flags[p]);
		k++;
		p = q;
	}
	cr_assert_eq(k, rs->n, "step %d: %zu regions, model has %zu", step, rs->n, k);
}

static long model_find_free(const struct model *m, long from, long limit, long len)
{
	for (long a = from; a + len <= limit; a++) {
		bool ok = true;
		for (long p = a; p < a + len && ok; p++)
			ok = page_free(m, p);
		if (ok)
			return a;
	}
	return LONG_MIN;
}

static void check_queries(const struct smmu__regions *rs, const struct model *m, uint64_t *seed, int step)
{
	for (int q = 0; q < 8; q++) {
		long p = (long)(rng_next(seed) % (NPAGES + 2 * MARGIN)) - MARGIN;
		smmu_addr_t a = A(p) + (rng_next(seed) % 3 == 0 ? rng_next(seed) % PS : 0);
		/* find */
		const struct smmu__region *r = smmu__regions_find(rs, a);
		if (page_free(m, p)) {
			cr_assert_null(r, "step %d: find(page %ld) found a region in a hole", step, p);
		} else {
			cr_assert_not_null(r, "step %d: find(page %ld)", step, p);
			cr_assert(r->start <= a && a < r->end);
			cr_assert_eq(r->prot, m->prot[p]);
		}
		/* lower_bound: the first region with end > a */
		size_t lb = smmu__regions_lower_bound(rs, a);
		cr_assert_leq(lb, rs->n);
		if (lb < rs->n)
			cr_assert_gt(rs->v[lb].end, a);
		if (lb > 0)
			cr_assert_leq(rs->v[lb - 1].end, a);
		/* any / covered */
		long len = 1 + (long)(rng_next(seed) % 40);
		bool any = false, all = true;
		for (long x = p; x < p + len; x++) {
			any |= !page_free(m, x);
			all &= !page_free(m, x);
		}
		cr_assert_eq(smmu__regions_any(rs, A(p), A(p + len)), any, "step %d: any([%ld, %ld))", step, p,
			     p + len);
		cr_assert_eq(smmu__regions_covered(rs, A(p), A(p + len)), all, "step %d: covered([%ld, %ld))", step, p,
			     p + len);
		/* find_free */
		long from = (long)(rng_next(seed) % (NPAGES + 2 * MARGIN)) - MARGIN;
		long limit = from + (long)(rng_next(seed) % (NPAGES + MARGIN));
		long flen = 1 + (long)(rng_next(seed) % 24);
		smmu_addr_t out = 0;
		int err = smmu__regions_find_free(rs, A(from), A(limit), (uint64_t)flen * PS, &out);
		long want = model_find_free(m, from, limit, flen);
		if (want == LONG_MIN) {
			cr_assert_eq(err, -ENOMEM, "step %d: find_free(from %ld, limit %ld, len %ld) found page %lld",
				     step, from, limit, flen,
				     err ? 0LL : (long long)((long long)(out - BASE) / (long long)PS));
		} else {
			cr_assert_eq(err, 0,
				     "step %d: find_free(from %ld, limit %ld, len %ld) failed; page %ld is free", step,
				     from, limit, flen, want);
			cr_assert_eq(out, A(want),
				     "step %d: find_free(from %ld, limit %ld, len %ld) = page %lld, want %ld", step,
				     from, limit, flen, (long long)((long long)(out - BASE) / (long long)PS), want);
		}
	}
}

/* Reserve, then run op, which must not reallocate. */
#define RESERVED(rs, extra, op)                                                          \
	do {                                                                             \
		cr_assert_eq(smmu__regions_reserve((rs), (extra)), 0);                   \
		cr_assert_geq((rs)->cap, (rs)->n + (extra));                             \
		struct smmu__region *v_ = (rs)->v;                                       \
		op;                                                                      \
		cr_assert_eq((rs)->v, v_, "an operation reallocated after its reserve"); \
	} while (0)

Test(region, random_ops_against_bitmap_model)
{
	long base = smmu__alloc_live();
	struct smmu__regions rs;
	struct model m;
	for (int p = 0; p < NPAGES; p++) {
		m.prot[p] = -1;
		m.flags[p] = 0;
	}
	smmu__regions_init(&rs);
	uint64_t seed = 0xdecafbad;
	const int prots[3] = {SMMU_PROT_NONE, SMMU_PROT_READ, SMMU_PROT_READ | SMMU_PROT_WRITE};
	unsigned counts[3] = {0};
	size_t max_n = 0;

	for (int step = 0; step < 20000; step++) {
		unsigned op = (unsigned)(rng_next(&seed) % 10);
		long lo = (long)(rng_next(&seed) % NPAGES);
		long maxlen = (rng_next(&seed) % 4) ? 8 : 64;
		long len = 1 + (long)(rng_next(&seed) % (unsigned long)maxlen);
		if (op < 4) { /* insert into a free range */
			if (!page_free(&m, lo))
				continue;
			long hi = lo + 1;
			while (hi < NPAGES && hi - lo < len && page_free(&m, hi))
				hi++;
			int prot = prots[rng_next(&seed) % 3];
			int flags = (rng_next(&seed) % 8) == 0;
			RESERVED(&rs, 1, smmu__regions_insert(&rs, A(lo), A(hi), prot, flags));
			for (long p = lo; p < hi; p++) {
				m.prot[p] = prot;
				m.flags[p] = flags;
			}
			counts[0]++;
		} else if (op < 7) { /* remove anything, holes included */
			long hi = lo + len > NPAGES + MARGIN ? NPAGES + MARGIN : lo + len;
			RESERVED(&rs, 2, smmu__regions_remove(&rs, A(lo), A(hi)));
			for (long p = lo; p < hi && p < NPAGES; p++)
				m.prot[p] = -1;
			counts[1]++;
		} else { /* set_prot over a covered range */
			if (page_free(&m, lo))
				continue;
			long hi = lo + 1;
			while (hi < NPAGES && hi - lo < len && !page_free(&m, hi))
				hi++;
			int prot = prots[rng_next(&seed) % 3];
			RESERVED(&rs, 2, smmu__regions_set_prot(&rs, A(lo), A(hi), prot));
			for (long p = lo; p < hi; p++)
				m.prot[p] = prot;
			counts[2]++;
		}
		check_against_model(&rs, &m, step);
		check_queries(&rs, &m, &seed, step);
		if (rs.n > max_n)
			max_n = rs.n;
	}
	cr_log_info("region model: %u inserts, %u removes, %u set_prots, up to %zu regions", counts[0], counts[1],
		    counts[2], max_n);
	cr_assert_gt(max_n, 20);
	smmu__regions_fini(&rs);
	cr_assert_eq(smmu__alloc_live(), base);
}

Test(region, insert_merges_both_sides)
{
	long base = smmu__alloc_live();
	struct smmu__regions rs;
	smmu__regions_init(&rs);
	RESERVED(&rs, 1, smmu__regions_insert(&rs, A(0), A(2), SMMU_PROT_READ, 0));
	RESERVED(&rs, 1, smmu__regions_insert(&rs, A(4), A(6), SMMU_PROT_READ, 0));
	RESERVED(&rs, 1, smmu__regions_insert(&rs, A(8), A(9), SMMU_PROT_READ, 1));
	cr_assert_eq(rs.n, 3);
	RESERVED(&rs, 1, smmu__regions_insert(&rs, A(2), A(4), SMMU_PROT_READ, 0));
	cr_assert_eq(rs.n, 2);
	cr_assert_eq(rs.v[0].start, A(0));
	cr_assert_eq(rs.v[0].end, A(6));
	/* Same prot, other flags: no merge. */
	RESERVED(&rs, 1, smmu__regions_insert(&rs, A(6), A(8), SMMU_PROT_READ, 0));
	cr_assert_eq(rs.n, 2);
	cr_assert_eq(rs.v[0].end, A(8));
	cr_assert_eq(rs.v[1].start, A(8));
	check_invariants(&rs);
	smmu__regions_fini(&rs);
	cr_assert_eq(smmu__alloc_live(), base);
	cr_assert_eq(rs.n, 0);
	cr_assert_null(rs.v);
}

Test(region, remove_splits_and_set_prot_remerges)
{
	long base = smmu__alloc_live();
	struct smmu__regions rs;
	smmu__regions_init(&rs);
	RESERVED(&rs, 1, smmu__regions_insert(&rs, A(0), A(10), SMMU_PROT_READ | SMMU_PROT_WRITE, 0));
	/* A hole in the middle: one region becomes two. */
	RESERVED(&rs, 2, smmu__regions_remove(&rs, A(3), A(5)));
	cr_assert_eq(rs.n, 2);
	cr_assert(rs.v[0].start == A(0) && rs.v[0].end == A(3));
	cr_assert(rs.v[1].start == A(5) && rs.v[1].end == A(10));
	/* set_prot in the middle of a region: three; back: one. */
	RESERVED(&rs, 2, smmu__regions_set_prot(&rs, A(6), A(8), SMMU_PROT_READ));
	cr_assert_eq(rs.n, 4);
	cr_assert_eq(rs.v[2].prot, SMMU_PROT_READ);
	RESERVED(&rs, 2, smmu__regions_set_prot(&rs, A(6), A(8), SMMU_PROT_READ | SMMU_PROT_WRITE));
	cr_assert_eq(rs.n, 2);
	/* set_prot over several regions at once merges them all. */
	RESERVED(&rs, 1, smmu__regions_insert(&rs, A(3), A(5), SMMU_PROT_NONE, 0));
	cr_assert_eq(rs.n, 3);
	RESERVED(&rs, 2, smmu__regions_set_prot(&rs, A(0), A(10), SMMU_PROT_NONE));
	cr_assert_eq(rs.n, 1);
	cr_assert(rs.v[0].start == A(0) && rs.v[0].end == A(10) && rs.v[0].prot == SMMU_PROT_NONE);
	/* Remove across everything, including outside. */
	RESERVED(&rs, 2, smmu__regions_remove(&rs, A(-5), A(20)));
	cr_assert_eq(rs.n, 0);
	check_invariants(&rs);
	smmu__regions_fini(&rs);
	cr_assert_eq(smmu__alloc_live(), base);
}

Test(region, find_free_edges)
{
	long base = smmu__alloc_live();
	struct smmu__regions rs;
	smmu_addr_t out;
	smmu__regions_init(&rs);
	cr_assert_eq(smmu__regions_find_free(&rs, A(0), A(4), 4 * PS, &out), 0);
	cr_assert_eq(out, A(0));
	cr_assert_eq(smmu__regions_find_free(&rs, A(0), A(4), 5 * PS, &out), -ENOMEM);
	RESERVED(&rs, 1, smmu__regions_insert(&rs, A(2), A(4), SMMU_PROT_READ, 0));
	RESERVED(&rs, 1, smmu__regions_insert(&rs, A(6), A(7), SMMU_PROT_NONE, 0));
	cr_assert_eq(smmu__regions_find_free(&rs, A(0), A(100), 2 * PS, &out), 0);
	cr_assert_eq(out, A(0));
	cr_assert_eq(smmu__regions_find_free(&rs, A(1), A(100), 2 * PS, &out), 0);
	cr_assert_eq(out, A(4), "[1, 3) overlaps; [4, 6) fits exactly");
	cr_assert_eq(smmu__regions_find_free(&rs, A(3), A(100), 3 * PS, &out), 0);
	cr_assert_eq(out, A(7));
	cr_assert_eq(smmu__regions_find_free(&rs, A(3), A(9), 3 * PS, &out), -ENOMEM);
	cr_assert_eq(smmu__regions_find_free(&rs, A(3), A(10), 3 * PS, &out), 0);
	cr_assert_eq(out, A(7));
	cr_assert_eq(smmu__regions_find_free(&rs, A(6), A(7), PS, &out), -ENOMEM);
	smmu__regions_fini(&rs);
	cr_assert_eq(smmu__alloc_live(), base);
}

Test(region, reserve_failure_leaves_set_unchanged)
{
	long base = smmu__alloc_live();
	struct smmu__regions rs;
	smmu__regions_init(&rs);
	/* First allocation. */
	smmu__alloc_fail_after(0);
	cr_assert_eq(smmu__regions_reserve(&rs, 1), -ENOMEM);
	smmu__alloc_fail_after(-1);
	cr_assert(rs.v == NULL && rs.n == 0 && rs.cap == 0);
	cr_assert_eq(smmu__alloc_live(), base);
	/* Growth. */
	for (int i = 0; i < 8; i++)
		RESERVED(&rs, 1, smmu__regions_insert(&rs, A(2 * i), A(2 * i + 1), SMMU_PROT_READ, 0));
	struct smmu__region copy[8];
	memcpy(copy, rs.v, sizeof(copy));
	size_t cap = rs.cap;
	struct smmu__region *v = rs.v;
	cr_assert_eq(smmu__regions_reserve(&rs, 0), 0, "nothing to reserve never allocates");
	smmu__alloc_fail_after(0);
	int err = smmu__regions_reserve(&rs, cap - rs.n + 1);
	bool fired = smmu__alloc_failure_fired();
	smmu__alloc_fail_after(-1);
	cr_assert(fired);
	cr_assert_eq(err, -ENOMEM);
	cr_assert_eq(rs.v, v);
	cr_assert_eq(rs.cap, cap);
	cr_assert_eq(rs.n, 8);
	cr_assert(memcmp(rs.v, copy, sizeof(copy)) == 0);
	cr_assert_eq(smmu__regions_reserve(&rs, cap - rs.n + 1), 0);
	cr_assert_gt(rs.cap, cap);
	cr_assert(memcmp(rs.v, copy, sizeof(copy)) == 0, "growth keeps the contents");
	smmu__regions_fini(&rs);
	cr_assert_eq(smmu__alloc_live(), base);
}
