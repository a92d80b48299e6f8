#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 30): `make fuzz`, which
# `make test` (CI) runs with the default. A crash fails the run; its reproducer stays
# in fuzz/artifacts/<target>/ (docs/testing.md, "Fuzzing").
#
# Stable Rust: cargo fuzz builds with `--sanitizer none`, as AddressSanitizer needs
# nightly's -Zsanitizer (the code forbids `unsafe`, so memory errors are not what the
# targets look for: panics, hangs and wrong statuses are). The instrumented build goes
# to fuzz/target (release, with debug assertions), apart from the workspace's.
set -euo pipefail

seconds="${1:-30}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: cargo-fuzz not found: run scripts/tools.sh (make tools)" >&2
  exit 1
fi

# Listed first, so that a failing `cargo fuzz list` stops here (set -e), and checked
# against fuzz/fuzz_targets/: a run that fuzzes nothing, or not everything, fails.
listed="$(cargo fuzz list)"
mapfile -t targets <<<"$listed"
expected=(fuzz_targets/*.rs)
if [[ -z "$listed" || ${#targets[@]} -ne ${#expected[@]} ]]; then
  echo "fuzz: cargo fuzz list gave ${#targets[@]} target(s) (${targets[*]}), but fuzz/fuzz_targets/ has ${#expected[@]}" >&2
  exit 1
fi
cargo fuzz build --sanitizer none --dev
for target in "${targets[@]}"; do
  echo "fuzz: $target for ${seconds}s"
  mkdir -p "corpus/$target"
  # The first folder receives new inputs; seeds/ (committed) is only read.
  # -timeout: a call slower than 10 s counts as a hang; -rss_limit_mb: so does memory.
  cargo fuzz run --sanitizer none --dev "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
