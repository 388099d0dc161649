#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: repeatable
# for a given binary whatever else the machine is doing, unlike CPU time. User
# space only (the kernel's share is not counted), so it is for sluice's own code.
#
#   benches/load/instructions.sh target/release/sluice          # HTTP/1.1
#   MODE=h2c-pod benches/load/instructions.sh target/release/sluice
#
# MODE: h1, h2c (pod over HTTP/1.1) or h2c-pod; REQUESTS (default 10000; compare
# binaries at the same count, since connection set-up is counted too); CONFIG: one
# extra config-file line, e.g. CONFIG='proxy-next-upstream: ""'; HEADER: one
# request header, e.g. HEADER='authorization: Basic ...'; INGRESS_ANNOTATIONS and
# EXTRA_MANIFESTS (common.sh) change the Ingress, e.g. for an allow-list or basic
# authentication (benches/README.md has the commands).
# The profile is kept in target/load/instructions/callgrind.out.* for
# callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/load/common.sh

BINARY=$1
MODE=${MODE:-h1}
REQUESTS=${REQUESTS:-10000}
install_missing valgrind=valgrind callgrind_control=valgrind h2load=nghttp2-client curl=curl
cargo build --release --locked --example load-upstream
OUT=target/load/instructions
rm -rf "$OUT" && mkdir -p "$OUT"

start_upstream
# Counting is on while a task is polled, so start-up is not counted. `Core::poll`
# rather than `Harness::poll`, which is inlined in some builds (and then nothing
# would be counted).
SLUICE_WRAPPER=(valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out"
    --collect-atstart=no --toggle-collect='*task*core*Core*poll')
start_sluice_binary "$BINARY" "$OUT" 19130 ${CONFIG:+"$CONFIG"}
# Slower to start under valgrind than wait_started allows.
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:19130/ && break; sleep 0.3; done

case $MODE in
    h1) args=(--h1 -c50 http://127.0.0.1:19130/) ;;
    h2c) args=(-c10 -m10 http://127.0.0.1:19130/) ;;
    h2c-pod) args=(-c10 -m10 http://127.0.0.1:19130/h2c) ;;
    *) echo "MODE is h1, h2c or h2c-pod" >&2; exit 2 ;;
esac
taskset -c "$LOAD_CPU" h2load -n "$REQUESTS" ${HEADER:+-H "$HEADER"} "${args[@]}" | grep -E '^requests:'
callgrind_control --dump "$SLUICE_PID" >/dev/null 2>&1
sleep 1
profile=$(ls "$OUT"/callgrind.out.* | tail -1)
total=$(awk '/^(summary|totals):/ {print $2; exit}' "$profile")
echo "instructions per request ($MODE): $((total / REQUESTS))   profile: $profile"
