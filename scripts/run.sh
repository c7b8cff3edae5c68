#!/usr/bin/env bash
# Runs threadstore locally: its own Redis (AOF always) and PostgreSQL 15 on
# free loopback ports under .local/, migrations, then GraphiQL on
# http://$LISTEN_ADDR/ (default 127.0.0.1:8080). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
start_stack "${THREADSTORE_DATA:-$PWD/.local}"
export LISTEN_ADDR=${LISTEN_ADDR:-127.0.0.1:8080}
# The Redis password stays out of the terminal: it is in the data folder.
echo "redis: ${REDIS_URL/threadstore:*@/threadstore:***@} (password: $STACK_DIR/redis/threadstore.pass)" >&2
echo "postgres: $DATABASE_URL" >&2
echo "GraphiQL: http://$LISTEN_ADDR/" >&2
# Local use: authentication off (the server prints a warning banner). For
# tokens, run `threadstore serve` with AUTH_MODE=jwt and JWT_SECRET (README, Security).
cargo run --release --bin threadstore -- serve --insecure-no-auth "$@"
