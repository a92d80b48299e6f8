#!/usr/bin/env bash
# Runs a command with a private, throwaway PostgreSQL server and TEST_DATABASE_URL
# pointing at it (tests create their own databases there: shared::testing::fresh_database).
#
#   scripts/with-postgres.sh cargo nextest run      # what `make test` does
#
# If TEST_DATABASE_URL is already set, the command runs against that server instead.
# The server listens on 127.0.0.1 on a free port, keeps its data in a temporary folder
# (tuned for tests: no fsync), and is stopped and deleted when the command ends.
# PostgreSQL refuses to run as root: as root, it runs as the unprivileged user `nobody`.
# Needs PostgreSQL's server programs (initdb, pg_ctl): Debian package `postgresql`,
# which scripts/tools.sh installs.
set -euo pipefail

log() { printf 'with-postgres: %s\n' "$*" >&2; }

(($#)) || {
  log "usage: $0 COMMAND [ARGS...]"
  exit 2
}
if [[ -n "${TEST_DATABASE_URL:-}" ]]; then
  exec "$@"
fi

find_bindir() {
  local dir
  if command -v pg_config >/dev/null && dir="$(pg_config --bindir 2>/dev/null)" &&
    [[ -x "$dir/initdb" ]]; then
    printf '%s\n' "$dir"
    return
  fi
  # Debian keeps the server programs out of PATH, one folder per major version.
  for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
    [[ -x "$dir/initdb" ]] && printf '%s\n' "$dir" && return
  done
  if command -v initdb >/dev/null; then
    dirname "$(command -v initdb)"
    return
  fi
  return 1
}
bindir="$(find_bindir)" || {
  log "PostgreSQL's initdb not found: install the server (Debian: apt-get install postgresql," \
    "or run scripts/tools.sh as root)"
  exit 1
}

dir="$(mktemp -d "${TMPDIR:-/tmp}/with-postgres.XXXXXX")"
as_owner=()
if [[ $EUID -eq 0 ]]; then
  chown nobody: "$dir"
  as_owner=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
fi
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

stop() {
  "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT

"${as_owner[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
  --no-sync >"$dir/initdb.log" 2>&1 || {
  cat "$dir/initdb.log" >&2
  log "initdb failed"
  exit 1
}
# Many test processes at once, each with a pool; durability is not wanted here.
"${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
  -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=400 -c fsync=off \
      -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=64MB" \
  start >/dev/null || {
  cat "$dir/server.log" >&2
  log "PostgreSQL did not start"
  exit 1
}
export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
log "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on $TEST_DATABASE_URL"
"$@"
