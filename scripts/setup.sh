#!/usr/bin/env bash
# Install what the build needs (Debian 12), and nothing when it is all there.
#
#   scripts/setup.sh [extra-package ...]
#
# Add a package the project always needs to PACKAGES below; a one-off need
# can be passed as an argument.  Runs apt-get as root, or through sudo when
# not root and sudo exists.
set -euo pipefail

PACKAGES=(
	gcc
	make
	cmake
	pkg-config
	binutils        # objdump: bench-access counts the fast path's instructions
	liburcu-dev     # RCU shootdown (QSBR)
	libjemalloc-dev # the library's allocator
	libcriterion-dev
	gnuplot-nox     # scripts/plots.sh: the README's charts
	spin            # formal/: model checking of the shootdown protocols
	clang           # build-fuzz: the libFuzzer harness (test/fuzz)
	libclang-rt-14-dev # libFuzzer and the sanitizer runtimes for clang 14
)
PACKAGES+=("$@")

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for p in "${PACKAGES[@]}"; do
	installed "$p" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}" >&2
as_root=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		as_root=(sudo)
	else
		echo "setup: not root and no sudo; install as root: ${missing[*]}" >&2
		exit 1
	fi
fi
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
