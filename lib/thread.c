/* SPDX-License-Identifier: MIT */
/*
 * Threads that are born CPUs: smmu_thread_create registers the new thread
 * before the application's function runs and reports the registration's
 * result to the creator; the CPU leaves when the function returns, or, if
 * the thread calls pthread_exit, through the registration's thread-exit
 * destructor (cpu.c) - so every way out unregisters.
 */
#include <errno.h>
#include <semaphore.h>

#include <softmmu/softmmu.h>

#include "cpu.h"
#include "shootdown.h"

/* On the creator's stack: valid until the creator has read `err`. */
struct start {
	struct smmu_mm *mm;
	struct smmu_cpu_config cfg;
	bool has_cfg;
	void *(*fn)(void *);
	void *arg;
	int err;
	sem_t registered;
};

static void *trampoline(void *p)
{
	struct start *st = p;
	void *(*fn)(void *) = st->fn;
	void *arg = st->arg;
	struct smmu_cpu *cpu;
	int err = smmu_cpu_register_ex(st->mm, st->has_cfg ? &st->cfg : NULL, &cpu);
	st->err = err;
	sem_post(&st->registered); /* st is gone after this */
	if (err)
		return NULL;
	void *ret = fn(arg);
	/* fn may have unregistered (or even registered anew): leave as
	 * whatever CPU this thread is now. */
	struct smmu_cpu *self = smmu_cpu_self();
	if (self)
		smmu_cpu_unregister(self);
	return ret;
}

SMMU_API int smmu_thread_create_ex(pthread_t *t, const pthread_attr_t *attr, struct smmu_mm *mm,
				   const struct smmu_cpu_config *cfg, void *(*fn)(void *), void *arg)
{
	if (!t || !fn || !mm)
		return -EINVAL;
	struct start st = { .mm = mm, .fn = fn, .arg = arg, .has_cfg = cfg != NULL };
	if (cfg)
		st.cfg = *cfg;
	if (sem_init(&st.registered, 0, 0))
		return -errno;
	pthread_t th;
	int err = pthread_create(&th, attr, trampoline, &st);
	if (err) {
		sem_destroy(&st.registered);
		return -err;
	}
	/* A calling CPU of an RCU mm must not hold up grace periods while it
	 * waits (the new thread's registration may itself wait for one). */
	struct smmu__cpu *self = smmu__cpu_self();
	bool was_reader = smmu__rcu_block_begin(self);
	while (sem_wait(&st.registered) && errno == EINTR)
		; /* a shootdown signal: answered, wait on */
	if (was_reader)
		smmu__rcu_block_end(self);
	sem_destroy(&st.registered);
	if (st.err) {
		/* The thread returns at once; if it was created detached there is
		 * nothing to join, and it touches nothing of ours any more. */
		int detached = PTHREAD_CREATE_JOINABLE;
		if (attr)
			pthread_attr_getdetachstate(attr, &detached);
		if (detached == PTHREAD_CREATE_JOINABLE)
			pthread_join(th, NULL);
		return st.err;
	}
	*t = th;
	return 0;
}

SMMU_API int smmu_thread_create(pthread_t *t, const pthread_attr_t *attr, struct smmu_mm *mm, void *(*fn)(void *),
				void *arg)
{
	return smmu_thread_create_ex(t, attr, mm, NULL, fn, arg);
}

SMMU_API int smmu_thread_join(pthread_t t, void **ret)
{
	/* A calling CPU of an RCU mm goes offline for the wait, as for any
	 * blocking call. */
	struct smmu__cpu *self = smmu__cpu_self();
	bool was_reader = smmu__rcu_block_begin(self);
	int err = pthread_join(t, ret);
	if (was_reader)
		smmu__rcu_block_end(self);
	return -err;
}
