/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_PGTABLE_H
#define SMMU_LIB_PGTABLE_H

/*
 * The page table: a radix tree of SMMU_PT_LEVELS levels of 512 entries,
 * level 3 at the root, level 0 the leaf PTEs, over page_shift + 36 bits of
 * address.  A table page is 4 KiB (512 x 8 bytes) from the allocation seam,
 * whatever the frame size.
 *
 * An entry is one 64-bit word.  Upper levels: the host address of the
 * child table | SMMU_PTE_PRESENT.  Leaf: frame number << SMMU_PTE_FRAME_SHIFT
 * | flag bits.  A leaf with a frame is either PRESENT (readable; WRITE if
 * writable) or PROTNONE (the mapping forbids all access; the frame stays).
 *
 * Concurrency:
 *  - walkers on the TLB-miss path take no lock: sequentially consistent
 *    loads down the tree (plain moves on x86; a table is zeroed before its
 *    publication), and they set ACCESSED / DIRTY with compare-and-swap, as
 *    hardware does;
 *  - removing or reducing an entry (a leaf, or the link to a table) is a
 *    sequentially consistent store or read-modify-write: with the CPU's
 *    store to `loaded` before its walk and the initiator's generation bump
 *    after the clear, that order makes an initiator whose clear a walker
 *    missed find that walker's CPU in the CPU set (shootdown_signal.c);
 *  - everything else that changes the tree holds the mm's mapping lock:
 *    shared for the demand-fault path, which only fills empty slots with
 *    compare-and-swap, exclusive for munmap / mprotect / mmap / teardown;
 *  - a table page unhooked from the tree is freed through the gather, after
 *    the flush, because a lock-free walker may still be reading it.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <softmmu/types.h>

#define SMMU_PT_ENTRIES 512u
#define SMMU_PT_TABLE_SIZE 4096u

#define SMMU_PTE_PRESENT 0x001ull
#define SMMU_PTE_WRITE 0x002ull
#define SMMU_PTE_ACCESSED 0x004ull
#define SMMU_PTE_DIRTY 0x008ull
#define SMMU_PTE_COW 0x010ull      /* software: frame shared copy-on-write (dup.c); never
                                    * with WRITE */
#define SMMU_PTE_PROTNONE 0x020ull /* software: frame kept, no access */
#define SMMU_PTE_WRNOTIFY 0x040ull /* software: the next write calls the mm's
                                    * write-notify handler first (writenotify.c) */
#define SMMU_PTE_FRAME_SHIFT 12
#define SMMU_PTE_FLAGS_MASK ((1ull << SMMU_PTE_FRAME_SHIFT) - 1)
#define SMMU_PTE_HAS_FRAME (SMMU_PTE_PRESENT | SMMU_PTE_PROTNONE)

/*
 * Bits 44..63 of a leaf: which CPUs may cache it.  A CPU sets bit
 * (id % 20) with the same compare-and-swap that sets accessed/dirty,
 * before it fills its TLB from the entry; the bits stay until the entry is
 * cleared.  An initiator reads them from the value its clear (an atomic
 * exchange or compare-and-swap) replaced, so a CPU whose fill could use the
 * old entry is always among them: the shootdown signals only those.  Ids
 * that share a bit make it an over-approximation, never an omission.
 */
#define SMMU_PTE_CPUS_SHIFT 44
#define SMMU_PTE_CPUS_BITS 20
#define SMMU_CPUS_ALL ((1u << SMMU_PTE_CPUS_BITS) - 1)
#define SMMU_PTE_FRAME_MASK (((1ull << SMMU_PTE_CPUS_SHIFT) - 1) & ~SMMU_PTE_FLAGS_MASK)

static inline uint32_t smmu__cpu_bit(unsigned cpu_id)
{
	return 1u << (cpu_id % SMMU_PTE_CPUS_BITS);
}

static inline uint32_t smmu__pte_cpus(uint64_t pte)
{
	return (uint32_t)(pte >> SMMU_PTE_CPUS_SHIFT);
}

typedef uint64_t smmu_pte_t;

struct smmu__ptable {
	_Atomic smmu_pte_t e[SMMU_PT_ENTRIES];
};
_Static_assert(sizeof(struct smmu__ptable) == SMMU_PT_TABLE_SIZE, "table page size");

static inline uint32_t smmu__pte_frame(smmu_pte_t pte)
{
	return (uint32_t)((pte & SMMU_PTE_FRAME_MASK) >> SMMU_PTE_FRAME_SHIFT);
}

static inline smmu_pte_t smmu__pte_make(uint32_t frame, smmu_pte_t flags)
{
	return ((smmu_pte_t)frame << SMMU_PTE_FRAME_SHIFT) | flags;
}

static inline struct smmu__ptable *smmu__pt_child(smmu_pte_t e)
{
	return (struct smmu__ptable *)(uintptr_t)(e & ~(smmu_pte_t)SMMU_PTE_FLAGS_MASK);
}

/* Index into the table at `level` (0 = leaf) for addr. */
static inline unsigned smmu__pt_index(unsigned page_shift, smmu_addr_t addr, unsigned level)
{
	return (unsigned)(addr >> (page_shift + SMMU_PT_ENTRY_BITS * level)) & (SMMU_PT_ENTRIES - 1);
}

/* Which entry of a level-`level` table based at base covers addr: a shift,
 * not a division by the span (the walkers run on every munmap). */
static inline unsigned smmu__pt_index_from(unsigned page_shift, unsigned level, smmu_addr_t base, smmu_addr_t addr)
{
	return (unsigned)((addr - base) >> (page_shift + SMMU_PT_ENTRY_BITS * level));
}

/* Bytes of address covered by one entry at `level`. */
static inline uint64_t smmu__pt_span(unsigned page_shift, unsigned level)
{
	return 1ull << (page_shift + SMMU_PT_ENTRY_BITS * level);
}

struct smmu_mm;
struct smmu__gather;

/* The slot at level `at` (0: the leaf) on the way to addr, or NULL if a
 * table above it is missing.  Lock-free. */
_Atomic smmu_pte_t *smmu__pt_slot(struct smmu__ptable *root, unsigned page_shift, smmu_addr_t addr, unsigned at);

/* smmu__pt_slot, allocating the missing tables above it (see
 * smmu__pt_lookup_alloc). */
int smmu__pt_slot_alloc(struct smmu__ptable *root, unsigned page_shift, smmu_addr_t addr, unsigned at,
			_Atomic smmu_pte_t **slot);

/* The leaf slot for addr, or NULL if a table on the way is missing.
 * Lock-free. */
_Atomic smmu_pte_t *smmu__pt_lookup(struct smmu__ptable *root, unsigned page_shift, smmu_addr_t addr);

/* The leaf slot for addr, allocating missing tables.  -ENOMEM on failure
 * (tables allocated on the way stay, empty: harmless, freed by munmap or
 * teardown).  Caller holds the mapping lock, shared or exclusive. */
int smmu__pt_lookup_alloc(struct smmu__ptable *root, unsigned page_shift, smmu_addr_t addr, _Atomic smmu_pte_t **slot);

/* Clear every leaf in [start, end), queue frames and emptied tables on g.
 * Caller holds the mapping lock exclusively. */
void smmu__pt_zap(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t start, smmu_addr_t end);

/* Unhook every table page under [start, end) that holds no entry and queue
 * it on g (undoing smmu__pt_lookup_alloc's tables after a failure).
 * Caller holds the mapping lock exclusively. */
void smmu__pt_prune(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t start, smmu_addr_t end);

/* Rewrite the permission bits of every leaf with a frame in [start, end)
 * to match prot; records on g the ranges whose access was reduced.
 * Caller holds the mapping lock exclusively. */
void smmu__pt_change_prot(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t start, smmu_addr_t end, int prot);

/* Count the leaves with a frame in [start, end) that have any of `bits`
 * (SMMU_PTE_ACCESSED, SMMU_PTE_DIRTY), and set their bits in bitmap (bit i
 * for the page at start + i pages; bits of other pages are left alone) if
 * it is not NULL; with g, also clear those bits in them and record their
 * ranges and CPUs on g for the flush that makes the next access walk (and
 * set the bits) again.  Without g: count only (mapping lock shared is
 * enough).  With g: caller holds the mapping lock exclusively. */
size_t smmu__pt_clear_bits(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t start, smmu_addr_t end,
			   smmu_pte_t bits, uint64_t *bitmap);

/* Arm (set SMMU_PTE_WRNOTIFY and clear dirty, recording on g what a TLB
 * may write through) every writable leaf in [start, end) - with shared,
 * the copy-on-write ones too (for a mapping that allows writing) - or
 * disarm (clear it; g unused) every armed leaf.  The number of leaves
 * changed.  Caller holds the mapping lock exclusively. */
size_t smmu__pt_write_notify(struct smmu_mm *mm, struct smmu__gather *g, smmu_addr_t start, smmu_addr_t end,
			     bool arm, bool shared);

/* Call fn(slot, addr, ctx) for every leaf slot of [start, end) whose
 * tables exist.  Caller holds the mapping lock. */
void smmu__pt_for_each_leaf(struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end,
			    void (*fn)(_Atomic smmu_pte_t *slot, smmu_addr_t addr, void *ctx), void *ctx);

/* Leaf flags for a mapping with protection prot (frame bits excluded). */
smmu_pte_t smmu__pte_prot_bits(int prot);

/* Free a whole tree (teardown, after every frame was zapped).  No walker
 * may exist. */
void smmu__pt_free_root(struct smmu__ptable *root);

#endif
