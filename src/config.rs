//! Typed settings, from flags or environment variables. Only start-up reads
//! them; the rest of the service receives the typed pieces it needs.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

mod auth;
pub use auth::{AuthMode, AuthSettings, RateSettings};

/// A setting that is or may carry a secret (a connection URL with a
/// password, the JWT secret): never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The value itself, for the client that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretUrl {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretUrl(..)")
    }
}

/// `threadstore` command line.
#[derive(Debug, Parser)]
#[command(name = "threadstore", version, about = "Chat message store with a GraphQL API")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate PostgreSQL and serve the API.
    Serve(Box<Settings>),
    /// Apply database migrations and exit.
    Migrate(DatabaseSettings),
    /// Print the GraphQL SDL and exit.
    Schema,
}

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything `serve` needs.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address the HTTP server binds (port 0 picks a free one).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Redis settings.
    #[command(flatten)]
    pub redis: RedisSettings,
    /// PostgreSQL settings.
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// Persistence settings.
    #[command(flatten)]
    pub persist: PersistSettings,
    /// API limits.
    #[command(flatten)]
    pub limits: LimitSettings,
    /// Authentication.
    #[command(flatten)]
    pub auth: AuthSettings,
    /// Per-principal rate limits.
    #[command(flatten)]
    pub rate: RateSettings,
}

/// Redis tier.
#[derive(Debug, Clone, Args)]
pub struct RedisSettings {
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: SecretUrl,
    /// Redis connection pool size (connections are multiplexed).
    #[arg(long, env = "REDIS_POOL_SIZE", default_value_t = 8)]
    pub redis_pool_size: u32,
    /// Timeout for every Redis call, milliseconds.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 100)]
    pub redis_timeout_ms: u64,
    /// TTL of persisted messages in the cache, seconds.
    #[arg(long, env = "CACHE_TTL_SECS", default_value_t = 3600)]
    pub cache_ttl_secs: u64,
    /// How long idempotency keys are kept, seconds.
    #[arg(long, env = "IDEMPOTENCY_TTL_SECS", default_value_t = 86_400)]
    pub idempotency_ttl_secs: u64,
    /// Newest messages per thread kept in the Redis thread index.
    #[arg(long, env = "THREAD_WINDOW", default_value_t = 1000)]
    pub thread_window: u32,
    /// Consecutive Redis failures that open the circuit breaker.
    #[arg(long, env = "BREAKER_FAILURE_THRESHOLD", default_value_t = 5)]
    pub breaker_failure_threshold: u32,
    /// How long the breaker stays open before probing, milliseconds.
    #[arg(long, env = "BREAKER_COOLDOWN_MS", default_value_t = 2000)]
    pub breaker_cooldown_ms: u64,
    /// Probes allowed at once while half-open; that many successes close it.
    #[arg(long, env = "BREAKER_HALF_OPEN_PROBES", default_value_t = 3)]
    pub breaker_half_open_probes: u32,
    /// Keep the breaker open forever: PostgreSQL-only mode (benchmarks, maintenance).
    #[arg(long, env = "FORCE_FAILOVER", default_value_t = false)]
    pub force_failover: bool,
    /// Start even when Redis has AOF off or an evicting maxmemory policy (data loss risk).
    #[arg(long, env = "ALLOW_UNSAFE_REDIS", default_value_t = false)]
    pub allow_unsafe_redis: bool,
}

impl RedisSettings {
    /// Per-call timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }
    /// Cache TTL.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }
    /// Idempotency TTL.
    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_secs)
    }
    /// Breaker cool-down.
    pub fn breaker_cooldown(&self) -> Duration {
        Duration::from_millis(self.breaker_cooldown_ms)
    }
}

/// PostgreSQL tier.
#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/threadstore")]
    pub database_url: SecretUrl,
    /// PostgreSQL pool size.
    #[arg(long, env = "PG_POOL_SIZE", default_value_t = 16)]
    pub pg_pool_size: u32,
    /// Timeout for a PostgreSQL call (checkout + query), milliseconds.
    #[arg(long, env = "PG_TIMEOUT_MS", default_value_t = 5000)]
    pub pg_timeout_ms: u64,
}

impl DatabaseSettings {
    /// Per-call timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.pg_timeout_ms)
    }
}

/// Background persistence.
#[derive(Debug, Clone, Args)]
pub struct PersistSettings {
    /// Most entries moved to PostgreSQL in one transaction.
    #[arg(long, env = "PERSIST_BATCH_SIZE", default_value_t = 500)]
    pub persist_batch_size: usize,
    /// Longest wait for new entries in one XREADGROUP, milliseconds.
    #[arg(long, env = "PERSIST_BLOCK_MS", default_value_t = 200)]
    pub persist_block_ms: u64,
    /// Entries pending this long on a silent consumer are claimed, milliseconds.
    #[arg(long, env = "PERSIST_CLAIM_IDLE_MS", default_value_t = 30_000)]
    pub persist_claim_idle_ms: u64,
    /// Most unacknowledged persistence entries (Redis memory) before saves are
    /// refused with STORAGE_UNAVAILABLE and /readyz says not ready; 0: no bound.
    #[arg(long, env = "PERSIST_BACKLOG_LIMIT", default_value_t = 200_000)]
    pub persist_backlog_limit: u64,
    /// Failed attempts after which an entry goes to the dead-letter stream.
    #[arg(long, env = "PERSIST_MAX_ATTEMPTS", default_value_t = 5)]
    pub persist_max_attempts: u32,
    /// Run the background persister (tests turn it off to drive it by hand).
    #[arg(long, env = "PERSISTER_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub persister_enabled: bool,
    /// Name of this process in the consumer group (default: hostname-port).
    #[arg(long, env = "CONSUMER_NAME")]
    pub consumer_name: Option<String>,
}

impl PersistSettings {
    /// XREADGROUP block time.
    pub fn block(&self) -> Duration {
        Duration::from_millis(self.persist_block_ms)
    }
    /// Claim idle time.
    pub fn claim_idle(&self) -> Duration {
        Duration::from_millis(self.persist_claim_idle_ms)
    }
}

/// Limits that keep the API safe.
#[derive(Debug, Clone, Args)]
pub struct LimitSettings {
    /// Largest request body, bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Deepest query accepted.
    #[arg(long, env = "MAX_QUERY_DEPTH", default_value_t = 16)]
    pub max_query_depth: usize,
    /// Highest query complexity accepted.
    #[arg(long, env = "MAX_QUERY_COMPLEXITY", default_value_t = 5000)]
    pub max_query_complexity: usize,
    /// Longest query text, bytes.
    #[arg(long, env = "MAX_QUERY_BYTES", default_value_t = 16 * 1024)]
    pub max_query_bytes: usize,
    /// Most aliased fields in one query.
    #[arg(long, env = "MAX_ALIASES", default_value_t = 30)]
    pub max_aliases: usize,
    /// Most directives in one query.
    #[arg(long, env = "MAX_DIRECTIVES", default_value_t = 10)]
    pub max_directives: usize,
    /// Most work a query may expand to with its fragments inlined, over all
    /// its operations and fragment definitions: fields, inline fragments,
    /// spreads and argument value nodes (GraphiQL's introspection query
    /// expands to 498).
    #[arg(long, env = "MAX_QUERY_FIELDS", default_value_t = 2_000)]
    pub max_query_fields: u64,
    /// Heavy request phases (long texts, big documents) run at once on
    /// blocking threads; default: the number of CPUs.
    #[arg(long, env = "GRAPHQL_WORKERS")]
    pub graphql_workers: Option<usize>,
    /// Heavy requests that may wait for a worker; past this they get
    /// `SERVICE_OVERLOADED` (HTTP 503).
    #[arg(long, env = "GRAPHQL_QUEUE", default_value_t = 64)]
    pub graphql_queue: usize,
    /// Serve introspection (GraphiQL needs it).
    #[arg(long, env = "INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub introspection: bool,
    /// Longest an HTTP request may take, milliseconds.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Time a WebSocket gets to send `connection_init`, milliseconds.
    #[arg(long, env = "WS_INIT_TIMEOUT_MS", default_value_t = 5_000)]
    pub ws_init_timeout_ms: u64,
    /// Open WebSocket connections per process.
    #[arg(long, env = "MAX_WS_CONNECTIONS", default_value_t = 10_000)]
    pub max_ws_connections: usize,
    /// Subscriptions on one WebSocket connection.
    #[arg(long, env = "MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = 100)]
    pub max_subscriptions_per_connection: usize,
    /// Largest WebSocket message, bytes (larger ones close the connection).
    #[arg(long, env = "MAX_WS_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_ws_message_bytes: usize,
}

impl LimitSettings {
    /// Heavy request phases run at once.
    pub fn graphql_workers(&self) -> usize {
        self.graphql_workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1)
    }

    /// Request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    /// WebSocket init timeout.
    pub fn ws_init_timeout(&self) -> Duration {
        Duration::from_millis(self.ws_init_timeout_ms)
    }
}

impl Settings {
    /// Settings from the environment alone, with defaults (tests start here).
    pub fn from_env() -> Result<Self, clap::Error> {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            s: Settings,
        }
        Only::try_parse_from(["threadstore"]).map(|o| o.s)
    }
}
