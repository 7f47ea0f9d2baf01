/* SPDX-License-Identifier: MIT */
/*
 * The access slow path: TLB miss -> lock-free page-table walk -> fill, or
 * fault -> demand-zero under the shared mapping lock -> retry, or trap.
 *
 * Never block inside an access: everything here that may block (the
 * mapping lock, the pool, the allocator, the trap handler) runs between
 * accesses - the slow path restarts the access from the TLB lookup after
 * it.  (The signal shootdown makes that boundary explicit.)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <softmmu/softmmu.h>

#include "cpu.h"
#include "mm.h"
#include "pgtable.h"
#include "pool.h"
#include "util.h"

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

/* Not present, in a mapping that allows the access: install a zeroed frame.
 * Takes the mapping lock shared; 0 means "retry the walk". */
static int demand_fault(struct smmu__cpu *c, smmu_addr_t page, enum smmu_access_kind kind)
{
	struct smmu_mm *mm = c->mm;
	int err = 0;

	pthread_rwlock_rdlock(&mm->lock);
	const struct smmu__region *r = smmu__regions_find(&mm->regions, page);
	if (!r) {
		err = -EFAULT;
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
 * Translate the page of addr for an access of `kind`: fill the TLB and
 * return the host address of the page.  0 or -EFAULT / -EACCES / -ENOMEM.
 */
static int translate(struct smmu__cpu *c, smmu_addr_t addr, enum smmu_access_kind kind, char **host)
{
	struct smmu_mm *mm = c->mm;
	smmu_addr_t page = addr & ~(mm->page_size - 1);
	const bool write = kind != SMMU_ACCESS_READ;

	if (unlikely(!c->online))
		SMMU_DIE("CPU %u accessed 0x%llx while offline (call smmu_cpu_online first)", c->id,
			 (unsigned long long)addr);
	if (addr >= mm->va_limit)
		return -EFAULT;
	for (;;) {
		_Atomic smmu_pte_t *slot = smmu__pt_lookup(mm->root, mm->page_shift, page);
		smmu_pte_t pte = slot ? atomic_load_explicit(slot, memory_order_acquire) : 0;
		if (!(pte & SMMU_PTE_PRESENT)) {
			if (pte & SMMU_PTE_PROTNONE)
				return -EACCES;
			int err = demand_fault(c, page, kind);
			if (err)
				return err;
			continue;
		}
		if (write && !(pte & SMMU_PTE_WRITE))
			return -EACCES;
		smmu_pte_t want = SMMU_PTE_ACCESSED | (write ? SMMU_PTE_DIRTY : 0);
		if ((pte & want) != want &&
		    !atomic_compare_exchange_weak_explicit(slot, &pte, pte | want, memory_order_acquire,
							   memory_order_relaxed))
			continue; /* raced: walk again */
		pte |= want;
		*host = smmu__frame_host(mm->pool, smmu__pte_frame(pte));
		smmu_addr_t granule = addr & ~(SMMU_TLB_GRANULE - 1);
		smmu__tlb_fill(c, granule, *host + (granule - page), (pte & SMMU_PTE_WRITE) && (pte & SMMU_PTE_DIRTY));
		return 0;
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
	char *h;

	smmu__tlb_miss(c);
	if (addr + size < addr)
		return -EFAULT;
	int err = translate(c, addr, kind, &h);
	if (err)
		return err;
	s->p[0] = h + off;
	s->n[0] = size;
	s->n[1] = 0;
	if (off + size > page_size) {
		s->n[0] = page_size - off;
		s->n[1] = size - s->n[0];
		err = translate(c, addr + s->n[0], kind, &s->p[1]);
	}
	return err;
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
	if (err) {
		smmu__cpu_count(c, SMMU_STAT_faults_trapped, 1);
		return err;
	}
	*out = read_span(&s, size);
	return 0;
}

SMMU_API int smmu__try_store_slow(struct smmu_cpu *cpu, smmu_addr_t addr, unsigned size, uint64_t val)
{
	struct smmu__cpu *c = smmu__cpu_of(cpu);
	struct span s;
	check_thread(c);
	int err = translate_span(c, addr, size, SMMU_ACCESS_WRITE, &s);
	if (err) {
		smmu__cpu_count(c, SMMU_STAT_faults_trapped, 1);
		return err;
	}
	write_span(&s, size, val);
	return 0;
}

SMMU_API uint64_t smmu__load_slow(struct smmu_cpu *cpu, smmu_addr_t addr, unsigned size)
{
	uint64_t v;
	int err;
	while ((err = smmu__try_load_slow(cpu, addr, size, &v)))
		trap(smmu__cpu_of(cpu), addr, size, SMMU_ACCESS_READ, err);
	return v;
}

SMMU_API void smmu__store_slow(struct smmu_cpu *cpu, smmu_addr_t addr, unsigned size, uint64_t val)
{
	int err;
	while ((err = smmu__try_store_slow(cpu, addr, size, val)))
		trap(smmu__cpu_of(cpu), addr, size, SMMU_ACCESS_WRITE, err);
}

SMMU_API uint64_t smmu__atomic_slow(struct smmu_cpu *cpu, smmu_addr_t addr, enum smmu__atomic_op op, uint64_t a,
				    uint64_t b)
{
	struct smmu__cpu *c = smmu__cpu_of(cpu);
	check_thread(c);
	for (;;) {
		struct span s;
		int err = (addr & 7) ? -EINVAL : translate_span(c, addr, 8, SMMU_ACCESS_ATOMIC, &s);
		if (err) {
			smmu__cpu_count(c, SMMU_STAT_faults_trapped, 1);
			trap(c, addr, 8, SMMU_ACCESS_ATOMIC, err);
			continue;
		}
		uint64_t *p = (uint64_t *)s.p[0];
		switch (op) {
		case SMMU__CMPXCHG:
			__atomic_compare_exchange_n(p, &a, b, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
			return a;
		case SMMU__FETCH_ADD:
			return __atomic_fetch_add(p, a, __ATOMIC_SEQ_CST);
		case SMMU__XCHG:
			return __atomic_exchange_n(p, a, __ATOMIC_SEQ_CST);
		}
		SMMU_DIE("unknown atomic op %d", (int)op);
	}
}

/* Bulk copy: check (and fault in) every page first, then copy. */
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

	for (smmu_addr_t p = addr & ~(page_size - 1); p < addr + len; p += page_size) {
		smmu__tlb_miss(c);
		if ((err = translate(c, p, kind, &h)))
			return err;
		if (p + page_size < p)
			break;
	}
	for (size_t done = 0; done < len;) {
		smmu_addr_t a = addr + done;
		size_t off = (size_t)(a & (page_size - 1));
		size_t n = page_size - off < len - done ? page_size - off : len - done;
		const struct smmu_tlb_entry *e = smmu__tlb_entry(cpu, a);
		uint64_t tag = kind == SMMU_ACCESS_READ ? e->read_tag : e->write_tag;
		if (tag == (a & ~(SMMU_TLB_GRANULE - 1))) {
			h = (char *)(uintptr_t)(a + e->addend);
		} else {
			if ((err = translate(c, a, kind, &h)))
				return err;
			h += off;
		}
		if (kind == SMMU_ACCESS_READ)
			memcpy(host + done, h, n);
		else
			memcpy(h, host + done, n);
		done += n;
	}
	return 0;
}

SMMU_API int smmu_read(struct smmu_cpu *cpu, smmu_addr_t addr, void *dst, size_t len)
{
	return bulk(cpu, addr, dst, len, SMMU_ACCESS_READ);
}

SMMU_API int smmu_write(struct smmu_cpu *cpu, smmu_addr_t addr, const void *src, size_t len)
{
	return bulk(cpu, addr, (char *)src, len, SMMU_ACCESS_WRITE);
}
