/* SPDX-License-Identifier: MIT */
#ifndef SOFTMMU_TYPES_H
#define SOFTMMU_TYPES_H

/*
 * Types shared by the API and the inline access path.
 *
 * Structures marked "layout, not API" are visible only because the inline
 * fast path in <softmmu/access.h> must read them.  Their fields may change
 * between releases; never touch them directly.
 */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* An address in a software address space. */
typedef uint64_t smmu_addr_t;

/* Opaque handles. */
struct smmu_pool;
struct smmu_mm;
struct smmu_cpu;

/* Page-table geometry: 4 levels of 512 entries over page_shift + 36 bits
 * (48-bit addresses with 4 KiB pages). */
#define SMMU_PT_LEVELS 4
#define SMMU_PT_ENTRY_BITS 9
#define SMMU_DEFAULT_PAGE_SIZE 4096u

/* Protections for smmu_mmap / smmu_mprotect.  Exactly one of NONE, READ or
 * READ|WRITE; WRITE alone is rejected. */
#define SMMU_PROT_NONE 0x0
#define SMMU_PROT_READ 0x1
#define SMMU_PROT_WRITE 0x2

/* Flags for smmu_mmap. */
#define SMMU_MAP_FIXED 0x1           /* place exactly at addr, replacing what is there */
#define SMMU_MAP_FIXED_NOREPLACE 0x2 /* place exactly at addr, -EEXIST if anything is there */
#define SMMU_MAP_POPULATE 0x4        /* allocate and zero every frame now (readable maps only) */

/* smmu_mremap flags. */
#define SMMU_MREMAP_DONTUNMAP 0x1u /* the source stays mapped, emptied (as Linux's MREMAP_DONTUNMAP) */

/* Flags for smmu_pool_config.flags. */
#define SMMU_POOL_POISON 0x1 /* fill freed frames with SMMU_POISON_BYTE (debugging, tests) */
#define SMMU_POISON_BYTE 0x6b

/* The kind of access that faulted. */
enum smmu_access_kind {
	SMMU_ACCESS_READ = 0,
	SMMU_ACCESS_WRITE = 1,
	SMMU_ACCESS_ATOMIC = 2, /* read-modify-write: needs read and write */
};

/* A fault that no mapping handled, as given to the CPU's trap handler. */
struct smmu_fault {
	smmu_addr_t addr;           /* first byte of the access */
	size_t size;                /* bytes in the access */
	enum smmu_access_kind kind; /* what the access wanted */
	int error;                  /* -EFAULT unmapped, -EACCES protection,
	                             * -ENOMEM no frame or table page,
	                             * -EINVAL misaligned atomic; 0 for a
	                             * write notification (notifier.h) */
	unsigned cpu_id;            /* smmu_cpu_id() of the faulting CPU */
};

/*
 * A CPU's trap handler.  It runs on the faulting CPU's thread, outside any
 * access critical section, so it may block, take locks and change mappings.
 * If it returns, the access is retried from the TLB lookup.  To give up it
 * must not return: abort, longjmp out, or pthread_exit (which unregisters
 * the CPU through its thread destructor).
 */
typedef void (*smmu_trap_fn)(struct smmu_cpu *cpu, const struct smmu_fault *fault, void *arg);

/*
 * A mapping's fault handler (smmu_mmap_handler).  fault->error is -EFAULT
 * when the page is not present (the mapping has no frame there yet) and
 * -EACCES when the mapping's protection forbids the access.  Returns 0 to
 * restart the access from the TLB lookup, or a negative errno to fail it.
 */
typedef int (*smmu_fault_handler_fn)(struct smmu_cpu *cpu, const struct smmu_fault *fault, void *arg);

/*
 * A TLB entry.  Layout, not API.
 *
 * Every reason to leave the fast path is folded into the tag compare: a tag
 * is the page-aligned address of the cached page, or SMMU_TLB_INVALID, which
 * no masked address can equal (its low bits are set).  write_tag is valid only
 * when the page is writable *and* its PTE is already dirty, so the first
 * write to a clean page takes the slow path and sets the dirty bit.  A hit
 * computes the host address as addr + addend.
 */
struct smmu_tlb_entry {
	uint64_t read_tag;
	uint64_t write_tag;
	uintptr_t addend;
	uint64_t pad; /* keeps entries a power of two, so the index is one shift and mask */
};
#define SMMU_TLB_ENTRY_SHIFT 5
#define SMMU_TLB_INVALID UINT64_MAX

_Static_assert(sizeof(struct smmu_tlb_entry) == (1u << SMMU_TLB_ENTRY_SHIFT), "TLB entry size");
_Static_assert(offsetof(struct smmu_tlb_entry, read_tag) == 0, "read_tag offset");
_Static_assert(offsetof(struct smmu_tlb_entry, write_tag) == 8, "write_tag offset");
_Static_assert(offsetof(struct smmu_tlb_entry, addend) == 16, "addend offset");

/*
 * The TLB maps fixed 4 KiB granules, whatever the pool's page size (a
 * larger page fills one entry per granule touched): the index and the tag
 * mask are compile-time constants, so a hit needs no shift count or page
 * mask from memory.
 */
#define SMMU_TLB_GRANULE_SHIFT 12
#define SMMU_TLB_GRANULE ((uint64_t)1 << SMMU_TLB_GRANULE_SHIFT)

/*
 * The part of a CPU that the inline fast path reads.  Layout, not API.
 * Sync: the owner thread and its shootdown signal handler only (the TLB is
 * private to the thread that registered the CPU); the handler interrupts
 * the owner, so compiler-only fences order the two.  The library embeds
 * this at the start of its private CPU state.
 */
struct smmu_cpu {
	struct smmu_tlb_entry *tlb; /* entries, (tlb_mask >> 5) + 1 of them */
	uint64_t tlb_mask;          /* (entries - 1) << SMMU_TLB_ENTRY_SHIFT */
	/* The access critical section: 0 outside, 1 inside, 3 inside with a
	 * shootdown deferred to its end (the handler adds 2).  The end of an
	 * access subtracts 1 in one instruction: not zero means a deferred
	 * shootdown to flush and acknowledge. */
	int in_access;
};

#ifdef __cplusplus
}
#endif

#endif
