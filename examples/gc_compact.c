/* SPDX-License-Identifier: MIT */
/*
 * gc_compact: a small concurrent compacting collector built on libsoftmmu.
 *
 * Mutator threads (CPUs of one address space) allocate, link, mutate,
 * unlink and read objects that live in the software address space; a
 * collector thread (not a CPU) compacts sparse heap pages while they run.
 * References are guest addresses.  At the end a checker walks the whole
 * graph and the program exits 0 only if it is intact.
 *
 * The heap.  Objects are 64 bytes, 64 to a 4 KiB page ("region"):
 *   word 0 header   magic | owner | serial     (immutable)
 *   word 1 retire   0 while linked; the epoch of its unlink after
 *   word 2 next     reference to the next object of its list, or 0
 *   words 3-6       payload
 *   word 7 check    mix(header, payload)
 * Each mutator owns NLISTS singly linked lists whose heads sit in its root
 * page (never moved).  Only the owner writes an object's payload, check,
 * retire and (by unlinking) the next fields of its lists; anybody may
 * heal a reference (below).  The owner keeps the count of its linked
 * objects and the sum of their check words; at the end the checker's walk
 * must find exactly that, every check word must match its payload, and
 * every header must be the right owner's.  A lost write (a store that went
 * to a page after the collector copied it), a wrong forwarding or a frame
 * freed too early (the pool poisons freed frames) breaks one of these.
 * Mutators allocate by bumping through a private page (a TLAB) taken from
 * the heap's address range and mapped with smmu_mmap; they read other
 * mutators' lists too, so a relocated object is reached by every thread.
 *
 * Liveness is exact, by epochs, so the collector needs no marking: an
 * unlinked object is stamped with the global epoch read after the unlink.
 * A mutator holds references only within one operation, and announces the
 * global epoch at its safepoint between operations (after smmu_quiescent,
 * which the RCU modes need there anyway).  A stamped object is dead once
 * every running mutator has announced an epoch above its stamp: each of
 * them then began its current operation after the unlink, so none can
 * still reach it.  The collector bumps the epoch at every pass (a cycle,
 * or a look that found nothing to do).
 *
 * One collection cycle:
 *  1. pick up to MAX_BATCH sealed heap pages of which at least half the
 *     objects were unlinked, and all of those are dead (a hint the
 *     mutators keep on host-side page descriptors); mark them RELOCATING;
 *  2. ISOLATE: one smmu_mremap_batch_leave moves all of them, frames and
 *     all, to a from-space area only the collector uses - one gather, one
 *     shootdown for the whole batch - and in the same step leaves a
 *     tombstone where each page was: a PROT_NONE mapping whose fault
 *     handler forwards.  No access ever finds an old address unmapped.  When it returns, no mutator
 *     completes an access through the old addresses (RCU deferred mode:
 *     after each mutator's next quiescent state - the collector waits for
 *     every mutator's next safepoint, or for it to be seen blocked,
 *     before it reads the pages).  Whatever a mutator wrote before that
 *     is in the frames now in from-space; nothing it writes later can go
 *     there;
 *  3. (RCU deferred mode) wait for every mutator's next safepoint;
 *  4. EVACUATE: read each moved page through smmu_mm_translate, drop the
 *     dead objects, copy the live ones densely into fresh staging pages
 *     (mapped, populated and written by the collector only) and record
 *     each object's new address in the page's forwarding table: the
 *     to-space addresses are fresh heap addresses, unused until now;
 *  5. PUBLISH: a second smmu_mremap_batch moves the staging pages to
 *     their to-space addresses, then the from-pages become RELOCATED
 *     (release; waiters are woken);
 *  6. smmu_munmap the from-space: its frames go back to the pool.
 * Why move the pages out rather than mprotect them: the move cuts off all
 * k pages in one shootdown *and* hands the collector their frames at
 * addresses no mutator holds, where it can read them while every mutator
 * access to the old address faults.  From-space and staging each keep
 * one anchor page mapped in their page-table leaf, so that the munmap and
 * the publishing move never empty (and so never free) that leaf: freeing
 * a table page needs a shootdown of every CPU, while the entries those
 * calls remove were never in a mutator's TLB (a moved entry starts with
 * no CPU bits) and need none.
 * Old addresses are never reused and forwarding tables are kept for the
 * run: a stale reference may sit in any slot for any time and still
 * resolves (ZGC frees them after the next mark has remapped every
 * reference; this example does not mark, so it keeps them).
 *
 * Forwarding, and why no write is lost.  Every mutator access to an
 * object is a smmu_try_load64 / smmu_try_store64 at object + field:
 *  - the page is in the heap and not moved: the access completes;
 *  - the page was isolated and its tombstone is in place: the access
 *    faults (the tombstone has no frame: the handler sees -EFAULT), the
 *    library runs the tombstone's handler on the
 *    mutator's thread, offline.  The handler waits until the page is
 *    RELOCATED, finds the object's new address in the forwarding table
 *    and returns -ESTALE; the try_ access returns it, and the mutator's
 *    barrier retries the access at the new address;
 *  - there is no moment in which the old address is not mapped: the
 *    isolating move leaves the tombstone in the same step, so an access
 *    that returns -EFAULT is a bug, reported as one;
 *  - self-healing: having forwarded a reference it loaded from a slot,
 *    the barrier replaces it there with smmu_try_cmpxchg64(slot, old,
 *    new), so later loads find the new address directly.  A lost race
 *    (the owner unlinked meanwhile) leaves the slot alone; if the slot's
 *    own page has moved meanwhile, the tombstone's handler runs and the
 *    cmpxchg returns -ESTALE: the heal is skipped, it is only an
 *    optimisation.
 * No copy races a write: the copy (4) starts after the isolating move
 * (2) has cut every mutator off the old addresses, so every write through
 * an old address happened before and is in the frame that is copied, and
 * every later one faults and is redone at the new address, which exists
 * (5) before any faulting access is let through.  The same holds for the
 * unlink stamps, which live in the objects: the collector decides who is
 * dead from the frames it copies.  Refs that the owner itself stores stay
 * valid whether or not they are stale.  Publication order: the to-space
 * contents are written before the publishing mremap, which stores each
 * destination page-table entry with release; a mutator's first access to
 * a to-space page walks that entry (an acquire load), so it sees the
 * copy however it got the address - through the forwarding table (written
 * before the RELOCATED store, release, which the forwarder reads with
 * acquire) or through a healed slot, which it read with a plain relaxed
 * guest load (the access API has no acquire load).  New objects are
 * published the same way: initialised, then linked.
 *
 * Never blocking inside an access: the handler runs outside the access
 * (the library puts the CPU offline for it), the allocation throttle
 * goes offline itself, and nothing the collector
 * waits for waits for a mutator that waits for the collector: shootdowns
 * and grace periods skip offline CPUs, and the deferred-mode safepoint
 * wait counts a mutator seen blocked as passed (it makes no access while
 * blocked, and comes back online - which drops stale entries - before it
 * makes one).
 *
 * Pauses: for every access that faulted on a moved object, the time from
 * its first fault (handler entry) to the completion of
 * the retried access at the new address - waiting for the relocation,
 * forwarding, healing; and the time blocked in the allocation throttle
 * (the pool is low: waiting for the collector).  The library's own slow
 * path before the handler (a TLB miss, a walk) and shootdown signals
 * handled meanwhile are not in it.
 * Relocation throughput: live bytes evacuated per second of relocation
 * (from the isolating mremap to the from-space munmap; wall time, and the
 * collector thread's CPU time, which a crowded machine inflates less),
 * and the bytes of pages moved by smmu_mremap_batch per second spent in
 * it.  Both are small per cycle (a sparse page holds little live data)
 * and dominated by the two shootdowns a cycle costs.
 *
 * usage: example-gc_compact [--seconds S] [--mutators N]
 *                            [--mode signal|rcu|rcu-deferred] [--seed N]
 * Exit status 0 if the graph is intact, 1 if not (or on an error).
 */
#define _GNU_SOURCE
#include <softmmu/softmmu.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(call)                                                                                              \
	do {                                                                                                     \
		int err_ = (call);                                                                               \
		if (err_) {                                                                                      \
			fprintf(stderr, "%s failed: %d (%s)\n", #call, err_, strerror(err_ < 0 ? -err_ : err_)); \
			exit(1);                                                                                 \
		}                                                                                                \
	} while (0)

#define PAGE 4096u
#define OBJ 64u
#define SLOTS (PAGE / OBJ)
#define RW (SMMU_PROT_READ | SMMU_PROT_WRITE)

/* Object fields (byte offsets). */
#define F_HDR 0u
#define F_RETIRE 8u
#define F_NEXT 16u
#define F_PAY 24u
#define NPAY 4
#define F_CHECK 56u
#define MAGIC 0xc0deull

#define NLISTS 16
#define TARGET 2048 /* linked objects a mutator keeps, about */
#define MAX_MUTATORS 16
#define MAX_BATCH 64 /* pages isolated per cycle */

/* The address-space layout. */
#define ROOTS_BASE ((smmu_addr_t)0x10000000) /* a root page per mutator */
#define FROM_BASE ((smmu_addr_t)0x20000000)  /* from-space: isolated pages, collector only (2 MiB) */
#define STAGE_BASE ((smmu_addr_t)0x30000000) /* staging: to-space being filled, collector only (2 MiB) */
#define HEAP_BASE ((smmu_addr_t)0x100000000) /* heap pages, never reused */
#define MAX_PAGES (1u << 20)                 /* 4 GiB of heap addresses */
#define COLL_RESERVE (4u * MAX_BATCH)        /* heap pages mutators leave for to-space */

enum page_state { PG_TLAB = 1, PG_FULL, PG_RELOCATING, PG_RELOCATED };

/* Host-side descriptor of a heap page. */
struct pdesc {
	_Atomic int state;           /* enum page_state */
	unsigned nalloc;             /* objects in it; Sync: written before state FULL (release) */
	_Atomic unsigned nretired;   /* unlinks seen on it (estimate) */
	_Atomic uint64_t last_stamp; /* the highest stamp among them */
	smmu_addr_t *fwd;            /* per slot, new address or 0 (dead); Sync: before RELOCATED (release) */
};

struct mutator {
	unsigned id;
	struct smmu_cpu *cpu;
	uint64_t rng;
	smmu_addr_t roots; /* NLISTS head slots */
	size_t count[NLISTS];
	size_t total;
	uint64_t sum; /* of the check words of its linked objects */
	uint64_t serial;
	smmu_addr_t tlab;
	unsigned tlab_used;
	bool out_of_va;
	/* What the collector reads. */
	_Atomic uint64_t epoch; /* announced at each safepoint */
	_Atomic uint64_t qs;    /* safepoints passed */
	_Atomic int blocked;    /* in the handler or a wait: makes no access */
	_Atomic int done;
	/* Forwarding. */
	smmu_addr_t fwd_to; /* the handler's answer: new address of the faulting byte */
	uint64_t fault_t0;  /* when the access in progress first faulted, or 0 */
	/* Counts. */
	uint64_t ops, allocs, unlinks, mutates, reads, handler_calls, heals, heal_races, heals_skipped, throttles;
	uint64_t *pauses;
	size_t npauses, cap_pauses;
	uint64_t pause_max;
};

static struct smmu_pool *pool;
static struct smmu_mm *mm;
static enum smmu_shootdown_mode mode;
static _Atomic(struct pdesc *) *pds;
static _Atomic uint64_t next_page;
static _Atomic uint64_t g_epoch = 1;
static atomic_bool stop;
static atomic_ulong violations;
static struct mutator muts[MAX_MUTATORS + 1]; /* + the checker */
static unsigned nmut;
static _Thread_local struct mutator *self;
static size_t pool_frames;

/* Waiting for the collector: relocations and free frames. */
static pthread_mutex_t gc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gc_cond = PTHREAD_COND_INITIALIZER;
/* Threads waiting on gc_cond; the collector broadcasts only if there are
 * any.  A waiter counts itself (seq_cst) before it checks the state, the
 * collector stores the state (seq_cst) before it reads the count: one of
 * the two sees the other. */
static _Atomic unsigned gc_waiters;

static void wake_waiters(void)
{
	if (!atomic_load(&gc_waiters))
		return;
	pthread_mutex_lock(&gc_lock);
	pthread_cond_broadcast(&gc_cond);
	pthread_mutex_unlock(&gc_lock);
}

/* Collector counts (collector thread only; read after join). */
static struct {
	uint64_t cycles, pages_isolated, to_pages, objs_copied, objs_dropped;
	uint64_t reloc_ns, reloc_cpu_ns, mremap_ns, mremap_calls, mremap_pages, qs_wait_ns;
} coll;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t mix(uint64_t h, const uint64_t *pay)
{
	uint64_t s = h;
	for (int i = 0; i < NPAY; i++) {
		uint64_t t = s ^ pay[i];
		s = splitmix(&t);
	}
	return s;
}

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
	if (atomic_fetch_add(&violations, 1) < 10) {
		va_list ap;
		va_start(ap, fmt);
		fputs("VIOLATION: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		va_end(ap);
	}
}

/* A violation after which the access cannot go on. */
static _Noreturn void fatal(const char *what, smmu_addr_t a)
{
	violation("%s (address 0x%" PRIx64 ")", what, a);
	fflush(stderr);
	exit(1);
}

static struct pdesc *pdesc_of(smmu_addr_t a)
{
	if (a < HEAP_BASE || a >= HEAP_BASE + (smmu_addr_t)MAX_PAGES * PAGE)
		return NULL;
	return atomic_load_explicit(&pds[(a - HEAP_BASE) / PAGE], memory_order_acquire);
}

static void record_pause(struct mutator *m, uint64_t ns)
{
	if (m->npauses < m->cap_pauses)
		m->pauses[m->npauses++] = ns;
	if (ns > m->pause_max)
		m->pause_max = ns;
}

/* ------------------------------------------------------------ forwarding */

/* Wait (the caller is offline) until the page is RELOCATED. */
static void wait_relocated(struct pdesc *pd)
{
	if (atomic_load_explicit(&pd->state, memory_order_acquire) == PG_RELOCATED)
		return;
	pthread_mutex_lock(&gc_lock);
	atomic_fetch_add(&gc_waiters, 1);
	while (atomic_load(&pd->state) != PG_RELOCATED)
		pthread_cond_wait(&gc_cond, &gc_lock);
	atomic_fetch_sub(&gc_waiters, 1);
	pthread_mutex_unlock(&gc_lock);
}

/* The new address of the byte at a, in a RELOCATED page. */
static smmu_addr_t forward(smmu_addr_t a)
{
	struct pdesc *pd = pdesc_of(a);
	smmu_addr_t n = pd->fwd[(a % PAGE) / OBJ];
	if (!n)
		fatal("an access reached an object the collector found dead", a);
	return n + a % OBJ;
}

/*
 * The tombstones' fault handler: runs on the faulting mutator's thread,
 * outside the access and offline.  Waits for the page's relocation, finds
 * the new location and fails the access with -ESTALE; the barrier retries
 * there.
 */
static int tombstone_fault(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	struct mutator *m = self;
	struct pdesc *pd = pdesc_of(f->addr);
	(void)cpu;
	(void)arg;
	if (!m || !pd)
		return -EFAULT;
	int st = atomic_load_explicit(&pd->state, memory_order_acquire);
	if (st != PG_RELOCATING && st != PG_RELOCATED)
		return -EFAULT; /* a tombstone over a live page: reported by the caller */
	if (!m->fault_t0)
		m->fault_t0 = now_ns();
	atomic_store(&m->blocked, 1);
	wait_relocated(pd);
	m->fwd_to = forward(f->addr);
	atomic_store(&m->blocked, 0);
	m->handler_calls++;
	return -ESTALE;
}

/* A heal fails when the slot's own page has moved (-ESTALE from its
 * tombstone): then it is skipped. */
static void heal(struct mutator *m, smmu_addr_t slot, smmu_addr_t old, smmu_addr_t new)
{
	uint64_t was;
	int err = smmu_try_cmpxchg64(m->cpu, slot, old, new, &was);
	if (err == -ESTALE)
		m->heals_skipped++;
	else if (err)
		fatal("heal failed", slot);
	else if (was == old)
		m->heals++;
	else
		m->heal_races++;
}

/* The access at *obj + off failed with err: find where the object went,
 * heal the slot it was loaded from (0: none), and update *obj. */
static void follow(struct mutator *m, smmu_addr_t *obj, smmu_addr_t slot, unsigned off, int err)
{
	smmu_addr_t old = *obj, to;
	if (err == -ESTALE)
		to = m->fwd_to - off;
	else /* -EFAULT too: the isolating move leaves the tombstone in the same step */
		fatal("access failed", old + off);
	if (slot)
		heal(m, slot, old, to);
	*obj = to;
}

/* An access that faulted has completed at the forwarded address: its
 * pause ran from the first fault (handler entry) to here. */
static void access_done(struct mutator *m)
{
	record_pause(m, now_ns() - m->fault_t0);
	m->fault_t0 = 0;
}

/* Load / store a field of the object *obj (loaded from slot), following it
 * wherever it has moved. */
static uint64_t ld(struct mutator *m, smmu_addr_t *obj, smmu_addr_t slot, unsigned off)
{
	uint64_t v;
	int err;
	while ((err = smmu_try_load64(m->cpu, *obj + off, &v)) != 0)
		follow(m, obj, slot, off, err);
	if (m->fault_t0)
		access_done(m);
	return v;
}

static void st(struct mutator *m, smmu_addr_t *obj, smmu_addr_t slot, unsigned off, uint64_t v)
{
	int err;
	while ((err = smmu_try_store64(m->cpu, *obj + off, v)) != 0)
		follow(m, obj, slot, off, err);
	if (m->fault_t0)
		access_done(m);
}

/* ------------------------------------------------------------ mutators */

static void safepoint(struct mutator *m)
{
	if (mode != SMMU_SHOOTDOWN_SIGNAL)
		CHECK(smmu_quiescent(m->cpu));
	atomic_store(&m->epoch, atomic_load(&g_epoch));
	atomic_fetch_add(&m->qs, 1);
}

/* Wait, offline, while the pool is low (the collector is behind). */
static void throttle(struct mutator *m)
{
	if (smmu_pool_free_frames(pool) >= pool_frames / 4)
		return;
	uint64_t t0 = now_ns();
	CHECK(smmu_cpu_offline(m->cpu));
	atomic_store(&m->blocked, 1);
	pthread_mutex_lock(&gc_lock);
	atomic_fetch_add(&gc_waiters, 1);
	while (!atomic_load(&stop) && smmu_pool_free_frames(pool) < pool_frames / 3) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 2000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&gc_cond, &gc_lock, &ts);
	}
	atomic_fetch_sub(&gc_waiters, 1);
	pthread_mutex_unlock(&gc_lock);
	atomic_store(&m->blocked, 0);
	CHECK(smmu_cpu_online(m->cpu));
	m->throttles++;
	record_pause(m, now_ns() - t0);
}

static void seal_tlab(struct mutator *m)
{
	if (!m->tlab)
		return;
	struct pdesc *pd = pdesc_of(m->tlab);
	pd->nalloc = m->tlab_used;
	atomic_store_explicit(&pd->state, PG_FULL, memory_order_release);
	m->tlab = 0;
}

static bool new_tlab(struct mutator *m)
{
	seal_tlab(m);
	if (m->out_of_va)
		return false;
	throttle(m);
	uint64_t idx = atomic_fetch_add(&next_page, 1);
	if (idx >= MAX_PAGES - COLL_RESERVE) {
		m->out_of_va = true;
		return false;
	}
	struct pdesc *pd = calloc(1, sizeof(*pd));
	if (!pd)
		fatal("out of memory", 0);
	atomic_init(&pd->state, PG_TLAB);
	atomic_store_explicit(&pds[idx], pd, memory_order_release);
	smmu_addr_t a = HEAP_BASE + idx * PAGE, got;
	CHECK(smmu_mmap(mm, a, PAGE, RW, SMMU_MAP_FIXED_NOREPLACE, &got));
	m->tlab = a;
	m->tlab_used = 0;
	return true;
}

static void new_payload(struct mutator *m, uint64_t *pay)
{
	for (int i = 0; i < NPAY; i++)
		pay[i] = splitmix(&m->rng);
}

static void op_alloc(struct mutator *m)
{
	if ((!m->tlab || m->tlab_used == SLOTS) && !new_tlab(m))
		return;
	smmu_addr_t obj = m->tlab + (smmu_addr_t)m->tlab_used++ * OBJ;
	unsigned L = (unsigned)(splitmix(&m->rng) % NLISTS);
	smmu_addr_t root = m->roots + L * 8u;
	uint64_t w[OBJ / 8];
	w[0] = MAGIC << 48 | (uint64_t)m->id << 40 | (++m->serial & 0xffffffffffull);
	w[1] = 0;
	w[2] = smmu_load64(m->cpu, root); /* may be a stale reference: fine */
	new_payload(m, &w[3]);
	w[7] = mix(w[0], &w[3]);
	/* Word by word (a TLAB page is never moved): every access to an object
	 * is an aligned 64-bit one, relaxed-atomic in the library, so
	 * unsynchronised readers on other CPUs race with nothing. */
	for (unsigned i = 0; i < OBJ / 8; i++)
		smmu_store64(m->cpu, obj + 8 * i, w[i]);
	smmu_store64(m->cpu, root, obj);
	m->count[L]++;
	m->total++;
	m->sum += w[7];
	m->allocs++;
}

/* The owner's full check of one of its linked objects; returns its check word. */
static uint64_t verify_own(struct mutator *m, smmu_addr_t *obj, smmu_addr_t slot)
{
	uint64_t hdr = ld(m, obj, slot, F_HDR), pay[NPAY], chk;
	if (hdr >> 48 != MAGIC || ((hdr >> 40) & 0xff) != m->id)
		violation("mutator %u: bad header 0x%016" PRIx64 " at 0x%" PRIx64, m->id, hdr, *obj);
	if (ld(m, obj, slot, F_RETIRE) != 0)
		violation("mutator %u: a linked object is marked unlinked at 0x%" PRIx64, m->id, *obj);
	for (int i = 0; i < NPAY; i++)
		pay[i] = ld(m, obj, slot, F_PAY + 8u * (unsigned)i);
	chk = ld(m, obj, slot, F_CHECK);
	if (chk != mix(hdr, pay))
		violation("mutator %u: check word does not match the payload at 0x%" PRIx64 " (lost write?)", m->id,
			  *obj);
	return chk;
}

/* Walk list L to position pos: *cur is the object there, *slot where its
 * reference was loaded from, *prev the object before (0: the root slot)
 * and *prev_slot where that one's reference was loaded from. */
static void walk_own(struct mutator *m, unsigned L, size_t pos, smmu_addr_t *cur, smmu_addr_t *slot, smmu_addr_t *prev,
		     smmu_addr_t *prev_slot)
{
	*slot = m->roots + L * 8u;
	*cur = smmu_load64(m->cpu, *slot);
	*prev = *prev_slot = 0;
	for (size_t i = 0; i < pos; i++) {
		if (!*cur)
			fatal("a list is shorter than its owner counted", m->roots + L * 8u);
		uint64_t next = ld(m, cur, *slot, F_NEXT);
		*prev = *cur;
		*prev_slot = *slot;
		*slot = *cur + F_NEXT;
		*cur = next;
	}
	if (!*cur)
		fatal("a list is shorter than its owner counted", m->roots + L * 8u);
}

static int pick_list(struct mutator *m)
{
	for (int tries = 0; tries < 4; tries++) {
		unsigned L = (unsigned)(splitmix(&m->rng) % NLISTS);
		if (m->count[L])
			return (int)L;
	}
	return -1;
}

static void op_mutate(struct mutator *m)
{
	int L = pick_list(m);
	if (L < 0)
		return;
	smmu_addr_t cur, slot, prev, prev_slot;
	walk_own(m, (unsigned)L, splitmix(&m->rng) % m->count[L], &cur, &slot, &prev, &prev_slot);
	uint64_t old = verify_own(m, &cur, slot), pay[NPAY];
	uint64_t hdr = ld(m, &cur, slot, F_HDR);
	new_payload(m, pay);
	for (int i = 0; i < NPAY; i++)
		st(m, &cur, slot, F_PAY + 8u * (unsigned)i, pay[i]);
	uint64_t chk = mix(hdr, pay);
	st(m, &cur, slot, F_CHECK, chk);
	m->sum += chk - old;
	m->mutates++;
}

/* The collector's hint: an unlink on the page, stamped stamp. */
static void count_unlink(struct pdesc *pd, uint64_t stamp)
{
	uint64_t last = atomic_load_explicit(&pd->last_stamp, memory_order_relaxed);
	while (last < stamp && !atomic_compare_exchange_weak_explicit(&pd->last_stamp, &last, stamp,
								      memory_order_relaxed, memory_order_relaxed))
		;
	atomic_fetch_add_explicit(&pd->nretired, 1, memory_order_relaxed);
}

static void op_unlink(struct mutator *m)
{
	int L = pick_list(m);
	if (L < 0)
		return;
	smmu_addr_t cur, slot, prev, prev_slot;
	walk_own(m, (unsigned)L, splitmix(&m->rng) % m->count[L], &cur, &slot, &prev, &prev_slot);
	uint64_t chk = verify_own(m, &cur, slot);
	uint64_t next = ld(m, &cur, slot, F_NEXT);
	if (!prev)
		smmu_store64(m->cpu, m->roots + (unsigned)L * 8u, next);
	else
		st(m, &prev, prev_slot, F_NEXT, next);
	/* The stamp is read after the unlink (the fence orders the two). */
	atomic_thread_fence(memory_order_seq_cst);
	uint64_t stamp = atomic_load(&g_epoch);
	st(m, &cur, 0, F_RETIRE, stamp);
	struct pdesc *pd = pdesc_of(cur);
	if (pd)
		count_unlink(pd, stamp);
	m->count[L]--;
	m->total--;
	m->sum -= chk;
	m->unlinks++;
}

/* Read a list of another mutator: headers must be its. */
static void op_read_other(struct mutator *m)
{
	unsigned j = (unsigned)(splitmix(&m->rng) % nmut), L = (unsigned)(splitmix(&m->rng) % NLISTS);
	smmu_addr_t slot = muts[j].roots + L * 8u, cur = smmu_load64(m->cpu, slot);
	for (int i = 0; cur && i < 4 * TARGET; i++) {
		uint64_t hdr = ld(m, &cur, slot, F_HDR);
		if (hdr >> 48 != MAGIC || ((hdr >> 40) & 0xff) != j)
			violation("mutator %u reading mutator %u's list: bad header 0x%016" PRIx64 " at 0x%" PRIx64,
				  m->id, j, hdr, cur);
		uint64_t next = ld(m, &cur, slot, F_NEXT);
		slot = cur + F_NEXT;
		cur = next;
	}
	m->reads++;
}

static void *mutator_main(void *arg)
{
	struct mutator *m = arg;
	m->cpu = smmu_cpu_self();
	self = m;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		safepoint(m);
		unsigned r = (unsigned)(splitmix(&m->rng) % 100);
		if (r < 25)
			m->total < TARGET ? op_alloc(m) : op_unlink(m);
		else if (r < 45)
			m->total > TARGET / 2 ? op_unlink(m) : op_alloc(m);
		else if (r < 80)
			op_mutate(m);
		else
			op_read_other(m);
		m->ops++;
	}
	seal_tlab(m);
	atomic_store(&m->done, 1);
	return NULL;
}

/* ------------------------------------------------------------ collector */

/* RCU deferred: mutators may use the old translations until their next
 * quiescent state; wait until each has passed a safepoint, or is seen
 * blocked (offline, no access), or has finished. */
static void wait_safepoints(void)
{
	uint64_t t0 = now_ns(), snap[MAX_MUTATORS];
	for (unsigned i = 0; i < nmut; i++)
		snap[i] = atomic_load(&muts[i].qs);
	for (unsigned i = 0; i < nmut; i++)
		while (atomic_load(&muts[i].qs) == snap[i] && !atomic_load(&muts[i].blocked) &&
		       !atomic_load(&muts[i].done))
			sched_yield();
	coll.qs_wait_ns += now_ns() - t0;
}

static int cmp_addr(const void *a, const void *b)
{
	smmu_addr_t x = *(const smmu_addr_t *)a, y = *(const smmu_addr_t *)b;
	return (x > y) - (x < y);
}

/* leave: what to map at the sources in the same step, or NULL */
static void timed_mremap_batch(const struct smmu_remap *mv, size_t n, size_t pages,
			       const struct smmu_remap_leave *leave)
{
	uint64_t t0 = now_ns();
	CHECK(leave ? smmu_mremap_batch_leave(mm, mv, n, leave) : smmu_mremap_batch(mm, mv, n));
	coll.mremap_ns += now_ns() - t0;
	coll.mremap_calls++;
	coll.mremap_pages += pages;
}

/* The lowest epoch announced by a running mutator: objects stamped below
 * it are dead. */
static uint64_t min_announced(void)
{
	uint64_t min = UINT64_MAX;
	for (unsigned i = 0; i < nmut; i++) {
		if (atomic_load(&muts[i].done))
			continue;
		uint64_t e = atomic_load(&muts[i].epoch);
		if (e < min)
			min = e;
	}
	return min;
}

static uint64_t scan_cursor;

/* One cycle; false if there was nothing to do. */
static bool collect_once(void)
{
	smmu_addr_t cand[MAX_BATCH];
	struct pdesc *cpd[MAX_BATCH];
	size_t k = 0;
	uint64_t np = atomic_load(&next_page);
	if (np > MAX_PAGES - COLL_RESERVE / 2)
		return false; /* no to-space addresses left */

	/* A new epoch: by the next call the mutators will have announced it,
	 * and what they unlinked until now will be dead. */
	atomic_fetch_add(&g_epoch, 1);

	/* 1. pick, going round the heap */
	uint64_t base = scan_cursor, dead_below = min_announced();
	for (uint64_t n = 0; n < np && k < MAX_BATCH; n++) {
		uint64_t i = (base + n) % np;
		struct pdesc *pd = atomic_load_explicit(&pds[i], memory_order_acquire);
		if (!pd || atomic_load_explicit(&pd->state, memory_order_acquire) != PG_FULL)
			continue;
		/* at least half of its objects unlinked, all of those dead */
		unsigned ret = atomic_load_explicit(&pd->nretired, memory_order_relaxed);
		if (!ret || 2 * ret < pd->nalloc ||
		    atomic_load_explicit(&pd->last_stamp, memory_order_relaxed) >= dead_below)
			continue;
		cand[k++] = HEAP_BASE + i * PAGE;
		scan_cursor = i + 1;
	}
	if (!k)
		return false;
	qsort(cand, k, sizeof(cand[0]), cmp_addr);
	for (size_t i = 0; i < k; i++) {
		cpd[i] = pdesc_of(cand[i]);
		atomic_store(&cpd[i]->state, PG_RELOCATING);
	}
	uint64_t t0 = now_ns(), c0 = thread_cpu_ns();

	/* 2. isolate: every page in one batch, a tombstone left at each */
	struct smmu_remap mv[MAX_BATCH];
	for (size_t i = 0; i < k; i++)
		mv[i] = (struct smmu_remap){.from = cand[i], .to = FROM_BASE + i * PAGE, .len = PAGE};
	const struct smmu_remap_leave tomb = {.prot = SMMU_PROT_NONE, .handler = tombstone_fault};
	timed_mremap_batch(mv, k, k, &tomb);

	/* 3. */
	if (mode == SMMU_SHOOTDOWN_RCU_DEFERRED)
		wait_safepoints();

	/* 4. evacuate: who is dead is decided from the isolated frames */
	uint64_t min_ann = min_announced();
	const _Atomic uint64_t *src[MAX_BATCH];
	size_t live = 0;
	for (size_t i = 0; i < k; i++) {
		void *h;
		CHECK(smmu_mm_translate(mm, FROM_BASE + i * PAGE, SMMU_PROT_READ, &h));
		src[i] = h;
		cpd[i]->fwd = calloc(SLOTS, sizeof(smmu_addr_t));
		if (!cpd[i]->fwd)
			fatal("out of memory", 0);
		for (unsigned s = 0; s < cpd[i]->nalloc; s++) {
			uint64_t ret =
				atomic_load_explicit(&src[i][s * (OBJ / 8) + F_RETIRE / 8], memory_order_relaxed);
			if (!ret || ret >= min_ann) {
				cpd[i]->fwd[s] = 1; /* live: address below */
				live++;
			}
		}
	}
	size_t nto = (live + SLOTS - 1) / SLOTS;
	smmu_addr_t to = 0;
	_Atomic uint64_t *dst[MAX_BATCH];
	struct pdesc *tpd[MAX_BATCH];
	if (nto) {
		smmu_addr_t got;
		CHECK(smmu_mmap(mm, STAGE_BASE, nto * PAGE, RW, SMMU_MAP_FIXED_NOREPLACE | SMMU_MAP_POPULATE, &got));
		uint64_t idx = atomic_fetch_add(&next_page, nto);
		to = HEAP_BASE + idx * PAGE;
		for (size_t j = 0; j < nto; j++) {
			void *h;
			CHECK(smmu_mm_translate(mm, STAGE_BASE + j * PAGE, RW, &h));
			dst[j] = h;
			tpd[j] = calloc(1, sizeof(*tpd[j]));
			if (!tpd[j])
				fatal("out of memory", 0);
		}
	}
	size_t out = 0;
	for (size_t i = 0; i < k; i++) {
		for (unsigned s = 0; s < cpd[i]->nalloc; s++) {
			if (!cpd[i]->fwd[s]) {
				coll.objs_dropped++;
				continue;
			}
			size_t j = out / SLOTS, d = out % SLOTS;
			const _Atomic uint64_t *o = &src[i][s * (OBJ / 8)];
			_Atomic uint64_t *n = &dst[j][d * (OBJ / 8)];
			uint64_t hdr = atomic_load_explicit(&o[0], memory_order_relaxed);
			if (hdr >> 48 != MAGIC)
				violation("collector: slot %u of page 0x%" PRIx64 " holds no object (0x%016" PRIx64 ")",
					  s, cand[i], hdr);
			for (unsigned w = 0; w < OBJ / 8; w++)
				atomic_store_explicit(&n[w], atomic_load_explicit(&o[w], memory_order_relaxed),
						      memory_order_relaxed);
			uint64_t stamp = atomic_load_explicit(&o[F_RETIRE / 8], memory_order_relaxed);
			if (stamp)
				count_unlink(tpd[j], stamp);
			tpd[j]->nalloc++;
			cpd[i]->fwd[s] = to + j * PAGE + d * OBJ;
			out++;
		}
	}
	coll.objs_copied += out;

	/* 5. publish: the staging pages move to their to-space addresses */
	if (nto) {
		struct smmu_remap pub = {.from = STAGE_BASE, .to = to, .len = nto * PAGE};
		timed_mremap_batch(&pub, 1, nto, NULL);
		for (size_t j = 0; j < nto; j++) {
			atomic_init(&tpd[j]->state, PG_FULL);
			atomic_store_explicit(&pds[(to - HEAP_BASE) / PAGE + j], tpd[j], memory_order_release);
		}
	}
	for (size_t i = 0; i < k; i++)
		atomic_store(&cpd[i]->state, PG_RELOCATED); /* seq_cst: see gc_waiters */
	wake_waiters();

	/* 6. from-space frames back to the pool */
	CHECK(smmu_munmap(mm, FROM_BASE, k * PAGE));
	coll.reloc_ns += now_ns() - t0;
	coll.reloc_cpu_ns += thread_cpu_ns() - c0;
	coll.cycles++;
	coll.pages_isolated += k;
	coll.to_pages += nto;
	wake_waiters(); /* throttled mutators: frames came back */
	return true;
}

static void *collector_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		if (!collect_once()) {
			struct timespec ts = {0, 200000};
			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

/* ------------------------------------------------------------ the check */

static struct {
	uint64_t objects;
	bool ok;
} check_result;

static void *checker_main(void *arg)
{
	struct mutator *m = arg;
	m->cpu = smmu_cpu_self();
	self = m;
	bool ok = true;
	for (unsigned j = 0; j < nmut; j++) {
		uint64_t sum = 0;
		size_t total = 0;
		for (unsigned L = 0; L < NLISTS; L++) {
			smmu_addr_t slot = muts[j].roots + L * 8u, cur = smmu_load64(m->cpu, slot);
			size_t n = 0;
			while (cur) {
				uint64_t hdr = ld(m, &cur, slot, F_HDR), pay[NPAY];
				if (hdr >> 48 != MAGIC || ((hdr >> 40) & 0xff) != j) {
					violation("check: bad header 0x%016" PRIx64 " at 0x%" PRIx64
						  " in mutator %u's list %u",
						  hdr, cur, j, L);
					ok = false;
					break;
				}
				if (ld(m, &cur, slot, F_RETIRE)) {
					violation("check: an unlinked object is in a list at 0x%" PRIx64, cur);
					ok = false;
				}
				for (int i = 0; i < NPAY; i++)
					pay[i] = ld(m, &cur, slot, F_PAY + 8u * (unsigned)i);
				uint64_t chk = ld(m, &cur, slot, F_CHECK);
				if (chk != mix(hdr, pay)) {
					violation("check: check word does not match the payload at 0x%" PRIx64, cur);
					ok = false;
				}
				struct pdesc *pd = pdesc_of(cur);
				if (!pd || atomic_load(&pd->state) >= PG_RELOCATING) {
					violation("check: 0x%" PRIx64 " is not in a heap page in use", cur);
					ok = false;
				}
				sum += chk;
				n++;
				if (n > muts[j].count[L]) {
					violation("check: mutator %u's list %u is longer than counted", j, L);
					ok = false;
					break;
				}
				uint64_t next = ld(m, &cur, slot, F_NEXT);
				slot = cur + F_NEXT;
				cur = next;
			}
			if (n != muts[j].count[L]) {
				violation("check: mutator %u's list %u has %zu objects, its owner counted %zu", j, L, n,
					  muts[j].count[L]);
				ok = false;
			}
			total += n;
		}
		if (sum != muts[j].sum) {
			violation("check: mutator %u's objects sum to 0x%016" PRIx64 ", it kept 0x%016" PRIx64, j, sum,
				  muts[j].sum);
			ok = false;
		}
		check_result.objects += total;
	}
	check_result.ok = ok;
	return NULL;
}

/* ------------------------------------------------------------ main */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: example-gc_compact [--seconds S] [--mutators N] [--mode signal|rcu|rcu-deferred] "
		   "[--seed N]\n");
}

int main(int argc, char **argv)
{
	double seconds = 2;
	unsigned long long seed = 1;
	const char *mode_name = "signal";
	nmut = 2;
	mode = SMMU_SHOOTDOWN_SIGNAL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		}
		if (!v) {
			usage(stderr);
			return 1;
		}
		i++;
		if (!strcmp(a, "--seconds")) {
			seconds = strtod(v, NULL);
		} else if (!strcmp(a, "--mutators")) {
			nmut = (unsigned)strtoul(v, NULL, 10);
		} else if (!strcmp(a, "--seed")) {
			seed = strtoull(v, NULL, 0);
		} else if (!strcmp(a, "--mode")) {
			mode_name = v;
			if (!strcmp(v, "signal"))
				mode = SMMU_SHOOTDOWN_SIGNAL;
			else if (!strcmp(v, "rcu"))
				mode = SMMU_SHOOTDOWN_RCU;
			else if (!strcmp(v, "rcu-deferred"))
				mode = SMMU_SHOOTDOWN_RCU_DEFERRED;
			else {
				usage(stderr);
				return 1;
			}
		} else {
			usage(stderr);
			return 1;
		}
	}
	if (nmut < 1 || nmut > MAX_MUTATORS || !(seconds > 0)) {
		usage(stderr);
		return 1;
	}

	struct smmu_pool_config pc = {.size = 32u << 20, .flags = SMMU_POOL_POISON};
	CHECK(smmu_pool_create(&pc, &pool));
	pool_frames = smmu_pool_frames(pool);
	struct smmu_mm_config mc = {.mode = mode};
	CHECK(smmu_mm_create_ex(pool, &mc, &mm));
	pds = calloc(MAX_PAGES, sizeof(*pds));
	if (!pds)
		fatal("out of memory", 0);
	for (unsigned i = 0; i <= nmut; i++) {
		struct mutator *m = &muts[i];
		smmu_addr_t got;
		m->id = i;
		m->rng = seed * 0x100000001b3ull + i;
		m->roots = ROOTS_BASE + (smmu_addr_t)i * PAGE;
		CHECK(smmu_mmap(mm, m->roots, PAGE, RW, SMMU_MAP_FIXED_NOREPLACE | SMMU_MAP_POPULATE, &got));
		m->cap_pauses = 1u << 18;
		m->pauses = malloc(m->cap_pauses * sizeof(uint64_t));
		if (!m->pauses)
			fatal("out of memory", 0);
	}

	/*
	 * An anchor page in each of the from-space's and the staging area's
	 * page-table leaves: a leaf left empty would be freed by each
	 * cycle's munmap / publishing move, and a table page is freed only
	 * after a shootdown of every CPU (any of them may be walking it).
	 * The pages those calls remove have never been in a mutator's TLB
	 * at those addresses (a moved entry carries no CPU bits), so with
	 * the leaves kept they need no signal.
	 */
	smmu_addr_t anchor;
	CHECK(smmu_mmap(mm, FROM_BASE + (1u << 20), PAGE, RW, SMMU_MAP_FIXED_NOREPLACE | SMMU_MAP_POPULATE, &anchor));
	CHECK(smmu_mmap(mm, STAGE_BASE + (1u << 20), PAGE, RW, SMMU_MAP_FIXED_NOREPLACE | SMMU_MAP_POPULATE, &anchor));

	pthread_t mt[MAX_MUTATORS], ct, kt;
	uint64_t t_start = now_ns();
	for (unsigned i = 0; i < nmut; i++)
		CHECK(smmu_thread_create(&mt[i], NULL, mm, mutator_main, &muts[i]));
	if (pthread_create(&ct, NULL, collector_main, NULL))
		fatal("pthread_create", 0);
	struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	atomic_store(&stop, true);
	for (unsigned i = 0; i < nmut; i++)
		CHECK(smmu_thread_join(mt[i], NULL));
	pthread_join(ct, NULL);
	double wall = (double)(now_ns() - t_start) / 1e9;

	/* The check, on a CPU of its own. */
	CHECK(smmu_thread_create(&kt, NULL, mm, checker_main, &muts[nmut]));
	CHECK(smmu_thread_join(kt, NULL));

	/* Report. */
	struct smmu_stats sst;
	CHECK(smmu_stats_get(mm, &sst));
	uint64_t ops = 0, allocs = 0, unlinks = 0, mutates = 0, reads = 0, hcalls = 0, heals = 0, races = 0,
		 skipped = 0, throttles = 0, pmax = 0, live = 0;
	size_t np = 0;
	for (unsigned i = 0; i <= nmut; i++)
		np += muts[i].npauses;
	uint64_t *all = malloc((np ? np : 1) * sizeof(uint64_t));
	if (!all)
		fatal("out of memory", 0);
	np = 0;
	for (unsigned i = 0; i <= nmut; i++) {
		struct mutator *m = &muts[i];
		ops += m->ops;
		allocs += m->allocs;
		unlinks += m->unlinks;
		mutates += m->mutates;
		reads += m->reads;
		hcalls += m->handler_calls;
		heals += m->heals;
		races += m->heal_races;
		skipped += m->heals_skipped;
		throttles += m->throttles;
		live += m->total;
		if (i < nmut && m->pause_max > pmax)
			pmax = m->pause_max;
		if (i < nmut) {
			memcpy(all + np, m->pauses, m->npauses * sizeof(uint64_t));
			np += m->npauses;
		}
	}
	qsort(all, np, sizeof(uint64_t), cmp_u64);
	printf("gc_compact: mode %s, %u mutators, %.2f s, seed %llu\n", mode_name, nmut, wall, seed);
	printf("mutators:   %" PRIu64 " operations (%" PRIu64 " allocations, %" PRIu64 " unlinks, %" PRIu64
	       " mutations, %" PRIu64 " list reads), %" PRIu64 " objects linked at the end\n",
	       ops, allocs, unlinks, mutates, reads, live);
	printf("collector:  %" PRIu64 " cycles; %" PRIu64 " sparse pages isolated, %" PRIu64
	       " to-space pages published; %" PRIu64 " objects evacuated (%.2f MiB), %" PRIu64 " dead dropped\n",
	       coll.cycles, coll.pages_isolated, coll.to_pages, coll.objs_copied,
	       (double)coll.objs_copied * OBJ / 1048576.0, coll.objs_dropped);
	printf("relocation: %.3f GB/s evacuated (live bytes / relocation time %.1f ms; %.3f GB/s of collector CPU "
	       "time, %.1f ms); smmu_mremap_batch moved %" PRIu64 " pages at %.2f GB/s (%.1f us per batch)\n",
	       coll.reloc_ns ? (double)coll.objs_copied * OBJ / (double)coll.reloc_ns : 0.0,
	       (double)coll.reloc_ns / 1e6,
	       coll.reloc_cpu_ns ? (double)coll.objs_copied * OBJ / (double)coll.reloc_cpu_ns : 0.0,
	       (double)coll.reloc_cpu_ns / 1e6, coll.mremap_pages,
	       coll.mremap_ns ? (double)coll.mremap_pages * PAGE / (double)coll.mremap_ns : 0.0,
	       coll.mremap_calls ? (double)coll.mremap_ns / 1e3 / (double)coll.mremap_calls : 0.0);
	if (mode == SMMU_SHOOTDOWN_RCU_DEFERRED)
		printf("            waited %.1f ms for mutator safepoints before copying (deferred mode)\n",
		       (double)coll.qs_wait_ns / 1e6);
	printf("forwarding: %" PRIu64 " tombstone handler calls; heals %" PRIu64 " done, %" PRIu64 " raced, %" PRIu64
	       " skipped (slot moved)\n",
	       hcalls, heals, races, skipped);
	if (np)
		printf("pauses:     %zu (handler waits and %" PRIu64 " allocation throttles): p50 %.1f us, "
		       "p99 %.1f us, max %.1f us\n",
		       np, throttles, (double)all[np / 2] / 1e3, (double)all[np * 99 / 100] / 1e3, (double)pmax / 1e3);
	else
		printf("pauses:     none\n");
	printf("library:    shootdowns %" PRIu64 ", signals sent %" PRIu64 ", grace periods %" PRIu64
	       ", deferred frees %" PRIu64 ", faults handled %" PRIu64 ", demand-zero %" PRIu64 "\n",
	       sst.shootdowns, sst.signals_sent, sst.grace_periods, sst.deferred_frees, sst.faults_handled,
	       sst.faults_demand_zero);
	free(all);

	unsigned long v = atomic_load(&violations);
	bool ok = check_result.ok && v == 0;
	printf("integrity:  %s - %" PRIu64 " objects reachable, counts and checksums %s; %lu violations\n",
	       ok ? "OK" : "FAILED", check_result.objects, check_result.ok ? "match" : "DO NOT match", v);
	if (coll.cycles == 0)
		printf("note: the collector found nothing to relocate (run longer)\n");

	/* Teardown, leak-checked. */
	CHECK(smmu_munmap(mm, HEAP_BASE, (size_t)MAX_PAGES * PAGE));
	CHECK(smmu_munmap(mm, FROM_BASE, 2u << 20));
	CHECK(smmu_munmap(mm, STAGE_BASE, 2u << 20));
	CHECK(smmu_munmap(mm, ROOTS_BASE, (size_t)(nmut + 1) * PAGE));
	CHECK(smmu_mm_destroy(mm));
	if (smmu_pool_free_frames(pool) != pool_frames) {
		printf("frames leaked: %zu of %zu free\n", smmu_pool_free_frames(pool), pool_frames);
		ok = false;
	}
	CHECK(smmu_pool_destroy(pool));
	for (uint64_t i = 0; i < MAX_PAGES; i++) {
		struct pdesc *pd = atomic_load(&pds[i]);
		if (pd) {
			free(pd->fwd);
			free(pd);
		}
	}
	free(pds);
	for (unsigned i = 0; i <= nmut; i++)
		free(muts[i].pauses);
	return ok ? 0 : 1;
}
