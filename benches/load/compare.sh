#!/usr/bin/env bash
# A/B of two sluice binaries: CPU time per request and req/s, measured in
# alternating rounds (A then B, then B then A) so drift and the order of a round
# do not favour either. For one optimisation's before/after.
#
#   cp target/release/sluice /tmp/sluice-before     # build the change, then:
#   benches/load/compare.sh /tmp/sluice-before target/release/sluice
#   MODE=h2c benches/load/compare.sh A B   # h2load, pod over HTTP/1.1
#   MODE=h2c-pod benches/load/compare.sh A B   # h2load, pod over h2c
#   MODE=fixed benches/load/compare.sh A B     # loadgen at RATE (default 5000)
#
# ROUNDS (default 8) and DURATION (seconds, default 2) change the run.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/load/common.sh

A=$1 B=$2
ROUNDS=${ROUNDS:-8}
DURATION=${DURATION:-2}
MODE=${MODE:-h1}
install_missing wrk=wrk h2load=nghttp2-client curl=curl python3=python3
cargo build --release --locked --example load-upstream --example loadgen
RATE=${RATE:-5000}
OUT=target/load/compare
rm -rf "$OUT" && mkdir -p "$OUT"

start_upstream
start_sluice_binary "$A" "$OUT/a" 19110
A_PID=$SLUICE_PID
start_sluice_binary "$B" "$OUT/b" 19120
B_PID=$SLUICE_PID
wait_started "$A_PID" http://127.0.0.1:19110/
wait_started "$B_PID" http://127.0.0.1:19120/

# One measurement: prints "cpu_us_per_request requests_per_second failed".
measure() { # pid port
    local before after out requests failed
    before=$(cpu_us "$1")
    case $MODE in
        h1)
            out=$(taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${DURATION}s" "http://127.0.0.1:$2/")
            requests=$(awk '/requests in/ {print $1}' <<<"$out")
            failed=$(awk '/Non-2xx/ {n=$5} /Socket errors/ {n+=$4+$6+$8+$10} END {print n+0}' <<<"$out") ;;
        h2c | h2c-pod)
            local path=/; [ "$MODE" = h2c-pod ] && path=/h2c
            out=$(taskset -c "$LOAD_CPU" h2load -c10 -m10 -D "$DURATION" "http://127.0.0.1:$2$path")
            requests=$(awk '/^requests:/ {print $8}' <<<"$out")
            failed=$(awk '/^status codes:/ {n=$5+$7+$9} /^requests:/ {n+=$10} END {print n+0}' <<<"$out") ;;
        fixed)
            out=$(taskset -c "$LOAD_CPU" "$BIN/examples/loadgen" "http://127.0.0.1:$2/" "$RATE" 50 "$DURATION")
            requests=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$out")
            failed=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$out") ;;
        *) echo "MODE is h1, h2c, h2c-pod or fixed" >&2; exit 2 ;;
    esac
    after=$(cpu_us "$1")
    python3 -c "print(($after - $before) / max($requests, 1), $requests / $DURATION, $failed)"
}

rows=()
for round in $(seq "$ROUNDS"); do
    if ((round % 2)); then
        a=$(measure "$A_PID" 19110); b=$(measure "$B_PID" 19120)
    else
        b=$(measure "$B_PID" 19120); a=$(measure "$A_PID" 19110)
    fi
    echo "round $round: A $a | B $b"
    rows+=("$a $b")
done
printf '%s\n' "${rows[@]}" | python3 -c '
import statistics as st, sys
rows = [list(map(float, line.split())) for line in sys.stdin]
a_cpu, a_rps, a_failed, b_cpu, b_rps, b_failed = zip(*rows)
print(f"CPU us/request: A {st.median(a_cpu):.2f}  B {st.median(b_cpu):.2f}  B/A {st.median(b_cpu) / st.median(a_cpu):.3f}")
print(f"req/s:          A {st.median(a_rps):,.0f}  B {st.median(b_rps):,.0f}  B/A {st.median(b_rps) / st.median(a_rps):.3f}")
print("B/A CPU by round: " + " ".join(f"{b / a:.2f}" for a, b in zip(a_cpu, b_cpu)))
if sum(a_failed) + sum(b_failed):
    print(f"FAILED requests: A {sum(a_failed):.0f}, B {sum(b_failed):.0f}")
'
