#!/usr/bin/env bash
# Runs threadstore locally: its own Redis (AOF always) and PostgreSQL 15 on
# free loopback ports under .local/, migrations, then GraphiQL on
# http://$LISTEN_ADDR/ (default 127.0.0.1:8080). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
DATA=${THREADSTORE_DATA:-$PWD/.local}
mkdir -p "$DATA"
REDIS_PORT=$(free_port 16379)
PG_PORT=$(free_port 15432)

cleanup() {
    stop_redis "$DATA/redis"
    stop_postgres "$DATA/pg"
}
trap cleanup EXIT
start_redis "$DATA/redis" "$REDIS_PORT"
start_postgres "$DATA/pg" "$PG_PORT"

export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/threadstore"
export LISTEN_ADDR=${LISTEN_ADDR:-127.0.0.1:8080}
echo "redis: $REDIS_URL  postgres: $DATABASE_URL" >&2
echo "GraphiQL: http://$LISTEN_ADDR/" >&2
cargo run --release --bin threadstore -- serve "$@"
