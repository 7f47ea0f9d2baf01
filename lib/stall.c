/* SPDX-License-Identifier: MIT */
/* Stall reports for the RCU modes (see stall.h). */
#include "stall.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "alloc.h"
#include "cpu.h"
#include "mm.h"

#define DEFAULT_STALL_NS 1000000000ull
#define MAX_REPORTS 64 /* stalled CPUs reported per wake-up */

struct smmu__watchdog {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;   /* Sync: lock */
	uint64_t stall_ns;
	smmu_stall_fn fn;
	void *arg;
};

uint64_t smmu__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void smmu__stall_clear(struct smmu__cpu *c)
{
	/* Only the owner writes the count: no read-modify-write needed. */
	uint64_t n = atomic_load_explicit(&c->qs_count, memory_order_relaxed);
	atomic_store_explicit(&c->qs_count, n + 1, memory_order_relaxed);
}

static void default_report(struct smmu_mm *mm, unsigned cpu_id, uint64_t stalled_ns, void *arg)
{
	(void)arg;
	fprintf(stderr,
		"libsoftmmu: CPU %u of mm %p has passed no quiescent state for %" PRIu64
		" ms: grace periods (munmap, mprotect, frame reclamation) wait for it. Call smmu_quiescent "
		"regularly, and smmu_cpu_offline before blocking.\n",
		cpu_id, (void *)mm, stalled_ns / 1000000);
}

/* Sample every CPU's quiescent-state count: one that has not moved since
 * the sample that first saw it, stall_ns or more ago, is stalled (so a
 * stall is seen up to a quarter of stall_ns late, and its age is a lower
 * bound).  Sampled always; reported only while something waits. */
static void check(struct smmu_mm *mm, struct smmu__watchdog *w)
{
	bool waiting = atomic_load(&smmu__rcu_waiting) != 0; /* else a quiet CPU stalls nothing */
	unsigned ids[MAX_REPORTS];
	uint64_t ages[MAX_REPORTS];
	size_t n = 0;
	uint64_t now = smmu__now_ns();
	pthread_mutex_lock(&mm->cpus_lock);
	for (struct smmu__cpu *c = mm->cpus; c; c = c->next) {
		uint64_t q = atomic_load_explicit(&c->qs_count, memory_order_relaxed);
		if (q != c->wd_count || !c->wd_since_ns || !atomic_load(&c->online)) {
			c->wd_count = q;
			c->wd_since_ns = now;
			c->stall_reported = false;
			continue;
		}
		if (!waiting || n == MAX_REPORTS || now - c->wd_since_ns < w->stall_ns || c->stall_reported)
			continue;
		c->stall_reported = true;
		ids[n] = c->id;
		ages[n++] = now - c->wd_since_ns;
	}
	pthread_mutex_unlock(&mm->cpus_lock);
	for (size_t i = 0; i < n; i++)
		w->fn(mm, ids[i], ages[i], w->arg);
}

static void *watchdog_main(void *arg)
{
	struct smmu_mm *mm = arg;
	struct smmu__watchdog *w = mm->watchdog;
	pthread_mutex_lock(&w->lock);
	while (!w->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + w->stall_ns / 4;
		ts.tv_sec = (time_t)(t / 1000000000u);
		ts.tv_nsec = (long)(t % 1000000000u);
		pthread_cond_timedwait(&w->wake, &w->lock, &ts);
		if (w->stop)
			break;
		pthread_mutex_unlock(&w->lock);
		check(mm, w);
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int smmu__watchdog_start(struct smmu_mm *mm, const struct smmu_mm_config *cfg)
{
	struct smmu__watchdog *w = smmu__zalloc(sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->stall_ns = cfg->stall_ns ? cfg->stall_ns : DEFAULT_STALL_NS;
	w->fn = cfg->stall ? cfg->stall : default_report;
	w->arg = cfg->stall_arg;
	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->wake, &ca);
	pthread_condattr_destroy(&ca);
	mm->watchdog = w;
	if (pthread_create(&w->thread, NULL, watchdog_main, mm)) {
		mm->watchdog = NULL;
		pthread_cond_destroy(&w->wake);
		pthread_mutex_destroy(&w->lock);
		smmu__free(w, sizeof(*w));
		return -EAGAIN;
	}
	return 0;
}

void smmu__watchdog_stop(struct smmu_mm *mm)
{
	struct smmu__watchdog *w = mm->watchdog;
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	pthread_cond_destroy(&w->wake);
	pthread_mutex_destroy(&w->lock);
	smmu__free(w, sizeof(*w));
	mm->watchdog = NULL;
}

void smmu__watchdog_config(const struct smmu_mm *mm, struct smmu_mm_config *cfg)
{
	const struct smmu__watchdog *w = mm->watchdog;
	if (w) {
		cfg->stall_ns = w->stall_ns;
		cfg->stall = w->fn;
		cfg->stall_arg = w->arg;
	}
}
