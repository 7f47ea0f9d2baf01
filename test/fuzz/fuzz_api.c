/* SPDX-License-Identifier: MIT */
/*
 * fuzz-api: a libFuzzer harness that decodes its input into calls of the
 * public API (<softmmu/softmmu.h> only) on up to two pools, two address
 * spaces and one CPU (the calling thread, switched between the two mms),
 * and checks every result against a reference model written here.
 *
 * The model is the specification, taken from the header comments: it knows
 * nothing of TLBs, page tables, gathers or shootdowns.  An mm is
 *   - a sorted list of mapped ranges [s, e) with a protection and a fault
 *     handler id, adjacent equal ranges merged (what smmu_mm_find reports),
 *   - a set of pages that own a frame: page-sized contents, accessed and
 *     dirty flags (what smmu_test_young / smmu_clear_dirty count); after
 *     smmu_mm_dup the two mms' pages share their contents by count, and a
 *     write gives a page its own copy (a frame from the pool) unless
 *     nothing else shares it any more,
 * and a pool is its number of free frames.  The CPU moves between the mms
 * by smmu_cpu_switch_mm (its TLBs keep both address spaces: no access may
 * ever see the other's) or by unregistering and registering.  Fault
 * handlers (smmu_mmap_handler)
 * are the harness's own, of three kinds the model knows (refuse with an
 * errno; fix: mprotect, translate and fill with a pattern; populate with a
 * zeroed frame); a full-mm notifier checks its brackets and may refuse
 * non-blockable changes.  Every call's return code is
 * compared with the model's (a set of acceptable errnos where the header
 * lists several that apply at once and says nothing of their order), every
 * loaded value, trap and fault-handler call with the model's, the free
 * frames of every pool after every operation, the region list after every
 * mapping change, and at checkpoints (an opcode, and at the end of the
 * input) the whole observable state: regions, which pages are accessed,
 * every frame's contents (through smmu_mm_translate) and, at the end,
 * which are dirty.
 *
 * Where the headers leave a point open the model takes the reading below;
 * each is a choice to revisit if the library's answer changes:
 *  - an access (try_, trapping, atomic, smmu_read / smmu_write) checks its
 *    pages in address order and stops at the first that fails: the pages
 *    before it have been demand-faulted and marked accessed (and dirty for
 *    a write) even though the call fails and copies nothing;
 *  - smmu_mmap(FIXED | POPULATE) over a mapping needs its frames while the
 *    old mapping still holds its own ("with FIXED, the old mapping stays");
 *  - smmu_test_young / smmu_clear_dirty count PROT_NONE pages that keep a
 *    frame.
 *
 * Single-threaded and deterministic: the one CPU is the calling thread; a
 * fault handler or a trap runs on it.  Traps (the smmu_loadN / storeN /
 * atomics forms) go to a trap handler that records the fault and longjmps
 * out, which <softmmu/types.h> allows ("longjmp out").
 *
 * Where the library and the model disagree the harness prints both and
 * aborts, so libFuzzer keeps the input.  Built as fuzz-api (libFuzzer) and
 * fuzz-api-replay (replay.c: a plain main that runs files and directories,
 * as the ctest fuzz-replay does in every build).
 *
 * Input format: a header of 4 bytes (pool 0, pool 1, mm 0, mm 1 setup),
 * then operations, one opcode byte and its arguments each, until the input
 * runs out (missing bytes read as 0).  See decode_* and run_op().
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <softmmu/softmmu.h>

#define RW (SMMU_PROT_READ | SMMU_PROT_WRITE)
#define R SMMU_PROT_READ
#define NONE SMMU_PROT_NONE

#define NPOOL 2
#define NMM 2
#define MAX_OPS 256
#define WINDOW_PAGES 40 /* the small window of page numbers most addresses fall in */

/* Caller-supplied pool regions (smmu_pool_config.region). */
#define REGION_BYTES (256 * 1024)
static _Alignas(4096) unsigned char region_buf[NPOOL][REGION_BYTES];
/* Bulk buffers: up to 4 pages of the largest page size plus slack. */
#define BULK_MAX (4 * 65536 + 128)
static unsigned char bulk_buf[BULK_MAX], bulk_ref[BULK_MAX];

/* ------------------------------------------------------------ input */

struct in {
	const uint8_t *p;
	size_t n;
};

static uint8_t u8(struct in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

static uint64_t u64(struct in *in)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)u8(in) << (8 * i);
	return v;
}

/* ------------------------------------------------------------ the model */

struct mreg {
	uint64_t s, e;
	int prot;
	int hid; /* fault handler id, 0: none */
};

struct mpage {
	uint64_t addr;
	unsigned char *data; /* shared with the pages of other mms that refs counts */
	int *refs;           /* copy-on-write: pages (of any mm) sharing data */
	bool a, d;
};

struct mpool {
	bool live;
	struct smmu_pool *h;
	uint64_t ps;
	size_t nframes, nfree;
};

struct mmm {
	bool live;
	struct smmu_mm *h;
	int pool;
	int mode;
	uint64_t ps, shift, va_limit, min_addr;
	struct mreg *r;
	size_t nr, capr;
	struct mpage *pg;
	size_t npg, cappg;
};

struct mcpu {
	int mm; /* -1: the thread is no CPU */
	struct smmu_cpu *h;
	bool online;
};

/* Fault handlers: the harness's handler functions with their arguments.
 * The model knows what each one does. */
enum htype { H_NONE, H_REFUSE, H_FIX, H_POP };
struct hdesc {
	enum htype type;
	int param; /* H_REFUSE: the errno it fails with; H_FIX: pattern seed */
};
#define NHID 6
static const struct hdesc HD[NHID] = {
	{H_NONE, 0}, {H_REFUSE, -EIO}, {H_REFUSE, -ENOSPC}, {H_FIX, 0x11}, {H_FIX, 0x5a}, {H_POP, 0},
};

/* One fault-handler call, as the library made it or the model expects it. */
struct hcall {
	uint64_t page;
	int kind, error, hid;
};
#define MAX_HCALLS 64

static struct {
	struct mpool pool[NPOOL];
	struct mmm mm[NMM];
	struct mcpu cpu;
	unsigned op;           /* operation number, for messages */
	const char *opname;
	/* fault-handler calls of the current operation */
	struct hcall got[MAX_HCALLS], want[MAX_HCALLS];
	unsigned ngot, nwant;
	unsigned handler_calls; /* calls in a row for handler_page: a retry loop? */
	uint64_t handler_page;
	/* the trap handler's record */
	struct smmu_fault trap;
	int trapped;
} S;

static jmp_buf trap_jb;

/* FUZZ_TRACE set in the environment: print every operation as it runs. */
static int trace = -1;

/*
 * Open library bugs.  By default the harness does not make the calls that
 * trigger them (the fuzzer would rediscover them in every run, and CI must
 * stay green); FUZZ_OPEN_BUGS=1 in the environment makes them, as the
 * fuzz-open-* tests do with their inputs in regressions/open/ (which are
 * expected to fail until the library is fixed).
 *
 * None is open now.  (Fixed: regressions/populate-huge-range-builds-all-
 * tables - smmu_mmap with SMMU_MAP_POPULATE over a range far larger than
 * the pool built every page-table page of the range before it found that
 * the pool could not supply the frames; and lib/ did not compile with
 * clang.)
 */
static int open_bugs = -1;
#define TRACE(...)                                         \
	do {                                               \
		if (trace > 0)                             \
			fprintf(stderr, "  " __VA_ARGS__); \
	} while (0)
#define X(v) ((unsigned long long)(v))

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "\nfuzz-api: MISMATCH at op %u (%s): ", S.op, S.opname ? S.opname : "?");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

#define CHECK(cond, ...)                  \
	do {                              \
		if (!(cond))              \
			fail(__VA_ARGS__); \
	} while (0)

/* Acceptable results: bit e set means -e is fine, bit 0 success. */
typedef uint64_t emask;
#define OK ((emask)1)
#define EM(e) ((emask)1 << (e))

static void expect_rc(const char *what, int got, emask want)
{
	CHECK(got <= 0 && -got < 64 && (want & EM(-got)), "%s returned %d, model wants mask 0x%llx", what, got,
	      (unsigned long long)want);
}

static bool is_err(emask m)
{
	return !(m & OK);
}

/* ---- regions */

static int reg_cmp(const void *a, const void *b)
{
	const struct mreg *x = a, *y = b;
	return x->s < y->s ? -1 : x->s > y->s;
}

static void reg_push(struct mmm *m, struct mreg x)
{
	if (m->nr == m->capr) {
		m->capr = m->capr ? 2 * m->capr : 16;
		m->r = realloc(m->r, m->capr * sizeof(*m->r));
		if (!m->r)
			abort();
	}
	m->r[m->nr++] = x;
}

/* Sort and merge equal neighbours: the canonical form smmu_mm_find shows. */
static void reg_normalize(struct mmm *m)
{
	if (m->nr > 1)
		qsort(m->r, m->nr, sizeof(*m->r), reg_cmp);
	size_t k = 0;
	for (size_t i = 0; i < m->nr; i++) {
		if (k && m->r[k - 1].e == m->r[i].s && m->r[k - 1].prot == m->r[i].prot && m->r[k - 1].hid == m->r[i].hid)
			m->r[k - 1].e = m->r[i].e;
		else
			m->r[k++] = m->r[i];
	}
	m->nr = k;
}

/* Remove [s, e) (prot < 0) or set its protection to prot. */
static void reg_apply(struct mmm *m, uint64_t s, uint64_t e, int prot)
{
	size_t n = m->nr;
	struct mreg *old = malloc((n ? n : 1) * sizeof(*old));
	if (!old)
		abort();
	if (n)
		memcpy(old, m->r, n * sizeof(*old));
	m->nr = 0;
	for (size_t i = 0; i < n; i++) {
		struct mreg r = old[i];
		if (r.e <= s || r.s >= e) {
			reg_push(m, r);
			continue;
		}
		if (r.s < s)
			reg_push(m, (struct mreg){r.s, s, r.prot, r.hid});
		if (r.e > e)
			reg_push(m, (struct mreg){e, r.e, r.prot, r.hid});
		if (prot >= 0)
			reg_push(m, (struct mreg){r.s > s ? r.s : s, r.e < e ? r.e : e, prot, r.hid});
	}
	free(old);
	reg_normalize(m);
}

static const struct mreg *reg_find(const struct mmm *m, uint64_t a)
{
	for (size_t i = 0; i < m->nr; i++)
		if (m->r[i].s <= a && a < m->r[i].e)
			return &m->r[i];
	return NULL;
}

static bool reg_any(const struct mmm *m, uint64_t s, uint64_t e)
{
	for (size_t i = 0; i < m->nr; i++)
		if (m->r[i].s < e && m->r[i].e > s)
			return true;
	return false;
}

static bool reg_covered(const struct mmm *m, uint64_t s, uint64_t e)
{
	uint64_t at = s;
	for (size_t i = 0; i < m->nr && at < e; i++) { /* sorted */
		if (m->r[i].e <= at)
			continue;
		if (m->r[i].s > at)
			return false;
		at = m->r[i].e;
	}
	return at >= e;
}

/* ---- pages that own a frame */

static struct mpage *page_get(struct mmm *m, uint64_t addr)
{
	for (size_t i = 0; i < m->npg; i++)
		if (m->pg[i].addr == addr)
			return &m->pg[i];
	return NULL;
}

static struct mpage *page_add(struct mmm *m, uint64_t addr)
{
	struct mpool *p = &S.pool[m->pool];
	if (p->nfree == 0)
		fail("model: page_add with no free frame");
	p->nfree--;
	if (m->npg == m->cappg) {
		m->cappg = m->cappg ? 2 * m->cappg : 16;
		m->pg = realloc(m->pg, m->cappg * sizeof(*m->pg));
		if (!m->pg)
			abort();
	}
	struct mpage *pg = &m->pg[m->npg++];
	*pg = (struct mpage){.addr = addr, .data = calloc(1, m->ps), .refs = malloc(sizeof(int))};
	if (!pg->data || !pg->refs)
		abort();
	*pg->refs = 1;
	return pg;
}

static void pages_drop(struct mmm *m, uint64_t s, uint64_t e)
{
	for (size_t i = 0; i < m->npg;) {
		if (m->pg[i].addr >= s && m->pg[i].addr < e) {
			if (--*m->pg[i].refs == 0) { /* the last mm to let go frees the frame */
				free(m->pg[i].data);
				free(m->pg[i].refs);
				S.pool[m->pool].nfree++;
			}
			m->pg[i] = m->pg[--m->npg];
		} else {
			i++;
		}
	}
}

static void mm_model_free(struct mmm *m)
{
	pages_drop(m, 0, UINT64_MAX);
	free(m->r);
	free(m->pg);
	*m = (struct mmm){0};
}

/* Range check as the header words it: page-aligned addr, len > 0, rounded
 * end neither wraps nor leaves the address space. */
static bool range_ok(const struct mmm *m, uint64_t addr, uint64_t len, uint64_t *end)
{
	if (addr & (m->ps - 1) || len == 0)
		return false;
	uint64_t rounded = (len + m->ps - 1) & ~(m->ps - 1);
	if (rounded < len || addr + rounded < addr || addr + rounded > m->va_limit)
		return false;
	*end = addr + rounded;
	return true;
}

/* ------------------------------------------------------------ handlers */

enum { K_READ = SMMU_ACCESS_READ, K_WRITE = SMMU_ACCESS_WRITE, K_ATOMIC = SMMU_ACCESS_ATOMIC };

static int need_prot(int kind)
{
	return kind == K_READ ? R : RW;
}

static bool allows(int prot, int kind)
{
	return kind == K_READ ? prot != NONE : prot == RW;
}

static unsigned char pattern(int seed, uint64_t page, unsigned shift, size_t i)
{
	return (unsigned char)(seed + (page >> shift) * 7 + i * 13 + (i >> 8));
}

static int hid_of(const void *arg)
{
	for (int i = 1; i < NHID; i++)
		if (arg == &HD[i])
			return i;
	return -1;
}

/* The real handler: what each HD[] entry does, through the public API. */
static int fuzz_handler(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	const struct hdesc *h = arg;
	struct smmu_mm *mm = smmu_cpu_mm(cpu);
	uint64_t ps = smmu_mm_page_size(mm), page = f->addr & ~(ps - 1);
	if (S.ngot < MAX_HCALLS)
		S.got[S.ngot] = (struct hcall){page, f->kind, f->error, hid_of(arg)};
	S.ngot++;
	/* A retry loop (the model never calls a handler more than 3 times in a
	 * row for one page): fail the access, which the model reports. */
	if (page != S.handler_page)
		S.handler_calls = 0;
	S.handler_page = page;
	if (++S.handler_calls > 16)
		return -ELOOP;
	switch (h->type) {
	case H_REFUSE:
		return h->param;
	case H_FIX: {
		struct smmu_region r;
		int err = smmu_mm_find(mm, page, &r);
		if (err)
			return -ENOTRECOVERABLE;
		if (r.start > page)
			return -ENOTRECOVERABLE; /* not in a mapping: reported as a mismatch */
		if (!allows(r.prot, f->kind) && (err = smmu_mprotect(mm, page, ps, need_prot(f->kind))))
			return err;
		if (f->error == -EFAULT) {
			void *host;
			if ((err = smmu_mm_translate(mm, page, need_prot(f->kind), &host)))
				return err;
			unsigned shift = (unsigned)__builtin_ctzll(ps);
			for (size_t i = 0; i < ps; i++)
				((unsigned char *)host)[i] = pattern(h->param, page, shift, i);
		}
		return 0;
	}
	case H_POP: {
		if (f->error != -EFAULT)
			return -EACCES;
		void *host;
		return smmu_mm_translate(mm, page, need_prot(f->kind), &host);
	}
	case H_NONE:
		break;
	}
	return -ENOTRECOVERABLE;
}

/* A second function for H_POP, so that mappings differ by function too. */
static int fuzz_handler_pop(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	return fuzz_handler(cpu, f, arg);
}

static smmu_fault_handler_fn handler_fn(int hid)
{
	return hid == 0 ? NULL : HD[hid].type == H_POP ? fuzz_handler_pop : fuzz_handler;
}

static void fuzz_trap(struct smmu_cpu *cpu, const struct smmu_fault *f, void *arg)
{
	(void)cpu;
	(void)arg;
	S.trap = *f;
	S.trapped = 1;
	longjmp(trap_jb, 1);
}

/* ------------------------------------------------------------ notifiers */

/*
 * One full-mm subscriber per mm slot.  It checks the bracket it is given
 * (every start that it accepted ends, secondary invalidations only inside
 * one, the mm is its own) and, when told to refuse, refuses ranges that are
 * not blockable: smmu_munmap_ex / smmu_mprotect_ex with SMMU_OP_NONBLOCK
 * must then fail with -EAGAIN and change nothing.  Its young callbacks
 * report nothing, so the young counts stay the page table's.
 */
struct mnotif {
	bool live;   /* registered, handle not yet freed */
	bool orphan; /* its mm was destroyed (release called) */
	bool refuse;
	int mm;
	struct smmu_notifier *h;
	struct smmu_mm *mmh;
	int depth;
	unsigned starts, ends, secondaries, releases, young_calls;
};
static struct mnotif NT[NMM];

static int nt_start(void *arg, const struct smmu_notify_range *r)
{
	struct mnotif *nt = arg;
	nt->starts++;
	if (r->mm != nt->mmh || r->start >= r->end)
		fail("notifier %d: start for mm %p [0x%llx, 0x%llx)", (int)(nt - NT), (void *)r->mm,
		     (unsigned long long)r->start, (unsigned long long)r->end);
	if (nt->refuse && !(r->flags & SMMU_NOTIFY_BLOCKABLE))
		return -EAGAIN;
	nt->depth++;
	return 0;
}

static void nt_secondary(void *arg, const struct smmu_notify_range *r)
{
	struct mnotif *nt = arg;
	nt->secondaries++;
	if (r->mm != nt->mmh || nt->depth <= 0)
		fail("notifier %d: secondary invalidation outside a start/end bracket (depth %d)", (int)(nt - NT),
		     nt->depth);
}

static void nt_end(void *arg, const struct smmu_notify_range *r)
{
	struct mnotif *nt = arg;
	nt->ends++;
	if (r->mm != nt->mmh || --nt->depth < 0)
		fail("notifier %d: end without a start", (int)(nt - NT));
}

static int nt_young(void *arg, struct smmu_mm *mm, smmu_addr_t start, smmu_addr_t end)
{
	struct mnotif *nt = arg;
	nt->young_calls++;
	if (mm != nt->mmh || start >= end)
		fail("notifier %d: young callback for mm %p", (int)(nt - NT), (void *)mm);
	return 0;
}

static void nt_release(void *arg, struct smmu_mm *mm)
{
	struct mnotif *nt = arg;
	nt->releases++;
	if (mm != nt->mmh || nt->releases != 1)
		fail("notifier %d: release #%u", (int)(nt - NT), nt->releases);
}

static const struct smmu_notifier_ops nt_ops = {
	.invalidate_range_start = nt_start,
	.invalidate_secondary_tlbs = nt_secondary,
	.invalidate_range_end = nt_end,
	.clear_young = nt_young,
	.test_young = nt_young,
	.release = nt_release,
};

/* Whether a non-blockable change of mm mi is refused by its subscriber. */
static bool nt_refuses(int mi)
{
	return NT[mi].live && !NT[mi].orphan && NT[mi].refuse;
}

static void check_notifiers(void)
{
	for (int i = 0; i < NMM; i++)
		CHECK(!NT[i].live || NT[i].depth == 0, "notifier %d: %d changes still open after the call", i,
		      NT[i].depth);
}

/* ------------------------------------------------------------ model: access */

static void want_hcall(uint64_t page, int kind, int error, int hid)
{
	if (S.nwant < MAX_HCALLS)
		S.want[S.nwant] = (struct hcall){page, kind, error, hid};
	S.nwant++;
}

/* The model's smmu_mm_translate fault-in (handlers ignored). */
/* A write to a page shared copy-on-write: its own copy (a frame from the
 * pool), or -ENOMEM; a page no longer shared is written in place. */
static int m_own(struct mmm *m, struct mpage *pg)
{
	if (*pg->refs == 1)
		return 0;
	if (S.pool[m->pool].nfree == 0)
		return -ENOMEM;
	S.pool[m->pool].nfree--;
	unsigned char *copy = malloc(m->ps);
	int *refs = malloc(sizeof(int));
	if (!copy || !refs)
		abort();
	memcpy(copy, pg->data, m->ps);
	--*pg->refs;
	pg->data = copy;
	pg->refs = refs;
	*refs = 1;
	return 0;
}

static int m_translate_page(struct mmm *m, uint64_t page, int access, struct mpage **out)
{
	const bool write = access & SMMU_PROT_WRITE;
	const struct mreg *r = reg_find(m, page);
	struct mpage *pg = page_get(m, page);
	if (!pg) {
		if (!r)
			return -EFAULT;
		if (r->prot == NONE || (write && r->prot != RW))
			return -EACCES;
		if (S.pool[m->pool].nfree == 0)
			return -ENOMEM;
		pg = page_add(m, page);
	}
	if (r->prot == NONE || (write && r->prot != RW))
		return -EACCES;
	if (write) {
		int err = m_own(m, pg);
		if (err)
			return err;
	}
	pg->a = true;
	if (write)
		pg->d = true;
	*out = pg;
	return 0;
}

/* What the handler hid does to the model; returns its result. */
static int m_handler(struct mmm *m, int hid, uint64_t page, int kind, int error)
{
	want_hcall(page, kind, error, hid);
	const struct hdesc *h = &HD[hid];
	switch (h->type) {
	case H_REFUSE:
		return h->param;
	case H_FIX: {
		const struct mreg *r = reg_find(m, page);
		if (!r)
			return -ENOTRECOVERABLE;
		if (!allows(r->prot, kind))
			reg_apply(m, page, page + m->ps, need_prot(kind));
		if (error == -EFAULT) {
			struct mpage *pg;
			int err = m_translate_page(m, page, need_prot(kind), &pg);
			if (err)
				return err;
			for (size_t i = 0; i < m->ps; i++)
				pg->data[i] = pattern(h->param, page, (unsigned)m->shift, i);
		}
		return 0;
	}
	case H_POP: {
		if (error != -EFAULT)
			return -EACCES;
		struct mpage *pg;
		return m_translate_page(m, page, need_prot(kind), &pg);
	}
	case H_NONE:
		break;
	}
	return -ENOTRECOVERABLE;
}

/*
 * One page of an access by the CPU: 0 with the page's frame (accessed, and
 * dirty for a write), or the error.  A page that forbids the access or has
 * no frame goes to the mapping's handler if it has one (-EACCES or -EFAULT,
 * restart on 0), else is demand-zeroed if the protection allows the access.
 */
static int m_touch(struct mmm *m, uint64_t page, int kind, struct mpage **out)
{
	for (int loop = 0;; loop++) {
		if (loop > 4)
			fail("model: handler loop at 0x%llx", (unsigned long long)page);
		if (page >= m->va_limit)
			return -EFAULT;
		const struct mreg *r = reg_find(m, page);
		struct mpage *pg = page_get(m, page);
		if (pg && r && allows(r->prot, kind)) {
			if (kind != K_READ) {
				int err = m_own(m, pg);
				if (err)
					return err;
			}
			pg->a = true;
			if (kind != K_READ)
				pg->d = true;
			*out = pg;
			return 0;
		}
		if (!r)
			return -EFAULT;
		if (r->hid) {
			int err = m_handler(m, r->hid, page, kind, pg ? -EACCES : -EFAULT);
			if (err)
				return err;
			continue;
		}
		if (pg || !allows(r->prot, kind))
			return -EACCES;
		if (S.pool[m->pool].nfree == 0)
			return -ENOMEM;
		page_add(m, page);
	}
}

/* An access of size bytes at addr (may cross into the next page).  The
 * pages are looked up again afterwards (a fault may grow the page array). */
static int m_access(struct mmm *m, uint64_t addr, unsigned size, int kind)
{
	if (addr + size < addr)
		return -EFAULT;
	uint64_t page = addr & ~(m->ps - 1), off = addr - page;
	struct mpage *pg;
	int err = m_touch(m, page, kind, &pg);
	if (err || off + size <= m->ps)
		return err;
	return m_touch(m, page + m->ps, kind, &pg);
}

static unsigned char *m_byte(struct mmm *m, uint64_t a)
{
	uint64_t page = a & ~(m->ps - 1);
	struct mpage *pg = page_get(m, page);
	if (!pg)
		fail("model: no frame at 0x%llx after a successful access", (unsigned long long)a);
	return &pg->data[a - page];
}

static uint64_t m_read_val(struct mmm *m, uint64_t addr, unsigned size)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < size; i++)
		v |= (uint64_t)*m_byte(m, addr + i) << (8 * i);
	return v;
}

static void m_write_val(struct mmm *m, uint64_t addr, unsigned size, uint64_t v)
{
	for (unsigned i = 0; i < size; i++)
		*m_byte(m, addr + i) = (unsigned char)(v >> (8 * i));
}

/* ------------------------------------------------------------ comparisons */

static const char *hkind(int k)
{
	return k == K_READ ? "read" : k == K_WRITE ? "write" : "atomic";
}

static void check_hcalls(void)
{
	bool same = S.ngot == S.nwant;
	for (unsigned i = 0; same && i < S.ngot && i < MAX_HCALLS; i++)
		same = S.got[i].page == S.want[i].page && S.got[i].kind == S.want[i].kind &&
		       S.got[i].error == S.want[i].error && S.got[i].hid == S.want[i].hid;
	if (same)
		return;
	fprintf(stderr, "fault-handler calls: library %u, model %u\n", S.ngot, S.nwant);
	for (unsigned i = 0; i < S.ngot && i < MAX_HCALLS; i++)
		fprintf(stderr, "  library: page 0x%llx %s error %d handler %d\n", (unsigned long long)S.got[i].page,
			hkind(S.got[i].kind), S.got[i].error, S.got[i].hid);
	for (unsigned i = 0; i < S.nwant && i < MAX_HCALLS; i++)
		fprintf(stderr, "  model:   page 0x%llx %s error %d handler %d\n", (unsigned long long)S.want[i].page,
			hkind(S.want[i].kind), S.want[i].error, S.want[i].hid);
	fail("fault-handler calls differ");
}

static void check_pools(void)
{
	for (int i = 0; i < NPOOL; i++) {
		struct mpool *p = &S.pool[i];
		if (!p->live)
			continue;
		size_t got = smmu_pool_free_frames(p->h);
		CHECK(got == p->nfree, "pool %d: %zu frames free, model %zu", i, got, p->nfree);
		CHECK(smmu_pool_frames(p->h) == p->nframes, "pool %d: smmu_pool_frames", i);
		CHECK(smmu_pool_page_size(p->h) == p->ps, "pool %d: smmu_pool_page_size", i);
	}
}

static void dump_regions(struct mmm *m)
{
	smmu_addr_t a = 0;
	struct smmu_region r;
	fprintf(stderr, "library regions:\n");
	for (int n = 0; n < 200 && smmu_mm_find(m->h, a, &r) == 0; n++, a = r.end)
		fprintf(stderr, "  [0x%llx, 0x%llx) prot %d flags %d\n", (unsigned long long)r.start,
			(unsigned long long)r.end, r.prot, r.flags);
	fprintf(stderr, "model regions:\n");
	for (size_t i = 0; i < m->nr; i++)
		fprintf(stderr, "  [0x%llx, 0x%llx) prot %d handler %d\n", (unsigned long long)m->r[i].s,
			(unsigned long long)m->r[i].e, m->r[i].prot, m->r[i].hid);
}

static void check_regions(int mi)
{
	struct mmm *m = &S.mm[mi];
	smmu_addr_t a = 0;
	struct smmu_region r;
	size_t i = 0;
	int err;
	while ((err = smmu_mm_find(m->h, a, &r)) == 0) {
		if (i >= m->nr || r.start != m->r[i].s || r.end != m->r[i].e || r.prot != m->r[i].prot || r.flags != 0) {
			dump_regions(m);
			fail("mm %d: region %zu differs", mi, i);
		}
		i++;
		if (r.end <= a) {
			dump_regions(m);
			fail("mm %d: smmu_mm_find(0x%llx) went backwards", mi, (unsigned long long)a);
		}
		a = r.end;
	}
	if (err != -ENOENT || i != m->nr) {
		dump_regions(m);
		fail("mm %d: find ended with %d after %zu regions, model has %zu", mi, err, i, m->nr);
	}
}

/* The whole observable state of mm mi.  Reading contents (translate) marks
 * the pages accessed, in the model too; deep also compares and clears the
 * dirty state. */
static void checkpoint_mm(int mi, bool deep)
{
	struct mmm *m = &S.mm[mi];
	if (!m->live)
		return;
	check_regions(mi);
	size_t young = 0, want_young = 0;
	int err = smmu_test_young(m->h, 0, m->va_limit, &young);
	CHECK(err == 0, "mm %d: test_young over the space: %d", mi, err);
	for (size_t i = 0; i < m->npg; i++)
		want_young += m->pg[i].a;
	CHECK(young == want_young, "mm %d: %zu pages young, model %zu", mi, young, want_young);
	for (size_t i = 0; i < m->npg; i++) {
		struct mpage *pg = &m->pg[i];
		size_t y = 7;
		err = smmu_test_young(m->h, pg->addr, m->ps, &y);
		CHECK(err == 0 && y == pg->a, "mm %d: page 0x%llx young %zu (%d), model %d", mi,
		      (unsigned long long)pg->addr, y, err, pg->a);
		const struct mreg *r = reg_find(m, pg->addr);
		CHECK(r, "model: page 0x%llx has a frame but no mapping", (unsigned long long)pg->addr);
		void *host = NULL;
		err = smmu_mm_translate(m->h, pg->addr, R, &host);
		if (r->prot == NONE) {
			CHECK(err == -EACCES, "mm %d: translate of PROT_NONE page 0x%llx: %d", mi,
			      (unsigned long long)pg->addr, err);
			continue;
		}
		CHECK(err == 0, "mm %d: translate of page 0x%llx: %d", mi, (unsigned long long)pg->addr, err);
		pg->a = true;
		if (memcmp(host, pg->data, m->ps) != 0) {
			size_t k = 0;
			while (((unsigned char *)host)[k] == pg->data[k])
				k++;
			fail("mm %d: page 0x%llx contents differ at +0x%zx: library 0x%02x, model 0x%02x", mi,
			     (unsigned long long)pg->addr, k, ((unsigned char *)host)[k], pg->data[k]);
		}
	}
	if (deep) {
		size_t dirty = 0, want_dirty = 0;
		for (size_t i = 0; i < m->npg; i++) {
			struct mpage *pg = &m->pg[i];
			size_t d = 7;
			err = smmu_clear_dirty(m->h, pg->addr, m->ps, &d);
			CHECK(err == 0 && d == pg->d, "mm %d: page 0x%llx dirty %zu (%d), model %d", mi,
			      (unsigned long long)pg->addr, d, err, pg->d);
			want_dirty += pg->d;
			pg->d = false;
		}
		err = smmu_clear_dirty(m->h, 0, m->va_limit, &dirty);
		CHECK(err == 0 && dirty == 0, "mm %d: %zu pages still dirty (%d) after clearing each (%zu were)", mi,
		      dirty, err, want_dirty);
	}
	check_pools();
}

static void checkpoint(bool deep)
{
	for (int i = 0; i < NMM; i++)
		checkpoint_mm(i, deep);
	check_pools();
}

/* ------------------------------------------------------------ decoding */

static int pick_mm(struct in *in)
{
	return u8(in) & 1;
}

/* Geometry for decoding addresses when the mm is dead: 4 KiB pages. */
static void geometry(int mi, uint64_t *ps, uint64_t *min_addr, uint64_t *va_limit)
{
	struct mmm *m = &S.mm[mi];
	*ps = m->live ? m->ps : 4096;
	*min_addr = m->live ? m->min_addr : 0x10000;
	*va_limit = m->live ? m->va_limit : (uint64_t)1 << 48;
}

static uint64_t decode_addr(struct in *in, int mi)
{
	uint64_t ps, lo, top;
	geometry(mi, &ps, &lo, &top);
	uint8_t b = u8(in), c = u8(in);
	uint64_t a;
	switch (b >> 5) {
	case 5:
		a = top - (uint64_t)(1 + c % 8) * ps;
		break;
	case 6: {
		const uint64_t special[] = {0,
					    ps,
					    lo - ps,
					    lo,
					    top,
					    top + ps,
					    (uint64_t)1 << 63,
					    UINT64_MAX - ps + 1,
					    UINT64_MAX - 7,
					    UINT64_MAX,
					    top - 8,
					    lo - 8,
					    lo + (uint64_t)WINDOW_PAGES * ps,
					    (uint64_t)1 << 47,
					    top - ps,
					    lo + 3 * ps};
		a = special[c % (sizeof(special) / sizeof(special[0]))];
		break;
	}
	case 7:
		if (c < 32)
			return u64(in);
		/* fall through */
	default:
		a = lo + (uint64_t)(c % WINDOW_PAGES) * ps;
		break;
	}
	switch (b & 31) {
	case 24:
		return a + 1;
	case 25:
		return a + ps / 2;
	case 26:
		return a + ps - 1;
	case 27:
		return a + ps - 2;
	case 28:
		return a + ps - 4;
	case 29:
		return a + ps - 8;
	case 30:
		return a + 8 * (c & 7);
	case 31:
		return a + ps - 3;
	default:
		return a;
	}
}

static uint64_t decode_len(struct in *in, int mi)
{
	uint64_t ps, lo, top;
	geometry(mi, &ps, &lo, &top);
	uint8_t b = u8(in);
	uint64_t n = (b & 63) % 20;
	switch (b >> 6) {
	case 0:
	case 1:
		return (n ? n : 1) * ps;
	case 2: {
		uint8_t c = u8(in);
		return n * ps + (c & 0x80 ? -(uint64_t)(c & 0x7f) : (uint64_t)(c & 0x7f));
	}
	default: {
		if (n % 16 == 12)
			return u64(in);
		const uint64_t special[] = {0,
					    SIZE_MAX,
					    SIZE_MAX - ps + 2,
					    top,
					    top - lo,
					    top - lo + ps,
					    (uint64_t)1 << 63,
					    1,
					    ps - 1,
					    ps + 1,
					    (uint64_t)WINDOW_PAGES * ps,
					    (uint64_t)64 * ps,
					    0, /* 12: a raw length, above */
					    (uint64_t)1 << 40,
					    2 * ps,
					    3 * ps};
		return special[n % 16];
	}
	}
}

static int decode_prot(struct in *in)
{
	static const int prots[] = {NONE, R, RW, RW, R, RW, NONE, R, RW, RW, SMMU_PROT_WRITE, 0x4, 0x7, -1, RW | 0x100, 0x8};
	return prots[u8(in) % 16];
}

/* ------------------------------------------------------------ operations */

static int live_cpu_mm(void)
{
	return S.cpu.mm >= 0 && S.cpu.online ? S.cpu.mm : -1;
}

static void op_pool_create(struct in *in, int slot, uint8_t cfgb)
{
	S.opname = "pool_create";
	struct mpool *p = &S.pool[slot];
	if (p->live)
		return;
	uint8_t nb = u8(in);
	static const size_t sizes[] = {4096, 4096, 4096, 8192, 16384, 4096, 65536, 4096};
	size_t ps = sizes[cfgb & 7];
	size_t nframes = 1 + nb % 48;
	if (cfgb & 0x40)
		nframes = 1 + nb % 160;
	struct smmu_pool_config cfg = {.size = nframes * ps, .page_size = ps == 4096 && (cfgb & 8) ? 0 : ps};
	if (cfgb & 0x10)
		cfg.flags |= SMMU_POOL_POISON;
	if ((cfgb & 0x20) && nframes * ps <= REGION_BYTES) {
		memset(region_buf[slot], 0xa5 ^ nb, REGION_BYTES); /* not zero: the library must zero frames */
		cfg.region = region_buf[slot];
	}
	/* Bad configurations, now and then. */
	emask want = OK;
	if ((cfgb & 0x80) && (nb & 7) == 7) {
		switch ((nb >> 3) % 8) {
		case 0:
			cfg.page_size = 4096 + 512;
			break;
		case 1:
			cfg.page_size = 2048;
			break;
		case 2:
			cfg.page_size = (size_t)256 << 20;
			break;
		case 3:
			cfg.flags |= 0x100;
			break;
		case 4:
			cfg.size = ps - 1;
			break;
		case 5:
			cfg.region = region_buf[slot] + 8;
			break;
		case 6:
			cfg.size = ((size_t)UINT32_MAX) * 4096;
			cfg.page_size = 4096;
			break;
		default:
			cfg.size = 0;
			break;
		}
		want = EM(EINVAL);
	}
	struct smmu_pool *h = (struct smmu_pool *)(uintptr_t)0x5e5e;
	int err = smmu_pool_create(&cfg, &h);
	TRACE("pool_create %d: size 0x%zx page_size 0x%zx flags 0x%x region %p -> %d\n", slot, cfg.size, cfg.page_size,
	      cfg.flags, cfg.region, err);
	expect_rc("smmu_pool_create", err, want);
	if (err) {
		CHECK(h == (struct smmu_pool *)(uintptr_t)0x5e5e, "pool_create wrote *out on error");
		return;
	}
	*p = (struct mpool){.live = true, .h = h, .ps = ps, .nframes = nframes, .nfree = nframes};
	check_pools();
}

static void op_pool_destroy(int slot)
{
	S.opname = "pool_destroy";
	struct mpool *p = &S.pool[slot];
	if (!p->live) {
		expect_rc("smmu_pool_destroy(NULL)", smmu_pool_destroy(NULL), EM(EINVAL));
		return;
	}
	bool busy = false;
	for (int i = 0; i < NMM; i++)
		busy |= S.mm[i].live && S.mm[i].pool == slot;
	int err = smmu_pool_destroy(p->h);
	expect_rc("smmu_pool_destroy", err, busy ? EM(EBUSY) : OK);
	if (!err)
		*p = (struct mpool){0};
	check_pools();
}

static void op_mm_create(int slot, uint8_t cfgb)
{
	S.opname = "mm_create";
	struct mmm *m = &S.mm[slot];
	if (m->live)
		return;
	int pi = (cfgb >> 1) & 1;
	struct mpool *p = &S.pool[pi];
	struct smmu_mm_config cfg = {.mode = (cfgb & 1) ? SMMU_SHOOTDOWN_RCU : SMMU_SHOOTDOWN_SIGNAL};
	emask want = p->live ? OK : EM(EINVAL);
	switch ((cfgb >> 2) & 15) {
	case 13:
		cfg.mode = (enum smmu_shootdown_mode)7;
		want = EM(EINVAL);
		break;
	case 14:
		cfg.flags = 0x10;
		want = EM(EINVAL);
		break;
	default:
		break;
	}
	struct smmu_mm *h = (struct smmu_mm *)(uintptr_t)0x5e5e;
	int err;
	if (((cfgb >> 2) & 15) == 15 && cfg.mode == SMMU_SHOOTDOWN_SIGNAL)
		err = smmu_mm_create(p->live ? p->h : NULL, &h);
	else
		err = smmu_mm_create_ex(p->live ? p->h : NULL, &cfg, &h);
	TRACE("mm_create %d: pool %d mode %d flags 0x%x -> %d\n", slot, pi, (int)cfg.mode, cfg.flags, err);
	expect_rc("smmu_mm_create", err, want);
	if (err) {
		CHECK(h == (struct smmu_mm *)(uintptr_t)0x5e5e, "mm_create wrote *out on error");
		return;
	}
	*m = (struct mmm){.live = true, .h = h, .pool = pi, .mode = cfg.mode, .ps = p->ps};
	m->shift = (uint64_t)__builtin_ctzll(p->ps);
	m->va_limit = (uint64_t)1 << (m->shift + 36);
	m->min_addr = p->ps > 0x10000 ? p->ps : 0x10000;
	CHECK(smmu_mm_page_size(h) == p->ps, "smmu_mm_page_size");
	check_regions(slot);
}

static void op_mm_destroy(int slot)
{
	S.opname = "mm_destroy";
	struct mmm *m = &S.mm[slot];
	if (!m->live) {
		expect_rc("smmu_mm_destroy(NULL)", smmu_mm_destroy(NULL), EM(EINVAL));
		return;
	}
	int err = smmu_mm_destroy(m->h);
	expect_rc("smmu_mm_destroy", err, S.cpu.mm == slot ? EM(EBUSY) : OK);
	if (!err) {
		mm_model_free(m);
		if (NT[slot].live) {
			CHECK(NT[slot].releases == 1, "notifier %d: %u releases at mm destroy", slot, NT[slot].releases);
			NT[slot].orphan = true;
		}
	}
	check_pools();
}

/* Duplicate mm slot into the other slot (if that one is free): the model
 * copies regions and pages, the pages sharing their data by count. */
static void op_dup(int slot)
{
	S.opname = "mm_dup";
	struct mmm *p = &S.mm[slot], *c = &S.mm[slot ^ 1];
	struct smmu_mm *h = (struct smmu_mm *)(uintptr_t)0x5e5e;
	if (!p->live) {
		expect_rc("smmu_mm_dup(NULL)", smmu_mm_dup(NULL, &h), EM(EINVAL));
		CHECK(h == (struct smmu_mm *)(uintptr_t)0x5e5e, "mm_dup wrote *child on error");
		return;
	}
	if (c->live)
		return;
	int err = smmu_mm_dup(p->h, &h);
	TRACE("mm_dup %d -> %d: %d\n", slot, slot ^ 1, err);
	expect_rc("smmu_mm_dup", err, OK);
	*c = (struct mmm){.live = true, .h = h, .pool = p->pool, .mode = p->mode, .ps = p->ps, .shift = p->shift,
			  .va_limit = p->va_limit, .min_addr = p->min_addr};
	for (size_t i = 0; i < p->nr; i++)
		reg_push(c, p->r[i]);
	for (size_t i = 0; i < p->npg; i++) {
		if (c->npg == c->cappg) {
			c->cappg = c->cappg ? 2 * c->cappg : 16;
			c->pg = realloc(c->pg, c->cappg * sizeof(*c->pg));
			if (!c->pg)
				abort();
		}
		c->pg[c->npg++] = (struct mpage){.addr = p->pg[i].addr, .data = p->pg[i].data, .refs = p->pg[i].refs};
		++*p->pg[i].refs;
	}
	check_regions(slot ^ 1);
	check_pools();
}

static const struct smmu_cpu_config *decode_cpu_config(uint8_t b, struct smmu_cpu_config *cfg, bool *bad)
{
	*bad = false;
	switch (b % 8) {
	case 0:
	case 1:
		return NULL;
	case 2:
		*cfg = (struct smmu_cpu_config){16, 16, 1}; /* tiny, fixed: many conflict misses; one ASID */
		return cfg;
	case 3:
		*cfg = (struct smmu_cpu_config){16, 64, 2}; /* resizes */
		return cfg;
	case 4:
		*cfg = (struct smmu_cpu_config){32, 0, 0};
		return cfg;
	case 5:
		*cfg = (struct smmu_cpu_config){0, 0, 0};
		return cfg;
	case 6: {
		static const struct smmu_cpu_config bads[] = { { 8, 0, 0 },   { 17, 0, 0 }, { 64, 32, 0 },
							       { 16, 100, 0 }, { 0, 16, 0 }, { SIZE_MAX, 0, 0 },
							       { 0, 0, SMMU_ASIDS_MAX + 1 } };
		*cfg = bads[(b >> 3) % 7];
		*bad = true;
		return cfg;
	}
	default:
		*cfg = (struct smmu_cpu_config){1024, 1024, 0};
		return cfg;
	}
}

static void op_cpu_register(int slot, uint8_t cfgb)
{
	S.opname = "cpu_register";
	struct mmm *m = &S.mm[slot];
	struct smmu_cpu_config cfgv;
	bool bad;
	const struct smmu_cpu_config *cfg = decode_cpu_config(cfgb, &cfgv, &bad);
	emask want = 0;
	if (!m->live || bad)
		want |= EM(EINVAL);
	if (S.cpu.mm >= 0)
		want |= EM(EBUSY);
	if (!want)
		want = OK;
	struct smmu_cpu *h = (struct smmu_cpu *)(uintptr_t)0x5e5e;
	int err = cfg ? smmu_cpu_register_ex(m->live ? m->h : NULL, cfg, &h) : smmu_cpu_register(m->live ? m->h : NULL, &h);
	TRACE("cpu_register mm%d cfg %s -> %d\n", slot, cfg ? "yes" : "default", err);
	expect_rc("smmu_cpu_register_ex", err, want);
	if (err) {
		CHECK(h == (struct smmu_cpu *)(uintptr_t)0x5e5e, "cpu_register wrote *out on error");
		CHECK(smmu_cpu_self() == (S.cpu.mm >= 0 ? S.cpu.h : NULL), "smmu_cpu_self changed by a failed register");
		return;
	}
	S.cpu = (struct mcpu){.mm = slot, .h = h, .online = true};
	CHECK(smmu_cpu_self() == h, "smmu_cpu_self after register");
	CHECK(smmu_cpu_mm(h) == m->h, "smmu_cpu_mm after register");
	expect_rc("smmu_cpu_set_trap_handler", smmu_cpu_set_trap_handler(h, fuzz_trap, NULL), OK);
	check_pools();
}

static void op_cpu_unregister(void)
{
	S.opname = "cpu_unregister";
	if (S.cpu.mm < 0) {
		expect_rc("smmu_cpu_unregister(NULL)", smmu_cpu_unregister(NULL), EM(EINVAL));
		return;
	}
	expect_rc("smmu_cpu_unregister", smmu_cpu_unregister(S.cpu.h), OK);
	S.cpu = (struct mcpu){.mm = -1};
	CHECK(smmu_cpu_self() == NULL, "smmu_cpu_self after unregister");
	check_pools();
}

static int decode_hid(struct in *in, void **arg)
{
	uint8_t b = u8(in);
	int hid = b % 8 < NHID ? b % 8 : 0;
	*arg = hid ? (void *)&HD[hid] : (b & 0x80) ? (void *)&HD[3] : NULL; /* an argument without a handler is dropped */
	return hid;
}

static void op_mmap(struct in *in)
{
	S.opname = "mmap";
	int mi = pick_mm(in);
	struct mmm *m = &S.mm[mi];
	uint64_t addr = decode_addr(in, mi), len = decode_len(in, mi);
	int prot = decode_prot(in);
	uint8_t fb = u8(in);
	int flags = fb & 7;
	if (fb & 0x80)
		flags |= (fb & 0x40) ? 0x8 : (int)0x80000000;
	void *harg;
	int hid = (fb & 0x18) ? 0 : decode_hid(in, &harg);
	if (!hid)
		harg = NULL;
	bool null_out = (fb & 0x38) == 0x38;

	emask want = 0;
	const bool fixed = flags & (SMMU_MAP_FIXED | SMMU_MAP_FIXED_NOREPLACE);
	uint64_t rounded = 0, end = 0, start = 0;
	if (!m->live || null_out || len == 0 || !(prot == NONE || prot == R || prot == RW) ||
	    (flags & ~(SMMU_MAP_FIXED | SMMU_MAP_FIXED_NOREPLACE | SMMU_MAP_POPULATE)) ||
	    ((flags & SMMU_MAP_FIXED) && (flags & SMMU_MAP_FIXED_NOREPLACE)))
		want |= EM(EINVAL);
	if (!want) {
		rounded = (len + m->ps - 1) & ~(m->ps - 1);
		if (rounded < len || rounded > m->va_limit - m->min_addr)
			want |= fixed ? EM(EINVAL) : EM(EINVAL) | EM(ENOMEM);
		else if (fixed && (!range_ok(m, addr, len, &end) || addr < m->min_addr))
			want |= EM(EINVAL);
	}
	const bool populate = (flags & SMMU_MAP_POPULATE) && prot != NONE;
	if (!want) {
		if (fixed) {
			start = addr;
			if ((flags & SMMU_MAP_FIXED_NOREPLACE) && reg_any(m, start, end))
				want |= EM(EEXIST);
		} else {
			/* The lowest free range at or above the hint (rounded up to
			 * a page; below 64 KiB or outside the space: 64 KiB), else
			 * the lowest one at all. */
			uint64_t hint = (addr + m->ps - 1) & ~(m->ps - 1);
			if (hint < addr || hint < m->min_addr || hint >= m->va_limit)
				hint = m->min_addr;
			bool found = false;
			for (int pass = 0; pass < 2 && !found; pass++) {
				uint64_t at = pass ? m->min_addr : hint;
				for (size_t i = 0; i < m->nr; i++) {
					if (m->r[i].e <= at)
						continue;
					if (m->r[i].s >= at && m->r[i].s - at >= rounded)
						break;
					at = m->r[i].e;
				}
				if (at < m->va_limit && m->va_limit - at >= rounded) {
					found = true;
					start = at;
				}
			}
			if (!found)
				want |= EM(ENOMEM);
			end = start + rounded;
		}
		if (populate && S.pool[m->pool].nfree < rounded / m->ps)
			want |= EM(ENOMEM);
	}
	if (!want)
		want = OK;

	smmu_addr_t out = 0x5e5e;
	TRACE("mmap mm%d 0x%llx len 0x%llx prot %d flags 0x%x handler %d ...\n", mi, X(addr), X(len), prot, flags, hid);
	int err = !hid && !(fb & 0x20) ? smmu_mmap(m->live ? m->h : NULL, addr, len, prot, flags, null_out ? NULL : &out)
				       : smmu_mmap_handler(m->live ? m->h : NULL, addr, len, prot, flags, handler_fn(hid),
							   harg, null_out ? NULL : &out);
	TRACE("mmap mm%d 0x%llx len 0x%llx prot %d flags 0x%x handler %d -> %d at 0x%llx\n", mi, X(addr), X(len), prot,
	      flags, hid, err, X(out));
	expect_rc("smmu_mmap", err, want);
	if (err) {
		CHECK(out == 0x5e5e, "mmap wrote *out on error");
	} else {
		CHECK(out == start, "mmap placed at 0x%llx, model 0x%llx (hint 0x%llx, len 0x%llx)",
		      (unsigned long long)out, (unsigned long long)start, (unsigned long long)addr,
		      (unsigned long long)len);
		pages_drop(m, start, end);
		reg_apply(m, start, end, -1);
		reg_push(m, (struct mreg){start, end, prot, hid});
		reg_normalize(m);
		if (populate)
			for (uint64_t a = start; a < end; a += m->ps)
				page_add(m, a);
	}
	if (m->live)
		check_regions(mi);
	check_pools();
}

static void op_munmap(struct in *in)
{
	S.opname = "munmap";
	int mi = pick_mm(in);
	struct mmm *m = &S.mm[mi];
	uint64_t addr = decode_addr(in, mi), len = decode_len(in, mi), end = 0;
	uint8_t f = u8(in);
	unsigned flags = f & 1 ? SMMU_OP_NONBLOCK : 0;
	if ((f & 6) == 6)
		flags |= 0x10;
	emask want = !m->live || !range_ok(m, addr, len, &end) || (flags & 0x10) ? EM(EINVAL) : OK;
	if (!is_err(want) && (f & 7) && (flags & SMMU_OP_NONBLOCK) && nt_refuses(mi))
		want = EM(EAGAIN);
	int err = (f & 7) == 0 ? smmu_munmap(m->live ? m->h : NULL, addr, len)
			       : smmu_munmap_ex(m->live ? m->h : NULL, addr, len, flags);
	TRACE("munmap mm%d 0x%llx len 0x%llx flags 0x%x -> %d\n", mi, X(addr), X(len), (f & 7) ? flags : 0, err);
	expect_rc("smmu_munmap", err, want);
	if (!err) {
		pages_drop(m, addr, end);
		reg_apply(m, addr, end, -1);
	}
	if (m->live)
		check_regions(mi);
	check_pools();
}

static void op_mprotect(struct in *in)
{
	S.opname = "mprotect";
	int mi = pick_mm(in);
	struct mmm *m = &S.mm[mi];
	uint64_t addr = decode_addr(in, mi), len = decode_len(in, mi), end = 0;
	int prot = decode_prot(in);
	uint8_t f = u8(in);
	unsigned flags = f & 1 ? SMMU_OP_NONBLOCK : 0;
	if ((f & 6) == 6)
		flags |= 0x10;
	emask want = 0;
	if (!m->live || !(prot == NONE || prot == R || prot == RW) || (flags & 0x10))
		want = EM(EINVAL);
	else if (!range_ok(m, addr, len, &end)) {
		/* A range past the end of the space: invalid, or not mapped. */
		want = EM(EINVAL);
		if (!(addr & (m->ps - 1)) && len && addr + len > addr)
			want |= EM(ENOMEM);
	} else if (!reg_covered(m, addr, end))
		want = EM(ENOMEM);
	else if ((f & 7) && (flags & SMMU_OP_NONBLOCK) && nt_refuses(mi))
		want = EM(EAGAIN);
	else
		want = OK;
	int err = (f & 7) == 0 ? smmu_mprotect(m->live ? m->h : NULL, addr, len, prot)
			       : smmu_mprotect_ex(m->live ? m->h : NULL, addr, len, prot, flags);
	TRACE("mprotect mm%d 0x%llx len 0x%llx prot %d -> %d\n", mi, X(addr), X(len), prot, err);
	expect_rc("smmu_mprotect", err, want);
	if (!err)
		reg_apply(m, addr, end, prot);
	if (m->live)
		check_regions(mi);
	check_pools();
}

/* smmu_mremap (with or without SMMU_MREMAP_DONTUNMAP, or an unknown
 * flag), smmu_mremap_batch, or with leave smmu_mremap_batch_leave. */
static void op_mremap(struct in *in, bool batch, bool leave)
{
	S.opname = !batch ? "mremap" : leave ? "mremap_batch_leave" : "mremap_batch";
	int mi = pick_mm(in);
	struct mmm *m = &S.mm[mi];
	struct smmu_remap mv[4];
	size_t n = 1;
	uint8_t nb = batch ? u8(in) : 0;
	if (batch)
		n = nb % 5;
	for (size_t i = 0; i < n; i++) {
		mv[i].from = decode_addr(in, mi);
		mv[i].to = decode_addr(in, mi);
		mv[i].len = decode_len(in, mi);
	}
	unsigned flags = 0;
	if (!batch) {
		uint8_t fb = u8(in);
		flags = (fb & 0xf0) == 0xf0 ? 2u | (fb & 1) : (fb & 0x0f) == 0x0f ? SMMU_MREMAP_DONTUNMAP : 0;
	}
	bool null_moves = batch && (nb & 0xf8) == 0xf8;
	struct smmu_remap_leave lv = {0};
	bool null_leave = false;
	int leave_hid = 0;
	if (leave) {
		null_leave = (u8(in) & 0xf0) == 0xf0;
		lv.prot = decode_prot(in);
		leave_hid = decode_hid(in, &lv.handler_arg);
		lv.handler = handler_fn(leave_hid);
	}

	emask want = 0;
	uint64_t ends[4] = {0};
	if (!m->live || (flags & ~(unsigned)SMMU_MREMAP_DONTUNMAP) || (null_moves && n))
		want |= EM(EINVAL);
	if (leave && (null_leave || !(lv.prot == NONE || lv.prot == R || lv.prot == RW)))
		want |= EM(EINVAL);
	for (size_t i = 0; i < n && !want; i++) {
		uint64_t to_end;
		if (!range_ok(m, mv[i].from, mv[i].len, &ends[i]) || !range_ok(m, mv[i].to, mv[i].len, &to_end) ||
		    mv[i].to < m->min_addr)
			want |= EM(EINVAL);
	}
	for (size_t i = 0; i < 2 * n && !want; i++) {
		for (size_t j = i + 1; j < 2 * n; j++) {
			uint64_t si = i & 1 ? mv[i / 2].to : mv[i / 2].from, ei = si + (ends[i / 2] - mv[i / 2].from);
			uint64_t sj = j & 1 ? mv[j / 2].to : mv[j / 2].from, ej = sj + (ends[j / 2] - mv[j / 2].from);
			if (si < ej && sj < ei)
				want |= EM(EINVAL);
		}
	}
	if (!want) {
		for (size_t i = 0; i < n; i++) {
			if (!reg_covered(m, mv[i].from, ends[i]))
				want |= EM(EFAULT);
			if (reg_any(m, mv[i].to, mv[i].to + (ends[i] - mv[i].from)))
				want |= EM(EEXIST);
		}
	}
	if (!want)
		want = OK;
	int err;
	if (batch && leave)
		err = smmu_mremap_batch_leave(m->live ? m->h : NULL, null_moves ? NULL : mv, n, null_leave ? NULL : &lv);
	else if (batch)
		err = smmu_mremap_batch(m->live ? m->h : NULL, null_moves ? NULL : mv, n);
	else
		err = smmu_mremap(m->live ? m->h : NULL, mv[0].from, mv[0].len, mv[0].to, flags);
	if (leave)
		TRACE("%s mm%d n %zu leave %s prot %d handler %d -> %d\n", S.opname, mi, n, null_leave ? "NULL" : "",
		      lv.prot, leave_hid, err);
	else
		TRACE("%s mm%d n %zu flags 0x%x -> %d\n", S.opname, mi, n, flags, err);
	for (size_t i = 0; i < n; i++)
		TRACE("    0x%llx -> 0x%llx len 0x%llx\n", X(mv[i].from), X(mv[i].to), X(mv[i].len));
	expect_rc(S.opname, err, want);
	if (!err) {
		for (size_t i = 0; i < n; i++) {
			uint64_t from = mv[i].from, end = ends[i], to = mv[i].to;
			for (size_t k = 0; k < m->npg; k++)
				if (m->pg[k].addr >= from && m->pg[k].addr < end)
					m->pg[k].addr = m->pg[k].addr - from + to;
			size_t nr = m->nr;
			for (size_t k = 0; k < nr; k++) {
				struct mreg r = m->r[k];
				if (r.e <= from || r.s >= end)
					continue;
				uint64_t s = r.s > from ? r.s : from, e = r.e < end ? r.e : end;
				reg_push(m, (struct mreg){to + (s - from), to + (e - from), r.prot, r.hid});
			}
			/* the pushed copies lie in the destination, outside [from, end) */
			if (!(flags & SMMU_MREMAP_DONTUNMAP))
				reg_apply(m, from, end, -1);
			if (leave)
				reg_push(m, (struct mreg){from, end, lv.prot, leave_hid});
			reg_normalize(m); /* sorted and merged, whatever stayed at the source */
		}
	}
	if (m->live)
		check_regions(mi);
	check_pools();
}

/* The access operations use the CPU's mm; none while the thread is no CPU
 * or is offline (an access while offline is a usage error that aborts). */

static void begin_access(void)
{
	S.ngot = S.nwant = 0;
	S.handler_calls = 0;
	S.handler_page = UINT64_MAX;
	S.trapped = 0;
}

static void op_try_access(struct in *in, bool store)
{
	S.opname = store ? "try_store" : "try_load";
	int mi = live_cpu_mm();
	if (mi < 0)
		return;
	struct mmm *m = &S.mm[mi];
	unsigned size = 1u << (u8(in) & 3);
	uint64_t addr = decode_addr(in, mi);
	uint64_t val = u64(in);
	struct smmu_cpu *cpu = S.cpu.h;
	begin_access();
	int want = m_access(m, addr, size, store ? K_WRITE : K_READ);
	uint64_t wantv = 0;
	if (!want) {
		if (store)
			m_write_val(m, addr, size, val);
		else
			wantv = m_read_val(m, addr, size);
	}
	int err;
	uint64_t got = 0x1234567890abcdefull;
	if (store) {
		switch (size) {
		case 1:
			err = smmu_try_store8(cpu, addr, (uint8_t)val);
			break;
		case 2:
			err = smmu_try_store16(cpu, addr, (uint16_t)val);
			break;
		case 4:
			err = smmu_try_store32(cpu, addr, (uint32_t)val);
			break;
		default:
			err = smmu_try_store64(cpu, addr, val);
			break;
		}
	} else {
		uint8_t v8 = 0xee;
		uint16_t v16 = 0xeeee;
		uint32_t v32 = 0xeeeeeeee;
		uint64_t v64 = 0xeeeeeeeeeeeeeeeeull;
		switch (size) {
		case 1:
			err = smmu_try_load8(cpu, addr, &v8);
			got = v8;
			break;
		case 2:
			err = smmu_try_load16(cpu, addr, &v16);
			got = v16;
			break;
		case 4:
			err = smmu_try_load32(cpu, addr, &v32);
			got = v32;
			break;
		default:
			err = smmu_try_load64(cpu, addr, &v64);
			got = v64;
			break;
		}
		if (err)
			CHECK(got == (0xeeeeeeeeeeeeeeeeull >> (64 - 8 * size)), "try_load%u wrote *out on error %d",
			      8 * size, err);
	}
	TRACE("%s%u 0x%llx val 0x%llx -> %d\n", S.opname, 8 * size, X(addr), X(store ? val : got), err);
	check_hcalls();
	CHECK(err == want, "%s%u at 0x%llx returned %d, model %d", S.opname, 8 * size, (unsigned long long)addr, err,
	      want);
	if (!store && !err)
		CHECK(got == wantv, "try_load%u at 0x%llx = 0x%llx, model 0x%llx", 8 * size, (unsigned long long)addr,
		      (unsigned long long)got, (unsigned long long)wantv);
	check_pools();
}

/* The try_ atomics: cmpxchg, fetch_add, xchg; an error leaves memory and
 * *old as they were. */
static void op_try_atomic(struct in *in)
{
	S.opname = "try_atomic";
	int mi = live_cpu_mm();
	if (mi < 0)
		return;
	struct mmm *m = &S.mm[mi];
	int what = u8(in) % 3; /* cmpxchg, fetch_add, xchg */
	uint64_t addr = decode_addr(in, mi);
	uint64_t a = u64(in), c = u64(in);
	struct smmu_cpu *cpu = S.cpu.h;
	begin_access();
	int want = (addr & 7) ? -EINVAL : m_access(m, addr, 8, K_ATOMIC);
	uint64_t wantv = 0;
	if (!want) {
		wantv = m_read_val(m, addr, 8);
		if (what == 0 && wantv == a)
			m_write_val(m, addr, 8, c);
		else if (what == 1)
			m_write_val(m, addr, 8, wantv + a);
		else if (what == 2)
			m_write_val(m, addr, 8, a);
	}
	uint64_t old = 0xeeeeeeeeeeeeeeeeull;
	int err = what == 0   ? smmu_try_cmpxchg64(cpu, addr, a, c, &old)
		  : what == 1 ? smmu_try_fetch_add64(cpu, addr, a, &old)
			      : smmu_try_xchg64(cpu, addr, a, &old);
	TRACE("try_atomic %d 0x%llx a 0x%llx c 0x%llx -> %d old 0x%llx\n", what, X(addr), X(a), X(c), err, X(old));
	check_hcalls();
	CHECK(err == want, "try_atomic %d at 0x%llx returned %d, model %d", what, (unsigned long long)addr, err, want);
	if (err)
		CHECK(old == 0xeeeeeeeeeeeeeeeeull, "try_atomic %d wrote *old on error %d", what, err);
	else
		CHECK(old == wantv, "try_atomic %d at 0x%llx gave 0x%llx, model 0x%llx", what, (unsigned long long)addr,
		      (unsigned long long)old, (unsigned long long)wantv);
	check_pools();
}

/* One trapping access (what * 4 + log2 size); a trap longjmps back here
 * and leaves S.trapped set.  Its own frame: nothing of the caller's lives
 * across the setjmp. */
static __attribute__((noinline)) uint64_t trapping(struct smmu_cpu *cpu, int which, uint64_t addr, uint64_t a,
						   uint64_t c)
{
	static volatile uint64_t got;
	static struct smmu_cpu *volatile vcpu;
	static volatile int vwhich;
	static volatile uint64_t vaddr, va, vc;
	got = 0;
	vcpu = cpu;
	vwhich = which;
	vaddr = addr;
	va = a;
	vc = c;
	if (setjmp(trap_jb) == 0) {
		switch (vwhich) {
		case 0:
			got = smmu_load8(vcpu, vaddr);
			break;
		case 1:
			got = smmu_load16(vcpu, vaddr);
			break;
		case 2:
			got = smmu_load32(vcpu, vaddr);
			break;
		case 3:
			got = smmu_load64(vcpu, vaddr);
			break;
		case 4:
			smmu_store8(vcpu, vaddr, (uint8_t)va);
			break;
		case 5:
			smmu_store16(vcpu, vaddr, (uint16_t)va);
			break;
		case 6:
			smmu_store32(vcpu, vaddr, (uint32_t)va);
			break;
		case 7:
			smmu_store64(vcpu, vaddr, va);
			break;
		case 11:
			got = smmu_cmpxchg64(vcpu, vaddr, va, vc);
			break;
		case 15:
			got = smmu_fetch_add64(vcpu, vaddr, va);
			break;
		case 19:
			got = smmu_xchg64(vcpu, vaddr, va);
			break;
		default:
			abort();
		}
	}
	return got;
}

/* The trapping forms and the atomics: a fault reaches fuzz_trap, which
 * longjmps back here. */
static void op_trap_access(struct in *in)
{
	S.opname = "trapping access";
	int mi = live_cpu_mm();
	if (mi < 0)
		return;
	struct mmm *m = &S.mm[mi];
	uint8_t b = u8(in);
	unsigned size = 1u << (b & 3);
	int what = (b >> 2) % 5; /* load, store, cmpxchg, fetch_add, xchg */
	uint64_t addr = decode_addr(in, mi);
	uint64_t a = u64(in), c = (b & 0x80) ? u64(in) : 0;
	if (what >= 2)
		size = 8;
	int kind = what == 0 ? K_READ : what == 1 ? K_WRITE : K_ATOMIC;
	struct smmu_cpu *cpu = S.cpu.h;
	begin_access();

	/* model */
	int want = (kind == K_ATOMIC && (addr & 7)) ? -EINVAL : m_access(m, addr, size, kind);
	uint64_t wantv = 0;
	if (!want) {
		wantv = m_read_val(m, addr, size);
		switch (what) {
		case 1:
		case 4:
			m_write_val(m, addr, size, a);
			break;
		case 2:
			if (wantv == a)
				m_write_val(m, addr, size, c);
			break;
		case 3:
			m_write_val(m, addr, size, wantv + a);
			break;
		}
	}

	uint64_t got = trapping(cpu, what * 4 + (size == 1 ? 0 : size == 2 ? 1 : size == 4 ? 2 : 3), addr, a, c);
	TRACE("trapping %d size %u 0x%llx a 0x%llx c 0x%llx -> got 0x%llx trapped %d error %d\n", what, size, X(addr),
	      X(a), X(c), X(got), S.trapped, S.trap.error);
	check_hcalls();
	if (want) {
		CHECK(S.trapped, "access at 0x%llx did not trap, model error %d", (unsigned long long)addr, want);
		CHECK(S.trap.addr == addr && S.trap.size == size && (int)S.trap.kind == kind && S.trap.error == want &&
			      S.trap.cpu_id == smmu_cpu_id(cpu),
		      "trap {addr 0x%llx size %zu kind %d error %d cpu %u}, model {0x%llx %u %d %d %u}",
		      (unsigned long long)S.trap.addr, S.trap.size, S.trap.kind, S.trap.error, S.trap.cpu_id,
		      (unsigned long long)addr, size, kind, want, smmu_cpu_id(cpu));
	} else {
		CHECK(!S.trapped, "access at 0x%llx trapped with %d, model none", (unsigned long long)addr,
		      S.trap.error);
		if (what != 1)
			CHECK(got == wantv, "access %d at 0x%llx returned 0x%llx, model 0x%llx", what,
			      (unsigned long long)addr, (unsigned long long)got, (unsigned long long)wantv);
	}
	check_pools();
}

static void op_bulk(struct in *in, bool write)
{
	S.opname = write ? "smmu_write" : "smmu_read";
	int mi = live_cpu_mm();
	if (mi < 0)
		return;
	struct mmm *m = &S.mm[mi];
	uint64_t addr = decode_addr(in, mi);
	uint8_t lb = u8(in);
	uint64_t len;
	switch (lb >> 6) {
	case 0:
		len = lb & 63;
		break;
	case 1:
		len = (lb & 63) * 64 + 7;
		break;
	case 2:
		len = ((lb & 3) + 1) * m->ps - (lb >> 2 & 15);
		break;
	default:
		len = (lb & 1) ? SIZE_MAX : (lb & 2) ? ((uint64_t)1 << 48) : 2 * m->ps + 1;
		break;
	}
	bool null_buf = (lb & 0xfc) == 0xfc;
	uint8_t seed = u8(in);
	bool fits = len <= BULK_MAX - 64;
	size_t span = fits ? (size_t)len + 64 : BULK_MAX; /* what must match: the copy and past it */
	for (size_t i = 0; i < span; i++)
		bulk_buf[i] = (unsigned char)(seed + i * 31);
	memcpy(bulk_ref, bulk_buf, span);
	begin_access();

	/* model */
	int want = 0;
	if (len == 0)
		want = 0;
	else if (null_buf || addr + len < addr)
		want = -EINVAL;
	else {
		for (uint64_t p = addr & ~(m->ps - 1); p < addr + len; p += m->ps) {
			struct mpage *pg;
			if ((want = m_touch(m, p, write ? K_WRITE : K_READ, &pg)))
				break;
			if (p + m->ps < p)
				break;
		}
	}
	if (!want && len && !fits)
		fail("harness: a bulk length of 0x%llx succeeded in the model", X(len)); /* the pool is far smaller */
	for (uint64_t done = 0; !want && done < len;) {
		uint64_t a = addr + done, page = a & ~(m->ps - 1), n = m->ps - (a - page);
		if (n > len - done)
			n = len - done;
		unsigned char *p = m_byte(m, a);
		if (write)
			memcpy(p, bulk_buf + done, n);
		else
			memcpy(bulk_ref + done, p, n);
		done += n;
	}
	int err = write ? smmu_write(S.cpu.h, addr, null_buf ? NULL : bulk_buf, (size_t)len)
			: smmu_read(S.cpu.h, addr, null_buf ? NULL : bulk_buf, (size_t)len);
	TRACE("%s 0x%llx len 0x%llx%s -> %d\n", S.opname, X(addr), X(len), null_buf ? " NULL" : "", err);
	check_hcalls();
	CHECK(err == want, "%s(0x%llx, len 0x%llx) returned %d, model %d", S.opname, (unsigned long long)addr,
	      (unsigned long long)len, err, want);
	if (memcmp(bulk_buf, bulk_ref, span) != 0) {
		size_t k = 0;
		while (bulk_buf[k] == bulk_ref[k])
			k++;
		fail("%s(0x%llx, len 0x%llx) -> %d: buffer byte %zu is 0x%02x, model 0x%02x", S.opname,
		     (unsigned long long)addr, (unsigned long long)len, err, k, bulk_buf[k], bulk_ref[k]);
	}
	check_pools();
}

static void op_translate(struct in *in)
{
	S.opname = "mm_translate";
	int mi = pick_mm(in);
	struct mmm *m = &S.mm[mi];
	uint64_t addr = decode_addr(in, mi);
	uint8_t b = u8(in);
	int access = (b & 3) == 0 ? R : (b & 3) == 1 ? RW : (b & 3) == 2 ? R : ((b & 4) ? NONE : SMMU_PROT_WRITE);
	uint64_t val = u64(in);
	bool null_host = (b & 0xf8) == 0xf8;
	int want;
	struct mpage *pg = NULL;
	if (!m->live || null_host || addr >= m->va_limit || !(access == R || access == RW))
		want = -EINVAL;
	else
		want = m_translate_page(m, addr & ~(m->ps - 1), access, &pg);
	void *host = (void *)(uintptr_t)0x5e5e;
	int err = smmu_mm_translate(m->live ? m->h : NULL, addr, access, null_host ? NULL : &host);
	TRACE("translate mm%d 0x%llx access %d -> %d\n", mi, X(addr), access, err);
	CHECK(err == want, "translate(0x%llx, %d) returned %d, model %d", (unsigned long long)addr, access, err, want);
	if (err) {
		CHECK(host == (void *)(uintptr_t)0x5e5e, "translate wrote *host on error");
	} else {
		uint64_t off = addr & (m->ps - 1);
		size_t n = m->ps - off < 8 ? (size_t)(m->ps - off) : 8;
		CHECK(memcmp(host, pg->data + off, n) == 0, "translate(0x%llx): host bytes differ from the model",
		      (unsigned long long)addr);
		if (access == RW && (b & 0x10)) { /* a secondary TLB writes through it */
			memcpy(host, &val, n);
			memcpy(pg->data + off, &val, n);
		}
	}
	check_pools();
}

static void op_young_dirty(struct in *in)
{
	int mi = pick_mm(in);
	struct mmm *m = &S.mm[mi];
	uint64_t addr = decode_addr(in, mi), len = decode_len(in, mi), end = 0;
	uint8_t b = u8(in);
	int what = b % 3; /* test_young, test_and_clear_young, clear_dirty */
	bool null_out = (b & 0xf0) == 0xf0;
	S.opname = what == 0 ? "test_young" : what == 1 ? "test_and_clear_young" : "clear_dirty";
	emask want = !m->live || !range_ok(m, addr, len, &end) || (null_out && what < 2) ? EM(EINVAL) : OK;
	size_t n = 0;
	if (!is_err(want))
		for (size_t i = 0; i < m->npg; i++) {
			struct mpage *pg = &m->pg[i];
			if (pg->addr < addr || pg->addr >= end)
				continue;
			if (what < 2) {
				n += pg->a;
				if (what == 1)
					pg->a = false;
			} else {
				n += pg->d;
				pg->d = false;
			}
		}
	size_t got = 0x5e5e;
	struct smmu_mm *h = m->live ? m->h : NULL;
	int err = what == 0   ? smmu_test_young(h, addr, len, null_out ? NULL : &got)
		  : what == 1 ? smmu_test_and_clear_young(h, addr, len, null_out ? NULL : &got)
			      : smmu_clear_dirty(h, addr, len, null_out ? NULL : &got);
	TRACE("%s mm%d 0x%llx len 0x%llx -> %d count %zu\n", S.opname, mi, X(addr), X(len), err, got);
	expect_rc(S.opname, err, want);
	if (err)
		CHECK(got == 0x5e5e, "%s wrote its count on error", S.opname);
	else if (!null_out)
		CHECK(got == n, "%s(0x%llx, 0x%llx) = %zu, model %zu", S.opname, (unsigned long long)addr,
		      (unsigned long long)len, got, n);
}

static void op_cpu_state(struct in *in)
{
	uint8_t b = u8(in);
	struct smmu_cpu *h = S.cpu.mm >= 0 ? S.cpu.h : NULL;
	int err;
	switch (b % 6) {
	case 0:
		S.opname = "quiescent";
		err = smmu_quiescent(h);
		expect_rc(S.opname, err, !h || !S.cpu.online ? EM(EINVAL) : OK);
		break;
	case 1:
		S.opname = "cpu_offline";
		err = smmu_cpu_offline(h);
		expect_rc(S.opname, err, h ? OK : EM(EINVAL));
		if (h)
			S.cpu.online = false;
		break;
	case 2:
	case 3:
		S.opname = "cpu_online";
		err = smmu_cpu_online(h);
		expect_rc(S.opname, err, h ? OK : EM(EINVAL));
		if (h)
			S.cpu.online = true;
		break;
	case 4:
		S.opname = "tlb_flush_all";
		expect_rc(S.opname, smmu_tlb_flush_all(h), h ? OK : EM(EINVAL));
		break;
	default: {
		S.opname = "tlb_flush_range";
		int mi = S.cpu.mm >= 0 ? S.cpu.mm : 0;
		uint64_t addr = decode_addr(in, mi), len = decode_len(in, mi);
		expect_rc(S.opname, smmu_tlb_flush_range(h, addr, len),
			  !h || len == 0 || addr + len < addr ? EM(EINVAL) : OK);
		break;
	}
	}
}

static void op_find(struct in *in)
{
	S.opname = "mm_find";
	int mi = pick_mm(in);
	struct mmm *m = &S.mm[mi];
	uint64_t addr = decode_addr(in, mi);
	bool null_out = (u8(in) & 0xf0) == 0xf0;
	struct smmu_region r = {.start = 7};
	int err = smmu_mm_find(m->live ? m->h : NULL, addr, null_out ? NULL : &r);
	if (!m->live || null_out) {
		expect_rc(S.opname, err, EM(EINVAL));
		return;
	}
	const struct mreg *w = NULL;
	for (size_t i = 0; i < m->nr && !w; i++)
		if (m->r[i].e > addr)
			w = &m->r[i];
	if (!w) {
		expect_rc(S.opname, err, EM(ENOENT));
		CHECK(r.start == 7, "find wrote *out on error");
		return;
	}
	expect_rc(S.opname, err, OK);
	CHECK(r.start == w->s && r.end == w->e && r.prot == w->prot && r.flags == 0,
	      "find(0x%llx) = [0x%llx, 0x%llx) prot %d, model [0x%llx, 0x%llx) prot %d", (unsigned long long)addr,
	      (unsigned long long)r.start, (unsigned long long)r.end, r.prot, (unsigned long long)w->s,
	      (unsigned long long)w->e, w->prot);
}

static void op_misc(struct in *in)
{
	uint8_t b = u8(in);
	switch (b % 4) {
	case 0: {
		S.opname = "shootdown_set_signal";
		static const int offs[] = {3, 4, 0, 5};
		int sig = (b & 0x80) ? ((b & 0x40) ? SIGRTMIN - 1 : SIGRTMAX + 1) : SIGRTMAX - offs[(b >> 2) % 4];
		int cur = smmu_shootdown_signal();
		bool users = S.cpu.mm >= 0 && S.mm[S.cpu.mm].mode == SMMU_SHOOTDOWN_SIGNAL;
		emask want = (b & 0x80) ? EM(EINVAL) : users && sig != cur ? EM(EBUSY) : OK;
		int err = smmu_shootdown_set_signal(sig);
		expect_rc(S.opname, err, want);
		CHECK(smmu_shootdown_signal() == (err ? cur : sig), "smmu_shootdown_signal after set_signal");
		break;
	}
	case 1: {
		S.opname = "stats_get";
		int mi = pick_mm(in);
		struct smmu_stats st;
		expect_rc(S.opname, smmu_stats_get(S.mm[mi].live ? S.mm[mi].h : NULL, &st),
			  S.mm[mi].live ? OK : EM(EINVAL));
		if (S.mm[mi].live)
			expect_rc(S.opname, smmu_stats_get(S.mm[mi].h, NULL), EM(EINVAL));
		break;
	}
	case 2: {
		S.opname = "NULL handles";
		unsigned char buf[8];
		uint8_t v;
		expect_rc("smmu_read(NULL)", smmu_read(NULL, 0x10000, buf, 8), EM(EINVAL));
		expect_rc("smmu_write(NULL)", smmu_write(NULL, 0x10000, buf, 8), EM(EINVAL));
		expect_rc("smmu_cpu_set_trap_handler(NULL)", smmu_cpu_set_trap_handler(NULL, fuzz_trap, NULL),
			  EM(EINVAL));
		expect_rc("smmu_mm_create(NULL)", smmu_mm_create(NULL, NULL), EM(EINVAL));
		expect_rc("smmu_pool_create(NULL)", smmu_pool_create(NULL, NULL), EM(EINVAL));
		CHECK(smmu_cpu_id(NULL) == 0 && smmu_cpu_mm(NULL) == NULL, "NULL cpu queries");
		CHECK(smmu_pool_frames(NULL) == 0 && smmu_pool_free_frames(NULL) == 0 && smmu_pool_page_size(NULL) == 0 &&
			      smmu_mm_page_size(NULL) == 0,
		      "NULL pool/mm queries");
		if (S.cpu.mm >= 0 && S.cpu.online) {
			/* a try_ access of a small integer address always faults */
			begin_access();
			expect_rc("try_load8(0x8)", smmu_try_load8(S.cpu.h, 8, &v), EM(EFAULT));
		}
		break;
	}
	default: {
		S.opname = "mremap_batch n=0";
		int mi = pick_mm(in);
		expect_rc(S.opname, smmu_mremap_batch(S.mm[mi].live ? S.mm[mi].h : NULL, NULL, 0),
			  S.mm[mi].live ? OK : EM(EINVAL));
		break;
	}
	}
}


static void op_notifier(struct in *in)
{
	uint8_t b = u8(in);
	int mi = b & 1;
	struct mnotif *nt = &NT[mi];
	struct mmm *m = &S.mm[mi];
	switch ((b >> 1) % 4) {
	case 0: { /* register (or bad input) */
		S.opname = "notifier_register";
		if (nt->live) {
			nt->refuse = !nt->refuse;
			return;
		}
		struct smmu_notifier *h = (struct smmu_notifier *)(uintptr_t)0x5e5e;
		bool null_ops = (b & 0xf0) == 0xf0;
		int err = smmu_notifier_register(m->live ? m->h : NULL, null_ops ? NULL : &nt_ops, nt, &h);
		TRACE("notifier_register mm%d -> %d\n", mi, err);
		expect_rc(S.opname, err, m->live && !null_ops ? OK : EM(EINVAL));
		if (err) {
			CHECK(h == (struct smmu_notifier *)(uintptr_t)0x5e5e, "notifier_register wrote *out on error");
			return;
		}
		*nt = (struct mnotif){.live = true, .refuse = b & 0x10, .mm = mi, .h = h, .mmh = m->h};
		break;
	}
	case 1: /* unregister */
		S.opname = "notifier_unregister";
		if (!nt->live) {
			expect_rc(S.opname, smmu_notifier_unregister(NULL), EM(EINVAL));
			return;
		}
		TRACE("notifier_unregister mm%d%s\n", mi, nt->orphan ? " (orphan)" : "");
		expect_rc(S.opname, smmu_notifier_unregister(nt->h), OK);
		CHECK(nt->releases == 1, "notifier %d: %u releases after unregister", mi, nt->releases);
		CHECK(nt->depth == 0, "notifier %d: unregistered with %d changes open", mi, nt->depth);
		*nt = (struct mnotif){0};
		break;
	default: /* toggle refusing */
		S.opname = "notifier refuse";
		nt->refuse = !nt->refuse;
		break;
	}
}

/* Switch the thread's CPU to the other mm: smmu_cpu_switch_mm (its TLBs,
 * with ASIDs, must never let an access see the other mm), or unregister
 * and register there. */
static void op_switch(struct in *in)
{
	uint8_t b = u8(in);
	int to = S.cpu.mm >= 0 ? 1 - S.cpu.mm : b & 1;
	if ((b & 0x80) && S.cpu.mm >= 0 && S.mm[to].live) {
		S.opname = "cpu_switch_mm";
		int err = smmu_cpu_switch_mm(S.cpu.h, S.mm[to].h);
		TRACE("switch_mm %d -> %d: %d\n", S.cpu.mm, to, err);
		expect_rc("smmu_cpu_switch_mm", err, S.mm[to].mode == S.mm[S.cpu.mm].mode ? OK : EM(EINVAL));
		if (!err)
			S.cpu.mm = to;
		CHECK(smmu_cpu_mm(S.cpu.h) == S.mm[S.cpu.mm].h, "smmu_cpu_mm after a switch");
		return;
	}
	if (S.cpu.mm >= 0)
		op_cpu_unregister();
	if (S.mm[to].live)
		op_cpu_register(to, b >> 1);
}

static void run_op(struct in *in)
{
	uint8_t op = u8(in);
	TRACE("op %u: opcode %u (case %u)\n", S.op, op, op % 24);
	switch (op % 24) {
	case 0:
		if (op & 0x80)
			op_pool_create(in, (op >> 5) & 1, u8(in));
		else
			op_pool_destroy((op >> 5) & 1);
		break;
	case 1:
		if (op & 0x80)
			op_mm_create((op >> 5) & 1, u8(in));
		else if (op & 0x40)
			op_dup((op >> 5) & 1);
		else
			op_mm_destroy((op >> 5) & 1);
		break;
	case 2:
		if (op & 0x80)
			op_cpu_register((op >> 5) & 1, u8(in));
		else if (op & 0x40)
			op_cpu_unregister();
		else
			op_switch(in);
		break;
	case 3:
	case 4:
		op_mmap(in);
		break;
	case 5:
		op_munmap(in);
		break;
	case 6:
		op_mprotect(in);
		break;
	case 7:
		op_mremap(in, op & 0x80, (op & 0xc0) == 0xc0);
		break;
	case 8:
		op_try_access(in, false);
		break;
	case 9:
		if (op & 0x80)
			op_try_atomic(in);
		else
			op_try_access(in, false);
		break;
	case 10:
	case 11:
		op_try_access(in, true);
		break;
	case 12:
		op_trap_access(in);
		break;
	case 13:
		op_bulk(in, false);
		break;
	case 14:
		op_bulk(in, true);
		break;
	case 15:
		op_translate(in);
		break;
	case 16:
		op_young_dirty(in);
		break;
	case 17:
	case 18:
		op_cpu_state(in);
		break;
	case 19:
		op_find(in);
		break;
	case 20:
		S.opname = "checkpoint";
		checkpoint(op & 0x80);
		break;
	case 21:
		op_misc(in);
		break;
	case 22:
		if (op & 0x80)
			op_notifier(in);
		else
			op_mprotect(in);
		break;
	default:
		op_munmap(in);
		break;
	}
}

/* ------------------------------------------------------------ entry */

static void teardown(void)
{
	S.opname = "teardown";
	if (S.cpu.mm >= 0)
		op_cpu_unregister();
	for (int i = 0; i < NMM; i++) {
		if (NT[i].live) {
			S.opname = "teardown: notifier_unregister";
			expect_rc(S.opname, smmu_notifier_unregister(NT[i].h), OK);
			CHECK(NT[i].releases == 1, "notifier %d: %u releases", i, NT[i].releases);
			NT[i] = (struct mnotif){0};
		}
	}
	S.opname = "teardown";
	for (int i = 0; i < NMM; i++) {
		if (!S.mm[i].live)
			continue;
		expect_rc("smmu_mm_destroy", smmu_mm_destroy(S.mm[i].h), OK);
		mm_model_free(&S.mm[i]);
		check_pools();
	}
	for (int i = 0; i < NPOOL; i++) {
		if (!S.pool[i].live)
			continue;
		CHECK(S.pool[i].nfree == S.pool[i].nframes, "model: frames lost in pool %d", i);
		expect_rc("smmu_pool_destroy", smmu_pool_destroy(S.pool[i].h), OK);
		S.pool[i] = (struct mpool){0};
	}
	/* Leave process-wide state as we found it. */
	expect_rc("smmu_shootdown_set_signal", smmu_shootdown_set_signal(SIGRTMAX - 3), OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in in = {data, size};
	if (trace < 0)
		trace = getenv("FUZZ_TRACE") != NULL;
	if (open_bugs < 0)
		open_bugs = getenv("FUZZ_OPEN_BUGS") != NULL;
	memset(&S, 0, sizeof(S));
	memset(NT, 0, sizeof(NT));
	S.cpu.mm = -1;

	/* Header: pool 0, pool 1 (bit 0x80 of its byte: none), mm 0 (with
	 * the CPU on it), mm 1 (bit 0x80: none). */
	uint8_t h0 = u8(&in), h1 = u8(&in), h2 = u8(&in), h3 = u8(&in);
	S.op = 0;
	op_pool_create(&in, 0, h0 & 0x7f);
	if (!(h1 & 0x80))
		op_pool_create(&in, 1, h1 & 0x7f);
	op_mm_create(0, h2 & 0x73); /* never a bad config here */
	if (!(h3 & 0x80))
		op_mm_create(1, h3 & 0x73);
	if (S.mm[0].live)
		op_cpu_register(0, (h2 >> 2) & 0x3d); /* never case 6 (bad) */

	for (S.op = 1; S.op <= MAX_OPS && in.n; S.op++) {
		run_op(&in);
		check_notifiers();
	}

	S.opname = "final checkpoint";
	if (S.cpu.mm >= 0 && !S.cpu.online)
		op_cpu_state(&(struct in){(const uint8_t *)"\x02", 1}); /* online */
	checkpoint(true);
	teardown();
	return 0;
}
