/* SPDX-License-Identifier: MIT */
/*
 * smmu-torture: TLB shootdowns against reader CPUs, with stamps and poison.
 *
 * K reader CPUs load (and now and then store) pages of one mm while W
 * writer CPUs munmap, mmap(FIXED), mprotect and mremap random ranges of the
 * same NSLOTS pages, in a pool that poisons freed frames.  Each page holds a
 * stamp (generation << 16 | slot << 8 | tag) written when it was mapped at
 * that slot; generations are unique and grow, so a slot's own stamps grow
 * with time.
 *
 * Violations (DESIGN.md §4):
 *  - a load returns poison: a freed frame was read (property 2);
 *  - a stamp that names another slot, unless a page moved into this slot
 *    may explain it (below): a translation crossed over;
 *  - a load returns this slot's generation G after the munmap, the mmap
 *    that replaced it or the mremap that moved it away returned, before the
 *    load began (property 1, unmap);
 *  - a store succeeds on a page whose mprotect(READ) returned before the
 *    store began, the page keeping one generation throughout (property 1,
 *    protection);
 *  - checked by the writer that moved a page, holding the locks of both
 *    ranges: the destination holds the source's contents, a read-only
 *    source is read-only at the destination, the source faults.
 * Readers also go offline and online now and then (the generation
 * handshake).  Writers change adjacent ranges at the same time (concurrent
 * gathers on one mm).
 *
 * Moves.  A writer moves the pages of a mapped range to a free range with
 * smmu_mremap, or as a batch of two moves (the halves swapped) with
 * smmu_mremap_batch, then restamps each moved page with a new generation of
 * its new slot (upgrading read-only pages to do it).  So between the move
 * and the restamp a reader of the destination legitimately reads the
 * source's stamp (generation G, source slot).  Before each move begins the
 * writer publishes it per destination slot (arrived: G, the source slot,
 * and a count of arrivals).  A reader that reads a foreign stamp at slot d
 * compares it with the arrival it had seen before its access (in deferred
 * mode: before its last quiescent state) and the one after: the page it
 * read can only have come by the last arrival that began before the load,
 * because the next one needs the slot emptied, which comes after the
 * restamp.  If the count moved by two or more in between, it cannot tell
 * which: the read is counted as unverifiable, not as a violation.  The
 * move's restamp keeps the per-slot checks above sound: a slot's own
 * stamps still only grow.
 *
 * Modes.  In the RCU modes readers and writers call smmu_quiescent between
 * batches.  In deferred mode a reader may use a translation until its next
 * quiescent state, so its checks use what the writers had published before
 * it; and a reader of a slot whose page moved away may then see what that
 * page became at its new slot (restamped, moved again): a foreign stamp is
 * also unverifiable when a move out of the slot was under way at the
 * snapshot or began after it (departed: odd while a move is under way).
 *
 * Acknowledgement latency: the library's statistics count shootdowns but
 * do not time them, so each writer times its munmap, replacing mmap(FIXED),
 * mprotect(READ) of a writable page and mremap calls that removed at least
 * one present translation - the calls that need a remote shootdown when a
 * reader CPU has used the page, as readers soon do with every page - with
 * CLOCK_MONOTONIC around the call.  The summary gives the longest and the
 * mean.  In deferred mode these calls wait for a grace period only when
 * the backlog of deferred frees is full (deferred bound waits).
 *
 * usage: smmu-torture [options]   (smmu-torture --help)
 * Exit status 0 with zero violations (and no frame leaked), 1 otherwise,
 * 2 for bad options.  HANG and abort() if a thread is still running 60 s
 * after the stop.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include <softmmu/softmmu.h>

#include <getopt.h>
#include <signal.h>

#include "stress.h"

#define NSLOTS 96 /* < 256: the stamp has 8 bits for the slot */
#define TAG 0x5a
#define MAX_READERS 32
#define MAX_WRITERS 32
#define STATUS_SECONDS 10

static struct smmu_mm *mm;
static smmu_addr_t base;
static size_t page;
static enum smmu_shootdown_mode mode = SMMU_SHOOTDOWN_SIGNAL;
static atomic_bool stop;

/* ------------------------------------------------------------- stamps */

static uint64_t stamp(uint64_t gen, unsigned slot)
{
	return gen << 16 | (uint64_t)slot << 8 | TAG;
}

static uint64_t gen_of(uint64_t v)
{
	return v >> 16;
}

static unsigned slot_of(uint64_t v)
{
	return (unsigned)(v >> 8) & 0xff;
}

/* An arrival: the low 32 bits of the page's generation, the number of
 * arrivals at the slot (24 bits), the source slot. */
static uint64_t arrival(uint64_t gen, uint32_t count, unsigned from)
{
	return (uint64_t)(uint32_t)gen << 32 | (uint64_t)(count & 0xffffff) << 8 | from;
}

static bool arrival_explains(uint64_t arr, uint64_t v)
{
	return arr && (uint32_t)(arr >> 32) == (uint32_t)gen_of(v) && (arr & 0xff) == slot_of(v);
}

static uint32_t arrivals_between(uint64_t before, uint64_t after)
{
	return (uint32_t)((after >> 8) - (before >> 8)) & 0xffffff;
}

/*
 * Per slot.  gen_now, ro_now, narrived: the writer holding the slot's lock.
 * The atomics are published by writers and read by readers:
 *  unmapped:  highest generation of this slot whose munmap, replacing mmap
 *             or move away returned;
 *  readonly:  generation whose mprotect(READ) returned, 0 if writable;
 *  writable_again: times write access may have come back (mprotect(RW)
 *             began, or a map or a move over the slot): readonly can go
 *             G -> 0 -> G again, and a deferred-mode reader that saw G
 *             before its quiescent state may then hold a writable
 *             translation from between the two - only an unchanged count
 *             rules that out;
 *  arrived:   the last move into the slot, published before it began;
 *  departed:  moves out of the slot: +1 before one begins, +1 once its
 *             page is restamped at the destination.
 */
static atomic_flag slot_lock[NSLOTS];
static uint64_t gen_now[NSLOTS]; /* 0: not mapped */
static bool ro_now[NSLOTS];
static uint32_t narrived[NSLOTS];
static _Atomic uint64_t unmapped[NSLOTS], readonly[NSLOTS], arrived[NSLOTS];
static _Atomic uint32_t writable_again[NSLOTS], departed[NSLOTS];
static _Atomic uint64_t next_gen = 1;

/* --tlb-entries: every CPU's TLB has this fixed size (0: the library's
 * adaptive default).  16384 or more: full flushes swap tables (tlb.h). */
static size_t tlb_entries;

static int register_cpu(struct smmu_cpu **cpu)
{
	struct smmu_cpu_config cfg = { .tlb_entries = tlb_entries, .tlb_max_entries = tlb_entries };
	return smmu_cpu_register_ex(mm, &cfg, cpu);
}

/* ------------------------------------------------------------ readers */

/* What a reader may assume of a slot.  Signal and RCU strict mode: what
 * the writers published before the access (their calls returned).  RCU
 * deferred mode: what they had published before the reader's last
 * quiescent state - a translation may live until the next one. */
struct view {
	uint64_t dead, ro, arr;
	uint32_t again, dep;
};

static void view_of(unsigned slot, struct view *w)
{
	w->dead = atomic_load(&unmapped[slot]);
	w->again = atomic_load(&writable_again[slot]);
	w->ro = atomic_load(&readonly[slot]);
	w->arr = atomic_load(&arrived[slot]);
	w->dep = atomic_load(&departed[slot]);
}

/* Counters of one reader, published after each batch for the status line. */
struct reader {
	_Alignas(64) atomic_ulong loads;
	atomic_ulong stores, moved_in, unverified;
};

static struct reader readers_state[MAX_READERS];

/* Keep the loads before it before the loads after it.  x86 keeps loads in
 * order (and ThreadSanitizer does not take atomic_thread_fence). */
static inline void load_load_fence(void)
{
#if defined(__x86_64__) || defined(__i386__)
	atomic_signal_fence(memory_order_seq_cst);
#else
	atomic_thread_fence(memory_order_acquire);
#endif
}

/* Check v, loaded from slot with the view w taken before the load. */
static void check_load(struct reader *r, unsigned slot, uint64_t v, const struct view *w)
{
	if (v == STRESS_POISON64) {
		stress_violation("read a freed (poisoned) frame", slot, v);
		return;
	}
	if (v == 0)
		return; /* mapped, stamp not yet written */
	if ((v & 0xff) != TAG) {
		stress_violation("not a stamp", slot, v);
		return;
	}
	if (slot_of(v) == slot) {
		if (gen_of(v) <= w->dead)
			stress_violation("load through a translation whose munmap/mremap had returned", slot, v);
		return;
	}
	/* A foreign stamp: a page moved here, not yet restamped? */
	load_load_fence(); /* the load of v before the one of arrived */
	uint64_t arr = atomic_load(&arrived[slot]);
	if (arrival_explains(w->arr, v) || arrival_explains(arr, v)) {
		atomic_fetch_add_explicit(&r->moved_in, 1, memory_order_relaxed);
		return;
	}
	if (arrivals_between(w->arr, arr) >= 2 ||
	    (mode == SMMU_SHOOTDOWN_RCU_DEFERRED && ((w->dep & 1) || atomic_load(&departed[slot]) != w->dep))) {
		atomic_fetch_add_explicit(&r->unverified, 1, memory_order_relaxed);
		return;
	}
	stress_violation("stamp of another page or mapping", slot, v);
}

static void *reader(void *arg)
{
	unsigned id = (unsigned)((uintptr_t)arg % 1000);
	uint64_t seed = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
	struct reader *r = &readers_state[id];
	bool deferred = mode == SMMU_SHOOTDOWN_RCU_DEFERRED;
	struct smmu_cpu *cpu;
	struct view *snap = calloc(NSLOTS, sizeof(*snap));
	if (!snap)
		abort();
	stress_check(register_cpu(&cpu), "register");
	unsigned long n = 0, ns = 0;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		if (mode != SMMU_SHOOTDOWN_SIGNAL) {
			/* Snapshot first, then the quiescent state: every change
			 * in the snapshot was made before it compared. */
			for (unsigned i = 0; deferred && i < NSLOTS; i++)
				view_of(i, &snap[i]);
			smmu_quiescent(cpu);
		}
		for (int i = 0; i < 256; i++) {
			unsigned slot = (unsigned)(stress_rng(&seed) % NSLOTS);
			smmu_addr_t a = base + slot * page;
			struct view now, *w = &snap[slot];
			if (!deferred) {
				view_of(slot, &now);
				w = &now;
			}
			uint64_t v, v2;
			if (smmu_try_load64(cpu, a, &v))
				continue;
			check_load(r, slot, v, w);
			n++;
			if ((stress_rng(&seed) & 7) || v == 0 || v == STRESS_POISON64)
				continue;
			/* A store to this reader's scratch word of the page.
			 * ro, read before and after, says read-only had been
			 * reached and no upgrade had started around the store. */
			if (smmu_try_store64(cpu, a + 8 * (2 + id % 64), v) == 0 && smmu_try_load64(cpu, a, &v2) == 0 &&
			    v2 == v && gen_of(v) == w->ro && slot_of(v) == slot &&
			    atomic_load(&readonly[slot]) == w->ro && atomic_load(&writable_again[slot]) == w->again)
				stress_violation("store through a translation whose mprotect(READ) had returned", slot,
						 v);
			ns++;
		}
		atomic_store_explicit(&r->loads, n, memory_order_relaxed);
		atomic_store_explicit(&r->stores, ns, memory_order_relaxed);
		if ((stress_rng(&seed) & 63) == 0) {
			for (unsigned i = 0; deferred && i < NSLOTS; i++)
				view_of(i, &snap[i]); /* coming online catches up, as a quiescent state */
			smmu_cpu_offline(cpu);
			smmu_cpu_online(cpu);
		}
	}
	stress_check(smmu_cpu_unregister(cpu), "unregister");
	free(snap);
	return NULL;
}

/* ------------------------------------------------------------ writers */

/* Counters of one writer.  Sync: the writer stores, main loads. */
struct writer {
	_Alignas(64) atomic_ulong munmaps;
	atomic_ulong mmaps, protects, moves, batches, pages_moved, move_enomem;
	atomic_ulong timed, latency_max_ns, latency_sum_ns;
};

static struct writer writers_state[MAX_WRITERS];

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void count(atomic_ulong *c)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

/* Time a call that removed present translations (started at t0). */
static void timed(struct writer *w, uint64_t t0)
{
	uint64_t d = now_ns() - t0;
	count(&w->timed);
	atomic_store_explicit(&w->latency_sum_ns, atomic_load_explicit(&w->latency_sum_ns, memory_order_relaxed) + d,
			      memory_order_relaxed);
	if (d > atomic_load_explicit(&w->latency_max_ns, memory_order_relaxed))
		atomic_store_explicit(&w->latency_max_ns, d, memory_order_relaxed);
}

static bool any_mapped(unsigned s, unsigned k)
{
	for (unsigned i = s; i < s + k; i++) {
		if (gen_now[i])
			return true;
	}
	return false;
}

static bool all_mapped(unsigned s, unsigned k)
{
	for (unsigned i = s; i < s + k; i++) {
		if (!gen_now[i])
			return false;
	}
	return true;
}

/* Map a new generation at slot i (mapped just now, read-write). */
static void restamp(struct smmu_cpu *cpu, unsigned i)
{
	gen_now[i] = atomic_fetch_add(&next_gen, 1);
	ro_now[i] = false;
	stress_check(smmu_try_store64(cpu, base + i * page, stamp(gen_now[i], i)), "stamp");
}

/*
 * Move the mapped range [s, s + k) (locked) to a free range of k slots, if
 * one can be locked; one mremap, or a batch of two moves with the halves
 * swapped.  Then check it through this CPU and restamp the moved pages.
 */
static void move(struct smmu_cpu *cpu, struct writer *w, uint64_t *seed, unsigned s, unsigned k)
{
	unsigned d = 0;
	bool found = false;
	for (int tries = 0; tries < 4 && !found; tries++) {
		d = (unsigned)(stress_rng(seed) % (NSLOTS - k + 1));
		if (d + k <= s || s + k <= d) {
			found = stress_lock_range(slot_lock, d, k);
			if (found && any_mapped(d, k)) {
				stress_unlock_range(slot_lock, d, k);
				found = false;
			}
		}
	}
	if (!found)
		return;

	/* dst[j]: where the page of slot s + j goes. */
	unsigned dst[4];
	struct smmu_remap moves[2];
	size_t nmoves = 1;
	unsigned half = k >= 2 && (stress_rng(seed) & 1) ? 1 + (unsigned)(stress_rng(seed) % (k - 1)) : 0;
	if (half) { /* [s, s + half) -> [d + k - half, d + k), the rest -> [d, d + k - half) */
		moves[0] = (struct smmu_remap){ base + s * page, base + (d + k - half) * page, half * page };
		moves[1] = (struct smmu_remap){ base + (s + half) * page, base + d * page, (k - half) * page };
		nmoves = 2;
		for (unsigned j = 0; j < k; j++)
			dst[j] = j < half ? d + k - half + j : d + j - half;
	} else {
		moves[0] = (struct smmu_remap){ base + s * page, base + d * page, k * page };
		for (unsigned j = 0; j < k; j++)
			dst[j] = d + j;
	}

	/* Publish before the move begins. */
	for (unsigned j = 0; j < k; j++) {
		atomic_fetch_add(&departed[s + j], 1);
		atomic_store(&arrived[dst[j]], arrival(gen_now[s + j], ++narrived[dst[j]], s + j));
		atomic_fetch_add(&writable_again[dst[j]], 1);
		atomic_store(&readonly[dst[j]], 0);
	}
	uint64_t t0 = now_ns();
	int err = nmoves == 1 ? smmu_mremap(mm, moves[0].from, moves[0].len, moves[0].to, 0)
			      : smmu_mremap_batch(mm, moves, nmoves);
	if (err == -ENOMEM) {
		/* No memory for the bookkeeping or the destination's tables:
		 * nothing moved.  The page's own stamps are unchanged. */
		count(&w->move_enomem);
		for (unsigned j = 0; j < k; j++)
			atomic_fetch_add(&departed[s + j], 1);
		stress_unlock_range(slot_lock, d, k);
		return;
	}
	stress_check(err, nmoves == 1 ? "mremap" : "mremap_batch");
	timed(w, t0);
	count(&w->moves);
	if (nmoves == 2)
		count(&w->batches);
	atomic_store_explicit(&w->pages_moved, atomic_load_explicit(&w->pages_moved, memory_order_relaxed) + k,
			      memory_order_relaxed);

	bool upgrade = false;
	for (unsigned j = 0; j < k; j++) {
		unsigned from = s + j, to = dst[j];
		atomic_store(&unmapped[from], gen_now[from]);
		atomic_store(&readonly[from], 0);
		uint64_t v = 0;
		int e = smmu_try_load64(cpu, base + from * page, &v);
		if (e != -EFAULT)
			stress_violation("mremap: the source still mapped after the call returned", from, v);
		e = smmu_try_load64(cpu, base + to * page, &v);
		if (e || v != stamp(gen_now[from], from))
			stress_violation("mremap: the destination does not hold the source's contents", to, v);
		/* The writers' scratch word: a store must fail exactly when
		 * the source was read-only. */
		e = smmu_try_store64(cpu, base + to * page + 8, v);
		if (e != (ro_now[from] ? -EACCES : 0))
			stress_violation("mremap: the protection did not go along", to, (uint64_t)(int64_t)e);
		upgrade |= ro_now[from];
	}
	if (upgrade) /* adds access: no shootdown; writable_again was bumped */
		stress_check(smmu_mprotect(mm, base + d * page, k * page, SMMU_PROT_READ | SMMU_PROT_WRITE),
			     "mprotect rw after move");
	for (unsigned j = 0; j < k; j++) {
		restamp(cpu, dst[j]);
		gen_now[s + j] = 0;
		ro_now[s + j] = false;
		atomic_fetch_add(&departed[s + j], 1);
	}
	stress_unlock_range(slot_lock, d, k);
}

static void *writer(void *arg)
{
	unsigned id = (unsigned)((uintptr_t)arg % 1000) - 500;
	uint64_t seed = (uintptr_t)arg * 0xD1B54A32D192ED03ull + 7;
	struct writer *w = &writers_state[id];
	struct smmu_cpu *cpu;
	stress_check(register_cpu(&cpu), "register");
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		unsigned k = 1 + (unsigned)(stress_rng(&seed) % 4);
		unsigned s = (unsigned)(stress_rng(&seed) % (NSLOTS - k + 1));
		if (!stress_lock_range(slot_lock, s, k))
			goto next;
		smmu_addr_t a = base + s * page;
		switch (stress_rng(&seed) % 8) {
		case 0:
		case 1: { /* unmap */
			bool live = any_mapped(s, k);
			uint64_t t0 = now_ns();
			stress_check(smmu_munmap(mm, a, k * page), "munmap");
			if (live)
				timed(w, t0);
			count(&w->munmaps);
			for (unsigned i = s; i < s + k; i++) {
				if (gen_now[i])
					atomic_store(&unmapped[i], gen_now[i]);
				gen_now[i] = 0;
				ro_now[i] = false;
				atomic_store(&readonly[i], 0);
			}
			break;
		}
		case 2:
		case 3: { /* map over the range (replacing), then stamp */
			smmu_addr_t got;
			uint64_t old[4];
			for (unsigned i = 0; i < k; i++) {
				old[i] = gen_now[s + i];
				atomic_fetch_add(&writable_again[s + i], 1);
				atomic_store(&readonly[s + i], 0);
			}
			bool live = any_mapped(s, k);
			uint64_t t0 = now_ns();
			stress_check(smmu_mmap(mm, a, k * page, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got),
				     "mmap");
			if (live)
				timed(w, t0);
			count(&w->mmaps);
			for (unsigned i = 0; i < k; i++) {
				if (old[i])
					atomic_store(&unmapped[s + i], old[i]);
				restamp(cpu, s + i);
			}
			break;
		}
		case 4: { /* read-only, if all mapped */
			if (!all_mapped(s, k))
				break;
			bool live = false;
			for (unsigned i = s; i < s + k; i++)
				live |= !ro_now[i];
			uint64_t t0 = now_ns();
			stress_check(smmu_mprotect(mm, a, k * page, SMMU_PROT_READ), "mprotect ro");
			if (live)
				timed(w, t0);
			count(&w->protects);
			for (unsigned i = s; i < s + k; i++) {
				ro_now[i] = true;
				atomic_store(&readonly[i], gen_now[i]);
			}
			break;
		}
		case 5: { /* back to read-write (no shootdown needed) */
			if (!all_mapped(s, k))
				break;
			for (unsigned i = s; i < s + k; i++) {
				atomic_fetch_add(&writable_again[i], 1);
				atomic_store(&readonly[i], 0);
			}
			stress_check(smmu_mprotect(mm, a, k * page, SMMU_PROT_READ | SMMU_PROT_WRITE), "mprotect rw");
			count(&w->protects);
			for (unsigned i = s; i < s + k; i++)
				ro_now[i] = false;
			break;
		}
		default: /* move elsewhere, if all mapped */
			if (all_mapped(s, k))
				move(cpu, w, &seed, s, k);
			break;
		}
		stress_unlock_range(slot_lock, s, k);
next:
		if (mode != SMMU_SHOOTDOWN_SIGNAL)
			smmu_quiescent(cpu); /* a writer is a CPU too: grace periods wait for it */
	}
	stress_check(smmu_cpu_unregister(cpu), "unregister");
	return NULL;
}

/* --------------------------------------------------------------- main */

struct totals {
	unsigned long loads, stores, moved_in, unverified;
	unsigned long munmaps, mmaps, protects, moves, batches, pages_moved, move_enomem;
	unsigned long timed, latency_max_ns, latency_sum_ns;
};

static void totals(unsigned nreaders, unsigned nwriters, struct totals *t)
{
	*t = (struct totals){ 0 };
	for (unsigned i = 0; i < nreaders; i++) {
		struct reader *r = &readers_state[i];
		t->loads += atomic_load_explicit(&r->loads, memory_order_relaxed);
		t->stores += atomic_load_explicit(&r->stores, memory_order_relaxed);
		t->moved_in += atomic_load_explicit(&r->moved_in, memory_order_relaxed);
		t->unverified += atomic_load_explicit(&r->unverified, memory_order_relaxed);
	}
	for (unsigned i = 0; i < nwriters; i++) {
		struct writer *w = &writers_state[i];
		t->munmaps += atomic_load_explicit(&w->munmaps, memory_order_relaxed);
		t->mmaps += atomic_load_explicit(&w->mmaps, memory_order_relaxed);
		t->protects += atomic_load_explicit(&w->protects, memory_order_relaxed);
		t->moves += atomic_load_explicit(&w->moves, memory_order_relaxed);
		t->batches += atomic_load_explicit(&w->batches, memory_order_relaxed);
		t->pages_moved += atomic_load_explicit(&w->pages_moved, memory_order_relaxed);
		t->move_enomem += atomic_load_explicit(&w->move_enomem, memory_order_relaxed);
		t->timed += atomic_load_explicit(&w->timed, memory_order_relaxed);
		t->latency_sum_ns += atomic_load_explicit(&w->latency_sum_ns, memory_order_relaxed);
		unsigned long m = atomic_load_explicit(&w->latency_max_ns, memory_order_relaxed);
		if (m > t->latency_max_ns)
			t->latency_max_ns = m;
	}
}

static double elapsed_since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void usage(FILE *f, const char *argv0)
{
	fprintf(f,
		"usage: %s [options]\n"
		"TLB shootdown torture: reader CPUs check stamped pages while writer CPUs munmap,\n"
		"mmap, mprotect and mremap them, in a pool that poisons freed frames.\n"
		"  -t, --seconds S        run for S seconds (default 5; a decimal number > 0)\n"
		"      --soak             run until SIGINT or SIGTERM, with a status line every %d s\n"
		"  -s, --seed N           seed of the threads' random numbers, 0..2^32-1 (default 1)\n"
		"  -r, --readers K        reader CPUs, 1..%d (default 3); also --cpus\n"
		"  -w, --writers W        writer threads (CPUs too), 1..%d (default 2); also --threads\n"
		"  -m, --mode MODE        shootdown mode: signal (default), rcu or rcu-deferred\n"
		"      --tlb-entries N    every CPU's TLB fixed at N entries, a power of two 16..2^22\n"
		"                         (default: the library's adaptive size; 16384 or more: full\n"
		"                         flushes swap in a clean spare table)\n"
		"  -h, --help             this text\n"
		"SIGINT or SIGTERM ends any run early, with the summary.\n"
		"Exit status: 0 no violation, 1 violations (or a leaked frame), 2 bad options.\n",
		argv0, STATUS_SECONDS, MAX_READERS, MAX_WRITERS);
}

static int bad_option(const char *argv0, const char *opt, const char *arg)
{
	if (opt)
		fprintf(stderr, "%s: bad value for %s: '%s'\n", argv0, opt, arg);
	usage(stderr, argv0);
	return 2;
}

int main(int argc, char **argv)
{
	double seconds = 5;
	bool soak = false, seconds_given = false;
	unsigned nreaders = 3, nwriters = 2;
	unsigned long seed = 1;
	enum { OPT_SOAK = 256, OPT_TLB };
	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, 't' }, { "soak", no_argument, NULL, OPT_SOAK },
		{ "seed", required_argument, NULL, 's' },    { "readers", required_argument, NULL, 'r' },
		{ "cpus", required_argument, NULL, 'r' },    { "writers", required_argument, NULL, 'w' },
		{ "threads", required_argument, NULL, 'w' }, { "mode", required_argument, NULL, 'm' },
		{ "tlb-entries", required_argument, NULL, OPT_TLB },
		{ "help", no_argument, NULL, 'h' },          { NULL, 0, NULL, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "t:s:r:w:m:h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			if (stress_parse_seconds(optarg, &seconds))
				return bad_option(argv[0], "--seconds", optarg);
			seconds_given = true;
			break;
		case OPT_SOAK:
			soak = true;
			break;
		case 's':
			/* Thread seeds are derived as (index + seed * 1000). */
			if (stress_parse_ulong(optarg, 0, UINT32_MAX, &seed))
				return bad_option(argv[0], "--seed", optarg);
			break;
		case 'r':
			if (stress_parse_unsigned(optarg, 1, MAX_READERS, &nreaders))
				return bad_option(argv[0], "--readers", optarg);
			break;
		case 'w':
			if (stress_parse_unsigned(optarg, 1, MAX_WRITERS, &nwriters))
				return bad_option(argv[0], "--writers", optarg);
			break;
		case 'm':
			if (stress_parse_mode(optarg, &mode))
				return bad_option(argv[0], "--mode", optarg);
			break;
		case OPT_TLB: {
			unsigned long n;
			if (stress_parse_ulong(optarg, 16, 1ul << 22, &n) || (n & (n - 1)))
				return bad_option(argv[0], "--tlb-entries", optarg);
			tlb_entries = n;
			break;
		}
		case 'h':
			usage(stdout, argv[0]);
			return 0;
		default:
			return bad_option(argv[0], NULL, NULL);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], argv[optind]);
		return bad_option(argv[0], NULL, NULL);
	}
	if (soak && seconds_given) {
		fprintf(stderr, "%s: --soak runs until stopped: no --seconds with it\n", argv[0]);
		return bad_option(argv[0], NULL, NULL);
	}

	/* SIGINT and SIGTERM end the run: blocked in every thread (the threads
	 * inherit the mask), taken by main with sigtimedwait.  The library's
	 * shootdown signal stays unblocked. */
	sigset_t stop_signals;
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

	struct smmu_pool *pool;
	stress_setup(NSLOTS, mode, &pool, &mm, &base);
	page = smmu_mm_page_size(mm);

	pthread_t t[MAX_READERS + MAX_WRITERS];
	for (unsigned i = 0; i < nreaders; i++)
		pthread_create(&t[i], NULL, reader, (void *)(uintptr_t)(i + seed * 1000));
	for (unsigned i = 0; i < nwriters; i++)
		pthread_create(&t[nreaders + i], NULL, writer, (void *)(uintptr_t)(i + seed * 1000 + 500));

	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	double next_status = STATUS_SECONDS, last_status = 0;
	unsigned long last_loads = 0;
	int stopped_by = 0;
	for (;;) {
		double el = elapsed_since(&start);
		if (!soak && el >= seconds)
			break;
		double wait = (soak ? next_status : seconds) - el;
		if (wait > 0) {
			struct timespec ts = { (time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9) };
			int sig = sigtimedwait(&stop_signals, NULL, &ts);
			if (sig > 0) {
				stopped_by = sig;
				break;
			}
			continue; /* timeout (EAGAIN) or EINTR: look at the clock */
		}
		if (soak) {
			struct totals tt;
			struct smmu_stats st;
			totals(nreaders, nwriters, &tt);
			stress_check(smmu_stats_get(mm, &st), "stats");
			el = elapsed_since(&start);
			printf("[%7.0f s] accesses/s %.0f, shootdowns %" PRIu64 ", violations %lu, "
			       "max latency %.1f us\n",
			       el, (double)(tt.loads + tt.stores - last_loads) / (el - last_status), st.shootdowns,
			       atomic_load(&stress_violations), (double)tt.latency_max_ns / 1e3);
			fflush(stdout);
			last_loads = tt.loads + tt.stores;
			last_status = el;
			next_status += STATUS_SECONDS;
		}
	}
	atomic_store(&stop, true);
	double ran = elapsed_since(&start);
	stress_join(t, nreaders + nwriters, nreaders, "reader", "writer");

	struct totals tt;
	struct smmu_stats st;
	totals(nreaders, nwriters, &tt);
	stress_check(smmu_stats_get(mm, &st), "stats");
	bool clean = stress_teardown(pool, mm, base, NSLOTS);
	unsigned long violations = atomic_load(&stress_violations);

	printf("smmu-torture: %s mode, %.1f s%s, readers %u, writers %u, seed %lu, TLB %zu entries%s\n",
	       stress_mode_names[mode], ran,
	       stopped_by == SIGINT ? " (SIGINT)" : stopped_by == SIGTERM ? " (SIGTERM)" : "", nreaders, nwriters,
	       seed, tlb_entries, tlb_entries ? "" : " (adaptive)");
	printf("  accesses checked   %lu (%.0f/s): loads %lu, stores %lu; moved-in stamps %lu, unverifiable %lu\n",
	       tt.loads + tt.stores, (double)(tt.loads + tt.stores) / ran, tt.loads, tt.stores, tt.moved_in,
	       tt.unverified);
	printf("  writer calls       munmap %lu, mmap %lu, mprotect %lu, mremap %lu (batches %lu, pages %lu, "
	       "-ENOMEM %lu)\n",
	       tt.munmaps, tt.mmaps, tt.protects, tt.moves, tt.batches, tt.pages_moved, tt.move_enomem);
	printf("  shootdowns         %" PRIu64 " (nested %" PRIu64 "), signals sent %" PRIu64
	       ", deferred acks %" PRIu64 ", grace periods %" PRIu64 ", deferred frees %" PRIu64
	       " (bound waits %" PRIu64 "), frames freed %" PRIu64 "\n",
	       st.shootdowns, st.shootdowns_nested, st.signals_sent, st.acks_deferred, st.grace_periods,
	       st.deferred_frees, st.deferred_bound_waits, st.frames_freed);
	printf("  full TLB flushes   %" PRIu64 " (by swapping tables %" PRIu64 "), range flushes %" PRIu64 "\n",
	       st.flush_full, st.flush_full_swapped, st.flush_range);
	printf("  max ack latency    %.1f us (mean %.1f us over %lu calls that removed present translations; "
	       "wall time of munmap/mmap(FIXED)/mprotect(READ)/mremap%s)\n",
	       (double)tt.latency_max_ns / 1e3, tt.timed ? (double)tt.latency_sum_ns / 1e3 / (double)tt.timed : 0.0,
	       tt.timed, mode == SMMU_SHOOTDOWN_RCU_DEFERRED ? "; deferred mode waits only at the bound" : "");
	printf("  violations         %lu\n", violations);
	return violations || !clean ? 1 : 0;
}
