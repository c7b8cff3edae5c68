#!/usr/bin/env bash
# Fuzzes the edges (fuzz/fuzz_targets: cursor decoding; GraphQL requests
# through the service's admission, validation and execution, and the domain
# validators) with cargo-fuzz / libFuzzer, each
# target for FUZZ_SECS seconds (default 30). Installs cargo-fuzz when
# missing. It runs on the machine's one (stable) toolchain: libFuzzer's
# sanitizer flags are nightly-only, and RUSTC_BOOTSTRAP=1 lets stable rustc
# accept them (no nightly toolchain can be fetched here). Exits non-zero when a
# target crashes, panics, takes over 2 s on one input or runs out of memory;
# the failing input is left in fuzz/artifacts/<target>/. The corpus grows
# in fuzz/corpus/<target>/ across runs, starting from the committed seeds
# in fuzz/seeds/<target>/ (known-hostile documents: fragment bombs, cycles).
# Reproduce a failure with
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/<file>
# Extra arguments go to libFuzzer (e.g. -jobs=4).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

FUZZ_SECS=${FUZZ_SECS:-30}
export RUSTC_BOOTSTRAP=1
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# One build for all targets, so the time budget below is spent fuzzing.
cargo fuzz build
failed=()
for target in $(cargo fuzz list); do
    echo "== fuzz $target for ${FUZZ_SECS}s" >&2
    # -timeout: one input running 2 s is a failure: slow (super-linear)
    # handling is a denial of service. -max_len: documents up to the query
    # limit (16 KiB) and a bit, not only the default 4 KiB.
    # The corpus grows in corpus/<target>; seeds/<target> (committed) holds
    # known-hostile inputs every run starts from.
    corpora=("corpus/$target")
    mkdir -p "corpus/$target"
    [ -d "seeds/$target" ] && corpora+=("seeds/$target")
    if ! cargo fuzz run "$target" "${corpora[@]}" -- -max_total_time="$FUZZ_SECS" -timeout=2 -max_len=20000 -print_final_stats=1 "$@"; then
        failed+=("$target")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failures in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: no failures" >&2
