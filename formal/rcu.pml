/* SPDX-License-Identifier: MIT */
/*
 * The RCU (liburcu QSBR) shootdown modes (lib/shootdown_rcu.c) as the code
 * implements them, for spin.  README.md maps every step to the C.
 *
 * No signal, no in-access marker: a CPU may hold any translation it filled
 * until its next quiescent state (smmu_quiescent), where it announces the
 * quiescent state and then catches up with the mm's flush generation.  An
 * initiator clears the PTE, advances the generation and then either waits
 * for a grace period before it frees (strict, DEFERRED=0) or hands the
 * frame to call_rcu, whose worker frees it after a grace period
 * (DEFERRED=1; when the backlog is at its bound the initiator waits for a
 * grace period itself: with BOUND=1 the model chooses either way).
 *
 * QSBR as liburcu 0.13 implements it on 64-bit: a grace-period counter gp
 * (never 0), a counter ctr[c] per reader (0: offline); a quiescent state
 * or coming online stores ctr = gp (with full barriers), going offline or
 * unregistering stores 0; synchronize_rcu, under a lock, advances gp and
 * waits until every reader's ctr is gp or 0.  Each of those is one step:
 * a reader that loads gp before the advance and stores it after is, for the
 * writer, a reader that announced before the advance.
 *
 * The world: NP = NINIT pages, page p mapped to frame p; CPU j < NINIT
 * unmaps page j once.  Every CPU makes NACC accesses and NQS quiescent
 * states, may go offline and online once (CYCLE), and unregisters at the
 * end (a QSBR reader must not stay online and silent for ever).
 *
 * Checked: no access goes through a translation to a freed frame
 * (assert), and no deadlock (invalid end states).
 *
 * BREAK=N:
 *   5  smmu_quiescent compares the generation before it announces the
 *      quiescent state (lib/testhook.h rule 5)
 *   6  coming online compares the generation before it announces
 *      (urcu_qsbr_thread_online) - model-only
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
#ifndef BREAK
#define BREAK 0
#endif
#ifndef PROBE
#define PROBE 0              /* reachability probes, as in signal.pml */
#endif
#define REACHED(n, cond) assert(PROBE != (n) || !(cond))

#define NP NINIT
#define NONE 255
#define BIT(c) (1 << (c))

byte pte[NP] = 1;            /* 1: present (CPU bits: unused by RCU modes) */
bool freed[NP];
byte tlb[NCPU * NP] = NONE;  /* tlb[c*NP + p]: frame cached for page p */

byte flush_gen;
byte log_s[NINIT + 1];
byte log_e[NINIT + 1];
byte flush_pending;

/* liburcu QSBR */
byte gp = 1;                 /* gp.ctr (URCU_QSBR_GP_ONLINE at start) */
byte ctr[NCPU] = 1;          /* registered, online: ctr = gp */
bool gp_lock;                /* serializes synchronize_rcu */
byte cbq;                    /* call_rcu queue: pages whose frames wait */

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
 * hit are one step: the lookup is private. */
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
		w = pte[p];                      /* the walk's PTE load */
		if
		:: w -> atomic { tlb[me * NP + p] = p; assert(!freed[p]) }  /* fill, access */
		:: else -> skip                  /* fault: -EFAULT */
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

/* smmu_munmap of page me: zap, then gather_finish -> rcu_flush, then free
 * (strict) or defer_free (deferred). */
inline munmap()
{
	flush_pending = flush_pending + 1;       /* smmu__gather_init */
	atomic { w = pte[me]; pte[me] = 0 };     /* zap: exchange */
	s = me; e = me + 1;
	w = 0;
	all = (flush_pending > 1);               /* gather_finish */
	if
	:: all -> s = 0; e = NP
	:: else -> skip
	fi;
	atomic { gen = flush_gen + 1; log_s[gen] = s; log_e[gen] = e; flush_gen = gen };
	/* rcu_flush: our own TLB */
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
		:: else -> skip
		fi
	};
	gen = 0;
#if DEFERRED
	/* gather_flush -> defer_free: to call_rcu, or, if BOUND lets the
	 * backlog be at its bound, wait for a grace period and free now (the
	 * strict path, which the strict model checks). */
	if
	:: cbq = cbq | BIT(me)
#if BOUND
	:: grace_period(); freed[me] = 1
#endif
	fi;
#else
	grace_period();                          /* strict: wait, then free */
	freed[me] = 1;
#endif
	flush_pending = flush_pending - 1;
	s = 0; e = 0; all = 0
}

proctype Cpu(byte me)
{
	byte p, f, w, s, e, k, i, r, gen, seen_gen, cover;
	bool all, ok;
	byte nacc = NACC, nqs = NQS;
	bool unmapped = (me >= NINIT), cycled = !CYCLE;

	do
	:: nacc > 0 -> nacc--; access()
	:: nqs > 0 -> nqs--; quiescent()
	:: !unmapped -> unmapped = 1; munmap()
	:: !cycled -> cycled = 1; offline_online()
	:: nacc == 0 && unmapped -> break
	od;
	ctr[me] = 0                              /* unregister: no longer a reader */
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
			for (k : 0 .. NP - 1) {
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
		for (c : 0 .. NCPU - 1) {
			run Cpu(c)
		};
#if DEFERRED
		run CallRcu()
#endif
	}
}
