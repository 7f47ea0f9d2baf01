/* SPDX-License-Identifier: MIT */
/*
 * Per-mapping fault handlers (smmu_mmap_handler): called on a not-present
 * or protection fault in their mapping, outside the access critical
 * section and offline; they install frames, change protection or fail the
 * access, and the access restarts.  A handler that blocks on a collector
 * thread while that thread unmaps memory the CPU had cached does not
 * deadlock, in every shootdown mode.  Public API only.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <softmmu/softmmu.h>

#include "common.h"

#define WAIT_S 10

/* What a handler saw, and what it does. */
struct rec {
	struct smmu_mm *mm;
	int calls;
	struct smmu_fault last;
	int offline_inside; /* smmu_quiescent failed inside: the CPU was offline */
	int ret;            /* what to return */
	uint64_t stamp;     /* not present: install a page holding it */
	int upgrade;        /* protection: mprotect the page read-write */
	smmu_addr_t other;  /* if set: come online and store to it through the CPU */
};

static int handler(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	struct rec *r = arg;
	r->calls++;
	r->last = *f;
	r->offline_inside += smmu_quiescent(cpu) == -EINVAL; /* refused offline */
	smmu_addr_t page = f->addr & ~(smmu_addr_t)(PS - 1);
	if (r->ret)
		return r->ret;
	if (f->error == -EFAULT && r->stamp) {
		void *p;
		/* Read access faults the frame in even in a read-only mapping;
		 * the host pointer writes it anyway. */
		int err = smmu_mm_translate(r->mm, page, R, &p);
		if (err)
			return err;
		memcpy(p, &r->stamp, sizeof(r->stamp));
	}
	if (f->error == -EACCES && r->upgrade && smmu_mprotect(r->mm, page, PS, RW))
		return -EIO;
	if (r->other) {
		if (smmu_cpu_online(cpu))
			return -EIO;
		smmu_store64(cpu, r->other, 0x77);
		/* returns online: the library must not go online twice */
	}
	return 0;
}

static smmu_addr_t map_h(struct env *e, smmu_addr_t at, size_t len, int prot, int flags, struct rec *r)
{
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap_handler(e->mm, at, len, prot, SMMU_MAP_FIXED_NOREPLACE | flags, handler, r, &a), 0);
	return a;
}

static uint64_t handled(struct env *e)
{
	struct smmu_stats st;
	cr_assert_eq(smmu_stats_get(e->mm, &st), 0);
	return st.faults_handled;
}

Test(faulthandler, not_present_installs_and_retries)
{
	struct env e;
	env_init(&e, 256, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	struct rec r = { .mm = e.mm, .stamp = 0xfeedf00d };
	smmu_addr_t a = map_h(&e, H, 4 * PS, RW, 0, &r);
	uint64_t v = 1;
	cr_assert_eq(smmu_try_load64(e.cpu, a + PS, &v), 0);
	cr_assert_eq(v, 0xfeedf00d, "the access did not restart on the installed page");
	cr_assert_eq(r.calls, 1);
	cr_assert_eq(r.last.addr, a + PS);
	cr_assert_eq(r.last.size, 8);
	cr_assert_eq(r.last.kind, SMMU_ACCESS_READ);
	cr_assert_eq(r.last.error, -EFAULT);
	cr_assert_eq(r.last.cpu_id, smmu_cpu_id(e.cpu));
	cr_assert_eq(r.offline_inside, 1, "the handler ran with the CPU online");
	cr_assert_eq(smmu_load64(e.cpu, a + PS), 0xfeedf00d);
	cr_assert_eq(r.calls, 1, "a present page called the handler again");
	/* A store to another page: handler again, kind WRITE; no demand-zero. */
	smmu_store64(e.cpu, a + 2 * PS + 16, 5);
	cr_assert_eq(r.calls, 2);
	cr_assert_eq(r.last.kind, SMMU_ACCESS_WRITE);
	cr_assert_eq(smmu_load64(e.cpu, a + 2 * PS), 0xfeedf00d);
	cr_assert_eq(smmu_load64(e.cpu, a + 2 * PS + 16), 5);
	cr_assert_eq(handled(&e), 2);
	cr_assert_eq(smmu_munmap(e.mm, a, 4 * PS), 0);
	env_fini(&e);
}

Test(faulthandler, protection_fault_upgrades)
{
	struct env e;
	env_init(&e, 256, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	struct rec r = { .mm = e.mm, .upgrade = 1 };
	smmu_addr_t a = map_h(&e, H, 2 * PS, R, SMMU_MAP_POPULATE, &r);
	cr_assert_eq(smmu_load64(e.cpu, a), 0, "a populated read-only page faulted on a read");
	cr_assert_eq(r.calls, 0);
	cr_assert_eq(smmu_try_store64(e.cpu, a + 8, 99), 0);
	cr_assert_eq(r.calls, 1);
	cr_assert_eq(r.last.error, -EACCES);
	cr_assert_eq(r.last.kind, SMMU_ACCESS_WRITE);
	cr_assert_eq(smmu_load64(e.cpu, a + 8), 99);
	struct smmu_region reg;
	cr_assert_eq(smmu_mm_find(e.mm, a, &reg), 0);
	cr_assert_eq(reg.prot, RW);
	cr_assert_eq(reg.end, a + PS, "only the faulting page was upgraded");
	cr_assert_eq(smmu_munmap(e.mm, a, 2 * PS), 0);
	env_fini(&e);
}

Test(faulthandler, error_fails_the_access)
{
	struct env e;
	env_init(&e, 256, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	struct rec r = { .mm = e.mm, .ret = -EIO };
	smmu_addr_t a = map_h(&e, H, PS, RW, 0, &r);
	uint64_t v = 7;
	cr_assert_eq(smmu_try_load64(e.cpu, a, &v), -EIO);
	cr_assert_eq(v, 7);
	cr_assert_eq(smmu_try_store64(e.cpu, a, 1), -EIO);
	cr_assert_eq(r.calls, 2);
	/* The page stayed not present: no demand-zero behind the handler. */
	r.ret = 0;
	r.stamp = 3;
	cr_assert_eq(smmu_load64(e.cpu, a), 3);
	cr_assert_eq(smmu_munmap(e.mm, a, PS), 0);
	env_fini(&e);
}

Test(faulthandler, handler_may_come_online_and_access)
{
	struct env e;
	env_init(&e, 256, SMMU_SHOOTDOWN_RCU, SMMU_POOL_POISON);
	smmu_addr_t b;
	cr_assert_eq(smmu_mmap(e.mm, H + 64 * PS, PS, RW, SMMU_MAP_FIXED, &b), 0);
	struct rec r = { .mm = e.mm, .stamp = 11, .other = b };
	smmu_addr_t a = map_h(&e, H, PS, RW, 0, &r);
	cr_assert_eq(smmu_load64(e.cpu, a), 11);
	cr_assert_eq(smmu_load64(e.cpu, b), 0x77);
	cr_assert_eq(smmu_quiescent(e.cpu), 0, "the CPU is not online after the handler");
	cr_assert_eq(smmu_munmap(e.mm, a, PS), 0);
	cr_assert_eq(smmu_munmap(e.mm, b, PS), 0);
	env_fini(&e);
}

Test(faulthandler, follows_its_pages_and_keeps_mappings_apart)
{
	struct env e;
	env_init(&e, 256, SMMU_SHOOTDOWN_SIGNAL, SMMU_POOL_POISON);
	struct rec r1 = { .mm = e.mm, .stamp = 1 }, r2 = { .mm = e.mm, .stamp = 2 };
	smmu_addr_t a = map_h(&e, H, 4 * PS, RW, 0, &r1);
	map_h(&e, H + 4 * PS, 2 * PS, RW, 0, &r2);
	struct smmu_region reg;
	cr_assert_eq(smmu_mm_find(e.mm, a, &reg), 0);
	cr_assert_eq(reg.end, a + 4 * PS, "mappings with different handler arguments merged");
	/* A plain mapping next to it does not merge either. */
	smmu_addr_t p;
	cr_assert_eq(smmu_mmap(e.mm, a - 2 * PS, 2 * PS, RW, SMMU_MAP_FIXED_NOREPLACE, &p), 0);
	cr_assert_eq(smmu_mm_find(e.mm, a - PS, &reg), 0);
	cr_assert_eq(reg.end, a);
	cr_assert_eq(smmu_load64(e.cpu, a - PS), 0, "the plain mapping is demand-zero");
	/* Split by munmap and mprotect: each piece keeps its handler. */
	cr_assert_eq(smmu_munmap(e.mm, a + PS, PS), 0);
	cr_assert_eq(smmu_mprotect(e.mm, a + 2 * PS, PS, R), 0);
	cr_assert_eq(smmu_load64(e.cpu, a + 3 * PS), 1);
	cr_assert_eq(smmu_load64(e.cpu, a + 2 * PS), 1);
	cr_assert_eq(smmu_load64(e.cpu, a + 5 * PS), 2);
	uint64_t v;
	cr_assert_eq(smmu_try_load64(e.cpu, a + PS, &v), -EFAULT, "unmapped: no handler");
	cr_assert_eq(r1.calls, 2);
	cr_assert_eq(r2.calls, 1);
	/* NULL handler: a plain mapping. */
	smmu_addr_t q;
	cr_assert_eq(smmu_mmap_handler(e.mm, H + 32 * PS, PS, RW, SMMU_MAP_FIXED, NULL, &r1, &q), 0);
	cr_assert_eq(smmu_load64(e.cpu, q), 0);
	cr_assert_eq(r1.calls, 2);
	/* Bad input: as smmu_mmap, nothing made. */
	cr_assert_eq(smmu_mmap_handler(e.mm, H + 40 * PS, 0, RW, SMMU_MAP_FIXED, handler, &r1, &q), -EINVAL);
	cr_assert_eq(smmu_mmap_handler(e.mm, H + 40 * PS + 1, PS, RW, SMMU_MAP_FIXED, handler, &r1, &q), -EINVAL);
	cr_assert_eq(smmu_mmap_handler(e.mm, H + 40 * PS, PS, 12345, SMMU_MAP_FIXED, handler, &r1, &q), -EINVAL);
	cr_assert_eq(smmu_mmap_handler(NULL, H, PS, RW, 0, handler, &r1, &q), -EINVAL);
	cr_assert_eq(smmu_mm_find(e.mm, H + 40 * PS, &reg), -ENOENT);
	cr_assert_eq(smmu_munmap(e.mm, H - 64 * PS, 128 * PS), 0);
	env_fini(&e);
}

/* ------------------------------------------ blocking on a collector thread */

struct collector {
	struct env *e;
	smmu_addr_t other; /* memory the faulting CPU has cached: unmapped */
	smmu_addr_t page;  /* the faulting page: installed */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int asked, done, timed_out;
	int munmap_err, install_err;
};

static int wait_for(struct collector *k, int *flag)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += WAIT_S;
	int err = 0;
	while (!*flag && err != ETIMEDOUT)
		err = pthread_cond_timedwait(&k->cond, &k->lock, &ts);
	return *flag ? 0 : -ETIMEDOUT;
}

static int blocking_handler(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	(void)cpu;
	(void)f;
	struct collector *k = arg;
	pthread_mutex_lock(&k->lock);
	k->asked = 1;
	pthread_cond_broadcast(&k->cond);
	int err = wait_for(k, &k->done); /* the collector unmaps meanwhile */
	k->timed_out |= err != 0;
	pthread_mutex_unlock(&k->lock);
	return err;
}

static void *collector_main(void *arg)
{
	struct collector *k = arg;
	pthread_mutex_lock(&k->lock);
	if (wait_for(k, &k->asked)) {
		k->timed_out = 1;
		pthread_mutex_unlock(&k->lock);
		return NULL;
	}
	pthread_mutex_unlock(&k->lock);
	/* The faulting CPU cached `other`: this shootdown (signal) or grace
	 * period (RCU) must not wait for the blocked CPU. */
	k->munmap_err = smmu_munmap(k->e->mm, k->other, PS);
	void *p = NULL;
	k->install_err = smmu_mm_translate(k->e->mm, k->page, RW, &p);
	if (p)
		*(uint64_t *)p = 0xc011ec7;
	pthread_mutex_lock(&k->lock);
	k->done = 1;
	pthread_cond_broadcast(&k->cond);
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

static void blocks_on_collector(enum smmu_shootdown_mode mode)
{
	struct env e;
	env_init(&e, 256, mode, SMMU_POOL_POISON);
	struct collector k = { .e = &e };
	pthread_mutex_init(&k.lock, NULL);
	pthread_cond_init(&k.cond, NULL);
	cr_assert_eq(smmu_mmap(e.mm, H + 16 * PS, PS, RW, SMMU_MAP_FIXED, &k.other), 0);
	smmu_store64(e.cpu, k.other, 1); /* cached, writable */
	cr_assert_eq(smmu_mmap_handler(e.mm, H, PS, RW, SMMU_MAP_FIXED, blocking_handler, &k, &k.page), 0);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, collector_main, &k), 0);
	uint64_t v = 0;
	int err = smmu_try_load64(e.cpu, k.page, &v);
	pthread_join(t, NULL);
	cr_assert_eq(k.timed_out, 0, "handler and collector waited for each other");
	cr_assert_eq(k.munmap_err, 0);
	cr_assert_eq(k.install_err, 0);
	cr_assert_eq(err, 0);
	cr_assert_eq(v, 0xc011ec7);
	cr_assert_eq(smmu_try_load64(e.cpu, k.other, &v), -EFAULT, "the CPU kept a translation of the unmapped page");
	if (mode != SMMU_SHOOTDOWN_SIGNAL)
		cr_assert_eq(smmu_quiescent(e.cpu), 0);
	cr_assert_eq(smmu_munmap(e.mm, k.page, PS), 0);
	env_fini(&e);
	pthread_cond_destroy(&k.cond);
	pthread_mutex_destroy(&k.lock);
}

Test(faulthandler, blocks_on_collector_signal)
{
	blocks_on_collector(SMMU_SHOOTDOWN_SIGNAL);
}

Test(faulthandler, blocks_on_collector_rcu)
{
	blocks_on_collector(SMMU_SHOOTDOWN_RCU);
}

Test(faulthandler, blocks_on_collector_rcu_deferred)
{
	blocks_on_collector(SMMU_SHOOTDOWN_RCU_DEFERRED);
}
