/* SPDX-License-Identifier: MIT */
/*
 * stress-switch: a switch storm (issue 8).  S address spaces map the same
 * guest pages over ONE frame pool that poisons freed frames.  K CPU
 * threads (smmu_thread_create_ex, with a small number of ASIDs so that
 * they are recycled all the time) switch among the mms at random and load
 * (and now and then store) the pages; W writer threads, CPUs that switch
 * too, munmap, mmap (FIXED, replacing) and mprotect random ranges in
 * whichever mm they are in.  Frames move between mms constantly.
 *
 * Word 0 of each page holds a stamp written when it was mapped:
 *   generation << 32 | mm << 24 | slot << 8 | TAG.
 * Word 2 + k is CPU thread k's scratch word: it stores there the stamp it
 * has just loaded from word 0 of the same page.
 *
 * Violations:
 *  - a load returns poison: a freed frame was read (DESIGN.md §4, 2);
 *  - a stamp (word 0 or a scratch word) names another mm: a translation,
 *    a load's or a store's, crossed address spaces (§4, 3);
 *  - a stamp names another slot or has a bad tag: a translation crossed
 *    pages;
 *  - a load returns generation G although the unmap that removed G had
 *    returned before the load began, the CPU having switched in and out
 *    of the mm meanwhile (§4, 1, and lazy TLB catch-up by generation);
 *  - a store succeeds on a page whose mprotect(READ) returned before the
 *    store began, the page keeping one generation throughout.
 * In RCU deferred mode a CPU may use a translation until its next
 * quiescent state: the checks use what the writers had published before
 * it (a snapshot taken before smmu_quiescent and the switch).
 *
 * usage: stress-switch [--seconds S] [--seed N] [--cpus K] [--writers W]
 *                      [--mms S] [--asids A] [--mode signal|rcu|rcu-deferred]
 * --asids 0 means the library's default (8); the default here is 2, fewer
 * than the default 3 mms.  Exit status 0 with zero violations (and no leak,
 * no hang), 1 otherwise.
 */
#define _GNU_SOURCE
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
#include <unistd.h>

#define NSLOTS 32
#define MAX_MMS 16
#define MAX_THREADS 32
#define TAG 0x5a
#define POISON64 (0x0101010101010101ull * SMMU_POISON_BYTE)
#define BASE ((smmu_addr_t)0x40000000) /* the same guest address in every mm */
#define PAGE 4096u

static struct smmu_mm *mms[MAX_MMS];
static unsigned nmms = 3;
static enum smmu_shootdown_mode mode = SMMU_SHOOTDOWN_SIGNAL;
static atomic_bool stop;
static atomic_ulong violations;
static atomic_ulong loads_checked, scratch_checked, stores_checked, switches_done, writer_ops;

/* Per mm and slot.  Sync: gen_now by the writer holding the slot's lock;
 * the atomics are read by the CPUs.  As in stress-shootdown. */
static atomic_flag slot_lock[MAX_MMS][NSLOTS];
static uint32_t gen_now[MAX_MMS][NSLOTS];
static _Atomic uint32_t unmapped[MAX_MMS][NSLOTS];       /* highest generation whose unmap returned */
static _Atomic uint32_t readonly[MAX_MMS][NSLOTS];       /* generation whose mprotect(READ) returned, or 0 */
static _Atomic uint32_t writable_again[MAX_MMS][NSLOTS]; /* times write access may have come back */
static _Atomic uint32_t next_gen = 1;

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void violation(const char *what, unsigned m, unsigned slot, uint64_t v)
{
	unsigned long n = atomic_fetch_add(&violations, 1) + 1;
	if (n <= 10)
		fprintf(stderr, "VIOLATION: %s (mm %u, slot %u, value 0x%016" PRIx64 ")\n", what, m, slot, v);
}

static uint64_t stamp(uint32_t gen, unsigned m, unsigned slot)
{
	return (uint64_t)gen << 32 | (uint64_t)m << 24 | (uint64_t)slot << 8 | TAG;
}

/* Identity of a nonzero word: poison, tag, mm, slot.  Returns false if it
 * was a violation. */
static bool check_identity(const char *where, unsigned m, unsigned slot, uint64_t v)
{
	char msg[160];
	if (v == POISON64) {
		snprintf(msg, sizeof(msg), "%s: read a freed (poisoned) frame", where);
		violation(msg, m, slot, v);
		return false;
	}
	if ((v & 0xff) != TAG) {
		snprintf(msg, sizeof(msg), "%s: not a stamp", where);
		violation(msg, m, slot, v);
		return false;
	}
	if (((v >> 24) & 0xff) != m) {
		snprintf(msg, sizeof(msg), "%s: stamp of mm %u: crossed address spaces", where,
			 (unsigned)((v >> 24) & 0xff));
		violation(msg, m, slot, v);
		return false;
	}
	if (((v >> 8) & 0xffff) != slot) {
		snprintf(msg, sizeof(msg), "%s: stamp of another page", where);
		violation(msg, m, slot, v);
		return false;
	}
	return true;
}

/* What a CPU may assume of mm m's slots (see stress-shootdown). */
struct view {
	uint32_t dead[NSLOTS], ro[NSLOTS], again[NSLOTS];
};

static void snapshot(struct view *w, unsigned m)
{
	for (unsigned i = 0; i < NSLOTS; i++) {
		w->dead[i] = atomic_load(&unmapped[m][i]);
		w->again[i] = atomic_load(&writable_again[m][i]);
		w->ro[i] = atomic_load(&readonly[m][i]);
	}
}

static void check(int err, const char *what)
{
	if (err) {
		fprintf(stderr, "%s failed: %d\n", what, err);
		abort();
	}
}

/* Leave mm cur for mm m (RCU modes: a quiescent state first, so that the
 * deferred-mode view taken before it holds). */
static unsigned switch_to(struct smmu_cpu *cpu, unsigned cur, unsigned m, unsigned long *n)
{
	if (m == cur)
		return cur;
	check(smmu_cpu_switch_mm(cpu, mms[m]), "smmu_cpu_switch_mm");
	if (smmu_cpu_mm(cpu) != mms[m]) {
		fprintf(stderr, "smmu_cpu_mm is not the mm switched to\n");
		abort();
	}
	(*n)++;
	return m;
}

struct cpu_arg {
	unsigned id;
	uint64_t seed;
};

static void *cpu_thread(void *arg)
{
	struct cpu_arg *a = arg;
	uint64_t seed = a->seed;
	unsigned id = a->id;
	struct smmu_cpu *cpu = smmu_cpu_self();
	struct view *w = calloc(1, sizeof(*w));
	if (!cpu || !w)
		abort();
	unsigned cur = id % nmms;
	if (smmu_cpu_mm(cpu) != mms[cur])
		abort();
	unsigned long n = 0, ns = 0, nsc = 0, nsw = 0;
	bool deferred = mode == SMMU_SHOOTDOWN_RCU_DEFERRED;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		unsigned m = (unsigned)(rng(&seed) % nmms);
		if (mode != SMMU_SHOOTDOWN_SIGNAL) {
			/* Snapshot first, then the quiescent state and the switch:
			 * every change in the snapshot came before both. */
			snapshot(w, m);
			smmu_quiescent(cpu);
		}
		cur = switch_to(cpu, cur, m, &nsw);
		for (int i = 0; i < 128; i++) {
			unsigned slot = (unsigned)(rng(&seed) % NSLOTS);
			smmu_addr_t p = BASE + (smmu_addr_t)slot * PAGE;
			uint32_t dead = deferred ? w->dead[slot] : atomic_load(&unmapped[m][slot]);
			uint32_t again = deferred ? w->again[slot] : atomic_load(&writable_again[m][slot]);
			uint32_t ro = deferred ? w->ro[slot] : atomic_load(&readonly[m][slot]);
			uint64_t v, v2, sc;
			if (smmu_try_load64(cpu, p, &v))
				continue;
			n++;
			if (v == 0)
				continue; /* mapped, stamp not yet written */
			if (!check_identity("load", m, slot, v))
				continue;
			if ((uint32_t)(v >> 32) <= dead)
				violation("load through a translation whose munmap had returned", m, slot, v);
			unsigned r = (unsigned)rng(&seed);
			if (r % 4 == 0) {
				/* Someone's scratch word of this page. */
				unsigned k = (r >> 4) % MAX_THREADS;
				if (smmu_try_load64(cpu, p + 8 * (2 + k), &sc) == 0 && sc != 0) {
					check_identity("scratch word (a CPU's store)", m, slot, sc);
					nsc++;
				}
			}
			if (r % 8 != 1)
				continue;
			if (smmu_try_store64(cpu, p + 8 * (2 + id % MAX_THREADS), v) == 0 &&
			    smmu_try_load64(cpu, p, &v2) == 0 && v2 == v && (uint32_t)(v >> 32) == ro &&
			    atomic_load(&readonly[m][slot]) == ro && atomic_load(&writable_again[m][slot]) == again)
				violation("store through a translation whose mprotect(READ) had returned", m, slot, v);
			ns++;
		}
		if ((rng(&seed) & 63) == 0) {
			if (deferred)
				snapshot(w, cur); /* coming online catches up, as a quiescent state */
			smmu_cpu_offline(cpu);
			smmu_cpu_online(cpu);
		}
	}
	atomic_fetch_add(&loads_checked, n);
	atomic_fetch_add(&stores_checked, ns);
	atomic_fetch_add(&scratch_checked, nsc);
	atomic_fetch_add(&switches_done, nsw);
	free(w);
	return (void *)(uintptr_t)(0x5000 + id);
}

static bool lock_range(unsigned m, unsigned s, unsigned k)
{
	for (unsigned i = 0; i < k; i++) {
		if (atomic_flag_test_and_set(&slot_lock[m][s + i])) {
			while (i--)
				atomic_flag_clear(&slot_lock[m][s + i]);
			return false;
		}
	}
	return true;
}

static void unlock_range(unsigned m, unsigned s, unsigned k)
{
	for (unsigned i = 0; i < k; i++)
		atomic_flag_clear(&slot_lock[m][s + i]);
}

static void *writer_thread(void *arg)
{
	struct cpu_arg *a = arg;
	uint64_t seed = a->seed;
	struct smmu_cpu *cpu = smmu_cpu_self();
	if (!cpu)
		abort();
	unsigned cur = a->id % nmms;
	unsigned long nsw = 0, ops = 0;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		unsigned m = (rng(&seed) & 3) == 0 ? (unsigned)(rng(&seed) % nmms) : cur;
		cur = switch_to(cpu, cur, m, &nsw);
		struct smmu_mm *mm = mms[m];
		unsigned k = 1 + (unsigned)(rng(&seed) % 4);
		unsigned s = (unsigned)(rng(&seed) % (NSLOTS - k + 1));
		if (!lock_range(m, s, k))
			continue;
		smmu_addr_t p = BASE + (smmu_addr_t)s * PAGE;
		switch (rng(&seed) % 4) {
		case 0: /* unmap */
			check(smmu_munmap(mm, p, k * PAGE), "munmap");
			for (unsigned i = s; i < s + k; i++) {
				if (gen_now[m][i])
					atomic_store(&unmapped[m][i], gen_now[m][i]);
				gen_now[m][i] = 0;
				atomic_store(&readonly[m][i], 0);
			}
			break;
		case 1: { /* map over the range (replacing), then stamp it */
			smmu_addr_t got;
			uint32_t old[4];
			for (unsigned i = 0; i < k; i++) {
				old[i] = gen_now[m][s + i];
				atomic_fetch_add(&writable_again[m][s + i], 1);
				atomic_store(&readonly[m][s + i], 0);
			}
			check(smmu_mmap(mm, p, k * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got),
			      "mmap");
			if (got != p)
				check(-EFAULT, "mmap FIXED placed elsewhere");
			for (unsigned i = 0; i < k; i++) {
				if (old[i])
					atomic_store(&unmapped[m][s + i], old[i]);
				gen_now[m][s + i] = atomic_fetch_add(&next_gen, 1);
				/* The pool may be short for a moment (deferred frees):
				 * a page left unstamped reads zero, which is fine. */
				int err = smmu_try_store64(cpu, p + (smmu_addr_t)i * PAGE,
							   stamp(gen_now[m][s + i], m, s + i));
				if (err && err != -ENOMEM)
					check(err, "stamp store");
			}
			break;
		}
		case 2: { /* read-only, if all mapped */
			bool all = true;
			for (unsigned i = s; i < s + k; i++)
				all &= gen_now[m][i] != 0;
			if (!all)
				break;
			check(smmu_mprotect(mm, p, k * PAGE, SMMU_PROT_READ), "mprotect ro");
			for (unsigned i = s; i < s + k; i++)
				atomic_store(&readonly[m][i], gen_now[m][i]);
			break;
		}
		case 3: { /* back to read-write (no shootdown needed) */
			bool all = true;
			for (unsigned i = s; i < s + k; i++)
				all &= gen_now[m][i] != 0;
			if (!all)
				break;
			for (unsigned i = s; i < s + k; i++) {
				atomic_fetch_add(&writable_again[m][i], 1);
				atomic_store(&readonly[m][i], 0);
			}
			check(smmu_mprotect(mm, p, k * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE), "mprotect rw");
			break;
		}
		}
		unlock_range(m, s, k);
		ops++;
		if (mode != SMMU_SHOOTDOWN_SIGNAL)
			smmu_quiescent(cpu); /* a writer is a CPU too: grace periods wait for it */
	}
	atomic_fetch_add(&switches_done, nsw);
	atomic_fetch_add(&writer_ops, ops);
	return (void *)(uintptr_t)(0x6000 + a->id);
}

/* Joins must finish within a minute of the stop: else a hang (a lost
 * acknowledgement, a grace period that waits for a switched-away CPU...). */
static atomic_bool all_joined;

static void *watchdog(void *arg)
{
	(void)arg;
	for (int i = 0; i < 600; i++) {
		if (atomic_load(&all_joined))
			return NULL;
		struct timespec ts = {0, 100000000};
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "HANG: CPU or writer threads still running 60 s after the stop\n");
	abort();
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [--seconds S] [--seed N] [--cpus K] [--writers W] [--mms S] [--asids A]\n"
		"          [--mode signal|rcu|rcu-deferred]\n",
		argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	double seconds = 5;
	unsigned cpus = 3, writers = 2, asids = 2;
	unsigned long seed = 1;
	for (int i = 1; i < argc; i += 2) {
		if (i + 1 >= argc)
			usage(argv[0]);
		const char *o = argv[i], *v = argv[i + 1];
		if (!strcmp(o, "--seconds"))
			seconds = atof(v);
		else if (!strcmp(o, "--seed"))
			seed = strtoul(v, NULL, 0);
		else if (!strcmp(o, "--cpus"))
			cpus = (unsigned)atoi(v);
		else if (!strcmp(o, "--writers"))
			writers = (unsigned)atoi(v);
		else if (!strcmp(o, "--mms"))
			nmms = (unsigned)atoi(v);
		else if (!strcmp(o, "--asids"))
			asids = (unsigned)atoi(v);
		else if (!strcmp(o, "--mode") && !strcmp(v, "signal"))
			mode = SMMU_SHOOTDOWN_SIGNAL;
		else if (!strcmp(o, "--mode") && !strcmp(v, "rcu"))
			mode = SMMU_SHOOTDOWN_RCU;
		else if (!strcmp(o, "--mode") && !strcmp(v, "rcu-deferred"))
			mode = SMMU_SHOOTDOWN_RCU_DEFERRED;
		else
			usage(argv[0]);
	}
	if (!cpus || !writers || cpus + writers > MAX_THREADS || nmms < 2 || nmms > MAX_MMS || asids > SMMU_ASIDS_MAX) {
		fprintf(stderr, "1..%d threads in all, 2..%d mms, 0..%u asids\n", MAX_THREADS, MAX_MMS, SMMU_ASIDS_MAX);
		return 2;
	}

	struct smmu_pool *pool;
	struct smmu_pool_config cfg = {.size = (size_t)(2 * nmms * NSLOTS + 64) * PAGE, .flags = SMMU_POOL_POISON};
	check(smmu_pool_create(&cfg, &pool), "pool");
	struct smmu_mm_config mc = {.mode = mode};
	for (unsigned m = 0; m < nmms; m++) {
		check(smmu_mm_create_ex(pool, &mc, &mms[m]), "mm");
		if (smmu_mm_page_size(mms[m]) != PAGE)
			check(-EINVAL, "page size");
	}

	struct smmu_cpu_config cc = {.asids = asids};
	pthread_t t[MAX_THREADS];
	struct cpu_arg args[MAX_THREADS];
	for (unsigned i = 0; i < cpus + writers; i++) {
		args[i].id = i < cpus ? i : i - cpus;
		args[i].seed = (uint64_t)seed * 0x9E3779B97F4A7C15ull + 0x1000 * (i + 1) + 1;
		unsigned m = args[i].id % nmms;
		check(smmu_thread_create_ex(&t[i], NULL, mms[m], &cc, i < cpus ? cpu_thread : writer_thread, &args[i]),
		      "smmu_thread_create_ex");
	}
	struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
	nanosleep(&ts, NULL);
	atomic_store(&stop, true);
	pthread_t wd;
	pthread_create(&wd, NULL, watchdog, NULL);
	for (unsigned i = 0; i < cpus + writers; i++) {
		void *ret = NULL;
		check(smmu_thread_join(t[i], &ret), "smmu_thread_join");
		uintptr_t want = i < cpus ? 0x5000 + i : 0x6000 + (i - cpus);
		if ((uintptr_t)ret != want) {
			fprintf(stderr, "thread %u returned %p, not %#lx\n", i, ret, (unsigned long)want);
			atomic_fetch_add(&violations, 1);
		}
	}
	atomic_store(&all_joined, true);
	pthread_join(wd, NULL);

	struct smmu_stats tot;
	memset(&tot, 0, sizeof(tot));
	for (unsigned m = 0; m < nmms; m++) {
		struct smmu_stats st;
		check(smmu_stats_get(mms[m], &st), "stats");
#define SUM(name, desc) tot.name += st.name;
		SMMU_STATS_LIST(SUM)
#undef SUM
		check(smmu_munmap(mms[m], BASE, NSLOTS * PAGE), "final munmap");
		check(smmu_mm_destroy(mms[m]), "mm destroy"); /* -EBUSY: a CPU was left registered */
	}
	size_t free_frames = smmu_pool_free_frames(pool), frames = smmu_pool_frames(pool);
	check(smmu_pool_destroy(pool), "pool destroy");

	static const char *const names[] = {"signal", "rcu", "rcu-deferred"};
	printf("stress-switch: %s mode, %.1f s, %u mms, %u CPUs, %u writers, asids %u%s, seed %lu\n", names[mode],
	       seconds, nmms, cpus, writers, asids, asids ? "" : " (default)", seed);
	printf("  loads checked %lu, scratch words checked %lu, stores checked %lu, writer ops %lu\n",
	       atomic_load(&loads_checked), atomic_load(&scratch_checked), atomic_load(&stores_checked),
	       atomic_load(&writer_ops));
	printf("  switches %lu (counted %" PRIu64 "), asid recycles %" PRIu64 ", shootdowns %" PRIu64
	       ", signals sent %" PRIu64 ", grace periods %" PRIu64 ", deferred frees %" PRIu64
	       ", frames freed %" PRIu64 ", flushes full %" PRIu64 " / range %" PRIu64 "\n",
	       atomic_load(&switches_done), tot.mm_switches, tot.asid_recycles, tot.shootdowns, tot.signals_sent,
	       tot.grace_periods, tot.deferred_frees, tot.frames_freed, tot.flush_full, tot.flush_range);
	printf("  violations %lu\n", atomic_load(&violations));
	int bad = atomic_load(&violations) != 0;
	if (tot.mm_switches != atomic_load(&switches_done)) {
		printf("  COUNTER: mm_switches %" PRIu64 " != switches made %lu\n", tot.mm_switches,
		       atomic_load(&switches_done));
		bad = 1;
	}
	if (mode != SMMU_SHOOTDOWN_SIGNAL && tot.signals_sent) {
		printf("  SIGNALS: an RCU-mode mm sent %" PRIu64 " signals\n", tot.signals_sent);
		bad = 1;
	}
	if (asids && asids < nmms && atomic_load(&switches_done) > 1000 && !tot.asid_recycles)
		printf("  WARNING: %u mms over %u ASIDs and no ASID was ever recycled\n", nmms, asids);
	if (free_frames != frames) {
		printf("  LEAK: %zu of %zu frames free at the end\n", free_frames, frames);
		bad = 1;
	}
	return bad;
}
