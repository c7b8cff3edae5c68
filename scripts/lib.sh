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

# The service's Redis ACL user: its own keys and channels, the command
# groups it uses, and nothing administrative. -@dangerous comes after the
# groups (it takes e.g. KEYS, FLUSHALL, SORT, MIGRATE, CLIENT KILL back out of
# them); CONFIG GET is added back last because the server's start-up check
# reads appendonly/appendfsync/maxmemory-policy (src/startup.rs).
# @transaction: the store's atomic pipelines are MULTI/EXEC. TIME (in the
# save script) is in no group but @fast, hence +time. PSUBSCRIBE
# patterns are checked literally against channel rules, so the service's
# pattern `ts:ev:*` (src/store/redis/keys.rs) is listed as it is. FUNCTION
# and SCRIPT FLUSH (server-wide, unused: the service runs EVALSHA scripts)
# are removed from @scripting.
REDIS_ACL_RULES='resetchannels ~ts:* &ts:* &ts:ev:* -@all +@read +@write +@stream +@pubsub +@scripting +@transaction +@connection +ping +time -@dangerous -function -script|flush +config|get'

# redis_password DIR: the service user's password, generated once per data
# folder and kept in DIR/threadstore.pass (mode 600). Hex, so it needs no
# escaping in a URL.
redis_password() {
    local dir=$1 file=$1/threadstore.pass
    mkdir -p "$dir"
    if [ ! -s "$file" ]; then
        (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$file")
    fi
    chmod 600 "$file"
    cat "$file"
}

# start_redis DIR PORT: Redis with AOF fsync on every write, no eviction,
# loopback only, explicit flags (never Debian's packaged config). The
# `default` user is off, so a client must log in as `threadstore` (password
# from redis_password DIR); the ACL file holds only the password's SHA-256.
# `default` keeps all permissions although no one can log in as it: Redis
# 7.0 replays the AOF as `default` and re-checks ACLs at EXEC, so a
# restricted `default` silently drops every MULTI/EXEC block (the effects of
# the save and persist scripts) when the AOF is loaded.
start_redis() {
    local dir=$1 port=$2 pass hash
    mkdir -p "$dir"
    pass=$(redis_password "$dir")
    hash=$(printf %s "$pass" | sha256sum | cut -d' ' -f1)
    (umask 077 && printf 'user default off resetpass ~* &* +@all\nuser threadstore on #%s %s\n' \
        "$hash" "$REDIS_ACL_RULES" >"$dir/users.acl")
    redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --dir "$dir" \
        --aclfile "$dir/users.acl" \
        --appendonly yes --appendfsync always --maxmemory-policy noeviction --save "" \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" || return 1
    # Up to 60 s: loading a large AOF answers LOADING until it is done.
    for _ in $(seq 600); do
        [ "$(REDISCLI_AUTH=$pass redis-cli --user threadstore -p "$port" ping 2>/dev/null)" = PONG ] && return 0
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
# the calling script exits; exports REDIS_URL (as the `threadstore` ACL user)
# and DATABASE_URL.
start_stack() {
    STACK_DIR=$1
    mkdir -p "$STACK_DIR"
    local redis_port pg_port
    redis_port=$(free_port "${2:-16379}")
    pg_port=$(free_port "${3:-15432}")
    trap 'stop_stack' EXIT
    start_redis "$STACK_DIR/redis" "$redis_port"
    start_postgres "$STACK_DIR/pg" "$pg_port"
    export REDIS_URL="redis://threadstore:$(redis_password "$STACK_DIR/redis")@127.0.0.1:$redis_port"
    export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/threadstore"
}

stop_stack() {
    for p in ${STACK_PIDS:-}; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    stop_redis "$STACK_DIR/redis"
    stop_postgres "$STACK_DIR/pg"
}
