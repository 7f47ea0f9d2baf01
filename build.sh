#!/usr/bin/env bash
# libsoftmmu's one entry point.
#
#   ./build.sh bench   release build in build/, then run the headline benches
#   ./build.sh test    build and test plain (build/), ThreadSanitizer
#                      (build-tsan/) and AddressSanitizer+UBSan (build-asan/),
#                      then the API fuzzer (build-fuzz/: clang, SMMU_FUZZ=ON,
#                      only the fuzz targets and the ctest -R fuzz tests: a
#                      bounded libFuzzer run and the corpus replay), then
#                      install build/ to build/stage and build the outside
#                      project (test/outside) against it with CMake and with
#                      pkg-config.  Ends with "N passed, M failed"; exits
#                      non-zero if anything failed.
#
# Both modes first run scripts/setup.sh (installs missing Debian packages).
# JOBS (default 2) sets the build and ctest parallelism.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$PWD
JOBS=${JOBS:-2}

# The benches the README calls headline, run by `./build.sh bench`.
HEADLINE_BENCHES=(bench-access bench-unmap bench-shootdown)

usage() {
	echo "usage: $0 bench|test" >&2
	exit 2
}

[ $# -eq 1 ] || usage
MODE=$1
case "$MODE" in
bench | test) ;;
*) usage ;;
esac

say() { printf '\n==> %s\n' "$*"; }

# configure_and_build DIR [cmake -D args...]
configure_and_build() {
	local dir=$1
	shift
	say "configure $dir $*"
	cmake -S "$ROOT" -B "$ROOT/$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" &&
		say "build $dir" &&
		cmake --build "$ROOT/$dir" -j "$JOBS"
}

# The release build in build/: the one the benches, the install and the
# outside project use.
PLAIN_ARGS=(-DSMMU_SANITIZE= -DSMMU_WERROR=ON)

say "setup"
"$ROOT/scripts/setup.sh"

# ---------------------------------------------------------------- bench
if [ "$MODE" = bench ]; then
	configure_and_build build "${PLAIN_ARGS[@]}"
	for b in "${HEADLINE_BENCHES[@]}"; do
		if [ ! -x "build/$b" ]; then
			say "$b: not built (no bench/$b.c yet), skipped"
			continue
		fi
		say "$b"
		"build/$b"
	done
	exit 0
fi

# ----------------------------------------------------------------- test
PASSED=0
FAILED=0
FAILURES=()

fail() {
	FAILED=$((FAILED + 1))
	FAILURES+=("$1")
	echo "FAILED: $1" >&2
}

pass() {
	PASSED=$((PASSED + 1))
	echo "ok: $1"
}

# TSan maps its shadow at fixed addresses; with high ASLR entropy (recent
# kernels with vm.mmap_rnd_bits > 28) this libtsan aborts with "unexpected
# memory mapping".  There, run the TSan suite without address randomization.
TSAN_RUN=()
if [ "$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)" -gt 28 ] &&
	setarch "$(uname -m)" -R true >/dev/null 2>&1; then
	TSAN_RUN=(setarch "$(uname -m)" -R)
fi

# run_ctest DIR [prefix command...]: run the suite, add its counts to the totals.
# CTEST_ARGS (an array) adds arguments to ctest (a test filter).
CTEST_ARGS=()
run_ctest() {
	local dir=$1
	shift
	local log="$ROOT/$dir/ctest.log" line rc=0
	say "ctest $dir"
	"$@" ctest --test-dir "$ROOT/$dir" --output-on-failure -j "$JOBS" "${CTEST_ARGS[@]}" 2>&1 | tee "$log" || rc=$?
	line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
	if [[ $line =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
		local failed=${BASH_REMATCH[1]} total=${BASH_REMATCH[2]}
		PASSED=$((PASSED + total - failed))
		FAILED=$((FAILED + failed))
		[ "$failed" -eq 0 ] || FAILURES+=("$dir: $failed of $total tests failed")
		if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
			fail "$dir: ctest exited $rc"
		fi
	elif grep -q 'No tests were found' "$log"; then
		echo "$dir: no tests yet"
		[ "$rc" -eq 0 ] || fail "$dir: ctest exited $rc"
	else
		fail "$dir: ctest exited $rc without a summary"
	fi
}

# suite DIR [cmake -D args...] [-- prefix command...]
suite() {
	local dir=$1
	shift
	local args=() prefix=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		args+=("$1")
		shift
	done
	[ $# -eq 0 ] || { shift; prefix=("$@"); }
	if configure_and_build "$dir" "${args[@]}"; then
		run_ctest "$dir" "${prefix[@]}"
	else
		fail "$dir: configure or build failed"
		return 1
	fi
}

PLAIN_OK=1
suite build "${PLAIN_ARGS[@]}" || PLAIN_OK=0
suite build-tsan -DSMMU_SANITIZE=thread -- "${TSAN_RUN[@]}" || true
suite build-asan -DSMMU_SANITIZE=address || true

# The API fuzzer: clang and libFuzzer, its own sanitizers (so SMMU_SANITIZE
# stays empty); only its targets are built and only its tests run.
say "configure build-fuzz (clang, SMMU_FUZZ=ON)"
if CC=clang cmake -S "$ROOT" -B "$ROOT/build-fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSMMU_FUZZ=ON \
	-DSMMU_SANITIZE= -DSMMU_BUILD_BENCH=OFF -DSMMU_BUILD_EXAMPLES=OFF &&
	say "build build-fuzz (fuzz targets only)" &&
	cmake --build "$ROOT/build-fuzz" -j "$JOBS" --target fuzz-api fuzz-api-replay; then
	CTEST_ARGS=(-R fuzz)
	run_ctest build-fuzz
	CTEST_ARGS=()
else
	fail "build-fuzz: configure or build failed"
fi

# Every symbol libsoftmmu.so exports is API (smmu_*); the rest is hidden.
if [ "$PLAIN_OK" = 1 ]; then
	say "exported symbols"
	leaked=$(nm -D --defined-only "$ROOT/build/libsoftmmu.so" | awk '$2 ~ /^[TDBRVW]$/ && $3 !~ /^smmu_/ {print $3}')
	if [ -z "$leaked" ]; then
		pass "libsoftmmu.so exports only smmu_* symbols"
	else
		fail "libsoftmmu.so exports non-API symbols: $(tr '\n' ' ' <<<"$leaked")"
	fi
fi

# Install the plain build to a staging prefix and build the outside project
# against it, as a user would.
STAGE=$ROOT/build/stage
run_outside() { # NAME DIR: run DIR/outside and DIR/outside-static
	local name=$1 dir=$2 out ok=1
	for exe in outside outside-static; do
		if out=$(LD_LIBRARY_PATH="$STAGE/${LIBDIR:-lib}" "$dir/$exe" 2>&1) && [ "$out" = "outside project: ok" ]; then
			echo "$name $exe: $out"
		else
			echo "$out" >&2
			ok=0
		fi
	done
	[ "$ok" = 1 ]
}

if [ "$PLAIN_OK" = 1 ]; then
	say "install build/ to $STAGE"
	rm -rf "$STAGE"
	if cmake --install "$ROOT/build" --prefix "$STAGE" >/dev/null; then
		LIBDIR=$(cd "$STAGE" && dirname "$(find . -name libsoftmmu.so -print -quit)")
		LIBDIR=${LIBDIR#./}

		say "outside project: CMake find_package(softmmu)"
		rm -rf "$ROOT/build/outside-cmake"
		if cmake -S "$ROOT/test/outside" -B "$ROOT/build/outside-cmake" -DCMAKE_PREFIX_PATH="$STAGE" \
			-DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
			cmake --build "$ROOT/build/outside-cmake" -j "$JOBS" &&
			run_outside cmake "$ROOT/build/outside-cmake"; then
			pass "outside project via find_package"
		else
			fail "outside project via find_package"
		fi

		say "outside project: pkg-config"
		rm -rf "$ROOT/build/outside-pkgconfig"
		mkdir -p "$ROOT/build/outside-pkgconfig"
		if PKG_CONFIG_PATH="$STAGE/$LIBDIR/pkgconfig" make -s -f "$ROOT/test/outside/Makefile" \
			OUT="$ROOT/build/outside-pkgconfig" &&
			run_outside pkg-config "$ROOT/build/outside-pkgconfig"; then
			pass "outside project via pkg-config"
		else
			fail "outside project via pkg-config"
		fi
	else
		fail "cmake --install build"
	fi
else
	fail "outside project: skipped, build/ did not build"
fi

say "summary"
for f in "${FAILURES[@]}"; do
	echo "  failed: $f"
done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
