#!/bin/sh
# cluster-loopback.sh runs, on loopback, the commands docs/operations.md
# gives for a deployment on several machines ("Coordinators: first start,
# joining, upgrade and recovery" and the systemd units' command lines), so
# that the documentation is tested (TestOperationsScript runs it):
#
#   1. cloister nats config, then three NATS nodes;
#   2. first start of one coordinator, then a second one that joins;
#   3. two workers and two gateways;
#   4. deploy and invoke through the gateways;
#   5. failover: SIGKILL of the active coordinator, calls work again;
#   6. recovery: the killed coordinator starts again and stands by;
#   7. the owner's recovery key: every coordinator and its data directory
#      lost, a new one gets the secrets from `cloister coordinator recover`.
#
# Usage: scripts/cluster-loopback.sh [DIR]   (default: a new temporary dir)
# CLOISTER is the binary (default: cloister on PATH). NATS_SERVER, if set,
# is an official nats-server binary; without it each node runs as
# `cloister dev nats --config FILE`, the same server embedded. The sim TEE
# stands in for the confidential VMs (NOT secure). Every process is
# stopped on exit. Ports: 24222-24224 (clients), 26222-26224 (routes),
# 28080-28081 (gateways), or BASE_PORT + offsets.
set -eu

CLOISTER=${CLOISTER:-cloister}
DIR=${1:-$(mktemp -d)}
BASE=${BASE_PORT:-24222}
NATS_PORT=$BASE
ROUTE_PORT=$((BASE + 2000))
GW1=$((BASE + 3858))
GW2=$((GW1 + 1))
mkdir -p "$DIR/logs"
DIR=$(cd "$DIR" && pwd)
PIDS=""

say() { printf '\n== %s\n' "$*"; }
fail() {
	printf 'FAILED: %s\n' "$*" >&2
	for f in "$DIR"/logs/*.log; do
		printf -- '--- %s\n' "$f" >&2
		tail -n 15 "$f" >&2
	done
	exit 1
}
stop_all() {
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	sleep 1
	for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; done
}
trap stop_all EXIT INT TERM

# start NAME CMD...: runs CMD in the background with its output in
# logs/NAME.log and remembers its PID in $NAME_pid.
start() {
	name=$1
	shift
	"$@" >>"$DIR/logs/$name.log" 2>&1 &
	PIDS="$PIDS $!"
	eval "pid_$(echo "$name" | tr - _)=$!"
}
pid_of() { eval "echo \$pid_$(echo "$1" | tr - _)"; }

# wait_for WHAT SECONDS CMD...: polls CMD until it succeeds.
wait_for() {
	what=$1 limit=$2
	shift 2
	i=0
	until "$@" >/dev/null 2>&1; do
		i=$((i + 1))
		[ "$i" -le $((limit * 4)) ] || fail "waiting for $what"
		sleep 0.25
	done
}
in_log() { grep -q "$2" "$DIR/logs/$1.log"; }

say "1. NATS: configs, certificates and per-role credentials; three nodes"
"$CLOISTER" nats config --dir "$DIR/nats" --hosts 127.0.0.1 --nodes 3 \
	--port "$NATS_PORT" --cluster-port "$ROUTE_PORT" --store-dir "$DIR/nats/store"
for i in 1 2 3; do
	if [ -n "${NATS_SERVER:-}" ]; then
		start "nats-$i" "$NATS_SERVER" -c "$DIR/nats/nats-server-$i.conf"
	else
		start "nats-$i" "$CLOISTER" dev nats --config "$DIR/nats/nats-server-$i.conf"
	fi
done
URLS="tls://127.0.0.1:$NATS_PORT,tls://127.0.0.1:$((NATS_PORT + 1)),tls://127.0.0.1:$((NATS_PORT + 2))"
SEC="--nats $URLS --nats-ca $DIR/nats/ca.pem --replicas 3"
if [ -z "${NATS_SERVER:-}" ]; then
	wait_for "JetStream" 60 sh -c "grep -q 'JetStream ready' '$DIR'/logs/nats-*.log"
else
	sleep 5
fi

say "2. Coordinators: first start, then one that joins"
# The owner's recovery key: the private half stays with the owner.
"$CLOISTER" keys recovery --out "$DIR/owner-recovery.key"
SEC_COORD="$SEC --nats-nkey $DIR/nats/coordinator.nk --recovery-key $DIR/owner-recovery.key.pub"
# shellcheck disable=SC2086
start coordinator-1 "$CLOISTER" coordinator --tee sim $SEC_COORD --data "$DIR/coordinator-1"
wait_for "the first coordinator's client.env" 60 test -s "$DIR/coordinator-1/client.env"
wait_for "the first coordinator to be active" 30 in_log coordinator-1 'msg="coordinator active"'
# With sim, the TEE's root key stands in for the hardware vendor's and the
# admin key is part of the genesis manifest: the joiner gets copies. On
# hardware, both coordinators get the same --manifest and --policy files.
mkdir -p "$DIR/coordinator-2/sim"
cp "$DIR/coordinator-1/sim/root.key" "$DIR/coordinator-2/sim/"
cp "$DIR/coordinator-1/manifest-admin.key" "$DIR/coordinator-2/"
# The operator keeps the genesis inputs (here the admin key) off the
# coordinators too: step 7 starts a coordinator from them.
mkdir -p "$DIR/home"
cp "$DIR/coordinator-1/manifest-admin.key" "$DIR/home/admin-key-copy"
# shellcheck disable=SC2086
start coordinator-2 "$CLOISTER" coordinator --tee sim $SEC_COORD --data "$DIR/coordinator-2"
wait_for "the second coordinator to receive the secrets" 60 in_log coordinator-2 'secrets from an attested peer'
wait_for "the second coordinator to stand by" 30 in_log coordinator-2 'coordinator standby'

say "3. Workers and gateways"
for i in 1 2; do
	mkdir -p "$DIR/worker-$i/sim"
	cp "$DIR/coordinator-1/sim/root.key" "$DIR/worker-$i/sim/"
	cp "$DIR/coordinator-1/policy.json" "$DIR/worker-$i/"
	# shellcheck disable=SC2086
	start "worker-$i" "$CLOISTER" worker --tee sim --id "worker-$i" $SEC --nats-nkey "$DIR/nats/worker.nk" \
		--data "$DIR/worker-$i" --policy "$DIR/worker-$i/policy.json"
	wait_for "worker-$i" 60 in_log "worker-$i" 'msg="worker serving"'
done
for port in $GW1 $GW2; do
	# shellcheck disable=SC2086
	start "gateway-$port" "$CLOISTER" gateway --addr "127.0.0.1:$port" $SEC --nats-nkey "$DIR/nats/gateway.nk"
	wait_for "the gateway on $port" 60 curl -fsS "http://127.0.0.1:$port/readyz"
done

say "4. Deploy and invoke through both gateways"
# The coordinator's client.env, with every gateway listed and the client
# policy copied where clients keep it (not in a coordinator's directory).
cp "$DIR/coordinator-1/policy.json" "$DIR/policy.json"
{
	grep -v '^export CLOISTER_URL=\|^export CLOISTER_POLICY=' "$DIR/coordinator-1/client.env"
	echo "export CLOISTER_URL='http://127.0.0.1:$GW1,http://127.0.0.1:$GW2'"
	echo "export CLOISTER_POLICY='$DIR/policy.json'"
} >"$DIR/client.env"
export CLOISTER_ENV="$DIR/client.env" HOME="$DIR/home"
mkdir -p "$HOME"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$CLOISTER" keys new >/dev/null
"$CLOISTER" fn deploy hello "$ROOT/examples/hello-go/hello-go.wasm"
"$CLOISTER" invoke hello --data '{"name":"Ada"}' | grep -q 'Hello, Ada!' || fail "invoke before the failover"
"$CLOISTER" cluster status
"$CLOISTER" ledger verify

say "5. Failover: SIGKILL of the active coordinator"
kill -9 "$(pid_of coordinator-1)"
start_s=$(date +%s)
wait_for "the standby to take over" 15 in_log coordinator-2 'msg="coordinator active"'
echo "the standby took over $(($(date +%s) - start_s)) s after the kill"
"$CLOISTER" invoke hello --data '{"name":"Bo"}' | grep -q 'Hello, Bo!' || fail "invoke after the failover"
# The checkpoint trusted in step 4 is consistent with the new active
# coordinator's: one log across the failover.
"$CLOISTER" ledger verify

say "6. Recovery: the killed coordinator starts again and stands by"
# shellcheck disable=SC2086
start coordinator-1b "$CLOISTER" coordinator --tee sim $SEC_COORD --data "$DIR/coordinator-1"
wait_for "the restarted coordinator to stand by" 60 in_log coordinator-1b 'coordinator standby'
"$CLOISTER" cluster status
"$CLOISTER" invoke hello --data '{"name":"Cy"}' | grep -q 'Hello, Cy!' || fail "invoke after the recovery"

say "7. The owner's recovery key: every coordinator lost"
kill -9 "$(pid_of coordinator-2)" "$(pid_of coordinator-1b)"
rm -rf "$DIR/coordinator-1" "$DIR/coordinator-2"
mkdir -p "$DIR/coordinator-3/sim"
cp "$DIR/worker-1/sim/root.key" "$DIR/coordinator-3/sim/"
cp "$DIR/home/admin-key-copy" "$DIR/coordinator-3/manifest-admin.key" 2>/dev/null ||
	fail "no copy of the manifest admin key"
# shellcheck disable=SC2086
start coordinator-3 "$CLOISTER" coordinator --tee sim $SEC_COORD --data "$DIR/coordinator-3"
# It finds no peer, and after 10 s asks for recovery; the owner answers.
"$CLOISTER" coordinator recover $SEC --nats-nkey "$DIR/nats/coordinator.nk" \
	--recovery-key "$DIR/owner-recovery.key" --policy "$DIR/policy.json" --wait 60s
wait_for "the recovered coordinator to be active" 60 in_log coordinator-3 'msg="coordinator active"'
in_log coordinator-3 "from the owner's recovery" || fail "coordinator-3 did not recover from the owner"
"$CLOISTER" invoke hello --data '{"name":"Di"}' | grep -q 'Hello, Di!' || fail "invoke after the recovery"
"$CLOISTER" ledger verify

say "OK: every documented step worked (files in $DIR)"
