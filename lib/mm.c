/* SPDX-License-Identifier: MIT */
/*
 * Address spaces: create/destroy, mmap/munmap/mprotect over the region set
 * and the page table, under the gather.  Lock order is in mm.h.
 *
 * Every operation validates all of its input and reserves whatever memory
 * it may need before it changes anything, so an error leaves the mm as it
 * was - POPULATE included: its frames and tables are taken first.
 */
#include "mm.h"

#include <errno.h>
#include <stdatomic.h>
#include <time.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "cpu.h"
#include "gather.h"
#include "pool.h"
#include "shootdown.h"
#include "stall.h"
#include "util.h"

int smmu__mm_check_live(const struct smmu_mm *mm)
{
	return mm && mm->magic == SMMU_MM_MAGIC;
}

SMMU_API size_t smmu_mm_page_size(const struct smmu_mm *mm)
{
	return smmu__mm_check_live(mm) ? mm->page_size : 0;
}

#if SMMU_TSAN
static void timed_lock(pthread_rwlock_t *l, int (*lock)(pthread_rwlock_t *, const struct timespec *))
{
	for (;;) {
		struct timespec ts = smmu__realtime_in(1000000);
		if (lock(l, &ts) == 0)
			return;
	}
}
#endif

/*
 * Block on mm->lock.  A CPU of an RCU-mode mm goes offline while it waits:
 * the holder may be waiting for a grace period, which an online reader
 * blocked here would never end.  Coming back, it catches up.
 */
static void lock_slow(struct smmu_mm *mm, bool write)
{
	struct smmu__cpu *c = smmu__cpu_self();
	bool reader = smmu__rcu_block_begin(c);
#if SMMU_TSAN
	timed_lock(&mm->lock, write ? pthread_rwlock_timedwrlock : pthread_rwlock_timedrdlock);
#else
	if (write)
		pthread_rwlock_wrlock(&mm->lock);
	else
		pthread_rwlock_rdlock(&mm->lock);
#endif
	if (reader)
		smmu__rcu_block_end(c);
}

void smmu__mm_rdlock(struct smmu_mm *mm)
{
	if (pthread_rwlock_tryrdlock(&mm->lock))
		lock_slow(mm, false);
}

void smmu__mm_wrlock(struct smmu_mm *mm)
{
	if (pthread_rwlock_trywrlock(&mm->lock))
		lock_slow(mm, true);
}

void smmu__flush_mm(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end, int full, uint32_t cpus)
{
	mm->sd->flush(mm, start, end, full, cpus);
}

SMMU_API int smmu_mm_create(struct smmu_pool *pool, struct smmu_mm **out)
{
	return smmu_mm_create_ex(pool, NULL, out);
}

SMMU_API int smmu_mm_create_ex(struct smmu_pool *pool, const struct smmu_mm_config *cfg, struct smmu_mm **out)
{
	static const struct smmu_mm_config defaults = { .mode = SMMU_SHOOTDOWN_SIGNAL };
	if (!cfg)
		cfg = &defaults;
	if (!smmu__pool_check_live(pool) || !out || (cfg->flags & ~(unsigned)SMMU_MM_APP_URCU))
		return -EINVAL;
	const struct smmu__shootdown_ops *sd;
	switch (cfg->mode) {
	case SMMU_SHOOTDOWN_SIGNAL:
		sd = &smmu__shootdown_signal;
		break;
	case SMMU_SHOOTDOWN_RCU:
		sd = &smmu__shootdown_rcu;
		break;
	case SMMU_SHOOTDOWN_RCU_DEFERRED:
		sd = &smmu__shootdown_rcu_deferred;
		break;
	default:
		return -EINVAL;
	}
	struct smmu_mm *mm = smmu__zalloc(sizeof(*mm));
	if (!mm)
		return -ENOMEM;
	mm->root = smmu__zalloc_aligned(SMMU_PT_TABLE_SIZE, SMMU_PT_TABLE_SIZE);
	if (!mm->root) {
		smmu__free(mm, sizeof(*mm));
		return -ENOMEM;
	}
	static _Atomic uint64_t next_serial = 1;
	mm->serial = atomic_fetch_add_explicit(&next_serial, 1, memory_order_relaxed);
	mm->pool = pool;
	mm->sd = sd;
	mm->mode = cfg->mode;
	mm->flags = cfg->flags;
	mm->deferred_max = cfg->deferred_max ? cfg->deferred_max : (pool->nframes + 3) / 4;
	mm->page_shift = pool->page_shift;
	mm->page_size = pool->page_size;
	mm->va_limit = 1ull << (pool->page_shift + SMMU_PT_LEVELS * SMMU_PT_ENTRY_BITS);
	mm->min_addr = SMMU_MM_MIN_ADDR > mm->page_size ? SMMU_MM_MIN_ADDR : mm->page_size;
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	/* Many faulting CPUs must not starve munmap. */
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&mm->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	pthread_mutex_init(&mm->cpus_lock, NULL);
	pthread_mutex_init(&mm->log_lock, NULL);
	smmu__regions_init(&mm->regions);
	int err = smmu__notify_init(mm);
	if (!err && cfg->mode != SMMU_SHOOTDOWN_SIGNAL) {
		err = smmu__watchdog_start(mm, cfg);
		if (err)
			smmu__notify_fini(mm);
	}
	if (err) {
		pthread_rwlock_destroy(&mm->lock);
		pthread_mutex_destroy(&mm->cpus_lock);
		pthread_mutex_destroy(&mm->log_lock);
		smmu__free(mm->root, SMMU_PT_TABLE_SIZE);
		smmu__free(mm, sizeof(*mm));
		return err;
	}
	smmu__pool_mm_attach(pool);
	mm->magic = SMMU_MM_MAGIC;
	*out = mm;
	return 0;
}

SMMU_API int smmu_mm_destroy(struct smmu_mm *mm)
{
	if (!smmu__mm_check_live(mm))
		return -EINVAL;
	pthread_mutex_lock(&mm->cpus_lock);
	if (mm->nr_cpus) {
		pthread_mutex_unlock(&mm->cpus_lock);
		return -EBUSY;
	}
	mm->magic = SMMU_DEAD_MAGIC;
	pthread_mutex_unlock(&mm->cpus_lock);

	/* Subscribers drop what they cache, once, before the frames go. */
	smmu__notify_release(mm);
	/* Whole-mm teardown: no CPU is left, so one pass and one flush. */
	struct smmu__gather g;
	smmu__gather_init(&g, mm, SMMU_GATHER_FULLMM);
	smmu__pt_zap(mm, &g, 0, mm->va_limit);
	smmu__gather_finish(&g);
	smmu__pt_free_root(mm->root);
	smmu__rcu_barrier(mm); /* deferred frees of earlier unmaps name mm */
	smmu__watchdog_stop(mm);

	smmu__regions_fini(&mm->regions);
	smmu__notify_fini(mm);
	pthread_rwlock_destroy(&mm->lock);
	pthread_mutex_destroy(&mm->cpus_lock);
	pthread_mutex_destroy(&mm->log_lock);
	smmu__pool_mm_detach(mm->pool);
	smmu__free(mm, sizeof(*mm));
	return 0;
}

/* Validate a page-aligned range; *end gets addr + len rounded up. */
int smmu__mm_check_range(const struct smmu_mm *mm, smmu_addr_t addr, size_t len, smmu_addr_t *end)
{
	if (addr & (mm->page_size - 1) || len == 0)
		return -EINVAL;
	uint64_t rounded = ((uint64_t)len + mm->page_size - 1) & ~(mm->page_size - 1);
	if (rounded < len || addr + rounded < addr || addr + rounded > mm->va_limit)
		return -EINVAL;
	*end = addr + rounded;
	return 0;
}

int smmu__mm_check_prot(int prot)
{
	return prot == SMMU_PROT_NONE || prot == SMMU_PROT_READ || prot == (SMMU_PROT_READ | SMMU_PROT_WRITE) ? 0
														: -EINVAL;
}

/* Region slots a split at the ends of [start, end) would need. */
static size_t splits_needed(const struct smmu__regions *rs, smmu_addr_t start, smmu_addr_t end)
{
	const struct smmu__region *a = smmu__regions_find(rs, start);
	const struct smmu__region *b = smmu__regions_find(rs, end - 1);
	return (a && a->start < start) + (b && b->end > end);
}

/* The pool cache of the calling thread, if it is a CPU of mm. */
static struct smmu__pcache *caller_cache(struct smmu_mm *mm)
{
	struct smmu__cpu *c = smmu__cpu_self();
	return c && c->mm == mm ? &c->pcache : NULL;
}

/*
 * POPULATE takes everything it needs before the mapping changes, so that
 * running out leaves the mm as it was (the old mapping of a FIXED range
 * included): the table pages, allocated in place, and one zeroed frame a
 * page.  On failure the tables it made are pruned again.
 */
struct populate {
	uint32_t *frames;
	size_t n;
};

static int populate_prepare(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end, struct populate *p)
{
	struct smmu__pcache *pc = caller_cache(mm);
	uint64_t pages = (end - start) >> mm->page_shift;
	p->frames = NULL;
	p->n = 0;
	/* More pages than the pool has frames can never be populated: say so
	 * before allocating anything for the range (a huge one would
	 * otherwise build every table of it first). */
	if (pages > mm->pool->nframes)
		return -ENOMEM;
	p->n = (size_t)pages;
	if (!(p->frames = smmu__malloc(p->n * sizeof(*p->frames))))
		return -ENOMEM;
	int err = 0;
	size_t got = 0;
	for (; got < p->n; got++)
		if ((err = smmu__pool_alloc(mm->pool, pc, true, &p->frames[got])))
			break;
	for (smmu_addr_t a = start; a < end && !err; a += mm->page_size) {
		_Atomic smmu_pte_t *slot;
		err = smmu__pt_lookup_alloc(mm->root, mm->page_shift, a, &slot);
	}
	if (err) {
		while (got--)
			smmu__pool_free_unused(mm->pool, pc, p->frames[got]);
		/* Give back the tables made for nothing (after a flush: a
		 * lock-free walker may be looking at them). */
		struct smmu__gather g;
		smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
		smmu__pt_prune(mm, &g, start, end);
		smmu__gather_finish(&g);
		smmu__free(p->frames, p->n * sizeof(*p->frames));
		err = -ENOMEM;
	}
	return err;
}

/* Install the prepared frames into the (now empty) range.  Cannot fail. */
static void populate_commit(struct smmu_mm *mm, smmu_addr_t start, int prot, struct populate *p)
{
	smmu_pte_t bits = smmu__pte_prot_bits(prot);
	for (size_t i = 0; i < p->n; i++) {
		_Atomic smmu_pte_t *slot =
			smmu__pt_lookup(mm->root, mm->page_shift, start + ((smmu_addr_t)i << mm->page_shift));
		SMMU_ASSERT(slot && !atomic_load_explicit(slot, memory_order_relaxed));
		/* Release: the zeroed frame is visible before its PTE. */
		atomic_store_explicit(slot, smmu__pte_make(p->frames[i], bits), memory_order_release);
	}
	smmu__free(p->frames, p->n * sizeof(*p->frames));
}

/* keep_tables: the range is about to be populated from tables prepared
 * in place, which must not be freed as empty meanwhile. */
static void unmap_locked(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end, bool keep_tables)
{
	struct smmu__notify_op nop;
	smmu__notify_start(mm, &nop, start, end, SMMU_NOTIFY_UNMAP, true); /* blockable: cannot fail */
	struct smmu__gather g;
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	g.keep_tables = keep_tables;
	g.notify = &nop;
	g.nnotify = 1;
	smmu__pt_zap(mm, &g, start, end);
	smmu__regions_remove(&mm->regions, start, end);
	smmu__gather_finish(&g);
	smmu__notify_end(&nop);
}

SMMU_API int smmu_mmap_handler(struct smmu_mm *mm, smmu_addr_t addr, size_t len, int prot, int flags,
			       smmu_fault_handler_fn handler, void *handler_arg, smmu_addr_t *out)
{
	const int known = SMMU_MAP_FIXED | SMMU_MAP_FIXED_NOREPLACE | SMMU_MAP_POPULATE;
	if (!smmu__mm_check_live(mm) || !out || len == 0 || smmu__mm_check_prot(prot) || (flags & ~known))
		return -EINVAL;
	const bool fixed = flags & (SMMU_MAP_FIXED | SMMU_MAP_FIXED_NOREPLACE);
	if ((flags & SMMU_MAP_FIXED) && (flags & SMMU_MAP_FIXED_NOREPLACE))
		return -EINVAL;
	uint64_t rounded = ((uint64_t)len + mm->page_size - 1) & ~(mm->page_size - 1);
	if (rounded < len || rounded > mm->va_limit - mm->min_addr)
		return fixed ? -EINVAL : -ENOMEM;
	smmu_addr_t start = 0, end = 0; /* set on every path that uses them */
	if (fixed) {
		int err = smmu__mm_check_range(mm, addr, len, &end);
		if (err)
			return err;
		if (addr < mm->min_addr)
			return -EINVAL;
	}

	const bool populate = (flags & SMMU_MAP_POPULATE) && prot != SMMU_PROT_NONE;
	struct populate pop = { 0 };
	if (smmu__notify_in_callback(mm))
		return -EDEADLK; /* the change that called us holds mm->lock */
	smmu__mm_wrlock(mm);
	int err = smmu__regions_reserve(&mm->regions, 2);
	if (err)
		goto out;
	if (fixed) {
		start = addr;
		const bool replace = smmu__regions_any(&mm->regions, start, end);
		if (replace && (flags & SMMU_MAP_FIXED_NOREPLACE)) {
			err = -EEXIST;
			goto out;
		}
		if (populate && (err = populate_prepare(mm, start, end, &pop)))
			goto out;
		if (replace)
			unmap_locked(mm, start, end, populate);
	} else {
		smmu_addr_t hint = (addr + mm->page_size - 1) & ~(mm->page_size - 1);
		if (hint < addr || hint < mm->min_addr || hint >= mm->va_limit)
			hint = mm->min_addr;
		err = smmu__regions_find_free(&mm->regions, hint, mm->va_limit, rounded, &start);
		if (err && hint > mm->min_addr)
			err = smmu__regions_find_free(&mm->regions, mm->min_addr, mm->va_limit, rounded, &start);
		if (err)
			goto out;
		end = start + rounded;
		if (populate && (err = populate_prepare(mm, start, end, &pop)))
			goto out;
	}
	if (handler)
		atomic_store(&mm->has_handlers, true);
	smmu__regions_insert_handler(&mm->regions, start, end, prot, 0, handler, handler_arg);
	if (populate)
		populate_commit(mm, start, prot, &pop);
	*out = start;
out:
	pthread_rwlock_unlock(&mm->lock);
	return err;
}

int smmu__mm_lock_for_change(struct smmu_mm *mm, unsigned flags)
{
	if (smmu__notify_in_callback(mm))
		return -EDEADLK;
	if (!(flags & SMMU_OP_NONBLOCK)) {
		smmu__mm_wrlock(mm);
		return 0;
	}
	return pthread_rwlock_trywrlock(&mm->lock) ? -EAGAIN : 0;
}

SMMU_API int smmu_mmap(struct smmu_mm *mm, smmu_addr_t addr, size_t len, int prot, int flags, smmu_addr_t *out)
{
	return smmu_mmap_handler(mm, addr, len, prot, flags, NULL, NULL, out);
}

SMMU_API int smmu_munmap_ex(struct smmu_mm *mm, smmu_addr_t addr, size_t len, unsigned flags)
{
	smmu_addr_t end;
	if (!smmu__mm_check_live(mm) || (flags & ~SMMU_OP_NONBLOCK))
		return -EINVAL;
	int err = smmu__mm_check_range(mm, addr, len, &end);
	if (err || (err = smmu__mm_lock_for_change(mm, flags)))
		return err;
	struct smmu__notify_op nop;
	err = smmu__regions_reserve(&mm->regions, splits_needed(&mm->regions, addr, end));
	if (!err)
		err = smmu__notify_start(mm, &nop, addr, end, SMMU_NOTIFY_UNMAP, !(flags & SMMU_OP_NONBLOCK));
	if (err) {
		pthread_rwlock_unlock(&mm->lock);
		return err;
	}
	struct smmu__gather g;
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	g.notify = &nop;
	g.nnotify = 1;
	smmu__pt_zap(mm, &g, addr, end);
	smmu__regions_remove(&mm->regions, addr, end);
	pthread_rwlock_unlock(&mm->lock);
	/* Shoot down and free without the lock: faults elsewhere go on. */
	smmu__gather_finish(&g);
	smmu__notify_end(&nop);
	return 0;
}

SMMU_API int smmu_munmap(struct smmu_mm *mm, smmu_addr_t addr, size_t len)
{
	return smmu_munmap_ex(mm, addr, len, 0);
}

SMMU_API int smmu_mprotect_ex(struct smmu_mm *mm, smmu_addr_t addr, size_t len, int prot, unsigned flags)
{
	smmu_addr_t end;
	if (!smmu__mm_check_live(mm) || smmu__mm_check_prot(prot) || (flags & ~SMMU_OP_NONBLOCK))
		return -EINVAL;
	int err = smmu__mm_check_range(mm, addr, len, &end);
	if (err || (err = smmu__mm_lock_for_change(mm, flags)))
		return err;
	struct smmu__notify_op nop;
	if (!smmu__regions_covered(&mm->regions, addr, end)) {
		err = -ENOMEM;
	} else {
		err = smmu__regions_reserve(&mm->regions, splits_needed(&mm->regions, addr, end));
	}
	if (!err)
		err = smmu__notify_start(mm, &nop, addr, end, SMMU_NOTIFY_PROTECTION, !(flags & SMMU_OP_NONBLOCK));
	if (err) {
		pthread_rwlock_unlock(&mm->lock);
		return err;
	}
	struct smmu__gather g;
	smmu__gather_init(&g, mm, SMMU_GATHER_UNMAP);
	g.notify = &nop;
	g.nnotify = 1;
	smmu__pt_change_prot(mm, &g, addr, end, prot);
	smmu__regions_set_prot(&mm->regions, addr, end, prot);
	pthread_rwlock_unlock(&mm->lock);
	smmu__gather_finish(&g);
	smmu__notify_end(&nop);
	return 0;
}

SMMU_API int smmu_mprotect(struct smmu_mm *mm, smmu_addr_t addr, size_t len, int prot)
{
	return smmu_mprotect_ex(mm, addr, len, prot, 0);
}

SMMU_API int smmu_mm_find(struct smmu_mm *mm, smmu_addr_t addr, struct smmu_region *out)
{
	if (!smmu__mm_check_live(mm) || !out)
		return -EINVAL;
	if (smmu__notify_in_callback(mm))
		return -EDEADLK;
	int err = -ENOENT;
	smmu__mm_rdlock(mm);
	size_t i = smmu__regions_lower_bound(&mm->regions, addr);
	if (i < mm->regions.n) {
		const struct smmu__region *r = &mm->regions.v[i];
		*out = (struct smmu_region){ .start = r->start, .end = r->end, .prot = r->prot, .flags = r->flags };
		err = 0;
	}
	pthread_rwlock_unlock(&mm->lock);
	return err;
}
