#!/usr/bin/env bash
# The whole system in a local kind cluster, in one command (`make kind-up`), the first
# time and every time after. It needs Docker, kind, kubectl, curl and openssl, nothing
# else (no Rust toolchain, no `make tools`), and runs with macOS's bash 3.2
# (k8s/tests/bash32.py checks it):
#   1. checks for docker (with a running daemon), kind, kubectl, curl and openssl;
#   2. builds one image per service from the Dockerfile (without a provenance
#      attestation, which would give every build a new image ID: an unchanged image
#      keeps its ID, so a re-run loads and rolls nothing), before the cluster exists:
#      the release build's compilers get the memory the kind node would take;
#   3. creates the cluster from k8s/kind-config.yaml unless it exists, and loads the
#      images into its node;
#   4. creates the Secret of the database's passwords unless it exists (random values,
#      kept by later runs: the database has them) and the gateway's token keys unless
#      they exist (a generated Ed25519 key pair: the public JWKS the gateway mounts,
#      the private key kept apart for kind-smoke.sh), then applies k8s/overlays/kind, each
#      image under a tag made of its image ID, so that a rebuilt image rolls out and an
#      unchanged one does not;
#   5. waits for every rollout, the broker and the database first, then the services
#      and the observability stack (on failure: pods, events and logs);
#   6. runs the smoke test, scripts/kind-smoke.sh.
# Passwords and keys pass through files in a private temporary directory, removed
# on exit, failed or not; never through a command line.
# Only the cluster's own context (kind-<cluster>) is ever used: other clusters of your
# kubeconfig are not touched.
#
# Environment: KIND_CLUSTER (default: grpc-template), KIND_NODE_IMAGE (the node image
# of a new cluster; default: your kind's), ROLLOUT_TIMEOUT (default: 180s), KIND_TLS=1
# (mutual TLS between the services: the overlay with k8s/components/tls, and before it
# a development CA with one certificate per service, made by scripts/tls-certs.sh into
# the Secrets <service>-tls, never into the repository; existing Secrets are kept).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cluster="${KIND_CLUSTER:-grpc-template}"
context="kind-$cluster"
rollout_timeout="${ROLLOUT_TIMEOUT:-180s}"
namespace=grpc-template
overlay=k8s/overlays/kind
# The kind release this is tested with (Kubernetes 1.37 by default). Older ones work if
# their node runs Kubernetes 1.30 or later (checked below), with one known trap: from
# v0.24.0 (the first to enforce NetworkPolicies) until kube-network-policies fixed it in
# 2025 (kubernetes-sigs/kube-network-policies#150), a default-deny policy also blocked
# the kubelet's probes, so pods never became ready.
kind_tested=0.33.0
# The native `sleep` preStop action is on by default from Kubernetes 1.30.
k8s_minimum_minor=30
# Mutual TLS between the services (k8s/components/tls) when KIND_TLS=1.
tls="${KIND_TLS:-0}"
[[ $tls == 0 || $tls == 1 ]] || {
  echo "kind-up: ERROR: KIND_TLS is 0 or 1, not $tls" >&2
  exit 1
}
# The passwords of PostgreSQL (k8s/components/durable/postgres.yaml): its superuser's
# and one per service's role. Never in the repository; k8s/tests/check.py checks that
# every secretKeyRef of the manifests names one of these keys.
db_secret=postgres-credentials
db_secret_keys=(postgres-password orders-password inventory-password payments-password notifications-password)
# The gateway's token keys (scripts/dev-jwt.sh keys): the JWKS it mounts (k8s/base/gateway.yaml)
# and, in a Secret no pod mounts, the private key that kind-smoke.sh signs its tokens with.
jwt_keys_secret=gateway-jwt-keys
jwt_signer_secret=gateway-jwt-signer

# Every temporary file (passwords, keys) lives here, readable by this user only.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step=0
steps=6
progress() {
  step=$((step + 1))
  printf '\nkind-up: [%d/%d] %s\n' "$step" "$steps" "$*"
}
log() { printf 'kind-up: %s\n' "$*"; }
die() {
  printf 'kind-up: ERROR: %s\n' "$*" >&2
  exit 1
}

# True when version $1 >= version $2 (dotted numbers).
version_at_least() {
  [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]
}

require_tools() {
  if ! command -v docker >/dev/null; then
    die "docker not found: it builds the images and runs kind's node. Install Docker Engine" \
      "(https://docs.docker.com/engine/install/) or Docker Desktop, then run again."
  fi
  if ! docker info >/dev/null 2>&1; then
    die "docker is installed but its daemon does not answer (docker info failed): start" \
      "Docker (systemctl start docker, or Docker Desktop), check that your user may use it," \
      "then run again."
  fi
  if ! command -v kind >/dev/null; then
    die "kind not found: install kind v$kind_tested (https://kind.sigs.k8s.io/docs/user/quick-start/#installation:" \
      "a release binary, 'go install sigs.k8s.io/kind@v$kind_tested' or 'brew install kind'), then run again."
  fi
  if ! command -v kubectl >/dev/null; then
    die "kubectl not found: install kubectl 1.27 or later (https://kubernetes.io/docs/tasks/tools/)," \
      "then run again."
  fi
  local tool
  for tool in curl openssl; do
    command -v "$tool" >/dev/null ||
      die "$tool not found: install it with your package manager (the smoke test and the keys need it)"
  done
  local kind_version
  # `docker build` is buildx (Docker 23 and later): without a provenance attestation,
  # an unchanged build keeps its image ID (with Docker's containerd image store, an
  # attestation made a new ID each time), and `--load` puts the image into Docker
  # whichever builder runs it (CI's caching one too). The legacy builder does both.
  build_flags=()
  if docker build --help 2>/dev/null | grep -q -- '--provenance'; then
    build_flags=(--provenance=false --load)
  fi
  kind_version="$(kind version 2>/dev/null | sed -n 's/^kind v\([0-9][0-9.]*\).*/\1/p')"
  if [[ -z $kind_version ]]; then
    log "WARNING: cannot tell kind's version ($(kind version 2>&1 | head -n1)); carrying on"
  elif ! version_at_least "$kind_version" "$kind_tested"; then
    log "WARNING: kind v$kind_version is older than the tested v$kind_tested; carrying on." \
      "If pods never become ready (probes failing), upgrade kind: some releases' NetworkPolicy" \
      "enforcement blocked kubelet probes (kubernetes-sigs/kube-network-policies#150)."
  fi
  log "docker $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'), kind v${kind_version:-?}," \
    "kubectl $(kubectl version --client -o json 2>/dev/null | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | head -n1)"
}

# The services: one folder of services/ each, with its manifest in k8s/base.
list_services() {
  services=() # bash32: empty-array — filled below, or the script dies
  local dir name
  for dir in services/*/; do
    name="$(basename "$dir")"
    [[ -f "k8s/base/$name.yaml" ]] || die "services/$name has no manifest k8s/base/$name.yaml"
    services+=("$name")
  done
  ((${#services[@]})) || die "no services found in services/"
}

create_cluster() {
  if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    log "cluster $cluster exists: reusing it (make kind-down deletes it)"
  else
    log "creating cluster $cluster from k8s/kind-config.yaml${KIND_NODE_IMAGE:+ with $KIND_NODE_IMAGE}"
    local args=(create cluster --name "$cluster" --config k8s/kind-config.yaml --wait 180s)
    if [[ -n ${KIND_NODE_IMAGE:-} ]]; then args+=(--image "$KIND_NODE_IMAGE"); fi
    kind "${args[@]}"
  fi
  local minor
  minor="$(kubectl --context "$context" version -o json 2>/dev/null |
    sed -n '/serverVersion/,/}/s/.*"minor": "\([0-9]*\).*/\1/p' | head -n1)"
  [[ -n $minor ]] || die "the cluster does not answer (kubectl --context $context version)"
  if ((minor < k8s_minimum_minor)); then
    die "the cluster runs Kubernetes 1.$minor; the manifests need 1.$k8s_minimum_minor or later" \
      "(native preStop sleep). Delete it (make kind-down) and create it with a newer kind or KIND_NODE_IMAGE."
  fi
  log "Kubernetes 1.$minor, context $context"
}

# Builds every image; fills `tags` (service=tag lines) for the deployment.
build_images() {
  tags=() # bash32: empty-array — one entry per service, and there is at least one
  local i=0 service id tag
  log "the first build compiles the workspace in release mode (several minutes); later ones reuse it"
  for service in "${services[@]}"; do
    i=$((i + 1))
    log "($i/${#services[@]}) docker build ${build_flags[*]-} --build-arg SERVICE=$service -t $service:dev ."
    docker build ${build_flags[@]+"${build_flags[@]}"} --build-arg "SERVICE=$service" --tag "$service:dev" . ||
      die "docker build of $service failed (above)"
    id="$(docker image inspect --format '{{.Id}}' "$service:dev")"
    tag="${id#sha256:}"
    tag="${tag:0:12}"
    docker tag "$service:dev" "$service:$tag"
    tags+=("$service=$tag")
  done
}

# Loads the images of build_images into the cluster's node.
load_images() {
  local i=0 entry image
  for entry in "${tags[@]}"; do
    i=$((i + 1))
    image="${entry%%=*}:${entry#*=}"
    log "($i/${#tags[@]}) kind load docker-image $image ($(docker image inspect --format '{{.Size}}' "$image" |
      awk '{ printf "%.1f MB", $1 / 1000000 }'))"
    kind load docker-image --name "$cluster" "$image" >/dev/null ||
      die "kind load docker-image $image failed"
  done
}

# Applies the kind overlay with the tags of build_images, through a kustomization in
# the git-ignored target/ (kustomize resolves only relative paths).
deploy() {
  local dir="target/k8s/kind-up" entry
  mkdir -p "$dir"
  {
    echo "# Written by scripts/kind-up.sh: the kind overlay with the images just built."
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    echo "  - ../../../$overlay"
    if [[ $tls == 1 ]]; then
      echo "components:"
      echo "  - ../../../k8s/components/tls"
    fi
    echo "images:"
    for entry in "${tags[@]}"; do
      printf '  - name: %s\n    newTag: "%s"\n' "${entry%%=*}" "${entry#*=}"
    done
  } >"$dir/kustomization.yaml"
  kubectl --context "$context" apply -k "$dir"
}

# A random password: hex, so that it goes into a URL (DATABASE_URL) as it is.
random_password() {
  od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

# The Secret $db_secret with every key of db_secret_keys. An existing Secret is kept,
# since the database was initialised with its passwords; a key it lacks (a service
# added since) is added.
create_secrets() {
  local kctl=(kubectl --context "$context" -n "$namespace") dir="$work/db-secret" key
  local missing=() # bash32: empty-array — expanded only when it has entries
  kubectl --context "$context" apply -f "$overlay/namespace.yaml" >/dev/null
  if "${kctl[@]}" get secret "$db_secret" >/dev/null 2>&1; then
    for key in "${db_secret_keys[@]}"; do
      [[ -n "$("${kctl[@]}" get secret "$db_secret" -o "go-template={{with index .data \"$key\"}}{{.}}{{end}}" 2>/dev/null)" ]] ||
        missing+=("$key")
    done
    if ((${#missing[@]} == 0)); then
      log "secret $db_secret exists: keeping its passwords"
      return 0
    fi
    log "secret $db_secret: adding ${missing[*]} (a database that exists already lacks their" \
      "roles: k8s/README.md says how to add them)"
    # In a file, readable by this user only: no password on a command line.
    for key in "${missing[@]}"; do
      (umask 077 && printf '{"stringData": {"%s": "%s"}}\n' "$key" "$(random_password)" >"$work/patch.json")
      "${kctl[@]}" patch secret "$db_secret" --type merge --patch-file "$work/patch.json" >/dev/null
      rm -f "$work/patch.json"
    done
    return 0
  fi
  # One file per key, readable by this user only: no password on a command line.
  mkdir -m 700 "$dir"
  for key in "${db_secret_keys[@]}"; do
    (umask 077 && random_password >"$dir/$key")
  done
  "${kctl[@]}" create secret generic "$db_secret" --from-file="$dir" --dry-run=client -o yaml |
    kubectl label --local -f - -o yaml app.kubernetes.io/part-of=grpc-rust-template \
      app.kubernetes.io/component=database |
    "${kctl[@]}" apply -f - >/dev/null
  rm -rf "$dir"
  log "secret $db_secret created with random passwords: ${db_secret_keys[*]}"
}

# With KIND_TLS=1: the Secret <service>-tls of every service (tls.crt, tls.key, ca.crt),
# from a CA made for this cluster. Kept when they all exist; otherwise all are made
# anew under a new CA (the services load them at start: the rollout restarts them).
create_tls_secrets() {
  [[ $tls == 1 ]] || return 0
  local kctl=(kubectl --context "$context" -n "$namespace") service dir="$work/tls" absent=0
  for service in "${services[@]}"; do
    "${kctl[@]}" get secret "$service-tls" >/dev/null 2>&1 || absent=1
  done
  if ((absent == 0)); then
    log "TLS secrets exist: keeping them (delete them to renew: kubectl delete secret -l app.kubernetes.io/component=tls)"
    return 0
  fi
  command -v openssl >/dev/null || die "openssl not found: KIND_TLS=1 makes the certificates with it"
  mkdir -m 700 "$dir"
  "$root/scripts/tls-certs.sh" "$dir" "$namespace" >/dev/null
  for service in "${services[@]}"; do
    "${kctl[@]}" create secret generic "$service-tls" --from-file="$dir/$service" --dry-run=client -o yaml |
      kubectl label --local -f - -o yaml app.kubernetes.io/part-of=grpc-rust-template \
        app.kubernetes.io/component=tls |
      "${kctl[@]}" apply -f - >/dev/null
  done
  rm -rf "$dir"
  log "TLS secrets created (a new CA; its key is gone): ${services[*]/%/-tls}"
  # Pods of an earlier rollout hold the old certificates.
  "${kctl[@]}" rollout restart deployment >/dev/null 2>&1 || true
}

# The gateway's key pair, unless both Secrets exist. A new pair replaces both, and a
# gateway already running is restarted after the apply (it reads its keys at start-up).
create_jwt_keys() {
  local kctl=(kubectl --context "$context" -n "$namespace") dir="$work/jwt"
  if "${kctl[@]}" get secret "$jwt_keys_secret" >/dev/null 2>&1 &&
    "${kctl[@]}" get secret "$jwt_signer_secret" >/dev/null 2>&1; then
    log "secrets $jwt_keys_secret and $jwt_signer_secret exist: keeping the gateway's token keys"
    return 0
  fi
  mkdir -m 700 "$dir"
  "$root/scripts/dev-jwt.sh" keys "$dir"
  "${kctl[@]}" create secret generic "$jwt_keys_secret" --from-file=jwks.json="$dir/jwks.json" \
    --dry-run=client -o yaml |
    kubectl label --local -f - -o yaml app.kubernetes.io/part-of=grpc-rust-template \
      app.kubernetes.io/component=gateway |
    "${kctl[@]}" apply -f - >/dev/null
  "${kctl[@]}" create secret generic "$jwt_signer_secret" --from-file=private.pem="$dir/private.pem" \
    --dry-run=client -o yaml |
    kubectl label --local -f - -o yaml app.kubernetes.io/part-of=grpc-rust-template \
      app.kubernetes.io/component=gateway |
    "${kctl[@]}" apply -f - >/dev/null
  rm -rf "$dir"
  if "${kctl[@]}" get deployment gateway >/dev/null 2>&1; then
    restart_gateway=1
  fi
  log "secrets $jwt_keys_secret (JWKS) and $jwt_signer_secret (its private key) created from a new Ed25519 key pair"
}

diagnose() {
  local workload="$1" name="${1#*/}"
  echo "--- pods" >&2
  kubectl --context "$context" -n "$namespace" get pods -o wide >&2 || true
  echo "--- $workload" >&2
  kubectl --context "$context" -n "$namespace" describe "$workload" >&2 || true
  echo "--- recent events" >&2
  kubectl --context "$context" -n "$namespace" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 25 >&2 || true
  echo "--- logs of $name" >&2
  kubectl --context "$context" -n "$namespace" logs "$workload" --all-containers --tail=40 >&2 || true
}

# The StatefulSets first (the broker and the database: the services need them), then
# every Deployment: the services and the observability stack (the smoke test uses it).
wait_for_rollouts() {
  local workload
  {
    kubectl --context "$context" -n "$namespace" get statefulsets -o name
    kubectl --context "$context" -n "$namespace" get deployments -o name
  } >"$work/workloads"
  while read -r -u 3 workload; do
    if ! kubectl --context "$context" -n "$namespace" rollout status "$workload" --timeout "$rollout_timeout"; then
      diagnose "$workload"
      die "$workload did not become ready within $rollout_timeout (diagnostics above)"
    fi
  done 3<"$work/workloads"
}

progress "tools"
require_tools
list_services
progress "images: ${services[*]}"
build_images
progress "cluster, and the images loaded into it"
create_cluster
load_images
progress "apply $overlay (namespace $namespace)"
restart_gateway=0
create_secrets
create_tls_secrets
create_jwt_keys
deploy
if ((restart_gateway)); then
  log "new token keys: restarting the gateway"
  kubectl --context "$context" -n "$namespace" rollout restart deployment/gateway
fi
progress "rollouts"
wait_for_rollouts
progress "smoke test"
KIND_CLUSTER="$cluster" "$root/scripts/kind-smoke.sh"

printf '\nkind-up: the system runs in kind (context %s, namespace %s):\n' "$context" "$namespace"
cat <<EOF
  # a token for the gateway (scripts/dev-jwt.sh; k8s/base/gateway.yaml names its issuer and audience):
  kubectl --context $context -n $namespace get secret $jwt_signer_secret -o jsonpath='{.data.private\.pem}' | openssl base64 -d -A >target/kind-jwt.pem
  TOKEN=\$(scripts/dev-jwt.sh token target/kind-jwt.pem https://dev-issuer.local gateway cus_demo "inventory:read orders:read orders:write")
  curl -s -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:30080/v1/products
  kubectl --context $context -n $namespace get pods
  kubectl --context $context -n $namespace port-forward svc/inventory 50052:50052   # then grpcurl -plaintext 127.0.0.1:50052 list, if you have grpcurl (KIND_TLS=1: see docs/security.md)
  kubectl --context $context -n $namespace port-forward svc/jaeger 16686:16686       # traces: http://127.0.0.1:16686 (Prometheus: svc/prometheus 9090, Grafana: svc/grafana 3000)
  make kind-down   # deletes the cluster
EOF
