#!/bin/sh
# run.sh runs BenchmarkInvoke once and prints the machine, the raw output
# and the markdown table for bench/README.md.
#
#   bench/run.sh                      # -benchtime 3s, 8 clients
#   BENCHTIME=10s bench/run.sh -conc 16
#
# Extra arguments go to the test binary. Run it on a quiet machine: the
# node, the clients and the native server share the same cores.
set -eu
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "nproc:   $(nproc)"
echo "go:      $(go version)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
echo
go test -run '^$' -bench BenchmarkInvoke -benchtime "${BENCHTIME:-3s}" ./bench/ "$@" | tee "$out"
echo
go run ./bench/cmd/benchtable < "$out"
