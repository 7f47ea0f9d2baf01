/* SPDX-License-Identifier: MIT */
/*
 * stress-shootdown: K reader CPUs load (and now and then store) pages of one
 * mm while W writer CPUs munmap, mmap and mprotect random ranges of the same
 * pages, in a pool that poisons freed frames.  Each page holds a stamp
 * (generation << 32 | page index << 8 | tag) written when it was mapped.
 *
 * Violations:
 *  - a load returns poison: a freed frame was read (DESIGN.md §4 property 2);
 *  - a stamp names another page or another tag: a translation crossed over;
 *  - a load returns generation G after the munmap that removed G returned
 *    before the load began (property 1, unmap);
 *  - a store succeeds on a page whose mprotect(READ) returned before the
 *    store began, the page keeping one generation throughout (property 1,
 *    protection).
 * Readers also go offline and online now and then (the generation
 * handshake).  Writers unmap and protect adjacent ranges at the same time
 * (concurrent gathers on one mm).
 *
 * usage: stress-shootdown [--seconds S] [--readers K] [--writers W] [--seed N]
 *                         [--mode signal|rcu|rcu-deferred]
 * In the RCU modes readers and writers call smmu_quiescent between batches,
 * and in deferred mode a reader may use a translation until its next
 * quiescent state (the checks use what was published before it).
 * Exit status 0 with zero violations, 1 otherwise.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include <softmmu/softmmu.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NSLOTS 96
#define TAG 0x5a
#define POISON64 (0x0101010101010101ull * SMMU_POISON_BYTE)
#define MAX_THREADS 32

static struct smmu_mm *mm;
static smmu_addr_t base;
static size_t page;
static atomic_bool stop;
static atomic_ulong violations;
static atomic_ulong checked, stores_checked;

/* Per slot.  Sync: gen_now/state by the writer holding the slot's lock;
 * unmapped/readonly atomics read by readers. */
static atomic_flag slot_lock[NSLOTS];
static uint32_t gen_now[NSLOTS];         /* generation mapped now, 0 if none */
static _Atomic uint32_t unmapped[NSLOTS]; /* highest generation whose unmap returned */
static _Atomic uint32_t readonly[NSLOTS]; /* generation whose mprotect(READ) returned, 0 if writable */
/* Times a slot's write access may have come back (mprotect(RW) began, or
 * a map over it): readonly can go G -> 0 -> G again, and a deferred-mode
 * reader that saw G before its quiescent state may then hold a writable
 * translation from between the two - only an unchanged count rules that
 * out. */
static _Atomic uint32_t writable_again[NSLOTS];
static _Atomic uint32_t next_gen = 1;

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void violation(const char *what, unsigned slot, uint64_t v)
{
	atomic_fetch_add(&violations, 1);
	if (atomic_load(&violations) <= 10)
		fprintf(stderr, "VIOLATION: %s (slot %u, value 0x%016" PRIx64 ")\n", what, slot, v);
}

static uint64_t stamp(uint32_t gen, unsigned slot)
{
	return (uint64_t)gen << 32 | (uint64_t)slot << 8 | TAG;
}

static void check_stamp(unsigned slot, uint64_t v, uint32_t dead)
{
	if (v == POISON64) {
		violation("read a freed (poisoned) frame", slot, v);
		return;
	}
	if (v == 0)
		return; /* mapped, stamp not yet written */
	if ((v & 0xff) != TAG || ((v >> 8) & 0xffffff) != slot) {
		violation("stamp of another page or mapping", slot, v);
		return;
	}
	if ((uint32_t)(v >> 32) <= dead)
		violation("load through a translation whose munmap had returned", slot, v);
}

static enum smmu_shootdown_mode mode = SMMU_SHOOTDOWN_SIGNAL;

/* What a reader may assume of a slot.  Signal and RCU strict mode: what the
 * writers published before the access (their munmap / mprotect returned).
 * RCU deferred mode: what they had published before the reader's last
 * quiescent state - a translation may live until the next one. */
struct view {
	uint32_t dead[NSLOTS], ro[NSLOTS], again[NSLOTS];
};

static void snapshot(struct view *w)
{
	for (unsigned i = 0; i < NSLOTS; i++) {
		w->dead[i] = atomic_load(&unmapped[i]);
		w->again[i] = atomic_load(&writable_again[i]);
		w->ro[i] = atomic_load(&readonly[i]);
	}
}

static void *reader(void *arg)
{
	uint64_t seed = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
	unsigned id = (unsigned)(uintptr_t)arg;
	struct smmu_cpu *cpu;
	struct view *w = calloc(1, sizeof(*w));
	if (!w || smmu_cpu_register(mm, &cpu))
		abort();
	unsigned long n = 0, ns = 0;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		if (mode != SMMU_SHOOTDOWN_SIGNAL) {
			/* Snapshot first, then the quiescent state: every change
			 * in the snapshot was made before it compared. */
			snapshot(w);
			smmu_quiescent(cpu);
		}
		for (int i = 0; i < 256; i++) {
			unsigned slot = (unsigned)(rng(&seed) % NSLOTS);
			smmu_addr_t a = base + slot * page;
			bool deferred = mode == SMMU_SHOOTDOWN_RCU_DEFERRED;
			uint32_t dead = deferred ? w->dead[slot] : atomic_load(&unmapped[slot]);
			uint32_t again = deferred ? w->again[slot] : atomic_load(&writable_again[slot]);
			uint32_t ro = deferred ? w->ro[slot] : atomic_load(&readonly[slot]);
			uint64_t v, v2;
			if (smmu_try_load64(cpu, a, &v))
				continue;
			check_stamp(slot, v, dead);
			n++;
			if ((rng(&seed) & 7) || v == 0 || v == POISON64)
				continue;
			/* A store to this reader's scratch word of the page. */
			/* ro, read before and after, says read-only had been
			 * reached and no upgrade had started around the store. */
			if (smmu_try_store64(cpu, a + 8 * (2 + id % 64), v) == 0 && smmu_try_load64(cpu, a, &v2) == 0 &&
			    v2 == v && (uint32_t)(v >> 32) == ro && atomic_load(&readonly[slot]) == ro &&
			    atomic_load(&writable_again[slot]) == again)
				violation("store through a translation whose mprotect(READ) had returned", slot, v);
			ns++;
		}
		if ((rng(&seed) & 63) == 0) {
			if (mode == SMMU_SHOOTDOWN_RCU_DEFERRED)
				snapshot(w); /* coming online catches up, as a quiescent state */
			smmu_cpu_offline(cpu);
			smmu_cpu_online(cpu);
		}
	}
	atomic_fetch_add(&checked, n);
	atomic_fetch_add(&stores_checked, ns);
	smmu_cpu_unregister(cpu);
	free(w);
	return NULL;
}

static bool lock_range(unsigned s, unsigned k)
{
	for (unsigned i = 0; i < k; i++) {
		if (atomic_flag_test_and_set(&slot_lock[s + i])) {
			while (i--)
				atomic_flag_clear(&slot_lock[s + i]);
			return false;
		}
	}
	return true;
}

static void unlock_range(unsigned s, unsigned k)
{
	for (unsigned i = 0; i < k; i++)
		atomic_flag_clear(&slot_lock[s + i]);
}

static void check(int err, const char *what)
{
	if (err) {
		fprintf(stderr, "%s failed: %d\n", what, err);
		abort();
	}
}

static void *writer(void *arg)
{
	uint64_t seed = (uintptr_t)arg * 0xD1B54A32D192ED03ull + 7;
	struct smmu_cpu *cpu;
	check(smmu_cpu_register(mm, &cpu), "register");
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		unsigned k = 1 + (unsigned)(rng(&seed) % 4);
		unsigned s = (unsigned)(rng(&seed) % (NSLOTS - k + 1));
		if (!lock_range(s, k))
			continue;
		smmu_addr_t a = base + s * page;
		switch (rng(&seed) % 4) {
		case 0: /* unmap */
			check(smmu_munmap(mm, a, k * page), "munmap");
			for (unsigned i = s; i < s + k; i++) {
				if (gen_now[i])
					atomic_store(&unmapped[i], gen_now[i]);
				gen_now[i] = 0;
				atomic_store(&readonly[i], 0);
			}
			break;
		case 1: { /* map over the range (replacing), then stamp */
			smmu_addr_t got;
			uint32_t old[4];
			for (unsigned i = 0; i < k; i++) {
				old[i] = gen_now[s + i];
				atomic_fetch_add(&writable_again[s + i], 1);
				atomic_store(&readonly[s + i], 0);
			}
			check(smmu_mmap(mm, a, k * page, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got), "mmap");
			for (unsigned i = 0; i < k; i++) {
				if (old[i])
					atomic_store(&unmapped[s + i], old[i]);
				gen_now[s + i] = atomic_fetch_add(&next_gen, 1);
				smmu_store64(cpu, a + i * page, stamp(gen_now[s + i], s + i));
			}
			break;
		}
		case 2: { /* read-only, if all mapped */
			bool all = true;
			for (unsigned i = s; i < s + k; i++)
				all &= gen_now[i] != 0;
			if (!all)
				break;
			check(smmu_mprotect(mm, a, k * page, SMMU_PROT_READ), "mprotect ro");
			for (unsigned i = s; i < s + k; i++)
				atomic_store(&readonly[i], gen_now[i]);
			break;
		}
		case 3: { /* back to read-write (no shootdown needed) */
			bool all = true;
			for (unsigned i = s; i < s + k; i++)
				all &= gen_now[i] != 0;
			if (!all)
				break;
			for (unsigned i = s; i < s + k; i++) {
				atomic_fetch_add(&writable_again[i], 1);
				atomic_store(&readonly[i], 0);
			}
			check(smmu_mprotect(mm, a, k * page, SMMU_PROT_READ | SMMU_PROT_WRITE), "mprotect rw");
			break;
		}
		}
		unlock_range(s, k);
		if (mode != SMMU_SHOOTDOWN_SIGNAL)
			smmu_quiescent(cpu); /* a writer is a CPU too: grace periods wait for it */
	}
	check(smmu_cpu_unregister(cpu), "unregister");
	return NULL;
}

int main(int argc, char **argv)
{
	double seconds = 5;
	unsigned readers = 3, writers = 2;
	unsigned long seed = 1;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--seconds"))
			seconds = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--readers"))
			readers = (unsigned)atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--writers"))
			writers = (unsigned)atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--seed"))
			seed = strtoul(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--mode") && !strcmp(argv[i + 1], "signal"))
			mode = SMMU_SHOOTDOWN_SIGNAL;
		else if (!strcmp(argv[i], "--mode") && !strcmp(argv[i + 1], "rcu"))
			mode = SMMU_SHOOTDOWN_RCU;
		else if (!strcmp(argv[i], "--mode") && !strcmp(argv[i + 1], "rcu-deferred"))
			mode = SMMU_SHOOTDOWN_RCU_DEFERRED;
		else {
			fprintf(stderr,
				"usage: %s [--seconds S] [--readers K] [--writers W] [--seed N] "
				"[--mode signal|rcu|rcu-deferred]\n",
				argv[0]);
			return 2;
		}
	}
	if (readers + writers > MAX_THREADS || !readers || !writers) {
		fprintf(stderr, "1..%d threads of each kind\n", MAX_THREADS);
		return 2;
	}
	struct smmu_pool *pool;
	struct smmu_pool_config cfg = { .size = (NSLOTS + 64) * 4096, .flags = SMMU_POOL_POISON };
	check(smmu_pool_create(&cfg, &pool), "pool");
	struct smmu_mm_config mc = { .mode = mode };
	check(smmu_mm_create_ex(pool, &mc, &mm), "mm");
	page = smmu_mm_page_size(mm);
	check(smmu_mmap(mm, 0, NSLOTS * page, SMMU_PROT_NONE, 0, &base), "reserve");
	check(smmu_munmap(mm, base, NSLOTS * page), "unreserve");

	pthread_t t[MAX_THREADS];
	for (unsigned i = 0; i < readers; i++)
		pthread_create(&t[i], NULL, reader, (void *)(uintptr_t)(i + seed * 1000));
	for (unsigned i = 0; i < writers; i++)
		pthread_create(&t[readers + i], NULL, writer, (void *)(uintptr_t)(i + seed * 1000 + 500));
	struct timespec ts = { (time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9) };
	nanosleep(&ts, NULL);
	atomic_store(&stop, true);
	/* A thread that does not finish within a minute of the stop is a hang
	 * (a lost acknowledgement, a deadlock): fail with a message, long
	 * before ctest's timeout would. */
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 60;
	for (unsigned i = 0; i < readers + writers; i++) {
		if (pthread_timedjoin_np(t[i], NULL, &deadline)) {
			fprintf(stderr, "HANG: %s %u still running 60 s after the stop\n",
				i < readers ? "reader" : "writer", i < readers ? i : i - readers);
			abort();
		}
	}

	struct smmu_stats st;
	check(smmu_stats_get(mm, &st), "stats");
	check(smmu_munmap(mm, base, NSLOTS * page), "final munmap");
	check(smmu_mm_destroy(mm), "mm destroy"); /* waits for deferred frees */
	size_t free_frames = smmu_pool_free_frames(pool), frames = smmu_pool_frames(pool);
	check(smmu_pool_destroy(pool), "pool destroy");

	static const char *const names[] = { "signal", "rcu", "rcu-deferred" };
	printf("stress-shootdown: %s mode, %.1f s, %u readers, %u writers, seed %lu\n", names[mode], seconds, readers,
	       writers, seed);
	printf("  loads checked %lu, stores checked %lu, shootdowns %" PRIu64 " (nested %" PRIu64
	       "), signals sent %" PRIu64 ", deferred acks %" PRIu64 ", grace periods %" PRIu64
	       ", deferred frees %" PRIu64 ", frames freed %" PRIu64 "\n",
	       atomic_load(&checked), atomic_load(&stores_checked), st.shootdowns, st.shootdowns_nested,
	       st.signals_sent, st.acks_deferred, st.grace_periods, st.deferred_frees, st.frames_freed);
	printf("  violations %lu\n", atomic_load(&violations));
	if (free_frames != frames) {
		printf("  LEAK: %zu of %zu frames free at the end\n", free_frames, frames);
		return 1;
	}
	return atomic_load(&violations) ? 1 : 0;
}
