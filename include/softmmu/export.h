/* SPDX-License-Identifier: MIT */
#ifndef SOFTMMU_EXPORT_H
#define SOFTMMU_EXPORT_H

/*
 * The library is built with -fvisibility=hidden; only what carries SMMU_API
 * is exported from libsoftmmu.so.  Internal non-static helpers (smmu__*) stay
 * hidden and are reachable only by white-box tests that link the static
 * archive.
 */
#if defined(SMMU_BUILDING_LIBRARY) && defined(__GNUC__)
#define SMMU_API __attribute__((visibility("default")))
#else
#define SMMU_API
#endif

#endif
