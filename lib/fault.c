/* SPDX-License-Identifier: MIT */
/*
 * The access slow path: TLB miss -> lock-free page-table walk -> fill, or
 * fault -> demand-zero under the shared mapping lock -> retry, or trap.
 *
 * Never block inside an access.  Every slow path is entered inside the
 * access critical section (the inline code marked it) and the walk and
 * fill run there, so a shootdown that lands meanwhile is acknowledged only
 * after the fill is flushed.  Everything that may block or take long - the
 * mapping lock, the pool, the allocator, TLB resizing, the trap handler -
 * runs after leaving the critical section (which sends any deferred
 * acknowledgement), and the access restarts from the walk afterwards.
 * Otherwise an initiator holding the mapping lock while it waits for this
 * CPU's acknowledgement would deadlock with it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <softmmu/softmmu.h>

#include "cpu.h"
#include "dup.h"
#include "mm.h"
#include "pgtable.h"
#include "pool.h"
#include "shootdown.h"
#include "testhook.h"
#include "writenotify.h"
#include "util.h"

/* Walk result: the page is not present and a demand fault may install it. */
#define NEED_FAULT 1
/* fault_slow result: the page's mapping has a fault handler to run. */
#define RUN_HANDLER 2
/* Walk result: a write to a page armed for write notification. */
#define NEED_NOTIFY 3
/* Walk result: a write to a frame shared copy-on-write. */
#define NEED_COW 4

/* The access critical section, as the inline path marks it (access.h). */
static void cs_enter(struct smmu__cpu *c)
{
	smmu__access_enter(&c->pub);
}

static void cs_leave(struct smmu__cpu *c)
{
	smmu__access_exit(&c->pub);
}

/* Count a miss; a resize it decides happens now, before the walk fills the
 * new table, but outside the critical section (it allocates). */
static void count_miss(struct smmu__cpu *c)
{
	smmu__tlb_miss(c);
	if (unlikely(c->tlb->resize_to)) {
		cs_leave(c);
		smmu__tlb_maybe_resize(c);
		cs_enter(c);
	}
}

static const char *kind_name(enum smmu_access_kind k)
{
	switch (k) {
	case SMMU_ACCESS_READ:
		return "read";
	case SMMU_ACCESS_WRITE:
		return "write";
	case SMMU_ACCESS_ATOMIC:
		return "atomic";
	}
	return "?";
}

static const char *reason_name(int err)
{
	switch (err) {
	case -EFAULT:
		return "address not mapped";
	case -EACCES:
		return "protection forbids the access";
	case -ENOMEM:
		return "out of frames or page-table memory";
	case -EINVAL:
		return "misaligned atomic access";
	}
	return "unknown";
}

static void default_trap(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	(void)cpu;
	(void)arg;
	fprintf(stderr, "libsoftmmu: unhandled fault on CPU %u: %s of %zu byte%s at 0x%llx: %s (%d)\n", f->cpu_id,
		kind_name(f->kind), f->size, f->size == 1 ? "" : "s", (unsigned long long)f->addr,
		reason_name(f->error), f->error);
	abort();
}

static void trap(struct smmu__cpu *c, smmu_addr_t addr, size_t size, enum smmu_access_kind kind, int err)
{
	struct smmu_fault f = { .addr = addr, .size = size, .kind = kind, .error = err, .cpu_id = c->id };
	(c->trap ? c->trap : default_trap)(&c->pub, &f, c->trap_arg);
}

/* The walk found the page not present (walk == NEED_FAULT) or forbidden
 * (walk == -EACCES).  If its mapping has a fault handler: RUN_HANDLER, with
 * the region copied to *h.  Else, not present in a mapping that allows the
 * access: install a zeroed frame.  Takes the mapping lock shared; 0 means
 * "retry the walk". */
static int fault_slow(struct smmu__cpu *c, smmu_addr_t page, enum smmu_access_kind kind, int walk,
		      struct smmu__region *h)
{
	struct smmu_mm *mm = c->mm;
	int err = 0;

	smmu__mm_rdlock(mm);
	const struct smmu__region *r = smmu__regions_find(&mm->regions, page);
	if (!r) {
		err = -EFAULT;
		goto out;
	}
	if (r->handler) {
		*h = *r; /* called after the lock is dropped: the mapping may change meanwhile */
		err = RUN_HANDLER;
		goto out;
	}
	if (walk != NEED_FAULT) {
		err = walk;
		goto out;
	}
	if (r->prot == SMMU_PROT_NONE || (kind != SMMU_ACCESS_READ && !(r->prot & SMMU_PROT_WRITE))) {
		err = -EACCES;
		goto out;
	}
	_Atomic smmu_pte_t *slot;
	err = smmu__pt_lookup_alloc(mm->root, mm->page_shift, page, &slot);
	if (err)
		goto out;
	if (atomic_load_explicit(slot, memory_order_acquire))
		goto out; /* another CPU got there first */
	uint32_t frame;
	err = smmu__pool_alloc(mm->pool, &c->pcache, true, &frame);
	if (err)
		goto out;
	smmu_pte_t expected = 0, pte = smmu__pte_make(frame, smmu__pte_prot_bits(r->prot));
	/* Release: the zeroed frame is visible before its PTE. */
	if (!atomic_compare_exchange_strong_explicit(slot, &expected, pte, memory_order_release, memory_order_relaxed))
		smmu__pool_free_unused(mm->pool, &c->pcache, frame);
	else
		smmu__cpu_count(c, SMMU_STAT_faults_demand_zero, 1);
out:
	pthread_rwlock_unlock(&mm->lock);
	return err;
}

/*
 * Inside the access: walk the page table for addr and fill the TLB.  Takes
 * no lock and never blocks.  0 with *host set to the page's host address,
 * NEED_FAULT, or -EACCES / -EFAULT.
 */
static int walk_fill(struct smmu__cpu *c, smmu_addr_t addr, enum smmu_access_kind kind, char **host)
{
	struct smmu_mm *mm = c->mm;
	smmu_addr_t page = addr & ~(mm->page_size - 1);
	const bool write = kind != SMMU_ACCESS_READ;

	if (addr >= mm->va_limit)
		return -EFAULT;
	if (unlikely(!atomic_load_explicit(&c->loaded, memory_order_relaxed))) {
		/* Join the CPU set before the first walk (seq_cst store, then
		 * seq_cst walk loads): an initiator that clears a PTE we are
		 * about to read will find us. */
		atomic_store(&c->loaded, true);
	}
	for (;;) {
		_Atomic smmu_pte_t *slot = smmu__pt_lookup(mm->root, mm->page_shift, page);
		smmu_pte_t pte = slot ? atomic_load(slot) : 0;
		if (!(pte & SMMU_PTE_PRESENT))
			return (pte & SMMU_PTE_PROTNONE) ? -EACCES : NEED_FAULT;
		if (write && !(pte & SMMU_PTE_WRITE))
			return (pte & SMMU_PTE_COW) ? NEED_COW : -EACCES;
		if (write && (pte & SMMU_PTE_WRNOTIFY))
			return NEED_NOTIFY;
		/* Accessed (and dirty), and this CPU's bit: set before the fill,
		 * by the compare-and-swap that an initiator's clear orders with. */
		smmu_pte_t want = SMMU_PTE_ACCESSED | (write ? SMMU_PTE_DIRTY : 0) |
				  (smmu_pte_t)smmu__cpu_bit(c->id) << SMMU_PTE_CPUS_SHIFT;
		if ((pte & want) != want &&
		    !atomic_compare_exchange_weak_explicit(slot, &pte, pte | want, memory_order_acquire,
							   memory_order_relaxed))
			continue; /* raced: walk again */
		pte |= want;
		SMMU_HOOK(SMMU_HOOK_WALKED, c, 0);
		*host = smmu__frame_host(mm->pool, smmu__pte_frame(pte));
		smmu_addr_t granule = addr & ~(SMMU_TLB_GRANULE - 1);
		smmu__tlb_fill(c, granule, *host + (granule - page), (pte & SMMU_PTE_WRITE) && (pte & SMMU_PTE_DIRTY));
		return 0;
	}
}

/*
 * Run a mapping's fault handler (outside the critical section): offline,
 * because it may block on a thread whose shootdown or grace period would
 * otherwise wait for this CPU; online again after, which catches up.
 */
int smmu__cpu_call_handler(struct smmu__cpu *c, smmu_fault_handler_fn fn, void *arg, const struct smmu_fault *f)
{
	atomic_store(&c->online, false);
	c->mm->sd->cpu_offline(c);
	c->in_fault_handler = true; /* no smmu_cpu_switch_mm under the fault's feet */
	int r = fn(&c->pub, f, arg);
	c->in_fault_handler = false;
	if (!atomic_load(&c->online)) { /* it may have come online itself */
		atomic_store(&c->online, true);
		c->mm->sd->cpu_online(c);
	}
	return r;
}

static int run_handler(struct smmu__cpu *c, const struct smmu__region *h, smmu_addr_t addr, size_t size,
		       enum smmu_access_kind kind, int error)
{
	struct smmu_fault f = { .addr = addr, .size = size, .kind = kind, .error = error, .cpu_id = c->id };
	smmu__cpu_count(c, SMMU_STAT_faults_handled, 1);
	int r = smmu__cpu_call_handler(c, h->handler, h->handler_arg, &f);
	return r < 0 ? r : 0;
}

/*
 * Translate the page of addr for an access of size bytes from addr:
 * inside the access on entry and on return.  A demand fault or a fault
 * handler leaves the critical section for its duration; the caller must
 * then treat every host pointer it got earlier as stale, which *left tells
 * it.  0, or -EFAULT / -EACCES / -ENOMEM, or a handler's error.
 */
static int translate(struct smmu__cpu *c, smmu_addr_t addr, size_t size, enum smmu_access_kind kind, char **host,
		     bool *left)
{
	if (unlikely(!atomic_load_explicit(&c->online, memory_order_relaxed)))
		SMMU_DIE("CPU %u accessed 0x%llx while offline (call smmu_cpu_online first)", c->id,
			 (unsigned long long)addr);
	for (;;) {
		int walk = walk_fill(c, addr, kind, host);
		if (walk == NEED_COW || walk == NEED_NOTIFY) {
			/* Both take locks and may block: outside the section. */
			cs_leave(c);
			*left = true;
			int r = walk == NEED_COW ? smmu__cow_break(c->mm, addr, &c->pcache)
						 : smmu__write_notify(c->mm, c, addr, size, kind);
			cs_enter(c);
			if (r == 0)
				continue; /* walk again */
			if (walk == NEED_NOTIFY || r != -EACCES)
				return r;
			walk = -EACCES; /* a COW page in a read-only mapping: as any protection fault */
		}
		if (walk != NEED_FAULT &&
		    (walk != -EACCES || !atomic_load_explicit(&c->mm->has_handlers, memory_order_relaxed)))
			return walk;
		cs_leave(c);
		*left = true;
		struct smmu__region h = { 0 };
		int r = fault_slow(c, addr & ~(c->mm->page_size - 1), kind, walk, &h);
		if (r == RUN_HANDLER)
			r = run_handler(c, &h, addr, size, kind, walk == NEED_FAULT ? -EFAULT : -EACCES);
		cs_enter(c);
		if (r)
			return r;
	}
}

/* Host pointers for each byte range of an access that may cross a page. */
struct span {
	char *p[2];
	size_t n[2];
};

static int translate_span(struct smmu__cpu *c, smmu_addr_t addr, size_t size, enum smmu_access_kind kind,
			  struct span *s)
{
	uint64_t page_size = c->mm->page_size;
	size_t off = (size_t)(addr & (page_size - 1));

	count_miss(c);
	if (addr + size < addr)
		return -EFAULT;
	for (;;) {
		bool left = false;
		int err = translate(c, addr, size, kind, &s->p[0], &left);
		if (err)
			return err;
		s->p[0] += off;
		s->n[0] = size;
		s->n[1] = 0;
		if (off + size <= page_size)
			return 0;
		s->n[0] = page_size - off;
		s->n[1] = size - s->n[0];
		left = false;
		err = translate(c, addr + s->n[0], s->n[1], kind, &s->p[1], &left);
		if (err)
			return err;
		if (!left)
			return 0;
		/* The second page faulted: the first may have changed meanwhile. */
	}
}

static uint64_t read_span(const struct span *s, unsigned size)
{
	uint64_t v = 0;
	if (!s->n[1] && !((uintptr_t)s->p[0] & (size - 1))) {
		switch (size) { /* aligned: one relaxed atomic, as on the fast path */
		case 1:
			return __atomic_load_n((uint8_t *)s->p[0], __ATOMIC_RELAXED);
		case 2:
			return __atomic_load_n((uint16_t *)s->p[0], __ATOMIC_RELAXED);
		case 4:
			return __atomic_load_n((uint32_t *)s->p[0], __ATOMIC_RELAXED);
		case 8:
			return __atomic_load_n((uint64_t *)s->p[0], __ATOMIC_RELAXED);
		}
	}
	memcpy(&v, s->p[0], s->n[0]);
	if (s->n[1])
		memcpy((char *)&v + s->n[0], s->p[1], s->n[1]);
	return v;
}

static void write_span(const struct span *s, unsigned size, uint64_t v)
{
	if (!s->n[1] && !((uintptr_t)s->p[0] & (size - 1))) {
		switch (size) {
		case 1:
			__atomic_store_n((uint8_t *)s->p[0], (uint8_t)v, __ATOMIC_RELAXED);
			return;
		case 2:
			__atomic_store_n((uint16_t *)s->p[0], (uint16_t)v, __ATOMIC_RELAXED);
			return;
		case 4:
			__atomic_store_n((uint32_t *)s->p[0], (uint32_t)v, __ATOMIC_RELAXED);
			return;
		case 8:
			__atomic_store_n((uint64_t *)s->p[0], v, __ATOMIC_RELAXED);
			return;
		}
	}
	memcpy(s->p[0], &v, s->n[0]);
	if (s->n[1])
		memcpy(s->p[1], (char *)&v + s->n[0], s->n[1]);
}

static void check_thread(struct smmu__cpu *c)
{
#if SMMU_DEBUG
	if (c != smmu__cpu_self())
		SMMU_DIE("CPU %u used from a thread that does not own it", c->id);
#else
	(void)c;
#endif
}

SMMU_API int smmu__try_load_slow(struct smmu_cpu *cpu, smmu_addr_t addr, unsigned size, uint64_t *out)
{
	struct smmu__cpu *c = smmu__cpu_of(cpu);
	struct span s;
	check_thread(c);
	int err = translate_span(c, addr, size, SMMU_ACCESS_READ, &s);
	if (!err)
		*out = read_span(&s, size);
	cs_leave(c);
	if (err)
		smmu__cpu_count(c, SMMU_STAT_faults_trapped, 1);
	return err;
}

SMMU_API int smmu__try_store_slow(struct smmu_cpu *cpu, smmu_addr_t addr, unsigned size, uint64_t val)
{
	struct smmu__cpu *c = smmu__cpu_of(cpu);
	struct span s;
	check_thread(c);
	int err = translate_span(c, addr, size, SMMU_ACCESS_WRITE, &s);
	if (!err)
		write_span(&s, size, val);
	cs_leave(c);
	if (err)
		smmu__cpu_count(c, SMMU_STAT_faults_trapped, 1);
	return err;
}

/* The trapping forms: the trap handler runs outside the critical section;
 * if it returns, the access restarts inside a new one. */
SMMU_API uint64_t smmu__load_slow(struct smmu_cpu *cpu, smmu_addr_t addr, unsigned size)
{
	uint64_t v;
	int err;
	while ((err = smmu__try_load_slow(cpu, addr, size, &v))) {
		trap(smmu__cpu_of(cpu), addr, size, SMMU_ACCESS_READ, err);
		cs_enter(smmu__cpu_of(cpu));
	}
	return v;
}

SMMU_API void smmu__store_slow(struct smmu_cpu *cpu, smmu_addr_t addr, unsigned size, uint64_t val)
{
	int err;
	while ((err = smmu__try_store_slow(cpu, addr, size, val))) {
		trap(smmu__cpu_of(cpu), addr, size, SMMU_ACCESS_WRITE, err);
		cs_enter(smmu__cpu_of(cpu));
	}
}

SMMU_API int smmu__try_atomic_slow(struct smmu_cpu *cpu, smmu_addr_t addr, enum smmu__atomic_op op, uint64_t a,
				   uint64_t b, uint64_t *old)
{
	struct smmu__cpu *c = smmu__cpu_of(cpu);
	struct span s;
	check_thread(c);
	int err = (addr & 7) ? -EINVAL : translate_span(c, addr, 8, SMMU_ACCESS_ATOMIC, &s);
	if (!err)
		*old = smmu__atomic_apply((uint64_t *)s.p[0], op, a, b);
	cs_leave(c);
	if (err)
		smmu__cpu_count(c, SMMU_STAT_faults_trapped, 1);
	return err;
}

SMMU_API uint64_t smmu__atomic_slow(struct smmu_cpu *cpu, smmu_addr_t addr, enum smmu__atomic_op op, uint64_t a,
				    uint64_t b)
{
	uint64_t old;
	int err;
	while ((err = smmu__try_atomic_slow(cpu, addr, op, a, b, &old))) {
		trap(smmu__cpu_of(cpu), addr, 8, SMMU_ACCESS_ATOMIC, err);
		cs_enter(smmu__cpu_of(cpu));
	}
	return old;
}

/*
 * Bulk copy: check (and fault in) every page first, then copy page by
 * page.  The copy of each page runs inside the critical section; between
 * pages the CPU leaves it for a moment, so a long copy delays no
 * acknowledgement by more than one page.
 */
static int bulk(struct smmu_cpu *cpu, smmu_addr_t addr, char *host, size_t len, enum smmu_access_kind kind)
{
	int err = smmu__cpu_check_owner(cpu);
	if (err)
		return err;
	if (len == 0)
		return 0;
	if (!host || addr + len < addr)
		return -EINVAL;
	struct smmu__cpu *c = smmu__cpu_of(cpu);
	uint64_t page_size = c->mm->page_size;
	char *h;
	bool left;

	cs_enter(c);
	for (smmu_addr_t p = addr & ~(page_size - 1); p < addr + len; p += page_size) {
		count_miss(c);
		if ((err = translate(c, p, page_size, kind, &h, &left)))
			goto out;
		if (p + page_size < p)
			break;
	}
	for (size_t done = 0; done < len;) {
		smmu_addr_t a = addr + done;
		size_t off = (size_t)(a & (page_size - 1));
		size_t n = page_size - off < len - done ? page_size - off : len - done;
		if ((err = translate(c, a, n, kind, &h, &left)))
			goto out;
		if (kind == SMMU_ACCESS_READ)
			memcpy(host + done, h + off, n);
		else
			memcpy(h + off, host + done, n);
		done += n;
		cs_leave(c);
		cs_enter(c);
	}
out:
	cs_leave(c);
	return err;
}

SMMU_API int smmu_read(struct smmu_cpu *cpu, smmu_addr_t addr, void *dst, size_t len)
{
	return bulk(cpu, addr, dst, len, SMMU_ACCESS_READ);
}

SMMU_API int smmu_write(struct smmu_cpu *cpu, smmu_addr_t addr, const void *src, size_t len)
{
	return bulk(cpu, addr, (char *)src, len, SMMU_ACCESS_WRITE);
}
