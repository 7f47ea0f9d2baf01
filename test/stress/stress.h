/* SPDX-License-Identifier: MIT */
#ifndef SMMU_TEST_STRESS_H
#define SMMU_TEST_STRESS_H

/*
 * What the seeded torture programs share (the programs in test/stress and
 * tools/smmu-torture.c): the random numbers, the violation counter, the
 * writers' slot locks, option parsing that rejects garbage, the heap of
 * slots in a poisoning pool, the join that turns a hang into a message, and
 * the leak check at the end.  Public API only; static functions, for
 * programs of one translation unit each.
 */

#include <softmmu/softmmu.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STRESS_POISON64 (0x0101010101010101ull * SMMU_POISON_BYTE)

/* xorshift64: per-thread, seeded from --seed, never 0. */
static inline uint64_t stress_rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* A call that cannot fail in a correct run failed: the program is wrong,
 * not the library's contract - abort with the error. */
static inline void stress_check(int err, const char *what)
{
	if (err) {
		fprintf(stderr, "%s failed: %d (%s)\n", what, err, strerror(-err));
		abort();
	}
}

/* Violations of the library's guarantees: counted, the first ten printed. */
static atomic_ulong stress_violations;

static inline void stress_violation(const char *what, long slot, uint64_t v)
{
	if (atomic_fetch_add(&stress_violations, 1) < 10)
		fprintf(stderr, "VIOLATION: %s (slot %ld, value 0x%016" PRIx64 ")\n", what, slot, v);
}

/* Slots [s, s + k) of locks, all or none (a writer that cannot have them
 * all picks another range: no waiting, no lock order). */
static inline bool stress_lock_range(atomic_flag *locks, unsigned s, unsigned k)
{
	for (unsigned i = 0; i < k; i++) {
		if (atomic_flag_test_and_set(&locks[s + i])) {
			while (i--)
				atomic_flag_clear(&locks[s + i]);
			return false;
		}
	}
	return true;
}

static inline void stress_unlock_range(atomic_flag *locks, unsigned s, unsigned k)
{
	for (unsigned i = 0; i < k; i++)
		atomic_flag_clear(&locks[s + i]);
}

/* ----------------------------------------------------------- options */

static const char *const stress_mode_names[] = { "signal", "rcu", "rcu-deferred" };

static inline int stress_parse_mode(const char *s, enum smmu_shootdown_mode *out)
{
	for (unsigned i = 0; i < sizeof(stress_mode_names) / sizeof(stress_mode_names[0]); i++) {
		if (!strcmp(s, stress_mode_names[i])) {
			*out = (enum smmu_shootdown_mode)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* A whole number in [min, max], decimal or 0x-hex, nothing else around it. */
static inline int stress_parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
	char *end;
	if (*s < '0' || *s > '9') /* strtoul takes " 5" and "-5" */
		return -EINVAL;
	errno = 0;
	bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
	unsigned long v = strtoul(s, &end, hex ? 16 : 10); /* "010" is ten */
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static inline int stress_parse_unsigned(const char *s, unsigned min, unsigned max, unsigned *out)
{
	unsigned long v;
	int err = stress_parse_ulong(s, min, max, &v);
	if (!err)
		*out = (unsigned)v;
	return err;
}

/* Seconds: a finite decimal number > 0 and at most a year. */
static inline int stress_parse_seconds(const char *s, double *out)
{
	char *end;
	if ((*s < '0' || *s > '9') && *s != '.')
		return -EINVAL;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || *end || !isfinite(v) || v <= 0 || v > 366.0 * 86400)
		return -EINVAL;
	*out = v;
	return 0;
}

/* ------------------------------------------------------ heap, teardown */

/*
 * A pool of nslots + 64 frames that poisons freed frames, an mm in mode,
 * and the address of nslots free pages in it (reserved and released, so
 * that writers map them with FIXED).
 */
static inline void stress_setup(unsigned nslots, enum smmu_shootdown_mode mode, struct smmu_pool **pool,
				struct smmu_mm **mm, smmu_addr_t *base)
{
	struct smmu_pool_config cfg = { .size = ((size_t)nslots + 64) * 4096, .flags = SMMU_POOL_POISON };
	stress_check(smmu_pool_create(&cfg, pool), "pool");
	struct smmu_mm_config mc = { .mode = mode };
	stress_check(smmu_mm_create_ex(*pool, &mc, mm), "mm");
	size_t len = nslots * smmu_mm_page_size(*mm);
	stress_check(smmu_mmap(*mm, 0, len, SMMU_PROT_NONE, 0, base), "reserve");
	stress_check(smmu_munmap(*mm, *base, len), "unreserve");
}

/*
 * Join the n threads of t, the first nfirst of them named first, the others
 * second.  One still running a minute after the stop is a hang (a lost
 * acknowledgement, a deadlock): say which and abort, long before a test
 * timeout would.
 */
static inline void stress_join(pthread_t *t, unsigned n, unsigned nfirst, const char *first, const char *second)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 60;
	for (unsigned i = 0; i < n; i++) {
		if (pthread_timedjoin_np(t[i], NULL, &deadline)) {
			fprintf(stderr, "HANG: %s %u still running 60 s after the stop\n", i < nfirst ? first : second,
				i < nfirst ? i : i - nfirst);
			abort();
		}
	}
}

/*
 * Unmap the heap, destroy the mm (which waits for deferred frees) and the
 * pool; every frame must be back.  Returns false, with a LEAK line on
 * stdout, if not.
 */
static inline bool stress_teardown(struct smmu_pool *pool, struct smmu_mm *mm, smmu_addr_t base, unsigned nslots)
{
	stress_check(smmu_munmap(mm, base, nslots * smmu_mm_page_size(mm)), "final munmap");
	stress_check(smmu_mm_destroy(mm), "mm destroy");
	size_t free_frames = smmu_pool_free_frames(pool), frames = smmu_pool_frames(pool);
	stress_check(smmu_pool_destroy(pool), "pool destroy");
	if (free_frames != frames) {
		printf("  LEAK: %zu of %zu frames free at the end\n", free_frames, frames);
		return false;
	}
	return true;
}

#endif
