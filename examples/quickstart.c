/* SPDX-License-Identifier: MIT */
/*
 * quickstart: the README's example.  A pool, an address space, two CPU
 * threads that share a counter in emulated memory, and an unmap.
 */
#include <softmmu/softmmu.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                                   \
	do {                                                                          \
		int err_ = (call);                                                    \
		if (err_) {                                                           \
			fprintf(stderr, "%s failed: %d\n", #call, err_);              \
			exit(1);                                                      \
		}                                                                     \
	} while (0)

static struct smmu_mm *mm;
static smmu_addr_t heap;

static void *worker(void *arg)
{
	struct smmu_cpu *cpu;
	CHECK(smmu_cpu_register(mm, &cpu)); /* this thread is now a CPU of mm */
	for (int i = 0; i < 100000; i++)
		smmu_fetch_add64(cpu, heap, 1); /* atomic on emulated memory */
	smmu_store64(cpu, heap + 4096 * (1 + (uintptr_t)arg), 42); /* demand-zero fault, then a hit */
	CHECK(smmu_cpu_unregister(cpu));
	return NULL;
}

int main(void)
{
	struct smmu_pool_config cfg = { .size = 16 << 20 }; /* 16 MiB of 4 KiB frames, mapped by the library */
	struct smmu_pool *pool;
	CHECK(smmu_pool_create(&cfg, &pool));
	CHECK(smmu_mm_create(pool, &mm));
	CHECK(smmu_mmap(mm, 0, 1 << 20, SMMU_PROT_READ | SMMU_PROT_WRITE, 0, &heap));

	pthread_t t[2];
	for (uintptr_t i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);

	struct smmu_cpu *cpu;
	CHECK(smmu_cpu_register(mm, &cpu));
	printf("counter = %llu (expected 200000), page 1 = %llu\n", (unsigned long long)smmu_load64(cpu, heap),
	       (unsigned long long)smmu_load64(cpu, heap + 4096));

	uint64_t v;
	CHECK(smmu_munmap(mm, heap, 1 << 20)); /* gather: clear, flush, then free */
	printf("after munmap: try_load = %d (-EFAULT)\n", smmu_try_load64(cpu, heap, &v));

	struct smmu_stats st;
	CHECK(smmu_stats_get(mm, &st));
	smmu_stats_print(&st, stdout);

	CHECK(smmu_cpu_unregister(cpu));
	CHECK(smmu_mm_destroy(mm));
	CHECK(smmu_pool_destroy(pool));
	return 0;
}
