/* SPDX-License-Identifier: MIT */
/*
 * TLB shootdown by POSIX signals.
 *
 * The protocol (every rule here has a test in test/protocol that fails when
 * the rule is broken, and the stress tests hammer all of them):
 *
 * Initiator (the gather's flush, smmu__flush_mm -> ops->flush, after the
 * entries were cleared), under mm->cpus_lock for steps 1 and 2:
 *   1. advance mm->flush_gen (seq_cst read-modify-write: a full fence);
 *   2. for each other CPU that is in the mm's CPU set
 *      (loaded), online, and whose bit is among those the cleared entries
 *      carried (pgtable.h: a CPU sets its bit in an entry before it fills
 *      its TLB from it): take a reference, then post - merge the range
 *      into its mailbox, number the request (req_seq), and only then
 *      exchange its signal_pending flag to 1, sending the signal only if
 *      the flag was 0 (so at most one signal is in flight to a CPU, and a
 *      request is either seen by a handler that has not yet read the
 *      mailbox or gets a signal of its own);
 *   3. flush its own TLB while the targets work;
 *   4. wait until each target's ack_seq reaches the request number (or the
 *      target goes offline: it will flush by generation before its next
 *      access): spin briefly, then sleep on the ack_seq futex.  Waiting is
 *      interruptible, so an initiator that is itself a CPU keeps answering
 *      other initiators' signals (two CPUs unmapping at once cannot
 *      deadlock);
 *   5. drop the references.  Only then does the gather free anything.
 *
 * Handler (async-signal-safe: atomics, no locks, no allocation; errno
 * preserved):
 *   1. clear signal_pending - before reading the mailbox;
 *   2. if the CPU is inside an access, only mark it deferred (in_access
 *      1 -> 3) and return:
 *      the interrupted access may be a miss that read the old PTE and will
 *      fill the TLB after the handler, so only a flush after the access
 *      ends removes what it used;
 *   3. otherwise process: read req_seq, take the merged range, flush it (a
 *      full flush when it is large or torn), then raise ack_seq to the
 *      request number read - as a maximum, never a plain store, since a
 *      deferred acknowledgement of an older request may run interleaved
 *      with a newer one - and wake sleeping initiators.
 *
 * End of an access: in_access -= 1 in one instruction (a signal cannot land
 * in the middle of it); a result of 2 means deferred: store 0, then
 * process as in handler step 3.
 *
 * Every operation named here is sequentially consistent (C11 seq_cst:
 * on x86 the stores and read-modify-writes are locked, the loads plain), so
 * each "before" is an edge in one total order - no separate fences, which
 * ThreadSanitizer could not see.
 *
 * Online/offline: offline clears `online`; online sets it, then compares
 * mm->flush_gen with seen_gen and flushes if behind.  With the initiator's
 * step 1 (bump, then read `online`), one of the two sees the other.  CPU
 * set: a CPU sets `loaded` before its first page-table walk, so an
 * initiator that cleared a PTE the CPU read before the clear finds it.
 *
 * Lock order: mm->cpus_lock is held only while numbering and posting
 * (steps 1-2), not while waiting - unless memory for the list of targets
 * ran out, when it waits for each batch with the lock held (slower, still
 * safe: a target blocked on the lock answers its signal).  A CPU leaving waits for sd_refs to
 * drain, still answering signals, before its state is freed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <softmmu/softmmu.h>

#include "alloc.h"
#include "cpu.h"
#include "gather.h"
#include "mm.h"
#include "pgtable.h"
#include "shootdown.h"
#include "testhook.h"
#include "util.h"

#if SMMU_TEST_HOOKS
void (*volatile smmu__test_hook)(enum smmu__hook point, struct smmu__cpu *c, int in_handler);
#endif

/* Spin this long for acknowledgements before sleeping (a signal round trip
 * on an idle peer takes about 15 us on the machines we measure). */
#define ACK_SPIN_NS 50000
#define ACK_SLEEP_NS 10000000 /* re-check online at least this often */

static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static int sig_chosen;   /* Sync: sig_lock.  0: the default */
static int sig_active;   /* Sync: sig_lock (written), atomic (read by initiators) */
static unsigned sig_users; /* Sync: sig_lock.  Registered CPUs in the process */
static struct sigaction sig_previous;

static int default_signal(void)
{
	return SIGRTMAX - 3;
}

SMMU_API int smmu_shootdown_set_signal(int signo)
{
	if (signo < SIGRTMIN || signo > SIGRTMAX)
		return -EINVAL;
	pthread_mutex_lock(&sig_lock);
	int err = 0;
	if (sig_users) {
		err = signo == __atomic_load_n(&sig_active, __ATOMIC_RELAXED) ? 0 : -EBUSY;
	} else {
		if (sig_active) { /* installed by earlier CPUs, all gone: hand it back */
			sigaction(sig_active, &sig_previous, NULL);
			__atomic_store_n(&sig_active, 0, __ATOMIC_RELAXED);
		}
		sig_chosen = signo;
	}
	pthread_mutex_unlock(&sig_lock);
	return err;
}

SMMU_API int smmu_shootdown_signal(void)
{
	pthread_mutex_lock(&sig_lock);
	int s = sig_active ? sig_active : sig_chosen ? sig_chosen : default_signal();
	pthread_mutex_unlock(&sig_lock);
	return s;
}

static long futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *timeout)
{
	return syscall(SYS_futex, (uint32_t *)addr, op, val, timeout, NULL, 0);
}

static void flush_range_or_all(struct smmu__cpu *c, uint64_t s, uint64_t e, int in_handler)
{
	if (s == UINT64_MAX && e == 0)
		return; /* nothing merged since the last take */
	/* A torn take (one bound from a request still being merged) or a large
	 * range: flush everything, which covers whatever was merged. */
	if (!smmu__flush_is_wide(c->mm, s, e))
		smmu__tlb_flush_range_local(c, s, e);
	else if (in_handler)
		smmu__tlb_flush_all_in_handler(c);
	else
		smmu__tlb_flush_all_local(c);
}

static void ack(struct smmu__cpu *c, uint32_t seq, int in_handler)
{
	SMMU_HOOK(SMMU_HOOK_BEFORE_ACK, c, in_handler);
#if SMMU_BREAK == 2
	atomic_store(&c->ack_seq, seq);
#else
	uint32_t cur = atomic_load(&c->ack_seq);
	while ((int32_t)(seq - cur) > 0 && !atomic_compare_exchange_weak(&c->ack_seq, &cur, seq))
		;
#endif
	SMMU_HOOK(SMMU_HOOK_ACKED, c, in_handler);
	if (atomic_load(&c->ack_waiters))
		futex(&c->ack_seq, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
}

/* Flush what the mailbox holds, then acknowledge every request numbered up
 * to the sequence read first (their ranges were merged before they were
 * numbered, so they are in the mailbox or were flushed by an earlier take). */
static void process(struct smmu__cpu *c, int in_handler)
{
	uint32_t seq = atomic_load(&c->req_seq);
	uint64_t s = atomic_exchange(&c->mb_start, UINT64_MAX);
	uint64_t e = atomic_exchange(&c->mb_end, 0);
	SMMU_HOOK(SMMU_HOOK_HANDLER_READ, c, in_handler);
	flush_range_or_all(c, s, e, in_handler);
	ack(c, seq, in_handler);
}

/* The end of an access (inline or in a slow path) found a deferred request. */
SMMU_API void smmu__access_exit_slow(struct smmu_cpu *cpu)
{
	struct smmu__cpu *c = smmu__cpu_of(cpu);
	smmu__cpu_count(c, SMMU_STAT_acks_deferred, 1);
	/* in_access is 2 (left, deferred).  A handler that lands before this
	 * store still sees "inside" and defers again; the store wipes that,
	 * harmlessly: process() below reads the mailbox after it. */
	__atomic_store_n(&c->pub.in_access, 0, __ATOMIC_RELAXED);
	atomic_signal_fence(memory_order_seq_cst);
	process(c, 0);
}


/* Fault injection, for tests: the nth handler run from arming stalls for
 * stall_ns before it does anything, as a thread descheduled on its way in
 * would. */
static struct smmu__inject stall_inject = SMMU_INJECT_INIT;
static _Atomic long stall_ns;

void smmu__signal_stall_after(long n, long ns)
{
	atomic_store(&stall_ns, ns);
	smmu__inject_arm(&stall_inject, n);
}

int smmu__signal_stall_fired(void)
{
	return atomic_load(&stall_inject.fired);
}

static void on_signal(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	int saved_errno = errno;
	if (unlikely(smmu__inject_check(&stall_inject))) {
		long ns = atomic_load(&stall_ns);
		struct timespec ts = { ns / 1000000000, ns % 1000000000 };
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
	}
	struct smmu__cpu *c = smmu__cpu_self();
	if (!c || c->magic != SMMU_CPU_MAGIC)
		goto out; /* a late signal to a thread that left */
	smmu__cpu_count(c, SMMU_STAT_signals_received, 1);
#if SMMU_BREAK == 3
	if (!c->pub.in_access) {
		process(c, 1); /* broken: reads the mailbox first ... */
		atomic_store(&c->signal_pending, 0); /* ... and clears the flag after */
		goto out;
	}
#endif
	atomic_store(&c->signal_pending, 0); /* seq_cst: before the mailbox reads */
#if SMMU_BREAK == 1
	process(c, 1); /* broken: flush and acknowledge even inside an access */
#else
	if (c->pub.in_access) {
		c->pub.in_access |= 2; /* 1 -> 3: the end of the access processes */
		SMMU_HOOK(SMMU_HOOK_HANDLER_DEFERRED, c, 1);
	} else {
		process(c, 1);
	}
#endif
out:
	errno = saved_errno;
}

static int cpu_attach(struct smmu__cpu *c)
{
	c->tid = (pid_t)syscall(SYS_gettid);
	atomic_store(&c->mb_start, UINT64_MAX);
	atomic_store(&c->mb_end, 0);
	pthread_mutex_lock(&sig_lock);
	if (!sig_active) {
		int signo = sig_chosen ? sig_chosen : default_signal();
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = on_signal;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
		sigemptyset(&sa.sa_mask);
		if (sigaction(signo, &sa, &sig_previous)) {
			int err = -errno;
			pthread_mutex_unlock(&sig_lock);
			return err;
		}
		__atomic_store_n(&sig_active, signo, __ATOMIC_RELAXED);
	}
	sig_users++;
	pthread_mutex_unlock(&sig_lock);
#if SMMU_TSAN
	/* ThreadSanitizer's runtime (GCC 12's libtsan) creates a thread's
	 * signal context lazily, without a compare-and-swap: a signal that
	 * lands while the thread's first blocking call creates it is recorded
	 * in a context that is then overwritten, and lost - its initiator
	 * waits forever.  A blocking call now, before any initiator can find
	 * this CPU, creates the context while nobody signals us. */
	struct timespec zero = { 0, 0 };
	nanosleep(&zero, NULL);
#endif
	/* The thread must be able to take the signal. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, __atomic_load_n(&sig_active, __ATOMIC_RELAXED));
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	return 0;
}

static void cpu_offline(struct smmu__cpu *c);

static void cpu_detach(struct smmu__cpu *c)
{
	/* Out of the mm's list already: no new initiator can take a reference.
	 * Those that hold one stop waiting once we are offline - a leaving CPU
	 * makes no more accesses, so it owes nobody a flush - so leaving never
	 * depends on a signal still in flight.  The handler answers anyway
	 * until we are gone. */
	atomic_store(&c->online, false);
	cpu_offline(c);
	while (atomic_load(&c->sd_refs)) {
		struct timespec ts = { 0, 1000 }; /* a sleep: signals are taken during it */
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&sig_lock);
	sig_users--;
	pthread_mutex_unlock(&sig_lock);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool acked(struct smmu__cpu *c, uint32_t req)
{
	return (int32_t)(atomic_load(&c->ack_seq) - req) >= 0 || !atomic_load(&c->online);
}

static void wait_ack(struct smmu__cpu *c, uint32_t req)
{
	uint64_t start = now_ns();
	while (!acked(c, req)) {
		if (now_ns() - start < ACK_SPIN_NS) {
			__builtin_ia32_pause();
			continue;
		}
#if SMMU_TSAN
		/* TSan takes signals only in calls it intercepts: sleep in one,
		 * so that an initiator that is a CPU still answers. */
		struct timespec nap = { 0, 10000 };
		nanosleep(&nap, NULL);
#else
		uint32_t seen = atomic_load(&c->ack_seq);
		atomic_fetch_add(&c->ack_waiters, 1);
		if (!acked(c, req)) {
			struct timespec ts = { 0, ACK_SLEEP_NS };
			futex(&c->ack_seq, FUTEX_WAIT_PRIVATE, seen, &ts);
		}
		atomic_fetch_sub(&c->ack_waiters, 1);
#endif
	}
}

static void merge_min(_Atomic uint64_t *p, uint64_t v)
{
	uint64_t cur = atomic_load(p);
	while (v < cur && !atomic_compare_exchange_weak(p, &cur, v))
		;
}

static void merge_max(_Atomic uint64_t *p, uint64_t v)
{
	uint64_t cur = atomic_load(p);
	while (v > cur && !atomic_compare_exchange_weak(p, &cur, v))
		;
}

/* Post [start, end) to c; returns the request number to wait for. */
static uint32_t post(struct smmu__cpu *c, smmu_addr_t start, smmu_addr_t end, struct smmu_mm *mm)
{
#if SMMU_BREAK == 4
	uint32_t was = atomic_load(&c->signal_pending); /* broken: reads the flag first */
	SMMU_HOOK(SMMU_HOOK_POSTED, c, 0);
	merge_min(&c->mb_start, start);
	merge_max(&c->mb_end, end);
	uint32_t req = atomic_fetch_add(&c->req_seq, 1) + 1;
	if (!was && !atomic_exchange(&c->signal_pending, 1)) {
#else
	merge_min(&c->mb_start, start);
	merge_max(&c->mb_end, end);
	uint32_t req = atomic_fetch_add(&c->req_seq, 1) + 1;
	SMMU_HOOK(SMMU_HOOK_POSTED, c, 0);
	if (!atomic_exchange(&c->signal_pending, 1)) {
#endif
		/* tgkill, not pthread_kill: glibc's blocks and restores every
		 * signal around it, two more system calls.  The thread cannot
		 * exit meanwhile: it waits for our reference (cpu_detach). */
		if (syscall(SYS_tgkill, (pid_t)getpid(), c->tid, __atomic_load_n(&sig_active, __ATOMIC_RELAXED)))
			SMMU_DIE("tgkill to CPU %u failed: %s", c->id, strerror(errno));
		smmu__stat_add(mm, SMMU_STAT_signals_sent, 1);
	}
	return req;
}

struct target {
	struct smmu__cpu *c;
	uint32_t req;
};

#define LOCAL_TARGETS 16

static void signal_flush(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end, bool full, uint32_t cpus)
{
	struct smmu__cpu *self = smmu__cpu_self();
	if (self && self->mm != mm)
		self = NULL;
	if (full) {
		start = 0;
		end = UINT64_MAX;
	}
	struct target local[LOCAL_TARGETS], *t = local;
	size_t cap = LOCAL_TARGETS, n = 0;
	pthread_mutex_lock(&mm->cpus_lock);
	/* Under the list lock, with the posts: a CPU leaving the list (switch)
	 * reads the generation under it too, and so knows that every flush up
	 * to what it read has posted to it. */
	uint64_t gen = smmu__flush_log(mm, start, end);
	if (mm->nr_cpus > cap) {
		struct target *heap = smmu__malloc(mm->nr_cpus * sizeof(*heap));
		if (heap) {
			t = heap;
			cap = mm->nr_cpus;
		}
	}
	for (struct smmu__cpu *c = mm->cpus; c; c = c->next) {
		if (c == self || !(cpus & smmu__cpu_bit(c->id)) || !atomic_load(&c->loaded) ||
		    !atomic_load(&c->online))
			continue;
		if (n == cap) {
			/* No memory for a longer list: wait for these targets
			 * with the list locked (slower, never wrong; a target
			 * blocked on the lock still answers its signal). */
			for (size_t i = 0; i < n; i++) {
				wait_ack(t[i].c, t[i].req);
				atomic_fetch_sub(&t[i].c->sd_refs, 1);
			}
			n = 0;
		}
		atomic_fetch_add(&c->sd_refs, 1);
		t[n].c = c;
		t[n].req = post(c, start, end, mm);
		n++;
	}
	pthread_mutex_unlock(&mm->cpus_lock);

	if (self) {
		if (full) {
			smmu__tlb_flush_all_local(self);
			self->seen_gen = gen;
		} else {
			smmu__tlb_flush_range_local(self, start, end);
		}
	}
	for (size_t i = 0; i < n; i++) {
		wait_ack(t[i].c, t[i].req);
		atomic_fetch_sub(&t[i].c->sd_refs, 1);
	}
	if (t != local)
		smmu__free(t, cap * sizeof(*t));
	smmu__stat_add(mm, SMMU_STAT_shootdowns, 1);
}

static void cpu_offline(struct smmu__cpu *c)
{
	/* Initiators asleep waiting for us may stop waiting now. */
	if (atomic_load(&c->ack_waiters))
		futex(&c->ack_seq, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
}

static void cpu_online(struct smmu__cpu *c)
{
	/* Online first (done), then compare: an initiator that advances the
	 * generation after that store sees us online and signals us; one that
	 * advanced it before, we see here. */
	smmu__tlb_catch_up(c);
}

static void cpu_leave(struct smmu__cpu *c, uint64_t gen)
{
	/* Every flush up to gen posted to us under the list lock before we
	 * left it, if we could hold its translations; process them now, into
	 * this mm's TLB, and acknowledge.  An offline CPU was skipped instead,
	 * and keeps the generation it will catch up from. */
	process(c, 0);
	if (atomic_load(&c->online))
		c->seen_gen = gen;
}

static void quiescent(struct smmu__cpu *c)
{
	(void)c; /* signals need no quiescent states */
}

const struct smmu__shootdown_ops smmu__shootdown_signal = {
	.name = "signal",
	.cpu_attach = cpu_attach,
	.cpu_detach = cpu_detach,
	.cpu_offline = cpu_offline,
	.cpu_online = cpu_online,
	.cpu_leave = cpu_leave,
	.quiescent = quiescent,
	.defer_free = NULL,
	.flush = signal_flush,
};
