# Shared by run.sh, compare.sh and instructions.sh: tools, ports, the manifests
# sluice serves, and how CPU time is read. Sourced from the repository root.

PROXY_CPU=0   # the proxy under test runs alone here
LOAD_CPU=1    # the upstream and the load generator share this one
UPSTREAM_PORT=19000
UPSTREAM_TLS_PORT=19003   # the same upstream over TLS (run.sh's tlspod section)
BIN=${BIN:-target/release}  # another build: a directory with sluice and examples/

# Installs missing Debian packages: install_missing command=package...
install_missing() {
    local need=() pair
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null || [ -x "/usr/sbin/${pair%%=*}" ] || need+=("${pair#*=}")
    done
    if ((${#need[@]})); then
        echo "installing: ${need[*]}"
        local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
    fi
}

# Until `url` answers 2xx.
wait_http() { # url
    for _ in $(seq 200); do
        curl -ksf -o /dev/null "$1" && return 0
        sleep 0.05
    done
    echo "no answer from $1" >&2
    return 1
}

# Until `url` answers 2xx, from `pid` (not a leftover process holding the port).
wait_started() { # pid url
    wait_http "$2"
    kill -0 "$1" 2>/dev/null || { echo "the process for $2 exited: is the port taken?" >&2; exit 1; }
}

# CPU time (user + system) of processes, in microseconds.
cpu_us() {
    local total=0 pid fields
    for pid in "$@"; do
        # Fields after the command name, which may hold spaces: utime is 14th, stime 15th.
        fields=$(sed 's/^.*) //' "/proc/$pid/stat")
        set -- $fields
        total=$((total + ${12} + ${13}))
    done
    echo $((total * 1000000 / $(getconf CLK_TCK)))
}

# A manifests directory with one Ingress (any host) to the upstream, and the same
# pods over h2c at /h2c. INGRESS_ANNOTATIONS (`key: value, ...`) annotate the
# first Ingress; EXTRA_MANIFESTS (a file) joins the directory.
manifests() { # dir
    mkdir -p "$1"
    if [ -n "${EXTRA_MANIFESTS:-}" ]; then cp "$EXTRA_MANIFESTS" "$1/extra.yaml"; fi
    cat >"$1/app.yaml" <<YAML
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: sluice
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: sluice.io/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: bench}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-1
  namespace: bench
  labels: {kubernetes.io/service-name: app}
addressType: IPv4
ports: [{name: http, port: $UPSTREAM_PORT}]
endpoints:
- addresses: ["127.0.0.1"]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: app, namespace: bench, annotations: {${INGRESS_ANNOTATIONS:-}}}
spec:
  rules:
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
---
# The same pods over h2c, as gRPC backends are reached.
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app-h2c
  namespace: bench
  annotations: {sluice.io/backend-protocol: H2C}
spec:
  rules:
  - http:
      paths:
      - {path: /h2c, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
---
# The upstream over TLS (HTTPS to the pod), when run.sh starts it.
apiVersion: v1
kind: Service
metadata: {name: app-tls, namespace: bench}
spec:
  ports: [{name: https, port: 443}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-tls-1
  namespace: bench
  labels: {kubernetes.io/service-name: app-tls}
addressType: IPv4
ports: [{name: https, port: $UPSTREAM_TLS_PORT}]
endpoints:
- addresses: ["127.0.0.1"]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app-tls
  namespace: bench
  annotations: {nginx.ingress.kubernetes.io/backend-protocol: HTTPS}
spec:
  rules:
  - http:
      paths:
      - {path: /tls-pod, pathType: Prefix, backend: {service: {name: app-tls, port: {number: 443}}}}
YAML
}

# Processes to stop when the script exits, however it exits.
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# The fast upstream, on the load CPU at UPSTREAM_PORT (built by the caller).
start_upstream() {
    taskset -c "$LOAD_CPU" "$BIN/examples/load-upstream" "127.0.0.1:$UPSTREAM_PORT" &
    PIDS+=($!)
    wait_started $! "http://127.0.0.1:$UPSTREAM_PORT/"
}

# The same over TLS at UPSTREAM_TLS_PORT, with this certificate and key.
start_tls_upstream() { # cert key
    taskset -c "$LOAD_CPU" "$BIN/examples/load-upstream" "127.0.0.1:$UPSTREAM_TLS_PORT" "$1" "$2" &
    PIDS+=($!)
    wait_started $! "https://127.0.0.1:$UPSTREAM_TLS_PORT/"
}

# Runs sluice under this command (e.g. valgrind) when set.
SLUICE_WRAPPER=()

# Starts sluice pinned to the proxy CPU, one worker thread, access log off:
# start_sluice_binary binary dir port [config lines...]; sets SLUICE_PID and
# adds it to PIDS.
start_sluice_binary() {
    local binary=$1 dir=$2 port=$3
    shift 3
    manifests "$dir/manifests"
    printf 'access-log: "off"\n' >"$dir/config.yaml"
    for line in "$@"; do printf '%s\n' "$line" >>"$dir/config.yaml"; done
    RUST_LOG=warn taskset -c "$PROXY_CPU" "${SLUICE_WRAPPER[@]}" "$binary" --worker-threads 1 \
        --manifests "$dir/manifests" --config "$dir/config.yaml" \
        --http-addr "127.0.0.1:$port" --https-addr "127.0.0.1:$((port + 1))" \
        --admin-addr "127.0.0.1:$((port + 2))" 2>"$dir/stderr.log" &
    SLUICE_PID=$!
    PIDS+=($SLUICE_PID)
}

# 10,000 Ingresses (20,000 routes), with their Services and EndpointSlices, in DIR.
generate_ingresses() { # dir
python3 - "$1" "$UPSTREAM_PORT" <<'EOF'
import sys
directory, port = sys.argv[1], sys.argv[2]
for chunk in range(10):
    with open(f"{directory}/apps-{chunk}.yaml", "w") as f:
        for i in range(chunk * 1000, chunk * 1000 + 1000):
            f.write(f"""---
apiVersion: v1
kind: Service
metadata: {{name: app-{i}, namespace: ns-{i % 100}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: app-{i}-x, namespace: ns-{i % 100}, labels: {{kubernetes.io/service-name: app-{i}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
- addresses: ["127.0.{i // 250}.{i % 250 + 1}"]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: app-{i}, namespace: ns-{i % 100}}}
spec:
  ingressClassName: sluice
  rules:
  - host: app-{i}.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: app-{i}, port: {{number: 80}}}}}}}}
      - {{path: /api, pathType: Prefix, backend: {{service: {{name: app-{i}, port: {{number: 80}}}}}}}}
""")
with open(f"{directory}/class.yaml", "w") as f:
    f.write("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: sluice}\nspec: {controller: sluice.io/ingress-controller}\n")
EOF
}
