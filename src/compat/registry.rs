//! Every ingress-nginx annotation (`nginx.ingress.kubernetes.io/...`, as
//! documented for v1.15) and ConfigMap key, with what sluice does with it.
//!
//! * `Supported`: same meaning as ingress-nginx.
//! * `Differs`: supported, with the documented difference.
//! * `NoEffect`: accepted and ignored, for the given reason (an nginx buffer
//!   size means nothing to a proxy that streams).
//! * `Unsupported`: not implemented yet; a warning wherever it is used.
//! * `FailsClosed`: not implemented, and it grants or restricts access: what it
//!   is on answers 403 naming it, never the application.
//!
//! `docs/migrating-from-ingress-nginx.md` carries this table, generated from here
//! (`sluice migrate --table`) and held to it by a test.

/// What sluice does with one ingress-nginx key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Supported,
    Differs(&'static str),
    NoEffect(&'static str),
    Unsupported(&'static str),
    FailsClosed(&'static str),
}

impl Status {
    /// A short label for reports and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Status::Supported => "supported",
            Status::Differs(_) => "supported, differs",
            Status::NoEffect(_) => "no effect",
            Status::Unsupported(_) => "unsupported",
            Status::FailsClosed(_) => "fails closed",
        }
    }

    pub fn note(self) -> &'static str {
        match self {
            Status::Supported => "",
            Status::Differs(n)
            | Status::NoEffect(n)
            | Status::Unsupported(n)
            | Status::FailsClosed(n) => n,
        }
    }
}

/// One ingress-nginx key and its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub status: Status,
}

use Status::{Differs, FailsClosed, NoEffect, Supported, Unsupported};

const fn key(name: &'static str, status: Status) -> Key {
    Key { name, status }
}

// Shared notes.
const STREAMS: &str = "sluice streams responses to clients as they come (nginx's proxy-buffering: off), with backpressure; nginx's response buffers have no counterpart";
const NGINX_INTERNAL: &str = "an nginx internal; sluice has no counterpart to tune";
const GLOBAL_FORM: &str = "the annotation is supported; this global form is not yet";
const MODSECURITY: &str = "sluice has no web application firewall; fails closed so nothing opens";
const SNIPPET: &str = "interpreted, never run: header directives, return, rewrite and if; any other directive warns, and an access directive sluice cannot interpret fails closed";
const AUTH_SNIPPET: Status = Differs("interpreted, never run: proxy_set_header for the authentication subrequest; any other directive fails closed (403)");
const TRACING: &str = "sluice exports no traces yet";
/// Every annotation, by name without the `nginx.ingress.kubernetes.io/` prefix:
/// the 130 that ingress-nginx v1.15 documents, its undocumented alias
/// `allowlist-source-range`, and the legacy `secure-backends`.
pub const ANNOTATIONS: &[Key] = &[
    key("affinity", Supported),
    key("affinity-canary-behavior", Supported),
    key("affinity-mode", Supported),
    key("allowlist-source-range", Supported),
    key("app-root", Supported),
    key("auth-always-set-cookie", Supported),
    key("auth-cache-duration", Supported),
    key("auth-cache-key", Differs("kept in each instance's memory (nginx keeps them on disk), up to 4,096 answers per Ingress, across table rebuilds")),
    key("auth-keepalive", Differs("accepted: sluice always keeps a pool of connections to the auth service, as to every backend")),
    key("auth-keepalive-requests", Differs("accepted: sluice always keeps a pool of connections to the auth service, as to every backend")),
    key("auth-keepalive-share-vars", Differs("accepted: sluice always keeps a pool of connections to the auth service, as to every backend")),
    key("auth-keepalive-timeout", Differs("accepted: sluice always keeps a pool of connections to the auth service, as to every backend")),
    key("auth-method", Supported),
    key("auth-proxy-set-headers", Supported),
    key("auth-realm", Supported),
    key("auth-request-redirect", Supported),
    key("auth-response-headers", Supported),
    key("auth-secret", Supported),
    key("auth-secret-type", Supported),
    key("auth-signin", Supported),
    key("auth-signin-redirect-param", Supported),
    key("auth-snippet", AUTH_SNIPPET),
    key("auth-tls-error-page", Differs("an http(s) URL, as a 302; a path (nginx's internal redirect) warns and the client gets the plain 400")),
    key("auth-tls-match-cn", Supported),
    key("auth-tls-pass-certificate-to-upstream", Supported),
    key("auth-tls-secret", Differs("per host, as ingress-nginx; only the namespace that owns the host sets it (a later Ingress of the host with other settings warns); a plain-HTTP request is refused (400) where a certificate is required, never let through; a Secret that cannot be read makes the host answer 403; while any host checks certificates, a client's own ssl-client-* headers are removed on every route")),
    key("auth-tls-verify-client", Supported),
    key("auth-tls-verify-depth", Supported),
    key("auth-type", Differs("basic as ingress-nginx (htpasswd's bcrypt, apr1, {SHA} and crypt hashes); digest as nginx-http-auth-digest (htdigest's file, MD5, qop=auth, a nonce good for 60 s and 20 requests, the request URI checked), without its lockout of clients that fail")),
    key("auth-url", Differs("as ingress-nginx; a URL with $variables in its host (https://$host/oauth2/auth) is sent through sluice's own route for it, as nginx sends it through itself")),
    key("backend-protocol", Differs("HTTP, HTTPS (HTTP/2 when the pod offers it by ALPN, else HTTP/1.1, which is all nginx speaks), GRPC, GRPCS (HTTP/2 over TLS), and sluice's H2C; AUTO_HTTP and FCGI skip the Ingress with a warning")),
    key("canary", Supported),
    key("canary-by-cookie", Supported),
    key("canary-by-header", Supported),
    key("canary-by-header-pattern", Supported),
    key("canary-by-header-value", Supported),
    key("canary-weight", Supported),
    key("canary-weight-total", Supported),
    key("client-body-buffer-size", Supported),
    key("configuration-snippet", Differs(SNIPPET)),
    key("connection-proxy-header", Differs("keep-alive is what sluice does (pooled HTTP/1.1 connections to pods); any other value warns and is ignored: sluice sets Connection itself (upgrades included)")),
    key("cors-allow-credentials", Supported),
    key("cors-allow-headers", Supported),
    key("cors-allow-methods", Supported),
    key("cors-allow-origin", Supported),
    key("cors-expose-headers", Supported),
    key("cors-max-age", Supported),
    key("custom-headers", Supported),
    key("custom-http-errors", Supported),
    key("default-backend", Supported),
    key("denylist-source-range", Supported),
    key("enable-access-log", Supported),
    key("enable-cors", Supported),
    key("enable-global-auth", Supported),
    key("enable-modsecurity", FailsClosed(MODSECURITY)),
    key("enable-opentelemetry", Unsupported(TRACING)),
    key("enable-owasp-core-rules", FailsClosed(MODSECURITY)),
    key("enable-rewrite-log", NoEffect("nginx's rewrite debug log; sluice logs each request once")),
    key("force-ssl-redirect", Supported),
    key("from-to-www-redirect", Supported),
    key("http2-push-preload", NoEffect("HTTP/2 server push is gone from browsers and from nginx")),
    key("limit-burst-multiplier", Supported),
    key("limit-connections", Supported),
    key("limit-rate", Supported),
    key("limit-rate-after", Supported),
    key("limit-rpm", Supported),
    key("limit-rps", Supported),
    key("limit-whitelist", Supported),
    key("load-balance", Differs("ewma is sluice's own latency-aware balancer, fair to identical pods (README, Balancing); round_robin is the same")),
    key("mirror-host", Supported),
    key("mirror-request-body", Supported),
    key("mirror-target", Differs("fire and forget: a slow or failing mirror never delays the request (nginx's original request waits for its mirror); copies beyond 1,024 in flight are dropped and counted; the target's addresses are refused like pods' where they must be")),
    key("modsecurity-snippet", FailsClosed(MODSECURITY)),
    key("modsecurity-transaction-id", FailsClosed(MODSECURITY)),
    key("opentelemetry-trust-incoming-span", Unsupported(TRACING)),
    key("permanent-redirect", Supported),
    key("permanent-redirect-code", Supported),
    key("preserve-trailing-slash", Supported),
    key("proxy-body-size", Supported),
    key("proxy-buffer-size", NoEffect(STREAMS)),
    key("proxy-buffering", NoEffect(STREAMS)),
    key("proxy-buffers-number", NoEffect(STREAMS)),
    key("proxy-busy-buffers-size", NoEffect(STREAMS)),
    key("proxy-connect-timeout", Supported),
    key("proxy-cookie-domain", Supported),
    key("proxy-cookie-path", Supported),
    key("proxy-http-version", Differs("1.1 as nginx; 1.0 is accepted with a warning, and sluice keeps speaking HTTP/1.1 with keep-alive")),
    key("proxy-max-temp-file-size", NoEffect(STREAMS)),
    key("proxy-next-upstream", Differs("error, timeout, http_502, http_503, http_504 and off act as in nginx; invalid_header, http_500, http_403, http_404, http_429 and non_idempotent are accepted with a warning and never retried")),
    key("proxy-next-upstream-timeout", Supported),
    key("proxy-next-upstream-tries", Supported),
    key("proxy-read-timeout", Supported),
    key("proxy-redirect-from", Supported),
    key("proxy-redirect-to", Supported),
    key("proxy-request-buffering", Supported),
    key("proxy-send-timeout", Supported),
    key("proxy-ssl-ciphers", Differs("rustls offers a fixed set of modern suites: DEFAULT is accepted, any other list warns and is ignored")),
    key("proxy-ssl-name", Differs("without it, the name verified is the Service's cluster DNS name (SERVICE.NAMESPACE.svc); ingress-nginx's default names no certificate")),
    key("proxy-ssl-protocols", Differs("TLSv1.2 and TLSv1.3 as listed; older versions, which rustls does not speak, warn")),
    key("proxy-ssl-secret", Differs("a Secret of the Ingress's own namespace only (ingress-nginx's default without allow-cross-namespace-resources); of type kubernetes.io/tls (as cert-manager writes them) or Opaque, with ca.crt and optionally tls.crt and tls.key")),
    key("proxy-ssl-server-name", Supported),
    key("proxy-ssl-verify", Supported),
    key("proxy-ssl-verify-depth", Differs("rustls verifies whole chains: the default 1 is accepted, any other depth warns and is ignored")),
    key("rewrite-target", Supported),
    key("satisfy", Supported),
    key("secure-backends", Differs("removed from ingress-nginx; read as backend-protocol: HTTPS, which wins when both are set")),
    key("server-alias", Supported),
    key("server-snippet", Differs(SNIPPET)),
    key("service-upstream", Supported),
    key("session-cookie-change-on-failure", Supported),
    key("session-cookie-conditional-samesite-none", Supported),
    key("session-cookie-domain", Supported),
    key("session-cookie-expires", Supported),
    key("session-cookie-max-age", Supported),
    key("session-cookie-name", Supported),
    key("session-cookie-path", Differs("default: the Ingress rule's path as written (ingress-nginx uses the nginx location, which for a Prefix path /shop may be /shop/)")),
    key("session-cookie-samesite", Supported),
    key("session-cookie-secure", Supported),
    key("ssl-ciphers", Unsupported("sluice's TLS (rustls) offers a fixed set of modern cipher suites")),
    key("ssl-passthrough", Differs("with --enable-ssl-passthrough (or enable-ssl-passthrough: true), as ingress-nginx; exact hosts only, the first Ingress to claim a host")),
    key("ssl-prefer-server-ciphers", NoEffect("rustls offers only strong suites; the order does not weaken anything")),
    key("ssl-redirect", Supported),
    key("stream-snippet", Unsupported("TCP stream configuration; sluice proxies HTTP (an access directive in it fails closed)")),
    key("temporal-redirect", Supported),
    key("temporal-redirect-code", Supported),
    key("upstream-hash-by", Supported),
    key("upstream-hash-by-subset", Supported),
    key("upstream-hash-by-subset-size", Supported),
    key("upstream-vhost", Supported),
    key("use-regex", Supported),
    key("whitelist-source-range", Supported),
    key("x-forwarded-prefix", Supported),
];

/// Every ingress-nginx ConfigMap key (v1.15), as a key of sluice's config file.
/// `Supported` keys are config keys of the same name, or aliases (`ALIASES`).
pub const CONFIGMAP: &[Key] = &[
    key("access-log-params", NoEffect("nginx access_log parameters (buffering, gzip); sluice writes its own log (access-log)")),
    key("access-log-path", Unsupported("use access-log (stdout, off or a file path)")),
    key("add-headers", Supported),
    key("allow-backend-server-header", Supported),
    key("allow-cross-namespace-resources", NoEffect("sluice reads Secrets and Services only from the Ingress's own namespace")),
    key("allow-snippet-annotations", Differs("sluice never runs a snippet as configuration; it interprets a safe subset whatever this says")),
    key("annotation-value-word-blocklist", NoEffect("annotation values are parsed, never pasted into configuration, so no word needs blocking")),
    key("annotations-risk-level", NoEffect("no annotation reaches configuration unparsed, so no risk level needs setting")),
    key("bind-address", Unsupported("use http-addr and https-addr")),
    key("block-cidrs", Supported),
    key("block-referers", Supported),
    key("block-user-agents", Supported),
    key("brotli-level", Unsupported("response compression is not implemented")),
    key("brotli-min-length", Unsupported("response compression is not implemented")),
    key("brotli-types", Unsupported("response compression is not implemented")),
    key("client-body-buffer-size", Supported),
    key("client-body-timeout", Differs("applies while a body is buffered (proxy-request-buffering: on); a streamed body is bounded by proxy-send-timeout toward the pod")),
    key("client-header-buffer-size", NoEffect(NGINX_INTERNAL)),
    key("client-header-timeout", Supported),
    key("compute-full-forwarded-for", Unsupported("sluice appends to X-Forwarded-For only from trusted peers (use-forwarded-headers)")),
    key("custom-http-errors", Supported),
    key("debug-connections", NoEffect("nginx debug logging; use RUST_LOG")),
    key("default-type", NoEffect("sluice never serves files itself")),
    key("denylist-source-range", Supported),
    key("disable-access-log", Supported),
    key("disable-ipv6", NoEffect("sluice listens where http-addr and https-addr say")),
    key("disable-ipv6-dns", NoEffect("sluice resolves no names on the request path")),
    key("enable-access-log-for-default-backend", Unsupported("unrouted requests are always logged")),
    key("enable-aio-write", NoEffect(NGINX_INTERNAL)),
    key("enable-brotli", Unsupported("response compression is not implemented")),
    key("enable-modsecurity", FailsClosed(MODSECURITY)),
    key("enable-multi-accept", NoEffect(NGINX_INTERNAL)),
    key("enable-ocsp", Unsupported("OCSP stapling is not implemented")),
    key("enable-opentelemetry", Unsupported(TRACING)),
    key("enable-owasp-modsecurity-crs", FailsClosed(MODSECURITY)),
    key("enable-real-ip", Unsupported("the client address comes from use-forwarded-headers or use-proxy-protocol, from peers in proxy-real-ip-cidr")),
    key("enable-serial-reloads", NoEffect("sluice never reloads")),
    key("enable-syslog", Unsupported("logs go to stdout or a file")),
    key("enable-underscores-in-headers", NoEffect("headers with underscores are always passed")),
    key("error-log-level", NoEffect("use RUST_LOG")),
    key("error-log-path", NoEffect("sluice logs to stderr")),
    key("force-ssl-redirect", Supported),
    key("forwarded-for-header", Unsupported("the client address header is X-Forwarded-For")),
    key("forwarded-for-proxy-protocol-header", Unsupported("the client address header is X-Forwarded-For")),
    key("generate-request-id", Differs("sluice always keeps or sets X-Request-ID")),
    key("geoip2-autoreload-in-minutes", Unsupported("GeoIP is not implemented")),
    key("global-allowed-response-headers", Supported),
    key("global-auth-always-set-cookie", Supported),
    key("global-auth-cache-duration", Supported),
    key("global-auth-cache-key", Differs("as auth-cache-key: in each instance's memory, up to 4,096 answers")),
    key("global-auth-method", Supported),
    key("global-auth-request-redirect", Supported),
    key("global-auth-response-headers", Supported),
    key("global-auth-signin", Supported),
    key("global-auth-signin-redirect-param", Supported),
    key("global-auth-snippet", AUTH_SNIPPET),
    key("global-auth-url", Supported),
    key("grpc-buffer-size-kb", NoEffect(STREAMS)),
    key("gzip-disable", Unsupported("response compression is not implemented")),
    key("gzip-level", Unsupported("response compression is not implemented")),
    key("gzip-min-length", Unsupported("response compression is not implemented")),
    key("gzip-types", Unsupported("response compression is not implemented")),
    key("hide-headers", Supported),
    key("hsts", Supported),
    key("hsts-include-subdomains", Supported),
    key("hsts-max-age", Supported),
    key("hsts-preload", Supported),
    key("http-access-log-path", Unsupported("use access-log (stdout, off or a file path)")),
    key("http-redirect-code", Differs("the HTTPS redirect is always 308, ingress-nginx's default")),
    key("http-snippet", Unsupported("http-level nginx configuration; sluice has none (an access directive in it fails closed)")),
    key("http2-max-concurrent-streams", Supported),
    key("http2-max-field-size", NoEffect("bounded by max-header-size")),
    key("http2-max-header-size", NoEffect("bounded by max-header-size")),
    key("http2-max-requests", NoEffect("bounded by keep-alive-requests for HTTP/1; HTTP/2 connections are kept")),
    key("ignore-invalid-headers", NoEffect("invalid header names are always refused with 400")),
    key("jaeger-baggage-header", Unsupported(TRACING)),
    key("jaeger-collector-host", Unsupported(TRACING)),
    key("jaeger-collector-port", Unsupported(TRACING)),
    key("jaeger-debug-header", Unsupported(TRACING)),
    key("jaeger-endpoint", Unsupported(TRACING)),
    key("jaeger-propagation-format", Unsupported(TRACING)),
    key("jaeger-sampler-host", Unsupported(TRACING)),
    key("jaeger-sampler-param", Unsupported(TRACING)),
    key("jaeger-sampler-port", Unsupported(TRACING)),
    key("jaeger-sampler-type", Unsupported(TRACING)),
    key("jaeger-service-name", Unsupported(TRACING)),
    key("jaeger-trace-baggage-header-prefix", Unsupported(TRACING)),
    key("jaeger-trace-context-header-name", Unsupported(TRACING)),
    key("keep-alive", Supported),
    key("keep-alive-requests", Supported),
    key("large-client-header-buffers", Differs("use max-header-size for the largest request head")),
    key("limit-conn-status-code", Supported),
    key("limit-conn-zone-variable", Unsupported("limit-connections always counts by the one real client address ($binary_remote_addr, the default)")),
    key("limit-rate", Supported),
    key("limit-rate-after", Supported),
    key("limit-req-status-code", Supported),
    key("load-balance", Differs("ewma is sluice's own latency-aware balancer and its default (ingress-nginx: round_robin); round_robin is the same")),
    key("location-snippet", Unsupported("location-level nginx configuration for every Ingress (an access directive in it fails closed)")),
    key("log-format-escape-json", NoEffect("sluice's JSON log is always escaped")),
    key("log-format-escape-none", NoEffect("sluice's log is always escaped")),
    key("log-format-stream", NoEffect("sluice proxies HTTP only")),
    key("log-format-upstream", Differs("use access-log-format: json, or a template of $variables")),
    key("lua-shared-dicts", NoEffect(NGINX_INTERNAL)),
    key("main-snippet", Unsupported("main-level nginx configuration; sluice has none (an access directive in it fails closed)")),
    key("map-hash-bucket-size", NoEffect(NGINX_INTERNAL)),
    key("max-worker-connections", Supported),
    key("max-worker-open-files", NoEffect(NGINX_INTERNAL)),
    key("modsecurity-snippet", FailsClosed(MODSECURITY)),
    key("nginx-status-ipv4-whitelist", NoEffect("there is no nginx status page; the admin port has its own access rule")),
    key("nginx-status-ipv6-whitelist", NoEffect("there is no nginx status page; the admin port has its own access rule")),
    key("no-auth-locations", Supported),
    key("no-tls-redirect-locations", Unsupported("every path of a TLS host is redirected, /.well-known/acme-challenge too")),
    key("opentelemetry-config", Unsupported(TRACING)),
    key("opentelemetry-operation-name", Unsupported(TRACING)),
    key("opentelemetry-trust-incoming-span", Unsupported(TRACING)),
    key("otel-max-export-batch-size", Unsupported(TRACING)),
    key("otel-max-queuesize", Unsupported(TRACING)),
    key("otel-sampler", Unsupported(TRACING)),
    key("otel-sampler-parent-based", Unsupported(TRACING)),
    key("otel-sampler-ratio", Unsupported(TRACING)),
    key("otel-schedule-delay-millis", Unsupported(TRACING)),
    key("otel-service-name", Unsupported(TRACING)),
    key("otlp-collector-host", Unsupported(TRACING)),
    key("otlp-collector-port", Unsupported(TRACING)),
    key("proxy-add-original-uri-header", Supported),
    key("proxy-body-size", Supported),
    key("proxy-buffer-size", NoEffect(STREAMS)),
    key("proxy-buffering", NoEffect(STREAMS)),
    key("proxy-buffers-number", NoEffect(STREAMS)),
    key("proxy-busy-buffers-size", NoEffect(STREAMS)),
    key("proxy-connect-timeout", Supported),
    key("proxy-cookie-domain", Supported),
    key("proxy-cookie-path", Supported),
    key("proxy-headers-hash-bucket-size", NoEffect(NGINX_INTERNAL)),
    key("proxy-headers-hash-max-size", NoEffect(NGINX_INTERNAL)),
    key("proxy-next-upstream", Differs("invalid_header, http_500, http_403, http_404, http_429 and non_idempotent are accepted and never retried")),
    key("proxy-next-upstream-timeout", Supported),
    key("proxy-next-upstream-tries", Supported),
    key("proxy-protocol-header-timeout", Differs("the PROXY header must arrive within client-header-timeout")),
    key("proxy-read-timeout", Supported),
    key("proxy-real-ip-cidr", Differs("empty by default: nobody's forwarded headers are believed until the edge is listed (ingress-nginx: 0.0.0.0/0)")),
    key("proxy-redirect-from", Supported),
    key("proxy-request-buffering", Supported),
    key("proxy-send-timeout", Supported),
    key("proxy-set-headers", Supported),
    key("proxy-ssl-location-only", Unsupported(GLOBAL_FORM)),
    key("proxy-stream-next-upstream", NoEffect("sluice proxies HTTP only")),
    key("proxy-stream-next-upstream-timeout", NoEffect("sluice proxies HTTP only")),
    key("proxy-stream-next-upstream-tries", NoEffect("sluice proxies HTTP only")),
    key("proxy-stream-responses", NoEffect("sluice proxies HTTP only")),
    key("proxy-stream-timeout", NoEffect("sluice proxies HTTP only")),
    key("relative-redirects", NoEffect("sluice's redirects are absolute, as nginx's default")),
    key("retry-non-idempotent", Unsupported("non-idempotent requests are resent only when they never reached a pod")),
    key("reuse-port", NoEffect("one process accepts on each port")),
    key("server-name-hash-bucket-size", NoEffect(NGINX_INTERNAL)),
    key("server-name-hash-max-size", NoEffect(NGINX_INTERNAL)),
    key("server-snippet", Unsupported("server-level nginx configuration for every host (an access directive in it fails closed)")),
    key("server-tokens", NoEffect("sluice adds no Server header of its own")),
    key("service-upstream", Unsupported(GLOBAL_FORM)),
    key("skip-access-log-urls", Unsupported("use the enable-access-log annotation")),
    key("ssl-buffer-size", NoEffect(NGINX_INTERNAL)),
    key("ssl-ciphers", Unsupported("sluice's TLS (rustls) offers a fixed set of modern cipher suites")),
    key("ssl-dh-param", NoEffect("rustls uses no finite-field Diffie-Hellman")),
    key("ssl-ecdh-curve", Unsupported("rustls's key exchange groups are fixed")),
    key("ssl-protocols", Differs("TLS 1.2 and 1.3, ingress-nginx's default; older versions are never offered")),
    key("ssl-redirect", Supported),
    key("ssl-reject-handshake", Unsupported("handshakes for unknown names get the default certificate")),
    key("ssl-session-cache", NoEffect("rustls keeps its own session cache and tickets")),
    key("ssl-session-cache-size", NoEffect("rustls keeps its own session cache and tickets")),
    key("ssl-session-ticket-key", Unsupported("ticket keys are made at start and rotated by rustls")),
    key("ssl-session-tickets", NoEffect("rustls keeps its own session cache and tickets")),
    key("ssl-session-timeout", NoEffect("rustls keeps its own session cache and tickets")),
    key("stream-access-log-path", NoEffect("sluice proxies HTTP only")),
    key("stream-snippet", Unsupported("TCP stream configuration; sluice proxies HTTP (an access directive in it fails closed)")),
    key("strict-validate-path-type", Differs("paths of type Exact and Prefix are always matched literally, as with true")),
    key("syslog-host", Unsupported("logs go to stdout or a file")),
    key("syslog-port", Unsupported("logs go to stdout or a file")),
    key("upstream-keepalive-connections", Supported),
    key("upstream-keepalive-requests", Supported),
    key("upstream-keepalive-time", Unsupported("pooled connections are closed after upstream-keepalive-requests, not after a lifetime")),
    key("upstream-keepalive-timeout", Supported),
    key("use-forwarded-headers", Supported),
    key("use-geoip", Unsupported("GeoIP is not implemented")),
    key("use-geoip2", Unsupported("GeoIP is not implemented")),
    key("use-gzip", Unsupported("response compression is not implemented")),
    key("use-http2", NoEffect("HTTP/2 is always offered by ALPN")),
    key("use-proxy-protocol", Supported),
    key("variables-hash-bucket-size", NoEffect(NGINX_INTERNAL)),
    key("variables-hash-max-size", NoEffect(NGINX_INTERNAL)),
    key("whitelist-source-range", Supported),
    key("worker-cpu-affinity", NoEffect(NGINX_INTERNAL)),
    key("worker-processes", NoEffect("sluice runs one worker thread per core")),
    key("worker-shutdown-timeout", Differs("use drain-timeout")),
];

/// ConfigMap keys that sluice's config file spells differently: (ingress-nginx, sluice).
/// `disable-access-log` is translated by value (`"true"` means `access-log: off`).
pub const ALIASES: &[(&str, &str)] = &[("limit-req-status-code", "limit-rejected-status")];

fn find(table: &'static [Key], name: &str) -> Option<&'static Key> {
    table
        .binary_search_by(|k| k.name.cmp(name))
        .ok()
        .map(|i| &table[i])
}

/// The status of an annotation, by its name without prefix.
pub fn annotation(name: &str) -> Option<&'static Key> {
    find(ANNOTATIONS, name)
}

/// The status of an ingress-nginx ConfigMap key.
pub fn configmap_key(name: &str) -> Option<&'static Key> {
    find(CONFIGMAP, name)
}

/// Counts of each status in a table, in the order of `Status::label`.
pub fn counts(table: &[Key]) -> [(&'static str, usize); 5] {
    let mut counts = [
        ("supported", 0),
        ("supported, differs", 0),
        ("no effect", 0),
        ("unsupported", 0),
        ("fails closed", 0),
    ];
    for key in table {
        if let Some(slot) = counts
            .iter_mut()
            .find(|(label, _)| *label == key.status.label())
        {
            slot.1 += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables are sorted (lookups binary-search them) and hold each key once.
    #[test]
    fn tables_are_sorted_and_unique() {
        for table in [ANNOTATIONS, CONFIGMAP] {
            for pair in table.windows(2) {
                assert!(
                    pair[0].name < pair[1].name,
                    "{} / {}",
                    pair[0].name,
                    pair[1].name
                );
            }
        }
    }

    /// Every access-shaped key fails closed unless it is implemented.
    #[test]
    fn access_keys_fail_closed() {
        for key in ANNOTATIONS {
            let access = key.name.starts_with("auth-")
                || key.name.ends_with("-source-range")
                || key.name.contains("modsecurity")
                || ["satisfy", "enable-global-auth", "enable-owasp-core-rules"].contains(&key.name);
            if access {
                assert!(
                    matches!(key.status, FailsClosed(_) | Supported | Differs(_)),
                    "{}",
                    key.name
                );
            }
        }
        for key in CONFIGMAP {
            if key.name.starts_with("global-auth-") || key.name.starts_with("block-") {
                assert!(
                    matches!(key.status, FailsClosed(_) | Supported | Differs(_)),
                    "{}",
                    key.name
                );
            }
        }
    }
}
