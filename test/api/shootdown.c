/* SPDX-License-Identifier: MIT */
/*
 * Signal shootdowns through the public API: who gets a signal and who does
 * not, catching up by generation, two initiators at once, threads that
 * block or exit while targeted, the signal's configuration.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <softmmu/softmmu.h>

#define PAGE 4096u

static struct smmu_pool *pool;
static struct smmu_mm *mm;
static smmu_addr_t base; /* 64 pages, read-write, populated */

static void setup(void)
{
	struct smmu_pool_config cfg = { .size = 4 << 20, .flags = SMMU_POOL_POISON };
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm), 0);
	cr_assert_eq(smmu_mmap(mm, 0, 64 * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE, &base), 0);
}

static void teardown(void)
{
	smmu_munmap(mm, base, 64 * PAGE);
	cr_expect_eq(smmu_pool_free_frames(pool), smmu_pool_frames(pool), "frames leaked");
	cr_expect_eq(smmu_mm_destroy(mm), 0);
	cr_expect_eq(smmu_pool_destroy(pool), 0);
}

static struct smmu_stats stats(void)
{
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(mm, &st), 0);
	return st;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* A CPU thread that a test steers through `cmd`; it answers with `state`. */
enum { CMD_NONE, CMD_LOAD, CMD_TOUCH, CMD_FLUSH, CMD_OFFLINE, CMD_ONLINE, CMD_SPIN, CMD_EXIT };
struct peer {
	pthread_t t;
	atomic_int cmd, state;
	smmu_addr_t addr;
	size_t pages; /* CMD_TOUCH: load the first word of each page from addr */
	atomic_int result;
	uint64_t value;
	bool touch;          /* load base once after registering */
	size_t tlb_entries;  /* 0: the default */
	struct smmu_cpu *cpu;
};

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	struct smmu_cpu *cpu;
	struct smmu_cpu_config cfg = { .tlb_entries = p->tlb_entries, .tlb_max_entries = p->tlb_entries };
	cr_assert_eq(smmu_cpu_register_ex(mm, &cfg, &cpu), 0);
	p->cpu = cpu;
	if (p->touch)
		smmu_load64(cpu, base);
	atomic_store(&p->state, 1);
	for (;;) {
		int cmd = atomic_exchange(&p->cmd, CMD_NONE);
		switch (cmd) {
		case CMD_LOAD:
			atomic_store(&p->result, smmu_try_load64(cpu, p->addr, &p->value));
			break;
		case CMD_TOUCH:
			for (size_t i = 0; i < p->pages; i++)
				smmu_load64(cpu, p->addr + i * PAGE);
			break;
		case CMD_FLUSH:
			cr_assert_eq(smmu_tlb_flush_all(cpu), 0);
			break;
		case CMD_OFFLINE:
			smmu_cpu_offline(cpu);
			break;
		case CMD_ONLINE:
			smmu_cpu_online(cpu);
			break;
		case CMD_SPIN:
			while (atomic_load(&p->cmd) == CMD_NONE)
				smmu_load64(cpu, base + PAGE); /* hits, answering signals */
			continue;
		case CMD_EXIT:
			smmu_cpu_unregister(cpu);
			return NULL;
		default:
			continue;
		}
		atomic_fetch_add(&p->state, 1);
	}
}

static void peer_start_tlb(struct peer *p, bool touch, size_t tlb_entries)
{
	memset(p, 0, sizeof(*p));
	p->touch = touch;
	p->tlb_entries = tlb_entries;
	pthread_create(&p->t, NULL, peer_main, p);
	while (!atomic_load(&p->state))
		sched_yield();
}

static void peer_start(struct peer *p, bool touch)
{
	peer_start_tlb(p, touch, 0);
}

static void peer_do(struct peer *p, int cmd)
{
	int s = atomic_load(&p->state);
	atomic_store(&p->cmd, cmd);
	while (atomic_load(&p->state) == s)
		sched_yield();
}

static int peer_load(struct peer *p, smmu_addr_t a)
{
	p->addr = a;
	peer_do(p, CMD_LOAD);
	return atomic_load(&p->result);
}

static void peer_stop(struct peer *p)
{
	atomic_store(&p->cmd, CMD_EXIT);
	pthread_join(p->t, NULL);
}

Test(shootdown, remote_entry_is_gone_after_munmap, .init = setup, .fini = teardown, .timeout = 30)
{
	struct peer p;
	peer_start(&p, true);
	cr_assert_eq(peer_load(&p, base + 3 * PAGE), 0); /* cached in the peer's TLB */
	struct smmu_stats before = stats();
	cr_assert_eq(smmu_munmap(mm, base + 3 * PAGE, PAGE), 0);
	struct smmu_stats after = stats();
	cr_assert_eq(after.signals_sent - before.signals_sent, 1);
	cr_assert_eq(after.signals_received - before.signals_received, 1);
	cr_assert_eq(peer_load(&p, base + 3 * PAGE), -EFAULT);
	peer_stop(&p);
}

/* A full flush in the handler may interrupt its thread in the middle of
 * swapping tables or resizing, so it never swaps (tlb.h): it clears the
 * active table in place, big or not. */
Test(shootdown, handler_clears_a_big_tlb_in_place, .init = setup, .fini = teardown, .timeout = 30)
{
	enum { N = 128 }; /* more than the fill log, more than the flush ceiling */
	smmu_addr_t big;
	cr_assert_eq(smmu_mmap(mm, 0, N * PAGE, SMMU_PROT_READ, SMMU_MAP_POPULATE, &big), 0);
	struct peer p;
	peer_start_tlb(&p, false, 1u << 14);
	p.addr = big;
	p.pages = N;
	/* A full flush on the peer's own thread first: the TLB's size is then
	 * steady, and a second full flush there would swap tables (tlb.h). */
	peer_do(&p, CMD_TOUCH);
	peer_do(&p, CMD_FLUSH);
	peer_do(&p, CMD_TOUCH);
	const struct smmu_tlb_entry *table = p.cpu->tlb;
	struct smmu_stats before = stats();
	cr_assert_eq(smmu_munmap(mm, big, N * PAGE), 0);
	struct smmu_stats after = stats();
	cr_assert_eq(after.signals_received - before.signals_received, 1);
	cr_assert_eq(after.flush_full - before.flush_full, 1);
	cr_assert_eq(after.flush_full_swapped, before.flush_full_swapped, "the handler swapped tables");
	cr_assert_eq(p.cpu->tlb, table);
	for (size_t i = 0; i < N; i += 17)
		cr_assert_eq(peer_load(&p, big + i * PAGE), -EFAULT);
	peer_stop(&p);
}

Test(shootdown, remote_write_entry_is_gone_after_mprotect, .init = setup, .fini = teardown, .timeout = 30)
{
	struct peer p;
	peer_start(&p, true);
	cr_assert_eq(peer_load(&p, base + 2 * PAGE), 0);
	cr_assert_eq(smmu_mprotect(mm, base, 64 * PAGE, SMMU_PROT_NONE), 0);
	cr_assert_eq(peer_load(&p, base + 2 * PAGE), -EACCES);
	cr_assert_eq(smmu_mprotect(mm, base, 64 * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE), 0);
	cr_assert_eq(peer_load(&p, base + 2 * PAGE), 0);
	peer_stop(&p);
}

Test(shootdown, more_access_sends_no_signal, .init = setup, .fini = teardown, .timeout = 30)
{
	struct peer p;
	peer_start(&p, true);
	cr_assert_eq(peer_load(&p, base + 5 * PAGE), 0);
	cr_assert_eq(smmu_mprotect(mm, base, 8 * PAGE, SMMU_PROT_READ), 0);
	struct smmu_stats before = stats();
	cr_assert_eq(smmu_mprotect(mm, base, 8 * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE), 0); /* upgrade */
	smmu_addr_t more;
	cr_assert_eq(smmu_mmap(mm, 0, 16 * PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_POPULATE, &more), 0);
	struct smmu_stats after = stats();
	cr_assert_eq(after.signals_sent, before.signals_sent, "an upgrade or a new mapping sent %llu signals",
		     (unsigned long long)(after.signals_sent - before.signals_sent));
	cr_assert_eq(after.shootdowns, before.shootdowns);
	cr_assert_eq(smmu_munmap(mm, more, 16 * PAGE), 0);
	peer_stop(&p);
}

Test(shootdown, offline_cpu_gets_no_signal_and_catches_up, .init = setup, .fini = teardown, .timeout = 30)
{
	struct peer p;
	peer_start(&p, true);
	cr_assert_eq(peer_load(&p, base + 7 * PAGE), 0);
	peer_do(&p, CMD_OFFLINE);
	struct smmu_stats before = stats();
	for (int i = 0; i < 20; i++) {
		smmu_addr_t got;
		cr_assert_eq(smmu_munmap(mm, base + 7 * PAGE, PAGE), 0);
		cr_assert_eq(smmu_mmap(mm, base + 7 * PAGE, PAGE, SMMU_PROT_READ, SMMU_MAP_FIXED, &got), 0);
	}
	cr_assert_eq(smmu_munmap(mm, base + 7 * PAGE, PAGE), 0);
	struct smmu_stats after = stats();
	cr_assert_eq(after.signals_sent, before.signals_sent, "an offline CPU was signalled");
	peer_do(&p, CMD_ONLINE); /* behind by generation: flushes */
	cr_assert_eq(peer_load(&p, base + 7 * PAGE), -EFAULT);
	peer_stop(&p);
}

Test(shootdown, cpu_that_never_loaded_gets_no_signal, .init = setup, .fini = teardown, .timeout = 30)
{
	struct peer p;
	peer_start(&p, false);
	struct smmu_stats before = stats();
	cr_assert_eq(smmu_munmap(mm, base, PAGE), 0);
	cr_assert_eq(smmu_mprotect(mm, base + PAGE, PAGE, SMMU_PROT_READ), 0);
	struct smmu_stats after = stats();
	cr_assert_eq(after.signals_sent, before.signals_sent);
	cr_assert_eq(peer_load(&p, base + PAGE), 0); /* joins the CPU set now */
	cr_assert_eq(smmu_mprotect(mm, base + PAGE, PAGE, SMMU_PROT_NONE), 0);
	cr_assert_eq(stats().signals_sent, after.signals_sent + 1);
	peer_stop(&p);
}

/* Two CPUs that unmap and remap their own pages while loading each other's:
 * each initiator waits for the other's acknowledgement and must answer the
 * other's signals meanwhile. */
struct duel {
	int me;
	atomic_int *ready;
	unsigned long loads;
	atomic_int progress; /* iterations done */
	struct duel *other;
};

static void *duelist(void *arg)
{
	struct duel *d = arg;
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	smmu_addr_t mine = base + (smmu_addr_t)(d->me * 16) * PAGE, theirs = base + (smmu_addr_t)((1 - d->me) * 16) * PAGE;
	smmu_load64(cpu, base + 40 * PAGE);
	atomic_fetch_add(d->ready, 1);
	while (atomic_load(d->ready) < 2)
		;
	for (int i = 0; i < 400; i++) {
		smmu_addr_t a = mine + (smmu_addr_t)(i % 16) * PAGE, got;
		uint64_t v;
		/* Keep in step (spinning outside any access still answers the
		 * other's signals), so that every unmap finds the other CPU's
		 * bit in the entry it clears. */
		while (atomic_load(&d->other->progress) < i)
			;
		cr_assert_eq(smmu_munmap(mm, a, PAGE), 0);
		cr_assert_eq(smmu_mmap(mm, a, PAGE, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &got), 0);
		smmu_store64(cpu, a, (uint64_t)i);
		if (smmu_try_load64(cpu, theirs + (smmu_addr_t)(i % 16) * PAGE, &v) == 0)
			d->loads++;
		atomic_store(&d->progress, i + 1);
	}
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	return NULL;
}

Test(shootdown, two_cpus_unmapping_at_once_do_not_deadlock, .init = setup, .fini = teardown, .timeout = 60)
{
	atomic_int ready = 0;
	struct duel d[2] = { { .me = 0, .ready = &ready }, { .me = 1, .ready = &ready } };
	d[0].other = &d[1];
	d[1].other = &d[0];
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, duelist, &d[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	struct smmu_stats st = stats();
	/* 768 unmaps find the other CPU's bit; a signal already in flight
	 * carries a later request too, so somewhat fewer are sent. */
	cr_assert_gt(st.shootdowns, 760);
	cr_assert_gt(st.signals_received, 400, "the unmaps should have signalled the other CPU (%llu)",
		     (unsigned long long)st.signals_received);
}

/* A CPU blocked in a system call while online is interrupted, answers, and
 * its call restarts (SA_RESTART). */
static int pipefd[2];
static atomic_int reader_blocked;
static char got_byte;
static ssize_t read_result;

static void *blocked_reader(void *arg)
{
	(void)arg;
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	smmu_load64(cpu, base + 9 * PAGE);
	atomic_store(&reader_blocked, 1);
	read_result = read(pipefd[0], &got_byte, 1);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	return NULL;
}

Test(shootdown, blocked_online_cpu_answers_and_its_call_restarts, .init = setup, .fini = teardown, .timeout = 30)
{
#if defined(__SANITIZE_THREAD__)
	/* TSan defers a signal that arrives in an intercepted blocking call
	 * such as read() until the call returns: it cannot show this. */
	cr_skip_test("ThreadSanitizer defers signals during read()");
#endif
	pthread_t t;
	cr_assert_eq(pipe(pipefd), 0);
	pthread_create(&t, NULL, blocked_reader, NULL);
	while (!atomic_load(&reader_blocked))
		sched_yield();
	sleep_ms(20);
	struct smmu_stats before = stats();
	cr_assert_eq(smmu_munmap(mm, base + 9 * PAGE, PAGE), 0); /* returns: the handler ran */
	cr_assert_eq(stats().signals_received, before.signals_received + 1);
	cr_assert_eq(write(pipefd[1], "x", 1), 1);
	pthread_join(t, NULL);
	cr_assert_eq(read_result, 1, "read() did not restart after the shootdown signal");
	cr_assert_eq(got_byte, 'x');
	close(pipefd[0]);
	close(pipefd[1]);
}

/* The handler preserves errno. */
static atomic_int errno_stop, errno_bad, errno_ready;

static void *errno_watcher(void *arg)
{
	(void)arg;
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	smmu_load64(cpu, base + 20 * PAGE);
	atomic_store(&errno_ready, 1);
	while (!atomic_load(&errno_stop)) {
		uint64_t v;
		errno = 4242;
		smmu_try_load64(cpu, base + 30 * PAGE, &v); /* cached: its unmaps target us */
		for (int i = 0; i < 100; i++)
			smmu_load64(cpu, base + 20 * PAGE);
		if (errno != 4242)
			atomic_store(&errno_bad, 1);
	}
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	return NULL;
}

Test(shootdown, handler_preserves_errno, .init = setup, .fini = teardown, .timeout = 30)
{
	pthread_t t;
	pthread_create(&t, NULL, errno_watcher, NULL);
	while (!atomic_load(&errno_ready))
		sched_yield();
	for (int i = 0; i < 300; i++) {
		smmu_addr_t got;
		cr_assert_eq(smmu_munmap(mm, base + 30 * PAGE, PAGE), 0);
		cr_assert_eq(smmu_mmap(mm, base + 30 * PAGE, PAGE, SMMU_PROT_READ, SMMU_MAP_FIXED, &got), 0);
	}
	atomic_store(&errno_stop, 1);
	pthread_join(t, NULL);
	cr_assert_eq(atomic_load(&errno_bad), 0, "errno changed under a shootdown signal");
	cr_assert_gt(stats().signals_received, 0);
}

/* CPUs that exit (without unregistering) while shootdowns target them. */
static void *short_lived(void *arg)
{
	(void)arg;
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register(mm, &cpu), 0);
	uint64_t v;
	for (int i = 0; i < 50; i++)
		smmu_try_load64(cpu, base + (smmu_addr_t)(i % 8) * PAGE, &v); /* may race an unmap */
	return NULL; /* the thread destructor unregisters */
}

Test(shootdown, cpus_exiting_while_targeted, .init = setup, .fini = teardown, .timeout = 60)
{
	for (int round = 0; round < 40; round++) {
		pthread_t t[3];
		for (int i = 0; i < 3; i++)
			pthread_create(&t[i], NULL, short_lived, NULL);
		for (int i = 0; i < 5; i++) {
			smmu_addr_t got;
			cr_assert_eq(smmu_munmap(mm, base + (smmu_addr_t)(i % 8) * PAGE, PAGE), 0);
			cr_assert_eq(smmu_mmap(mm, base + (smmu_addr_t)(i % 8) * PAGE, PAGE,
					       SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &got),
				     0);
		}
		for (int i = 0; i < 3; i++)
			pthread_join(t[i], NULL);
	}
	/* Every thread left through its destructor: teardown's destroy succeeds. */
}

Test(shootdown, signal_configuration)
{
	cr_assert_eq(smmu_shootdown_signal(), SIGRTMAX - 3);
	cr_assert_eq(smmu_shootdown_set_signal(SIGUSR1), -EINVAL);
	cr_assert_eq(smmu_shootdown_set_signal(SIGRTMAX + 1), -EINVAL);
	cr_assert_eq(smmu_shootdown_set_signal(0), -EINVAL);
	cr_assert_eq(smmu_shootdown_set_signal(SIGRTMAX - 5), 0);
	cr_assert_eq(smmu_shootdown_signal(), SIGRTMAX - 5);

	setup();
	struct peer p;
	peer_start(&p, true); /* installs SIGRTMAX - 5 */
	cr_assert_eq(smmu_shootdown_set_signal(SIGRTMAX - 4), -EBUSY);
	cr_assert_eq(smmu_shootdown_set_signal(SIGRTMAX - 5), 0); /* the one in use */
	cr_assert_eq(peer_load(&p, base + 4 * PAGE), 0);
	struct smmu_stats before = stats();
	cr_assert_eq(smmu_munmap(mm, base + 4 * PAGE, PAGE), 0);
	cr_assert_eq(stats().signals_received, before.signals_received + 1);
	struct sigaction sa;
	sigaction(SIGRTMAX - 5, NULL, &sa);
	cr_assert(sa.sa_flags & SA_SIGINFO, "the handler is not installed on the chosen signal");
	peer_stop(&p);
	teardown();

	/* No CPU left: the signal can change, and the old one is handed back. */
	cr_assert_eq(smmu_shootdown_set_signal(SIGRTMAX - 3), 0);
	sigaction(SIGRTMAX - 5, NULL, &sa);
	cr_assert(sa.sa_handler == SIG_DFL, "the previous disposition was not restored");
}
