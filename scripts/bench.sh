#!/usr/bin/env bash
# The benchmarks (docs/benchmarks.md).
#
#   scripts/bench.sh               `make bench`: builds the release binaries, then runs the
#                                  bench driver on CPU 1 (load generators, OTLP sink) while it
#                                  starts every server on CPU 0; the results replace those in
#                                  docs/benchmarks.md. BENCH_SECONDS sets each run's length.
#                                  BENCH_OLD=<commit> also measures that commit's inventory
#                                  and gateway in the same run (built first in a temporary worktree,
#                                  with its own target/bench-old-build/).
#   scripts/bench.sh --build-times `make bench-build`: the clean debug build and the
#                                  incremental rebuild after touching one handler, timed in
#                                  a temporary clone of HEAD with its own target directory.
#
# Needs Linux with at least 2 CPUs, taskset, h2load and .tools/venv (make tools installs
# nghttp2-client and grpcio).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
doc="$root/docs/benchmarks.md"
logs="$root/target/bench"

log() { printf 'bench: %s\n' "$*"; }

# Replaces the lines between <!-- bench:$1:begin --> and <!-- bench:$1:end --> of the
# doc with the content of file $2.
replace_section() {
  local begin="<!-- bench:$1:begin -->" end="<!-- bench:$1:end -->" updated
  updated="$(mktemp)"
  awk -v begin="$begin" -v end="$end" -v file="$2" '
    $0 == begin { print; while ((getline line < file) > 0) print line; skip = 1; next }
    $0 == end { skip = 0 }
    !skip { print }
  ' "$doc" >"$updated"
  cat "$updated" >"$doc"
  rm -f "$updated"
}

# Seconds since $1 (an $EPOCHREALTIME), one decimal.
since() { awk -v from="$1" -v now="$EPOCHREALTIME" 'BEGIN { printf "%.1f", now - from }'; }

build_times() {
  local tmp start clean incremental result
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: the path is fixed
  trap "rm -rf '$tmp'" EXIT
  log "cloning HEAD into $tmp (uncommitted changes are not timed)"
  git clone --quiet "$root" "$tmp/src"
  cd "$tmp/src"
  export CARGO_TARGET_DIR="$tmp/target"
  log "clean debug build: cargo build --workspace"
  start="$EPOCHREALTIME"
  cargo build --workspace --quiet
  clean="$(since "$start")"
  touch services/inventory/src/grpc.rs
  log "incremental rebuild after touching services/inventory/src/grpc.rs"
  start="$EPOCHREALTIME"
  cargo build --workspace --quiet
  incremental="$(since "$start")"
  cd "$root"
  result="$(mktemp)"
  cat >"$result" <<MARKDOWN
Measured $(date -u '+%Y-%m-%d %H:%M UTC') with \`make bench-build\`: $(nproc) CPUs, $(rustc -V), other work running on the machine.

| build | seconds |
|---|--:|
| clean \`cargo build --workspace\` (debug) | $clean |
| again after \`touch services/inventory/src/grpc.rs\` | $incremental |
MARKDOWN
  cat "$result"
  replace_section build "$result"
  rm -f "$result"
}

# Kills what the driver started and left behind (it kills its servers itself, unless
# it is killed first): only the process ids it recorded.
cleanup() {
  local pid
  [[ -f "$logs/pids" ]] || return 0
  while read -r pid; do
    kill "$pid" 2>/dev/null || true
  done <"$logs/pids"
  rm -f "$logs/pids"
}

# Builds inventory and the gateway at commit $1 in a temporary worktree and keeps their
# binaries in target/bench-old/. Its own target directory (kept, so a second run only
# builds what changed): sharing this checkout's would mix the two builds, because
# cargo names a workspace crate's artifacts by its path relative to the workspace, the
# same in both, and a build script that reran for the old protos looks fresh to the
# current checkout, whose protos are older files (its orders then failed to compile
# against the old contracts).
build_old() {
  local tmp name
  tmp="$(mktemp -d)"
  log "building inventory and gateway at $1 in $tmp (target/bench-old-build)"
  git worktree add --quiet --detach "$tmp/src" "$1"
  (cd "$tmp/src" && CARGO_TARGET_DIR="$root/target/bench-old-build" cargo build --release --locked -p inventory -p gateway)
  mkdir -p target/bench-old
  for name in inventory gateway; do
    cp "target/bench-old-build/release/$name" "target/bench-old/$name"
  done
  git worktree remove --force "$tmp/src"
  rm -rf "$tmp"
}

run() {
  if (($(nproc --all) < 2)); then
    log "needs 2 CPUs (servers on CPU 0, load on CPU 1)" >&2
    exit 1
  fi
  local tool
  for tool in taskset h2load; do
    if ! command -v "$tool" >/dev/null; then
      log "$tool not found: run make tools (h2load: Debian package nghttp2-client)" >&2
      exit 1
    fi
  done
  if ! .tools/venv/bin/python -c 'import grpc, google.protobuf' 2>/dev/null; then
    log "no grpcio in .tools/venv for the Python peer: run make tools" >&2
    exit 1
  fi
  # Every service (each folder of services/), and the harness.
  local dir packages=(-p bench)
  for dir in services/*/; do
    packages+=(-p "$(basename "$dir")")
  done
  local old_args=()
  if [[ -n "${BENCH_OLD:-}" ]]; then
    build_old "$BENCH_OLD"
    old_args=(--old-bin-dir target/bench-old)
  fi
  log "building the release binaries: ${packages[*]}"
  cargo build --release --locked "${packages[@]}"
  mkdir -p "$logs"
  trap cleanup EXIT
  taskset -c 1 target/release/bench --bin-dir target/release "${old_args[@]}" \
    --python .tools/venv/bin/python --peer bench/peer.py --logs "$logs" \
    --seconds "${BENCH_SECONDS:-5}" --doc "$doc"
}

case "${1:-}" in
  --build-times) build_times ;;
  "") run ;;
  *)
    echo "usage: $0 [--build-times]" >&2
    exit 2
    ;;
esac
