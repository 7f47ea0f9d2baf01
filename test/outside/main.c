/* SPDX-License-Identifier: MIT */
/*
 * An outside project: uses an installed libsoftmmu through its public header
 * only.  Built by build.sh against a staged install, once with CMake
 * (find_package(softmmu)) and once with pkg-config.
 */
#include <softmmu/softmmu.h>

#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                                       \
	do {                                                                              \
		int err_ = (call);                                                        \
		if (err_ != 0) {                                                          \
			fprintf(stderr, "outside project: %s failed: %d\n", #call, err_); \
			return 1;                                                         \
		}                                                                         \
	} while (0)

int main(void)
{
	struct smmu_pool_config cfg = {.size = 1 << 20};
	struct smmu_pool *pool;
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	smmu_addr_t a;

	CHECK(smmu_pool_create(&cfg, &pool));
	CHECK(smmu_mm_create(pool, &mm));
	CHECK(smmu_cpu_register(mm, &cpu));
	CHECK(smmu_mmap(mm, 0, 4096, SMMU_PROT_READ | SMMU_PROT_WRITE, 0, &a));
	smmu_store64(cpu, a, 42);
	if (smmu_load64(cpu, a) != 42) {
		fprintf(stderr, "outside project: load64 after store64(42) returned %llu\n",
			(unsigned long long)smmu_load64(cpu, a));
		return 1;
	}
	CHECK(smmu_munmap(mm, a, 4096));
	CHECK(smmu_cpu_unregister(cpu));
	CHECK(smmu_mm_destroy(mm));
	CHECK(smmu_pool_destroy(pool));
	printf("outside project: ok\n");
	return 0;
}
