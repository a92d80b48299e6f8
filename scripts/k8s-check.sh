#!/usr/bin/env bash
# Checks the image and the Kubernetes manifests without a cluster (`make test` runs it):
#   1. hadolint on the Dockerfile, and its build context (k8s/tests/dockercontext.py):
#      the files .dockerignore lets through, by Docker's rules, hold the whole cargo
#      workspace (`cargo metadata --locked --offline`, every binary) and every COPY source,
#      and the Dockerfile's RUN steps, replayed with a recording `cargo`, cook and build
#      the services and `stack` with a number of jobs (scripts/cargo-jobs.sh);
#   2. the scripts users run on their own machines (kind-up, kind-smoke, kind-down,
#      dev-jwt, tls-certs) use nothing macOS's bash 3.2 and BSD tools lack
#      (k8s/tests/bash32.py);
#   3. `kubectl kustomize` renders k8s/base and every k8s/overlays/* into target/k8s/;
#   4. the unit tests of these checks (k8s/tests/test_*.py);
#   5. the contract of every rendered file (k8s/tests/check.py): Kubernetes schemas
#      (kubernetes-validate, strict) and the binaries' env, ports, probes, upstreams,
#      selectors, NetworkPolicies, shutdown timing and security context;
#   6. checkov on every rendered overlay and the Dockerfile: no failed check, every
#      skip justified where it is declared;
#   7. the manifest-driven run (k8s/tests/run.py): the kind overlay's StatefulSets as
#      the real nats-server and PostgreSQL, its Deployments as processes of `cargo
#      build --bins`, probed, sent an order, smoke-tested by scripts/kind-smoke.sh
#      (kubectl faked), stopped with SIGTERM.
# Set K8S_CHECK_SKIP_RUN=1 to skip step 7 (and the build it needs).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.tools/venv"
python="$venv/bin/python"
out="$root/target/k8s"
# The overlay whose Deployments the manifest-driven run starts.
run_overlay=kind

log() { printf 'k8s-check: %s\n' "$*"; }
die() {
  log "$*" >&2
  exit 1
}

if ! command -v kubectl >/dev/null; then
  die "kubectl not found: it renders the manifests (kubectl kustomize). Install kubectl 1.27 or" \
    "later: https://kubernetes.io/docs/tasks/tools/ (Debian's kubernetes-client is too old)"
fi
kubectl_minor="$(kubectl version --client -o json 2>/dev/null | "$python" -c \
  'import json, sys; print(json.load(sys.stdin)["clientVersion"]["minor"].rstrip("+"))')" ||
  die "cannot tell kubectl's version (kubectl version --client -o json)"
if ((kubectl_minor < 27)); then
  die "kubectl 1.$kubectl_minor is too old: the kustomizations need kustomize v5 (kubectl 1.27 or later)"
fi
for tool in hadolint checkov; do
  [[ -x "$venv/bin/$tool" ]] || die "$tool not found in .tools/venv: run scripts/tools.sh"
done
"$python" -c 'import yaml, grpc, grpc_health.v1, kubernetes_validate' 2>/dev/null ||
  die "PyYAML, grpcio, grpcio-health-checking or kubernetes-validate missing in .tools/venv: run scripts/tools.sh"

log "hadolint Dockerfile"
"$venv/bin/hadolint" --no-color Dockerfile
"$python" -B k8s/tests/dockercontext.py

log "bash 3.2 (macOS) lint of the scripts users run"
"$python" -B k8s/tests/bash32.py scripts/kind-up.sh scripts/kind-smoke.sh scripts/kind-down.sh \
  scripts/dev-jwt.sh scripts/tls-certs.sh

log "kubectl kustomize (kubectl 1.$kubectl_minor) → target/k8s/"
mkdir -p "$out"
rm -f "$out"/*.yaml
kubectl kustomize k8s/base >"$out/base.yaml"
overlays=()
for dir in k8s/overlays/*/; do
  name="$(basename "$dir")"
  kubectl kustomize "$dir" >"$out/$name.yaml"
  overlays+=("$name")
done
log "rendered: base ${overlays[*]}"

log "unit tests of the checks"
"$python" -B -m unittest discover --start-directory k8s/tests --pattern 'test_*.py'

log "manifest contract"
rendered=("$out/base.yaml")
for name in "${overlays[@]}"; do rendered+=("$out/$name.yaml"); done
"$python" -B k8s/tests/check.py "${rendered[@]}"

log "checkov (kubernetes: ${overlays[*]}; dockerfile)"
checkov_files=()
for name in "${overlays[@]}"; do checkov_files+=(--file "$out/$name.yaml"); done
# --skip-download: nothing is fetched from the vendor's API (no guidelines, no telemetry).
if ! "$venv/bin/checkov" "${checkov_files[@]}" --file Dockerfile --framework kubernetes dockerfile \
  --skip-download --compact --quiet; then
  die "checkov failed (above): fix the manifest, or skip the check on the resource with a" \
    "checkov.io/skipN annotation (Dockerfile: a checkov:skip comment) that says why"
fi

if [[ ${K8S_CHECK_SKIP_RUN:-} == 1 ]]; then
  log "manifest-driven run skipped (K8S_CHECK_SKIP_RUN=1)"
else
  log "cargo build --bins (the binaries the manifests run)"
  cargo build --quiet --workspace --bins
  target_dir="$(cargo metadata --no-deps --format-version 1 |
    "$python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  run=("$python" -B k8s/tests/run.py "$out/$run_overlay.yaml" "$target_dir/debug")
  # In a network namespace of its own when we are root: the services' fixed ports then
  # never collide with other processes of the machine. (Not in an unprivileged user
  # namespace: there the run would be a root that cannot switch users, and PostgreSQL
  # refuses to run as root.) Elsewhere on the machine's loopback.
  if ((EUID == 0)) && command -v unshare >/dev/null && command -v ip >/dev/null &&
    unshare --net ip link set lo up 2>/dev/null; then
    log "manifest-driven run of the $run_overlay overlay (in a network namespace of its own)"
    unshare --net sh -c 'ip link set lo up && exec "$@"' sh "${run[@]}"
  else
    log "manifest-driven run of the $run_overlay overlay (on this machine's loopback)"
    "${run[@]}"
  fi
fi
log "ok"
