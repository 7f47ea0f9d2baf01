/* SPDX-License-Identifier: MIT */
#ifndef BENCH_REMOTE_H
#define BENCH_REMOTE_H

/*
 * Remote threads for the benches that need "another CPU running" while the
 * main thread changes mappings, and the CPU pinning that keeps such a
 * remote running.
 *
 * A remote loads, in a loop while it is told to run, from pages
 * 0..BENCH_REMOTE_PAGES-1 of an area (BENCH_REMOTE_PAGE bytes apart) and
 * checks the values: page k must hold bench_remote_want(k) at offset 0.
 *   BENCH_REMOTE_CPU      a thread registered as a CPU of an mm, smmu_load64
 *                         loop over the area in the mm (and, if touch is
 *                         set, smmu_try_load64 of touch every 8th load; if
 *                         quiesce_every is set, smmu_quiescent after every
 *                         quiesce_every loads: the CPU of an RCU-mode mm);
 *   BENCH_REMOTE_HOST     a plain thread, relaxed atomic 64-bit loads of the
 *                         area in the process;
 *   BENCH_REMOTE_OFFLINE  a CPU of the mm that loads the area and probe once,
 *                         goes offline and sleeps; on stop it comes back
 *                         online and tries probe (probe_err, probe_val).
 * Between runs a remote is parked: blocked on a condition variable, and a
 * CPU offline first (so it gets no signal, and an RCU-mode mm's grace
 * periods do not wait for it: a parked online QSBR reader would hold every
 * grace period forever).
 *
 * The main thread waits for a remote by spinning with sched_yield, never by
 * blocking: it is an online CPU of the mm and the only thread that changes
 * mappings, so nobody waits for it meanwhile; it does not go offline
 * because coming back online after its own flushes would flush its whole
 * TLB.  (Of an RCU-mode mm, whose grace periods would wait for it, the
 * main thread of bench-shootdown is online only while it works on the mm.)
 * A state change that takes more than 10 s, or a wrong value loaded, stops
 * the bench (bench_die).
 */

#include <softmmu/softmmu.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define BENCH_REMOTE_PAGES 4    /* pages a remote loads (power of two) */
#define BENCH_REMOTE_PAGE 4096u /* bytes between them */

/* What page k of a remote's area holds at offset 0. */
static inline uint64_t bench_remote_want(unsigned k)
{
	return 0x5eed5eed00000000ull | k;
}

enum bench_remote_kind {
	BENCH_REMOTE_CPU,     /* a CPU of the mm, smmu_load64 loop */
	BENCH_REMOTE_HOST,    /* a plain thread, host load loop */
	BENCH_REMOTE_OFFLINE, /* a CPU of the mm that loads once, goes offline and sleeps */
};

struct bench_remote {
	char name[32];
	enum bench_remote_kind kind;
	struct smmu_mm *mm;
	smmu_addr_t base;       /* CPU / OFFLINE: the area in the mm */
	smmu_addr_t probe;      /* OFFLINE: loaded before going offline and tried after */
	smmu_addr_t touch;      /* CPU: also load this page every 8th load, 0: never; set while parked */
	unsigned quiesce_every; /* CPU: smmu_quiescent after every this many loads, 0: never; set while parked */
	const uint64_t *host;   /* HOST: the area in the process */
	struct smmu_cpu *cpu;
	pthread_t th;
	clockid_t clock; /* its CPU-time clock */
	bool have_clock;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int cmd;   /* atomic; written under mu */
	int state; /* atomic */
	int probe_err;
	uint64_t probe_val;
	_Alignas(64) uint64_t loads; /* atomic: loads done so far (written by the remote only) */
	char pad[56];
};

/*
 * Start remote r of the given kind (mm and base: CPU / OFFLINE; probe:
 * OFFLINE, else 0; host: HOST, else NULL), pinned to cpu (-1: not pinned),
 * and return once it is parked.
 */
void bench_remote_start(struct bench_remote *r, enum bench_remote_kind kind, const char *name, struct smmu_mm *mm,
			smmu_addr_t base, smmu_addr_t probe, const uint64_t *host, int cpu);

/* CPU remote r (parked) calls smmu_quiescent after every `every` loads
 * from its next run on (0: never, the default).  An RCU-mode mm's CPU
 * remotes need it, or munmap waits for them forever. */
void bench_remote_set_quiescent(struct bench_remote *r, unsigned every);

/* Start r loading and return once it has been seen to load. */
void bench_remote_run(struct bench_remote *r);

/* Stop r loading and return once it is parked. */
void bench_remote_park(struct bench_remote *r);

/* End r's thread (checked) and free r's resources. */
void bench_remote_stop(struct bench_remote *r);

/* Loads r has done so far. */
uint64_t bench_remote_loads(const struct bench_remote *r);

/* Nanoseconds r's thread has run so far (its CPU-time clock, which the
 * kernel brings up to date when read), or -1 if unavailable. */
int64_t bench_remote_oncpu_ns(const struct bench_remote *r);

/* ------------------------------------------------------------ placement */

/*
 * bench_pin_main: pin the main thread to the first allowed CPU; remote i
 * goes to the ((i + 1) mod n)-th (bench_remote_cpu).  Without that, a
 * remote woken by the main thread tends to be queued on the main thread's
 * core and waits there for milliseconds, and the "other CPU" is not
 * running.  With one allowed CPU nothing is pinned.  Returns the number of
 * allowed CPUs.  Only the first call does anything.
 */
int bench_pin_main(void);

/* The CPU the main thread is pinned to, or -1 if it is not pinned. */
int bench_main_cpu(void);

/* The CPU for remote i, or -1 (one allowed CPU: not pinned). */
int bench_remote_cpu(int i);

#endif
