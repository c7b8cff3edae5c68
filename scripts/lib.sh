# Shared helpers for the run and test scripts: install what is missing,
# find free loopback ports, start Redis and PostgreSQL in a project folder.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_packages() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    [ -x "$PG_BIN/postgres" ] || missing+=(postgresql-15)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # Debian starts a system-wide Redis on install; this project never uses
    # it (its config has AOF off), and it would hold port 6379.
    if command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
}

# Prints a TCP port on 127.0.0.1 nothing listens on, from $1 upwards.
free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

# Runs a PostgreSQL binary as the postgres user when we are root (PostgreSQL
# refuses to run as root).
pg_run() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# start_redis DIR PORT: Redis with AOF fsync on every write, no eviction,
# loopback only, explicit flags (never Debian's packaged config).
start_redis() {
    local dir=$1 port=$2
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --dir "$dir" \
        --appendonly yes --appendfsync always --maxmemory-policy noeviction --save "" \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    for _ in $(seq 50); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "redis did not start; see $dir/redis.log" >&2
    return 1
}

# start_postgres DIR PORT: a private PostgreSQL 15 cluster.
start_postgres() {
    local dir=$1 port=$2
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        pg_run "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
    fi
    pg_run "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
    pg_run "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'threadstore'" | grep -q 1 ||
        pg_run "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres threadstore
}

stop_postgres() {
    pg_run "$PG_BIN/pg_ctl" -D "$1/data" -m fast stop >/dev/null 2>&1 || true
}

stop_redis() {
    [ -f "$1/redis.pid" ] && kill "$(cat "$1/redis.pid")" 2>/dev/null || true
}

# start_stack DIR: Redis and PostgreSQL on free ports under DIR, stopped when
# the calling script exits; exports REDIS_URL and DATABASE_URL.
start_stack() {
    STACK_DIR=$1
    mkdir -p "$STACK_DIR"
    local redis_port pg_port
    redis_port=$(free_port "${2:-16379}")
    pg_port=$(free_port "${3:-15432}")
    trap 'stop_stack' EXIT
    start_redis "$STACK_DIR/redis" "$redis_port"
    start_postgres "$STACK_DIR/pg" "$pg_port"
    export REDIS_URL="redis://127.0.0.1:$redis_port"
    export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/threadstore"
}

stop_stack() {
    for p in ${STACK_PIDS:-}; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    stop_redis "$STACK_DIR/redis"
    stop_postgres "$STACK_DIR/pg"
}
