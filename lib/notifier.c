/* SPDX-License-Identifier: MIT */
/*
 * MMU notifiers: subscriber lists read under RCU, the bracket a mapping
 * change puts around itself, and interval subscriptions with a sequence
 * count.
 *
 * Invariants:
 *  - the lists are changed only under notify.lock and read by mapping
 *    changes inside urcu-bp read-side critical sections, never under the
 *    lock - one section from a change's start to its end: a subscriber is
 *    unlinked, then a grace period passes (every change that may have
 *    seen it has ended), then it is freed, so no callback of it runs after
 *    unregister returns;
 *  - a change reaches the subscribers registered at its start (epoch) and
 *    only those, in start, secondary and end alike - a subscriber added
 *    meanwhile sees none of it.  Registration publishes the subscriber
 *    before it advances the epoch, so a change that reads the new epoch
 *    finds it in the list.  Registration also takes mm->lock shared, which
 *    waits for any change between its "anyone subscribed?" test and its
 *    clearing of entries: a subscriber that missed a change's start fills
 *    only from what the change left;
 *  - interval sequence (Linux's mmu_interval_notifier): notify.seq is odd
 *    exactly while a change that met interval subscriptions runs.  Each
 *    overlapping subscription's callback stores that odd value in the
 *    subscription (smmu_interval_set_seq) under the subscriber's lock.
 *    read_begin waits while a subscription's seq equals the current odd
 *    value (the page table may still hold entries the change will clear);
 *    read_retry compares.  So a fill either began after the change ended,
 *    or its read_retry, taken under the same lock as the callback, sees
 *    the callback's store - or the callback runs after the fill was
 *    published, and removes it before any entry changes.
 *
 * Lock order: mm->lock, then notify.lock or notify.seq_lock (never both).
 * Callbacks run with mm->lock held (start) or not (secondary, end), never
 * with a notify lock held.
 */
#include "notifier.h"

#include <errno.h>
#include <stdatomic.h>
#include <time.h>

#include <urcu/urcu-bp.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "cpu.h"
#include "mm.h"
#include "shootdown.h"
#include "util.h"

#if SMMU_TSAN
/* ThreadSanitizer cannot see urcu-bp's grace period: a reader's accesses
 * before its read_unlock happen before what follows synchronize_rcu. */
#include <sanitizer/tsan_interface.h>
static char gp_clock;
#define TSAN_READ_UNLOCK() __tsan_release(&gp_clock)
#define TSAN_AFTER_GP() __tsan_acquire(&gp_clock)
#else
#define TSAN_READ_UNLOCK() ((void)0)
#define TSAN_AFTER_GP() ((void)0)
#endif

struct smmu_notifier {
	struct smmu_notifier *_Atomic next; /* Sync: RCU / notify.lock */
	struct smmu_mm *mm;
	const struct smmu_notifier_ops *ops;
	void *arg;
	uint64_t epoch;
	bool linked;   /* Sync: notify.lock */
	bool orphaned; /* released by the teardown: nothing of the mm may be touched */
};

struct smmu_interval_notifier {
	struct smmu_interval_notifier *_Atomic next; /* Sync: RCU / notify.lock */
	struct smmu_mm *mm;
	smmu_addr_t start, end;
	const struct smmu_interval_notifier_ops *ops;
	void *arg;
	uint64_t epoch;
	_Atomic unsigned long seq;
	bool linked;   /* Sync: notify.lock */
	bool orphaned; /* the mm was destroyed: nothing of it may be touched */
};

/* The mm whose callback this thread is running, to refuse what would
 * deadlock (waiting for a grace period, or for mm->lock, inside one). */
static __thread struct smmu_mm *in_callback;

static struct smmu_mm *callback_enter(struct smmu_mm *mm)
{
	struct smmu_mm *outer = in_callback;
	in_callback = mm;
	return outer;
}

static void callback_leave(struct smmu_mm *outer)
{
	in_callback = outer;
}

static void read_lock(void)
{
	urcu_bp_read_lock();
}

static void read_unlock(void)
{
	TSAN_READ_UNLOCK();
	urcu_bp_read_unlock();
}

/* Wait for every change that may have seen an unlinked subscriber.  A
 * change may itself wait for this thread (its acknowledgement: signals
 * interrupt the wait; its quiescent state: an RCU-mode CPU goes offline). */
static void synchronize(void)
{
	struct smmu__cpu *c = smmu__cpu_self();
	bool offline = smmu__rcu_block_begin(c);
	urcu_bp_synchronize_rcu();
	TSAN_AFTER_GP();
	if (offline)
		smmu__rcu_block_end(c);
}

int smmu__notify_init(struct smmu_mm *mm)
{
	struct smmu__notify *n = &mm->notify;
	atomic_store(&n->subs, NULL);
	atomic_store(&n->intervals, NULL);
	atomic_store(&n->count, 0);
	atomic_store(&n->epoch, 0);
	n->seq = 0;
	n->active = 0;
	if (pthread_mutex_init(&n->lock, NULL))
		return -ENOMEM;
	if (pthread_mutex_init(&n->seq_lock, NULL)) {
		pthread_mutex_destroy(&n->lock);
		return -ENOMEM;
	}
	if (pthread_cond_init(&n->seq_cond, NULL)) {
		pthread_mutex_destroy(&n->seq_lock);
		pthread_mutex_destroy(&n->lock);
		return -ENOMEM;
	}
	return 0;
}

void smmu__notify_fini(struct smmu_mm *mm)
{
	pthread_cond_destroy(&mm->notify.seq_cond);
	pthread_mutex_destroy(&mm->notify.seq_lock);
	pthread_mutex_destroy(&mm->notify.lock);
}

/* ------------------------------------------------------------ subscribing */

/* The two kinds of subscription live on two lists of their own types, and
 * are linked and unlinked the same way (notify.lock held). */

/* Publish s at the head of the list, then advance the epoch to name it:
 * a change that reads the new epoch finds s in the list. */
#define SUB_LINK(n, head, s)                                   \
	do {                                                   \
		(s)->epoch = atomic_load(&(n)->epoch) + 1;     \
		(s)->linked = true;                            \
		atomic_store(&(s)->next, atomic_load(head));   \
		atomic_store(head, (s));                       \
		atomic_store(&(n)->epoch, (s)->epoch);         \
		atomic_fetch_add(&(n)->count, 1);              \
	} while (0)

/* Take s out of the list if it is still in it (readers may still be on it:
 * s->next stays valid until the grace period). */
#define SUB_UNLINK(n, head, s)                                          \
	do {                                                            \
		if ((s)->linked) {                                      \
			__typeof__(s) _Atomic *pp_ = (head);            \
			while (atomic_load(pp_) != (s))                 \
				pp_ = &atomic_load(pp_)->next;          \
			atomic_store(pp_, atomic_load(&(s)->next));     \
			(s)->linked = false;                            \
			atomic_fetch_sub(&(n)->count, 1);               \
		}                                                       \
	} while (0)

SMMU_API int smmu_notifier_register(struct smmu_mm *mm, const struct smmu_notifier_ops *ops, void *arg,
				    struct smmu_notifier **out)
{
	if (!smmu__mm_check_live(mm) || !ops || !out)
		return -EINVAL;
	if (in_callback == mm)
		return -EDEADLK;
	struct smmu_notifier *s = smmu__zalloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->mm = mm;
	s->ops = ops;
	s->arg = arg;
	struct smmu__notify *n = &mm->notify;
	smmu__mm_rdlock(mm); /* no change is between its test and its clearing */
	pthread_mutex_lock(&n->lock);
	SUB_LINK(n, &n->subs, s);
	pthread_mutex_unlock(&n->lock);
	pthread_rwlock_unlock(&mm->lock);
	*out = s;
	return 0;
}

SMMU_API int smmu_notifier_unregister(struct smmu_notifier *s)
{
	if (!s)
		return -EINVAL;
	if (s->orphaned) { /* released by the teardown, which also unlinked it */
		smmu__free(s, sizeof(*s));
		return 0;
	}
	struct smmu_mm *mm = s->mm;
	if (in_callback == mm)
		return -EDEADLK;
	pthread_mutex_lock(&mm->notify.lock);
	SUB_UNLINK(&mm->notify, &mm->notify.subs, s);
	pthread_mutex_unlock(&mm->notify.lock);
	synchronize(); /* no callback of s still runs */
	if (s->ops->release) {
		struct smmu_mm *outer = callback_enter(mm);
		s->ops->release(s->arg, mm);
		callback_leave(outer);
	}
	smmu__free(s, sizeof(*s));
	return 0;
}

SMMU_API int smmu_interval_notifier_insert(struct smmu_mm *mm, smmu_addr_t start, size_t len,
					   const struct smmu_interval_notifier_ops *ops, void *arg,
					   struct smmu_interval_notifier **out)
{
	if (!smmu__mm_check_live(mm) || !ops || !ops->invalidate || !out || len == 0 || start + len < start)
		return -EINVAL;
	if (in_callback == mm)
		return -EDEADLK;
	struct smmu_interval_notifier *s = smmu__zalloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->mm = mm;
	s->start = start;
	s->end = start + len;
	s->ops = ops;
	s->arg = arg;
	struct smmu__notify *n = &mm->notify;
	/* A change in progress: the first read_begin waits for its end. */
	pthread_mutex_lock(&n->seq_lock);
	atomic_store(&s->seq, n->seq);
	pthread_mutex_unlock(&n->seq_lock);
	smmu__mm_rdlock(mm);
	pthread_mutex_lock(&n->lock);
	SUB_LINK(n, &n->intervals, s);
	pthread_mutex_unlock(&n->lock);
	pthread_rwlock_unlock(&mm->lock);
	*out = s;
	return 0;
}

SMMU_API int smmu_interval_notifier_remove(struct smmu_interval_notifier *s)
{
	if (!s)
		return -EINVAL;
	if (s->orphaned) {
		smmu__free(s, sizeof(*s));
		return 0;
	}
	struct smmu_mm *mm = s->mm;
	if (in_callback == mm)
		return -EDEADLK;
	pthread_mutex_lock(&mm->notify.lock);
	SUB_UNLINK(&mm->notify, &mm->notify.intervals, s);
	pthread_mutex_unlock(&mm->notify.lock);
	synchronize();
	smmu__free(s, sizeof(*s));
	return 0;
}

void smmu__notify_release(struct smmu_mm *mm)
{
	struct smmu__notify *n = &mm->notify;
	if (!smmu__notify_any(n))
		return;
	pthread_mutex_lock(&n->lock);
	struct smmu_notifier *subs = atomic_load(&n->subs);
	for (struct smmu_notifier *s = subs; s; s = atomic_load(&s->next))
		s->linked = false;
	for (struct smmu_interval_notifier *s = atomic_load(&n->intervals); s; s = atomic_load(&s->next)) {
		s->linked = false;
		s->orphaned = true;
	}
	atomic_store(&n->subs, NULL);
	atomic_store(&n->intervals, NULL);
	atomic_store(&n->count, 0);
	pthread_mutex_unlock(&n->lock);
	/* No CPU is left and no change runs (the mm is dead), so no reader
	 * holds the chain: it is ours.  Release outside the lock.  Each is
	 * orphaned first: from then on its owner may unregister it (which
	 * only frees it), even from the release itself. */
	struct smmu_mm *outer = callback_enter(mm);
	for (struct smmu_notifier *s = subs, *next; s; s = next) {
		next = atomic_load(&s->next);
		const struct smmu_notifier_ops *ops = s->ops;
		void *arg = s->arg;
		s->orphaned = true; /* s is not touched again: release may free it */
		if (ops->release)
			ops->release(arg, mm);
	}
	callback_leave(outer);
}

/* -------------------------------------------------------------- a change */

static bool overlaps(smmu_addr_t s1, smmu_addr_t e1, smmu_addr_t s2, smmu_addr_t e2)
{
	return s1 < e2 && s2 < e1;
}

static void seq_end(struct smmu__notify *n)
{
	pthread_mutex_lock(&n->seq_lock);
	if (--n->active == 0) {
		n->seq++; /* even: no change in progress */
		pthread_cond_broadcast(&n->seq_cond);
	}
	pthread_mutex_unlock(&n->seq_lock);
}

/* Call end on the plain subscribers of op, up to (not including) stop. */
static void end_subs(struct smmu__notify_op *op, struct smmu_notifier *stop)
{
	struct smmu_mm *mm = op->r.mm;
	for (struct smmu_notifier *s = atomic_load(&mm->notify.subs); s != stop; s = atomic_load(&s->next)) {
		if (s->epoch <= op->epoch && s->ops->invalidate_range_end)
			s->ops->invalidate_range_end(s->arg, &op->r);
	}
}

int smmu__notify_start(struct smmu_mm *mm, struct smmu__notify_op *op, smmu_addr_t start, smmu_addr_t end,
		       enum smmu_notify_event event, bool blockable)
{
	struct smmu__notify *n = &mm->notify;
	op->r = (struct smmu_notify_range){
		.mm = mm, .start = start, .end = end, .event = event, .flags = blockable ? SMMU_NOTIFY_BLOCKABLE : 0
	};
	op->any = smmu__notify_any(n);
	op->plain = false;
	op->seq_active = false;
	if (!op->any)
		return 0;
	op->epoch = atomic_load(&n->epoch);
	int err = 0;
	struct smmu_mm *outer = callback_enter(mm);
	read_lock(); /* until smmu__notify_end: one section for the change */

	/* Interval subscriptions first: they stop filling before anything. */
	bool met = false;
	for (struct smmu_interval_notifier *s = atomic_load(&n->intervals); s; s = atomic_load(&s->next))
		met |= s->epoch <= op->epoch && overlaps(s->start, s->end, start, end);
	if (met) {
		pthread_mutex_lock(&n->seq_lock);
		if (n->active++ == 0)
			n->seq++; /* odd: in progress */
		unsigned long cur = n->seq;
		pthread_mutex_unlock(&n->seq_lock);
		op->seq_active = true;
		for (struct smmu_interval_notifier *s = atomic_load(&n->intervals); s; s = atomic_load(&s->next)) {
			if (s->epoch > op->epoch || !overlaps(s->start, s->end, start, end))
				continue;
			if (!s->ops->invalidate(s, s->arg, &op->r, cur) && !blockable) {
				err = -EAGAIN;
				break;
			}
		}
	}

	if (!err) {
		for (struct smmu_notifier *s = atomic_load(&n->subs); s; s = atomic_load(&s->next)) {
			if (s->epoch > op->epoch)
				continue;
			op->plain = true;
			if (!s->ops->invalidate_range_start)
				continue;
			if (s->ops->invalidate_range_start(s->arg, &op->r) == -EAGAIN && !blockable) {
				end_subs(op, s); /* those whose start returned 0 */
				err = -EAGAIN;
				break;
			}
		}
	}
	if (err) {
		if (op->seq_active)
			seq_end(n);
		op->any = false;
		read_unlock();
	}
	callback_leave(outer);
	return err;
}

/* Inside the change's read-side section. */
void smmu__notify_secondary(struct smmu__notify_op *op)
{
	if (!op->plain)
		return;
	struct smmu_mm *mm = op->r.mm;
	struct smmu_mm *outer = callback_enter(mm);
	for (struct smmu_notifier *s = atomic_load(&mm->notify.subs); s; s = atomic_load(&s->next)) {
		if (s->epoch <= op->epoch && s->ops->invalidate_secondary_tlbs)
			s->ops->invalidate_secondary_tlbs(s->arg, &op->r);
	}
	callback_leave(outer);
}

void smmu__notify_end(struct smmu__notify_op *op)
{
	if (!op->any)
		return;
	struct smmu_mm *mm = op->r.mm;
	if (op->plain) {
		struct smmu_mm *outer = callback_enter(mm);
		end_subs(op, NULL);
		callback_leave(outer);
	}
	read_unlock();
	if (op->seq_active)
		seq_end(&mm->notify);
}

/* ------------------------------------------------------ interval sequence */

/* Wait for the change in progress to end.  The change may be waiting for
 * this thread: for its acknowledgement (signal mode: the signal interrupts
 * the wait; under ThreadSanitizer, which delivers signals only when an
 * intercepted call returns, the wait is cut into short timed waits) or for
 * its quiescent state (RCU modes: a CPU goes offline while it waits). */
static void seq_wait(struct smmu__notify *n)
{
	struct smmu__cpu *c = smmu__cpu_self();
	bool offline = smmu__rcu_block_begin(c);
#if SMMU_TSAN
	struct timespec ts = smmu__realtime_in(1000000);
	pthread_cond_timedwait(&n->seq_cond, &n->seq_lock, &ts);
#else
	pthread_cond_wait(&n->seq_cond, &n->seq_lock);
#endif
	if (offline)
		smmu__rcu_block_end(c);
}

SMMU_API unsigned long smmu_interval_read_begin(struct smmu_interval_notifier *s)
{
	struct smmu__notify *n = &s->mm->notify;
	pthread_mutex_lock(&n->seq_lock);
	unsigned long seq = atomic_load(&s->seq);
	while ((seq & 1) && seq == n->seq) {
		seq_wait(n);
		seq = atomic_load(&s->seq);
	}
	pthread_mutex_unlock(&n->seq_lock);
	return seq;
}

SMMU_API bool smmu_interval_read_retry(struct smmu_interval_notifier *s, unsigned long seq)
{
	return atomic_load(&s->seq) != seq;
}

SMMU_API void smmu_interval_set_seq(struct smmu_interval_notifier *s, unsigned long cur_seq)
{
	atomic_store(&s->seq, cur_seq);
}

SMMU_API void smmu_interval_notifier_range(const struct smmu_interval_notifier *s, smmu_addr_t *start,
					   smmu_addr_t *end)
{
	*start = s->start;
	*end = s->end;
}

/* ------------------------------------------------------------ young bits */

int smmu__notify_young(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end, bool clear)
{
	if (!smmu__notify_any(&mm->notify))
		return 0;
	int young = 0;
	struct smmu_mm *outer = callback_enter(mm);
	read_lock();
	for (struct smmu_notifier *s = atomic_load(&mm->notify.subs); s; s = atomic_load(&s->next)) {
		int (*fn)(void *, struct smmu_mm *, smmu_addr_t, smmu_addr_t) =
			clear ? s->ops->clear_young : s->ops->test_young;
		if (fn) {
			int y = fn(s->arg, mm, start, end);
			if (y > 0)
				young += y;
		}
	}
	read_unlock();
	callback_leave(outer);
	return young;
}

bool smmu__notify_in_callback(const struct smmu_mm *mm)
{
	return in_callback == mm;
}

bool smmu__notify_in_any_callback(void)
{
	return in_callback != NULL;
}
