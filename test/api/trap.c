/* SPDX-License-Identifier: MIT */
/*
 * Trap handlers: a handler that records the fault and fixes the mapping so
 * that the retried access succeeds (smmu_mprotect, smmu_mmap FIXED,
 * smmu_munmap of something else when the pool ran out), one that longjmps
 * out, one that ends its thread with pthread_exit, atomics on read-only and
 * misaligned addresses, and the default handler's abort.  Public API only.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <softmmu/softmmu.h>

#include "common.h"

static smmu_addr_t map(struct env *e, smmu_addr_t addr, size_t len, int prot, int flags)
{
	smmu_addr_t out = 0;
	cr_assert_eq(smmu_mmap(e->mm, addr, len, prot, flags, &out), 0);
	return out;
}

/* What a handler does with a fault. */
enum action {
	FIX_MPROTECT_RW,   /* mprotect the faulting page(s) read-write */
	FIX_MPROTECT_R,    /* mprotect the faulting page(s) read-only */
	FIX_MMAP,          /* mmap FIXED read-write over the faulting page(s) */
	FIX_MUNMAP_VICTIM, /* unmap `victim` to give a frame back */
	JUMP,              /* longjmp out */
	FIX_SECOND_TIME,   /* return without fixing once, then mprotect RW */
};

struct rec {
	enum action action;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	smmu_addr_t victim;
	int calls;
	int fix_err;
	struct smmu_fault f[8];
	jmp_buf jmp;
};

static void fix_range(struct rec *r, const struct smmu_fault *f, int prot, int mmap)
{
	smmu_addr_t first = f->addr & ~(smmu_addr_t)(PS - 1);
	smmu_addr_t last = (f->addr + f->size - 1) & ~(smmu_addr_t)(PS - 1);
	for (smmu_addr_t p = first; p <= last; p += PS) {
		int err;
		if (mmap) {
			struct smmu_region reg;
			if (smmu_mm_find(r->mm, p, &reg) == 0 && reg.start <= p)
				continue; /* already mapped: the other page of a crossing access */
			smmu_addr_t out;
			err = smmu_mmap(r->mm, p, PS, prot, SMMU_MAP_FIXED, &out);
		} else {
			err = smmu_mprotect(r->mm, p, PS, prot);
		}
		if (err && !r->fix_err)
			r->fix_err = err;
	}
}

static void handler(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	struct rec *r = arg;
	if (r->calls < 8)
		r->f[r->calls] = *f;
	r->calls++;
	if (cpu != r->cpu && !r->fix_err)
		r->fix_err = -1000;
	if (r->calls > 100)
		abort(); /* a handler that keeps getting called: the retry never succeeds */
	switch (r->action) {
	case FIX_MPROTECT_RW:
		fix_range(r, f, RW, 0);
		break;
	case FIX_MPROTECT_R:
		fix_range(r, f, R, 0);
		break;
	case FIX_MMAP:
		fix_range(r, f, RW, 1);
		break;
	case FIX_MUNMAP_VICTIM:
		if (smmu_munmap(r->mm, r->victim, PS) && !r->fix_err)
			r->fix_err = -1001;
		r->victim += PS;
		break;
	case JUMP:
		longjmp(r->jmp, 1);
	case FIX_SECOND_TIME:
		if (r->calls >= 2)
			fix_range(r, f, RW, 0);
		break;
	}
}

static void install(struct env *e, struct rec *r, enum action a)
{
	memset(r, 0, sizeof(*r));
	r->action = a;
	r->mm = e->mm;
	r->cpu = e->cpu;
	cr_assert_eq(smmu_cpu_set_trap_handler(e->cpu, handler, r), 0);
}

static void expect_fault(const struct rec *r, int i, smmu_addr_t addr, size_t size, enum smmu_access_kind kind, int err,
			 unsigned cpu_id)
{
	cr_assert_gt(r->calls, i);
	cr_assert_eq(r->f[i].addr, addr, "fault %d addr 0x%llx", i, (unsigned long long)r->f[i].addr);
	cr_assert_eq(r->f[i].size, size, "fault %d size", i);
	cr_assert_eq(r->f[i].kind, kind, "fault %d kind", i);
	cr_assert_eq(r->f[i].error, err, "fault %d error %d", i, r->f[i].error);
	cr_assert_eq(r->f[i].cpu_id, cpu_id, "fault %d cpu_id", i);
	cr_assert_eq(r->fix_err, 0, "the handler's fix failed: %d", r->fix_err);
}

/* ------------------------------------------------------------ fixing handlers */

Test(trap, mmap_fixed_in_handler_unmapped_store_and_load)
{
	struct env e;
	env_init(&e, 16, SMMU_SHOOTDOWN_SIGNAL, 0);
	struct rec r;
	install(&e, &r, FIX_MMAP);
	unsigned id = smmu_cpu_id(e.cpu);

	smmu_store8(e.cpu, H + 1, 0xab);
	expect_fault(&r, 0, H + 1, 1, SMMU_ACCESS_WRITE, -EFAULT, id);
	cr_assert_eq(r.calls, 1);
	cr_assert_eq(smmu_load8(e.cpu, H + 1), 0xab);
	smmu_store16(e.cpu, H + PS + 2, 0xabcd);
	expect_fault(&r, 1, H + PS + 2, 2, SMMU_ACCESS_WRITE, -EFAULT, id);
	smmu_store32(e.cpu, H + 2 * PS + 4, 0xabcdef01);
	expect_fault(&r, 2, H + 2 * PS + 4, 4, SMMU_ACCESS_WRITE, -EFAULT, id);
	smmu_store64(e.cpu, H + 3 * PS + 8, 0x0123456789abcdefull);
	expect_fault(&r, 3, H + 3 * PS + 8, 8, SMMU_ACCESS_WRITE, -EFAULT, id);
	cr_assert_eq(r.calls, 4);
	cr_assert_eq(smmu_load16(e.cpu, H + PS + 2), 0xabcd);
	cr_assert_eq(smmu_load32(e.cpu, H + 2 * PS + 4), 0xabcdef01);
	cr_assert_eq(smmu_load64(e.cpu, H + 3 * PS + 8), 0x0123456789abcdefull);

	/* Loads: the handler's fresh mapping reads zero. */
	cr_assert_eq(smmu_load8(e.cpu, H + 10 * PS), 0);
	expect_fault(&r, 4, H + 10 * PS, 1, SMMU_ACCESS_READ, -EFAULT, id);
	cr_assert_eq(smmu_load16(e.cpu, H + 11 * PS), 0);
	cr_assert_eq(smmu_load32(e.cpu, H + 12 * PS), 0);
	cr_assert_eq(smmu_load64(e.cpu, H + 13 * PS + 16), 0);
	expect_fault(&r, 7, H + 13 * PS + 16, 8, SMMU_ACCESS_READ, -EFAULT, id);
	cr_assert_eq(r.calls, 8);
	/* Atomics too. */
	cr_assert_eq(smmu_fetch_add64(e.cpu, H + 20 * PS, 5), 0);
	cr_assert_eq(r.calls, 9);
	cr_assert_eq(smmu_load64(e.cpu, H + 20 * PS), 5);
	env_fini(&e);
}

Test(trap, mprotect_in_handler_store_to_readonly)
{
	struct env e;
	env_init(&e, 8, SMMU_SHOOTDOWN_SIGNAL, 0);
	smmu_addr_t a = map(&e, H, 2 * PS, RW, SMMU_MAP_FIXED);
	for (size_t off = 0; off < 2 * PS; off += 8)
		smmu_store64(e.cpu, a + off, off | 0x100000);
	cr_assert_eq(smmu_mprotect(e.mm, a, 2 * PS, R), 0);
	struct rec r;
	install(&e, &r, FIX_MPROTECT_RW);

	smmu_store32(e.cpu, a + 40, 0xdeadbeef); /* TLB held a write entry before */
	expect_fault(&r, 0, a + 40, 4, SMMU_ACCESS_WRITE, -EACCES, smmu_cpu_id(e.cpu));
	cr_assert_eq(r.calls, 1);
	cr_assert_eq(smmu_load32(e.cpu, a + 40), 0xdeadbeef);
	for (size_t off = 0; off < 2 * PS; off += 8)
		if (off != 40)
			cr_assert_eq(smmu_load64(e.cpu, a + off), off | 0x100000);
	struct smmu_region reg;
	cr_assert_eq(smmu_mm_find(e.mm, a, &reg), 0);
	cr_assert_eq(reg.end, a + PS, "only the faulting page was opened");
	/* A crossing store into the second, still read-only page. */
	smmu_store64(e.cpu, a + PS - 4, 0x1122334455667788ull);
	expect_fault(&r, 1, a + PS - 4, 8, SMMU_ACCESS_WRITE, -EACCES, smmu_cpu_id(e.cpu));
	cr_assert_eq(smmu_load64(e.cpu, a + PS - 4), 0x1122334455667788ull);
	cr_assert_eq(r.calls, 2);
	env_fini(&e);
}

Test(trap, mprotect_in_handler_load_from_none_keeps_data)
{
	struct env e;
	env_init(&e, 8, SMMU_SHOOTDOWN_SIGNAL, 0);
	smmu_addr_t a = map(&e, H, PS, RW, SMMU_MAP_FIXED);
	smmu_store64(e.cpu, a + 8, 0x5555aaaa5555aaaaull);
	cr_assert_eq(smmu_mprotect(e.mm, a, PS, NONE), 0);
	struct rec r;
	install(&e, &r, FIX_MPROTECT_R);
	cr_assert_eq(smmu_load64(e.cpu, a + 8), 0x5555aaaa5555aaaaull);
	expect_fault(&r, 0, a + 8, 8, SMMU_ACCESS_READ, -EACCES, smmu_cpu_id(e.cpu));
	cr_assert_eq(r.calls, 1);
	/* Now read-only: the store traps again, and the handler makes it RW. */
	r.action = FIX_MPROTECT_RW;
	smmu_store8(e.cpu, a + 8, 0);
	expect_fault(&r, 1, a + 8, 1, SMMU_ACCESS_WRITE, -EACCES, smmu_cpu_id(e.cpu));
	cr_assert_eq(smmu_load64(e.cpu, a + 8), 0x5555aaaa5555aa00ull);
	env_fini(&e);
}

Test(trap, handler_may_return_without_fixing_then_retry)
{
	struct env e;
	env_init(&e, 8, SMMU_SHOOTDOWN_SIGNAL, 0);
	smmu_addr_t a = map(&e, H, PS, R, SMMU_MAP_FIXED);
	struct rec r;
	install(&e, &r, FIX_SECOND_TIME);
	smmu_store64(e.cpu, a, 9);
	cr_assert_eq(r.calls, 2, "a handler that returns gets the retried access's fault again");
	expect_fault(&r, 1, a, 8, SMMU_ACCESS_WRITE, -EACCES, smmu_cpu_id(e.cpu));
	cr_assert_eq(smmu_load64(e.cpu, a), 9);
	env_fini(&e);
}

Test(trap, crossing_access_reports_first_byte)
{
	struct env e;
	env_init(&e, 8, SMMU_SHOOTDOWN_SIGNAL, 0);
	smmu_addr_t a = map(&e, H, PS, RW, SMMU_MAP_FIXED);
	smmu_store64(e.cpu, a + PS - 8, 0x1111111111111111ull);
	struct rec r;
	install(&e, &r, FIX_MMAP);
	smmu_store64(e.cpu, a + PS - 3, 0x8877665544332211ull);
	expect_fault(&r, 0, a + PS - 3, 8, SMMU_ACCESS_WRITE, -EFAULT, smmu_cpu_id(e.cpu));
	cr_assert_eq(r.calls, 1);
	cr_assert_eq(smmu_load64(e.cpu, a + PS - 8), 0x3322111111111111ull);
	cr_assert_eq(smmu_load64(e.cpu, a + PS), 0x0000008877665544ull);
	/* A crossing load from a mapped page into an unmapped one. */
	cr_assert_eq(smmu_load32(e.cpu, a + 2 * PS - 2), 0);
	expect_fault(&r, 1, a + 2 * PS - 2, 4, SMMU_ACCESS_READ, -EFAULT, smmu_cpu_id(e.cpu));
	env_fini(&e);
}

/* ------------------------------------------------------------ atomics */

Test(trap, atomics_on_readonly_page)
{
	struct env e;
	env_init(&e, 8, SMMU_SHOOTDOWN_SIGNAL, 0);
	smmu_addr_t a = map(&e, H, 3 * PS, RW, SMMU_MAP_FIXED);
	for (int i = 0; i < 3; i++)
		smmu_store64(e.cpu, a + i * PS + 16, 100 + i);
	cr_assert_eq(smmu_mprotect(e.mm, a, 3 * PS, R), 0);
	struct rec r;
	install(&e, &r, FIX_MPROTECT_RW);
	unsigned id = smmu_cpu_id(e.cpu);

	cr_assert_eq(smmu_cmpxchg64(e.cpu, a + 16, 100, 200), 100);
	expect_fault(&r, 0, a + 16, 8, SMMU_ACCESS_ATOMIC, -EACCES, id);
	cr_assert_eq(smmu_load64(e.cpu, a + 16), 200);
	cr_assert_eq(smmu_fetch_add64(e.cpu, a + PS + 16, 5), 101);
	expect_fault(&r, 1, a + PS + 16, 8, SMMU_ACCESS_ATOMIC, -EACCES, id);
	cr_assert_eq(smmu_load64(e.cpu, a + PS + 16), 106);
	cr_assert_eq(smmu_xchg64(e.cpu, a + 2 * PS + 16, 7), 102);
	expect_fault(&r, 2, a + 2 * PS + 16, 8, SMMU_ACCESS_ATOMIC, -EACCES, id);
	cr_assert_eq(smmu_load64(e.cpu, a + 2 * PS + 16), 7);
	cr_assert_eq(r.calls, 3);

	/* PROT_NONE and unmapped too. */
	cr_assert_eq(smmu_mprotect(e.mm, a, PS, NONE), 0);
	cr_assert_eq(smmu_fetch_add64(e.cpu, a + 16, 1), 200);
	expect_fault(&r, 3, a + 16, 8, SMMU_ACCESS_ATOMIC, -EACCES, id);
	r.action = FIX_MMAP;
	cr_assert_eq(smmu_cmpxchg64(e.cpu, H + 10 * PS, 0, 1), 0);
	expect_fault(&r, 4, H + 10 * PS, 8, SMMU_ACCESS_ATOMIC, -EFAULT, id);
	cr_assert_eq(smmu_load64(e.cpu, H + 10 * PS), 1);
	env_fini(&e);
}

Test(trap, atomic_misaligned_reports_einval)
{
	struct env e;
	env_init(&e, 8, SMMU_SHOOTDOWN_SIGNAL, 0);
	smmu_addr_t a = map(&e, H, PS, RW, SMMU_MAP_FIXED);
	smmu_store64(e.cpu, a, 0x0102030405060708ull);
	smmu_store64(e.cpu, a + 8, 0x1112131415161718ull);
	struct rec r;
	install(&e, &r, JUMP);
	unsigned id = smmu_cpu_id(e.cpu);
	const unsigned mis[] = {1, 2, 4, 7};
	volatile int n = 0;
	for (volatile int op = 0; op < 3; op++) {
		for (volatile size_t i = 0; i < 4; i++) {
			if (setjmp(r.jmp) == 0) {
				smmu_addr_t p = a + mis[i];
				if (op == 0)
					(void)smmu_cmpxchg64(e.cpu, p, 0, 1);
				else if (op == 1)
					(void)smmu_fetch_add64(e.cpu, p, 1);
				else
					(void)smmu_xchg64(e.cpu, p, 1);
				cr_assert_fail("misaligned atomic returned");
			}
			expect_fault(&r, 0, a + mis[i], 8, SMMU_ACCESS_ATOMIC, -EINVAL, id);
			n++;
			r.calls = 0;
		}
	}
	cr_assert_eq(n, 12);
	cr_assert_eq(smmu_load64(e.cpu, a), 0x0102030405060708ull, "a misaligned atomic wrote");
	cr_assert_eq(smmu_load64(e.cpu, a + 8), 0x1112131415161718ull);
	/* Still a usable CPU. */
	cr_assert_eq(smmu_fetch_add64(e.cpu, a + 8, 1), 0x1112131415161718ull);
	env_fini(&e);
}

/* ------------------------------------------------------------ longjmp out */

Test(trap, longjmp_out_then_cpu_still_usable)
{
	struct env e;
	env_init(&e, 8, SMMU_SHOOTDOWN_SIGNAL, 0);
	smmu_addr_t a = map(&e, H, PS, RW, SMMU_MAP_FIXED);
	smmu_addr_t ro = map(&e, H + 2 * PS, PS, R, SMMU_MAP_FIXED);
	struct rec r;
	install(&e, &r, JUMP);
	volatile int jumped = 0;
	if (setjmp(r.jmp) == 0) {
		(void)smmu_load64(e.cpu, H + 5 * PS);
		cr_assert_fail("load from a hole returned");
	} else {
		jumped++;
	}
	expect_fault(&r, 0, H + 5 * PS, 8, SMMU_ACCESS_READ, -EFAULT, smmu_cpu_id(e.cpu));
	if (setjmp(r.jmp) == 0) {
		smmu_store16(e.cpu, ro + 6, 1);
		cr_assert_fail("store to read-only memory returned");
	} else {
		jumped++;
	}
	expect_fault(&r, 1, ro + 6, 2, SMMU_ACCESS_WRITE, -EACCES, smmu_cpu_id(e.cpu));
	cr_assert_eq(jumped, 2);
	cr_assert_eq(smmu_load16(e.cpu, ro + 6), 0, "the refused store wrote");

	/* The CPU works on, and faults still reach the handler. */
	smmu_store64(e.cpu, a, 77);
	cr_assert_eq(smmu_load64(e.cpu, a), 77);
	if (setjmp(r.jmp) == 0) {
		smmu_store64(e.cpu, H + 6 * PS, 1);
		cr_assert_fail("store to a hole returned");
	}
	cr_assert_eq(r.calls, 3);

	/* The try_ forms and bulk copies never trap. */
	uint64_t v;
	cr_assert_eq(smmu_try_load64(e.cpu, H + 5 * PS, &v), -EFAULT);
	cr_assert_eq(smmu_try_store8(e.cpu, ro, 1), -EACCES);
	unsigned char buf[8] = {0};
	cr_assert_eq(smmu_read(e.cpu, H + 5 * PS, buf, 8), -EFAULT);
	cr_assert_eq(smmu_write(e.cpu, ro, buf, 8), -EACCES);
	cr_assert_eq(r.calls, 3, "a try_ or bulk access called the trap handler");
	env_fini(&e);
}

/* ------------------------------------------------------------ out of frames */

Test(trap, enomem_handler_frees_a_frame)
{
	struct env e;
	env_init(&e, 4, SMMU_SHOOTDOWN_SIGNAL, 0);
	smmu_addr_t a = map(&e, H, 6 * PS, RW, SMMU_MAP_FIXED);
	for (int i = 0; i < 4; i++)
		smmu_store64(e.cpu, a + i * PS, i + 1);
	cr_assert_eq(smmu_pool_free_frames(e.pool), 0);
	struct rec r;
	install(&e, &r, FIX_MUNMAP_VICTIM);
	r.victim = a;
	smmu_store64(e.cpu, a + 4 * PS, 55);
	expect_fault(&r, 0, a + 4 * PS, 8, SMMU_ACCESS_WRITE, -ENOMEM, smmu_cpu_id(e.cpu));
	cr_assert_eq(r.calls, 1);
	cr_assert_eq(smmu_load64(e.cpu, a + 4 * PS), 55);
	cr_assert_eq(smmu_load64(e.cpu, a + 3 * PS), 4);
	/* A load of a fresh page needs a frame too. */
	cr_assert_eq(smmu_load64(e.cpu, a + 5 * PS), 0);
	expect_fault(&r, 1, a + 5 * PS, 8, SMMU_ACCESS_READ, -ENOMEM, smmu_cpu_id(e.cpu));
	uint64_t v = 3;
	cr_assert_eq(smmu_try_load64(e.cpu, a, &v), -EFAULT, "the victim page is gone");
	cr_assert_eq(smmu_load64(e.cpu, a + 2 * PS), 3);
	env_fini(&e);
}

/* ------------------------------------------------------------ pthread_exit */

struct exit_ctx {
	struct smmu_mm *mm;
	int reached_after;
	unsigned id;
};

static void exiting_handler(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	(void)cpu;
	(void)f;
	(void)arg;
	pthread_exit(NULL);
}

static void *exiting_thread(void *arg)
{
	struct exit_ctx *c = arg;
	struct smmu_cpu *cpu;
	if (smmu_cpu_register(c->mm, &cpu))
		return NULL;
	c->id = smmu_cpu_id(cpu) + 1;
	smmu_cpu_set_trap_handler(cpu, exiting_handler, NULL);
	smmu_store64(cpu, H, 1);        /* demand-zero, fine */
	(void)smmu_load64(cpu, H + PS); /* a hole: the handler ends the thread */
	c->reached_after = 1;
	return NULL;
}

Test(trap, pthread_exit_in_handler_unregisters)
{
	struct env e;
	env_init(&e, 8, SMMU_SHOOTDOWN_SIGNAL, 0);
	cr_assert_eq(smmu_cpu_unregister(e.cpu), 0);
	e.cpu = NULL;
	map(&e, H, PS, RW, SMMU_MAP_FIXED);
	struct exit_ctx c = {.mm = e.mm};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, exiting_thread, &c), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_neq(c.id, 0, "the thread could not register");
	cr_assert_eq(c.reached_after, 0);
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(e.mm, &st), 0);
	cr_assert_eq(st.faults_demand_zero, 1, "the departed CPU's counters are kept");
	cr_assert_geq(st.faults_trapped, 1);
	/* The destructor unregistered it: the mm can go. */
	env_fini(&e);
}

/* ------------------------------------------------------------ default handler */

Test(trap, default_handler_aborts_on_unmapped_load, .signal = SIGABRT)
{
	struct env e;
	env_init(&e, 4, SMMU_SHOOTDOWN_SIGNAL, 0);
	(void)smmu_load64(e.cpu, H);
}

Test(trap, default_handler_aborts_on_readonly_store, .signal = SIGABRT)
{
	struct env e;
	env_init(&e, 4, SMMU_SHOOTDOWN_SIGNAL, 0);
	map(&e, H, PS, R, SMMU_MAP_FIXED);
	smmu_store8(e.cpu, H, 1);
}

Test(trap, default_handler_aborts_on_misaligned_atomic, .signal = SIGABRT)
{
	struct env e;
	env_init(&e, 4, SMMU_SHOOTDOWN_SIGNAL, 0);
	map(&e, H, PS, RW, SMMU_MAP_FIXED);
	(void)smmu_fetch_add64(e.cpu, H + 4, 1);
}

Test(trap, null_restores_default_handler, .signal = SIGABRT)
{
	struct env e;
	env_init(&e, 4, SMMU_SHOOTDOWN_SIGNAL, 0);
	struct rec r;
	install(&e, &r, FIX_MMAP);
	smmu_store8(e.cpu, H, 1); /* handled */
	cr_assert_eq(r.calls, 1);
	cr_assert_eq(smmu_cpu_set_trap_handler(e.cpu, NULL, NULL), 0);
	smmu_store8(e.cpu, H + 5 * PS, 1); /* default: abort */
}

Test(trap, default_handler_aborts_out_of_frames, .signal = SIGABRT)
{
	struct env e;
	env_init(&e, 1, SMMU_SHOOTDOWN_SIGNAL, 0);
	map(&e, H, 2 * PS, RW, SMMU_MAP_FIXED);
	smmu_store8(e.cpu, H, 1);
	smmu_store8(e.cpu, H + PS, 1);
}
