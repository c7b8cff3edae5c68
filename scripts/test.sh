#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and the integration tests in
# tests/api, which start their own redis-server and PostgreSQL 15 processes
# on free loopback ports in temporary folders. Installs redis-server and
# PostgreSQL 15 with apt-get when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
# `failpoints` compiles the crash points the fault suite (tests/faults) uses;
# the suite ignores libtest flags and takes `--soak N` / `--seed S` itself.
cargo test --all-targets --features failpoints -- --test-threads="${TEST_THREADS:-4}"
# A short fuzz run of the edge parsers (scripts/fuzz.sh; FUZZ_SECS=600 for a long one).
FUZZ_SECS="${FUZZ_SECS:-15}" scripts/fuzz.sh
