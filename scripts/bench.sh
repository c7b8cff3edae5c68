#!/usr/bin/env bash
# Benchmark: starts Redis + PostgreSQL (as scripts/run.sh does), one normal
# server and one with the Redis breaker forced open (PostgreSQL only), then
# runs the load generator against both and prints its Markdown table.
# Extra arguments go to loadgen (e.g. --duration-secs 20 --workloads save).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
cargo build --release --features loadgen --bin threadstore --bin loadgen >&2
DATA=$PWD/.local/bench
rm -rf "$DATA"
start_stack "$DATA" 17379 17432
APP_PORT=$(free_port 18180)
FO_PORT=$(free_port $((APP_PORT + 1)))
export RUST_LOG=${RUST_LOG:-warn}
# The benchmark measures storage, not token checks.
export AUTH_MODE=none

LISTEN_ADDR=127.0.0.1:$APP_PORT ./target/release/threadstore serve 2>"$DATA/app.log" &
STACK_PIDS+=" $!"
LISTEN_ADDR=127.0.0.1:$FO_PORT FORCE_FAILOVER=true PERSISTER_ENABLED=false \
    ./target/release/threadstore serve 2>"$DATA/failover.log" &
STACK_PIDS+=" $!"
for port in $APP_PORT $FO_PORT; do
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
done
./target/release/loadgen --url "http://127.0.0.1:$APP_PORT" --failover-url "http://127.0.0.1:$FO_PORT" \
    --server-pid "$(echo $STACK_PIDS | tr " " ,)" "$@"
