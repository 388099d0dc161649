#!/usr/bin/env bash
# Maximum throughput while a table of 10,000 Ingresses is rebuilt back to back,
# against the same instance calm: what config churn costs the data plane when
# both share one core. For two builds, measured in alternating rounds.
#
#   benches/load/rebuilds.sh /tmp/sluice-before target/release/sluice
#
# ROUNDS (default 2) and DURATION (seconds of wrk, default 4) change the run.
# Prints, per binary and round: calm and busy req/s, busy/calm, and how many
# tables were built while busy.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/load/common.sh

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-4}
install_missing wrk=wrk curl=curl python3=python3
cargo build --release --locked --example load-upstream
OUT=target/load/rebuilds
rm -rf "$OUT" && mkdir -p "$OUT"
start_upstream

metric() { # port name
    curl -s "http://127.0.0.1:$(($1 + 2))/metrics" | awk -v m="$2" '$1 == m {print $2}'
}
rps() { # port
    taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${DURATION}s" "http://127.0.0.1:$1/" |
        awk '/^Requests\/sec/ {print $2}'
}

measure() { # binary port
    local binary=$1 port=$2 dir=$OUT/$2 routes calm busy before after writer
    rm -rf "$dir" && mkdir -p "$dir"
    start_sluice_binary "$binary" "$dir" "$port" "manifests-poll-interval: 20ms"
    local pid=$SLUICE_PID
    generate_ingresses "$dir/manifests"
    for _ in $(seq 300); do
        routes=$(metric "$port" sluice_table_routes)
        [ "${routes%.*}" -ge 20000 ] 2>/dev/null && break
        sleep 0.2
    done
    sleep 1
    calm=$(rps "$port")
    before=$(metric "$port" sluice_config_build_duration_seconds_count)
    # A file changes every 50 ms: each change is a full rebuild (about 100 ms).
    python3 - "$dir/manifests/touch.yaml" "$((DURATION + 1))" <<'EOF' &
import os, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
end, i = time.monotonic() + seconds, 0
while time.monotonic() < end:
    with open(path + ".tmp", "w") as f:
        f.write("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: touch-%d}\n" % i)
    os.rename(path + ".tmp", path)
    i += 1
    time.sleep(0.05)
EOF
    writer=$!
    sleep 0.5
    busy=$(rps "$port")
    wait "$writer"
    after=$(metric "$port" sluice_config_build_duration_seconds_count)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    printf '%s  calm %s  busy %s  busy/calm %s  tables built %s\n' "$binary" "$calm" "$busy" \
        "$(python3 -c "print(round($busy / $calm, 2))")" "$(python3 -c "print(int($after - $before))")"
}

for round in $(seq "$ROUNDS"); do
    echo "round $round"
    for binary in "$@"; do measure "$binary" 19500; done
done
