#!/bin/sh
# How many jobs cargo runs at once in the image build (the Dockerfile runs it as
# `cargo-jobs`): one per CPU, as cargo would, but no more than one per 1.5 GiB of
# available memory.
#
# Why: release builds link with fat LTO (Cargo.toml), and each binary's link is one
# compiler process of up to 1.5 GB (docs/benchmarks.md#the-release-profile). One job
# per CPU would link up to eight binaries at once on an 8-CPU laptop, and a Docker
# with 4 GiB of memory (Docker Desktop's VM, say) would kill the build (exit 137).
#
# The memory is MemAvailable of /proc/meminfo: the Docker VM's, or the host's, less
# what runs there (a kind cluster, for instance). `--build-arg CARGO_BUILD_JOBS=N`
# sets the number instead. Prints the number on stdout and why on stderr.
#
# Usage: cargo-jobs [MEMINFO [CPUS]]   (defaults: /proc/meminfo, nproc; for the tests)
set -eu

per_job_mib=1536
meminfo="${1:-/proc/meminfo}"
cpus="${2:-$(nproc)}"

if [ -n "${CARGO_BUILD_JOBS:-}" ]; then
  case "$CARGO_BUILD_JOBS" in
    *[!0-9]* | 0*)
      echo "cargo-jobs: CARGO_BUILD_JOBS is a positive number of jobs, not '$CARGO_BUILD_JOBS'" >&2
      exit 1
      ;;
  esac
  echo "cargo-jobs: $CARGO_BUILD_JOBS jobs (CARGO_BUILD_JOBS)" >&2
  echo "$CARGO_BUILD_JOBS"
  exit 0
fi

available_kib="$(awk '$1 == "MemAvailable:" { print $2 }' "$meminfo" 2>/dev/null || true)"
if [ -z "$available_kib" ]; then
  echo "cargo-jobs: $cpus jobs, one per CPU ($meminfo gives no MemAvailable)" >&2
  echo "$cpus"
  exit 0
fi
available_mib=$((available_kib / 1024))
jobs=$((available_mib / per_job_mib))
[ "$jobs" -ge 1 ] || jobs=1
[ "$jobs" -le "$cpus" ] || jobs="$cpus"
echo "cargo-jobs: $jobs jobs ($cpus CPUs, $available_mib MiB of memory available," \
  "at most one job per $per_job_mib MiB: a fat-LTO link takes up to 1.5 GB)" >&2
echo "$jobs"
