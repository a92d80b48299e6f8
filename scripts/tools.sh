#!/usr/bin/env bash
# Installs the project's external tools, pinned, so that every machine runs the same ones:
#   - Python packages from scripts/requirements.txt (buf, grpcurl, nats-server, the image and
#     Kubernetes checks: hadolint, checkov, kubernetes-validate, and the Prometheus
#     text-format parser of tests/system/metrics.rs: prometheus-client, the OpenAPI validator and
#     tester of tests/system/acceptance.rs: openapi-spec-validator, schemathesis) into the git-ignored
#     venv .tools/venv: run them as .tools/venv/bin/buf, or put that folder on PATH
#     (the Makefile does);
#   - Debian packages from DEBIAN_PACKAGES, when missing and we can install them
#     (root with apt-get); elsewhere it names them for you to install;
#   - npm packages of tests/web (package-lock.json: the gRPC-Web client and the headless
#     browser driver of the acceptance tests) into the git-ignored tests/web/node_modules,
#     with the machine's Node.js (20 or later) and npm;
#   - cargo subcommands from CARGO_TOOLS (cargo-deny, cargo-fuzz), built from crates.io
#     into the git-ignored .tools/cargo/bin (the Makefile puts it on PATH), only when the
#     pinned version is missing there and on PATH.
#
# Idempotent. Once everything is in place a re-run only compares a stamp, well under
# a second. Set PYTHON to choose the interpreter for the venv (default: python3).
set -euo pipefail

# Debian packages the scripts need. Names that are also commands (shellcheck, curl)
# count as present when the command is on PATH, however installed.
DEBIAN_PACKAGES=(
  shellcheck     # scripts/lint-shell.sh
  curl           # scripts/kind-smoke.sh, which scripts/k8s-check.sh also runs
  postgresql     # scripts/with-postgres.sh (the database tests) and the manifest-driven run
  nghttp2-client # h2load, the closed-loop load of scripts/bench.sh
  nodejs         # tests/web: the gRPC-Web client and browser driver (Node.js 20 or later)
  npm            # installs tests/web's packages (below)
  chromium       # tests/web: the headless browser of the API explorer test (/usr/bin/chromium)
)

# Cargo subcommands, pinned: `cargo install --locked` builds them with the lock file
# they were released with. A first build takes minutes (measured on 2 busy cores:
# cargo-fuzz 2 min, cargo-deny 9 min); CI caches .tools/cargo.
CARGO_TOOLS=(
  cargo-deny@0.20.2 # make lint: licenses, bans, sources (deny.toml)
  cargo-fuzz@0.13.2 # make fuzz: the fuzz targets of fuzz/
)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.tools/venv"
requirements="$root/scripts/requirements.txt"
stamp="$venv/.installed"
cargo_root="$root/.tools/cargo"

log() { printf 'tools: %s\n' "$*"; }

is_installed() {
  command -v "$1" >/dev/null 2>&1 ||
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

# Installs the given Debian packages that are missing; apt-get runs only if one is.
install_debian_packages() {
  local package missing=()
  for package in "$@"; do
    is_installed "$package" || missing+=("$package")
  done
  ((${#missing[@]})) || return 0

  if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
    log "WARNING: missing ${missing[*]}; install with your package manager" \
      "(Debian, as root: apt-get install ${missing[*]})" >&2
    return 0
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The stamp records what the venv was built from: the pinned list and the venv's own
# path (pip's launchers hard-code it, so a moved checkout needs a new venv).
wanted_stamp() {
  printf '%s\n' "$venv"
  cat "$requirements"
}

install_python_tools() {
  if [[ -x "$venv/bin/python" && -f "$stamp" ]] && [[ "$(wanted_stamp)" == "$(<"$stamp")" ]]; then
    log "Python tools up to date in .tools/venv"
    return 0
  fi

  # The Makefile puts .tools/venv/bin first on PATH: a rebuild must not use the very
  # interpreter it is about to delete.
  local path_entry path_entries kept_path=()
  IFS=: read -ra path_entries <<<"$PATH"
  for path_entry in "${path_entries[@]}"; do
    [[ "$path_entry" == "$venv/bin" ]] || kept_path+=("$path_entry")
  done
  PATH="$(IFS=:; printf '%s' "${kept_path[*]}")"
  hash -r
  local python="${PYTHON:-python3}"
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    install_debian_packages python3-venv # Debian's python3 ships without it
  fi
  log "creating .tools/venv with $("$python" --version 2>&1)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  log "installing Python tools from scripts/requirements.txt"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
    --requirement "$requirements"

  # Each tool must run (set -e stops here if one does not) before the stamp is written,
  # so that a failed install is retried next time.
  local buf_version grpcurl_version
  buf_version="$("$venv/bin/buf" --version 2>&1)"
  grpcurl_version="$("$venv/bin/grpcurl" -version 2>&1)"
  log "installed buf $buf_version, $grpcurl_version"
  # The image and Kubernetes checks (scripts/k8s-check.sh).
  local hadolint_version checkov_version validate_version
  hadolint_version="$("$venv/bin/hadolint" --version 2>&1)"
  checkov_version="$("$venv/bin/checkov" --version 2>&1)"
  validate_version="$("$venv/bin/kubernetes-validate" --version 2>&1)"
  "$venv/bin/python" -c 'import yaml, grpc, grpc_health.v1, prometheus_client'
  # The OpenAPI checks of tests/system/acceptance.rs.
  "$venv/bin/openapi-spec-validator" --help >/dev/null
  "$venv/bin/schemathesis" --version >/dev/null
  # The broker of the event tests (shared::testing::NatsServer) and the manifest-driven run.
  local nats_version="nats-server: not on macOS (brew install nats-server)"
  if [[ "$(uname -s)" != Darwin ]]; then nats_version="$("$venv/bin/nats-server" --version 2>&1)"; fi
  log "installed $hadolint_version, checkov $checkov_version, kubernetes-validate $validate_version, $nats_version"
  wanted_stamp >"$stamp"
}

# `npm ci` installs exactly package-lock.json; the stamp is the lock file it installed.
install_npm_packages() {
  local dir="$root/tests/web"
  local npm_stamp="$dir/node_modules/.installed-lock.json"
  if [[ -f "$npm_stamp" ]] && cmp -s "$dir/package-lock.json" "$npm_stamp"; then
    log "npm packages up to date in tests/web/node_modules"
    return 0
  fi
  log "installing npm packages of tests/web (npm ci)"
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  cp "$dir/package-lock.json" "$npm_stamp"
}

# `cargo-deny --version` prints `cargo-deny 0.20.2`; so does cargo-fuzz.
install_cargo_tools() {
  local tool name version
  for tool in "${CARGO_TOOLS[@]}"; do
    name="${tool%@*}" version="${tool#*@}"
    if [[ "$(PATH="$cargo_root/bin:$PATH" "$name" --version 2>/dev/null)" == "$name $version" ]]; then
      continue
    fi
    log "building $tool into .tools/cargo (cargo install, a few minutes)"
    cargo install --locked --quiet --root "$cargo_root" "$tool"
  done
  log "cargo tools up to date: ${CARGO_TOOLS[*]}"
}

# Tools that no registry the project uses provides: named, with where to get them.
check_other_tools() {
  if ! command -v kubectl >/dev/null; then
    log "WARNING: kubectl not found: scripts/k8s-check.sh renders the manifests with it;" \
      "install kubectl 1.27 or later (https://kubernetes.io/docs/tasks/tools/)" >&2
  fi
}

install_debian_packages "${DEBIAN_PACKAGES[@]}"
install_python_tools
install_npm_packages
install_cargo_tools
check_other_tools
