/* SPDX-License-Identifier: MIT */
/*
 * The RCU (liburcu QSBR) shootdown modes (lib/shootdown_rcu.c) as the code
 * implements them, for spin.  README.md maps every step to the C.
 *
 * No signal, no in-access marker: a CPU may hold any translation it filled
 * until its next quiescent state (smmu_quiescent), where it announces the
 * quiescent state and then catches up with the mm's flush generation.  An
 * initiator clears the PTE (the exchange returns the CPU bits that walks
 * set in it), advances the generation, flushes its own TLB and then:
 *   strict (DEFERRED=0): waits for a grace period, then frees;
 *   deferred (DEFERRED=1): hands the frame to call_rcu, whose worker frees
 *   it after a grace period (when the backlog is at its bound the
 *   initiator waits for a grace period itself and frees: with BOUND=1 the
 *   model chooses either way);
 * except that when no CPU on the mm's list other than the initiator has
 * its bit among the collected bits (others_may_cache), strict does not
 * wait and deferred frees at once.  A flush of everything (another gather
 * in flight) counts every CPU that is registered at all (nr_cpus).
 *
 * CPU bits: a walk sets its CPU's bit with the compare-and-swap that also
 * sets accessed, before it fills (one step with the walk's load: a CAS that
 * fails walks again).  A CPU is on the list (reg 2) from registration until
 * it starts unregistering; reg 1: off the list, still counted in nr_cpus.
 *
 * MOVE=1 adds mremap of one page: CPU 0 moves page 0 (frame 0) to the
 * free page slot DST (exchange the source with 0, store the value at the
 * destination, both under the mapping lock), then the move's own flush:
 * generation, own TLB, and in strict mode a grace period when another
 * listed CPU had a bit in the source.  Nothing is freed by the move.  In
 * deferred mode (lazy_flush) the destination keeps the source's CPU bits;
 * in strict mode it starts with none.  CPU DUNMAP later unmaps DST, which
 * frees frame 0 (with the skip rule).
 *
 * MPROT=1 adds mprotect of page 0 to PROT_NONE by CPU 0 before it unmaps
 * the page: the PTE keeps its frame and CPU bits, loses PRESENT (walks
 * fault), and the range is flushed as for a clear (strict: a grace period
 * when another listed CPU had a bit).  The unmap then takes the frame of
 * the PROTNONE entry but, as zap_leaf_table does, neither its range nor
 * its CPU bits.
 *
 * QSBR as liburcu 0.13 implements it on 64-bit: a grace-period counter gp
 * (never 0), a counter ctr[c] per reader (0: offline); a quiescent state
 * or coming online stores ctr = gp (with full barriers), going offline or
 * unregistering stores 0; synchronize_rcu, under a lock, advances gp and
 * waits until every reader's ctr is gp or 0.  Each of those is one step:
 * a reader that loads gp before the advance and stores it after is, for the
 * writer, a reader that announced before the advance.
 *
 * The world: pages 0..NINIT-1 map frames 0..NINIT-1, page DST = NINIT
 * (MOVE=1) starts empty; CPU j < NINIT unmaps page j once (CPU 0 moves
 * page 0 instead when MOVE=1).  Every CPU makes NACC accesses and NQS
 * quiescent states, may go offline and online once (CYCLE), and
 * unregisters at the end (a QSBR reader must not stay online and silent
 * for ever).
 *
 * Checked: no access goes through a translation to a freed frame
 * (assert), and no deadlock (invalid end states).
 *
 * BREAK=N:
 *   5  smmu_quiescent compares the generation before it announces the
 *      quiescent state (lib/testhook.h rule 5)
 *   6  coming online compares the generation before it announces
 *      (urcu_qsbr_thread_online) - model-only
 *   8  deferred mode: the move clears the destination's CPU bits (as
 *      strict mode does: lazy_flush ignored)
 *   9  the walk sets its CPU bit after the fill, with a CAS of its own,
 *      not with the one that orders it with the clear
 *  10  the skip ignores the bits: no grace period, free at once, always
 *  11  the move leaves the source's CPU bits off its gather (its flush
 *      then skips the grace period in strict mode)
 *
 *  12  the initiator's own flush does not catch up with the whole log when
 *      it is behind by more than its own generation (its own bit, left out
 *      of others_may_cache, may stand for an entry at a moved page's old
 *      address: MOVE=1 DUNMAP=1 DEFERRED=1)
 *  13  deferred mode: the unmap leaves the CPU bits of a PROTNONE entry
 *      off its gather (a reader may still hold the entry from before the
 *      lazy mprotect: MPROT=1 DEFERRED=1)
 * Both were found by this model in the code as first written (README.md,
 * "Found"); lib/ now does what the unbroken model does.
 */

#ifndef NCPU
#define NCPU 2
#endif
#ifndef NINIT
#define NINIT 2              /* CPUs 0..NINIT-1 each unmap their own page */
#endif
#ifndef NACC
#define NACC 2
#endif
#ifndef NQS
#define NQS 1
#endif
#ifndef CYCLE
#define CYCLE 1
#endif
#ifndef DEFERRED
#define DEFERRED 0
#endif
#ifndef BOUND
#define BOUND 0              /* deferred: may find the backlog at its bound */
#endif
#ifndef MOVE
#define MOVE 0               /* CPU 0 moves page 0 to DST, DST is unmapped */
#endif
#ifndef DUNMAP
#define DUNMAP 0             /* the CPU that unmaps DST (after the move) */
#endif
#ifndef MPROT
#define MPROT 0              /* CPU 0 mprotects page 0 to PROT_NONE before its munmap */
#endif
#if MOVE && MPROT
#error "MOVE and MPROT both act on page 0: one at a time"
#endif
#ifndef BREAK
#define BREAK 0
#endif
#ifndef PROBE
#define PROBE 0              /* reachability probes, as in signal.pml */
#endif
#define REACHED(n, cond) assert(PROBE != (n) || !(cond))

#define NP (NINIT + MOVE)    /* pages */
#define NF NINIT             /* frames */
#define SRC 0                /* the move's source page ... */
#define DST NINIT            /* ... and destination page */
#define NGEN (NINIT + MOVE + MPROT + 1) /* flush-log records: one flush per operation at most */
#define NONE 255
#define BIT(c) (1 << (c))
#define CPUMASK (BIT(NCPU) - 1)
#define PRESENT 128          /* PTE: PRESENT | HASFRAME | frame << 3 | CPU bits */
#define HASFRAME 64          /* (SMMU_PTE_HAS_FRAME: present or PROTNONE; NCPU <= 3) */
#define FRAME(w) (((w) >> 3) & 7)

#if DEFERRED && BREAK != 8
#define KEEP 255             /* lazy_flush: the moved PTE keeps its CPU bits */
#else
#define KEEP (255 - CPUMASK) /* the destination starts with no CPU bits */
#endif

byte pte[NP];                /* set up by init */
bool freed[NF];
byte tlb[NCPU * NP] = NONE;  /* tlb[c*NP + p]: frame cached for page p */
bool mmlock;                 /* mm->lock, held exclusively by munmap / mremap */
bool moved;                  /* the move stored the destination */

byte flush_gen;
byte log_s[NGEN];
byte log_e[NGEN];
byte flush_pending;

/* The mm's CPU list as others_may_cache sees it (under cpus_lock: one
 * step): 2 on the list (bit_cpus counts it), 1 unlinked but still in
 * nr_cpus, 0 gone.  CPU c's bit is BIT(c) (ids < SMMU_PTE_CPUS_BITS). */
byte reg[NCPU] = 2;

/* liburcu QSBR */
byte gp = 1;                 /* gp.ctr (URCU_QSBR_GP_ONLINE at start) */
byte ctr[NCPU] = 1;          /* registered, online: ctr = gp */
bool gp_lock;                /* serializes synchronize_rcu */
byte cbq;                    /* call_rcu queue: frames that wait */

/* smmu__tlb_catch_up(), one step (see signal.pml). */
inline catch_up()
{
	atomic {
		gen = flush_gen;
		if
		:: gen != seen_gen ->
			cover = 0;
			for (k : seen_gen + 1 .. gen) {
				for (i : log_s[k] .. log_e[k] - 1) {
					cover = cover | BIT(i)
				}
			};
			for (k : 0 .. NP - 1) {
				if
				:: cover & BIT(k) ->
					REACHED(1, tlb[me * NP + k] != NONE);  /* catch-up drops an entry */
					tlb[me * NP + k] = NONE
				:: else -> skip
				fi
			};
			seen_gen = gen
		:: else -> skip
		fi;
		k = 0; i = 0; cover = 0; gen = 0
	}
}

/* urcu_qsbr_synchronize_rcu(): advance gp, wait for every reader. */
inline synchronize()
{
	atomic { !gp_lock -> gp_lock = 1; gp = gp + 1 };
	for (r : 0 .. NCPU - 1) {
		atomic {
			(ctr[r] == 0 || ctr[r] == gp);
			REACHED(2, r != me && ctr[r] == gp)  /* waited for a reader's QS */
		}
	};
	r = 0;
	gp_lock = 0
}

/* grace_period(): offline around the wait (smmu__rcu_block_begin / _end:
 * online again announces, then catches up). */
inline grace_period()
{
	ctr[me] = 0;
	synchronize();
	ctr[me] = gp;
	catch_up()
}

/* An access to page p (access.h hit path, fault.c walk_fill).  Lookup and
 * hit are one step: the lookup is private.  The walk's PTE load and the
 * compare-and-swap that sets accessed and our CPU bit are one step: a CAS
 * that fails walks again, so it reaches what a later load would. */
inline access()
{
	select(p : 0 .. NP - 1);
	atomic {
		f = tlb[me * NP + p];
		if
		:: f != NONE -> assert(!freed[f]); f = 0; ok = 1
		:: else -> skip
		fi
	};
	if
	:: ok -> ok = 0
	:: else ->
#if BREAK == 9
		w = pte[p];                      /* the walk's load, no bit yet */
#else
		atomic {
			w = pte[p];              /* the walk's load and its CAS */
			if
			:: (w & PRESENT) && !(w & BIT(me)) -> pte[p] = w | BIT(me)
			:: else -> skip
			fi
		};
#endif
		if
		:: w & PRESENT ->
			atomic { f = FRAME(w); tlb[me * NP + p] = f; assert(!freed[f]); f = 0 };  /* fill, access */
#if BREAK == 9
			atomic {                 /* the bit's own CAS, after the fill */
				if
				:: pte[p] == w -> pte[p] = w | BIT(me)
				:: else -> skip
				fi
			};
#endif
			skip
		:: else -> skip                  /* fault: -EFAULT (PROTNONE: -EACCES) */
		fi;
		w = 0
	fi;
	p = 0
}

/* smmu_quiescent() -> quiescent(). */
inline quiescent()
{
#if BREAK == 5
	catch_up();                              /* compares first ... */
	ctr[me] = gp;                            /* ... announces after */
#else
	ctr[me] = gp;                            /* urcu_qsbr_quiescent_state */
	catch_up();
#endif
}

/* smmu_cpu_offline(), then smmu_cpu_online(). */
inline offline_online()
{
	ctr[me] = 0;                             /* urcu_qsbr_thread_offline */
#if BREAK == 6
	catch_up();
	ctr[me] = gp;
#else
	ctr[me] = gp;                            /* urcu_qsbr_thread_online */
	catch_up();
#endif
}

/* others_may_cache(mm, cpus), under cpus_lock: one step.  `all` (the
 * gather_finish flush of everything, cpus == SMMU_CPUS_ALL): any CPU
 * registered at all (nr_cpus != 0, the caller included); else any CPU on
 * the list, other than the caller, with its bit in gcpus. */
inline others()
{
	atomic {
		any = 0; i = 0;
		for (k : 0 .. NCPU - 1) {
			if
			:: all && reg[k] != 0 -> any = 1
			:: !all && k != me && reg[k] == 2 && (gcpus & BIT(k)) -> any = 1
			:: else -> skip
			fi;
			if
			:: k != me && reg[k] == 2 -> i = 1
			:: else -> skip
			fi
		};
#if BREAK == 10
		any = 0;
#endif
		REACHED(3, !any && i);           /* no grace period, another CPU listed */
		k = 0; i = 0
	}
}

/* What follows the clears of a gather: smmu__gather_finish ->
 * smmu__gather_flush -> rcu_flush [-> defer_free] -> free_queued.  The
 * gather holds the range [s, e) (s >= e: it cleared nothing), the CPU bits
 * gcpus and the frame fr to free (NONE: none). */
inline finish()
{
	all = (flush_pending > 1);               /* gather_finish */
	if
	:: all -> s = 0; e = NP
	:: else -> skip
	fi;
	if
	:: s < e ->
		/* rcu_flush: smmu__flush_log ... */
		atomic { gen = flush_gen + 1; log_s[gen] = s; log_e[gen] = e; flush_gen = gen };
		/* ... our own TLB ... */
		atomic {
			for (k : 0 .. NP - 1) {
				if
				:: k >= s && k < e -> tlb[me * NP + k] = NONE
				:: else -> skip
				fi
			};
			k = 0;
			if
			:: all -> seen_gen = gen
			:: !all && seen_gen == gen - 1 ->
				REACHED(5, 1);   /* the shortcut: nothing else to catch up on */
				seen_gen = gen
			:: else -> skip
			fi
		};
#if BREAK != 12
		if
		:: seen_gen != gen -> catch_up()
		:: else -> skip
		fi;
#endif
		gen = 0;
#if !DEFERRED
		/* ... strict: a grace period if another CPU may cache */
		others();
		if
		:: any -> any = 0; grace_period()
		:: else -> skip
		fi
#endif
	:: else -> skip
	fi;
#if DEFERRED
	/* gather_flush -> defer_free: nothing queued, or no other CPU may
	 * cache: free now; else to call_rcu, or, if BOUND lets the backlog be
	 * at its bound, wait for a grace period and free now. */
	if
	:: fr != NONE ->
		others();
		if
		:: any ->
			any = 0;
			if
			:: cbq = cbq | BIT(fr); fr = NONE
#if BOUND
			:: grace_period()
#endif
			fi
		:: else -> skip
		fi
	:: else -> skip
	fi;
#endif
	if
	:: fr != NONE -> freed[fr] = 1           /* free_queued */
	:: else -> skip
	fi;
	flush_pending = flush_pending - 1;
	s = 0; e = 0; gcpus = 0; fr = 0; all = 0
}

/* smmu_munmap of page pg: under the mapping lock gather_init and the
 * zap's exchange (the lock taken with the first, released with the last
 * of those steps: only lockers see it), then the rest without the lock. */
inline munmap(pg)
{
	atomic { !mmlock -> mmlock = 1; flush_pending = flush_pending + 1 };
	atomic {
		w = pte[pg]; pte[pg] = 0; mmlock = 0;
#if PROBE == 4
		/* the destination's clear returns the bit of another CPU that
		 * holds the source's entry and none of the destination: a kept
		 * bit at work */
		for (k : 0 .. NCPU - 1) {
			REACHED(4, MOVE && pg == DST && k != me && (w & PRESENT) && (w & BIT(k)) &&
				tlb[k * NP + SRC] == FRAME(w) && tlb[k * NP + DST] == NONE)
		};
		k = 0
#endif
	};
	/* zap_leaf_table: the range and the CPU bits of a present entry (and
	 * of a PROTNONE one under a lazy flush); the frame of any entry that
	 * has one */
	if
	:: w & PRESENT -> s = pg; e = pg + 1; gcpus = w & CPUMASK
#if DEFERRED && BREAK != 13
	/* a lazy flush: a PROTNONE entry's kept bits may stand for a CPU that
	 * still holds its old translation - range and bits, as for a present one */
	:: (w & HASFRAME) && !(w & PRESENT) -> s = pg; e = pg + 1; gcpus = w & CPUMASK
#endif
	:: else -> s = NP; e = 0
	fi;
	if
	:: w & HASFRAME -> fr = FRAME(w)
	:: else -> fr = NONE
	fi;
	w = 0;
	finish()
}

/* smmu_mprotect of page SRC to PROT_NONE (pgtable.c change_prot_leaf):
 * under the mapping lock gather_init and the compare-and-swap that drops
 * PRESENT and keeps the frame and the CPU bits; the range and the old
 * entry's bits go on the gather (record), no frame. */
inline mprot()
{
	atomic { !mmlock -> mmlock = 1; flush_pending = flush_pending + 1 };
	atomic { w = pte[SRC]; pte[SRC] = w & (255 - PRESENT); mmlock = 0 };
	s = SRC; e = SRC + 1; gcpus = w & CPUMASK; fr = NONE;
	w = 0;
	finish()
}

/* smmu_mremap of page SRC to the empty page DST (remap.c move_pieces):
 * under the mapping lock gather_init, exchange the source with 0, store
 * the value at the destination (KEEP: with or without its CPU bits); the
 * source's range and bits go on the gather, no frame. */
inline move()
{
	atomic { !mmlock -> mmlock = 1; flush_pending = flush_pending + 1 };
	atomic { w = pte[SRC]; pte[SRC] = 0 };
	atomic { pte[DST] = w & KEEP; mmlock = 0; moved = 1 };
	s = SRC; e = SRC + 1; fr = NONE;
#if BREAK == 11
	gcpus = 0;
#else
	gcpus = w & CPUMASK;
#endif
	w = 0;
	finish()
}

proctype Cpu(byte me)
{
	byte p, f, w, s, e, k, i, r, gen, seen_gen, cover, gcpus, fr;
	bool all, ok, any;
	byte nacc = NACC, nqs = NQS;
	bool unmapped = (me >= NINIT || (MOVE && me == SRC)), cycled = !CYCLE;
	bool moving = (MOVE && me == SRC), dunmap = (MOVE && me == DUNMAP);
	bool protecting = (MPROT && me == SRC);

	do
	:: nacc > 0 -> nacc--; access()
	:: nqs > 0 -> nqs--; quiescent()
	:: !unmapped && !protecting -> unmapped = 1; munmap(me)
	:: protecting -> protecting = 0; mprot()
	:: moving -> moving = 0; move()
	:: dunmap && moved && !moving -> dunmap = 0; munmap(DST)
	:: !cycled -> cycled = 1; offline_online()
	:: nacc == 0 && unmapped && !moving && !dunmap -> break
	od;
	/* smmu_cpu_unregister: unlink under cpus_lock, cpu_detach
	 * (urcu_qsbr_unregister_thread), nr_cpus-- under cpus_lock. */
	reg[me] = 1;
	ctr[me] = 0;
	reg[me] = 0
}

#if DEFERRED
/* The call_rcu worker: takes what is queued, waits for a grace period,
 * runs the callbacks (deferred_free_cb frees the frames). */
proctype CallRcu()
{
	byte batch, k, r;
	byte me = NCPU;                          /* no reader */
end_idle:
	do
	:: atomic { cbq != 0 -> batch = cbq; cbq = 0 };
		synchronize();
		atomic {
			for (k : 0 .. NF - 1) {
				if
				:: batch & BIT(k) -> freed[k] = 1
				:: else -> skip
				fi
			};
			k = 0; batch = 0
		}
	od
}
#endif

init
{
	byte c;
	atomic {
		for (c : 0 .. NINIT - 1) {
			pte[c] = PRESENT | HASFRAME | (c << 3)  /* page c -> frame c, no CPU bits */
		};
		for (c : 0 .. NCPU - 1) {
			run Cpu(c)
		};
#if DEFERRED
		run CallRcu()
#endif
	}
}
