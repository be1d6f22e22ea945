#!/usr/bin/env bash
# Builds the Python engine, internal/pyrt/engine/python.wasm: CPython 3.11
# from Debian's source package (bookworm, python3.11 3.11.2-6+deb12u8, with
# Debian's patches) and zlib from Debian's zlib source package, linked with
# the glue internal/pyrt/engine/{engine.c,vfs.c} and the standard library
# frozen by internal/pyrt/engine/freeze.py (with the engine's own modules,
# _cloister.py and cloister.py), for wasm32-wasi as a Cloister
# reactor (docs/reactor-abi.md), with Debian's clang 14, lld and wasi-libc.
# docs/python.md says why and how.
#
# Usage:
#   scripts/pyengine.sh           rebuild internal/pyrt/engine/python.wasm
#   scripts/pyengine.sh --check   rebuild into a temporary directory and
#                                 compare byte for byte with the checked-in
#                                 file; exit 1 if it differs
#
# The sources come from Debian's archive through apt ("apt-get source
# --download-only"), with a private apt configuration that adds bookworm's
# deb-src index (signed by Debian's archive key, already on the machine), so
# the machine's own apt sources are not touched. Whatever apt fetched, the
# four tarballs must have the sha256 pinned below, or the build stops.
#
# The build Python, which freezes the standard library and CPython's own
# start-up modules, is Debian's /usr/bin/python3.11 (3.11.2: the engine's
# bytecode). It takes about two minutes on two cores.
#
# Environment:
#   PYENGINE_SOURCES  a directory that already holds the four tarballs below
#                     (still checked against the pins); skips apt
#   BUILD_PYTHON      the build Python (default /usr/bin/python3.11)
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
glue=$repo/internal/pyrt/engine
out_rel=internal/pyrt/engine/python.wasm

# bookworm's 3.11.2-6+deb12u9 (bookworm-security) is listed in the index but
# its files are not on the mirror; 3.11.2-6+deb12u8 is bookworm's own.
py_version=3.11.2
py_debian=3.11.2-6+deb12u8
py_orig=python3.11_${py_version}.orig.tar.gz
py_orig_sha256=2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849
py_deb=python3.11_${py_debian}.debian.tar.xz
py_deb_sha256=ece2d63c70ac0b7a401fbe6b51b0103be997c294a01a3865549be1862794ba97
zlib_debian=1:1.2.13.dfsg-1
zlib_orig=zlib_1.2.13.dfsg.orig.tar.bz2
zlib_orig_sha256=71feb7947e3c00ef125f83b79a4e529bde31171e5babe48b391f06758d1ab0a1
zlib_deb=zlib_1.2.13.dfsg-1.debian.tar.xz
zlib_deb_sha256=f66cf3d4f2d7defcd4d1fd1fb0a11ee39f1e01b42ec7d059c9dc5c1695133c44
# sys.version's build date: the date of Debian's changelog entry, not the
# day of the build.
build_date="May 12 2026"
build_time="00:00:00"

# The WASI functions the engine may import (vfs.c forwards them).
wasi_imports="clock_res_get clock_time_get environ_get environ_sizes_get fd_write poll_oneoff random_get"

build_python=${BUILD_PYTHON:-/usr/bin/python3.11}
ar=$(command -v llvm-ar-14 || command -v llvm-ar || true)
ranlib=$(command -v llvm-ranlib-14 || command -v llvm-ranlib || true)
for tool in clang wasm-ld wasm-objdump make patch tar xz bzip2 sha256sum "$build_python" "$ar" "$ranlib"; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "pyengine: '${tool:-llvm-ar or llvm-ranlib}' not found" >&2
		exit 1
	}
done
[[ -d /usr/include/wasm32-wasi && -d /usr/lib/wasm32-wasi ]] || {
	echo "pyengine: Debian's wasi-libc (/usr/include/wasm32-wasi, /usr/lib/wasm32-wasi) is not installed" >&2
	exit 1
}
[[ $("$build_python" -c 'import sys; print(sys.version.split()[0])') == "$py_version" ]] || {
	echo "pyengine: $build_python is not Python $py_version" >&2
	exit 1
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pyengine.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

dl=${PYENGINE_SOURCES:-}
if [[ -z $dl ]]; then
	command -v apt-get >/dev/null 2>&1 || {
		echo "pyengine: apt-get not found; set PYENGINE_SOURCES to a directory with $py_orig, $py_deb, $zlib_orig and $zlib_deb" >&2
		exit 1
	}
	apt=$tmp/apt
	dl=$tmp/dl
	mkdir -p "$apt/sources.d" "$apt/lists/partial" "$apt/cache/archives/partial" "$dl"
	cat >"$apt/sources.d/bookworm-src.sources" <<-EOF
		Types: deb-src
		URIs: http://deb.debian.org/debian
		Suites: bookworm
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
	aptopts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/sources.d"
		-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
		-o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
	echo "pyengine: fetching Debian sources python3.11=$py_debian zlib=$zlib_debian" >&2
	apt-get "${aptopts[@]}" -qq update >&2
	(cd "$dl" && apt-get "${aptopts[@]}" -qq source --download-only "python3.11=$py_debian" "zlib=$zlib_debian" >&2)
fi
for pin in "$py_orig $py_orig_sha256" "$py_deb $py_deb_sha256" "$zlib_orig $zlib_orig_sha256" "$zlib_deb $zlib_deb_sha256"; do
	read -r f want <<<"$pin"
	got=$(sha256sum "$dl/$f" | cut -d' ' -f1)
	if [[ $got != "$want" ]]; then
		echo "pyengine: $dl/$f has sha256 $got, want $want" >&2
		exit 1
	fi
done

# unpack DIR ORIG DEBIAN: the upstream tarball with Debian's patch series.
unpack() {
	local dir=$1 orig=$2 deb=$3 p
	mkdir -p "$dir" "$dir.debian"
	tar -xf "$orig" -C "$dir" --strip-components=1
	tar -xJf "$deb" -C "$dir.debian"
	while read -r p; do
		[[ -z $p || $p == \#* ]] && continue
		patch -d "$dir" -p1 -s -f --no-backup-if-mismatch <"$dir.debian/debian/patches/$p" || {
			echo "pyengine: Debian's patch $p does not apply" >&2
			exit 1
		}
	done <"$dir.debian/debian/patches/series"
}
unpack "$tmp/src" "$dl/$py_orig" "$dl/$py_deb"
unpack "$tmp/zlib" "$dl/$zlib_orig" "$dl/$zlib_deb"

# One adjustment to the standard library: email.utils imports socket at
# the top only for make_msgid's default domain (socket.getfqdn()). The
# engine has no socket module, so the import moves to where it is used, and
# the rest of the email package works.
sed -i -e 's/^import socket$/# import socket: in make_msgid (scripts\/pyengine.sh)/' \
	-e 's/^        domain = socket\.getfqdn()$/        import socket; domain = socket.getfqdn()/' "$tmp/src/Lib/email/utils.py"
[[ $(grep -c -e '^# import socket: in make_msgid' -e '^        import socket; domain = socket.getfqdn()$' "$tmp/src/Lib/email/utils.py") == 2 ]] || {
	echo "pyengine: Lib/email/utils.py did not have the expected socket lines" >&2
	exit 1
}

# Debian's wasi-libc has no sysroot folder: make one, with nothing but
# wasi-libc, so that clang never falls back to the host's /usr/include.
sysroot=$tmp/sysroot
mkdir -p "$sysroot/include" "$sysroot/lib"
ln -s /usr/include/wasm32-wasi "$sysroot/include/wasm32-wasi"
ln -s /usr/lib/wasm32-wasi "$sysroot/lib/wasm32-wasi"
cc="clang --target=wasm32-wasi --sysroot=$sysroot"

# Every step runs from inside $tmp with relative paths, so that no build
# path reaches the binary; PYTHONHASHSEED fixes the order in which the
# build Python marshals frozenset constants; -j2 fits the machines here.
export PYTHONHASHSEED=0 LC_ALL=C TZ=UTC
jobs=2

echo "pyengine: zlib" >&2
mkdir -p "$tmp/zbuild"
(
	cd "$tmp/zlib"
	for f in adler32 compress crc32 deflate infback inffast inflate inftrees trees uncompr zutil; do
		$cc -O2 -c "$f.c" -o "../zbuild/$f.o"
	done
	cd ../zbuild
	"$ar" rcD libz.a adler32.o compress.o crc32.o deflate.o infback.o inffast.o inflate.o inftrees.o trees.o uncompr.o zutil.o
	"$ranlib" -D libz.a
)

echo "pyengine: CPython (configure)" >&2
mkdir -p "$tmp/build"
# Modules that need the host are not built: sockets and select (no
# network), crypt. The rest of Modules/Setup.stdlib is linked in.
printf '*disabled*\n_socket\nselect\n_crypt\nxxsubtype\n' >"$tmp/build/Modules.Setup.local"
(
	cd "$tmp/build"
	mkdir -p Modules
	mv Modules.Setup.local Modules/Setup.local
	CONFIG_SITE=../src/Tools/wasm/config.site-wasm32-wasi ../src/configure -q \
		--host=wasm32-unknown-wasi --build=x86_64-pc-linux-gnu \
		--with-build-python="$build_python" \
		--disable-shared --disable-ipv6 --without-ensurepip --disable-test-modules \
		CC="$cc" CPP="$cc -E" AR="$ar" RANLIB="$ranlib" READELF=true PKG_CONFIG=false \
		CFLAGS="-O2" ZLIB_CFLAGS="-I../zlib" ZLIB_LIBS="-L../zbuild -lz" >configure.out 2>&1 || {
		cat configure.out >&2
		exit 1
	}
	echo "pyengine: CPython (make)" >&2
	make -j"$jobs" BUILD_DATE="$build_date" BUILD_TIME="$build_time" \
		libpython3.11.a Modules/_decimal/libmpdec/libmpdec.a Modules/expat/libexpat.a >make.out 2>&1 || {
		tail -40 make.out >&2
		exit 1
	}
)

echo "pyengine: freezing the standard library" >&2
cp "$glue/engine.c" "$glue/vfs.c" "$glue/freeze.py" "$glue/_cloister.py" "$glue/cloister.py" "$repo/sdk/c/cloister.h" "$tmp/"
(
	cd "$tmp"
	"$build_python" -I -S -B freeze.py src/Lib frozen.c _cloister.py cloister.py
)

echo "pyengine: linking" >&2
out=$tmp/python.wasm
# The shadow stack is 1 MiB and placed first in memory: a C stack overflow
# then runs below address 0 and traps instead of corrupting the heap.
(
	cd "$tmp"
	$cc -mexec-model=reactor -O2 -Isrc/Include -Ibuild \
		-Wl,--strip-all -Wl,-z,stack-size=1048576 -Wl,--stack-first \
		-o "$out" engine.c vfs.c frozen.c \
		build/libpython3.11.a build/Modules/_decimal/libmpdec/libmpdec.a \
		build/Modules/expat/libexpat.a zbuild/libz.a \
		-lwasi-emulated-signal -lwasi-emulated-getpid -lwasi-emulated-process-clocks -lm
)

# The engine reaches the host only through the reactor ABI, the state
# functions (cloister.state) and the WASI functions vfs.c forwards.
imports=$(wasm-objdump -j Import -x "$out" | sed -n 's/.*<- \([a-z_0-9]*\)\.\([a-z_0-9]*\)$/\1.\2/p' | LC_ALL=C sort | tr '\n' ' ')
want=$( (printf 'cloister.%s\n' input_len input_read output_write kv_get kv_put kv_delete kv_cas kv_list; printf 'wasi_snapshot_preview1.%s\n' $wasi_imports) | LC_ALL=C sort | tr '\n' ' ')
if [[ $imports != "$want" ]]; then
	echo "pyengine: the engine imports $imports; want $want" >&2
	exit 1
fi
if grep -q -a "$tmp" "$out"; then
	echo "pyengine: the engine contains the build directory's path" >&2
	exit 1
fi

if ! $check; then
	cp "$out" "$repo/$out_rel"
	echo "pyengine: built $out_rel ($(wc -c <"$out") bytes, sha256 $(sha256sum "$out" | cut -d' ' -f1))"
	exit 0
fi
if ! cmp -s "$out" "$repo/$out_rel"; then
	echo "pyengine: DIFFERS $out_rel (rebuilt: $(wc -c <"$out") bytes, checked in: $(wc -c <"$repo/$out_rel" 2>/dev/null || echo missing) bytes); run scripts/pyengine.sh" >&2
	exit 1
fi
echo "pyengine: $out_rel matches its sources"
