#!/usr/bin/env bash
# Proves the template's own tools (`make test` runs it), in a temporary copy of the
# repository (git-tracked files plus working-tree changes, no target/), along the way a
# user makes the template theirs:
#   1. make new-service NAME=shipping: an invalid, reserved or taken name changes
#      nothing; then the service builds and passes its tests and the stack's, grpcurl
#      lists it and it is SERVING on the running stack, and its manifest passes the
#      contract. make remove-service NAME=shipping then gives back the tree from before;
#      shipping is scaffolded again and stays for the next steps.
#   2. make remove-service NAME=notifications: inventory is refused (orders and the
#      gateway call it) and nothing changes; notifications goes, nothing names it any
#      more, and clippy, the tests of the packages it touched (gateway, stack) and every
#      cross-service test (tests/, acceptance of shipping included) pass without it.
#   3. make rename NAME=acme-shop, twice: no old name is left, the workspace builds, and
#      scripts/k8s-check.sh passes on the manifests (shipping, no notifications, renamed).
# Builds share the main target directory (CARGO_TARGET_DIR), so dependencies are not
# compiled again; the copy's own crates get another version, so that their artifacts
# never pass for the main tree's (Cargo keys workspace crates by name, version and
# relative path). The copy's binaries replace the main tree's in target/debug/ until the
# main tree's next build links its own back. Set TEMPLATE_CHECK_KEEP=1 to keep the copy.
# The `sh -c` scripts below are single-quoted on purpose: their $1, $2 are their own.
# shellcheck disable=SC2016
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export PATH="$root/.tools/venv/bin:$PATH"
venv="$root/.tools/venv"
work="$(mktemp -d "${TMPDIR:-/tmp}/template-check.XXXXXX")"
copy="$work/repo"
stack_pid=""
started=$SECONDS

log() { printf 'template-check: [%3ds] %s\n' "$((SECONDS - started))" "$*"; }
die() {
  printf 'template-check: FAILED: %s\n' "$*" >&2
  exit 1
}
cleanup() {
  if [[ -n $stack_pid ]]; then kill "$stack_pid" 2>/dev/null || true; fi
  if [[ ${TEMPLATE_CHECK_KEEP:-} == 1 ]]; then
    log "kept the copy in $copy"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# Runs "$@" in the copy; on failure, says which step failed.
step() {
  local what="$1"
  shift
  log "$what"
  (cd "$copy" && "$@") || die "$what: '$*' failed (output above; TEMPLATE_CHECK_KEEP=1 keeps the copy)"
}

# A fingerprint of the copy's files (Cargo.lock aside: builds rewrite it), to prove
# that a refusal changed nothing and that a removal undid a scaffold.
# Each file's hash (but the build's and the tools'), one line each.
tree_files() {
  (cd "$copy" && find . -path ./target -prune -o -path ./.tools -prune -o -path ./Cargo.lock -prune -o \
    -type f -print0 | sort -z | xargs -0 sha256sum)
}

tree_hash() { tree_files | sha256sum; }

# Expects the command to fail with a message containing each of $1 (a |-separated
# list), and the tree unchanged.
refused() {
  local expect="$1" before out word
  shift
  before="$(tree_hash)"
  if out="$(cd "$copy" && "$@" 2>&1)"; then
    die "'$*' should have been refused, but succeeded: $out"
  fi
  IFS='|' read -ra words <<<"$expect"
  for word in "${words[@]}"; do
    [[ $out == *"$word"* ]] || die "'$*' was refused without saying '$word': $out"
  done
  [[ "$(tree_hash)" == "$before" ]] || die "'$*' was refused but changed files"
  log "refused as expected: $*"
}

# Tests with nextest when installed (as `make test`), else cargo test.
tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --cargo-quiet --no-fail-fast --status-level fail --final-status-level fail "$@"
  else
    cargo test --quiet "$@"
  fi
}

# The kustomized manifests against the contract (k8s/tests/check.py).
contract() {
  step "the manifests ($1): contract" sh -c 'kubectl kustomize k8s/overlays/kind >"$1/kind.yaml" &&
    kubectl kustomize k8s/base >"$1/base.yaml" && "$2" -B k8s/tests/check.py "$1/base.yaml" "$1/kind.yaml"' \
    sh "$work" "$venv/bin/python"
}

log "copying the repository (tracked files and working-tree changes) to $copy"
mkdir -p "$copy"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' file; do [[ -e $file ]] && printf '%s\0' "$file"; done |
  xargs -0 cp --parents -t "$copy"
ln -s "$root/.tools" "$copy/.tools"
# The npm packages of tests/web (git-ignored, like .tools) for the browser-side tests.
ln -s "$root/tests/web/node_modules" "$copy/tests/web/node_modules"
# Another version for the copy's crates: artifacts of their own in the shared target.
sed -i '0,/^version = "\([0-9.]*\)"$/s//version = "\1-template-check"/' "$copy/Cargo.toml"
grep -q -- '-template-check"$' "$copy/Cargo.toml" || die "no [workspace.package] version to change in Cargo.toml"

# 1. new-service
refused "invalid name" make -s new-service NAME=Shipping
refused "Rust keyword" make -s new-service NAME=async
refused "reserved" make -s new-service NAME=shared
refused "reserved" make -s new-service NAME=config
refused "taken" make -s new-service NAME=payments
scaffolded_from="$(tree_hash)"
tree_files >"$work/before-new-service"
step "make new-service NAME=shipping" make -s new-service NAME=shipping
step "docs/openapi.json has shipping's route" grep -q '"/v1/shipping/items/{item_id}"' docs/openapi.json
step "buf lint and format of the new proto" scripts/proto-check.sh
step "cargo fmt --check" cargo fmt --all -- --check
step "clippy of shipping and stack" cargo clippy --quiet -p shipping -p stack --all-targets -- -D warnings
step "tests of shipping and stack" tests -p shipping -p stack
step "the stack's cross-service test" tests -p contracts --test system stack::
step "cargo build -p stack (the binary)" cargo build --quiet -p stack --bins

log "the running stack serves shipping: grpcurl list and health (own network namespace if possible)"
stack_bin="$CARGO_TARGET_DIR/debug/stack"
probe='for _ in $(seq 300); do grpcurl -plaintext -max-time 1 127.0.0.1:50055 list >/dev/null 2>&1 && break; sleep 0.1; done
  grpcurl -plaintext 127.0.0.1:50055 list && grpcurl -plaintext -d "{\"service\": \"shipping.v1.ShippingService\"}" 127.0.0.1:50055 grpc.health.v1.Health/Check &&
  grpcurl -plaintext -d "{\"item_id\": \"item-1\"}" 127.0.0.1:50055 shipping.v1.ShippingService/GetItem &&
  curl -sS -f 127.0.0.1:8080/v1/shipping/items/item-1'
if command -v unshare >/dev/null && unshare --net --map-root-user true 2>/dev/null; then
  out="$(unshare --net --map-root-user sh -c 'ip link set lo up; "$1" >/dev/null 2>&1 & pid=$!; sh -c "$2"; rc=$?; kill $pid; wait $pid; exit $rc' sh "$stack_bin" "$probe" 2>&1)" ||
    die "grpcurl against the stack failed: $out"
else
  "$stack_bin" >"$work/stack.log" 2>&1 &
  stack_pid=$!
  out="$(sh -c "$probe" 2>&1)" || die "grpcurl against the stack failed: $out (stack log: $(tail -n 20 "$work/stack.log"))"
  kill "$stack_pid"
  wait "$stack_pid" || true
  stack_pid=""
fi
[[ $out == *"shipping.v1.ShippingService"* && $out == *'"SERVING"'* && $out == *'"itemId": "item-1"'* ]] ||
  die "the stack does not serve shipping as expected: $out"
# Its annotated RPC is a route of the gateway, with no gateway code (google.api.http).
[[ $out == *'{"itemId":"item-1"'* ]] ||
  die "the gateway does not route GET /v1/shipping/items/item-1 to shipping: $out"
log "grpcurl: shipping.v1.ShippingService listed, SERVING, GetItem answers; curl: the gateway routes GET /v1/shipping/items/item-1 to it"
contract "with shipping"

step "make remove-service NAME=shipping" make -s remove-service NAME=shipping
[[ "$(tree_hash)" == "$scaffolded_from" ]] ||
  die "remove-service shipping did not give back the tree from before new-service (< before, > after):
$(tree_files | diff "$work/before-new-service" - | grep '^[<>]')"
log "remove-service shipping gave back the tree from before new-service"
step "make new-service NAME=shipping (again, to keep)" make -s new-service NAME=shipping

# 2. remove-service
refused "orders|gateway" make -s remove-service NAME=inventory
refused "no service" make -s remove-service NAME=nosuch
step "make remove-service NAME=notifications" make -s remove-service NAME=notifications
[[ ! -e "$copy/services/notifications" && ! -e "$copy/proto/notifications" && ! -e "$copy/k8s/base/notifications.yaml" ]] ||
  die "remove-service left files of notifications behind"
# Code and manifests (prose may still tell the template's story).
names='\bnotifications(::|\(\)|\.workspace| =)|NOTIFICATIONS_ADDR|"notifications"|remove-service: notifications|name: notifications\b'
if leftover="$(cd "$copy" && grep -rnE "$names" Cargo.toml stack services k8s/base k8s/overlays tests \
  --include='*.rs' --include='*.toml' --include='*.yaml')"; then
  die "remove-service left references to notifications: $leftover"
fi
step "cargo fmt --check" cargo fmt --all -- --check
step "clippy of the workspace without notifications" cargo clippy --quiet --workspace --all-targets -- -D warnings
step "cargo build --workspace --bins (tests/ runs them)" cargo build --quiet --workspace --bins
step "tests of gateway and stack, and every cross-service test, without notifications" \
  tests -p gateway -p stack -p contracts
contract "without notifications"

# 3. rename
step "make rename NAME=acme-shop" make -s rename NAME=acme-shop
step "make rename NAME=acme-shop again (nothing to do)" make -s rename NAME=acme-shop
if leftover="$(cd "$copy" && grep -rnE 'grpc-rust-template|grpc-template' --exclude-dir=target --exclude-dir=.tools --exclude-dir=.git \
  --exclude=rename.py --exclude=template-check.sh --exclude=Cargo.lock .)"; then
  die "old names left after rename: $leftover"
fi
step "shell scripts after rename" scripts/lint-shell.sh
step "cargo build after rename" cargo build --quiet --workspace
step "clippy of the fuzz targets: shipping's, none of notifications" \
  cargo clippy --quiet --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
step "scripts/k8s-check.sh: shipping, no notifications, renamed (contract, checkov, manifest-driven run)" \
  sh -c 'scripts/k8s-check.sh && grep -q "namespace: acme-shop" target/k8s/kind.yaml'
log "ok: new-service, remove-service and rename in $((SECONDS - started))s"
