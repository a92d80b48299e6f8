#!/usr/bin/env bash
# Deletes the kind cluster of `make kind-up` (`make kind-down`), and with it everything
# deployed there. The images stay in Docker: `docker image rm <service>:dev` frees them.
# Environment: KIND_CLUSTER (default: grpc-template).
set -euo pipefail

cluster="${KIND_CLUSTER:-grpc-template}"

log() { printf 'kind-down: %s\n' "$*"; }

if ! command -v kind >/dev/null; then
  printf 'kind-down: ERROR: kind not found: install it (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)\n' >&2
  exit 1
fi
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  log "deleting cluster $cluster"
  kind delete cluster --name "$cluster"
else
  log "no cluster $cluster: nothing to delete"
fi
