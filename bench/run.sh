#!/bin/sh
# run.sh runs one of the benchmarks in bench/README.md and prints the
# machine, the raw output and the markdown table for the README.
#
#   bench/run.sh [invoke]             # BenchmarkInvoke, -benchtime 3s, 8 clients
#   BENCHTIME=10s bench/run.sh invoke -conc 16
#   bench/run.sh sustained            # BenchmarkInvoke, -benchtime 60s, the ledger on: late/early is each
#                                     # mode's last 30 s against its first 30 s (about 10 min)
#   bench/run.sh coldstart            # BenchmarkColdStart, -benchtime 10x -count 3
#   bench/run.sh reset                # BenchmarkReset (internal/sandbox), -count 3:
#                                     # 2000x, and 20x for go-reactor/fresh
#   bench/run.sh ycsb                 # BenchmarkYCSB, -benchtime 20000x -count 3, 16 clients
#                                     # (-ycsb.conc N, -ycsb.records N); raw output only
#   bench/run.sh accounting           # BenchmarkAccounting: metering + ledger off/on, same run
#   bench/run.sh metering             # BenchmarkMetering and BenchmarkInstrumentPass (internal/instrument),
#                                     # -benchtime 10s -count 3 (BENCHTIME, COUNT)
#   bench/run.sh ledger               # BenchmarkLedgerAppend and BenchmarkAudit (internal/ledger)
#   bench/run.sh compile              # BenchmarkCompile (internal/sandbox): compile time per module
#                                     # size and shape, -benchtime 3x; raw output (ns/op, ns/KB)
#   bench/run.sh soak                 # TestSoak: 11 min warm-up + 10 min, 3 namespaces (one hostile), RSS every 10 s
#                                     # (-soak.duration D, -soak.pprof DIR); prints its tables
#   bench/run.sh cluster              # BenchmarkCluster: sealed calls through `cloister dev cluster` (3 NATS,
#                                     # 2 gateways, 2 workers) and `cloister up`, one after the other,
#                                     # -benchtime 3s, 3 runs (COUNT), 8 clients (-conc N); ratio, CPU, bus
#   bench/run.sh caller               # BenchmarkCallerSignature: hpke, session calls and session
#                                     # opens, signed by the caller and anonymous, in COUNT (3) rounds
#                                     # of every mode; raw output
#   bench/run.sh suites               # BenchmarkSuites (internal/seal): sealing and opening a request and a
#                                     # session opening, X25519 against MLKEM768-X25519, same run; raw output
#   bench/run.sh hey                  # hey -z 20s -c 32 (DURATION, CONC), a client that is not ours, against
#                                     # a native net/http echo, then a real `cloister up`: the plaintext /v1
#                                     # invoke and the OpenWhisk blocking invoke of a `confidential: optional`
#                                     # echo reactor; req/s, p50, p99 and the ratio to the native echo
#   bench/run.sh hops                 # CPU profiles of BenchmarkInvoke per mode (BENCHTIME 18000x, COUNT 2
#                                     # rounds): µs of CPU per call per hop, by bench/cmd/hops (about 2 min)
#   bench/run.sh floor                # BenchmarkFloor (BENCHTIME 20000x): the CPU per call of what each mode
#                                     # cannot do without (HTTP, the bus hop, receipt signing and verifying,
#                                     # the replay nonce, HPKE), and the best ratio to native each mode allows
#   bench/run.sh failover             # TestFailover: SIGKILL a worker, a gateway, a NATS node of a dev
#                                     # cluster, once each; time to the next successful sealed call
#
# Extra arguments go to the test binary. Run it on a quiet machine: the
# node, the clients and the native server share the same cores.
set -eu
cd "$(dirname "$0")/.."
what=invoke
case ${1:-} in
invoke | sustained | coldstart | reset | ycsb | accounting | metering | ledger | soak | compile | cluster | failover | caller | suites | hey | hops | floor) what=$1; shift ;;
esac
baseline=native
out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "nproc:   $(nproc)"
echo "kernel:  $(uname -r)"
echo "go:      $(go version)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
echo
case $what in
invoke)
	go test -run '^$' -bench BenchmarkInvoke -benchtime "${BENCHTIME:-3s}" ./bench/ "$@" | tee "$out"
	bench=BenchmarkInvoke
	;;
sustained)
	go test -run '^$' -bench '^BenchmarkInvoke$' -benchtime 60s -timeout 60m ./bench/ "$@" | tee "$out"
	bench=BenchmarkInvoke
	;;
coldstart)
	go test -run '^$' -bench BenchmarkColdStart -benchtime "${BENCHTIME:-10x}" -count "${COUNT:-3}" -timeout 30m ./bench/ "$@" | tee "$out"
	bench=BenchmarkColdStart
	;;
reset)
	# A fresh Go reactor costs tens of milliseconds: 20 calls of it, 2000 of the rest.
	go test -run '^$' -bench 'BenchmarkReset/mem=' -benchtime 2000x -count 3 ./internal/sandbox/ "$@" | tee "$out"
	go test -run '^$' -bench 'BenchmarkReset/go-reactor/reset' -benchtime 2000x -count 3 ./internal/sandbox/ "$@" | tee -a "$out"
	go test -run '^$' -bench 'BenchmarkReset/go-reactor/fresh' -benchtime 20x -count 3 ./internal/sandbox/ "$@" | tee -a "$out"
	bench=BenchmarkReset
	;;
accounting)
	go test -run '^$' -bench 'BenchmarkAccounting/interleaved' -benchtime "${BENCHTIME:-60000x}" -count "${COUNT:-3}" -timeout 30m ./bench/ "$@" | tee "$out"
	bench=
	;;
metering)
	go test -run '^$' -bench 'BenchmarkMetering|BenchmarkInstrumentPass' -benchtime "${BENCHTIME:-10s}" -count "${COUNT:-3}" ./internal/instrument/ "$@" | tee "$out"
	bench=
	;;
ledger)
	go test -run '^$' -bench BenchmarkLedgerAppend -benchtime "${BENCHTIME:-200000x}" -count "${COUNT:-3}" ./internal/ledger/ "$@" 2>/dev/null | tee "$out"
	CLOISTER_LEDGER_AUDIT_N=${AUDIT_N:-1000000} go test -run '^$' -bench BenchmarkAudit -benchtime 1x -timeout 30m ./internal/ledger/ "$@" 2>/dev/null | tee -a "$out"
	bench=
	;;
compile)
	go test -run '^$' -bench 'BenchmarkCompile$' -benchtime "${BENCHTIME:-3x}" -timeout 30m ./internal/sandbox/ "$@" | tee "$out"
	bench=
	;;
soak)
	# The tables are the test's own output: the RSS curve, then latency and
	# answers by code per namespace and action.
	go test -run '^TestSoak$' -timeout 45m -v ./bench/ -soak "$@" | tee "$out"
	bench=
	;;
cluster)
	# COUNT runs of one count each, so that up and the cluster alternate
	# (-count would run up COUNT times, then the cluster). Each run also
	# prints its own tables (CPU by process, JetStream stores); the one
	# below is throughput and latency, averaged, against up.
	for _ in $(seq "${COUNT:-3}"); do
		go test -run '^$' -bench BenchmarkCluster -benchtime "${BENCHTIME:-3s}" -count 1 -timeout 30m ./bench/ -cluster "$@"
	done | tee "$out"
	bench=BenchmarkCluster
	baseline=up
	;;
suites)
	go test -run '^$' -bench BenchmarkSuites -benchtime "${BENCHTIME:-5000x}" -count "${COUNT:-5}" ./internal/seal/ "$@" | tee "$out"
	bench=
	;;
caller)
	go test -run '^$' -bench BenchmarkCallerSignature -benchtime "${BENCHTIME:-3s}" ./bench/ -caller.rounds "${COUNT:-3}" "$@" | tee "$out"
	bench=
	;;
failover)
	go test -run '^TestFailover$' -timeout 30m -v ./bench/ -failover "$@" | tee "$out"
	bench=
	;;
hey)
	tmp=$(mktemp -d)
	pids=
	trap 'kill $pids 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp" "$out"' EXIT
	go build -o "$tmp/cloister" ./cmd/cloister
	go build -o "$tmp/echo" ./bench/cmd/echo
	GOBIN="$tmp" go install github.com/rakyll/hey@v0.1.5
	# The node: no namespace rate limit and no per-client connection cap,
	# since one client address makes every request.
	"$tmp/cloister" up --data "$tmp/data" --addr 127.0.0.1:0 --namespace-rate 1e9 --max-conns-per-client -1 >"$tmp/up.log" 2>&1 &
	pids="$pids $!"
	"$tmp/echo" >"$tmp/echo.url" &
	pids="$pids $!"
	i=0
	until [ -s "$tmp/data/wskprops" ] && [ -s "$tmp/echo.url" ]; do
		i=$((i + 1))
		[ $i -le 600 ] || { cat "$tmp/up.log"; echo "cloister up did not start in 60 s" >&2; exit 1; }
		sleep 0.1
	done
	. "$tmp/data/client.env"
	. "$tmp/data/wskprops"
	export CLOISTER_ENV="$tmp/data/client.env" CLOISTER_KEY="$tmp/owner.key"
	"$tmp/cloister" keys new >/dev/null
	# Concurrency 64, over hey's 32 clients: the function's own limit (16 by
	# default) would otherwise answer some calls 429, as it should.
	echo '{"abi":"reactor","confidential":"optional","invokers":"any","limits":{"concurrency":64}}' >"$tmp/m.json"
	"$tmp/cloister" fn deploy echo bench/testdata/reactor_echo.wasm --manifest "$tmp/m.json"
	body='{"name":"Ada"}'
	# heyrun NAME ARGS...: one hey run; its summary lines go to $out.
	heyrun() {
		name=$1
		shift
		echo "== $name: hey -z ${DURATION:-20s} -c ${CONC:-32} $*" | tee -a "$out"
		"$tmp/hey" -z "${DURATION:-20s}" -c "${CONC:-32}" -m POST -T application/json -d "$body" "$@" >"$tmp/hey.out"
		grep -E 'Requests/sec|50%|99%|\[[0-9]+\]' "$tmp/hey.out" | tee -a "$out"
	}
	heyrun native "$(cat "$tmp/echo.url")/"
	heyrun plaintext-v1 -H "Authorization: Bearer $CLOISTER_TOKEN" "$CLOISTER_URL/v1/functions/echo/invoke"
	# hey's -a loses its header (hey 0.1.5 replaces the request's headers
	# after setting it), so the basic auth goes in -H.
	heyrun openwhisk-blocking -H "Authorization: Basic $(printf %s "$AUTH" | base64 | tr -d '\n')" "$APIHOST/api/v1/namespaces/_/actions/echo?blocking=true&result=true"
	echo
	awk '
		/^== / { name = $2; sub(":", "", name); order[++n] = name }
		/Requests\/sec/ { rps[name] = $2 }
		/50%/ { p50[name] = $3 * 1000 }
		/99%/ { p99[name] = $3 * 1000 }
		/^ *\[[0-9]+\]/ { code = $1; gsub(/[][]/, "", code); if (code != "200") bad[name] += $2 }
		END {
			print "| target | req/s | p50 ms | p99 ms | non-200 | ratio to native |"
			print "|---|---:|---:|---:|---:|---:|"
			for (i = 1; i <= n; i++) {
				t = order[i]
				printf "| %s | %.0f | %.2f | %.2f | %d | %.3f× |\n", t, rps[t], p50[t], p99[t], bad[t], rps[t] / rps["native"]
				failed += bad[t]
			}
			if (failed > 0) { print "FAIL: some answers were not 200: the rates above count them" > "/dev/stderr"; exit 1 }
		}' "$out"
	bench=
	;;
floor)
	go test -run '^$' -bench '^BenchmarkFloor$' -benchtime "${BENCHTIME:-20000x}" ./bench/ "$@" | tee "$out"
	bench=
	;;
hops)
	# CPU per call per hop (docs/architecture.md, "Where an invocation's
	# time goes"): each mode profiled with native after it, native alone,
	# and the fixture alone, COUNT rounds pooled; bench/cmd/hops charges the
	# samples to the hops and subtracts the baselines.
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp" "$out"' EXIT
	n=${BENCHTIME:-18000x}
	case $n in *x) ;; *) echo "hops: BENCHTIME must be a count (Nx)" >&2; exit 2 ;; esac
	rounds=${COUNT:-2}
	go test -c -o "$tmp/bench.test" ./bench/
	prof() { # NAME PATTERN ROUND
		(cd bench && "$tmp/bench.test" -test.run '^$' -test.bench "^BenchmarkInvoke\$/^($2)\$" -test.benchtime "$n" -test.cpuprofile "$tmp/$1.$3.prof") | grep '^Benchmark' || true
		go tool pprof -traces "$tmp/bench.test" "$tmp/$1.$3.prof" >"$tmp/$1.$3.traces" 2>/dev/null
	}
	modes="hpke session reactor-session plaintext"
	for i in $(seq "$rounds"); do
		prof fixture nomatch "$i"
		prof native native "$i"
		for m in $modes; do prof "$m" "$m|native" "$i"; done
	done
	pooled() { seq "$rounds" | sed "s|.*|$tmp/$1.&.traces|" | paste -sd+; }
	args=
	for m in $modes; do args="$args $m=$(pooled "$m"),$(pooled native)"; done
	echo
	# A run of -benchtime Nx makes N + 33 calls (two warm-ups of 2 x 8, and
	# the framework's one-call round).
	go run ./bench/cmd/hops -calls $(( (${n%x} + 33) * rounds )) -table $args native="$(pooled native),$(pooled fixture)"
	bench=
	;;
ycsb)
	go test -run '^$' -bench BenchmarkYCSB -benchtime "${BENCHTIME:-20000x}" -count "${COUNT:-3}" -timeout 30m ./bench/ "$@" | tee "$out"
	bench=
	;;
esac
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown) (after)"
echo
[ -n "$bench" ] || exit 0
go run ./bench/cmd/benchtable -bench "$bench" -baseline "$baseline" < "$out"
