/* SPDX-License-Identifier: MIT */
#ifndef SOFTMMU_SOFTMMU_H
#define SOFTMMU_SOFTMMU_H

/*
 * libsoftmmu: a software virtual address space shared by many pthreads.
 *
 * Important - the rules of use:
 *
 *  1. A frame pool (smmu_pool_create) supplies page-sized frames of host
 *     memory.  An address space (smmu_mm_create) takes its frames from one
 *     pool.  A thread becomes a CPU of an mm with smmu_cpu_register and
 *     then reads and writes the mm's memory with the access API
 *     (<softmmu/access.h>: smmu_loadN, smmu_storeN, smmu_try_*, atomics)
 *     and smmu_read / smmu_write.
 *  2. Every function returns 0 or a negative errno and sets no global; on
 *     error nothing has changed.  Functions that take a CPU must be called
 *     on the thread that registered it (else -EPERM).
 *  3. Mapping changes (smmu_mmap, smmu_munmap, smmu_mprotect) may be made
 *     by any thread, CPU or not, while the CPUs run.  They clear
 *     page-table entries under an mmu_gather, shoot down every CPU's TLB
 *     that may hold them, and only then return frames to the pool: when
 *     smmu_munmap or an smmu_mprotect that removes access returns, no CPU
 *     completes an access through the old translation.  Adding access
 *     needs no shootdown.
 *  4. By default shootdowns are delivered by a real-time signal
 *     (smmu_shootdown_signal; default SIGRTMAX - 3, see
 *     smmu_shootdown_set_signal).  Do not block it in CPU threads and do
 *     not install another handler for it.  A CPU that is online and blocked
 *     in a system call is interrupted by it: the handler runs and the call
 *     restarts (SA_RESTART), except for the calls that signal(7) lists as
 *     never restarted, which fail with EINTR.  An mm created in an RCU mode
 *     (smmu_mm_create_ex) sends no signal: its CPUs call smmu_quiescent
 *     regularly instead, and grace periods wait for them.
 *  5. A CPU that is about to block (a sleep, a lock, a system call) calls
 *     smmu_cpu_offline first and smmu_cpu_online after; offline CPUs get
 *     no signal, and coming online flushes the TLB if anything was unmapped
 *     meanwhile.  It must not access memory while offline.  Never block
 *     inside a trap handler while holding something a mapping change needs.
 *  6. Tear down in order: CPUs (smmu_cpu_unregister, or thread exit),
 *     then the mm (smmu_mm_destroy), then the pool (smmu_pool_destroy).
 *     Each destroy refuses with -EBUSY while something still uses it.
 *  7. Secondary TLBs subscribe through MMU notifiers
 *     (<softmmu/notifier.h>).  Inside a notifier callback of an mm, the
 *     mapping functions of that mm (mmap, munmap, mprotect, find, ...)
 *     fail with -EDEADLK: the change that called back holds its lock.
 */

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <softmmu/export.h>
#include <softmmu/types.h>
#include <softmmu/access.h>
#include <softmmu/stats.h>
#include <softmmu/notifier.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ pool */

struct smmu_pool_config {
	void *region;     /* host memory to cut into frames, or NULL: the library maps it */
	size_t size;      /* bytes of region (or to map); whole frames are used */
	size_t page_size; /* power of two in [4 KiB, 128 MiB]; 0 means 4096 */
	unsigned flags;   /* SMMU_POOL_* */
};

/*
 * smmu_pool_create: make a frame pool of size / page_size frames over
 * cfg->region, or over memory the library maps itself when region is NULL.
 * A caller-supplied region must be 4096-aligned, stays
 * owned by the caller and must outlive the pool; its contents are not
 * assumed zero.  Frames are zeroed before they back a new anonymous page.
 * Errors: -EINVAL (NULL argument, unknown flag, page_size not a power of two
 * or out of range, misaligned region, fewer than one or more than
 * 2^32 - 2 frames), -ENOMEM (no memory for the descriptors or the region).
 * Thread: any.  Blocks: may (allocates, maps).
 */
SMMU_API int smmu_pool_create(const struct smmu_pool_config *cfg, struct smmu_pool **out);

/*
 * smmu_pool_destroy: release the pool (and unmap its region if the library
 * mapped it).  Errors: -EINVAL (NULL or not a live pool), -EBUSY (an mm
 * still uses the pool).  Thread: any.  Blocks: may.
 */
SMMU_API int smmu_pool_destroy(struct smmu_pool *pool);

/* Frames in the pool in all; frames free now (the shared list plus the
 * CPUs' caches; a snapshot under concurrency); bytes per frame.  0 for a
 * NULL pool.  Thread: any.  Blocks: briefly (pool lock). */
SMMU_API size_t smmu_pool_frames(const struct smmu_pool *pool);
SMMU_API size_t smmu_pool_free_frames(struct smmu_pool *pool);
SMMU_API size_t smmu_pool_page_size(const struct smmu_pool *pool);

/* -------------------------------------------------------- address spaces */

/*
 * smmu_mm_create: a new, empty address space drawing frames from pool.
 * Addresses run from max(64 KiB, page size) (lower addresses are never
 * mapped, so that small integers used as addresses fault) to
 * 2^(page_shift + 36): 2^48 with 4 KiB pages.
 * Errors: -EINVAL (NULL argument or dead pool), -ENOMEM.
 * Thread: any.  Blocks: may (allocates).
 */
SMMU_API int smmu_mm_create(struct smmu_pool *pool, struct smmu_mm **out);

/* How an mm shoots down TLB entries (smmu_mm_create_ex).  Choose RCU for
 * a runtime whose CPU threads reach safepoints (call smmu_quiescent every
 * so often); signals for threads that cannot cooperate. */
enum smmu_shootdown_mode {
	/* A real-time signal to each CPU that may hold an entry; munmap and
	 * mprotect return when all have acknowledged.  The default. */
	SMMU_SHOOTDOWN_SIGNAL = 0,
	/* Every CPU is a liburcu QSBR reader and drops stale entries at its
	 * quiescent states; munmap and mprotect wait for a grace period. */
	SMMU_SHOOTDOWN_RCU = 1,
	/* As SMMU_SHOOTDOWN_RCU, but munmap and mprotect return once the
	 * entries are cleared: a CPU may still use an old translation until
	 * its next quiescent state, and frames and table pages go back to the
	 * pool from a call_rcu callback after the grace period (never
	 * earlier, so no freed frame is ever reached). */
	SMMU_SHOOTDOWN_RCU_DEFERRED = 2,
};

/* smmu_mm_config.flags */
#define SMMU_MM_APP_URCU 0x1 /* RCU modes: the application registers its CPU
                              * threads with urcu-qsbr itself (and keeps them
                              * registered while they are CPUs) */

/*
 * A CPU of an RCU-mode mm stalls when it stays online without a quiescent
 * state while something waits for a grace period.  The stall callback is
 * called once per stall (again only after the CPU has passed a quiescent
 * state), from a watchdog thread of the mm, with the CPU's id and how long
 * it has been stalled; it must not call back into the library for this mm.
 * The default prints a message naming the CPU to stderr.
 */
typedef void (*smmu_stall_fn)(struct smmu_mm *mm, unsigned cpu_id, uint64_t stalled_ns, void *arg);

struct smmu_mm_config {
	enum smmu_shootdown_mode mode;
	unsigned flags;          /* SMMU_MM_* */
	size_t deferred_max;     /* RCU deferred: frames that may wait for a grace
	                          * period; past it the unmapper waits for one
	                          * instead.  0 means a quarter of the pool. */
	uint64_t stall_ns;       /* RCU modes: report a stall longer than this;
	                          * 0 means 1 s */
	smmu_stall_fn stall;     /* NULL: the default report */
	void *stall_arg;
};

/*
 * smmu_mm_create_ex: smmu_mm_create with a configuration (NULL means the
 * defaults: signals).  In the RCU modes, a CPU that is online must call
 * smmu_quiescent from time to time, outside any access, and
 * smmu_cpu_offline before it blocks: grace periods (and so munmap and
 * mprotect in RCU mode) wait for every online CPU.  The library uses
 * liburcu's urcu_qsbr_* API only; an application that uses another liburcu
 * flavor is unaffected, and one that registers its own threads with
 * urcu-qsbr sets SMMU_MM_APP_URCU.
 * Errors: -EINVAL (NULL pool/out, dead pool, unknown mode or flag),
 * -ENOMEM.  Thread: any.  Blocks: may.
 */
SMMU_API int smmu_mm_create_ex(struct smmu_pool *pool, const struct smmu_mm_config *cfg, struct smmu_mm **out);

/*
 * smmu_mm_destroy: tear the address space down in whole-mm mode (one pass
 * over the page table, no per-range flush), return every frame to the pool
 * and free the page-table pages.
 * Errors: -EINVAL (NULL or not a live mm), -EBUSY (CPUs still registered,
 * or still leaving: a CPU that is unregistering or switching away counts
 * until it no longer touches the mm).
 * Thread: any.  Blocks: may.
 */
SMMU_API int smmu_mm_destroy(struct smmu_mm *mm);

/*
 * smmu_mm_dup: a copy-on-write duplicate of parent in *child, as fork
 * duplicates a process: the same mappings (protections, fault handlers,
 * the write-notify handler), sharing every frame.  The parent loses write
 * access to its private pages for the call (its CPUs' writable TLB entries
 * are shot down before it returns); afterwards the first write to a shared
 * page in either mm copies it into a frame of its own - or, when the other
 * side has let go of it (unmapped it, or copied away), makes it writable
 * in place.  The child has the parent's pool and shootdown configuration
 * and no CPUs; its pages start clean, not accessed and not armed for write
 * notification (the parent's stay armed).  A write that races
 * with the call lands in both or only in the parent, never only in the
 * child.  Shared frames count once in the pool however many mms map them.
 * Errors: -EINVAL (NULL or dead parent, NULL child), -EDEADLK (from a
 * notifier callback of parent), -ENOMEM (nothing changed in the parent).
 * Thread: any.  Blocks: may (mm lock, allocation, a shootdown).
 */
SMMU_API int smmu_mm_dup(struct smmu_mm *parent, struct smmu_mm **child);

/*
 * smmu_mmap: map len bytes (rounded up to whole pages) of anonymous,
 * demand-zero memory with protection prot (SMMU_PROT_NONE, SMMU_PROT_READ or
 * SMMU_PROT_READ | SMMU_PROT_WRITE) and store the start in *out.
 *
 * Placement and overlap rules:
 *  - flags without FIXED: addr is a hint.  If [addr, addr+len) is free and
 *    page-aligned it is used; otherwise the lowest free range at or above
 *    the hint (or above 64 KiB if there is none) is chosen.  Never
 *    overlaps an existing mapping.
 *  - SMMU_MAP_FIXED: exactly at addr (page-aligned); whatever was mapped in
 *    the range is unmapped first, in the same operation.
 *  - SMMU_MAP_FIXED_NOREPLACE: exactly at addr; -EEXIST if any page of the
 *    range is mapped.
 *  - SMMU_MAP_POPULATE: allocate and zero every frame before returning
 *    (ignored for SMMU_PROT_NONE); -ENOMEM if the pool runs out, with
 *    nothing changed (with FIXED, the old mapping stays).
 * Adjacent mappings with the same protection and flags are merged.
 * Errors: -EINVAL (NULL mm/out, len 0, unknown prot or flag, both FIXED
 * flags, misaligned FIXED addr, range wraps or leaves the address space),
 * -EEXIST (FIXED_NOREPLACE over a mapping), -ENOMEM (no free range, no
 * memory for the region set, or the pool ran out under POPULATE).
 * Thread: any.  Blocks: may (mm lock, allocation).
 */
SMMU_API int smmu_mmap(struct smmu_mm *mm, smmu_addr_t addr, size_t len, int prot, int flags, smmu_addr_t *out);

/*
 * smmu_mmap_handler: smmu_mmap with a fault handler for the new mapping
 * (NULL: none, as smmu_mmap).  A fault in the mapping - a page not present
 * (fault->error -EFAULT) or an access its protection forbids (-EACCES) -
 * calls handler(cpu, fault, handler_arg) on the faulting CPU's thread,
 * instead of demand-zeroing the page or failing the access:
 *  - outside any access critical section and with no library lock held,
 *    and with the CPU offline: it may block (on a collector thread that
 *    is unmapping, say), take locks and change mappings - install a frame
 *    (smmu_mm_translate for write faults one in; write its contents through
 *    the pointer), populate a range, or smmu_mprotect.  To access memory
 *    through the CPU it calls smmu_cpu_online first, and goes offline again
 *    before it blocks; the CPU is put back online after it returns;
 *  - it returns 0 to restart the access from the TLB lookup (a page still
 *    not present faults again), or a negative errno to fail the access
 *    with it: the smmu_try_* forms return it, the others call the CPU's
 *    trap handler with it.
 * The handler stays with its pages through mprotect and partial munmap;
 * mappings merge only with the same handler and argument.
 * smmu_mm_translate ignores handlers (it demand-zeroes).
 * Errors: those of smmu_mmap.  Thread: any.  Blocks: may.
 */
SMMU_API int smmu_mmap_handler(struct smmu_mm *mm, smmu_addr_t addr, size_t len, int prot, int flags,
			       smmu_fault_handler_fn handler, void *handler_arg, smmu_addr_t *out);

/*
 * smmu_munmap: remove the mappings in [addr, addr+len) (len rounded up to
 * whole pages).  Unmapping a range with nothing mapped is not an error.  A
 * mapping that straddles an end is split.  Page-table pages left empty are
 * freed, after the flush like the frames.
 * Errors: -EINVAL (NULL mm, misaligned addr, len 0, range wraps or leaves
 * the address space), -ENOMEM (a split needs a region slot and none could
 * be allocated; nothing was unmapped).
 * Thread: any.  Blocks: may.
 */
SMMU_API int smmu_munmap(struct smmu_mm *mm, smmu_addr_t addr, size_t len);

/*
 * smmu_mprotect: change the protection of [addr, addr+len) to prot.  Every
 * page of the range must be mapped.  Reducing access clears the affected
 * page-table entries' permissions and flushes; adding access needs no flush
 * (the next access misses and refills).
 * Errors: -EINVAL (NULL mm, misaligned addr, len 0, unknown prot, wrap),
 * -ENOMEM (part of the range is not mapped, or a split needs memory that
 * could not be allocated).  Thread: any.  Blocks: may.
 */
SMMU_API int smmu_mprotect(struct smmu_mm *mm, smmu_addr_t addr, size_t len, int prot);

/* One move of smmu_mremap_batch. */
struct smmu_remap {
	smmu_addr_t from, to; /* page-aligned */
	size_t len;           /* rounded up to whole pages */
};

/*
 * smmu_mremap_batch: move the translations of n ranges to other addresses
 * without copying frames - the frames, their contents and accessed/dirty
 * state, the mappings' protection and fault handlers go along - under one
 * mmu_gather and one shootdown, all or nothing.  Every page of each source
 * must be mapped and every page of each destination free; no two of the
 * 2n ranges may overlap.  When it returns no CPU completes an access
 * through a source address (in RCU deferred mode: after each CPU's next
 * quiescent state); a CPU that wrote through one until then wrote to the
 * frame the destination maps.  Subscribers see an SMMU_NOTIFY_REMAP change
 * of each source range.  n == 0 does nothing.
 * Errors: -EINVAL (NULL mm, moves NULL with n > 0, a misaligned, empty,
 * wrapping or out-of-space range, a destination below the lowest mappable
 * address, overlapping ranges), -EFAULT (a source page not mapped),
 * -EEXIST (a destination page mapped), -ENOMEM (memory for the bookkeeping,
 * a region slot or the destination's page tables), -EDEADLK (inside a
 * notifier callback of mm); nothing moved.
 * Thread: any.  Blocks: may (mm lock, shootdown).
 */
SMMU_API int smmu_mremap_batch(struct smmu_mm *mm, const struct smmu_remap *moves, size_t n);

/* What smmu_mremap_batch_leave maps at each source. */
struct smmu_remap_leave {
	int prot;                      /* SMMU_PROT_NONE, SMMU_PROT_READ or both READ and WRITE */
	smmu_fault_handler_fn handler; /* NULL: demand-zero memory */
	void *handler_arg;
};

/*
 * smmu_mremap_batch_leave: smmu_mremap_batch, and in the same step each
 * source range is mapped anew as smmu_mmap_handler(leave->prot,
 * leave->handler, leave->handler_arg) with SMMU_MAP_FIXED would map it,
 * with no frame: no access ever finds a source unmapped.  An access to a
 * source after the move faults into the new mapping: its handler runs (a
 * collector's forwarding stub: with SMMU_PROT_NONE every access reaches
 * it), or the page demand-zeroes.  A CPU that still held a source entry
 * until the shootdown (or, in RCU deferred mode, until its next quiescent
 * state) reached the moved frame with it, as in smmu_mremap_batch.
 * Errors: those of smmu_mremap_batch; -EINVAL also for a NULL leave or an
 * unknown prot; nothing moved, nothing mapped.
 * Thread: any.  Blocks: may (mm lock, shootdown).
 */
SMMU_API int smmu_mremap_batch_leave(struct smmu_mm *mm, const struct smmu_remap *moves, size_t n,
				     const struct smmu_remap_leave *leave);

/*
 * smmu_mremap: one move, as smmu_mremap_batch.  flags: 0, or
 * SMMU_MREMAP_DONTUNMAP: the source's mappings stay as they were
 * (protection, fault handler), emptied of their frames, as Linux's
 * MREMAP_DONTUNMAP leaves them: the next access to a source page
 * demand-zeroes it or calls its handler.
 * Errors: those of smmu_mremap_batch; -EINVAL for unknown flags.
 */
SMMU_API int smmu_mremap(struct smmu_mm *mm, smmu_addr_t from, size_t len, smmu_addr_t to, unsigned flags);

/* A mapping, as reported by smmu_mm_find. */
struct smmu_region {
	smmu_addr_t start, end; /* [start, end), page-aligned */
	int prot;               /* SMMU_PROT_* */
	int flags;              /* reserved, 0 */
};

/*
 * smmu_mm_find: the mapping that contains addr, or else the lowest one
 * above it.  Errors: -EINVAL (NULL argument), -ENOENT (none).
 * Thread: any.  Blocks: briefly (mm lock, shared).
 */
SMMU_API int smmu_mm_find(struct smmu_mm *mm, smmu_addr_t addr, struct smmu_region *out);

/* Bytes per page of mm (its pool's frame size), 0 for NULL.  Thread: any. */
SMMU_API size_t smmu_mm_page_size(const struct smmu_mm *mm);

/* ----------------------------------------------------------------- CPUs */

/*
 * TLB sizing.  The TLB starts at tlb_entries and adapts between that and
 * tlb_max_entries: a CPU whose misses between two full flushes exceed twice
 * its entries doubles it (on its next miss); one that used fewer than an
 * eighth of its entries between two full flushes halves it.  Each entry is
 * 32 bytes: 1024 entries (the default start) is 32 KiB and covers 4 MiB;
 * the default maximum, 2^18 entries, is 8 MiB and covers 1 GiB.  Set both
 * to the same value for a fixed size.  A TLB of 16384 entries (512 KiB) or
 * more keeps a second table of its size, allocated at its first full flush
 * that is not cheap: a full flush on the CPU's own thread then swaps in
 * that clean table instead of clearing megabytes, and the next misses
 * clear the old one, 64 entries each (a full flush that comes first
 * finishes the clearing itself).  So memory is twice the figures above
 * for such TLBs.
 */
struct smmu_cpu_config {
	size_t tlb_entries;     /* power of two in [16, 2^22]; 0 means 1024 */
	size_t tlb_max_entries; /* power of two in [tlb_entries, 2^22]; 0 means max(tlb_entries, 2^18) */
	/* Address spaces whose TLB contents the CPU keeps across
	 * smmu_cpu_switch_mm, in [1, SMMU_ASIDS_MAX]; 0 means SMMU_ASIDS_DEFAULT.
	 * Each one in use has a TLB of its own (allocated on first use, sized
	 * as above); 1 flushes the TLB on every switch. */
	unsigned asids;
};
#define SMMU_ASIDS_DEFAULT 8u
#define SMMU_ASIDS_MAX 64u

/*
 * smmu_cpu_register: make the calling thread a CPU of mm with a private,
 * empty TLB, and store its handle in *out.  A thread is a CPU of at most
 * one mm at a time.  If the thread exits while registered, it is
 * unregistered by a thread-specific destructor.  smmu_cpu_register_ex takes
 * a config (NULL means defaults).
 * Errors: -EINVAL (NULL mm/out, dead mm, bad TLB sizes), -EBUSY (the
 * thread is already a CPU), -ENOMEM.  Thread: the thread to register.
 * Blocks: may (allocates).
 */
SMMU_API int smmu_cpu_register(struct smmu_mm *mm, struct smmu_cpu **out);
SMMU_API int smmu_cpu_register_ex(struct smmu_mm *mm, const struct smmu_cpu_config *cfg, struct smmu_cpu **out);

/*
 * smmu_cpu_unregister: the calling thread stops being a CPU; its TLB and
 * frame cache are released and its counters are kept in the mm's totals.
 * Errors: -EINVAL (NULL), -EPERM (cpu is not the calling thread's CPU).
 * Thread: cpu's owner.  Blocks: briefly.
 */
SMMU_API int smmu_cpu_unregister(struct smmu_cpu *cpu);

/*
 * smmu_cpu_offline / smmu_cpu_online: bracket a stretch where the CPU makes
 * no access (before blocking in a system call, a sleep, a lock).  Coming
 * online flushes the TLB if the mm flushed meanwhile.  Offline twice or
 * online twice is harmless.
 * Errors: -EINVAL (NULL), -EPERM (not the calling thread's CPU).
 * Thread: cpu's owner.  Blocks: never.
 */
SMMU_API int smmu_cpu_offline(struct smmu_cpu *cpu);
SMMU_API int smmu_cpu_online(struct smmu_cpu *cpu);

/*
 * smmu_quiescent: a quiescent state of an RCU-mode mm - the CPU holds no
 * translation it relies on across this call.  It announces the state to
 * the grace-period machinery and then drops the TLB entries that flushes
 * since its last quiescent state removed.  Call it between accesses,
 * regularly (a safepoint, every thousand accesses...).  In signal mode it
 * does nothing.
 * Errors: -EINVAL (NULL, or the CPU is offline), -EPERM (not the calling
 * thread's CPU).  Thread: cpu's owner.  Blocks: never.
 */
SMMU_API int smmu_quiescent(struct smmu_cpu *cpu);

/* The calling thread's CPU, or NULL.  Thread: any.  Blocks: never. */
SMMU_API struct smmu_cpu *smmu_cpu_self(void);

/* A small number naming the CPU within its mm, for messages.  Thread: any. */
SMMU_API unsigned smmu_cpu_id(const struct smmu_cpu *cpu);

/* The mm the CPU runs in now (registered with, or last switched to).
 * Thread: any. */
SMMU_API struct smmu_mm *smmu_cpu_mm(const struct smmu_cpu *cpu);

/*
 * smmu_cpu_switch_mm: the calling CPU leaves its mm and runs in mm from
 * now on, as a process switch does on a real CPU.  The TLB is not flushed:
 * each address space the CPU ran in recently keeps its own TLB, tagged with
 * a per-CPU address-space id (cpu config `asids` of them, the least
 * recently used recycled), and coming back to an mm finds its entries
 * valid, minus whatever that mm flushed meanwhile (replayed from the mm's
 * flush log, or a full flush when it flushed too much).  From the switch
 * on, the old mm's shootdowns neither signal nor wait for this CPU (lazy
 * TLB) - in signal mode; in the RCU modes grace periods are process-wide,
 * so the old mm's strict-mode unmaps still wait for this CPU's next
 * quiescent state, as for any online reader (unless the old mm has no CPU
 * left).  The CPU keeps its online state; smmu_cpu_id is its id within
 * the new mm.  Switching to the current mm does nothing.
 * Both mms must use the same shootdown mode (and the same
 * SMMU_MM_APP_URCU flag); they may draw from different pools.
 * Errors: -EINVAL (NULL or dead cpu or mm, different shootdown modes,
 * called inside a fault handler or notifier callback of the CPU's access),
 * -EPERM (not the calling thread's CPU), -ENOMEM (no memory for the new
 * address space's TLB: the CPU stays in its old mm, unchanged).
 * Thread: cpu's owner, outside any access.  Blocks: briefly (the two mms'
 * CPU-list locks; allocates the first time it uses an address-space id).
 */
SMMU_API int smmu_cpu_switch_mm(struct smmu_cpu *cpu, struct smmu_mm *mm);

/*
 * smmu_thread_create: start a pthread (attributes attr, NULL for the
 * defaults) that is registered as a CPU of mm (cfg, NULL for the defaults)
 * before fn(arg) runs, and unregistered when fn returns or the thread
 * calls pthread_exit; fn finds its CPU with smmu_cpu_self().  Returns
 * after the registration succeeded or failed; on failure no thread is left
 * running.  smmu_thread_join waits for it (pthread_join) and stores fn's
 * result in *ret (if ret is not NULL).
 * Errors: -EINVAL (NULL t/fn, dead mm, bad cfg), -ENOMEM, -EAGAIN (no
 * thread could be created), and any error of smmu_cpu_register_ex;
 * smmu_thread_join: -ESRCH, -EDEADLK, -EINVAL as pthread_join.
 * Thread: any.  Blocks: create until the new thread is registered (a
 * calling CPU goes offline meanwhile in RCU modes); join until the thread
 * ends.
 */
SMMU_API int smmu_thread_create(pthread_t *t, const pthread_attr_t *attr, struct smmu_mm *mm,
				void *(*fn)(void *), void *arg);
SMMU_API int smmu_thread_create_ex(pthread_t *t, const pthread_attr_t *attr, struct smmu_mm *mm,
				   const struct smmu_cpu_config *cfg, void *(*fn)(void *), void *arg);
SMMU_API int smmu_thread_join(pthread_t t, void **ret);

/*
 * smmu_cpu_set_trap_handler: fn receives the faults of trapping accesses
 * that no mapping handles (see smmu_trap_fn).  NULL restores the default,
 * which prints the address, access kind, reason and CPU to stderr and
 * aborts.  Errors: -EINVAL (NULL cpu), -EPERM (not the calling thread's).
 * Thread: cpu's owner.  Blocks: never.
 */
SMMU_API int smmu_cpu_set_trap_handler(struct smmu_cpu *cpu, smmu_trap_fn fn, void *arg);

/*
 * smmu_tlb_flush_all / smmu_tlb_flush_range: drop every entry of the
 * calling CPU's TLB, or those for pages in [addr, addr+len).
 * Errors: -EINVAL (NULL cpu, len 0 or wrapping range), -EPERM (not the
 * calling thread's CPU).  Thread: cpu's owner.  Blocks: never.
 */
SMMU_API int smmu_tlb_flush_all(struct smmu_cpu *cpu);
SMMU_API int smmu_tlb_flush_range(struct smmu_cpu *cpu, smmu_addr_t addr, size_t len);

/* ------------------------------------------------------------- shootdown */

/*
 * smmu_shootdown_set_signal: use real-time signal signo for shootdowns.
 * Call before the first CPU registers, or while none is registered (the
 * handler installed for the old signal is then removed and the previous
 * disposition restored).  Errors: -EINVAL (not in [SIGRTMIN, SIGRTMAX]),
 * -EBUSY (CPUs are registered and use another signal).
 * Thread: any.  Blocks: briefly.
 */
SMMU_API int smmu_shootdown_set_signal(int signo);

/* The signal shootdowns use now (or will use).  Thread: any. */
SMMU_API int smmu_shootdown_signal(void);

/* --------------------------------------------------------- bulk access */

/*
 * smmu_read / smmu_write: copy len bytes between emulated memory at addr
 * and host memory, across page boundaries.  Every page is checked (and
 * demand-faulted) before any byte is copied, so on error nothing was
 * copied - unless a concurrent mapping change removed a page between the
 * check and the copy, when a prefix may have been.  These do not trap.
 * Errors: -EINVAL (NULL cpu, NULL buffer with len > 0, range wraps),
 * -EPERM (not the calling thread's CPU), -EFAULT (a page is unmapped),
 * -EACCES (a page forbids the access), -ENOMEM (demand-zero ran out).
 * len 0 succeeds.  Thread: cpu's owner.  Blocks: may (faults).
 */
SMMU_API int smmu_read(struct smmu_cpu *cpu, smmu_addr_t addr, void *dst, size_t len);
SMMU_API int smmu_write(struct smmu_cpu *cpu, smmu_addr_t addr, const void *src, size_t len);

#ifdef __cplusplus
}
#endif

#endif
