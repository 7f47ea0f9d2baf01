/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "bench_remote.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "bench_util.h"

#define WAIT_LIMIT_NS (10ull * 1000000000ull)

enum { CMD_PARK, CMD_RUN, CMD_EXIT };
enum { ST_STARTING, ST_PARKED, ST_RUNNING, ST_EXITED };

/* ------------------------------------------------------------ the thread */

static void remote_bad(struct bench_remote *r, uint64_t addr, uint64_t got, unsigned k)
{
	bench_die("remote %s: load of %#" PRIx64 " returned %#" PRIx64 ", expected %#" PRIx64
		  " (the %s returned a wrong value)",
		  r->name, addr, got, bench_remote_want(k), r->kind == BENCH_REMOTE_HOST ? "host" : "library");
}

static uint64_t spin_cpu(struct bench_remote *r, uint64_t n)
{
	struct smmu_cpu *cpu = r->cpu;
	smmu_addr_t base = r->base;
	unsigned every = r->quiesce_every, left = every;

	while (__atomic_load_n(&r->cmd, __ATOMIC_RELAXED) == CMD_RUN) {
		unsigned k = (unsigned)n & (BENCH_REMOTE_PAGES - 1);
		smmu_addr_t a = base + (smmu_addr_t)k * BENCH_REMOTE_PAGE;
		uint64_t v = smmu_load64(cpu, a);

		if (v != bench_remote_want(k))
			remote_bad(r, a, v, k);
		if (r->touch && !(n & 7))
			smmu_try_load64(cpu, r->touch, &v); /* touch is unmapped at times: may fail */
		__atomic_store_n(&r->loads, ++n, __ATOMIC_RELAXED);
		if (every && --left == 0) {
			left = every;
			BENCH_CHECK(smmu_quiescent(cpu)); /* between accesses: a safepoint */
		}
	}
	return n;
}

static uint64_t spin_host(struct bench_remote *r, uint64_t n)
{
	const uint64_t *base = r->host;

	while (__atomic_load_n(&r->cmd, __ATOMIC_RELAXED) == CMD_RUN) {
		unsigned k = (unsigned)n & (BENCH_REMOTE_PAGES - 1);
		const uint64_t *a = base + (size_t)k * (BENCH_REMOTE_PAGE / 8);
		uint64_t v = __atomic_load_n(a, __ATOMIC_RELAXED);

		if (v != bench_remote_want(k))
			remote_bad(r, (uint64_t)(uintptr_t)a, v, k);
		__atomic_store_n(&r->loads, ++n, __ATOMIC_RELAXED);
	}
	return n;
}

static void *remote_main(void *arg)
{
	struct bench_remote *r = arg;
	uint64_t n = 0;
	int cmd;

	if (r->kind != BENCH_REMOTE_HOST) {
		BENCH_CHECK(smmu_cpu_register(r->mm, &r->cpu));
		/* join the mm's CPU set and fill the TLB */
		for (unsigned k = 0; k < BENCH_REMOTE_PAGES; k++) {
			smmu_addr_t a = r->base + (smmu_addr_t)k * BENCH_REMOTE_PAGE;
			uint64_t v = smmu_load64(r->cpu, a);

			if (v != bench_remote_want(k))
				remote_bad(r, a, v, k);
		}
		if (r->kind == BENCH_REMOTE_OFFLINE)
			bench_sink_u64(smmu_load64(r->cpu, r->probe)); /* an entry that must be flushed later */
	}
	for (;;) {
		/* about to block: a CPU goes offline first (it gets no signal) */
		if (r->cpu)
			BENCH_CHECK(smmu_cpu_offline(r->cpu));
		pthread_mutex_lock(&r->mu);
		__atomic_store_n(&r->state, ST_PARKED, __ATOMIC_RELEASE);
		while ((cmd = __atomic_load_n(&r->cmd, __ATOMIC_ACQUIRE)) == CMD_PARK)
			pthread_cond_wait(&r->cv, &r->mu);
		pthread_mutex_unlock(&r->mu);
		if (r->cpu)
			BENCH_CHECK(smmu_cpu_online(r->cpu));
		if (cmd == CMD_EXIT)
			break;
		if (r->kind == BENCH_REMOTE_OFFLINE)
			bench_die("remote %s: an offline remote was told to run", r->name);
		__atomic_store_n(&r->state, ST_RUNNING, __ATOMIC_RELEASE);
		n = r->kind == BENCH_REMOTE_CPU ? spin_cpu(r, n) : spin_host(r, n);
	}
	if (r->kind == BENCH_REMOTE_OFFLINE)
		r->probe_err = smmu_try_load64(r->cpu, r->probe, &r->probe_val);
	if (r->cpu)
		BENCH_CHECK(smmu_cpu_unregister(r->cpu));
	__atomic_store_n(&r->state, ST_EXITED, __ATOMIC_RELEASE);
	return NULL;
}

/* ------------------------------------------------------------ control */

int64_t bench_remote_oncpu_ns(const struct bench_remote *r)
{
	struct timespec ts;

	if (!r->have_clock || clock_gettime(r->clock, &ts) != 0)
		return -1;
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t bench_remote_loads(const struct bench_remote *r)
{
	return __atomic_load_n(&r->loads, __ATOMIC_RELAXED);
}

/* Spin (see bench_remote.h) until r is in state st. */
static void remote_wait_state(struct bench_remote *r, int st, const char *what)
{
	uint64_t t0 = bench_now_ns();

	while (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) != st) {
		if (bench_now_ns() - t0 > WAIT_LIMIT_NS)
			bench_die("remote %s: not %s after 10 s (state %d): hang?", r->name, what,
				  __atomic_load_n(&r->state, __ATOMIC_ACQUIRE));
		sched_yield();
	}
}

static void remote_command(struct bench_remote *r, int cmd)
{
	pthread_mutex_lock(&r->mu);
	__atomic_store_n(&r->cmd, cmd, __ATOMIC_RELEASE);
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

void bench_remote_start(struct bench_remote *r, enum bench_remote_kind kind, const char *name, struct smmu_mm *mm,
			smmu_addr_t base, smmu_addr_t probe, const uint64_t *host, int cpu)
{
	pthread_attr_t attr;
	int err;

	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->kind = kind;
	r->mm = mm;
	r->base = base;
	r->probe = probe;
	r->host = host;
	r->cmd = CMD_PARK;
	r->state = ST_STARTING;
	if ((err = pthread_mutex_init(&r->mu, NULL)) != 0 || (err = pthread_cond_init(&r->cv, NULL)) != 0)
		bench_die("remote %s: mutex/cond init: %s", name, strerror(err));
	if ((err = pthread_attr_init(&attr)) != 0)
		bench_die("remote %s: pthread_attr_init: %s", name, strerror(err));
	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if ((err = pthread_attr_setaffinity_np(&attr, sizeof(set), &set)) != 0)
			bench_die("remote %s: pthread_attr_setaffinity_np: %s", name, strerror(err));
	}
	if ((err = pthread_create(&r->th, &attr, remote_main, r)) != 0)
		bench_die("remote %s: pthread_create: %s", name, strerror(err));
	pthread_attr_destroy(&attr);
	r->have_clock = pthread_getcpuclockid(r->th, &r->clock) == 0;
	remote_wait_state(r, ST_PARKED, "parked after start");
}

void bench_remote_set_quiescent(struct bench_remote *r, unsigned every)
{
	if (r->kind != BENCH_REMOTE_CPU)
		bench_die("remote %s: only a CPU remote calls smmu_quiescent", r->name);
	/* parked: it reads this after it is woken (under its mutex) */
	r->quiesce_every = every;
}

void bench_remote_run(struct bench_remote *r)
{
	uint64_t l0 = bench_remote_loads(r), t0;

	remote_command(r, CMD_RUN);
	remote_wait_state(r, ST_RUNNING, "running");
	t0 = bench_now_ns();
	while (bench_remote_loads(r) < l0 + 64) {
		if (bench_now_ns() - t0 > WAIT_LIMIT_NS)
			bench_die("remote %s: running but no loads for 10 s: hang?", r->name);
		sched_yield();
	}
}

void bench_remote_park(struct bench_remote *r)
{
	remote_command(r, CMD_PARK);
	remote_wait_state(r, ST_PARKED, "parked");
}

void bench_remote_stop(struct bench_remote *r)
{
	int err;

	remote_command(r, CMD_EXIT);
	if ((err = pthread_join(r->th, NULL)) != 0)
		bench_die("remote %s: pthread_join: %s", r->name, strerror(err));
	if (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) != ST_EXITED)
		bench_die("remote %s: thread ended without exiting cleanly", r->name);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
}

/* ------------------------------------------------------------ placement */

static bool placement_done;
static int ncpus_allowed;
static int cpus_allowed[CPU_SETSIZE];

int bench_pin_main(void)
{
	cpu_set_t set;
	int err;

	if (placement_done)
		return ncpus_allowed;
	placement_done = true;
	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		bench_die("sched_getaffinity: %s", strerror(errno));
	for (int i = 0; i < CPU_SETSIZE; i++)
		if (CPU_ISSET(i, &set))
			cpus_allowed[ncpus_allowed++] = i;
	if (ncpus_allowed < 2)
		return ncpus_allowed;
	CPU_ZERO(&set);
	CPU_SET(cpus_allowed[0], &set);
	if ((err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set)) != 0)
		bench_die("pthread_setaffinity_np(main): %s", strerror(err));
	return ncpus_allowed;
}

int bench_main_cpu(void)
{
	return ncpus_allowed < 2 ? -1 : cpus_allowed[0];
}

int bench_remote_cpu(int i)
{
	return ncpus_allowed < 2 ? -1 : cpus_allowed[(i + 1) % ncpus_allowed];
}
