/* SPDX-License-Identifier: MIT */
/*
 * smmu_cpu_switch_mm (issue 8): a CPU that moves between address spaces
 * with ASID-tagged TLBs and lazy TLB.  Public API only.
 *
 *  - switching to the current mm does nothing;
 *  - a round trip keeps the TLB entries of both mms (tlb_misses stay flat);
 *  - what an mm flushed while the CPU ran elsewhere is caught up on the way
 *    back (unmapped pages fault, protection holds, a replaced page reads the
 *    new frame), and only that: the other entries still hit;
 *  - asids = 1 flushes on every switch; with more mms than asids the least
 *    recently used ASID is recycled (asid_recycles), exactly in LRU order;
 *  - no data crosses address spaces: a CPU cycling through more mms than it
 *    has ASIDs, with the same guest addresses in every mm, always reads its
 *    current mm's data, also while frames freed by one mm are reused by
 *    another (they read zero first; never poison, never the old data);
 *  - bad input (NULL, fake handles, another thread's CPU, different
 *    shootdown modes or SMMU_MM_APP_URCU flags, a call inside a fault
 *    handler) fails and leaves the CPU where it was, working;
 *  - lazy TLB, signal mode: a CPU that switched away from A gets no signal
 *    from A's unmaps, and A's munmap does not wait for it even when it is
 *    online, blocked, and could not answer a signal;
 *  - mm_switches / asid_recycles count in the mm switched into, and the
 *    other counters in the mm the CPU was in when they happened;
 *  - round trips between two RCU-mode mms (strict and deferred) with
 *    smmu_quiescent, and an RCU CPU in B that lets A's grace periods end;
 *  - a CPU that left A while a shootdown of A was posted to it (its signal
 *    not yet handled) settles it into A's TLB, not the new one's;
 *  - an mm destroyed while a CPU keeps an inactive ASID for it, and a new
 *    mm (often at the same address), never share entries;
 *  - mms over different pools: frames go back to their own pool;
 *  - an offline CPU switches, stays offline, and catches up when online;
 *  - inside a notifier callback switching is refused (-EINVAL);
 *  - a switched-away RCU CPU that stalls the old mm's grace period is
 *    reported by a stall callback.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <softmmu/softmmu.h>

#include "common.h"

#define POISON64 (0x0101010101010101ull * SMMU_POISON_BYTE)

static _Alignas(4096) unsigned char fake_zero[8192];
static _Alignas(4096) unsigned char fake_junk[8192];

static struct smmu_pool *new_pool(size_t frames, int poison)
{
	struct smmu_pool_config cfg = {.size = frames * PS, .flags = poison ? SMMU_POOL_POISON : 0};
	struct smmu_pool *p;
	cr_assert_eq(smmu_pool_create(&cfg, &p), 0);
	return p;
}

static struct smmu_mm *new_mm(struct smmu_pool *pool, enum smmu_shootdown_mode mode, unsigned flags)
{
	struct smmu_mm_config mc = {.mode = mode, .flags = flags};
	struct smmu_mm *mm;
	cr_assert_eq(smmu_mm_create_ex(pool, &mc, &mm), 0);
	return mm;
}

static void map_at(struct smmu_mm *mm, smmu_addr_t a, size_t len, int prot)
{
	smmu_addr_t out = 0;
	cr_assert_eq(smmu_mmap(mm, a, len, prot, SMMU_MAP_FIXED, &out), 0);
	cr_assert_eq(out, a);
}

static struct smmu_stats st_of(struct smmu_mm *mm)
{
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(mm, &st), 0);
	return st;
}

static void destroy_all(struct smmu_mm **mms, int n, struct smmu_pool *pool)
{
	for (int i = 0; i < n; i++)
		cr_assert_eq(smmu_mm_destroy(mms[i]), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), smmu_pool_frames(pool), "frames leaked");
	cr_assert_eq(smmu_pool_destroy(pool), 0);
}

static uint64_t stamp(unsigned mm, unsigned page, unsigned gen)
{
	return 0x5700000000000000ull | (uint64_t)mm << 40 | (uint64_t)page << 20 | gen;
}

static struct smmu_cpu *reg(struct smmu_mm *mm, unsigned asids)
{
	struct smmu_cpu_config cc = {.asids = asids};
	struct smmu_cpu *cpu;
	cr_assert_eq(smmu_cpu_register_ex(mm, &cc, &cpu), 0);
	return cpu;
}

/* ------------------------------------------------------------ switch to self */

Test(switch, to_the_current_mm_does_nothing)
{
	struct smmu_pool *pool = new_pool(32, 1);
	struct smmu_mm *a = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	map_at(a, H, 8 * PS, RW);
	struct smmu_cpu *cpu = reg(a, 0);
	for (unsigned i = 0; i < 8; i++)
		smmu_store64(cpu, H + i * PS, stamp(0, i, 1));
	for (unsigned i = 0; i < 8; i++)
		cr_assert_eq(smmu_load64(cpu, H + i * PS), stamp(0, i, 1));
	struct smmu_stats s0 = st_of(a);
	unsigned id = smmu_cpu_id(cpu);
	for (int k = 0; k < 10; k++)
		cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
	cr_assert_eq(smmu_cpu_mm(cpu), a);
	cr_assert_eq(smmu_cpu_id(cpu), id);
	cr_assert_eq(smmu_cpu_self(), cpu);
	for (unsigned i = 0; i < 8; i++)
		cr_assert_eq(smmu_load64(cpu, H + i * PS), stamp(0, i, 1));
	struct smmu_stats s1 = st_of(a);
	cr_assert_eq(s1.mm_switches, s0.mm_switches, "a switch to the current mm was counted");
	cr_assert_eq(s1.asid_recycles, s0.asid_recycles);
	cr_assert_eq(s1.tlb_misses, s0.tlb_misses, "a switch to the current mm dropped TLB entries");
	cr_assert_eq(s1.flush_full, s0.flush_full);
	cr_assert_eq(s1.flush_range, s0.flush_range);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	struct smmu_mm *mms[] = {a};
	destroy_all(mms, 1, pool);
}

/* ------------------------------------------------------------ round trip */

#define RT_PAGES 16

static void fill(struct smmu_cpu *cpu, unsigned m, unsigned gen)
{
	for (unsigned i = 0; i < RT_PAGES; i++)
		smmu_store64(cpu, H + i * PS, stamp(m, i, gen));
	for (unsigned i = 0; i < RT_PAGES; i++) /* read entries too, dirty pages: writable entries */
		cr_assert_eq(smmu_load64(cpu, H + i * PS), stamp(m, i, gen));
}

/* Loads of every page; returns the misses they cost in mm. */
static uint64_t check_all(struct smmu_cpu *cpu, struct smmu_mm *mm, unsigned m, unsigned gen)
{
	struct smmu_stats s0 = st_of(mm);
	for (unsigned i = 0; i < RT_PAGES; i++) {
		uint64_t v = smmu_load64(cpu, H + i * PS);
		cr_assert_eq(v, stamp(m, i, gen), "mm %u page %u: 0x%llx", m, i, (unsigned long long)v);
	}
	struct smmu_stats s1 = st_of(mm);
	return s1.tlb_misses - s0.tlb_misses;
}

Test(switch, round_trip_keeps_the_entries_of_both_mms)
{
	struct smmu_pool *pool = new_pool(4 * RT_PAGES, 1);
	struct smmu_mm *a = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0), *b = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	map_at(a, H, RT_PAGES * PS, RW);
	map_at(b, H, RT_PAGES * PS, RW); /* the same guest addresses */
	struct smmu_cpu *cpu = reg(a, 0);
	fill(cpu, 0, 1);
	cr_assert_eq(check_all(cpu, a, 0, 1), 0, "hits expected before any switch");
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	cr_assert_eq(smmu_cpu_mm(cpu), b);
	cr_assert_eq(smmu_cpu_self(), cpu);
	fill(cpu, 1, 1);
	for (int trip = 0; trip < 5; trip++) {
		cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
		cr_assert_eq(smmu_cpu_mm(cpu), a);
		cr_assert_eq(check_all(cpu, a, 0, 1), 0, "trip %d: A's entries did not survive a round trip", trip);
		cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
		cr_assert_eq(check_all(cpu, b, 1, 1), 0, "trip %d: B's entries did not survive a round trip", trip);
	}
	/* Stores too: the writable entries survive (no slow path, no miss). */
	struct smmu_stats s0 = st_of(b);
	for (unsigned i = 0; i < RT_PAGES; i++)
		smmu_store64(cpu, H + i * PS, stamp(1, i, 2));
	cr_assert_eq(st_of(b).tlb_misses, s0.tlb_misses);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
	cr_assert_eq(check_all(cpu, a, 0, 1), 0, "B's stores reached A");
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	cr_assert_eq(check_all(cpu, b, 1, 2), 0);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	struct smmu_mm *mms[] = {a, b};
	destroy_all(mms, 2, pool);
}

/* ------------------------------------------------------------ catching up */

/*
 * While the CPU runs in B, A (the same thread acting as any thread may)
 * unmaps page 3, write-protects page 4, closes page 5 and replaces page 6
 * by a fresh mapping; the pool is so small that B's new pages get A's
 * freed frames.  Back in A: each change holds, and the other pages still
 * hit (a few range flushes are replayed from A's flush log, not a full
 * flush).
 */
Test(switch, flushes_while_away_are_caught_up_on_return)
{
	struct smmu_pool *pool = new_pool(RT_PAGES + 2, 1);
	struct smmu_mm *a = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0), *b = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	map_at(a, H, RT_PAGES * PS, RW);
	map_at(b, H, 4 * PS, RW);
	struct smmu_cpu *cpu = reg(a, 0);
	fill(cpu, 0, 1);
	cr_assert_eq(smmu_pool_free_frames(pool), 2);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	smmu_store64(cpu, H, stamp(1, 0, 1));
	smmu_store64(cpu, H + PS, stamp(1, 1, 1));
	cr_assert_eq(smmu_pool_free_frames(pool), 0);

	cr_assert_eq(smmu_munmap(a, H + 3 * PS, PS), 0);
	cr_assert_eq(smmu_mprotect(a, H + 4 * PS, PS, R), 0);
	cr_assert_eq(smmu_mprotect(a, H + 5 * PS, PS, NONE), 0);
	map_at(a, H + 6 * PS, PS, RW); /* replaces: frees the old frame, the new page is not present yet */
	cr_assert_eq(smmu_pool_free_frames(pool), 2);
	/* B takes both freed frames: they must read zero in B. */
	for (unsigned i = 2; i < 4; i++) {
		uint64_t v = smmu_load64(cpu, H + i * PS);
		cr_assert_eq(v, 0, "B page %u: a reused frame read 0x%llx (%s)", i, (unsigned long long)v,
			     v == POISON64 ? "poison" : "old data");
		smmu_store64(cpu, H + i * PS, stamp(1, i, 1));
	}
	cr_assert_eq(smmu_pool_free_frames(pool), 0);

	cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
	struct smmu_stats s0 = st_of(a);
	uint64_t v = 0;
	for (unsigned i = 0; i < RT_PAGES; i++) {
		if (i >= 3 && i <= 6)
			continue;
		cr_assert_eq(smmu_load64(cpu, H + i * PS), stamp(0, i, 1), "page %u", i);
	}
	cr_assert_eq(st_of(a).tlb_misses, s0.tlb_misses,
		     "entries A did not flush were dropped on return (4 small flushes should be replayed)");
	cr_assert_eq(smmu_try_load64(cpu, H + 3 * PS, &v), -EFAULT, "unmapped while away: 0x%llx",
		     (unsigned long long)v);
	cr_assert_eq(smmu_try_store64(cpu, H + 4 * PS, 9), -EACCES, "write-protected while away");
	cr_assert_eq(smmu_load64(cpu, H + 4 * PS), stamp(0, 4, 1));
	cr_assert_eq(smmu_try_load64(cpu, H + 5 * PS, &v), -EACCES, "closed while away");
	/* Page 6 is a new mapping and the pool is empty: -ENOMEM, never the
	 * old frame's data. */
	v = 0x1234;
	int err = smmu_try_load64(cpu, H + 6 * PS, &v);
	cr_assert_eq(err, -ENOMEM, "replaced page: %d 0x%llx (stamp 0x%llx)", err, (unsigned long long)v,
		     (unsigned long long)stamp(0, 6, 1));
	cr_assert_eq(v, 0x1234);
	/* Give it a frame: B unmaps one; A's page 6 then reads zero. */
	cr_assert_eq(smmu_munmap(b, H + 3 * PS, PS), 0);
	cr_assert_eq(smmu_try_load64(cpu, H + 6 * PS, &v), 0);
	cr_assert_eq(v, 0, "the replacing page read 0x%llx", (unsigned long long)v);

	/* B's entries for pages 0..2 are still good (B flushed only page 3). */
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	s0 = st_of(b);
	for (unsigned i = 0; i < 3; i++)
		cr_assert_eq(smmu_load64(cpu, H + i * PS), stamp(1, i, 1));
	cr_assert_eq(st_of(b).tlb_misses, s0.tlb_misses);
	cr_assert_eq(smmu_try_load64(cpu, H + 3 * PS, &v), -EFAULT);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	struct smmu_mm *mms[] = {a, b};
	destroy_all(mms, 2, pool);
}

/* Far behind: more flushes than any log keeps.  Whatever the way of
 * catching up, every change holds and the untouched pages read right. */
Test(switch, far_behind_catches_up)
{
	struct smmu_pool *pool = new_pool(RT_PAGES + 8, 1);
	struct smmu_mm *a = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0), *b = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	map_at(a, H, RT_PAGES * PS, RW);
	map_at(b, H, PS, RW);
	struct smmu_cpu *cpu = reg(a, 0);
	fill(cpu, 0, 1);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	smmu_store64(cpu, H, 77);
	for (int k = 0; k < 100; k++) {
		cr_assert_eq(smmu_mprotect(a, H + 8 * PS, PS, R), 0);
		cr_assert_eq(smmu_mprotect(a, H + 8 * PS, PS, RW), 0);
	}
	cr_assert_eq(smmu_mprotect(a, H + 9 * PS, PS, R), 0);
	cr_assert_eq(smmu_munmap(a, H + 10 * PS, PS), 0);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
	uint64_t v;
	cr_assert_eq(smmu_try_store64(cpu, H + 9 * PS, 1), -EACCES);
	cr_assert_eq(smmu_try_load64(cpu, H + 10 * PS, &v), -EFAULT);
	for (unsigned i = 0; i < RT_PAGES; i++)
		if (i != 10)
			cr_assert_eq(smmu_load64(cpu, H + i * PS), stamp(0, i, 1));
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	cr_assert_eq(smmu_load64(cpu, H), 77);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	struct smmu_mm *mms[] = {a, b};
	destroy_all(mms, 2, pool);
}

/* ------------------------------------------------------------ asids = 1 */

Test(switch, one_asid_flushes_on_every_switch)
{
	struct smmu_pool *pool = new_pool(4 * RT_PAGES, 1);
	struct smmu_mm *a = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0), *b = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	map_at(a, H, RT_PAGES * PS, RW);
	map_at(b, H, RT_PAGES * PS, RW);
	struct smmu_cpu *cpu = reg(a, 1);
	fill(cpu, 0, 1);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	fill(cpu, 1, 1);
	for (int trip = 0; trip < 4; trip++) {
		struct smmu_stats a0 = st_of(a), b0 = st_of(b);
		cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
		struct smmu_stats a1 = st_of(a);
		cr_assert_eq(a1.mm_switches, a0.mm_switches + 1);
		cr_assert_eq(a1.asid_recycles, a0.asid_recycles + 1, "trip %d: one ASID, A must recycle it", trip);
		cr_assert_eq(check_all(cpu, a, 0, 1), RT_PAGES, "trip %d: asids=1 kept entries across a switch", trip);
		cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
		struct smmu_stats b1 = st_of(b);
		cr_assert_eq(b1.mm_switches, b0.mm_switches + 1);
		cr_assert_eq(b1.asid_recycles, b0.asid_recycles + 1);
		cr_assert_eq(check_all(cpu, b, 1, 1), RT_PAGES);
	}
	/* The switch to the current mm still does nothing. */
	struct smmu_stats b0 = st_of(b);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	cr_assert_eq(check_all(cpu, b, 1, 1), 0);
	cr_assert_eq(st_of(b).asid_recycles, b0.asid_recycles);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);

	/* Contrast: asids = 2 keeps both. */
	cpu = reg(a, 2);
	check_all(cpu, a, 0, 1);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	check_all(cpu, b, 1, 1);
	struct smmu_stats a0 = st_of(a);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
	cr_assert_eq(check_all(cpu, a, 0, 1), 0, "asids=2: A's entries were dropped");
	cr_assert_eq(st_of(a).asid_recycles, a0.asid_recycles, "asids=2, two mms: nothing to recycle");
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	struct smmu_mm *mms[] = {a, b};
	destroy_all(mms, 2, pool);
}

/* ------------------------------------------------------------ LRU recycling */

#define LRU_MMS 5

/* Switch to mms[m] and load its page; returns {misses, recycles} in it. */
static void visit(struct smmu_cpu *cpu, struct smmu_mm **mms, unsigned m, uint64_t *misses, uint64_t *recycles)
{
	struct smmu_stats s0 = st_of(mms[m]);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, mms[m]), 0);
	uint64_t v = smmu_load64(cpu, H);
	cr_assert_eq(v, stamp(m, 0, 1), "mm %u read 0x%llx", m, (unsigned long long)v);
	struct smmu_stats s1 = st_of(mms[m]);
	*misses = s1.tlb_misses - s0.tlb_misses;
	*recycles = s1.asid_recycles - s0.asid_recycles;
	cr_assert_eq(s1.mm_switches, s0.mm_switches + 1);
}

Test(switch, asid_exhaustion_recycles_the_least_recently_used)
{
	struct smmu_pool *pool = new_pool(LRU_MMS, 1);
	struct smmu_mm *mms[LRU_MMS];
	for (unsigned m = 0; m < LRU_MMS; m++) {
		mms[m] = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
		map_at(mms[m], H, PS, RW);
	}
	struct smmu_cpu *cpu = reg(mms[0], 3);
	smmu_store64(cpu, H, stamp(0, 0, 1));
	cr_assert_eq(smmu_load64(cpu, H), stamp(0, 0, 1));
	for (unsigned m = 1; m < LRU_MMS; m++) {
		cr_assert_eq(smmu_cpu_switch_mm(cpu, mms[m]), 0);
		smmu_store64(cpu, H, stamp(m, 0, 1));
	}
	/* Order of use so far: 0 1 2 3 4, three ASIDs: {2, 3, 4} hold entries. */
	uint64_t miss, rec;
	visit(cpu, mms, 3, &miss, &rec);
	cr_assert_eq(miss, 0, "mm 3 still had its ASID");
	cr_assert_eq(rec, 0);
	visit(cpu, mms, 0, &miss, &rec); /* recycles 2's (LRU of 2, 4, 3) */
	cr_assert_eq(rec, 1, "mm 0 had lost its ASID: recycles one");
	cr_assert_eq(miss, 1, "mm 0's entry must have gone with its ASID");
	visit(cpu, mms, 4, &miss, &rec); /* 4 kept its ASID */
	cr_assert_eq(miss, 0);
	cr_assert_eq(rec, 0);
	visit(cpu, mms, 2, &miss, &rec); /* recycles 3's (LRU of 3, 0, 4) */
	cr_assert_eq(rec, 1);
	cr_assert_eq(miss, 1);
	visit(cpu, mms, 0, &miss, &rec); /* still {0, 4, 2} */
	cr_assert_eq(miss, 0);
	cr_assert_eq(rec, 0);
	visit(cpu, mms, 3, &miss, &rec); /* recycles 4's */
	cr_assert_eq(rec, 1);
	cr_assert_eq(miss, 1);
	visit(cpu, mms, 4, &miss, &rec); /* recycles 2's */
	cr_assert_eq(rec, 1);
	cr_assert_eq(miss, 1);
	visit(cpu, mms, 0, &miss, &rec); /* 0 used just before 3: kept */
	cr_assert_eq(rec, 0);
	cr_assert_eq(miss, 0);

	/* Right after recycling, a page that the recycled ASID's old mm had
	 * at the same address is never reached: every mm reads its own. */
	for (int round = 0; round < 20; round++)
		for (unsigned m = 0; m < LRU_MMS; m++) {
			unsigned mm_i = (m * 3 + (unsigned)round) % LRU_MMS;
			cr_assert_eq(smmu_cpu_switch_mm(cpu, mms[mm_i]), 0);
			cr_assert_eq(smmu_load64(cpu, H), stamp(mm_i, 0, 1), "round %d mm %u", round, mm_i);
		}
	uint64_t total = 0;
	for (unsigned m = 0; m < LRU_MMS; m++)
		total += st_of(mms[m]).asid_recycles;
	cr_assert_gt(total, 20);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	destroy_all(mms, LRU_MMS, pool);
}

/* ------------------------------------------------------------ isolation */

#define ISO_MMS 6
#define ISO_PAGES 4
#define ISO_ROUNDS 3000

/*
 * A CPU with 2 ASIDs cycles through 6 mms that map the same 4 guest pages,
 * over one poisoned pool with exactly as many frames as pages, so that any
 * frame an mm frees is the one the next fault anywhere gets.  Every read
 * must be the current mm's own value; a page unmapped and mapped again
 * reads zero (a frame that left another mm is zeroed); never poison.
 */
Test(switch, no_data_crosses_address_spaces_while_cycling, .timeout = 120)
{
	struct smmu_pool *pool = new_pool(ISO_MMS * ISO_PAGES, 1);
	struct smmu_mm *mms[ISO_MMS];
	uint64_t want[ISO_MMS][ISO_PAGES];
	for (unsigned m = 0; m < ISO_MMS; m++) {
		mms[m] = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
		map_at(mms[m], H, ISO_PAGES * PS, RW);
	}
	struct smmu_cpu *cpu = reg(mms[0], 2);
	for (unsigned m = 0; m < ISO_MMS; m++) {
		cr_assert_eq(smmu_cpu_switch_mm(cpu, mms[m]), 0);
		for (unsigned p = 0; p < ISO_PAGES; p++) {
			want[m][p] = stamp(m, p, 1);
			smmu_store64(cpu, H + p * PS, want[m][p]);
		}
	}
	cr_assert_eq(smmu_pool_free_frames(pool), 0);
	uint64_t seed = 0x1234567, reused_zero = 0;
	for (int round = 0; round < ISO_ROUNDS; round++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		unsigned r = (unsigned)(seed >> 33);
		unsigned m = round < 2 * ISO_MMS ? (unsigned)round % ISO_MMS : r % ISO_MMS;
		if ((r >> 8) % 8 == 0) {
			/* Another mm (or this one) drops a page: its frame goes
			 * back to the pool and the next fault takes it. */
			unsigned vm = (r >> 12) % ISO_MMS, vp = (r >> 16) % ISO_PAGES;
			cr_assert_eq(smmu_munmap(mms[vm], H + vp * PS, PS), 0);
			map_at(mms[vm], H + vp * PS, PS, RW);
			want[vm][vp] = 0;
		}
		cr_assert_eq(smmu_cpu_switch_mm(cpu, mms[m]), 0);
		cr_assert_eq(smmu_cpu_mm(cpu), mms[m]);
		for (unsigned p = 0; p < ISO_PAGES; p++) {
			uint64_t v = 0;
			int err = smmu_try_load64(cpu, H + p * PS, &v);
			cr_assert_eq(err, 0, "round %d mm %u page %u: %d", round, m, p, err);
			cr_assert_neq(v, POISON64, "round %d mm %u page %u: read a freed frame", round, m, p);
			cr_assert_eq(v, want[m][p],
				     "round %d mm %u page %u: read 0x%llx, want 0x%llx (another mm's data?)", round, m,
				     p, (unsigned long long)v, (unsigned long long)want[m][p]);
			if (want[m][p] == 0)
				reused_zero++;
			if (want[m][p] == 0 || (r >> (20 + p)) % 4 == 0) {
				want[m][p] = stamp(m, p, (unsigned)round + 2);
				smmu_store64(cpu, H + p * PS, want[m][p]);
			}
		}
	}
	cr_assert_gt(reused_zero, 50, "too few frames changed hands to prove anything");
	uint64_t recycles = 0, switches = 0;
	for (unsigned m = 0; m < ISO_MMS; m++) {
		struct smmu_stats s = st_of(mms[m]);
		recycles += s.asid_recycles;
		switches += s.mm_switches;
	}
	cr_assert_gt(recycles, ISO_ROUNDS / 2, "6 mms over 2 ASIDs must recycle often (%llu)",
		     (unsigned long long)recycles);
	cr_assert_geq(switches, recycles);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	destroy_all(mms, ISO_MMS, pool);
}

/* ------------------------------------------------------------ bad input */

struct other_ctx {
	struct smmu_cpu *victim;
	struct smmu_mm *target, *register_on;
	int r;
};

static void *other_thread(void *arg)
{
	struct other_ctx *c = arg;
	struct smmu_cpu *mine = NULL;
	if (c->register_on && smmu_cpu_register(c->register_on, &mine))
		return NULL;
	c->r = smmu_cpu_switch_mm(c->victim, c->target);
	if (mine)
		smmu_cpu_unregister(mine);
	return NULL;
}

/* The CPU is in mm `in`, its page at H reads `want`, no switch counted. */
static void still_in(struct smmu_cpu *cpu, struct smmu_mm *in, uint64_t want, const char *what)
{
	cr_assert_eq(smmu_cpu_mm(cpu), in, "%s: the CPU left its mm", what);
	cr_assert_eq(smmu_cpu_self(), cpu, "%s", what);
	cr_assert_eq(smmu_load64(cpu, H), want, "%s: the CPU no longer reads its mm", what);
	smmu_store64(cpu, H + 8, want);
	cr_assert_eq(smmu_load64(cpu, H + 8), want, "%s", what);
	cr_assert_eq(smmu_tlb_flush_all(cpu), 0);
	cr_assert_eq(smmu_load64(cpu, H), want, "%s: after a flush", what);
}

Test(switch, bad_input_leaves_the_cpu_in_its_mm)
{
	memset(fake_junk, 0xa5, sizeof(fake_junk));
	struct smmu_pool *pool = new_pool(16, 1);
	struct smmu_mm *a = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0), *b = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	struct smmu_mm *rcu = new_mm(pool, SMMU_SHOOTDOWN_RCU, 0), *def = new_mm(pool, SMMU_SHOOTDOWN_RCU_DEFERRED, 0);
	map_at(a, H, PS, RW);
	map_at(b, H, PS, RW);
	struct smmu_cpu *cpu = reg(a, 0);
	smmu_store64(cpu, H, 0xaaaa);
	struct smmu_stats a0 = st_of(a), b0 = st_of(b);

	cr_assert_eq(smmu_cpu_switch_mm(NULL, b), -EINVAL);
	still_in(cpu, a, 0xaaaa, "NULL cpu");
	cr_assert_eq(smmu_cpu_switch_mm(cpu, NULL), -EINVAL);
	still_in(cpu, a, 0xaaaa, "NULL mm");
	cr_assert_eq(smmu_cpu_switch_mm(NULL, NULL), -EINVAL);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, (struct smmu_mm *)fake_zero), -EINVAL);
	still_in(cpu, a, 0xaaaa, "zeroed fake mm");
	cr_assert_eq(smmu_cpu_switch_mm(cpu, (struct smmu_mm *)fake_junk), -EINVAL);
	still_in(cpu, a, 0xaaaa, "junk fake mm");
	cr_assert_eq(smmu_cpu_switch_mm((struct smmu_cpu *)fake_zero, b), -EINVAL);
	cr_assert_eq(smmu_cpu_switch_mm((struct smmu_cpu *)fake_junk, b), -EINVAL);
	still_in(cpu, a, 0xaaaa, "fake cpus");
	cr_assert_eq(smmu_cpu_switch_mm(cpu, rcu), -EINVAL, "signal -> rcu");
	still_in(cpu, a, 0xaaaa, "signal -> rcu");
	cr_assert_eq(smmu_cpu_switch_mm(cpu, def), -EINVAL, "signal -> rcu deferred");
	still_in(cpu, a, 0xaaaa, "signal -> rcu deferred");

	/* Another thread: a non-CPU, a CPU of the same mm, a CPU of b. */
	struct smmu_mm *regs[] = {NULL, a, b};
	for (int i = 0; i < 3; i++) {
		struct other_ctx c = {.victim = cpu, .target = b, .register_on = regs[i], .r = 1};
		pthread_t t;
		cr_assert_eq(pthread_create(&t, NULL, other_thread, &c), 0);
		cr_assert_eq(pthread_join(t, NULL), 0);
		cr_assert_eq(c.r, -EPERM, "switch of another thread's CPU (case %d): %d", i, c.r);
		still_in(cpu, a, 0xaaaa, "another thread's cpu");
	}

	struct smmu_stats a1 = st_of(a), b1 = st_of(b);
	cr_assert_eq(a1.mm_switches, a0.mm_switches);
	cr_assert_eq(b1.mm_switches, b0.mm_switches);
	cr_assert_eq(a1.asid_recycles, a0.asid_recycles);
	cr_assert_eq(b1.asid_recycles, b0.asid_recycles);
	/* ... and a good switch still works afterwards. */
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	smmu_store64(cpu, H, 0xbbbb);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
	cr_assert_eq(smmu_load64(cpu, H), 0xaaaa);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	/* Not a CPU any more. */
	cr_assert_eq(smmu_cpu_self(), NULL);
	struct smmu_mm *mms[] = {a, b, rcu, def};
	destroy_all(mms, 4, pool);
}

/* RCU-mode CPUs: to signal mode, to the other RCU mode, and to an mm
 * whose application registers its threads with urcu itself, all fail. */
Test(switch, different_modes_or_urcu_flags_are_einval)
{
	struct smmu_pool *pool = new_pool(16, 1);
	struct smmu_mm *rcu = new_mm(pool, SMMU_SHOOTDOWN_RCU, 0), *rcu2 = new_mm(pool, SMMU_SHOOTDOWN_RCU, 0);
	struct smmu_mm *def = new_mm(pool, SMMU_SHOOTDOWN_RCU_DEFERRED, 0);
	struct smmu_mm *sig = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	struct smmu_mm *app = new_mm(pool, SMMU_SHOOTDOWN_RCU, SMMU_MM_APP_URCU);
	map_at(rcu, H, PS, RW);
	map_at(rcu2, H, PS, RW);
	struct smmu_cpu *cpu = reg(rcu, 0);
	smmu_store64(cpu, H, 0x1111);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, sig), -EINVAL, "rcu -> signal");
	still_in(cpu, rcu, 0x1111, "rcu -> signal");
	cr_assert_eq(smmu_cpu_switch_mm(cpu, def), -EINVAL, "rcu -> rcu deferred");
	still_in(cpu, rcu, 0x1111, "rcu -> rcu deferred");
	cr_assert_eq(smmu_cpu_switch_mm(cpu, app), -EINVAL, "rcu -> rcu with SMMU_MM_APP_URCU");
	still_in(cpu, rcu, 0x1111, "rcu -> rcu app urcu");
	cr_assert_eq(smmu_quiescent(cpu), 0);
	/* Same mode, same flags: fine. */
	cr_assert_eq(smmu_cpu_switch_mm(cpu, rcu2), 0);
	smmu_store64(cpu, H, 0x2222);
	cr_assert_eq(smmu_quiescent(cpu), 0);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, rcu), 0);
	cr_assert_eq(smmu_load64(cpu, H), 0x1111);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	struct smmu_mm *mms[] = {rcu, rcu2, def, sig, app};
	destroy_all(mms, 5, pool);
}

/* Inside a mapping's fault handler the CPU is in the middle of an access:
 * switching is refused there, and the access completes in its own mm. */
struct fh_ctx {
	struct smmu_mm *self_mm, *other;
	int switch_result, calls;
};

static int switching_handler(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	struct fh_ctx *c = arg;
	c->calls++;
	c->switch_result = smmu_cpu_switch_mm(cpu, c->other);
	void *host;
	int err = smmu_mm_translate(c->self_mm, f->addr & ~(smmu_addr_t)(PS - 1), RW, &host);
	if (err)
		return err;
	memset(host, 0x3c, PS);
	return 0;
}

Test(switch, inside_a_fault_handler_is_einval)
{
	struct smmu_pool *pool = new_pool(16, 1);
	struct smmu_mm *a = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0), *b = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	map_at(b, H, PS, RW);
	struct fh_ctx c = {.self_mm = a, .other = b, .switch_result = 1};
	smmu_addr_t out;
	cr_assert_eq(smmu_mmap_handler(a, H, PS, RW, SMMU_MAP_FIXED, switching_handler, &c, &out), 0);
	struct smmu_cpu *cpu = reg(a, 0);
	uint64_t v = smmu_load64(cpu, H);
	cr_assert_eq(c.calls, 1);
	cr_assert_eq(c.switch_result, -EINVAL, "a switch inside a fault handler returned %d", c.switch_result);
	cr_assert_eq(v, 0x3c3c3c3c3c3c3c3cull, "the access did not complete in its own mm: 0x%llx",
		     (unsigned long long)v);
	cr_assert_eq(smmu_cpu_mm(cpu), a);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	struct smmu_mm *mms[] = {a, b};
	destroy_all(mms, 2, pool);
}

/* ------------------------------------------------------------ lazy TLB */

/* A CPU thread (started in A with smmu_thread_create) that the test
 * steers through cmd; it answers by bumping state. */
enum { P_NONE, P_TO_A_TOUCH, P_TO_B, P_SPIN_B, P_BLOCK_MASKED, P_PROBE, P_EXIT };

struct lazy {
	struct smmu_mm *a, *b;
	smmu_addr_t p; /* in A */
	atomic_int cmd, state, blocked;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int release;
	int probe_err;
	uint64_t probe_val;
	int probe_store_err;
	struct tfail tf;
};

static void *lazy_main(void *arg)
{
	struct lazy *l = arg;
	struct smmu_cpu *cpu = smmu_cpu_self();
	TCHECK(&l->tf, cpu && smmu_cpu_mm(cpu) == l->a, "not a CPU of A");
	if (!cpu)
		return NULL;
	for (;;) {
		int cmd = atomic_exchange(&l->cmd, P_NONE);
		switch (cmd) {
		case P_TO_A_TOUCH:
			TCHECK(&l->tf, smmu_cpu_switch_mm(cpu, l->a) == 0, "switch to A");
			for (unsigned i = 0; i < 4; i++)
				TCHECK(&l->tf, smmu_load64(cpu, l->p + i * PS) == 0xa0 + i, "A page %u", i);
			break;
		case P_TO_B:
			TCHECK(&l->tf, smmu_cpu_switch_mm(cpu, l->b) == 0, "switch to B");
			TCHECK(&l->tf, smmu_load64(cpu, H) == 0xb0, "B page");
			break;
		case P_SPIN_B:
			atomic_fetch_add(&l->state, 1);
			while (atomic_load(&l->cmd) == P_NONE)
				TCHECK(&l->tf, smmu_load64(cpu, H) == 0xb0, "B page while spinning");
			continue;
		case P_BLOCK_MASKED: {
			/* Online, in B, and unable to answer a shootdown signal:
			 * only lazy TLB lets A's munmap complete.  (Rule 4 forbids
			 * masking the signal in a CPU; B makes no mapping change
			 * meanwhile, so nothing is owed.) */
			sigset_t set, old;
			sigemptyset(&set);
			sigaddset(&set, smmu_shootdown_signal());
			pthread_sigmask(SIG_BLOCK, &set, &old);
			pthread_mutex_lock(&l->mu);
			atomic_store(&l->blocked, 1);
			atomic_fetch_add(&l->state, 1);
			while (!l->release)
				pthread_cond_wait(&l->cv, &l->mu);
			l->release = 0;
			pthread_mutex_unlock(&l->mu);
			pthread_sigmask(SIG_SETMASK, &old, NULL);
			atomic_store(&l->blocked, 0);
			continue;
		}
		case P_PROBE:
			TCHECK(&l->tf, smmu_cpu_switch_mm(cpu, l->a) == 0, "switch to A");
			l->probe_err = smmu_try_load64(cpu, l->p, &l->probe_val);
			l->probe_store_err = smmu_try_store64(cpu, l->p + PS, 0xa1); /* its own value */
			break;
		case P_EXIT:
			return (void *)(uintptr_t)0x600d;
		default:
			sched_yield();
			continue;
		}
		atomic_fetch_add(&l->state, 1);
	}
}

static void lazy_do(struct lazy *l, int cmd)
{
	int s = atomic_load(&l->state);
	atomic_store(&l->cmd, cmd);
	while (atomic_load(&l->state) == s)
		sched_yield();
}

struct unmapper {
	struct smmu_mm *mm;
	smmu_addr_t p;
	atomic_int done;
	int r1, r2;
};

static void *unmapper_main(void *arg)
{
	struct unmapper *u = arg;
	u->r1 = smmu_munmap(u->mm, u->p, PS);
	u->r2 = smmu_mprotect(u->mm, u->p + PS, PS, R);
	atomic_store(&u->done, 1);
	return NULL;
}

static void *unmapper_only_main(void *arg)
{
	struct unmapper *u = arg;
	u->r1 = smmu_munmap(u->mm, u->p, PS);
	atomic_store(&u->done, 1);
	return NULL;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

Test(switch, lazy_tlb_no_signal_and_no_wait_for_a_switched_away_cpu, .timeout = 60)
{
	struct smmu_pool *pool = new_pool(32, 1);
	struct lazy l;
	memset(&l, 0, sizeof(l));
	l.a = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	l.b = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	pthread_mutex_init(&l.mu, NULL);
	pthread_cond_init(&l.cv, NULL);
	map_at(l.b, H, PS, RW);
	cr_assert_eq(smmu_mmap(l.a, H, 8 * PS, RW, SMMU_MAP_FIXED | SMMU_MAP_POPULATE, &l.p), 0);
	{
		/* The values, written by a short-lived CPU of each mm. */
		struct smmu_cpu *c = reg(l.a, 0);
		for (unsigned i = 0; i < 8; i++)
			smmu_store64(c, l.p + i * PS, 0xa0 + i);
		cr_assert_eq(smmu_cpu_switch_mm(c, l.b), 0);
		smmu_store64(c, H, 0xb0);
		cr_assert_eq(smmu_cpu_unregister(c), 0);
	}
	pthread_t t;
	cr_assert_eq(smmu_thread_create(&t, NULL, l.a, lazy_main, &l), 0);

	/* Sanity: in A, holding P, it IS signalled by A's munmap of P. */
	lazy_do(&l, P_TO_A_TOUCH);
	struct smmu_stats s0 = st_of(l.a);
	cr_assert_eq(smmu_mprotect(l.a, l.p + 3 * PS, PS, R), 0);
	struct smmu_stats s1 = st_of(l.a);
	cr_assert_gt(s1.signals_sent, s0.signals_sent, "a CPU of A holding the page was not signalled");

	/* Switched away and spinning in B: A's unmaps of pages it holds in
	 * its (kept) A TLB send it nothing. */
	lazy_do(&l, P_TO_A_TOUCH);
	lazy_do(&l, P_TO_B);
	lazy_do(&l, P_SPIN_B);
	s0 = st_of(l.a);
	struct smmu_stats b0 = st_of(l.b);
	for (int i = 0; i < 50; i++) {
		smmu_addr_t got;
		cr_assert_eq(smmu_munmap(l.a, l.p + 2 * PS, PS), 0);
		cr_assert_eq(smmu_mmap(l.a, l.p + 2 * PS, PS, RW, SMMU_MAP_FIXED, &got), 0);
	}
	cr_assert_eq(smmu_mprotect(l.a, l.p, PS, R), 0);
	cr_assert_eq(smmu_mprotect(l.a, l.p, PS, RW), 0);
	s1 = st_of(l.a);
	struct smmu_stats b1 = st_of(l.b);
	cr_assert_eq(s1.signals_sent, s0.signals_sent, "A signalled a CPU that runs in B (%llu signals)",
		     (unsigned long long)(s1.signals_sent - s0.signals_sent));
	cr_assert_eq(b1.signals_received, b0.signals_received, "the CPU in B handled shootdown signals");
	cr_assert_eq(b1.signals_sent, b0.signals_sent);

	/* Back in A it catches up: page 2 is a fresh zero page now (no
	 * frame yet), so re-store the value through a CPU of A. */
	lazy_do(&l, P_PROBE); /* stops the spin first: P_PROBE is a command */
	cr_assert_eq(l.probe_err, 0);
	cr_assert_eq(l.probe_val, 0xa0);
	lazy_do(&l, P_TO_B);
	{
		struct smmu_cpu *c = reg(l.a, 0);
		smmu_store64(c, l.p + 2 * PS, 0xa2);
		cr_assert_eq(smmu_cpu_unregister(c), 0);
	}

	/* Switched away, online, blocked with the signal masked: munmap in A
	 * must complete without it.  It held P and P + PS in its A TLB. */
	lazy_do(&l, P_TO_A_TOUCH);
	lazy_do(&l, P_TO_B);
	lazy_do(&l, P_BLOCK_MASKED);
	cr_assert(atomic_load(&l.blocked));
	s0 = st_of(l.a);
	struct unmapper u = {.mm = l.a, .p = l.p};
	pthread_t ut;
	cr_assert_eq(pthread_create(&ut, NULL, unmapper_main, &u), 0);
	int waited = 0;
	while (!atomic_load(&u.done) && waited < 10000) {
		sleep_ms(5);
		waited += 5;
	}
	int done_in_time = atomic_load(&u.done);
	/* Release it either way (unmasking lets a wrongly sent signal be
	 * answered, so a failing library does not hang the test). */
	pthread_mutex_lock(&l.mu);
	l.release = 1;
	pthread_cond_signal(&l.cv);
	pthread_mutex_unlock(&l.mu);
	cr_assert_eq(pthread_join(ut, NULL), 0);
	cr_assert(done_in_time, "munmap in A waited for a CPU that had switched to B (blocked, online)");
	cr_assert_eq(u.r1, 0);
	cr_assert_eq(u.r2, 0);
	s1 = st_of(l.a);
	cr_assert_eq(s1.signals_sent, s0.signals_sent, "A signalled a CPU that runs in B");
	while (atomic_load(&l.blocked))
		sched_yield();

	/* Back in A: P is gone, P + PS is read-only. */
	lazy_do(&l, P_PROBE);
	cr_assert_eq(l.probe_err, -EFAULT, "stale A entry used after switching back: %d 0x%llx", l.probe_err,
		     (unsigned long long)l.probe_val);
	cr_assert_eq(l.probe_store_err, -EACCES, "stale writable A entry used after switching back");

	atomic_store(&l.cmd, P_EXIT);
	void *ret = NULL;
	cr_assert_eq(smmu_thread_join(t, &ret), 0);
	cr_assert_eq(ret, (void *)(uintptr_t)0x600d);
	cr_assert(!l.tf.failed, "%s", l.tf.why);
	cr_assert_eq(smmu_munmap(l.a, H, 8 * PS), 0);
	struct smmu_mm *mms[] = {l.a, l.b};
	destroy_all(mms, 2, pool);
	pthread_mutex_destroy(&l.mu);
	pthread_cond_destroy(&l.cv);
}

/* ------------------------------------------------------------ stats */

Test(switch, switch_counters_count_in_the_mm_switched_into)
{
	struct smmu_pool *pool = new_pool(16, 1);
	struct smmu_mm *a = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0), *b = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	map_at(a, H, 4 * PS, RW);
	map_at(b, H, 4 * PS, RW);
	struct smmu_cpu *cpu = reg(a, 0);
	cr_assert_eq(st_of(a).mm_switches, 0, "registering is not a switch");
	cr_assert_eq(st_of(b).mm_switches, 0);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	cr_assert_eq(st_of(a).mm_switches, 0);
	cr_assert_eq(st_of(b).mm_switches, 1);
	/* Other counters go to the mm the CPU is in when they happen. */
	struct smmu_stats a0 = st_of(a), b0 = st_of(b);
	for (unsigned i = 0; i < 4; i++)
		smmu_store64(cpu, H + i * PS, i); /* demand-zero faults, misses: B's */
	struct smmu_stats a1 = st_of(a), b1 = st_of(b);
	cr_assert_eq(a1.tlb_misses, a0.tlb_misses, "B's misses were counted in A");
	cr_assert_eq(a1.faults_demand_zero, a0.faults_demand_zero);
	cr_assert_geq(b1.tlb_misses - b0.tlb_misses, 4);
	cr_assert_eq(b1.faults_demand_zero - b0.faults_demand_zero, 4);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0); /* no-op */
	cr_assert_eq(st_of(a).mm_switches, 1);
	cr_assert_eq(st_of(b).mm_switches, 1);
	/* B's counters stay B's after the CPU left it. */
	struct smmu_stats b2 = st_of(b);
	cr_assert_eq(b2.faults_demand_zero, b1.faults_demand_zero);
	cr_assert_geq(b2.tlb_misses, b1.tlb_misses);
	smmu_store64(cpu, H, 1);
	cr_assert_eq(st_of(a).faults_demand_zero, a1.faults_demand_zero + 1);
	cr_assert_eq(st_of(b).faults_demand_zero, b1.faults_demand_zero);
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
		cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
	}
	cr_assert_eq(st_of(a).mm_switches, 6);
	cr_assert_eq(st_of(b).mm_switches, 6);
	cr_assert_eq(st_of(a).asid_recycles, 0, "two mms, 8 ASIDs: nothing recycled");
	cr_assert_eq(st_of(b).asid_recycles, 0);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	/* Departed: kept. */
	cr_assert_eq(st_of(a).mm_switches, 6);
	cr_assert_eq(st_of(b).mm_switches, 6);
	cr_assert_eq(st_of(b).faults_demand_zero, b1.faults_demand_zero);
	/* The stats printers know the new counters. */
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct smmu_stats s = st_of(a);
	smmu_stats_print_json(&s, f);
	fclose(f);
	cr_assert(strstr(buf, "\"mm_switches\": 6") != NULL, "%s", buf);
	cr_assert(strstr(buf, "\"asid_recycles\": 0") != NULL, "%s", buf);
	free(buf);
	struct smmu_mm *mms[] = {a, b};
	destroy_all(mms, 2, pool);
}

/* ------------------------------------------------------------ RCU modes */

static void rcu_round_trip(enum smmu_shootdown_mode mode)
{
	struct smmu_pool *pool = new_pool(4 * RT_PAGES, 1);
	struct smmu_mm *a = new_mm(pool, mode, 0), *b = new_mm(pool, mode, 0);
	map_at(a, H, RT_PAGES * PS, RW);
	map_at(b, H, RT_PAGES * PS, RW);
	struct smmu_cpu *cpu = reg(a, 0);
	fill(cpu, 0, 1);
	cr_assert_eq(smmu_quiescent(cpu), 0);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	fill(cpu, 1, 1);
	cr_assert_eq(smmu_quiescent(cpu), 0);
	for (int trip = 0; trip < 3; trip++) {
		cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
		cr_assert_eq(check_all(cpu, a, 0, 1), 0, "trip %d: A's entries were dropped", trip);
		cr_assert_eq(smmu_quiescent(cpu), 0);
		cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
		cr_assert_eq(check_all(cpu, b, 1, 1), 0, "trip %d: B's entries were dropped", trip);
		cr_assert_eq(smmu_quiescent(cpu), 0);
	}
	/* A unmaps a page the CPU holds, while the CPU runs in B (it is the
	 * caller: a CPU of B unmapping in A). */
	cr_assert_eq(smmu_munmap(a, H + 5 * PS, PS), 0);
	cr_assert_eq(smmu_mprotect(a, H + 6 * PS, PS, R), 0);
	cr_assert_eq(smmu_quiescent(cpu), 0);
	cr_assert_eq(check_all(cpu, b, 1, 1), 0, "A's unmap cost B entries");
	cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
	cr_assert_eq(smmu_quiescent(cpu), 0); /* deferred mode: the old entry may live until here */
	uint64_t v = 0;
	cr_assert_eq(smmu_try_load64(cpu, H + 5 * PS, &v), -EFAULT, "stale entry: 0x%llx", (unsigned long long)v);
	cr_assert_eq(smmu_try_store64(cpu, H + 6 * PS, 1), -EACCES);
	cr_assert_eq(smmu_load64(cpu, H + 6 * PS), stamp(0, 6, 1));
	cr_assert_eq(smmu_load64(cpu, H + 7 * PS), stamp(0, 7, 1));
	/* Offline and online in B are fine too. */
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	cr_assert_eq(smmu_cpu_offline(cpu), 0);
	cr_assert_eq(smmu_munmap(a, H + 7 * PS, PS), 0);
	cr_assert_eq(smmu_cpu_online(cpu), 0);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
	cr_assert_eq(smmu_quiescent(cpu), 0);
	cr_assert_eq(smmu_try_load64(cpu, H + 7 * PS, &v), -EFAULT);
	struct smmu_stats sa = st_of(a), sb = st_of(b);
	cr_assert_eq(sa.signals_sent + sb.signals_sent, 0, "an RCU-mode mm sent signals");
	cr_assert_geq(sa.mm_switches, 5);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	struct smmu_mm *mms[] = {a, b};
	destroy_all(mms, 2, pool);
}

Test(switch, rcu_round_trip, .timeout = 60)
{
	rcu_round_trip(SMMU_SHOOTDOWN_RCU);
}

Test(switch, rcu_deferred_round_trip, .timeout = 60)
{
	rcu_round_trip(SMMU_SHOOTDOWN_RCU_DEFERRED);
}

/* An RCU CPU switched to B keeps making quiescent states there; A's
 * strict munmap of a page it holds in its A TLB completes, and the CPU,
 * back in A, does not see the page. */
struct rcu_peer {
	struct smmu_mm *a, *b;
	atomic_int phase;
	int probe;
	struct tfail tf;
};

static void *rcu_peer_main(void *arg)
{
	struct rcu_peer *p = arg;
	struct smmu_cpu *cpu = smmu_cpu_self();
	TCHECK(&p->tf, cpu != NULL, "no CPU");
	if (!cpu)
		return NULL;
	TCHECK(&p->tf, smmu_load64(cpu, H + 2 * PS) == stamp(0, 2, 1), "A page 2");
	TCHECK(&p->tf, smmu_cpu_switch_mm(cpu, p->b) == 0, "to B");
	TCHECK(&p->tf, smmu_load64(cpu, H) == stamp(1, 0, 1), "B page 0");
	atomic_store(&p->phase, 1);
	while (atomic_load(&p->phase) == 1) {
		TCHECK(&p->tf, smmu_load64(cpu, H) == stamp(1, 0, 1), "B page 0");
		smmu_quiescent(cpu);
	}
	TCHECK(&p->tf, smmu_cpu_switch_mm(cpu, p->a) == 0, "to A");
	smmu_quiescent(cpu);
	uint64_t v;
	p->probe = smmu_try_load64(cpu, H + 2 * PS, &v);
	smmu_cpu_offline(cpu);
	return NULL;
}

Test(switch, rcu_cpu_in_another_mm_lets_grace_periods_end, .timeout = 60)
{
	struct smmu_pool *pool = new_pool(64, 1);
	struct smmu_mm *a = new_mm(pool, SMMU_SHOOTDOWN_RCU, 0), *b = new_mm(pool, SMMU_SHOOTDOWN_RCU, 0);
	map_at(a, H, 4 * PS, RW);
	map_at(b, H, PS, RW);
	{
		struct smmu_cpu *c = reg(a, 0);
		for (unsigned i = 0; i < 4; i++)
			smmu_store64(c, H + i * PS, stamp(0, i, 1));
		cr_assert_eq(smmu_cpu_switch_mm(c, b), 0);
		smmu_store64(c, H, stamp(1, 0, 1));
		cr_assert_eq(smmu_cpu_unregister(c), 0);
	}
	struct rcu_peer p = {.a = a, .b = b};
	pthread_t t;
	cr_assert_eq(smmu_thread_create(&t, NULL, a, rcu_peer_main, &p), 0);
	while (atomic_load(&p.phase) == 0)
		sched_yield();
	/* A has no CPU now: the library may skip the grace period (the CPU in
	 * B catches up by generation when it comes back); if it waits for
	 * one, the CPU's quiescent states in B end it. */
	cr_assert_eq(smmu_munmap(a, H + 2 * PS, PS), 0);
	atomic_store(&p.phase, 2);
	cr_assert_eq(smmu_thread_join(t, NULL), 0);
	cr_assert(!p.tf.failed, "%s", p.tf.why);
	cr_assert_eq(p.probe, -EFAULT);
	struct smmu_mm *mms[] = {a, b};
	destroy_all(mms, 2, pool);
}

/* ------------------------------------------------------------ mm lifetimes */

/*
 * A CPU keeps an inactive TLB for mm A after leaving it; A is destroyed
 * (its frames go back to the pool, poisoned) and a new mm is created - the
 * allocator may well hand it A's address.  Switching into the new mm must
 * find none of A's entries, whether it gets a never-used ASID or recycles
 * A's.
 */
static void destroyed_mm_case(unsigned asids)
{
	struct smmu_pool *pool = new_pool(16, 1);
	struct smmu_mm *x = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	map_at(x, H, PS, RW);
	struct smmu_cpu *cpu = reg(x, asids);
	smmu_store64(cpu, H, 0x5555);
	int same_address = 0;
	for (int round = 0; round < 6; round++) {
		struct smmu_mm *a = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
		map_at(a, H, 4 * PS, RW);
		cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
		uint64_t v = smmu_load64(cpu, H);
		cr_assert_eq(v, 0, "round %d: a new mm's fresh page read 0x%llx (%s)", round, (unsigned long long)v,
			     v == POISON64 ? "a freed frame through a dead mm's entry" : "a dead mm's data");
		for (unsigned i = 0; i < 4; i++)
			smmu_store64(cpu, H + i * PS, stamp(round, i, 1));
		for (unsigned i = 0; i < 4; i++)
			cr_assert_eq(smmu_load64(cpu, H + i * PS), stamp(round, i, 1)); /* entries now in a's TLB */
		cr_assert_eq(smmu_cpu_switch_mm(cpu, x), 0);
		cr_assert_eq(smmu_load64(cpu, H), 0x5555);
		cr_assert_eq(smmu_mm_destroy(a), 0, "an inactive ASID of a CPU kept mm a busy");
		struct smmu_mm *prev = a;
		/* The next round's mm: often at the same address. */
		struct smmu_mm *probe = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
		same_address += probe == prev;
		cr_assert_eq(smmu_mm_destroy(probe), 0);
	}
	cr_assert_eq(smmu_pool_free_frames(pool), 15);
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	struct smmu_mm *mms[] = {x};
	destroy_all(mms, 1, pool);
	cr_log_info("asids %u: a new mm reused a dead one's address %d of 6 times", asids, same_address);
}

Test(switch, entries_of_a_destroyed_mm_never_reach_a_new_one)
{
	destroyed_mm_case(2); /* the dead mm's ASID is recycled */
	destroyed_mm_case(0); /* never-used ASIDs first */
}

/* Frames come from, and go back to, each mm's own pool, whichever mm the
 * CPU runs in when they are freed. */
Test(switch, mms_over_different_pools)
{
	struct smmu_pool *p1 = new_pool(16, 1), *p2 = new_pool(16, 1);
	struct smmu_mm *a = new_mm(p1, SMMU_SHOOTDOWN_SIGNAL, 0), *b = new_mm(p2, SMMU_SHOOTDOWN_SIGNAL, 0);
	map_at(a, H, 16 * PS, RW);
	map_at(b, H, 16 * PS, RW);
	struct smmu_cpu *cpu = reg(a, 0);
	for (unsigned i = 0; i < 8; i++)
		smmu_store64(cpu, H + i * PS, stamp(0, i, 1));
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	for (unsigned i = 0; i < 8; i++)
		smmu_store64(cpu, H + i * PS, stamp(1, i, 1));
	cr_assert_eq(smmu_pool_free_frames(p1), 8);
	cr_assert_eq(smmu_pool_free_frames(p2), 8);
	/* A's frames freed by a CPU of B: back to A's pool. */
	cr_assert_eq(smmu_munmap(a, H, 8 * PS), 0);
	cr_assert_eq(smmu_pool_free_frames(p1), 16, "A's frames did not go back to A's pool");
	cr_assert_eq(smmu_pool_free_frames(p2), 8, "A's frames went to B's pool");
	map_at(a, H, 16 * PS, RW);
	/* Back in A: all 16 of A's pool, and no more. */
	cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
	for (unsigned i = 0; i < 16; i++) {
		uint64_t v = 1;
		cr_assert_eq(smmu_try_load64(cpu, H + i * PS, &v), 0, "A page %u", i);
		cr_assert_eq(v, 0);
	}
	cr_assert_eq(smmu_pool_free_frames(p1), 0);
	cr_assert_eq(smmu_pool_free_frames(p2), 8, "A's faults took frames from B's pool");
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	for (unsigned i = 0; i < 8; i++)
		cr_assert_eq(smmu_load64(cpu, H + i * PS), stamp(1, i, 1));
	uint64_t v;
	cr_assert_eq(smmu_try_load64(cpu, H + 8 * PS, &v), 0); /* B's pool still has 8 */
	cr_assert_eq(smmu_pool_free_frames(p2), 7);
	/* A and its pool can go while the CPU runs in B. */
	cr_assert_eq(smmu_mm_destroy(a), 0);
	cr_assert_eq(smmu_pool_free_frames(p1), 16);
	cr_assert_eq(smmu_pool_destroy(p1), 0, "the CPU (now in B) still held A's pool");
	for (unsigned i = 0; i < 8; i++)
		cr_assert_eq(smmu_load64(cpu, H + i * PS), stamp(1, i, 1));
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	struct smmu_mm *mms[] = {b};
	destroy_all(mms, 1, p2);
}

/* ------------------------------------------------------------ offline */

/* An offline CPU may switch; it stays offline (smmu_quiescent says so) and
 * catches up with both mms when it comes back. */
static void offline_switch(enum smmu_shootdown_mode mode)
{
	struct smmu_pool *pool = new_pool(32, 1);
	struct smmu_mm *a = new_mm(pool, mode, 0), *b = new_mm(pool, mode, 0);
	map_at(a, H, 4 * PS, RW);
	map_at(b, H, 4 * PS, RW);
	struct smmu_cpu *cpu = reg(a, 0);
	for (unsigned i = 0; i < 4; i++)
		smmu_store64(cpu, H + i * PS, stamp(0, i, 1));
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	cr_assert_eq(smmu_quiescent(cpu), 0, "online before the switch, online after");
	for (unsigned i = 0; i < 4; i++)
		smmu_store64(cpu, H + i * PS, stamp(1, i, 1));
	cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
	cr_assert_eq(smmu_cpu_offline(cpu), 0);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0);
	cr_assert_eq(smmu_cpu_mm(cpu), b);
	cr_assert_eq(smmu_quiescent(cpu), -EINVAL, "an offline CPU came online by switching");
	cr_assert_eq(smmu_munmap(a, H + PS, PS), 0);
	cr_assert_eq(smmu_munmap(b, H + PS, PS), 0);
	cr_assert_eq(smmu_mprotect(b, H + 2 * PS, PS, R), 0);
	cr_assert_eq(smmu_cpu_online(cpu), 0);
	uint64_t v;
	cr_assert_eq(smmu_try_load64(cpu, H + PS, &v), -EFAULT, "B's unmap while offline");
	cr_assert_eq(smmu_try_store64(cpu, H + 2 * PS, 1), -EACCES, "B's mprotect while offline");
	cr_assert_eq(smmu_load64(cpu, H), stamp(1, 0, 1));
	cr_assert_eq(smmu_load64(cpu, H + 3 * PS), stamp(1, 3, 1));
	cr_assert_eq(smmu_quiescent(cpu), 0);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, a), 0);
	cr_assert_eq(smmu_quiescent(cpu), 0, "online before the switch, online after");
	cr_assert_eq(smmu_try_load64(cpu, H + PS, &v), -EFAULT, "A's unmap while offline in B");
	cr_assert_eq(smmu_load64(cpu, H), stamp(0, 0, 1));
	cr_assert_eq(smmu_load64(cpu, H + 2 * PS), stamp(0, 2, 1));
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	struct smmu_mm *mms[] = {a, b};
	destroy_all(mms, 2, pool);
}

Test(switch, offline_cpu_switches_and_catches_up_when_online)
{
	offline_switch(SMMU_SHOOTDOWN_SIGNAL);
}

Test(switch, offline_rcu_cpu_switches_and_catches_up_when_online, .timeout = 60)
{
	offline_switch(SMMU_SHOOTDOWN_RCU);
}

/* ------------------------------------------------------------ inside a notifier */

struct nctx {
	struct smmu_mm *other;
	int calls, result;
};

static int switching_start(void *arg, const struct smmu_notify_range *r)
{
	(void)r;
	struct nctx *n = arg;
	struct smmu_cpu *self = smmu_cpu_self();
	n->calls++;
	n->result = self ? smmu_cpu_switch_mm(self, n->other) : -12345;
	return 0;
}

Test(switch, inside_a_notifier_callback_is_einval)
{
	struct smmu_pool *pool = new_pool(16, 1);
	struct smmu_mm *a = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0), *b = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	map_at(a, H, 4 * PS, RW);
	map_at(b, H, PS, RW);
	static const struct smmu_notifier_ops ops = {.invalidate_range_start = switching_start};
	struct nctx n = {.other = b, .result = 1};
	struct smmu_notifier *sub;
	cr_assert_eq(smmu_notifier_register(a, &ops, &n, &sub), 0);
	struct smmu_cpu *cpu = reg(a, 0);
	for (unsigned i = 0; i < 4; i++)
		smmu_store64(cpu, H + i * PS, stamp(0, i, 1));
	cr_assert_eq(smmu_munmap(a, H + 3 * PS, PS), 0); /* the callback runs on this thread */
	cr_assert_eq(n.calls, 1);
	cr_assert_eq(n.result, -EINVAL, "a switch inside a notifier callback returned %d", n.result);
	cr_assert_eq(smmu_cpu_mm(cpu), a);
	cr_assert_eq(smmu_load64(cpu, H), stamp(0, 0, 1));
	uint64_t v;
	cr_assert_eq(smmu_try_load64(cpu, H + 3 * PS, &v), -EFAULT);
	cr_assert_eq(smmu_notifier_unregister(sub), 0);
	cr_assert_eq(smmu_cpu_switch_mm(cpu, b), 0, "outside the callback it works");
	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	struct smmu_mm *mms[] = {a, b};
	destroy_all(mms, 2, pool);
}

/* ------------------------------------------------------------ switch during a shootdown */

/*
 * A shootdown of A is posted to a CPU of A that holds the page but has not
 * run its handler yet (here: the signal is masked, as if it were still in
 * flight), and the CPU switches to B.  The munmap must not complete before
 * the CPU either answered or left; leaving must settle what was posted to
 * A's TLB (not the new mm's), so that back in A the page faults instead of
 * reading the freed frame.
 */
struct inflight {
	struct smmu_mm *a, *b;
	atomic_int step;
	int probe;
	uint64_t val;
	struct tfail tf;
};

static void *inflight_main(void *arg)
{
	struct inflight *f = arg;
	struct smmu_cpu *cpu = smmu_cpu_self();
	TCHECK(&f->tf, cpu != NULL, "no CPU");
	if (!cpu)
		return NULL;
	TCHECK(&f->tf, smmu_load64(cpu, H) == 0xa0, "A page 0");
	TCHECK(&f->tf, smmu_load64(cpu, H + PS) == 0xa1, "A page 1");
	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, smmu_shootdown_signal());
	pthread_sigmask(SIG_BLOCK, &set, &old);
	atomic_store(&f->step, 1);
	while (atomic_load(&f->step) == 1) /* the munmap posts to us meanwhile */
		sched_yield();
	TCHECK(&f->tf, smmu_cpu_switch_mm(cpu, f->b) == 0, "switch to B");
	TCHECK(&f->tf, smmu_load64(cpu, H) == 0xb0, "B page 0");
	pthread_sigmask(SIG_SETMASK, &old, NULL); /* the late signal lands in B */
	TCHECK(&f->tf, smmu_load64(cpu, H) == 0xb0, "B page 0 after the late signal");
	atomic_store(&f->step, 3);
	while (atomic_load(&f->step) == 3)
		sched_yield();
	TCHECK(&f->tf, smmu_cpu_switch_mm(cpu, f->a) == 0, "switch to A");
	f->probe = smmu_try_load64(cpu, H, &f->val);
	TCHECK(&f->tf, smmu_load64(cpu, H + PS) == 0xa1, "A page 1");
	return NULL;
}

Test(switch, leaving_settles_a_shootdown_in_flight, .timeout = 60)
{
	struct smmu_pool *pool = new_pool(8, 1);
	struct inflight f;
	memset(&f, 0, sizeof(f));
	f.a = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	f.b = new_mm(pool, SMMU_SHOOTDOWN_SIGNAL, 0);
	map_at(f.a, H, 2 * PS, RW);
	map_at(f.b, H, PS, RW);
	{
		struct smmu_cpu *c = reg(f.a, 0);
		smmu_store64(c, H, 0xa0);
		smmu_store64(c, H + PS, 0xa1);
		cr_assert_eq(smmu_cpu_switch_mm(c, f.b), 0);
		smmu_store64(c, H, 0xb0);
		cr_assert_eq(smmu_cpu_unregister(c), 0);
	}
	pthread_t t;
	cr_assert_eq(smmu_thread_create(&t, NULL, f.a, inflight_main, &f), 0);
	while (atomic_load(&f.step) != 1)
		sched_yield();
	struct smmu_stats s0 = st_of(f.a);
	struct unmapper u = {.mm = f.a, .p = H};
	pthread_t ut;
	cr_assert_eq(pthread_create(&ut, NULL, unmapper_only_main, &u), 0);
	for (int i = 0; i < 10000 && st_of(f.a).signals_sent == s0.signals_sent; i++)
		sleep_ms(1);
	cr_assert_gt(st_of(f.a).signals_sent, s0.signals_sent, "the munmap never signalled the CPU holding the page");
	sleep_ms(50);
	cr_assert(!atomic_load(&u.done), "munmap returned while a CPU of A holding the page had not answered");
	atomic_store(&f.step, 2); /* switch away now */
	for (int i = 0; i < 10000 && !atomic_load(&u.done); i++)
		sleep_ms(1);
	int done = atomic_load(&u.done);
	cr_assert_eq(pthread_join(ut, NULL), 0);
	cr_assert(done, "munmap did not complete after the CPU left A");
	cr_assert_eq(u.r1, 0);
	while (atomic_load(&f.step) != 3)
		sched_yield();
	/* Page 0's frame is free (poisoned): a stale A entry would read it. */
	atomic_store(&f.step, 4);
	cr_assert_eq(smmu_thread_join(t, NULL), 0);
	cr_assert(!f.tf.failed, "%s", f.tf.why);
	cr_assert_eq(f.probe, -EFAULT, "back in A, the page unmapped while the shootdown was in flight read 0x%llx",
		     (unsigned long long)f.val);
	struct smmu_mm *mms[] = {f.a, f.b};
	destroy_all(mms, 2, pool);
}

/* ------------------------------------------------------------ RCU stall of a switched-away CPU */

/*
 * Grace periods are process-wide (liburcu QSBR): a CPU that left RCU mm A
 * for B and stays online without a quiescent state holds up A's strict
 * munmap as much as before.  It then stalls, and the header promises a
 * report ("A CPU of an RCU-mode mm stalls when it stays online without a
 * quiescent state while something waits for a grace period"): from A's
 * watchdog or B's, naming it by its id there.
 */
struct stall_ctx {
	struct smmu_mm *a, *b;
	atomic_int phase, reports, named;
	_Atomic unsigned id_in_a, id_in_b; /* read by the watchdog thread */
	_Atomic unsigned q_id;             /* the other CPU's id in A, + 1 */
	struct tfail tf;
};

static struct stall_ctx *stall_c;

static void record_stall(struct smmu_mm *m, unsigned id, uint64_t ns, void *arg)
{
	(void)ns;
	(void)arg;
	struct stall_ctx *c = stall_c;
	atomic_fetch_add(&c->reports, 1);
	/* By its id in either mm, from either watchdog (ids are distinct
	 * from the other CPU's: checked below). */
	if ((m == c->a || m == c->b) && (id == atomic_load(&c->id_in_a) || id == atomic_load(&c->id_in_b)))
		atomic_fetch_add(&c->named, 1);
}

static void *staller_switched(void *arg)
{
	struct stall_ctx *c = arg;
	struct smmu_cpu *cpu = smmu_cpu_self();
	TCHECK(&c->tf, cpu != NULL, "no CPU");
	if (!cpu)
		return NULL;
	c->id_in_a = smmu_cpu_id(cpu);
	TCHECK(&c->tf, smmu_load64(cpu, H) == 1, "A page 0");
	TCHECK(&c->tf, smmu_cpu_switch_mm(cpu, c->b) == 0, "switch");
	c->id_in_b = smmu_cpu_id(cpu);
	TCHECK(&c->tf, smmu_load64(cpu, H) == 2, "B page 0");
	atomic_store(&c->phase, 1);
	/* Online in B, no quiescent state: for 3 s at most, or until reported. */
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		smmu_load64(cpu, H);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while (!atomic_load(&c->named) && (t.tv_sec - t0.tv_sec) < 3);
	smmu_quiescent(cpu);
	while (atomic_load(&c->phase) != 2)
		smmu_quiescent(cpu);
	return NULL;
}

static void *quiescer_in_a(void *arg)
{
	struct stall_ctx *c = arg;
	struct smmu_cpu *cpu = smmu_cpu_self();
	if (!cpu)
		return NULL;
	atomic_store(&c->q_id, smmu_cpu_id(cpu) + 1);
	while (atomic_load(&c->phase) != 2) {
		uint64_t v;
		smmu_try_load64(cpu, H + PS, &v); /* holds page 1: A needs a grace period for it */
		smmu_quiescent(cpu);
	}
	return NULL;
}

Test(switch, rcu_stall_by_a_switched_away_cpu_is_reported, .timeout = 60)
{
	struct stall_ctx c;
	memset(&c, 0, sizeof(c));
	stall_c = &c;
	struct smmu_pool *pool = new_pool(16, 1);
	struct smmu_mm_config mc = {.mode = SMMU_SHOOTDOWN_RCU, .stall_ns = 50000000, .stall = record_stall};
	cr_assert_eq(smmu_mm_create_ex(pool, &mc, &c.a), 0);
	cr_assert_eq(smmu_mm_create_ex(pool, &mc, &c.b), 0);
	map_at(c.a, H, 2 * PS, RW);
	map_at(c.b, H, PS, RW);
	{
		struct smmu_cpu *w = reg(c.a, 0);
		smmu_store64(w, H, 1);
		smmu_store64(w, H + PS, 3);
		cr_assert_eq(smmu_cpu_switch_mm(w, c.b), 0);
		smmu_store64(w, H, 2);
		cr_assert_eq(smmu_cpu_unregister(w), 0);
	}
	pthread_t q, x;
	cr_assert_eq(smmu_thread_create(&x, NULL, c.a, staller_switched, &c), 0);
	while (atomic_load(&c.phase) != 1)
		sched_yield();
	cr_assert_eq(smmu_thread_create(&q, NULL, c.a, quiescer_in_a, &c), 0);
	while (atomic_load(&c.q_id) == 0)
		sched_yield();
	cr_assert(c.q_id - 1 != c.id_in_a && c.q_id - 1 != c.id_in_b, "ids collide: the test cannot tell");
	sleep_ms(10);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(smmu_munmap(c.a, H + PS, PS), 0); /* a grace period: waits for the CPU in B */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double waited_ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	atomic_store(&c.phase, 2);
	cr_assert_eq(smmu_thread_join(x, NULL), 0);
	cr_assert_eq(smmu_thread_join(q, NULL), 0);
	cr_assert(!c.tf.failed, "%s", c.tf.why);
	cr_assert_gt(atomic_load(&c.named), 0,
		     "A's munmap waited %.0f ms for a CPU that switched to B and passed no quiescent state, and "
		     "no stall report named it (%d reports in all)",
		     waited_ms, atomic_load(&c.reports));
	struct smmu_mm *mms[] = {c.a, c.b};
	destroy_all(mms, 2, pool);
}
