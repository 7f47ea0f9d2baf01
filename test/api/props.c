/* SPDX-License-Identifier: MIT */
/*
 * The correctness properties of DESIGN.md section 4, single-threaded and
 * with CPUs on several threads that never race with an unmap:
 *   1. after munmap / mprotect(less) returns, the calling CPU (and an
 *      offline CPU once it is back online) never uses the old translation;
 *   2. no CPU reads or writes a frame after it went back to the pool
 *      (poisoned pool over a caller-owned region, inspected directly);
 *   3. no access crosses address spaces, reused frames read zero;
 *   4. protection holds on every path: fast (after a TLB fill), slow, bulk,
 *      atomic, misaligned, page-crossing - for read-only and PROT_NONE;
 *   6. running out of frames is a clean -ENOMEM: no leak, no lost mapping.
 * (Property 5, bad input, is badinput.c.)  Public API only.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
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

static int all_bytes(const unsigned char *p, size_t n, unsigned char b)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != b)
			return 0;
	return 1;
}

/* ------------------------------------------------------------ property 1 */

Test(props, p1_own_cpu_never_uses_old_translation)
{
	struct env e;
	env_init(&e, 16, SMMU_SHOOTDOWN_SIGNAL, 0);
	smmu_addr_t a = map(&e, H, 4 * PS, RW, SMMU_MAP_FIXED);
	for (int i = 0; i < 4; i++)
		smmu_store64(e.cpu, a + i * PS, 10 + i); /* TLB holds write entries */
	for (int i = 0; i < 4; i++)
		cr_assert_eq(smmu_load64(e.cpu, a + i * PS), 10 + i);

	cr_assert_eq(smmu_mprotect(e.mm, a, PS, R), 0);
	cr_assert_eq(smmu_try_store64(e.cpu, a, 1), -EACCES, "store through the old writable entry");
	cr_assert_eq(smmu_load64(e.cpu, a), 10);
	cr_assert_eq(smmu_mprotect(e.mm, a + PS, PS, NONE), 0);
	uint64_t v = 0;
	cr_assert_eq(smmu_try_load64(e.cpu, a + PS, &v), -EACCES, "load through the old entry");
	cr_assert_eq(smmu_munmap(e.mm, a + 2 * PS, PS), 0);
	cr_assert_eq(smmu_try_load64(e.cpu, a + 2 * PS, &v), -EFAULT);
	cr_assert_eq(smmu_try_store64(e.cpu, a + 2 * PS, 1), -EFAULT);
	/* FIXED replacement: the new, zeroed page, never the old frame. */
	map(&e, a + 3 * PS, PS, RW, SMMU_MAP_FIXED);
	cr_assert_eq(smmu_load64(e.cpu, a + 3 * PS), 0);
	/* Large ranges (a full flush rather than a range flush). */
	smmu_addr_t b = map(&e, H + 64 * PS, 40 * PS, RW, SMMU_MAP_FIXED);
	cr_assert_eq(smmu_munmap(e.mm, a, 4 * PS), 0);
	for (int i = 0; i < 40; i += 4)
		smmu_store8(e.cpu, b + i * PS, 1);
	cr_assert_eq(smmu_pool_free_frames(e.pool), 6);
	cr_assert_eq(smmu_mprotect(e.mm, b, 40 * PS, R), 0);
	for (int i = 0; i < 40; i += 4)
		cr_assert_eq(smmu_try_store8(e.cpu, b + i * PS, 2), -EACCES);
	cr_assert_eq(smmu_munmap(e.mm, b, 40 * PS), 0);
	for (int i = 0; i < 40; i += 4)
		cr_assert_eq(smmu_try_load8(e.cpu, b + i * PS, (uint8_t *)&v), -EFAULT);
	env_fini(&e);
}

/* An offline CPU misses the unmap; coming online must drop its stale entries. */
struct offline_ctx {
	struct smmu_mm *mm;
	smmu_addr_t a;
	pthread_barrier_t bar;
	struct tfail tf;
	uint64_t flush_full_delta;
};

static void *offline_thread(void *arg)
{
	struct offline_ctx *c = arg;
	struct smmu_cpu *cpu;
	if (smmu_cpu_register(c->mm, &cpu)) {
		c->tf.failed = 1;
		return NULL;
	}
	for (int i = 0; i < 4; i++)
		smmu_store64(cpu, c->a + i * PS, 0x7700 + i); /* fill the TLB */
	TCHECK(&c->tf, smmu_cpu_offline(cpu) == 0, "offline");
	TCHECK(&c->tf, smmu_cpu_offline(cpu) == 0, "offline twice is harmless");
	pthread_barrier_wait(&c->bar); /* main unmaps, remaps, mprotects */
	pthread_barrier_wait(&c->bar);
	TCHECK(&c->tf, smmu_cpu_online(cpu) == 0, "online");
	TCHECK(&c->tf, smmu_cpu_online(cpu) == 0, "online twice is harmless");
	uint64_t v = 0;
	int err = smmu_try_load64(cpu, c->a, &v);
	TCHECK(&c->tf, err == -EFAULT, "unmapped page: %d, value 0x%llx", err, (unsigned long long)v);
	err = smmu_try_store64(cpu, c->a, 1);
	TCHECK(&c->tf, err == -EFAULT, "%d", err);
	v = 1;
	err = smmu_try_load64(cpu, c->a + PS, &v);
	TCHECK(&c->tf, err == 0 && v == 0, "replaced page: %d 0x%llx", err, (unsigned long long)v);
	err = smmu_try_store64(cpu, c->a + 2 * PS, 1);
	TCHECK(&c->tf, err == -EACCES, "write-protected page: %d", err);
	v = 0;
	err = smmu_try_load64(cpu, c->a + 2 * PS, &v);
	TCHECK(&c->tf, err == 0 && v == 0x7702, "%d 0x%llx", err, (unsigned long long)v);
	err = smmu_try_load64(cpu, c->a + 3 * PS, &v);
	TCHECK(&c->tf, err == -EACCES, "PROT_NONE page: %d", err);
	smmu_cpu_unregister(cpu);
	return NULL;
}

Test(props, p1_offline_cpu_flushes_when_back_online)
{
	const size_t n = 8;
	unsigned char *reg = aligned_alloc(4096, n * PS);
	cr_assert_not_null(reg);
	memset(reg, 0, n * PS);
	struct smmu_pool_config cfg = {.region = reg, .size = n * PS, .flags = SMMU_POOL_POISON};
	struct env e = {0};
	cr_assert_eq(smmu_pool_create(&cfg, &e.pool), 0);
	cr_assert_eq(smmu_mm_create(e.pool, &e.mm), 0);
	struct offline_ctx c = {.mm = e.mm, .a = H};
	map(&e, H, 4 * PS, RW, SMMU_MAP_FIXED);
	pthread_barrier_init(&c.bar, NULL, 2);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, offline_thread, &c), 0);
	pthread_barrier_wait(&c.bar);
	/* The main thread is no CPU: its changes flush nobody's TLB now. */
	struct smmu_stats s0, s1;
	cr_assert_eq(smmu_stats_get(e.mm, &s0), 0);
	cr_assert_eq(smmu_munmap(e.mm, H, 2 * PS), 0);
	map(&e, H + PS, PS, RW, SMMU_MAP_FIXED);
	cr_assert_eq(smmu_mprotect(e.mm, H + 2 * PS, PS, R), 0);
	cr_assert_eq(smmu_mprotect(e.mm, H + 3 * PS, PS, NONE), 0);
	size_t poisoned = 0;
	for (size_t f = 0; f < n; f++)
		poisoned += all_bytes(reg + f * PS, PS, SMMU_POISON_BYTE);
	cr_assert_eq(poisoned, 2, "the two unmapped frames are poisoned");
	pthread_barrier_wait(&c.bar);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert(!c.tf.failed, "%s", c.tf.why);
	cr_assert_eq(smmu_stats_get(e.mm, &s1), 0);
	cr_assert_geq(s1.flush_full + s1.flush_range, s0.flush_full + s0.flush_range + 1, "coming online did not flush");
	poisoned = 0;
	for (size_t f = 0; f < n; f++)
		poisoned += all_bytes(reg + f * PS, PS, SMMU_POISON_BYTE);
	cr_assert_geq(poisoned, 1, "a freed frame was written after it was freed");
	pthread_barrier_destroy(&c.bar);
	env_fini(&e);
	free(reg);
}

/* ------------------------------------------------------------ property 2 */

Test(props, p2_freed_frames_never_touched)
{
	const size_t n = 32;
	unsigned char *reg = aligned_alloc(4096, n * PS);
	cr_assert_not_null(reg);
	memset(reg, 0x3c, n * PS);
	struct smmu_pool_config cfg = {.region = reg, .size = n * PS, .flags = SMMU_POOL_POISON};
	struct env e = {0};
	cr_assert_eq(smmu_pool_create(&cfg, &e.pool), 0);
	cr_assert_eq(smmu_mm_create(e.pool, &e.mm), 0);
	cr_assert_eq(smmu_cpu_register(e.mm, &e.cpu), 0);

	for (int round = 0; round < 4; round++) {
		smmu_addr_t a = map(&e, 0, n * PS, RW, 0);
		unsigned char page[PS];
		memset(page, 0x50 + round, PS);
		for (size_t i = 0; i < n; i++) {
			/* Every access path leaves a TLB entry behind. */
			if (i % 4 == 0)
				cr_assert_eq(smmu_write(e.cpu, a + i * PS, page, PS), 0);
			for (size_t off = 0; off < PS; off += 8) {
				if (i % 4 == 1)
					smmu_store64(e.cpu, a + i * PS + off, 0x0101010101010101ull * (0x50 + round));
				else if (i % 4 == 2)
					smmu_xchg64(e.cpu, a + i * PS + off, 0x0101010101010101ull * (0x50 + round));
				else if (i % 4 == 3)
					cr_assert_eq(smmu_try_store64(e.cpu, a + i * PS + off,
								      0x0101010101010101ull * (0x50 + round)),
						     0);
			}
		}
		/* Unmap in pieces, including partial ranges. */
		cr_assert_eq(smmu_munmap(e.mm, a + 3 * PS, 5 * PS), 0);
		cr_assert_eq(smmu_munmap(e.mm, a, n * PS), 0);
		for (size_t f = 0; f < n; f++)
			cr_assert(all_bytes(reg + f * PS, PS, SMMU_POISON_BYTE), "round %d frame %zu not poisoned",
				  round, f);
		/* Every path to the old addresses faults and writes nothing. */
		for (size_t i = 0; i < n; i++) {
			uint64_t v = 0;
			cr_assert_eq(smmu_try_load64(e.cpu, a + i * PS, &v), -EFAULT);
			cr_assert_eq(smmu_try_store64(e.cpu, a + i * PS + 8, 1), -EFAULT);
			cr_assert_eq(smmu_try_store16(e.cpu, a + i * PS + PS - 1, 1), -EFAULT);
			cr_assert_eq(smmu_write(e.cpu, a + i * PS, page, 8), -EFAULT);
			cr_assert_eq(smmu_read(e.cpu, a + i * PS, page, 8), -EFAULT);
		}
		for (size_t f = 0; f < n; f++)
			cr_assert(all_bytes(reg + f * PS, PS, SMMU_POISON_BYTE),
				  "round %d frame %zu written after free", round, f);
		cr_assert_eq(smmu_pool_free_frames(e.pool), n);
	}
	env_fini(&e);
	free(reg);
}

/* ------------------------------------------------------------ property 3 */

/* Two address spaces on one pool, one CPU thread each, at the same
 * addresses.  The pool holds exactly what both need at once, so every frame
 * freed by one is reused by the other. */
struct mmctx {
	int role;
	struct smmu_mm *mm;
	uint64_t tag;
	pthread_barrier_t *bar;
	struct tfail tf;
};

#define P3_PAGES 16
#define H2 (H + 64 * PS)

static void p3_write(struct smmu_cpu *cpu, smmu_addr_t base, uint64_t tag)
{
	for (size_t i = 0; i < P3_PAGES; i++)
		for (size_t off = 0; off < PS; off += 64)
			smmu_store64(cpu, base + i * PS + off, tag ^ (i * PS + off));
}

static int p3_check(struct smmu_cpu *cpu, smmu_addr_t base, uint64_t tag, struct tfail *tf)
{
	for (size_t i = 0; i < P3_PAGES; i++)
		for (size_t off = 0; off < PS; off += 64) {
			uint64_t v = 0;
			int err = smmu_try_load64(cpu, base + i * PS + off, &v);
			TCHECK(tf, err == 0 && v == (tag ^ (i * PS + off)), "tag %llx page %zu: %d, 0x%llx",
			       (unsigned long long)tag, i, err, (unsigned long long)v);
			if (tf->failed)
				return 0;
		}
	return 1;
}

static int p3_check_zero(struct smmu_cpu *cpu, smmu_addr_t base, struct tfail *tf)
{
	for (size_t i = 0; i < P3_PAGES; i++)
		for (size_t off = 0; off < PS; off += 8) {
			uint64_t v = 1;
			int err = smmu_try_load64(cpu, base + i * PS + off, &v);
			TCHECK(tf, err == 0 && v == 0, "page %zu off %zu: %d 0x%llx", i, off, err,
			       (unsigned long long)v);
			if (tf->failed)
				return 0;
		}
	return 1;
}

static void *p3_thread(void *arg)
{
	struct mmctx *c = arg;
	struct smmu_cpu *cpu = NULL;
	smmu_addr_t out;
	uint64_t v;
	int ok = smmu_cpu_register(c->mm, &cpu) == 0;
	TCHECK(&c->tf, ok, "register");
	/* Both map, fault in (every frame of the pool) and fill H. */
	if (ok) {
		TCHECK(&c->tf, smmu_mmap(c->mm, H, P3_PAGES * PS, RW, SMMU_MAP_FIXED, &out) == 0, "mmap");
		p3_check_zero(cpu, H, &c->tf);
		p3_write(cpu, H, c->tag);
	}
	pthread_barrier_wait(c->bar);
	if (ok)
		p3_check(cpu, H, c->tag, &c->tf); /* the other mm's writes did not land here */
	pthread_barrier_wait(c->bar);
	/* A: mm1 unmaps H. */
	if (ok && c->role == 0) {
		TCHECK(&c->tf, smmu_munmap(c->mm, H, P3_PAGES * PS) == 0, "munmap");
		TCHECK(&c->tf, smmu_try_load64(cpu, H, &v) == -EFAULT, "unmapped");
	}
	pthread_barrier_wait(c->bar);
	/* B: mm2 maps H2, which takes mm1's frames; then gives up its own H. */
	if (ok && c->role == 1) {
		TCHECK(&c->tf, smmu_mmap(c->mm, H2, P3_PAGES * PS, RW, SMMU_MAP_FIXED, &out) == 0, "mmap");
		p3_check_zero(cpu, H2, &c->tf);
		p3_write(cpu, H2, c->tag + 2);
		TCHECK(&c->tf, smmu_munmap(c->mm, H, P3_PAGES * PS) == 0, "munmap");
	}
	pthread_barrier_wait(c->bar);
	/* C: mm1 maps H again, which takes mm2's old frames. */
	if (ok && c->role == 0) {
		TCHECK(&c->tf, smmu_mmap(c->mm, H, P3_PAGES * PS, RW, SMMU_MAP_FIXED, &out) == 0, "mmap");
		p3_check_zero(cpu, H, &c->tf);
		p3_write(cpu, H, c->tag + 2);
	}
	pthread_barrier_wait(c->bar);
	if (ok && c->role == 0) {
		p3_check(cpu, H, c->tag + 2, &c->tf);
		TCHECK(&c->tf, smmu_try_load64(cpu, H2, &v) == -EFAULT, "H2 belongs to mm2 only");
	}
	if (ok && c->role == 1) {
		p3_check(cpu, H2, c->tag + 2, &c->tf);
		TCHECK(&c->tf, smmu_try_load64(cpu, H, &v) == -EFAULT, "mm2 unmapped H");
	}
	if (ok)
		smmu_cpu_unregister(cpu);
	return NULL;
}

Test(props, p3_no_access_crosses_address_spaces)
{
	struct smmu_pool_config cfg = {.size = 2 * P3_PAGES * PS, .flags = SMMU_POOL_POISON};
	struct smmu_pool *pool;
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	struct smmu_mm *mm1, *mm2;
	cr_assert_eq(smmu_mm_create(pool, &mm1), 0);
	cr_assert_eq(smmu_mm_create(pool, &mm2), 0);
	pthread_barrier_t bar;
	pthread_barrier_init(&bar, NULL, 2);
	struct mmctx c1 = {.role = 0, .mm = mm1, .tag = 0xaaaa000000000000ull, .bar = &bar};
	struct mmctx c2 = {.role = 1, .mm = mm2, .tag = 0x5555000000000000ull, .bar = &bar};
	pthread_t t1, t2;
	cr_assert_eq(pthread_create(&t1, NULL, p3_thread, &c1), 0);
	cr_assert_eq(pthread_create(&t2, NULL, p3_thread, &c2), 0);
	cr_assert_eq(pthread_join(t1, NULL), 0);
	cr_assert_eq(pthread_join(t2, NULL), 0);
	cr_assert(!c1.tf.failed, "mm1: %s", c1.tf.why);
	cr_assert(!c2.tf.failed, "mm2: %s", c2.tf.why);
	cr_assert_eq(smmu_pool_free_frames(pool), 0);

	/* A thread is a CPU of one mm at a time: the main thread visits
	 * both in turn and sees each one's own memory only. */
	struct smmu_cpu *cpu;
	struct tfail tf = {0};
	uint64_t v;
	cr_assert_eq(smmu_cpu_register(mm1, &cpu), 0);
	cr_assert(p3_check(cpu, H, c1.tag + 2, &tf), "%s", tf.why);
	cr_assert_eq(smmu_try_load64(cpu, H2, &v), -EFAULT);
	cr_assert_eq(smmu_munmap(mm1, H, PS), 0);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	cr_assert_eq(smmu_cpu_register(mm2, &cpu), 0);
	cr_assert(p3_check(cpu, H2, c2.tag + 2, &tf), "%s", tf.why);
	cr_assert_eq(smmu_try_load64(cpu, H + PS, &v), -EFAULT);
	/* mm2 maps a page that gets the frame mm1 just freed: zero. */
	smmu_addr_t out;
	cr_assert_eq(smmu_mmap(mm2, H + 200 * PS, PS, RW, SMMU_MAP_FIXED, &out), 0);
	for (size_t off = 0; off < PS; off += 8)
		cr_assert_eq(smmu_load64(cpu, H + 200 * PS + off), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), 0);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);

	cr_assert_eq(smmu_mm_destroy(mm1), 0);
	cr_assert_eq(smmu_mm_destroy(mm2), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), smmu_pool_frames(pool));
	cr_assert_eq(smmu_pool_destroy(pool), 0);
	pthread_barrier_destroy(&bar);
}

/* ------------------------------------------------------------ property 4 */

static jmp_buf p4_jmp;
static struct smmu_fault p4_fault;
static int p4_calls;

static void p4_handler(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	(void)cpu;
	(void)arg;
	p4_fault = *f;
	p4_calls++;
	longjmp(p4_jmp, 1);
}

/* Run a trapping access that must fault with err; false if it returned. */
#define EXPECT_TRAP(access, err)                                                              \
	do {                                                                                  \
		int calls_ = p4_calls;                                                        \
		if (setjmp(p4_jmp) == 0) {                                                    \
			(void)(access);                                                       \
			cr_assert_fail("%s completed", #access);                              \
		}                                                                             \
		cr_assert_eq(p4_calls, calls_ + 1);                                           \
		cr_assert_eq(p4_fault.error, (err), "%s: error %d", #access, p4_fault.error); \
	} while (0)

/* The page at a holds 0x0101.. * 0x42, and so does the page before (RW)
 * and the one after (RW).  prot is R or NONE. */
static void check_protection_paths(struct env *e, smmu_addr_t a, int prot)
{
	const uint64_t pat = 0x4242424242424242ull;
	const int lerr = prot == R ? 0 : -EACCES;
	uint64_t v;
	uint8_t v8;
	unsigned char buf[PS + 16];
	unsigned char src[PS + 16];
	memset(src, 0x99, sizeof(src));

	for (volatile int path = 0; path < 2; path++) {
		/* path 0: whatever the TLB holds now (fast path where it can);
		 * path 1: after a full flush (slow path). */
		if (path == 1)
			cr_assert_eq(smmu_tlb_flush_all(e->cpu), 0);
		/* aligned, every size */
		cr_assert_eq(smmu_try_store8(e->cpu, a + 1, 1), -EACCES);
		cr_assert_eq(smmu_try_store16(e->cpu, a + 2, 1), -EACCES);
		cr_assert_eq(smmu_try_store32(e->cpu, a + 4, 1), -EACCES);
		cr_assert_eq(smmu_try_store64(e->cpu, a + 8, 1), -EACCES);
		EXPECT_TRAP(smmu_store64(e->cpu, a + 16, 1), -EACCES);
		EXPECT_TRAP(smmu_store8(e->cpu, a + PS - 1, 1), -EACCES);
		v = 0;
		cr_assert_eq(smmu_try_load64(e->cpu, a + 8, &v), lerr);
		if (!lerr)
			cr_assert_eq(v, pat);
		cr_assert_eq(smmu_try_load8(e->cpu, a + 3, &v8), lerr);
		if (lerr) {
			EXPECT_TRAP(smmu_load32(e->cpu, a + 4), lerr);
		} else {
			cr_assert_eq(smmu_load32(e->cpu, a + 4), (uint32_t)pat);
		}
		/* misaligned */
		cr_assert_eq(smmu_try_store16(e->cpu, a + 1, 1), -EACCES);
		cr_assert_eq(smmu_try_store32(e->cpu, a + 5, 1), -EACCES);
		cr_assert_eq(smmu_try_store64(e->cpu, a + 9, 1), -EACCES);
		EXPECT_TRAP(smmu_store32(e->cpu, a + 3, 1), -EACCES);
		cr_assert_eq(smmu_try_load64(e->cpu, a + 3, &v), lerr);
		/* page-crossing, from and into the protected page */
		cr_assert_eq(smmu_try_store64(e->cpu, a - 4, 1), -EACCES);
		cr_assert_eq(smmu_try_store64(e->cpu, a + PS - 4, 1), -EACCES);
		cr_assert_eq(smmu_try_store16(e->cpu, a - 1, 1), -EACCES);
		EXPECT_TRAP(smmu_store32(e->cpu, a + PS - 2, 1), -EACCES);
		cr_assert_eq(smmu_try_load64(e->cpu, a - 4, &v), lerr);
		cr_assert_eq(smmu_try_load32(e->cpu, a + PS - 1, (uint32_t *)&v), lerr);
		/* atomics */
		EXPECT_TRAP(smmu_cmpxchg64(e->cpu, a + 24, pat, 1), -EACCES);
		EXPECT_TRAP(smmu_cmpxchg64(e->cpu, a + 24, 0, 1), -EACCES);
		EXPECT_TRAP(smmu_fetch_add64(e->cpu, a + 32, 1), -EACCES);
		EXPECT_TRAP(smmu_xchg64(e->cpu, a + 40, 1), -EACCES);
		cr_assert_eq(p4_fault.kind, SMMU_ACCESS_ATOMIC);
		/* bulk */
		cr_assert_eq(smmu_write(e->cpu, a, src, 8), -EACCES);
		cr_assert_eq(smmu_write(e->cpu, a - 8, src, PS + 16), -EACCES);
		cr_assert_eq(smmu_write(e->cpu, a + PS - 1, src, 2), -EACCES);
		memset(buf, 0x77, sizeof(buf));
		cr_assert_eq(smmu_read(e->cpu, a - 8, buf, PS + 16), lerr);
		if (!lerr)
			cr_assert(all_bytes(buf, sizeof(buf), 0x42));
		else
			cr_assert(all_bytes(buf, sizeof(buf), 0x77), "a refused read copied");
	}
	/* Nothing anywhere changed: open the page up and look. */
	cr_assert_eq(smmu_mprotect(e->mm, a, PS, R), 0);
	cr_assert_eq(smmu_read(e->cpu, a - PS, buf, 16), 0);
	for (smmu_addr_t p = a - PS; p < a + 2 * PS; p += 8)
		cr_assert_eq(smmu_load64(e->cpu, p), pat, "changed at 0x%llx", (unsigned long long)p);
}

static void p4_case(int prot, int touched_before)
{
	struct env e;
	env_init(&e, 8, SMMU_SHOOTDOWN_SIGNAL, 0);
	cr_assert_eq(smmu_cpu_set_trap_handler(e.cpu, p4_handler, NULL), 0);
	smmu_addr_t a = map(&e, H, 3 * PS, RW, SMMU_MAP_FIXED) + PS;
	unsigned char fill[3 * PS];
	memset(fill, 0x42, sizeof(fill));
	if (touched_before) {
		cr_assert_eq(smmu_write(e.cpu, a - PS, fill, sizeof(fill)), 0);
		/* Fill the TLB with write entries for the whole protected page. */
		for (size_t off = 0; off < PS; off += 8)
			smmu_store64(e.cpu, a + off, 0x4242424242424242ull);
		cr_assert_eq(smmu_mprotect(e.mm, a, PS, prot), 0);
	} else {
		/* The protected page is first touched after the protection. */
		cr_assert_eq(smmu_mprotect(e.mm, a, PS, prot), 0);
		cr_assert_eq(smmu_write(e.cpu, a - PS, fill, PS), 0);
		cr_assert_eq(smmu_write(e.cpu, a + PS, fill, PS), 0);
		if (prot == R) {
			/* Its content: zero, fill it through a short RW window. */
			cr_assert_eq(smmu_load64(e.cpu, a), 0);
			cr_assert_eq(smmu_mprotect(e.mm, a, PS, RW), 0);
			cr_assert_eq(smmu_write(e.cpu, a, fill, PS), 0);
			cr_assert_eq(smmu_mprotect(e.mm, a, PS, R), 0);
			cr_assert_eq(smmu_load64(e.cpu, a), 0x4242424242424242ull); /* a read fill */
		} else {
			cr_assert_eq(smmu_mprotect(e.mm, a, PS, RW), 0);
			cr_assert_eq(smmu_write(e.cpu, a, fill, PS), 0);
			cr_assert_eq(smmu_mprotect(e.mm, a, PS, NONE), 0);
		}
	}
	check_protection_paths(&e, a, prot);
	env_fini(&e);
}

Test(props, p4_readonly_after_write_fill)
{
	p4_case(R, 1);
}

Test(props, p4_readonly_fresh)
{
	p4_case(R, 0);
}

Test(props, p4_none_after_write_fill)
{
	p4_case(NONE, 1);
}

Test(props, p4_none_fresh)
{
	p4_case(NONE, 0);
}

Test(props, p4_readonly_mapping_never_writable)
{
	struct env e;
	env_init(&e, 8, SMMU_SHOOTDOWN_SIGNAL, 0);
	cr_assert_eq(smmu_cpu_set_trap_handler(e.cpu, p4_handler, NULL), 0);
	smmu_addr_t a = map(&e, H, PS, R, SMMU_MAP_FIXED);
	smmu_addr_t p = map(&e, H + PS, PS, R, SMMU_MAP_FIXED | SMMU_MAP_POPULATE);
	cr_assert_eq(p, H + PS);
	for (volatile int path = 0; path < 2; path++) {
		cr_assert_eq(smmu_try_store64(e.cpu, a, 1), -EACCES);
		cr_assert_eq(smmu_try_store64(e.cpu, p + 8, 1), -EACCES);
		cr_assert_eq(smmu_load64(e.cpu, a), 0);
		cr_assert_eq(smmu_load64(e.cpu, p + 8), 0);
		EXPECT_TRAP(smmu_fetch_add64(e.cpu, a + 8, 1), -EACCES);
		EXPECT_TRAP(smmu_store16(e.cpu, a + PS - 1, 1), -EACCES); /* R into R */
		unsigned char z[16] = {0};
		cr_assert_eq(smmu_write(e.cpu, a + PS - 8, z, 16), -EACCES);
	}
	env_fini(&e);
}

/* ------------------------------------------------------------ property 6 */

Test(props, p6_exhaustion_demand_zero)
{
	struct env e;
	env_init(&e, 16, SMMU_SHOOTDOWN_SIGNAL, 0);
	smmu_addr_t a = map(&e, H, 20 * PS, RW, SMMU_MAP_FIXED);
	for (int i = 0; i < 20; i++) {
		int err = smmu_try_store64(e.cpu, a + i * PS, 1000 + i);
		cr_assert_eq(err, i < 16 ? 0 : -ENOMEM, "page %d", i);
	}
	uint64_t v = 9;
	cr_assert_eq(smmu_try_load64(e.cpu, a + 17 * PS, &v), -ENOMEM, "a read of a fresh page needs a frame");
	cr_assert_eq(v, 9);
	unsigned char buf[2 * PS];
	memset(buf, 0xab, sizeof(buf));
	cr_assert_eq(smmu_write(e.cpu, a + 15 * PS, buf, 2 * PS), -ENOMEM);
	cr_assert_eq(smmu_load64(e.cpu, a + 15 * PS), 1015, "a failed bulk write copied");
	cr_assert_eq(smmu_read(e.cpu, a + 15 * PS, buf, 2 * PS), -ENOMEM);
	cr_assert_eq(buf[0], 0xab);
	cr_assert_eq(smmu_pool_free_frames(e.pool), 0);
	struct smmu_region r;
	cr_assert_eq(smmu_mm_find(e.mm, 0, &r), 0);
	cr_assert_eq(r.start, a);
	cr_assert_eq(r.end, a + 20 * PS, "no mapping lost");
	for (int i = 0; i < 16; i++)
		cr_assert_eq(smmu_load64(e.cpu, a + i * PS), 1000 + i);
	/* Give some back: the faulting pages work again. */
	cr_assert_eq(smmu_munmap(e.mm, a, 4 * PS), 0);
	cr_assert_eq(smmu_pool_free_frames(e.pool), 4);
	for (int i = 16; i < 20; i++)
		cr_assert_eq(smmu_try_store64(e.cpu, a + i * PS, 1000 + i), 0);
	for (int i = 4; i < 20; i++)
		cr_assert_eq(smmu_load64(e.cpu, a + i * PS), 1000 + i);
	cr_assert_eq(smmu_munmap(e.mm, a, 20 * PS), 0);
	cr_assert_eq(smmu_pool_free_frames(e.pool), 16);
	env_fini(&e);
}

Test(props, p6_exhaustion_populate)
{
	struct env e;
	env_init(&e, 16, SMMU_SHOOTDOWN_SIGNAL, 0);
	smmu_addr_t out = 1;
	for (int k = 0; k < 3; k++) {
		cr_assert_eq(smmu_mmap(e.mm, 0, 17 * PS, RW, SMMU_MAP_POPULATE, &out), -ENOMEM);
		cr_assert_eq(smmu_mmap(e.mm, H, 17 * PS, R, SMMU_MAP_POPULATE | SMMU_MAP_FIXED, &out), -ENOMEM);
		cr_assert_eq(out, 1);
		struct smmu_region r;
		cr_assert_eq(smmu_mm_find(e.mm, 0, &r), -ENOENT, "a failed POPULATE left a mapping");
		cr_assert_eq(smmu_pool_free_frames(e.pool), 16, "a failed POPULATE leaked frames");
	}
	smmu_addr_t a = map(&e, 0, 16 * PS, RW, SMMU_MAP_POPULATE);
	cr_assert_eq(smmu_pool_free_frames(e.pool), 0);
	cr_assert_eq(smmu_mmap(e.mm, 0, PS, RW, SMMU_MAP_POPULATE, &out), -ENOMEM);
	smmu_addr_t b = map(&e, 0, PS, RW, 0); /* without POPULATE: fine, faults later */
	cr_assert_eq(smmu_try_store8(e.cpu, b, 1), -ENOMEM);
	cr_assert_eq(smmu_munmap(e.mm, a, PS), 0);
	cr_assert_eq(smmu_try_store8(e.cpu, b, 1), 0);
	env_fini(&e);
}

/* The shared list is empty but another CPU's cache holds frames: an
 * allocation takes them ("exhaustion is exact"). */
struct steal_ctx {
	struct smmu_mm *mm;
	pthread_barrier_t bar;
	int ok_stores, enomem;
	struct tfail tf;
};

static void *steal_thread(void *arg)
{
	struct steal_ctx *c = arg;
	struct smmu_cpu *cpu;
	if (smmu_cpu_register(c->mm, &cpu)) {
		c->tf.failed = 1;
		pthread_barrier_wait(&c->bar);
		pthread_barrier_wait(&c->bar);
		return NULL;
	}
	pthread_barrier_wait(&c->bar); /* main has touched one page */
	for (int i = 0; i < 16; i++) {
		int err = smmu_try_store64(cpu, H + (1 + i) * PS, i);
		if (err == 0)
			c->ok_stores++;
		else if (err == -ENOMEM)
			c->enomem++;
		else
			TCHECK(&c->tf, 0, "store %d: %d", i, err);
	}
	pthread_barrier_wait(&c->bar);
	smmu_cpu_unregister(cpu);
	return NULL;
}

Test(props, p6_exhaustion_is_exact_across_cpu_caches)
{
	struct env e;
	env_init(&e, 16, SMMU_SHOOTDOWN_SIGNAL, 0);
	map(&e, H, 17 * PS, RW, SMMU_MAP_FIXED);
	struct steal_ctx c = {.mm = e.mm};
	pthread_barrier_init(&c.bar, NULL, 2);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, steal_thread, &c), 0);
	smmu_store64(e.cpu, H, 1); /* this CPU's cache may now hold the other 15 */
	pthread_barrier_wait(&c.bar);
	pthread_barrier_wait(&c.bar);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert(!c.tf.failed, "%s", c.tf.why);
	cr_assert_eq(c.ok_stores, 15, "frames stuck in another CPU's cache");
	cr_assert_eq(c.enomem, 1);
	cr_assert_eq(smmu_pool_free_frames(e.pool), 0);
	cr_assert_eq(smmu_load64(e.cpu, H), 1);
	for (int i = 0; i < 15; i++)
		cr_assert_eq(smmu_load64(e.cpu, H + (1 + i) * PS), i);
	pthread_barrier_destroy(&c.bar);
	env_fini(&e);
}
