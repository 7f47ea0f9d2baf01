/* SPDX-License-Identifier: MIT */
/*
 * CPUs: registration, the thread-local self pointer and its exit
 * destructor, online/offline, trap handler and local TLB flush API.
 * Invariants in cpu.h; lock order in mm.h.
 */
#include "cpu.h"

#include <errno.h>
#include <stdatomic.h>

#include "alloc.h"
#include "asid.h"
#include "mm.h"
#include "shootdown.h"
#include "util.h"

/* Initial-exec: the shootdown signal handler reads it, and must not go
 * through __tls_get_addr. */
static __thread struct smmu__cpu *self __attribute__((tls_model("initial-exec")));
static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;
static int exit_key_err;

static void unregister_locked_out(struct smmu__cpu *c);

/* A thread that exits while registered is unregistered here. */
static void on_thread_exit(void *arg)
{
	struct smmu__cpu *c = arg;
	if (c && c->magic == SMMU_CPU_MAGIC)
		unregister_locked_out(c);
}

static void make_exit_key(void)
{
	exit_key_err = pthread_key_create(&exit_key, on_thread_exit);
}

struct smmu__cpu *smmu__cpu_self(void)
{
	return self;
}

SMMU_API struct smmu_cpu *smmu_cpu_self(void)
{
	return self ? &self->pub : NULL;
}

int smmu__cpu_check_owner(const struct smmu_cpu *pub)
{
	const struct smmu__cpu *c = (const struct smmu__cpu *)pub;
	if (!c || c->magic != SMMU_CPU_MAGIC)
		return -EINVAL;
	if (c != self)
		return -EPERM;
	return 0;
}

SMMU_API int smmu_cpu_register(struct smmu_mm *mm, struct smmu_cpu **out)
{
	return smmu_cpu_register_ex(mm, NULL, out);
}

SMMU_API int smmu_cpu_register_ex(struct smmu_mm *mm, const struct smmu_cpu_config *cfg, struct smmu_cpu **out)
{
	if (!smmu__mm_check_live(mm) || !out)
		return -EINVAL;
	size_t entries = cfg && cfg->tlb_entries ? cfg->tlb_entries : SMMU_TLB_DEFAULT_ENTRIES;
	size_t max_entries = cfg && cfg->tlb_max_entries ? cfg->tlb_max_entries
							 : (entries > SMMU_TLB_DEFAULT_MAX_ENTRIES ? entries
												   : SMMU_TLB_DEFAULT_MAX_ENTRIES);
	if (!smmu__is_pow2(entries) || entries < SMMU_TLB_MIN_ENTRIES || entries > SMMU_TLB_MAX_ENTRIES)
		return -EINVAL;
	if (!smmu__is_pow2(max_entries) || max_entries < entries || max_entries > SMMU_TLB_MAX_ENTRIES)
		return -EINVAL;
	unsigned nasids = cfg && cfg->asids ? cfg->asids : SMMU_ASIDS_DEFAULT;
	if (nasids > SMMU_ASIDS_MAX)
		return -EINVAL;
	if (self)
		return -EBUSY;
	pthread_once(&exit_key_once, make_exit_key);
	if (exit_key_err)
		return -ENOMEM;

	struct smmu__cpu *c = smmu__zalloc_aligned(64, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->mm = mm;
	c->owner = pthread_self();
	int err = smmu__asids_init(c, nasids);
	if (!err && (err = smmu__tlb_init(c, entries, max_entries)))
		smmu__asids_fini(c);
	if (err) {
		smmu__free(c, sizeof(*c));
		return err;
	}
	atomic_store(&c->online, true);
	err = mm->sd->cpu_attach(c);
	if (!err && pthread_setspecific(exit_key, c)) {
		mm->sd->cpu_detach(c);
		err = -ENOMEM;
	}
	if (err) {
		smmu__tlb_fini(c);
		smmu__asids_fini(c);
		smmu__free(c, sizeof(*c));
		return err;
	}
	smmu__pcache_attach(mm->pool, &c->pcache);

	pthread_mutex_lock(&mm->cpus_lock);
	c->id = mm->next_cpu_id++;
	smmu__cpu_link(mm, c);
	mm->nr_cpus++;
	pthread_mutex_unlock(&mm->cpus_lock);
	c->seen_gen = atomic_load(&mm->flush_gen);

	c->magic = SMMU_CPU_MAGIC;
	atomic_signal_fence(memory_order_seq_cst); /* the handler checks magic */
	self = c;
	*out = &c->pub;
	return 0;
}

void smmu__cpu_link(struct smmu_mm *mm, struct smmu__cpu *c)
{
	c->prev = NULL;
	c->next = mm->cpus;
	if (mm->cpus)
		mm->cpus->prev = c;
	mm->cpus = c;
	mm->bit_cpus[c->id % SMMU_PTE_CPUS_BITS]++;
}

void smmu__cpu_unlink(struct smmu_mm *mm, struct smmu__cpu *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		mm->cpus = c->next;
	if (c->next)
		c->next->prev = c->prev;
	mm->bit_cpus[c->id % SMMU_PTE_CPUS_BITS]--;
}

/* Unregister c; runs on c's thread (API call or exit destructor). */
static void unregister_locked_out(struct smmu__cpu *c)
{
	struct smmu_mm *mm = c->mm;

	pthread_mutex_lock(&mm->cpus_lock);
	/* Off the list, its counts must already be in the mm's totals, or a
	 * smmu_stats_get meanwhile would miss them. */
	smmu__counters_settle(&mm->counters, &c->counters, &c->counters_base);
	smmu__cpu_unlink(mm, c);
	pthread_mutex_unlock(&mm->cpus_lock);

	/* Initiators that targeted us before we left the list may still wait
	 * for our acknowledgement: the handler answers until this returns. */
	mm->sd->cpu_detach(c);
	self = NULL;
	atomic_signal_fence(memory_order_seq_cst);
	smmu__pcache_detach(&c->pcache);
	/* Only now may smmu_mm_destroy (and then the pool's) succeed: until
	 * here we used the mm and its pool. */
	pthread_mutex_lock(&mm->cpus_lock);
	smmu__counters_settle(&mm->counters, &c->counters, &c->counters_base); /* signals taken since */
	mm->nr_cpus--;
	pthread_mutex_unlock(&mm->cpus_lock);

	smmu__tlb_fini(c);
	smmu__asids_fini(c);
	c->magic = SMMU_DEAD_MAGIC;
	smmu__free(c, sizeof(*c));
}

SMMU_API int smmu_cpu_unregister(struct smmu_cpu *pub)
{
	int err = smmu__cpu_check_owner(pub);
	if (err)
		return err;
	pthread_setspecific(exit_key, NULL);
	unregister_locked_out(smmu__cpu_of(pub));
	return 0;
}

SMMU_API int smmu_cpu_offline(struct smmu_cpu *pub)
{
	int err = smmu__cpu_check_owner(pub);
	if (err)
		return err;
	struct smmu__cpu *c = smmu__cpu_of(pub);
	atomic_store(&c->online, false);
	c->mm->sd->cpu_offline(c);
	return 0;
}

SMMU_API int smmu_cpu_online(struct smmu_cpu *pub)
{
	int err = smmu__cpu_check_owner(pub);
	if (err)
		return err;
	struct smmu__cpu *c = smmu__cpu_of(pub);
	/* Online first (seq_cst), then the back-end compares and catches up. */
	atomic_store(&c->online, true);
	c->mm->sd->cpu_online(c);
	return 0;
}

SMMU_API int smmu_quiescent(struct smmu_cpu *pub)
{
	int err = smmu__cpu_check_owner(pub);
	if (err)
		return err;
	struct smmu__cpu *c = smmu__cpu_of(pub);
	if (!atomic_load_explicit(&c->online, memory_order_relaxed))
		return -EINVAL;
	c->mm->sd->quiescent(c);
	return 0;
}

SMMU_API unsigned smmu_cpu_id(const struct smmu_cpu *pub)
{
	const struct smmu__cpu *c = (const struct smmu__cpu *)pub;
	return c && c->magic == SMMU_CPU_MAGIC ? c->id : 0;
}

SMMU_API struct smmu_mm *smmu_cpu_mm(const struct smmu_cpu *pub)
{
	const struct smmu__cpu *c = (const struct smmu__cpu *)pub;
	return c && c->magic == SMMU_CPU_MAGIC ? c->mm : NULL;
}

SMMU_API int smmu_cpu_set_trap_handler(struct smmu_cpu *pub, smmu_trap_fn fn, void *arg)
{
	int err = smmu__cpu_check_owner(pub);
	if (err)
		return err;
	smmu__cpu_of(pub)->trap = fn;
	smmu__cpu_of(pub)->trap_arg = arg;
	return 0;
}

SMMU_API int smmu_tlb_flush_all(struct smmu_cpu *pub)
{
	int err = smmu__cpu_check_owner(pub);
	if (err)
		return err;
	smmu__tlb_flush_all_local(smmu__cpu_of(pub));
	return 0;
}

SMMU_API int smmu_tlb_flush_range(struct smmu_cpu *pub, smmu_addr_t addr, size_t len)
{
	int err = smmu__cpu_check_owner(pub);
	if (err)
		return err;
	if (len == 0 || addr + len < addr)
		return -EINVAL;
	smmu__tlb_flush_range_local(smmu__cpu_of(pub), addr, addr + len);
	return 0;
}
