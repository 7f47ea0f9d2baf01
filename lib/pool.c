/* SPDX-License-Identifier: MIT */
/*
 * Frame pool.  Invariants (see pool.h for the structure and lock order):
 *  - a frame is in exactly one place: on a shared chain, in one CPU cache,
 *    or mapped (refcount >= 1);
 *  - nfree_shared equals the frames on the shared chains; pc->count the
 *    frames in a cache;
 *  - a frame whose SMMU_FRAME_ZERO flag is set holds only zero bytes.
 */
#include "pool.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "util.h"

int smmu__pool_check_live(const struct smmu_pool *pool)
{
	return pool && pool->magic == SMMU_POOL_MAGIC;
}

/* Link frames[0..n) into one chain (n <= SMMU_POOL_CHAIN); returns its head. */
static uint32_t make_chain(struct smmu_pool *pool, const uint32_t *frames, size_t n)
{
	for (size_t i = 0; i < n; i++)
		pool->frames[frames[i]].next = i + 1 < n ? frames[i + 1] : SMMU_NO_FRAME;
	pool->frames[frames[0]].chain_len = (uint16_t)n;
	return frames[0];
}

static void push_chain_locked(struct smmu_pool *pool, uint32_t head)
{
	struct smmu__frame *h = &pool->frames[head];
	h->next_chain = pool->free_chains;
	pool->free_chains = head;
	pool->nfree_shared += h->chain_len;
}

SMMU_API int smmu_pool_create(const struct smmu_pool_config *cfg, struct smmu_pool **out)
{
	if (!cfg || !out)
		return -EINVAL;
	size_t page_size = cfg->page_size ? cfg->page_size : SMMU_DEFAULT_PAGE_SIZE;
	if (!smmu__is_pow2(page_size) || page_size < SMMU_TLB_GRANULE || page_size > SMMU_POOL_MAX_PAGE_SIZE)
		return -EINVAL;
	if (cfg->flags & ~(unsigned)SMMU_POOL_POISON)
		return -EINVAL;
	if (cfg->region && ((uintptr_t)cfg->region & (SMMU_TLB_GRANULE - 1)))
		return -EINVAL;
	size_t nframes = cfg->size / page_size;
	if (nframes == 0 || nframes > (size_t)UINT32_MAX - 1)
		return -EINVAL;

	struct smmu_pool *pool = smmu__zalloc(sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	pool->frames = smmu__zalloc(nframes * sizeof(struct smmu__frame));
	if (!pool->frames) {
		smmu__free(pool, sizeof(*pool));
		return -ENOMEM;
	}
	uint16_t init_flags = 0;
	if (cfg->region) {
		pool->base = cfg->region;
	} else {
		pool->region_size = nframes * page_size;
		void *p = mmap(NULL, pool->region_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			       -1, 0);
		if (p == MAP_FAILED) {
			smmu__free(pool->frames, nframes * sizeof(struct smmu__frame));
			smmu__free(pool, sizeof(*pool));
			return -ENOMEM;
		}
		pool->base = p;
		pool->owns_region = true;
		init_flags = SMMU_FRAME_ZERO; /* fresh anonymous memory reads as zero */
	}
	pool->page_size = page_size;
	pool->page_shift = smmu__log2(page_size);
	pool->nframes = (uint32_t)nframes;
	pool->flags = cfg->flags;
	pool->free_chains = SMMU_NO_FRAME;
	pthread_mutex_init(&pool->lock, NULL);

	/* Chains of consecutive frames, pushed highest first so that low frames
	 * are handed out first. */
	uint32_t ids[SMMU_POOL_CHAIN];
	size_t nchains = (nframes + SMMU_POOL_CHAIN - 1) / SMMU_POOL_CHAIN;
	for (size_t c = nchains; c-- > 0;) {
		size_t first = c * SMMU_POOL_CHAIN, n = nframes - first < SMMU_POOL_CHAIN ? nframes - first : SMMU_POOL_CHAIN;
		for (size_t i = 0; i < n; i++) {
			ids[i] = (uint32_t)(first + i);
			pool->frames[first + i].flags = init_flags;
		}
		push_chain_locked(pool, make_chain(pool, ids, n));
	}
	pool->magic = SMMU_POOL_MAGIC;
	*out = pool;
	return 0;
}

SMMU_API int smmu_pool_destroy(struct smmu_pool *pool)
{
	if (!smmu__pool_check_live(pool))
		return -EINVAL;
	pthread_mutex_lock(&pool->lock);
	if (pool->nr_mm || pool->caches) {
		pthread_mutex_unlock(&pool->lock);
		return -EBUSY;
	}
	pool->magic = SMMU_DEAD_MAGIC;
	pthread_mutex_unlock(&pool->lock);
	SMMU_ASSERT(pool->nfree_shared == pool->nframes);
	pthread_mutex_destroy(&pool->lock);
	if (pool->owns_region)
		munmap(pool->base, pool->region_size);
	smmu__free(pool->frames, (size_t)pool->nframes * sizeof(struct smmu__frame));
	smmu__free(pool, sizeof(*pool));
	return 0;
}

SMMU_API size_t smmu_pool_frames(const struct smmu_pool *pool)
{
	return smmu__pool_check_live(pool) ? pool->nframes : 0;
}

SMMU_API size_t smmu_pool_page_size(const struct smmu_pool *pool)
{
	return smmu__pool_check_live(pool) ? pool->page_size : 0;
}

SMMU_API size_t smmu_pool_free_frames(struct smmu_pool *pool)
{
	if (!smmu__pool_check_live(pool))
		return 0;
	pthread_mutex_lock(&pool->lock);
	size_t n = pool->nfree_shared;
	for (struct smmu__pcache *pc = pool->caches; pc; pc = pc->next) {
		pthread_mutex_lock(&pc->lock);
		n += pc->count;
		pthread_mutex_unlock(&pc->lock);
	}
	pthread_mutex_unlock(&pool->lock);
	return n;
}

void smmu__pool_mm_attach(struct smmu_pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	pool->nr_mm++;
	pthread_mutex_unlock(&pool->lock);
}

void smmu__pool_mm_detach(struct smmu_pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	SMMU_ASSERT(pool->nr_mm > 0);
	pool->nr_mm--;
	pthread_mutex_unlock(&pool->lock);
}

void smmu__pcache_attach(struct smmu_pool *pool, struct smmu__pcache *pc)
{
	pthread_mutex_init(&pc->lock, NULL);
	pc->head = SMMU_NO_FRAME;
	pc->count = 0;
	pc->pool = pool;
	pc->prev = NULL;
	pthread_mutex_lock(&pool->lock);
	pc->next = pool->caches;
	if (pool->caches)
		pool->caches->prev = pc;
	pool->caches = pc;
	pthread_mutex_unlock(&pool->lock);
}

/* Push a list of free frames onto the shared stack, cut into chains of at
 * most SMMU_POOL_CHAIN.  Caller holds pool->lock. */
static void push_list_locked(struct smmu_pool *pool, uint32_t head)
{
	while (head != SMMU_NO_FRAME) {
		uint32_t tail = head, n = 1;
		while (n < SMMU_POOL_CHAIN && pool->frames[tail].next != SMMU_NO_FRAME) {
			tail = pool->frames[tail].next;
			n++;
		}
		uint32_t rest = pool->frames[tail].next;
		pool->frames[tail].next = SMMU_NO_FRAME;
		pool->frames[head].chain_len = (uint16_t)n;
		push_chain_locked(pool, head);
		head = rest;
	}
}

/* Hand a cache's frames back to the shared list.  Caller holds pool->lock
 * and pc->lock. */
static void drain_cache_locked(struct smmu_pool *pool, struct smmu__pcache *pc)
{
	push_list_locked(pool, pc->head);
	pc->head = SMMU_NO_FRAME;
	pc->count = 0;
}

void smmu__pcache_detach(struct smmu__pcache *pc)
{
	struct smmu_pool *pool = pc->pool;
	pthread_mutex_lock(&pool->lock);
	pthread_mutex_lock(&pc->lock);
	drain_cache_locked(pool, pc);
	pthread_mutex_unlock(&pc->lock);
	if (pc->prev)
		pc->prev->next = pc->next;
	else
		pool->caches = pc->next;
	if (pc->next)
		pc->next->prev = pc->prev;
	pthread_mutex_unlock(&pool->lock);
	pthread_mutex_destroy(&pc->lock);
}

static uint32_t pop_chain_locked(struct smmu_pool *pool, uint32_t *len)
{
	uint32_t head = pool->free_chains;
	if (head == SMMU_NO_FRAME)
		return SMMU_NO_FRAME;
	pool->free_chains = pool->frames[head].next_chain;
	*len = pool->frames[head].chain_len;
	pool->nfree_shared -= *len;
	return head;
}

/* The shared list is empty: take every frame some cache holds (other than
 * `self`), as one list.  Caller holds pool->lock. */
static uint32_t steal_locked(struct smmu_pool *pool, struct smmu__pcache *self, uint32_t *len)
{
	for (struct smmu__pcache *pc = pool->caches; pc; pc = pc->next) {
		if (pc == self)
			continue;
		pthread_mutex_lock(&pc->lock);
		uint32_t head = pc->head;
		*len = pc->count;
		pc->head = SMMU_NO_FRAME;
		pc->count = 0;
		pthread_mutex_unlock(&pc->lock);
		if (head != SMMU_NO_FRAME)
			return head;
	}
	return SMMU_NO_FRAME;
}

static uint32_t take_one(struct smmu__pcache *pc)
{
	uint32_t f = pc->head;
	if (f != SMMU_NO_FRAME) {
		pc->head = pc->pool->frames[f].next;
		pc->count--;
	}
	return f;
}

static struct smmu__inject inject = SMMU_INJECT_INIT;

void smmu__pool_fail_after(long n)
{
	smmu__inject_arm(&inject, n);
}

int smmu__pool_failure_fired(void)
{
	return atomic_load(&inject.fired);
}

int smmu__pool_alloc(struct smmu_pool *pool, struct smmu__pcache *pc, bool zero, uint32_t *out)
{
	uint32_t f = SMMU_NO_FRAME;

	if (smmu__inject_check(&inject))
		return -ENOMEM; /* as if the pool were empty */

	if (pc) {
		pthread_mutex_lock(&pc->lock);
		f = take_one(pc);
		pthread_mutex_unlock(&pc->lock);
	}
	if (f == SMMU_NO_FRAME) {
		/* Refill (or steal) and hand the rest over without ever leaving
		 * the frames on no list: a concurrent allocator that finds the
		 * shared list empty must still find them somewhere. */
		uint32_t len = 0, head;
		pthread_mutex_lock(&pool->lock);
		head = pop_chain_locked(pool, &len);
		if (head == SMMU_NO_FRAME)
			head = steal_locked(pool, pc, &len);
		if (head == SMMU_NO_FRAME) {
			pthread_mutex_unlock(&pool->lock);
			return -ENOMEM;
		}
		f = head;
		uint32_t rest = pool->frames[head].next;
		if (rest != SMMU_NO_FRAME && pc) {
			pthread_mutex_lock(&pc->lock);
			/* Only the owner adds to its cache, and it found it empty;
			 * still, keep anything there by putting it behind. */
			if (pc->head != SMMU_NO_FRAME) {
				uint32_t tail = pc->head;
				while (pool->frames[tail].next != SMMU_NO_FRAME)
					tail = pool->frames[tail].next;
				pool->frames[tail].next = rest;
			} else {
				pc->head = rest;
			}
			pc->count += len - 1;
			pthread_mutex_unlock(&pc->lock);
		} else if (rest != SMMU_NO_FRAME) {
			/* No cache to keep them: back to the shared list (a stolen
			 * list may be longer than a chain). */
			push_list_locked(pool, rest);
		}
		pthread_mutex_unlock(&pool->lock);
	}

	struct smmu__frame *d = &pool->frames[f];
	if (zero && !(d->flags & SMMU_FRAME_ZERO))
		memset(smmu__frame_host(pool, f), 0, pool->page_size);
	d->flags &= (uint16_t)~SMMU_FRAME_ZERO;
	d->next = SMMU_NO_FRAME;
	atomic_store_explicit(&d->refcount, 1, memory_order_relaxed);
	*out = f;
	return 0;
}

void smmu__pool_get(struct smmu_pool *pool, uint32_t frame)
{
	atomic_fetch_add_explicit(&pool->frames[frame].refcount, 1, memory_order_relaxed);
}

static void release_contents(struct smmu_pool *pool, uint32_t f)
{
	if (pool->flags & SMMU_POOL_POISON)
		memset(smmu__frame_host(pool, f), SMMU_POISON_BYTE, pool->page_size);
	pool->frames[f].flags &= (uint16_t)~SMMU_FRAME_ZERO;
}

void smmu__pool_free_unused(struct smmu_pool *pool, struct smmu__pcache *pc, uint32_t frame)
{
	struct smmu__frame *d = &pool->frames[frame];
	atomic_store_explicit(&d->refcount, 0, memory_order_relaxed);
	release_contents(pool, frame);
	if (pc) {
		pthread_mutex_lock(&pc->lock);
		d->next = pc->head;
		pc->head = frame;
		pc->count++;
		pthread_mutex_unlock(&pc->lock);
	} else {
		d->next = SMMU_NO_FRAME;
		d->chain_len = 1;
		pthread_mutex_lock(&pool->lock);
		push_chain_locked(pool, frame);
		pthread_mutex_unlock(&pool->lock);
	}
}

/* End the chain that starts at head and link it behind the chains built
 * so far ([*first .. *last], through next_chain). */
static void close_chain(struct smmu_pool *pool, uint32_t head, uint32_t len, uint32_t *first, uint32_t *last)
{
	pool->frames[head].chain_len = (uint16_t)len;
	pool->frames[head].next_chain = SMMU_NO_FRAME;
	if (*first == SMMU_NO_FRAME)
		*first = head;
	else
		pool->frames[*last].next_chain = head;
	*last = head;
}

size_t smmu__pool_put_frames(struct smmu_pool *pool, const uint32_t *frames, size_t n)
{
	return smmu__pool_put_frames_to(pool, NULL, frames, n);
}

size_t smmu__pool_put_frames_to(struct smmu_pool *pool, struct smmu__pcache *pc, const uint32_t *frames, size_t n)
{
	/* Build the chains without the lock, linked to each other through
	 * next_chain, then splice them onto the stack in one operation. */
	uint32_t first = SMMU_NO_FRAME, last = SMMU_NO_FRAME;
	uint32_t head = SMMU_NO_FRAME, tail = SMMU_NO_FRAME, len = 0;
	size_t freed = 0;

	for (size_t i = 0; i < n; i++) {
		uint32_t f = frames[i];
		struct smmu__frame *d = &pool->frames[f];
		SMMU_ASSERT(f < pool->nframes);
		/* The last reference: nobody else can take one (it would need a
		 * PTE), so a plain check avoids the atomic in the common case. */
		uint32_t rc = atomic_load_explicit(&d->refcount, memory_order_acquire);
		SMMU_ASSERT(rc > 0);
		if (rc != 1 && atomic_fetch_sub_explicit(&d->refcount, 1, memory_order_acq_rel) != 1)
			continue;
		atomic_store_explicit(&d->refcount, 0, memory_order_relaxed);
		release_contents(pool, f);
		d->next = SMMU_NO_FRAME;
		if (head == SMMU_NO_FRAME) {
			head = f;
		} else {
			pool->frames[tail].next = f;
		}
		tail = f;
		freed++;
		if (++len == SMMU_POOL_CHAIN) {
			close_chain(pool, head, len, &first, &last);
			head = SMMU_NO_FRAME;
			len = 0;
		}
	}
	if (head != SMMU_NO_FRAME)
		close_chain(pool, head, len, &first, &last);
	if (first == SMMU_NO_FRAME)
		return 0;
	if (pc && freed <= SMMU_POOL_CHAIN) {
		/* One chain, first .. tail: into the freeing CPU's own cache,
		 * where its next allocation finds it without the pool lock -
		 * unless that would hold more than two chains. */
		pthread_mutex_lock(&pc->lock);
		if (pc->count + freed <= 2 * SMMU_POOL_CHAIN) {
			pool->frames[tail].next = pc->head;
			pc->head = first;
			pc->count += (uint32_t)freed;
			pthread_mutex_unlock(&pc->lock);
			return freed;
		}
		pthread_mutex_unlock(&pc->lock);
	}
	pthread_mutex_lock(&pool->lock);
	pool->frames[last].next_chain = pool->free_chains;
	pool->free_chains = first;
	pool->nfree_shared += freed;
	pthread_mutex_unlock(&pool->lock);
	return freed;
}
