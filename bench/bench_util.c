/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "bench_util.h"

#include <softmmu/softmmu.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ basics */

void bench_die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		bench_die("clock_gettime(CLOCK_MONOTONIC): %s", strerror(errno));
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double bench_median(const double *v, size_t n)
{
	double *t, m;

	if (n == 0)
		return NAN;
	t = malloc(n * sizeof(*t));
	if (!t)
		bench_die("out of memory");
	memcpy(t, v, n * sizeof(*t));
	qsort(t, n, sizeof(*t), cmp_double);
	m = (n & 1) ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
	free(t);
	return m;
}

uint64_t bench_parse_size(const char *opt, const char *s)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !*s)
		bench_die("%s needs a size", opt);
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		bench_die("%s: bad size '%s'", opt, s);
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	default:
		break;
	}
	if (*end || (shift && v > (ULLONG_MAX >> shift)))
		bench_die("%s: bad size '%s'", opt, s);
	return (uint64_t)v << shift;
}

uint64_t bench_parse_at_least(const char *opt, const char *s, uint64_t min)
{
	uint64_t v = bench_parse_size(opt, s);
	if (v < min)
		bench_die("%s must be at least %llu", opt, (unsigned long long)min);
	return v;
}

void bench_thp_mode(char *buf, size_t len)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	char line[128], *a, *b;

	snprintf(buf, len, "unknown");
	if (!f)
		return;
	if (fgets(line, sizeof(line), f) && (a = strchr(line, '[')) && (b = strchr(a, ']'))) {
		*b = 0;
		snprintf(buf, len, "%s", a + 1);
	}
	fclose(f);
}

/* ------------------------------------------------- the library's counters */

void bench_stats_accumulate(struct smmu_stats *acc, const struct smmu_stats *a, const struct smmu_stats *b)
{
#define X(name, desc) acc->name += b->name - a->name;
	SMMU_STATS_LIST(X)
#undef X
}

char *bench_stats_json(const struct smmu_stats *st)
{
	char *s = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&s, &len);

	if (!f)
		bench_die("out of memory");
	smmu_stats_print_json(st, f);
	if (fclose(f) != 0 || !s)
		bench_die("out of memory");
	return s;
}

/* ------------------------------------------------------------ options */

static void usage(FILE *f, const char *name, const char *extra_usage)
{
	fprintf(f,
		"usage: %s [--json] [--reps N] [--quick]%s%s\n"
		"  --json     print exactly one JSON object on stdout (the table goes to stderr)\n"
		"  --reps N   interleaved repetitions per case (default 7; at least 5 unless --quick)\n"
		"  --quick    smaller sizes and 5 repetitions, for a smoke run\n",
		name, extra_usage ? "\n" : "", extra_usage ? extra_usage : "");
}

void bench_parse_args(struct bench_opts *o, int argc, char **argv, const char *name, const char *extra_usage,
		      bench_opt_fn extra, void *extra_arg)
{
	int reps = -1;

	memset(o, 0, sizeof(*o));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--json")) {
			o->json = 1;
		} else if (!strcmp(a, "--quick")) {
			o->quick = 1;
		} else if (!strcmp(a, "--reps") || !strncmp(a, "--reps=", 7)) {
			const char *s = a[6] == '=' ? a + 7 : val;
			char *end;
			long v;

			if (!s)
				bench_die("--reps needs a number");
			errno = 0;
			v = strtol(s, &end, 10);
			if (errno || *end || end == s || v < 1 || v > 1000)
				bench_die("--reps: bad number '%s' (1..1000)", s);
			reps = (int)v;
			if (a[6] != '=')
				i++;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout, name, extra_usage);
			exit(0);
		} else {
			int used = extra ? extra(a, val, extra_arg) : 0;

			if (used <= 0) {
				usage(stderr, name, extra_usage);
				bench_die("unknown option '%s'", a);
			}
			i += used - 1;
		}
	}
	if (reps < 0)
		reps = o->quick ? 5 : 7;
	if (reps < 5 && !o->quick)
		bench_die("--reps %d: ratios are medians of at least 5 repetitions (or use --quick)", reps);
	o->reps = reps;
}

/* ------------------------------------------------------------ JSON */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c == '\t')
			fputs("\\t", f);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_num(FILE *f, double v)
{
	if (isfinite(v) && v > -1e15 && v < 1e15 && v == (double)(long long)v)
		fprintf(f, "%.0f", v);
	else if (isfinite(v))
		fprintf(f, "%.6g", v);
	else
		fputs("null", f);
}

/* ------------------------------------------------------------ reports */

#define BENCH_MAX_CASES 16
#define BENCH_MAX_KV 32
#define BENCH_MAX_NOTES 32

struct bench_kv {
	char *key;
	char *json; /* rendered JSON value */
	char *text; /* for the header */
};

struct bench_case {
	struct bench_report *r;
	char *name, *peer, *unit;
	char *subject; /* a context case: what stands in for ours; NULL for ours */
	double ops;
	int chunks; /* timed pieces per repetition and side */
	double *ours, *peer_ns;
	size_t n, cap;
};

struct bench_report {
	char *bench;
	struct bench_opts o;
	struct bench_kv config[BENCH_MAX_KV];
	size_t nconfig;
	struct bench_kv extra[BENCH_MAX_KV];
	size_t nextra;
	struct bench_case cases[BENCH_MAX_CASES];
	size_t ncases;
	char *notes[BENCH_MAX_NOTES];
	size_t nnotes;
	struct utsname uts;
	long nproc;
};

static char *xstrdup(const char *s)
{
	char *d = strdup(s ? s : "");

	if (!d)
		bench_die("out of memory");
	return d;
}

struct bench_report *bench_report_new(const char *bench, const struct bench_opts *o)
{
	struct bench_report *r = calloc(1, sizeof(*r));

	if (!r)
		bench_die("out of memory");
	r->bench = xstrdup(bench);
	r->o = *o;
	if (uname(&r->uts) != 0)
		memset(&r->uts, 0, sizeof(r->uts));
	r->nproc = sysconf(_SC_NPROCESSORS_ONLN);
	return r;
}

FILE *bench_report_table(const struct bench_report *r)
{
	return r->o.json ? stderr : stdout;
}

static void add_kv(struct bench_kv *kv, size_t *n, const char *key, const char *json, const char *text)
{
	if (*n >= BENCH_MAX_KV)
		bench_die("too many report entries (%s)", key);
	kv[*n].key = xstrdup(key);
	kv[*n].json = xstrdup(json);
	kv[*n].text = xstrdup(text);
	(*n)++;
}

void bench_report_config_u64(struct bench_report *r, const char *key, uint64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
	add_kv(r->config, &r->nconfig, key, buf, buf);
}

void bench_report_config_str(struct bench_report *r, const char *key, const char *v)
{
	char *json = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&json, &len);

	if (!f)
		bench_die("out of memory");
	json_str(f, v);
	fclose(f);
	add_kv(r->config, &r->nconfig, key, json, v);
	free(json);
}

void bench_report_json(struct bench_report *r, const char *key, const char *json_value)
{
	add_kv(r->extra, &r->nextra, key, json_value, json_value);
}

void bench_report_note(struct bench_report *r, const char *fmt, ...)
{
	va_list ap;
	char *s;

	if (r->nnotes >= BENCH_MAX_NOTES)
		return;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		bench_die("out of memory");
	va_end(ap);
	r->notes[r->nnotes++] = s;
}

void bench_report_header(struct bench_report *r)
{
	FILE *t = bench_report_table(r);

	fprintf(t, "# %s on %s %s %s (host %s), nproc %ld, reps %d%s\n", r->bench, r->uts.sysname, r->uts.release,
		r->uts.machine, r->uts.nodename, r->nproc, r->o.reps, r->o.quick ? ", quick" : "");
	if (r->nconfig) {
		fputs("# config:", t);
		for (size_t i = 0; i < r->nconfig; i++)
			fprintf(t, " %s=%s", r->config[i].key, r->config[i].text);
		fputc('\n', t);
	}
	fflush(t);
}

struct bench_case *bench_report_case(struct bench_report *r, const char *name, const char *peer_name, double ops,
				     const char *unit)
{
	struct bench_case *c;

	if (r->ncases >= BENCH_MAX_CASES)
		bench_die("too many cases");
	if (!(ops > 0))
		bench_die("case %s: ops must be positive", name);
	c = &r->cases[r->ncases++];
	memset(c, 0, sizeof(*c));
	c->r = r;
	c->name = xstrdup(name);
	c->peer = xstrdup(peer_name);
	c->unit = xstrdup(unit);
	c->ops = ops;
	c->chunks = 1;
	return c;
}

struct bench_case *bench_report_context_case(struct bench_report *r, const char *name, const char *subject,
					     const char *peer_name, double ops, const char *unit)
{
	struct bench_case *c = bench_report_case(r, name, peer_name, ops, unit);

	c->subject = xstrdup(subject);
	return c;
}

void bench_case_record(struct bench_case *c, double ours_ns, double peer_ns)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 16;
		double *a = realloc(c->ours, cap * sizeof(double));
		double *b;

		if (!a)
			bench_die("out of memory");
		c->ours = a;
		b = realloc(c->peer_ns, cap * sizeof(double));
		if (!b)
			bench_die("out of memory");
		c->peer_ns = b;
		c->cap = cap;
	}
	c->ours[c->n] = ours_ns;
	c->peer_ns[c->n] = peer_ns;
	c->n++;
}

void bench_case_run(struct bench_case *c, int reps, bench_fn ours, bench_fn peer, void *arg)
{
	bool progress = isatty(STDERR_FILENO);

	if (progress) {
		fprintf(stderr, "  %s ", c->name);
		fflush(stderr);
	}
	for (int i = 0; i < reps; i++) {
		double o, p;

		if ((i & 1) == 0) {
			o = ours(arg);
			p = peer(arg);
		} else {
			p = peer(arg);
			o = ours(arg);
		}
		bench_case_record(c, o, p);
		if (progress) {
			fputc('.', stderr);
			fflush(stderr);
		}
	}
	if (progress)
		fputs("\r\033[K", stderr);
}

void bench_case_run_chunked(struct bench_case *c, int reps, int chunks, bench_chunk_fn ours, bench_chunk_fn peer,
			    void *arg)
{
	bool progress = isatty(STDERR_FILENO);

	if (chunks < 1)
		bench_die("case %s: chunks must be positive", c->name);
	c->chunks = chunks;
	if (progress) {
		fprintf(stderr, "  %s ", c->name);
		fflush(stderr);
	}
	for (int i = 0; i < reps; i++) {
		double o = 0, p = 0;

		for (int k = 0; k < chunks; k++) {
			if (((i + k) & 1) == 0) {
				o += ours(arg, k);
				p += peer(arg, k);
			} else {
				p += peer(arg, k);
				o += ours(arg, k);
			}
		}
		bench_case_record(c, o, p);
		if (progress) {
			fputc('.', stderr);
			fflush(stderr);
		}
	}
	if (progress)
		fputs("\r\033[K", stderr);
}

struct case_summary {
	double ours_med, peer_med, ratio, ratio_min, ratio_max;
	bool valid;
};

static struct case_summary summarize(const struct bench_case *c)
{
	struct case_summary s = {NAN, NAN, NAN, NAN, NAN, false};
	double *ratios;
	size_t nr = 0;

	if (c->n == 0)
		return s;
	s.ours_med = bench_median(c->ours, c->n);
	s.peer_med = bench_median(c->peer_ns, c->n);
	ratios = malloc(c->n * sizeof(*ratios));
	if (!ratios)
		bench_die("out of memory");
	for (size_t i = 0; i < c->n; i++) {
		if (c->peer_ns[i] > 0 && c->ours[i] >= 0) {
			double q = c->ours[i] / c->peer_ns[i];

			ratios[nr++] = q;
			if (nr == 1 || q < s.ratio_min)
				s.ratio_min = q;
			if (nr == 1 || q > s.ratio_max)
				s.ratio_max = q;
		}
	}
	if (nr == c->n) {
		s.ratio = bench_median(ratios, nr);
		s.valid = isfinite(s.ratio);
	}
	free(ratios);
	return s;
}

static void print_samples(FILE *f, const double *v, size_t n)
{
	fputc('[', f);
	for (size_t i = 0; i < n; i++) {
		if (i)
			fputc(',', f);
		json_num(f, v[i]);
	}
	fputc(']', f);
}

void bench_report_finish(struct bench_report *r)
{
	FILE *t = bench_report_table(r);
	struct case_summary sum[BENCH_MAX_CASES];
	size_t nvalid = 0;
	int w = 22; /* the case column */

	for (size_t i = 0; i < r->ncases; i++) {
		sum[i] = summarize(&r->cases[i]);
		nvalid += sum[i].valid && !r->cases[i].subject;
	}

	for (size_t i = 0; i < r->ncases; i++)
		if ((int)strlen(r->cases[i].name) > w)
			w = (int)strlen(r->cases[i].name);
	fprintf(t, "%-*s %-16s %11s %13s %13s %8s  %s\n", w, "case", "peer", "ops/rep", "ours ns/op", "peer ns/op",
		"ratio", "ratio range");
	for (int context = 0; context < 2; context++) {
		for (size_t i = 0; i < r->ncases; i++) {
			const struct bench_case *c = &r->cases[i];
			const struct case_summary *s = &sum[i];

			if ((c->subject != NULL) != context)
				continue;
			fprintf(t, "%-*s %-16s %11.0f %13.3f %13.3f %8.3f  [%.3f .. %.3f]\n", w, c->name, c->peer,
				c->ops, s->ours_med / c->ops, s->peer_med / c->ops, s->ratio, s->ratio_min,
				s->ratio_max);
			if (context)
				fprintf(t, "  (context, not ours: \"ours\" is %s)\n", c->subject);
		}
	}
	fprintf(t,
		"(ns/op: median over %d reps of one side's time / ops; ratio: median over reps of ours/peer, "
		"lower is better; reps interleaved, order alternating)\n",
		r->o.reps);
	for (size_t i = 0; i < r->nnotes; i++)
		fprintf(t, "%s\n", r->notes[i]);
	fflush(t);

	if (r->o.json) {
		FILE *f = stdout;

		fputs("{\"bench\":", f);
		json_str(f, r->bench);
		fputs(",\"machine\":{\"sysname\":", f);
		json_str(f, r->uts.sysname);
		fputs(",\"release\":", f);
		json_str(f, r->uts.release);
		fputs(",\"machine\":", f);
		json_str(f, r->uts.machine);
		fputs(",\"nodename\":", f);
		json_str(f, r->uts.nodename);
		fprintf(f, ",\"nproc\":%ld}", r->nproc);
		fprintf(f, ",\"reps\":%d,\"quick\":%s", r->o.reps, r->o.quick ? "true" : "false");
		fputs(",\"ratio_method\":\"median over reps of ours_ns/peer_ns; reps interleaved, even reps ours "
		      "first, odd reps peer first\"",
		      f);
		fputs(",\"config\":{", f);
		for (size_t i = 0; i < r->nconfig; i++) {
			if (i)
				fputc(',', f);
			json_str(f, r->config[i].key);
			fputc(':', f);
			fputs(r->config[i].json, f);
		}
		for (int context = 0; context < 2; context++) {
			fputs(context ? "},\"context_ratios\":{" : "},\"ratios\":{", f);
			for (size_t i = 0, k = 0; i < r->ncases; i++) {
				if (!sum[i].valid || (r->cases[i].subject != NULL) != context)
					continue;
				if (k++)
					fputc(',', f);
				json_str(f, r->cases[i].name);
				fputc(':', f);
				json_num(f, sum[i].ratio);
			}
		}
		fputs("},\"cases\":{", f);
		for (size_t i = 0; i < r->ncases; i++) {
			const struct bench_case *c = &r->cases[i];
			const struct case_summary *s = &sum[i];

			if (i)
				fputc(',', f);
			json_str(f, c->name);
			fputs(":{\"peer\":", f);
			json_str(f, c->peer);
			if (c->subject) {
				fputs(",\"context\":true,\"subject\":", f);
				json_str(f, c->subject);
			}
			fputs(",\"unit\":", f);
			json_str(f, c->unit);
			fputs(",\"ops\":", f);
			json_num(f, c->ops);
			fprintf(f, ",\"chunks_per_rep\":%d", c->chunks);
			fputs(",\"ours_ns_median\":", f);
			json_num(f, s->ours_med);
			fputs(",\"peer_ns_median\":", f);
			json_num(f, s->peer_med);
			fputs(",\"ours_ns_per_op\":", f);
			json_num(f, s->ours_med / c->ops);
			fputs(",\"peer_ns_per_op\":", f);
			json_num(f, s->peer_med / c->ops);
			fputs(",\"ratio\":", f);
			json_num(f, s->ratio);
			fputs(",\"ratio_of_medians\":", f);
			json_num(f, s->ours_med / s->peer_med);
			fputs(",\"ratio_min\":", f);
			json_num(f, s->ratio_min);
			fputs(",\"ratio_max\":", f);
			json_num(f, s->ratio_max);
			fputs(",\"ours_ns\":", f);
			print_samples(f, c->ours, c->n);
			fputs(",\"peer_ns\":", f);
			print_samples(f, c->peer_ns, c->n);
			fputc('}', f);
		}
		fputc('}', f);
		for (size_t i = 0; i < r->nextra; i++) {
			fputc(',', f);
			json_str(f, r->extra[i].key);
			fputc(':', f);
			fputs(r->extra[i].json, f);
		}
		fputs("}\n", f);
		fflush(f);
	}

	if (nvalid == 0)
		bench_die("no case produced a valid ratio");

	for (size_t i = 0; i < r->ncases; i++) {
		struct bench_case *c = &r->cases[i];

		free(c->name);
		free(c->peer);
		free(c->subject);
		free(c->unit);
		free(c->ours);
		free(c->peer_ns);
	}
	for (size_t i = 0; i < r->nconfig; i++) {
		free(r->config[i].key);
		free(r->config[i].json);
		free(r->config[i].text);
	}
	for (size_t i = 0; i < r->nextra; i++) {
		free(r->extra[i].key);
		free(r->extra[i].json);
		free(r->extra[i].text);
	}
	for (size_t i = 0; i < r->nnotes; i++)
		free(r->notes[i]);
	free(r->bench);
	free(r);
}

/* ------------------------------------------- instructions from the code */

#define PATH_MAX_INSNS 4096

enum insn_kind {
	IK_PLAIN, /* falls through */
	IK_RET,   /* end of a path */
	IK_JMP,   /* unconditional, to target */
	IK_JCC,   /* conditional: target and fall-through */
	IK_DEAD,  /* ends a path that is not a hit (indirect/tail jump, trap) */
	IK_AVOID, /* calls or jumps to the slow path: never on the path */
	IK_ENDBR, /* endbr64: falls through, not counted */
};

struct insn {
	uint64_t addr;
	char text[128];
	enum insn_kind kind;
	uint64_t target;     /* IK_JMP / IK_JCC */
	bool target_avoided; /* IK_JCC to the slow path, or outside the function */
};

static void trim(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = 0;
}

/* The symbol name inside "<name+0x12>" in s, copied to out (without the
 * offset); false if none. */
static bool annotation(const char *s, char *out, size_t len)
{
	const char *a = strchr(s, '<'), *b;
	size_t n;

	if (!a)
		return false;
	a++;
	b = a;
	while (*b && *b != '>' && *b != '+')
		b++;
	n = (size_t)(b - a);
	if (n >= len)
		n = len - 1;
	memcpy(out, a, n);
	out[n] = 0;
	return true;
}

static void classify(struct insn *in, const char *func, const char *avoid)
{
	static const char *const prefixes[] = {"lock", "rep",    "repz",   "repe", "repnz", "repne", "notrack",
					       "bnd",  "data16", "addr32", "cs",   "ds",    NULL};
	char buf[128], *p, *mn, *ops, sym[128];
	bool has_sym;

	snprintf(buf, sizeof(buf), "%s", in->text);
	p = buf;
	for (;;) {
		bool pre = false;

		while (*p == ' ')
			p++;
		for (int i = 0; prefixes[i]; i++) {
			size_t n = strlen(prefixes[i]);

			if (!strncmp(p, prefixes[i], n) && p[n] == ' ') {
				p += n;
				pre = true;
				break;
			}
		}
		if (!pre)
			break;
	}
	mn = p;
	while (*p && *p != ' ')
		p++;
	if (*p)
		*p++ = 0;
	while (*p == ' ')
		p++;
	ops = p;
	has_sym = annotation(ops, sym, sizeof(sym));

	in->kind = IK_PLAIN;
	if (!strncmp(mn, "ret", 3)) {
		in->kind = IK_RET;
	} else if (!strcmp(mn, "endbr64")) {
		in->kind = IK_ENDBR;
	} else if (!strcmp(mn, "ud2") || !strcmp(mn, "hlt") || !strcmp(mn, "int3")) {
		in->kind = IK_DEAD;
	} else if (!strncmp(mn, "call", 4)) {
		if (has_sym && strstr(sym, avoid))
			in->kind = IK_AVOID;
	} else if (mn[0] == 'j') {
		bool uncond = !strncmp(mn, "jmp", 3);
		bool inside = has_sym && !strcmp(sym, func);

		if (ops[0] == '*') {
			in->kind = IK_DEAD; /* indirect */
			return;
		}
		in->target = strtoull(ops, NULL, 16);
		if (has_sym && strstr(sym, avoid)) {
			in->kind = uncond ? IK_AVOID : IK_JCC;
			in->target_avoided = true;
		} else if (!inside) {
			/* a tail jump elsewhere: not a hit path we can follow */
			in->kind = uncond ? IK_DEAD : IK_JCC;
			in->target_avoided = true;
		} else {
			in->kind = uncond ? IK_JMP : IK_JCC;
		}
	}
}

static int find_insn(const struct insn *v, int n, uint64_t addr)
{
	for (int i = 0; i < n; i++)
		if (v[i].addr == addr)
			return i;
	return -1;
}

int bench_count_path(const char *func, const char *avoid, char *listing, size_t listing_len, char *why, size_t why_len)
{
#if !defined(__x86_64__)
	(void)func;
	(void)avoid;
	if (listing && listing_len)
		listing[0] = 0;
	snprintf(why, why_len, "not x86-64");
	return -1;
#else
	char exe[PATH_MAX], cmd[PATH_MAX * 4 + 256], line[512], hdr[300];
	struct insn *v;
	int n = 0, status, *dist, *prev, *queue, qh = 0, qt = 0, best = -1, start;
	ssize_t el;
	bool in_func = false;
	FILE *p;
	char *c;

	if (listing && listing_len)
		listing[0] = 0;
	el = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (el <= 0) {
		snprintf(why, why_len, "readlink(/proc/self/exe): %s", strerror(errno));
		return -1;
	}
	exe[el] = 0;
	/* single-quote the path for the shell */
	c = cmd + snprintf(cmd, sizeof(cmd), "objdump -d --no-show-raw-insn -w --disassemble='%s' '", func);
	for (const char *s = exe; *s; s++) {
		if (*s == '\'') {
			memcpy(c, "'\\''", 4);
			c += 4;
		} else {
			*c++ = *s;
		}
	}
	strcpy(c, "' 2>/dev/null");

	v = calloc(PATH_MAX_INSNS, sizeof(*v));
	if (!v)
		bench_die("out of memory");
	p = popen(cmd, "r");
	if (!p) {
		free(v);
		snprintf(why, why_len, "popen(objdump): %s", strerror(errno));
		return -1;
	}
	snprintf(hdr, sizeof(hdr), "<%s>:", func);
	while (fgets(line, sizeof(line), p)) {
		char *colon, *end;
		unsigned long long a;

		trim(line);
		if (!in_func) {
			size_t ll = strlen(line), hl = strlen(hdr);

			if (ll >= hl && !strcmp(line + ll - hl, hdr))
				in_func = true;
			continue;
		}
		if (line[0] != ' ') {
			if (n > 0)
				in_func = false; /* blank line or next symbol: the function ended */
			continue;
		}
		a = strtoull(line, &end, 16);
		colon = end;
		if (*colon != ':')
			continue;
		colon++;
		while (*colon == '\t' || *colon == ' ')
			colon++;
		if (!*colon || n >= PATH_MAX_INSNS)
			continue;
		v[n].addr = a;
		snprintf(v[n].text, sizeof(v[n].text), "%s", colon);
		/* squeeze runs of spaces after the mnemonic */
		for (char *s = v[n].text, *d = v[n].text;; s++) {
			if (*s == ' ' && d > v[n].text && d[-1] == ' ')
				continue;
			*d++ = *s;
			if (!*s)
				break;
		}
		n++;
	}
	status = pclose(p);
	if (n == 0) {
		free(v);
		if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 127)
			snprintf(why, why_len, "objdump not found");
		else
			snprintf(why, why_len, "function %s not found in objdump output of %s", func, exe);
		return -1;
	}
	for (int i = 0; i < n; i++)
		classify(&v[i], func, avoid);

	/* BFS: every instruction weighs one, so BFS order is shortest. */
	dist = malloc(sizeof(int) * (size_t)n * 3);
	if (!dist)
		bench_die("out of memory");
	prev = dist + n;
	queue = prev + n;
	for (int i = 0; i < n; i++)
		dist[i] = -1, prev[i] = -1;
	start = 0;
	dist[start] = 0;
	queue[qt++] = start;
	while (qh < qt) {
		int i = queue[qh++], succ[2], ns = 0;

		if (v[i].kind == IK_RET) {
			best = i;
			break;
		}
		switch (v[i].kind) {
		case IK_PLAIN:
		case IK_ENDBR:
			succ[ns++] = i + 1;
			break;
		case IK_JMP:
			succ[ns++] = find_insn(v, n, v[i].target);
			break;
		case IK_JCC:
			succ[ns++] = i + 1;
			if (!v[i].target_avoided)
				succ[ns++] = find_insn(v, n, v[i].target);
			break;
		default:
			break;
		}
		for (int k = 0; k < ns; k++) {
			int j = succ[k];

			if (j < 0 || j >= n || dist[j] >= 0 || v[j].kind == IK_AVOID)
				continue;
			dist[j] = dist[i] + 1;
			prev[j] = i;
			queue[qt++] = j;
		}
	}
	if (best < 0) {
		free(dist);
		free(v);
		snprintf(why, why_len, "no path from %s to ret that avoids %s", func, avoid);
		return -1;
	}
	{
		int count = 0, len = 0, path[PATH_MAX_INSNS];

		for (int i = prev[best]; i >= 0; i = prev[i])
			path[len++] = i;
		for (int k = len - 1; k >= 0; k--) {
			const struct insn *in = &v[path[k]];

			if (in->kind == IK_ENDBR)
				continue;
			count++;
			if (listing && listing_len) {
				size_t used = strlen(listing);

				snprintf(listing + used, listing_len - used, "%s%s", used ? "; " : "", in->text);
			}
		}
		free(dist);
		free(v);
		why[0] = 0;
		return count;
	}
#endif
}
