#!/usr/bin/env bash
# Turn the benches' JSON into the README's charts (PNG, gnuplot).
#
#   scripts/plots.sh [--out DIR] [--build DIR] [FILE.json ...]
#
# With no FILE, runs build/bench-access, build/bench-unmap and
# build/bench-shootdown with --json (plus $BENCH_ARGS, e.g. --quick) into a
# temporary directory and plots those; build them first (./build.sh bench,
# or cmake --build build).  With FILEs, plots those: any number of
# bench-*.json, several runs of a bench included - each value plotted is
# then the median over the runs.
#
# Writes, into DIR (default docs/plots):
#   latency_vs_remotes.png  one-page munmap latency against active remote
#                           CPU threads ("sweep_modes" of bench-shootdown):
#                           one line per shootdown mode, plus the kernel
#   ratios.png              every case's ratio (ours / peer, "ratios" of
#                           each bench) as a horizontal bar, with the
#                           target marked where the README sets one
#
# Needs bash, awk (any POSIX awk) and gnuplot (Debian: gnuplot-nox, which
# scripts/setup.sh installs); not jq or python.  The targets below are the
# README's table ("## Benchmarks"): keep them in step.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/docs/plots
BUILD=$ROOT/build

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

files=()
while [ $# -gt 0 ]; do
	case $1 in
	--out)
		[ $# -ge 2 ] || usage
		OUT=$2
		shift 2
		;;
	--build)
		[ $# -ge 2 ] || usage
		BUILD=$2
		shift 2
		;;
	-h | --help) usage ;;
	-*) usage ;;
	*)
		files+=("$1")
		shift
		;;
	esac
done

if ! command -v gnuplot >/dev/null 2>&1; then
	echo "plots: gnuplot not found; install gnuplot-nox (scripts/setup.sh does)" >&2
	exit 1
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if [ ${#files[@]} -eq 0 ]; then
	for b in bench-access bench-unmap bench-shootdown; do
		if [ ! -x "$BUILD/$b" ]; then
			echo "plots: $BUILD/$b not built (./build.sh bench, or cmake --build build)" >&2
			exit 1
		fi
		echo "plots: running $b --json ${BENCH_ARGS:-}" >&2
		# shellcheck disable=SC2086 # BENCH_ARGS is a list of options
		"$BUILD/$b" --json ${BENCH_ARGS:-} >"$TMP/$b.json"
		files+=("$TMP/$b.json")
	done
fi
for f in "${files[@]}"; do
	[ -r "$f" ] || {
		echo "plots: cannot read $f" >&2
		exit 1
	}
done

# Targets: case name, then the ratio the README asks for (ours / peer <=).
cat >"$TMP/targets" <<'EOF'
hit_random_vs_raw 1.7
hit_chase_vs_raw 1.35
big_random_vs_raw 2.5
unmap_1g_vs_kernel 0.1
unmap_1g_remote_vs_kernel 0.1
munmap_page_remote_vs_kernel 1.0
mprotect_page_remote_vs_kernel 1.0
mprotect_upgrade_vs_kernel 0.1
munmap_page_remote_qsbr_vs_kernel 0.1
munmap_page_remote_deferred_vs_kernel 0.02
EOF

# One pass over the JSON (each bench prints one object on one line; the
# members read here are flat).  Writes:
#   ratios.dat  "label" y ratio target status  (status 0 meets the target,
#               1 misses it, 2 no target: target 0), first row on top
#   sweep.dat   remotes signal rcu rcu_deferred kernel  (ns, medians over
#               files; ? where a file had no such point)
#   vars.gp     gnuplot settings: row count, x ranges, runs, CPUs
awk -v targets="$TMP/targets" -v dir="$TMP" '
function median(list,    n, v, i, j, t) {
	n = split(list, v, " ")
	for (i = 2; i <= n; i++)
		for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) {
			t = v[j]; v[j] = v[j - 1]; v[j - 1] = t
		}
	return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
# The value of "key": in obj (a number, null, or a string without quotes).
function field(obj, key,    v) {
	if (!match(obj, "\"" key "\":"))
		return ""
	v = substr(obj, RSTART + RLENGTH)
	if (substr(v, 1, 1) == "\"") {
		v = substr(v, 2)
		return substr(v, 1, index(v, "\"") - 1)
	}
	match(v, /^[-+.0-9eE]+|^null/)
	return substr(v, 1, RLENGTH)
}
# The text between "key":OPEN and the first CLOSE after it.
function member(s, key, opening, closing,    i, v) {
	if (!(i = index(s, "\"" key "\":" opening)))
		return ""
	v = substr(s, i + length(key) + 4)
	return substr(v, 1, index(v, closing) - 1)
}
BEGIN {
	while ((getline line < targets) > 0) {
		split(line, t, " ")
		target[t[1]] = t[2]
	}
}
FNR == 1 {
	if (NR > 1)
		doc(s)
	s = ""
}
{ s = s $0 }
END {
	if (NR > 0)
		doc(s)
	out()
}
function doc(s,    bench, r, n, kv, i, k, name, key, v, sw, e, ne, mode, rem) {
	bench = field(s, "bench")
	sub(/^bench-/, "", bench)
	if (bench == "")
		bench = "?"
	if (!(bench in runs))
		benches[++nbenches] = bench
	runs[bench]++
	if ((v = field(s, "nproc")) != "")
		nproc = v
	r = member(s, "ratios", "{", "}")
	n = split(r, kv, ",")
	for (i = 1; i <= n; i++) {
		k = index(kv[i], "\":")
		if (!k)
			continue
		name = substr(kv[i], 2, k - 2)
		v = substr(kv[i], k + 2)
		if (v == "null")
			continue
		key = bench ": " name
		if (!(key in ratio)) {
			order[++nrows] = key
			case_of[key] = name
		}
		ratio[key] = ratio[key] " " v
	}
	sw = member(s, "sweep_modes", "[", "]")
	if (sw == "")
		return
	gsub(/\},\{/, "}\n{", sw)
	ne = split(sw, e, "\n")
	for (i = 1; i <= ne; i++) {
		mode = field(e[i], "mode")
		rem = field(e[i], "remotes")
		if (mode == "" || rem == "")
			continue
		remotes[rem] = 1
		lat[mode, rem] = lat[mode, rem] " " field(e[i], "ours_ns")
		# every mode entry of a point repeats the same kernel measurement
		if (!((rem, FILENAME) in kseen)) {
			kseen[rem, FILENAME] = 1
			lat["kernel", rem] = lat["kernel", rem] " " field(e[i], "kernel_ns")
		}
	}
}
function out(    f, i, key, v, t, st, xmin, xmax, rl, nr, r, m, j, modes, line, runs_txt) {
	f = dir "/ratios.dat"
	xmin = 0.01
	xmax = 10
	for (i = 1; i <= nrows; i++) {
		key = order[i]
		v = median(ratio[key])
		t = (case_of[key] in target) ? target[case_of[key]] : 0
		st = t == 0 ? 2 : (v + 0 <= t + 0 ? 0 : 1)
		printf "\"%s\" %d %.6g %s %d\n", key, nrows - i, v, t, st > f
		while (v + 0 > 0 && v + 0 < xmin * 2) xmin /= 10
		while (v + 0 > xmax / 3 || t + 0 > xmax / 3) xmax *= 10
	}
	close(f)
	f = dir "/sweep.dat"
	nr = 0
	for (r in remotes)
		rl[++nr] = r + 0
	for (i = 2; i <= nr; i++)
		for (j = i; j > 1 && rl[j - 1] > rl[j]; j--) {
			t = rl[j]; rl[j] = rl[j - 1]; rl[j - 1] = t
		}
	split("signal rcu rcu_deferred kernel", modes, " ")
	for (i = 1; i <= nr; i++) {
		line = rl[i]
		for (m = 1; m <= 4; m++)
			line = line " " (((modes[m], rl[i]) in lat) ? median(lat[modes[m], rl[i]]) : "?")
		print line > f
	}
	close(f)
	runs_txt = ""
	for (i = 1; i <= nbenches; i++)
		runs_txt = runs_txt (i > 1 ? ", " : "") benches[i] " x" runs[benches[i]]
	f = dir "/vars.gp"
	printf "nrows = %d\nxmin = %g\nxmax = %g\n", nrows, xmin, xmax > f
	printf "nsweep = %d\nmaxremotes = %d\n", nr, (nr ? rl[nr] : 1) > f
	printf "nproc = \"%s\"\nruns = \"%s\"\nsweepruns = %d\n", (nproc == "" ? "?" : nproc), runs_txt, \
		(runs["shootdown"] + 0) > f
	close(f)
}
' "${files[@]}"

mkdir -p "$OUT"
gnuplot -e "datadir='$TMP'; outdir='$OUT'" "$ROOT/scripts/plots.gp"
if grep -q '^nsweep = 0$' "$TMP/vars.gp"; then
	echo "plots: wrote $OUT/ratios.png" >&2
else
	echo "plots: wrote $OUT/latency_vs_remotes.png and $OUT/ratios.png" >&2
fi
