/* SPDX-License-Identifier: MIT */
/*
 * Forced include (-include) for compiling lib/ with clang in the fuzz build
 * only.  Not part of the library.
 *
 * lib/notifier.h's smmu__notify_any() applies __atomic_load_n to an
 * `_Atomic unsigned`.  gcc accepts that; clang rejects it ("address argument
 * to atomic operation must be a pointer to integer or pointer"), so lib/
 * does not compile with clang at all.  Until lib/ is fixed (atomic_load, or
 * a plain unsigned field), this macro gives the builtin a pointer to the
 * same object without _Atomic or const: the comma expression's type is the
 * unqualified, non-atomic one.  A macro's own name is not expanded again
 * inside it, so the builtin is still what gets called.  Remove this file
 * (and its -include in CMakeLists.txt) once lib/ builds with clang.
 */
#ifndef SMMU_FUZZ_CLANG_ATOMIC_COMPAT_H
#define SMMU_FUZZ_CLANG_ATOMIC_COMPAT_H
#if defined(__clang__)
#define __atomic_load_n(p, order) __atomic_load_n((__typeof__((void)0, *(p)) *)(p), (order))
#endif
#endif
