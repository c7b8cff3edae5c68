#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and the integration tests in
# tests/api, which start their own redis-server and PostgreSQL 15 processes
# on free loopback ports in temporary folders. Installs redis-server and
# PostgreSQL 15 (and Node.js for the client tests) with apt-get when they
# are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
# The real-client tests (tests/api/optional_args.rs) run Apollo Client
# and graphql-ws from tests/clients (versions pinned in its lockfile).
if ! command -v npm >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
npm ci --prefix tests/clients --no-audit --no-fund --silent
# `failpoints` compiles the crash points the fault suite (tests/faults) uses;
# the suite ignores libtest flags and takes `--soak N` / `--seed S` itself.
cargo test --all-targets --features failpoints,loadgen -- --test-threads="${TEST_THREADS:-4}"
# A short fuzz run of the edge parsers (scripts/fuzz.sh; FUZZ_SECS=600 for a long one).
FUZZ_SECS="${FUZZ_SECS:-15}" scripts/fuzz.sh
