#!/usr/bin/env bash
# `make run`: dev certificates, a bearer token and a config in DIR, then the built-in sink on
# 127.0.0.1:14318 (OTLP/HTTP) and 127.0.0.1:14317 (OTLP/gRPC over h2c), and the proxy on
# 127.0.0.1:4317/4318 in front of it. Ctrl-C stops both.
set -euo pipefail
dir=${1:-run}
bin=${2:-.build/debug/otlp-auth-proxy}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

certs/make-dev-certs.sh "$dir/certs" >/dev/null

if [ ! -s "$dir/tokens.yaml" ]; then
  umask 077
  token=$(openssl rand -hex 32)
  printf '%s' "$token" >"$dir/token"
  cat >"$dir/tokens.yaml" <<YAML
# Bearer tokens the dev proxy accepts. Each maps a token to a principal and the tenant the proxy
# sets in X-Scope-OrgID. Generate tokens with: openssl rand -hex 32
tokens:
  - principal: dev
    tenant: dev-tenant
    token: "$token"
YAML
fi

cat >"$dir/proxy.yaml" <<YAML
# Dev configuration written by \`make run\`; see docs/configuration.md for every key.
grpc: { endpoint: "127.0.0.1:4317" }
http: { endpoint: "127.0.0.1:4318" }
tls: { cert_file: certs/server.crt, key_file: certs/server.key }
upstream: { grpc: "127.0.0.1:14317", http: "127.0.0.1:14318" }
auth: { bearer: { tokens_file: tokens.yaml } }
tenant: { header: X-Scope-OrgID }
YAML

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$bin" sink --listen 127.0.0.1:14318 --grpc-listen 127.0.0.1:14317 >"$dir/sink.out" 2>"$dir/sink.log" &
pids+=($!)
"$bin" run --config "$dir/proxy.yaml" > >(tee "$dir/proxy.out") &
pids+=($!)

for _ in $(seq 1 100); do
  grep -q "proxy ready" "$dir/proxy.out" 2>/dev/null && break
  if ! kill -0 "${pids[1]}" 2>/dev/null; then echo "the proxy did not start; see the messages above" >&2; exit 1; fi
  sleep 0.1
done

cat <<TXT

otlp-auth-proxy is serving OTLP/gRPC on https://127.0.0.1:4317 and OTLP/HTTP on https://127.0.0.1:4318
in front of the built-in sink.
Files in $dir: certs/ca.crt (dev CA), token (your bearer token), tokens.yaml, proxy.yaml

Send a first span:

  curl --cacert $dir/certs/ca.crt https://127.0.0.1:4318/v1/traces \\
    -H "Authorization: Bearer \$(cat $dir/token)" -H 'Content-Type: application/json' \\
    -d '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"first-span","kind":1,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000001000000000"}]}]}]}'

See what the receiver got (per tenant, set by the proxy from the token):

  curl -s http://127.0.0.1:14318/stats

The proxy's own metrics and health (admin listener):

  curl -s http://127.0.0.1:9464/metrics | grep otlp_auth_proxy_requests_total
  curl -s http://127.0.0.1:9464/readyz

From an OpenTelemetry SDK:

  export OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
  export OTEL_EXPORTER_OTLP_ENDPOINT=https://127.0.0.1:4318
  export OTEL_EXPORTER_OTLP_CERTIFICATE=$dir/certs/ca.crt
  export OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer%20\$(cat $dir/token)"

  (for OTLP/gRPC: OTEL_EXPORTER_OTLP_PROTOCOL=grpc and OTEL_EXPORTER_OTLP_ENDPOINT=https://127.0.0.1:4317)

Ctrl-C stops the proxy and the sink.
TXT
wait "${pids[1]}"
