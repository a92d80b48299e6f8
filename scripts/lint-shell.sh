#!/usr/bin/env bash
# Runs shellcheck on every shell script of the project: scripts/*.sh and .ci/run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v shellcheck >/dev/null; then
  echo "lint-shell: shellcheck not found: run scripts/tools.sh (as root on Debian)" >&2
  exit 1
fi
echo "lint-shell: shellcheck $(shellcheck --version | sed -n 's/^version: //p')"
shellcheck --external-sources scripts/*.sh .ci/run
