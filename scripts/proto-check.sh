#!/usr/bin/env bash
# Checks the protos: `buf lint` (rules in buf.yaml), `buf format` (prints the diff
# that `buf format -w` would apply), then `buf breaking` against an earlier commit:
#   - on a branch off main: against the commit where it left main (git merge-base),
#     so each breaking change the branch makes fails, and changes that landed on main
#     meanwhile are not blamed on it;
#   - on main itself (as in CI, which tests a fresh clone of main): against the
#     previous commit, i.e. what the last change did;
#   - without such a commit (first commit, shallow clone, no git): skipped, with a note.
# Uncommitted changes are part of the comparison, so a local run sees them too.
# Set PROTO_BASE_BRANCH to compare with another branch than main.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PATH="$root/.tools/venv/bin:$PATH" # buf from scripts/tools.sh
base_branch="${PROTO_BASE_BRANCH:-main}"
# The module in buf.yaml. Against-inputs name it explicitly, so that a commit from
# before buf.yaml existed still yields the same file paths (orders/v1/orders.proto).
proto_dir=proto

log() { printf 'proto-check: %s\n' "$*"; }

if ! command -v buf >/dev/null; then
  log "buf not found: run scripts/tools.sh" >&2
  exit 1
fi

log "buf lint"
buf lint
log "buf format"
if ! buf format --diff --exit-code; then
  log "not formatted as buf formats it (the diff above): run make fmt" >&2
  exit 1
fi

# Prints the commit to compare with, or nothing when there is none.
against_commit() {
  git rev-parse --verify --quiet HEAD >/dev/null || return 0
  local main fork
  main="$(git rev-parse --verify --quiet "$base_branch^{commit}" ||
    git rev-parse --verify --quiet "origin/$base_branch^{commit}")" || true
  if [[ -n $main ]] && fork="$(git merge-base HEAD "$main")" &&
    [[ $fork != "$(git rev-parse HEAD)" ]]; then
    echo "$fork"
  else
    git rev-parse --verify --quiet 'HEAD~1^{commit}' || true
  fi
}

against=""
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  against="$(against_commit)"
fi
if [[ -z $against ]]; then
  log "buf breaking skipped: no earlier commit to compare with"
elif ! git cat-file -e "$against:$proto_dir" 2>/dev/null; then
  log "buf breaking skipped: $proto_dir/ does not exist in ${against:0:12}"
else
  log "buf breaking against ${against:0:12} ($(git log -1 --format=%s "$against"))"
  if ! buf breaking --against ".git#ref=$against,subdir=$proto_dir"; then
    log "breaking changes (above): add new fields, messages or RPCs instead of" \
      "changing or removing old ones, or start a new package version (v2)" >&2
    exit 1
  fi
fi
log "ok"
