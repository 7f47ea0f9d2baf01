/* SPDX-License-Identifier: MIT */
/*
 * Black-box tests of the frame pool: smmu_pool_create / smmu_pool_destroy /
 * the getters, caller-supplied regions, page sizes, poisoning of freed
 * frames (DESIGN.md section 4, property 2) and zeroing of reused ones
 * (property 3).  Public API only.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <softmmu/softmmu.h>

#define PS 4096u
#define BASE ((smmu_addr_t)1 << 30) /* aligned for every page size up to 1 GiB */

/* A handle that points at memory that is not a live object. */
static _Alignas(4096) unsigned char fake_zero[8192];
static _Alignas(4096) unsigned char fake_junk[8192];

static struct smmu_pool *mkpool(size_t frames, size_t page_size, unsigned flags)
{
	size_t ps = page_size ? page_size : PS;
	struct smmu_pool_config cfg = {.region = NULL, .size = frames * ps, .page_size = page_size, .flags = flags};
	struct smmu_pool *p = NULL;
	cr_assert_eq(smmu_pool_create(&cfg, &p), 0, "pool of %zu frames of %zu bytes", frames, ps);
	cr_assert_not_null(p);
	return p;
}

/* Tear down in the documented order and prove nothing leaked. */
static void teardown(struct smmu_pool *pool, struct smmu_mm *mm, struct smmu_cpu *cpu)
{
	if (cpu)
		cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	if (mm)
		cr_assert_eq(smmu_mm_destroy(mm), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), smmu_pool_frames(pool), "frames leaked");
	cr_assert_eq(smmu_pool_destroy(pool), 0);
}

static void setup(struct smmu_pool *pool, struct smmu_mm **mm, struct smmu_cpu **cpu)
{
	cr_assert_eq(smmu_mm_create(pool, mm), 0);
	cr_assert_eq(smmu_cpu_register(*mm, cpu), 0);
}

/* Whether every byte of [p, p+n) equals b. */
static int all_bytes(const unsigned char *p, size_t n, unsigned char b)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != b)
			return 0;
	return 1;
}

Test(pool, create_defaults)
{
	struct smmu_pool_config cfg = {.size = 16 * PS};
	struct smmu_pool *p = NULL;
	cr_assert_eq(smmu_pool_create(&cfg, &p), 0);
	cr_assert_eq(smmu_pool_frames(p), 16);
	cr_assert_eq(smmu_pool_free_frames(p), 16);
	cr_assert_eq(smmu_pool_page_size(p), 4096);
	cr_assert_eq(smmu_pool_destroy(p), 0);
}

Test(pool, create_whole_frames_only)
{
	/* size not a multiple of the page size: whole frames are used. */
	struct smmu_pool_config cfg = {.size = 3 * PS + PS / 2, .page_size = PS};
	struct smmu_pool *p = NULL;
	cr_assert_eq(smmu_pool_create(&cfg, &p), 0);
	cr_assert_eq(smmu_pool_frames(p), 3);
	cr_assert_eq(smmu_pool_free_frames(p), 3);
	cr_assert_eq(smmu_pool_destroy(p), 0);
}

Test(pool, create_bad_input)
{
	static _Alignas(4096) unsigned char region[4 * 4096];
	struct smmu_pool *const sentinel = (struct smmu_pool *)fake_junk;
	struct smmu_pool *p = sentinel;
	const struct smmu_pool_config good = {.size = 4 * PS};

	cr_assert_eq(smmu_pool_create(NULL, &p), -EINVAL);
	cr_assert_eq(p, sentinel);
	cr_assert_eq(smmu_pool_create(&good, NULL), -EINVAL);

	const struct {
		void *region;
		size_t size, page_size;
		unsigned flags;
		const char *what;
	} bad[] = {
		{NULL, 4 * PS, 0, 0x2, "unknown flag 0x2"},
		{NULL, 4 * PS, 0, 0x80000000u, "unknown flag 0x80000000"},
		{NULL, 4 * PS, 0, SMMU_POOL_POISON | 0x100, "poison plus an unknown flag"},
		{NULL, 4 * PS, 3000, 0, "page_size not a power of two"},
		{NULL, 4 * 6144, 6144, 0, "page_size 6144"},
		{NULL, 4 * PS, 1, 0, "page_size 1"},
		{NULL, 4 * PS, 512, 0, "page_size below the minimum"},
		{NULL, 4 * PS, 2048, 0, "page_size 2 KiB, below the minimum"},
		{NULL, (size_t)1 << 28, (size_t)1 << 28, 0, "page_size 256 MiB, above 128 MiB"},
		{NULL, (size_t)1 << 30, (size_t)1 << 30, 0, "page_size 1 GiB"},
		{NULL, (size_t)4 << 31, (size_t)1 << 31, 0, "page_size 2 GiB"},
		{NULL, 0, 0, 0, "size 0"},
		{NULL, PS - 1, PS, 0, "size below one frame"},
		{NULL, 2 * PS - 1, 2 * PS, 0, "size below one 8 KiB frame"},
		{NULL, (size_t)UINT32_MAX * PS, PS, 0, "2^32 - 1 frames"},
		{NULL, (size_t)UINT32_MAX * PS + PS, PS, 0, "2^32 frames"},
		{NULL, SIZE_MAX, PS, 0, "SIZE_MAX bytes"},
		{region + 1, 2 * PS, PS, 0, "region misaligned by 1"},
		{region + 8, 2 * PS, PS, 0, "region misaligned by 8"},
		{region + 2048, 2 * PS, PS, 0, "region misaligned by 2048"},
		{region + 2048, 2 * 8192, 8192, 0, "region misaligned by 2048, 8 KiB pages"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct smmu_pool_config cfg = {.region = bad[i].region,
					       .size = bad[i].size,
					       .page_size = bad[i].page_size,
					       .flags = bad[i].flags};
		p = sentinel;
		cr_assert_eq(smmu_pool_create(&cfg, &p), -EINVAL, "%s", bad[i].what);
		cr_assert_eq(p, sentinel, "%s: *out written on error", bad[i].what);
	}

	/* The boundaries themselves are fine. */
	struct smmu_pool_config ok = {.region = region + PS, .size = 2 * PS, .page_size = PS};
	cr_assert_eq(smmu_pool_create(&ok, &p), 0);
	cr_assert_eq(smmu_pool_frames(p), 2);
	cr_assert_eq(smmu_pool_destroy(p), 0);
	ok = (struct smmu_pool_config){.size = PS, .page_size = PS, .flags = SMMU_POOL_POISON};
	cr_assert_eq(smmu_pool_create(&ok, &p), 0);
	cr_assert_eq(smmu_pool_frames(p), 1);
	cr_assert_eq(smmu_pool_destroy(p), 0);
}

Test(pool, page_size_128m_accepted)
{
	/* The largest page size: the library maps the region itself (lazily). */
	struct smmu_pool_config cfg = {.size = (size_t)1 << 27, .page_size = (size_t)1 << 27};
	struct smmu_pool *p = NULL;
	cr_assert_eq(smmu_pool_create(&cfg, &p), 0);
	cr_assert_eq(smmu_pool_page_size(p), (size_t)1 << 27);
	cr_assert_eq(smmu_pool_frames(p), 1);
	cr_assert_eq(smmu_pool_destroy(p), 0);
}

Test(pool, destroy_and_getters_bad_input)
{
	cr_assert_eq(smmu_pool_destroy(NULL), -EINVAL);
	cr_assert_eq(smmu_pool_destroy((struct smmu_pool *)fake_zero), -EINVAL);
	memset(fake_junk, 0xa5, sizeof(fake_junk));
	cr_assert_eq(smmu_pool_destroy((struct smmu_pool *)fake_junk), -EINVAL);

	cr_assert_eq(smmu_pool_frames(NULL), 0);
	cr_assert_eq(smmu_pool_free_frames(NULL), 0);
	cr_assert_eq(smmu_pool_page_size(NULL), 0);
	cr_assert_eq(smmu_pool_frames((struct smmu_pool *)fake_zero), 0);
	cr_assert_eq(smmu_pool_free_frames((struct smmu_pool *)fake_zero), 0);
	cr_assert_eq(smmu_pool_page_size((struct smmu_pool *)fake_junk), 0);
}

Test(pool, destroy_busy_while_mm_uses_it)
{
	struct smmu_pool *pool = mkpool(8, 0, 0);
	struct smmu_mm *mm, *mm2;
	struct smmu_cpu *cpu;
	setup(pool, &mm, &cpu);
	cr_assert_eq(smmu_mm_create(pool, &mm2), 0);
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(mm, 0, 2 * PS, SMMU_PROT_READ | SMMU_PROT_WRITE, 0, &a), 0);
	smmu_store64(cpu, a, 0x1122334455667788ull);

	cr_assert_eq(smmu_pool_destroy(pool), -EBUSY);
	/* Unchanged and still usable. */
	cr_assert_eq(smmu_pool_frames(pool), 8);
	cr_assert_eq(smmu_pool_free_frames(pool), 7);
	cr_assert_eq(smmu_load64(cpu, a), 0x1122334455667788ull);
	smmu_store64(cpu, a + PS, 1);
	cr_assert_eq(smmu_pool_free_frames(pool), 6);

	cr_assert_eq(smmu_cpu_unregister(cpu), 0);
	cr_assert_eq(smmu_pool_destroy(pool), -EBUSY);
	cr_assert_eq(smmu_mm_destroy(mm), 0);
	cr_assert_eq(smmu_pool_destroy(pool), -EBUSY, "a second mm still uses the pool");
	cr_assert_eq(smmu_mm_destroy(mm2), 0);
	teardown(pool, NULL, NULL);
}

Test(pool, user_region_not_assumed_zero_and_bounded)
{
	const size_t n = 8, tail = 100;
	unsigned char *reg = aligned_alloc(4096, (n + 1) * PS);
	cr_assert_not_null(reg);
	memset(reg, 0xaa, (n + 1) * PS);
	struct smmu_pool_config cfg = {.region = reg, .size = n * PS + tail, .page_size = PS};
	struct smmu_pool *pool = NULL;
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	cr_assert_eq(smmu_pool_frames(pool), n);

	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	setup(pool, &mm, &cpu);
	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(mm, 0, n * PS, SMMU_PROT_READ | SMMU_PROT_WRITE, 0, &a), 0);
	/* Every frame backs a fresh page, zeroed although the region was not. */
	for (size_t i = 0; i < n; i++)
		for (size_t off = 0; off < PS; off += 8)
			cr_assert_eq(smmu_load64(cpu, a + i * PS + off), 0, "page %zu offset %zu", i, off);
	cr_assert_eq(smmu_pool_free_frames(pool), 0);

	/* The data lands in the caller's region, one frame per page. */
	for (size_t i = 0; i < n; i++)
		for (size_t off = 0; off < PS; off += 8)
			smmu_store64(cpu, a + i * PS + off, 0xc0de000000000000ull | (i << 16) | off);
	for (size_t i = 0; i < n; i++) {
		int found = 0;
		for (size_t f = 0; f < n; f++) {
			uint64_t v;
			memcpy(&v, reg + f * PS + 8, 8);
			if (v == (0xc0de000000000000ull | (i << 16) | 8))
				found++;
		}
		cr_assert_eq(found, 1, "page %zu should be in exactly one frame of the region", i);
	}
	/* Nothing past the last whole frame is ever touched. */
	cr_assert(all_bytes(reg + n * PS, PS, 0xaa), "bytes past the last frame were written");

	cr_assert_eq(smmu_munmap(mm, a, n * PS), 0);
	cr_assert_eq(smmu_pool_free_frames(pool), n);
	teardown(pool, mm, cpu);
	cr_assert(all_bytes(reg + n * PS, PS, 0xaa));
	free(reg); /* the region stays the caller's */
}

/* Property 2 (freed frames are never touched: poisoned, and stay so) and
 * property 3 (a reused frame reads zero). */
Test(pool, poison_freed_frames_then_reuse_zeroed)
{
	const size_t n = 16;
	unsigned char *reg = aligned_alloc(4096, n * PS);
	cr_assert_not_null(reg);
	memset(reg, 0xaa, n * PS);
	struct smmu_pool_config cfg = {.region = reg, .size = n * PS, .flags = SMMU_POOL_POISON};
	struct smmu_pool *pool = NULL;
	cr_assert_eq(smmu_pool_create(&cfg, &pool), 0);
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	setup(pool, &mm, &cpu);

	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(mm, 0, n * PS, SMMU_PROT_READ | SMMU_PROT_WRITE, 0, &a), 0);
	unsigned char page[PS];
	memset(page, 0x11, sizeof(page));
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(smmu_write(cpu, a + i * PS, page, PS), 0);
	/* Warm the TLB on every page (fast path ready). */
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(smmu_load8(cpu, a + i * PS + 7), 0x11);

	cr_assert_eq(smmu_munmap(mm, a, n / 2 * PS), 0);
	size_t poisoned = 0, data = 0;
	for (size_t f = 0; f < n; f++) {
		poisoned += all_bytes(reg + f * PS, PS, SMMU_POISON_BYTE);
		data += all_bytes(reg + f * PS, PS, 0x11);
	}
	cr_assert_eq(poisoned, n / 2, "every freed frame is poisoned");
	cr_assert_eq(data, n / 2, "every mapped frame keeps its data");

	/* The unmapped pages fault on every path; the freed frames stay poisoned. */
	for (size_t i = 0; i < n / 2; i++) {
		uint64_t v = 77;
		cr_assert_eq(smmu_try_load64(cpu, a + i * PS, &v), -EFAULT);
		cr_assert_eq(v, 77);
		cr_assert_eq(smmu_try_store8(cpu, a + i * PS + 1, 0x22), -EFAULT);
		cr_assert_eq(smmu_try_store32(cpu, a + i * PS + PS - 2, 0x22), -EFAULT);
		cr_assert_eq(smmu_write(cpu, a + i * PS, page, 16), -EFAULT);
	}
	poisoned = 0;
	for (size_t f = 0; f < n; f++)
		poisoned += all_bytes(reg + f * PS, PS, SMMU_POISON_BYTE);
	cr_assert_eq(poisoned, n / 2, "a freed frame was written after it was freed");

	/* Reused frames read zero, never poison or old data. */
	smmu_addr_t b;
	cr_assert_eq(smmu_mmap(mm, 0, n / 2 * PS, SMMU_PROT_READ | SMMU_PROT_WRITE, 0, &b), 0);
	for (size_t i = 0; i < n / 2; i++) {
		unsigned char got[PS];
		cr_assert_eq(smmu_read(cpu, b + i * PS, got, PS), 0);
		cr_assert(all_bytes(got, PS, 0), "reused frame for page %zu is not zero", i);
	}
	cr_assert_eq(smmu_pool_free_frames(pool), 0);

	cr_assert_eq(smmu_munmap(mm, 0, (size_t)1 << 47), 0);
	poisoned = 0;
	for (size_t f = 0; f < n; f++)
		poisoned += all_bytes(reg + f * PS, PS, SMMU_POISON_BYTE);
	cr_assert_eq(poisoned, n);
	teardown(pool, mm, cpu);
	free(reg);
}

Test(pool, reuse_zeroed_without_poison)
{
	struct smmu_pool *pool = mkpool(4, 0, 0);
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	setup(pool, &mm, &cpu);
	for (int round = 0; round < 3; round++) {
		smmu_addr_t a;
		cr_assert_eq(smmu_mmap(mm, 0, 4 * PS, SMMU_PROT_READ | SMMU_PROT_WRITE, 0, &a), 0);
		for (size_t i = 0; i < 4; i++)
			for (size_t off = 0; off < PS; off += 8) {
				cr_assert_eq(smmu_load64(cpu, a + i * PS + off), 0, "round %d", round);
				smmu_store64(cpu, a + i * PS + off, ~(uint64_t)off);
			}
		cr_assert_eq(smmu_pool_free_frames(pool), 0);
		cr_assert_eq(smmu_munmap(mm, a, 4 * PS), 0);
		cr_assert_eq(smmu_pool_free_frames(pool), 4);
	}
	teardown(pool, mm, cpu);
}

/* One mapping with a page-crossing store, on a pool of page size ps. */
static void exercise_page_size(size_t ps)
{
	struct smmu_pool *pool = mkpool(4, ps, 0);
	cr_assert_eq(smmu_pool_page_size(pool), ps);
	struct smmu_mm *mm;
	struct smmu_cpu *cpu;
	setup(pool, &mm, &cpu);
	cr_assert_eq(smmu_mm_page_size(mm), ps);

	smmu_addr_t a;
	cr_assert_eq(smmu_mmap(mm, BASE, 2 * ps, SMMU_PROT_READ | SMMU_PROT_WRITE, SMMU_MAP_FIXED, &a), 0, "ps %zu",
		     ps);
	cr_assert_eq(a, BASE);
	struct smmu_region r;
	cr_assert_eq(smmu_mm_find(mm, 0, &r), 0);
	cr_assert_eq(r.start, BASE);
	cr_assert_eq(r.end, BASE + 2 * ps);

	smmu_store64(cpu, a, 0x0102030405060708ull);
	smmu_store64(cpu, a + ps - 3, 0xa1a2a3a4a5a6a7a8ull); /* crosses the page boundary */
	smmu_store32(cpu, a + 2 * ps - 4, 0xdeadbeef);
	if (ps > 4096)
		smmu_store16(cpu, a + 4095, 0x4242); /* crosses a 4 KiB boundary inside a large page */
	cr_assert_eq(smmu_load64(cpu, a), 0x0102030405060708ull);
	cr_assert_eq(smmu_load64(cpu, a + ps - 3), 0xa1a2a3a4a5a6a7a8ull);
	cr_assert_eq(smmu_load8(cpu, a + ps - 3), 0xa8);
	cr_assert_eq(smmu_load8(cpu, a + ps + 4), 0xa1);
	cr_assert_eq(smmu_load32(cpu, a + 2 * ps - 4), 0xdeadbeef);
	if (ps > 4096)
		cr_assert_eq(smmu_load16(cpu, a + 4095), 0x4242);
	cr_assert_eq(smmu_pool_free_frames(pool), 2);
	uint64_t v;
	cr_assert_eq(smmu_try_load64(cpu, a + 2 * ps, &v), -EFAULT);

	cr_assert_eq(smmu_munmap(mm, a, ps), 0);
	cr_assert_eq(smmu_try_load64(cpu, a, &v), -EFAULT);
	cr_assert_eq(smmu_load32(cpu, a + 2 * ps - 4), 0xdeadbeef);
	cr_assert_eq(smmu_pool_free_frames(pool), 3);
	teardown(pool, mm, cpu);
}

Test(pool, page_sizes_4k_to_64k)
{
	for (size_t ps = 4096; ps <= 65536; ps *= 2)
		exercise_page_size(ps);
}

Test(pool, page_sizes_128k_to_2m)
{
	for (size_t ps = (size_t)1 << 17; ps <= (size_t)1 << 21; ps *= 2)
		exercise_page_size(ps);
}

/* The largest page size: a 2^63-byte address space. */
Test(pool, page_size_128m_mappable)
{
	exercise_page_size((size_t)1 << 27);
}
