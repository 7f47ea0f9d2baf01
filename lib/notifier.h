/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_NOTIFIER_H
#define SMMU_LIB_NOTIFIER_H

/*
 * MMU notifiers inside the library: the per-mm subscriber lists and the
 * calls a mapping change makes into them (protocol in notifier.c, API in
 * <softmmu/notifier.h>).
 *
 * A mapping change that may invalidate translations brackets itself:
 *
 *   smmu__notify_start(mm, &op, ...)   under mm->lock, before any entry
 *                                      changes; may fail with -EAGAIN
 *   (clear entries, with op attached to the gather: g->notify, nnotify)
 *   smmu__gather_flush -> smmu__notify_secondary(&op), after the CPU
 *                                      flush, before anything is freed
 *   smmu__notify_end(&op)              once the gather finished
 *
 * op records whether anyone was subscribed when the change began, and the
 * registration epoch then: the three calls reach the same subscribers, so
 * none sees an end without its start.
 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <softmmu/notifier.h>

struct smmu_mm;

struct smmu__notify {
	/* Writers of the lists (register, unregister, insert, remove,
	 * release).  Readers hold urcu-bp's read lock instead. */
	pthread_mutex_t lock;
	struct smmu_notifier *_Atomic subs;             /* Sync: RCU / lock */
	struct smmu_interval_notifier *_Atomic intervals; /* Sync: RCU / lock */
	_Atomic unsigned count;  /* subscriptions of both kinds (under lock) */
	_Atomic uint64_t epoch;  /* registrations so far (under lock) */

	/* Interval sequence: odd while an invalidation that found interval
	 * subscriptions runs (active of them), even otherwise.  Sync: seq_lock;
	 * read_begin sleeps on seq_cond. */
	pthread_mutex_t seq_lock;
	pthread_cond_t seq_cond;
	unsigned long seq;
	unsigned active;
};

/* One mapping change, as the notifiers see it. */
struct smmu__notify_op {
	struct smmu_notify_range r;
	uint64_t epoch;   /* subscribers registered up to this epoch take part */
	bool any;         /* someone was subscribed at the start: in a read-side
			     section from start to end */
	bool plain;       /* ... and among them a smmu_notifier_register one */
	bool seq_active;  /* the interval sequence was made odd by this change */
};

int smmu__notify_init(struct smmu_mm *mm);
/* Teardown: call every subscriber's release once and unlink them all;
 * their handles stay valid until unregistered or removed. */
void smmu__notify_release(struct smmu_mm *mm);
void smmu__notify_fini(struct smmu_mm *mm);

/* Cheap test for the mapping paths. */
static inline bool smmu__notify_any(const struct smmu__notify *n)
{
	return atomic_load(&n->count) != 0;
}

/* Start op over [start, end).  0, or -EAGAIN (not blockable and a
 * subscriber refused: the starts that succeeded were ended, nothing else
 * happened).  Caller holds mm->lock exclusively. */
int smmu__notify_start(struct smmu_mm *mm, struct smmu__notify_op *op, smmu_addr_t start, smmu_addr_t end,
		       enum smmu_notify_event event, bool blockable);
void smmu__notify_secondary(struct smmu__notify_op *op);
void smmu__notify_end(struct smmu__notify_op *op);

/* The subscribers' young pages in [start, end): clear_young (clear) or
 * test_young, summed. */
int smmu__notify_young(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end, bool clear);

/* Whether this thread is inside a callback of mm (what would deadlock). */
bool smmu__notify_in_callback(const struct smmu_mm *mm);
/* Whether the calling thread runs a notifier callback of any mm. */
bool smmu__notify_in_any_callback(void);

#endif
