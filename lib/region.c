/* SPDX-License-Identifier: MIT */
/* The region set (see region.h for the invariants). */
#include "region.h"

#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "util.h"

void smmu__regions_init(struct smmu__regions *rs)
{
	rs->v = NULL;
	rs->n = rs->cap = 0;
}

void smmu__regions_fini(struct smmu__regions *rs)
{
	smmu__free(rs->v, rs->cap * sizeof(*rs->v));
	smmu__regions_init(rs);
}

int smmu__regions_reserve(struct smmu__regions *rs, size_t extra)
{
	if (rs->n + extra <= rs->cap)
		return 0;
	size_t cap = rs->cap ? rs->cap * 2 : 8;
	while (cap < rs->n + extra)
		cap *= 2;
	struct smmu__region *v = smmu__realloc(rs->v, rs->cap * sizeof(*v), cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	rs->v = v;
	rs->cap = cap;
	return 0;
}

size_t smmu__regions_lower_bound(const struct smmu__regions *rs, smmu_addr_t addr)
{
	size_t lo = 0, hi = rs->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (rs->v[mid].end > addr)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

const struct smmu__region *smmu__regions_find(const struct smmu__regions *rs, smmu_addr_t addr)
{
	size_t i = smmu__regions_lower_bound(rs, addr);
	return i < rs->n && rs->v[i].start <= addr ? &rs->v[i] : NULL;
}

bool smmu__regions_any(const struct smmu__regions *rs, smmu_addr_t start, smmu_addr_t end)
{
	size_t i = smmu__regions_lower_bound(rs, start);
	return i < rs->n && rs->v[i].start < end;
}

bool smmu__regions_covered(const struct smmu__regions *rs, smmu_addr_t start, smmu_addr_t end)
{
	smmu_addr_t at = start;
	for (size_t i = smmu__regions_lower_bound(rs, start); i < rs->n && at < end; i++) {
		if (rs->v[i].start > at)
			return false;
		at = rs->v[i].end;
	}
	return at >= end;
}

static void insert_at(struct smmu__regions *rs, size_t i, struct smmu__region r)
{
	SMMU_ASSERT(rs->n < rs->cap);
	memmove(&rs->v[i + 1], &rs->v[i], (rs->n - i) * sizeof(r));
	rs->v[i] = r;
	rs->n++;
}

static void delete_range(struct smmu__regions *rs, size_t i, size_t count)
{
	if (!count)
		return; /* rs->v may be NULL: memmove(NULL, NULL, 0) is undefined */
	memmove(&rs->v[i], &rs->v[i + count], (rs->n - i - count) * sizeof(rs->v[0]));
	rs->n -= count;
}

/* Split the region that strictly contains addr, so addr becomes a boundary. */
static void split_at(struct smmu__regions *rs, smmu_addr_t addr)
{
	size_t i = smmu__regions_lower_bound(rs, addr);
	if (i == rs->n || rs->v[i].start >= addr)
		return;
	struct smmu__region hi = rs->v[i];
	hi.start = addr;
	rs->v[i].end = addr;
	insert_at(rs, i + 1, hi);
}

static bool mergeable(const struct smmu__region *a, const struct smmu__region *b)
{
	return a->end == b->start && a->prot == b->prot && a->flags == b->flags && a->handler == b->handler &&
	       a->handler_arg == b->handler_arg;
}

/* Merge equal neighbours among indices [lo, hi] (clamped). */
static void merge_around(struct smmu__regions *rs, size_t lo, size_t hi)
{
	if (lo > 0)
		lo--;
	for (size_t i = lo; i + 1 < rs->n && i <= hi;) {
		if (mergeable(&rs->v[i], &rs->v[i + 1])) {
			rs->v[i].end = rs->v[i + 1].end;
			delete_range(rs, i + 1, 1);
			if (hi > 0)
				hi--;
		} else {
			i++;
		}
	}
}

void smmu__regions_remove(struct smmu__regions *rs, smmu_addr_t start, smmu_addr_t end)
{
	split_at(rs, start);
	split_at(rs, end);
	size_t i = smmu__regions_lower_bound(rs, start), j = i;
	while (j < rs->n && rs->v[j].end <= end)
		j++;
	delete_range(rs, i, j - i);
	smmu__regions_check(rs);
}

void smmu__regions_insert_handler(struct smmu__regions *rs, smmu_addr_t start, smmu_addr_t end, int prot, int flags,
				  smmu_fault_handler_fn handler, void *arg)
{
	size_t i = smmu__regions_lower_bound(rs, start);
	SMMU_ASSERT(i == rs->n || rs->v[i].start >= end);
	insert_at(rs, i,
		  (struct smmu__region){ .start = start,
					 .end = end,
					 .prot = prot,
					 .flags = flags,
					 .handler = handler,
					 .handler_arg = handler ? arg : NULL });
	merge_around(rs, i, i + 1);
	smmu__regions_check(rs);
}

void smmu__regions_insert(struct smmu__regions *rs, smmu_addr_t start, smmu_addr_t end, int prot, int flags)
{
	smmu__regions_insert_handler(rs, start, end, prot, flags, NULL, NULL);
}

void smmu__regions_set_prot(struct smmu__regions *rs, smmu_addr_t start, smmu_addr_t end, int prot)
{
	split_at(rs, start);
	split_at(rs, end);
	size_t i = smmu__regions_lower_bound(rs, start), j = i;
	for (; j < rs->n && rs->v[j].end <= end; j++)
		rs->v[j].prot = prot;
	merge_around(rs, i, j);
	smmu__regions_check(rs);
}

int smmu__regions_find_free(const struct smmu__regions *rs, smmu_addr_t from, smmu_addr_t limit, uint64_t len,
			    smmu_addr_t *out)
{
	smmu_addr_t at = from;
	for (size_t i = smmu__regions_lower_bound(rs, from); i <= rs->n; i++) {
		smmu_addr_t gap_end = i < rs->n ? rs->v[i].start : limit;
		if (gap_end > limit)
			gap_end = limit;
		if (at < gap_end && gap_end - at >= len) {
			*out = at;
			return 0;
		}
		if (i == rs->n || rs->v[i].end >= limit)
			break;
		if (rs->v[i].end > at)
			at = rs->v[i].end;
	}
	return -ENOMEM;
}

void smmu__regions_check(const struct smmu__regions *rs)
{
#if SMMU_DEBUG
	for (size_t i = 0; i < rs->n; i++) {
		SMMU_ASSERT(rs->v[i].start < rs->v[i].end);
		if (i + 1 < rs->n) {
			SMMU_ASSERT(rs->v[i].end <= rs->v[i + 1].start);
			SMMU_ASSERT(!mergeable(&rs->v[i], &rs->v[i + 1]));
		}
	}
#else
	(void)rs;
#endif
}
