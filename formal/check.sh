#!/usr/bin/env bash
# Model-check the shootdown protocols with spin (formal/README.md).
#
#   formal/check.sh [-f] [-j N] [-k] [name-pattern]
#
# Each check: spin -a on a model with its -D settings, gcc on pan.c, then
# pan.  "pass" checks are exhaustive and must end with errors: 0, a
# completed search and no depth truncation; "fail:assert" / "fail:end"
# checks run a deliberately broken variant and must find an assertion
# violation / an invalid end state (deadlock); "bounded" checks run as far
# as a time and memory bound allows and must find no error.  One line per
# check; exit status 1 on any unexpected result.  -j: checks in parallel
# (default 2: the machines have two cores).  -k: keep the work directory
# (trails of the violations: spin -t -p -DBREAK=N ... model.pml in it).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
jobs=2
keep=0
full=0
while getopts "fj:k" opt; do
	case $opt in
	f) full=1 ;;
	j) jobs=$OPTARG ;;
	k) keep=1 ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
pattern=${1:-}

command -v spin >/dev/null || { echo "check.sh: spin not found (scripts/setup.sh installs it)" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/smmu-formal.XXXXXX")
if [ "$keep" = 0 ]; then trap 'rm -rf "$work"' EXIT; else echo "work directory: $work"; fi

# Memory bound for a pan run (MiB), and the time bound (s) of "bounded" checks.
MEMLIM=1500
BOUND_SECONDS=15

# set | name | model | expect | model -D settings | pan compile flags
# Set "quick" runs by default (and under ctest); -f adds "full": larger
# exhaustive runs (minutes on a busy two-core machine) and the reachability
# probes (PROBE=N: spin must reach each situation the passes rely on).
CHECKS=(
	# the longest first: two at a time, it then overlaps all the others
	"full |rcu-deferred-move-2init|rcu.pml   |pass       |-DMOVE=1 -DDEFERRED=1 -DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=0|-DCOLLAPSE"
	"quick|sig-3cpu-2init         |signal.pml|pass       |-DNCPU=3 -DNINIT=2 -DNCI=2 -DNACC=1 -DCYCLE=0|-DCOLLAPSE"
	"quick|sig-2cpu-2init         |signal.pml|pass       |-DNCPU=2 -DNINIT=2 -DNCI=2 -DNACC=2 -DCYCLE=1|-DCOLLAPSE"
	"quick|sig-2cpu-collector     |signal.pml|pass       |-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=0|-DCOLLAPSE"
	"full |sig-2cpu-collector-cyc |signal.pml|pass       |-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=1|-DCOLLAPSE"
	"quick|sig-3cpu-2init-cyc     |signal.pml|bounded    |-DNCPU=3 -DNINIT=2 -DNCI=2 -DNACC=1 -DCYCLE=1|-DBITSTATE -w28"
	"quick|sig-break1-no-defer    |signal.pml|fail:assert|-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=0 -DBREAK=1|-DCOLLAPSE"
	"quick|sig-break2-ack-store   |signal.pml|fail:end   |-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=0 -DBREAK=2|-DCOLLAPSE"
	"quick|sig-break3-clear-late  |signal.pml|fail:end   |-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=0 -DBREAK=3|-DCOLLAPSE"
	"quick|sig-break4-flag-first  |signal.pml|fail:end   |-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=0 -DBREAK=4|-DCOLLAPSE"
	"quick|sig-break6-online-late |signal.pml|fail:assert|-DNCPU=2 -DNINIT=2 -DNCI=2 -DNACC=2 -DCYCLE=1 -DBREAK=6|-DCOLLAPSE"
	"quick|sig-break7-exit-order  |signal.pml|fail:end   |-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=0 -DBREAK=7|-DCOLLAPSE"
	"quick|rcu-strict             |rcu.pml   |pass       |-DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=1|-DCOLLAPSE"
	"quick|rcu-deferred           |rcu.pml   |pass       |-DDEFERRED=1 -DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=0|-DCOLLAPSE"
	"full |rcu-deferred-cyc       |rcu.pml   |pass       |-DDEFERRED=1 -DNCPU=2 -DNINIT=2 -DNACC=1 -DNQS=1 -DCYCLE=1|-DCOLLAPSE"
	"full |rcu-deferred-bound     |rcu.pml   |pass       |-DDEFERRED=1 -DBOUND=1 -DNCPU=2 -DNINIT=2 -DNACC=1 -DNQS=1 -DCYCLE=0|-DCOLLAPSE"
	# mremap of page 0 to an empty slot by CPU 0, which then unmaps it
	# (rcu-*-move), or CPU 1 unmaps it (rcu-*-move-other)
	"quick|rcu-strict-move        |rcu.pml   |pass       |-DMOVE=1 -DNCPU=2 -DNINIT=1 -DNACC=2 -DNQS=1 -DCYCLE=1|-DCOLLAPSE"
	"quick|rcu-deferred-move      |rcu.pml   |pass       |-DMOVE=1 -DDEFERRED=1 -DNCPU=2 -DNINIT=1 -DNACC=2 -DNQS=1 -DCYCLE=1|-DCOLLAPSE"
	"quick|rcu-strict-move-other  |rcu.pml   |pass       |-DMOVE=1 -DDUNMAP=1 -DNCPU=2 -DNINIT=1 -DNACC=2 -DNQS=1 -DCYCLE=1|-DCOLLAPSE"
	# a CPU's own bit on a moved PTE may stand for its entry at the old
	# address: its own flush catches up first (BREAK=12 does not; README)
	"quick|rcu-def-move-other     |rcu.pml   |pass       |-DMOVE=1 -DDEFERRED=1 -DDUNMAP=1 -DNCPU=2 -DNINIT=1 -DNACC=2 -DNQS=1 -DCYCLE=0|-DCOLLAPSE"
	"quick|rcu-def-break12-catchup|rcu.pml   |fail:assert|-DBREAK=12 -DMOVE=1 -DDEFERRED=1 -DDUNMAP=1 -DNCPU=2 -DNINIT=1 -DNACC=2 -DNQS=1 -DCYCLE=0|-DCOLLAPSE"
	"full |rcu-def-move-other-cyc |rcu.pml   |pass       |-DMOVE=1 -DDEFERRED=1 -DDUNMAP=1 -DNCPU=2 -DNINIT=1 -DNACC=2 -DNQS=1 -DCYCLE=1|-DCOLLAPSE"
	# mprotect of page 0 to PROT_NONE by CPU 0 before it unmaps it; in
	# deferred mode the unmap takes the PROTNONE entry's bits (BREAK=13
	# does not; README)
	"quick|rcu-strict-mprot       |rcu.pml   |pass       |-DMPROT=1 -DNCPU=2 -DNINIT=1 -DNACC=2 -DNQS=1 -DCYCLE=1|-DCOLLAPSE"
	"quick|rcu-def-mprot          |rcu.pml   |pass       |-DMPROT=1 -DDEFERRED=1 -DNCPU=2 -DNINIT=1 -DNACC=2 -DNQS=1 -DCYCLE=1|-DCOLLAPSE"
	"quick|rcu-def-break13-protnon|rcu.pml   |fail:assert|-DBREAK=13 -DMPROT=1 -DDEFERRED=1 -DNCPU=2 -DNINIT=1 -DNACC=2 -DNQS=1 -DCYCLE=1|-DCOLLAPSE"
	"full |rcu-strict-move-2init  |rcu.pml   |pass       |-DMOVE=1 -DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=0|-DCOLLAPSE"
	"full |rcu-deferred-move-3cpu |rcu.pml   |pass       |-DMOVE=1 -DDEFERRED=1 -DNCPU=3 -DNINIT=1 -DNACC=1 -DNQS=1 -DCYCLE=0|-DCOLLAPSE"
	"full |reach-sig-1-defer      |signal.pml|fail:assert|-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=1 -DPROBE=1|-DCOLLAPSE"
	"full |reach-sig-2-exit-slow  |signal.pml|fail:assert|-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=1 -DPROBE=2|-DCOLLAPSE"
	"full |reach-sig-3-torn-take  |signal.pml|fail:assert|-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=1 -DPROBE=3|-DCOLLAPSE"
	"full |reach-sig-4-merged     |signal.pml|fail:assert|-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=1 -DPROBE=4|-DCOLLAPSE"
	"full |reach-sig-5-offline    |signal.pml|fail:assert|-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=1 -DPROBE=5|-DCOLLAPSE"
	"full |reach-sig-6-catch-up   |signal.pml|fail:assert|-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=1 -DPROBE=6|-DCOLLAPSE"
	"full |reach-sig-7-sig-in-hdl |signal.pml|fail:assert|-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=1 -DPROBE=7|-DCOLLAPSE"
	"full |reach-sig-8-old-ack    |signal.pml|fail:assert|-DNCPU=2 -DNINIT=2 -DNCI=1 -DNACC=1 -DCYCLE=1 -DPROBE=8|-DCOLLAPSE"
	"full |reach-rcu-1-catch-up   |rcu.pml   |fail:assert|-DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=1 -DPROBE=1|-DCOLLAPSE"
	"full |reach-rcu-2-reader-qs  |rcu.pml   |fail:assert|-DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=1 -DPROBE=2|-DCOLLAPSE"
	"full |reach-rcu-3-skip       |rcu.pml   |fail:assert|-DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=1 -DPROBE=3|-DCOLLAPSE"
	"full |reach-rcu-4-kept-bit   |rcu.pml   |fail:assert|-DMOVE=1 -DDEFERRED=1 -DNCPU=2 -DNINIT=1 -DNACC=2 -DNQS=1 -DCYCLE=1 -DPROBE=4|-DCOLLAPSE"
	"full |reach-rcu-5-own-gen    |rcu.pml   |fail:assert|-DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=1 -DPROBE=5|-DCOLLAPSE"
	"full |unreach-rcu-4-strict   |rcu.pml   |pass       |-DMOVE=1 -DNCPU=2 -DNINIT=1 -DNACC=2 -DNQS=1 -DCYCLE=1 -DPROBE=4|-DCOLLAPSE"
	"quick|rcu-break5-qs-order    |rcu.pml   |fail:assert|-DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=1 -DBREAK=5|-DCOLLAPSE"
	"quick|rcu-break6-online-ord  |rcu.pml   |fail:assert|-DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=1 -DBREAK=6|-DCOLLAPSE"
	"quick|rcu-deferred-break5    |rcu.pml   |fail:assert|-DDEFERRED=1 -DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=0 -DBREAK=5|-DCOLLAPSE"
	"quick|rcu-def-break8-mv-bits |rcu.pml   |fail:assert|-DMOVE=1 -DDEFERRED=1 -DNCPU=2 -DNINIT=1 -DNACC=2 -DNQS=1 -DCYCLE=0 -DBREAK=8|-DCOLLAPSE"
	"quick|rcu-break9-bit-late    |rcu.pml   |fail:assert|-DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=0 -DBREAK=9|-DCOLLAPSE"
	"quick|rcu-def-break9-bit-late|rcu.pml   |fail:assert|-DDEFERRED=1 -DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=0 -DBREAK=9|-DCOLLAPSE"
	"quick|rcu-break10-skip-always|rcu.pml   |fail:assert|-DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=0 -DBREAK=10|-DCOLLAPSE"
	"quick|rcu-def-break10-skip   |rcu.pml   |fail:assert|-DDEFERRED=1 -DNCPU=2 -DNINIT=2 -DNACC=2 -DNQS=1 -DCYCLE=0 -DBREAK=10|-DCOLLAPSE"
	"quick|rcu-break11-mv-no-bits |rcu.pml   |fail:assert|-DMOVE=1 -DNCPU=2 -DNINIT=1 -DNACC=2 -DNQS=1 -DCYCLE=0 -DBREAK=11|-DCOLLAPSE"
)

trim() { local s=$1; s=${s#"${s%%[![:space:]]*}"}; printf '%s' "${s%"${s##*[![:space:]]}"}"; }

# Run one check in its own directory; write its report line to result.
run_check() {
	local name=$1 model=$2 expect=$3 defs=$4 panflags=$5
	local dir="$work/$name"
	mkdir -p "$dir"
	cp "$here/$model" "$dir/"
	(
		cd "$dir"
		local status="ok" detail=""
		# shellcheck disable=SC2086 # the settings are words
		if ! spin $defs -a "$model" >spin.log 2>&1; then
			echo "$(printf '%-24s' "$name") UNEXPECTED: spin -a failed ($(head -1 spin.log))" >result
			exit 0
		fi
		# A broken variant stops at its first violation: compiling pan.c
		# with -O2 would take longer than the search.
		local opt=-O2
		case "$expect" in fail:*) opt=-O0 ;; esac
		local cflags="$opt -w -DSAFETY -DNOFAIR -DMEMLIM=$MEMLIM"
		# shellcheck disable=SC2086
		if ! gcc $cflags ${panflags%% -w*} -o pan pan.c >gcc.log 2>&1; then
			echo "$(printf '%-24s' "$name") UNEXPECTED: gcc failed ($(head -1 gcc.log))" >result
			exit 0
		fi
		local runflags="-m400000"
		case "$panflags" in *" -w"*) runflags="$runflags -w${panflags##* -w}" ;; esac
		local t0 t1
		t0=$(date +%s.%N)
		if [ "$expect" = bounded ]; then
			# SIGINT: pan stops and prints its statistics.
			# shellcheck disable=SC2086
			timeout -s INT "$BOUND_SECONDS" ./pan $runflags >pan.log 2>&1 || true
		else
			# shellcheck disable=SC2086
			./pan $runflags >pan.log 2>&1 || true
		fi
		t1=$(date +%s.%N)
		local errors states secs
		errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.log | tail -1)
		states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' pan.log | tail -1)
		secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
		local incomplete=0 truncated=0
		grep -q "Search not completed" pan.log && incomplete=1
		grep -q "max search depth too small" pan.log && truncated=1
		local found
		found=$(grep -m1 "^pan:1: " pan.log | sed 's/ (at depth.*//' || true)
		[ -n "$errors" ] || { status="UNEXPECTED"; detail="no result from pan: $(tail -1 pan.log)"; }
		if [ "$status" = ok ]; then
			case "$expect" in
			pass)
				if [ "$errors" != 0 ]; then status="UNEXPECTED"; detail="$found"
				elif [ $incomplete = 1 ] || [ $truncated = 1 ]; then status="UNEXPECTED"; detail="search not completed"
				else detail="exhaustive, errors: 0"; fi ;;
			bounded)
				if [ "$errors" != 0 ]; then status="UNEXPECTED"; detail="$found"
				else
					detail="errors: 0, bitstate, stopped after ${BOUND_SECONDS}s"
					[ $incomplete = 1 ] || grep -q "Interrupted" pan.log || detail="errors: 0, bitstate search completed"
				fi ;;
			fail:assert | fail:end)
				local want="assertion violated"
				[ "$expect" = fail:end ] && want="invalid end state"
				if [ "$errors" = 0 ]; then status="UNEXPECTED"; detail="no violation found"
				elif [[ "$found" != *"$want"* ]]; then status="UNEXPECTED"; detail="found: $found"
				else detail="violation as expected: ${found#pan:1: }"; fi ;;
			esac
		fi
		printf '%-24s %-11s %-10s states %-10s %6ss  %s\n' "$name" "$expect" "$status" "${states:-?}" "$secs" \
			"$detail" >result
	)
}

names=()
running=0
for c in "${CHECKS[@]}"; do
	IFS='|' read -r set name model expect defs panflags <<<"$c"
	set=$(trim "$set")
	[ "$set" = quick ] || [ "$full" = 1 ] || continue
	name=$(trim "$name"); model=$(trim "$model"); expect=$(trim "$expect")
	defs=$(trim "$defs"); panflags=$(trim "$panflags")
	[ -z "$pattern" ] || [[ "$name" == *$pattern* ]] || continue
	names+=("$name")
	run_check "$name" "$model" "$expect" "$defs" "$panflags" &
	running=$((running + 1))
	if [ "$running" -ge "$jobs" ]; then
		wait -n || true
		running=$((running - 1))
	fi
done
wait

bad=0
for name in "${names[@]}"; do
	line=$(cat "$work/$name/result" 2>/dev/null || echo "$name UNEXPECTED: no result")
	echo "$line"
	[[ "$line" == *UNEXPECTED* ]] && bad=$((bad + 1))
done
if [ "$bad" -ne 0 ]; then
	echo "check.sh: $bad unexpected result(s)"
	exit 1
fi
echo "check.sh: all ${#names[@]} checks as expected"
