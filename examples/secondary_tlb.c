/* SPDX-License-Identifier: MIT */
/*
 * secondary_tlb: an interpreter that caches host pointers into emulated
 * memory, kept coherent by an interval notifier.
 *
 * The interpreter thread is not a CPU of the address space: it does not go
 * through smmu_load64 on every access.  It keeps a small table (a
 * "secondary TLB") from an object's page to a host pointer into the frame
 * behind it, obtained once with smmu_mm_translate, and then reads the
 * object with a plain host load.  Such a pointer is only valid until the
 * page is unmapped or its protection changes, so the table subscribes to
 * the heap with ONE interval subscription and follows its protocol:
 *
 *   fill:        seq = smmu_interval_read_begin(sub)
 *                host = smmu_mm_translate(...)        (no lock held)
 *                lock(table)
 *                if smmu_interval_read_retry(sub, seq): unlock, start over
 *                install host; unlock
 *   invalidate:  lock(table); smmu_interval_set_seq(sub, cur_seq);
 *                drop the entries in the range; unlock; return true
 *   use:         read-lock(table); look up; dereference; unlock
 *
 * A collector thread (a CPU) meanwhile moves objects: it unmaps an
 * object's page and later maps a fresh one at the same address (writing a
 * new stamp into it), and now and then makes a page read-only and writable
 * again.  The pool poisons freed frames, so a dereference of a stale
 * pointer reads SMMU_POISON_BYTE, and every object holds a stamp
 * (generation, page index, tag) that the interpreter checks on every read.
 *
 * usage: example-secondary_tlb [--seconds S]     (default 2)
 * Prints the counts; exit status 1 if any read was wrong, else 0.
 */
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

#define CHECK(call)                                                                   \
	do {                                                                          \
		int err_ = (call);                                                    \
		if (err_) {                                                           \
			fprintf(stderr, "%s failed: %d\n", #call, err_);              \
			exit(1);                                                      \
		}                                                                     \
	} while (0)

#define NOBJ 16 /* objects, one page each */
#define NHOT 4  /* the interpreter mostly uses these (hits in its table) */
#define TAG 0xa5
#define POISON64 (0x0101010101010101ull * SMMU_POISON_BYTE)

static struct smmu_mm *mm;
static smmu_addr_t heap; /* NOBJ pages */
static size_t page;
static atomic_bool stop;

/* Highest generation of each object whose munmap has returned (written by
 * the collector after the call): the interpreter must never read it again. */
static _Atomic uint32_t dead_gen[NOBJ];

static uint64_t stamp(uint32_t gen, unsigned obj)
{
	return (uint64_t)gen << 32 | (uint64_t)obj << 8 | TAG;
}

static smmu_addr_t obj_addr(unsigned obj)
{
	return heap + (smmu_addr_t)obj * page;
}

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ------------------------------------------------------- the secondary TLB */

/*
 * Why every dereference of a cached pointer holds the lock (shared): the
 * library frees a frame only after the invalidate callback for its page has
 * returned, and the callback begins by taking the lock exclusively.  While
 * a use holds the lock, that callback waits; the munmap that called it
 * waits for the callback; the frame stays allocated, and the pointer found
 * in the table is still the page's current translation.  Copying the
 * pointer under the lock and dereferencing it after unlocking would lose
 * all of that: the frame could be freed (poisoned, or reused for another
 * page) in between.  The read_retry check covers the other side: a pointer
 * obtained before a change began is never installed.
 */
struct stlb {
	/* Uses take it shared; fills and invalidations take it exclusively.
	 * It is also the lock the protocol asks smmu_interval_read_retry
	 * to be called under. */
	pthread_rwlock_t lock;
	struct smmu_interval_notifier *sub;
	const _Atomic uint64_t *host[NOBJ]; /* Sync: lock.  NULL: not cached */
	unsigned long invalidations;        /* Sync: lock */
};

static struct stlb tlb = { .lock = PTHREAD_RWLOCK_INITIALIZER };

/* Counts of the interpreter thread (and violations, of anyone). */
static unsigned long lookups, hits, refills, retries, unmapped_misses;
static atomic_ulong violations;

/*
 * The invalidate callback.  The library calls it on the collector's thread
 * at the start of every munmap / mmap(FIXED) / mprotect that overlaps the
 * heap, while the page table still holds the old entries, and frees the
 * old frames only after it has returned.
 */
static bool invalidate(struct smmu_interval_notifier *sub, void *arg, const struct smmu_notify_range *r,
		       unsigned long cur_seq)
{
	struct stlb *t = arg;
	/* Every change in this program is blockable (none uses
	 * SMMU_OP_NONBLOCK), so waiting for the lock is allowed.  Waiting is
	 * the point: a use in progress holds the lock shared, and until it
	 * drops it this callback cannot return, so the change cannot go on to
	 * free the frame that use is reading. */
	pthread_rwlock_wrlock(&t->lock);
	/* Under the lock: a fill that has translated but not yet installed
	 * will see, in its read_retry, that it raced this change. */
	smmu_interval_set_seq(sub, cur_seq);
	for (unsigned i = 0; i < NOBJ; i++) {
		if (obj_addr(i) < r->end && obj_addr(i) + page > r->start)
			t->host[i] = NULL;
	}
	t->invalidations++;
	pthread_rwlock_unlock(&t->lock);
	return true;
}

static const struct smmu_interval_notifier_ops stlb_ops = { .invalidate = invalidate };

static void violation(const char *what, unsigned obj, uint64_t v)
{
	if (atomic_fetch_add(&violations, 1) < 10)
		fprintf(stderr, "VIOLATION: %s (object %u, value 0x%016" PRIx64 ")\n", what, obj, v);
}

/* Read object obj through a cached host pointer and check what it holds.
 * Called with the table lock held (either way), which is what keeps the
 * frame alive during the read. */
static void use(unsigned obj, const _Atomic uint64_t *host)
{
	/* Read before the object: a generation dead by now was dead before
	 * the read began. */
	uint32_t dead = atomic_load(&dead_gen[obj]);
	uint64_t v = atomic_load_explicit(host, memory_order_relaxed);
	if (v == POISON64)
		violation("read a freed (poisoned) frame", obj, v);
	else if (v == 0)
		; /* a fresh page whose stamp the collector has not written yet */
	else if ((v & 0xff) != TAG || ((v >> 8) & 0xffffff) != obj)
		violation("stamp of another object", obj, v);
	else if ((uint32_t)(v >> 32) <= dead)
		violation("read a generation whose munmap had returned", obj, v);
}

/* Miss: translate and install, following the protocol, then use. */
static void refill_and_use(unsigned obj)
{
	for (;;) {
		/* No table lock held from here to the wrlock below: read_begin
		 * waits for a change of the heap under way (its page-table
		 * entries may still be the old ones), translate takes the mm's
		 * lock, and such a change may be waiting in our callback for
		 * the table lock - holding it would deadlock. */
		unsigned long seq = smmu_interval_read_begin(tlb.sub);
		void *host;
		int err = smmu_mm_translate(mm, obj_addr(obj), SMMU_PROT_READ, &host);
		if (err) {
			/* -EFAULT: the collector is between munmap and mmap. */
			if (err != -EFAULT)
				CHECK(err);
			unmapped_misses++;
			return;
		}
		pthread_rwlock_wrlock(&tlb.lock);
		if (smmu_interval_read_retry(tlb.sub, seq)) {
			/* A change of the heap began after read_begin: host
			 * may point to a frame it is about to free. */
			pthread_rwlock_unlock(&tlb.lock);
			retries++;
			continue;
		}
		/* Valid, and stays valid until our callback removes it -
		 * which it cannot do while we hold the lock. */
		tlb.host[obj] = host;
		refills++;
		use(obj, host);
		pthread_rwlock_unlock(&tlb.lock);
		return;
	}
}

/* One "bytecode" of the interpreter: read an object. */
static void interpret_one(unsigned obj)
{
	lookups++;
	pthread_rwlock_rdlock(&tlb.lock);
	const _Atomic uint64_t *host = tlb.host[obj];
	if (host) {
		/* Dereferenced before unlocking (see struct stlb). */
		hits++;
		use(obj, host);
		pthread_rwlock_unlock(&tlb.lock);
		return;
	}
	pthread_rwlock_unlock(&tlb.lock);
	refill_and_use(obj);
}

static void *interpreter(void *arg)
{
	(void)arg;
	uint64_t seed = 0x9E3779B97F4A7C15ull;
	/* Not a CPU: a secondary TLB does not need one. */
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		/* Mostly the hot objects, sometimes any. */
		uint64_t x = rng(&seed);
		unsigned obj = (x & 7) ? (unsigned)(x >> 8) % NHOT : (unsigned)(x >> 8) % NOBJ;
		interpret_one(obj);
	}
	return NULL;
}

/* ------------------------------------------------------------- collector */

static void *collector(void *arg)
{
	(void)arg;
	uint64_t seed = 0xD1B54A32D192ED03ull;
	uint32_t gen[NOBJ], next_gen = 1;
	struct smmu_cpu *cpu;
	CHECK(smmu_cpu_register(mm, &cpu)); /* it writes stamps through a CPU */
	for (unsigned i = 0; i < NOBJ; i++) {
		gen[i] = next_gen++;
		smmu_store64(cpu, obj_addr(i), stamp(gen[i], i));
	}
	/* One object at a time is "away": unmapped, to be mapped again (in a
	 * new frame, with a new stamp) when the next one is moved out. */
	unsigned away = NOBJ; /* none yet */
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		unsigned obj = (unsigned)(rng(&seed) % NOBJ);
		smmu_addr_t a = obj_addr(obj);
		if (obj == away)
			continue;
		if (rng(&seed) % 4 == 0) {
			/* Protection changes invalidate too (the frame stays). */
			CHECK(smmu_mprotect(mm, a, page, SMMU_PROT_READ));
			CHECK(smmu_mprotect(mm, a, page, SMMU_PROT_READ | SMMU_PROT_WRITE));
			continue;
		}
		/* Move obj out: its frame goes back to the pool (and is
		 * poisoned) once every TLB, the secondary one included, has
		 * let go of it. */
		CHECK(smmu_munmap(mm, a, page));
		atomic_store(&dead_gen[obj], gen[obj]);
		if (away != NOBJ) {
			/* Bring the previous one back, most likely in the frame
			 * just freed: a stale pointer to obj would now read
			 * another object's stamp. */
			smmu_addr_t got;
			CHECK(smmu_mmap(mm, obj_addr(away), page, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got));
			gen[away] = next_gen++;
			smmu_store64(cpu, obj_addr(away), stamp(gen[away], away));
		}
		away = obj;
		/* No pause: the faster objects move, the more often a fill
		 * races a move - which is what the protocol is for. */
	}
	CHECK(smmu_cpu_unregister(cpu));
	return NULL;
}

int main(int argc, char **argv)
{
	double seconds = 2;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc && atof(argv[i + 1]) > 0) {
			seconds = atof(argv[++i]);
		} else {
			fprintf(stderr, "usage: %s [--seconds S]\n", argv[0]);
			return 2;
		}
	}

	/* A pool that poisons freed frames, so that a stale pointer reads
	 * poison rather than plausible data. */
	struct smmu_pool_config cfg = { .size = 256 * 4096, .flags = SMMU_POOL_POISON };
	struct smmu_pool *pool;
	CHECK(smmu_pool_create(&cfg, &pool));
	CHECK(smmu_mm_create(pool, &mm));
	page = smmu_mm_page_size(mm);
	CHECK(smmu_mmap(mm, 0, NOBJ * page, SMMU_PROT_READ | SMMU_PROT_WRITE, 0, &heap));

	/* One subscription for the whole heap, before anything is cached. */
	CHECK(smmu_interval_notifier_insert(mm, heap, NOBJ * page, &stlb_ops, &tlb, &tlb.sub));

	pthread_t ti, tc;
	pthread_create(&tc, NULL, collector, NULL);
	pthread_create(&ti, NULL, interpreter, NULL);
	struct timespec ts = { (time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9) };
	nanosleep(&ts, NULL);
	atomic_store(&stop, true);
	pthread_join(tc, NULL);
	pthread_join(ti, NULL);

	/* After remove returns no callback runs; the table is ours alone. */
	CHECK(smmu_interval_notifier_remove(tlb.sub));
	printf("secondary_tlb: %.1f s: lookups %lu, hits %lu, refills %lu (retried %lu, not mapped %lu), "
	       "invalidations %lu, violations %lu\n",
	       seconds, lookups, hits, refills, retries, unmapped_misses, tlb.invalidations, atomic_load(&violations));

	CHECK(smmu_munmap(mm, heap, NOBJ * page));
	CHECK(smmu_mm_destroy(mm));
	CHECK(smmu_pool_destroy(pool));
	return atomic_load(&violations) ? 1 : 0;
}
