/* SPDX-License-Identifier: MIT */
#ifndef SOFTMMU_ACCESS_H
#define SOFTMMU_ACCESS_H

/*
 * The inline access fast path.  Included by <softmmu/softmmu.h>; do not
 * include it directly.
 *
 * Important, for every function here:
 *  - call only on the thread that registered `cpu` (the TLB is private);
 *  - an access of N bytes hits only when it is N-aligned and lies in a page
 *    the TLB holds with the needed permission; everything else (misses,
 *    misaligned or page-crossing accesses, first writes to clean pages) goes
 *    to the out-of-line slow path, which walks the page table, handles the
 *    fault or traps, and is always correct;
 *  - the trapping forms (smmu_loadN, smmu_storeN, the atomics) hand a fault
 *    that no mapping handles to the CPU's trap handler and retry the access
 *    if it returns; the try forms return the error instead.
 *
 * The hit, x86-64 with gcc -O2 (bench-access prints the count from the
 * generated code): mark the access, copy, shift, and (TLB mask), add (TLB
 * base), copy, and (tag mask), compare, branch, load addend, access,
 * unmark (one subtract that also says whether a shootdown was deferred),
 * branch - 13 instructions, no call, no atomic read-modify-write (the
 * subtract has no lock prefix: only this thread's signal handler shares
 * the word), no hardware fence.  Aligned emulated accesses are relaxed
 * atomics so that guest data races are defined behaviour; on x86 they are
 * plain moves.
 */

#include <errno.h>
#include <stdint.h>

#include <softmmu/export.h>
#include <softmmu/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Slow paths: called by the inline functions below, not API.  Each is
 * entered inside the access critical section and returns outside it.
 */
enum smmu__atomic_op { SMMU__CMPXCHG, SMMU__FETCH_ADD, SMMU__XCHG };
SMMU_API uint64_t smmu__load_slow(struct smmu_cpu *cpu, smmu_addr_t addr, unsigned size);
SMMU_API void smmu__store_slow(struct smmu_cpu *cpu, smmu_addr_t addr, unsigned size, uint64_t val);
SMMU_API int smmu__try_load_slow(struct smmu_cpu *cpu, smmu_addr_t addr, unsigned size, uint64_t *out);
SMMU_API int smmu__try_store_slow(struct smmu_cpu *cpu, smmu_addr_t addr, unsigned size, uint64_t val);
SMMU_API uint64_t smmu__atomic_slow(struct smmu_cpu *cpu, smmu_addr_t addr, enum smmu__atomic_op op,
				    uint64_t a, uint64_t b);
SMMU_API int smmu__try_atomic_slow(struct smmu_cpu *cpu, smmu_addr_t addr, enum smmu__atomic_op op, uint64_t a,
				   uint64_t b, uint64_t *old);
/* The end of an access found a deferred shootdown (in_access was 3, now 2):
 * leave, flush, then acknowledge. */
SMMU_API void smmu__access_exit_slow(struct smmu_cpu *cpu);

#if defined(__GNUC__)
#define SMMU__LIKELY(x) __builtin_expect(!!(x), 1)
#define SMMU__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define SMMU__LIKELY(x) (x)
#define SMMU__UNLIKELY(x) (x)
#endif

/*
 * The access critical section.  A shootdown signal that lands inside one
 * (between the TLB lookup and the access it guards, or in the middle of a
 * miss that is about to fill the TLB) only records the request; the end of
 * the access flushes and acknowledges it, so a translation that the access
 * used or filled can never outlive the acknowledgement.  Plain stores and
 * compiler-only fences: the handler runs on this thread.
 */
static inline void smmu__access_enter(struct smmu_cpu *cpu)
{
	__atomic_store_n(&cpu->in_access, 1, __ATOMIC_RELAXED);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/* Leave: subtract 1 from in_access in a single instruction (a signal lands
 * before it or after it, never in the middle) and say whether a shootdown
 * was deferred meanwhile.  Also a compiler barrier. */
static inline int smmu__access_leave(struct smmu_cpu *cpu)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
	int deferred;
	__asm__ volatile("subl $1, %0" : "+m"(cpu->in_access), "=@ccnz"(deferred) : : "memory");
	return deferred;
#else
	/* Elsewhere a read-modify-write is one instruction only when atomic. */
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	int left = __atomic_sub_fetch(&cpu->in_access, 1, __ATOMIC_RELAXED);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	return left != 0;
#endif
}

static inline void smmu__access_exit(struct smmu_cpu *cpu)
{
	if (SMMU__UNLIKELY(smmu__access_leave(cpu)))
		smmu__access_exit_slow(cpu);
}

static inline const struct smmu_tlb_entry *smmu__tlb_entry(const struct smmu_cpu *cpu, smmu_addr_t addr)
{
	return (const struct smmu_tlb_entry *)((const char *)cpu->tlb +
					       ((addr >> (SMMU_TLB_GRANULE_SHIFT - SMMU_TLB_ENTRY_SHIFT)) & cpu->tlb_mask));
}

/* The value a tag must equal for an aligned access of `size` bytes at addr:
 * misaligned addresses keep a low bit and never match. */
static inline uint64_t smmu__tag_of(smmu_addr_t addr, unsigned size)
{
	return addr & (~(SMMU_TLB_GRANULE - 1) | (uint64_t)(size - 1));
}

#define SMMU__HOST(type, addr, e) ((type *)(uintptr_t)((addr) + (e)->addend))

#define SMMU__DEFINE_ACCESS(bits)                                                                           \
	static inline uint##bits##_t smmu_load##bits(struct smmu_cpu *cpu, smmu_addr_t addr)                \
	{                                                                                                   \
		smmu__access_enter(cpu);                                                                    \
		const struct smmu_tlb_entry *e = smmu__tlb_entry(cpu, addr);                                \
		if (SMMU__LIKELY(e->read_tag == smmu__tag_of(addr, (bits) / 8))) {                          \
			uint##bits##_t v = __atomic_load_n(SMMU__HOST(uint##bits##_t, addr, e), __ATOMIC_RELAXED); \
			smmu__access_exit(cpu);                                                             \
			return v;                                                                           \
		}                                                                                           \
		return (uint##bits##_t)smmu__load_slow(cpu, addr, (bits) / 8);                              \
	}                                                                                                   \
	static inline void smmu_store##bits(struct smmu_cpu *cpu, smmu_addr_t addr, uint##bits##_t val)     \
	{                                                                                                   \
		smmu__access_enter(cpu);                                                                    \
		const struct smmu_tlb_entry *e = smmu__tlb_entry(cpu, addr);                                \
		if (SMMU__LIKELY(e->write_tag == smmu__tag_of(addr, (bits) / 8))) {                         \
			__atomic_store_n(SMMU__HOST(uint##bits##_t, addr, e), val, __ATOMIC_RELAXED);       \
			smmu__access_exit(cpu);                                                             \
			return;                                                                             \
		}                                                                                           \
		smmu__store_slow(cpu, addr, (bits) / 8, val);                                               \
	}                                                                                                   \
	static inline int smmu_try_load##bits(struct smmu_cpu *cpu, smmu_addr_t addr, uint##bits##_t *out) \
	{                                                                                                   \
		uint64_t v;                                                                                 \
		int err;                                                                                    \
		smmu__access_enter(cpu);                                                                    \
		const struct smmu_tlb_entry *e = smmu__tlb_entry(cpu, addr);                                \
		if (SMMU__LIKELY(e->read_tag == smmu__tag_of(addr, (bits) / 8))) {                          \
			*out = __atomic_load_n(SMMU__HOST(uint##bits##_t, addr, e), __ATOMIC_RELAXED);      \
			smmu__access_exit(cpu);                                                             \
			return 0;                                                                           \
		}                                                                                           \
		err = smmu__try_load_slow(cpu, addr, (bits) / 8, &v);                                       \
		if (err == 0)                                                                               \
			*out = (uint##bits##_t)v;                                                           \
		return err;                                                                                 \
	}                                                                                                   \
	static inline int smmu_try_store##bits(struct smmu_cpu *cpu, smmu_addr_t addr, uint##bits##_t val)  \
	{                                                                                                   \
		smmu__access_enter(cpu);                                                                    \
		const struct smmu_tlb_entry *e = smmu__tlb_entry(cpu, addr);                                \
		if (SMMU__LIKELY(e->write_tag == smmu__tag_of(addr, (bits) / 8))) {                         \
			__atomic_store_n(SMMU__HOST(uint##bits##_t, addr, e), val, __ATOMIC_RELAXED);       \
			smmu__access_exit(cpu);                                                             \
			return 0;                                                                           \
		}                                                                                           \
		return smmu__try_store_slow(cpu, addr, (bits) / 8, val);                                    \
	}

/*
 * smmu_loadN(cpu, addr) / smmu_storeN(cpu, addr, val): N-bit load and store
 * of emulated memory (little-endian, any alignment).  Faults go to the trap
 * handler.  Blocks: only in a fault (demand-zero, trap handler).
 * Thread: cpu's owner only.
 *
 * smmu_try_loadN(cpu, addr, &val) / smmu_try_storeN(cpu, addr, val): the
 * same, but return 0 on success, -EFAULT when addr is not mapped, -EACCES
 * when the mapping forbids the access, -ENOMEM when no frame or table page
 * could be allocated for a demand-zero fault.  On error *val and memory are
 * unchanged.
 */
SMMU__DEFINE_ACCESS(8)
SMMU__DEFINE_ACCESS(16)
SMMU__DEFINE_ACCESS(32)
SMMU__DEFINE_ACCESS(64)

/* Apply op to the host word p, sequentially consistent; return the value
 * before.  Shared by the hit below and the slow path. */
static inline uint64_t smmu__atomic_apply(uint64_t *p, enum smmu__atomic_op op, uint64_t a, uint64_t b)
{
	switch (op) {
	case SMMU__CMPXCHG:
		__atomic_compare_exchange_n(p, &a, b, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
		return a;
	case SMMU__FETCH_ADD:
		return __atomic_fetch_add(p, a, __ATOMIC_SEQ_CST);
	case SMMU__XCHG:
		break;
	}
	return __atomic_exchange_n(p, a, __ATOMIC_SEQ_CST);
}

/*
 * The atomics' hit: inside a new critical section, look up addr for
 * writing and, on a hit, apply op to the frame and leave (returns 1, *old
 * the value before); on a miss return 0 still inside the section, which
 * the slow path leaves.  op is a constant at every call, so each atomic
 * inlines to its own instruction.
 */
static inline int smmu__atomic_hit(struct smmu_cpu *cpu, smmu_addr_t addr, enum smmu__atomic_op op, uint64_t a,
				   uint64_t b, uint64_t *old)
{
	smmu__access_enter(cpu);
	const struct smmu_tlb_entry *e = smmu__tlb_entry(cpu, addr);
	if (SMMU__UNLIKELY(e->write_tag != smmu__tag_of(addr, 8)))
		return 0;
	*old = smmu__atomic_apply(SMMU__HOST(uint64_t, addr, e), op, a, b);
	smmu__access_exit(cpu);
	return 1;
}

/*
 * Atomic read-modify-write on emulated memory, sequentially consistent,
 * acting on the shared frame so that every CPU of the mm sees one order.
 * addr must be 8-aligned (else the trap reports -EINVAL) and mapped
 * read-write.  Each returns the value that was in memory before.
 * Thread: cpu's owner only.  Blocks: only in a fault.
 */
static inline uint64_t smmu_cmpxchg64(struct smmu_cpu *cpu, smmu_addr_t addr, uint64_t expected, uint64_t desired)
{
	uint64_t old;

	if (SMMU__LIKELY(smmu__atomic_hit(cpu, addr, SMMU__CMPXCHG, expected, desired, &old)))
		return old;
	return smmu__atomic_slow(cpu, addr, SMMU__CMPXCHG, expected, desired);
}

static inline uint64_t smmu_fetch_add64(struct smmu_cpu *cpu, smmu_addr_t addr, uint64_t delta)
{
	uint64_t old;

	if (SMMU__LIKELY(smmu__atomic_hit(cpu, addr, SMMU__FETCH_ADD, delta, 0, &old)))
		return old;
	return smmu__atomic_slow(cpu, addr, SMMU__FETCH_ADD, delta, 0);
}

static inline uint64_t smmu_xchg64(struct smmu_cpu *cpu, smmu_addr_t addr, uint64_t val)
{
	uint64_t old;

	if (SMMU__LIKELY(smmu__atomic_hit(cpu, addr, SMMU__XCHG, val, 0, &old)))
		return old;
	return smmu__atomic_slow(cpu, addr, SMMU__XCHG, val, 0);
}

/*
 * smmu_try_cmpxchg64 / smmu_try_fetch_add64 / smmu_try_xchg64: the same
 * atomics without the trap.  Return 0 and the value that was in memory
 * before in *old; or -EINVAL when addr is not 8-aligned, -EFAULT when it
 * is not mapped, -EACCES when the mapping is not read-write, -ENOMEM when
 * a demand-zero fault found no frame or table page, and then neither
 * memory nor *old has changed.  A fault handler of the mapping runs as for
 * any access (and a copy-on-write page is broken) before the error or the
 * operation.  Thread: cpu's owner only.  Blocks: only in a fault.
 */
static inline int smmu_try_cmpxchg64(struct smmu_cpu *cpu, smmu_addr_t addr, uint64_t expected, uint64_t desired,
				     uint64_t *old)
{
	if (SMMU__LIKELY(smmu__atomic_hit(cpu, addr, SMMU__CMPXCHG, expected, desired, old)))
		return 0;
	return smmu__try_atomic_slow(cpu, addr, SMMU__CMPXCHG, expected, desired, old);
}

static inline int smmu_try_fetch_add64(struct smmu_cpu *cpu, smmu_addr_t addr, uint64_t delta, uint64_t *old)
{
	if (SMMU__LIKELY(smmu__atomic_hit(cpu, addr, SMMU__FETCH_ADD, delta, 0, old)))
		return 0;
	return smmu__try_atomic_slow(cpu, addr, SMMU__FETCH_ADD, delta, 0, old);
}

static inline int smmu_try_xchg64(struct smmu_cpu *cpu, smmu_addr_t addr, uint64_t val, uint64_t *old)
{
	if (SMMU__LIKELY(smmu__atomic_hit(cpu, addr, SMMU__XCHG, val, 0, old)))
		return 0;
	return smmu__try_atomic_slow(cpu, addr, SMMU__XCHG, val, 0, old);
}

#ifdef __cplusplus
}
#endif

#endif
