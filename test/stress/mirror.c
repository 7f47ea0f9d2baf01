/* SPDX-License-Identifier: MIT */
/*
 * stress-mirror: M mirror threads (not CPUs) each keep a secondary TLB -
 * slot -> host pointer from smmu_mm_translate - for a part of a heap of
 * NSLOTS pages, coherent through their own interval subscription; the
 * parts overlap.  W writer CPUs meanwhile munmap, mmap(FIXED) with a new
 * stamp, mprotect(READ / READ|WRITE / NONE) and clear the dirty bits of
 * random 1..4-page ranges, some of them with SMMU_OP_NONBLOCK, in a pool
 * that poisons freed frames.  Each page holds a stamp (generation << 32 |
 * page index << 8 | tag) written right after it was mapped.  Now and then
 * a mirror removes its subscription and inserts one over another part,
 * while invalidations run.
 *
 * A mirror fills under the protocol of <softmmu/notifier.h> (read_begin,
 * translate - READ|WRITE or READ -, then under its mutex read_retry and
 * install) and dereferences cached pointers only under its mutex, the one
 * its invalidate callback takes.  What the protocol guarantees, and so
 * what is checked (every check reads the writers' published state under
 * the mutex, before the dereference):
 *  - never poison: a frame is freed only after the callback of every
 *    subscription over its page has returned, which it cannot while the
 *    mirror holds its mutex;
 *  - never a stamp of another page or tag: the pointer came from this
 *    page's translation;
 *  - never a generation whose munmap (or replacing mmap) had returned: its
 *    callback then ran before this critical section, and removed the entry
 *    or made the fill's read_retry fail;
 *  - never a generation whose mprotect(NONE) had returned (and whose
 *    access no later mprotect had begun to restore): same reason;
 *  - never a writable pointer to a generation whose mprotect(READ or
 *    NONE) had returned, write access not being restored since;
 *  - a nonzero stamp does not change while the mutex is held (re-reads,
 *    some of them across a sched_yield with the mutex held);
 *  - no callback after smmu_interval_notifier_remove returned, and every
 *    callback's range overlaps its subscription's interval;
 *  - a change refused with -EAGAIN (SMMU_OP_NONBLOCK, a callback that
 *    would have to sleep) changed nothing: the writer reads every page of
 *    the range back through its CPU;
 *  - a zero stamp only while an mmap of the slot is under way: once its
 *    stamp is written, the frame of the mapping holds it.
 *
 * usage: stress-mirror [--seconds S] [--mirrors M] [--writers W] [--seed N]
 *                      [--mode signal|rcu|rcu-deferred]
 * Exit status 0 with zero violations (and no frame leaked), 1 otherwise,
 * 2 for bad options; HANG and abort() if a thread is still running 60 s
 * after the stop.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include <softmmu/softmmu.h>

#include <getopt.h>
#include <sched.h>

#include "stress.h"

#define NSLOTS 64
#define TAG 0x3c
#define MAX_MIRRORS 16
#define MAX_WRITERS 16
#define MIN_SPAN 8 /* pages a subscription covers, at least */

static struct smmu_mm *mm;
static smmu_addr_t base;
static size_t page;
static atomic_bool stop;
static enum smmu_shootdown_mode mode = SMMU_SHOOTDOWN_SIGNAL;

/*
 * Per slot.  gen_now and prot_now: the writer holding the slot's lock.
 * The atomics are published by writers and read by mirrors:
 *  unmapped: highest generation whose munmap (or replacing mmap) returned;
 *  readonly: generation whose mprotect(READ or NONE) returned, 0 once an
 *            operation that adds write access is about to begin;
 *  noaccess: generation whose mprotect(NONE) returned, 0 once an operation
 *            that adds read access is about to begin;
 *  mapping:  an mmap of the slot is under way or its stamp not yet written.
 */
static atomic_flag slot_lock[NSLOTS];
static uint32_t gen_now[NSLOTS]; /* 0: not mapped */
static int prot_now[NSLOTS];
static _Atomic uint32_t unmapped[NSLOTS], readonly[NSLOTS], noaccess[NSLOTS];
static atomic_bool mapping[NSLOTS]; /* set before an mmap, cleared once its stamps are written */
static _Atomic uint32_t next_gen = 1;

static uint64_t stamp(uint32_t gen, unsigned slot)
{
	return (uint64_t)gen << 32 | (uint64_t)slot << 8 | TAG;
}

static uint32_t gen_of(uint64_t v)
{
	return (uint32_t)(v >> 32);
}

/* ---------------------------------------------------------------- mirrors */

struct entry {
	_Atomic uint64_t *host; /* NULL: not cached */
	bool writable;
};

enum sub_state {
	SUB_LIVE, /* subscribed (or being subscribed): callbacks expected */
	SUB_GONE, /* smmu_interval_notifier_remove returned: no callback may run */
};

struct mirror {
	unsigned id;
	uint64_t seed;
	pthread_mutex_t lock;                   /* the protocol's lock: fills, uses, callbacks */
	struct smmu_interval_notifier *sub;     /* Sync: the mirror's thread */
	unsigned lo, hi;                        /* slots covered; Sync: the mirror's thread */
	enum sub_state state;                   /* Sync: lock */
	struct entry e[NSLOTS];                 /* Sync: lock */
	unsigned long invalidations, events[8]; /* Sync: lock */
	atomic_ulong refused;                   /* callbacks that returned false */
	/* The mirror's thread only. */
	unsigned long lookups, hits, refills, retries, faults, swaps, reads, fresh, stores, rereads;
};

static struct mirror mirrors[MAX_MIRRORS];

static bool invalidate(struct smmu_interval_notifier *sub, void *arg, const struct smmu_notify_range *r,
		       unsigned long cur_seq)
{
	struct mirror *m = arg;
	if (r->flags & SMMU_NOTIFY_BLOCKABLE) {
		pthread_mutex_lock(&m->lock);
	} else if (pthread_mutex_trylock(&m->lock)) {
		/* We would have to sleep: refuse, the change fails with
		 * -EAGAIN and must change nothing. */
		atomic_fetch_add(&m->refused, 1);
		return false;
	}
	smmu_interval_set_seq(sub, cur_seq);
	if (m->state == SUB_GONE)
		stress_violation("invalidate callback after smmu_interval_notifier_remove returned", -1, r->start);
	smmu_addr_t s, e;
	smmu_interval_notifier_range(sub, &s, &e);
	if (!(r->start < e && s < r->end))
		stress_violation("invalidate callback for a range outside the interval", -1, r->start);
	/* Drop every entry of the range (all slots: an entry outside the
	 * current interval would be a bug of ours, harmless to drop). */
	for (unsigned i = 0; i < NSLOTS; i++) {
		smmu_addr_t a = base + (smmu_addr_t)i * page;
		if (a < r->end && a + page > r->start)
			m->e[i].host = NULL;
	}
	m->invalidations++;
	m->events[(unsigned)r->event & 7]++;
	pthread_mutex_unlock(&m->lock);
	return true;
}

static const struct smmu_interval_notifier_ops mirror_ops = { .invalidate = invalidate };

/* Check one read of slot's stamp.  dead, none and busy were read before it. */
static void check_stamp(struct mirror *m, unsigned slot, uint64_t v, uint32_t dead, uint32_t none, bool busy)
{
	if (v == STRESS_POISON64) {
		stress_violation("read a freed (poisoned) frame through a cached host pointer", slot, v);
		return;
	}
	if (v == 0) {
		/* The mapping this pointer belongs to began before the
		 * translate, so before we read busy: if no mmap of the slot
		 * was under way then, its stamp had been written. */
		if (!busy)
			stress_violation("zero stamp though the mapping's stamp had been written", slot, v);
		m->fresh++;
		return;
	}
	if ((v & 0xff) != TAG || ((v >> 8) & 0xffffff) != slot) {
		stress_violation("stamp of another page or mapping", slot, v);
		return;
	}
	if (gen_of(v) <= dead)
		stress_violation("read through a host pointer whose munmap had returned", slot, v);
	if (gen_of(v) == none)
		stress_violation("read through a host pointer whose mprotect(NONE) had returned", slot, v);
}

/* Dereference en, m's entry for slot.  Called with m->lock held: that is
 * what keeps the frame from being freed while we read it. */
static void use(struct mirror *m, unsigned slot, struct entry en)
{
	/* The writers' state first, then the frame: whatever they had
	 * published when this critical section began must hold. */
	uint32_t dead = atomic_load(&unmapped[slot]);
	uint32_t none = atomic_load(&noaccess[slot]);
	uint32_t ro = atomic_load(&readonly[slot]);
	bool busy = atomic_load(&mapping[slot]);
	uint64_t v = atomic_load_explicit(en.host, memory_order_relaxed);
	m->reads++;
	check_stamp(m, slot, v, dead, none, busy);
	if (v == STRESS_POISON64)
		return;
	if (en.writable && v != 0 && gen_of(v) == ro)
		stress_violation("writable host pointer after mprotect(READ) had returned", slot, v);
	uint64_t x = stress_rng(&m->seed);
	if (en.writable && (x & 3) == 0) {
		/* A store to this mirror's scratch word of the page. */
		atomic_store_explicit(en.host + 8 + m->id, v, memory_order_relaxed);
		m->stores++;
	}
	if ((x & 0x70) == 0) {
		/* Hold the mutex a while, re-reading: a writer's callback
		 * waits meanwhile, and the frame must not change under us.
		 * Now and then the use is even preempted, lock held. */
		for (int i = 0; i < 32; i++) {
			if (i == 16 && (x & 0x380) == 0)
				sched_yield();
			uint64_t w = atomic_load_explicit(en.host, memory_order_relaxed);
			m->rereads++;
			if (v == 0) {
				check_stamp(m, slot, w, dead, none, busy);
				if (w != 0)
					v = w;
			} else if (w != v) {
				if (w == STRESS_POISON64)
					check_stamp(m, slot, w, dead, none, busy);
				else
					stress_violation("stamp changed while the mirror held its lock", slot, w);
				break;
			}
		}
	}
}

/* A miss: fill under the protocol, then use under the lock. */
static void fill_and_use(struct mirror *m, unsigned slot)
{
	smmu_addr_t a = base + (smmu_addr_t)slot * page;
	for (int tries = 0; tries < 1000; tries++) {
		unsigned long seq = smmu_interval_read_begin(m->sub);
		void *host;
		bool writable = stress_rng(&m->seed) & 1;
		int err = smmu_mm_translate(mm, a, writable ? SMMU_PROT_READ | SMMU_PROT_WRITE : SMMU_PROT_READ, &host);
		if (err == -EACCES && writable) {
			writable = false;
			err = smmu_mm_translate(mm, a, SMMU_PROT_READ, &host);
		}
		if (err == -EFAULT || err == -EACCES || err == -ENOMEM) {
			m->faults++; /* unmapped, PROT_NONE, or the pool is short */
			return;
		}
		stress_check(err, "smmu_mm_translate");
		pthread_mutex_lock(&m->lock);
		if (smmu_interval_read_retry(m->sub, seq)) {
			pthread_mutex_unlock(&m->lock);
			m->retries++;
			continue;
		}
		m->e[slot] = (struct entry){ .host = host, .writable = writable };
		m->refills++;
		use(m, slot, m->e[slot]);
		pthread_mutex_unlock(&m->lock);
		return;
	}
}

static void access_slot(struct mirror *m, unsigned slot)
{
	m->lookups++;
	pthread_mutex_lock(&m->lock);
	struct entry en = m->e[slot];
	if (en.host) {
		m->hits++;
		use(m, slot, en);
		pthread_mutex_unlock(&m->lock);
		return;
	}
	pthread_mutex_unlock(&m->lock);
	fill_and_use(m, slot);
}

static void subscribe(struct mirror *m)
{
	unsigned span = MIN_SPAN + (unsigned)(stress_rng(&m->seed) % (NSLOTS - MIN_SPAN + 1));
	m->lo = (unsigned)(stress_rng(&m->seed) % (NSLOTS - span + 1));
	m->hi = m->lo + span;
	pthread_mutex_lock(&m->lock);
	m->state = SUB_LIVE; /* callbacks may come before insert returns */
	pthread_mutex_unlock(&m->lock);
	stress_check(smmu_interval_notifier_insert(mm, base + (smmu_addr_t)m->lo * page, (size_t)span * page,
						   &mirror_ops, m, &m->sub),
		     "smmu_interval_notifier_insert");
}

static void unsubscribe(struct mirror *m)
{
	/* Forget everything first: after remove nothing would tell us. */
	pthread_mutex_lock(&m->lock);
	for (unsigned i = 0; i < NSLOTS; i++)
		m->e[i].host = NULL;
	pthread_mutex_unlock(&m->lock);
	stress_check(smmu_interval_notifier_remove(m->sub), "smmu_interval_notifier_remove");
	m->sub = NULL;
	pthread_mutex_lock(&m->lock);
	m->state = SUB_GONE;
	pthread_mutex_unlock(&m->lock);
}

static void *mirror_thread(void *arg)
{
	struct mirror *m = arg;
	subscribe(m);
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		if ((stress_rng(&m->seed) & 4095) == 0) {
			unsubscribe(m);
			sched_yield(); /* a window for a late callback to show */
			subscribe(m);
			m->swaps++;
		}
		unsigned slot = m->lo + (unsigned)(stress_rng(&m->seed) % (m->hi - m->lo));
		access_slot(m, slot);
	}
	unsubscribe(m);
	return NULL;
}

/* ---------------------------------------------------------------- writers */

static bool all_mapped(unsigned s, unsigned k)
{
	for (unsigned i = s; i < s + k; i++) {
		if (!gen_now[i])
			return false;
	}
	return true;
}

/* A refused change must have changed nothing: read the range back. */
static void verify_unchanged(struct smmu_cpu *cpu, unsigned s, unsigned k)
{
	for (unsigned i = s; i < s + k; i++) {
		uint64_t v = 0;
		int err = smmu_try_load64(cpu, base + (smmu_addr_t)i * page, &v);
		int want = !gen_now[i] ? -EFAULT : prot_now[i] == SMMU_PROT_NONE ? -EACCES : 0;
		if (err != want || (want == 0 && v != stamp(gen_now[i], i)))
			stress_violation("a change refused with -EAGAIN changed the mapping", i, v);
	}
}

/* Publish what protection holds now for the mapped slots of the range:
 * a lost access is announced only after the call that removed it returned. */
static void publish_prot(unsigned s, unsigned k)
{
	for (unsigned i = s; i < s + k; i++) {
		if (!gen_now[i])
			continue;
		if (prot_now[i] == SMMU_PROT_NONE)
			atomic_store(&noaccess[i], gen_now[i]);
		if (!(prot_now[i] & SMMU_PROT_WRITE))
			atomic_store(&readonly[i], gen_now[i]);
	}
}

static atomic_ulong writer_ops, writer_eagain;

static void *writer(void *arg)
{
	uint64_t seed = (uintptr_t)arg * 0xD1B54A32D192ED03ull + 7;
	struct smmu_cpu *cpu;
	stress_check(smmu_cpu_register(mm, &cpu), "register");
	unsigned long ops = 0, eagain = 0;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		unsigned k = 1 + (unsigned)(stress_rng(&seed) % 4);
		unsigned s = (unsigned)(stress_rng(&seed) % (NSLOTS - k + 1));
		if (!stress_lock_range(slot_lock, s, k))
			continue;
		smmu_addr_t a = base + (smmu_addr_t)s * page;
		size_t len = (size_t)k * page;
		unsigned flags = (stress_rng(&seed) & 3) == 0 ? SMMU_OP_NONBLOCK : 0;
		unsigned op = (unsigned)(stress_rng(&seed) % 16);
		int err;
		ops++;
		if (op < 4) { /* unmap */
			err = smmu_munmap_ex(mm, a, len, flags);
			if (err == -EAGAIN) {
				eagain++;
				verify_unchanged(cpu, s, k);
			} else {
				stress_check(err, "munmap");
				for (unsigned i = s; i < s + k; i++) {
					if (gen_now[i])
						atomic_store(&unmapped[i], gen_now[i]);
					gen_now[i] = 0;
					atomic_store(&readonly[i], 0);
					atomic_store(&noaccess[i], 0);
				}
			}
		} else if (op < 9) { /* map over the range (replacing), then stamp */
			for (unsigned i = s; i < s + k; i++) {
				atomic_store(&mapping[i], true);
				atomic_store(&readonly[i], 0);
				atomic_store(&noaccess[i], 0);
			}
			int mflags = SMMU_MAP_FIXED | ((stress_rng(&seed) & 1) ? SMMU_MAP_POPULATE : 0);
			smmu_addr_t got;
			err = smmu_mmap(mm, a, len, SMMU_PROT_READ | SMMU_PROT_WRITE, mflags, &got);
			if (err == -ENOMEM) {
				/* POPULATE and the pool is short (frames wait for a
				 * grace period): nothing changed. */
				publish_prot(s, k);
			} else {
				stress_check(err, "mmap");
				for (unsigned i = s; i < s + k; i++) {
					if (gen_now[i])
						atomic_store(&unmapped[i], gen_now[i]);
					gen_now[i] = atomic_fetch_add(&next_gen, 1);
					prot_now[i] = SMMU_PROT_READ | SMMU_PROT_WRITE;
					stress_check(smmu_try_store64(cpu, base + (smmu_addr_t)i * page,
								      stamp(gen_now[i], i)),
						     "stamp");
				}
			}
			for (unsigned i = s; i < s + k; i++)
				atomic_store(&mapping[i], false);
		} else if (op < 15 && all_mapped(s, k)) { /* protection */
			int prot = SMMU_PROT_NONE;
			if (op < 11)
				prot = SMMU_PROT_READ;
			else if (op < 14)
				prot = SMMU_PROT_READ | SMMU_PROT_WRITE;
			/* Announce lost protection only after the call returned,
			 * withdraw it before a call that adds access begins. */
			for (unsigned i = s; i < s + k; i++) {
				if (prot != SMMU_PROT_NONE)
					atomic_store(&noaccess[i], 0);
				if (prot & SMMU_PROT_WRITE)
					atomic_store(&readonly[i], 0);
			}
			err = smmu_mprotect_ex(mm, a, len, prot, flags);
			if (err == -EAGAIN) {
				eagain++;
				verify_unchanged(cpu, s, k);
			} else {
				stress_check(err, "mprotect");
				for (unsigned i = s; i < s + k; i++)
					prot_now[i] = prot;
			}
			publish_prot(s, k); /* as it was, after a refusal */
		} else if (op == 15) { /* dirty tracking: an invalidation that changes no mapping */
			size_t was_dirty;
			stress_check(smmu_clear_dirty(mm, a, len, &was_dirty), "clear_dirty");
		}
		stress_unlock_range(slot_lock, s, k);
		if (mode != SMMU_SHOOTDOWN_SIGNAL)
			smmu_quiescent(cpu); /* a writer is a CPU: grace periods wait for it */
	}
	atomic_fetch_add(&writer_ops, ops);
	atomic_fetch_add(&writer_eagain, eagain);
	stress_check(smmu_cpu_unregister(cpu), "unregister");
	return NULL;
}

/* ------------------------------------------------------------------- main */

static int usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [--seconds S] [--mirrors M] [--writers W] [--seed N] [--mode signal|rcu|rcu-deferred]\n"
		"  S > 0, M in 1..%d, W in 1..%d\n",
		argv0, MAX_MIRRORS, MAX_WRITERS);
	return 2;
}

int main(int argc, char **argv)
{
	double seconds = 5;
	unsigned nmirrors = 3, nwriters = 2;
	unsigned long seed = 1;
	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, 't' }, { "mirrors", required_argument, NULL, 'M' },
		{ "writers", required_argument, NULL, 'w' }, { "seed", required_argument, NULL, 's' },
		{ "mode", required_argument, NULL, 'm' },    { NULL, 0, NULL, 0 },
	};
	int c, bad = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 't')
			bad = stress_parse_seconds(optarg, &seconds);
		else if (c == 'M')
			bad = stress_parse_unsigned(optarg, 1, MAX_MIRRORS, &nmirrors);
		else if (c == 'w')
			bad = stress_parse_unsigned(optarg, 1, MAX_WRITERS, &nwriters);
		else if (c == 's')
			bad = stress_parse_ulong(optarg, 0, UINT32_MAX, &seed);
		else if (c == 'm')
			bad = stress_parse_mode(optarg, &mode);
		else
			bad = 1;
		if (bad)
			return usage(argv[0]);
	}
	if (optind < argc)
		return usage(argv[0]);

	struct smmu_pool *pool;
	stress_setup(NSLOTS, mode, &pool, &mm, &base);
	page = smmu_mm_page_size(mm);

	pthread_t t[MAX_MIRRORS + MAX_WRITERS];
	for (unsigned i = 0; i < nmirrors; i++) {
		struct mirror *m = &mirrors[i];
		m->id = i;
		m->seed = (i + seed * 1000) * 0x9E3779B97F4A7C15ull + 1;
		pthread_mutex_init(&m->lock, NULL);
		m->state = SUB_GONE;
		pthread_create(&t[i], NULL, mirror_thread, m);
	}
	for (unsigned i = 0; i < nwriters; i++)
		pthread_create(&t[nmirrors + i], NULL, writer, (void *)(uintptr_t)(i + seed * 1000 + 500));
	struct timespec ts = { (time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9) };
	nanosleep(&ts, NULL);
	atomic_store(&stop, true);
	/* A hang: a callback waiting forever, a read_begin never woken. */
	stress_join(t, nmirrors + nwriters, nmirrors, "mirror", "writer");

	struct smmu_stats st;
	stress_check(smmu_stats_get(mm, &st), "stats");
	bool clean = stress_teardown(pool, mm, base, NSLOTS);

	unsigned long lookups = 0, hits = 0, refills = 0, retries = 0, faults = 0, swaps = 0, reads = 0, fresh = 0,
		      stores = 0, rereads = 0, inval = 0, refused = 0, ev[8] = { 0 };
	for (unsigned i = 0; i < nmirrors; i++) {
		struct mirror *m = &mirrors[i];
		lookups += m->lookups;
		hits += m->hits;
		refills += m->refills;
		retries += m->retries;
		faults += m->faults;
		swaps += m->swaps;
		reads += m->reads;
		fresh += m->fresh;
		stores += m->stores;
		rereads += m->rereads;
		inval += m->invalidations;
		refused += atomic_load(&m->refused);
		for (int j = 0; j < 8; j++)
			ev[j] += m->events[j];
		pthread_mutex_destroy(&m->lock);
	}
	printf("stress-mirror: %s mode, %.1f s, %u mirrors, %u writers, seed %lu\n", stress_mode_names[mode], seconds,
	       nmirrors, nwriters, seed);
	printf("  lookups %lu, hits %lu, refills %lu, read_retry failures %lu, not mapped/accessible %lu, "
	       "subscription swaps %lu\n",
	       lookups, hits, refills, retries, faults, swaps);
	printf("  reads checked %lu (zero stamps %lu, re-reads %lu), stores through cached pointers %lu\n", reads,
	       fresh, rereads, stores);
	printf("  callbacks %lu (unmap %lu, protection %lu, clear %lu), refused %lu; writer ops %lu, -EAGAIN %lu\n",
	       inval, ev[SMMU_NOTIFY_UNMAP], ev[SMMU_NOTIFY_PROTECTION], ev[SMMU_NOTIFY_CLEAR], refused,
	       atomic_load(&writer_ops), atomic_load(&writer_eagain));
	printf("  shootdowns %" PRIu64 ", frames freed %" PRIu64 ", grace periods %" PRIu64 ", deferred frees %" PRIu64
	       "\n",
	       st.shootdowns, st.frames_freed, st.grace_periods, st.deferred_frees);
	printf("  violations %lu\n", atomic_load(&stress_violations));
	return atomic_load(&stress_violations) || !clean ? 1 : 0;
}
