/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_POOL_H
#define SMMU_LIB_POOL_H

/*
 * The frame pool: a host region cut into frames of page_size bytes, with a
 * 16-byte descriptor per frame beside it.
 *
 * Free frames sit on singly linked chains of at most SMMU_POOL_CHAIN frames
 * (linked through the descriptors' `next`).  The shared free list is a
 * stack of chains, so a refill takes one chain and a drain pushes whole
 * chains: one lock operation per batch, never per frame.  Each CPU has a
 * cache (struct smmu__pcache) that it refills a chain at a time and
 * allocates from; when the shared list is empty an allocator steals the
 * other caches' frames before it reports -ENOMEM, so exhaustion is exact.
 *
 * Refcounts: a frame mapped by n page-table entries has refcount n.  It is
 * returned to the free list when the count drops to zero, which happens only
 * in smmu__pool_put_frames, called by the gather after the TLB flush.
 *
 * Lock order: pool->lock, then a pcache's lock.  A cache's owner never holds
 * its cache lock while it takes the pool lock.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMMU_NO_FRAME UINT32_MAX
#define SMMU_POOL_CHAIN 64u
/* Address spaces span page_size << 36 bytes, which must fit in 63 bits. */
#define SMMU_POOL_MAX_PAGE_SIZE (1u << 27)

#define SMMU_FRAME_ZERO 0x1 /* contents known to be zero (fresh mapping) */

/* Sync: refcount atomic; the other fields belong to whoever owns the frame:
 * the pool lock or a cache lock while it is free, the gather that cleared
 * its last PTE while it is being freed. */
struct smmu__frame {
	_Atomic uint32_t refcount;
	uint16_t flags;
	uint16_t chain_len;  /* on a chain head: frames in the chain */
	uint32_t next;       /* next frame of the chain */
	uint32_t next_chain; /* on a chain head in the shared list: next chain */
};
_Static_assert(sizeof(struct smmu__frame) <= 16, "frame descriptor must stay within 16 bytes");

struct smmu__pcache;

struct smmu_pool {
	uint64_t magic;
	char *base;
	size_t page_size;
	unsigned page_shift;
	uint32_t nframes;
	unsigned flags;
	bool owns_region; /* the library mapped base and unmaps it */
	size_t region_size;
	struct smmu__frame *frames;

	pthread_mutex_t lock;
	uint32_t free_chains;         /* Sync: lock.  Head of the stack of chains */
	size_t nfree_shared;          /* Sync: lock */
	unsigned nr_mm;               /* Sync: lock.  mms using the pool */
	struct smmu__pcache *caches;  /* Sync: lock.  Every attached cache */
};

/* A CPU's frame cache.  Sync: lock (the owner takes it per operation; a
 * starving allocator takes it, under the pool lock, to steal). */
struct smmu__pcache {
	pthread_mutex_t lock;
	uint32_t head;
	uint32_t count;
	struct smmu_pool *pool;
	struct smmu__pcache *next, *prev; /* Sync: pool->lock */
};

static inline void *smmu__frame_host(const struct smmu_pool *pool, uint32_t frame)
{
	return pool->base + ((size_t)frame << pool->page_shift);
}

static inline struct smmu__frame *smmu__frame_desc(const struct smmu_pool *pool, uint32_t frame)
{
	return &pool->frames[frame];
}

int smmu__pool_check_live(const struct smmu_pool *pool);

/* Attach/detach a CPU's cache; detaching gives its frames back. */
void smmu__pcache_attach(struct smmu_pool *pool, struct smmu__pcache *pc);
void smmu__pcache_detach(struct smmu__pcache *pc);

/* Allocate one frame with refcount 1, zeroed if zero is set; pc may be NULL
 * (no cache: straight from the shared list).  -ENOMEM when none is left. */
int smmu__pool_alloc(struct smmu_pool *pool, struct smmu__pcache *pc, bool zero, uint32_t *out);
/* Fault injection, for tests: the nth smmu__pool_alloc from now (0 = the
 * next) fails with -ENOMEM as if the pool were empty; negative disables.
 * Global, atomic. */
void smmu__pool_fail_after(long n);
/* Whether an injected pool failure fired since the last smmu__pool_fail_after. */
int smmu__pool_failure_fired(void);

/* Take one more reference to a mapped frame. */
void smmu__pool_get(struct smmu_pool *pool, uint32_t frame);

/* Drop one reference to each of n frames; those that reach zero go back to
 * the shared list in chains, under one lock operation.  Returns how many
 * were freed.  Call only after no TLB can still reach the frames. */
size_t smmu__pool_put_frames(struct smmu_pool *pool, const uint32_t *frames, size_t n);
/* The same, but up to a chain of freed frames goes into pc (the calling
 * CPU's cache, attached to pool; NULL: none) while it holds at most two
 * chains: its next allocations need no pool lock. */
size_t smmu__pool_put_frames_to(struct smmu_pool *pool, struct smmu__pcache *pc, const uint32_t *frames, size_t n);

/* Drop the reference of a frame that no PTE or TLB ever saw (a lost race
 * in the fault path): straight back to pc (or the shared list). */
void smmu__pool_free_unused(struct smmu_pool *pool, struct smmu__pcache *pc, uint32_t frame);

/* mm accounting for -EBUSY on destroy. */
void smmu__pool_mm_attach(struct smmu_pool *pool);
void smmu__pool_mm_detach(struct smmu_pool *pool);

#endif
