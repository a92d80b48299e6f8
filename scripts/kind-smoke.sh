#!/usr/bin/env bash
# Smoke test of the system running in kind (`make kind-smoke`; scripts/kind-up.sh runs it).
# It needs kubectl, curl (with HTTP/2, as every current curl has) and openssl: gRPC is
# spoken by curl itself, so that nothing is downloaded or installed for it.
#   - each gRPC service through `kubectl port-forward`: server reflection lists its
#     services, and gRPC health answers SERVING for "", liveness, readiness and each
#     service by its full name; over mutual TLS where the service serves it
#     (KIND_TLS=1), with the service's own certificate from its Secret <service>-tls;
#   - nats, where the overlay runs it: its health with JetStream, through port-forward;
#   - the gateway through the kind port mapping (http://127.0.0.1:30080): /healthz,
#     /readyz, a 401 without a token, then, with a token signed by the key that
#     kind-up.sh keeps in the Secret gateway-jwt-signer (scripts/dev-jwt.sh), one order
#     (POST /v1/orders, in a trace of our own: a W3C traceparent) that must be CONFIRMED
#     and read back;
#   - the observability stack, where the overlay runs it: the order's trace in Jaeger,
#     sent by the services through the OpenTelemetry Collector; every service's
#     /metrics target up in Prometheus; Grafana's /api/health.
# Environment: KIND_CLUSTER (default: grpc-template), GATEWAY_URL (default:
# http://127.0.0.1:30080), SMOKE_WAIT (seconds to wait for the trace and the scrape
# targets; default 90).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cluster="${KIND_CLUSTER:-grpc-template}"
context="kind-$cluster"
namespace=grpc-template
gateway_url="${GATEWAY_URL:-http://127.0.0.1:30080}"
smoke_wait="${SMOKE_WAIT:-90}"
kctl=(kubectl --context "$context" -n "$namespace")

log() { printf 'kind-smoke: %s\n' "$*"; }
die() {
  printf 'kind-smoke: FAILED: %s\n' "$*" >&2
  exit 1
}

for tool in kubectl curl openssl od; do
  if ! command -v "$tool" >/dev/null; then
    case "$tool" in
      kubectl) die "kubectl not found: install kubectl 1.27 or later (https://kubernetes.io/docs/tasks/tools/)" ;;
      *) die "$tool not found: install it with your package manager" ;;
    esac
  fi
done
curl -V | grep -qw HTTP2 ||
  die "this curl has no HTTP/2 ($(curl -V | head -n1)): gRPC needs it; install a curl built with nghttp2"
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
  local service="$1" port="$2" out="$tmp/forward-$1" i
  "${kctl[@]}" port-forward "svc/$service" ":$port" >"$out" 2>&1 &
  forward_pid=$!
  local_port=""
  for ((i = 0; i < 100; i++)); do
    # The background job creates "$out" when it gets to run, which on a busy machine
    # can be after the first look here: a missing file is "not yet", not a failure.
    local_port="$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$out" 2>/dev/null | head -n1 || true)"
    [[ -z $local_port ]] || return 0
    kill -0 "$forward_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$out" >&2 2>/dev/null || true
  die "kubectl port-forward svc/$service :$port did not start (above)"
}

stop_forward() {
  kill "$forward_pid" 2>/dev/null || true
  wait "$forward_pid" 2>/dev/null || true
  forward_pid=""
}

# --- gRPC with curl: a call is an HTTP/2 POST of one length-prefixed protobuf message,
# answered by one message and a grpc-status trailer.

# The bytes of hex string $1, on stdout.
unhex() {
  local hex="$1" format="" i
  for ((i = 0; i < ${#hex}; i += 2)); do
    format+="\\$(printf '%03o' "0x${hex:i:2}")"
  done
  # shellcheck disable=SC2059 # the format is the bytes, as octal escapes
  printf "$format"
}

# The hex of stdin's bytes.
hex() { od -An -v -tx1 | tr -d ' \n'; }

# Protobuf: reads the varint at byte `pos` of hex string `pb` (the caller's); sets
# varint and advances pos.
pb_varint() {
  local byte shift=0
  varint=0
  while :; do
    byte=$((16#${pb:pos*2:2}))
    pos=$((pos + 1))
    varint=$((varint | (byte & 127) << shift))
    shift=$((shift + 7))
    ((byte < 128)) && return 0
  done
}

# Protobuf: the hex of every length-delimited field number $2 of message $1 (hex), one
# a line.
pb_fields() {
  local pb="$1" want="$2" pos=0 end=$((${#1} / 2)) key varint
  while ((pos < end)); do
    pb_varint
    key=$varint
    case $((key & 7)) in
      0) pb_varint ;;
      1) pos=$((pos + 8)) ;;
      5) pos=$((pos + 4)) ;;
      2)
        pb_varint
        if ((key >> 3 == want)); then printf '%s\n' "${pb:pos*2:varint*2}"; fi
        pos=$((pos + varint))
        ;;
      *) return 1 ;;
    esac
  done
}

# Protobuf: a string field number $1 as hex (names here are shorter than 128 bytes).
pb_string() {
  local value
  value="$(printf '%s' "$2" | hex)"
  [[ -z $value ]] || printf '%02x%02x%s' $(($1 << 3 | 2)) $((${#value} / 2)) "$value"
}

# Calls METHOD (/package.Service/Method) of the service at grpc_target with message $2
# (hex); sets grpc_status, grpc_message and grpc_reply (the answer's message, hex).
grpc_call() {
  local method="$1" message="$2" reply
  {
    printf '00%08x' $((${#message} / 2))
    printf '%s' "$message"
  } >"$tmp/request.hex"
  unhex "$(cat "$tmp/request.hex")" >"$tmp/request"
  : >"$tmp/headers"
  curl -sS --max-time 5 "${grpc_flags[@]}" -X POST -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary "@$tmp/request" -D "$tmp/headers" -o "$tmp/reply" "$grpc_target$method" 2>"$tmp/curl-error" ||
    die "$grpc_target$method: no answer: $(cat "$tmp/curl-error")"
  grpc_status="$(tr -d '\r' <"$tmp/headers" | sed -n 's/^[Gg]rpc-[Ss]tatus: *\([0-9]*\)$/\1/p' | tail -n1)"
  grpc_message="$(tr -d '\r' <"$tmp/headers" | sed -n 's/^[Gg]rpc-[Mm]essage: *//p' | tail -n1)"
  reply="$(hex <"$tmp/reply")"
  grpc_reply=""
  if ((${#reply} >= 10)); then grpc_reply="${reply:10:$((16#${reply:2:8})) * 2}"; fi
}

# The service names that reflection lists at grpc_target.
reflection_list() {
  local version response service name
  for version in v1 v1alpha; do
    # ServerReflectionRequest { list_services: "" } (field 7).
    grpc_call "/grpc.reflection.$version.ServerReflection/ServerReflectionInfo" 3a00
    [[ $grpc_status == 12 ]] || break # UNIMPLEMENTED: try the older version
  done
  [[ $grpc_status == 0 ]] || die "reflection at $grpc_target: grpc-status ${grpc_status:-none} $grpc_message"
  # ServerReflectionResponse.list_services_response (6) → service (1) → name (1).
  for response in $(pb_fields "$grpc_reply" 6); do
    for service in $(pb_fields "$response" 1); do
      for name in $(pb_fields "$service" 1); do
        unhex "$name"
        echo
      done
    done
  done
}

health() {
  local name="$1"
  # HealthCheckRequest { service: name } (1); the answer is { status: SERVING } (1 = 1).
  grpc_call /grpc.health.v1.Health/Check "$(pb_string 1 "$name")"
  [[ $grpc_status == 0 ]] ||
    die "health of \"$name\" at $grpc_target: grpc-status ${grpc_status:-none} $grpc_message"
  [[ $grpc_reply == 0801 ]] || die "health of \"$name\" at $grpc_target is not SERVING (answer $grpc_reply)"
}

# Sets grpc_flags and grpc_target for service $1 (port $2) behind local port $3:
# plaintext HTTP/2, or, when its Deployment serves TLS (k8s/components/tls), the CA and
# a client certificate (its own: it is good for client authentication too) from its
# Secret, with the service's name for the server certificate.
grpc_endpoint() {
  local service="$1" port="$2" local_port="$3" key
  local jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="GRPC_TLS_CERT_FILE")].value}'
  grpc_flags=(--http2-prior-knowledge)
  grpc_target="http://127.0.0.1:$local_port"
  [[ -n "$("${kctl[@]}" get deployment "$service" -o jsonpath="$jsonpath" 2>/dev/null)" ]] || return 0
  for key in ca.crt tls.crt tls.key; do
    (umask 077 && "${kctl[@]}" get secret "$service-tls" -o jsonpath="{.data.${key//./\\.}}" |
      openssl base64 -d -A >"$tmp/$service-$key") ||
      die "cannot read key $key of Secret $service-tls"
  done
  grpc_flags=(--http2 --cacert "$tmp/$service-ca.crt" --cert "$tmp/$service-tls.crt" --key "$tmp/$service-tls.key"
    --connect-to "$service:$port:127.0.0.1:$local_port")
  grpc_target="https://$service:$port"
}

# The gRPC services: every Service whose port is named grpc ("<name> <port>" lines).
"${kctl[@]}" get services \
  -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.ports[?(@.name=="grpc")].port}{"\n"}{end}' |
  awk 'NF == 2' >"$tmp/grpc-services"
[[ -s $tmp/grpc-services ]] || die "no Service with a port named grpc in $namespace"

scraped=(gateway)
while read -r -u 3 service port; do
  port_forward "$service" "$port"
  grpc_endpoint "$service" "$port" "$local_port"
  # Full names (package.Service): no blanks, no glob characters.
  names="$(reflection_list | grep -v '^grpc\.' | tr '\n' ' ' || true)"
  names="${names% }"
  [[ -n $names ]] || die "$service lists no service of its own through reflection"
  health ""
  health liveness
  health readiness
  for name in $names; do health "$name"; done
  log "$service: reflection lists $names; health SERVING for \"\", liveness, readiness, $names"
  stop_forward
  scraped+=("$service")
done 3<"$tmp/grpc-services"

# The broker, where the overlay runs one (k8s/components/durable): up, with JetStream.
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
# The order's trace: ours, so that Jaeger can be asked for it by its id.
trace_id="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
request=(-H "traceparent: 00-$trace_id-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')-01")
# The order's customer, and the subject of the token that places it: a token acts
# for the customer it names.
customer="cus-kind-smoke"
if [[ -n "$(gateway_env GATEWAY_JWT_KEYS_FILE)" ]]; then
  response="$(http GET /v1/products)"
  expect 401 "$response" "GET /v1/products without a token"
  "${kctl[@]}" get secret gateway-jwt-signer -o 'jsonpath={.data.private\.pem}' |
    openssl base64 -d -A >"$tmp/jwt-signer.pem" ||
    die "no private key in the Secret gateway-jwt-signer (scripts/kind-up.sh makes it)"
  [[ -s $tmp/jwt-signer.pem ]] || die "the Secret gateway-jwt-signer has no private.pem (scripts/kind-up.sh makes it)"
  token="$("$root/scripts/dev-jwt.sh" token "$tmp/jwt-signer.pem" "$(gateway_env GATEWAY_JWT_ISSUER)" \
    "$(gateway_env GATEWAY_JWT_AUDIENCE)" "$customer" "orders:read orders:write" 300)"
  request+=(-H "Authorization: Bearer $token")
  log "gateway: 401 without a token; a token of $customer (orders:read orders:write) for the rest"
fi

key="kind-smoke-$(date +%s)-$RANDOM"
body='{"customerId":"'"$customer"'","items":[{"sku":"SKU-001","quantity":1}],"cardToken":"tok_visa"}'
response="$(http POST /v1/orders "${request[@]}" -H 'Content-Type: application/json' -H "Idempotency-Key: $key" -d "$body")"
expect 201 "$response" "POST /v1/orders"
order="${response%$'\n'*}"
[[ $order == *'"status":"ORDER_STATUS_CONFIRMED"'* ]] || die "the order is not ORDER_STATUS_CONFIRMED: $order"
order_id="$(sed -n 's/.*"orderId":"\([^"]*\)".*/\1/p' <<<"$order")"
[[ -n $order_id ]] || die "no orderId in the answer: $order"
response="$(http GET "/v1/orders/$order_id" "${request[@]}")"
expect 200 "$response" "GET /v1/orders/$order_id"
log "gateway: order $order_id CONFIRMED and read back (trace $trace_id)"

# Retries command "$@" once a second for up to smoke_wait seconds, until it succeeds.
eventually() {
  local deadline=$((SECONDS + smoke_wait))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

# The order's trace in Jaeger, with spans of the gateway and of orders: the services
# export to the collector (OTEL_EXPORTER_OTLP_ENDPOINT), which alone exports to Jaeger.
trace_in_jaeger() {
  curl -sS --max-time 5 "http://127.0.0.1:$local_port/api/traces/$trace_id" >"$tmp/trace" 2>&1 || return 1
  grep -q '"serviceName": *"gateway"' "$tmp/trace" && grep -q '"serviceName": *"orders"' "$tmp/trace"
}
if "${kctl[@]}" get service jaeger >/dev/null 2>&1; then
  port_forward jaeger 16686
  eventually trace_in_jaeger ||
    die "jaeger: no trace $trace_id with spans of gateway and orders after ${smoke_wait}s (the services" \
      "export to otel-collector, which exports to jaeger): $(head -c 400 "$tmp/trace")"
  stop_forward
  log "jaeger: trace $trace_id of the order, with spans of gateway and orders, through the collector"
fi

# Every service's /metrics target up in Prometheus (its `service` label is the pod's
# app.kubernetes.io/name).
targets_up() {
  local service
  curl -sS --max-time 5 -G "http://127.0.0.1:$local_port/api/v1/query" \
    --data-urlencode 'query=min by (service) (up{job="grpc-template"})' >"$tmp/up" 2>&1 || return 1
  for service in "${scraped[@]}"; do
    grep -q "\"service\":\"$service\"},\"value\":\[[0-9.]*,\"1\"\]" "$tmp/up" || return 1
  done
}
if "${kctl[@]}" get service prometheus >/dev/null 2>&1; then
  port_forward prometheus 9090
  eventually targets_up ||
    die "prometheus: not every target is up after ${smoke_wait}s (${scraped[*]}): $(head -c 400 "$tmp/up")"
  stop_forward
  log "prometheus: the /metrics targets of ${scraped[*]} are up"
fi

if "${kctl[@]}" get service grafana >/dev/null 2>&1; then
  port_forward grafana 3000
  answer="$(curl -sS --max-time 5 "http://127.0.0.1:$local_port/api/health" 2>&1)" ||
    die "grafana: GET /api/health failed: $answer"
  [[ $answer =~ \"database\":\ *\"ok\" ]] || die "grafana: /api/health answered $answer"
  stop_forward
  log "grafana: /api/health → database ok"
fi
log "ok"
