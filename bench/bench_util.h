/* SPDX-License-Identifier: MIT */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

/*
 * Shared code of the bench/ binaries: options, timing, medians, the
 * human-readable table and the one JSON object that --json prints.
 *
 * Benchmarks are never tests.  Each case measures OUR time and the PEER's
 * time (the kernel's MMU, or raw host memory) for the same work, in the
 * same run, interleaved: repetition i runs ours then the peer when i is
 * even, the peer then ours when i is odd.  The ratio of a case is the
 * median over the repetitions of ours_i / peer_i (lower is better); the
 * medians of each side are reported too.
 *
 * Output: without --json the table goes to stdout.  With --json, stdout
 * carries exactly one JSON object and the table goes to stderr.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct bench_opts {
	int json;  /* --json */
	int reps;  /* --reps N (default 7, at least 5 unless --quick) */
	int quick; /* --quick: smaller sizes, for smoke runs */
};

/*
 * A benchmark's own option: called for every argument the common parser
 * does not know, with the next argument (or NULL) in val.  Returns how many
 * arguments it consumed (1 or 2), or 0 if it does not know opt either.
 */
typedef int (*bench_opt_fn)(const char *opt, const char *val, void *arg);

/*
 * bench_parse_args: --json, --reps N, --quick, --help, and whatever extra
 * accepts (NULL: nothing else).  extra_usage is printed under --help.
 * Dies on a bad option.
 */
void bench_parse_args(struct bench_opts *o, int argc, char **argv, const char *name, const char *extra_usage,
		      bench_opt_fn extra, void *extra_arg);

/* Monotonic time in nanoseconds (CLOCK_MONOTONIC). */
uint64_t bench_now_ns(void);

/* Median of n values (n > 0); v is not changed. */
double bench_median(const double *v, size_t n);

/* Print "bench: <message>" to stderr and exit(2). */
_Noreturn void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Call a library function (0 or a negative errno) and die with the
 * expression, the place and the error if it fails. */
#define BENCH_CHECK(call)                                                                            \
	do {                                                                                         \
		int bench_rc_ = (call);                                                              \
		if (bench_rc_ != 0)                                                                  \
			bench_die("%s:%d: %s failed: %d (%s)", __FILE__, __LINE__, #call, bench_rc_, \
				  bench_rc_ < 0 ? strerror(-bench_rc_) : "not an errno");            \
	} while (0)

/* Keep a value alive without letting the compiler reason about it. */
static inline void bench_sink_u64(uint64_t v)
{
	__asm__ volatile("" : : "r"(v) : "memory");
}

/* Hide a value's origin from the optimizer. */
static inline uint64_t bench_launder_u64(uint64_t v)
{
	__asm__ volatile("" : "+r"(v));
	return v;
}

/* Parse "123", "4k", "256m", "1g" (binary units) into bytes; dies on junk. */
uint64_t bench_parse_size(const char *opt, const char *s);
/* bench_parse_size, and dies unless the value is at least min. */
uint64_t bench_parse_at_least(const char *opt, const char *s, uint64_t min);

/* The kernel's transparent huge page mode, the bracketed word of
 * /sys/kernel/mm/transparent_hugepage/enabled ("always", "madvise",
 * "never"), or "unknown". */
void bench_thp_mode(char *buf, size_t len);

/* ------------------------------------------------- the library's counters */

struct smmu_stats;

/* acc += b - a, for every counter (a and b: smmu_stats_get before and after
 * the work). */
void bench_stats_accumulate(struct smmu_stats *acc, const struct smmu_stats *a, const struct smmu_stats *b);

/* st as one JSON object (smmu_stats_print_json), in a string to free(). */
char *bench_stats_json(const struct smmu_stats *st);

/* ------------------------------------------------------------ reports */

struct bench_report;
struct bench_case;

/* A measured function: does one repetition of one side of a case and
 * returns the nanoseconds of its timed part (setup inside it is not
 * timed). */
typedef double (*bench_fn)(void *arg);

/* A new report for binary `bench` (e.g. "bench-access"). */
struct bench_report *bench_report_new(const char *bench, const struct bench_opts *o);

/* The stream for people: stdout, or stderr under --json. */
FILE *bench_report_table(const struct bench_report *r);

/* Configuration shown in the header and in "config" of the JSON. */
void bench_report_config_u64(struct bench_report *r, const char *key, uint64_t v);
void bench_report_config_str(struct bench_report *r, const char *key, const char *v);

/* Print the header line(s): bench, machine (uname), nproc, config.  Call
 * once, after the config is set and before the cases run. */
void bench_report_header(struct bench_report *r);

/*
 * A case named `name` (the key under "ratios"): ops is the number of
 * operations one repetition of one side performs (accesses, pages), unit
 * names one of them ("access", "page"); per-op times are ns / ops.
 * peer_name says what the peer is ("raw load", "kernel munmap").
 */
struct bench_case *bench_report_case(struct bench_report *r, const char *name, const char *peer_name, double ops,
				     const char *unit);

/*
 * A context case: the same, but what is timed as "ours" is not the library
 * (`subject` says what it is: a naive design, say).  It shows below the
 * library's cases in the table and goes to "context_ratios" in the JSON,
 * never to "ratios".
 */
struct bench_case *bench_report_context_case(struct bench_report *r, const char *name, const char *subject,
					     const char *peer_name, double ops, const char *unit);

/* Record one repetition (already interleaved by the caller). */
void bench_case_record(struct bench_case *c, double ours_ns, double peer_ns);

/* Run reps interleaved repetitions: even reps ours then peer, odd reps
 * peer then ours; records each.  Prints a progress dot to the table stream
 * when it is a terminal. */
void bench_case_run(struct bench_case *c, int reps, bench_fn ours, bench_fn peer, void *arg);

/*
 * The same with each repetition cut into `chunks` timed pieces per side,
 * alternating finely (piece k of rep i: ours first when i + k is even), so
 * that both sides of a repetition see the same machine even when it drifts
 * within the repetition.  A repetition's time per side is the sum of its
 * pieces.  The functions get the piece number (0 .. chunks-1): they reset
 * their state at 0 and may check their result at chunks-1.
 */
typedef double (*bench_chunk_fn)(void *arg, int chunk);
void bench_case_run_chunked(struct bench_case *c, int reps, int chunks, bench_chunk_fn ours, bench_chunk_fn peer,
			    void *arg);

/* A further top-level JSON member: key and an already-rendered JSON value
 * (copied). */
void bench_report_json(struct bench_report *r, const char *key, const char *json_value);

/* A line printed under the table (copied). */
void bench_report_note(struct bench_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print the table (and notes) to the table stream, and under --json the
 * JSON object to stdout; free the report.  Dies if none of the library's
 * cases (context cases aside) has a valid ratio. */
void bench_report_finish(struct bench_report *r);

/* ------------------------------------------- instructions from the code */

/*
 * bench_count_path: disassemble this executable (objdump -d, found through
 * /proc/self/exe) and count the instructions of function `func` on the
 * shortest path from its entry to a `ret` that never calls or jumps to a
 * symbol whose name contains `avoid` (the slow path).  Conditional branches
 * are followed both ways.  The final ret and a leading endbr64 are not
 * counted.  x86-64 only.
 *
 * Returns the count, or -1 with a reason in why (objdump missing, function
 * not found, no such path, not x86-64).  If listing is not NULL, the path's
 * instructions are written there, "; "-separated.
 */
int bench_count_path(const char *func, const char *avoid, char *listing, size_t listing_len, char *why, size_t why_len);

/* A fixed-seed PRNG (splitmix64). */
static inline uint64_t bench_splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

#endif
