#!/usr/bin/env bash
# Rebuilds every checked-in WebAssembly fixture from its source, beside it:
#
#   **/*.wat                  -> same path with .wasm      (wat2wasm)
#   examples/X-c/main.c       -> examples/X-c/X-c.wasm     (clang, wasm32-wasi)
#   examples/X-go/ (package)  -> examples/X-go/X-go.wasm   (go, wasip1/wasm)
#   internal/*/testdata/X.c   -> same path with .wasm      (clang, wasm32-wasi)
#
# An example directory whose name starts with "reactor-" holds a reactor for
# the Cloister reactor ABI v1 (docs/reactor-abi.md) instead of a WASI command.
# The -c / -go suffix still picks the language; the build makes a reactor:
#
#   examples/reactor-c/main.c -> examples/reactor-c/reactor-c.wasm
#                                (clang -mexec-model=reactor -I sdk/c)
#   examples/reactor-go/      -> examples/reactor-go/reactor-go.wasm
#                                (go build -buildmode=c-shared)
#
# and likewise for examples/reactor-X-c/ and examples/reactor-X-go/.
#
# Usage:
#   scripts/fixtures.sh           rebuild all fixtures in place
#   scripts/fixtures.sh --check   rebuild into a temporary directory and compare
#                                 byte for byte with the checked-in .wasm files;
#                                 exit 1 if any differs or is missing
#
# Environment:
#   WASI_SYSROOT  wasi-libc sysroot for clang. Default: /usr/share/wasi-sysroot
#                 if it exists, otherwise clang's built-in search paths (e.g.
#                 Debian's wasi-libc package installs into those).
#
# All three toolchains produce byte-identical output on rebuild (no debug
# names, no paths, no timestamps), which is what makes --check meaningful.
# The bytes do depend on the toolchain versions (the Go version is embedded
# in Go binaries; clang/wasi-libc/wabt versions change code generation), so
# --check is only expected to pass with the same toolchains.
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
cd "$repo"

need() {
	command -v "$1" >/dev/null 2>&1 || {
		echo "fixtures: '$1' not found in PATH; it is needed to build $2" >&2
		exit 1
	}
}

clang_sysroot=()
if [[ -n ${WASI_SYSROOT:-} ]]; then
	clang_sysroot=(--sysroot="$WASI_SYSROOT")
elif [[ -d /usr/share/wasi-sysroot ]]; then
	clang_sysroot=(--sysroot=/usr/share/wasi-sysroot)
fi

# Every fixture as "kind<TAB>source<TAB>output", output relative to the repo.
targets=()
while IFS= read -r -d '' wat; do
	wat=${wat#./}
	targets+=("wat"$'\t'"$wat"$'\t'"${wat%.wat}.wasm")
done < <(find . -name '*.wat' -not -path './.git/*' -print0 | LC_ALL=C sort -z)

shopt -s nullglob
for src in examples/*-c/main.c; do
	dir=$(dirname "$src")
	name=$(basename "$dir")
	kind=c
	[[ $name == reactor-* ]] && kind=c-reactor
	targets+=("$kind"$'\t'"$src"$'\t'"$dir/$name.wasm")
done
# C test fixtures: internal/*/testdata/X.c -> X.wasm beside it (commands).
for src in internal/*/testdata/*.c; do
	targets+=("c"$'\t'"$src"$'\t'"${src%.c}.wasm")
done
for dir in examples/*-go/; do
	dir=${dir%/}
	name=$(basename "$dir")
	kind=go
	[[ $name == reactor-* ]] && kind=go-reactor
	targets+=("$kind"$'\t'"./$dir"$'\t'"$dir/$name.wasm")
done
shopt -u nullglob

if ((${#targets[@]} == 0)); then
	echo "fixtures: no fixture sources found" >&2
	exit 1
fi

for t in "${targets[@]}"; do
	case ${t%%$'\t'*} in
	wat) need wat2wasm "${t#*$'\t'}" ;;
	c | c-reactor) need clang "${t#*$'\t'}" ;;
	go | go-reactor) need go "${t#*$'\t'}" ;;
	esac
done

# build KIND SOURCE OUTPUT
build() {
	local kind=$1 src=$2 out=$3
	mkdir -p "$(dirname "$out")"
	case $kind in
	wat)
		wat2wasm -o "$out" "$src"
		;;
	c)
		clang --target=wasm32-wasi "${clang_sysroot[@]}" -O2 -Wl,--strip-all \
			-o "$out" "$src"
		;;
	c-reactor)
		# A WASI reactor: exports _initialize instead of _start. The SDK
		# (sdk/c/cloister.h) is header-only.
		clang --target=wasm32-wasi "${clang_sysroot[@]}" -mexec-model=reactor \
			-O2 -I sdk/c -Wl,--strip-all -o "$out" "$src"
		;;
	go | go-reactor)
		# CGO_ENABLED and GOWASM would be recorded in the binary; use the
		# wasip1 defaults so the result matches a plain build in a clean
		# environment. c-shared makes a WASI reactor: it exports
		# _initialize (package initialisation; main is never run) and the
		# //go:wasmexport functions.
		local mode=()
		[[ $kind == go-reactor ]] && mode=(-buildmode=c-shared)
		env -u CGO_ENABLED -u GOWASM GOOS=wasip1 GOARCH=wasm \
			go build "${mode[@]}" -trimpath -buildvcs=false -o "$out" "$src"
		;;
	esac
}

if ! $check; then
	for t in "${targets[@]}"; do
		IFS=$'\t' read -r kind src out <<<"$t"
		echo "fixtures: $src -> $out"
		build "$kind" "$src" "$out"
	done
	echo "fixtures: rebuilt ${#targets[@]} fixture(s)"
	exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fixtures.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

bad=0
for t in "${targets[@]}"; do
	IFS=$'\t' read -r kind src out <<<"$t"
	build "$kind" "$src" "$tmp/$out"
	if [[ ! -f $out ]]; then
		echo "fixtures: MISSING $out (built from $src)"
		bad=$((bad + 1))
	elif ! cmp -s "$tmp/$out" "$out"; then
		echo "fixtures: DIFFERS $out (rebuilt from $src: $(wc -c <"$tmp/$out") bytes, checked in: $(wc -c <"$out") bytes)"
		bad=$((bad + 1))
	fi
done

if ((bad > 0)); then
	echo "fixtures: $bad of ${#targets[@]} fixture(s) out of date; run scripts/fixtures.sh" >&2
	exit 1
fi
echo "fixtures: all ${#targets[@]} fixture(s) match their sources"
