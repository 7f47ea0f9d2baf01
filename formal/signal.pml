/* SPDX-License-Identifier: MIT */
/*
 * The signal shootdown protocol (lib/shootdown_signal.c) as the code
 * implements it, for spin.  README.md maps every step to the C.
 *
 * Processes: a Cpu per registered thread and, beside it, a Handler that
 * stands for that thread's signal handler; optionally Initiator threads
 * that are no CPU (a collector).  A thread and its handler never run at
 * the same time: every step of a thread is T(...) = atomic { !inh[me] ->
 * ... }, so a handler that has started (inh[me] = 1) stops its thread until
 * it returns, while the other threads go on interleaving with the handler's
 * steps - what a real signal does.  A handler can start between any two
 * steps of its thread.
 *
 * Granularity: each step holds exactly one action on shared state (one
 * seq_cst atomic of the C code: a load, store, exchange, compare-and-swap
 * or fetch-add), plus any actions on state private to the thread - its TLB,
 * its locals, its in_access word (shared only with its own handler, which
 * cannot run during the step).  Attaching a private action to the shared
 * step next to it removes only interleavings that no other thread can tell
 * apart; where a step holds more (the log under log_lock, the merged
 * compare-and-swap of a walk) the comment says why it is equivalent.
 *
 * The world: NP = NINIT pages, page p mapped to frame p.  Initiator j
 * unmaps page j once (smmu_munmap: clear the PTE, gather_finish: shootdown,
 * then free frame j); initiators j < NCI are CPUs (CPU j), the others are
 * threads that are no CPU.  Every CPU makes NACC accesses to pages of its
 * choosing and, if CYCLE, may go offline and come back online once.
 *
 * Checked:
 *  - assert: no access goes through a translation to a frame that was
 *    already freed (DESIGN.md section 4, properties 1 and 2: the frame is
 *    freed when munmap returns);
 *  - assert: at most one shootdown signal is queued for a CPU, and an
 *    acknowledgement never passes the request count (cpu.h invariants);
 *  - spin's invalid end states: no deadlock - every initiator gets all of
 *    its acknowledgements and returns.  Every run is finite, so this is
 *    also termination of every munmap.
 *
 * BREAK=N breaks one rule on purpose, so that check.sh shows spin finding
 * the failure (1-4 are lib/testhook.h's rules; 6 and 7 are model-only):
 *   1  the handler flushes and acknowledges inside an access (no deferral)
 *   2  acknowledgements are a plain store, not a maximum
 *   3  the handler reads the mailbox before it clears "signal pending"
 *   4  the initiator reads "signal pending" before it merges its request
 *   6  coming online compares the generation before it stores `online`
 *   7  the end of a deferred access processes before it clears in_access
 */

#ifndef NCPU
#define NCPU 2
#endif
#ifndef NINIT
#define NINIT 2              /* initiators, each unmapping its own page */
#endif
#ifndef NCI
#define NCI NINIT            /* initiators that are CPUs (CPU j unmaps page j) */
#endif
#ifndef NACC
#define NACC 2               /* accesses per CPU */
#endif
#ifndef CYCLE
#define CYCLE 1              /* each CPU may go offline and online once */
#endif
#ifndef BREAK
#define BREAK 0
#endif
/* PROBE=N turns reachability probe N into a failing assertion: check.sh -f
 * asks spin to reach each, so that a pass is not a pass by vacuity. */
#ifndef PROBE
#define PROBE 0
#endif
#define REACHED(n, cond) assert(PROBE != (n) || !(cond))

#define NP NINIT             /* pages, one per initiator; page p -> frame p */
#define NONE 255             /* empty TLB entry; mb_start's "nothing merged" */
#define PRESENT 128          /* PTE: present; bits 0..NCPU-1 are CPU bits */
#define BIT(c) (1 << (c))
#define CPUMASK (BIT(NCPU) - 1)

/* ---- shared state ---------------------------------------------------- */

byte pte[NP] = PRESENT;      /* leaf PTEs: PRESENT | CPU bits, 0 once cleared */
bool freed[NP];              /* frame returned to the pool */
byte tlb[NCPU * NP] = NONE;  /* tlb[c*NP + p]: frame cached for page p, or NONE */

/* struct smmu__cpu, shootdown part (lib/cpu.h) */
byte in_access[NCPU];        /* smmu_cpu.in_access: 0 out, 1 in, +2 deferred */
bool online[NCPU] = 1;
bool loaded[NCPU];           /* in the mm's CPU set */
byte mb_start[NCPU] = NONE;  /* mailbox: merged range [mb_start, mb_end) */
byte mb_end[NCPU];
byte req_seq[NCPU];          /* requests posted */
bool signal_pending[NCPU];
byte ack_seq[NCPU];          /* highest request acknowledged */

/* What the kernel knows of each thread. */
byte ksig[NCPU];             /* signals sent by tgkill, not yet delivered */
bool inh[NCPU + NINIT];      /* the thread's handler is running (no CPU: 0) */

/* struct smmu_mm */
byte flush_gen;
byte log_s[NINIT + 1];       /* log[g]: generation g's range [log_s, log_e) */
byte log_e[NINIT + 1];       /* (SMMU_FLUSH_LOG is 16: never wraps here) */
byte flush_pending;          /* gathers in flight */
byte cpus_lock;              /* mm->cpus_lock: 0 free, else holder + 1 */

/* ---- steps ----------------------------------------------------------- */

/* One step of thread `me`: cannot start while its handler runs. */
#define T(s) atomic { !inh[me] -> s }
/* A blocking step: waits for g; the handler is free to run meanwhile. */
#define TW(g, s) atomic { !inh[me] && (g) -> s }
/* A step of process(), by the thread (h = 0) or its handler (h = 1). */
#define S(h, s) atomic { ((h) || !inh[me]) -> s }

/* flush_range_or_all() of the range [s, e) just taken from the mailbox:
 * nothing if nothing was merged, everything if the take was torn or is
 * inverted (s >= e), else the range. */
inline flush_taken()
{
	if
	:: s == NONE && e == 0 -> skip
	:: else ->
		for (k : 0 .. NP - 1) {
			if
			:: s >= e || (k >= s && k < e) -> tlb[me * NP + k] = NONE
			:: else -> skip
			fi
		};
		k = 0
	fi
}

/* ack(): raise ack_seq to seq as a maximum (what the compare-and-swap
 * loop does), or, broken, store it. */
#if BREAK == 2
#define ACK_STORE ack_seq[me] = seq
#else
#define ACK_STORE if :: seq > ack_seq[me] -> ack_seq[me] = seq :: else -> skip fi
#endif

/* process(): read req_seq first, then take the mailbox with two exchanges
 * (a concurrent merge can tear the take), flush, acknowledge.  ret: the
 * acknowledgement is the handler's last step (it returns). */
inline process(h, ret)
{
	S(h, seq = req_seq[me]);
	S(h, s = mb_start[me]; mb_start[me] = NONE);
	S(h, e = mb_end[me]; mb_end[me] = 0;
	     REACHED(3, (s == NONE) != (e == 0));     /* a torn take */
	     flush_taken());
	S(h, REACHED(4, seq >= ack_seq[me] + 2);  /* one take acks two requests */
	     REACHED(8, seq < ack_seq[me]);       /* an older ack after a newer */
	     ACK_STORE; assert(ack_seq[me] <= req_seq[me]);
	     if
	     :: ret -> inh[me] = 0
	     :: else -> skip
	     fi);
	seq = 0; s = 0; e = 0
}

/* smmu__access_exit(): subtract 1 in one instruction; a non-zero result
 * means a handler deferred a request: smmu__access_exit_slow() stores 0,
 * then processes. */
inline leave()
{
	T(in_access[me] = in_access[me] - 1; deferred = (in_access[me] != 0));
	if
	:: deferred ->
		deferred = 0;
#if BREAK == 7
		process(0, 0);
		T(in_access[me] = 0);
#else
		T(in_access[me] = 0; REACHED(2, 1));  /* an access ends deferred */
		process(0, 0);
#endif
	:: else -> skip
	fi
}

/*
 * smmu_loadN / smmu_storeN of page p: the inline hit path (access.h) or
 * the slow path (fault.c: translate_span -> translate -> walk_fill).
 * Enter and TLB lookup are one step: a handler between them only defers
 * and touches no TLB entry, as it would after the lookup.
 */
inline access()
{
	select(p : 0 .. NP - 1);
	T(in_access[me] = 1; f = tlb[me * NP + p];   /* enter; tag compare, addend */
	  if                                         /* miss: walk_fill joins */
	  :: f == NONE && !loaded[me] -> loaded[me] = 1  /* the CPU set first */
	  :: else -> skip
	  fi);
	if
	:: f != NONE ->
		/* Hit: the load or store through the entry's addend. */
		T(assert(!freed[f]); f = 0);
		leave()
	:: else ->
		assert(online[me]);                  /* translate(): dies if offline */
		/* The seq_cst PTE load and, if our bit is not yet in it, the
		 * compare-and-swap that sets it (with accessed/dirty).  One
		 * step, and so no retry loop: a CAS that fails walks again, so
		 * it reaches what a later load would. */
		T(w = pte[p];
		  if
		  :: (w & PRESENT) && !(w & BIT(me)) -> w = w | BIT(me); pte[p] = w
		  :: else -> skip
		  fi);
		if
		:: !(w & PRESENT) ->
			/* NEED_FAULT: translate() leaves, fault_slow() finds no
			 * mapping (-EFAULT: munmap removed it under the mapping
			 * lock), and the access returns the error.  The
			 * enter/leave pair around the error return is left out:
			 * a handler inside it defers to the leave, which
			 * processes as the handler would have. */
			leave()
		:: else ->
			w = 0;
			/* smmu__tlb_fill, then read_span / write_span through
			 * the host pointer of the walk. */
			T(tlb[me * NP + p] = p; assert(!freed[p]));
			leave()
		fi
	fi;
	p = 0; f = 0
}

/* smmu__tlb_catch_up(): compare flush_gen with seen_gen; if behind, copy
 * the log's records (each checked by its sequence number: a torn or
 * overwritten one makes the CPU flush everything, which only flushes more)
 * and flush them.  One step: the first compare and the reads only make
 * the outcome depend on a later read of the same counter, and the flush
 * is private. */
inline catch_up()
{
	T(gen = flush_gen;
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
				REACHED(6, tlb[me * NP + k] != NONE);  /* catch-up drops an entry */
				tlb[me * NP + k] = NONE
			:: else -> skip
			fi
		};
		seen_gen = gen
	  :: else -> skip
	  fi;
	  k = 0; i = 0; cover = 0; gen = 0)
}

/* smmu_cpu_offline(), then smmu_cpu_online() (cpu.c; cpu_online in
 * shootdown_signal.c).  cpu_offline's futex wake is left out: the model's
 * waits are conditions, not sleeps. */
inline offline_online()
{
	T(online[me] = 0);
#if BREAK == 6
	catch_up();
	T(online[me] = 1);
#else
	T(online[me] = 1);                       /* seq_cst store, then compare */
	catch_up();
#endif
}

/* post(): merge the range into t's mailbox (merge_min, merge_max: two
 * compare-and-swap loops), number the request, then exchange
 * signal_pending and tgkill only if it was 0.  Exchange and tgkill are one
 * step: nothing reads the signal queue but the delivery. */
inline post(t)
{
#if BREAK == 4
	T(was = signal_pending[t]);
#endif
	T(if :: s < mb_start[t] -> mb_start[t] = s :: else -> skip fi);
	T(if :: e > mb_end[t] -> mb_end[t] = e :: else -> skip fi);
	T(req_seq[t] = req_seq[t] + 1; req[t] = req_seq[t]);
#if BREAK == 4
	if
	:: was -> skip
	:: else ->
#endif
	T(if
	  :: !signal_pending[t] ->
		signal_pending[t] = 1;
		REACHED(7, inh[t]);              /* sent while a handler runs */
		ksig[t] = ksig[t] + 1;
		assert(ksig[t] <= 1)
	  :: else -> skip
	  fi)
#if BREAK == 4
	fi;
	was = 0
#endif
}

/*
 * smmu_munmap of page pg by thread me (a CPU if me < NCPU): the zap under
 * the mapping lock, then, with the lock dropped, smmu__gather_finish ->
 * smmu__gather_flush -> smmu__flush_mm -> signal_flush, and the free.  The
 * initiators zap different pages, so the mapping lock that orders their
 * zaps is left out.
 */
inline munmap(pg)
{
	T(flush_pending = flush_pending + 1);   /* smmu__gather_init */
	T(w = pte[pg]; pte[pg] = 0);            /* zap_leaf_table: exchange */
	gcpus = w & CPUMASK;                    /* g->cpus |= smmu__pte_cpus() */
	s = pg; e = pg + 1;                     /* smmu__gather_range */
	w = 0;
	/* gather_finish: another gather in flight may have cleared entries
	 * that this one found empty: flush everything, to every CPU (more
	 * than SMMU_FLUSH_CEILING pages: signal_flush's `full`). */
	T(all = (flush_pending > 1));
	if
	:: all -> s = 0; e = NP; gcpus = CPUMASK
	:: else -> skip
	fi;
	/* smmu__flush_log: record and bump under log_lock, one step (the
	 * catch-up reads both under the same lock). */
	T(gen = flush_gen + 1; log_s[gen] = s; log_e[gen] = e; flush_gen = gen);
	TW(cpus_lock == 0, cpus_lock = me + 1);
	t = NCPU;
	do                                      /* mm->cpus: newest first */
	:: t > 0 ->
		t--;
		if
		:: t != me && (gcpus & BIT(t)) ->
			/* loaded, then online: one step, as `loaded` only
			 * goes from 0 to 1 */
			T(ok = loaded[t] && online[t]);
			if
			:: ok -> ok = 0; post(t)     /* (sd_refs++ first) */
			:: else -> skip
			fi
		:: else -> skip
		fi
	:: else -> break
	od;
	/* Unlock; flush our own TLB (if we are a CPU) while targets work. */
	T(cpus_lock = 0;
	  if
	  :: me < NCPU ->
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
	  :: else -> skip
	  fi);
	/* wait_ack(): until ack_seq reaches the request or the target is
	 * offline.  Waiting on the condition stands for the spin and the
	 * futex sleep (whose timeout makes a lost wake-up only slow). */
	t = NCPU;
	do
	:: t > 0 ->
		t--;
		if
		:: req[t] != 0 ->
			TW(ack_seq[t] >= req[t] || !online[t],
			   REACHED(5, ack_seq[t] < req[t]);  /* released by offline */
			   req[t] = 0)
		:: else -> skip
		fi
	:: else -> break
	od;
	T(freed[pg] = 1);                       /* free_queued: only now */
	T(flush_pending = flush_pending - 1);
	s = 0; e = 0; gcpus = 0; all = 0; gen = 0
}

proctype Cpu(byte me)
{
	byte p, f, w, seq, s, e, k, i, t, gen, seen_gen, cover, gcpus;
	byte req[NCPU];
	bool deferred, all, ok, was;
	byte nacc = NACC;
	bool unmapped = (me >= NCI), cycled = !CYCLE;

	do
	:: nacc > 0 -> nacc--; access()
	:: !unmapped -> unmapped = 1; munmap(me)
	:: !cycled -> cycled = 1; offline_online()
	:: nacc == 0 && unmapped -> break
	od
	/* The thread stays registered and online; its handler still answers. */
}

/* A thread that is no CPU (a collector) unmapping page pg: no TLB, no
 * handler (inh[me] stays 0). */
proctype Initiator(byte me; byte pg)
{
	byte w, s, e, k, t, gen, seen_gen, gcpus;
	byte req[NCPU];
	bool all, ok, was;

	munmap(pg)
}

/*
 * on_signal(), on thread me.  Delivery, the clear of signal_pending and,
 * inside an access, the deferral (in_access 1 -> 3) and the return are one
 * step: only the clear is seen by other threads, and the thread is stopped.
 */
proctype Handler(byte me)
{
	byte seq, s, e, k;
	bool defer;
end_idle:
	do
#if BREAK == 3
	:: atomic { ksig[me] > 0 -> ksig[me] = ksig[me] - 1; inh[me] = 1;
		    defer = (in_access[me] != 0) };
		if
		:: !defer ->
			process(1, 0);           /* reads the mailbox ... */
			S(1, signal_pending[me] = 0; inh[me] = 0)  /* ... clears after */
		:: else ->
			S(1, signal_pending[me] = 0;
			     in_access[me] = in_access[me] | 2; inh[me] = 0)
		fi;
		defer = 0
#elif BREAK == 1
	:: atomic { ksig[me] > 0 -> ksig[me] = ksig[me] - 1; inh[me] = 1;
		    signal_pending[me] = 0 };
		process(1, 1)                    /* even inside an access */
#else
	:: atomic { ksig[me] > 0 -> ksig[me] = ksig[me] - 1; inh[me] = 1;
		    signal_pending[me] = 0;      /* seq_cst: before the mailbox */
		    if
		    :: in_access[me] != 0 ->
			REACHED(1, 1);                /* a handler defers */
			in_access[me] = in_access[me] | 2;
			inh[me] = 0;
			defer = 1
		    :: else -> skip
		    fi };
		if
		:: defer -> defer = 0
		:: else -> process(1, 1)
		fi
#endif
	od
}

init
{
	byte c;
	atomic {
		for (c : 0 .. NCPU - 1) {
			run Handler(c);
			run Cpu(c)
		};
		for (c : NCI .. NINIT - 1) {
			run Initiator(NCPU + c - NCI, c)
		}
	}
}
