/* SPDX-License-Identifier: MIT */
#ifndef SMMU_LIB_TESTHOOK_H
#define SMMU_LIB_TESTHOOK_H

/*
 * Test hooks: named points in the shootdown protocol where a protocol test
 * can stop a thread (by spinning on its own flags) to force one exact
 * interleaving.  Compiled only into the test variants of the library
 * (SMMU_TEST_HOOKS=1); in every other build SMMU_HOOK is nothing.
 *
 * SMMU_BREAK selects a deliberately broken rule in a test variant, so a
 * test can prove that it fails when the rule it guards is broken:
 *   1  the handler flushes and acknowledges inside an access (no deferral)
 *   2  acknowledgements are a plain store, not a maximum
 *   3  the handler reads the mailbox before it clears "signal pending"
 *   4  the initiator reads "signal pending" before it merges its request
 *   5  smmu_quiescent compares the generation before it announces the
 *      quiescent state (RCU modes)
 */

#ifndef SMMU_TEST_HOOKS
#define SMMU_TEST_HOOKS 0
#endif
#ifndef SMMU_BREAK
#define SMMU_BREAK 0
#endif

enum smmu__hook {
	SMMU_HOOK_WALKED,           /* slow path: PTE read, TLB not yet filled (in the access) */
	SMMU_HOOK_HANDLER_DEFERRED, /* handler found the CPU inside an access */
	SMMU_HOOK_HANDLER_READ,     /* handler read the mailbox (before processing it) */
	SMMU_HOOK_BEFORE_ACK,       /* requests flushed, acknowledgement not yet stored */
	SMMU_HOOK_ACKED,            /* acknowledgement stored */
	SMMU_HOOK_POSTED,           /* initiator merged and numbered its request, before it
	                             * decides whether to signal (with SMMU_BREAK 4: after it
	                             * read the flag, before it merged) */
	SMMU_HOOK_QUIESCENT,        /* smmu_quiescent between its announce and its compare
	                             * (SMMU_BREAK 5: between compare and announce) */
	SMMU_HOOK_RCU_LOGGED,       /* RCU initiator advanced the generation, before the
	                             * grace period (c is NULL) */
};

struct smmu__cpu;

#if SMMU_TEST_HOOKS
/* Set by a test; called with the CPU concerned and whether the caller is
 * the signal handler.  Must be async-signal-safe. */
extern void (*volatile smmu__test_hook)(enum smmu__hook point, struct smmu__cpu *c, int in_handler);
#define SMMU_HOOK(point, c, in_handler)                                     \
	do {                                                                \
		void (*h_)(enum smmu__hook, struct smmu__cpu *, int) = smmu__test_hook; \
		if (h_)                                                     \
			h_((point), (c), (in_handler));                     \
	} while (0)
#else
#define SMMU_HOOK(point, c, in_handler) ((void)(c), (void)(in_handler))
#endif

#endif
