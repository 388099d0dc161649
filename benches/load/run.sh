#!/usr/bin/env bash
# The load benchmark: direct (no proxy) vs nginx vs sluice on loopback, side by
# side in one run, reported as medians and ratios. See benches/README.md.
#
#   benches/load/run.sh                 # about 6 minutes after the build
#   DURATION=3 REPEATS=1 benches/load/run.sh   # a quick look
#
# The proxy under test runs alone on CPU 0; the upstream and the load generator
# share CPU 1. Results: target/load/results.tsv and the table printed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-5}    # seconds per measurement
REPEATS=${REPEATS:-3}      # medians of this many
RATE=${RATE:-5000}         # the fixed rate, requests per second
CONNECTIONS=${CONNECTIONS:-50}
SECTIONS=${SECTIONS:-"max fixed tls tlspod h2c storm scale"}   # any subset, to iterate
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
source benches/load/common.sh
install_missing nginx=nginx wrk=wrk h2load=nghttp2-client openssl=openssl python3=python3 curl=curl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --locked --bin sluice --example load-upstream --example loadgen
OUT=target/load
rm -rf "$OUT" && mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
: >"$RESULTS"

NGINX_PORT=19001
NGINX_TLS_PORT=19002
rss_kb() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")))
    done
    echo "$total"
}

record() { # target test metric value
    printf '%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"
}

# --- the upstream, plain and over TLS ---------------------------------------
start_upstream
mkdir -p "$OUT/upstream"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=app-tls.bench.svc -keyout "$OUT/upstream/key.pem" -out "$OUT/upstream/cert.pem" 2>/dev/null
start_tls_upstream "$OUT/upstream/cert.pem" "$OUT/upstream/key.pem"

# --- nginx: one worker, upstream keepalive, access log off -------------------
mkdir -p "$OUT/nginx/logs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=bench.local -keyout "$OUT/nginx/key.pem" -out "$OUT/nginx/cert.pem" 2>/dev/null
cat >"$OUT/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $PWD/$OUT/nginx/nginx.pid;
error_log $PWD/$OUT/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 320; }
    upstream app_tls { server 127.0.0.1:$UPSTREAM_TLS_PORT; keepalive 320; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
        ssl_certificate $PWD/$OUT/nginx/cert.pem;
        ssl_certificate_key $PWD/$OUT/nginx/key.pem;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
        # HTTPS to the pod, as ingress-nginx's backend-protocol HTTPS.
        location /tls-pod {
            proxy_pass https://app_tls;
            proxy_ssl_session_reuse on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
taskset -c "$PROXY_CPU" "$NGINX" -p "$PWD/$OUT/nginx" -c "$PWD/$OUT/nginx/nginx.conf" &
nginx_master=$!
PIDS+=($nginx_master)
wait_started "$nginx_master" "http://127.0.0.1:$NGINX_PORT/"
# The master and its worker.
NGINX_PIDS="$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')"

# --- sluice: one worker thread, access log off --------------------------------
start_sluice() { # name port extra-config...
    local name=$1 port=$2
    shift 2
    start_sluice_binary "$BIN/sluice" "$OUT/$name" "$port" "$@"
    eval "${name//-/_}_PID=$SLUICE_PID"
    wait_started "$SLUICE_PID" "http://127.0.0.1:$port/"
}

start_sluice sluice 19010
start_sluice sluice-nometrics 19020 "request-metrics: false"
record sluice idle rss_kb "$(rss_kb "$sluice_PID")"
record nginx idle rss_kb "$(rss_kb $NGINX_PIDS)"

# --- measurements -------------------------------------------------------------
# Maximum throughput: wrk, keep-alive, small body; CPU of the proxy per request.
max_rps() { # target url pids...
    local target=$1 url=$2 out before after requests
    shift 2
    for _ in $(seq "$REPEATS"); do
        before=$(cpu_us "$@")
        out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "$url")
        after=$(cpu_us "$@")
        requests=$(awk '/requests in/ {print $1}' <<<"$out")
        record "$target" max rps "$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
        # wrk counts any answer; a benchmark of error pages must not pass unnoticed.
        record "$target" max errors "$(awk '/Non-2xx/ {n=$5} /Socket errors/ {n+=$4+$6+$8+$10} END {print n+0}' <<<"$out")"
        if (($# > 0)); then
            record "$target" max cpu_us_per_req "$(python3 -c "print(($after - $before) / $requests)")"
        fi
    done
}

# A fixed rate every target sustains: latency percentiles and CPU per request.
fixed_rate() { # target url pids...
    local target=$1 url=$2 out before after
    shift 2
    for _ in $(seq "$REPEATS"); do
        before=$(cpu_us "$@")
        out=$(taskset -c "$LOAD_CPU" "$BIN/examples/loadgen" "$url" "$RATE" "$CONNECTIONS" "$DURATION")
        after=$(cpu_us "$@")
        for key in p50_us p99_us p999_us errors; do
            record "$target" fixed "$key" "$(tr ' ' '\n' <<<"$out" | awk -F= -v k="$key" '$1 == k {print $2}')"
        done
        local requests
        requests=$(tr ' ' '\n' <<<"$out" | awk -F= '$1 == "requests" {print $2}')
        if (($# > 0)); then
            record "$target" fixed cpu_us_per_req "$(python3 -c "print(($after - $before) / max($requests, 1))")"
        fi
    done
}

# h2c with prior knowledge, multiplexed (nginx cannot serve h2c beside HTTP/1).
h2c_rps() { # target url
    for _ in $(seq "$REPEATS"); do
        out=$(taskset -c "$LOAD_CPU" h2load -c 10 -m 10 -D "$DURATION" "$2")
        record "$1" h2c rps "$(awk '/^finished in/ {print $4}' <<<"$out")"
        # Answers that were not 2xx, and streams that failed.
        record "$1" h2c errors "$(awk '/^status codes:/ {n=$5+$7+$9} /^requests:/ {n+=$10} END {print n+0}' <<<"$out")"
    done
}

if want max; then
echo "== maximum throughput (wrk -c$CONNECTIONS, ${DURATION}s x $REPEATS)"
max_rps direct "http://127.0.0.1:$UPSTREAM_PORT/"
max_rps nginx "http://127.0.0.1:$NGINX_PORT/" $NGINX_PIDS
max_rps sluice "http://127.0.0.1:19010/" "$sluice_PID"
max_rps sluice-nometrics "http://127.0.0.1:19020/" "$sluice_nometrics_PID"

fi
if want fixed; then
echo "== fixed rate ($RATE req/s, $CONNECTIONS connections)"
fixed_rate direct "http://127.0.0.1:$UPSTREAM_PORT/"
fixed_rate nginx "http://127.0.0.1:$NGINX_PORT/" $NGINX_PIDS
fixed_rate sluice "http://127.0.0.1:19010/" "$sluice_PID"
fixed_rate sluice-nometrics "http://127.0.0.1:19020/" "$sluice_nometrics_PID"

fi
if want tls; then
echo "== HTTPS (TLS 1.3, keep-alive)"
max_rps nginx-tls "https://127.0.0.1:$NGINX_TLS_PORT/" $NGINX_PIDS
max_rps sluice-tls "https://127.0.0.1:19011/" "$sluice_PID"

fi
if want tlspod; then
echo "== HTTPS to the pod (plain HTTP/1.1 from the client, TLS 1.3 to the pod, both keep-alive)"
max_rps direct-tls "https://127.0.0.1:$UPSTREAM_TLS_PORT/"
max_rps nginx-tlspod "http://127.0.0.1:$NGINX_PORT/tls-pod" $NGINX_PIDS
max_rps sluice-tlspod "http://127.0.0.1:19010/tls-pod" "$sluice_PID"

fi
if want h2c; then
echo "== h2c (h2load -c10 -m10)"
h2c_rps direct "http://127.0.0.1:$UPSTREAM_PORT/"
h2c_rps sluice "http://127.0.0.1:19010/"          # HTTP/1.1 keep-alive to the pod
h2c_rps sluice-h2c "http://127.0.0.1:19010/h2c"   # h2c to the pod (backend-protocol)
fi

record sluice loaded rss_kb "$(rss_kb "$sluice_PID")"
record nginx loaded rss_kb "$(rss_kb $NGINX_PIDS)"

# --- swap storm: 100 table swaps per second during fixed-rate load ------------
if want storm; then
echo "== swap storm"
start_sluice storm 19030 "manifests-poll-interval: 5ms"
storm_dir=$OUT/storm/manifests
swaps() { curl -s "http://127.0.0.1:19032/metrics" | awk '$1 == "sluice_config_swaps_total" {print $2}'; }
for phase in calm storm; do
    if [ "$phase" = storm ]; then
        before=$(swaps)
        # Alternately adds and removes an Ingress, 100 times a second.
        taskset -c "$LOAD_CPU" python3 - "$storm_dir" "$DURATION" <<'EOF' &
import os, sys, time
directory, seconds = sys.argv[1], float(sys.argv[2])
extra = """apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: extra, namespace: bench}
spec:
  rules:
  - host: extra-%d.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
"""
path = os.path.join(directory, "extra.yaml")
start = time.monotonic()
i = 0
while time.monotonic() - start < seconds:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(extra % i)
    os.rename(tmp, path)
    i += 1
    time.sleep(max(0.0, start + i / 100 - time.monotonic()))
EOF
        writer=$!
    fi
    out=$(taskset -c "$LOAD_CPU" "$BIN/examples/loadgen" "http://127.0.0.1:19030/" "$RATE" "$CONNECTIONS" "$DURATION")
    for key in p99_us errors requests; do
        record "$phase" storm "$key" "$(tr ' ' '\n' <<<"$out" | awk -F= -v k="$key" '$1 == k {print $2}')"
    done
    if [ "$phase" = storm ]; then
        wait "$writer"
                record storm storm swaps_per_s "$(python3 -c "print(($(swaps) - $before) / $DURATION)")"
    fi
done
fi

# --- scale: 10,000 Ingresses from a manifests directory ------------------------
if want scale; then
echo "== scale: 10,000 Ingresses"
scale_dir=$OUT/scale/manifests
mkdir -p "$scale_dir"
generate_ingresses "$scale_dir"
printf 'access-log: "off"\n' >"$OUT/scale/config.yaml"
started=$(date +%s.%N)
RUST_LOG=warn taskset -c "$PROXY_CPU" "$BIN/sluice" --worker-threads 1 --manifests "$scale_dir" \
    --config "$OUT/scale/config.yaml" --http-addr 127.0.0.1:19040 --https-addr 127.0.0.1:19041 \
    --admin-addr 127.0.0.1:19042 2>"$OUT/scale/stderr.log" &
scale_pid=$!
PIDS+=($scale_pid)
until curl -sf -o /dev/null http://127.0.0.1:19042/readyz; do sleep 0.05; done
record scale scale ready_s "$(python3 -c "import time; print(time.time() - $started)")"
metrics=$(curl -s http://127.0.0.1:19042/metrics)
record scale scale routes "$(awk '$1 == "sluice_table_routes" {print $2}' <<<"$metrics")"
record scale scale build_s "$(awk '$1 == "sluice_config_build_duration_seconds_sum" {s=$2} $1 == "sluice_config_build_duration_seconds_count" {c=$2} END {print s / c}' <<<"$metrics")"
curl -s -o /dev/null -H "Host: app-4242.example.com" http://127.0.0.1:19040/api
record scale scale rss_kb "$(rss_kb "$scale_pid")"
fi

python3 benches/load/report.py "$RESULTS" | tee "$OUT/report.txt"
