#!/usr/bin/env bash
# Builds the JavaScript engine, internal/jsrt/engine/quickjs.wasm: QuickJS
# from Debian's source package (trixie, quickjs 2025.04.26-1) with the glue
# internal/jsrt/engine/engine.c, for wasm32-wasi as a Cloister reactor
# (docs/reactor-abi.md), with Debian's clang and wasi-libc. docs/js.md says
# why and how.
#
# Usage:
#   scripts/jsengine.sh           rebuild internal/jsrt/engine/quickjs.wasm
#   scripts/jsengine.sh --check   rebuild into a temporary directory and
#                                 compare byte for byte with the checked-in
#                                 file; exit 1 if it differs
#
# The source comes from Debian's archive through apt ("apt-get source
# --download-only"), with a private apt configuration that adds trixie's
# deb-src index (signed by Debian's archive key, already on the machine), so
# the machine's own apt sources are not touched. Whatever apt fetched, the
# upstream tarball must have the sha256 pinned below, or the build stops.
#
# Environment:
#   QUICKJS_ORIG   an already downloaded quickjs_2025.04.26.orig.tar.xz
#                  (still checked against the pin); skips apt
#   WASI_SYSROOT   as in scripts/fixtures.sh
set -euo pipefail

usage() {
	echo "usage: $0 [--check]" >&2
	exit 2
}
check=false
case $# in
0) ;;
1) [[ $1 == --check ]] || usage; check=true ;;
*) usage ;;
esac

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out_rel=internal/jsrt/engine/quickjs.wasm

qjs_version=2025.04.26
qjs_debian=2025.04.26-1
qjs_orig=quickjs_${qjs_version}.orig.tar.xz
qjs_orig_sha256=ec81da5b3249ed648dbc7df4a1654988910e66a118d9b71cb63534216efcfbbe

for tool in clang wasm-ld tar sha256sum; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "jsengine: '$tool' not found in PATH" >&2
		exit 1
	}
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/jsengine.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

orig=${QUICKJS_ORIG:-}
if [[ -z $orig ]]; then
	command -v apt-get >/dev/null 2>&1 || {
		echo "jsengine: apt-get not found; set QUICKJS_ORIG to $qjs_orig" >&2
		exit 1
	}
	apt=$tmp/apt
	mkdir -p "$apt/sources.d" "$apt/lists/partial" "$apt/cache/archives/partial" "$tmp/dl"
	cat >"$apt/sources.d/trixie-src.sources" <<-EOF
		Types: deb-src
		URIs: http://deb.debian.org/debian
		Suites: trixie
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
	aptopts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/sources.d"
		-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
		-o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
	echo "jsengine: fetching Debian source quickjs=$qjs_debian" >&2
	apt-get "${aptopts[@]}" -qq update >&2
	(cd "$tmp/dl" && apt-get "${aptopts[@]}" -qq source --download-only "quickjs=$qjs_debian" >&2)
	orig=$tmp/dl/$qjs_orig
fi
got=$(sha256sum "$orig" | cut -d' ' -f1)
if [[ $got != "$qjs_orig_sha256" ]]; then
	echo "jsengine: $orig has sha256 $got, want $qjs_orig_sha256" >&2
	exit 1
fi

src=$tmp/src
mkdir -p "$src"
tar -xJf "$orig" -C "$src" --strip-components=1

# Two build adjustments, both for wasm32-wasi (single-threaded, no setjmp):
#  - Atomics (SharedArrayBuffer waits) need pthreads: turned off, as
#    QuickJS itself does for Emscripten.
#  - dtoa.c includes <setjmp.h> but uses nothing from it; wasi-libc has none,
#    so an empty one is put first on the include path.
sed -i 's|^#define CONFIG_ATOMICS$|/* CONFIG_ATOMICS off: wasm32-wasi is single-threaded (scripts/jsengine.sh) */|' "$src/quickjs.c"
grep -q 'CONFIG_ATOMICS off' "$src/quickjs.c" || {
	echo "jsengine: quickjs.c did not have the expected CONFIG_ATOMICS line" >&2
	exit 1
}
mkdir -p "$src/shim"
echo '/* empty: dtoa.c includes setjmp.h without using it (scripts/jsengine.sh) */' >"$src/shim/setjmp.h"
cp "$repo/internal/jsrt/engine/engine.c" "$repo/sdk/c/cloister.h" "$src/"

sysroot=()
if [[ -n ${WASI_SYSROOT:-} ]]; then
	sysroot=(--sysroot="$WASI_SYSROOT")
elif [[ -d /usr/share/wasi-sysroot ]]; then
	sysroot=(--sysroot=/usr/share/wasi-sysroot)
fi

out=$tmp/quickjs.wasm
# Relative source names (from inside $src) keep paths out of the binary
# (assert messages carry __FILE__), so rebuilds are byte-identical.
# The shadow stack is 1 MiB and placed first in memory: a C stack overflow
# then runs below address 0 and traps instead of corrupting the heap.
(
	cd "$src"
	clang --target=wasm32-wasi "${sysroot[@]}" -mexec-model=reactor -O2 \
		-Ishim -I. -DCONFIG_VERSION="\"$qjs_version\"" -D_GNU_SOURCE \
		-Wno-implicit-function-declaration \
		-Wl,--strip-all -Wl,-z,stack-size=1048576 -Wl,--stack-first \
		-o "$out" engine.c quickjs.c libregexp.c libunicode.c cutils.c dtoa.c
)

if ! $check; then
	cp "$out" "$repo/$out_rel"
	echo "jsengine: built $out_rel ($(wc -c <"$out") bytes, sha256 $(sha256sum "$out" | cut -d' ' -f1))"
	exit 0
fi
if ! cmp -s "$out" "$repo/$out_rel"; then
	echo "jsengine: DIFFERS $out_rel (rebuilt: $(wc -c <"$out") bytes, checked in: $(wc -c <"$repo/$out_rel" 2>/dev/null || echo missing) bytes); run scripts/jsengine.sh" >&2
	exit 1
fi
echo "jsengine: $out_rel matches its sources"
